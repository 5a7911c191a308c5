//! A stand-in for the pattoo agent API's encrypted routes (`/key`,
//! `/validation`, `/encrypted`) on loopback, following the table in the
//! spec of pattoo's `post.py`: the status codes (208 included), a session
//! kept by a `session` cookie, request bodies that are a JSON string
//! holding the JSON object (a plain object gets 500, as `json.loads` of a
//! dict fails there), and GnuPG 2.2 doing the server's crypto with its own
//! temporary GNUPGHOME. Every answer closes its connection, so a server
//! that "dies" (closes its listener) refuses the very next request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use pattoo_agentd::config::ApiSettings;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use super::gpg::Gpg;

pub const SERVER_ID: &str = "7a0f1e2d3c4b5a69788796a5b4c3d2e1f0015e1f0a9b7e8d1c2b3a4f5e6d7c8b";

/// A step of the exchange, named by its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// 1: `POST /key`
    PostKey,
    /// 2: `GET /key`
    GetKey,
    /// 3: `POST /validation`
    Validation,
}

#[derive(Default)]
struct Session {
    email: Option<String>,
    nonce: Option<String>,
    symm_key: Option<String>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    /// `(source, data)` of every body taken, in order.
    received: Vec<(String, serde_json::Value)>,
    /// Requests per step: `POST /key`, `GET /key`, `POST /validation`,
    /// `POST /encrypted`.
    counts: [usize; 4],
    /// Stop listening right after answering this step.
    die_after: Option<Step>,
    /// Never answer this step.
    hang_at: Option<Step>,
    /// Answer this many `/encrypted` requests 208, forgetting every
    /// session as a restarted server does.
    forget_at_encrypted: usize,
}

struct Shared {
    gpg: Gpg,
    state: Mutex<State>,
    accept: Mutex<Option<AbortHandle>>,
    next_session: AtomicUsize,
}

/// The stand-in server; stops listening when dropped.
pub struct EncryptedServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl EncryptedServer {
    /// Starts a server whose key gpg makes in `gpg`'s home.
    pub async fn start(gpg: Gpg) -> EncryptedServer {
        let gpg = tokio::task::spawn_blocking(move || {
            gpg.make_key("pattoo_api_agentd", SERVER_ID);
            gpg
        })
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            gpg,
            state: Mutex::default(),
            accept: Mutex::new(None),
            next_session: AtomicUsize::new(1),
        });
        let serving = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move {
                            let mut response = respond(&shared, request).await;
                            response
                                .headers_mut()
                                .insert("connection", "close".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *shared.accept.lock().unwrap() = Some(accept.abort_handle());
        EncryptedServer { addr, shared }
    }

    pub fn api(&self) -> ApiSettings {
        ApiSettings {
            ip_address: self.addr.ip().to_string(),
            ip_bind_port: self.addr.port(),
        }
    }

    /// The server stops listening right after it answers `step`.
    pub fn die_after(&self, step: Step) {
        self.shared.state.lock().unwrap().die_after = Some(step);
    }

    /// The server never answers `step` (the request is read, the
    /// connection kept open).
    pub fn hang_at(&self, step: Step) {
        self.shared.state.lock().unwrap().hang_at = Some(step);
    }

    /// The next `times` bodies get 208, as after a server restart.
    pub fn forget_sessions_at_encrypted(&self, times: usize) {
        self.shared.state.lock().unwrap().forget_at_encrypted = times;
    }

    /// `(source, data)` of every body taken, in order of arrival.
    pub fn received(&self) -> Vec<(String, serde_json::Value)> {
        self.shared.state.lock().unwrap().received.clone()
    }

    /// How many times each step was asked for: `POST /key`, `GET /key`,
    /// `POST /validation`, `POST /encrypted`.
    pub fn counts(&self) -> [usize; 4] {
        self.shared.state.lock().unwrap().counts
    }

    /// Fingerprints of the keys in the server's keyring with `<email>`.
    pub fn knows_key_of(&self, email: &str) -> bool {
        let listing = self.shared.gpg.run(&["--with-colons", "--list-keys"], b"");
        String::from_utf8_lossy(&listing).contains(&format!("<{email}>"))
    }
}

impl Drop for EncryptedServer {
    fn drop(&mut self) {
        if let Some(accept) = self.shared.accept.lock().unwrap().take() {
            accept.abort();
        }
    }
}

fn text(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    response
}

/// `json.loads(request.get_json())`: the body must be a JSON string
/// (sent as application/json) holding a JSON object.
fn double_decoded(content_type: Option<&str>, body: &[u8]) -> Option<serde_json::Value> {
    if content_type != Some("application/json") {
        return None;
    }
    let outer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let inner: serde_json::Value = serde_json::from_str(outer.as_str()?).ok()?;
    inner.is_object().then_some(inner)
}

