//! A poller built from a configuration directory as the agent reads it,
//! and one poll of it with its logs, for tests that drive a poller kind
//! directly rather than through the agent's binary.

use std::path::Path;
use std::time::Duration;

use pattoo_agentd::config;
use pattoo_agentd::model::{DataPoint, TargetData};
use pattoo_agentd::pollers::{Poller, PollerEnv};

use super::Readings;

/// The first poller of a `pattoo_agentd.yaml` whose `pollers:` list is
/// `entries` (entries indented by four spaces), loaded from a fresh
/// configuration directory, host name `test.example.org`. Panics with the
/// configuration errors and the text when it does not load.
pub fn from_entries(entries: &str) -> Poller {
    let (settings, env) = load_entries(entries);
    Poller::new(&settings.pollers[0], &env).unwrap()
}

/// [`from_entries`], every poller of the list.
pub fn all_from_entries(entries: &str) -> Vec<Poller> {
    let (settings, env) = load_entries(entries);
    settings
        .pollers
        .iter()
        .map(|poller| Poller::new(poller, &env).unwrap())
        .collect()
}

fn load_entries(entries: &str) -> (config::Settings, PollerEnv) {
    let dir = tempfile::tempdir().unwrap();
    super::write_pattoo_yaml(dir.path(), dir.path(), 20201);
    let text = format!("pattoo_agentd:\n  pollers:\n{entries}");
    std::fs::write(dir.path().join("pattoo_agentd.yaml"), &text).unwrap();
    let settings = config::load(dir.path()).unwrap_or_else(|errors| panic!("{errors}\n{text}"));
    (settings, env())
}

/// The first poller of the configuration directory `dir`, host name
/// `test.example.org`. Panics with the configuration errors when it does
/// not load.
pub fn first_in(dir: &Path) -> Poller {
    let settings = config::load(dir).unwrap_or_else(|errors| panic!("{errors}"));
    Poller::new(&settings.pollers[0], &env()).unwrap()
}

fn env() -> PollerEnv {
    PollerEnv {
        hostname: "test.example.org".to_owned(),
    }
}

/// The value of the metadata `key` of a polled datapoint, if it has one.
pub fn meta<'a>(datapoint: &'a DataPoint, key: &str) -> Option<&'a str> {
    datapoint
        .metadata
        .iter()
        .find(|m| m.key == key)
        .map(|m| m.value.as_str())
}

/// A file holding `secret` (a community, a passphrase), for a poller's
/// `{file: ...}`; kept as long as the returned directory.
pub fn secret_file(secret: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    (dir, path.display().to_string())
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
