//! Judging every item and summing the verdicts up. Pure.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::Projection;
use super::facts::{Facts, FactsError};
use super::verdict::{ItemVerdict, Status, judge};
use crate::policy::Policy;

/// Judges every item of a projection as of `as_of`, in item order.
pub fn judge_all(projection: &Projection, policy: &Policy, as_of: Timestamp) -> Vec<ItemVerdict> {
    let mut verdicts = Vec::new();
    // A projection in memory reads without failing.
    let _ = judge_each(projection, policy, as_of, &mut |v| verdicts.push(v));
    verdicts
}

/// Judges every item `facts` holds as of `as_of`, in item order, handing
/// each verdict to `visit` (so that no list of every verdict is kept).
pub fn judge_each(
    facts: &dyn Facts,
    policy: &Policy,
    as_of: Timestamp,
    visit: &mut dyn FnMut(ItemVerdict),
) -> Result<(), FactsError> {
    judge_items_from(facts, policy, as_of, "", None, visit)
}

/// Judges every item of `facts` into `tally`: in two parts side by side
/// (the items before [`Facts::middle_item`] and from it on, each into a
/// tally of its own, then merged) when `facts` names a middle, else in
/// one. A tally does not depend on the order it is fed.
pub fn tally_each(
    facts: &(dyn Facts + Sync),
    policy: &Policy,
    as_of: Timestamp,
    tally: &mut StatusTally,
) -> Result<(), FactsError> {
    let Some(middle) = facts.middle_item().filter(|m| !m.is_empty()) else {
        return judge_each(facts, policy, as_of, &mut |v| tally.add(&v));
    };
    let mut second = StatusTally::new(as_of, &tally.report.policy_version, tally.due_within);
    let (first, later) = crate::side_by_side::side_by_side(
        || {
            judge_items_from(facts, policy, as_of, "", Some(&middle), &mut |v| {
                tally.add(&v)
            })
        },
        || judge_items_from(facts, policy, as_of, &middle, None, &mut |v| second.add(&v)),
    );
    first?;
    later?;
    tally.merge(second);
    Ok(())
}

/// [`judge_each`] of the items from id `from` on, up to (not including)
/// `until`; the walk stops at the first failure.
fn judge_items_from(
    facts: &dyn Facts,
    policy: &Policy,
    as_of: Timestamp,
    from: &str,
    until: Option<&str>,
    visit: &mut dyn FnMut(ItemVerdict),
) -> Result<(), FactsError> {
    let mut failed = None;
    facts.items_from(from, &mut |item| {
        if until.is_some_and(|u| item.item_id.as_str() >= u) {
            return std::ops::ControlFlow::Break(());
        }
        let account = match facts.account_of(item) {
            Ok(a) => a,
            Err(e) => {
                failed = Some(e);
                return std::ops::ControlFlow::Break(());
            }
        };
        if let Some(mut v) = judge(item, account.as_deref(), policy, as_of) {
            v.weigh_imports(facts.imports());
            visit(v);
        }
        std::ops::ControlFlow::Continue(())
    })?;
    failed.map_or(Ok(()), Err)
}

/// An item whose deadline is near.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DueSoon {
    pub item_id: String,
    pub category: Option<String>,
    pub due_by: Timestamp,
    pub remaining: SignedDuration,
    pub rule: String,
}

/// Counts over every item's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub as_of: Timestamp,
    pub policy_version: String,
    pub items: u64,
    /// Items with any finding (a bad status, a violation, or a deletion
    /// reported late).
    pub findings: u64,
    pub reported_late: u64,
    /// Deletions reported late by declared imported history only (not
    /// findings).
    pub reported_late_imported: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_violation: BTreeMap<String, u64>,
    /// Per category, items per status.
    pub by_category: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per store, copies present and copies deleted.
    pub copies_by_store: BTreeMap<String, StoreCopies>,
    /// Items due within the window, soonest first.
    pub due_soon: Vec<DueSoon>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreCopies {
    pub present: u64,
    pub deleted: u64,
}

