//! The hub (`type: hub` and the Python hubs' files) against spokes on
//! loopback: recorded and hand-made Python spoke answers, and spokes that
//! misbehave, through the real binary to a receiver.
#![cfg(feature = "hub")]

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http_server::{self, text, ResponseBody, TestServer as Spoke};
use common::receiver::TestServer;
use hyper::{Request, Response};
use pattoo_agentd::model::RelayedBody;

const PYTHON_SPOKE_ANSWER: &[u8] = include_bytes!("../data/os/python-spoke-answer.json");
const PYTHON_HUB_POSTS: &[u8] = include_bytes!("../data/os/python-hub-posts.json");

/// A configuration directory posting to `server_port`, its state beside it.
fn config_dir(server_port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path(), dir.path(), server_port);
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        "pattoo_agentd:\n  self_monitoring: false\n  delivery: {timeout_ms: 5000}\n",
    )
    .unwrap();
    dir
}

fn agentd(dir: &Path, args: &[&str]) -> Output {
    common::agentd(dir).args(args).output().unwrap()
}

fn agent_id(dir: &Path, program: &str) -> String {
    std::fs::read_to_string(dir.join(format!("daemon/agent_id/{program}.agent_id")))
        .unwrap()
        .trim()
        .to_owned()
}

/// A spoke answering `answer` to every request, noting the paths asked.
async fn spoke(answer: Vec<u8>) -> (Spoke, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let server = http_server::serve(move |request: Request<hyper::body::Incoming>| {
        seen.lock().unwrap().push(request.uri().path().to_owned());
        let answer = answer.clone();
        async move { json(answer) }
    })
    .await;
    (server, asked)
}

