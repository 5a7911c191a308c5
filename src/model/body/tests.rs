use super::*;
use crate::model::checksum::sha256_hex;
use crate::model::{DataPoint, DataType, Metadata};

const AGENT: AgentContext<'static> = AgentContext {
    agent_id: "66cf7a8e560f75e23d557023ce591120abd094925bde6d97f09561b69b6ed3c4",
    agent_program: "pattoo_agent_modbustcpd",
    hostname: "palisadoes",
    polling_interval_ms: 20_000,
};

fn body_json(outcome: &BuildOutcome) -> serde_json::Value {
    serde_json::from_slice(&outcome.body.as_ref().expect("a body").json).expect("valid JSON")
}

/// Each datapoint as (key, value) pairs in order, resolved through the
/// pair table.
fn datapoints(body: &serde_json::Value) -> Vec<Vec<(String, serde_json::Value)>> {
    let pairs = &body["pattoo_datapoints"]["key_value_pairs"];
    body["pattoo_datapoints"]["datapoint_pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ids| {
            ids.as_array()
                .unwrap()
                .iter()
                .map(|id| {
                    let pair = &pairs[id.as_u64().unwrap().to_string()];
                    (pair[0].as_str().unwrap().to_owned(), pair[1].clone())
                })
                .collect()
        })
        .collect()
}

fn target(name: &str, datapoints: Vec<DataPoint>) -> TargetData {
    TargetData {
        target: name.into(),
        datapoints,
    }
}

#[test]
fn checksum_chain_covers_key_code_metadata_and_agent_identity_in_order() {
    let dp = DataPoint::new(
        "input_register_30386",
        Value::Float(732.0),
        DataType::Int,
        1,
    )
    .with_metadata(Metadata::new("unit", "000"));
    let outcome = build(&AGENT, 7, &[target("foo.example.org", vec![dp])]);
    let body = body_json(&outcome);

    let mut want = sha256_hex("input_register_3038699");
    for (k, v) in [
        ("unit", "000"),
        ("pattoo_agent_hostname", AGENT.hostname),
        ("pattoo_agent_id", AGENT.agent_id),
        ("pattoo_agent_polled_target", "foo.example.org"),
        ("pattoo_agent_program", AGENT.agent_program),
    ] {
        want = sha256_hex(&format!("{want}{k}{v}"));
    }
    let dp = &datapoints(&body)[0];
    assert_eq!(
        dp.last().unwrap(),
        &("pattoo_checksum".to_owned(), want.into())
    );
    // The reference library's value for this reading.
    assert_eq!(
        dp.last().unwrap().1,
        "359ef8d68b34e6f3b847b033b22f024dda78a06c78bd1c338ac04ce0de4b992e"
    );
}

#[test]
fn metadata_without_update_checksum_is_sent_but_not_hashed() {
    let plain = DataPoint::new("abc", Value::Float(1.5), DataType::Float, 1);
    let tagged = plain
        .clone()
        .with_metadata(Metadata::without_checksum("Firmware", "v2"));
    let a = datapoints(&body_json(&build(&AGENT, 7, &[target("t", vec![plain])])));
    let b = datapoints(&body_json(&build(&AGENT, 7, &[target("t", vec![tagged])])));
    assert_eq!(a[0].last(), b[0].last(), "checksums differ");
    assert_eq!(b[0][0], ("firmware".to_owned(), "v2".into()));
}

#[test]
fn polling_interval_pair_is_text_and_outside_the_checksum() {
    let dp = DataPoint::new("k", Value::Int(1), DataType::Int, 1);
    let slow = AgentContext {
        polling_interval_ms: 300_000,
        ..AGENT
    };
    let a = datapoints(&body_json(&build(
        &AGENT,
        7,
        &[target("t", vec![dp.clone()])],
    )));
    let b = datapoints(&body_json(&build(&slow, 7, &[target("t", vec![dp])])));
    assert_eq!(a[0].last(), b[0].last());
    assert!(b[0].contains(&("pattoo_agent_polling_interval".to_owned(), "300000".into())));
}

