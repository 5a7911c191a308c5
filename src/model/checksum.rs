//! The checksum chain that gives a datapoint its identity on the server.
//!
//! `c = sha256(key + code)`, then for every metadata item that updates the
//! checksum, in attachment order, `c = sha256(c + meta_key + meta_value)`;
//! all hashes are lowercase hex of UTF-8 text.
//!
//! The chain is most of the CPU a body costs (seven hashes per datapoint),
//! so it drives the SHA-256 compression function directly instead of going
//! through a buffered hasher: the 64 hex digits of `c` are exactly the
//! first block of every step, and for the agent's own metadata, which is
//! the same for every datapoint of a target, the remaining blocks, padding
//! included, are prepared once ([`Suffix`]).
//!
//! A single chain is a run of compressions each waiting for the one before.
//! When many datapoints are new at once (the first poll, a command printing
//! new keys), [`ChainBatch`] takes all their chains and computes them
//! [`interleaved::LANES`] at a time on one core.

mod interleaved;

use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;
use sha2::{Digest as _, Sha256};

use std::ops::Range;

/// A lowercase hex SHA-256 digest.
pub type Checksum = [u8; 64];

/// A SHA-256 digest as bytes: half the memory of its [`Checksum`], for
/// digests kept between polls.
pub type Digest = [u8; 32];

type Block = GenericArray<u8, U64>;

const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Builds a checksum chain without allocating per step.
#[derive(Clone)]
pub struct ChecksumChain {
    current: Checksum,
}

/// The blocks that follow the 64-digit chain value when hashing
/// `c + meta_key + meta_value` for a fixed key and value, padding and
/// length included.
#[derive(Debug, Clone)]
pub struct Suffix {
    blocks: Vec<Block>,
}

impl Suffix {
    pub fn new(meta_key: &str, meta_value: &str) -> Suffix {
        let mut tail = Vec::with_capacity(meta_key.len() + meta_value.len() + 72);
        tail.extend_from_slice(meta_key.as_bytes());
        tail.extend_from_slice(meta_value.as_bytes());
        let message_bits = (64 + tail.len() as u64) * 8;
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&message_bits.to_be_bytes());
        Suffix {
            blocks: tail.chunks_exact(64).map(Block::clone_from_slice).collect(),
        }
    }
}

impl ChecksumChain {
    pub fn start(key: &str, data_type_code: u8) -> Self {
        let mut state = IV;
        let mut code = itoa::Buffer::new();
        let code = code.format(data_type_code).as_bytes();
        hash_tail(&mut state, 0, &[key.as_bytes(), code]);
        ChecksumChain {
            current: hex(&state),
        }
    }

    pub fn update(&mut self, meta_key: &str, meta_value: &str) {
        let mut state = IV;
        sha2::compress256(&mut state, &[Block::from(self.current)]);
        hash_tail(
            &mut state,
            64,
            &[meta_key.as_bytes(), meta_value.as_bytes()],
        );
        self.current = hex(&state);
    }

    /// [`update`](Self::update) with a key and value prepared in advance.
    pub fn update_with(&mut self, suffix: &Suffix) {
        let mut state = IV;
        sha2::compress256(&mut state, &[Block::from(self.current)]);
        sha2::compress256(&mut state, &suffix.blocks);
        self.current = hex(&state);
    }

    pub fn digest(&self) -> &Checksum {
        &self.current
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.current).expect("hex digits are ASCII")
    }
}

/// What a checksum chain is given after its start: a datapoint's metadata
/// item, or the same item for a whole run of chains.
pub trait ChainUpdate {
    /// Hashes `meta_key + meta_value` onto the chain.
    fn update(&mut self, meta_key: &str, meta_value: &str);
}

impl ChainUpdate for ChecksumChain {
    fn update(&mut self, meta_key: &str, meta_value: &str) {
        ChecksumChain::update(self, meta_key, meta_value);
    }
}

/// Many checksum chains, written down first and computed together.
///
/// Each chain is [`start`](Self::start)ed and then [`update`](Self::update)d
/// exactly as a [`ChecksumChain`] would be; [`digests`](Self::digests) ends
/// every chain with the same prepared items (the agent's) and returns the
/// digests in the order the chains were started, each exactly the
/// [`ChecksumChain`] digest.
#[derive(Default)]
pub struct ChainBatch {
    /// The text of every step, one after another: `key + code` for a start,
    /// `meta_key + meta_value` for an update.
    text: Vec<u8>,
    /// Where each step's text ends in `text`.
    step_ends: Vec<usize>,
    /// Each chain's steps in `step_ends`.
    chains: Vec<Range<usize>>,
    /// Chains [`resume`](Self::resume)d from a known value: the chain's
    /// index and that value, in the order they were added.
    resumed: Vec<(usize, Checksum)>,
}

