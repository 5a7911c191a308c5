//! One agent per daemon directory: a second agent would post under the same
//! agent ids and replay the same cache files, sending bodies twice.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

/// Held for the life of the daemon; the lock is released when the process
/// ends, however it ends.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another pattoo-agentd{holder} is already using {dir}; stop it first \
         (two agents would post the same cached data twice)"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot create the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl InstanceLock {
    pub fn acquire(daemon_directory: &Path) -> Result<Self, LockError> {
        let path = daemon_directory.join("pattoo-agentd.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let Some(mut lock) = crate::durable::try_lock(&path).map_err(io)? else {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            let pid = pid.trim();
            return Err(LockError::Held {
                dir: daemon_directory.to_owned(),
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        };
        // Record who holds it, for the message a second agent prints.
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{}", std::process::id())
        };
        write_pid(&mut lock).map_err(io)?;
        Ok(InstanceLock { _lock: lock, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::acquire(dir.path()).unwrap();
        let err = InstanceLock::acquire(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("(pid {})", std::process::id())),
            "{message}"
        );
        assert!(message.contains("already using"), "{message}");
        drop(first);
        InstanceLock::acquire(dir.path()).expect("free again once released");
    }
}
