//! The agent's own figures, read from [`crate::counters`] and the process,
//! in one form that three outputs share: the self-monitoring body posted
//! to pattoo, the Prometheus metrics page and the state file that
//! `pattoo-agentd status` reads. Because all three render the same
//! [`Figures`], they cannot disagree about what a figure means.
//!
//! Keys follow pattoo's rules (lower case, `_`, no `pattoo`); the metrics
//! page prefixes them with `pattoo_agentd_` and counters get `_total`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::counters::{load, PollerCounters, ProcessCounters};
use crate::delivery::StatsSnapshot;
use crate::model::{DataPoint, DataType, Metadata, TargetData, Value};

/// The target under which the agent-wide figures are posted; each poller's
/// figures are posted under the poller's name.
pub const AGENT_TARGET: &str = "agentd";

/// Whether a figure only ever grows while the process lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Counter,
    Gauge,
}

/// One figure's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Number {
    Int(u64),
    Float(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(v) => v as f64,
            Number::Float(v) => v,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub key: String,
    pub kind: Kind,
    pub value: Number,
    /// Whether the figure is posted to pattoo too; times of day (the last
    /// poll, the next tick) are for the metrics page and `status` only.
    #[serde(default = "yes")]
    pub posted: bool,
}

fn yes() -> bool {
    true
}

/// The figures of one poller, or of the agent as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub target: String,
    /// The poller's name and `type:`; `None` for the agent.
    pub poller: Option<(String, String)>,
    pub figures: Vec<Figure>,
}

