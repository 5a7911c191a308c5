//! Reading the Python agent's `pattoo_agent_opcuad.yaml` as it is, so its
//! users switch without losing a chart (SPEC-opcua-compat.md §1).
//!
//! ```yaml
//! pattoo_agent_opcuad:          # or the same keys at the top level
//!   polling_interval: 300
//!   polling_groups:
//!     - group_name: any         # not used
//!       ip_target: plc1.example.org
//!       ip_port: 4840
//!       username: operator      # '' or absent: anonymous
//!       password: secret
//!       nodes:
//!         - address: ns=1;s=[PLC1]DischargeAirTemp.PV
//!           multiplier: 1
//! ```
//!
//! The file becomes one poller, `pattoo_agent_opcuad`, posting what the
//! Python agent posts: one target per group (two groups naming one
//! `ip_target` post two entries, as Python did), keys the node ids
//! lowercased, data type 99 for every value, the metadata `opcua server`
//! = `ip_target` as written, Python's multiplier rules
//! ([`super::convert::python_datapoint`]).
//!
//! Where the Python agent died or lost the group this does the sensible
//! thing, with a warning: a missing or non-string `password` or
//! `username` is taken as empty (anonymous without a user name), a
//! missing `ip_port` is 4840, a numeric-string multiplier is a number (the
//! Python agent repeated the text or died), IPv6 targets are bracketed in
//! the URL. Node ids no OPC UA parser takes are logged at each poll and
//! skipped, as by the Python agent.

use std::time::Duration;

use serde_norway::Value;

use super::config::{parse_node_id, Flavour, NodeSettings, OpcuaSettings, Post, Security, ServerSettings};
use super::convert::PyMultiplier;
use crate::model::python::parse_float;
use crate::pollers::{DropIn, PollerKind, PollerSettings};
use crate::secret::SecretSource;
use crate::yaml::{describe, Document, YamlPath};

pub const OPCUAD: &str = "pattoo_agent_opcuad";

/// The metadata key the Python agent wrote; normalised, `opcua server`.
pub const SERVER_KEY: &str = "OPCUA Server";

pub const OPCUAD_DROP_IN: DropIn = DropIn {
    file_name: "pattoo_agent_opcuad.yaml",
    agent_program: OPCUAD,
    load,
};

/// asyncua's default request timeout, which the Python agent kept.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(4);

fn load(doc: &mut Document) -> Option<PollerSettings> {
    let root = doc.root.clone();
    let Value::Mapping(top) = &root else {
        doc.error(
            &YamlPath::root(),
            format!(
                "expected a mapping of keys to values, found {}",
                describe(&root)
            ),
        );
        return None;
    };
    let (path, section) = match top.get(OPCUAD) {
        Some(Value::Mapping(section)) => (YamlPath::root().key(OPCUAD), section.clone()),
        _ => (YamlPath::root(), top.clone()),
    };
    let interval = match section.get("polling_interval") {
        None | Some(Value::Null) => Some(300),
        Some(Value::Number(n)) => n.as_f64().map(|v| v.trunc().abs() as u64),
        Some(Value::String(text)) => text.trim().parse::<i64>().ok().map(|v| v.unsigned_abs()),
        Some(_) => None,
    };
    let interval = match interval {
        // The Python agent read a falsy interval as 300 (the older layout
        // posted nothing with 0 instead).
        Some(0) => Duration::from_secs(300),
        Some(seconds) if seconds <= 86_400 => Duration::from_secs(seconds),
        _ => {
            doc.error(
                &path.key("polling_interval"),
                "expected a whole number of seconds from 1 to 86400, e.g. 300",
            );
            return None;
        }
    };
    let servers = groups(doc, &path, section.get("polling_groups"));
    if servers.is_empty() {
        doc.warn(&path, "no polling group with an ip_target and nodes: this file polls nothing");
    }
    Some(PollerSettings {
        name: OPCUAD.to_owned(),
        agent_program: OPCUAD.to_owned(),
        polling_interval: interval,
        metadata: Vec::new(),
        kind: PollerKind::Opcua(OpcuaSettings {
            flavour: Flavour::Python,
            servers,
            security: Security::none(),
            timeout: PYTHON_TIMEOUT,
        }),
    })
}

