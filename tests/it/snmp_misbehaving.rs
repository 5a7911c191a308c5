//! A misbehaving SNMP responder on loopback: before (or instead of) the
//! right answer it sends a truncated message, one announcing a length far
//! beyond the datagram, an answer with another request id, and the right
//! answer from another address. The poller never panics, never takes a
//! wrong answer for the right one, and never hangs.
#![cfg(feature = "snmp")]

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pattoo_agentd::model::{TargetData, Value};
use pattoo_agentd::pollers::{PollError, Poller};
use tokio::net::UdpSocket;

use common::Readings;

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

fn poller_for(address: &str, community_file: &str) -> Poller {
    common::poller::from_entries(&format!(
        "    - name: odd\n      type: snmp\n      targets: [\"{address}\"]\n      community: {{file: {community_file}}}\n      timeout_ms: 500\n      retries: 1\n      get: [{{oid: .1.3.6.1.2.1.1.5.0, key: sysname}}]\n"
    ))
}

/// The responder's address and a community file for it (kept as long as
/// the directory).
async fn start(answer: bool) -> (String, (tempfile::TempDir, String)) {
    start_on("127.0.0.1:0", answer).await
}

async fn start_on(bind: &str, answer: bool) -> (String, (tempfile::TempDir, String)) {
    let socket = UdpSocket::bind(bind).await.unwrap();
    let stranger = UdpSocket::bind(bind).await.unwrap();
    // `[::1]:port` for IPv6, as a target is written.
    let address = socket.local_addr().unwrap().to_string();
    tokio::spawn(misbehave(socket, stranger, answer));
    (address, common::poller::secret_file("public"))
}

#[tokio::test]
async fn garbage_other_ids_and_strangers_are_ignored_and_the_right_answer_is_taken() {
    let (address, (_dir, community)) = start(true).await;
    let mut poller = poller_for(&address, &community);
    for _ in 0..3 {
        let targets = poller.readings().await.expect("the right answer came");
        assert_eq!(values(&targets), [&Value::Text("ok".into())]);
    }
}

#[tokio::test]
async fn a_responder_that_never_answers_rightly_costs_one_timeout_and_reads_nothing() {
    let (address, (_dir, community)) = start(false).await;
    let mut poller = poller_for(&address, &community);
    let started = Instant::now();
    let error = poller.readings().await.expect_err("nothing was read");
    assert!(error.to_string().contains("poller odd"), "{error}");
    // Two tries of 500 ms; a generous bound, only against a hang.
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn an_ipv6_target_is_read_over_its_own_socket() {
    // The Python agents refused IPv6 targets (easysnmp took the `:` for a
    // port separator).
    let (address, (_dir, community)) = start_on("[::1]:0", true).await;
    assert!(address.starts_with("[::1]:"), "{address}");
    let mut poller = poller_for(&address, &community);
    let targets = poller.readings().await.expect("read over IPv6");
    assert_eq!(targets[0].target, address);
    assert_eq!(targets[0].datapoints[0].value, Value::Text("ok".into()));
}

// ---------------------------------------------------------------------------
// Scripted responders: each answers what its script makes of a request
// (issue 24).

/// A v2c request: community, request id (BER contents), PDU tag, the
/// max-repetitions of a GETBULK, and the OIDs asked for.
struct Request {
    community: Vec<u8>,
    request_id: Vec<u8>,
    tag: u8,
    max_repetitions: usize,
    oids: Vec<Vec<u32>>,
}

fn parse(datagram: &[u8]) -> Request {
    let (_, message, _) = read_tlv(datagram);
    let (_, _version, rest) = read_tlv(message);
    let (_, community, rest) = read_tlv(rest);
    let (tag, pdu, _) = read_tlv(rest);
    let (_, request_id, rest) = read_tlv(pdu);
    let (_, _, rest) = read_tlv(rest);
    let (_, max_repetitions, rest) = read_tlv(rest);
    let (_, mut varbinds, _) = read_tlv(rest);
    let mut oids = Vec::new();
    while !varbinds.is_empty() {
        let (_, varbind, rest) = read_tlv(varbinds);
        varbinds = rest;
        let (_, oid, _) = read_tlv(varbind);
        oids.push(arcs(oid));
    }
    Request {
        community: community.to_vec(),
        request_id: request_id.to_vec(),
        tag,
        max_repetitions: max_repetitions
            .iter()
            .fold(0usize, |v, b| (v << 8) | usize::from(*b)),
        oids,
    }
}

fn arcs(ber: &[u8]) -> Vec<u32> {
    let mut out = vec![u32::from(ber[0] / 40), u32::from(ber[0] % 40)];
    let mut arc = 0u32;
    for byte in &ber[1..] {
        arc = (arc << 7) | u32::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            out.push(arc);
            arc = 0;
        }
    }
    out
}

