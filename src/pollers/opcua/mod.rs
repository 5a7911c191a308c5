//! The OPC UA poller: the Value attributes of listed nodes, read from each
//! server in one Read per poll over a kept session, and the drop-in for
//! the Python `pattoo_agent_opcuad` agent ([`compat`]).
//!
//! # Configuration (`type: opcua` in `pattoo_agentd.yaml`)
//!
//! ```yaml
//! - name: plant
//!   type: opcua
//!   servers:                      # opc.tcp:// URLs, or {url, name}
//!     - opc.tcp://plc1.example.org:4840
//!     - {url: "opc.tcp://[2001:db8::5]:4840", name: plc2}
//!   security: none                # none (default), sign, sign_and_encrypt
//!   # with sign or sign_and_encrypt (Basic256Sha256):
//!   # certificate: /etc/pattoo/opcua/client.der   # DER
//!   # private_key: /etc/pattoo/opcua/client.pem   # PEM
//!   # pki_dir: /var/lib/pattoo/opcua              # trusted/ holds servers' certificates
//!   # trust_unknown_servers: false
//!   user: operator                # default: anonymous
//!   password: {file: /etc/pattoo/opcua-password}  # or {env: OPCUA_PASSWORD}
//!   timeout_ms: 5000              # per server: connecting, then the Read
//!   nodes:
//!     - {node: "ns=2;s=Temperature", key: temperature}
//!     - {node: "ns=2;i=1001", key: counter, multiplier: 0.1, offset: 0}
//!     - {node: "i=2258", key: server_time, data_type: string}
//! ```
//!
//! Values: integer types are posted as integers (`int`), Float (widened
//! exactly: 21.3 is 21.299999237060547) and Double as `float`, Boolean as
//! 0 or 1 (`int`), String and LocalizedText as `string`; a multiplier or
//! offset makes a float. Other types (DateTime, arrays, ...) and values
//! whose status is not Good are not posted; each is logged with its node.
//! Every datapoint carries the metadata `opcua_node` (the node id).
//!
//! # How it reads
//!
//! - One session per server, kept between polls; a lost one is dropped
//!   and made again at the next poll, and a server that keeps failing is
//!   tried after a growing wait (5 s doubling to 5 min).
//! - Servers are polled concurrently; each has its own timeout for
//!   connecting (TCP, Hello, secure channel, session) and for its Read, so
//!   a server that stalls costs only its own timeout and delays no other.
//! - Up to 1000 nodes are read in one Read (more make several). An answer
//!   is at most 5 chunks of 64 KiB and arrays of 1000 items, the client
//!   library's bounds, so a server cannot make the agent hold more.
//! - Errors name the poller, the server's URL and, per node, the node id
//!   and status. Whatever was read is posted.

pub mod compat;
/// The metadata key of a native poller's datapoint: the node it was read
/// from.
pub const NODE_METADATA_KEY: &str = "opcua_node";

mod config;
pub mod convert;
mod kind;
mod session;

pub use config::{
    parse_node_id, parse_url, Flavour, NodeSettings, OpcuaSettings, Post, Security, SecurityMode,
    ServerSettings,
};
pub use kind::Opcua;

use ::opcua::types::{AttributeId, ReadValueId};

use crate::model::{DataPoint, DataType, Metadata, TargetData};
use session::ServerConnection;

/// Nodes read in one Read at most: the longest array the client library
/// decodes. More nodes make more Reads; fewer, one.
const MAX_NODES_PER_READ: usize = 1000;

/// Every server of a poll failed.
#[derive(Debug, thiserror::Error)]
#[error("poller {poller}: none of its {servers} OPC UA servers answered")]
pub struct OpcuaError {
    pub poller: String,
    pub servers: usize,
}

/// A poller ready to poll: its settings and a kept session per server.
#[derive(Debug)]
pub struct OpcuaPoller {
    name: String,
    settings: OpcuaSettings,
    /// The Read of each server, made once: the nodes that parsed.
    reads: Vec<Vec<ReadValueId>>,
    connections: Vec<ServerConnection>,
}

