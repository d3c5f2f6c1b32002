//! The deadline monitor's book and alert outbox, in files of the
//! ledger's own (`DIR/monitor/`): sorted runs and a manifest, as the
//! projection's states are kept (see `states`), not in sled, whose memory
//! grows with the number of keys it holds (millions of items here).
//!
//! Every item's watch state, verdict status and wakeup, the wakeups in
//! time order, each account's items and the overdue items by deadline
//! are read where they lie; what looks changed since the last save waits
//! in memory, over what is saved, until [`SavedBook::save`] writes it in
//! one run, with the alerts it produced, under one manifest replacement:
//! a change of state and its alert are saved together or not at all.
//! Memory holds one tick's changes, not every item.
//!
//! The alert leaves the outbox only once its destination acknowledged it.
//! Before sending, the destination's end offsets are saved as marks, so
//! that after a crash the sender can read the destination from the marks
//! and drop from the outbox what already arrived: each change is
//! delivered once. Derived data, not evidence.
//!
//! Keys: `i`+item: the item's [`ItemRecord`]; `w`+moment+item: the
//! wakeups in time order; `a`+len+account+item: the account's items;
//! `v`+deadline+item: overdue items by deadline; `o`+n: the n-th alert,
//! while unsent. An empty value is a removed key (a merge that reaches the
//! oldest run drops it). The manifest's small records: the counts, items
//! per status, what the monitor judged through ([`Judged`]), the outbox's
//! bounds and marks, and where the wakeup and overdue scans may start
//! (every key before is removed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::states::StateStore;
use crate::monitor::book::{BookError, StatusCounts, Tally, WatchBook};
use crate::monitor::{Alert, Watch, WatchCounts, Watched};

/// The monitor's directory inside a ledger directory.
pub const MONITOR_DIR: &str = "monitor";

const ITEM: u8 = b'i';
const WAKEUPS: u8 = b'w';
const ACCOUNT: u8 = b'a';
const OVERDUE: u8 = b'v';
const OUTBOX: u8 = b'o';

const COUNTS: &[u8] = b"counts";
const STATUS_COUNTS: &[u8] = b"statuses";
const JUDGED: &[u8] = b"judged";
const NEXT_ALERT: &[u8] = b"next-alert";
const FIRST_UNSENT: &[u8] = b"first-unsent";
const MARKS: &[u8] = b"marks";
const WAKEUPS_FROM: &[u8] = b"wakeups-from";
const OVERDUE_FROM: &[u8] = b"overdue-from";

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

/// Alerts saved but not yet acknowledged by their destination.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    /// Each alert with its place in the outbox, oldest first.
    pub alerts: Vec<(u64, Alert)>,
    /// The destination's end offsets (partition, offset) recorded before
    /// the last send began, if one began.
    pub marks: Option<Vec<(i32, i64)>>,
}

fn encode<T: Serialize>(key: &[u8], value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| damaged(key, e))
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| damaged(key, e))
}

/// A small record of the manifest, if saved (an empty value is none).
fn read_small<T: serde::de::DeserializeOwned>(
    store: &StateStore,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    store
        .small(key)
        .filter(|v| !v.is_empty())
        .map(|v| decode(key, v))
        .transpose()
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

/// A moment as 16 bytes that sort as the moments do.
fn moment_bytes(nanos: i128) -> [u8; 16] {
    ((nanos as u128) ^ (1u128 << 127)).to_be_bytes()
}

fn nanos_from(key: &[u8]) -> Result<i128, StoreError> {
    let bytes: [u8; 16] = key
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| damaged(key, "a moment key is short"))?;
    Ok((u128::from_be_bytes(bytes) ^ (1u128 << 127)) as i128)
}

fn timestamp(nanos: i128) -> Result<Timestamp, StoreError> {
    Timestamp::from_nanosecond(nanos).map_err(|e| damaged(b"moment", e))
}

