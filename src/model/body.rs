//! Building the post body: normalisation, checksums, duplicate dropping and
//! the deduplicated pair layout, in one pass that writes the JSON directly.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashSet};

use super::checksum::{ChainBatch, ChainUpdate, Checksum, Suffix};
use super::normalise::{is_reserved, normalise_key_cow, normalise_metadata_value, normalise_value};
use super::{python, DataPoint, Metadata, TargetData, Value};

pub use memory::{Building, PollMemory};

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
/// Everything is computed afresh; a poller that polls the same registers
/// again and again uses [`PollMemory::build`] instead.
pub fn build(agent: &AgentContext<'_>, timestamp_ms: u64, targets: &[TargetData]) -> BuildOutcome {
    build_with(agent, timestamp_ms, targets, PARALLEL_MIN)
}

/// The result of [`build_limited`]: the bodies to post, in order, and every
/// drop that happened on the way.
#[derive(Debug, Default)]
pub struct LimitedOutcome {
    pub bodies: Vec<PostBody>,
    pub dropped: Vec<Dropped>,
}

/// [`build`], split into several bodies when one would be larger than
/// `max_body_bytes`, so a proxy's size limit in front of the server (nginx
/// refuses more than 1 MB by default) never refuses a poll.
///
/// The bodies are filled in order: each takes whole targets while they
/// fit; a target that does not fit in what is left starts the next body,
/// and one too large for a body of its own is split by its datapoints,
/// each body taking as many as fit. Every body is complete on its own (its
/// own pair table, ids from 0) and is byte for byte what [`build`] makes of
/// the datapoints it carries; together they carry the datapoints one body
/// would: a duplicate is dropped once, in no part, and each drop is
/// reported once. A single datapoint larger than the limit still goes,
/// alone. The split is decided while writing, so the whole body never
/// exists; a poller polling the same things uses
/// [`PollMemory::build_limited`], which splits the same way.
pub fn build_limited(
    agent: &AgentContext<'_>,
    timestamp_ms: u64,
    targets: &[TargetData],
    max_body_bytes: usize,
) -> LimitedOutcome {
    build_parts(agent, timestamp_ms, targets, max_body_bytes, PARALLEL_MIN)
}

/// [`build_limited`], preparing blocks of at least `parallel_min`
/// datapoints on two threads.
fn build_parts(
    agent: &AgentContext<'_>,
    timestamp_ms: u64,
    targets: &[TargetData],
    max_body_bytes: usize,
    parallel_min: usize,
) -> LimitedOutcome {
    let total = targets.iter().map(|t| t.datapoints.len()).sum();
    let mut building = Building::afresh_with(agent, timestamp_ms, total, max_body_bytes);
    building.parallel_min = parallel_min;
    for target in targets {
        building.add(target);
    }
    building.finish()
}

/// The bodies of one poll as they are written, each at most
/// `max_body_bytes` long (see [`build_limited`] for the rules).
struct Parts<'a, 'b> {
    agent: &'a AgentContext<'b>,
    timestamp_ms: u64,
    max_body_bytes: usize,
    /// Datapoints in the whole poll: how much a body's buffers reserve.
    total: usize,
    writer: Writer,
    bodies: Vec<PostBody>,
    dropped: Vec<Dropped>,
}

impl<'a, 'b> Parts<'a, 'b> {
    fn new(
        agent: &'a AgentContext<'b>,
        timestamp_ms: u64,
        total: usize,
        max_body_bytes: usize,
    ) -> Self {
        Parts {
            agent,
            timestamp_ms,
            max_body_bytes,
            total,
            writer: Writer::new(agent, timestamp_ms, total, max_body_bytes),
            bodies: Vec::new(),
            dropped: Vec::new(),
        }
    }

    /// Whether the body being written has grown past the limit.
    fn over(&self) -> bool {
        self.writer.len() > self.max_body_bytes
    }

    /// Closes the body being written and starts the next.
    fn next_body(&mut self) {
        let next = Writer::new(
            self.agent,
            self.timestamp_ms,
            self.total,
            self.max_body_bytes,
        );
        let outcome =
            std::mem::replace(&mut self.writer, next).finish(self.agent, self.timestamp_ms);
        self.bodies.extend(outcome.body);
        self.dropped.extend(outcome.dropped);
    }

