//! Python's `str.lower()` and `str.strip()`, exactly: the Python agents'
//! library normalises every key with `str(key).lower().strip()` and strips
//! every metadata value, and the results go into each datapoint's checksum.
//!
//! - `lower()` is the full Unicode lowercase mapping (`İ` becomes `i̇`, two
//!   characters) with the final-sigma rule: `Σ` becomes `ς` when a cased
//!   letter comes before it and none after it, skipping case-ignorable
//!   characters (combining marks, apostrophes) on both sides.
//! - `strip()` removes from both ends every character `str.isspace()`
//!   accepts, which includes U+001C to U+001F (unlike Rust's `trim()`).
//!
//! Python 3.11 uses Unicode 14; Rust's std uses a newer version, in which
//! some characters added later are letters or marks and a few older ones
//! changed properties (U+0295 is no longer Cased, U+1171E no longer
//! Case_Ignorable). The Cased, Case_Ignorable and whitespace sets therefore
//! come from Python itself ([`tables`], written by
//! `scripts/python-unicode-tables`): a character Python does not treat as
//! cased is left as it is, and the final-sigma rule uses Python's
//! properties. The lowercase mapping of the characters Python treats as
//! cased is std's, which is the same for all of them; the test
//! `tests/it/python_keys.rs` checks every code point against python3.

use std::borrow::Cow;

#[rustfmt::skip]
mod tables;

/// The Unicode version Python's tables come from.
pub const UNICODE_VERSION: &str = tables::UNICODE_VERSION;

/// Python's `text.lower().strip()`; borrows when nothing changes, which
/// is the case for nearly every key a program writes.
pub fn lower_strip(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        let stripped = strip(text);
        if !stripped.bytes().any(|b| b.is_ascii_uppercase()) {
            return Cow::Borrowed(stripped);
        }
        return Cow::Owned(stripped.to_ascii_lowercase());
    }
    // Lowercasing never makes or removes whitespace, but the final-sigma
    // rule looks past the ends, so lowercase first, as Python does.
    let lowered = lower(text);
    match strip(&lowered) {
        stripped if stripped.len() == lowered.len() => Cow::Owned(lowered),
        stripped => Cow::Owned(stripped.to_owned()),
    }
}

/// Python's `text.strip()` with no argument.
pub fn strip(text: &str) -> &str {
    text.trim_matches(is_space)
}

/// Python's `str.isspace()` for one character.
pub fn is_space(c: char) -> bool {
    match c {
        '\t'..='\r' | '\u{1c}'..=' ' => true,
        c if c.is_ascii() => false,
        c => tables::WHITESPACE.binary_search(&c).is_ok(),
    }
}

/// Python's `text.lower()`.
pub fn lower(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (at, c) in text.char_indices() {
        match c {
            'Σ' => out.push(if final_sigma(text, at) { 'ς' } else { 'σ' }),
            c if c.is_ascii() => out.push(c.to_ascii_lowercase()),
            c if is_cased(c) => out.extend(c.to_lowercase()),
            c => out.push(c),
        }
    }
    out
}

/// Whether the `Σ` at byte `at` ends a word: after a cased character and
/// not before one, skipping case-ignorable characters both ways (Unicode's
/// Final_Sigma condition, as CPython's `handle_capital_sigma` applies it).
fn final_sigma(text: &str, at: usize) -> bool {
    cased_after_ignorables(text[..at].chars().rev())
        && !cased_after_ignorables(text[at + 'Σ'.len_utf8()..].chars())
}

/// Whether the first character that is not case-ignorable is cased.
fn cased_after_ignorables(mut chars: impl Iterator<Item = char>) -> bool {
    chars.find(|c| !is_case_ignorable(*c)).is_some_and(is_cased)
}

fn is_cased(c: char) -> bool {
    in_ranges(tables::CASED, c)
}

fn is_case_ignorable(c: char) -> bool {
    in_ranges(tables::CASE_IGNORABLE, c)
}

fn in_ranges(ranges: &[(char, char)], c: char) -> bool {
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_inner_whitespace_and_strips_python_whitespace_at_the_ends() {
        assert_eq!(lower_strip("  CPU Load  Avg "), "cpu load  avg");
        assert_eq!(lower_strip("\u{1c}Key\u{1f}\u{85}"), "key");
        assert_eq!(lower_strip("\u{3000}Ünicode Key\u{a0}"), "ünicode key");
        assert_eq!(lower_strip("\u{200b}x"), "\u{200b}x", "U+200B is no space");
        assert_eq!(lower_strip(" \t\n"), "");
    }

    #[test]
    fn lowers_fully_with_the_final_sigma_rule() {
        assert_eq!(lower("ΟΔΥΣΣΕΥΣ"), "οδυσσευς");
        assert_eq!(lower("Σ"), "σ", "no cased letter before it");
        assert_eq!(lower("AΣ'B"), "aσ'b", "a cased letter after the apostrophe");
        assert_eq!(lower("AΣ' b"), "aς' b");
        assert_eq!(lower("İ"), "i\u{307}");
        assert_eq!(lower("ﬀ"), "ﬀ", "ligatures have no lowercase of their own");
    }

    #[test]
    fn uses_pythons_unicode_version_not_rusts() {
        // U+0295 is Cased in Unicode 14 and not in 16: a final sigma after it.
        assert_eq!(lower("\u{295}Σ"), "\u{295}ς");
        // U+A7CB (Unicode 16) has a lowercase in Rust, none in Python 3.11.
        assert_eq!(lower("\u{a7cb}"), "\u{a7cb}");
    }

    #[test]
    fn borrows_keys_that_are_already_normal() {
        assert!(matches!(lower_strip("cpu_load"), Cow::Borrowed("cpu_load")));
        assert!(matches!(lower_strip(" cpu "), Cow::Borrowed("cpu")));
    }
}
