//! The poller's side of BACnet/IP: one UDP socket for every device, and a
//! client per device on it. This is the only module that names the
//! protocol crate (rustbac-client): the rest of the poller reads objects
//! through [`Device::read`] and [`Device::read_many`] and sees
//! [`ReadError`], so the crate can be replaced without touching it.
//!
//! rustbac-client does the APDU encoding, invoke ids, segment reassembly
//! (at most 1 MiB, within the request's deadline) and matches an answer to
//! its request by invoke id and service. Its client holds a lock for the
//! whole of each request, so one client on a shared socket would let a
//! silent device hold up every other; here each device has its own client
//! on a [`DeviceLink`]: frames to it go out of the shared socket, and the
//! socket's reader hands each datagram only to the device whose address
//! and port it came from. A device's requests follow one another (as the
//! Python agent's did); devices are read side by side.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustbac_client::{BacnetClient, ClientDataValue, ClientError};
use rustbac_core::types::{ObjectId as CoreObjectId, ObjectType as CoreType, PropertyId};
use rustbac_datalink::{DataLink, DataLinkAddress, DataLinkError};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::object::{ObjectId, Property, PropertyValue};

/// BVLC type byte of BACnet/IP (Annex J).
const BVLC_TYPE: u8 = 0x81;
const BVLC_ORIGINAL_UNICAST: u8 = 0x0a;
const BVLC_ORIGINAL_BROADCAST: u8 = 0x0b;
/// The device instance a device takes as its own (Clause 15.5.2).
pub const ANY_DEVICE: u32 = 4_194_303;
/// The largest BACnet/IP frame: BVLC, NPDU and a 1476-octet APDU fit.
const MAX_FRAME: usize = 1600;
/// Datagrams waiting for one device; more are dropped (a device, or
/// someone spoofing it, cannot make the agent hold more).
const QUEUE: usize = 32;

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The device answered with an Error PDU (or a property access error).
    #[error("the device answered error class {class}, code {code}")]
    Error { class: String, code: String },
    #[error("the device rejected the request (reason {0})")]
    Reject(String),
    #[error("the device aborted the request (reason {0})")]
    Abort(String),
    /// The answer could not be decoded, or was not what was asked for.
    #[error("the answer could not be read: {0}")]
    Malformed(String),
    /// The device's ReadPropertyMultiple answer left the property out.
    #[error("the device's answer left it out")]
    Missing,
    /// Sending failed (no route, socket closed).
    #[error("sending failed: {0}")]
    Io(String),
}

impl ReadError {
    /// The device said it does not do ReadPropertyMultiple.
    pub fn is_unsupported_service(&self) -> bool {
        match self {
            // 9: unrecognized-service (reject reason).
            ReadError::Reject(reason) => reason.starts_with("unrecognized-service"),
            ReadError::Error { code, .. } => {
                code.starts_with("service-request-denied") || code.starts_with("unrecognized")
            }
            ReadError::Abort(reason) => reason.starts_with("segmentation-not-supported"),
            _ => false,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, ReadError::Timeout(_))
    }
}

fn error_class(code: u32) -> String {
    let name = match code {
        0 => "device",
        1 => "object",
        2 => "property",
        3 => "resources",
        4 => "security",
        5 => "services",
        6 => "vt",
        7 => "communication",
        _ => return code.to_string(),
    };
    format!("{name} ({code})")
}

fn error_code(code: u32) -> String {
    let name = match code {
        0 => "other",
        2 => "configuration-in-progress",
        3 => "device-busy",
        5 => "dynamic-creation-not-supported",
        9 => "invalid-data-type",
        25 => "operational-problem",
        29 => "service-request-denied",
        31 => "unknown-object",
        32 => "unknown-property",
        37 => "value-out-of-range",
        42 => "invalid-array-index",
        45 => "optional-functionality-not-supported",
        50 => "read-access-denied",
        _ => return code.to_string(),
    };
    format!("{name} ({code})")
}

fn reject_reason(code: u8) -> String {
    let name = match code {
        0 => "other",
        1 => "buffer-overflow",
        2 => "inconsistent-parameters",
        3 => "invalid-parameter-data-type",
        4 => "invalid-tag",
        5 => "missing-required-parameter",
        6 => "parameter-out-of-range",
        7 => "too-many-arguments",
        8 => "undefined-enumeration",
        9 => "unrecognized-service",
        _ => return code.to_string(),
    };
    format!("{name} ({code})")
}

