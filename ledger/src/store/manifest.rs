//! The manifest: what the ledger acknowledges (pure).
//!
//! One small text file, replaced atomically after the segment bytes it
//! names are fsynced. Per chain it records the acknowledged head (next seq
//! and last hash), the input cursor, the sealed segments (seq range, size
//! and BLAKE3 hash of each file) and the open segment with its
//! acknowledged length. What the manifest says is what the ledger has
//! acknowledged: bytes of an open segment past that length were never
//! acknowledged and may be dropped; anything at or before it that cannot
//! be read is damage. FORMAT.md section 16 specifies the text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::entry::EntryHash;

pub const FIRST_LINE: &str = "lifeledger-manifest/1";

/// A sealed segment as the manifest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedSegment {
    pub first_seq: u64,
    pub next_seq: u64,
    pub bytes: u64,
    pub hash: [u8; 32],
}

/// The open segment of a chain and how many of its bytes are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSegment {
    pub first_seq: u64,
    pub bytes: u64,
}

/// One chain's acknowledged state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub next_seq: u64,
    pub last_hash: EntryHash,
    /// Where the chain's source resumes (Kafka: the next offset).
    pub cursor: Option<i64>,
    pub sealed: Vec<SealedSegment>,
    pub open: Option<OpenSegment>,
}

impl ChainState {
    pub fn empty() -> Self {
        ChainState {
            next_seq: 0,
            last_hash: EntryHash([0; 32]),
            cursor: None,
            sealed: Vec::new(),
            open: None,
        }
    }

    /// The seq the next new segment starts at.
    pub fn sealed_through(&self) -> u64 {
        self.sealed.last().map_or(0, |s| s.next_seq)
    }
}

/// The whole manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Incremented by every write: a reader can tell two manifests apart.
    pub generation: u64,
    pub chains: BTreeMap<String, ChainState>,
}

