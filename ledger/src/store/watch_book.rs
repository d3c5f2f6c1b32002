//! The deadline monitor's book kept in the index (sled): every item's
//! watch state, its next wakeup, the account → items index and the
//! overdue items by deadline, read where they lie; what looks changed
//! since the last save waits in memory, over what is saved, until
//! [`super::Ledger::save_monitor`] writes it in one batch with the
//! alerts it produced. Memory holds one tick's changes, not every item.
//! Derived data, not evidence.
//!
//! Keys of the `monitor` tree (the outbox's are in `monitor.rs`):
//! `i`+item: the item's [`ItemRecord`] (watch state, verdict status,
//! wakeup), one key so that a look reads and writes one record;
//! `w`+moment+item: the wakeups in time order; `a`+len+account+item: the
//! account's items; `v`+deadline+item: overdue items by deadline; `k`:
//! the watch counts; `q`: items per status; `j`: what the monitor judged
//! through ([`Judged`]). An older release kept `s`+item (the watch state
//! alone); those become `i` records when the book is first opened.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::monitor::book::{BookError, StatusCounts, Tally, WatchBook};
use crate::monitor::{Watch, WatchCounts, Watched};

const ITEM: u8 = b'i';
/// An older release's watch states.
const LEGACY_STATE: u8 = b's';
const WAKEUPS: u8 = b'w';
const ACCOUNT: u8 = b'a';
const OVERDUE: u8 = b'v';
pub(super) const COUNTS: &[u8] = b"k";
const STATUS_COUNTS: &[u8] = b"q";
pub(super) const JUDGED: &[u8] = b"j";

/// What the monitor's saved states were last judged through: the policy
/// and horizon, and how far each chain was folded into the facts it
/// read. A monitor starting with the same policy and horizon needs to
/// look only at what entries after these cursors touched, and at the
/// wakeups that came, instead of at every item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judged {
    /// The published policy's hash.
    pub policy: String,
    pub horizon_seconds: i64,
    /// The monitor's "now" when it judged: a monitor started with a clock
    /// set before it (`monitor --now`) sweeps, since the wakeups only
    /// look forward.
    pub at: Timestamp,
    /// Per chain, the seq of the next entry not yet judged.
    pub covered: BTreeMap<String, u64>,
}

pub(super) fn encode<T: Serialize>(key: &[u8], value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| damaged(key, e))
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| damaged(key, e))
}

pub(super) fn damaged(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged {
        key: format!("monitor {}", String::from_utf8_lossy(key)),
        detail: e.to_string(),
    }
}

fn book_error(e: StoreError) -> BookError {
    BookError(e.to_string())
}

fn sled_error(e: sled::Error) -> BookError {
    BookError(e.to_string())
}

/// A moment as 16 bytes that sort as the moments do.
fn moment_bytes(at: Timestamp) -> [u8; 16] {
    ((at.as_nanosecond() as u128) ^ (1u128 << 127)).to_be_bytes()
}

fn moment_from(key: &[u8]) -> Result<Timestamp, BookError> {
    let bytes: [u8; 16] = key
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| BookError("a moment key is short".into()))?;
    let nanos = (u128::from_be_bytes(bytes) ^ (1u128 << 127)) as i128;
    Timestamp::from_nanosecond(nanos).map_err(|e| BookError(e.to_string()))
}

fn key(tag: u8, item: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + item.len());
    k.push(tag);
    k.extend_from_slice(item.as_bytes());
    k
}

fn timed_key(tag: u8, at: Timestamp, item: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + item.len());
    k.push(tag);
    k.extend_from_slice(&moment_bytes(at));
    k.extend_from_slice(item.as_bytes());
    k
}

fn account_prefix(account: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + account.len());
    k.push(ACCOUNT);
    // The length first: an account key that is a prefix of another
    // must not list the other's items.
    k.extend_from_slice(&(account.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(account.as_bytes());
    k
}

fn is_overdue_by(w: Option<&Watched>) -> Option<Timestamp> {
    w.filter(|w| w.state == Watch::Overdue)
        .and_then(|w| w.due_by)
}

/// What the book keeps per item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ItemRecord {
    watched: Option<Watched>,
    status: Option<u8>,
    /// Nanoseconds since the epoch (not a timestamp's text: every look
    /// reads it).
    wakeup: Option<i128>,
}

