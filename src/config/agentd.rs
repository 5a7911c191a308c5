//! `pattoo_agentd.yaml`: the agent's own settings and its pollers.

use std::collections::HashMap;
use std::time::Duration;

use serde_norway::{Mapping, Value};

use crate::delivery::config::{CacheSettings, DeliverySettings};
use crate::pollers::PollerKind;
use crate::pollers::PollerSettings;
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
}

const SECTION: &str = "pattoo_agentd";
const COMMON_POLLER_KEYS: [&str; 5] = [
    "name",
    "type",
    "agent_program",
    "polling_interval",
    "metadata",
];

pub(super) fn parse(doc: &mut Document) -> Option<(AgentSettings, Vec<PollerSettings>)> {
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
    };
    let mut poller_values = None;
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
            "pollers" => poller_values = Some(value.clone()),
            other => doc.error(
                &at,
                format!(
                    "unknown key `{other}`: expected one of polling_interval, hostname, delivery, cache, pollers"
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
                pollers.extend(poller);
            }
        }
        Some(other) => doc.error(
            &path.key("pollers"),
            format!("expected a list of pollers, found {}", describe(&other)),
        ),
    }
    Some((settings, pollers))
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
                    PollerKind::NAMES.join(", ")
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
    let kind = match kind_name {
        Some(kind) => PollerKind::parse(kind, doc, path, &Value::Mapping(specific)),
        None => None,
    };
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
