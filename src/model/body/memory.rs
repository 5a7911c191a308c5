//! What one poller remembers between polls, so that a steady poll (the same
//! registers read again) hashes nothing.
//!
//! A datapoint's checksum depends only on its key, data type, the metadata
//! that updates the checksum, its target and the agent's identity, never on
//! its value or timestamp. [`PollMemory`] keeps, for every distinct
//! *description* (key, data type and metadata exactly as the poller
//! produced them), what normalisation made of it: the normalised key, its
//! pairs rendered as JSON, the metadata it ignored, and the checksum chain
//! up to the agent's items. For every target of the last poll it keeps, per
//! datapoint in order, which description it had and its checksum.
//!
//! A poll is matched to the last one position by position, since pollers
//! read the same things in the same order; a datapoint that differs is
//! looked up by its description, and only descriptions never seen are
//! normalised and hashed. Whatever the last poll did not use is forgotten,
//! so the memory never holds more than one poll's worth.
//!
//! Texts are kept once per memory, however many descriptions repeat them:
//! the keys and metadata a description compares against, and the pairs
//! normalisation rendered from them (an SNMP interface's `ifDescr` or
//! `ifAlias` item, say, is in the description of every column read from
//! it). A text a parser cut from its payload is copied out of it, so the
//! memory never keeps a poll's payload alive. The body is byte
//! for byte what [`build`](super::build) writes from scratch (a property
//! test in `tests.rs` checks it over random sequences of polls).

use std::borrow::{Borrow, Cow};
use std::hash::Hasher;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};

use super::{
    agent_suffixes, in_two_halves, normalise_datapoint_key, normalise_metadata, pair_hash,
    render_pair, AgentContext, BuildOutcome, DropReason, LimitedOutcome, Parts, PostBody, Ready,
    Writer, PARALLEL_MIN,
};
use crate::model::checksum::{self, ChainBatch, Checksum, Digest};
use crate::model::normalise::normalise_value;
use crate::model::{DataPoint, DataType, Metadata, TargetData, Text, TextSet};

/// Builds one poller's bodies, remembering between polls everything about
/// its datapoints that cannot have changed.
#[derive(Default)]
pub struct PollMemory {
    /// The hostname, agent id and agent program the checksums were made
    /// for; when they change, every checksum is made again.
    agent: Option<[String; 3]>,
    /// Slots, so that ids stay put while others are forgotten.
    descriptions: Vec<Option<Description>>,
    free: Vec<u32>,
    /// Description ids by [`description_hash`].
    index: hashbrown::HashTable<u32>,
    targets: Vec<TargetMemory>,
    /// Every text the descriptions hold, once (see the module's notes).
    texts: TextSet,
}

/// `text` as a description keeps it: texts fixed in the program or shared
/// with the configuration as they are, any other from `texts`.
fn kept(texts: &mut TextSet, text: &Text) -> Text {
    match text {
        Text::Static(_) | Text::Shared(_) => text.clone(),
        Text::Owned(_) | Text::Slice(..) => Text::Shared(texts.text(text)),
    }
}

/// A datapoint's key, data type and metadata as the poller produced them,
/// and what normalisation made of them.
struct Description {
    hash: u64,
    key: Text,
    data_type: DataType,
    metadata: Vec<Metadata>,
    /// `None` only while a poll is preparing it.
    made: Option<Result<Made, DropReason>>,
}

struct Made {
    /// Normalised, for drop reports.
    key: Arc<str>,
    /// `["pattoo_key", key]` and its pair hash.
    key_pair: (Arc<str>, u64),
    /// The metadata kept, as pairs with their hashes.
    metadata: Vec<(Arc<str>, u64)>,
    /// Metadata items left out, reported whenever the datapoint is.
    ignored: Vec<DropReason>,
    /// The checksum chain's value before the agent's items.
    chain: Checksum,
}

struct TargetMemory {
    name: String,
    /// One per datapoint of the target's last poll, in order.
    entries: Vec<Entry>,
    /// Whether no two entries have the same checksum, so no datapoint can
    /// be a duplicate whatever the values.
    distinct: bool,
}

