//! Start-up with a large cache: only names and sizes are read, so a
//! hundred thousand files are listed quickly and in little memory.

mod common;

use std::time::{Duration, Instant};

use common::receiver::*;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_cached_files_are_listed_in_well_under_two_seconds() {
    const FILES: u64 = 100_000;
    let server = TestServer::start().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let agent_dir = cache_dir.path().join(AGENT);
    std::fs::create_dir_all(&agent_dir).unwrap();
    let body = body(now_ms(), 1).json;
    let start = now_ms() - FILES;
    for i in 0..FILES {
        std::fs::write(agent_dir.join(format!("{}_{AGENT}.json", start + i)), &body).unwrap();
    }

    let rss_before = rss_kib();
    let began = Instant::now();
    let delivery = delivery(&server, cache_dir.path());
    let took = began.elapsed();
    let grew_kib = rss_kib().saturating_sub(rss_before);
    eprintln!("listed {FILES} files in {took:?}; resident memory grew {grew_kib} KiB");

    // A bound for behaviour, not a speed target (that figure is in
    // BENCHMARKS.md): reading every file's contents would take far longer
    // on any machine, while a busy CI machine can take over a second to
    // list names alone.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(delivery.cache().totals().0, FILES);
    // Sizes follow in the background, for max_bytes.
    let measuring = Instant::now();
    while !delivery.cache().is_measured() {
        assert!(measuring.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        delivery.cache().totals(),
        (FILES, FILES * body.len() as u64)
    );
    assert!(
        grew_kib < 64 * 1024,
        "bodies must not be loaded: {grew_kib} KiB"
    );
    let oldest = delivery.cache().take_oldest().unwrap();
    assert_eq!(oldest.timestamp_ms, start);
}