fn oid_ber(arcs: &[u32]) -> Vec<u8> {
    let mut out = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for arc in &arcs[2..] {
        let mut bytes = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            bytes.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        bytes.reverse();
        out.extend(bytes);
    }
    out
}

/// A response carrying `varbinds`: (OID, value tag, value contents).
fn answer(request: &Request, varbinds: &[(Vec<u32>, u8, Vec<u8>)]) -> Vec<u8> {
    let list: Vec<u8> = varbinds
        .iter()
        .flat_map(|(oid, tag, value)| {
            tlv(0x30, &[tlv(0x06, &oid_ber(oid)), tlv(*tag, value)].concat())
        })
        .collect();
    let pdu = [
        tlv(0x02, &request.request_id),
        tlv(0x02, &[0]),
        tlv(0x02, &[0]),
        tlv(0x30, &list),
    ]
    .concat();
    tlv(
        0x30,
        &[
            tlv(0x02, &[1]),
            tlv(0x04, &request.community),
            tlv(0xa2, &pdu),
        ]
        .concat(),
    )
}

/// Answers each request with what `script` makes of it, from `socket`.
async fn respond<F>(socket: UdpSocket, mut script: F)
where
    F: FnMut(&Request) -> Vec<u8> + Send + 'static,
{
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buffer).await else {
            return;
        };
        let request = parse(&buffer[..n]);
        let _ = socket.send_to(&script(&request), from).await;
    }
}

/// A responder on loopback running `script`, and a community file (kept
/// as long as the directory).
async fn scripted<F>(script: F) -> (String, (tempfile::TempDir, String))
where
    F: FnMut(&Request) -> Vec<u8> + Send + 'static,
{
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap().to_string();
    tokio::spawn(respond(socket, script));
    (address, common::poller::secret_file("public"))
}

/// A poller `odd` of `settings` (lines of the poller's mapping, indented
/// by six spaces) reading `address` with the community in `community`.
fn scripted_poller(address: &str, community: &str, settings: &str) -> Poller {
    common::poller::from_entries(&format!(
        "    - name: odd\n      type: snmp\n      targets: [\"{address}\"]\n      community: {{file: {community}}}\n      timeout_ms: 1000\n      retries: 1\n{settings}"
    ))
}

const ENDLESS: [u32; 9] = [1, 3, 6, 1, 4, 1, 99999, 1, 1];

/// Every GETNEXT or GETBULK in the subtree `ENDLESS` has a next row: row n
/// is `ENDLESS.n` with the Counter32 value n, for ever.
fn endless(request: &Request) -> Vec<u8> {
    let asked = &request.oids[0];
    let first = if asked.len() > ENDLESS.len() {
        asked[ENDLESS.len()] + 1
    } else {
        1
    };
    let rows = if request.tag == 0xa5 {
        request.max_repetitions.max(1) as u32
    } else {
        1
    };
    let varbinds: Vec<_> = (first..first + rows)
        .map(|n| {
            (
                [&ENDLESS[..], &[n]].concat(),
                0x41,
                n.to_be_bytes().to_vec(),
            )
        })
        .collect();
    answer(request, &varbinds)
}

fn counters(targets: &[TargetData]) -> Vec<u64> {
    targets
        .iter()
        .flat_map(|t| &t.datapoints)
        .map(|d| match d.value {
            Value::Int(v) => v as u64,
            Value::UInt(v) => v,
            ref other => panic!("not a counter: {other:?}"),
        })
        .collect()
}

/// Against a hang only: far beyond any poll here on a busy machine.
const HANG: Duration = Duration::from_secs(120);

/// One poll of `poller`, failing the test if it hangs (see [`HANG`]).
async fn poll_once(poller: &mut Poller) -> Result<Vec<TargetData>, PollError> {
    tokio::time::timeout(HANG, poller.readings())
        .await
        .expect("the poll ends")
}

