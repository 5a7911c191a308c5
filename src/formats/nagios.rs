//! The `nagios` format: Nagios plugin output and exit status, so any of the
//! thousands of existing plugins can be charted.
//!
//! ```text
//! DISK OK - free space: / 3326 MB (56%) | /=2643MB;5948;5958;0;5968 'inodes used'=12%
//! long text, more lines...
//! | more=1;;;; perfdata=2s
//! ```
//!
//! Perfdata follows the first `|` of the first line, and the first `|` of
//! the long text up to the end. Each `label=value[UOM];warn;crit;min;max`
//! becomes a datapoint keyed by its label: `counter64` when the unit is `c`,
//! `float` otherwise. The unit is metadata that enters the checksum; the
//! thresholds and range are metadata that does not, so retuning a check
//! keeps its chart.
//!
//! The plugin's exit status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) becomes
//! the `state` datapoint (`int`), first. Output that did not come from a
//! command (HTTP) has no exit status and so no `state`.

use std::sync::Arc;

use super::{text, FormatError, Parsed, Payload, Skipped};
use crate::model::{DataPoint, DataType, Metadata, TargetData, Text, Value};

const FORMAT: &str = "nagios";

/// The key of the datapoint that carries the plugin's exit status.
pub const STATE_KEY: &str = "state";

pub fn parse(payload: &Payload<'_>) -> Result<Parsed, FormatError> {
    // Labels, units and thresholds are a few bytes each, five or six per
    // item: cut from one shared copy of the payload, none is allocated.
    let whole = Arc::new(text(FORMAT, payload.bytes)?.to_owned());
    let text: &str = &whole;
    let mut parsed = Parsed::default();
    let mut target = TargetData::new(payload.default_target);
    if let Some(status) = payload.exit_status {
        if !(0..=3).contains(&status) {
            return Err(FormatError::new(
                FORMAT,
                "exit status",
                format!(
                    "expected 0 (OK), 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN), found {status}: the plugin did not run properly"
                ),
            ));
        }
        target.datapoints.push(DataPoint::new(
            STATE_KEY,
            Value::Int(i64::from(status)),
            DataType::Int,
            payload.read_at_ms,
        ));
    }
    // Every perfdata item has one `=` outside its label, so the list need
    // not be regrown and copied as it fills; capped, so that text full of
    // `=` reserves no more than a plausible payload of that size.
    let items = text.bytes().filter(|&b| b == b'=').count();
    target.datapoints.reserve(items.min(text.len() / 16));
    let mut in_long_perfdata = false;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let perfdata_start = if index == 0 || !in_long_perfdata {
            match line.find('|') {
                Some(bar) => {
                    in_long_perfdata = index > 0;
                    bar + 1
                }
                None => continue,
            }
        } else {
            0
        };
        read_perfdata(
            &whole,
            line,
            perfdata_start,
            line_no,
            payload.read_at_ms,
            &mut target,
            &mut parsed.skipped,
        )?;
    }
    parsed.targets.push(target);
    Ok(parsed)
}

