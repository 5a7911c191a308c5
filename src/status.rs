//! `pattoo-agentd status`: what the running agent is doing, per poller, for
//! the cache and for the server.
//!
//! With `metrics_listen:` configured the figures come from the metrics
//! page (read with the agent's own Prometheus parser); otherwise, or when
//! the page does not answer, from the state file the daemon rewrites every
//! few seconds ([`crate::telemetry::state`]). [`run`] says whether an agent
//! runs; the command exits 3 (as `systemctl status`) when none does.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;
use crate::formats::{self, Payload};
use crate::model::{DataType, Value};
use crate::telemetry::figures::{Figure, Figures, Group, Kind, Number};
use crate::telemetry::metrics_page::PREFIX;
use crate::telemetry::state::{self, State};
use crate::time::now_ms;

/// `systemctl status` uses 3 for "not running"; so does this.
pub const EXIT_NOT_RUNNING: i32 = 3;
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the figures shown came from.
enum Seen {
    Page {
        url: String,
        health: Result<(), String>,
    },
    File {
        state: Box<State>,
    },
}

/// Prints what the agent is doing; `Ok(false)` when no agent runs.
pub async fn run(settings: &Settings) -> anyhow::Result<bool> {
    let daemon_directory = &settings.pattoo.daemon_directory;
    let file = state::read(daemon_directory).map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    // A state file whose process is gone was left by a killed agent.
    let file = match file {
        Some(state) if state::process_exists(state.pid) => Some(state),
        Some(state) => {
            writeln!(
                out,
                "pattoo-agentd is not running (daemon directory {}); the last one (pid {}) stopped without cleaning up {} ago: killed or crashed, see its log",
                daemon_directory.display(),
                state.pid,
                ago(now_ms().saturating_sub(state.written_ms))
            )?;
            return Ok(false);
        }
        None => None,
    };
    let page = settings
        .agent
        .metrics_listen
        .filter(|addr| addr.port() != 0)
        .or(file.as_ref().and_then(|state| state.metrics_listen));
    let mut seen = None;
    if let Some(addr) = page {
        let url = format!(
            "http://{}",
            crate::address::host_port(&addr.ip().to_string(), addr.port())
        );
        match scrape(&url).await {
            Ok((figures, health)) => seen = Some((figures, Seen::Page { url, health })),
            Err(error) if file.is_some() => {
                tracing::warn!(
                    "the metrics page did not answer ({error:#}); showing the state file"
                );
            }
            Err(_) => {}
        }
    }
    let (figures, seen) = match (seen, file) {
        (Some(seen), _) => seen,
        (None, Some(state)) => (
            state.figures.clone(),
            Seen::File {
                state: Box::new(state),
            },
        ),
        (None, None) => {
            writeln!(
                out,
                "pattoo-agentd is not running (no state file in {}{})",
                daemon_directory.display(),
                match page {
                    Some(addr) => format!(" and nothing answers at {addr}"),
                    None => String::new(),
                }
            )?;
            return Ok(false);
        }
    };
    print(&mut out, &figures, &seen, now_ms())?;
    Ok(true)
}

/// Reads `/metrics` and `/health` from the page at `url`.
async fn scrape(url: &str) -> anyhow::Result<(Figures, Result<(), String>)> {
    // reqwest is built without a default crypto provider (see the poster);
    // plain HTTP still needs one installed to build a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(ASK_TIMEOUT)
        .no_proxy()
        .build()
        .context("preparing an HTTP client")?;
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("{url}/metrics"))?
        .bytes()
        .await?;
    let figures = parse_page(&metrics)?;
    let health = client.get(format!("{url}/health")).send().await?;
    let healthy = health.status().is_success();
    let text = health.text().await.unwrap_or_default();
    Ok((
        figures,
        if healthy {
            Ok(())
        } else {
            Err(text.trim().trim_start_matches("unhealthy: ").to_owned())
        },
    ))
}

