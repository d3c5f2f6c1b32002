//! The event ids recorded since the event-id runs were last saved (pure):
//! where each was first recorded, compactly.
//!
//! A map from a 64-bit fingerprint of the id (the first 8 bytes of its
//! BLAKE3 hash) to a packed location (chain number, seq): a hit is only a
//! candidate, which the caller confirms by reading the entry there and
//! comparing the id. Two ids with the same fingerprint are rare but
//! possible (and can be made on purpose); the later one is kept by its
//! full id in `collided`, so no id is ever lost.
//!
//! Saved, these become run records (see `event_ids`): key `f` + the
//! fingerprint (8 bytes, big-endian, so that runs sort by it) or `c` + the
//! full id of a collided one, value the packed location (8 bytes,
//! little-endian).

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

/// The run key of a fingerprint.
pub fn fingerprint_key(fingerprint: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(b'f');
    key.extend_from_slice(&fingerprint.to_be_bytes());
    key
}

/// The run key of an id kept by its full id (its fingerprint was taken).
pub fn collided_key(event_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + event_id.len());
    key.push(b'c');
    key.extend_from_slice(event_id.as_bytes());
    key
}

/// A packed location as a run value.
pub fn encode_packed(packed: u64) -> Vec<u8> {
    packed.to_le_bytes().to_vec()
}

/// A run value as a packed location (`None`: not 8 bytes).
pub fn decode_packed(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.try_into().ok()?))
}

/// The chains' numbers and the ids recorded since the last save.
#[derive(Debug, Default)]
pub struct EventIndex {
    chains: Vec<String>,
    chain_numbers: HashMap<String, u64>,
    recent: HashMap<u64, u64, BuildHasherDefault<PassThrough>>,
    collided: HashMap<String, u64>,
}

impl EventIndex {
    /// An empty index whose chains are numbered as `chains` (by position),
    /// as saved.
    pub fn with_chains(chains: Vec<String>) -> Self {
        let chain_numbers = chains
            .iter()
            .enumerate()
            .map(|(n, c)| (c.clone(), n as u64))
            .collect();
        EventIndex {
            chains,
            chain_numbers,
            ..EventIndex::default()
        }
    }

    /// Every chain, by number.
    pub fn chains(&self) -> &[String] {
        &self.chains
    }

    /// Ids recorded since the last save.
    pub fn len(&self) -> usize {
        self.recent.len() + self.collided.len()
    }

    /// The packed location of `seq` on `chain` (numbering the chain if it
    /// is new).
    pub fn pack(&mut self, chain: &str, seq: u64) -> u64 {
        let n = match self.chain_numbers.get(chain) {
            Some(n) => *n,
            None => {
                let n = self.chains.len() as u64;
                self.chains.push(chain.to_owned());
                self.chain_numbers.insert(chain.to_owned(), n);
                n
            }
        };
        (n << SEQ_BITS) | (seq & SEQ_MASK)
    }

    /// The chain and seq of a packed location (`None`: no such chain).
    pub fn unpack(&self, packed: u64) -> Option<(&str, u64)> {
        let chain = self.chains.get((packed >> SEQ_BITS) as usize)?;
        Some((chain, packed & SEQ_MASK))
    }

    /// A recent id kept by its full id.
    pub fn recent_collided(&self, event_id: &str) -> Option<u64> {
        self.collided.get(event_id).copied()
    }

    /// The recent id holding a fingerprint.
    pub fn recent_fingerprint(&self, fingerprint: u64) -> Option<u64> {
        self.recent.get(&fingerprint).copied()
    }

    /// Records `event_id` (whose fingerprint is `fp`) at `packed`: by its
    /// fingerprint, or by its full id when `fingerprint_taken` (another
    /// id, recent or saved, holds it).
    pub fn insert(&mut self, event_id: &str, fp: u64, packed: u64, fingerprint_taken: bool) {
        if fingerprint_taken || self.recent.contains_key(&fp) {
            self.collided.insert(event_id.to_owned(), packed);
        } else {
            self.recent.insert(fp, packed);
        }
    }

    /// Takes the recent ids as run records, in key order.
    pub fn take_records(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = self
            .collided
            .drain()
            .map(|(id, packed)| (collided_key(&id), encode_packed(packed)))
            .chain(
                self.recent
                    .drain()
                    .map(|(fp, packed)| (fingerprint_key(fp), encode_packed(packed))),
            )
            .collect();
        records.sort_unstable();
        self.recent.shrink_to_fit();
        self.collided.shrink_to_fit();
        records
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
        ) {
            let mut index = EventIndex::default();
            let ids: Vec<String> = ids.into_iter().collect();
            for (i, id) in ids.iter().enumerate() {
                let packed = index.pack(&chains[i % chains.len()], i as u64);
                index.insert(id, fingerprint(id), packed, false);
            }
            prop_assert_eq!(index.len(), ids.len());
            for (i, id) in ids.iter().enumerate() {
                let packed = index.recent_fingerprint(fingerprint(id)).unwrap();
                let (chain, seq) = index.unpack(packed).unwrap();
                prop_assert_eq!(chain, chains[i % chains.len()].as_str());
                prop_assert_eq!(seq, i as u64);
            }
            let records = index.take_records();
            prop_assert_eq!(records.len(), ids.len());
            prop_assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert_eq!(index.len(), 0);
        }

        #[test]
        fn a_location_packs_and_unpacks(seq in 0u64..(1 << 44), chain in "[a-z]{1,5}") {
            let mut index = EventIndex::with_chains(vec!["file".into()]);
            let packed = index.pack(&chain, seq);
            prop_assert_eq!(index.unpack(packed), Some((chain.as_str(), seq)));
            prop_assert_eq!(decode_packed(&encode_packed(packed)), Some(packed));
        }
    }

    #[test]
    fn an_id_whose_fingerprint_is_taken_is_kept_by_its_full_id() {
        let mut index = EventIndex::default();
        let a = index.pack("file", 1);
        index.insert("a", fingerprint("a"), a, false);
        let b = index.pack("file", 2);
        // Taken by a saved id: kept by its full id.
        index.insert("b", fingerprint("b"), b, true);
        assert_eq!(index.recent_collided("b"), Some(b));
        assert_eq!(index.recent_fingerprint(fingerprint("b")), None);
        assert_eq!(index.recent_fingerprint(fingerprint("a")), Some(a));
        let records = index.take_records();
        assert_eq!(records[0].0, collided_key("b"));
        assert_eq!(records[1].0, fingerprint_key(fingerprint("a")));
    }
}
