//! The on-disk cache of bodies the pattoo server has not yet answered 200
//! for, shared with the Python agents.
//!
//! # On-disk format
//!
//! ```text
//! {cache_directory}/{agent_id}/{timestamp_ms}_{agent_id}.json    one body, exactly as posted
//! {cache_directory}/{agent_id}/.{timestamp_ms}_{agent_id}.json.{pid}.{n}.tmp   being written
//! {cache_directory}/quarantine/{agent_id}/{name}                 could not be read as a body
//! {cache_directory}/.replay.lock                                 flock(2)ed by the one replayer
//! ```
//!
//! This is the layout `pattoo_shared.phttp` writes and purges, so each side
//! replays the other's files. A Python agent picks up any `*.json` whose
//! name holds its agent id; temporary files end in `.tmp` so it never reads
//! a half-written one. Directories are mode 0700 and files 0600: bodies
//! name the hosts and what was read from them.
//!
//! # Invariants
//!
//! - A name is never reused. The timestamp in a new name is the body's poll
//!   time, raised past the last one this process used for the agent id (and
//!   past every name found at start-up, except names more than a year in
//!   the future, which would leave no numbers to count up to); the final
//!   name is made with a hard
//!   link, which fails rather than replace a file another writer made, and
//!   the next millisecond is tried.
//! - A body is *committed* once its file and the directory holding it are
//!   fsynced: written to a temporary name, fsynced, linked into place, the
//!   temporary removed, the directory fsynced. The directories holding the
//!   agent id folder and the cache directory are fsynced too, once per
//!   process, even when the folder was already there: whoever made it may
//!   have died before syncing it, or never synced. A failed write or fsync
//!   is reported to the caller as not committed, never retried in silence.
//! - A file is deleted only after the server answered 200 for it, or when a
//!   bound (`max_bytes`, `max_age`) drops it, which is logged at ERROR and
//!   counted.
//!
//! # Recovery rules
//!
//! Start-up lists file names only, so a large cache costs neither time nor
//! memory; a background pass then reads each file's size for `max_bytes`
//! (until it finishes, files not yet measured count as empty). Bodies are
//! read one at a time when replayed. Nothing found on disk ever stops the agent:
//!
//! - a `.tmp` file left by a process that no longer runs was never
//!   committed and is removed;
//! - a `*.json` file that cannot be read, or is not a body the server would
//!   accept, is moved to the quarantine folder, logged once and counted
//!   (linked there, the folder fsynced, then unlinked, so a power loss
//!   never leaves it nowhere; a name already in quarantine gets `.1`,
//!   `.2`, ... rather than being replaced);
//!   an invalid file that changes within a moment is instead left to be
//!   tried again, since the Python agents write their files in place;
//! - a `*.json` file larger than `max_bytes` is moved to quarantine too,
//!   once measured or when replay reads it (never more than `max_bytes`
//!   is read): it could never fit, and making room for it would drop
//!   every older body;
//! - a `*.json` file naming the agent id but not of our form
//!   (`hello_{agent_id}.json`) is ordered and aged by the timestamp its
//!   name starts with, else by its modification time, and replayed (or
//!   quarantined) like any other: never deleted unread as if from 1970;
//! - any other file is left alone.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::config::CacheSettings;
use super::Stats;
use crate::durable::{
    create_private_dir, link_no_clobber, move_durably, sync_dir, try_lock, write_synced,
};
use crate::model::PostBody;

/// The folder beside the agent id folders where unreadable files go.
pub const QUARANTINE: &str = "quarantine";

/// The file whose lock says who replays this cache.
const REPLAY_LOCK: &str = ".replay.lock";

/// The right to replay a cache directory, held by at most one replayer at a
/// time across every process and every [`Cache`] over it (a daemon whose
/// reload reopened the cache, `once`, `cache replay`): two replayers would
/// send the same file twice. Released when dropped.
#[derive(Debug)]
pub struct ReplayLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

/// Why a body could not be committed to the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot write cache file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// The file is in place but the directory entry may not survive a
    /// power loss.
    #[error("cache file {path} was written but its directory could not be synced: {source}")]
    NotDurable { path: PathBuf, source: io::Error },
    #[error(
        "a body of {size} bytes is larger than the whole cache (max_bytes {max_bytes}); raise cache.max_bytes"
    )]
    TooLarge { size: u64, max_bytes: u64 },
}

impl CacheError {
    /// Whether the cause is a full or read-only file system, which clears
    /// by itself or by an operator freeing space.
    pub fn is_no_space(&self) -> bool {
        match self {
            CacheError::Write { source, .. } | CacheError::NotDurable { source, .. } => matches!(
                source.raw_os_error(),
                Some(code) if code == nix::libc::ENOSPC
                    || code == nix::libc::EROFS
                    || code == nix::libc::EDQUOT
            ),
            CacheError::TooLarge { .. } => false,
        }
    }
}

