//! Settings of a spoke server: where it listens, what it answers, who may
//! ask, and the poller polled for each answer.
//!
//! Native, in `pattoo_agentd.yaml`:
//!
//! ```yaml
//! pattoo_agentd:
//!   spokes:
//!     - listen: 0.0.0.0:5000         # address:port, [IPv6]:port
//!       route: pattoo-agent-os       # answers GET /pattoo-agent-os/<interval>
//!       allow: [10.0.0.0/8, "::1"]   # client addresses or networks; default everyone
//!       max_connections: 8           # served at once; more wait briefly, then are closed
//!       request_timeout_ms: 60000    # a connection's whole life
//!       poller:                      # one poller entry, as under pollers:, polled per request
//!         name: host
//!         type: command
//!         agent_program: pattoo_agent_os_spoked
//!         command: [/usr/share/pattoo-agentd/scripts/host-metrics]
//!         format: keyvalue
//! ```
//!
//! And the Python spokes' files, `pattoo_agent_os_spoked.yaml` and
//! `pattoo_agent_linux_spoked.yaml` (`ip_listen_address`, default
//! `0.0.0.0`, and `ip_bind_port`, default 5000, under the program's name or
//! at the top of the file), which serve this host's figures as the Python
//! spoke does: see [`host_poller`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_norway::{Mapping, Value};

use crate::pollers::{PollerKind, PollerSettings};
use crate::yaml::{describe, expect_mapping, Count, Document, DurationMs, Fields, YamlPath};

#[derive(Debug, Clone, PartialEq)]
pub struct SpokeSettings {
    pub listen: SocketAddr,
    /// Without slashes: `pattoo-agent-os` answers `/pattoo-agent-os/<n>`.
    pub route: String,
    /// Clients allowed; empty: every client.
    pub allow: Vec<Network>,
    pub max_connections: usize,
    pub request_timeout: Duration,
    /// Polled once per request; never scheduled. Its `polling_interval`
    /// is unused: each answer carries the interval the request names.
    pub poller: PollerSettings,
}

/// An address or network a client may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub address: IpAddr,
    pub prefix: u8,
}

