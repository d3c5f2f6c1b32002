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
//! holds (the cursor passed them) are removed. The Merkle subtrees live in
//! files of their own (`tree_files`), which say themselves how far they go:
//! a chain derives again from the earlier of the two.

use std::sync::mpsc::SyncSender;

use super::snapshot::FramePosition;
use super::tree::{StoredTree, push_leaf};
use super::{Ledger, Snapshot, StoreError, damaged, io_error, layout};
use crate::entry::{Body, BodyView, Entry, EntryHash, EntryView};
use crate::intake;
use crate::merkle::{self, CompactRange, Hash};

/// Entries derived per sled batch.
const CHUNK: usize = 16_384;

/// Threads reading chains while deriving (this machine class has 2 cores;
/// the writing thread's share is small).
const DERIVE_READERS: usize = 2;

/// What the indexes take from one chunk of a chain's entries, read off
/// the writing thread.
struct ReadChunk {
    /// Frames that start in the chunk.
    frames: Vec<FramePosition>,
    entries: Vec<ReadEntry>,
    /// Rejections: their stored key and seq.
    rejections: Vec<([u8; 32], u64)>,
    /// The chunk's last seq and entry hash.
    last: Option<(u64, EntryHash)>,
}

struct ReadEntry {
    seq: u64,
    /// The entry's Merkle leaf.
    leaf: Hash,
    event_id: Option<String>,
}

/// Reads a chain from seq `from` to its head, chunk by chunk, into
/// `to_writer` (tagged `job`). False once the writer stopped listening or
/// the chain could not be read (the error was sent).
fn read_chain(
    snapshot: &Snapshot,
    chain: &str,
    from: u64,
    job: usize,
    to_writer: &SyncSender<(usize, Result<ReadChunk, StoreError>)>,
) -> bool {
    let mut records = snapshot.records(chain, from);
    loop {
        let chunk: Vec<_> = records.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            return true;
        }
        let frames = records.take_frames();
        let read = read_chunk(chain, frames, chunk);
        let failed = read.is_err();
        if to_writer.send((job, read)).is_err() || failed {
            return false;
        }
    }
}

