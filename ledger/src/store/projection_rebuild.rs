//! Rebuilding the projection from the chains in one sorted pass.
//!
//! Folding entry by entry into states that do not all fit in memory
//! reads each state back, writes it again and merges the runs it lands
//! in, over and over (about 13 µs an entry at 10M entries). A rebuild
//! starts from nothing, so it can do better: it reads every chain once,
//! takes from each entry the change it makes to an item or an account
//! ([`StateChange`]), sorts the changes by the state they change (in
//! bounded memory, spilling to scratch files: `external_sort`), and then
//! builds each state from its changes alone, in key order, straight into
//! one run. Each state is encoded and written once; nothing is read back.
//!
//! Within a state, changes are absorbed in ledger order (chain by chain
//! in name order, then seq), the order the fold chain by chain used, so
//! the states are the same (a property test in `projection/change.rs`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::external_sort::ExternalSort;
use super::projection::{codec_error, decode, encode, key, small_records};
use super::snapshot::Snapshot;
use super::states::RunWriter;
use super::{Ledger, StoreError, io_error};
use crate::entry::Entry;
use crate::projection::change::{State, is_ledger_wide};
use crate::projection::{
    Projection, ProjectionError, StateChange, StateKind, entry_event, entry_ref,
};

/// Memory for changes gathered before they are sorted and spilled, shared
/// by the threads that gather them.
const SORT_BUDGET: usize = 96 << 20;
/// Threads reading and decoding entries: decoding is most of a rebuild's
/// work, and this machine class has two cores.
const GATHERERS: usize = 2;
/// Entries of one chain one thread takes at a time.
const UNIT: u64 = 65_536;

/// A stretch of one chain: entries `from..to` of the `index`th chain.
struct Unit<'a> {
    index: usize,
    chain: &'a str,
    from: u64,
    to: u64,
}

/// What one thread gathered: the changes to items and accounts, sorted,
/// one sort per part of the states (see [`part_of`]), and the
/// ledger-wide entries (few), with their place in ledger order.
struct Gathered {
    changes: Vec<ExternalSort>,
    ledger_wide: Vec<(u128, Entry)>,
}

/// Which part of the states a key's changes go to: each part is built
/// into a run of its own, on a thread of its own. Any fixed spread will
/// do; a lookup asks every run's Bloom filter anyway.
fn part_of(key: &[u8]) -> usize {
    let spread = key
        .iter()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(*b)));
    spread as usize % GATHERERS
}

/// Where an entry sits in ledger order: chain by chain in name order, then
/// by seq.
fn ledger_order(index: usize, seq: u64) -> u128 {
    (index as u128) << 64 | u128::from(seq)
}

