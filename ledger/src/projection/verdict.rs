//! Judging an item: its deadline, whether it was deleted on time, and any
//! breach of the policy, as of a given moment. Pure.
//!
//! Verdicts are judged by event time: "as of T" considers the events that
//! happened at or before T. Beside the verdict, `reported_late` says that a
//! deletion reached the ledger only after its deadline, so the chain cannot
//! vouch that the deadline was met.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use lifeledger_schemas::Account;
use serde::Serialize;

use super::{AccountState, CopyChange, CopyId, EntryRef, HoldChange, ItemState};
use crate::deadline::{self, Deadline, DeadlineOutcome, Triggers};
use crate::policy::Policy;

/// Where an item stands in its retention life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// No deadline runs yet; copies remain.
    Retained { why: String },
    /// A deadline runs and has not passed.
    Due { remaining: SignedDuration },
    /// Every copy was deleted at or before the deadline (or before any
    /// deadline ran, and after any minimum).
    DeletedOnTime { deleted_at: Timestamp },
    /// Every copy was deleted, after the deadline.
    DeletedLate {
        deleted_at: Timestamp,
        late_by: SignedDuration,
    },
    /// The deadline passed and copies remain.
    Overdue {
        overdue_by: SignedDuration,
        copies_remaining: Vec<String>,
    },
    /// Every copy was deleted before the rule's minimum retention.
    EarlyDeletion {
        deleted_at: Timestamp,
        minimum_until: Timestamp,
    },
    /// A legal hold in force suspends the deadline.
    OnHold { hold_id: String, since: Timestamp },
    /// Events name the item, but its collection is not recorded.
    Orphan,
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Retained { .. } => "retained",
            Status::Due { .. } => "due",
            Status::DeletedOnTime { .. } => "deleted_on_time",
            Status::DeletedLate { .. } => "deleted_late",
            Status::Overdue { .. } => "overdue",
            Status::EarlyDeletion { .. } => "early_deletion",
            Status::OnHold { .. } => "on_hold",
            Status::Orphan => "orphan",
        }
    }

    /// Whether this status is itself a finding.
    pub fn is_finding(&self) -> bool {
        matches!(
            self,
            Status::DeletedLate { .. }
                | Status::Overdue { .. }
                | Status::EarlyDeletion { .. }
                | Status::Orphan
        )
    }
}

/// A breach of the policy, whatever the item's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum Violation {
    /// A copy in a store the category does not allow.
    ForbiddenStore {
        copy: String,
        at: EntryRef,
        clause: String,
    },
    /// Collected in a region where the service is not offered.
    ForbiddenRegion {
        region: String,
        at: EntryRef,
        clause: String,
    },
    /// A collection marked sensitive.
    SensitiveData { at: EntryRef, clause: String },
    /// A collection about a person below the age of consent.
    BelowAgeOfConsent { at: EntryRef, clause: String },
    /// A category the policy does not define.
    UnknownCategory { category: String },
    /// The last copy was deleted while a legal hold was in force.
    DeletedUnderHold { hold_id: String, at: EntryRef },
    /// Every copy was gone before the rule's minimum retention, and a later
    /// event brought one back: the early deletion happened and stays a
    /// finding, whatever the verdict is now.
    DeletedBeforeMinimum {
        deleted_at: Timestamp,
        minimum_until: Timestamp,
        at: EntryRef,
    },
    /// An event dated further beyond its receipt than the policy's
    /// tolerance: the producer's clock runs ahead, and the event cannot
    /// count until its time comes.
    FutureDated {
        at: EntryRef,
        ahead_by: SignedDuration,
        tolerance: SignedDuration,
        clause: String,
    },
    /// The deadline passed with copies remaining, and a legal hold placed
    /// afterwards now forbids deleting them: the item is on hold, and the
    /// deadline was missed.
    DeadlineMissedBeforeHold {
        due_by: Timestamp,
        hold_id: String,
        at: EntryRef,
    },
}

