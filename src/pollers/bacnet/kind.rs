//! The BACnet kind as the table of kinds in `pollers/mod.rs` sees it.

use serde_norway::Value;

use super::{compat, BacnetError, BacnetPoller, BacnetSettings};
use crate::model::translation::{readable, Language, Translation, LABEL_UNITS};
use crate::pollers::{DropIn, Example, Kind, Polled, PollerEnv, PollerSettings};
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

    /// Each object by its `description` and `units`, or by its type and
    /// instance; the metadata keys.
    fn translations(settings: &BacnetSettings, language: Language) -> Vec<Translation> {
        let Language::English = language;
        let mut names: Vec<Translation> = super::METADATA
            .iter()
            .map(|(key, name)| Translation::metadata(*key, *name, LABEL_UNITS))
            .collect();
        for object in settings.targets.iter().flat_map(|t| t.objects.iter()) {
            let name = object.naming.description.clone().unwrap_or_else(|| {
                format!(
                    "{} ({} {})",
                    readable(&object.key),
                    object.object.object_type.name(),
                    object.object.instance
                )
            });
            let type_name = object.object.object_type.name();
            let state = type_name.starts_with("binary") || type_name.starts_with("multi-state");
            let units = object.naming.units.as_deref().unwrap_or(if state {
                "State"
            } else {
                "Value"
            });
            names.push(Translation::datapoint(object.key.to_string(), name, units));
            names.extend(object.metadata.iter().map(|item| {
                Translation::metadata(item.key.to_string(), readable(&item.key), LABEL_UNITS)
            }));
        }
        names
    }

    fn describe(settings: &BacnetSettings) -> String {
        settings.describe()
    }

    /// Pollers that would bind the same socket: the second could never
    /// poll. The drop-in moves to any free port instead, and port 0 is
    /// always free.
    fn check_together(doc: &mut Document, pollers: &[(&YamlPath, &str, &BacnetSettings)]) {
        let fixed = |s: &BacnetSettings| s.local.port() != 0 && !s.fall_back_to_any_port;
        for (i, (path, name, settings)) in pollers.iter().enumerate() {
            if !fixed(settings) {
                continue;
            }
            let clash = pollers[..i].iter().find(|(_, _, other)| {
                fixed(other)
                    && other.local.port() == settings.local.port()
                    && (other.local.ip() == settings.local.ip()
                        || other.local.ip().is_unspecified()
                        || settings.local.ip().is_unspecified())
            });
            if let Some((_, other, theirs)) = clash {
                doc.error(
                    &path.key("local_port"),
                    format!(
                        "poller {name} would bind {} where poller {other} binds {}: give each bacnet poller its own local_address or local_port (0: any free port)",
                        settings.local, theirs.local
                    ),
                );
            }
        }
    }

    fn build(
        poller: &PollerSettings,
        settings: &BacnetSettings,
        _env: &PollerEnv,
    ) -> anyhow::Result<BacnetPoller> {
        Ok(BacnetPoller::new(&poller.name, settings))
    }

    async fn poll(poller: &mut BacnetPoller) -> Result<Polled, BacnetError> {
        poller.poll().await.map(Polled::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn two_pollers_binding_one_socket_are_refused() {
        let yaml = "targets: [10.0.0.1]\nobjects: [av:1]\n";
        let mut doc = Document::parse(Path::new("pattoo_agentd.yaml"), yaml).unwrap();
        let root = doc.root.clone();
        let all = Bacnet::parse(&mut doc, &YamlPath::root(), &root).unwrap();
        let mut loopback = all.clone();
        loopback.local.set_ip("127.0.0.1".parse().unwrap());
        let mut any_port = all.clone();
        any_port.local.set_port(0);
        let (a, b, c, d) = (
            YamlPath::root().key("a"),
            YamlPath::root().key("b"),
            YamlPath::root().key("c"),
            YamlPath::root().key("d"),
        );
        Bacnet::check_together(
            &mut doc,
            &[
                (&a, "a", &all),
                (&b, "b", &any_port),
                (&c, "c", &any_port),
                (&d, "d", &loopback),
            ],
        );
        let errors: Vec<String> = doc.into_errors().iter().map(|e| e.message.clone()).collect();
        assert_eq!(
            errors,
            ["poller d would bind 127.0.0.1:47808 where poller a binds 0.0.0.0:47808: give each bacnet poller its own local_address or local_port (0: any free port)"]
        );
    }
}
