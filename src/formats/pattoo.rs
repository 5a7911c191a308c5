//! The `pattoo` format: a complete pattoo post body fetched from a passive
//! agent, relayed (the Python library's hub-and-spoke `PassiveAgent`).
//!
//! The body is validated (the four top-level keys, the pair table, every
//! datapoint's pair ids) and each datapoint becomes a [`DataPoint`] again:
//! its key, data type, value and timestamp as the passive agent read them,
//! its `pattoo_agent_polled_target` as its target, its user metadata in the
//! order it was attached. The model then normalises it under the relaying
//! agent's identity, as for any other poller: the relaying agent's id,
//! hostname, program and polling interval go on it and its checksum is
//! computed afresh. (The Python `PassiveAgent` re-posts the body unchanged
//! under its own agent id; recomputing is what lets relayed datapoints go
//! through the same normalisation, deduplication and cache as the rest.)
//!
//! The passive agent's own `pattoo_agent_hostname`, `pattoo_agent_program`
//! and `pattoo_agent_id` cannot be kept under those names (`pattoo` keys
//! belong to the posting agent), so they are kept as the plain metadata
//! `relayed_agent_hostname`, `relayed_agent_program` and `relayed_agent_id`,
//! outside the checksum: where the data came through is shown on the
//! server, but a passive agent that is reinstalled (a new id) or renamed
//! keeps its charts. Its polling interval and checksum are dropped; the
//! relaying agent's replace them.

use std::borrow::Cow;
use std::sync::LazyLock;

use rustc_hash::FxHashMap;
use serde::de::{DeserializeSeed, Deserializer};
use serde::Deserialize;

use super::json_stream::{Node, ObjectOf, Selection, Step};
use super::{normal_key, FormatError, Parsed, Payload, Skipped};
use crate::model::{python, DataPoint, DataType, Metadata, TargetData, Value};

const FORMAT: &str = "pattoo";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Validated for shape; the relaying agent's own values replace them.
struct Body<'a> {
    pattoo_agent_timestamp: u64,
    pattoo_agent_id: String,
    pattoo_agent_polling_interval: u64,
    #[serde(borrow)]
    pattoo_datapoints: Datapoints<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Datapoints<'a> {
    #[serde(borrow)]
    key_value_pairs: Pairs<'a>,
    datapoint_pairs: Vec<Vec<u64>>,
}

/// The pair table as written, its texts borrowed from the payload: an
/// object of `id: [key, value]`, read as a `serde_json::Map` would be
/// (document order; a repeated id keeps its first place and last value).
struct Pairs<'de>(Vec<(Cow<'de, str>, Node<'de>)>);

/// Every member and each member's items; anything deeper only as its kind.
static PAIRS: LazyLock<Selection> = LazyLock::new(|| {
    let mut selection = Selection::default();
    selection.insert(&[Step::Any, Step::Any]);
    selection
});

impl<'de: 'a, 'a> Deserialize<'de> for Pairs<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ObjectOf(&PAIRS).deserialize(deserializer).map(Pairs)
    }
}

/// Metadata of the passive agent kept under a name the relaying agent may
/// post.
const RELAYED: [(&str, &str); 3] = [
    ("pattoo_agent_hostname", "relayed_agent_hostname"),
    ("pattoo_agent_program", "relayed_agent_program"),
    ("pattoo_agent_id", "relayed_agent_id"),
];