impl Group {
    pub fn get(&self, key: &str) -> Option<Number> {
        self.figures.iter().find(|f| f.key == key).map(|f| f.value)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Figures {
    pub groups: Vec<Group>,
}

/// What one running poller is, for the figures and the watchdog.
#[derive(Debug, Clone)]
pub struct PollerEntry {
    pub name: String,
    pub kind: &'static str,
    pub interval: Duration,
    pub counters: std::sync::Arc<PollerCounters>,
}

/// Everything the figures are read from.
pub struct Sources<'a> {
    pub pollers: &'a [PollerEntry],
    pub delivery: &'a StatsSnapshot,
    /// `None` where nothing was posted yet (`once --print`, or a daemon
    /// before its first post has had a result): the figure is left out
    /// rather than guessed.
    pub server_reachable: Option<bool>,
    pub process: &'a ProcessCounters,
    /// When the process started, wall milliseconds.
    pub started_ms: u64,
    pub now_ms: u64,
}

fn counter(key: &str, value: u64) -> Figure {
    Figure {
        key: key.to_owned(),
        kind: Kind::Counter,
        value: Number::Int(value),
        posted: true,
    }
}

fn gauge(key: &str, value: Number) -> Figure {
    Figure {
        key: key.to_owned(),
        kind: Kind::Gauge,
        value,
        posted: true,
    }
}

/// A counter for the metrics page and `status`, not in the self-monitoring
/// body.
fn local_counter(key: &str, value: u64) -> Figure {
    Figure {
        posted: false,
        ..counter(key, value)
    }
}

fn local_gauge(key: &str, value: Number) -> Figure {
    Figure {
        posted: false,
        ..gauge(key, value)
    }
}

fn seconds(ms: u64) -> Number {
    Number::Float(ms as f64 / 1000.0)
}

impl Figures {
    pub fn read(sources: &Sources<'_>) -> Figures {
        let now_ms = sources.now_ms;
        let mut groups = Vec::with_capacity(sources.pollers.len() + 1);
        for poller in sources.pollers {
            let c = &poller.counters;
            let last_success = load(&c.last_success_ms);
            let since_success = now_ms.saturating_sub(if last_success == 0 {
                sources.started_ms
            } else {
                last_success
            });
            let mut figures = vec![
                counter("poller_polls", load(&c.polls)),
                counter("poller_polls_failed", load(&c.failed)),
                counter("poller_ticks_skipped", load(&c.skipped_ticks)),
                gauge(
                    "poller_last_poll_duration_ms",
                    Number::Int(load(&c.last_duration_ms)),
                ),
                counter("poller_datapoints_posted", load(&c.datapoints_posted)),
                counter("poller_datapoints_dropped", load(&c.datapoints_dropped)),
                gauge(
                    "poller_seconds_since_success",
                    Number::Int(since_success / 1000),
                ),
                local_counter("poller_bodies_delivered", load(&c.bodies_delivered)),
                local_counter("poller_bodies_cached", load(&c.bodies_cached)),
                local_gauge(
                    "poller_interval_seconds",
                    Number::Float(poller.interval.as_secs_f64()),
                ),
            ];
            for (key, at) in [
                ("poller_last_poll_timestamp_seconds", load(&c.last_poll_ms)),
                ("poller_next_tick_timestamp_seconds", load(&c.next_tick_ms)),
            ] {
                if at != 0 {
                    figures.push(local_gauge(key, seconds(at)));
                }
            }
            groups.push(Group {
                target: poller.name.clone(),
                poller: Some((poller.name.clone(), poller.kind.to_owned())),
                figures,
            });
        }

        let d = sources.delivery;
        let mut figures = vec![
            counter("delivery_bodies_posted", d.posted),
            counter("delivery_bodies_cached", d.cached),
            counter("delivery_bodies_replayed", d.replayed),
            counter("delivery_bodies_quarantined", d.quarantined),
            counter("delivery_bodies_dropped", d.dropped),
            counter("delivery_bodies_lost", d.lost),
            gauge("cache_files", Number::Int(d.cached_files)),
            gauge("cache_bytes", Number::Int(d.cached_bytes)),
            gauge(
                "cache_oldest_age_seconds",
                Number::Int(
                    d.oldest_cached_ms
                        .map_or(0, |oldest| now_ms.saturating_sub(oldest) / 1000),
                ),
            ),
        ];
        if let Some(reachable) = sources.server_reachable {
            figures.push(gauge("server_reachable", Number::Int(u64::from(reachable))));
        }
        let process = Process::read();
        if let Some(rss) = process.resident_bytes {
            figures.push(gauge("process_resident_bytes", Number::Int(rss)));
        }
        if let Some(cpu) = process.cpu_seconds {
            figures.push(Figure {
                value: Number::Float(cpu),
                ..counter("process_cpu_seconds", 0)
            });
        }
        if let Some(fds) = process.open_fds {
            figures.push(gauge("process_open_fds", Number::Int(fds)));
        }
        figures.extend([
            gauge(
                "process_uptime_seconds",
                Number::Int(now_ms.saturating_sub(sources.started_ms) / 1000),
            ),
            counter("config_reloads", load(&sources.process.reloads)),
            gauge(
                "config_last_reload_refused",
                Number::Int(u64::from(
                    sources
                        .process
                        .last_reload_refused
                        .load(std::sync::atomic::Ordering::Relaxed),
                )),
            ),
            local_gauge(
                "process_start_timestamp_seconds",
                seconds(sources.started_ms),
            ),
        ]);
        groups.push(Group {
            target: AGENT_TARGET.to_owned(),
            poller: None,
            figures,
        });
        Figures { groups }
    }

    /// The figures pattoo receives: one target per poller, plus the agent.
    /// Each poller's datapoints carry its name and type as metadata.
    pub fn targets(&self, timestamp_ms: u64) -> Vec<TargetData> {
        self.groups
            .iter()
            .map(|group| {
                let mut target = TargetData::new(group.target.clone());
                for figure in group.figures.iter().filter(|f| f.posted) {
                    let (value, data_type) = match (figure.kind, figure.value) {
                        (Kind::Counter, Number::Int(v)) => (Value::UInt(v), DataType::Counter64),
                        (Kind::Counter, Number::Float(v)) => (Value::Float(v), DataType::Counter64),
                        (Kind::Gauge, Number::Int(v)) => (Value::UInt(v), DataType::Int),
                        (Kind::Gauge, Number::Float(v)) => (Value::Float(v), DataType::Float),
                    };
                    let mut datapoint =
                        DataPoint::new(figure.key.clone(), value, data_type, timestamp_ms);
                    if let Some((name, kind)) = &group.poller {
                        datapoint.metadata = vec![
                            Metadata::new(POLLER_METADATA[0].0, name.clone()),
                            Metadata::new(POLLER_METADATA[1].0, kind.clone()),
                        ];
                    }
                    target.datapoints.push(datapoint);
                }
                target
            })
            .collect()
    }