/// Sums verdicts up; `due_within` sets the due-soon window.
pub fn summarize(
    verdicts: &[ItemVerdict],
    as_of: Timestamp,
    policy_version: &str,
    due_within: SignedDuration,
) -> StatusReport {
    let mut tally = StatusTally::new(as_of, policy_version, due_within);
    for v in verdicts {
        tally.add(v);
    }
    tally.finish()
}

/// A [`StatusReport`] summed up one verdict at a time.
#[derive(Debug)]
pub struct StatusTally {
    report: StatusReport,
    due_within: SignedDuration,
}

impl StatusTally {
    pub fn new(as_of: Timestamp, policy_version: &str, due_within: SignedDuration) -> Self {
        StatusTally {
            report: StatusReport {
                as_of,
                policy_version: policy_version.to_owned(),
                items: 0,
                findings: 0,
                reported_late: 0,
                reported_late_imported: 0,
                by_status: BTreeMap::new(),
                by_violation: BTreeMap::new(),
                by_category: BTreeMap::new(),
                copies_by_store: BTreeMap::new(),
                due_soon: Vec::new(),
            },
            due_within,
        }
    }

    pub fn add(&mut self, v: &ItemVerdict) {
        self.report.items += 1;
        let due_within = self.due_within;
        let status = v.status.name().to_owned();
        *self.report.by_status.entry(status.clone()).or_default() += 1;
        let category = v.category.clone().unwrap_or_else(|| "(none)".into());
        *self
            .report
            .by_category
            .entry(category)
            .or_default()
            .entry(status)
            .or_default() += 1;
        for violation in &v.violations {
            *self
                .report
                .by_violation
                .entry(violation.name().to_owned())
                .or_default() += 1;
        }
        for copy in &v.copies {
            let store = copy.copy.split('#').next().unwrap_or_default().to_owned();
            let entry = self.report.copies_by_store.entry(store).or_default();
            if copy.present {
                entry.present += 1;
            } else {
                entry.deleted += 1;
            }
        }
        if v.is_finding() {
            self.report.findings += 1;
        }
        if v.reported_late_imported {
            self.report.reported_late_imported += 1;
        }
        if v.reported_late {
            self.report.reported_late += 1;
        }
        if let (Status::Due { remaining }, Some(d)) = (&v.status, &v.deadline) {
            if *remaining <= due_within {
                self.report.due_soon.push(DueSoon {
                    item_id: v.item_id.clone(),
                    category: v.category.clone(),
                    due_by: d.due_by,
                    remaining: *remaining,
                    rule: d.rule.clone(),
                });
            }
        }
    }

    /// Adds what `other` summed up (over other items) to this tally.
    pub fn merge(&mut self, other: StatusTally) {
        let (mine, theirs) = (&mut self.report, other.report);
        mine.items += theirs.items;
        mine.findings += theirs.findings;
        mine.reported_late += theirs.reported_late;
        mine.reported_late_imported += theirs.reported_late_imported;
        for (status, n) in theirs.by_status {
            *mine.by_status.entry(status).or_default() += n;
        }
        for (violation, n) in theirs.by_violation {
            *mine.by_violation.entry(violation).or_default() += n;
        }
        for (category, statuses) in theirs.by_category {
            let into = mine.by_category.entry(category).or_default();
            for (status, n) in statuses {
                *into.entry(status).or_default() += n;
            }
        }
        for (store, copies) in theirs.copies_by_store {
            let into = mine.copies_by_store.entry(store).or_default();
            into.present += copies.present;
            into.deleted += copies.deleted;
        }
        mine.due_soon.extend(theirs.due_soon);
    }

    pub fn finish(mut self) -> StatusReport {
        self.report
            .due_soon
            .sort_by_key(|d| (d.due_by, d.item_id.clone()));
        self.report
    }
}
