//! `pattoo_agentd.yaml`: the agent's own settings and its pollers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_norway::{Mapping, Value};

use crate::delivery::config::{CacheSettings, DeliverySettings};
use crate::pollers::PollerKind;
use crate::pollers::PollerSettings;
use crate::spoke::config::SpokeSettings;
use crate::yaml::{
    describe, expect_mapping, only_section, parse_interval, parse_metadata, Document, YamlPath,
    DEFAULT_POLLING_INTERVAL,
};

/// The `pattoo_agentd:` section, pollers aside.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// Default for pollers that do not set their own.
    pub polling_interval: Duration,
    /// `pattoo_agent_hostname`; `None` means this host's fully qualified name.
    pub hostname: Option<String>,
    pub delivery: DeliverySettings,
    pub cache: CacheSettings,
    pub self_monitoring: SelfMonitoring,
    /// Where the metrics page (`/metrics`, `/health`) listens; off if `None`.
    pub metrics_listen: Option<SocketAddr>,
}

/// `self_monitoring:`: the agent posting its own figures to pattoo.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfMonitoring {
    pub enabled: bool,
    pub polling_interval: Duration,
    /// Names the agent id the figures are posted under.
    pub agent_program: String,
}

pub const DEFAULT_SELF_MONITORING_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_SELF_AGENT_PROGRAM: &str = "pattoo_agentd_self";

