//! `pattoo-agentd status`: what the running agent is doing, per poller, for
//! the cache and for the server.
//!
//! An agent runs when the lock file's process is a `pattoo-agentd` holding
//! the lock ([`crate::daemon::lock::running_agent`]). With `metrics_listen:`
//! configured the figures come from the metrics page (read with the agent's
//! own Prometheus parser, at most [`MAX_PAGE_BYTES`]), once the page has
//! proved it is that agent's by answering a fresh challenge with the token
//! in the daemon directory; otherwise, or when the page does not answer or
//! prove itself, from the state file the daemon rewrites every few seconds
//! ([`crate::telemetry::state`]). [`run`] says whether an agent runs; the
//! command exits 3 (as `systemctl status`) when none does. Names and texts
//! from the agent are printed with control characters escaped, so none
//! reaches the terminal.

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;
use crate::daemon::lock;
use crate::telemetry::figures::{Figures, Group, Number};
use crate::telemetry::metrics_page::{self, CHALLENGE_HEADER, PROOF_HEADER};
use crate::telemetry::state::{self, State, Token};
use crate::time::now_ms;

/// `systemctl status` uses 3 for "not running"; so does this.
pub const EXIT_NOT_RUNNING: i32 = 3;
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// The most of the metrics page read; the agent's own page is a few KiB
/// per poller.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// The most of `/health` read.
const MAX_HEALTH_BYTES: usize = 4 * 1024;

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
    let pid = match lock::running_agent(daemon_directory) {
        Ok(pid) => pid,
        Err(no_agent) if no_agent.is_not_running() => {
            match file {
                // A state file left behind was left by a killed agent.
                Some(state) => writeln!(
                    out,
                    "pattoo-agentd is not running (daemon directory {}); the last one (pid {}) stopped without cleaning up {} ago: killed or crashed, see its log",
                    daemon_directory.display(),
                    state.pid,
                    ago(now_ms().saturating_sub(state.written_ms))
                )?,
                None => writeln!(out, "pattoo-agentd is not running ({no_agent})")?,
            }
            return Ok(false);
        }
        Err(cannot_check) => return Err(cannot_check.into()),
    };
    // A state file of another process is left from an earlier agent.
    let file = file.filter(|state| state.pid == pid);
    // Where the running agent listens, as it said; the configuration may
    // have changed since it started.
    let page = file
        .as_ref()
        .map_or(settings.agent.metrics_listen, |state| state.metrics_listen)
        .filter(|addr| addr.port() != 0);
    let mut seen = None;
    let mut page_error = None;
    if let Some(addr) = page {
        let url = format!(
            "http://{}",
            crate::address::host_port(&addr.ip().to_string(), addr.port())
        );
        let answer = match Token::read(daemon_directory) {
            Ok(token) => scrape(&url, &token, MAX_PAGE_BYTES).await,
            Err(error) => Err(anyhow::anyhow!(
                "cannot check that {url} is this agent's page: {error}"
            )),
        };
        match answer {
            Ok((figures, health)) => seen = Some((figures, Seen::Page { url, health })),
            Err(error) if file.is_some() => {
                tracing::warn!("{error:#}; showing the state file");
            }
            Err(error) => page_error = Some(error),
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
        (None, None) => match page_error {
            Some(error) => anyhow::bail!(
                "pattoo-agentd runs as pid {pid}, but its figures cannot be read: {error:#}"
            ),
            None => anyhow::bail!(
                "pattoo-agentd runs as pid {pid}, but it has written no state file in {} yet; try again in a few seconds",
                daemon_directory.display()
            ),
        },
    };
    print(&mut out, pid, &figures, &seen, now_ms())?;
    Ok(true)
}

/// Reads `/metrics` and `/health` from the page at `url`, each answer
/// checked to prove it knows `token`, reading at most `max_bytes` of the
/// page.
async fn scrape(
    url: &str,
    token: &Token,
    max_bytes: usize,
) -> anyhow::Result<(Figures, Result<(), String>)> {
    // reqwest is built without a default crypto provider (see the poster);
    // plain HTTP still needs one installed to build a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(ASK_TIMEOUT)
        .no_proxy()
        .build()
        .context("preparing an HTTP client")?;
    let ask = |path: &str| {
        let url = format!("{url}{path}");
        let client = client.clone();
        async move {
            let mut challenge = [0u8; 16];
            getrandom::fill(&mut challenge)
                .map_err(|error| anyhow::anyhow!("drawing a challenge: {error}"))?;
            let challenge = hex::encode(challenge);
            let response = client
                .get(&url)
                .header(CHALLENGE_HEADER, &challenge)
                .send()
                .await
                .with_context(|| url.clone())?;
            let proof = response.headers().get(PROOF_HEADER).map(|v| v.as_bytes());
            anyhow::ensure!(
                proof == Some(token.prove(challenge.as_bytes()).as_bytes()),
                "{url} answers, but not as this configuration's pattoo-agentd: it did not prove it knows the token in {} (another program listens on that port?)",
                state::TOKEN_FILE_NAME
            );
            anyhow::Ok((url, response))
        }
    };
    let (url_metrics, metrics) = ask("/metrics").await?;
    let metrics = metrics
        .error_for_status()
        .with_context(|| url_metrics.clone())?;
    let metrics = read_at_most(metrics, max_bytes, &url_metrics).await?;
    let figures = metrics_page::parse(&metrics)
        .with_context(|| format!("{url_metrics}: the metrics page is not valid Prometheus text"))?;
    let (url_health, health) = ask("/health").await?;
    let healthy = health.status().is_success();
    let text = read_at_most(health, MAX_HEALTH_BYTES, &url_health).await?;
    let text = String::from_utf8_lossy(&text);
    Ok((
        figures,
        if healthy {
            Ok(())
        } else {
            Err(text.trim().trim_start_matches("unhealthy: ").to_owned())
        },
    ))
}

