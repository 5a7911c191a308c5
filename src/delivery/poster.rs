//! One HTTP POST of one body to the pattoo agent API.
//!
//! Only a complete `200` answer means delivered. Every request has a
//! timeout; redirects are not followed (a POST must not be replayed
//! somewhere else); at most [`MAX_RESPONSE_BYTES`] of an answer are read,
//! and an answer cut short counts as a failure, so the body is cached and
//! sent again rather than taken as delivered on half a reply. A 200 that
//! comes before the whole body was handed to the connection (a server or
//! proxy that answers before reading) does not count either: the server
//! cannot have stored what it never read.

use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::config::ApiSettings;
use super::config::{DeliverySettings, Scheme};
use crate::address::host_port;
use crate::error_chain;
use crate::tls::{self, Reach};

/// Enough of an answer for a log line; the pattoo server says `OK`.
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// How much of a body is handed to the connection at a time; also how much
/// may still be unwritten when the last piece has been taken.
const SEND_CHUNK: usize = 16 * 1024;

/// The longest `Retry-After` honoured, so a confused server cannot stop
/// delivery for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Why a post did not deliver its body.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("POST {url} timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("POST {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("POST {url} answered HTTP {status}: {reason}")]
    Status {
        url: String,
        status: u16,
        reason: String,
        /// From `Retry-After` on 429 and 503.
        retry_after: Option<Duration>,
    },
    /// The encrypted exchange failed before a body could be sent: a step
    /// answered what the protocol does not allow, or its keys or messages
    /// could not be used. Says nothing about any body.
    #[error("encrypted exchange with {url}: {reason}")]
    Exchange { url: String, reason: String },
}

impl PostError {
    /// The server (or a proxy in front of it) refused this body for what it
    /// is: malformed (400, 422), too large (413) or any other 4xx that
    /// sending the same bytes again cannot change. Not 408 and 429 (ask to
    /// try later), and not the statuses that say the address or the
    /// credentials are wrong ([`PostError::needs_operator`]): those refuse
    /// every body alike, and setting every body aside would empty the
    /// cache into quarantine over a typo in the configuration.
    pub fn refuses_body(&self) -> bool {
        matches!(self, PostError::Status { status, .. }
            if (400..500).contains(status) && !matches!(status, 408 | 429) && !self.needs_operator())
    }

    /// The server refuses every post for a reason only an operator can fix
    /// (wrong address or port, authentication, a redirect), as opposed to
    /// being busy or down.
    pub fn needs_operator(&self) -> bool {
        match self {
            PostError::Status { status, .. } => {
                (300..400).contains(status) || matches!(status, 401 | 403 | 404 | 405 | 407 | 421)
            }
            PostError::Exchange { .. } => true,
            _ => false,
        }
    }

