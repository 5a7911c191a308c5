//! The state file: what the running daemon is doing, for `pattoo-agentd
//! status` when there is no metrics page to ask.
//!
//! The daemon rewrites `{daemon_directory}/pattoo-agentd.state.json` every
//! few seconds (a temporary file swapped with the old one, so a reader
//! never sees half a file; the old one is the next write's temporary file,
//! see [`crate::durable::replace_by_exchange`]) and deletes both when it
//! stops. A file whose
//! process is gone was left by an agent that was killed or crashed.
//!
//! Beside it, `pattoo-agentd.token` holds a secret the daemon draws at
//! each start (mode 0600 in the private daemon directory). The metrics page
//! proves it knows it by answering a challenge `status` sends (a keyed
//! hash of the challenge, see [`Token::prove`]), so `status` can tell this
//! configuration's agent from any other process on the page's port.

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
pub const TOKEN_FILE_NAME: &str = "pattoo-agentd.token";

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
    /// With `encryption: openpgp`: the latest attempt to open a session
    /// with the server's encrypted exchange.
    #[serde(default)]
    pub last_exchange: Option<LastExchange>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastExchange {
    pub at_ms: u64,
    pub ok: bool,
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
    /// A write has succeeded, so the temporary file beside the state file
    /// is this process's own and is overwritten in place.
    written: Arc<AtomicBool>,
}

impl Writer {
    pub fn new(daemon_directory: &Path, metrics_listen: Option<SocketAddr>) -> Writer {
        Writer {
            path: path(daemon_directory),
            metrics_listen,
            busy: Arc::default(),
            warned: Arc::default(),
            written: Arc::default(),
        }
    }

    /// Collects the state now and writes it on a blocking thread, so a slow
    /// disk never holds up the daemon's signal loop.
    pub fn write(
        &self,
        monitor: &dyn Source,
        last_post: Option<crate::delivery::LastPost>,
        last_exchange: Option<crate::delivery::LastExchange>,
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
            last_exchange: last_exchange.map(|last| LastExchange {
                at_ms: last.at_ms,
                ok: last.ok,
                detail: last.detail,
            }),
            unhealthy: monitor.health().err(),
            figures: monitor.figures(),
        };
        let (path, busy, warned) = (self.path.clone(), self.busy.clone(), self.warned.clone());
        let written = self.written.clone();
        tokio::task::spawn_blocking(move || {
            let fresh = !written.load(Ordering::Acquire);
            match serde_json::to_vec_pretty(&state)
                .map_err(io::Error::other)
                .and_then(|json| crate::durable::replace_by_exchange(&path, &json, fresh))
            {
                Ok(()) => written.store(true, Ordering::Release),
                Err(error) => {
                    written.store(false, Ordering::Release);
                    if !warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(file = %path.display(), %error, "cannot write the state file; `pattoo-agentd status` will not see this agent");
                    }
                }
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// At a clean stop: no file means no agent (and no previous version
    /// left beside it).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(".tmp");
        let _ = std::fs::remove_file(temporary);
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

/// The secret the running agent's metrics page proves it knows.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Draws a new token and writes it to the daemon directory, readable by
    /// this user only; a reader never sees half of one.
    pub fn create(daemon_directory: &Path) -> io::Result<Token> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|error| io::Error::other(error.to_string()))?;
        crate::durable::replace_atomically(
            &daemon_directory.join(TOKEN_FILE_NAME),
            hex::encode(secret).as_bytes(),
        )?;
        Ok(Token(secret))
    }

    /// The token of the agent that last started on this daemon directory.
    pub fn read(daemon_directory: &Path) -> Result<Token, String> {
        let path = daemon_directory.join(TOKEN_FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret)
            .map_err(|_| format!("{}: not a token this version reads", path.display()))?;
        Ok(Token(secret))
    }

    /// HMAC-SHA256 of `challenge` under the token, in hex: only a process
    /// that can read the token file can compute it, and a fresh challenge
    /// each time makes an answer seen once useless afterwards.
    pub fn prove(&self, challenge: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(challenge);
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proof_is_hmac_sha256_and_depends_on_token_and_challenge() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b'\\x0b'*32,
        //   b'Hi There', hashlib.sha256).hexdigest())"
        let token = Token([0x0b; 32]);
        let proof = token.prove(b"Hi There");
        assert_eq!(proof.len(), 64);
        assert_eq!(
            proof,
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
        assert_ne!(Token([0x0c; 32]).prove(b"Hi There"), proof);
        assert_ne!(token.prove(b"Hi there"), proof);
    }

    #[test]
    fn a_created_token_reads_back_and_only_its_owner_may_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let token = Token::create(dir.path()).unwrap();
        let read = Token::read(dir.path()).unwrap();
        assert_eq!(read.prove(b"x"), token.prove(b"x"));
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Token::create(dir.path()).unwrap();
        assert_ne!(again.prove(b"x"), token.prove(b"x"), "a new one each start");
    }
}
