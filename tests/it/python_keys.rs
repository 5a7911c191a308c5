//! Keys and metadata values are normalised exactly as Python does it,
//! checked against python3 itself: `str(key).lower().strip()` for keys,
//! `str(value).strip()` for metadata values.
//!
//! The agent's tables come from Python 3.11 (Unicode 14). When python3 here
//! has another Unicode version, characters added since then differ by
//! design, so the tests say they were skipped; without python3 they also
//! say so, except under CI (`CI=true`), where python3 must be present.

use std::io::Write;
use std::process::{Command, Stdio};

use pattoo_agentd::model::normalise_key;
use pattoo_agentd::model::python_str::{self, lower, lower_strip, strip};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// Runs `script` under python3 with `input` on stdin; `None` (after saying
/// why on stderr) when this python3 cannot be the reference.
fn python(test: &str, script: &str, input: &[u8]) -> Option<String> {
    let version = Command::new("python3")
        .args([
            "-c",
            "import unicodedata; print(unicodedata.unidata_version)",
        ])
        .output();
    let skip = |why: String| {
        assert!(
            std::env::var("CI").as_deref() != Ok("true") || why.contains("Unicode"),
            "CI must run {test}, but {why}"
        );
        // Straight to stderr: the test harness would hide a println!.
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
        None
    };
    match version {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if version != python_str::UNICODE_VERSION {
                return skip(format!(
                    "python3 has Unicode {version}, the agent follows Python 3.11's Unicode {}",
                    python_str::UNICODE_VERSION
                ));
            }
        }
        _ => return skip("python3 is not installed".to_owned()),
    }
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "python3 failed");
    Some(String::from_utf8(out.stdout).unwrap())
}

/// One line per code point whose lowercase differs from itself, that is
/// whitespace, or that the final-sigma rule sees as cased or
/// case-ignorable: its lowercased-and-stripped form and what `Σ` becomes
/// after `AΣ`+c, c+`Σ` and `A`+c+`Σ`.
const PER_CODE_POINT: &str = r#"
import sys
out = []
for cp in range(0x110000):
    if 0xD800 <= cp <= 0xDFFF:
        continue
    c = chr(cp)
    probes = [("A\u03a3" + c).lower()[1], (c + "\u03a3").lower()[-1], ("A" + c + "\u03a3").lower()[-1]]
    if c.lower().strip() != c or "\u03c2" in probes[1:] or probes[0] != "\u03c2":
        out.append("%x %s %s" % (cp, " ".join("%x" % ord(x) for x in c.lower().strip()), " ".join("%x" % ord(x) for x in probes)))
sys.stdout.write("\n".join(out) + "\n")
"#;

