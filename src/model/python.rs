//! Python's rendering and parsing of numbers, which the pattoo wire format
//! inherits from the reference library: metadata values and `string`
//! datapoints carry numbers as `str()` writes them, and numeric text is
//! accepted wherever Python's `float()` would accept it.

use std::fmt::Write;

/// Writes a float the way Python's `str()`/`repr()` does: the shortest digits
/// that round-trip, in positional form when the decimal exponent is in
/// `-4..16` (always with a fractional part, `2.0`) and in exponent form
/// otherwise (`1e-05`, `1e+16`, `1.5e+20`).
pub fn float_to_string(value: f64) -> String {
    let mut out = String::with_capacity(24);
    write_float(&mut out, value);
    out
}

/// [`float_to_string`] appending to an existing buffer (the hot path of body
/// serialisation uses this to avoid an allocation per value).
pub fn write_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("nan");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "inf" } else { "-inf" });
        return;
    }
    // `{:e}` gives the shortest round-trip digits as `d.ddde±x`; Python's
    // repr uses the same digits and only lays them out differently. At most
    // 17 digits and a 4-character exponent: a stack buffer is enough.
    let mut sci = StackText::default();
    write!(sci, "{:e}", value.abs()).expect("a float's `{:e}` fits 32 bytes");
    let (mantissa, exponent) = sci
        .as_str()
        .split_once('e')
        .expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
    let mut digit_buf = [0u8; 24];
    let mut len = 0;
    for b in mantissa.bytes().filter(|b| *b != b'.') {
        digit_buf[len] = b;
        len += 1;
    }
    let digits = std::str::from_utf8(&digit_buf[..len]).expect("digits are ASCII");
    if value.is_sign_negative() {
        out.push('-');
    }
    if (-4..16).contains(&exponent) {
        if exponent >= 0 {
            let int_len = exponent as usize + 1;
            if digits.len() <= int_len {
                out.push_str(digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
            out.push_str(digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            out.push('0');
        }
        out.push_str(&magnitude.to_string());
    }
}

/// A small text buffer on the stack, for formatting without allocating.
#[derive(Default)]
struct StackText {
    buf: [u8; 32],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("only str was written")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes a JSON number as Python's `str()` would write the number Python's
/// `json` module reads from it: integers as integers, floats as floats.
pub fn number_to_string(number: &serde_json::Number) -> String {
    super::Value::from(number).to_python_string()
}

/// Parses text the way Python's `float()` does: surrounding whitespace is
/// ignored, `_` may separate digits, and `nan`/`inf`/`infinity` are accepted
/// in any case.
pub fn parse_float(text: &str) -> Option<f64> {
    // float() strips ASCII whitespace but not U+001C..U+001F (unlike
    // str.strip()), and every non-ASCII space: Unicode's White_Space, which
    // is what trim() removes.
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.contains('_') {
        if !underscores_are_between_digits(text) {
            return None;
        }
        return text.replace('_', "").parse().ok();
    }
    text.parse().ok()
}

fn underscores_are_between_digits(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, b)| {
        *b != b'_'
            || (i > 0
                && i + 1 < bytes.len()
                && bytes[i - 1].is_ascii_digit()
                && bytes[i + 1].is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_render_like_python_str() {
        let cases: &[(f64, &str)] = &[
            (2.0, "2.0"),
            (0.1, "0.1"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (1e20, "1e+20"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1234567890123456.7, "1234567890123456.8"),
            (1.5e16, "1.5e+16"),
            (123.456, "123.456"),
            (-0.5, "-0.5"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2.5e-5, "2.5e-05"),
            (732.0, "732.0"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (value, want) in cases {
            assert_eq!(float_to_string(*value), *want, "rendering {value:e}");
        }
    }

    #[test]
    fn json_numbers_keep_their_integer_or_float_form() {
        let n: serde_json::Number = serde_json::from_str("12").unwrap();
        assert_eq!(number_to_string(&n), "12");
        let n: serde_json::Number = serde_json::from_str("12.0").unwrap();
        assert_eq!(number_to_string(&n), "12.0");
        let n: serde_json::Number = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(number_to_string(&n), "18446744073709551615");
    }

    #[test]
    fn parses_text_like_python_float() {
        assert_eq!(parse_float(" 3.7 "), Some(3.7));
        assert_eq!(parse_float("\u{3000}7\u{85}"), Some(7.0));
        assert_eq!(parse_float("7\u{1c}"), None, "float() keeps U+001C");
        assert_eq!(parse_float("1e3"), Some(1000.0));
        assert_eq!(parse_float("1_000.5"), Some(1000.5));
        assert_eq!(parse_float("-inf"), Some(f64::NEG_INFINITY));
        assert!(parse_float("nan").unwrap().is_nan());
        assert_eq!(parse_float("1__0"), None);
        assert_eq!(parse_float("_1"), None);
        assert_eq!(parse_float("abc"), None);
        assert_eq!(parse_float(""), None);
        assert_eq!(parse_float("0x10"), None);
    }
}
