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
//! Layout: key `S` + chain, at most one staged batch per chain; value:
//! token (u16 BE length + UTF-8), first and next source offset (i64 BE
//! each), then the inputs: u32 BE count, and per input its source (tag u8:
//! 0 file = u16 BE length + path + line u64 BE; 1 Kafka = u16 BE length +
//! topic + partition i32 BE + offset i64 BE) and its raw bytes (u32 BE
//! length + bytes). Staged records are not evidence: no auditor reads them,
//! and an export never contains them.

use jiff::Timestamp;

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

fn encode(batch: &StagedBatch) -> Vec<u8> {
    let raw_bytes: usize = batch.inputs.iter().map(|i| i.raw.len() + 64).sum();
    let mut out = Vec::with_capacity(64 + raw_bytes);
    put_str16(&mut out, &batch.token);
    out.extend_from_slice(&batch.first_offset.to_be_bytes());
    out.extend_from_slice(&batch.next_offset.to_be_bytes());
    let count = u32::try_from(batch.inputs.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for input in batch.inputs.iter().take(count as usize) {
        match &input.source {
            Source::File { path, line } => {
                out.push(0);
                put_str16(&mut out, path);
                out.extend_from_slice(&line.to_be_bytes());
            }
            Source::Kafka {
                topic,
                partition,
                offset,
            } => {
                out.push(1);
                put_str16(&mut out, topic);
                out.extend_from_slice(&partition.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
            }
        }
        let len = u32::try_from(input.raw.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&input.raw[..len as usize]);
    }
    out
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

fn decode(chain: &str, value: &[u8]) -> Option<StagedBatch> {
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
    /// Makes these batches durable as staged (one atomic write, one fsync),
    /// each replacing any batch staged before for its chain. Nothing is
    /// appended to a chain.
    pub fn stage(&mut self, batches: &[StagedBatch]) -> Result<(), StoreError> {
        self.write_staged(batches)
    }

    /// [`Ledger::stage`], keeping the batches in memory as well, so that
    /// [`Ledger::append_staged`] takes them from there instead of reading
    /// their records back (a write's inputs, a megabyte or more, which the
    /// index keeps in files of their own).
    pub fn stage_keeping(&mut self, batches: Vec<StagedBatch>) -> Result<(), StoreError> {
        self.write_staged(&batches)?;
        for b in batches {
            self.just_staged.insert(b.chain.clone(), b);
        }
        Ok(())
    }

    fn write_staged(&mut self, batches: &[StagedBatch]) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if batches.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for b in batches {
            check_chain_name(&b.chain)?;
            batch.insert(staged_key(&b.chain), encode(b));
            // Replaced: a copy kept of the batch before is no longer it.
            self.just_staged.remove(&b.chain);
        }
        self.db.apply_batch(batch)?;
        self.make_durable()
    }

    /// The batch staged for a chain, taken from what this handle kept if
    /// it staged it, else read from the index.
    fn take_staged(&mut self, chain: &str) -> Result<Option<StagedBatch>, StoreError> {
        match self.just_staged.remove(chain) {
            Some(kept) => Ok(Some(kept)),
            None => self.staged(chain),
        }
    }

    /// The batch staged for a chain, if any.
    pub fn staged(&self, chain: &str) -> Result<Option<StagedBatch>, StoreError> {
        self.needs_indexes()?;
        let key = staged_key(chain);
        match self.db.get(&key)? {
            None => Ok(None),
            Some(value) => decode(chain, &value)
                .map(Some)
                .ok_or_else(|| damaged(&key, "staged batch does not decode")),
        }
    }

    /// Every staged batch, by chain.
    pub fn staged_batches(&self) -> Result<Vec<StagedBatch>, StoreError> {
        self.needs_indexes()?;
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"S") {
            let (key, value) = item?;
            let chain = std::str::from_utf8(&key[1..])
                .map_err(|_| damaged(&key, "staged chain name is not UTF-8"))?;
            out.push(
                decode(chain, &value)
                    .ok_or_else(|| damaged(&key, "staged batch does not decode"))?,
            );
        }
        Ok(out)
    }

    /// Appends the staged batches of these chains (their source has
    /// acknowledged them) and removes them, in one atomic write with their
    /// chains' cursors. A chain whose cursor already reaches the staged
    /// batch's end had it appended before (the removal is written after
    /// the evidence acknowledges the append, so a crash can leave the
    /// record behind): the record is only removed.
    /// Returns a report per chain that had a staged batch, in order.
    pub fn append_staged(
        &mut self,
        chains: &[String],
        received_at: Timestamp,
    ) -> Result<Vec<(String, AppendReport)>, StoreError> {
        let mut batches = Vec::new();
        let mut removals = Vec::new();
        for chain in chains {
            // Taken: if the append fails, the record in the index is still
            // there to be read.
            let Some(staged) = self.take_staged(chain)? else {
                continue;
            };
            removals.push(staged_key(chain));
            if self.cursor(chain)?.is_some_and(|c| c >= staged.next_offset) {
                continue;
            }
            batches.push(ChainBatch {
                chain: staged.chain,
                inputs: staged.inputs,
                cursor: Some(staged.next_offset),
            });
        }
        let names: Vec<String> = batches.iter().map(|b| b.chain.clone()).collect();
        let reports = self.append_and_remove(batches, received_at, removals)?;
        Ok(names.into_iter().zip(reports).collect())
    }

    /// Removes staged batches whose inputs the evidence already holds (the
    /// chain's acknowledged cursor reaches their end): the append landed,
    /// and only the removal, an index write, was lost.
    pub(super) fn settle_landed_staged(&mut self) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for staged in self.staged_batches()? {
            if self
                .cursor(&staged.chain)?
                .is_some_and(|c| c >= staged.next_offset)
            {
                batch.remove(staged_key(&staged.chain));
                self.just_staged.remove(&staged.chain);
                any = true;
            }
        }
        if any {
            self.db.apply_batch(batch)?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// Drops the staged batches of these chains (their source never
    /// acknowledged them: they will be read again, here or elsewhere).
    pub fn discard_staged(&mut self, chains: &[String]) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let mut batch = sled::Batch::default();
        let mut any = false;
        for chain in chains {
            self.just_staged.remove(chain);
            let key = staged_key(chain);
            if self.db.contains_key(&key)? {
                batch.remove(key);
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        self.db.apply_batch(batch)?;
        self.make_durable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
            let bytes = encode(&batch);
            prop_assert_eq!(decode("kafka:t:0", &bytes), Some(batch));
            // Any truncation is refused, never misread.
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode("kafka:t:0", &bytes[..cut]), None);
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

    /// What a handle kept of the batches it staged is appended exactly as
    /// the index's records would be: never a copy replaced or dropped
    /// since.
    #[test]
    fn a_batch_kept_when_staged_appends_as_its_record_would() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            super::super::Ledger::open(
                dir.path().join(name),
                super::super::LedgerOptions::default(),
            )
            .unwrap()
        };
        let (mut kept, mut read) = (open("kept"), open("read"));
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let chain = ["kafka:t:0".to_owned()];
        // Kept, then replaced by a plain stage: the replacement is appended.
        kept.stage_keeping(vec![batch("a", 0, 0..3)]).unwrap();
        kept.stage(&[batch("b", 0, 10..13)]).unwrap();
        read.stage(&[batch("b", 0, 10..13)]).unwrap();
        kept.append_staged(&chain, at).unwrap();
        read.append_staged(&chain, at).unwrap();
        // Kept and appended.
        kept.stage_keeping(vec![batch("c", 3, 20..25)]).unwrap();
        read.stage(&[batch("c", 3, 20..25)]).unwrap();
        kept.append_staged(&chain, at).unwrap();
        read.append_staged(&chain, at).unwrap();
        assert_eq!(chain_of(&kept, &chain[0]), chain_of(&read, &chain[0]));
        assert_eq!(chain_of(&kept, &chain[0]).len(), 8);
        assert_eq!(kept.staged(&chain[0]).unwrap(), None);
        // Kept, then discarded: nothing is appended.
        kept.stage_keeping(vec![batch("d", 8, 30..32)]).unwrap();
        kept.discard_staged(&chain).unwrap();
        kept.append_staged(&chain, at).unwrap();
        assert_eq!(chain_of(&kept, &chain[0]).len(), 8);
    }
}
