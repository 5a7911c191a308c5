//! The pattoo data model: datapoints as pollers produce them, and the post
//! body the pattoo server receives.
//!
//! Everything here is pure: no I/O, no clocks. Pollers build [`DataPoint`]s
//! with whatever keys and values they read; [`body::build`] normalises them
//! exactly as the Python `pattoo_shared` library does (see
//! `SPEC-wire-format.md`), computes each datapoint's checksum, drops what the
//! server would reject (reporting every drop), and lays the survivors out in
//! the deduplicated `key_value_pairs` / `datapoint_pairs` form. A poller
//! that reads the same things every poll keeps a [`PollMemory`], which
//! writes the same body while remembering every checksum between polls.
//! A body another agent made (a hub's spoke's answer) is a
//! [`RelayedBody`]: checked and posted whole, never renormalised.

pub mod body;
pub mod checksum;
mod data_type;
mod normalise;
pub mod python;
pub mod python_json;
pub mod python_str;
mod relayed;
mod text;
pub mod translation;
mod validate;
mod value;

pub use body::{
    build, build_limited, AgentContext, BuildOutcome, Building, DropReason, Dropped,
    LimitedOutcome, PollMemory, PostBody,
};
pub use data_type::{DataType, UnknownDataType};
pub(crate) use normalise::normalise_key_cow;
pub use normalise::{normalise_key, normalise_value};
pub use relayed::{NotABody, RelayedBody};
pub use text::{Text, TextSet};
pub use validate::{validate_body, Accepted};
pub use value::{Value, U128};

/// One metadata item attached to a datapoint, before normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub key: Text,
    /// Already rendered as text (numbers the way Python's `str()` writes
    /// them, see [`python::number_to_string`]); trimmed during normalisation.
    pub value: Text,
    /// Whether this item enters the datapoint's checksum. Metadata that may
    /// change without the reading becoming a different series (a firmware
    /// version, say) sets this to false so the chart survives the change.
    pub update_checksum: bool,
}

impl Metadata {
    pub fn new(key: impl Into<Text>, value: impl Into<Text>) -> Self {
        Metadata {
            key: key.into(),
            value: value.into(),
            update_checksum: true,
        }
    }

    pub fn without_checksum(key: impl Into<Text>, value: impl Into<Text>) -> Self {
        Metadata {
            update_checksum: false,
            ..Metadata::new(key, value)
        }
    }

    /// The same item with its text shared, for configuration attached to
    /// every reading: each copy then costs no allocation.
    pub fn shared(&self) -> Self {
        Metadata {
            key: self.key.shared(),
            value: self.value.shared(),
            update_checksum: self.update_checksum,
        }
    }
}

/// A reading as a poller produced it, before normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint {
    pub key: Text,
    pub value: Value,
    pub data_type: DataType,
    /// Milliseconds since the epoch when the value was read.
    pub timestamp_ms: u64,
    /// In attachment order; the first item of a repeated key wins.
    pub metadata: Vec<Metadata>,
}

// A large poll holds every reading at once (100,000 at 1,000 devices x 100
// registers), so each byte of a datapoint is 100 KB there. A value must
// stay the size of a `String`, and a datapoint no larger than its fields
// packed without 16-byte alignment; checked when the library compiles.
const _: () = assert!(std::mem::size_of::<Value>() <= 24);
const _: () = assert!(std::mem::size_of::<DataPoint>() <= 88);

impl DataPoint {
    pub fn new(key: impl Into<Text>, value: Value, data_type: DataType, timestamp_ms: u64) -> Self {
        DataPoint {
            key: key.into(),
            value,
            data_type,
            timestamp_ms,
            metadata: Vec::new(),
        }
    }

    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata.push(metadata);
        self
    }
}

/// The datapoints read from one polled target (a device, a URL's host, this
/// host) in one poll.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetData {
    pub target: String,
    pub datapoints: Vec<DataPoint>,
}

impl TargetData {
    pub fn new(target: impl Into<String>) -> Self {
        TargetData {
            target: target.into(),
            datapoints: Vec::new(),
        }
    }
}
