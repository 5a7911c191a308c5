//! The client's side of the poller's UDP socket, one per target: random
//! request ids, answers taken only from the target's address and port, and
//! undecodable values found before the client reads them ([`super::screen`]).
//!
//! async-snmp numbers requests with one process-wide counter (+1 per
//! request, from a random start), so a device sees the ids the poller uses
//! next and, spoofing another device's address, could answer for it. Its
//! `Transport` trait lets a transport choose the ids: this one draws each
//! from the operating system's random source, for request ids and SNMPv3
//! message ids alike. Matching stays the client's: an answer must carry the
//! id of a request in flight on this handle and come from the address and
//! port the request went to (`strict_source`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_snmp::{Candidate, ReceiveLimits, RequestRegistration, Transport, UdpHandle};
use bytes::Bytes;

use super::screen::{self, BadValue};

/// A target's handle on the poller's socket.
#[derive(Clone)]
pub struct TargetTransport {
    handle: UdpHandle,
    /// Undecodable values in accepted answers, until the poll takes them.
    bad: Arc<Mutex<Vec<BadValue>>>,
}

impl TargetTransport {
    /// `handle` with strict source matching.
    pub fn new(handle: UdpHandle) -> Self {
        TargetTransport {
            handle: handle.strict_source(true),
            bad: Arc::default(),
        }
    }

    /// The undecodable values found since the last call.
    pub fn take_bad_values(&self) -> Vec<BadValue> {
        std::mem::take(&mut *self.bad.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A request id of 1..=i32::MAX (RFC 3416 allows no negative ones in
/// practice: agents mishandle them), unpredictable to the device.
pub fn random_request_id() -> i32 {
    loop {
        let id = (getrandom::u32().unwrap_or_else(|_| fastrand::u32(..)) & 0x7fff_ffff) as i32;
        if id != 0 {
            return id;
        }
    }
}

impl Transport for TargetTransport {
    fn send(&self, data: &[u8]) -> impl Future<Output = async_snmp::Result<()>> + Send {
        self.handle.send(data)
    }

    fn send_with_timeout(
        &self,
        data: &[u8],
        timeout: Duration,
    ) -> impl Future<Output = async_snmp::Result<()>> + Send {
        self.handle.send_with_timeout(data, timeout)
    }

    fn request_with<T, F>(
        &self,
        data: &[u8],
        registration: RequestRegistration,
        mut validate: F,
    ) -> impl Future<Output = async_snmp::Result<T>> + Send
    where
        T: Send,
        F: FnMut(Bytes, SocketAddr) -> async_snmp::Result<Candidate<T>> + Send,
    {
        let bad = self.bad.clone();
        self.handle
            .request_with(data, registration, move |data, source| {
                let (data, found) = match screen::screen(&data) {
                    Some((screened, found)) => (Bytes::from(screened), found),
                    None => (data, Vec::new()),
                };
                let candidate = validate(data, source)?;
                if matches!(candidate, Candidate::Accept(_)) && !found.is_empty() {
                    bad.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
                }
                Ok(candidate)
            })
    }

    fn peer_addr(&self) -> SocketAddr {
        self.handle.peer_addr()
    }

    fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    fn alloc_request_id(&self) -> i32 {
        random_request_id()
    }

    fn is_reliable(&self) -> bool {
        self.handle.is_reliable()
    }

    fn receive_limits(&self) -> ReceiveLimits {
        self.handle.receive_limits()
    }

    fn send_capacity(&self) -> usize {
        self.handle.send_capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_positive_and_not_a_sequence() {
        let ids: Vec<i32> = (0..64).map(|_| random_request_id()).collect();
        assert!(ids.iter().all(|id| *id > 0));
        let steps_of_one = ids
            .windows(2)
            .filter(|w| w[1] == w[0].wrapping_add(1))
            .count();
        assert!(steps_of_one < 2, "{ids:?}");
    }
}
