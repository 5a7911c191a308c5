//! Settings of a `type: modbus` (or `modbus_tcp`) poller, validated with every error
//! located (see the module doc of [`super`] for the YAML).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use super::address::{parse_modicon, parse_modicon_text, Address, Table};
use super::decode::{Order, ValueType};
use crate::model::{DataType, Metadata, Text};
use crate::yaml::describe;
use crate::yaml::{
    check_user_key, parse_metadata, parse_naming, Document, DurationMs, Fields, Naming, Port,
    Setting, YamlPath,
};

pub const DEFAULT_PORT: u16 = 502;
pub const DEFAULT_UNIT: u8 = 1;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The protocol's own limits for one read (Modbus Application Protocol
/// v1.1b, functions 01 to 04).
pub const MAX_REGISTERS_PER_READ: u16 = 125;
pub const MAX_BITS_PER_READ: u16 = 2000;
pub const DEFAULT_MAX_CONCURRENT_TARGETS: usize = 16;
pub const DEFAULT_BAUD_RATE: u32 = 9600;
/// Retries of a garbled reply (CRC error) or one from the wrong unit, on
/// the RTU transports; Modbus TCP frames are checked by TCP itself.
pub const DEFAULT_RTU_RETRIES: u8 = 1;
pub const MAX_RETRIES: u8 = 5;
/// The highest unit id a serial device may have; 0 is broadcast, which
/// nothing answers.
pub const MAX_SERIAL_UNIT: u8 = 247;

/// How requests reach the devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP: MBAP header, no CRC.
    Tcp,
    /// RTU frames (unit, PDU, CRC) over a TCP socket, as cheap serial
    /// gateways pass them through.
    RtuOverTcp,
    /// RTU on a local serial port.
    Rtu(SerialSettings),
}

impl Transport {
    /// The name `transport:` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::RtuOverTcp => "rtu_over_tcp",
            Transport::Rtu(_) => "rtu",
        }
    }
}

/// A serial line's settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerialSettings {
    /// The port, e.g. `/dev/ttyUSB0` or a `/dev/serial/by-id/` link.
    pub device: String,
    pub baud_rate: u32,
    pub parity: Parity,
    /// 7 or 8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
}

impl SerialSettings {
    /// Bits on the wire per character: start, data, parity, stop.
    pub fn bits_per_character(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// The silence that must separate two frames: 3.5 characters, and at
    /// least 1.75 ms above 19,200 baud (Modbus over Serial Line v1.02,
    /// 2.5.1.1), where the character time is too short for a UART to time.
    pub fn inter_frame_silence(&self) -> Duration {
        if self.baud_rate > 19_200 {
            return Duration::from_micros(1750);
        }
        let bits = u64::from(self.bits_per_character()) * 7; // 3.5 characters, doubled
        Duration::from_micros(bits * 1_000_000 / (2 * u64::from(self.baud_rate.max(1))))
    }
}

impl std::fmt::Display for SerialSettings {
    /// `/dev/ttyUSB0 9600 8N1`, as serial settings are usually written.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parity = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        write!(
            f,
            "{} {} {}{}{}",
            self.device, self.baud_rate, self.data_bits, parity, self.stop_bits
        )
    }
}

/// Also accepted as the letters of the usual notation (`8E1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[serde(alias = "N", alias = "n")]
    None,
    #[serde(alias = "E", alias = "e")]
    Even,
    #[serde(alias = "O", alias = "o")]
    Odd,
}

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
    pub transport: Transport,
    /// How often a garbled reply or one from the wrong unit is asked
    /// again.
    pub retries: u8,
}

