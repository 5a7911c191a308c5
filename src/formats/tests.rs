//! Tests shared by every format: the golden cases under
//! `tests/data/formats/<format>/<case>/` and the no-panic properties.
//!
//! A golden case is a folder holding `format.yaml` (the poller's `format:`
//! key), `input` (the payload bytes), optionally `exit_status`, and
//! `expected`: the datapoints and skipped values the parser returned, or
//! the error it failed with, or the configuration errors. Run with
//! `UPDATE_GOLDEN=1` to rewrite `expected` after a deliberate change, and
//! review the diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::yaml::{Document, YamlPath};

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/formats")
}

fn settings_from(file: &Path, text: &str) -> Result<FormatSettings, String> {
    let mut doc = Document::parse(file, text).map_err(|e| format!("config error: {e}\n"))?;
    let root = doc.root.clone();
    let value = root.get("format").cloned().unwrap_or_default();
    let settings = FormatSettings::parse(&mut doc, &YamlPath::root().key("format"), &value);
    let errors = doc.into_errors();
    match settings {
        Some(settings) if errors.is_empty() => Ok(settings),
        _ => Err(errors.iter().fold(String::new(), |mut out, e| {
            let _ = writeln!(out, "config error: {}: {}", e.path, e.message);
            out
        })),
    }
}

/// The parser's result as the golden `expected` file holds it.
fn render(result: Result<Parsed, FormatError>) -> String {
    let parsed = match result {
        Ok(parsed) => parsed,
        Err(error) => return format!("error: {error}\n"),
    };
    let mut out = String::new();
    for target in &parsed.targets {
        let _ = writeln!(out, "target {}", target.target);
        for dp in &target.datapoints {
            let _ = write!(
                out,
                "  {:?} = {} ({}) @{}",
                dp.key,
                match &dp.value {
                    DataValue::Text(text) => format!("{text:?}"),
                    other => format!("{other:?}"),
                },
                dp.data_type,
                dp.timestamp_ms
            );
            for meta in &dp.metadata {
                let _ = write!(
                    out,
                    " [{:?}={:?}{}]",
                    meta.key,
                    meta.value,
                    if meta.update_checksum {
                        ""
                    } else {
                        " no checksum"
                    }
                );
            }
            out.push('\n');
        }
    }
    for skipped in &parsed.skipped {
        let _ = writeln!(out, "skipped {skipped}");
    }
    out
}

fn run_case(dir: &Path) -> String {
    let format_file = dir.join("format.yaml");
    let format_text = std::fs::read_to_string(&format_file).expect("format.yaml");
    let settings = match settings_from(&format_file, &format_text) {
        Ok(settings) => settings,
        Err(errors) => return errors,
    };
    let input = std::fs::read(dir.join("input")).unwrap_or_default();
    let exit_status = std::fs::read_to_string(dir.join("exit_status"))
        .ok()
        .map(|s| s.trim().parse().expect("exit_status holds a number"));
    render(settings.parse_payload(&Payload {
        bytes: &input,
        default_target: "this-host",
        read_at_ms: 1_600_000_000_000,
        exit_status,
    }))
}

#[test]
fn every_golden_case_gives_its_expected_output() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases = 0;
    let mut failures = Vec::new();
    let mut formats: Vec<_> = std::fs::read_dir(golden_root())
        .expect("tests/data/formats exists")
        .map(|e| e.expect("readable").path())
        .collect();
    formats.sort();
    for format in formats {
        let mut dirs: Vec<_> = std::fs::read_dir(&format)
            .expect("readable")
            .map(|e| e.expect("readable").path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            cases += 1;
            let actual = run_case(&dir);
            let expected_file = dir.join("expected");
            if update {
                std::fs::write(&expected_file, &actual).expect("writable");
                continue;
            }
            let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
            if actual != expected {
                failures.push(format!(
                    "{}\n--- expected\n{expected}--- actual\n{actual}",
                    dir.display()
                ));
            }
        }
    }
    assert!(cases > 0, "no golden cases found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_format_has_golden_cases() {
    for name in FormatSettings::NAMES {
        let dir = golden_root().join(name);
        let count = std::fs::read_dir(&dir)
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert!(count >= 3, "{} has {count} golden cases", dir.display());
    }
}

