//! The `delivery:` and `cache:` sections of `pattoo_agentd.yaml`.

use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use crate::config::{Document, YamlPath};

/// How bodies are posted to the pattoo server.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    /// Per request, connection included.
    pub timeout: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    timeout_ms: Option<u64>,
}

impl DeliverySettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawDelivery = doc.deserialize(path, value)?;
        let mut settings = DeliverySettings::default();
        if let Some(ms) = raw.timeout_ms {
            if ms == 0 {
                doc.error(&path.key("timeout_ms"), "must be more than 0");
                return None;
            }
            settings.timeout = Duration::from_millis(ms);
        }
        Some(settings)
    }
}

/// Bounds on the on-disk cache of undelivered bodies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CacheSettings {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {}

impl CacheSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let _raw: RawCache = doc.deserialize(path, value)?;
        Some(CacheSettings {})
    }
}
