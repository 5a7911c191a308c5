//! Hot paths of the data model: building, normalising and serialising a
//! body, and the checksum chain on its own.
//!
//! `cargo bench --bench model`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pattoo_agentd::model::checksum::{ChainBatch, ChainUpdate, ChecksumChain, Suffix};
use pattoo_agentd::model::{
    build, AgentContext, DataPoint, DataType, Metadata, PollMemory, TargetData, Value,
};

const AGENT: AgentContext<'static> = AgentContext {
    agent_id: "66cf7a8e560f75e23d557023ce591120abd094925bde6d97f09561b69b6ed3c4",
    agent_program: "pattoo_agent_modbustcpd",
    hostname: "gw1.example.org",
    polling_interval_ms: 300_000,
};

/// 10,000 datapoints on one target with two metadata items each: the shape
/// of the Python reference measurement.
fn readings(count: usize) -> Vec<TargetData> {
    let datapoints = (0..count)
        .map(|i| {
            DataPoint::new(
                format!("input_register_{}", 30001 + i),
                Value::Float(i as f64 * 0.5),
                DataType::Float,
                1_700_000_000_000 + i as u64,
            )
            .with_metadata(Metadata::new("unit", "001"))
            .with_metadata(Metadata::new("site", "plant 7"))
        })
        .collect();
    vec![TargetData {
        target: "meter-17.example.org".into(),
        datapoints,
    }]
}

fn body(c: &mut Criterion) {
    let mut group = c.benchmark_group("body");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("build_normalise_serialise_10k_datapoints", |b| {
        b.iter_batched(
            || readings(10_000),
            |targets| black_box(build(&AGENT, 1_700_000_000_000, &targets)),
            BatchSize::LargeInput,
        )
    });
    // What a poller's first poll costs: the path the daemon takes, split
    // under the default 512 KiB limit, every description new to the memory.
    group.bench_function("first_poll_with_memory_10k_datapoints", |b| {
        b.iter_batched(
            || (PollMemory::default(), readings(10_000)),
            |(mut memory, targets)| {
                black_box(memory.build_limited(&AGENT, 1_700_000_000_000, targets, 512 * 1024))
            },
            BatchSize::LargeInput,
        )
    });
    // A steady poll: the same registers read again, every description
    // known to the memory (the daemon's every cycle after the first).
    group.bench_function("steady_poll_with_memory_10k_datapoints", |b| {
        let mut memory = PollMemory::default();
        memory.build_limited(&AGENT, 1_700_000_000_000, readings(10_000), 512 * 1024);
        b.iter_batched(
            || readings(10_000),
            |targets| {
                black_box(memory.build_limited(&AGENT, 1_700_000_000_000, targets, 512 * 1024))
            },
            BatchSize::LargeInput,
        )
    });
    let targets = readings(10_000);
    group.bench_function("normalise_serialise_10k_datapoints", |b| {
        b.iter(|| black_box(build(&AGENT, 1_700_000_000_000, black_box(&targets))))
    });
    group.finish();
}

fn checksum(c: &mut Criterion) {
    c.bench_function("checksum_chain_2_metadata_plus_agent", |b| {
        b.iter(|| {
            let mut chain = ChecksumChain::start(black_box("input_register_30386"), 101);
            for (k, v) in [
                ("unit", "001"),
                ("site", "plant 7"),
                ("pattoo_agent_hostname", AGENT.hostname),
                ("pattoo_agent_id", AGENT.agent_id),
                ("pattoo_agent_polled_target", "meter-17.example.org"),
                ("pattoo_agent_program", AGENT.agent_program),
            ] {
                chain.update(k, v);
            }
            black_box(*chain.digest())
        })
    });
}

/// The checksum chains of the 10,000 datapoints of [`readings`] (two
/// metadata items, then the agent's four), one chain at a time and
/// interleaved.
fn checksum_chains(c: &mut Criterion) {
    let mut group = c.benchmark_group("checksum_chains");
    group.throughput(Throughput::Elements(10_000));
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("input_register_{}", 30001 + i))
        .collect();
    let suffixes = [
        Suffix::new("pattoo_agent_hostname", AGENT.hostname),
        Suffix::new("pattoo_agent_id", AGENT.agent_id),
        Suffix::new("pattoo_agent_polled_target", "meter-17.example.org"),
        Suffix::new("pattoo_agent_program", AGENT.agent_program),
    ];
    group.bench_function("one_at_a_time_10k", |b| {
        b.iter(|| {
            for key in &keys {
                let mut chain = ChecksumChain::start(black_box(key), 101);
                chain.update("unit", "001");
                chain.update("site", "plant 7");
                for suffix in &suffixes {
                    chain.update_with(suffix);
                }
                black_box(chain.digest());
            }
        })
    });
    group.bench_function("interleaved_10k", |b| {
        b.iter(|| {
            let mut batch = ChainBatch::with_capacity(keys.len());
            for key in &keys {
                batch.start(black_box(key), 101);
                batch.update("unit", "001");
                batch.update("site", "plant 7");
            }
            black_box(batch.digests(&suffixes))
        })
    });
    group.finish();
}

criterion_group!(benches, body, checksum, checksum_chains);
criterion_main!(benches);
