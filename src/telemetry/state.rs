//! The state file: what the running daemon is doing, for `pattoo-agentd
//! status` when there is no metrics page to ask.
//!
//! The daemon rewrites `{daemon_directory}/pattoo-agentd.state.json` every
//! few seconds (a temporary file renamed over the old one, so a reader
//! never sees half a file) and deletes it when it stops. A file whose
//! process is gone was left by an agent that was killed or crashed.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::figures::Figures;
use super::metrics_page::Source;
use crate::config::Settings;
use crate::time::now_ms;

pub const FILE_NAME: &str = "pattoo-agentd.state.json";

/// How often the daemon rewrites the file; a file much older than this
/// belongs to an agent that is stuck or gone.
pub const EVERY_MS: u64 = 5_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub pid: u32,
    pub version: String,
    pub written_ms: u64,
    /// Where the pattoo server is.
    pub server: String,
    /// Where the metrics page listens, if it does.
    pub metrics_listen: Option<SocketAddr>,
    pub last_post: Option<LastPost>,
    /// What is stuck, when the watchdog would not be fed.
    pub unhealthy: Option<String>,
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastPost {
    pub at_ms: u64,
    pub delivered: bool,
    pub detail: String,
}

pub fn path(daemon_directory: &Path) -> PathBuf {
    daemon_directory.join(FILE_NAME)
}

/// Writes the state file in the background.
pub struct Writer {
    path: PathBuf,
    metrics_listen: Option<SocketAddr>,
    /// A write still running: the next is skipped rather than queued.
    busy: Arc<AtomicBool>,
    warned: Arc<AtomicBool>,
}

impl Writer {
    pub fn new(daemon_directory: &Path, metrics_listen: Option<SocketAddr>) -> Writer {
        Writer {
            path: path(daemon_directory),
            metrics_listen,
            busy: Arc::default(),
            warned: Arc::default(),
        }
    }

    /// Collects the state now and writes it on a blocking thread, so a slow
    /// disk never holds up the daemon's signal loop.
    pub fn write(
        &self,
        monitor: &dyn Source,
        last_post: Option<crate::delivery::LastPost>,
        settings: &Settings,
    ) {
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let state = State {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            written_ms: now_ms(),
            server: format!(
                "{}://{}",
                settings.agent.delivery.scheme.as_str(),
                crate::address::host_port(&settings.api.ip_address, settings.api.ip_bind_port)
            ),
            metrics_listen: self.metrics_listen,
            last_post: last_post.map(|last| LastPost {
                at_ms: last.at_ms,
                delivered: last.delivered,
                detail: last.detail,
            }),
            unhealthy: monitor.health().err(),
            figures: monitor.figures(),
        };
        let (path, busy, warned) = (self.path.clone(), self.busy.clone(), self.warned.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(error) = write_atomically(&path, &state) {
                if !warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(file = %path.display(), %error, "cannot write the state file; `pattoo-agentd status` will not see this agent");
                }
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// At a clean stop: no file means no agent.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `state` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, state: &State) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    crate::durable::replace_atomically(path, &json)
}

/// Reads the state file; `Ok(None)` when there is none.
pub fn read(daemon_directory: &Path) -> Result<Option<State>, String> {
    let path = path(daemon_directory);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            format!(
                "{}: not a state file this version reads: {error}",
                path.display()
            )
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Whether a process with this id exists (ours or another user's).
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}
