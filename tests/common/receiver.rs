//! Shared helpers for the integration tests: a pattoo receiver on loopback
//! whose behaviour the test controls, and valid bodies to send it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use pattoo_agentd::config::ApiSettings;
use pattoo_agentd::delivery::config::{CacheSettings, DeliverySettings};
use pattoo_agentd::delivery::receiver::Receiver;
use pattoo_agentd::delivery::Delivery;
use pattoo_agentd::model::{self, AgentContext, DataPoint, DataType, PostBody, TargetData, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub const AGENT: &str = "0f9a1b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a";

/// How the test server treats each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A pattoo receiver: valid bodies get 200 and are stored.
    Accept,
    /// Every request gets this status.
    Status(u16),
    /// This status with `Retry-After: seconds`.
    RetryAfter(u16, u64),
    /// The connection is accepted and the request read, but nothing is
    /// ever answered.
    Hang,
    /// A 200 status line and headers promising a body, then the connection
    /// is closed half way.
    CloseMidResponse,
    /// `307 Temporary Redirect` to the same path on another port.
    RedirectTo(u16),
    /// A pattoo receiver, except that a body containing the text gets the
    /// status instead (nginx's 413, a server error on one body).
    RefuseContaining(&'static str, u16),
}

struct Shared {
    mode: Mutex<Mode>,
    receiver: Arc<Receiver>,
    attempts: AtomicUsize,
    accept: Mutex<Option<AbortHandle>>,
    connections: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    fn track(&self, handle: AbortHandle) {
        let mut tasks = self.connections.lock().unwrap();
        tasks.retain(|task| !task.is_finished());
        tasks.push(handle);
    }

    fn close_connections(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn close_listener(&self) {
        if let Some(accept) = self.accept.lock().unwrap().take() {
            accept.abort();
        }
    }

    async fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        // The mode is read before the attempt is counted: a test that waits
        // for an attempt and then changes the mode must not change how that
        // attempt is answered.
        let mode = self.mode();
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let status = |code: u16| {
            let mut response =
                Response::new(Full::new(Bytes::from_static(b"failing on purpose\n")));
            *response.status_mut() = StatusCode::from_u16(code).unwrap();
            response
        };
        match mode {
            Mode::Accept => self.receiver.respond(request).await,
            Mode::Status(code) => {
                let _ = request.into_body().collect().await;
                status(code)
            }
            Mode::RetryAfter(code, seconds) => {
                let _ = request.into_body().collect().await;
                let mut response = status(code);
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().unwrap());
                response
            }
            Mode::RedirectTo(port) => {
                let location = format!("http://127.0.0.1:{port}{}", request.uri().path());
                let _ = request.into_body().collect().await;
                let mut response = status(307);
                response
                    .headers_mut()
                    .insert("location", location.parse().unwrap());
                response
            }
            Mode::RefuseContaining(text, code) => {
                let (parts, body) = request.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if bytes.windows(text.len()).any(|w| w == text.as_bytes()) {
                    return status(code);
                }
                let content_type = parts
                    .headers
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                let (code, reason) =
                    self.receiver
                        .handle(&parts.method, parts.uri.path(), content_type, &bytes);
                let mut response = Response::new(Full::new(Bytes::from(reason + "\n")));
                *response.status_mut() = code;
                response
            }
            Mode::Hang | Mode::CloseMidResponse => std::future::pending().await,
        }
    }
}

