//! The command kind as the table of kinds in `pollers/mod.rs` sees it.

use serde_norway::Value;

use super::{CommandError, CommandPoller, CommandSettings};
use crate::model::translation::{Language, Translation};
use crate::pollers::{Example, Kind, Polled, PollerEnv, PollerSettings};
use crate::yaml::{Document, YamlPath};

/// `type: command`: a local program run each poll, its output read by a
/// format.
#[derive(Debug)]
pub struct Command;

impl Kind for Command {
    const NAMES: &'static [&'static str] = &["command"];
    const SUMMARY: &'static str = "Local programs and scripts: their output read by a format";
    const DEFAULT_AGENT_PROGRAM: &'static str = "pattoo_agentd_command";
    const EXAMPLES: &'static [Example] = &[Example {
        file_name: "command.yaml",
        text: include_str!("example.yaml"),
    }];
    const MANUAL: &'static str = include_str!("manual.roff");

    type Settings = CommandSettings;
    type Poller = CommandPoller;
    type Error = CommandError;

    fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<CommandSettings> {
        CommandSettings::parse(doc, path, value)
    }

    /// The keys its format's configuration lists.
    fn translations(settings: &CommandSettings, language: Language) -> Vec<Translation> {
        let Language::English = language;
        settings.format.translations()
    }

    fn describe(settings: &CommandSettings) -> String {
        settings.describe()
    }

    fn build(
        poller: &PollerSettings,
        settings: &CommandSettings,
        env: &PollerEnv,
    ) -> anyhow::Result<CommandPoller> {
        Ok(CommandPoller::new(&poller.name, settings, env))
    }

    async fn poll(poller: &mut CommandPoller) -> Result<Polled, CommandError> {
        poller.poll().await.map(Polled::from)
    }
}
