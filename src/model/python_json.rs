//! JSON as Python's `json` module reads and writes it, for the two places
//! where a body passes through Python code unchanged in meaning but
//! rewritten in form:
//!
//! - a Python hub (`pattoo_agent_os_hubd`) reads a spoke's answer with
//!   `json.loads` and posts it with `requests.post(json=...)`, which writes
//!   `json.dumps(value, allow_nan=False)`: separators `", "` and `": "`,
//!   keys in the order read, non-ASCII as `\uXXXX` ([`dumps`]);
//! - a Python spoke (Flask's `jsonify`) answers compact, keys sorted,
//!   non-ASCII as `\uXXXX`, with a trailing newline ([`jsonify`]).
//!
//! What `json.loads` does to a value is kept: an integer stays an integer
//! of any size, written with the digits read (`-0` becomes `0`, as
//! Python's `int` makes it); a number with a fraction or an exponent
//! becomes a float and is written as Python's `repr` writes it (`1.0`,
//! `1e+20`, `0.1` for `0.1000`); a number too large for a float is refused,
//! as `allow_nan=False` refuses the infinity it becomes, and so are `NaN`
//! and `Infinity`; strings are compared and written as their UTF-16 code
//! units, so a lone surrogate written `\ud800` survives; an object whose
//! key repeats keeps the key's first place and its last value, as a Python
//! dict does. Pure: no I/O.

use std::collections::HashMap;
use std::fmt;

use super::python::write_float;

/// Deeper nesting is refused: a pattoo body is four levels deep, and the
/// parser must not exhaust the stack on a hostile answer.
const MAX_DEPTH: usize = 64;

/// A JSON value as Python holds it after `json.loads`.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// An integer, as the decimal digits Python's `str(int)` writes.
    Int(String),
    /// A finite float.
    Float(f64),
    Str(PyStr),
    Array(Vec<Json>),
    /// Members in the order their keys first appeared.
    Object(Vec<(PyStr, Json)>),
}

/// A Python string: UTF-16 code units, so that lone surrogates (which
/// `json.loads` accepts from `\ud800`) are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PyStr(Vec<u16>);

impl PyStr {
    /// Python orders strings by code point; UTF-16 units order the same
    /// except across the surrogate range, which only matters for keys no
    /// pattoo body has. Integer keys (the pair ids of a body) are sorted as
    /// Python sorts the integers they were.
    fn as_integer(&self) -> Option<u64> {
        if self.0.is_empty()
            || self.0.len() > 19
            || (self.0.len() > 1 && self.0[0] == u16::from(b'0'))
        {
            return None;
        }
        let mut n = 0u64;
        for &unit in &self.0 {
            let digit = (unit as u32)
                .checked_sub(u32::from(b'0'))
                .filter(|d| *d < 10)?;
            n = n * 10 + u64::from(digit);
        }
        Some(n)
    }
}

impl From<&str> for PyStr {
    fn from(text: &str) -> Self {
        PyStr(text.encode_utf16().collect())
    }
}

impl PyStr {
    /// Whether the text holds a surrogate that is not half of a pair: not
    /// text any UTF-8 store can keep.
    pub fn has_lone_surrogate(&self) -> bool {
        char::decode_utf16(self.0.iter().copied()).any(|c| c.is_err())
    }
}

impl Json {
    /// Whether any text in the value, keys included, holds a lone
    /// surrogate ([`PyStr::has_lone_surrogate`]).
    pub fn has_lone_surrogate(&self) -> bool {
        match self {
            Json::Str(text) => text.has_lone_surrogate(),
            Json::Array(items) => items.iter().any(Json::has_lone_surrogate),
            Json::Object(members) => members
                .iter()
                .any(|(key, value)| key.has_lone_surrogate() || value.has_lone_surrogate()),
            Json::Null | Json::Bool(_) | Json::Int(_) | Json::Float(_) => false,
        }
    }
}

impl fmt::Display for PyStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf16_lossy(&self.0))
    }
}

/// Why a text is not JSON as Python reads it (or not JSON Python would
/// write again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct JsonError {
    pub what: String,
    pub at: usize,
}

/// Parses `bytes` as `json.loads(bytes)` does, for UTF-8 text. A UTF-8
/// byte order mark is skipped, as `json.loads` of bytes skips it (the
/// Python hub decodes the answer first, and so refused one).
pub fn loads(bytes: &[u8]) -> Result<Json, JsonError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| JsonError {
        what: "not UTF-8 text".to_owned(),
        at: e.valid_up_to(),
    })?;
    let mut parser = Parser { text, at: 0 };
    parser.whitespace();
    let value = parser.value(0)?;
    parser.whitespace();
    if parser.at != text.len() {
        return Err(parser.error("extra data after the value"));
    }
    Ok(value)
}

