//! `type: opcua` against asyncua's server on loopback: every node type it
//! serves, every string form of node id, unknown nodes, wrong addresses,
//! a server that refuses the session, and endpoints that never answer or
//! stall mid-handshake. Each costs its own timeout, never a panic.
#![cfg(feature = "opcua")]

use crate::common;
use crate::common::Readings;

use std::time::{Duration, Instant};

use common::asyncua::{self, Stall};
use pattoo_agentd::model::{DataPoint, DataType, TargetData, Value};
use pattoo_agentd::pollers::Poller;

/// The one poller of a `pattoo_agentd.yaml` holding `poller` (an entry
/// indented by four spaces), with the password `secret` in the file
/// `PASSWORD_FILE` names, which lives as long as the directory returned.
fn poller(poller: &str) -> (Poller, tempfile::TempDir) {
    let (dir, password) = common::poller::secret_file("secret");
    let poller = common::poller::from_entries(&poller.replace("PASSWORD_FILE", &password));
    (poller, dir)
}

fn entry(servers: &[String], extra: &str, nodes: &[&str]) -> String {
    let nodes: Vec<String> = nodes
        .iter()
        .map(|n| format!("        - {{node: \"{n}\"}}\n"))
        .collect();
    format!(
        "    - name: plant\n      type: opcua\n      servers: {servers:?}\n      timeout_ms: 1000\n{extra}      nodes:\n{}",
        nodes.concat()
    )
}

fn values(targets: &[TargetData]) -> Vec<(String, Value, DataType)> {
    targets
        .iter()
        .flat_map(|t| &t.datapoints)
        .map(|d: &DataPoint| (d.key.as_str().to_owned(), d.value.clone(), d.data_type))
        .collect()
}

#[tokio::test]
async fn every_node_type_the_server_serves_is_posted_with_its_own_kind_or_logged() {
    let Some(server) = asyncua::start(&[]) else {
        return;
    };
    let ns = server.namespace;
    let typed = |t: &str| format!("ns={ns};s=T.{t}");
    let nodes = [
        typed("SByte"),
        typed("Byte"),
        typed("Int16"),
        typed("UInt16"),
        format!("ns={ns};i=1001"),
        typed("UInt32"),
        typed("Int64"),
        format!("ns={ns};s=Big"),
        typed("Float"),
        typed("Double"),
        typed("Boolean"),
        typed("String"),
        typed("LocalizedText"),
        format!("ns={ns};g=09087e75-8e5e-499b-954f-f2a9603db28a"),
        format!("ns={ns};b=AQJwYXR0b28="),
        // ServerStatus/State, in namespace 0: an enumeration (Int32).
        "i=2259".to_owned(),
        typed("DateTime"),
        typed("ByteString"),
        typed("Array"),
    ];
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let (mut poller, _dir) = poller(&entry(&[server.url()], "", &nodes));
    let (logs, _guard) = common::logs::capture();
    let targets = poller.readings().await.unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].target, "127.0.0.1");
    let int = |v: i64| (Value::Int(v), DataType::Int);
    let expected = [
        int(-8),
        int(200),
        int(-1600),
        int(65535),
        int(7),
        int(4_294_967_295),
        int(i64::MIN),
        int((1 << 53) + 1),
        // A Float widened exactly, not rounded to its shortest text.
        (Value::Float(21.299999237060547), DataType::Float),
        (Value::Float(-0.5), DataType::Float),
        int(0),
        (Value::Text("text".into()), DataType::String),
        (Value::Text("Open".into()), DataType::String),
        int(11),
        int(12),
        int(0),
    ];
    let got = values(&targets);
    let keys: Vec<&str> = got.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(keys, nodes[..expected.len()], "posted in the order listed");
    let got: Vec<(Value, DataType)> = got.into_iter().map(|(_, v, t)| (v, t)).collect();
    assert_eq!(got, expected);
    let logs = logs.text();
    for (node, kind) in [
        ("DateTime", "DateTime"),
        ("ByteString", "ByteString"),
        ("Array", "Array"),
    ] {
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("T.{node}:")))
            .unwrap_or_else(|| panic!("no log for T.{node}:\n{logs}"));
        assert!(line.contains(kind) && line.contains("not posted"), "{line}");
    }
}