/// The metrics page back into [`Figures`], through the Prometheus parser
/// the `prometheus` format uses: samples labelled with a poller become that
/// poller's group, the rest the agent's.
pub fn parse_page(text: &[u8]) -> anyhow::Result<Figures> {
    let parsed = formats::prometheus::parse(&Payload {
        bytes: text,
        default_target: "",
        read_at_ms: 0,
        exit_status: None,
    })
    .context("the metrics page is not valid Prometheus text")?;
    let mut figures = Figures::default();
    for datapoint in parsed.targets.iter().flat_map(|t| &t.datapoints) {
        let Some(name) = datapoint.key.strip_prefix(PREFIX) else {
            continue;
        };
        let (key, kind) = match datapoint.data_type {
            DataType::Counter64 => (name.strip_suffix("_total").unwrap_or(name), Kind::Counter),
            _ => (name, Kind::Gauge),
        };
        let value = match datapoint.value {
            Value::Int(v) => Number::Float(v as f64),
            Value::UInt(v) => Number::Float(v as f64),
            Value::UInt128(v) => Number::Float(v as f64),
            Value::Float(v) => Number::Float(v),
            Value::Text(_) => continue,
        };
        let label = |wanted: &str| {
            datapoint
                .metadata
                .iter()
                .find(|m| m.key == wanted)
                .map(|m| m.value.to_string())
        };
        let poller = label("poller").map(|name| (name, label("poller_type").unwrap_or_default()));
        let target = poller.as_ref().map_or_else(
            || crate::telemetry::figures::AGENT_TARGET.to_owned(),
            |p| p.0.clone(),
        );
        let figure = Figure {
            key: key.to_owned(),
            kind,
            value,
            posted: true,
        };
        match figures.groups.iter_mut().find(|g| g.poller == poller) {
            Some(group) => group.figures.push(figure),
            None => figures.groups.push(Group {
                target,
                poller,
                figures: vec![figure],
            }),
        }
    }
    Ok(figures)
}