    /// Starts writing a target's datapoints; `distinct` says no two of
    /// them can have the same checksum, so none need be looked for.
    fn begin_target<'t>(&self, target: &'t str, distinct: bool) -> Writing<'t> {
        Writing {
            target,
            mark: self.writer.mark(),
            starts_body: self.writer.count == 0,
            seen: (!distinct).then(FxHashSet::default),
            agent_ids: None,
        }
    }

    /// Writes the next datapoint of the target being written, starting the
    /// next body where the limit says (see [`build_limited`]).
    fn datapoint<'r>(
        &mut self,
        writing: &mut Writing<'_>,
        ready: Ready<'r, impl Iterator<Item = (&'r str, u64)> + Clone>,
    ) -> Result<(), Restart> {
        let mark = self.writer.mark();
        loop {
            let writer = &mut self.writer;
            for reason in ready.ignored {
                writer.drop(writing.target, ready.key, reason.clone());
            }
            if writing
                .seen
                .as_mut()
                .is_some_and(|seen| !seen.insert(*ready.checksum))
            {
                writer.drop(writing.target, ready.key, DropReason::Duplicate);
                return Ok(());
            }
            for (text, hash) in ready.metadata.clone() {
                let id = writer.pairs.rendered(text, hash);
                writer.ids.push(id);
            }
            let agent = self.agent;
            let agent_ids = *writing
                .agent_ids
                .get_or_insert_with(|| writer.agent_ids(agent, writing.target));
            let key_id = writer.pairs.rendered(ready.key_pair.0, ready.key_pair.1);
            writer.datapoint(
                agent_ids,
                key_id,
                ready.datapoint,
                ready.value,
                ready.checksum,
            );
            if !self.over() || self.writer.count == 1 {
                return Ok(());
            }
            if !writing.starts_body {
                // The target does not fit in what is left of this body: it
                // starts the next one, whole.
                self.writer.rollback(writing.mark);
                self.next_body();
                return Err(Restart);
            }
            // Too large for a body of its own: split by datapoints, this
            // one starting the next body.
            self.writer.rollback(mark);
            self.next_body();
            writing.agent_ids = None;
            if let Some(seen) = &mut writing.seen {
                seen.remove(ready.checksum);
            }
        }
    }

    /// Normalises, checksums and writes `target`'s datapoints from scratch,
    /// [`PREPARE_BLOCK`] at a time, each block on two threads when it has
    /// at least `parallel_min`.
    fn target_afresh(&mut self, target: &TargetData, parallel_min: usize) {
        let suffixes = agent_suffixes(self.agent, &target.target);
        'target: loop {
            let mut writing = self.begin_target(&target.target, false);
            for block in target.datapoints.chunks(PREPARE_BLOCK) {
                for chunk in in_two_halves(block, parallel_min, |half| prepare(half, &suffixes)) {
                    for step in chunk.steps {
                        let (datapoint, key, pairs, checksum) = match step {
                            Step::Drop(key, reason) => {
                                self.writer.drop(&target.target, &key, reason);
                                continue;
                            }
                            Step::Keep {
                                datapoint,
                                key,
                                pairs,
                                checksum,
                            } => (datapoint, key, pairs, checksum),
                        };
                        // Rendered while preparing: the key pair, the value
                        // pair, then the metadata pairs.
                        let pairs = &chunk.pairs[pairs];
                        let text = |(range, hash): &(Range<usize>, u64)| {
                            (&chunk.text[range.clone()], *hash)
                        };
                        let ready = Ready {
                            datapoint,
                            key: &key,
                            // Reported as steps of their own, before this.
                            ignored: &[],
                            key_pair: text(&pairs[0]),
                            metadata: pairs[2..].iter().map(text),
                            value: Ok(text(&pairs[1])),
                            checksum: &checksum,
                        };
                        if self.datapoint(&mut writing, ready).is_err() {
                            // Prepared again from its first datapoint: a
                            // target moves to the next body at most once,
                            // and what was prepared of it is at most a body
                            // and a block.
                            continue 'target;
                        }
                    }
                }
            }
            return;
        }
    }

    fn finish(mut self) -> LimitedOutcome {
        let outcome = self.writer.finish(self.agent, self.timestamp_ms);
        self.bodies.extend(outcome.body);
        self.dropped.extend(outcome.dropped);
        LimitedOutcome {
            bodies: self.bodies,
            dropped: self.dropped,
        }
    }
}

