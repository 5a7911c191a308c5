//! `pattoo-agentd run` as systemd runs it: the real binary, a notification
//! socket the test reads, a receiver on loopback, and signals.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::receiver::{Mode, TestServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PATIENCE: Duration = Duration::from_secs(20);

/// The systemd side of `Type=notify`: a datagram socket collecting what the
/// agent says.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().extend(text.lines().map(str::to_owned));
            }
        });
        NotifySocket { path, messages }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until the agent says it is ready.
    fn wait_ready(&self) {
        self.wait_for("READY=1", |m| m == "READY=1");
    }

    /// Waits until a message satisfies `wanted`, returning it.
    fn wait_for(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        wait_until(what, || self.messages().into_iter().find(|m| wanted(m)))
    }
}

/// Polls `found` until it gives something or patience runs out.
fn wait_until<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Agent {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, as `systemctl stop` sends it; the exit status, which
    /// comes within 15 s.
    fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(15))
    }

    fn write_pollers(&self, pollers_yaml: &str) {
        write_pollers(self.dir.path(), pollers_yaml);
    }

    /// Every cached body, whatever agent id it is under.
    fn cache_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let Ok(agents) = std::fs::read_dir(self.dir.path().join("cache")) else {
            return files;
        };
        for agent in agents {
            let Ok(entries) = std::fs::read_dir(agent.unwrap().path()) else {
                continue;
            };
            files.extend(
                entries
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "json")),
            );
        }
        files
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_pollers(dir: &Path, pollers_yaml: &str) {
    write_agentd(dir, "", pollers_yaml, 2000);
}

/// `pattoo_agentd.yaml` with `settings` (indented lines) before the pollers.
fn write_agentd(dir: &Path, settings: &str, pollers_yaml: &str, timeout_ms: u64) {
    std::fs::write(
        dir.join("pattoo_agentd.yaml"),
        format!("pattoo_agentd:\n  hostname: test-host\n  delivery:\n    timeout_ms: {timeout_ms}\n{settings}  pollers:\n{pollers_yaml}"),
    )
    .unwrap();
}

/// A shell script that prints one datapoint with `key`, after `delay`.
fn script(dir: &Path, key: &str, delay_s: f64) -> PathBuf {
    let path = dir.join(format!("{key}.sh"));
    let marker = dir.join(format!("{key}.started"));
    common::write_executable(
        &path,
        &format!(
            "#!/bin/sh\ntouch '{}'\nsleep {delay_s}\necho '{{\"targets\":[{{\"datapoints\":[{{\"key\":\"{key}\",\"value\":1}}]}}]}}'\n",
            marker.display()
        ),
    );
    path
}

fn poller(name: &str, script: &Path) -> String {
    format!(
        "    - name: {name}\n      type: command\n      polling_interval: 1\n      command: [{}]\n      format: datapoints\n",
        script.display()
    )
}

/// The poller `key`: one datapoint keyed `key`, at once, every second.
fn posting(dir: &Path, key: &str) -> String {
    poller(key, &script(dir, key, 0.0))
}

/// The poller most tests run: [`posting`] `alpha`.
fn alpha(dir: &Path) -> String {
    posting(dir, "alpha")
}

/// alpha's entry again, for a reload: on the script [`alpha`] wrote, which
/// is left as it is (rewriting it could give a running poll half a file).
fn alpha_again(dir: &Path) -> String {
    poller("alpha", &dir.join("alpha.sh"))
}

/// [`alpha_again`] with a setting no poller has, for a reload to refuse.
fn alpha_with_a_typo(dir: &Path) -> String {
    alpha_again(dir) + "      colour: red\n"
}

/// Starts the agent as systemd starts a `Type=notify` service, on a fresh
/// configuration directory, posting to `server`; the socket gets what the
/// agent tells systemd.
fn start_notified(server: &TestServer, pollers: impl Fn(&Path) -> String) -> (Agent, NotifySocket) {
    start_notified_with(server, pollers, Launch::default())
}

/// [`start_notified`] launched as `launch` says.
fn start_notified_with(
    server: &TestServer,
    pollers: impl Fn(&Path) -> String,
    launch: Launch,
) -> (Agent, NotifySocket) {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let agent = start_with(server.addr.port(), pollers, Some(&notify), dir, launch);
    (agent, notify)
}

