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

use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;
use sha2::{Digest as _, Sha256};

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
fn hex(state: &[u32; 8]) -> Checksum {
    let mut out = [0u8; 64];
    for (word, chunk) in state.iter().zip(out.chunks_exact_mut(8)) {
        for (byte, pair) in word
            .to_be_bytes()
            .into_iter()
            .zip(chunk.chunks_exact_mut(2))
        {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
        }
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
