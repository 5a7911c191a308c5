//! A cache on a file system that fills up: polling and posting go on, each
//! body that could not be kept is counted exactly, and caching resumes when
//! space returns.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::receiver::*;
use pattoo_agentd::delivery::Committed;

/// A tmpfs of a few hundred KiB, unmounted when dropped.
struct SmallFs {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Result<SmallFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount_point = dir.path().join("small");
        std::fs::create_dir(&mount_point).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&mount_point)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(SmallFs {
            mount_point,
            _dir: dir,
        })
    }

    fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_only_what_it_counts_and_caching_resumes_when_space_returns() {
    let small = match SmallFs::mount("256k") {
        Ok(small) => small,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a small tmpfs to fill ({why}); run as root to test a full disk");
            return;
        }
    };
    let server = TestServer::start().await;
    server.stop();
    let cache_dir = small.path().join("cache");
    let delivery = delivery(&server, &cache_dir);

    let start = now_ms();
    let mut kept = BTreeSet::new();
    let mut lost = BTreeSet::new();
    for i in 0..150u64 {
        match delivery.submit(body(start + i, i as i64)).await {
            Committed::Cached(_) => kept.insert(start + i),
            Committed::Lost => lost.insert(start + i),
            Committed::Posted => panic!("the server is down"),
        };
    }
    let stats = delivery.stats();
    eprintln!(
        "{} cached, {} lost on a 256 KiB file system",
        kept.len(),
        lost.len()
    );
    assert!(
        !kept.is_empty() && !lost.is_empty(),
        "the file system filled part way"
    );
    assert_eq!(stats.lost, lost.len() as u64);
    assert_eq!(stats.cached, kept.len() as u64);
    assert_eq!(
        cached_files(&cache_dir).len(),
        kept.len(),
        "no partial or temporary file left"
    );
    let on_disk = std::fs::read_dir(cache_dir.join(AGENT)).unwrap().count();
    assert_eq!(on_disk, kept.len());

    // The server returns; replay empties the cache and frees the space.
    server.resume(Mode::Accept).await;
    tokio::time::sleep(quick_settings().retry_max + Duration::from_millis(100)).await;
    let report = delivery.replay_now().await;
    assert_eq!(report.delivered, kept.len() as u64, "{report:?}");

    // Down again: with space back, bodies are cached again.
    server.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 150..160u64 {
        let committed = delivery.submit(body(start + i, i as i64)).await;
        assert!(matches!(committed, Committed::Cached(_)), "{committed:?}");
        kept.insert(start + i);
    }
    server.resume(Mode::Accept).await;
    tokio::time::sleep(quick_settings().retry_max + Duration::from_millis(100)).await;
    assert_eq!(delivery.replay_now().await.delivered, 10);

    let received: BTreeSet<u64> = server.received().iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(received, kept, "every body kept arrived");
    assert!(received.is_disjoint(&lost));
    assert_eq!(
        received.len() + lost.len(),
        160,
        "each body either arrived or was counted lost"
    );
    assert_eq!(delivery.stats().lost, lost.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_cache_loses_only_what_it_counts_and_caching_resumes_when_writable() {
    let small = match SmallFs::mount("1m") {
        Ok(small) => small,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a small tmpfs ({why}); run as root to test a read-only cache");
            return;
        }
    };
    let remount = |mode: &str| {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(small.path())
            .status()
            .unwrap();
        assert!(status.success(), "remount {mode}");
    };
    let server = TestServer::start().await;
    server.stop();
    let cache_dir = small.path().join("cache");
    let delivery = delivery(&server, &cache_dir);
    let start = now_ms();
    assert!(matches!(
        delivery.submit(body(start, 0)).await,
        Committed::Cached(_)
    ));

    remount("ro");
    for i in 1..4 {
        let committed = delivery.submit(body(start + i, i as i64)).await;
        assert_eq!(committed, Committed::Lost);
    }
    assert_eq!(delivery.stats().lost, 3);

    remount("rw");
    assert!(matches!(
        delivery.submit(body(start + 4, 4)).await,
        Committed::Cached(_)
    ));
    server.resume(Mode::Accept).await;
    tokio::time::sleep(quick_settings().retry_max + Duration::from_millis(100)).await;
    assert_eq!(delivery.replay_now().await.delivered, 2);
    let received: Vec<u64> = server.received().iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(received, [start, start + 4]);
}
