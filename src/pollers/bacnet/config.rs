//! Settings of a `type: bacnet` poller, validated with every error located
//! (see the module doc of [`super`] for the YAML). The Python drop-in
//! ([`super::compat`]) fills the same settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use super::object::{ObjectId, MAX_INSTANCE};
use crate::model::{DataType, Metadata, Text};
use crate::yaml::{
    check_user_key, describe, parse_metadata, parse_naming, Count, Document, DurationMs, Fields,
    Naming, Port, Retries, YamlPath,
};

/// BACnet/IP's port (0xBAC0), the devices' and by default the poller's.
pub const DEFAULT_PORT: u16 = 47808;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_RETRIES: u32 = 1;
pub const MAX_RETRIES: u32 = 5;
pub const DEFAULT_MAX_CONCURRENT_TARGETS: usize = 64;
/// Objects asked for in one ReadPropertyMultiple: with a name and a value
/// each, the answer stays within one unsegmented 1476-octet APDU.
pub const DEFAULT_MAX_OBJECTS_PER_REQUEST: usize = 16;
pub const MAX_OBJECTS_PER_REQUEST: u64 = 64;
pub const DEFAULT_KEY_TEMPLATE: &str = "{type}_{instance}";

#[derive(Debug, Clone, PartialEq)]
pub struct BacnetSettings {
    /// The poller's one socket: `local_address:local_port`.
    pub local: SocketAddr,
    /// When `local`'s port is taken, bind an ephemeral port on the same
    /// address instead (the drop-in: the Python agent may still hold
    /// 47808 while the switch is made).
    pub fall_back_to_any_port: bool,
    /// Per request.
    pub timeout: Duration,
    /// Requests that timed out are sent again this many times.
    pub retries: u32,
    pub max_concurrent_targets: usize,
    /// Objects per ReadPropertyMultiple; 1 reads each property with
    /// ReadProperty.
    pub max_objects_per_request: usize,
    pub names: Names,
    pub targets: Vec<TargetSettings>,
}

/// What is done with object names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// Not read.
    Off,
    /// Read and attached as `object_name` metadata outside the checksum
    /// (a renamed object keeps its chart); when a read fails, the last
    /// name read is attached.
    Metadata,
    /// As the Python agent: `object_name` enters the checksum. When the
    /// name read fails, the last name read for the object is used, or with
    /// `last_read: false` (as Python) none.
    Python { last_read: bool },
}

/// One device and what to read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSettings {
    /// The `pattoo_agent_polled_target` of its datapoints.
    pub name: String,
    /// A host name or IPv4 address, resolved at each poll.
    pub host: String,
    pub port: u16,
    /// The device instance, when given: metadata `device`, and `{device}`
    /// in key templates.
    pub device: Option<u32>,
    /// The Python drop-in's `target` metadata (the name as written).
    pub target_metadata: Option<Metadata>,
    /// Shared by every target of a group.
    pub objects: Arc<[ObjectSettings]>,
}

/// One object to read.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectSettings {
    pub object: ObjectId,
    pub key: Text,
    pub multiplier: Option<f64>,
    pub offset: Option<f64>,
    /// `None`: float for analog objects and scaled values, int otherwise.
    pub data_type: Option<DataType>,
    /// Attached after the poller's own metadata.
    pub metadata: Vec<Metadata>,
    /// Its name and unit for `translations`.
    pub naming: Naming,
}

