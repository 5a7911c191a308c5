//! Payload formats: pure parsers that turn the bytes a poller fetched into
//! datapoints. Shared by the HTTP and command pollers; no I/O in here.
//!
//! Every parser follows the same rules: input it cannot read as a whole
//! fails with a [`FormatError`] that says where (line and column, or a JSON
//! pointer) and what was expected; a single value that does not convert is
//! left out with a [`Skipped`] note and the rest are kept. No input makes a
//! parser panic (`tests.rs` checks arbitrary bytes with proptest).
//!
//! A poller's `format:` is a name or a mapping with `type:` and options:
//!
//! ```yaml
//! format: prometheus            # also: nagios, datapoints, pattoo, keyvalue
//! format: {type: value, key: temperature, data_type: float, metadata: {unit: C}}
//! format: {type: keyvalue, data_type: float, metadata: {site: a}}
//! format:
//!   type: json
//!   values:
//!     - {pointer: /quotes/ABC/price, key: abc_price, data_type: float, metadata: {currency: USD}}
//!     - {pointer: /servers/*/load, key: "load_{*}"}                 # one per element
//!     - {pointer: /disks/*/used, key: disk_used, wildcard_metadata: disk}
//! ```
//!
//! `data_type` defaults to `float` in the value, keyvalue and json formats.
//! Keys and metadata keys chosen in configuration must not contain
//! `pattoo`. Each format's module says how it reads its payload.

pub mod datapoints;
pub mod json;
mod json_stream;
pub mod keyvalue;
pub mod nagios;
pub mod pattoo;
pub mod prometheus;
pub mod value;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use serde_norway::{Mapping, Value};

use crate::model::translation::{readable, Translation, LABEL_UNITS};
use crate::model::{normalise_key_cow, python, DataType, Metadata, TargetData, Value as DataValue};
use crate::yaml::{describe, Document, Naming, YamlPath};

/// How to read a payload, as configured by a poller's `format:` key.
#[derive(Debug, Clone, PartialEq)]
pub enum FormatSettings {
    /// The whole payload is one value.
    Value(value::ValueOptions),
    /// Values picked out of a JSON document by JSON pointer.
    Json(json::JsonOptions),
    /// `key=value` or `key value` lines.
    KeyValue(keyvalue::KeyValueOptions),
    /// The Prometheus text exposition format.
    Prometheus,
    /// Nagios plugin output and exit status.
    Nagios,
    /// The datapoints document (`SPEC-wire-format.md`, last section).
    Datapoints,
    /// A pattoo post body from a passive agent, relayed.
    Pattoo,
}

impl FormatSettings {
    /// The names and units of the keys the configuration lists, with
    /// their metadata keys. Keys a format reads from the payload itself
    /// (keyvalue, prometheus, nagios, datapoints, a JSON key with `{*}`)
    /// are known only once polled, and not named here.
    pub fn translations(&self) -> Vec<Translation> {
        let value = |key: &str, data_type: DataType, naming: &Naming| {
            let units = match data_type {
                DataType::Counter | DataType::Counter64 => "Count / Second",
                DataType::String => "Text",
                _ => "Value",
            };
            Translation::datapoint(
                key,
                naming.description.clone().unwrap_or_else(|| readable(key)),
                naming.units.clone().unwrap_or_else(|| units.to_owned()),
            )
        };
        let label = |item: &Metadata| {
            Translation::metadata(item.key.to_string(), readable(&item.key), LABEL_UNITS)
        };
        let mut names = Vec::new();
        match self {
            FormatSettings::Value(options) => {
                names.push(value(&options.key, options.data_type, &options.naming));
                names.extend(options.metadata.iter().map(label));
            }
            FormatSettings::Json(options) => {
                for spec in &options.values {
                    if !spec.key.contains(json::PLACEHOLDER) {
                        names.push(value(&spec.key, spec.data_type, &spec.naming));
                    }
                    names.extend(spec.metadata.iter().map(label));
                    if let Some(key) = &spec.wildcard_metadata {
                        names.push(Translation::metadata(key, readable(key), LABEL_UNITS));
                    }
                }
            }
            FormatSettings::KeyValue(options) => names.extend(options.metadata.iter().map(label)),
            FormatSettings::Prometheus
            | FormatSettings::Nagios
            | FormatSettings::Datapoints
            | FormatSettings::Pattoo => {}
        }
        names
    }

    pub const NAMES: [&'static str; 7] = [
        "value",
        "json",
        "keyvalue",
        "prometheus",
        "nagios",
        "datapoints",
        "pattoo",
    ];

