//! `pattoo.yaml` (shared with every pattoo program on the host) and
//! `pattoo_agent.yaml` (where the Python agents read the server address).

use std::path::PathBuf;

use serde::Deserialize;
use serde_norway::Value;

use super::LogLevel;
pub use crate::delivery::config::ApiSettings;
use crate::yaml::{describe, expand_home, expect_mapping, Document, YamlPath};

/// The `pattoo:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct PattooSettings {
    pub log_level: LogLevel,
    pub log_directory: PathBuf,
    pub cache_directory: PathBuf,
    pub daemon_directory: PathBuf,
    pub language: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattoo {
    log_level: Option<String>,
    log_directory: Option<String>,
    cache_directory: Option<String>,
    daemon_directory: Option<String>,
    /// Read by the Python daemons only; accepted so a shared file is valid.
    #[allow(dead_code)]
    system_daemon_directory: Option<String>,
    language: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    ip_address: String,
    /// Checked by hand: serde would say "expected i64".
    ip_bind_port: Option<Value>,
}

pub const DEFAULT_API_PORT: u16 = 20201;

pub(super) fn parse_pattoo(doc: &mut Document) -> Option<PattooSettings> {
    let root = doc.root.clone();
    let top = YamlPath::root();
    let map = expect_mapping(doc, &top, &root)?;
    for key in map.keys() {
        match key.as_str() {
            Some("pattoo" | "pattoo_agent_api" | "pattoo_web_api") => {}
            _ => doc.error(
                &top.key(key.as_str().unwrap_or_default()),
                format!(
                    "unknown section `{}`: expected `pattoo` or `pattoo_agent_api`",
                    serde_norway::to_string(key).unwrap_or_default().trim()
                ),
            ),
        }
    }
    let path = top.key("pattoo");
    let raw: RawPattoo = match map.get("pattoo") {
        Some(value) => doc.deserialize(&path, value)?,
        None => {
            doc.error(&top, "missing section `pattoo` (log_level, log_directory, cache_directory, daemon_directory)");
            return None;
        }
    };
    let log_level = match raw.log_level.as_deref() {
        None => LogLevel::Info,
        Some(text) => match text.parse() {
            Ok(level) => level,
            Err(()) => {
                doc.error(
                    &path.key("log_level"),
                    format!("unknown log level `{text}`: expected debug, info, warning, error or critical"),
                );
                LogLevel::Info
            }
        },
    };
    let mut directory = |key: &str, given: Option<String>, default: &str| -> PathBuf {
        let text = given.unwrap_or_else(|| default.to_owned());
        if text.trim().is_empty() {
            doc.error(&path.key(key), "must name a directory");
        }
        expand_home(&text)
    };
    Some(PattooSettings {
        log_directory: directory("log_directory", raw.log_directory, "/var/log/pattoo"),
        cache_directory: directory(
            "cache_directory",
            raw.cache_directory,
            "/var/lib/pattoo/cache",
        ),
        daemon_directory: directory("daemon_directory", raw.daemon_directory, "/var/lib/pattoo"),
        log_level,
        language: raw.language.unwrap_or_else(|| "en".to_owned()),
    })
}

/// Reads `pattoo_agent_api` from a document that may or may not have it.
pub(super) fn parse_api(doc: &mut Document) -> Option<Option<ApiSettings>> {
    let Value::Mapping(map) = &doc.root else {
        return Some(None);
    };
    let Some(value) = map.get("pattoo_agent_api").cloned() else {
        return Some(None);
    };
    let path = YamlPath::root().key("pattoo_agent_api");
    let raw: RawApi = doc.deserialize(&path, &value)?;
    let ip_address = raw
        .ip_address
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if ip_address.is_empty() {
        doc.error(
            &path.key("ip_address"),
            "must name the pattoo server: a host name, IPv4 or IPv6 address",
        );
    }
    let ip_bind_port = match raw.ip_bind_port {
        None | Some(Value::Null) => DEFAULT_API_PORT,
        Some(Value::Number(port)) => match port.as_i64().map(u16::try_from) {
            Some(Ok(port)) if port > 0 => port,
            _ => {
                doc.error(
                    &path.key("ip_bind_port"),
                    format!("port {port} is out of range: expected 1 to 65535"),
                );
                DEFAULT_API_PORT
            }
        },
        Some(other) => {
            let found = match &other {
                Value::String(text) => format!("{text:?}"),
                other => describe(other).to_owned(),
            };
            doc.error(
                &path.key("ip_bind_port"),
                format!("expected a port number from 1 to 65535, found {found}"),
            );
            DEFAULT_API_PORT
        }
    };
    Some(Some(ApiSettings {
        ip_address: ip_address.to_owned(),
        ip_bind_port,
    }))
}
