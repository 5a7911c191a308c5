//! Settings of a `type: modbus_tcp` poller, validated with every error
//! located (see the module doc of [`super`] for the YAML).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use super::address::{parse_modicon, parse_modicon_text, Address, Table};
use super::decode::{Order, ValueType};
use crate::model::{DataType, Metadata};
use crate::yaml::describe;
use crate::yaml::{check_user_key, parse_metadata, Document, YamlPath};

pub const DEFAULT_PORT: u16 = 502;
pub const DEFAULT_UNIT: u8 = 1;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The protocol's own limits for one read (Modbus Application Protocol
/// v1.1b, functions 01 to 04).
pub const MAX_REGISTERS_PER_READ: u16 = 125;
pub const MAX_BITS_PER_READ: u16 = 2000;
pub const DEFAULT_MAX_CONCURRENT_TARGETS: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusSettings {
    pub targets: Vec<TargetSettings>,
    /// Limit for connecting and for each request.
    pub timeout: Duration,
    pub max_registers_per_read: u16,
    pub max_bits_per_read: u16,
    /// Largest run of unwanted registers read to save a request.
    pub max_gap: u16,
    /// How many host:port connections are polled at once.
    pub max_concurrent_targets: usize,
}

/// One device (or one unit behind a gateway) and what to read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSettings {
    /// As written in the configuration, for logs.
    pub address: String,
    pub host: String,
    pub port: u16,
    /// The `pattoo_agent_polled_target` of its datapoints.
    pub name: String,
    pub unit: u8,
    /// Shared by every target of a poller: with a thousand devices and a
    /// hundred registers, a copy per target was megabytes of the daemon's
    /// memory.
    pub registers: Arc<[RegisterSettings]>,
}