fn per_code_point_in_rust() -> String {
    let hex = |s: &str| {
        s.chars()
            .map(|c| format!("{:x}", c as u32))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    let mut text = String::new();
    for c in (0..0x110000u32).filter_map(char::from_u32) {
        let normal = lower_strip(c.encode_utf8(&mut [0; 4])).into_owned();
        // Where the Σ lands: after c's lowercase, which may be longer.
        let last = lower(c.encode_utf8(&mut [0; 4])).chars().count();
        let mut probe = |before: &str, after: &str, at: usize| {
            text.clear();
            text.push_str(before);
            text.push(c);
            text.push_str(after);
            lower(&text).chars().nth(at).unwrap()
        };
        let probes = [
            probe("AΣ", "", 1),
            probe("", "Σ", last),
            probe("A", "Σ", last + 1),
        ];
        if normal != c.to_string() || probes[1..].contains(&'ς') || probes[0] != 'ς' {
            let probes: String = probes.iter().collect();
            out.push_str(&format!(
                "{:x} {} {}\n",
                c as u32,
                hex(&normal),
                hex(&probes)
            ));
        }
    }
    out
}

#[test]
fn every_code_point_lowers_strips_and_takes_part_in_final_sigma_as_in_python() {
    let test = "every_code_point_lowers_strips_and_takes_part_in_final_sigma_as_in_python";
    let Some(python) = python(test, PER_CODE_POINT, b"") else {
        return;
    };
    let rust = per_code_point_in_rust();
    let python: std::collections::BTreeSet<&str> = python.lines().collect();
    let rust: std::collections::BTreeSet<&str> = rust.lines().collect();
    let only_python: Vec<_> = python.difference(&rust).take(20).collect();
    let only_rust: Vec<_> = rust.difference(&python).take(20).collect();
    assert!(
        only_python.is_empty() && only_rust.is_empty(),
        "code point, lower().strip(), final-sigma probes:\npython3 only: {only_python:#?}\nagent only: {only_rust:#?}"
    );
}

/// Characters that make lowercasing and stripping hard.
fn awkward_char() -> impl Strategy<Value = char> {
    prop_oneof![
        // Mixed-case ASCII and digits.
        prop::sample::select("AaBbZz09_-.:/' ".chars().collect::<Vec<_>>()),
        // Every character Python's isspace() accepts, and some it does not.
        prop::sample::select(vec![
            '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1c}', '\u{1d}', '\u{1e}', '\u{1f}', ' ',
            '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}',
            '\u{2004}', '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}', '\u{2009}', '\u{200a}',
            '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}', '\u{200b}', '\u{180e}',
            '\u{feff}', '\u{0}',
        ]),
        // Greek with all three sigmas, and combining and ignorable marks.
        prop::sample::select(vec![
            'Σ', 'σ', 'ς', 'Ο', 'Δ', 'ά', 'ΐ', '\u{300}', '\u{301}', '\u{345}', '\u{20dd}',
            '\u{ad}', '\u{200d}', '·', '\u{2019}', '^', 'ʰ',
        ]),
        // Turkish and other special casings, ligatures, titlecase letters.
        prop::sample::select(vec![
            'İ', 'I', 'ı', 'i', 'ﬀ', 'ﬁ', 'ß', 'ẞ', 'ǅ', 'ǈ', 'ǋ', 'ᾈ', 'Å', 'K', 'Ω', 'Ⅻ', 'Ⓐ',
            'Ｚ', '𐐀', '𞤀', 'Ꭰ', 'ꭰ', 'Ა', 'ა',
        ]),
        // Where Unicode 14 and Rust's newer Unicode disagree.
        prop::sample::select(vec![
            '\u{295}',
            '\u{1171e}',
            '\u{a7cb}',
            '\u{a7dc}',
            '\u{1e030}'
        ]),
        // Anything at all.
        any::<char>(),
    ]
}

#[test]
fn random_unicode_keys_and_values_normalise_as_python_does() {
    let test = "random_unicode_keys_and_values_normalise_as_python_does";
    let strategy = prop::collection::vec(awkward_char(), 0..16)
        .prop_map(|chars| chars.into_iter().collect::<String>());
    let mut runner = TestRunner::default();
    let inputs: Vec<String> = (0..5_000)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    let script = r#"
import json, sys
texts = json.load(sys.stdin)
json.dump([[str(t).lower().strip(), str(t).strip()] for t in texts], sys.stdout)
"#;
    let Some(output) = python(test, script, &serde_json::to_vec(&inputs).unwrap()) else {
        return;
    };
    let expected: Vec<(String, String)> = serde_json::from_str(&output).unwrap();
    assert_eq!(expected.len(), inputs.len());
    let mut wrong = Vec::new();
    for (input, (key, value)) in inputs.iter().zip(&expected) {
        let agent = (normalise_key(input), strip(input));
        if agent.0 != *key || agent.1 != value {
            wrong.push(format!(
                "{input:?}: python3 key {key:?} value {value:?}, agent key {:?} value {:?}",
                agent.0, agent.1
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ, e.g.:\n{}",
        wrong.len(),
        inputs.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
}