/// A credential as the Python agent passed it to asyncua, which takes
/// only strings: anything else is taken as empty, with a warning.
fn credential(doc: &Document, at: &YamlPath, key: &str, value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => {
            if key == "password" {
                doc.warn(&at.key(key), "missing: taken as empty (the Python agent died on it)");
            }
            String::new()
        }
        Some(other) => {
            let text = match other {
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
                _ => String::new(),
            };
            doc.warn(&at.key(key),
                &format!("not a string: taken as {text:?} (the Python agent died on it); quote it"),
            );
            text
        }
    }
}

fn groups(doc: &mut Document, path: &YamlPath, groups: Option<&Value>) -> Vec<ServerSettings> {
    let mut servers = Vec::new();
    let list = path.key("polling_groups");
    let Some(Value::Sequence(groups)) = groups else {
        doc.warn(&list, "missing or not a list: nothing is polled");
        return servers;
    };
    for (i, group) in groups.iter().enumerate() {
        let at = list.index(i);
        let Value::Mapping(group) = group else {
            doc.warn(&at, "not a mapping: skipped, as by the Python agent");
            continue;
        };
        let nodes = nodes(doc, &at, group.get("nodes"));
        if nodes.is_empty() {
            doc.warn(&at, "no nodes with an `address`: skipped, as by the Python agent");
            continue;
        }
        let target = match group.get("ip_target") {
            Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                doc.warn(&at, "no `ip_target`: skipped (the Python agent could not connect)");
                continue;
            }
        };
        let port = match group.get("ip_port") {
            None | Some(Value::Null) => {
                doc.warn(&at.key("ip_port"), "missing: 4840, the OPC UA port (the Python agent could not connect)");
                Some(super::config::DEFAULT_PORT)
            }
            Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0),
            Some(Value::String(text)) => text.trim().parse::<u16>().ok().filter(|p| *p > 0),
            Some(_) => None,
        };
        let Some(port) = port else {
            doc.error(&at.key("ip_port"), "expected a port number from 1 to 65535");
            continue;
        };
        let username = credential(doc, &at, "username", group.get("username"));
        let password = credential(doc, &at, "password", group.get("password"));
        // asyncua: `if not username and not certificate` → anonymous.
        let user = (!username.is_empty())
            .then(|| (username, SecretSource::Inline(password.into())));
        let host = target.trim();
        let url = if host.contains(':') && !host.starts_with('[') {
            format!("opc.tcp://[{host}]:{port}")
        } else {
            format!("opc.tcp://{host}:{port}")
        };
        servers.push(ServerSettings {
            name: target,
            url,
            user,
            nodes: nodes.into(),
        });
    }
    servers
}