/// Why a cached file could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Delivered or purged by another process meanwhile.
    #[error("cache file {0} is gone")]
    Gone(PathBuf),
    #[error("cache file {path} cannot be read: {source}")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("cache file {path} is larger than the whole cache (max_bytes {max_bytes})")]
    TooLarge { path: PathBuf, max_bytes: u64 },
}

/// Orders cached files: oldest timestamp first; names that do not have
/// our form sort by the timestamp they start with and a hash of the name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    timestamp_ms: u64,
    agent_id: Arc<str>,
    /// 0 for `{timestamp_ms}_{agent_id}.json`, else a hash of the name.
    variant: u64,
}

/// How far past now a found name may be and still set where new names
/// start: more is a clock gone wrong or a made-up name.
const FUTURE_NAMES_MS: u64 = 366 * 24 * 3600 * 1000;

/// The size of a file listed but not yet measured.
const UNMEASURED: u64 = u64::MAX;

#[derive(Debug)]
struct Entry {
    /// Bytes, or [`UNMEASURED`].
    size: u64,
    /// Only for names not of the form `{timestamp_ms}_{agent_id}.json`.
    odd_name: Option<Box<str>>,
}

/// One cached body, as handed out for replay.
#[derive(Debug, Clone)]
pub struct CachedFile {
    pub agent_id: Arc<str>,
    pub timestamp_ms: u64,
    pub path: PathBuf,
    pub size: u64,
    key: Key,
}

/// What `cache status` shows for one agent id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    pub agent_id: String,
    pub files: u64,
    pub bytes: u64,
    /// The timestamp of the oldest file.
    pub oldest_ms: Option<u64>,
}

#[derive(Default)]
struct Index {
    entries: BTreeMap<Key, Entry>,
    /// Of measured files.
    bytes: u64,
    unmeasured: usize,
    /// The last timestamp given to a name, per agent id.
    last_ms: HashMap<Arc<str>, u64>,
    /// Being replayed: the bounds leave it alone so a delivered body is not
    /// also counted as dropped.
    in_flight: Option<Key>,
    /// Invalid files that could not be moved to quarantine: left out of
    /// later listings so each is reported once.
    stuck: HashSet<Key>,
}

impl Entry {
    fn bytes(&self) -> u64 {
        if self.size == UNMEASURED {
            0
        } else {
            self.size
        }
    }
}

impl Index {
    fn intern(&mut self, agent_id: &str) -> Arc<str> {
        match self.last_ms.get_key_value(agent_id) {
            Some((interned, _)) => interned.clone(),
            None => {
                let interned: Arc<str> = Arc::from(agent_id);
                self.last_ms.insert(interned.clone(), 0);
                interned
            }
        }
    }

    fn insert(&mut self, key: Key, entry: Entry) {
        let last = self.last_ms.entry(key.agent_id.clone()).or_insert(0);
        // A name far in the future (`18446744073709551615_...`) is kept and
        // replayed, but new names do not follow it: they would run out of
        // numbers. Linking without replacing keeps names unique regardless.
        if key.timestamp_ms <= crate::time::now_ms().saturating_add(FUTURE_NAMES_MS) {
            *last = (*last).max(key.timestamp_ms);
        }
        let size = entry.bytes();
        self.unmeasured += usize::from(entry.size == UNMEASURED);
        if let Some(old) = self.entries.insert(key, entry) {
            self.bytes -= old.bytes();
            self.unmeasured -= usize::from(old.size == UNMEASURED);
        }
        self.bytes += size;
    }

    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.bytes -= entry.bytes();
        self.unmeasured -= usize::from(entry.size == UNMEASURED);
        if self.in_flight.as_ref() == Some(key) {
            self.in_flight = None;
        }
        Some(entry)
    }
}

/// The cache: the files on disk plus an index of their names and sizes.
pub struct Cache {
    root: PathBuf,
    settings: CacheSettings,
    stats: Arc<Stats>,
    index: Mutex<Index>,
    temporaries: AtomicU64,
    /// Directories whose own name this process has made durable (see
    /// [`Cache::durable_dir`]).
    durable_dirs: Mutex<HashSet<PathBuf>>,
}

impl Cache {
    /// Opens the cache at `root` and lists what is in it. Never fails: a
    /// directory that cannot be made or read is logged, and storing into
    /// it fails body by body until it can be.
    pub fn open(root: &Path, settings: &CacheSettings, stats: Arc<Stats>) -> Cache {
        if let Err(error) = create_private_dir(root) {
            tracing::warn!(directory = %root.display(), %error, "cannot create the cache directory; undelivered bodies cannot be kept until it can be");
        }
        let cache = Cache::inspect(root, settings, stats);
        cache.enforce_bounds(0);
        cache
    }