fn abort_reason(code: u8) -> String {
    let name = match code {
        0 => "other",
        1 => "buffer-overflow",
        2 => "invalid-apdu-in-this-state",
        3 => "preempted-by-higher-priority-task",
        4 => "segmentation-not-supported",
        5 => "security-error",
        6 => "insufficient-security",
        7 => "window-size-out-of-range",
        8 => "application-exceeded-reply-time",
        9 => "out-of-resources",
        10 => "tsm-timeout",
        11 => "apdu-too-long",
        _ => return code.to_string(),
    };
    format!("{name} ({code})")
}

fn read_error(error: ClientError, timeout: Duration) -> ReadError {
    match error {
        ClientError::Timeout => ReadError::Timeout(timeout),
        ClientError::RemoteServiceError {
            error_class_raw,
            error_code_raw,
            ..
        } => ReadError::Error {
            class: error_class_raw.map_or_else(|| "?".to_owned(), error_class),
            code: error_code_raw.map_or_else(|| "?".to_owned(), error_code),
        },
        ClientError::RemoteReject { reason } => ReadError::Reject(reject_reason(reason)),
        ClientError::RemoteAbort { reason, .. } => ReadError::Abort(abort_reason(reason)),
        ClientError::DataLink(DataLinkError::Io(error)) => ReadError::Io(error.to_string()),
        other => ReadError::Malformed(other.to_string()),
    }
}

fn core_object(object: ObjectId) -> CoreObjectId {
    CoreObjectId::new(
        CoreType::from_u16(object.object_type.code()),
        object.instance,
    )
}

fn core_property(property: Property) -> PropertyId {
    PropertyId::from_u32(property.code())
}

fn property_value(value: ClientDataValue) -> PropertyValue {
    match value {
        ClientDataValue::Real(v) => PropertyValue::Real(v),
        ClientDataValue::Double(v) => PropertyValue::Double(v),
        ClientDataValue::Unsigned(v) => PropertyValue::Unsigned(u64::from(v)),
        ClientDataValue::Signed(v) => PropertyValue::Signed(i64::from(v)),
        ClientDataValue::Enumerated(v) => PropertyValue::Enumerated(v),
        ClientDataValue::Boolean(v) => PropertyValue::Boolean(v),
        ClientDataValue::CharacterString(v) => PropertyValue::Text(v),
        ClientDataValue::Null => PropertyValue::Other("null".to_owned()),
        other => PropertyValue::Other(format!("{other:?}")),
    }
}

type Routes = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// The poller's UDP socket and the task that hands what arrives on it to
/// the devices it came from; the task ends when the link is dropped.
#[derive(Debug)]
pub struct Link {
    socket: Arc<UdpSocket>,
    routes: Routes,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    /// Binds `local`; with `fall_back`, an ephemeral port on the same
    /// address when `local`'s port is taken.
    pub async fn bind(local: SocketAddr, fall_back: bool) -> std::io::Result<(Link, bool)> {
        let (socket, fell_back) = match UdpSocket::bind(local).await {
            Ok(socket) => (socket, false),
            Err(error) if fall_back && error.kind() == std::io::ErrorKind::AddrInUse => {
                (UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?, true)
            }
            Err(error) => return Err(error),
        };
        let socket = Arc::new(socket);
        let routes: Routes = Arc::default();
        let reader = tokio::spawn(read_socket(socket.clone(), routes.clone()));
        Ok((
            Link {
                socket,
                routes,
                reader,
            },
            fell_back,
        ))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// A client for the device at `peer`, replacing any earlier one for
    /// that address.
    pub fn device(&self, peer: SocketAddr, timeout: Duration) -> Device {
        let (sender, receiver) = mpsc::channel(QUEUE);
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, sender);
        let link = DeviceLink {
            socket: self.socket.clone(),
            peer,
            inbox: tokio::sync::Mutex::new(receiver),
        };
        Device {
            peer,
            timeout,
            client: BacnetClient::with_datalink(link).with_response_timeout(timeout),
        }
    }

    /// Stops handing datagrams to devices no longer polled.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|peer, _| keep(peer));
    }
}

async fn read_socket(socket: Arc<UdpSocket>, routes: Routes) {
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let (n, source) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP port unreachable from an earlier send, and the like:
            // the device's read times out; the socket is still good.
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        let route = routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&source)
            .cloned();
        match route {
            Some(sender) => {
                if sender.try_send(buf[..n].to_vec()).is_err() {
                    tracing::debug!(%source, "datagram dropped: its device's queue is full");
                }
            }
            None => tracing::debug!(%source, bytes = n, "datagram from no polled device dropped"),
        }
    }
}

