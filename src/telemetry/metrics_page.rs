//! The optional metrics page (`metrics_listen:`): `GET /metrics` serves the
//! agent's [`Figures`] in the OpenMetrics text format (which Prometheus
//! reads), `GET /health` answers 200 while the watchdog would be fed and
//! 503 with the reason otherwise.
//!
//! It faces whatever can reach the address, so it is bounded: at most
//! [`MAX_CONNECTIONS`] served at once, at most [`MAX_WAITING`] more waiting
//! up to [`WAIT_FOR_SLOT`] for one of those (more are closed at once), a
//! connection that sends no complete request head for [`HEAD_TIMEOUT`]
//! (idle at the start or between requests) is closed, request heads of at
//! most [`MAX_HEAD_BYTES`], a request body is never read, and a connection
//! lives at most [`CONNECTION_LIFETIME`] however slowly its peer talks. So
//! idle connections cannot keep `/health` from answering for long: a probe
//! waits for the first of them to reach its deadline.
//!
//! A request carrying [`CHALLENGE_HEADER`] gets [`PROOF_HEADER`] back, the
//! challenge keyed with the daemon's token ([`Token::prove`]): how
//! `pattoo-agentd status` knows it reads this configuration's agent.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::figures::{Figure, Figures, Group, Kind, Number};
use super::state::Token;
use crate::formats::{self, FormatError, Payload};
use crate::model::{DataType, Value};

pub const MAX_CONNECTIONS: usize = 8;
pub const MAX_WAITING: usize = 32;
pub const WAIT_FOR_SLOT: Duration = Duration::from_secs(10);
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Prefixed to every figure's key on the page.
pub const PREFIX: &str = "pattoo_agentd_";
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A request header: any text, at most [`MAX_CHALLENGE_BYTES`].
pub const CHALLENGE_HEADER: &str = "x-pattoo-agentd-challenge";
/// The response header answering it: [`Token::prove`] of the challenge.
pub const PROOF_HEADER: &str = "x-pattoo-agentd-proof";
pub const MAX_CHALLENGE_BYTES: usize = 128;

/// What the page shows; the daemon implements it.
pub trait Source: Send + Sync + 'static {
    fn figures(&self) -> Figures;
    /// `Err(what is stuck)` when the watchdog would not be fed.
    fn health(&self) -> Result<(), String>;
}

/// Renders `figures` as OpenMetrics text.
pub fn render(figures: &Figures) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Page(families(figures))));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

/// Figures grouped by key, in first-seen order: one metric family each.
#[derive(Debug)]
struct Family {
    name: String,
    kind: Kind,
    samples: Vec<(Option<(String, String)>, Number)>,
}

fn families(figures: &Figures) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for group in &figures.groups {
        for figure in &group.figures {
            let sample = (group.poller.clone(), figure.value);
            match families
                .iter_mut()
                .find(|f| f.name[PREFIX.len()..] == figure.key)
            {
                Some(family) => family.samples.push(sample),
                None => families.push(Family {
                    name: format!("{PREFIX}{}", figure.key),
                    kind: figure.kind,
                    samples: vec![sample],
                }),
            }
        }
    }
    families
}

#[derive(Debug)]
struct Page(Vec<Family>);

