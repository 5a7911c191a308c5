//! `pattoo-agentd translations` against the real pattoo server: for every
//! shipped example configuration, the key CSV is imported with pattoo's
//! own `bin/pattoo_cli.py import key_translation` into a group made with
//! `create key_translation_group` (the README's second way), the agent CSV
//! with `import agent_translation`, and the tables are read back with SQL:
//! every row the CSV names is stored with its language code, translation
//! and units, and nothing else is in the group. The server and its MariaDB
//! come from tests/common/pattoo_server.rs (skipped, saying why, where
//! they cannot be had).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;

use pattoo_agentd::pollers::KINDS;

use crate::common;
use crate::config_examples::{env_secrets, with_secrets};
use crate::translations::cells;

/// `pattoo-agentd translations args...` with `example` as the whole
/// `pattoo_agentd.yaml`, its secrets given as the example expects them.
fn translations(example: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path(), dir.path(), 20201);
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        with_secrets(example, dir.path()),
    )
    .unwrap();
    let output = common::agentd(dir.path())
        .arg("translations")
        .args(args)
        .envs(
            env_secrets(example)
                .into_iter()
                .map(|name| (name, "example-secret")),
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "translations {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The CSV's rows below its heading, as pandas reads them.
fn rows(csv: &str) -> Vec<Vec<String>> {
    csv.lines().skip(1).map(cells).collect()
}

/// Fails unless `pattoo_cli.py` exited 0 and printed no complaint: it
/// exits 0 even when it skipped a row for its language code. Shows the
/// first lines it printed (it prints one for each row it skipped).
fn assert_imported(what: &str, output: &Output) {
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = printed.lines().count();
    let first: Vec<&str> = printed.lines().take(20).collect();
    assert!(
        output.status.success() && printed.trim().is_empty(),
        "pattoo_cli.py {what}: {}; it printed {lines} lines, the first:\n{}",
        output.status,
        first.join("\n")
    );
}

#[test]
fn every_examples_translations_import_into_the_real_pattoo_servers_tables() {
    let test = "translations_import::every_examples_translations_import_into_the_real_pattoo_servers_tables";
    let Some(server) = common::pattoo_server::start(test) else {
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let mut examples = 0;
    for example in KINDS.iter().flat_map(|kind| kind.examples) {
        let stem = example.file_name.trim_end_matches(".yaml");
        let keys = translations(example.text, &[]);
        let agents = translations(example.text, &["--agents"]);
        let keys_file = files.path().join(format!("{stem}.csv"));
        let agents_file = files.path().join(format!("{stem}.agents.csv"));
        std::fs::write(&keys_file, &keys).unwrap();
        std::fs::write(&agents_file, &agents).unwrap();

        let group = format!("pattoo-agentd {stem}");
        assert_imported(
            &format!("create key_translation_group --name {group:?}"),
            &server.cli(&["create", "key_translation_group", "--name", &group]),
        );
        let found = server.query(&format!(
            "SELECT idx_pair_xlate_group FROM pt_pair_xlate_group WHERE name = '{group}'"
        ));
        assert_eq!(found.len(), 1, "group {group:?}: {found:?}");
        let idx = &found[0][0];
        let keys_path = keys_file.display().to_string();
        assert_imported(
            &format!("import key_translation of {stem}"),
            &server.cli(&[
                "import",
                "key_translation",
                "--idx_pair_xlate_group",
                idx,
                "--filename",
                &keys_path,
            ]),
        );
        let stored: BTreeSet<Vec<String>> = server
            .query(&format!(
                "SELECT l.code, x.`key`, x.translation, x.units FROM pt_pair_xlate x \
                 JOIN pt_language l ON l.idx_language = x.idx_language \
                 WHERE x.idx_pair_xlate_group = {idx}"
            ))
            .into_iter()
            .collect();
        let expected: BTreeSet<Vec<String>> = rows(&keys).into_iter().collect();
        assert!(expected.len() > 1, "{stem}: {keys}");
        let missing: Vec<_> = expected.difference(&stored).collect();
        let extra: Vec<_> = stored.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{stem}: group {idx} after importing its CSV\n\
             rows of the CSV not stored as written: {missing:#?}\n\
             rows stored that the CSV does not have: {extra:#?}"
        );

        let agents_path = agents_file.display().to_string();
        assert_imported(
            &format!("import agent_translation of {stem}"),
            &server.cli(&["import", "agent_translation", "--filename", &agents_path]),
        );
        let stored: BTreeMap<(String, String), String> = server
            .query(
                "SELECT l.code, x.agent_program, x.translation FROM pt_agent_xlate x \
                 JOIN pt_language l ON l.idx_language = x.idx_language",
            )
            .into_iter()
            .map(|row| ((row[0].clone(), row[1].clone()), row[2].clone()))
            .collect();
        let expected = rows(&agents);
        assert!(!expected.is_empty(), "{stem}: {agents}");
        for row in expected {
            let (code, program, name) = (&row[0], &row[1], &row[2]);
            assert_eq!(
                stored.get(&(code.clone(), program.clone())),
                Some(name),
                "{stem}: the agent translation of {program} in {code}"
            );
        }
        examples += 1;
    }
    assert!(examples > 0, "no shipped examples in this build");
}

/// What the README tells an operator about importing again, against the
/// real importer: a second import of a changed CSV updates the rows
/// already there (none added), and a row in a language pattoo lacks is
/// skipped with a message while `pattoo_cli.py` still exits 0.
#[test]
fn importing_again_updates_rows_and_skips_an_unknown_language_with_exit_status_0() {
    let test = "translations_import::importing_again_updates_rows_and_skips_an_unknown_language_with_exit_status_0";
    let Some(server) = common::pattoo_server::start(test) else {
        return;
    };
    let example = KINDS
        .iter()
        .flat_map(|kind| kind.examples)
        .next()
        .expect("a shipped example");
    let keys = translations(example.text, &[]);
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().display().to_string();
    let import = |text: &str| {
        std::fs::write(file.path(), text).unwrap();
        server.cli(&[
            "import",
            "key_translation",
            "--idx_pair_xlate_group",
            "1",
            "--filename",
            &path,
        ])
    };
    let stored = || {
        server.query(
            "SELECT l.code, x.`key`, x.translation, x.units FROM pt_pair_xlate x \
             JOIN pt_language l ON l.idx_language = x.idx_language \
             WHERE x.idx_pair_xlate_group = 1 ORDER BY x.`key`",
        )
    };
    assert_imported("import key_translation", &import(&keys));
    let first = stored();
    assert_eq!(first.len(), rows(&keys).len(), "{first:?}");

    // The first row renamed, and a row in a language pattoo lacks.
    let renamed = &rows(&keys)[0];
    let mut changed: Vec<&str> = keys.lines().collect();
    let line = format!("en,{},Renamed,{}", renamed[1], renamed[3]);
    changed[1] = &line;
    changed.push("xx,pattoo_agentd_test_unknown_language,Unknown,Count");
    let output = import(&(changed.join("\n") + "\n"));
    let printed = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{output:?}");
    assert!(
        printed.contains("Language code \"xx\""),
        "no word of the skipped row: {printed}"
    );
    let second = stored();
    assert_eq!(second.len(), first.len(), "{second:?}");
    let expected: Vec<Vec<String>> = first
        .iter()
        .map(|row| {
            if row[1] == renamed[1] {
                vec![
                    row[0].clone(),
                    row[1].clone(),
                    "Renamed".to_owned(),
                    row[3].clone(),
                ]
            } else {
                row.clone()
            }
        })
        .collect();
    assert_eq!(second, expected);
}
