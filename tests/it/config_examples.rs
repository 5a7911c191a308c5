//! Every example shipped in config/examples is a valid pattoo_agentd.yaml,
//! and the host-metrics script the default configuration runs reads this
//! host for real.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pattoo_agentd::config;
use pattoo_agentd::formats::keyvalue::KeyValueOptions;
use pattoo_agentd::formats::FormatSettings;
use pattoo_agentd::model::Value;
use pattoo_agentd::pollers::command::{CommandPoller, CommandSettings};
use pattoo_agentd::pollers::PollerEnv;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The variables of each `{env: NAME}` secret of `example` (outside
/// comments): `check` refuses a secret that is not there.
fn env_secrets(example: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in example.lines() {
        let code = line.split('#').next().unwrap_or_default();
        for (at, _) in code.match_indices("{env: ") {
            names.push(
                code[at + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    names
}

/// The example with every file secret it names there: each `{file: /path}`
/// (outside comments) is moved into `dir` and written.
fn with_secrets(example: &str, dir: &Path) -> String {
    let mut text = String::new();
    for line in example.lines() {
        let mut line = line.to_owned();
        let code = line.split('#').next().unwrap_or_default().to_owned();
        for (at, _) in code.match_indices("{file: /") {
            let path: String = code[at + 7..].chars().take_while(|c| *c != '}').collect();
            let moved = dir.join(path.trim_start_matches('/').replace('/', "_"));
            std::fs::write(&moved, "example-secret\n").unwrap();
            line = line.replace(&path, &moved.display().to_string());
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

#[test]
fn every_example_configuration_passes_check() {
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo("config/examples"))
        .expect("config/examples exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty());
    let mut names = Vec::new();
    for example in &examples {
        names.extend(env_secrets(&std::fs::read_to_string(example).unwrap()));
    }
    assert!(
        !names.is_empty(),
        "no example reads a secret from the environment"
    );
    let vars: Vec<(&str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "example-secret"))
        .collect();
    if !crate::common::alone::runs_here(
        module_path!(),
        "every_example_configuration_passes_check",
        &vars,
    ) {
        return;
    }
    for example in examples {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().display();
        let text = with_secrets(&std::fs::read_to_string(&example).unwrap(), dir.path());
        std::fs::write(
            dir.path().join("pattoo.yaml"),
            format!(
                "pattoo:\n  log_directory: {state}\n  cache_directory: {state}\n  daemon_directory: {state}\npattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: 20201\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("pattoo_agentd.yaml"), text).unwrap();
        match config::load(dir.path()) {
            Ok(settings) => assert!(
                !settings.pollers.is_empty(),
                "{} configures no poller",
                example.display()
            ),
            Err(errors) => panic!("{}:\n{errors}", example.display()),
        }
    }
}

#[tokio::test]
async fn the_host_metrics_script_reads_load_and_memory_from_proc() {
    let settings = CommandSettings {
        argv: vec![repo("config/scripts/host-metrics").display().to_string()],
        format: FormatSettings::KeyValue(KeyValueOptions::default()),
        timeout: Duration::from_secs(10),
        kill_grace: Duration::from_secs(1),
        max_output_bytes: 65536,
        working_directory: None,
        environment: Default::default(),
        pass_environment: Vec::new(),
        inherit_environment: false,
        target: None,
    };
    let env = PollerEnv {
        hostname: "this-host".to_owned(),
    };
    let targets = CommandPoller::new("host", &settings, &env)
        .poll()
        .await
        .unwrap();
    assert_eq!(targets[0].target, "this-host");
    let value = |key: &str| -> f64 {
        let dp = targets[0]
            .datapoints
            .iter()
            .find(|dp| dp.key == key)
            .unwrap_or_else(|| panic!("no {key}"));
        match dp.value {
            Value::Int(v) => v as f64,
            Value::UInt(v) => v as f64,
            Value::Float(v) => v,
            ref other => panic!("{key} = {other:?}"),
        }
    };
    assert!(value("load_1m") >= 0.0);
    assert!(value("processes_total") >= 1.0);
    assert!(value("memory_total_bytes") > 1_000_000.0);
    assert!(value("memory_available_bytes") <= value("memory_total_bytes"));
    assert!((0.0..=100.0).contains(&value("memory_used_percent")));
}

/// The README's first command: the repository's default configuration,
/// run from the repository root, polls this host and prints real readings,
/// then the agent's own figures (self-monitoring is on by default).
#[test]
fn the_default_configuration_polls_this_host_from_the_repository_root() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pattoo-agentd"))
        .current_dir(repo(""))
        .args([
            "--config-dir",
            "config",
            "once",
            "--print",
            "--self-monitoring",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let bodies: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one body per line"))
        .collect();
    assert_eq!(
        bodies.len(),
        2,
        "the host poller's body, then self-monitoring"
    );
    let keys = |body: &serde_json::Value| -> Vec<String> {
        body["pattoo_datapoints"]["key_value_pairs"]
            .as_object()
            .unwrap()
            .values()
            .filter(|pair| pair[0] == "pattoo_key")
            .map(|pair| pair[1].as_str().unwrap().to_owned())
            .collect()
    };
    let host = keys(&bodies[0]);
    for key in ["load_1m", "memory_total_bytes", "uptime_seconds"] {
        assert!(
            host.contains(&key.to_owned()),
            "{key} missing from {host:?}"
        );
    }
    let own = keys(&bodies[1]);
    for key in [
        "poller_polls",
        "poller_datapoints_posted",
        "cache_files",
        "process_resident_bytes",
    ] {
        assert!(own.contains(&key.to_owned()), "{key} missing from {own:?}");
    }
    assert_ne!(
        bodies[0]["pattoo_agent_id"], bodies[1]["pattoo_agent_id"],
        "self-monitoring posts under its own agent id"
    );
}
