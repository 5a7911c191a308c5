//! Start-up with a large cache: only names and sizes are read, so a
//! hundred thousand files are listed in little memory. How fast is a
//! figure for BENCHMARKS.md (start-up with 100,000 cached bodies), not
//! something a test on a shared machine can assert.

use crate::common;

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
async fn a_hundred_thousand_cached_files_are_listed_without_loading_their_bodies() {
    // The resident size is the process's: alone, the other tests' memory
    // is not in it.
    if !common::alone::runs_here(
        module_path!(),
        "a_hundred_thousand_cached_files_are_listed_without_loading_their_bodies",
        &[],
    ) {
        return;
    }
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
    let delivery = delivery(&server, cache_dir.path());
    let grew_kib = rss_kib().saturating_sub(rss_before);

    assert_eq!(delivery.cache().totals().0, FILES);
    // Sizes follow in the background, for max_bytes.
    let measuring = Instant::now();
    while !delivery.cache().is_measured() {
        assert!(
            measuring.elapsed() < Duration::from_secs(120),
            "the sizes were never measured"
        );
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