#[derive(Clone, Copy)]
struct Entry {
    description: u32,
    /// Meaningless when the description's key was dropped.
    checksum: Digest,
}

impl Description {
    fn describes(&self, datapoint: &DataPoint) -> bool {
        self.key == datapoint.key
            && self.data_type == datapoint.data_type
            && self.metadata == datapoint.metadata
    }

    fn made(&self) -> &Result<Made, DropReason> {
        self.made
            .as_ref()
            .expect("a description is made before it is used")
    }
}

impl PollMemory {
    /// [`build`](super::build), reusing what the last poll worked out.
    pub fn build(
        &mut self,
        agent: &AgentContext<'_>,
        timestamp_ms: u64,
        targets: &[TargetData],
    ) -> BuildOutcome {
        let outcome = self.build_with(
            agent,
            timestamp_ms,
            targets.iter().collect(),
            usize::MAX,
            PARALLEL_MIN,
        );
        BuildOutcome {
            body: outcome.bodies.into_iter().next(),
            dropped: outcome.dropped,
        }
    }

    /// [`build_limited`](super::build_limited), reusing what the last poll
    /// worked out. Each target's part is written straight into the body it
    /// goes to, so a large poll is never held as one body; and each
    /// target's readings are dropped once written, so the readings not yet
    /// written and the bodies written so far take about the memory of
    /// either, not both.
    pub fn build_limited(
        &mut self,
        agent: &AgentContext<'_>,
        timestamp_ms: u64,
        targets: Vec<TargetData>,
        max_body_bytes: usize,
    ) -> LimitedOutcome {
        self.build_with(agent, timestamp_ms, targets, max_body_bytes, PARALLEL_MIN)
    }

    pub(super) fn build_with<T: Borrow<TargetData>>(
        &mut self,
        agent: &AgentContext<'_>,
        timestamp_ms: u64,
        targets: Vec<T>,
        max_body_bytes: usize,
        parallel_min: usize,
    ) -> LimitedOutcome {
        let total: usize = targets.iter().map(|t| t.borrow().datapoints.len()).sum();
        let mut building = self.start_with(agent, timestamp_ms, total, max_body_bytes);
        building.parallel_min = parallel_min;
        building.begin();
        for target in targets {
            building.add(target.borrow());
        }
        building.finish()
    }