fn print(out: &mut impl Write, figures: &Figures, seen: &Seen, now_ms: u64) -> anyhow::Result<()> {
    let get = |group: &Group, key: &str| group.get(key).map(Number::as_f64);
    let agent = figures.agent();
    let uptime = agent.and_then(|a| get(a, "process_uptime_seconds"));
    match seen {
        Seen::Page { url, .. } => writeln!(
            out,
            "pattoo-agentd is running, up {} (figures from {url}/metrics)",
            uptime.map_or("?".to_owned(), |s| span(s as u64))
        )?,
        Seen::File { state } => writeln!(
            out,
            "pattoo-agentd {} is running as pid {}, up {} (state file written {} ago)",
            state.version,
            state.pid,
            uptime.map_or("?".to_owned(), |s| span(s as u64)),
            ago(now_ms.saturating_sub(state.written_ms))
        )?,
    }
    let unhealthy = match seen {
        Seen::Page { health, .. } => health.clone().err(),
        Seen::File { state } => state.unhealthy.clone(),
    };
    match unhealthy {
        None => writeln!(out, "health: ok")?,
        Some(what) => writeln!(out, "health: UNHEALTHY: {what}")?,
    }
    if let Seen::File { state } = seen {
        if now_ms.saturating_sub(state.written_ms) > 6 * state::EVERY_MS {
            writeln!(
                out,
                "warning: the state file should be rewritten every {} s; the agent may be stuck",
                state::EVERY_MS / 1000
            )?;
        }
    }

    let pollers: Vec<&Group> = figures
        .groups
        .iter()
        .filter(|g| g.poller.is_some())
        .collect();
    writeln!(out, "pollers: {}", pollers.len())?;
    for group in pollers {
        let (name, kind) = group.poller.clone().unwrap_or_default();
        let count = |key| get(group, key).unwrap_or(0.0) as u64;
        let interval = get(group, "poller_interval_seconds")
            .map(|s| format!(", every {}", ago((s * 1000.0) as u64)))
            .unwrap_or_default();
        write!(out, "  {name} ({kind}{interval}): ")?;
        match get(group, "poller_last_poll_timestamp_seconds") {
            Some(at) => write!(
                out,
                "last poll {} ago, took {} ms",
                ago(now_ms.saturating_sub((at * 1000.0) as u64)),
                count("poller_last_poll_duration_ms")
            )?,
            None => write!(out, "not polled yet")?,
        }
        write!(
            out,
            "; {} polls, {} failed, {} ticks skipped; {} datapoints posted, {} dropped",
            count("poller_polls"),
            count("poller_polls_failed"),
            count("poller_ticks_skipped"),
            count("poller_datapoints_posted"),
            count("poller_datapoints_dropped"),
        )?;
        if count("poller_polls_failed") > 0 {
            write!(
                out,
                "; last success {} ago",
                span(count("poller_seconds_since_success"))
            )?;
        }
        if let Some(next) = get(group, "poller_next_tick_timestamp_seconds") {
            let mut next_ms = (next * 1000.0) as u64;
            // Figures a few seconds old: ticks come at a fixed interval, so
            // the one now due follows from the last one known.
            let interval_ms = get(group, "poller_interval_seconds").map(|s| (s * 1000.0) as u64);
            if let Some(interval_ms) = interval_ms.filter(|ms| *ms > 0) {
                if next_ms < now_ms {
                    next_ms += (now_ms - next_ms).div_ceil(interval_ms) * interval_ms;
                }
            }
            if next_ms >= now_ms {
                write!(out, "; next tick in {}", ago(next_ms - now_ms))?;
            } else {
                write!(out, "; polling now")?;
            }
        }
        writeln!(out)?;
    }

    if let Some(agent) = agent {
        let count = |key| get(agent, key).unwrap_or(0.0) as u64;
        write!(
            out,
            "cache: {} bodies, {} bytes",
            count("cache_files"),
            count("cache_bytes")
        )?;
        if count("cache_files") > 0 {
            write!(
                out,
                ", oldest {} old",
                span(count("cache_oldest_age_seconds"))
            )?;
        }
        writeln!(
            out,
            "; {} dropped by the bounds, {} quarantined, {} lost",
            count("delivery_bodies_dropped"),
            count("delivery_bodies_quarantined"),
            count("delivery_bodies_lost")
        )?;
        let never_posted = matches!(seen, Seen::File { state } if state.last_post.is_none())
            && count("delivery_bodies_posted") + count("delivery_bodies_replayed") == 0;
        let reachable = match get(agent, "server_reachable") {
            Some(_) if never_posted => "not tried yet",
            Some(v) if v >= 1.0 => "reachable",
            Some(_) => "NOT reachable (backing off; bodies are cached)",
            None => "not tried yet",
        };
        write!(out, "server: ")?;
        if let Seen::File { state } = seen {
            write!(out, "{} ", state.server)?;
        }
        writeln!(
            out,
            "{reachable}; {} posted, {} cached, {} replayed",
            count("delivery_bodies_posted"),
            count("delivery_bodies_cached"),
            count("delivery_bodies_replayed")
        )?;
        if let Seen::File { state } = seen {
            if let Some(last) = &state.last_post {
                writeln!(
                    out,
                    "  last post {} ago: {}",
                    ago(now_ms.saturating_sub(last.at_ms)),
                    last.detail
                )?;
            }
        }
        if count("config_last_reload_refused") > 0 {
            writeln!(
                out,
                "configuration: the last reload was REFUSED; the previous configuration runs (see the log)"
            )?;
        }
    }
    Ok(())
}

/// Whole seconds as people read them: `0s`, `4m 10s`.
fn span(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

/// A span of milliseconds as people read it: `850ms`, `12s`, `4m 10s`.
fn ago(ms: u64) -> String {
    let seconds = ms / 1000;
    if seconds == 0 {
        return format!("{ms}ms");
    }
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(ago(850), "850ms");
        assert_eq!(ago(12_400), "12s");
        assert_eq!(ago(250_000), "4m 10s");
    }
}
