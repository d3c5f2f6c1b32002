//! One ledger entry: its fields, its byte encoding and its hash.
//!
//! The encoding is specified byte for byte in FORMAT.md ("Entry encoding").
//! All integers are big-endian and fixed width; every variable-length field is
//! preceded by its length, so no two different entries encode to the same
//! bytes. The stored form of an entry *is* its encoding: what an auditor
//! reads is exactly what was hashed.

use std::fmt;

use jiff::Timestamp;
use lifeledger_schemas::RejectClass;
use thiserror::Error;

/// The version byte that starts every entry encoding.
pub const ENTRY_FORMAT_VERSION: u8 = 1;

/// The blake3 key-derivation context for entry hashes.
pub const ENTRY_HASH_CONTEXT: &str = "lifeledger 2026-11 entry v1";

/// The `prev_hash` of the first entry (seq 0) of every chain.
pub const GENESIS_PREV_HASH: EntryHash = EntryHash([0; 32]);

/// A blake3 hash of one entry's encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    /// The hash of an entry encoding (see [`ENTRY_HASH_CONTEXT`]).
    pub fn of_encoding(encoding: &[u8]) -> Self {
        // Deriving the key from the context is a hash of its own: made
        // once, and the hasher it starts cloned for each entry.
        static START: std::sync::LazyLock<blake3::Hasher> =
            std::sync::LazyLock::new(|| blake3::Hasher::new_derive_key(ENTRY_HASH_CONTEXT));
        let mut hasher = START.clone();
        hasher.update(encoding);
        EntryHash(*hasher.finalize().as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(EntryHash(out))
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", self.to_hex())
    }
}

/// Where the ledger got the bytes of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A line of a file (lines count from 1).
    File { path: String, line: u64 },
    /// A Kafka record.
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { path, line } => write!(f, "{path}:{line}"),
            Source::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}@{offset}"),
        }
    }
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A valid event: the bytes as received, its id, and its canonical JSON.
    Event {
        raw: Vec<u8>,
        event_id: String,
        canonical: Vec<u8>,
    },
    /// Input that is not a valid event, kept with the reason.
    Rejected {
        raw: Vec<u8>,
        class: RejectClass,
        reason: String,
    },
}

impl Body {
    pub fn raw(&self) -> &[u8] {
        match self {
            Body::Event { raw, .. } | Body::Rejected { raw, .. } => raw,
        }
    }
}

/// One entry of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The chain this entry belongs to.
    pub chain: String,
    /// Position in the chain, from 0, without gaps.
    pub seq: u64,
    /// Hash of the entry at `seq - 1`, or [`GENESIS_PREV_HASH`] at seq 0.
    pub prev_hash: EntryHash,
    /// When the ledger received the bytes (not the event's own time).
    pub received_at: Timestamp,
    pub source: Source,
    pub body: Body,
}

/// Why bytes are not a valid entry encoding.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EntryDecodeError {
    #[error("entry ends early: needed {needed} more bytes for {field} at offset {offset}")]
    Truncated {
        field: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("unknown entry format version {0}")]
    UnknownVersion(u8),
    #[error("unknown {field} tag {tag} at offset {offset}")]
    UnknownTag {
        field: &'static str,
        tag: u8,
        offset: usize,
    },
    #[error("{field} at offset {offset} is not UTF-8")]
    NotUtf8 { field: &'static str, offset: usize },
    #[error("received_at {0} ns is out of range")]
    BadTime(i64),
    #[error("{0} bytes follow the end of the entry")]
    TrailingBytes(usize),
}

const SOURCE_FILE: u8 = 1;
const SOURCE_KAFKA: u8 = 2;
const BODY_EVENT: u8 = 1;
const BODY_REJECTED: u8 = 2;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Entries are capped far below 4 GiB by the intake size limit; a longer
    // field would be a programming error, and saturating keeps the encoding
    // well-formed rather than wrapping.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn timestamp_nanos(ts: Timestamp) -> i64 {
    // jiff timestamps span years -9999..=9999, wider than i64 nanoseconds;
    // the ledger's clock is always within 1677..2262, so clamp the rest.
    i64::try_from(ts.as_nanosecond()).unwrap_or(if ts.as_nanosecond() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

impl Entry {
    /// The entry's byte encoding (FORMAT.md, "Entry encoding").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.raw().len() * 2);
        out.push(ENTRY_FORMAT_VERSION);
        put_bytes(&mut out, self.chain.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev_hash.0);
        out.extend_from_slice(&timestamp_nanos(self.received_at).to_be_bytes());
        encode_source(&self.source, &mut out);
        match &self.body {
            Body::Event {
                raw,
                event_id,
                canonical,
            } => {
                out.push(BODY_EVENT);
                put_bytes(&mut out, raw);
                put_bytes(&mut out, event_id.as_bytes());
                put_bytes(&mut out, canonical);
            }
            Body::Rejected { raw, class, reason } => {
                out.push(BODY_REJECTED);
                put_bytes(&mut out, raw);
                out.push(class.code());
                put_bytes(&mut out, reason.as_bytes());
            }
        }
        out
    }

    /// The entry's hash: blake3 in key-derivation mode over its encoding.
    pub fn hash(&self) -> EntryHash {
        EntryHash::of_encoding(&self.encode())
    }

    /// Decodes an entry encoding; every byte must be accounted for.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryDecodeError> {
        EntryView::decode(bytes)?.to_entry()
    }
}

