//! Timelines: every entry about an item or an account in order, with the
//! verdict after each step. Pure.
//!
//! Entries are folded one at a time into a fresh projection and the items
//! in scope judged after each. In event order a step is judged as of its
//! event time (the story as it happened); in receipt order as of its
//! receipt time (what the ledger would have said then).

use std::collections::BTreeMap;

use jiff::Timestamp;
use lifeledger_schemas::Event;
use serde::Serialize;

use super::diff::{DeadlineBrief, VerdictBrief};
use super::replay::Scope;
use super::verdict::judge;
use super::{Projection, account_key, entry_ref};
use crate::entry::{Entry, EntryHash};
use crate::policy::Policy;

/// How a timeline orders its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// By event time (then chain, seq).
    Event,
    /// By the time the ledger received them (then chain, seq).
    Receipt,
}

/// One entry to place on a timeline.
#[derive(Debug, Clone)]
pub struct Step {
    pub entry: Entry,
    pub hash: EntryHash,
    pub event: Event,
}

/// One item's standing after a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemStanding {
    pub item_id: String,
    pub verdict: VerdictBrief,
    pub deadline: Option<DeadlineBrief>,
}

/// A row of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub chain: String,
    pub seq: u64,
    pub hash: String,
    /// `topic/partition@offset` or `file:line`.
    pub source: String,
    pub event_id: String,
    pub kind: String,
    pub item_id: Option<String>,
    pub event_time: Timestamp,
    pub received_at: Timestamp,
    /// The moment the step was judged at.
    pub judged_as_of: Timestamp,
    /// A deletion of a copy that was already gone: when it went. Such a
    /// step changes no deadline and no verdict.
    pub repeated_deletion_of_copy_gone_since: Option<Timestamp>,
    /// The entry belongs to a declared import of history: who declared it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported_by: Option<String>,
    /// The event is dated beyond its receipt by more than the policy
    /// tolerates (a `future_dated` finding): by how much.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ahead_of_receipt: Option<jiff::SignedDuration>,
    /// The entry's own item, and every other item in scope whose verdict
    /// or deadline changed at this step.
    pub standings: Vec<ItemStanding>,
}

/// Orders the steps and judges the items in scope after each. `imports`
/// are the ledger's declared imports of history, to mark the rows they
/// cover.
pub fn timeline(
    mut steps: Vec<Step>,
    scope: &Scope,
    policy: &Policy,
    order: Order,
    imports: &[super::DeclaredImport],
) -> Vec<Row> {
    let moment = |s: &Step| match order {
        Order::Event => s.event.event_time,
        Order::Receipt => s.entry.received_at,
    };
    steps.sort_by(|a, b| {
        (moment(a), &a.entry.chain, a.entry.seq).cmp(&(moment(b), &b.entry.chain, b.entry.seq))
    });
    let mut projection = Projection::default();
    let mut last: BTreeMap<String, (VerdictBrief, Option<DeadlineBrief>)> = BTreeMap::new();
    let mut rows = Vec::with_capacity(steps.len());
    for step in &steps {
        let as_of = moment(step);
        let gone_since = already_gone(&projection, &step.event);
        projection.fold_event(&step.event, entry_ref(&step.entry, &step.event));
        let own_item = step.event.item().map(str::to_owned);
        let mut standings = Vec::new();
        for item in projection.items.values().filter(|i| scope.covers(i)) {
            let account = item
                .account
                .as_ref()
                .and_then(|a| projection.accounts.get(&account_key(a)));
            let Some(v) = judge(item, account, policy, as_of) else {
                continue;
            };
            let now = (VerdictBrief::of(&v), DeadlineBrief::of(&v));
            let changed = last.get(&item.item_id) != Some(&now);
            if changed || own_item.as_deref() == Some(item.item_id.as_str()) {
                standings.push(ItemStanding {
                    item_id: item.item_id.clone(),
                    verdict: now.0.clone(),
                    deadline: now.1.clone(),
                });
            }
            last.insert(item.item_id.clone(), now);
        }
        rows.push(Row {
            chain: step.entry.chain.clone(),
            seq: step.entry.seq,
            hash: step.hash.to_hex(),
            source: step.entry.source.to_string(),
            event_id: step.event.event_id.clone(),
            kind: step.event.kind.type_name().to_owned(),
            item_id: own_item,
            event_time: step.event.event_time,
            received_at: step.entry.received_at,
            judged_as_of: as_of,
            repeated_deletion_of_copy_gone_since: gone_since,
            imported_by: imports
                .iter()
                .find(|d| {
                    d.chain == step.entry.chain
                        && (d.first_seq..=d.last_seq).contains(&step.entry.seq)
                })
                .map(|d| d.declared_by.clone()),
            ahead_of_receipt: policy.future_tolerance.as_ref().and_then(|t| {
                let ahead = step.event.event_time.duration_since(step.entry.received_at);
                (ahead > t.limit).then_some(ahead)
            }),
            standings,
        });
    }
    rows
}

/// When a deleted copy had already gone, by what the projection held
/// before this event (events at earlier event times).
fn already_gone(projection: &Projection, event: &Event) -> Option<Timestamp> {
    let lifeledger_schemas::Kind::Deleted(deleted) = &event.kind else {
        return None;
    };
    let item = projection.items.get(event.item()?)?;
    let copy = super::CopyId {
        store: deleted.store.clone(),
        backup_id: deleted.backup_id.clone(),
    };
    let before: Vec<&super::CopyChange> = item
        .copies
        .get(&copy)?
        .iter()
        .filter(|c| c.at.event_time < event.event_time)
        .collect();
    if before.last()?.present {
        return None;
    }
    let run_starts = before.iter().rposition(|c| c.present).map_or(0, |i| i + 1);
    before.get(run_starts).map(|c| c.at.event_time)
}
