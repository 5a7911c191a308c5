//! `pattoo-agentd translations`: the CSV for every shipped example
//! configuration is its golden file (`BLESS=1` rewrites them), and keeps
//! the rules of pattoo's importer (`pattoo_cli.py import key_translation`
//! and `import agent_translation`, which read it with pandas
//! `read_csv(skipinitialspace=True)`): exact headings, a known language
//! code, no cell pandas reads as missing, keys formed as the ingester
//! forms them, one row per language and key.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pattoo_agentd::model::translation::{agent_csv, key_csv, Language};
use pattoo_agentd::pollers::KINDS;
use pattoo_agentd::translations::{agent_rows, key_rows};

use crate::common;
use crate::config_examples::{env_secrets, load_example};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/translations")
}

/// Every shipped example's key and agent CSVs: (file name, text).
fn example_csvs() -> Vec<(String, String)> {
    let mut csvs = Vec::new();
    for example in KINDS.iter().flat_map(|kind| kind.examples) {
        let settings = load_example(example.text)
            .unwrap_or_else(|errors| panic!("{}:\n{errors}", example.file_name));
        let stem = example.file_name.trim_end_matches(".yaml");
        csvs.push((
            format!("{stem}.csv"),
            key_csv(&key_rows(&settings, Language::English, None)),
        ));
        csvs.push((
            format!("{stem}.agents.csv"),
            agent_csv(&agent_rows(&settings, Language::English, None)),
        ));
    }
    csvs
}

/// The examples' `{env: NAME}` secrets, set only in a child process.
fn secrets() -> Vec<(String, String)> {
    KINDS
        .iter()
        .flat_map(|kind| kind.examples)
        .flat_map(|example| env_secrets(example.text))
        .map(|name| (name, "example-secret".to_owned()))
        .collect()
}

fn alone(test: &str) -> bool {
    let vars = secrets();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    common::alone::runs_here(module_path!(), test, &vars)
}

/// Splits CSV as pandas does for these files: `,` between cells, `"`
/// quoting with `""` inside, blanks after a separator skipped.
pub(crate) fn cells(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut start = true;
    while let Some(c) = chars.next() {
        match c {
            ' ' if start && !quoted => {}
            '"' if start => {
                quoted = true;
                start = false;
            }
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            '"' if quoted => quoted = false,
            ',' if !quoted => {
                cells.push(std::mem::take(&mut cell));
                start = true;
            }
            c => {
                cell.push(c);
                start = false;
            }
        }
    }
    cells.push(cell);
    cells
}

/// What pandas (its default `na_values`) reads as a missing cell, which
/// the importer would store as the text `nan`.
const MISSING: &[&str] = &[
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

/// Checks one CSV against the importer's rules; returns its rows.
fn check_importer_rules(name: &str, text: &str) -> Vec<Vec<String>> {
    let agents = name.ends_with(".agents.csv");
    let mut lines = text.lines();
    let heading = lines.next().unwrap_or_default();
    let expected = if agents {
        "language,key,translation"
    } else {
        "language,key,translation,units"
    };
    assert_eq!(heading, expected, "{name}: headings");
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let row = cells(line);
        let at = format!("{name} row {}: {line}", n + 2);
        assert_eq!(row.len(), expected.split(',').count(), "{at}: cells");
        for cell in &row {
            assert!(
                !MISSING.contains(&cell.trim()),
                "{at}: pandas reads {cell:?} as missing"
            );
        }
        assert_eq!(row[0], "en", "{at}: language code");
        let key = &row[1];
        assert!(
            key.starts_with("pattoo_"),
            "{at}: key is not prefixed by an agent program"
        );
        assert!(
            !key.contains(' '),
            "{at}: key has a blank (metadata words must be joined)"
        );
        assert_eq!(
            *key,
            key.to_lowercase(),
            "{at}: keys are lower case as posted"
        );
        assert!(
            seen.insert(key.clone()),
            "{at}: second row for this language and key"
        );
        rows.push(row);
    }
    assert!(!rows.is_empty(), "{name}: no rows");
    rows
}

