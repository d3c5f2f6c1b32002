//! The export bundle: a single file an auditor verifies with nothing but a
//! public key (FORMAT.md, "Export bundle"). This module writes and reads the
//! container; [`verify`] checks what it holds. Pure: bytes in, bytes out.

pub mod proof;
pub mod verify;

use thiserror::Error;

use crate::entry::EntryHash;
use crate::merkle::Hash;

pub const MAGIC: &[u8; 18] = b"LIFELEDGER-BUNDLE\n";
pub const BUNDLE_VERSION: u32 = 1;

/// What a bundle record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// JSON: format, origin, exported_at, scope.
    Manifest(Vec<u8>),
    /// The signer's public key (`NAME+KEYID+KEY`).
    PublicKey(String),
    /// A retention policy file.
    Policy(Vec<u8>),
    /// A signed checkpoint note.
    Checkpoint(String),
    /// An entry: the hash the ledger stored with it, and its encoding.
    Entry { hash: EntryHash, encoding: Vec<u8> },
    /// Proof that entry `seq` of `chain` is in the chain's tree of `size`.
    Inclusion {
        chain: String,
        seq: u64,
        size: u64,
        proof: Vec<Hash>,
    },
    /// Proof that the chain's tree of `new_size` extends the one of
    /// `old_size`.
    Consistency {
        chain: String,
        old_size: u64,
        new_size: u64,
        proof: Vec<Hash>,
    },
}

const TAG_MANIFEST: u8 = 1;
const TAG_PUBLIC_KEY: u8 = 2;
const TAG_POLICY: u8 = 3;
const TAG_CHECKPOINT: u8 = 4;
const TAG_ENTRY: u8 = 5;
const TAG_INCLUSION: u8 = 6;
const TAG_CONSISTENCY: u8 = 7;
const TAG_END: u8 = 0;

/// Why bytes are not a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("not a Lifeledger bundle (bad magic)")]
    BadMagic,
    #[error("bundle format version {0}; this build reads version 1")]
    Version(u32),
    #[error("bundle is cut short at byte {0}")]
    Truncated(usize),
    #[error("record {index} at byte {offset}: {why}")]
    BadRecord {
        index: usize,
        offset: usize,
        why: String,
    },
    #[error("the end record counts {claimed} records, the bundle has {found}")]
    CountMismatch { claimed: u64, found: u64 },
    #[error("bytes follow the end record")]
    TrailingBytes,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_proof(out: &mut Vec<u8>, proof: &[Hash]) {
    out.extend_from_slice(&(proof.len() as u32).to_be_bytes());
    for h in proof {
        out.extend_from_slice(h);
    }
}

/// Writes records into a bundle, one at a time.
#[derive(Debug)]
pub struct Writer<W: std::io::Write> {
    out: W,
    count: u64,
}

