//! The reference library's worked cases (tests/data/wire.json), run through
//! the real binary exactly as an operator would: a `command` poller prints
//! the case's datapoints document and `once --print` shows the body.

use crate::common;
use crate::common::body::datapoints;
use serde_json::Value;
use sha2::{Digest, Sha512};
use std::path::Path;

/// JSON numbers compare by value (`732.0` equals `732`), as the server sees
/// them; everything else exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn db_identity(datapoint: &[(String, Value)]) -> String {
    let get = |key: &str| {
        common::body::value_of(datapoint, key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let text =
        get("pattoo_agent_id") + &get("pattoo_agent_polled_target") + &get("pattoo_checksum");
    hex::encode(Sha512::digest(text.as_bytes()))
}

fn write_case(dir: &Path, input: &Value) {
    for sub in ["log", "cache", "daemon/agent_id"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let program = input["agent_program"].as_str().unwrap();
    std::fs::write(
        dir.join("daemon/agent_id")
            .join(format!("{program}.agent_id")),
        input["agent_id"].as_str().unwrap(),
    )
    .unwrap();
    let doc = serde_json::json!({ "targets": input["targets"] });
    std::fs::write(dir.join("doc.json"), doc.to_string()).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_level: debug\n  log_directory: {d}/log\n  cache_directory: {d}/cache\n  \
             daemon_directory: {d}/daemon\n  language: en\npattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: 9\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pattoo_agentd.yaml"),
        format!(
            "pattoo_agentd:\n  hostname: {}\n  pollers:\n    - name: vector\n      type: command\n      \
             agent_program: {program}\n      polling_interval: {}\n      command: [cat, {}]\n      format: datapoints\n",
            input["agent_hostname"],
            input["polling_interval_s"],
            serde_json::to_string(&dir.join("doc.json")).unwrap()
        ),
    )
    .unwrap();
}

#[test]
fn once_print_matches_every_reference_case() {
    let cases: Vec<Value> = serde_json::from_str(include_str!("../data/wire.json"))
        .expect("tests/data/wire.json is valid");
    assert!(cases.len() >= 7);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_case(dir.path(), &case["input"]);
        let output = common::agentd(dir.path())
            .args(["once", "--print"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();

        let expected = &case["expected_body"];
        if expected.is_null() {
            assert!(
                lines.is_empty(),
                "{name}: printed a body for a poll with nothing valid"
            );
            // Readings the wire format drops are said whatever the log
            // level; posting nothing is then what the format prescribes,
            // so `once` succeeds (the shared vector checker relies on it).
            assert!(output.status.success(), "{name}: {stderr}");
            assert!(
                stderr.contains("pattoo-agentd: poller vector: read no valid datapoint"),
                "{name}: {stderr}"
            );
            continue;
        }
        assert!(output.status.success(), "{name}: {stderr}");
        assert_eq!(lines.len(), 1, "{name}: one body per poller and poll");
        let body: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            body.as_object().unwrap().len(),
            4,
            "{name}: exactly four top-level keys"
        );
        for key in ["pattoo_agent_id", "pattoo_agent_polling_interval"] {
            assert_eq!(body[key], expected[key], "{name}: {key}");
        }
        assert!(body["pattoo_agent_timestamp"].as_u64().unwrap() > 1_600_000_000_000);

        let (got, want) = (datapoints(&body), datapoints(expected));
        assert_eq!(got.len(), want.len(), "{name}: datapoint count");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.len(), w.len(), "{name}: pairs of {w:?}");
            for ((gk, gv), (wk, wv)) in g.iter().zip(w) {
                assert_eq!(gk, wk, "{name}: pair order");
                assert!(same(gv, wv), "{name}: {wk} is {gv}, want {wv}");
            }
        }
        let want_ids: Vec<&str> = case["expected_records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["db_checksum_sha512"].as_str().unwrap())
            .collect();
        let got_ids: Vec<String> = got.iter().map(|dp| db_identity(dp)).collect();
        assert_eq!(got_ids, want_ids, "{name}: database identities");

        let pairs = body["pattoo_datapoints"]["key_value_pairs"]
            .as_object()
            .unwrap();
        let mut texts: Vec<String> = pairs.values().map(|p| p.to_string()).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), pairs.len(), "{name}: a pair is listed twice");
    }
}
