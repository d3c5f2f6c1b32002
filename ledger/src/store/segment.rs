//! Segment files: the ledger's own framing of a chain's entries (pure).
//!
//! A segment holds consecutive entries of one chain. It starts with a
//! header naming the chain and the first seq, then one frame per append:
//! the records of that append and a BLAKE3 checksum over the frame. A
//! frame is written whole and fsynced before the manifest acknowledges it,
//! so a torn write can only leave bytes past the acknowledged length.
//! FORMAT.md section 15 specifies the bytes.

use crate::entry::EntryHash;

use super::layout::StoredRecord;

/// The first 8 bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"LLSEG\0\0\x01";
/// `u32` body length, `u8` codec, `u64` first seq, `u32` record count.
pub const FRAME_HEADER_LEN: usize = 17;
pub const CHECKSUM_LEN: usize = 32;
/// Records stored as they are.
pub const CODEC_NONE: u8 = 0;
/// Records compressed as one zstd frame (RFC 8878) with its content size
/// and content checksum.
pub const CODEC_ZSTD: u8 = 1;
/// A frame never holds more than this many bytes of records once
/// decompressed (a damaged or hostile size cannot make a reader allocate
/// more).
pub const MAX_RECORDS_BYTES: usize = 1 << 30;
/// The zstd level frames are written at: fast, and most of the gain.
const ZSTD_LEVEL: i32 = 1;

/// What a segment header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub chain: String,
    pub first_seq: u64,
}

/// A segment's header bytes: magic, `u16` chain length, chain, `u64`
/// first seq, and the BLAKE3 hash of all of that.
pub fn encode_header(chain: &str, first_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 2 + chain.len() + 8 + 32);
    out.extend_from_slice(&MAGIC);
    // Chain names are at most 200 bytes (checked before they get here).
    let len = u16::try_from(chain.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(chain.as_bytes());
    out.extend_from_slice(&first_seq.to_be_bytes());
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// The length of a header for `chain`.
pub fn header_len(chain: &str) -> usize {
    8 + 2 + chain.len() + 8 + 32
}

/// Reads a header off the front of `bytes`: the header and its length.
pub fn decode_header(bytes: &[u8]) -> Result<(SegmentHeader, usize), String> {
    if bytes.get(..8) != Some(&MAGIC[..]) {
        return Err("does not start with the segment magic".to_owned());
    }
    let len = bytes
        .get(8..10)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or("ends inside the header")?;
    let end = 10 + len + 8;
    let (Some(chain), Some(seq), Some(sum)) = (
        bytes.get(10..10 + len),
        bytes.get(10 + len..end),
        bytes.get(end..end + 32),
    ) else {
        return Err("ends inside the header".to_owned());
    };
    if blake3::hash(&bytes[..end]).as_bytes() != sum {
        return Err("header checksum does not match".to_owned());
    }
    let chain = String::from_utf8(chain.to_vec()).map_err(|_| "chain name is not UTF-8")?;
    let first_seq = u64::from_be_bytes(seq.try_into().map_err(|_| "bad first seq")?);
    Ok((SegmentHeader { chain, first_seq }, end + 32))
}

/// A frame's fixed-size header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub body_len: u32,
    pub codec: u8,
    pub first_seq: u64,
    pub count: u32,
}

impl FrameHeader {
    pub fn decode(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        let u32_at =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[5..13]);
        FrameHeader {
            body_len: u32_at(0),
            codec: bytes[4],
            first_seq: u64::from_be_bytes(seq),
            count: u32_at(13),
        }
    }

    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[..4].copy_from_slice(&self.body_len.to_be_bytes());
        out[4] = self.codec;
        out[5..13].copy_from_slice(&self.first_seq.to_be_bytes());
        out[13..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    /// Bytes the whole frame takes: header, body, checksum.
    pub fn frame_len(&self) -> u64 {
        (FRAME_HEADER_LEN + CHECKSUM_LEN) as u64 + u64::from(self.body_len)
    }
}

