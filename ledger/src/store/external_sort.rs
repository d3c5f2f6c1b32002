//! Sorting more records than fit in memory: records gathered in a bounded
//! buffer, each full buffer sorted and spilled to a file of its own, the
//! files merged in order at the end.
//!
//! A record is a key, an order (ties between equal keys) and a value; the
//! records come back by key, then order. Spill files are scratch, in a
//! directory the caller owns and removes: they are written once, read
//! once, and never fsynced (a crash loses only the work in progress).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{StoreError, io_error as io};

/// Where one record sits in the buffer.
#[derive(Clone, Copy)]
struct Slot {
    at: usize,
    key_len: u32,
    value_len: u32,
    /// The key's first 8 bytes, big-endian, zero-padded: comparing these
    /// orders most pairs without reading the arena (ties compare keys).
    prefix: u64,
    order: u128,
}

fn prefix_of(key: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    let n = key.len().min(8);
    first[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(first)
}

/// Gathers records, spilling sorted files when the buffer is full.
pub(super) struct ExternalSort {
    dir: PathBuf,
    budget: usize,
    arena: Vec<u8>,
    slots: Vec<Slot>,
    spills: Vec<PathBuf>,
    records: u64,
}

impl std::fmt::Debug for ExternalSort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalSort")
            .field("dir", &self.dir)
            .field("records", &self.records)
            .field("spills", &self.spills.len())
            .finish_non_exhaustive()
    }
}

impl ExternalSort {
    /// Spills into `dir` whenever the buffered keys and values reach
    /// `budget` bytes.
    pub(super) fn new(dir: &Path, budget: usize) -> Self {
        ExternalSort {
            dir: dir.to_owned(),
            budget,
            arena: Vec::new(),
            slots: Vec::new(),
            spills: Vec::new(),
            records: 0,
        }
    }

    /// Records pushed so far.
    pub(super) fn records(&self) -> u64 {
        self.records
    }

    pub(super) fn push(&mut self, key: &[u8], order: u128, value: &[u8]) -> Result<(), StoreError> {
        let (Ok(key_len), Ok(value_len)) = (u32::try_from(key.len()), u32::try_from(value.len()))
        else {
            return Err(StoreError::Damaged {
                key: "external sort".into(),
                detail: "a record of 4 GiB or more".into(),
            });
        };
        let at = self.arena.len();
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(value);
        self.slots.push(Slot {
            at,
            key_len,
            value_len,
            prefix: prefix_of(key),
            order,
        });
        self.records += 1;
        if self.arena.len() + self.slots.len() * std::mem::size_of::<Slot>() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn key(&self, slot: &Slot) -> &[u8] {
        &self.arena[slot.at..slot.at + slot.key_len as usize]
    }

    fn value(&self, slot: &Slot) -> &[u8] {
        let from = slot.at + slot.key_len as usize;
        &self.arena[from..from + slot.value_len as usize]
    }

    fn sort_buffer(&mut self) {
        let mut slots = std::mem::take(&mut self.slots);
        slots.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| self.key(a).cmp(self.key(b)))
                .then(a.order.cmp(&b.order))
        });
        self.slots = slots;
    }

    fn spill(&mut self) -> Result<(), StoreError> {
        self.sort_buffer();
        let path = self.dir.join(format!("spill-{:06}", self.spills.len()));
        let file = File::create(&path).map_err(io(&path))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        for slot in &self.slots {
            write_record(&mut out, self.key(slot), slot.order, self.value(slot))
                .map_err(io(&path))?;
        }
        out.flush().map_err(io(&path))?;
        self.spills.push(path);
        self.arena.clear();
        self.slots.clear();
        Ok(())
    }

    /// Every record of every sort, by key then order: each sort's spill
    /// files, and what its buffer holds still, merged.
    pub(super) fn merge(sorts: Vec<ExternalSort>) -> Result<Sorted, StoreError> {
        let mut files = Vec::new();
        let mut buffers = Vec::new();
        for mut sort in sorts {
            files.append(&mut sort.spills);
            if !sort.slots.is_empty() {
                sort.sort_buffer();
                buffers.push(Source::Memory {
                    next: 0,
                    arena: std::mem::take(&mut sort.arena),
                    slots: std::mem::take(&mut sort.slots),
                });
            }
        }
        // Too many files to merge at once: merge the oldest into one, over
        // and over (each record is then written and read once more).
        let mut merged = 0;
        while files.len() + buffers.len() > MAX_FAN_IN && files.len() > 1 {
            let group: Vec<PathBuf> = files.drain(..MAX_FAN_IN.min(files.len())).collect();
            let into = group[0].with_file_name(format!("merged-{merged:06}"));
            merged += 1;
            let file = File::create(&into).map_err(io(&into))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            for record in Sorted::of(open(&group)?)?.records() {
                let record = record?;
                write_record(&mut out, &record.key, record.order, &record.value)
                    .map_err(io(&into))?;
            }
            out.flush().map_err(io(&into))?;
            for path in &group {
                std::fs::remove_file(path).map_err(io(path))?;
            }
            files.push(into);
        }
        let mut sources = open(&files)?;
        sources.append(&mut buffers);
        Sorted::of(sources)
    }
}

