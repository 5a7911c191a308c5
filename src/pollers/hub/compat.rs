//! Reading the Python hubs' files, `pattoo_agent_os_hubd.yaml` and
//! `pattoo_agent_linux_hubd.yaml`, so a hub switches without a change.
//!
//! ```yaml
//! pattoo_agent_os_hubd:           # pattoo_agent_linux_hubd.yaml: no such key, the keys at the top
//!     polling_interval: 300       # seconds, also the interval the spokes are asked for
//!     ip_targets:                 # `ip_devices` in the Python docs: both accepted
//!       - ip_address: 192.168.1.10
//!         ip_bind_port: 5000      # `bind_port` in the Python docs: both accepted
//! ```
//!
//! Either file takes either layout: keys under the program's name (as
//! `pattoo-agents` writes them) or at the top (as `pattoo-agent-linux`
//! writes them). The file becomes one `hub` poller named after the
//! program and posting under its agent id, asking each spoke for
//! `http://{ip_address}:{ip_bind_port}/pattoo-agent-os/{polling_interval}`
//! (`/pattoo-agent-linux/...` for the linux file; an IPv6 address in
//! brackets) and relaying each answer as the Python hub does.
//!
//! Where the Python hub differs, it crashed, hung or posted nothing, so no
//! identity depends on it: the documented `ip_devices` and `bind_port`
//! work; an IPv6 address is bracketed in the URL; each spoke has a timeout;
//! an interval that is not a whole number is refused at `check` rather
//! than killing the daemon; an entry without an address or port, which
//! Python skips silently, is skipped with a warning.

use std::time::Duration;

use serde_norway::{Mapping, Value};

use super::config::{check_host, port_value, HubSettings, Spoke};
use crate::pollers::{DropIn, PollerKind, PollerSettings};
use crate::yaml::{describe, expect_mapping, Document, YamlPath};

/// The two families of Python agents and what tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `palisadoes/pattoo-agents`: a falsy interval means 300.
    Os,
    /// `pattoo-agent-linux`: only a missing interval means 300.
    Linux,
}

const OS_PROGRAM: &str = "pattoo_agent_os_hubd";
const LINUX_PROGRAM: &str = "pattoo_agent_linux_hubd";

/// The Python hubs' files, as the configuration loader finds them.
pub const DROP_INS: [DropIn; 2] = [
    DropIn {
        file_name: "pattoo_agent_os_hubd.yaml",
        agent_program: OS_PROGRAM,
        load: load_os,
    },
    DropIn {
        file_name: "pattoo_agent_linux_hubd.yaml",
        agent_program: LINUX_PROGRAM,
        load: load_linux,
    },
];

fn load_os(doc: &mut Document) -> Option<PollerSettings> {
    load(doc, OS_PROGRAM, "pattoo-agent-os", Family::Os)
}

fn load_linux(doc: &mut Document) -> Option<PollerSettings> {
    load(doc, LINUX_PROGRAM, "pattoo-agent-linux", Family::Linux)
}

/// Logs what the Python hub skipped silently, located in the file.
/// The program's section, nested under its name or at the top of the file.
pub fn section(doc: &mut Document, program: &str) -> Option<(YamlPath, Mapping)> {
    let root = doc.root.clone();
    let top = match &root {
        Value::Mapping(top) => top,
        Value::Null => {
            doc.error(&YamlPath::root(), "the file is empty (the Python agent exits on it)");
            return None;
        }
        other => {
            doc.error(
                &YamlPath::root(),
                format!("expected a mapping of keys to values, found {}", describe(other)),
            );
            return None;
        }
    };
    match top.get(program) {
        None => Some((YamlPath::root(), top.clone())),
        Some(Value::Null) => Some((YamlPath::root().key(program), Mapping::new())),
        Some(value) => {
            let path = YamlPath::root().key(program);
            let section = expect_mapping(doc, &path, value)?.clone();
            if top.len() > 1 {
                for key in top.keys().filter(|k| k.as_str() != Some(program)) {
                    let key = key.as_str().unwrap_or_default();
                    doc.error(
                        &YamlPath::root().key(key),
                        format!("unknown key `{key}`: the settings go under `{program}`"),
                    );
                }
            }
            Some((path, section))
        }
    }
}