impl ItemRecord {
    fn wakeup_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.wakeup
            .map(Timestamp::from_nanosecond)
            .transpose()
            .map_err(|e| damaged(b"i", e))
    }

    fn is_empty(&self) -> bool {
        self.watched.is_none() && self.status.is_none() && self.wakeup.is_none()
    }
}

/// The monitor's book over the index, with the changes not yet saved.
#[derive(Debug)]
pub struct SavedBook {
    tree: sled::Tree,
    /// Per item changed since the last save: (as saved, as now).
    items: BTreeMap<String, (ItemRecord, ItemRecord)>,
    accounts: BTreeSet<(String, String)>,
    due_soon: u64,
    overdue: u64,
    status_counts: StatusCounts,
    judged: Option<Judged>,
}

impl SavedBook {
    pub(super) fn open(tree: sled::Tree) -> Result<Self, StoreError> {
        let (due_soon, overdue, status_counts, judged) = match tree.get(STATUS_COUNTS)? {
            Some(q) => {
                let (due_soon, overdue) = match tree.get(COUNTS)? {
                    Some(v) => decode(COUNTS, &v)?,
                    None => (0, 0),
                };
                let judged = match tree.get(JUDGED)? {
                    Some(v) => Some(decode(JUDGED, &v)?),
                    None => None,
                };
                (due_soon, overdue, decode(STATUS_COUNTS, &q)?, judged)
            }
            None => {
                let (due_soon, overdue) = adopt_older_book(&tree)?;
                // Statuses and wakeups are learnt by a sweep.
                (due_soon, overdue, StatusCounts::default(), None)
            }
        };
        Ok(SavedBook {
            tree,
            items: BTreeMap::new(),
            accounts: BTreeSet::new(),
            due_soon,
            overdue,
            status_counts,
            judged,
        })
    }

    /// What the saved states were judged through, if recorded.
    pub fn judged(&self) -> Option<&Judged> {
        self.judged.as_ref()
    }

    pub(super) fn has_changes(&self) -> bool {
        !(self.items.is_empty() && self.accounts.is_empty())
    }

    /// The writes that save the changes.
    pub(super) fn changes_batch(&self) -> Result<sled::Batch, StoreError> {
        let mut batch = sled::Batch::default();
        for (item, (saved, now)) in &self.items {
            if now.is_empty() {
                batch.remove(key(ITEM, item));
            } else {
                batch.insert(key(ITEM, item), encode(b"i", now)?);
            }
            if saved.watched != now.watched {
                if let Some(d) = is_overdue_by(saved.watched.as_ref()) {
                    batch.remove(timed_key(OVERDUE, d, item));
                }
                if let Some(d) = is_overdue_by(now.watched.as_ref()) {
                    batch.insert(timed_key(OVERDUE, d, item), Vec::new());
                }
            }
            if saved.wakeup != now.wakeup {
                if let Some(at) = saved.wakeup_at()? {
                    batch.remove(timed_key(WAKEUPS, at, item));
                }
                if let Some(at) = now.wakeup_at()? {
                    batch.insert(timed_key(WAKEUPS, at, item), Vec::new());
                }
            }
        }
        for (account, item) in &self.accounts {
            let mut k = account_prefix(account);
            k.extend_from_slice(item.as_bytes());
            batch.insert(k, Vec::new());
        }
        batch.insert(COUNTS, encode(COUNTS, &(self.due_soon, self.overdue))?);
        batch.insert(STATUS_COUNTS, encode(STATUS_COUNTS, &self.status_counts)?);
        Ok(batch)
    }

    /// The changes were saved.
    pub(super) fn saved(&mut self) {
        self.items.clear();
        self.accounts.clear();
    }

    pub(super) fn set_judged(&mut self, judged: Option<Judged>) {
        self.judged = judged;
    }

    fn saved_record(&self, item: &str) -> Result<ItemRecord, BookError> {
        match self.tree.get(key(ITEM, item)).map_err(sled_error)? {
            Some(v) => decode(b"i", &v).map_err(book_error),
            None => Ok(ItemRecord::default()),
        }
    }

    fn record(&self, item: &str) -> Result<ItemRecord, BookError> {
        match self.items.get(item) {
            Some((_, now)) => Ok(now.clone()),
            None => self.saved_record(item),
        }
    }

