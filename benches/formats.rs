//! Every payload parser on a 1 MiB input of its own format.
//!
//! `cargo bench --bench formats`

use std::fmt::Write;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pattoo_agentd::formats::json::{JsonOptions, JsonValue};
use pattoo_agentd::formats::keyvalue::KeyValueOptions;
use pattoo_agentd::formats::value::ValueOptions;
use pattoo_agentd::formats::{FormatSettings, Payload};
use pattoo_agentd::model::{build, AgentContext, DataPoint, DataType, Metadata, TargetData, Value};

const MIB: usize = 1 << 20;

/// Repeats `line(i)` until the text is about 1 MiB.
fn mib_of(mut line: impl FnMut(usize, &mut String)) -> String {
    let mut text = String::with_capacity(MIB + 256);
    let mut i = 0;
    while text.len() < MIB {
        line(i, &mut text);
        i += 1;
    }
    text
}

fn inputs() -> Vec<(&'static str, FormatSettings, Vec<u8>)> {
    let keyvalue = mib_of(|i, t| writeln!(t, "sensor_{i} {}.{}", i % 977, i % 10).unwrap());
    let prometheus = mib_of(|i, t| {
        if i % 10 == 0 {
            writeln!(
                t,
                "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter"
            )
            .unwrap();
        }
        writeln!(
            t,
            "http_requests_total{{method=\"get\",code=\"200\",handler=\"/api/{i}\"}} {}",
            i * 3
        )
        .unwrap()
    });
    let nagios = {
        let mut t = String::from("DISK OK - free space: / 3326 MB (56%) |");
        let mut i = 0;
        while t.len() < MIB {
            write!(t, " 'disk {i}'={}MB;5948;5958;0;5968", i % 5000).unwrap();
            i += 1;
        }
        t.push('\n');
        t
    };
    let json = {
        let mut t = String::from("{\"servers\":[");
        let mut i = 0;
        while t.len() < MIB {
            if i > 0 {
                t.push(',');
            }
            write!(
                t,
                "{{\"name\":\"srv{i}\",\"load\":{}.{},\"up\":true}}",
                i % 7,
                i % 100
            )
            .unwrap();
            i += 1;
        }
        t.push_str("]}");
        t
    };
    let datapoints = {
        let mut t = String::from("{\"targets\":[{\"target\":\"SITE_A\",\"datapoints\":[");
        let mut i = 0;
        while t.len() < MIB {
            if i > 0 {
                t.push(',');
            }
            write!(
                t,
                "{{\"key\":\"abc_{i}\",\"value\":{}.5,\"data_type\":101,\"timestamp\":1600000000001,\
                 \"metadata\":[[\"Department Name\",\"The Palisadoes Foundation\",false],[\"Financial Year\",\"2020\"]]}}",
                i % 1000
            )
            .unwrap();
            i += 1;
        }
        t.push_str("]}]}");
        t
    };
    let pattoo = {
        let agent = AgentContext {
            agent_id: "66cf7a8e560f75e23d557023ce591120abd094925bde6d97f09561b69b6ed3c4",
            agent_program: "pattoo_agent_snmpd",
            hostname: "passive.example.org",
            polling_interval_ms: 300_000,
        };
        // About 200 bytes per datapoint after pair sharing.
        let datapoints = (0..MIB / 200)
            .map(|i| {
                DataPoint::new(
                    format!("input_register_{}", 30001 + i),
                    Value::Float(i as f64 * 0.5),
                    DataType::Float,
                    1_700_000_000_000 + i as u64,
                )
                .with_metadata(Metadata::new("unit", "001"))
            })
            .collect();
        let targets = [TargetData {
            target: "meter-17".into(),
            datapoints,
        }];
        build(&agent, 1_700_000_000_000, &targets)
            .body
            .unwrap()
            .json
    };
    let value = "x".repeat(MIB);
    vec![
        (
            "value",
            FormatSettings::Value(ValueOptions {
                key: "banner".into(),
                data_type: DataType::String,
                metadata: vec![],
                naming: Default::default(),
            }),
            value.into_bytes(),
        ),
        (
            "json",
            FormatSettings::Json(JsonOptions {
                values: vec![JsonValue {
                    pointer: "/servers".into(),
                    after_wildcard: Some("/load".into()),
                    key: "load_{*}".into(),
                    data_type: DataType::Float,
                    metadata: vec![],
                    wildcard_metadata: None,
                    naming: Default::default(),
                }],
            }),
            json.into_bytes(),
        ),
        (
            "keyvalue",
            FormatSettings::KeyValue(KeyValueOptions::default()),
            keyvalue.into_bytes(),
        ),
        (
            "prometheus",
            FormatSettings::Prometheus,
            prometheus.into_bytes(),
        ),
        ("nagios", FormatSettings::Nagios, nagios.into_bytes()),
        (
            "datapoints",
            FormatSettings::Datapoints,
            datapoints.into_bytes(),
        ),
        ("pattoo", FormatSettings::Pattoo, pattoo),
    ]
}

fn parsers(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_1mib");
    for (name, format, bytes) in inputs() {
        let payload = Payload {
            bytes: &bytes,
            default_target: "localhost",
            read_at_ms: 1_700_000_000_000,
            exit_status: Some(0),
        };
        let parsed = format
            .parse_payload(&payload)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let count: usize = parsed.targets.iter().map(|t| t.datapoints.len()).sum();
        assert!(count > 0, "{name} read no datapoint");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(format.parse_payload(black_box(&payload))))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = parsers
}
criterion_main!(benches);
