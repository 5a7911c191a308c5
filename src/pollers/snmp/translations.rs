//! Names and units of what an SNMP poller posts, for
//! `pattoo-agentd translations`: a column by the `description` and `units`
//! written beside it, else an IF-MIB column by its IF-MIB name (from the
//! tables in [`super::ifmib`] that define what is read), else its key.

use super::config::{Column, Read, SnmpSettings};
use super::ifmib::{PRESET_COLUMNS, PRESET_LABELS, PYTHON_WALKS};
use super::oid::dotted;
use super::{INDEX_METADATA_KEY, OID_METADATA_KEY};
use crate::model::translation::{readable, Language, Translation, LABEL_UNITS};

/// Every IF-MIB name the tables of [`super::ifmib`] know, with its OID.
fn if_mib_oids() -> impl Iterator<Item = (&'static str, &'static str)> {
    PRESET_COLUMNS
        .iter()
        // The fallback is the same counter's 32-bit column.
        .flat_map(|(name, oid, fallback)| {
            std::iter::once((*name, *oid)).chain(fallback.map(|f| (*name, f)))
        })
        .chain(PRESET_LABELS.iter().map(|(name, oid, _)| (*name, *oid)))
        .chain(PYTHON_WALKS.iter().map(|(name, oid, _, _)| (*name, *oid)))
}

/// The IF-MIB name of a column OID, or of an instance below one (with its
/// index).
fn if_mib_name(oid: &str) -> Option<(&'static str, Option<&str>)> {
    if_mib_oids().find_map(|(name, column)| {
        if oid == column {
            return Some((name, None));
        }
        let index = oid.strip_prefix(column)?.strip_prefix('.')?;
        index
            .split('.')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .then_some((name, Some(index)))
    })
}

/// An IF-MIB object's name and unit in `language`, by its IF-MIB name
/// (either case, 64-bit `HC` counters as their 32-bit twins); `bits` when
/// octets are posted multiplied by eight. Counters are charted as rates.
pub fn if_mib_english(name: &str, bits: bool) -> Option<(&'static str, &'static str)> {
    let octets = if bits { "Bits / Second" } else { "Bytes / Second" };
    let name = name.to_ascii_lowercase().replacen("ifhc", "if", 1);
    Some(match name.as_str() {
        "ifdescr" => ("Interface Description", LABEL_UNITS),
        "ifname" => ("Interface Name", LABEL_UNITS),
        "ifalias" => ("Interface Alias", LABEL_UNITS),
        "ifindex" => ("Interface Index", "Number"),
        "ifadminstatus" => ("Interface Administrative Status", "State"),
        "ifoperstatus" => ("Interface Operational Status", "State"),
        "ifhighspeed" => ("Interface Speed", "Megabits / Second"),
        "ifinoctets" => ("Interface Traffic (Inbound)", octets),
        "ifoutoctets" => ("Interface Traffic (Outbound)", octets),
        "ifinucastpkts" => ("Interface Unicast Packets (Inbound)", "Packets / Second"),
        "ifoutucastpkts" => ("Interface Unicast Packets (Outbound)", "Packets / Second"),
        "ifinmulticastpkts" => ("Interface Multicast Packets (Inbound)", "Packets / Second"),
        "ifoutmulticastpkts" => ("Interface Multicast Packets (Outbound)", "Packets / Second"),
        "ifinbroadcastpkts" => ("Interface Broadcast Packets (Inbound)", "Packets / Second"),
        "ifoutbroadcastpkts" => ("Interface Broadcast Packets (Outbound)", "Packets / Second"),
        "ifindiscards" => ("Interface Discarded Packets (Inbound)", "Packets / Second"),
        "ifoutdiscards" => ("Interface Discarded Packets (Outbound)", "Packets / Second"),
        "ifinerrors" => ("Interface Errors (Inbound)", "Packets / Second"),
        "ifouterrors" => ("Interface Errors (Outbound)", "Packets / Second"),
        _ => return None,
    })
}

