//! A minimal pattoo agent-API receiver, for tests and for trying an agent
//! without a pattoo server (`pattoo-agentd receive`).
//!
//! It takes what the pattoo server takes at
//! `POST /pattoo/api/v1/agent/receive/{agent_id}` (a JSON object with
//! exactly the four top-level keys), checks every datapoint the way the
//! pattoo ingester does (`converter.cache_to_keypairs` and
//! `_make_pattoo_db_record`: every reserved key present, a known data
//! type), stores each accepted body as `{arrival:010}_{timestamp}_{agent_id}.json`
//! in its directory, byte for byte, and answers 200 `OK`. Anything else gets
//! a 4xx with a one-line reason.

use std::convert::Infallible;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::model::validate_body;

/// The route prefix; the agent id follows.
pub const RECEIVE_PATH: &str = "/pattoo/api/v1/agent/receive/";

/// Larger bodies are refused with 413; the agent posts at most
/// `delivery.max_body_bytes` (512 KiB by default) at a time.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// How long a request's body may take to arrive, unless told otherwise.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What `receive` allows a client, so that a socket anyone can reach cannot
/// be held open or fed without end: with the defaults, at most
/// 32 x [`MAX_BODY_BYTES`] of bodies are in memory at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To send a request's head; also how long a connection may sit idle
    /// between requests.
    pub header_timeout: Duration,
    /// Connections served at once; one more is closed as it comes.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            max_connections: 32,
        }
    }
}

/// Stores accepted bodies in a directory, numbered in order of arrival.
#[derive(Debug)]
pub struct Receiver {
    dir: PathBuf,
    next: AtomicU64,
    body_timeout: Duration,
}

impl Receiver {
    /// Uses `dir`, creating it; numbering continues after what is there.
    pub fn new(dir: &Path) -> io::Result<Receiver> {
        fs::create_dir_all(dir)?;
        let mut next = 0;
        for entry in fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.split('_').next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                next = next.max(n + 1);
            }
        }
        Ok(Receiver {
            dir: dir.to_owned(),
            next: AtomicU64::new(next),
            body_timeout: BODY_TIMEOUT,
        })
    }

    /// How long a request's body may take to arrive (default a minute);
    /// a slower one is answered 408.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Receiver {
        self.body_timeout = timeout;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Judges one request; stores the body when it is accepted.
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, String) {
        let Some(agent_id) = path
            .strip_prefix(RECEIVE_PATH)
            .filter(|id| !id.is_empty() && !id.contains('/'))
        else {
            return (StatusCode::NOT_FOUND, format!("no such route: {path}"));
        };
        if method != Method::POST {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                "only POST is accepted".into(),
            );
        }
        let is_json = content_type
            .and_then(|t| t.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json".into(),
            );
        }
        let accepted = match validate_body(body) {
            Ok(accepted) => accepted,
            Err(reason) => return (StatusCode::BAD_REQUEST, reason),
        };
        let arrival = self.next.fetch_add(1, Ordering::SeqCst);
        let name = format!(
            "{arrival:010}_{}_{}.json",
            sanitize(&accepted.timestamp),
            sanitize(agent_id)
        );
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let stored =
            fs::write(&temporary, body).and_then(|()| fs::rename(&temporary, self.dir.join(&name)));
        match stored {
            Ok(()) => (StatusCode::OK, "OK".into()),
            Err(error) => {
                let _ = fs::remove_file(&temporary);
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot store the body: {error}"),
                )
            }
        }
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` turns true, within
    /// the default [`Limits`].
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<()> {
        self.serve_within(listener, shutdown, Limits::default())
            .await
    }

    /// [`Receiver::serve`] within `limits`.
    pub async fn serve_within(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        limits: Limits,
    ) -> io::Result<()> {
        let receiver = self;
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors and the like: keep serving.
                    Err(error) => {
                        tracing::warn!(%error, "cannot accept a connection");
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Dropping the stream closes it: full up.
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "refused a connection: too many open"
                );
                continue;
            };
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |request| {
                    let receiver = receiver.clone();
                    async move { Ok::<_, Infallible>(receiver.respond(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Reads a request (bounded) and answers it.
    pub async fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let read = tokio::time::timeout(
            self.body_timeout,
            Limited::new(body, MAX_BODY_BYTES).collect(),
        );
        let (status, reason) = match read.await {
            Err(_) => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}s",
                    self.body_timeout.as_secs()
                ),
            ),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("bodies larger than {MAX_BODY_BYTES} bytes are refused"),
            ),
            Ok(Ok(collected)) => {
                let content_type = parts
                    .headers
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                self.handle(
                    &parts.method,
                    parts.uri.path(),
                    content_type,
                    &collected.to_bytes(),
                )
            }
            Ok(Err(error)) => (
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {error}"),
            ),
        };
        if status != StatusCode::OK {
            tracing::info!(status = status.as_u16(), path = parts.uri.path(), %reason, "refused a post");
        }
        let mut response = Response::new(Full::new(Bytes::from(reason + "\n")));
        *response.status_mut() = status;
        response
    }
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(80)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(datapoint: &str) -> String {
        format!(
            r#"{{"pattoo_agent_id": "abc", "pattoo_agent_polling_interval": 10000, "pattoo_agent_timestamp": 1, "pattoo_datapoints": {{"key_value_pairs": {datapoint}, "datapoint_pairs": [[0,1,2,3,4,5,6,7,8,9]]}}}}"#
        )
    }

    const GOOD: &str = r#"{"0": ["pattoo_agent_polling_interval", "10000"], "1": ["pattoo_agent_hostname", "h"], "2": ["pattoo_agent_id", "abc"], "3": ["pattoo_agent_polled_target", "t"], "4": ["pattoo_agent_program", "p"], "5": ["pattoo_key", "k"], "6": ["pattoo_data_type", 99], "7": ["pattoo_value", 1], "8": ["pattoo_timestamp", 1], "9": ["pattoo_checksum", "c"]}"#;

    #[test]
    fn stores_accepted_bodies_in_arrival_order_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::new(dir.path()).unwrap();
        let path = format!("{RECEIVE_PATH}abc");
        let json = Some("application/json");
        let good = body(GOOD);
        assert_eq!(
            receiver
                .handle(&Method::POST, &path, json, good.as_bytes())
                .0,
            StatusCode::OK
        );
        assert_eq!(
            receiver
                .handle(&Method::POST, &path, json, good.as_bytes())
                .0,
            StatusCode::OK
        );
        assert_eq!(
            receiver.handle(&Method::GET, &path, json, b"").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            receiver.handle(&Method::POST, "/other", json, b"").0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            receiver
                .handle(&Method::POST, &path, Some("text/plain"), good.as_bytes())
                .0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            receiver.handle(&Method::POST, &path, json, b"{}").0,
            StatusCode::BAD_REQUEST
        );
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["0000000000_1_abc.json", "0000000001_1_abc.json"]);
        assert_eq!(
            fs::read(dir.path().join(&names[0])).unwrap(),
            good.as_bytes()
        );
        // A restarted receiver keeps numbering after what is there.
        let again = Receiver::new(dir.path()).unwrap();
        assert_eq!(again.next.load(Ordering::SeqCst), 2);
    }
}
