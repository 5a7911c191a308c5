//! The HTTP poller against local servers on port 0.
#![cfg(feature = "http")]

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http_server::{endless, serve, serve_tls, test_pki, text};
use pattoo_agentd::config::{Document, YamlPath};
use pattoo_agentd::model::{TargetData, Value};
use pattoo_agentd::pollers::http::{HttpError, HttpPoller, HttpSettings};
use pattoo_agentd::pollers::{PollerEnv, PollerKind};

fn settings(yaml: &str) -> HttpSettings {
    let mut doc = Document::parse(std::path::Path::new("test.yaml"), yaml).unwrap();
    let root = doc.root.clone();
    let kind = PollerKind::parse("http", &mut doc, &YamlPath::root(), &root);
    let errors = doc.into_errors();
    assert!(errors.is_empty(), "{errors:?}");
    match kind {
        Some(PollerKind::Http(settings)) => settings,
        other => panic!("{other:?}"),
    }
}

fn poller(yaml: &str) -> HttpPoller {
    HttpPoller::new(
        "web",
        &settings(yaml),
        &PollerEnv {
            hostname: "this-host".to_owned(),
        },
    )
    .unwrap()
}

/// `target key=value ...` for each target, values as Python writes them.
fn summary(targets: &[TargetData]) -> Vec<String> {
    targets
        .iter()
        .map(|t| {
            let mut line = t.target.clone();
            for dp in &t.datapoints {
                line.push_str(&format!(" {}={}", dp.key, dp.value.to_python_string()));
            }
            line
        })
        .collect()
}