async fn respond(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cookie = parts
        .headers
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|line| {
            line.split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == "session")
                .map(|(_, value)| value.to_owned())
        });
    let step = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/pattoo/api/v1/agent/key") => 0,
        (&Method::GET, "/pattoo/api/v1/agent/key") => 1,
        (&Method::POST, "/pattoo/api/v1/agent/validation") => 2,
        (&Method::POST, "/pattoo/api/v1/agent/encrypted") => 3,
        _ => return text(404, "Not Found"),
    };
    let hangs = {
        let state = shared.state.lock().unwrap();
        state.hang_at.map(step_index) == Some(step)
    };
    if hangs {
        return std::future::pending().await;
    }
    // Flask-Session: an unknown or missing cookie starts a new session.
    let sid = {
        let mut state = shared.state.lock().unwrap();
        state.counts[step] += 1;
        match cookie.filter(|sid| state.sessions.contains_key(sid)) {
            Some(sid) => sid,
            None => {
                let sid = format!("s{}", shared.next_session.fetch_add(1, Ordering::Relaxed));
                state.sessions.insert(sid.clone(), Session::default());
                sid
            }
        }
    };
    let worker = shared.clone();
    let sid_in = sid.clone();
    let mut response = tokio::task::spawn_blocking(move || {
        handle(&worker, step, &sid_in, content_type.as_deref(), &body)
    })
    .await
    .unwrap();
    response.headers_mut().insert(
        "set-cookie",
        format!("session={sid}; Expires=Sun, 06 Dec 2026 08:49:37 GMT; HttpOnly; Path=/")
            .parse()
            .unwrap(),
    );
    let dies = {
        let state = shared.state.lock().unwrap();
        state.die_after.map(step_index) == Some(step)
    };
    if dies {
        if let Some(accept) = shared.accept.lock().unwrap().take() {
            accept.abort();
        }
    }
    response
}

fn step_index(step: Step) -> usize {
    match step {
        Step::PostKey => 0,
        Step::GetKey => 1,
        Step::Validation => 2,
    }
}

/// One step of `post.py`, blocking (gpg runs here).
fn handle(
    shared: &Shared,
    step: usize,
    sid: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let gpg = &shared.gpg;
    let session = |f: &mut dyn FnMut(&mut Session)| {
        let mut state = shared.state.lock().unwrap();
        f(state.sessions.get_mut(sid).unwrap());
    };
    let mut symm_key = None;
    let mut email = None;
    let mut nonce = None;
    session(&mut |s| {
        symm_key = s.symm_key.clone();
        email = s.email.clone();
        nonce = s.nonce.clone();
    });
    match step {
        0 => {
            if symm_key.is_some() {
                return text(208, "Symmetric key already set");
            }
            let Some(posted) = double_decoded(content_type, body) else {
                return text(500, "Internal Server Error");
            };
            let (Some(agent), Some(key)) = (
                posted["pattoo_agent_email"].as_str(),
                posted["pattoo_agent_key"].as_str(),
            ) else {
                return text(404, "Not Found");
            };
            gpg.import(key);
            let agent = agent.to_owned();
            session(&mut |s| s.email = Some(agent.clone()));
            text(202, "Key received")
        }
        1 => {
            let Some(email) = email else {
                return text(403, "Forbidden");
            };
            let nonce: String = (0..4)
                .map(|_| format!("{:016x}", fastrand::u64(..)))
                .collect();
            let encrypted_nonce = gpg.encrypt_to(&email, nonce.as_bytes());
            session(&mut |s| s.nonce = Some(nonce.clone()));
            let answer = serde_json::json!({
                "api_email": SERVER_ID,
                "api_key": gpg.export(SERVER_ID),
                "encrypted_nonce": encrypted_nonce,
            });
            let mut response = text(200, &answer.to_string());
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        }
        2 => {
            if symm_key.is_some() {
                return text(208, "Symmetric key already set");
            }
            let Some(nonce) = nonce else {
                return text(403, "Forbidden");
            };
            let Some(posted) = double_decoded(content_type, body) else {
                return text(500, "Internal Server Error");
            };
            let (Some(sealed_nonce), Some(sealed_key)) = (
                posted["encrypted_nonce"].as_str(),
                posted["encrypted_sym_key"].as_str(),
            ) else {
                return text(500, "Internal Server Error");
            };
            let key = String::from_utf8(gpg.decrypt(sealed_key)).unwrap();
            let opened = gpg.decrypt_symmetric(sealed_nonce, &key);
            if opened != nonce.as_bytes() {
                return text(401, "Unauthorized");
            }
            // The server deletes the agent's key once it is validated.
            if let Some(email) = &email {
                let fingerprint = String::from_utf8(gpg.run(
                    &["--with-colons", "--list-keys", &format!("<{email}>")],
                    b"",
                ))
                .unwrap()
                .lines()
                .find_map(|line| line.strip_prefix("fpr:"))
                .map(|rest| rest.trim_matches(':').to_owned())
                .unwrap();
                gpg.run(&["--yes", "--delete-keys", &fingerprint], b"");
            }
            session(&mut |s| s.symm_key = Some(key.clone()));
            text(200, "Symmetric key saved")
        }
        _ => {
            {
                let mut state = shared.state.lock().unwrap();
                if state.forget_at_encrypted > 0 {
                    state.forget_at_encrypted -= 1;
                    state.sessions.clear();
                    return text(208, "No session symmetric key");
                }
            }
            let Some(key) = symm_key else {
                return text(208, "No session symmetric key");
            };
            let Some(posted) = double_decoded(content_type, body) else {
                return text(500, "Internal Server Error");
            };
            let Some(sealed) = posted["encrypted_data"].as_str() else {
                return text(500, "Internal Server Error");
            };
            let opened = gpg.decrypt_symmetric(sealed, &key);
            let Ok(decrypted) = serde_json::from_slice::<serde_json::Value>(&opened) else {
                return text(500, "Internal Server Error");
            };
            let (Some(source), data) = (decrypted["source"].as_str(), &decrypted["data"]) else {
                return text(500, "Internal Server Error");
            };
            if !data.is_object() {
                return text(500, "Internal Server Error");
            }
            shared
                .state
                .lock()
                .unwrap()
                .received
                .push((source.to_owned(), data.clone()));
            text(202, "Decrypted and received")
        }
    }
}
