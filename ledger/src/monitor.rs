//! The deadline monitor: which items are due soon or overdue, and an
//! alert for each change of that. Pure: the caller supplies "now".
//!
//! Each item is in one of three watch states: `clear` (nothing to act
//! on), `due_soon` (a deadline runs and falls within the horizon) and
//! `overdue` (the deadline passed with copies remaining). A state changes
//! because of an entry (a collection, a trigger, a deletion, a hold, a
//! backup that brings a copy back) or because time passed a deadline; each
//! change produces exactly one [`Alert`], numbered per item, so that a
//! restarted monitor (which reloads the states) repeats none and a
//! delivery retried after a crash can be recognised by its id.
//!
//! Work per tick is proportional to what changed: the items whose entries
//! (or whose account's entries) were folded since the last tick, and the
//! items whose next moment of change (a deadline entering the horizon, a
//! deadline passing) has come.

pub mod book;

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use jiff::{SignedDuration, Timestamp};
use lifeledger_schemas::Account;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use book::{BookError, MemoryBook, STATUSES, StatusCounts, WatchBook, status_code};

use crate::policy::Policy;
use crate::projection::facts::{Facts, FactsError};
use crate::projection::verdict::{ItemVerdict, Status, judge};
use crate::projection::{AccountState, Dirty, EntryRef, ItemState, account_key};

/// What the monitor says about an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Watch {
    Clear,
    DueSoon,
    Overdue,
}

impl Watch {
    pub fn name(self) -> &'static str {
        match self {
            Watch::Clear => "clear",
            Watch::DueSoon => "due_soon",
            Watch::Overdue => "overdue",
        }
    }
}

/// An item's watch state as kept between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    pub state: Watch,
    /// How many changes of state this item has had (alerts sent for it).
    pub changes: u64,
    /// The deadline the state was judged against.
    pub due_by: Option<Timestamp>,
    /// How many `future_dated` findings the item had when last alerted: a
    /// new one (a producer's clock running ahead) is alerted too, even
    /// when the state stays.
    #[serde(default)]
    pub future_dated: u64,
}

/// Where an alert's cause was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// `entry`: entries folded since the last look changed the state;
    /// `clock`: time passed a deadline (or the horizon) with no new entry;
    /// `sweep`: found when looking at every item (on start, or under a
    /// newly published policy), either way.
    pub by: String,
    /// The latest entry received about the item or its account: the one
    /// that caused the change when `by` is `entry`.
    pub chain: Option<String>,
    pub seq: Option<u64>,
}

/// One change of an item's watch state, as produced to the alerts topic
/// (FORMAT: docs/monitor.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// `ITEM#N`: the item's N-th change of state (from 1). Unique and
    /// stable, so that a redelivery can be recognised.
    pub alert_id: String,
    pub item_id: String,
    pub account: Option<Account>,
    pub category: Option<String>,
    pub state: Watch,
    pub previous_state: Watch,
    /// The item's verdict status when judged (why it is in this state).
    pub verdict: String,
    pub copies_remaining: Vec<String>,
    pub deadline: Option<Timestamp>,
    pub rule: Option<String>,
    pub clause: Option<String>,
    pub policy_version: String,
    pub cause: Cause,
    /// The monitor's "now" when it saw the change.
    pub observed_at: Timestamp,
    /// The item's findings (violations) when judged, by name; an alert
    /// whose state did not change was raised by a new `future_dated` one.
    #[serde(default)]
    pub findings: Vec<String>,
}

/// The watch state an item's verdict puts it in, and when it would next
/// change with no new entry.
pub fn classify(verdict: &ItemVerdict, horizon: SignedDuration) -> (Watch, Option<Timestamp>) {
    match (&verdict.status, &verdict.deadline) {
        (Status::Due { remaining }, Some(d)) if *remaining <= horizon => {
            (Watch::DueSoon, Some(d.due_by))
        }
        (Status::Due { .. }, Some(d)) => (Watch::Clear, d.due_by.checked_sub(horizon).ok()),
        (Status::Overdue { .. }, _) => (Watch::Overdue, None),
        _ => (Watch::Clear, None),
    }
}

/// Counts for the gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WatchCounts {
    pub due_soon: u64,
    pub overdue: u64,
    /// The earliest deadline among overdue items.
    pub oldest_overdue_deadline: Option<Timestamp>,
}