/// One device (or one unit behind a gateway) and what to read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSettings {
    /// As written in the configuration, for logs.
    pub address: String,
    /// The host, or with `transport: rtu` the serial device.
    pub host: String,
    /// 0 with `transport: rtu`.
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
    /// share one TCP connection (or serial port).
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
    /// Shared by every reading of the register.
    pub key: Text,
    /// Attached after the `unit` metadata every Modbus datapoint carries;
    /// shared by every reading of the register.
    pub metadata: Vec<Metadata>,
    /// Overrides the target's unit for this register.
    pub unit: Option<u8>,
    /// Its name and unit for `translations`.
    pub naming: Naming,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModbus {
    /// Optional only with `transport: rtu`, where it defaults to `unit`.
    targets: Option<Vec<Value>>,
    registers: Vec<Value>,
    unit: Option<u8>,
    timeout_ms: Option<u64>,
    max_registers_per_read: Option<u16>,
    max_bits_per_read: Option<u16>,
    max_gap: Option<u16>,
    max_concurrent_targets: Option<usize>,
    byte_order: Option<String>,
    transport: Option<String>,
    retries: Option<u8>,
    device: Option<String>,
    baud_rate: Option<u32>,
    parity: Option<Parity>,
    data_bits: Option<u8>,
    stop_bits: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    address: Option<String>,
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
    description: Option<String>,
    units: Option<String>,
}

impl ModbusSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawModbus = doc.deserialize(path, value)?;
        let mut fields = Fields::new(path);
        let timeout = fields.read(
            doc,
            "timeout_ms",
            raw.timeout_ms,
            DurationMs::or(DEFAULT_TIMEOUT),
        );
        let max_registers_per_read = fields.read(
            doc,
            "max_registers_per_read",
            raw.max_registers_per_read,
            PerRead(MAX_REGISTERS_PER_READ),
        );
        let max_bits_per_read = fields.read(
            doc,
            "max_bits_per_read",
            raw.max_bits_per_read,
            PerRead(MAX_BITS_PER_READ),
        );
        let max_gap = fields.read(doc, "max_gap", raw.max_gap, Gap(max_registers_per_read));
        let max_concurrent_targets = fields.read(
            doc,
            "max_concurrent_targets",
            raw.max_concurrent_targets,
            AtLeastOne(DEFAULT_MAX_CONCURRENT_TARGETS),
        );
        let default_order = fields.read(
            doc,
            "byte_order",
            raw.byte_order.clone(),
            ByteOrder(Order::ABCD),
        );
        let mut ok = true;
        let limits = (max_registers_per_read, max_bits_per_read);
        let registers = parse_registers(doc, path, &raw.registers, default_order, limits, &mut ok);
        let transport = parse_transport(doc, path, &raw, &mut ok);
        let retries = fields.read(doc, "retries", raw.retries, RetriesOf(&transport));

        let unit = raw.unit.unwrap_or(DEFAULT_UNIT);
        let serial = match &transport {
            Transport::Rtu(serial) => Some(serial),
            _ => None,
        };
        if serial.is_some() {
            check_serial_units(doc, path, unit, &registers, &mut ok);
        }
        let targets = parse_targets(doc, path, raw.targets, unit, serial, &registers, &mut ok)?;

        (ok && fields.ok()).then_some(ModbusSettings {
            targets,
            timeout,
            max_registers_per_read,
            max_bits_per_read,
            max_gap,
            max_concurrent_targets,
            transport,
            retries,
        })
    }

    pub fn describe(&self) -> String {
        let values: usize = self.targets.iter().map(|t| t.registers.len()).sum();
        if let Transport::Rtu(serial) = &self.transport {
            let units: Vec<String> = self.targets.iter().map(|t| t.unit.to_string()).collect();
            // Not an error: an adapter may be plugged in after the agent
            // starts, and the port is opened when it is there.
            let missing = if std::path::Path::new(&serial.device).exists() {
                ""
            } else {
                " (the device does not exist now; it is opened once it does)"
            };
            return format!(
                "reads {values} value(s) in all over Modbus RTU on {serial} from unit(s) {}{missing}",
                units.join(", ")
            );
        }
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| {
                format!(
                    "{} unit {}",
                    crate::address::host_port(&t.host, t.port),
                    t.unit
                )
            })
            .collect();
        let over = match self.transport {
            Transport::RtuOverTcp => "Modbus RTU over TCP",
            _ => "Modbus TCP",
        };
        format!(
            "reads {values} value(s) in all over {over} from {}",
            targets.join(", ")
        )
    }
}

