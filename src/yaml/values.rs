//! Values that several files and poller kinds read the same way: polling
//! intervals, metadata, user-chosen keys, counts, paths.
//!
//! A plain setting (a duration in milliseconds, a byte limit, a count, a
//! port) is a [`Setting`]: it knows its default, its range and the words
//! that refuse a value out of it. A parser reads its settings one line each
//! with [`Fields::read`], which records a refused value at its own key, so
//! the parser reads as the list of its fields.

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

/// The optional `description` and `units` written beside a configured key
/// (a register, an OID): the name and unit `pattoo-agentd translations`
/// prints for it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Naming {
    pub description: Option<String>,
    pub units: Option<String>,
}

/// Reads `description` and `units` of the entry at `path`; a blank one is
/// refused, since pattoo would store it as `nan`.
pub fn parse_naming(
    doc: &mut Document,
    path: &YamlPath,
    description: Option<&str>,
    units: Option<&str>,
) -> Option<Naming> {
    let mut ok = true;
    let mut read = |name: &str, text: Option<&str>| {
        let text = text.map(str::trim)?;
        if text.is_empty() {
            doc.error(&path.key(name), "must not be empty: leave it out instead");
            ok = false;
            return None;
        }
        Some(text.to_owned())
    };
    let naming = Naming {
        description: read("description", description),
        units: read("units", units),
    };
    ok.then_some(naming)
}

/// The longest any `*_ms` setting may be: a day. Longer is a unit mistake,
/// and a deadline that far off overflows the clocks it is added to.
pub const MAX_MS: u64 = 86_400_000;

/// The largest any `*_bytes` read limit may be: 1 GiB, all of which may be
/// held in memory.
pub const MAX_READ_BYTES: u64 = 1 << 30;

/// What a setting accepts: its value when absent, and the message that
/// says why a given value is refused. A parser reads each of its settings
/// with [`Fields::read`], so it reads as a list of fields.
pub trait Setting {
    /// As deserialized from the file.
    type Given;
    /// As the poller uses it.
    type Value;
    /// The value when the key is absent, and after a refused value (the
    /// parse fails anyway; later checks compare against something sane).
    fn default_value(&self) -> Self::Value;
    /// The value, or why `given` is refused.
    fn check(&self, given: Self::Given) -> Result<Self::Value, String>;
}

/// The keys of one mapping read as settings: each refused value is
/// recorded at its key, and [`Fields::ok`] says whether all were fine.
pub struct Fields<'a> {
    path: &'a YamlPath,
    ok: bool,
}

impl<'a> Fields<'a> {
    pub fn new(path: &'a YamlPath) -> Self {
        Fields { path, ok: true }
    }

    /// `given` (the value of `key`) checked by `setting`, or its default.
    pub fn read<S: Setting>(
        &mut self,
        doc: &mut Document,
        key: &str,
        given: Option<S::Given>,
        setting: S,
    ) -> S::Value {
        let mut ok = self.ok;
        let value = self.read_with_ok(doc, key, given, setting, &mut ok);
        self.ok = ok;
        value
    }

    fn read_with_ok<S: Setting>(
        &self,
        doc: &mut Document,
        key: &str,
        given: Option<S::Given>,
        setting: S,
        ok: &mut bool,
    ) -> S::Value {
        let Some(given) = given else {
            return setting.default_value();
        };
        match setting.check(given) {
            Ok(value) => value,
            Err(message) => {
                doc.error(&self.path.key(key), message);
                *ok = false;
                setting.default_value()
            }
        }
    }

    /// Whether every setting read so far was accepted.
    pub fn ok(&self) -> bool {
        self.ok
    }
}

/// A whole number from 1 to `max` (a count, a size).
#[derive(Debug, Clone, Copy)]
pub struct Count {
    pub default: u64,
    pub max: u64,
}

impl Count {
    pub const fn new(default: u64, max: u64) -> Self {
        Count { default, max }
    }
}