/// Every value a poll read, in order.
fn values(targets: &[TargetData]) -> Vec<&Value> {
    targets
        .iter()
        .flat_map(|t| &t.datapoints)
        .map(|d| &d.value)
        .collect()
}

#[tokio::test]
async fn an_endless_subtree_is_cut_at_max_rows_per_walk_and_the_rows_before_are_posted() {
    let (log, _guard) = common::logs::capture();
    let (address, (_dir, community)) = scripted(endless).await;
    let mut poller = scripted_poller(
        &address,
        &community,
        "      max_rows_per_walk: 50\n      max_repetitions: 7\n      walk: [{oid: .1.3.6.1.4.1.99999.1.1, key: row}]\n",
    );
    let targets = poll_once(&mut poller).await.expect("rows were read");
    assert_eq!(counters(&targets), (1..=50).collect::<Vec<u64>>());
    let text = log.text();
    let cut = text
        .lines()
        .find(|l| l.contains("max_rows_per_walk"))
        .unwrap_or_else(|| panic!("the cut is logged:\n{text}"));
    assert!(cut.contains("WARN"), "{cut}");
    assert!(
        cut.contains("poller=\"odd\"") || cut.contains("poller=odd"),
        "{cut}"
    );
    assert!(cut.contains(&address), "{cut}");
    assert!(cut.contains(".1.3.6.1.4.1.99999.1.1"), "{cut}");
}

#[tokio::test]
async fn a_poll_ends_by_its_polling_interval_and_posts_what_it_read() {
    let (log, _guard) = common::logs::capture();
    let (address, (_dir, community)) = scripted(endless).await;
    // No row bound to speak of: only the deadline, by default the
    // interval (1 s), ends this walk.
    let mut poller = scripted_poller(
        &address,
        &community,
        "      polling_interval: 1\n      max_rows_per_walk: 1000000\n      walk: [{oid: .1.3.6.1.4.1.99999.1.1, key: row}]\n",
    );
    let targets = poll_once(&mut poller).await.expect("rows were read");
    let rows = counters(&targets);
    assert!(!rows.is_empty());
    assert_eq!(rows, (1..=rows.len() as u64).collect::<Vec<u64>>());
    let text = log.text();
    let cut = text
        .lines()
        .find(|l| l.contains("poll_deadline_ms"))
        .unwrap_or_else(|| panic!("the cut is logged:\n{text}"));
    assert!(cut.contains("WARN") && cut.contains("1000 ms"), "{cut}");
    assert!(
        cut.contains(&address) && cut.contains(".1.3.6.1.4.1.99999.1.1"),
        "{cut}"
    );
}

#[tokio::test]
async fn a_walk_that_goes_back_stops_and_posts_the_rows_before() {
    let (log, _guard) = common::logs::capture();
    // Rows 1, 2, 3, then row 2 again, for ever (one row per answer).
    let (address, (_dir, community)) = scripted(|request: &Request| {
        let asked = &request.oids[0];
        let next = match asked.get(ENDLESS.len()) {
            None => 1,
            Some(3) => 2,
            Some(n) => n + 1,
        };
        answer(
            request,
            &[([&ENDLESS[..], &[next]].concat(), 0x41, vec![next as u8])],
        )
    })
    .await;
    let mut poller = scripted_poller(
        &address,
        &community,
        "      walk: [{oid: .1.3.6.1.4.1.99999.1.1, key: row}]\n",
    );
    let targets = poll_once(&mut poller).await.expect("rows were read");
    assert_eq!(counters(&targets), [1, 2, 3]);
    let text = log.text();
    assert!(
        text.lines().any(|l| l.contains("WARN")
            && l.contains("does not follow .1.3.6.1.4.1.99999.1.1.3")
            && l.contains(&address)),
        "{text}"
    );
}

