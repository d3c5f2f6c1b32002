//! Where the monitor keeps what it knows between looks: each item's
//! watch state, when to look at it again, and which items each account
//! has.
//!
//! The monitor's logic reads and writes through [`WatchBook`], so that it
//! works the same over [`MemoryBook`] (tests, and anything small) and over
//! the store's saved book, which keeps all of it on disk and only what
//! changed since its last save in memory: a monitor of millions of items
//! would otherwise hold every item's state, wakeup and account in memory,
//! and would have to look at every item again on each start to rebuild
//! the wakeups and the account index.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use thiserror::Error;

use super::{Watch, WatchCounts, Watched};

/// The book could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("reading the monitor's saved states: {0}")]
pub struct BookError(pub String);

/// What the monitor remembers about items, read and written by
/// [`super::Monitor`].
pub trait WatchBook {
    /// The item's watch state as last recorded (`None`: never changed).
    fn watched(&self, item: &str) -> Result<Option<Watched>, BookError>;
    /// Records the item's new watch state.
    fn set_watched(&mut self, item: &str, watched: Watched) -> Result<(), BookError>;
    /// When to look at the item again, if at all.
    fn wakeup(&self, item: &str) -> Result<Option<Timestamp>, BookError>;
    /// Sets (or, with `None`, clears) when to look at the item again.
    fn set_wakeup(&mut self, item: &str, at: Option<Timestamp>) -> Result<(), BookError>;
    /// Up to `limit` items whose wakeup is at or before `now`, earliest
    /// first; their wakeups are cleared (looking at them sets new ones).
    fn take_due(&mut self, now: Timestamp, limit: usize) -> Result<Vec<String>, BookError>;
    /// Records that `item` belongs to the account (by
    /// [`crate::projection::account_key`]): an entry about the account
    /// makes the monitor look at its items again.
    fn add_to_account(&mut self, account: &str, item: &str) -> Result<(), BookError>;
    /// The items recorded for the account.
    fn items_of_account(&self, account: &str) -> Result<Vec<String>, BookError>;
    /// Items due soon and overdue, and the earliest missed deadline.
    fn counts(&self) -> Result<WatchCounts, BookError>;
    /// The item's verdict status when last judged (a [`STATUSES`] index).
    fn status(&self, item: &str) -> Result<Option<u8>, BookError>;
    /// Records the item's verdict status.
    fn set_status(&mut self, item: &str, status: Option<u8>) -> Result<(), BookError>;
    /// Items per verdict status, as last judged.
    fn by_status(&self) -> Result<StatusCounts, BookError>;
}

/// Verdict statuses by the code a book keeps them under: the names of
/// [`crate::projection::verdict::Status`].
pub const STATUSES: [&str; 8] = [
    "retained",
    "due",
    "deleted_on_time",
    "deleted_late",
    "overdue",
    "early_deletion",
    "on_hold",
    "orphan",
];

/// The code of a verdict status name.
pub fn status_code(name: &str) -> Option<u8> {
    STATUSES.iter().position(|s| *s == name).map(|i| i as u8)
}

/// Items per verdict status, kept as items are judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatusCounts(pub [u64; STATUSES.len()]);

impl StatusCounts {
    /// Moves one item from the status `from` to `to`.
    pub fn shift(&mut self, from: Option<u8>, to: Option<u8>) {
        if let Some(n) = from.and_then(|c| self.0.get_mut(usize::from(c))) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = to.and_then(|c| self.0.get_mut(usize::from(c))) {
            *n += 1;
        }
    }

    /// The counts by status name, leaving out statuses no item has.
    pub fn by_name(&self) -> BTreeMap<String, u64> {
        STATUSES
            .iter()
            .zip(self.0)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| ((*s).to_owned(), n))
            .collect()
    }
}

/// Items due soon and overdue, and how many overdue items have each
/// deadline (for the oldest): kept as states change, since recounting
/// every item's state per tick would cost O(items) per write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub due_soon: u64,
    pub overdue: u64,
    overdue_deadlines: BTreeMap<Timestamp, u64>,
}

impl Tally {
    /// Counts a state in.
    pub fn add(&mut self, w: &Watched) {
        match w.state {
            Watch::DueSoon => self.due_soon += 1,
            Watch::Overdue => {
                self.overdue += 1;
                if let Some(d) = w.due_by {
                    *self.overdue_deadlines.entry(d).or_default() += 1;
                }
            }
            Watch::Clear => {}
        }
    }

