//! Payload formats: pure parsers that turn the bytes a poller fetched into
//! datapoints. Shared by the HTTP and command pollers; no I/O in here.

pub mod datapoints;

use std::fmt;

use serde_norway::Value;

use crate::config::{yaml::describe, Document, YamlPath};
use crate::model::TargetData;

/// How to read a payload, as configured by a poller's `format:` key.
#[derive(Debug, Clone, PartialEq)]
pub enum FormatSettings {
    /// The datapoints document (`SPEC-wire-format.md`, last section).
    Datapoints,
}

impl FormatSettings {
    pub const NAMES: [&'static str; 1] = ["datapoints"];

    /// Reads `format:`: a format name, or a mapping with `type:` and that
    /// format's options.
    pub fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<FormatSettings> {
        let name = match value {
            Value::String(name) => name.as_str(),
            other => {
                doc.error(
                    path,
                    format!(
                        "expected a format name ({}), found {}",
                        Self::NAMES.join(", "),
                        describe(other)
                    ),
                );
                return None;
            }
        };
        match name {
            "datapoints" => Some(FormatSettings::Datapoints),
            other => {
                doc.error(
                    path,
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
            FormatSettings::Datapoints => "datapoints",
        }
    }

    /// Parses a payload.
    pub fn parse_payload(&self, payload: &Payload<'_>) -> Result<Parsed, FormatError> {
        match self {
            FormatSettings::Datapoints => datapoints::parse(payload),
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
