//! The spoke server: answers `GET /{route}/{interval}` with a fresh poll of
//! one poller, as the Python `pattoo_agent_os_spoked` answers its hub.
//!
//! Each request polls the spoke's poller once (polls never overlap: one
//! poller, so one `cpu_times_percent` baseline, where each of the Python
//! spoke's gunicorn workers keeps its own) and answers `200` with
//! `Content-Type: application/json` and the post body of that poll as
//! Flask's `jsonify` writes it: compact, keys sorted (pair ids as numbers),
//! non-ASCII as `\uXXXX`, a trailing newline; `pattoo_agent_polling_interval`
//! is the interval asked for × 1000. A hub, Python or this agent's, relays
//! it as it relays a Python spoke's answer.
//!
//! As Flask does: `HEAD` answers the same headers without a body; `OPTIONS`
//! answers `200` with `Allow: GET, HEAD, OPTIONS`; another method on the
//! route is `405`, any other path `404`. `/{route}/0` answers a body with no
//! datapoints (the Python spoke's answer to it) without polling. A poll
//! that fails is `500`, its reason logged (not sent); a poll that read
//! nothing valid answers a body with no datapoints, as Python's does.
//!
//! It faces whatever can reach its address, so it is bounded: at most
//! `max_connections` connections served at once, at most four times as
//! many waiting up to [`WAIT_FOR_SLOT`] for one of those (more are closed
//! at once), request heads of at most [`MAX_HEAD_BYTES`] arriving within
//! [`HEAD_TIMEOUT`], and each connection living at most
//! `request_timeout_ms` (a poll still running then is cancelled). With an
//! `allow` list, other clients get `403` and no poll.

pub mod config;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex, Semaphore};

pub use config::{drop_ins, Network, SpokeDropIn, SpokeSettings, DROP_INS};

use crate::collector::{Collector, NoBody};
use crate::model::python_json::{self, Json, PyStr};
use crate::pollers::PollerEnv;
use crate::time::now_ms;

pub const WAIT_FOR_SLOT: Duration = Duration::from_secs(10);
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";

/// A spoke server: its settings and the poller it polls per request.
pub struct Spoke {
    name: String,
    route: String,
    allow: Vec<Network>,
    max_connections: usize,
    request_timeout: Duration,
    agent_id: String,
    collector: Mutex<Collector>,
}

/// Listens on the spoke's address; a port already taken (or an address
/// not on this host) is an error saying so.
pub async fn listen(settings: &SpokeSettings) -> anyhow::Result<TcpListener> {
    TcpListener::bind(settings.listen).await.with_context(|| {
        format!(
            "spoke {}: cannot listen on {}; choose a free address and port (another program, or a Python spoke, may hold it)",
            settings.poller.name, settings.listen
        )
    })
}

impl Spoke {
    /// The spoke for `settings`, its poller built (no network I/O) to post
    /// as `agent_id`.
    pub fn new(
        settings: &SpokeSettings,
        agent_id: String,
        env: &PollerEnv,
    ) -> anyhow::Result<Spoke> {
        let mut collector = Collector::new(&settings.poller, agent_id.clone(), env)?;
        collector.never_split();
        Ok(Spoke {
            name: settings.poller.name.clone(),
            route: settings.route.clone(),
            allow: settings.allow.clone(),
            max_connections: settings.max_connections,
            request_timeout: settings.request_timeout,
            agent_id,
            collector: Mutex::new(collector),
        })
    }

