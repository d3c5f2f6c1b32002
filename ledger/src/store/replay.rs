//! Replaying the chains into a fresh projection, up to a point.
//!
//! A replay never reads the saved projection: it folds the entries
//! themselves, checking as it goes that each one hashes to what is stored
//! and links to the one before, so that what it shows is what the chain
//! says. A `Replay` can go on from one cut to a later one (for diffs).

use std::collections::BTreeMap;

use lifeledger_schemas::Event;

use super::{Ledger, StoreError, StoredRecord};
use crate::entry::{Entry, EntryHash, GENESIS_PREV_HASH};
use crate::projection::replay::{Cut, Point, Scope};
use crate::projection::{Projection, entry_event};

/// The state of a replay: the projection so far and where each chain
/// stopped.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub projection: Projection,
    /// Entries read (in scope or not).
    pub replayed: u64,
    /// Per chain, the hash of the last entry folded.
    last_hash: BTreeMap<String, EntryHash>,
    /// When set, a damaged entry ends its chain's replay (and is recorded
    /// in `damaged`) instead of failing the whole replay: for a report that
    /// must show a broken ledger as far as it is intact.
    pub stop_at_damage: bool,
    /// Chains whose replay stopped at damage: (chain, seq, what is wrong).
    pub damaged: Vec<(String, u64, String)>,
}

/// What a replay passes to its visitor for each entry it folds.
#[derive(Debug)]
pub struct Visited<'a> {
    pub record: &'a StoredRecord,
    pub entry: &'a Entry,
    /// The event, when the entry records one the scope wants.
    pub event: Option<&'a Event>,
}

impl Replay {
    pub fn new() -> Self {
        Self::default()
    }

    /// A replay that stops each chain at its first damaged entry.
    pub fn up_to_damage() -> Self {
        Replay {
            stop_at_damage: true,
            ..Self::default()
        }
    }
}

impl Ledger {
    /// The chain a bare seq means: the only chain other than `policy`.
    fn default_chain(&self) -> Result<String, StoreError> {
        let chains: Vec<String> = self
            .chain_names()?
            .into_iter()
            .filter(|c| c != "policy")
            .collect();
        match chains.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(StoreError::AmbiguousSeq(chains.join(", "))),
        }
    }

    /// Resolves a point to a cut: a seq becomes its entry's receipt time.
    pub fn resolve_point(&self, point: &Point) -> Result<Cut, StoreError> {
        match point {
            Point::Time(moment) => Ok(Cut::at(*moment)),
            Point::Seq { chain, seq } => {
                let chain = match chain {
                    Some(c) => c.clone(),
                    None => self.default_chain()?,
                };
                let entry = self
                    .entries(&chain, *seq, *seq)?
                    .next()
                    .transpose()?
                    .map(|(_, e)| e)
                    .ok_or_else(|| StoreError::Broken {
                        chain: chain.clone(),
                        seq: *seq,
                        detail: format!(
                            "no such entry (the chain has {})",
                            self.head(&chain).map_or(0, |h| h.next_seq)
                        ),
                    })?;
                Ok(Cut {
                    moment: entry.received_at,
                    pinned: Some((chain, *seq)),
                })
            }
        }
    }

    /// Folds into `replay` every entry past where it stopped that `cut`
    /// admits, each chain as a prefix, keeping only the events `scope`
    /// wants. `visit` sees each entry folded; `progress` the running count.
    pub fn replay(
        &self,
        replay: &mut Replay,
        cut: &Cut,
        scope: &Scope,
        visit: &mut dyn FnMut(Visited<'_>),
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), StoreError> {
        let broken = |chain: &str, seq: u64, detail: String| StoreError::Broken {
            chain: chain.to_owned(),
            seq,
            detail,
        };
        for chain in self.chain_names()? {
            let from = replay.projection.next_seq(&chain);
            let mut prev = replay
                .last_hash
                .get(&chain)
                .copied()
                .unwrap_or(GENESIS_PREV_HASH);
            for record in self.records(&chain, from)? {
                let checked = record.and_then(|record| {
                    let entry = Entry::decode(&record.encoding)
                        .map_err(|e| broken(&chain, record.position, e.to_string()))?;
                    Ok((record, entry))
                });
                let (record, entry) = match checked {
                    Ok(pair) => pair,
                    Err(e) if replay.stop_at_damage => {
                        let seq = replay.projection.next_seq(&chain);
                        replay.damaged.push((chain.clone(), seq, e.to_string()));
                        break;
                    }
                    Err(e) => return Err(e),
                };
                if !cut.admits(&chain, entry.seq, entry.received_at) {
                    break;
                }
                let hash = EntryHash::of_encoding(&record.encoding);
                let problem = if entry.seq != record.position || entry.chain != chain {
                    Some(format!(
                        "stored at seq {}, but the entry says {}@{}",
                        record.position, entry.chain, entry.seq
                    ))
                } else if hash != record.hash || entry.prev_hash != prev {
                    Some(
                        "the entry does not hash or link as stored; run `lifeledger verify`"
                            .to_owned(),
                    )
                } else {
                    None
                };
                if let Some(detail) = problem {
                    if replay.stop_at_damage {
                        replay
                            .damaged
                            .push((chain.clone(), record.position, detail));
                        break;
                    }
                    return Err(broken(&chain, record.position, detail));
                }
                let event = match entry_event(&entry) {
                    Ok(event) => event,
                    Err(e) if replay.stop_at_damage => {
                        replay
                            .damaged
                            .push((chain.clone(), entry.seq, e.to_string()));
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                let wanted = event.as_ref().filter(|e| scope.wants(e));
                replay.projection.apply_decoded(&entry, wanted)?;
                visit(Visited {
                    record: &record,
                    entry: &entry,
                    event: wanted,
                });
                prev = hash;
                replay.replayed += 1;
                if replay.replayed % 4096 == 0 {
                    progress(replay.replayed);
                }
            }
            replay.last_hash.insert(chain, prev);
        }
        // Nothing is saved: the dirty set only matters to the live store.
        replay.projection.take_dirty();
        progress(replay.replayed);
        Ok(())
    }
}
