//! `pattoo-agentd run`: the long-lived service.
//!
//! Start-up order matters to systemd: configuration is validated, the
//! instance lock taken, the cache scanned and every poller scheduled before
//! `READY=1` is sent. From then on:
//!
//! - each poller runs in its own task ([`crate::scheduler`]) and hands its
//!   bodies to one bounded queue; when the queue is full the body is written
//!   to the cache instead of waiting in memory;
//! - one delivery task takes bodies off the queue and posts (or caches)
//!   them; another replays the cache;
//! - SIGHUP re-reads the configuration and swaps the pollers if it is
//!   valid, keeping the old ones (and logging every error) if it is not;
//!   what a reload reads, resolves and builds runs on a blocking thread
//!   (`Service::reload`), never on the workers running the polls;
//! - SIGTERM/SIGINT stop scheduling, let polls in flight finish for a
//!   bounded time, cache whatever was not delivered, and exit 0.
//!
//! The daemon also watches itself: it owns the counters the pollers and
//! delivery keep ([`crate::counters`]), kept across reloads, and reads them
//! ([`crate::telemetry`]) for the self-monitoring body (a job scheduled
//! like a poller), the optional [`metrics_page`] and the [`state`] file
//! that `pattoo-agentd status` reads.

pub mod lock;
pub mod logging;
pub mod notify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::collector::{self, Collector};
use crate::config::{self, Settings};
use crate::counters::{PollerCounters, ProcessCounters};
use crate::delivery::config::Encryption;
#[cfg(feature = "openpgp")]
use crate::delivery::openpgp::{self, Keyring};
use crate::delivery::{Committed, Delivery, DeliveryError, Stats};
use crate::identity::HostName;
use crate::model::PostBody;
use crate::pollers::PollerEnv;
use crate::scheduler::{self, Ticker};
use crate::telemetry::figures::{Figures, PollerEntry, Sources};
use crate::telemetry::{metrics_page, state, SelfMonitoring};
use crate::time::now_ms;

/// Bodies waiting for the delivery task. Small on purpose: a body that does
/// not fit goes to the cache, where it is safe, rather than into memory.
const QUEUE_BODIES: usize = 64;
/// How long polls in flight may run on after SIGTERM before they are
/// cancelled. Well inside the unit's `TimeoutStopSec=`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Most a poller's fixed tick offset can be.
const MAX_JITTER: Duration = Duration::from_secs(5);
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Delivery to the configured server and cache, counting into `stats`
/// (the daemon keeps one set across reloads; `Arc::default()` otherwise).
/// Lists the cache and does no network I/O. With `encryption: openpgp`
/// it reads the agent's key pair, making it the first time.
pub fn open_delivery(settings: &Settings, stats: Arc<Stats>) -> Result<Delivery, DeliveryError> {
    let (api, cache_directory) = (&settings.api, &settings.pattoo.cache_directory);
    let (delivery, cache) = (&settings.agent.delivery, &settings.agent.cache);
    match delivery.encryption {
        Encryption::None => Delivery::with_counters(api, cache_directory, delivery, cache, stats),
        #[cfg(feature = "openpgp")]
        Encryption::OpenPgp => {
            let keyring = open_keyring(settings)?;
            Delivery::encrypted(api, cache_directory, delivery, cache, stats, keyring)
        }
        // Refused by the configuration in a build without it.
        #[cfg(not(feature = "openpgp"))]
        Encryption::OpenPgp => Err(DeliveryError::NoKeyring),
    }
}

/// The agent's OpenPGP key pair, under the self-monitoring agent program's
/// name and with its agent id, the agent's own identity.
#[cfg(feature = "openpgp")]
fn open_keyring(settings: &Settings) -> Result<Arc<Keyring>, DeliveryError> {
    let daemon_directory = &settings.pattoo.daemon_directory;
    let program = &settings.agent.self_monitoring.agent_program;
    let directory = openpgp::key_directory(daemon_directory, program);
    let failed = |reason: String| DeliveryError::Keys {
        directory: directory.clone(),
        reason,
    };
    let agent_id = crate::identity::agent_id(daemon_directory, program)
        .map_err(|error| failed(error.to_string()))?;
    let keyring = Keyring::open_or_create(&directory, program, &agent_id)
        .map_err(|error| failed(error.to_string()))?;
    Ok(Arc::new(keyring))
}

