//! The spoke server against clients on loopback: a Python-style client
//! (urllib and json, as the Python hub reads a spoke), this agent's hub,
//! and requests Flask would answer otherwise. The spoke serves a command
//! poller.
#![cfg(feature = "command")]

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::receiver::TestServer;
use pattoo_agentd::config;
use pattoo_agentd::pollers::PollerEnv;
use pattoo_agentd::spoke::{self, Spoke, SpokeSettings};
use tokio::sync::watch;

const SPOKE_ID: &str = "5b0a0e1fd7c1f4b1d4a1b5e0f6c3c2a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3";

/// A configuration directory whose `pattoo_agentd.yaml` has `spokes`
/// (indented entries), posting to `server_port`.
fn config_dir(server_port: u16, spokes: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path(), dir.path(), server_port);
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        format!("pattoo_agentd:\n  self_monitoring: false\n  spokes:\n{spokes}"),
    )
    .unwrap();
    common::write_agent_id(dir.path(), "pattoo_agent_os_spoked", SPOKE_ID);
    dir
}

/// A spoke entry serving `program` (a script printing `key value` lines).
fn spoke_entry(program: &Path, extra: &str) -> String {
    format!(
        "    - listen: 127.0.0.1:0\n{extra}      poller:\n        name: host\n        type: command\n        agent_program: pattoo_agent_os_spoked\n        command: [{}]\n        format: keyvalue\n        metadata: {{site: Zürich \"Nord\"}}\n",
        program.display()
    )
}

fn script(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("metrics.sh");
    common::write_executable(&path, &format!("#!/bin/sh\n{text}\n"));
    path
}

/// A running spoke server for the first spoke of `dir`'s configuration.
struct Running {
    address: SocketAddr,
    _stop: watch::Sender<bool>,
}

