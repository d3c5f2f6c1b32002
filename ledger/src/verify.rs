//! Walking a chain and naming the first entry that is wrong.
//!
//! Pure: the store feeds stored records (the hash it kept and the entry
//! encoding) in order; [`ChainVerifier`] recomputes and cross-checks them.
//! A broken chain is a finding, not an error: it is the answer an auditor
//! asked for.

use std::fmt;

use lifeledger_schemas::{decode_event, is_canonical_json};

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

    /// Takes a clean piece ([`Piece::clean`]) as a whole, if its first
    /// record comes next and links to the last one checked; `false` leaves
    /// the piece to be walked record by record.
    pub fn accept_piece(&mut self, piece: &Piece) -> bool {
        if !piece.clean
            || piece.leaves.is_empty()
            || piece.first_seq != self.next_seq()
            || piece.first_prev != self.prev_hash
        {
            return false;
        }
        self.summary.entries += piece.leaves.len() as u64;
        self.summary.events += piece.events;
        self.summary.rejected += piece.rejected;
        self.summary.last_hash = Some(piece.last_hash);
        self.prev_hash = piece.last_hash;
        true
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
    match sound_view(chain, stored_hash, encoding, depth) {
        Ok(_) => Precheck::Sound,
        Err(found) => found,
    }
}

/// [`precheck`], handing back the decoded record when it is sound.
fn sound_view<'a>(
    chain: &str,
    stored_hash: &EntryHash,
    encoding: &'a [u8],
    depth: Depth,
) -> Result<EntryView<'a>, Precheck> {
    let entry = EntryView::decode(encoding)
        .map_err(|e| Precheck::Broken(Problem::Undecodable(e.to_string())))?;
    let computed = EntryHash::of_encoding(encoding);
    if computed != *stored_hash {
        return Err(Precheck::Broken(Problem::HashMismatch {
            stored: *stored_hash,
            computed,
        }));
    }
    if let BodyView::Event {
        raw,
        event_id,
        canonical,
    } = entry.body
    {
        check_event_body(chain, raw, event_id, canonical, depth).map_err(Precheck::BadBody)?;
    }
    Ok(entry)
}

/// Records per piece of a chain that [`precheck_pieces`] checks on one
/// core; a multiple of [`BLOCK`].
pub const PIECE: usize = 16 * BLOCK;

/// Leaves per Merkle block that a piece hashes up to its root: a perfect
/// subtree, aligned, so that the walk pushes one node instead of its
/// leaves.
pub const BLOCK: usize = 1 << BLOCK_LEVEL;
pub const BLOCK_LEVEL: u8 = 10;

/// What [`precheck_pieces`] found of one piece of a chain's records
/// (those from index `start`, which is a multiple of [`PIECE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub start: usize,
    /// Every record is sound, on the chain, and linked to the record
    /// before it in the piece (seq one more, previous hash its hash). Only
    /// then do the fields below describe the piece: the walk checks its
    /// first record's seq and link and takes the rest as a whole.
    pub clean: bool,
    pub first_seq: u64,
    pub first_prev: EntryHash,
    /// The stored hash of its last record: what the next piece links to.
    pub last_hash: EntryHash,
    pub events: u64,
    pub rejected: u64,
    /// Each record's Merkle leaf hash (of its stored hash).
    pub leaves: Vec<crate::merkle::Hash>,
    /// The root of each full [`BLOCK`] of leaves, in order.
    pub blocks: Vec<crate::merkle::Hash>,
}

/// A record of a chain as read: its stored hash and its entry encoding.
pub type ChainRecord<'a> = (EntryHash, &'a [u8]);

