//! The BACnet/IP poller: present values (and names) of the analog, binary
//! and multi-state input, output and value objects of devices, and the
//! drop-in for the Python `pattoo_agent_bacnetipd` ([`compat`]).
//!
//! # Configuration (`type: bacnet` in `pattoo_agentd.yaml`)
//!
//! ```yaml
//! - name: ahus
//!   type: bacnet
//!   targets:                      # host or host:port (default port 47808), or a mapping
//!     - "10.0.0.60"
//!     - {address: "10.0.0.61:47809", device: 1234, name: ahu-2}
//!   objects:                      # read from every target
//!     - analog-input:1            # type:instance; also ai:1, analogInput:1, 0:1
//!     - object: analog-value:3
//!       key: supply_temp          # default: key_template's, analog_value_3
//!       multiplier: 0.1           # value = raw × multiplier + offset, posted as a float
//!       offset: 0
//!       data_type: float          # default: float for analog objects, int otherwise
//!       metadata: {zone: east}
//!   key_template: "{type}_{instance}"   # also {device}
//!   object_names: true            # read names, posted as object_name (outside the checksum)
//!   local_address: 0.0.0.0        # the address the one socket binds (a gateway's)
//!   local_port: 47808             # 0: any free port (devices answer to it)
//!   timeout_ms: 3000              # per request
//!   retries: 1                    # of a request that timed out
//!   max_objects_per_request: 16   # per ReadPropertyMultiple; 1: ReadProperty only
//!   max_concurrent_targets: 64    # devices read at once
//! ```
//!
//! # How it reads
//!
//! - One UDP socket per poller, bound when the first poll starts, carries
//!   every device's requests; an answer is taken only from the address and
//!   port its request went to, and only with its request's invoke id
//!   ([`client`]).
//! - Each device's objects are read with ReadPropertyMultiple (present
//!   value and name of up to `max_objects_per_request` objects a request).
//!   A device that refuses the service is read with ReadProperty from then
//!   on; an object the device answers with an error is asked alone, so the
//!   error is logged with the object, and stays out of
//!   ReadPropertyMultiple until it answers.
//! - Devices are read side by side, at most `max_concurrent_targets` at
//!   once; a device's requests follow one another. A request that times
//!   out is sent again up to `retries` times; after that the device is not
//!   asked again in that poll, so a dead device costs its own timeout ×
//!   (retries + 1) and delays no other.
//! - Error, Reject and Abort answers, undecodable answers and values that
//!   cannot be posted are logged with the poller, device and object; the
//!   rest is posted. Pollers broadcast nothing: the one Who-Is is sent by
//!   `pattoo-agentd discover bacnet` ([`discover`]), when a user asks.
//! - A target that gives `device` is read only once the device at its
//!   address has said it is that device (its device object's identifier,
//!   read once while the poller keeps the device); another instance is
//!   logged as an error and nothing is posted for that target.

/// The metadata keys a BACnet datapoint may carry, with their English
/// names: the Python agent's target, the device instance, the object's
/// name.
pub const METADATA: [(&str, &str); 3] = [
    ("target", "BACnet Target"),
    ("device", "BACnet Device"),
    ("object_name", "BACnet Object Name"),
];

mod client;
pub mod compat;
mod config;
pub mod discover;
mod kind;
pub mod object;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;

pub use config::{
    BacnetSettings, Names, ObjectSettings, TargetSettings, DEFAULT_KEY_TEMPLATE,
    DEFAULT_MAX_OBJECTS_PER_REQUEST, DEFAULT_PORT, DEFAULT_RETRIES, DEFAULT_TIMEOUT,
};
pub use kind::Bacnet;

use self::client::{Device, Link, ReadError};
use self::object::{ObjectId, Property, PropertyValue};
use crate::model::{DataPoint, DataType, Metadata, TargetData, Text, Value};
use crate::time::now_ms;

/// A poll failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum BacnetError {
    #[error("poller {poller}: cannot bind its BACnet/IP socket on {local}: {error} (is another program using it? set local_address/local_port)")]
    Bind {
        poller: String,
        local: SocketAddr,
        error: std::io::Error,
    },
    #[error("poller {poller}: nothing read: all {failed} read(s) failed (see the warnings above)")]
    NothingRead { poller: String, failed: usize },
}