#[tokio::test]
async fn unknown_nodes_are_logged_by_node_and_status_and_the_rest_is_posted() {
    let Some(server) = asyncua::start(&[]) else {
        return;
    };
    let ns = server.namespace;
    let missing = format!("ns={ns};s=Missing");
    let present = format!("ns={ns};s=Temperature");
    let (mut poller, _dir) = poller(&entry(
        &[server.url()],
        "",
        &[&missing, "ns=9;i=5", &present],
    ));
    let (logs, _guard) = common::logs::capture();
    let targets = poller.readings().await.unwrap();
    assert_eq!(
        values(&targets),
        [(present.clone(), Value::Float(21.5), DataType::Float)]
    );
    let logs = logs.text();
    for node in [missing.as_str(), "ns=9;i=5"] {
        let line = logs
            .lines()
            .find(|l| l.contains(node))
            .unwrap_or_else(|| panic!("no log for {node}:\n{logs}"));
        assert!(line.contains("BadNodeIdUnknown"), "{line}");
        assert!(line.contains(&server.url()), "{line}");
    }
}

#[tokio::test]
async fn a_server_that_is_not_there_fails_the_poll_with_its_url_and_others_still_post() {
    let Some(server) = asyncua::start(&[]) else {
        return;
    };
    let closed = format!("opc.tcp://127.0.0.1:{}", asyncua::closed_port());
    let node = format!("ns={};s=Temperature", server.namespace);
    let (mut alone, _dir) = poller(&entry(std::slice::from_ref(&closed), "", &[&node]));
    let (logs, _guard) = common::logs::capture();
    let error = alone.readings().await.unwrap_err().to_string();
    assert!(
        error.contains("none of its 1 OPC UA servers answered"),
        "{error}"
    );
    let logs = logs.text();
    assert!(
        logs.lines()
            .any(|l| l.contains(&closed) && l.contains("cannot reach the server")),
        "{logs}"
    );

    let (mut both, _dir) = poller(&entry(&[closed.clone(), server.url()], "", &[&node]));
    let targets = both.readings().await.unwrap();
    assert_eq!(values(&targets).len(), 1);
}

#[tokio::test]
async fn a_server_that_refuses_the_session_is_told_apart_from_one_that_is_down() {
    let Some(server) = asyncua::start(&["--users", "operator:secret"]) else {
        return;
    };
    let node = format!("ns={};s=Temperature", server.namespace);
    let (logs, _guard) = common::logs::capture();

    let (mut anonymous, _dir) = poller(&entry(&[server.url()], "", &[&node]));
    assert!(anonymous.readings().await.is_err());
    assert!(
        logs.text()
            .contains("offers no endpoint with security None and anonymous users"),
        "{}",
        logs.text()
    );

    let wrong = "      user: intruder\n      password: {file: PASSWORD_FILE}\n";
    let (mut intruder, _dir) = poller(&entry(&[server.url()], wrong, &[&node]));
    assert!(intruder.readings().await.is_err());
    assert!(
        logs.text().contains("the server refused the session"),
        "{}",
        logs.text()
    );

    let right = "      user: operator\n      password: {file: PASSWORD_FILE}\n";
    let (mut operator, _dir) = poller(&entry(&[server.url()], right, &[&node]));
    let targets = operator.readings().await.unwrap();
    assert_eq!(values(&targets)[0].1, Value::Float(21.5));
}

#[tokio::test]
async fn endpoints_that_never_answer_or_stall_mid_handshake_cost_only_their_own_timeout() {
    let Some(server) = asyncua::start(&[]) else {
        return;
    };
    let silent = format!(
        "opc.tcp://127.0.0.1:{}",
        asyncua::stalling_endpoint(Stall::Silent)
    );
    let half = format!(
        "opc.tcp://127.0.0.1:{}",
        asyncua::stalling_endpoint(Stall::HalfAck)
    );
    let node = format!("ns={};s=Temperature", server.namespace);
    let (mut poller, _dir) = poller(&entry(
        &[silent.clone(), half.clone(), server.url()],
        "",
        &[&node],
    ));
    let (logs, _guard) = common::logs::capture();
    for _ in 0..2 {
        let started = Instant::now();
        let targets = poller.readings().await.unwrap();
        // Timeouts of 1 s each, concurrently; a generous bound for a busy
        // machine, far below what polling the servers one after another
        // without timeouts would take (forever).
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(
            values(&targets),
            [(node.clone(), Value::Float(21.5), DataType::Float)]
        );
    }
    let logs = logs.text();
    for url in [&silent, &half] {
        assert!(
            logs.lines().any(|l| l.contains(url.as_str())
                && l.contains("no answer within 1000 ms while connecting")),
            "{url}:\n{logs}"
        );
    }
}

