//! Settings of a `type: opcua` poller, validated with every error located
//! (see the module doc of [`super`] for the YAML).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ::opcua::types::NodeId;
use serde::Deserialize;
use serde_norway::Value;

use super::convert::{PyMultiplier, Scale};
use crate::model::{DataType, Metadata};
use crate::secret::{self, SecretSource};
use crate::yaml::{
    check_user_key, parse_metadata, parse_naming, Document, DurationMs, Fields, Naming, YamlPath,
};

pub const DEFAULT_PORT: u16 = 4840;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub struct OpcuaSettings {
    pub flavour: Flavour,
    pub servers: Vec<ServerSettings>,
    pub security: Security,
    /// Per server: connecting (with its handshake) and then the Read.
    pub timeout: Duration,
}

/// What a poll makes of what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `type: opcua`: keys, values and data types as configured.
    Native,
    /// `pattoo_agent_opcuad.yaml`: exactly what the Python agent posts.
    Python,
}

/// One server and what to read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// `pattoo_agent_polled_target`.
    pub name: String,
    /// `opc.tcp://host:port/path`, IPv6 literals bracketed.
    pub url: String,
    /// Anonymous when `None`.
    pub user: Option<(String, SecretSource)>,
    /// Shared by every server of a native poller.
    pub nodes: Arc<[NodeSettings]>,
}

/// One node whose Value attribute is read.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettings {
    /// As written: what the logs name.
    pub address: String,
    /// `None` for a Python file's address no OPC UA parser takes (logged
    /// each poll, as the Python agent did).
    pub node_id: Option<NodeId>,
    /// The datapoint key.
    pub key: String,
    pub post: Post,
    /// Its name and unit for `translations`.
    pub naming: Naming,
}

/// How a value read is posted.
#[derive(Debug, Clone, PartialEq)]
pub enum Post {
    Native {
        scale: Scale,
        data_type: Option<DataType>,
        metadata: Vec<Metadata>,
    },
    /// The Python agent's multiplier rules and data type 99.
    Python { multiplier: PyMultiplier },
}

/// The secure channel: security policy None, or Basic256Sha256.
#[derive(Debug, Clone, PartialEq)]
pub struct Security {
    pub mode: SecurityMode,
    /// The client's application instance certificate (DER) and private
    /// key (PEM); needed to sign.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// The certificate store: servers' certificates trusted in
    /// `trusted/`, rejected ones put in `rejected/`.
    pub pki_dir: PathBuf,
    /// Accept a server certificate not in the store (and put it there).
    pub trust_unknown_servers: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    None,
    Sign,
    SignAndEncrypt,
}

impl SecurityMode {
    pub fn describe(self) -> &'static str {
        match self {
            SecurityMode::None => "security None",
            SecurityMode::Sign => "Basic256Sha256 Sign",
            SecurityMode::SignAndEncrypt => "Basic256Sha256 SignAndEncrypt",
        }
    }
}

impl Security {
    /// Security policy None; the certificate store, unused, in a private
    /// temporary directory (the library creates it).
    pub fn none() -> Security {
        Security {
            mode: SecurityMode::None,
            certificate: None,
            private_key: None,
            pki_dir: std::env::temp_dir().join("pattoo-agentd-opcua-pki"),
            trust_unknown_servers: false,
        }
    }
}

impl OpcuaSettings {
    /// One line for `check`: servers, security, nodes; no secret.
    pub fn describe(&self) -> String {
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|s| {
                let user = match &s.user {
                    Some((name, secret)) => format!("user {name:?}, password {secret}"),
                    None => "anonymous".to_owned(),
                };
                format!("{} ({} nodes, {user})", s.url, s.nodes.len())
            })
            .collect();
        format!(
            "OPC UA Read of Value attributes from {}; {}, timeout {} ms",
            servers.join(", "),
            self.security.mode.describe(),
            self.timeout.as_millis()
        )
    }
}

