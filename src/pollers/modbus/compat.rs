//! Reading a Python `pattoo_agent_modbustcpd.yaml`, so users of the Python
//! agent can switch without losing their charts.
//!
//! ```yaml
//! pattoo_agent_modbustcpd:
//!   polling_interval: 300          # seconds; default 300 as in the Python agent
//!   polling_groups:
//!     - group_name: TEST 1         # optional, informative only
//!       ip_targets:                # `ip_devices` in the Python docs: both accepted
//!         - test1.modbus.tcp.target.net
//!       input_registers:           # bare numbers or {address, multiplier}
//!         - address: 30123
//!           multiplier: 0.1
//!         - 30789
//!       holding_registers:
//!         - 40123
//!       unit: 0                    # default 0
//! ```
//!
//! The file becomes one poller named `pattoo_agent_modbustcpd` posting under
//! the agent program `pattoo_agent_modbustcpd`, and its datapoints are what
//! the Python agent posts for the same readings: key `input_register_N` or
//! `holding_register_N` with N as written, metadata `unit` as three digits
//! (`"000"`) and nothing else, data type 99 (int), value the raw unsigned
//! 16-bit register times the multiplier as a float (`732.0`), polled target
//! the address as written. With the same agent id and hostname the checksums
//! are the Python agent's.
//!
//! Unlike the Python agent this reads every register of a holding-register
//! range (it read only the first), and it reports at `check` what the
//! Python agent skipped silently: register numbers outside their table,
//! units outside 0..246.

use std::collections::HashSet;
use std::sync::Arc;

use serde_norway::Value;

use super::address::{parse_modicon, Table};
use super::config::{parse_host_port, ModbusSettings, RegisterSettings, TargetSettings};
use super::decode::{Order, ValueType};
use crate::model::DataType;
use crate::pollers::{DropIn, PollerKind, PollerSettings};
use crate::yaml::{
    describe, expect_mapping, only_section, parse_interval, Document, YamlPath,
    DEFAULT_POLLING_INTERVAL,
};

pub const FILE_NAME: &str = "pattoo_agent_modbustcpd.yaml";
pub const SECTION: &str = "pattoo_agent_modbustcpd";
/// The poller's name and agent program: the Python agent's, so its agent id
/// file is reused.
pub const PROGRAM: &str = "pattoo_agent_modbustcpd";

/// The Python agent's file, as the configuration loader finds it.
pub const DROP_IN: DropIn = DropIn {
    file_name: FILE_NAME,
    agent_program: PROGRAM,
    load: parse,
};

fn parse(doc: &mut Document) -> Option<PollerSettings> {
    let (path, section) = only_section(doc, SECTION)?;
    let Some(section) = section else {
        doc.error(&YamlPath::root(), format!("missing section `{SECTION}`"));
        return None;
    };
    let section = expect_mapping(doc, &path, &section)?.clone();
    let mut polling_interval = Some(DEFAULT_POLLING_INTERVAL);
    let mut groups = None;
    for (key, value) in &section {
        let key = key.as_str().unwrap_or_default();
        let at = path.key(key);
        match key {
            "polling_interval" => polling_interval = parse_interval(doc, &at, value),
            "polling_groups" => groups = Some(value),
            other => doc.error(
                &at,
                format!("unknown key `{other}`: expected polling_interval or polling_groups"),
            ),
        }
    }
    let list = path.key("polling_groups");
    let groups = match groups {
        Some(Value::Sequence(groups)) if !groups.is_empty() => groups,
        Some(Value::Sequence(_) | Value::Null) => {
            doc.error(&list, "must list at least one polling group");
            return None;
        }
        Some(other) => {
            doc.error(
                &list,
                format!(
                    "expected a list of polling groups, found {}",
                    describe(other)
                ),
            );
            return None;
        }
        None => {
            doc.error(&path, "missing `polling_groups`: nothing to poll");
            return None;
        }
    };
    let mut targets = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        parse_group(doc, &list.index(i), group, &mut targets);
    }
    if doc.has_errors() {
        return None;
    }
    Some(PollerSettings {
        name: PROGRAM.to_owned(),
        agent_program: PROGRAM.to_owned(),
        polling_interval: polling_interval?,
        metadata: Vec::new(),
        kind: PollerKind::Modbus(ModbusSettings {
            targets,
            timeout: super::DEFAULT_TIMEOUT,
            max_registers_per_read: super::config::MAX_REGISTERS_PER_READ,
            max_bits_per_read: super::config::MAX_BITS_PER_READ,
            max_gap: 0,
            max_concurrent_targets: super::config::DEFAULT_MAX_CONCURRENT_TARGETS,
            transport: super::Transport::Tcp,
            retries: 0,
        }),
    })
}

