//! Modbus RTU: on a serial line (a socat pty pair, pymodbus on the other
//! end) and over TCP (pymodbus with the RTU framer), reading the register
//! map of the Modbus TCP interoperability test into the same datapoints;
//! and the error path, through a relay that corrupts replies.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::modbus::modbus_poller;
use common::pymodbus::{self, expected_values, pty_pair, register_map_json, Framer, REGISTERS};
use pattoo_agentd::model::{TargetData, Value};
use pattoo_agentd::pollers::modbus::ModbusPoller;

fn poller(yaml: &str) -> ModbusPoller {
    let (settings, modbus) = modbus_poller(yaml);
    ModbusPoller::new(&settings.name, &modbus).unwrap()
}

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

fn values(targets: &[TargetData]) -> BTreeMap<String, Value> {
    targets
        .iter()
        .flat_map(|t| t.datapoints.iter())
        .map(|d| (d.key.to_string(), d.value.clone()))
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
        assert_eq!(values(&first), expected_values(), "{name}");
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
    assert_eq!(values(&poller.poll().await.unwrap()), expected_values());

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
            assert_eq!(values(&targets), expected_values());
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
    let got = values(&poller.poll().await.unwrap());
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
    let got = values(&poller.poll().await.unwrap());
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
