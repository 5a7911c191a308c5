//! Delivery against a real HTTP server on loopback that the test controls:
//! outages, errors, silence, broken answers, and what the cache does about
//! them.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::receiver::*;
use pattoo_agentd::delivery::config::{CacheSettings, DeliverySettings};
use pattoo_agentd::delivery::{Committed, Delivery};
use tokio::sync::watch;

fn cached(committed: &Committed) -> bool {
    matches!(committed, Committed::Cached(_))
}

/// Writes `bytes` where the cache in `cache_dir` keeps a body of
/// `timestamp_ms`, as an earlier run (ours or a Python agent's) leaves it;
/// gives the file's path.
fn write_cache_file(cache_dir: &Path, timestamp_ms: u64, bytes: &[u8]) -> PathBuf {
    let agent_dir = cache_dir.join(AGENT);
    fs::create_dir_all(&agent_dir).unwrap();
    let path = agent_dir.join(format!("{timestamp_ms}_{AGENT}.json"));
    fs::write(&path, bytes).unwrap();
    path
}

/// What the delivery says of its last post.
fn last_post(delivery: &Delivery) -> String {
    delivery.stats().last_post.expect("a post was tried").detail
}

/// Runs the replay loop until dropped.
struct ReplayTask {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplayTask {
    fn start(delivery: &Delivery) -> ReplayTask {
        let (stop, stopped) = watch::channel(false);
        let delivery = delivery.clone();
        let task = tokio::spawn(async move { delivery.run_replay(stopped).await });
        ReplayTask { stop, task }
    }

