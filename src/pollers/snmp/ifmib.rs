//! IF-MIB (RFC 2863): the native poller's `preset: if_mib` table, and the
//! Python `pattoo_agent_snmp_ifmibd` agent's walks and datapoints
//! (SPEC-snmp-compat.md §4), built here from what the walks returned.

use std::collections::HashMap;

use async_snmp::{Oid, VarBind};

use super::convert::{self, Octets, Reading};
use super::oid::{dotted_into, oid_from_text};
use crate::model::{DataPoint, DataType, Metadata, Text, TextSet};

fn oid(text: &str) -> Oid {
    oid_from_text(text).expect("a valid built-in OID")
}

/// The native `preset: if_mib` table, which `config` builds: one datapoint
/// per interface and counter, 64-bit counters read where the device has
/// them and 32-bit ones where not (key, column, fallback column).
pub const PRESET_COLUMNS: [(&str, &str, Option<&str>); 15] = [
    (
        "ifInOctets",
        ".1.3.6.1.2.1.31.1.1.1.6",
        Some(".1.3.6.1.2.1.2.2.1.10"),
    ),
    (
        "ifOutOctets",
        ".1.3.6.1.2.1.31.1.1.1.10",
        Some(".1.3.6.1.2.1.2.2.1.16"),
    ),
    (
        "ifInUcastPkts",
        ".1.3.6.1.2.1.31.1.1.1.7",
        Some(".1.3.6.1.2.1.2.2.1.11"),
    ),
    (
        "ifOutUcastPkts",
        ".1.3.6.1.2.1.31.1.1.1.11",
        Some(".1.3.6.1.2.1.2.2.1.17"),
    ),
    ("ifInMulticastPkts", ".1.3.6.1.2.1.31.1.1.1.8", None),
    ("ifOutMulticastPkts", ".1.3.6.1.2.1.31.1.1.1.12", None),
    ("ifInBroadcastPkts", ".1.3.6.1.2.1.31.1.1.1.9", None),
    ("ifOutBroadcastPkts", ".1.3.6.1.2.1.31.1.1.1.13", None),
    ("ifInDiscards", ".1.3.6.1.2.1.2.2.1.13", None),
    ("ifOutDiscards", ".1.3.6.1.2.1.2.2.1.19", None),
    ("ifInErrors", ".1.3.6.1.2.1.2.2.1.14", None),
    ("ifOutErrors", ".1.3.6.1.2.1.2.2.1.20", None),
    ("ifAdminStatus", ".1.3.6.1.2.1.2.2.1.7", None),
    ("ifOperStatus", ".1.3.6.1.2.1.2.2.1.8", None),
    ("ifHighSpeed", ".1.3.6.1.2.1.31.1.1.1.15", None),
];

/// The preset's labels: the interface's name, description and alias (the
/// alias, which operators edit, outside the checksum).
pub const PRESET_LABELS: [(&str, &str, bool); 3] = [
    ("ifName", ".1.3.6.1.2.1.31.1.1.1.1", true),
    ("ifDescr", ".1.3.6.1.2.1.2.2.1.2", true),
    ("ifAlias", ".1.3.6.1.2.1.31.1.1.1.18", false),
];