/// A datapoint ready to be written: normalised, its pairs rendered, its
/// checksum made.
struct Ready<'r, M> {
    datapoint: &'r DataPoint,
    /// Normalised, for drop reports.
    key: &'r str,
    /// Metadata items left out, reported whenever the datapoint is written.
    ignored: &'r [DropReason],
    /// `["pattoo_key", key]` and its [`pair_hash`].
    key_pair: (&'r str, u64),
    /// The metadata pairs kept, in order, each with its [`pair_hash`].
    metadata: M,
    /// The value pair rendered, with its hash, or the value to render.
    value: Result<(&'r str, u64), &'r Value>,
    checksum: &'r Checksum,
}

/// A target being written into [`Parts`] (see [`Parts::begin_target`]).
struct Writing<'t> {
    target: &'t str,
    /// Where the target starts, to take it out of a body it does not fit.
    mark: Mark,
    /// Whether the target starts its body: one too large for what is left
    /// of a body goes to the next one, whole, unless it started the body.
    starts_body: bool,
    /// The checksums written so far, to drop duplicates; `None` when there
    /// can be none.
    seen: Option<FxHashSet<Checksum>>,
    /// The ids of the agent's pairs in the body being written.
    agent_ids: Option<[u32; 5]>,
}

/// The target being written did not fit in what was left of a body: it
/// was taken out, the next body started, and the target is to be written
/// again from its first datapoint.
struct Restart;

/// [`build`], preparing blocks of at least `parallel_min` datapoints on two
/// threads.
fn build_with(
    agent: &AgentContext<'_>,
    timestamp_ms: u64,
    targets: &[TargetData],
    parallel_min: usize,
) -> BuildOutcome {
    let outcome = build_parts(agent, timestamp_ms, targets, usize::MAX, parallel_min);
    BuildOutcome {
        body: outcome.bodies.into_iter().next(),
        dropped: outcome.dropped,
    }
}

/// The agent's own checksum items for `target`, in the order they are hashed.
fn agent_suffixes(agent: &AgentContext<'_>, target: &str) -> [Suffix; 4] {
    [
        Suffix::new(AGENT_HOSTNAME, agent.hostname),
        Suffix::new(AGENT_ID, agent.agent_id),
        Suffix::new(AGENT_POLLED_TARGET, target),
        Suffix::new(AGENT_PROGRAM, agent.agent_program),
    ]
}

/// Writes the body as datapoints are handed to it: the header first, then
/// the pairs, then the datapoints' lists of pair ids, so the body is never
/// copied as a whole.
struct Writer {
    pairs: PairTable,
    datapoint_pairs: String,
    count: usize,
    dropped: Vec<Dropped>,
    interval_text: String,
    /// Ids of the pairs every datapoint of a body carries, found on first
    /// use so ids are still handed out in first-seen order.
    data_type_ids: [Option<u32>; 5],
    /// The last timestamp pair: the datapoints of one read share it.
    timestamp_id: Option<(u64, u32)>,
    /// The metadata pair ids of the datapoint being written.
    ids: Vec<u32>,
    /// The agent's pair ids of the target being written, and their text in
    /// a list of ids: the same for each of its datapoints.
    agent_ids: ([u32; 5], String),
}

impl Writer {
    /// A writer for a body of at most `max_body_bytes` (as far as it can
    /// tell) taken from a poll of `total` datapoints: what it reserves.
    fn new(
        agent: &AgentContext<'_>,
        timestamp_ms: u64,
        total: usize,
        max_body_bytes: usize,
    ) -> Writer {
        let mut pairs = PairTable::default();
        // Checksum pairs are never looked up, and most polls share keys,
        // values and timestamps: one remembered pair per datapoint is ample
        // (the table grows if not) and keeps a 100,000-reading body's table
        // a quarter of what three per datapoint took. A datapoint takes at
        // least 64 bytes of a body. The datapoints' lists are appended to
        // the pairs at the end: room for both, so that copies nothing.
        pairs
            .ids
            .reserve(total.min(max_body_bytes / 64), |entry| entry.0);
        pairs
            .json
            .reserve((200 * total).min(max_body_bytes.saturating_add(64)));
        pairs.json.push_str("{\"pattoo_agent_timestamp\":");
        pairs
            .json
            .push_str(itoa::Buffer::new().format(timestamp_ms));
        pairs.json.push_str(",\"pattoo_agent_id\":");
        push_json_string(&mut pairs.json, agent.agent_id);
        pairs.json.push_str(",\"pattoo_agent_polling_interval\":");
        let interval_text = agent.polling_interval_ms.to_string();
        pairs.json.push_str(&interval_text);
        pairs
            .json
            .push_str(",\"pattoo_datapoints\":{\"key_value_pairs\":{");
        Writer {
            pairs,
            datapoint_pairs: String::with_capacity((40 * total).min(max_body_bytes / 2)),
            count: 0,
            dropped: Vec::new(),
            interval_text,
            data_type_ids: [None; 5],
            timestamp_id: None,
            ids: Vec::new(),
            agent_ids: ([0; 5], String::new()),
        }
    }