impl Running {
    /// The URL of `path` on this spoke.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

async fn serve(dir: &Path) -> Running {
    let settings = config::load(dir).unwrap_or_else(|e| panic!("{e}"));
    serve_spoke(&settings.spokes[0]).await
}

/// Serves `spoke` as host `spoke-host` until the result is dropped.
async fn serve_spoke(spoke: &SpokeSettings) -> Running {
    let env = PollerEnv {
        hostname: "spoke-host".to_owned(),
    };
    let server = Spoke::new(spoke, SPOKE_ID.to_owned(), &env).unwrap();
    let listener = spoke::listen(spoke).await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(Arc::new(server).serve(listener, stopped));
    Running {
        address,
        _stop: stop,
    }
}

/// Runs Python code with the URL as `sys.argv[1]`; its stdout.
async fn python(code: &'static str, url: String) -> String {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(common::python::python())
            .args(["-c", code, &url])
            .stdin(Stdio::null())
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// Reads the spoke as the Python hub does (`urllib.request.urlopen`,
/// `json.loads`) and prints `same` when the text is what Flask's `jsonify`
/// writes for that value with the pair ids as the integers
/// `pattoo_shared` keys them by (the real Flask where Python has it, else
/// what its JSON provider does: compact, keys sorted, ASCII, a trailing
/// newline), then the content type and the value.
const JSONIFY_CHECK: &str = r#"
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as answer:
    text = answer.read().decode('ascii')
    kind = answer.headers['Content-Type']
value = json.loads(text)
pairs = value['pattoo_datapoints']['key_value_pairs']
value['pattoo_datapoints']['key_value_pairs'] = {int(k): v for k, v in pairs.items()}
try:
    from flask import Flask, jsonify
    with Flask('spoke').app_context():
        flask = jsonify(value).get_data(as_text=True)
except ImportError:
    flask = json.dumps(value, separators=(',', ':'), sort_keys=True, ensure_ascii=True) + '\n'
print('same' if text == flask else 'DIFFERENT:\n' + text + '\n' + flask)
print(kind)
print(json.dumps(json.loads(text)))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_style_client_gets_from_our_spoke_what_flasks_jsonify_writes() {
    let dir = tempfile::tempdir().unwrap();
    // Twelve readings: pair ids past 9, which sort as numbers.
    let program = script(
        dir.path(),
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo \"reading_$i $i.5\"; done",
    );
    let config = config_dir(1, &spoke_entry(&program, ""));
    let running = serve(config.path()).await;
    let printed = python(JSONIFY_CHECK, running.url("/pattoo-agent-os/300")).await;
    let mut lines = printed.lines();
    assert_eq!(lines.next(), Some("same"), "{printed}");
    assert_eq!(lines.next(), Some("application/json"));
    let value: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(value["pattoo_agent_id"], SPOKE_ID);
    assert_eq!(value["pattoo_agent_polling_interval"], 300_000);
    let pairs = value["pattoo_datapoints"]["key_value_pairs"]
        .as_object()
        .unwrap();
    let has = |key: &str, wanted: serde_json::Value| {
        pairs
            .values()
            .any(|pair| pair[0] == key && pair[1] == wanted)
    };
    assert!(has("pattoo_agent_program", "pattoo_agent_os_spoked".into()));
    assert!(has("pattoo_agent_id", SPOKE_ID.into()));
    assert!(has("site", "Zürich \"Nord\"".into()), "{pairs:?}");
    assert!(has("pattoo_value", 12.5.into()));
    assert_eq!(
        value["pattoo_datapoints"]["datapoint_pairs"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
}

#[cfg(feature = "hub")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_hub_relays_our_spokes_answer_whole_under_the_hubs_id() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "echo 'load 0.25'; echo 'users 3'");
    let config = config_dir(server.addr.port(), &spoke_entry(&program, ""));
    let running = serve(config.path()).await;
    std::fs::write(
        config.path().join("pattoo_agent_os_hubd.yaml"),
        format!(
            "pattoo_agent_os_hubd:\n  polling_interval: 60\n  ip_targets:\n    - {{ip_address: 127.0.0.1, ip_bind_port: {}}}\n",
            running.address.port()
        ),
    )
    .unwrap();
    common::run_agentd(config.path(), &["once"]);
    let received = server.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let hub_id = std::fs::read_to_string(
        config
            .path()
            .join("daemon/agent_id/pattoo_agent_os_hubd.agent_id"),
    )
    .unwrap();
    assert_eq!(received[0].agent_id, hub_id.trim());
    let text = String::from_utf8(received[0].bytes.clone()).unwrap();
    assert!(
        text.starts_with(&format!(
            "{{\"pattoo_agent_id\": \"{SPOKE_ID}\", \"pattoo_agent_polling_interval\": 60000, "
        )),
        "the spoke's body, as the Python hub writes it: {text}"
    );
    assert!(
        text.contains("[\"pattoo_agent_program\", \"pattoo_agent_os_spoked\"]"),
        "{text}"
    );
    assert!(
        text.contains("[\"site\", \"Z\\u00fcrich \\\"Nord\\\"\"]"),
        "{text}"
    );
    assert!(text.contains("[\"pattoo_value\", 0.25]"), "{text}");
    assert!(!text.contains("pattoo_agent_os_hubd"), "{text}");
}

/// Status, `Allow` and body of a request made with reqwest.
async fn ask(method: &str, url: &str) -> (u16, Option<String>, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let allow = response
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, allow, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_paths_and_methods_are_answered_as_flask_answers_them() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "echo 'load 1'");
    let config = config_dir(
        1,
        &spoke_entry(&program, "      route: /pattoo-agent-linux/\n"),
    );
    let running = serve(config.path()).await;
    for path in [
        "/pattoo-agent-os/300",
        "/pattoo-agent-linux/",
        "/pattoo-agent-linux/-5",
        "/pattoo-agent-linux/3.5",
        "/pattoo-agent-linux/300/",
        "/pattoo-agent-linux/99999999999999999999",
        "/",
    ] {
        let (status, _, body) = ask("GET", &running.url(path)).await;
        assert_eq!(status, 404, "{path}");
        assert!(body.contains("404 Not Found"), "{body}");
    }
    let (status, allow, _) = ask("POST", &running.url("/pattoo-agent-linux/300")).await;
    assert_eq!(
        (status, allow.as_deref()),
        (405, Some("GET, HEAD, OPTIONS"))
    );
    let (status, allow, body) = ask("OPTIONS", &running.url("/pattoo-agent-linux/300")).await;
    assert_eq!(
        (status, allow.as_deref(), body.as_str()),
        (200, Some("GET, HEAD, OPTIONS"), "")
    );
    let (status, _, body) = ask("HEAD", &running.url("/pattoo-agent-linux/300")).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, _, body) = ask("GET", &running.url("/pattoo-agent-linux/0300")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"pattoo_agent_polling_interval\":300000,"),
        "{body}"
    );
    let (status, _, body) = ask("GET", &running.url("/pattoo-agent-linux/0")).await;
    assert_eq!(status, 200);
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["pattoo_agent_polling_interval"], 0);
    assert_eq!(value["pattoo_agent_id"], SPOKE_ID);
    assert_eq!(
        value["pattoo_datapoints"],
        serde_json::json!({"datapoint_pairs": [], "key_value_pairs": {}})
    );
    assert!(
        body.ends_with("}}\n") && body.starts_with("{\"pattoo_agent_id\":"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_poll_is_a_500_and_a_client_outside_allow_is_refused_without_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "echo broken >&2; exit 2");
    let config = config_dir(1, &spoke_entry(&program, ""));
    let running = serve(config.path()).await;
    let (status, _, body) = ask("GET", &running.url("/pattoo-agent-os/300")).await;
    assert_eq!(status, 500);
    assert!(
        !body.contains("broken"),
        "the reason is logged, not sent: {body}"
    );

    let counted = dir.path().join("polls");
    let program = script(
        dir.path(),
        &format!("echo x >> {}; echo 'load 1'", counted.display()),
    );
    let config = config_dir(
        1,
        &spoke_entry(&program, "      allow: [10.0.0.0/8, 'fd00::/8']\n"),
    );
    let running = serve(config.path()).await;
    let (status, _, _) = ask("GET", &running.url("/pattoo-agent-os/300")).await;
    assert_eq!(status, 403);
    assert!(!counted.exists(), "no poll for a refused client");

    let config = config_dir(1, &spoke_entry(&program, "      allow: 127.0.0.0/8\n"));
    let running = serve(config.path()).await;
    let (status, _, _) = ask("GET", &running.url("/pattoo-agent-os/300")).await;
    assert_eq!(status, 200);
    assert!(counted.exists());
}