/// Runs until SIGTERM or SIGINT, posting under `hostname` (looked up by
/// the caller with the configuration check; a reload looks it up again).
pub async fn run(
    settings: Settings,
    hostname: HostName,
    log_level: logging::LevelHandle,
) -> anyhow::Result<()> {
    crate::durable::create_private_dir(&settings.pattoo.daemon_directory).with_context(|| {
        format!(
            "cannot create the daemon directory {}",
            settings.pattoo.daemon_directory.display()
        )
    })?;
    let _lock = lock::InstanceLock::acquire(&settings.pattoo.daemon_directory)?;
    let origin = Instant::now();
    let health = Arc::new(Health::default());
    let delivery_counters = Arc::new(Stats::default());

    let delivery =
        open_delivery(&settings, delivery_counters.clone()).context("preparing delivery")?;
    let (delivery_tx, delivery_rx) = watch::channel(delivery);
    let monitor = Arc::new(Monitor {
        health: health.clone(),
        delivery: delivery_rx.clone(),
        process: ProcessCounters::default(),
        origin,
        started_ms: now_ms(),
        watchdog: notify::watchdog_interval(),
    });
    let metrics_listen = match settings.agent.metrics_listen {
        None => None,
        Some(addr) => Some(listen_for_metrics(addr).await?),
    };
    // Before READY too: a spoke's port already taken is a start-up error.
    let spokes = prepare_spokes(&settings, &hostname.name).await?;
    let (queue_tx, queue_rx) = mpsc::channel::<Handed>(QUEUE_BODIES);

    let mut background = JoinSet::new();
    let (stop_background, background_stop) = watch::channel(false);
    background.spawn(deliver_queue(
        queue_rx,
        delivery_rx.clone(),
        health.clone(),
        origin,
        background_stop.clone(),
    ));
    // Replay has its own stop: it is cancelled the moment shutdown
    // begins, not once the polls have finished.
    let (stop_replay, replay_stop) = watch::channel(false);
    background.spawn(replay(delivery_rx.clone(), replay_stop));
    let metrics_address = match metrics_listen {
        Some(listener) => {
            let address = listener.local_addr().ok();
            // Drawn anew at each start: what `status` checks the page by.
            let token = state::Token::create(&settings.pattoo.daemon_directory)
                .map_err(|error| {
                    tracing::warn!(directory = %settings.pattoo.daemon_directory.display(), %error, "cannot write the metrics page's token; `pattoo-agentd status` will not trust the page");
                })
                .ok();
            background.spawn(metrics_page::serve(
                listener,
                monitor.clone(),
                token,
                background_stop.clone(),
            ));
            address
        }
        None => None,
    };

    for (spoke, listener) in spokes {
        background.spawn(spoke.serve(listener, background_stop.clone()));
    }

    let mut counters = CounterRegistry::default();
    hostname.log();
    let pollers = Pollers::start(
        &settings,
        &hostname.name,
        &mut counters,
        &monitor,
        queue_tx.clone(),
        delivery_rx.clone(),
        origin,
    )?;
    health.track(&pollers, settings.agent.delivery.timeout);
    tracing::info!(
        pollers = pollers.stats.len(),
        "pattoo-agentd {} started with configuration from {}",
        env!("CARGO_PKG_VERSION"),
        settings.config_dir.display()
    );
    // Before READY: a SIGTERM that follows READY at once must be heard, not
    // kill the process with work in flight.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    notify::ready();

    let state_writer = state::Writer::new(&settings.pattoo.daemon_directory, metrics_address);
    if let Some(interval) = notify::watchdog_interval() {
        background.spawn(watchdog(
            interval,
            health.clone(),
            origin,
            background_stop.clone(),
        ));
    }

    let mut service = Service {
        settings,
        pollers,
        counters,
        retiring: JoinSet::new(),
        monitor: monitor.clone(),
        health,
        delivery_tx,
        delivery_counters,
        queue_tx,
        origin,
        log_level,
    };
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => service.reload().await,
            _ = status_tick.tick() => {
                notify::status(&status_line(&service.pollers, &delivery_rx.borrow()));
                let stats = monitor.delivery.borrow().stats();
                state_writer.write(
                    monitor.as_ref(),
                    stats.last_post,
                    stats.last_exchange,
                    &service.settings,
                );
            }
        }
    }

    tracing::info!("stopping: finishing polls in flight, then caching what was not delivered");
    notify::stopping();
    let _ = stop_replay.send(true);
    let Service {
        pollers,
        mut retiring,
        queue_tx,
        ..
    } = service;
    tokio::join!(pollers.stop(SHUTDOWN_GRACE), async {
        while retiring.join_next().await.is_some() {}
    });
    drop(queue_tx);
    let _ = stop_background.send(true);
    // The delivery task caches what is still queued before it ends; the
    // others stop at once.
    while background.join_next().await.is_some() {}
    state_writer.remove();
    tracing::info!("stopped; {}", delivery_rx.borrow().status_line());
    Ok(())
}

/// The running configuration and its pollers, and what a reload needs to
/// replace them.
struct Service {
    settings: Settings,
    pollers: Pollers,
    counters: CounterRegistry,
    /// Pollers a reload replaced, still finishing their polls in flight.
    retiring: JoinSet<()>,
    monitor: Arc<Monitor>,
    health: Arc<Health>,
    delivery_tx: watch::Sender<Delivery>,
    /// Kept across reloads, as the pollers' counters are.
    delivery_counters: Arc<Stats>,
    queue_tx: mpsc::Sender<Handed>,
    origin: Instant,
    log_level: logging::LevelHandle,
}

impl Service {
    /// SIGHUP: re-reads the configuration and swaps the pollers (and
    /// delivery, if its settings changed) if it is valid; keeps the running
    /// ones, logging every error, if it is not.
    async fn reload(&mut self) {
        notify::reloading();
        // Reading the files, the host-name lookup (a resolver can take
        // seconds), the cache scan and the agent ids' fsyncs all block:
        // they run on a blocking thread, so that the runtime's few workers
        // keep running the polls and the watchdog meanwhile.
        let running = self.settings.clone();
        let delivery_counters = self.delivery_counters.clone();
        let prepared =
            tokio::task::spawn_blocking(move || Prepared::load(&running, delivery_counters)).await;
        let monitor = &self.monitor;
        match prepared {
            Err(panicked) => {
                monitor
                    .process
                    .last_reload_refused
                    .store(true, Ordering::Relaxed);
                tracing::error!("reload refused, still running the previous configuration: reading it failed: {panicked}");
            }
            Ok(Prepared::Refused(errors)) => {
                monitor
                    .process
                    .last_reload_refused
                    .store(true, Ordering::Relaxed);
                for error in &errors.0 {
                    tracing::error!(
                        "reload refused, still running the previous configuration: {error}"
                    );
                }
                notify::status(&format!(
                    "reload refused: {} configuration error(s); running the previous configuration",
                    errors.0.len()
                ));
            }
            Ok(Prepared::Loaded {
                new,
                delivery,
                pollers,
            }) => {
                match delivery {
                    None => {}
                    Some(Ok(delivery)) => {
                        let _ = self.delivery_tx.send(delivery);
                    }
                    Some(Err(err)) => tracing::error!(
                        "reload: cannot prepare delivery with the new settings, keeping the old: {}",
                        crate::error_chain(&err)
                    ),
                }
                match pollers {
                    Ok(built) => {
                        let started = Pollers::spawn(
                            built,
                            &new,
                            &mut self.counters,
                            monitor,
                            self.queue_tx.clone(),
                            self.delivery_tx.subscribe(),
                            self.origin,
                        );
                        let old = std::mem::replace(&mut self.pollers, started);
                        // Not awaited here: a SIGTERM during the reload is
                        // then heard at once, and shutdown waits for these
                        // within the same grace.
                        self.retiring.spawn(old.stop(SHUTDOWN_GRACE));
                        self.health.track(&self.pollers, new.agent.delivery.timeout);
                        self.counters.keep_only(&self.pollers);
                        monitor.process.reloads.fetch_add(1, Ordering::Relaxed);
                        monitor
                            .process
                            .last_reload_refused
                            .store(false, Ordering::Relaxed);
                        self.log_level.set(new.pattoo.log_level);
                        self.settings = *new;
                        tracing::info!(
                            pollers = self.pollers.stats.len(),
                            "configuration reloaded"
                        );
                    }
                    Err(err) => {
                        monitor
                            .process
                            .last_reload_refused
                            .store(true, Ordering::Relaxed);
                        tracing::error!(
                            "reload refused, still running the previous pollers: {}",
                            crate::error_chain(err.as_ref())
                        );
                    }
                }
            }
        }
        notify::ready();
    }
}