#[derive(Debug)]
pub struct BacnetPoller {
    name: String,
    settings: BacnetSettings,
    link: Option<Link>,
    devices: HashMap<SocketAddr, Arc<DeviceState>>,
    /// The name last read for each (target, object), for a poll in which
    /// the name read fails.
    names: HashMap<(usize, usize), Text>,
}

#[derive(Debug)]
struct DeviceState {
    device: Device,
    /// Whether ReadPropertyMultiple is used (until the device refuses it).
    multiple: AtomicBool,
    /// Objects the device answered with an error when asked alone: they
    /// are left out of ReadPropertyMultiple and asked alone (and logged)
    /// at each poll, until one answers. rustbac-client 0.4.1 decodes a
    /// propertyAccessError inside a ReadPropertyMultiple answer only in a
    /// form of its own, so one unknown object fails the whole answer as
    /// undecodable: without this, every object asked with it would be
    /// asked alone at every poll.
    alone: std::sync::Mutex<std::collections::HashSet<ObjectId>>,
    /// The device instance the device at this address gave, once it has
    /// (asked once while the poller keeps the device).
    instance: std::sync::Mutex<Option<u32>>,
}

/// What one target's poll read: per object, its value and name.
#[derive(Debug, Default)]
struct Outcome {
    values: Vec<Option<(PropertyValue, Option<String>)>>,
    ok: usize,
    failed: usize,
}

impl BacnetPoller {
    /// Does no network I/O: the socket is bound by the first poll.
    pub fn new(name: &str, settings: &BacnetSettings) -> Self {
        BacnetPoller {
            name: name.to_owned(),
            settings: settings.clone(),
            link: None,
            devices: HashMap::new(),
            names: HashMap::new(),
        }
    }

    /// The poller's socket address, once a poll has bound it.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.link.as_ref().and_then(|l| l.local_addr().ok())
    }

    async fn link(&mut self) -> Result<&Link, BacnetError> {
        if self.link.is_none() {
            let local = self.settings.local;
            let (link, fell_back) = Link::bind(local, self.settings.fall_back_to_any_port)
                .await
                .map_err(|error| BacnetError::Bind {
                    poller: self.name.clone(),
                    local,
                    error,
                })?;
            if fell_back {
                tracing::warn!(
                    poller = %self.name,
                    "{local} is taken (by the Python agent?): sending from {} instead; devices answer to the port a request came from",
                    link.local_addr().map_or_else(|_| "another port".to_owned(), |a| a.to_string())
                );
            }
            self.link = Some(link);
        }
        Ok(self.link.as_ref().expect("bound above"))
    }

    /// Polls every target once.
    pub async fn poll(&mut self) -> Result<Vec<TargetData>, BacnetError> {
        self.link().await?;
        let name = self.name.as_str();
        let settings = &self.settings;

        // Where each target is now (names are resolved at each poll).
        let mut by_peer: Vec<(SocketAddr, Vec<usize>)> = Vec::new();
        for (t, target) in settings.targets.iter().enumerate() {
            let Some(peer) = resolve(&target.host, target.port).await else {
                tracing::warn!(
                    poller = name,
                    target = %target.name,
                    "{}: the name does not resolve to an IPv4 address: not polled",
                    target.host
                );
                continue;
            };
            match by_peer.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, targets)) => targets.push(t),
                None => by_peer.push((peer, vec![t])),
            }
        }
        let link = self.link.as_ref().expect("bound above");
        self.devices
            .retain(|peer, _| by_peer.iter().any(|(p, _)| p == peer));
        link.retain(|peer| by_peer.iter().any(|(p, _)| p == peer));
        for (peer, _) in &by_peer {
            self.devices.entry(*peer).or_insert_with(|| {
                Arc::new(DeviceState {
                    device: link.device(*peer, settings.timeout),
                    multiple: AtomicBool::new(settings.max_objects_per_request > 1),
                    alone: Default::default(),
                    instance: Default::default(),
                })
            });
        }

        let polls: Vec<_> = by_peer
            .iter()
            .map(|(peer, targets)| {
                let state = self.devices[peer].clone();
                async move {
                    let mut outcomes = Vec::with_capacity(targets.len());
                    let mut silent = false;
                    for &t in targets {
                        let outcome =
                            read_target(name, settings, &settings.targets[t], &state, &mut silent)
                                .await;
                        outcomes.push((t, outcome));
                    }
                    outcomes
                }
            })
            .collect();
        let mut outcomes: Vec<(usize, Outcome)> = futures_util::stream::iter(polls)
            .buffer_unordered(settings.max_concurrent_targets.max(1))
            .flat_map(futures_util::stream::iter)
            .collect()
            .await;
        outcomes.sort_by_key(|(t, _)| *t);

        let ok: usize = outcomes.iter().map(|(_, o)| o.ok).sum();
        let failed: usize = outcomes.iter().map(|(_, o)| o.failed).sum();
        if ok == 0 && failed > 0 {
            return Err(BacnetError::NothingRead {
                poller: self.name.clone(),
                failed,
            });
        }
        let mut result = Vec::new();
        for (t, outcome) in outcomes {
            let target = &self.settings.targets[t];
            let mut data = TargetData::new(target.name.as_str());
            for (o, read) in outcome.values.into_iter().enumerate() {
                let Some((value, name)) = read else { continue };
                let object = &target.objects[o];
                let name = match name {
                    Some(name) => {
                        let name = Text::from(name).shared();
                        self.names.insert((t, o), name.clone());
                        Some(name)
                    }
                    None => match self.settings.names {
                        Names::Python { last_read: false } => None,
                        _ => self.names.get(&(t, o)).cloned(),
                    },
                };
                match datapoint(&self.settings, target, object, &value, name) {
                    Some(datapoint) => data.datapoints.push(datapoint),
                    None => tracing::warn!(
                        poller = %self.name,
                        target = %target.name,
                        object = %object.object,
                        "{}: {} present-value {value:?} cannot be posted: skipped",
                        target.name,
                        object.object
                    ),
                }
            }
            if !data.datapoints.is_empty() {
                result.push(data);
            }
        }
        Ok(result)
    }
}

