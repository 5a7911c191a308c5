//! `type: bacnet` pollers against a real BACnet/IP device (the BAC0
//! simulator, see tests/common/bacnet.rs) on loopback: every object type it
//! serves, unknown objects, a wrong address and a device that never
//! answers.
#![cfg(feature = "bacnet")]

use crate::common;
use crate::common::Readings;

use std::net::{Ipv4Addr, UdpSocket};

use common::bacnet::BacnetSim;
use pattoo_agentd::model::{DataType, TargetData, Value};
use pattoo_agentd::pollers::Poller;

/// (key, value, data type, metadata as `key=value` with `*` when outside
/// the checksum) of each datapoint of a target.
fn readings(target: &TargetData) -> Vec<(String, Value, DataType, Vec<String>)> {
    target
        .datapoints
        .iter()
        .map(|d| {
            let metadata = d
                .metadata
                .iter()
                .map(|m| {
                    let star = if m.update_checksum { "" } else { "*" };
                    format!("{}={}{star}", m.key, m.value)
                })
                .collect();
            (d.key.to_string(), d.value.clone(), d.data_type, metadata)
        })
        .collect()
}

fn reading(
    key: &str,
    value: Value,
    data_type: DataType,
    metadata: &[&str],
) -> (String, Value, DataType, Vec<String>) {
    (
        key.to_owned(),
        value,
        data_type,
        metadata.iter().map(|m| (*m).to_owned()).collect(),
    )
}

/// A `type: bacnet` poller `name` on a port of its own on loopback, with
/// `settings` (lines indented by six spaces) for the rest.
fn bacnet_poller(name: &str, settings: &str) -> Poller {
    common::poller::from_entries(&format!(
        "    - name: {name}
      type: bacnet
      local_address: 127.0.0.1
      local_port: 0
{settings}"
    ))
}

#[tokio::test]
async fn every_object_type_the_device_serves_is_read_with_its_name() {
    let Some(sim) = BacnetSim::start(Ipv4Addr::new(127, 0, 0, 3)) else {
        return;
    };
    let mut poller = bacnet_poller(
        "ahu",
        &format!(
            "      targets: [{{address: '{}', device: 1234, name: ahu-1}}]
      objects: [av:1, av:2, av:3, {{object: analog-value:4, key: setpoint, multiplier: 2, offset: 1}},
                analog-input:1, analog-output:1, binary-input:1, binary-output:1,
                binary-value:1, multi-state-input:1, multi-state-output:1, multi-state-value:1]
",
        sim.address
    ));
    let targets = poller.readings().await.unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].target, "ahu-1");
    let f = DataType::Float;
    let i = DataType::Int;
    assert_eq!(
        readings(&targets[0]),
        [
            reading(
                "analog_value_1",
                Value::Float(21.5),
                f,
                &["device=1234", "object_name=Supply Air Temp*"]
            ),
            reading(
                "analog_value_2",
                Value::Float(-3.25),
                f,
                &["device=1234", "object_name=Return Air Temp*"]
            ),
            reading(
                "analog_value_3",
                Value::Float(1500.0),
                f,
                &["device=1234", "object_name=Fan Speed*"]
            ),
            // 21.3 as a REAL, widened, then × 2 + 1.
            reading(
                "setpoint",
                Value::Float(f64::from(21.3f32) * 2.0 + 1.0),
                f,
                &["device=1234", "object_name=Setpoint*"]
            ),
            reading(
                "analog_input_1",
                Value::Float(-7.5),
                f,
                &["device=1234", "object_name=Outside Air Temp*"]
            ),
            reading(
                "analog_output_1",
                Value::Float(42.25),
                f,
                &["device=1234", "object_name=Damper Position*"]
            ),
            reading(
                "binary_input_1",
                Value::UInt(1),
                i,
                &["device=1234", "object_name=Filter Alarm*"]
            ),
            reading(
                "binary_output_1",
                Value::UInt(0),
                i,
                &["device=1234", "object_name=Fan Command*"]
            ),
            reading(
                "binary_value_1",
                Value::UInt(1),
                i,
                &["device=1234", "object_name=Occupied*"]
            ),
            reading(
                "multi_state_input_1",
                Value::UInt(2),
                i,
                &["device=1234", "object_name=Mode*"]
            ),
            reading(
                "multi_state_output_1",
                Value::UInt(3),
                i,
                &["device=1234", "object_name=Stage*"]
            ),
            reading(
                "multi_state_value_1",
                Value::UInt(1),
                i,
                &["device=1234", "object_name=Season*"]
            ),
        ]
    );
}

