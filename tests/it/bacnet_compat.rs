//! The Python BACnet/IP agent's `pattoo_agent_bacnetipd.yaml`, left
//! unchanged in the configuration directory, posts exactly what the Python
//! agent posted polling the same BAC0 simulator: the datapoints recorded in
//! `tests/data/bacnet/bacnet-observed.jsonl` (keys, values widened from
//! single precision, data types, metadata and its order, checksums,
//! targets).
#![cfg(feature = "bacnet")]

use crate::common;
use crate::common::Readings;

use std::net::Ipv4Addr;

use common::bacnet::BacnetSim;
use pattoo_agentd::config;
use pattoo_agentd::model::{self, AgentContext};
use pattoo_agentd::pollers::{Poller, PollerEnv, PollerKind, PollerSettings};
use serde_json::Value;

/// The recorded run's device address: the polled target and the `target`
/// metadata, both in every checksum.
const DEVICE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// `[target, key, data type, value, metadata, checksum]` per recorded
/// datapoint.
fn recorded() -> Vec<Value> {
    std::fs::read_to_string("tests/data/bacnet/bacnet-observed.jsonl")
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The drop-in poller the unchanged file makes.
fn drop_in() -> PollerSettings {
    let dir = tempfile::tempdir().unwrap();
    common::modbus::write_pattoo_yaml(dir.path());
    std::fs::copy(
        "tests/data/bacnet/pattoo_agent_bacnetipd.yaml",
        dir.path().join("pattoo_agent_bacnetipd.yaml"),
    )
    .unwrap();
    let settings = config::load(dir.path()).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(settings.pollers.len(), 1);
    settings.pollers[0].clone()
}

/// Polls the simulator once with the drop-in (each device's port changed
/// to the simulator's: BAC0 cannot share 47808 between tests) and returns
/// the body's datapoints in the recorded form.
async fn poll_as_recorded(sim: &BacnetSim, max_objects_per_request: usize) -> Vec<Value> {
    let mut poller_settings = drop_in();
    assert_eq!(poller_settings.agent_program, "pattoo_agent_bacnetipd");
    assert_eq!(poller_settings.polling_interval.as_secs(), 60);
    let PollerKind::Bacnet(settings) = &mut poller_settings.kind else {
        panic!("{:?}", poller_settings.kind);
    };
    assert_eq!(settings.local, "127.0.0.1:47808".parse().unwrap());
    settings.local.set_port(0);
    settings.max_objects_per_request = max_objects_per_request;
    for target in &mut settings.targets {
        assert_eq!(target.port, 47808);
        target.port = sim.address.port();
    }
    let env = PollerEnv {
        hostname: "vectors.example.org".to_owned(),
    };
    let mut poller = Poller::new(&poller_settings, &env).unwrap();
    let (logs, _guard) = common::logs::capture();
    let targets = poller.readings().await.expect("a poll that read something");
    let agent_id = "c".repeat(64);
    let agent = AgentContext {
        agent_id: &agent_id,
        agent_program: "pattoo_agent_bacnetipd",
        hostname: &env.hostname,
        polling_interval_ms: 60_000,
    };
    let outcome = model::build(&agent, 0, &targets);
    assert!(outcome.dropped.is_empty(), "{:#?}", outcome.dropped);
    let body: Value = serde_json::from_slice(&outcome.body.expect("a body").json).unwrap();
    // Analog Value 99 does not exist: logged with its device and object.
    let logs = logs.text();
    assert!(
        logs.contains("127.0.0.2 (127.0.0.2:")
            && logs.contains("read analog-value 99 present-value: the device answered error class object (1), code unknown-object (31)"),
        "{logs}"
    );
    common::body::as_recorded(&body)
}

#[tokio::test]
async fn pattoo_agent_bacnetipd_yaml_posts_exactly_what_the_python_agent_posted() {
    let Some(sim) = BacnetSim::start(DEVICE) else {
        return;
    };
    let got = poll_as_recorded(&sim, 16).await;
    let expected = recorded();
    for (got, expected) in got.iter().zip(&expected) {
        assert_eq!(got, expected);
    }
    assert_eq!(got.len(), expected.len(), "{got:#?}");
}

#[tokio::test]
async fn one_property_a_request_posts_the_same_as_read_property_multiple() {
    let Some(sim) = BacnetSim::start(Ipv4Addr::new(127, 0, 0, 2)) else {
        return;
    };
    assert_eq!(poll_as_recorded(&sim, 1).await, recorded());
}
