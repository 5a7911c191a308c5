//! The hub poller: asks each spoke (a Python `pattoo_agent_os_spoked`, a
//! `pattoo_agent_linux_spoked`, or this agent's spoke server) for
//! `GET /{route}/{interval}` and relays each answer whole, as the Python
//! hub `pattoo_agent_os_hubd` does.
//!
//! Invariants:
//! - An answer is a post body the spoke made: it is posted as a Python hub
//!   posts it (`json.dumps(json.loads(answer))`, see
//!   [`crate::model::RelayedBody`]), under the hub's agent id (the URL and
//!   the cache), never split and never renormalised. What the pattoo
//!   server would not take is not posted.
//! - Each spoke has its own timeout covering the whole exchange, and its
//!   answer is read up to `max_answer_bytes`: a silent, slow or flooding
//!   spoke costs only its own timeout and fails only itself. Spokes are
//!   asked concurrently, at most `max_concurrent_targets` at once.
//! - A poll is `Ok` when at least one spoke answered with a body; every
//!   failure is logged naming the spoke's URL.
//! - Building the poller does no network I/O.

mod compat;
mod config;
mod kind;

use std::sync::Arc;
use std::time::Duration;

pub use config::{HubSettings, Spoke, DEFAULT_MAX_ANSWER_BYTES, DEFAULT_PORT, DEFAULT_ROUTE};
pub use kind::Hub;
use reqwest::{Client, StatusCode};

use crate::model::{NotABody, RelayedBody};
use crate::tls::{self, Reach};

/// One spoke failed; the message names the poller and the spoke's URL.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("poller {poller}: GET {url}: {reason}")]
    Request {
        poller: String,
        url: String,
        reason: String,
    },
    #[error("poller {poller}: GET {url}: the spoke answered {status}; nothing is posted for it")]
    Status {
        poller: String,
        url: String,
        status: StatusCode,
    },
    #[error("poller {poller}: GET {url}: the answer is larger than the limit of {limit} bytes (max_answer_bytes); nothing is posted for it")]
    TooLarge {
        poller: String,
        url: String,
        limit: usize,
    },
    #[error("poller {poller}: GET {url}: {source}; nothing is posted for it")]
    Answer {
        poller: String,
        url: String,
        source: NotABody,
    },
}