/// One device's view of the shared socket.
struct DeviceLink {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
}

impl DataLink for DeviceLink {
    async fn send(&self, address: DataLinkAddress, payload: &[u8]) -> Result<(), DataLinkError> {
        // The client only ever answers the device it asks (segment acks).
        if address != DataLinkAddress::Ip(self.peer) {
            return Err(DataLinkError::InvalidFrame);
        }
        let length = payload.len() + 4;
        if length > MAX_FRAME {
            return Err(DataLinkError::FrameTooLarge);
        }
        let mut frame = Vec::with_capacity(length);
        frame.extend_from_slice(&[BVLC_TYPE, BVLC_ORIGINAL_UNICAST]);
        frame.extend_from_slice(&(length as u16).to_be_bytes());
        frame.extend_from_slice(payload);
        self.socket.send_to(&frame, self.peer).await?;
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<(usize, DataLinkAddress), DataLinkError> {
        let frame = self.inbox.lock().await.recv().await.ok_or_else(|| {
            DataLinkError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the poller's socket is closed",
            ))
        })?;
        let npdu = unwrap_frame(&frame).ok_or(DataLinkError::InvalidFrame)?;
        if npdu.len() > buf.len() {
            return Err(DataLinkError::InvalidFrame);
        }
        buf[..npdu.len()].copy_from_slice(npdu);
        Ok((npdu.len(), DataLinkAddress::Ip(self.peer)))
    }
}

/// The NPDU of a BACnet/IP frame a device sent straight to the poller, or
/// `None` for anything else (the client then waits on).
fn unwrap_frame(frame: &[u8]) -> Option<&[u8]> {
    let [BVLC_TYPE, function, high, low, rest @ ..] = frame else {
        return None;
    };
    if !matches!(*function, BVLC_ORIGINAL_UNICAST | BVLC_ORIGINAL_BROADCAST)
        || usize::from(u16::from_be_bytes([*high, *low])) != frame.len()
    {
        return None;
    }
    // A version-1 NPDU that carries an APDU (not a network message).
    match rest {
        [1, control, ..] if control & 0x80 == 0 => Some(rest),
        _ => None,
    }
}

/// A client for one device, kept between polls.
pub struct Device {
    peer: SocketAddr,
    timeout: Duration,
    client: BacnetClient<DeviceLink>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("peer", &self.peer)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Device {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The instance in the object-identifier of the device object
    /// `instance` (the wildcard [`ANY_DEVICE`] names whichever device
    /// answers).
    pub async fn device_instance(&self, instance: u32) -> Result<u32, ReadError> {
        let value = self
            .client
            .read_property(
                DataLinkAddress::Ip(self.peer),
                CoreObjectId::new(CoreType::Device, instance),
                PropertyId::ObjectIdentifier,
            )
            .await
            .map_err(|e| read_error(e, self.timeout))?;
        match value {
            ClientDataValue::ObjectId(id) if id.object_type() == CoreType::Device => {
                Ok(id.instance())
            }
            other => Err(ReadError::Malformed(format!(
                "not a device object identifier: {other:?}"
            ))),
        }
    }

    /// The objects in the device object's object-list: (type code,
    /// instance) each.
    pub async fn object_list(&self, instance: u32) -> Result<Vec<(u16, u32)>, ReadError> {
        let value = self
            .client
            .read_property(
                DataLinkAddress::Ip(self.peer),
                CoreObjectId::new(CoreType::Device, instance),
                PropertyId::ObjectList,
            )
            .await
            .map_err(|e| read_error(e, self.timeout))?;
        let ids = match value {
            ClientDataValue::ObjectId(id) => vec![id],
            ClientDataValue::Constructed { values, .. } => values
                .into_iter()
                .map(|value| match value {
                    ClientDataValue::ObjectId(id) => Ok(id),
                    other => Err(ReadError::Malformed(format!(
                        "not an object identifier in the object-list: {other:?}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(ReadError::Malformed(format!(
                    "not an object-list: {other:?}"
                )))
            }
        };
        Ok(ids
            .into_iter()
            .map(|id| (id.object_type().to_u16(), id.instance()))
            .collect())
    }

    /// The object-name of any object (`kind` its type code).
    pub async fn name_of(&self, kind: u16, instance: u32) -> Result<String, ReadError> {
        let value = self
            .client
            .read_property(
                DataLinkAddress::Ip(self.peer),
                CoreObjectId::new(CoreType::from_u16(kind), instance),
                PropertyId::ObjectName,
            )
            .await
            .map_err(|e| read_error(e, self.timeout))?;
        match value {
            ClientDataValue::CharacterString(name) => Ok(name),
            other => Err(ReadError::Malformed(format!(
                "not a character string: {other:?}"
            ))),
        }
    }

    /// ReadProperty of one property.
    pub async fn read(
        &self,
        object: ObjectId,
        property: Property,
    ) -> Result<PropertyValue, ReadError> {
        self.client
            .read_property(
                DataLinkAddress::Ip(self.peer),
                core_object(object),
                core_property(property),
            )
            .await
            .map(property_value)
            .map_err(|e| read_error(e, self.timeout))
    }

    /// One ReadPropertyMultiple of `properties` of every one of `objects`:
    /// per object and property (in the order asked) its value, or
    /// [`ReadError::Missing`] where the answer has none (the device
    /// answered that property with an error, which the crate does not
    /// pass on: ask it alone to learn which).
    pub async fn read_many(
        &self,
        objects: &[ObjectId],
        properties: &[Property],
    ) -> Result<Vec<Vec<Result<PropertyValue, ReadError>>>, ReadError> {
        let requests: Vec<(CoreObjectId, PropertyId)> = objects
            .iter()
            .flat_map(|&object| {
                properties
                    .iter()
                    .map(move |&property| (core_object(object), core_property(property)))
            })
            .collect();
        let mut answers = self
            .client
            .read_many(DataLinkAddress::Ip(self.peer), &requests)
            .await
            .map_err(|e| read_error(e, self.timeout))?;
        Ok(objects
            .iter()
            .map(|&object| {
                properties
                    .iter()
                    .map(|&property| {
                        answers
                            .remove(&(core_object(object), core_property(property)))
                            .map(property_value)
                            .ok_or(ReadError::Missing)
                    })
                    .collect()
            })
            .collect())
    }
}

/// A device's I-Am.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IAm {
    pub address: SocketAddr,
    pub instance: u32,
    pub max_apdu: u32,
    /// 0 both, 1 transmit, 2 receive, 3 none.
    pub segmentation: u32,
    pub vendor_id: u32,
}

/// What arrived after a Who-Is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    Device(IAm),
    /// Something that is not BACnet/IP, or an I-Am that cannot be decoded.
    Garbage { from: SocketAddr, why: String },
}