#[test]
fn duplicates_within_a_target_keep_the_first_and_report_the_rest() {
    let first = DataPoint::new("load", Value::Int(1), DataType::Int, 1);
    let second = DataPoint::new("Load", Value::Int(2), DataType::Int, 2);
    let elsewhere = DataPoint::new("load", Value::Int(3), DataType::Int, 3);
    let outcome = build(
        &AGENT,
        7,
        &[
            target("a", vec![first, second]),
            target("b", vec![elsewhere]),
        ],
    );
    let dps = datapoints(&body_json(&outcome));
    let values: Vec<_> = dps
        .iter()
        .map(|dp| {
            dp.iter()
                .find(|(k, _)| k == "pattoo_value")
                .unwrap()
                .1
                .clone()
        })
        .collect();
    assert_eq!(values, [serde_json::json!(1), serde_json::json!(3)]);
    assert_eq!(
        outcome.dropped,
        [Dropped {
            target: "a".into(),
            key: "load".into(),
            reason: DropReason::Duplicate
        }]
    );
}

#[test]
fn shared_pairs_are_listed_once_with_ids_in_first_seen_order() {
    let dps = (0..3)
        .map(|i| DataPoint::new(format!("k{i}"), Value::Int(5), DataType::Int, 9))
        .collect();
    let body = body_json(&build(&AGENT, 7, &[target("t", dps)]));
    let pairs = body["pattoo_datapoints"]["key_value_pairs"]
        .as_object()
        .unwrap();
    let mut ids: Vec<usize> = pairs.keys().map(|k| k.parse().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..pairs.len()).collect::<Vec<_>>());
    // 5 agent pairs + data type + value + timestamp shared; key and checksum
    // per datapoint.
    assert_eq!(pairs.len(), 8 + 2 * 3);
    let mut unique: Vec<_> = pairs.values().map(|p| p.to_string()).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), pairs.len());
}

#[test]
fn reserved_and_empty_keys_drop_the_datapoint_and_ignore_the_metadata() {
    let reserved = DataPoint::new("pattoo_value_x", Value::Int(1), DataType::Int, 1);
    let empty = DataPoint::new("  ", Value::Int(1), DataType::Int, 1);
    let kept = DataPoint::new("ok", Value::Int(2), DataType::Int, 1)
        .with_metadata(Metadata::new("my_PATTOO_tag", "x"))
        .with_metadata(Metadata::new("site", "s1"))
        .with_metadata(Metadata::new("site", "s2"));
    let outcome = build(&AGENT, 7, &[target("t", vec![reserved, empty, kept])]);
    let dps = datapoints(&body_json(&outcome));
    assert_eq!(dps.len(), 1);
    assert_eq!(dps[0][0], ("site".to_owned(), "s1".into()));
    assert_eq!(dps[0][1].0, "pattoo_agent_polling_interval");
    let reasons: Vec<_> = outcome.dropped.iter().map(|d| &d.reason).collect();
    assert_eq!(
        reasons,
        [
            &DropReason::ReservedKey,
            &DropReason::EmptyKey,
            &DropReason::ReservedMetadataKey("my_pattoo_tag".into())
        ]
    );
}

#[test]
fn a_poll_with_nothing_valid_has_no_body() {
    let bad = DataPoint::new("bad", "x".into(), DataType::Float, 1);
    let outcome = build(&AGENT, 7, &[target("t", vec![bad])]);
    assert!(outcome.body.is_none());
    assert_eq!(outcome.dropped.len(), 1);
    assert!(build(&AGENT, 7, &[]).body.is_none());
}