impl ChainBatch {
    pub fn with_capacity(chains: usize) -> Self {
        ChainBatch {
            text: Vec::with_capacity(chains * 48),
            step_ends: Vec::with_capacity(chains * 3),
            chains: Vec::with_capacity(chains),
            resumed: Vec::new(),
        }
    }

    /// Adds a chain that has already reached `checksum` (its own steps
    /// hashed earlier), so [`digests`](Self::digests) only hashes the
    /// suffixes onto it.
    pub fn resume(&mut self, checksum: &Checksum) {
        let next = self.step_ends.len();
        self.resumed.push((self.chains.len(), *checksum));
        self.chains.push(next..next);
    }

    /// Starts the next chain, as [`ChecksumChain::start`].
    pub fn start(&mut self, key: &str, data_type_code: u8) {
        self.text.extend_from_slice(key.as_bytes());
        self.text
            .extend_from_slice(itoa::Buffer::new().format(data_type_code).as_bytes());
        self.step_ends.push(self.text.len());
        let step = self.step_ends.len() - 1;
        self.chains.push(step..step + 1);
    }

    pub fn len(&self) -> usize {
        self.chains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// Every chain's digest after `suffixes`, in the order started.
    pub fn digests(&self, suffixes: &[Suffix]) -> Vec<Checksum> {
        let mut out = vec![[0u8; 64]; self.chains.len()];
        let mut lanes: [Lane; interleaved::LANES] = Default::default();
        let mut next = 0;
        let mut resumed = self.resumed.iter().peekable();
        let idle = [0u8; 64];
        loop {
            for lane in lanes.iter_mut().filter(|lane| lane.chain.is_none()) {
                // Resumed chains with nothing left to hash need no lane.
                while let Some((_, checksum)) =
                    resumed.next_if(|(chain, _)| *chain == next && suffixes.is_empty())
                {
                    out[next] = *checksum;
                    next += 1;
                }
                if next == self.chains.len() {
                    break;
                }
                let steps = &self.chains[next];
                match resumed.next_if(|(chain, _)| *chain == next) {
                    Some((_, checksum)) => {
                        lane.chain = Some(next);
                        lane.step = steps.end;
                        lane.next_prepared(checksum, &suffixes[0]);
                    }
                    None => lane.begin(next, steps.start, self.step_text(steps.start)),
                }
                next += 1;
            }
            if lanes.iter().all(|lane| lane.chain.is_none()) {
                return out;
            }
            let mut states = lanes.each_ref().map(|lane| lane.state);
            // An idle lane compresses a block of zeros into a state nobody
            // reads: cheaper than a second code path for the last chains.
            let blocks = lanes.each_ref().map(|lane| match lane.chain {
                Some(_) => &lane.blocks[lane.block],
                None => &idle,
            });
            interleaved::compress(&mut states, blocks);
            for (lane, state) in lanes.iter_mut().zip(states) {
                let Some(chain) = lane.chain else { continue };
                lane.state = state;
                lane.block += 1;
                if lane.block < lane.blocks.len() {
                    continue;
                }
                // The message is hashed: the chain goes on with its next
                // step, then the shared suffixes, then it is done.
                let digits = hex(&lane.state);
                let steps = &self.chains[chain];
                lane.step += 1;
                if lane.step < steps.end {
                    lane.next_message(&digits, self.step_text(lane.step));
                } else if lane.step - steps.end < suffixes.len() {
                    lane.next_prepared(&digits, &suffixes[lane.step - steps.end]);
                } else {
                    out[chain] = digits;
                    lane.chain = None;
                }
            }
        }
    }

    fn step_text(&self, step: usize) -> &[u8] {
        let start = if step == 0 {
            0
        } else {
            self.step_ends[step - 1]
        };
        &self.text[start..self.step_ends[step]]
    }
}

impl ChainUpdate for ChainBatch {
    /// Adds a step to the chain started last.
    fn update(&mut self, meta_key: &str, meta_value: &str) {
        self.text.extend_from_slice(meta_key.as_bytes());
        self.text.extend_from_slice(meta_value.as_bytes());
        self.step_ends.push(self.text.len());
        self.chains
            .last_mut()
            .expect("a chain is started before it is updated")
            .end += 1;
    }
}

/// One chain being computed by [`ChainBatch::digests`].
#[derive(Default)]
struct Lane {
    /// Which chain, or none when the lane is idle.
    chain: Option<usize>,
    /// Its step being hashed, an index into `step_ends`; past the chain's
    /// own steps, the shared suffixes.
    step: usize,
    /// The padded blocks of the step's message, and the next to compress.
    blocks: Vec<[u8; 64]>,
    block: usize,
    state: [u32; 8],
}

impl Lane {
    fn begin(&mut self, chain: usize, step: usize, text: &[u8]) {
        self.chain = Some(chain);
        self.step = step;
        self.blocks.clear();
        pad_into(&mut self.blocks, text, 0);
        self.block = 0;
        self.state = IV;
    }

