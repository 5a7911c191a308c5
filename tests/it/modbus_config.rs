//! Modbus poller configuration as `check` sees it.
#![cfg(feature = "modbus")]
// In a build with Modbus pollers only, every poller is one.
#![allow(irrefutable_let_patterns)]

use crate::common;

use pattoo_agentd::config::PollerSettings;
use pattoo_agentd::pollers::modbus::ModbusSettings;
use pattoo_agentd::pollers::PollerKind;

/// The Modbus settings of `poller`.
fn modbus_settings(poller: &PollerSettings) -> &ModbusSettings {
    let PollerKind::Modbus(modbus) = &poller.kind else {
        panic!("not a modbus poller: {poller:?}");
    };
    modbus
}

/// The keys of the registers the first target is read for, in order.
fn register_keys(modbus: &ModbusSettings) -> Vec<&str> {
    modbus.targets[0]
        .registers
        .iter()
        .map(|r| r.key.as_str())
        .collect()
}

/// Each target's name and Modbus unit.
fn names_and_units(modbus: &ModbusSettings) -> Vec<(&str, u8)> {
    modbus
        .targets
        .iter()
        .map(|t| (t.name.as_str(), t.unit))
        .collect()
}

#[test]
fn the_shipped_modbus_example_is_accepted() {
    let text = std::fs::read_to_string("config/examples/modbus_tcp.yaml").unwrap();
    let settings = common::modbus::load_agentd(&text).unwrap_or_else(|errors| panic!("{errors}"));
    let modbus = modbus_settings(&settings.pollers[0]);
    assert_eq!(modbus.targets.len(), 3);
    assert_eq!(
        register_keys(modbus),
        [
            "input_register_30001",
            "voltage_l1",
            "input_register_30100",
            "energy_wh",
            "serial_number",
            "holding_register_410001",
            "coil_17",
            "discrete_input_10001",
            "gateway_status"
        ]
    );
    assert_eq!(settings.pollers[0].agent_program, "pattoo_agent_modbustcpd");
}

#[test]
fn addresses_outside_their_table_are_rejected_with_their_location() {
    let errors = common::modbus::load_agentd(
        "pattoo_agentd:
  pollers:
    - name: bad
      type: modbus_tcp
      targets: [\"10.0.0.5:70000\"]
      registers:
        - 20001
        - {table: coil, address: 70000}
        - {address: 49999, type: float32, order: ACBD}
        - {address: 30001, type: bool}
        - {address: 1, type: uint16}
        - {address: 30001, type: string}
        - {address: 465536, type: uint32}
",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "pollers[0].targets[0]: \"10.0.0.5:70000\": port \"70000\" is not a port number",
        "pollers[0].registers[0]: 20001 is not a Modicon register number",
        "pollers[0].registers[1].address: with `table`, the address is zero-based",
        "pollers[0].registers[2].order: unknown byte order \"ACBD\"",
        "pollers[0].registers[3].type: bool is for coils and discrete inputs",
        "pollers[0].registers[4].type: coils hold single bits",
        "pollers[0].registers[5]: a string needs `length`",
        "pollers[0].registers[6].address: a 2-register value starting here runs past the end",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in\n{errors}"
        );
    }
    assert!(errors.contains("pattoo_agentd.yaml:8:"), "{errors}");
}

#[test]
fn registers_sharing_a_key_are_rejected() {
    let errors = common::modbus::load_agentd(
        "pattoo_agentd:
  pollers:
    - name: twice
      type: modbus_tcp
      targets: [meter]
      registers: [30001, {address: 30002, key: input_register_30001}]
",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("key \"input_register_30001\" is already used by registers[0]"),
        "{errors}"
    );
}