/// `opc.tcp://host[:port][/path]`: host (brackets removed) and port.
pub fn parse_url(url: &str) -> Result<(String, u16), String> {
    let Some(rest) = url.strip_prefix("opc.tcp://") else {
        return Err(format!("{url:?} is not an opc.tcp:// URL, e.g. opc.tcp://plc1.example.org:4840"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(format!("{url:?}: an IPv6 address needs its closing ]"));
        };
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => {
                return Err(format!(
                    "{url:?}: write an IPv6 address in brackets, opc.tcp://[2001:db8::1]:4840"
                ))
            }
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(text) => crate::yaml::Port::from_text(text)
            .map_err(|e| format!("{url:?}: {e}"))?
            .0,
    };
    Ok((host.to_owned(), port))
}

/// A node id in OPC UA's string form (`ns=2;s=Name`, `i=2258`,
/// `ns=1;g=…`, `ns=1;b=…`).
pub fn parse_node_id(address: &str) -> Result<NodeId, String> {
    NodeId::from_str(address).map_err(|_| {
        format!(
            "{address:?} is not an OPC UA node id: expected ns=<index>;<i|s|g|b>=<identifier>, e.g. ns=2;s=Temperature or i=2258 (lower case)"
        )
    })
}

// ---------------------------------------------------------------------------
// `type: opcua` in pattoo_agentd.yaml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpcua {
    servers: Vec<RawServer>,
    security: Option<String>,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
    pki_dir: Option<PathBuf>,
    trust_unknown_servers: Option<bool>,
    user: Option<String>,
    /// Read by [`secret::parse`].
    password: Option<Value>,
    timeout_ms: Option<u64>,
    nodes: Vec<RawNode>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawServer {
    Url(String),
    Detailed(RawServerDetail),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerDetail {
    url: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    node: String,
    key: Option<String>,
    multiplier: Option<f64>,
    offset: Option<f64>,
    data_type: Option<DataType>,
    metadata: Option<Value>,
    description: Option<String>,
    units: Option<String>,
}

impl OpcuaSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawOpcua = doc.deserialize(path, value)?;
        let errors_before = doc.error_count();
        let mut fields = Fields::new(path);
        let timeout = fields.read(
            doc,
            "timeout_ms",
            raw.timeout_ms,
            DurationMs::or(DEFAULT_TIMEOUT),
        );
        let security = parse_security(doc, path, &raw);
        let user = match (&raw.user, &raw.password) {
            (Some(user), Some(password)) => {
                secret::parse(doc, &path.key("password"), password).map(|s| Some((user.clone(), s)))
            }
            (Some(_), None) => {
                doc.error(
                    &path.key("user"),
                    "a user needs a `password`: {file: /etc/pattoo/opcua-password} or {env: OPCUA_PASSWORD}",
                );
                None
            }
            (None, Some(_)) => {
                doc.error(&path.key("password"), "a password needs a `user`");
                None
            }
            (None, None) => Some(None),
        };
        let nodes = parse_nodes(doc, path, &raw.nodes);
        let mut servers = Vec::new();
        if raw.servers.is_empty() {
            doc.error(&path.key("servers"), "no server: list at least one opc.tcp:// URL");
        }
        for (i, server) in raw.servers.iter().enumerate() {
            let at = path.key("servers").index(i);
            let (url, name) = match server {
                RawServer::Url(url) => (url, None),
                RawServer::Detailed(detail) => (&detail.url, detail.name.as_ref()),
            };
            match parse_url(url.trim()) {
                Ok((host, _)) => servers.push(ServerSettings {
                    name: name.cloned().unwrap_or(host),
                    url: url.trim().to_owned(),
                    user: None,
                    nodes: nodes.clone().into(),
                }),
                Err(message) => doc.error(&at, message),
            }
        }
        if doc.error_count() > errors_before || !fields.ok() {
            return None;
        }
        let user = user?;
        for server in &mut servers {
            server.user = user.clone();
        }
        Some(OpcuaSettings {
            flavour: Flavour::Native,
            servers,
            security: security?,
            timeout,
        })
    }
}