impl Violation {
    pub fn name(&self) -> &'static str {
        match self {
            Violation::ForbiddenStore { .. } => "forbidden_store",
            Violation::ForbiddenRegion { .. } => "forbidden_region",
            Violation::SensitiveData { .. } => "sensitive_data",
            Violation::BelowAgeOfConsent { .. } => "below_age_of_consent",
            Violation::UnknownCategory { .. } => "unknown_category",
            Violation::DeletedUnderHold { .. } => "deleted_under_hold",
            Violation::DeletedBeforeMinimum { .. } => "deleted_before_minimum",
            Violation::DeadlineMissedBeforeHold { .. } => "deadline_missed_before_hold",
            Violation::FutureDated { .. } => "future_dated",
        }
    }
}

/// Something the judgement weighed that set no deadline, stated so that an
/// auditor sees why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "considered", rename_all = "snake_case")]
pub enum Consideration {
    /// The account asked for deletion of this item's category, but the
    /// category's rule runs no clock on a request (rules A and B): the
    /// request changes nothing for this item.
    RequestDidNotApply {
        at: EntryRef,
        rule: String,
        clause: String,
    },
}

/// One copy's state as of the judging moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyStatus {
    pub copy: String,
    pub present: bool,
    pub since: Timestamp,
    pub at: EntryRef,
}

/// The judgement of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemVerdict {
    pub item_id: String,
    pub account: Option<Account>,
    pub category: Option<String>,
    pub as_of: Timestamp,
    pub policy_version: String,
    pub status: Status,
    pub violations: Vec<Violation>,
    pub deadline: Option<Deadline>,
    /// A deletion that completed the item reached the ledger after the
    /// deadline: the chain cannot vouch that the deadline was met.
    pub reported_late: bool,
    /// The same, but every late report is of history declared imported (a
    /// backfill, chain `imports`): shown apart, not a finding.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reported_late_imported: bool,
    pub copies: Vec<CopyStatus>,
    /// What was weighed and set no deadline (a request that did not
    /// apply).
    pub considered: Vec<Consideration>,
}

impl ItemVerdict {
    /// Whether anything about the item is non-compliant.
    pub fn is_finding(&self) -> bool {
        self.status.is_finding() || !self.violations.is_empty() || self.reported_late
    }

    /// Weighs the declared imports of history (`ingest --backfill`): a
    /// deletion reported late only by entries of a declared import, known
    /// at the judging moment, is `reported_late_imported` instead of
    /// `reported_late`: the lateness is the import's, not the live
    /// stream's. An auditor still sees it, and which import.
    pub fn weigh_imports(&mut self, imports: &[super::DeclaredImport]) {
        if !self.reported_late {
            return;
        }
        let Some(due_by) = self.deadline.as_ref().map(|d| d.due_by) else {
            return;
        };
        let as_of = self.as_of;
        let late: Vec<&EntryRef> = self
            .copies
            .iter()
            .map(|c| &c.at)
            .filter(|r| r.received_at > due_by)
            .collect();
        let imported = !late.is_empty()
            && late
                .iter()
                .all(|r| super::import_of(imports, r, |d| d.event_time <= as_of).is_some());
        if imported {
            self.reported_late = false;
            self.reported_late_imported = true;
        }
    }
}

/// A legal hold's time in force: placed, and released if so.
#[derive(Debug, Clone, Copy)]
struct HoldInterval<'a> {
    hold_id: &'a str,
    placed: &'a EntryRef,
    released: Option<&'a EntryRef>,
}

