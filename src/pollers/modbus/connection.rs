//! One link per device: a TCP connection (Modbus TCP or RTU over TCP) or
//! a serial port (RTU), kept open across polls.
//!
//! Invariants:
//! - at most one request is in flight on a link: a request holds the
//!   link's lock from before it is sent until its answer (or timeout) is
//!   handled. A serial port is one link however many pollers name it: they
//!   share it through a process-wide registry, so a half-duplex bus never
//!   carries two requests at once;
//! - on a serial line, every request waits until the line has been quiet
//!   for the inter-frame silence (3.5 characters, at least 1.75 ms above
//!   19,200 baud) since the last frame;
//! - every connect and every request is bounded by the timeout: the
//!   framings ([`tcp`], [`rtu`]) wait on no clock of their own;
//! - on the RTU transports (framed by [`rtu`]), every
//!   request first discards whatever waits in the port or socket (on a
//!   serial line, until the line has been quiet for the silence), and a
//!   reply is taken only if its unit, function and byte count answer the
//!   request; any other frame is dropped, logged and counted, and the wait
//!   for the answer goes on; a copy of the previous answer that follows
//!   the request is dropped the same way ([`rtu`] says how it is told).
//!   A wrong value posted is worse than a gap;
//! - after a timeout or any transport error (a closed socket, an unplugged
//!   adapter), and on Modbus TCP after a reply whose transaction id, unit,
//!   function or length does not match ([`tcp`] says what is checked), the
//!   link is dropped; a request cancelled half way (the poll was stopped)
//!   drops it too;
//! - a Modbus exception is an answer: the link stays;
//! - on the RTU transports, a garbled reply (bytes that never made a frame
//!   with a good CRC) or only replies to something else within the timeout
//!   is that unit's failure, not the link's: the link stays up for the
//!   other units, and the read is asked again up to `retries` times, after
//!   the silence, each logged;
//! - a request on a link kept from an earlier request that fails at the
//!   transport is retried at once on a fresh link (devices close idle
//!   connections; an adapter re-plugged under the same name is reopened);
//! - a connect (or open) that fails, or a fresh link that fails at the
//!   transport, backs off: no link is tried again before the delay,
//!   doubling from [`BACKOFF_START`] to [`BACKOFF_MAX`], has passed, and
//!   the device answering resets it. A timeout does not back off, so one
//!   silent unit behind a gateway does not cost the other units.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::{timeout, Instant};
use tokio_modbus::ExceptionCode;

use super::address::Table;
use super::config::{Parity, SerialSettings, Transport};
use super::pdu::{Reply, Request};
use super::{rtu, tcp};

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
    /// RTU only: bytes arrived but never made a frame with a good CRC
    /// within the timeout (line noise, wrong baud rate or parity, two
    /// devices answering at once). The link stays.
    Garbled { bytes: u64, after: Duration },
    /// RTU only: within the timeout, only well-formed replies that answer
    /// something else (another unit, function or byte count): late or
    /// repeated replies, or a second master.
    Mismatch(String),
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
            ReadError::Garbled { bytes, after } => write!(
                f,
                "garbled reply: {bytes} byte(s) in {after:?} made no frame with a good CRC \
                 (check baud rate, parity and wiring)"
            ),
            ReadError::Mismatch(why) => write!(f, "reply did not match the request: {why}"),
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

/// What a request goes out on.
enum Session {
    /// Modbus TCP, framed by [`tcp`].
    Tcp(tcp::Client),
    /// RTU frames on a serial port or a socket, framed by [`rtu`].
    Rtu(rtu::Port),
}

/// What an RTU link has dropped in its life, across reopens and whichever
/// poller asked, for the logs.
#[derive(Debug, Default)]
struct Dropped {
    /// Bytes found waiting before a request: late or repeated replies.
    stale_bytes: u64,
    /// Good frames that answered another request.
    strays: u64,
}

/// The link a request goes out on, with what is kept between requests.
struct Link {
    session: Option<Session>,
    backoff: Backoff,
    /// When the serial line last carried a frame.
    quiet_since: Option<Instant>,
    /// The serial settings the open port has; another poller may name the
    /// same port with other settings.
    opened_with: Option<SerialSettings>,
    dropped: Dropped,
}

