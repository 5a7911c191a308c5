//! A FUSE file system held in memory that models what a disk keeps when the
//! power goes: only what was synced.
//!
//! # The model (what POSIX promises, and no more)
//!
//! - A file's data survives only as it was at its last `fsync` or
//!   `fdatasync`. Writes since then are lost, or, at random, a prefix of
//!   them survives, the last one possibly torn: a disk flushes pages in
//!   its own time, so a half-written file is a possible outcome.
//! - A directory's entries (create, mkdir, link, unlink, rename, rmdir)
//!   survive only as they were at the directory's last `fsync`. Syncing a
//!   file does not make its name durable, and syncing a directory does not
//!   make its own name in its parent durable. A rename is two entry changes,
//!   each durable with its own directory: it can survive in both or neither.
//! - What cannot be reached from the root through durable entries is gone.
//!
//! ext4 (data=ordered) keeps more than this; a program that is correct here
//! is correct there.
//!
//! [`VolatileFs::power_cut`] applies the model at one instant: the writer
//! is killed, every request from then on fails with EIO, and the state left
//! is what the next mount serves.
//! [`VolatileFs::take_committed`] reports every file that became durable
//! with the data it had when it was synced (fsynced, then its directory
//! fsynced), which is what a writer may call committed.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const ROOT: u64 = 1;
/// The kernel may cache names and attributes this long: it sees every
/// change, since every change goes through it.
const TTL: Duration = Duration::from_secs(1);

/// One write to a file since its last sync, kept so a power cut can leave
/// any prefix of them.
#[derive(Clone)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    Truncate { size: u64 },
}

impl Change {
    fn apply(&self, data: &mut Vec<u8>, torn_at: Option<usize>) {
        match self {
            Change::Write { offset, bytes } => {
                let bytes = &bytes[..torn_at.unwrap_or(bytes.len()).min(bytes.len())];
                let start = *offset as usize;
                let end = start + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[start..end].copy_from_slice(bytes);
            }
            Change::Truncate { size } => data.resize(*size as usize, 0),
        }
    }
}

enum Content {
    File {
        data: Vec<u8>,
        /// As of the last fsync; empty before the first.
        synced: Vec<u8>,
        /// Since the last fsync, oldest first.
        changes: Vec<Change>,
        /// Whether it was ever synced.
        ever_synced: bool,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        /// As of the last fsync of this directory.
        synced: BTreeMap<OsString, u64>,
        /// For paths in reports: the directory holding it (a directory has
        /// one name).
        parent: u64,
        name: OsString,
    },
}