/// `json.dumps(value)` with Python's default separators: what a Python hub
/// posts for a value it read.
pub fn dumps(value: &Json) -> String {
    let mut out = String::new();
    write(&mut out, value, &Style::DUMPS);
    out
}

/// Flask's `jsonify(value)`: compact, keys sorted, a trailing newline.
pub fn jsonify(value: &Json) -> String {
    let mut out = String::new();
    write(&mut out, value, &Style::JSONIFY);
    out.push('\n');
    out
}

struct Style {
    item: &'static str,
    key: &'static str,
    sort_keys: bool,
}

impl Style {
    const DUMPS: Style = Style {
        item: ", ",
        key: ": ",
        sort_keys: false,
    };
    const JSONIFY: Style = Style {
        item: ",",
        key: ":",
        sort_keys: true,
    };
}

fn write(out: &mut String, value: &Json, style: &Style) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Int(digits) => out.push_str(digits),
        Json::Float(v) => write_float(out, *v),
        Json::Str(text) => write_str(out, text),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(style.item);
                }
                write(out, item, style);
            }
            out.push(']');
        }
        Json::Object(members) => {
            let mut order: Vec<&(PyStr, Json)> = members.iter().collect();
            if style.sort_keys {
                // Python sorts a dict's keys as they are: integers as
                // numbers, strings as strings.
                if members.iter().all(|(key, _)| key.as_integer().is_some()) {
                    order.sort_by_key(|(key, _)| key.as_integer());
                } else {
                    order.sort_by(|a, b| a.0.cmp(&b.0));
                }
            }
            out.push('{');
            for (i, (key, item)) in order.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(style.item);
                }
                write_str(out, key);
                out.push_str(style.key);
                write(out, item, style);
            }
            out.push('}');
        }
    }
}