fn nodes(doc: &Document, at: &YamlPath, nodes: Option<&Value>) -> Vec<NodeSettings> {
    let Some(Value::Sequence(items)) = nodes else {
        return Vec::new();
    };
    let mut result = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let item_at = at.key("nodes").index(n);
        let Value::Mapping(item) = item else { continue };
        let address = match item.get("address") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        let multiplier = match item.get("multiplier") {
            None | Some(Value::Null) => PyMultiplier::Int(1),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(m) => PyMultiplier::Int(m),
                None => PyMultiplier::Float(n.as_f64().unwrap_or(1.0)),
            },
            Some(Value::Bool(b)) => PyMultiplier::Bool(*b),
            Some(Value::String(text)) => match (text.trim().parse::<i64>(), parse_float(text)) {
                (Ok(m), _) => {
                    doc.warn(&item_at.key("multiplier"), &format!("the text {text:?}: taken as the number {m} (the Python agent repeated text or died on it); write it without quotes"));
                    PyMultiplier::Int(m)
                }
                (_, Some(m)) => {
                    doc.warn(&item_at.key("multiplier"), &format!("the text {text:?}: taken as the number {m} (the Python agent died on it); write it without quotes"));
                    PyMultiplier::Float(m)
                }
                _ => PyMultiplier::Int(1),
            },
            Some(_) => PyMultiplier::Int(1),
        };
        let node_id = match parse_node_id(address.trim()) {
            Ok(id) => Some(id),
            Err(message) => {
                doc.warn(&item_at.key("address"), &format!("{message}: skipped at each poll, as by the Python agent"));
                None
            }
        };
        result.push(NodeSettings {
            key: address.clone(),
            address,
            node_id,
            post: Post::Python { multiplier },
            naming: Default::default(),
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn opcuad(text: &str) -> (Option<PollerSettings>, Vec<String>) {
        let mut doc = Document::parse(Path::new("pattoo_agent_opcuad.yaml"), text).unwrap();
        let settings = load(&mut doc);
        let errors = doc.into_errors().iter().map(|e| e.message.clone()).collect();
        (settings, errors)
    }

    fn servers(settings: PollerSettings) -> Vec<ServerSettings> {
        match settings.kind {
            PollerKind::Opcua(s) => s.servers,
            #[allow(unreachable_patterns)]
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_python_file_with_its_groups_in_order_and_fixes_what_crashed_it() {
        let (settings, errors) = opcuad(
            "pattoo_agent_opcuad:
  polling_interval: 60
  polling_groups:
    - {ip_target: '::1', ip_port: 4841, username: op, nodes: [{address: 'ns=2;s=A', multiplier: '2'}]}
    - {ip_target: plc, username: '', password: x, nodes: [{address: 'NS=2;S=A'}, {address: 'i=2258', multiplier: 0.5}]}
    - {ip_target: none, nodes: []}
    - just text
",
        );
        assert_eq!(errors, Vec::<String>::new());
        let settings = settings.unwrap();
        assert_eq!(settings.polling_interval, Duration::from_secs(60));
        let servers = servers(settings);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].url, "opc.tcp://[::1]:4841");
        assert_eq!(servers[0].name, "::1");
        let (user, password) = servers[0].user.clone().unwrap();
        assert_eq!(user, "op");
        assert_eq!(password.read().unwrap().expose(), "", "a missing password is empty");
        assert_eq!(
            servers[0].nodes[0].post,
            Post::Python { multiplier: PyMultiplier::Int(2) }
        );
        assert_eq!(servers[1].url, "opc.tcp://plc:4840");
        assert_eq!(servers[1].user, None, "an empty user name is anonymous");
        assert_eq!(servers[1].nodes[0].node_id, None, "upper case is not a node id");
        assert_eq!(servers[1].nodes[0].key, "NS=2;S=A");
        assert_eq!(
            servers[1].nodes[1].post,
            Post::Python { multiplier: PyMultiplier::Float(0.5) }
        );
    }

    #[test]
    fn reads_the_flat_layout_of_pattoo_agent_opcua_and_an_interval_of_zero_as_300() {
        let (settings, errors) = opcuad(
            "polling_interval: 0
polling_groups:
  - {ip_target: plc, ip_port: '4841', username: op, password: 1234, nodes: [{address: 'i=2258'}]}
",
        );
        assert_eq!(errors, Vec::<String>::new());
        let settings = settings.unwrap();
        assert_eq!(settings.polling_interval, Duration::from_secs(300));
        let servers = servers(settings);
        assert_eq!(servers[0].url, "opc.tcp://plc:4841");
        let (_, password) = servers[0].user.clone().unwrap();
        assert_eq!(
            password.read().unwrap().expose(),
            "1234",
            "a number is its text (the Python agent died on it)"
        );
    }
}