impl Network {
    /// `10.0.0.0/8`, `fd00::/8`, or one address.
    pub fn parse(text: &str) -> Result<Network, String> {
        let refuse =
            || format!("{text:?} is not an IP address or network such as 10.0.0.0/8 or fd00::/8");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| refuse())?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(refuse)?,
        };
        Ok(Network { address, prefix })
    }

    /// Whether `client` is in the network; an IPv4 client seen as an
    /// IPv4-mapped IPv6 address (a dual-stack listener) counts as IPv4.
    pub fn contains(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        match (self.address, client) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// The Python spokes' port.
pub const DEFAULT_PORT: u16 = 5000;
/// The route of `pattoo_agent_os_spoked`.
pub const DEFAULT_ROUTE: &str = "pattoo-agent-os";
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;
const MAX_CONNECTIONS: u64 = 1024;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl SpokeSettings {
    /// One entry of `spokes:`; `parse_poller` reads its `poller:` entry as
    /// an entry of `pollers:` is read.
    pub fn parse(
        doc: &mut Document,
        path: &YamlPath,
        value: &Value,
        parse_poller: impl FnOnce(&mut Document, &YamlPath, &Value) -> Option<PollerSettings>,
    ) -> Option<SpokeSettings> {
        let map = expect_mapping(doc, path, value)?.clone();
        let mut ok = true;
        let mut listen = None;
        let mut route = DEFAULT_ROUTE.to_owned();
        let mut allow = Vec::new();
        let mut poller = None;
        let mut numbers: [Option<u64>; 2] = [None, None];
        for (key, value) in &map {
            let key = key.as_str().unwrap_or_default();
            let at = path.key(key);
            match key {
                "listen" => match value {
                    Value::String(text) => match text.trim().parse::<SocketAddr>() {
                        Ok(addr) => listen = Some(addr),
                        Err(_) => {
                            doc.error(&at, format!("expected an address and port such as 0.0.0.0:5000 or [::]:5000, found {text:?}"));
                            ok = false;
                        }
                    },
                    other => {
                        doc.error(
                            &at,
                            format!(
                                "expected an address and port such as 0.0.0.0:5000, found {}",
                                describe(other)
                            ),
                        );
                        ok = false;
                    }
                },
                "route" => match value.as_str().map(parse_route) {
                    Some(Ok(text)) => route = text,
                    Some(Err(message)) => {
                        doc.error(&at, message);
                        ok = false;
                    }
                    None => {
                        doc.error(
                            &at,
                            format!(
                                "expected a path such as pattoo-agent-os, found {}",
                                describe(value)
                            ),
                        );
                        ok = false;
                    }
                },
                "allow" => match allow_list(value) {
                    Ok(list) => allow = list,
                    Err(message) => {
                        doc.error(&at, message);
                        ok = false;
                    }
                },
                "max_connections" | "request_timeout_ms" => {
                    let slot = usize::from(key == "request_timeout_ms");
                    match value.as_u64() {
                        Some(n) => numbers[slot] = Some(n),
                        None => {
                            doc.error(
                                &at,
                                format!("expected a whole number, found {}", describe(value)),
                            );
                            ok = false;
                        }
                    }
                }
                "poller" => poller = Some(value.clone()),
                other => {
                    doc.error(&at, format!("unknown key `{other}`: expected listen, route, allow, max_connections, request_timeout_ms or poller"));
                    ok = false;
                }
            }
        }
        let mut fields = Fields::new(path);
        let max_connections = fields.read(
            doc,
            "max_connections",
            numbers[0],
            Count::new(DEFAULT_MAX_CONNECTIONS as u64, MAX_CONNECTIONS),
        ) as usize;
        let request_timeout = fields.read(
            doc,
            "request_timeout_ms",
            numbers[1],
            DurationMs::or(DEFAULT_REQUEST_TIMEOUT),
        );
        ok &= fields.ok();
        if listen.is_none() && ok {
            doc.error(
                path,
                "missing `listen`: the address and port to serve on, e.g. 0.0.0.0:5000",
            );
            ok = false;
        }
        let poller = match poller {
            None => {
                doc.error(path, "missing `poller`: the poller polled for each answer, written as an entry of `pollers:`");
                None
            }
            Some(value) => {
                let at = path.key("poller");
                if let Value::Mapping(entry) = &value {
                    if entry.contains_key("polling_interval") {
                        doc.error(
                            &at.key("polling_interval"),
                            "a spoke's poller is polled when asked, and each answer carries the interval the request names: leave polling_interval out",
                        );
                        ok = false;
                    }
                }
                parse_poller(doc, &at, &value)
            }
        };
        let poller = poller?;
        ok.then_some(SpokeSettings {
            listen: listen?,
            route,
            allow,
            max_connections,
            request_timeout,
            poller,
        })
    }

    /// One line for `check`.
    pub fn describe(&self) -> String {
        let allow = if self.allow.is_empty() {
            "any client".to_owned()
        } else {
            let nets: Vec<String> = self.allow.iter().map(ToString::to_string).collect();
            format!("clients in {}", nets.join(", "))
        };
        format!(
            "serves http://{}/{}/<interval> to {allow}: a fresh poll of {} ({}, as {}) per request",
            self.listen,
            self.route,
            self.poller.name,
            self.poller.kind.shown_type(),
            self.poller.agent_program
        )
    }
}

fn allow_list(value: &Value) -> Result<Vec<Network>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(text) => Network::parse(text).map(|n| vec![n]),
        Value::Sequence(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Network::parse(text),
                other => Err(format!(
                    "expected an IP address or network, found {}",
                    describe(other)
                )),
            })
            .collect(),
        other => Err(format!(
            "expected a list of IP addresses or networks, found {}",
            describe(other)
        )),
    }
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

/// A Python spoke's configuration file that a spoke server takes over.
#[derive(Debug, Clone, Copy)]
pub struct SpokeDropIn {
    pub file_name: &'static str,
    /// The Python spoke's program: the poller's name and agent program.
    pub agent_program: &'static str,
    /// The route the Python spoke answers.
    pub route: &'static str,
}

