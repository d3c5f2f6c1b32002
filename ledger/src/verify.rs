//! Walking a chain and naming the first entry that is wrong.
//!
//! Pure: the store feeds stored records (the hash it kept and the entry
//! encoding) in order; [`ChainVerifier`] recomputes and cross-checks them.
//! A broken chain is a finding, not an error: it is the answer an auditor
//! asked for.

use std::fmt;

use lifeledger_schemas::{canonical_json, decode_event};

use crate::chain::ChainHead;
use crate::entry::{BodyView, EntryHash, EntryView, GENESIS_PREV_HASH};

/// What is wrong at the first bad seq.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The stored bytes are not an entry (or the block holding it is torn).
    Undecodable(String),
    /// The stored bytes cannot be read back as acknowledged (a damaged or
    /// missing segment, a cut file).
    Unreadable(String),
    /// The entry's recomputed hash differs from the hash stored with it.
    HashMismatch {
        stored: EntryHash,
        computed: EntryHash,
    },
    /// The entry names another chain.
    WrongChain { found: String },
    /// The entry at this position carries another seq: an entry was
    /// removed, inserted or moved.
    SeqMismatch { found: u64 },
    /// The entry's `prev_hash` is not the hash of the entry before it.
    PrevMismatch {
        expected: EntryHash,
        found: EntryHash,
    },
    /// The canonical form or event id does not match the received bytes.
    CanonicalMismatch(String),
    /// The chain goes on past its recorded head.
    BeyondHead { head_next_seq: u64 },
    /// The recorded head is past the last entry: entries are missing.
    MissingEntries { head_next_seq: u64 },
    /// The last entry's hash is not the head's hash.
    HeadHashMismatch { head: EntryHash, last: EntryHash },
    /// Entries exist for a chain that has no head.
    NoHead,
    /// A `policy_published` event on a chain other than `policy`, or
    /// another event on chain `policy`: only `policy publish` writes
    /// that chain, and only publications (FORMAT.md section 3.2).
    MisplacedPublication(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Undecodable(why) => write!(f, "stored bytes are not an entry: {why}"),
            Problem::Unreadable(why) => write!(f, "acknowledged entries cannot be read: {why}"),
            Problem::HashMismatch { stored, computed } => {
                write!(
                    f,
                    "entry hash is {computed}, but {stored} is stored with it"
                )
            }
            Problem::WrongChain { found } => write!(f, "entry belongs to chain {found:?}"),
            Problem::SeqMismatch { found } => {
                write!(
                    f,
                    "entry carries seq {found} (removed, inserted or moved entry)"
                )
            }
            Problem::PrevMismatch { expected, found } => write!(
                f,
                "prev_hash is {found}, but the previous entry's hash is {expected}"
            ),
            Problem::CanonicalMismatch(why) => {
                write!(f, "recorded event does not match its received bytes: {why}")
            }
            Problem::BeyondHead { head_next_seq } => write!(
                f,
                "entry lies beyond the chain head (head covers seq 0..{head_next_seq})"
            ),
            Problem::MissingEntries { head_next_seq } => write!(
                f,
                "entry is missing: the head says the chain has {head_next_seq} entries"
            ),
            Problem::HeadHashMismatch { head, last } => {
                write!(
                    f,
                    "last entry's hash is {last}, but the head records {head}"
                )
            }
            Problem::NoHead => write!(f, "entries exist but the chain has no head"),
            Problem::MisplacedPublication(why) => write!(f, "{why}"),
        }
    }
}

/// The first bad seq of a chain and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub chain: String,
    pub seq: u64,
    pub problem: Problem,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chain {:?} seq {}: {}",
            self.chain, self.seq, self.problem
        )
    }
}

/// What a verified chain holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainSummary {
    pub chain: String,
    pub entries: u64,
    pub events: u64,
    pub rejected: u64,
    /// Hash of the last entry, if any.
    pub last_hash: Option<EntryHash>,
}

/// The outcome of verifying a whole ledger: one summary per chain and the
/// first finding of each broken chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub chains: Vec<ChainSummary>,
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// How much a verifier checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Hashes, links, seqs and head.
    Chain,
    /// Also re-decode every event from its received bytes and compare the
    /// recorded event id and canonical form.
    Events,
}