    async fn finish(self) {
        self.stop.send(true).unwrap();
        stopped_within_5_s(self.task, "the replay loop stops when told").await;
    }
}

/// Waits for the replay loop `task` to return, failing the test with
/// `expected` if it has not within five seconds.
async fn stopped_within_5_s(task: tokio::task::JoinHandle<()>, expected: &str) {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect(expected)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_of_fifty_polls_during_an_outage_arrives_oldest_first_and_the_cache_empties() {
    let server = TestServer::start().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, cache_dir.path());
    let replay = ReplayTask::start(&delivery);
    server.stop();

    let start = now_ms();
    let mut timestamps = Vec::new();
    for poll in 0..50u64 {
        let timestamp = start + poll * 10;
        timestamps.push(timestamp);
        let committed = delivery.submit(body(timestamp, poll as i64)).await;
        assert!(cached(&committed), "poll {poll}: {committed:?}");
    }
    assert_eq!(cached_files(cache_dir.path()).len(), 50);

    // No live post happens after the server returns: replay alone sends
    // the backlog.
    server.resume(Mode::Accept).await;
    let received = server.wait_for(50, Duration::from_secs(20)).await;
    let arrived: Vec<u64> = received.iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(arrived, timestamps, "every body, oldest first, once");
    for (got, value) in received.iter().zip(0..) {
        assert_eq!(got.bytes, body(timestamps[value], value as i64).json);
    }
    replay.finish().await;
    assert!(cached_files(cache_dir.path()).is_empty());
    let stats = delivery.stats();
    assert_eq!((stats.cached, stats.replayed, stats.lost), (50, 50, 0));
    assert_eq!(stats.cached_files, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_server_is_down_attempts_are_spaced_and_polls_do_not_wait() {
    let server = TestServer::start().await;
    server.set_mode(Mode::Status(503));
    let cache_dir = tempfile::tempdir().unwrap();
    // The default backoff: about one attempt a second at most.
    let settings = pattoo_agentd::delivery::config::DeliverySettings {
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let delivery = delivery_with(
        &server,
        cache_dir.path(),
        settings,
        CacheSettings::default(),
    );
    let replay = ReplayTask::start(&delivery);
    let started = Instant::now();
    for poll in 0..100 {
        let submitted = Instant::now();
        let committed = delivery.submit(body(now_ms() + poll, poll as i64)).await;
        assert!(cached(&committed));
        // One attempt of at most the 500 ms timeout, or none while backing
        // off; a poll that waited for the server would never get here.
        assert!(submitted.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let attempts = server.attempts();
    replay.finish().await;
    assert!(
        (attempts as f64) <= seconds + 2.0,
        "{attempts} attempts in {seconds:.1}s"
    );
    assert!(attempts >= 2, "it keeps trying: {attempts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_500_then_200_gets_every_body() {
    let server = TestServer::start().await;
    server.set_mode(Mode::Status(500));
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, cache_dir.path());
    let start = now_ms();
    for i in 0..5 {
        assert!(cached(&delivery.submit(body(start + i, i as i64)).await));
    }
    assert!(server.attempts() >= 1);
    assert!(last_post(&delivery).contains("HTTP 500"));

    server.set_mode(Mode::Accept);
    tokio::time::sleep(delivery_wait(&delivery)).await;
    let report = delivery.replay_now().await;
    assert_eq!((report.delivered, report.remaining), (5, 0), "{report:?}");
    assert_eq!(server.received().len(), 5);
    assert!(cached_files(cache_dir.path()).is_empty());
}

/// Long enough for the quick test backoff to allow the next attempt.
fn delivery_wait(_: &Delivery) -> Duration {
    quick_settings().retry_max + Duration::from_millis(100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_holds_replay_back_until_the_server_asks() {
    let server = TestServer::start().await;
    // Long enough that the early replay lands inside it on a busy machine.
    server.set_mode(Mode::RetryAfter(429, 5));
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, cache_dir.path());
    assert!(cached(&delivery.submit(body(now_ms(), 1)).await));
    server.set_mode(Mode::Accept);
    tokio::time::sleep(delivery_wait(&delivery)).await;
    let early = delivery.replay_now().await;
    assert_eq!(early.delivered, 0, "still inside Retry-After: {early:?}");
    assert_eq!(server.attempts(), 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = delivery.replay_now().await;
    assert_eq!(later.delivered, 1, "{later:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_and_the_body_is_cached() {
    let server = TestServer::start().await;
    server.set_mode(Mode::Hang);
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, cache_dir.path());
    let started = Instant::now();
    let committed = delivery.submit(body(now_ms(), 1)).await;
    assert!(cached(&committed), "{committed:?}");
    assert!(
        // The server never answers: any bound shows the 500 ms timeout.
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(last_post(&delivery).contains("timed out"));
    assert_eq!(cached_files(cache_dir.path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_mid_response_is_not_taken_as_delivered() {
    let server = TestServer::start().await;
    server.set_mode(Mode::CloseMidResponse);
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, cache_dir.path());
    let committed = delivery.submit(body(now_ms(), 1)).await;
    assert!(cached(&committed), "{committed:?}");
    assert!(server.attempts() >= 1);

    server.set_mode(Mode::Accept);
    tokio::time::sleep(delivery_wait(&delivery)).await;
    assert_eq!(delivery.replay_now().await.delivered, 1);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_the_body_is_cached() {
    let elsewhere = TestServer::start().await;
    let server = TestServer::start().await;
    server.set_mode(Mode::RedirectTo(elsewhere.addr.port()));
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, cache_dir.path());
    let committed = delivery.submit(body(now_ms(), 1)).await;
    assert!(cached(&committed), "{committed:?}");
    assert_eq!(elsewhere.attempts(), 0, "the POST went nowhere else");
    assert!(last_post(&delivery).contains("HTTP 307"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_file_in_the_python_agents_format_is_replayed_byte_for_byte() {
    let server = TestServer::start().await;
    let cache_dir = tempfile::tempdir().unwrap();
    // As `json.dump` writes it: ", " and ": " separators, keys in the
    // order PostingDataPoints has them.
    let ts = now_ms() - 60_000;
    let python = format!(
        r#"{{"pattoo_agent_id": "{AGENT}", "pattoo_agent_polling_interval": 15000, "pattoo_agent_timestamp": {ts}, "pattoo_datapoints": {{"key_value_pairs": {{"0": ["pattoo_agent_polling_interval", "15000"], "1": ["pattoo_agent_hostname", "palisadoes"], "2": ["pattoo_agent_id", "{AGENT}"], "3": ["pattoo_agent_polled_target", "10.0.0.5"], "4": ["pattoo_agent_program", "pattoo_agent_modbustcpd"], "5": ["pattoo_key", "input_register_30386"], "6": ["pattoo_data_type", 99], "7": ["pattoo_value", 732.0], "8": ["pattoo_timestamp", {ts}], "9": ["pattoo_checksum", "8bd1e1b4cbc1d8e47e3a4ed4a68e0b6c0fa1c8a4e2b9d2a7d2f5f3c1e0b9a8d7"]}}, "datapoint_pairs": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]}}}}"#
    );
    write_cache_file(cache_dir.path(), ts, python.as_bytes());

    let delivery = delivery(&server, cache_dir.path());
    assert_eq!(delivery.cache().totals().0, 1, "found at start-up");
    let report = delivery.replay_now().await;
    assert_eq!(report.delivered, 1, "{report:?}");
    let received = server.received();
    assert_eq!(received[0].bytes, python.as_bytes());
    assert!(cached_files(cache_dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_cache_files_have_the_python_agents_name_and_content() {
    let server = TestServer::start().await;
    server.stop();
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, cache_dir.path());
    let sent = body(now_ms(), 7);
    let Committed::Cached(path) = delivery.submit(sent.clone()).await else {
        panic!("cached");
    };
    let name = path.file_name().unwrap().to_str().unwrap();
    // phttp.purge: a `.json` file whose name holds the agent id, named
    // `{timestamp}_{agent_id}.json` by _save_data.
    assert_eq!(name, format!("{}_{AGENT}.json", sent.timestamp_ms));
    assert_eq!(fs::read(&path).unwrap(), sent.json);
    let parsed: serde_json::Value = serde_json::from_slice(&sent.json).unwrap();
    assert_eq!(parsed.as_object().unwrap().len(), 4);
    let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_cache_files_are_quarantined_and_the_rest_delivered() {
    let server = TestServer::start().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let start = now_ms() - 10_000;
    let good: Vec<_> = (0..3).map(|i| body(start + i * 10, i as i64)).collect();
    let whole = &good[0].json;
    let corrupt: [(u64, Vec<u8>); 4] = [
        (1, whole[..whole.len() / 2].to_vec()),
        (2, b"this is not JSON".to_vec()),
        (3, br#"{"pattoo_agent_id": "x"}"#.to_vec()),
        (4, Vec::new()),
    ];
    for body in &good {
        write_cache_file(cache_dir.path(), body.timestamp_ms, &body.json);
    }
    for (offset, bytes) in &corrupt {
        write_cache_file(cache_dir.path(), start + offset, bytes);
    }

    let delivery = delivery(&server, cache_dir.path());
    let report = delivery.replay_now().await;
    assert_eq!(
        (report.delivered, report.quarantined, report.remaining),
        (3, 4, 0),
        "{report:?}"
    );
    let arrived: Vec<Vec<u8>> = server.received().into_iter().map(|r| r.bytes).collect();
    let expected: Vec<Vec<u8>> = good.iter().map(|b| b.json.clone()).collect();
    assert_eq!(arrived, expected);
    let quarantine = cache_dir.path().join("quarantine").join(AGENT);
    assert_eq!(fs::read_dir(&quarantine).unwrap().count(), 4);
    assert_eq!(delivery.stats().quarantined, 4);
    // Starting again finds nothing left to trip over.
    let again = common::receiver::delivery(&server, cache_dir.path());
    assert!(again.cache().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_file_a_python_agent_is_still_writing_is_not_quarantined() {
    let server = TestServer::start().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let whole = body(now_ms() - 1000, 1);
    let (first, rest) = whole.json.split_at(whole.json.len() / 2);
    let path = write_cache_file(cache_dir.path(), whole.timestamp_ms, first);

    let delivery = delivery(&server, cache_dir.path());
    let replay = tokio::spawn({
        let delivery = delivery.clone();
        async move { delivery.replay_now().await }
    });
    // Python's json.dump writes in place; finish the file while replay
    // is looking at the first half.
    tokio::time::sleep(Duration::from_millis(80)).await;
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, rest).unwrap();
    drop(file);
    let report = replay.await.unwrap();
    assert_eq!((report.delivered, report.quarantined), (1, 0), "{report:?}");
    assert_eq!(server.received()[0].bytes, whole.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_drops_the_oldest_bodies_and_counts_them() {
    let server = TestServer::start().await;
    server.stop();
    let cache_dir = tempfile::tempdir().unwrap();
    let start = now_ms();
    let bodies: Vec<_> = (0..10).map(|i| body(start + i, i as i64)).collect();
    let size = bodies[0].json.len() as u64;
    let bounds = CacheSettings {
        max_bytes: 3 * size + size / 2,
        ..CacheSettings::default()
    };
    let delivery = delivery_with(&server, cache_dir.path(), quick_settings(), bounds);
    for body in &bodies {
        assert!(cached(&delivery.submit(body.clone()).await));
    }
    let stats = delivery.stats();
    assert_eq!(
        (stats.cached, stats.dropped, stats.cached_files),
        (10, 7, 3)
    );
    assert!(stats.cached_bytes <= 3 * size + size / 2);

    server.resume(Mode::Accept).await;
    tokio::time::sleep(delivery_wait(&delivery)).await;
    assert_eq!(delivery.replay_now().await.delivered, 3);
    let arrived: Vec<u64> = server.received().iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(
        arrived,
        [start + 7, start + 8, start + 9],
        "the newest survive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_failures_in_one_millisecond_give_two_files() {
    let server = TestServer::start().await;
    server.stop();
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, cache_dir.path());
    let ts = now_ms();
    let first = delivery.submit(body(ts, 1)).await;
    let second = delivery.submit(body(ts, 2)).await;
    let (Committed::Cached(a), Committed::Cached(b)) = (&first, &second) else {
        panic!("{first:?} {second:?}");
    };
    assert_ne!(a, b);
    assert_eq!(cached_files(cache_dir.path()).len(), 2);

    server.resume(Mode::Accept).await;
    tokio::time::sleep(delivery_wait(&delivery)).await;
    assert_eq!(delivery.replay_now().await.delivered, 2);
    let values: Vec<Vec<u8>> = server.received().into_iter().map(|r| r.bytes).collect();
    assert_eq!(values, [body(ts, 1).json, body(ts, 2).json]);
}

/// A delivery with the quick test settings that replays at most
/// `per_second` cached bodies a second.
fn delivery_replaying(server: &TestServer, cache_dir: &Path, per_second: u32) -> Delivery {
    let settings = DeliverySettings {
        replay_per_second: per_second,
        ..quick_settings()
    };
    delivery_with(server, cache_dir, settings, CacheSettings::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_posts_go_on_while_a_backlog_is_replayed_at_a_bounded_rate() {
    let server = TestServer::start().await;
    server.stop();
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery_replaying(&server, cache_dir.path(), 100);
    let start = now_ms() - 100_000;
    for i in 0..100 {
        assert!(cached(&delivery.submit(body(start + i, i as i64)).await));
    }
    server.resume(Mode::Accept).await;
    tokio::time::sleep(delivery_wait(&delivery)).await;
    let replay = ReplayTask::start(&delivery);
    let began = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = body(now_ms(), 1000);
    assert_eq!(delivery.submit(live.clone()).await, Committed::Posted);
    let received = server.wait_for(101, Duration::from_secs(10)).await;
    let elapsed = began.elapsed();
    replay.finish().await;
    assert_eq!(received.len(), 101);
    let live_at = received.iter().position(|r| r.bytes == live.json).unwrap();
    assert!(
        live_at < 100,
        "the live post did not wait for the backlog: {live_at}"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "100 bodies at 100/s took {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_the_default_rate_delivers_a_large_backlog_in_one_round() {
    let server = TestServer::start().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery_replaying(
        &server,
        cache_dir.path(),
        pattoo_agentd::delivery::config::DEFAULT_REPLAY_PER_SECOND,
    );
    let start = now_ms() - 100_000;
    for i in 0..1000 {
        delivery.cache().store(&body(start + i, i as i64)).unwrap();
    }
    let report = delivery.replay_now().await;
    // Replay speed is measured by the load harness (BENCHMARKS.md), not
    // asserted here; the pacer's arithmetic has its own paused-time test.
    assert_eq!(report.delivered, 1000);
    assert_eq!(report.remaining, 0);
    assert_eq!(server.received().len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_loop_stops_when_its_stop_sender_is_dropped() {
    let server = TestServer::start().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, cache_dir.path());
    let ReplayTask { stop, task } = ReplayTask::start(&delivery);
    drop(stop);
    stopped_within_5_s(task, "the loop returns instead of spinning").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replayer_over_the_same_cache_sends_nothing_while_the_first_replays() {
    let server = TestServer::start().await;
    server.set_mode(Mode::Hang);
    let cache_dir = tempfile::tempdir().unwrap();
    // The first replayer's post hangs until the test ends it, however
    // long a busy machine takes to get to the second replayer.
    let slow = DeliverySettings {
        timeout: Duration::from_secs(600),
        ..quick_settings()
    };
    let first = delivery_with(&server, cache_dir.path(), slow, CacheSettings::default());
    first.cache().store(&body(now_ms(), 1)).unwrap();
    let replaying = ReplayTask::start(&first);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.attempts() == 0 {
        assert!(Instant::now() < deadline, "the first replayer never posted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // `cache replay` (or a reloaded delivery) while that post is in flight.
    let second = delivery(&server, cache_dir.path());
    let report = second.replay_now().await;
    assert_eq!(report.delivered, 0, "{report:?}");
    assert_eq!(report.remaining, 1, "{report:?}");
    assert!(
        report
            .stopped_by
            .as_deref()
            .unwrap_or_default()
            .contains("another"),
        "{report:?}"
    );
    assert_eq!(server.attempts(), 1, "the second replayer posted");

    // The server drops the hanging post and accepts again: the first
    // replayer sends the body, once.
    server.set_mode(Mode::Accept);
    server.wait_for(1, Duration::from_secs(30)).await;
    replaying.finish().await;
    assert_eq!(server.received().len(), 1);
    assert!(cached_files(cache_dir.path()).is_empty());
}

/// The older bodies are cached while the server is away; the oldest of
/// them carries `BAD_VALUE`, which the server then refuses with `status`
/// while it takes every other body. Fresh polls go on meanwhile.
const BAD_VALUE: i64 = 987_654_321;
const BAD_TEXT: &str = "[\"pattoo_value\",987654321]";

async fn one_refused_body_among_others(status: u16) -> (Delivery, TestServer, tempfile::TempDir) {
    let server = TestServer::start().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, cache_dir.path());
    server.stop();
    let start = now_ms();
    for i in 0..5u64 {
        let value = if i == 0 { BAD_VALUE } else { i as i64 };
        assert!(cached(&delivery.submit(body(start + i, value)).await));
    }
    assert!(body(1, BAD_VALUE)
        .json
        .windows(BAD_TEXT.len())
        .any(|w| w == BAD_TEXT.as_bytes()));
    server
        .resume(Mode::RefuseContaining(BAD_TEXT, status))
        .await;
    let replay = ReplayTask::start(&delivery);
    // Fresh polls, one every 100 ms, until the 4 good older bodies and
    // all 60 fresh ones have arrived.
    for i in 0..60u64 {
        delivery
            .submit(body(start + 1000 + i, 1000 + i as i64))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.wait_for(64, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivery.stats().quarantined == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replay.finish().await;
    (delivery, server, cache_dir)
}

fn quarantined(cache_dir: &Path) -> Vec<Vec<u8>> {
    match fs::read_dir(cache_dir.join("quarantine").join(AGENT)) {
        Ok(entries) => entries
            .map(|e| fs::read(e.unwrap().path()).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_refused_with_413_is_quarantined_at_once_and_every_other_body_is_delivered() {
    let (delivery, server, cache_dir) = one_refused_body_among_others(413).await;
    let received = server.received();
    assert_eq!(received.len(), 64, "4 older and 60 fresh bodies");
    assert!(cached_files(cache_dir.path()).is_empty());
    let set_aside = quarantined(cache_dir.path());
    assert_eq!(set_aside.len(), 1);
    assert!(set_aside[0]
        .windows(BAD_TEXT.len())
        .any(|w| w == BAD_TEXT.as_bytes()));
    let stats = delivery.stats();
    assert_eq!((stats.quarantined, stats.lost), (1, 0));
    // Refused once, then never sent again.
    let attempts_on_bad = server.attempts() - received.len();
    assert_eq!(
        attempts_on_bad, 1,
        "the refused body was tried {attempts_on_bad} times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_server_keeps_failing_with_500_while_it_takes_others_is_quarantined_after_a_few_tries(
) {
    let (delivery, server, cache_dir) = one_refused_body_among_others(500).await;
    assert_eq!(server.received().len(), 64, "4 older and 60 fresh bodies");
    assert!(cached_files(cache_dir.path()).is_empty());
    assert_eq!(quarantined(cache_dir.path()).len(), 1);
    let attempts_on_bad = server.attempts() - 64;
    // Its strikes, plus the first two tries when the server's state was
    // not yet known (they open the breaker and count no strike).
    assert!(
        attempts_on_bad <= pattoo_agentd::delivery::MAX_BODY_FAILURES as usize + 2,
        "the failing body was tried {attempts_on_bad} times"
    );
    assert!(!delivery.stats().server_down);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_sent_before_the_body_was_read_does_not_count_as_delivered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A small receive window, so the body cannot all sit in socket buffers
    // by the time the answer comes.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Reads the request head, answers 200 at once, reads no further.
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let cache_dir = tempfile::tempdir().unwrap();
    let api = pattoo_agentd::config::ApiSettings {
        ip_address: "127.0.0.1".into(),
        ip_bind_port: port,
    };
    let settings = DeliverySettings {
        timeout: Duration::from_secs(10),
        ..quick_settings()
    };
    let delivery =
        Delivery::from_parts(&api, cache_dir.path(), &settings, &CacheSettings::default()).unwrap();
    let mut large = body(now_ms(), 1);
    large.json.resize(32 << 20, b' ');
    let committed = delivery.submit(large).await;
    assert!(cached(&committed), "{committed:?}");
    server.abort();
}
