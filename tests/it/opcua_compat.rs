//! The Python OPC UA agent's file, left unchanged in the configuration
//! directory, posts exactly what the Python agent posted against the same
//! asyncua server (tests/data/opcua: the file, and the datapoints the
//! real agent posted, SPEC-opcua-compat.md §6).
#![cfg(feature = "opcua")]

use crate::common;
use crate::common::Readings;

use common::asyncua;
use pattoo_agentd::config;
use pattoo_agentd::model::{self, AgentContext};
use pattoo_agentd::pollers::{Poller, PollerEnv};
use serde_json::Value;

const AGENT_ID: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
const HOSTNAME: &str = "vectors.example.org";

/// The recorded file with the server's port where it ran on 48400, and a
/// closed port where nothing listened (48401).
fn python_file(server_port: u16) -> String {
    let text = std::fs::read_to_string("tests/data/opcua/pattoo_agent_opcuad.yaml").unwrap();
    text.replace("48400", &server_port.to_string())
        .replace("48401", &asyncua::closed_port().to_string())
}

#[tokio::test]
async fn pattoo_agent_opcuad_yaml_posts_exactly_what_the_python_agent_posted() {
    let Some(server) = asyncua::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path(), dir.path(), 1);
    std::fs::write(
        dir.path().join("pattoo_agent_opcuad.yaml"),
        python_file(server.port),
    )
    .unwrap();
    let settings = config::load(dir.path()).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(settings.pollers.len(), 1);
    let poller_settings = &settings.pollers[0];
    assert_eq!(poller_settings.agent_program, "pattoo_agent_opcuad");
    assert_eq!(poller_settings.polling_interval.as_secs(), 60);

    let env = PollerEnv {
        hostname: HOSTNAME.to_owned(),
    };
    let mut poller = Poller::new(poller_settings, &env).unwrap();
    let (logs, _guard) = common::logs::capture();
    let targets = poller.readings().await.expect("a poll that read something");
    let agent = AgentContext {
        agent_id: AGENT_ID,
        agent_program: "pattoo_agent_opcuad",
        hostname: HOSTNAME,
        polling_interval_ms: 60_000,
    };
    let outcome = model::build(&agent, 1_600_000_000_000, &targets);
    let body = outcome.body.expect("a body");
    let got: Value = serde_json::from_slice(&body.json).unwrap();
    let expected: Vec<Value> = std::fs::read_to_string("tests/data/opcua/python-datapoints.jsonl")
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let show = |v: &[Value]| {
        v.iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(show(&common::body::as_recorded(&got)), show(&expected));

    // What Python logged and skipped is logged here too, with the node.
    let logs = logs.text();
    for expected in [
        "ns=2;s=Missing",
        "NS=2;S=Temperature",
        "ns=2;s=Label",
        "ns=2;s=Running",
        "localhost",
    ] {
        assert!(logs.contains(expected), "no log names {expected}:\n{logs}");
    }
}