fn key(tag: u8, item: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + item.len());
    k.push(tag);
    k.extend_from_slice(item.as_bytes());
    k
}

fn timed_key(tag: u8, nanos: i128, item: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + item.len());
    k.push(tag);
    k.extend_from_slice(&moment_bytes(nanos));
    k.extend_from_slice(item.as_bytes());
    k
}

fn account_key(account: &str, item: &str) -> Vec<u8> {
    let mut k = account_prefix(account);
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

fn outbox_key(place: u64) -> Vec<u8> {
    let mut k = vec![OUTBOX];
    k.extend_from_slice(&place.to_be_bytes());
    k
}

fn overdue_by(w: Option<&Watched>) -> Option<i128> {
    w.filter(|w| w.state == Watch::Overdue)
        .and_then(|w| w.due_by)
        .map(Timestamp::as_nanosecond)
}

/// What the book keeps per item: one key, so that a look reads and
/// writes one record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ItemRecord {
    watched: Option<Watched>,
    status: Option<u8>,
    /// Nanoseconds since the epoch (not a timestamp's text: every look
    /// reads it).
    wakeup: Option<i128>,
}

impl ItemRecord {
    fn is_empty(&self) -> bool {
        self.watched.is_none() && self.status.is_none() && self.wakeup.is_none()
    }
}

/// The monitor's book and outbox, with the changes not yet saved.
#[derive(Debug)]
pub struct SavedBook {
    store: StateStore,
    /// Per item changed since the last save: (as saved, as now).
    items: BTreeMap<String, (ItemRecord, ItemRecord)>,
    accounts: BTreeSet<(String, String)>,
    due_soon: u64,
    overdue: u64,
    status_counts: StatusCounts,
    judged: Option<Judged>,
    next_alert: u64,
    first_unsent: u64,
    marks: Option<Vec<(i32, i64)>>,
    /// Every wakeup before this moment was taken (or moved): the scan for
    /// due wakeups starts here, past the removed keys of earlier ones.
    wakeups_from: Option<i128>,
    /// Every overdue key before this deadline is removed.
    overdue_from: Option<i128>,
    /// The last record read from the runs (a look asks for an item's
    /// wakeup, status and state in turn; each read would find the key
    /// and decompress its block again). Emptied by every write.
    last_read: std::cell::RefCell<Option<(String, ItemRecord)>>,
    /// The item records the latest saves wrote, as written: an item a
    /// tick looks at was often looked at a tick or two before (its next
    /// event), and reading its record back from the runs costs Bloom
    /// probes of each run and a block's decompression. At most
    /// `RECENT_RECORDS`; emptied when full and whenever records are
    /// written other than by a save.
    recent: HashMap<String, ItemRecord, ahash::RandomState>,
}

/// How many saved item records [`SavedBook`] keeps in memory (about 100
/// bytes each with the map's own: some 13 MiB at most).
const RECENT_RECORDS: usize = 1 << 17;

/// What an older release kept in sled: watch states, the outbox, the
/// marks and the next alert's place.
#[derive(Debug, Default)]
pub(super) struct OlderBook {
    pub(super) states: Vec<(String, Watched)>,
    pub(super) outbox: Vec<(u64, Vec<u8>)>,
    pub(super) marks: Option<Vec<(i32, i64)>>,
    pub(super) next_alert: u64,
}

