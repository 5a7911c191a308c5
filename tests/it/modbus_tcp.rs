//! Modbus TCP framing against devices that misbehave on the wire: replies
//! split into single bytes, with another transaction id, with an MBAP
//! length that is too short, garbled or too long, exceptions, and devices
//! that close the connection in the middle of a reply. Each device is a
//! socket on loopback answering from a script.
#![cfg(feature = "modbus")]

use crate::common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::modbus::values_by_key;
use pattoo_agentd::model::Value;
use pattoo_agentd::pollers::modbus::ModbusPoller;

/// A request as the device reads it: MBAP header and a read PDU.
type Request = [u8; 12];

/// A wrong reply to a request, made from it.
type BadReply = Box<dyn Fn(&Request) -> Vec<u8> + Send + Sync>;

/// What the device does with a request.
enum Act {
    /// Writes each piece, a moment apart, so that the agent reads them
    /// separately.
    Send(Vec<Vec<u8>>),
    /// Writes these bytes and closes the connection.
    SendAndClose(Vec<u8>),
}

struct Device {
    address: String,
    connections: Arc<AtomicUsize>,
}

impl Device {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A device on loopback that answers the `n`th request on its `c`th
/// connection (both from 0) with `script(c, n, request)`.
async fn device(script: impl Fn(usize, usize, &Request) -> Act + Send + Sync + 'static) -> Device {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let connection = counter.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut request = [0u8; 12];
                let mut n = 0;
                while stream.read_exact(&mut request).await.is_ok() {
                    match script(connection, n, &request) {
                        Act::Send(pieces) => {
                            for (i, piece) in pieces.iter().enumerate() {
                                if i > 0 {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                                if stream.write_all(piece).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Act::SendAndClose(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            return;
                        }
                    }
                    n += 1;
                }
            });
        }
    });
    Device {
        address,
        connections,
    }
}

/// A [`device`] whose `c`th connection answers each read with `1 + c`, so
/// that a value says which connection carried it; but the first connection
/// meets its second request with `bad(request)`.
async fn device_failing_second_reply(
    bad: impl Fn(&Request) -> Act + Send + Sync + 'static,
) -> Device {
    device(move |connection, n, request| match (connection, n) {
        (0, 1) => bad(request),
        (c, _) => whole(reply(request, &input_registers(&[1 + c as u16]))),
    })
    .await
}

/// The reply to `request` carrying `pdu`, with the request's transaction
/// id and unit and the right length.
fn reply(request: &Request, pdu: &[u8]) -> Vec<u8> {
    let mut adu = vec![request[0], request[1], 0, 0];
    adu.extend(u16::try_from(pdu.len() + 1).unwrap().to_be_bytes());
    adu.push(request[6]);
    adu.extend(pdu);
    adu
}

/// The PDU answering a read of input registers with `words`.
fn input_registers(words: &[u16]) -> Vec<u8> {
    let mut pdu = vec![4, u8::try_from(words.len() * 2).unwrap()];
    for word in words {
        pdu.extend(word.to_be_bytes());
    }
    pdu
}

/// One piece.
fn whole(bytes: Vec<u8>) -> Act {
    Act::Send(vec![bytes])
}

/// A poller reading input register 30001 (and `more` registers) of
/// `device`, with a timeout no test reaches: a poll that waited for bytes
/// that never come would hang the test, not time out.
fn poller(device: &Device, more: &str) -> ModbusPoller {
    common::modbus::poller(&format!(
        "    - name: framed\n      type: modbus_tcp\n      timeout_ms: 3600000\n      targets: [\"{}\"]\n      registers: [30001{more}]\n",
        device.address
    ))
}

/// Every datapoint of a poll as `key -> value`; none when the poll read
/// nothing.
async fn poll(poller: &mut ModbusPoller) -> BTreeMap<String, Value> {
    match within(poller.poll()).await {
        Ok(targets) => values_by_key(&targets),
        Err(_) => BTreeMap::new(),
    }
}

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the poll hung")
}

fn register(value: i64) -> BTreeMap<String, Value> {
    [("input_register_30001".to_owned(), Value::Int(value))].into()
}

#[tokio::test]
async fn a_reply_arriving_a_byte_at_a_time_is_put_together_and_posted() {
    let device = device(|_, _, request| {
        let bytes = reply(request, &input_registers(&[0x1234]));
        Act::Send(bytes.into_iter().map(|b| vec![b]).collect())
    })
    .await;
    let mut poller = poller(&device, "");
    for _ in 0..2 {
        assert_eq!(poll(&mut poller).await, register(0x1234));
    }
    assert_eq!(device.connections(), 1);
}

#[tokio::test]
async fn a_reply_with_another_transaction_id_is_dropped_with_its_connection_and_asked_again_on_a_fresh_one(
) {
    // The first connection answers its second request with the id of the
    // first, carrying a value the device never meant for it.
    let device = device_failing_second_reply(|request| {
        let mut stale = reply(request, &input_registers(&[666]));
        let id = u16::from_be_bytes([request[0], request[1]]).wrapping_sub(1);
        stale[..2].copy_from_slice(&id.to_be_bytes());
        whole(stale)
    })
    .await;
    let mut poller = poller(&device, "");
    assert_eq!(poll(&mut poller).await, register(1));
    assert_eq!(poll(&mut poller).await, register(2));
    assert_eq!(device.connections(), 2);
}

