//! The store: the edge where chains meet the disk.
//!
//! The evidence (every entry, each chain's acknowledged head and input
//! cursor) lives in segment files and a manifest that the ledger owns
//! (`evidence`, `segment`, `manifest`, `snapshot`); an append is
//! acknowledged when the manifest naming its fsynced bytes has replaced
//! the old one. sled, under `index/`, keeps only what can be derived from
//! the evidence again (the event-id and rejection indexes, Merkle
//! subtrees, the projection) and the ledger's own records (origin,
//! checkpoints, staged batches, the monitor's outbox). There is no call
//! that overwrites or removes an entry.

mod adopt;
mod checkpoints;
mod derived;
mod durability;
mod event_ids;
mod event_index;
pub(crate) mod evidence;
mod export;
mod external_sort;
mod layout;
pub(crate) mod manifest;
mod migrate;
mod monitor;
pub(crate) mod own_records;
mod projection;
mod projection_rebuild;
mod projection_store;
mod read_only;
mod recent_states;
mod replay;
pub(crate) mod segment;
mod sled_open;
pub(crate) mod snapshot;
mod staged;
mod staged_journal;
mod states;
#[cfg(test)]
mod test_events;
mod tree;
mod tree_files;
mod vouch;
mod watch_book;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use thiserror::Error;

use crate::chain::{ChainHead, SealedEntry};
use crate::entry::Entry;
use crate::intake::{self, Admission, Classified, Incoming, IntakeLimits, SeenEvent};
use crate::verify::{Depth, VerifyReport};

pub use export::{ExportScope, ExportSummary};
pub use layout::StoredRecord;
pub use manifest::{ChainState, Manifest};
pub use migrate::{MigrationReport, legacy, migrate};
pub use projection::Publication;
pub use projection_rebuild::Built;
pub use projection_store::{Appended, ProjectionStore, SavedStates};
pub use read_only::ReadOnlyLedger;
pub use replay::{Replay, Visited};
pub use snapshot::{Records, Snapshot};
pub use staged::StagedBatch;
pub use vouch::Vouched;
pub use watch_book::{Judged, Outbox, SavedBook};

/// Settings of a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerOptions {
    pub limits: IntakeLimits,
    /// A chain's open segment is sealed once it holds this many bytes.
    pub segment_max_bytes: u64,
    /// Frames are written zstd-compressed (FORMAT.md 15). Without it,
    /// damage is named at the record it touches rather than at its frame.
    pub compress_frames: bool,
    /// Items and accounts a writer's projection ([`Ledger::open_projection`])
    /// keeps in memory between saves; past this, the saved ones are
    /// dropped and read back when an entry next folds into them.
    pub projection_resident: usize,
    /// Event ids recorded in memory before they are saved as a run of the
    /// event-id index (`DIR/event-ids/`); at most this many are read again
    /// from the segments after a crash.
    pub event_ids_save_at: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            limits: IntakeLimits::default(),
            segment_max_bytes: 64 * 1024 * 1024,
            compress_frames: true,
            // About 2.6 KB each in memory: some 50 MB.
            projection_resident: 20_000,
            event_ids_save_at: event_ids::SAVE_AT,
        }
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the ledger at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("{path} holds store format {found:?}; this build reads format 1")]
    Format { path: PathBuf, found: String },
    #[error("ledger index storage failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the manifest {path} cannot be read: {detail}")]
    Manifest { path: PathBuf, detail: String },
    #[error(
        "{path} holds a ledger of the earlier store format (entries inside sled); run `lifeledger migrate --ledger {path}` to convert it"
    )]
    NeedsMigration { path: PathBuf },
    #[error("{path} is not a ledger directory (it holds {found}); refusing to read or write it")]
    Foreign { path: PathBuf, found: String },
    #[error("could not make the ledger durable: fsync of {path} failed: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "chain {chain:?}: the stored tail does not match the head ({detail}); run `lifeledger verify`"
    )]
    TailMismatch { chain: String, detail: String },
    #[error("chain name {0:?} is not allowed (1 to 200 of A-Z a-z 0-9 . _ - : /)")]
    BadChainName(String),
    #[error("stored record at {key} is damaged: {detail}")]
    Damaged { key: String, detail: String },
    #[error("the ledger refuses writes after an earlier write could not be made durable")]
    Poisoned,
    #[error(
        "the batch staged for chain {chain} is {bytes} bytes, more than a staged record holds (4 GiB): write smaller batches"
    )]
    StagedTooLarge { chain: String, bytes: usize },
    #[error(
        "the projection store was taken out of this ledger (to fold on another thread) and not put back"
    )]
    ProjectionStoreDetached,
    #[error("this ledger was opened for reading; it cannot append")]
    ReadOnly,
    #[error(
        "this reading of the ledger did not open the index database, which holds what is asked for here (staged batches, the monitor's outbox)"
    )]
    IndexesNotOpened,
    #[error("no ledger at {0} (give --ledger DIR or set LIFELEDGER_DIR)")]
    NotALedger(PathBuf),
    #[error("cannot copy the ledger at {path} for reading: {source}")]
    Copy {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a bare seq is ambiguous in a ledger with chains {0}: write CHAIN@SEQ")]
    AmbiguousSeq(String),
    #[error("chain {chain:?} seq {seq}: {detail}")]
    Broken {
        chain: String,
        seq: u64,
        detail: String,
    },
}