impl Collector for Page {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let metric_type = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let help = help(&family.name[PREFIX.len()..]);
            let mut metric = encoder.encode_descriptor(&family.name, help, None, metric_type)?;
            for (poller, value) in &family.samples {
                let labels;
                let none: [(&str, &str); 0] = [];
                let sample = match poller {
                    Some((name, kind)) => {
                        labels = [("poller", escape(name)), ("poller_type", escape(kind))];
                        metric.encode_family(&labels)?
                    }
                    None => metric.encode_family(&none)?,
                };
                match (family.kind, *value) {
                    (Kind::Counter, Number::Int(v)) => ConstCounter::new(v).encode(sample)?,
                    (Kind::Counter, Number::Float(v)) => ConstCounter::new(v).encode(sample)?,
                    (Kind::Gauge, Number::Int(v)) => ConstGauge::new(v as i64).encode(sample)?,
                    (Kind::Gauge, Number::Float(v)) => ConstGauge::new(v).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

/// A label value as the exposition format quotes it; prometheus-client
/// writes label values as they are, and a poller's name may hold a `"`.
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn help(key: &str) -> &'static str {
    match key {
        "poller_polls" => "Polls run to the end.",
        "poller_polls_failed" => {
            "Polls that produced no body: the poll failed or read nothing valid."
        }
        "poller_ticks_skipped" => "Ticks skipped because the poll before was still running.",
        "poller_last_poll_duration_ms" => "How long the last poll took, in milliseconds.",
        "poller_datapoints_posted" => {
            "Datapoints handed to delivery (posted, or cached to be posted)."
        }
        "poller_datapoints_dropped" => "Datapoints read but left out of the body.",
        "poller_seconds_since_success" => {
            "Seconds since the last poll that produced a body (since start if none has)."
        }
        "poller_bodies_delivered" => "The poller's bodies the pattoo server took when first posted.",
        "poller_bodies_cached" => {
            "The poller's bodies written to the cache instead, to be replayed."
        }
        "poller_interval_seconds" => "The poller's polling interval.",
        "poller_last_poll_timestamp_seconds" => "When the last poll ended.",
        "poller_next_tick_timestamp_seconds" => "When the next poll is due.",
        "delivery_bodies_posted" => "Live bodies the pattoo server took.",
        "delivery_bodies_cached" => "Live bodies written to the cache instead.",
        "delivery_bodies_replayed" => "Cached bodies the pattoo server took.",
        "delivery_bodies_quarantined" => "Cache files moved to quarantine as invalid.",
        "delivery_bodies_dropped" => {
            "Cached bodies deleted by the cache bounds (max_bytes, max_age)."
        }
        "delivery_bodies_lost" => "Bodies neither delivered nor cached.",
        "cache_files" => "Bodies waiting in the cache.",
        "cache_bytes" => "Bytes waiting in the cache.",
        "cache_oldest_age_seconds" => "Age of the oldest cached body (0 when the cache is empty).",
        "server_reachable" => "1 while the pattoo server takes posts, 0 while it is backed off; absent until a post has had a result.",
        "process_resident_bytes" => "Resident memory.",
        "process_cpu_seconds" => "CPU time used, user and system.",
        "process_open_fds" => "Open file descriptors.",
        "process_uptime_seconds" => "Seconds since the agent started.",
        "process_start_timestamp_seconds" => "When the agent started.",
        "config_reloads" => "Reloads that swapped in a new configuration.",
        "config_last_reload_refused" => {
            "1 if the last reload was refused and the previous configuration runs."
        }
        _ => "",
    }
}

/// Serves the page on `listener` until `stop` turns true, answering
/// challenges with `token` when there is one.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn Source>,
    token: Option<Token>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    let token = token.map(Arc::new);
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "metrics page: cannot accept a connection");
                // Out of descriptors: let some close before trying again.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (source, token) = (source.clone(), token.clone());
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            tokio::spawn(async move {
                answer(stream, source, token).await;
                drop(slot);
            });
            continue;
        }
        // All slots taken: wait in line (fairly, first come first served)
        // for one to free up; over the line's length, closed unanswered,
        // so a flood costs nothing.
        let Ok(place) = waiting.clone().try_acquire_owned() else {
            continue;
        };
        let slots = slots.clone();
        tokio::spawn(async move {
            let slot = tokio::time::timeout(WAIT_FOR_SLOT, slots.acquire_owned()).await;
            drop(place);
            if let Ok(Ok(slot)) = slot {
                answer(stream, source, token).await;
                drop(slot);
            }
        });
    }
}

/// Serves one connection within the page's bounds.
async fn answer(stream: tokio::net::TcpStream, source: Arc<dyn Source>, token: Option<Arc<Token>>) {
    let service = hyper::service::service_fn(move |request| {
        let (source, token) = (source.clone(), token.clone());
        async move { Ok::<_, Infallible>(respond(source.as_ref(), token.as_deref(), &request)) }
    });
    // hyper's header read timeout runs from when it starts waiting for a
    // request head, at the start and again between requests: an idle
    // connection is closed after HEAD_TIMEOUT.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
}

fn respond(
    source: &dyn Source,
    token: Option<&Token>,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let proof =
        token
            .zip(request.headers().get(CHALLENGE_HEADER))
            .and_then(|(token, challenge)| {
                (challenge.len() <= MAX_CHALLENGE_BYTES).then(|| token.prove(challenge.as_bytes()))
            });
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_str(content_type).expect("a valid header"),
        );
        if let Some(proof) = &proof {
            headers.insert(
                PROOF_HEADER,
                hyper::header::HeaderValue::from_str(proof).expect("hex is a valid header"),
            );
        }
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n".to_owned(),
        );
    }
    match request.uri().path() {
        "/metrics" => reply(StatusCode::OK, CONTENT_TYPE, render(&source.figures())),
        "/health" => match source.health() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Err(what) => {
                let mut body = String::new();
                let _ = writeln!(body, "unhealthy: {what}");
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body)
            }
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /health\n".to_owned(),
        ),
    }
}