/// The body of `response`, or an error naming `url` once it passes
/// `max_bytes`; no more than that is kept.
async fn read_at_most(
    mut response: reqwest::Response,
    max_bytes: usize,
    url: &str,
) -> anyhow::Result<Vec<u8>> {
    let too_big = || {
        anyhow::anyhow!(
            "{url} sends more than {max_bytes} bytes, more than any pattoo-agentd page; stopped reading"
        )
    };
    if response
        .content_length()
        .is_some_and(|length| length > max_bytes as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.with_context(|| url.to_owned())? {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn print(
    out: &mut impl Write,
    pid: u32,
    figures: &Figures,
    seen: &Seen,
    now_ms: u64,
) -> anyhow::Result<()> {
    let get = |group: &Group, key: &str| group.get(key).map(Number::as_f64);
    let agent = figures.agent();
    let uptime = agent.and_then(|a| get(a, "process_uptime_seconds"));
    match seen {
        Seen::Page { url, .. } => writeln!(
            out,
            "pattoo-agentd is running as pid {pid}, up {} (figures from {url}/metrics)",
            uptime.map_or("?".to_owned(), |s| span(s as u64))
        )?,
        Seen::File { state } => writeln!(
            out,
            "pattoo-agentd {} is running as pid {pid}, up {} (state file written {} ago)",
            printable(&state.version),
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
        Some(what) => writeln!(out, "health: UNHEALTHY: {}", printable(&what))?,
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
        write!(
            out,
            "  {} ({}{interval}): ",
            printable(&name),
            printable(&kind)
        )?;
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
            "; {} polls, {} failed, {} ticks skipped; {} datapoints posted, {} dropped; {} bodies delivered, {} cached",
            count("poller_polls"),
            count("poller_polls_failed"),
            count("poller_ticks_skipped"),
            count("poller_datapoints_posted"),
            count("poller_datapoints_dropped"),
            count("poller_bodies_delivered"),
            count("poller_bodies_cached"),
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
            write!(out, "{} ", printable(&state.server))?;
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
                    printable(&last.detail)
                )?;
            }
            if let Some(last) = &state.last_exchange {
                writeln!(
                    out,
                    "  last encrypted exchange {} ago: {}{}",
                    ago(now_ms.saturating_sub(last.at_ms)),
                    if last.ok { "" } else { "FAILED: " },
                    printable(&last.detail)
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

/// `text` with every control character (an escape sequence's ESC, a
/// carriage return, ...) and every bidirectional override written as
/// `\u{..}`, so a name cannot move the cursor, recolour or rewrite the
/// terminal.
fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            escaped.extend(c.escape_unicode());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
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
    fn names_and_texts_with_control_characters_are_printed_escaped() {
        use crate::telemetry::figures::{Figure, Group, Kind};
        let evil = "\x1b[2J\x1b]0;owned\x07meters\r\u{202e}";
        let figures = Figures {
            groups: vec![Group {
                target: evil.to_owned(),
                poller: Some((evil.to_owned(), "modbus\x1b[31m".to_owned())),
                figures: vec![Figure {
                    key: "poller_polls".into(),
                    kind: Kind::Counter,
                    value: Number::Int(3),
                    posted: true,
                }],
            }],
        };
        // Through the page and back, as status reads it.
        let page = crate::telemetry::metrics_page::render(&figures);
        let figures = crate::telemetry::metrics_page::parse(page.as_bytes()).unwrap();
        let seen = Seen::Page {
            url: "http://127.0.0.1:9464".into(),
            health: Err("poller \x1b[8mhidden".into()),
        };
        let mut out = Vec::new();
        print(&mut out, 42, &figures, &seen, 1_600_000).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{text:?}"
        );
        assert!(
            text.contains(
                "  \\u{1b}[2J\\u{1b}]0;owned\\u{7}meters\\u{d}\\u{202e} (modbus\\u{1b}[31m): "
            ),
            "{text}"
        );
        assert!(
            text.contains("UNHEALTHY: poller \\u{1b}[8mhidden"),
            "{text}"
        );
        assert_eq!(printable("plain name é"), "plain name é");
    }

    /// A one-connection-at-a-time HTTP server on loopback that answers
    /// `/metrics` with `page`, proving it knows `token` when given one.
    /// Returns its URL and how many bytes it has sent.
    async fn page_server(
        token: Option<Token>,
        page: fn(&mut Vec<u8>) -> bool,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sent = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = sent.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut stream = BufReader::new(stream);
                let mut challenge = String::new();
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case(CHALLENGE_HEADER) {
                            challenge = value.trim().to_owned();
                        }
                    }
                }
                let proof = token.as_ref().map_or(String::new(), |token| {
                    format!("{PROOF_HEADER}: {}\r\n", token.prove(challenge.as_bytes()))
                });
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{proof}transfer-encoding: chunked\r\n\r\n"
                );
                let stream = stream.get_mut();
                if stream.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                let mut chunk = Vec::new();
                loop {
                    chunk.clear();
                    let more = page(&mut chunk);
                    let framed =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    if stream.write_all(&framed).await.is_err() {
                        break;
                    }
                    counted.fetch_add(framed.len(), Ordering::Relaxed);
                    if !more {
                        let _ = stream.write_all(b"0\r\n\r\n").await;
                        break;
                    }
                }
            }
        });
        (url, sent)
    }

    #[tokio::test]
    async fn an_endless_page_is_cut_at_the_limit_with_an_error_naming_its_url() {
        let dir = tempfile::tempdir().unwrap();
        let token = Token::create(dir.path()).unwrap();
        let (url, sent) = page_server(Some(token.clone()), |chunk| {
            for _ in 0..1000 {
                chunk.extend_from_slice(b"# a comment that never ends the page\n");
            }
            true
        })
        .await;
        const LIMIT: usize = 256 * 1024;
        let error = tokio::time::timeout(Duration::from_secs(60), scrape(&url, &token, LIMIT))
            .await
            .expect("the read stops")
            .unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains(&format!("{url}/metrics sends more than {LIMIT} bytes")),
            "{message}"
        );
        // What was sent is the limit plus what the sockets buffer, not
        // whatever the page could send until a timeout.
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(sent < LIMIT + 32 * 1024 * 1024, "{sent} bytes sent");
    }

    #[tokio::test]
    async fn a_page_that_cannot_prove_it_knows_the_token_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let token = Token::create(dir.path()).unwrap();
        let page = |chunk: &mut Vec<u8>| {
            chunk.extend_from_slice(b"pattoo_agentd_process_uptime_seconds 86400\n# EOF\n");
            false
        };
        let other = Token::create(tempfile::tempdir().unwrap().path()).unwrap();
        for impostor in [None, Some(other)] {
            let (url, _) = page_server(impostor, page).await;
            let error = scrape(&url, &token, MAX_PAGE_BYTES).await.unwrap_err();
            let message = format!("{error:#}");
            assert!(
                message.contains(&format!(
                    "{url}/metrics answers, but not as this configuration's pattoo-agentd"
                )),
                "{message}"
            );
        }
        // The same page with the proof is read.
        let (url, _) = page_server(Some(token.clone()), page).await;
        let (figures, _) = scrape(&url, &token, MAX_PAGE_BYTES).await.unwrap();
        assert!(figures.agent().is_some());
    }

    #[test]
    fn each_pollers_bodies_delivered_and_cached_are_printed() {
        use crate::telemetry::figures::{Figure, Kind};
        let counter = |key: &str, value| Figure {
            key: key.into(),
            kind: Kind::Counter,
            value: Number::Int(value),
            posted: true,
        };
        let figures = Figures {
            groups: vec![Group {
                target: "meters".into(),
                poller: Some(("meters".into(), "modbus".into())),
                figures: vec![
                    counter("poller_polls", 9),
                    counter("poller_bodies_delivered", 7),
                    counter("poller_bodies_cached", 2),
                ],
            }],
        };
        let seen = Seen::Page {
            url: "http://127.0.0.1:9464".into(),
            health: Ok(()),
        };
        let mut out = Vec::new();
        print(&mut out, 42, &figures, &seen, 1_600_000).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("  meters (modbus): not polled yet; 9 polls, 0 failed, 0 ticks skipped; 0 datapoints posted, 0 dropped; 7 bodies delivered, 2 cached\n"),
            "{text}"
        );
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(ago(850), "850ms");
        assert_eq!(ago(12_400), "12s");
        assert_eq!(ago(250_000), "4m 10s");
    }
}
