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
//!
//! The document is read in one pass straight into the readings: no list of
//! datapoints or of metadata items in between, and no copy of a key or
//! metadata text. Those are a few bytes each, five a datapoint in a
//! typical document, so each is a slice of one shared copy of the payload
//! ([`Text::Slice`]), unless it had escapes. The shape is checked as a
//! derived `Deserialize` of `{targets: [{target, datapoints}]}` would
//! check it, with the same messages (a struct may also be written as a
//! list of its fields, and the field names must be known).

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::json_stream::{Discard, Node, ObjectOf, Selection, Step};
use super::{FormatError, Parsed, Payload, Skipped};
use crate::model::{python, DataPoint, DataType, Metadata, TargetData, Text, Value};

const FORMAT: &str = "datapoints";

pub fn parse(payload: &Payload<'_>) -> Result<Parsed, FormatError> {
    // A payload that is not UTF-8 fails below where serde_json finds the
    // fault, as any other; its texts up to there are owned.
    let whole = std::str::from_utf8(payload.bytes)
        .ok()
        .map(|text| Arc::new(text.to_owned()));
    let bytes = whole
        .as_ref()
        .map_or(payload.bytes, |whole| whole.as_bytes());
    parse_in(&Payload { bytes, ..*payload }, whole.as_ref())
}

/// [`parse`] of a payload the caller hands over: the texts are cut from
/// it, not from a copy.
pub fn parse_owned(
    output: Vec<u8>,
    default_target: &str,
    read_at_ms: u64,
) -> Result<Parsed, FormatError> {
    let (whole, bytes) = match String::from_utf8(output) {
        Ok(text) => (Some(Arc::new(text)), Vec::new()),
        Err(not_utf8) => (None, not_utf8.into_bytes()),
    };
    let payload = Payload {
        bytes: whole
            .as_ref()
            .map_or(bytes.as_slice(), |whole| whole.as_bytes()),
        default_target,
        read_at_ms,
        exit_status: None,
    };
    parse_in(&payload, whole.as_ref())
}

/// [`parse`], the texts cut from `whole`, which holds `payload.bytes`,
/// when the payload is UTF-8.
fn parse_in(payload: &Payload<'_>, whole: Option<&Arc<String>>) -> Result<Parsed, FormatError> {
    let bytes = payload.bytes;
    let mut reading = Reading {
        whole,
        read_at_ms: payload.read_at_ms,
        default_target: payload.default_target,
        parsed: Parsed::default(),
        metadata: Vec::new(),
    };
    // A payload known to be UTF-8 is read as text, so serde_json does not
    // check each string of it again.
    match whole {
        Some(whole) => read_document(serde_json::Deserializer::from_str(whole), &mut reading),
        None => read_document(serde_json::Deserializer::from_slice(bytes), &mut reading),
    }
    .map_err(|err| FormatError {
        format: FORMAT,
        location: if err.line() == 0 {
            "payload".to_owned()
        } else {
            format!("line {} column {}", err.line(), err.column())
        },
        reason: strip_position(&err.to_string()),
    })?;
    Ok(reading.parsed)
}

/// What `serde_json::from_slice` (or `from_str`) does, with a seed.
fn read_document<'de, R: serde_json::de::Read<'de>>(
    mut deserializer: serde_json::Deserializer<R>,
    reading: &mut Reading<'_>,
) -> serde_json::Result<()> {
    DocumentSeed(reading).deserialize(&mut deserializer)?;
    deserializer.end()
}

/// What reading the document needs, and what it has read so far.
struct Reading<'p> {
    /// The payload, shared by the texts cut from it; `None` if it is not
    /// UTF-8 (and so will fail).
    whole: Option<&'p Arc<String>>,
    read_at_ms: u64,
    default_target: &'p str,
    parsed: Parsed,
    /// The metadata of the datapoint being read, until it is known to be
    /// kept; reused from one datapoint to the next.
    metadata: Vec<Metadata>,
}

/// The document: `{"targets": [...]}`.
struct DocumentSeed<'r, 'p>(&'r mut Reading<'p>);

