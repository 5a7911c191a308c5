//! One kept OPC UA session per server, behind a small interface: connect
//! (bounded by the server's timeout), Read, and forget the session when
//! its connection is lost so the next poll connects again, after a
//! backoff that grows with each failure.
//!
//! async-opcua drives a session with an event loop that must be polled;
//! a task of ours polls it once the session is up, with the library's own
//! reconnecting turned off: reconnection is this module's, so a dead
//! server costs one timeout per attempt and never a busy loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::opcua::client::{
    Client, ClientBuilder, IdentityToken, Password, Session, SessionPollResult,
};
use ::opcua::crypto::SecurityPolicy;
use ::opcua::types::{
    DataValue, EndpointDescription, MessageSecurityMode, ReadValueId, StatusCode,
    TimestampsToReturn, UserTokenType,
};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::config::{Security, SecurityMode, ServerSettings};

/// The first wait before connecting again after a failure; it doubles
/// with each failure in a row up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why a server gave nothing this poll.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot reach the server: {0}")]
    Connect(String),
    #[error("no answer within {0} ms while {1}; check that an OPC UA server listens there and that the network lets opc.tcp through")]
    Timeout(u128, &'static str),
    #[error("the server offers no endpoint with {0}{1}")]
    NoEndpoint(&'static str, &'static str),
    #[error("the server refused the session: {0}")]
    Refused(String),
    #[error("a certificate is not trusted (BadCertificateUntrusted): the server's, if it is new, is now in {0}/rejected/; check it and move it to {0}/trusted/ (or the server does not trust the agent's certificate)")]
    Untrusted(String),
    #[error("the Read failed: {0}")]
    Read(String),
    #[error("{0}")]
    Local(String),
    #[error("not connecting again for {0} s after {1} failures in a row")]
    BackingOff(u64, u32),
}

/// A server's session and what the poller remembers between polls.
#[derive(Default)]
pub struct ServerConnection {
    live: Option<Live>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for ServerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConnection")
            .field("connected", &self.live.is_some())
            .field("failures", &self.failures)
            .finish()
    }
}

struct Live {
    session: Arc<Session>,
    driver: JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Dropping the event loop closes the connection; the server ends
        // the session when its timeout runs out.
        self.session.disable_reconnects();
        self.driver.abort();
    }
}

/// A status that means the session or its connection is gone.
fn connection_lost(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BadTimeout
            | StatusCode::BadConnectionClosed
            | StatusCode::BadSecureChannelClosed
            | StatusCode::BadSecureChannelIdInvalid
            | StatusCode::BadSessionClosed
            | StatusCode::BadSessionIdInvalid
            | StatusCode::BadSessionNotActivated
            | StatusCode::BadNotConnected
            | StatusCode::BadCommunicationError
            | StatusCode::BadTcpInternalError
            | StatusCode::BadServerHalted
    )
}

impl ServerConnection {
    /// Reads the Value attribute of `nodes` in one Read, connecting first
    /// if there is no session. All of it within `timeout` for the connect
    /// and `timeout` for the Read.
    pub async fn read(
        &mut self,
        server: &ServerSettings,
        security: &Security,
        timeout: Duration,
        nodes: &[ReadValueId],
    ) -> Result<Vec<DataValue>, ServerError> {
        if self.live.as_ref().is_some_and(|l| l.driver.is_finished()) {
            tracing::info!(url = %server.url, "the OPC UA session to {} was lost; connecting again", server.url);
            self.live = None;
        }
        if self.live.is_none() {
            if let Some(at) = self.retry_at {
                let now = Instant::now();
                if at > now {
                    return Err(ServerError::BackingOff(
                        (at - now).as_secs().max(1),
                        self.failures,
                    ));
                }
            }
            match tokio::time::timeout(timeout, connect(server, security, timeout)).await {
                Ok(Ok(live)) => {
                    self.live = Some(live);
                    self.failures = 0;
                    self.retry_at = None;
                }
                Ok(Err(error)) => return Err(self.failed(error)),
                Err(_) => {
                    return Err(self.failed(ServerError::Timeout(
                        timeout.as_millis(),
                        "connecting (TCP, Hello, secure channel, session)",
                    )))
                }
            }
        }
        let Some(live) = &self.live else {
            unreachable!("connected above")
        };
        let read = live
            .session
            .read(nodes, TimestampsToReturn::Neither, 0.0);
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(error)) => {
                let status = error.status();
                if connection_lost(status) {
                    self.live = None;
                }
                Err(ServerError::Read(error.to_string()))
            }
            Err(_) => {
                self.live = None;
                Err(ServerError::Timeout(timeout.as_millis(), "reading"))
            }
        }
    }

    fn failed(&mut self, error: ServerError) -> ServerError {
        self.failures = self.failures.saturating_add(1);
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << self.failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        // The first failure is tried again at the next poll.
        self.retry_at = (self.failures > 1).then(|| Instant::now() + backoff);
        error
    }
}