    /// Lists the cache at `root` only to look at it (`cache status`, a
    /// purge not yet confirmed): creates no directory and applies no bound,
    /// so no body is dropped. Temporaries of writers that are gone are
    /// still removed; they never held a committed body. Measure it with
    /// [`Cache::measure_only`].
    pub fn inspect(root: &Path, settings: &CacheSettings, stats: Arc<Stats>) -> Cache {
        let cache = Cache {
            root: root.to_owned(),
            settings: settings.clone(),
            stats,
            index: Mutex::new(Index::default()),
            temporaries: AtomicU64::new(0),
            durable_dirs: Mutex::new(HashSet::new()),
        };
        cache.rescan();
        cache
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index usable: each
        // change to it is a single insert or remove.
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn path_of(&self, key: &Key, entry: &Entry) -> PathBuf {
        let dir = self.root.join(&*key.agent_id);
        match &entry.odd_name {
            Some(name) => dir.join(&**name),
            None => dir.join(file_name(key.timestamp_ms, &key.agent_id)),
        }
    }

    /// Lists the agent id folders and adds every cached file not yet known,
    /// by name only (see [`Cache::measure`]). Files written meanwhile by a Python agent or
    /// another run of this one are picked up this way.
    pub fn rescan(&self) {
        let agents = match fs::read_dir(&self.root) {
            Ok(agents) => agents,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return,
            Err(error) => {
                tracing::warn!(directory = %self.root.display(), %error, "cannot list the cache directory");
                return;
            }
        };
        for agent in agents.flatten() {
            let name = agent.file_name();
            let Some(agent_id) = name.to_str().filter(|n| is_agent_id(n)) else {
                continue;
            };
            if !agent.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            self.scan_agent(agent_id, &agent.path());
        }
    }

    fn scan_agent(&self, agent_id: &str, dir: &Path) {
        let files = match fs::read_dir(dir) {
            Ok(files) => files,
            Err(error) => {
                tracing::warn!(directory = %dir.display(), %error, "cannot list a cache directory");
                return;
            }
        };
        let mut found = Vec::new();
        for file in files.flatten() {
            let name = file.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") && name.starts_with('.') {
                remove_stale_temporary(&file.path(), name);
                continue;
            }
            // The Python agents' rule: a `.json` file naming the agent id.
            if !name.ends_with(".json")
                || (canonical_timestamp(name, agent_id).is_none() && !name.contains(agent_id))
            {
                continue;
            }
            // The type comes with the listing on most file systems; no stat.
            if !file.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            // A name without our timestamp (`hello_<id>.json`) is dated by
            // the file itself, so max_age and max_bytes judge its real age
            // rather than drop it first as if it were from 1970.
            let modified_ms = if canonical_timestamp(name, agent_id).is_some() {
                0
            } else {
                modified_ms(&file)
            };
            found.push((name.to_owned(), modified_ms));
        }
        let mut index = self.lock();
        let agent = index.intern(agent_id);
        for (name, modified_ms) in found {
            let (key, odd_name) = key_for_name(&agent, &name, modified_ms);
            if !index.entries.contains_key(&key) && !index.stuck.contains(&key) {
                let entry = Entry {
                    size: UNMEASURED,
                    odd_name,
                };
                index.insert(key, entry);
            }
        }
    }

    /// Reads the size of every file listed but not yet measured, moves
    /// files larger than `max_bytes` to quarantine, then applies the
    /// bounds. Blocking; the lock is only held between batches.
    pub fn measure(&self) {
        if self.lock().unmeasured == 0 {
            return;
        }
        for file in self.read_sizes(true) {
            let reason = format!(
                "{} bytes, larger than the whole cache (max_bytes {})",
                file.size, self.settings.max_bytes
            );
            self.quarantine(&file, &reason);
        }
        self.enforce_bounds(0);
    }

    /// Reads the size of every file listed but not yet measured, and
    /// nothing else: no file is moved or dropped. Blocking.
    pub fn measure_only(&self) {
        self.read_sizes(false);
    }

    /// Reads the sizes of unmeasured files. With `set_aside`, a file larger
    /// than `max_bytes` leaves the index and is returned instead of counted.
    fn read_sizes(&self, set_aside: bool) -> Vec<CachedFile> {
        const BATCH: usize = 1024;
        let pending: Vec<Key> = {
            let index = self.lock();
            index
                .entries
                .iter()
                .filter(|(_, entry)| entry.size == UNMEASURED)
                .map(|(key, _)| key.clone())
                .collect()
        };
        let mut oversized = Vec::new();
        for batch in pending.chunks(BATCH) {
            let paths: Vec<Option<PathBuf>> = {
                let index = self.lock();
                batch
                    .iter()
                    .map(|key| index.entries.get(key).map(|entry| self.path_of(key, entry)))
                    .collect()
            };
            let sizes: Vec<Option<u64>> = paths
                .iter()
                .map(|path| fs::symlink_metadata(path.as_ref()?).ok().map(|m| m.len()))
                .collect();
            let mut index = self.lock();
            for (key, size) in batch.iter().zip(sizes) {
                match size {
                    // It can never fit: counting it would make the bounds
                    // drop every older body to make room for it, then it.
                    Some(size) if set_aside && size > self.settings.max_bytes => {
                        if let Some(entry) = index.remove(key) {
                            let mut file = self.file_of(key, &entry);
                            file.size = size;
                            oversized.push(file);
                        }
                    }
                    Some(size) => {
                        if let Some(entry) = index.entries.get_mut(key) {
                            if entry.size == UNMEASURED {
                                entry.size = size;
                                index.bytes += size;
                                index.unmeasured -= 1;
                            }
                        }
                    }
                    // Gone meanwhile: delivered or purged by someone else.
                    None => {
                        index.remove(key);
                    }
                }
            }
        }
        oversized
    }

