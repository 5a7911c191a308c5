//! No configuration file can make `config::load` fail with anything but
//! configuration errors.
//!
//! The trees come from the real schema: the shipped configuration, every
//! shipped example and the Python Modbus file, so every key the agent reads
//! is reached. Two passes:
//!
//! - exhaustive: every node of every seed (leaf or not) replaced in turn by
//!   every kind of YAML value in [`kinds`], and every mapping key removed;
//! - random (proptest): several nodes replaced at once, for
//!   `PATTOO_FUZZ_SECONDS` seconds (CI sets it; a plain `cargo test` runs a
//!   few hundred cases).
//!
//! `config::load` turns a panic into an error that says
//! [`config::INTERNAL_ERROR`], so a failure here is that message (the panic
//! itself is printed above it by the panic hook).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pattoo_agentd::config;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestRunner};
use serde_norway::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// One configuration directory: file name and parsed content.
#[derive(Clone, Debug)]
struct Seed {
    name: String,
    files: Vec<(String, Value)>,
}

fn parse(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn seeds() -> Vec<Seed> {
    let pattoo = parse(&repo("config/pattoo.yaml"));
    let mut seeds = vec![Seed {
        name: "config".into(),
        files: vec![
            ("pattoo.yaml".into(), pattoo.clone()),
            (
                "pattoo_agentd.yaml".into(),
                parse(&repo("config/pattoo_agentd.yaml")),
            ),
        ],
    }];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo("config/examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    for example in examples {
        seeds.push(Seed {
            name: example.display().to_string(),
            files: vec![
                ("pattoo.yaml".into(), pattoo.clone()),
                ("pattoo_agentd.yaml".into(), parse(&example)),
            ],
        });
    }
    seeds.push(Seed {
        name: "python modbus".into(),
        files: vec![
            ("pattoo.yaml".into(), pattoo.clone()),
            (
                "pattoo_agent_modbustcpd.yaml".into(),
                parse(&repo(
                    "tests/data/modbus/compat/python_docs_example/pattoo_agent_modbustcpd.yaml",
                )),
            ),
        ],
    });
    // Sections the shipped files leave out.
    seeds.push(Seed {
        name: "every section".into(),
        files: vec![
            (
                "pattoo.yaml".into(),
                serde_norway::from_str(
                    "pattoo: {log_level: debug, log_directory: /tmp, cache_directory: /tmp, daemon_directory: /tmp, language: en}\n\
                     pattoo_agent_api: {ip_address: 127.0.0.1, ip_bind_port: 20201}\n",
                )
                .unwrap(),
            ),
            (
                "pattoo_agentd.yaml".into(),
                serde_norway::from_str(
                    "pattoo_agentd:\n  polling_interval: 10\n  hostname: h\n\
                     \x20 delivery: {timeout_ms: 1000, scheme: https, ca_file: /x, client_certificate: /c, client_key: /k, retry_initial_ms: 1, retry_max_ms: 2, replay_per_second: 3}\n\
                     \x20 cache: {max_bytes: 1000, max_age: 1d}\n\
                     \x20 pollers:\n\
                     \x20   - {name: v, type: command, command: [x], format: {type: value, key: k, data_type: float}}\n\
                     \x20   - {name: n, type: command, command: [x], format: nagios}\n\
                     \x20   - {name: h, type: http, urls: [http://a/], auth: {basic: {username: u, password: {file: /p}}}, format: {type: json, values: [{pointer: /a, key: a}]}}\n",
                )
                .unwrap(),
            ),
        ],
    });
    seeds
}

/// Every kind of YAML value, with the edge cases of each.
fn kinds() -> Vec<Value> {
    let yaml = |text: &str| -> Value { serde_norway::from_str(text).unwrap() };
    vec![
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        yaml("0"),
        yaml("-1"),
        yaml("5"),
        yaml("18446744073709551615"),
        yaml("-9223372036854775808"),
        yaml("1.5"),
        yaml("-0.0"),
        yaml("1e308"),
        yaml(".nan"),
        yaml(".inf"),
        Value::String(String::new()),
        Value::String("x".into()),
        Value::String("18446744073709551s 1616ms".into()),
        Value::String("/".into()),
        Value::String("\u{0}".into()),
        yaml("[]"),
        yaml("[1]"),
        yaml("[[]]"),
        yaml("[{}]"),
        yaml("{}"),
        yaml("{a: 1}"),
        yaml("{1: 2}"),
        yaml("{'': null}"),
        yaml("!tag x"),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Key(Value),
    Index(usize),
}

/// Every node's path in `value`, the root first.
fn paths(value: &Value) -> Vec<Vec<Step>> {
    fn walk(value: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(at.clone());
        match value {
            Value::Mapping(map) => {
                for (key, child) in map {
                    at.push(Step::Key(key.clone()));
                    walk(child, at, out);
                    at.pop();
                }
            }
            Value::Sequence(items) => {
                for (i, child) in items.iter().enumerate() {
                    at.push(Step::Index(i));
                    walk(child, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn node_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut current = value;
    for step in path {
        current = match (step, current) {
            (Step::Key(key), Value::Mapping(map)) => map.get_mut(key)?,
            (Step::Index(i), Value::Sequence(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

fn remove(value: &mut Value, path: &[Step]) {
    if let Some((Step::Key(key), parent)) = path.split_last() {
        if let Some(Value::Mapping(map)) = node_mut(value, parent) {
            map.remove(key);
        }
    }
}

/// Loads the files; the error if loading failed otherwise than with
/// configuration errors.
fn load(dir: &Path, files: &[(String, Value)]) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for (name, value) in files {
        std::fs::write(dir.join(name), serde_norway::to_string(value).unwrap()).unwrap();
    }
    match config::load(dir) {
        Err(errors) if errors.to_string().contains(config::INTERNAL_ERROR) => {
            let texts: Vec<String> = files
                .iter()
                .map(|(name, value)| {
                    format!("--- {name}\n{}", serde_norway::to_string(value).unwrap())
                })
                .collect();
            Err(format!("{errors}\n{}", texts.join("")))
        }
        _ => Ok(()),
    }
}

#[test]
fn every_node_of_every_shipped_file_replaced_by_every_yaml_kind_gives_errors_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let kinds = kinds();
    let mut failures = Vec::new();
    let mut cases = 0;
    for seed in seeds() {
        assert!(load(dir.path(), &seed.files).is_ok(), "{}", seed.name);
        for (file, (_, tree)) in seed.files.iter().enumerate() {
            for path in paths(tree) {
                let mut variants: Vec<Value> = kinds
                    .iter()
                    .map(|kind| {
                        let mut tree = tree.clone();
                        *node_mut(&mut tree, &path).unwrap() = kind.clone();
                        tree
                    })
                    .collect();
                let mut without = tree.clone();
                remove(&mut without, &path);
                variants.push(without);
                for variant in variants {
                    let mut files = seed.files.clone();
                    files[file].1 = variant;
                    cases += 1;
                    if let Err(failure) = load(dir.path(), &files) {
                        failures.push(failure);
                    }
                }
            }
        }
    }
    assert!(
        cases > 1000,
        "only {cases} cases: the seeds lost their content"
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} files failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn several_nodes_replaced_at_once_give_errors_not_a_panic() {
    let budget = std::env::var("PATTOO_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let seeds = seeds();
    let kinds = kinds();
    let dir = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..seeds.len(),
        any::<Index>(),
        prop::collection::vec((any::<Index>(), 0..kinds.len() + 1), 1..6),
    );
    let deadline = budget.map(|budget| Instant::now() + budget);
    let mut runs = 0u64;
    loop {
        match deadline {
            Some(deadline) if Instant::now() >= deadline => break,
            None if runs >= 300 => break,
            _ => {}
        }
        runs += 1;
        let case = strategy.new_tree(&mut runner).unwrap();
        let result = runner.run_one(case, |(seed, file, changes)| {
            let seed = &seeds[seed];
            let mut files = seed.files.clone();
            let file = file.index(files.len());
            let tree = &mut files[file].1;
            for (node, kind) in changes {
                let all = paths(tree);
                let path = node.get(&all).clone();
                match kinds.get(kind) {
                    Some(kind) => {
                        if let Some(node) = node_mut(tree, &path) {
                            *node = kind.clone();
                        }
                    }
                    None => remove(tree, &path),
                }
            }
            load(dir.path(), &files).map_err(TestCaseError::fail)
        });
        if let Err(failure) = result {
            panic!("after {runs} runs: {failure}");
        }
    }
    eprintln!("{runs} random configurations loaded without a panic");
}
