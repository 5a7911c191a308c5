//! The HTTP kind as the table of kinds in `pollers/mod.rs` sees it.

use serde_norway::Value;

use super::{HttpError, HttpPoller, HttpSettings};
use crate::pollers::{Example, Kind, Polled, PollerEnv, PollerSettings};
use crate::yaml::{Document, YamlPath};

/// `type: http`: URLs fetched each poll, their responses read by a format.
#[derive(Debug)]
pub struct Http;

impl Kind for Http {
    const NAMES: &'static [&'static str] = &["http"];
    const SUMMARY: &'static str = "HTTP and HTTPS endpoints: their responses read by a format, or timed";
    const DEFAULT_AGENT_PROGRAM: &'static str = "pattoo_agentd_http";
    const EXAMPLES: &'static [Example] = &[Example {
        file_name: "http.yaml",
        text: include_str!("example.yaml"),
    }];
    const MANUAL: &'static str = include_str!("manual.roff");

    type Settings = HttpSettings;
    type Poller = HttpPoller;
    type Error = HttpError;

    fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<HttpSettings> {
        HttpSettings::parse(doc, path, value)
    }

    fn describe(settings: &HttpSettings) -> String {
        settings.describe()
    }

    fn build(
        poller: &PollerSettings,
        settings: &HttpSettings,
        env: &PollerEnv,
    ) -> anyhow::Result<HttpPoller> {
        HttpPoller::new(&poller.name, settings, env)
    }

    async fn poll(poller: &mut HttpPoller) -> Result<Polled, HttpError> {
        poller.poll().await.map(Polled::from)
    }
}
