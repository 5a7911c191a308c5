//! `pattoo-agentd discover bacnet`: the only Who-Is the agent sends, and
//! only when asked. One Who-Is goes to one device or to a broadcast
//! address; the I-Am answers heard within the wait are printed as `type:
//! bacnet` pollers (one per device, YAML to paste under
//! `pattoo_agentd: pollers:`), with the objects each device lists when
//! asked. Pollers never discover: they read the devices they are given.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::client::{self, Heard, IAm, Link};
use super::object::ObjectType;
use super::DEFAULT_PORT;

/// What to ask and where.
#[derive(Debug, Clone)]
pub struct Discover {
    /// The address the Who-Is is sent from (answers come back to it).
    pub local: SocketAddr,
    /// One device, or a broadcast address.
    pub to: SocketAddr,
    pub broadcast: bool,
    /// Device instances low..=high; `None`: every device.
    pub range: Option<(u32, u32)>,
    pub wait: Duration,
    /// Read each device's object-list and object names too.
    pub objects: bool,
    /// Per request, with `objects`.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("cannot bind {local} to send the Who-Is from: {error} (is another program using it? give --local another address or port 0)")]
    Bind {
        local: SocketAddr,
        error: std::io::Error,
    },
    #[error("sending the Who-Is to {to}: {error}")]
    Send { to: SocketAddr, error: std::io::Error },
    #[error("no device answered the Who-Is sent to {to} within {wait:?}{garbage}")]
    NoDevice {
        to: SocketAddr,
        wait: Duration,
        garbage: String,
    },
}

/// Host (IPv4) with an optional port, default 47808.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    text.parse::<std::net::Ipv4Addr>()
        .map(|ip| SocketAddr::from((ip, DEFAULT_PORT)))
        .map_err(|_| format!("{text:?} is not an IPv4 address or address:port"))
}

/// Sends the Who-Is and returns the pollers to print. Answers that are
/// not I-Ams are logged (a warning each) and left out.
pub async fn discover(options: &Discover) -> Result<String, DiscoverError> {
    let socket = UdpSocket::bind(options.local)
        .await
        .map_err(|error| DiscoverError::Bind {
            local: options.local,
            error,
        })?;
    let local = socket.local_addr().unwrap_or(options.local);
    if options.broadcast {
        socket
            .set_broadcast(true)
            .map_err(|error| DiscoverError::Send {
                to: options.to,
                error,
            })?;
    }
    let heard = client::who_is(
        &socket,
        options.to,
        options.broadcast,
        options.range,
        options.wait,
    )
    .await
    .map_err(|error| DiscoverError::Send {
        to: options.to,
        error,
    })?;
    drop(socket);
    let mut devices = Vec::new();
    let mut garbage = 0;
    for heard in heard {
        match heard {
            Heard::Device(device) => devices.push(device),
            Heard::Garbage { from, why } => {
                garbage += 1;
                tracing::warn!(%from, "discover: {from} answered the Who-Is with something that is not an I-Am: {why}; left out");
            }
        }
    }
    if devices.is_empty() {
        return Err(DiscoverError::NoDevice {
            to: options.to,
            wait: options.wait,
            garbage: if garbage > 0 {
                format!(" ({garbage} answer(s) that are not I-Ams, see above)")
            } else {
                String::new()
            },
        });
    }
    devices.sort_by_key(|d| (d.instance, d.address));

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} device(s) answered the Who-Is sent to {} within {:?}; paste under `pattoo_agentd:` `pollers:`",
        devices.len(),
        options.to,
        options.wait
    );
    // The object-lists are read from the same address, as a poller would.
    let link = if options.objects {
        match Link::bind(local, true).await {
            Ok((link, _)) => Some(link),
            Err(error) => {
                tracing::warn!("discover: cannot bind {local} to read object-lists: {error}");
                None
            }
        }
    } else {
        None
    };
    for device in &devices {
        poller(&mut out, options, local, device, link.as_ref()).await;
    }
    Ok(out)
}

fn segmentation(code: u32) -> String {
    let name = match code {
        0 => "both",
        1 => "transmit",
        2 => "receive",
        3 => "none",
        _ => "unknown",
    };
    format!("{name} ({code})")
}

/// A name as a YAML comment: one line.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

async fn poller(
    out: &mut String,
    options: &Discover,
    local: SocketAddr,
    device: &IAm,
    link: Option<&Link>,
) {
    let instance = device.instance;
    let _ = writeln!(out, "- name: bacnet-{instance}");
    let _ = writeln!(out, "  type: bacnet");
    let _ = writeln!(
        out,
        "  # vendor id {}, max APDU {}, segmentation {}",
        device.vendor_id,
        device.max_apdu,
        segmentation(device.segmentation)
    );
    if !local.ip().is_unspecified() {
        let _ = writeln!(out, "  local_address: {}", local.ip());
    }
    let _ = writeln!(
        out,
        "  targets: [{{address: \"{}\", device: {instance}}}]",
        device.address
    );
    let Some(link) = link else {
        let _ = writeln!(
            out,
            "  objects: []   # list them here (--objects reads the device's)"
        );
        return;
    };
    let reader = link.device(device.address, options.timeout);
    let list = match reader.object_list(instance).await {
        Ok(list) => list,
        Err(error) => {
            tracing::warn!(device = instance, "discover: device {instance} ({}): read object-list: {error}", device.address);
            let _ = writeln!(
                out,
                "  objects: []   # its object-list could not be read: {}",
                comment(&error.to_string())
            );
            return;
        }
    };
    let _ = writeln!(out, "  objects:");
    let mut polled = 0;
    for (kind, number) in list {
        let name = match reader.name_of(kind, number).await {
            Ok(name) => comment(&name),
            Err(error) => format!("(name: {})", comment(&error.to_string())),
        };
        match ObjectType::ALL.iter().find(|t| t.code() == kind) {
            Some(object_type) => {
                polled += 1;
                let _ = writeln!(out, "    - {object_type}:{number}   # {name}");
            }
            None => {
                let _ = writeln!(out, "    # type {kind}:{number}   {name} (not read by the poller)");
            }
        }
    }
    if polled == 0 {
        let _ = writeln!(out, "    []   # none the poller reads");
    }
}