fn check_serial_unit(doc: &mut Document, path: &YamlPath, unit: u8, ok: &mut bool) {
    if !(1..=MAX_SERIAL_UNIT).contains(&unit) {
        doc.error(
            path,
            format!("unit {unit} cannot answer on a serial line: expected 1 to {MAX_SERIAL_UNIT} (0 is broadcast)"),
        );
        *ok = false;
    }
}

/// `max_registers_per_read` or `max_bits_per_read`: 1 to the protocol's
/// limit for one read, which is also the default.
struct PerRead(u16);

impl Setting for PerRead {
    type Given = u16;
    type Value = u16;

    fn default_value(&self) -> u16 {
        self.0
    }

    fn check(&self, given: u16) -> Result<u16, String> {
        let max = self.0;
        if (1..=max).contains(&given) {
            Ok(given)
        } else {
            Err(format!(
                "{given} is out of range: expected 1 to {max}, the protocol's limit"
            ))
        }
    }
}

/// `max_gap`: fewer registers than one read asks for (the given limit);
/// none by default.
struct Gap(u16);

impl Setting for Gap {
    type Given = u16;
    type Value = u16;

    fn default_value(&self) -> u16 {
        0
    }

    fn check(&self, given: u16) -> Result<u16, String> {
        if given < self.0 {
            Ok(given)
        } else {
            Err(format!(
                "must be less than max_registers_per_read ({})",
                self.0
            ))
        }
    }
}

/// `max_concurrent_targets`: any number from 1.
struct AtLeastOne(usize);

impl Setting for AtLeastOne {
    type Given = usize;
    type Value = usize;

    fn default_value(&self) -> usize {
        self.0
    }

    fn check(&self, given: usize) -> Result<usize, String> {
        if given == 0 {
            Err("must be at least 1".to_owned())
        } else {
            Ok(given)
        }
    }
}

/// `byte_order` or a register's `order`, such as `ABCD` or `CDAB`.
struct ByteOrder(Order);

impl Setting for ByteOrder {
    type Given = String;
    type Value = Order;

    fn default_value(&self) -> Order {
        self.0
    }

    fn check(&self, given: String) -> Result<Order, String> {
        given.parse()
    }
}

/// `retries` of a garbled reply: none over Modbus TCP (TCP checks its
/// frames), [`DEFAULT_RTU_RETRIES`] over RTU, at most [`MAX_RETRIES`].
struct RetriesOf<'a>(&'a Transport);

impl Setting for RetriesOf<'_> {
    type Given = u8;
    type Value = u8;

    fn default_value(&self) -> u8 {
        match self.0 {
            Transport::Tcp => 0,
            _ => DEFAULT_RTU_RETRIES,
        }
    }

    fn check(&self, given: u8) -> Result<u8, String> {
        if given <= MAX_RETRIES {
            Ok(given)
        } else {
            Err(format!("{given} is too many: at most {MAX_RETRIES}; each retry of a garbled reply can cost a timeout"))
        }
    }
}

/// Every register, each with a key of its own (per unit).
fn parse_registers(
    doc: &mut Document,
    path: &YamlPath,
    entries: &[Value],
    default_order: Order,
    limits: (u16, u16),
    ok: &mut bool,
) -> Arc<[RegisterSettings]> {
    let mut registers = Vec::new();
    let list = path.key("registers");
    if entries.is_empty() {
        doc.error(&list, "must list at least one register to read");
        *ok = false;
    }
    let mut keys: HashMap<(String, Option<u8>), usize> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = list.index(i);
        let Some(register) = parse_register(doc, &at, entry, default_order, limits) else {
            *ok = false;
            continue;
        };
        let id = (crate::model::normalise_key(&register.key), register.unit);
        if let Some(first) = keys.insert(id, i) {
            doc.error(
                &at,
                format!(
                    "key {:?} is already used by registers[{first}]; give one of them its own `key`",
                    register.key
                ),
            );
            *ok = false;
        }
        registers.push(register);
    }
    registers.into()
}

