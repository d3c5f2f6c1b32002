//! The staged batches' file: `DIR/staged/journal`, an append-only run of
//! records, each a staged batch or the removal of a chain's batch.
//!
//! Why a file of its own rather than the index database: a write stages a
//! batch per chain, a megabyte or more in all, and the whole of it must be
//! durable before the hold that acknowledges it. In sled each chain's batch
//! became a blob file of its own (values over 128 KiB), and making a write
//! durable meant an fsync of every file of the index and of each new blob:
//! a dozen fsyncs per write. Here a write is one `pwrite` of its records
//! and one `fdatasync`.
//!
//! Record: u32 BE body length, the first 16 bytes of the body's BLAKE3
//! hash, the body. Body: tag u8 (1 staged, 2 removed), chain (u16 BE
//! length + UTF-8), and for 1 the batch (see `staged.rs`). The last record
//! of a chain says what is staged for it. Reading stops at the first
//! record that is cut short or whose hash does not match: only the last
//! write can be torn, and a write not wholly durable was never
//! acknowledged (staging returns after its `fdatasync`). The writer cuts
//! the file off where the good records end, and syncs that, before it
//! writes again.
//!
//! Removals need not be durable at once: a batch found again on open whose
//! chain's cursor reaches its end was appended (the ledger drops it), and
//! one that was not is decided again by its source. When the file passes
//! [`COMPACT_AT`] it is rewritten with what is still staged (a new file,
//! synced, renamed over the old one, the directory synced).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::evidence::sync_dir;
use super::staged::{StagedBatch, decode_batch, encode_batch};
use super::{StoreError, io_error};

/// The directory, inside a ledger directory.
pub const STAGED_DIR: &str = "staged";
const JOURNAL: &str = "journal";
const REWRITING: &str = "journal.new";
/// Past this length the file is rewritten with what is still staged
/// (smaller in this crate's tests, so that they reach it).
#[cfg(not(test))]
pub(super) const COMPACT_AT: u64 = 16 << 20;
#[cfg(test)]
pub(super) const COMPACT_AT: u64 = 1 << 20;
const HEADER: usize = 4 + 16;
const STAGED: u8 = 1;
const REMOVED: u8 = 2;

/// What is staged, per chain, as the journal says.
pub type Live = BTreeMap<String, StagedBatch>;

/// The writer's journal: what is staged, and the file it appends to.
#[derive(Debug)]
pub struct StagedJournal {
    dir: PathBuf,
    file: File,
    /// Where the good records end: the next write goes here.
    len: u64,
    live: Live,
}

/// Appends one record to `out`; refuses a body its length field cannot
/// say (over 4 GiB), which would otherwise read back as a torn tail.
fn record(
    out: &mut Vec<u8>,
    tag: u8,
    chain: &str,
    batch: Option<&StagedBatch>,
) -> Result<(), StoreError> {
    let mut body = Vec::with_capacity(3 + chain.len() + batch.map_or(0, |b| 64 + b.raw_len()));
    body.push(tag);
    let name = u16::try_from(chain.len()).unwrap_or(u16::MAX);
    body.extend_from_slice(&name.to_be_bytes());
    body.extend_from_slice(&chain.as_bytes()[..usize::from(name)]);
    if let Some(b) = batch {
        encode_batch(&mut body, b);
    }
    let len = u32::try_from(body.len()).map_err(|_| StoreError::StagedTooLarge {
        chain: chain.to_owned(),
        bytes: body.len(),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&blake3::hash(&body).as_bytes()[..16]);
    out.extend_from_slice(&body);
    Ok(())
}

/// Reads the good records of a journal's bytes into what is staged;
/// returns it with where the good records end.
pub(super) fn read_records(bytes: &[u8], path: &Path) -> Result<(Live, u64), StoreError> {
    let mut live = Live::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[at..at + 4]);
        let len = u32::from_be_bytes(len) as usize;
        let Some(body) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if blake3::hash(body).as_bytes()[..16] != bytes[at + 4..at + HEADER] {
            break;
        }
        let damaged = |detail: &str| StoreError::Damaged {
            key: format!("{}@{at}", path.display()),
            detail: detail.to_owned(),
        };
        let (&tag, rest) = body.split_first().ok_or_else(|| damaged("empty record"))?;
        let name_len = rest
            .get(..2)
            .map(|n| usize::from(u16::from_be_bytes([n[0], n[1]])))
            .ok_or_else(|| damaged("record cut short"))?;
        let chain = rest
            .get(2..2 + name_len)
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| damaged("chain name is not UTF-8"))?
            .to_owned();
        let rest = &rest[2 + name_len..];
        match tag {
            STAGED => {
                let batch = decode_batch(&chain, rest)
                    .ok_or_else(|| damaged("staged batch does not decode"))?;
                live.insert(chain, batch);
            }
            REMOVED => {
                live.remove(&chain);
            }
            _ => return Err(damaged("unknown record tag")),
        }
        at += HEADER + len;
    }
    Ok((live, at as u64))
}

