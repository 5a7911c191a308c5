//! The hub kind as the table of kinds in `pollers/mod.rs` sees it.

use serde_norway::Value;

use super::{compat, HubError, HubPoller, HubSettings};
use crate::pollers::{DropIn, Example, Kind, Polled, PollerEnv, PollerSettings};
use crate::yaml::{Document, YamlPath};

/// `type: hub`: spokes asked over HTTP, their answers relayed whole.
#[derive(Debug)]
pub struct Hub;

impl Kind for Hub {
    const NAMES: &'static [&'static str] = &["hub"];
    const SUMMARY: &'static str =
        "Spokes (pattoo_agent_os_spoked, pattoo_agent_linux_spoked or this agent's spoke server): each answer relayed whole";
    /// The hub's id is only in the URL it posts to and its cache's names.
    const DEFAULT_AGENT_PROGRAM: &'static str = "pattoo_agentd_hub";
    const DROP_INS: &'static [DropIn] = &compat::DROP_INS;
    const EXAMPLES: &'static [Example] = &[Example {
        file_name: "hub.yaml",
        text: include_str!("example.yaml"),
    }];
    const MANUAL: &'static str = include_str!("manual.roff");

    type Settings = HubSettings;
    type Poller = HubPoller;
    type Error = HubError;

    fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<HubSettings> {
        HubSettings::parse(doc, path, value)
    }

    fn describe(settings: &HubSettings) -> String {
        settings.describe()
    }

    fn build(
        poller: &PollerSettings,
        settings: &HubSettings,
        _env: &PollerEnv,
    ) -> anyhow::Result<HubPoller> {
        HubPoller::new(&poller.name, settings, poller.polling_interval)
    }

    async fn poll(poller: &mut HubPoller) -> Result<Polled, HubError> {
        poller.poll().await.map(Polled::Relayed)
    }
}