    /// The agent-wide group.
    pub fn agent(&self) -> Option<&Group> {
        self.groups.iter().find(|g| g.poller.is_none())
    }
}

/// Every figure key posted to pattoo, with its data type and whether each
/// poller posts it (else the agent does), read from zeroed sources so the
/// list is the one [`Figures::read`] makes.
pub fn posted_keys() -> Vec<(String, DataType, bool)> {
    let pollers = [PollerEntry {
        name: "poller".to_owned(),
        kind: "kind",
        interval: Duration::from_secs(1),
        counters: Default::default(),
    }];
    let figures = Figures::read(&Sources {
        pollers: &pollers,
        delivery: &StatsSnapshot::default(),
        server_reachable: Some(true),
        process: &Default::default(),
        started_ms: 0,
        now_ms: 0,
    });
    figures
        .targets(0)
        .iter()
        .zip(&figures.groups)
        .flat_map(|(target, group)| {
            target
                .datapoints
                .iter()
                .map(|d| (d.key.to_string(), d.data_type, group.poller.is_some()))
        })
        .collect()
}

/// The metadata keys of each poller's figures: its name and `type:`.
pub const POLLER_METADATA: [(&str, &str); 2] =
    [("poller", "Poller"), ("poller_type", "Poller Type")];

/// A posted figure's English name and unit (counters are charted as
/// rates).
pub fn english(key: &str) -> Option<(&'static str, &'static str)> {
    Some(match key {
        "poller_polls" => ("Polls", "Polls / Second"),
        "poller_polls_failed" => ("Failed Polls", "Polls / Second"),
        "poller_ticks_skipped" => ("Skipped Polling Ticks", "Ticks / Second"),
        "poller_last_poll_duration_ms" => ("Last Poll Duration", "Milliseconds"),
        "poller_datapoints_posted" => ("Datapoints Posted", "Datapoints / Second"),
        "poller_datapoints_dropped" => ("Datapoints Dropped", "Datapoints / Second"),
        "poller_seconds_since_success" => ("Time Since Last Successful Poll", "Seconds"),
        "delivery_bodies_posted" => ("Bodies Posted", "Bodies / Second"),
        "delivery_bodies_cached" => ("Bodies Cached", "Bodies / Second"),
        "delivery_bodies_replayed" => ("Bodies Replayed", "Bodies / Second"),
        "delivery_bodies_quarantined" => ("Bodies Quarantined", "Bodies / Second"),
        "delivery_bodies_dropped" => ("Bodies Dropped", "Bodies / Second"),
        "delivery_bodies_lost" => ("Bodies Lost", "Bodies / Second"),
        "cache_files" => ("Cached Bodies", "Files"),
        "cache_bytes" => ("Cache Size", "Bytes"),
        "cache_oldest_age_seconds" => ("Age of Oldest Cached Body", "Seconds"),
        "server_reachable" => ("Server Reachable", "State"),
        "process_resident_bytes" => ("Resident Memory", "Bytes"),
        "process_cpu_seconds" => ("CPU Time", "Seconds / Second"),
        "process_open_fds" => ("Open File Descriptors", "Count"),
        "process_uptime_seconds" => ("Uptime", "Seconds"),
        "config_reloads" => ("Configuration Reloads", "Reloads / Second"),
        "config_last_reload_refused" => ("Last Reload Refused", "State"),
        _ => return None,
    })
}

/// What the kernel says about this process; a figure it cannot read is
/// left out rather than sent as 0.
#[derive(Debug, Default)]
struct Process {
    resident_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<u64>,
}

impl Process {
    fn read() -> Process {
        Process {
            resident_bytes: resident_bytes(),
            cpu_seconds: cpu_seconds(),
            open_fds: open_fds(),
        }
    }
}

/// Since Linux 6.2 the size of `/proc/self/fd` is the number of open
/// descriptors: one `stat` instead of listing them (a dentry made per
/// descriptor, every few seconds for the state file). Older kernels say 0.
fn open_fds() -> Option<u64> {
    match std::fs::metadata("/proc/self/fd") {
        Ok(meta) if meta.len() > 0 => Some(meta.len()),
        _ => std::fs::read_dir("/proc/self/fd")
            // The directory being listed holds a descriptor itself.
            .map(|dir| (dir.count() as u64).saturating_sub(1))
            .ok(),
    }
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

fn cpu_seconds() -> Option<f64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(usage.user_time()) + secs(usage.system_time()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::*;

    fn sources_with(counters: Arc<PollerCounters>, delivery: &StatsSnapshot) -> Figures {
        let pollers = [PollerEntry {
            name: "meters".into(),
            kind: "modbus_tcp",
            interval: Duration::from_secs(10),
            counters,
        }];
        let process = ProcessCounters::default();
        process.reloads.store(2, Ordering::Relaxed);
        Figures::read(&Sources {
            pollers: &pollers,
            delivery,
            server_reachable: Some(false),
            process: &process,
            started_ms: 1_000_000,
            now_ms: 1_600_000,
        })
    }

    #[test]
    fn open_descriptors_are_counted_as_listing_them_counts() {
        let listed = || {
            std::fs::read_dir("/proc/self/fd")
                .map(|dir| dir.count() as u64 - 1)
                .unwrap()
        };
        // Other tests open and close files meanwhile: a count taken between
        // two equal listings must equal them.
        let agreed = (0..1000).any(|_| {
            let before = listed();
            let counted = open_fds();
            before == listed() && counted == Some(before)
        });
        assert!(agreed, "open_fds() never matched the listing");
    }

    #[test]
    fn a_poller_that_never_succeeded_counts_its_silence_from_the_start() {
        let counters = Arc::new(PollerCounters::default());
        counters.record_poll(1_500_000, 40, None, 0);
        let figures = sources_with(counters, &StatsSnapshot::default());
        let poller = &figures.groups[0];
        assert_eq!(poller.get("poller_polls_failed"), Some(Number::Int(1)));
        assert_eq!(
            poller.get("poller_seconds_since_success"),
            Some(Number::Int(600))
        );
        assert_eq!(
            poller.get("poller_last_poll_timestamp_seconds"),
            Some(Number::Float(1500.0))
        );
    }

    #[test]
    fn counters_are_counter64_levels_int_and_pollers_carry_their_name_and_type() {
        let counters = Arc::new(PollerCounters::default());
        counters.record_poll(1_500_000, 40, Some(200), 3);
        let delivery = StatsSnapshot {
            cached: 4,
            cached_files: 4,
            oldest_cached_ms: Some(1_540_000),
            ..StatsSnapshot::default()
        };
        let targets = sources_with(counters, &delivery).targets(1_600_000);
        assert_eq!(targets.len(), 2);
        let find = |target: &TargetData, key: &str| {
            target
                .datapoints
                .iter()
                .find(|d| d.key == key)
                .unwrap_or_else(|| panic!("{key} missing"))
                .clone()
        };
        let polls = find(&targets[0], "poller_datapoints_posted");
        assert_eq!(polls.data_type, DataType::Counter64);
        assert_eq!(polls.value, Value::UInt(200));
        assert_eq!(
            polls.metadata,
            vec![
                Metadata::new("poller", "meters"),
                Metadata::new("poller_type", "modbus_tcp")
            ]
        );
        let duration = find(&targets[0], "poller_last_poll_duration_ms");
        assert_eq!(duration.data_type, DataType::Int);
        assert!(
            !targets[0]
                .datapoints
                .iter()
                .any(|d| d.key.contains("timestamp")),
            "times of day are not posted"
        );
        let agent = &targets[1];
        assert_eq!(agent.target, AGENT_TARGET);
        assert_eq!(
            find(agent, "cache_oldest_age_seconds").value,
            Value::UInt(60)
        );
        assert_eq!(find(agent, "server_reachable").value, Value::UInt(0));
        assert_eq!(find(agent, "config_reloads").data_type, DataType::Counter64);
        assert_eq!(
            find(agent, "process_cpu_seconds").data_type,
            DataType::Counter64
        );
        assert!(matches!(find(agent, "process_resident_bytes").value, Value::UInt(v) if v > 0));
        for target in &targets {
            for datapoint in &target.datapoints {
                assert!(!datapoint.key.contains("pattoo"), "{}", datapoint.key);
            }
        }
    }

    #[test]
    fn every_posted_figure_has_a_name_and_unit() {
        let keys = posted_keys();
        assert!(keys
            .iter()
            .any(|(key, _, per_poller)| key == "poller_polls" && *per_poller));
        assert!(keys
            .iter()
            .any(|(key, _, per_poller)| key == "cache_bytes" && !*per_poller));
        for (key, _, _) in keys {
            assert!(english(&key).is_some(), "{key} has no name");
        }
    }
}