/// The Python ifmibd agent's walks in its order: name, OID, whether the
/// value is multiplied by 8, whether it is posted.
pub const PYTHON_WALKS: [(&str, &str, bool, bool); 19] = [
    ("ifDescr", ".1.3.6.1.2.1.2.2.1.2", false, false),
    ("ifAlias", ".1.3.6.1.2.1.31.1.1.1.18", false, false),
    ("ifName", ".1.3.6.1.2.1.31.1.1.1.1", false, false),
    ("ifAdminStatus", ".1.3.6.1.2.1.2.2.1.7", false, false),
    ("ifIndex", ".1.3.6.1.2.1.2.2.1.1", false, false),
    ("ifInOctets", ".1.3.6.1.2.1.2.2.1.10", true, true),
    ("ifOutOctets", ".1.3.6.1.2.1.2.2.1.16", true, true),
    ("ifInBroadcastPkts", ".1.3.6.1.2.1.31.1.1.1.3", false, true),
    ("ifOutBroadcastPkts", ".1.3.6.1.2.1.31.1.1.1.5", false, true),
    ("ifInMulticastPkts", ".1.3.6.1.2.1.31.1.1.1.2", false, true),
    ("ifOutMulticastPkts", ".1.3.6.1.2.1.31.1.1.1.4", false, true),
    (
        "ifHCOutBroadcastPkts",
        ".1.3.6.1.2.1.31.1.1.1.13",
        false,
        true,
    ),
    (
        "ifHCOutMulticastPkts",
        ".1.3.6.1.2.1.31.1.1.1.12",
        false,
        true,
    ),
    ("ifHCOutUcastPkts", ".1.3.6.1.2.1.31.1.1.1.11", false, true),
    ("ifHCOutOctets", ".1.3.6.1.2.1.31.1.1.1.10", true, true),
    (
        "ifHCInBroadcastPkts",
        ".1.3.6.1.2.1.31.1.1.1.9",
        false,
        true,
    ),
    (
        "ifHCInMulticastPkts",
        ".1.3.6.1.2.1.31.1.1.1.8",
        false,
        true,
    ),
    ("ifHCInUcastPkts", ".1.3.6.1.2.1.31.1.1.1.7", false, true),
    ("ifHCInOctets", ".1.3.6.1.2.1.31.1.1.1.6", true, true),
];

pub fn python_walk_oids() -> Vec<Oid> {
    PYTHON_WALKS
        .iter()
        .map(|(_, text, _, _)| oid(text))
        .collect()
}

/// Python's `str.strip()`: Unicode whitespace plus the four ASCII
/// separators `\x1c`..`\x1f`, which Python counts as whitespace.
fn python_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// The ifIndex of a row: the last number of its OID.
fn if_index(varbind: &VarBind) -> Option<u32> {
    varbind.oid.arcs().last().copied()
}

