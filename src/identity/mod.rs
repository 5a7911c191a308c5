//! Who the agent is: agent id files and the host name it posts under
//! ([`hostname`]).
//!
//! Agent ids live in `{daemon_directory}/agent_id/{agent_program}.agent_id`,
//! the same files the Python agents use: 64 lowercase hex digits, no
//! newline. A file is created once and never changed, because the server
//! keys every chart on the agent id.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::durable;

mod hostname;
#[cfg(test)]
pub(crate) use hostname::LOOKUPS;
pub use hostname::{hostname, HostName, HostNameSource};

/// Numbers this process's temporary files apart.
static TEMPORARIES: AtomicU64 = AtomicU64::new(0);

/// Why an agent id could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("agent id file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "agent id file {path} holds {found:?}, not 64 hex digits; \
         restore it from a backup to keep this agent's charts, or delete it to start new ones"
    )]
    Invalid { path: PathBuf, found: String },
}

pub fn agent_id_path(daemon_directory: &Path, agent_program: &str) -> PathBuf {
    daemon_directory
        .join("agent_id")
        .join(format!("{agent_program}.agent_id"))
}

/// Reads the agent id of `agent_program`, creating it on first use.
pub fn agent_id(daemon_directory: &Path, agent_program: &str) -> Result<String, IdentityError> {
    let path = agent_id_path(daemon_directory, agent_program);
    let io_error = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(text) => return validate(&path, &text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error(err)),
    }
    let dir = path.parent().expect("agent id path has a directory");
    durable::create_private_dir(dir).map_err(io_error)?;

    // Write a complete file under a temporary name, then link it into place:
    // linking fails if the name exists, so a concurrent creator never has
    // its id replaced and no reader ever sees a half-written file.
    let id = new_agent_id().map_err(io_error)?;
    let temporary = dir.join(format!(
        ".{agent_program}.agent_id.{}.{}.tmp",
        std::process::id(),
        TEMPORARIES.fetch_add(1, Ordering::Relaxed)
    ));
    let write = || -> io::Result<()> {
        // Left by an earlier process that had this pid and was killed.
        let _ = fs::remove_file(&temporary);
        durable::write_synced(&temporary, id.as_bytes())?;
        match durable::link_no_clobber(&temporary, &path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        durable::sync_dir(dir)
    };
    let written = write();
    let _ = fs::remove_file(&temporary);
    written.map_err(io_error)?;
    let text = fs::read_to_string(&path).map_err(io_error)?;
    validate(&path, &text)
}

fn validate(path: &Path, text: &str) -> Result<String, IdentityError> {
    let id = text.trim();
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(IdentityError::Invalid {
            path: path.to_owned(),
            found: id.chars().take(80).collect(),
        })
    }
}

/// A sha256 of random input, as the Python library makes them.
fn new_agent_id() -> io::Result<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|err| io::Error::other(err.to_string()))?;
    Ok(hex::encode(Sha256::digest(seed)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_an_id_once_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = agent_id(dir.path(), "pattoo_agent_modbustcpd").unwrap();
        assert_eq!(first.len(), 64);
        assert!(first
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let again = agent_id(dir.path(), "pattoo_agent_modbustcpd").unwrap();
        assert_eq!(first, again);
        let other = agent_id(dir.path(), "pattoo_agentd_command").unwrap();
        assert_ne!(first, other);

        let path = agent_id_path(dir.path(), "pattoo_agent_modbustcpd");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            first,
            "no newline, nothing else"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "no temporary files left behind");
    }

    #[test]
    fn reads_ids_written_by_the_python_agents_ignoring_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = agent_id_path(dir.path(), "legacy");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let id = "66cf7a8e560f75e23d557023ce591120abd094925bde6d97f09561b69b6ed3c4";
        fs::write(&path, format!("{id}\n")).unwrap();
        assert_eq!(agent_id(dir.path(), "legacy").unwrap(), id);
    }

    #[test]
    fn refuses_a_damaged_id_file_rather_than_replacing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = agent_id_path(dir.path(), "damaged");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "not an id").unwrap();
        let err = agent_id(dir.path(), "damaged").unwrap_err();
        assert!(err.to_string().contains("not 64 hex digits"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "not an id");
    }
}