/// [`precheck`] of every record of the chains the caller reads, in pieces
/// checked on every core *while* `read` is still reading (framing a bundle
/// is one pass that only one core can do). `read` is handed a function to
/// call with each piece as soon as it is complete: its chain, the index of
/// its first record in the chain (a multiple of [`PIECE`]) and its records
/// ([`PIECE`] of them, fewer only for a chain's last piece). Each piece
/// gets the links inside it, each record's Merkle leaf hash and the roots
/// of its full blocks: what does not depend on what came before the piece.
/// Returns what `read` returns and the pieces of each chain, to be
/// completed by [`complete_pieces`].
pub fn precheck_while_reading<'a, R>(
    depth: Depth,
    read: impl FnOnce(&mut dyn FnMut(&str, usize, &[ChainRecord<'a>])) -> R,
) -> (R, std::collections::BTreeMap<String, Vec<Piece>>) {
    use std::sync::{Mutex, mpsc};
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 16);
    let (jobs, waiting) = mpsc::channel::<(String, usize, Vec<ChainRecord<'a>>)>();
    let waiting = Mutex::new(waiting);
    let (done, checked) = mpsc::channel::<(String, Piece)>();
    let result = std::thread::scope(|scope| {
        for _ in 0..threads {
            let (waiting, done) = (&waiting, done.clone());
            scope.spawn(move || {
                loop {
                    let job = match waiting.lock() {
                        Ok(w) => w.recv(),
                        Err(_) => return,
                    };
                    let Ok((chain, start, records)) = job else {
                        return;
                    };
                    let piece = Piece {
                        start,
                        ..check_piece(&chain, &records, 0, depth)
                    };
                    if done.send((chain, piece)).is_err() {
                        return;
                    }
                }
            });
        }
        let result = read(&mut |chain, start, records| {
            // A closed queue (every worker gone) leaves the piece to
            // `complete_pieces`.
            let _ = jobs.send((chain.to_owned(), start, records.to_vec()));
        });
        drop(jobs);
        result
    });
    drop(done);
    let mut pieces: std::collections::BTreeMap<String, Vec<Piece>> = Default::default();
    for (chain, piece) in checked {
        pieces.entry(chain).or_default().push(piece);
    }
    (result, pieces)
}

/// The pieces of a chain's records in order, each as
/// [`precheck_while_reading`] found it, or checked here if it is missing
/// (a worker that could not finish).
pub fn complete_pieces(
    chain: &str,
    records: &[ChainRecord<'_>],
    mut found: Vec<Piece>,
    depth: Depth,
) -> Vec<Piece> {
    found.retain(|p| p.start % PIECE == 0 && p.start < records.len());
    found.sort_by_key(|p| p.start);
    found.dedup_by_key(|p| p.start);
    let have: std::collections::BTreeSet<usize> = found.iter().map(|p| p.start).collect();
    for start in (0..records.len()).step_by(PIECE) {
        if !have.contains(&start) {
            found.push(check_piece(chain, records, start, depth));
        }
    }
    found.sort_by_key(|p| p.start);
    found
}

fn check_piece(chain: &str, records: &[(EntryHash, &[u8])], start: usize, depth: Depth) -> Piece {
    let part = &records[start..(start + PIECE).min(records.len())];
    let mut piece = Piece {
        start,
        clean: true,
        first_seq: 0,
        first_prev: GENESIS_PREV_HASH,
        last_hash: GENESIS_PREV_HASH,
        events: 0,
        rejected: 0,
        leaves: Vec::with_capacity(part.len()),
        blocks: Vec::new(),
    };
    let mut before: Option<(u64, EntryHash)> = None;
    for (hash, encoding) in part {
        piece.leaves.push(crate::merkle::leaf_hash(hash));
        if !piece.clean {
            continue;
        }
        let Ok(entry) = sound_view(chain, hash, encoding, depth) else {
            piece.clean = false;
            continue;
        };
        let linked = match before {
            None => {
                piece.first_seq = entry.seq;
                piece.first_prev = entry.prev_hash;
                true
            }
            Some((seq, last)) => Some(entry.seq) == seq.checked_add(1) && entry.prev_hash == last,
        };
        if !linked || entry.chain != chain {
            piece.clean = false;
            continue;
        }
        match entry.body {
            BodyView::Event { .. } => piece.events += 1,
            BodyView::Rejected { .. } => piece.rejected += 1,
        }
        before = Some((entry.seq, *hash));
        piece.last_hash = *hash;
    }
    piece.blocks = piece
        .leaves
        .chunks_exact(BLOCK)
        .filter_map(crate::merkle::perfect_root)
        .collect();
    piece
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
    use crate::intake::LedgerRecord;
    // Re-derived, the event says what it is; otherwise its canonical bytes
    // are searched for it.
    let record = if depth == Depth::Events {
        check_event(raw, event_id, canonical).map_err(Problem::CanonicalMismatch)?
    } else {
        LedgerRecord::of_canonical(canonical)
    };
    match (record, LedgerRecord::of_chain(chain)) {
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

/// Re-derives an event from its received bytes and checks its recorded id
/// and canonical form; returns the ledger record it is, if any.
fn check_event(
    raw: &[u8],
    event_id: &str,
    canonical: &[u8],
) -> Result<Option<crate::intake::LedgerRecord>, String> {
    let event = decode_event(raw).map_err(|e| format!("received bytes do not decode: {e}"))?;
    if event.event_id != event_id {
        return Err(format!(
            "event id {event_id:?} recorded, {:?} received",
            event.event_id
        ));
    }
    if !is_canonical_json(&event, canonical) {
        return Err("canonical form differs from the one the received bytes give".to_owned());
    }
    Ok(crate::intake::LedgerRecord::of_event(&event))
}

#[cfg(test)]
mod tests;