impl Manifest {
    /// The manifest's text, ending with the `end` line that carries the
    /// BLAKE3 hash of every byte before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        let _ = writeln!(out, "{FIRST_LINE}");
        let _ = writeln!(out, "generation {}", self.generation);
        for (name, chain) in &self.chains {
            let cursor = chain
                .cursor
                .map_or_else(|| "-".to_owned(), |c| c.to_string());
            let _ = writeln!(
                out,
                "chain {name} {} {} {cursor}",
                chain.next_seq,
                hex::encode(chain.last_hash.0)
            );
            for s in &chain.sealed {
                let _ = writeln!(
                    out,
                    "sealed {} {} {} {}",
                    s.first_seq,
                    s.next_seq,
                    s.bytes,
                    hex::encode(s.hash)
                );
            }
            if let Some(open) = &chain.open {
                let _ = writeln!(out, "open {} {}", open.first_seq, open.bytes);
            }
        }
        let sum = blake3::hash(out.as_bytes());
        let _ = writeln!(out, "end {}", sum.to_hex());
        out.into_bytes()
    }

    /// Parses and checks a manifest; errors name the line.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "manifest is not UTF-8".to_owned())?;
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .map(|i| i + 1)
            .ok_or("manifest has no end line")?;
        let end_line = text[body_end..].trim_end_matches('\n');
        let sum = end_line
            .strip_prefix("end ")
            .ok_or("manifest's last line is not its end line (cut short?)")?;
        if !text.ends_with('\n') || blake3::hash(&bytes[..body_end]).to_hex().as_str() != sum {
            return Err("manifest checksum does not match its text".to_owned());
        }
        let mut lines = text[..body_end].lines().enumerate();
        let bad = |n: usize, what: &str| format!("manifest line {}: {what}", n + 1);
        match lines.next() {
            Some((_, FIRST_LINE)) => {}
            _ => return Err(format!("manifest does not start with {FIRST_LINE:?}")),
        }
        let generation = match lines.next() {
            Some((n, line)) => line
                .strip_prefix("generation ")
                .and_then(|g| g.parse().ok())
                .ok_or_else(|| bad(n, "expected `generation N`"))?,
            None => return Err("manifest has no generation line".to_owned()),
        };
        let mut manifest = Manifest {
            generation,
            chains: BTreeMap::new(),
        };
        let mut current: Option<(String, ChainState)> = None;
        for (n, line) in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| -> Result<u64, String> {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(|| bad(n, "expected a number"))
            };
            let hash = |i: usize| -> Result<[u8; 32], String> {
                fields
                    .get(i)
                    .and_then(|f| hex::decode(f).ok())
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or_else(|| bad(n, "expected a 64-digit hex hash"))
            };
            match (fields[0], fields.len()) {
                ("chain", 5) => {
                    if let Some((name, state)) = current.take() {
                        finish_chain(&mut manifest, name, state).map_err(|e| bad(n, &e))?;
                    }
                    let cursor = match fields[4] {
                        "-" => None,
                        c => Some(c.parse().map_err(|_| bad(n, "cursor is not a number"))?),
                    };
                    let state = ChainState {
                        next_seq: num(2)?,
                        last_hash: EntryHash(hash(3)?),
                        cursor,
                        sealed: Vec::new(),
                        open: None,
                    };
                    current = Some((fields[1].to_owned(), state));
                }
                ("sealed", 5) => {
                    let (_, state) = current.as_mut().ok_or_else(|| bad(n, "no chain line"))?;
                    let segment = SealedSegment {
                        first_seq: num(1)?,
                        next_seq: num(2)?,
                        bytes: num(3)?,
                        hash: hash(4)?,
                    };
                    if state.open.is_some()
                        || segment.first_seq != state.sealed_through()
                        || segment.next_seq <= segment.first_seq
                    {
                        return Err(bad(n, "sealed segments must follow each other"));
                    }
                    state.sealed.push(segment);
                }
                ("open", 3) => {
                    let (_, state) = current.as_mut().ok_or_else(|| bad(n, "no chain line"))?;
                    if state.open.is_some() || num(1)? != state.sealed_through() {
                        return Err(bad(n, "open segment must follow the sealed ones"));
                    }
                    state.open = Some(OpenSegment {
                        first_seq: num(1)?,
                        bytes: num(2)?,
                    });
                }
                _ => return Err(bad(n, "unknown line")),
            }
        }
        if let Some((name, state)) = current.take() {
            finish_chain(&mut manifest, name, state)?;
        }
        Ok(manifest)
    }
}

fn finish_chain(manifest: &mut Manifest, name: String, state: ChainState) -> Result<(), String> {
    let covered = state.sealed_through();
    let consistent = match state.open {
        Some(open) => open.first_seq == covered && state.next_seq > covered,
        None => state.next_seq == covered,
    };
    if !consistent {
        return Err(format!(
            "chain {name}: segments do not cover seq 0..{}",
            state.next_seq
        ));
    }
    if manifest.chains.insert(name.clone(), state).is_some() {
        return Err(format!("chain {name} appears twice"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut chains = BTreeMap::new();
        chains.insert(
            "file".to_owned(),
            ChainState {
                next_seq: 12,
                last_hash: EntryHash([7; 32]),
                cursor: None,
                sealed: vec![SealedSegment {
                    first_seq: 0,
                    next_seq: 10,
                    bytes: 4000,
                    hash: [1; 32],
                }],
                open: Some(OpenSegment {
                    first_seq: 10,
                    bytes: 900,
                }),
            },
        );
        chains.insert(
            "kafka:t:0".to_owned(),
            ChainState {
                cursor: Some(-1),
                ..ChainState::empty()
            },
        );
        Manifest {
            generation: 3,
            chains,
        }
    }

    #[test]
    fn a_manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn any_changed_or_cut_byte_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} passed");
        }
        for cut in 0..bytes.len() {
            assert!(
                Manifest::decode(&bytes[..cut]).is_err(),
                "cut at {cut} passed"
            );
        }
    }
}
