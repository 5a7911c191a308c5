//! The `prometheus` format: the Prometheus text exposition format (0.0.4,
//! which OpenMetrics text also reads as).
//!
//! Each sample becomes a datapoint: the metric name is its key, its labels
//! are its metadata (in the order written), its timestamp (milliseconds)
//! replaces the read time. The `# TYPE` of the metric's family sets the
//! data type: counters, histogram buckets and counts become `counter64`;
//! gauges, sums, quantiles and untyped samples become `float`. Other
//! comments and `# HELP` lines are skipped.
//!
//! A line that breaks the syntax fails the payload with its line and
//! column. A value that cannot be sent (`NaN`, `+Inf`) is skipped alone.

use std::iter::Peekable;
use std::str::CharIndices;

use rustc_hash::FxHashMap;

use super::{number, text, FormatError, Parsed, Payload, Skipped};
use crate::model::{DataPoint, DataType, Metadata, TargetData};

const FORMAT: &str = "prometheus";

pub fn parse(payload: &Payload<'_>) -> Result<Parsed, FormatError> {
    let text = text(FORMAT, payload.bytes)?;
    let mut parsed = Parsed::default();
    let mut target = TargetData::new(payload.default_target);
    let mut families: FxHashMap<&str, &str> = FxHashMap::default();
    // Samples of a family come together: the last name's type is kept.
    let mut last_type: Option<(&str, DataType)> = None;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if let (Some("TYPE"), Some(name), Some(kind)) =
                (words.next(), words.next(), words.next())
            {
                families.insert(name, kind);
                last_type = None;
            }
            continue;
        }
        let sample = Line {
            text: line,
            number: line_no,
        }
        .sample()?;
        let data_type = match last_type {
            Some((name, data_type)) if name == sample.name => data_type,
            _ => {
                let data_type = data_type(&families, sample.name);
                last_type = Some((sample.name, data_type));
                data_type
            }
        };
        match number(sample.value) {
            Ok(value) => {
                target.datapoints.push(DataPoint {
                    key: sample.name.to_owned().into(),
                    value,
                    data_type,
                    timestamp_ms: sample.timestamp_ms.unwrap_or(payload.read_at_ms),
                    metadata: sample.labels,
                });
            }
            Err(reason) => parsed.skipped.push(Skipped {
                location: format!("line {line_no}"),
                reason: format!("{}: {reason}", sample.name),
            }),
        }
    }
    parsed.targets.push(target);
    Ok(parsed)
}

/// The data type of a sample, from its family's `# TYPE`.
fn data_type(families: &FxHashMap<&str, &str>, name: &str) -> DataType {
    if let Some(kind) = families.get(name) {
        return match *kind {
            "counter" => DataType::Counter64,
            _ => DataType::Float,
        };
    }
    for suffix in ["_total", "_bucket", "_count", "_sum", "_created"] {
        let Some(family) = name.strip_suffix(suffix) else {
            continue;
        };
        let Some(kind) = families.get(family) else {
            continue;
        };
        return match (*kind, suffix) {
            ("counter", "_total") => DataType::Counter64,
            ("histogram" | "gaugehistogram" | "summary", "_bucket" | "_count") => {
                DataType::Counter64
            }
            _ => DataType::Float,
        };
    }
    DataType::Float
}

struct Sample<'a> {
    name: &'a str,
    labels: Vec<Metadata>,
    value: &'a str,
    timestamp_ms: Option<u64>,
}

struct Line<'a> {
    text: &'a str,
    number: usize,
}

impl<'a> Line<'a> {
    fn error(&self, at: usize, reason: impl Into<String>) -> FormatError {
        let column = self.text[..at].chars().count() + 1;
        FormatError::new(
            FORMAT,
            format!("line {} column {column}", self.number),
            reason,
        )
    }

    fn found(&self, at: usize) -> String {
        match self.text[at..].chars().next() {
            Some(c) => format!("{c:?}"),
            None => "the end of the line".to_owned(),
        }
    }

    fn after_label(&self, at: usize) -> FormatError {
        self.error(
            at,
            format!(
                "expected `,` or `}}` after a label, found {}",
                self.found(at)
            ),
        )
    }