struct Inode {
    content: Content,
    perm: u16,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Inode {
    fn new(content: Content, perm: u16, uid: u32, gid: u32) -> Self {
        let now = SystemTime::now();
        Inode {
            content,
            perm,
            uid,
            gid,
            nlink: 1,
            mtime: now,
            ctime: now,
        }
    }

    fn kind(&self) -> FileType {
        match self.content {
            Content::File { .. } => FileType::RegularFile,
            Content::Dir { .. } => FileType::Directory,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (size, nlink) = match &self.content {
            Content::File { data, .. } => (data.len() as u64, self.nlink),
            Content::Dir { entries, .. } => (entries.len() as u64, 2),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind: self.kind(),
            perm: self.perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

/// A file that became durable: its path from the root and its data.
#[derive(Debug, Clone)]
pub struct DurableFile {
    pub path: String,
    pub data: Vec<u8>,
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Off between a power cut and the next mount: every request fails.
    powered: bool,
    /// Directory listings handed out by opendir, by handle.
    listings: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    next_handle: u64,
    committed: Vec<DurableFile>,
    /// Every name given by link or rename, with the data it named then.
    named: Vec<DurableFile>,
    /// Requests the model does not implement, to fail the test loudly.
    unsupported: Vec<String>,
    /// Changes still allowed before the power fails by itself.
    trip: Option<u64>,
    rng: fastrand::Rng,
    /// Every file there was just before the last cut.
    at_cut: Vec<DurableFile>,
    /// The process killed by the next cut.
    victim: Option<i32>,
}

impl State {
    fn new(seed: u64) -> Self {
        let mut inodes = HashMap::new();
        let root = Content::Dir {
            entries: BTreeMap::new(),
            synced: BTreeMap::new(),
            parent: ROOT,
            name: OsString::new(),
        };
        inodes.insert(ROOT, Inode::new(root, 0o755, 0, 0));
        State {
            inodes,
            next_ino: ROOT + 1,
            powered: true,
            listings: HashMap::new(),
            next_handle: 1,
            committed: Vec::new(),
            named: Vec::new(),
            unsupported: Vec::new(),
            trip: None,
            rng: fastrand::Rng::with_seed(seed),
            at_cut: Vec::new(),
            victim: None,
        }
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.inodes.get(&dir).ok_or(Errno::ENOENT)?.content {
            Content::Dir { entries, .. } => Ok(entries),
            Content::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.inodes.get_mut(&dir).ok_or(Errno::ENOENT)?.content {
            Content::Dir { entries, .. } => Ok(entries),
            Content::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        Ok(self.inodes.get(&ino).ok_or(Errno::ENOENT)?.attr(ino))
    }

    fn add(&mut self, parent: u64, name: &OsStr, inode: Inode) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch(parent);
        Ok(ino)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.mtime = SystemTime::now();
            inode.ctime = inode.mtime;
        }
    }

    /// Drops the entry `name` of `dir`, keeping the inode: a durable entry
    /// or an open handle may still refer to it.
    fn unlink(&mut self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        let ino = self.entries_mut(dir)?.remove(name).ok_or(Errno::ENOENT)?;
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.nlink = inode.nlink.saturating_sub(1);
            inode.ctime = SystemTime::now();
        }
        self.touch(dir);
        Ok(ino)
    }

    fn note_name(&mut self, dir: u64, name: &OsStr, ino: u64) {
        if let Some(Content::File { data, .. }) = self.inodes.get(&ino).map(|i| &i.content) {
            let named = DurableFile {
                path: self.path(dir, name),
                data: data.clone(),
            };
            self.named.push(named);
        }
    }

    fn path(&self, dir: u64, name: &OsStr) -> String {
        let mut parts = vec![name.to_string_lossy().into_owned()];
        let mut at = dir;
        while at != ROOT {
            match self.inodes.get(&at).map(|inode| &inode.content) {
                Some(Content::Dir { parent, name, .. }) => {
                    parts.push(name.to_string_lossy().into_owned());
                    at = *parent;
                }
                _ => break,
            }
        }
        parts.reverse();
        parts.join("/")
    }

    /// Makes the entries of `dir` durable, and reports each file in it
    /// whose data is durable too.
    fn sync_dir(&mut self, dir: u64) -> Result<(), Errno> {
        let entries = self.entries(dir)?.clone();
        let mut committed = Vec::new();
        for (name, ino) in &entries {
            if let Some(Inode {
                content:
                    Content::File {
                        data,
                        changes,
                        ever_synced: true,
                        ..
                    },
                ..
            }) = self.inodes.get(ino)
            {
                if changes.is_empty() {
                    committed.push(DurableFile {
                        path: self.path(dir, name),
                        data: data.clone(),
                    });
                }
            }
        }
        self.committed.extend(committed);
        if let Some(Content::Dir { synced, .. }) =
            self.inodes.get_mut(&dir).map(|inode| &mut inode.content)
        {
            *synced = entries;
        }
        Ok(())
    }

    fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        match &mut self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?.content {
            Content::File {
                data,
                synced,
                changes,
                ever_synced,
            } => {
                synced.clone_from(data);
                changes.clear();
                *ever_synced = true;
                Ok(())
            }
            // fsync of a directory opened as a file reaches fsyncdir.
            Content::Dir { .. } => self.sync_dir(ino),
        }
    }

    /// The power fails now: keeps what is reachable through durable
    /// entries, each directory as last synced and each file as last synced
    /// plus a random prefix of its later writes.
    fn cut(&mut self) {
        // First, while every other request waits for the lock: a machine
        // without power runs nothing more.
        if let Some(pid) = self.victim.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.trip = None;
        self.at_cut = self.files();
        let rng = &mut self.rng;
        let mut kept: HashMap<u64, Inode> = HashMap::new();
        let mut links: HashMap<u64, u32> = HashMap::new();
        // Each with the directory and name it is found under: a directory
        // rename that was not synced leaves it where it was.
        let mut pending = vec![(ROOT, ROOT, OsString::new())];
        while let Some((ino, parent, name)) = pending.pop() {
            let Some(inode) = self.inodes.remove(&ino) else {
                continue; // a second durable name of a file already kept
            };
            let content = match inode.content {
                Content::Dir { synced, .. } => {
                    for (child_name, child) in &synced {
                        *links.entry(*child).or_default() += 1;
                        pending.push((*child, ino, child_name.clone()));
                    }
                    Content::Dir {
                        entries: synced.clone(),
                        synced,
                        parent,
                        name,
                    }
                }
                Content::File {
                    synced,
                    changes,
                    ever_synced,
                    ..
                } => {
                    let mut data = synced;
                    let flushed = rng.usize(0..=changes.len());
                    for change in &changes[..flushed] {
                        change.apply(&mut data, None);
                    }
                    if let Some(torn) = changes.get(flushed) {
                        if rng.bool() {
                            let Change::Write { bytes, .. } = torn else {
                                unreachable!("a truncate is not torn")
                            };
                            let at = rng.usize(0..=bytes.len());
                            torn.apply(&mut data, Some(at));
                        }
                    }
                    Content::File {
                        synced: data.clone(),
                        data,
                        changes: Vec::new(),
                        // What is on the platter now is what a reboot reads.
                        ever_synced,
                    }
                }
            };
            kept.insert(ino, Inode { content, ..inode });
        }
        for (ino, inode) in &mut kept {
            if *ino != ROOT {
                inode.nlink = links.get(ino).copied().unwrap_or(1);
            }
        }
        self.inodes = kept;
        self.listings.clear();
        self.powered = false;
    }

    /// Every regular file reachable from the root, with its path.
    fn files(&self) -> Vec<DurableFile> {
        let mut files = Vec::new();
        let mut pending = vec![ROOT];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = self.entries(dir) else {
                continue;
            };
            for (name, ino) in entries {
                match self.inodes.get(ino).map(|inode| &inode.content) {
                    Some(Content::File { data, .. }) => files.push(DurableFile {
                        path: self.path(dir, name),
                        data: data.clone(),
                    }),
                    Some(Content::Dir { .. }) => pending.push(*ino),
                    None => {}
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }
}

/// The file system; clones share one state, so the test can inspect and
/// cut it while a clone serves a mount.
#[derive(Clone)]
pub struct VolatileFs {
    state: Arc<Mutex<State>>,
}

impl VolatileFs {
    /// `seed` drives what survives of unsynced writes.
    pub fn new(seed: u64) -> Self {
        VolatileFs {
            state: Arc::new(Mutex::new(State::new(seed))),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is changed in single steps; a panic mid-request leaves
        // it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state if the power is on.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut state = self.state();
        if !state.powered {
            return Err(Errno::EIO);
        }
        f(&mut state)
    }

    /// Runs `f`, a change (anything a power cut can undo: a write, a name,
    /// a sync), if the power is on; cuts the power instead if the trip set
    /// by [`VolatileFs::cut_before_change`] is reached.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut state = self.state();
        if !state.powered {
            return Err(Errno::EIO);
        }
        match state.trip {
            Some(0) => {
                state.cut();
                return Err(Errno::EIO);
            }
            Some(n) => state.trip = Some(n - 1),
            None => {}
        }
        f(&mut state)
    }

    /// Cuts the power at this instant (see the module doc). Requests fail
    /// until [`VolatileFs::power_on`]. Nothing happens if it is off already.
    pub fn power_cut(&self) {
        let mut state = self.state();
        if state.powered {
            state.cut();
        }
    }

    /// Cuts the power just before the change after the next `changes`
    /// ones, so that a cut can land between any two steps of a write.
    pub fn cut_before_change(&self, changes: u64) {
        self.state().trip = Some(changes);
    }

    /// Makes the next cut SIGKILL `pid` at the same instant.
    pub fn kill_at_cut(&self, pid: u32) {
        self.state().victim = Some(pid as i32);
    }

    /// Every file there was just before the last cut.
    pub fn files_at_cut(&self) -> Vec<DurableFile> {
        self.state().at_cut.clone()
    }

    pub fn is_powered(&self) -> bool {
        self.state().powered
    }

    pub fn power_on(&self) {
        let mut state = self.state();
        state.powered = true;
        state.trip = None;
    }

    /// Files that became durable since the last call.
    pub fn take_committed(&self) -> Vec<DurableFile> {
        std::mem::take(&mut self.state().committed)
    }

    /// Names given by link or rename since the last call, with the data
    /// each named then.
    pub fn take_named(&self) -> Vec<DurableFile> {
        std::mem::take(&mut self.state().named)
    }

    /// Every file there is now (after a cut: every file that survived).
    pub fn files(&self) -> Vec<DurableFile> {
        self.state().files()
    }

    /// Requests seen that the model does not implement.
    pub fn unsupported(&self) -> Vec<String> {
        self.state().unsupported.clone()
    }

    fn unsupported_request(&self, what: String) -> Errno {
        self.state().unsupported.push(what);
        Errno::ENOSYS
    }
}

fn entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(errno) => reply.error(errno),
    }
}

fn empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}

fn new_file() -> Content {
    Content::File {
        data: Vec::new(),
        synced: Vec::new(),
        changes: Vec::new(),
        ever_synced: false,
    }
}

impl Filesystem for VolatileFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(
            reply,
            self.with(|s| {
                let ino = s.child(parent.0, name)?;
                s.attr(ino)
            }),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|s| s.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.change(|s| {
            let inode = s.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            if let Some(mode) = mode {
                inode.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                inode.uid = uid;
            }
            if let Some(gid) = gid {
                inode.gid = gid;
            }
            if let Some(size) = size {
                let Content::File { data, changes, .. } = &mut inode.content else {
                    return Err(Errno::EISDIR);
                };
                let change = Change::Truncate { size };
                change.apply(data, None);
                changes.push(change);
                inode.mtime = SystemTime::now();
            }
            match mtime {
                Some(TimeOrNow::SpecificTime(at)) => inode.mtime = at,
                Some(TimeOrNow::Now) => inode.mtime = SystemTime::now(),
                None => {}
            }
            inode.ctime = SystemTime::now();
            Ok(inode.attr(ino.0))
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.change(|s| {
            let dir = Content::Dir {
                entries: BTreeMap::new(),
                synced: BTreeMap::new(),
                parent: parent.0,
                name: name.to_owned(),
            };
            let perm = (mode & !umask & 0o7777) as u16;
            let ino = s.add(parent.0, name, Inode::new(dir, perm, req.uid(), req.gid()))?;
            s.attr(ino)
        });
        entry(reply, result);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.change(|s| {
            let perm = (mode & !umask & 0o7777) as u16;
            let ino = s.add(
                parent.0,
                name,
                Inode::new(new_file(), perm, req.uid(), req.gid()),
            )?;
            s.attr(ino)
        });
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(errno) => reply.error(errno),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.change(|s| {
            if matches!(
                s.inodes.get(&s.child(parent.0, name)?).map(|i| &i.content),
                Some(Content::Dir { .. })
            ) {
                return Err(Errno::EISDIR);
            }
            s.unlink(parent.0, name).map(drop)
        });
        empty(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.change(|s| {
            let ino = s.child(parent.0, name)?;
            if !s.entries(ino)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            s.unlink(parent.0, name).map(drop)
        });
        empty(reply, result);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.change(|s| {
            if flags.contains(RenameFlags::RENAME_EXCHANGE)
                || flags.contains(RenameFlags::RENAME_WHITEOUT)
            {
                return Err(Errno::EINVAL);
            }
            let ino = s.child(parent.0, name)?;
            s.entries(newparent.0)?;
            if let Ok(existing) = s.child(newparent.0, newname) {
                if existing == ino {
                    return Ok(());
                }
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                let moving_dir = matches!(s.inodes[&ino].content, Content::Dir { .. });
                match (&s.inodes[&existing].content, moving_dir) {
                    (Content::Dir { entries, .. }, true) if !entries.is_empty() => {
                        return Err(Errno::ENOTEMPTY)
                    }
                    (Content::Dir { .. }, false) => return Err(Errno::EISDIR),
                    (Content::File { .. }, true) => return Err(Errno::ENOTDIR),
                    _ => {}
                }
                s.unlink(newparent.0, newname)?;
            }
            s.entries_mut(parent.0)?.remove(name);
            s.entries_mut(newparent.0)?.insert(newname.to_owned(), ino);
            if let Some(Content::Dir { parent, name, .. }) =
                s.inodes.get_mut(&ino).map(|inode| &mut inode.content)
            {
                *parent = newparent.0;
                *name = newname.to_owned();
            }
            s.touch(parent.0);
            s.touch(newparent.0);
            s.note_name(newparent.0, newname, ino);
            Ok(())
        });
        empty(reply, result);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self.change(|s| {
            if matches!(
                s.inodes.get(&ino.0).ok_or(Errno::ENOENT)?.content,
                Content::Dir { .. }
            ) {
                return Err(Errno::EPERM);
            }
            if s.entries(newparent.0)?.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            s.entries_mut(newparent.0)?
                .insert(newname.to_owned(), ino.0);
            s.touch(newparent.0);
            s.note_name(newparent.0, newname, ino.0);
            let inode = s.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            inode.nlink += 1;
            inode.ctime = SystemTime::now();
            Ok(inode.attr(ino.0))
        });
        entry(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|s| s.attr(ino.0)) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.with(
            |s| match &s.inodes.get(&ino.0).ok_or(Errno::ENOENT)?.content {
                Content::File { data, .. } => {
                    let start = (offset as usize).min(data.len());
                    let end = (start + size as usize).min(data.len());
                    Ok(data[start..end].to_vec())
                }
                Content::Dir { .. } => Err(Errno::EISDIR),
            },
        );
        match result {
            Ok(bytes) => reply.data(&bytes),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.change(|s| {
            let inode = s.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            let Content::File { data, changes, .. } = &mut inode.content else {
                return Err(Errno::EISDIR);
            };
            let change = Change::Write {
                offset,
                bytes: bytes.to_vec(),
            };
            change.apply(data, None);
            changes.push(change);
            inode.mtime = SystemTime::now();
            inode.ctime = inode.mtime;
            Ok(bytes.len() as u32)
        });
        match result {
            Ok(written) => reply.written(written),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) is not a sync.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.change(|s| s.sync_file(ino.0)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // The listing is taken at open, so entries changed while it is read
        // are neither skipped nor repeated.
        let result = self.with(|s| {
            let mut listing = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (ino.0, FileType::Directory, OsString::from("..")),
            ];
            for (name, child) in s.entries(ino.0)? {
                if let Some(inode) = s.inodes.get(child) {
                    listing.push((*child, inode.kind(), name.clone()));
                }
            }
            let handle = s.next_handle;
            s.next_handle += 1;
            s.listings.insert(handle, listing);
            Ok(handle)
        });
        match result {
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.with(|s| {
            let listing = s.listings.get(&fh.0).ok_or(Errno::EBADF)?;
            Ok(listing
                .iter()
                .skip(offset as usize)
                .cloned()
                .collect::<Vec<_>>())
        });
        match result {
            Ok(rest) => {
                for (i, (ino, kind, name)) in rest.into_iter().enumerate() {
                    if reply.add(INodeNo(ino), offset + i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.state().listings.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.change(|s| s.sync_dir(ino.0)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.with(|s| s.attr(ino.0).map(drop)));
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.unsupported_request(format!("mknod {name:?}")));
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(self.unsupported_request(format!("symlink {link_name:?}")));
    }
}