impl OpcuaPoller {
    pub fn new(name: &str, settings: &OpcuaSettings) -> OpcuaPoller {
        let reads = settings
            .servers
            .iter()
            .map(|server| {
                server
                    .nodes
                    .iter()
                    .filter_map(|node| node.node_id.clone())
                    .map(|node_id| ReadValueId {
                        node_id,
                        attribute_id: AttributeId::Value as u32,
                        ..Default::default()
                    })
                    .collect()
            })
            .collect();
        OpcuaPoller {
            name: name.to_owned(),
            settings: settings.clone(),
            reads,
            connections: settings.servers.iter().map(|_| Default::default()).collect(),
        }
    }

    pub async fn poll(&mut self) -> Result<Vec<TargetData>, OpcuaError> {
        let name = self.name.as_str();
        let settings = &self.settings;
        let polls = settings
            .servers
            .iter()
            .zip(&self.reads)
            .zip(self.connections.iter_mut())
            .map(|((server, read), connection)| {
                poll_server(name, settings, server, read, connection)
            });
        let outcomes = futures_util::future::join_all(polls).await;
        if !outcomes.is_empty() && outcomes.iter().all(Option::is_none) {
            return Err(OpcuaError {
                poller: self.name.clone(),
                servers: outcomes.len(),
            });
        }
        Ok(outcomes
            .into_iter()
            .flatten()
            .filter(|data| !data.datapoints.is_empty())
            .collect())
    }
}

/// One server's datapoints, or `None` when it gave nothing (logged).
async fn poll_server(
    poller: &str,
    settings: &OpcuaSettings,
    server: &ServerSettings,
    read: &[ReadValueId],
    connection: &mut ServerConnection,
) -> Option<TargetData> {
    let url = server.url.as_str();
    for node in server.nodes.iter().filter(|n| n.node_id.is_none()) {
        tracing::warn!(poller, url, node = %node.address, "poller {poller}: {url}: node {:?} skipped: not an OPC UA node id (ns=<index>;<i|s|g|b>=<identifier>, lower case)", node.address);
    }
    if read.is_empty() {
        return Some(TargetData::new(server.name.clone()));
    }
    let mut values = Vec::with_capacity(read.len());
    for chunk in read.chunks(MAX_NODES_PER_READ) {
        match connection
            .read(server, &settings.security, settings.timeout, chunk)
            .await
        {
            Ok(mut answer) if answer.len() == chunk.len() => values.append(&mut answer),
            Ok(answer) => {
                tracing::warn!(poller, url, "poller {poller}: {url}: the Read of {} nodes answered {} values; nothing from it is posted", chunk.len(), answer.len());
                return None;
            }
            Err(error) => {
                tracing::warn!(poller, url, "poller {poller}: {url}: {error}");
                return None;
            }
        }
    }
    let timestamp_ms = crate::time::now_ms();
    let mut target = TargetData::new(server.name.clone());
    let nodes = server.nodes.iter().filter(|n| n.node_id.is_some());
    for (node, value) in nodes.zip(values) {
        let address = node.address.as_str();
        let status = value.status.unwrap_or_default();
        if !status.is_good() {
            tracing::warn!(poller, url, node = address, %status, "poller {poller}: {url}: node {address}: {status}; not posted");
            continue;
        }
        let Some(variant) = value.value else {
            tracing::warn!(poller, url, node = address, "poller {poller}: {url}: node {address}: no value; not posted");
            continue;
        };
        match &node.post {
            Post::Python { multiplier } => {
                let read = convert::python_value(&variant);
                match convert::python_datapoint(read, *multiplier) {
                    Ok(value) => target.datapoints.push(
                        DataPoint::new(node.key.as_str(), value, DataType::Int, timestamp_ms)
                            .with_metadata(Metadata::new(compat::SERVER_KEY, server.name.as_str())),
                    ),
                    Err(why) => {
                        tracing::info!(poller, url, node = address, "poller {poller}: {url}: node {address}: {why}; not posted, as by the Python agent")
                    }
                }
            }
            Post::Native {
                scale,
                data_type,
                metadata,
            } => match convert::native_value(&variant, *scale, *data_type) {
                Ok((value, data_type)) => {
                    let mut point =
                        DataPoint::new(node.key.as_str(), value, data_type, timestamp_ms)
                            .with_metadata(Metadata::new(NODE_METADATA_KEY, address));
                    point.metadata.extend(metadata.iter().map(Metadata::shared));
                    target.datapoints.push(point);
                }
                Err(why) => {
                    tracing::warn!(poller, url, node = address, "poller {poller}: {url}: node {address}: {why}")
                }
            },
        }
    }
    Some(target)
}
