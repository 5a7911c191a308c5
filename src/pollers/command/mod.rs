//! The command poller: runs a program and parses what it prints.

mod config;

use std::process::Stdio;
use std::time::Duration;

pub use config::CommandSettings;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::PollerEnv;
use crate::formats::{FormatError, Payload};
use crate::model::TargetData;
use crate::time::now_ms;

/// Most of a command's output that is read; the rest fails the poll.
pub const MAX_STDOUT_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct CommandPoller {
    name: String,
    settings: CommandSettings,
    target: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("poller {poller}: cannot start {program:?}: {source}")]
    Spawn {
        poller: String,
        program: String,
        source: std::io::Error,
    },
    #[error("poller {poller}: {program:?} did not finish within {timeout:?} and was killed")]
    Timeout {
        poller: String,
        program: String,
        timeout: Duration,
    },
    #[error("poller {poller}: {program:?} printed more than {limit} bytes")]
    TooMuchOutput {
        poller: String,
        program: String,
        limit: usize,
    },
    #[error("poller {poller}: {program:?} exited with {status}")]
    Failed {
        poller: String,
        program: String,
        status: std::process::ExitStatus,
    },
    #[error("poller {poller}: reading the output of {program:?}: {source}")]
    Read {
        poller: String,
        program: String,
        source: std::io::Error,
    },
    #[error("poller {poller}: output of {program:?}: {source}")]
    Format {
        poller: String,
        program: String,
        source: FormatError,
    },
}

impl CommandPoller {
    pub fn new(name: &str, settings: &CommandSettings, env: &PollerEnv) -> Self {
        CommandPoller {
            name: name.to_owned(),
            target: settings
                .target
                .clone()
                .unwrap_or_else(|| env.hostname.clone()),
            settings: settings.clone(),
        }
    }

    pub async fn poll(&mut self) -> Result<Vec<TargetData>, CommandError> {
        let program = self.settings.argv[0].clone();
        let mut child = Command::new(&program)
            .args(&self.settings.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|source| CommandError::Spawn {
                poller: self.name.clone(),
                program: program.clone(),
                source,
            })?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let run = async {
            let mut output = Vec::new();
            (&mut stdout)
                .take(MAX_STDOUT_BYTES as u64 + 1)
                .read_to_end(&mut output)
                .await?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((output, status))
        };
        let (output, status) = match tokio::time::timeout(self.settings.timeout, run).await {
            Ok(result) => result.map_err(|source| CommandError::Read {
                poller: self.name.clone(),
                program: program.clone(),
                source,
            })?,
            Err(_) => {
                if let Some(pid) = child.id() {
                    // The child leads its own process group; take the
                    // whole group so no grandchild outlives the poll.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait().await;
                return Err(CommandError::Timeout {
                    poller: self.name.clone(),
                    program,
                    timeout: self.settings.timeout,
                });
            }
        };
        if output.len() > MAX_STDOUT_BYTES {
            return Err(CommandError::TooMuchOutput {
                poller: self.name.clone(),
                program,
                limit: MAX_STDOUT_BYTES,
            });
        }
        if !status.success() {
            return Err(CommandError::Failed {
                poller: self.name.clone(),
                program,
                status,
            });
        }
        let parsed = self
            .settings
            .format
            .parse_payload(&Payload {
                bytes: &output,
                default_target: &self.target,
                read_at_ms: now_ms(),
                exit_status: None,
            })
            .map_err(|source| CommandError::Format {
                poller: self.name.clone(),
                program: program.clone(),
                source,
            })?;
        for skipped in &parsed.skipped {
            tracing::warn!(poller = %self.name, command = %program, "value skipped: {skipped}");
        }
        Ok(parsed.targets)
    }
}