/// Spill files merged at once: a merge holds an open file and a read
/// buffer per file, and 10^8 changes spill several hundred files.
const MAX_FAN_IN: usize = 64;

fn open(paths: &[PathBuf]) -> Result<Vec<Source>, StoreError> {
    paths
        .iter()
        .map(|path| {
            let file = File::open(path).map_err(io(path))?;
            Ok(Source::File {
                path: path.clone(),
                input: BufReader::with_capacity(1 << 18, file),
            })
        })
        .collect()
}

/// One record read back: key, order, value.
struct Record {
    key: Vec<u8>,
    order: u128,
    value: Vec<u8>,
}

fn write_record(
    out: &mut impl Write,
    key: &[u8],
    order: u128,
    value: &[u8],
) -> std::io::Result<()> {
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key)?;
    out.write_all(&order.to_be_bytes())?;
    out.write_all(&(value.len() as u32).to_le_bytes())?;
    out.write_all(value)
}

/// Sorted records not yet merged: a spill file, or a sorted buffer.
enum Source {
    File {
        path: PathBuf,
        input: BufReader<File>,
    },
    Memory {
        next: usize,
        arena: Vec<u8>,
        slots: Vec<Slot>,
    },
}

impl Source {
    fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
        match self {
            Source::File { path, input } => read_record(input).map_err(io(path)),
            Source::Memory { next, arena, slots } => {
                let Some(slot) = slots.get(*next) else {
                    return Ok(None);
                };
                *next += 1;
                let from = slot.at + slot.key_len as usize;
                Ok(Some(Record {
                    key: arena[slot.at..from].to_vec(),
                    order: slot.order,
                    value: arena[from..from + slot.value_len as usize].to_vec(),
                }))
            }
        }
    }
}

fn read_record(input: &mut impl Read) -> std::io::Result<Option<Record>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut key = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut key)?;
    let mut order = [0u8; 16];
    input.read_exact(&mut order)?;
    input.read_exact(&mut len)?;
    let mut value = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut value)?;
    Ok(Some(Record {
        key,
        order: u128::from_be_bytes(order),
        value,
    }))
}

/// The smallest unread record of one source.
struct Head {
    record: Record,
    source: usize,
}

impl Head {
    fn rank(&self) -> (&[u8], u128, usize) {
        (&self.record.key, self.record.order, self.source)
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reversed: `BinaryHeap` pops its greatest, the merge wants the least.
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank().cmp(&self.rank())
    }
}

/// The records in order, merged from their sources.
pub(super) struct Sorted {
    heap: BinaryHeap<Head>,
    sources: Vec<Source>,
}

impl Sorted {
    fn of(mut sources: Vec<Source>) -> Result<Sorted, StoreError> {
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (source, input) in sources.iter_mut().enumerate() {
            if let Some(record) = input.next_record()? {
                heap.push(Head { record, source });
            }
        }
        Ok(Sorted { heap, sources })
    }

    /// The next record, with its order.
    fn next_record(&mut self) -> Option<Result<Record, StoreError>> {
        let Head { record, source } = self.heap.pop()?;
        match self.sources[source].next_record() {
            Ok(Some(next)) => self.heap.push(Head {
                record: next,
                source,
            }),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(record))
    }

