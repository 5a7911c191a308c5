//! The agent's own counters, for self-monitoring, the metrics page, the
//! state file and systemd's `STATUS=` line.
//!
//! A leaf module: the scheduler, the collectors and delivery update these
//! (plain atomics, one relaxed add per event, so keeping them costs next to
//! nothing on the hot path) and never learn who reads them. The daemon
//! owns one set for the life of the process and reads them
//! ([`crate::telemetry::figures`]); a reload hands the same counters to the new
//! pollers and the new delivery, so a `counter64` never goes backwards while
//! the process lives.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What one poller has done.
///
/// Times marked *wall* are milliseconds since the epoch (for people and
/// other processes to read); 0 means never.
#[derive(Debug, Default)]
pub struct PollerCounters {
    /// Polls run to the end, whatever came of them.
    pub polls: AtomicU64,
    /// Polls that produced no body: the poll failed as a whole, or nothing
    /// it read was valid.
    pub failed: AtomicU64,
    /// Ticks skipped because the poll before them was still running.
    pub skipped_ticks: AtomicU64,
    /// How long the last poll took, from start to a built body.
    pub last_duration_ms: AtomicU64,
    /// Datapoints in the bodies handed to delivery (posted at once, or
    /// cached and posted later).
    pub datapoints_posted: AtomicU64,
    /// Datapoints read but left out of the body (each one logged).
    pub datapoints_dropped: AtomicU64,
    /// Bodies of this poller's the server took when first posted.
    pub bodies_delivered: AtomicU64,
    /// Bodies of this poller's committed to the cache instead (the post
    /// failed, or delivery was behind), to be replayed.
    pub bodies_cached: AtomicU64,
    /// Wall: when the last poll ended.
    pub last_poll_ms: AtomicU64,
    /// Wall: when the last poll that produced a body ended.
    pub last_success_ms: AtomicU64,
    /// Wall: when the next tick is due.
    pub next_tick_ms: AtomicU64,
    /// Monotonic milliseconds (since the daemon started) at which the
    /// running poll began; 0 while idle. For the watchdog.
    pub busy_since_ms: AtomicU64,
}

impl PollerCounters {
    /// Records a finished poll: `datapoints` went into its body, `dropped`
    /// were left out; no body at all counts as a failure.
    pub fn record_poll(&self, ended_ms: u64, took_ms: u64, body: Option<usize>, dropped: usize) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.last_duration_ms.store(took_ms, Ordering::Relaxed);
        self.last_poll_ms.store(ended_ms, Ordering::Relaxed);
        self.datapoints_dropped
            .fetch_add(dropped as u64, Ordering::Relaxed);
        match body {
            Some(datapoints) => {
                self.datapoints_posted
                    .fetch_add(datapoints as u64, Ordering::Relaxed);
                self.last_success_ms.store(ended_ms, Ordering::Relaxed);
            }
            None => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What delivery has done with bodies since the agent started.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    /// Live bodies the server answered 200 for.
    pub posted: AtomicU64,
    /// Live bodies committed to the cache instead.
    pub cached: AtomicU64,
    /// Cached bodies the server answered 200 for, then deleted.
    pub replayed: AtomicU64,
    /// Cached bodies deleted undelivered because of max_bytes or max_age.
    pub dropped: AtomicU64,
    /// Cache files moved aside because they are not valid bodies.
    pub quarantined: AtomicU64,
    /// Bodies neither delivered nor cached (the cache could not be written).
    pub lost: AtomicU64,
}

/// The daemon's own events.
#[derive(Debug, Default)]
pub struct ProcessCounters {
    /// Reloads that swapped in a new configuration.
    pub reloads: AtomicU64,
    /// Whether the last reload was refused (the previous configuration
    /// still runs).
    pub last_reload_refused: AtomicBool,
}

/// Reads a counter; relaxed is enough, every figure is read on its own.
pub fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_without_a_body_counts_as_failed_and_keeps_the_last_success() {
        let counters = PollerCounters::default();
        counters.record_poll(1_000, 12, Some(7), 2);
        counters.record_poll(2_000, 30, None, 0);
        assert_eq!(load(&counters.polls), 2);
        assert_eq!(load(&counters.failed), 1);
        assert_eq!(load(&counters.datapoints_posted), 7);
        assert_eq!(load(&counters.datapoints_dropped), 2);
        assert_eq!(load(&counters.last_duration_ms), 30);
        assert_eq!(load(&counters.last_poll_ms), 2_000);
        assert_eq!(load(&counters.last_success_ms), 1_000);
    }
}