impl SavedBook {
    /// The book in `dir` (its runs and manifest). `older` is read only
    /// when the directory holds no book yet: what an older release kept
    /// in sled, taken over once.
    pub(super) fn open(
        dir: &Path,
        older: impl FnOnce() -> Result<Option<OlderBook>, StoreError>,
    ) -> Result<Self, StoreError> {
        let store = StateStore::open_writer(dir)?.empty_is_removed();
        if let Some(damage) = store.damage() {
            // Not rebuilt as the projection is: the book remembers which
            // alerts were sent and how each item's are numbered, which
            // the chains do not say.
            return Err(StoreError::Damaged {
                key: format!("the deadline monitor's book ({})", dir.display()),
                detail: format!(
                    "{damage}; move the directory aside to start the monitor afresh: it then judges every item again, and numbers each item's alerts from 1 again"
                ),
            });
        }
        if store.small(STATUS_COUNTS).is_none() {
            let mut book = SavedBook::over(store);
            book.adopt(older()?.unwrap_or_default())?;
            return Ok(book);
        }
        let (due_soon, overdue) = read_small(&store, COUNTS)?.unwrap_or_default();
        Ok(SavedBook {
            due_soon,
            overdue,
            status_counts: read_small(&store, STATUS_COUNTS)?.unwrap_or_default(),
            judged: read_small(&store, JUDGED)?,
            next_alert: read_small(&store, NEXT_ALERT)?.unwrap_or(0),
            first_unsent: read_small(&store, FIRST_UNSENT)?.unwrap_or(0),
            marks: read_small(&store, MARKS)?,
            wakeups_from: read_small(&store, WAKEUPS_FROM)?,
            overdue_from: read_small(&store, OVERDUE_FROM)?,
            ..SavedBook::over(store)
        })
    }

    /// A book over `store` that has read nothing from it yet.
    fn over(store: StateStore) -> Self {
        SavedBook {
            store,
            items: BTreeMap::new(),
            accounts: BTreeSet::new(),
            due_soon: 0,
            overdue: 0,
            status_counts: StatusCounts::default(),
            judged: None,
            next_alert: 0,
            first_unsent: 0,
            marks: None,
            wakeups_from: None,
            overdue_from: None,
            last_read: std::cell::RefCell::new(None),
            recent: HashMap::default(),
        }
    }

    /// Takes over an older release's states and outbox: it knew no
    /// statuses, wakeups or accounts and recorded no judgement, so the
    /// monitor sweeps every item.
    fn adopt(&mut self, older: OlderBook) -> Result<(), StoreError> {
        let mut tally = Tally::default();
        let mut records = BTreeMap::new();
        for (item, w) in older.states {
            if let Some(d) = overdue_by(Some(&w)) {
                records.insert(timed_key(OVERDUE, d, &item), vec![1]);
            }
            tally.add(&w);
            let record = ItemRecord {
                watched: Some(w),
                ..ItemRecord::default()
            };
            records.insert(key(ITEM, &item), encode(b"i", &record)?);
        }
        self.first_unsent = older.outbox.first().map_or(older.next_alert, |(p, _)| *p);
        for (place, alert) in older.outbox {
            records.insert(outbox_key(place), alert);
        }
        self.due_soon = tally.due_soon;
        self.overdue = tally.overdue;
        self.next_alert = older.next_alert;
        self.marks = older.marks;
        self.recent.clear();
        self.write(records)
    }

    /// What the saved states were judged through, if recorded.
    pub fn judged(&self) -> Option<&Judged> {
        self.judged.as_ref()
    }