/// On a serial line, the poller's unit and every register's own.
fn check_serial_units(
    doc: &mut Document,
    path: &YamlPath,
    unit: u8,
    registers: &[RegisterSettings],
    ok: &mut bool,
) {
    check_serial_unit(doc, &path.key("unit"), unit, ok);
    for (i, register) in registers.iter().enumerate() {
        if let Some(unit) = register.unit {
            check_serial_unit(
                doc,
                &path.key("registers").index(i).key("unit"),
                unit,
                ok,
            );
        }
    }
}

/// `targets`: devices (`host:port`) or, on a serial line, unit ids, each
/// reading all of `registers`. `None` when `targets` is missing where it
/// is needed.
fn parse_targets(
    doc: &mut Document,
    path: &YamlPath,
    given: Option<Vec<Value>>,
    unit: u8,
    serial: Option<&SerialSettings>,
    registers: &Arc<[RegisterSettings]>,
    ok: &mut bool,
) -> Option<Vec<TargetSettings>> {
    let list = path.key("targets");
    let entries = match (given, serial) {
        (Some(targets), _) => targets,
        // One device on the line, at the poller's unit.
        (None, Some(_)) => vec![Value::Number(unit.into())],
        (None, None) => {
            doc.error(
                path,
                "missing `targets`: list the devices to read, e.g. [\"10.0.0.5:502\"]",
            );
            return None;
        }
    };
    let mut targets = Vec::new();
    if entries.is_empty() {
        doc.error(
            &list,
            if serial.is_some() {
                "must list at least one unit id on the line, e.g. [1, 2]"
            } else {
                "must list at least one device, e.g. [\"10.0.0.5:502\"]"
            },
        );
        *ok = false;
    }
    for (i, entry) in entries.iter().enumerate() {
        let at = list.index(i);
        let Some(raw_target) = target_entry(doc, &at, entry, serial) else {
            *ok = false;
            continue;
        };
        let Some((address, host, port)) = target_endpoint(doc, &at, serial, raw_target.address)
        else {
            *ok = false;
            continue;
        };
        let target_unit = raw_target.unit.unwrap_or(unit);
        if serial.is_some() && raw_target.unit.is_some() {
            let at_unit = match entry {
                Value::Mapping(_) => at.key("unit"),
                _ => at.clone(),
            };
            check_serial_unit(doc, &at_unit, target_unit, ok);
        }
        let target = TargetSettings {
            name: raw_target
                .name
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| address.clone()),
            address,
            host,
            port,
            unit: target_unit,
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
            *ok = false;
        }
        targets.push(target);
    }
    Some(targets)
}

/// One entry of `targets` in its long form: an address, a unit id on a
/// serial line, or a mapping.
fn target_entry(
    doc: &mut Document,
    at: &YamlPath,
    entry: &Value,
    serial: Option<&SerialSettings>,
) -> Option<RawTarget> {
    match entry {
        Value::String(address) => Some(RawTarget {
            address: Some(address.clone()),
            unit: None,
            name: None,
        }),
        // A bare number is a unit id on the serial line.
        Value::Number(n) if serial.is_some() => {
            match n.as_u64().and_then(|n| u8::try_from(n).ok()) {
                Some(unit) => Some(RawTarget {
                    address: None,
                    unit: Some(unit),
                    name: None,
                }),
                None => {
                    doc.error(
                        at,
                        format!("{n} is not a unit id: expected 1 to {MAX_SERIAL_UNIT}"),
                    );
                    None
                }
            }
        }
        Value::Mapping(_) => doc.deserialize::<RawTarget>(at, entry),
        other => {
            let expected = if serial.is_some() {
                "a unit id such as 1 or {unit, name}"
            } else {
                "\"host\", \"host:port\" or {address, unit, name}"
            };
            doc.error(
                at,
                format!("expected {expected}, found {}", describe(other)),
            );
            None
        }
    }
}

