//! The HTTP poller: fetches one or more URLs and reads each response with a
//! shared [format](crate::formats), with built-in measurements for uptime
//! monitoring, or both.
//!
//! Invariants:
//! - Building the poller reads its secrets, CA and client certificate files
//!   and does no network I/O. Secrets live in [`Secret`], whose `Debug`
//!   prints `[redacted]`; they are never logged and never reach a datapoint
//!   (and so never the cache).
//! - TLS is rustls with the ring provider, verifying against the system's
//!   roots plus `tls.ca_file`; a poller with only http URLs does not need
//!   the system's roots ([`crate::tls`]). `tls.danger_accept_invalid_certs` turns that
//!   off and says so in a warning every time the poller is built.
//! - A response body is streamed and counted: one bigger than
//!   `max_response_bytes` fails that URL without being held in memory
//!   whole (a declared `Content-Length` over the limit fails before reading).
//! - URLs are fetched concurrently, at most `max_concurrent_targets` at
//!   once. A poll is `Ok` when at least one URL
//!   gave datapoints; the failures are logged. With `measurements: true` a
//!   failing URL still gives its `up` = 0, so an outage is data, not a gap.
//! - The datapoints' target is the URL's host unless `target:` is set.

/// The datapoints `measurements: true` adds for each URL: key, name and
/// unit (`translations` names them from here).
pub const MEASUREMENTS: [(&str, &str, &str); 4] = [
    ("response_time_ms", "HTTP Response Time", "Milliseconds"),
    ("http_status", "HTTP Status Code", "Code"),
    ("body_bytes", "HTTP Response Size", "Bytes"),
    ("up", "HTTP Endpoint Up", "State"),
];

mod config;
mod kind;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
pub use kind::Http;
pub use config::{Auth, HttpSettings, TlsSettings, DEFAULT_MAX_RESPONSE_BYTES};
use reqwest::{Client, StatusCode, Url};

use super::PollerEnv;
use crate::formats::{FormatError, Payload};
use crate::model::{DataPoint, DataType, Metadata, TargetData, Value};
use crate::secret::Secret;
use crate::time::now_ms;
use crate::tls::{self, Reach};

#[derive(Debug)]
enum Credentials {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

/// One URL failed; the message says which and why.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("poller {poller}: {method} {url}: {reason}")]
    Request {
        poller: String,
        method: reqwest::Method,
        url: String,
        reason: String,
    },
    #[error("poller {poller}: {method} {url}: the server answered {status}")]
    Status {
        poller: String,
        method: reqwest::Method,
        url: String,
        status: StatusCode,
    },
    #[error("poller {poller}: {method} {url}: the response is larger than the limit of {limit} bytes (max_response_bytes)")]
    TooLarge {
        poller: String,
        method: reqwest::Method,
        url: String,
        limit: usize,
    },
    #[error("poller {poller}: {method} {url}: {source}")]
    Format {
        poller: String,
        method: reqwest::Method,
        url: String,
        source: FormatError,
    },
}

impl HttpError {
    /// The URL that failed, as shown (without a password).
    pub fn url(&self) -> &str {
        match self {
            HttpError::Request { url, .. }
            | HttpError::Status { url, .. }
            | HttpError::TooLarge { url, .. }
            | HttpError::Format { url, .. } => url,
        }
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    settings: HttpSettings,
    client: Client,
    credentials: Option<Credentials>,
}

#[derive(Debug)]
pub struct HttpPoller {
    shared: Arc<Shared>,
}

/// The URL as logged, shown by `check` and sent as `url` metadata: without
/// a password, and with the value of every query parameter whose name
/// looks like it holds a secret (`?token=`, `api_key=`, ...) replaced by
/// `REDACTED`, since logs and the pattoo server are read by more people
/// than the configuration.
pub fn display_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if looks_secret(&name) {
                    "REDACTED".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(&pairs);
    }
    url.to_string()
}