    /// Changes the item's record.
    fn change(&mut self, item: &str, f: impl FnOnce(&mut ItemRecord)) -> Result<(), BookError> {
        if let Some((_, now)) = self.items.get_mut(item) {
            f(now);
            return Ok(());
        }
        let saved = self.saved_record(item)?;
        let mut now = saved.clone();
        f(&mut now);
        self.items.insert(item.to_owned(), (saved, now));
        Ok(())
    }

    fn count(&mut self, w: &Watched, add: bool) {
        let n = match w.state {
            Watch::DueSoon => &mut self.due_soon,
            Watch::Overdue => &mut self.overdue,
            Watch::Clear => return,
        };
        *n = if add { *n + 1 } else { n.saturating_sub(1) };
    }
}

/// Turns an older book into this one: its watch states (`s` keys)
/// become item records, keys of a book without statuses are dropped
/// (a sweep sets them again), and the overdue index and counts are made
/// from the states. The outbox stays as it is.
fn adopt_older_book(tree: &sled::Tree) -> Result<(u64, u64), StoreError> {
    let mut tally = Tally::default();
    let mut batch = sled::Batch::default();
    for kv in tree.iter() {
        let (k, v) = kv?;
        match k.first() {
            Some(b'o' | b'm' | b'n') => {}
            Some(&LEGACY_STATE) => {
                let w: Watched = decode(&k, &v)?;
                let item = String::from_utf8_lossy(&k[1..]).into_owned();
                if let Some(d) = is_overdue_by(Some(&w)) {
                    batch.insert(timed_key(OVERDUE, d, &item), Vec::new());
                }
                tally.add(&w);
                let record = ItemRecord {
                    watched: Some(w),
                    ..ItemRecord::default()
                };
                batch.insert(key(ITEM, &item), encode(b"i", &record)?);
                batch.remove(k);
            }
            _ => batch.remove(k),
        }
    }
    batch.insert(COUNTS, encode(COUNTS, &(tally.due_soon, tally.overdue))?);
    batch.insert(
        STATUS_COUNTS,
        encode(STATUS_COUNTS, &StatusCounts::default())?,
    );
    tree.apply_batch(batch)?;
    Ok((tally.due_soon, tally.overdue))
}

impl WatchBook for SavedBook {
    fn watched(&self, item: &str) -> Result<Option<Watched>, BookError> {
        Ok(self.record(item)?.watched)
    }

    fn set_watched(&mut self, item: &str, watched: Watched) -> Result<(), BookError> {
        if let Some(old) = self.record(item)?.watched {
            self.count(&old, false);
        }
        self.count(&watched, true);
        self.change(item, |r| r.watched = Some(watched))
    }

    fn wakeup(&self, item: &str) -> Result<Option<Timestamp>, BookError> {
        self.record(item)?.wakeup_at().map_err(book_error)
    }

    fn set_wakeup(&mut self, item: &str, at: Option<Timestamp>) -> Result<(), BookError> {
        self.change(item, |r| r.wakeup = at.map(Timestamp::as_nanosecond))
    }

    fn take_due(&mut self, now: Timestamp, limit: usize) -> Result<Vec<String>, BookError> {
        let mut due: Vec<(Timestamp, String)> = Vec::new();
        for (item, (_, r)) in &self.items {
            if let Some(at) = r.wakeup_at().map_err(book_error)? {
                if at <= now {
                    due.push((at, item.clone()));
                }
            }
        }
        let mut from_index = 0usize;
        for kv in self.tree.scan_prefix([WAKEUPS]) {
            if from_index >= limit {
                break;
            }
            let (k, _) = kv.map_err(sled_error)?;
            let at = moment_from(&k[1..])?;
            if at > now {
                break;
            }
            let item = String::from_utf8_lossy(&k[17..]).into_owned();
            // An item changed since the last save has its wakeup above.
            if !self.items.contains_key(&item) {
                due.push((at, item));
                from_index += 1;
            }
        }
        due.sort();
        due.truncate(limit);
        let mut items = Vec::with_capacity(due.len());
        for (_, item) in due {
            self.set_wakeup(&item, None)?;
            items.push(item);
        }
        Ok(items)
    }

