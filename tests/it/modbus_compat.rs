//! A Python `pattoo_agent_modbustcpd.yaml` runs as a drop-in: the bodies it
//! produces carry the checksums the Python agent computes for the same
//! readings, so the server keeps the same charts.
#![cfg(feature = "modbus")]
// In a build with Modbus pollers only, every poller is one.
#![allow(irrefutable_let_patterns)]

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::body::{datapoints, Pairs};
use common::modbus_sim::{Sim, Unit};
use pattoo_agentd::collector;
use pattoo_agentd::config;
use pattoo_agentd::pollers::modbus::ModbusPoller;
use sha2::{Digest, Sha256};

const AGENT_ID: &str = "9a2fbd4c8e1d7a0b3c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4";
const HOSTNAME: &str = "python-host.example.org";
const PROGRAM: &str = "pattoo_agent_modbustcpd";

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The checksum as `SPEC-wire-format.md` defines it for a Python Modbus
/// datapoint: key and data type 99, then the `unit` metadata, then the
/// agent's own metadata in the Python agent's order.
fn python_checksum(key: &str, unit: &str, target: &str) -> String {
    let mut checksum = sha256(&format!("{key}99"));
    for (meta_key, meta_value) in [
        ("unit", unit),
        ("pattoo_agent_hostname", HOSTNAME),
        ("pattoo_agent_id", AGENT_ID),
        ("pattoo_agent_polled_target", target),
        ("pattoo_agent_program", PROGRAM),
    ] {
        checksum = sha256(&format!("{checksum}{meta_key}{meta_value}"));
    }
    checksum
}

/// Where `{DEVICE_n}` reads a Modicon-numbered register, worked out here
/// rather than with the poller's own address code.
fn place(unit: Unit, register: u64, value: u16) -> Unit {
    let (table, offset) = match register {
        30_001..=39_999 => (3, register - 30_001),
        40_001..=49_999 => (4, register - 40_001),
        300_001..=365_536 => (3, register - 300_001),
        400_001..=465_536 => (4, register - 400_001),
        other => panic!("register {other} is not an input or holding register"),
    };
    let offset = u16::try_from(offset).unwrap();
    if table == 3 {
        unit.input(offset, &[value])
    } else {
        unit.holding(offset, &[value])
    }
}

async fn start_devices(case: &Path) -> Vec<Sim> {
    let text = std::fs::read_to_string(case.join("devices.yaml")).unwrap();
    let devices: Vec<serde_norway::Value> = serde_norway::from_str(&text).unwrap();
    let mut sims = Vec::new();
    for device in devices {
        let mut units = Vec::new();
        for (unit, registers) in device["units"].as_mapping().unwrap() {
            let mut contents = Unit::default();
            for (register, value) in registers.as_mapping().unwrap() {
                contents = place(
                    contents,
                    register.as_u64().unwrap(),
                    u16::try_from(value.as_u64().unwrap()).unwrap(),
                );
            }
            units.push((u8::try_from(unit.as_u64().unwrap()).unwrap(), contents));
        }
        sims.push(Sim::start(units).await);
    }
    sims
}

/// Runs one case folder of `tests/data/modbus/compat`: its
/// `pattoo_agent_modbustcpd.yaml` against the devices of `devices.yaml`
/// must post exactly the datapoints of `expected.yaml`.
async fn run_case(case: &Path) {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let sims = start_devices(case).await;
    let dir = tempfile::tempdir().unwrap();
    common::modbus::write_pattoo_yaml(dir.path());
    let mut python = std::fs::read_to_string(case.join("pattoo_agent_modbustcpd.yaml")).unwrap();
    for (i, sim) in sims.iter().enumerate() {
        python = python.replace(&format!("{{DEVICE_{}}}", i + 1), &sim.address());
    }
    std::fs::write(dir.path().join("pattoo_agent_modbustcpd.yaml"), python).unwrap();
    // Only settings, no pollers of its own.
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        format!("pattoo_agentd:\n  hostname: {HOSTNAME}\n"),
    )
    .unwrap();
    let id_file = dir.path().join("daemon/agent_id");
    std::fs::create_dir_all(&id_file).unwrap();
    std::fs::write(id_file.join(format!("{PROGRAM}.agent_id")), AGENT_ID).unwrap();

    let settings = config::load(dir.path()).unwrap_or_else(|errors| panic!("{name}: {errors}"));
    assert_eq!(settings.pollers.len(), 1, "{name}");
    assert_eq!(settings.pollers[0].agent_program, PROGRAM, "{name}");
    let mut collectors = collector::collectors(
        &settings,
        &pattoo_agentd::pollers::PollerEnv {
            hostname: pattoo_agentd::identity::hostname(settings.agent.hostname.as_deref()).name,
        },
        None,
    )
    .unwrap();
    let mut bodies = collectors[0].collect().await.expect("a body");
    assert_eq!(bodies.len(), 1, "one body");
    let body = bodies.remove(0);
    let body: serde_json::Value = serde_json::from_slice(&body.json).unwrap();

    let expected: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(case.join("expected.yaml")).unwrap())
            .unwrap();
    assert_eq!(body["pattoo_agent_id"], AGENT_ID, "{name}");
    assert_eq!(
        body["pattoo_agent_polling_interval"].as_u64(),
        expected["polling_interval_ms"].as_u64(),
        "{name}"
    );

    let mut got: BTreeMap<(String, String, String), Pairs> = BTreeMap::new();
    for pairs in datapoints(&body) {
        let find = |wanted: &str| pairs.iter().find(|(k, _)| k == wanted).unwrap().1.clone();
        let target = find("pattoo_agent_polled_target")
            .as_str()
            .unwrap()
            .to_owned();
        let key = find("pattoo_key").as_str().unwrap().to_owned();
        let unit = find("unit").as_str().unwrap().to_owned();
        got.insert((target, key, unit), pairs);
    }
    let wanted = expected["datapoints"].as_sequence().unwrap();
    assert_eq!(got.len(), wanted.len(), "{name}: {:#?}", got.keys());

    for datapoint in wanted {
        let target = sims[datapoint["device"].as_u64().unwrap() as usize - 1].address();
        let key = datapoint["key"].as_str().unwrap();
        let unit = datapoint["unit"].as_str().unwrap();
        let value = datapoint["value"].as_f64().unwrap();
        let what = format!("{name}: {key} of unit {unit} on {target}");
        let pairs = &got[&(target.clone(), key.to_owned(), unit.to_owned())];
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "unit",
                "pattoo_agent_polling_interval",
                "pattoo_agent_hostname",
                "pattoo_agent_id",
                "pattoo_agent_polled_target",
                "pattoo_agent_program",
                "pattoo_key",
                "pattoo_data_type",
                "pattoo_value",
                "pattoo_timestamp",
                "pattoo_checksum"
            ],
            "{what}: only the unit metadata, then the agent's"
        );
        assert_eq!(pairs[7].1, 99, "{what}");
        let posted = &pairs[8].1;
        // A float even for a multiplier of 1 (`732.0`), as Python's
        // `732 * 1.0` is.
        assert!(posted.is_f64(), "{what}: {posted} is posted as a float");
        assert_eq!(posted.as_f64(), Some(value), "{what}");
        assert_eq!(pairs[10].1, python_checksum(key, unit, &target), "{what}");
    }
}