/// Whether a query parameter's name suggests a secret value.
fn looks_secret(name: &str) -> bool {
    const HINTS: [&str; 10] = [
        "token",
        "key",
        "secret",
        "pass",
        "pwd",
        "auth",
        "sig",
        "session",
        "credential",
        "code",
    ];
    let name = name.to_ascii_lowercase();
    HINTS.iter().any(|hint| name.contains(hint))
}

impl HttpPoller {
    pub fn new(name: &str, settings: &HttpSettings, _env: &PollerEnv) -> anyhow::Result<Self> {
        let credentials = match &settings.auth {
            None => None,
            Some(Auth::Bearer(source)) => Some(Credentials::Bearer(source.read()?)),
            Some(Auth::Basic { username, password }) => Some(Credentials::Basic {
                username: username.clone(),
                password: password.read()?,
            }),
        };
        // Redirects are followed by `fetch`, which knows which headers are
        // the configuration's own and drops them when leaving the host.
        let tls = &settings.tls;
        let mut ca_certificates = Vec::new();
        if let Some(file) = &tls.ca_file {
            let pem = std::fs::read(file)
                .with_context(|| format!("reading the CA file {}", file.display()))?;
            ca_certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("reading certificates from {}", file.display()))?;
            anyhow::ensure!(
                !ca_certificates.is_empty(),
                "{} holds no certificate",
                file.display()
            );
        }
        let mut identity = None;
        if let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) {
            let mut pem = std::fs::read(cert)
                .with_context(|| format!("reading the client certificate {}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .with_context(|| format!("reading the client key {}", key.display()))?,
            );
            identity = Some(reqwest::Identity::from_pem(&pem).with_context(|| {
                format!(
                    "reading the client certificate {} and key {}",
                    cert.display(),
                    key.display()
                )
            })?);
        }
        if tls.danger_accept_invalid_certs {
            tracing::warn!(poller = %name, "TLS certificates are not verified for this poller (danger_accept_invalid_certs): anyone on the path can read and change what it fetches.");
        }
        let make = || {
            let mut builder = Client::builder()
                .user_agent(concat!("pattoo-agentd/", env!("CARGO_PKG_VERSION")))
                .timeout(settings.timeout)
                .redirect(reqwest::redirect::Policy::none());
            if let Some(identity) = &identity {
                builder = builder.identity(identity.clone());
            }
            if tls.danger_accept_invalid_certs {
                builder = builder.tls_danger_accept_invalid_certs(true);
            }
            builder
        };
        let https = settings.urls.iter().find(|url| url.scheme() == "https");
        let reach = match (https, settings.max_redirects) {
            (Some(_), _) => Reach::Https,
            (None, 0) => Reach::PlainOnly,
            (None, _) => Reach::PlainFirst,
        };
        let client = tls::build(make, reach, &ca_certificates).map_err(|error| match https {
            Some(url) => anyhow::anyhow!(
                "setting up the HTTP client for {}: {error}",
                display_url(url)
            ),
            None => anyhow::anyhow!("setting up the HTTP client: {error}"),
        })?;
        Ok(HttpPoller {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                settings: settings.clone(),
                client,
                credentials,
            }),
        })
    }

    /// Fetches the URLs, at most `max_concurrent_targets` at once. `Err`
    /// only when no URL gave a datapoint; then the first URL's error is
    /// returned and the others logged.
    pub async fn poll(&mut self) -> Result<Vec<TargetData>, HttpError> {
        let mut tasks = tokio::task::JoinSet::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(
            self.shared.settings.max_concurrent_targets.max(1),
        ));
        for index in 0..self.shared.settings.urls.len() {
            let shared = Arc::clone(&self.shared);
            let slots = Arc::clone(&slots);
            tasks.spawn(async move {
                // Never closed, so a slot always comes.
                let _slot = slots.acquire_owned().await;
                (index, shared.poll_url(index).await)
            });
        }
        let mut results = Vec::with_capacity(self.shared.settings.urls.len());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(result) => results.push(result),
                Err(err) => {
                    tracing::error!(poller = %self.shared.name, "A URL's poll panicked: {err}.")
                }
            }
        }
        results.sort_by_key(|(index, _)| *index);
        let mut targets: Vec<TargetData> = Vec::new();
        let mut first_error = None;
        for (_, outcome) in results {
            for target in outcome.targets {
                match targets.iter_mut().find(|t| t.target == target.target) {
                    Some(existing) => existing.datapoints.extend(target.datapoints),
                    None => targets.push(target),
                }
            }
            if let Some(error) = outcome.error {
                if first_error.is_none() {
                    first_error = Some(error);
                } else {
                    tracing::warn!(poller = %self.shared.name, url = %error.url(), "{error}");
                }
            }
        }
        match first_error {
            Some(error) if targets.iter().all(|t| t.datapoints.is_empty()) => Err(error),
            Some(error) => {
                tracing::warn!(poller = %self.shared.name, url = %error.url(), "{error}");
                Ok(targets)
            }
            None => Ok(targets),
        }
    }
}