/// A configured column: its own naming, else IF-MIB's, else its key.
fn column(column: &Column, bits: bool) -> Translation {
    let oid = dotted(&column.oid);
    let known = if_mib_english(&column.key, bits).map(|named| (named, None)).or_else(|| {
        let (name, index) = if_mib_name(&oid)?;
        Some((if_mib_english(name, bits)?, index))
    });
    let (name, units) = match known {
        Some(((name, _), Some(index))) => (format!("{name}, index {index}"), known.map(|k| k.0 .1)),
        Some(((name, units), None)) => (name.to_owned(), Some(units)),
        None => (readable(&column.key), None),
    };
    Translation::datapoint(
        column.key.clone(),
        column.naming.description.clone().unwrap_or(name),
        column
            .naming
            .units
            .clone()
            .or(units.map(str::to_owned))
            .unwrap_or_else(|| "Value".to_owned()),
    )
}

fn metadata(key: &str, name: &str) -> Translation {
    Translation::metadata(key, name, LABEL_UNITS)
}

pub fn translations(settings: &SnmpSettings, language: Language) -> Vec<Translation> {
    let Language::English = language;
    let mut names = Vec::new();
    let Some(target) = settings.targets.first() else {
        return names;
    };
    // Every target of a poller reads the same things.
    for read in target.reads.iter() {
        match read {
            Read::Get(columns) => {
                names.extend(columns.iter().map(|c| column(c, false)));
            }
            Read::Walk(walked) => {
                names.push(column(walked, false));
                names.push(metadata(OID_METADATA_KEY, "SNMP OID"));
            }
            Read::Table(table) => {
                names.extend(table.columns.iter().map(|c| column(c, false)));
                names.push(metadata(INDEX_METADATA_KEY, &format!("{} Row Index", table.name)));
                for label in &table.labels {
                    let name = match if_mib_english(&label.key, false) {
                        Some((name, _)) => name.to_owned(),
                        None => readable(&label.key),
                    };
                    names.push(metadata(&label.key, &name));
                }
            }
            Read::PythonWalk {
                address,
                oid,
                multiplier,
            } => {
                let oid = dotted(oid);
                let (name, units) = match if_mib_name(&oid)
                    .and_then(|(name, _)| if_mib_english(name, *multiplier == 8.0))
                {
                    Some((name, units)) => (name.to_owned(), units),
                    None => (format!("SNMP {oid}"), "Value"),
                };
                names.push(Translation::datapoint(address.clone(), name, units));
                names.push(metadata(OID_METADATA_KEY, "SNMP OID"));
            }
            Read::PythonIfMib => {
                for (walk, _, times_eight, posted) in PYTHON_WALKS {
                    let Some((name, units)) = if_mib_english(walk, times_eight) else {
                        continue;
                    };
                    let key = walk.to_ascii_lowercase();
                    if posted {
                        names.push(Translation::datapoint(key, name, units));
                    } else if PRESET_LABELS.iter().any(|l| l.0.eq_ignore_ascii_case(walk)) {
                        // Posted as metadata of each value.
                        names.push(Translation::metadata(key, name, units));
                    }
                }
                names.push(metadata(OID_METADATA_KEY, "SNMP OID"));
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_if_mib_object_the_poller_reads_has_a_name() {
        for (name, _) in if_mib_oids() {
            assert!(if_mib_english(name, false).is_some(), "{name}");
        }
    }

    #[test]
    fn oids_and_their_instances_are_named_by_if_mib() {
        assert_eq!(if_mib_name(".1.3.6.1.2.1.2.2.1.10"), Some(("ifInOctets", None)));
        assert_eq!(
            if_mib_name(".1.3.6.1.2.1.2.2.1.10.3"),
            Some(("ifInOctets", Some("3")))
        );
        assert_eq!(if_mib_name(".1.3.6.1.2.1.2.2.1.100"), None);
        assert_eq!(
            if_mib_english("ifHCOutOctets", true),
            Some(("Interface Traffic (Outbound)", "Bits / Second"))
        );
    }
}
