//! One run of saved states: an immutable file of key → value records in
//! strictly increasing key order.
//!
//! ```text
//! block*   u32 stored length, u32 raw length, 16 bytes checksum of the
//!          stored bytes, stored bytes (the raw records compressed)
//!          raw records: varint key length, key, varint value length, value
//! index    u64 records, u32 probes, u64 words, words × u64 (Bloom filter),
//!          u64 blocks, blocks × (u64 offset, varint key length, first key)
//! trailer  u64 index offset, u64 index length, 16 bytes checksum of the
//!          index, 8 bytes magic
//! ```
//!
//! Integers are little-endian. Every block and the index carry their own
//! checksum, so a damaged run is named when it is read, never trusted. The
//! magic names the version ([`RunVersion`]), which says how blocks are
//! compressed and how checksums and the Bloom filter's key hashes are
//! made: runs of version 1 are still read, runs are written in version 2. A run is the ledger's own working
//! data (projection, event ids, monitor book), not evidence, so it is not
//! part of FORMAT.md.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::bloom::{Bloom, KeyHash};
use crate::store::StoreError;

/// Raw bytes gathered before a block is cut: small, because a lookup
/// reads and decompresses one whole block.
const BLOCK_RAW_BYTES: usize = 4096;
const BLOCK_HEADER: usize = 4 + 4 + 16;
const TRAILER: usize = 8 + 8 + 16 + 8;
const MAGIC_V1: &[u8; 8] = b"LLRUN\x01\0\0";
const MAGIC_V2: &[u8; 8] = b"LLRUN\x02\0\0";
/// No block of ours decompresses to more (a record is one item's state).
const MAX_RAW_BLOCK: usize = 256 << 20;
const ZSTD_LEVEL: i32 = 1;

pub(super) fn checksum(bytes: &[u8]) -> [u8; 16] {
    let mut sum = [0u8; 16];
    sum.copy_from_slice(&blake3::hash(bytes).as_bytes()[..16]);
    sum
}

/// How a run's blocks are compressed, and its checksums and its Bloom
/// filter's key hashes made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunVersion {
    /// zstd (level 1) blocks; the first 16 bytes of BLAKE3 for checksums
    /// and key hashes.
    V1,
    /// LZ4 blocks (the block format, without frame); XXH3-128 for
    /// checksums and key hashes. Every state saved is compressed again by
    /// each merge that rewrites it, and read back by each lookup: LZ4
    /// spends a fraction of zstd's time on a 4 KiB block, for runs that
    /// are somewhat larger. A run's checksums guard against damage (a torn
    /// or flipped block), not forgery: whoever can write the run can write
    /// the manifest beside it; BLAKE3 of every block written and read
    /// again, and of every key, was most of a save's hashing.
    V2,
}

impl RunVersion {
    /// The version runs are written in.
    pub(crate) const CURRENT: RunVersion = RunVersion::V2;

    fn magic(self) -> &'static [u8; 8] {
        match self {
            RunVersion::V1 => MAGIC_V1,
            RunVersion::V2 => MAGIC_V2,
        }
    }

    fn of_magic(magic: &[u8]) -> Option<Self> {
        [RunVersion::V1, RunVersion::V2]
            .into_iter()
            .find(|v| v.magic() == magic)
    }

    fn checksum(self, bytes: &[u8]) -> [u8; 16] {
        match self {
            RunVersion::V1 => checksum(bytes),
            RunVersion::V2 => xxhash_rust::xxh3::xxh3_128(bytes).to_le_bytes(),
        }
    }

    fn compress(self, raw: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            RunVersion::V1 => compress_zstd(raw),
            RunVersion::V2 => Ok(lz4_flex::block::compress(raw)),
        }
    }

    fn decompress(self, stored: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
        match self {
            RunVersion::V1 => decompress_zstd(stored, raw_len).map_err(|e| e.to_string()),
            RunVersion::V2 => {
                lz4_flex::block::decompress(stored, raw_len).map_err(|e| e.to_string())
            }
        }
    }

    /// A key's hash for the Bloom filter of a run of this version.
    pub(crate) fn key_hash(self, key: &[u8]) -> KeyHash {
        match self {
            RunVersion::V1 => KeyHash::of_blake3(key),
            RunVersion::V2 => KeyHash::of_xxh3(key),
        }
    }
}

