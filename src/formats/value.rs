//! The `value` format: the whole payload is one number or one text; the
//! configuration gives its key and data type.
//!
//! Surrounding whitespace (a trailing newline, say) is not part of a number.
//! A `string` value keeps inner and leading whitespace and loses only its
//! line end, so `echo` output reads as the text that was echoed.

use serde::Deserialize;
use serde_norway::Value;

use super::{check_key, convert, text, FormatError, Parsed, Payload, Skipped};
use crate::model::{DataPoint, DataType, Metadata, TargetData};
use crate::yaml::{parse_metadata, parse_naming, Document, Naming, YamlPath};

const FORMAT: &str = "value";

#[derive(Debug, Clone, PartialEq)]
pub struct ValueOptions {
    pub key: String,
    pub data_type: DataType,
    pub metadata: Vec<Metadata>,
    /// Its name and unit for `translations`.
    pub naming: Naming,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValue {
    key: String,
    #[serde(default = "default_data_type")]
    data_type: DataType,
    metadata: Option<Value>,
    description: Option<String>,
    units: Option<String>,
}

fn default_data_type() -> DataType {
    DataType::Float
}

impl ValueOptions {
    pub(super) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawValue = doc.deserialize(path, value)?;
        let key_ok = check_key(doc, &path.key("key"), &raw.key);
        let metadata = match &raw.metadata {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(value) => parse_metadata(doc, &path.key("metadata"), value),
        };
        let naming = parse_naming(doc, path, raw.description.as_deref(), raw.units.as_deref());
        (key_ok && metadata.is_some() && naming.is_some()).then(|| ValueOptions {
            key: raw.key,
            data_type: raw.data_type,
            metadata: metadata.expect("checked above"),
            naming: naming.expect("checked above"),
        })
    }
}

pub fn parse(payload: &Payload<'_>, options: &ValueOptions) -> Result<Parsed, FormatError> {
    let text = text(FORMAT, payload.bytes)?;
    if text.trim().is_empty() {
        return Err(FormatError::new(
            FORMAT,
            "line 1 column 1",
            format!(
                "expected one {} value, found an empty payload",
                options.data_type
            ),
        ));
    }
    let text = if options.data_type.is_numeric() {
        text.trim()
    } else {
        let text = text.strip_suffix('\n').unwrap_or(text);
        text.strip_suffix('\r').unwrap_or(text)
    };
    let mut parsed = Parsed::default();
    let mut target = TargetData::new(payload.default_target);
    match convert(text, options.data_type) {
        Ok(value) => {
            let mut datapoint =
                DataPoint::new(&options.key, value, options.data_type, payload.read_at_ms);
            datapoint.metadata.extend(options.metadata.iter().cloned());
            target.datapoints.push(datapoint);
        }
        Err(reason) => parsed.skipped.push(Skipped {
            location: "line 1".to_owned(),
            reason: format!("{}: {reason}", options.key),
        }),
    }
    parsed.targets.push(target);
    Ok(parsed)
}