impl<W: std::io::Write> Writer<W> {
    pub fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&BUNDLE_VERSION.to_be_bytes())?;
        Ok(Writer { out, count: 0 })
    }

    pub fn write(&mut self, record: &Record) -> std::io::Result<()> {
        let (tag, payload) = encode_record(record);
        self.out.write_all(&[tag])?;
        self.out.write_all(&(payload.len() as u32).to_be_bytes())?;
        self.out.write_all(&payload)?;
        self.count += 1;
        Ok(())
    }

    /// Writes the end record and hands the output back.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(&[TAG_END])?;
        self.out.write_all(&8u32.to_be_bytes())?;
        self.out.write_all(&self.count.to_be_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn encode_record(record: &Record) -> (u8, Vec<u8>) {
    match record {
        Record::Manifest(json) => (TAG_MANIFEST, json.clone()),
        Record::PublicKey(k) => (TAG_PUBLIC_KEY, k.as_bytes().to_vec()),
        Record::Policy(p) => (TAG_POLICY, p.clone()),
        Record::Checkpoint(n) => (TAG_CHECKPOINT, n.as_bytes().to_vec()),
        Record::Entry { hash, encoding } => {
            let mut p = Vec::with_capacity(32 + encoding.len());
            p.extend_from_slice(&hash.0);
            p.extend_from_slice(encoding);
            (TAG_ENTRY, p)
        }
        Record::Inclusion {
            chain,
            seq,
            size,
            proof,
        } => {
            let mut p = Vec::new();
            put_str(&mut p, chain);
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&size.to_be_bytes());
            put_proof(&mut p, proof);
            (TAG_INCLUSION, p)
        }
        Record::Consistency {
            chain,
            old_size,
            new_size,
            proof,
        } => {
            let mut p = Vec::new();
            put_str(&mut p, chain);
            p.extend_from_slice(&old_size.to_be_bytes());
            p.extend_from_slice(&new_size.to_be_bytes());
            put_proof(&mut p, proof);
            (TAG_CONSISTENCY, p)
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn proof(&mut self) -> Option<Vec<Hash>> {
        let n = self.u32()? as usize;
        (0..n)
            .map(|_| self.take(32).and_then(|h| h.try_into().ok()))
            .collect()
    }
    fn done(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

fn decode_record(tag: u8, payload: &[u8]) -> Result<Record, String> {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "text is not UTF-8".to_owned());
    let mut c = Cursor {
        bytes: payload,
        pos: 0,
    };
    let record = match tag {
        TAG_MANIFEST => Record::Manifest(payload.to_vec()),
        TAG_PUBLIC_KEY => Record::PublicKey(text(payload)?),
        TAG_POLICY => Record::Policy(payload.to_vec()),
        TAG_CHECKPOINT => Record::Checkpoint(text(payload)?),
        TAG_ENTRY => {
            let hash: [u8; 32] = payload
                .get(..32)
                .and_then(|h| h.try_into().ok())
                .ok_or("entry shorter than its hash")?;
            return Ok(Record::Entry {
                hash: EntryHash(hash),
                encoding: payload[32..].to_vec(),
            });
        }
        TAG_INCLUSION => Record::Inclusion {
            chain: c.string().ok_or("bad chain")?,
            seq: c.u64().ok_or("bad seq")?,
            size: c.u64().ok_or("bad size")?,
            proof: c.proof().ok_or("bad proof")?,
        },
        TAG_CONSISTENCY => Record::Consistency {
            chain: c.string().ok_or("bad chain")?,
            old_size: c.u64().ok_or("bad old size")?,
            new_size: c.u64().ok_or("bad new size")?,
            proof: c.proof().ok_or("bad proof")?,
        },
        other => return Err(format!("unknown record tag {other}")),
    };
    if matches!(tag, TAG_INCLUSION | TAG_CONSISTENCY) && !c.done() {
        return Err("bytes follow the proof".into());
    }
    Ok(record)
}

/// One record as framed in the file: its tag and payload, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub tag: u8,
    pub payload: &'a [u8],
    /// Where the record starts in the file.
    pub offset: usize,
}

impl<'a> Frame<'a> {
    /// An entry record's stored hash and encoding, without copying.
    pub fn entry(&self) -> Option<(EntryHash, &'a [u8])> {
        if self.tag != TAG_ENTRY {
            return None;
        }
        let hash: [u8; 32] = self.payload.get(..32)?.try_into().ok()?;
        Some((EntryHash(hash), &self.payload[32..]))
    }

    pub fn decode(&self, index: usize) -> Result<Record, BundleError> {
        decode_record(self.tag, self.payload).map_err(|why| BundleError::BadRecord {
            index,
            offset: self.offset,
            why,
        })
    }
}

/// Splits a bundle into its records without decoding them.
pub fn frames(bytes: &[u8]) -> Result<Vec<Frame<'_>>, BundleError> {
    let mut out = Vec::new();
    each_frame(bytes, |frame| {
        out.push(frame);
        Ok(())
    })?;
    Ok(out)
}

/// Hands each record of a bundle, framed but not decoded, to `each` in
/// file order (while its first bytes are still in the cache: a bundle is
/// read once, whatever its size), then checks the end record's count.
pub fn each_frame<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(Frame<'a>) -> Result<(), BundleError>,
) -> Result<(), BundleError> {
    let mut c = Cursor { bytes, pos: 0 };
    if c.take(MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(BundleError::BadMagic);
    }
    let version = c.u32().ok_or(BundleError::Truncated(c.pos))?;
    if version != BUNDLE_VERSION {
        return Err(BundleError::Version(version));
    }
    let mut count = 0usize;
    loop {
        let offset = c.pos;
        let tag = c.take(1).ok_or(BundleError::Truncated(offset))?[0];
        let len = c.u32().ok_or(BundleError::Truncated(offset))? as usize;
        let payload = c.take(len).ok_or(BundleError::Truncated(offset))?;
        if tag == TAG_END {
            let claimed =
                u64::from_be_bytes(payload.try_into().map_err(|_| BundleError::BadRecord {
                    index: count,
                    offset,
                    why: "the end record holds 8 bytes".into(),
                })?);
            if claimed != count as u64 {
                return Err(BundleError::CountMismatch {
                    claimed,
                    found: count as u64,
                });
            }
            if !c.done() {
                return Err(BundleError::TrailingBytes);
            }
            return Ok(());
        }
        if tag == TAG_ENTRY && payload.len() < 32 {
            return Err(BundleError::BadRecord {
                index: count,
                offset,
                why: "entry shorter than its hash".into(),
            });
        }
        each(Frame {
            tag,
            payload,
            offset,
        })?;
        count += 1;
    }
}

/// Reads every record of a bundle.
pub fn read(bytes: &[u8]) -> Result<Vec<Record>, BundleError> {
    frames(bytes)?
        .iter()
        .enumerate()
        .map(|(i, f)| f.decode(i))
        .collect()
}