/// A target's address as written, host and port: the serial device on a
/// serial line, where a target has no address of its own.
fn target_endpoint(
    doc: &mut Document,
    at: &YamlPath,
    serial: Option<&SerialSettings>,
    address: Option<String>,
) -> Option<(String, String, u16)> {
    match (serial, address) {
        (Some(serial), None) => Some((serial.device.clone(), serial.device.clone(), 0)),
        (Some(serial), Some(address)) => {
            doc.error(
                at,
                format!(
                    "{address:?}: with `transport: rtu` a target is a unit id on the serial line {}; the line is set by `device`",
                    serial.device
                ),
            );
            None
        }
        (None, Some(address)) => {
            let (host, port) = parse_host_port(doc, at, &address)?;
            Some((address.trim().to_owned(), host, port))
        }
        (None, None) => {
            doc.error(
                at,
                "missing `address`: the device's \"host\" or \"host:port\"",
            );
            None
        }
    }
}

impl ModbusSettings {
    /// Refuses pollers that give one serial port different line settings
    /// (baud rate, parity, data or stop bits): every device on a line
    /// speaks its one setting, and a port shared by pollers is opened
    /// once. Two spellings of one port (a `/dev/serial/by-id/` link and its
    /// target) are one port, as when it is opened.
    pub(crate) fn check_serial_lines(
        doc: &mut Document,
        pollers: &[(&YamlPath, &str, &ModbusSettings)],
    ) {
        // The first poller naming each port: where, its name, its line.
        let mut first: HashMap<String, (&YamlPath, &str, &SerialSettings)> = HashMap::new();
        for &(path, name, settings) in pollers {
            let Transport::Rtu(serial) = &settings.transport else {
                continue;
            };
            let port = std::fs::canonicalize(&serial.device)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| serial.device.clone());
            let Some(&(first_path, first_name, first_serial)) = first.get(&port) else {
                first.insert(port, (path, name, serial));
                continue;
            };
            let same_line = (
                serial.baud_rate,
                serial.parity,
                serial.data_bits,
                serial.stop_bits,
            ) == (
                first_serial.baud_rate,
                first_serial.parity,
                first_serial.data_bits,
                first_serial.stop_bits,
            );
            if same_line {
                continue;
            }
            let first_at = match doc.position(first_path) {
                Some((line, _)) => format!("{first_path}, line {line}"),
                None => first_path.to_string(),
            };
            let spelled = if first_serial.device == serial.device {
                String::new()
            } else {
                format!(" (written {} there)", first_serial.device)
            };
            doc.error(
                &path.key("device"),
                format!(
                    "pollers `{name}` and `{first_name}` ({first_at}) give the serial port {}{spelled} different line settings: {} here, {} there; the devices on one port share one line, so give both the same baud_rate, parity, data_bits and stop_bits",
                    serial.device,
                    line(serial),
                    line(first_serial),
                ),
            );
        }
    }
}

/// `9600 8N1`: a line's settings as usually written, without the port.
fn line(serial: &SerialSettings) -> String {
    let full = serial.to_string();
    full[serial.device.len()..].trim_start().to_owned()
}