/// What a reload reads and builds before anything running is replaced.
enum Prepared {
    Refused(config::ConfigErrors),
    Loaded {
        new: Box<Settings>,
        /// `None` where the delivery settings did not change.
        delivery: Option<Result<Delivery, DeliveryError>>,
        pollers: anyhow::Result<Built>,
    },
}

impl Prepared {
    /// Blocking: reads the configuration directory, looks the host name up,
    /// scans the cache if delivery changed and reads the agent id files.
    fn load(running: &Settings, delivery_counters: Arc<Stats>) -> Prepared {
        let mut new = match config::load(&running.config_dir) {
            Ok(new) => new,
            Err(errors) => return Prepared::Refused(errors),
        };
        warn_about_restart_only_changes(running, &new);
        keep_fixed_directories(running, &mut new);
        let delivery = (new.api != running.api
            || new.agent.delivery != running.agent.delivery
            || new.agent.cache != running.agent.cache)
            .then(|| open_delivery(&new, delivery_counters));
        // Once per reload: the resolver may be slow.
        let hostname = crate::identity::hostname(new.agent.hostname.as_deref());
        hostname.log();
        let pollers = Pollers::build(&new, &hostname.name);
        Prepared::Loaded {
            new: Box::new(new),
            delivery,
            pollers,
        }
    }
}

/// Binds the metrics page's address before start-up is reported, so a
/// port already taken is a start-up error, not a silent gap.
async fn listen_for_metrics(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics_listen {addr}: cannot listen there; choose a free address and port or remove metrics_listen"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    if !addr.ip().is_loopback() {
        tracing::warn!(address = %bound, "the metrics page listens beyond this host: anyone who can reach it can read the agent's figures");
    }
    tracing::info!(address = %bound, "metrics page at http://{bound}/metrics and /health");
    Ok(listener)
}

/// Builds every spoke server and binds its address; serving starts when
/// the caller spawns [`Spoke::serve`](crate::spoke::Spoke::serve).
async fn prepare_spokes(
    settings: &Settings,
    hostname: &str,
) -> anyhow::Result<Vec<(Arc<crate::spoke::Spoke>, tokio::net::TcpListener)>> {
    let env = PollerEnv {
        hostname: hostname.to_owned(),
    };
    let mut spokes = Vec::new();
    for spoke in &settings.spokes {
        let agent_id = crate::identity::agent_id(
            &settings.pattoo.daemon_directory,
            &spoke.poller.agent_program,
        )?;
        let server = crate::spoke::Spoke::new(spoke, agent_id, &env)
            .with_context(|| format!("spoke {}", spoke.poller.name))?;
        let listener = crate::spoke::listen(spoke).await?;
        if !spoke.listen.ip().is_loopback() && spoke.allow.is_empty() {
            tracing::info!(spoke = %spoke.poller.name, address = %spoke.listen, "the spoke answers any client that reaches it, as the Python spoke does; `allow` limits who may ask");
        }
        spokes.push((Arc::new(server), listener));
    }
    Ok(spokes)
}

/// Each poller's counters by name, kept across reloads so a poller that
/// stays configured keeps counting up.
#[derive(Default)]
struct CounterRegistry(std::collections::HashMap<String, Arc<PollerCounters>>);

impl CounterRegistry {
    fn get(&mut self, name: &str) -> Arc<PollerCounters> {
        self.0.entry(name.to_owned()).or_default().clone()
    }

    /// Forgets pollers no longer configured.
    fn keep_only(&mut self, pollers: &Pollers) {
        self.0
            .retain(|name, _| pollers.stats.iter().any(|p| &p.name == name));
    }
}

/// What the figures, the metrics page and the state file are read from.
pub struct Monitor {
    health: Arc<Health>,
    delivery: watch::Receiver<Delivery>,
    pub process: ProcessCounters,
    origin: Instant,
    /// Wall milliseconds at start.
    pub started_ms: u64,
    watchdog: Option<Duration>,
}

impl Monitor {
    pub fn figures(&self) -> Figures {
        let pollers = self.health.pollers.lock().expect("health lock").clone();
        let snapshot = self.delivery.borrow().stats();
        Figures::read(&Sources {
            pollers: &pollers,
            delivery: &snapshot,
            // Unknown, and so left out, until a post has had an answer
            // or failed: a server never tried is not known to be up.
            server_reachable: snapshot.last_post.as_ref().map(|_| !snapshot.server_down),
            process: &self.process,
            started_ms: self.started_ms,
            now_ms: now_ms(),
        })
    }
}

impl metrics_page::Source for Monitor {
    fn figures(&self) -> Figures {
        Monitor::figures(self)
    }