const DOCUMENT_FIELDS: &[&str] = &["targets"];

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_struct("Document", DOCUMENT_FIELDS, self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct Document")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match seq.next_element_seed(TargetsSeed(self.0))? {
            Some(()) => Ok(()),
            None => Err(de::Error::invalid_length(
                0,
                &"struct Document with 1 element",
            )),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut targets = false;
        while map.next_key_seed(FieldOf(DOCUMENT_FIELDS))?.is_some() {
            if targets {
                return Err(de::Error::duplicate_field("targets"));
            }
            map.next_value_seed(TargetsSeed(&mut *self.0))?;
            targets = true;
        }
        if !targets {
            return Err(de::Error::missing_field("targets"));
        }
        Ok(())
    }
}

/// A field name of a struct, as a derived `Deserialize` reads it: its
/// position among `fields`, or the error for a name not among them.
struct FieldOf(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldOf {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldOf {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|field| *field == name)
            .ok_or_else(|| E::unknown_field(name, self.0))
    }
}

/// The list of targets.
struct TargetsSeed<'r, 'p>(&'r mut Reading<'p>);

impl<'de> DeserializeSeed<'de> for TargetsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TargetsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(TargetSeed {
                reading: &mut *self.0,
                index,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }
}

/// One target: `{"target": ..., "datapoints": [...]}`.
struct TargetSeed<'r, 'p> {
    reading: &'r mut Reading<'p>,
    index: usize,
}

const TARGET_FIELDS: &[&str] = &["target", "datapoints"];
const TARGET_AS_LIST: &str = "struct Target with 2 elements";

impl<'de> DeserializeSeed<'de> for TargetSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_struct("Target", TARGET_FIELDS, self)
    }
}

impl<'p> TargetSeed<'_, 'p> {
    fn datapoints<'a>(&'a mut self, data: &'a mut TargetData) -> DatapointsSeed<'a, 'p> {
        DatapointsSeed {
            reading: &mut *self.reading,
            target: self.index,
            data,
        }
    }

    fn finish(self, name: Option<String>, mut data: TargetData) {
        data.target = name
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| self.reading.default_target.to_owned());
        self.reading.parsed.targets.push(data);
    }
}

impl<'de> Visitor<'de> for TargetSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct Target")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let Some(name) = seq.next_element::<Option<String>>()? else {
            return Err(de::Error::invalid_length(0, &TARGET_AS_LIST));
        };
        let mut data = TargetData::default();
        if seq.next_element_seed(self.datapoints(&mut data))?.is_none() {
            return Err(de::Error::invalid_length(1, &TARGET_AS_LIST));
        }
        self.finish(name, data);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut name: Option<Option<String>> = None;
        let mut data = TargetData::default();
        let mut read = false;
        while let Some(field) = map.next_key_seed(FieldOf(TARGET_FIELDS))? {
            if field == 0 {
                if name.is_some() {
                    return Err(de::Error::duplicate_field("target"));
                }
                name = Some(map.next_value()?);
            } else {
                if read {
                    return Err(de::Error::duplicate_field("datapoints"));
                }
                map.next_value_seed(self.datapoints(&mut data))?;
                read = true;
            }
        }
        if !read {
            return Err(de::Error::missing_field("datapoints"));
        }
        self.finish(name.flatten(), data);
        Ok(())
    }
}

/// A target's datapoints, each added to its readings or skipped as it is
/// read.
struct DatapointsSeed<'a, 'p> {
    reading: &'a mut Reading<'p>,
    target: usize,
    data: &'a mut TargetData,
}

impl<'de> DeserializeSeed<'de> for DatapointsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for DatapointsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (t, reading) = (self.target, self.reading);
        let mut d = 0;
        while let Some(item) = seq.next_element_seed(ItemSeed(&mut *reading))? {
            // Only a skipped item needs its location spelled out.
            match item {
                Ok((datapoint, skipped)) => {
                    for (below, reason) in skipped {
                        reading.parsed.skipped.push(Skipped {
                            location: format!("/targets/{t}/datapoints/{d}{below}"),
                            reason,
                        });
                    }
                    self.data.datapoints.push(datapoint);
                }
                Err(reason) => reading.parsed.skipped.push(Skipped {
                    location: format!("/targets/{t}/datapoints/{d}"),
                    reason,
                }),
            }
            d += 1;
        }
        Ok(())
    }
}