#[tokio::test]
async fn request_ids_are_random_not_a_sequence() {
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = ids.clone();
    let (address, (_dir, community)) = scripted(move |request: &Request| {
        let id = request
            .request_id
            .iter()
            .fold(0i64, |v, b| (v << 8) | i64::from(*b));
        seen.lock().unwrap().push(id);
        answer(request, &[(request.oids[0].clone(), 0x04, b"ok".to_vec())])
    })
    .await;
    let mut poller = scripted_poller(
        &address,
        &community,
        "      get: [{oid: .1.3.6.1.2.1.1.5.0, key: sysname}]\n",
    );
    for _ in 0..6 {
        poller.readings().await.expect("answered");
    }
    let ids = ids.lock().unwrap().clone();
    assert!(ids.len() >= 6, "{ids:?}");
    // One counter shared by every request of the process moves by a few
    // per request; random ids (31 bits) are this close about once in
    // 30,000 pairs.
    let close = ids
        .windows(2)
        .filter(|w| (w[1] - w[0]).abs() < 65_536)
        .count();
    assert!(close <= 1, "request ids follow each other: {ids:?}");
}

#[tokio::test]
async fn the_right_request_id_from_another_address_or_port_is_not_taken() {
    // The device never answers; two strangers, one on another loopback
    // address and one on another port, answer with the request's id.
    let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = device.local_addr().unwrap().to_string();
    let other_port = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other_address = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((n, from)) = device.recv_from(&mut buffer).await {
            let request = parse(&buffer[..n]);
            let forged = answer(
                &request,
                &[(request.oids[0].clone(), 0x04, b"forged".to_vec())],
            );
            let _ = other_port.send_to(&forged, from).await;
            let _ = other_address.send_to(&forged, from).await;
        }
    });
    let (_dir, community) = common::poller::secret_file("public");
    let mut poller = scripted_poller(
        &address,
        &community,
        "      get: [{oid: .1.3.6.1.2.1.1.5.0, key: sysname}]\n",
    );
    let result = poll_once(&mut poller).await;
    assert!(result.is_err(), "a forged answer was taken: {result:?}");
}

#[tokio::test]
async fn undecodable_values_post_nothing_are_named_and_the_rest_of_the_answer_posts() {
    let (log, _guard) = common::logs::capture();
    // .1.3.6.1.4.1.99999.2.N: each N a value, good or not.
    let value = |n: u32| -> (u8, Vec<u8>) {
        match n {
            1 => (0x04, b"fine".to_vec()),
            2 => (0x02, vec![0x01, 0, 0, 0, 0]),
            3 => (0x46, vec![]),
            4 => (0x46, vec![0x01, 0, 0, 0, 0, 0, 0, 0, 0]),
            5 => (0x40, vec![10, 0, 0, 1, 7]),
            _ => (0x41, vec![42]),
        }
    };
    let (address, (_dir, community)) = scripted(move |request: &Request| {
        let varbinds: Vec<_> = request
            .oids
            .iter()
            .map(|oid| {
                let (tag, contents) = value(*oid.last().unwrap());
                (oid.clone(), tag, contents)
            })
            .collect();
        answer(request, &varbinds)
    })
    .await;
    let gets: String = (1..=6)
        .map(|n| format!("        - {{oid: .1.3.6.1.4.1.99999.2.{n}, key: v{n}}}\n"))
        .collect();
    let mut poller = scripted_poller(&address, &community, &format!("      get:\n{gets}"));
    let targets = poller.readings().await.expect("the good values were read");
    let posted: Vec<(&str, &Value)> = targets
        .iter()
        .flat_map(|t| &t.datapoints)
        .map(|d| (d.key.as_str(), &d.value))
        .collect();
    assert_eq!(
        posted,
        [("v1", &Value::Text("fine".into())), ("v6", &Value::Int(42))]
    );
    let text = log.text();
    assert!(!text.contains("timeout"), "{text}");
    for (n, what) in [
        (2, "INTEGER of 5 bytes"),
        (3, "zero-length Counter64"),
        (4, "Counter64 of 9 bytes"),
        (5, "IpAddress of 5 bytes"),
    ] {
        let oid = format!(".1.3.6.1.4.1.99999.2.{n}");
        assert!(
            text.lines().any(|l| l.contains("WARN")
                && l.contains(&address)
                && l.contains(&format!("{oid}: "))
                && l.contains(what)
                && l.contains("cannot be decoded")),
            "{oid} {what}:\n{text}"
        );
    }
}

/// A table of two columns of `ROWS` rows under `ENDLESS` (column 1 and 2,
/// Counter32 values `100 * column + row`), served row by row to GETBULKs
/// of several varbinds; past the table, `endOfMibView`.
const ROWS: u32 = 30;

