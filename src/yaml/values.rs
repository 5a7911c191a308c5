//! Values that several files and poller kinds read the same way: polling
//! intervals, metadata, user-chosen keys, counts, paths.

use std::path::PathBuf;
use std::time::Duration;

use serde_norway::Value;

use super::{describe, expect_mapping, Document, YamlPath};
use crate::model::{python, Metadata};

/// The polling interval of a poller that sets none, as in the Python agents.
pub const DEFAULT_POLLING_INTERVAL: Duration = Duration::from_secs(300);

/// Longest interval accepted: a day. Longer ones are almost certainly a
/// unit mistake (milliseconds given as seconds).
const MAX_INTERVAL_SECONDS: f64 = 86_400.0;
/// Shortest interval accepted: a millisecond, the unit the interval is sent
/// in. Shorter ones would be sent as 0 and round to a zero `Duration`,
/// which the scheduler cannot step by.
const MIN_INTERVAL_SECONDS: f64 = 0.001;

/// A polling interval in seconds (fractions allowed, e.g. `0.5`).
pub fn parse_interval(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Duration> {
    let seconds = match value {
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    match seconds {
        Some(s) if (MIN_INTERVAL_SECONDS..=MAX_INTERVAL_SECONDS).contains(&s) => {
            Some(Duration::from_secs_f64(s))
        }
        Some(s) => {
            doc.error(
                path,
                format!("polling interval {s} is out of range: expected seconds, at least 0.001 and at most 86400"),
            );
            None
        }
        None => {
            let found = match value {
                Value::String(text) => format!("{text:?}"),
                other => describe(other).to_owned(),
            };
            doc.error(
                path,
                format!("expected a number of seconds, e.g. 60 or 0.5, found {found}"),
            );
            None
        }
    }
}

/// Metadata given in configuration: a mapping of keys to text or numbers,
/// kept in the order written.
pub fn parse_metadata(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Vec<Metadata>> {
    let map = expect_mapping(doc, path, value)?;
    let mut items = Vec::with_capacity(map.len());
    let mut ok = true;
    for (key, value) in map {
        let key_text = match key {
            Value::String(text) => text.clone(),
            // As Python's str(key) writes it, like every key.
            Value::Number(n) => yaml_number_to_python(n),
            other => {
                doc.error(
                    path,
                    format!("metadata keys must be text, found {}", describe(other)),
                );
                ok = false;
                continue;
            }
        };
        let at = path.key(&key_text);
        ok &= check_user_key(doc, &at, &key_text);
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(n) => yaml_number_to_python(n),
            other => {
                doc.error(
                    &at,
                    format!(
                        "metadata values must be text or numbers, found {}",
                        describe(other)
                    ),
                );
                ok = false;
                continue;
            }
        };
        items.push(Metadata::new(key_text, text));
    }
    ok.then_some(items)
}

/// A YAML number as Python's `str()` writes it (`7`, `2.0`, `1e-05`).
pub fn yaml_number_to_python(n: &serde_norway::Number) -> String {
    if let Some(v) = n.as_i64() {
        v.to_string()
    } else if let Some(v) = n.as_u64() {
        v.to_string()
    } else {
        python::float_to_string(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Rejects a user-chosen key (datapoint or metadata) that the pattoo server
/// reserves or that normalises to nothing. Returns whether it is fine.
pub fn check_user_key(doc: &mut Document, path: &YamlPath, key: &str) -> bool {
    let normalised = crate::model::normalise_key(key);
    if normalised.is_empty() {
        doc.error(path, "keys must not be empty");
        false
    } else if normalised.contains("pattoo") {
        doc.error(
            path,
            format!("key {key:?} contains `pattoo`, which pattoo reserves for its own keys; choose another name"),
        );
        false
    } else {
        true
    }
}

/// The longest any `*_ms` setting may be: a day. Longer is a unit mistake,
/// and a deadline that far off overflows the clocks it is added to.
pub const MAX_MS: u64 = 86_400_000;

/// The largest any `*_bytes` read limit may be: 1 GiB, all of which may be
/// held in memory.
pub const MAX_READ_BYTES: u64 = 1 << 30;

/// A count from 1 to `max` (`timeout_ms`, a size), or `default` when
/// absent. Anything else is recorded as an error at `path.key` and clears
/// `ok`.
pub fn positive_or(
    doc: &mut Document,
    path: &YamlPath,
    key: &str,
    value: Option<u64>,
    default: u64,
    max: u64,
    ok: &mut bool,
) -> u64 {
    match value {
        None => default,
        Some(0) => {
            doc.error(&path.key(key), "must be more than 0");
            *ok = false;
            default
        }
        Some(n) if n > max => {
            doc.error(
                &path.key(key),
                format!("{n} is out of range: expected 1 to {max}"),
            );
            *ok = false;
            default
        }
        Some(n) => n,
    }
}

/// Expands a leading `~` to the home directory, as pattoo does for paths.
pub fn expand_home(path: &str) -> PathBuf {
    let path = path.trim();
    if path == "~" || path.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(path.trim_start_matches('~').trim_start_matches('/'));
        }
    }
    PathBuf::from(path)
}