    /// The message `digits + text`.
    fn next_message(&mut self, digits: &Checksum, text: &[u8]) {
        self.blocks.clear();
        self.blocks.push(*digits);
        pad_into(&mut self.blocks, text, 64);
        self.block = 0;
        self.state = IV;
    }

    /// The message `digits` followed by a prepared suffix.
    fn next_prepared(&mut self, digits: &Checksum, suffix: &Suffix) {
        self.blocks.clear();
        self.blocks.push(*digits);
        self.blocks
            .extend(suffix.blocks.iter().map(|block| <[u8; 64]>::from(*block)));
        self.block = 0;
        self.state = IV;
    }
}

/// Appends `text`, the end of a message of which `done` bytes come before
/// it, as whole blocks with SHA-256's padding and length.
fn pad_into(blocks: &mut Vec<[u8; 64]>, text: &[u8], done: usize) {
    let mut chunks = text.chunks_exact(64);
    for chunk in chunks.by_ref() {
        blocks.push(chunk.try_into().expect("chunks are 64 bytes"));
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 64];
    last[..rest.len()].copy_from_slice(rest);
    last[rest.len()] = 0x80;
    if rest.len() >= 56 {
        blocks.push(last);
        last = [0u8; 64];
    }
    last[56..].copy_from_slice(&((done + text.len()) as u64 * 8).to_be_bytes());
    blocks.push(last);
}

/// Hashes `parts` as the rest of a message of which `done` bytes (a
/// multiple of 64) are already in `state`, and pads it.
fn hash_tail(state: &mut [u32; 8], done: usize, parts: &[&[u8]]) {
    let mut block = [0u8; 64];
    let mut fill = 0;
    let mut total = done;
    for part in parts {
        let mut part = *part;
        total += part.len();
        while !part.is_empty() {
            let n = part.len().min(64 - fill);
            block[fill..fill + n].copy_from_slice(&part[..n]);
            fill += n;
            part = &part[n..];
            if fill == 64 {
                sha2::compress256(state, &[Block::from(block)]);
                fill = 0;
            }
        }
    }
    block[fill] = 0x80;
    block[fill + 1..].fill(0);
    if fill >= 56 {
        sha2::compress256(state, &[Block::from(block)]);
        block = [0u8; 64];
    }
    block[56..].copy_from_slice(&(total as u64 * 8).to_be_bytes());
    sha2::compress256(state, &[Block::from(block)]);
}

/// The digest in `state` as lowercase hex.
///
/// Written eight digits at a time in a `u64` (one per chain step, so it
/// is worth not going byte by byte through a table): each of a word's
/// nibbles is spread into a byte of its own, then turned into its digit.
fn hex(state: &[u32; 8]) -> Checksum {
    let mut out = [0u8; 64];
    for (word, digits) in state.iter().zip(out.chunks_exact_mut(8)) {
        let word = u64::from(*word);
        // 0x12345678 -> 0x0000_1234_0000_5678 -> 0x0012_0034_0056_0078
        // -> 0x0102_0304_0506_0708: nibble i (from the top) in byte i.
        let mut n = (word & 0xFFFF_0000) << 16 | (word & 0xFFFF);
        n = (n & 0x0000_FF00_0000_FF00) << 8 | (n & 0x0000_00FF_0000_00FF);
        n = (n & 0x00F0_00F0_00F0_00F0) << 4 | (n & 0x000F_000F_000F_000F);
        // 0x01 in each byte whose nibble is 10 or more.
        let letters = ((n + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        // '0' + nibble, and 'a' - '0' - 10 = 39 more for the letters.
        let ascii = n + 0x3030_3030_3030_3030 + letters * 39;
        digits.copy_from_slice(&ascii.to_be_bytes());
    }
    out
}

/// The bytes a lowercase hex digest spells.
pub fn digest_bytes(checksum: &Checksum) -> Digest {
    let nibble = |digit: u8| match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit - b'a' + 10,
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(checksum.chunks_exact(2)) {
        *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
    }
    out
}

/// A digest as lowercase hex.
pub fn hex_digits(digest: &Digest) -> Checksum {
    let mut out = [0u8; 64];
    for (byte, pair) in digest.iter().zip(out.chunks_exact_mut(2)) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
    out
}

/// The two lowercase hex digits of every byte.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    table
};

/// `sha256(text)` as lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn digests_go_to_bytes_and_back_to_the_same_hex() {
        let chain = ChecksumChain::start("input_register_30386", 99);
        let bytes = digest_bytes(chain.digest());
        assert_eq!(hex::encode(bytes), chain.as_str());
        assert_eq!(&hex_digits(&bytes), chain.digest());
    }

