//! Reading a ledger directory's segment files with FORMAT.md alone (no
//! Lifeledger code), so that tests can damage exactly the bytes they mean.

use std::path::{Path, PathBuf};

/// Where one record's bytes sit in a segment file.
#[derive(Debug, Clone)]
pub struct RecordSpan {
    pub seq: u64,
    pub path: PathBuf,
    /// Offset of the frame that holds the record.
    pub frame_offset: u64,
    /// Offset and length of the record's entry encoding.
    pub encoding_offset: u64,
    pub encoding_len: usize,
    /// Offset of the record's stored hash.
    pub hash_offset: u64,
}

/// The segment files of a chain, in seq order.
pub fn segment_files(ledger: &Path, chain: &str) -> Vec<PathBuf> {
    let dir = ledger
        .join("segments")
        .join(format!("c-{}", chain.replace('/', "%2F")));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Where one frame's bytes sit in a segment file.
#[derive(Debug, Clone)]
pub struct FrameSpan {
    pub first_seq: u64,
    pub count: u32,
    pub codec: u8,
    pub path: PathBuf,
    pub offset: u64,
    /// Header, body and checksum.
    pub len: u64,
}

/// Every complete frame of a chain's segment files, in order.
pub fn frame_spans(ledger: &Path, chain: &str) -> Vec<FrameSpan> {
    let mut out = Vec::new();
    for path in segment_files(ledger, chain) {
        let bytes = std::fs::read(&path).unwrap();
        let name_len = u16::from_be_bytes([bytes[8], bytes[9]]) as usize;
        let mut pos = 8 + 2 + name_len + 8 + 32;
        while pos + 17 <= bytes.len() {
            let body_len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let end = pos + 17 + body_len + 32;
            if end > bytes.len() {
                break;
            }
            out.push(FrameSpan {
                first_seq: u64::from_be_bytes(bytes[pos + 5..pos + 13].try_into().unwrap()),
                count: u32::from_be_bytes(bytes[pos + 13..pos + 17].try_into().unwrap()),
                codec: bytes[pos + 4],
                path: path.clone(),
                offset: pos as u64,
                len: (end - pos) as u64,
            });
            pos = end;
        }
    }
    out
}

/// Every complete record of a chain's segment files, in order (frames
/// stored uncompressed only: codec 0).
pub fn record_spans(ledger: &Path, chain: &str) -> Vec<RecordSpan> {
    let mut out = Vec::new();
    for path in segment_files(ledger, chain) {
        let bytes = std::fs::read(&path).unwrap();
        let name_len = u16::from_be_bytes([bytes[8], bytes[9]]) as usize;
        let mut pos = 8 + 2 + name_len + 8 + 32;
        while pos + 17 <= bytes.len() {
            let body_len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let first = u64::from_be_bytes(bytes[pos + 5..pos + 13].try_into().unwrap());
            let count = u32::from_be_bytes(bytes[pos + 13..pos + 17].try_into().unwrap());
            assert_eq!(
                bytes[pos + 4],
                0,
                "record_spans reads uncompressed frames only"
            );
            let end = pos + 17 + body_len + 32;
            if end > bytes.len() {
                break;
            }
            let mut r = pos + 17;
            for i in 0..u64::from(count) {
                let len = u32::from_be_bytes(bytes[r..r + 4].try_into().unwrap()) as usize;
                out.push(RecordSpan {
                    seq: first + i,
                    path: path.clone(),
                    frame_offset: pos as u64,
                    encoding_offset: (r + 36) as u64,
                    encoding_len: len,
                    hash_offset: (r + 4) as u64,
                });
                r += 36 + len;
            }
            pos = end;
        }
    }
    out
}

/// Flips bits of one byte of a file.
pub fn flip_byte(path: &Path, offset: u64, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

/// Cuts a file to `len` bytes.
pub fn cut_file(path: &Path, len: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len).unwrap();
}