/// How [`start_with`] launches the agent, beyond the defaults.
struct Launch<'a> {
    /// stderr is "the journal": `JOURNAL_STREAM` names it, as systemd sets.
    journal: bool,
    /// Extra environment for the agent.
    env: &'a [(&'a str, &'a str)],
    /// `delivery.timeout_ms`.
    timeout_ms: u64,
    /// More agent settings (indented YAML lines).
    settings: &'a str,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            journal: false,
            env: &[],
            timeout_ms: 2000,
            settings: "",
        }
    }
}

/// `pattoo.yaml`: directories under `dir`, posting to `port` on loopback.
fn write_pattoo_yaml(dir: &Path, port: u16) {
    let d = dir.display();
    std::fs::write(
        dir.join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_level: debug\n  log_directory: {d}/log\n  cache_directory: {d}/cache\n  daemon_directory: {d}/daemon\n\
             pattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: {port}\n"
        ),
    )
    .unwrap();
}

/// Starts the agent on the configuration directory `dir`, posting to
/// `port` on loopback, telling `notify` what it tells systemd.
fn start_with(
    port: u16,
    pollers: impl Fn(&Path) -> String,
    notify: Option<&NotifySocket>,
    dir: tempfile::TempDir,
    launch: Launch,
) -> Agent {
    write_pattoo_yaml(dir.path(), port);
    // Through `sh -c 'exec'` so that WATCHDOG_PID names the agent's own
    // pid, as systemd sets it.
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" --config-dir \"$1\" run")
        .arg(common::AGENTD)
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        .envs(launch.env.iter().copied());
    if launch.journal {
        // What systemd sets: the device and inode of the stream it gave.
        use std::os::unix::fs::MetadataExt;
        let meta = stderr.metadata().unwrap();
        command.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    command.stderr(stderr);
    if let Some(notify) = notify {
        command
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "1000000");
    }
    write_agentd(
        dir.path(),
        launch.settings,
        &pollers(dir.path()),
        launch.timeout_ms,
    );
    Agent {
        child: command.spawn().unwrap(),
        dir,
    }
}

/// Waits until `server` has received at least `count` bodies holding `key`.
fn wait_for_bodies(server: &TestServer, key: &str, count: usize) {
    wait_until(&format!("{count} bodies from {key}"), || {
        (bodies_with(server, key) >= count).then_some(())
    });
}

