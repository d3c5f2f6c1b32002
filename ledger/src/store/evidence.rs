//! Writing the evidence: segment frames, sealing, the manifest.
//!
//! One append writes a frame to each touched chain's open segment, fsyncs
//! those files (and any directory that gained a file), seals segments that
//! reached their size, and then replaces the manifest atomically (write a
//! temporary file, fsync it, rename it over `manifest`, fsync the
//! directory). Only the manifest's rename acknowledges the append: a crash
//! before it leaves bytes past an acknowledged length, which the next
//! writer drops; a crash after it loses nothing.
//!
//! Only one writer may work on a directory at a time; the ledger holds
//! the index database's lock while it has an `EvidenceWriter`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::manifest::{ChainState, Manifest, OpenSegment, SealedSegment};
use super::segment;
use super::snapshot::{self, FramePosition, MANIFEST, SEGMENTS, Snapshot};
use super::{StoreError, io_error};
use crate::chain::SealedEntry;

/// The name `own_records::write_durably` gives the manifest while writing it.
const MANIFEST_TMP: &str = "manifest.tmp";

/// A frame holds entries up to this many bytes (at least one entry).
const FRAME_BYTES: usize = 256 * 1024;

/// Splits an append's entries into frames of at most [`FRAME_BYTES`].
fn frame_groups(entries: &[SealedEntry]) -> Vec<&[SealedEntry]> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, entry) in entries.iter().enumerate() {
        if i > start && bytes + entry.encoding.len() > FRAME_BYTES {
            groups.push(&entries[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += entry.encoding.len();
    }
    if start < entries.len() {
        groups.push(&entries[start..]);
    }
    groups
}

/// One chain's part of an append.
#[derive(Debug)]
pub struct ChainWrite<'a> {
    pub chain: &'a str,
    pub entries: &'a [SealedEntry],
    /// The input cursor after these entries, if the source has one.
    pub cursor: Option<i64>,
}

/// The single writer of a ledger directory's evidence.
#[derive(Debug)]
pub struct EvidenceWriter {
    dir: PathBuf,
    /// Open segment files, by chain.
    files: HashMap<String, File>,
    segment_max_bytes: u64,
    compress: bool,
}

/// fsyncs a directory (after a file in it was created or renamed).
pub(super) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| StoreError::Sync {
            path: path.to_owned(),
            source,
        })
}

/// Writes `manifest` durably and atomically in `dir`.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), StoreError> {
    super::own_records::write_durably(&dir.join(MANIFEST), &manifest.encode())
}

impl EvidenceWriter {
    /// Creates the evidence of a new, empty ledger in `dir`.
    pub fn create(dir: &Path) -> Result<Snapshot, StoreError> {
        fs::create_dir_all(dir.join(SEGMENTS)).map_err(io_error(dir))?;
        sync_dir(dir)?;
        let manifest = Manifest::default();
        write_manifest(dir, &manifest)?;
        Ok(Snapshot::of(dir.to_owned(), manifest))
    }

