//! Reading the Python agents' `pattoo_agent_snmpd.yaml` and
//! `pattoo_agent_snmp_ifmibd.yaml` as they are, so their users switch
//! without losing a chart (SPEC-snmp-compat.md §1).
//!
//! ```yaml
//! polling_interval: 300
//! polling_groups:
//!   - group_name: any
//!     ip_targets: [10.0.0.1, sw1.example.org]
//!     oids:
//!       - address: .1.3.6.1.2.1.2.2.1.10
//!         multiplier: 8
//! auth_groups:
//!   - group_name: any
//!     snmp_version: 2             # 2 or 3
//!     snmp_community: public
//!     snmp_port: 161
//!     snmp_secname: user          # v3, with snmp_authprotocol/-password
//!     ip_targets: [10.0.0.1]      #     and snmp_privprotocol/-password
//! ```
//!
//! The three keys may also sit under a top-level key named after the agent,
//! as the older agents wrote them. Each file becomes one poller named after
//! its agent, posting under its agent id, with what the Python agent posts:
//! see [`super::convert::python_snmpd`] and [`super::ifmib`].
//!
//! What the Python agents skipped silently is skipped here too, so the
//! same datapoints are posted, but with a warning saying why: groups
//! without `ip_targets` (the `ip_devices` the Python docs show), SNMPv1
//! groups, targets in only one of the two sections. Where the Python agent
//! hung or crashed, this does the sensible thing: an address without its
//! leading dot is read anyway, a numeric-string multiplier is a number, an
//! auth group without `snmp_version` is skipped with a warning, IPv6
//! targets work, and a wrong v3 passphrase is one target's logged error.

use std::collections::HashMap;
use std::time::Duration;

use serde_norway::Value;

use super::config::{Credentials, Flavour, Read, SnmpSettings, TargetSettings};
use super::oid::oid_from_text;
use crate::pollers::{DropIn, PollerKind, PollerSettings};
use crate::secret::SecretSource;
use crate::yaml::{describe, Document, YamlPath};
use async_snmp::{AuthProtocol, PrivProtocol};

pub const SNMPD: &str = "pattoo_agent_snmpd";
pub const IFMIBD: &str = "pattoo_agent_snmp_ifmibd";

pub const SNMPD_DROP_IN: DropIn = DropIn {
    file_name: "pattoo_agent_snmpd.yaml",
    agent_program: SNMPD,
    load: load_snmpd,
};

pub const IFMIBD_DROP_IN: DropIn = DropIn {
    file_name: "pattoo_agent_snmp_ifmibd.yaml",
    agent_program: IFMIBD,
    load: load_ifmibd,
};

/// easysnmp's defaults, which the Python agents keep.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(1);
const PYTHON_RETRIES: u32 = 3;
const PYTHON_MAX_REPETITIONS: u32 = 25;

fn load_snmpd(doc: &mut Document) -> Option<PollerSettings> {
    load(doc, SNMPD, Flavour::PythonSnmpd)
}

fn load_ifmibd(doc: &mut Document) -> Option<PollerSettings> {
    load(doc, IFMIBD, Flavour::PythonIfMib)
}