fn table_oids(rows: u32) -> Vec<Vec<u32>> {
    (1..=2)
        .flat_map(|column| (1..=rows).map(move |row| [&ENDLESS[..8], &[column, row]].concat()))
        .collect()
}

fn table_answer(request: &Request) -> Vec<u8> {
    table_of_rows_answer(request, ROWS)
}

/// [`table_answer`] for a table of `rows` rows.
fn table_of_rows_answer(request: &Request, rows: u32) -> Vec<u8> {
    let all = table_oids(rows);
    let mut cursors = request.oids.clone();
    let mut varbinds = Vec::new();
    for _ in 0..request.max_repetitions.max(1) {
        for cursor in &mut cursors {
            match all.iter().find(|oid| *oid > cursor) {
                Some(next) => {
                    let value = 100 * next[8] + next[9];
                    varbinds.push((next.clone(), 0x41, value.to_be_bytes().to_vec()));
                    *cursor = next.clone();
                }
                None => varbinds.push((cursor.clone(), 0x82, Vec::new())),
            }
        }
    }
    answer(request, &varbinds)
}

/// `request` refused with error status `status`.
fn refusal(request: &Request, status: u8) -> Vec<u8> {
    let mut message = answer(request, &[]);
    // The error status is the second INTEGER of the PDU, just after the
    // request id: `0x02 0x01 0x00`, found after the request id's bytes.
    let id = tlv(0x02, &request.request_id);
    let at = message
        .windows(id.len())
        .position(|w| w == id.as_slice())
        .unwrap()
        + id.len();
    assert_eq!(&message[at..at + 3], &[0x02, 0x01, 0x00]);
    message[at + 2] = status;
    message
}

fn table_settings() -> String {
    let column = |n: u32| format!(".1.3.6.1.4.1.99999.1.{n}");
    format!(
        "      tables:\n        - name: t\n          columns:\n            - {{key: a, oid: \"{}\"}}\n            - {{key: b, oid: \"{}\"}}\n",
        column(1),
        column(2)
    )
}

/// What column `column` of the scripted table holds when it has `rows`
/// rows.
fn column_values(column: u64, rows: u32) -> Vec<u64> {
    (1..=u64::from(rows))
        .map(|row| 100 * column + row)
        .collect()
}

fn table_values(targets: &[TargetData], key: &str) -> Vec<u64> {
    targets
        .iter()
        .flat_map(|t| &t.datapoints)
        .filter(|d| d.key == key)
        .map(|d| match d.value {
            Value::UInt(v) => v,
            Value::Int(v) => v as u64,
            ref other => panic!("{other:?}"),
        })
        .collect()
}

/// Polls the scripted table from a responder running `script` and checks
/// both columns have every row, with its value.
async fn assert_table_read_whole<F>(script: F)
where
    F: FnMut(&Request) -> Vec<u8> + Send + 'static,
{
    let (address, (_dir, community)) = scripted(script).await;
    let mut poller = scripted_poller(&address, &community, &table_settings());
    let targets = poller.readings().await.unwrap();
    assert_eq!(table_values(&targets, "a"), column_values(1, ROWS));
    assert_eq!(table_values(&targets, "b"), column_values(2, ROWS));
}

#[tokio::test]
async fn a_table_the_device_says_is_too_big_is_read_with_fewer_rows_per_request() {
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    assert_table_read_whole(move |request| {
        log.lock()
            .unwrap()
            .push((request.oids.len(), request.max_repetitions));
        // A device whose responses hold at most 20 varbinds.
        if request.oids.len() * request.max_repetitions > 20 {
            refusal(request, 1)
        } else {
            table_answer(request)
        }
    })
    .await;
    let asked = asked.lock().unwrap().clone();
    // 25 rows of 2 columns is refused, 12 too, 6 fits: halved, not given up.
    assert_eq!(&asked[..3], &[(2, 25), (2, 12), (2, 6)], "{asked:?}");
    assert!(asked[3..].iter().all(|&(_, rows)| rows == 6), "{asked:?}");
}