impl BacnetSettings {
    pub fn describe(&self) -> String {
        let objects: usize = self.targets.iter().map(|t| t.objects.len()).sum();
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| {
                let address = crate::address::host_port(&t.host, t.port);
                match t.device {
                    Some(device) => format!("{address} (device {device})"),
                    None => address,
                }
            })
            .collect();
        let how = if self.max_objects_per_request > 1 {
            format!(
                "ReadPropertyMultiple, {} object(s) a request",
                self.max_objects_per_request
            )
        } else {
            "ReadProperty".to_owned()
        };
        format!(
            "reads {objects} object(s) in all over BACnet/IP ({how}) from {} through {}",
            if targets.is_empty() {
                "no device".to_owned()
            } else {
                targets.join(", ")
            },
            self.local
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBacnet {
    targets: Vec<Value>,
    objects: Vec<Value>,
    local_address: Option<String>,
    local_port: Option<u16>,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    max_concurrent_targets: Option<u64>,
    max_objects_per_request: Option<u64>,
    object_names: Option<bool>,
    key_template: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    address: String,
    device: Option<u32>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObject {
    object: String,
    key: Option<String>,
    multiplier: Option<f64>,
    offset: Option<f64>,
    data_type: Option<DataType>,
    metadata: Option<Value>,
    description: Option<String>,
    units: Option<String>,
}

impl BacnetSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawBacnet = doc.deserialize(path, value)?;
        let mut fields = Fields::new(path);
        let timeout = fields.read(
            doc,
            "timeout_ms",
            raw.timeout_ms,
            DurationMs::or(DEFAULT_TIMEOUT),
        );
        let retries = fields.read(
            doc,
            "retries",
            raw.retries,
            Retries {
                default: DEFAULT_RETRIES,
                max: MAX_RETRIES,
                why: "each retry of a silent device costs another timeout",
            },
        );
        let max_concurrent_targets = fields.read(
            doc,
            "max_concurrent_targets",
            raw.max_concurrent_targets,
            Count::new(DEFAULT_MAX_CONCURRENT_TARGETS as u64, 4096),
        ) as usize;
        let max_objects_per_request = fields.read(
            doc,
            "max_objects_per_request",
            raw.max_objects_per_request,
            Count::new(
                DEFAULT_MAX_OBJECTS_PER_REQUEST as u64,
                MAX_OBJECTS_PER_REQUEST,
            ),
        ) as usize;
        let mut ok = fields.ok();
        let ip = match raw.local_address.as_deref().map(str::trim) {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(text) => match text.parse::<Ipv4Addr>() {
                Ok(ip) => IpAddr::V4(ip),
                Err(_) => {
                    doc.error(
                        &path.key("local_address"),
                        format!("{text:?} is not an IPv4 address of this host (BACnet/IP is IPv4)"),
                    );
                    ok = false;
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                }
            },
        };
        let local = SocketAddr::new(ip, raw.local_port.unwrap_or(DEFAULT_PORT));
        let template = raw
            .key_template
            .as_deref()
            .unwrap_or(DEFAULT_KEY_TEMPLATE)
            .to_owned();
        if let Err(message) = check_template(&template) {
            doc.error(&path.key("key_template"), message);
            ok = false;
        }
        let targets_at = path.key("targets");
        let mut targets = Vec::new();
        for (i, target) in raw.targets.iter().enumerate() {
            match parse_target(doc, &targets_at.index(i), target) {
                Some(target) => targets.push(target),
                None => ok = false,
            }
        }
        if targets.is_empty() && ok {
            doc.error(&targets_at, "must list at least one device");
            ok = false;
        }
        let objects_at = path.key("objects");
        if raw.objects.is_empty() {
            doc.error(&objects_at, "must list at least one object");
            ok = false;
        }
        // Keys that name the device differ per target: each target gets its
        // own list when the template or a key uses `{device}`.
        let mut parsed = Vec::new();
        for (i, object) in raw.objects.iter().enumerate() {
            match parse_object(doc, &objects_at.index(i), object, &template) {
                Some(object) => parsed.push(object),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let shared: Arc<[ObjectSettings]> = parsed
            .iter()
            .map(|(object, key)| object_with_key(object, key, None))
            .collect();
        let uses_device = parsed.iter().any(|(_, key)| key.contains("{device}"));
        let targets = targets
            .into_iter()
            .map(|mut target: TargetSettings| {
                if uses_device {
                    target.objects = parsed
                        .iter()
                        .map(|(object, key)| object_with_key(object, key, target.device))
                        .collect();
                } else {
                    target.objects = shared.clone();
                }
                target
            })
            .collect();
        Some(BacnetSettings {
            local,
            fall_back_to_any_port: false,
            timeout,
            retries,
            max_concurrent_targets,
            max_objects_per_request,
            names: if raw.object_names.unwrap_or(true) {
                Names::Metadata
            } else {
                Names::Off
            },
            targets,
        })
    }
}

fn object_with_key(object: &ObjectSettings, key: &str, device: Option<u32>) -> ObjectSettings {
    let key = key.replace(
        "{device}",
        &device.map_or_else(|| "unknown".to_owned(), |d| d.to_string()),
    );
    ObjectSettings {
        key: Text::from(key).shared(),
        ..object.clone()
    }
}

/// A template may use `{type}`, `{instance}` and `{device}`.
fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            return Err(format!("{template:?}: a `{{` is not closed"));
        };
        let name = &rest[start + 1..start + end];
        if !matches!(name, "type" | "instance" | "device") {
            return Err(format!(
                "{template:?}: unknown placeholder {{{name}}}: expected {{type}}, {{instance}} or {{device}}"
            ));
        }
        rest = &rest[start + end + 1..];
    }
    Ok(())
}

