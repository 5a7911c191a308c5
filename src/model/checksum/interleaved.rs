//! SHA-256 compression of several independent states at once.
//!
//! One SHA-256 compression is a chain of 32 `sha256rnds2` instructions,
//! each waiting for the one before: with SHA-NI a single chain leaves the
//! SHA unit idle most of the time (the instruction's latency is several
//! times its issue interval). The checksum chains of different datapoints
//! are independent, so stepping [`LANES`] of them through the same rounds
//! side by side fills those gaps on one core.
//!
//! No well-kept crate offers this: `sha2` compresses one state at a time,
//! and the multi-buffer crates that exist hash whole, fully known messages,
//! while a checksum chain only knows its next block once its previous
//! digest is written out as hex.
//!
//! [`compress`] is the only entry point. It uses SHA-NI when the CPU has it
//! (checked at run time) and `sha2::compress256` lane by lane otherwise:
//! on other CPUs and under valgrind, which hides SHA-NI.

/// How many states [`compress`] takes at once. Each lane holds eight
/// 128-bit registers through the rounds (state, saved state, four message
/// words); two lanes fit the sixteen SSE registers, more lanes spill to the
/// stack but still overlap their rounds.
pub const LANES: usize = 4;

/// Compresses `blocks[i]` into `states[i]` for every lane: exactly
/// `sha2::compress256(&mut states[i], &[blocks[i]])` for each `i`.
pub fn compress(states: &mut [[u32; 8]; LANES], blocks: [&[u8; 64]; LANES]) {
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        // SAFETY: the CPU has every feature `shani::compress` is compiled
        // for, as `available` has just checked.
        unsafe { shani::compress(states, blocks) };
        return;
    }
    for (state, block) in states.iter_mut().zip(blocks) {
        sha2::compress256(state, &[(*block).into()]);
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use core::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
        _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
        _mm_shuffle_epi8, _mm_storeu_si128,
    };

    use super::LANES;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse2")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }

    /// The round constants, four per group of rounds, in the word order
    /// `_mm_loadu_si128` gives the instructions.
    static K: [[u32; 4]; 16] = [
        [0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5],
        [0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5],
        [0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3],
        [0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174],
        [0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc],
        [0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da],
        [0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7],
        [0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967],
        [0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13],
        [0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85],
        [0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3],
        [0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070],
        [0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5],
        [0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3],
        [0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208],
        [0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2],
    ];

    /// The SHA-NI implementation of [`super::compress`]: Intel's published
    /// sequence (as in `sha2`'s x86 backend), each group of four rounds
    /// issued for every lane before the next group.
    ///
    /// # Safety
    ///
    /// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn compress(states: &mut [[u32; 8]; LANES], blocks: [&[u8; 64]; LANES]) {
        // Big-endian words from the block's bytes.
        let byte_swap = _mm_set_epi64x(
            0x0C0D_0E0F_0809_0A0Bu64 as i64,
            0x0405_0607_0001_0203u64 as i64,
        );
        // The instructions keep the state as the words A, B, E, F and C, D,
        // G, H; `saved` is the state before the block, added back after it.
        let mut abef = [byte_swap; LANES];
        let mut cdgh = [byte_swap; LANES];
        let mut saved = [[byte_swap; 2]; LANES];
        // The last four message vectors of each lane: a ring, vector `i`
        // in slot `i % 4`.
        let mut w = [[byte_swap; 4]; LANES];
        for lane in 0..LANES {
            // SAFETY (both loads): a `[u32; 8]` is 32 readable bytes, and
            // `_mm_loadu_si128` takes any alignment.
            let dcba = unsafe { _mm_loadu_si128(states[lane].as_ptr().cast()) };
            let efgh = unsafe { _mm_loadu_si128(states[lane].as_ptr().add(4).cast()) };
            let cdab = _mm_shuffle_epi32(dcba, 0xB1);
            let efgh = _mm_shuffle_epi32(efgh, 0x1B);
            abef[lane] = _mm_alignr_epi8(cdab, efgh, 8);
            cdgh[lane] = _mm_blend_epi16(efgh, cdab, 0xF0);
            saved[lane] = [abef[lane], cdgh[lane]];
            for (i, words) in w[lane].iter_mut().enumerate() {
                // SAFETY: a block is 64 readable bytes; any alignment.
                let bytes = unsafe { _mm_loadu_si128(blocks[lane].as_ptr().add(16 * i).cast()) };
                *words = _mm_shuffle_epi8(bytes, byte_swap);
            }
        }
        for (group, k) in K.iter().enumerate() {
            // SAFETY: `k` is 16 readable bytes; any alignment.
            let k = unsafe { _mm_loadu_si128(k.as_ptr().cast()) };
            for lane in 0..LANES {
                let w = &mut w[lane];
                if group >= 4 {
                    // W[4g..4g+4] from the four vectors before it, into the
                    // slot of the oldest, which is not needed again.
                    let t1 = _mm_sha256msg1_epu32(w[group % 4], w[(group + 1) % 4]);
                    let t2 = _mm_alignr_epi8(w[(group + 3) % 4], w[(group + 2) % 4], 4);
                    w[group % 4] = _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), w[(group + 3) % 4]);
                }
                let wk = _mm_add_epi32(w[group % 4], k);
                cdgh[lane] = _mm_sha256rnds2_epu32(cdgh[lane], abef[lane], wk);
                abef[lane] =
                    _mm_sha256rnds2_epu32(abef[lane], cdgh[lane], _mm_shuffle_epi32(wk, 0x0E));
            }
        }
        for lane in 0..LANES {
            let abef = _mm_add_epi32(abef[lane], saved[lane][0]);
            let cdgh = _mm_add_epi32(cdgh[lane], saved[lane][1]);
            let feba = _mm_shuffle_epi32(abef, 0x1B);
            let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
            let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
            let hgef = _mm_alignr_epi8(dchg, feba, 8);
            let out: *mut __m128i = states[lane].as_mut_ptr().cast();
            // SAFETY (both stores): a `[u32; 8]` is 32 writable bytes, and
            // `_mm_storeu_si128` takes any alignment.
            unsafe { _mm_storeu_si128(out, dcba) };
            unsafe { _mm_storeu_si128(out.add(1), hgef) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_lane_compresses_as_sha2_does(
            states in proptest::array::uniform4(proptest::array::uniform8(any::<u32>())),
            blocks in proptest::array::uniform4(proptest::collection::vec(any::<u8>(), 64)),
        ) {
            let blocks: [[u8; 64]; LANES] = blocks.map(|b| b.try_into().unwrap());
            let mut expected = states;
            for (state, block) in expected.iter_mut().zip(&blocks) {
                sha2::compress256(state, &[(*block).into()]);
            }
            let mut got = states;
            compress(&mut got, [&blocks[0], &blocks[1], &blocks[2], &blocks[3]]);
            prop_assert_eq!(got, expected);
        }
    }
}