/// What one URL gave: datapoints, and the error that cut it short.
struct UrlOutcome {
    targets: Vec<TargetData>,
    error: Option<HttpError>,
}

/// A fetched response.
struct Response {
    status: StatusCode,
    body: Vec<u8>,
}

enum FetchError {
    Request(String),
    TooLarge,
}

impl Shared {
    async fn poll_url(&self, index: usize) -> UrlOutcome {
        let settings = &self.settings;
        let url = &settings.urls[index];
        let shown = display_url(url);
        let target = settings
            .target
            .clone()
            .or_else(|| url.host_str().map(str::to_owned))
            .unwrap_or_default();
        let read_at_ms = now_ms();
        let (fetched, elapsed) = self.fetch_with_retries(url).await;
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        let method = settings.method.clone();
        let error_for = |fetch_error: &FetchError| match fetch_error {
            FetchError::Request(reason) => HttpError::Request {
                poller: self.name.clone(),
                method: method.clone(),
                url: shown.clone(),
                reason: reason.clone(),
            },
            FetchError::TooLarge => HttpError::TooLarge {
                poller: self.name.clone(),
                method: method.clone(),
                url: shown.clone(),
                limit: settings.max_response_bytes,
            },
        };
        let mut outcome = UrlOutcome {
            targets: Vec::new(),
            error: None,
        };
        if settings.measurements {
            let mut data = TargetData::new(&target);
            let measured = |key: &str, value: Value, data_type: DataType| {
                let datapoint = DataPoint::new(key, value, data_type, read_at_ms);
                match &settings.url_metadata {
                    Some(name) => datapoint.with_metadata(Metadata::new(name, shown.as_str())),
                    None => datapoint,
                }
            };
            let up = matches!(&fetched, Ok(response) if response.status.is_success());
            let [response_time, status, body_bytes, up_key] = MEASUREMENTS.map(|m| m.0);
            data.datapoints.push(measured(
                response_time,
                Value::Float((elapsed_ms * 1000.0).round() / 1000.0),
                DataType::Float,
            ));
            if let Ok(response) = &fetched {
                data.datapoints.push(measured(
                    status,
                    Value::Int(i64::from(response.status.as_u16())),
                    DataType::Int,
                ));
                data.datapoints.push(measured(
                    body_bytes,
                    Value::Int(response.body.len() as i64),
                    DataType::Int,
                ));
            }
            data.datapoints
                .push(measured(up_key, Value::Int(i64::from(up)), DataType::Int));
            outcome.targets.push(data);
        }
        let response = match fetched {
            Ok(response) => response,
            Err(error) => {
                outcome.error = Some(error_for(&error));
                return outcome;
            }
        };
        let Some(format) = &settings.format else {
            return outcome;
        };
        if !response.status.is_success() {
            outcome.error = Some(HttpError::Status {
                poller: self.name.clone(),
                method,
                url: shown,
                status: response.status,
            });
            return outcome;
        }
        match format.parse_payload(&Payload {
            bytes: &response.body,
            default_target: &target,
            read_at_ms,
            exit_status: None,
        }) {
            Ok(parsed) => {
                for skipped in &parsed.skipped {
                    tracing::warn!(poller = %self.name, url = %shown, target = %target, "A value was skipped: {skipped}.");
                }
                outcome.targets.extend(parsed.targets);
            }
            Err(source) => {
                outcome.error = Some(HttpError::Format {
                    poller: self.name.clone(),
                    method,
                    url: shown,
                    source,
                })
            }
        }
        outcome
    }