    fn sample(&self) -> Result<Sample<'a>, FormatError> {
        let text = self.text;
        let mut chars = text.char_indices().peekable();
        skip_spaces(&mut chars);
        let start = position(&mut chars, text);
        let name_end = take_while(&mut chars, text, |i, c| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
        if name_end == start {
            return Err(self.error(
                start,
                format!("expected a metric name, found {}", self.found(start)),
            ));
        }
        let name = &text[start..name_end];
        skip_spaces(&mut chars);
        let mut labels = Vec::new();
        if chars.peek().is_some_and(|(_, c)| *c == '{') {
            chars.next();
            loop {
                skip_spaces(&mut chars);
                let at = position(&mut chars, text);
                if chars.peek().is_some_and(|(_, c)| *c == '}') {
                    chars.next();
                    break;
                }
                let label_end = take_while(&mut chars, text, |i, c| {
                    c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit())
                });
                if label_end == at {
                    return Err(self.error(
                        at,
                        format!("expected a label name or `}}`, found {}", self.found(at)),
                    ));
                }
                let label = &text[at..label_end];
                skip_spaces(&mut chars);
                let at = position(&mut chars, text);
                if chars.next().map(|(_, c)| c) != Some('=') {
                    return Err(self.error(
                        at,
                        format!("expected `=` after label {label}, found {}", self.found(at)),
                    ));
                }
                skip_spaces(&mut chars);
                let at = position(&mut chars, text);
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(self.error(
                        at,
                        format!(
                            "expected a quoted value for label {label}, found {}",
                            self.found(at)
                        ),
                    ));
                }
                // Most values have no escapes: taken whole.
                let value_start = position(&mut chars, text);
                let rest = &text[value_start..];
                if let Some(end) = rest
                    .find(['"', '\\'])
                    .filter(|&end| rest.as_bytes()[end] == b'"')
                {
                    while chars.next_if(|(i, _)| *i <= value_start + end).is_some() {}
                    labels.push(Metadata::new(label, &rest[..end]));
                    skip_spaces(&mut chars);
                    let at = position(&mut chars, text);
                    match chars.next().map(|(_, c)| c) {
                        Some(',') => continue,
                        Some('}') => break,
                        _ => return Err(self.after_label(at)),
                    }
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(self.error(
                                text.len(),
                                format!("the value of label {label} has no closing `\"`"),
                            ))
                        }
                        Some((_, '"')) => break,
                        Some((at, '\\')) => {
                            match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, '\\')) => value.push('\\'),
                                Some((_, '"')) => value.push('"'),
                                _ => return Err(self.error(
                                    at,
                                    "expected \\\\, \\\" or \\n after a backslash in a label value",
                                )),
                            }
                        }
                        Some((_, c)) => value.push(c),
                    }
                }
                labels.push(Metadata::new(label, value));
                skip_spaces(&mut chars);
                let at = position(&mut chars, text);
                match chars.next().map(|(_, c)| c) {
                    Some(',') => {}
                    Some('}') => break,
                    _ => return Err(self.after_label(at)),
                }
            }
        }
        skip_spaces(&mut chars);
        let rest_start = position(&mut chars, text);
        let mut words = text[rest_start..].split_whitespace();
        let Some(value) = words.next() else {
            return Err(self.error(
                rest_start,
                format!("expected a value after {name}, found the end of the line"),
            ));
        };
        let timestamp_ms = match words.next() {
            None => None,
            Some(word) => match word.parse::<u64>() {
                Ok(ms) => Some(ms),
                Err(_) => {
                    let at = word.as_ptr() as usize - text.as_ptr() as usize;
                    return Err(self.error(
                        at,
                        format!("expected a timestamp in milliseconds, found {word:?}"),
                    ));
                }
            },
        };
        if let Some(extra) = words.next() {
            let at = extra.as_ptr() as usize - text.as_ptr() as usize;
            return Err(self.error(
                at,
                format!("expected the end of the line after the timestamp, found {extra:?}"),
            ));
        }
        Ok(Sample {
            name,
            labels,
            value,
            timestamp_ms,
        })
    }
}

fn skip_spaces(chars: &mut Peekable<CharIndices<'_>>) {
    while chars.peek().is_some_and(|(_, c)| *c == ' ' || *c == '\t') {
        chars.next();
    }
}

fn position(chars: &mut Peekable<CharIndices<'_>>, text: &str) -> usize {
    chars.peek().map_or(text.len(), |(i, _)| *i)
}

/// Consumes characters while `accept(index within the token, char)` holds;
/// returns the byte offset where the token ends.
fn take_while(
    chars: &mut Peekable<CharIndices<'_>>,
    text: &str,
    accept: impl Fn(usize, char) -> bool,
) -> usize {
    let mut n = 0;
    while let Some((_, c)) = chars.peek() {
        if !accept(n, *c) {
            break;
        }
        chars.next();
        n += 1;
    }
    position(chars, text)
}