/// `polling_interval` as the Python agents read it: `abs(int(value))`,
/// with 300 for a missing value (and, in the os family, for any falsy one).
/// What would kill or spin the Python daemon is refused.
fn python_interval(
    doc: &mut Document,
    path: &YamlPath,
    value: Option<&Value>,
    family: Family,
) -> Option<Duration> {
    let falsy = match value {
        None => return Some(Duration::from_secs(300)),
        Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(text)) => text.is_empty(),
        Some(Value::Bool(b)) => !b,
        Some(_) => false,
    };
    if falsy && family == Family::Os {
        return Some(Duration::from_secs(300));
    }
    let seconds = match value {
        Some(Value::Number(n)) => n.as_f64().map(|v| v.trunc().abs()),
        Some(Value::String(text)) => text.trim().parse::<i64>().ok().map(|v| v.unsigned_abs() as f64),
        _ => None,
    };
    match seconds {
        Some(s) if (1.0..=86_400.0).contains(&s) => Some(Duration::from_secs(s as u64)),
        Some(0.0) => {
            doc.error(
                path,
                "0 seconds: the Python agent asks its spokes for nothing and spins; give the interval in seconds, e.g. 300",
            );
            None
        }
        _ => {
            doc.error(path, "expected a whole number of seconds from 1 to 86400, e.g. 300");
            None
        }
    }
}