#[test]
fn a_leading_zero_means_coil_whether_or_not_the_number_is_quoted() {
    let settings = common::modbus::load_agentd(
        "pattoo_agentd:\n  pollers:\n    - name: plc\n      type: modbus_tcp\n      targets: [\"10.0.0.5\"]\n      \
         registers: [010001, \"010002\", 10003, {address: 010004}]\n",
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let modbus = modbus_settings(&settings.pollers[0]);
    let registers: Vec<(String, String)> = modbus.targets[0]
        .registers
        .iter()
        .map(|r| (format!("{:?}", r.address.table), r.key.to_string()))
        .collect();
    assert_eq!(
        registers,
        [
            ("Coil".to_owned(), "coil_10001".to_owned()),
            ("Coil".to_owned(), "coil_10002".to_owned()),
            (
                "DiscreteInput".to_owned(),
                "discrete_input_10003".to_owned()
            ),
            ("Coil".to_owned(), "coil_10004".to_owned()),
        ]
    );
}

#[test]
fn the_short_table_names_are_accepted_with_their_default_keys() {
    let settings = common::modbus::load_agentd(
        "pattoo_agentd:\n  pollers:\n    - name: plc\n      type: modbus_tcp\n      targets: [\"10.0.0.5\"]\n      \
         registers:\n        - {table: coil, address: 16}\n        - {table: discrete, address: 0}\n        \
         - {table: discrete_input, address: 1}\n        - {table: input, address: 2}\n        \
         - {table: holding, address: 0}\n        - {table: holding, address: 10000}\n",
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let modbus = modbus_settings(&settings.pollers[0]);
    assert_eq!(
        register_keys(modbus),
        [
            "coil_17",
            "discrete_input_10001",
            "discrete_input_10002",
            "input_register_30003",
            "holding_register_40001",
            "holding_register_410001"
        ]
    );
}

#[test]
fn a_serial_poller_reads_units_on_its_device_with_the_line_settings() {
    let settings = common::modbus::load_agentd(
        "pattoo_agentd:
  pollers:
    - name: bus
      type: modbus_tcp
      transport: rtu
      device: /dev/ttyUSB0
      baud_rate: 19200
      parity: E
      targets: [1, {unit: 7, name: inverter}]
      registers: [30001]
    - name: one_device
      type: modbus_tcp
      transport: rtu
      device: /dev/ttyUSB1
      unit: 4
      registers: [30001]
",
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let bus = modbus_settings(&settings.pollers[0]);
    assert_eq!(names_and_units(bus), [("/dev/ttyUSB0", 1), ("inverter", 7)]);
    assert_eq!(bus.retries, 1);
    assert_eq!(
        settings.pollers[0].kind.describe(),
        format!(
            "reads 2 value(s) in all over Modbus RTU on /dev/ttyUSB0 19200 8E1 from unit(s) 1, 7{}",
            if std::path::Path::new("/dev/ttyUSB0").exists() {
                ""
            } else {
                " (the device does not exist now; it is opened once it does)"
            }
        )
    );
    let one = modbus_settings(&settings.pollers[1]);
    assert_eq!(names_and_units(one), [("/dev/ttyUSB1", 4)]);
}

#[test]
fn transport_and_serial_settings_are_checked_with_their_location() {
    let errors = common::modbus::load_agentd(
        "pattoo_agentd:
  pollers:
    - name: tcp_with_a_baud_rate
      type: modbus_tcp
      baud_rate: 9600
      targets: [\"10.0.0.5\"]
      registers: [30001]
    - name: no_device
      type: modbus_tcp
      transport: rtu
      targets: [1]
      registers: [30001]
    - name: bad_line
      type: modbus_tcp
      transport: rtu
      device: ttyUSB0
      parity: mark
      data_bits: 9
      stop_bits: 3
      retries: 9
      targets: [0, \"10.0.0.5\", {unit: 248}]
      registers: [30001]
    - name: typo
      type: modbus_tcp
      transport: rtu_over_udp
      targets: [\"10.0.0.5\"]
      registers: [30001]
",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "pollers[0].baud_rate: `baud_rate` is a serial setting: it needs `transport: rtu`",
        "pollers[1]: missing `device`: with `transport: rtu`, name the serial port",
        "pollers[2].parity: unknown variant `mark`",
        "pollers[3].transport: unknown transport \"rtu_over_udp\": expected tcp, rtu_over_tcp or rtu",
    ] {
        assert!(errors.contains(expected), "missing {expected:?} in\n{errors}");
    }
    let errors = common::modbus::load_agentd(
        "pattoo_agentd:
  pollers:
    - name: bad_line
      type: modbus_tcp
      transport: rtu
      device: ttyUSB0
      data_bits: 9
      stop_bits: 3
      retries: 9
      targets: [0, \"10.0.0.5\", {unit: 248}]
      registers: [30001]
",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "pollers[0].device: \"ttyUSB0\" is not a serial device path",
        "pollers[0].data_bits: must be 7 or 8",
        "pollers[0].stop_bits: must be 1 or 2",
        "pollers[0].retries: 9 is too many: at most 5",
        "pollers[0].targets[0]: unit 0 cannot answer on a serial line",
        "pollers[0].targets[1]: \"10.0.0.5\": with `transport: rtu` a target is a unit id",
        "pollers[0].targets[2].unit: unit 248 cannot answer on a serial line",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in\n{errors}"
        );
    }
}

#[test]
fn two_spellings_of_one_serial_port_with_different_lines_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let port = dir.path().join("ttyUSB0");
    std::fs::write(&port, "").unwrap();
    let link = dir.path().join("usb-FTDI-port0");
    std::os::unix::fs::symlink(&port, &link).unwrap();
    let errors = common::modbus::load_agentd(&format!(
        "pattoo_agentd:
  pollers:
    - name: meters
      type: modbus
      transport: rtu
      device: {}
      parity: even
      registers: [30001]
    - name: identity
      type: modbus_tcp
      transport: rtu
      device: {}
      data_bits: 7
      parity: even
      registers: [40100]
",
        link.display(),
        port.display()
    ))
    .unwrap_err()
    .to_string();
    let expected = format!(
        "pattoo_agentd.yaml:12:7: pattoo_agentd.pollers[1].device: pollers `identity` and `meters` (pattoo_agentd.pollers[0], line 3) give the serial port {} (written {} there) different line settings: 9600 7E1 here, 9600 8E1 there",
        port.display(),
        link.display()
    );
    assert!(
        errors.contains(&expected),
        "missing {expected:?} in\n{errors}"
    );
    assert_eq!(
        errors.matches("different line settings").count(),
        1,
        "{errors}"
    );
}

/// `check` names the kind and its transport; the agent's own figures keep
/// the `poller_type` every Modbus poller has had, so their series go on.
#[test]
fn a_modbus_poller_shows_its_transport_and_keeps_the_modbus_tcp_label() {
    let settings = common::modbus::load_agentd(
        r#"pattoo_agentd:
  pollers:
    - name: plc
      type: modbus
      targets: ["10.0.0.5"]
      registers: [30001]
    - name: gateway
      type: modbus_tcp
      transport: rtu_over_tcp
      targets: ["10.0.0.6:4001"]
      registers: [30001]
    - name: line
      type: modbus
      transport: rtu
      device: /dev/pattoo-test-no-such-port
      targets: [1]
      registers: [30001]
"#,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let shown: Vec<(String, &str, &str)> = settings
        .pollers
        .iter()
        .map(|p| (p.kind.shown_type(), p.kind.type_name(), p.kind.name()))
        .collect();
    assert_eq!(
        shown,
        [
            ("modbus, transport tcp".to_owned(), "modbus_tcp", "modbus"),
            (
                "modbus, transport rtu_over_tcp".to_owned(),
                "modbus_tcp",
                "modbus"
            ),
            ("modbus, transport rtu".to_owned(), "modbus_tcp", "modbus"),
        ]
    );
}
