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
//! - SIGTERM/SIGINT stop scheduling, let polls in flight finish for a
//!   bounded time, cache whatever was not delivered, and exit 0.

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
use crate::delivery::Delivery;
use crate::model::PostBody;
use crate::scheduler::{self, PollerStats, Ticker};
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

/// Runs until SIGTERM or SIGINT.
pub async fn run(settings: Settings, log_level: logging::LevelHandle) -> anyhow::Result<()> {
    crate::identity::create_private_dir(&settings.pattoo.daemon_directory).with_context(|| {
        format!(
            "cannot create the daemon directory {}",
            settings.pattoo.daemon_directory.display()
        )
    })?;
    let _lock = lock::InstanceLock::acquire(&settings.pattoo.daemon_directory)?;
    let origin = Instant::now();
    let health = Arc::new(Health::default());

    let delivery = Delivery::new(&settings).context("preparing delivery")?;
    let (delivery_tx, delivery_rx) = watch::channel(delivery);
    let (queue_tx, queue_rx) = mpsc::channel::<PostBody>(QUEUE_BODIES);

    let mut background = JoinSet::new();
    let (stop_background, background_stop) = watch::channel(false);
    background.spawn(deliver_queue(
        queue_rx,
        delivery_rx.clone(),
        health.clone(),
        origin,
    ));
    background.spawn(replay(delivery_rx.clone(), background_stop.clone()));

    let mut pollers = Pollers::start(&settings, queue_tx.clone(), delivery_rx.clone(), origin)?;
    let mut settings = settings;
    tracing::info!(
        pollers = pollers.stats.len(),
        "pattoo-agentd {} started with configuration from {}",
        env!("CARGO_PKG_VERSION"),
        settings.config_dir.display()
    );
    notify::ready();

    if let Some(interval) = notify::watchdog_interval() {
        background.spawn(watchdog(
            interval,
            health.clone(),
            origin,
            background_stop.clone(),
        ));
    }

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                notify::reloading();
                match config::load(&settings.config_dir) {
                    Err(errors) => {
                        for error in &errors.0 {
                            tracing::error!("reload refused, still running the previous configuration: {error}");
                        }
                        notify::status(&format!(
                            "reload refused: {} configuration error(s); running the previous configuration",
                            errors.0.len()
                        ));
                    }
                    Ok(new) => {
                        warn_about_restart_only_changes(&settings, &new);
                        if new.api != settings.api || new.agent.delivery != settings.agent.delivery
                            || new.agent.cache != settings.agent.cache
                        {
                            match Delivery::new(&new) {
                                Ok(delivery) => {
                                    let _ = delivery_tx.send(delivery);
                                }
                                Err(err) => tracing::error!(
                                    "reload: cannot prepare delivery with the new settings, keeping the old: {err:#}"
                                ),
                            }
                        }
                        match Pollers::start(&new, queue_tx.clone(), delivery_rx.clone(), origin) {
                            Ok(started) => {
                                let old = std::mem::replace(&mut pollers, started);
                                old.stop(SHUTDOWN_GRACE).await;
                                log_level.set(new.pattoo.log_level);
                                settings = new;
                                tracing::info!(pollers = pollers.stats.len(), "configuration reloaded");
                            }
                            Err(err) => tracing::error!("reload refused, still running the previous pollers: {err:#}"),
                        }
                    }
                }
                notify::ready();
            }
            _ = status_tick.tick() => {
                notify::status(&status_line(&pollers, &delivery_rx.borrow()));
            }
        }
    }

    tracing::info!("stopping: finishing polls in flight, then caching what was not delivered");
    notify::stopping();
    pollers.stop(SHUTDOWN_GRACE).await;
    drop(queue_tx);
    let _ = stop_background.send(true);
    // The delivery task drains the queue before it ends; the others stop at
    // once.
    while background.join_next().await.is_some() {}
    tracing::info!("stopped; {}", delivery_rx.borrow().status_line());
    Ok(())
}