/// The Python ifmibd agent's datapoints for one target from its nineteen
/// walks (`walks[i]` answers `PYTHON_WALKS[i]`; a failed walk is empty).
/// Texts are the poller's (`texts`).
pub(super) fn python_datapoints(
    walks: &[Vec<VarBind>],
    timestamp_ms: u64,
    texts: &mut TextSet,
) -> Vec<DataPoint> {
    // Each interface's metadata texts made once and shared by its
    // datapoints, in the order of the walk (the last of a repeated index
    // wins). The emptiness test comes before stripping, as in Python: an
    // all-blank alias is posted as "".
    let mut labels = |walk: &[VarBind]| -> HashMap<u32, Option<Text>> {
        let mut labels = HashMap::with_capacity(walk.len());
        for vb in walk {
            let Ok(reading) = convert::reading(&vb.value, Octets::Latin1) else {
                continue;
            };
            let text = match reading {
                Reading::Text(text) => text,
                Reading::Integer(v, _) => v.to_string(),
                Reading::Float(v) => crate::model::python::float_to_string(v),
            };
            let Some(index) = if_index(vb) else {
                continue;
            };
            let text = (!text.is_empty()).then(|| Text::from(texts.text(python_strip(&text))));
            labels.insert(index, text);
        }
        labels
    };
    let descr = labels(&walks[0]);
    let alias = labels(&walks[1]);
    let name = labels(&walks[2]);
    let admin_up: HashMap<u32, bool> = walks[3]
        .iter()
        .filter_map(|vb| {
            let up = matches!(
                convert::reading(&vb.value, Octets::Latin1),
                Ok(Reading::Integer(1, _))
            );
            Some((if_index(vb)?, up))
        })
        .collect();

    let mut datapoints = Vec::new();
    let mut oid_text = String::new();
    for (walk, (walk_name, _, times_eight, posted)) in walks.iter().zip(PYTHON_WALKS) {
        if !posted {
            continue;
        }
        let key = Text::from(texts.text(&walk_name.to_ascii_lowercase()));
        for varbind in walk {
            let Some(index) = if_index(varbind) else {
                continue;
            };
            let Some(descr) = descr.get(&index) else {
                continue;
            };
            if admin_up.get(&index) != Some(&true) {
                continue;
            }
            let (value, data_type) = match convert::reading(&varbind.value, Octets::Latin1) {
                Ok(Reading::Integer(v, data_type)) => {
                    let v = if times_eight { v * 8 } else { v };
                    (convert::integer(v), data_type)
                }
                Ok(Reading::Float(v)) => (
                    crate::model::Value::Float(if times_eight { v * 8.0 } else { v }),
                    DataType::Float,
                ),
                Ok(Reading::Text(text)) => (crate::model::Value::Text(text), DataType::String),
                Err(_) => continue,
            };
            let mut datapoint = DataPoint::new(key.clone(), value, data_type, timestamp_ms);
            datapoint.metadata.reserve_exact(4);
            dotted_into(&varbind.oid, &mut oid_text);
            datapoint.metadata.push(Metadata::new(
                Text::Static(super::OID_METADATA_KEY),
                Text::from(texts.text(&oid_text)),
            ));
            if let Some(descr) = descr {
                datapoint
                    .metadata
                    .push(Metadata::new(Text::Static("ifdescr"), descr.clone()));
            }
            if let Some(Some(name)) = name.get(&index) {
                datapoint
                    .metadata
                    .push(Metadata::new(Text::Static("ifname"), name.clone()));
            }
            if let Some(Some(alias)) = alias.get(&index) {
                datapoint.metadata.push(Metadata::without_checksum(
                    Text::Static("ifalias"),
                    alias.clone(),
                ));
            }
            datapoints.push(datapoint);
        }
    }
    datapoints
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_snmp::Value as Snmp;
    use bytes::Bytes;

    fn vb(text: &str, value: Snmp) -> VarBind {
        VarBind::new(oid(text), value)
    }

    fn walks() -> Vec<Vec<VarBind>> {
        let mut walks = vec![Vec::new(); 19];
        walks[0] = vec![
            vb(
                ".1.3.6.1.2.1.2.2.1.2.1",
                Snmp::OctetString(Bytes::from_static(b"eth0  ")),
            ),
            vb(
                ".1.3.6.1.2.1.2.2.1.2.2",
                Snmp::OctetString(Bytes::from_static(b"eth1")),
            ),
        ];
        walks[1] = vec![vb(
            ".1.3.6.1.2.1.31.1.1.1.18.1",
            Snmp::OctetString(Bytes::from_static(b"  ")),
        )];
        walks[3] = vec![
            vb(".1.3.6.1.2.1.2.2.1.7.1", Snmp::Integer(1)),
            vb(".1.3.6.1.2.1.2.2.1.7.2", Snmp::Integer(2)),
        ];
        walks[18] = vec![
            vb(".1.3.6.1.2.1.31.1.1.1.6.1", Snmp::Counter64(u64::MAX)),
            vb(".1.3.6.1.2.1.31.1.1.1.6.2", Snmp::Counter64(5)),
            vb(".1.3.6.1.2.1.31.1.1.1.6.3", Snmp::Counter64(5)),
        ];
        walks
    }

    #[test]
    fn posts_only_admin_up_interfaces_with_a_description() {
        let datapoints = python_datapoints(&walks(), 1, &mut TextSet::default());
        assert_eq!(datapoints.len(), 1, "{datapoints:#?}");
        let datapoint = &datapoints[0];
        assert_eq!(datapoint.key, "ifhcinoctets");
        assert_eq!(
            datapoint.value,
            crate::model::Value::from(u128::from(u64::MAX) * 8)
        );
        assert_eq!(datapoint.data_type, DataType::Counter64);
        let metadata: Vec<(&str, &str, bool)> = datapoint
            .metadata
            .iter()
            .map(|m| (m.key.as_str(), m.value.as_str(), m.update_checksum))
            .collect();
        assert_eq!(
            metadata,
            [
                ("oid", ".1.3.6.1.2.1.31.1.1.1.6.1", true),
                ("ifdescr", "eth0", true),
                ("ifalias", "", false)
            ]
        );
    }
}
