//! File operations that survive a crash or a power loss, for the agent id
//! files, the cache, the state file and the lock files. A leaf: it imports
//! nothing from the crate.
//!
//! A file is *committed* once it is complete under its final name and the
//! directory holding that name is fsynced: written under a temporary name
//! and fsynced ([`write_synced`]), given its final name by a hard link that
//! never replaces another file ([`link_no_clobber`]), then the directory
//! fsynced ([`sync_dir`]). A directory's own entry must be synced too before
//! anything in it is safe ([`create_private_dir`] makes it, the caller
//! syncs its parent). Files and directories are this user's only: they
//! name hosts and hold what was read from them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Creates a directory (and its parents) readable by this user only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Fsyncs a directory, making the names made or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to a new file `path` (mode 0600; an existing file is an
/// error, never overwritten) and fsyncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Gives `temporary` the name `path` unless `path` exists
/// (`ErrorKind::AlreadyExists` then). `temporary` keeps its name where
/// there are hard links; remove it afterwards.
pub fn link_no_clobber(temporary: &Path, path: &Path) -> io::Result<()> {
    match fs::hard_link(temporary, path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Err(error),
        // File systems without hard links: check, then rename. Only a
        // concurrent writer in the same millisecond could slip between.
        Err(error) if matches!(error.raw_os_error(), Some(code) if code == nix::libc::EPERM || code == nix::libc::EOPNOTSUPP || code == nix::libc::EMLINK) =>
        {
            if fs::symlink_metadata(path).is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(temporary, path)
        }
        Err(error) => Err(error),
    }
}

/// Moves `path` into `dir` so that a power loss at any step leaves it in
/// one place or both, never neither (a rename is durable only when both
/// directories are synced, and the one it leaves may be synced first by
/// the next write): linked under the first name not taken in `dir`
/// (`name`, `name.1`, ...; an earlier file is never replaced), `dir`
/// synced, then the old name removed.
pub fn move_durably(path: &Path, dir: &Path, name: &std::ffi::OsStr) -> io::Result<PathBuf> {
    let mut target = dir.join(name);
    let mut taken = 0;
    loop {
        match link_no_clobber(path, &target) {
            Ok(()) => break,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && taken < 1000 => {
                taken += 1;
                let mut numbered = name.to_owned();
                numbered.push(format!(".{taken}"));
                target = dir.join(numbered);
            }
            Err(error) => return Err(error),
        }
    }
    sync_dir(dir)?;
    match fs::remove_file(path) {
        // Already gone where there are no hard links: it was renamed.
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(target),
    }
}

/// Creates `dir` and its missing parents, fsyncing the directory that
/// holds each one made, so that none of their names is lost to a power
/// cut.
pub fn create_dir_all_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut level = dir;
    while fs::symlink_metadata(level).is_err() {
        missing.push(level);
        match level.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => level = parent,
            _ => break,
        }
    }
    fs::create_dir_all(dir)?;
    for made in missing {
        sync_dir(holder(made))?;
    }
    Ok(())
}