    /// Starts building a poll's bodies a target at a time, for a poller
    /// that hands over each target as soon as it is read: only the
    /// targets not yet handed over and the parts not yet taken are held,
    /// never the whole poll. The bodies are byte for byte those of
    /// [`PollMemory::build_limited`] given the same targets in the same
    /// order. Until the first target is added nothing is changed, so a
    /// poll that fails before reading anything leaves the memory as it
    /// was.
    pub fn start<'m, 'a, 'b>(
        &'m mut self,
        agent: &'a AgentContext<'b>,
        timestamp_ms: u64,
        max_body_bytes: usize,
    ) -> Building<'m, 'a, 'b> {
        // The last poll's size is the best guess at this one's, for what
        // the first body's buffers reserve; the bytes are the same either
        // way.
        let expected = self.targets.iter().map(|t| t.entries.len()).sum();
        self.start_with(agent, timestamp_ms, expected, max_body_bytes)
    }

    fn start_with<'m, 'a, 'b>(
        &'m mut self,
        agent: &'a AgentContext<'b>,
        timestamp_ms: u64,
        expected: usize,
        max_body_bytes: usize,
    ) -> Building<'m, 'a, 'b> {
        Building {
            memory: Some(self),
            ..Building::afresh_with(agent, timestamp_ms, expected, max_body_bytes)
        }
    }

    /// Makes `memory` describe `target`'s datapoints one for one. Returns
    /// whether anything changed.
    fn update(
        &mut self,
        memory: &mut TargetMemory,
        target: &TargetData,
        agent: &AgentContext<'_>,
        parallel_min: usize,
    ) -> bool {
        let datapoints = &target.datapoints;
        let describes = |descriptions: &[Option<Description>], entry: &Entry, dp: &DataPoint| {
            descriptions[entry.description as usize]
                .as_ref()
                .is_some_and(|d| d.describes(dp))
        };
        if memory.entries.len() == datapoints.len()
            && memory
                .entries
                .iter()
                .zip(datapoints)
                .all(|(entry, dp)| describes(&self.descriptions, entry, dp))
        {
            return false;
        }

        let last = std::mem::take(&mut memory.entries);
        let mut last_by_description: Option<FxHashMap<u32, Entry>> = None;
        let mut entries = Vec::with_capacity(datapoints.len());
        let mut new_descriptions: Vec<(u32, &DataPoint)> = Vec::new();
        let mut unhashed: Vec<usize> = Vec::new();
        for (i, dp) in datapoints.iter().enumerate() {
            if let Some(entry) = last
                .get(i)
                .filter(|entry| describes(&self.descriptions, entry, dp))
            {
                entries.push(*entry);
                continue;
            }
            let description = self.find_or_add(dp, &mut new_descriptions);
            let known = last_by_description
                .get_or_insert_with(|| last.iter().map(|e| (e.description, *e)).collect())
                .get(&description);
            match known {
                Some(entry) => entries.push(*entry),
                None => {
                    unhashed.push(i);
                    entries.push(Entry {
                        description,
                        checksum: [0; 32],
                    });
                }
            }
        }

        let made = in_two_halves(&new_descriptions, parallel_min, |part| {
            make_all(part.iter().map(|(_, dp)| *dp))
        });
        for ((id, _), made) in new_descriptions.iter().zip(made.into_iter().flatten()) {
            if let Some(description) = &mut self.descriptions[*id as usize] {
                description.made = Some(made.map(|made| made.interned(&mut self.texts)));
            }
        }

        let suffixes = agent_suffixes(agent, &target.target);
        let descriptions = &self.descriptions;
        let checksums = in_two_halves(&unhashed, parallel_min, |part| {
            // Chains are finished several at a time (see `ChainBatch`);
            // a dropped datapoint has none and keeps a meaningless zero.
            let mut batch = ChainBatch::with_capacity(part.len());
            let made: Vec<bool> = part
                .iter()
                .map(|&i| {
                    let description = descriptions[entries[i].description as usize]
                        .as_ref()
                        .expect("entries name live descriptions");
                    match description.made() {
                        Ok(made) => batch.resume(&made.chain),
                        Err(_) => return false,
                    }
                    true
                })
                .collect();
            let mut digests = batch.digests(&suffixes).into_iter();
            made.into_iter()
                .map(|made| match made {
                    true => checksum::digest_bytes(&digests.next().expect("one per chain")),
                    false => [0; 32],
                })
                .collect::<Vec<_>>()
        });
        for (&i, checksum) in unhashed.iter().zip(checksums.into_iter().flatten()) {
            entries[i].checksum = checksum;
        }

        let mut seen = FxHashSet::default();
        memory.distinct = entries.iter().all(|entry| {
            let description = self.descriptions[entry.description as usize]
                .as_ref()
                .expect("entries name live descriptions");
            description.made().is_err() || seen.insert(entry.checksum)
        });
        memory.entries = entries;
        true
    }

    /// The id of `dp`'s description, added (to be made) if new.
    fn find_or_add<'a>(
        &mut self,
        dp: &'a DataPoint,
        new_descriptions: &mut Vec<(u32, &'a DataPoint)>,
    ) -> u32 {
        let hash = description_hash(dp);
        let PollMemory {
            descriptions,
            free,
            index,
            texts,
            ..
        } = self;
        let same = |&id: &u32| {
            descriptions[id as usize]
                .as_ref()
                .is_some_and(|d| d.describes(dp))
        };
        if let Some(&id) = index.find(hash, same) {
            return id;
        }
        let description = Description {
            hash,
            key: kept(texts, &dp.key),
            data_type: dp.data_type,
            metadata: dp
                .metadata
                .iter()
                .map(|item| Metadata {
                    key: kept(texts, &item.key),
                    value: kept(texts, &item.value),
                    update_checksum: item.update_checksum,
                })
                .collect(),
            made: None,
        };
        let id = match free.pop() {
            Some(id) => {
                descriptions[id as usize] = Some(description);
                id
            }
            None => {
                descriptions.push(Some(description));
                (descriptions.len() - 1) as u32
            }
        };
        index.insert_unique(hash, id, |&id| {
            descriptions[id as usize]
                .as_ref()
                .map_or(0, |description| description.hash)
        });
        new_descriptions.push((id, dp));
        id
    }

    /// Writes `target`'s datapoints, whose entries `memory` holds, starting
    /// the next body where the limit says (see
    /// [`build_limited`](super::build_limited)).
    fn write(&self, memory: &TargetMemory, target: &TargetData, parts: &mut Parts) {
        'target: loop {
            let mut writing = parts.begin_target(&target.target, memory.distinct);
            for (dp, entry) in target.datapoints.iter().zip(&memory.entries) {
                let description = self.descriptions[entry.description as usize]
                    .as_ref()
                    .expect("entries name live descriptions");
                let made = match description.made() {
                    Ok(made) => made,
                    Err(reason) => {
                        parts.writer.drop(&target.target, &dp.key, reason.clone());
                        continue;
                    }
                };
                let value = match normalise_value(&dp.value, dp.data_type) {
                    Ok(value) => value,
                    Err(reason) => {
                        parts.writer.drop(&target.target, &made.key, reason);
                        continue;
                    }
                };
                let checksum = checksum::hex_digits(&entry.checksum);
                let ready = Ready {
                    datapoint: dp,
                    key: &made.key,
                    ignored: &made.ignored,
                    key_pair: (&made.key_pair.0, made.key_pair.1),
                    metadata: made.metadata.iter().map(|(text, hash)| (&**text, *hash)),
                    value: Err(&value),
                    checksum: &checksum,
                };
                if parts.datapoint(&mut writing, ready).is_err() {
                    continue 'target;
                }
            }
            return;
        }
    }

    /// Forgets every description no target of the last poll uses.
    fn forget_unused(&mut self) {
        let mut used = vec![false; self.descriptions.len()];
        for entry in self.targets.iter().flat_map(|t| &t.entries) {
            used[entry.description as usize] = true;
        }
        for (id, slot) in self.descriptions.iter_mut().enumerate() {
            if used[id] {
                continue;
            }
            if let Some(description) = slot.take() {
                if let Ok(found) = self
                    .index
                    .find_entry(description.hash, |&other| other as usize == id)
                {
                    found.remove();
                }
                self.free.push(id as u32);
            }
        }
        self.texts.forget_unused();
    }

    /// How many texts the descriptions keep between them.
    #[cfg(test)]
    pub(super) fn texts_kept(&self) -> usize {
        self.texts.len()
    }

    /// How many distinct descriptions and target entries are remembered.
    #[cfg(test)]
    pub(super) fn size(&self) -> (usize, usize) {
        (
            self.descriptions.iter().flatten().count(),
            self.targets.iter().map(|t| t.entries.len()).sum(),
        )
    }
}