#[tokio::test]
async fn a_json_api_is_read_with_pointers_and_wildcards() {
    let server = serve(|request| async move {
        assert_eq!(request.uri().query(), Some("symbols=ABC%2CXYZ"));
        text(
            200,
            r#"{"quotes": {"ABC": {"price": 12.5}, "XYZ": {"price": "7.25"}}, "market": {"open": true}}"#,
        )
    })
    .await;
    let mut poller = poller(&format!(
        r#"
urls: ["{}"]
query: {{symbols: "ABC,XYZ"}}
format:
  type: json
  values:
    - {{pointer: /quotes/*/price, key: "price_{{*}}", wildcard_metadata: symbol}}
    - {{pointer: /market/open, key: market_open, data_type: int}}
"#,
        server.url("/v1/quotes")
    ));
    let targets = poller.poll().await.unwrap();
    assert_eq!(
        summary(&targets),
        ["127.0.0.1 price_ABC=12.5 price_XYZ=7.25 market_open=1"]
    );
    assert_eq!(targets[0].datapoints[0].metadata[0].value, "ABC");
}

#[tokio::test]
async fn a_prometheus_endpoint_is_read_with_its_target_configured() {
    let server = serve(|_| async {
        text(
            200,
            "# HELP up Whether up.\n# TYPE requests_total counter\nrequests_total{code=\"200\"} 12\nqueue_depth 3.5\n",
        )
    })
    .await;
    let mut poller = poller(&format!(
        "urls: [\"{}\"]\nformat: prometheus\ntarget: exporter-1\n",
        server.url("/metrics")
    ));
    let targets = poller.poll().await.unwrap();
    assert_eq!(
        summary(&targets),
        ["exporter-1 requests_total=12 queue_depth=3.5"]
    );
}

#[tokio::test]
async fn bearer_auth_is_read_from_a_file_and_never_shown() {
    let server = serve(|request| async move {
        match request.headers().get("authorization") {
            Some(value) if value == "Bearer s3cret-token" => text(200, "ok=1\n"),
            _ => text(401, "who are you?"),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let mut poller = poller(&format!(
        "urls: [\"{}\"]\nformat: keyvalue\nauth: {{bearer: {{file: {}}}}}\n",
        server.url("/"),
        token.display()
    ));
    assert_eq!(summary(&poller.poll().await.unwrap()), ["127.0.0.1 ok=1"]);
    let shown = format!("{poller:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");

    std::fs::write(&token, "wrong\n").unwrap();
    let mut refused = self::poller(&format!(
        "urls: [\"{}\"]\nformat: keyvalue\nauth: {{bearer: {{file: {}}}}}\n",
        server.url("/"),
        token.display()
    ));
    let error = refused.poll().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "poller web: GET {}: the server answered 401 Unauthorized",
            server.url("/")
        )
    );
}

#[tokio::test]
async fn a_slow_server_hits_the_timeout() {
    let server = serve(|_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        text(200, "late=1\n")
    })
    .await;
    let mut poller = poller(&format!(
        "urls: [\"{}\"]\nformat: keyvalue\ntimeout_ms: 300\n",
        server.url("/slow")
    ));
    let started = Instant::now();
    let error = poller.poll().await.unwrap_err();
    // The server answers after a minute: any bound well below shows the
    // 300 ms timeout.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(matches!(error, HttpError::Request { .. }), "{error}");
    assert!(
        error.to_string().starts_with(&format!(
            "poller web: GET {}: timed out",
            server.url("/slow")
        )),
        "{error}"
    );
}

#[tokio::test]
async fn an_endless_response_hits_the_size_cap() {
    let server = serve(|_| async { endless() }).await;
    let mut poller = poller(&format!(
        "urls: [\"{}\"]\nformat: keyvalue\nmax_response_bytes: 1048576\n",
        server.url("/forever")
    ));
    let error = poller.poll().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "poller web: GET {}: the response is larger than the limit of 1048576 bytes (max_response_bytes)",
            server.url("/forever")
        )
    );
}

#[tokio::test]
async fn a_redirect_loop_stops_at_the_limit() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let server = serve(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            hyper::Response::builder()
                .status(302)
                .header("location", "/loop")
                .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                    hyper::body::Bytes::new(),
                )))
                .unwrap()
        }
    })
    .await;
    let mut poller = poller(&format!(
        "urls: [\"{}\"]\nformat: keyvalue\nmax_redirects: 3\n",
        server.url("/loop")
    ));
    let error = poller.poll().await.unwrap_err();
    assert!(error.to_string().contains("too many redirects"), "{error}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        4,
        "the first request and 3 redirects"
    );
}

#[tokio::test]
async fn https_works_with_the_ca_file_and_is_refused_without_it() {
    let pki = test_pki();
    let server = serve_tls(|_| async { text(200, "secure=1\n") }, pki.server.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let url = server.https_url("/metrics");

    let mut trusted = poller(&format!(
        "urls: [\"{url}\"]\nformat: keyvalue\ntls: {{ca_file: {}}}\n",
        ca.display()
    ));
    assert_eq!(
        summary(&trusted.poll().await.unwrap()),
        ["localhost secure=1"]
    );

    let mut untrusted = poller(&format!("urls: [\"{url}\"]\nformat: keyvalue\n"));
    let error = untrusted.poll().await.unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("invalid peer certificate: UnknownIssuer"),
        "refused for its certificate: {error}"
    );

    let mut insecure = poller(&format!(
        "urls: [\"{url}\"]\nformat: keyvalue\ntls: {{danger_accept_invalid_certs: true}}\n"
    ));
    assert_eq!(
        summary(&insecure.poll().await.unwrap()),
        ["localhost secure=1"],
        "only the explicitly named option skips verification"
    );
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_the_server_asks_for_one() {
    let pki = test_pki();
    let server = serve_tls(
        |_| async { text(200, "mutual=1\n") },
        pki.server_requiring_client_cert.clone(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca = write("ca.pem", &pki.ca_pem);
    let cert = write("agent.pem", &pki.client_cert_pem);
    let key = write("agent.key", &pki.client_key_pem);
    let url = server.https_url("/");

    let mut with_cert = poller(&format!(
        "urls: [\"{url}\"]\nformat: keyvalue\ntls: {{ca_file: {ca}, client_cert_file: {cert}, client_key_file: {key}}}\n"
    ));
    assert_eq!(
        summary(&with_cert.poll().await.unwrap()),
        ["localhost mutual=1"]
    );

    let mut without = poller(&format!(
        "urls: [\"{url}\"]\nformat: keyvalue\ntls: {{ca_file: {ca}}}\n"
    ));
    assert!(
        without.poll().await.is_err(),
        "the server refuses a client without a certificate"
    );
}

#[tokio::test]
async fn measurements_watch_a_site_with_no_parser_and_report_an_outage_as_down() {
    let server = serve(|_| async { text(200, "hello") }).await;
    // A port that was free a moment ago: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut poller = poller(&format!(
        "urls: [\"{}\", \"http://{closed}/\"]\nmeasurements: true\ntarget: site\n",
        server.url("/")
    ));
    let targets = poller.poll().await.unwrap();
    assert_eq!(targets.len(), 1);
    let lines: Vec<String> = targets[0]
        .datapoints
        .iter()
        .filter(|dp| dp.key != "response_time_ms")
        .map(|dp| {
            format!(
                "{} {}={}",
                dp.metadata[0].value,
                dp.key,
                dp.value.to_python_string()
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            format!("{} http_status=200", server.url("/")),
            format!("{} body_bytes=5", server.url("/")),
            format!("{} up=1", server.url("/")),
            format!("http://{closed}/ up=0"),
        ]
    );
    let response_times = targets[0]
        .datapoints
        .iter()
        .filter(|dp| dp.key == "response_time_ms")
        .count();
    assert_eq!(response_times, 2);
}

#[tokio::test]
async fn one_failing_url_leaves_the_others_datapoints() {
    let server = serve(|request| async move {
        if request.uri().path() == "/good" {
            text(200, "a=1\n")
        } else {
            text(500, "broken")
        }
    })
    .await;
    let mut poller = poller(&format!(
        "urls: [\"{}\", \"{}\"]\nformat: keyvalue\n",
        server.url("/bad"),
        server.url("/good")
    ));
    assert_eq!(summary(&poller.poll().await.unwrap()), ["127.0.0.1 a=1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_concurrent_targets_urls_are_fetched_at_once() {
    const URLS: usize = 6;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let counters = (in_flight.clone(), peak.clone(), started.clone());
    let server = serve(move |_request| {
        let (in_flight, peak, started) = counters.clone();
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            started.fetch_add(1, Ordering::SeqCst);
            // Held until another request is in flight too (or none is left
            // to come), and a little longer: a third the poller let through
            // would be seen here.
            let patience = Instant::now() + Duration::from_secs(5);
            while in_flight.load(Ordering::SeqCst) < 2
                && started.load(Ordering::SeqCst) < URLS
                && Instant::now() < patience
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            text(200, "a=1\n")
        }
    })
    .await;
    let urls: Vec<String> = (0..URLS)
        .map(|n| format!("\"{}\"", server.url(&format!("/u{n}"))))
        .collect();
    let mut poller = poller(&format!(
        "urls: [{}]\nformat: keyvalue\nmax_concurrent_targets: 2\n",
        urls.join(", ")
    ));
    let targets = poller.poll().await.unwrap();
    assert_eq!(targets[0].datapoints.len(), URLS, "every URL was read");
    assert_eq!(started.load(Ordering::SeqCst), URLS);
    assert_eq!(peak.load(Ordering::SeqCst), 2, "requests in flight at once");
}

#[tokio::test]
async fn a_server_error_is_retried_with_backoff() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let server = serve(move |_| {
        let hit = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if hit == 0 {
                text(503, "warming up")
            } else {
                text(200, "a=2\n")
            }
        }
    })
    .await;
    let mut poller = poller(&format!(
        "urls: [\"{}\"]\nformat: keyvalue\nretries: 2\nretry_backoff_ms: 10\n",
        server.url("/")
    ));
    let targets = poller.poll().await.unwrap();
    assert_eq!(targets[0].datapoints[0].value, Value::Int(2));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn configured_headers_and_credentials_do_not_follow_a_redirect_to_another_host() {
    let seen_elsewhere = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&seen_elsewhere);
    let elsewhere = serve(move |request| {
        let mut headers: Vec<String> = request.headers().keys().map(|k| k.to_string()).collect();
        seen.lock().unwrap().append(&mut headers);
        async { text(200, "ok=1\n") }
    })
    .await;
    let target = elsewhere.url("/data");
    let origin = serve(move |request| {
        let has_key = request
            .headers()
            .get("x-api-key")
            .is_some_and(|v| v == "k3y");
        let target = target.clone();
        async move {
            if !has_key {
                return text(401, "no key");
            }
            hyper::Response::builder()
                .status(302)
                .header("location", target)
                .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                    hyper::body::Bytes::new(),
                )))
                .unwrap()
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let mut poller = poller(&format!(
        "urls: [\"{}\"]\nformat: keyvalue\nheaders: {{X-Api-Key: k3y}}\nauth: {{bearer: {{file: {}}}}}\n",
        origin.url("/start"),
        token.display()
    ));
    assert_eq!(summary(&poller.poll().await.unwrap()).len(), 1);
    let seen = seen_elsewhere.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the redirect was followed");
    assert!(!seen.iter().any(|h| h == "x-api-key"), "{seen:?}");
    assert!(!seen.iter().any(|h| h == "authorization"), "{seen:?}");
}

#[tokio::test]
async fn secret_looking_query_values_are_redacted_in_url_metadata_whose_key_can_be_named() {
    let server = serve(|request| async move {
        // The server itself gets the real value.
        assert_eq!(request.uri().query(), Some("token=abc123&site=north"));
        text(200, "")
    })
    .await;
    let url = server.url("/status?token=abc123&site=north");
    for (extra, key) in [
        ("", Some("url")),
        ("url_metadata: endpoint\n", Some("endpoint")),
        ("url_metadata: false\n", None),
    ] {
        let mut poller = poller(&format!("urls: [\"{url}\"]\nmeasurements: true\n{extra}"));
        let targets = poller.poll().await.unwrap();
        let datapoint = &targets[0].datapoints[0];
        let shown: Vec<(String, String)> = datapoint
            .metadata
            .iter()
            .map(|m| (m.key.to_string(), m.value.to_string()))
            .collect();
        match key {
            Some(key) => assert_eq!(
                shown,
                [(
                    key.to_owned(),
                    server.url("/status?token=REDACTED&site=north")
                )]
            ),
            None => assert!(shown.is_empty(), "{shown:?}"),
        }
    }
}

/// On a system without the ca-certificates package a client that may meet
/// https cannot load the system's roots; one polling plain http URLs does
/// not need them. The agent runs in a child process so that the variables
/// hiding the roots do not reach the other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_urls_are_polled_on_a_system_without_ca_certificates() {
    let server = serve(|_| async { text(200, "queue_depth 3.5\n") }).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_directory: {d}/log\n  cache_directory: {d}/cache\n  daemon_directory: {d}/daemon\n\
             pattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: 20201\n"
        ),
    )
    .unwrap();
    // Redirects allowed (the default): the roots would be used if there
    // were any.
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        format!(
            "pattoo_agentd:\n  hostname: test-host\n  pollers:\n    - name: exporter\n      type: http\n      urls: [\"{}\"]\n      format: prometheus\n",
            server.url("/metrics")
        ),
    )
    .unwrap();
    let config = dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        common::agentd(&config)
            .args(["once", "--print"])
            .env("SSL_CERT_FILE", "/nonexistent/ca-certificates.crt")
            .env("SSL_CERT_DIR", "/nonexistent/certs")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("queue_depth"), "{stdout}");
}