fn load(doc: &mut Document, program: &str, flavour: Flavour) -> Option<PollerSettings> {
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
    // The older agents put the keys under the agent's name.
    let (path, section) = match top.get(program) {
        Some(Value::Mapping(section)) => (YamlPath::root().key(program), section.clone()),
        _ => (YamlPath::root(), top.clone()),
    };

    let interval = match section.get("polling_interval") {
        None | Some(Value::Null) => Some(300),
        Some(Value::Number(n)) => n.as_f64().map(|v| v.trunc().abs() as u64),
        Some(Value::String(text)) => text.trim().parse::<i64>().ok().map(|v| v.unsigned_abs()),
        Some(_) => None,
    };
    let interval = match interval {
        Some(0) => {
            doc.error(
                &path.key("polling_interval"),
                "0 seconds: the Python agent posts nothing with it and spins; give the interval in seconds, e.g. 300",
            );
            return None;
        }
        Some(seconds) if seconds <= 86_400 => Duration::from_secs(seconds),
        _ => {
            doc.error(
                &path.key("polling_interval"),
                "expected a whole number of seconds from 1 to 86400, e.g. 300",
            );
            return None;
        }
    };

    let credentials = auth_groups(doc, &path, section.get("auth_groups"));
    let polled = polling_groups(doc, &path, section.get("polling_groups"), flavour);

    let mut targets = Vec::new();
    for (name, reads) in polled {
        let Some(credentials) = credentials.get(&name) else {
            doc.warn(&path.key("polling_groups"),
                &format!("target {name:?} is in no auth group (with snmp_version 2 or 3): not polled, as by the Python agent"),
            );
            continue;
        };
        let Some((host, _)) = super::config::parse_host_port(&name) else {
            doc.warn(&path.key("polling_groups"),
                &format!("{name:?} is not a host name or address: not polled"),
            );
            continue;
        };
        let (credentials, port) = credentials.clone();
        targets.push(TargetSettings {
            name,
            host,
            port,
            credentials,
            reads: reads.into(),
        });
    }
    for name in credentials.keys() {
        if !targets.iter().any(|t| &t.name == name) && !doc.has_errors() {
            tracing::debug!(file = %doc.file.display(), "target {name:?} has credentials but no OIDs to poll");
        }
    }
    if targets.is_empty() {
        doc.warn(&path,
            "no target is in both polling_groups and auth_groups: this file polls nothing",
        );
    }
    Some(PollerSettings {
        name: program.to_owned(),
        agent_program: program.to_owned(),
        polling_interval: interval,
        metadata: Vec::new(),
        kind: PollerKind::Snmp(SnmpSettings {
            flavour,
            targets,
            timeout: PYTHON_TIMEOUT,
            retries: PYTHON_RETRIES,
            max_repetitions: PYTHON_MAX_REPETITIONS,
            // The Python files have no such setting.
            max_repetitions_set: false,
            max_oids_per_request: super::config::DEFAULT_MAX_OIDS_PER_REQUEST,
            max_concurrent_targets: super::config::DEFAULT_MAX_CONCURRENT_TARGETS,
            max_rows_per_walk: super::config::DEFAULT_MAX_ROWS_PER_WALK,
            poll_deadline: None,
        }),
    })
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
        _ => None,
    }
}