/// Checks one chain's records in order.
#[derive(Debug)]
pub struct ChainVerifier {
    summary: ChainSummary,
    prev_hash: EntryHash,
    depth: Depth,
}

impl ChainVerifier {
    pub fn new(chain: &str, depth: Depth) -> Self {
        ChainVerifier {
            summary: ChainSummary {
                chain: chain.to_owned(),
                ..ChainSummary::default()
            },
            prev_hash: GENESIS_PREV_HASH,
            depth,
        }
    }

    /// The seq the next record must carry.
    pub fn next_seq(&self) -> u64 {
        self.summary.entries
    }

    /// A finding at the next seq.
    pub fn finding(&self, problem: Problem) -> Finding {
        Finding {
            chain: self.summary.chain.clone(),
            seq: self.next_seq(),
            problem,
        }
    }

    /// Checks the next stored record: the hash stored beside it and its
    /// encoding.
    pub fn check(&mut self, stored_hash: &EntryHash, encoding: &[u8]) -> Result<(), Finding> {
        let alone = precheck(&self.summary.chain, stored_hash, encoding, self.depth);
        self.check_prechecked(stored_hash, encoding, alone)
    }

    /// Checks the next stored record given what [`precheck`] found of it
    /// alone (perhaps on another thread): here only what depends on its
    /// place in the chain (chain name, seq, link) is checked.
    pub fn check_prechecked(
        &mut self,
        stored_hash: &EntryHash,
        encoding: &[u8],
        alone: Precheck,
    ) -> Result<(), Finding> {
        let body_problem = match alone {
            Precheck::Broken(p) => return Err(self.finding(p)),
            Precheck::BadBody(p) => Some(p),
            Precheck::Sound => None,
        };
        let entry = EntryView::decode(encoding)
            .map_err(|e| self.finding(Problem::Undecodable(e.to_string())))?;
        if entry.chain != self.summary.chain {
            return Err(self.finding(Problem::WrongChain {
                found: entry.chain.to_owned(),
            }));
        }
        if entry.seq != self.next_seq() {
            return Err(self.finding(Problem::SeqMismatch { found: entry.seq }));
        }
        if entry.prev_hash != self.prev_hash {
            return Err(self.finding(Problem::PrevMismatch {
                expected: self.prev_hash,
                found: entry.prev_hash,
            }));
        }
        if let Some(p) = body_problem {
            return Err(self.finding(p));
        }
        match entry.body {
            BodyView::Event { .. } => self.summary.events += 1,
            BodyView::Rejected { .. } => self.summary.rejected += 1,
        }
        self.summary.entries += 1;
        self.summary.last_hash = Some(*stored_hash);
        self.prev_hash = *stored_hash;
        Ok(())
    }

    /// Ends the walk by comparing with the chain's recorded head.
    pub fn finish(self, head: Option<&ChainHead>) -> Result<ChainSummary, Finding> {
        let count = self.summary.entries;
        match head {
            None if count == 0 => Ok(self.summary),
            None => Err(Finding {
                chain: self.summary.chain.clone(),
                seq: 0,
                problem: Problem::NoHead,
            }),
            Some(head) if count > head.next_seq => Err(Finding {
                chain: self.summary.chain.clone(),
                seq: head.next_seq,
                problem: Problem::BeyondHead {
                    head_next_seq: head.next_seq,
                },
            }),
            Some(head) if count < head.next_seq => Err(self.finding(Problem::MissingEntries {
                head_next_seq: head.next_seq,
            })),
            Some(head) if self.prev_hash != head.last_hash => Err(Finding {
                chain: self.summary.chain.clone(),
                seq: count.saturating_sub(1),
                problem: Problem::HeadHashMismatch {
                    head: head.last_hash,
                    last: self.prev_hash,
                },
            }),
            Some(_) => Ok(self.summary),
        }
    }
}

/// What one stored record shows on its own, whatever its neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precheck {
    /// It decodes, hashes to the stored hash, and its body checks out.
    Sound,
    /// It does not decode, or does not hash to the stored hash: nothing
    /// about it can be trusted, its place in the chain included.
    Broken(Problem),
    /// Its bytes are what was hashed, but its body fails (an event that
    /// contradicts its received bytes, or is on the wrong chain): reported
    /// after the chain-position checks.
    BadBody(Problem),
}

