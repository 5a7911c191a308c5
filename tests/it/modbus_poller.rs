//! The Modbus poller against in-process devices.
#![cfg(feature = "modbus")]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::modbus::{layout, poller};
use common::modbus_sim::{Sim, Unit};
use pattoo_agentd::model::{DataType, TargetData, Value};

/// Every datapoint as `target/key -> value`.
fn values(targets: &[TargetData]) -> BTreeMap<String, Value> {
    targets
        .iter()
        .flat_map(|t| {
            t.datapoints
                .iter()
                .map(move |d| (format!("{}/{}", t.target, d.key), d.value.clone()))
        })
        .collect()
}

// 3.14159 is the float device manuals use as their example, not π.
#[allow(clippy::approx_constant)]
#[tokio::test]
async fn every_value_type_reads_correctly_under_every_byte_and_word_order() {
    let orders = ["ABCD", "CDAB", "BADC", "DCBA"];
    let text = b"SMA Sunny Boy 5\0";
    let cases: Vec<(&str, Vec<u8>, Value, Option<u16>)> = vec![
        (
            "int16",
            (-12345_i16).to_be_bytes().to_vec(),
            Value::Int(-12345),
            None,
        ),
        (
            "uint16",
            54321_u16.to_be_bytes().to_vec(),
            Value::Int(54321),
            None,
        ),
        (
            "int32",
            (-123_456_789_i32).to_be_bytes().to_vec(),
            Value::Int(-123_456_789),
            None,
        ),
        (
            "uint32",
            4_000_000_000_u32.to_be_bytes().to_vec(),
            Value::Int(4_000_000_000),
            None,
        ),
        (
            "int64",
            (-9_000_000_000_000_i64).to_be_bytes().to_vec(),
            Value::Int(-9_000_000_000_000),
            None,
        ),
        (
            "uint64",
            18_000_000_000_000_000_000_u64.to_be_bytes().to_vec(),
            Value::UInt(18_000_000_000_000_000_000),
            None,
        ),
        (
            "float32",
            3.14159_f32.to_be_bytes().to_vec(),
            Value::Float(f64::from(3.14159_f32)),
            None,
        ),
        (
            "float64",
            (-1234.5678e-3_f64).to_be_bytes().to_vec(),
            Value::Float(-1234.5678e-3),
            None,
        ),
        (
            "string",
            text.to_vec(),
            Value::Text("SMA Sunny Boy 5".into()),
            Some(8),
        ),
    ];

    let mut unit = Unit::default();
    let mut registers = String::new();
    let mut expected = BTreeMap::new();
    let mut next = 0u16;
    for order in orders {
        for (name, bytes, value, length) in &cases {
            // Strings are read register by register: only the byte swap
            // applies to them.
            let words = if *name == "string" {
                let within = if matches!(order, "BADC" | "DCBA") {
                    "BADC"
                } else {
                    "ABCD"
                };
                layout(bytes, within)
            } else {
                layout(bytes, order)
            };
            unit = unit.holding(next, &words);
            let key = format!("{name}_{order}");
            registers.push_str(&format!(
                "      - {{table: holding_register, address: {next}, type: {name}, order: {order}, key: {key}{}}}\n",
                length.map(|l| format!(", length: {l}")).unwrap_or_default()
            ));
            expected.insert(key, value.clone());
            next += words.len() as u16 + 1;
        }
    }
    unit = unit.coil(4, true).discrete(0, true).discrete(1, false);
    registers.push_str("      - \"00005\"\n      - 10001\n      - 10002\n");
    expected.insert("coil_5".into(), Value::Int(1));
    expected.insert("discrete_input_10001".into(), Value::Int(1));
    expected.insert("discrete_input_10002".into(), Value::Int(0));

    let sim = Sim::start([(1, unit)]).await;
    let mut poller = poller(&format!(
        "    - name: types\n      type: modbus_tcp\n      targets: [\"{}\"]\n      registers:\n{registers}",
        sim.address()
    ));
    let targets = poller.poll().await.unwrap();
    let got: BTreeMap<String, Value> = values(&targets)
        .into_iter()
        .map(|(k, v)| (k.rsplit('/').next().unwrap().to_owned(), v))
        .collect();
    assert_eq!(got, expected);

    let data_types: BTreeMap<&str, DataType> = targets[0]
        .datapoints
        .iter()
        .map(|d| (d.key.as_str(), d.data_type))
        .collect();
    assert_eq!(data_types["float32_CDAB"], DataType::Float);
    assert_eq!(data_types["int32_ABCD"], DataType::Int);
    assert_eq!(data_types["string_DCBA"], DataType::String);
    assert_eq!(data_types["coil_5"], DataType::Int);
}