/// The Python spokes' files, as the configuration loader finds them.
pub const DROP_INS: [SpokeDropIn; 2] = [
    SpokeDropIn {
        file_name: "pattoo_agent_os_spoked.yaml",
        agent_program: "pattoo_agent_os_spoked",
        route: "pattoo-agent-os",
    },
    SpokeDropIn {
        file_name: "pattoo_agent_linux_spoked.yaml",
        agent_program: "pattoo_agent_linux_spoked",
        route: "pattoo-agent-linux",
    },
];

/// Every Python spoke file the configuration loader reads.
pub fn drop_ins() -> impl Iterator<Item = &'static SpokeDropIn> {
    DROP_INS.iter()
}

/// The poller a Python spoke's file serves: this host's figures, polled
/// as the Python spoke's collector polls them, under `agent_program` (so
/// with that program's agent id file). A build without the `os` poller
/// refuses the file, naming what is missing.
pub fn host_poller(agent_program: &str) -> Result<PollerKind, String> {
    #[cfg(feature = "os")]
    {
        let _ = agent_program;
        Ok(PollerKind::Os(crate::pollers::os::OsSettings::default()))
    }
    #[cfg(not(feature = "os"))]
    Err(format!(
        "serving this host's figures as {agent_program} needs the os poller, which this build does not have; \
         rebuild with --features os, remove the file, or serve another poller with `spokes:` in pattoo_agentd.yaml"
    ))
}

impl SpokeDropIn {
    /// The spoke the file describes; errors go to `doc`.
    pub fn load(&self, doc: &mut Document) -> Option<SpokeSettings> {
        let (path, section) = section(doc, self.agent_program)?;
        let mut address: IpAddr = IpAddr::from([0, 0, 0, 0]);
        let mut port = DEFAULT_PORT;
        let mut ok = true;
        for (key, value) in &section {
            let key = key.as_str().unwrap_or_default();
            let at = path.key(key);
            match key {
                "ip_listen_address" => match value {
                    Value::Null => {}
                    Value::String(text) => match text
                        .trim()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse()
                    {
                        Ok(ip) => address = ip,
                        Err(_) => {
                            doc.error(&at, format!("expected an IP address to listen on, such as 0.0.0.0 or ::, found {text:?}"));
                            ok = false;
                        }
                    },
                    other => {
                        doc.error(
                            &at,
                            format!(
                                "expected an IP address to listen on, found {}",
                                describe(other)
                            ),
                        );
                        ok = false;
                    }
                },
                "ip_bind_port" => match python_port(value) {
                    Ok(Some(p)) => port = p,
                    Ok(None) => {}
                    Err(message) => {
                        doc.error(&at, message);
                        ok = false;
                    }
                },
                other => {
                    doc.error(
                        &at,
                        format!(
                            "unknown key `{other}`: expected ip_listen_address or ip_bind_port"
                        ),
                    );
                    ok = false;
                }
            }
        }
        let kind = match host_poller(self.agent_program) {
            Ok(kind) => Some(kind),
            Err(message) => {
                doc.error(&YamlPath::root(), message);
                None
            }
        };
        if !ok {
            return None;
        }
        Some(SpokeSettings {
            listen: SocketAddr::new(address, port),
            route: self.route.to_owned(),
            allow: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            poller: PollerSettings {
                name: self.agent_program.to_owned(),
                agent_program: self.agent_program.to_owned(),
                polling_interval: crate::yaml::DEFAULT_POLLING_INTERVAL,
                metadata: Vec::new(),
                kind: kind?,
            },
        })
    }
}

/// `ip_bind_port` as `int(value)` reads it; null means the default.
fn python_port(value: &Value) -> Result<Option<u16>, String> {
    let number = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64().map(f64::trunc),
        Value::String(text) => text.trim().parse::<i64>().ok().map(|n| n as f64),
        _ => None,
    };
    match number {
        Some(n) if (1.0..=65535.0).contains(&n) => Ok(Some(n as u16)),
        _ => Err(format!(
            "expected a port number from 1 to 65535, found {}",
            match value {
                Value::String(text) => format!("{text:?}"),
                Value::Number(n) => n.to_string(),
                other => describe(other).to_owned(),
            }
        )),
    }
}

