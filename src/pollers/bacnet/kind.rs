//! The BACnet kind as the table of kinds in `pollers/mod.rs` sees it.

use serde_norway::Value;

use super::{compat, BacnetError, BacnetPoller, BacnetSettings};
use crate::model::TargetData;
use crate::pollers::{DropIn, Example, Kind, PollerEnv, PollerSettings};
use crate::yaml::{Document, YamlPath};

/// `type: bacnet`: BACnet/IP devices.
#[derive(Debug)]
pub struct Bacnet;

impl Kind for Bacnet {
    const NAMES: &'static [&'static str] = &["bacnet"];
    const SUMMARY: &'static str =
        "BACnet/IP devices: present values of analog, binary and multi-state objects";
    /// The Python agent's, so devices polled by either keep one identity.
    const DEFAULT_AGENT_PROGRAM: &'static str = compat::PROGRAM;
    const DROP_INS: &'static [DropIn] = &[compat::DROP_IN];
    const EXAMPLES: &'static [Example] = &[Example {
        file_name: "bacnet.yaml",
        text: include_str!("example.yaml"),
    }];
    const MANUAL: &'static str = include_str!("manual.roff");

    type Settings = BacnetSettings;
    type Poller = BacnetPoller;
    type Error = BacnetError;

    fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<BacnetSettings> {
        BacnetSettings::parse(doc, path, value)
    }

    fn describe(settings: &BacnetSettings) -> String {
        settings.describe()
    }

    fn build(
        poller: &PollerSettings,
        settings: &BacnetSettings,
        _env: &PollerEnv,
    ) -> anyhow::Result<BacnetPoller> {
        Ok(BacnetPoller::new(&poller.name, settings))
    }

    async fn poll(poller: &mut BacnetPoller) -> Result<Vec<TargetData>, BacnetError> {
        poller.poll().await
    }
}