    fn health(&self) -> Result<(), String> {
        match self.health.stalled(
            millis_since(self.origin),
            self.watchdog.unwrap_or(Duration::ZERO),
        ) {
            None => Ok(()),
            Some(what) => Err(what),
        }
    }
}

/// A configuration's pollers, built but not yet scheduled.
struct Built {
    collectors: Vec<Collector>,
    self_monitoring: Option<SelfMonitoring>,
}

/// The running poller tasks of one configuration.
struct Pollers {
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    stats: Vec<PollerEntry>,
}

impl Pollers {
    /// Builds and starts the pollers of `settings`.
    fn start(
        settings: &Settings,
        hostname: &str,
        counters: &mut CounterRegistry,
        monitor: &Arc<Monitor>,
        queue: mpsc::Sender<Handed>,
        delivery: watch::Receiver<Delivery>,
        origin: Instant,
    ) -> anyhow::Result<Self> {
        let built = Self::build(settings, hostname)?;
        Ok(Self::spawn(
            built, settings, counters, monitor, queue, delivery, origin,
        ))
    }

    /// The collectors and self-monitoring of `settings`, not yet running.
    /// Blocking: reads, and may create and fsync, their agent id files.
    fn build(settings: &Settings, hostname: &str) -> anyhow::Result<Built> {
        let env = PollerEnv {
            hostname: hostname.to_owned(),
        };
        let collectors = collector::collectors(settings, &env, None)?;
        let self_monitoring = if settings.agent.self_monitoring.enabled {
            Some(SelfMonitoring::new(settings, &env.hostname)?)
        } else {
            None
        };
        Ok(Built {
            collectors,
            self_monitoring,
        })
    }

    /// Schedules what [`Pollers::build`] made.
    fn spawn(
        built: Built,
        settings: &Settings,
        counters: &mut CounterRegistry,
        monitor: &Arc<Monitor>,
        queue: mpsc::Sender<Handed>,
        delivery: watch::Receiver<Delivery>,
        origin: Instant,
    ) -> Self {
        let Built {
            mut collectors,
            self_monitoring,
        } = built;
        let self_job = self_monitoring.map(|who| SelfJob {
            monitor: monitor.clone(),
            who,
            queue: queue.clone(),
            delivery: delivery.clone(),
        });
        for collector in &mut collectors {
            collector.counters = counters.get(&collector.name);
        }
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut stats = Vec::new();
        for collector in collectors {
            let interval = settings
                .pollers
                .iter()
                .find(|p| p.name == collector.name)
                .map(|p| p.polling_interval)
                .expect("a collector is built from a configured poller");
            let poller_stats = collector.counters.clone();
            stats.push(PollerEntry {
                name: collector.name.clone(),
                kind: collector.kind,
                interval,
                counters: poller_stats.clone(),
            });
            let ticker = Ticker::aligned(
                interval,
                scheduler::jitter(MAX_JITTER, interval),
                Instant::now(),
                now_ms(),
            );
            tasks.spawn(poll_forever(
                collector,
                ticker,
                poller_stats,
                origin,
                stopped.clone(),
                queue.clone(),
                delivery.clone(),
            ));
        }
        if let Some(mut job) = self_job {
            // The first figures after one whole interval: at start they
            // would all be zero.
            let interval = job.who.interval;
            let ticker = Ticker::aligned(
                interval,
                scheduler::jitter(MAX_JITTER, interval),
                Instant::now() + interval,
                now_ms() + interval.as_millis() as u64,
            );
            let stopped = stopped.clone();
            tasks.spawn(async move {
                let counters = Arc::new(PollerCounters::default());
                scheduler::run(
                    "self_monitoring",
                    ticker,
                    counters,
                    origin,
                    stopped,
                    &mut job,
                )
                .await;
            });
        }
        Pollers { tasks, stop, stats }
    }

    /// Stops scheduling and waits up to `grace` for polls in flight; polls
    /// still running then are cancelled (they have read nothing that could
    /// be lost yet).
    async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                still_running = self.tasks.len(),
                "polls still running {grace:?} after shutdown began were cancelled"
            );
            self.tasks.shutdown().await;
        }
    }
}

/// One poller's work at each tick: poll, then hand the body to delivery.
struct PollJob {
    collector: Collector,
    queue: mpsc::Sender<Handed>,
    delivery: watch::Receiver<Delivery>,
}

impl scheduler::Job for PollJob {
    async fn run_once(&mut self) {
        // Each part goes to delivery as soon as it is written, so a large
        // poll's parts are posted while the rest is still read, not held
        // until the end; a part the queue has no room for is cached once
        // the poll is done.
        let counters = self.collector.counters.clone();
        let queue = &self.queue;
        let mut no_room = Vec::new();
        let mut give = |body: PostBody| {
            let handed = Handed {
                body,
                poller: Some(counters.clone()),
            };
            if let Err(
                mpsc::error::TrySendError::Full(handed) | mpsc::error::TrySendError::Closed(handed),
            ) = queue.try_send(handed)
            {
                no_room.push(handed);
            }
        };
        let _ = self.collector.collect_each(&mut give).await;
        if !no_room.is_empty() {
            let delivery = self.delivery.borrow().clone();
            for handed in no_room {
                handed.store(&delivery).await;
            }
        }
        // Once per poll, when its readings and the buffers that wrote its
        // parts are all freed; not once per part posted, which now happens
        // while the poll is still reading.
        crate::release_freed_memory();
    }
}

/// A body on its way to delivery, with the counters of the poller that
/// made it (none for self-monitoring), so each poller's figures say what
/// came of its bodies.
struct Handed {
    body: PostBody,
    poller: Option<Arc<PollerCounters>>,
}

impl Handed {
    /// Delivers or caches the body, counting the outcome for its poller.
    async fn commit(self, delivery: &Delivery, stop: impl std::future::Future<Output = ()>) {
        let Handed { body, poller } = self;
        count(poller.as_deref(), &delivery.submit_unless(body, stop).await);
    }