fn read_perfdata(
    whole: &Arc<String>,
    line: &str,
    start: usize,
    line_no: usize,
    read_at_ms: u64,
    target: &mut TargetData,
    skipped: &mut Vec<Skipped>,
) -> Result<(), FormatError> {
    let error = |at: usize, reason: String| {
        FormatError::new(
            FORMAT,
            format!("line {line_no} column {}", line[..at].chars().count() + 1),
            reason,
        )
    };
    let mut at = start;
    loop {
        let rest = &line[at..];
        let trimmed = rest.trim_start();
        at += rest.len() - trimmed.len();
        if trimmed.is_empty() {
            return Ok(());
        }
        let label_start = at;
        let plain_quoted = trimmed.strip_prefix('\'').and_then(|quoted| {
            let end = quoted.bytes().position(|b| b == b'\'')?;
            (!quoted[end + 1..].starts_with('\'')).then_some(end)
        });
        let label = if let Some(end) = plain_quoted {
            // A quoted label without `''` in it (nearly all): taken whole.
            at += end + 2;
            Text::slice(whole, &trimmed[1..end + 1])
        } else if let Some(quoted) = trimmed.strip_prefix('\'') {
            // A quoted label may hold spaces and `=`; `''` is a quote.
            let mut label = String::with_capacity(quoted.len().min(64));
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if quoted[i + 1..].starts_with('\'') {
                        label.push('\'');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    label.push(c);
                }
            }
            let Some(end) = end else {
                return Err(error(
                    label_start,
                    "the quoted label has no closing `'`".to_owned(),
                ));
            };
            at += 1 + end;
            Text::from(label)
        } else {
            let end = find_whitespace_or(trimmed, b'=').unwrap_or(trimmed.len());
            at += end;
            Text::slice(whole, &trimmed[..end])
        };
        if label.trim().is_empty() {
            return Err(error(
                label_start,
                "expected a perfdata label before `=`".to_owned(),
            ));
        }
        if !line[at..].starts_with('=') {
            let found = match line[at..].chars().next() {
                Some(c) => format!("{c:?}"),
                None => "the end of the line".to_owned(),
            };
            return Err(error(
                at,
                format!("expected `=` after the label {label:?}, found {found}"),
            ));
        }
        at += 1;
        let token_end = find_whitespace_or(&line[at..], b' ').map_or(line.len(), |i| at + i);
        let token = &line[at..token_end];
        at = token_end;
        match perfdata_item(whole, token, read_at_ms) {
            Ok(mut datapoint) => {
                datapoint.key = label;
                target.datapoints.push(datapoint)
            }
            Err(reason) => skipped.push(Skipped {
                location: format!("line {line_no}"),
                reason: format!("{label}: {reason}"),
            }),
        }
    }
}

/// `value[UOM];warn;crit;min;max`, everything after the value optional.
/// The datapoint's key is left empty for the caller to move the label in.
fn perfdata_item(whole: &Arc<String>, token: &str, read_at_ms: u64) -> Result<DataPoint, String> {
    // The value and up to four thresholds; a fifth `;` and what follows
    // it are ignored, as before.
    let mut fields = [""; 5];
    let mut count = 0;
    let mut rest = token;
    loop {
        let end = rest.bytes().position(|b| b == b';');
        if count < fields.len() {
            fields[count] = &rest[..end.unwrap_or(rest.len())];
            count += 1;
        }
        match end {
            Some(end) => rest = &rest[end + 1..],
            None => break,
        }
    }
    let first = fields[0];
    if first == "U" {
        return Err("the plugin could not determine the value (U)".to_owned());
    }
    let digits = first
        .bytes()
        .position(|b| !(b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+')))
        .unwrap_or(first.len());
    let (number, unit) = first.split_at(digits);
    if number.is_empty() {
        return Err(format!("expected a number, found {first:?}"));
    }
    let value = super::number(number)?;
    let data_type = if unit == "c" {
        DataType::Counter64
    } else {
        DataType::Float
    };
    let mut datapoint = DataPoint::new(String::new(), value, data_type, read_at_ms);
    let thresholds = fields[1..].iter().filter(|f| !f.is_empty()).count();
    datapoint
        .metadata
        .reserve_exact(usize::from(!unit.is_empty()) + thresholds);
    if !unit.is_empty() {
        datapoint
            .metadata
            .push(Metadata::new(Text::Static("uom"), Text::slice(whole, unit)));
    }
    for (name, threshold) in ["warn", "crit", "min", "max"].into_iter().zip(&fields[1..]) {
        if !threshold.is_empty() {
            datapoint.metadata.push(Metadata::without_checksum(
                Text::Static(name),
                Text::slice(whole, threshold),
            ));
        }
    }
    Ok(datapoint)
}

/// The byte offset of the first whitespace character (as
/// `char::is_whitespace` has it) or of `also` (an ASCII byte), looked for
/// byte by byte: most of perfdata is ASCII.
fn find_whitespace_or(text: &str, also: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        if b.is_ascii() {
            if b == also || matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ') {
                return Some(at);
            }
            at += 1;
        } else {
            let c = text[at..].chars().next().expect("at a character boundary");
            if c.is_whitespace() {
                return Some(at);
            }
            at += c.len_utf8();
        }
    }
    None
}
