//! The HTTP kind as the table of kinds in `pollers/mod.rs` sees it.

use serde_norway::Value;

use super::{HttpError, HttpPoller, HttpSettings};
use crate::model::translation::{Language, Translation, LABEL_UNITS};
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

    /// The configured format's keys, the measurements when on, and the
    /// `url_metadata` key.
    fn translations(settings: &HttpSettings, language: Language) -> Vec<Translation> {
        let Language::English = language;
        let mut names = settings
            .format
            .as_ref()
            .map(|format| format.translations())
            .unwrap_or_default();
        if settings.measurements {
            names.extend(
                super::MEASUREMENTS
                    .iter()
                    .map(|(key, name, units)| Translation::datapoint(*key, *name, *units)),
            );
        }
        if let Some(key) = &settings.url_metadata {
            names.push(Translation::metadata(key, "URL", LABEL_UNITS));
        }
        names
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
