//! A poller built from a configuration directory as the agent reads it,
//! and one poll of it with its logs, for tests that drive a poller kind
//! directly rather than through the agent's binary.

use std::time::Duration;

use pattoo_agentd::config;
use pattoo_agentd::model::TargetData;
use pattoo_agentd::pollers::{Poller, PollerEnv};

use super::Readings;

/// The first poller of a `pattoo_agentd.yaml` whose `pollers:` list is
/// `entries` (entries indented by four spaces), loaded from a fresh
/// configuration directory, host name `test.example.org`. Panics with the
/// configuration errors and the text when it does not load.
pub fn from_entries(entries: &str) -> Poller {
    let dir = tempfile::tempdir().unwrap();
    super::write_pattoo_yaml(dir.path(), dir.path(), 20201);
    let text = format!("pattoo_agentd:\n  pollers:\n{entries}");
    std::fs::write(dir.path().join("pattoo_agentd.yaml"), &text).unwrap();
    let settings = config::load(dir.path()).unwrap_or_else(|errors| panic!("{errors}\n{text}"));
    let env = PollerEnv {
        hostname: "test.example.org".to_owned(),
    };
    Poller::new(&settings.pollers[0], &env).unwrap()
}

/// Polls once, failing the test if that takes more than a minute; gives
/// the readings (or the error's text) and what was logged meanwhile.
pub async fn poll_logged(poller: &mut Poller) -> (Result<Vec<TargetData>, String>, String) {
    let (logs, _guard) = super::logs::capture();
    let result = tokio::time::timeout(Duration::from_secs(60), poller.readings())
        .await
        .expect("the poll ends")
        .map_err(|e| e.to_string());
    (result, logs.text())
}
