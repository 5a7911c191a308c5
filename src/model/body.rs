//! Building the post body: normalisation, checksums, duplicate dropping and
//! the deduplicated pair layout, in one pass that writes the JSON directly.

use std::borrow::Cow;
use std::fmt;

use rustc_hash::{FxHashMap, FxHashSet};

use super::checksum::{Checksum, ChecksumChain};
use super::normalise::{is_reserved, normalise_key_cow, normalise_value};
use super::{python, TargetData, Value};

/// Who is posting: the identity every datapoint of a body carries.
#[derive(Debug, Clone, Copy)]
pub struct AgentContext<'a> {
    pub agent_id: &'a str,
    pub agent_program: &'a str,
    pub hostname: &'a str,
    pub polling_interval_ms: u64,
}

/// A body ready to post or cache: the exact JSON bytes plus what delivery
/// needs to know about it without parsing it again.
#[derive(Debug, Clone, PartialEq)]
pub struct PostBody {
    pub agent_id: String,
    /// When the poll cycle started, milliseconds since the epoch.
    pub timestamp_ms: u64,
    pub datapoints: usize,
    pub json: Vec<u8>,
}

/// Why a datapoint (or one of its metadata items) did not make it into the
/// body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    EmptyKey,
    ReservedKey,
    NotNumeric(String),
    NotFinite,
    OutOfRange,
    Duplicate,
    /// The datapoint is kept; only this metadata item is ignored.
    ReservedMetadataKey(String),
    /// The datapoint is kept; only this metadata item is ignored.
    EmptyMetadataKey,
}

impl DropReason {
    /// Whether the whole datapoint was dropped, not just one metadata item.
    pub fn drops_datapoint(&self) -> bool {
        !matches!(
            self,
            DropReason::ReservedMetadataKey(_) | DropReason::EmptyMetadataKey
        )
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::EmptyKey => f.write_str("datapoint dropped: its key is empty"),
            DropReason::ReservedKey => {
                f.write_str("datapoint dropped: keys containing `pattoo` are reserved")
            }
            DropReason::NotNumeric(text) => {
                write!(f, "datapoint dropped: value {text:?} is not a number")
            }
            DropReason::NotFinite => {
                f.write_str("datapoint dropped: NaN and infinity cannot be sent")
            }
            DropReason::OutOfRange => {
                f.write_str("datapoint dropped: value does not fit a 64-bit integer")
            }
            DropReason::Duplicate => f.write_str(
                "datapoint dropped: same key, data type and metadata as an earlier one of this target",
            ),
            DropReason::ReservedMetadataKey(key) => write!(
                f,
                "metadata {key:?} ignored: keys containing `pattoo` are reserved"
            ),
            DropReason::EmptyMetadataKey => f.write_str("metadata with an empty key ignored"),
        }
    }
}

/// One thing [`build`] left out, for the caller to log with its poller name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub target: String,
    pub key: String,
    pub reason: DropReason,
}

/// The result of [`build`]: a body unless no datapoint was valid, and every
/// drop that happened on the way.
#[derive(Debug, Default)]
pub struct BuildOutcome {
    pub body: Option<PostBody>,
    pub dropped: Vec<Dropped>,
}

const AGENT_HOSTNAME: &str = "pattoo_agent_hostname";
const AGENT_ID: &str = "pattoo_agent_id";
const AGENT_POLLED_TARGET: &str = "pattoo_agent_polled_target";
const AGENT_PROGRAM: &str = "pattoo_agent_program";
const AGENT_POLLING_INTERVAL: &str = "pattoo_agent_polling_interval";

