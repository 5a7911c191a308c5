//! Delivery: posting bodies to the pattoo agent API, and the on-disk cache
//! that keeps what could not be posted until it can be.
//!
//! [`Delivery`] is the one handle the rest of the agent uses. Every body
//! handed to [`Delivery::submit`] is *committed* when it returns: the server
//! answered 200 (202 from `/encrypted` with `encryption: openpgp`), or the
//! body's cache file and directory are fsynced (see [`cache`]). The only
//! exception is a cache that cannot be written (disk full, read-only): then
//! the body is lost, logged at ERROR and counted, and polling goes on.
//! [`Delivery::run_replay`] sends cached bodies back, oldest first,
//! whenever the server is reachable.
//!
//! How a daemon uses it:
//!
//! ```text
//! let delivery = Delivery::from_parts(&api, &cache_dir, &delivery_settings, &cache_settings)?; // no network I/O
//! let (stop, stopped) = tokio::sync::watch::channel(false);
//! let replay = tokio::spawn({ let d = delivery.clone(); async move { d.run_replay(stopped).await } });
//! // each poll:   delivery.submit(body).await;       // returns once committed
//! // status:      sd_notify STATUS = delivery.status_line()
//! // on SIGTERM:  stop polling, await in-flight submits, stop.send(true), replay.await
//! ```
//!
//! Module map: [`poster`] makes one POST, [`exchange`] posts through the
//! encrypted exchange instead (`encryption: openpgp`, keys in [`openpgp`]),
//! [`replay`] decides when to try again and paces replay, [`cache`] is the
//! on-disk spool (its doc has the format and the recovery rules),
//! [`receiver`] is the test receiver.

pub mod cache;
pub mod config;
#[cfg(feature = "openpgp")]
pub mod exchange;
#[cfg(feature = "openpgp")]
pub mod openpgp;
pub mod poster;
pub mod receiver;
pub mod replay;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use self::cache::{Cache, CacheError, CachedFile, ReadError, ReplayLock};
use self::config::{ApiSettings, CacheSettings, DeliverySettings, Encryption};
#[cfg(feature = "openpgp")]
use self::exchange::Exchanger;
#[cfg(feature = "openpgp")]
use self::openpgp::Keyring;
use self::poster::{PostError, Poster, PosterError};
use self::replay::Breaker;
use crate::model::PostBody;

/// How often the replay loop lists the cache directory again, to pick up
/// files another program (a Python agent, `cache` commands) put there.
const RESCAN_INTERVAL: Duration = Duration::from_secs(60);

/// Why delivery could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Poster(#[from] PosterError),
    #[error(
        "encryption: openpgp needs the agent's key pair; open delivery with Delivery::encrypted"
    )]
    NoKeyring,
    #[error(
        "cannot make or read the OpenPGP key pair in {directory} for encryption: openpgp: {reason}"
    )]
    Keys { directory: PathBuf, reason: String },
}

/// Counters since start; the daemon keeps one set across reloads.
pub use crate::counters::DeliveryCounters as Stats;

/// The outcome of the most recent post, live or replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastPost {
    pub at_ms: u64,
    pub delivered: bool,
    /// `200 OK` or what went wrong.
    pub detail: String,
}

/// The outcome of the most recent attempt to open a session with the
/// server's encrypted exchange (`encryption: openpgp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastExchange {
    pub at_ms: u64,
    pub ok: bool,
    /// Whom the session is with, or what went wrong.
    pub detail: String,
}

/// A build without the `openpgp` feature has no encrypted exchange: the
/// configuration refuses `encryption: openpgp`, and no value of this type
/// can exist.
#[cfg(not(feature = "openpgp"))]
enum Exchanger {}

#[cfg(not(feature = "openpgp"))]
impl Exchanger {
    fn url(&self) -> String {
        match *self {}
    }

    async fn post(&self, _: &str, _: &[u8]) -> Result<(), PostError> {
        match *self {}
    }

    fn last_exchange(&self) -> Option<LastExchange> {
        match *self {}
    }
}

