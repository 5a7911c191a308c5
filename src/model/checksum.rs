//! The checksum chain that gives a datapoint its identity on the server.
//!
//! `c = sha256(key + code)`, then for every metadata item that updates the
//! checksum, in attachment order, `c = sha256(c + meta_key + meta_value)`;
//! all hashes are lowercase hex of UTF-8 text.

use sha2::{Digest, Sha256};

/// A lowercase hex SHA-256 digest.
pub type Checksum = [u8; 64];

/// Builds a checksum chain without allocating per step.
#[derive(Clone)]
pub struct ChecksumChain {
    current: Checksum,
}

impl ChecksumChain {
    pub fn start(key: &str, data_type_code: u8) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(key.as_bytes());
        hasher.update(data_type_code.to_string().as_bytes());
        ChecksumChain {
            current: hex_digest(hasher),
        }
    }

    pub fn update(&mut self, meta_key: &str, meta_value: &str) {
        let mut hasher = Sha256::new();
        hasher.update(self.current);
        hasher.update(meta_key.as_bytes());
        hasher.update(meta_value.as_bytes());
        self.current = hex_digest(hasher);
    }

    pub fn digest(&self) -> &Checksum {
        &self.current
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.current).expect("hex digits are ASCII")
    }
}

fn hex_digest(hasher: Sha256) -> Checksum {
    let mut out = [0u8; 64];
    hex::encode_to_slice(hasher.finalize(), &mut out).expect("64 hex digits fit 32 bytes");
    out
}

/// `sha256(text)` as lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_matches_hashing_the_concatenated_text() {
        let mut chain = ChecksumChain::start("input_register_30386", 99);
        let first = sha256_hex("input_register_3038699");
        assert_eq!(chain.as_str(), first);
        chain.update("unit", "000");
        assert_eq!(chain.as_str(), sha256_hex(&format!("{first}unit000")));
    }
}