#[test]
fn every_shipped_example_prints_the_translations_of_its_golden_file() {
    if !alone("every_shipped_example_prints_the_translations_of_its_golden_file") {
        return;
    }
    let bless = std::env::var_os("BLESS").is_some_and(|v| v != "0" && !v.is_empty());
    for (name, text) in example_csvs() {
        let path = golden_dir().join(&name);
        if bless {
            std::fs::write(&path, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{name}: no golden file; run with BLESS=1 to create it"));
        assert_eq!(text, expected, "{name} (BLESS=1 rewrites it)");
    }
}

#[test]
fn every_examples_translations_keep_the_importers_rules() {
    if !alone("every_examples_translations_keep_the_importers_rules") {
        return;
    }
    for (name, text) in example_csvs() {
        check_importer_rules(&name, &text);
    }
}

#[test]
fn the_importers_rules_refuse_what_pattoo_would_store_wrongly() {
    let refused = |text: &str| {
        let text = text.to_owned();
        std::panic::catch_unwind(move || check_importer_rules("x.csv", &text)).is_err()
    };
    assert!(!refused(
        "language,key,translation,units\nen,pattoo_a_b,B,Bytes\n"
    ));
    assert!(refused("language,key,translation\nen,pattoo_a_b,B\n"));
    assert!(refused(
        "language,key,translation,units\nen,pattoo_a_b,B,\n"
    ));
    assert!(refused(
        "language,key,translation,units\nen,pattoo_a_b c,B,NA\n"
    ));
    assert!(refused(
        "language,key,translation,units\nen,pattoo_a_b c,B,Bytes\n"
    ));
    assert!(refused(
        "language,key,translation,units\nen,pattoo_a_b,B,X\nen,pattoo_a_b,C,X\n"
    ));
}

/// pandas itself, as the importer calls it, reads every example's CSV into
/// exactly the headings and cells we meant, with nothing missing.
#[test]
fn pandas_reads_every_examples_translations_as_the_importer_does() {
    if !alone("pandas_reads_every_examples_translations_as_the_importer_does") {
        return;
    }
    let path = common::python::packages_path("pandas", &["pandas==2.2.3"], "import pandas");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in example_csvs() {
        let rows = check_importer_rules(&name, &text);
        let file = dir.path().join(&name);
        std::fs::write(&file, &text).unwrap();
        // As pattoo/cli/cli_import.py reads it, then each row as JSON.
        let script = "import sys, json, pandas\n\
            frame = pandas.read_csv(sys.argv[1], skipinitialspace=True)\n\
            print(json.dumps(list(frame.columns)))\n\
            assert not frame.isnull().values.any(), 'a cell read as missing'\n\
            for row in frame.itertuples(index=False):\n    print(json.dumps([str(c) for c in row]))\n";
        let output = Command::new(common::python::python())
            .args(["-c", script])
            .arg(&file)
            .env("PYTHONPATH", &path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let mut lines = stdout.lines();
        let columns: Vec<String> = serde_json::from_str(lines.next().unwrap()).unwrap();
        let heading = text.lines().next().unwrap();
        assert_eq!(columns.join(","), heading, "{name}");
        let read: Vec<Vec<String>> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(read, rows, "{name}: cells as pandas reads them");
    }
}

/// The command itself: `--program` keeps one program's rows, `--agents`
/// names programs, and a language it has no names in is refused.
#[test]
fn the_translations_command_prints_one_programs_rows_and_refuses_an_unknown_language() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().display();
    std::fs::write(
        dir.path().join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_directory: {state}\n  cache_directory: {state}\n  daemon_directory: {state}\npattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: 20201\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        "pattoo_agentd:\n  pollers:\n    - name: meter\n      type: modbus\n      targets: [127.0.0.1]\n      registers:\n        - {address: 30001, key: volts, description: Voltage, units: Volts}\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        common::agentd(dir.path())
            .arg("translations")
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&["--program", "pattoo_agent_modbustcpd"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "language,key,translation,units\n\
         en,pattoo_agent_modbustcpd_unit,Modbus Unit ID,Label\n\
         en,pattoo_agent_modbustcpd_volts,Voltage,Volts\n"
    );
    let output = run(&["--agents", "--language", "EN"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "language,key,translation\n\
         en,pattoo_agent_modbustcpd,pattoo-agentd modbus\n\
         en,pattoo_agent_os_autonomousd,pattoo-agentd os\n\
         en,pattoo_agent_os_spoked,pattoo-agentd os\n\
         en,pattoo_agent_linux_autonomousd,pattoo-agentd os\n\
         en,pattoo_agent_linux_spoked,pattoo-agentd os\n\
         en,pattoo_agentd_self,pattoo-agentd self-monitoring\n"
    );
    let output = run(&["--language", "fr"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("no translations in language \"fr\": this build has en; give --language en"),
        "{output:?}"
    );
}