/// One chain's part of an [`Ledger::append_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBatch {
    pub chain: String,
    pub inputs: Vec<Incoming>,
    /// Where the chain's source resumes after these inputs, stored in the
    /// same atomic write (for Kafka: the next offset).
    pub cursor: Option<i64>,
}

/// What one append did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Entries appended: events plus rejections.
    pub appended: u64,
    pub events: u64,
    pub rejected: u64,
    /// Inputs skipped because the ledger already holds them.
    pub duplicates: u64,
    /// The chain's head after the append.
    pub next_seq: u64,
    /// Every rejection appended, in order: what a dead-letter topic needs.
    pub rejections: Vec<Rejection>,
}

/// A rejected input as appended: where it came from, the bytes kept, why,
/// and where the rejected entry sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub source: crate::entry::Source,
    pub raw: Vec<u8>,
    pub class: lifeledger_schemas::RejectClass,
    pub reason: String,
    pub seq: u64,
}

/// A read of a chain kept to confirm the next duplicate (see
/// [`Ledger::read_to_confirm`]).
#[derive(Debug)]
struct ConfirmingRead {
    chain: String,
    generation: u64,
    /// The seq the read yields next.
    next_seq: u64,
    records: Records,
}

impl ConfirmingRead {
    /// Requests this far ahead of the read are read afresh (cheaper than
    /// decoding every entry in between).
    const REACH: u64 = 4_096;

    fn follows(&self, chain: &str, generation: u64, seq: u64) -> bool {
        self.chain == chain
            && self.generation == generation
            && seq >= self.next_seq
            && seq - self.next_seq <= Self::REACH
    }
}

/// What the last append wrote to one chain, kept for a writer's
/// projection to fold next: the sealed entries and, beside each, its
/// event as intake decoded it (`None` for a rejection).
#[derive(Debug, Default)]
pub(crate) struct JustAppended {
    sealed: Vec<SealedEntry>,
    events: Vec<Option<Box<lifeledger_schemas::Event>>>,
}

/// An open ledger directory.
#[derive(Debug)]
pub struct Ledger {
    /// The index database: derived state and the ledger's own records.
    db: sled::Db,
    dir: PathBuf,
    /// The evidence as last acknowledged.
    evidence: Snapshot,
    /// Present when this ledger may append (not in a read-only copy).
    writer: Option<evidence::EvidenceWriter>,
    options: LedgerOptions,
    syncer: durability::Syncer,
    index_dir: PathBuf,
    poisoned: bool,
    /// Each chain's Merkle tree edge, once computed.
    frontiers: HashMap<String, crate::merkle::CompactRange>,
    /// Each chain's stored subtrees (`DIR/tree/`; a reader's only read).
    tree_files: tree_files::TreeFiles,
    /// Where each event id was first recorded (`DIR/event-ids/`), opened
    /// and brought up to the evidence on first use.
    event_ids: Option<event_ids::EventIds>,
    /// A reader's own directory for the event-id runs it saves (`None`:
    /// the writer's, `DIR/event-ids/`).
    event_ids_private: Option<PathBuf>,
    /// The read that confirmed the last duplicate, kept for the next one
    /// (see [`Ledger::read_to_confirm`]).
    confirming: std::sync::Mutex<Option<ConfirmingRead>>,
    /// Set only while [`Ledger::publish_policy`] appends: the one writer
    /// of chain `policy` and of `policy_published` events.
    /// The ledger's own record being written now (`publish_policy`,
    /// `declare_import`), which the intake guard lets through.
    writing: Option<crate::intake::LedgerRecord>,
    /// The entries the last append wrote, per chain: a writer's
    /// projection folds them next, and takes them from here rather than
    /// reading back (and decompressing) the frames just written.
    just_appended: HashMap<String, JustAppended>,
    /// The staged batches (`DIR/staged/`), for the writer; a reader
    /// reads the writer's file when asked.
    staged: Option<staged_journal::StagedJournal>,
    /// The projection's saved states (`DIR/projection/`, or a reader's
    /// private runs over the writer's); `None` while taken out
    /// ([`Ledger::detach_projection_store`]).
    projection_store: Option<ProjectionStore>,
    /// False for a reader that opened no index database (`db` is then
    /// empty): what only the database holds (staged batches, the
    /// monitor's outbox) refuses rather than answer from nothing.
    indexes_opened: bool,
}

/// The index database's directory inside a ledger directory.
pub const INDEX_DIR: &str = "index";

/// What a directory holds, as far as opening a ledger is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirKind {
    /// A ledger of this format.
    Ledger,
    /// Nothing yet (missing or empty): a new ledger may be made.
    Empty,
}