#[tokio::test]
async fn reads_are_merged_to_the_planned_minimum_and_one_connection_serves_ten_polls() {
    let sim = Sim::start([(1, Unit::default().input(0, &[1, 2, 3]).holding(0, &[7; 4]))]).await;
    // Input registers 30001-30003 merge into one read; 30010-30011 (a
    // float32) is six unwanted registers away, more than max_gap 5, so it is
    // a second. Holding 40001-40004 overlap into one read; coils 1 and 2
    // into one.
    let mut poller = poller(&format!(
        "    - name: merged
      type: modbus_tcp
      targets: [\"{}\"]
      max_gap: 5
      registers: [30001, 30002, 30003, {{address: 30010, type: float32}},
                  {{address: 40001, type: uint32}}, {{address: 40002, type: int32}}, 40004,
                  1, 2]
",
        sim.address()
    ));
    assert_eq!(poller.planned_reads(), 4);
    for _ in 0..10 {
        let targets = poller.poll().await.unwrap();
        assert_eq!(targets[0].datapoints.len(), 9);
    }
    assert_eq!(sim.requests(), 40);
    assert_eq!(sim.connections(), 1);
    let seen: BTreeSet<(u8, u16, u16)> = sim
        .seen()
        .iter()
        .map(|s| (s.function, s.start, s.count))
        .collect();
    let expected: BTreeSet<(u8, u16, u16)> = [(4, 0, 3), (4, 9, 2), (3, 0, 4), (1, 0, 2)].into();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_small_gap_is_bridged_when_max_gap_allows_it() {
    let sim = Sim::start([(1, Unit::default().input(0, &[1]).input(6, &[6]))]).await;
    let mut poller = poller(&format!(
        "    - name: bridged\n      type: modbus_tcp\n      targets: [\"{}\"]\n      max_gap: 5\n      registers: [30001, 30007]\n",
        sim.address()
    ));
    let got = values(&poller.poll().await.unwrap());
    assert_eq!(got.len(), 2);
    assert_eq!(sim.requests(), 1);
    assert_eq!(sim.seen()[0].count, 7);
}

#[tokio::test]
async fn the_poller_reconnects_after_the_device_restarts() {
    let mut sim = Sim::start([(1, Unit::default().input(0, &[42]))]).await;
    let mut poller = poller(&format!(
        "    - name: restart\n      type: modbus_tcp\n      targets: [\"{}\"]\n      registers: [30001]\n",
        sim.address()
    ));
    assert_eq!(values(&poller.poll().await.unwrap()).len(), 1);
    sim.restart().await;
    let got = values(&poller.poll().await.unwrap());
    assert_eq!(
        got.into_values().collect::<Vec<_>>(),
        [Value::Int(42)],
        "the poll after the restart reads the value again"
    );
    assert_eq!(sim.connections(), 2);
}

#[tokio::test]
async fn a_refused_merged_read_is_split_and_the_good_registers_still_arrive() {
    let words: Vec<u16> = (100..108).collect();
    let sim = Sim::start([(1, Unit::default().input(0, &words))]).await;
    sim.refuse(4, 4); // input register 30005
    let mut poller = poller(&format!(
        "    - name: split\n      type: modbus_tcp\n      targets: [\"{}\"]\n      registers: [30001, 30002, 30003, 30004, 30005, 30006, 30007, 30008]\n",
        sim.address()
    ));
    assert_eq!(poller.planned_reads(), 1);
    let first = values(&poller.poll().await.unwrap());
    let keys: Vec<&str> = first
        .keys()
        .map(|k| k.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "input_register_30001",
            "input_register_30002",
            "input_register_30003",
            "input_register_30004",
            "input_register_30006",
            "input_register_30007",
            "input_register_30008"
        ]
    );
    assert_eq!(
        first[&format!("{}/input_register_30006", sim.address())],
        Value::Int(105)
    );
    // 0..8 refused, 0..4 read, 4..8 refused, 4..6 refused, 4 refused,
    // 5 read, 6..8 read.
    assert_eq!(sim.requests(), 7);
    // The split is remembered: the next poll goes straight to the four
    // reads that isolate the bad address.
    assert_eq!(poller.planned_reads(), 4);
    let second = values(&poller.poll().await.unwrap());
    assert_eq!(second, first);
    assert_eq!(sim.requests(), 11);
    assert_eq!(sim.connections(), 1);
}

#[tokio::test]
async fn a_device_that_never_answers_costs_one_timeout_while_another_devices_values_arrive() {
    let silent = Sim::start([(1, Unit::default())]).await;
    silent.go_silent();
    let alive = Sim::start([(1, Unit::default().input(0, &[11]).holding(0, &[22]))]).await;
    let mut poller = poller(&format!(
        "    - name: mixed\n      type: modbus_tcp\n      timeout_ms: 500\n      targets: [\"{}\", \"{}\"]\n      registers: [30001, 40001]\n",
        silent.address(),
        alive.address()
    ));
    let started = Instant::now();
    let targets = poller.poll().await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "the poll took {took:?}, less than the timeout of 500ms"
    );
    let got = values(&targets);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[&format!("{}/input_register_30001", alive.address())],
        Value::Int(11)
    );
    // Two reads were planned for the silent device; after the first timed
    // out the second was not sent (it would have cost a second timeout).
    assert_eq!(silent.requests(), 1, "the silent device was asked once");
}

