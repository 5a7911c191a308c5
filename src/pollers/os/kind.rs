//! The os kind as the table of kinds in `pollers/mod.rs` sees it.

use serde_norway::Value;

use super::{compat, OsError, OsPoller, OsSettings};
use crate::model::translation::{Language, Translation};
use crate::pollers::{ProgramTranslations, DropIn, Example, Kind, Polled, PollerEnv, PollerSettings};
use crate::yaml::{Document, YamlPath};

/// `type: os`: this host's CPU, memory, swap, partitions, disks and
/// network interfaces, as the Python OS agents post them.
#[derive(Debug)]
pub struct Os;

impl Kind for Os {
    const NAMES: &'static [&'static str] = &["os"];
    const SUMMARY: &'static str =
        "This host: CPU, memory, swap, partitions, disks and NICs, as the Python OS agents post them";
    const DEFAULT_AGENT_PROGRAM: &'static str = "pattoo_agentd_os";
    const DROP_INS: &'static [DropIn] = &[
        compat::OS_AUTONOMOUSD_DROP_IN,
        compat::LINUX_AUTONOMOUSD_DROP_IN,
    ];
    const EXAMPLES: &'static [Example] = &[Example {
        file_name: "os.yaml",
        text: include_str!("example.yaml"),
    }];
    const MANUAL: &'static str = include_str!("manual.roff");

    type Settings = OsSettings;
    type Poller = OsPoller;
    type Error = OsError;

    fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<OsSettings> {
        OsSettings::parse(doc, path, value)
    }

    fn translations(_settings: &OsSettings, language: Language) -> Vec<Translation> {
        super::translations::translations(language)
    }

    /// The Python OS agents' programs, both families (`pattoo_agent_os_*`,
    /// and `pattoo_agent_linux_*` since pattoo renamed them), autonomous
    /// and spoke alike.
    fn program_translations(language: Language) -> ProgramTranslations {
        [
            super::OS_AUTONOMOUSD,
            super::OS_SPOKED,
            super::LINUX_AUTONOMOUSD,
            super::LINUX_SPOKED,
        ]
        .into_iter()
        .map(|program| (program, super::translations::translations(language)))
        .collect()
    }

    fn describe(settings: &OsSettings) -> String {
        settings.describe()
    }

    fn build(
        poller: &PollerSettings,
        settings: &OsSettings,
        env: &PollerEnv,
    ) -> anyhow::Result<OsPoller> {
        OsPoller::new(&poller.name, settings, env)
            .map_err(|error| anyhow::anyhow!("poller {}: {error}", poller.name))
    }

    async fn poll(poller: &mut OsPoller) -> Result<Polled, OsError> {
        poller.poll().await.map(Polled::from)
    }
}
