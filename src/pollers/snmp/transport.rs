//! The client's side of the poller's UDP sockets: random request ids,
//! answers taken only from the target's address and port, and undecodable
//! values found before the client reads them ([`super::screen`]).
//!
//! # One target, one socket, read by the task that waits
//!
//! A poller keeps a small pool of UDP sockets per address family
//! ([`Sockets`]). A target's first request of a poll takes a free socket
//! (opening one only when none is free), and the target keeps it until its
//! poll ends ([`TargetTransport::polling`]); then it goes back to the pool.
//! A request sends on the target's socket and reads it itself until an
//! answer is accepted or the attempt's deadline passes. So:
//!
//! - no receive loop runs on another task, and no datagram is handed from
//!   one thread to another: the only wake-up per answer is the runtime's
//!   own, for the task that waits;
//! - every attempt of a request goes out from the same socket, so a late
//!   answer to the first attempt of a slow device is still taken while the
//!   retry waits, as it was when a poller had one socket; had the retry
//!   taken another socket, that answer would land on a socket another
//!   target (or nobody) reads, and be lost;
//! - a socket carries one request at a time (a request takes it out of the
//!   target's hands while it waits), so a datagram on it can only answer
//!   that request or be stale (a late or duplicated answer to an earlier
//!   one, a stranger's): it is taken only from the target's address and
//!   port, with the id of the request (or of an earlier attempt of the same
//!   request, as the client registers them), and the community and version
//!   the client checks;
//! - a target has one request in flight at a time, keeps its socket only
//!   while it is polled, and at most `max_concurrent_targets` targets are
//!   polled at once, so a poller opens at most that many sockets per
//!   family, whatever the number of targets, and keeps them for the next
//!   poll.
//!
//! # Request ids
//!
//! async-snmp numbers requests with one process-wide counter (+1 per
//! request, from a random start), so a device sees the ids the poller uses
//! next and, spoofing another device's address, could answer for it. Its
//! `Transport` trait lets a transport choose the ids: these come from a
//! ChaCha12 generator per pool, seeded once from the operating system, for
//! request ids and SNMPv3 message ids alike; unpredictable without asking
//! the kernel for randomness per request.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_snmp::{
    Candidate, Error, ReceiveLimits, RequestRegistration, ResponseIdentity, Transport,
    UDP_RECEIVE_BUFFER_SIZE, UDP_RECEIVE_LIMITS,
};
use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::screen::{self, BadValue};

/// The largest request sent, as async-snmp's own UDP transport bounds it
/// (an Ethernet MTU less the IP and UDP headers); the client splits a GET
/// that would be larger.
const SEND_CAPACITY: usize = 1472;

/// A poller's UDP sockets for one address family, and its request ids.
pub struct Sockets {
    /// `0.0.0.0:0` or `[::]:0`.
    bind: SocketAddr,
    free: Mutex<Vec<UdpSocket>>,
    /// Sockets opened so far (free or lent).
    opened: AtomicUsize,
    ids: Mutex<ChaCha12Rng>,
}

impl Sockets {
    /// Opens the first socket, so that a poller that cannot have one says
    /// so before any target is asked.
    pub fn open(bind: SocketAddr) -> io::Result<Arc<Self>> {
        let sockets = Sockets {
            bind,
            free: Mutex::new(Vec::new()),
            opened: AtomicUsize::new(0),
            ids: Mutex::new(ChaCha12Rng::from_seed(seed())),
        };
        let first = sockets.new_socket()?;
        sockets.put_back(first);
        Ok(Arc::new(sockets))
    }

    /// How many sockets this pool has opened.
    #[cfg(test)]
    fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    fn new_socket(&self) -> io::Result<UdpSocket> {
        let socket = std::net::UdpSocket::bind(self.bind)?;
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket)?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(socket)
    }

    /// A free socket, or a new one when none is free.
    fn take(&self) -> io::Result<UdpSocket> {
        let free = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match free {
            Some(socket) => Ok(socket),
            None => self.new_socket(),
        }
    }

    fn put_back(&self, socket: UdpSocket) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(socket);
    }

    /// A request id of 1..=i32::MAX (RFC 3416 allows no negative ones in
    /// practice: agents mishandle them), unpredictable to the device.
    pub fn request_id(&self) -> i32 {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let id = (ids.next_u32() & 0x7fff_ffff) as i32;
            if id != 0 {
                return id;
            }
        }
    }
}