    fn add_to_account(&mut self, account: &str, item: &str) -> Result<(), BookError> {
        let pair = (account.to_owned(), item.to_owned());
        if self.accounts.contains(&pair) {
            return Ok(());
        }
        let mut k = account_prefix(account);
        k.extend_from_slice(item.as_bytes());
        if !self.tree.contains_key(k).map_err(sled_error)? {
            self.accounts.insert(pair);
        }
        Ok(())
    }

    fn items_of_account(&self, account: &str) -> Result<Vec<String>, BookError> {
        let prefix = account_prefix(account);
        let mut items = BTreeSet::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, _) = kv.map_err(sled_error)?;
            items.insert(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        let from = (account.to_owned(), String::new());
        items.extend(
            self.accounts
                .range(from..)
                .take_while(|(a, _)| a == account)
                .map(|(_, item)| item.clone()),
        );
        Ok(items.into_iter().collect())
    }

    fn status(&self, item: &str) -> Result<Option<u8>, BookError> {
        Ok(self.record(item)?.status)
    }

    fn set_status(&mut self, item: &str, status: Option<u8>) -> Result<(), BookError> {
        let old = self.status(item)?;
        self.status_counts.shift(old, status);
        self.change(item, |r| r.status = status)
    }

    fn by_status(&self) -> Result<StatusCounts, BookError> {
        Ok(self.status_counts)
    }

