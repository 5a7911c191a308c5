//! The command poller: runs a program and parses what it prints with one of
//! the shared [formats](crate::formats).
//!
//! Invariants:
//! - The program runs without a shell (unless `shell: true`), with stdin
//!   from /dev/null, in its own process group, with only the environment it
//!   was given (PATH defaults to [`config::SAFE_PATH`]).
//! - Nothing it starts outlives the poll: on timeout or too much output the
//!   whole process group gets SIGTERM, then SIGKILL after the grace period;
//!   after a normal exit whatever is left in the group is killed; if the
//!   poll itself is cancelled, a guard kills the group. What escaped the
//!   group (`setsid`) is found and killed too (see `orphans.rs`). The
//!   program itself is always waited for, so it never stays a zombie.
//! - The run ends when the program exits: a descendant that keeps stdout
//!   open gets [`AFTER_EXIT_GRACE`] to finish writing, then is killed with
//!   the rest, and what was printed is parsed.
//! - Never two runs of the same poller at once: [`CommandPoller::poll`]
//!   takes `&mut self` and returns only once the process group is gone, and
//!   the scheduler runs one poll at a time per poller.
//! - stdout is read up to `max_output_bytes`, never more; stderr is drained
//!   and its first [`STDERR_EXCERPT_BYTES`] kept for the log and errors.
//! - A non-zero exit fails the poll, except for the `nagios` format, where
//!   the exit status is the plugin's state and so data.

mod config;
mod kind;
mod orphans;

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

pub use kind::Command;
pub use config::{CommandSettings, DEFAULT_MAX_OUTPUT_BYTES, SAFE_PATH};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{self, Child};

use super::PollerEnv;
use crate::formats::FormatError;
use crate::model::TargetData;
use crate::time::now_ms;

/// How much of stderr is kept for the log and error messages.
pub const STDERR_EXCERPT_BYTES: usize = 4096;

/// How long stdout is read after the program exited, for output a
/// descendant still holding it open is finishing.
pub const AFTER_EXIT_GRACE: Duration = Duration::from_millis(500);

/// Numbers the runs, for [`orphans::RUN_MARKER`].
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
    #[error("poller {poller}: {program:?} did not finish within {timeout:?}; its process group was killed{}", excerpt(stderr))]
    Timeout {
        poller: String,
        program: String,
        timeout: Duration,
        stderr: String,
    },
    #[error("poller {poller}: {program:?} printed more than {limit} bytes; its process group was killed")]
    TooMuchOutput {
        poller: String,
        program: String,
        limit: usize,
    },
    #[error("poller {poller}: {program:?} exited with {status}{}", excerpt(stderr))]
    Failed {
        poller: String,
        program: String,
        status: ExitStatus,
        stderr: String,
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

fn excerpt(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    }
}

/// Kills the process group when dropped, unless disarmed: a cancelled poll
/// must not leave the command running.
struct GroupGuard {
    pgid: Option<Pid>,
    run_id: String,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
            if let Some(set) = orphans::spawned().as_mut() {
                set.remove(&pgid.as_raw());
            }
            orphans::end_run(&self.run_id);
        }
    }
}

/// How a run ended.
enum Run {
    Exited(Vec<u8>, ExitStatus),
    TooMuchOutput,
    ReadFailed(std::io::Error),
    TimedOut,
}

impl CommandPoller {
    pub fn new(name: &str, settings: &CommandSettings, env: &PollerEnv) -> Self {
        orphans::become_subreaper();
        CommandPoller {
            name: name.to_owned(),
            target: settings
                .target
                .clone()
                .unwrap_or_else(|| env.hostname.clone()),
            settings: settings.clone(),
        }
    }

