//! When to try the server again, and sending cached bodies back to it.
//!
//! A [`Breaker`] remembers whether the server is believed down. While it is
//! closed every body is posted; once the server looks down (a post that
//! could not connect or timed out, or a 5xx that follows another failure:
//! one body the server cannot take does not count: see `Verdicts` in the
//! delivery module) it opens, and until the
//! next allowed attempt every new body goes straight to the cache, so a
//! poll never waits on a dead server. Attempts while open are spaced by
//! exponential backoff with jitter, starting at `retry_initial` (a second
//! by default, so about one attempt per second at most) and capped at
//! `retry_max`; a `Retry-After` on 429 or 503 is honoured. Whichever comes
//! first, a live post or the replay loop, makes the attempt.
//!
//! Replay sends the oldest cached body first, one at a time, at most
//! `replay_per_second`, alongside live posts; a file is deleted only after
//! a 200 for it (a 202 from `/encrypted` with `encryption: openpgp`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::config::DeliverySettings;

#[derive(Debug)]
struct BreakerState {
    down: bool,
    failures: u32,
    retry_at: Instant,
}

/// Whether the server is believed reachable, and when to try it again.
#[derive(Debug)]
pub struct Breaker {
    initial: Duration,
    max: Duration,
    state: Mutex<BreakerState>,
}

/// What [`Breaker::record_failure`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// True the first time: the server was believed up until now.
    pub newly_down: bool,
    pub wait: Duration,
}

impl Breaker {
    pub fn new(settings: &DeliverySettings) -> Breaker {
        Breaker {
            initial: settings.retry_initial,
            max: settings.retry_max,
            state: Mutex::new(BreakerState {
                down: false,
                failures: 0,
                retry_at: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// Whether an attempt may be made now. While the server is down this
    /// hands out one attempt per backoff period: the caller that gets it
    /// pushes the next one out before it even starts.
    pub fn try_acquire(&self) -> bool {
        let mut state = self.lock();
        if !state.down {
            return true;
        }
        let now = Instant::now();
        if now < state.retry_at {
            return false;
        }
        state.retry_at = now + self.backoff(state.failures);
        true
    }

    /// How long until [`Breaker::try_acquire`] may say yes.
    pub fn wait(&self) -> Duration {
        let state = self.lock();
        if !state.down {
            return Duration::ZERO;
        }
        state.retry_at.saturating_duration_since(Instant::now())
    }

    /// The server answered 200 (or read and judged a body): it is up.
    /// Returns whether it had been down.
    pub fn record_success(&self) -> bool {
        let mut state = self.lock();
        let was_down = state.down;
        state.down = false;
        state.failures = 0;
        was_down
    }

    pub fn record_failure(&self, retry_after: Option<Duration>) -> Backoff {
        let mut state = self.lock();
        let newly_down = !state.down;
        state.down = true;
        state.failures = state.failures.saturating_add(1);
        let wait = self
            .backoff(state.failures)
            .max(retry_after.unwrap_or_default());
        state.retry_at = Instant::now() + wait;
        Backoff { newly_down, wait }
    }

    /// `initial * 2^(failures-1)`, capped, then stretched by up to a
    /// quarter so agents that lost the server together do not return in
    /// step. Never less than `initial`.
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        let base = self.initial.saturating_mul(1 << doublings).min(self.max);
        let jitter = base.mul_f64(fastrand::f64() * 0.25);
        (base + jitter).min(self.max.max(self.initial))
    }
}

/// The time between two replayed bodies.
pub fn replay_period(settings: &DeliverySettings) -> Duration {
    Duration::from_secs(1) / settings.replay_per_second.max(1)
}

/// Spaces replayed bodies `period` apart on average. Time spent posting
/// counts towards the spacing, so a post that takes as long as the period
/// is followed by no wait at all; an idle spell earns no burst.
#[derive(Debug)]
pub struct Pacer {
    period: Duration,
    next: Instant,
}

impl Pacer {
    pub fn new(period: Duration) -> Pacer {
        Pacer {
            period,
            next: Instant::now(),
        }
    }

    /// Waits until the next body may go.
    pub async fn wait(&mut self) {
        let now = Instant::now();
        self.next = (self.next + self.period).max(now.checked_sub(self.period).unwrap_or(now));
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(&DeliverySettings {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            ..DeliverySettings::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_while_down_are_spaced_by_growing_backoff_with_a_ceiling() {
        let breaker = breaker();
        assert!(breaker.try_acquire(), "up: every post may go");
        let first = breaker.record_failure(None);
        assert!(first.newly_down);
        assert!(first.wait >= Duration::from_secs(1) && first.wait <= Duration::from_millis(1250));
        assert!(!breaker.try_acquire(), "down: no attempt before the wait");

        let mut waits = Vec::new();
        for _ in 0..8 {
            tokio::time::advance(breaker.wait()).await;
            assert!(breaker.try_acquire());
            assert!(
                !breaker.try_acquire(),
                "one attempt per period, not one per caller"
            );
            let backoff = breaker.record_failure(None);
            assert!(!backoff.newly_down);
            waits.push(backoff.wait);
        }
        assert!(waits[0] >= Duration::from_secs(2), "{waits:?}");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(8)),
            "{waits:?}"
        );
        assert!(waits[7] >= Duration::from_secs(8), "{waits:?}");

        assert!(breaker.record_success());
        assert!(breaker.try_acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_attempts_back_for_as_long_as_the_server_asks() {
        let breaker = breaker();
        let backoff = breaker.record_failure(Some(Duration::from_secs(30)));
        assert_eq!(backoff.wait, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!breaker.try_acquire());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(breaker.try_acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_keeps_the_rate_without_adding_to_slow_posts() {
        let mut pacer = Pacer::new(Duration::from_millis(10));
        let start = Instant::now();
        for _ in 0..100 {
            pacer.wait().await;
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(980) && elapsed <= Duration::from_millis(1010),
            "{elapsed:?}"
        );

        // Posts slower than the period: no extra wait on top.
        let start = Instant::now();
        for _ in 0..10 {
            tokio::time::advance(Duration::from_millis(15)).await;
            pacer.wait().await;
        }
        assert!(
            start.elapsed() <= Duration::from_millis(160),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn the_default_replay_rate_allows_a_thousand_bodies_a_second() {
        assert_eq!(
            replay_period(&DeliverySettings::default()),
            Duration::from_millis(1)
        );
    }
}
