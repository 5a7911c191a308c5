//! The Python SNMP agents' files, left unchanged in the configuration
//! directory, post exactly what the Python agents posted for the same
//! devices: the golden vectors of `tests/data/snmp` (made by running the
//! real agents against the same snmpsim data) are reproduced to the byte,
//! over SNMPv2c and SNMPv3.
#![cfg(feature = "snmp")]

use crate::common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::snmpsim::SnmpSim;
use pattoo_agentd::config;
use pattoo_agentd::model::{self, AgentContext};
use pattoo_agentd::pollers::{Poller, PollerEnv};
use serde_json::Value;

const DEVICE1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const SWITCH_V3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn vector(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("tests/data/snmp/{name}.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The vector's Python file with each auth group's port replaced by the one
/// snmpsim got for its target (the vectors ran on one fixed port).
fn python_file(file: &str, sim: &SnmpSim) -> String {
    let text = std::fs::read_to_string(format!("tests/data/snmp/config/{file}")).unwrap();
    let mut doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    for group in doc["auth_groups"].as_sequence_mut().unwrap() {
        let target = group["ip_targets"][0].as_str().unwrap().to_owned();
        let port = match target.as_str() {
            "127.0.0.2" => sim.port(SWITCH_V3),
            // Nothing listens on 127.0.0.3 or 127.0.0.4 at any port.
            _ => sim.port(DEVICE1),
        };
        group["snmp_port"] = serde_norway::Value::from(port);
    }
    serde_norway::to_string(&doc).unwrap()
}

/// Python's `json.dumps` of the same JSON value: the text the Python
/// agent posts, integers of any size and floats as Python writes them.
fn as_python_writes_it(json: &[u8]) -> String {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys; sys.stdout.write(json.dumps(json.loads(sys.stdin.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(json).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// (target, key, value, data type, checksum) of each datapoint of a body.
fn summary(body: &Value) -> Vec<String> {
    common::body::datapoints(body)
        .into_iter()
        .map(|pairs| {
            let get = |key: &str| {
                common::body::value_of(&pairs, key)
                    .map(Value::to_string)
                    .unwrap_or_default()
            };
            let metadata: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| !k.starts_with("pattoo_"))
                .map(|(k, v)| format!("{k:?}={v}"))
                .collect();
            format!(
                "{} {} {} type {} [{}] {}",
                get("pattoo_agent_polled_target"),
                get("pattoo_key"),
                get("pattoo_value"),
                get("pattoo_data_type"),
                metadata.join(" "),
                get("pattoo_checksum")
            )
        })
        .collect()
}

async fn reproduces(name: &str, file: &str) {
    let expected = vector(name);
    let sim = SnmpSim::start(Path::new("tests/data/snmp/data"), &[DEVICE1, SWITCH_V3]);
    let dir = tempfile::tempdir().unwrap();
    common::modbus::write_pattoo_yaml(dir.path());
    std::fs::write(dir.path().join(file), python_file(file, &sim)).unwrap();

    let settings = config::load(dir.path()).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(settings.pollers.len(), 1);
    let poller_settings = &settings.pollers[0];
    let program = expected["agent_program"].as_str().unwrap();
    assert_eq!(poller_settings.agent_program, program);
    assert_eq!(
        poller_settings.polling_interval.as_millis() as u64,
        expected["polling_interval_ms"].as_u64().unwrap()
    );

    let fixed = &expected["fixed"];
    let time_ms = fixed["time_ms"].as_u64().unwrap();
    let env = PollerEnv {
        hostname: fixed["agent_hostname"].as_str().unwrap().to_owned(),
    };
    let mut poller = Poller::new(poller_settings, &env).unwrap();
    let mut targets = poller
        .poll()
        .await
        .expect("a poll that read something")
        .readings()
        .expect("readings");
    // The vectors were made at a fixed time; timestamps enter no checksum.
    for datapoint in targets.iter_mut().flat_map(|t| t.datapoints.iter_mut()) {
        datapoint.timestamp_ms = time_ms;
    }
    let agent = AgentContext {
        agent_id: fixed["agent_id"].as_str().unwrap(),
        agent_program: program,
        hostname: &env.hostname,
        polling_interval_ms: expected["polling_interval_ms"].as_u64().unwrap(),
    };
    let outcome = model::build(&agent, time_ms, &targets);
    // The same (address, instance) listed twice in a target: the first
    // one wins, as in Python. Nothing else may be dropped.
    assert!(
        outcome
            .dropped
            .iter()
            .all(|d| d.reason == model::DropReason::Duplicate),
        "{:#?}",
        outcome.dropped
    );
    let body = outcome.body.expect("a body");
    let got: Value = serde_json::from_slice(&body.json).unwrap();

    // Datapoint by datapoint first, for a readable difference.
    assert_eq!(
        summary(&got).join("\n"),
        summary(&expected["expected_body"]).join("\n"),
        "{name}: datapoints"
    );
    assert_eq!(
        as_python_writes_it(&body.json),
        expected["expected_body_text"].as_str().unwrap(),
        "{name}: the body's text as Python writes it"
    );
}

#[tokio::test]
async fn pattoo_agent_snmpd_yaml_posts_exactly_what_the_python_agent_posted() {
    reproduces("snmpd", "pattoo_agent_snmpd.yaml").await;
}

#[tokio::test]
async fn pattoo_agent_snmp_ifmibd_yaml_posts_exactly_what_the_python_agent_posted() {
    reproduces("ifmibd", "pattoo_agent_snmp_ifmibd.yaml").await;
}

#[test]
fn check_describes_snmp_pollers_without_showing_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    common::modbus::write_pattoo_yaml(dir.path());
    for file in ["pattoo_agent_snmpd.yaml", "pattoo_agent_snmp_ifmibd.yaml"] {
        std::fs::copy(
            format!("tests/data/snmp/config/{file}"),
            dir.path().join(file),
        )
        .unwrap();
    }
    let community = dir.path().join("community");
    std::fs::write(&community, "s3cret-community\n").unwrap();
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        format!(
            "pattoo_agentd:\n  pollers:\n    - name: switches\n      type: snmp\n      targets: [\"192.0.2.10\"]\n      community: {{file: {}}}\n      preset: if_mib\n",
            community.display()
        ),
    )
    .unwrap();
    let output = common::agentd(dir.path()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    for shown in [
        "switches (snmp",
        "table IF-MIB",
        "SNMPv2c with the community from ",
        "pattoo_agent_snmpd (snmp, every 300s, as pattoo_agent_snmpd)",
        "127.0.0.2:11161 (SNMPv3 user \"pattoo-v3\" authPriv (SHA, passphrase (hidden, in the file); AES, passphrase (hidden, in the file)))",
        "pattoo_agent_snmp_ifmibd (snmp, every 60s, as pattoo_agent_snmp_ifmibd)",
        "IF-MIB walks",
    ] {
        assert!(text.contains(shown), "{shown:?} in:\n{text}");
    }
    for secret in ["s3cret-community", "authpass123", "privpass123", "device1"] {
        assert!(!text.contains(secret), "{secret:?} shown:\n{text}");
    }
}