    /// Saves what looks changed since the last save, the alerts they
    /// produced (into the outbox) and, if given, what the monitor judged
    /// through: one run and one manifest replacement, durable when it
    /// returns.
    pub fn save(&mut self, alerts: &[Alert], judged: Option<&Judged>) -> Result<(), StoreError> {
        if self.items.is_empty()
            && self.accounts.is_empty()
            && alerts.is_empty()
            && judged.is_none()
        {
            return Ok(());
        }
        let mut records: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (item, (saved, now)) in &self.items {
            let value = if now.is_empty() {
                Vec::new()
            } else {
                encode(b"i", now)?
            };
            records.insert(key(ITEM, item), value);
            if saved.watched != now.watched {
                if let Some(d) = overdue_by(saved.watched.as_ref()) {
                    records.entry(timed_key(OVERDUE, d, item)).or_default();
                }
                if let Some(d) = overdue_by(now.watched.as_ref()) {
                    records.insert(timed_key(OVERDUE, d, item), vec![1]);
                }
            }
            if saved.wakeup != now.wakeup {
                if let Some(at) = saved.wakeup {
                    records.entry(timed_key(WAKEUPS, at, item)).or_default();
                }
                if let Some(at) = now.wakeup {
                    records.insert(timed_key(WAKEUPS, at, item), vec![1]);
                }
            }
        }
        for (account, item) in &self.accounts {
            records.insert(account_key(account, item), vec![1]);
        }
        let mut next_alert = self.next_alert;
        for alert in alerts {
            let v = serde_json::to_vec(alert).map_err(|e| damaged(b"outbox", e))?;
            records.insert(outbox_key(next_alert), v);
            next_alert += 1;
        }
        let judged = judged.cloned().or_else(|| self.judged.clone());
        let was = (self.next_alert, self.judged.clone());
        self.next_alert = next_alert;
        self.judged = judged;
        if let Err(e) = self.write(records) {
            (self.next_alert, self.judged) = was;
            return Err(e);
        }
        if self.recent.len() + self.items.len() > RECENT_RECORDS {
            self.recent.clear();
        }
        for (item, (_, now)) in std::mem::take(&mut self.items) {
            self.recent.insert(item, now);
        }
        self.accounts.clear();
        // The overdue scan starts at the first key still there, past
        // the removed ones (kept in memory; saved with the next write).
        if let Some((first, _)) = self
            .timed_keys(OVERDUE, self.overdue_from, None, 1)?
            .first()
        {
            self.overdue_from = Some(*first);
        }
        Ok(())
    }

    /// Writes `records` as one run, with every small record as it now
    /// stands.
    fn write(&mut self, records: BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), StoreError> {
        self.last_read.replace(None);
        let records: Vec<(Vec<u8>, Vec<u8>)> = records.into_iter().collect();
        let mut small = vec![
            (
                COUNTS.to_vec(),
                encode(COUNTS, &(self.due_soon, self.overdue))?,
            ),
            (
                STATUS_COUNTS.to_vec(),
                encode(STATUS_COUNTS, &self.status_counts)?,
            ),
            (NEXT_ALERT.to_vec(), encode(NEXT_ALERT, &self.next_alert)?),
            (
                FIRST_UNSENT.to_vec(),
                encode(FIRST_UNSENT, &self.first_unsent)?,
            ),
        ];
        let optional: [(&[u8], Option<Vec<u8>>); 4] = [
            (
                JUDGED,
                self.judged
                    .as_ref()
                    .map(|j| encode(JUDGED, j))
                    .transpose()?,
            ),
            (
                MARKS,
                self.marks.as_ref().map(|m| encode(MARKS, m)).transpose()?,
            ),
            (
                WAKEUPS_FROM,
                self.wakeups_from
                    .map(|w| encode(WAKEUPS_FROM, &w))
                    .transpose()?,
            ),
            (
                OVERDUE_FROM,
                self.overdue_from
                    .map(|o| encode(OVERDUE_FROM, &o))
                    .transpose()?,
            ),
        ];
        for (k, v) in optional {
            small.push((k.to_vec(), v.unwrap_or_default()));
        }
        self.store.save(&records, small)
    }

    /// Forgets what the monitor judged through (a chain's history was
    /// replaced): its next start sweeps every item.
    pub fn forget_judged(&mut self) -> Result<(), StoreError> {
        let was = self.judged.take();
        if let Err(e) = self.write(BTreeMap::new()) {
            self.judged = was;
            return Err(e);
        }
        Ok(())
    }

