//! When pollers run.
//!
//! Each poller gets its own task, so a slow poller never delays another.
//! Ticks are aligned to multiples of the polling interval on the wall clock
//! (a 300 s poller fires at :00, :05, ...) plus a fixed per-poller offset
//! (the jitter) that spreads many agents over the interval. Only the first
//! tick is placed by the wall clock; from then on ticks follow the monotonic
//! clock, so setting the system time neither stops nor floods polling.
//!
//! A poll that outlasts its interval is never run twice at once: the ticks
//! it covered are skipped, logged and counted, and the next tick is the
//! first one still in the future.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::counters::PollerCounters;

/// The tick sequence of one poller.
#[derive(Debug, Clone)]
pub struct Ticker {
    interval: Duration,
    next: Instant,
}

impl Ticker {
    /// Places the first tick at the next multiple of `interval` on the wall
    /// clock (`wall_now_ms`) plus `offset`, which must be shorter than the
    /// interval.
    pub fn aligned(interval: Duration, offset: Duration, now: Instant, wall_now_ms: u64) -> Self {
        let interval_ms = (interval.as_millis() as u64).max(1);
        let offset_ms = (offset.as_millis() as u64) % interval_ms;
        // The next wall-clock instant of the form k * interval + offset.
        let phase = (wall_now_ms + interval_ms - offset_ms) % interval_ms;
        let wait_ms = if phase == 0 { 0 } else { interval_ms - phase };
        Ticker {
            interval,
            next: now + Duration::from_millis(wait_ms),
        }
    }

    /// When the next tick is due.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn next(&self) -> Instant {
        self.next
    }

    /// Moves past the tick that just fired, given that the poll it started
    /// ended at `now`. Returns how many ticks were skipped because the poll
    /// overran them.
    pub fn advance(&mut self, now: Instant) -> u64 {
        self.next += self.interval;
        if self.next > now {
            return 0;
        }
        let behind = now - self.next;
        let skipped = (behind.as_nanos() / self.interval.as_nanos()) as u64 + 1;
        self.next += self.interval * skipped as u32;
        skipped
    }
}

/// A random offset in `[0, min(max_jitter, interval))`, fixed for the life
/// of a poller so its ticks stay evenly spaced.
pub fn jitter(max_jitter: Duration, interval: Duration) -> Duration {
    let bound = max_jitter.min(interval).as_millis() as u64;
    if bound == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(fastrand::u64(0..bound))
    }
}

/// What the scheduler runs at each tick: one poll, start to finish.
pub trait Job {
    fn run_once(&mut self) -> impl Future<Output = ()> + Send;
}

/// Runs `job` at every tick (the job counts its own polls in `stats`;
/// this counts skipped ticks and says when the next is due) until
/// `shutdown` turns true or its sender is dropped. A poll in flight
/// when shutdown comes is allowed to finish: the caller bounds that with its
/// own deadline.
pub async fn run(
    name: &str,
    mut ticker: Ticker,
    stats: Arc<PollerCounters>,
    clock_origin: Instant,
    mut shutdown: watch::Receiver<bool>,
    job: &mut impl Job,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let due_in = ticker.next().saturating_duration_since(Instant::now());
        stats.next_tick_ms.store(
            crate::time::now_ms() + due_in.as_millis() as u64,
            Ordering::Relaxed,
        );
        tokio::select! {
            _ = tokio::time::sleep_until(ticker.next()) => {}
            changed = shutdown.changed() => {
                // A dropped sender can never say stop: stop now rather
                // than spin on the closed channel.
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let started = Instant::now();
        let late = started.saturating_duration_since(ticker.next());
        stats.busy_since_ms.store(
            (started - clock_origin).as_millis() as u64 + 1,
            Ordering::Relaxed,
        );
        job.run_once().await;
        stats.busy_since_ms.store(0, Ordering::Relaxed);
        let took = started.elapsed();
        let skipped = ticker.advance(Instant::now());
        if skipped > 0 {
            stats.skipped_ticks.fetch_add(skipped, Ordering::Relaxed);
            tracing::warn!(
                poller = %name,
                skipped,
                took_ms = took.as_millis() as u64,
                late_ms = late.as_millis() as u64,
                "{}",
                Overrun::cause(late, took, ticker.interval())
            );
        }
    }
}

/// Why ticks were skipped, so that the log blames the right thing: a poll
/// that ran long, or a process that did not run at all for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overrun {
    /// The poll itself took longer than the interval.
    SlowPoll,
    /// The poll was quick but began long after its tick: the agent was
    /// stopped (SIGSTOP), the machine suspended, or the process starved of
    /// CPU.
    StartedLate,
}

impl Overrun {
    pub fn cause(late: Duration, took: Duration, interval: Duration) -> Overrun {
        if took < interval && late > took {
            Overrun::StartedLate
        } else {
            Overrun::SlowPoll
        }
    }
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overrun::SlowPoll => "poll outlasted its polling interval; skipped the ticks it covered",
            Overrun::StartedLate => "the agent did not run for longer than the polling interval (stopped, suspended or starved of CPU); skipped the ticks it missed",
        })
    }
}

#[cfg(test)]
mod tests;
