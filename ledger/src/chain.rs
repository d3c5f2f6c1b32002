//! A chain's head and the one way to extend it. Pure.

use jiff::Timestamp;

use crate::entry::{Body, Entry, EntryHash, GENESIS_PREV_HASH, Source};

/// The end of a chain: how many entries it has and the last one's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub chain: String,
    /// The seq the next entry gets; equal to the number of entries.
    pub next_seq: u64,
    /// Hash of the entry at `next_seq - 1`, or the genesis value when empty.
    pub last_hash: EntryHash,
}

/// An entry with its encoding and hash, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEntry {
    pub seq: u64,
    pub hash: EntryHash,
    pub encoding: Vec<u8>,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn empty(chain: &str) -> Self {
        ChainHead {
            chain: chain.to_owned(),
            next_seq: 0,
            last_hash: GENESIS_PREV_HASH,
        }
    }

    /// Links a new entry to this head and moves the head past it.
    pub fn append(&mut self, received_at: Timestamp, source: Source, body: Body) -> SealedEntry {
        let entry = Entry {
            chain: self.chain.clone(),
            seq: self.next_seq,
            prev_hash: self.last_hash,
            received_at,
            source,
            body,
        };
        let encoding = entry.encode();
        let hash = EntryHash::of_encoding(&encoding);
        self.next_seq += 1;
        self.last_hash = hash;
        SealedEntry {
            seq: entry.seq,
            hash,
            encoding,
        }
    }
}