    /// Fetches `url`, trying again after a transport failure or a 5xx
    /// answer while retries are left, waiting longer each time. Also
    /// returns how long the last attempt took: the response time of a
    /// site is not the time spent waiting to retry it.
    async fn fetch_with_retries(&self, url: &Url) -> (Result<Response, FetchError>, Duration) {
        let mut backoff = self.settings.retry_backoff;
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let result = self.fetch(url).await;
            let elapsed = started.elapsed();
            let retryable = match &result {
                Ok(response) => response.status.is_server_error(),
                Err(FetchError::Request(_)) => true,
                Err(FetchError::TooLarge) => false,
            };
            if !retryable || attempt >= self.settings.retries {
                return (result, elapsed);
            }
            attempt += 1;
            tracing::debug!(poller = %self.name, url = %display_url(url), attempt, "Retrying after {backoff:?}.");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }

    /// One fetch, following up to `max_redirects` redirects. The
    /// configured headers, credentials and body go only to the configured
    /// host and port: a redirect elsewhere gets none of them, as browsers
    /// drop `Authorization`, so an `X-Api-Key` is not handed to whoever the
    /// server points at.
    async fn fetch(&self, url: &Url) -> Result<Response, FetchError> {
        let settings = &self.settings;
        let mut url = url.clone();
        if !settings.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&settings.query);
        }
        let origin = (
            url.host_str().map(str::to_owned),
            url.port_or_known_default(),
        );
        let mut method = settings.method.clone();
        let mut send_body = true;
        let mut redirects = 0;
        let mut response = loop {
            let same_origin = (
                url.host_str().map(str::to_owned),
                url.port_or_known_default(),
            ) == origin;
            let mut request = self.client.request(method.clone(), url.clone());
            if same_origin {
                for (name, value) in &settings.headers {
                    request = request.header(name, value);
                }
                request = match &self.credentials {
                    None => request,
                    Some(Credentials::Bearer(token)) => request.bearer_auth(token.expose()),
                    Some(Credentials::Basic { username, password }) => {
                        request.basic_auth(username, Some(password.expose()))
                    }
                };
            }
            if let (Some(body), true) = (&settings.body, send_body) {
                request = request.body(body.clone());
            }
            let response = request.send().await.map_err(request_error)?;
            let status = response.status();
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok());
            let Some(next) = location.filter(|_| status.is_redirection()) else {
                break response;
            };
            if settings.max_redirects == 0 {
                break response;
            }
            if redirects == settings.max_redirects {
                return Err(FetchError::Request("too many redirects".to_owned()));
            }
            redirects += 1;
            // As browsers do: 303, and 301/302 after a POST, become a GET
            // without a body; 307 and 308 repeat the request as it was.
            if status == reqwest::StatusCode::SEE_OTHER
                || (matches!(status.as_u16(), 301 | 302) && method == reqwest::Method::POST)
            {
                method = reqwest::Method::GET;
                send_body = false;
            }
            url = next;
        };
        let status = response.status();
        let limit = settings.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, body })
    }
}

/// A reqwest error with its causes, which say what actually went wrong
/// ("invalid peer certificate: UnknownIssuer").
fn request_error(error: reqwest::Error) -> FetchError {
    // The URL is in the message already, without its password.
    let error = error.without_url();
    let mut reason = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_redirect() {
        "too many redirects".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = cause.source();
    }
    FetchError::Request(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_is_not_shown() {
        let url = Url::parse("https://user:pa55@example.com/x?y=1").unwrap();
        assert_eq!(display_url(&url), "https://user@example.com/x?y=1");
    }
}
