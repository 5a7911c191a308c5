//! One TCP connection per host:port, kept open across polls.
//!
//! Invariants:
//! - at most one request is in flight: every call takes `&mut self`;
//! - every connect and every request is bounded by the timeout, since
//!   tokio-modbus has none of its own;
//! - after a timeout or any transport or protocol error (a reply whose
//!   transaction id or function does not match, a closed socket) the
//!   connection is dropped, so a late reply can never be taken for the
//!   answer to a later request;
//! - a Modbus exception is an answer: the connection stays;
//! - a request on a connection kept from an earlier request that fails at
//!   the transport is retried at once on a fresh connection (devices close
//!   idle connections);
//! - a connect that fails, or a fresh connection that fails at the
//!   transport, backs off: no connection is tried again before the delay,
//!   doubling from [`BACKOFF_START`] to [`BACKOFF_MAX`], has passed, and
//!   the device answering resets it. A timeout does not back off, so one
//!   silent unit behind a gateway does not cost the other units.

use std::fmt;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

use super::address::Table;

pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// When the next connection attempt may be made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    pub fn allows(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|at| now >= at)
    }

    pub fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    pub fn failed(&mut self, now: Instant) {
        let delay = BACKOFF_START
            .saturating_mul(1 << self.failures.min(16))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + delay);
    }

    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

/// What one read returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

/// Why a read returned nothing.
#[derive(Debug)]
pub enum ReadError {
    /// The device answered with a Modbus exception.
    Exception(ExceptionCode),
    /// No answer within the timeout; the connection was dropped.
    Timeout(Duration),
    /// Connecting failed; nothing more is tried until the backoff ends.
    Connect(String),
    /// Still backing off from an earlier failure to connect.
    BackingOff(Duration),
    /// The connection broke or the reply did not fit the request; the
    /// connection was dropped.
    Transport(String),
}

impl ReadError {
    /// Whether nothing more can be read through this connection in this
    /// poll.
    pub fn ends_connection_for_poll(&self) -> bool {
        matches!(self, ReadError::Connect(_) | ReadError::BackingOff(_))
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Exception(code) => f.write_str(exception_name(*code)),
            ReadError::Timeout(after) => write!(f, "no answer within {after:?}"),
            ReadError::Connect(why) => write!(f, "cannot connect: {why}"),
            ReadError::BackingOff(left) => {
                write!(f, "not reconnecting for another {left:?} after failures")
            }
            ReadError::Transport(why) => write!(f, "connection failed: {why}"),
        }
    }
}

/// The name the Modbus specification gives an exception code.
pub fn exception_name(code: ExceptionCode) -> &'static str {
    match code {
        ExceptionCode::IllegalFunction => "illegal function",
        ExceptionCode::IllegalDataAddress => "illegal data address",
        ExceptionCode::IllegalDataValue => "illegal data value",
        ExceptionCode::ServerDeviceFailure => "server device failure",
        ExceptionCode::Acknowledge => "acknowledge (device busy with a long command)",
        ExceptionCode::ServerDeviceBusy => "server device busy",
        ExceptionCode::MemoryParityError => "memory parity error",
        ExceptionCode::GatewayPathUnavailable => "gateway path unavailable",
        ExceptionCode::GatewayTargetDevice => "gateway target device failed to respond",
        ExceptionCode::Custom(_) => "exception with a non-standard code",
    }
}