fn json(answer: Vec<u8>) -> Response<ResponseBody> {
    let mut response = text(200, answer);
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_python_spoke_answer_is_posted_byte_for_byte_as_the_python_hub_posts_it() {
    let server = TestServer::start().await;
    let (spoke, asked) = spoke(PYTHON_SPOKE_ANSWER.to_vec()).await;
    let dir = config_dir(server.addr.port());
    std::fs::write(
        dir.path().join("pattoo_agent_os_hubd.yaml"),
        format!(
            "pattoo_agent_os_hubd:\n  polling_interval: 300\n  ip_targets:\n    - ip_address: 127.0.0.1\n      ip_bind_port: {}\n",
            spoke.addr.port()
        ),
    )
    .unwrap();
    let output = agentd(dir.path(), &["once"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(*asked.lock().unwrap(), ["/pattoo-agent-os/300"]);
    let received = server.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        received[0].agent_id,
        agent_id(dir.path(), "pattoo_agent_os_hubd"),
        "posted to the hub's own id"
    );
    assert_eq!(
        String::from_utf8_lossy(&received[0].bytes),
        String::from_utf8_lossy(PYTHON_HUB_POSTS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_server_did_not_take_is_cached_under_the_hub_and_replayed_whole() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    server.stop();
    let (spoke, _) = spoke(PYTHON_SPOKE_ANSWER.to_vec()).await;
    let dir = config_dir(port);
    std::fs::write(
        dir.path().join("pattoo_agent_linux_hubd.yaml"),
        format!(
            "ip_targets:\n  - {{ip_address: '::ffff:127.0.0.1', ip_bind_port: {}}}\n",
            spoke.addr.port()
        ),
    )
    .unwrap();
    let output = agentd(dir.path(), &["once"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let hub = agent_id(dir.path(), "pattoo_agent_linux_hubd");
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache").join(&hub))
        .unwrap_or_else(|e| panic!("no cache for the hub: {e}\n{stderr}"))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}\n{stderr}");
    assert_eq!(std::fs::read(&cached[0]).unwrap(), PYTHON_HUB_POSTS);

    server.resume(common::receiver::Mode::Accept).await;
    let output = agentd(dir.path(), &["cache", "replay"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].agent_id, hub);
    assert_eq!(received[0].bytes, PYTHON_HUB_POSTS);
}

/// What Python's `json.dumps(json.loads(text))` writes, or `None` without
/// Python.
fn python_relays(text: &str) -> Option<String> {
    let mut child = Command::new(common::python::python())
        .args([
            "-c",
            "import json, sys; sys.stdout.write(json.dumps(json.loads(sys.stdin.buffer.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let output = child.wait_with_output().ok()?;
    assert!(output.status.success(), "python refused {text}");
    Some(String::from_utf8(output.stdout).unwrap())
}

/// A post body of one datapoint whose value, metadata and target are the
/// given JSON texts.
fn hand_made(value: &str, metadata: &str, target: &str) -> String {
    format!(
        r#"{{"pattoo_agent_id":"spoke","pattoo_agent_polling_interval":300000,"pattoo_agent_timestamp":1796419513720,"pattoo_datapoints":{{"datapoint_pairs":[[0,1,2,3,4,5,6,7,8,9,10]],"key_value_pairs":{{"0":["note",{metadata}],"1":["pattoo_agent_polling_interval","300000"],"2":["pattoo_agent_hostname","h\u00f4te"],"3":["pattoo_agent_id","spoke"],"4":["pattoo_agent_polled_target",{target}],"5":["pattoo_agent_program","pattoo_agent_os_spoked"],"6":["pattoo_key","k"],"7":["pattoo_data_type",101],"8":["pattoo_value",{value}],"9":["pattoo_timestamp",1796419513720],"10":["pattoo_checksum","c"]}}}}}}
"#
    )
}

#[test]
fn hand_made_answers_keep_their_number_kinds_and_text_as_python_relays_them() {
    let cases = [
        hand_made("1.0", r#""caf\u00e9 😀 \ud83d\ude00""#, r#""t""#),
        hand_made("1e20", r#""tab\there \"quoted\" back\\slash \/""#, r#""t""#),
        hand_made(
            "123456789012345678901234567890",
            r#""\ud83d\ude00 pair""#,
            r#""t""#,
        ),
        hand_made("-0", r#""\u0000\u001f\u007f""#, "42"),
        hand_made("0.30000000000000004", r#""ünïcödé""#, r#""t""#),
        hand_made("2.5E-7", r#""""#, r#""t""#),
        hand_made("18446744073709551616", r#""x""#, r#""t""#),
        // Spaces everywhere and a repeated key, as a hand-written spoke might.
        " { \"pattoo_agent_id\" : \"first\" ,\n".to_owned()
            + &hand_made("7", "\"n\"", "\"t\"")[1..],
    ];
    for case in &cases {
        let ours =
            RelayedBody::from_answer(case.as_bytes()).unwrap_or_else(|e| panic!("{case}: {e}"));
        let ours = String::from_utf8(ours.json).unwrap();
        match python_relays(case) {
            Some(python) => assert_eq!(ours, python, "for {case}"),
            None => {
                eprintln!("hand_made_answers_keep_their_number_kinds: skipped, no Python");
                return;
            }
        }
    }
}

/// Spokes that misbehave in each way, and one that answers well.
async fn misbehaving_spokes() -> Vec<(&'static str, Spoke)> {
    let good = spoke(PYTHON_SPOKE_ANSWER.to_vec()).await.0;
    let html = http_server::serve(|_| async {
        text(200, "<!doctype html><html><body>Welcome</body></html>")
    })
    .await;
    let error = http_server::serve(|_| async {
        text(
            500,
            "<!doctype html>\n<title>500 Internal Server Error</title>",
        )
    })
    .await;
    let huge = http_server::serve(|_| async { json(vec![b' '; 10 << 20]) }).await;
    let endless = http_server::serve(|_| async { http_server::endless() }).await;
    let silent = http_server::serve(|_| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        text(200, "")
    })
    .await;
    let empty = http_server::serve(|_| async { json(Vec::new()) }).await;
    let not_a_body = http_server::serve(|_| async {
        json(br#"{"status": "ok", "datapoints": [1, 2, 3]}"#.to_vec())
    })
    .await;
    vec![
        ("good", good),
        ("html", html),
        ("error", error),
        ("huge", huge),
        ("endless", endless),
        ("silent", silent),
        ("empty", empty),
        ("not_a_body", not_a_body),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_spoke_fails_alone_with_its_url_named_and_the_good_one_is_posted() {
    let server = TestServer::start().await;
    let spokes = misbehaving_spokes().await;
    // A port nothing listens on: the connection is refused.
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_port = refused.local_addr().unwrap().port();
    drop(refused);
    let dir = config_dir(server.addr.port());
    let mut list: Vec<String> = spokes
        .iter()
        .map(|(_, s)| format!("        - 127.0.0.1:{}\n", s.addr.port()))
        .collect();
    list.push(format!("        - 127.0.0.1:{refused_port}\n"));
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        format!(
            "pattoo_agentd:\n  self_monitoring: false\n  pollers:\n    - name: spokes\n      type: hub\n      polling_interval: 60\n      timeout_ms: 2000\n      max_answer_bytes: 1048576\n      spokes:\n{}",
            list.concat()
        ),
    )
    .unwrap();
    let output = agentd(dir.path(), &["once"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let received = server.received();
    assert_eq!(received.len(), 1, "only the good spoke's answer: {stderr}");
    assert_eq!(received[0].bytes, PYTHON_HUB_POSTS);
    assert_eq!(
        received[0].agent_id,
        agent_id(dir.path(), "pattoo_agentd_hub")
    );
    let url = |name: &str| {
        let (_, spoke) = spokes.iter().find(|(n, _)| *n == name).unwrap();
        format!(
            "GET http://127.0.0.1:{}/pattoo-agent-os/60",
            spoke.addr.port()
        )
    };
    for (name, why) in [
        ("html", "the answer is not JSON"),
        ("error", "the spoke answered 500 Internal Server Error"),
        ("huge", "larger than the limit of 1048576 bytes"),
        ("endless", "larger than the limit of 1048576 bytes"),
        ("silent", "timed out"),
        ("empty", "the answer is not JSON"),
        ("not_a_body", "not a pattoo post body"),
    ] {
        let line = stderr
            .lines()
            .find(|line| line.contains(&url(name)))
            .unwrap_or_else(|| panic!("no line names the {name} spoke:\n{stderr}"));
        assert!(line.contains(why), "{name}: {line}");
    }
    let refused_url = format!("GET http://127.0.0.1:{refused_port}/pattoo-agent-os/60");
    assert!(stderr.contains(&refused_url), "{stderr}");
}