impl Ledger {
    /// Drops the saved projection and builds it again from every chain
    /// (see the module's doc); memory stays bounded however many items
    /// there are. Returns the projection as a writer keeps it (cursors,
    /// policies and imports in memory, states saved).
    pub fn rebuild_projection(
        &mut self,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Projection, StoreError> {
        self.rebuild_projection_by(UNIT, progress)
            .map(|(projection, _)| projection)
    }

    /// [`Ledger::rebuild_projection`], also saying how many items and
    /// accounts it built (counted as they are written, where
    /// [`Ledger::projection_size`] reads every saved state again).
    pub fn rebuild_projection_sized(
        &mut self,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Projection, Built), StoreError> {
        self.rebuild_projection_by(UNIT, progress)
    }

    /// [`Ledger::rebuild_projection`], threads taking `unit` entries at a
    /// time.
    fn rebuild_projection_by(
        &mut self,
        unit: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Projection, Built), StoreError> {
        self.projection_store_mut()?.forget_recent_saves();
        let cleared = self.projection_store_mut()?.states.clear();
        self.poisoning(cleared)?;
        let scratch = self.projection_store_mut()?.states.scratch()?;
        let mut projection = Projection::partial();
        let gathered = gather(&self.evidence, scratch.path(), unit, progress)?;
        let mut parts: Vec<Vec<ExternalSort>> = (0..GATHERERS).map(|_| Vec::new()).collect();
        let mut ledger_wide = Vec::new();
        for g in gathered {
            for (part, sort) in parts.iter_mut().zip(g.changes) {
                part.push(sort);
            }
            ledger_wide.extend(g.ledger_wide);
        }
        ledger_wide.sort_by_key(|(order, _)| *order);
        for (_, entry) in &ledger_wide {
            projection.fold_entry(entry)?;
        }
        for head in self.evidence.heads() {
            projection.covered.insert(head.chain.clone(), head.next_seq);
        }
        let built = self.build_states(&projection, parts);
        let built = self.poisoning(built)?;
        projection.take_dirty();
        drop(scratch);
        self.make_durable()?;
        Ok((projection, built))
    }

    /// Builds each state from its sorted changes, each part into a run
    /// of its own on a thread of its own, and saves the runs with the
    /// projection's cursors, policies and imports.
    fn build_states(
        &mut self,
        projection: &Projection,
        parts: Vec<Vec<ExternalSort>>,
    ) -> Result<Built, StoreError> {
        let small = small_records(projection, true)?;
        let mut work = Vec::with_capacity(parts.len());
        for sorts in parts {
            let records: u64 = sorts.iter().map(ExternalSort::records).sum();
            if records > 0 {
                work.push((
                    self.projection_store_mut()?.states.start_run(records)?,
                    sorts,
                ));
            }
        }
        if work.is_empty() {
            self.projection_store_mut()?.states.save(&[], small)?;
            return Ok(Built::default());
        }
        let parts = std::thread::scope(|scope| {
            let builders: Vec<_> = work
                .into_iter()
                .map(|(mut run, sorts)| {
                    scope.spawn(move || build_part(&mut run, sorts).map(|built| (run, built)))
                })
                .collect();
            builders
                .into_iter()
                .map(|b| b.join().unwrap_or_else(|_| Err(stopped("building states"))))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut built = Built::default();
        let mut runs = Vec::with_capacity(parts.len());
        for (run, part) in parts {
            built.items += part.items;
            built.accounts += part.accounts;
            runs.push(run);
        }
        self.projection_store_mut()?.states.save_runs(runs, small)?;
        Ok(built)
    }
}

fn stopped(what: &str) -> StoreError {
    StoreError::Damaged {
        key: "projection".into(),
        detail: format!("a thread {what} stopped"),
    }
}

/// How many states a rebuild built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Built {
    pub items: u64,
    pub accounts: u64,
}

impl Built {
    fn count(&mut self, state: &State) {
        match state {
            State::Item(_) => self.items += 1,
            State::Account(_) => self.accounts += 1,
        }
    }
}

/// Builds each state of one part from its sorted changes into `run`.
fn build_part(run: &mut RunWriter, sorts: Vec<ExternalSort>) -> Result<Built, StoreError> {
    let mut built = Built::default();
    let mut building: Option<(Vec<u8>, State)> = None;
    for record in ExternalSort::merge(sorts)? {
        let (key, value) = record?;
        let change: StateChange = decode(&key, &value)?;
        match &mut building {
            Some((current, state)) if *current == key => {
                if !state.absorb(change) {
                    return Err(codec_error(
                        &key,
                        "changes of an item and an account under one key",
                    ));
                }
            }
            _ => {
                if let Some((done, state)) = building.take() {
                    run.push(&done, &encode_state(&state)?)?;
                    built.count(&state);
                }
                building = Some((key, change.into_state()));
            }
        }
    }
    if let Some((done, state)) = building {
        run.push(&done, &encode_state(&state)?)?;
        built.count(&state);
    }
    Ok(built)
}

/// Reads every chain of `evidence` on `GATHERERS` threads, `unit`
/// entries at a time, and gathers each entry's change. `progress` is told
/// the entries read so far (by the calling thread, which gathers too).
fn gather(
    evidence: &Snapshot,
    scratch: &Path,
    unit: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<Gathered>, StoreError> {
    let chains = evidence.chain_names();
    let mut units = Vec::new();
    for (index, chain) in chains.iter().enumerate() {
        let end = evidence.head(chain).map_or(0, |h| h.next_seq);
        let mut from = 0;
        while from < end {
            let to = from.saturating_add(unit.max(1)).min(end);
            units.push(Unit {
                index,
                chain,
                from,
                to,
            });
            from = to;
        }
    }
    let next = AtomicUsize::new(0);
    let read = AtomicU64::new(0);
    let budget = SORT_BUDGET / GATHERERS;
    let work = |n: usize, report: &mut dyn FnMut(u64)| -> Result<Gathered, StoreError> {
        let dir = scratch.join(format!("gatherer-{n}"));
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let mut gathered = Gathered {
            changes: (0..GATHERERS)
                .map(|part| {
                    let dir = dir.join(format!("part-{part}"));
                    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                    Ok(ExternalSort::new(&dir, budget / GATHERERS))
                })
                .collect::<Result<_, StoreError>>()?,
            ledger_wide: Vec::new(),
        };
        while let Some(unit) = units.get(next.fetch_add(1, Ordering::Relaxed)) {
            gather_unit(evidence, unit, &mut gathered)?;
            report(read.fetch_add(unit.to - unit.from, Ordering::Relaxed) + unit.to - unit.from);
        }
        Ok(gathered)
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = (1..GATHERERS)
            .map(|n| scope.spawn(move || work(n, &mut |_| {})))
            .collect();
        let mut all = vec![work(0, progress)];
        for other in others {
            all.push(
                other
                    .join()
                    .unwrap_or_else(|_| Err(stopped("gathering changes"))),
            );
        }
        progress(read.load(Ordering::Relaxed));
        all.into_iter().collect()
    })
}

/// Gathers the changes of one unit's entries, checking that the chain
/// hands over exactly the seqs asked for.
fn gather_unit(
    evidence: &Snapshot,
    unit: &Unit,
    gathered: &mut Gathered,
) -> Result<(), StoreError> {
    let mut expected = unit.from;
    let mut value = Vec::new();
    for record in evidence.entries(unit.chain, unit.from, unit.to - 1) {
        let (_, entry) = record?;
        if entry.seq != expected {
            return Err(ProjectionError::OutOfOrder {
                chain: unit.chain.to_owned(),
                expected,
                found: entry.seq,
            }
            .into());
        }
        expected += 1;
        let Some(event) = entry_event(&entry)? else {
            continue;
        };
        let order = ledger_order(unit.index, entry.seq);
        if is_ledger_wide(&event) {
            gathered.ledger_wide.push((order, entry));
            continue;
        }
        let Some(change) = StateChange::of(&event, entry_ref(&entry, &event)) else {
            continue;
        };
        let (kind, name) = change.state();
        value.clear();
        bincode::serde::encode_into_std_write(&change, &mut value, bincode::config::standard())
            .map_err(|e| codec_error(b"(encode)", e))?;
        let key = state_key(kind, &name);
        gathered.changes[part_of(&key)].push(&key, order, &value)?;
    }
    if expected != unit.to {
        return Err(ProjectionError::OutOfOrder {
            chain: unit.chain.to_owned(),
            expected,
            found: unit.to,
        }
        .into());
    }
    Ok(())
}

/// The key a state is saved under (see `store/projection.rs`).
fn state_key(kind: StateKind, name: &str) -> Vec<u8> {
    match kind {
        StateKind::Account => key(b'a', name),
        StateKind::Item => key(b'i', name),
    }
}

fn encode_state(state: &State) -> Result<Vec<u8>, StoreError> {
    match state {
        State::Item(item) => encode(item),
        State::Account(account) => encode(account),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::store::LedgerOptions;
    use crate::store::test_events::incoming;

    const ACCOUNT: &str = r#""account":{"app_id":"1250000001","uin":"1000000000UIN"}"#;

    /// Line `i` of a stream that revisits 40 items of 3 accounts, with
    /// account-wide events and lines that are no event between them. An
    /// item keeps its account (the account is the first one folded).
    fn line(i: u64) -> Vec<u8> {
        let uin = if matches!(i % 9, 5 | 7) {
            i / 9
        } else {
            i % 40
        };
        let account = ACCOUNT.replace("UIN", &(uin % 3).to_string());
        let head = format!(
            r#"{{"schema_version":1,"event_id":"e{i}","event_time":"2026-03-{:02}T10:00:00Z",{account}"#,
            1 + (i * 7) % 28
        );
        let item = format!(
            r#""item_id":"item-{}","category":"asset_management""#,
            i % 40
        );
        let text = match i % 9 {
            0 => format!(
                r#"{head},{item},"kind":{{"type":"collected","sensitive":false,"purpose":"p"}}}}"#
            ),
            1 | 2 => format!(
                r#"{head},{item},"kind":{{"type":"stored","store":"s{}"}}}}"#,
                i % 2
            ),
            3 => format!(
                r#"{head},{item},"kind":{{"type":"backed_up","store":"cos","backup_id":"b{}"}}}}"#,
                i % 4
            ),
            4 => format!(
                r#"{head},{item},"kind":{{"type":"deleted","store":"s{}"}}}}"#,
                i % 2
            ),
            5 => format!(
                r#"{head},"kind":{{"type":"deletion_requested","request_id":"r{i}","categories":["asset_management"]}}}}"#
            ),
            6 => format!(
                r#"{head},{item},"kind":{{"type":"legal_hold_placed","hold_id":"h{}"}}}}"#,
                i % 5
            ),
            7 => format!(r#"{head},"kind":{{"type":"service_use_ended"}}}}"#),
            _ => format!("not an event {i}"),
        };
        text.into_bytes()
    }

    #[test]
    fn a_rebuild_saves_the_states_the_incremental_fold_saved() {
        let tmp = tempfile::tempdir().unwrap();
        let options = LedgerOptions {
            projection_resident: 10,
            ..LedgerOptions::default()
        };
        let mut ledger = Ledger::open(tmp.path(), options).unwrap();
        let policy_text = crate::projection::tests::POLICY;
        let policy = Policy::parse(policy_text).unwrap();
        let mut projection = ledger.open_projection().unwrap();
        for start in (0..900u64).step_by(30) {
            let chain = ["a", "b", "c"][(start / 30 % 3) as usize];
            let inputs = (start..start + 30).map(|i| incoming(i, line(i))).collect();
            ledger
                .append(chain, inputs, jiff::Timestamp::now())
                .unwrap();
            if start == 450 {
                ledger
                    .publish_policy(&policy, policy_text, "policy.toml", jiff::Timestamp::now())
                    .unwrap();
            }
            ledger.catch_up(&mut projection, &mut |_| {}).unwrap();
        }
        let folded = ledger.load_projection().unwrap();
        assert_eq!(folded.items.len(), 40);
        assert_eq!(folded.accounts.len(), 3);
        assert_eq!(folded.policies.len(), 1);
        // Units of 7 entries: every chain is read by both threads in turns.
        for unit in [7, UNIT] {
            let mut reported = 0;
            let (kept, built) = ledger
                .rebuild_projection_by(unit, &mut |n| reported = n)
                .unwrap();
            assert_eq!(reported, 901);
            assert_eq!((built.items, built.accounts), (40, 3));
            assert_eq!(ledger.projection_size().unwrap(), (40, 3));
            assert_eq!(kept.covered, folded.covered);
            let rebuilt = ledger.load_projection().unwrap();
            for (id, item) in &folded.items {
                assert_eq!(rebuilt.items.get(id), Some(item), "unit {unit}");
            }
            assert_eq!(rebuilt, folded, "unit {unit}");
        }
        // No scratch is left behind.
        let left: Vec<_> = std::fs::read_dir(tmp.path().join(super::super::states::PROJECTION_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("rebuild-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
