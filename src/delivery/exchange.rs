//! Posting through pattoo's encrypted exchange (`delivery.encryption:
//! openpgp`), as pattoo_shared's `EncryptedPost` does, without its losses.
//!
//! A session is opened with three requests, then carries any number of
//! bodies, live and replayed, one request each:
//!
//! 1. `POST /key`: the agent id and the agent's public key; 202 (or 208,
//!    "already done").
//! 2. `GET /key`: 200 with the server's id, its public key and a nonce
//!    encrypted to the agent's key.
//! 3. `POST /validation`: the nonce under a new symmetric key `K`, and `K`
//!    encrypted to the server's key; 200.
//! 4. `POST /encrypted`: `{"data": BODY, "source": AGENT_ID}` under `K`;
//!    only **202** delivers. 208 means the server has no `K` for this
//!    session (it restarted, or the session expired): the session is
//!    opened again once and the body sent again; anything else fails the
//!    body as a plain post's failure does, so it stays in the cache.
//!
//! Every request body is JSON encoded twice (a JSON string holding the
//! JSON object) and sent as `application/json`; the server's session is
//! its `session` cookie, kept here from `Set-Cookie`. Every request has the
//! delivery timeout. `K` is 256 bits from the operating system's CSPRNG.
//! A session is shared by every post; a failed or timed-out request drops
//! it, and the delivery's breaker spaces new attempts (each failed
//! exchange leaves a key in the server's keyring, so never in a tight loop).

use std::sync::{Arc, Mutex};

use reqwest::header::{HeaderValue, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};

use super::openpgp::{self, Keyring};
use super::poster::{PostError, Poster};
use super::LastExchange;
use crate::error_chain;

/// Enough for step 2's answer: an RSA-4096 key and a nonce, armored.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// An open session: its cookies and symmetric key.
struct Session {
    cookies: Vec<(String, String)>,
    key: String,
}

impl Session {
    fn cookie_header(&self) -> Option<HeaderValue> {
        if self.cookies.is_empty() {
            return None;
        }
        let line = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        HeaderValue::from_str(&line).ok()
    }

    fn remember(&mut self, response: &reqwest::Response) {
        for header in response.headers().get_all(SET_COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            match self.cookies.iter_mut().find(|(known, _)| *known == name) {
                Some(slot) => slot.1 = value,
                None => self.cookies.push((name, value)),
            }
        }
    }
}

/// Why step 4 did not deliver.
enum SendError {
    /// 208: the server has no symmetric key for this session.
    NoSession(PostError),
    Failed(PostError),
}

/// Sends bodies through the encrypted exchange. Shared by every clone of
/// the delivery.
pub struct Exchanger {
    poster: Poster,
    keyring: Arc<Keyring>,
    /// The open session, if any; the lock is held while one is opened so
    /// that concurrent posts open one, not several.
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    last: Mutex<Option<LastExchange>>,
}

impl Exchanger {
    pub fn new(poster: Poster, keyring: Arc<Keyring>) -> Exchanger {
        Exchanger {
            poster,
            keyring,
            session: tokio::sync::Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    pub fn last_exchange(&self) -> Option<LastExchange> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Where bodies go: step 4's URL.
    pub fn url(&self) -> String {
        self.poster.api_url("encrypted")
    }

    /// Delivers one body; `Ok` only for a 202 from `/encrypted`.
    pub async fn post(&self, agent_id: &str, json: &[u8]) -> Result<(), PostError> {
        let session = self.session(None).await?;
        match self.send(&session, agent_id, json).await {
            Ok(()) => Ok(()),
            Err(SendError::NoSession(_)) => {
                tracing::info!(server = %self.url(), "the pattoo server has no session for this agent any more (it restarted, or the session expired); opening a new one");
                let session = self.session(Some(&session)).await?;
                match self.send(&session, agent_id, json).await {
                    Ok(()) => Ok(()),
                    Err(SendError::NoSession(error)) => {
                        self.forget(&session).await;
                        Err(PostError::Exchange {
                            url: self.url(),
                            reason: format!("a new session was refused its body too ({error}); does the server keep sessions (Flask-Session, one SECRET_KEY for all workers)?"),
                        })
                    }
                    Err(SendError::Failed(error)) => Err(self.failed(&session, error).await),
                }
            }
            Err(SendError::Failed(error)) => Err(self.failed(&session, error).await),
        }
    }

    /// A failure that may mean the server lost the session drops it.
    async fn failed(&self, session: &Arc<Session>, error: PostError) -> PostError {
        if matches!(
            error,
            PostError::Timeout { .. } | PostError::Transport { .. }
        ) || error.is_server_error()
        {
            self.forget(session).await;
        }
        error
    }

    async fn forget(&self, session: &Arc<Session>) {
        let mut current = self.session.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, session)) {
            *current = None;
        }
    }