fn damaged(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        key: format!("projection run {}", path.display()),
        detail: detail.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

thread_local! {
    // One zstd context per thread, not one per block: making a context
    // cost as much as compressing a 4 KiB block.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress_zstd(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some(compressor) => compressor,
            empty => empty.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        compressor.compress(raw)
    })
}

fn decompress_zstd(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match &mut *slot {
            Some(decompressor) => decompressor,
            empty => empty.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress(stored, raw_len)
    })
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A reader over bytes that names what ran out.
pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }

    pub(super) fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(word))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        let mut word = [0u8; 4];
        word.copy_from_slice(self.take(4)?);
        Some(u32::from_le_bytes(word))
    }

    pub(super) fn varint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    pub(super) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }

    /// The next raw record.
    pub(super) fn record(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        Some((self.bytes()?, self.bytes()?))
    }

    /// Where the next length-prefixed bytes lie, as a range of the
    /// cursor's bytes.
    pub(super) fn range(&mut self) -> Option<Range<usize>> {
        let n = usize::try_from(self.varint()?).ok()?;
        let start = self.at;
        self.take(n)?;
        Some(start..self.at)
    }
}

/// Writes a run, in key order.
pub(crate) struct RunWriter {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
    raw: Vec<u8>,
    first_key: Option<Vec<u8>>,
    last_key: Option<Vec<u8>>,
    blocks: Vec<(u64, Vec<u8>)>,
    bloom: Bloom,
    records: u64,
    version: RunVersion,
}

impl RunWriter {
    /// Creates `path` (which must not exist) for at most `expected` records
    /// (the Bloom filter's size).
    pub(crate) fn create(path: &Path, expected: u64) -> Result<Self, StoreError> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io(path))?;
        Ok(RunWriter {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 20, file),
            written: 0,
            raw: Vec::with_capacity(BLOCK_RAW_BYTES * 2),
            first_key: None,
            last_key: None,
            blocks: Vec::new(),
            bloom: Bloom::for_keys(expected),
            records: 0,
            version: RunVersion::CURRENT,
        })
    }

    /// Writes the run in `version` rather than the current one (to test
    /// reading the runs of an older build).
    #[cfg(test)]
    pub(crate) fn in_version(mut self, version: RunVersion) -> Self {
        self.version = version;
        self
    }

    /// Where the run is being written.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a record; keys must come in strictly increasing order.
    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(damaged(&self.path, "records written out of key order"));
        }
        if self.first_key.is_none() {
            self.first_key = Some(key.to_vec());
        }
        put_varint(&mut self.raw, key.len() as u64);
        self.raw.extend_from_slice(key);
        put_varint(&mut self.raw, value.len() as u64);
        self.raw.extend_from_slice(value);
        self.bloom.insert(self.version.key_hash(key));
        self.records += 1;
        match &mut self.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        if self.raw.len() >= BLOCK_RAW_BYTES {
            self.cut_block()?;
        }
        Ok(())
    }

    fn cut_block(&mut self) -> Result<(), StoreError> {
        let Some(first_key) = self.first_key.take() else {
            return Ok(());
        };
        let stored = self.version.compress(&self.raw).map_err(io(&self.path))?;
        let mut header = [0u8; BLOCK_HEADER];
        header[..4].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&(self.raw.len() as u32).to_le_bytes());
        header[8..].copy_from_slice(&self.version.checksum(&stored));
        self.out.write_all(&header).map_err(io(&self.path))?;
        self.out.write_all(&stored).map_err(io(&self.path))?;
        self.blocks.push((self.written, first_key));
        self.written += (BLOCK_HEADER + stored.len()) as u64;
        self.raw.clear();
        Ok(())
    }

    /// Writes the last block, the index and the trailer, and fsyncs the
    /// file: a run is named in the projection's manifest only once it is
    /// durable. Returns the file's length and its record count.
    pub(crate) fn finish(mut self) -> Result<(u64, u64), StoreError> {
        self.cut_block()?;
        let mut index = Vec::with_capacity(32 + self.bloom.words().len() * 8);
        index.extend_from_slice(&self.records.to_le_bytes());
        index.extend_from_slice(&self.bloom.probes().to_le_bytes());
        index.extend_from_slice(&(self.bloom.words().len() as u64).to_le_bytes());
        for word in self.bloom.words() {
            index.extend_from_slice(&word.to_le_bytes());
        }
        index.extend_from_slice(&(self.blocks.len() as u64).to_le_bytes());
        for (offset, first_key) in &self.blocks {
            index.extend_from_slice(&offset.to_le_bytes());
            put_varint(&mut index, first_key.len() as u64);
            index.extend_from_slice(first_key);
        }
        let mut trailer = Vec::with_capacity(TRAILER);
        trailer.extend_from_slice(&self.written.to_le_bytes());
        trailer.extend_from_slice(&(index.len() as u64).to_le_bytes());
        trailer.extend_from_slice(&self.version.checksum(&index));
        trailer.extend_from_slice(self.version.magic());
        self.out.write_all(&index).map_err(io(&self.path))?;
        self.out.write_all(&trailer).map_err(io(&self.path))?;
        let file = self.out.into_inner().map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        file.sync_data().map_err(io(&self.path))?;
        let length = self.written + (index.len() + TRAILER) as u64;
        Ok((length, self.records))
    }
}

