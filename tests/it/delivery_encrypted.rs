//! Encrypted posting (`delivery.encryption: openpgp`) against GnuPG 2.2
//! playing the pattoo server's part: gpg must read what the agent makes at
//! every step of the exchange, and the agent must read what gpg makes.

use std::path::Path;
use std::sync::Arc;

use pattoo_agentd::delivery::config::{CacheSettings, DeliverySettings, Encryption};
use pattoo_agentd::delivery::openpgp::{self, Keyring};
use pattoo_agentd::delivery::{Committed, Delivery};
use pattoo_agentd::model::PostBody;

use crate::common;
use crate::common::pattoo_encrypted::{EncryptedServer, Step};
use crate::common::receiver;

const AGENT_ID: &str = "5e1f0a9b7e8d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f001";
use crate::common::pattoo_encrypted::SERVER_ID;

#[test]
fn gpg_and_the_agent_read_each_others_messages_at_every_step_of_the_exchange() {
    let Some(gpg) = common::gpg::gpg(
        "gpg_and_the_agent_read_each_others_messages_at_every_step_of_the_exchange",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keyring =
        Keyring::open_or_create(&dir.path().join("keys"), "pattoo_agentd_self", AGENT_ID).unwrap();

    // Step 1: the server imports the agent's key and finds it by the agent id.
    gpg.import(keyring.public_armored());
    assert_eq!(gpg.fingerprint(AGENT_ID), keyring.fingerprint());

    // Step 2: the server encrypts a nonce to it and sends its own key.
    let nonce = "4b5a69788796a5b4c3d2e1f0015e1f0a9b7e8d1c2b3a4f5e6d7c8b9a0f1e2d3c";
    let encrypted_nonce = gpg.encrypt_to(AGENT_ID, nonce.as_bytes());
    assert_eq!(keyring.decrypt(&encrypted_nonce).unwrap(), nonce.as_bytes());
    let server_fingerprint = gpg.make_key("pattoo_api_agentd", SERVER_ID);
    let server_key = openpgp::read_public_key(&gpg.export(SERVER_ID)).unwrap();
    assert!(openpgp::names(&server_key, SERVER_ID));
    assert!(
        server_key.public_subkeys.is_empty(),
        "the server's key is one RSA primary key that encrypts, as gpg makes it"
    );

    // Step 3: the symmetric key to the server's key, the nonce under it.
    let symmetric_key = openpgp::session_key();
    let encrypted_key = openpgp::encrypt_to(&server_key, symmetric_key.as_bytes()).unwrap();
    assert_eq!(gpg.decrypt(&encrypted_key), symmetric_key.as_bytes());
    let packets = gpg.list_packets(&encrypted_key);
    assert!(
        packets.contains(&format!("keyid {}", &server_fingerprint[24..])),
        "{packets}"
    );
    let sealed_nonce = openpgp::encrypt_symmetric(nonce.as_bytes(), &symmetric_key).unwrap();
    assert_eq!(
        gpg.decrypt_symmetric(&sealed_nonce, &symmetric_key),
        nonce.as_bytes()
    );
    let packets = gpg.list_packets(&sealed_nonce);
    assert!(
        packets.contains(":symkey enc packet: version 4"),
        "{packets}"
    );
    assert!(
        packets.contains("mdc_method: 2"),
        "SEIPD v1 with MDC: {packets}"
    );
    assert!(
        packets.contains("aead 0") && !packets.contains("aead encrypted"),
        "no AEAD: {packets}"
    );

    // Step 4: the post body under the symmetric key.
    let data =
        format!(r#"{{"data": {{"pattoo_agent_id": "{AGENT_ID}"}}, "source": "{AGENT_ID}"}}"#);
    let sealed = openpgp::encrypt_symmetric(data.as_bytes(), &symmetric_key).unwrap();
    assert_eq!(
        gpg.decrypt_symmetric(&sealed, &symmetric_key),
        data.as_bytes()
    );

    // And what gpg seals with a passphrase the agent opens.
    let from_gpg = gpg.encrypt_symmetric(data.as_bytes(), &symmetric_key);
    assert_eq!(
        openpgp::decrypt_symmetric(&from_gpg, &symmetric_key).unwrap(),
        data.as_bytes()
    );
}

/// The stand-in server with gpg, or `None` (skipped) without gpg.
async fn server(test: &str) -> Option<EncryptedServer> {
    Some(EncryptedServer::start(common::gpg::gpg(test)?).await)
}

fn settings() -> DeliverySettings {
    DeliverySettings {
        encryption: Encryption::OpenPgp,
        ..receiver::quick_settings()
    }
}

fn keyring(dir: &Path) -> Arc<Keyring> {
    let keys = openpgp::key_directory(dir, "pattoo_agentd_self");
    Arc::new(Keyring::open_or_create(&keys, "pattoo_agentd_self", AGENT_ID).unwrap())
}

fn delivery(server: &EncryptedServer, state: &Path) -> Delivery {
    Delivery::encrypted(
        &server.api(),
        &state.join("cache"),
        &settings(),
        &CacheSettings::default(),
        Arc::default(),
        keyring(state),
    )
    .unwrap()
}

fn json(body: &PostBody) -> serde_json::Value {
    serde_json::from_slice(&body.json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_replayed_bodies_share_one_exchange_and_arrive_as_posted() {
    let Some(server) =
        server("live_and_replayed_bodies_share_one_exchange_and_arrive_as_posted").await
    else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, state.path());
    let now = receiver::now_ms();
    let (cached_one, cached_two, live) = (
        receiver::body(now - 2_000, 1),
        receiver::body(now - 1_000, 2),
        receiver::body(now, 3),
    );
    let expected = [json(&cached_one), json(&cached_two), json(&live)];
    assert!(matches!(
        delivery.store(cached_one).await,
        Committed::Cached(_)
    ));
    assert!(matches!(
        delivery.store(cached_two).await,
        Committed::Cached(_)
    ));

    assert_eq!(delivery.submit(live).await, Committed::Posted);
    let report = delivery.replay_now().await;
    assert_eq!(report.delivered, 2, "{report:?}");
    assert_eq!(report.remaining, 0);

    let received = server.received();
    let mut data: Vec<_> = received.iter().map(|(_, data)| data.clone()).collect();
    data.sort_by_key(|d| d.to_string());
    let mut expected = expected.to_vec();
    expected.sort_by_key(|d| d.to_string());
    assert_eq!(data, expected, "the server stores exactly the plain bodies");
    assert!(received.iter().all(|(source, _)| source == receiver::AGENT));
    assert_eq!(server.counts(), [1, 1, 1, 3], "one exchange, three bodies");
    assert!(
        !server.knows_key_of(AGENT_ID),
        "the server dropped the agent's key after validating it"
    );
    let stats = delivery.stats();
    let exchange = stats.last_exchange.expect("an exchange was made");
    assert!(exchange.ok, "{exchange:?}");
    assert!(exchange.detail.contains(SERVER_ID), "{exchange:?}");
    assert_eq!(
        stats.last_post.unwrap().detail,
        "202 Decrypted and received"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_between_steps_loses_no_body() {
    for step in [Step::PostKey, Step::GetKey, Step::Validation] {
        let Some(server) = server("a_server_that_dies_between_steps_loses_no_body").await else {
            return;
        };
        let state = tempfile::tempdir().unwrap();
        server.die_after(step);
        let body = receiver::body(receiver::now_ms(), 5);
        let expected = json(&body);
        let committed = delivery(&server, state.path()).submit(body).await;
        assert!(
            matches!(committed, Committed::Cached(_)),
            "dying after {step:?}: {committed:?}"
        );
        assert!(server.received().is_empty());

        // The server comes back (a new process: new sessions, new port).
        let Some(back) = self::server("a_server_that_dies_between_steps_loses_no_body").await
        else {
            return;
        };
        let delivery = delivery(&back, state.path());
        let report = delivery.replay_now().await;
        assert_eq!(report.delivered, 1, "after {step:?}: {report:?}");
        assert_eq!(report.remaining, 0);
        assert_eq!(
            back.received(),
            vec![(receiver::AGENT.to_owned(), expected)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_the_server_never_answers_times_out_and_the_body_is_cached() {
    for step in [Step::PostKey, Step::GetKey, Step::Validation] {
        let test = "a_step_the_server_never_answers_times_out_and_the_body_is_cached";
        let Some(server) = server(test).await else {
            return;
        };
        let state = tempfile::tempdir().unwrap();
        server.hang_at(step);
        let delivery = delivery(&server, state.path());
        // The delivery timeout is half a second; this bound only stops a
        // hung test.
        let committed = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            delivery.submit(receiver::body(receiver::now_ms(), 9)),
        )
        .await
        .unwrap_or_else(|_| panic!("a post hung at {step:?}"));
        assert!(
            matches!(committed, Committed::Cached(_)),
            "hanging at {step:?}: {committed:?}"
        );
        let exchange = delivery.stats().last_exchange.unwrap();
        assert!(
            !exchange.ok && exchange.detail.contains("timed out"),
            "{exchange:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_208_at_step_4_is_never_taken_for_delivered() {
    let Some(server) = server("a_208_at_step_4_is_never_taken_for_delivered").await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let delivery = delivery(&server, state.path());

    // The server keeps losing the session: the body is cached.
    server.forget_sessions_at_encrypted(2);
    let body = receiver::body(receiver::now_ms() - 1_000, 7);
    let first = json(&body);
    assert!(matches!(delivery.submit(body).await, Committed::Cached(_)));
    assert!(server.received().is_empty());
    let last = delivery.stats().last_post.unwrap();
    assert!(!last.delivered, "{last:?}");
    assert_eq!(server.counts(), [2, 2, 2, 2], "one new session, no more");

    // It loses it once (a restart): a new session carries the body.
    tokio::time::sleep(delivery_wait(&delivery)).await;
    server.forget_sessions_at_encrypted(1);
    let body = receiver::body(receiver::now_ms(), 8);
    let second = json(&body);
    assert_eq!(delivery.submit(body).await, Committed::Posted);
    assert_eq!(
        server.received(),
        vec![(receiver::AGENT.to_owned(), second)]
    );

    // And the cached body goes in the same session.
    let report = delivery.replay_now().await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(server.received()[1], (receiver::AGENT.to_owned(), first));
    // The failed session was dropped, so the second body opened one, was
    // told 208 and opened another; the replay used that one.
    assert_eq!(server.counts(), [4, 4, 4, 5]);
}

/// How long until the breaker lets the next attempt through.
fn delivery_wait(delivery: &Delivery) -> std::time::Duration {
    if delivery.stats().server_down {
        receiver::quick_settings().retry_max
    } else {
        std::time::Duration::ZERO
    }
}

/// The agent, killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(dir: &Path, command: &str) -> std::process::Output {
    common::agentd(dir).arg(command).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_makes_its_keys_at_start_posts_encrypted_and_check_and_status_say_so() {
    let test = "the_daemon_makes_its_keys_at_start_posts_encrypted_and_check_and_status_say_so";
    let Some(server) = server(test).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    common::write_pattoo_yaml(dir.path(), dir.path(), server.addr.port());
    let script = dir.path().join("reading.sh");
    common::write_executable(
        &script,
        "#!/bin/sh\necho '{\"targets\":[{\"datapoints\":[{\"key\":\"reading\",\"value\":1}]}]}'\n",
    );
    std::fs::write(
        dir.path().join("pattoo_agentd.yaml"),
        format!(
            "pattoo_agentd:\n  hostname: test-host\n  delivery:\n    timeout_ms: 5000\n    encryption: openpgp\n\
             \x20 pollers:\n    - name: alpha\n      type: command\n      polling_interval: 1\n      command: [{}]\n      format: datapoints\n",
            script.display()
        ),
    )
    .unwrap();
    let keys = dir.path().join("daemon/keys/pattoo_agentd_self");

    let before = agent(dir.path(), "check");
    let said = String::from_utf8_lossy(&before.stdout);
    assert!(before.status.success(), "{before:?}");
    assert!(
        said.contains("posts through pattoo's encrypted exchange"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "OpenPGP key pair in {}: not made yet",
            keys.display()
        )),
        "{said}"
    );
    assert!(!keys.exists(), "check makes no keys");

    let _running = Running(
        common::agentd(dir.path())
            .arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        let status = String::from_utf8_lossy(&agent(dir.path(), "status").stdout).into_owned();
        let polled = server
            .received()
            .iter()
            .any(|(_, data)| data.to_string().contains("\"reading\""));
        if polled && status.contains("last encrypted exchange") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for an encrypted post and its status; status: {status}\nlog: {}",
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(status.contains(SERVER_ID), "{status}");
    assert!(!status.contains("FAILED"), "{status}");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");

    let fingerprint = openpgp::existing_fingerprint(&keys)
        .unwrap()
        .expect("a key pair");
    let after = agent(dir.path(), "check");
    let said = String::from_utf8_lossy(&after.stdout);
    assert!(
        said.contains(&format!("fingerprint {fingerprint}")),
        "{said}"
    );
}
