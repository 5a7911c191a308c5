//! The `json` format: values picked out of a JSON document by JSON pointer
//! (RFC 6901, `/quotes/ABC/price`), each mapped to a key, data type and
//! metadata.
//!
//! One segment of a pointer may be `*`, a wildcard over an array or object:
//! it yields one datapoint per element, and the element's index or key can
//! go into the datapoint's key (`{*}` in `key`) and into a metadata item
//! (`wildcard_metadata`). One of the two is required, or every element
//! would become the same datapoint.
//!
//! A document that is not JSON fails with its line and column. A pointer
//! that matches nothing, or a value that is not a number or text, is
//! skipped with its pointer and the other values are kept. Booleans read as
//! 1 and 0, so an API's `"up": true` can be charted.

use serde::Deserialize;
use serde_norway::Value;

use super::json_stream::{segments, Node, Selection, Step};
use super::{check_key, convert, FormatError, Parsed, Payload, Skipped};
use crate::model::{python, DataPoint, DataType, Metadata, TargetData, Value as DataValue};
use crate::yaml::{check_user_key, parse_metadata, parse_naming, Document, Naming, YamlPath};

const FORMAT: &str = "json";
const WILDCARD: &str = "*";
pub(super) const PLACEHOLDER: &str = "{*}";

#[derive(Debug, Clone, PartialEq)]
pub struct JsonOptions {
    pub values: Vec<JsonValue>,
}

/// One configured value: where it is and what it becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonValue {
    /// The pointer before the wildcard segment, or the whole pointer.
    pub pointer: String,
    /// The rest of the pointer after a `*` segment; `None` without one.
    pub after_wildcard: Option<String>,
    pub key: String,
    pub data_type: DataType,
    pub metadata: Vec<Metadata>,
    pub wildcard_metadata: Option<String>,
    /// Its name and unit for `translations`.
    pub naming: Naming,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJson {
    values: Vec<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValue {
    pointer: String,
    key: String,
    data_type: Option<DataType>,
    metadata: Option<Value>,
    wildcard_metadata: Option<String>,
    description: Option<String>,
    units: Option<String>,
}

impl JsonOptions {
    pub(super) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawJson = doc.deserialize(path, value)?;
        if raw.values.is_empty() {
            doc.error(
                &path.key("values"),
                "list at least one value: {pointer: /path/to/value, key: name}",
            );
            return None;
        }
        let mut ok = true;
        let mut values = Vec::with_capacity(raw.values.len());
        for (i, raw) in raw.values.into_iter().enumerate() {
            let at = path.key("values").index(i);
            match JsonValue::parse(doc, &at, raw) {
                Some(value) => values.push(value),
                None => ok = false,
            }
        }
        ok.then_some(JsonOptions { values })
    }
}