    /// How long the body would be if finished now.
    fn len(&self) -> usize {
        self.pairs.json.len() + DATAPOINT_PAIRS.len() + self.datapoint_pairs.len() + END.len()
    }

    /// Where the writer is, to come back to with [`Writer::rollback`].
    fn mark(&self) -> Mark {
        Mark {
            json: self.pairs.json.len(),
            next_id: self.pairs.next_id,
            datapoint_pairs: self.datapoint_pairs.len(),
            count: self.count,
            dropped: self.dropped.len(),
        }
    }

    /// Forgets everything written since `mark`, as if it never was: the
    /// same datapoints written again get the same ids and bytes.
    fn rollback(&mut self, mark: Mark) {
        let pairs = &mut self.pairs;
        pairs.json.truncate(mark.json);
        pairs.next_id = mark.next_id;
        pairs.ids.retain(|&mut (_, _, _, id)| id < mark.next_id);
        self.datapoint_pairs.truncate(mark.datapoint_pairs);
        self.count = mark.count;
        self.dropped.truncate(mark.dropped);
        for slot in &mut self.data_type_ids {
            if slot.is_some_and(|id| id >= mark.next_id) {
                *slot = None;
            }
        }
        if self.timestamp_id.is_some_and(|(_, id)| id >= mark.next_id) {
            self.timestamp_id = None;
        }
        self.ids.clear();
    }

    fn drop(&mut self, target: &str, key: &str, reason: DropReason) {
        self.dropped.push(Dropped {
            target: target.to_owned(),
            key: key.to_owned(),
            reason,
        });
    }

    /// The ids of the agent's pairs for `target`, interned when the
    /// target's first datapoint is written.
    fn agent_ids(&mut self, agent: &AgentContext<'_>, target: &str) -> [u32; 5] {
        [
            self.pairs.text(AGENT_POLLING_INTERVAL, &self.interval_text),
            self.pairs.text(AGENT_HOSTNAME, agent.hostname),
            self.pairs.text(AGENT_ID, agent.agent_id),
            self.pairs.text(AGENT_POLLED_TARGET, target),
            self.pairs.text(AGENT_PROGRAM, agent.agent_program),
        ]
    }

    /// Writes a datapoint whose metadata pair ids are in `ids`, its value
    /// pair either rendered (`Ok`, with its hash) or still to be (`Err`,
    /// the value); the value pair gets its id after the data type's either
    /// way.
    fn datapoint(
        &mut self,
        agent_ids: [u32; 5],
        key_id: u32,
        datapoint: &DataPoint,
        value: Result<(&str, u64), &Value>,
        checksum: &Checksum,
    ) {
        self.datapoint_pairs
            .push(if self.count == 0 { '[' } else { ',' });
        self.count += 1;
        let mut list = IdList::new(&mut self.datapoint_pairs);
        for &id in &self.ids {
            list.push(id);
        }
        self.ids.clear();
        let (known, text) = &mut self.agent_ids;
        if text.is_empty() || *known != agent_ids {
            text.clear();
            let mut ids = IdList::continuing(text);
            for id in agent_ids {
                ids.push(id);
            }
            *known = agent_ids;
        }
        list.push_rendered(text);
        list.push(key_id);
        let pairs = &mut self.pairs;
        let type_slot = &mut self.data_type_ids[datapoint.data_type as usize];
        list.push(*type_slot.get_or_insert_with(|| {
            pairs.integer("pattoo_data_type", u64::from(datapoint.data_type.code()))
        }));
        list.push(match value {
            Ok((text, hash)) => pairs.rendered(text, hash),
            Err(value) => pairs.value("pattoo_value", value),
        });
        let timestamp_id = match self.timestamp_id {
            Some((ms, id)) if ms == datapoint.timestamp_ms => id,
            _ => {
                let id = pairs.integer("pattoo_timestamp", datapoint.timestamp_ms);
                self.timestamp_id = Some((datapoint.timestamp_ms, id));
                id
            }
        };
        list.push(timestamp_id);
        // A checksum covers the target and key, and duplicates within a
        // target were dropped before: it is always a new pair.
        list.push(pairs.checksum(checksum));
        list.finish();
    }