fn load(doc: &mut Document, program: &str, route: &str, family: Family) -> Option<PollerSettings> {
    let (path, section) = section(doc, program)?;
    let mut interval = Some(Duration::from_secs(300));
    let mut targets: Option<(YamlPath, Value)> = None;
    let mut interval_value = None;
    for (key, value) in &section {
        let key = key.as_str().unwrap_or_default();
        let at = path.key(key);
        match key {
            "polling_interval" => interval_value = Some(value.clone()),
            "ip_targets" | "ip_devices" => {
                if targets.is_some() {
                    doc.error(&at, "give the spokes once, as ip_targets or as ip_devices");
                }
                targets = Some((at, value.clone()));
            }
            other => doc.error(
                &at,
                format!("unknown key `{other}`: expected polling_interval or ip_targets"),
            ),
        }
    }
    if let Some(value) = &interval_value {
        interval = python_interval(doc, &path.key("polling_interval"), Some(value), family);
    }
    let Some((list, targets)) = targets else {
        doc.error(
            &path,
            "missing `ip_targets`: list the spokes (ip_address and ip_bind_port each); the Python agent exits without it",
        );
        return None;
    };
    let entries = match &targets {
        Value::Sequence(entries) => entries.clone(),
        other => {
            doc.error(
                &list,
                format!("expected a list of spokes, found {}", describe(other)),
            );
            return None;
        }
    };
    let mut spokes = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = list.index(i);
        let Value::Mapping(entry) = entry else {
            doc.warn(&at, "not a mapping with ip_address and ip_bind_port: skipped, as by the Python agent");
            continue;
        };
        let mut address = None;
        let mut port = None;
        for (key, value) in entry {
            let key = key.as_str().unwrap_or_default();
            match key {
                "ip_address" => address = Some(value),
                "ip_bind_port" | "bind_port" => {
                    if port.is_some() {
                        doc.error(&at.key(key), "give the port once, as ip_bind_port or as bind_port");
                    }
                    port = Some((key, value));
                }
                other => doc.error(
                    &at.key(other),
                    format!("unknown key `{other}`: expected ip_address and ip_bind_port"),
                ),
            }
        }
        let (Some(address), Some((port_key, port))) = (address, port) else {
            doc.warn(&at, "needs both ip_address and ip_bind_port: skipped, as by the Python agent");
            continue;
        };
        let host = match address {
            Value::String(text) => text.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            other => {
                doc.error(
                    &at.key("ip_address"),
                    format!("expected a host name or IP address, found {}", describe(other)),
                );
                continue;
            }
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(str::to_owned)
            .unwrap_or(host);
        if let Err(why) = check_host(&host) {
            doc.error(&at.key("ip_address"), format!("{host:?} {why}"));
            continue;
        }
        match port_value(port) {
            Ok(port) => spokes.push(Spoke { host, port }),
            Err(why) => doc.error(&at.key(port_key), why),
        }
    }
    if spokes.is_empty() && !doc.has_errors() {
        doc.error(&list, "lists no spoke with ip_address and ip_bind_port: nothing to poll");
    }
    if doc.has_errors() {
        return None;
    }
    Some(PollerSettings {
        name: program.to_owned(),
        agent_program: program.to_owned(),
        polling_interval: interval?,
        metadata: Vec::new(),
        kind: PollerKind::Hub(HubSettings {
            spokes,
            route: route.to_owned(),
            timeout: super::config::DEFAULT_TIMEOUT,
            max_answer_bytes: super::config::DEFAULT_MAX_ANSWER_BYTES,
            max_concurrent_targets: super::config::DEFAULT_MAX_CONCURRENT_TARGETS,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn hubd(file: &str, text: &str) -> (Option<PollerSettings>, Vec<String>) {
        let mut doc = Document::parse(Path::new(file), text).expect("YAML");
        let drop_in = DROP_INS.iter().find(|d| d.file_name == file).unwrap();
        let poller = (drop_in.load)(&mut doc);
        let errors = doc.into_errors().iter().map(ToString::to_string).collect();
        (poller, errors)
    }

    fn hub(poller: &PollerSettings) -> &HubSettings {
        match &poller.kind {
            PollerKind::Hub(hub) => hub,
            #[allow(unreachable_patterns)]
            _ => panic!("not a hub"),
        }
    }

    #[test]
    fn the_documented_keys_and_ipv6_spokes_give_the_hub_python_meant() {
        let (poller, errors) = hubd(
            "pattoo_agent_os_hubd.yaml",
            "pattoo_agent_os_hubd:\n  polling_interval: '60'\n  ip_devices:\n    - {ip_address: 192.168.1.10, bind_port: 5000}\n    - {ip_address: '::1', ip_bind_port: '5001'}\n    - {ip_address: 10.0.0.9}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let poller = poller.unwrap();
        assert_eq!(poller.name, "pattoo_agent_os_hubd");
        assert_eq!(poller.agent_program, "pattoo_agent_os_hubd");
        assert_eq!(poller.polling_interval, Duration::from_secs(60));
        let hub = hub(&poller);
        assert_eq!(hub.route, "pattoo-agent-os");
        assert_eq!(
            hub.spokes,
            [
                Spoke { host: "192.168.1.10".into(), port: 5000 },
                Spoke { host: "::1".into(), port: 5001 }
            ]
        );
    }

    #[test]
    fn the_linux_file_is_flat_asks_its_own_route_and_keeps_an_interval_of_zero_out() {
        let (poller, errors) = hubd(
            "pattoo_agent_linux_hubd.yaml",
            "polling_interval: 2.9\nip_targets:\n  - {ip_address: spoke.example, ip_bind_port: 5000}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let poller = poller.unwrap();
        assert_eq!(poller.name, "pattoo_agent_linux_hubd");
        assert_eq!(poller.polling_interval, Duration::from_secs(2));
        assert_eq!(hub(&poller).route, "pattoo-agent-linux");

        let (_, errors) = hubd(
            "pattoo_agent_linux_hubd.yaml",
            "polling_interval: 0\nip_targets: [{ip_address: a, ip_bind_port: 1}]\n",
        );
        assert!(errors[0].contains("0 seconds"), "{errors:?}");
        let (poller, errors) = hubd(
            "pattoo_agent_os_hubd.yaml",
            "pattoo_agent_os_hubd:\n  polling_interval: 0\n  ip_targets: [{ip_address: a, ip_bind_port: 1}]\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(poller.unwrap().polling_interval, Duration::from_secs(300));
    }

    #[test]
    fn a_file_python_would_exit_on_is_a_located_error() {
        let (_, errors) = hubd("pattoo_agent_os_hubd.yaml", "pattoo_agent_os_hubd:\n  polling_interval: 300\n");
        assert!(errors[0].contains("missing `ip_targets`"), "{errors:?}");
        let (_, errors) = hubd(
            "pattoo_agent_os_hubd.yaml",
            "pattoo_agent_os_hubd:\n  polling_interval: '2.9'\n  ip_targets: [{ip_address: a, ip_bind_port: 1}]\n",
        );
        assert!(errors[0].starts_with("pattoo_agent_os_hubd.yaml:2:"), "{errors:?}");
        let (_, errors) = hubd(
            "pattoo_agent_os_hubd.yaml",
            "pattoo_agent_os_hubd:\n  ip_targets: [{ip_address: a, ip_bind_port: 70000}]\n",
        );
        assert!(errors[0].contains("70000"), "{errors:?}");
    }
}