fn read_chunk(
    chain: &str,
    frames: Vec<FramePosition>,
    records: Vec<Result<super::StoredRecord, StoreError>>,
) -> Result<ReadChunk, StoreError> {
    let mut read = ReadChunk {
        frames,
        entries: Vec::with_capacity(records.len()),
        rejections: Vec::new(),
        last: None,
    };
    for record in records {
        let record = record?;
        let not_an_entry = |e: crate::entry::EntryDecodeError| {
            damaged(
                format!("chain {chain} seq {}", record.position).as_bytes(),
                e.to_string(),
            )
        };
        // A view first (no copy): only a rejection is decoded whole, for
        // its key.
        let view = EntryView::decode(&record.encoding).map_err(not_an_entry)?;
        let event_id = match view.body {
            BodyView::Event { event_id, .. } => Some(event_id.to_owned()),
            BodyView::Rejected { .. } => {
                let entry = Entry::decode(&record.encoding).map_err(not_an_entry)?;
                if let Body::Rejected { raw, class, reason } = &entry.body {
                    let key = intake::stored_rejection_key(&entry.source, raw, *class, reason);
                    read.rejections.push((key, entry.seq));
                }
                None
            }
        };
        read.entries.push(ReadEntry {
            seq: record.position,
            leaf: merkle::leaf_hash(&record.hash),
            event_id,
        });
        read.last = Some((record.position, record.hash));
    }
    Ok(read)
}

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
        let mut jobs = Vec::new();
        for (chain, next_seq, last_hash) in heads {
            let (derived, derived_hash) = self.derived_head(&chain)?;
            if derived > next_seq || (derived == next_seq && derived_hash != last_hash) {
                return Err(ahead(&chain, derived, next_seq));
            }
            let tree_covered = self
                .tree_files
                .covered(&chain, derived)
                .map_err(io_error(&self.tree_files.chain_dir(&chain)))?;
            let from = derived.min(tree_covered);
            if from < next_seq {
                tracing::info!(
                    chain = %chain,
                    "deriving indexes for seq {from}..{next_seq} from the segments"
                );
                jobs.push((chain, from));
            }
        }
        self.derive(&jobs)?;
        self.settle_landed_staged()?;
        Ok(())
    }

    /// Derives the indexes of each (chain, from seq) to its head.
    ///
    /// Reading is most of the work (each frame read, decompressed and
    /// every entry's hash checked, each entry decoded), and chains are
    /// independent: up to [`DERIVE_READERS`] threads read chains and hand
    /// over, chunk by chunk, what the indexes take from the entries; this
    /// thread writes it (tree, event ids, sled) in each chain's order.
    fn derive(&mut self, jobs: &[(String, u64)]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut ranges = Vec::with_capacity(jobs.len());
        for (chain, from) in jobs {
            // Nothing past `from` is kept: it may be of another history (a
            // chain set aside) or torn.
            self.tree_files
                .truncate(chain, *from)
                .map_err(io_error(&self.tree_files.chain_dir(chain)))?;
            ranges.push(CompactRange::of(&StoredTree::new(self, chain), *from)?);
        }
        let snapshot = self.evidence.clone();
        let next_job = std::sync::atomic::AtomicUsize::new(0);
        let derived = std::thread::scope(|scope| {
            let (to_writer, read) = std::sync::mpsc::sync_channel(4);
            for _ in 0..jobs.len().min(DERIVE_READERS) {
                let to_writer = to_writer.clone();
                let (snapshot, next_job) = (&snapshot, &next_job);
                scope.spawn(move || {
                    loop {
                        let job = next_job.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((chain, from)) = jobs.get(job) else {
                            return;
                        };
                        if !read_chain(snapshot, chain, *from, job, &to_writer) {
                            return;
                        }
                    }
                });
            }
            drop(to_writer);
            let mut result = Ok(());
            while let Ok((job, chunk)) = read.recv() {
                let applied = chunk.and_then(|chunk| {
                    let (chain, range) = (&jobs[job].0, &mut ranges[job]);
                    self.write_derived(chain, range, chunk)
                });
                if let Err(e) = applied {
                    result = Err(e);
                    break;
                }
            }
            // Readers still sending stop at their next chunk.
            drop(read);
            result
        });
        self.db.flush()?;
        derived?;
        for ((chain, _), range) in jobs.iter().zip(ranges) {
            self.frontiers.insert(chain.clone(), range);
        }
        Ok(())
    }

    /// Writes what was read from one chunk of a chain's entries.
    fn write_derived(
        &mut self,
        chain: &str,
        range: &mut CompactRange,
        chunk: ReadChunk,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for frame in chunk.frames {
            batch.insert(
                layout::frame_key(chain, frame.first_seq),
                layout::encode_frame_position(frame.segment, frame.offset),
            );
        }
        for (key, seq) in &chunk.rejections {
            batch.insert(
                layout::rejection_index_key(key),
                layout::encode_location(chain, *seq),
            );
        }
        let mut subtrees = Vec::new();
        for entry in &chunk.entries {
            self.index_event_id_in_pass(chain, entry.seq, entry.event_id.as_deref())?;
            push_leaf(range, entry.leaf, &mut subtrees);
        }
        self.store_subtrees(chain, &subtrees)?;
        if let Some((seq, hash)) = chunk.last {
            batch.insert(layout::head_key(chain), layout::encode_head(seq + 1, &hash));
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Indexes the event id (if any) of an entry met while deriving the
    /// other indexes, when the event-id index is open and has reached
    /// exactly this entry (a rebuild): one read of the segments, not two.
    fn index_event_id_in_pass(
        &mut self,
        chain: &str,
        seq: u64,
        event_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let at_this_entry = self
            .event_ids
            .as_ref()
            .is_some_and(|ids| ids.indexed(chain) == seq);
        if !at_this_entry {
            return Ok(());
        }
        if let Some(ids) = self.event_ids.as_mut().filter(|ids| ids.is_gathering()) {
            // A rebuild: every id is sorted at the end instead.
            if let Some(id) = event_id {
                ids.gather(id, chain, seq)?;
            }
            ids.advance(chain, seq + 1);
            return Ok(());
        }
        // An id recorded before (a chain taken over from an archive may
        // repeat one) keeps its first location.
        let new_id = match event_id {
            Some(id) if self.seen_event(id)?.is_none() => Some(id),
            _ => None,
        };
        if let Some(ids) = self.event_ids.as_mut() {
            if let Some(id) = new_id {
                ids.insert(id, chain, seq)?;
            }
            ids.advance(chain, seq + 1);
            ids.save_if_due()?;
        }
        Ok(())
    }

    /// Drops every index and derives them again from the evidence.
    ///
    /// A marker is made durable first, and removed last: a rebuild cut
    /// short (a crash, a kill) is finished by the next open, so that no
    /// index is ever half dropped and taken as whole. The keys go in
    /// batches of [`DROP_CHUNK`]: one batch of every key of a large ledger
    /// held gigabytes.
    pub fn rebuild_indexes(&mut self) -> Result<(), StoreError> {
        self.db.insert(layout::REBUILDING_KEY, &[][..])?;
        self.db.flush()?;
        // The heads first: from here every chain derives from seq 0.
        self.drop_prefixes(&[b"H", b"X", b"I", b"R", b"N", b"F"])?;
        self.tree_files
            .remove_all()
            .map_err(io_error(self.tree_files.dir()))?;
        // The event-id index, emptied, is open while the others are
        // derived, so that its ids are gathered in the same pass, and
        // written sorted at its end.
        self.event_ids = None;
        let mut ids = self.open_event_ids()?;
        ids.start_gathering()?;
        self.event_ids = Some(ids);
        self.frontiers.clear();
        let derived = self.catch_up_derived();
        // Even after a failure: what was gathered is consistent with how
        // far each chain's ids go.
        let gathered = match self.event_ids.as_mut() {
            Some(ids) => ids.finish_gathering(),
            None => Ok(()),
        };
        derived?;
        gathered?;
        self.load_event_index()?;
        if let Some(ids) = self.event_ids.as_mut() {
            ids.save()?;
        }
        self.db.remove(layout::REBUILDING_KEY)?;
        self.make_durable()
    }

    /// Drops the event-id records an older release kept in the index
    /// (`X`, `I`): the ids now have runs of their own (`event_ids`).
    pub(super) fn drop_event_ids_kept_in_sled(&mut self) -> Result<(), StoreError> {
        self.drop_prefixes(&[b"X", b"I"])
    }

    /// Drops the Merkle subtrees an older release kept in the index
    /// (`N`): they now have files of their own (`tree_files`), which the
    /// next derivation writes from the segments.
    pub(super) fn drop_subtrees_kept_in_sled(&mut self) -> Result<(), StoreError> {
        self.drop_prefixes(&[b"N"])
    }

    /// Removes every key under these prefixes, in batches of
    /// [`DROP_CHUNK`].
    fn drop_prefixes(&self, prefixes: &[&[u8]]) -> Result<(), StoreError> {
        for prefix in prefixes {
            loop {
                let mut batch = sled::Batch::default();
                let mut dropped = 0;
                for item in self.db.scan_prefix(prefix).keys().take(DROP_CHUNK) {
                    batch.remove(item?);
                    dropped += 1;
                }
                if dropped == 0 {
                    break;
                }
                self.db.apply_batch(batch)?;
            }
        }
        Ok(())
    }

    /// Finishes a rebuild of the indexes that was cut short.
    pub(super) fn finish_cut_rebuild(&mut self) -> Result<(), StoreError> {
        if self.db.contains_key(layout::REBUILDING_KEY)? {
            tracing::warn!("a rebuild of the indexes was cut short: rebuilding them");
            self.rebuild_indexes()?;
        }
        Ok(())
    }
}

/// Index keys dropped per sled batch by a rebuild.
const DROP_CHUNK: usize = 50_000;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::super::test_events::{event, incoming};
    use super::*;
    use crate::{Incoming, LedgerOptions};

    /// Every derived key but the event index records (whose numbering
    /// follows the appends that wrote them), with its value.
    fn derived_keys(ledger: &Ledger) -> Vec<(Vec<u8>, Vec<u8>)> {
        [&b"H"[..], b"I", b"R", b"N", b"F"]
            .iter()
            .flat_map(|p| ledger.db.scan_prefix(p))
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }

    #[test]
    fn a_rebuild_cut_short_is_finished_by_the_next_open() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
        for batch in 0..6u64 {
            let mut inputs: Vec<Incoming> = (batch * 500..(batch + 1) * 500)
                .map(|i| incoming(i, event(i)))
                .collect();
            inputs.push(incoming(9_000 + batch, b"not json".to_vec()));
            ledger
                .append("file", inputs, jiff::Timestamp::now())
                .unwrap();
        }
        let before = derived_keys(&ledger);
        // A key the rebuild was to drop (say, of a damaged index): a
        // rejection the evidence does not hold.
        let stale = layout::rejection_index_key(&[7; 32]);
        ledger
            .db
            .insert(&stale, layout::encode_location("file", 1))
            .unwrap();
        // Cut short after the marker and part of the keys went.
        ledger.db.insert(layout::REBUILDING_KEY, &[][..]).unwrap();
        let mut batch = sled::Batch::default();
        for prefix in [&b"H"[..], b"X", b"N"] {
            for key in ledger.db.scan_prefix(prefix).keys().step_by(2) {
                batch.remove(key.unwrap());
            }
        }
        ledger.db.apply_batch(batch).unwrap();
        ledger.db.flush().unwrap();
        drop(ledger);

        let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
        assert!(!ledger.db.contains_key(layout::REBUILDING_KEY).unwrap());
        assert!(!ledger.db.contains_key(&stale).unwrap());
        assert_eq!(derived_keys(&ledger), before);
        for i in 0..3_000 {
            let seen = ledger.seen_event(&format!("e{i}")).unwrap().unwrap();
            assert_eq!((seen.chain.as_str(), seen.seq), ("file", i + i / 500));
        }
        // The rebuilt index still tells a resend from a new event.
        let reports = ledger
            .append(
                "file",
                vec![incoming(1, event(1)), incoming(3_000, event(3_000))],
                jiff::Timestamp::now(),
            )
            .unwrap();
        assert_eq!(ledger.head("file").unwrap().next_seq, 3_007, "{reports:?}");
    }
}
