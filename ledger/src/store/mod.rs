//! The sled-backed store: the edge where chains meet the disk.
//!
//! Appends are batched: every entry of a batch, the chain head and the
//! duplicate indexes are written in one atomic sled batch, then flushed and
//! fsynced before [`Ledger::append`] returns. There is no call that
//! overwrites or removes an entry.

mod checkpoints;
mod durability;
mod export;
mod layout;
mod monitor;
mod projection;
mod read_only;
mod replay;
mod staged;
mod tree;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use thiserror::Error;

use crate::chain::{ChainHead, SealedEntry};
use crate::entry::{Entry, EntryDecodeError};
use crate::intake::{self, Admission, Classified, Incoming, IntakeLimits, SeenEvent};
use crate::verify::{ChainVerifier, Depth, Problem, VerifyReport};

pub use export::{ExportScope, ExportSummary};
pub use layout::StoredRecord;
pub use monitor::{MonitorRecord, Outbox};
pub use read_only::ReadOnlyLedger;
pub use replay::{Replay, Visited};
pub use staged::StagedBatch;

/// Settings of a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerOptions {
    pub limits: IntakeLimits,
    /// At most this many entries per stored block.
    pub block_max_entries: usize,
    /// A block is closed once its entries reach this many bytes. Small
    /// blocks stay inline in sled's nodes and keep its copy-on-write of a
    /// node cheap (measured: 48 KiB blocks gave the consumer 48.8k events/s,
    /// 4 KiB blocks 66.4k).
    pub block_max_bytes: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            limits: IntakeLimits::default(),
            block_max_entries: 256,
            block_max_bytes: 4 * 1024,
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
    #[error("ledger storage failed: {0}")]
    Sled(#[from] sled::Error),
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

/// An open ledger directory.
#[derive(Debug)]
pub struct Ledger {
    db: sled::Db,
    dir: PathBuf,
    heads: BTreeMap<String, ChainHead>,
    options: LedgerOptions,
    syncer: durability::Syncer,
    poisoned: bool,
    /// Each chain's Merkle tree edge, once computed.
    frontiers: HashMap<String, crate::merkle::CompactRange>,
    /// Where each event id was first recorded, loaded on first use. Kept in
    /// memory and written one record per append (key `X`), not one sled
    /// insert per event: that insert alone capped appends near 90k/s.
    event_index: Option<HashMap<String, SeenEvent>>,
    /// The number of the next `X` record.
    next_index_record: u64,
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

fn damaged(key: &[u8], detail: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: detail.into(),
    }
}

impl Ledger {
    /// Opens (or creates) a ledger for appending, and checks each chain's
    /// tail against its stored head.
    pub fn open(dir: impl AsRef<Path>, options: LedgerOptions) -> Result<Self, StoreError> {
        let mut ledger = Self::open_unchecked(dir, options)?;
        for head in ledger.heads.values() {
            ledger.check_tail(head)?;
        }
        let chains: Vec<(String, u64)> = ledger
            .heads
            .values()
            .map(|h| (h.chain.clone(), h.next_seq))
            .collect();
        for (chain, size) in chains {
            if !tree::has_nodes(&ledger, &chain, size)? {
                ledger.backfill_tree(&chain)?;
            }
        }
        Ok(ledger)
    }

    /// Opens a ledger without checking tails, for verification of a ledger
    /// that may be damaged.
    pub fn open_unchecked(
        dir: impl AsRef<Path>,
        options: LedgerOptions,
    ) -> Result<Self, StoreError> {
        Self::open_db(dir.as_ref(), options, true)
    }

    /// Opens the sled database; `create` allows a new, empty ledger.
    fn open_db(dir: &Path, options: LedgerOptions, create: bool) -> Result<Self, StoreError> {
        let dir = dir.to_owned();
        let db = sled::Config::new()
            .path(&dir)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.clone(),
                source,
            })?;
        match db.get(layout::META_FORMAT_KEY)? {
            None if !create => return Err(StoreError::NotALedger(dir)),
            None => {
                db.insert(layout::META_FORMAT_KEY, layout::STORE_FORMAT)?;
            }
            Some(v) if v.as_ref() == layout::STORE_FORMAT => {}
            Some(v) => {
                return Err(StoreError::Format {
                    path: dir,
                    found: String::from_utf8_lossy(&v).into_owned(),
                });
            }
        }
        let mut heads = BTreeMap::new();
        for item in db.scan_prefix(b"H") {
            let (key, value) = item?;
            let chain = String::from_utf8(key[1..].to_vec())
                .map_err(|_| damaged(&key, "chain name is not UTF-8"))?;
            let (next_seq, last_hash) =
                layout::decode_head(&value).ok_or_else(|| damaged(&key, "head is not 40 bytes"))?;
            heads.insert(
                chain.clone(),
                ChainHead {
                    chain,
                    next_seq,
                    last_hash,
                },
            );
        }
        Ok(Ledger {
            db,
            dir,
            heads,
            options,
            syncer: durability::Syncer::default(),
            poisoned: false,
            frontiers: HashMap::new(),
            event_index: None,
            next_index_record: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// The head of every chain, by chain name.
    pub fn heads(&self) -> impl Iterator<Item = &ChainHead> {
        self.heads.values()
    }

    pub fn head(&self, chain: &str) -> Option<&ChainHead> {
        self.heads.get(chain)
    }

    fn check_tail(&self, head: &ChainHead) -> Result<(), StoreError> {
        let mismatch = |detail: String| StoreError::TailMismatch {
            chain: head.chain.clone(),
            detail,
        };
        let last = match self
            .db
            .scan_prefix(layout::block_prefix(&head.chain))
            .next_back()
        {
            None if head.next_seq == 0 => return Ok(()),
            None => {
                return Err(mismatch(format!(
                    "head is at seq {} but no entries are stored",
                    head.next_seq
                )));
            }
            Some(item) => item?,
        };
        let (key, value) = last;
        let (_, first_seq) =
            layout::parse_block_key(&key).ok_or_else(|| damaged(&key, "bad block key"))?;
        let (records, damage) = layout::decode_block(first_seq, &value);
        if let Some(damage) = damage {
            return Err(mismatch(format!("last block is damaged: {damage}")));
        }
        let Some(record) = records.last() else {
            return Err(mismatch("last block is empty".to_owned()));
        };
        let entry = Entry::decode(&record.encoding)
            .map_err(|e| mismatch(format!("last entry does not decode: {e}")))?;
        let expected_seq = head.next_seq.checked_sub(1);
        if Some(record.position) != expected_seq || Some(entry.seq) != expected_seq {
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
        Ok(self.seen_event(event_id).map(|s| (s.chain.clone(), s.seq)))
    }

    fn seen_event(&self, event_id: &str) -> Option<&SeenEvent> {
        self.event_index
            .as_ref()
            .and_then(|index| index.get(event_id))
    }

    /// Reads the event index: `X` records (one per append) and any `I`
    /// records of ledgers written before them.
    fn load_event_index(&mut self) -> Result<(), StoreError> {
        if self.event_index.is_some() {
            return Ok(());
        }
        let mut index = HashMap::new();
        for item in self.db.scan_prefix(b"I") {
            let (key, value) = item?;
            let id = String::from_utf8(key[1..].to_vec())
                .map_err(|_| damaged(&key, "event id is not UTF-8"))?;
            let seen = layout::decode_seen_event(&value)
                .ok_or_else(|| damaged(&key, "event index record is malformed"))?;
            index.insert(id, seen);
        }
        let mut next = 0;
        for item in self.db.scan_prefix(b"X") {
            let (key, value) = item?;
            let records = layout::decode_index_record(&value)
                .ok_or_else(|| damaged(&key, "event index record is malformed"))?;
            for (id, seen) in records {
                index.entry(id).or_insert(seen);
            }
            next = layout::index_record_number(&key).map_or(next, |n| n + 1);
        }
        self.event_index = Some(index);
        self.next_index_record = next;
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
        let mut new_index: Vec<(String, SeenEvent)> = Vec::new();
        let mut batch = sled::Batch::default();
        // What this write adds, which the database does not show yet.
        let mut batch_events: HashMap<String, SeenEvent> = HashMap::new();
        let mut batch_rejections: HashSet<[u8; 32]> = HashSet::new();
        let mut reports = Vec::with_capacity(batches.len());
        let mut new_heads = Vec::new();
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
            let mut head = self
                .heads
                .get(chain)
                .cloned()
                .unwrap_or_else(|| ChainHead::empty(chain));
            let mut report = AppendReport::default();
            let mut sealed: Vec<SealedEntry> = Vec::with_capacity(inputs.len());
            for classified in intake::classify_all(inputs, &self.options.limits) {
                let seen = match &classified {
                    Classified::Event { event_id, .. } => match batch_events.get(event_id) {
                        Some(seen) => Some(seen.clone()),
                        None => self.seen_event(event_id).cloned(),
                    },
                    Classified::Rejected { .. } => None,
                };
                let new_event = match (&classified, &seen) {
                    (
                        Classified::Event {
                            event_id, raw_hash, ..
                        },
                        None,
                    ) => Some((event_id.clone(), *raw_hash)),
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
                    Admission::Append { body, source } => {
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
                        if let Some((event_id, raw_hash)) = new_event.filter(|_| is_event) {
                            let seen = SeenEvent {
                                chain: chain.to_owned(),
                                seq: entry.seq,
                                raw_hash,
                            };
                            new_index.push((event_id.clone(), seen.clone()));
                            batch_events.insert(event_id, seen);
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
                    }
                }
            }
            report.next_seq = head.next_seq;
            if let Some(cursor) = cursor {
                batch.insert(layout::cursor_key(chain), cursor.to_be_bytes().to_vec());
                wrote = true;
            }
            if !sealed.is_empty() {
                self.put_blocks(&mut batch, chain, &sealed);
                let tree = self.extend_tree(chain, sealed.iter().map(|e| e.hash), &mut batch)?;
                batch.insert(
                    layout::head_key(chain),
                    layout::encode_head(head.next_seq, &head.last_hash),
                );
                new_heads.push((head, tree));
                wrote = true;
            }
            reports.push(report);
        }
        if !new_index.is_empty() {
            batch.insert(
                layout::index_record_key(self.next_index_record),
                layout::encode_index_record(&new_index),
            );
        }
        if !wrote {
            return Ok(reports);
        }
        self.db.apply_batch(batch)?;
        self.make_durable()?;
        if !new_index.is_empty() {
            self.next_index_record += 1;
            if let Some(index) = self.event_index.as_mut() {
                for (id, seen) in new_index {
                    index.entry(id).or_insert(seen);
                }
            }
        }
        for (head, tree) in new_heads {
            self.frontiers.insert(head.chain.clone(), tree);
            self.heads.insert(head.chain.clone(), head);
        }
        Ok(reports)
    }

    /// The input cursor of a chain: where its source should resume (for a
    /// Kafka partition, the next offset to read), as last written by
    /// [`Ledger::append_many`].
    pub fn cursor(&self, chain: &str) -> Result<Option<i64>, StoreError> {
        let key = layout::cursor_key(chain);
        match self.db.get(&key)? {
            None => Ok(None),
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(|b| Some(i64::from_be_bytes(b)))
                .map_err(|_| damaged(&key, "cursor is not 8 bytes")),
        }
    }

    fn put_blocks(&self, batch: &mut sled::Batch, chain: &str, sealed: &[SealedEntry]) {
        let mut start = 0;
        while start < sealed.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < sealed.len()
                && end - start < self.options.block_max_entries
                && (end == start
                    || bytes + sealed[end].encoding.len() <= self.options.block_max_bytes)
            {
                bytes += sealed[end].encoding.len();
                end += 1;
            }
            let block = &sealed[start..end];
            let value =
                layout::encode_block(block.iter().map(|e| (&e.hash, e.encoding.as_slice())));
            batch.insert(layout::block_key(chain, block[0].seq), value);
            start = end;
        }
    }

    fn make_durable(&mut self) -> Result<(), StoreError> {
        let flushed = self.db.flush().map_err(StoreError::from);
        let synced = flushed.and_then(|_| {
            self.syncer
                .sync(&self.dir)
                .map_err(|(path, source)| StoreError::Sync { path, source })
        });
        if synced.is_err() {
            // The batch is applied in memory but may not be on disk; nothing
            // more may be acknowledged on top of it.
            self.poisoned = true;
        }
        synced
    }

    /// Stored records of a chain from `from_seq` on, in order.
    pub fn records(&self, chain: &str, from_seq: u64) -> Result<Records, StoreError> {
        let prefix = layout::block_prefix(chain);
        let start = match self
            .db
            .range(prefix.clone()..=layout::block_key(chain, from_seq))
            .next_back()
        {
            Some(item) => item?.0.to_vec(),
            None => layout::block_key(chain, 0),
        };
        let end = layout::block_key(chain, u64::MAX);
        Ok(Records {
            blocks: self.db.range(start..=end),
            pending: VecDeque::new(),
            deferred: None,
            from_seq,
            done: false,
        })
    }

    /// Decoded entries of a chain with seq in `from..=to`.
    pub fn entries(
        &self,
        chain: &str,
        from: u64,
        to: u64,
    ) -> Result<impl Iterator<Item = Result<(StoredRecord, Entry), StoreError>> + use<>, StoreError>
    {
        let records = self.records(chain, from)?;
        Ok(records
            .take_while(move |r| !matches!(r, Ok(rec) if rec.position > to))
            .map(|r| {
                let rec = r?;
                let entry = Entry::decode(&rec.encoding).map_err(|e: EntryDecodeError| {
                    damaged(format!("seq {}", rec.position).as_bytes(), e.to_string())
                })?;
                Ok((rec, entry))
            }))
    }

    /// Every chain that has a head or stored entries.
    pub fn chain_names(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self.heads.keys().cloned().collect();
        let mut cursor = b"B".to_vec();
        while let Some(item) = self.db.range(cursor.clone()..).next() {
            let (key, _) = item?;
            if key.first() != Some(&b'B') {
                break;
            }
            let (chain, _) =
                layout::parse_block_key(&key).ok_or_else(|| damaged(&key, "bad block key"))?;
            cursor = layout::block_key(&chain, u64::MAX);
            cursor.push(0);
            names.push(chain);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Walks every chain from seq 0 and checks it against its head.
    /// `progress` is called with the number of entries checked so far.
    pub fn verify(
        &self,
        depth: Depth,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let mut checked = 0u64;
        for chain in self.chain_names()? {
            let mut verifier = ChainVerifier::new(&chain, depth);
            let mut finding = None;
            for record in self.records(&chain, 0)? {
                let outcome = match record {
                    Ok(record) => verifier.check(&record.hash, &record.encoding),
                    Err(StoreError::Damaged { detail, .. }) => {
                        Err(verifier.finding(Problem::Undecodable(detail)))
                    }
                    Err(e) => return Err(e),
                };
                if let Err(f) = outcome {
                    finding = Some(f);
                    break;
                }
                checked += 1;
                if checked % 4096 == 0 {
                    progress(checked);
                }
            }
            match finding {
                Some(f) => report.findings.push(f),
                None => match verifier.finish(self.heads.get(&chain)) {
                    Ok(summary) => report.chains.push(summary),
                    Err(f) => report.findings.push(f),
                },
            }
        }
        progress(checked);
        Ok(report)
    }
}

/// Iterator over stored records, block by block. Damage to a block ends
/// the walk with a [`StoreError::Damaged`] after the records framed before it.
pub struct Records {
    blocks: sled::Iter,
    pending: VecDeque<StoredRecord>,
    deferred: Option<StoreError>,
    from_seq: u64,
    done: bool,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("pending", &self.pending.len())
            .field("from_seq", &self.from_seq)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Iterator for Records {
    type Item = Result<StoredRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.pending.pop_front() {
                if record.position < self.from_seq {
                    continue;
                }
                return Some(Ok(record));
            }
            if let Some(err) = self.deferred.take() {
                return Some(Err(err));
            }
            if self.done {
                return None;
            }
            let (key, value) = match self.blocks.next()? {
                Ok(kv) => kv,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
            };
            let Some((_, first_seq)) = layout::parse_block_key(&key) else {
                self.done = true;
                return Some(Err(damaged(&key, "bad block key")));
            };
            let (records, damage) = layout::decode_block(first_seq, &value);
            if let Some(detail) = damage {
                let at = first_seq + records.len() as u64;
                self.deferred = Some(damaged(
                    format!("block record at seq {at}").as_bytes(),
                    detail,
                ));
                self.done = true;
            }
            self.pending = records.into();
        }
    }
}