/// The units the device was asked about, in order, since `from`.
fn units_asked(sim: &Sim, from: usize) -> Vec<u8> {
    sim.seen()[from..].iter().map(|s| s.unit).collect()
}

#[tokio::test]
async fn a_gateway_that_accepts_but_never_answers_costs_one_timeout_per_poll_whatever_the_units() {
    let units = [1, 2, 3, 4];
    let sim = Sim::start(units.map(|u| (u, Unit::default().input(0, &[u.into()])))).await;
    sim.go_silent();
    let address = sim.address();
    let mut poller = poller(&format!(
        "    - name: gateway
      type: modbus_tcp
      timeout_ms: 500
      targets:
{}      registers: [30001, 40001]
",
        units
            .iter()
            .map(|u| format!("        - {{address: \"{address}\", unit: {u}}}\n"))
            .collect::<String>()
    ));
    // The first poll cannot tell a silent gateway from silent units: it
    // asks each unit once (and each unit's second read is skipped).
    assert!(poller.poll().await.is_err());
    assert_eq!(units_asked(&sim, 0), [1, 2, 3, 4]);
    // From then on one request, one timeout, per poll; the units take
    // turns so that whichever comes back first is found.
    let mut asked = Vec::new();
    for _ in 0..4 {
        let before = sim.requests();
        let started = Instant::now();
        assert!(poller.poll().await.is_err());
        let took = started.elapsed();
        assert_eq!(sim.requests() - before, 1, "one request per poll");
        assert!(
            took < Duration::from_millis(4 * 500),
            "a poll of a silent gateway took {took:?}, as long as a timeout per unit"
        );
        asked.extend(units_asked(&sim, before));
    }
    assert_eq!(asked, [1, 2, 3, 4]);

    // Back: the next poll reads every unit again.
    sim.answer_again();
    let targets = poller.poll().await.unwrap();
    let units: BTreeSet<String> = targets[0]
        .datapoints
        .iter()
        .map(|d| d.metadata[0].value.to_string())
        .collect();
    assert_eq!(units, ["001", "002", "003", "004"].map(String::from).into());
    assert_eq!(targets[0].datapoints.len(), 8);
}