pub struct Connection {
    host: String,
    port: u16,
    timeout: Duration,
    context: Option<Context>,
    backoff: Backoff,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("connected", &self.context.is_some())
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl Connection {
    pub fn new(host: &str, port: u16, timeout: Duration) -> Self {
        Connection {
            host: host.to_owned(),
            port,
            timeout,
            context: None,
            backoff: Backoff::default(),
        }
    }

    pub fn endpoint(&self) -> String {
        crate::app::host_port(&self.host, self.port)
    }

    /// Reads `count` registers or bits from `table` of `unit`.
    pub async fn read(
        &mut self,
        unit: u8,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Data, ReadError> {
        let reused = self.context.is_some();
        match self.read_once(unit, table, start, count).await {
            Err(ReadError::Transport(why)) if reused => {
                tracing::debug!(target_address = %self.endpoint(), "kept connection failed ({why}); reconnecting once");
                self.read_once(unit, table, start, count).await
            }
            other => other,
        }
    }

    async fn read_once(
        &mut self,
        unit: u8,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Data, ReadError> {
        let limit = self.timeout;
        let reused = self.context.is_some();
        let context = self.connect().await?;
        context.set_slave(Slave(unit));
        let call = async {
            match table {
                Table::Coil => context
                    .read_coils(start, count)
                    .await
                    .map(|r| r.map(Data::Bits)),
                Table::DiscreteInput => context
                    .read_discrete_inputs(start, count)
                    .await
                    .map(|r| r.map(Data::Bits)),
                Table::InputRegister => context
                    .read_input_registers(start, count)
                    .await
                    .map(|r| r.map(Data::Registers)),
                Table::HoldingRegister => context
                    .read_holding_registers(start, count)
                    .await
                    .map(|r| r.map(Data::Registers)),
            }
        };
        match timeout(limit, call).await {
            Ok(Ok(Ok(data))) => {
                self.backoff.succeeded();
                let got = match &data {
                    Data::Registers(r) => r.len(),
                    Data::Bits(b) => b.len(),
                };
                if got < usize::from(count) {
                    self.context = None;
                    return Err(ReadError::Transport(format!(
                        "asked for {count}, got {got}"
                    )));
                }
                Ok(data)
            }
            Ok(Ok(Err(code))) => {
                self.backoff.succeeded();
                Err(ReadError::Exception(code))
            }
            Ok(Err(error)) => {
                self.context = None;
                // A device that accepts connections and drops them at once
                // must not be reconnected to on every request. A confused
                // reply (a protocol error) is no reason to wait.
                if !reused && matches!(error, tokio_modbus::Error::Transport(_)) {
                    self.backoff.failed(Instant::now());
                }
                Err(ReadError::Transport(error.to_string()))
            }
            Err(_) => {
                self.context = None;
                Err(ReadError::Timeout(self.timeout))
            }
        }
    }

    async fn connect(&mut self) -> Result<&mut Context, ReadError> {
        if self.context.is_none() {
            let now = Instant::now();
            if !self.backoff.allows(now) {
                let left = self
                    .backoff
                    .not_before()
                    .map(|at| at.saturating_duration_since(now))
                    .unwrap_or_default();
                return Err(ReadError::BackingOff(left));
            }
            let connecting = TcpStream::connect((self.host.as_str(), self.port));
            let stream = match timeout(self.timeout, connecting).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    self.backoff.failed(Instant::now());
                    return Err(ReadError::Connect(error.to_string()));
                }
                Err(_) => {
                    self.backoff.failed(Instant::now());
                    return Err(ReadError::Connect(format!(
                        "no connection within {:?}",
                        self.timeout
                    )));
                }
            };
            // Requests are small and each waits for its reply: Nagle's
            // algorithm would only add latency.
            let _ = stream.set_nodelay(true);
            self.context = Some(tokio_modbus::client::tcp::attach(stream));
        }
        Ok(self.context.as_mut().expect("connected above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets_on_success() {
        let mut backoff = Backoff::default();
        let mut now = Instant::now();
        assert!(backoff.allows(now));
        let mut waits = Vec::new();
        for _ in 0..9 {
            backoff.failed(now);
            let wait = backoff.not_before().unwrap() - now;
            waits.push(wait.as_secs());
            assert!(!backoff.allows(now + wait - Duration::from_millis(1)));
            now += wait;
            assert!(backoff.allows(now));
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        backoff.succeeded();
        assert!(backoff.allows(now));
        backoff.failed(now);
        assert_eq!(backoff.not_before().unwrap() - now, BACKOFF_START);
    }
}
