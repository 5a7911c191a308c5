//! Settings of a `type: hub` poller.
//!
//! ```yaml
//! - name: spokes
//!   type: hub
//!   polling_interval: 300         # also the interval the spokes are asked for
//!   spokes:                       # host, host:port, [IPv6]:port; port 5000 by default
//!     - 10.0.0.5
//!     - "[fd00::7]:5001"
//!   route: pattoo-agent-os        # or pattoo-agent-linux
//!   timeout_ms: 10000             # per spoke
//!   max_answer_bytes: 4194304     # a longer answer fails that spoke
//!   max_concurrent_targets: 16    # spokes asked at once
//! ```

use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use crate::yaml::{describe, ByteLimit, Count, Document, DurationMs, Fields, Port, YamlPath};

/// A spoke: where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spoke {
    /// A host name or an IP address (an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HubSettings {
    pub spokes: Vec<Spoke>,
    /// The spokes' route, without slashes: `pattoo-agent-os` asks
    /// `/pattoo-agent-os/{interval}`.
    pub route: String,
    pub timeout: Duration,
    pub max_answer_bytes: usize,
    pub max_concurrent_targets: usize,
}

/// The Python spokes' port.
pub const DEFAULT_PORT: u16 = 5000;
/// The route of `pattoo_agent_os_spoked`.
pub const DEFAULT_ROUTE: &str = "pattoo-agent-os";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// A spoke's answer for a host with a few hundred network interfaces is
/// well under a mebibyte.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 4 << 20;
pub const DEFAULT_MAX_CONCURRENT_TARGETS: usize = 16;
const MAX_CONCURRENT_TARGETS: u64 = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    spokes: Vec<String>,
    route: Option<String>,
    timeout_ms: Option<u64>,
    max_answer_bytes: Option<usize>,
    max_concurrent_targets: Option<u64>,
}

impl HubSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawHub = doc.deserialize(path, value)?;
        let mut ok = true;
        if raw.spokes.is_empty() {
            doc.error(&path.key("spokes"), "lists no spoke: nothing to poll");
            ok = false;
        }
        let mut spokes = Vec::new();
        for (i, written) in raw.spokes.iter().enumerate() {
            match parse_spoke(written) {
                Ok(spoke) => spokes.push(spoke),
                Err(message) => {
                    doc.error(&path.key("spokes").index(i), message);
                    ok = false;
                }
            }
        }
        let route = match raw.route {
            None => DEFAULT_ROUTE.to_owned(),
            Some(route) => match parse_route(&route) {
                Ok(route) => route,
                Err(message) => {
                    doc.error(&path.key("route"), message);
                    ok = false;
                    String::new()
                }
            },
        };
        let mut fields = Fields::new(path);
        let timeout = fields.read(doc, "timeout_ms", raw.timeout_ms, DurationMs::or(DEFAULT_TIMEOUT));
        let max_answer_bytes = fields.read(
            doc,
            "max_answer_bytes",
            raw.max_answer_bytes,
            ByteLimit::or(DEFAULT_MAX_ANSWER_BYTES),
        );
        let max_concurrent_targets = fields.read(
            doc,
            "max_concurrent_targets",
            raw.max_concurrent_targets,
            Count::new(DEFAULT_MAX_CONCURRENT_TARGETS as u64, MAX_CONCURRENT_TARGETS),
        ) as usize;
        ok &= fields.ok();
        ok.then_some(HubSettings {
            spokes,
            route,
            timeout,
            max_answer_bytes,
            max_concurrent_targets,
        })
    }

    pub fn describe(&self) -> String {
        let spokes: Vec<String> = self
            .spokes
            .iter()
            .map(|s| crate::address::host_port(&s.host, s.port))
            .collect();
        format!(
            "asks {} spoke(s) for /{}/{{interval}} and relays each answer whole: {}",
            self.spokes.len(),
            self.route,
            spokes.join(", ")
        )
    }
}

/// `host`, `host:port`, `[IPv6]`, `[IPv6]:port` or a bare IPv6 address.
pub fn parse_spoke(written: &str) -> Result<Spoke, String> {
    let text = written.trim();
    let refuse = |why: &str| {
        Err(format!(
            "{written:?} {why}: expected host, host:port or [IPv6 address]:port"
        ))
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return refuse("has no closing `]`");
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return refuse("has text after `]` that is not a port"),
            },
        }
    } else if text.matches(':').count() > 1 {
        (text, None)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => Port::from_text(port)?.0,
    };
    check_host(host).map_err(|why| format!("{written:?} {why}"))?;
    Ok(Spoke {
        host: host.to_owned(),
        port,
    })
}

/// A host name or address that can stand in a URL.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.contains(':') {
        return host
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "is not an IPv6 address".to_owned());
    }
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err("is not a host name or IP address".to_owned());
    }
    Ok(())
}

/// A route as written, `pattoo-agent-os` or `/pattoo-agent-os`.
fn parse_route(route: &str) -> Result<String, String> {
    let trimmed = route.trim().trim_matches('/');
    if trimmed.is_empty()
        || !trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        return Err(format!(
            "expected a path such as pattoo-agent-os (letters, digits, -, _, . and /), found {route:?}"
        ));
    }
    Ok(trimmed.to_owned())
}

/// A value Python would format into a URL as a port: a whole number or
/// its text.
pub fn port_value(value: &Value) -> Result<u16, String> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(text) => text.trim().to_owned(),
        other => return Err(format!("expected a port number, found {}", describe(other))),
    };
    Port::from_text(&text).map(|p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spokes_are_hosts_with_an_optional_port_and_ipv6_in_brackets() {
        let spoke = |host: &str, port| Spoke {
            host: host.to_owned(),
            port,
        };
        assert_eq!(parse_spoke("10.0.0.5"), Ok(spoke("10.0.0.5", 5000)));
        assert_eq!(parse_spoke(" host.example:5001 "), Ok(spoke("host.example", 5001)));
        assert_eq!(parse_spoke("[fd00::7]:5002"), Ok(spoke("fd00::7", 5002)));
        assert_eq!(parse_spoke("[::1]"), Ok(spoke("::1", 5000)));
        assert_eq!(parse_spoke("::1"), Ok(spoke("::1", 5000)));
        for bad in ["", "host:0", "host:x", "[::1", "[::1]x", "a b", "::g", "host/x"] {
            assert!(parse_spoke(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn routes_lose_their_slashes_and_must_be_a_path() {
        assert_eq!(parse_route("/pattoo-agent-linux/"), Ok("pattoo-agent-linux".into()));
        assert!(parse_route("a b").is_err());
        assert!(parse_route("/").is_err());
    }
}
