//! The http poller (being built: configuration is refused until it lands).

use serde_norway::Value;

use crate::config::{Document, YamlPath};
use crate::model::TargetData;

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {}

impl HttpSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, _value: &Value) -> Option<Self> {
        doc.error(
            &path.key("type"),
            "this poller type is not available in this build",
        );
        None
    }

    pub fn describe(&self) -> String {
        String::new()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("http poller unavailable")]
pub struct HttpError;

#[derive(Debug)]
pub struct HttpPoller;

impl HttpPoller {
    pub async fn poll(&mut self) -> Result<Vec<TargetData>, HttpError> {
        Err(HttpError)
    }
}

impl HttpPoller {
    pub fn new(
        _name: &str,
        _settings: &HttpSettings,
        _env: &super::PollerEnv,
    ) -> anyhow::Result<Self> {
        Ok(HttpPoller)
    }
}
