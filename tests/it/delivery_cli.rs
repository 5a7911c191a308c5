//! The command line: `once` posts or caches and replays, `cache status`,
//! `cache replay` and `cache purge` say what they did, and `receive` is a
//! pattoo receiver the agent can post to.

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(root: &Path, port: u16) -> PathBuf {
    let config = root.join("config");
    fs::create_dir_all(&config).unwrap();
    common::write_pattoo_yaml(&config, root, port);
    fs::write(
        config.join("pattoo_agentd.yaml"),
        r#"pattoo_agentd:
  delivery:
    timeout_ms: 2000
  cache:
    max_bytes: 10000000
    max_age: 30d
  pollers:
    - name: cli
      type: command
      command: ["echo", '{"targets": [{"target": "cli-test", "datapoints": [{"key": "k", "value": 1}]}]}']
      format: datapoints
"#,
    )
    .unwrap();
    config
}

fn run(config: &Path, args: &[&str]) -> Output {
    common::agentd(config).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `receive` on a given port; killed when dropped.
struct ReceiveProcess(Child);

impl ReceiveProcess {
    fn start(port: u16, dir: &Path) -> ReceiveProcess {
        let mut child = common::pattoo_agentd()
            .args(["receive", "--listen", &format!("127.0.0.1:{port}"), "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // It says where it listens once it does: no need to guess a delay.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(
            first.starts_with(&format!("listening on 127.0.0.1:{port}")),
            "{first}"
        );
        ReceiveProcess(child)
    }
}

impl Drop for ReceiveProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stored(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn once_caches_while_the_server_is_away_and_cache_commands_report_and_replay() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(root.path(), port);
    let received = root.path().join("received");

    let first = run(&config, &["once"]);
    assert!(first.status.success(), "{first:?}");
    assert!(stdout(&first).starts_with("cached "), "{}", stdout(&first));

    let status = run(&config, &["cache", "status"]);
    assert!(status.status.success());
    assert!(stdout(&status).contains("files 1"), "{}", stdout(&status));

    let receiver = ReceiveProcess::start(port, &received);
    let replay = run(&config, &["cache", "replay"]);
    assert!(replay.status.success(), "{replay:?}");
    assert!(
        stdout(&replay).starts_with("replayed 1 cached body(ies); 0 quarantined; 0 still cached"),
        "{}",
        stdout(&replay)
    );
    let live = run(&config, &["once"]);
    assert!(stdout(&live).starts_with("posted "), "{}", stdout(&live));
    assert_eq!(stored(&received), 2);
    drop(receiver);

    for _ in 0..2 {
        assert!(stdout(&run(&config, &["once"])).starts_with("cached "));
    }
    // An age whose milliseconds overflow 64 bits once wrapped to almost
    // nothing and would have deleted every body.
    let overflowing = run(
        &config,
        &[
            "cache",
            "purge",
            "--older-than",
            "18446744073709551s 1616ms",
            "--yes",
        ],
    );
    assert!(!overflowing.status.success(), "{overflowing:?}");
    assert!(
        String::from_utf8_lossy(&overflowing.stderr).contains("longer than"),
        "{overflowing:?}"
    );
    assert!(stdout(&run(&config, &["cache", "status"])).contains("files 2"));

    let unconfirmed = run(&config, &["cache", "purge", "--older-than", "0s"]);
    assert!(!unconfirmed.status.success(), "purging needs --yes");
    assert!(
        stdout(&unconfirmed).contains("would delete 2"),
        "{}",
        stdout(&unconfirmed)
    );
    assert!(stdout(&run(&config, &["cache", "status"])).contains("files 2"));

    let purge = run(&config, &["cache", "purge", "--older-than", "0s", "--yes"]);
    assert!(purge.status.success(), "{purge:?}");
    assert!(stdout(&purge).contains("deleted 2"), "{}", stdout(&purge));
    assert!(stdout(&run(&config, &["cache", "status"])).contains("0 agent id(s)"));
}

#[test]
fn the_receiver_refuses_what_the_pattoo_server_would_refuse() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _receiver = ReceiveProcess::start(port, &root.path().join("received"));
    let post = |path: &str, body: &str| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let response = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}{path}"))
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    let (status, reason) = post("/pattoo/api/v1/agent/receive/abc", "{\"a\": 1}");
    assert_eq!(status, 400);
    assert!(
        reason.contains("exactly the keys") && reason.trim().lines().count() == 1,
        "{reason}"
    );
    let (status, _) = post("/elsewhere", "{}");
    assert_eq!(status, 404);
    assert_eq!(stored(&root.path().join("received")), 0);
}

#[test]
fn delivery_and_cache_settings_are_read_from_pattoo_agentd_yaml_and_mistakes_located() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), free_port());
    let check = run(&config, &["check"]);
    assert!(check.status.success(), "{check:?}");
    assert!(
        stdout(&check).contains("keeping at most 10000000 bytes and nothing older than 30 days"),
        "{}",
        stdout(&check)
    );

    let file = config.join("pattoo_agentd.yaml");
    let text = fs::read_to_string(&file).unwrap();
    fs::write(
        &file,
        text.replace("max_age: 30d", "max_age: soon")
            .replace("timeout_ms: 2000", "timeout_ms: 2000\n    scheme: gopher"),
    )
    .unwrap();
    let broken = run(&config, &["check"]);
    assert_eq!(broken.status.code(), Some(78));
    let errors = String::from_utf8_lossy(&broken.stderr);
    assert!(
        errors.contains(
            "pattoo_agentd.yaml:4:5: pattoo_agentd.delivery.scheme: unknown scheme `gopher`"
        ),
        "{errors}"
    );
    assert!(errors.contains("pattoo_agentd.yaml:7:5: pattoo_agentd.cache.max_age: expected a duration such as 12h or 7d"), "{errors}");
}

