//! Modbus helpers: configuration snippets and register layouts.

use std::collections::BTreeMap;
use std::path::Path;

use pattoo_agentd::config::{self, PollerSettings, Settings};
use pattoo_agentd::model::{TargetData, Value};
use pattoo_agentd::pollers::modbus::{ModbusPoller, ModbusSettings};
use pattoo_agentd::pollers::PollerKind;

/// A `pattoo.yaml` that points everything into `dir`.
pub fn write_pattoo_yaml(dir: &Path) {
    super::write_pattoo_yaml(dir, dir, 20201);
}

/// Loads a configuration directory holding `pattoo.yaml` and the given
/// `pattoo_agentd.yaml` text.
pub fn load_agentd(agentd_yaml: &str) -> Result<Settings, config::ConfigErrors> {
    load_with("pattoo_agentd.yaml", agentd_yaml)
}

/// Loads a configuration directory holding `pattoo.yaml` and the given
/// text of the Python agent's `pattoo_agent_modbustcpd.yaml`.
pub fn load_python(modbustcpd_yaml: &str) -> Result<Settings, config::ConfigErrors> {
    load_with("pattoo_agent_modbustcpd.yaml", modbustcpd_yaml)
}

fn load_with(file: &str, text: &str) -> Result<Settings, config::ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    write_pattoo_yaml(dir.path());
    std::fs::write(dir.path().join(file), text).unwrap();
    config::load(dir.path())
}

/// The settings of the only poller in `pollers_yaml` (the list under
/// `pattoo_agentd.pollers`, indented by four spaces).
pub fn modbus_poller(pollers_yaml: &str) -> (PollerSettings, ModbusSettings) {
    let text = format!("pattoo_agentd:\n  pollers:\n{pollers_yaml}");
    let settings = match load_agentd(&text) {
        Ok(settings) => settings,
        Err(errors) => panic!("{errors}\n{text}"),
    };
    let poller = settings.pollers.into_iter().next().expect("one poller");
    match &poller.kind {
        PollerKind::Modbus(modbus) => {
            let modbus = modbus.clone();
            (poller, modbus)
        }
        #[allow(unreachable_patterns)] // a build with Modbus pollers only
        other => panic!("not a modbus poller: {other:?}"),
    }
}

/// The only poller in `pollers_yaml` (as for [`modbus_poller`]), built.
pub fn poller(pollers_yaml: &str) -> ModbusPoller {
    let (settings, modbus) = modbus_poller(pollers_yaml);
    ModbusPoller::new(&settings.name, &modbus).unwrap()
}

/// Every datapoint of a poll as `key -> value`, whatever its target.
pub fn values_by_key(targets: &[TargetData]) -> BTreeMap<String, Value> {
    targets
        .iter()
        .flat_map(|t| t.datapoints.iter())
        .map(|d| (d.key.to_string(), d.value.clone()))
        .collect()
}

/// Lays big-endian bytes out in registers the way a device using `order`
/// stores them; written from the order names, not from the poller's code.
pub fn layout(be_bytes: &[u8], order: &str) -> Vec<u16> {
    let mut words: Vec<[u8; 2]> = be_bytes.chunks(2).map(|c| [c[0], c[1]]).collect();
    if matches!(order, "CDAB" | "DCBA") {
        words.reverse();
    }
    words
        .into_iter()
        .map(|[hi, lo]| match order {
            "BADC" | "DCBA" => u16::from_be_bytes([lo, hi]),
            _ => u16::from_be_bytes([hi, lo]),
        })
        .collect()
}