#[tokio::test]
async fn python_modbus_configs_post_the_python_agents_keys_values_and_checksums() {
    let mut cases: Vec<_> = std::fs::read_dir("tests/data/modbus/compat")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 2, "the golden cases are missing");
    for case in cases {
        run_case(&case).await;
    }
}

#[test]
fn a_python_config_without_polling_interval_polls_every_300_seconds() {
    let settings = common::modbus::load_python(
        "pattoo_agent_modbustcpd:\n  polling_groups:\n    - ip_devices: [meter.example.org]\n      input_registers: [30001]\n",
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(
        settings.pollers[0].polling_interval,
        std::time::Duration::from_secs(300)
    );
}

#[test]
fn python_registers_outside_their_table_are_reported_at_check() {
    let errors = common::modbus::load_python(
        "pattoo_agent_modbustcpd:
  polling_groups:
    - ip_targets: [meter.example.org]
      input_registers: [30001, 40001]
      holding_registers:
        - address: 465537
      unit: 300
",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("input_registers[1]: 40001 is not one of the input registers"),
        "{errors}"
    );
    assert!(
        errors.contains("holding_registers[0].address: 465537 is not one of the holding registers"),
        "{errors}"
    );
    assert!(
        errors.contains("unit: expected a unit id from 0 to 246"),
        "{errors}"
    );
    assert!(
        errors.contains("pattoo_agent_modbustcpd.yaml:4:"),
        "{errors}"
    );
}

#[test]
fn a_python_group_may_name_its_devices_ip_targets_or_ip_devices_but_not_both() {
    let errors = common::modbus::load_python(
        "pattoo_agent_modbustcpd:
  polling_groups:
    - ip_targets: [meter-a.example.org]
      ip_devices: [meter-b.example.org]
      input_registers: [30001]
",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("polling_groups[0].ip_devices: give the devices once"),
        "{errors}"
    );
}

#[tokio::test]
async fn a_native_uint16_register_of_unit_0_keeps_the_python_agents_chart() {
    let sim = Sim::start([(0, Unit::default().input(122, &[732]))]).await;
    let address = sim.address();
    let (native_settings, native) = common::modbus::modbus_poller(&format!(
        "    - name: native\n      type: modbus_tcp\n      targets: [{{address: \"{address}\", unit: 0}}]\n      registers: [{{address: 30123, multiplier: 1}}]\n"
    ));
    let python = common::modbus::load_python(&format!(
        "pattoo_agent_modbustcpd:\n  polling_groups:\n    - ip_targets: [\"{address}\"]\n      input_registers: [30123]\n"
    ))
    .unwrap_or_else(|errors| panic!("{errors}"));
    let pattoo_agentd::pollers::PollerKind::Modbus(python_modbus) = &python.pollers[0].kind else {
        panic!("not a modbus poller");
    };
    assert_eq!(
        native_settings.agent_program,
        python.pollers[0].agent_program
    );

    let mut polled = Vec::new();
    for settings in [&native, python_modbus] {
        let mut poller = ModbusPoller::new("either", settings).unwrap();
        let mut targets = poller.poll().await.unwrap();
        // What the checksum is made of: target, key, data type, metadata.
        let target = targets.remove(0);
        let datapoint = &target.datapoints[0];
        polled.push((
            target.target.clone(),
            datapoint.key.clone(),
            datapoint.data_type,
            datapoint.metadata.clone(),
            datapoint.value.clone(),
        ));
    }
    assert_eq!(polled[0], polled[1]);
}