/// Blocks a run keeps decoded, by block number modulo this: a lookup of
/// a hot key (an account that each of its items names) is then served
/// from memory. At most 1 MiB of raw blocks per run.
const CACHED_BLOCKS: usize = 256;

/// Decoded blocks lately read by lookups, direct-mapped.
#[derive(Debug, Default)]
struct BlockCache {
    slots: Vec<Option<(usize, Arc<Vec<u8>>)>>,
}

impl BlockCache {
    fn get(&self, block: usize) -> Option<Arc<Vec<u8>>> {
        match self.slots.get(block % CACHED_BLOCKS) {
            Some(Some((cached, raw))) if *cached == block => Some(Arc::clone(raw)),
            _ => None,
        }
    }

    fn put(&mut self, block: usize, raw: Arc<Vec<u8>>) {
        if self.slots.is_empty() {
            self.slots.resize(CACHED_BLOCKS, None);
        }
        if let Some(slot) = self.slots.get_mut(block % CACHED_BLOCKS) {
            *slot = Some((block, raw));
        }
    }
}

/// A run opened for reading: its index in memory, its blocks on disk.
#[derive(Debug)]
pub(crate) struct Run {
    path: PathBuf,
    file: File,
    cache: Mutex<BlockCache>,
    records: u64,
    length: u64,
    version: RunVersion,
    bloom: Bloom,
    /// Each block's offset, and where the blocks end.
    offsets: Vec<u64>,
    first_keys: Vec<Box<[u8]>>,
}

impl Run {
    /// Opens a run and reads its index, checked against its checksum.
    pub(crate) fn open(path: &Path) -> Result<Run, StoreError> {
        let file = File::open(path).map_err(io(path))?;
        let length = file.metadata().map_err(io(path))?.len();
        if length < TRAILER as u64 {
            return Err(damaged(
                path,
                format!("{length} bytes: shorter than a trailer"),
            ));
        }
        let mut trailer = [0u8; TRAILER];
        file.read_exact_at(&mut trailer, length - TRAILER as u64)
            .map_err(io(path))?;
        let mut t = Cursor::new(&trailer);
        let (Some(index_at), Some(index_len), Some(sum), Some(magic)) =
            (t.u64(), t.u64(), t.take(16), t.take(8))
        else {
            return Err(damaged(path, "trailer cut short"));
        };
        let Some(version) = RunVersion::of_magic(magic) else {
            return Err(damaged(
                path,
                "not a run of saved states of a known version (bad magic)",
            ));
        };
        if index_at.checked_add(index_len) != Some(length - TRAILER as u64) {
            return Err(damaged(
                path,
                "the trailer's index position does not fit the file",
            ));
        }
        let mut index = vec![0u8; usize::try_from(index_len).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut index, index_at).map_err(io(path))?;
        if version.checksum(&index) != sum {
            return Err(damaged(path, "the index does not match its checksum"));
        }
        let parsed = Self::parse_index(&index, index_at)
            .ok_or_else(|| damaged(path, "the index is malformed"))?;
        let (records, bloom, offsets, first_keys) = parsed;
        Ok(Run {
            path: path.to_owned(),
            file,
            cache: Mutex::default(),
            records,
            length,
            version,
            bloom,
            offsets,
            first_keys,
        })
    }

