//! The `keyvalue` format: one reading per line, `key=value` or `key value`.
//!
//! Blank lines and lines starting with `#` are skipped; `\r\n` line ends are
//! accepted. A line with `=` splits at the first `=`; otherwise at the first
//! run of whitespace, so `load 0.5` and `load = 0.5` read alike. A line
//! with no separator at all is malformed and fails the payload: a script
//! printing something unexpected should be noticed, not half-read.

use std::borrow::Cow;
use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde_norway::Value;

use super::{convert, normal_key, text, FormatError, Parsed, Payload, Skipped};
use crate::model::{DataPoint, DataType, Metadata, TargetData};
use crate::yaml::{parse_metadata, Document, YamlPath};

const FORMAT: &str = "keyvalue";

#[derive(Debug, Clone, PartialEq)]
pub struct KeyValueOptions {
    /// The data type of every value.
    pub data_type: DataType,
    /// Attached to every datapoint.
    pub metadata: Vec<Metadata>,
}

impl Default for KeyValueOptions {
    fn default() -> Self {
        KeyValueOptions {
            data_type: DataType::Float,
            metadata: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyValue {
    data_type: Option<DataType>,
    metadata: Option<Value>,
}

impl KeyValueOptions {
    pub(super) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawKeyValue = doc.deserialize(path, value)?;
        let metadata = match &raw.metadata {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => parse_metadata(doc, &path.key("metadata"), value)?,
        };
        Some(KeyValueOptions {
            data_type: raw.data_type.unwrap_or(DataType::Float),
            metadata,
        })
    }
}

pub fn parse(payload: &Payload<'_>, options: &KeyValueOptions) -> Result<Parsed, FormatError> {
    let text = text(FORMAT, payload.bytes)?;
    let mut parsed = Parsed::default();
    let mut target = TargetData::new(payload.default_target);
    // Normalised key -> the line that set it: a repeated key would become
    // the same datapoint, so the first one is kept and the others reported.
    // Keys already normal (nearly all) are borrowed from the payload.
    // Reserved once rather than regrown and copied as they fill; capped, so
    // that a payload of blank lines reserves no more than a plausible one
    // of its size.
    let lines = (text.bytes().filter(|&b| b == b'\n').count() + 1).min(text.len() / 16);
    let mut seen: FxHashMap<Cow<'_, str>, usize> = FxHashMap::default();
    seen.reserve(lines);
    target.datapoints.reserve(lines);
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let column = || line[..line.len() - line.trim_start().len()].chars().count() + 1;
        let (key, value) = match trimmed.bytes().position(|b| b == b'=') {
            Some(at) => (trimmed[..at].trim(), trimmed[at + 1..].trim()),
            None => match trimmed.split_once(char::is_whitespace) {
                Some((key, value)) => (key, value.trim()),
                None => {
                    return Err(FormatError::new(
                        FORMAT,
                        format!("line {number} column {}", column()),
                        format!("expected `key=value` or `key value`, found {trimmed:?}"),
                    ))
                }
            },
        };
        if key.is_empty() {
            return Err(FormatError::new(
                FORMAT,
                format!("line {number} column {}", column()),
                "expected a key before `=`",
            ));
        }
        match seen.entry(normal_key(key)) {
            Entry::Occupied(first) => {
                parsed.skipped.push(Skipped {
                    location: format!("line {number}"),
                    reason: format!(
                        "duplicate key {key:?}: the value on line {} is kept",
                        first.get()
                    ),
                });
                continue;
            }
            Entry::Vacant(slot) => {
                slot.insert(number);
            }
        }
        match convert(value, options.data_type) {
            Ok(value) => {
                target.datapoints.push(DataPoint {
                    key: key.to_owned().into(),
                    value,
                    data_type: options.data_type,
                    timestamp_ms: payload.read_at_ms,
                    metadata: options.metadata.clone(),
                });
            }
            Err(reason) => parsed.skipped.push(Skipped {
                location: format!("line {number}"),
                reason: format!("{key}: {reason}"),
            }),
        }
    }
    parsed.targets.push(target);
    Ok(parsed)
}
