//! What-if: the same facts judged under two policies. Pure.

use jiff::Timestamp;
use lifeledger_schemas::Account;
use serde::Serialize;

use super::diff::{DeadlineBrief, VerdictBrief};
use super::replay::Scope;
use super::verdict::{ItemVerdict, judge};
use super::{Projection, account_key};
use crate::policy::Policy;

/// One item's deadline and verdict under one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Judgement {
    pub policy_version: String,
    pub deadline: Option<DeadlineBrief>,
    pub verdict: VerdictBrief,
}

impl Judgement {
    fn of(v: &ItemVerdict) -> Self {
        Judgement {
            policy_version: v.policy_version.clone(),
            deadline: DeadlineBrief::of(v),
            verdict: VerdictBrief::of(v),
        }
    }

    /// Equal apart from the policy that gave it.
    fn same_answer(&self, other: &Judgement) -> bool {
        self.deadline == other.deadline && self.verdict == other.verdict
    }
}

/// An item whose deadline or verdict differs between the two policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDifference {
    pub item_id: String,
    pub account: Option<Account>,
    pub category: Option<String>,
    pub current: Judgement,
    pub alternative: Judgement,
}

/// Judges every item in scope as of `as_of` under both policies and
/// returns those whose deadline or verdict differ, in item order.
pub fn compare_policies(
    projection: &Projection,
    scope: &Scope,
    current: &Policy,
    alternative: &Policy,
    as_of: Timestamp,
) -> (u64, Vec<PolicyDifference>) {
    let mut judged = 0;
    let mut out = Vec::new();
    for item in projection.items.values().filter(|i| scope.covers(i)) {
        let account = item
            .account
            .as_ref()
            .and_then(|a| projection.accounts.get(&account_key(a)));
        let (Some(a), Some(b)) = (
            judge(item, account, current, as_of),
            judge(item, account, alternative, as_of),
        ) else {
            continue;
        };
        judged += 1;
        let (ja, jb) = (Judgement::of(&a), Judgement::of(&b));
        if !ja.same_answer(&jb) {
            out.push(PolicyDifference {
                item_id: item.item_id.clone(),
                account: item.account.clone(),
                category: item.category.clone(),
                current: ja,
                alternative: jb,
            });
        }
    }
    (judged, out)
}
