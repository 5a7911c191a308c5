//! Reading YAML configuration files so that every problem is reported at
//! once, each with its file, line and column.
//!
//! serde_norway parses the document into a [`Value`]; a second, span-keeping
//! pass over the same text ([`Locations`]) records where each node starts,
//! by path. Sections and poller entries are then deserialized one at a time
//! with the path of any error tracked, so one mistake never hides another
//! and each error can be pointed at the line that caused it.

mod values;

pub use values::{
    check_user_key, expand_home, parse_interval, parse_metadata, parse_naming,
    yaml_number_to_python, ByteLimit, Count, DurationMs, Fields, Naming, Optional, Port, Retries,
    Setting, DEFAULT_POLLING_INTERVAL, MAX_MS, MAX_READ_BYTES,
};

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, where known.
    pub position: Option<(usize, usize)>,
    /// Where in the document, e.g. `pattoo_agentd.pollers[2].timeout_ms`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in the configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        writeln!(
            f,
            "{count} configuration error{}:",
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A path into a YAML document: mapping keys and sequence indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct YamlPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Key(String),
    Index(usize),
}

impl YamlPath {
    pub fn root() -> Self {
        YamlPath::default()
    }

    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    fn parent(&self) -> Option<Self> {
        let mut path = self.clone();
        path.0.pop().map(|_| path)
    }