impl TargetSettings {
    /// The connection this target is read through; targets sharing it
    /// share one TCP connection.
    pub fn endpoint(&self) -> (String, u16) {
        (self.host.to_ascii_lowercase(), self.port)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegisterSettings {
    pub address: Address,
    pub value_type: ValueType,
    pub order: Order,
    pub multiplier: Option<f64>,
    pub offset: Option<f64>,
    pub data_type: DataType,
    pub key: String,
    /// Attached after the `unit` metadata every Modbus datapoint carries.
    pub metadata: Vec<Metadata>,
    /// Overrides the target's unit for this register.
    pub unit: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModbus {
    targets: Vec<Value>,
    registers: Vec<Value>,
    unit: Option<u8>,
    timeout_ms: Option<u64>,
    max_registers_per_read: Option<u16>,
    max_bits_per_read: Option<u16>,
    max_gap: Option<u16>,
    max_concurrent_targets: Option<usize>,
    byte_order: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    address: String,
    unit: Option<u8>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegister {
    address: Value,
    table: Option<String>,
    #[serde(rename = "type")]
    value_type: Option<String>,
    order: Option<String>,
    length: Option<u16>,
    multiplier: Option<f64>,
    offset: Option<f64>,
    data_type: Option<DataType>,
    key: Option<String>,
    metadata: Option<Value>,
    unit: Option<u8>,
}

impl ModbusSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawModbus = doc.deserialize(path, value)?;
        let mut ok = true;
        let timeout = match raw.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(ms) if ms > 0 => Duration::from_millis(ms),
            Some(_) => {
                doc.error(&path.key("timeout_ms"), "must be more than 0");
                ok = false;
                DEFAULT_TIMEOUT
            }
        };
        let mut limit = |key: &str, given: Option<u16>, max: u16| match given {
            None => max,
            Some(n) if (1..=max).contains(&n) => n,
            Some(n) => {
                doc.error(
                    &path.key(key),
                    format!("{n} is out of range: expected 1 to {max}, the protocol's limit"),
                );
                ok = false;
                max
            }
        };
        let max_registers_per_read = limit(
            "max_registers_per_read",
            raw.max_registers_per_read,
            MAX_REGISTERS_PER_READ,
        );
        let max_bits_per_read = limit(
            "max_bits_per_read",
            raw.max_bits_per_read,
            MAX_BITS_PER_READ,
        );
        let max_gap = raw.max_gap.unwrap_or(0);
        if max_gap >= max_registers_per_read {
            doc.error(
                &path.key("max_gap"),
                format!("must be less than max_registers_per_read ({max_registers_per_read})"),
            );
            ok = false;
        }
        let max_concurrent_targets = match raw.max_concurrent_targets {
            None => DEFAULT_MAX_CONCURRENT_TARGETS,
            Some(0) => {
                doc.error(&path.key("max_concurrent_targets"), "must be at least 1");
                ok = false;
                1
            }
            Some(n) => n,
        };
        let default_order = match raw.byte_order.as_deref().map(str::parse::<Order>) {
            None => Order::ABCD,
            Some(Ok(order)) => order,
            Some(Err(message)) => {
                doc.error(&path.key("byte_order"), message);
                ok = false;
                Order::ABCD
            }
        };

        let mut registers = Vec::new();
        let list = path.key("registers");
        if raw.registers.is_empty() {
            doc.error(&list, "must list at least one register to read");
            ok = false;
        }
        let mut keys: HashMap<(String, Option<u8>), usize> = HashMap::new();
        for (i, entry) in raw.registers.iter().enumerate() {
            let at = list.index(i);
            let limits = (max_registers_per_read, max_bits_per_read);
            match parse_register(doc, &at, entry, default_order, limits) {
                Some(register) => {
                    let id = (crate::model::normalise_key(&register.key), register.unit);
                    if let Some(first) = keys.insert(id, i) {
                        doc.error(
                            &at,
                            format!(
                                "key {:?} is already used by registers[{first}]; give one of them its own `key`",
                                register.key
                            ),
                        );
                        ok = false;
                    }
                    registers.push(register);
                }
                None => ok = false,
            }
        }

        let registers: Arc<[RegisterSettings]> = registers.into();
        let unit = raw.unit.unwrap_or(DEFAULT_UNIT);
        let mut targets = Vec::new();
        let list = path.key("targets");
        if raw.targets.is_empty() {
            doc.error(
                &list,
                "must list at least one device, e.g. [\"10.0.0.5:502\"]",
            );
            ok = false;
        }
        for (i, entry) in raw.targets.iter().enumerate() {
            let at = list.index(i);
            let raw_target = match entry {
                Value::String(address) => RawTarget {
                    address: address.clone(),
                    unit: None,
                    name: None,
                },
                Value::Mapping(_) => match doc.deserialize::<RawTarget>(&at, entry) {
                    Some(target) => target,
                    None => {
                        ok = false;
                        continue;
                    }
                },
                other => {
                    doc.error(
                        &at,
                        format!(
                            "expected \"host\", \"host:port\" or {{address, unit, name}}, found {}",
                            describe(other)
                        ),
                    );
                    ok = false;
                    continue;
                }
            };
            let Some((host, port)) = parse_host_port(doc, &at, &raw_target.address) else {
                ok = false;
                continue;
            };
            let address = raw_target.address.trim().to_owned();
            let target = TargetSettings {
                name: raw_target
                    .name
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| address.clone()),
                address,
                host,
                port,
                unit: raw_target.unit.unwrap_or(unit),
                registers: registers.clone(),
            };
            if targets
                .iter()
                .any(|t: &TargetSettings| t.name == target.name && t.unit == target.unit)
            {
                doc.error(
                    &at,
                    format!(
                        "target {} unit {} is listed twice",
                        target.name, target.unit
                    ),
                );
                ok = false;
            }
            targets.push(target);
        }

        ok.then_some(ModbusSettings {
            targets,
            timeout,
            max_registers_per_read,
            max_bits_per_read,
            max_gap,
            max_concurrent_targets,
        })
    }

