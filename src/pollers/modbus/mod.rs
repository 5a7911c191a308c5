//! The modbus poller (being built: configuration is refused until it lands).

use serde_norway::Value;

use crate::config::{Document, YamlPath};
use crate::model::TargetData;

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusSettings {}

impl ModbusSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, _value: &Value) -> Option<Self> {
        doc.error(
            &path.key("type"),
            "this poller type is not available in this build",
        );
        None
    }

    pub fn describe(&self) -> String {
        String::new()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("modbus poller unavailable")]
pub struct ModbusError;

#[derive(Debug)]
pub struct ModbusPoller;

impl ModbusPoller {
    pub async fn poll(&mut self) -> Result<Vec<TargetData>, ModbusError> {
        Err(ModbusError)
    }
}

impl ModbusPoller {
    pub fn new(_name: &str, _settings: &ModbusSettings) -> anyhow::Result<Self> {
        Ok(ModbusPoller)
    }
}

pub mod compat {
    //! Reading a Python `pattoo_agent_modbustcpd.yaml`.
    use std::path::Path;

    use crate::config::{ConfigError, PollerSettings};

    pub fn load(
        _config_dir: &Path,
        _pollers: &mut Vec<PollerSettings>,
        _errors: &mut Vec<ConfigError>,
    ) {
    }
}