impl Setting for Count {
    type Given = u64;
    type Value = u64;

    fn default_value(&self) -> u64 {
        self.default
    }

    fn check(&self, given: u64) -> Result<u64, String> {
        match given {
            0 => Err("must be more than 0".to_owned()),
            n if n > self.max => Err(format!("{n} is out of range: expected 1 to {}", self.max)),
            n => Ok(n),
        }
    }
}

/// A `*_ms` setting: whole milliseconds from 1 to a day ([`MAX_MS`]).
#[derive(Debug, Clone, Copy)]
pub struct DurationMs {
    pub default: Duration,
}

impl DurationMs {
    pub const fn or(default: Duration) -> Self {
        DurationMs { default }
    }
}

impl Setting for DurationMs {
    type Given = u64;
    type Value = Duration;

    fn default_value(&self) -> Duration {
        self.default
    }

    fn check(&self, given: u64) -> Result<Duration, String> {
        let default = u64::try_from(self.default.as_millis()).unwrap_or(MAX_MS);
        Count::new(default, MAX_MS)
            .check(given)
            .map(Duration::from_millis)
    }
}

/// A setting with no default: `None` when absent.
#[derive(Debug, Clone, Copy)]
pub struct Optional<S>(pub S);

impl<S: Setting> Setting for Optional<S> {
    type Given = S::Given;
    type Value = Option<S::Value>;

    fn default_value(&self) -> Option<S::Value> {
        None
    }

    fn check(&self, given: S::Given) -> Result<Option<S::Value>, String> {
        self.0.check(given).map(Some)
    }
}

impl DurationMs {
    /// A `*_ms` setting that is `None` when absent.
    pub const fn optional() -> Optional<DurationMs> {
        // The default is never used: an absent key is `None`.
        Optional(DurationMs {
            default: Duration::ZERO,
        })
    }
}

/// A `*_bytes` read limit: from 1 byte to [`MAX_READ_BYTES`].
#[derive(Debug, Clone, Copy)]
pub struct ByteLimit {
    pub default: usize,
}

impl ByteLimit {
    pub const fn or(default: usize) -> Self {
        ByteLimit { default }
    }
}

impl Setting for ByteLimit {
    type Given = usize;
    type Value = usize;

    fn default_value(&self) -> usize {
        self.default
    }

    fn check(&self, given: usize) -> Result<usize, String> {
        // MAX_READ_BYTES fits a usize on every target with 32 bits or more.
        Count::new(self.default as u64, MAX_READ_BYTES)
            .check(given as u64)
            .map(|n| n as usize)
    }
}

/// A retry count from 0 to `max`; `why` says what a larger one would do.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    pub default: u32,
    pub max: u32,
    pub why: &'static str,
}

impl Setting for Retries {
    type Given = u32;
    type Value = u32;

    fn default_value(&self) -> u32 {
        self.default
    }

    fn check(&self, given: u32) -> Result<u32, String> {
        if given > self.max {
            Err(format!("at most {}: {}", self.max, self.why))
        } else {
            Ok(given)
        }
    }
}

/// A TCP or UDP port from 1 to 65535, as written after a host's `:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port(pub u16);

impl Port {
    /// The port `text` names, or why it names none (0 is not a port:
    /// nothing listens there).
    pub fn from_text(text: &str) -> Result<Port, String> {
        match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Port(port)),
            _ => Err(format!(
                "port {text:?} is not a port number from 1 to 65535"
            )),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn read_all(text: &str) -> (Vec<String>, bool, Duration, usize) {
        let mut doc = Document::parse(Path::new("t.yaml"), text).expect("valid YAML");
        let path = YamlPath::root();
        let field = |doc: &Document, key: &str| doc.root.get(key).and_then(Value::as_u64);
        let timeout = field(&doc, "timeout_ms");
        let bytes = field(&doc, "max_bytes").map(|n| n as usize);
        let mut fields = Fields::new(&path);
        let timeout = fields.read(
            &mut doc,
            "timeout_ms",
            timeout,
            DurationMs::or(Duration::from_secs(3)),
        );
        let bytes = fields.read(&mut doc, "max_bytes", bytes, ByteLimit::or(1024));
        let ok = fields.ok();
        let errors = doc.into_errors().iter().map(ToString::to_string).collect();
        (errors, ok, timeout, bytes)
    }