    fn finish(self, agent: &AgentContext<'_>, timestamp_ms: u64) -> BuildOutcome {
        if self.count == 0 {
            return BuildOutcome {
                body: None,
                dropped: self.dropped,
            };
        }
        let mut json = self.pairs.json;
        json.push_str(DATAPOINT_PAIRS);
        json.push_str(&self.datapoint_pairs);
        json.push_str(END);
        // Bodies wait in the delivery queue: hold no more than they need.
        json.shrink_to_fit();
        BuildOutcome {
            body: Some(PostBody {
                agent_id: agent.agent_id.to_owned(),
                timestamp_ms,
                datapoints: self.count,
                json: json.into_bytes(),
            }),
            dropped: self.dropped,
        }
    }
}

/// Between the pairs and the datapoints' lists of ids.
const DATAPOINT_PAIRS: &str = "},\"datapoint_pairs\":";
/// After the last datapoint's list.
const END: &str = "]}}";

/// A point in a [`Writer`]'s output to go back to.
#[derive(Clone, Copy)]
struct Mark {
    json: usize,
    next_id: u32,
    datapoint_pairs: usize,
    count: usize,
    dropped: usize,
}

/// Datapoints are normalised and checksummed (the costly, independent part
/// of building a body) this many at a time, then given their pair ids in
/// order; the bound keeps the prepared state small for huge polls.
const PREPARE_BLOCK: usize = 4096;
/// A block at least this large is prepared on two threads; below it,
/// starting a thread costs more than it saves.
const PARALLEL_MIN: usize = 1024;

/// What preparing one datapoint found, in the order the drops must be
/// reported: a metadata item ignored comes before its datapoint's `Keep`.
enum Step<'a> {
    Drop(String, DropReason),
    Keep {
        datapoint: &'a DataPoint,
        key: Cow<'a, str>,
        /// Its pairs in [`Prepared::pairs`]: key, value, then the metadata
        /// kept, in order.
        pairs: Range<usize>,
        checksum: Checksum,
    },
}

/// A run of consecutive datapoints, prepared.
struct Prepared<'a> {
    steps: Vec<Step<'a>>,
    /// The JSON text of every pair of the run's datapoints, rendered here
    /// (on two threads for large runs) so writing the body only interns
    /// them.
    text: String,
    /// Each pair's text in `text` and its [`pair_hash`].
    pairs: Vec<(Range<usize>, u64)>,
}

impl Prepared<'_> {
    /// Renders the next pair with `render` and notes where it is.
    fn render(&mut self, render: impl FnOnce(&mut String)) {
        let start = self.text.len();
        render(&mut self.text);
        let hash = pair_hash(&self.text[start..]);
        self.pairs.push((start..self.text.len(), hash));
    }
}

/// `work` over `items`, in two halves on two threads when there are at
/// least `parallel_min` items and the machine has two cores; the halves come
/// back in order, so what follows is byte for byte what one thread would do.
fn in_two_halves<'a, T: Sync, R: Send>(
    items: &'a [T],
    parallel_min: usize,
    work: impl Fn(&'a [T]) -> R + Sync,
) -> Vec<R> {
    if items.len() < parallel_min.max(2) || crate::cores() < 2 {
        return vec![work(items)];
    }
    let (first, second) = items.split_at(items.len() / 2);
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("pattoo-body".into())
            .spawn_scoped(scope, || work(second));
        let first = work(first);
        let second = match helper {
            Ok(helper) => helper.join().expect("preparing datapoints does not panic"),
            // No thread to be had: do the second half here.
            Err(_) => work(second),
        };
        vec![first, second]
    })
}

