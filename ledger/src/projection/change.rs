//! What one event changes about one item or one account: the unit the
//! fold is made of.
//!
//! [`Projection`](super::Projection) folds an event by taking its
//! [`StateChange`] and absorbing it into the item's or account's state at
//! once. A rebuild takes the changes of every entry first, sorts them by
//! the state they change, and absorbs each state's changes in one go
//! (`store/projection_rebuild.rs`): no state is read back, released or
//! written twice. Both paths absorb the same changes in the same order
//! per state, so they build the same states. Pure.

use lifeledger_schemas::{Account, Event, Kind};
use serde::{Deserialize, Serialize};

use super::{
    AccountState, Collection, CopyChange, CopyId, EntryRef, HoldChange, ItemState, account_key,
    insert_sorted,
};

/// The change one event makes to one item or one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateChange {
    Item {
        item_id: String,
        account: Account,
        category: Option<String>,
        /// `None` for a kind that records nothing about the item beyond
        /// its account and category.
        change: Option<ItemChange>,
    },
    Account {
        account: Account,
        change: Option<AccountChange>,
    },
}

/// A fact about an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemChange {
    Collected(Collection),
    Copy(CopyId, CopyChange),
    Hold(HoldChange),
}

/// An account-wide fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountChange {
    HostingTerminated(EntryRef),
    ServiceUseEnded(EntryRef),
    DeletionRequested(EntryRef, Vec<String>),
    Hold(HoldChange),
}

/// Which state a change is absorbed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateKind {
    Account,
    Item,
}

impl StateChange {
    /// The change `event` (recorded at `at`) makes to an item or an
    /// account; `None` for an event about neither (a ledger-wide one, or
    /// one without an account).
    pub fn of(event: &Event, at: EntryRef) -> Option<StateChange> {
        let account = event.account.as_ref()?;
        if is_ledger_wide(event) {
            return None;
        }
        Some(match event.item() {
            Some(item_id) => StateChange::Item {
                item_id: item_id.to_owned(),
                account: account.clone(),
                category: event.category.clone(),
                change: item_change(event, at),
            },
            None => StateChange::Account {
                account: account.clone(),
                change: account_change(event, at),
            },
        })
    }

    /// The state it changes: its kind and its key (an item id, or an
    /// account's [`account_key`]).
    pub fn state(&self) -> (StateKind, String) {
        match self {
            StateChange::Item { item_id, .. } => (StateKind::Item, item_id.clone()),
            StateChange::Account { account, .. } => (StateKind::Account, account_key(account)),
        }
    }
}

/// Whether an event changes what every item is judged by (a policy
/// publication, an import declaration) rather than one item or account.
pub fn is_ledger_wide(event: &Event) -> bool {
    matches!(
        event.kind,
        Kind::PolicyPublished(_) | Kind::HistoryImported(_)
    )
}

fn item_change(event: &Event, at: EntryRef) -> Option<ItemChange> {
    let copy = |store: &str, backup_id: Option<&String>, present| {
        ItemChange::Copy(
            CopyId {
                store: store.to_owned(),
                backup_id: backup_id.cloned(),
            },
            CopyChange {
                at: at.clone(),
                present,
            },
        )
    };
    match &event.kind {
        // A collection may also come from an item-less event in future
        // kinds; today only `collected` carries one.
        Kind::Collected(c) => Some(ItemChange::Collected(Collection {
            at: at.clone(),
            sensitive: c.sensitive,
            below_age_of_consent: c.below_age_of_consent,
            region: event.region.clone(),
        })),
        Kind::Stored(s) => Some(copy(&s.store, None, true)),
        Kind::BackedUp(b) => Some(copy(&b.store, Some(&b.backup_id), true)),
        Kind::Deleted(d) => Some(copy(&d.store, d.backup_id.as_ref(), false)),
        Kind::LegalHoldPlaced(h) | Kind::LegalHoldReleased(h) => {
            Some(ItemChange::Hold(HoldChange {
                hold_id: h.hold_id.clone(),
                placed: matches!(event.kind, Kind::LegalHoldPlaced(_)),
                at: at.clone(),
            }))
        }
        _ => None,
    }
}

fn account_change(event: &Event, at: EntryRef) -> Option<AccountChange> {
    match &event.kind {
        Kind::HostingServiceTerminated(_) => Some(AccountChange::HostingTerminated(at)),
        Kind::ServiceUseEnded(_) => Some(AccountChange::ServiceUseEnded(at)),
        Kind::DeletionRequested(r) => {
            Some(AccountChange::DeletionRequested(at, r.categories.clone()))
        }
        Kind::LegalHoldPlaced(h) | Kind::LegalHoldReleased(h) => {
            Some(AccountChange::Hold(HoldChange {
                hold_id: h.hold_id.clone(),
                placed: matches!(event.kind, Kind::LegalHoldPlaced(_)),
                at,
            }))
        }
        _ => None,
    }
}