/// A datapoint read, with the metadata items skipped (where below the
/// datapoint, and why); or why the datapoint is skipped.
type Item = Result<(DataPoint, Vec<(String, String)>), String>;

/// The fields of a datapoint object; a repeated field keeps its last
/// value, as a JSON object read into a map would.
#[derive(Default)]
struct Fields<'de> {
    key: Option<Node<'de>>,
    value: Option<Node<'de>>,
    data_type: Option<Node<'de>>,
    timestamp: Option<Node<'de>>,
    metadata: Option<Meta<'de>>,
    /// The first field that is none of those, in document order.
    unknown: Option<String>,
}

/// A datapoint's metadata as read: a list's items go straight to
/// [`Reading::metadata`]; an object (rare) is kept two levels deep.
enum Meta<'de> {
    Null,
    /// The items skipped: where below the datapoint, and why.
    List(Vec<(String, String)>),
    Object(Vec<(Cow<'de, str>, Node<'de>)>),
    /// Anything else, by its kind.
    Other(&'static str),
}

/// A field's value: scalars kept, a list or object only as its kind.
static FIELD: LazyLock<Selection> = LazyLock::new(Selection::default);
/// Metadata as an object: its members kept one level further.
static METADATA: LazyLock<Selection> = LazyLock::new(|| {
    let mut selection = Selection::default();
    selection.insert(&[Step::Any, Step::Any]);
    selection
});

/// One datapoint, converted while its fields are still borrowed from the
/// payload.
struct ItemSeed<'r, 'p>(&'r mut Reading<'p>);

impl<'de> DeserializeSeed<'de> for ItemSeed<'_, '_> {
    type Value = Item;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Item, D::Error> {
        deserializer.deserialize_any(self)
    }
}

const NOT_AN_OBJECT: &str = "expected an object with key and value";