/// Normalises the datapoints of one poll and lays them out as a post body.
///
/// `timestamp_ms` is when the poll cycle started. Returns no body when no
/// datapoint survives, since the server must not receive an empty post.
pub fn build(agent: &AgentContext<'_>, timestamp_ms: u64, targets: &[TargetData]) -> BuildOutcome {
    let interval_text = agent.polling_interval_ms.to_string();
    let mut pairs = PairTable::default();
    let mut datapoint_pairs = String::with_capacity(64 * targets.len());
    let mut dropped = Vec::new();
    let mut count = 0usize;
    let mut metadata: Vec<(Cow<'_, str>, &str)> = Vec::new();
    // Ids of the pairs every datapoint of a body carries, found on first use
    // so ids are still handed out in first-seen order.
    let mut data_type_ids: [Option<u32>; 5] = [None; 5];

    for target in targets {
        let mut seen: FxHashSet<Checksum> =
            FxHashSet::with_capacity_and_hasher(target.datapoints.len(), Default::default());
        let mut agent_pair_ids: Option<[u32; 5]> = None;
        let mut drop = |key: &str, reason: DropReason| {
            dropped.push(Dropped {
                target: target.target.clone(),
                key: key.to_owned(),
                reason,
            })
        };
        for datapoint in &target.datapoints {
            let key = normalise_key_cow(&datapoint.key);
            if key.is_empty() {
                drop(&datapoint.key, DropReason::EmptyKey);
                continue;
            }
            if is_reserved(&key) {
                drop(&datapoint.key, DropReason::ReservedKey);
                continue;
            }
            let value = match normalise_value(&datapoint.value, datapoint.data_type) {
                Ok(value) => value,
                Err(reason) => {
                    drop(&key, reason);
                    continue;
                }
            };

            let mut chain = ChecksumChain::start(&key, datapoint.data_type.code());
            metadata.clear();
            for item in &datapoint.metadata {
                let meta_key = normalise_key_cow(&item.key);
                if meta_key.is_empty() {
                    drop(&key, DropReason::EmptyMetadataKey);
                    continue;
                }
                if is_reserved(&meta_key) {
                    drop(&key, DropReason::ReservedMetadataKey(meta_key.into_owned()));
                    continue;
                }
                if metadata.iter().any(|(k, _)| *k == meta_key) {
                    continue; // the first value of a repeated key wins
                }
                let meta_value = item.value.trim();
                if item.update_checksum {
                    chain.update(&meta_key, meta_value);
                }
                metadata.push((meta_key, meta_value));
            }
            for (meta_key, meta_value) in [
                (AGENT_HOSTNAME, agent.hostname),
                (AGENT_ID, agent.agent_id),
                (AGENT_POLLED_TARGET, target.target.as_str()),
                (AGENT_PROGRAM, agent.agent_program),
            ] {
                chain.update(meta_key, meta_value);
            }
            if !seen.insert(*chain.digest()) {
                drop(&key, DropReason::Duplicate);
                continue;
            }

            datapoint_pairs.push(if count == 0 { '[' } else { ',' });
            count += 1;
            let mut ids = IdList::new(&mut datapoint_pairs);
            for (meta_key, meta_value) in &metadata {
                ids.push(pairs.text(meta_key, meta_value));
            }
            let agent_ids = *agent_pair_ids.get_or_insert_with(|| {
                [
                    pairs.text(AGENT_POLLING_INTERVAL, &interval_text),
                    pairs.text(AGENT_HOSTNAME, agent.hostname),
                    pairs.text(AGENT_ID, agent.agent_id),
                    pairs.text(AGENT_POLLED_TARGET, &target.target),
                    pairs.text(AGENT_PROGRAM, agent.agent_program),
                ]
            });
            for id in agent_ids {
                ids.push(id);
            }
            ids.push(pairs.text("pattoo_key", &key));
            let type_slot = &mut data_type_ids[datapoint.data_type as usize];
            ids.push(*type_slot.get_or_insert_with(|| {
                pairs.integer("pattoo_data_type", u64::from(datapoint.data_type.code()))
            }));
            ids.push(pairs.value("pattoo_value", &value));
            ids.push(pairs.integer("pattoo_timestamp", datapoint.timestamp_ms));
            // A checksum covers the target and key, and duplicates within a
            // target were dropped above: it is always a new pair.
            ids.push(pairs.unique_text("pattoo_checksum", chain.as_str()));
            ids.finish();
        }
    }

    if count == 0 {
        return BuildOutcome {
            body: None,
            dropped,
        };
    }
    datapoint_pairs.push(']');

    let mut json = String::with_capacity(pairs.json.len() + datapoint_pairs.len() + 256);
    json.push_str("{\"pattoo_agent_timestamp\":");
    json.push_str(&timestamp_ms.to_string());
    json.push_str(",\"pattoo_agent_id\":");
    push_json_string(&mut json, agent.agent_id);
    json.push_str(",\"pattoo_agent_polling_interval\":");
    json.push_str(&interval_text);
    json.push_str(",\"pattoo_datapoints\":{\"key_value_pairs\":{");
    json.push_str(&pairs.json);
    json.push_str("},\"datapoint_pairs\":");
    json.push_str(&datapoint_pairs);
    json.push_str("}}");

    BuildOutcome {
        body: Some(PostBody {
            agent_id: agent.agent_id.to_owned(),
            timestamp_ms,
            datapoints: count,
            json: json.into_bytes(),
        }),
        dropped,
    }
}

/// Gives every distinct `[key, value]` pair the next id the first time it is
/// seen and writes it to `key_value_pairs` once.
///
/// Pairs are identified by their JSON text, which is also what gets written,
/// so each pair is rendered once whether it is new or not.
#[derive(Default)]
struct PairTable {
    ids: FxHashMap<String, u32>,
    next_id: u32,
    json: String,
    scratch: String,
}

impl PairTable {
    /// A pair known not to have been seen before: written without being
    /// remembered.
    fn unique_text(&mut self, key: &str, value: &str) -> u32 {
        self.scratch.clear();
        self.scratch.push('[');
        push_json_string(&mut self.scratch, key);
        self.scratch.push(',');
        push_json_string(&mut self.scratch, value);
        self.scratch.push(']');
        self.write_new()
    }

    fn text(&mut self, key: &str, value: &str) -> u32 {
        self.scratch.clear();
        self.scratch.push('[');
        push_json_string(&mut self.scratch, key);
        self.scratch.push(',');
        push_json_string(&mut self.scratch, value);
        self.scratch.push(']');
        self.intern()
    }

    fn integer(&mut self, key: &str, value: u64) -> u32 {
        self.value(key, &Value::UInt(value))
    }

    fn value(&mut self, key: &str, value: &Value) -> u32 {
        self.scratch.clear();
        self.scratch.push('[');
        push_json_string(&mut self.scratch, key);
        self.scratch.push(',');
        match value {
            Value::Int(v) => self.scratch.push_str(itoa::Buffer::new().format(*v)),
            Value::UInt(v) => self.scratch.push_str(itoa::Buffer::new().format(*v)),
            // Finite by now: normalisation dropped NaN and infinities. Python's
            // repr is valid JSON for finite floats and matches what the
            // Python agents send byte for byte.
            Value::Float(v) => python::write_float(&mut self.scratch, *v),
            Value::Text(v) => push_json_string(&mut self.scratch, v),
        }
        self.scratch.push(']');
        self.intern()
    }

    fn intern(&mut self) -> u32 {
        if let Some(id) = self.ids.get(self.scratch.as_str()) {
            return *id;
        }
        let id = self.write_new();
        self.ids.insert(self.scratch.clone(), id);
        id
    }

    /// Writes the pair in `scratch` under the next id.
    fn write_new(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        if id > 0 {
            self.json.push(',');
        }
        self.json.push('"');
        self.json.push_str(itoa::Buffer::new().format(id));
        self.json.push_str("\":");
        self.json.push_str(&self.scratch);
        id
    }
}

/// Writes one datapoint's list of pair ids.
struct IdList<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> IdList<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('[');
        IdList { out, first: true }
    }

    fn push(&mut self, id: u32) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str(itoa::Buffer::new().format(id));
    }

    fn finish(self) {
        self.out.push(']');
    }
}

fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{byte:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests;