fn prepare<'a>(datapoints: &'a [DataPoint], agent_suffixes: &[Suffix; 4]) -> Prepared<'a> {
    let mut out = Prepared {
        steps: Vec::with_capacity(datapoints.len()),
        text: String::with_capacity(datapoints.len() * 120),
        pairs: Vec::with_capacity(datapoints.len() * 4),
    };
    let mut kept = Vec::new();
    // The chains are written down as the datapoints are normalised and
    // computed together afterwards, several at a time (see `ChainBatch`).
    let mut chains = ChainBatch::with_capacity(datapoints.len());
    for datapoint in datapoints {
        let key = match normalise_datapoint_key(&datapoint.key) {
            Ok(key) => key,
            Err(reason) => {
                out.steps
                    .push(Step::Drop(datapoint.key.to_string(), reason));
                continue;
            }
        };
        let value = match normalise_value(&datapoint.value, datapoint.data_type) {
            Ok(value) => value,
            Err(reason) => {
                out.steps.push(Step::Drop(key.into_owned(), reason));
                continue;
            }
        };

        chains.start(&key, datapoint.data_type.code());
        kept.clear();
        normalise_metadata(&datapoint.metadata, &mut chains, &mut kept, |reason| {
            out.steps.push(Step::Drop(key.to_string(), reason))
        });
        let first = out.pairs.len();
        out.render(|text| render_pair(text, "pattoo_key", &key));
        out.render(|text| render_value_pair(text, "pattoo_value", &value));
        for (meta_key, meta_value) in &kept {
            out.render(|text| render_pair(text, meta_key, meta_value));
        }
        out.steps.push(Step::Keep {
            datapoint,
            key,
            pairs: first..out.pairs.len(),
            checksum: [0; 64],
        });
    }
    let mut digests = chains.digests(agent_suffixes).into_iter();
    for step in &mut out.steps {
        if let Step::Keep { checksum, .. } = step {
            *checksum = digests.next().expect("one chain per datapoint kept");
        }
    }
    out
}

/// A datapoint's key, normalised, or why the datapoint is dropped.
fn normalise_datapoint_key(key: &str) -> Result<Cow<'_, str>, DropReason> {
    let key = normalise_key_cow(key);
    if key.is_empty() {
        Err(DropReason::EmptyKey)
    } else if is_reserved(&key) {
        Err(DropReason::ReservedKey)
    } else {
        Ok(key)
    }
}

/// Normalises a datapoint's metadata onto the end of `kept`, hashing the
/// items that update the checksum into `chain`; `ignored` hears of every
/// item left out, in order.
fn normalise_metadata<'a>(
    items: &'a [Metadata],
    chain: &mut impl ChainUpdate,
    kept: &mut Vec<(Cow<'a, str>, &'a str)>,
    mut ignored: impl FnMut(DropReason),
) {
    let first = kept.len();
    for item in items {
        let meta_key = normalise_key_cow(&item.key);
        if meta_key.is_empty() {
            ignored(DropReason::EmptyMetadataKey);
            continue;
        }
        if is_reserved(&meta_key) {
            ignored(DropReason::ReservedMetadataKey(meta_key.into_owned()));
            continue;
        }
        if kept[first..].iter().any(|(k, _)| *k == meta_key) {
            continue; // the first value of a repeated key wins
        }
        let meta_value = normalise_metadata_value(&item.value);
        if item.update_checksum {
            chain.update(&meta_key, meta_value);
        }
        kept.push((meta_key, meta_value));
    }
}

/// Gives every distinct `[key, value]` pair the next id the first time it is
/// seen and writes it to `key_value_pairs` once.
///
/// Pairs are identified by their JSON text, which is also what gets written,
/// so each pair is rendered once whether it is new or not.
#[derive(Default)]
struct PairTable {
    /// (hash, where the pair's text starts in `json`, its length, id): the
    /// text is looked up where it was written rather than kept twice.
    ids: hashbrown::HashTable<(u64, usize, u32, u32)>,
    next_id: u32,
    json: String,
    scratch: String,
}

impl PairTable {
    /// A checksum pair: never seen before in the body (a checksum covers
    /// the target and key, and duplicates were dropped), so written without
    /// being remembered.
    fn checksum(&mut self, checksum: &Checksum) -> u32 {
        let id = self.begin_new();
        self.json.push_str("[\"pattoo_checksum\",\"");
        self.json
            .push_str(std::str::from_utf8(checksum).expect("hex digits are ASCII"));
        self.json.push_str("\"]");
        id
    }