#[tokio::test]
async fn a_lost_session_is_made_again_at_the_next_poll() {
    let Some(server) = asyncua::start(&[]) else {
        return;
    };
    let port = server.port.to_string();
    let node = format!("ns={};s=Temperature", server.namespace);
    let (mut poller, _dir) = poller(&entry(&[server.url()], "", &[&node]));
    assert_eq!(values(&poller.readings().await.unwrap()).len(), 1);
    assert_eq!(
        values(&poller.readings().await.unwrap()).len(),
        1,
        "the kept session reads again"
    );
    drop(server);
    assert!(poller.readings().await.is_err(), "the server is gone");
    let Some(_again) = asyncua::start(&["--port", &port]) else {
        return;
    };
    assert_eq!(
        values(&poller.readings().await.unwrap()).len(),
        1,
        "a new session to the server back on its port"
    );
}

/// A poller of `security` to the secure server whose certificates are in
/// `certs`, keeping its certificate store in `pki`.
fn secure_entry(
    url: &str,
    security: &str,
    certs: &std::path::Path,
    pki: &std::path::Path,
    node: &str,
) -> String {
    entry(
        &[url.to_owned()],
        &format!(
            "      security: {security}\n      certificate: {}\n      private_key: {}\n      pki_dir: {}\n",
            certs.join("client.der").display(),
            certs.join("client.pem").display(),
            pki.display()
        ),
        &[node],
    )
}

#[tokio::test]
async fn basic256sha256_sessions_read_once_the_operator_trusts_the_servers_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let Some(server) = asyncua::start(&["--secure", &certs.path().display().to_string()]) else {
        return;
    };
    let node = format!("ns={};s=Temperature", server.namespace);
    let pki = tempfile::tempdir().unwrap();
    let (logs, _guard) = common::logs::capture();

    let (mut plain, _dir) = poller(&entry(&[server.url()], "", &[&node]));
    assert!(plain.readings().await.is_err());
    assert!(
        logs.text()
            .contains("offers no endpoint with security None"),
        "{}",
        logs.text()
    );

    let entry = secure_entry(
        &server.url(),
        "sign_and_encrypt",
        certs.path(),
        pki.path(),
        &node,
    );
    let (mut encrypted, _dir) = poller(&entry);
    // An unknown server certificate is refused and put aside for the
    // operator to look at.
    assert!(encrypted.readings().await.is_err());
    let rejected: Vec<_> = std::fs::read_dir(pki.path().join("rejected"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(rejected.len(), 1, "{}", logs.text());
    assert!(
        logs.text().contains("move it to"),
        "the log says what to do: {}",
        logs.text()
    );
    // Trusted by moving it, it is taken at the next poll.
    let trusted = pki
        .path()
        .join("trusted")
        .join(rejected[0].file_name().unwrap());
    std::fs::rename(&rejected[0], &trusted).unwrap();
    let targets = encrypted
        .readings()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs.text()));
    assert_eq!(
        values(&targets),
        [(node.clone(), Value::Float(21.5), DataType::Float)]
    );

    let entry = secure_entry(&server.url(), "sign", certs.path(), pki.path(), &node);
    let (mut signed, _dir) = poller(&entry);
    let targets = signed
        .readings()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs.text()));
    assert_eq!(values(&targets).len(), 1);
}

#[tokio::test]
async fn more_nodes_than_one_read_decodes_are_read_in_several_and_all_posted() {
    let Some(server) = asyncua::start(&["--bulk", "1500"]) else {
        return;
    };
    let nodes: Vec<String> = (0..1500)
        .map(|i| format!("ns={};s=Bulk.{i}", server.namespace))
        .collect();
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let (mut poller, _dir) = poller(&entry(&[server.url()], "", &nodes));
    let targets = poller.readings().await.unwrap();
    let got = values(&targets);
    assert_eq!(got.len(), 1500);
    assert_eq!(
        got[1499],
        (
            nodes[1499].to_owned(),
            Value::Float(1499.0),
            DataType::Float
        )
    );
}