/// Writes a string as Python does with `ensure_ascii=True`.
fn write_str(out: &mut String, text: &PyStr) {
    out.push('"');
    for &unit in &text.0 {
        match unit {
            0x22 => out.push_str("\\\""),
            0x5c => out.push_str("\\\\"),
            0x0a => out.push_str("\\n"),
            0x0d => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            0x20..=0x7e => out.push(unit as u8 as char),
            _ => {
                use fmt::Write;
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out.push('"');
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> JsonError {
        JsonError {
            what: what.to_owned(),
            at: self.at,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.text[self.at..].starts_with(literal) {
            self.at += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'-' | b'0'..=b'9') => {
                if self.text[self.at..].starts_with("-Infinity") {
                    return Err(self.error("-Infinity cannot be posted"));
                }
                self.number()
            }
            _ if self.eat("null") => Ok(Json::Null),
            _ if self.eat("true") => Ok(Json::Bool(true)),
            _ if self.eat("false") => Ok(Json::Bool(false)),
            _ if self.text[self.at..].starts_with("NaN")
                || self.text[self.at..].starts_with("Infinity") =>
            {
                Err(self.error("NaN and Infinity cannot be posted"))
            }
            None => Err(self.error("expected a value, found the end")),
            _ => Err(self.error("expected a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, JsonError> {
        self.at += 1;
        let mut members: Vec<(PyStr, Json)> = Vec::new();
        let mut index: HashMap<PyStr, usize> = HashMap::new();
        self.whitespace();
        if self.eat("}") {
            return Ok(Json::Object(members));
        }
        loop {
            self.whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key in double quotes"));
            }
            let key = self.string()?;
            self.whitespace();
            if !self.eat(":") {
                return Err(self.error("expected `:` after a key"));
            }
            self.whitespace();
            let value = self.value(depth + 1)?;
            match index.get(&key) {
                Some(&i) => members[i].1 = value,
                None => {
                    index.insert(key.clone(), members.len());
                    members.push((key, value));
                }
            }
            self.whitespace();
            if self.eat("}") {
                return Ok(Json::Object(members));
            }
            if !self.eat(",") {
                return Err(self.error("expected `,` or `}` in an object"));
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, JsonError> {
        self.at += 1;
        let mut items = Vec::new();
        self.whitespace();
        if self.eat("]") {
            return Ok(Json::Array(items));
        }
        loop {
            self.whitespace();
            items.push(self.value(depth + 1)?);
            self.whitespace();
            if self.eat("]") {
                return Ok(Json::Array(items));
            }
            if !self.eat(",") {
                return Err(self.error("expected `,` or `]` in a list"));
            }
        }
    }

    /// `(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?`, Python's pattern.
    fn number(&mut self) -> Result<Json, JsonError> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut end = start;
        if bytes.get(end) == Some(&b'-') {
            end += 1;
        }
        let digits = |from: usize| {
            bytes[from..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        match bytes.get(end) {
            Some(b'0') => end += 1,
            Some(b'1'..=b'9') => end += digits(end),
            _ => return Err(self.error("expected a value")),
        }
        let integer_end = end;
        if bytes.get(end) == Some(&b'.') && digits(end + 1) > 0 {
            end += 1 + digits(end + 1);
        }
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
            let exponent = digits(end + 1 + sign);
            if exponent > 0 {
                end += 1 + sign + exponent;
            }
        }
        self.at = end;
        let text = &self.text[start..end];
        if end == integer_end {
            let digits = text.trim_start_matches('-');
            return Ok(Json::Int(if digits == "0" || !text.starts_with('-') {
                digits.to_owned()
            } else {
                text.to_owned()
            }));
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Json::Float(v)),
            _ => Err(JsonError {
                what: format!("{text} is too large for a float and cannot be posted"),
                at: start,
            }),
        }
    }

    fn string(&mut self) -> Result<PyStr, JsonError> {
        self.at += 1;
        let mut units = Vec::new();
        loop {
            let rest = &self.text[self.at..];
            let plain = rest
                .bytes()
                .take_while(|b| *b != b'"' && *b != b'\\' && *b >= 0x20)
                .count();
            units.extend(rest[..plain].encode_utf16());
            self.at += plain;
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(PyStr(units));
                }
                Some(b'\\') => {
                    self.at += 1;
                    let unit = match self.peek() {
                        Some(b'"') => 0x22,
                        Some(b'\\') => 0x5c,
                        Some(b'/') => 0x2f,
                        Some(b'b') => 0x08,
                        Some(b'f') => 0x0c,
                        Some(b'n') => 0x0a,
                        Some(b'r') => 0x0d,
                        Some(b't') => 0x09,
                        Some(b'u') => {
                            let hex = self
                                .text
                                .get(self.at + 1..self.at + 5)
                                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                                .ok_or_else(|| self.error("invalid \\u escape"))?;
                            let unit = u16::from_str_radix(hex, 16).expect("four hex digits");
                            self.at += 4;
                            unit
                        }
                        _ => return Err(self.error("invalid escape")),
                    };
                    self.at += 1;
                    units.push(unit);
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(text: &str) -> String {
        dumps(&loads(text.as_bytes()).unwrap())
    }

    #[test]
    fn numbers_keep_the_kind_and_take_the_form_python_gives_them() {
        assert_eq!(
            relayed(
                r#"[0, -0, 1.0, 1e20, 1E+2, 0.1000, -0.0, 12345678901234567890123, 2.5e-7, 300000]"#
            ),
            "[0, 0, 1.0, 1e+20, 100.0, 0.1, -0.0, 12345678901234567890123, 2.5e-07, 300000]"
        );
    }

    #[test]
    fn text_is_written_in_ascii_with_python_escapes() {
        assert_eq!(
            relayed(
                r#"["caf\u00e9", "café", "😀", "\ud83d\ude00", "\ud800", "a\/b", "\u0041\t\"\\", "\u007f"]"#
            ),
            r#"["caf\u00e9", "caf\u00e9", "\ud83d\ude00", "\ud83d\ude00", "\ud800", "a/b", "A\t\"\\", "\u007f"]"#
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        assert_eq!(
            relayed(r#"{"a": 1, "b": 2, "a": 3}"#),
            r#"{"a": 3, "b": 2}"#
        );
    }

    #[test]
    fn jsonify_sorts_keys_and_integer_keys_as_numbers() {
        let value = loads(br#"{"b": {"10": 1, "9": 2, "0": 3}, "a": ["\u00e9", 1.0]}"#).unwrap();
        assert_eq!(
            jsonify(&value),
            "{\"a\":[\"\\u00e9\",1.0],\"b\":{\"0\":3,\"9\":2,\"10\":1}}\n"
        );
    }

    #[test]
    fn what_python_refuses_to_read_or_to_post_is_an_error() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{'a': 1}",
            "NaN",
            "[Infinity]",
            "[-Infinity]",
            "1e400",
            "\"a\tb\"",
            "\"\\x\"",
            "01",
            "[1] [2]",
            "<html></html>",
        ] {
            assert!(loads(bad.as_bytes()).is_err(), "{bad:?} was accepted");
        }
        assert!(loads(b"\xff").is_err());
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(loads(deep.as_bytes()).is_err());
    }

    #[test]
    fn whitespace_and_a_byte_order_mark_around_the_value_are_accepted() {
        assert_eq!(
            loads(b"\xef\xbb\xbf \r\n{\"a\" : [ ] }\n").unwrap(),
            Json::Object(vec![(
                PyStr("a".encode_utf16().collect()),
                Json::Array(vec![])
            )])
        );
    }
}
