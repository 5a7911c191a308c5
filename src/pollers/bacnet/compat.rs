//! Reading the Python BACnet/IP agent's `pattoo_agent_bacnetipd.yaml` as it
//! is, so its users switch without losing a chart (SPEC-bacnet-compat.md).
//!
//! ```yaml
//! pattoo_agent_bacnetipd:          # pattoo-agents; pattoo-agent-bacnet has
//!   polling_interval: 300          #   the same keys at the top level
//!   agent_ip_address: 192.168.1.50 # the local address to send from
//!   polling_groups:
//!     - group_name: any            # not used
//!       ip_targets: [192.168.1.60, ahu1.example.org]   # or ip_devices
//!       points:
//!         - address: 1             # Analog Value instance
//!           multiplier: 10         # optional, default 1
//! ```
//!
//! The file becomes one poller named `pattoo_agent_bacnetipd`, posting
//! under that agent program (so the Python agent's id file is reused), and
//! for each point of each (group, device) pair it posts what the Python
//! agent posted: key `analog_value_point_{address as written}`, the
//! present value of Analog Value `address` widened from single precision
//! and times the multiplier (always a float, data type 101), metadata
//! `target` (the device as written) and then `object_name` (both in the
//! checksum), polled target the device as written. Devices are read side
//! by side, each with its own timeout, from one socket on
//! `agent_ip_address` port 47808 (any free port on that address when 47808
//! is taken, say by the Python agent itself), always to the device's port
//! 47808.
//!
//! Where the Python agent crashed, this does the sensible thing and says
//! so in a warning: a group without `ip_targets` (or with the documented
//! `ip_devices`, read here as the same), a numeric-string multiplier (a
//! number), a scalar `ip_targets` (one device, not one per character), a
//! missing `agent_ip_address` (every local address). When a device answers
//! the value but not the name, the name last read for that object is used,
//! so the value stays on its chart; `missing_object_name: omit` posts it
//! without the name instead, as Python did (a second series).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_norway::Value;

use super::config::{
    BacnetSettings, Names, ObjectSettings, TargetSettings, DEFAULT_MAX_CONCURRENT_TARGETS,
    DEFAULT_MAX_OBJECTS_PER_REQUEST, DEFAULT_PORT, DEFAULT_RETRIES, DEFAULT_TIMEOUT,
};
use super::object::{ObjectId, ObjectType, MAX_INSTANCE};
use crate::model::{DataType, Metadata, Text};
use crate::pollers::{DropIn, PollerKind, PollerSettings};
use crate::yaml::{describe, yaml_number_to_python, Document, YamlPath};

pub const FILE_NAME: &str = "pattoo_agent_bacnetipd.yaml";
/// The poller's name and agent program: the Python agent's.
pub const PROGRAM: &str = "pattoo_agent_bacnetipd";

pub const DROP_IN: DropIn = DropIn {
    file_name: FILE_NAME,
    agent_program: PROGRAM,
    load,
};

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
    // pattoo-agents puts the keys under the agent's name; pattoo-agent-bacnet
    // at the top level.
    let (path, section, nested) = match top.get(PROGRAM) {
        Some(Value::Mapping(section)) => (YamlPath::root().key(PROGRAM), section.clone(), true),
        _ => (YamlPath::root(), top.clone(), false),
    };
    for key in section.keys() {
        let key = key.as_str().unwrap_or_default();
        if !matches!(
            key,
            "polling_interval" | "agent_ip_address" | "polling_groups" | "missing_object_name"
        ) {
            doc.warn(&path.key(key),
                "not read by the Python agent, nor here: ignored",
            );
        }
    }
    let interval = polling_interval(doc, &path, section.get("polling_interval"), nested)?;

    let ip = match section.get("agent_ip_address") {
        Some(Value::String(text)) => match text.trim().parse::<Ipv4Addr>() {
            Ok(ip) => ip,
            Err(_) => {
                doc.error(
                    &path.key("agent_ip_address"),
                    format!("{text:?} is not an IPv4 address of this host"),
                );
                return None;
            }
        },
        None | Some(Value::Null) => {
            doc.warn(&path,
                "no `agent_ip_address` (the Python agent would not start): sending from every local address",
            );
            Ipv4Addr::UNSPECIFIED
        }
        Some(other) => {
            doc.error(
                &path.key("agent_ip_address"),
                format!("expected an IPv4 address of this host, found {}", describe(other)),
            );
            return None;
        }
    };

    let last_read = match section.get("missing_object_name") {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) if text == "last_read" => true,
        Some(Value::String(text)) if text == "omit" => false,
        Some(_) => {
            doc.error(
                &path.key("missing_object_name"),
                "expected last_read (the default: the name last read for the object) or omit (as the Python agent: the value without a name)",
            );
            return None;
        }
    };

    let targets = polling_groups(doc, &path, section.get("polling_groups"));
    if doc.has_errors() {
        return None;
    }
    Some(PollerSettings {
        name: PROGRAM.to_owned(),
        agent_program: PROGRAM.to_owned(),
        polling_interval: interval,
        metadata: Vec::new(),
        kind: PollerKind::Bacnet(BacnetSettings {
            local: SocketAddr::new(IpAddr::V4(ip), DEFAULT_PORT),
            fall_back_to_any_port: true,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            max_concurrent_targets: DEFAULT_MAX_CONCURRENT_TARGETS,
            max_objects_per_request: DEFAULT_MAX_OBJECTS_PER_REQUEST,
            names: Names::Python { last_read },
            targets,
        }),
    })
}