/// A poll's bodies being built a target at a time (see
/// [`PollMemory::start`] and [`Building::afresh`]).
pub struct Building<'m, 'a, 'b> {
    /// What the last poll worked out, or `None` to work out everything
    /// afresh.
    memory: Option<&'m mut PollMemory>,
    agent: &'a AgentContext<'b>,
    parts: Parts<'a, 'b>,
    /// The last poll's targets, taken when the first target is added.
    last: Option<Vec<Option<TargetMemory>>>,
    memories: Vec<TargetMemory>,
    changed: bool,
    pub(super) parallel_min: usize,
    /// Bodies already handed out by [`Building::take_finished`].
    taken: usize,
}

impl<'a, 'b> Building<'static, 'a, 'b> {
    /// Starts building a poll's bodies a target at a time without a
    /// memory, for a process that polls once (`once`): each target's
    /// datapoints are normalised, hashed and written as
    /// [`build`](super::build) does, with none of the descriptions a
    /// memory keeps for the next poll. The bodies are byte for byte those
    /// of [`PollMemory::start`] given the same targets in the same order.
    pub fn afresh(agent: &'a AgentContext<'b>, timestamp_ms: u64, max_body_bytes: usize) -> Self {
        Building::afresh_with(agent, timestamp_ms, 0, max_body_bytes)
    }

    /// [`Building::afresh`], its first body's buffers reserved for
    /// `expected` datapoints.
    pub(super) fn afresh_with(
        agent: &'a AgentContext<'b>,
        timestamp_ms: u64,
        expected: usize,
        max_body_bytes: usize,
    ) -> Self {
        Building {
            memory: None,
            agent,
            parts: Parts::new(agent, timestamp_ms, expected, max_body_bytes),
            last: None,
            memories: Vec::new(),
            changed: false,
            parallel_min: PARALLEL_MIN,
            taken: 0,
        }
    }
}