fn parse_security(doc: &mut Document, path: &YamlPath, raw: &RawOpcua) -> Option<Security> {
    let mode = match raw.security.as_deref().map(str::trim) {
        None | Some("none") => SecurityMode::None,
        Some("sign") => SecurityMode::Sign,
        Some("sign_and_encrypt") => SecurityMode::SignAndEncrypt,
        Some(other) => {
            doc.error(
                &path.key("security"),
                format!("unknown security {other:?}: expected none, sign or sign_and_encrypt (Basic256Sha256)"),
            );
            return None;
        }
    };
    if mode == SecurityMode::None {
        for (key, given) in [
            ("certificate", raw.certificate.is_some()),
            ("private_key", raw.private_key.is_some()),
            ("pki_dir", raw.pki_dir.is_some()),
            ("trust_unknown_servers", raw.trust_unknown_servers.is_some()),
        ] {
            if given {
                doc.error(
                    &path.key(key),
                    "only used with `security: sign` or `sign_and_encrypt`: drop this, or set the security",
                );
            }
        }
        return Some(Security::none());
    }
    let mut ok = true;
    for (key, given) in [
        ("certificate", &raw.certificate),
        ("private_key", &raw.private_key),
        ("pki_dir", &raw.pki_dir),
    ] {
        match given {
            None => {
                doc.error(
                    path,
                    format!("`security: {}` needs `{key}`", raw.security.as_deref().unwrap_or_default()),
                );
                ok = false;
            }
            Some(file) if !file.is_absolute() => {
                doc.error(&path.key(key), "expected an absolute path");
                ok = false;
            }
            Some(file) if key != "pki_dir" && !file.is_file() => {
                doc.error(
                    &path.key(key),
                    format!("{} is not a readable file", file.display()),
                );
                ok = false;
            }
            Some(_) => {}
        }
    }
    ok.then(|| Security {
        mode,
        certificate: raw.certificate.clone(),
        private_key: raw.private_key.clone(),
        pki_dir: raw.pki_dir.clone().unwrap_or_default(),
        trust_unknown_servers: raw.trust_unknown_servers.unwrap_or(false),
    })
}

fn parse_nodes(doc: &mut Document, path: &YamlPath, raw: &[RawNode]) -> Vec<NodeSettings> {
    if raw.is_empty() {
        doc.error(&path.key("nodes"), "no node: list at least one node id to read");
    }
    let mut nodes = Vec::with_capacity(raw.len());
    for (i, node) in raw.iter().enumerate() {
        let at = path.key("nodes").index(i);
        let address = node.node.trim().to_owned();
        let node_id = match parse_node_id(&address) {
            Ok(id) => id,
            Err(message) => {
                doc.error(&at.key("node"), message);
                continue;
            }
        };
        let key = node.key.clone().unwrap_or_else(|| address.clone());
        if !check_user_key(doc, &at.key("key"), &key) {
            continue;
        }
        let data_type = node.data_type;
        let metadata = match &node.metadata {
            None => Vec::new(),
            Some(value) => match parse_metadata(doc, &at.key("metadata"), value) {
                Some(m) => m,
                None => continue,
            },
        };
        let Some(naming) = parse_naming(doc, &at, node.description.as_deref(), node.units.as_deref())
        else {
            continue;
        };
        nodes.push(NodeSettings {
            address,
            node_id: Some(node_id),
            key,
            post: Post::Native {
                scale: Scale {
                    multiplier: node.multiplier,
                    offset: node.offset,
                },
                data_type,
                metadata,
            },
            naming,
        });
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port_with_ipv6_in_brackets() {
        assert_eq!(
            parse_url("opc.tcp://plc1:4841/path"),
            Ok(("plc1".to_owned(), 4841))
        );
        assert_eq!(parse_url("opc.tcp://plc1"), Ok(("plc1".to_owned(), 4840)));
        assert_eq!(
            parse_url("opc.tcp://[::1]:4840/"),
            Ok(("::1".to_owned(), 4840))
        );
        assert!(parse_url("http://plc1").is_err());
        assert!(parse_url("opc.tcp://::1:4840").is_err());
        assert!(parse_url("opc.tcp://plc1:0").is_err());
    }

    #[test]
    fn node_ids_in_every_string_form_parse_and_upper_case_does_not() {
        for good in [
            "ns=2;s=Temperature",
            "ns=2;i=1001",
            "i=2258",
            "ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a",
            "ns=1;b=M/RbKBsRVkePCePcx24oRA==",
        ] {
            assert!(parse_node_id(good).is_ok(), "{good}");
        }
        for bad in ["NS=2;S=Temperature", "Temperature", "ns=x;s=a", ""] {
            assert!(parse_node_id(bad).is_err(), "{bad}");
        }
    }
}