impl Default for SelfMonitoring {
    fn default() -> Self {
        SelfMonitoring {
            enabled: true,
            polling_interval: DEFAULT_SELF_MONITORING_INTERVAL,
            agent_program: DEFAULT_SELF_AGENT_PROGRAM.to_owned(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelfMonitoring {
    enabled: Option<bool>,
    polling_interval: Option<Value>,
    agent_program: Option<String>,
}

impl SelfMonitoring {
    fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let mut settings = SelfMonitoring::default();
        let raw: RawSelfMonitoring = match value {
            Value::Null => return Some(settings),
            Value::Bool(enabled) => {
                settings.enabled = *enabled;
                return Some(settings);
            }
            other => doc.deserialize(path, other)?,
        };
        let mut ok = true;
        if let Some(enabled) = raw.enabled {
            settings.enabled = enabled;
        }
        if let Some(interval) = &raw.polling_interval {
            match parse_interval(doc, &path.key("polling_interval"), interval) {
                Some(interval) => settings.polling_interval = interval,
                None => ok = false,
            }
        }
        if let Some(program) = raw.agent_program {
            if is_agent_program(&program) {
                settings.agent_program = program;
            } else {
                doc.error(
                    &path.key("agent_program"),
                    format!("expected a program name of letters, digits, `_`, `-` and `.`, found {program:?}"),
                );
                ok = false;
            }
        }
        ok.then_some(settings)
    }
}

/// `metrics_listen:` an address and port such as `127.0.0.1:9464`, or
/// null for no metrics page.
fn parse_metrics_listen(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<SocketAddr> {
    match value {
        Value::Null => None,
        Value::String(text) => match text.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                doc.error(
                    path,
                    format!("expected an IP address and port such as 127.0.0.1:9464 or [::1]:9464, found {text:?}"),
                );
                None
            }
        },
        other => {
            doc.error(
                path,
                format!(
                    "expected an IP address and port such as 127.0.0.1:9464, found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

const SECTION: &str = "pattoo_agentd";
const COMMON_POLLER_KEYS: [&str; 5] = [
    "name",
    "type",
    "agent_program",
    "polling_interval",
    "metadata",
];

pub(super) fn parse(
    doc: &mut Document,
) -> Option<(AgentSettings, Vec<PollerSettings>, Vec<SpokeSettings>)> {
    let (path, section) = only_section(doc, SECTION)?;
    let section = match section {
        Some(Value::Null) | None => Mapping::new(),
        Some(value) => expect_mapping(doc, &path, &value)?.clone(),
    };

    let mut settings = AgentSettings {
        polling_interval: DEFAULT_POLLING_INTERVAL,
        hostname: None,
        delivery: DeliverySettings::default(),
        cache: CacheSettings::default(),
        self_monitoring: SelfMonitoring::default(),
        metrics_listen: None,
    };
    let mut poller_values = None;
    let mut spoke_values = None;
    for (key, value) in &section {
        let Some(key) = key.as_str() else {
            doc.error(&path, "keys must be text");
            continue;
        };
        let at = path.key(key);
        match key {
            "polling_interval" => {
                if let Some(interval) = parse_interval(doc, &at, value) {
                    settings.polling_interval = interval;
                }
            }
            "hostname" => match value {
                Value::String(name) if !name.trim().is_empty() => {
                    settings.hostname = Some(name.trim().to_owned());
                }
                Value::Null => {}
                other => doc.error(&at, format!("expected a host name, found {}", describe(other))),
            },
            "delivery" => {
                if let Some(delivery) = DeliverySettings::parse(doc, &at, value) {
                    settings.delivery = delivery;
                }
            }
            "cache" => {
                if let Some(cache) = CacheSettings::parse(doc, &at, value) {
                    settings.cache = cache;
                }
            }
            "self_monitoring" => {
                if let Some(self_monitoring) = SelfMonitoring::parse(doc, &at, value) {
                    settings.self_monitoring = self_monitoring;
                }
            }
            "metrics_listen" => settings.metrics_listen = parse_metrics_listen(doc, &at, value),
            "pollers" => poller_values = Some(value.clone()),
            "spokes" => spoke_values = Some(value.clone()),
            other => doc.error(
                &at,
                format!(
                    "unknown key `{other}`: expected one of polling_interval, hostname, delivery, cache, self_monitoring, metrics_listen, pollers, spokes"
                ),
            ),
        }
    }

    let mut pollers = Vec::new();
    match poller_values {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(entries)) => {
            let list = path.key("pollers");
            let mut names: HashMap<String, usize> = HashMap::new();
            for (i, entry) in entries.iter().enumerate() {
                let at = list.index(i);
                let poller = parse_poller(doc, &at, entry, settings.polling_interval);
                // Names are compared as written, whether or not the rest of
                // the entry is valid, so a clash is reported along with the
                // other mistakes rather than after they are fixed.
                let name = match entry {
                    Value::Mapping(map) => match map.get("name") {
                        Some(Value::String(name)) if !name.trim().is_empty() => {
                            Some(name.trim().to_owned())
                        }
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(name) = name {
                    if let Some(&first) = names.get(&name) {
                        doc.error(
                            &at.key("name"),
                            format!(
                                "duplicate poller name `{name}`: pollers[{first}] already has it; names must be unique"
                            ),
                        );
                        continue;
                    }
                    names.insert(name, i);
                }
                if let Some(poller) = poller {
                    pollers.push((at, poller));
                }
            }
        }
        Some(other) => doc.error(
            &path.key("pollers"),
            format!("expected a list of pollers, found {}", describe(&other)),
        ),
    }
    let placed: Vec<(YamlPath, &PollerSettings)> =
        pollers.iter().map(|(at, p)| (at.clone(), p)).collect();
    crate::pollers::check_together(doc, &placed);
    let spokes = parse_spokes(doc, &path.key("spokes"), spoke_values, &settings);
    Some((
        settings,
        pollers.into_iter().map(|(_, p)| p).collect(),
        spokes,
    ))
}

/// `spokes:`: spoke servers, each with its own poller entry.
fn parse_spokes(
    doc: &mut Document,
    list: &YamlPath,
    value: Option<Value>,
    settings: &AgentSettings,
) -> Vec<SpokeSettings> {
    let entries = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Sequence(entries)) => entries,
        Some(other) => {
            doc.error(
                list,
                format!("expected a list of spokes, found {}", describe(&other)),
            );
            return Vec::new();
        }
    };
    let mut spokes: Vec<SpokeSettings> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = list.index(i);
        let parsed = SpokeSettings::parse(doc, &at, entry, |doc, path, value| {
            parse_poller(doc, path, value, settings.polling_interval)
        });
        let Some(spoke) = parsed else { continue };
        // Port 0 asks the system for a free port: never a clash.
        let clash = spoke.listen.port() != 0;
        if let Some(other) = spokes
            .iter()
            .position(|s| clash && s.listen == spoke.listen)
        {
            doc.error(
                &at.key("listen"),
                format!("spokes[{other}] already listens on {}", spoke.listen),
            );
        } else {
            spokes.push(spoke);
        }
    }
    spokes
}

fn parse_poller(
    doc: &mut Document,
    path: &YamlPath,
    entry: &Value,
    default_interval: Duration,
) -> Option<PollerSettings> {
    let map = expect_mapping(doc, path, entry)?;
    let name = match map.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => Some(name.trim().to_owned()),
        Some(other) => {
            doc.error(
                &path.key("name"),
                format!("expected a poller name, found {}", describe(other)),
            );
            None
        }
        None => {
            doc.error(
                path,
                "missing field `name`: every poller needs a unique name",
            );
            None
        }
    };
    let kind_name = match map.get("type") {
        Some(Value::String(kind)) => Some(kind.as_str()),
        Some(other) => {
            doc.error(
                &path.key("type"),
                format!("expected a poller type, found {}", describe(other)),
            );
            None
        }
        None => {
            doc.error(
                path,
                format!(
                    "missing field `type`: expected one of {}",
                    crate::pollers::type_names().join(", ")
                ),
            );
            None
        }
    };
    let agent_program = match map.get("agent_program") {
        None => None,
        Some(Value::String(program)) if is_agent_program(program) => Some(program.clone()),
        Some(other) => {
            doc.error(
                &path.key("agent_program"),
                format!(
                    "expected a program name of letters, digits, `_`, `-` and `.`, found {}",
                    match other {
                        Value::String(text) => format!("{text:?}"),
                        other => describe(other).to_owned(),
                    }
                ),
            );
            None
        }
    };
    let polling_interval = match map.get("polling_interval") {
        None => Some(default_interval),
        Some(value) => parse_interval(doc, &path.key("polling_interval"), value),
    };
    let metadata = match map.get("metadata") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(value) => parse_metadata(doc, &path.key("metadata"), value),
    };

    let mut specific = Mapping::new();
    for (key, value) in map {
        if !key
            .as_str()
            .is_some_and(|k| COMMON_POLLER_KEYS.contains(&k))
        {
            specific.insert(key.clone(), value.clone());
        }
    }
    doc.poller = name.clone();
    let kind = match kind_name {
        Some(kind) => PollerKind::parse(kind, doc, path, &Value::Mapping(specific)),
        None => None,
    };
    doc.poller = None;
    let kind = kind?;
    Some(PollerSettings {
        agent_program: agent_program.unwrap_or_else(|| kind.default_agent_program().to_owned()),
        name: name?,
        polling_interval: polling_interval?,
        metadata: metadata?,
        kind,
    })
}

fn is_agent_program(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
}