    /// Counts a state out.
    pub fn remove(&mut self, w: &Watched) {
        match w.state {
            Watch::DueSoon => self.due_soon = self.due_soon.saturating_sub(1),
            Watch::Overdue => {
                self.overdue = self.overdue.saturating_sub(1);
                if let Some(d) = w.due_by {
                    if let Some(n) = self.overdue_deadlines.get_mut(&d) {
                        *n -= 1;
                        if *n == 0 {
                            self.overdue_deadlines.remove(&d);
                        }
                    }
                }
            }
            Watch::Clear => {}
        }
    }

    pub fn counts(&self) -> WatchCounts {
        WatchCounts {
            due_soon: self.due_soon,
            overdue: self.overdue,
            oldest_overdue_deadline: self.overdue_deadlines.keys().next().copied(),
        }
    }
}

/// A book held in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryBook {
    states: HashMap<String, Watched>,
    /// (moment, item): look at the item again at that moment.
    wakeups: BTreeSet<(Timestamp, String)>,
    next_wakeup: HashMap<String, Timestamp>,
    account_items: HashMap<String, BTreeSet<String>>,
    tally: Tally,
    statuses: HashMap<String, u8>,
    status_counts: StatusCounts,
}

impl MemoryBook {
    /// A book that remembers `states` (and knows no wakeups or accounts
    /// yet: a sweep finds them).
    pub fn with_states(states: HashMap<String, Watched>) -> Self {
        let mut tally = Tally::default();
        states.values().for_each(|w| tally.add(w));
        MemoryBook {
            states,
            tally,
            ..MemoryBook::default()
        }
    }

    pub fn states(&self) -> &HashMap<String, Watched> {
        &self.states
    }
}

impl WatchBook for MemoryBook {
    fn watched(&self, item: &str) -> Result<Option<Watched>, BookError> {
        Ok(self.states.get(item).cloned())
    }

    fn set_watched(&mut self, item: &str, watched: Watched) -> Result<(), BookError> {
        self.tally.add(&watched);
        if let Some(old) = self.states.insert(item.to_owned(), watched) {
            self.tally.remove(&old);
        }
        Ok(())
    }

    fn wakeup(&self, item: &str) -> Result<Option<Timestamp>, BookError> {
        Ok(self.next_wakeup.get(item).copied())
    }

    fn set_wakeup(&mut self, item: &str, at: Option<Timestamp>) -> Result<(), BookError> {
        let old = match at {
            Some(at) => self.next_wakeup.insert(item.to_owned(), at),
            None => self.next_wakeup.remove(item),
        };
        if let Some(old) = old {
            self.wakeups.remove(&(old, item.to_owned()));
        }
        if let Some(at) = at {
            self.wakeups.insert((at, item.to_owned()));
        }
        Ok(())
    }

    fn take_due(&mut self, now: Timestamp, limit: usize) -> Result<Vec<String>, BookError> {
        let mut due = Vec::new();
        while due.len() < limit {
            match self.wakeups.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            if let Some((_, item)) = self.wakeups.pop_first() {
                self.next_wakeup.remove(&item);
                due.push(item);
            }
        }
        Ok(due)
    }

    fn add_to_account(&mut self, account: &str, item: &str) -> Result<(), BookError> {
        self.account_items
            .entry(account.to_owned())
            .or_default()
            .insert(item.to_owned());
        Ok(())
    }

    fn items_of_account(&self, account: &str) -> Result<Vec<String>, BookError> {
        Ok(self
            .account_items
            .get(account)
            .map(|items| items.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn counts(&self) -> Result<WatchCounts, BookError> {
        Ok(self.tally.counts())
    }

    fn status(&self, item: &str) -> Result<Option<u8>, BookError> {
        Ok(self.statuses.get(item).copied())
    }

    fn set_status(&mut self, item: &str, status: Option<u8>) -> Result<(), BookError> {
        let old = match status {
            Some(c) => self.statuses.insert(item.to_owned(), c),
            None => self.statuses.remove(item),
        };
        self.status_counts.shift(old, status);
        Ok(())
    }

    fn by_status(&self) -> Result<StatusCounts, BookError> {
        Ok(self.status_counts)
    }
}