    #[test]
    fn absent_settings_take_their_defaults() {
        let (errors, ok, timeout, bytes) = read_all("other: 1\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert!(ok);
        assert_eq!((timeout, bytes), (Duration::from_secs(3), 1024));
    }

    #[test]
    fn a_refused_setting_is_reported_at_its_own_line() {
        let (errors, ok, _, bytes) = read_all("timeout_ms: 0\nmax_bytes: 2000000000\n");
        assert!(!ok);
        assert_eq!(
            errors,
            [
                "t.yaml:1:1: timeout_ms: must be more than 0",
                "t.yaml:2:1: max_bytes: 2000000000 is out of range: expected 1 to 1073741824",
            ]
        );
        assert_eq!(bytes, 1024, "a refused value falls back to the default");
    }

    #[test]
    fn a_duration_longer_than_a_day_is_refused() {
        let (errors, ok, timeout, _) = read_all("timeout_ms: 86400001\n");
        assert!(!ok);
        assert_eq!(
            errors,
            ["t.yaml:1:1: timeout_ms: 86400001 is out of range: expected 1 to 86400000"]
        );
        let (_, ok, timeout_at_limit, _) = read_all("timeout_ms: 86400000\n");
        assert!(ok);
        assert_eq!(timeout_at_limit, Duration::from_secs(86_400));
        assert_eq!(timeout, Duration::from_secs(3));
    }

    #[test]
    fn an_optional_duration_is_none_when_absent_and_checked_when_given() {
        let mut doc = Document::parse(Path::new("t.yaml"), "a: 1\nb: 0\n").expect("valid YAML");
        let path = YamlPath::root();
        let mut fields = Fields::new(&path);
        let absent = fields.read(&mut doc, "c", None, DurationMs::optional());
        let given = fields.read(&mut doc, "a", Some(1500), DurationMs::optional());
        assert!(fields.ok());
        let zero = fields.read(&mut doc, "b", Some(0), DurationMs::optional());
        assert!(!fields.ok());
        assert_eq!(absent, None);
        assert_eq!(given, Some(Duration::from_millis(1500)));
        assert_eq!(zero, None);
        let errors: Vec<String> = doc.into_errors().iter().map(ToString::to_string).collect();
        assert_eq!(errors, ["t.yaml:2:1: b: must be more than 0"]);
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(Port::from_text("502"), Ok(Port(502)));
        assert_eq!(Port::from_text("65535"), Ok(Port(65535)));
        for text in ["0", "65536", "", "x", "-1"] {
            assert_eq!(
                Port::from_text(text),
                Err(format!(
                    "port {text:?} is not a port number from 1 to 65535"
                ))
            );
        }
    }

    #[test]
    fn a_blank_description_or_units_is_refused_at_its_key_and_absent_ones_are_none() {
        let mut doc = Document::parse(Path::new("t.yaml"), "key: a\n").expect("valid YAML");
        let at = YamlPath::root();
        assert_eq!(
            parse_naming(&mut doc, &at, None, None),
            Some(Naming::default())
        );
        assert_eq!(
            parse_naming(&mut doc, &at, Some(" Voltage "), Some("Volts")),
            Some(Naming {
                description: Some("Voltage".to_owned()),
                units: Some("Volts".to_owned())
            })
        );
        assert_eq!(
            parse_naming(&mut doc, &at, Some("Voltage"), Some("  ")),
            None
        );
        let errors: Vec<String> = doc.into_errors().iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("units: must not be empty"), "{errors:?}");
    }
}
