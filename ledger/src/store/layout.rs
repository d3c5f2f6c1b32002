//! How the ledger lays out its index database (sled, under `index/`).
//!
//! Nothing here is evidence: every key but `M` and `S` can be dropped and
//! derived again from the segments.
//!
//! | key | value |
//! |---|---|
//! | `M` `format` | index format version, ASCII `2` |
//! | `M` `rebuilding` | present while the indexes are dropped and derived again (`derived.rs`) |
//! | `H` chain | how far the chain's indexes go: next_seq u64 BE, last_hash 32 B |
//! | `X` n (u64 BE) | the event ids one append recorded first: per id, u32 BE len, id, u16 BE len, chain, seq u64 BE, blake3(raw) 32 B |
//! | `R` rejection key (32 B) | u16 BE len, chain, seq u64 BE |
//! | `N` … | Merkle subtrees (`tree.rs`) |
//! | `F` u16 BE len, chain, first_seq u64 BE | where a frame starts: segment first seq u64 BE, byte offset u64 BE |
//! | `S` chain | a staged batch, by an earlier release (now `DIR/staged/`; moved there on open, `staged.rs`) |
//!
//! Format 1 kept the entries themselves in blocks (`B` keys: `count` u32
//! BE, then per record `len` u32 BE, the entry hash, the encoding); those
//! are read only by `migrate`.

use crate::entry::EntryHash;

pub const META_FORMAT_KEY: &[u8] = b"Mformat";
pub const STORE_FORMAT: &[u8] = b"2";
pub const REBUILDING_KEY: &[u8] = b"Mrebuilding";

pub fn head_key(chain: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + chain.len());
    key.push(b'H');
    key.extend_from_slice(chain.as_bytes());
    key
}

pub fn encode_head(next_seq: u64, last_hash: &EntryHash) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(&next_seq.to_be_bytes());
    out.extend_from_slice(&last_hash.0);
    out
}

pub fn decode_head(value: &[u8]) -> Option<(u64, EntryHash)> {
    if value.len() != 40 {
        return None;
    }
    let next_seq = u64::from_be_bytes(value[..8].try_into().ok()?);
    let hash: [u8; 32] = value[8..].try_into().ok()?;
    Some((next_seq, EntryHash(hash)))
}

fn put_chain(out: &mut Vec<u8>, chain: &str) {
    // Chain names are validated to at most 200 bytes before they get here.
    let len = u16::try_from(chain.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(chain.as_bytes());
}

pub fn rejection_index_key(key: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(33);
    out.push(b'R');
    out.extend_from_slice(key);
    out
}

pub fn encode_location(chain: &str, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + chain.len() + 8);
    put_chain(&mut out, chain);
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// Frames records into one block value.
pub fn encode_block<'a>(
    records: impl ExactSizeIterator<Item = (&'a EntryHash, &'a [u8])>,
) -> Vec<u8> {
    let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
    let mut out = Vec::new();
    out.extend_from_slice(&count.to_be_bytes());
    for (hash, encoding) in records {
        let len = u32::try_from(encoding.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&hash.0);
        out.extend_from_slice(encoding);
    }
    out
}

/// One record as stored: the hash kept beside the entry, and its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The position the store holds it at (block first seq + index).
    pub position: u64,
    pub hash: EntryHash,
    pub encoding: Vec<u8>,
}

/// Splits a block into records. Returns the records framed before any
/// damage, and a description of the damage, if any.
pub fn decode_block(first_seq: u64, value: &[u8]) -> (Vec<StoredRecord>, Option<String>) {
    let mut records = Vec::new();
    let Some(count) = value
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return (
            records,
            Some("block is shorter than its record count".to_owned()),
        );
    };
    let mut pos = 4usize;
    for i in 0..u64::from(count) {
        let position = first_seq + i;
        let Some(len) = value
            .get(pos..pos + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
        else {
            return (
                records,
                Some(format!("block ends inside the length of record {i}")),
            );
        };
        let start = pos + 4;
        let Some(hash) = value
            .get(start..start + 32)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        else {
            return (
                records,
                Some(format!("block ends inside the hash of record {i}")),
            );
        };
        let body = start + 32;
        let Some(encoding) = value.get(body..body + len as usize) else {
            return (
                records,
                Some(format!("block ends inside record {i} ({len} bytes framed)")),
            );
        };
        records.push(StoredRecord {
            position,
            hash: EntryHash(hash),
            encoding: encoding.to_vec(),
        });
        pos = body + len as usize;
    }
    if pos != value.len() {
        return (
            records,
            Some(format!(
                "{} bytes follow the last record of the block",
                value.len() - pos
            )),
        );
    }
    (records, None)
}

/// The prefix of every frame position key of a chain.
pub fn frame_prefix(chain: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + chain.len() + 8);
    key.push(b'F');
    put_chain(&mut key, chain);
    key
}

/// Key of the position of the frame of `chain` that starts at `first_seq`.
pub fn frame_key(chain: &str, first_seq: u64) -> Vec<u8> {
    let mut key = frame_prefix(chain);
    key.extend_from_slice(&first_seq.to_be_bytes());
    key
}

pub fn encode_frame_position(segment: u64, offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&segment.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out
}

/// (frame first seq, segment first seq, offset) from a frame key and value.
pub fn decode_frame_position(key: &[u8], value: &[u8]) -> Option<(u64, u64, u64)> {
    let seq = u64::from_be_bytes(key.get(key.len().checked_sub(8)?..)?.try_into().ok()?);
    let segment = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let offset = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((seq, segment, offset))
}