#[tokio::test]
async fn a_reply_with_a_short_garbled_or_oversized_length_posts_nothing_and_drops_the_connection_at_once(
) {
    let with_length = |request: &Request, length: u16, rest: &[u8]| {
        let mut adu = vec![request[0], request[1], 0, 0];
        adu.extend(length.to_be_bytes());
        adu.push(request[6]);
        adu.extend(rest);
        adu
    };
    let cases: Vec<(&str, BadReply)> = vec![
        ("length 0", Box::new(move |r| with_length(r, 0, &[]))),
        (
            "length 1: a unit and no PDU",
            Box::new(move |r| with_length(r, 1, &[])),
        ),
        (
            "length 300, more than any PDU",
            Box::new(move |r| with_length(r, 300, &[4, 2, 2, 154])),
        ),
        (
            "length 65535",
            Box::new(move |r| with_length(r, 0xFFFF, &[4])),
        ),
        (
            "length 4 before a PDU of 4 bytes",
            Box::new(move |r| with_length(r, 4, &[4, 2, 2, 154])),
        ),
        (
            "a byte count of 4 before 2 bytes",
            Box::new(|r| reply(r, &[4, 4, 2, 154])),
        ),
        (
            "two registers for one asked",
            Box::new(|r| reply(r, &input_registers(&[666, 666]))),
        ),
        (
            "protocol id 1",
            Box::new(|r| {
                let mut adu = reply(r, &input_registers(&[666]));
                adu[3] = 1;
                adu
            }),
        ),
        (
            "another unit",
            Box::new(|r| {
                let mut adu = reply(r, &input_registers(&[666]));
                adu[6] = 9;
                adu
            }),
        ),
        ("another function", Box::new(|r| reply(r, &[3, 2, 2, 154]))),
        (
            "an exception to another function",
            Box::new(|r| reply(r, &[0x83, 2])),
        ),
        (
            "an exception with bytes after it",
            Box::new(|r| {
                let mut adu = reply(r, &[0x84, 2]);
                adu.extend([2, 154]);
                adu
            }),
        ),
    ];
    for (case, bad) in cases {
        // The first connection answers with the bad reply and stays open;
        // later ones answer right.
        let device = device(move |connection, _, request| match connection {
            0 => whole(bad(request)),
            _ => whole(reply(request, &input_registers(&[99]))),
        })
        .await;
        let mut poller = poller(&device, "");
        assert_eq!(poll(&mut poller).await, BTreeMap::new(), "{case}");
        assert_eq!(poll(&mut poller).await, register(99), "{case}");
        assert_eq!(device.connections(), 2, "{case}");
    }
}

#[tokio::test]
async fn an_exception_arriving_a_byte_at_a_time_is_an_answer_and_keeps_the_connection() {
    // Holding register 40001 answers exception 2 (illegal data address);
    // input register 30001 holds 5.
    let device = device(|_, _, request| {
        let bytes = match request[7] {
            3 => reply(request, &[0x83, 2]),
            _ => reply(request, &input_registers(&[5])),
        };
        Act::Send(bytes.into_iter().map(|b| vec![b]).collect())
    })
    .await;
    let mut poller = poller(&device, ", 40001");
    let (logs, _guard) = common::logs::capture();
    for _ in 0..3 {
        assert_eq!(poll(&mut poller).await, register(5));
    }
    assert_eq!(device.connections(), 1);
    assert!(
        logs.text()
            .contains("read holding register 40001: illegal data address"),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn a_device_closing_mid_reply_posts_nothing_and_a_kept_connection_is_replaced_at_once() {
    // The first connection answers its first request, then sends part of
    // the second reply (the header and one data byte) and closes.
    let device = device_failing_second_reply(|request| {
        let mut cut = reply(request, &input_registers(&[666]));
        cut.truncate(10);
        Act::SendAndClose(cut)
    })
    .await;
    let mut poller = poller(&device, "");
    assert_eq!(poll(&mut poller).await, register(1));
    assert_eq!(poll(&mut poller).await, register(2));
    assert_eq!(device.connections(), 2);
}

#[tokio::test]
async fn a_device_closing_a_new_connection_mid_reply_posts_nothing_and_says_how_far_it_got() {
    for cut in [3, 9] {
        let device = device(move |_, _, request| {
            let mut bytes = reply(request, &input_registers(&[666]));
            bytes.truncate(cut);
            Act::SendAndClose(bytes)
        })
        .await;
        let mut poller = poller(&device, "");
        let (logs, _guard) = common::logs::capture();
        assert_eq!(poll(&mut poller).await, BTreeMap::new());
        let said = format!("the device closed the connection {cut} byte(s) into its reply");
        assert!(logs.text().contains(&said), "{}", logs.text());
    }
}