/// The IPv4 address of `host` (a literal, or the system resolver's first).
async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some(SocketAddr::from((ip, port)));
    }
    tokio::net::lookup_host((host, port))
        .await
        .ok()?
        .find(SocketAddr::is_ipv4)
}

/// The datapoint for one object's value, or `None` for a value that
/// cannot be posted.
fn datapoint(
    settings: &BacnetSettings,
    target: &TargetSettings,
    object: &ObjectSettings,
    value: &PropertyValue,
    name: Option<Text>,
) -> Option<DataPoint> {
    let raw = value.to_value()?;
    let (value, data_type) = match raw {
        Value::Text(text) => (Value::Text(text), DataType::String),
        raw => {
            let scaled = object.multiplier.is_some() || object.offset.is_some();
            let value = if scaled {
                let number = match raw {
                    Value::Int(v) => v as f64,
                    Value::UInt(v) => v as f64,
                    Value::UInt128(v) => v.get() as f64,
                    Value::Float(v) => v,
                    Value::Text(_) => unreachable!("matched above"),
                };
                // No offset is not + 0.0, which would make -0.0 0.0.
                let scaled = number * object.multiplier.unwrap_or(1.0);
                Value::Float(object.offset.map_or(scaled, |offset| scaled + offset))
            } else {
                raw
            };
            let default = if scaled || object.object.object_type.is_analog() {
                DataType::Float
            } else {
                DataType::Int
            };
            (value, object.data_type.unwrap_or(default))
        }
    };
    let mut metadata = Vec::with_capacity(3 + object.metadata.len());
    metadata.extend(target.target_metadata.iter().cloned());
    if let Some(device) = target.device {
        metadata.push(Metadata::new(METADATA[1].0, device.to_string()));
    }
    if let Some(name) = name {
        metadata.push(match settings.names {
            Names::Python { .. } => Metadata::new(METADATA[2].0, name),
            _ => Metadata::without_checksum(METADATA[2].0, name),
        });
    }
    metadata.extend(object.metadata.iter().cloned());
    Some(DataPoint {
        key: object.key.clone(),
        value,
        data_type,
        timestamp_ms: now_ms(),
        metadata,
    })
}

/// Sends a request again while it times out, up to `retries` times.
async fn with_retries<T, F, Fut>(retries: u32, mut request: F) -> Result<T, ReadError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ReadError>>,
{
    let mut tries = 0;
    loop {
        match request().await {
            Err(error) if error.is_timeout() && tries < retries => tries += 1,
            other => return other,
        }
    }
}

