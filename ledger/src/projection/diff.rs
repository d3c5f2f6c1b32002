//! What changed between two replays of the same ledger. Pure.
//!
//! The later projection holds every fact of the earlier one (a replay goes
//! on from one cut to a later one), so a fact is new when its entry lies
//! past the earlier projection's cursor on its chain. Deadlines and
//! verdicts are compared as judged at each point: a verdict can change with
//! no new entry at all, when a deadline passes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use lifeledger_schemas::Account;
use serde::Serialize;

use super::verdict::ItemVerdict;
use super::{EntryRef, Projection};

/// An item first collected between the two points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemCollected {
    pub item_id: String,
    pub account: Option<Account>,
    pub category: Option<String>,
    pub at: EntryRef,
}

/// A copy stored, backed up or deleted between the two points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyChanged {
    pub item_id: String,
    pub copy: String,
    pub at: EntryRef,
}

/// A deadline as judged at one point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadlineBrief {
    pub due_by: Timestamp,
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadlineChanged {
    pub item_id: String,
    pub before: Option<DeadlineBrief>,
    pub after: Option<DeadlineBrief>,
}

/// A verdict as judged at one point: the status and any violations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictBrief {
    pub status: String,
    pub violations: Vec<String>,
    /// What the judgement weighed and found not to apply (a deletion
    /// request under a rule that runs no clock on requests).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub considered: Vec<super::verdict::Consideration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictChanged {
    pub item_id: String,
    pub before: Option<VerdictBrief>,
    pub after: Option<VerdictBrief>,
}

/// Everything that changed, each list in item order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProjectionDiff {
    pub items_collected: Vec<ItemCollected>,
    pub copies_added: Vec<CopyChanged>,
    pub copies_deleted: Vec<CopyChanged>,
    pub deadlines: Vec<DeadlineChanged>,
    pub verdicts: Vec<VerdictChanged>,
}

impl ProjectionDiff {
    pub fn is_empty(&self) -> bool {
        self.items_collected.is_empty()
            && self.copies_added.is_empty()
            && self.copies_deleted.is_empty()
            && self.deadlines.is_empty()
            && self.verdicts.is_empty()
    }
}

impl DeadlineBrief {
    /// The deadline of a verdict, if one runs.
    pub fn of(v: &ItemVerdict) -> Option<Self> {
        v.deadline.as_ref().map(|d| DeadlineBrief {
            due_by: d.due_by,
            rule: d.rule.clone(),
        })
    }
}

impl VerdictBrief {
    /// A verdict's status and violations, by name.
    pub fn of(v: &ItemVerdict) -> Self {
        VerdictBrief {
            status: v.status.name().to_owned(),
            violations: v.violations.iter().map(|x| x.name().to_owned()).collect(),
            considered: v.considered.clone(),
        }
    }
}

/// Compares two replays and their verdicts (judged at each point).
pub fn diff(
    before: &Projection,
    before_verdicts: &[ItemVerdict],
    after: &Projection,
    after_verdicts: &[ItemVerdict],
) -> ProjectionDiff {
    let is_new = |at: &EntryRef| at.seq >= before.next_seq(&at.chain);
    let mut out = ProjectionDiff::default();
    for item in after.items.values() {
        if let Some(first) = item.collections.first() {
            let known_before = before
                .items
                .get(&item.item_id)
                .is_some_and(|b| !b.collections.is_empty());
            if !known_before && is_new(&first.at) {
                out.items_collected.push(ItemCollected {
                    item_id: item.item_id.clone(),
                    account: item.account.clone(),
                    category: item.category.clone(),
                    at: first.at.clone(),
                });
            }
        }
        for (copy, changes) in &item.copies {
            for change in changes.iter().filter(|c| is_new(&c.at)) {
                let changed = CopyChanged {
                    item_id: item.item_id.clone(),
                    copy: copy.to_string(),
                    at: change.at.clone(),
                };
                if change.present {
                    out.copies_added.push(changed);
                } else {
                    out.copies_deleted.push(changed);
                }
            }
        }
    }
    let earlier: BTreeMap<&str, &ItemVerdict> = before_verdicts
        .iter()
        .map(|v| (v.item_id.as_str(), v))
        .collect();
    let later: BTreeMap<&str, &ItemVerdict> = after_verdicts
        .iter()
        .map(|v| (v.item_id.as_str(), v))
        .collect();
    let mut ids: Vec<&str> = earlier.keys().chain(later.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let b = earlier.get(id);
        let a = later.get(id);
        let (db, da) = (
            b.and_then(|v| DeadlineBrief::of(v)),
            a.and_then(|v| DeadlineBrief::of(v)),
        );
        if db != da {
            out.deadlines.push(DeadlineChanged {
                item_id: id.to_owned(),
                before: db,
                after: da,
            });
        }
        let (vb, va) = (
            b.map(|v| VerdictBrief::of(v)),
            a.map(|v| VerdictBrief::of(v)),
        );
        if vb != va {
            out.verdicts.push(VerdictChanged {
                item_id: id.to_owned(),
                before: vb,
                after: va,
            });
        }
    }
    out
}
