//! The SNMP kind as the table of kinds in `pollers/mod.rs` sees it.

use serde_norway::Value;

use super::{compat, SnmpError, SnmpPoller, SnmpSettings};
use crate::model::translation::{Language, Translation};
use crate::model::TargetData;
use crate::pollers::{DropIn, Example, Kind, Polled, PollerEnv, PollerSettings};
use crate::yaml::{Document, YamlPath};

/// `type: snmp`: GET, walks and tables from SNMPv1, v2c and v3 devices.
#[derive(Debug)]
pub struct Snmp;

impl Kind for Snmp {
    const NAMES: &'static [&'static str] = &["snmp"];
    const SUMMARY: &'static str = "SNMP v1, v2c and v3 devices: GET, walks, tables, the IF-MIB preset";
    const DEFAULT_AGENT_PROGRAM: &'static str = "pattoo_agentd_snmp";
    const DROP_INS: &'static [DropIn] = &[compat::SNMPD_DROP_IN, compat::IFMIBD_DROP_IN];
    const EXAMPLES: &'static [Example] = &[Example {
        file_name: "snmp.yaml",
        text: include_str!("example.yaml"),
    }];
    const MANUAL: &'static str = include_str!("manual.roff");
    /// async-snmp logs each failed request itself, at ERROR for a timeout.
    const QUIET_LIBRARIES: &'static [&'static str] = &["async_snmp"];

    type Settings = SnmpSettings;
    type Poller = SnmpPoller;
    type Error = SnmpError;

    fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<SnmpSettings> {
        SnmpSettings::parse(doc, path, value)
    }

    fn describe(settings: &SnmpSettings) -> String {
        settings.describe()
    }

    fn translations(settings: &SnmpSettings, language: Language) -> Vec<Translation> {
        super::translations::translations(settings, language)
    }

    fn build(
        poller: &PollerSettings,
        settings: &SnmpSettings,
        _env: &PollerEnv,
    ) -> anyhow::Result<SnmpPoller> {
        // The poll's deadline is derived from the interval.
        SnmpPoller::new(&poller.name, settings, poller.polling_interval)
    }

    async fn poll(poller: &mut SnmpPoller) -> Result<Polled, SnmpError> {
        poller.poll().await.map(Polled::from)
    }

    /// Each target as soon as it and every target before it are read, so
    /// two hundred devices' readings are never held at once.
    async fn poll_each(
        poller: &mut SnmpPoller,
        each: &mut (dyn FnMut(TargetData) + Send),
    ) -> Result<Polled, SnmpError> {
        poller.poll_each(each).await?;
        Ok(Polled::Readings(Vec::new()))
    }
}
