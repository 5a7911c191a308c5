//! Modbus RTU: on a serial line (a socat pty pair, pymodbus on the other
//! end) and over TCP (pymodbus with the RTU framer), reading the register
//! map of the Modbus TCP interoperability test into the same datapoints;
//! and the error path, through a relay that corrupts replies.
#![cfg(feature = "modbus")]

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::modbus::{poller, values_by_key};
use common::pymodbus::{self, expected_values, pty_pair, register_map_json, Framer, REGISTERS};
use pattoo_agentd::model::{TargetData, Value};
use pattoo_agentd::pollers::modbus::ModbusPoller;

/// Every datapoint as key -> (value, data type, metadata): all that is
/// posted except the target's name and the time.
fn datapoints(targets: &[TargetData]) -> BTreeMap<String, String> {
    targets
        .iter()
        .flat_map(|t| t.datapoints.iter())
        .map(|d| {
            (
                d.key.to_string(),
                format!("{:?} {:?} {:?}", d.value, d.data_type, d.metadata),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_three_transports_read_the_same_register_map_into_identical_datapoints() {
    let data = register_map_json();
    let tcp = pymodbus::start_tcp(&data, Framer::Socket);
    let rtu_over_tcp = pymodbus::start_tcp(&data, Framer::Rtu);
    let line = pty_pair();
    let _serial = pymodbus::start_serial(&line.device, &data);

    let transports = [
        ("tcp", format!("      targets: [\"{}\"]\n", tcp.address)),
        (
            "rtu_over_tcp",
            format!(
                "      transport: rtu_over_tcp\n      targets: [\"{}\"]\n",
                rtu_over_tcp.address
            ),
        ),
        (
            "rtu",
            format!(
                "      transport: rtu\n      device: {}\n      baud_rate: 19200\n      targets: [1]\n",
                line.agent.display()
            ),
        ),
    ];
    let mut read = Vec::new();
    for (name, settings) in &transports {
        let mut poller = poller(&format!(
            "    - name: {name}\n      type: modbus_tcp\n      timeout_ms: 2000\n{settings}{REGISTERS}"
        ));
        // Twice: the second poll runs on the split the first one learned.
        let first = poller
            .poll()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let second = poller
            .poll()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(values_by_key(&first), expected_values(), "{name}");
        assert_eq!(datapoints(&first), datapoints(&second), "{name}");
        read.push((name, datapoints(&first)));
    }
    assert_eq!(read[1].1, read[0].1, "rtu_over_tcp and tcp differ");
    assert_eq!(read[2].1, read[0].1, "rtu and tcp differ");
}

#[tokio::test]
async fn two_pollers_naming_one_serial_port_share_it() {
    let line = pty_pair();
    let _serial = pymodbus::start_serial(&line.device, &register_map_json());
    let yaml = |name: &str| {
        format!(
            "    - name: {name}\n      type: modbus_tcp\n      transport: rtu\n      device: {}\n      timeout_ms: 2000\n      targets: [1, 2]\n{REGISTERS}",
            line.agent.display()
        )
    };
    let mut first = poller(&yaml("first"));
    let mut second = poller(&yaml("second"));
    // At once: the port is opened once (a second open would find it
    // locked) and the requests take turns on the line.
    for _ in 0..3 {
        let (a, b) = tokio::join!(first.poll(), second.poll());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(datapoints(&a), datapoints(&b));
        assert_eq!(a.len(), 1, "both units post under the device's name");
        assert_eq!(a[0].target, line.agent.display().to_string());
        assert_eq!(a[0].datapoints.len(), 2 * expected_values().len());
    }
}

#[tokio::test]
async fn a_serial_port_that_vanishes_is_reopened_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("ttyUSB0");
    let line = pty_pair();
    std::os::unix::fs::symlink(&line.agent, &agent).unwrap();
    let serial = pymodbus::start_serial(&line.device, &register_map_json());
    let mut poller = poller(&format!(
        "    - name: unplugged\n      type: modbus_tcp\n      transport: rtu\n      device: {}\n      timeout_ms: 1000\n      targets: [1]\n{REGISTERS}",
        agent.display()
    ));
    assert_eq!(
        values_by_key(&poller.poll().await.unwrap()),
        expected_values()
    );

    // Unplugged: the pty pair and the device go away.
    drop(serial);
    drop(line);
    let (logs, _guard) = common::logs::capture();
    assert!(poller.poll().await.is_err());
    assert!(
        logs.text()
            .contains("does not exist: check that the adapter is plugged in"),
        "{}",
        logs.text()
    );

    // Plugged in again, under the same name.
    let line = pty_pair();
    std::fs::remove_file(&agent).unwrap();
    std::os::unix::fs::symlink(&line.agent, &agent).unwrap();
    let _serial = pymodbus::start_serial(&line.device, &register_map_json());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(targets) = poller.poll().await {
            assert_eq!(values_by_key(&targets), expected_values());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the port was not reopened within 30 s:\n{}",
            logs.text()
        );
        // Polls come at intervals; the backoff (1 s, then 2 s) decides
        // when the port is tried again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Modbus RTU's CRC-16 (polynomial 0xA001, initial 0xFFFF), low byte
/// first on the wire: written here from the specification.
fn crc16(bytes: &[u8]) -> [u8; 2] {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc.to_le_bytes()
}

/// What the relay does to the next replies.
#[derive(Default)]
struct Tampering {
    /// Replies left to corrupt (a flipped bit in the CRC); usize::MAX: all.
    corrupt: AtomicUsize,
    /// Replies left to send as if from another unit (with a good CRC).
    wrong_unit: AtomicUsize,
    requests: AtomicUsize,
    tampered: AtomicUsize,
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            usize::MAX => Some(usize::MAX),
            n => Some(n - 1),
        })
        .is_ok()
}

/// A TCP relay in front of an RTU-over-TCP server that tampers with whole
/// reply frames as `Tampering` says. Returns its address.
async fn relay(upstream: String, tampering: Arc<Tampering>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            let counts = tampering.clone();
            tokio::spawn(async move {
                // Read requests are 8 bytes: unit, function, start, count, CRC.
                let mut request = [0u8; 8];
                while client_rx.read_exact(&mut request).await.is_ok() {
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    if server_tx.write_all(&request).await.is_err() {
                        return;
                    }
                }
            });
            let tampering = tampering.clone();
            tokio::spawn(async move {
                let mut frame = [0u8; 260];
                loop {
                    if server_rx.read_exact(&mut frame[..3]).await.is_err() {
                        return;
                    }
                    let len = if frame[1] & 0x80 != 0 {
                        5
                    } else {
                        5 + usize::from(frame[2])
                    };
                    if server_rx.read_exact(&mut frame[3..len]).await.is_err() {
                        return;
                    }
                    let reply = &mut frame[..len];
                    if take(&tampering.corrupt) {
                        reply[len - 1] ^= 0x01;
                        tampering.tampered.fetch_add(1, Ordering::SeqCst);
                    } else if take(&tampering.wrong_unit) {
                        reply[0] = reply[0].wrapping_add(1);
                        let crc = crc16(&reply[..len - 2]);
                        reply[len - 2..].copy_from_slice(&crc);
                        tampering.tampered.fetch_add(1, Ordering::SeqCst);
                    }
                    if client_tx.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

const ONE_READ: &str = "      registers: [30001, 30002, 30003]\n";

async fn rtu_over_tcp_through_relay(
    tampering: &Arc<Tampering>,
    retries: u8,
) -> (pymodbus::PyModbus, ModbusPoller) {
    let server = pymodbus::start_tcp(&register_map_json(), Framer::Rtu);
    let address = relay(server.address.clone(), tampering.clone()).await;
    let poller = poller(&format!(
        "    - name: noisy\n      type: modbus_tcp\n      transport: rtu_over_tcp\n      timeout_ms: 1500\n      retries: {retries}\n      targets: [\"{address}\"]\n{ONE_READ}"
    ));
    (server, poller)
}

#[tokio::test]
async fn a_reply_with_a_bad_crc_is_logged_and_asked_again() {
    let tampering = Arc::new(Tampering::default());
    tampering.corrupt.store(1, Ordering::SeqCst);
    let (_server, mut poller) = rtu_over_tcp_through_relay(&tampering, 1).await;
    let (logs, _guard) = common::logs::capture();
    let got = values_by_key(&poller.poll().await.unwrap());
    assert_eq!(got.len(), 3, "{got:?}");
    let input = pymodbus::register_map().0;
    assert_eq!(got["input_register_30003"], Value::Int(input[2].into()));
    assert_eq!(tampering.tampered.load(Ordering::SeqCst), 1);
    assert_eq!(
        tampering.requests.load(Ordering::SeqCst),
        2,
        "the read was asked again once"
    );
    let text = logs.text();
    assert!(text.contains("garbled reply"), "{text}");
    assert!(text.contains("good CRC"), "{text}");
    assert!(text.contains("asking again"), "{text}");
}

#[tokio::test]
async fn a_reply_from_the_wrong_unit_is_logged_and_asked_again() {
    let tampering = Arc::new(Tampering::default());
    tampering.wrong_unit.store(1, Ordering::SeqCst);
    let (_server, mut poller) = rtu_over_tcp_through_relay(&tampering, 1).await;
    let (logs, _guard) = common::logs::capture();
    let got = values_by_key(&poller.poll().await.unwrap());
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(tampering.requests.load(Ordering::SeqCst), 2);
    let text = logs.text();
    assert!(text.contains("reply did not match the request"), "{text}");
    assert!(text.contains("asking again"), "{text}");
}

#[tokio::test]
async fn replies_that_stay_garbled_fail_the_read_once_the_retries_are_spent() {
    let tampering = Arc::new(Tampering::default());
    tampering.corrupt.store(usize::MAX, Ordering::SeqCst);
    let (_server, mut poller) = rtu_over_tcp_through_relay(&tampering, 2).await;
    let (logs, _guard) = common::logs::capture();
    assert!(poller.poll().await.is_err());
    assert_eq!(
        tampering.requests.load(Ordering::SeqCst),
        3,
        "asked once and retried twice"
    );
    let text = logs.text();
    assert!(
        text.contains("read input registers 30001..30003: garbled reply"),
        "{text}"
    );
}

#[tokio::test]
async fn a_port_held_by_another_program_is_reported_busy_with_what_to_do() {
    let line = pty_pair();
    // Another program has the port, exclusively, as serial programs do.
    let _held = tokio_serial::SerialStream::open(&tokio_serial::new(
        line.agent.display().to_string(),
        9600,
    ))
    .unwrap();
    let mut poller = poller(&format!(
        "    - name: busy\n      type: modbus_tcp\n      transport: rtu\n      device: {}\n      registers: [30001]\n",
        line.agent.display()
    ));
    let (logs, _guard) = common::logs::capture();
    assert!(poller.poll().await.is_err());
    let text = logs.text();
    assert!(
        text.contains(&format!(
            "{} is busy: another program has it open",
            line.agent.display()
        )),
        "{text}"
    );
    assert!(text.contains("fuser -v"), "{text}");
}

/// What a hand-made RTU device on a pty saw: when each request arrived and
/// when its reply was sent.
#[derive(Debug, Clone, Copy)]
struct Exchange {
    asked: Instant,
    answered: Instant,
}

/// A device on `path` answering every read-input-registers request with
/// zeros after `delay`, recording each exchange; a request that arrives
/// while another is being answered is recorded as an overlap.
fn slow_rtu_device(
    path: &std::path::Path,
    delay: Duration,
) -> Arc<std::sync::Mutex<Vec<Exchange>>> {
    let mut port =
        tokio_serial::SerialStream::open(&tokio_serial::new(path.display().to_string(), 1200))
            .unwrap();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let exchanges = log.clone();
    tokio::spawn(async move {
        let mut request = [0u8; 8];
        while port.read_exact(&mut request).await.is_ok() {
            let asked = Instant::now();
            assert_eq!(
                crc16(&request[..6]),
                [request[6], request[7]],
                "bad request CRC"
            );
            let count = u16::from_be_bytes([request[4], request[5]]);
            let mut reply = vec![request[0], request[1], (count * 2) as u8];
            reply.extend(std::iter::repeat_n(0u8, usize::from(count) * 2));
            let crc = crc16(&reply);
            reply.extend(crc);
            tokio::time::sleep(delay).await;
            if port.write_all(&reply).await.is_err() {
                return;
            }
            exchanges.lock().unwrap().push(Exchange {
                asked,
                answered: Instant::now(),
            });
        }
    });
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_line_carries_one_request_at_a_time_with_the_inter_frame_silence_between() {
    let line = pty_pair();
    let exchanges = slow_rtu_device(&line.device, Duration::from_millis(20));
    // 1200 baud 8E1: 11 bits a character, 3.5 characters are 32 ms.
    let silence = Duration::from_micros(3_500 * 11 * 1_000_000 / 1_200 / 1_000);
    let yaml = |name: &str, units: &str| {
        format!(
            "    - name: {name}\n      type: modbus_tcp\n      transport: rtu\n      device: {}\n      baud_rate: 1200\n      parity: even\n      timeout_ms: 2000\n      targets: {units}\n      registers: [30001, 30100]\n",
            line.agent.display()
        )
    };
    let mut first = poller(&yaml("first", "[1, 2]"));
    let mut second = poller(&yaml("second", "[3]"));
    let (a, b) = tokio::join!(first.poll(), second.poll());
    assert_eq!(a.unwrap()[0].datapoints.len(), 4);
    assert_eq!(b.unwrap()[0].datapoints.len(), 2);

    let mut exchanges = exchanges.lock().unwrap().clone();
    exchanges.sort_by_key(|e| e.asked);
    assert_eq!(exchanges.len(), 6, "one request per unit and register");
    for pair in exchanges.windows(2) {
        let quiet = pair[1].asked.saturating_duration_since(pair[0].answered);
        assert!(
            pair[1].asked > pair[0].answered,
            "a request came while another was being answered: {pair:?}"
        );
        assert!(
            quiet >= silence,
            "only {quiet:?} of silence between a reply and the next request (want {silence:?})"
        );
    }
}

/// What a unit behind [`RtuLine`] does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Answer,
    /// Sends its reply, then the same reply again a little later.
    AnswerTwice,
    /// Sends its reply again just before its answer to the next request:
    /// the copy arrives after that request went out.
    RepeatBeforeNext,
    /// Answers with line noise: bytes that make no frame.
    Noise,
    /// Holds its answer to the first read starting at this address, and
    /// sends it only with the answer to the next request (a reply that
    /// comes after the agent's timeout).
    AnswerLate(u16),
}

/// A hand-made RTU bus: units with a [`Behaviour`] each, answering read
/// requests. Input register `a` holds 1000 + `a`; every holding register
/// holds the number of requests the line has answered, the current one
/// included, so a stale reply shows. Served on a pty (a serial line) or
/// behind a TCP listener (a transparent gateway: a reply held on the line
/// goes out on whichever connection asks next).
#[derive(Default)]
struct RtuLine {
    units: std::sync::Mutex<BTreeMap<u8, Behaviour>>,
    answered: AtomicUsize,
    /// Requests by unit.
    asked: std::sync::Mutex<BTreeMap<u8, usize>>,
    /// Second copies sent by `AnswerTwice` units.
    repeats_sent: AtomicUsize,
    /// A held reply, sent before the next answer.
    held: std::sync::Mutex<Option<Vec<u8>>>,
}

impl RtuLine {
    fn new(units: impl IntoIterator<Item = (u8, Behaviour)>) -> Arc<Self> {
        let line = RtuLine::default();
        line.units.lock().unwrap().extend(units);
        Arc::new(line)
    }

    /// The frames to send for `request`, and a copy to send again later.
    fn answer(&self, request: &[u8; 8]) -> (Vec<u8>, Option<Vec<u8>>) {
        assert_eq!(
            crc16(&request[..6]),
            [request[6], request[7]],
            "bad request CRC"
        );
        let (unit, function) = (request[0], request[1]);
        let start = u16::from_be_bytes([request[2], request[3]]);
        let count = u16::from_be_bytes([request[4], request[5]]);
        *self.asked.lock().unwrap().entry(unit).or_default() += 1;
        let behaviour = self.units.lock().unwrap().get(&unit).copied();
        let Some(behaviour) = behaviour else {
            return (Vec::new(), None);
        };
        if behaviour == Behaviour::Noise {
            return ([0x55, 0xAA].repeat(24), None);
        }
        let sequence = self.answered.fetch_add(1, Ordering::SeqCst) + 1;
        let mut reply = vec![unit, function, (count * 2) as u8];
        for address in start..start + count {
            let value = match function {
                3 => sequence as u16,
                _ => 1000 + address,
            };
            reply.extend(value.to_be_bytes());
        }
        let crc = crc16(&reply);
        reply.extend(crc);
        let mut held = self.held.lock().unwrap();
        if behaviour == Behaviour::AnswerLate(start) && held.is_none() {
            // Only the first such read is late.
            self.units.lock().unwrap().insert(unit, Behaviour::Answer);
            *held = Some(reply);
            return (Vec::new(), None);
        }
        let mut out = held.take().unwrap_or_default();
        out.extend(&reply);
        if behaviour == Behaviour::RepeatBeforeNext {
            *held = Some(reply.clone());
        }
        let again = (behaviour == Behaviour::AnswerTwice).then_some(reply);
        (out, again)
    }

    /// Answers requests on `stream` until it closes.
    async fn serve<S>(self: Arc<Self>, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let (mut rx, tx) = tokio::io::split(stream);
        let tx = Arc::new(tokio::sync::Mutex::new(tx));
        let mut request = [0u8; 8];
        while rx.read_exact(&mut request).await.is_ok() {
            let (now, again) = self.answer(&request);
            if tx.lock().await.write_all(&now).await.is_err() {
                return;
            }
            if let Some(again) = again {
                let (tx, line) = (tx.clone(), self.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if tx.lock().await.write_all(&again).await.is_ok() {
                        line.repeats_sent.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        }
    }

    /// Serves the line behind a TCP listener; returns its address.
    async fn gateway(self: &Arc<Self>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let line = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(line.clone().serve(stream));
            }
        });
        address
    }

    /// Serves the line on the device end of a pty pair.
    fn on_serial(self: &Arc<Self>, device: &std::path::Path) {
        let port = tokio_serial::SerialStream::open(&tokio_serial::new(
            device.display().to_string(),
            19200,
        ))
        .unwrap();
        tokio::spawn(self.clone().serve(port));
    }

    /// Waits until `n` second copies have gone out.
    async fn wait_for_repeats(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.repeats_sent.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "the unit did not repeat its reply"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A poller reading holding register 40001 of unit 1 on `line` through a
/// gateway: the value read is the number of requests the line answered.
async fn holding_register_40001_through_a_gateway(line: &Arc<RtuLine>) -> ModbusPoller {
    let address = line.gateway().await;
    poller(&format!(
        "    - name: twice\n      type: modbus_tcp\n      transport: rtu_over_tcp\n      timeout_ms: 2000\n      targets: [\"{address}\"]\n      registers: [40001]\n"
    ))
}

#[tokio::test]
async fn a_reply_sent_twice_is_not_taken_for_the_answer_to_the_next_request() {
    let line = RtuLine::new([(1, Behaviour::AnswerTwice)]);
    let mut poller = holding_register_40001_through_a_gateway(&line).await;
    let (logs, _guard) = common::logs::capture();
    for n in 1..=4 {
        let got = values_by_key(&poller.poll().await.unwrap());
        // The n-th request's answer, not the copy of the one before it.
        assert_eq!(got["holding_register_40001"], Value::Int(n), "poll {n}");
        line.wait_for_repeats(n as usize).await;
    }
    let text = logs.text();
    assert!(
        text.contains("discarded 7 byte(s) waiting on the line before asking unit 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_copy_of_the_last_reply_arriving_after_the_next_request_is_not_taken_for_its_answer() {
    let line = RtuLine::new([(1, Behaviour::RepeatBeforeNext)]);
    let mut poller = holding_register_40001_through_a_gateway(&line).await;
    let (logs, _guard) = common::logs::capture();
    for n in 1..=4 {
        let got = values_by_key(&poller.poll().await.unwrap());
        assert_eq!(got["holding_register_40001"], Value::Int(n), "poll {n}");
    }
    let text = logs.text();
    assert!(
        text.contains("dropped a copy of the previous reply that came after the request went out"),
        "{text}"
    );
}

/// A reply of two registers held until after the timeout arrives as the
/// answer to a read of one: its byte count tells it apart.
const LATE_READS: &str =
    "      max_gap: 0\n      registers:\n        - 30001\n        - {address: 30201, type: uint32}\n";

#[tokio::test]
async fn a_reply_arriving_after_its_timeout_is_dropped_and_values_are_not_shifted() {
    let line = RtuLine::new([(1, Behaviour::AnswerLate(200))]);
    let address = line.gateway().await;
    let mut poller = poller(&format!(
        "    - name: late\n      type: modbus_tcp\n      transport: rtu_over_tcp\n      timeout_ms: 1500\n      retries: 0\n      targets: [\"{address}\"]\n{LATE_READS}"
    ));
    let (logs, _guard) = common::logs::capture();
    let first = values_by_key(&poller.poll().await.unwrap());
    assert_eq!(first["input_register_30001"], Value::Int(1000));
    assert!(!first.contains_key("input_register_30201"), "{first:?}");
    let second = values_by_key(&poller.poll().await.unwrap());
    assert_eq!(second["input_register_30001"], Value::Int(1000));
    assert_eq!(
        second["input_register_30201"],
        Value::Int((1200 << 16) + 1201)
    );
    let text = logs.text();
    assert!(
        text.contains("dropped a reply that does not answer the request (a reply from unit 1, function 4, 4 data byte(s); asked unit 1, function 4, 2 data byte(s))"),
        "{text}"
    );
}

#[tokio::test]
async fn on_a_shared_serial_line_a_late_reply_is_not_taken_by_the_other_pollers_request() {
    let pty = pty_pair();
    let line = RtuLine::new([(1, Behaviour::AnswerLate(200))]);
    line.on_serial(&pty.device);
    let yaml = |name: &str, registers: &str| {
        format!(
            "    - name: {name}\n      type: modbus_tcp\n      transport: rtu\n      device: {}\n      baud_rate: 19200\n      timeout_ms: 1500\n      retries: 0\n      targets: [1]\n      registers: [{registers}]\n",
            pty.agent.display()
        )
    };
    let mut slow = poller(&yaml("slow", "{address: 30201, type: uint32}"));
    let mut other = poller(&yaml("other", "30001"));
    let (logs, _guard) = common::logs::capture();
    assert!(slow.poll().await.is_err(), "the held reply came in time");
    let got = values_by_key(&other.poll().await.unwrap());
    assert_eq!(got["input_register_30001"], Value::Int(1000));
    let again = values_by_key(&slow.poll().await.unwrap());
    assert_eq!(
        again["input_register_30201"],
        Value::Int((1200 << 16) + 1201)
    );
    let text = logs.text();
    assert!(
        text.contains("dropped a reply that does not answer"),
        "{text}"
    );
}

/// Two units, 1 (named good) answering and 2 (noisy) answering noise;
/// two reads from each (max_gap is 0).
fn one_good_one_noisy(settings: &str, targets: &str) -> ModbusPoller {
    poller(&format!(
        "    - name: line\n      type: modbus_tcp\n{settings}      timeout_ms: 1500\n      targets: {targets}\n      registers: [30001, 30002, 30101]\n"
    ))
}

async fn the_good_unit_is_read_every_poll(
    mut poller: ModbusPoller,
    line: &RtuLine,
    endpoint: &str,
) {
    let (logs, _guard) = common::logs::capture();
    for n in 1..=3 {
        let targets = poller
            .poll()
            .await
            .unwrap_or_else(|e| panic!("poll {n}: {e}"));
        assert_eq!(targets.len(), 1, "poll {n}: {targets:?}");
        assert_eq!(targets[0].target, "good");
        let got = values_by_key(&targets);
        assert_eq!(got["input_register_30001"], Value::Int(1000), "poll {n}");
        assert_eq!(got["input_register_30002"], Value::Int(1001), "poll {n}");
        assert_eq!(got["input_register_30101"], Value::Int(1100), "poll {n}");
        // The noisy unit's first read, asked again once (retries: 1);
        // its second read is not asked in a poll its first one failed.
        assert_eq!(line.asked.lock().unwrap()[&2], 2 * n, "poll {n}");
    }
    let text = logs.text();
    assert!(
        text.contains(&format!(
            "unit 2 on {endpoint}: read input registers 30001..30002: garbled reply"
        )),
        "{text}"
    );
    assert!(!text.contains("skipping the other"), "{text}");
}

#[tokio::test]
async fn a_unit_answering_noise_through_a_gateway_does_not_stop_the_others_being_read() {
    let line = RtuLine::new([(1, Behaviour::Answer), (2, Behaviour::Noise)]);
    let address = line.gateway().await;
    let poller = one_good_one_noisy(
        "      transport: rtu_over_tcp\n",
        &format!(
            "[{{address: \"{address}\", unit: 1, name: good}}, {{address: \"{address}\", unit: 2, name: noisy}}]"
        ),
    );
    the_good_unit_is_read_every_poll(poller, &line, &address).await;
}

#[tokio::test]
async fn a_unit_answering_noise_on_a_serial_line_does_not_stop_the_others_being_read() {
    let pty = pty_pair();
    let line = RtuLine::new([(1, Behaviour::Answer), (2, Behaviour::Noise)]);
    line.on_serial(&pty.device);
    let device = pty.agent.display().to_string();
    let poller = one_good_one_noisy(
        &format!("      transport: rtu\n      device: {device}\n      baud_rate: 19200\n"),
        "[{unit: 1, name: good}, {unit: 2, name: noisy}]",
    );
    the_good_unit_is_read_every_poll(poller, &line, &device).await;
}