/// A copy of the counters plus what is waiting in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    pub posted: u64,
    pub cached: u64,
    pub replayed: u64,
    pub dropped: u64,
    pub quarantined: u64,
    pub lost: u64,
    pub cached_files: u64,
    pub cached_bytes: u64,
    /// The timestamp of the oldest cached body, if any.
    pub oldest_cached_ms: Option<u64>,
    pub server_down: bool,
    pub last_post: Option<LastPost>,
    /// With `encryption: openpgp`: the latest attempt to open a session.
    pub last_exchange: Option<LastExchange>,
}

/// How [`Delivery::submit`] committed a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    Posted,
    Cached(PathBuf),
    /// Not delivered and not cached; already logged and counted.
    Lost,
}

/// What one round of [`Delivery::replay_now`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayReport {
    pub delivered: u64,
    pub quarantined: u64,
    /// Files still cached afterwards.
    pub remaining: u64,
    /// Why replay stopped early, if it did.
    pub stopped_by: Option<String>,
}

/// How long an invalid cache file must stay unchanged to be called
/// corrupt rather than still being written.
const SETTLE: Duration = Duration::from_millis(200);

/// How soon a replayer that found the cache claimed by another looks again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// A cached body the server fails with a 5xx this many times, each time
/// right after taking another body, is set aside in quarantine: the server
/// is up, and this body is what it cannot take.
pub const MAX_BODY_FAILURES: u32 = 5;

/// How long a body that failed waits for the server to take another one
/// before it is tried again regardless.
const SUSPECT_PATIENCE: Duration = Duration::from_secs(60);

/// How soon replay looks again when every cached body failed just now and
/// waits for the server to take some other body first.
const DEFERRED_RETRY: Duration = Duration::from_secs(1);

/// What the server's answers say about the server as a whole and about
/// single cached bodies, so one body it cannot take neither stops delivery
/// nor keeps the breaker open.
#[derive(Default)]
struct Verdicts {
    /// 200s so far.
    successes: u64,
    /// The latest answer showed the server taking bodies (a 200, or a
    /// refusal of that body alone).
    last_ok: bool,
    /// Cached bodies that failed, by path.
    suspects: HashMap<PathBuf, Suspect>,
}

struct Suspect {
    /// 5xx answers since it was last tried with success elsewhere.
    failures: u32,
    /// 5xx answers that came right after the server took another body.
    strikes: u32,
    /// [`Verdicts::successes`] at its latest failure.
    successes_then: u64,
    failed_at: tokio::time::Instant,
}

impl Suspect {
    /// Whether other bodies go first: it failed with a 5xx twice, or once
    /// just after the server took another body, and the server has taken
    /// nothing since. Bounded by `patience` so that a lone body is tried
    /// again even when nothing else is sent.
    fn waits(&self, successes: u64, patience: Duration) -> bool {
        (self.failures >= 2 || self.strikes > 0)
            && self.successes_then >= successes
            && self.failed_at.elapsed() < patience
    }
}

/// A replayer's hold on the cache's replay lock.
#[derive(Default)]
struct Claim {
    lock: Option<ReplayLock>,
    /// The lock file cannot be made (a read-only or missing directory):
    /// replay without it rather than not at all, and do not try again
    /// until the next rescan.
    unlockable: bool,
    /// Another replayer holds the lock; said once.
    waiting: bool,
    /// The lock file could not be made; said once.
    warned: bool,
}

impl Claim {
    /// Whether this replayer may send cached bodies now, taking the lock
    /// if it does not hold it yet.
    fn may_replay(&mut self, cache: &Cache) -> bool {
        if self.lock.is_some() || self.unlockable {
            return true;
        }
        match cache.try_lock_replay() {
            Ok(Some(lock)) => {
                self.lock = Some(lock);
                self.waiting = false;
                true
            }
            Ok(None) => {
                if !self.waiting {
                    self.waiting = true;
                    tracing::info!(directory = %cache.root().display(), "another pattoo-agentd is replaying this cache; waiting for it to finish");
                }
                false
            }
            Err(error) => {
                self.unlockable = true;
                if std::mem::replace(&mut self.warned, true) {
                    return true;
                }
                tracing::warn!(directory = %cache.root().display(), %error, "cannot lock the cache for replay; replaying without the lock");
                true
            }
        }
    }
}