    /// Caches the body without posting it.
    async fn store(self, delivery: &Delivery) {
        let Handed { body, poller } = self;
        count(poller.as_deref(), &delivery.store(body).await);
    }
}

/// Counts what came of a body for the poller that made it.
fn count(poller: Option<&PollerCounters>, committed: &Committed) {
    let Some(poller) = poller else { return };
    let counter = match committed {
        Committed::Posted => &poller.bodies_delivered,
        Committed::Cached(_) => &poller.bodies_cached,
        Committed::Lost => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Gives a body to the delivery task, or to the cache when delivery is
/// behind: a body waits on disk, not in memory.
async fn hand_over(
    queue: &mpsc::Sender<Handed>,
    delivery: &watch::Receiver<Delivery>,
    handed: Handed,
) {
    if let Err(
        mpsc::error::TrySendError::Full(handed) | mpsc::error::TrySendError::Closed(handed),
    ) = queue.try_send(handed)
    {
        let delivery = delivery.borrow().clone();
        handed.store(&delivery).await;
    }
}

/// Self-monitoring: at each tick, the agent's own figures as one body,
/// through the same delivery (so cached and replayed) as any poller's.
struct SelfJob {
    monitor: Arc<Monitor>,
    who: SelfMonitoring,
    queue: mpsc::Sender<Handed>,
    delivery: watch::Receiver<Delivery>,
}

impl scheduler::Job for SelfJob {
    async fn run_once(&mut self) {
        if let Some(body) = self.who.body(&self.monitor.figures(), now_ms()) {
            let handed = Handed { body, poller: None };
            hand_over(&self.queue, &self.delivery, handed).await;
        }
    }
}

async fn poll_forever(
    collector: Collector,
    ticker: Ticker,
    stats: Arc<PollerCounters>,
    origin: Instant,
    shutdown: watch::Receiver<bool>,
    queue: mpsc::Sender<Handed>,
    delivery: watch::Receiver<Delivery>,
) {
    let name = collector.name.clone();
    let mut job = PollJob {
        collector,
        queue,
        delivery,
    };
    scheduler::run(&name, ticker, stats, origin, shutdown, &mut job).await;
}

/// Takes bodies off the queue and posts them. Once `stopping` turns true
/// (the pollers have stopped), nothing more waits on the server: the post
/// in flight is abandoned and it and every body still queued go to the
/// cache, so shutdown ends well inside systemd's stop timeout however
/// slowly the server answers. Returns when the queue is closed and empty.
async fn deliver_queue(
    mut queue: mpsc::Receiver<Handed>,
    delivery: watch::Receiver<Delivery>,
    health: Arc<Health>,
    origin: Instant,
    stopping: watch::Receiver<bool>,
) {
    loop {
        // Waiting for a body is not being stuck: the watchdog needs no
        // heartbeat from an idle loop, so nothing wakes it between polls.
        health.delivery_waiting.store(true, Ordering::Relaxed);
        let Some(handed) = queue.recv().await else {
            return;
        };
        health
            .delivery_alive
            .store(millis_since(origin), Ordering::Relaxed);
        health.delivery_waiting.store(false, Ordering::Release);
        let delivery = delivery.borrow().clone();
        let mut stopping = stopping.clone();
        // A dropped sender counts as stop too: no one is left to say it.
        let stop = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        handed.commit(&delivery, stop).await;
    }
}

/// Replays the cache with the current delivery settings until shutdown.
/// When a reload swaps delivery, the old loop is told to stop and awaited
/// before the new one starts: it finishes the body in hand, so one cache
/// never has two replayers, and a post the server took is never cut off
/// before its file is deleted (the new loop would send it again).
async fn replay(mut delivery: watch::Receiver<Delivery>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let current = delivery.borrow_and_update().clone();
        let (stop, stopped) = watch::channel(false);
        let run = current.run_replay(stopped);
        tokio::pin!(run);
        let reloaded = tokio::select! {
            () = &mut run => return,
            changed = delivery.changed() => changed.is_ok(),
            // A dropped sender counts as stop too.
            _ = shutdown.wait_for(|stop| *stop) => false,
        };
        let _ = stop.send(true);
        if !reloaded {
            // Shutting down: a replayed post in flight is abandoned, not
            // waited for (its file is still cached and is sent next time;
            // if the server did take it, that is a duplicate, never a loss).
            return;
        }
        // A reload waits for it instead, so the next replayer does not send
        // the same file while this post may still succeed.
        run.await;
    }
}

/// Liveness of the loops the watchdog vouches for.
#[derive(Debug, Default)]
struct Health {
    /// Monotonic milliseconds at which the delivery loop took its body in
    /// hand.
    delivery_alive: AtomicU64,
    /// The delivery loop waits for the next body, holding none.
    delivery_waiting: std::sync::atomic::AtomicBool,
    /// How long one delivery may legitimately take (a post that times out,
    /// then the cache write).
    delivery_grace_ms: AtomicU64,
    /// The running pollers: name, interval and what they are doing.
    pollers: std::sync::Mutex<Vec<PollerEntry>>,
}

/// A poll running this much longer than its interval is stuck, whatever
/// its kind: every poller bounds its own I/O with timeouts far shorter.
const POLL_STALL_MARGIN: Duration = Duration::from_secs(300);

impl Health {
    fn track(&self, pollers: &Pollers, delivery_timeout: Duration) {
        *self.pollers.lock().expect("health lock") = pollers.stats.clone();
        // Saturating: timeout_ms is any u64, and a wrapped grace would
        // have the watchdog kill the agent in the middle of a post.
        let timeout_ms = u64::try_from(delivery_timeout.as_millis()).unwrap_or(u64::MAX);
        self.delivery_grace_ms.store(
            timeout_ms.saturating_mul(2).saturating_add(5_000),
            Ordering::Relaxed,
        );
    }

    /// What is stuck, if anything.
    fn stalled(&self, now_ms: u64, watchdog: Duration) -> Option<String> {
        let grace = self
            .delivery_grace_ms
            .load(Ordering::Relaxed)
            .max(watchdog.as_millis() as u64);
        // Acquire, then the time: a loop seen holding a body is seen with
        // the time it took it.
        let waiting = self.delivery_waiting.load(Ordering::Acquire);
        let idle = now_ms.saturating_sub(self.delivery_alive.load(Ordering::Relaxed));
        if idle > grace && !waiting {
            return Some(format!(
                "the delivery loop has been on one body for {idle} ms"
            ));
        }
        let pollers = self.pollers.lock().expect("health lock");
        pollers.iter().find_map(|poller| {
            let since = poller.counters.busy_since_ms.load(Ordering::Relaxed);
            let busy = now_ms.saturating_sub(since);
            let limit = (2 * poller.interval + POLL_STALL_MARGIN).as_millis() as u64;
            (since != 0 && busy > limit)
                .then(|| format!("poller {} has been in one poll for {busy} ms", poller.name))
        })
    }
}

fn millis_since(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

/// Pings systemd's watchdog only while the delivery loop is not stuck on
/// one body and no poller is stuck in a poll; systemd restarts an agent
/// that stops pinging.
/// The unit sets `WatchdogSignal=SIGTERM`, so that restart goes through the
/// normal shutdown and the bodies queued in memory are cached; a
/// `SIGABRT` (systemd's default) or `SIGKILL` would lose them. If the
/// delivery loop itself is stuck (a cache write that never returns) they
/// cannot be cached either way.
async fn watchdog(
    interval: Duration,
    health: Arc<Health>,
    origin: Instant,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match health.stalled(millis_since(origin), interval) {
            None => notify::watchdog(),
            Some(what) => tracing::error!(
                "{what}; withholding the watchdog ping so systemd restarts the agent"
            ),
        }
    }
}

fn status_line(pollers: &Pollers, delivery: &Delivery) -> String {
    let polls: u64 = pollers
        .stats
        .iter()
        .map(|p| p.counters.polls.load(Ordering::Relaxed))
        .sum();
    let skipped: u64 = pollers
        .stats
        .iter()
        .map(|p| p.counters.skipped_ticks.load(Ordering::Relaxed))
        .sum();
    format!(
        "{} pollers, {polls} polls, {skipped} skipped ticks; {}",
        pollers.stats.len(),
        delivery.status_line()
    )
}

/// Puts back the directories the running agent uses into reloaded
/// settings, so that the new pollers (agent ids) and a new delivery (the
/// cache) keep using them, as [`warn_about_restart_only_changes`] says.
fn keep_fixed_directories(running: &Settings, new: &mut Settings) {
    new.pattoo.cache_directory = running.pattoo.cache_directory.clone();
    new.pattoo.daemon_directory = running.pattoo.daemon_directory.clone();
    new.pattoo.log_directory = running.pattoo.log_directory.clone();
    new.agent.metrics_listen = running.agent.metrics_listen;
}

/// Directories and logging outputs are fixed for the life of the process
/// (the lock and log files live there); say so instead of half-applying.
fn warn_about_restart_only_changes(old: &Settings, new: &Settings) {
    let fixed = [
        (
            "cache_directory",
            &old.pattoo.cache_directory,
            &new.pattoo.cache_directory,
        ),
        (
            "daemon_directory",
            &old.pattoo.daemon_directory,
            &new.pattoo.daemon_directory,
        ),
        (
            "log_directory",
            &old.pattoo.log_directory,
            &new.pattoo.log_directory,
        ),
    ];
    if old.spokes != new.spokes {
        tracing::warn!("spokes changed (in pattoo_agentd.yaml or a Python spoke's file); that takes effect at the next restart");
    }
    if old.agent.metrics_listen != new.agent.metrics_listen {
        tracing::warn!(
            "metrics_listen changed from {:?} to {:?}; that takes effect at the next restart",
            old.agent.metrics_listen,
            new.agent.metrics_listen
        );
    }
    for (key, before, after) in fixed {
        if before != after {
            tracing::warn!(
                "{key} changed from {} to {}; that takes effect at the next restart",
                before.display(),
                after.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::ApiSettings;
    use crate::delivery::config::{CacheSettings, DeliverySettings};

    const AGENT: &str = "66cf7a8e560f75e23d557023ce591120abd094925bde6d97f09561b69b6ed3c4";

    /// A pattoo server that counts each body once it has read it whole,
    /// then waits `delay` before answering 200.
    async fn slow_server(delay: Duration) -> (SocketAddr, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let (head_end, length) = loop {
                        let Ok(n @ 1..) = socket.read(&mut buffer).await else {
                            return;
                        };
                        request.extend_from_slice(&buffer[..n]);
                        let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    };
                    while request.len() < head_end + length {
                        let Ok(n @ 1..) = socket.read(&mut buffer).await else {
                            return;
                        };
                        request.extend_from_slice(&buffer[..n]);
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK",
                        )
                        .await;
                });
            }
        });
        (addr, received)
    }

    fn delivery_to(addr: SocketAddr, cache_dir: &std::path::Path) -> Delivery {
        let api = ApiSettings {
            ip_address: addr.ip().to_string(),
            ip_bind_port: addr.port(),
        };
        let settings = DeliverySettings {
            timeout: Duration::from_secs(20),
            ..DeliverySettings::default()
        };
        Delivery::from_parts(&api, cache_dir, &settings, &CacheSettings::default()).unwrap()
    }

    /// A start (the check `run` makes, then the pollers and the
    /// self-monitoring job) looks the host name up once: a resolver that
    /// times out costs one timeout, not three.
    #[tokio::test]
    async fn a_start_looks_the_host_name_up_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().display();
        std::fs::write(
            dir.path().join("pattoo.yaml"),
            format!(
                "pattoo:\n  log_directory: {state}\n  cache_directory: {state}/cache\n  daemon_directory: {state}\npattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: 9\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("pattoo_agentd.yaml"),
            "pattoo_agentd:\n  self_monitoring: {enabled: true}\n  pollers:\n    - {name: a, type: command, command: [/bin/true], format: keyvalue, polling_interval: 3600}\n    - {name: b, type: command, command: [/bin/true], format: keyvalue, polling_interval: 3600}\n",
        )
        .unwrap();
        let lookups = || crate::identity::LOOKUPS.with(|count| count.get());
        let before = lookups();

        let settings = crate::config::load(dir.path()).unwrap();
        let hostname = crate::identity::hostname(settings.agent.hostname.as_deref());
        assert_eq!(lookups() - before, 1, "the start looks the name up");
        let delivery = delivery_to("127.0.0.1:9".parse().unwrap(), &dir.path().join("cache"));
        let (monitor, _delivery_tx, delivery_rx) = monitor_of(delivery);
        let (queue, _queued) = mpsc::channel(QUEUE_BODIES);
        let pollers = Pollers::start(
            &settings,
            &hostname.name,
            &mut CounterRegistry::default(),
            &monitor,
            queue,
            delivery_rx,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(pollers.stats.len(), 2);
        pollers.stop(Duration::from_secs(5)).await;
        assert_eq!(
            lookups() - before,
            1,
            "the pollers and self-monitoring use the name the check found"
        );
    }

    /// A monitor of `delivery`, and the channel it reads it from.
    fn monitor_of(
        delivery: Delivery,
    ) -> (
        Arc<Monitor>,
        watch::Sender<Delivery>,
        watch::Receiver<Delivery>,
    ) {
        let (delivery_tx, delivery_rx) = watch::channel(delivery);
        let monitor = Arc::new(Monitor {
            health: Arc::default(),
            delivery: delivery_rx.clone(),
            process: ProcessCounters::default(),
            origin: Instant::now(),
            started_ms: now_ms(),
            watchdog: None,
        });
        (monitor, delivery_tx, delivery_rx)
    }

    fn server_reachable(monitor: &Monitor) -> Option<f64> {
        let figures = monitor.figures();
        let agent = figures
            .groups
            .iter()
            .find(|group| group.poller.is_none())
            .expect("the agent's own figures");
        agent.get("server_reachable").map(|n| n.as_f64())
    }

    #[tokio::test]
    async fn server_reachable_is_unknown_until_a_post_has_a_result() {
        let cache = tempfile::tempdir().unwrap();
        let (addr, received) = slow_server(Duration::ZERO).await;
        let delivery = delivery_to(addr, cache.path());
        let (monitor, _, _) = monitor_of(delivery.clone());
        assert_eq!(server_reachable(&monitor), None, "no post yet");
        delivery.submit(body(now_ms())).await;
        assert_eq!(received.load(Ordering::SeqCst), 1);
        assert_eq!(server_reachable(&monitor), Some(1.0));

        // Nothing listens on a port just given back.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let cache = tempfile::tempdir().unwrap();
        let delivery = delivery_to(closed_addr, cache.path());
        let (monitor, _, _) = monitor_of(delivery.clone());
        assert_eq!(server_reachable(&monitor), None, "no post yet");
        delivery.submit(body(now_ms())).await;
        assert_eq!(server_reachable(&monitor), Some(0.0));
    }

    /// A body the replay loop takes for valid.
    fn body(timestamp_ms: u64) -> PostBody {
        use crate::model::{self, AgentContext, DataPoint, DataType, TargetData, Value};
        let mut target = TargetData::new("device-1");
        target.datapoints.push(DataPoint::new(
            "reading",
            Value::Int(1),
            DataType::Int,
            timestamp_ms,
        ));
        let agent = AgentContext {
            agent_id: AGENT,
            agent_program: "pattoo_agentd_test",
            hostname: "test-host",
            polling_interval_ms: 10_000,
        };
        model::build(&agent, timestamp_ms, &[target]).body.unwrap()
    }

    async fn wait_for_count(counter: &AtomicU64, wanted: u64) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while counter.load(Ordering::SeqCst) < wanted {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the server receives the body");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_during_a_replayed_post_does_not_send_the_body_twice() {
        let (addr, received) = slow_server(Duration::from_millis(500)).await;
        let cache_dir = tempfile::tempdir().unwrap();
        let old = delivery_to(addr, cache_dir.path());
        old.cache().store(&body(now_ms())).unwrap();
        let (swap, current) = watch::channel(old);
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(replay(current, stopping));
        wait_for_count(&received, 1).await;

        // SIGHUP with new delivery settings, the same cache directory.
        let new = delivery_to(addr, cache_dir.path());
        swap.send(new.clone()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while std::fs::read_dir(cache_dir.path().join(AGENT))
                .unwrap()
                .count()
                > 0
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the replayed file is deleted after its 200");
        // Time enough for a second replayer to send it again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(received.load(Ordering::SeqCst), 1);

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("replay stops at shutdown")
            .unwrap();
    }

    /// A delivery queue running on its own task, as the daemon runs it.
    struct Queue {
        sender: mpsc::Sender<Handed>,
        delivery: Delivery,
        /// Keeps the current delivery settings from closing.
        _current: watch::Sender<Delivery>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    /// [`deliver_queue`] to the server at `addr`, caching in `cache_dir`.
    fn start_queue(addr: SocketAddr, cache_dir: &std::path::Path) -> Queue {
        let delivery = delivery_to(addr, cache_dir);
        let (current_tx, current) = watch::channel(delivery.clone());
        let (queue_tx, queue_rx) = mpsc::channel(QUEUE_BODIES);
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(deliver_queue(
            queue_rx,
            current,
            Arc::new(Health::default()),
            Instant::now(),
            stopping,
        ));
        Queue {
            sender: queue_tx,
            delivery,
            _current: current_tx,
            stop,
            task,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_shutdown_the_post_in_flight_and_the_queued_bodies_are_cached_without_waiting_for_a_slow_server(
    ) {
        let (addr, received) = slow_server(Duration::from_secs(60)).await;
        let cache_dir = tempfile::tempdir().unwrap();
        let queue = start_queue(addr, cache_dir.path());
        let now = now_ms();
        // Each poller is told what came of its bodies.
        let meter = Arc::new(PollerCounters::default());
        for i in 0..10 {
            let handed = Handed {
                body: body(now + i),
                poller: (i % 2 == 0).then(|| meter.clone()),
            };
            queue.sender.try_send(handed).unwrap();
        }
        // The first body is in the server's hands, its answer far away.
        wait_for_count(&received, 1).await;
        drop(queue.sender);
        queue.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), queue.task)
            .await
            .expect("shutdown does not wait for the server's answer")
            .unwrap();
        assert_eq!(queue.delivery.cache().totals().0, 10);
        assert_eq!(queue.delivery.stats().lost, 0);
        assert_eq!(received.load(Ordering::SeqCst), 1);
        assert_eq!(meter.bodies_cached.load(Ordering::Relaxed), 5);
        assert_eq!(meter.bodies_delivered.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn each_poller_counts_its_bodies_the_server_took() {
        let (addr, received) = slow_server(Duration::ZERO).await;
        let cache_dir = tempfile::tempdir().unwrap();
        let queue = start_queue(addr, cache_dir.path());
        let (meter, other) = (Arc::default(), Arc::<PollerCounters>::default());
        let now = now_ms();
        for (i, poller) in [&meter, &other, &meter].into_iter().enumerate() {
            let handed = Handed {
                body: body(now + i as u64),
                poller: Some(poller.clone()),
            };
            queue.sender.try_send(handed).unwrap();
        }
        drop(queue.sender);
        tokio::time::timeout(Duration::from_secs(60), queue.task)
            .await
            .expect("the queue is delivered")
            .unwrap();
        assert_eq!(received.load(Ordering::SeqCst), 3);
        let meter: Arc<PollerCounters> = meter;
        assert_eq!(meter.bodies_delivered.load(Ordering::Relaxed), 2);
        assert_eq!(other.bodies_delivered.load(Ordering::Relaxed), 1);
        assert_eq!(meter.bodies_cached.load(Ordering::Relaxed), 0);
    }

    fn health_with_poller(interval: Duration) -> (Health, Arc<PollerCounters>) {
        let stats = Arc::new(PollerCounters::default());
        let health = Health::default();
        *health.pollers.lock().unwrap() = vec![PollerEntry {
            name: "meter".into(),
            kind: "command",
            interval,
            counters: stats.clone(),
        }];
        health.delivery_grace_ms.store(25_000, Ordering::Relaxed);
        (health, stats)
    }

    #[test]
    fn a_huge_delivery_timeout_gives_the_delivery_loop_a_huge_grace() {
        let health = Health::default();
        let pollers = Pollers {
            tasks: JoinSet::new(),
            stop: watch::channel(false).0,
            stats: Vec::new(),
        };
        health.track(&pollers, Duration::from_millis(u64::MAX));
        health.delivery_alive.store(1_000, Ordering::Relaxed);
        // A post that has run for a day is within its timeout.
        assert_eq!(
            health.stalled(1_000 + 86_400_000, Duration::from_secs(30)),
            None
        );
    }

    #[test]
    fn an_idle_agent_with_a_turning_delivery_loop_is_healthy() {
        let (health, _) = health_with_poller(Duration::from_secs(60));
        health.delivery_alive.store(1_000_000, Ordering::Relaxed);
        assert_eq!(health.stalled(1_010_000, Duration::from_secs(30)), None);
    }

    #[test]
    fn a_delivery_loop_that_stops_turning_is_stalled() {
        let (health, _) = health_with_poller(Duration::from_secs(60));
        health.delivery_alive.store(1_000_000, Ordering::Relaxed);
        // Within the grace of a timed-out post plus a cache write: fine.
        assert_eq!(health.stalled(1_025_000, Duration::from_secs(30)), None);
        let stalled = health.stalled(1_031_000, Duration::from_secs(30)).unwrap();
        assert!(stalled.contains("delivery loop"), "{stalled}");
    }

    #[test]
    fn a_delivery_loop_waiting_for_a_body_is_healthy_however_long_it_waits() {
        let (health, _) = health_with_poller(Duration::from_secs(60));
        health.delivery_alive.store(1_000_000, Ordering::Relaxed);
        health.delivery_waiting.store(true, Ordering::Relaxed);
        assert_eq!(
            health.stalled(1_000_000 + 86_400_000, Duration::from_secs(30)),
            None
        );
        health.delivery_waiting.store(false, Ordering::Relaxed);
        assert!(health
            .stalled(1_000_000 + 86_400_000, Duration::from_secs(30))
            .is_some());
    }

    #[test]
    fn a_poll_far_past_its_interval_is_stalled_but_an_overrun_is_not() {
        let (health, stats) = health_with_poller(Duration::from_secs(60));
        stats.busy_since_ms.store(1_000_000, Ordering::Relaxed);
        // Three intervals in: an overrun, logged by the scheduler, not stuck.
        health
            .delivery_alive
            .store(1_000_000 + 179_000, Ordering::Relaxed);
        assert_eq!(
            health.stalled(1_000_000 + 180_000, Duration::from_secs(30)),
            None
        );
        health
            .delivery_alive
            .store(1_000_000 + 420_000, Ordering::Relaxed);
        let stalled = health
            .stalled(1_000_000 + 421_000, Duration::from_secs(30))
            .unwrap();
        assert!(stalled.contains("poller meter"), "{stalled}");
    }
}
