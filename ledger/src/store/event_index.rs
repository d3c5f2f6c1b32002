//! Where each event id was first recorded, compactly (pure).
//!
//! A map from a 64-bit fingerprint of the id (the first 8 bytes of its
//! BLAKE3 hash) to a packed location (chain number, seq): 16 bytes per
//! event instead of the id, the chain name and the raw hash. A hit is only
//! a candidate: the caller reads the entry at the location and compares
//! the id (and takes the raw hash from it). Two ids with the same
//! fingerprint are rare but possible (and can be made on purpose); the
//! later one is kept by its full id in `collided`, so no id is ever lost.
//!
//! Most fingerprints sit in one sorted vector (`settled`: exactly 16 bytes
//! each, searched by bisection); new ones go to a hash map (`recent`) that
//! is merged into the vector, in place from its end, whenever it reaches an
//! eighth of it. A hash map of every event would take 17 bytes per bucket
//! at a load of at most 7/8, and twice that while it grows: some 430 MB at
//! 10M events against 160 MB here.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Bits of a packed location that hold the seq; the rest hold the chain.
const SEQ_BITS: u32 = 44;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// Fingerprints are already uniformly distributed: hash them as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// An id's fingerprint.
pub fn fingerprint(event_id: &str) -> u64 {
    let hash = blake3::hash(event_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// `recent` is merged into `settled` once it holds this many, or an
/// eighth of `settled` if that is more.
const MERGE_AT_LEAST: usize = 1 << 16;

/// The event index.
#[derive(Debug)]
pub struct EventIndex {
    chains: Vec<String>,
    chain_numbers: HashMap<String, u64>,
    /// (fingerprint, packed location), sorted by fingerprint.
    settled: Vec<(u64, u64)>,
    recent: HashMap<u64, u64, BuildHasherDefault<PassThrough>>,
    merge_at_least: usize,
    collided: HashMap<String, u64>,
}

impl Default for EventIndex {
    fn default() -> Self {
        EventIndex::merging_at(MERGE_AT_LEAST)
    }
}

impl EventIndex {
    /// An empty index whose recent fingerprints are merged once there are
    /// `merge_at_least` of them (or an eighth of the settled ones).
    pub fn merging_at(merge_at_least: usize) -> Self {
        EventIndex {
            chains: Vec::new(),
            chain_numbers: HashMap::new(),
            settled: Vec::new(),
            recent: HashMap::default(),
            merge_at_least: merge_at_least.max(1),
            collided: HashMap::new(),
        }
    }

    /// Ids indexed by fingerprint (all but the collided ones).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.settled.len() + self.recent.len()
    }

    fn by_fingerprint(&self, fingerprint: u64) -> Option<u64> {
        if let Some(packed) = self.recent.get(&fingerprint) {
            return Some(*packed);
        }
        self.settled
            .binary_search_by_key(&fingerprint, |(f, _)| *f)
            .ok()
            .map(|i| self.settled[i].1)
    }

    /// Moves `recent` into `settled`: sorted, then merged from the end of
    /// the grown vector backwards, so no second copy of `settled` is made.
    fn merge_recent(&mut self) {
        let mut add: Vec<(u64, u64)> = self.recent.drain().collect();
        add.sort_unstable_by_key(|(f, _)| *f);
        let old_len = self.settled.len();
        self.settled.reserve_exact(add.len());
        self.settled.resize(old_len + add.len(), (0, 0));
        let (mut i, mut j, mut k) = (old_len, add.len(), old_len + add.len());
        while j > 0 {
            if i > 0 && self.settled[i - 1].0 > add[j - 1].0 {
                self.settled[k - 1] = self.settled[i - 1];
                i -= 1;
            } else {
                self.settled[k - 1] = add[j - 1];
                j -= 1;
            }
            k -= 1;
        }
        self.recent.shrink_to_fit();
    }

    fn chain_number(&mut self, chain: &str) -> u64 {
        if let Some(n) = self.chain_numbers.get(chain) {
            return *n;
        }
        let n = self.chains.len() as u64;
        self.chains.push(chain.to_owned());
        self.chain_numbers.insert(chain.to_owned(), n);
        n
    }

    fn unpack(&self, packed: u64) -> Option<(&str, u64)> {
        let chain = self.chains.get((packed >> SEQ_BITS) as usize)?;
        Some((chain, packed & SEQ_MASK))
    }

    /// Where `event_id` may have been recorded: its own entry in
    /// `collided`, else whichever id holds its fingerprint. To be confirmed
    /// by reading the entry there.
    pub fn candidate(&self, event_id: &str) -> Option<(&str, u64)> {
        if let Some(packed) = self.collided.get(event_id) {
            return self.unpack(*packed);
        }
        self.by_fingerprint(fingerprint(event_id))
            .and_then(|packed| self.unpack(packed))
    }

    /// Records where `event_id` was first recorded. The caller knows the
    /// id is not in the index yet (its candidate, if any, is another id).
    pub fn insert(&mut self, event_id: &str, chain: &str, seq: u64) {
        let packed = (self.chain_number(chain) << SEQ_BITS) | (seq & SEQ_MASK);
        let fp = fingerprint(event_id);
        if self.by_fingerprint(fp).is_some() {
            self.collided.insert(event_id.to_owned(), packed);
            return;
        }
        self.recent.insert(fp, packed);
        if self.recent.len() >= self.merge_at_least.max(self.settled.len() / 8) {
            self.merge_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_id_inserted_is_a_candidate_at_its_location(
            ids in proptest::collection::hash_set("[a-z0-9-]{1,12}", 1..400),
            chains in proptest::collection::vec("[a-z:0-9]{1,8}", 1..4),
            merge_at in 1usize..40,
        ) {
            // Small merge thresholds: many merges, of every size.
            let mut index = EventIndex::merging_at(merge_at);
            let ids: Vec<String> = ids.into_iter().collect();
            for (i, id) in ids.iter().enumerate() {
                index.insert(id, &chains[i % chains.len()], i as u64);
            }
            for (i, id) in ids.iter().enumerate() {
                let (chain, seq) = index.candidate(id).unwrap();
                // A fingerprint shared with an earlier id points there; the
                // caller's check of the id then fails over to `collided`,
                // which the insert filled. Here no two ids share one.
                prop_assert_eq!(chain, chains[i % chains.len()].as_str());
                prop_assert_eq!(seq, i as u64);
            }
            prop_assert_eq!(index.len(), ids.len());
            prop_assert!(index.settled.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert_eq!(index.candidate("not-an-inserted-id!"), None);
        }
    }

    #[test]
    fn an_id_whose_fingerprint_is_taken_is_kept_by_its_full_id() {
        let mut index = EventIndex::default();
        index.insert("a", "file", 1);
        // Force a collision: the same fingerprint slot, another id.
        let fp = fingerprint("a");
        let packed = index.by_fingerprint(fp).unwrap();
        index.collided.insert("b".into(), packed + 1);
        assert_eq!(index.candidate("b"), Some(("file", 2)));
        assert_eq!(index.candidate("a"), Some(("file", 1)));
        index.insert("a2", "file", 3);
        assert_eq!(index.candidate("a2"), Some(("file", 3)));
    }
}