enum Checked {
    Valid,
    Invalid(String),
    Changing,
}

enum Step {
    Empty,
    Delivered,
    Skipped,
    NotNow,
    Failed(PostError),
    /// Every cached body failed just now; they wait until the server takes
    /// another body.
    Deferred,
}

struct Inner {
    poster: Poster,
    /// Set with `encryption: openpgp`: every body goes through it.
    exchanger: Option<Exchanger>,
    cache: Arc<Cache>,
    breaker: Breaker,
    settings: DeliverySettings,
    stats: Arc<Stats>,
    /// Woken when a body is cached, so an idle replay loop starts at once.
    cached: Notify,
    last_post: Mutex<Option<LastPost>>,
    verdicts: Mutex<Verdicts>,
}

/// Posts and caches bodies. Cheap to clone; every clone shares one cache,
/// one set of counters and one view of whether the server is up.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

impl Delivery {
    /// Builds delivery to the server `api` with the cache in
    /// `cache_directory`. Lists the cache by file name (sizes are read by a
    /// background thread) and does no network I/O.
    pub fn from_parts(
        api: &ApiSettings,
        cache_directory: &Path,
        delivery: &DeliverySettings,
        cache: &CacheSettings,
    ) -> Result<Delivery, DeliveryError> {
        Delivery::with_counters(api, cache_directory, delivery, cache, Arc::default())
    }

    /// [`Delivery::from_parts`] counting into `stats`, which outlive this
    /// delivery: the daemon passes the same counters to the delivery a
    /// reload builds.
    pub fn with_counters(
        api: &ApiSettings,
        cache_directory: &Path,
        delivery: &DeliverySettings,
        cache: &CacheSettings,
        stats: Arc<Stats>,
    ) -> Result<Delivery, DeliveryError> {
        if delivery.encryption != Encryption::None {
            return Err(DeliveryError::NoKeyring);
        }
        Delivery::build(api, cache_directory, delivery, cache, stats, None)
    }

    /// [`Delivery::with_counters`] posting every body, live and replayed,
    /// through pattoo's encrypted exchange with `keyring` (see
    /// [`exchange`]).
    #[cfg(feature = "openpgp")]
    pub fn encrypted(
        api: &ApiSettings,
        cache_directory: &Path,
        delivery: &DeliverySettings,
        cache: &CacheSettings,
        stats: Arc<Stats>,
        keyring: Arc<Keyring>,
    ) -> Result<Delivery, DeliveryError> {
        Delivery::build(api, cache_directory, delivery, cache, stats, Some(keyring))
    }

    fn build(
        api: &ApiSettings,
        cache_directory: &Path,
        delivery: &DeliverySettings,
        cache: &CacheSettings,
        stats: Arc<Stats>,
        #[cfg(feature = "openpgp")] keyring: Option<Arc<Keyring>>,
        #[cfg(not(feature = "openpgp"))] keyring: Option<std::convert::Infallible>,
    ) -> Result<Delivery, DeliveryError> {
        let poster = Poster::new(api, delivery)?;
        #[cfg(feature = "openpgp")]
        let exchanger = keyring.map(|keyring| Exchanger::new(poster.clone(), keyring));
        #[cfg(not(feature = "openpgp"))]
        let exchanger: Option<Exchanger> = keyring.map(|never| match never {});
        if delivery.tls_insecure_skip_verify {
            tracing::warn!(
                server = %poster.url(""),
                "tls_insecure_skip_verify is set: the pattoo server's certificate is not checked, so anyone on the path can read and change what is posted"
            );
        }
        let cache = Arc::new(Cache::open(cache_directory, cache, stats.clone()));
        let (files, _) = cache.totals();
        if files > 0 {
            tracing::info!(
                files,
                directory = %cache_directory.display(),
                "found undelivered bodies in the cache; they will be sent oldest first"
            );
            // Sizes are read apart from start-up so a large cache does not
            // delay the first poll.
            let measuring = cache.clone();
            let spawned = std::thread::Builder::new()
                .name("cache-measure".into())
                .spawn(move || measuring.measure());
            if spawned.is_err() {
                cache.measure();
            }
        }
        Ok(Delivery {
            inner: Arc::new(Inner {
                poster,
                exchanger,
                cache,
                breaker: Breaker::new(delivery),
                settings: delivery.clone(),
                stats,
                cached: Notify::new(),
                last_post: Mutex::new(None),
                verdicts: Mutex::new(Verdicts::default()),
            }),
        })
    }

    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// Where `agent_id`'s bodies are posted.
    fn server_url(&self, agent_id: &str) -> String {
        match &self.inner.exchanger {
            Some(exchanger) => exchanger.url(),
            None => self.inner.poster.url(agent_id),
        }
    }