pub fn parse(payload: &Payload<'_>) -> Result<Parsed, FormatError> {
    let body: Body<'_> =
        serde_json::from_slice(payload.bytes).map_err(|err| super::json_error(FORMAT, &err))?;
    let table = &body.pattoo_datapoints.key_value_pairs.0;
    let mut pairs: FxHashMap<u64, (&str, &Node<'_>)> = FxHashMap::default();
    pairs.reserve(table.len());
    for (id, pair) in table {
        let location = || format!("/pattoo_datapoints/key_value_pairs/{}", escape(id));
        let Ok(number) = id.parse::<u64>() else {
            return Err(FormatError::new(
                FORMAT,
                location(),
                format!("expected a pair id (a whole number), found {id:?}"),
            ));
        };
        match pair {
            Node::Array(items) if items.len() == 2 => match &items[0] {
                Node::String(key) => {
                    pairs.insert(number, (key, &items[1]));
                }
                _ => {
                    return Err(FormatError::new(
                        FORMAT,
                        location(),
                        "expected the pair's key to be text",
                    ))
                }
            },
            _ => {
                return Err(FormatError::new(
                    FORMAT,
                    location(),
                    "expected a [key, value] pair",
                ))
            }
        }
    }
    let mut parsed = Parsed::default();
    // Target names are looked up borrowed; each is copied once.
    let mut targets: FxHashMap<Cow<'_, str>, usize> = FxHashMap::default();
    for (d, ids) in body.pattoo_datapoints.datapoint_pairs.iter().enumerate() {
        match datapoint(ids, &pairs, payload) {
            Ok((target, datapoint)) => {
                let index = match targets.get(&*target) {
                    Some(&index) => index,
                    None => {
                        parsed.targets.push(TargetData::new(&*target));
                        targets.insert(target, parsed.targets.len() - 1);
                        parsed.targets.len() - 1
                    }
                };
                parsed.targets[index].datapoints.push(datapoint);
            }
            Err(reason) => parsed.skipped.push(Skipped {
                location: format!("/pattoo_datapoints/datapoint_pairs/{d}"),
                reason,
            }),
        }
    }
    Ok(parsed)
}

/// A datapoint and the name of its target, borrowed from the pair table
/// (or the payload's default target).
fn datapoint<'a>(
    ids: &[u64],
    pairs: &FxHashMap<u64, (&'a str, &'a Node<'_>)>,
    payload: &Payload<'a>,
) -> Result<(Cow<'a, str>, DataPoint), String> {
    let mut key = None;
    let mut data_type = None;
    let mut value = None;
    let mut timestamp_ms = None;
    let mut target: Option<Cow<'a, str>> = None;
    let mut metadata = Vec::new();
    let mut relayed = Vec::new();
    for id in ids {
        let Some(&(name, item)) = pairs.get(id) else {
            return Err(format!("pair id {id} is not in key_value_pairs"));
        };
        match name {
            "pattoo_key" => key = Some(text(item).ok_or("pattoo_key must be text")?),
            "pattoo_data_type" => {
                let code = match item {
                    Node::Number(n) => n.as_i64(),
                    _ => None,
                }
                .ok_or("pattoo_data_type must be a code")?;
                data_type = Some(
                    DataType::from_code(code)
                        .ok_or_else(|| format!("unknown pattoo_data_type {code}"))?,
                );
            }
            "pattoo_value" => {
                value = Some(match item {
                    Node::Number(n) => Value::from(n),
                    Node::String(text) => Value::Text(text.to_string()),
                    _ => return Err("pattoo_value must be a number or text".to_owned()),
                })
            }
            "pattoo_timestamp" => {
                timestamp_ms = Some(
                    match item {
                        Node::Number(n) => n.as_u64(),
                        _ => None,
                    }
                    .ok_or("pattoo_timestamp must be milliseconds since the epoch")?,
                )
            }
            "pattoo_agent_polled_target" => {
                target = Some(match item {
                    Node::String(text) => Cow::Borrowed(&**text),
                    Node::Number(n) => Cow::Owned(python::number_to_string(n)),
                    _ => return Err("pattoo_agent_polled_target must be text".to_owned()),
                })
            }
            other => {
                if let Some((_, kept_as)) = RELAYED.iter().find(|(from, _)| *from == other) {
                    if let Some(text) = text(item) {
                        relayed.push(Metadata::without_checksum(*kept_as, text));
                    }
                } else if !mentions_pattoo(other) {
                    if let Some(text) = text(item) {
                        metadata.push(Metadata::new(other, text));
                    }
                }
            }
        }
    }
    let key = key.ok_or("no pattoo_key pair")?;
    let data_type = data_type.ok_or_else(|| format!("{key}: no pattoo_data_type pair"))?;
    let value = value.ok_or_else(|| format!("{key}: no pattoo_value pair"))?;
    let mut datapoint = DataPoint::new(
        key,
        value,
        data_type,
        timestamp_ms.unwrap_or(payload.read_at_ms),
    );
    metadata.extend(relayed);
    datapoint.metadata = metadata;
    let target = target
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(Cow::Borrowed(payload.default_target));
    Ok((target, datapoint))
}

/// Whether a pair's key, normalised as every key is, contains `pattoo`:
/// reserved for the posting agent's own items. Normal keys are not copied.
fn mentions_pattoo(key: &str) -> bool {
    normal_key(key).contains("pattoo")
}

/// Pair values as text, numbers as Python's `str()` writes them.
fn text(item: &Node<'_>) -> Option<String> {
    match item {
        Node::String(text) => Some(text.to_string()),
        Node::Number(n) => Some(python::number_to_string(n)),
        _ => None,
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::Value as Json;

    use super::*;
    use crate::model::{build, AgentContext};

    /// A body as a passive Python agent would serve it.
    const PASSIVE_BODY: &str = r#"{"pattoo_agent_timestamp": 1578071455335, "pattoo_agent_id": "a1",
        "pattoo_agent_polling_interval": 20000, "pattoo_datapoints": {
        "key_value_pairs": {"0": ["unit", "000"], "1": ["pattoo_agent_polling_interval", "20000"],
            "2": ["pattoo_agent_hostname", "spoke"], "3": ["pattoo_agent_id", "a1"],
            "4": ["pattoo_agent_polled_target", "10.0.0.5"], "5": ["pattoo_agent_program", "snmpd"],
            "6": ["pattoo_key", "ifInOctets"], "7": ["pattoo_data_type", 64], "8": ["pattoo_value", 1234],
            "9": ["pattoo_timestamp", 1578071455000], "10": ["pattoo_checksum", "abc"]},
        "datapoint_pairs": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}}"#;

    #[test]
    fn a_relayed_body_is_posted_again_under_the_relaying_agent() {
        let parsed = parse(&Payload {
            bytes: PASSIVE_BODY.as_bytes(),
            default_target: "hub",
            read_at_ms: 1,
            exit_status: None,
        })
        .unwrap();
        let agent = AgentContext {
            agent_id: "hub-id",
            agent_program: "pattoo_agentd_http",
            hostname: "hub-host",
            polling_interval_ms: 60_000,
        };
        let outcome = build(&agent, 2, &parsed.targets);
        assert!(outcome.dropped.is_empty(), "{:?}", outcome.dropped);
        let body: Json = serde_json::from_slice(&outcome.body.unwrap().json).unwrap();
        let pairs: Vec<(String, Json)> = body["pattoo_datapoints"]["key_value_pairs"]
            .as_object()
            .unwrap()
            .values()
            .map(|pair| (pair[0].as_str().unwrap().to_owned(), pair[1].clone()))
            .collect();
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {key}"))
        };
        assert_eq!(body["pattoo_agent_id"], "hub-id");
        assert_eq!(get("pattoo_agent_polled_target"), "10.0.0.5");
        assert_eq!(get("pattoo_agent_hostname"), "hub-host");
        assert_eq!(get("pattoo_agent_program"), "pattoo_agentd_http");
        assert_eq!(get("relayed_agent_hostname"), "spoke");
        assert_eq!(get("relayed_agent_program"), "snmpd");
        assert_eq!(get("unit"), "000");
        assert_eq!(get("pattoo_key"), "ifinoctets");
        assert_eq!(get("pattoo_value"), 1234);
        assert_eq!(get("pattoo_timestamp"), 1_578_071_455_000u64);
        assert_ne!(get("pattoo_checksum"), "abc", "computed afresh");
    }
}