/// The page back into [`Figures`] (`status` reads it so), through the
/// Prometheus parser the `prometheus` format uses: samples labelled with a poller become that
/// poller's group, the rest the agent's.
pub fn parse(text: &[u8]) -> Result<Figures, FormatError> {
    let parsed = formats::prometheus::parse(&Payload {
        bytes: text,
        default_target: "",
        read_at_ms: 0,
        exit_status: None,
    })?;
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
            Value::UInt128(v) => Number::Float(v.get() as f64),
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
        let target = poller
            .as_ref()
            .map_or_else(|| super::figures::AGENT_TARGET.to_owned(), |p| p.0.clone());
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::counters::{PollerCounters, ProcessCounters};
    use crate::delivery::StatsSnapshot;
    use crate::model::{DataType, Value};
    use crate::telemetry::figures::{PollerEntry, Sources};

    struct Fixed {
        figures: Figures,
        health: Mutex<Result<(), String>>,
    }

    impl Source for Fixed {
        fn figures(&self) -> Figures {
            self.figures.clone()
        }
        fn health(&self) -> Result<(), String> {
            self.health.lock().unwrap().clone()
        }
    }

    fn figures() -> Figures {
        let meters = Arc::new(PollerCounters::default());
        meters.record_poll(1_590_000, 120, Some(10_000), 3);
        meters.record_poll(1_595_000, 130, None, 0);
        meters.skipped_ticks.store(2, Ordering::Relaxed);
        meters.next_tick_ms.store(1_605_000, Ordering::Relaxed);
        let host = Arc::new(PollerCounters::default());
        host.record_poll(1_599_000, 8, Some(5), 0);
        let pollers = [
            PollerEntry {
                name: "meters".into(),
                kind: "modbus_tcp",
                interval: Duration::from_secs(5),
                counters: meters,
            },
            PollerEntry {
                name: "host".into(),
                kind: "command",
                interval: Duration::from_millis(10_500),
                counters: host,
            },
        ];
        let delivery = StatsSnapshot {
            posted: 7,
            cached: 3,
            replayed: 1,
            dropped: 1,
            cached_files: 2,
            cached_bytes: 40_960,
            oldest_cached_ms: Some(1_540_000),
            ..StatsSnapshot::default()
        };
        let process = ProcessCounters::default();
        process.reloads.store(1, Ordering::Relaxed);
        Figures::read(&Sources {
            pollers: &pollers,
            delivery: &delivery,
            server_reachable: Some(true),
            process: &process,
            started_ms: 1_000_000,
            now_ms: 1_600_000,
        })
    }

    #[test]
    fn the_page_read_back_by_the_prometheus_parser_agrees_with_the_self_monitoring_body() {
        let figures = figures();
        let page = render(&figures);
        assert!(
            page.contains("# TYPE pattoo_agentd_poller_polls counter"),
            "{page}"
        );
        assert!(
            page.contains(
                "pattoo_agentd_poller_polls_total{poller=\"meters\",poller_type=\"modbus_tcp\"} 2"
            ),
            "{page}"
        );
        assert!(page.ends_with("# EOF\n"), "{page}");
        let scraped = parse(page.as_bytes()).unwrap();

        // Every datapoint of the body has its sample on the page, with the
        // same value, under the same poller, as a counter exactly when the
        // body says counter64.
        let targets = figures.targets(1_600_000);
        let mut compared = 0;
        for target in &targets {
            for datapoint in &target.datapoints {
                let poller = datapoint
                    .metadata
                    .iter()
                    .find(|m| m.key == "poller")
                    .map(|m| m.value.to_string());
                let group = scraped
                    .groups
                    .iter()
                    .find(|g| g.poller.as_ref().map(|p| &p.0) == poller.as_ref())
                    .unwrap_or_else(|| panic!("no group for {poller:?}"));
                let figure = group
                    .figures
                    .iter()
                    .find(|f| f.key == datapoint.key)
                    .unwrap_or_else(|| panic!("{} missing from the page", datapoint.key));
                let body_value = match datapoint.value {
                    Value::UInt(v) => v as f64,
                    Value::UInt128(v) => v.get() as f64,
                    Value::Int(v) => v as f64,
                    Value::Float(v) => v,
                    Value::Text(_) => unreachable!(),
                };
                assert_eq!(figure.value.as_f64(), body_value, "{}", datapoint.key);
                assert_eq!(
                    figure.kind == Kind::Counter,
                    datapoint.data_type == DataType::Counter64,
                    "{}",
                    datapoint.key
                );
                compared += 1;
            }
        }
        assert!(compared >= 30, "compared only {compared}");
        // And the figures only the page has are there too.
        let meters = scraped
            .groups
            .iter()
            .find(|g| g.target == "meters")
            .unwrap();
        assert_eq!(
            meters.get("poller_next_tick_timestamp_seconds"),
            Some(Number::Float(1605.0))
        );
        let host = scraped.groups.iter().find(|g| g.target == "host").unwrap();
        assert_eq!(
            host.get("poller_interval_seconds"),
            Some(Number::Float(10.5))
        );
    }

    #[test]
    fn poller_names_with_quotes_and_backslashes_survive_the_page() {
        let mut figures = figures();
        let odd = "meter \"A\" \\ hall\n2".to_owned();
        figures.groups[0].poller = Some((odd.clone(), "modbus_tcp".into()));
        let scraped = parse(render(&figures).as_bytes()).unwrap();
        assert_eq!(
            scraped.groups[0].poller,
            Some((odd, "modbus_tcp".to_owned()))
        );
    }

    async fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .expect("the page answers and closes");
        String::from_utf8_lossy(&response).into_owned()
    }

    fn ask(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn health_says_503_with_the_reason_while_the_agent_is_stuck_and_the_page_is_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = Arc::new(Fixed {
            figures: figures(),
            health: Mutex::new(Ok(())),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, source.clone(), None, stopped));

        let healthy = get(addr, ask("/health").as_bytes()).await;
        assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
        *source.health.lock().unwrap() =
            Err("poller meter has been in one poll for 400000 ms".into());
        let stuck = get(addr, ask("/health").as_bytes()).await;
        assert!(stuck.starts_with("HTTP/1.1 503"), "{stuck}");
        assert!(stuck.contains("poller meter"), "{stuck}");

        let metrics = get(addr, ask("/metrics").as_bytes()).await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("application/openmetrics-text"),
            "{metrics}"
        );
        let missing = get(addr, ask("/other").as_bytes()).await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(
            addr,
            b"POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        // A head larger than the limit is refused, not buffered.
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES * 4)
        );
        let refused = get(addr, huge.as_bytes()).await;
        assert!(!refused.starts_with("HTTP/1.1 200"), "{refused}");

        // Connections over the limit and the line waiting for a slot are
        // closed at once, and the page still answers once the idle ones go.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS + MAX_WAITING {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buffer = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut buffer))
            .await
            .expect("an extra connection is closed, not left waiting");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        drop(idle);
        let again = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let answer = get(addr, ask("/health").as_bytes()).await;
                if answer.starts_with("HTTP/1.1 503") {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the page answers again");
        assert!(again.contains("poller meter"));

        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn idle_connections_holding_every_slot_are_closed_at_their_deadline_and_health_still_answers(
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = Arc::new(Fixed {
            figures: figures(),
            health: Mutex::new(Ok(())),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, source, None, stopped));

        // Every slot held by a connection that never says anything; the
        // page accepts in the order connections were made, so these hold
        // the slots before the probe arrives.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let health = tokio::time::timeout(
            Duration::from_secs(30),
            get(addr, ask("/health").as_bytes()),
        )
        .await
        .expect("health answers while idle connections hold the page");
        assert!(health.starts_with("HTTP/1.1 200"), "{health:?}");

        // The idle ones were closed by the page, not left open.
        for mut stream in idle {
            let mut buffer = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
                .await
                .expect("an idle connection is closed at its deadline");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_challenge_is_answered_with_the_tokens_proof_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let token = Token::create(dir.path()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = Arc::new(Fixed {
            figures: figures(),
            health: Mutex::new(Ok(())),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, source, Some(token.clone()), stopped));
        let challenged = |path: &str, challenge: &str| {
            format!(
                "GET {path} HTTP/1.1\r\nhost: x\r\n{CHALLENGE_HEADER}: {challenge}\r\nconnection: close\r\n\r\n"
            )
        };
        for path in ["/metrics", "/health"] {
            let answer = get(addr, challenged(path, "abc123").as_bytes()).await;
            let proof = format!("{PROOF_HEADER}: {}", token.prove(b"abc123"));
            assert!(answer.contains(&proof), "{answer}");
        }
        let plain = get(addr, ask("/metrics").as_bytes()).await;
        assert!(!plain.contains(PROOF_HEADER), "{plain}");
        let long = get(
            addr,
            challenged("/health", &"a".repeat(MAX_CHALLENGE_BYTES + 1)).as_bytes(),
        )
        .await;
        assert!(!long.contains(PROOF_HEADER), "{long}");
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
