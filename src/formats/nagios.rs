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

use super::{text, FormatError, Parsed, Payload, Skipped};
use crate::model::{DataPoint, DataType, Metadata, TargetData, Value};

const FORMAT: &str = "nagios";

/// The key of the datapoint that carries the plugin's exit status.
pub const STATE_KEY: &str = "state";

pub fn parse(payload: &Payload<'_>) -> Result<Parsed, FormatError> {
    let text = text(FORMAT, payload.bytes)?;
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
            let end = quoted.find('\'')?;
            (!quoted[end + 1..].starts_with('\'')).then_some(end)
        });
        let label = if let Some(end) = plain_quoted {
            // A quoted label without `''` in it (nearly all): taken whole.
            at += end + 2;
            trimmed[1..end + 1].to_owned()
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
            label
        } else {
            let end = trimmed
                .find(|c: char| c == '=' || c.is_whitespace())
                .unwrap_or(trimmed.len());
            at += end;
            trimmed[..end].to_owned()
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
        let token_end = line[at..]
            .find(char::is_whitespace)
            .map_or(line.len(), |i| at + i);
        let token = &line[at..token_end];
        at = token_end;
        match perfdata_item(token, read_at_ms) {
            Ok(mut datapoint) => {
                datapoint.key = label.into();
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
fn perfdata_item(token: &str, read_at_ms: u64) -> Result<DataPoint, String> {
    let mut fields = token.split(';');
    let first = fields.next().unwrap_or_default();
    if first == "U" {
        return Err("the plugin could not determine the value (U)".to_owned());
    }
    let digits = first
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
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
    let thresholds = fields.clone().take(4).filter(|f| !f.is_empty()).count();
    datapoint
        .metadata
        .reserve_exact(usize::from(!unit.is_empty()) + thresholds);
    if !unit.is_empty() {
        datapoint.metadata.push(Metadata::new("uom", unit));
    }
    for name in ["warn", "crit", "min", "max"] {
        match fields.next() {
            Some(threshold) if !threshold.is_empty() => datapoint
                .metadata
                .push(Metadata::without_checksum(name, threshold)),
            _ => {}
        }
    }
    Ok(datapoint)
}
