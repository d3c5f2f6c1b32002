//! Staged batches: inputs made durable before their source acknowledges
//! them, and appended to their chain only once it has.
//!
//! A Kafka consumer in a group cannot write its ledger and commit its
//! offsets in one atomic step. Appending first and committing second means
//! that a crash in between leaves entries in this ledger that the group
//! does not know about, and the partition's next owner records them again
//! in its own ledger. So the consumer stages a batch here (durable, but not
//! in any chain), commits the offsets to Kafka with the batch's token, and
//! only then appends the staged inputs to the chain, removing the staged
//! record in the same atomic write. A staged batch found on open is
//! resolved by asking Kafka whether its commit landed (see the consumer's
//! `handover` module): appended if it did, discarded if it did not.
//!
//! At most one staged batch per chain, kept in `DIR/staged/journal`
//! (`staged_journal.rs`). A batch's bytes: token (u16 BE length + UTF-8),
//! first and next source offset (i64 BE each), then the inputs: u32 BE
//! count, and per input its source (tag u8: 0 file = u16 BE length, path,
//! line u64 BE; 1 Kafka = u16 BE length, topic, partition i32 BE, offset
//! i64 BE) and its raw bytes (u32 BE length, bytes). Earlier releases kept
//! the same bytes in the index database under key `S` and the chain; a
//! writer moves them to the journal when it opens. Staged records are not
//! evidence: no auditor reads them, and an export never contains them.

use jiff::Timestamp;

use super::staged_journal::{self, StagedJournal};
use super::{AppendReport, ChainBatch, Ledger, StoreError, check_chain_name, damaged};
use crate::entry::Source;
use crate::intake::Incoming;

/// A batch of one chain's inputs waiting for its source's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedBatch {
    pub chain: String,
    /// Names this batch in the source's acknowledgement (for Kafka: the
    /// offset commit's metadata), so that its fate can be looked up later.
    pub token: String,
    /// The first source offset in the batch, and the one after its last.
    pub first_offset: i64,
    pub next_offset: i64,
    pub inputs: Vec<Incoming>,
}

impl StagedBatch {
    /// The bytes of its inputs, about what its record takes.
    pub(super) fn raw_len(&self) -> usize {
        self.inputs.iter().map(|i| i.raw.len() + 48).sum()
    }
}

/// Where an earlier release kept a chain's staged batch in the index.
fn staged_key(chain: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + chain.len());
    key.push(b'S');
    key.extend_from_slice(chain.as_bytes());
    key
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// Appends a batch's bytes to `out`.
pub(super) fn encode_batch(out: &mut Vec<u8>, batch: &StagedBatch) {
    put_str16(out, &batch.token);
    out.extend_from_slice(&batch.first_offset.to_be_bytes());
    out.extend_from_slice(&batch.next_offset.to_be_bytes());
    let count = u32::try_from(batch.inputs.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for input in batch.inputs.iter().take(count as usize) {
        match &input.source {
            Source::File { path, line } => {
                out.push(0);
                put_str16(out, path);
                out.extend_from_slice(&line.to_be_bytes());
            }
            Source::Kafka {
                topic,
                partition,
                offset,
            } => {
                out.push(1);
                put_str16(out, topic);
                out.extend_from_slice(&partition.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
            }
        }
        let len = u32::try_from(input.raw.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&input.raw[..len as usize]);
    }
}

/// Reads fixed-size fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn str16(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.array()?);
        String::from_utf8(self.take(usize::from(len))?.to_vec()).ok()
    }
}