#[tokio::test]
async fn a_table_the_device_refuses_together_is_read_column_by_column() {
    assert_table_read_whole(|request| {
        // genErr for any request of more than one varbind.
        if request.oids.len() > 1 {
            refusal(request, 5)
        } else {
            table_answer(request)
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// The poller's sockets (issue 23): a request reads its own socket; sockets
// are reused from poll to poll and from target to target.

#[tokio::test]
async fn a_late_answer_to_an_earlier_request_is_not_taken_for_the_next_one() {
    // From the second request on, the device first answers the request
    // before again (its id, the value "stale"), then this one ("fresh").
    let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = device.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        let mut earlier: Option<Vec<u8>> = None;
        while let Ok((n, from)) = device.recv_from(&mut buffer).await {
            let request = parse(&buffer[..n]);
            if let Some(stale) = &earlier {
                let _ = device.send_to(stale, from).await;
            }
            let oid = request.oids[0].clone();
            let _ = device
                .send_to(
                    &answer(&request, &[(oid.clone(), 0x04, b"fresh".to_vec())]),
                    from,
                )
                .await;
            earlier = Some(answer(&request, &[(oid, 0x04, b"stale".to_vec())]));
        }
    });
    let (_dir, community) = common::poller::secret_file("public");
    let mut poller = scripted_poller(
        &address,
        &community,
        "      get: [{oid: .1.3.6.1.2.1.1.5.0, key: sysname}]\n",
    );
    for _ in 0..3 {
        let targets = poll_once(&mut poller).await.expect("the fresh answer came");
        assert_eq!(values(&targets), [&Value::Text("fresh".into())]);
    }
}

#[tokio::test]
async fn a_poller_of_many_targets_uses_no_more_sockets_than_targets_polled_at_once() {
    // 24 devices, 4 polled at once: every request comes from one of at
    // most 4 local ports, poll after poll.
    let ports = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut targets = Vec::new();
    for _ in 0..24 {
        let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        targets.push(format!("\"{}\"", device.local_addr().unwrap()));
        let ports = ports.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 65_536];
            while let Ok((n, from)) = device.recv_from(&mut buffer).await {
                ports.lock().unwrap().insert(from.port());
                let request = parse(&buffer[..n]);
                let oid = request.oids[0].clone();
                let _ = device
                    .send_to(&answer(&request, &[(oid, 0x04, b"ok".to_vec())]), from)
                    .await;
            }
        });
    }
    let (_dir, community) = common::poller::secret_file("public");
    let mut poller = common::poller::from_entries(&format!(
        "    - name: many\n      type: snmp\n      targets: [{}]\n      community: {{file: {community}}}\n      max_concurrent_targets: 4\n      get: [{{oid: .1.3.6.1.2.1.1.5.0, key: sysname}}]\n",
        targets.join(", ")
    ));
    for _ in 0..2 {
        let read = poll_once(&mut poller).await.expect("the devices answered");
        assert_eq!(read.len(), 24);
    }
    let ports = ports.lock().unwrap().clone();
    assert!(
        !ports.is_empty() && ports.len() <= 4,
        "requests came from {} local ports: {ports:?}",
        ports.len()
    );
}

// ---------------------------------------------------------------------------
// GETBULKs sized to the table (issue 23).

/// Requests of one poll, each as its request id and rows asked for.
type Asked = std::sync::Mutex<Vec<(Vec<u8>, usize)>>;

/// Polls the scripted table of `table` rows (set in `rows`) once, checks
/// both columns have every row with its value, and returns the rows each
/// request asked for (a retry, the same request again, counted once).
async fn poll_table(
    poller: &mut Poller,
    rows: &std::sync::atomic::AtomicU32,
    asked: &Asked,
    table: u32,
) -> Vec<usize> {
    rows.store(table, std::sync::atomic::Ordering::SeqCst);
    asked.lock().unwrap().clear();
    let targets = poll_once(poller).await.expect("the device answered");
    assert_eq!(
        table_values(&targets, "a"),
        column_values(1, table),
        "{table} rows"
    );
    assert_eq!(
        table_values(&targets, "b"),
        column_values(2, table),
        "{table} rows"
    );
    let mut sizes = asked.lock().unwrap().clone();
    sizes.dedup_by(|a, b| a.0 == b.0);
    sizes.into_iter().map(|(_, rows)| rows).collect()
}

