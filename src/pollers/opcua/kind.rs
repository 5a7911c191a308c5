//! The OPC UA kind as the table of kinds in `pollers/mod.rs` sees it.

use serde_norway::Value;

use super::{compat, OpcuaError, OpcuaPoller, OpcuaSettings};
use crate::model::translation::{readable, Language, Translation, LABEL_UNITS};
use crate::pollers::{DropIn, Example, Kind, Polled, PollerEnv, PollerSettings};
use crate::yaml::{Document, YamlPath};

/// `type: opcua`: Value attributes of nodes on OPC UA servers.
#[derive(Debug)]
pub struct Opcua;

impl Kind for Opcua {
    const NAMES: &'static [&'static str] = &["opcua"];
    const SUMMARY: &'static str =
        "OPC UA servers: Value attributes of listed nodes, one Read per server over a kept session";
    const DEFAULT_AGENT_PROGRAM: &'static str = "pattoo_agentd_opcua";
    const DROP_INS: &'static [DropIn] = &[compat::OPCUAD_DROP_IN];
    const EXAMPLES: &'static [Example] = &[Example {
        file_name: "opcua.yaml",
        text: include_str!("example.yaml"),
    }];
    const MANUAL: &'static str = include_str!("manual.roff");
    /// async-opcua logs connection failures, and a missing client
    /// certificate even where security None needs none.
    const QUIET_LIBRARIES: &'static [&'static str] =
        &["opcua_client", "opcua_core", "opcua_crypto", "opcua_types"];

    type Settings = OpcuaSettings;
    type Poller = OpcuaPoller;
    type Error = OpcuaError;

    fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<OpcuaSettings> {
        OpcuaSettings::parse(doc, path, value)
    }

    /// Each node by its `description` and `units`, or by its address; the
    /// server and node metadata keys.
    fn translations(settings: &OpcuaSettings, language: Language) -> Vec<Translation> {
        let Language::English = language;
        let mut names = vec![
            Translation::metadata(compat::SERVER_KEY, "OPC UA Server", LABEL_UNITS),
            Translation::metadata(super::NODE_METADATA_KEY, "OPC UA Node", LABEL_UNITS),
        ];
        for node in settings.servers.iter().flat_map(|s| s.nodes.iter()) {
            let name = node.naming.description.clone().unwrap_or_else(|| {
                if node.key == node.address {
                    format!("OPC UA Node {}", node.address)
                } else {
                    format!("{} (OPC UA Node {})", readable(&node.key), node.address)
                }
            });
            let units = node.naming.units.as_deref().unwrap_or("Value");
            names.push(Translation::datapoint(node.key.clone(), name, units));
            if let super::config::Post::Native { metadata, .. } = &node.post {
                names.extend(metadata.iter().map(|item| {
                    Translation::metadata(item.key.to_string(), readable(&item.key), LABEL_UNITS)
                }));
            }
        }
        names
    }

    fn describe(settings: &OpcuaSettings) -> String {
        settings.describe()
    }

    fn build(
        poller: &PollerSettings,
        settings: &OpcuaSettings,
        _env: &PollerEnv,
    ) -> anyhow::Result<OpcuaPoller> {
        Ok(OpcuaPoller::new(&poller.name, settings))
    }

    async fn poll(poller: &mut OpcuaPoller) -> Result<Polled, OpcuaError> {
        poller.poll().await.map(Polled::from)
    }
}