    /// Serves connections from `listener` until `stop` turns true.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.max_connections.max(1)));
        let waiting = Arc::new(Semaphore::new(self.max_connections.max(1) * 4));
        if let Ok(address) = listener.local_addr() {
            tracing::info!(spoke = %self.name, %address, "spoke serving http://{address}/{}/<interval>", self.route);
        }
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(spoke = %self.name, %error, "cannot accept a connection");
                    // Out of descriptors: let some close before trying again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let spoke = self.clone();
            if let Ok(slot) = slots.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    spoke.connection(stream, peer).await;
                    drop(slot);
                });
                continue;
            }
            // All slots taken: wait in line, first come first served; over
            // the line's length, closed unanswered.
            let Ok(place) = waiting.clone().try_acquire_owned() else {
                tracing::debug!(spoke = %self.name, %peer, "too many connections; one closed unanswered");
                continue;
            };
            let slots = slots.clone();
            tokio::spawn(async move {
                let slot = tokio::time::timeout(WAIT_FOR_SLOT, slots.acquire_owned()).await;
                drop(place);
                if let Ok(Ok(slot)) = slot {
                    spoke.connection(stream, peer).await;
                    drop(slot);
                }
            });
        }
    }

    async fn connection(self: Arc<Self>, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let lifetime = self.request_timeout;
        let service = hyper::service::service_fn(move |request| {
            let spoke = self.clone();
            async move { Ok::<_, Infallible>(spoke.respond(peer.ip(), &request).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        if tokio::time::timeout(lifetime, connection).await.is_err() {
            tracing::warn!(%peer, "spoke: a connection was closed after request_timeout_ms ({lifetime:?}); a poll still running was cancelled");
        }
    }

    /// The answer to one request from `client`.
    async fn respond(&self, client: IpAddr, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(client)) {
            tracing::debug!(spoke = %self.name, %client, "a client not in `allow` was refused");
            return page(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "This client may not ask this spoke.",
            );
        }
        let Some(interval) = self.interval(request.uri().path()) else {
            return page(
                StatusCode::NOT_FOUND,
                "Not Found",
                "The requested URL was not found on the server.",
            );
        };
        match *request.method() {
            Method::GET | Method::HEAD => {}
            Method::OPTIONS => {
                let mut response = Response::new(Full::new(Bytes::new()));
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
                return response;
            }
            _ => {
                let mut response = page(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method Not Allowed",
                    "The method is not allowed for the requested URL.",
                );
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
                return response;
            }
        }
        match self.answer(interval).await {
            Some(text) => {
                let mut response = Response::new(Full::new(Bytes::from(text)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            None => page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "The server encountered an internal error and was unable to complete your request.",
            ),
        }
    }

    /// The interval (seconds) a path asks for, if it is this spoke's route
    /// followed by digits, as Werkzeug's `int` converter takes them.
    fn interval(&self, path: &str) -> Option<u64> {
        let digits = path
            .strip_prefix('/')?
            .strip_prefix(self.route.as_str())?
            .strip_prefix('/')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits
            .parse::<u64>()
            .ok()
            .filter(|s| s.checked_mul(1000).is_some())
    }

    /// The JSON text of a fresh poll's body for `interval` seconds, or
    /// `None` when the poll failed (logged).
    async fn answer(&self, interval: u64) -> Option<String> {
        if interval == 0 {
            return Some(python_json::jsonify(&empty_body(&self.agent_id, 0)));
        }
        let polled = self
            .collector
            .lock()
            .await
            .collect_with_interval(interval * 1000)
            .await;
        match polled {
            Ok(bodies) if bodies.len() == 1 => match python_json::loads(&bodies[0].json) {
                Ok(value) => Some(python_json::jsonify(&value)),
                Err(error) => {
                    tracing::error!(spoke = %self.name, "the poll's body is not JSON ({error}); this is a bug");
                    None
                }
            },
            Ok(bodies) => {
                tracing::warn!(spoke = %self.name, bodies = bodies.len(), "the poll gave several bodies (relayed ones); a spoke answers with one, so it answered 500");
                None
            }
            Err(NoBody::NothingValid { .. }) => Some(python_json::jsonify(&empty_body(
                &self.agent_id,
                interval * 1000,
            ))),
            Err(NoBody::PollFailed(_)) => None,
        }
    }
}

/// A post body without datapoints: what the Python spoke answers when it
/// has none.
fn empty_body(agent_id: &str, polling_interval_ms: u64) -> Json {
    let text = |s: &str| PyStr::from(s);
    Json::Object(vec![
        (text("pattoo_agent_id"), Json::Str(text(agent_id))),
        (
            text("pattoo_agent_polling_interval"),
            Json::Int(polling_interval_ms.to_string()),
        ),
        (
            text("pattoo_agent_timestamp"),
            Json::Int(now_ms().to_string()),
        ),
        (
            text("pattoo_datapoints"),
            Json::Object(vec![
                (text("datapoint_pairs"), Json::Array(Vec::new())),
                (text("key_value_pairs"), Json::Object(Vec::new())),
            ]),
        ),
    ])
}

/// An HTML error page, as Flask writes them.
fn page(status: StatusCode, title: &str, text: &str) -> Response<Full<Bytes>> {
    let code = status.as_u16();
    let body = format!(
        "<!doctype html>\n<html lang=en>\n<title>{code} {title}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