    fn counts(&self) -> Result<WatchCounts, BookError> {
        let mut oldest = self
            .items
            .values()
            .filter_map(|(_, now)| is_overdue_by(now.watched.as_ref()))
            .min();
        for kv in self.tree.scan_prefix([OVERDUE]) {
            let (k, _) = kv.map_err(sled_error)?;
            let item = String::from_utf8_lossy(&k[17..]);
            // An item changed since the last save counts as it is now.
            if self.items.contains_key(item.as_ref()) {
                continue;
            }
            let at = moment_from(&k[1..])?;
            oldest = Some(oldest.map_or(at, |o: Timestamp| o.min(at)));
            break;
        }
        Ok(WatchCounts {
            due_soon: self.due_soon,
            overdue: self.overdue,
            oldest_overdue_deadline: oldest,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use proptest::prelude::*;

    use super::*;
    use crate::monitor::MemoryBook;
    use crate::store::{Ledger, LedgerOptions};

    const ITEMS: [&str; 4] = ["a", "ab", "b", "c-1"];
    const ACCOUNTS: [&str; 3] = ["1/1", "1/10", "2/1"];

    #[derive(Debug, Clone)]
    enum Op {
        SetWatched(usize, Watch, u64, Option<i64>),
        SetWakeup(usize, Option<i64>),
        SetStatus(usize, Option<u8>),
        TakeDue(i64, usize),
        AddToAccount(usize, usize),
        /// Saves what changed.
        Save,
        /// Reopens the book from what was saved, losing what was not.
        Crash,
    }

    fn moment(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn op() -> impl Strategy<Value = Op> {
        let watch = prop_oneof![
            Just(Watch::Clear),
            Just(Watch::DueSoon),
            Just(Watch::Overdue)
        ];
        // Moments either side of the epoch: the key's order must hold
        // for both.
        let at = -5i64..5;
        prop_oneof![
            (
                0..ITEMS.len(),
                watch,
                0u64..3,
                proptest::option::of(at.clone())
            )
                .prop_map(|(i, w, n, d)| Op::SetWatched(i, w, n, d)),
            (0..ITEMS.len(), proptest::option::of(at.clone()))
                .prop_map(|(i, a)| Op::SetWakeup(i, a)),
            (0..ITEMS.len(), proptest::option::of(0u8..3)).prop_map(|(i, c)| Op::SetStatus(i, c)),
            (at, 1usize..4).prop_map(|(now, limit)| Op::TakeDue(now, limit)),
            (0..ACCOUNTS.len(), 0..ITEMS.len()).prop_map(|(a, i)| Op::AddToAccount(a, i)),
            Just(Op::Save),
            Just(Op::Crash),
        ]
    }

    fn agree(saved: &SavedBook, memory: &MemoryBook) -> Result<(), TestCaseError> {
        for item in ITEMS {
            prop_assert_eq!(saved.watched(item).unwrap(), memory.watched(item).unwrap());
            prop_assert_eq!(saved.wakeup(item).unwrap(), memory.wakeup(item).unwrap());
            prop_assert_eq!(saved.status(item).unwrap(), memory.status(item).unwrap());
        }
        for account in ACCOUNTS {
            prop_assert_eq!(
                saved.items_of_account(account).unwrap(),
                memory.items_of_account(account).unwrap()
            );
        }
        prop_assert_eq!(saved.counts().unwrap(), memory.counts().unwrap());
        prop_assert_eq!(saved.by_status().unwrap(), memory.by_status().unwrap());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The book kept in the index answers as one kept in memory,
        /// whatever was saved and whatever a crash lost of what was not.
        #[test]
        fn the_saved_book_answers_as_a_book_in_memory(ops in proptest::collection::vec(op(), 1..40)) {
            let tmp = tempfile::tempdir().unwrap();
            let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
            let mut saved = ledger.monitor_book().unwrap();
            let mut memory = MemoryBook::default();
            let mut memory_as_saved = memory.clone();
            for op in ops {
                match op {
                    Op::SetWatched(i, state, changes, due_by) => {
                        let w = Watched { state, changes, due_by: due_by.map(moment), future_dated: 0 };
                        saved.set_watched(ITEMS[i], w.clone()).unwrap();
                        memory.set_watched(ITEMS[i], w).unwrap();
                    }
                    Op::SetWakeup(i, at) => {
                        saved.set_wakeup(ITEMS[i], at.map(moment)).unwrap();
                        memory.set_wakeup(ITEMS[i], at.map(moment)).unwrap();
                    }
                    Op::SetStatus(i, c) => {
                        saved.set_status(ITEMS[i], c).unwrap();
                        memory.set_status(ITEMS[i], c).unwrap();
                    }
                    Op::TakeDue(now, limit) => {
                        prop_assert_eq!(
                            saved.take_due(moment(now), limit).unwrap(),
                            memory.take_due(moment(now), limit).unwrap()
                        );
                    }
                    Op::AddToAccount(a, i) => {
                        saved.add_to_account(ACCOUNTS[a], ITEMS[i]).unwrap();
                        memory.add_to_account(ACCOUNTS[a], ITEMS[i]).unwrap();
                    }
                    Op::Save => {
                        ledger.save_monitor(&mut saved, &[], None).unwrap();
                        memory_as_saved = memory.clone();
                    }
                    Op::Crash => {
                        saved = ledger.monitor_book().unwrap();
                        memory = memory_as_saved.clone();
                    }
                }
                agree(&saved, &memory)?;
            }
        }
    }

    #[test]
    fn what_was_judged_through_is_saved_and_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
        let mut book = ledger.monitor_book().unwrap();
        assert_eq!(book.judged(), None);
        let judged = Judged {
            policy: "p".into(),
            horizon_seconds: 604_800,
            at: moment(10),
            covered: BTreeMap::from([("orders-0".to_owned(), 7)]),
        };
        ledger.save_monitor(&mut book, &[], Some(&judged)).unwrap();
        assert_eq!(book.judged(), Some(&judged));
        let mut reopened = ledger.monitor_book().unwrap();
        assert_eq!(reopened.judged(), Some(&judged));
        ledger.forget_monitor_judged(&mut reopened).unwrap();
        assert_eq!(reopened.judged(), None);
        assert_eq!(ledger.monitor_book().unwrap().judged(), None);
    }

    #[test]
    fn states_an_older_release_saved_are_counted_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
        let overdue = Watched {
            state: Watch::Overdue,
            changes: 2,
            due_by: Some(moment(3)),
            future_dated: 0,
        };
        // An older release kept states only.
        let tree = ledger.db.open_tree("monitor").unwrap();
        tree.insert(key(LEGACY_STATE, "x"), encode(b"s", &overdue).unwrap())
            .unwrap();
        let book = ledger.monitor_book().unwrap();
        assert_eq!(
            book.counts().unwrap(),
            WatchCounts {
                due_soon: 0,
                overdue: 1,
                oldest_overdue_deadline: Some(moment(3)),
            }
        );
        assert!(tree.contains_key(COUNTS).unwrap());
        assert!(!tree.contains_key(key(LEGACY_STATE, "x")).unwrap());
        assert_eq!(book.watched("x").unwrap(), Some(overdue));
        assert_eq!(book.judged(), None, "a book without statuses is swept");
        let _ = &mut ledger;
    }
}