    /// The open session, or a new one if there is none or the open one is
    /// `stale`.
    async fn session(&self, stale: Option<&Arc<Session>>) -> Result<Arc<Session>, PostError> {
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref() {
            if !stale.is_some_and(|stale| Arc::ptr_eq(stale, session)) {
                return Ok(session.clone());
            }
        }
        *current = None;
        let opened = self.open().await;
        let at_ms = crate::time::now_ms();
        let last = match &opened {
            Ok((_, server)) => LastExchange {
                at_ms,
                ok: true,
                detail: format!("session opened with {server}"),
            },
            Err(error) => LastExchange {
                at_ms,
                ok: false,
                detail: error.to_string(),
            },
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
        let session = Arc::new(opened?.0);
        *current = Some(session.clone());
        Ok(session)
    }

    /// Steps 1 to 3. Returns the session and who the server said it is.
    async fn open(&self) -> Result<(Session, String), PostError> {
        let mut session = Session {
            cookies: Vec::new(),
            key: openpgp::session_key(),
        };
        let keyring = &self.keyring;

        // Step 1: our key.
        let url = self.poster.api_url("key");
        let body = double_encoded(&serde_json::json!({
            "pattoo_agent_email": keyring.agent_id(),
            "pattoo_agent_key": keyring.public_armored(),
        }));
        let (status, answer) = self
            .request(&mut session, Method::POST, &url, Some(body))
            .await?;
        if !matches!(status.as_u16(), 202 | 208) {
            return Err(refused(&url, status, &answer, "202"));
        }

        // Step 2: the server's key and the nonce.
        let (status, answer) = self.request(&mut session, Method::GET, &url, None).await?;
        if status != StatusCode::OK {
            return Err(refused(&url, status, &answer, "200"));
        }
        let broken = |reason: String| PostError::Exchange {
            url: url.clone(),
            reason,
        };
        let offer = json_object(&answer).map_err(broken)?;
        let field = |name: &str| {
            offer
                .get(name)
                .and_then(|value| value.as_str())
                .map(str::to_owned)
                .ok_or_else(|| broken(format!("the answer has no `{name}`")))
        };
        let (server_id, server_key, encrypted_nonce) = (
            field("api_email")?,
            field("api_key")?,
            field("encrypted_nonce")?,
        );
        let crypto = |error: openpgp::KeyError| broken(error.to_string());
        let server_key = openpgp::read_public_key(&server_key).map_err(crypto)?;
        if !openpgp::names(&server_key, &server_id) {
            return Err(broken(format!(
                "the server's key has no user id with <{server_id}>, the api_email it sent"
            )));
        }
        let nonce = keyring.decrypt(&encrypted_nonce).map_err(crypto)?;

        // Step 3: the symmetric key, proven with the nonce.
        let url = self.poster.api_url("validation");
        let crypto = |error: openpgp::KeyError| PostError::Exchange {
            url: url.clone(),
            reason: error.to_string(),
        };
        let body = double_encoded(&serde_json::json!({
            "encrypted_nonce": openpgp::encrypt_symmetric(&nonce, &session.key).map_err(crypto)?,
            "encrypted_sym_key": openpgp::encrypt_to(&server_key, session.key.as_bytes()).map_err(crypto)?,
        }));
        let (status, answer) = self
            .request(&mut session, Method::POST, &url, Some(body))
            .await?;
        if status != StatusCode::OK {
            return Err(refused(&url, status, &answer, "200"));
        }
        let fingerprint =
            hex::encode_upper(pgp::types::KeyDetails::fingerprint(&server_key).as_bytes());
        Ok((session, format!("{server_id} (key {fingerprint})")))
    }

    /// Step 4 for one body.
    async fn send(
        &self,
        session: &Arc<Session>,
        agent_id: &str,
        json: &[u8],
    ) -> Result<(), SendError> {
        let url = self.url();
        // {"data": BODY, "source": AGENT_ID}, BODY as the agent made it.
        let mut data = Vec::with_capacity(json.len() + agent_id.len() + 32);
        data.extend_from_slice(b"{\"data\": ");
        data.extend_from_slice(json);
        data.extend_from_slice(b", \"source\": ");
        data.extend_from_slice(
            serde_json::to_string(agent_id)
                .unwrap_or_default()
                .as_bytes(),
        );
        data.push(b'}');
        let sealed = openpgp::encrypt_symmetric(&data, &session.key).map_err(|error| {
            SendError::Failed(PostError::Exchange {
                url: url.clone(),
                reason: error.to_string(),
            })
        })?;
        let body = double_encoded(&serde_json::json!({ "encrypted_data": sealed }));
        let mut scratch = Session {
            cookies: session.cookies.clone(),
            key: String::new(),
        };
        let (status, answer) = self
            .request(&mut scratch, Method::POST, &url, Some(body))
            .await
            .map_err(SendError::Failed)?;
        match status.as_u16() {
            202 => Ok(()),
            208 => Err(SendError::NoSession(status_error(&url, status, &answer))),
            _ => Err(SendError::Failed(status_error(&url, status, &answer))),
        }
    }

    /// One request of the exchange, with the session's cookies; keeps the
    /// cookies the server sets.
    async fn request(
        &self,
        session: &mut Session,
        method: Method,
        url: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Vec<u8>), PostError> {
        let transport = |error: reqwest::Error| {
            if error.is_timeout() {
                PostError::Timeout {
                    url: url.to_owned(),
                    timeout: self.poster.timeout(),
                }
            } else {
                PostError::Transport {
                    url: url.to_owned(),
                    reason: error_chain(&error),
                }
            }
        };
        let mut request = self.poster.client().request(method, url);
        if let Some(cookie) = session.cookie_header() {
            request = request.header(COOKIE, cookie);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let mut response = request.send().await.map_err(transport)?;
        session.remember(&response);
        let status = response.status();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(PostError::Exchange {
                    url: url.to_owned(),
                    reason: format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"),
                });
            }
            answer.extend_from_slice(&chunk);
        }
        Ok((status, answer))
    }
}