impl JsonValue {
    fn parse(doc: &mut Document, path: &YamlPath, raw: RawValue) -> Option<Self> {
        let mut ok = true;
        if !(raw.pointer.is_empty() || raw.pointer.starts_with('/')) {
            doc.error(
                &path.key("pointer"),
                format!(
                    "a JSON pointer is empty or starts with `/`, e.g. /quotes/ABC/price; found {:?}",
                    raw.pointer
                ),
            );
            ok = false;
        }
        let segments: Vec<&str> = raw.pointer.split('/').skip(1).collect();
        let wildcards: Vec<usize> = segments
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == WILDCARD)
            .map(|(i, _)| i)
            .collect();
        let (pointer, after_wildcard) = match wildcards.as_slice() {
            [] => (raw.pointer.clone(), None),
            [at] => (prefix(&segments[..*at]), Some(prefix(&segments[at + 1..]))),
            _ => {
                doc.error(
                    &path.key("pointer"),
                    "only one segment of a pointer may be the wildcard `*`",
                );
                ok = false;
                (raw.pointer.clone(), None)
            }
        };
        let has_wildcard = after_wildcard.is_some();
        if has_wildcard && !raw.key.contains(PLACEHOLDER) && raw.wildcard_metadata.is_none() {
            doc.error(
                &path.key("key"),
                "with a wildcard `*` in the pointer, put `{*}` in the key or set wildcard_metadata, or every element becomes the same datapoint",
            );
            ok = false;
        }
        if wildcards.is_empty() && raw.key.contains(PLACEHOLDER) {
            doc.error(
                &path.key("key"),
                "`{*}` stands for the element a wildcard `*` in the pointer matched, but the pointer has none",
            );
            ok = false;
        }
        if let Some(name) = &raw.wildcard_metadata {
            if wildcards.is_empty() {
                doc.error(
                    &path.key("wildcard_metadata"),
                    "needs a wildcard `*` in the pointer",
                );
                ok = false;
            }
            ok &= check_user_key(doc, &path.key("wildcard_metadata"), name);
        }
        ok &= check_key(doc, &path.key("key"), &raw.key.replace(PLACEHOLDER, "x"));
        let metadata = match &raw.metadata {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(value) => parse_metadata(doc, &path.key("metadata"), value),
        };
        let naming = parse_naming(doc, path, raw.description.as_deref(), raw.units.as_deref());
        (ok && metadata.is_some() && naming.is_some()).then(|| JsonValue {
            pointer,
            after_wildcard,
            key: raw.key,
            data_type: raw.data_type.unwrap_or(DataType::Float),
            metadata: metadata.expect("checked above"),
            wildcard_metadata: raw.wildcard_metadata,
            naming: naming.expect("checked above"),
        })
    }
}

fn prefix(segments: &[&str]) -> String {
    segments.iter().map(|s| format!("/{s}")).collect()
}

pub fn parse(payload: &Payload<'_>, options: &JsonOptions) -> Result<Parsed, FormatError> {
    // Each value's path, unescaped once: before the wildcard (or the whole
    // path) and after it. `None` for text that is not a pointer (the
    // configuration refuses it), which reaches nothing.
    let paths: Vec<(Path, Option<Path>)> = options
        .values
        .iter()
        .map(|spec| {
            (
                segments(&spec.pointer),
                spec.after_wildcard.as_deref().map(segments),
            )
        })
        .collect();
    let mut selection = Selection::default();
    for (before, after) in &paths {
        let Some(before) = before else { continue };
        let mut steps: Vec<Step<'_>> = before.iter().map(|s| Step::Name(s)).collect();
        match after {
            None => {}
            // Every element is still listed, each with nothing at the rest.
            Some(None) => steps.push(Step::Any),
            Some(Some(after)) => {
                steps.push(Step::Any);
                steps.extend(after.iter().map(|s| Step::Name(s)));
            }
        }
        selection.insert(&steps);
    }
    let document = selection
        .read(payload.bytes)
        .map_err(|err| super::json_error(FORMAT, &err))?;
    let mut parsed = Parsed::default();
    let mut target = TargetData::new(payload.default_target);
    for (spec, (before, after)) in options.values.iter().zip(&paths) {
        let Some(found) = before.as_ref().and_then(|path| document.at(path)) else {
            parsed.skipped.push(Skipped {
                location: display_pointer(&spec.pointer),
                reason: format!("{}: nothing at this pointer", spec.key),
            });
            continue;
        };
        let (Some(after), Some(after_text)) = (after, &spec.after_wildcard) else {
            match datapoint(found, spec, spec.key.clone(), None, payload.read_at_ms) {
                Ok(dp) => target.datapoints.push(dp),
                Err(reason) => parsed.skipped.push(Skipped {
                    location: display_pointer(&spec.pointer),
                    reason,
                }),
            }
            continue;
        };
        let element = Element {
            spec,
            key: spec.key.split(PLACEHOLDER).collect(),
            after: after.as_deref(),
            after_text,
        };
        match found {
            Node::Array(items) => {
                target.datapoints.reserve(items.len());
                let mut index = itoa::Buffer::new();
                for (i, item) in items.iter().enumerate() {
                    element.read(index.format(i), item, payload, &mut parsed, &mut target);
                }
            }
            Node::Object(members) => {
                target.datapoints.reserve(members.len());
                for (name, item) in members {
                    element.read(name, item, payload, &mut parsed, &mut target);
                }
            }
            other => {
                parsed.skipped.push(Skipped {
                    location: display_pointer(&spec.pointer),
                    reason: format!(
                        "{}: the wildcard needs a list or an object here, found {}",
                        spec.key,
                        other.kind()
                    ),
                });
            }
        }
    }
    parsed.targets.push(target);
    Ok(parsed)
}