/// Sends one Who-Is (`range`: device instances low..=high) from `socket`
/// to `to` (broadcast or one device), and collects what answers for
/// `wait`. Other BACnet messages (another's Who-Is, our own broadcast
/// coming back) are passed over.
pub async fn who_is(
    socket: &UdpSocket,
    to: SocketAddr,
    broadcast: bool,
    range: Option<(u32, u32)>,
    wait: Duration,
) -> std::io::Result<Vec<Heard>> {
    use rustbac_core::encoding::writer::Writer;
    use rustbac_core::npdu::Npdu;
    use rustbac_core::services::who_is::WhoIsRequest;

    let request = WhoIsRequest {
        low_limit: range.map(|r| r.0),
        high_limit: range.map(|r| r.1),
    };
    let mut buf = [0u8; 64];
    let mut w = Writer::new(&mut buf[4..]);
    let encoded = Npdu::new(0)
        .encode(&mut w)
        .and_then(|()| request.encode(&mut w));
    if encoded.is_err() {
        return Err(std::io::Error::other("the Who-Is does not encode"));
    }
    let length = w.as_written().len() + 4;
    let function = if broadcast {
        BVLC_ORIGINAL_BROADCAST
    } else {
        BVLC_ORIGINAL_UNICAST
    };
    buf[..2].copy_from_slice(&[BVLC_TYPE, function]);
    buf[2..4].copy_from_slice(&(length as u16).to_be_bytes());
    socket.send_to(&buf[..length], to).await?;

    let deadline = tokio::time::Instant::now() + wait;
    let mut heard = Vec::new();
    let mut frame = vec![0u8; MAX_FRAME];
    while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut frame)).await
    {
        let (n, from) = match received {
            Ok(received) => received,
            // ICMP unreachable from the Who-Is: no device there.
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        match i_am(&frame[..n]) {
            Ok(Some((instance, max_apdu, segmentation, vendor_id))) => {
                let device = IAm {
                    address: from,
                    instance,
                    max_apdu,
                    segmentation,
                    vendor_id,
                };
                if !heard.contains(&Heard::Device(device.clone())) {
                    heard.push(Heard::Device(device));
                }
            }
            Ok(None) => {}
            Err(why) => heard.push(Heard::Garbage { from, why }),
        }
        if heard.len() >= 10_000 {
            break;
        }
    }
    Ok(heard)
}

