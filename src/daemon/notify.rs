//! The systemd notification protocol (`Type=notify`).
//!
//! Every call is a no-op when the agent was not started by systemd
//! (`NOTIFY_SOCKET` unset), so the daemon can call these unconditionally.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(state: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, state) {
        tracing::debug!("systemd notification failed: {err}");
    }
}

/// Configuration is valid, the cache scanned and pollers scheduled.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A reload has begun; [`ready`] ends it. systemd (`Type=notify-reload`
/// from 253 on) keeps `systemctl reload` waiting until then, and wants the
/// monotonic time alongside to tell this reload from an earlier one.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(err) => tracing::debug!("cannot read the monotonic clock for RELOADING=1: {err}"),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The one-line summary `systemctl status` shows.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often systemd expects a watchdog ping, when `WatchdogSec=` is set.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}