/// One frame: records `first_seq..first_seq + records.len()`, each as
/// `u32` length, 32-byte entry hash, entry encoding, stored as they are
/// (`compress` false) or as one zstd frame; then the BLAKE3 hash of the
/// frame header and body.
pub fn encode_frame<'a>(
    first_seq: u64,
    records: impl ExactSizeIterator<Item = (&'a EntryHash, &'a [u8])>,
    compress: bool,
) -> Vec<u8> {
    let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
    let mut body = Vec::new();
    for (hash, encoding) in records.take(count as usize) {
        let len = u32::try_from(encoding.len()).unwrap_or(u32::MAX);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&hash.0);
        body.extend_from_slice(encoding);
    }
    let (codec, body) = match compress.then(|| zstd_compress(&body)).flatten() {
        Some(compressed) => (CODEC_ZSTD, compressed),
        None => (CODEC_NONE, body),
    };
    let header = FrameHeader {
        body_len: u32::try_from(body.len()).unwrap_or(u32::MAX),
        codec,
        first_seq,
        count,
    }
    .encode();
    let mut out = Vec::with_capacity(header.len() + body.len() + CHECKSUM_LEN);
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&header);
    hasher.update(&body);
    out.extend_from_slice(hasher.finalize().as_bytes());
    out
}

/// A frame that does not check out: the records before the damage that
/// still match their own hashes, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameDamage {
    pub intact: Vec<StoredRecord>,
    pub detail: String,
}

/// Checks a frame's checksum and splits its body into records.
pub fn decode_frame(
    header: &FrameHeader,
    body: &[u8],
    checksum: &[u8],
) -> Result<Vec<StoredRecord>, FrameDamage> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&header.encode());
    hasher.update(body);
    if hasher.finalize().as_bytes() != checksum {
        return Err(salvage(
            header,
            body,
            "frame checksum does not match its bytes",
        ));
    }
    let no_records = |detail: String| FrameDamage {
        intact: Vec::new(),
        detail,
    };
    match header.codec {
        CODEC_NONE => split_records(header, body).map_err(no_records),
        CODEC_ZSTD => {
            // The frame states its content size: allocate that, not the
            // limit (a 1 GiB buffer per frame costs a mapping and page
            // faults on every read).
            let capacity = match zstd::zstd_safe::get_frame_content_size(body) {
                Ok(Some(size)) if size <= MAX_RECORDS_BYTES as u64 => size as usize,
                _ => MAX_RECORDS_BYTES,
            };
            let plain = zstd::bulk::decompress(body, capacity)
                .map_err(|e| no_records(format!("frame does not decompress: {e}")))?;
            split_records(header, &plain).map_err(no_records)
        }
        other => Err(no_records(format!("frame codec {other} is not known"))),
    }
}

/// The records body as one zstd frame with content size and checksum;
/// `None` if compressing failed (the frame is then stored as it is).
fn zstd_compress(body: &[u8]) -> Option<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?;
    compressor.include_checksum(true).ok()?;
    compressor.include_contentsize(true).ok()?;
    compressor.compress(body).ok()
}