    /// Whether every listed file's size is known.
    pub fn is_measured(&self) -> bool {
        self.lock().unmeasured == 0
    }

    /// Writes `body` durably (see the module doc) and returns where.
    /// Blocking: call from a blocking context.
    pub fn store(&self, body: &PostBody) -> Result<CachedFile, CacheError> {
        let size = body.json.len() as u64;
        if size > self.settings.max_bytes {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(CacheError::TooLarge {
                size,
                max_bytes: self.settings.max_bytes,
            });
        }
        self.enforce_bounds(size);
        let dir = self.root.join(&body.agent_id);
        let write_error = |path: &Path, source| CacheError::Write {
            path: path.to_owned(),
            source,
        };
        self.durable_dir(&self.root)
            .map_err(|e| write_error(&self.root, e))?;
        self.durable_dir(&dir).map_err(|e| write_error(&dir, e))?;

        let (agent, mut timestamp_ms) = self.reserve_name(&body.agent_id, body.timestamp_ms);
        let temporary = dir.join(format!(
            ".{}.{}.{}.tmp",
            file_name(timestamp_ms, &agent),
            std::process::id(),
            self.temporaries.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_synced(&temporary, &body.json);
        if let Err(source) = written {
            let _ = fs::remove_file(&temporary);
            return Err(write_error(&temporary, source));
        }
        let path = loop {
            let path = dir.join(file_name(timestamp_ms, &agent));
            match link_no_clobber(&temporary, &path) {
                Ok(()) => break path,
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    // Another writer (a Python agent, another run) has this
                    // name: take the next millisecond rather than replace it.
                    let Some(next) = timestamp_ms.checked_add(1) else {
                        let _ = fs::remove_file(&temporary);
                        return Err(write_error(
                            &path,
                            io::Error::other("no free file name after this one"),
                        ));
                    };
                    timestamp_ms = self.reserve_name(&agent, next).1;
                }
                Err(source) => {
                    let _ = fs::remove_file(&temporary);
                    return Err(write_error(&path, source));
                }
            }
        };
        let _ = fs::remove_file(&temporary);
        let key = Key {
            timestamp_ms,
            agent_id: agent.clone(),
            variant: 0,
        };
        self.lock().insert(
            key.clone(),
            Entry {
                size,
                odd_name: None,
            },
        );
        if let Err(source) = sync_dir(&dir) {
            return Err(CacheError::NotDurable { path, source });
        }
        Ok(CachedFile {
            agent_id: agent,
            timestamp_ms,
            path,
            size,
            key,
        })
    }

    /// Makes `dir` exist under a name that survives a power loss: a file
    /// fsynced inside a directory whose own entry never reached the disk
    /// is lost with it. The directory holding it is synced once per
    /// process, also when `dir` was already there: whoever made it (this
    /// cache at start-up, a run that died before syncing, a Python agent,
    /// which never syncs) may not have.
    fn durable_dir(&self, dir: &Path) -> io::Result<()> {
        let known = |dirs: &HashSet<PathBuf>| dirs.contains(dir);
        if known(&self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner())) && dir.is_dir() {
            return Ok(());
        }
        let existed = dir.is_dir();
        create_private_dir(dir)?;
        let synced = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
            _ => Ok(()),
        };
        match synced {
            Ok(()) => {}
            // Made here: nothing in it is committed until its name is.
            Err(error) if !existed => return Err(error),
            // Older than this process, most likely long on disk; refusing
            // every body for it would lose them all.
            Err(error) => tracing::warn!(
                directory = %dir.display(),
                %error,
                "cannot sync the directory holding this cache directory; if the cache directory was made just before a power loss, what is cached in it may be lost with it"
            ),
        }
        self.durable_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_owned());
        Ok(())
    }

    /// The timestamp for a new name: `wanted`, or just past the last one
    /// used for this agent id.
    fn reserve_name(&self, agent_id: &str, wanted: u64) -> (Arc<str>, u64) {
        let mut index = self.lock();
        let agent = index.intern(agent_id);
        let last = index.last_ms.get_mut(&agent).expect("interned above");
        let timestamp_ms = wanted.max(last.saturating_add(1));
        *last = timestamp_ms;
        (agent, timestamp_ms)
    }

    /// Drops the oldest files until `incoming` more bytes fit under
    /// `max_bytes`, and every file older than `max_age`. Each drop is
    /// counted; one ERROR line says how many and which span.
    pub fn enforce_bounds(&self, incoming: u64) {
        let now_ms = crate::time::now_ms();
        let max_age_ms = u64::try_from(self.settings.max_age.as_millis()).unwrap_or(u64::MAX);
        let cutoff_ms = now_ms.saturating_sub(max_age_ms);
        let mut dropped_by_age = Vec::new();
        let mut dropped_by_size = Vec::new();
        {
            let mut index = self.lock();
            let candidates: Vec<Key> = index
                .entries
                .keys()
                .filter(|key| index.in_flight.as_ref() != Some(*key))
                .take_while(|key| key.timestamp_ms < cutoff_ms)
                .cloned()
                .collect();
            for key in candidates {
                if let Some(entry) = index.remove(&key) {
                    dropped_by_age.push(self.path_of(&key, &entry));
                }
            }
            while index.bytes + incoming > self.settings.max_bytes {
                let Some(key) = index
                    .entries
                    .keys()
                    .find(|key| index.in_flight.as_ref() != Some(*key))
                    .cloned()
                else {
                    break;
                };
                if let Some(entry) = index.remove(&key) {
                    dropped_by_size.push(self.path_of(&key, &entry));
                }
            }
        }
        for (dropped, why) in [
            (dropped_by_age, "older than cache.max_age"),
            (dropped_by_size, "the cache reached cache.max_bytes"),
        ] {
            if dropped.is_empty() {
                continue;
            }
            for path in &dropped {
                if let Err(error) = fs::remove_file(path) {
                    if error.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(file = %path.display(), %error, "cannot delete a dropped cache file");
                    }
                }
            }
            self.stats
                .dropped
                .fetch_add(dropped.len() as u64, Ordering::Relaxed);
            tracing::error!(
                count = dropped.len(),
                oldest = %dropped[0].display(),
                newest = %dropped[dropped.len() - 1].display(),
                max_bytes = self.settings.max_bytes,
                max_age = %humantime::format_duration(self.settings.max_age),
                "dropped the oldest undelivered bodies because {why}"
            );
        }
    }

    fn file_of(&self, key: &Key, entry: &Entry) -> CachedFile {
        CachedFile {
            agent_id: key.agent_id.clone(),
            timestamp_ms: key.timestamp_ms,
            path: self.path_of(key, entry),
            size: entry.bytes(),
            key: key.clone(),
        }
    }

    /// The oldest cached file, marked as being replayed. `None` when the
    /// cache is empty.
    pub fn take_oldest(&self) -> Option<CachedFile> {
        self.take_oldest_except(&HashSet::new())
    }

    /// [`Cache::take_oldest`], passing over the files at `skip`: bodies
    /// that just failed, so one bad body does not take every attempt.
    pub fn take_oldest_except(&self, skip: &HashSet<PathBuf>) -> Option<CachedFile> {
        let mut index = self.lock();
        let file = index
            .entries
            .iter()
            .map(|(key, entry)| self.file_of(key, entry))
            .find(|file| !skip.contains(&file.path))?;
        index.in_flight = Some(file.key.clone());
        Some(file)
    }

    /// Gives back a file taken for replay that could not be delivered.
    pub fn release(&self, file: &CachedFile) {
        let mut index = self.lock();
        if index.in_flight.as_ref() == Some(&file.key) {
            index.in_flight = None;
        }
    }

    /// Claims the right to replay this cache, without waiting: `Ok(None)`
    /// while another replayer holds it. Blocking, but only for an open.
    pub fn try_lock_replay(&self) -> io::Result<Option<ReplayLock>> {
        Ok(try_lock(&self.root.join(REPLAY_LOCK))?.map(|lock| ReplayLock { _lock: lock }))
    }

    /// Reads a cached body, never more than `max_bytes` of it: no body we
    /// keep is larger, and a file not yet measured may be anything.
    /// Blocking.
    pub fn read(&self, file: &CachedFile) -> Result<Vec<u8>, ReadError> {
        let unreadable = |source| ReadError::Unreadable {
            path: file.path.clone(),
            source,
        };
        let opened = match fs::File::open(&file.path) {
            Ok(opened) => opened,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                self.lock().remove(&file.key);
                return Err(ReadError::Gone(file.path.clone()));
            }
            Err(source) => return Err(unreadable(source)),
        };
        let max_bytes = self.settings.max_bytes;
        let mut bytes = Vec::new();
        opened
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > max_bytes {
            return Err(ReadError::TooLarge {
                path: file.path.clone(),
                max_bytes,
            });
        }
        Ok(bytes)
    }

    /// Deletes a file the server answered 200 for. Blocking.
    pub fn remove(&self, file: &CachedFile) {
        self.lock().remove(&file.key);
        match fs::remove_file(&file.path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            // Left on disk it is only sent again: a duplicate, not a loss.
            Err(error) => {
                tracing::warn!(file = %file.path.display(), %error, "cannot delete a delivered cache file; it will be sent again")
            }
        }
    }

    /// Moves a file that is not a valid body out of the way, so it never
    /// blocks the rest. Blocking.
    pub fn quarantine(&self, file: &CachedFile, reason: &str) {
        self.lock().remove(&file.key);
        let dir = self.root.join(QUARANTINE).join(&*file.agent_id);
        let name = file.path.file_name().unwrap_or_default();
        let moved = self
            .durable_dir(&self.root.join(QUARANTINE))
            .and_then(|()| self.durable_dir(&dir))
            .and_then(|()| move_durably(&file.path, &dir, name));
        self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
        if moved.is_err() {
            self.lock().stuck.insert(file.key.clone());
        }
        match moved {
            // ERROR: the body will not reach the server unless someone acts.
            Ok(target) => tracing::error!(
                file = %file.path.display(),
                quarantine = %target.display(),
                "moved a cache file to quarantine, it will not be sent again: {reason}; inspect it and delete it, or fix it and move it back to be sent"
            ),
            Err(error) => tracing::error!(
                file = %file.path.display(),
                %error,
                "a cache file cannot be moved to quarantine ({reason}); skipped until restart: move or delete it by hand"
            ),
        }
    }

    /// Per agent id: files, bytes and the oldest timestamp.
    pub fn status(&self) -> Vec<AgentStatus> {
        let index = self.lock();
        let mut by_agent: BTreeMap<&str, AgentStatus> = BTreeMap::new();
        for (key, entry) in &index.entries {
            let status = by_agent
                .entry(&key.agent_id)
                .or_insert_with(|| AgentStatus {
                    agent_id: key.agent_id.to_string(),
                    files: 0,
                    bytes: 0,
                    oldest_ms: None,
                });
            status.files += 1;
            status.bytes += entry.bytes();
            status.oldest_ms = Some(status.oldest_ms.unwrap_or(u64::MAX).min(key.timestamp_ms));
        }
        by_agent.into_values().collect()
    }

    /// Files and bytes currently cached.
    pub fn totals(&self) -> (u64, u64) {
        let index = self.lock();
        (index.entries.len() as u64, index.bytes)
    }

    /// The timestamp of the oldest cached body, if any.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.lock()
            .entries
            .keys()
            .next()
            .map(|key| key.timestamp_ms)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Files and bytes whose timestamp is before `cutoff_ms`.
    pub fn count_older_than(&self, cutoff_ms: u64) -> (u64, u64) {
        let index = self.lock();
        index
            .entries
            .iter()
            .take_while(|(key, _)| key.timestamp_ms < cutoff_ms)
            .fold((0, 0), |(files, bytes), (_, entry)| {
                (files + 1, bytes + entry.bytes())
            })
    }

    /// Deletes every file whose timestamp is before `cutoff_ms`, as asked by
    /// an operator. Returns files and bytes deleted. Blocking.
    pub fn purge_older_than(&self, cutoff_ms: u64) -> (u64, u64) {
        let doomed: Vec<(PathBuf, u64)> = {
            let mut index = self.lock();
            let keys: Vec<Key> = index
                .entries
                .keys()
                .take_while(|key| key.timestamp_ms < cutoff_ms)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|key| {
                    let entry = index.remove(&key)?;
                    Some((self.path_of(&key, &entry), entry.bytes()))
                })
                .collect()
        };
        let mut files = 0;
        let mut bytes = 0;
        for (path, size) in doomed {
            match fs::remove_file(&path) {
                Ok(()) => {
                    files += 1;
                    bytes += size;
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "cannot delete a cache file")
                }
            }
        }
        if files > 0 {
            tracing::warn!(
                files,
                bytes,
                "purged undelivered bodies from the cache as asked"
            );
        }
        (files, bytes)
    }
}