#[test]
fn looking_at_the_cache_drops_nothing_even_past_its_bounds() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), free_port());
    // Older than the configured max_age (30d): delivery would drop it, but
    // `cache status` and an unconfirmed purge only look.
    let agent = "ab".repeat(32);
    let dir = root.path().join("cache").join(&agent);
    fs::create_dir_all(&dir).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let old = dir.join(format!("{}_{agent}.json", now_ms - 40 * 24 * 3600 * 1000));
    fs::write(&old, "{}").unwrap();

    let status = run(&config, &["cache", "status"]);
    assert!(status.status.success(), "{status:?}");
    assert!(
        stdout(&status).contains("files 1  bytes 2"),
        "{}",
        stdout(&status)
    );
    assert!(old.exists(), "cache status deleted a body");

    let unconfirmed = run(&config, &["cache", "purge", "--older-than", "1d"]);
    assert!(
        stdout(&unconfirmed).contains("would delete 1 cached body(ies), 2 bytes"),
        "{}",
        stdout(&unconfirmed)
    );
    assert!(old.exists(), "a purge without --yes deleted a body");

    let purge = run(&config, &["cache", "purge", "--older-than", "1d", "--yes"]);
    assert!(stdout(&purge).contains("deleted 1"), "{}", stdout(&purge));
    assert!(!old.exists());
}

#[test]
fn once_fails_naming_each_poller_that_failed_or_read_nothing_even_at_log_level_error() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), free_port());
    let pattoo_yaml = config.join("pattoo.yaml");
    let quiet = fs::read_to_string(&pattoo_yaml)
        .unwrap()
        .replace("pattoo:\n", "pattoo:\n  log_level: error\n");
    fs::write(&pattoo_yaml, quiet).unwrap();
    let agentd_yaml = config.join("pattoo_agentd.yaml");
    let mut pollers = fs::read_to_string(&agentd_yaml).unwrap();
    pollers.push_str(
        r#"    - name: chatty
      type: command
      command: ["sh", "-c", "yes 'x=1' | head -c 5000"]
      format: keyvalue
      max_output_bytes: 100
    - name: reserved
      type: command
      command: ["echo", "My Pattoo Key=1"]
      format: keyvalue
    - name: silent
      type: command
      command: ["true"]
      format: keyvalue
"#,
    );
    fs::write(&agentd_yaml, pollers).unwrap();

    for args in [&["once", "--print"][..], &["once"][..]] {
        let output = run(&config, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("pattoo-agentd: poller chatty: ")
                && stderr.contains("printed more than 100 bytes"),
            "{args:?}: {stderr}"
        );
        // Every reading dropped by the wire format's rules is said, but it
        // is what the format prescribes, not a failed poll.
        assert!(
            stderr.contains("poller reserved: read no valid datapoint (1 dropped"),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("poller silent: read no valid datapoint"),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("2 pollers gave nothing to post: chatty, silent"),
            "{args:?}: {stderr}"
        );
        // The poller that worked still delivered.
        let printed = stdout(&output);
        let first = printed.lines().next().unwrap_or_default();
        if args.len() == 2 {
            assert!(first.starts_with('{'), "{printed}");
        } else {
            assert!(first.starts_with("cached "), "{printed}");
        }
    }

    let only_good = run(&config, &["once", "--print", "--poller", "cli"]);
    assert_eq!(only_good.status.code(), Some(0));
}

#[test]
fn cache_replay_reports_progress_in_plain_lines_when_stderr_is_not_a_terminal() {
    use pattoo_agentd::delivery::cache::Cache;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(root.path(), port);
    let cache = Cache::open(
        &root.path().join("cache"),
        &Default::default(),
        Default::default(),
    );
    let now = common::receiver::now_ms();
    for i in 0..20 {
        cache
            .store(&common::receiver::body(now - 60_000 + i, i as i64))
            .unwrap();
    }
    drop(cache);

    let received = root.path().join("received");
    let _receiver = ReceiveProcess::start(port, &received);
    let replay = run(&config, &["cache", "replay"]);
    assert!(replay.status.success(), "{replay:?}");
    assert!(
        stdout(&replay).starts_with("replayed 20 cached body(ies); 0 quarantined; 0 still cached"),
        "{}",
        stdout(&replay)
    );
    let progress = String::from_utf8_lossy(&replay.stderr);
    assert!(
        progress.contains("replay: 2 of 20 cached bodies sent (10%)"),
        "{progress}"
    );
    assert!(
        progress.contains("replay: 20 of 20 cached bodies sent (100%)"),
        "{progress}"
    );
    assert!(
        !progress.contains('\r'),
        "no terminal control in plain lines: {progress:?}"
    );
    assert_eq!(stored(&received), 20);
}