/// A receiver on 127.0.0.1 that the test can stop, restart and make
/// misbehave.
pub struct TestServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Arc::new(Receiver::new(dir.path()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = TestServer {
            addr,
            shared: Arc::new(Shared {
                mode: Mutex::new(Mode::Accept),
                receiver,
                attempts: AtomicUsize::new(0),
                accept: Mutex::new(None),
                connections: Mutex::new(Vec::new()),
            }),
            dir,
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let connection = tokio::spawn(connection(stream, shared.clone()));
                shared.track(connection.abort_handle());
            }
        });
        *self.shared.accept.lock().unwrap() = Some(accept.abort_handle());
    }

    /// Changes behaviour; open connections are closed so the next request
    /// sees the new mode.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        self.shared.close_connections();
    }

    /// Closes the listener and every connection: connections are refused.
    pub fn stop(&self) {
        self.shared.close_listener();
        self.shared.close_connections();
    }

    /// Listens again on the same port, in `mode`.
    pub async fn resume(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        // The aborted accept task drops the old listener on its next poll.
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        self.serve(listener);
    }

    /// Requests that reached the HTTP layer.
    pub fn attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    pub fn api(&self) -> ApiSettings {
        ApiSettings {
            ip_address: self.addr.ip().to_string(),
            ip_bind_port: self.addr.port(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every body stored, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        received(self.dir.path())
    }

    /// Waits (polling) until at least `count` bodies have arrived.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= count || tokio::time::Instant::now() > deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    if shared.mode() == Mode::CloseMidResponse {
        shared.attempts.fetch_add(1, Ordering::SeqCst);
        let mut request = vec![0u8; 65536];
        let _ = stream.read(&mut request).await;
        let _ = stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\nO",
            )
            .await;
        let _ = stream.flush().await;
        return; // dropping the stream closes it 99 bytes short
    }
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(shared.respond(request).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// One body the receiver stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub arrival: u64,
    pub timestamp_ms: u64,
    pub agent_id: String,
    pub bytes: Vec<u8>,
}

/// Reads a receiver directory, in order of arrival.
pub fn received(dir: &Path) -> Vec<Received> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let mut parts = name.trim_end_matches(".json").splitn(3, '_');
            let arrival = parts.next()?.parse().ok()?;
            let timestamp_ms = parts.next()?.parse().ok()?;
            let agent_id = parts.next()?.to_owned();
            let bytes = std::fs::read(dir.join(&name)).ok()?;
            Some(Received {
                arrival,
                timestamp_ms,
                agent_id,
                bytes,
            })
        })
        .collect()
}

/// A valid body of one datapoint.
pub fn body(timestamp_ms: u64, value: i64) -> PostBody {
    body_for(AGENT, timestamp_ms, value)
}

pub fn body_for(agent_id: &str, timestamp_ms: u64, value: i64) -> PostBody {
    let mut target = TargetData::new("device-1");
    target.datapoints.push(DataPoint::new(
        "reading",
        Value::Int(value),
        DataType::Int,
        timestamp_ms,
    ));
    let agent = AgentContext {
        agent_id,
        agent_program: "pattoo_agentd_test",
        hostname: "test-host",
        polling_interval_ms: 10_000,
    };
    model::build(&agent, timestamp_ms, &[target]).body.unwrap()
}

/// Settings that keep tests quick: short timeouts and backoff.
pub fn quick_settings() -> DeliverySettings {
    DeliverySettings {
        timeout: Duration::from_millis(500),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..DeliverySettings::default()
    }
}

pub fn delivery(server: &TestServer, cache_dir: &Path) -> Delivery {
    delivery_with(
        server,
        cache_dir,
        quick_settings(),
        CacheSettings::default(),
    )
}

pub fn delivery_with(
    server: &TestServer,
    cache_dir: &Path,
    settings: DeliverySettings,
    cache: CacheSettings,
) -> Delivery {
    Delivery::from_parts(&server.api(), cache_dir, &settings, &cache).unwrap()
}

/// Cached `*.json` files for [`AGENT`], by name.
pub fn cached_files(cache_dir: &Path) -> Vec<PathBuf> {
    let dir = cache_dir.join(AGENT);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Milliseconds now, as the agent stamps bodies.
pub fn now_ms() -> u64 {
    pattoo_agentd::time::now_ms()
}

/// Makes `server` flap until `flapping` is cleared, each state lasting a
/// random span in `pause_ms`: accepting, refusing connections, answering
/// 500. It is left accepting.
pub async fn flap(
    server: Arc<TestServer>,
    flapping: Arc<AtomicBool>,
    pause_ms: std::ops::Range<u64>,
) {
    let mut up = true;
    while flapping.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(pause_ms.clone()))).await;
        match fastrand::u8(0..4) {
            0 | 1 => {
                if !up {
                    server.resume(Mode::Accept).await;
                }
                server.set_mode(Mode::Accept);
                up = true;
            }
            2 => {
                if up {
                    server.stop();
                }
                up = false;
            }
            _ => {
                if !up {
                    server.resume(Mode::Status(500)).await;
                }
                server.set_mode(Mode::Status(500));
                up = true;
            }
        }
    }
    if !up {
        server.resume(Mode::Accept).await;
    }
    server.set_mode(Mode::Accept);
}