impl Link {
    fn new() -> Self {
        Link {
            session: None,
            backoff: Backoff::default(),
            quiet_since: None,
            opened_with: None,
            dropped: Dropped::default(),
        }
    }
}

/// Serial ports in use, by device, so that pollers naming one share it.
/// Weak: a port no poller names any more (after a reload) is closed.
static SERIAL_PORTS: LazyLock<std::sync::Mutex<HashMap<String, Weak<Mutex<Link>>>>> =
    LazyLock::new(Default::default);

fn shared_serial_link(device: &str) -> Arc<Mutex<Link>> {
    // Two spellings of one port (a /dev/serial/by-id link and its target)
    // are one bus; a device that does not exist yet is keyed as written.
    let key = std::fs::canonicalize(device)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| device.to_owned());
    let mut ports = SERIAL_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    ports.retain(|_, link| link.strong_count() > 0);
    if let Some(link) = ports.get(&key).and_then(Weak::upgrade) {
        return link;
    }
    let link = Arc::new(Mutex::new(Link::new()));
    ports.insert(key, Arc::downgrade(&link));
    link
}

pub struct Connection {
    host: String,
    port: u16,
    transport: Transport,
    timeout: Duration,
    retries: u8,
    link: Arc<Mutex<Link>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint())
            .field("transport", &self.transport.name())
            .finish()
    }
}

impl Connection {
    /// A link to `host:port`, or with `Transport::Rtu` to the serial port
    /// (shared with every other poller naming it). Opens nothing yet.
    pub fn new(
        host: &str,
        port: u16,
        transport: &Transport,
        timeout: Duration,
        retries: u8,
    ) -> Self {
        let link = match transport {
            Transport::Rtu(serial) => shared_serial_link(&serial.device),
            _ => Arc::new(Mutex::new(Link::new())),
        };
        Connection {
            host: host.to_owned(),
            port,
            transport: transport.clone(),
            timeout,
            retries,
            link,
        }
    }

    /// `host:port`, or the serial device.
    pub fn endpoint(&self) -> String {
        match &self.transport {
            Transport::Rtu(serial) => serial.device.clone(),
            _ => crate::address::host_port(&self.host, self.port),
        }
    }

    fn serial(&self) -> Option<&SerialSettings> {
        match &self.transport {
            Transport::Rtu(serial) => Some(serial),
            _ => None,
        }
    }

