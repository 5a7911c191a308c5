//! A Python `pattoo_agent_modbustcpd.yaml` runs as a drop-in: the bodies it
//! produces carry the checksums the Python agent computes for the same
//! readings, so the server keeps the same charts.

mod common;

use std::collections::BTreeMap;

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

/// A datapoint of the body: its pairs in order.
type Pairs = Vec<(String, serde_json::Value)>;

fn datapoints(body: &serde_json::Value) -> Vec<Pairs> {
    let table = body["pattoo_datapoints"]["key_value_pairs"]
        .as_object()
        .unwrap();
    body["pattoo_datapoints"]["datapoint_pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ids| {
            ids.as_array()
                .unwrap()
                .iter()
                .map(|id| {
                    let pair = &table[&id.as_u64().unwrap().to_string()];
                    (pair[0].as_str().unwrap().to_owned(), pair[1].clone())
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_python_modbus_config_posts_the_python_agents_keys_values_and_checksums() {
    let device_1 = Sim::start([(
        0,
        Unit::default()
            .input(122, &[732])
            .input(788, &[2305])
            .holding(122, &[17])
            .holding(455, &[1000]),
    )])
    .await;
    let device_2 = Sim::start([(
        3,
        Unit::default()
            .input(386, &[7, 8])
            .input(19, &[65535])
            .holding(122, &[40, 41]),
    )])
    .await;

    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path());
    let python = std::fs::read_to_string("tests/data/modbus/pattoo_agent_modbustcpd.yaml")
        .unwrap()
        .replace("{DEVICE_1}", &device_1.address())
        .replace("{DEVICE_2}", &device_2.address());
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

    let settings = config::load(dir.path()).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(settings.pollers.len(), 1);
    assert_eq!(settings.pollers[0].agent_program, PROGRAM);
    let mut collectors = collector::collectors(&settings, None).unwrap();
    let body = collectors[0].collect().await.expect("a body");
    let raw = String::from_utf8(body.json.clone()).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body.json).unwrap();
    assert_eq!(body["pattoo_agent_id"], AGENT_ID);
    assert_eq!(body["pattoo_agent_polling_interval"], 20_000);

    let (one, two) = (device_1.address(), device_2.address());
    // (target, key, raw register × float(multiplier))
    let expected: Vec<(&str, &str, &str, f64)> = vec![
        (&one, "input_register_30123", "000", 732.0 * 1.0),
        (&one, "input_register_30789", "000", 2305.0 * 0.1),
        (&one, "holding_register_40123", "000", 17.0 * 1.0),
        (&one, "holding_register_40456", "000", 1000.0 * 2.0),
        (&two, "input_register_30387", "003", 7.0),
        (&two, "input_register_30388", "003", 8.0),
        (&two, "input_register_300020", "003", 65535.0),
        (&two, "holding_register_40123", "003", 40.0),
        // The Python agent reads only the first register of a holding
        // range; this one it would have missed.
        (&two, "holding_register_40124", "003", 41.0),
    ];

    let mut got: BTreeMap<(String, String), Pairs> = BTreeMap::new();
    for pairs in datapoints(&body) {
        let find = |name: &str| pairs.iter().find(|(k, _)| k == name).unwrap().1.clone();
        let target = find("pattoo_agent_polled_target")
            .as_str()
            .unwrap()
            .to_owned();
        let key = find("pattoo_key").as_str().unwrap().to_owned();
        got.insert((target, key), pairs);
    }
    assert_eq!(got.len(), expected.len(), "{:#?}", got.keys());

    for (target, key, unit, value) in expected {
        let pairs = &got[&(target.to_owned(), key.to_owned())];
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
            "{key}: only the unit metadata, then the agent's"
        );
        assert_eq!(pairs[0].1, unit, "{key}");
        assert_eq!(pairs[7].1, 99, "{key}");
        let posted = &pairs[8].1;
        assert!(posted.is_f64(), "{key}: {posted} is posted as a float");
        assert_eq!(posted.as_f64(), Some(value), "{key}");
        assert_eq!(
            pairs[10].1,
            python_checksum(key, unit, target),
            "{key} on {target}"
        );
    }
    // A multiplier of 1 still posts a float, as Python's `732 * 1.0` does.
    assert!(raw.contains("[\"pattoo_value\",732.0]"), "{raw}");
}

#[test]
fn a_python_config_without_polling_interval_polls_every_300_seconds() {
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path());
    std::fs::write(
        dir.path().join("pattoo_agent_modbustcpd.yaml"),
        "pattoo_agent_modbustcpd:\n  polling_groups:\n    - ip_devices: [meter.example.org]\n      input_registers: [30001]\n",
    )
    .unwrap();
    let settings = config::load(dir.path()).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(
        settings.pollers[0].polling_interval,
        std::time::Duration::from_secs(300)
    );
}

#[test]
fn python_registers_outside_their_table_are_reported_at_check() {
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path());
    std::fs::write(
        dir.path().join("pattoo_agent_modbustcpd.yaml"),
        "pattoo_agent_modbustcpd:
  polling_groups:
    - ip_targets: [meter.example.org]
      input_registers: [30001, 40001]
      holding_registers:
        - address: 465537
      unit: 300
",
    )
    .unwrap();
    let errors = config::load(dir.path()).unwrap_err().to_string();
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
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path());
    std::fs::write(
        dir.path().join("pattoo_agent_modbustcpd.yaml"),
        "pattoo_agent_modbustcpd:
  polling_groups:
    - ip_targets: [meter-a.example.org]
      ip_devices: [meter-b.example.org]
      input_registers: [30001]
",
    )
    .unwrap();
    let errors = config::load(dir.path()).unwrap_err().to_string();
    assert!(
        errors.contains("polling_groups[0].ip_devices: give the devices once"),
        "{errors}"
    );
}

#[tokio::test]
async fn a_native_uint16_register_of_unit_0_keeps_the_python_agents_chart() {
    let sim = Sim::start([(0, Unit::default().input(122, &[732]))]).await;
    let address = sim.address();
    let (native_settings, native) = common::modbus_poller(&format!(
        "    - name: native\n      type: modbus_tcp\n      targets: [{{address: \"{address}\", unit: 0}}]\n      registers: [{{address: 30123, multiplier: 1}}]\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path());
    std::fs::write(
        dir.path().join("pattoo_agent_modbustcpd.yaml"),
        format!("pattoo_agent_modbustcpd:\n  polling_groups:\n    - ip_targets: [\"{address}\"]\n      input_registers: [30123]\n"),
    )
    .unwrap();
    let python = config::load(dir.path()).unwrap_or_else(|errors| panic!("{errors}"));
    let pattoo_agentd::pollers::PollerKind::ModbusTcp(python_modbus) = &python.pollers[0].kind
    else {
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