/// The intervals of every hold, from changes in event-time order.
fn hold_intervals<'a>(changes: &[&'a HoldChange]) -> Vec<HoldInterval<'a>> {
    let mut open: BTreeMap<&str, &EntryRef> = BTreeMap::new();
    let mut out = Vec::new();
    for change in changes {
        match (change.placed, open.get(change.hold_id.as_str())) {
            (true, None) => {
                open.insert(&change.hold_id, &change.at);
            }
            (false, Some(placed)) => {
                out.push(HoldInterval {
                    hold_id: &change.hold_id,
                    placed,
                    released: Some(&change.at),
                });
                open.remove(change.hold_id.as_str());
            }
            // A second placement of an open hold, or a release of a hold
            // never placed: nothing changes.
            _ => {}
        }
    }
    out.extend(open.into_iter().map(|(hold_id, placed)| HoldInterval {
        hold_id,
        placed,
        released: None,
    }));
    out
}

/// Judges one item as of `as_of`. `None` if nothing about the item had
/// happened by then.
pub fn judge(
    item: &ItemState,
    account: Option<&AccountState>,
    policy: &Policy,
    as_of: Timestamp,
) -> Option<ItemVerdict> {
    let by = |r: &EntryRef| r.event_time <= as_of;
    // Events the ledger had received by `as_of` dated beyond their receipt
    // by more than the policy tolerates: findings, even while their time
    // has not come (then they are all the item shows).
    let future: Vec<Violation> = match &policy.future_tolerance {
        None => Vec::new(),
        Some(t) => item
            .entries()
            .into_iter()
            .filter(|r| {
                r.received_at <= as_of && r.event_time.duration_since(r.received_at) > t.limit
            })
            .map(|r| Violation::FutureDated {
                at: r.clone(),
                ahead_by: r.event_time.duration_since(r.received_at),
                tolerance: t.limit,
                clause: t.clause.clone(),
            })
            .collect(),
    };
    if !item.entries().into_iter().any(by) {
        if future.is_empty() {
            return None;
        }
        return Some(ItemVerdict {
            item_id: item.item_id.clone(),
            account: item.account.clone(),
            category: item.category.clone(),
            as_of,
            policy_version: policy.version.clone(),
            status: Status::Retained {
                why: "every event about the item is dated after this moment".into(),
            },
            violations: future,
            deadline: None,
            reported_late: false,
            reported_late_imported: false,
            copies: Vec::new(),
            considered: Vec::new(),
        });
    }
    let mut violations = future;
    let collection = item.collections.iter().find(|c| by(&c.at));
    let category = item
        .category
        .as_deref()
        .and_then(|c| policy.categories.get(c));
    if category.is_none() {
        violations.push(Violation::UnknownCategory {
            category: item.category.clone().unwrap_or_default(),
        });
    }

    if let Some(c) = collection {
        if let Some(region) = c.region.as_deref().and_then(|r| policy.excluded_region(r)) {
            violations.push(Violation::ForbiddenRegion {
                region: region.region.clone(),
                at: c.at.clone(),
                clause: region.clause.clone(),
            });
        }
        if c.sensitive {
            violations.push(Violation::SensitiveData {
                at: c.at.clone(),
                clause: policy.no_sensitive_data_clause.clone(),
            });
        }
        if c.below_age_of_consent {
            violations.push(Violation::BelowAgeOfConsent {
                at: c.at.clone(),
                clause: policy.no_data_below_age_of_consent_clause.clone(),
            });
        }
    }

    // Each copy's state by `as_of`. A copy is gone from its first deletion
    // until a later event brings it back: a deletion of a copy already gone
    // (a cleanup job running again) changes nothing, so a gone copy is
    // dated by the deletion that made it gone, not by the latest one.
    let mut copies = Vec::new();
    for (copy, changes) in &item.copies {
        let known: Vec<&CopyChange> = changes.iter().filter(|c| by(&c.at)).collect();
        let Some(latest) = known.last() else {
            continue;
        };
        let last: &CopyChange = if latest.present {
            latest
        } else {
            let run_starts = known.iter().rposition(|c| c.present).map_or(0, |i| i + 1);
            known.get(run_starts).copied().unwrap_or(latest)
        };
        if let Some(category) = category {
            if !category.stores.contains(&copy.store) {
                let first = changes
                    .iter()
                    .find(|c| by(&c.at) && c.present)
                    .unwrap_or(last);
                violations.push(Violation::ForbiddenStore {
                    copy: copy.to_string(),
                    at: first.at.clone(),
                    clause: category.clause.clone(),
                });
            }
        }
        copies.push((copy, last));
    }

    // Holds on the item and on its account, as they stood at `as_of`.
    let mut hold_changes: Vec<&HoldChange> = item
        .holds
        .iter()
        .chain(account.into_iter().flat_map(|a| a.holds.iter()))
        .filter(|h| by(&h.at))
        .collect();
    hold_changes.sort_by_key(|h| h.at.order_key());
    let holds = hold_intervals(&hold_changes);

    let rule = category.and_then(|c| policy.rules.get(&c.rule).map(|r| (c.rule.as_str(), r)));
    let calendar = policy.calendar_for(collection.and_then(|c| c.region.as_deref()));
    let triggers = Triggers {
        collected: collection.map(|c| &c.at),
        hosting_terminated: account.and_then(|a| a.hosting_terminated.iter().find(|r| by(r))),
        service_use_ended: account.and_then(|a| a.service_use_ended.iter().find(|r| by(r))),
        deletion_requested: account.and_then(|a| {
            a.deletion_requests
                .iter()
                .find(|(r, cats)| by(r) && item.category.as_ref().is_some_and(|c| cats.contains(c)))
                .map(|(r, _)| r)
        }),
        holds: holds.iter().map(|h| (h.placed, h.released)).collect(),
    };
    let outcome = rule.map(|(name, rule)| deadline::compute(name, rule, calendar, &triggers));
    // A request for this category under a rule that runs no clock on
    // requests: weighed, and set nothing.
    let mut considered = Vec::new();
    if let (Some((name, rule)), Some(request)) = (rule, triggers.deletion_requested) {
        if !matches!(rule, crate::policy::RuleDef::RequestOrServiceEnd { .. }) {
            considered.push(Consideration::RequestDidNotApply {
                at: request.clone(),
                rule: name.to_owned(),
                clause: rule.clause().to_owned(),
            });
        }
    }

    let all_deleted = !copies.is_empty() && copies.iter().all(|(_, last)| !last.present);
    let remaining: Vec<String> = copies
        .iter()
        .filter(|(_, l)| l.present)
        .map(|(c, _)| c.to_string())
        .collect();
    let deadline = match &outcome {
        Some(DeadlineOutcome::Set(d)) => Some(d.clone()),
        _ => None,
    };
    let mut reported_late = false;
    let minimum_until = rule
        .and_then(|(_, r)| r.minimum_days().map(|days| (days, r.counting())))
        .zip(collection)
        .and_then(|((days, counting), c)| {
            deadline::minimum_until(c.at.event_time, days, counting, calendar)
        });
    // The first moment every copy was gone, if that was before the
    // minimum: an early deletion, which stays a finding even when a later
    // event brought a copy back (see below).
    let early = minimum_until.and_then(|min| {
        first_moment_all_gone(item, &by)
            .filter(|(_, when)| *when < min)
            .map(|(at, when)| (at, when, min))
    });

    let status = if collection.is_none() {
        Status::Orphan
    } else if all_deleted {
        let last = copies
            .iter()
            .map(|(_, l)| &l.at)
            .max_by_key(|r| r.order_key())
            .cloned();
        let deleted_at = last.as_ref().map_or(as_of, |r| r.event_time);
        let latest_report = copies
            .iter()
            .map(|(_, l)| l.at.received_at)
            .max()
            .unwrap_or(deleted_at);
        let in_force = holds.iter().find(|h| {
            h.placed.event_time <= deleted_at
                && h.released.is_none_or(|r| r.event_time > deleted_at)
        });
        if let (Some(hold), Some(last)) = (in_force, &last) {
            violations.push(Violation::DeletedUnderHold {
                hold_id: hold.hold_id.to_owned(),
                at: last.clone(),
            });
        }
        match (&deadline, minimum_until) {
            (_, Some(min)) if deleted_at < min => Status::EarlyDeletion {
                deleted_at,
                minimum_until: min,
            },
            (Some(d), _) => {
                if deleted_at <= d.due_by {
                    // On time by event time; only what reached the ledger
                    // by the deadline proves it was met.
                    reported_late = latest_report > d.due_by;
                    Status::DeletedOnTime { deleted_at }
                } else {
                    Status::DeletedLate {
                        deleted_at,
                        late_by: d.passed_by(deleted_at),
                    }
                }
            }
            (None, _) => Status::DeletedOnTime { deleted_at },
        }
    } else {
        match &outcome {
            Some(DeadlineOutcome::Suspended { hold }) => Status::OnHold {
                hold_id: holds
                    .iter()
                    .find(|h| h.placed == hold)
                    .map(|h| h.hold_id.to_owned())
                    .unwrap_or_default(),
                since: hold.event_time,
            },
            Some(DeadlineOutcome::Set(d)) if as_of <= d.due_by => Status::Due {
                remaining: -d.passed_by(as_of),
            },
            Some(DeadlineOutcome::Set(d)) => {
                // Past the deadline. A hold placed since (one placed before
                // would have suspended the clock) forbids deleting now: the
                // item is on hold, and the missed deadline is a violation.
                match holds.iter().find(|h| h.released.is_none()) {
                    Some(hold) => {
                        violations.push(Violation::DeadlineMissedBeforeHold {
                            due_by: d.due_by,
                            hold_id: hold.hold_id.to_owned(),
                            at: hold.placed.clone(),
                        });
                        Status::OnHold {
                            hold_id: hold.hold_id.to_owned(),
                            since: hold.placed.event_time,
                        }
                    }
                    None => Status::Overdue {
                        overdue_by: d.passed_by(as_of),
                        copies_remaining: remaining,
                    },
                }
            }
            Some(DeadlineOutcome::None { why }) => Status::Retained { why: why.clone() },
            None => Status::Retained {
                why: "no rule applies: the category is not in the policy".into(),
            },
        }
    };
    if let Some((at, deleted_at, minimum_until)) = early {
        if !matches!(status, Status::EarlyDeletion { .. }) {
            violations.push(Violation::DeletedBeforeMinimum {
                deleted_at,
                minimum_until,
                at,
            });
        }
    }

    Some(ItemVerdict {
        item_id: item.item_id.clone(),
        account: item.account.clone(),
        category: item.category.clone(),
        as_of,
        policy_version: policy.version.clone(),
        status,
        violations,
        deadline,
        reported_late,
        reported_late_imported: false,
        copies: copies
            .iter()
            .map(|(copy, last): &(&CopyId, &super::CopyChange)| CopyStatus {
                copy: copy.to_string(),
                present: last.present,
                since: last.at.event_time,
                at: last.at.clone(),
            })
            .collect(),
        considered,
    })
}

/// The first moment (by event time, up to the judging moment) at which
/// every copy the item had was gone, with the entry that made it so.
fn first_moment_all_gone(
    item: &ItemState,
    by: &dyn Fn(&EntryRef) -> bool,
) -> Option<(EntryRef, Timestamp)> {
    let mut changes: Vec<(&CopyId, &CopyChange)> = item
        .copies
        .iter()
        .flat_map(|(copy, changes)| changes.iter().map(move |c| (copy, c)))
        .filter(|(_, c)| by(&c.at))
        .collect();
    changes.sort_by_key(|(_, c)| c.at.order_key());
    let mut present: BTreeMap<&CopyId, bool> = BTreeMap::new();
    for (copy, change) in changes {
        present.insert(copy, change.present);
        if !change.present && present.values().all(|p| !p) {
            return Some((change.at.clone(), change.at.event_time));
        }
    }
    None
}