/// A pointer's segments, unescaped; `None` for text that is not a pointer.
type Path = Option<Vec<String>>;

/// A configured value with a wildcard, ready to read each element.
struct Element<'a> {
    spec: &'a JsonValue,
    /// The key split at each `{*}`.
    key: Vec<&'a str>,
    /// The path after the wildcard, unescaped (`None`: not a pointer), and
    /// as configured.
    after: Option<&'a [String]>,
    after_text: &'a str,
}

impl Element<'_> {
    /// The key with the element's name for each `{*}`.
    fn key(&self, name: &str) -> String {
        let parts: usize = self.key.iter().map(|p| p.len()).sum();
        let mut key = String::with_capacity(parts + name.len() * (self.key.len() - 1));
        for (i, part) in self.key.iter().enumerate() {
            if i > 0 {
                key.push_str(name);
            }
            key.push_str(part);
        }
        key
    }

    /// The datapoint `after` points to in the element the wildcard matched
    /// as `name`.
    fn read(
        &self,
        name: &str,
        element: &Node<'_>,
        payload: &Payload<'_>,
        parsed: &mut Parsed,
        target: &mut TargetData,
    ) {
        let key = self.key(name);
        // Only a skipped element needs its location spelled out.
        let location = || format!("{}/{}{}", self.spec.pointer, escape(name), self.after_text);
        let Some(found) = self.after.and_then(|path| element.at(path)) else {
            parsed.skipped.push(Skipped {
                location: location(),
                reason: format!("{key}: nothing at this pointer"),
            });
            return;
        };
        match datapoint(found, self.spec, key, Some(name), payload.read_at_ms) {
            Ok(dp) => target.datapoints.push(dp),
            Err(reason) => parsed.skipped.push(Skipped {
                location: location(),
                reason,
            }),
        }
    }
}

fn datapoint(
    found: &Node<'_>,
    spec: &JsonValue,
    key: String,
    element: Option<&str>,
    read_at_ms: u64,
) -> Result<DataPoint, String> {
    let value = match found {
        Node::Number(n) if spec.data_type.is_numeric() => DataValue::from(n),
        Node::Number(n) => DataValue::Text(python::number_to_string(n)),
        Node::String(text) => convert(text, spec.data_type).map_err(|r| format!("{key}: {r}"))?,
        Node::Bool(b) if spec.data_type.is_numeric() => DataValue::Int(i64::from(*b)),
        // Python's str(True), as the reference agents would send it.
        Node::Bool(b) => DataValue::Text(if *b { "True" } else { "False" }.to_owned()),
        other => {
            return Err(format!(
                "{key}: expected a number or text, found {}",
                other.kind()
            ))
        }
    };
    let mut datapoint = DataPoint::new(key, value, spec.data_type, read_at_ms);
    datapoint
        .metadata
        .reserve_exact(usize::from(spec.wildcard_metadata.is_some()) + spec.metadata.len());
    if let (Some(name), Some(element)) = (&spec.wildcard_metadata, element) {
        datapoint.metadata.push(Metadata::new(name, element));
    }
    datapoint.metadata.extend(spec.metadata.iter().cloned());
    Ok(datapoint)
}

fn display_pointer(pointer: &str) -> String {
    if pointer.is_empty() {
        "the whole document".to_owned()
    } else {
        pointer.to_owned()
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