/// What is staged in the ledger directory `dir`, for a reader (nothing
/// is written).
pub fn read_staged(dir: &Path) -> Result<Live, StoreError> {
    let path = dir.join(STAGED_DIR).join(JOURNAL);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(read_records(&bytes, &path)?.0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Live::new()),
        Err(e) => Err(io_error(&path)(e)),
    }
}

impl StagedJournal {
    /// Opens (creating) the journal of the ledger directory `dir`, for
    /// the one writer.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let staged_dir = dir.join(STAGED_DIR);
        if !staged_dir.is_dir() {
            std::fs::create_dir_all(&staged_dir).map_err(io_error(&staged_dir))?;
            sync_dir(dir)?;
        }
        // A rewrite cut short before its rename left the old file whole.
        let _ = std::fs::remove_file(staged_dir.join(REWRITING));
        let path = staged_dir.join(JOURNAL);
        let existed = path.is_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(&path))?;
        if !existed {
            sync_dir(&staged_dir)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_error(&path))?;
        let (live, len) = read_records(&bytes, &path)?;
        if len < bytes.len() as u64 {
            tracing::warn!(
                "{}: {} bytes after offset {len} are not whole records (a write cut short by a crash, never acknowledged): cut off",
                path.display(),
                bytes.len() as u64 - len
            );
            // Cut off and synced before anything is written after the good
            // records: whole records of the cut write must never show up
            // again behind a later, shorter write.
            file.set_len(len).map_err(io_error(&path))?;
            file.sync_all().map_err(|source| StoreError::Sync {
                path: path.clone(),
                source,
            })?;
        }
        Ok(StagedJournal {
            dir: staged_dir,
            file,
            len,
            live,
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    /// What is staged, per chain.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Makes these batches durable (one write, one `fdatasync`), each
    /// replacing what was staged for its chain.
    pub fn stage(&mut self, batches: Vec<StagedBatch>) -> Result<(), StoreError> {
        let mut out = Vec::with_capacity(batches.iter().map(|b| 96 + b.raw_len()).sum());
        for b in &batches {
            record(&mut out, STAGED, &b.chain, Some(b))?;
        }
        self.write(&out, true)?;
        for b in batches {
            self.live.insert(b.chain.clone(), b);
        }
        self.compact_if_long()
    }

    /// Writes the removal of these chains' batches (appended, or
    /// dropped), taking any still in memory out; `durable`: synced before
    /// this returns.
    pub fn remove(&mut self, chains: &[String], durable: bool) -> Result<(), StoreError> {
        if chains.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        for chain in chains {
            self.live.remove(chain);
            record(&mut out, REMOVED, chain, None)?;
        }
        self.write(&out, durable)?;
        self.compact_if_long()
    }

    /// Takes a chain's batch out of memory only, to be appended: its
    /// removal is written by [`StagedJournal::remove`] once the append is
    /// acknowledged ([`StagedJournal::reload`] puts it back if it fails).
    pub fn take(&mut self, chain: &str) -> Option<StagedBatch> {
        self.live.remove(chain)
    }

    /// Reads what is staged from the file again (after a failed append
    /// took batches out of memory).
    pub fn reload(&mut self) -> Result<(), StoreError> {
        let path = self.path();
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        (self.live, self.len) = read_records(&bytes, &path)?;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
        let path = self.path();
        self.file
            .write_all_at(bytes, self.len)
            .map_err(io_error(&path))?;
        if durable {
            self.file.sync_data().map_err(|source| StoreError::Sync {
                path: path.clone(),
                source,
            })?;
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Rewrites the file with what is staged, once it has grown past
    /// [`COMPACT_AT`].
    fn compact_if_long(&mut self) -> Result<(), StoreError> {
        if self.len < COMPACT_AT {
            return Ok(());
        }
        let mut out = Vec::new();
        for b in self.live.values() {
            record(&mut out, STAGED, &b.chain, Some(b))?;
        }
        let new = self.dir.join(REWRITING);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&new)
            .map_err(io_error(&new))?;
        file.write_all_at(&out, 0).map_err(io_error(&new))?;
        file.sync_data().map_err(|source| StoreError::Sync {
            path: new.clone(),
            source,
        })?;
        let path = self.path();
        std::fs::rename(&new, &path).map_err(io_error(&path))?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.len = out.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Source;
    use crate::intake::Incoming;
    use proptest::prelude::*;

    fn batch(chain: u8, token: u8, inputs: u8) -> StagedBatch {
        StagedBatch {
            chain: format!("kafka:t:{chain}"),
            token: format!("t{token}"),
            first_offset: 0,
            next_offset: i64::from(inputs),
            inputs: (0..inputs)
                .map(|i| Incoming {
                    source: Source::Kafka {
                        topic: "t".into(),
                        partition: i32::from(chain),
                        offset: i64::from(i),
                    },
                    raw: vec![token; usize::from(i)],
                })
                .collect(),
        }
    }

    /// Whole records of a write cut short never come back behind a later
    /// write of the same length: the writer cuts them off first.
    #[test]
    fn records_of_a_cut_write_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let kept = batch(0, 1, 3);
        let next = batch(1, 2, 2);
        StagedJournal::open(dir.path())
            .unwrap()
            .stage(vec![kept.clone()])
            .unwrap();
        // The cut write: as long as the next one, unreadable, then a whole
        // record removing the next one's chain.
        let mut next_bytes = Vec::new();
        record(&mut next_bytes, STAGED, &next.chain, Some(&next)).unwrap();
        let mut cut = vec![0u8; next_bytes.len()];
        record(&mut cut, REMOVED, &next.chain, None).unwrap();
        let path = dir.path().join(STAGED_DIR).join(JOURNAL);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, &cut).unwrap();
        drop(file);
        let mut journal = StagedJournal::open(dir.path()).unwrap();
        assert_eq!(journal.live().len(), 1);
        journal.stage(vec![next.clone()]).unwrap();
        drop(journal);
        let journal = StagedJournal::open(dir.path()).unwrap();
        let live: Vec<&StagedBatch> = journal.live().values().collect();
        assert_eq!(live, vec![&kept, &next]);
    }

    proptest! {
        /// Any cut of a journal reads as the whole records before it:
        /// what they stage and remove, ending where the last whole one
        /// ends.
        #[test]
        fn a_cut_journal_reads_as_its_whole_records(
            ops in proptest::collection::vec((0u8..3, any::<bool>(), any::<u8>(), 0u8..5), 1..12),
        ) {
            let path = Path::new("journal");
            let mut bytes = Vec::new();
            // (end of the record, what is staged after it)
            let mut states = vec![(0usize, Live::new())];
            for (chain, stage, token, inputs) in ops {
                let mut live = states.last().map(|(_, l)| l.clone()).unwrap_or_default();
                if stage {
                    let b = batch(chain, token, inputs);
                    record(&mut bytes, STAGED, &b.chain, Some(&b)).unwrap();
                    live.insert(b.chain.clone(), b);
                } else {
                    let name = format!("kafka:t:{chain}");
                    record(&mut bytes, REMOVED, &name, None).unwrap();
                    live.remove(&name);
                }
                states.push((bytes.len(), live));
            }
            for cut in 0..=bytes.len() {
                let (end, live) = states.iter().rev().find(|(end, _)| *end <= cut).unwrap();
                let (read, len) = read_records(&bytes[..cut], path).unwrap();
                prop_assert_eq!(&read, live);
                prop_assert_eq!(len, *end as u64);
            }
        }
    }
}