/// `transport` and, for `rtu`, the serial line. Serial keys given with
/// another transport are errors: they would do nothing.
fn parse_transport(
    doc: &mut Document,
    path: &YamlPath,
    raw: &RawModbus,
    ok: &mut bool,
) -> Transport {
    let name = raw
        .transport
        .as_deref()
        .map(|t| t.trim().to_ascii_lowercase());
    let serial_keys = [
        ("device", raw.device.is_some()),
        ("baud_rate", raw.baud_rate.is_some()),
        ("parity", raw.parity.is_some()),
        ("data_bits", raw.data_bits.is_some()),
        ("stop_bits", raw.stop_bits.is_some()),
    ];
    let transport = match name.as_deref() {
        None | Some("tcp") => Transport::Tcp,
        Some("rtu_over_tcp") => Transport::RtuOverTcp,
        Some("rtu") => return Transport::Rtu(parse_serial_line(doc, path, raw, ok)),
        Some(other) => {
            doc.error(
                &path.key("transport"),
                format!("unknown transport {other:?}: expected tcp, rtu_over_tcp or rtu"),
            );
            *ok = false;
            return Transport::Tcp;
        }
    };
    for (key, given) in serial_keys {
        if given {
            doc.error(
                &path.key(key),
                format!("`{key}` is a serial setting: it needs `transport: rtu`"),
            );
            *ok = false;
        }
    }
    transport
}

/// The serial line of `transport: rtu`: `device`, and its speed and
/// framing (9600 8N1 unless given).
fn parse_serial_line(
    doc: &mut Document,
    path: &YamlPath,
    raw: &RawModbus,
    ok: &mut bool,
) -> SerialSettings {
    let device = match raw.device.as_deref().map(str::trim) {
        Some(device) if device.starts_with('/') => device.to_owned(),
        Some(device) => {
            doc.error(
                &path.key("device"),
                format!("{device:?} is not a serial device path: expected e.g. /dev/ttyUSB0 or /dev/serial/by-id/..."),
            );
            *ok = false;
            String::new()
        }
        None => {
            doc.error(
                path,
                "missing `device`: with `transport: rtu`, name the serial port, e.g. device: /dev/ttyUSB0",
            );
            *ok = false;
            String::new()
        }
    };
    let mut fields = Fields::new(path);
    let baud_rate = fields.read(
        doc,
        "baud_rate",
        raw.baud_rate,
        LineSetting {
            default: DEFAULT_BAUD_RATE,
            range: 300..=4_000_000,
            refused: |n| format!("{n} is not a serial speed: expected e.g. 9600, 19200 or 115200"),
        },
    );
    let data_bits = fields.read(
        doc,
        "data_bits",
        raw.data_bits,
        LineSetting {
            default: 8,
            range: 7..=8,
            refused: |_| "must be 7 or 8 (Modbus RTU uses 8)".to_owned(),
        },
    );
    let stop_bits = fields.read(
        doc,
        "stop_bits",
        raw.stop_bits,
        LineSetting {
            default: 1,
            range: 1..=2,
            refused: |_| "must be 1 or 2".to_owned(),
        },
    );
    *ok &= fields.ok();
    SerialSettings {
        device,
        baud_rate,
        parity: raw.parity.unwrap_or(Parity::None),
        data_bits,
        stop_bits,
    }
}

/// A serial line's speed or framing: a value in `range`, and what to say
/// of one outside it.
struct LineSetting<T> {
    default: T,
    range: std::ops::RangeInclusive<T>,
    refused: fn(T) -> String,
}

impl<T: Copy + PartialOrd> Setting for LineSetting<T> {
    type Given = T;
    type Value = T;

    fn default_value(&self) -> T {
        self.default
    }