    #[test]
    fn chain_matches_hashing_the_concatenated_text() {
        let mut chain = ChecksumChain::start("input_register_30386", 99);
        let first = sha256_hex("input_register_3038699");
        assert_eq!(chain.as_str(), first);
        chain.update("unit", "000");
        assert_eq!(chain.as_str(), sha256_hex(&format!("{first}unit000")));
    }

    /// A chain as plain text hashing: `sha256(key + code)`, then
    /// `sha256(c + k + v)` for every item.
    fn chain_by_plain_hashing(key: &str, code: u8, items: &[(String, String)]) -> String {
        let mut c = sha256_hex(&format!("{key}{code}"));
        for (k, v) in items {
            c = sha256_hex(&format!("{c}{k}{v}"));
        }
        c
    }

    /// Text from 0 to 200 bytes, so a step's message ends before, at and
    /// after the padding boundaries of one to four blocks; some of it not
    /// ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z_0-9]{0,8}", "[a-z ]{40,70}", "[a-zé€ 0-9]{0,200}",]
    }

    proptest! {
        #[test]
        fn batched_chains_give_exactly_the_plain_digests(
            chains in proptest::collection::vec(
                (text(), any::<u8>(), proptest::collection::vec((text(), text()), 0..6)),
                0..(3 * interleaved::LANES + 2),
            ),
            suffixes in proptest::collection::vec((text(), text()), 0..5),
            resume in proptest::collection::vec(any::<bool>(), 3 * interleaved::LANES + 2),
        ) {
            // Some chains are resumed from the value their own steps reach,
            // as the poll memory does for a known datapoint on a new target.
            let mut batch = ChainBatch::with_capacity(chains.len());
            for ((key, code, items), resume) in chains.iter().zip(&resume) {
                if *resume {
                    let reached = chain_by_plain_hashing(key, *code, items);
                    batch.resume(reached.as_bytes().try_into().unwrap());
                    continue;
                }
                batch.start(key, *code);
                for (k, v) in items {
                    ChainUpdate::update(&mut batch, k, v);
                }
            }
            let prepared: Vec<Suffix> =
                suffixes.iter().map(|(k, v)| Suffix::new(k, v)).collect();
            let digests = batch.digests(&prepared);
            prop_assert_eq!(digests.len(), chains.len());
            for ((key, code, items), digest) in chains.iter().zip(&digests) {
                let all: Vec<(String, String)> =
                    items.iter().chain(&suffixes).cloned().collect();
                let expected = chain_by_plain_hashing(key, *code, &all);
                prop_assert_eq!(std::str::from_utf8(digest).unwrap(), expected);
            }
        }
    }

    #[test]
    fn prepared_suffixes_hash_like_plain_updates_at_every_length() {
        // Tails that end just before, at and after every padding boundary.
        for len in 0..200 {
            let value = "v".repeat(len);
            let mut plain = ChecksumChain::start("k", 101);
            let mut prepared = plain.clone();
            let before = plain.as_str().to_owned();
            plain.update("key", &value);
            prepared.update_with(&Suffix::new("key", &value));
            let expected = sha256_hex(&format!("{before}key{value}"));
            assert_eq!(plain.as_str(), expected, "update, tail of {len}");
            assert_eq!(prepared.as_str(), expected, "update_with, tail of {len}");
            let start = ChecksumChain::start(&value, 2);
            assert_eq!(
                start.as_str(),
                sha256_hex(&format!("{value}2")),
                "start, {len}"
            );
        }
    }
}