    /// The unsent alerts, oldest first, and the marks of an interrupted
    /// send.
    pub fn outbox(&self) -> Result<Outbox, StoreError> {
        let mut alerts = Vec::new();
        let view = self.store.current();
        for record in view.scan_from(&[OUTBOX], &outbox_key(self.first_unsent)) {
            let (k, v) = record?;
            if v.is_empty() {
                continue;
            }
            let place = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| damaged(&k, "outbox key is not 9 bytes"))?;
            let alert = serde_json::from_slice(&v).map_err(|e| damaged(&k, e))?;
            alerts.push((place, alert));
        }
        Ok(Outbox {
            alerts,
            marks: self.marks.clone(),
        })
    }

    /// Records the destination's end offsets before a send begins.
    pub fn mark_sending(&mut self, marks: &[(i32, i64)]) -> Result<(), StoreError> {
        let was = self.marks.replace(marks.to_vec());
        if let Err(e) = self.write(BTreeMap::new()) {
            self.marks = was;
            return Err(e);
        }
        Ok(())
    }

    /// Empties these places of the outbox (their alerts were delivered),
    /// and forgets the marks once the outbox is empty.
    pub fn clear_alerts(&mut self, delivered: &[u64]) -> Result<(), StoreError> {
        let delivered: BTreeSet<u64> = delivered.iter().copied().collect();
        let records: BTreeMap<Vec<u8>, Vec<u8>> = delivered
            .iter()
            .map(|p| (outbox_key(*p), Vec::new()))
            .collect();
        let left = self
            .outbox()?
            .alerts
            .iter()
            .map(|(p, _)| *p)
            .find(|p| !delivered.contains(p));
        let was = (self.first_unsent, self.marks.clone());
        self.first_unsent = left.unwrap_or(self.next_alert);
        if left.is_none() {
            self.marks = None;
        }
        if let Err(e) = self.write(records) {
            (self.first_unsent, self.marks) = was;
            return Err(e);
        }
        Ok(())
    }

    fn saved_record(&self, item: &str) -> Result<ItemRecord, StoreError> {
        if let Some((last, record)) = self.last_read.borrow().as_ref() {
            if last == item {
                return Ok(record.clone());
            }
        }
        if let Some(record) = self.recent.get(item) {
            return Ok(record.clone());
        }
        let record = match self.store.current().get(&key(ITEM, item))? {
            Some(v) if !v.is_empty() => decode(b"i", &v)?,
            _ => ItemRecord::default(),
        };
        *self.last_read.borrow_mut() = Some((item.to_owned(), record.clone()));
        Ok(record)
    }

    fn record(&self, item: &str) -> Result<ItemRecord, BookError> {
        match self.items.get(item) {
            Some((_, now)) => Ok(now.clone()),
            None => self.saved_record(item).map_err(book_error),
        }
    }

    /// Changes the item's record.
    fn change(&mut self, item: &str, f: impl FnOnce(&mut ItemRecord)) -> Result<(), BookError> {
        if let Some((_, now)) = self.items.get_mut(item) {
            f(now);
            return Ok(());
        }
        let saved = self.saved_record(item).map_err(book_error)?;
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

    /// Saved keys of `tag` (wakeups or overdue) from `from` on, up to
    /// `until`, whose item did not change since the last save: (moment,
    /// item), in order.
    fn timed_keys(
        &self,
        tag: u8,
        from: Option<i128>,
        until: Option<i128>,
        limit: usize,
    ) -> Result<Vec<(i128, String)>, StoreError> {
        let start = match from {
            Some(at) => timed_key(tag, at, ""),
            None => vec![tag],
        };
        let mut found = Vec::new();
        for record in self.store.current().scan_from(&[tag], &start) {
            if found.len() >= limit {
                break;
            }
            let (k, v) = record?;
            let at = nanos_from(&k[1..])?;
            if until.is_some_and(|u| at > u) {
                break;
            }
            if v.is_empty() {
                continue;
            }
            let item = String::from_utf8_lossy(&k[17..]).into_owned();
            // An item changed since the last save is as it is now.
            if !self.items.contains_key(&item) {
                found.push((at, item));
            }
        }
        Ok(found)
    }
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
        if let Some(d) = overdue_by(Some(&watched)) {
            self.overdue_from = Some(self.overdue_from.map_or(d, |f| f.min(d)));
        }
        self.change(item, |r| r.watched = Some(watched))
    }

    fn wakeup(&self, item: &str) -> Result<Option<Timestamp>, BookError> {
        self.record(item)?
            .wakeup
            .map(timestamp)
            .transpose()
            .map_err(book_error)
    }

    fn set_wakeup(&mut self, item: &str, at: Option<Timestamp>) -> Result<(), BookError> {
        let at = at.map(Timestamp::as_nanosecond);
        if let (Some(at), Some(from)) = (at, self.wakeups_from) {
            // A wakeup set before where the scan starts (a clock set
            // back): start there instead.
            self.wakeups_from = Some(from.min(at));
        }
        self.change(item, |r| r.wakeup = at)
    }

    fn take_due(&mut self, now: Timestamp, limit: usize) -> Result<Vec<String>, BookError> {
        let now_nanos = now.as_nanosecond();
        let mut due: Vec<(i128, String)> = self
            .items
            .iter()
            .filter_map(|(item, (_, r))| {
                r.wakeup
                    .filter(|at| *at <= now_nanos)
                    .map(|at| (at, item.clone()))
            })
            .collect();
        // One more than asked for: whether any is left says whether the
        // scan may start at now from here on.
        due.extend(
            self.timed_keys(
                WAKEUPS,
                self.wakeups_from,
                Some(now_nanos),
                limit.saturating_add(1),
            )
            .map_err(book_error)?,
        );
        due.sort();
        let all = due.len() <= limit;
        due.truncate(limit);
        let mut items = Vec::with_capacity(due.len());
        for (_, item) in due {
            self.set_wakeup(&item, None)?;
            items.push(item);
        }
        if all {
            // Every wakeup up to now is taken: later scans start here.
            self.wakeups_from = Some(self.wakeups_from.map_or(now_nanos, |f| f.max(now_nanos)));
        }
        Ok(items)
    }

    fn add_to_account(&mut self, account: &str, item: &str) -> Result<(), BookError> {
        let pair = (account.to_owned(), item.to_owned());
        if self.accounts.contains(&pair) {
            return Ok(());
        }
        let saved = self
            .store
            .current()
            .get(&account_key(account, item))
            .map_err(book_error)?;
        if saved.is_none_or(|v| v.is_empty()) {
            self.accounts.insert(pair);
        }
        Ok(())
    }

    fn items_of_account(&self, account: &str) -> Result<Vec<String>, BookError> {
        let prefix = account_prefix(account);
        let mut items = BTreeSet::new();
        for record in self.store.current().scan(&prefix) {
            let (k, v) = record.map_err(book_error)?;
            if !v.is_empty() {
                items.insert(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
            }
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
        let pending = self
            .items
            .values()
            .filter_map(|(_, now)| overdue_by(now.watched.as_ref()))
            .min();
        let saved = self
            .timed_keys(OVERDUE, self.overdue_from, None, 1)
            .map_err(book_error)?
            .first()
            .map(|(at, _)| *at);
        let oldest = match (pending, saved) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(WatchCounts {
            due_soon: self.due_soon,
            overdue: self.overdue,
            oldest_overdue_deadline: oldest.map(timestamp).transpose().map_err(book_error)?,
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
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The saved book answers as one kept in memory,
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
                        saved.save(&[], None).unwrap();
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
        book.save(&[], Some(&judged)).unwrap();
        assert_eq!(book.judged(), Some(&judged));
        let mut reopened = ledger.monitor_book().unwrap();
        assert_eq!(reopened.judged(), Some(&judged));
        reopened.forget_judged().unwrap();
        assert_eq!(reopened.judged(), None);
        assert_eq!(ledger.monitor_book().unwrap().judged(), None);
    }

    #[test]
    fn an_older_release_s_states_and_outbox_are_taken_over_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
        let overdue = Watched {
            state: Watch::Overdue,
            changes: 2,
            due_by: Some(moment(3)),
            future_dated: 0,
        };
        // An older release kept states, the outbox, marks and the next
        // alert's place in sled.
        let tree = ledger.db.open_tree("monitor").unwrap();
        tree.insert(b"sx", encode(b"s", &overdue).unwrap()).unwrap();
        tree.insert(outbox_key(4), b"{}".to_vec()).unwrap();
        tree.insert(b"n", 5u64.to_be_bytes().to_vec()).unwrap();
        tree.insert(b"m", encode(b"m", &vec![(0i32, 9i64)]).unwrap())
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
        assert_eq!(book.watched("x").unwrap(), Some(overdue.clone()));
        assert_eq!(book.judged(), None, "a book without statuses is swept");
        assert_eq!(book.next_alert, 5);
        assert_eq!(book.first_unsent, 4);
        assert_eq!(book.marks, Some(vec![(0, 9)]));
        assert!(
            !ledger
                .db
                .tree_names()
                .iter()
                .any(|n| n.as_ref() == b"monitor"),
            "taken over, then dropped from sled"
        );
        drop(book);
        let again = ledger.monitor_book().unwrap();
        assert_eq!(again.watched("x").unwrap(), Some(overdue));
        assert_eq!(again.next_alert, 5);
    }

    #[test]
    fn a_damaged_book_is_refused_with_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
        let mut book = ledger.monitor_book().unwrap();
        book.save(&[], None).unwrap();
        drop(book);
        let manifest = tmp.path().join(MONITOR_DIR).join("manifest");
        let mut bytes = std::fs::read(&manifest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&manifest, bytes).unwrap();
        let refused = ledger.monitor_book().unwrap_err().to_string();
        assert!(refused.contains("deadline monitor's book"), "{refused}");
        assert!(refused.contains("move the directory aside"), "{refused}");
    }

    #[test]
    fn the_outbox_keeps_alerts_until_they_are_cleared_and_marks_until_it_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
        let mut book = ledger.monitor_book().unwrap();
        let alert = |id: &str| Alert {
            alert_id: id.into(),
            item_id: id.split('#').next().unwrap_or_default().into(),
            account: None,
            category: None,
            state: Watch::Overdue,
            previous_state: Watch::DueSoon,
            verdict: "overdue".into(),
            copies_remaining: vec!["mysql".into()],
            deadline: None,
            rule: None,
            clause: None,
            policy_version: "p".into(),
            cause: crate::monitor::Cause {
                by: "clock".into(),
                chain: None,
                seq: None,
            },
            observed_at: moment(0),
            findings: vec![],
        };
        book.save(&[alert("a#1"), alert("b#1"), alert("c#1")], None)
            .unwrap();
        book.mark_sending(&[(0, 7)]).unwrap();
        let places: Vec<u64> = book
            .outbox()
            .unwrap()
            .alerts
            .iter()
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(places, vec![0, 1, 2]);
        book.clear_alerts(&[0, 2]).unwrap();
        let reopened = ledger.monitor_book().unwrap();
        let left = reopened.outbox().unwrap();
        assert_eq!(
            left.alerts
                .iter()
                .map(|(p, a)| (*p, a.alert_id.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "b#1")]
        );
        assert_eq!(left.marks, Some(vec![(0, 7)]), "a send is still under way");
        drop(reopened);
        book.clear_alerts(&[1]).unwrap();
        let emptied = ledger.monitor_book().unwrap().outbox().unwrap();
        assert!(emptied.alerts.is_empty());
        assert_eq!(emptied.marks, None);
        book.save(&[alert("d#1")], None).unwrap();
        assert_eq!(
            book.outbox().unwrap().alerts[0].0,
            3,
            "places are never reused"
        );
    }
}
