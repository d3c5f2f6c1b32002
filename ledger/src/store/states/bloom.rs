//! A Bloom filter per run of saved states: most lookups of an item are
//! answered "not in this run" without reading the run.
//!
//! Ten bits and seven probes per key (about 1% false positives). A key's
//! probes come from one 128-bit hash of it ([`KeyHash`]): XXH3-128 in the
//! runs written now, BLAKE3 in runs of version 1 (see `run::RunVersion`);
//! computed once per lookup and version, and shared by every run's filter.

/// Bits per key.
const BITS_PER_KEY: u64 = 10;
/// Probes per key.
pub(super) const PROBES: u32 = 7;

/// The two 64-bit halves a key's probes are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyHash(u64, u64);

impl KeyHash {
    /// From the first 16 bytes of the key's BLAKE3 hash (runs of version 1).
    pub(crate) fn of_blake3(key: &[u8]) -> Self {
        let mut first = [0u8; 16];
        first.copy_from_slice(&blake3::hash(key).as_bytes()[..16]);
        Self::of_halves(u128::from_le_bytes(first))
    }

    /// From the key's XXH3-128 hash (runs of version 2).
    pub(crate) fn of_xxh3(key: &[u8]) -> Self {
        Self::of_halves(xxhash_rust::xxh3::xxh3_128(key))
    }

    fn of_halves(hash: u128) -> Self {
        let low = hash as u64;
        let high = (hash >> 64) as u64;
        // An odd step visits distinct bits for any power-of-two size, and
        // differs from the start for every other size.
        KeyHash(low, high | 1)
    }

    fn probes(self, bits: u64, probes: u32) -> impl Iterator<Item = u64> {
        let KeyHash(start, step) = self;
        (0..u64::from(probes)).map(move |i| start.wrapping_add(i.wrapping_mul(step)) % bits)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bloom {
    words: Vec<u64>,
    probes: u32,
}

impl Bloom {
    /// An empty filter sized for `keys` keys.
    pub(crate) fn for_keys(keys: u64) -> Self {
        let bits = keys.saturating_mul(BITS_PER_KEY).max(64);
        let words = usize::try_from(bits.div_ceil(64)).unwrap_or(usize::MAX / 8);
        Bloom {
            words: vec![0; words],
            probes: PROBES,
        }
    }

    /// A filter as read back from a run's index.
    pub(crate) fn from_parts(words: Vec<u64>, probes: u32) -> Option<Self> {
        (!words.is_empty() && probes > 0).then_some(Bloom { words, probes })
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    pub(crate) fn probes(&self) -> u32 {
        self.probes
    }

    fn bits(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    pub(crate) fn insert(&mut self, hash: KeyHash) {
        let bits = self.bits();
        for bit in hash.probes(bits, self.probes) {
            // bit < bits, so the word index is in range.
            if let Some(word) = self.words.get_mut((bit / 64) as usize) {
                *word |= 1 << (bit % 64);
            }
        }
    }

    /// False only if the key was never inserted.
    pub(crate) fn may_contain(&self, hash: KeyHash) -> bool {
        let bits = self.bits();
        hash.probes(bits, self.probes).all(|bit| {
            self.words
                .get((bit / 64) as usize)
                .is_some_and(|word| word & (1 << (bit % 64)) != 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_inserted_key_may_be_contained(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..300),
            sized_for in 0u64..400,
            blake3 in any::<bool>(),
        ) {
            let hash = if blake3 { KeyHash::of_blake3 } else { KeyHash::of_xxh3 };
            let mut bloom = Bloom::for_keys(sized_for);
            for key in &keys {
                bloom.insert(hash(key));
            }
            for key in &keys {
                prop_assert!(bloom.may_contain(hash(key)));
            }
        }
    }

    #[test]
    fn keys_never_inserted_are_mostly_refused() {
        for hash in [KeyHash::of_blake3, KeyHash::of_xxh3] {
            let mut bloom = Bloom::for_keys(10_000);
            for n in 0..10_000u32 {
                bloom.insert(hash(format!("in-{n}").as_bytes()));
            }
            let false_positives = (0..10_000u32)
                .filter(|n| bloom.may_contain(hash(format!("out-{n}").as_bytes())))
                .count();
            // About 1% expected; 3% would mean the probes are not
            // independent.
            assert!(false_positives < 300, "{false_positives} false positives");
        }
    }
}