/// The generator's seed from the operating system; should that fail (no
/// random source at all), from the process's own, with a warning.
fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if let Err(error) = getrandom::fill(&mut seed) {
        tracing::warn!(%error, "the operating system's random source failed; SNMP request ids are less unpredictable");
        seed.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    seed
}

/// The socket a target keeps while it is polled.
#[derive(Default)]
struct Hold {
    /// Whether the target is being polled: only then does a request leave
    /// its socket with the target.
    polling: bool,
    /// Empty while a request has it, and between polls.
    socket: Option<Kept>,
}

struct Kept {
    socket: UdpSocket,
    /// Whether the last request on it took its answer. If it did not (it
    /// timed out), what waits on the socket may be the late answer the
    /// retry is for, so its readiness must not be forgotten.
    answered: bool,
}

/// A socket lent to one request: the target's own, or one from the pool.
/// When dropped it stays with the target if the target is being polled
/// (and has no other), else it goes back to the pool.
struct Lent<'a> {
    transport: &'a TargetTransport,
    socket: Option<UdpSocket>,
    /// Whether this request took its answer.
    answered: bool,
    /// Whether whatever waits on the socket is stale for this request.
    stale: bool,
}

impl Lent<'_> {
    fn socket(&self) -> &UdpSocket {
        self.socket.as_ref().expect("lent until dropped")
    }

    /// Forgets whether the socket was readable, without a system call,
    /// when what may be left on it is stale (the last request on it had its
    /// answer, or the socket comes from the pool): that is read (and
    /// dropped) when the next datagram's readiness wakes this request.
    /// Saves the `recvfrom` that would only say "no datagram yet" after
    /// each send.
    fn forget_stale_readiness(&self) {
        if self.stale {
            let _ = self.socket().try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
    }

    /// The next datagram and where it came from.
    async fn receive(&self) -> io::Result<(Bytes, SocketAddr)> {
        thread_local! {
            /// One receive buffer per thread, not per socket: a datagram
            /// is copied out at once (the client keeps parts of it).
            static BUFFER: RefCell<Box<[u8]>> =
                RefCell::new(vec![0; UDP_RECEIVE_BUFFER_SIZE].into_boxed_slice());
        }
        let socket = self.socket();
        loop {
            socket.readable().await?;
            let received = BUFFER.with_borrow_mut(|buffer| {
                socket
                    .try_recv_from(buffer)
                    .map(|(n, source)| (Bytes::copy_from_slice(&buffer[..n]), source))
            });
            match received {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        let mut hold = self.transport.hold();
        if hold.polling && hold.socket.is_none() {
            hold.socket = Some(Kept {
                socket,
                answered: self.answered,
            });
        } else {
            drop(hold);
            self.transport.sockets.put_back(socket);
        }
    }
}

/// A target's poll in progress: while it lives, the target's requests
/// share one socket; when it drops, the socket goes back to the pool.
pub struct Polling(TargetTransport);

impl Drop for Polling {
    fn drop(&mut self) {
        let mut hold = self.0.hold();
        hold.polling = false;
        let kept = hold.socket.take();
        drop(hold);
        if let Some(kept) = kept {
            self.0.sockets.put_back(kept.socket);
        }
    }
}

/// A target's handle on the poller's sockets.
#[derive(Clone)]
pub struct TargetTransport {
    sockets: Arc<Sockets>,
    target: SocketAddr,
    /// Shared by the clones (the client's own included).
    held: Arc<Mutex<Hold>>,
    /// Undecodable values in accepted answers, until the poll takes them.
    bad: Arc<Mutex<Vec<BadValue>>>,
}

impl TargetTransport {
    pub fn new(sockets: Arc<Sockets>, target: SocketAddr) -> Self {
        TargetTransport {
            sockets,
            target,
            held: Arc::default(),
            bad: Arc::default(),
        }
    }

    /// Starts a poll of the target: until the returned guard drops, every
    /// request (and every attempt of one) goes out from one socket, so a
    /// late answer to an earlier attempt still reaches the retry.
    pub fn polling(&self) -> Polling {
        self.hold().polling = true;
        Polling(self.clone())
    }

    fn hold(&self) -> std::sync::MutexGuard<'_, Hold> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The target's socket, or one from the pool when it has none (its
    /// first request of the poll, or a request while another has it).
    fn lend(&self) -> io::Result<Lent<'_>> {
        let kept = self.hold().socket.take();
        let (socket, stale) = match kept {
            Some(kept) => (kept.socket, kept.answered),
            None => (self.sockets.take()?, true),
        };
        Ok(Lent {
            transport: self,
            socket: Some(socket),
            answered: false,
            stale,
        })
    }

    /// The undecodable values found since the last call.
    pub fn take_bad_values(&self) -> Vec<BadValue> {
        std::mem::take(&mut *self.bad.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn network(&self, source: io::Error) -> Box<Error> {
        Error::Network {
            target: self.target,
            source,
        }
        .boxed()
    }

    fn too_large(&self, size: usize) -> async_snmp::Result<()> {
        if size > SEND_CAPACITY {
            return Err(Error::OutboundMessageTooLarge {
                size,
                limit: SEND_CAPACITY,
            }
            .boxed());
        }
        Ok(())
    }

    /// Whether a datagram from `source` may be the target's: its address
    /// and port (not an IPv6 flow label or scope, which the answer may
    /// carry differently).
    fn is_target(&self, source: SocketAddr) -> bool {
        source.ip() == self.target.ip() && source.port() == self.target.port()
    }

    async fn exchange<T, F>(
        &self,
        data: &[u8],
        registration: RequestRegistration,
        mut validate: F,
    ) -> async_snmp::Result<T>
    where
        F: FnMut(Bytes, SocketAddr) -> async_snmp::Result<Candidate<T>>,
    {
        self.too_large(data.len())?;
        let started = tokio::time::Instant::now();
        let deadline = registration.deadline();
        let timeout = || {
            Error::Timeout {
                target: self.target,
                elapsed: deadline.saturating_duration_since(started),
                retries: 0,
            }
            .boxed()
        };
        if started >= deadline {
            return Err(timeout());
        }
        let mut lent = self.lend().map_err(|e| self.network(e))?;
        let wait = async {
            lent.forget_stale_readiness();
            lent.socket()
                .send_to(data, self.target)
                .await
                .map_err(|e| self.network(e))?;
            loop {
                let (datagram, source) = lent.receive().await.map_err(|e| self.network(e))?;
                if !self.is_target(source)
                    || registration.evaluate_response_identity(&datagram, true)
                        == ResponseIdentity::Reject
                {
                    continue;
                }
                let (datagram, found) = match screen::screen(&datagram) {
                    Some((screened, found)) => (Bytes::from(screened), found),
                    None => (datagram, Vec::new()),
                };
                if let Candidate::Accept(answer) = validate(datagram, source)? {
                    lent.answered = true;
                    if !found.is_empty() {
                        self.bad
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(found);
                    }
                    return Ok(answer);
                }
            }
        };
        tokio::time::timeout_at(deadline, wait)
            .await
            .unwrap_or_else(|_| Err(timeout()))
    }
}

impl Transport for TargetTransport {
    async fn send(&self, data: &[u8]) -> async_snmp::Result<()> {
        self.too_large(data.len())?;
        let lent = self.lend().map_err(|e| self.network(e))?;
        lent.socket()
            .send_to(data, self.target)
            .await
            .map_err(|e| self.network(e))?;
        Ok(())
    }

    fn request_with<T, F>(
        &self,
        data: &[u8],
        registration: RequestRegistration,
        validate: F,
    ) -> impl Future<Output = async_snmp::Result<T>> + Send
    where
        T: Send,
        F: FnMut(Bytes, SocketAddr) -> async_snmp::Result<Candidate<T>> + Send,
    {
        self.exchange(data, registration, validate)
    }

    fn peer_addr(&self) -> SocketAddr {
        self.target
    }

    fn local_addr(&self) -> SocketAddr {
        self.sockets.bind
    }

    fn alloc_request_id(&self) -> i32 {
        self.sockets.request_id()
    }

    fn is_reliable(&self) -> bool {
        false
    }

    fn receive_limits(&self) -> ReceiveLimits {
        UDP_RECEIVE_LIMITS
    }

    fn send_capacity(&self) -> usize {
        SEND_CAPACITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_ids_are_positive_and_not_a_sequence() {
        let sockets = Sockets::open("127.0.0.1:0".parse().unwrap()).unwrap();
        let ids: Vec<i32> = (0..64).map(|_| sockets.request_id()).collect();
        assert!(ids.iter().all(|id| *id > 0));
        let steps_of_one = ids
            .windows(2)
            .filter(|w| w[1] == w[0].wrapping_add(1))
            .count();
        assert!(steps_of_one < 2, "{ids:?}");
    }

    #[tokio::test]
    async fn a_socket_is_opened_only_when_every_other_is_taken() {
        let sockets = Sockets::open("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(sockets.opened(), 1);
        let a = sockets.take().unwrap();
        let b = sockets.take().unwrap();
        assert_eq!(sockets.opened(), 2);
        sockets.put_back(a);
        sockets.put_back(b);
        for _ in 0..3 {
            let c = sockets.take().unwrap();
            let d = sockets.take().unwrap();
            sockets.put_back(c);
            sockets.put_back(d);
        }
        assert_eq!(sockets.opened(), 2);
    }

    fn port(lent: &Lent<'_>) -> u16 {
        lent.socket().local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_polled_target_keeps_its_socket_until_its_poll_ends() {
        let sockets = Sockets::open("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = TargetTransport::new(sockets.clone(), "127.0.0.1:1".parse().unwrap());
        let b = TargetTransport::new(sockets.clone(), "127.0.0.1:2".parse().unwrap());
        let polling = a.polling();
        let first = a.lend().map(|lent| port(&lent)).unwrap();
        // Another target asks between two of a's requests: it gets a
        // socket of its own, not a's.
        let other = b.lend().map(|lent| port(&lent)).unwrap();
        assert_ne!(other, first);
        assert_eq!(a.lend().map(|lent| port(&lent)).unwrap(), first);
        drop(polling);
        // Back in the pool: two targets again need no third socket.
        let (_a, _b) = (a.lend().unwrap(), b.lend().unwrap());
        assert_eq!(sockets.opened(), 2);
    }

    /// One BER element with a short-form length.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        [&[tag, contents.len() as u8][..], contents].concat()
    }

    /// An SNMPv2c message of PDU `tag` with request id `id` and no
    /// varbinds, community `public`.
    fn message(tag: u8, id: u8) -> Vec<u8> {
        let pdu = [
            tlv(0x02, &[id]),
            tlv(0x02, &[0]),
            tlv(0x02, &[0]),
            tlv(0x30, &[]),
        ]
        .concat();
        tlv(
            0x30,
            &[tlv(0x02, &[1]), tlv(0x04, b"public"), tlv(tag, &pdu)].concat(),
        )
    }

    fn registration(id: u8, timeout: std::time::Duration) -> RequestRegistration {
        RequestRegistration::community(
            i32::from(id),
            tokio::time::Instant::now() + timeout,
            async_snmp::CommunityVersion::V2c,
            Bytes::from_static(b"public"),
            async_snmp::CommunityResponsePolicy::Exact,
        )
    }

    fn accept(data: Bytes, _: SocketAddr) -> async_snmp::Result<Candidate<Bytes>> {
        Ok(Candidate::Accept(data))
    }

    #[tokio::test]
    async fn a_late_answer_to_a_first_attempt_reaches_the_retry_though_another_target_asked_between()
    {
        use futures_util::FutureExt;
        use std::time::Duration;

        let sockets = Sockets::open("127.0.0.1:0".parse().unwrap()).unwrap();
        let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = TargetTransport::new(sockets.clone(), device.local_addr().unwrap());
        let b = TargetTransport::new(sockets.clone(), silent.local_addr().unwrap());
        let (_a_polling, _b_polling) = (a.polling(), b.polling());
        let get = message(0xa0, 7);

        // The first attempt: the device is silent for now.
        let first = a
            .request_with(&get, registration(7, Duration::from_millis(100)), accept)
            .await;
        assert!(
            matches!(first.as_ref().map_err(|e| &**e), Err(Error::Timeout { .. })),
            "{first:?}"
        );
        let mut buffer = [0u8; 512];
        let (_, first_from) = device.recv_from(&mut buffer).await.unwrap();

        // Another target sends a request and waits for its answer.
        let other_get = message(0xa0, 9);
        let other = b.request_with(&other_get, registration(9, Duration::from_secs(60)), accept);
        let mut other = std::pin::pin!(other);
        assert!((&mut other).now_or_never().is_none());

        // The retry; once it is out, the device answers the first attempt.
        // (Generous: the answer comes at once.)
        let retry = a.request_with(&get, registration(7, Duration::from_secs(10)), accept);
        let late = message(0xa2, 7);
        let answer = async {
            device.recv_from(&mut buffer).await.unwrap();
            device.send_to(&late, first_from).await.unwrap();
        };
        let (taken, ()) = tokio::join!(retry, answer);
        assert_eq!(taken.unwrap().as_ref(), late.as_slice());
    }

    #[tokio::test]
    async fn two_pools_draw_different_ids() {
        let a = Sockets::open("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = Sockets::open("127.0.0.1:0".parse().unwrap()).unwrap();
        let a: Vec<i32> = (0..4).map(|_| a.request_id()).collect();
        let b: Vec<i32> = (0..4).map(|_| b.request_id()).collect();
        assert_ne!(a, b);
    }
}