#[tokio::test]
async fn unknown_objects_a_wrong_address_and_a_silent_device_cost_only_themselves() {
    let Some(sim) = BacnetSim::start(Ipv4Addr::new(127, 0, 0, 3)) else {
        return;
    };
    // Takes every request and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    // Nothing listens there: the kernel refuses each datagram.
    let nobody = common::bacnet::free_port(Ipv4Addr::LOCALHOST);
    let mut poller = bacnet_poller(
        "plant",
        &format!(
            "      timeout_ms: 400
      retries: 1
      object_names: false
      targets: ['{}', '{}', '127.0.0.1:{nobody}']
      objects: [av:1, av:99, bv:77, ai:1]
",
            sim.address,
            silent.local_addr().unwrap()
        ),
    );
    let (result, logs) = common::poller::poll_logged(&mut poller).await;
    let targets = result.unwrap();
    assert_eq!(targets.len(), 1, "{targets:#?}");
    assert_eq!(targets[0].target, sim.address.to_string());
    assert_eq!(
        readings(&targets[0]),
        [
            reading("analog_value_1", Value::Float(21.5), DataType::Float, &[]),
            reading("analog_input_1", Value::Float(-7.5), DataType::Float, &[]),
        ]
    );
    for object in ["analog-value 99", "binary-value 77"] {
        assert!(
            logs.contains(&format!(
                "({}): read {object} present-value: the device answered error class object (1), code unknown-object (31)",
                sim.address
            )),
            "{object}: {logs}"
        );
    }
    // The silent device had its one request and its one retry, no more.
    let mut asked = 0;
    let mut buf = [0u8; 1500];
    while silent.recv_from(&mut buf).is_ok() {
        asked += 1;
    }
    assert_eq!(asked, 2, "{logs}");
    let silent = silent.local_addr().unwrap();
    assert!(
        logs.contains(&format!("{silent} ({silent}): no answer to ReadPropertyMultiple of 4 object(s): no answer within 400ms; not asked again in this poll")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!(
            "127.0.0.1:{nobody} (127.0.0.1:{nobody}): no answer"
        )),
        "{logs}"
    );
}

#[tokio::test]
async fn a_poll_of_devices_that_never_answer_fails_naming_the_poller() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut poller = bacnet_poller(
        "gone",
        &format!(
            "      timeout_ms: 200
      retries: 0
      max_objects_per_request: 1
      targets: ['{}']
      objects: [av:1, av:2, av:3]
",
            silent.local_addr().unwrap()
        ),
    );
    let error = poller.readings().await.unwrap_err().to_string();
    // One timeout, and the other two objects are not asked for.
    assert_eq!(
        error,
        "poller gone: nothing read: all 3 read(s) failed (see the warnings above)"
    );
}

#[tokio::test]
async fn a_device_with_another_instance_than_configured_is_logged_and_not_posted() {
    let Some(sim) = BacnetSim::start(Ipv4Addr::new(127, 0, 0, 4)) else {
        return;
    };
    // The simulator is device 1234; the first target says 999 of it.
    let mut poller = bacnet_poller(
        "ahu",
        &format!(
            "      targets: [{{address: '{0}', device: 999, name: wrong}}, {{address: '{0}', device: 1234, name: right}}]
      objects: [av:1]
",
        sim.address
    ));
    let (result, logs) = common::poller::poll_logged(&mut poller).await;
    let targets = result.unwrap();
    assert!(
        logs.contains(&format!(
            "wrong ({}): the device there is device 1234, not device 999 as configured: not read",
            sim.address
        )),
        "{logs}"
    );
    // The matching target is read, under its instance, and only it.
    assert_eq!(targets.len(), 1, "{targets:#?}");
    assert_eq!(targets[0].target, "right");
    assert_eq!(
        readings(&targets[0]),
        [reading(
            "analog_value_1",
            Value::Float(21.5),
            DataType::Float,
            &["device=1234", "object_name=Supply Air Temp*"]
        )]
    );
}

#[test]
fn discover_bacnet_finds_the_simulator_and_prints_a_poller_that_loads() {
    let Some(sim) = BacnetSim::start(Ipv4Addr::new(127, 0, 0, 5)) else {
        return;
    };
    let output = common::pattoo_agentd()
        .args([
            "discover",
            "bacnet",
            "--local",
            "127.0.0.1:0",
            "--wait",
            "2",
            "--objects",
            "--to",
        ])
        .arg(sim.address.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for line in [
        format!(
            "  targets: [{{address: \"{}\", device: 1234}}]",
            sim.address
        ),
        "    - analog-value:1   # Supply Air Temp".to_owned(),
        "    - multi-state-value:1   # Season".to_owned(),
    ] {
        assert!(stdout.contains(&line), "{line}\n{stdout}\n{stderr}");
    }
    // Pasted under `pollers:`, it is a configuration `check` takes.
    let pasted: String = stdout.lines().map(|l| format!("    {l}\n")).collect();
    common::poller::from_entries(&pasted);
}