/// The checks of one record of `chain` that need no other record: decode,
/// hash against the stored hash, and the body (at `depth`).
pub fn precheck(chain: &str, stored_hash: &EntryHash, encoding: &[u8], depth: Depth) -> Precheck {
    let entry = match EntryView::decode(encoding) {
        Ok(e) => e,
        Err(e) => return Precheck::Broken(Problem::Undecodable(e.to_string())),
    };
    let computed = EntryHash::of_encoding(encoding);
    if computed != *stored_hash {
        return Precheck::Broken(Problem::HashMismatch {
            stored: *stored_hash,
            computed,
        });
    }
    if let BodyView::Event {
        raw,
        event_id,
        canonical,
    } = entry.body
    {
        if let Err(p) = check_event_body(chain, raw, event_id, canonical, depth) {
            return Precheck::BadBody(p);
        }
    }
    Precheck::Sound
}

/// What [`precheck_all`] found: the records that are not sound, by index,
/// and every record's Merkle leaf hash (of its stored hash).
pub type Prechecked = (
    std::collections::BTreeMap<usize, Precheck>,
    Vec<crate::merkle::Hash>,
);

/// [`precheck`] of every record of a chain, with its Merkle leaf hash,
/// spread over the machine's cores.
pub fn precheck_all(chain: &str, records: &[(&EntryHash, &[u8])], depth: Depth) -> Prechecked {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 16);
    // Small chains are not worth a thread.
    if threads == 1 || records.len() < 4_096 {
        return check_slice(chain, records, 0, depth);
    }
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let handle = scope.spawn(move || check_slice(chain, part, i * chunk, depth));
                (i, part, handle)
            })
            .collect();
        let mut problems = std::collections::BTreeMap::new();
        let mut leaves = Vec::with_capacity(records.len());
        for (i, part, handle) in handles {
            // A worker that could not finish: its part is checked here.
            let (found, part_leaves) = handle
                .join()
                .unwrap_or_else(|_| check_slice(chain, part, i * chunk, depth));
            problems.extend(found);
            leaves.extend(part_leaves);
        }
        (problems, leaves)
    })
}

fn check_slice(
    chain: &str,
    records: &[(&EntryHash, &[u8])],
    offset: usize,
    depth: Depth,
) -> Prechecked {
    let mut problems = std::collections::BTreeMap::new();
    let mut leaves = Vec::with_capacity(records.len());
    for (i, (hash, encoding)) in records.iter().enumerate() {
        let found = precheck(chain, hash, encoding, depth);
        if found != Precheck::Sound {
            problems.insert(offset + i, found);
        }
        leaves.push(crate::merkle::leaf_hash(hash));
    }
    (problems, leaves)
}

/// The checks of one event entry of `chain` beyond its hash and links:
/// re-derived from its received bytes (at `Depth::Events`), and on the
/// right chain (always: a publication is told by its recorded canonical
/// form alone).
pub fn check_event_body(
    chain: &str,
    raw: &[u8],
    event_id: &str,
    canonical: &[u8],
    depth: Depth,
) -> Result<(), Problem> {
    if depth == Depth::Events {
        check_event(raw, event_id, canonical).map_err(Problem::CanonicalMismatch)?;
    }
    use crate::intake::LedgerRecord;
    match (
        LedgerRecord::of_canonical(canonical),
        LedgerRecord::of_chain(chain),
    ) {
        (Some(r), c) if c != Some(r) => Err(Problem::MisplacedPublication(format!(
            "a {} event on chain {chain:?}: it belongs on chain {:?} only",
            r.kind(),
            r.chain()
        ))),
        (None, Some(c)) => Err(Problem::MisplacedPublication(format!(
            "an event other than {} on chain {:?}",
            c.kind(),
            c.chain()
        ))),
        _ => Ok(()),
    }
}

fn check_event(raw: &[u8], event_id: &str, canonical: &[u8]) -> Result<(), String> {
    let event = decode_event(raw).map_err(|e| format!("received bytes do not decode: {e}"))?;
    if event.event_id != event_id {
        return Err(format!(
            "event id {event_id:?} recorded, {:?} received",
            event.event_id
        ));
    }
    if canonical_json(&event) != canonical {
        return Err("canonical form differs from the one the received bytes give".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