/// One configuration of every format, for the properties.
fn all_formats() -> Vec<FormatSettings> {
    let yaml = [
        "format: {type: value, key: v}",
        "format: {type: value, key: v, data_type: string}",
        "format: {type: json, values: [{pointer: /a/b, key: x}, {pointer: /l/*/v, key: 'l_{*}'}, {pointer: '', key: whole, data_type: string}]}",
        "format: keyvalue",
        "format: prometheus",
        "format: nagios",
        "format: datapoints",
        "format: pattoo",
    ];
    yaml.iter()
        .map(|text| settings_from(Path::new("test.yaml"), text).expect("valid format"))
        .collect()
}

fn parse_all(bytes: &[u8], exit_status: Option<i32>) {
    for settings in all_formats() {
        let _ = settings.parse_payload(&Payload {
            bytes,
            default_target: "t",
            read_at_ms: 0,
            exit_status,
        });
    }
}

proptest! {
    // proptest's default, 256 cases, keeps CI quick; set PROPTEST_CASES to
    // dig deeper locally.
    #[test]
    fn no_parser_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        exit_status in proptest::option::of(-300i32..300),
    ) {
        parse_all(&bytes, exit_status);
    }

    #[test]
    fn no_parser_panics_on_text_made_of_syntax_characters(
        text in "[a-z_:{}=\"',;|#\\\\ \t\r\n0-9.eE+-UuNnIi\\[\\]/*é]{0,400}",
    ) {
        parse_all(text.as_bytes(), Some(0));
    }

    #[test]
    fn no_parser_panics_on_json_shaped_input(
        text in r#"\{("(targets|pattoo_datapoints|key_value_pairs|datapoint_pairs|a|l|b|0)": ?(\[|\{|"[a-z]*"|[0-9]{1,25}(\.[0-9]+)?|true|null|\]|\}|, ?)*){0,12}\}"#,
    ) {
        parse_all(text.as_bytes(), None);
    }
}

/// `number` as it read before its fast paths: every integer parse, then
/// Python's float().
fn number_by_the_long_way(text: &str) -> Result<DataValue, String> {
    let trimmed = text.trim();
    if let Ok(v) = trimmed.parse::<i64>() {
        return Ok(DataValue::Int(v));
    }
    if let Ok(v) = trimmed.parse::<u64>() {
        return Ok(DataValue::UInt(v));
    }
    match crate::model::python::parse_float(trimmed) {
        Some(v) if v.is_finite() => Ok(DataValue::Float(v)),
        Some(v) => Err(format!(
            "{} cannot be sent to pattoo",
            crate::model::python::float_to_string(v)
        )),
        None => Err(format!("expected a number, found {trimmed:?}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::test_support::proptest_cases(2048)))]

    #[test]
    fn numbers_read_as_python_float_and_int_read_them(
        text in r"[ \t]?[+-]{0,2}[0-9]{0,22}[._]?[0-9_]{0,5}([eE][+-]?[0-9]{0,4})?(inf|nan|x|é|\u{3000})?[ \n]?",
    ) {
        let fast = number(&text);
        let slow = number_by_the_long_way(&text);
        match (&fast, &slow) {
            (Ok(DataValue::Float(a)), Ok(DataValue::Float(b))) => {
                prop_assert_eq!(a.to_bits(), b.to_bits(), "{:?}", text)
            }
            _ => prop_assert_eq!(fast, slow, "{:?}", text),
        }
    }

    #[test]
    fn keys_already_normal_are_borrowed_and_others_normalised(
        key in r"[ \t\x1c]?[a-zA-Z0-9_ .:é\u{3a3}\u{3000}]{0,12}[ \t\x1c\x1f]?",
    ) {
        let ours = normal_key(&key);
        prop_assert_eq!(&ours, &crate::model::normalise_key_cow(&key));
        if ours == key.as_str() && key.is_ascii() {
            prop_assert!(matches!(ours, std::borrow::Cow::Borrowed(_)));
        }
    }
}