/// Each target's credentials and port; the last group naming a target wins.
fn auth_groups(
    doc: &mut Document,
    path: &YamlPath,
    groups: Option<&Value>,
) -> HashMap<String, (Credentials, u16)> {
    let mut by_target = HashMap::new();
    let list = path.key("auth_groups");
    let Some(Value::Sequence(groups)) = groups else {
        doc.warn(&list, "missing or not a list: no target can be polled");
        return by_target;
    };
    for (i, group) in groups.iter().enumerate() {
        let at = list.index(i);
        let Value::Mapping(group) = group else {
            doc.warn(&at, "not a mapping: skipped, as by the Python agent");
            continue;
        };
        let version = match group.get("snmp_version") {
            Some(Value::Number(n)) => n.as_i64(),
            None => {
                doc.warn(&at,
                    "no snmp_version: skipped (the Python agent crashed on every poll)",
                );
                continue;
            }
            _ => None,
        };
        let port = match group.get("snmp_port") {
            None | Some(Value::Null) => Some(super::config::DEFAULT_PORT),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0),
            Some(Value::String(t)) => t.trim().parse::<u16>().ok().filter(|p| *p > 0),
            Some(_) => None,
        };
        let Some(port) = port else {
            doc.error(
                &at.key("snmp_port"),
                "expected a port number from 1 to 65535",
            );
            continue;
        };
        let credentials = match version {
            Some(2) => Credentials::V2c(SecretSource::Inline(
                text(group.get("snmp_community"))
                    .unwrap_or_else(|| "public".to_owned())
                    .into(),
            )),
            Some(3) => {
                let auth = match text(group.get("snmp_authprotocol"))
                    .map(|p| p.to_ascii_lowercase())
                    .as_deref()
                {
                    Some("md5") => AuthProtocol::Md5,
                    _ => AuthProtocol::Sha1,
                };
                let privacy = match text(group.get("snmp_privprotocol"))
                    .map(|p| p.to_ascii_lowercase())
                    .as_deref()
                {
                    Some("des") => PrivProtocol::Des,
                    _ => PrivProtocol::Aes128,
                };
                Credentials::V3 {
                    user: text(group.get("snmp_secname")).unwrap_or_default(),
                    auth: Some((
                        auth,
                        SecretSource::Inline(
                            text(group.get("snmp_authpassword"))
                                .unwrap_or_default()
                                .into(),
                        ),
                    )),
                    privacy: Some((
                        privacy,
                        SecretSource::Inline(
                            text(group.get("snmp_privpassword"))
                                .unwrap_or_default()
                                .into(),
                        ),
                    )),
                }
            }
            _ => {
                doc.warn(&at.key("snmp_version"), "only versions 2 and 3 are read from this file: group skipped, as by the Python agent (use `type: snmp` with `version: 1` for SNMPv1)");
                continue;
            }
        };
        let Some(Value::Sequence(targets)) = group.get("ip_targets") else {
            doc.warn(&at,
                "no `ip_targets` list: skipped, as by the Python agent",
            );
            continue;
        };
        for target in targets {
            if let Value::String(name) = target {
                by_target.insert(name.trim().to_owned(), (credentials.clone(), port));
            }
        }
    }
    by_target
}