    /// A pair rendered in advance ([`render_pair`]) with its [`pair_hash`].
    fn rendered(&mut self, text: &str, hash: u64) -> u32 {
        self.intern_text(text, hash)
    }

    fn text(&mut self, key: &str, value: &str) -> u32 {
        self.render_text(key, value);
        self.intern()
    }

    /// Renders `[key, value]` with a text value into `scratch`.
    fn render_text(&mut self, key: &str, value: &str) {
        self.scratch.clear();
        render_pair(&mut self.scratch, key, value);
    }

    fn integer(&mut self, key: &str, value: u64) -> u32 {
        self.value(key, &Value::UInt(value))
    }

    fn value(&mut self, key: &str, value: &Value) -> u32 {
        self.scratch.clear();
        render_value_pair(&mut self.scratch, key, value);
        self.intern()
    }

    /// Interns the pair rendered in `scratch`.
    fn intern(&mut self) -> u32 {
        let scratch = std::mem::take(&mut self.scratch);
        let id = self.intern_text(&scratch, pair_hash(&scratch));
        self.scratch = scratch;
        id
    }

    fn intern_text(&mut self, text: &str, hash: u64) -> u32 {
        let json = self.json.as_bytes();
        let same = |&(h, start, len, _): &(u64, usize, u32, u32)| {
            h == hash && json.get(start..start + len as usize) == Some(text.as_bytes())
        };
        if let Some(&(_, _, _, id)) = self.ids.find(hash, same) {
            return id;
        }
        let id = self.begin_new();
        let start = self.json.len();
        self.json.push_str(text);
        self.ids
            .insert_unique(hash, (hash, start, text.len() as u32, id), |entry| entry.0);
        id
    }

    /// Writes the next id's `"id":` and returns the id; its pair follows.
    fn begin_new(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        if id > 0 {
            self.json.push(',');
        }
        self.json.push('"');
        self.json.push_str(itoa::Buffer::new().format(id));
        self.json.push_str("\":");
        id
    }
}

/// Appends the JSON text of the pair `[key, value]` with a text value.
fn render_pair(out: &mut String, key: &str, value: &str) {
    out.push('[');
    push_json_string(out, key);
    out.push(',');
    push_json_string(out, value);
    out.push(']');
}

/// Appends the JSON text of the pair `[key, value]`.
fn render_value_pair(out: &mut String, key: &str, value: &Value) {
    out.push('[');
    push_json_string(out, key);
    out.push(',');
    match value {
        Value::Int(v) => out.push_str(itoa::Buffer::new().format(*v)),
        Value::UInt(v) => out.push_str(itoa::Buffer::new().format(*v)),
        Value::UInt128(v) => out.push_str(itoa::Buffer::new().format(v.get())),
        // Finite by now: normalisation dropped NaN and infinities. Python's
        // repr is valid JSON for finite floats and matches what the
        // Python agents send byte for byte.
        Value::Float(v) => python::write_float(out, *v),
        Value::Text(v) => push_json_string(out, v),
    }
    out.push(']');
}

/// How the pair table hashes a pair's text.
fn pair_hash(text: &str) -> u64 {
    FxBuildHasher.hash_one(text.as_bytes())
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

    /// A list's items without its brackets, for
    /// [`push_rendered`](Self::push_rendered).
    fn continuing(out: &'a mut String) -> Self {
        IdList { out, first: true }
    }

    fn push(&mut self, id: u32) {
        self.push_rendered(itoa::Buffer::new().format(id));
    }

    /// Ids already written as a list's items (`3,4,5`), as if pushed one
    /// by one.
    fn push_rendered(&mut self, ids: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str(ids);
    }

    fn finish(self) {
        self.out.push(']');
    }
}

fn push_json_string(out: &mut String, text: &str) {
    // Nearly every key and value needs no escaping: check that in one
    // tight pass (the compiler vectorises it) before going byte by byte.
    let needs_escape = text.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escape {
        out.reserve(text.len() + 2);
        out.push('"');
        out.push_str(text);
        out.push('"');
        return;
    }
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

mod memory;
#[cfg(test)]
mod tests;