impl HubError {
    /// The spoke's URL.
    pub fn url(&self) -> &str {
        match self {
            HubError::Request { url, .. }
            | HubError::Status { url, .. }
            | HubError::TooLarge { url, .. }
            | HubError::Answer { url, .. } => url,
        }
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    client: Client,
    urls: Vec<String>,
    max_answer_bytes: usize,
    max_concurrent_targets: usize,
}

#[derive(Debug)]
pub struct HubPoller {
    shared: Arc<Shared>,
}

/// The URL a spoke is asked: `http://{host}:{port}/{route}/{seconds}`,
/// an IPv6 address in brackets.
pub fn spoke_url(spoke: &Spoke, route: &str, polling_interval: Duration) -> String {
    format!(
        "http://{}/{route}/{}",
        crate::address::host_port(&spoke.host, spoke.port),
        interval_seconds(polling_interval)
    )
}

/// The interval in whole seconds, as the spokes take it: rounded up, at
/// least 1 (a spoke asked for 0 answers with no datapoints).
pub fn interval_seconds(polling_interval: Duration) -> u64 {
    let seconds = polling_interval.as_secs() + u64::from(polling_interval.subsec_nanos() > 0);
    seconds.max(1)
}

impl HubPoller {
    pub fn new(name: &str, settings: &HubSettings, polling_interval: Duration) -> anyhow::Result<Self> {
        let make = || {
            Client::builder()
                .user_agent(concat!("pattoo-agentd/", env!("CARGO_PKG_VERSION")))
                .timeout(settings.timeout)
                .redirect(reqwest::redirect::Policy::none())
        };
        let client = tls::build(make, Reach::PlainOnly, &[])
            .map_err(|error| anyhow::anyhow!("setting up the HTTP client: {error}"))?;
        Ok(HubPoller {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                client,
                urls: settings
                    .spokes
                    .iter()
                    .map(|spoke| spoke_url(spoke, &settings.route, polling_interval))
                    .collect(),
                max_answer_bytes: settings.max_answer_bytes,
                max_concurrent_targets: settings.max_concurrent_targets,
            }),
        })
    }

    /// Asks every spoke, at most `max_concurrent_targets` at once. `Err`
    /// only when no spoke gave a body; then the first spoke's error is
    /// returned and the others logged.
    pub async fn poll(&mut self) -> Result<Vec<RelayedBody>, HubError> {
        let shared = &self.shared;
        let slots = Arc::new(tokio::sync::Semaphore::new(shared.max_concurrent_targets.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..shared.urls.len() {
            let shared = Arc::clone(shared);
            let slots = Arc::clone(&slots);
            tasks.spawn(async move {
                // Never closed, so a slot always comes.
                let _slot = slots.acquire_owned().await;
                (index, shared.ask(index).await)
            });
        }
        let mut results = Vec::with_capacity(shared.urls.len());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(result) => results.push(result),
                Err(err) => tracing::error!(poller = %shared.name, "asking a spoke panicked: {err}"),
            }
        }
        results.sort_by_key(|(index, _)| *index);
        let mut bodies = Vec::new();
        let mut first_error = None;
        for (_, result) in results {
            match result {
                Ok(body) => bodies.push(body),
                Err(error) if first_error.is_none() => first_error = Some(error),
                Err(error) => tracing::warn!(poller = %shared.name, url = %error.url(), "{error}"),
            }
        }
        match first_error {
            Some(error) if bodies.is_empty() => Err(error),
            Some(error) => {
                tracing::warn!(poller = %shared.name, url = %error.url(), "{error}");
                Ok(bodies)
            }
            None => Ok(bodies),
        }
    }
}

impl Shared {
    /// Asks one spoke and checks its answer.
    async fn ask(&self, index: usize) -> Result<RelayedBody, HubError> {
        let url = &self.urls[index];
        let request = |reason: String| HubError::Request {
            poller: self.name.clone(),
            url: url.clone(),
            reason,
        };
        let too_large = || HubError::TooLarge {
            poller: self.name.clone(),
            url: url.clone(),
            limit: self.max_answer_bytes,
        };
        let mut response = self.client.get(url).send().await.map_err(|e| request(reason(e)))?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(HubError::Status {
                poller: self.name.clone(),
                url: url.clone(),
                status,
            });
        }
        if response.content_length().is_some_and(|n| n > self.max_answer_bytes as u64) {
            return Err(too_large());
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| request(reason(e)))? {
            if answer.len() + chunk.len() > self.max_answer_bytes {
                return Err(too_large());
            }
            answer.extend_from_slice(&chunk);
        }
        RelayedBody::from_answer(&answer).map_err(|source| HubError::Answer {
            poller: self.name.clone(),
            url: url.clone(),
            source,
        })
    }
}

/// A reqwest error with its causes ("connection refused", "timed out").
fn reason(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = if error.is_timeout() {
        "timed out (timeout_ms)".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spoke_is_asked_for_the_hubs_interval_in_whole_seconds_with_ipv6_bracketed() {
        let spoke = |host: &str| Spoke {
            host: host.to_owned(),
            port: 5000,
        };
        assert_eq!(
            spoke_url(&spoke("::1"), "pattoo-agent-os", Duration::from_secs(300)),
            "http://[::1]:5000/pattoo-agent-os/300"
        );
        assert_eq!(
            spoke_url(&spoke("10.0.0.5"), "pattoo-agent-linux", Duration::from_millis(1500)),
            "http://10.0.0.5:5000/pattoo-agent-linux/2"
        );
        assert_eq!(interval_seconds(Duration::from_millis(1)), 1);
    }
}
