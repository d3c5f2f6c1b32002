//! Bringing the index database up to the evidence.
//!
//! The indexes (event ids, rejection keys, Merkle subtrees) are written
//! after the manifest acknowledges an append, and sled's own writes are not
//! fsynced per append, so a crash can leave them behind the evidence. Each
//! chain's key `H` records how far its indexes go; on open, whatever lies
//! between that and the acknowledged head is derived again from the
//! segments. An index that claims more than the evidence holds means the
//! evidence went back (a restored or replaced manifest): that is refused,
//! never papered over. Staged batches whose inputs the evidence already
//! holds (the cursor passed them) are removed.

use super::tree::{STORED_LEVEL, StoredTree, node_key};
use super::{Ledger, StoreError, damaged, layout};
use crate::entry::{Body, Entry, EntryHash};
use crate::intake::{self, SeenEvent};
use crate::merkle::{self, CompactRange};

/// Entries derived per sled batch.
const CHUNK: usize = 16_384;

impl Ledger {
    /// How far a chain's indexes go: (next seq, last hash) from key `H`.
    fn derived_head(&self, chain: &str) -> Result<(u64, EntryHash), StoreError> {
        let key = layout::head_key(chain);
        match self.db.get(&key)? {
            None => Ok((0, EntryHash([0; 32]))),
            Some(v) => {
                layout::decode_head(&v).ok_or_else(|| damaged(&key, "index head is not 40 bytes"))
            }
        }
    }

    /// Derives every index entry the evidence holds and the indexes lack.
    pub(super) fn catch_up_derived(&mut self) -> Result<(), StoreError> {
        let mut indexed = Vec::new();
        for item in self.db.scan_prefix(b"H") {
            let (key, _) = item?;
            indexed.push(
                String::from_utf8(key[1..].to_vec())
                    .map_err(|_| damaged(&key, "chain name is not UTF-8"))?,
            );
        }
        for chain in &indexed {
            if self.head(chain).is_none() {
                let (next, _) = self.derived_head(chain)?;
                if next > 0 {
                    return Err(ahead(chain, next, 0));
                }
            }
        }
        let heads: Vec<(String, u64, EntryHash)> = self
            .heads()
            .map(|h| (h.chain.clone(), h.next_seq, h.last_hash))
            .collect();
        for (chain, next_seq, last_hash) in heads {
            let (derived, derived_hash) = self.derived_head(&chain)?;
            if derived > next_seq || (derived == next_seq && derived_hash != last_hash) {
                return Err(ahead(&chain, derived, next_seq));
            }
            if derived < next_seq {
                tracing::info!(
                    chain = %chain,
                    "deriving indexes for seq {derived}..{next_seq} from the segments"
                );
                self.derive(&chain, derived)?;
            }
        }
        self.settle_landed_staged()?;
        Ok(())
    }

    /// Derives a chain's indexes from seq `from` to its head.
    fn derive(&mut self, chain: &str, from: u64) -> Result<(), StoreError> {
        self.load_event_index()?;
        let mut range = CompactRange::of(
            &StoredTree {
                ledger: self,
                chain,
            },
            from,
        )?;
        let mut records = self.evidence.records(chain, from);
        loop {
            let chunk: Vec<_> = records.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            let mut batch = sled::Batch::default();
            for frame in records.take_frames() {
                batch.insert(
                    layout::frame_key(chain, frame.first_seq),
                    layout::encode_frame_position(frame.segment, frame.offset),
                );
            }
            let mut new_index: Vec<(String, SeenEvent)> = Vec::new();
            let mut new_ids: std::collections::HashSet<String> = Default::default();
            let mut last = None;
            for record in chunk {
                let record = record?;
                let entry = Entry::decode(&record.encoding).map_err(|e| {
                    damaged(
                        format!("chain {chain} seq {}", record.position).as_bytes(),
                        e.to_string(),
                    )
                })?;
                match &entry.body {
                    Body::Event { raw, event_id, .. } => {
                        let known = new_ids.contains(event_id.as_str())
                            || self.seen_event(event_id)?.is_some();
                        if !known {
                            new_ids.insert(event_id.clone());
                            new_index.push((
                                event_id.clone(),
                                SeenEvent {
                                    chain: chain.to_owned(),
                                    seq: entry.seq,
                                    raw_hash: *blake3::hash(raw).as_bytes(),
                                },
                            ));
                        }
                    }
                    Body::Rejected { raw, class, reason } => {
                        let key = intake::stored_rejection_key(&entry.source, raw, *class, reason);
                        batch.insert(
                            layout::rejection_index_key(&key),
                            layout::encode_location(chain, entry.seq),
                        );
                    }
                }
                for (level, index, node) in range.push(merkle::leaf_hash(&record.hash)) {
                    if level >= STORED_LEVEL {
                        batch.insert(node_key(chain, level, index), node.to_vec());
                    }
                }
                last = Some((record.position, record.hash));
            }
            if !new_index.is_empty() {
                batch.insert(
                    layout::index_record_key(self.next_index_record),
                    layout::encode_index_record(&new_index),
                );
            }
            if let Some((seq, hash)) = last {
                batch.insert(layout::head_key(chain), layout::encode_head(seq + 1, &hash));
            }
            self.db.apply_batch(batch)?;
            if !new_index.is_empty() {
                self.next_index_record += 1;
                if let Some(index) = self.event_index.as_mut() {
                    for (id, seen) in new_index {
                        index.insert(&id, &seen.chain, seen.seq);
                    }
                }
            }
        }
        self.db.flush()?;
        self.frontiers.insert(chain.to_owned(), range);
        Ok(())
    }

    /// Drops every index and derives them again from the evidence.
    pub fn rebuild_indexes(&mut self) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for prefix in [&b"H"[..], b"X", b"I", b"R", b"N", b"F"] {
            for item in self.db.scan_prefix(prefix) {
                batch.remove(item?.0);
            }
        }
        self.db.apply_batch(batch)?;
        self.event_index = Some(super::event_index::EventIndex::default());
        self.next_index_record = 0;
        self.frontiers.clear();
        self.catch_up_derived()?;
        self.make_durable()
    }
}

fn ahead(chain: &str, indexed: u64, acknowledged: u64) -> StoreError {
    StoreError::Broken {
        chain: chain.to_owned(),
        seq: acknowledged,
        detail: format!(
            "the indexes cover {indexed} entries, the manifest acknowledges {acknowledged}: \
             the evidence is older than its indexes (a manifest or segment rolled back?); \
             run `lifeledger verify`"
        ),
    }
}