    /// Reads `count` registers or bits from `table` of `unit`.
    pub async fn read(
        &mut self,
        unit: u8,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Data, ReadError> {
        let link = self.link.clone();
        let mut link = link.lock().await;
        let mut reconnect = true;
        let mut retries = self.retries;
        loop {
            let reused = link.session.is_some();
            match self.read_once(&mut link, unit, table, start, count).await {
                Err(ReadError::Transport(why)) if reused && reconnect => {
                    reconnect = false;
                    tracing::debug!(target_address = %self.endpoint(), "kept connection failed ({why}); reconnecting once");
                }
                Err(error @ (ReadError::Garbled { .. } | ReadError::Mismatch(_)))
                    if retries > 0 =>
                {
                    retries -= 1;
                    tracing::warn!(
                        target = %self.endpoint(),
                        unit,
                        "unit {unit} on {}: {error}; asking again ({} retr{} left)",
                        self.endpoint(),
                        retries,
                        if retries == 1 { "y" } else { "ies" }
                    );
                }
                other => return other,
            }
        }
    }

    async fn read_once(
        &self,
        link: &mut Link,
        unit: u8,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Data, ReadError> {
        if let Some(serial) = self.serial() {
            if link.opened_with.as_ref() != Some(serial) && link.session.is_some() {
                tracing::debug!(device = %serial.device, "another poller opened the port with other settings; reopening it with {serial}");
                link.session = None;
            }
        }
        let reused = link.session.is_some();
        // The session is out of the link while the request is out: if the
        // poll is cancelled before the answer, it is dropped with the
        // request, and the next request opens a fresh link.
        let session = match link.session.take() {
            Some(session) => session,
            None => self.connect(link).await?,
        };
        let request = Request {
            unit,
            table,
            start,
            count,
        };
        match session {
            Session::Tcp(context) => self.read_tcp(link, context, reused, request).await,
            Session::Rtu(port) => self.read_rtu(link, port, reused, request).await,
        }
    }

    async fn read_tcp(
        &self,
        link: &mut Link,
        mut client: tcp::Client,
        reused: bool,
        request: Request,
    ) -> Result<Data, ReadError> {
        let reply = match timeout(self.timeout, client.ask(&request)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(tcp::Failure::Io(error))) => {
                // A device that accepts connections and drops them at once
                // must not be reconnected to on every request.
                if !reused {
                    link.backoff.failed(Instant::now());
                }
                return Err(ReadError::Transport(error.to_string()));
            }
            // A confused reply is no reason to wait before reconnecting.
            Ok(Err(tcp::Failure::Protocol(why))) => return Err(ReadError::Transport(why)),
            Err(_) => return Err(ReadError::Timeout(self.timeout)),
        };
        link.backoff.succeeded();
        link.session = Some(Session::Tcp(client));
        match reply {
            Reply::Registers(words) => Ok(Data::Registers(words)),
            Reply::Bits(bits) => Ok(Data::Bits(bits)),
            Reply::Exception(code) => Err(ReadError::Exception(code)),
        }
    }

    async fn read_rtu(
        &self,
        link: &mut Link,
        mut port: rtu::Port,
        reused: bool,
        request: Request,
    ) -> Result<Data, ReadError> {
        let unit = request.unit;
        let endpoint = self.endpoint();
        let failed = |link: &mut Link, error: std::io::Error| {
            // As over Modbus TCP: a link that breaks as soon as it is made
            // is not made again on every request.
            if !reused {
                link.backoff.failed(Instant::now());
            }
            ReadError::Transport(error.to_string())
        };
        let stale = match self.settle(link, &mut port).await {
            Ok(stale) => stale,
            Err(error) => return Err(failed(link, error)),
        };
        if stale > 0 {
            link.dropped.stale_bytes += stale as u64;
            tracing::warn!(
                target = %endpoint,
                unit,
                stale_bytes = stale,
                "{endpoint}: discarded {stale} byte(s) waiting on the line before asking unit {unit} (a late or repeated reply); {} discarded so far",
                link.dropped.stale_bytes
            );
        }
        let asked_at = Instant::now();
        let exchange = port.ask(&request, asked_at + self.timeout).await;
        if self.serial().is_some() {
            link.quiet_since = Some(Instant::now());
        }
        let exchange = match exchange {
            Ok(exchange) => exchange,
            Err(error) => return Err(failed(link, error)),
        };
        for what in &exchange.strays {
            link.dropped.strays += 1;
            tracing::warn!(
                target = %endpoint,
                unit,
                "unit {unit} on {endpoint}: dropped a reply that does not answer the request ({what}): a late or repeated reply, or another master on the line; {} dropped so far",
                link.dropped.strays
            );
        }
        if exchange.repeats > 0 {
            link.dropped.strays += exchange.repeats as u64;
            tracing::warn!(
                target = %endpoint,
                unit,
                "unit {unit} on {endpoint}: dropped a copy of the previous reply that came after the request went out, before its answer (the unit or gateway repeats replies); {} dropped so far",
                link.dropped.strays
            );
        }
        if exchange.reply.is_some() && exchange.noise > 0 {
            tracing::debug!(target = %endpoint, unit, "skipped {} byte(s) of noise before the reply", exchange.noise);
        }
        let data = match exchange.reply {
            Some(Reply::Registers(words)) => Ok(Data::Registers(words)),
            Some(Reply::Bits(bits)) => Ok(Data::Bits(bits)),
            Some(Reply::Exception(code)) => Err(ReadError::Exception(code)),
            None if !exchange.strays.is_empty() => Err(ReadError::Mismatch(format!(
                "no answer, and {} frame(s) that answer something else, the last {}",
                exchange.strays.len(),
                exchange.strays[exchange.strays.len() - 1]
            ))),
            None if exchange.noise > 0 => Err(ReadError::Garbled {
                bytes: exchange.noise as u64,
                after: asked_at.elapsed(),
            }),
            // Silence: the port is dropped, as after any timeout.
            None => return Err(ReadError::Timeout(self.timeout)),
        };
        // Noise or a stray reply is this unit's failure, not the link's:
        // the link stays for the next request, which discards whatever is
        // left first.
        link.backoff.succeeded();
        link.session = Some(Session::Rtu(port));
        data
    }

    /// Discards whatever waits on an RTU link before a request. On a serial
    /// line, first waits until the line has been quiet for the inter-frame
    /// silence since the last frame, and again after anything discarded
    /// (a reply sent twice is still coming), up to the timeout.
    async fn settle(&self, link: &mut Link, port: &mut rtu::Port) -> std::io::Result<usize> {
        let Some(serial) = self.serial() else {
            return port.discard_pending();
        };
        let give_up = Instant::now() + self.timeout;
        let mut stale = 0;
        loop {
            if let Some(quiet_since) = link.quiet_since {
                tokio::time::sleep_until(quiet_since + serial.inter_frame_silence()).await;
            }
            let discarded = port.discard_pending()?;
            stale += discarded;
            if discarded == 0 || Instant::now() >= give_up {
                return Ok(stale);
            }
            link.quiet_since = Some(Instant::now());
        }
    }

    /// Opens the link, unless still backing off from a failure.
    async fn connect(&self, link: &mut Link) -> Result<Session, ReadError> {
        let now = Instant::now();
        if !link.backoff.allows(now) {
            let left = link
                .backoff
                .not_before()
                .map(|at| at.saturating_duration_since(now))
                .unwrap_or_default();
            return Err(ReadError::BackingOff(left));
        }
        let opened = match &self.transport {
            Transport::Rtu(serial) => {
                open_serial(serial).map(|port| Session::Rtu(rtu::Port::new(port)))
            }
            Transport::Tcp | Transport::RtuOverTcp => {
                let connecting = TcpStream::connect((self.host.as_str(), self.port));
                match timeout(self.timeout, connecting).await {
                    Ok(Ok(stream)) => {
                        // Requests are small and each waits for its reply:
                        // Nagle's algorithm would only add latency.
                        let _ = stream.set_nodelay(true);
                        Ok(match self.transport {
                            Transport::Tcp => Session::Tcp(tcp::Client::new(stream)),
                            _ => Session::Rtu(rtu::Port::new(stream)),
                        })
                    }
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no connection within {:?}", self.timeout)),
                }
            }
        };
        match opened {
            Ok(session) => {
                link.opened_with = self.serial().cloned();
                // A port just opened may hold bytes from before: wait a
                // silence before the first request, as after any frame.
                if self.serial().is_some() {
                    link.quiet_since = Some(Instant::now());
                }
                Ok(session)
            }
            Err(why) => {
                link.backoff.failed(Instant::now());
                Err(ReadError::Connect(why))
            }
        }
    }
}

/// Opens a serial port, with an error that says what to do.
fn open_serial(serial: &SerialSettings) -> Result<tokio_serial::SerialStream, String> {
    use tokio_serial::{ClearBuffer, DataBits, SerialPort, StopBits};
    let builder = tokio_serial::new(serial.device.as_str(), serial.baud_rate)
        .data_bits(if serial.data_bits == 7 {
            DataBits::Seven
        } else {
            DataBits::Eight
        })
        .parity(match serial.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(if serial.stop_bits == 2 {
            StopBits::Two
        } else {
            StopBits::One
        });
    let port =
        tokio_serial::SerialStream::open(&builder).map_err(|e| serial_error(&serial.device, &e))?;
    // Whatever arrived before is not an answer to anything we will ask.
    let _ = port.clear(ClearBuffer::All);
    Ok(port)
}

fn serial_error(device: &str, error: &tokio_serial::Error) -> String {
    use std::io::ErrorKind as Io;
    use tokio_serial::ErrorKind;
    const README: &str = "\"Serial ports\" in /usr/share/doc/pattoo-agentd/README.md";
    match error.kind() {
        ErrorKind::Io(Io::NotFound) => format!(
            "{device} does not exist: check that the adapter is plugged in and the path is right \
             (ls -l /dev/serial/by-id/ lists USB adapters by names that do not change); under \
             systemd the service sees no devices until a drop-in allows them: see {README}"
        ),
        ErrorKind::Io(Io::PermissionDenied) => format!(
            "permission denied opening {device}: the agent's user needs the `dialout` group \
             (usermod -aG dialout pattoo); under systemd the service also needs \
             SupplementaryGroups=dialout and DeviceAllow={device} rw: see {README}"
        ),
        ErrorKind::NoDevice => format!(
            "{device} is busy: another program has it open ({}); find it with `fuser -v {device}` \
             (ModemManager and a getty on the port are the usual ones) and stop it",
            error.description
        ),
        _ => format!("cannot open {device}: {}", error.description),
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

    fn line(baud_rate: u32, parity: Parity) -> SerialSettings {
        SerialSettings {
            device: "/dev/ttyUSB0".into(),
            baud_rate,
            parity,
            data_bits: 8,
            stop_bits: 1,
        }
    }

    #[test]
    fn the_inter_frame_silence_is_three_and_a_half_characters_and_at_least_1750_us_above_19200_baud(
    ) {
        // 8N1 is 10 bits a character: 3.5 characters at 9600 baud are 3.646 ms.
        assert_eq!(
            line(9600, Parity::None).inter_frame_silence(),
            Duration::from_micros(3645)
        );
        // 8E1 is 11 bits: 4.010 ms.
        assert_eq!(
            line(9600, Parity::Even).inter_frame_silence(),
            Duration::from_micros(4010)
        );
        assert_eq!(
            line(19200, Parity::Even).inter_frame_silence(),
            Duration::from_micros(2005)
        );
        assert_eq!(
            line(38400, Parity::None).inter_frame_silence(),
            Duration::from_micros(1750)
        );
        assert_eq!(
            line(115200, Parity::Even).inter_frame_silence(),
            Duration::from_micros(1750)
        );
    }

    #[tokio::test]
    async fn pollers_naming_one_serial_port_share_one_link() {
        let serial = line(9600, Parity::None);
        let serial = SerialSettings {
            device: "/dev/pattoo-test-no-such-port".into(),
            ..serial
        };
        let transport = Transport::Rtu(serial.clone());
        let first = Connection::new(&serial.device, 0, &transport, Duration::from_secs(1), 1);
        let second = Connection::new(&serial.device, 0, &transport, Duration::from_secs(1), 1);
        assert!(Arc::ptr_eq(&first.link, &second.link));
        let tcp = Connection::new("127.0.0.1", 502, &Transport::Tcp, Duration::from_secs(1), 0);
        let other_tcp =
            Connection::new("127.0.0.1", 502, &Transport::Tcp, Duration::from_secs(1), 0);
        assert!(!Arc::ptr_eq(&tcp.link, &other_tcp.link));
    }

    #[tokio::test]
    async fn a_missing_serial_port_is_an_error_naming_it_and_what_to_do() {
        let serial = SerialSettings {
            device: "/dev/pattoo-test-missing".into(),
            ..line(9600, Parity::None)
        };
        let mut connection = Connection::new(
            &serial.device,
            0,
            &Transport::Rtu(serial.clone()),
            Duration::from_secs(1),
            1,
        );
        let error = connection
            .read(1, Table::HoldingRegister, 0, 1)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ReadError::Connect(_)), "{text}");
        assert!(
            text.contains("/dev/pattoo-test-missing does not exist"),
            "{text}"
        );
        assert!(text.contains("/dev/serial/by-id/"), "{text}");
        // Backing off: the next read does not try to open it again at once.
        let again = connection
            .read(1, Table::HoldingRegister, 0, 1)
            .await
            .unwrap_err();
        assert!(matches!(again, ReadError::BackingOff(_)), "{again}");
    }
}
