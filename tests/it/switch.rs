//! `pattoo-agentd switch-from-python` against a fake host root laid out as
//! the pattoo-agents installer leaves it: units in /lib/systemd/system with
//! `Environment="PATTOO_CONFIGDIR=..."` and `User=`, the configuration in
//! /etc/pattoo, agent ids and the cache under the directories pattoo.yaml
//! names.

use std::path::Path;
use std::process::Command;

use crate::common::modbus_sim::{Sim, Unit};

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
    crate::common::write_pattoo_yaml(&config, &root.join("var/lib/pattoo"), 9);
    std::fs::write(
        config.join("pattoo_agent_modbustcpd.yaml"),
        format!(
            "pattoo_agent_modbustcpd:\n  polling_interval: 300\n  polling_groups:\n    \
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
    Command::new(env!("CARGO_BIN_EXE_pattoo-agentd"))
        .env("PATTOO_SYSTEMCTL", systemctl)
        .stdin(std::process::Stdio::null())
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
         \x20 systemctl enable --now pattoo-agentd.service\n"
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

    let applied = switch_with(root.path(), &["--apply", "--yes"], &systemctl);
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
         enable --now pattoo-agentd.service\n"
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