/// Reads one target's objects through its device's client. `silent` is set
/// once the device has not answered a request through its retries: its
/// other reads in this poll are skipped.
async fn read_target(
    poller: &str,
    settings: &BacnetSettings,
    target: &TargetSettings,
    state: &DeviceState,
    silent: &mut bool,
) -> Outcome {
    let objects = &target.objects;
    let mut outcome = Outcome {
        values: vec![None; objects.len()],
        ..Outcome::default()
    };
    let names = !matches!(settings.names, Names::Off);
    let device = &state.device;
    let peer = device.peer();
    let log = |object: ObjectId, property: Property, error: &ReadError| {
        tracing::warn!(
            poller,
            target = %target.name,
            object = %object,
            "{} ({peer}): read {object} {property}: {error}",
            target.name
        );
    };
    if let Some(expected) = target.device {
        if !instance_matches(poller, settings, target, state, expected, silent).await {
            outcome.failed = objects.len();
            return outcome;
        }
    }
    let alone = state.alone.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (mut pending, mut together): (Vec<usize>, Vec<usize>) =
        (0..objects.len()).partition(|&o| alone.contains(&objects[o].object));
    if state.multiple.load(Ordering::Relaxed) && !*silent && !together.is_empty() {
        let mut properties = vec![Property::PresentValue];
        if names {
            properties.push(Property::ObjectName);
        }
        let mut asked_alone = Vec::new();
        let mut chunks = together.chunks(settings.max_objects_per_request.max(1));
        for chunk in chunks.by_ref() {
            let ids: Vec<ObjectId> = chunk.iter().map(|&o| objects[o].object).collect();
            match with_retries(settings.retries, || device.read_many(&ids, &properties)).await {
                Ok(answers) => {
                    for (&o, answer) in chunk.iter().zip(answers) {
                        let mut answer = answer.into_iter();
                        match answer.next() {
                            Some(Ok(value)) => {
                                let name = match answer.next() {
                                    Some(Ok(PropertyValue::Text(name))) => Some(name),
                                    Some(Ok(other)) => {
                                        log(
                                            objects[o].object,
                                            Property::ObjectName,
                                            &ReadError::Malformed(format!(
                                                "not a character string: {other:?}"
                                            )),
                                        );
                                        None
                                    }
                                    // Asked alone below, to learn why.
                                    Some(Err(_)) => {
                                        asked_alone.push((o, Some(value)));
                                        continue;
                                    }
                                    None => None,
                                };
                                outcome.ok += 1;
                                outcome.values[o] = Some((value, name));
                            }
                            _ => asked_alone.push((o, None)),
                        }
                    }
                }
                Err(error) if error.is_unsupported_service() => {
                    tracing::info!(
                        poller,
                        target = %target.name,
                        "{} ({peer}): ReadPropertyMultiple refused ({error}): reading one property a request from now on",
                        target.name
                    );
                    state.multiple.store(false, Ordering::Relaxed);
                    asked_alone.extend(chunk.iter().map(|&o| (o, None)));
                }
                Err(error) if error.is_timeout() => {
                    tracing::warn!(
                        poller,
                        target = %target.name,
                        "{} ({peer}): no answer to ReadPropertyMultiple of {} object(s): {error}; not asked again in this poll",
                        target.name,
                        chunk.len()
                    );
                    *silent = true;
                    outcome.failed += chunk.len();
                    break;
                }
                // The whole request failed (some devices answer an unknown
                // object so): each object asked alone finds which.
                Err(error) => {
                    tracing::info!(
                        poller,
                        target = %target.name,
                        "{} ({peer}): ReadPropertyMultiple failed ({error}): asking each of its {} object(s) alone; those the device refuses are asked alone from now on",
                        target.name,
                        chunk.len()
                    );
                    asked_alone.extend(chunk.iter().map(|&o| (o, None)));
                }
            }
        }
        if *silent {
            outcome.failed += chunks.map(<[usize]>::len).sum::<usize>();
        }
        together.clear();
        for (o, value) in asked_alone {
            match value {
                // The value came; only the name is asked again.
                Some(value) => {
                    let name = if *silent {
                        None
                    } else {
                        read_name(settings, device, objects[o].object, silent, &log).await
                    };
                    outcome.ok += 1;
                    outcome.values[o] = Some((value, name));
                }
                None => together.push(o),
            }
        }
        pending.extend(together);
    } else {
        pending.extend(together);
    }
    let mut refused = Vec::new();
    let mut answered = Vec::new();
    for (n, &o) in pending.iter().enumerate() {
        if *silent {
            outcome.failed += pending.len() - n;
            break;
        }
        let object = objects[o].object;
        match with_retries(settings.retries, || device.read(object, Property::PresentValue)).await
        {
            Ok(value) => {
                answered.push(object);
                let name = if names {
                    read_name(settings, device, object, silent, &log).await
                } else {
                    None
                };
                outcome.ok += 1;
                outcome.values[o] = Some((value, name));
            }
            Err(error) => {
                log(object, Property::PresentValue, &error);
                outcome.failed += 1;
                if matches!(error, ReadError::Error { .. }) {
                    refused.push(object);
                }
                if error.is_timeout() {
                    *silent = true;
                    let left = pending.len() - n - 1;
                    if left > 0 {
                        tracing::warn!(
                            poller,
                            target = %target.name,
                            "{} ({peer}): not asked for the other {left} object(s) in this poll",
                            target.name
                        );
                    }
                }
            }
        }
    }
    if !refused.is_empty() || !answered.is_empty() {
        let mut alone = state.alone.lock().unwrap_or_else(|e| e.into_inner());
        alone.extend(refused);
        for object in &answered {
            alone.remove(object);
        }
    }
    outcome
}