#[test]
fn body_has_exactly_the_four_top_level_keys_in_python_order() {
    let dp = DataPoint::new("k", Value::Float(0.5), DataType::Float, 1);
    let outcome = build(&AGENT, 1_578_071_455_335, &[target("t", vec![dp])]);
    let text = String::from_utf8(outcome.body.unwrap().json).unwrap();
    assert!(
        text.starts_with("{\"pattoo_agent_timestamp\":1578071455335,\"pattoo_agent_id\":\"66cf")
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "pattoo_agent_timestamp",
            "pattoo_agent_id",
            "pattoo_agent_polling_interval",
            "pattoo_datapoints",
        ]
    );
    assert_eq!(body["pattoo_agent_polling_interval"], 20000);
}

#[test]
fn text_is_escaped_as_json() {
    let dp = DataPoint::new(
        "k",
        "quote \" back \\ nl \n bell \u{7} é".into(),
        DataType::String,
        1,
    );
    let body = body_json(&build(&AGENT, 7, &[target("t", vec![dp])]));
    let dps = datapoints(&body);
    let value = &dps[0].iter().find(|(k, _)| k == "pattoo_value").unwrap().1;
    assert_eq!(value, "quote \" back \\ nl \n bell \u{7} é");
}

#[test]
fn a_body_prepared_on_two_threads_is_byte_for_byte_the_one_thread_body() {
    // Drops of every kind and duplicates spread over both halves and over
    // more than one prepare block.
    let datapoints: Vec<DataPoint> = (0..9_000)
        .map(|i| {
            let key = match i % 997 {
                0 => String::new(),
                1 => "my pattoo key".to_owned(),
                _ => format!("Key {}", i % 7_000),
            };
            let value: Value = if i % 1_201 == 0 {
                "not a number".into()
            } else {
                Value::Float(i as f64 / 8.0)
            };
            let mut dp = DataPoint::new(key, value, DataType::Float, 1_000 + i as u64)
                .with_metadata(Metadata::new("unit", format!("{:03}", i % 7_000 % 3)));
            if i % 11 == 0 {
                dp = dp.with_metadata(Metadata::new("pattoo_x", "ignored"));
            }
            dp
        })
        .collect();
    let targets = [target("t1", datapoints.clone()), target("t2", datapoints)];
    let one = build_with(&AGENT, 7, &targets, usize::MAX);
    let two = build_with(&AGENT, 7, &targets, 1);
    assert!(one.body.is_some());
    assert!(one
        .dropped
        .iter()
        .any(|d| d.reason == DropReason::Duplicate));
    assert_eq!(one.body, two.body);
    assert_eq!(one.dropped, two.dropped);
}

#[test]
fn a_body_over_the_limit_is_split_by_target_then_by_datapoint_and_loses_nothing() {
    let mut targets = targets_with_one_too_large(6, 20);
    for target in &mut targets {
        // A duplicate of its first datapoint: dropped once, in no part.
        target.datapoints.push(DataPoint::new(
            "reading_0",
            Value::Int(0),
            DataType::Int,
            1000,
        ));
    }
    let whole = build(&AGENT, 1000, &targets);
    let whole_body = whole.body.unwrap();
    assert!(whole_body.json.len() > 40_000, "{}", whole_body.json.len());

    let limited = build_limited(&AGENT, 1000, &targets, 16 * 1024);
    assert!(limited.bodies.len() > 3, "{} parts", limited.bodies.len());
    assert_eq!(limited.dropped, whole.dropped, "each drop reported once");
    let mut checksums = Vec::new();
    for body in &limited.bodies {
        assert!(body.json.len() <= 16 * 1024, "{}", body.json.len());
        assert_eq!(body.timestamp_ms, 1000);
        let json: serde_json::Value = serde_json::from_slice(&body.json).unwrap();
        // Each part carries its own pair table, numbered from 0.
        let pairs = json["pattoo_datapoints"]["key_value_pairs"]
            .as_object()
            .unwrap();
        let mut ids: Vec<usize> = pairs.keys().map(|k| k.parse().unwrap()).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..pairs.len()).collect::<Vec<_>>());
        let parts = datapoints(&json);
        assert_eq!(body.datapoints, parts.len());
        checksums.extend(parts.into_iter().map(checksum_of));
    }
    let whole_json: serde_json::Value = serde_json::from_slice(&whole_body.json).unwrap();
    let mut all: Vec<String> = datapoints(&whole_json)
        .into_iter()
        .map(checksum_of)
        .collect();
    checksums.sort();
    all.sort();
    assert_eq!(
        checksums, all,
        "the parts carry exactly the datapoints of one body"
    );

    assert_eq!(
        limited.bodies,
        parts_built_afresh(&AGENT, 1000, &targets, 16 * 1024),
        "each part is what a fresh build of its datapoints writes"
    );

    let small = build_limited(&AGENT, 1000, &targets[..1], 16 * 1024);
    assert_eq!(small.bodies.len(), 1);
    assert_eq!(
        small.bodies[0],
        build(&AGENT, 1000, &targets[..1]).body.unwrap()
    );
}