    /// Reads `format:`: a format name, or a mapping with `type:` and that
    /// format's options.
    pub fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<FormatSettings> {
        let (name, options) = match value {
            Value::String(name) => (name.as_str(), None),
            Value::Mapping(map) => match map.get("type") {
                Some(Value::String(name)) => {
                    let mut options = map.clone();
                    options.remove("type");
                    (name.as_str(), Some(options))
                }
                Some(other) => {
                    doc.error(
                        &path.key("type"),
                        format!(
                            "expected a format name ({}), found {}",
                            Self::NAMES.join(", "),
                            describe(other)
                        ),
                    );
                    return None;
                }
                None => {
                    doc.error(
                        path,
                        format!(
                            "missing field `type`: expected one of {}",
                            Self::NAMES.join(", ")
                        ),
                    );
                    return None;
                }
            },
            other => {
                doc.error(
                    path,
                    format!(
                        "expected a format name ({}) or a mapping with `type:` and options, found {}",
                        Self::NAMES.join(", "),
                        describe(other)
                    ),
                );
                return None;
            }
        };
        let options = Value::Mapping(options.unwrap_or_else(Mapping::new));
        let no_options = |doc: &mut Document, settings: FormatSettings| match &options {
            Value::Mapping(map) if !map.is_empty() => {
                for key in map.keys() {
                    let key = key.as_str().unwrap_or_default();
                    doc.error(
                        &path.key(key),
                        format!(
                            "unknown option `{key}`: the {} format takes no options",
                            settings.name()
                        ),
                    );
                }
                None
            }
            _ => Some(settings),
        };
        match name {
            "value" => value::ValueOptions::parse(doc, path, &options).map(FormatSettings::Value),
            "json" => json::JsonOptions::parse(doc, path, &options).map(FormatSettings::Json),
            "keyvalue" => {
                keyvalue::KeyValueOptions::parse(doc, path, &options).map(FormatSettings::KeyValue)
            }
            "prometheus" => no_options(doc, FormatSettings::Prometheus),
            "nagios" => no_options(doc, FormatSettings::Nagios),
            "datapoints" => no_options(doc, FormatSettings::Datapoints),
            "pattoo" => no_options(doc, FormatSettings::Pattoo),
            other => {
                let at = if matches!(value, Value::Mapping(_)) {
                    path.key("type")
                } else {
                    path.clone()
                };
                doc.error(
                    &at,
                    format!(
                        "unknown format `{other}`: expected one of {}",
                        Self::NAMES.join(", ")
                    ),
                );
                None
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            FormatSettings::Value(_) => "value",
            FormatSettings::Json(_) => "json",
            FormatSettings::KeyValue(_) => "keyvalue",
            FormatSettings::Prometheus => "prometheus",
            FormatSettings::Nagios => "nagios",
            FormatSettings::Datapoints => "datapoints",
            FormatSettings::Pattoo => "pattoo",
        }
    }

    /// Whether a failing exit status is data (Nagios plugins report their
    /// state with it) rather than a failed poll.
    pub fn exit_status_is_data(&self) -> bool {
        matches!(self, FormatSettings::Nagios)
    }

    /// [`FormatSettings::parse_payload`] of a payload the caller has no
    /// further use for, a command's `output`: a parser that keeps texts
    /// cut from its payload takes it over instead of copying it.
    pub fn parse_output(
        &self,
        output: Vec<u8>,
        default_target: &str,
        read_at_ms: u64,
        exit_status: Option<i32>,
    ) -> Result<Parsed, FormatError> {
        match self {
            FormatSettings::Datapoints => {
                datapoints::parse_owned(output, default_target, read_at_ms)
            }
            _ => self.parse_payload(&Payload {
                bytes: &output,
                default_target,
                read_at_ms,
                exit_status,
            }),
        }
    }

    /// Parses a payload.
    pub fn parse_payload(&self, payload: &Payload<'_>) -> Result<Parsed, FormatError> {
        match self {
            FormatSettings::Value(options) => value::parse(payload, options),
            FormatSettings::Json(options) => json::parse(payload, options),
            FormatSettings::KeyValue(options) => keyvalue::parse(payload, options),
            FormatSettings::Prometheus => prometheus::parse(payload),
            FormatSettings::Nagios => nagios::parse(payload),
            FormatSettings::Datapoints => datapoints::parse(payload),
            FormatSettings::Pattoo => pattoo::parse(payload),
        }
    }
}

/// A fetched payload and what a parser needs to know about where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    pub bytes: &'a [u8],
    /// The target of datapoints that do not name their own.
    pub default_target: &'a str,
    /// When the payload was read, milliseconds since the epoch: the
    /// timestamp of datapoints that do not carry their own.
    pub read_at_ms: u64,
    /// The exit status of the command that printed the payload; `None` for
    /// payloads that did not come from a command.
    pub exit_status: Option<i32>,
}