    fn records(mut self) -> impl Iterator<Item = Result<Record, StoreError>> {
        std::iter::from_fn(move || self.next_record())
    }
}

impl Iterator for Sorted {
    /// Key and value.
    type Item = Result<(Vec<u8>, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
            .map(|r| r.map(|record| (record.key, record.value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type KeyValue = (Vec<u8>, Vec<u8>);

    fn sorted(records: &[(Vec<u8>, u128, Vec<u8>)], budget: usize) -> (Vec<KeyValue>, usize) {
        let tmp = tempfile::tempdir().unwrap();
        let mut sort = ExternalSort::new(tmp.path(), budget);
        for (k, o, v) in records {
            sort.push(k, *o, v).unwrap();
        }
        let spills = sort.spills.len();
        let out = ExternalSort::merge(vec![sort])
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (out, spills)
    }

    #[test]
    fn several_sorts_merge_into_one_order() {
        let tmp = tempfile::tempdir().unwrap();
        let sorts: Vec<_> = (0..3u128)
            .map(|n| {
                let dir = tmp.path().join(format!("s{n}"));
                std::fs::create_dir(&dir).unwrap();
                // The first spills often, the last never.
                let mut sort = ExternalSort::new(&dir, [300, 5_000, 1 << 20][n as usize]);
                for i in (0..400u128).filter(|i| i % 3 == n) {
                    sort.push(&[(i % 7) as u8], i, &i.to_le_bytes()).unwrap();
                }
                sort
            })
            .collect();
        assert!(!sorts[0].spills.is_empty() && sorts[2].spills.is_empty());
        let out: Vec<(u8, u128)> = ExternalSort::merge(sorts)
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k[0], u128::from_le_bytes(v.try_into().unwrap()))
            })
            .collect();
        let mut expected: Vec<(u8, u128)> = (0..400u128).map(|i| ((i % 7) as u8, i)).collect();
        expected.sort();
        assert_eq!(out, expected);
    }

    proptest! {
        /// Whatever the budget (all in memory, or a spill every few
        /// records), every record comes back once, by key then order.
        #[test]
        fn records_come_back_by_key_then_order(
            records in proptest::collection::vec(
                (proptest::collection::vec(0u8..4, 0..4), 0u128..6, any::<u8>()),
                0..200,
            ),
            budget in 1usize..2_000,
        ) {
            let records: Vec<_> = records
                .into_iter()
                .map(|(k, o, extra)| {
                    let mut v = o.to_le_bytes().to_vec();
                    v.push(extra);
                    (k, o, v)
                })
                .collect();
            let mut expected: Vec<_> = records.iter().map(|(k, _, v)| (k.clone(), v.clone())).collect();
            let order = |v: &[u8]| u128::from_le_bytes(v[..16].try_into().unwrap());
            expected.sort_by(|a, b| a.0.cmp(&b.0).then(order(&a.1).cmp(&order(&b.1))));
            let (mut out, _) = sorted(&records, budget);
            let ranks: Vec<_> = out.iter().map(|(k, v)| (k.clone(), order(v))).collect();
            let want: Vec<_> = expected.iter().map(|(k, v)| (k.clone(), order(v))).collect();
            prop_assert_eq!(ranks, want);
            // The same records, whatever order equal ranks came back in.
            out.sort();
            expected.sort();
            prop_assert_eq!(out, expected);
        }
    }

    #[test]
    fn equal_keys_come_back_in_their_order_across_spills() {
        let records: Vec<_> = (0..1_000u128)
            .rev()
            .map(|i| (vec![(i % 3) as u8], i, i.to_le_bytes().to_vec()))
            .collect();
        let (out, spills) = sorted(&records, 500);
        // More than are merged at once: merged in passes.
        assert!(spills > MAX_FAN_IN, "{spills} spills");
        let mut last: Option<(Vec<u8>, u128)> = None;
        for (k, v) in out {
            let order = u128::from_le_bytes(v.try_into().unwrap());
            if let Some(prev) = &last {
                assert!((prev.0.as_slice(), prev.1) < (k.as_slice(), order));
            }
            last = Some((k, order));
        }
    }
}