#[test]
fn parts_taken_as_targets_are_added_are_the_parts_of_the_whole_poll() {
    let targets = targets_with_one_too_large(8, 30);
    let whole = build_limited(&AGENT, 1000, &targets, 16 * 1024);
    assert!(whole.bodies.len() > 3, "{} parts", whole.bodies.len());
    let mut memory = PollMemory::default();
    // Twice: the second poll is written from what the first remembered.
    for poll in 0..2 {
        let mut building = memory.start(&AGENT, 1000, 16 * 1024);
        let mut parts = Vec::new();
        let mut taken_before_the_end = 0;
        for target in &targets {
            building.add(target);
            let finished = building.take_finished();
            taken_before_the_end += finished.len();
            parts.extend(finished);
        }
        assert_eq!(building.taken(), taken_before_the_end);
        let outcome = building.finish();
        assert!(
            taken_before_the_end >= whole.bodies.len() - 1,
            "poll {poll}: only {taken_before_the_end} parts were ready before the end"
        );
        parts.extend(outcome.bodies);
        assert_eq!(parts, whole.bodies, "poll {poll}");
        assert_eq!(outcome.dropped, whole.dropped, "poll {poll}");
    }
    let mut building = Building::afresh(&AGENT, 1000, 16 * 1024);
    let mut parts = Vec::new();
    for target in &targets {
        building.add(target);
        parts.extend(building.take_finished());
    }
    assert!(
        parts.len() >= whole.bodies.len() - 1,
        "without a memory, only {} parts were ready before the end",
        parts.len()
    );
    parts.extend(building.finish().bodies);
    assert_eq!(parts, whole.bodies, "without a memory");
}

#[test]
fn a_target_that_no_longer_fits_after_a_prepare_block_moves_whole_to_the_next_body() {
    // More than a prepare block of datapoints, and a duplicate at the end:
    // it fits in a body of its own but not after the small target, which
    // is found only once a block of it is written.
    let mut large = TargetData::new("device-large");
    for i in 0..PREPARE_BLOCK as i64 + 500 {
        large.datapoints.push(DataPoint::new(
            format!("reading_{i}"),
            Value::Int(i),
            DataType::Int,
            1000,
        ));
    }
    large.datapoints.push(large.datapoints[0].clone());
    let alone = build(&AGENT, 1000, std::slice::from_ref(&large));
    let max_body_bytes = alone.body.as_ref().unwrap().json.len() + 100;
    let mut targets = targets_with_one_too_large(1, 3);
    targets.push(large);

    let limited = build_limited(&AGENT, 1000, &targets, max_body_bytes);
    assert_eq!(
        limited.bodies,
        [
            build(&AGENT, 1000, &targets[..1]).body.unwrap(),
            alone.body.unwrap()
        ]
    );
    assert_eq!(limited.dropped, alone.dropped, "the duplicate, once");
    let remembered =
        PollMemory::default().build_limited(&AGENT, 1000, targets.clone(), max_body_bytes);
    assert_eq!(remembered.bodies, limited.bodies);
    assert_eq!(remembered.dropped, limited.dropped);
}

