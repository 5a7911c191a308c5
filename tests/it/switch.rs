//! `pattoo-agentd switch-from-python` against a fake host root laid out as
//! the pattoo-agents installer leaves it: units in /lib/systemd/system with
//! `Environment="PATTOO_CONFIGDIR=..."` and `User=`, the configuration in
//! /etc/pattoo, agent ids and the cache under the directories pattoo.yaml
//! names.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common;
use crate::common::modbus_sim::{Sim, Unit};
use crate::common::receiver::{now_ms, Mode, TestServer};

/// A unit as `install_systemd.py` writes it from its template.
fn python_unit(program: &str, config: &str) -> String {
    format!(
        "[Unit]\nDescription={program} daemon\nWants=network.target\nAfter=network.target\n\n\
         [Service]\nEnvironment=\"PATTOO_CONFIGDIR={config}\"\nRuntimeDirectoryPreserve=yes\n\
         RuntimeDirectory=pattoo\nUser=pattoo\nGroup=pattoo\nExecStart=\n\
         ExecStart=/opt/pattoo-agents/bin/{program}.py --start\nType=forking\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

const AGENT_ID: &str = "7a2f0c1e9b3d4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f";

/// Lays out the fake root: a modbustcpd agent polling `device`, a
/// bacnetipd agent whose file is missing and a site's own agent, weatherd,
/// that no drop-in stands for.
fn fake_root(root: &Path, device: &str, config: &str) -> u64 {
    fake_root_with(root, device, config, 9, 300)
}

/// [`fake_root`] with the server on loopback `port` and modbustcpd polling
/// every `interval` seconds.
fn fake_root_with(root: &Path, device: &str, config: &str, port: u16, interval: u32) -> u64 {
    let units = root.join("lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for program in [
        "pattoo_agent_modbustcpd",
        "pattoo_agent_bacnetipd",
        "pattoo_agent_weatherd",
    ] {
        std::fs::write(
            units.join(format!("{program}.service")),
            python_unit(program, config),
        )
        .unwrap();
    }
    let config = root.join(config.trim_start_matches('/'));
    std::fs::create_dir_all(&config).unwrap();
    crate::common::write_pattoo_yaml(&config, &root.join("var/lib/pattoo"), port);
    std::fs::write(
        config.join("pattoo_agent_modbustcpd.yaml"),
        format!(
            "pattoo_agent_modbustcpd:\n  polling_interval: {interval}\n  polling_groups:\n    \
             - group_name: plant\n      ip_targets:\n        - {device}\n      \
             input_registers:\n        - 30001\n        - 30002\n      \
             holding_registers:\n        - 40001\n"
        ),
    )
    .unwrap();
    let daemon = root.join("var/lib/pattoo/daemon/agent_id");
    std::fs::create_dir_all(&daemon).unwrap();
    std::fs::write(daemon.join("pattoo_agent_modbustcpd.agent_id"), AGENT_ID).unwrap();
    let cache = root.join("var/lib/pattoo/cache").join(AGENT_ID);
    std::fs::create_dir_all(&cache).unwrap();
    let mut bytes = 0;
    for ms in [1_700_000_000_000u64, 1_700_000_300_000] {
        let body = format!(
                "{{\"pattoo_agent_id\":\"{AGENT_ID}\",\"pattoo_agent_polled_target\":\"x\",\
                 \"pattoo_agent_program\":\"pattoo_agent_modbustcpd\",\"pattoo_agent_hostname\":\"h\",\
                 \"pattoo_agent_timestamp\":{ms},\"pattoo_agent_polling_interval\":300000,\
                 \"pattoo_datapoints\":{{\"key_value_pairs\":{{}},\"datapoint_pairs\":[]}}}}"
        );
        bytes += body.len() as u64;
        std::fs::write(cache.join(format!("{ms}_{AGENT_ID}.json")), body).unwrap();
    }
    bytes
}

fn switch(root: &Path, args: &[&str]) -> std::process::Output {
    switch_with(root, args, Path::new("/nonexistent/systemctl"))
}

fn switch_with(root: &Path, args: &[&str], systemctl: &Path) -> std::process::Output {
    common::pattoo_agentd()
        .env("PATTOO_SYSTEMCTL", systemctl)
        .arg("switch-from-python")
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("PATTOO_CONFIGDIR")
        .output()
        .unwrap()
}

/// The child polls the simulator this test's runtime serves, so the
/// runtime has a thread of its own for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_names_the_drop_ins_their_datapoints_the_kept_ids_the_cache_and_the_commands() {
    let sim = Sim::start([(0, Unit::default().input(0, &[7, 8]).holding(0, &[9]))]).await;
    let root = tempfile::tempdir().unwrap();
    let bytes = fake_root(root.path(), &sim.address(), "/etc/pattoo");
    let output = switch(root.path(), &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan = String::from_utf8(output.stdout)
        .unwrap()
        .replace(&root.path().display().to_string(), "{root}")
        .replace(&format!(", {bytes} bytes,"), ", BYTES bytes,");
    assert_eq!(
        plan,
        "Python agents on this host:\n\
         \x20 pattoo_agent_bacnetipd.service  (/lib/systemd/system/pattoo_agent_bacnetipd.service; user pattoo; PATTOO_CONFIGDIR /etc/pattoo)\n\
         \x20 pattoo_agent_modbustcpd.service  (/lib/systemd/system/pattoo_agent_modbustcpd.service; user pattoo; PATTOO_CONFIGDIR /etc/pattoo)\n\
         \x20 pattoo_agent_weatherd.service  (/lib/systemd/system/pattoo_agent_weatherd.service; user pattoo; PATTOO_CONFIGDIR /etc/pattoo)\n\
         Configuration directory: /etc/pattoo\n\
         Drop-ins pattoo-agentd will read:\n\
         \x20 pattoo_agent_modbustcpd.yaml: poller pattoo_agent_modbustcpd, 3 datapoint(s) in one poll\n\
         Not taken over:\n\
         \x20 pattoo_agent_bacnetipd: pattoo_agent_bacnetipd.yaml is not in /etc/pattoo\n\
         \x20 pattoo_agent_weatherd: pattoo-agentd reads no file in its place; it keeps running unless you stop it\n\
         Agent ids (kept, so the server keeps the same charts):\n\
         \x20 {root}/var/lib/pattoo/daemon/agent_id/pattoo_agent_modbustcpd.agent_id: kept\n\
         Cache: 2 cached body(ies), BYTES bytes, in {root}/var/lib/pattoo/cache, replayed once the server answers\n\
         Commands that switch (--apply runs them; nothing is deleted):\n\
         \x20 systemctl stop pattoo_agent_modbustcpd.service\n\
         \x20 systemctl disable pattoo_agent_modbustcpd.service\n\
         \x20 systemctl enable pattoo-agentd.service\n\
         \x20 systemctl restart pattoo-agentd.service\n"
    );
}

/// A systemctl that logs its arguments, one call a line.
fn fake_systemctl(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = dir.join("systemctl.log");
    let script = dir.join("systemctl");
    crate::common::write_executable(
        &script,
        &format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
    );
    (script, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_stops_the_python_units_points_the_service_at_their_directory_and_undo_reverses_it() {
    let sim = Sim::start([(0, Unit::default().input(0, &[7, 8]).holding(0, &[9]))]).await;
    let root = tempfile::tempdir().unwrap();
    fake_root(root.path(), &sim.address(), "/opt/pattoo/etc");
    let tools = tempfile::tempdir().unwrap();
    let (systemctl, log) = fake_systemctl(tools.path());

    let refused = switch_with(root.path(), &["--apply"], &systemctl);
    assert!(!refused.status.success(), "applied without --yes on a pipe");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("give --yes"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!log.exists(), "systemctl ran without confirmation");

    // This systemctl starts nothing: the first posts are not waited for.
    let applied = switch_with(
        root.path(),
        &["--apply", "--yes", "--wait", "0"],
        &systemctl,
    );
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "stop pattoo_agent_modbustcpd.service\n\
         disable pattoo_agent_modbustcpd.service\n\
         daemon-reload\n\
         enable pattoo-agentd.service\n\
         restart pattoo-agentd.service\n"
    );
    let drop_in = root
        .path()
        .join("etc/systemd/system/pattoo-agentd.service.d/switch-from-python.conf");
    assert!(
        std::fs::read_to_string(&drop_in)
            .unwrap()
            .ends_with("[Service]\nEnvironment=PATTOO_CONFIGDIR=/opt/pattoo/etc\n"),
        "the drop-in points the service at the Python agents' directory"
    );

    std::fs::remove_file(&log).unwrap();
    let undone = switch_with(root.path(), &["--undo", "--yes"], &systemctl);
    assert!(
        undone.status.success(),
        "{}",
        String::from_utf8_lossy(&undone.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "disable --now pattoo-agentd.service\n\
         daemon-reload\n\
         enable --now pattoo_agent_modbustcpd.service\n"
    );
    assert!(!drop_in.exists(), "undo removes the drop-in it wrote");
    assert!(
        root.path()
            .join("opt/pattoo/etc/pattoo_agent_modbustcpd.yaml")
            .is_file()
            && root
                .path()
                .join("var/lib/pattoo/daemon/agent_id/pattoo_agent_modbustcpd.agent_id")
                .is_file(),
        "nothing else is deleted"
    );
    let again = switch_with(root.path(), &["--undo", "--yes"], &systemctl);
    assert!(!again.status.success(), "a second undo has nothing to undo");
}

/// A systemctl that logs its arguments and, asked to enable and start
/// pattoo-agentd, starts the real one on `config_dir` in the background,
/// as systemd would, writing its pid to `agentd.pid` beside itself.
fn starting_systemctl(dir: &Path, config_dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("systemctl.log");
    let script = dir.join("systemctl");
    crate::common::write_executable(
        &script,
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{log}'\n\
             if [ \"$*\" = 'restart pattoo-agentd.service' ]; then\n  \
             '{exe}' --config-dir '{config}' run </dev/null >>'{dir}/agentd.log' 2>&1 &\n  \
             echo $! > '{dir}/agentd.pid'\nfi\n",
            log = log.display(),
            exe = common::AGENTD,
            config = config_dir.display(),
            dir = dir.display(),
        ),
    );
    (script, log)
}

/// The agent a [`starting_systemctl`] started, killed when dropped.
struct Started(PathBuf);

impl Started {
    fn pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(&self.0).ok()?;
        Some(Pid::from_raw(text.trim().parse().ok()?))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// `switch-from-python --apply --yes --wait WAIT` on a thread of its own,
/// so the simulator and the server keep this runtime's threads.
async fn apply_and_wait(root: &Path, systemctl: &Path, wait: &str) -> std::process::Output {
    let (root, systemctl, wait) = (root.to_owned(), systemctl.to_owned(), wait.to_owned());
    tokio::task::spawn_blocking(move || {
        switch_with(&root, &["--apply", "--yes", "--wait", &wait], &systemctl)
    })
    .await
    .unwrap()
}

/// What a test of the first posts switches on: a simulator for modbustcpd
/// to poll, the server it posts to, the fake root (its configuration in
/// /etc/pattoo) and a [`starting_systemctl`] in `tools`.
struct FirstPost {
    /// First, so the agent is killed before its directories go.
    agent: Started,
    systemctl: PathBuf,
    /// The systemctl's log: one call a line.
    log: PathBuf,
    tools: tempfile::TempDir,
    root: tempfile::TempDir,
    server: TestServer,
    _sim: Sim,
}

impl FirstPost {
    /// modbustcpd polls every `interval` seconds.
    async fn set_up(interval: u32) -> FirstPost {
        let sim = Sim::start([(0, Unit::default().input(0, &[7, 8]).holding(0, &[9]))]).await;
        let server = TestServer::start().await;
        let root = tempfile::tempdir().unwrap();
        let port = server.addr.port();
        fake_root_with(root.path(), &sim.address(), "/etc/pattoo", port, interval);
        let tools = tempfile::tempdir().unwrap();
        let (systemctl, log) = starting_systemctl(tools.path(), &root.path().join("etc/pattoo"));
        FirstPost {
            agent: Started(tools.path().join("agentd.pid")),
            systemctl,
            log,
            tools,
            root,
            server,
            _sim: sim,
        }
    }

    fn config_dir(&self) -> PathBuf {
        self.root.path().join("etc/pattoo")
    }

    /// What the started agent wrote to stdout and stderr.
    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.tools.path().join("agentd.log")).unwrap_or_default()
    }

    /// The stdout of an `--apply` that succeeded and started the agent;
    /// fails the test, with all that was said, otherwise.
    fn applied(&self, applied: &std::process::Output) -> String {
        let stdout = String::from_utf8_lossy(&applied.stdout).into_owned();
        assert!(
            applied.status.success(),
            "{stdout}\n{}\nagent log:\n{}",
            String::from_utf8_lossy(&applied.stderr),
            self.agent_log()
        );
        assert!(self.agent.pid().is_some(), "the agent was started");
        stdout
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_waits_until_the_first_poll_of_each_drop_in_has_posted_and_says_so() {
    let host = FirstPost::set_up(1).await;
    let port = host.server.addr.port();
    let started_ms = now_ms();

    let applied = apply_and_wait(host.root.path(), &host.systemctl, "60s").await;
    let stdout = host.applied(&applied);
    assert!(
        stdout.ends_with(&format!(
            "waiting for the first poll of each drop-in to post (up to 1m after it is due; --wait):\n\
             \x20 pattoo_agent_modbustcpd: OK: posted to http://127.0.0.1:{port}\n\
             every drop-in posted its first poll\n"
        )),
        "{stdout}"
    );
    // What was said is so: the server has a fresh poll of the drop-in.
    let received = host.server.received();
    let polled = received.iter().any(|body| {
        body.agent_id == AGENT_ID
            && body.timestamp_ms >= started_ms - 1000
            && String::from_utf8_lossy(&body.bytes).contains(
                "[\"pattoo_agent_program\",\"pattoo_agent_modbustcpd\"],\"6\":[\"pattoo_key\",\"input_register_30001\"]",
            )
    });
    assert!(
        polled,
        "no fresh modbustcpd body reached the server: {:?}",
        received
            .iter()
            .map(|body| String::from_utf8_lossy(&body.bytes))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_names_the_drop_in_whose_first_post_the_server_refused_and_undoes_nothing() {
    let host = FirstPost::set_up(1).await;
    host.server.set_mode(Mode::Status(500));
    let port = host.server.addr.port();

    let applied = apply_and_wait(host.root.path(), &host.systemctl, "3s").await;
    let stdout = String::from_utf8_lossy(&applied.stdout);
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(!applied.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|line| line.starts_with("  pattoo_agent_modbustcpd: "))
        .unwrap_or_else(|| panic!("no line for the drop-in: {stdout}"));
    assert!(
        line.starts_with(&format!(
            "  pattoo_agent_modbustcpd: FAILED: post to http://127.0.0.1:{port} failed (last post: "
        )) && line.contains("500")
            && line.ends_with("; the body is cached and replayed once the server takes it"),
        "{line}"
    );
    assert!(
        stderr.contains("pattoo-agentd keeps running")
            && stderr.contains("`pattoo-agentd switch-from-python --undo`"),
        "{stderr}"
    );
    // Nothing was undone: pattoo-agentd still runs, the Python unit stays stopped.
    assert_eq!(
        std::fs::read_to_string(&host.log).unwrap(),
        "stop pattoo_agent_modbustcpd.service\n\
         disable pattoo_agent_modbustcpd.service\n\
         enable pattoo-agentd.service\n\
         restart pattoo-agentd.service\n"
    );
    let pid = host.agent.pid().expect("the agent was started");
    assert!(kill(pid, None).is_ok(), "the agent was stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_says_ok_for_a_drop_in_whose_refused_first_post_was_replayed_within_the_wait() {
    // Polled every 30 s and waited for 20 s after the first poll: the
    // first body is the only one that can reach the server in the wait.
    let host = FirstPost::set_up(30).await;
    host.server.set_mode(Mode::Status(503));
    let port = host.server.addr.port();
    std::fs::write(
        host.config_dir().join("pattoo_agentd.yaml"),
        "pattoo_agentd:\n  delivery:\n    retry_initial_ms: 100\n    retry_max_ms: 500\n",
    )
    .unwrap();
    let started_ms = now_ms();

    let applying = {
        let (root, systemctl) = (host.root.path().to_owned(), host.systemctl.clone());
        tokio::task::spawn_blocking(move || {
            switch_with(&root, &["--apply", "--yes", "--wait", "20s"], &systemctl)
        })
    };
    // The server takes bodies again once the first poll's body is cached.
    let cache = host.root.path().join("var/lib/pattoo/cache").join(AGENT_ID);
    let cached_fresh = || {
        std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .any(|entry| {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                name.ends_with(".json")
                    && name
                        .split('_')
                        .next()
                        .and_then(|ms| ms.parse::<u64>().ok())
                        .is_some_and(|ms| ms >= started_ms - 1000)
            })
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !cached_fresh() {
        assert!(
            std::time::Instant::now() < until && !applying.is_finished(),
            "the first poll's body was never cached; agent log:\n{}",
            host.agent_log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    host.server.set_mode(Mode::Accept);

    let applied = applying.await.unwrap();
    let stdout = host.applied(&applied);
    assert!(
        stdout.ends_with(&format!(
            "\x20 pattoo_agent_modbustcpd: OK: posted to http://127.0.0.1:{port} after a retry (the first post failed; the cached body was replayed)\n\
             every drop-in posted its first poll\n"
        )),
        "{stdout}"
    );
    // What was said is so: the server has the replayed poll.
    let replayed = host.server.received().iter().any(|body| {
        body.agent_id == AGENT_ID
            && body.timestamp_ms >= started_ms - 1000
            && String::from_utf8_lossy(&body.bytes).contains("input_register_30001")
    });
    assert!(replayed, "the server has no fresh modbustcpd body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_by_root_the_plan_polls_as_the_daemon_directory_owner_so_the_service_can_read_the_id_it_makes(
) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root polls as another user");
        return;
    }
    let sim = Sim::start([(0, Unit::default().input(0, &[7, 8]).holding(0, &[9]))]).await;
    let root = tempfile::tempdir().unwrap();
    fake_root(root.path(), &sim.address(), "/etc/pattoo");
    // The service's user (here nobody) owns the daemon directory, which
    // has no agent id yet, and can read the configuration.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = root.path().join("var/lib/pattoo/daemon");
    let id_file = daemon.join("agent_id/pattoo_agent_modbustcpd.agent_id");
    std::fs::remove_file(&id_file).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&daemon)
        .status()
        .unwrap();
    assert!(chown.success());

    let output = switch(root.path(), &[]);
    let plan = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{plan}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        plan.contains("pattoo_agent_modbustcpd, 3 datapoint(s) in one poll")
            && plan.contains("pattoo_agent_modbustcpd.agent_id: none yet; made at the first poll"),
        "{plan}"
    );
    let made = std::fs::metadata(&id_file).expect("the poll made the agent id file");
    assert_eq!((made.uid(), made.gid()), (65534, 65534));
}