    /// Takes over the evidence of `dir` as its one writer: finishes what a
    /// writer that stopped left half done (a temporary manifest, a segment
    /// sealed but not renamed), drops bytes past each acknowledged length,
    /// and refuses if any acknowledged byte is missing.
    pub fn recover(
        dir: &Path,
        segment_max_bytes: u64,
        compress: bool,
    ) -> Result<(EvidenceWriter, Snapshot), StoreError> {
        let tmp = dir.join(MANIFEST_TMP);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io_error(&tmp))?;
        }
        let snapshot = Snapshot::open(dir)?;
        let mut writer = EvidenceWriter {
            dir: dir.to_owned(),
            files: HashMap::new(),
            segment_max_bytes,
            compress,
        };
        for (chain, state) in &snapshot.manifest().chains {
            let chain_dir = snapshot.chain_dir(chain);
            for s in &state.sealed {
                let sealed = chain_dir.join(segment::sealed_name(s.first_seq, s.next_seq, &s.hash));
                let open = chain_dir.join(segment::open_name(s.first_seq));
                if !sealed.exists() && open.exists() {
                    fs::rename(&open, &sealed).map_err(io_error(&open))?;
                    sync_dir(&chain_dir)?;
                }
                // A cheap look at every sealed file (its size, not its
                // hash: `verify` reads them): no append on top of a hole.
                let len = fs::metadata(&sealed).map(|m| m.len());
                if len.as_ref().ok() != Some(&s.bytes) {
                    return Err(StoreError::Broken {
                        chain: chain.clone(),
                        seq: s.first_seq,
                        detail: format!(
                            "sealed segment {} is missing or not {} bytes long; run `lifeledger verify`",
                            sealed.display(),
                            s.bytes
                        ),
                    });
                }
            }
            if let Some(open) = state.open {
                let path = chain_dir.join(segment::open_name(open.first_seq));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|source| StoreError::Broken {
                        chain: chain.clone(),
                        seq: open.first_seq,
                        detail: format!(
                            "the open segment {} cannot be opened ({source}); the ledger acknowledged entries up to seq {}",
                            path.display(),
                            state.next_seq
                        ),
                    })?;
                let len = file.metadata().map_err(io_error(&path))?.len();
                if len < open.bytes {
                    return Err(StoreError::Broken {
                        chain: chain.clone(),
                        seq: open.first_seq,
                        detail: format!(
                            "the open segment {} holds {len} bytes, the manifest acknowledged {}: acknowledged entries are missing; run `lifeledger verify`",
                            path.display(),
                            open.bytes
                        ),
                    });
                }
                if len > open.bytes {
                    tracing::warn!(
                        chain = %chain,
                        "dropping {} unacknowledged bytes past the acknowledged end of {}",
                        len - open.bytes,
                        path.display()
                    );
                    file.set_len(open.bytes).map_err(io_error(&path))?;
                    file.sync_all().map_err(|source| StoreError::Sync {
                        path: path.clone(),
                        source,
                    })?;
                }
                writer.files.insert(chain.clone(), file);
            }
        }
        Ok((writer, snapshot))
    }

    /// Writes the entries and cursors of one append, durably, and returns
    /// the manifest that acknowledges them (already written) and where
    /// each new frame starts.
    pub fn append(
        &mut self,
        current: &Manifest,
        writes: &[ChainWrite<'_>],
    ) -> Result<(Manifest, Vec<(String, FramePosition)>), StoreError> {
        let mut manifest = current.clone();
        let mut frames = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        let mut new_dirs: HashSet<PathBuf> = HashSet::new();
        let mut to_seal: Vec<String> = Vec::new();
        for write in writes {
            let state = manifest
                .chains
                .entry(write.chain.to_owned())
                .or_insert_with(ChainState::empty);
            if let Some(cursor) = write.cursor {
                state.cursor = Some(cursor);
            }
            let (Some(first), Some(last)) = (write.entries.first(), write.entries.last()) else {
                continue;
            };
            if first.seq != state.next_seq {
                return Err(StoreError::TailMismatch {
                    chain: write.chain.to_owned(),
                    detail: format!(
                        "appending seq {} to a chain whose head is at {}",
                        first.seq, state.next_seq
                    ),
                });
            }
            let chain_dir = self
                .dir
                .join(SEGMENTS)
                .join(segment::chain_dir_name(write.chain));
            let open = match state.open {
                Some(open) => open,
                None => {
                    if !chain_dir.is_dir() {
                        fs::create_dir_all(&chain_dir).map_err(io_error(&chain_dir))?;
                        new_dirs.insert(self.dir.join(SEGMENTS));
                    }
                    let path = chain_dir.join(segment::open_name(first.seq));
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&path)
                        .map_err(io_error(&path))?;
                    let header = segment::encode_header(write.chain, first.seq);
                    file.write_all_at(&header, 0).map_err(io_error(&path))?;
                    new_dirs.insert(chain_dir.clone());
                    self.files.insert(write.chain.to_owned(), file);
                    OpenSegment {
                        first_seq: first.seq,
                        bytes: header.len() as u64,
                    }
                }
            };
            let file = self
                .files
                .get(write.chain)
                .ok_or_else(|| StoreError::Broken {
                    chain: write.chain.to_owned(),
                    seq: first.seq,
                    detail: "the open segment is not open".to_owned(),
                })?;
            let path = chain_dir.join(segment::open_name(open.first_seq));
            // Frames of at most FRAME_BYTES of entries: reading one entry
            // (a proof, an index hit) decompresses one frame, not a batch.
            let mut at = open.bytes;
            for group in frame_groups(write.entries) {
                let frame = segment::encode_frame(
                    group[0].seq,
                    group.iter().map(|e| (&e.hash, e.encoding.as_slice())),
                    self.compress,
                );
                file.write_all_at(&frame, at).map_err(io_error(&path))?;
                frames.push((
                    write.chain.to_owned(),
                    FramePosition {
                        first_seq: group[0].seq,
                        segment: open.first_seq,
                        offset: at,
                    },
                ));
                at += frame.len() as u64;
            }
            let bytes = at;
            state.open = Some(OpenSegment {
                first_seq: open.first_seq,
                bytes,
            });
            state.next_seq = last.seq + 1;
            state.last_hash = last.hash;
            touched.push(write.chain.to_owned());
            if bytes >= self.segment_max_bytes {
                to_seal.push(write.chain.to_owned());
            }
        }
        if manifest == *current {
            return Ok((manifest, frames));
        }
        for chain in &touched {
            if let Some(file) = self.files.get(chain) {
                file.sync_data().map_err(|source| StoreError::Sync {
                    path: self.dir.join(SEGMENTS).join(segment::chain_dir_name(chain)),
                    source,
                })?;
            }
        }
        for dir in &new_dirs {
            sync_dir(dir)?;
        }
        let mut renames = Vec::new();
        for chain in to_seal {
            renames.push(self.seal(&mut manifest, &chain)?);
        }
        self.acknowledge(&mut manifest, renames)?;
        Ok((manifest, frames))
    }

    /// Writes the next generation of the manifest, then gives the segments
    /// it lists as sealed their sealed names. The manifest names the sealed
    /// files first: a crash before these renames leaves them under their
    /// open names, which readers also try and the next writer completes.
    fn acknowledge(
        &self,
        manifest: &mut Manifest,
        renames: Vec<(PathBuf, PathBuf)>,
    ) -> Result<(), StoreError> {
        manifest.generation += 1;
        write_manifest(&self.dir, manifest)?;
        for (from, to) in renames {
            fs::rename(&from, &to).map_err(io_error(&from))?;
            if let Some(parent) = to.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// Closes a chain's open segment file (its segment was dropped or
    /// replaced outside `append`).
    pub fn forget_open(&mut self, chain: &str) {
        self.files.remove(chain);
    }

    /// Seals the open segments of these chains (those that have one) and
    /// writes the manifest that says so; returns it. Used to bound how
    /// long entries wait for the archive, which takes sealed segments only.
    pub fn seal_chains(
        &mut self,
        current: &Manifest,
        chains: &[String],
    ) -> Result<Manifest, StoreError> {
        let mut manifest = current.clone();
        let mut renames = Vec::new();
        for chain in chains {
            let has_entries = manifest
                .chains
                .get(chain)
                .and_then(|state| state.open.map(|open| state.next_seq > open.first_seq))
                .unwrap_or(false);
            if has_entries {
                renames.push(self.seal(&mut manifest, chain)?);
            }
        }
        if renames.is_empty() {
            return Ok(manifest);
        }
        self.acknowledge(&mut manifest, renames)?;
        Ok(manifest)
    }

    /// Turns a chain's open segment into a sealed one in `manifest`; returns
    /// the rename to make once the manifest is written.
    fn seal(
        &mut self,
        manifest: &mut Manifest,
        chain: &str,
    ) -> Result<(PathBuf, PathBuf), StoreError> {
        let chain_dir = self.dir.join(SEGMENTS).join(segment::chain_dir_name(chain));
        let state = manifest
            .chains
            .get_mut(chain)
            .ok_or_else(|| StoreError::Broken {
                chain: chain.to_owned(),
                seq: 0,
                detail: "sealing a chain the manifest does not hold".to_owned(),
            })?;
        let Some(open) = state.open.take() else {
            return Err(StoreError::Broken {
                chain: chain.to_owned(),
                seq: state.next_seq,
                detail: "sealing a chain with no open segment".to_owned(),
            });
        };
        let from = chain_dir.join(segment::open_name(open.first_seq));
        let (len, hash) = snapshot::hash_file(&from).map_err(io_error(&from))?;
        if len != open.bytes {
            return Err(StoreError::Broken {
                chain: chain.to_owned(),
                seq: open.first_seq,
                detail: format!(
                    "open segment holds {len} bytes while sealing, {} written",
                    open.bytes
                ),
            });
        }
        state.sealed.push(SealedSegment {
            first_seq: open.first_seq,
            next_seq: state.next_seq,
            bytes: len,
            hash,
        });
        self.files.remove(chain);
        let to = chain_dir.join(segment::sealed_name(open.first_seq, state.next_seq, &hash));
        Ok((from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryHash;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn frames_keep_every_entry_in_order_and_stay_under_the_cap(
            sizes in proptest::collection::vec(1usize..400_000, 0..40),
        ) {
            let entries: Vec<SealedEntry> = sizes
                .iter()
                .enumerate()
                .map(|(i, n)| SealedEntry { seq: i as u64, hash: EntryHash([0; 32]), encoding: vec![0; *n] })
                .collect();
            let groups = frame_groups(&entries);
            let seqs: Vec<u64> = groups.iter().flat_map(|g| g.iter().map(|e| e.seq)).collect();
            prop_assert_eq!(seqs, (0..entries.len() as u64).collect::<Vec<_>>());
            for g in &groups {
                prop_assert!(!g.is_empty());
                let bytes: usize = g.iter().map(|e| e.encoding.len()).sum();
                prop_assert!(g.len() == 1 || bytes <= FRAME_BYTES, "{} entries, {} bytes", g.len(), bytes);
            }
        }
    }
}
