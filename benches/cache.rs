//! The on-disk cache: storing a body durably (write, fsync the file and the
//! directory) and scanning a cache directory at start-up (names and sizes
//! only).
//!
//! `cargo bench --bench cache`. The figures depend on the file system the
//! temporary directory is on (`TMPDIR`); fsync is the whole cost of a store.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pattoo_agentd::delivery::cache::{file_name, Cache};
use pattoo_agentd::delivery::config::CacheSettings;
use pattoo_agentd::delivery::Stats;
use pattoo_agentd::model::PostBody;

const AGENT_ID: &str = "66cf7a8e560f75e23d557023ce591120abd094925bde6d97f09561b69b6ed3c4";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn body(timestamp_ms: u64) -> PostBody {
    PostBody {
        agent_id: AGENT_ID.into(),
        timestamp_ms,
        datapoints: 1,
        // A small body, as one device's poll makes.
        json: vec![b'x'; 4096],
    }
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(
        dir.path(),
        &CacheSettings::default(),
        Arc::new(Stats::default()),
    );
    let mut timestamp = now_ms();
    let mut group = c.benchmark_group("cache");
    group.sample_size(20);
    group.bench_function("store_4k_body_with_fsync", |b| {
        b.iter(|| {
            timestamp += 1;
            black_box(cache.store(&body(timestamp)).unwrap())
        })
    });
    group.finish();
}

fn scan(c: &mut Criterion) {
    const FILES: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = dir.path().join(AGENT_ID);
    std::fs::create_dir_all(&agent_dir).unwrap();
    // Recent, so the cache's max_age keeps them.
    let start = now_ms() - FILES;
    for i in 0..FILES {
        std::fs::write(agent_dir.join(file_name(start + i, AGENT_ID)), b"{}").unwrap();
    }
    let mut group = c.benchmark_group("cache");
    group.sample_size(20);
    group.throughput(Throughput::Elements(FILES));
    group.bench_function("open_and_scan_10k_files", |b| {
        b.iter_batched(
            || Arc::new(Stats::default()),
            |stats| {
                let cache = Cache::open(dir.path(), &CacheSettings::default(), stats);
                assert_eq!(cache.totals().0, FILES);
                black_box(cache)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, store, scan);
criterion_main!(benches);
