//! One agent per daemon directory: a second agent would post under the same
//! agent ids and replay the same cache files, sending bodies twice.
//!
//! The lock file also says which process is this configuration's agent:
//! [`running_agent`] takes the pid it names only once the kernel shows that
//! process holding the lock (and, where `/proc` shows it, that it is a
//! `pattoo-agentd`), so a pid reused by
//! another process after the agent died is never taken for the agent
//! (`reload` signals only it; `status` reports only it).

use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

pub const FILE_NAME: &str = "pattoo-agentd.lock";
/// What the kernel calls the agent's process (`/proc/PID/comm`).
const PROCESS_NAME: &str = "pattoo-agentd";

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
        let path = daemon_directory.join(FILE_NAME);
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

/// Why [`running_agent`] found no agent: the reason, for a sentence that
/// says no agent runs.
#[derive(Debug, thiserror::Error)]
pub enum NoAgent {
    #[error("there is no lock file {0}")]
    NoLockFile(PathBuf),
    #[error("the lock file {path} names process {pid}, which has ended")]
    Ended { path: PathBuf, pid: u32 },
    #[error("process {pid}, which the lock file {path} names, {why}")]
    NotTheAgent {
        path: PathBuf,
        pid: u32,
        why: String,
    },
    /// Whether an agent runs is not known: the check itself failed.
    #[error("cannot tell whether a pattoo-agentd runs for this configuration: {0}; run this as the agent's user or root")]
    CannotCheck(String),
}

impl NoAgent {
    /// No agent runs (rather than: it could not be checked).
    pub fn is_not_running(&self) -> bool {
        !matches!(self, NoAgent::CannotCheck(_))
    }
}

/// The pid of this daemon directory's running agent: the one the lock file
/// names, holding the lock now (the kernel's `/proc/locks` says so), and a
/// `pattoo-agentd` where `/proc` shows its name.
///
/// Under the systemd unit (`ProtectProc=invisible`) `reload` cannot see the
/// agent's `/proc/PID`, only `/proc/locks`. That is enough: a process
/// holding the lock wrote its own pid into the file after taking it, and
/// while it holds the lock its pid cannot be reused.
pub fn running_agent(daemon_directory: &Path) -> Result<u32, NoAgent> {
    let path = daemon_directory.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(NoAgent::NoLockFile(path))
        }
        Err(error) => {
            return Err(NoAgent::CannotCheck(format!(
                "cannot read {}: {error}",
                path.display()
            )))
        }
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        // Written right after the lock is taken: empty for that moment,
        // or a file this version did not write.
        return Err(NoAgent::CannotCheck(format!(
            "the lock file {} holds {:?}, not a process id",
            path.display(),
            text.chars().take(40).collect::<String>()
        )));
    };
    let inode = std::fs::metadata(&path)
        .map_err(|error| NoAgent::CannotCheck(format!("{}: {error}", path.display())))?
        .ino();
    let locks = std::fs::read_to_string("/proc/locks")
        .map_err(|error| NoAgent::CannotCheck(format!("cannot read /proc/locks: {error}")))?;
    let comm = PathBuf::from(format!("/proc/{pid}/comm"));
    let name = match std::fs::read_to_string(&comm) {
        Ok(name) => Some(name.trim_end().to_owned()),
        // Ended, or hidden from this process (`ProtectProc=invisible`).
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(NoAgent::CannotCheck(format!(
                "cannot read {}: {error}",
                comm.display()
            )))
        }
    };
    let not_the_agent = |why: String| NoAgent::NotTheAgent {
        path: path.clone(),
        pid,
        why,
    };
    if let Some(name) = &name {
        if name != PROCESS_NAME {
            return Err(not_the_agent(format!(
                "is not a pattoo-agentd (it is {name:?})"
            )));
        }
    }
    if holds_write_flock(&locks, pid, inode) {
        return Ok(pid);
    }
    match name {
        Some(_) => Err(not_the_agent(
            "is a pattoo-agentd that does not hold the lock (it uses another daemon directory)"
                .to_owned(),
        )),
        None => Err(NoAgent::Ended { path, pid }),
    }
}

/// Whether `/proc/locks` (its text in `locks`) shows process `pid` holding
/// an exclusive `flock(2)` on the file with inode number `inode`. A line
/// reads `1: FLOCK  ADVISORY  WRITE 4242 fe:00:1234 0 EOF`; the device is
/// not compared, as overlay file systems report another one to `stat`.
fn holds_write_flock(locks: &str, pid: u32, inode: u64) -> bool {
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A lock others wait for is written `1: -> FLOCK ...`.
        fields.len() >= 6
            && fields[1] == "FLOCK"
            && fields[3] == "WRITE"
            && fields[4].parse() == Ok(pid)
            && fields[5].rsplit(':').next().and_then(|n| n.parse().ok()) == Some(inode)
    })
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

    #[test]
    fn a_lock_file_naming_a_process_that_is_not_the_agent_names_no_agent() {
        let dir = tempfile::tempdir().unwrap();
        let error = running_agent(dir.path()).unwrap_err();
        assert!(matches!(error, NoAgent::NoLockFile(_)), "{error}");

        // This test process holds the lock but is not a pattoo-agentd.
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        let error = running_agent(dir.path()).unwrap_err();
        assert!(error.is_not_running(), "{error}");
        assert!(
            error.to_string().contains("is not a pattoo-agentd"),
            "{error}"
        );
        drop(lock);

        // A pid that has ended.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let ended = child.id();
        child.wait().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), ended.to_string()).unwrap();
        let error = running_agent(dir.path()).unwrap_err();
        assert!(matches!(error, NoAgent::Ended { .. }), "{error}");
    }

    #[test]
    fn only_an_exclusive_flock_of_that_pid_on_that_inode_counts_as_holding() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 fe:00:1234 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 77 fe:00:99 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 4343 fe:00:1234 0 EOF\n\
                     3: FLOCK  ADVISORY  READ 55 00:2c:1234 0 EOF\n";
        assert!(holds_write_flock(locks, 4242, 1234));
        assert!(!holds_write_flock(locks, 4242, 1235), "another file");
        assert!(!holds_write_flock(locks, 4343, 1234), "only waiting for it");
        assert!(!holds_write_flock(locks, 77, 99), "a POSIX lock");
        assert!(!holds_write_flock(locks, 55, 1234), "a shared lock");
    }

    #[test]
    fn this_process_holding_the_lock_shows_in_proc_locks() {
        let dir = tempfile::tempdir().unwrap();
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        let inode = std::fs::metadata(&lock.path).unwrap().ino();
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        assert!(
            holds_write_flock(&locks, std::process::id(), inode),
            "{locks}"
        );
        drop(lock);
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        assert!(!holds_write_flock(&locks, std::process::id(), inode));
    }
}