impl<'de> Visitor<'de> for ItemSeed<'_, '_> {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a datapoint")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let reading = self.0;
        let mut fields = Fields::default();
        while let Some(name) = map.next_key::<FieldName>()? {
            let slot = match name {
                FieldName::Key => &mut fields.key,
                FieldName::Value => &mut fields.value,
                FieldName::DataType => &mut fields.data_type,
                FieldName::Timestamp => &mut fields.timestamp,
                FieldName::Metadata => {
                    fields.metadata = Some(map.next_value_seed(MetadataSeed {
                        whole: reading.whole,
                        items: &mut reading.metadata,
                    })?);
                    continue;
                }
                FieldName::Other(name) => {
                    fields.unknown.get_or_insert(name);
                    map.next_value::<Discard>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value_seed(FIELD.seed())?);
        }
        Ok(read(fields, reading))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        while seq.next_element::<Discard>()?.is_some() {}
        Ok(Err(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item, E> {
        Ok(Err(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item, E> {
        Ok(Err(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item, E> {
        Ok(Err(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item, E> {
        Ok(Err(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Item, E> {
        Ok(Err(NOT_AN_OBJECT.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
        Ok(Err(NOT_AN_OBJECT.to_owned()))
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

/// A datapoint's `metadata`: a list's items are converted as they are read.
struct MetadataSeed<'a, 'p> {
    whole: Option<&'p Arc<String>>,
    items: &'a mut Vec<Metadata>,
}

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_, '_> {
    type Value = Meta<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Meta<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed<'_, '_> {
    type Value = Meta<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("metadata")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Meta<'de>, A::Error> {
        // A repeated `metadata` field keeps only its last value.
        self.items.clear();
        let mut skipped = Vec::new();
        let mut m = 0;
        while let Some(item) = seq.next_element_seed(MetadataItemSeed(self.whole))? {
            match item {
                Ok(item) => self.items.push(item),
                Err(reason) => skipped.push((
                    format!("/metadata/{m}"),
                    format!("metadata ignored: {reason}"),
                )),
            }
            m += 1;
        }
        Ok(Meta::List(skipped))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Meta<'de>, A::Error> {
        ObjectOf(&METADATA).visit_map(map).map(Meta::Object)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Meta<'de>, E> {
        Ok(Meta::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Meta<'de>, E> {
        Ok(Meta::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Meta<'de>, E> {
        Ok(Meta::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Meta<'de>, E> {
        // As serde_json's own Value would hold it.
        Ok(if v.is_finite() {
            Meta::Other("a number")
        } else {
            Meta::Null
        })
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Meta<'de>, E> {
        Ok(Meta::Other("text"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Meta<'de>, E> {
        Ok(Meta::Null)
    }
}

/// One item of a metadata list: `[key, value]` or `[key, value,
/// update_checksum]`, or why it is skipped.
struct MetadataItemSeed<'p>(Option<&'p Arc<String>>);

impl<'de> DeserializeSeed<'de> for MetadataItemSeed<'_> {
    type Value = Result<Metadata, String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

const NOT_AN_ITEM: &str = "expected [key, value] or [key, value, update_checksum], found";

impl<'de> Visitor<'de> for MetadataItemSeed<'_> {
    type Value = Result<Metadata, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metadata item")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The first three parts as scalars or kinds; the rest only counted.
        let mut parts: [Option<Node<'de>>; 3] = [None, None, None];
        let mut count = 0;
        for part in &mut parts {
            *part = seq.next_element_seed(FIELD.seed())?;
            if part.is_none() {
                break;
            }
            count += 1;
        }
        if count == 3 {
            while seq.next_element::<Discard>()?.is_some() {
                count += 1;
            }
        }
        let [key, value, third] = parts;
        let (key, value, update_checksum) = match (key, value, third) {
            (Some(key), Some(value), None) => (key, value, true),
            (Some(key), Some(value), Some(Node::Bool(update))) if count == 3 => {
                (key, value, update)
            }
            (Some(_), Some(_), Some(other)) if count == 3 => {
                return Ok(Err(format!(
                    "update_checksum must be true or false, found {}",
                    other.kind()
                )))
            }
            _ => return Ok(Err(format!("expected 2 or 3 items, found {count}"))),
        };
        let key = match key {
            Node::String(key) => text(self.0, key),
            Node::Number(n) => Text::Owned(python::number_to_string(&n)),
            other => return Ok(Err(format!("key must be text, found {}", other.kind()))),
        };
        Ok(metadata_value(self.0, value).map(|value| Metadata {
            key,
            value,
            update_checksum,
        }))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_key::<Discard>()?.is_some() {
            map.next_value::<Discard>()?;
        }
        Ok(Err(format!("{NOT_AN_ITEM} an object")))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(format!("{NOT_AN_ITEM} a boolean")))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(format!("{NOT_AN_ITEM} a number")))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(format!("{NOT_AN_ITEM} a number")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        let kind = if v.is_finite() { "a number" } else { "null" };
        Ok(Err(format!("{NOT_AN_ITEM} {kind}")))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(format!("{NOT_AN_ITEM} text")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(format!("{NOT_AN_ITEM} null")))
    }
}

/// A text from the payload: a slice of the shared copy when it lies there
/// as it is (it had no escapes), owned otherwise.
fn text(whole: Option<&Arc<String>>, text: Cow<'_, str>) -> Text {
    match (whole, text) {
        (Some(whole), Cow::Borrowed(part)) if lies_in(whole, part) => Text::slice(whole, part),
        (_, text) => Text::Owned(text.into_owned()),
    }
}

fn lies_in(whole: &str, part: &str) -> bool {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    start <= whole.len() && part.len() <= whole.len() - start
}

fn read(fields: Fields<'_>, reading: &mut Reading<'_>) -> Item {
    let whole = reading.whole;
    if let Some(unknown) = &fields.unknown {
        return Err(format!(
            "unknown field `{unknown}`: expected key, value, data_type, timestamp, metadata"
        ));
    }
    let key = match fields.key {
        Some(Node::String(key)) => text(whole, key),
        Some(Node::Number(n)) => Text::Owned(python::number_to_string(&n)),
        Some(_) => return Err("key must be text".to_owned()),
        None => return Err("missing field `key`".to_owned()),
    };
    let value = match fields.value {
        Some(Node::Number(n)) => Value::from(&n),
        Some(Node::String(text)) => Value::Text(text.into_owned()),
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
    let timestamp_ms = match &fields.timestamp {
        // No timestamp: the time the payload was read.
        None | Some(Node::Null) => reading.read_at_ms,
        Some(Node::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(ms), _) => ms,
            (None, Some(ms)) if ms >= 0.0 && ms.is_finite() => ms as u64,
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
        None | Some(Meta::Null) => {}
        Some(Meta::List(items_skipped)) => {
            // Exactly as long as it needs to be.
            dp.metadata = reading.metadata.drain(..).collect();
            skipped = items_skipped;
        }
        // Members in document order, as serde_json's ordered map (its
        // `preserve_order` feature, which this crate enables) keeps them.
        Some(Meta::Object(items)) => {
            dp.metadata.reserve_exact(items.len());
            for (k, v) in items {
                match metadata_value(whole, v) {
                    Ok(value) => dp.metadata.push(Metadata::new(text(whole, k), value)),
                    Err(reason) => skipped.push((
                        format!("/metadata/{}", escape_pointer(&k)),
                        format!("metadata ignored: {reason}"),
                    )),
                }
            }
        }
        Some(Meta::Other(kind)) => skipped.push((
            "/metadata".to_owned(),
            format!("metadata ignored: expected a list of [key, value] or an object, found {kind}"),
        )),
    }
    Ok((dp, skipped))
}

/// Metadata values are text; numbers are written as Python's `str()` would.
fn metadata_value(whole: Option<&Arc<String>>, value: Node<'_>) -> Result<Text, String> {
    match value {
        Node::String(value) => Ok(text(whole, value)),
        Node::Number(n) => Ok(Text::Owned(python::number_to_string(&n))),
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
    fn texts_without_escapes_are_cut_from_one_copy_of_the_payload() {
        let parsed = parse_str(
            r#"{"targets": [{"datapoints": [
                {"key": "a", "value": "v", "metadata": [["site", "b\u00e9", false]]},
                {"k\u0065y": "k\u0065y", "value": 1, "metadata": {"m": "n"}}]}]}"#,
        )
        .unwrap();
        let [first, second] = &parsed.targets[0].datapoints[..] else {
            panic!("two datapoints: {parsed:?}");
        };
        assert!(matches!(first.key, Text::Slice(..)), "{first:?}");
        assert!(matches!(first.metadata[0].key, Text::Slice(..)));
        assert_eq!(first.metadata[0].value, "bé");
        assert!(matches!(first.metadata[0].value, Text::Owned(_)));
        assert_eq!(first.value, Value::Text("v".to_owned()));
        assert_eq!(second.key, "key");
        assert!(matches!(second.key, Text::Owned(_)));
        assert!(matches!(second.metadata[0].value, Text::Slice(..)));
        // Bytes that are not UTF-8 fail where serde_json finds them.
        let err = parse(&Payload {
            bytes: b"{\"targets\": [{\"datapoints\": [{\"key\": \"\xff\"}]}]}",
            default_target: "this-host",
            read_at_ms: 42,
            exit_status: None,
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "datapoints payload: line 1 column 39: invalid unicode code point"
        );
    }

    #[test]
    fn a_payload_handed_over_is_read_as_a_borrowed_one_and_its_texts_cut_from_it() {
        let document = r#"{"targets": [{"target": "t", "datapoints": [
            {"key": "a", "value": 1.5, "data_type": 101, "metadata": [["site", "b\u00e9", false]]}]}]}"#;
        let output = document.as_bytes().to_vec();
        let buffer = output.as_ptr() as usize..output.as_ptr() as usize + output.len();
        let parsed = parse_owned(output, "this-host", 42).unwrap();
        assert_eq!(parsed, parse_str(document).unwrap());
        let key = &parsed.targets[0].datapoints[0].key;
        assert!(matches!(key, Text::Slice(..)), "{key:?}");
        assert!(
            buffer.contains(&(key.as_str().as_ptr() as usize)),
            "the key is a slice of the output handed over, not of a copy"
        );
        let not_utf8 = b"{\"targets\": [{\"datapoints\": [{\"key\": \"\xff\"}]}]}";
        assert_eq!(
            parse_owned(not_utf8.to_vec(), "this-host", 42).unwrap_err(),
            parse(&Payload {
                bytes: not_utf8,
                default_target: "this-host",
                read_at_ms: 42,
                exit_status: None,
            })
            .unwrap_err()
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