#[tokio::test]
async fn a_table_is_asked_for_whole_from_the_second_poll_and_read_whole_when_it_grows_or_shrinks() {
    let rows = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(48));
    let asked: std::sync::Arc<Asked> = std::sync::Arc::default();
    let (address, (_dir, community)) = scripted({
        let (rows, asked) = (rows.clone(), asked.clone());
        move |request| {
            asked
                .lock()
                .unwrap()
                .push((request.request_id.clone(), request.max_repetitions));
            table_of_rows_answer(request, rows.load(std::sync::atomic::Ordering::SeqCst))
        }
    })
    .await;
    let mut poller = scripted_poller(&address, &community, &table_settings());
    // The first poll: 25 rows at a time (the default), two requests.
    assert_eq!(poll_table(&mut poller, &rows, &asked, 48).await, [25, 25]);
    // Then the table as read plus the row that shows its end: one request.
    assert_eq!(poll_table(&mut poller, &rows, &asked, 48).await, [49]);
    // Grown: read on from there, as many rows at a time again.
    assert_eq!(
        poll_table(&mut poller, &rows, &asked, 100).await,
        [49, 49, 49]
    );
    assert_eq!(poll_table(&mut poller, &rows, &asked, 100).await, [101]);
    // Shrunk: one request, and the next asks for the smaller table.
    assert_eq!(poll_table(&mut poller, &rows, &asked, 3).await, [101]);
    assert_eq!(poll_table(&mut poller, &rows, &asked, 3).await, [4]);
    // Grown far beyond a small request: at least 25 rows at a time.
    assert_eq!(
        poll_table(&mut poller, &rows, &asked, 60).await,
        [4, 25, 25, 25]
    );
}

#[tokio::test]
async fn a_max_repetitions_the_operator_set_is_never_exceeded() {
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (address, (_dir, community)) = scripted({
        let asked = asked.clone();
        move |request| {
            asked.lock().unwrap().push(request.max_repetitions);
            table_answer(request)
        }
    })
    .await;
    let settings = table_settings() + "      max_repetitions: 10\n";
    let mut poller = scripted_poller(&address, &community, &settings);
    for _ in 0..3 {
        let targets = poll_once(&mut poller).await.expect("the device answered");
        assert_eq!(table_values(&targets, "a").len(), ROWS as usize);
    }
    let asked = asked.lock().unwrap().clone();
    assert!(asked.iter().all(|&rows| rows <= 10), "{asked:?}");
}

#[tokio::test]
async fn a_size_the_device_refused_as_too_big_is_not_asked_for_in_the_next_poll() {
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (address, (_dir, community)) = scripted({
        let asked = asked.clone();
        move |request| {
            asked.lock().unwrap().push(request.max_repetitions);
            // A device whose responses hold at most 20 varbinds.
            if request.oids.len() * request.max_repetitions > 20 {
                refusal(request, 1)
            } else {
                table_answer(request)
            }
        }
    })
    .await;
    let mut poller = scripted_poller(&address, &community, &table_settings());
    for _ in 0..2 {
        asked.lock().unwrap().clear();
        let targets = poll_once(&mut poller).await.expect("the device answered");
        assert_eq!(table_values(&targets, "b").len(), ROWS as usize);
    }
    // 25 and 12 were refused in the first poll; the second asks for 6
    // rows from its first request on, and its last only for the row that
    // shows the end of the table it read in the first.
    let asked = asked.lock().unwrap().clone();
    let (last, before) = asked.split_last().expect("the second poll asked");
    assert!(before.iter().all(|&rows| rows == 6), "{asked:?}");
    assert_eq!(*last, 1, "{asked:?}");
}

#[tokio::test]
async fn a_table_whose_larger_request_timed_out_is_asked_for_in_smaller_ones_from_then_on() {
    let rows = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(48));
    let asked: std::sync::Arc<Asked> = std::sync::Arc::default();
    // A device too slow for more than 25 rows: it never answers them.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap().to_string();
    tokio::spawn({
        let asked = asked.clone();
        async move {
            let mut buffer = vec![0u8; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buffer).await {
                let request = parse(&buffer[..n]);
                asked
                    .lock()
                    .unwrap()
                    .push((request.request_id.clone(), request.max_repetitions));
                if request.max_repetitions <= 25 {
                    let _ = socket
                        .send_to(&table_of_rows_answer(&request, 48), from)
                        .await;
                }
            }
        }
    });
    let (_dir, community) = common::poller::secret_file("public");
    let mut poller = scripted_poller(&address, &community, &table_settings());
    assert_eq!(poll_table(&mut poller, &rows, &asked, 48).await, [25, 25]);
    // The table in one request goes unanswered: that poll reads nothing.
    asked.lock().unwrap().clear();
    let silent = poll_once(&mut poller).await;
    assert!(silent.is_err(), "{silent:?}");
    let sizes: Vec<usize> = asked.lock().unwrap().iter().map(|(_, n)| *n).collect();
    assert!(sizes.iter().all(|&n| n == 49), "{sizes:?}");
    // From then on, 25 rows at a time, every row read. The poll that
    // timed out forgot the table's size; once it is known again, the
    // second request asks only for the 23 rows left of the 48 and the one
    // that shows the end.
    assert_eq!(poll_table(&mut poller, &rows, &asked, 48).await, [25, 25]);
    assert_eq!(poll_table(&mut poller, &rows, &asked, 48).await, [25, 24]);
}