/// pattoo-agents: a falsy interval is 300; pattoo-agent-bacnet: a missing
/// one is. Otherwise `abs(int(value))`, and 0 (with which Python never
/// posts) is refused.
fn polling_interval(
    doc: &mut Document,
    path: &YamlPath,
    value: Option<&Value>,
    nested: bool,
) -> Option<Duration> {
    let at = path.key("polling_interval");
    let seconds = match value {
        None | Some(Value::Null) => Some(300),
        Some(Value::Bool(false)) if nested => Some(300),
        Some(Value::String(text)) if nested && text.is_empty() => Some(300),
        Some(Value::Number(n)) => n.as_f64().map(|v| v.trunc().abs() as u64),
        Some(Value::String(text)) => text.trim().parse::<i64>().ok().map(|v| v.unsigned_abs()),
        Some(_) => None,
    };
    match seconds {
        Some(0) if nested => Some(Duration::from_secs(300)),
        Some(0) => {
            doc.error(
                &at,
                "0 seconds: the Python agent never posts with it; give the interval in seconds, e.g. 300",
            );
            None
        }
        Some(seconds) if seconds <= 86_400 => Some(Duration::from_secs(seconds)),
        _ => {
            doc.error(&at, "expected a whole number of seconds from 1 to 86400, e.g. 300");
            None
        }
    }
}

/// One target per (group, device) pair, in the file's order.
fn polling_groups(doc: &mut Document, path: &YamlPath, groups: Option<&Value>) -> Vec<TargetSettings> {
    let mut targets = Vec::new();
    let list = path.key("polling_groups");
    let Some(Value::Sequence(groups)) = groups else {
        doc.warn(&list, "missing or not a list: nothing is polled");
        return targets;
    };
    for (i, group) in groups.iter().enumerate() {
        let at = list.index(i);
        let Value::Mapping(group) = group else {
            doc.warn(&at, "not a mapping: skipped, as by the Python agent");
            continue;
        };
        let Some(points) = group.get("points") else {
            doc.warn(&at, "no `points`: skipped, as by the Python agent");
            continue;
        };
        let objects: Arc<[ObjectSettings]> = points_of(doc, &at.key("points"), points).into();
        let devices = match (group.get("ip_targets"), group.get("ip_devices")) {
            (Some(devices), _) => (at.key("ip_targets"), devices),
            (None, Some(devices)) => (at.key("ip_devices"), devices),
            (None, None) => {
                doc.warn(&at,
                    "no `ip_targets`: skipped (the Python agent crashed on it)",
                );
                continue;
            }
        };
        let (devices_at, devices) = devices;
        let devices: Vec<(YamlPath, &Value)> = match devices {
            Value::Sequence(list) => list
                .iter()
                .enumerate()
                .map(|(d, v)| (devices_at.index(d), v))
                .collect(),
            Value::String(_) => {
                doc.warn(&devices_at,
                    "one device, not a list: read as one device (the Python agent read each character as a device)",
                );
                vec![(devices_at.clone(), devices)]
            }
            other => {
                doc.warn(&devices_at,
                    &format!("expected a list of devices, found {}: skipped", describe(other)),
                );
                continue;
            }
        };
        for (device_at, device) in devices {
            let Value::String(name) = device else {
                doc.warn(&device_at,
                    &format!(
                        "expected a host name or IPv4 address, found {}: skipped, as by the Python agent",
                        describe(device)
                    ),
                );
                continue;
            };
            let host = name.trim();
            if host.is_empty() || host.contains(':') || host.contains(char::is_whitespace) {
                doc.warn(&device_at,
                    &format!("{name:?} is not a host name or IPv4 address (the device's port is always 47808): skipped, as by the Python agent"),
                );
                continue;
            }
            targets.push(TargetSettings {
                name: name.clone(),
                host: host.to_owned(),
                port: DEFAULT_PORT,
                device: None,
                target_metadata: Some(Metadata::new(super::METADATA[0].0, name.as_str()).shared()),
                objects: objects.clone(),
            });
        }
    }
    targets
}