/// Whether the device at the target's address is device `expected`: its
/// device object's identifier is read (with the wildcard instance, else
/// with `expected`) once while the poller keeps the device. A device with
/// another instance is not read, so nothing is posted under the wrong
/// one; a check that cannot be made (no answer, an odd answer) is logged
/// and asked again at the next poll.
async fn instance_matches(
    poller: &str,
    settings: &BacnetSettings,
    target: &TargetSettings,
    state: &DeviceState,
    expected: u32,
    silent: &mut bool,
) -> bool {
    let peer = state.device.peer();
    let known = *state.instance.lock().unwrap_or_else(|e| e.into_inner());
    let instance = match known {
        Some(instance) => Some(instance),
        None if *silent => return false,
        None => {
            let read = |instance| {
                with_retries(settings.retries, move || {
                    state.device.device_instance(instance)
                })
            };
            let answer = match read(client::ANY_DEVICE).await {
                // Not every device takes the wildcard: its own instance
                // answers, or names the mismatch.
                Err(ReadError::Error { .. }) => match read(expected).await {
                    Err(ReadError::Error { class, code }) if code.starts_with("unknown-object") => {
                        tracing::error!(
                            poller,
                            target = %target.name,
                            device = expected,
                            "{} ({peer}): the device there has no device object {expected} (error class {class}, code {code}): is `device` or the address wrong? Not read",
                            target.name
                        );
                        return false;
                    }
                    other => other,
                },
                other => other,
            };
            match answer {
                Ok(instance) => {
                    *state.instance.lock().unwrap_or_else(|e| e.into_inner()) = Some(instance);
                    Some(instance)
                }
                Err(error) => {
                    *silent |= error.is_timeout();
                    tracing::warn!(
                        poller,
                        target = %target.name,
                        device = expected,
                        "{} ({peer}): cannot check that the device is device {expected}: read device object-identifier: {error}; {}",
                        target.name,
                        if error.is_timeout() { "not read in this poll" } else { "read unchecked" }
                    );
                    if error.is_timeout() {
                        return false;
                    }
                    None
                }
            }
        }
    };
    match instance {
        Some(instance) if instance != expected => {
            tracing::error!(
                poller,
                target = %target.name,
                device = expected,
                "{} ({peer}): the device there is device {instance}, not device {expected} as configured: not read, so nothing is posted under the wrong device (correct `device` or the address)",
                target.name
            );
            false
        }
        _ => true,
    }
}

/// An object's name by ReadProperty, or `None` (logged).
async fn read_name(
    settings: &BacnetSettings,
    device: &Device,
    object: ObjectId,
    silent: &mut bool,
    log: &impl Fn(ObjectId, Property, &ReadError),
) -> Option<String> {
    match with_retries(settings.retries, || device.read(object, Property::ObjectName)).await {
        Ok(PropertyValue::Text(name)) => Some(name),
        Ok(other) => {
            log(
                object,
                Property::ObjectName,
                &ReadError::Malformed(format!("not a character string: {other:?}")),
            );
            None
        }
        Err(error) => {
            log(object, Property::ObjectName, &error);
            *silent |= error.is_timeout();
            None
        }
    }
}