#[test]
fn the_service_refuses_to_start_when_a_spokes_port_is_taken_and_says_which() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "echo 'load 1'");
    let config = config_dir(
        1,
        &spoke_entry(&program, "").replace("127.0.0.1:0", &address.to_string()),
    );
    let mut child = common::agentd(config.path())
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent kept running with its spoke's port taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("spoke host: cannot listen on {address}")),
        "{stderr}"
    );
    drop(taken);
}

#[test]
fn a_spoke_entry_is_checked_like_a_poller_and_every_mistake_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "echo 'load 1'");
    let on_5999 = spoke_entry(&program, "").replace("127.0.0.1:0", "127.0.0.1:5999");
    let config = config_dir(
        1,
        &format!(
            "{on_5999}{on_5999}{}    - route: 'a b'\n      allow: [10.0.0.0/33]\n      poller: {{name: x, type: command, polling_interval: 5, command: [/bin/true], format: value}}\n    - listen: 127.0.0.1:0\n",
            spoke_entry(&program, ""),
        ),
    );
    let errors = config::load(config.path()).unwrap_err().to_string();
    for expected in [
        "pattoo_agentd.spokes[1].listen: spokes[0] already listens on 127.0.0.1:5999",
        "pattoo_agentd.spokes[3].route: expected a path such as pattoo-agent-os",
        "pattoo_agentd.spokes[3].allow: \"10.0.0.0/33\" is not an IP address or network",
        "pattoo_agentd.spokes[3].poller.polling_interval: a spoke's poller is polled when asked",
        "pattoo_agentd.spokes[4]: missing `poller`",
    ] {
        assert!(errors.contains(expected), "{expected}\n{errors}");
    }
    assert!(
        !errors.contains("spokes[2]"),
        "two spokes on port 0 do not clash: {errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_its_spokes_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "echo 'load 0.5'");
    let config = config_dir(1, &spoke_entry(&program, ""));
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = common::agentd(config.path())
        .arg("run")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let url = loop {
        let text = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
        if let Some(at) = text.find("spoke serving http://") {
            let rest = &text[at + "spoke serving ".len()..];
            let end = rest.find("/<interval>").unwrap();
            break rest[..end].to_owned();
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the service did not say where its spoke listens:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, _, body) = ask("GET", &format!("{url}/60")).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("[\"pattoo_value\",0.5]"), "{body}");
    assert!(
        body.contains("\"pattoo_agent_polling_interval\":60000,"),
        "{body}"
    );
}