#[test]
fn a_poll_that_added_no_target_leaves_the_memory_as_it_was() {
    let targets = vec![target(
        "device",
        vec![DataPoint::new(
            "reading",
            Value::Int(1),
            DataType::Int,
            1000,
        )],
    )];
    let mut memory = PollMemory::default();
    memory.build(&AGENT, 1000, &targets);
    let remembered = memory.size();
    let building = memory.start(&AGENT, 2000, usize::MAX);
    assert!(building.finish().bodies.is_empty());
    assert_eq!(memory.size(), remembered);
}

/// `count` targets `device-0`, `device-1`, ... of `per_target` datapoints
/// `reading_0`, `reading_1`, ... each, but for `device-5`, whose 400 are
/// too many for one 16 KiB part on their own.
fn targets_with_one_too_large(count: usize, per_target: i64) -> Vec<TargetData> {
    (0..count)
        .map(|t| {
            let mut target = TargetData::new(format!("device-{t}"));
            let datapoints = if t == 5 { 400 } else { per_target };
            for i in 0..datapoints {
                target.datapoints.push(DataPoint::new(
                    format!("reading_{i}"),
                    Value::Int(i),
                    DataType::Int,
                    1000,
                ));
            }
            target
        })
        .collect()
}

/// What [`build_limited`] must write, found the slow way: every candidate
/// body built afresh to see whether it fits.
fn parts_built_afresh(
    agent: &AgentContext<'_>,
    timestamp_ms: u64,
    targets: &[TargetData],
    max_body_bytes: usize,
) -> Vec<PostBody> {
    let build_one = |targets: &[TargetData]| build(agent, timestamp_ms, targets).body;
    let fits = |targets: &[TargetData]| {
        build_one(targets).is_none_or(|body| body.json.len() <= max_body_bytes)
    };
    let mut bodies = Vec::new();
    let mut current: Vec<TargetData> = Vec::new();
    for target in targets.iter().map(|t| first_of_each(agent, t)) {
        if target.datapoints.is_empty() {
            continue;
        }
        current.push(target.clone());
        if fits(&current) {
            continue;
        }
        current.pop();
        bodies.extend(build_one(&current));
        current.clear();
        if fits(std::slice::from_ref(&target)) {
            current.push(target);
            continue;
        }
        let mut part = TargetData::new(target.target.clone());
        for datapoint in target.datapoints {
            part.datapoints.push(datapoint);
            if part.datapoints.len() > 1 && !fits(std::slice::from_ref(&part)) {
                let next = part.datapoints.pop().unwrap();
                bodies.extend(build_one(std::slice::from_ref(&part)));
                part.datapoints = vec![next];
            }
        }
        current.push(part);
    }
    bodies.extend(build_one(&current));
    bodies
}

/// The bodies and drops of [`Building::afresh`] given `targets` one at a
/// time, each body taken as soon as it is finished.
fn built_without_a_memory(
    agent: &AgentContext<'_>,
    timestamp_ms: u64,
    targets: &[TargetData],
    max_body_bytes: usize,
    parallel_min: usize,
) -> (Vec<PostBody>, Vec<Dropped>) {
    let mut building = Building::afresh(agent, timestamp_ms, max_body_bytes);
    building.parallel_min = parallel_min;
    let mut bodies = Vec::new();
    for target in targets {
        building.add(target);
        bodies.extend(building.take_finished());
    }
    assert_eq!(building.taken(), bodies.len());
    let outcome = building.finish();
    bodies.extend(outcome.bodies);
    (bodies, outcome.dropped)
}

