//! A BACnet/IP peer that misbehaves (a small UDP responder here): garbled
//! answers, answers to other requests, a segmented answer it never
//! finishes or never ends, Reject and Abort. Each ends in a clear error
//! naming the device and object, in bounded time and memory, and never a
//! panic; what can be read is still read.
#![cfg(feature = "bacnet")]

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pattoo_agentd::model::Value;
use pattoo_agentd::pollers::Poller;
use tokio::net::UdpSocket;

/// What the poller asked: the confirmed request's invoke id, service
/// choice and the rest of the APDU.
struct Request {
    invoke: u8,
    service: u8,
    rest: Vec<u8>,
}

const READ_PROPERTY: u8 = 12;
const READ_PROPERTY_MULTIPLE: u8 = 14;

/// A BACnet/IP frame (Original-Unicast-NPDU, no routing) around `apdu`.
fn frame(apdu: &[u8]) -> Vec<u8> {
    let length = (apdu.len() + 6) as u16;
    let mut frame = vec![0x81, 0x0a];
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&[0x01, 0x00]);
    frame.extend_from_slice(apdu);
    frame
}

/// A ReadProperty answer with a REAL for the object asked.
fn real_answer(request: &Request, value: f32) -> Vec<u8> {
    // The request's object (context tag 0) and property (context tag 1).
    let mut apdu = vec![0x30, request.invoke, READ_PROPERTY];
    apdu.extend_from_slice(&request.rest[..7]);
    apdu.push(0x3e);
    apdu.push(0x44);
    apdu.extend_from_slice(&value.to_be_bytes());
    apdu.push(0x3f);
    frame(&apdu)
}

/// A ReadProperty Error for the request: class object (1), code
/// unknown-object (31).
fn unknown_object(request: &Request) -> Vec<u8> {
    frame(&[0x50, request.invoke, READ_PROPERTY, 0x91, 1, 0x91, 31])
}

/// Appends to a ReadPropertyMultiple answer analog-value `instance`'s
/// result, its present value `instance + 0.5` as a REAL, leaving its list
/// of results open for more.
fn present_value_result(apdu: &mut Vec<u8>, instance: u8) {
    apdu.extend_from_slice(&[0x0c, 0x00, 0x80, 0x00, instance, 0x1e]);
    apdu.extend_from_slice(&[0x29, 85, 0x4e, 0x44]);
    apdu.extend_from_slice(&(f32::from(instance) + 0.5).to_be_bytes());
    apdu.push(0x4f);
}

/// The object instance a ReadProperty asks for.
fn instance(request: &Request) -> u32 {
    u32::from_be_bytes([0, request.rest[2], request.rest[3], request.rest[4]]) & 0x3f_ffff
}