/// Looks at a directory before anything is opened in it: a ledger, an
/// empty place for one (only if `create`), or a refusal that says why.
fn check_ledger_dir(dir: &Path, create: bool) -> Result<DirKind, StoreError> {
    if dir.join(snapshot::MANIFEST).is_file() {
        return Ok(DirKind::Ledger);
    }
    if dir.join("conf").is_file() && dir.join("db").is_file() {
        return Err(StoreError::NeedsMigration {
            path: dir.to_owned(),
        });
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => return Ok(DirKind::Empty),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NotALedger(dir.to_owned()));
        }
        Err(source) => {
            return Err(StoreError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // What a ledger's creation leaves before its first manifest.
        let empty_dir = |p: &Path| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none());
        if (name == snapshot::SEGMENTS && empty_dir(&entry.path())) || name == "manifest.tmp" {
            continue;
        }
        found.push(name);
    }
    if found.is_empty() {
        return if create {
            Ok(DirKind::Empty)
        } else {
            Err(StoreError::NotALedger(dir.to_owned()))
        };
    }
    found.sort();
    let shown: Vec<String> = found.iter().take(5).map(|n| format!("{n:?}")).collect();
    Err(StoreError::Foreign {
        path: dir.to_owned(),
        found: format!(
            "{}{} and no manifest",
            shown.join(", "),
            if found.len() > 5 { ", …" } else { "" }
        ),
    })
}

fn check_chain_name(chain: &str) -> Result<(), StoreError> {
    let ok = !chain.is_empty()
        && chain.len() <= 200
        && chain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadChainName(chain.to_owned()))
    }
}

/// Maps an I/O error on `path` to [`StoreError::Io`].
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn damaged(key: &[u8], detail: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: detail.into(),
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // After a failed write or fsync, nothing more is written. sled 0.34
        // would fsync its log once more when its last handle goes, and
        // panics if that fsync fails (as it will again after an I/O error):
        // one handle is left undropped, so that the process ends with the
        // error it has already reported instead of a panic.
        if self.poisoned {
            std::mem::forget(self.db.clone());
            return;
        }
        // A writer closing saves its recent event ids, so that the next
        // open does not index them again from the segments (up to
        // `SAVE_AT` entries read). Derived data: a failure costs only that.
        if self.writer.is_some() {
            if let Some(ids) = self.event_ids.as_mut().filter(|ids| ids.has_unsaved()) {
                if let Err(e) = ids.save() {
                    tracing::warn!("saving the recent event ids on close: {e}");
                }
            }
        }
    }
}