/// The points of a group: Analog Value objects keyed as Python keyed them.
fn points_of(doc: &mut Document, path: &YamlPath, points: &Value) -> Vec<ObjectSettings> {
    let Value::Sequence(points) = points else {
        doc.warn(path, "not a list: no point is read");
        return Vec::new();
    };
    let mut objects = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let at = path.index(i);
        let Value::Mapping(point) = point else {
            continue;
        };
        let Some(address) = point.get("address") else {
            continue;
        };
        // The key is Python's str() of the YAML value; the instance what
        // BAC0 made of that text.
        let (written, instance) = match address {
            Value::Number(n) => (yaml_number_to_python(n), n.as_u64()),
            Value::String(text) => (text.clone(), text.trim().parse::<u64>().ok()),
            other => (String::new(), {
                let _ = other;
                None
            }),
        };
        let Some(instance) = instance
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= MAX_INSTANCE)
        else {
            doc.warn(&at.key("address"),
                "not an Analog Value instance (a whole number from 0 to 4194302): skipped (the Python agent could not read it either)",
            );
            continue;
        };
        let multiplier = match point.get("multiplier") {
            None | Some(Value::Null) => 1.0,
            Some(Value::Number(n)) => n.as_f64().filter(|m| m.is_finite()).unwrap_or(1.0),
            Some(Value::Bool(b)) => f64::from(u8::from(*b)),
            Some(Value::String(text)) => match text.trim().parse::<f64>() {
                Ok(m) if m.is_finite() => {
                    doc.warn(&at.key("multiplier"),
                        "a number written as text: used as the number (the Python agent crashed on it)",
                    );
                    m
                }
                _ => 1.0,
            },
            Some(_) => 1.0,
        };
        objects.push(ObjectSettings {
            object: ObjectId::new(ObjectType::AnalogValue, instance),
            key: Text::from(format!("analog_value_point_{written}")).shared(),
            multiplier: Some(multiplier),
            offset: None,
            data_type: Some(DataType::Float),
            metadata: Vec::new(),
            naming: Default::default(),
        });
    }
    objects
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(text: &str) -> (Option<PollerSettings>, Vec<String>) {
        let mut doc = Document::parse(Path::new(FILE_NAME), text).unwrap();
        let settings = load(&mut doc);
        let errors = doc.into_errors().iter().map(|e| e.message.clone()).collect();
        (settings, errors)
    }

    fn bacnet(settings: &PollerSettings) -> &BacnetSettings {
        match &settings.kind {
            PollerKind::Bacnet(settings) => settings,
            #[allow(unreachable_patterns)]
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_pattoo_agents_layout_as_python_did() {
        let (poller, errors) = settings(
            "pattoo_agent_bacnetipd:
  polling_interval: 60
  agent_ip_address: 127.0.0.1
  polling_groups:
    - group_name: G1
      ip_targets: [127.0.0.2, ahu1]
      points:
        - address: 1
        - {address: 2, multiplier: 10}
        - {address: '03', multiplier: '2.5'}
        - {address: 1.0}
        - {address: 99}
    - {ip_devices: [127.0.0.3], points: [{address: 4}]}
    - {points: [{address: 5}]}
    - {ip_targets: [127.0.0.4]}
",
        );
        assert_eq!(errors, Vec::<String>::new());
        let poller = poller.unwrap();
        assert_eq!(poller.name, PROGRAM);
        assert_eq!(poller.polling_interval, Duration::from_secs(60));
        let settings = bacnet(&poller);
        assert_eq!(settings.local, "127.0.0.1:47808".parse().unwrap());
        assert!(settings.fall_back_to_any_port);
        let names: Vec<&str> = settings.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.2", "ahu1", "127.0.0.3"]);
        let first = &settings.targets[0];
        assert_eq!(first.port, 47808);
        let points: Vec<(&str, u32, Option<f64>)> = first
            .objects
            .iter()
            .map(|o| (&*o.key, o.object.instance, o.multiplier))
            .collect();
        assert_eq!(
            points,
            [
                ("analog_value_point_1", 1, Some(1.0)),
                ("analog_value_point_2", 2, Some(10.0)),
                ("analog_value_point_03", 3, Some(2.5)),
                ("analog_value_point_99", 99, Some(1.0)),
            ]
        );
        assert_eq!(
            first.target_metadata,
            Some(Metadata::new("target", "127.0.0.2"))
        );
    }

    #[test]
    fn reads_the_pattoo_agent_bacnet_layout_with_its_own_defaults() {
        let (poller, errors) = settings(
            "agent_ip_address: 127.0.0.1
polling_groups:
  - {ip_targets: 10.0.0.5, points: [{address: 1}]}
",
        );
        assert_eq!(errors, Vec::<String>::new());
        let poller = poller.unwrap();
        assert_eq!(poller.polling_interval, Duration::from_secs(300));
        let names: Vec<&str> = bacnet(&poller)
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["10.0.0.5"], "a scalar is one device");

        let (_, errors) = settings("polling_interval: 0\nagent_ip_address: 127.0.0.1\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (poller, errors) =
            settings("pattoo_agent_bacnetipd: {polling_interval: 0, polling_groups: []}\n");
        assert_eq!(errors, Vec::<String>::new());
        let poller = poller.unwrap();
        assert_eq!(poller.polling_interval, Duration::from_secs(300));
        assert_eq!(bacnet(&poller).local.ip(), Ipv4Addr::UNSPECIFIED);
    }
}