/// Each target's reads, targets in the order first named.
fn polling_groups(
    doc: &mut Document,
    path: &YamlPath,
    groups: Option<&Value>,
    flavour: Flavour,
) -> Vec<(String, Vec<Read>)> {
    let mut targets: Vec<(String, Vec<Read>)> = Vec::new();
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
        let (Some(Value::Sequence(names)), Some(Value::Sequence(oids))) =
            (group.get("ip_targets"), group.get("oids"))
        else {
            let hint = if group.contains_key("ip_devices") {
                " (`ip_devices`, as the Python docs write it, is not read by the Python agent: rename it `ip_targets` to poll these devices)"
            } else {
                ""
            };
            doc.warn(&at,
                &format!(
                    "needs lists `ip_targets` and `oids`: skipped, as by the Python agent{hint}"
                ),
            );
            continue;
        };
        let mut reads = Vec::new();
        for (o, item) in oids.iter().enumerate() {
            let item_at = at.key("oids").index(o);
            let Value::Mapping(item) = item else { continue };
            let Some(address) = text(item.get("address")) else {
                continue;
            };
            let Some(oid) = oid_from_text(&address) else {
                doc.error(
                    &item_at.key("address"),
                    format!("{address:?} is not a numeric OID such as .1.3.6.1.2.1.2.2.1.10 (the Python agent stopped polling altogether on it)"),
                );
                continue;
            };
            if !address.trim().starts_with('.') {
                doc.warn(&item_at.key("address"),
                    "no leading dot: read anyway (the Python agent hung on it)",
                );
            }
            let multiplier = match item.get("multiplier") {
                Some(Value::Number(n)) => n.as_f64().unwrap_or(1.0),
                Some(Value::String(t)) => t.trim().parse::<f64>().unwrap_or(1.0),
                Some(Value::Bool(b)) => f64::from(u8::from(*b)),
                _ => 1.0,
            };
            reads.push(Read::PythonWalk {
                address: address.clone(),
                oid,
                multiplier,
            });
        }
        if reads.is_empty() {
            continue;
        }
        if flavour == Flavour::PythonIfMib {
            // The OIDs only make the target a polling target.
            reads = vec![Read::PythonIfMib];
        }
        for name in names {
            let Value::String(name) = name else { continue };
            let name = name.trim().to_owned();
            match targets.iter_mut().find(|(n, _)| *n == name) {
                Some((_, existing)) if flavour == Flavour::PythonSnmpd => {
                    existing.extend(reads.iter().cloned())
                }
                Some(_) => {}
                None => targets.push((name, reads.clone())),
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn snmpd(text: &str) -> (Option<SnmpSettings>, Vec<String>) {
        let mut doc = Document::parse(Path::new("pattoo_agent_snmpd.yaml"), text).unwrap();
        let settings = load_snmpd(&mut doc).map(|p| match p.kind {
            PollerKind::Snmp(settings) => settings,
            other => panic!("{other:?}"),
        });
        let errors = doc
            .into_errors()
            .iter()
            .map(|e| e.message.clone())
            .collect();
        (settings, errors)
    }

    fn walks(target: &TargetSettings) -> Vec<(String, f64)> {
        target
            .reads
            .iter()
            .map(|r| match r {
                Read::PythonWalk {
                    address,
                    multiplier,
                    ..
                } => (address.clone(), *multiplier),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn reads_the_python_files_as_the_python_agent_did_and_fixes_what_crashed_it() {
        let (settings, errors) = snmpd(
            "polling_interval: '120'
polling_groups:
  - ip_targets: [sw1, sw2]
    oids:
      - {address: .1.3.6.1.2.1.2.2.1.10, multiplier: '8'}
      - {address: 1.3.6.1.2.1.1.5}
      - {multiplier: 2}
  - ip_targets: [sw1]
    oids: [{address: .1.3.6.1.2.1.1.3, multiplier: x}]
auth_groups:
  - {snmp_version: 2, snmp_community: first, ip_targets: [sw1]}
  - {snmp_version: 2, snmp_community: last, snmp_port: 1161, ip_targets: [sw1]}
  - {snmp_version: 1, ip_targets: [sw2]}
",
        );
        assert_eq!(errors, Vec::<String>::new());
        let settings = settings.unwrap();
        // sw2 is only in a v1 group, which the Python agent skipped.
        assert_eq!(settings.targets.len(), 1);
        let sw1 = &settings.targets[0];
        assert_eq!(sw1.port, 1161, "the last auth group wins");
        assert_eq!(
            sw1.credentials,
            Credentials::V2c(SecretSource::Inline("last".to_owned().into()))
        );
        assert_eq!(
            walks(sw1),
            [
                (".1.3.6.1.2.1.2.2.1.10".to_owned(), 8.0),
                ("1.3.6.1.2.1.1.5".to_owned(), 1.0),
                (".1.3.6.1.2.1.1.3".to_owned(), 1.0),
            ]
        );
    }

    #[test]
    fn reads_the_older_layout_under_the_agents_name() {
        let (settings, _) = snmpd(
            "pattoo_agent_snmpd:
  polling_interval: 60
  polling_groups: [{ip_targets: ['::1'], oids: [{address: .1.3.6.1.2.1.1}]}]
  auth_groups: [{snmp_version: 3, snmp_secname: u, snmp_authprotocol: md5, snmp_privprotocol: weird, ip_targets: ['::1']}]
",
        );
        let settings = settings.unwrap();
        let target = &settings.targets[0];
        assert_eq!(target.host, "::1");
        let Credentials::V3 { auth, privacy, .. } = &target.credentials else {
            panic!("{:?}", target.credentials);
        };
        assert_eq!(auth.as_ref().unwrap().0, AuthProtocol::Md5);
        assert_eq!(
            privacy.as_ref().unwrap().0,
            PrivProtocol::Aes128,
            "anything else is AES"
        );
    }

    #[test]
    fn refuses_an_interval_of_zero_and_names_that_are_not_oids() {
        let (_, errors) = snmpd("polling_interval: 0\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (_, errors) = snmpd(
            "polling_groups: [{ip_targets: [a], oids: [{address: ifDescr}]}]\nauth_groups: []\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("not a numeric OID"), "{errors:?}");
    }
}