/// A device at the returned address answering each request (and segment
/// ack) with what `answer` makes of it; counts the datagrams it got.
async fn responder(
    answer: impl Fn(&Request) -> Vec<Vec<u8>> + Send + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            counted.fetch_add(1, Ordering::Relaxed);
            let datagram = &buf[..n];
            // BVLC (4), NPDU (2), then the APDU.
            if n < 8 {
                continue;
            }
            let apdu = &datagram[6..];
            let request = match apdu[0] >> 4 {
                // Confirmed request: flags, max segments/APDU, invoke, service.
                0 if apdu.len() >= 4 => Request {
                    invoke: apdu[2],
                    service: apdu[3],
                    rest: apdu[4..].to_vec(),
                },
                // Segment ack: invoke id, sequence number.
                4 if apdu.len() >= 3 => Request {
                    invoke: apdu[1],
                    service: 0xff,
                    rest: apdu[2..].to_vec(),
                },
                _ => continue,
            };
            for reply in answer(&request) {
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    (address, count)
}

fn poller(device: SocketAddr, extra: &str) -> Poller {
    poller_of(&format!("['{device}']"), extra)
}

/// The poller `odd` of `targets` (a YAML list).
fn poller_of(targets: &str, extra: &str) -> Poller {
    common::poller::from_entries(&format!(
        "    - name: odd\n      type: bacnet\n      local_address: 127.0.0.1\n      local_port: 0\n      targets: {targets}\n{extra}"
    ))
}

/// (key, value) of each datapoint of `target`, in order.
fn key_values(target: &pattoo_agentd::model::TargetData) -> Vec<(String, Value)> {
    target
        .datapoints
        .iter()
        .map(|d| (d.key.to_string(), d.value.clone()))
        .collect()
}

#[tokio::test]
async fn a_garbled_answer_is_a_logged_error_for_its_object() {
    let (device, _) = responder(|request| {
        // A complex ack whose value is no BACnet encoding at all.
        vec![frame(&[
            0x30,
            request.invoke,
            request.service,
            0xff,
            0xff,
            0x07,
        ])]
    })
    .await;
    let mut poller = poller(
        device,
        "      object_names: false\n      objects: [av:1, av:2]\n",
    );
    let (result, logs) = common::poller::poll_logged(&mut poller).await;
    assert_eq!(
        result.unwrap_err(),
        "poller odd: nothing read: all 2 read(s) failed (see the warnings above)"
    );
    for object in ["analog-value 1", "analog-value 2"] {
        assert!(
            logs.contains(&format!(
                "{device} ({device}): read {object} present-value: the answer could not be read"
            )),
            "{logs}"
        );
    }
}

#[tokio::test]
async fn answers_with_another_invoke_id_are_not_taken() {
    let (device, count) = responder(|request| {
        let mut wrong = Request {
            invoke: request.invoke.wrapping_add(1),
            service: READ_PROPERTY,
            rest: request.rest.clone(),
        };
        if request.service == READ_PROPERTY {
            vec![real_answer(&wrong, 99.0)]
        } else {
            wrong.service = request.service;
            vec![frame(&[0x30, wrong.invoke, wrong.service])]
        }
    })
    .await;
    let mut poller = poller(
        device,
        "      object_names: false\n      timeout_ms: 300\n      retries: 1\n      max_objects_per_request: 1\n      objects: [av:1, av:2]\n",
    );
    let (result, logs) = common::poller::poll_logged(&mut poller).await;
    assert_eq!(
        result.unwrap_err(),
        "poller odd: nothing read: all 2 read(s) failed (see the warnings above)"
    );
    assert!(
        logs.contains("read analog-value 1 present-value: no answer within 300ms"),
        "{logs}"
    );
    assert_eq!(count.load(Ordering::Relaxed), 2, "a request and its retry");
}

#[tokio::test]
async fn a_segmented_answer_never_finished_times_out() {
    let (device, _) = responder(|request| {
        if request.service == 0xff {
            // The segment ack: nothing more ever comes.
            return Vec::new();
        }
        // Segmented, more follows, sequence 0, window 1.
        let mut apdu = vec![0x3c, request.invoke, 0, 1, request.service];
        apdu.extend_from_slice(&[0x0c, 0x00, 0x80, 0x00, 0x01]);
        vec![frame(&apdu)]
    })
    .await;
    let mut poller = poller(
        device,
        "      object_names: false\n      timeout_ms: 300\n      retries: 0\n      objects: [av:1]\n",
    );
    let (result, logs) = common::poller::poll_logged(&mut poller).await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        logs.contains("no answer to ReadPropertyMultiple of 1 object(s): no answer within 300ms"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_segmented_answer_that_never_ends_is_cut_at_a_bound() {
    let asked = std::sync::atomic::AtomicU8::new(0);
    let (device, _) = responder(move |request| {
        // Each segment acked brings another, for ever.
        let sequence = if request.service == 0xff {
            request.rest[0].wrapping_add(1)
        } else {
            asked.store(request.service, Ordering::Relaxed);
            0
        };
        let service = asked.load(Ordering::Relaxed);
        let mut apdu = vec![0x3c, request.invoke, sequence, 1, service];
        apdu.extend_from_slice(&[0u8; 1400]);
        vec![frame(&apdu)]
    })
    .await;
    let mut poller = poller(
        device,
        "      object_names: false\n      timeout_ms: 20000\n      retries: 0\n      objects: [av:1]\n",
    );
    let (result, logs) = common::poller::poll_logged(&mut poller).await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        logs.contains("read analog-value 1 present-value: the answer could not be read: response payload exceeded 1048576 bytes"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_device_without_read_property_multiple_is_read_one_property_a_request() {
    let (device, count) = responder(|request| match request.service {
        // unrecognized-service
        READ_PROPERTY_MULTIPLE => vec![frame(&[0x60, request.invoke, 9])],
        READ_PROPERTY => match instance(request) {
            2 => vec![unknown_object(request)],
            // segmentation-not-supported, from the server
            3 => vec![frame(&[0x71, request.invoke, 4])],
            // buffer-overflow
            4 => vec![frame(&[0x60, request.invoke, 1])],
            n => vec![real_answer(request, n as f32 + 0.5)],
        },
        _ => Vec::new(),
    })
    .await;
    let mut poller = poller(
        device,
        "      object_names: false\n      objects: [av:1, av:2, av:3, av:4, av:5]\n",
    );
    let (result, logs) = common::poller::poll_logged(&mut poller).await;
    let targets = result.unwrap();
    assert_eq!(
        key_values(&targets[0]),
        [
            ("analog_value_1".to_owned(), Value::Float(1.5)),
            ("analog_value_5".to_owned(), Value::Float(5.5)),
        ]
    );
    for (object, why) in [
        (
            "analog-value 2",
            "the device answered error class object (1), code unknown-object (31)",
        ),
        (
            "analog-value 3",
            "the device aborted the request (reason segmentation-not-supported (4))",
        ),
        (
            "analog-value 4",
            "the device rejected the request (reason buffer-overflow (1))",
        ),
    ] {
        assert!(
            logs.contains(&format!("read {object} present-value: {why}")),
            "{object}: {logs}"
        );
    }
    assert!(logs.contains("ReadPropertyMultiple refused"), "{logs}");
    // The refusal is remembered: the next poll asks one property a request.
    let before = count.load(Ordering::Relaxed);
    let (result, _) = common::poller::poll_logged(&mut poller).await;
    assert_eq!(result.unwrap()[0].datapoints.len(), 2);
    assert_eq!(count.load(Ordering::Relaxed) - before, 5);
}

#[tokio::test]
async fn values_read_before_a_device_falls_silent_are_posted() {
    let (device, _) = responder(|request| {
        if request.service != READ_PROPERTY_MULTIPLE {
            return Vec::new();
        }
        // The first request (objects 1 and 2): their values, and the name
        // of object 2 only; the second request is never answered.
        let rest = &request.rest;
        if rest.len() < 12 || rest[4] != 1 {
            return Vec::new();
        }
        let mut apdu = vec![0x30, request.invoke, READ_PROPERTY_MULTIPLE];
        for instance in [1u8, 2] {
            present_value_result(&mut apdu, instance);
            // Object 1's name is left out of the answer.
            if instance == 2 {
                apdu.extend_from_slice(&[0x29, 77, 0x4e, 0x75, 3, 0, b'B', b'2', 0x4f]);
            }
            apdu.push(0x1f);
        }
        vec![frame(&apdu)]
    })
    .await;
    let mut poller = poller(
        device,
        "      timeout_ms: 300\n      retries: 0\n      max_objects_per_request: 2\n      objects: [av:1, av:2, av:3]\n",
    );
    let (result, logs) = common::poller::poll_logged(&mut poller).await;
    let targets = result.unwrap_or_else(|e| panic!("{e}\n{logs}"));
    assert_eq!(
        key_values(&targets[0]),
        [
            ("analog_value_1".to_owned(), Value::Float(1.5)),
            ("analog_value_2".to_owned(), Value::Float(2.5)),
        ],
        "{logs}"
    );
    assert!(
        logs.contains("no answer to ReadPropertyMultiple of 1 object(s)"),
        "{logs}"
    );
}

#[tokio::test]
async fn an_object_the_device_refuses_is_asked_alone_and_the_rest_together() {
    let (device, count) = responder(|request| match request.service {
        READ_PROPERTY_MULTIPLE => {
            // Object instances asked, from each spec's object id.
            let rest = &request.rest;
            let mut instances = Vec::new();
            let mut at = 0;
            while at + 5 <= rest.len() && rest[at] == 0x0c {
                instances.push(rest[at + 4]);
                at += 5;
                while at < rest.len() && rest[at] != 0x1f {
                    at += 1;
                }
                at += 1;
            }
            if instances.contains(&9) {
                // What a device's error for one object looks like to a
                // decoder that cannot read it.
                return vec![frame(&[
                    0x30,
                    request.invoke,
                    READ_PROPERTY_MULTIPLE,
                    0x0c,
                    0xff,
                ])];
            }
            let mut apdu = vec![0x30, request.invoke, READ_PROPERTY_MULTIPLE];
            for instance in instances {
                present_value_result(&mut apdu, instance);
                apdu.push(0x1f);
            }
            vec![frame(&apdu)]
        }
        READ_PROPERTY => match instance(request) {
            9 => vec![unknown_object(request)],
            n => vec![real_answer(request, n as f32 + 0.5)],
        },
        _ => Vec::new(),
    })
    .await;
    let mut poller = poller(
        device,
        "      object_names: false\n      objects: [av:1, av:9, av:2]\n",
    );
    for (poll_number, requests) in [(1, 4), (2, 2), (3, 2)] {
        let before = count.load(Ordering::Relaxed);
        let (result, logs) = common::poller::poll_logged(&mut poller).await;
        let targets = result.unwrap_or_else(|e| panic!("{e}\n{logs}"));
        let keys: Vec<String> = targets[0]
            .datapoints
            .iter()
            .map(|d| d.key.to_string())
            .collect();
        assert_eq!(keys, ["analog_value_1", "analog_value_2"], "{logs}");
        assert!(
            logs.contains("read analog-value 9 present-value: the device answered error class object (1), code unknown-object (31)"),
            "poll {poll_number}: {logs}"
        );
        // The first poll: one ReadPropertyMultiple that fails, then each
        // object alone; later ones: the refused object alone, the rest in
        // one ReadPropertyMultiple.
        assert_eq!(
            count.load(Ordering::Relaxed) - before,
            requests,
            "poll {poll_number}: {logs}"
        );
    }
}

/// A UDP peer answering each datagram with `answers`; returns its address
/// and what it received.
async fn who_is_responder(
    answers: Vec<Vec<u8>>,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let (got, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = got.send(buf[..n].to_vec());
            for answer in &answers {
                let _ = socket.send_to(answer, from).await;
            }
        }
    });
    (address, received)
}

fn directed(to: SocketAddr) -> pattoo_agentd::pollers::bacnet::discover::Discover {
    pattoo_agentd::pollers::bacnet::discover::Discover {
        local: "127.0.0.1:0".parse().unwrap(),
        to,
        broadcast: false,
        range: Some((40, 50)),
        wait: Duration::from_millis(500),
        objects: false,
        timeout: Duration::from_millis(500),
    }
}

#[tokio::test]
async fn discovery_sends_one_directed_who_is_and_prints_the_i_am_as_a_poller() {
    // I-Am: device 42, max APDU 1476, segmentation none (3), vendor 15.
    let i_am = frame(&[
        0x10, 0x00, 0xc4, 0x02, 0x00, 0x00, 0x2a, 0x22, 0x05, 0xc4, 0x91, 0x03, 0x21, 0x0f,
    ]);
    let (device, mut received) = who_is_responder(vec![i_am]).await;
    let text = pattoo_agentd::pollers::bacnet::discover::discover(&directed(device))
        .await
        .unwrap();
    // One Original-Unicast Who-Is for instances 40..=50.
    assert_eq!(
        received.recv().await.unwrap(),
        [0x81, 0x0a, 0x00, 0x0c, 0x01, 0x00, 0x10, 0x08, 0x09, 0x28, 0x19, 0x32]
    );
    assert!(received.try_recv().is_err());
    assert!(
        text.contains(&format!(
            "- name: bacnet-42\n  type: bacnet\n  # vendor id 15, max APDU 1476, segmentation none (3)\n  local_address: 127.0.0.1\n  targets: [{{address: \"{device}\", device: 42}}]\n"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn discovery_answered_with_garbage_says_so_and_finds_no_device() {
    let not_bacnet = b"hello".to_vec();
    let bad_i_am = frame(&[0x10, 0x00, 0xff]);
    let (device, _) = who_is_responder(vec![not_bacnet, bad_i_am]).await;
    let (logs, _guard) = common::logs::capture();
    let error = pattoo_agentd::pollers::bacnet::discover::discover(&directed(device))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("no device answered the Who-Is sent to {device} within 500ms (2 answer(s) that are not I-Ams, see above)")
    );
    let logs = logs.text();
    assert!(
        logs.contains(&format!("discover: {device} answered the Who-Is with something that is not an I-Am: not a BACnet/IP frame with an APDU (5 bytes: 68656c6c6f)")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("discover: {device} answered the Who-Is with something that is not an I-Am: an I-Am that does not decode")),
        "{logs}"
    );
}

/// A device 7 that does not take the wildcard device instance: it answers
/// Error unknown-object for every device object but its own, and 1.5 for
/// any present value.
async fn device_7() -> SocketAddr {
    let (device, _) = responder(|request| {
        if request.service != READ_PROPERTY {
            return vec![];
        }
        // The object type: the identifier's top 10 bits.
        if (u16::from(request.rest[1]) << 2 | u16::from(request.rest[2]) >> 6) != 8 {
            return vec![real_answer(request, 1.5)];
        }
        if instance(request) != 7 {
            return vec![unknown_object(request)];
        }
        let mut apdu = vec![0x30, request.invoke, READ_PROPERTY];
        apdu.extend_from_slice(&request.rest[..7]);
        apdu.extend_from_slice(&[0x3e, 0xc4, 0x02, 0x00, 0x00, 0x07, 0x3f]);
        vec![frame(&apdu)]
    })
    .await;
    device
}

#[tokio::test]
async fn a_device_without_the_wildcard_instance_is_checked_by_its_own() {
    let device = device_7().await;
    let mut poller = poller_of(
        &format!("[{{address: '{device}', device: 7}}]"),
        "      object_names: false\n      max_objects_per_request: 1\n      objects: [av:1]\n",
    );
    let (result, logs) = common::poller::poll_logged(&mut poller).await;
    let targets = result.unwrap();
    assert_eq!(targets[0].datapoints.len(), 1, "{logs}");
    assert_eq!(targets[0].datapoints[0].value, Value::Float(1.5));
    assert!(!logs.contains("device object"), "{logs}");
}

#[tokio::test]
async fn a_device_without_the_configured_device_object_is_logged_and_not_read() {
    let device = device_7().await;
    let mut poller = poller_of(
        &format!("[{{address: '{device}', device: 8}}]"),
        "      object_names: false\n      max_objects_per_request: 1\n      objects: [av:1]\n",
    );
    let (result, logs) = common::poller::poll_logged(&mut poller).await;
    assert_eq!(
        result.unwrap_err(),
        "poller odd: nothing read: all 1 read(s) failed (see the warnings above)"
    );
    assert!(
        logs.contains(&format!("{device} ({device}): the device there has no device object 8 (error class object (1), code unknown-object (31)): is `device` or the address wrong? Not read")),
        "{logs}"
    );
}
