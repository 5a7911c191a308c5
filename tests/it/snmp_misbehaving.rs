//! A misbehaving SNMP responder on loopback: before (or instead of) the
//! right answer it sends a truncated message, one announcing a length far
//! beyond the datagram, an answer with another request id, and the right
//! answer from another address. The poller never panics, never takes a
//! wrong answer for the right one, and never hangs.

use crate::common;

use std::time::{Duration, Instant};

use pattoo_agentd::model::Value;
use pattoo_agentd::pollers::{Poller, PollerEnv};
use tokio::net::UdpSocket;

/// One BER element: tag, length (short or long form), contents.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match contents.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(contents);
    out
}

/// Reads one element at the start of `data`: (tag, contents, rest).
fn read_tlv(data: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = data[0];
    let (len, header) = match data[1] {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(data[2]), 3),
        0x82 => ((usize::from(data[2]) << 8) | usize::from(data[3]), 4),
        other => panic!("unexpected length byte {other:#x}"),
    };
    (tag, &data[header..header + len], &data[header + len..])
}

/// What a v2c request asks: (community, request id, first OID), all as
/// their BER contents.
fn parse_request(datagram: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (_, message, _) = read_tlv(datagram);
    let (_, _version, rest) = read_tlv(message);
    let (_, community, rest) = read_tlv(rest);
    let (_, pdu, _) = read_tlv(rest);
    let (_, request_id, rest) = read_tlv(pdu);
    let (_, _, rest) = read_tlv(rest);
    let (_, _, rest) = read_tlv(rest);
    let (_, varbinds, _) = read_tlv(rest);
    let (_, varbind, _) = read_tlv(varbinds);
    let (_, oid, _) = read_tlv(varbind);
    (community.to_vec(), request_id.to_vec(), oid.to_vec())
}

fn response(community: &[u8], request_id: &[u8], oid: &[u8], value: &str) -> Vec<u8> {
    let varbind = [tlv(0x06, oid), tlv(0x04, value.as_bytes())].concat();
    let pdu = [
        tlv(0x02, request_id),
        tlv(0x02, &[0]),
        tlv(0x02, &[0]),
        tlv(0x30, &tlv(0x30, &varbind)),
    ]
    .concat();
    tlv(
        0x30,
        &[tlv(0x02, &[1]), tlv(0x04, community), tlv(0xa2, &pdu)].concat(),
    )
}

/// Answers every request with the garbage, then (if `answer`) rightly.
async fn misbehave(socket: UdpSocket, stranger: UdpSocket, answer: bool) {
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buffer).await else {
            return;
        };
        let (community, request_id, oid) = parse_request(&buffer[..n]);
        let right = response(&community, &request_id, &oid, "ok");
        let mut other_id = request_id.clone();
        *other_id.last_mut().unwrap() ^= 1;
        let mut oversized = right.clone();
        // A message claiming 2 GiB.
        oversized.splice(1..2, [0x84, 0x7f, 0xff, 0xff, 0xff]);
        for garbage in [
            right[..right.len() / 2].to_vec(),
            oversized,
            response(&community, &other_id, &oid, "wrong request id"),
            vec![0x30, 0x03, 0x02, 0x01],
            Vec::new(),
        ] {
            let _ = socket.send_to(&garbage, from).await;
        }
        // The right id, from an address the request did not go to.
        let _ = stranger
            .send_to(&response(&community, &request_id, &oid, "spoofed"), from)
            .await;
        if answer {
            let _ = socket.send_to(&right, from).await;
        }
    }
}

async fn poller_for(address: &str, community_file: &str) -> Poller {
    let text = format!(
        "pattoo_agentd:\n  pollers:\n    - name: odd\n      type: snmp\n      targets: [\"{address}\"]\n      community: {{file: {community_file}}}\n      timeout_ms: 500\n      retries: 1\n      get: [{{oid: .1.3.6.1.2.1.1.5.0, key: sysname}}]\n"
    );
    let settings = common::modbus::load_agentd(&text).unwrap_or_else(|e| panic!("{e}"));
    Poller::new(
        &settings.pollers[0],
        &PollerEnv {
            hostname: "test".into(),
        },
    )
    .unwrap()
}

async fn start(answer: bool) -> (String, tempfile::TempDir) {
    start_on("127.0.0.1:0", answer).await
}

async fn start_on(bind: &str, answer: bool) -> (String, tempfile::TempDir) {
    let socket = UdpSocket::bind(bind).await.unwrap();
    let stranger = UdpSocket::bind(bind).await.unwrap();
    // `[::1]:port` for IPv6, as a target is written.
    let address = socket.local_addr().unwrap().to_string();
    tokio::spawn(misbehave(socket, stranger, answer));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("community"), "public\n").unwrap();
    (address, dir)
}

#[tokio::test]
async fn garbage_other_ids_and_strangers_are_ignored_and_the_right_answer_is_taken() {
    let (address, dir) = start(true).await;
    let community = dir.path().join("community").display().to_string();
    let mut poller = poller_for(&address, &community).await;
    for _ in 0..3 {
        let targets = poller.poll().await.expect("the right answer came");
        let values: Vec<&Value> = targets
            .iter()
            .flat_map(|t| &t.datapoints)
            .map(|d| &d.value)
            .collect();
        assert_eq!(values, [&Value::Text("ok".into())]);
    }
}

#[tokio::test]
async fn a_responder_that_never_answers_rightly_costs_one_timeout_and_reads_nothing() {
    let (address, dir) = start(false).await;
    let community = dir.path().join("community").display().to_string();
    let mut poller = poller_for(&address, &community).await;
    let started = Instant::now();
    let error = poller.poll().await.expect_err("nothing was read");
    assert!(error.to_string().contains("poller odd"), "{error}");
    // Two tries of 500 ms; a generous bound, only against a hang.
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn an_ipv6_target_is_read_over_its_own_socket() {
    // The Python agents refused IPv6 targets (easysnmp took the `:` for a
    // port separator).
    let (address, dir) = start_on("[::1]:0", true).await;
    assert!(address.starts_with("[::1]:"), "{address}");
    let community = dir.path().join("community").display().to_string();
    let mut poller = poller_for(&address, &community).await;
    let targets = poller.poll().await.expect("read over IPv6");
    assert_eq!(targets[0].target, address);
    assert_eq!(targets[0].datapoints[0].value, Value::Text("ok".into()));
}