/// An I-Am's (instance, max APDU, segmentation, vendor id); `None` for
/// another BACnet message.
fn i_am(frame: &[u8]) -> Result<Option<(u32, u32, u32, u32)>, String> {
    use rustbac_core::apdu::UnconfirmedRequestHeader;
    use rustbac_core::encoding::reader::Reader;
    use rustbac_core::npdu::Npdu;
    use rustbac_core::services::i_am::{IAmRequest, SERVICE_I_AM};

    let npdu = unwrap_frame(frame).ok_or_else(|| {
        format!(
            "not a BACnet/IP frame with an APDU ({} bytes: {})",
            frame.len(),
            hex(&frame[..frame.len().min(16)])
        )
    })?;
    let mut r = Reader::new(npdu);
    Npdu::decode(&mut r).map_err(|e| format!("its NPDU does not decode: {e:?}"))?;
    // 0x10: an unconfirmed request; anything else is not an I-Am.
    if r.remaining() == 0 || npdu[r.position()] & 0xf0 != 0x10 {
        return Ok(None);
    }
    let header = UnconfirmedRequestHeader::decode(&mut r)
        .map_err(|e| format!("its APDU does not decode: {e:?}"))?;
    if header.service_choice != SERVICE_I_AM {
        return Ok(None);
    }
    let i_am = IAmRequest::decode_after_header(&mut r)
        .map_err(|e| format!("an I-Am that does not decode: {e:?}"))?;
    if i_am.device_id.object_type() != CoreType::Device {
        return Err(format!(
            "an I-Am for a {:?}, not a device",
            i_am.device_id.object_type()
        ));
    }
    Ok(Some((
        i_am.device_id.instance(),
        i_am.max_apdu,
        i_am.segmentation,
        i_am.vendor_id,
    )))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unicast_and_broadcast_frames_with_an_apdu_are_taken() {
        let good = [0x81, 0x0a, 0x00, 0x08, 0x01, 0x00, 0x30, 0x01];
        assert_eq!(unwrap_frame(&good), Some(&good[4..]));
        let mut wrong_length = good;
        wrong_length[3] = 0x09;
        assert_eq!(unwrap_frame(&wrong_length), None);
        let mut forwarded = good;
        forwarded[1] = 0x04;
        assert_eq!(unwrap_frame(&forwarded), None);
        let network_message = [0x81, 0x0a, 0x00, 0x07, 0x01, 0x80, 0x01];
        assert_eq!(unwrap_frame(&network_message), None);
        assert_eq!(unwrap_frame(&[0x81]), None);
        assert_eq!(unwrap_frame(&[]), None);
    }

    #[test]
    fn an_i_am_is_decoded_other_bacnet_passed_over_and_garbage_named() {
        let frame = [
            0x81, 0x0b, 0x00, 0x14, 0x01, 0x00, 0x10, 0x00, 0xc4, 0x02, 0x00, 0x04, 0xd2, 0x22,
            0x04, 0x00, 0x91, 0x00, 0x21, 0x2a,
        ];
        assert_eq!(i_am(&frame), Ok(Some((1234, 1024, 0, 42))));
        // Our own broadcast Who-Is, heard back.
        let who_is = [0x81, 0x0b, 0x00, 0x08, 0x01, 0x00, 0x10, 0x08];
        assert_eq!(i_am(&who_is), Ok(None));
        assert!(i_am(b"hi").unwrap_err().starts_with("not a BACnet/IP frame"));
        let cut = &frame[..12];
        let mut cut = cut.to_vec();
        cut[3] = 12;
        assert!(i_am(&cut).unwrap_err().starts_with("an I-Am that does not decode"));
    }

    #[test]
    fn errors_name_the_protocol_reasons() {
        let error = read_error(
            ClientError::RemoteServiceError {
                service_choice: 12,
                error_class_raw: Some(1),
                error_code_raw: Some(31),
                error_class: None,
                error_code: None,
            },
            Duration::from_secs(3),
        );
        assert_eq!(
            error.to_string(),
            "the device answered error class object (1), code unknown-object (31)"
        );
        let reject = read_error(ClientError::RemoteReject { reason: 9 }, Duration::ZERO);
        assert!(reject.is_unsupported_service());
        assert_eq!(
            read_error(ClientError::Timeout, Duration::from_secs(3)).to_string(),
            "no answer within 3s"
        );
    }
}
