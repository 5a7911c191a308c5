//! The datapoints document: fully described datapoints from a script.
//!
//! ```json
//! {"targets": [{"target": "SITE_A", "datapoints": [
//!   {"key": "ABC", "value": 123.456, "data_type": 101, "timestamp": 1600000000001,
//!    "metadata": [["Department Name", "The Palisadoes Foundation", false]]}]}]}
//! ```
//!
//! The document's shape must be right or the payload is rejected; a single
//! datapoint or metadata item that is wrong is skipped and reported.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::json_stream::{Discard, Node, Selection, Step};
use super::{FormatError, Parsed, Payload, Skipped};
use crate::model::{python, DataPoint, DataType, Metadata, TargetData, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    targets: Vec<Target>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    target: Option<String>,
    datapoints: Vec<Item>,
}

/// A datapoint as written, already converted while its fields were still
/// borrowed from the payload: no `serde_json::Value` per field and no
/// copies of its texts, or why it is skipped.
enum Item {
    Read(Read),
    Skipped(String),
}

/// A datapoint read, and what its metadata left out.
struct Read {
    datapoint: DataPoint,
    /// No timestamp was given: the time the payload was read is used.
    read_time: bool,
    /// Metadata items skipped: where below the datapoint, and why.
    skipped: Vec<(String, String)>,
}

/// The fields of a datapoint object; a repeated field keeps its last
/// value, as a JSON object read into a map would.
#[derive(Default)]
struct Fields<'de> {
    key: Option<Node<'de>>,
    value: Option<Node<'de>>,
    data_type: Option<Node<'de>>,
    timestamp: Option<Node<'de>>,
    metadata: Option<Node<'de>>,
    /// The first field that is none of those, in document order.
    unknown: Option<String>,
}

/// A field's value: scalars kept, a list or object only as its kind.
static FIELD: LazyLock<Selection> = LazyLock::new(Selection::default);
/// The metadata: a list of lists or an object, kept two levels deep.
static METADATA: LazyLock<Selection> = LazyLock::new(|| {
    let mut selection = Selection::default();
    selection.insert(&[Step::Any, Step::Any]);
    selection
});

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