    fn command(&self, run_id: &str) -> process::Command {
        let settings = &self.settings;
        let mut command = process::Command::new(&settings.argv[0]);
        command
            .args(&settings.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if !settings.inherit_environment {
            command.env_clear();
            command.env("PATH", SAFE_PATH);
            for name in &settings.pass_environment {
                if let Some(value) = std::env::var_os(name) {
                    command.env(name, value);
                }
            }
        }
        command.envs(&settings.environment);
        command.env(orphans::RUN_MARKER, run_id);
        if let Some(dir) = &settings.working_directory {
            command.current_dir(dir);
        }
        command
    }

    pub async fn poll(&mut self) -> Result<Vec<TargetData>, CommandError> {
        let poller = self.name.clone();
        let program = self.settings.argv.join(" ");
        let run_id = format!(
            "{}.{}",
            std::process::id(),
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        orphans::start_run(&run_id);
        let spawned = {
            // Registered under the lock the orphan scans take, so no scan
            // mistakes the new child for an orphan and reaps it.
            let mut registry = orphans::spawned();
            let spawned = self.command(&run_id).spawn();
            if let Ok(child) = &spawned {
                if let Some(pid) = child.id() {
                    registry
                        .get_or_insert_with(Default::default)
                        .insert(pid as i32);
                }
            }
            spawned
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(source) => {
                orphans::end_run(&run_id);
                return Err(CommandError::Spawn {
                    poller: poller.clone(),
                    program: program.clone(),
                    source,
                });
            }
        };
        let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
        let mut guard = GroupGuard {
            pgid,
            run_id: run_id.clone(),
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr = tokio::spawn(read_excerpt(stderr, STDERR_EXCERPT_BYTES));
        let limit = self.settings.max_output_bytes;
        let run = tokio::time::timeout(self.settings.timeout, async {
            let mut output = Vec::new();
            let mut stdout = stdout;
            let (within, exited) = {
                let reading = read_capped_into(&mut stdout, limit, &mut output);
                tokio::pin!(reading);
                tokio::select! {
                    within = &mut reading => (within?, None),
                    status = child.wait() => {
                        let status = status?;
                        // A descendant may hold stdout open for ever; the
                        // run is over when the program is.
                        match tokio::time::timeout(AFTER_EXIT_GRACE, &mut reading).await {
                            Ok(within) => (within?, Some(status)),
                            Err(_) => (true, Some(status)),
                        }
                    }
                }
            };
            if !within {
                return Ok(Run::TooMuchOutput);
            }
            let status = match exited {
                Some(status) => status,
                None => child.wait().await?,
            };
            Ok::<_, std::io::Error>(Run::Exited(output, status))
        })
        .await;
        let run = match run {
            Ok(Ok(run)) => run,
            Ok(Err(error)) => Run::ReadFailed(error),
            Err(_elapsed) => Run::TimedOut,
        };
        match run {
            // The program is done; anything it left behind in its group (a
            // daemonised grandchild) goes with it.
            Run::Exited(..) => {
                if let Some(pgid) = pgid {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
            }
            _ => self.terminate(&mut child, pgid).await,
        }
        guard.pgid = None;
        if let Some(set) = orphans::spawned().as_mut() {
            if let Some(pgid) = pgid {
                set.remove(&pgid.as_raw());
            }
        }
        // Most runs leave nothing, which is known without /proc: then no
        // blocking thread is needed to look.
        let left = if orphans::try_end_run(&run_id) {
            0
        } else {
            tokio::task::spawn_blocking(move || orphans::end_run(&run_id))
                .await
                .unwrap_or(0)
        };
        if left > 0 {
            tracing::debug!(poller = %poller, command = %program, killed = left, "killed processes the command left outside its process group");
        }
        // stderr closes once every process holding it is gone, which the
        // group kill above ensures; the timeout covers a descendant that
        // escaped into another group with the pipe.
        let stderr = match tokio::time::timeout(self.settings.kill_grace, stderr).await {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => String::new(),
        };
        if !stderr.trim().is_empty() {
            tracing::warn!(poller = %poller, command = %program, stderr = %stderr.trim(), "The command wrote to stderr.");
        }
        let (output, status) = match run {
            Run::Exited(output, status) => (output, status),
            Run::TooMuchOutput => {
                return Err(CommandError::TooMuchOutput {
                    poller,
                    program,
                    limit,
                })
            }
            Run::ReadFailed(source) => {
                return Err(CommandError::Read {
                    poller,
                    program,
                    source,
                })
            }
            Run::TimedOut => {
                return Err(CommandError::Timeout {
                    poller,
                    program,
                    timeout: self.settings.timeout,
                    stderr,
                })
            }
        };
        // A program killed by a signal has no exit status to report, not
        // even to a format that reads it.
        let status_is_data = self.settings.format.exit_status_is_data() && status.code().is_some();
        if !status.success() && !status_is_data {
            return Err(CommandError::Failed {
                poller,
                program,
                status,
                stderr,
            });
        }
        let parsed = self
            .settings
            .format
            .parse_output(output, &self.target, now_ms(), status.code())
            .map_err(|source| CommandError::Format {
                poller: poller.clone(),
                program: program.clone(),
                source,
            })?;
        for skipped in &parsed.skipped {
            tracing::warn!(poller = %poller, command = %program, target = %self.target, "A value was skipped: {skipped}.");
        }
        Ok(parsed.targets)
    }

    /// SIGTERM to the whole group, SIGKILL once the grace period is over
    /// if anything in it is still alive; the program itself is reaped.
    async fn terminate(&self, child: &mut Child, pgid: Option<Pid>) {
        let Some(pgid) = pgid else {
            let _ = child.kill().await;
            return;
        };
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + self.settings.kill_grace;
        loop {
            // Reaping the program lets the group empty; a zombie still
            // counts as a member.
            let _ = child.try_wait();
            if killpg(pgid, None) == Err(Errno::ESRCH) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(poller = %self.name, "The command ignored SIGTERM; killing its process group.");
                let _ = killpg(pgid, Signal::SIGKILL);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.wait().await;
    }
}

/// What one read of the program's stdout asks for: a Linux pipe's
/// default capacity, so a program writing fast is read in few calls.
const READ_CHUNK: usize = 64 * 1024;

/// Reads `reader` to its end into `output`; false as soon as it holds more
/// than `limit` bytes, without reading further. What was read stays in
/// `output` if the read is abandoned.
async fn read_capped_into(
    reader: &mut (impl AsyncRead + Unpin),
    limit: usize,
    output: &mut Vec<u8>,
) -> std::io::Result<bool> {
    loop {
        // Straight into `output`, up to a pipe's worth at a time.
        output.reserve(READ_CHUNK);
        if reader.read_buf(output).await? == 0 {
            return Ok(true);
        }
        if output.len() > limit {
            return Ok(false);
        }
    }
}

/// Reads `reader` to its end, keeping the first `keep` bytes.
async fn read_excerpt(mut reader: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = keep.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
}