/// The directory holding `path`'s name.
fn holder(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Renames `from` to `to` and fsyncs the directories holding both names,
/// so that once this returns a power cut cannot bring the old name back.
/// `to` is replaced if it exists.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(holder(to))?;
    if holder(from) != holder(to) {
        sync_dir(holder(from))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` so that a power cut at any moment leaves
/// the previous file or the new one, whole, and the new one once this
/// returns: [`replace_atomically`] with the temporary file fsynced before
/// the rename and the directory after. For files written once in a while
/// whose loss would matter (what `switch-from-python --apply` did).
pub fn replace_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (temporary, file) = write_temporary(path, bytes, true)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    sync_dir(holder(path))
}

/// Replaces `path` with `bytes` through a temporary file (`path` with
/// `.tmp` appended) and a rename, so a reader never sees half a file.
/// The file is this user's only (0600). Not synced: for files rewritten
/// every few seconds, or at every start, whose loss in a power cut costs
/// nothing.
pub fn replace_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (temporary, file) = write_temporary(path, bytes, true)?;
    drop(file);
    fs::rename(&temporary, path)
}

/// [`replace_atomically`] for a file rewritten every few seconds: the
/// previous version is swapped with the temporary file
/// (`renameat2(RENAME_EXCHANGE)`) and overwritten in place next time, so
/// no inode is made and freed at each write, which on ext4 costs more than
/// the write itself. `fresh` says the temporary file may be a leftover
/// (from a crash, with other permissions) and is made anew. Where the file
/// system cannot exchange, or `path` does not exist yet, it is a plain
/// rename. A reader still holding the previous version open when the
/// next write comes (seconds later) could see it change; readers that
/// read the whole file at once do not.
pub fn replace_by_exchange(path: &Path, bytes: &[u8], fresh: bool) -> io::Result<()> {
    let (temporary, file) = write_temporary(path, bytes, fresh)?;
    drop(file);
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(
        AT_FDCWD,
        &temporary,
        AT_FDCWD,
        path,
        RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => Ok(()),
        Err(_) => fs::rename(&temporary, path),
    }
}

/// Writes `bytes` to `path` with `.tmp` appended (mode 0600), for a
/// replace to rename over `path`; returns that name and the file, still
/// open for the caller to sync. `fresh` says a file already under that
/// name may be a leftover from a crash, with other permissions: it is
/// removed and the file made anew; otherwise it is overwritten in place.
fn write_temporary(path: &Path, bytes: &[u8], fresh: bool) -> io::Result<(PathBuf, File)> {
    let mut temporary = PathBuf::from(path.as_os_str().to_owned());
    temporary.as_mut_os_string().push(".tmp");
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    if fresh {
        match fs::remove_file(&temporary) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    Ok((temporary, file))
}

/// Takes an exclusive `flock(2)` on the file `path` (created mode 0600 if
/// missing), without waiting: `Ok(None)` while another process (or another
/// open file in this one) holds it. Held until the returned file is
/// dropped or the process ends, however it ends.
pub fn try_lock(path: &Path) -> io::Result<Option<Flock<File>>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_never_replaces_one_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let temporary = dir.path().join(".a.tmp");
        let path = dir.path().join("a");
        fs::write(&path, "first").unwrap();
        write_synced(&temporary, b"second").unwrap();
        let err = link_no_clobber(&temporary, &path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&path).unwrap(), "first");
        let err = write_synced(&path, b"third").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let mode = fs::metadata(&temporary).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_file_moved_to_a_name_taken_gets_the_next_number() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("to");
        create_private_dir(&to).unwrap();
        fs::write(to.join("x"), "old").unwrap();
        let from = dir.path().join("x");
        fs::write(&from, "new").unwrap();
        let moved = move_durably(&from, &to, "x".as_ref()).unwrap();
        assert_eq!(moved, to.join("x.1"));
        assert_eq!(fs::read_to_string(&moved).unwrap(), "new");
        assert_eq!(fs::read_to_string(to.join("x")).unwrap(), "old");
        assert!(!from.exists());
        let mode = fs::metadata(&to).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_lock_is_refused_while_held_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = try_lock(&path).unwrap().expect("free at first");
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        assert!(try_lock(&path).unwrap().is_some());
    }

    #[test]
    fn a_replaced_file_holds_the_new_bytes_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        replace_atomically(&path, b"one").unwrap();
        replace_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_replaced_durably_in_new_directories_holds_the_new_bytes_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = dir.path().join("var/lib/pattoo/daemon");
        create_dir_all_durably(&daemon).unwrap();
        create_dir_all_durably(&daemon).unwrap();
        let path = daemon.join("switch-from-python.state");
        replace_durably(&path, b"one").unwrap();
        replace_durably(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(fs::read_dir(&daemon).unwrap().count(), 1);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_file_renamed_durably_is_under_its_new_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("switch-from-python.state");
        let to = dir.path().join("switch-from-python.state.undone");
        fs::write(&from, "units").unwrap();
        rename_durably(&from, &to).unwrap();
        assert!(!from.exists());
        assert_eq!(fs::read_to_string(&to).unwrap(), "units");
    }

    #[test]
    fn a_file_replaced_by_exchange_holds_the_new_bytes_and_reuses_the_old_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let temporary = dir.path().join("state.json.tmp");
        // A leftover temporary file with other permissions is made anew.
        fs::write(&temporary, "leftover").unwrap();
        fs::set_permissions(&temporary, fs::Permissions::from_mode(0o644)).unwrap();
        replace_by_exchange(&path, b"a longer first version", true).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a longer first version");
        let first = fs::metadata(&path).unwrap().ino();
        replace_by_exchange(&path, b"second", false).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second");
        replace_by_exchange(&path, b"third", false).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "third");
        for file in [&path, &temporary] {
            let mode = fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        // Where the file system exchanges names (ext4, xfs, btrfs, tmpfs),
        // the two files take turns and none is made after the first two.
        let inodes = [first, fs::metadata(&temporary).unwrap().ino()];
        let now = fs::metadata(&path).unwrap().ino();
        assert!(
            fs::read_to_string(&temporary).unwrap() == "second" && inodes.contains(&now)
                || fs::read_dir(dir.path()).unwrap().count() == 1,
            "either exchanged or renamed"
        );
    }
}