const NOT_AN_OBJECT: &str = "expected an object with key and value";

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a datapoint")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut fields = Fields::default();
        while let Some(name) = map.next_key::<FieldName>()? {
            let (slot, selection) = match name {
                FieldName::Key => (&mut fields.key, &*FIELD),
                FieldName::Value => (&mut fields.value, &*FIELD),
                FieldName::DataType => (&mut fields.data_type, &*FIELD),
                FieldName::Timestamp => (&mut fields.timestamp, &*FIELD),
                FieldName::Metadata => (&mut fields.metadata, &*METADATA),
                FieldName::Other(name) => {
                    fields.unknown.get_or_insert(name);
                    map.next_value::<Discard>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value_seed(selection.seed())?);
        }
        Ok(match read(fields) {
            Ok(read) => Item::Read(read),
            Err(reason) => Item::Skipped(reason),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        while seq.next_element::<Discard>()?.is_some() {}
        Ok(Item::Skipped(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item, E> {
        Ok(Item::Skipped(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item, E> {
        Ok(Item::Skipped(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item, E> {
        Ok(Item::Skipped(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item, E> {
        Ok(Item::Skipped(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Item, E> {
        Ok(Item::Skipped(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
        Ok(Item::Skipped(NOT_AN_OBJECT.to_owned()))
    }
}

/// A datapoint field's name, allocated only when it is not one we know.
enum FieldName {
    Key,
    Value,
    DataType,
    Timestamp,
    Metadata,
    Other(String),
}

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = FieldName;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<FieldName, E> {
                Ok(match name {
                    "key" => FieldName::Key,
                    "value" => FieldName::Value,
                    "data_type" => FieldName::DataType,
                    "timestamp" => FieldName::Timestamp,
                    "metadata" => FieldName::Metadata,
                    other => FieldName::Other(other.to_owned()),
                })
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

const FORMAT: &str = "datapoints";

pub fn parse(payload: &Payload<'_>) -> Result<Parsed, FormatError> {
    let document: Document = serde_json::from_slice(payload.bytes).map_err(|err| FormatError {
        format: FORMAT,
        location: if err.line() == 0 {
            "payload".to_owned()
        } else {
            format!("line {} column {}", err.line(), err.column())
        },
        reason: strip_position(&err.to_string()),
    })?;
    let mut parsed = Parsed::default();
    for (t, target) in document.targets.into_iter().enumerate() {
        let mut data = TargetData::new(
            target
                .target
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| payload.default_target.to_owned()),
        );
        data.datapoints.reserve(target.datapoints.len());
        for (d, item) in target.datapoints.into_iter().enumerate() {
            // Only a skipped item needs its location spelled out.
            let pointer = || format!("/targets/{t}/datapoints/{d}");
            match item {
                Item::Read(read) => {
                    for (below, reason) in read.skipped {
                        parsed.skipped.push(Skipped {
                            location: format!("{}{below}", pointer()),
                            reason,
                        });
                    }
                    let mut datapoint = read.datapoint;
                    if read.read_time {
                        datapoint.timestamp_ms = payload.read_at_ms;
                    }
                    data.datapoints.push(datapoint);
                }
                Item::Skipped(reason) => parsed.skipped.push(Skipped {
                    location: pointer(),
                    reason,
                }),
            }
        }
        parsed.targets.push(data);
    }
    Ok(parsed)
}

/// Text the datapoint keeps: borrowed from the payload until now.
fn owned(text: Cow<'_, str>) -> String {
    text.into_owned()
}

fn read(fields: Fields<'_>) -> Result<Read, String> {
    if let Some(unknown) = &fields.unknown {
        return Err(format!(
            "unknown field `{unknown}`: expected key, value, data_type, timestamp, metadata"
        ));
    }
    let key = match fields.key {
        Some(Node::String(key)) => owned(key),
        Some(Node::Number(n)) => python::number_to_string(&n),
        Some(_) => return Err("key must be text".to_owned()),
        None => return Err("missing field `key`".to_owned()),
    };
    let value = match fields.value {
        Some(Node::Number(n)) => Value::from(&n),
        Some(Node::String(text)) => Value::Text(owned(text)),
        Some(other) => {
            return Err(format!(
                "value of {key:?} must be a number or text, found {}",
                other.kind()
            ))
        }
        None => return Err(format!("missing field `value` for {key:?}")),
    };
    let data_type = match &fields.data_type {
        None | Some(Node::Null) => DataType::Int,
        Some(Node::Number(n)) => n.as_i64().and_then(DataType::from_code).ok_or_else(|| {
            format!("unknown data_type {n} for {key:?}: expected 99, 101, 64, 32 or 2")
        })?,
        Some(Node::String(name)) => name.parse().map_err(|err| format!("{err} (for {key:?})"))?,
        Some(other) => {
            return Err(format!(
                "data_type of {key:?} must be a code or a name, found {}",
                other.kind()
            ))
        }
    };
    let (timestamp_ms, read_time) = match &fields.timestamp {
        None | Some(Node::Null) => (0, true),
        Some(Node::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(ms), _) => (ms, false),
            (None, Some(ms)) if ms >= 0.0 && ms.is_finite() => (ms as u64, false),
            _ => {
                return Err(format!(
                    "timestamp of {key:?} must be milliseconds since the epoch"
                ))
            }
        },
        Some(_) => {
            return Err(format!(
                "timestamp of {key:?} must be milliseconds since the epoch"
            ))
        }
    };
    let mut dp = DataPoint::new(key, value, data_type, timestamp_ms);
    let mut skipped = Vec::new();
    match fields.metadata {
        None | Some(Node::Null) => {}
        Some(Node::Array(items)) => {
            dp.metadata.reserve_exact(items.len());
            for (m, item) in items.into_iter().enumerate() {
                match metadata_item(item) {
                    Ok(Some(meta)) => dp.metadata.push(meta),
                    Ok(None) => {}
                    Err(reason) => skipped.push((
                        format!("/metadata/{m}"),
                        format!("metadata ignored: {reason}"),
                    )),
                }
            }
        }
        // Members in document order, as serde_json's ordered map (its
        // `preserve_order` feature, which this crate enables) keeps them.
        Some(Node::Object(items)) => {
            dp.metadata.reserve_exact(items.len());
            for (k, v) in items {
                match metadata_value(v) {
                    Ok(Some(text)) => dp.metadata.push(Metadata::new(owned(k), text)),
                    Ok(None) => {}
                    Err(reason) => skipped.push((
                        format!("/metadata/{}", escape_pointer(&k)),
                        format!("metadata ignored: {reason}"),
                    )),
                }
            }
        }
        Some(other) => skipped.push((
            "/metadata".to_owned(),
            format!(
                "metadata ignored: expected a list of [key, value] or an object, found {}",
                other.kind()
            ),
        )),
    }
    Ok(Read {
        datapoint: dp,
        read_time,
        skipped,
    })
}

fn metadata_item(item: Node<'_>) -> Result<Option<Metadata>, String> {
    let Node::Array(parts) = item else {
        return Err(format!(
            "expected [key, value] or [key, value, update_checksum], found {}",
            item.kind()
        ));
    };
    let count = parts.len();
    let mut parts = parts.into_iter();
    let (key, value, update_checksum) = match (parts.next(), parts.next(), parts.next()) {
        (Some(key), Some(value), None) => (key, value, true),
        (Some(key), Some(value), Some(Node::Bool(update))) if count == 3 => (key, value, update),
        (Some(_), Some(_), Some(other)) if count == 3 => {
            return Err(format!(
                "update_checksum must be true or false, found {}",
                other.kind()
            ))
        }
        _ => return Err(format!("expected 2 or 3 items, found {count}")),
    };
    let key = match key {
        Node::String(key) => owned(key),
        Node::Number(n) => python::number_to_string(&n),
        other => return Err(format!("key must be text, found {}", other.kind())),
    };
    Ok(metadata_value(value)?.map(|text| Metadata {
        key: key.into(),
        value: text.into(),
        update_checksum,
    }))
}

/// Metadata values are text; numbers are written as Python's `str()` would.
fn metadata_value(value: Node<'_>) -> Result<Option<String>, String> {
    match value {
        Node::String(text) => Ok(Some(owned(text))),
        Node::Number(n) => Ok(Some(python::number_to_string(&n))),
        other => Err(format!(
            "value must be text or a number, found {}",
            other.kind()
        )),
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// serde_json appends " at line L column C"; the position is reported in
/// the location instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Parsed, FormatError> {
        parse(&Payload {
            bytes: text.as_bytes(),
            default_target: "this-host",
            read_at_ms: 42,
            exit_status: None,
        })
    }

    #[test]
    fn reads_targets_types_timestamps_and_metadata() {
        let parsed = parse_str(
            r#"{"targets": [
                {"target": "SITE_A", "datapoints": [
                    {"key": "ABC", "value": 123.456, "data_type": 101, "timestamp": 1600000000001,
                     "metadata": [["Department Name", "Palisadoes", false], ["Year", 2020]]}]},
                {"datapoints": [{"key": "n", "value": "7", "data_type": "counter",
                                 "metadata": {"z": 1.0, "a": "x"}}]}]}"#,
        )
        .unwrap();
        assert!(parsed.skipped.is_empty());
        let first = &parsed.targets[0];
        assert_eq!(first.target, "SITE_A");
        assert_eq!(
            first.datapoints[0],
            DataPoint {
                key: "ABC".into(),
                value: Value::Float(123.456),
                data_type: DataType::Float,
                timestamp_ms: 1_600_000_000_001,
                metadata: vec![
                    Metadata::without_checksum("Department Name", "Palisadoes"),
                    Metadata::new("Year", "2020"),
                ],
            }
        );
        let second = &parsed.targets[1];
        assert_eq!(second.target, "this-host");
        assert_eq!(second.datapoints[0].timestamp_ms, 42);
        assert_eq!(second.datapoints[0].data_type, DataType::Counter);
        assert_eq!(
            second.datapoints[0].metadata,
            [Metadata::new("z", "1.0"), Metadata::new("a", "x")],
            "object metadata keeps document order and Python number text"
        );
    }

    #[test]
    fn a_bad_datapoint_is_skipped_with_its_pointer_and_the_rest_kept() {
        let parsed = parse_str(
            r#"{"targets": [{"target": "t", "datapoints": [
                {"key": "a", "value": true},
                {"key": "b", "value": 1, "data_type": 7},
                {"key": "c", "value": 2, "metadata": [["k"]]}]}]}"#,
        )
        .unwrap();
        assert_eq!(parsed.targets[0].datapoints.len(), 1);
        let skipped: Vec<String> = parsed.skipped.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            skipped,
            [
                "/targets/0/datapoints/0: value of \"a\" must be a number or text, found a boolean",
                "/targets/0/datapoints/1: unknown data_type 7 for \"b\": expected 99, 101, 64, 32 or 2",
                "/targets/0/datapoints/2/metadata/0: metadata ignored: expected 2 or 3 items, found 1",
            ]
        );
    }

    #[test]
    fn fields_read_like_a_json_object_last_repeat_first_unknown_and_escaped_names() {
        let parsed = parse_str(
            r#"{"targets": [{"target": "t", "datapoints": [
                {"key": "a", "value": 1, "value": 2},
                {"k\u0065y": "b", "value": 3},
                {"key": "c", "zeta": 1, "value": 4, "alpha": {"x": [1]}},
                null, [1, {"key": "d"}], 5, "e", true]}]}"#,
        )
        .unwrap();
        let kept: Vec<(&str, &Value)> = parsed.targets[0]
            .datapoints
            .iter()
            .map(|d| (d.key.as_str(), &d.value))
            .collect();
        assert_eq!(kept, [("a", &Value::Int(2)), ("b", &Value::Int(3))]);
        let skipped: Vec<String> = parsed.skipped.iter().map(|s| s.to_string()).collect();
        let not_an_object =
            |d: usize| format!("/targets/0/datapoints/{d}: expected an object with key and value");
        assert_eq!(
            skipped,
            [
                "/targets/0/datapoints/2: unknown field `zeta`: expected key, value, data_type, timestamp, metadata".to_owned(),
                not_an_object(3),
                not_an_object(4),
                not_an_object(5),
                not_an_object(6),
                not_an_object(7),
            ]
        );
    }

    #[test]
    fn malformed_documents_fail_with_line_and_column() {
        let err = parse_str("{\"targets\": [\n  {\"datapoints\": [}\n]}").unwrap_err();
        assert_eq!(err.location, "line 2 column 19");
        assert_eq!(
            err.to_string(),
            "datapoints payload: line 2 column 19: expected value"
        );
        let err = parse_str("{\"target\": []}").unwrap_err();
        assert!(err.reason.starts_with("unknown field `target`"), "{err}");
        assert_eq!(parse_str("").unwrap_err().location, "line 1 column 0");
    }
}