    /// Appends the path serde_path_to_error tracked inside a deserialized
    /// value.
    fn join_tracked(&self, tracked: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        let mut path = self.clone();
        for segment in tracked.iter() {
            match segment {
                S::Seq { index } => path.0.push(Segment::Index(*index)),
                S::Map { key } => path.0.push(Segment::Key(key.clone())),
                S::Enum { .. } | S::Unknown => {}
            }
        }
        path
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Where each node of a document starts, by path.
#[derive(Debug, Default)]
pub struct Locations {
    starts: HashMap<YamlPath, (usize, usize)>,
    /// Unquoted scalar values exactly as written, for the few places where
    /// the YAML reading loses something that matters (leading zeros).
    plain: HashMap<YamlPath, String>,
}

impl Locations {
    /// Indexes a document. A document the span parser cannot read gives an
    /// empty index: serde_norway reports the syntax error itself.
    pub fn index(text: &str) -> Self {
        enum Frame {
            Map {
                path: YamlPath,
                pending_key: Option<String>,
            },
            Seq {
                path: YamlPath,
                next: usize,
            },
        }
        let mut locations = HashMap::new();
        let mut plain = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            let position = (span.start.line(), span.start.col() + 1);
            // The path of the node this event starts, if it is a node.
            let node_path = |stack: &mut Vec<Frame>| -> Option<YamlPath> {
                match stack.last_mut() {
                    None => Some(YamlPath::root()),
                    Some(Frame::Seq { path, next }) => {
                        *next += 1;
                        Some(path.index(*next - 1))
                    }
                    Some(Frame::Map { path, pending_key }) => {
                        pending_key.take().map(|key| path.key(&key))
                    }
                }
            };
            match event {
                Event::Scalar(text, style, ..) => {
                    let is_key = matches!(
                        stack.last(),
                        Some(Frame::Map {
                            pending_key: None,
                            ..
                        })
                    );
                    if is_key {
                        if let Some(Frame::Map { path, pending_key }) = stack.last_mut() {
                            locations.insert(path.key(&text), position);
                            *pending_key = Some(text.into_owned());
                        }
                    } else if let Some(path) = node_path(&mut stack) {
                        if style == ScalarStyle::Plain {
                            plain.insert(path.clone(), text.into_owned());
                        }
                        locations.entry(path).or_insert(position);
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    let path = node_path(&mut stack).unwrap_or_default();
                    locations.entry(path.clone()).or_insert(position);
                    stack.push(if is_map {
                        Frame::Map {
                            path,
                            pending_key: None,
                        }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Alias(..) => {
                    node_path(&mut stack);
                }
                _ => {}
            }
        }
        Locations {
            starts: locations,
            plain,
        }
    }

    /// The position of `path`, or of its nearest ancestor that is known.
    pub fn find(&self, path: &YamlPath) -> Option<(usize, usize)> {
        let mut path = Some(path.clone());
        while let Some(p) = path {
            if let Some(position) = self.starts.get(&p) {
                return Some(*position);
            }
            path = p.parent();
        }
        None
    }
}

/// A parsed configuration file and the errors found in it so far.
pub struct Document {
    pub file: PathBuf,
    pub root: Value,
    /// The name of the poller being read, for messages that must name it
    /// beyond its place in the list.
    pub poller: Option<String>,
    locations: Locations,
    errors: Vec<ConfigError>,
}

impl Document {
    /// Reads and parses a file. A file that cannot be read or parsed gives
    /// its one error.
    pub fn read(file: &Path) -> Result<Document, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|err| ConfigError {
            file: file.to_owned(),
            position: None,
            path: String::new(),
            message: format!("cannot read the file: {err}"),
        })?;
        Document::parse(file, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Document, ConfigError> {
        if let Some(position) = too_deep(text) {
            return Err(ConfigError {
                file: file.to_owned(),
                position: Some(position),
                path: String::new(),
                message: format!(
                    "nested more than {MAX_DEPTH} levels deep; no pattoo configuration needs that"
                ),
            });
        }
        let root: Value = serde_norway::from_str(text).map_err(|err| ConfigError {
            file: file.to_owned(),
            position: err.location().map(|l| (l.line(), l.column())),
            path: String::new(),
            message: format!("not valid YAML: {}", strip_location(&err.to_string())),
        })?;
        Ok(Document {
            file: file.to_owned(),
            root,
            poller: None,
            locations: Locations::index(text),
            errors: Vec::new(),
        })
    }

    /// Records a problem at `path`.
    pub fn error(&mut self, path: &YamlPath, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            position: self.locations.find(path),
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// The errors in the order of the lines they point at, whatever order
    /// the checks ran in, so the list reads top to bottom like the file.
    /// Errors about the file as a whole (no position) come first.
    /// An unquoted scalar at `path` as it was written: `010001` where the
    /// parsed value is the number 10001.
    pub fn written(&self, path: &YamlPath) -> Option<&str> {
        self.locations.plain.get(path).map(String::as_str)
    }

    pub fn into_errors(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|error| error.position);
        self.errors
    }

    /// Logs a warning located at `path` (`file:line:column: path: ...`):
    /// for what a file says that is read, but not as written, such as a
    /// Python agent's setting taken the way that agent meant it.
    pub fn warn(&self, path: &YamlPath, message: &str) {
        let at = match self.position(path) {
            Some((line, column)) => format!("{}:{line}:{column}", self.file.display()),
            None => self.file.display().to_string(),
        };
        tracing::warn!(file = %self.file.display(), "{at}: {path}: {message}");
    }

    /// Where `path` (or its nearest known ancestor) starts in the file.
    pub fn position(&self, path: &YamlPath) -> Option<(usize, usize)> {
        self.locations.find(path)
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// How many problems have been recorded so far; a parser compares it
    /// before and after its own checks.
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// Deserializes `value` (found at `path`) into `T`, recording every
    /// problem serde finds.
    ///
    /// serde stops at the first problem, so this deserializes again after
    /// each one with the offending key removed: a typo'd key and a wrong
    /// type in the same section are both reported. What is left once the
    /// offending keys are gone is returned, so the caller goes on to find
    /// the problems in the rest (the errors already recorded make loading
    /// fail). It gives up once removing a key only leads to that key being
    /// reported missing.
    pub fn deserialize<T: DeserializeOwned>(
        &mut self,
        path: &YamlPath,
        value: &Value,
    ) -> Option<T> {
        let mut value = value.clone();
        let mut removed: Vec<(YamlPath, String)> = Vec::new();
        for _ in 0..64 {
            let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                // The offending keys are reported and left out; the rest is
                // returned so its own problems are found too.
                Ok(parsed) => return Some(parsed),
                Err(error) => error,
            };
            let at = path.join_tracked(error.path());
            let message = strip_location(&error.inner().to_string());
            if let Some(field) = backticked_after(&message, "missing field `") {
                if removed.iter().any(|(p, key)| *p == at && *key == field) {
                    return None; // a consequence of an error already reported
                }
            }
            // serde_path_to_error tracks the offending key itself for an
            // unknown field; older versions stop at the enclosing mapping.
            // Either way the error belongs to the key and the key is removed
            // from its mapping, so the next unknown key can be found.
            let unknown = backticked_after(&message, "unknown field `");
            let at = match &unknown {
                Some(field) if at.0.last() != Some(&Segment::Key(field.clone())) => at.key(field),
                _ => at,
            };
            self.error(&at, humanise(&message));
            // Only a key inside `value` can be taken out and the rest tried
            // again. An error about `value` itself (a missing field, a
            // number where a mapping belongs) ends the search: `at` is then
            // `path` or above it, and nothing below it can be removed.
            let Some((Segment::Key(key), relative)) =
                at.0.strip_prefix(path.0.as_slice())
                    .and_then(<[Segment]>::split_last)
            else {
                return None;
            };
            let key = key.clone();
            let was_removed = match lookup_mut(&mut value, &YamlPath(relative.to_vec())) {
                Some(Value::Mapping(map)) => map.remove(key.as_str()).is_some(),
                _ => false,
            };
            if !was_removed {
                return None;
            }
            removed.push((at.parent().unwrap_or_default(), key));
        }
        None
    }
}

/// The deepest nesting of mappings and lists a file may have. The deepest
/// real configuration is under ten; a limit checked before parsing keeps a
/// pathological file (100,000 brackets) from costing seconds to refuse.
pub const MAX_DEPTH: usize = 64;

/// Where a document first nests deeper than [`MAX_DEPTH`], if it does.
/// Stops reading there, so it costs no more than the part read.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(event) => event,
            // The scanner has a nesting limit of its own, past ours.
            Err(error) if error.to_string().contains("recursion limit") => {
                let at = error.marker();
                return Some((at.line(), at.col() + 1));
            }
            Err(_) => return None, // a syntax error: the YAML reader says where
        };
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some((span.start.line(), span.start.col() + 1));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// serde names the Rust type it wanted ("expected struct RawApi"); an
/// operator wants to know it is a mapping of keys to values.
fn humanise(message: &str) -> String {
    match message.find(", expected struct ") {
        Some(at) => format!(
            "{}, expected a mapping of keys to values",
            message.get(..at).unwrap_or(message)
        ),
        None => message.to_owned(),
    }
}

fn lookup_mut<'a>(value: &'a mut Value, path: &YamlPath) -> Option<&'a mut Value> {
    let mut current = value;
    for segment in &path.0 {
        current = match (segment, current) {
            (Segment::Key(key), Value::Mapping(map)) => map.get_mut(key.as_str())?,
            (Segment::Index(i), Value::Sequence(seq)) => seq.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

fn backticked_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(name, _)| name.to_owned())
}

/// serde_norway writes " at line L column C" into its messages, at the end
/// or mid-sentence ("... at line 6 column 13, while parsing a flow
/// sequence"); the position is reported separately, so drop it from the
/// text wherever it is.
fn strip_location(message: &str) -> String {
    let mut text = message.to_owned();
    let mut from = 0;
    while let Some(found) = text[from..].find(" at line ") {
        let start = from + found;
        let rest = &text[start + " at line ".len()..];
        let line_digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after_line = &rest[line_digits..];
        let column_len = match after_line.strip_prefix(" column ") {
            Some(col) if line_digits > 0 => {
                let digits = col.len() - col.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                (digits > 0).then_some(" column ".len() + digits)
            }
            _ => None,
        };
        match column_len {
            Some(len) => {
                let end = start + " at line ".len() + line_digits + len;
                text.replace_range(start..end, "");
                from = start;
            }
            None => from = start + 1,
        }
    }
    text
}

/// The value of `section`, the one top-level key a file may have, with an
/// error recorded for every other top-level key. `None` when the document
/// is not a mapping (also recorded); `Some((path, None))` when the section
/// is absent.
pub fn only_section(doc: &mut Document, section: &str) -> Option<(YamlPath, Option<Value>)> {
    let root = doc.root.clone();
    let top = YamlPath::root();
    let map = expect_mapping(doc, &top, &root)?;
    for key in map.keys() {
        if key.as_str() != Some(section) {
            doc.error(
                &top.key(key.as_str().unwrap_or_default()),
                format!("unknown section: expected only `{section}`"),
            );
        }
    }
    Some((top.key(section), map.get(section).cloned()))
}

/// The mapping at `value`, or an error recorded at `path`.
pub fn expect_mapping<'a>(
    doc: &mut Document,
    path: &YamlPath,
    value: &'a Value,
) -> Option<&'a Mapping> {
    match value {
        Value::Mapping(map) => Some(map),
        other => {
            doc.error(
                path,
                format!(
                    "expected a mapping of keys to values, found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

/// A short description of a YAML value's kind for error messages.
pub fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::strip_location;

    #[test]
    fn a_document_nested_100000_deep_is_refused_before_it_is_parsed() {
        for text in [
            "[".repeat(100_000),
            "- ".repeat(100_000) + "1",
            "{a: ".repeat(100_000),
        ] {
            let error = super::Document::parse(std::path::Path::new("deep.yaml"), &text)
                .err()
                .expect("refused");
            assert!(
                error.message.starts_with("nested more than 64 levels"),
                "{error}"
            );
            assert_eq!(error.position.map(|p| p.0), Some(1), "{error}");
        }
        let fine = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        assert!(super::Document::parse(std::path::Path::new("ok.yaml"), &fine).is_ok());
    }

    #[test]
    fn strip_location_drops_a_position_at_the_end_or_mid_sentence() {
        assert_eq!(
            strip_location("mapping values are not allowed in this context at line 3 column 17"),
            "mapping values are not allowed in this context"
        );
        assert_eq!(
            strip_location(
                "did not find expected ',' or ']' at line 6 column 13, while parsing a flow sequence at line 5 column 16"
            ),
            "did not find expected ',' or ']', while parsing a flow sequence"
        );
        assert_eq!(
            strip_location("unknown field `at line 2`"),
            "unknown field `at line 2`"
        );
    }
}