fn parse_target(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<TargetSettings> {
    let (address, device, name, address_at) = match value {
        Value::String(text) => (text.clone(), None, None, path.clone()),
        Value::Mapping(_) => {
            let raw: RawTarget = doc.deserialize(path, value)?;
            (raw.address, raw.device, raw.name, path.key("address"))
        }
        other => {
            doc.error(
                path,
                format!(
                    "expected a device address or {{address, device, name}}, found {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    if let Some(device) = device {
        if device > MAX_INSTANCE {
            doc.error(
                &path.key("device"),
                format!("{device} is not a device instance: expected 0 to {MAX_INSTANCE}"),
            );
            return None;
        }
    }
    let (host, port) = parse_host_port(doc, &address_at, &address)?;
    Some(TargetSettings {
        name: name.unwrap_or_else(|| address.trim().to_owned()),
        host,
        port,
        device,
        target_metadata: None,
        objects: Arc::from(Vec::new()),
    })
}

/// `host` or `host:port` (IPv4 or a name; the default port 47808).
pub(crate) fn parse_host_port(
    doc: &mut Document,
    path: &YamlPath,
    text: &str,
) -> Option<(String, u16)> {
    let text = text.trim();
    let (host, port) = match text.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port)),
        Some(_) => {
            doc.error(
                path,
                format!("{text:?}: BACnet/IP devices have IPv4 addresses; IPv6 is BACnet/IPv6, which this poller does not speak"),
            );
            return None;
        }
        None => (text, None),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        doc.error(
            path,
            format!("{text:?} is not a device address: expected \"host\" or \"host:port\""),
        );
        return None;
    }
    let port = match port.map(Port::from_text) {
        None => DEFAULT_PORT,
        Some(Ok(Port(port))) => port,
        Some(Err(message)) => {
            doc.error(path, message);
            return None;
        }
    };
    Some((host.to_owned(), port))
}

/// An object entry and its key template (the object's own `key`, else the
/// poller's template with `{type}` and `{instance}` filled in).
fn parse_object(
    doc: &mut Document,
    path: &YamlPath,
    value: &Value,
    template: &str,
) -> Option<(ObjectSettings, String)> {
    let raw = match value {
        Value::String(text) => RawObject {
            object: text.clone(),
            key: None,
            multiplier: None,
            offset: None,
            data_type: None,
            metadata: None,
            description: None,
            units: None,
        },
        Value::Mapping(_) => doc.deserialize(path, value)?,
        other => {
            doc.error(
                path,
                format!(
                    "expected an object such as analog-value:3 or {{object, key, ...}}, found {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    let object_at = if matches!(value, Value::Mapping(_)) {
        path.key("object")
    } else {
        path.clone()
    };
    let object = match ObjectId::parse(&raw.object) {
        Ok(object) => object,
        Err(message) => {
            doc.error(&object_at, message);
            return None;
        }
    };
    let key = match raw.key {
        Some(key) => {
            if let Err(message) = check_template(&key) {
                doc.error(&path.key("key"), message);
                return None;
            }
            key
        }
        None => template.to_owned(),
    };
    let key = key
        .replace("{type}", object.object_type.key_name())
        .replace("{instance}", &object.instance.to_string());
    if !check_user_key(doc, &path.key("key"), &key.replace("{device}", "0")) {
        return None;
    }
    for (name, number) in [("multiplier", raw.multiplier), ("offset", raw.offset)] {
        if number.is_some_and(|n| !n.is_finite()) {
            doc.error(&path.key(name), "expected a finite number");
            return None;
        }
    }
    let metadata = match &raw.metadata {
        None => Vec::new(),
        Some(value) => parse_metadata(doc, &path.key("metadata"), value)?
            .iter()
            .map(Metadata::shared)
            .collect(),
    };
    let naming = parse_naming(doc, path, raw.description.as_deref(), raw.units.as_deref())?;
    Some((
        ObjectSettings {
            object,
            key: Text::from(String::new()),
            multiplier: raw.multiplier,
            offset: raw.offset,
            data_type: raw.data_type,
            metadata,
            naming,
        },
        key,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::Document;
    use std::path::Path;

    fn parse(yaml: &str) -> (Option<BacnetSettings>, Vec<String>) {
        let mut doc = Document::parse(Path::new("pattoo_agentd.yaml"), yaml).unwrap();
        let root = doc.root.clone();
        let settings = BacnetSettings::parse(&mut doc, &YamlPath::root(), &root);
        let errors = doc.into_errors().iter().map(|e| e.to_string()).collect();
        (settings, errors)
    }

    #[test]
    fn reads_devices_by_address_and_objects_by_type_and_instance() {
        let (settings, errors) = parse(
            "targets: [10.0.0.60, {address: '10.0.0.61:47809', device: 1234, name: ahu-2}]
objects:
  - analog-input:1
  - {object: bv:3, key: 'occupied_{device}', metadata: {zone: east}}
  - {object: analogValue 7, multiplier: 0.1, offset: -40, data_type: float}
local_address: 127.0.0.1
local_port: 0
key_template: 'bacnet_{type}_{instance}'
",
        );
        assert_eq!(errors, Vec::<String>::new());
        let settings = settings.unwrap();
        assert_eq!(settings.local, "127.0.0.1:0".parse().unwrap());
        assert_eq!(settings.names, Names::Metadata);
        assert_eq!(settings.targets[0].port, DEFAULT_PORT);
        assert_eq!(settings.targets[0].name, "10.0.0.60");
        let second = &settings.targets[1];
        assert_eq!((second.port, second.device), (47809, Some(1234)));
        assert_eq!(second.name, "ahu-2");
        let keys: Vec<&str> = second.objects.iter().map(|o| &*o.key).collect();
        assert_eq!(
            keys,
            ["bacnet_analog_input_1", "occupied_1234", "bacnet_analog_value_7"]
        );
        assert_eq!(settings.targets[0].objects[1].key.as_ref(), "occupied_unknown");
        assert_eq!(second.objects[2].multiplier, Some(0.1));
    }

    #[test]
    fn every_mistake_is_located() {
        let (settings, errors) = parse(
            "targets: ['[::1]:47808', 'a:0']
objects: [schedule:1, 'av:x', {object: av:1, key: '{name}'}]
local_address: here
timeout_ms: 0
",
        );
        assert!(settings.is_none());
        assert_eq!(errors.len(), 7, "{errors:#?}");
        assert!(errors.iter().any(|e| e.contains("IPv6")), "{errors:#?}");
        assert!(errors.iter().any(|e| e.contains("unknown placeholder {name}")));
        assert!(errors.iter().any(|e| e.contains("unknown object type")));
    }
}