/// Errors while looking at items: the facts or the book could not be
/// read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WatchError {
    #[error(transparent)]
    Facts(#[from] FactsError),
    #[error(transparent)]
    Book(#[from] BookError),
}

/// The monitor: its horizon, and the book it keeps items' states,
/// wakeups and accounts in.
#[derive(Debug, Clone, Default)]
pub struct Monitor<B> {
    horizon: SignedDuration,
    book: B,
}

impl<B: WatchBook> Monitor<B> {
    /// A monitor that remembers what `book` holds (as an earlier run
    /// left it).
    pub fn new(horizon: SignedDuration, book: B) -> Self {
        Monitor { horizon, book }
    }

    pub fn horizon(&self) -> SignedDuration {
        self.horizon
    }

    pub fn book(&self) -> &B {
        &self.book
    }

    pub fn book_mut(&mut self) -> &mut B {
        &mut self.book
    }

    pub fn state(&self, item: &str) -> Result<Watch, WatchError> {
        Ok(self.book.watched(item)?.map_or(Watch::Clear, |w| w.state))
    }

    /// Looks at every item: on start, and when the policy changes.
    pub fn sweep(
        &mut self,
        facts: &dyn Facts,
        policy: &Policy,
        now: Timestamp,
    ) -> Result<Vec<Alert>, WatchError> {
        let mut alerts = Vec::new();
        let mut from = Some(String::new());
        while let Some(at) = from {
            let (page, next) = self.sweep_page(facts, policy, now, &at, usize::MAX)?;
            alerts.extend(page);
            from = next;
        }
        Ok(alerts)
    }

    /// Looks at up to `limit` items from the item id `from` on; returns
    /// their alerts and the id to go on from (`None`: the sweep is done).
    /// A caller that saves and sends each page's alerts before the next
    /// holds one page of them at a time, however many items there are.
    pub fn sweep_page(
        &mut self,
        facts: &dyn Facts,
        policy: &Policy,
        now: Timestamp,
        from: &str,
        limit: usize,
    ) -> Result<(Vec<Alert>, Option<String>), WatchError> {
        let mut alerts = Vec::new();
        let mut failed: Option<WatchError> = None;
        let mut looked = 0usize;
        let mut next = None;
        facts.items_from(from, &mut |item| {
            if looked == limit {
                next = Some(item.item_id.clone());
                return ControlFlow::Break(());
            }
            looked += 1;
            let looked_at = self
                .index(item)
                .and_then(|()| self.look_at(facts, item, policy, now, "sweep"));
            match looked_at {
                Ok(alert) => {
                    alerts.extend(alert);
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        // Items the monitor remembers but the projection no longer has
        // cannot occur (the projection only grows); nothing to do.
        match failed {
            Some(e) => Err(e),
            None => Ok((alerts, next)),
        }
    }

    /// Looks at what changed: items touched since the last tick (and the
    /// items of touched accounts), and every item whose wakeup has come.
    pub fn tick(
        &mut self,
        facts: &dyn Facts,
        policy: &Policy,
        touched: &Dirty,
        now: Timestamp,
    ) -> Result<Vec<Alert>, WatchError> {
        let mut alerts = self.look_at_touched(facts, policy, touched, now)?;
        loop {
            let (page, more) = self.look_at_due(facts, policy, now, usize::MAX)?;
            alerts.extend(page);
            if !more {
                return Ok(alerts);
            }
        }
    }

    /// Looks at the items touched since the last tick, and at the items
    /// of touched accounts.
    pub fn look_at_touched(
        &mut self,
        facts: &dyn Facts,
        policy: &Policy,
        touched: &Dirty,
        now: Timestamp,
    ) -> Result<Vec<Alert>, WatchError> {
        // A new item is indexed under its account as it is looked at
        // (one read of it): the account's items listed here need not hold
        // it, since it is looked at anyway. An item seen before was filed
        // under its account then, and its account does not change.
        // In item order, each once; copied only when accounts add items.
        let with_accounts: BTreeSet<String>;
        let by_entry = if touched.accounts.is_empty() {
            &touched.items
        } else {
            let mut all = touched.items.clone();
            for account in &touched.accounts {
                all.extend(self.book.items_of_account(account)?);
            }
            with_accounts = all;
            &with_accounts
        };
        let mut alerts = Vec::new();
        for id in by_entry {
            let Some(item) = facts.item(id)? else {
                continue;
            };
            if touched.new_items.contains(id) {
                self.index(&item)?;
            }
            alerts.extend(self.look_at(facts, &item, policy, now, "entry")?);
        }
        Ok(alerts)
    }

    /// Looks at up to `limit` items whose wakeup has come; true if more
    /// wait.
    pub fn look_at_due(
        &mut self,
        facts: &dyn Facts,
        policy: &Policy,
        now: Timestamp,
        limit: usize,
    ) -> Result<(Vec<Alert>, bool), WatchError> {
        let due = self.book.take_due(now, limit)?;
        let more = due.len() == limit;
        let mut alerts = Vec::new();
        for id in &due {
            if let Some(item) = facts.item(id)? {
                alerts.extend(self.look_at(facts, &item, policy, now, "clock")?);
            }
        }
        Ok((alerts, more))
    }

    pub fn counts(&self) -> Result<WatchCounts, WatchError> {
        Ok(self.book.counts()?)
    }

    /// Items per verdict status, as the monitor last judged them.
    pub fn by_status(&self) -> Result<StatusCounts, WatchError> {
        Ok(self.book.by_status()?)
    }

    /// Looks at an item with its account's facts and the imports.
    fn look_at(
        &mut self,
        facts: &dyn Facts,
        item: &ItemState,
        policy: &Policy,
        now: Timestamp,
        by: &str,
    ) -> Result<Option<Alert>, WatchError> {
        let account = facts.account_of(item)?;
        self.look(item, account.as_deref(), facts.imports(), policy, now, by)
    }

    fn index(&mut self, item: &ItemState) -> Result<(), WatchError> {
        if let Some(a) = &item.account {
            self.book.add_to_account(&account_key(a), &item.item_id)?;
        }
        Ok(())
    }

    fn look(
        &mut self,
        item: &ItemState,
        account: Option<&AccountState>,
        imports: &[crate::projection::DeclaredImport],
        policy: &Policy,
        now: Timestamp,
        by: &str,
    ) -> Result<Option<Alert>, WatchError> {
        // Facts dated after now (a producer's clock ahead of ours) count
        // only once now reaches them: look again then.
        let later_fact = item
            .each_entry()
            .chain(account.into_iter().flat_map(AccountState::each_entry))
            .map(|r| r.event_time)
            .filter(|t| *t > now)
            .min();
        let verdict = judge(item, account, policy, now).map(|mut v| {
            v.weigh_imports(imports);
            v
        });
        let (state, wakeup) = verdict
            .as_ref()
            .map_or((Watch::Clear, None), |v| classify(v, self.horizon));
        let wakeup = match (wakeup, later_fact) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.book.wakeup(&item.item_id)? != wakeup {
            self.book.set_wakeup(&item.item_id, wakeup)?;
        }
        // Every status change in time comes at a wakeup (a deadline
        // entering the horizon or passing), so the counts per status
        // stay those of judging every item now, without doing so.
        let status = verdict
            .as_ref()
            .and_then(|v| book::status_code(v.status.name()));
        if self.book.status(&item.item_id)? != status {
            self.book.set_status(&item.item_id, status)?;
        }
        let Some(verdict) = verdict else {
            return Ok(None);
        };
        let previous = self.book.watched(&item.item_id)?;
        let previous_state = previous.as_ref().map_or(Watch::Clear, |w| w.state);
        let due_by = verdict.deadline.as_ref().map(|d| d.due_by);
        let future_dated = verdict
            .violations
            .iter()
            .filter(|v| v.name() == "future_dated")
            .count() as u64;
        let new_future_dated = future_dated > previous.as_ref().map_or(0, |w| w.future_dated);
        if state == previous_state && !new_future_dated {
            // Keep the deadline current (it feeds the oldest-overdue gauge)
            // without an alert.
            if let Some(mut w) = previous {
                if w.due_by != due_by {
                    w.due_by = due_by;
                    self.book.set_watched(&item.item_id, w)?;
                }
            }
            return Ok(None);
        }
        let changes = previous.map_or(0, |w| w.changes) + 1;
        let watched = Watched {
            state,
            changes,
            due_by,
            future_dated,
        };
        self.book.set_watched(&item.item_id, watched)?;
        let latest: Option<&EntryRef> = item
            .entries()
            .into_iter()
            .chain(account.map(|a| a.entries()).unwrap_or_default())
            .max_by(|a, b| (a.received_at, &a.chain, a.seq).cmp(&(b.received_at, &b.chain, b.seq)));
        let copies_remaining = match &verdict.status {
            Status::Overdue {
                copies_remaining, ..
            } => copies_remaining.clone(),
            _ => verdict
                .copies
                .iter()
                .filter(|c| c.present)
                .map(|c| c.copy.clone())
                .collect(),
        };
        Ok(Some(Alert {
            alert_id: format!("{}#{changes}", item.item_id),
            item_id: item.item_id.clone(),
            account: item.account.clone(),
            category: item.category.clone(),
            state,
            previous_state,
            verdict: verdict.status.name().to_owned(),
            copies_remaining,
            deadline: due_by,
            rule: verdict.deadline.as_ref().map(|d| d.rule.clone()),
            clause: verdict.deadline.as_ref().map(|d| d.clause.clone()),
            policy_version: verdict.policy_version.clone(),
            cause: Cause {
                by: by.to_owned(),
                chain: latest.map(|r| r.chain.clone()),
                seq: latest.map(|r| r.seq),
            },
            observed_at: now,
            findings: verdict
                .violations
                .iter()
                .map(|v| v.name().to_owned())
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests;