fn parse_group(
    doc: &mut Document,
    path: &YamlPath,
    group: &Value,
    targets: &mut Vec<TargetSettings>,
) {
    let Some(map) = expect_mapping(doc, path, group) else {
        return;
    };
    let mut addresses: Option<(YamlPath, &Value)> = None;
    let mut unit = 0u8;
    let mut registers = Vec::new();
    for (key, value) in map {
        let key = key.as_str().unwrap_or_default();
        let at = path.key(key);
        match key {
            "group_name" => {}
            "ip_targets" | "ip_devices" => {
                if addresses.is_some() {
                    doc.error(&at, "give the devices once, as ip_targets or as ip_devices");
                }
                addresses = Some((at, value));
            }
            "unit" => match value {
                Value::Null => {}
                Value::Number(n) if n.as_u64().is_some_and(|u| u <= 246) => {
                    unit = n.as_u64().expect("checked") as u8;
                }
                other => doc.error(
                    &at,
                    format!(
                        "expected a unit id from 0 to 246, found {}",
                        match other {
                            Value::Number(n) => n.to_string(),
                            other => describe(other).to_owned(),
                        }
                    ),
                ),
            },
            "input_registers" => parse_registers(doc, &at, value, Table::InputRegister, &mut registers),
            "holding_registers" => {
                parse_registers(doc, &at, value, Table::HoldingRegister, &mut registers)
            }
            other => doc.error(
                &at,
                format!(
                    "unknown key `{other}`: expected group_name, ip_targets (or ip_devices), input_registers, holding_registers or unit"
                ),
            ),
        }
    }
    let Some((at, addresses)) = addresses else {
        doc.error(path, "missing `ip_targets`: the devices to poll");
        return;
    };
    let registers: Arc<[RegisterSettings]> = registers.into();
    let Value::Sequence(addresses) = addresses else {
        doc.error(
            &at,
            format!(
                "expected a list of device addresses, found {}",
                describe(addresses)
            ),
        );
        return;
    };
    for (i, address) in addresses.iter().enumerate() {
        let at = at.index(i);
        let Value::String(text) = address else {
            doc.error(
                &at,
                format!(
                    "expected a host name or IP address, found {}",
                    describe(address)
                ),
            );
            continue;
        };
        let Some((host, port)) = parse_host_port(doc, &at, text) else {
            continue;
        };
        targets.push(TargetSettings {
            address: text.trim().to_owned(),
            host,
            port,
            name: text.trim().to_owned(),
            unit,
            registers: registers.clone(),
        });
    }
}

/// Register entries: `30387` or `{address: 30387, multiplier: 0.1}`.
///
/// A number listed twice is read once: the Python agent's datapoints for it
/// would share a checksum, and the server would keep only one.
fn parse_registers(
    doc: &mut Document,
    path: &YamlPath,
    value: &Value,
    table: Table,
    registers: &mut Vec<RegisterSettings>,
) {
    let entries = match value {
        Value::Null => return,
        Value::Sequence(entries) => entries,
        other => {
            doc.error(
                path,
                format!(
                    "expected a list of register numbers, found {}",
                    describe(other)
                ),
            );
            return;
        }
    };
    let mut seen = HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = path.index(i);
        let (number, multiplier, at_number) = match entry {
            Value::Number(n) => (n.as_u64(), Some(1.0), at.clone()),
            Value::Mapping(map) => {
                for key in map.keys() {
                    let key = key.as_str().unwrap_or_default();
                    if key != "address" && key != "multiplier" {
                        doc.error(
                            &at.key(key),
                            format!("unknown key `{key}`: expected address and multiplier"),
                        );
                    }
                }
                let number = match map.get("address") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(_) => None,
                    None => {
                        doc.error(&at, "missing `address`: the register number");
                        continue;
                    }
                };
                let multiplier = match map.get("multiplier") {
                    None | Some(Value::Null) => Some(1.0),
                    Some(Value::Number(n)) => n.as_f64().filter(|m| m.is_finite()),
                    Some(_) => None,
                };
                if multiplier.is_none() {
                    doc.error(&at.key("multiplier"), "expected a number");
                    continue;
                }
                (number, multiplier, at.key("address"))
            }
            other => {
                doc.error(
                    &at,
                    format!(
                        "expected a register number or {{address, multiplier}}, found {}",
                        describe(other)
                    ),
                );
                continue;
            }
        };
        let address = match number.map(parse_modicon) {
            Some(Ok(address)) if address.table == table => address,
            _ => {
                let (five, six) = match table {
                    Table::InputRegister => ("30001..39999", "300001..365536"),
                    _ => ("40001..49999", "400001..465536"),
                };
                doc.error(
                    &at_number,
                    format!(
                        "{} is not one of the {}: expected {five} or {six}",
                        number.map_or_else(|| "this".to_owned(), |n| n.to_string()),
                        table.plural()
                    ),
                );
                continue;
            }
        };
        let number = number.expect("parsed above");
        if !seen.insert(number) {
            continue;
        }
        registers.push(RegisterSettings {
            address,
            value_type: ValueType::UInt16,
            order: Order::ABCD,
            multiplier,
            offset: None,
            data_type: DataType::Int,
            key: crate::model::Text::from(format!("{}_{number}", table.name())).shared(),
            metadata: Vec::new(),
            unit: None,
            naming: Default::default(),
        });
    }
}