/// `target` without the datapoints [`build`] would drop: invalid ones and
/// every duplicate after the first.
fn first_of_each(agent: &AgentContext<'_>, target: &TargetData) -> TargetData {
    let mut seen: FxHashSet<Checksum> = FxHashSet::default();
    let mut kept = TargetData::new(target.target.clone());
    for step in prepare(&target.datapoints, &agent_suffixes(agent, &target.target)).steps {
        if let Step::Keep {
            datapoint,
            checksum,
            ..
        } = step
        {
            if seen.insert(checksum) {
                kept.datapoints.push(datapoint.clone());
            }
        }
    }
    kept
}

fn checksum_of(pairs: Vec<(String, serde_json::Value)>) -> String {
    pairs
        .into_iter()
        .find(|(key, _)| key == "pattoo_checksum")
        .map(|(_, value)| value.as_str().unwrap().to_owned())
        .unwrap()
}

// ------------------------------------------------------------ poll memory

mod remembered {
    use proptest::prelude::*;

    use super::*;
    use crate::model::PollMemory;

    const KEYS: [&str; 8] = [
        "input_register_30001",
        "Load",
        "load",
        "CPU  Load ",
        "my pattoo key",
        "  ",
        "quote\"d",
        "holding_register_40001",
    ];
    const META_KEYS: [&str; 6] = ["unit", "Unit ", "site", "PATTOO_x", "", "room\\1"];
    const META_VALUES: [&str; 4] = ["001", " 002 ", "a", ""];
    const DATA_TYPES: [DataType; 5] = [
        DataType::Int,
        DataType::Float,
        DataType::Counter,
        DataType::Counter64,
        DataType::String,
    ];
    const HOSTS: [&str; 2] = ["palisadoes", "gw1.example.org"];
    const TARGETS: [&str; 3] = ["meter-1", "meter-2", "10.0.0.5"];

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-5i64..5).prop_map(Value::Int),
            Just(Value::UInt(u64::MAX)),
            (-4.0f64..4.0).prop_map(Value::Float),
            Just(Value::Float(f64::NAN)),
            Just(Value::Text(" 7.5 ".into())),
            Just(Value::Text("n/a".into())),
        ]
    }

    fn metadata() -> impl Strategy<Value = Vec<Metadata>> {
        proptest::collection::vec(
            (0..META_KEYS.len(), 0..META_VALUES.len(), any::<bool>()).prop_map(|(k, v, hashed)| {
                Metadata {
                    key: META_KEYS[k].into(),
                    value: META_VALUES[v].into(),
                    update_checksum: hashed,
                }
            }),
            0..3,
        )
    }

    fn datapoint() -> impl Strategy<Value = DataPoint> {
        (
            0..KEYS.len(),
            value(),
            0..DATA_TYPES.len(),
            0u64..3,
            metadata(),
        )
            .prop_map(|(k, value, t, timestamp_ms, metadata)| DataPoint {
                key: KEYS[k].into(),
                value,
                data_type: DATA_TYPES[t],
                timestamp_ms,
                metadata,
            })
    }

    /// One change between two polls; indexes wrap around.
    #[derive(Debug, Clone)]
    enum Change {
        Value(usize, Value),
        Key(usize, usize),
        DataType(usize, usize),
        Metadata(usize, Vec<Metadata>),
        Insert(usize, DataPoint),
        Remove(usize),
        Hostname(usize),
        Target(usize, usize),
        SwapTargets,
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            4 => (any::<usize>(), value()).prop_map(|(i, v)| Change::Value(i, v)),
            1 => (any::<usize>(), 0..KEYS.len()).prop_map(|(i, k)| Change::Key(i, k)),
            1 => (any::<usize>(), 0..DATA_TYPES.len()).prop_map(|(i, t)| Change::DataType(i, t)),
            1 => (any::<usize>(), metadata()).prop_map(|(i, m)| Change::Metadata(i, m)),
            1 => (any::<usize>(), datapoint()).prop_map(|(i, d)| Change::Insert(i, d)),
            1 => any::<usize>().prop_map(Change::Remove),
            1 => (0..HOSTS.len()).prop_map(Change::Hostname),
            1 => (any::<usize>(), 0..TARGETS.len()).prop_map(|(i, t)| Change::Target(i, t)),
            1 => Just(Change::SwapTargets),
        ]
    }

    /// Targets as (name index, datapoints).
    fn first_poll() -> impl Strategy<Value = Vec<(usize, Vec<DataPoint>)>> {
        proptest::collection::vec(
            (
                0..TARGETS.len(),
                proptest::collection::vec(datapoint(), 0..12),
            ),
            1..4,
        )
    }

    fn apply(targets: &mut [(usize, Vec<DataPoint>)], host: &mut usize, change: &Change) {
        let n = targets.len();
        let (t, dps) = &mut targets[match change {
            Change::Value(i, _)
            | Change::Key(i, _)
            | Change::DataType(i, _)
            | Change::Metadata(i, _)
            | Change::Insert(i, _)
            | Change::Remove(i)
            | Change::Target(i, _) => i % n,
            _ => 0,
        }];
        let len = dps.len().max(1);
        match change.clone() {
            Change::Value(i, v) => dps.get_mut(i % len).map_or((), |d| d.value = v),
            Change::Key(i, k) => dps.get_mut(i % len).map_or((), |d| d.key = KEYS[k].into()),
            Change::DataType(i, k) => dps
                .get_mut(i % len)
                .map_or((), |d| d.data_type = DATA_TYPES[k]),
            Change::Metadata(i, m) => dps.get_mut(i % len).map_or((), |d| d.metadata = m),
            Change::Insert(i, d) => dps.insert(i % (dps.len() + 1), d),
            Change::Remove(i) => {
                if !dps.is_empty() {
                    dps.remove(i % dps.len());
                }
            }
            Change::Hostname(h) => *host = h,
            Change::Target(_, name) => *t = name,
            Change::SwapTargets => targets.reverse(),
        }
    }

    proptest! {
        // proptest's default, 256 cases, keeps CI quick; set
        // PROPTEST_CASES to dig deeper. Each poll is also built without a
        // memory, a target at a time, as `once` does.
        #[test]
        fn remembered_bodies_are_byte_for_byte_the_bodies_built_afresh(
            first in first_poll(),
            polls in proptest::collection::vec(proptest::collection::vec(change(), 0..4), 1..8),
            parallel_min in prop_oneof![Just(1usize), Just(3), Just(usize::MAX)],
            max_body_bytes in prop_oneof![Just(usize::MAX), 300usize..4000],
        ) {
            let mut memory = PollMemory::default();
            let mut targets = first;
            let mut host = 0;
            for (p, changes) in std::iter::once(Vec::new()).chain(polls).enumerate() {
                for change in &changes {
                    apply(&mut targets, &mut host, change);
                }
                let agent = AgentContext { hostname: HOSTS[host], ..AGENT };
                let poll: Vec<TargetData> = targets
                    .iter()
                    .map(|(t, dps)| target(TARGETS[*t], dps.clone()))
                    .collect();
                let fresh = build_with(&agent, p as u64, &poll, usize::MAX);
                let remembered =
                    memory.build_with(&agent, p as u64, poll.clone(), max_body_bytes, parallel_min);
                let expected = if max_body_bytes == usize::MAX {
                    fresh.body.into_iter().collect()
                } else {
                    parts_built_afresh(&agent, p as u64, &poll, max_body_bytes)
                };
                let text = |bodies: &[PostBody]| {
                    bodies
                        .iter()
                        .map(|b| String::from_utf8_lossy(&b.json).into_owned())
                        .collect::<Vec<_>>()
                };
                prop_assert_eq!(text(&remembered.bodies), text(&expected), "poll {}", p);
                prop_assert_eq!(&remembered.bodies, &expected);
                prop_assert_eq!(&remembered.dropped, &fresh.dropped);
                let (unremembered, dropped) =
                    built_without_a_memory(&agent, p as u64, &poll, max_body_bytes, parallel_min);
                prop_assert_eq!(text(&unremembered), text(&expected), "poll {}", p);
                prop_assert_eq!(&unremembered, &expected);
                prop_assert_eq!(&dropped, &fresh.dropped);
                // Bounded by the last poll: one entry per datapoint, and no
                // more descriptions than entries.
                let total: usize = poll.iter().map(|t| t.datapoints.len()).sum();
                let (descriptions, entries) = memory.size();
                prop_assert_eq!(entries, total);
                prop_assert!(descriptions <= total);
            }
        }
    }

    #[test]
    fn a_steady_poll_reuses_every_checksum_and_forgets_what_is_gone() {
        let poll = |values: i64, keys: usize| {
            vec![target(
                "meter-1",
                (0..keys)
                    .map(|i| {
                        DataPoint::new(
                            format!("input_register_{}", 30001 + i),
                            Value::Int(values + i as i64),
                            DataType::Int,
                            values as u64,
                        )
                        .with_metadata(Metadata::new("unit", "001"))
                    })
                    .collect(),
            )]
        };
        let mut memory = PollMemory::default();
        for round in 0..3 {
            let targets = poll(round, 100);
            let remembered = memory.build(&AGENT, 7, &targets);
            assert_eq!(remembered.body, build(&AGENT, 7, &targets).body);
            assert_eq!(memory.size(), (100, 100));
        }
        let targets = poll(9, 10);
        assert_eq!(
            memory.build(&AGENT, 7, &targets).body,
            build(&AGENT, 7, &targets).body
        );
        assert_eq!(
            memory.size(),
            (10, 10),
            "registers no longer polled are forgotten"
        );
        assert_eq!(
            memory.build(&AGENT, 7, &[]).body,
            None,
            "an empty poll has no body"
        );
        assert_eq!(memory.size(), (0, 0));
    }

    /// Ten interfaces of 24 columns: every column's description names its
    /// interface, as SNMP readings do.
    fn interfaces(payload: &std::sync::Arc<String>) -> Vec<TargetData> {
        let datapoints = (0..10)
            .flat_map(|i| {
                (0..24).map(move |c| {
                    let name = &payload[payload.find(&format!("eth{i};")).unwrap()..][..4];
                    DataPoint::new(format!("column_{c}"), Value::Int(c), DataType::Int, 1)
                        .with_metadata(Metadata::new(
                            "ifDescr",
                            crate::model::Text::slice(payload, name),
                        ))
                })
            })
            .collect();
        vec![target("switch-1", datapoints)]
    }

    #[test]
    fn a_text_repeated_across_descriptions_is_remembered_once() {
        let payload = std::sync::Arc::new((0..10).map(|i| format!("eth{i};")).collect());
        let mut memory = PollMemory::default();
        for _ in 0..2 {
            let targets = interfaces(&payload);
            assert_eq!(
                memory.build(&AGENT, 7, &targets).body,
                build(&AGENT, 7, &targets).body
            );
            assert_eq!(memory.size(), (240, 240));
            // 24 keys and their pairs, the metadata key, and the ten
            // interface names and their pairs; not one per datapoint.
            assert_eq!(memory.texts_kept(), 24 + 24 + 1 + 10 + 10);
        }
    }

    #[test]
    fn the_memory_keeps_no_payload_its_texts_were_cut_from() {
        let payload = std::sync::Arc::new((0..10).map(|i| format!("eth{i};")).collect());
        let mut memory = PollMemory::default();
        memory.build(&AGENT, 7, &interfaces(&payload));
        assert_eq!(
            std::sync::Arc::strong_count(&payload),
            1,
            "the remembered descriptions hold copies of their texts, not the poll's payload"
        );
    }
}