fn bodies_with(server: &TestServer, key: &str) -> usize {
    let needle = format!("[\"pattoo_key\",\"{key}\"]");
    server
        .received()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.bytes).contains(&needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_tells_systemd_ready_status_and_watchdog_and_stops_on_sigterm() {
    let server = TestServer::start().await;
    let (mut agent, notify) = start_notified(&server, alpha);

    notify.wait_ready();
    let status = notify.wait_for("a STATUS line", |m| {
        m.starts_with("STATUS=") && m.contains("pollers")
    });
    assert!(status.contains("1 pollers"), "{status}");
    notify.wait_for("a watchdog ping", |m| m == "WATCHDOG=1");
    server.wait_for(1, PATIENCE).await;
    assert!(bodies_with(&server, "alpha") >= 1);

    let status = agent.terminate();
    assert!(status.success(), "{status}");
    assert!(notify.messages().iter().any(|m| m == "STOPPING=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_old_pollers_on_a_broken_config_and_swaps_in_a_valid_one() {
    let server = TestServer::start().await;
    let (mut agent, notify) = start_notified(&server, alpha);
    notify.wait_ready();
    wait_for_bodies(&server, "alpha", 1);

    // A typo: the reload is refused and alpha keeps posting.
    agent.write_pollers(&alpha_with_a_typo(agent.dir.path()));
    agent.signal(Signal::SIGHUP);
    notify.wait_for("the refusal", |m| m.starts_with("STATUS=reload refused"));
    wait_until("the refusal in the agent's figures", || {
        (agent_figure(&agent, "config_last_reload_refused")? == 1.0).then_some(())
    });
    let before = bodies_with(&server, "alpha");
    wait_for_bodies(&server, "alpha", before + 2); // still posting

    // A valid file with another poller: beta replaces alpha.
    agent.write_pollers(&posting(agent.dir.path(), "beta"));
    agent.signal(Signal::SIGHUP);
    wait_for_bodies(&server, "beta", 1);
    wait_until("the reload counted in the agent's figures", || {
        let counted = agent_figure(&agent, "config_reloads")? == 1.0
            && agent_figure(&agent, "config_last_reload_refused")? == 0.0;
        counted.then_some(())
    });
    let alpha_after_swap = bodies_with(&server, "alpha");
    wait_for_bodies(&server, "beta", 3);
    assert_eq!(
        bodies_with(&server, "alpha"),
        alpha_after_swap,
        "alpha kept polling after the swap"
    );

    assert!(agent.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_section_of_the_wrong_kind_is_refused_and_the_daemon_keeps_polling() {
    let server = TestServer::start().await;
    let (mut agent, notify) = start_notified(&server, alpha);
    notify.wait_ready();
    wait_for_bodies(&server, "alpha", 1);

    // `delivery: 5` once made the configuration reader panic, which took
    // the whole daemon down with exit status 101.
    std::fs::write(
        agent.dir.path().join("pattoo_agentd.yaml"),
        format!(
            "pattoo_agentd:\n  delivery: 5\n  pollers:\n{}",
            alpha_again(agent.dir.path())
        ),
    )
    .unwrap();
    agent.signal(Signal::SIGHUP);
    notify.wait_for("the refusal", |m| m.starts_with("STATUS=reload refused"));
    let before = bodies_with(&server, "alpha");
    wait_for_bodies(&server, "alpha", before + 2); // still posting
    let stderr = agent.stderr();
    assert!(
        stderr.contains("pattoo_agentd.yaml:2:3: pattoo_agentd.delivery"),
        "{stderr}"
    );

    assert!(agent.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_the_directories_keeps_using_the_old_ones_until_restart() {
    let server = TestServer::start().await;
    server.stop(); // every body is cached
    let (mut agent, notify) = start_notified(&server, alpha);
    notify.wait_ready();
    wait_until("a cached body", || {
        (!agent.cache_files().is_empty()).then_some(())
    });

    // New directories, and new delivery settings so delivery is rebuilt.
    let d = agent.dir.path().display().to_string();
    std::fs::write(
        agent.dir.path().join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_level: debug\n  log_directory: {d}/log\n  cache_directory: {d}/cache2\n  daemon_directory: {d}/daemon2\n\
             pattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: {}\n",
            server.addr.port()
        ),
    )
    .unwrap();
    write_agentd(agent.dir.path(), "", &alpha_again(agent.dir.path()), 3000);
    agent.signal(Signal::SIGHUP);
    wait_until("the reload", || {
        let ready = notify.messages().iter().filter(|m| *m == "READY=1").count();
        (ready >= 2).then_some(())
    });
    let before = agent.cache_files().len();
    wait_until("bodies cached after the reload", || {
        (agent.cache_files().len() >= before + 2).then_some(())
    });
    assert!(
        !agent.dir.path().join("cache2").exists(),
        "the new cache directory was used before a restart"
    );
    assert!(
        !agent.dir.path().join("daemon2").exists(),
        "the new daemon directory (agent ids) was used before a restart"
    );
    let stderr = agent.stderr();
    assert!(stderr.contains("cache_directory changed"), "{stderr}");

    assert!(agent.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_poll_with_the_server_down_caches_the_body_and_exits_0() {
    let server = TestServer::start().await;
    server.stop(); // connections are refused from now on
    let (mut agent, notify) = start_notified(&server, |d| poller("slow", &script(d, "slow", 2.0)));
    notify.wait_ready();
    let marker = agent.dir.path().join("slow.started");
    wait_until("the poll to start", || marker.exists().then_some(()));

    let status = agent.terminate();
    assert!(status.success(), "{status}");
    let cached = agent.cache_files();
    assert_eq!(cached.len(), 1, "{cached:?}\n{}", agent.stderr());
    let body = std::fs::read_to_string(&cached[0]).unwrap();
    assert!(body.contains("[\"pattoo_key\",\"slow\"]"), "{body}");

    // And it is delivered once the server is back (by `once`, which also
    // replays the cache).
    server.resume(Mode::Accept).await;
    common::run_agentd(agent.dir.path(), &["cache", "replay"]);
    assert_eq!(bodies_with(&server, "slow"), 1);
    assert!(agent.cache_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_directories_exits_with_a_clear_message() {
    let server = TestServer::start().await;
    let (agent, notify) = start_notified(&server, alpha);
    notify.wait_ready();

    let second = common::agentd(agent.dir.path())
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another pattoo-agentd"), "{stderr}");
    assert!(
        stderr.contains(&format!("(pid {})", agent.child.id())),
        "{stderr}"
    );
}

#[test]
fn run_with_a_broken_configuration_exits_with_the_configuration_status() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pattoo.yaml"),
        "pattoo:\n  log_level: loud\n",
    )
    .unwrap();
    let output = common::agentd(dir.path()).arg("run").output().unwrap();
    // 78 (EX_CONFIG) is in the unit's RestartPreventExitStatus=.
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("pattoo.yaml:2:3"));
}

#[test]
fn run_with_a_poller_secret_missing_exits_with_the_configuration_status_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path(), dir.path(), 20201);
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        "pattoo_agentd:\n  pollers:\n    - name: quotes\n      type: http\n      urls: [http://127.0.0.1:9/]\n      format: keyvalue\n      auth:\n        bearer: {env: PATTOO_TEST_UNSET_SECRET}\n",
    )
    .unwrap();
    let output = common::agentd(dir.path())
        .arg("run")
        .env_remove("PATTOO_TEST_UNSET_SECRET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pattoo_agentd.yaml:8:"), "{stderr}");
    assert!(stderr.contains("poller `quotes`"), "{stderr}");
    assert!(stderr.contains("PATTOO_TEST_UNSET_SECRET"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_a_replayed_post_in_flight_at_once_and_the_body_stays_cached() {
    let server = TestServer::start().await;
    server.set_mode(Mode::Hang);
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    // A body cached by an earlier run.
    let cached = common::receiver::body(common::receiver::now_ms(), 1);
    let agent_dir = dir.path().join("cache").join(&cached.agent_id);
    std::fs::create_dir_all(&agent_dir).unwrap();
    let file = agent_dir.join(format!("{}_{}.json", cached.timestamp_ms, cached.agent_id));
    std::fs::write(&file, &cached.json).unwrap();
    let mut agent = start_with(
        server.addr.port(),
        // No poll comes due while the test runs.
        |d| alpha(d).replace("polling_interval: 1", "polling_interval: 86400"),
        Some(&notify),
        dir,
        // A long post timeout: stopping must not wait for it.
        Launch {
            timeout_ms: 45_000,
            ..Launch::default()
        },
    );
    notify.wait_ready();
    wait_until("the replayed post", || {
        (server.attempts() >= 1).then_some(())
    });

    agent.signal(Signal::SIGTERM);
    // Within the 10 s stop grace, not after the 45 s post timeout.
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        cached.json,
        "the body stays cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_reload_stops_within_one_grace_period() {
    let server = TestServer::start().await;
    // Polls that outlast the 10 s stop grace.
    let slow = |d: &Path| poller("slow", &script(d, "slow", 60.0)) + "      timeout_ms: 120000\n";
    let (mut agent, notify) = start_notified(&server, slow);
    notify.wait_ready();
    let started = agent.dir.path().join("slow.started");
    wait_until("a poll in flight", || started.exists().then_some(()));

    agent.signal(Signal::SIGHUP);
    notify.wait_for("the reload", |m| m.starts_with("RELOADING=1"));
    let stopping_at = Instant::now();
    agent.signal(Signal::SIGTERM);
    // One grace period (10 s) for the polls in flight, old and new, not
    // one for the reload and another for the stop.
    let status = agent.wait_exit(Duration::from_secs(16));
    assert!(
        status.success(),
        "{status} after {:?}",
        stopping_at.elapsed()
    );
}

/// What a process sees on a system without the ca-certificates package:
/// rustls-native-certs looks only where these point, and finds nothing.
const NO_SYSTEM_ROOTS: [(&str, &str); 2] = [
    ("SSL_CERT_FILE", "/nonexistent/ca-certificates.crt"),
    ("SSL_CERT_DIR", "/nonexistent/certs"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_posts_over_plain_http_on_a_system_without_ca_certificates() {
    let server = TestServer::start().await;
    let (mut agent, notify) = start_notified_with(
        &server,
        alpha,
        Launch {
            env: &NO_SYSTEM_ROOTS,
            ..Launch::default()
        },
    );
    notify.wait_ready();
    server.wait_for(1, PATIENCE).await;
    assert!(bodies_with(&server, "alpha") >= 1, "{}", agent.stderr());
    assert!(agent.terminate().success());
}

/// `check` builds the clients `run` builds, so it fails where `run` would.
#[test]
fn check_says_https_needs_ca_certificates_where_the_system_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    common::write_pattoo_yaml(dir.path(), dir.path(), 20201);
    write_pollers(
        dir.path(),
        "    - name: api\n      type: http\n      urls: [https://api.example.org/v1]\n      measurements: true\n",
    );
    let check = |env: &[(&str, &str)]| {
        common::agentd(dir.path())
            .arg("check")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let output = check(&NO_SYSTEM_ROOTS);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("poller api"), "{stderr}");
    assert!(stderr.contains("https://api.example.org/v1"), "{stderr}");
    assert!(
        stderr.contains("install the ca-certificates package"),
        "{stderr}"
    );

    // A CA file is enough without the system's roots.
    let ca = rcgen::generate_simple_self_signed(vec!["api.example.org".to_owned()]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    write_pollers(
        dir.path(),
        &format!("    - name: api\n      type: http\n      urls: [https://api.example.org/v1]\n      measurements: true\n      tls:\n        ca_file: {d}/ca.pem\n"),
    );
    let output = check(&NO_SYSTEM_ROOTS);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_prints_the_cache_age_with_a_space_before_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path(), dir.path(), 20201);
    let stdout = common::run_agentd(dir.path(), &["check"]);
    assert!(stdout.contains("nothing older than 7 days"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_journal_each_line_carries_its_priority_and_no_leading_space() {
    let server = TestServer::start().await;
    let (mut agent, notify) = start_notified_with(
        &server,
        alpha,
        Launch {
            journal: true,
            ..Launch::default()
        },
    );
    notify.wait_ready();
    agent.write_pollers(&alpha_with_a_typo(agent.dir.path()));
    agent.signal(Signal::SIGHUP);
    notify.wait_for("the refusal", |m| m.starts_with("STATUS=reload refused"));
    assert!(agent.terminate().success());

    let stderr = agent.stderr();
    for line in stderr.lines() {
        let priority = line.get(..3).unwrap_or_default();
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&priority),
            "a line without its priority: {line:?}"
        );
        assert!(!line[3..].starts_with(' '), "a leading space: {line:?}");
    }
    let started = stderr
        .lines()
        .find(|l| l.contains("started with configuration"));
    assert!(
        started.is_some_and(|l| l.starts_with("<6>pattoo-agentd")),
        "{stderr}"
    );
    let refused = stderr.lines().find(|l| l.contains("reload refused"));
    assert!(refused.is_some_and(|l| l.starts_with("<3>")), "{stderr}");
    assert!(refused.is_some_and(|l| l.contains("colour")), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_refuses_a_broken_file_and_signals_for_a_valid_one() {
    let server = TestServer::start().await;
    let (mut agent, notify) = start_notified(&server, alpha);
    notify.wait_ready();
    let reload = |agent: &Agent| reload_command(agent.dir.path(), agent.child.id());

    // As `systemctl reload` runs it (ExecReload=): a broken file fails the
    // reload, says why, and the agent is not disturbed.
    agent.write_pollers(&alpha_with_a_typo(agent.dir.path()));
    let refused = reload(&agent);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");

    // A valid file: the agent reloads, telling systemd when it begins
    // (with the monotonic time) and when it is done.
    agent.write_pollers(&posting(agent.dir.path(), "beta"));

    // But not through another process: with a valid file and the agent
    // running, a pid that is not the agent's is refused and not signalled.
    let mut sleeper = Sleeper::start();
    let wrong = reload_command(agent.dir.path(), sleeper.pid());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("not signalling process {}", sleeper.pid()))
            && stderr.contains("not this configuration's pattoo-agentd"),
        "{stderr}"
    );
    sleeper.assert_alive();

    let accepted = reload(&agent);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    wait_for_bodies(&server, "beta", 1);
    let messages = notify.messages();
    let reloading: Vec<usize> = (0..messages.len())
        .filter(|&i| messages[i] == "RELOADING=1")
        .collect();
    assert_eq!(reloading.len(), 1, "one reload only: {messages:?}");
    let at = reloading[0];
    assert!(
        messages[at + 1].starts_with("MONOTONIC_USEC="),
        "{messages:?}"
    );
    assert!(
        messages[at + 1..].iter().any(|m| m == "READY=1"),
        "READY=1 after the reload: {messages:?}"
    );

    assert!(agent.terminate().success());
}

/// A command poller whose every poll fails: its output is not JSON.
fn broken_poller(dir: &Path) -> String {
    let path = dir.join("broken.sh");
    common::write_executable(&path, "#!/bin/sh\necho 'this is not json'\n");
    format!(
        "    - name: broken\n      type: command\n      polling_interval: 1\n      command: [{}]\n      format: datapoints\n",
        path.display()
    )
}

/// Self-monitoring every second.
const SELF_EVERY_SECOND: &str = "  self_monitoring:\n    polling_interval: 1\n";
/// And the metrics page on a port the OS picks.
const WATCHED: &str =
    "  self_monitoring:\n    polling_interval: 1\n  metrics_listen: 127.0.0.1:0\n";

/// One datapoint of a body: its pairs by key.
type Datapoint = std::collections::HashMap<String, serde_json::Value>;

fn datapoints(body: &serde_json::Value) -> Vec<Datapoint> {
    common::body::datapoints(body)
        .into_iter()
        .map(|pairs| pairs.into_iter().collect())
        .collect()
}

/// A self-monitoring body: (timestamp, figure by (poller or "", key)).
struct Own {
    timestamp_ms: u64,
    figures: std::collections::HashMap<(String, String), (f64, i64)>,
}

impl Own {
    fn parse(bytes: &[u8]) -> Option<Own> {
        let body: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let points = datapoints(&body);
        let program = points.first()?.get("pattoo_agent_program")?.as_str()?;
        if program != "pattoo_agentd_self" {
            return None;
        }
        let mut figures = std::collections::HashMap::new();
        for point in points {
            let poller = point
                .get("poller")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            let key = point["pattoo_key"].as_str().unwrap().to_owned();
            let value = point["pattoo_value"].as_f64().unwrap();
            let data_type = point["pattoo_data_type"].as_i64().unwrap();
            figures.insert((poller, key), (value, data_type));
        }
        Some(Own {
            timestamp_ms: body["pattoo_agent_timestamp"].as_u64().unwrap(),
            figures,
        })
    }

    fn get(&self, poller: &str, key: &str) -> f64 {
        self.figures
            .get(&(poller.to_owned(), key.to_owned()))
            .unwrap_or_else(|| panic!("{poller}/{key} missing"))
            .0
    }
}

/// The self-monitoring bodies cached so far, oldest first.
fn cached_own(agent: &Agent) -> Vec<Own> {
    let mut own: Vec<Own> = agent
        .cache_files()
        .iter()
        .filter_map(|path| Own::parse(&std::fs::read(path).ok()?))
        .collect();
    own.sort_by_key(|o| o.timestamp_ms);
    own
}

fn state_file(agent: &Agent) -> Option<serde_json::Value> {
    let text = std::fs::read(agent.dir.path().join("daemon/pattoo-agentd.state.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// An agent-wide figure from the state file.
fn agent_figure(agent: &Agent, key: &str) -> Option<f64> {
    let state = state_file(agent)?;
    state["figures"]["groups"]
        .as_array()?
        .iter()
        .find(|group| group["poller"].is_null())?["figures"]
        .as_array()?
        .iter()
        .find(|figure| figure["key"] == key)?["value"]
        .as_f64()
}

fn status(agent: &Agent) -> (Option<i32>, String) {
    status_in(agent.dir.path())
}

/// `status` on the configuration in `dir`: exit status, stdout + stderr.
fn status_in(dir: &Path) -> (Option<i32>, String) {
    let output = common::agentd(dir).arg("status").output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_monitoring_counts_a_failing_poller_and_a_down_server_and_the_figures_reach_pattoo() {
    let server = TestServer::start().await;
    server.stop(); // down: every body is cached
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_with(
        server.addr.port(),
        |d| alpha(d) + &broken_poller(d),
        None,
        dir,
        Launch {
            settings: SELF_EVERY_SECOND,
            ..Launch::default()
        },
    );

    // Two self-monitoring bodies, cached like any other, the later one
    // seeing more failures, more cached bodies and the server down.
    let own = wait_until("two self-monitoring bodies in the cache", || {
        let own = cached_own(&agent);
        let moved = own.len() >= 2
            && own[own.len() - 1].get("broken", "poller_polls_failed")
                > own[0].get("broken", "poller_polls_failed")
            && own[0].get("broken", "poller_polls_failed") >= 1.0;
        moved.then_some(own)
    });
    let (first, last) = (&own[0], &own[own.len() - 1]);
    assert_eq!(last.get("broken", "poller_datapoints_posted"), 0.0);
    assert!(last.get("broken", "poller_polls") >= last.get("broken", "poller_polls_failed"));
    assert!(last.get("alpha", "poller_datapoints_posted") >= 1.0);
    assert_eq!(last.get("alpha", "poller_polls_failed"), 0.0);
    assert!(last.get("", "delivery_bodies_cached") > first.get("", "delivery_bodies_cached"));
    assert_eq!(last.get("", "delivery_bodies_posted"), 0.0);
    assert!(last.get("", "cache_files") >= 2.0);
    assert!(last.get("", "cache_bytes") > 0.0);
    assert_eq!(last.get("", "server_reachable"), 0.0);
    assert!(last.get("", "process_resident_bytes") > 1_000_000.0);
    assert!(last.get("", "process_open_fds") >= 3.0);
    // Counters are counter64 (64), levels int (99).
    assert_eq!(
        last.figures[&("broken".into(), "poller_polls_failed".into())].1,
        64
    );
    assert_eq!(last.figures[&(String::new(), "cache_files".into())].1, 99);
    assert!(last.figures.keys().all(|(_, key)| !key.contains("pattoo")));

    // The operator's view, from the state file (there is no page). The
    // file is rewritten every few seconds: wait for one written after polls.
    let wanted = [
        "running as pid",
        "alpha (command",
        "broken (command",
        "polls, 0 failed",
        "next tick in",
        "cache: ",
        "NOT reachable",
        "last post",
    ];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, text) = status(&agent);
        assert_eq!(code, Some(0), "{text}");
        let broken_failing = text
            .lines()
            .any(|line| line.contains("broken (command") && !line.contains(" 0 failed"));
        // The server is down: alpha's bodies are all cached, none delivered.
        let alpha_cached = text.lines().any(|line| {
            line.contains("alpha (command")
                && line.contains("; 0 bodies delivered, ")
                && !line.contains(", 0 cached")
        });
        if broken_failing && alpha_cached && wanted.iter().all(|w| text.contains(w)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {wanted:?}, broken failing and alpha's bodies cached:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The server comes back: cached bodies, self-monitoring ones among
    // them, reach it and the figures say so.
    server.resume(Mode::Accept).await;
    let received = wait_until("self-monitoring seeing the server back", || {
        server
            .received()
            .iter()
            .filter_map(|r| Own::parse(&r.bytes))
            .find(|own| {
                own.figures
                    .get(&(String::new(), "server_reachable".to_owned()))
                    .is_some_and(|v| v.0 == 1.0)
                    && own.get("", "delivery_bodies_replayed") > 0.0
            })
    });
    assert!(received.get("", "delivery_bodies_replayed") > 0.0);

    assert!(agent.terminate().success());
    assert!(
        state_file(&agent).is_none(),
        "a clean stop removes the state file"
    );
    let (code, text) = status(&agent);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("not running"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_page_serves_the_same_figures_and_health_and_status_reads_it() {
    let server = TestServer::start().await;
    let (mut agent, notify) = start_notified_with(
        &server,
        |d| alpha(d) + &broken_poller(d),
        Launch {
            settings: WATCHED,
            ..Launch::default()
        },
    );
    notify.wait_ready();
    let address = wait_until("the page's address in the state file", || {
        state_file(&agent)?["metrics_listen"]
            .as_str()
            .map(str::to_owned)
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{address}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // A self-monitoring body first, then the page: every figure of the
    // body is on the page, under the same poller, and no counter there is
    // smaller (they only grow).
    let own = wait_until("a self-monitoring body at the server", || {
        let own: Vec<Own> = server
            .received()
            .iter()
            .filter_map(|r| Own::parse(&r.bytes))
            .collect();
        own.into_iter()
            .find(|o| o.get("broken", "poller_polls_failed") >= 1.0)
    });
    let page = client
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let text = page.bytes().await.unwrap();
    let scraped =
        pattoo_agentd::telemetry::metrics_page::parse(&text).expect("valid Prometheus text");
    for ((poller, key), (value, data_type)) in &own.figures {
        let group = scraped
            .groups
            .iter()
            .find(|g| g.poller.as_ref().map_or("", |p| p.0.as_str()) == poller)
            .unwrap_or_else(|| panic!("no {poller:?} on the page"));
        let figure = group
            .figures
            .iter()
            .find(|f| &f.key == key)
            .unwrap_or_else(|| panic!("{poller}/{key} not on the page"));
        let counter = *data_type == 64;
        assert_eq!(
            figure.kind == pattoo_agentd::telemetry::figures::Kind::Counter,
            counter,
            "{key}"
        );
        if counter {
            assert!(
                figure.value.as_f64() >= *value,
                "{key}: page {:?} < body {value}",
                figure.value
            );
        }
        if key == "poller_datapoints_posted" && poller == "broken" {
            assert_eq!(figure.value.as_f64(), 0.0);
        }
    }
    let (code, text) = status(&agent);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("running as pid {}, up ", agent.child.id()))
            && text.contains(&format!("figures from http://{address}/metrics")),
        "{text}"
    );
    assert!(text.contains("health: ok"), "{text}");
    assert!(text.contains("broken (command"), "{text}");

    assert!(agent.terminate().success());
}

/// `reload --pid PID` on the configuration in `dir`.
fn reload_command(dir: &Path, pid: u32) -> std::process::Output {
    common::agentd(dir)
        .arg("reload")
        .arg("--pid")
        .arg(pid.to_string())
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap()
}

/// A `sleep` child: some process of ours that is not the agent.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(Command::new("sleep").arg("600").spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGHUP would have ended it.
    fn assert_alive(&mut self) {
        assert!(
            self.0.try_wait().unwrap().is_none(),
            "the sleep was signalled and ended"
        );
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A configuration with a daemon directory whose lock file names `pid`,
/// as a killed agent leaves it once its pid is reused; `settings` are more
/// agent settings. No agent runs.
fn stopped_agent(pid: Option<u32>, settings: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_pattoo_yaml(dir.path(), 9);
    write_agentd(dir.path(), settings, &alpha(dir.path()), 2000);
    let daemon = dir.path().join("daemon");
    std::fs::create_dir(&daemon).unwrap();
    if let Some(pid) = pid {
        std::fs::write(daemon.join("pattoo-agentd.lock"), pid.to_string()).unwrap();
    }
    dir
}

#[test]
fn reload_with_no_agent_running_signals_nothing_even_the_process_the_lock_file_names() {
    let mut sleeper = Sleeper::start();
    for lock in [None, Some(sleeper.pid())] {
        let dir = stopped_agent(lock, "");
        let output = reload_command(dir.path(), sleeper.pid());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("not signalling process {}", sleeper.pid()))
                && stderr.contains("no pattoo-agentd runs for this configuration"),
            "{stderr}"
        );
        if lock.is_some() {
            assert!(stderr.contains("is not a pattoo-agentd"), "{stderr}");
        }
        sleeper.assert_alive();
    }
}

/// Another program on the metrics page's port: a plausible page and a
/// healthy `/health` to whatever asks, without knowing any token.
fn stranger_page() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = if head.starts_with(b"GET /health") {
                "ok\n".to_owned()
            } else {
                "# TYPE pattoo_agentd_process_uptime_seconds gauge\n\
                 pattoo_agentd_process_uptime_seconds 86400\n\
                 # TYPE pattoo_agentd_poller_polls counter\n\
                 pattoo_agentd_poller_polls_total{poller=\"\x1b[2Jfake\",poller_type=\"command\"} 5\n# EOF\n"
                    .to_owned()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn status_does_not_take_another_program_on_the_metrics_port_for_a_stopped_agent() {
    let page = stranger_page();
    let settings = format!("  metrics_listen: {page}\n");
    let sleeper = Sleeper::start();
    // No agent ever ran; then a killed agent's lock file whose pid another
    // process now has.
    for lock in [None, Some(sleeper.pid())] {
        let dir = stopped_agent(lock, &settings);
        let (code, text) = status_in(dir.path());
        assert_eq!(code, Some(3), "{text}");
        assert!(text.contains("pattoo-agentd is not running"), "{text}");
        assert!(!text.contains("fake"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_always_split_into_parts_is_said_once_at_info_not_every_poll() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Six targets of forty datapoints: several 4 KiB bodies every poll.
    let targets: Vec<String> = (0..6)
        .map(|t| {
            let points: Vec<String> = (0..40)
                .map(|i| format!("{{\"key\":\"split_{t}_{i}\",\"value\":{i}}}"))
                .collect();
            format!(
                "{{\"target\":\"device-{t}\",\"datapoints\":[{}]}}",
                points.join(",")
            )
        })
        .collect();
    let document = format!("{{\"targets\":[{}]}}", targets.join(","));
    let agent = start_with(
        server.addr.port(),
        |d| {
            let path = d.join("split.sh");
            common::write_executable(&path, &format!("#!/bin/sh\necho '{document}'\n"));
            poller("split", &path)
        },
        None,
        dir,
        Launch {
            settings: "    max_body_bytes: 4096\n",
            ..Launch::default()
        },
    );
    wait_until("three polls posted", || {
        (bodies_with(&server, "split_5_39") >= 3).then_some(())
    });
    let logged = agent.stderr();
    assert_eq!(
        logged.matches("posting it in parts").count(),
        1,
        "the split is said at info once, not every poll:\n{logged}"
    );
    assert!(
        logged.contains("poll posted in parts, as the last one was"),
        "later polls say it at debug:\n{logged}"
    );
}