impl Building<'_, '_, '_> {
    /// Normalises and writes the next target's datapoints.
    pub fn add(&mut self, target: &TargetData) {
        self.expect_at_least(target.datapoints.len());
        if self.memory.is_none() {
            self.parts.target_afresh(target, self.parallel_min);
            return;
        }
        self.begin();
        let memory = self.memory.as_deref_mut().expect("a memory");
        let last = self.last.as_mut().expect("begun");
        let t = self.memories.len();
        let mut target_memory = take_target(last, t, &target.target);
        self.changed |= memory.update(&mut target_memory, target, self.agent, self.parallel_min);
        memory.write(&target_memory, target, &mut self.parts);
        self.memories.push(target_memory);
    }

    /// Makes the bodies' buffers reserve for at least `datapoints`, once a
    /// target that large is handed over: the last poll's size, which they
    /// started from, is none on a first poll, and growing a body a
    /// doubling at a time copies it. The bytes are the same either way.
    fn expect_at_least(&mut self, datapoints: usize) {
        let parts = &mut self.parts;
        if parts.total >= datapoints {
            return;
        }
        parts.total = datapoints;
        if parts.writer.count == 0 && parts.writer.dropped.is_empty() {
            // Nothing written yet but the header, which depends on neither.
            parts.writer = Writer::new(
                self.agent,
                parts.timestamp_ms,
                datapoints,
                parts.max_body_bytes,
            );
        }
    }

    /// Takes over the last poll's targets: from here on, the memory will
    /// describe the targets added, even none.
    fn begin(&mut self) {
        if self.last.is_some() {
            return;
        }
        let Some(memory) = self.memory.as_deref_mut() else {
            return;
        };
        self.last = Some({
            let identity = [
                self.agent.hostname,
                self.agent.agent_id,
                self.agent.agent_program,
            ];
            let changed = memory
                .agent
                .as_ref()
                .is_none_or(|known| known.iter().map(String::as_str).ne(identity));
            if changed {
                memory.targets.clear();
                memory.agent = Some(identity.map(str::to_owned));
                self.changed = true;
            }
            std::mem::take(&mut memory.targets)
                .into_iter()
                .map(Some)
                .collect()
        });
    }

    /// The bodies finished since the last call, in order: every one but
    /// the one being written.
    pub fn take_finished(&mut self) -> Vec<PostBody> {
        self.taken += self.parts.bodies.len();
        std::mem::take(&mut self.parts.bodies)
    }

    /// How many bodies [`Building::take_finished`] has handed out.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// The bodies not yet taken and every drop; the memory now describes
    /// the targets added. With no target added, the memory is unchanged.
    pub fn finish(self) -> LimitedOutcome {
        let Building {
            memory,
            parts,
            last,
            memories,
            mut changed,
            ..
        } = self;
        if let (Some(memory), Some(last)) = (memory, last) {
            changed |= last.iter().any(Option::is_some);
            memory.targets = memories;
            if changed {
                memory.forget_unused();
            }
        }
        parts.finish()
    }
}