/// A batch from its bytes; `None` if they are not exactly one.
pub(super) fn decode_batch(chain: &str, value: &[u8]) -> Option<StagedBatch> {
    let mut r = Reader(value);
    let token = r.str16()?;
    let first_offset = i64::from_be_bytes(r.array()?);
    let next_offset = i64::from_be_bytes(r.array()?);
    let count = u32::from_be_bytes(r.array()?);
    let mut inputs = Vec::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let source = match r.array::<1>()?[0] {
            0 => Source::File {
                path: r.str16()?,
                line: u64::from_be_bytes(r.array()?),
            },
            1 => Source::Kafka {
                topic: r.str16()?,
                partition: i32::from_be_bytes(r.array()?),
                offset: i64::from_be_bytes(r.array()?),
            },
            _ => return None,
        };
        let len = u32::from_be_bytes(r.array()?) as usize;
        let raw = r.take(len)?.to_vec();
        inputs.push(Incoming { source, raw });
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(StagedBatch {
        chain: chain.to_owned(),
        token,
        first_offset,
        next_offset,
        inputs,
    })
}

impl Ledger {
    /// Makes these batches durable as staged (one write, one
    /// `fdatasync`), each replacing any batch staged before for its
    /// chain, and keeps them in memory to be appended from there. Nothing
    /// is appended to a chain.
    pub fn stage(&mut self, batches: Vec<StagedBatch>) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if batches.is_empty() {
            return Ok(());
        }
        for b in &batches {
            check_chain_name(&b.chain)?;
        }
        let journal = self.staged_journal()?;
        let staged = journal.stage(batches);
        // A batch too large for a record is refused before anything is
        // written; any other failure leaves the file in doubt.
        if staged
            .as_ref()
            .is_err_and(|e| !matches!(e, StoreError::StagedTooLarge { .. }))
        {
            self.poisoned = true;
        }
        staged
    }

    fn staged_journal(&mut self) -> Result<&mut StagedJournal, StoreError> {
        self.staged.as_mut().ok_or(StoreError::ReadOnly)
    }

    /// Whether a staged batch is still waiting: its chain's acknowledged
    /// cursor does not reach its end (one that does was appended, and only
    /// its removal was lost).
    fn waiting(&self, batch: &StagedBatch) -> bool {
        self.evidence
            .cursor(&batch.chain)
            .is_none_or(|c| c < batch.next_offset)
    }

    /// The batch staged for a chain, if any.
    pub fn staged(&self, chain: &str) -> Result<Option<StagedBatch>, StoreError> {
        // The writer copies the one batch asked for, not every one.
        if let Some(journal) = &self.staged {
            return Ok(journal
                .live()
                .get(chain)
                .filter(|b| self.waiting(b))
                .cloned());
        }
        Ok(self
            .staged_batches()?
            .into_iter()
            .find(|b| b.chain == chain))
    }

    /// Every staged batch, by chain.
    pub fn staged_batches(&self) -> Result<Vec<StagedBatch>, StoreError> {
        if let Some(journal) = &self.staged {
            return Ok(journal
                .live()
                .values()
                .filter(|b| self.waiting(b))
                .cloned()
                .collect());
        }
        // A reader reads the writer's journal as it stands, and, if it
        // opened an index, what an earlier release staged there that no
        // writer has moved yet.
        let mut live = staged_journal::read_staged(&self.dir)?;
        if self.indexes_opened {
            for b in self.staged_in_sled()? {
                live.entry(b.chain.clone()).or_insert(b);
            }
        }
        Ok(live.into_values().filter(|b| self.waiting(b)).collect())
    }

    /// Appends the staged batches of these chains (their source has
    /// acknowledged them), then writes their removal. A chain whose cursor
    /// already reaches the staged batch's end had it appended before (the
    /// removal is written after the evidence acknowledges the append, so a
    /// crash can leave the record behind): the record is only removed.
    /// Returns a report per chain that had a staged batch, in order.
    pub fn append_staged(
        &mut self,
        chains: &[String],
        received_at: Timestamp,
    ) -> Result<Vec<(String, AppendReport)>, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let mut batches = Vec::new();
        let mut removals = Vec::new();
        for chain in chains {
            // Taken from memory: if the append fails, the journal still
            // holds it, and is read again.
            let Some(staged) = self.staged_journal()?.take(chain) else {
                continue;
            };
            removals.push(chain.clone());
            if !self.waiting(&staged) {
                continue;
            }
            batches.push(ChainBatch {
                chain: staged.chain,
                inputs: staged.inputs,
                cursor: Some(staged.next_offset),
            });
        }
        let names: Vec<String> = batches.iter().map(|b| b.chain.clone()).collect();
        let reports = match self.append_and_remove(batches, received_at, Vec::new()) {
            Ok(reports) => reports,
            Err(e) => {
                if let Err(reload) = self.staged_journal()?.reload() {
                    tracing::warn!(
                        "reading the staged batches again after a failed append: {reload}"
                    );
                    self.poisoned = true;
                }
                return Err(e);
            }
        };
        // Not synced: a removal lost to a crash leaves a batch whose
        // cursor reaches its end, which opening drops.
        let removed = self.staged_journal()?.remove(&removals, false);
        if removed.is_err() {
            self.poisoned = true;
        }
        removed?;
        Ok(names.into_iter().zip(reports).collect())
    }

    /// Removes staged batches whose inputs the evidence already holds (the
    /// chain's acknowledged cursor reaches their end): the append landed,
    /// and only the removal was lost. A reader leaves the journal alone.
    pub(super) fn settle_landed_staged(&mut self) -> Result<(), StoreError> {
        let Some(journal) = &self.staged else {
            return Ok(());
        };
        let landed: Vec<String> = journal
            .live()
            .values()
            .filter(|b| !self.waiting(b))
            .map(|b| b.chain.clone())
            .collect();
        self.staged_journal()?.remove(&landed, false)
    }

    /// Drops the staged batches of these chains (their source never
    /// acknowledged them: they will be read again, here or elsewhere).
    pub fn discard_staged(&mut self, chains: &[String]) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let journal = self.staged_journal()?;
        let present: Vec<String> = chains
            .iter()
            .filter(|c| journal.live().contains_key(*c))
            .cloned()
            .collect();
        let removed = journal.remove(&present, true);
        if removed.is_err() {
            self.poisoned = true;
        }
        removed
    }

    /// What an earlier release staged in the index database.
    fn staged_in_sled(&self) -> Result<Vec<StagedBatch>, StoreError> {
        let mut batches = Vec::new();
        for item in self.db.scan_prefix(b"S") {
            let (key, value) = item?;
            let chain = std::str::from_utf8(&key[1..])
                .map_err(|_| damaged(&key, "staged chain name is not UTF-8"))?;
            batches.push(
                decode_batch(chain, &value)
                    .ok_or_else(|| damaged(&key, "staged batch does not decode"))?,
            );
        }
        Ok(batches)
    }

    /// Moves the staged batches an earlier release kept in the index
    /// database (key `S` + chain) to the journal: staged there (synced)
    /// first, then removed from the index, so a crash between leaves the
    /// same batch in both, which the next open moves again.
    pub(super) fn move_staged_out_of_sled(&mut self) -> Result<(), StoreError> {
        let batches = self.staged_in_sled()?;
        if batches.is_empty() {
            return Ok(());
        }
        tracing::info!(
            "moving {} staged batches from the index database to {}",
            batches.len(),
            staged_journal::STAGED_DIR
        );
        let mut keys = sled::Batch::default();
        for b in &batches {
            keys.remove(staged_key(&b.chain));
        }
        self.stage(batches)?;
        self.db.apply_batch(keys)?;
        self.make_durable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use super::super::ChainBatch;

    fn source() -> impl Strategy<Value = Source> {
        prop_oneof![
            ("[a-z/]{0,20}", any::<u64>()).prop_map(|(path, line)| Source::File { path, line }),
            ("[a-z.]{1,20}", any::<i32>(), any::<i64>()).prop_map(|(topic, partition, offset)| {
                Source::Kafka {
                    topic,
                    partition,
                    offset,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn a_staged_batch_decodes_to_itself(
            token in "[0-9a-f]{0,40}",
            first_offset in any::<i64>(),
            next_offset in any::<i64>(),
            inputs in proptest::collection::vec(
                (source(), proptest::collection::vec(any::<u8>(), 0..64))
                    .prop_map(|(source, raw)| Incoming { source, raw }),
                0..8,
            ),
        ) {
            let batch = StagedBatch { chain: "kafka:t:0".into(), token, first_offset, next_offset, inputs };
            let mut bytes = Vec::new();
            encode_batch(&mut bytes, &batch);
            prop_assert_eq!(decode_batch("kafka:t:0", &bytes), Some(batch));
            // Any truncation is refused, never misread.
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode_batch("kafka:t:0", &bytes[..cut]), None);
            }
        }
    }

    /// A chain's entries as (hash, encoding): what an auditor sees.
    fn chain_of(ledger: &Ledger, chain: &str) -> Vec<(crate::entry::EntryHash, Vec<u8>)> {
        ledger
            .entries(chain, 0, u64::MAX)
            .unwrap()
            .map(|r| {
                let (record, _) = r.unwrap();
                (record.hash, record.encoding)
            })
            .collect()
    }

    fn batch(token: &str, from: i64, events: std::ops::Range<u64>) -> StagedBatch {
        let inputs: Vec<Incoming> = events
            .zip(from..)
            .map(|(i, offset)| Incoming {
                source: Source::Kafka {
                    topic: "t".into(),
                    partition: 0,
                    offset,
                },
                raw: super::super::test_events::event(i),
            })
            .collect();
        StagedBatch {
            chain: "kafka:t:0".into(),
            token: token.into(),
            first_offset: from,
            next_offset: from + inputs.len() as i64,
            inputs,
        }
    }

    fn open(dir: &std::path::Path) -> Ledger {
        Ledger::open(dir, super::super::LedgerOptions::default()).unwrap()
    }

    fn at() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    const CHAIN: &str = "kafka:t:0";

    fn chain() -> [String; 1] {
        [CHAIN.to_owned()]
    }

    /// The same batch, staged for partition 1 instead.
    fn on_partition_1(mut b: StagedBatch) -> StagedBatch {
        b.chain = "kafka:t:1".into();
        b
    }

    fn journal(dir: &std::path::Path) -> std::path::PathBuf {
        dir.join(staged_journal::STAGED_DIR).join("journal")
    }

    /// A replaced batch is never appended, a dropped one neither, and what
    /// is appended is what a plain append of the same inputs writes.
    #[test]
    fn the_last_batch_staged_is_the_one_appended() {
        let dir = tempfile::tempdir().unwrap();
        let (mut staged, mut plain) = (open(&dir.path().join("s")), open(&dir.path().join("p")));
        staged.stage(vec![batch("a", 0, 0..3)]).unwrap();
        staged.stage(vec![batch("b", 0, 10..13)]).unwrap();
        assert_eq!(staged.staged(CHAIN).unwrap(), Some(batch("b", 0, 10..13)));
        staged.append_staged(&chain(), at()).unwrap();
        staged.stage(vec![batch("c", 3, 20..25)]).unwrap();
        staged.append_staged(&chain(), at()).unwrap();
        assert_eq!(staged.staged(CHAIN).unwrap(), None);
        staged.stage(vec![batch("d", 8, 30..32)]).unwrap();
        staged.discard_staged(&chain()).unwrap();
        assert!(staged.append_staged(&chain(), at()).unwrap().is_empty());
        for b in [batch("b", 0, 10..13), batch("c", 3, 20..25)] {
            plain
                .append_many(
                    vec![ChainBatch {
                        chain: CHAIN.into(),
                        inputs: b.inputs,
                        cursor: Some(b.next_offset),
                    }],
                    at(),
                )
                .unwrap();
        }
        assert_eq!(chain_of(&staged, CHAIN), chain_of(&plain, CHAIN));
        assert_eq!(chain_of(&staged, CHAIN).len(), 8);
    }

    /// A staged batch outlives its handle; a write cut short after it is
    /// cut off; a removal lost to a crash leaves nothing to append twice.
    #[test]
    fn staged_batches_survive_a_crash_and_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        {
            let mut ledger = open(&path);
            ledger.stage(vec![batch("a", 0, 0..3)]).unwrap();
        }
        // A torn write: half a record's header and some bytes.
        let mut torn = std::fs::OpenOptions::new()
            .append(true)
            .open(journal(&path))
            .unwrap();
        std::io::Write::write_all(&mut torn, &[0, 0, 1, 0, 9, 9, 9]).unwrap();
        drop(torn);
        let before_append = {
            let mut ledger = open(&path);
            assert_eq!(ledger.staged(CHAIN).unwrap(), Some(batch("a", 0, 0..3)));
            // Written where the torn bytes were, and read back.
            ledger
                .stage(vec![
                    batch("b", 0, 0..3),
                    on_partition_1(batch("c", 0, 5..6)),
                ])
                .unwrap();
            std::fs::read(journal(&path)).unwrap()
        };
        {
            let mut ledger = open(&path);
            assert_eq!(ledger.staged_batches().unwrap().len(), 2);
            assert_eq!(ledger.staged(CHAIN).unwrap(), Some(batch("b", 0, 0..3)));
            ledger.append_staged(&chain(), at()).unwrap();
        }
        // The append landed but its removal was lost.
        std::fs::write(journal(&path), &before_append).unwrap();
        let ledger = open(&path);
        assert_eq!(ledger.staged(CHAIN).unwrap(), None);
        assert_eq!(ledger.staged_batches().unwrap().len(), 1);
        assert_eq!(chain_of(&ledger, CHAIN).len(), 3);
    }

    /// Batches an earlier release staged in the index database are moved
    /// to the journal on open, and appended from there.
    #[test]
    fn batches_staged_in_the_index_by_an_earlier_release_are_moved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        drop(open(&path));
        {
            let db = sled::open(path.join(super::super::INDEX_DIR)).unwrap();
            let mut old = Vec::new();
            encode_batch(&mut old, &batch("a", 0, 0..4));
            db.insert(staged_key(CHAIN), old).unwrap();
            db.flush().unwrap();
        }
        let mut ledger = open(&path);
        assert_eq!(ledger.staged(CHAIN).unwrap(), Some(batch("a", 0, 0..4)));
        assert!(ledger.db.scan_prefix(b"S").next().is_none());
        ledger.append_staged(&chain(), at()).unwrap();
        assert_eq!(chain_of(&ledger, CHAIN).len(), 4);
    }

    /// Past its limit the file is rewritten with what is still staged.
    #[test]
    fn a_long_journal_is_rewritten_with_what_is_staged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let mut ledger = open(&path);
        let other = on_partition_1(batch("o", 0, 0..2));
        ledger.stage(vec![other.clone()]).unwrap();
        let mut from = 0;
        let (mut last, mut rewrites) = (0, 0);
        while from < 20_000 {
            ledger.stage(vec![batch("x", from, 0..2_000)]).unwrap();
            ledger.append_staged(&chain(), at()).unwrap();
            let len = std::fs::metadata(journal(&path)).unwrap().len();
            if len < last {
                rewrites += 1;
            }
            last = len;
            from += 2_000;
        }
        assert!(rewrites >= 2, "{rewrites}");
        assert!(std::fs::metadata(journal(&path)).unwrap().len() < staged_journal::COMPACT_AT);
        drop(ledger);
        let ledger = open(&path);
        assert_eq!(ledger.staged_batches().unwrap(), vec![other]);
        assert_eq!(ledger.cursor(CHAIN).unwrap(), Some(20_000));
    }
}
