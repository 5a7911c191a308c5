//! Normalisation of keys and values, as the pattoo server expects them.

use std::borrow::Cow;

use super::python::parse_float;
use super::python_str;
use super::{DataType, DropReason, Value};

/// Lowercases and strips a key exactly as the Python agents' library does,
/// `str(key).lower().strip()`, and nothing more: `"  CPU Load  Avg "` becomes
/// `cpu load  avg` (the server, not the agent, later joins the words of
/// metadata keys with `_` in its own table; the checksum is the agent's).
pub fn normalise_key(key: &str) -> String {
    normalise_key_cow(key).into_owned()
}

/// [`normalise_key`] without allocating for keys that are already normal,
/// which nearly all keys written by programs are.
pub(crate) fn normalise_key_cow(key: &str) -> Cow<'_, str> {
    python_str::lower_strip(key)
}

/// Strips a metadata value as the Python library does (`str.strip()`).
pub(crate) fn normalise_metadata_value(value: &str) -> &str {
    python_str::strip(value)
}

/// Whether a normalised key is one the pattoo library reserves for itself.
pub(crate) fn is_reserved(normalised_key: &str) -> bool {
    normalised_key.contains("pattoo")
}

/// Converts a value to what the server receives for `data_type`, or says why
/// the datapoint must be dropped.
pub fn normalise_value(value: &Value, data_type: DataType) -> Result<Value, DropReason> {
    match (data_type, value) {
        (DataType::String, value) => Ok(Value::Text(value.to_python_string())),
        (_, Value::Float(v)) if !v.is_finite() => Err(DropReason::NotFinite),
        (_, Value::Int(_) | Value::UInt(_) | Value::UInt128(_) | Value::Float(_)) => {
            Ok(value.clone())
        }
        (_, Value::Text(text)) => {
            let parsed = parse_float(text).ok_or_else(|| DropReason::NotNumeric(text.clone()))?;
            if !parsed.is_finite() {
                return Err(DropReason::NotFinite);
            }
            if data_type == DataType::Int {
                // Python's int(float(text)): truncation toward zero.
                integer_from_float(parsed.trunc()).ok_or(DropReason::OutOfRange)
            } else {
                Ok(Value::Float(parsed))
            }
        }
    }
}

fn integer_from_float(v: f64) -> Option<Value> {
    // `as` saturates, so compare against the exact bounds first.
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&v) {
        Some(Value::Int(v as i64))
    } else if (0.0..18_446_744_073_709_551_616.0).contains(&v) {
        Some(Value::UInt(v as u64))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lowercased_and_stripped_keeping_inner_whitespace() {
        assert_eq!(normalise_key("  CPU Load  Avg "), "cpu load  avg");
        assert_eq!(normalise_key("Data\tCenter\n1"), "data\tcenter\n1");
        assert_eq!(normalise_key("already_fine"), "already_fine");
        assert_eq!(normalise_key("ÜNICODE Key"), "ünicode key");
        assert_eq!(
            normalise_key("\u{1f}Financial Year\u{1c}"),
            "financial year"
        );
        assert_eq!(normalise_key("   "), "");
    }

    #[test]
    fn metadata_values_are_stripped_of_python_whitespace_only_at_the_ends() {
        assert_eq!(
            normalise_metadata_value("\u{1e} Plant  7 \u{a0}"),
            "Plant  7"
        );
    }

    #[test]
    fn reserved_keys_contain_pattoo_in_any_case() {
        assert!(is_reserved(&normalise_key("My PATTOO tag")));
        assert!(!is_reserved("pat_too"));
    }

    #[test]
    fn int_takes_numbers_as_they_are_and_truncates_numeric_text() {
        let int = DataType::Int;
        assert_eq!(normalise_value(&Value::Int(42), int), Ok(Value::Int(42)));
        assert_eq!(
            normalise_value(&Value::Float(732.0), int),
            Ok(Value::Float(732.0))
        );
        assert_eq!(normalise_value(&"42".into(), int), Ok(Value::Int(42)));
        assert_eq!(normalise_value(&"3.7".into(), int), Ok(Value::Int(3)));
        assert_eq!(normalise_value(&"-3.7".into(), int), Ok(Value::Int(-3)));
        assert_eq!(
            normalise_value(&"1e19".into(), int),
            Ok(Value::UInt(10_000_000_000_000_000_000))
        );
        assert_eq!(
            normalise_value(&"1e30".into(), int),
            Err(DropReason::OutOfRange)
        );
        assert_eq!(
            normalise_value(&"abc".into(), int),
            Err(DropReason::NotNumeric("abc".into()))
        );
    }

    #[test]
    fn float_and_counters_turn_numeric_text_into_floats() {
        for data_type in [DataType::Float, DataType::Counter, DataType::Counter64] {
            assert_eq!(
                normalise_value(&"3.5".into(), data_type),
                Ok(Value::Float(3.5))
            );
            assert_eq!(
                normalise_value(&" 7 ".into(), data_type),
                Ok(Value::Float(7.0))
            );
            assert_eq!(
                normalise_value(&Value::Int(7), data_type),
                Ok(Value::Int(7))
            );
            assert_eq!(
                normalise_value(&Value::UInt(u64::MAX), data_type),
                Ok(Value::UInt(u64::MAX))
            );
            assert!(normalise_value(&"x".into(), data_type).is_err());
        }
    }

    #[test]
    fn nan_and_infinities_are_dropped() {
        for data_type in [DataType::Int, DataType::Float, DataType::Counter64] {
            assert_eq!(
                normalise_value(&Value::Float(f64::NAN), data_type),
                Err(DropReason::NotFinite)
            );
            assert_eq!(
                normalise_value(&"inf".into(), data_type),
                Err(DropReason::NotFinite)
            );
            assert_eq!(
                normalise_value(&"NaN".into(), data_type),
                Err(DropReason::NotFinite)
            );
        }
    }

    #[test]
    fn string_renders_numbers_like_python_and_keeps_text_untrimmed() {
        let string = DataType::String;
        assert_eq!(normalise_value(&Value::Int(12), string), Ok("12".into()));
        assert_eq!(
            normalise_value(&Value::Float(1e-5), string),
            Ok("1e-05".into())
        );
        assert_eq!(
            normalise_value(&" padded ".into(), string),
            Ok(" padded ".into())
        );
    }
}