/// The leading records of a damaged or cut frame body that still match
/// their own stored hashes, so that damage is named at the first record it
/// touches rather than at the frame.
pub fn salvage(header: &FrameHeader, body: &[u8], why: &str) -> FrameDamage {
    let mut intact = Vec::new();
    if header.codec != CODEC_NONE {
        // A damaged compressed body vouches for none of its records.
        return FrameDamage {
            intact,
            detail: why.to_owned(),
        };
    }
    let mut pos = 0usize;
    let mut seq = header.first_seq;
    while intact.len() < header.count as usize {
        let Some(len) = body
            .get(pos..pos + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        else {
            break;
        };
        let (Some(hash), Some(encoding)) = (
            body.get(pos + 4..pos + 36),
            body.get(pos + 36..pos.saturating_add(36).saturating_add(len)),
        ) else {
            break;
        };
        if EntryHash::of_encoding(encoding).0 != hash {
            break;
        }
        let mut h = [0u8; 32];
        h.copy_from_slice(hash);
        intact.push(StoredRecord {
            position: seq,
            hash: EntryHash(h),
            encoding: encoding.to_vec(),
        });
        pos += 36 + len;
        seq += 1;
    }
    if intact.len() == header.count as usize {
        // Every record checks out: the damage is in the frame's own bytes
        // (its checksum), and no record of it can be vouched for.
        intact.clear();
    }
    FrameDamage {
        intact,
        detail: why.to_owned(),
    }
}

fn split_records(header: &FrameHeader, body: &[u8]) -> Result<Vec<StoredRecord>, String> {
    let mut records = Vec::with_capacity(header.count as usize);
    let mut pos = 0usize;
    for i in 0..u64::from(header.count) {
        let Some(len) = body
            .get(pos..pos + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        else {
            return Err(format!("frame ends inside the length of record {i}"));
        };
        let (Some(hash), Some(encoding)) = (
            body.get(pos + 4..pos + 36),
            body.get(pos + 36..pos + 36 + len),
        ) else {
            return Err(format!("frame ends inside record {i}"));
        };
        let mut h = [0u8; 32];
        h.copy_from_slice(hash);
        records.push(StoredRecord {
            position: header.first_seq + i,
            hash: EntryHash(h),
            encoding: encoding.to_vec(),
        });
        pos += 36 + len;
    }
    if pos != body.len() {
        return Err(format!(
            "{} bytes follow the last record of the frame",
            body.len() - pos
        ));
    }
    Ok(records)
}

/// What a whole segment holds, every frame of it checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    pub chain: String,
    pub first_seq: u64,
    /// The seq after its last record.
    pub next_seq: u64,
    /// Its last record, if it holds any.
    pub last: Option<StoredRecord>,
}

/// Reads a whole segment's bytes: the header, then frames that follow each
/// other without gap up to the last byte. Any damage is an error naming
/// the byte offset and the first seq it touches.
pub fn summarize(bytes: &[u8]) -> Result<SegmentSummary, String> {
    let (header, mut records) = read_all(bytes)?;
    Ok(SegmentSummary {
        next_seq: header.first_seq + records.len() as u64,
        chain: header.chain,
        first_seq: header.first_seq,
        last: records.pop(),
    })
}

/// Every record of a whole segment, checked as [`summarize`] does.
pub fn read_all(bytes: &[u8]) -> Result<(SegmentHeader, Vec<StoredRecord>), String> {
    let (header, mut pos) = decode_header(bytes)?;
    let mut next_seq = header.first_seq;
    let mut all = Vec::new();
    while pos < bytes.len() {
        let Some(head) = bytes
            .get(pos..pos + FRAME_HEADER_LEN)
            .and_then(|h| <&[u8; FRAME_HEADER_LEN]>::try_from(h).ok())
        else {
            return Err(format!(
                "at byte {pos} (seq {next_seq}): ends inside a frame header"
            ));
        };
        let frame = FrameHeader::decode(head);
        if frame.first_seq != next_seq {
            return Err(format!(
                "at byte {pos}: a frame starts at seq {} where seq {next_seq} belongs",
                frame.first_seq
            ));
        }
        let body_start = pos + FRAME_HEADER_LEN;
        let body_end = body_start.saturating_add(frame.body_len as usize);
        let (Some(body), Some(sum)) = (
            bytes.get(body_start..body_end),
            bytes.get(body_end..body_end.saturating_add(CHECKSUM_LEN)),
        ) else {
            return Err(format!(
                "at byte {pos} (seq {next_seq}): ends inside a frame"
            ));
        };
        let records = decode_frame(&frame, body, sum)
            .map_err(|d| format!("at byte {pos} (seq {next_seq}): {}", d.detail))?;
        next_seq += u64::from(frame.count);
        all.extend(records);
        pos = body_end + CHECKSUM_LEN;
    }
    Ok((header, all))
}

/// The file name of a chain's directory under `segments/`: `c-` and the
/// chain name with `/` written `%2F` (no chain name holds `%`).
pub fn chain_dir_name(chain: &str) -> String {
    format!("c-{}", chain.replace('/', "%2F"))
}

/// An open (growing) segment's file name.
pub fn open_name(first_seq: u64) -> String {
    format!("{first_seq:020}.open")
}

/// A sealed segment's file name: first seq, next seq and the BLAKE3 hash
/// of the whole file.
pub fn sealed_name(first_seq: u64, next_seq: u64, hash: &[u8; 32]) -> String {
    format!("{first_seq:020}-{next_seq:020}-{}.seg", hex::encode(hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_header_round_trips_and_a_flip_is_caught() {
        let bytes = encode_header("kafka:t/x:0", 42);
        assert_eq!(bytes.len(), header_len("kafka:t/x:0"));
        let (header, len) = decode_header(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        assert_eq!(header.chain, "kafka:t/x:0");
        assert_eq!(header.first_seq, 42);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_header(&bad).is_err(), "flip at {i} passed");
        }
    }

    #[test]
    fn a_segment_summary_names_its_range_and_last_record_and_any_cut_is_refused() {
        let mut bytes = encode_header("file", 10);
        let hashes: Vec<EntryHash> = (0u8..5).map(|i| EntryHash::of_encoding(&[i])).collect();
        let encodings: Vec<Vec<u8>> = (0u8..5).map(|i| vec![i]).collect();
        for (at, n) in [(0usize, 2usize), (2, 3)] {
            bytes.extend(encode_frame(
                10 + at as u64,
                hashes[at..at + n]
                    .iter()
                    .zip(encodings[at..at + n].iter().map(Vec::as_slice)),
                at == 0,
            ));
        }
        let summary = summarize(&bytes).unwrap();
        assert_eq!(
            (summary.chain.as_str(), summary.first_seq, summary.next_seq),
            ("file", 10, 15)
        );
        assert_eq!(summary.last.map(|r| r.encoding), Some(vec![4]));
        for cut in 0..bytes.len() {
            if cut != header_len("file") && summarize(&bytes[..cut]).is_ok() {
                let s = summarize(&bytes[..cut]).unwrap();
                // Only a cut exactly between frames reads, as fewer entries.
                assert!(s.next_seq == 12, "cut at {cut} read as {s:?}");
            }
        }
    }

    #[test]
    fn chain_dir_names_are_single_safe_components() {
        for chain in ["file", "kafka:a/b:3", "..", "x%"] {
            let name = chain_dir_name(chain);
            assert!(!name.contains('/'));
            assert_ne!(name, "..");
        }
    }

    proptest! {
        #[test]
        fn frames_round_trip_and_any_flip_is_caught(
            first in 0u64..1_000_000,
            encodings in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
            flip in any::<prop::sample::Index>(),
            compress in any::<bool>(),
        ) {
            let hashes: Vec<EntryHash> = encodings.iter().map(|e| EntryHash::of_encoding(e)).collect();
            let frame = encode_frame(first, hashes.iter().zip(encodings.iter().map(Vec::as_slice)), compress);
            let head: [u8; FRAME_HEADER_LEN] = frame[..FRAME_HEADER_LEN].try_into().unwrap();
            let header = FrameHeader::decode(&head);
            prop_assert_eq!(header.frame_len(), frame.len() as u64);
            let body_end = FRAME_HEADER_LEN + header.body_len as usize;
            let records = decode_frame(&header, &frame[FRAME_HEADER_LEN..body_end], &frame[body_end..]).unwrap();
            prop_assert_eq!(records.len(), encodings.len());
            for (i, r) in records.iter().enumerate() {
                prop_assert_eq!(r.position, first + i as u64);
                prop_assert_eq!(&r.encoding, &encodings[i]);
                prop_assert_eq!(r.hash, hashes[i]);
            }
            let mut bad = frame.clone();
            let at = flip.index(bad.len());
            bad[at] ^= 0x01;
            let head: [u8; FRAME_HEADER_LEN] = bad[..FRAME_HEADER_LEN].try_into().unwrap();
            let header = FrameHeader::decode(&head);
            let body_end = FRAME_HEADER_LEN + header.body_len as usize;
            let caught = match (bad.get(FRAME_HEADER_LEN..body_end), bad.get(body_end..)) {
                (Some(body), Some(sum)) if sum.len() == CHECKSUM_LEN => decode_frame(&header, body, sum).is_err(),
                _ => true,
            };
            prop_assert!(caught, "flip at {} passed", at);
        }
    }
}