    #[allow(clippy::type_complexity)]
    fn parse_index(
        index: &[u8],
        blocks_end: u64,
    ) -> Option<(u64, Bloom, Vec<u64>, Vec<Box<[u8]>>)> {
        let mut c = Cursor::new(index);
        let records = c.u64()?;
        let probes = c.u32()?;
        let words = usize::try_from(c.u64()?).ok()?;
        if words > index.len() / 8 {
            return None;
        }
        let bloom = Bloom::from_parts((0..words).map(|_| c.u64()).collect::<Option<_>>()?, probes)?;
        let blocks = usize::try_from(c.u64()?).ok()?;
        if blocks > index.len() {
            return None;
        }
        let mut offsets = Vec::with_capacity(blocks + 1);
        let mut first_keys = Vec::with_capacity(blocks);
        for _ in 0..blocks {
            let offset = c.u64()?;
            if offsets.last().is_some_and(|&last| offset <= last) || offset >= blocks_end {
                return None;
            }
            offsets.push(offset);
            first_keys.push(c.bytes()?.into());
        }
        if !c.done() || (blocks > 0 && offsets.first() != Some(&0)) {
            return None;
        }
        offsets.push(blocks_end);
        Some((records, bloom, offsets, first_keys))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    pub(crate) fn length(&self) -> u64 {
        self.length
    }

    /// How the run's checksums and key hashes are made.
    pub(crate) fn version(&self) -> RunVersion {
        self.version
    }

    /// Each block's first key, in order.
    pub(crate) fn first_keys(&self) -> &[Box<[u8]>] {
        &self.first_keys
    }

    fn blocks(&self) -> usize {
        self.first_keys.len()
    }

    /// Block `i`'s raw records, read and checked.
    fn block(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        let (Some(&start), Some(&end)) = (self.offsets.get(i), self.offsets.get(i + 1)) else {
            return Err(damaged(&self.path, format!("no block {i}")));
        };
        let mut bytes = vec![0u8; usize::try_from(end - start).unwrap_or(usize::MAX)];
        self.file
            .read_exact_at(&mut bytes, start)
            .map_err(io(&self.path))?;
        let at = |detail: &str| damaged(&self.path, format!("block at byte {start}: {detail}"));
        let mut c = Cursor::new(&bytes);
        let (Some(stored_len), Some(raw_len), Some(sum)) = (c.u32(), c.u32(), c.take(16)) else {
            return Err(at("header cut short"));
        };
        let stored = c
            .take(stored_len as usize)
            .filter(|_| c.done())
            .ok_or_else(|| at("its length does not fit the run's index"))?;
        if self.version.checksum(stored) != sum {
            return Err(at("does not match its checksum"));
        }
        let raw_len = raw_len as usize;
        if raw_len > MAX_RAW_BLOCK {
            return Err(at("claims an absurd raw length"));
        }
        let raw = self
            .version
            .decompress(stored, raw_len)
            .map_err(|e| at(&e))?;
        if raw.len() != raw_len {
            return Err(at("decompresses to another length than it claims"));
        }
        Ok(raw)
    }

    /// Block `i` from the cache, or read and then cached.
    fn cached_block(&self, i: usize) -> Result<Arc<Vec<u8>>, StoreError> {
        // A poisoned lock only means another reader panicked mid-update of
        // a slot; the cache holds whole values, so it is still usable.
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(i);
        if let Some(raw) = cached {
            return Ok(raw);
        }
        let raw = Arc::new(self.block(i)?);
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .put(i, Arc::clone(&raw));
        Ok(raw)
    }

    /// The block that would hold `key`: the last whose first key is not
    /// greater.
    fn block_for(&self, key: &[u8]) -> Option<usize> {
        self.first_keys
            .partition_point(|first| first.as_ref() <= key)
            .checked_sub(1)
    }

    /// The value stored under `key` (whose hash, in this run's version,
    /// is `hash`), if any.
    pub(crate) fn get(&self, key: &[u8], hash: KeyHash) -> Result<Option<Vec<u8>>, StoreError> {
        // Below the run's first key (as an event id's collided key is below
        // every fingerprint key): not here, without a probe of the filter.
        if self
            .first_keys
            .first()
            .is_none_or(|first| key < first.as_ref())
        {
            return Ok(None);
        }
        if !self.bloom.may_contain(hash) {
            return Ok(None);
        }
        let Some(block) = self.block_for(key) else {
            return Ok(None);
        };
        let raw = self.cached_block(block)?;
        let mut c = Cursor::new(&raw);
        while !c.done() {
            let (k, v) = c.record().ok_or_else(|| {
                damaged(&self.path, format!("block {block}: a record is cut short"))
            })?;
            match k.cmp(key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(Some(v.to_vec())),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }
}

/// A run's records from a key on, in key order: a cursor that stands on
/// one record at a time and lends it, so that a merge copies no record
/// it only passes on.
pub(crate) struct RunRecords {
    run: Arc<Run>,
    next_block: usize,
    raw: Vec<u8>,
    at: usize,
    /// The record stood on: its key and value, as ranges of `raw`.
    key: Range<usize>,
    value: Range<usize>,
    /// Records before this key are passed over; `None` once one is not.
    from: Option<Vec<u8>>,
}

impl RunRecords {
    pub(crate) fn new(run: Arc<Run>, from: &[u8]) -> Self {
        let next_block = run.block_for(from).unwrap_or(0);
        RunRecords {
            run,
            next_block,
            raw: Vec::new(),
            at: 0,
            key: 0..0,
            value: 0..0,
            from: (!from.is_empty()).then(|| from.to_vec()),
        }
    }

    /// Moves to the next record: false past the last. After an error the
    /// cursor stands past the last.
    pub(crate) fn advance(&mut self) -> Result<bool, StoreError> {
        loop {
            if self.at >= self.raw.len() {
                if self.next_block >= self.run.blocks() {
                    return Ok(false);
                }
                match self.run.block(self.next_block) {
                    Ok(raw) => self.raw = raw,
                    Err(e) => {
                        self.stop();
                        return Err(e);
                    }
                }
                self.next_block += 1;
                self.at = 0;
            }
            let mut c = Cursor::new(&self.raw);
            c.at = self.at;
            let (Some(key), Some(value)) = (c.range(), c.range()) else {
                let block = self.next_block - 1;
                self.stop();
                return Err(damaged(
                    &self.run.path,
                    format!("block {block}: a record is cut short"),
                ));
            };
            self.at = c.at;
            self.key = key;
            self.value = value;
            if let Some(from) = &self.from {
                if self.key() < from.as_slice() {
                    continue;
                }
                self.from = None;
            }
            return Ok(true);
        }
    }

    fn stop(&mut self) {
        self.next_block = self.run.blocks();
        self.raw.clear();
        self.at = 0;
        self.key = 0..0;
        self.value = 0..0;
    }

    /// The key of the record stood on (empty before the first).
    pub(crate) fn key(&self) -> &[u8] {
        self.raw.get(self.key.clone()).unwrap_or_default()
    }

    /// The value of the record stood on.
    pub(crate) fn value(&self) -> &[u8] {
        self.raw.get(self.value.clone()).unwrap_or_default()
    }
}