    /// The server answered with a 5xx: it is reachable but failed this
    /// request, which may be the body's doing or the server's.
    pub fn is_server_error(&self) -> bool {
        matches!(self, PostError::Status { status, .. } if *status >= 500)
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            PostError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PostError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Why the HTTP client could not be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum PosterError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is not usable: {reason}")]
    Invalid {
        what: &'static str,
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// Posts bodies to one pattoo server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Poster {
    client: reqwest::Client,
    /// `{scheme}://{host}:{port}/pattoo/api/v1/agent/`
    api_url: String,
    base_url: String,
    timeout: Duration,
}

impl Poster {
    /// Builds the client; reads TLS files but does no network I/O.
    pub fn new(api: &ApiSettings, settings: &DeliverySettings) -> Result<Poster, PosterError> {
        let mut ca_certificates = Vec::new();
        let mut identity = None;
        if settings.scheme == Scheme::Https {
            if let Some(path) = &settings.ca_file {
                let pem = read(path, "CA file")?;
                ca_certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    PosterError::Invalid {
                        what: "CA file",
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?;
            }
            if let Some((certificate, key)) = &settings.client_certificate {
                let mut pem = read(certificate, "client certificate")?;
                pem.push(b'\n');
                pem.extend(read(key, "client key")?);
                identity =
                    Some(
                        reqwest::Identity::from_pem(&pem).map_err(|e| PosterError::Invalid {
                            what: "client certificate",
                            path: certificate.clone(),
                            reason: e.to_string(),
                        })?,
                    );
            }
        }
        let make = || {
            let mut builder = reqwest::Client::builder()
                .timeout(settings.timeout)
                .connect_timeout(settings.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(concat!("pattoo-agentd/", env!("CARGO_PKG_VERSION")));
            if let Some(identity) = &identity {
                builder = builder.identity(identity.clone());
            }
            if settings.tls_insecure_skip_verify {
                builder = builder.tls_danger_accept_invalid_certs(true);
            }
            builder
        };
        // Redirects are not followed, so plain http never meets TLS and
        // needs no certificate authorities (a system without
        // ca-certificates can still post to an http server).
        let reach = match settings.scheme {
            Scheme::Http => Reach::PlainOnly,
            Scheme::Https => Reach::Https,
        };
        let client = tls::build(make, reach, &ca_certificates).map_err(PosterError::Client)?;
        let api_url = format!(
            "{}://{}/pattoo/api/v1/agent/",
            settings.scheme.as_str(),
            host_port(&api.ip_address, api.ip_bind_port)
        );
        Ok(Poster {
            client,
            base_url: format!("{api_url}receive/"),
            api_url,
            timeout: settings.timeout,
        })
    }

    /// The HTTP client, with the settings' timeout and TLS.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The agent API's URL for `route` (`key`, `validation`, `encrypted`).
    pub fn api_url(&self, route: &str) -> String {
        format!("{}{route}", self.api_url)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn url(&self, agent_id: &str) -> String {
        format!("{}{agent_id}", self.base_url)
    }

    /// Posts one body. `Ok` only for a complete HTTP 200 answer.
    pub async fn post(&self, agent_id: &str, json: bytes::Bytes) -> Result<(), PostError> {
        let url = self.url(agent_id);
        let transport = |error: reqwest::Error, url: String| {
            if error.is_timeout() {
                PostError::Timeout {
                    url,
                    timeout: self.timeout,
                }
            } else {
                PostError::Transport {
                    url,
                    reason: error_chain(&error),
                }
            }
        };
        let length = json.len();
        let sent_whole = Arc::new(AtomicBool::new(length == 0));
        let body = reqwest::Body::wrap_stream(Pieces {
            rest: json,
            sent_whole: sent_whole.clone(),
        });
        let mut response = match self
            .client
            .post(&url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            // Streamed bodies are chunked unless told their length; the
            // pattoo server (Flask) wants a Content-Length.
            .header(CONTENT_LENGTH, length)
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => return Err(transport(error, url)),
        };
        let status = response.status();
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => response
                .headers()
                .get(RETRY_AFTER)
                .and_then(parse_retry_after),
            _ => None,
        };
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BYTES - answer.len();
                    answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if answer.len() >= MAX_RESPONSE_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => return Err(transport(error, url)),
            }
        }
        if status == StatusCode::OK {
            if !sent_whole.load(Ordering::SeqCst) {
                return Err(PostError::Transport {
                    url,
                    reason: "the server answered 200 before the whole body was sent; it cannot have read it all, so the body is kept".to_owned(),
                });
            }
            return Ok(());
        }
        let text = String::from_utf8_lossy(&answer);
        let first_line = text.lines().next().unwrap_or_default().trim();
        Err(PostError::Status {
            url,
            status: status.as_u16(),
            reason: if first_line.is_empty() {
                status.canonical_reason().unwrap_or("no reason").to_owned()
            } else {
                first_line.chars().take(200).collect()
            },
            retry_after,
        })
    }
}

/// A body handed to the connection [`SEND_CHUNK`] bytes at a time, saying
/// when the last piece has been taken.
struct Pieces {
    rest: bytes::Bytes,
    sent_whole: Arc<AtomicBool>,
}

impl futures_util::Stream for Pieces {
    type Item = Result<bytes::Bytes, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.rest.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let take = self.rest.len().min(SEND_CHUNK);
        let piece = self.rest.split_to(take);
        if self.rest.is_empty() {
            self.sent_whole.store(true, Ordering::SeqCst);
        }
        std::task::Poll::Ready(Some(Ok(piece)))
    }
}

fn read(path: &std::path::Path, what: &'static str) -> Result<Vec<u8>, PosterError> {
    std::fs::read(path).map_err(|source| PosterError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// `Retry-After` as seconds or an HTTP date, capped.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let wait = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = humantime::parse_rfc3339_weak(text)
                .ok()
                .or_else(|| httpdate(text))?;
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn httpdate(text: &str) -> Option<std::time::SystemTime> {
    let rest = text.split_once(", ")?.1.strip_suffix(" GMT")?;
    let mut parts = rest.split(' ');
    let day = parts.next()?;
    let month = parts.next()?;
    let year = parts.next()?;
    let time = parts.next()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    humantime::parse_rfc3339(&format!("{year}-{month:02}-{day:0>2}T{time}Z")).ok()
}

/// An error and its causes on one line: reqwest's own message rarely says
/// what actually went wrong.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date_and_capped() {
        let seconds = HeaderValue::from_static("7");
        assert_eq!(parse_retry_after(&seconds), Some(Duration::from_secs(7)));
        let huge = HeaderValue::from_static("999999");
        assert_eq!(parse_retry_after(&huge), Some(MAX_RETRY_AFTER));
        let past = HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn only_refusals_an_operator_must_fix_are_told_apart_from_outages() {
        let status = |status| PostError::Status {
            url: String::new(),
            status,
            reason: String::new(),
            retry_after: None,
        };
        for code in [301, 307, 401, 403, 404, 405] {
            assert!(status(code).needs_operator(), "{code}");
            assert!(!status(code).refuses_body(), "{code}");
        }
        for code in [400, 408, 413, 422, 429, 500, 502, 503] {
            assert!(!status(code).needs_operator(), "{code}");
        }
        for code in [400, 413, 414, 415, 422] {
            assert!(status(code).refuses_body(), "{code}");
        }
        for code in [408, 429, 500, 503] {
            assert!(!status(code).refuses_body(), "{code}");
        }
    }

    #[test]
    fn the_url_brackets_ipv6_literals() {
        let api = ApiSettings {
            ip_address: "::1".into(),
            ip_bind_port: 20201,
        };
        let poster = Poster::new(&api, &DeliverySettings::default()).unwrap();
        assert_eq!(
            poster.url("abc"),
            "http://[::1]:20201/pattoo/api/v1/agent/receive/abc"
        );
    }
}