    fn check(&self, given: T) -> Result<T, String> {
        if self.range.contains(&given) {
            Ok(given)
        } else {
            Err((self.refused)(given))
        }
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
    let port = match port.map(Port::from_text) {
        None => DEFAULT_PORT,
        Some(Ok(Port(port))) => port,
        Some(Err(message)) => {
            doc.error(path, format!("{text:?}: {message}"));
            return None;
        }
    };
    Some((host.to_owned(), port))
}

fn parse_register(
    doc: &mut Document,
    path: &YamlPath,
    entry: &Value,
    default_order: Order,
    limits: (u16, u16),
) -> Option<RegisterSettings> {
    let raw = register_entry(doc, path, entry)?;
    let at_address = match entry {
        Value::Mapping(_) => path.key("address"),
        _ => path.clone(),
    };
    let (address, written) = register_address(doc, path, &at_address, &raw)?;
    let value_type = register_type(doc, path, &raw, address.table)?;
    let mut ok = check_type(doc, path, &raw, address.table, value_type);
    ok &= check_span(doc, path, &at_address, address, value_type, limits);
    let mut fields = Fields::new(path);
    let order = fields.read(doc, "order", raw.order.clone(), ByteOrder(default_order));
    ok &= fields.ok();
    ok &= check_scaling(doc, path, &raw, address.table, value_type);
    let data_type = register_data_type(doc, path, &raw, value_type, &mut ok);
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
    let metadata = register_metadata(doc, path, raw.metadata.as_ref(), &mut ok);
    let naming = parse_naming(doc, path, raw.description.as_deref(), raw.units.as_deref());
    ok &= naming.is_some();

    ok.then_some(RegisterSettings {
        address,
        value_type,
        order,
        multiplier: raw.multiplier,
        offset: raw.offset,
        data_type,
        key: Text::from(key).shared(),
        metadata: metadata.iter().map(Metadata::shared).collect(),
        unit: raw.unit,
        naming: naming?,
    })
}

/// A register as a bare number (`30001`, `"400001"`) or a mapping.
fn register_entry(doc: &mut Document, path: &YamlPath, entry: &Value) -> Option<RawRegister> {
    match entry {
        Value::Number(_) | Value::String(_) => Some(RawRegister {
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
            description: None,
            units: None,
        }),
        Value::Mapping(_) => doc.deserialize(path, entry),
        other => {
            doc.error(
                path,
                format!(
                    "expected a register number such as 30001, or a mapping with `address`, found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

/// The register's table and offset, and the number as written: it names
/// the default key, as the Python agent does (`input_register_300387` for
/// a six-digit number).
fn register_address(
    doc: &mut Document,
    path: &YamlPath,
    at_address: &YamlPath,
    raw: &RawRegister,
) -> Option<(Address, Option<u64>)> {
    match (&raw.table, &raw.address) {
        (Some(table_name), address) => {
            let Some(table) = Table::from_name(table_name) else {
                doc.error(
                    &path.key("table"),
                    format!("unknown table {table_name:?}: expected {}", Table::NAMES),
                );
                return None;
            };
            let offset = match address {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                _ => None,
            };
            let Some(offset) = offset else {
                doc.error(
                    at_address,
                    "with `table`, the address is zero-based: expected a number from 0 to 65535",
                );
                return None;
            };
            Some((Address { table, offset }, None))
        }
        // YAML reads `010001` as 10001 (a discrete input); as written, the
        // leading zero says coil, as device manuals mean it.
        (None, Value::Number(_))
            if doc
                .written(at_address)
                .is_some_and(|text| text.len() > 1 && text.starts_with('0')) =>
        {
            let text = doc.written(at_address).expect("checked above").to_owned();
            match parse_modicon_text(&text) {
                Ok(address) => Some((address, text.parse().ok())),
                Err(message) => {
                    doc.error(at_address, message);
                    None
                }
            }
        }
        (None, Value::Number(n)) => match n.as_u64().map(parse_modicon) {
            Some(Ok(address)) => Some((address, n.as_u64())),
            Some(Err(message)) => {
                doc.error(at_address, message);
                None
            }
            None => {
                doc.error(
                    at_address,
                    format!("{n} is not a register number such as 30001 or 400001"),
                );
                None
            }
        },
        (None, Value::String(text)) => match parse_modicon_text(text) {
            Ok(address) => Some((address, text.trim().parse().ok())),
            Err(message) => {
                doc.error(at_address, message);
                None
            }
        },
        (None, other) => {
            doc.error(
                at_address,
                format!(
                    "expected a register number such as 30001, found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

/// `type` (with `length` for a string), or the table's default: bool for
/// bits, a string where a length is given, else uint16.
fn register_type(
    doc: &mut Document,
    path: &YamlPath,
    raw: &RawRegister,
    table: Table,
) -> Option<ValueType> {
    let value_type = match raw.value_type.as_deref() {
        None if table.is_bits() => ValueType::Bool,
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
    Some(match value_type {
        ValueType::String { .. } => ValueType::String {
            registers: raw.length.unwrap_or(0),
        },
        other => other,
    })
}

/// Whether the type suits the table, and `length` the type. Returns
/// whether it does.
fn check_type(
    doc: &mut Document,
    path: &YamlPath,
    raw: &RawRegister,
    table: Table,
    value_type: ValueType,
) -> bool {
    let bits = table.is_bits();
    let mut ok = true;
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
                format!("{} hold single bits: the type must be bool", table.plural()),
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
    ok
}

/// Whether the value fits in one read and in its table. Returns whether
/// it does.
fn check_span(
    doc: &mut Document,
    path: &YamlPath,
    at_address: &YamlPath,
    address: Address,
    value_type: ValueType,
    (max_registers, max_bits): (u16, u16),
) -> bool {
    let mut ok = true;
    let width = value_type.width().max(1);
    let per_read = if address.table.is_bits() {
        max_bits
    } else {
        max_registers
    };
    if width > per_read {
        doc.error(
            path,
            format!("spans {width} registers, more than one read may ask for ({per_read})"),
        );
        ok = false;
    }
    if u32::from(address.offset) + u32::from(width) > 65_536 {
        doc.error(
            at_address,
            format!(
                "a {width}-register value starting here runs past the end of the {} table",
                address.table.plural()
            ),
        );
        ok = false;
    }
    ok
}

/// `multiplier` and `offset`: finite, and only on numbers read from
/// registers. Returns whether they are fine.
fn check_scaling(
    doc: &mut Document,
    path: &YamlPath,
    raw: &RawRegister,
    table: Table,
    value_type: ValueType,
) -> bool {
    let is_text = matches!(value_type, ValueType::String { .. });
    let mut ok = true;
    for (key, given) in [("multiplier", raw.multiplier), ("offset", raw.offset)] {
        match given {
            Some(_) if is_text || table.is_bits() => {
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
    ok
}

/// `data_type`, or what the value is posted as: string for text, float
/// for floats and values scaled by a fraction, else int.
fn register_data_type(
    doc: &mut Document,
    path: &YamlPath,
    raw: &RawRegister,
    value_type: ValueType,
    ok: &mut bool,
) -> DataType {
    let is_text = matches!(value_type, ValueType::String { .. });
    let scaled_to_fraction = [raw.multiplier, raw.offset]
        .iter()
        .flatten()
        .any(|n| n.fract() != 0.0);
    match raw.data_type {
        Some(DataType::String) if !is_text => {
            doc.error(
                &path.key("data_type"),
                "only strings are posted as string; this value is a number",
            );
            *ok = false;
            DataType::String
        }
        Some(data_type) if is_text && data_type != DataType::String => {
            doc.error(&path.key("data_type"), "a string must be posted as string");
            *ok = false;
            data_type
        }
        Some(data_type) => data_type,
        None if is_text => DataType::String,
        None if value_type.is_float() || scaled_to_fraction => DataType::Float,
        None => DataType::Int,
    }
}

/// The register's own `metadata`; `unit` is the poller's to set.
fn register_metadata(
    doc: &mut Document,
    path: &YamlPath,
    given: Option<&Value>,
    ok: &mut bool,
) -> Vec<Metadata> {
    let metadata = match given {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => match parse_metadata(doc, &path.key("metadata"), value) {
            Some(metadata) => metadata,
            None => {
                *ok = false;
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
        *ok = false;
    }
    metadata
}