    /// Delivers `body` or commits it to the cache; returns only then.
    pub async fn submit(&self, body: PostBody) -> Committed {
        self.submit_unless(body, std::future::pending()).await
    }

    /// [`Delivery::submit`], except that once `stop` completes no post is
    /// waited for: a post in flight is abandoned and the body cached, so a
    /// slow server cannot hold shutdown past systemd's stop timeout. An
    /// abandoned post the server did take is sent again from the cache: a
    /// duplicate, never a loss.
    pub async fn submit_unless(
        &self,
        mut body: PostBody,
        stop: impl std::future::Future<Output = ()>,
    ) -> Committed {
        let inner = &self.inner;
        if inner.breaker.try_acquire() {
            // Lent to the request rather than copied: a large body is the
            // biggest allocation the agent makes, and two copies of it at
            // once would set the peak memory.
            let json = bytes::Bytes::from(std::mem::take(&mut body.json));
            let posted = tokio::select! {
                biased;
                () = stop => None,
                posted = self.post(&body.agent_id, json.clone(), None) => Some(posted),
            };
            match posted {
                Some(Ok(())) => {
                    inner.stats.posted.fetch_add(1, Ordering::Relaxed);
                    return Committed::Posted;
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, timestamp_ms = body.timestamp_ms, "post failed; caching the body");
                }
                None => {
                    tracing::debug!(
                        timestamp_ms = body.timestamp_ms,
                        "shutting down; caching the body instead of waiting for the server"
                    );
                }
            }
            // Back without copying once the request has dropped its share.
            body.json = Vec::from(json);
        }
        self.store(body).await
    }

    /// Commits `body` to the cache without trying to post it: for bodies the
    /// delivery task has no room for, and for what is left at shutdown.
    pub async fn store(&self, body: PostBody) -> Committed {
        let inner = &self.inner;
        let cache = inner.cache.clone();
        let agent_id = body.agent_id.clone();
        let timestamp_ms = body.timestamp_ms;
        let stored = tokio::task::spawn_blocking(move || cache.store(&body))
            .await
            .unwrap_or_else(|join| {
                Err(CacheError::Write {
                    path: PathBuf::new(),
                    source: std::io::Error::other(join.to_string()),
                })
            });
        match stored {
            Ok(file) => {
                inner.stats.cached.fetch_add(1, Ordering::Relaxed);
                inner.cached.notify_one();
                tracing::debug!(file = %file.path.display(), "body cached");
                Committed::Cached(file.path)
            }
            Err(error @ CacheError::TooLarge { .. }) => {
                // Counted as dropped by the bound inside the cache.
                tracing::error!(%agent_id, timestamp_ms, %error, "body lost: too large to cache");
                Committed::Lost
            }
            Err(error) => {
                let lost = inner.stats.lost.fetch_add(1, Ordering::Relaxed) + 1;
                let hint = if error.is_no_space() {
                    "free space on the cache file system or make it writable; caching resumes by itself"
                } else {
                    "check the cache directory's permissions and file system"
                };
                if matches!(error, CacheError::NotDurable { .. }) {
                    // The file may still be sent, but a power loss could
                    // take it, so it is not counted as kept.
                    inner.cached.notify_one();
                }
                tracing::error!(%agent_id, timestamp_ms, lost_total = lost, %error, "body lost: the server did not take it and it could not be cached; {hint}");
                Committed::Lost
            }
        }
    }

    /// One POST, with the breaker, the verdicts on single bodies and the
    /// last-post record kept up to date. `cached` is the file a replayed
    /// body came from.
    ///
    /// The breaker opens only when the server looks down: a transport
    /// failure, or a 5xx that follows another failure. A 5xx right after a
    /// 200 counts against the body instead (see [`MAX_BODY_FAILURES`]).
    async fn post(
        &self,
        agent_id: &str,
        json: bytes::Bytes,
        cached: Option<&Path>,
    ) -> Result<(), PostError> {
        let inner = &self.inner;
        let result = match &inner.exchanger {
            Some(exchanger) => exchanger.post(agent_id, &json).await,
            None => inner.poster.post(agent_id, json).await,
        };
        let at_ms = crate::time::now_ms();
        let server_failing = {
            let mut verdicts = inner.verdicts.lock().unwrap_or_else(|p| p.into_inner());
            match &result {
                Ok(()) => {
                    verdicts.successes += 1;
                    verdicts.last_ok = true;
                    if let Some(path) = cached {
                        verdicts.suspects.remove(path);
                    }
                    false
                }
                Err(error) if error.refuses_body() => {
                    verdicts.last_ok = true;
                    false
                }
                Err(error) => {
                    // Only an answer can be about the body; a connection
                    // that failed or timed out says the server is away.
                    let body_alone = error.is_server_error() && verdicts.last_ok;
                    verdicts.last_ok = false;
                    let successes = verdicts.successes;
                    if let (Some(path), true) = (cached, error.is_server_error()) {
                        let suspect = verdicts.suspects.entry(path.to_owned()).or_insert(Suspect {
                            failures: 0,
                            strikes: 0,
                            successes_then: 0,
                            failed_at: tokio::time::Instant::now(),
                        });
                        suspect.failures += 1;
                        suspect.successes_then = successes;
                        suspect.failed_at = tokio::time::Instant::now();
                        if body_alone {
                            suspect.strikes += 1;
                        }
                    }
                    !body_alone
                }
            }
        };
        let last = match &result {
            Ok(()) => {
                if inner.breaker.record_success() {
                    tracing::info!(server = %self.server_url(agent_id), "the pattoo server answers again; sending cached bodies");
                }
                LastPost {
                    at_ms,
                    delivered: true,
                    detail: if inner.exchanger.is_some() {
                        "202 Decrypted and received".to_owned()
                    } else {
                        "200 OK".to_owned()
                    },
                }
            }
            Err(error) if error.refuses_body() || !server_failing => {
                inner.breaker.record_success();
                LastPost {
                    at_ms,
                    delivered: false,
                    detail: error.to_string(),
                }
            }
            Err(error) => {
                let backoff = inner.breaker.record_failure(error.retry_after());
                if backoff.newly_down && error.needs_operator() {
                    tracing::error!(%error, "the pattoo server refuses posts; check pattoo_agent_api (ip_address, ip_bind_port) and the server; bodies are cached meanwhile");
                } else if backoff.newly_down {
                    tracing::warn!(%error, "the pattoo server did not take a body; caching bodies until it does, trying again with backoff");
                }
                LastPost {
                    at_ms,
                    delivered: false,
                    detail: error.to_string(),
                }
            }
        };
        *inner.last_post.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
        result
    }

    /// Sends the oldest cached body, if the server may be tried now.
    async fn replay_one(&self) -> Step {
        let inner = &self.inner;
        let deferred: HashSet<PathBuf> = {
            let verdicts = inner.verdicts.lock().unwrap_or_else(|p| p.into_inner());
            verdicts
                .suspects
                .iter()
                .filter(|(_, suspect)| suspect.waits(verdicts.successes, SUSPECT_PATIENCE))
                .map(|(path, _)| path.clone())
                .collect()
        };
        let file = match inner.cache.take_oldest_except(&deferred) {
            Some(file) => file,
            None if inner.cache.is_empty() => return Step::Empty,
            // Only bodies that failed just now are left: while the server
            // looks down one of them is the probe; while it looks up they
            // wait for it to take some other body (or for a while).
            None if inner.breaker.is_down() => match inner.cache.take_oldest() {
                Some(file) => file,
                None => return Step::Empty,
            },
            None => return Step::Deferred,
        };
        if !inner.breaker.try_acquire() {
            inner.cache.release(&file);
            return Step::NotNow;
        }
        let cache = inner.cache.clone();
        let read_file = file.clone();
        let read = tokio::task::spawn_blocking(move || {
            let bytes = cache.read(&read_file)?;
            let checked = match crate::model::validate_body(&bytes) {
                Ok(_) => Checked::Valid,
                Err(rejection) => {
                    // The Python agents write cache files in place, so an
                    // invalid file may be one still being written: look
                    // again before calling it corrupt.
                    std::thread::sleep(SETTLE);
                    if cache.read(&read_file)? == bytes {
                        Checked::Invalid(rejection)
                    } else {
                        Checked::Changing
                    }
                }
            };
            Ok::<_, ReadError>((bytes, checked))
        })
        .await;
        let bytes = match read {
            Ok(Ok((bytes, Checked::Valid))) => bytes,
            Ok(Ok((_, Checked::Invalid(rejection)))) => {
                self.quarantine(file, format!("not a valid pattoo body: {rejection}"))
                    .await;
                return Step::Skipped;
            }
            Ok(Ok((_, Checked::Changing))) => {
                inner.cache.release(&file);
                return Step::Skipped;
            }
            Ok(Err(ReadError::Gone(_))) => return Step::Skipped,
            Ok(Err(error @ (ReadError::Unreadable { .. } | ReadError::TooLarge { .. }))) => {
                self.quarantine(file, error.to_string()).await;
                return Step::Skipped;
            }
            Err(join) => {
                inner.cache.release(&file);
                tracing::warn!(error = %join, "reading a cache file failed");
                return Step::Skipped;
            }
        };
        match self
            .post(&file.agent_id, bytes.into(), Some(&file.path))
            .await
        {
            Ok(()) => {
                let cache = inner.cache.clone();
                let _ = tokio::task::spawn_blocking(move || cache.remove(&file)).await;
                inner.stats.replayed.fetch_add(1, Ordering::Relaxed);
                Step::Delivered
            }
            Err(error) if error.refuses_body() => {
                let status = error.status().unwrap_or_default();
                self.quarantine(
                    file,
                    format!("the pattoo server refused it with HTTP {status}, which sending it again cannot change ({error})"),
                )
                .await;
                Step::Skipped
            }
            Err(error) => {
                let strikes = {
                    let mut verdicts = inner.verdicts.lock().unwrap_or_else(|p| p.into_inner());
                    let strikes = verdicts.suspects.get(&file.path).map_or(0, |s| s.strikes);
                    if strikes >= MAX_BODY_FAILURES {
                        verdicts.suspects.remove(&file.path);
                    }
                    strikes
                };
                if strikes >= MAX_BODY_FAILURES {
                    self.quarantine(
                        file,
                        format!("the pattoo server failed it {strikes} times while it took other bodies, last with: {error}"),
                    )
                    .await;
                    return Step::Skipped;
                }
                inner.cache.release(&file);
                if inner.breaker.is_down() {
                    Step::Failed(error)
                } else {
                    Step::Skipped
                }
            }
        }
    }

    async fn quarantine(&self, file: CachedFile, reason: String) {
        let cache = self.inner.cache.clone();
        let _ = tokio::task::spawn_blocking(move || cache.quarantine(&file, &reason)).await;
    }

    /// Sends cached bodies, oldest first and at most `replay_per_second`,
    /// until `shutdown` turns true. Runs alongside live posts; while the
    /// server is down it tries at most once per backoff period. While
    /// another replayer holds the cache's [`ReplayLock`](cache::ReplayLock)
    /// (`cache replay`, `once`, a loop not yet stopped) it waits its turn.
    pub async fn run_replay(&self, mut shutdown: watch::Receiver<bool>) {
        let inner = &self.inner;
        let mut pace = replay::Pacer::new(replay::replay_period(&inner.settings));
        let mut last_scan = tokio::time::Instant::now();
        let mut claim = Claim::default();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if last_scan.elapsed() >= RESCAN_INTERVAL {
                last_scan = tokio::time::Instant::now();
                claim.unlockable = false;
                let cache = inner.cache.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    cache.rescan();
                    cache.measure();
                    cache.enforce_bounds(0);
                })
                .await;
            }
            let wait = if !claim.may_replay(&inner.cache) {
                Some(CLAIM_RETRY)
            } else {
                match self.replay_one().await {
                    Step::Delivered | Step::Skipped => None,
                    Step::Empty => Some(RESCAN_INTERVAL.saturating_sub(last_scan.elapsed())),
                    Step::Deferred => Some(DEFERRED_RETRY),
                    Step::NotNow | Step::Failed(_) => Some(inner.breaker.wait()),
                }
            };
            tokio::select! {
                changed = shutdown.changed() => {
                    // A dropped sender can never say stop: stop now rather
                    // than spin on the closed channel.
                    if changed.is_err() {
                        return;
                    }
                }
                _ = async {
                    match wait {
                        None => pace.wait().await,
                        Some(wait) => {
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = inner.cached.notified() => {}
                            }
                        }
                    }
                } => {}
            }
        }
    }

    /// Sends what is cached now, oldest first and paced as the loop does,
    /// stopping when the cache is empty or the server fails. For `once` and
    /// `cache replay`.
    pub async fn replay_now(&self) -> ReplayReport {
        self.replay_now_with(|_| {}).await
    }

    /// [`Delivery::replay_now`], calling `progress` with the number of
    /// bodies delivered so far after each one.
    pub async fn replay_now_with(&self, mut progress: impl FnMut(u64)) -> ReplayReport {
        let inner = &self.inner;
        let mut pace = replay::Pacer::new(replay::replay_period(&inner.settings));
        let mut report = ReplayReport::default();
        let mut claim = Claim::default();
        if !claim.may_replay(&inner.cache) {
            report.stopped_by =
                Some("another pattoo-agentd (the service?) is replaying this cache".to_owned());
            report.remaining = inner.cache.totals().0;
            return report;
        }
        let quarantined_before = inner.stats.quarantined.load(Ordering::Relaxed);
        loop {
            match self.replay_one().await {
                Step::Delivered => {
                    report.delivered += 1;
                    progress(report.delivered);
                }
                Step::Skipped => {}
                Step::Empty => break,
                Step::NotNow => {
                    report.stopped_by = Some(format!(
                        "the pattoo server failed just before; next attempt in {:.1}s",
                        inner.breaker.wait().as_secs_f64()
                    ));
                    break;
                }
                Step::Failed(error) => {
                    report.stopped_by = Some(error.to_string());
                    break;
                }
                Step::Deferred => {
                    report.stopped_by = Some(
                        "the pattoo server failed each body still cached when last tried"
                            .to_owned(),
                    );
                    break;
                }
            }
            pace.wait().await;
        }
        report.quarantined = inner.stats.quarantined.load(Ordering::Relaxed) - quarantined_before;
        report.remaining = inner.cache.totals().0;
        report
    }

    pub fn stats(&self) -> StatsSnapshot {
        let inner = &self.inner;
        let (cached_files, cached_bytes) = inner.cache.totals();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            posted: load(&inner.stats.posted),
            cached: load(&inner.stats.cached),
            replayed: load(&inner.stats.replayed),
            dropped: load(&inner.stats.dropped),
            quarantined: load(&inner.stats.quarantined),
            lost: load(&inner.stats.lost),
            cached_files,
            cached_bytes,
            oldest_cached_ms: inner.cache.oldest_ms(),
            server_down: inner.breaker.is_down(),
            last_post: inner
                .last_post
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            last_exchange: inner.exchanger.as_ref().and_then(Exchanger::last_exchange),
        }
    }

    /// One line for systemd's `STATUS=`.
    pub fn status_line(&self) -> String {
        let s = self.stats();
        let mut line = format!(
            "server {}; posted {}, cached {}, replayed {}; {} file(s) ({} bytes) waiting",
            if s.server_down { "down" } else { "up" },
            s.posted,
            s.cached,
            s.replayed,
            s.cached_files,
            s.cached_bytes
        );
        if s.dropped + s.quarantined + s.lost > 0 {
            line.push_str(&format!(
                "; dropped {}, quarantined {}, lost {}",
                s.dropped, s.quarantined, s.lost
            ));
        }
        if let Some(last) = s.last_post.filter(|last| !last.delivered) {
            line.push_str(&format!("; last post: {}", last.detail));
        }
        line
    }
}