/// Where an entry came from, borrowed from its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceView<'a> {
    File {
        path: &'a str,
        line: u64,
    },
    Kafka {
        topic: &'a str,
        partition: i32,
        offset: i64,
    },
}

/// What an entry records, borrowed from its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyView<'a> {
    Event {
        raw: &'a [u8],
        event_id: &'a str,
        canonical: &'a [u8],
    },
    Rejected {
        raw: &'a [u8],
        class: RejectClass,
        reason: &'a str,
    },
}

/// An entry decoded without copying: the same checks as [`Entry::decode`],
/// for walking many entries fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryView<'a> {
    pub chain: &'a str,
    pub seq: u64,
    pub prev_hash: EntryHash,
    pub received_at_nanos: i64,
    pub source: SourceView<'a>,
    pub body: BodyView<'a>,
}

impl<'a> EntryView<'a> {
    /// Decodes an entry encoding; every byte must be accounted for.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, EntryDecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8("format version")?;
        if version != ENTRY_FORMAT_VERSION {
            return Err(EntryDecodeError::UnknownVersion(version));
        }
        let chain = r.str("chain")?;
        let seq = r.u64("seq")?;
        let prev_hash = EntryHash(r.array::<32>("prev_hash")?);
        let received_at_nanos = r.i64("received_at")?;
        let source_at = r.pos;
        let source = match r.u8("source tag")? {
            SOURCE_FILE => SourceView::File {
                path: r.str("source path")?,
                line: r.u64("source line")?,
            },
            SOURCE_KAFKA => SourceView::Kafka {
                topic: r.str("source topic")?,
                partition: i32::from_be_bytes(r.array::<4>("source partition")?),
                offset: r.i64("source offset")?,
            },
            tag => {
                return Err(EntryDecodeError::UnknownTag {
                    field: "source",
                    tag,
                    offset: source_at,
                });
            }
        };
        let tag_at = r.pos;
        let body = match r.u8("body tag")? {
            BODY_EVENT => BodyView::Event {
                raw: r.bytes("raw")?,
                event_id: r.str("event_id")?,
                canonical: r.bytes("canonical")?,
            },
            BODY_REJECTED => {
                let raw = r.bytes("raw")?;
                let class_at = r.pos;
                let code = r.u8("reject class")?;
                let class = RejectClass::from_code(code).ok_or(EntryDecodeError::UnknownTag {
                    field: "reject class",
                    tag: code,
                    offset: class_at,
                })?;
                BodyView::Rejected {
                    raw,
                    class,
                    reason: r.str("reason")?,
                }
            }
            tag => {
                return Err(EntryDecodeError::UnknownTag {
                    field: "body",
                    tag,
                    offset: tag_at,
                });
            }
        };
        if r.pos != bytes.len() {
            return Err(EntryDecodeError::TrailingBytes(bytes.len() - r.pos));
        }
        Ok(EntryView {
            chain,
            seq,
            prev_hash,
            received_at_nanos,
            source,
            body,
        })
    }

    /// An owned copy.
    pub fn to_entry(&self) -> Result<Entry, EntryDecodeError> {
        let received_at = Timestamp::from_nanosecond(i128::from(self.received_at_nanos))
            .map_err(|_| EntryDecodeError::BadTime(self.received_at_nanos))?;
        Ok(Entry {
            chain: self.chain.to_owned(),
            seq: self.seq,
            prev_hash: self.prev_hash,
            received_at,
            source: match self.source {
                SourceView::File { path, line } => Source::File {
                    path: path.to_owned(),
                    line,
                },
                SourceView::Kafka {
                    topic,
                    partition,
                    offset,
                } => Source::Kafka {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                },
            },
            body: match self.body {
                BodyView::Event {
                    raw,
                    event_id,
                    canonical,
                } => Body::Event {
                    raw: raw.to_vec(),
                    event_id: event_id.to_owned(),
                    canonical: canonical.to_vec(),
                },
                BodyView::Rejected { raw, class, reason } => Body::Rejected {
                    raw: raw.to_vec(),
                    class,
                    reason: reason.to_owned(),
                },
            },
        })
    }
}