/// The program's section, nested under its name (pattoo-agents) or at the
/// top of the file (pattoo-agent-linux).
fn section(doc: &mut Document, program: &str) -> Option<(YamlPath, Mapping)> {
    let root = doc.root.clone();
    let top = match &root {
        Value::Mapping(top) => top,
        Value::Null => {
            doc.error(
                &YamlPath::root(),
                "the file is empty (the Python agent exits on it)",
            );
            return None;
        }
        other => {
            doc.error(
                &YamlPath::root(),
                format!(
                    "expected a mapping of keys to values, found {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    match top.get(program) {
        None => Some((YamlPath::root(), top.clone())),
        Some(Value::Null) => Some((YamlPath::root().key(program), Mapping::new())),
        Some(value) => {
            let path = YamlPath::root().key(program);
            let section = expect_mapping(doc, &path, value)?.clone();
            for key in top.keys().filter(|k| k.as_str() != Some(program)) {
                let key = key.as_str().unwrap_or_default();
                doc.error(
                    &YamlPath::root().key(key),
                    format!("unknown key `{key}`: the settings go under `{program}`"),
                );
            }
            Some((path, section))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn networks_hold_their_addresses_and_ipv4_mapped_clients_count_as_ipv4() {
        let net = Network::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one = Network::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        for bad in ["10.0.0.0/33", "host", "::/129", "1.2.3.4/x"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    fn spoked(file: &str, text: &str) -> (Option<SpokeSettings>, Vec<String>) {
        let mut doc = Document::parse(Path::new(file), text).unwrap();
        let drop_in = DROP_INS.iter().find(|d| d.file_name == file).unwrap();
        let spoke = drop_in.load(&mut doc);
        (
            spoke,
            doc.into_errors().iter().map(ToString::to_string).collect(),
        )
    }

    #[cfg(feature = "os")]
    #[test]
    fn a_spoke_file_serves_this_hosts_figures_under_the_spokes_program() {
        let (spoke, errors) = spoked(
            "pattoo_agent_os_spoked.yaml",
            "pattoo_agent_os_spoked:\n  ip_listen_address: '::'\n  ip_bind_port: '5001'\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let spoke = spoke.expect("a spoke");
        assert_eq!(spoke.listen, "[::]:5001".parse().unwrap());
        assert_eq!(spoke.route, "pattoo-agent-os");
        assert_eq!(spoke.poller.agent_program, "pattoo_agent_os_spoked");
        assert_eq!(
            spoke.poller.kind,
            PollerKind::Os(crate::pollers::os::OsSettings::default())
        );
        let (spoke, errors) = spoked(
            "pattoo_agent_linux_spoked.yaml",
            "ip_listen_address: 127.0.0.1\nip_bind_port: 5002\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let spoke = spoke.expect("a spoke");
        assert_eq!(spoke.route, "pattoo-agent-linux");
        assert_eq!(spoke.poller.agent_program, "pattoo_agent_linux_spoked");
    }

    #[test]
    fn a_spoke_file_is_read_in_either_layout_and_its_errors_are_located() {
        let (_, errors) = spoked(
            "pattoo_agent_linux_spoked.yaml",
            "ip_listen_address: 'not an address'\nip_bind_port: 0\nport: 1\n",
        );
        let mut expected = vec![
            "1:1: ip_listen_address: expected an IP address",
            "2:1: ip_bind_port: expected a port number from 1 to 65535, found 0",
            "3:1: port: unknown key `port`",
        ];
        if cfg!(not(feature = "os")) {
            expected.push("needs the os poller");
        }
        assert_eq!(errors.len(), expected.len(), "{errors:?}");
        for expected in expected {
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{expected}: {errors:?}"
            );
        }
    }

    #[test]
    fn python_ports_are_read_as_int_reads_them() {
        assert_eq!(python_port(&Value::from(5000.7)), Ok(Some(5000)));
        assert_eq!(python_port(&Value::from(" 6000 ")), Ok(Some(6000)));
        assert_eq!(python_port(&Value::Null), Ok(None));
        assert!(python_port(&Value::from("50.5")).is_err());
    }
}