/// `value` as the pattoo agents send it: `json.dumps` of the object, then
/// JSON-encoded again by `requests`' `json=`.
fn double_encoded(value: &serde_json::Value) -> String {
    let inner = value.to_string();
    serde_json::Value::String(inner).to_string()
}

/// A JSON object, or a JSON string holding one (the server may encode
/// twice as the agents do).
fn json_object(answer: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let value: serde_json::Value = serde_json::from_slice(answer)
        .map_err(|error| format!("the answer is not JSON: {error}"))?;
    let value = match value {
        serde_json::Value::String(text) => serde_json::from_str(&text)
            .map_err(|error| format!("the answer's string is not JSON: {error}"))?,
        other => other,
    };
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err("the answer is not a JSON object".to_owned()),
    }
}

fn first_line(answer: &[u8], status: StatusCode) -> String {
    let text = String::from_utf8_lossy(answer);
    let line = text.lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        status.canonical_reason().unwrap_or("no reason").to_owned()
    } else {
        line.chars().take(200).collect()
    }
}

fn status_error(url: &str, status: StatusCode, answer: &[u8]) -> PostError {
    PostError::Status {
        url: url.to_owned(),
        status: status.as_u16(),
        reason: first_line(answer, status),
        retry_after: None,
    }
}

/// A step of steps 1 to 3 answered something else than it must.
fn refused(url: &str, status: StatusCode, answer: &[u8], expected: &str) -> PostError {
    let hint = match status.as_u16() {
        404 | 405 => {
            "; does this pattoo server have the encrypted agent API (pattoo 2020-Q4 or later)?"
        }
        403 => "; the server did not keep the session between requests",
        401 => "; the server could not check the nonce",
        _ => "",
    };
    PostError::Exchange {
        url: url.to_owned(),
        reason: format!(
            "answered HTTP {} ({}), expected {expected}{hint}",
            status.as_u16(),
            first_line(answer, status)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_are_a_json_string_holding_the_json_object() {
        let body = double_encoded(&serde_json::json!({"a": "b\"c"}));
        let outer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let inner: serde_json::Value = serde_json::from_str(outer.as_str().unwrap()).unwrap();
        assert_eq!(inner, serde_json::json!({"a": "b\"c"}));
    }

    #[test]
    fn answers_are_read_as_an_object_or_a_string_holding_one() {
        assert!(json_object(br#"{"api_email": "x"}"#).is_ok());
        assert!(json_object(br#""{\"api_email\": \"x\"}""#).is_ok());
        assert!(json_object(b"[1]").is_err());
        assert!(json_object(b"<html>").is_err());
    }
}