/// `{timestamp_ms}_{agent_id}.json`, the name both agents write.
pub fn file_name(timestamp_ms: u64, agent_id: &str) -> String {
    format!("{timestamp_ms}_{agent_id}.json")
}

/// The timestamp of a name of the form `{timestamp_ms}_{agent_id}.json`,
/// checked without allocating: start-up does this for every file.
fn canonical_timestamp(name: &str, agent_id: &str) -> Option<u64> {
    let (digits, rest) = name.split_once('_')?;
    let rest = rest.strip_suffix(".json")?;
    if rest != agent_id || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `007_...` would not be written back the same way.
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// When a listed file was last written, in milliseconds since the epoch;
/// now if that cannot be told (the age is then not held against it).
fn modified_ms(file: &fs::DirEntry) -> u64 {
    file.metadata()
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| modified.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or_else(crate::time::now_ms, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The key of a listed file. A name of another form is ordered and aged by
/// the timestamp it starts with, else by `modified_ms`.
fn key_for_name(agent: &Arc<str>, name: &str, modified_ms: u64) -> (Key, Option<Box<str>>) {
    if let Some(timestamp_ms) = canonical_timestamp(name, agent) {
        let key = Key {
            timestamp_ms,
            agent_id: agent.clone(),
            variant: 0,
        };
        return (key, None);
    }
    let digits = name.split('_').next().unwrap_or_default();
    let timestamp_ms = digits
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .unwrap_or(modified_ms);
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    let key = Key {
        timestamp_ms,
        agent_id: agent.clone(),
        variant: hasher.finish() | 1,
    };
    (key, Some(name.into()))
}

fn is_agent_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Temporaries are never committed: remove those whose writer has gone
/// (it was killed mid-write) or that are an hour old.
fn remove_stale_temporary(path: &Path, name: &str) {
    let pid = name
        .trim_end_matches(".tmp")
        .rsplit('.')
        .nth(1)
        .and_then(|pid| pid.parse::<i32>().ok());
    if pid == Some(std::process::id() as i32) {
        return;
    }
    let writer_gone = match pid {
        Some(pid) => matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        ),
        None => true,
    };
    let old = fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age > Duration::from_secs(3600));
    if writer_gone || old {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const AGENT: &str = "66cf7a8e560f75e23d557023ce591120abd094925bde6d97f09561b69b6ed3c4";

    fn body(timestamp_ms: u64, text: &str) -> PostBody {
        PostBody {
            agent_id: AGENT.to_owned(),
            timestamp_ms,
            datapoints: 1,
            json: text.as_bytes().to_vec(),
        }
    }

    /// Bounds that keep the small timestamps these tests use.
    fn forever() -> CacheSettings {
        CacheSettings {
            max_age: Duration::from_secs(100 * 365 * 24 * 3600),
            ..CacheSettings::default()
        }
    }

    fn open(dir: &Path, settings: CacheSettings) -> (Cache, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        (Cache::open(dir, &settings, stats.clone()), stats)
    }

    #[test]
    fn two_bodies_of_the_same_millisecond_get_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = open(dir.path(), forever());
        let first = cache.store(&body(1000, "a")).unwrap();
        let second = cache.store(&body(1000, "b")).unwrap();
        assert_ne!(first.path, second.path);
        assert_eq!(fs::read(&first.path).unwrap(), b"a");
        assert_eq!(fs::read(&second.path).unwrap(), b"b");
        assert_eq!(
            first.path.file_name().unwrap().to_str().unwrap(),
            format!("1000_{AGENT}.json")
        );
        let mode = fs::metadata(&first.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(first.path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
    }

    #[test]
    fn a_name_taken_by_another_writer_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = open(dir.path(), forever());
        let agent_dir = dir.path().join(AGENT);
        fs::create_dir_all(&agent_dir).unwrap();
        // Written by a Python agent after this cache was opened.
        fs::write(agent_dir.join(file_name(5000, AGENT)), "python").unwrap();
        let ours = cache.store(&body(5000, "ours")).unwrap();
        assert_eq!(ours.timestamp_ms, 5001);
        assert_eq!(
            fs::read_to_string(agent_dir.join(file_name(5000, AGENT))).unwrap(),
            "python"
        );
    }

    /// Runs `f` on a thread and gives up after a generous while, so a
    /// hang fails the test instead of stalling the suite.
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("finished (or panicked) within 30 s")
    }

    #[test]
    fn a_file_named_with_the_largest_timestamp_neither_hangs_storing_nor_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let agent_dir = dir.path().join(AGENT);
        fs::create_dir_all(&agent_dir).unwrap();
        for timestamp in [u64::MAX, u64::MAX - 1] {
            fs::write(agent_dir.join(file_name(timestamp, AGENT)), "future").unwrap();
        }
        let root = dir.path().to_owned();
        let (stored, order) = within(move || {
            let (cache, _) = open(&root, forever());
            let first = cache.store(&body(1000, "a")).unwrap();
            let second = cache.store(&body(1000, "b")).unwrap();
            let mut order = Vec::new();
            while let Some(file) = cache.take_oldest() {
                order.push(cache.read(&file).unwrap());
                cache.remove(&file);
            }
            ((first.timestamp_ms, second.timestamp_ms), order)
        });
        assert_eq!(stored, (1000, 1001));
        assert_eq!(order, [&b"a"[..], b"b", b"future", b"future"]);
    }

    #[test]
    fn a_body_in_a_file_with_an_odd_name_is_kept_for_replay_not_dropped_as_ancient() {
        let dir = tempfile::tempdir().unwrap();
        let agent_dir = dir.path().join(AGENT);
        fs::create_dir_all(&agent_dir).unwrap();
        fs::write(agent_dir.join(format!("hello_{AGENT}.json")), "odd").unwrap();
        // Default bounds: seven days of max_age.
        let (cache, stats) = open(dir.path(), CacheSettings::default());
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
        let file = cache.take_oldest().expect("the odd file is cached");
        assert_eq!(cache.read(&file).unwrap(), b"odd");
        assert!(
            file.timestamp_ms > crate::time::now_ms() - 60_000,
            "dated by its mtime"
        );
    }

    #[test]
    fn reopening_finds_files_oldest_first_and_removes_dead_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let agent_dir = dir.path().join(AGENT);
        fs::create_dir_all(&agent_dir).unwrap();
        fs::write(agent_dir.join(file_name(300, AGENT)), "c").unwrap();
        fs::write(agent_dir.join(file_name(100, AGENT)), "a").unwrap();
        fs::write(agent_dir.join(format!("200_{AGENT}_000123.json")), "b").unwrap();
        fs::write(agent_dir.join("notes.txt"), "left alone").unwrap();
        let stale = agent_dir.join(format!(".{}.999999999.0.tmp", file_name(400, AGENT)));
        fs::write(&stale, "half").unwrap();

        let (cache, _) = open(dir.path(), forever());
        assert!(!stale.exists());
        assert!(agent_dir.join("notes.txt").exists());
        let mut order = Vec::new();
        while let Some(file) = cache.take_oldest() {
            order.push(cache.read(&file).unwrap());
            cache.remove(&file);
        }
        assert_eq!(order, [b"a", b"b", b"c"]);
        // A later body never takes a name the cache already used.
        let next = cache.store(&body(50, "late")).unwrap();
        assert_eq!(next.timestamp_ms, 301);
    }

    #[test]
    fn max_bytes_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let settings = CacheSettings {
            max_bytes: 30,
            ..CacheSettings::default()
        };
        let (cache, stats) = open(dir.path(), settings);
        let now = crate::time::now_ms();
        for i in 0..5 {
            cache.store(&body(now + i, "0123456789")).unwrap();
        }
        assert_eq!(cache.totals(), (3, 30));
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(cache.take_oldest().unwrap().timestamp_ms, now + 2);
    }

    #[test]
    fn max_age_drops_old_files_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let agent_dir = dir.path().join(AGENT);
        fs::create_dir_all(&agent_dir).unwrap();
        let now = crate::time::now_ms();
        fs::write(agent_dir.join(file_name(now - 3_600_000, AGENT)), "old").unwrap();
        fs::write(agent_dir.join(file_name(now, AGENT)), "new").unwrap();
        let settings = CacheSettings {
            max_age: Duration::from_secs(60),
            ..CacheSettings::default()
        };
        let (cache, stats) = open(dir.path(), settings);
        cache.measure();
        assert_eq!(cache.totals(), (1, 3));
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_file_larger_than_the_whole_cache_is_set_aside_without_dropping_older_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let agent_dir = dir.path().join(AGENT);
        fs::create_dir_all(&agent_dir).unwrap();
        let now = crate::time::now_ms();
        fs::write(agent_dir.join(file_name(now - 2, AGENT)), "older").unwrap();
        fs::write(agent_dir.join(file_name(now - 1, AGENT)), "old").unwrap();
        fs::write(agent_dir.join(file_name(now, AGENT)), vec![b'x'; 1000]).unwrap();
        let settings = CacheSettings {
            max_bytes: 100,
            ..CacheSettings::default()
        };
        let (cache, stats) = open(dir.path(), settings);
        cache.measure();
        assert_eq!(cache.totals(), (2, 8));
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(stats.quarantined.load(Ordering::Relaxed), 1);
        assert!(dir
            .path()
            .join(QUARANTINE)
            .join(AGENT)
            .join(file_name(now, AGENT))
            .exists());
    }

    #[test]
    fn replay_never_reads_more_than_max_bytes_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let agent_dir = dir.path().join(AGENT);
        fs::create_dir_all(&agent_dir).unwrap();
        let now = crate::time::now_ms();
        fs::write(agent_dir.join(file_name(now, AGENT)), vec![b'x'; 1000]).unwrap();
        let settings = CacheSettings {
            max_bytes: 100,
            ..CacheSettings::default()
        };
        // Not measured yet: only its name is known.
        let (cache, _) = open(dir.path(), settings);
        let file = cache.take_oldest().unwrap();
        assert!(
            matches!(
                cache.read(&file),
                Err(ReadError::TooLarge { max_bytes: 100, .. })
            ),
            "{:?}",
            cache.read(&file)
        );
    }

    #[test]
    fn quarantined_files_leave_the_cache_but_stay_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, stats) = open(dir.path(), forever());
        let file = cache.store(&body(7, "{truncated")).unwrap();
        cache.quarantine(&file, "not JSON");
        assert!(cache.is_empty());
        assert!(dir
            .path()
            .join(QUARANTINE)
            .join(AGENT)
            .join(file_name(7, AGENT))
            .exists());
        assert_eq!(stats.quarantined.load(Ordering::Relaxed), 1);
        // The quarantine folder is not mistaken for an agent id on rescan.
        cache.rescan();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_file_quarantined_twice_under_one_name_keeps_both_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = open(dir.path(), forever());
        let first = cache.store(&body(7, "{first")).unwrap();
        cache.quarantine(&first, "not JSON");
        // The same name again: a power loss brought back the original, or
        // another writer reused it.
        fs::write(&first.path, "{second").unwrap();
        cache.rescan();
        let second = cache.take_oldest().unwrap();
        cache.quarantine(&second, "not JSON");
        let quarantine = dir.path().join(QUARANTINE).join(AGENT);
        let name = file_name(7, AGENT);
        assert_eq!(fs::read(quarantine.join(&name)).unwrap(), b"{first");
        assert_eq!(
            fs::read(quarantine.join(format!("{name}.1"))).unwrap(),
            b"{second"
        );
        assert!(!first.path.exists());
    }
}