/// The Python hub's relay (`pattoo_shared.phttp.PassiveAgent.relay`, what
/// each cycle of `pattoo_agent_os_hubd` runs for a spoke), for the URL in
/// `sys.argv[1]`, posting as the agent id in `sys.argv[2]`.
const PYTHON_HUB: &str = r#"
import sys
from pattoo_shared import log
from pattoo_shared.phttp import PassiveAgent
log.env()
PassiveAgent('pattoo_agent_os_hubd', sys.argv[2], sys.argv[1]).relay()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_hub_relays_our_spokes_answer_to_the_server() {
    let path = match common::python::try_packages_path(
        "pattoo-shared",
        &["PattooShared==0.0.84", "PyYAML", "requests"],
        "import pattoo_shared.phttp",
    ) {
        Ok(path) => path,
        Err(why) => {
            eprintln!("the_python_hub_relays_our_spokes_answer: skipped: {why}");
            return;
        }
    };
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "echo 'load 0.75'");
    let config = config_dir(server.addr.port(), &spoke_entry(&program, ""));
    for made in ["log", "cache", "daemon"] {
        std::fs::create_dir_all(config.path().join(made)).unwrap();
    }
    let running = serve(config.path()).await;
    let hub_id = "a".repeat(64);
    let url = running.url("/pattoo-agent-os/300");
    let config_path = config.path().to_owned();
    let hub = hub_id.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(common::python::python())
            .args(["-c", PYTHON_HUB, &url, &hub])
            .env("PYTHONPATH", path)
            .env("PATTOO_CONFIGDIR", config_path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = server.received();
    assert_eq!(
        received.len(),
        1,
        "the Python hub posted nothing: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(received[0].agent_id, hub_id);
    let text = String::from_utf8(received[0].bytes.clone()).unwrap();
    assert!(
        text.starts_with(&format!("{{\"pattoo_agent_id\": \"{SPOKE_ID}\", ")),
        "{text}"
    );
    assert!(
        text.contains("[\"site\", \"Z\\u00fcrich \\\"Nord\\\"\"]"),
        "{text}"
    );
    assert!(text.contains("[\"pattoo_value\", 0.75]"), "{text}");
    // What our hub would post for the same answer is what Python posted.
    let ours = pattoo_agentd::model::RelayedBody::from_answer(&received[0].bytes).unwrap();
    assert_eq!(String::from_utf8(ours.json).unwrap(), text);
}

/// The checksums of a body's datapoints.
fn checksums(body: &serde_json::Value) -> std::collections::BTreeSet<String> {
    common::body::datapoints(body)
        .iter()
        .map(|pairs| {
            let (_, checksum) = pairs
                .iter()
                .find(|(key, _)| key == "pattoo_checksum")
                .expect("every datapoint has a checksum");
            checksum
                .as_str()
                .expect("a checksum is a string")
                .to_owned()
        })
        .collect()
}

#[cfg(feature = "os")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_spokes_file_serves_this_hosts_figures_with_the_os_pollers_identities() {
    use pattoo_agentd::model::{build, AgentContext};
    use pattoo_agentd::pollers::{os, Poller};

    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path(), dir.path(), 9);
    std::fs::write(
        dir.path().join("pattoo_agent_os_spoked.yaml"),
        "pattoo_agent_os_spoked:\n  ip_listen_address: 127.0.0.1\n  ip_bind_port: 5000\n",
    )
    .unwrap();
    common::write_agent_id(dir.path(), "pattoo_agent_os_spoked", SPOKE_ID);
    let mut settings = config::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(settings.spokes.len(), 1, "the file makes one spoke");
    // Everything as the file says but the port, which the OS picks.
    settings.spokes[0].listen.set_port(0);
    let running = serve_spoke(&settings.spokes[0]).await;

    let printed = python(JSONIFY_CHECK, running.url("/pattoo-agent-os/300")).await;
    let mut lines = printed.lines();
    assert_eq!(lines.next(), Some("same"), "{printed}");
    assert_eq!(lines.next(), Some("application/json"), "{printed}");
    let served: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(served["pattoo_agent_id"], SPOKE_ID);
    assert_eq!(served["pattoo_agent_polling_interval"], 300_000);
    let datapoints = common::body::datapoints(&served);
    assert!(
        datapoints.iter().all(|pairs| pairs.contains(&(
            "pattoo_agent_program".to_owned(),
            "pattoo_agent_os_spoked".into()
        ))),
        "every datapoint is the spoke program's: {served}"
    );

    // The identities are the os poller's under the spoke's program, which
    // the os tests hold equal to the Python collector's.
    let direct = os::poller_settings(os::OS_SPOKED, Duration::from_secs(300));
    let env = PollerEnv {
        hostname: "spoke-host".to_owned(),
    };
    let mut poller = Poller::new(&direct, &env).unwrap();
    let targets = poller.poll().await.unwrap().readings().unwrap();
    let agent = AgentContext {
        agent_id: SPOKE_ID,
        agent_program: os::OS_SPOKED,
        hostname: "spoke-host",
        polling_interval_ms: 300_000,
    };
    let body = build(&agent, 0, &targets).body.expect("a body");
    let expected: serde_json::Value = serde_json::from_slice(&body.json).unwrap();
    assert_eq!(checksums(&served), checksums(&expected));
}