#[tokio::test]
async fn a_dead_unit_behind_a_live_gateway_does_not_hold_up_the_others() {
    let sim = Sim::start([
        (1, Unit::default().input(0, &[101])),
        (2, Unit::default().input(0, &[202])),
        (3, Unit::default().input(0, &[303])),
    ])
    .await;
    sim.silence_unit(1);
    let address = sim.address();
    let mut poller = poller(&format!(
        "    - name: gateway
      type: modbus_tcp
      timeout_ms: 1000
      targets:
        - {{address: \"{address}\", unit: 1, name: dead}}
        - {{address: \"{address}\", unit: 2, name: two}}
        - {{address: \"{address}\", unit: 3, name: three}}
      registers: [30001, 40001]
"
    ));
    for poll in 0..3 {
        let before = sim.requests();
        let got = values(&poller.poll().await.unwrap());
        let got: Vec<&Value> = got
            .iter()
            .filter(|(k, _)| k.ends_with("input_register_30001"))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(got, [&Value::Int(303), &Value::Int(202)], "poll {poll}");
        // The dead unit is asked once (its second read skipped); the live
        // ones twice each.
        let mut asked = units_asked(&sim, before);
        asked.sort();
        assert_eq!(asked, [1, 2, 2, 3, 3], "poll {poll}");
    }
}

#[tokio::test]
async fn several_unit_ids_behind_one_gateway_share_one_connection() {
    let sim = Sim::start([
        (1, Unit::default().input(0, &[101])),
        (2, Unit::default().input(0, &[202])),
        (3, Unit::default().input(0, &[303]).holding(0, &[333])),
    ])
    .await;
    let address = sim.address();
    let mut poller = poller(&format!(
        "    - name: gateway
      type: modbus_tcp
      targets:
        - {{address: \"{address}\", unit: 1}}
        - {{address: \"{address}\", unit: 2}}
      registers: [30001, {{address: 40001, unit: 3, key: unit_three_holding}}]
"
    ));
    let targets = poller.poll().await.unwrap();
    assert_eq!(
        targets.len(),
        1,
        "both units post under the gateway's address"
    );
    let mut got: Vec<(String, String, Value)> = targets[0]
        .datapoints
        .iter()
        .map(|d| {
            (
                d.metadata[0].value.to_string(),
                d.key.to_string(),
                d.value.clone(),
            )
        })
        .collect();
    got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        got,
        [
            ("001".into(), "input_register_30001".into(), Value::Int(101)),
            ("002".into(), "input_register_30001".into(), Value::Int(202)),
            // Both targets override to unit 3 for this register: one read.
            ("003".into(), "unit_three_holding".into(), Value::Int(333)),
            ("003".into(), "unit_three_holding".into(), Value::Int(333)),
        ]
    );
    assert_eq!(sim.connections(), 1);
    let units: BTreeSet<u8> = sim.seen().iter().map(|s| s.unit).collect();
    assert_eq!(units, [1, 2, 3].into());
    assert_eq!(sim.requests(), 3);
}

#[tokio::test]
async fn an_exception_keeps_the_connection_and_the_other_values() {
    let sim = Sim::start([(1, Unit::default().input(0, &[5]))]).await;
    sim.refuse(3, 0);
    let mut poller = poller(&format!(
        "    - name: exception\n      type: modbus_tcp\n      targets: [\"{}\"]\n      registers: [30001, 40001]\n",
        sim.address()
    ));
    for _ in 0..3 {
        let got = values(&poller.poll().await.unwrap());
        assert_eq!(got.len(), 1);
    }
    assert_eq!(sim.connections(), 1);
}

#[tokio::test]
async fn a_poll_that_reads_nothing_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut poller = poller(&format!(
        "    - name: dead\n      type: modbus_tcp\n      targets: [\"{address}\"]\n      registers: [30001, 40001]\n"
    ));
    let error = poller.poll().await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("poller dead: nothing read: all 2 read(s) failed"),
        "{error}"
    );
}

/// A device whose first connection answers every read with the wrong
/// transaction id; later connections answer correctly. Serves one input
/// register holding 99.
async fn confused_device() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let confused = counter.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                // MBAP header (7 bytes) and a read request PDU (5 bytes).
                let mut request = [0u8; 12];
                while stream.read_exact(&mut request).await.is_ok() {
                    let mut transaction = u16::from_be_bytes([request[0], request[1]]);
                    if confused {
                        transaction = transaction.wrapping_add(1);
                    }
                    let [t0, t1] = transaction.to_be_bytes();
                    let reply = [t0, t1, 0, 0, 0, 5, request[6], 4, 2, 0, 99];
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, accepted)
}

#[tokio::test]
async fn a_reply_with_the_wrong_transaction_id_drops_the_connection() {
    let (address, accepted) = confused_device().await;
    let mut poller = poller(&format!(
        "    - name: confused\n      type: modbus_tcp\n      targets: [\"{address}\"]\n      registers: [30001]\n"
    ));
    assert!(
        poller.poll().await.is_err(),
        "a mismatched reply is not a value"
    );
    let got = values(&poller.poll().await.unwrap());
    assert_eq!(got.into_values().collect::<Vec<_>>(), [Value::Int(99)]);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_device_that_drops_every_connection_is_not_reconnected_to_before_its_backoff() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let mut poller = poller(&format!(
        "    - name: dropping\n      type: modbus_tcp\n      targets: [\"{address}\"]\n      registers: [30001, 40001]\n"
    ));
    assert!(poller.poll().await.is_err());
    // Stop the clock: however busy the machine, the second poll falls
    // within the first second of backoff.
    tokio::time::pause();
    assert!(poller.poll().await.is_err());
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the second poll fell within the first second of backoff"
    );
}

#[tokio::test]
async fn devices_are_polled_concurrently_up_to_the_configured_limit() {
    // Devices that never answer and a timeout no run reaches: how many
    // devices have been asked while the poll still waits shows how many are
    // polled at once, however busy the machine is.
    for (limit, asked_at_once) in [(2, 2), (1, 1)] {
        let first = Sim::start([(1, Unit::default())]).await;
        let second = Sim::start([(1, Unit::default())]).await;
        first.go_silent();
        second.go_silent();
        let mut poller = poller(&format!(
            "    - name: limited\n      type: modbus_tcp\n      timeout_ms: 3600000\n      max_concurrent_targets: {limit}\n      targets: [\"{}\", \"{}\"]\n      registers: [30001]\n",
            first.address(),
            second.address()
        ));
        let poll = tokio::spawn(async move { poller.poll().await.is_err() });
        let asked = || first.requests() + second.requests();
        let deadline = Instant::now() + Duration::from_secs(30);
        while asked() < asked_at_once {
            assert!(
                Instant::now() < deadline,
                "limit {limit}: {} device(s) asked, expected {asked_at_once} at once",
                asked()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Time for a device beyond the limit to be asked, were it to be.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(asked(), asked_at_once, "limit {limit}");
        assert!(!poll.is_finished(), "limit {limit}: the poll still waits");
        poll.abort();
    }
}

#[tokio::test]
async fn exceptions_are_logged_with_their_name_unit_device_and_registers() {
    let sim = Sim::start([(7, Unit::default())]).await;
    sim.refuse(3, 99);
    let mut poller = poller(&format!(
        "    - name: logged\n      type: modbus_tcp\n      targets: [{{address: \"{}\", unit: 7}}]\n      registers: [30001, {{address: 40100, type: float32}}]\n",
        sim.address()
    ));
    let (logs, _guard) = common::logs::capture();
    poller.poll().await.unwrap();
    let text = logs.text();
    let expected = format!(
        "unit 7 on {}: read holding registers 40100..40101: illegal data address",
        sim.address()
    );
    assert!(text.contains(&expected), "{text}");
    assert!(text.contains("poller=\"logged\" target="), "{text}");
}

#[tokio::test]
async fn targets_are_handed_over_in_configuration_order_and_a_dead_device_holds_back_only_those_after_it(
) {
    let silent = Sim::start([(1, Unit::default())]).await;
    silent.go_silent();
    let mut alive = Vec::new();
    for value in 1..=4 {
        // The second `gw` is unit 2: a name may not list one unit twice.
        let unit = if value == 4 { 2 } else { 1 };
        alive.push(Sim::start([(unit, Unit::default().input(0, &[value]))]).await);
    }
    let mut poller = poller(&format!(
        "    - name: ordered
      type: modbus_tcp
      timeout_ms: 2000
      targets:
        - {{address: \"{}\", name: first}}
        - {{address: \"{}\", name: dead}}
        - {{address: \"{}\", name: gw}}
        - {{address: \"{}\", name: b}}
        - {{address: \"{}\", name: gw, unit: 2}}
      registers: [30001]
",
        alive[0].address(),
        silent.address(),
        alive[1].address(),
        alive[2].address(),
        alive[3].address(),
    ));
    let started = Instant::now();
    let mut handed: Vec<(Duration, String, Vec<Value>)> = Vec::new();
    poller
        .poll_each(&mut |target: TargetData| {
            let values = target.datapoints.iter().map(|d| d.value.clone()).collect();
            handed.push((started.elapsed(), target.target, values));
        })
        .await
        .unwrap();
    let ended = started.elapsed();
    let order: Vec<(&str, &[Value])> = handed
        .iter()
        .map(|(_, name, values)| (name.as_str(), values.as_slice()))
        .collect();
    // Where `poll` puts them: each name where its first target that read
    // anything stands, targets named alike together in their order.
    assert_eq!(
        order,
        [
            ("first", &[Value::Int(1)][..]),
            ("gw", &[Value::Int(2), Value::Int(4)][..]),
            ("b", &[Value::Int(3)][..]),
        ]
    );
    assert!(
        ended >= Duration::from_millis(2000),
        "the poll waited for the dead device's timeout"
    );
    // The first target did not wait for the dead device after it; the
    // others, after it in the configuration, did.
    assert!(
        handed[0].0 + Duration::from_millis(1000) < ended,
        "the first target was handed over at {:?}, the poll ended at {ended:?}",
        handed[0].0
    );
}