impl Ledger {
    /// Opens (or creates) a ledger for appending: takes the index's lock,
    /// recovers the evidence (see [`evidence::EvidenceWriter::recover`]),
    /// checks each chain's tail against its acknowledged head and brings
    /// the derived indexes up to the evidence.
    pub fn open(dir: impl AsRef<Path>, options: LedgerOptions) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let kind = check_ledger_dir(dir, true)?;
        if kind == DirKind::Empty {
            evidence::EvidenceWriter::create(dir)?;
        }
        let index_dir = dir.join(INDEX_DIR);
        let db = open_index(&index_dir)?;
        let (writer, snapshot) = evidence::EvidenceWriter::recover(
            dir,
            options.segment_max_bytes,
            options.compress_frames,
        )?;
        let states = states::StateStore::open_writer(&dir.join(states::PROJECTION_DIR))?;
        let mut ledger =
            Ledger::assemble(db, dir, index_dir, snapshot, Some(writer), states, options)?;
        ledger.staged = Some(staged_journal::StagedJournal::open(dir)?);
        ledger.move_staged_out_of_sled()?;
        ledger.drop_projection_kept_in_sled()?;
        ledger.drop_event_ids_kept_in_sled()?;
        ledger.drop_subtrees_kept_in_sled()?;
        let heads: Vec<ChainHead> = ledger.heads().cloned().collect();
        for head in &heads {
            ledger.check_tail(head)?;
        }
        ledger.finish_cut_rebuild()?;
        ledger.catch_up_derived()?;
        Ok(ledger)
    }

    /// Opens a ledger whose index lives in `index_dir` (a private copy)
    /// over the evidence of `snapshot`, for reading: it cannot append.
    pub(super) fn open_for_reading(
        index_dir: &Path,
        snapshot: Snapshot,
        states: states::StateStore,
    ) -> Result<Self, StoreError> {
        let mut ledger = Ledger::assemble_reader(index_dir, snapshot, states)?;
        ledger.finish_cut_rebuild()?;
        ledger.catch_up_derived()?;
        Ok(ledger)
    }

    /// Opens a ledger for reading the evidence of `snapshot`, the
    /// projection, the event-id runs and the tree files in place:
    /// `empty_index_dir` is a new, empty index database that stays empty
    /// (nothing is derived into it), and every call that would read it
    /// refuses ([`StoreError::IndexesNotOpened`]).
    pub(super) fn open_without_indexes(
        empty_index_dir: &Path,
        snapshot: Snapshot,
        states: states::StateStore,
    ) -> Result<Self, StoreError> {
        let mut ledger = Ledger::assemble_reader(empty_index_dir, snapshot, states)?;
        ledger.indexes_opened = false;
        Ok(ledger)
    }

    fn assemble_reader(
        index_dir: &Path,
        snapshot: Snapshot,
        states: states::StateStore,
    ) -> Result<Self, StoreError> {
        let db = open_index(index_dir)?;
        let dir = snapshot.dir().to_owned();
        let mut ledger = Ledger::assemble(
            db,
            &dir,
            index_dir.to_owned(),
            snapshot,
            None,
            states,
            LedgerOptions::default(),
        )?;
        let private = index_dir.with_file_name(format!(
            "{}-{}",
            event_ids::EVENT_IDS_DIR,
            index_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        ledger.event_ids_private = Some(private);
        Ok(ledger)
    }

    /// Refuses when this ledger was opened without its indexes.
    fn needs_indexes(&self) -> Result<(), StoreError> {
        if self.indexes_opened {
            Ok(())
        } else {
            Err(StoreError::IndexesNotOpened)
        }
    }

    fn assemble(
        db: sled::Db,
        dir: &Path,
        index_dir: PathBuf,
        evidence: Snapshot,
        writer: Option<evidence::EvidenceWriter>,
        states: states::StateStore,
        options: LedgerOptions,
    ) -> Result<Self, StoreError> {
        match db.get(layout::META_FORMAT_KEY)? {
            None => {
                db.insert(layout::META_FORMAT_KEY, layout::STORE_FORMAT)?;
            }
            Some(v) if v.as_ref() == layout::STORE_FORMAT => {}
            Some(v) => {
                return Err(StoreError::Format {
                    path: index_dir,
                    found: String::from_utf8_lossy(&v).into_owned(),
                });
            }
        }
        let tree_files = if writer.is_some() {
            tree_files::TreeFiles::writer(dir)
        } else {
            tree_files::TreeFiles::reader(dir)
        };
        let evidence_for_projection = evidence.clone();
        Ok(Ledger {
            db,
            dir: dir.to_owned(),
            evidence,
            writer,
            options,
            syncer: durability::Syncer::default(),
            index_dir,
            poisoned: false,
            frontiers: HashMap::new(),
            tree_files,
            event_ids: None,
            event_ids_private: None,
            confirming: std::sync::Mutex::new(None),
            writing: None,
            just_appended: HashMap::new(),
            staged: None,
            projection_store: Some(ProjectionStore::new(
                dir.to_owned(),
                states,
                evidence_for_projection,
                options.projection_resident,
            )),
            indexes_opened: true,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses writes from a ledger opened for reading, or after a write
    /// that could not be made durable.
    fn writable(&self) -> Result<(), StoreError> {
        if self.writer.is_none() {
            return Err(StoreError::ReadOnly);
        }
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        Ok(())
    }

    /// The evidence as this ledger last acknowledged it.
    pub fn snapshot(&self) -> &Snapshot {
        &self.evidence
    }

    /// A sled tree if it exists: `open_tree` would create it, a write a
    /// reading command must not make.
    fn existing_tree(&self, name: &str) -> Result<Option<sled::Tree>, StoreError> {
        if self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == name.as_bytes())
        {
            Ok(Some(self.db.open_tree(name)?))
        } else {
            Ok(None)
        }
    }

    /// The acknowledged head of every chain, by chain name.
    pub fn heads(&self) -> impl Iterator<Item = &ChainHead> {
        self.evidence.heads()
    }

    pub fn head(&self, chain: &str) -> Option<&ChainHead> {
        self.evidence.head(chain)
    }

    /// Checks that a chain's last acknowledged entry reads back and is the
    /// head the manifest records: the store never appends on top of
    /// damage.
    fn check_tail(&self, head: &ChainHead) -> Result<(), StoreError> {
        let mismatch = |detail: String| StoreError::TailMismatch {
            chain: head.chain.clone(),
            detail,
        };
        let Some(last_seq) = head.next_seq.checked_sub(1) else {
            return Ok(());
        };
        let record = match self.evidence.records(&head.chain, last_seq).next() {
            Some(Ok(record)) => record,
            Some(Err(e)) => return Err(mismatch(format!("last entry unreadable: {e}"))),
            None => return Err(mismatch(format!("seq {last_seq} is not stored"))),
        };
        let entry = Entry::decode(&record.encoding)
            .map_err(|e| mismatch(format!("last entry does not decode: {e}")))?;
        if record.position != last_seq || entry.seq != last_seq || entry.chain != head.chain {
            return Err(mismatch(format!(
                "last stored entry is seq {}, head says {}",
                entry.seq, head.next_seq
            )));
        }
        let computed = crate::entry::EntryHash::of_encoding(&record.encoding);
        if computed != record.hash || computed != head.last_hash {
            return Err(mismatch(format!(
                "last entry hashes to {computed}, head records {}",
                head.last_hash
            )));
        }
        Ok(())
    }

    /// Where an event id was first recorded, if it was.
    pub fn find_event(&mut self, event_id: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.load_event_index()?;
        Ok(self.seen_event(event_id)?.map(|s| (s.chain, s.seq)))
    }

    /// The first record of an event id: the index's candidate, confirmed by
    /// reading the entry there (the index keeps fingerprints, not ids).
    fn seen_event(&self, event_id: &str) -> Result<Option<SeenEvent>, StoreError> {
        let Some(ids) = self.event_ids.as_ref() else {
            return Ok(None);
        };
        let Some((chain, seq)) = ids.candidate(event_id)? else {
            return Ok(None);
        };
        let chain = chain.as_str();
        let Some(record) = self.read_to_confirm(chain, seq)? else {
            return Ok(None);
        };
        let entry = Entry::decode(&record.encoding).map_err(|e| StoreError::Broken {
            chain: chain.to_owned(),
            seq,
            detail: format!("stored bytes are not an entry: {e}"),
        })?;
        match entry.body {
            crate::entry::Body::Event {
                event_id: recorded,
                raw,
                ..
            } if recorded == event_id && record.position == seq => Ok(Some(SeenEvent {
                chain: chain.to_owned(),
                seq,
                raw_hash: *blake3::hash(&raw).as_bytes(),
            })),
            _ => Ok(None),
        }
    }

    /// The record at `seq` of `chain`, to confirm an event id's candidate.
    ///
    /// A resent batch (a Kafka redelivery, a file ingested twice) asks for
    /// its entries in order, and a fresh read decompresses the entry's
    /// whole frame each time (130-150 µs a duplicate, measured): the read is
    /// kept and carried forward while the requests go forward on one
    /// chain under the same manifest generation (a chain set aside or
    /// adopted makes a new generation), and read afresh otherwise.
    fn read_to_confirm(&self, chain: &str, seq: u64) -> Result<Option<StoredRecord>, StoreError> {
        let generation = self.evidence.manifest().generation;
        let mut kept = self
            .confirming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(read) = kept.as_mut().filter(|r| r.follows(chain, generation, seq)) {
            for record in read.records.by_ref() {
                let record = record?;
                read.next_seq = record.position + 1;
                if record.position == seq {
                    return Ok(Some(record));
                }
                if record.position > seq {
                    break;
                }
            }
        }
        // Not carried forward (or the kept read ended: its snapshot may
        // predate the entry): read afresh.
        let mut records = self.records(chain, seq)?;
        match records.next().transpose()? {
            Some(record) if record.position == seq => {
                *kept = Some(ConfirmingRead {
                    chain: chain.to_owned(),
                    generation,
                    next_seq: seq + 1,
                    records,
                });
                Ok(Some(record))
            }
            _ => {
                *kept = None;
                Ok(None)
            }
        }
    }

    /// Opens the event-id index (`DIR/event-ids/`, or over it a reader's
    /// own) as saved, without bringing it up to the evidence.
    fn open_event_ids(&self) -> Result<event_ids::EventIds, StoreError> {
        let dir = self.dir.join(event_ids::EVENT_IDS_DIR);
        let save_at = self.options.event_ids_save_at;
        match &self.event_ids_private {
            None => event_ids::EventIds::open_writer(&dir, save_at),
            Some(private) => event_ids::EventIds::open_reader(&dir, private, save_at),
        }
    }

    /// Opens the event-id index on first use, and indexes the event ids of
    /// every entry it does not cover yet (read from the segments: after a
    /// crash, or entries adopted from an archive).
    fn load_event_index(&mut self) -> Result<(), StoreError> {
        let heads: Vec<(String, u64)> = self
            .heads()
            .map(|h| (h.chain.clone(), h.next_seq))
            .collect();
        if self.event_ids.is_none() {
            let mut ids = self.open_event_ids()?;
            // For the writer, an index past the evidence is stale (a
            // reader's may be past its snapshot: what it finds there is
            // confirmed against the snapshot, and fails).
            let ahead = heads
                .iter()
                .find(|(chain, next)| ids.indexed(chain) > *next);
            if let (None, Some((chain, next))) = (&self.event_ids_private, ahead) {
                tracing::warn!(
                    "the event-id index covers chain {chain} up to seq {} but the evidence holds {next} entries; deriving it again from the segments",
                    ids.indexed(chain)
                );
                ids.clear()?;
            }
            self.event_ids = Some(ids);
        }
        for (chain, next) in heads {
            self.index_event_ids(&chain, next)?;
        }
        Ok(())
    }

    /// Indexes the event ids of `chain` from where the index ends up to
    /// `next_seq`, saving runs as they fill.
    fn index_event_ids(&mut self, chain: &str, next_seq: u64) -> Result<(), StoreError> {
        let from = self.event_ids.as_ref().map_or(0, |ids| ids.indexed(chain));
        if from >= next_seq {
            return Ok(());
        }
        tracing::debug!(chain = %chain, "indexing event ids of seq {from}..{next_seq}");
        for record in self.records(chain, from)? {
            let record = record?;
            if record.position >= next_seq {
                break;
            }
            // A view, not a copy: only the id is needed.
            let entry = crate::entry::EntryView::decode(&record.encoding).map_err(|e| {
                StoreError::Broken {
                    chain: chain.to_owned(),
                    seq: record.position,
                    detail: format!("stored bytes are not an entry: {e}"),
                }
            })?;
            if let crate::entry::BodyView::Event { event_id, .. } = entry.body {
                // An id recorded before (a chain taken over from an
                // archive may repeat one) keeps its first location.
                if self.seen_event(event_id)?.is_none() {
                    if let Some(ids) = self.event_ids.as_mut() {
                        ids.insert(event_id, chain, record.position)?;
                    }
                }
            }
            if let Some(ids) = self.event_ids.as_mut() {
                ids.advance(chain, record.position + 1);
                ids.save_if_due()?;
            }
        }
        Ok(())
    }

    /// Appends received inputs to a chain, durably.
    ///
    /// Each input becomes an event entry, a rejected entry (undecodable,
    /// against the schema, oversize, or a conflicting reuse of an event id),
    /// or is skipped as a duplicate of what the ledger already holds. When
    /// this returns `Ok`, every appended entry is on disk and fsynced.
    pub fn append(
        &mut self,
        chain: &str,
        inputs: Vec<Incoming>,
        received_at: Timestamp,
    ) -> Result<AppendReport, StoreError> {
        let batch = ChainBatch {
            chain: chain.to_owned(),
            inputs,
            cursor: None,
        };
        let mut reports = self.append_many(vec![batch], received_at)?;
        Ok(reports.pop().unwrap_or_default())
    }

    /// Appends to several chains at once: every chain's entries, index
    /// records, head, tree nodes and input cursor go into one atomic write
    /// and one fsync. Returns a report per chain, in order.
    pub fn append_many(
        &mut self,
        batches: Vec<ChainBatch>,
        received_at: Timestamp,
    ) -> Result<Vec<AppendReport>, StoreError> {
        self.append_and_remove(batches, received_at, Vec::new())
    }

    /// [`Ledger::append_many`], also removing `removals` (keys of records
    /// the append supersedes, such as staged batches) in the same atomic
    /// write.
    fn append_and_remove(
        &mut self,
        batches: Vec<ChainBatch>,
        received_at: Timestamp,
        removals: Vec<Vec<u8>>,
    ) -> Result<Vec<AppendReport>, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        for b in &batches {
            check_chain_name(&b.chain)?;
        }
        self.load_event_index()?;
        self.just_appended.clear();
        // Each event id this write records, where it sits (chain, seq).
        let mut new_index: Vec<(String, (String, u64))> = Vec::new();
        let mut batch = sled::Batch::default();
        let mut subtrees: Vec<(String, Vec<tree_files::Node>)> = Vec::new();
        // What this write adds, which the database does not show yet.
        // The ids of `new_index`, by id (their place in it); the hash of an
        // id's bytes is taken only if the id comes again.
        let mut batch_events: HashMap<String, usize> = HashMap::new();
        let mut batch_rejections: HashSet<[u8; 32]> = HashSet::new();
        let mut reports = Vec::with_capacity(batches.len());
        let mut new_heads: Vec<(ChainHead, Vec<SealedEntry>, Option<i64>)> = Vec::new();
        // Per chain written, the decoded event of each sealed entry.
        let mut decoded: Vec<Vec<Option<Box<lifeledger_schemas::Event>>>> = Vec::new();
        let mut wrote = !removals.is_empty();
        for key in removals {
            batch.remove(key);
        }
        for ChainBatch {
            chain,
            inputs,
            cursor,
        } in batches
        {
            let chain = chain.as_str();
            let mut head = match new_heads.iter().rev().find(|(h, _, _)| h.chain == chain) {
                Some((h, _, _)) => h.clone(),
                None => self
                    .head(chain)
                    .cloned()
                    .unwrap_or_else(|| ChainHead::empty(chain)),
            };
            let mut report = AppendReport::default();
            let mut sealed: Vec<SealedEntry> = Vec::with_capacity(inputs.len());
            let mut events = Vec::with_capacity(inputs.len());
            let writing = self.writing;
            let classified_inputs = intake::classify_all(inputs, &self.options.limits)
                .into_iter()
                .map(|c| intake::guard_policy_chain(c, chain, writing));
            for classified in classified_inputs {
                let seen = match &classified {
                    Classified::Event { event_id, .. } => {
                        match batch_events.get(event_id).and_then(|&i| new_index.get(i)) {
                            Some((_, (seen_chain, seen_seq))) => Some(seen_in_write(
                                &new_heads,
                                (chain, &sealed),
                                seen_chain,
                                *seen_seq,
                            )?),
                            None => self.seen_event(event_id)?,
                        }
                    }
                    Classified::Rejected { .. } => None,
                };
                let new_event = match (&classified, &seen) {
                    (Classified::Event { event_id, .. }, None) => Some(event_id.clone()),
                    _ => None,
                };
                let mut rejection_key = None;
                let admission = intake::resolve(classified, seen.as_ref(), |key| {
                    rejection_key = Some(*key);
                    if batch_rejections.contains(key) {
                        return Ok(true);
                    }
                    Ok::<_, StoreError>(self.db.contains_key(layout::rejection_index_key(key))?)
                })?;
                match admission {
                    Admission::Duplicate => report.duplicates += 1,
                    Admission::Append {
                        body,
                        source,
                        event,
                    } => {
                        let is_event = matches!(body, crate::entry::Body::Event { .. });
                        let rejection = match &body {
                            crate::entry::Body::Rejected { raw, class, reason } => {
                                Some((source.clone(), raw.clone(), *class, reason.clone()))
                            }
                            crate::entry::Body::Event { .. } => None,
                        };
                        let entry = head.append(received_at, source, body);
                        if let Some((source, raw, class, reason)) = rejection {
                            report.rejections.push(Rejection {
                                source,
                                raw,
                                class,
                                reason,
                                seq: entry.seq,
                            });
                        }
                        if let Some(event_id) = new_event.filter(|_| is_event) {
                            batch_events.insert(event_id.clone(), new_index.len());
                            new_index.push((event_id, (chain.to_owned(), entry.seq)));
                            report.events += 1;
                        } else if let Some(key) = rejection_key {
                            batch.insert(
                                layout::rejection_index_key(&key),
                                layout::encode_location(chain, entry.seq),
                            );
                            batch_rejections.insert(key);
                            report.rejected += 1;
                        }
                        report.appended += 1;
                        sealed.push(entry);
                        events.push(event);
                    }
                }
            }
            report.next_seq = head.next_seq;
            if cursor.is_some() {
                wrote = true;
            }
            if !sealed.is_empty() {
                let (tree, nodes) = self.extend_tree(chain, sealed.iter().map(|e| e.hash))?;
                subtrees.push((chain.to_owned(), nodes));
                batch.insert(
                    layout::head_key(chain),
                    layout::encode_head(head.next_seq, &head.last_hash),
                );
                self.frontiers.insert(chain.to_owned(), tree);
                wrote = true;
            }
            new_heads.push((head, sealed, cursor));
            decoded.push(events);
            reports.push(report);
        }
        if !wrote {
            return Ok(reports);
        }
        let writes: Vec<evidence::ChainWrite<'_>> = new_heads
            .iter()
            .map(|(head, sealed, cursor)| evidence::ChainWrite {
                chain: &head.chain,
                entries: sealed,
                cursor: *cursor,
            })
            .collect();
        let Some(writer) = self.writer.as_mut() else {
            return Err(StoreError::ReadOnly);
        };
        let written = writer.append(self.evidence.manifest(), &writes);
        let manifest = match written {
            Ok((manifest, frames)) => {
                for (chain, f) in frames {
                    batch.insert(
                        layout::frame_key(&chain, f.first_seq),
                        layout::encode_frame_position(f.segment, f.offset),
                    );
                }
                manifest
            }
            Err(e) => {
                // Frames may be on disk past the acknowledged lengths; the
                // next writer drops them. Nothing more is acknowledged here.
                self.poisoned = true;
                self.frontiers.clear();
                return Err(e);
            }
        };
        self.evidence = Snapshot::of(self.dir.clone(), manifest);
        let advanced: Vec<(String, u64)> = new_heads
            .iter()
            .map(|(head, _, _)| (head.chain.clone(), head.next_seq))
            .collect();
        self.just_appended = new_heads
            .into_iter()
            .zip(decoded)
            .filter(|((_, sealed, _), _)| !sealed.is_empty())
            .map(|((head, sealed, _), events)| (head.chain, JustAppended { sealed, events }))
            .collect();
        // The derived indexes follow the evidence; if this write is lost,
        // the next open derives it again from the segments.
        let stored = subtrees
            .iter()
            .try_for_each(|(chain, nodes)| self.store_subtrees(chain, nodes));
        if let Err(e) = stored {
            self.poisoned = true;
            return Err(e);
        }
        let indexed = self.db.apply_batch(batch).and_then(|_| self.db.flush());
        if let Err(e) = indexed {
            self.poisoned = true;
            return Err(e.into());
        }
        if let Err(e) = self.index_appended(new_index, advanced) {
            self.poisoned = true;
            return Err(e);
        }
        Ok(reports)
    }

    /// Indexes the event ids an append recorded, and notes how far each
    /// chain it wrote is indexed.
    fn index_appended(
        &mut self,
        new_index: Vec<(String, (String, u64))>,
        advanced: Vec<(String, u64)>,
    ) -> Result<(), StoreError> {
        let Some(ids) = self.event_ids.as_mut() else {
            return Ok(());
        };
        for (id, (chain, seq)) in new_index {
            ids.insert(&id, &chain, seq)?;
        }
        for (chain, next_seq) in advanced {
            ids.advance(&chain, next_seq);
        }
        ids.save_if_due()
    }

    /// Seals the open segments of these chains (of every chain: `None`)
    /// that hold entries, so that an archive, which takes sealed segments
    /// only, can take them now.
    pub fn seal_open_segments(&mut self, chains: Option<&[String]>) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let all;
        let chains = match chains {
            Some(c) => c,
            None => {
                all = self.evidence.chain_names();
                &all
            }
        };
        let Some(writer) = self.writer.as_mut() else {
            return Err(StoreError::ReadOnly);
        };
        match writer.seal_chains(self.evidence.manifest(), chains) {
            Ok(manifest) => {
                self.evidence = Snapshot::of(self.dir.clone(), manifest);
                Ok(())
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// The input cursor of a chain: where its source should resume (for a
    /// Kafka partition, the next offset to read), as last acknowledged by
    /// [`Ledger::append_many`].
    pub fn cursor(&self, chain: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.evidence.cursor(chain))
    }

    /// fsyncs the index database: for the ledger's own records (origin,
    /// checkpoints, staged batches, outbox) that the evidence does not hold.
    fn make_durable(&mut self) -> Result<(), StoreError> {
        let flushed = self.db.flush().map_err(StoreError::from);
        let synced = flushed.and_then(|_| {
            self.syncer
                .sync(&self.index_dir)
                .map_err(|(path, source)| StoreError::Sync { path, source })
        });
        if synced.is_err() {
            self.poisoned = true;
        }
        synced
    }

    /// Acknowledged records of a chain from `from_seq` on, in order;
    /// started at the frame the index says holds `from_seq`, so that a
    /// read costs O(log n) index lookups rather than a segment scan.
    pub fn records(&self, chain: &str, from_seq: u64) -> Result<Records, StoreError> {
        let prefix = layout::frame_prefix(chain);
        let hint = match self
            .db
            .range(prefix.clone()..=layout::frame_key(chain, from_seq))
            .next_back()
        {
            Some(item) => {
                let (key, value) = item?;
                layout::decode_frame_position(&key, &value).map(|(first_seq, segment, offset)| {
                    snapshot::FramePosition {
                        first_seq,
                        segment,
                        offset,
                    }
                })
            }
            None => None,
        };
        if hint.is_none() {
            return Ok(self.evidence.records(chain, from_seq));
        }
        // The index is not trusted: a hint that does not read back is
        // ignored, and the chain is read from its segment's start.
        let mut hinted = self.evidence.records_from(chain, from_seq, hint);
        match hinted.next() {
            Some(Ok(record)) => {
                hinted.unread(record);
                Ok(hinted)
            }
            None => Ok(hinted),
            Some(Err(e)) => {
                tracing::debug!(chain, from_seq, "frame hint not used: {e}");
                Ok(self.evidence.records(chain, from_seq))
            }
        }
    }

    /// Decoded entries of a chain with seq in `from..=to`.
    pub fn entries(
        &self,
        chain: &str,
        from: u64,
        to: u64,
    ) -> Result<impl Iterator<Item = Result<(StoredRecord, Entry), StoreError>> + use<>, StoreError>
    {
        Ok(self.evidence.entries(chain, from, to))
    }

    /// Every chain that has entries.
    pub fn chain_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.evidence.chain_names())
    }

    /// Walks every chain from seq 0 and checks it against its acknowledged
    /// head (the evidence only: no index is trusted).
    pub fn verify(
        &self,
        depth: Depth,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyReport, StoreError> {
        self.evidence.verify(depth, progress)
    }
}

/// sled's page cache for the index. Its default (1 GiB) would be most of
/// a command's memory budget; the index is read mostly near its newest
/// keys and by single items, which a smaller cache serves.
const INDEX_CACHE_BYTES: u64 = 128 * 1024 * 1024;

fn open_index(index_dir: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(index_dir)
        .cache_capacity(INDEX_CACHE_BYTES);
    sled_open::open_waiting_for_lock(&config, index_dir)
}

/// The earlier record of an event id that this write already holds (not
/// yet in the database): at `seq` of `chain`, among the chains this write
/// has sealed (`written`) and the one it is sealing (`sealing`). Its bytes
/// are hashed here, once the id has come again.
fn seen_in_write(
    written: &[(ChainHead, Vec<SealedEntry>, Option<i64>)],
    sealing: (&str, &[SealedEntry]),
    chain: &str,
    seq: u64,
) -> Result<SeenEvent, StoreError> {
    let sealed = written
        .iter()
        .map(|(head, sealed, _)| (head.chain.as_str(), sealed.as_slice()))
        .chain(std::iter::once(sealing))
        .filter(|(name, _)| *name == chain)
        // A chain's sealed entries have consecutive seqs.
        .find_map(|(_, sealed)| {
            let first = sealed.first()?.seq;
            sealed.get(usize::try_from(seq.checked_sub(first)?).ok()?)
        })
        .filter(|entry| entry.seq == seq);
    let broken = |detail: &str| StoreError::Broken {
        chain: chain.to_owned(),
        seq,
        detail: detail.to_owned(),
    };
    let sealed = sealed.ok_or_else(|| broken("an entry this write sealed is missing from it"))?;
    let entry = crate::entry::EntryView::decode(&sealed.encoding)
        .map_err(|e| broken(&format!("an entry this write sealed does not decode: {e}")))?;
    match entry.body {
        crate::entry::BodyView::Event { raw, .. } => Ok(SeenEvent {
            chain: chain.to_owned(),
            seq,
            raw_hash: *blake3::hash(raw).as_bytes(),
        }),
        crate::entry::BodyView::Rejected { .. } => Err(broken(
            "an event this write recorded was sealed as a rejection",
        )),
    }
}
