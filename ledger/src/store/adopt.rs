//! Taking a chain's continuation from elsewhere (the archive): sealed
//! segments written by another ledger that extend this ledger's chain from
//! its head. Each is read whole and every record checked (hash, chain,
//! seq, link to the one before) before any byte is written; then the files
//! go in as sealed segments and one manifest acknowledges them all.

use super::manifest::SealedSegment;
use super::{Ledger, Snapshot, StoreError, evidence, own_records, segment};
use crate::entry::{EntryHash, EntryView, SourceView};

impl Ledger {
    /// Appends whole sealed segments (their bytes, in seq order) to
    /// `chain`, which must have no entries past its last sealed segment.
    /// The chain's cursor becomes the offset after the last entry's Kafka
    /// offset (or stays as it was for other sources). Returns the chain's
    /// new size.
    pub fn adopt_segments(&mut self, chain: &str, segments: &[Vec<u8>]) -> Result<u64, StoreError> {
        self.writable()?;
        let broken = |seq: u64, detail: String| StoreError::Broken {
            chain: chain.to_owned(),
            seq,
            detail,
        };
        let mut manifest = self.evidence.manifest().clone();
        let mut state = manifest
            .chains
            .get(chain)
            .cloned()
            .unwrap_or_else(super::manifest::ChainState::empty);
        if let Some(open) = state.open {
            if state.next_seq > open.first_seq {
                return Err(broken(
                    open.first_seq,
                    "entries past the last sealed segment: seal them before adopting a continuation"
                        .to_owned(),
                ));
            }
        }
        let chain_dir = self.evidence.chain_dir(chain);
        let mut files = Vec::new();
        let mut next_seq = state.next_seq;
        let mut last_hash = state.last_hash;
        let mut cursor = state.cursor;
        for bytes in segments {
            let (header, records) = segment::read_all(bytes)
                .map_err(|e| broken(next_seq, format!("an adopted segment: {e}")))?;
            if header.chain != chain || header.first_seq != next_seq || records.is_empty() {
                return Err(broken(
                    next_seq,
                    format!(
                        "an adopted segment holds chain {:?} from seq {} ({} entries), where this chain continues at {next_seq}",
                        header.chain,
                        header.first_seq,
                        records.len()
                    ),
                ));
            }
            let first_seq = next_seq;
            for r in &records {
                let entry = EntryView::decode(&r.encoding)
                    .map_err(|e| broken(next_seq, format!("an adopted entry: {e}")))?;
                if EntryHash::of_encoding(&r.encoding) != r.hash
                    || entry.chain != chain
                    || entry.seq != next_seq
                    || entry.prev_hash != last_hash
                {
                    return Err(broken(
                        next_seq,
                        "an adopted entry does not continue this chain (hash, chain, seq or link)"
                            .to_owned(),
                    ));
                }
                if let SourceView::Kafka { offset, .. } = entry.source {
                    cursor = offset.checked_add(1).or(cursor);
                }
                last_hash = r.hash;
                next_seq += 1;
            }
            let hash = *blake3::hash(bytes).as_bytes();
            files.push((
                chain_dir.join(segment::sealed_name(first_seq, next_seq, &hash)),
                bytes,
                SealedSegment {
                    first_seq,
                    next_seq,
                    bytes: bytes.len() as u64,
                    hash,
                },
            ));
        }
        if files.is_empty() {
            return Ok(next_seq);
        }
        if let Some(open) = state.open.take() {
            // An open segment with no entries: it is dropped, and the next
            // append opens one after the adopted ones.
            let path = chain_dir.join(segment::open_name(open.first_seq));
            let _ = std::fs::remove_file(&path);
        }
        for (path, bytes, sealed) in files {
            own_records::write_durably(&path, bytes)?;
            state.sealed.push(sealed);
        }
        state.next_seq = next_seq;
        state.last_hash = last_hash;
        state.cursor = cursor;
        manifest.chains.insert(chain.to_owned(), state);
        manifest.generation += 1;
        if let Some(writer) = self.writer.as_mut() {
            writer.forget_open(chain);
        }
        evidence::write_manifest(&self.dir, &manifest)?;
        self.evidence = Snapshot::of(self.dir.clone(), manifest);
        self.just_appended.clear();
        self.frontiers.remove(chain);
        self.catch_up_derived()?;
        Ok(next_seq)
    }
}

impl Ledger {
    /// Sets a chain aside: it leaves the manifest, its segment files move
    /// to `DIR/superseded/c-CHAIN.GENERATION/` (kept, never read as
    /// evidence again), and the indexes and the projection are derived
    /// again without it. For a chain another ledger continued first in the
    /// archive: this ledger's differing entries are not the chain of
    /// record, and the chain is then adopted from the archive. Returns
    /// where the files went.
    pub fn set_aside_chain(&mut self, chain: &str) -> Result<std::path::PathBuf, StoreError> {
        self.writable()?;
        let mut manifest = self.evidence.manifest().clone();
        if manifest.chains.remove(chain).is_none() {
            return Err(StoreError::Broken {
                chain: chain.to_owned(),
                seq: 0,
                detail: "setting aside a chain the ledger does not hold".to_owned(),
            });
        }
        manifest.generation += 1;
        let from = self.evidence.chain_dir(chain);
        let to = self.dir.join("superseded").join(format!(
            "{}.{}",
            segment::chain_dir_name(chain),
            manifest.generation
        ));
        if let Some(writer) = self.writer.as_mut() {
            writer.forget_open(chain);
        }
        // The manifest first: once it no longer names the chain, the files
        // are not evidence; a crash before the move leaves them unnamed
        // under segments/, where the next adoption replaces them.
        evidence::write_manifest(&self.dir, &manifest)?;
        self.evidence = Snapshot::of(self.dir.clone(), manifest);
        self.just_appended.clear();
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(super::io_error(parent))?;
        }
        std::fs::rename(&from, &to).map_err(super::io_error(&from))?;
        self.frontiers.remove(chain);
        self.rebuild_indexes()?;
        self.rebuild_projection(&mut |_| {})?;
        Ok(to)
    }
}