/// The running poller tasks of one configuration.
struct Pollers {
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    stats: Vec<(String, Duration, Arc<PollerStats>)>,
}

impl Pollers {
    fn start(
        settings: &Settings,
        queue: mpsc::Sender<PostBody>,
        delivery: watch::Receiver<Delivery>,
        origin: Instant,
    ) -> anyhow::Result<Self> {
        let collectors = collector::collectors(settings, None)?;
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
            let poller_stats = Arc::new(PollerStats::default());
            stats.push((collector.name.clone(), interval, poller_stats.clone()));
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
        Ok(Pollers { tasks, stop, stats })
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
    queue: mpsc::Sender<PostBody>,
    delivery: watch::Receiver<Delivery>,
}

impl scheduler::Job for PollJob {
    async fn run_once(&mut self) {
        let Some(body) = self.collector.collect().await else {
            return;
        };
        if let Err(
            mpsc::error::TrySendError::Full(body) | mpsc::error::TrySendError::Closed(body),
        ) = self.queue.try_send(body)
        {
            // Delivery is behind: keep the body on disk, not in memory.
            let delivery = self.delivery.borrow().clone();
            delivery.store(body).await;
        }
    }
}

async fn poll_forever(
    collector: Collector,
    ticker: Ticker,
    stats: Arc<PollerStats>,
    origin: Instant,
    shutdown: watch::Receiver<bool>,
    queue: mpsc::Sender<PostBody>,
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

/// Takes bodies off the queue and posts them; caches whatever is left when
/// the pollers have stopped and the queue closes.
async fn deliver_queue(
    mut queue: mpsc::Receiver<PostBody>,
    delivery: watch::Receiver<Delivery>,
    health: Arc<Health>,
    origin: Instant,
) {
    let mut idle = tokio::time::interval(Duration::from_secs(1));
    loop {
        health
            .delivery_alive
            .store(millis_since(origin), Ordering::Relaxed);
        tokio::select! {
            body = queue.recv() => {
                let Some(body) = body else { return };
                let delivery = delivery.borrow().clone();
                delivery.submit(body).await;
                crate::release_freed_memory();
            }
            _ = idle.tick() => {}
        }
    }
}

async fn replay(delivery: watch::Receiver<Delivery>, shutdown: watch::Receiver<bool>) {
    let mut delivery = delivery;
    loop {
        let current = delivery.borrow_and_update().clone();
        tokio::select! {
            _ = current.run_replay(shutdown.clone()) => return,
            // Delivery settings were reloaded: replay with the new ones.
            changed = delivery.changed() => if changed.is_err() { return },
        }
    }
}

/// Liveness of the loops the watchdog vouches for.
#[derive(Debug, Default)]
struct Health {
    /// Monotonic milliseconds of the delivery loop's last turn.
    delivery_alive: AtomicU64,
}

fn millis_since(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

/// Pings systemd's watchdog only while the delivery loop turns; a stuck
/// loop makes systemd restart the service.
async fn watchdog(
    interval: Duration,
    health: Arc<Health>,
    origin: Instant,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval / 2);
    let stale_after = interval.as_millis() as u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let age =
            millis_since(origin).saturating_sub(health.delivery_alive.load(Ordering::Relaxed));
        if age < stale_after {
            notify::watchdog();
        } else {
            tracing::error!(
                stalled_ms = age,
                "delivery loop has stalled; withholding the watchdog ping so systemd restarts the agent"
            );
        }
    }
}

fn status_line(pollers: &Pollers, delivery: &Delivery) -> String {
    let polls: u64 = pollers
        .stats
        .iter()
        .map(|(_, _, s)| s.polls.load(Ordering::Relaxed))
        .sum();
    let skipped: u64 = pollers
        .stats
        .iter()
        .map(|(_, _, s)| s.skipped_ticks.load(Ordering::Relaxed))
        .sum();
    format!(
        "{} pollers, {polls} polls, {skipped} skipped ticks; {}",
        pollers.stats.len(),
        delivery.status_line()
    )
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
