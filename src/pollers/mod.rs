//! Pollers: each kind reads one sort of source and returns datapoints.
//!
//! A poller does exactly one poll per call and never sleeps or loops; the
//! scheduler owns intervals, timeouts and shutdown. The kinds form a closed
//! enum, dispatched here and nowhere else.

pub mod command;
pub mod http;
pub mod modbus;
pub mod snmp;

use std::time::Duration;

use serde_norway::Value;

use crate::model::{Metadata, TargetData};
use crate::yaml::{Document, YamlPath};

/// One poller, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PollerSettings {
    pub name: String,
    /// Names the agent id this poller posts under.
    pub agent_program: String,
    pub polling_interval: Duration,
    /// Attached to every datapoint after the datapoint's own metadata, so a
    /// key a poller reads itself wins over a poller-wide default.
    pub metadata: Vec<Metadata>,
    pub kind: PollerKind,
}

/// A Python agent's configuration file that a poller kind takes over: left
/// unchanged in the configuration directory, it becomes one poller that
/// posts what the Python agent posted.
#[derive(Debug, Clone, Copy)]
pub struct DropIn {
    /// The file's name in the configuration directory.
    pub file_name: &'static str,
    /// The Python agent's program name: the poller's name and agent program,
    /// so its agent id file is reused.
    pub agent_program: &'static str,
    /// Validates the file's document into the poller; errors go to `doc`.
    pub load: fn(&mut Document) -> Option<PollerSettings>,
}

/// Every Python agent file a poller kind takes over, in the order their
/// pollers are added. The configuration loader walks this table and names
/// no poller kind itself.
pub const DROP_INS: &[DropIn] = &[
    modbus::compat::DROP_IN,
    snmp::compat::SNMPD_DROP_IN,
    snmp::compat::IFMIBD_DROP_IN,
];

/// A poller kind's validated settings.
// One value per configured poller, built once: the size of the largest
// kind costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum PollerKind {
    ModbusTcp(modbus::ModbusSettings),
    Http(http::HttpSettings),
    Command(command::CommandSettings),
    Snmp(snmp::SnmpSettings),
}

impl PollerKind {
    /// The `type:` values, as written in configuration. `modbus` and
    /// `modbus_tcp` are one kind, whatever its `transport:`: `modbus_tcp`
    /// was its only name before serial lines, and stays valid.
    pub const NAMES: [&'static str; 5] = ["modbus", "modbus_tcp", "http", "command", "snmp"];

    /// Validates the kind-specific keys of a poller entry (`value` holds the
    /// entry without the keys every poller shares).
    pub fn parse(
        type_name: &str,
        doc: &mut Document,
        path: &YamlPath,
        value: &Value,
    ) -> Option<PollerKind> {
        match type_name {
            "modbus" | "modbus_tcp" => {
                modbus::ModbusSettings::parse(doc, path, value).map(PollerKind::ModbusTcp)
            }
            "http" => http::HttpSettings::parse(doc, path, value).map(PollerKind::Http),
            "command" => command::CommandSettings::parse(doc, path, value).map(PollerKind::Command),
            "snmp" => snmp::SnmpSettings::parse(doc, path, value).map(PollerKind::Snmp),
            other => {
                doc.error(
                    &path.key("type"),
                    format!(
                        "unknown poller type `{other}`: expected one of {}",
                        Self::NAMES.join(", ")
                    ),
                );
                None
            }
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            PollerKind::ModbusTcp(_) => "modbus_tcp",
            PollerKind::Http(_) => "http",
            PollerKind::Command(_) => "command",
            PollerKind::Snmp(_) => "snmp",
        }
    }

    /// The agent program (and so agent id) a poller posts under unless it
    /// names its own. Modbus shares the Python agent's, so devices polled
    /// by either keep one identity.
    pub fn default_agent_program(&self) -> &'static str {
        match self {
            PollerKind::ModbusTcp(_) => "pattoo_agent_modbustcpd",
            PollerKind::Http(_) => "pattoo_agentd_http",
            PollerKind::Command(_) => "pattoo_agentd_command",
            PollerKind::Snmp(_) => "pattoo_agentd_snmp",
        }
    }

    /// One line saying what the poller reads, for `check`.
    pub fn describe(&self) -> String {
        match self {
            PollerKind::ModbusTcp(settings) => settings.describe(),
            PollerKind::Http(settings) => settings.describe(),
            PollerKind::Command(settings) => settings.describe(),
            PollerKind::Snmp(settings) => settings.describe(),
        }
    }
}

/// Checks what no poller can check alone: pollers that share something
/// must agree on it (a serial port's line settings). `pollers` pairs each
/// valid poller with where it is written; errors go to `doc`.
pub fn check_together(doc: &mut Document, pollers: &[(YamlPath, &PollerSettings)]) {
    let modbus: Vec<(&YamlPath, &str, &modbus::ModbusSettings)> = pollers
        .iter()
        .filter_map(|(path, poller)| match &poller.kind {
            PollerKind::ModbusTcp(settings) => Some((path, poller.name.as_str(), settings)),
            _ => None,
        })
        .collect();
    modbus::ModbusSettings::check_serial_lines(doc, &modbus);
}

/// A poll failed as a whole; nothing was read.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Modbus(#[from] modbus::ModbusError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Command(#[from] command::CommandError),
    #[error(transparent)]
    Snmp(#[from] snmp::SnmpError),
}

/// A poller ready to poll: its settings plus whatever state it keeps
/// between polls (connections, clients).
#[allow(clippy::large_enum_variant)] // as for PollerKind
#[derive(Debug)]
pub enum Poller {
    ModbusTcp(modbus::ModbusPoller),
    Http(http::HttpPoller),
    Command(command::CommandPoller),
    Snmp(snmp::SnmpPoller),
}

/// What pollers need to know about the agent they run in.
#[derive(Debug, Clone)]
pub struct PollerEnv {
    /// The target of datapoints read from this host (commands) and the
    /// `pattoo_agent_hostname` of every datapoint.
    pub hostname: String,
}

impl Poller {
    /// Builds a poller. Does no network I/O; fails only on local problems
    /// (an unreadable CA file, say).
    pub fn new(settings: &PollerSettings, env: &PollerEnv) -> anyhow::Result<Poller> {
        Ok(match &settings.kind {
            PollerKind::ModbusTcp(kind) => {
                Poller::ModbusTcp(modbus::ModbusPoller::new(&settings.name, kind)?)
            }
            PollerKind::Http(kind) => {
                Poller::Http(http::HttpPoller::new(&settings.name, kind, env)?)
            }
            PollerKind::Command(kind) => {
                Poller::Command(command::CommandPoller::new(&settings.name, kind, env))
            }
            PollerKind::Snmp(kind) => Poller::Snmp(snmp::SnmpPoller::new(
                &settings.name,
                kind,
                settings.polling_interval,
            )?),
        })
    }

    /// Polls once. Partial results are `Ok`: a poller reading several
    /// targets logs the ones that failed and returns the rest.
    pub async fn poll(&mut self) -> Result<Vec<TargetData>, PollError> {
        Ok(match self {
            Poller::ModbusTcp(poller) => poller.poll().await?,
            Poller::Http(poller) => poller.poll().await?,
            Poller::Command(poller) => poller.poll().await?,
            Poller::Snmp(poller) => poller.poll().await?,
        })
    }
}
