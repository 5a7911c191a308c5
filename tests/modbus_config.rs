//! Modbus poller configuration as `check` sees it.

mod common;

use pattoo_agentd::pollers::PollerKind;

#[test]
fn the_shipped_modbus_example_is_accepted() {
    let text = std::fs::read_to_string("config/examples/modbus_tcp.yaml").unwrap();
    let settings = common::modbus::load_agentd(&text).unwrap_or_else(|errors| panic!("{errors}"));
    let PollerKind::ModbusTcp(modbus) = &settings.pollers[0].kind else {
        panic!("not a modbus poller");
    };
    assert_eq!(modbus.targets.len(), 3);
    let keys: Vec<&str> = modbus.targets[0]
        .registers
        .iter()
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(
        keys,
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
    let PollerKind::ModbusTcp(modbus) = &settings.pollers[0].kind else {
        panic!("not a modbus poller");
    };
    let registers: Vec<(String, String)> = modbus.targets[0]
        .registers
        .iter()
        .map(|r| (format!("{:?}", r.address.table), r.key.clone()))
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