fn client(security: &Security, timeout: Duration) -> Result<Client, ServerError> {
    let mut builder = ClientBuilder::new()
        .application_name("pattoo-agentd")
        .application_uri("urn:pattoo-agentd")
        .product_uri("urn:pattoo-agentd")
        .session_name("pattoo-agentd")
        .pki_dir(&security.pki_dir)
        .trust_server_certs(security.trust_unknown_servers)
        .verify_server_certs(true)
        .session_retry_limit(0)
        .request_timeout(timeout)
        // The library's keep-alives (every 10 s) hold the session between
        // polls; one dropped without closing (a reload, a lost connection)
        // ends on the server after two minutes rather than taking one of
        // its sessions for an hour, as the Python agent asked.
        .session_timeout(120_000);
    if let (Some(certificate), Some(key)) = (&security.certificate, &security.private_key) {
        builder = builder.certificate_path(certificate).private_key_path(key);
    }
    builder.client().map_err(|errors| {
        ServerError::Local(format!(
            "the OPC UA client settings are refused: {}",
            errors.join("; ")
        ))
    })
}

async fn connect(
    server: &ServerSettings,
    security: &Security,
    timeout: Duration,
) -> Result<Live, ServerError> {
    let token = match &server.user {
        None => IdentityToken::Anonymous,
        Some((user, password)) => {
            let password = password
                .read()
                .map_err(|e| ServerError::Local(format!("the password: {e}")))?;
            IdentityToken::UserName(user.clone(), Password::new(password.expose()))
        }
    };
    let (policy, mode) = match security.mode {
        SecurityMode::None => (SecurityPolicy::None, MessageSecurityMode::None),
        SecurityMode::Sign => (SecurityPolicy::Basic256Sha256, MessageSecurityMode::Sign),
        SecurityMode::SignAndEncrypt => (
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
        ),
    };
    let mut client = client(security, timeout)?;
    let endpoints = client
        .get_server_endpoints_from_url(server.url.as_str())
        .await
        .map_err(|e| ServerError::Connect(e.to_string()))?;
    let wanted = match &token {
        IdentityToken::Anonymous => UserTokenType::Anonymous,
        _ => UserTokenType::UserName,
    };
    let offered: Vec<&EndpointDescription> = endpoints
        .iter()
        .filter(|e| {
            e.security_mode == mode && SecurityPolicy::from_uri(e.security_policy_uri.as_ref()) == policy
        })
        .collect();
    if offered.is_empty() {
        return Err(ServerError::NoEndpoint(security.mode.describe(), ""));
    }
    let Some(endpoint) = offered.into_iter().find(|e| {
        e.user_identity_tokens
            .as_ref()
            .is_some_and(|tokens| tokens.iter().any(|t| t.token_type == wanted))
    }) else {
        return Err(ServerError::NoEndpoint(
            security.mode.describe(),
            if wanted == UserTokenType::Anonymous {
                " and anonymous users"
            } else {
                " and user names"
            },
        ));
    };
    let mut endpoint = endpoint.clone();
    // The server may name itself by a host this agent cannot reach.
    endpoint.endpoint_url = server.url.as_str().into();
    let (session, event_loop) = client
        .connect_to_endpoint_directly(endpoint, token)
        .map_err(|e| ServerError::Local(e.to_string()))?;
    let mut events = Box::pin(event_loop.enter());
    loop {
        match events.next().await {
            Some(Ok(SessionPollResult::Reconnected(_))) => break,
            Some(Ok(SessionPollResult::ReconnectFailed(status))) | Some(Err(status)) => {
                return Err(match status {
                    StatusCode::BadCertificateUntrusted => {
                        ServerError::Untrusted(security.pki_dir.display().to_string())
                    }
                    StatusCode::BadIdentityTokenInvalid
                    | StatusCode::BadIdentityTokenRejected
                    | StatusCode::BadUserAccessDenied
                    | StatusCode::BadSecurityChecksFailed
                    | StatusCode::BadTooManySessions => ServerError::Refused(status.to_string()),
                    other => ServerError::Connect(other.to_string()),
                })
            }
            Some(Ok(_)) => {}
            None => return Err(ServerError::Connect("the connection was closed".to_owned())),
        }
    }
    // From here the connection is ours to watch: a loss ends the driver,
    // and the next poll connects again.
    session.disable_reconnects();
    let driver = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if matches!(event, Err(_) | Ok(SessionPollResult::ConnectionLost(_))) {
                break;
            }
        }
    });
    Ok(Live { session, driver })
}