impl ItemState {
    /// Absorbs one change. The account and category are the first ones
    /// absorbed; every fact is kept in event-time order.
    pub fn absorb(
        &mut self,
        account: Account,
        category: Option<String>,
        change: Option<ItemChange>,
    ) {
        if self.account.is_none() {
            self.account = Some(account);
        }
        if self.category.is_none() {
            self.category = category;
        }
        match change {
            None => {}
            Some(ItemChange::Collected(c)) => {
                insert_sorted(&mut self.collections, c, |c| c.at.order_key())
            }
            Some(ItemChange::Copy(copy, change)) => {
                insert_sorted(self.copies.entry(copy).or_default(), change, |c| {
                    c.at.order_key()
                })
            }
            Some(ItemChange::Hold(h)) => insert_sorted(&mut self.holds, h, |h| h.at.order_key()),
        }
    }
}

impl AccountState {
    /// Absorbs one change. The account is the first one absorbed; every
    /// fact is kept in event-time order.
    pub fn absorb(&mut self, account: Account, change: Option<AccountChange>) {
        if self.account.is_none() {
            self.account = Some(account);
        }
        match change {
            None => {}
            Some(AccountChange::HostingTerminated(at)) => {
                insert_sorted(&mut self.hosting_terminated, at, EntryRef::order_key)
            }
            Some(AccountChange::ServiceUseEnded(at)) => {
                insert_sorted(&mut self.service_use_ended, at, EntryRef::order_key)
            }
            Some(AccountChange::DeletionRequested(at, categories)) => {
                insert_sorted(&mut self.deletion_requests, (at, categories), |r| {
                    r.0.order_key()
                })
            }
            Some(AccountChange::Hold(h)) => insert_sorted(&mut self.holds, h, |h| h.at.order_key()),
        }
    }
}

/// The state of one item or one account, built from its changes alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Item(ItemState),
    Account(AccountState),
}

impl StateChange {
    /// A state holding this change alone.
    pub fn into_state(self) -> State {
        match self {
            StateChange::Item { ref item_id, .. } => {
                let mut state = State::Item(ItemState {
                    item_id: item_id.clone(),
                    ..ItemState::default()
                });
                state.absorb(self);
                state
            }
            StateChange::Account { .. } => {
                let mut state = State::Account(AccountState::default());
                state.absorb(self);
                state
            }
        }
    }
}

impl State {
    /// Absorbs a later change of the same state. A change about the other
    /// kind of state is not absorbed (false): the caller keyed it wrong.
    pub fn absorb(&mut self, change: StateChange) -> bool {
        match (self, change) {
            (
                State::Item(item),
                StateChange::Item {
                    account,
                    category,
                    change,
                    ..
                },
            ) => item.absorb(account, category, change),
            (State::Account(state), StateChange::Account { account, change }) => {
                state.absorb(account, change)
            }
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::Projection;
    use super::super::tests::{entries, events};
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Gathering every entry's change, sorting the changes by the state
        /// they change (stable: ledger order within a state) and building
        /// each state from its changes alone gives the states that folding
        /// the entries chain by chain gives.
        #[test]
        fn states_built_from_sorted_changes_equal_the_fold(events in events()) {
            let mut entries = entries(&events);
            entries.sort_by(|a, b| (a.chain.as_str(), a.seq).cmp(&(b.chain.as_str(), b.seq)));
            let mut folded = Projection::default();
            let mut gathered = Projection::default();
            let mut changes = Vec::new();
            for entry in &entries {
                folded.apply(entry).unwrap();
                let event = super::super::entry_event(entry).unwrap();
                if let Some(change) = gathered.apply_deferring(entry, event.as_ref()).unwrap() {
                    changes.push(change);
                }
            }
            changes.sort_by_key(StateChange::state);
            let mut built: Vec<((StateKind, String), State)> = Vec::new();
            for change in changes {
                let key = change.state();
                match built.last_mut() {
                    Some((last, state)) if *last == key => prop_assert!(state.absorb(change)),
                    _ => built.push((key, change.into_state())),
                }
            }
            for ((kind, key), state) in built {
                match (kind, state) {
                    (StateKind::Item, State::Item(item)) => {
                        prop_assert_eq!(folded.items.remove(&key), Some(item));
                    }
                    (StateKind::Account, State::Account(account)) => {
                        prop_assert_eq!(folded.accounts.remove(&key), Some(account));
                    }
                    _ => prop_assert!(false, "a state of the wrong kind for {}", key),
                }
            }
            prop_assert!(folded.items.is_empty() && folded.accounts.is_empty());
            prop_assert_eq!(&gathered.covered, &folded.covered);
            prop_assert_eq!(&gathered.policies, &folded.policies);
            prop_assert_eq!(&gathered.imports, &folded.imports);
        }
    }
}