/// What a parser read: the datapoints, and a note for each value it had to
/// leave out (logged one by one by the caller; the rest are kept).
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub targets: Vec<TargetData>,
    pub skipped: Vec<Skipped>,
}

/// One value a parser left out, and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// A JSON pointer, `line N`, or similar.
    pub location: String,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

/// The payload as a whole could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format} payload: {location}: {reason}")]
pub struct FormatError {
    pub format: &'static str,
    /// `line L column C`, a JSON pointer, or `payload`.
    pub location: String,
    pub reason: String,
}

impl FormatError {
    fn new(format: &'static str, location: impl Into<String>, reason: impl Into<String>) -> Self {
        FormatError {
            format,
            location: location.into(),
            reason: reason.into(),
        }
    }
}

/// The payload as text, for the line-based formats. A leading byte order
/// mark is ignored; bytes that are not UTF-8 fail with their position.
fn text<'a>(format: &'static str, bytes: &'a [u8]) -> Result<&'a str, FormatError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.strip_prefix('\u{feff}').unwrap_or(text)),
        Err(err) => {
            let valid = &bytes[..err.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            Err(FormatError::new(
                format,
                format!("line {line} column {column}"),
                "expected UTF-8 text, found bytes that are not",
            ))
        }
    }
}

/// Numeric text as a value: integers stay integers, anything Python's
/// `float()` reads becomes a float. NaN and infinities cannot be sent, so
/// they are refused here where the location is still known.
fn number(text: &str) -> Result<DataValue, String> {
    let trimmed = text.trim();
    let bytes = trimmed.as_bytes();
    // Text with a point or an exponent is never an integer; plain decimal
    // text (no `_`, `inf` or `nan`) reads the same with Rust's parser as
    // with Python's float(), without that function's extra scans.
    let decimal = bytes.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
    if !decimal {
        if let Ok(v) = trimmed.parse::<i64>() {
            return Ok(DataValue::Int(v));
        }
        if let Ok(v) = trimmed.parse::<u64>() {
            return Ok(DataValue::UInt(v));
        }
    }
    let plain = decimal
        && bytes
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    let parsed = if plain {
        trimmed.parse().ok()
    } else {
        python::parse_float(trimmed)
    };
    match parsed {
        Some(v) if v.is_finite() => Ok(DataValue::Float(v)),
        Some(v) => Err(format!(
            "{} cannot be sent to pattoo",
            python::float_to_string(v)
        )),
        None => Err(format!("expected a number, found {trimmed:?}")),
    }
}

/// Text read for a datapoint of `data_type`: kept as it is for `string`,
/// converted to a number otherwise.
fn convert(text: &str, data_type: DataType) -> Result<DataValue, String> {
    if data_type.is_numeric() {
        number(text)
    } else {
        Ok(DataValue::Text(text.to_owned()))
    }
}

/// A key as the model will normalise it (`normalise_key`), borrowed when
/// it is already normal: one pass over the bytes for the usual ASCII key.
fn normal_key(key: &str) -> Cow<'_, str> {
    let bytes = key.as_bytes();
    let is_space = |b: u8| matches!(b, b'\t'..=b'\r' | 0x1c..=b' ');
    let normal = bytes.first().is_none_or(|&b| !is_space(b))
        && bytes.last().is_none_or(|&b| !is_space(b))
        && bytes
            .iter()
            .all(|&b| b.is_ascii() && !b.is_ascii_uppercase());
    if normal {
        Cow::Borrowed(key)
    } else {
        normalise_key_cow(key)
    }
}

/// Checks a datapoint key chosen in configuration.
fn check_key(doc: &mut Document, path: &YamlPath, key: &str) -> bool {
    crate::yaml::check_user_key(doc, path, key)
}

/// A JSON syntax error located by line and column. serde_json appends
/// " at line L column C" to its message; the position goes in the location
/// instead.
fn json_error(format: &'static str, err: &serde_json::Error) -> FormatError {
    let message = err.to_string();
    let reason = match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    };
    FormatError::new(
        format,
        if err.line() == 0 {
            "payload".to_owned()
        } else {
            format!("line {} column {}", err.line(), err.column())
        },
        reason,
    )
}
