//! Golden configuration cases: `pattoo-agentd --config-dir <case> check` on
//! every folder in `tests/data/config/`, compared with the folder's
//! `expected.txt`.
//!
//! A folder whose name starts with `valid_` must be accepted: exit status 0,
//! nothing on stderr, and `expected.txt` holds stdout. Every other folder
//! must be refused with exit status 78 (EX_CONFIG) and nothing on stdout,
//! and `expected.txt` holds stderr. The case folder's path is written as
//! `$CONFIG_DIR` and the host name found for this machine (when none is
//! configured) as `$FOUND_HOST_NAME`, so the files do not depend on where
//! the tree is checked out, and `$HOME` is fixed so `~` in paths expands the
//! same everywhere.
//!
//! `BLESS=1 cargo test --test config_golden` rewrites every `expected.txt`
//! from what the binary prints now; review the diff before committing it.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common;

const EXIT_CONFIG: i32 = 78;
/// What `$HOME` is while a case runs; `~` in a case expands to this.
const FAKE_HOME: &str = "/home/pattoo-golden";

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config")
}

fn check(config_dir: &Path, home: &str) -> Output {
    common::agentd(config_dir)
        .arg("check")
        // A developer's own settings must not leak into the cases.
        .env_remove("PATTOO_CONFIGDIR")
        .env("HOME", home)
        .output()
        .expect("the pattoo-agentd binary runs")
}

/// What the binary printed, with the case folder's path and this machine's
/// host name made portable.
fn normalise(bytes: &[u8], config_dir: &Path) -> String {
    let found = pattoo_agentd::identity::hostname(None);
    String::from_utf8_lossy(bytes)
        .replace(&config_dir.display().to_string(), "$CONFIG_DIR")
        .replace(
            &format!("{:?} ({})", found.name, found.source),
            "$FOUND_HOST_NAME",
        )
}

#[test]
fn every_golden_configuration_case_gives_its_expected_output() {
    let bless = std::env::var_os("BLESS").is_some_and(|v| v != "0" && !v.is_empty());
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/data/config exists")
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "expected at least 15 golden cases, found {}",
        cases.len()
    );

    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let output = check(case, FAKE_HOME);
        let stdout = normalise(&output.stdout, case);
        let stderr = normalise(&output.stderr, case);
        let valid = name.starts_with("valid_");
        let (wanted_status, printed, silent, silent_name) = if valid {
            (0, stdout, stderr, "stderr")
        } else {
            (EXIT_CONFIG, stderr, stdout, "stdout")
        };

        if output.status.code() != Some(wanted_status) {
            failures.push(format!(
                "{name}: exit status {:?}, expected {wanted_status}\n{printed}",
                output.status.code()
            ));
            continue;
        }
        if !silent.is_empty() {
            failures.push(format!("{name}: unexpected {silent_name}:\n{silent}"));
            continue;
        }
        let expected_file = case.join("expected.txt");
        if bless {
            std::fs::write(&expected_file, &printed).expect("expected.txt is writable");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|_| panic!("{name}: no expected.txt; run with BLESS=1 to create it"));
        if expected != printed {
            failures.push(format!(
                "{name}: output differs from expected.txt\n--- expected\n{expected}--- got\n{printed}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed (BLESS=1 rewrites expected.txt):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_refused_case_names_the_file_and_line_of_each_error() {
    for entry in std::fs::read_dir(cases_dir()).expect("tests/data/config exists") {
        let case = entry.expect("a readable directory entry").path();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("valid_") || !case.is_dir() {
            continue;
        }
        let output = check(&case, FAKE_HOME);
        let stderr = normalise(&output.stderr, &case);
        let errors: Vec<&str> = stderr.lines().skip(1).collect();
        assert!(!errors.is_empty(), "{name}: no errors printed");
        for line in errors {
            // A file that cannot be read has no line to point at.
            if line.contains("cannot read the file") {
                continue;
            }
            let located = line
                .trim_start()
                .strip_prefix("$CONFIG_DIR/")
                .and_then(|rest| rest.split_once(".yaml:"))
                .and_then(|(_, rest)| rest.split_once(':'))
                .is_some_and(|(line_number, _)| line_number.parse::<usize>().is_ok());
            assert!(located, "{name}: error without file and line: {line}");
        }
    }
}

#[test]
fn a_tilde_in_a_directory_expands_to_the_home_directory() {
    let home = tempfile::tempdir().expect("a temporary directory");
    let case = cases_dir().join("valid_tilde_paths");
    let output = check(&case, &home.path().display().to_string());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let cache = home.path().join("pattoo/cache");
    assert!(
        stdout.contains(&format!(
            "caches undelivered bodies in {}\n",
            cache.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "agent ids in {}/agent_id\n",
            home.path().join("pattoo").display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains('~'), "{stdout}");
}

#[test]
fn the_packaged_default_configuration_passes_check() {
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/etc");
    let output = check(&packaged, FAKE_HOME);
    assert_eq!(
        output.status.code(),
        Some(0),
        "packaging/etc is refused:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The unit's sandbox only lets the agent write below these two.
    assert!(
        stdout.contains("caches undelivered bodies in /var/lib/pattoo/cache\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("agent ids in /var/lib/pattoo/agent_id\n"),
        "{stdout}"
    );
}
