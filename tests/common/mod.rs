//! Shared helpers for the integration tests, one module per kind of peer
//! the agent talks to. Every server binds 127.0.0.1 port 0 and accepts
//! connections as soon as it is returned, so no test waits for start-up.

#![allow(dead_code)] // each test binary uses a different part

pub mod alone;
pub mod asyncua;
pub mod bacnet;
pub mod body;
pub mod gpg;
pub mod http_server;
pub mod logs;
#[cfg(feature = "modbus")]
pub mod modbus;
pub mod modbus_sim;
pub mod netsnmp;
pub mod pattoo_encrypted;
pub mod pattoo_server;
pub mod poller;
pub mod pymodbus;
pub mod python;
pub mod receiver;
pub mod snmpsim;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Writes `config_dir/pattoo.yaml` with the log, cache and daemon
/// directories under `state_root` and the server on 127.0.0.1:`port`.
pub fn write_pattoo_yaml(config_dir: &Path, state_root: &Path, port: u16) {
    let dir = |name: &str| state_root.join(name).display().to_string();
    std::fs::write(
        config_dir.join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_directory: {}\n  cache_directory: {}\n  daemon_directory: {}\n\
             pattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: {port}\n",
            dir("log"),
            dir("cache"),
            dir("daemon")
        ),
    )
    .unwrap();
}

/// Writes the agent id `id` of `program` where the agent keeps it when its
/// daemon directory is `state_root/daemon` (as [`write_pattoo_yaml`] sets).
pub fn write_agent_id(state_root: &Path, program: &str, id: &str) {
    let ids = state_root.join("daemon/agent_id");
    std::fs::create_dir_all(&ids).unwrap();
    std::fs::write(ids.join(format!("{program}.agent_id")), id).unwrap();
}

/// The pattoo-agentd binary under test, for a test that starts it through
/// a shell (`sh -c`, `unshare`, a fake systemctl); everything else starts
/// it with [`agentd`] or [`pattoo_agentd`].
pub const AGENTD: &str = env!("CARGO_BIN_EXE_pattoo-agentd");

/// `pattoo-agentd --config-dir config_dir` with stdin closed, for a test
/// to add the command, its environment, and run it.
pub fn agentd(config_dir: &Path) -> Command {
    let mut command = pattoo_agentd();
    command.arg("--config-dir").arg(config_dir);
    command
}

/// `pattoo-agentd` with stdin closed and no `--config-dir`, for commands
/// that read no configuration (`discover`).
pub fn pattoo_agentd() -> Command {
    let mut command = Command::new(AGENTD);
    command.stdin(Stdio::null());
    command
}

/// Runs `pattoo-agentd --config-dir config_dir args...` to its end and
/// gives its stdout; fails the test, with stdout and stderr, unless it
/// exits with success.
pub fn run_agentd(config_dir: &Path, args: &[&str]) -> String {
    let output = agentd(config_dir).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "pattoo-agentd {args:?}: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Writes the executable `path` holding `text`. A child process writes it:
/// an executable this process held open for writing could not be run while
/// a child forked by another test's thread still had that descriptor
/// ("Text file busy"), and all tests of the binary share this process.
pub fn write_executable(path: &Path, text: &str) {
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "writing {}: {status}", path.display());
}

/// A poller's readings, for tests of kinds that read (rather than relay
/// bodies): `poller.readings()` is `poller.poll()` with the readings taken
/// out.
pub trait Readings {
    fn readings(
        &mut self,
    ) -> impl std::future::Future<
        Output = Result<Vec<pattoo_agentd::model::TargetData>, pattoo_agentd::pollers::PollError>,
    > + Send;
}

impl Readings for pattoo_agentd::pollers::Poller {
    async fn readings(
        &mut self,
    ) -> Result<Vec<pattoo_agentd::model::TargetData>, pattoo_agentd::pollers::PollError> {
        self.poll().await.map(|polled| {
            polled
                .readings()
                .expect("a poller that reads gives readings")
        })
    }
}
