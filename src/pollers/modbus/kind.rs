//! The Modbus kind as the table of kinds in `pollers/mod.rs` sees it.

use serde_norway::Value;

use super::{compat, ModbusError, ModbusPoller, ModbusSettings};
use crate::model::translation::{readable, Language, Translation, LABEL_UNITS};
use crate::model::{DataType, TargetData};
use crate::pollers::{DropIn, Example, Kind, Polled, PollerEnv, PollerSettings};
use crate::yaml::{Document, YamlPath};

/// `type: modbus`: Modbus TCP, RTU frames over TCP, RTU on serial lines.
#[derive(Debug)]
pub struct Modbus;

impl Kind for Modbus {
    /// `modbus_tcp` was the kind's only name before serial lines, and
    /// stays valid whatever the `transport:`.
    const NAMES: &'static [&'static str] = &["modbus", "modbus_tcp"];
    const SUMMARY: &'static str =
        "Modbus devices over Modbus TCP, RTU frames over TCP, or RTU on serial lines";
    /// The Python agent's, so devices polled by either keep one identity.
    const DEFAULT_AGENT_PROGRAM: &'static str = compat::PROGRAM;
    const DROP_INS: &'static [DropIn] = &[compat::DROP_IN];
    const EXAMPLES: &'static [Example] = &[
        Example {
            file_name: "modbus_tcp.yaml",
            text: include_str!("example_tcp.yaml"),
        },
        Example {
            file_name: "modbus_rtu.yaml",
            text: include_str!("example_rtu.yaml"),
        },
    ];
    const MANUAL: &'static str = include_str!("manual.roff");

    type Settings = ModbusSettings;
    type Poller = ModbusPoller;
    type Error = ModbusError;

    fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<ModbusSettings> {
        ModbusSettings::parse(doc, path, value)
    }

    fn describe(settings: &ModbusSettings) -> String {
        settings.describe()
    }

    /// The kind and how it reaches the devices: `modbus, transport rtu`.
    fn shown_type(settings: &ModbusSettings) -> String {
        format!("modbus, transport {}", settings.transport.name())
    }

    /// `modbus_tcp` for every transport: the label every Modbus poller's
    /// figures have carried, so their series go on.
    fn label(_settings: &ModbusSettings) -> &'static str {
        "modbus_tcp"
    }

    /// Each register by its `description` and `units`, or by its table and
    /// address; the unit id and each register's metadata keys.
    fn translations(settings: &ModbusSettings, language: Language) -> Vec<Translation> {
        let Language::English = language;
        let mut names = vec![Translation::metadata(
            super::UNIT_METADATA_KEY,
            "Modbus Unit ID",
            LABEL_UNITS,
        )];
        for register in settings.targets.iter().flat_map(|t| t.registers.iter()) {
            let table = register.address.table;
            let number = table.modicon(register.address.offset);
            let where_ = format!("{} {number}", readable(table.name()));
            let key: &str = &register.key;
            let name = match &register.naming.description {
                Some(description) => description.clone(),
                None if key == format!("{}_{number}", table.name()) => where_,
                None => format!("{} ({})", readable(key), where_.to_lowercase()),
            };
            let units = register.naming.units.clone().unwrap_or_else(|| {
                match register.data_type {
                    DataType::Counter | DataType::Counter64 => "Count / Second",
                    DataType::String => "Text",
                    _ if table.is_bits() => "State",
                    _ => "Value",
                }
                .to_owned()
            });
            names.push(Translation::datapoint(key, name, units));
            for item in &register.metadata {
                names.push(Translation::metadata(
                    item.key.to_string(),
                    readable(&item.key),
                    LABEL_UNITS,
                ));
            }
        }
        names
    }

    /// Pollers naming one serial port must agree on its line settings.
    fn check_together(doc: &mut Document, pollers: &[(&YamlPath, &str, &ModbusSettings)]) {
        ModbusSettings::check_serial_lines(doc, pollers);
    }

    fn build(
        poller: &PollerSettings,
        settings: &ModbusSettings,
        _env: &PollerEnv,
    ) -> anyhow::Result<ModbusPoller> {
        ModbusPoller::new(&poller.name, settings)
    }

    async fn poll(poller: &mut ModbusPoller) -> Result<Polled, ModbusError> {
        poller.poll().await.map(Polled::from)
    }

    /// Each target as soon as it and every target before it are read, so
    /// a thousand devices' readings are never held at once.
    async fn poll_each(
        poller: &mut ModbusPoller,
        each: &mut (dyn FnMut(TargetData) + Send),
    ) -> Result<Polled, ModbusError> {
        poller.poll_each(each).await?;
        Ok(Polled::Readings(Vec::new()))
    }
}