/// The memory of the target at position `t` of the last poll if it has the
/// same name, else of the first one of that name not taken yet, else a new
/// one.
fn take_target(last: &mut [Option<TargetMemory>], t: usize, name: &str) -> TargetMemory {
    let matches = |slot: &Option<TargetMemory>| slot.as_ref().is_some_and(|m| m.name == name);
    let position = if last.get(t).is_some_and(matches) {
        Some(t)
    } else {
        last.iter().position(matches)
    };
    position
        .and_then(|p| last[p].take())
        .unwrap_or_else(|| TargetMemory {
            name: name.to_owned(),
            entries: Vec::new(),
            distinct: true,
        })
}

/// Normalises new descriptions and hashes each as far as it can without
/// the target, their chains computed several at a time (see
/// [`ChainBatch`]).
fn make_all<'a>(
    datapoints: impl ExactSizeIterator<Item = &'a DataPoint>,
) -> Vec<Result<Made, DropReason>> {
    let mut batch = ChainBatch::with_capacity(datapoints.len());
    let mut pairs = Renderer::default();
    // A key and its pair each, at least, for most new descriptions.
    pairs.texts.reserve(2 * datapoints.len());
    let mut kept: Vec<(Cow<'_, str>, &str)> = Vec::new();
    let made: Vec<_> = datapoints
        .map(|dp| {
            let key = normalise_datapoint_key(&dp.key)?;
            batch.start(&key, dp.data_type.code());
            kept.clear();
            let mut ignored = Vec::new();
            normalise_metadata(&dp.metadata, &mut batch, &mut kept, |reason| {
                ignored.push(reason)
            });
            Ok(Made {
                key_pair: pairs.pair("pattoo_key", &key),
                key: pairs.texts.text(&key),
                metadata: kept.iter().map(|(k, v)| pairs.pair(k, v)).collect(),
                ignored,
                // Known once the whole batch is hashed, below.
                chain: [0; 64],
            })
        })
        .collect();
    let mut chains = batch.digests(&[]).into_iter();
    made.into_iter()
        .map(|made| {
            made.map(|made| Made {
                chain: chains.next().expect("one per key kept"),
                ..made
            })
        })
        .collect()
}

impl Made {
    /// The same, its texts kept once in `texts`.
    fn interned(self, texts: &mut TextSet) -> Made {
        Made {
            key: texts.keep(self.key),
            key_pair: (texts.keep(self.key_pair.0), self.key_pair.1),
            metadata: self
                .metadata
                .into_iter()
                .map(|(text, hash)| (texts.keep(text), hash))
                .collect(),
            ..self
        }
    }
}

/// Renders pairs for new descriptions into one buffer, and allocates each
/// text once however many descriptions share it (a site's name, a device's
/// description): nothing is allocated only to be dropped at once.
#[derive(Default)]
struct Renderer {
    scratch: String,
    texts: TextSet,
}

impl Renderer {
    /// `[key, value]` rendered, and its pair hash.
    fn pair(&mut self, key: &str, value: &str) -> (Arc<str>, u64) {
        self.scratch.clear();
        render_pair(&mut self.scratch, key, value);
        (self.texts.text(&self.scratch), pair_hash(&self.scratch))
    }
}

/// A hash of everything [`Description::describes`] compares.
fn description_hash(dp: &DataPoint) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(dp.key.as_bytes());
    hasher.write_u8(dp.data_type.code());
    for item in &dp.metadata {
        hasher.write_usize(item.key.len());
        hasher.write(item.key.as_bytes());
        hasher.write(item.value.as_bytes());
        hasher.write_u8(u8::from(item.update_checksum));
    }
    hasher.finish()
}