/// The chain an entry encoding names, read without decoding the rest.
pub fn peek_chain(encoding: &[u8]) -> Option<&str> {
    if encoding.first() != Some(&ENTRY_FORMAT_VERSION) {
        return None;
    }
    let len = u32::from_be_bytes(encoding.get(1..5)?.try_into().ok()?) as usize;
    std::str::from_utf8(encoding.get(5..5 + len)?).ok()
}

/// The encoding of a source alone: also the key under which a rejected
/// input is remembered, so that re-reading the same input does not reject it
/// twice.
pub fn encode_source(source: &Source, out: &mut Vec<u8>) {
    match source {
        Source::File { path, line } => {
            out.push(SOURCE_FILE);
            put_bytes(out, path.as_bytes());
            out.extend_from_slice(&line.to_be_bytes());
        }
        Source::Kafka {
            topic,
            partition,
            offset,
        } => {
            out.push(SOURCE_KAFKA);
            put_bytes(out, topic.as_bytes());
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
    }
}

/// A cursor over an encoding that reports what it ran out of.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], EntryDecodeError> {
        let rest = self.bytes.len() - self.pos;
        if rest < n {
            return Err(EntryDecodeError::Truncated {
                field,
                offset: self.pos,
                needed: n - rest,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], EntryDecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, EntryDecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, EntryDecodeError> {
        Ok(u64::from_be_bytes(self.array::<8>(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, EntryDecodeError> {
        Ok(i64::from_be_bytes(self.array::<8>(field)?))
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], EntryDecodeError> {
        let len = u32::from_be_bytes(self.array::<4>(field)?) as usize;
        self.take(field, len)
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, EntryDecodeError> {
        let at = self.pos;
        let bytes = self.bytes(field)?;
        std::str::from_utf8(bytes).map_err(|_| EntryDecodeError::NotUtf8 { field, offset: at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_source() -> impl Strategy<Value = Source> {
        prop_oneof![
            (".{0,20}", any::<u64>()).prop_map(|(path, line)| Source::File { path, line }),
            (".{0,20}", any::<i32>(), any::<i64>()).prop_map(|(topic, partition, offset)| {
                Source::Kafka {
                    topic,
                    partition,
                    offset,
                }
            }),
        ]
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        prop_oneof![
            (
                proptest::collection::vec(any::<u8>(), 0..64),
                ".{0,16}",
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(raw, event_id, canonical)| Body::Event {
                    raw,
                    event_id,
                    canonical
                }),
            (
                proptest::collection::vec(any::<u8>(), 0..64),
                1u8..=5,
                ".{0,32}"
            )
                .prop_map(|(raw, code, reason)| Body::Rejected {
                    raw,
                    class: RejectClass::from_code(code).unwrap(),
                    reason
                }),
        ]
    }

    prop_compose! {
        fn arb_entry()(
            chain in ".{0,12}",
            seq in any::<u64>(),
            prev in any::<[u8; 32]>(),
            nanos in -4_000_000_000_000_000_000i64..4_000_000_000_000_000_000,
            source in arb_source(),
            body in arb_body(),
        ) -> Entry {
            Entry {
                chain,
                seq,
                prev_hash: EntryHash(prev),
                received_at: Timestamp::from_nanosecond(i128::from(nanos)).unwrap(),
                source,
                body,
            }
        }
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(entry in arb_entry()) {
            let bytes = entry.encode();
            prop_assert_eq!(Entry::decode(&bytes).unwrap(), entry);
        }

        #[test]
        fn every_strict_prefix_fails_to_decode(entry in arb_entry()) {
            let bytes = entry.encode();
            for cut in 0..bytes.len() {
                prop_assert!(Entry::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn trailing_bytes_are_refused(entry in arb_entry(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
            let mut bytes = entry.encode();
            bytes.extend_from_slice(&extra);
            prop_assert_eq!(Entry::decode(&bytes), Err(EntryDecodeError::TrailingBytes(extra.len())));
        }
    }
}