#[tokio::test]
async fn a_late_answer_to_a_first_attempt_is_taken_during_the_retry_while_other_targets_poll() {
    // Each device answers a request's first attempt only once the retry
    // has come (so the answer arrives while the retry waits), to the port
    // the first attempt came from, and never answers the retry itself.
    // Four are polled at once, so their requests time out together: where
    // a retry takes whichever socket is free, some retries go out from
    // another target's socket and their late answers are lost (in some
    // polls only; `transport::tests` forces that case every time).
    let mut targets = Vec::new();
    for _ in 0..4 {
        let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        targets.push(format!("\"{}\"", device.local_addr().unwrap()));
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 65_536];
            let mut first: std::collections::HashMap<Vec<u8>, (Request, std::net::SocketAddr)> =
                std::collections::HashMap::new();
            while let Ok((n, from)) = device.recv_from(&mut buffer).await {
                let request = parse(&buffer[..n]);
                match first.remove(&request.request_id) {
                    None => {
                        first.insert(request.request_id.clone(), (request, from));
                    }
                    Some((earlier, to)) => {
                        let oid = earlier.oids[0].clone();
                        let late = answer(&earlier, &[(oid, 0x04, b"late".to_vec())]);
                        let _ = device.send_to(&late, to).await;
                    }
                }
            }
        });
    }
    let (_dir, community) = common::poller::secret_file("public");
    let mut poller = common::poller::from_entries(&format!(
        "    - name: slow\n      type: snmp\n      targets: [{}]\n      community: {{file: {community}}}\n      max_concurrent_targets: 4\n      timeout_ms: 1000\n      retries: 1\n      get: [{{oid: .1.3.6.1.2.1.1.5.0, key: sysname}}]\n",
        targets.join(", ")
    ));
    for _ in 0..3 {
        let read = poll_once(&mut poller)
            .await
            .expect("the late answers were taken");
        assert_eq!(values(&read), [&Value::Text("late".into()); 4], "{read:?}");
    }
}

#[tokio::test]
async fn a_target_is_handed_over_as_soon_as_it_is_read_while_a_later_target_still_waits() {
    const SYSNAME: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 5, 0];
    let sysname = |request: &Request| answer(request, &[(SYSNAME.to_vec(), 0x04, b"x".to_vec())]);
    let (first, (_dir, community)) = scripted(sysname).await;
    // The second device answers only once the first target's readings
    // have been handed over: a poll that held every target until the end
    // would time out on it.
    let handed_over = Arc::new(AtomicBool::new(false));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let second = socket.local_addr().unwrap().to_string();
    let gate = handed_over.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            let request = parse(&buffer[..n]);
            while !gate.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = socket.send_to(&sysname(&request), from).await;
        }
    });
    let mut poller = common::poller::from_entries(&format!(
        "    - name: odd\n      type: snmp\n      targets: [\"{first}\", \"{second}\"]\n      \
         community: {{file: {community}}}\n      timeout_ms: 10000\n      retries: 0\n      \
         get: [{{oid: .1.3.6.1.2.1.1.5.0, key: sysname}}]\n"
    ));
    let mut handed = Vec::new();
    let polled = tokio::time::timeout(
        HANG,
        poller.poll_each(&mut |target: TargetData| {
            handed.push((target.target.clone(), target.datapoints.len()));
            handed_over.store(true, Ordering::SeqCst);
        }),
    )
    .await
    .expect("the poll ends");
    assert!(polled.is_ok(), "{polled:?}");
    assert_eq!(handed, [(first, 1), (second, 1)]);
}
