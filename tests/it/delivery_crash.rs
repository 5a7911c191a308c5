//! Kill -9 at random moments: every body a run reported as committed (a
//! line on stdout, written only after the server's 200 or the cache's
//! fsyncs) must reach the server afterwards.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::receiver::TestServer;

const KILLS: usize = 200;

fn write_config(root: &Path, port: u16) -> std::path::PathBuf {
    let config = root.join("config");
    fs::create_dir_all(&config).unwrap();
    common::write_pattoo_yaml(&config, root, port);
    fs::write(
        config.join("pattoo_agentd.yaml"),
        r#"pattoo_agentd:
  delivery:
    timeout_ms: 300
  pollers:
    - name: crash
      type: command
      command: ["echo", '{"targets": [{"target": "crash-test", "datapoints": [{"key": "k", "value": 1}]}]}']
      format: datapoints
"#,
    )
    .unwrap();
    config
}

/// Body timestamps a run reported as committed, from its complete lines.
fn committed(stdout: &str) -> Vec<u64> {
    stdout
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match words.next()? {
                "posted" | "cached" => words.nth(1)?.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn every_body_committed_before_a_kill_reaches_the_server_afterwards() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = Arc::new(runtime.block_on(TestServer::start()));
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), server.addr.port());

    // The server flaps: up, refusing connections, answering 500.
    let flapping = Arc::new(AtomicBool::new(true));
    let flapper = runtime.spawn(common::receiver::flap(
        server.clone(),
        flapping.clone(),
        20..150,
    ));

    // One run to the end first: it makes the agent id, and its length sets
    // the range of kill times, so kills land in start-up, polling, posting,
    // caching and replay alike.
    let warm_up = Instant::now();
    let output = common::agentd(&config).arg("once").output().unwrap();
    let run_time = warm_up.elapsed();
    let mut reported: BTreeSet<u64> = committed(&String::from_utf8_lossy(&output.stdout))
        .into_iter()
        .collect();
    let mut kill_window_us = (run_time.as_micros() as u64 * 3 / 2).clamp(20_000, 400_000);

    // Enough kills, and enough commits among them to prove something. On a
    // loaded machine a run can take far longer than the warm-up did, so the
    // kill window follows how long runs take now; the deadline only catches
    // runs that never commit at all.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut killed = 0;
    let mut finished = 0;
    let stderr_log = root.path().join("stderr.log");
    while (killed < KILLS || reported.len() <= KILLS / 4) && Instant::now() < deadline {
        let mut child = common::agentd(&config)
            .arg("once")
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr_log).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..kill_window_us)));
        let was_killed = match child.try_wait().unwrap() {
            Some(_) => {
                finished += 1;
                false
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                killed += 1;
                true
            }
        };
        child.wait().unwrap();
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        // Keep kills landing throughout a run: widen the window while they
        // land before any commit, narrow it while runs finish first.
        let commits = committed(&stdout);
        if !was_killed {
            kill_window_us = (kill_window_us * 9 / 10).max(20_000);
        } else if commits.is_empty() {
            kill_window_us = (kill_window_us * 11 / 10).min(5_000_000);
        }
        reported.extend(commits);
    }
    let crash_phase = started.elapsed();

    flapping.store(false, Ordering::SeqCst);
    runtime.block_on(flapper).unwrap();
    // Every run left the cache consistent enough for a clean replay.
    let mut replays = 0;
    loop {
        let output = common::agentd(&config)
            .args(["cache", "replay"])
            .output()
            .unwrap();
        replays += 1;
        if output.status.success() {
            break;
        }
        assert!(
            replays < 20,
            "cache replay keeps failing: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(1100));
    }

    let received = server.received();
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    for body in &received {
        *copies.entry(body.timestamp_ms).or_default() += 1;
    }
    let lost: Vec<&u64> = reported
        .iter()
        .filter(|t| !copies.contains_key(t))
        .collect();
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    eprintln!(
        "one run takes {run_time:?}; {killed} kills and {finished} complete runs in {crash_phase:?}; {} bodies reported committed, {} distinct received, {duplicates} duplicate(s), {} lost",
        reported.len(),
        copies.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "committed but never received: {lost:?}");
    assert!(
        reported.len() > KILLS / 4,
        "too few commits to prove anything: {}",
        reported.len()
    );
    let quarantine = root.path().join("cache").join("quarantine");
    assert!(
        !quarantine.exists() || fs::read_dir(&quarantine).unwrap().count() == 0,
        "a kill left a damaged cache file"
    );
    let cache_dir = root.path().join("cache");
    let leftovers: Vec<_> = fs::read_dir(&cache_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|agent| fs::read_dir(agent.path()).unwrap().flatten())
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "cache not empty after replay: {leftovers:?}"
    );
}