    pub fn describe(&self) -> String {
        let values: usize = self.targets.iter().map(|t| t.registers.len()).sum();
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| format!("{} unit {}", crate::app::host_port(&t.host, t.port), t.unit))
            .collect();
        format!(
            "reads {values} value(s) in all over Modbus TCP from {}",
            targets.join(", ")
        )
    }
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 literal.
pub(crate) fn parse_host_port(
    doc: &mut Document,
    path: &YamlPath,
    text: &str,
) -> Option<(String, u16)> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => (host, Some(port)),
            },
            None => ("", None),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            _ => (text, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        doc.error(
            path,
            format!("{text:?} is not a device address: expected \"host\" or \"host:port\""),
        );
        return None;
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                doc.error(
                    path,
                    format!("{text:?}: port {port:?} is not a port number from 1 to 65535"),
                );
                return None;
            }
        },
    };
    Some((host.to_owned(), port))
}

fn parse_register(
    doc: &mut Document,
    path: &YamlPath,
    entry: &Value,
    default_order: Order,
    (max_registers, max_bits): (u16, u16),
) -> Option<RegisterSettings> {
    let raw: RawRegister = match entry {
        Value::Number(_) | Value::String(_) => RawRegister {
            address: entry.clone(),
            table: None,
            value_type: None,
            order: None,
            length: None,
            multiplier: None,
            offset: None,
            data_type: None,
            key: None,
            metadata: None,
            unit: None,
        },
        Value::Mapping(_) => doc.deserialize(path, entry)?,
        other => {
            doc.error(
                path,
                format!(
                    "expected a register number such as 30001, or a mapping with `address`, found {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    let at_address = match entry {
        Value::Mapping(_) => path.key("address"),
        _ => path.clone(),
    };
    let mut ok = true;

    // The number as written names the default key, as the Python agent does
    // (`input_register_300387` for a six-digit number).
    let (address, written) = match (&raw.table, &raw.address) {
        (Some(table_name), address) => {
            let Some(table) = Table::from_name(table_name) else {
                doc.error(
                    &path.key("table"),
                    format!("unknown table {table_name:?}: expected coil, discrete_input, input_register or holding_register"),
                );
                return None;
            };
            let offset = match address {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                _ => None,
            };
            let Some(offset) = offset else {
                doc.error(
                    &at_address,
                    "with `table`, the address is zero-based: expected a number from 0 to 65535",
                );
                return None;
            };
            (Address { table, offset }, None)
        }
        // YAML reads `010001` as 10001 (a discrete input); as written, the
        // leading zero says coil, as device manuals mean it.
        (None, Value::Number(_))
            if doc
                .written(&at_address)
                .is_some_and(|text| text.len() > 1 && text.starts_with('0')) =>
        {
            let text = doc.written(&at_address).expect("checked above").to_owned();
            match parse_modicon_text(&text) {
                Ok(address) => (address, text.parse().ok()),
                Err(message) => {
                    doc.error(&at_address, message);
                    return None;
                }
            }
        }
        (None, Value::Number(n)) => match n.as_u64().map(parse_modicon) {
            Some(Ok(address)) => (address, n.as_u64()),
            Some(Err(message)) => {
                doc.error(&at_address, message);
                return None;
            }
            None => {
                doc.error(
                    &at_address,
                    format!("{n} is not a register number such as 30001 or 400001"),
                );
                return None;
            }
        },
        (None, Value::String(text)) => match parse_modicon_text(text) {
            Ok(address) => (address, text.trim().parse().ok()),
            Err(message) => {
                doc.error(&at_address, message);
                return None;
            }
        },
        (None, other) => {
            doc.error(
                &at_address,
                format!(
                    "expected a register number such as 30001, found {}",
                    describe(other)
                ),
            );
            return None;
        }
    };

    let bits = address.table.is_bits();
    let value_type = match raw.value_type.as_deref() {
        None if bits => ValueType::Bool,
        None if raw.length.is_some() => ValueType::String { registers: 0 },
        None => ValueType::UInt16,
        Some(name) => match ValueType::from_name(name, raw.length) {
            Some(value_type) => value_type,
            None => {
                doc.error(
                    &path.key("type"),
                    format!(
                        "unknown type {name:?}: expected one of {}",
                        ValueType::NAMES
                    ),
                );
                return None;
            }
        },
    };
    let value_type = match value_type {
        ValueType::String { .. } => ValueType::String {
            registers: raw.length.unwrap_or(0),
        },
        other => other,
    };
    match value_type {
        ValueType::Bool if !bits => {
            doc.error(
                &path.key("type"),
                "bool is for coils and discrete inputs; a register holds a number or text",
            );
            ok = false;
        }
        other if bits && other != ValueType::Bool => {
            doc.error(
                &path.key("type"),
                format!(
                    "{} hold single bits: the type must be bool",
                    address.table.plural()
                ),
            );
            ok = false;
        }
        ValueType::String { registers: 0 } => {
            doc.error(
                path,
                "a string needs `length`: how many registers (two characters each) it spans",
            );
            ok = false;
        }
        _ => {}
    }
    if raw.length.is_some() && !matches!(value_type, ValueType::String { .. }) {
        doc.error(&path.key("length"), "only strings have a length");
        ok = false;
    }

    let width = value_type.width().max(1);
    let per_read = if bits { max_bits } else { max_registers };
    if width > per_read {
        doc.error(
            path,
            format!("spans {width} registers, more than one read may ask for ({per_read})"),
        );
        ok = false;
    }
    if u32::from(address.offset) + u32::from(width) > 65_536 {
        doc.error(
            &at_address,
            format!(
                "a {width}-register value starting here runs past the end of the {} table",
                address.table.plural()
            ),
        );
        ok = false;
    }

    let order = match raw.order.as_deref().map(str::parse::<Order>) {
        None => default_order,
        Some(Ok(order)) => order,
        Some(Err(message)) => {
            doc.error(&path.key("order"), message);
            ok = false;
            default_order
        }
    };

    let is_text = matches!(value_type, ValueType::String { .. });
    for (key, given) in [("multiplier", raw.multiplier), ("offset", raw.offset)] {
        match given {
            Some(_) if is_text || bits => {
                doc.error(
                    &path.key(key),
                    "only numbers read from registers can be scaled",
                );
                ok = false;
            }
            Some(n) if !n.is_finite() => {
                doc.error(&path.key(key), "must be a finite number");
                ok = false;
            }
            _ => {}
        }
    }

    let scaled_to_fraction = [raw.multiplier, raw.offset]
        .iter()
        .flatten()
        .any(|n| n.fract() != 0.0);
    let data_type = match raw.data_type {
        Some(DataType::String) if !is_text => {
            doc.error(
                &path.key("data_type"),
                "only strings are posted as string; this value is a number",
            );
            ok = false;
            DataType::String
        }
        Some(data_type) if is_text && data_type != DataType::String => {
            doc.error(&path.key("data_type"), "a string must be posted as string");
            ok = false;
            data_type
        }
        Some(data_type) => data_type,
        None if is_text => DataType::String,
        None if value_type.is_float() || scaled_to_fraction => DataType::Float,
        None => DataType::Int,
    };

    let key = match raw.key {
        Some(key) => {
            ok &= check_user_key(doc, &path.key("key"), &key);
            key
        }
        None => format!(
            "{}_{}",
            address.table.name(),
            written.unwrap_or_else(|| u64::from(address.table.modicon(address.offset)))
        ),
    };
    let metadata = match &raw.metadata {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => match parse_metadata(doc, &path.key("metadata"), value) {
            Some(metadata) => metadata,
            None => {
                ok = false;
                Vec::new()
            }
        },
    };
    if metadata
        .iter()
        .any(|m| crate::model::normalise_key(&m.key) == "unit")
    {
        doc.error(
            &path.key("metadata"),
            "`unit` is set by the poller from the Modbus unit id; choose another metadata key",
        );
        ok = false;
    }

    ok.then_some(RegisterSettings {
        address,
        value_type,
        order,
        multiplier: raw.multiplier,
        offset: raw.offset,
        data_type,
        key,
        metadata,
        unit: raw.unit,
    })
}
