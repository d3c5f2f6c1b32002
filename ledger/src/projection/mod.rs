//! Projections: the retention state of every item and every copy of it,
//! rebuilt by folding the chain's events.
//!
//! Pure. [`Projection::apply`] folds one entry in; the state it keeps is
//! facts (what happened, when, recorded where), kept sorted by event time,
//! so the result does not depend on the order in which events arrive.
//! Verdicts are judged from these facts, a policy and a moment
//! ([`verdict::judge`]); they are never stored.

pub mod change;
pub mod diff;
pub mod facts;
pub mod replay;
pub mod report;
mod saved_form;
pub mod timeline;
pub mod verdict;
pub mod whatif;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::Timestamp;
use lifeledger_schemas::{Account, Event, Kind, decode_event};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::entry::{Body, Entry};
pub use change::{AccountChange, ItemChange, StateChange, StateKind};

/// The chain that policy publications are written to, and the only one
/// whose `policy_published` entries govern verdicts.
pub const POLICY_CHAIN: &str = "policy";
/// The chain of import declarations (`history_imported`), written only by
/// `ingest --backfill`.
pub const IMPORTS_CHAIN: &str = "imports";

/// A pointer to the entry an event came from, with both of its times.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntryRef {
    pub chain: String,
    pub seq: u64,
    pub event_id: String,
    /// When it happened, by the producer's clock.
    #[serde(with = "saved_form::moment")]
    pub event_time: Timestamp,
    /// When the ledger received it.
    #[serde(with = "saved_form::moment")]
    pub received_at: Timestamp,
}

impl EntryRef {
    /// Event time first; ties broken by where the entry is, so that every
    /// replay orders the same facts the same way.
    pub fn order_key(&self) -> (Timestamp, String, u64) {
        (self.event_time, self.chain.clone(), self.seq)
    }
}

/// Which copy of an item: the primary copy in a store, or a backup.
/// Written as `store` or `store#backup_id` (neither may contain `#`), so
/// that it can key a JSON object.
/// Its serde forms are in `saved_form`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CopyId {
    pub store: String,
    pub backup_id: Option<String>,
}

impl CopyId {
    /// A copy's names, if they can be written as one (neither empty,
    /// neither holding `#`).
    pub fn new(store: String, backup_id: Option<String>) -> Result<Self, String> {
        let fits = |name: &str| !name.is_empty() && !name.contains('#');
        if fits(&store) && backup_id.as_deref().is_none_or(fits) {
            Ok(CopyId { store, backup_id })
        } else {
            let copy = CopyId { store, backup_id };
            Err(format!(
                "{:?} is not a copy (store or store#backup_id)",
                copy.to_string()
            ))
        }
    }
}

impl std::fmt::Display for CopyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backup_id {
            None => write!(f, "{}", self.store),
            Some(b) => write!(f, "{}#{b}", self.store),
        }
    }
}

impl From<CopyId> for String {
    fn from(copy: CopyId) -> String {
        copy.to_string()
    }
}

impl TryFrom<String> for CopyId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.split_once('#') {
            None => CopyId::new(s, None),
            Some((store, backup)) => CopyId::new(store.to_owned(), Some(backup.to_owned())),
        }
    }
}

/// A copy appearing (stored, backed up) or going (deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyChange {
    pub at: EntryRef,
    pub present: bool,
}

/// A legal hold placed or released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldChange {
    pub hold_id: String,
    pub placed: bool,
    pub at: EntryRef,
}

/// How an item was collected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    pub at: EntryRef,
    pub sensitive: bool,
    pub below_age_of_consent: bool,
    pub region: Option<String>,
}

/// Everything recorded about one item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemState {
    pub item_id: String,
    pub account: Option<Account>,
    pub category: Option<String>,
    /// Every collection event (normally one), earliest first.
    pub collections: Vec<Collection>,
    pub copies: BTreeMap<CopyId, Vec<CopyChange>>,
    pub holds: Vec<HoldChange>,
}

/// A deletion of a copy that was already gone: it changes no deadline and
/// no verdict, and is shown for what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepeatedDeletion {
    pub copy: String,
    pub at: EntryRef,
    /// When the copy went (its first deletion since it was last present).
    pub gone_since: Timestamp,
}

impl ItemState {
    /// The deletions of copies already gone, in event-time order per copy.
    pub fn repeated_deletions(&self) -> Vec<RepeatedDeletion> {
        let mut out = Vec::new();
        for (copy, changes) in &self.copies {
            let mut gone_since: Option<Timestamp> = None;
            for c in changes {
                match (c.present, gone_since) {
                    (true, _) => gone_since = None,
                    (false, None) => gone_since = Some(c.at.event_time),
                    (false, Some(since)) => out.push(RepeatedDeletion {
                        copy: copy.to_string(),
                        at: c.at.clone(),
                        gone_since: since,
                    }),
                }
            }
        }
        out
    }

    /// Every entry about the item, in ledger order (chain, seq). Derived
    /// rather than stored: every item event is a collection, a copy change
    /// or a hold change.
    pub fn entries(&self) -> Vec<&EntryRef> {
        let mut refs: Vec<&EntryRef> = self.each_entry().collect();
        refs.sort_by(|a, b| (a.chain.as_str(), a.seq).cmp(&(b.chain.as_str(), b.seq)));
        refs
    }

    /// Every entry about the item, in no particular order: for what needs
    /// no order (the latest time among them), without sorting.
    pub fn each_entry(&self) -> impl Iterator<Item = &EntryRef> {
        self.collections
            .iter()
            .map(|c| &c.at)
            .chain(self.copies.values().flatten().map(|c| &c.at))
            .chain(self.holds.iter().map(|h| &h.at))
    }

    /// Every entry about the item and, with `account` (its account's
    /// facts), the account-wide ones too, in ledger order (chain, seq):
    /// what an item proof proves and an item's timeline reads.
    pub fn entries_with<'a>(&'a self, account: Option<&'a AccountState>) -> Vec<&'a EntryRef> {
        let mut refs = self.entries();
        refs.extend(account.map(AccountState::entries).unwrap_or_default());
        refs.sort_by(|a, b| (a.chain.as_str(), a.seq).cmp(&(b.chain.as_str(), b.seq)));
        refs
    }
}

/// Everything recorded about one account as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub account: Option<Account>,
    pub hosting_terminated: Vec<EntryRef>,
    pub service_use_ended: Vec<EntryRef>,
    /// Deletion requests with the categories each covers.
    pub deletion_requests: Vec<(EntryRef, Vec<String>)>,
    pub holds: Vec<HoldChange>,
}

impl AccountState {
    /// Every account-wide entry, in no particular order.
    pub fn each_entry(&self) -> impl Iterator<Item = &EntryRef> {
        self.hosting_terminated
            .iter()
            .chain(&self.service_use_ended)
            .chain(self.deletion_requests.iter().map(|(r, _)| r))
            .chain(self.holds.iter().map(|h| &h.at))
    }

    /// Every account-wide entry, in ledger order (chain, seq).
    pub fn entries(&self) -> Vec<&EntryRef> {
        let mut refs: Vec<&EntryRef> = self.each_entry().collect();
        refs.sort_by(|a, b| (a.chain.as_str(), a.seq).cmp(&(b.chain.as_str(), b.seq)));
        refs
    }
}

/// Entries `first_seq..=last_seq` of `chain`, declared an import of
/// history by `declared_by` (the declaration is `at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredImport {
    pub chain: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub declared_by: String,
    pub at: EntryRef,
}

impl Projection {
    /// The declared import an entry belongs to, among the declarations
    /// `known` (those recorded by the judging moment).
    pub fn import_of(
        &self,
        entry: &EntryRef,
        known: impl Fn(&EntryRef) -> bool,
    ) -> Option<&DeclaredImport> {
        import_of(&self.imports, entry, known)
    }
}

/// The declared import among `imports` an entry belongs to, among the
/// declarations `known` (those recorded by the judging moment).
pub fn import_of<'a>(
    imports: &'a [DeclaredImport],
    entry: &EntryRef,
    known: impl Fn(&EntryRef) -> bool,
) -> Option<&'a DeclaredImport> {
    imports.iter().find(|d| {
        d.chain == entry.chain && (d.first_seq..=d.last_seq).contains(&entry.seq) && known(&d.at)
    })
}

/// A policy version published on the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPolicy {
    pub version: String,
    pub hash: String,
    pub at: EntryRef,
}

/// Why an entry could not be folded in.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProjectionError {
    #[error("chain {chain:?}: entry seq {found} arrived where seq {expected} was due")]
    OutOfOrder {
        chain: String,
        expected: u64,
        found: u64,
    },
    #[error("chain {chain:?} seq {seq}: the recorded event no longer decodes: {reason}")]
    Undecodable {
        chain: String,
        seq: u64,
        reason: String,
    },
}

/// The event an entry records; `None` for a rejected entry.
pub fn entry_event(entry: &Entry) -> Result<Option<Event>, ProjectionError> {
    match &entry.body {
        Body::Event { canonical, .. } => {
            decode_event(canonical)
                .map(Some)
                .map_err(|e| ProjectionError::Undecodable {
                    chain: entry.chain.clone(),
                    seq: entry.seq,
                    reason: e.to_string(),
                })
        }
        Body::Rejected { .. } => Ok(None),
    }
}

/// Where `event` sits: its entry's chain and seq, and both its times.
pub fn entry_ref(entry: &Entry, event: &Event) -> EntryRef {
    entry_ref_at(EntryAt::of(entry), event)
}

fn entry_ref_at(at: EntryAt<'_>, event: &Event) -> EntryRef {
    EntryRef {
        chain: at.chain.to_owned(),
        seq: at.seq,
        event_id: event.event_id.clone(),
        event_time: event.event_time,
        received_at: at.received_at,
    }
}

/// Where an entry stands: all a fold needs of it beside its decoded
/// event (a writer folding what it just appended need not copy the
/// entry's bytes out of its encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryAt<'a> {
    pub chain: &'a str,
    pub seq: u64,
    pub received_at: Timestamp,
}

impl<'a> EntryAt<'a> {
    pub fn of(entry: &'a Entry) -> Self {
        EntryAt {
            chain: &entry.chain,
            seq: entry.seq,
            received_at: entry.received_at,
        }
    }
}

/// The key of an account in the projection.
pub fn account_key(account: &Account) -> String {
    format!("{}/{}", account.app_id, account.uin)
}

fn insert_sorted<T>(list: &mut Vec<T>, value: T, key: impl Fn(&T) -> (Timestamp, String, u64)) {
    let k = key(&value);
    let at = list.partition_point(|v| key(v) <= k);
    list.insert(at, value);
}

/// The state of every item and account, and how far each chain is folded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Projection {
    pub items: BTreeMap<String, ItemState>,
    pub accounts: BTreeMap<String, AccountState>,
    pub policies: Vec<PublishedPolicy>,
    /// Declared imports of history (chain `imports`), in ledger order.
    pub imports: Vec<DeclaredImport>,
    /// Per chain, the seq of the next entry to fold in.
    pub covered: BTreeMap<String, u64>,
    /// Keys changed since [`Projection::take_dirty`] was last called.
    #[serde(skip)]
    dirty: Changes,
    /// Entries folded since [`Projection::take_dirty`] was last called.
    #[serde(skip)]
    unsaved: u64,
    /// Keys changed since [`Projection::take_touched`] was last called:
    /// the same as `dirty`, kept apart for the deadline monitor, which
    /// must see every change whether or not the projection was saved.
    #[serde(skip)]
    touched: Changes,
    /// A partial projection records what it touched only once asked to
    /// ([`Projection::track_touched`]): a writer without a monitor would
    /// otherwise keep every item id it ever folded.
    #[serde(skip)]
    untracked: bool,
    /// Holds only some items and accounts in memory (a writer's, see
    /// [`Projection::partial`]); the rest are saved elsewhere.
    #[serde(skip)]
    partial: bool,
}

/// Two projections are equal when they hold the same facts and cursors;
/// what changed since a save or a look is bookkeeping, not state.
impl PartialEq for Projection {
    fn eq(&self, other: &Self) -> bool {
        self.items == other.items
            && self.accounts == other.accounts
            && self.policies == other.policies
            && self.imports == other.imports
            && self.covered == other.covered
    }
}

impl Eq for Projection {}

/// What changed, as a fold gathers it: sets by hash, since every entry
/// asks them whether its item is in already (a search of ordered sets
/// compared the item names, about half a microsecond an entry). Handed
/// over in order, as a [`Dirty`].
#[derive(Debug, Clone, Default)]
struct Changes {
    items: HashSet<String, ahash::RandomState>,
    accounts: HashSet<String, ahash::RandomState>,
    policies: bool,
    new_items: HashSet<String, ahash::RandomState>,
}

impl Changes {
    /// Records `id`, copying it only if it is not there yet.
    fn note(set: &mut HashSet<String, ahash::RandomState>, id: &str) {
        if !set.contains(id) {
            set.insert(id.to_owned());
        }
    }

    fn take(&mut self) -> Dirty {
        let Changes {
            items,
            accounts,
            policies,
            new_items,
        } = std::mem::take(self);
        Dirty {
            items: items.into_iter().collect(),
            accounts: accounts.into_iter().collect(),
            policies,
            new_items: new_items.into_iter().collect(),
        }
    }
}

/// What changed since the last save.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    pub items: BTreeSet<String>,
    pub accounts: BTreeSet<String>,
    pub policies: bool,
    /// Of `items`, those the fold created (kept in what a fold touched
    /// only, see [`Projection::take_touched`]). An item's account is set
    /// when it is created and never changes, so these are the only items
    /// the deadline monitor must file under their account; whoever cannot
    /// tell (what entries read back touched) names every item here.
    pub new_items: BTreeSet<String>,
}

impl Projection {
    /// The seq this projection expects next on `chain`.
    pub fn next_seq(&self, chain: &str) -> u64 {
        self.covered.get(chain).copied().unwrap_or(0)
    }

    /// The item and the account (by [`account_key`]) an event's facts
    /// are folded into, if any: what must be in memory before
    /// [`Projection::apply_decoded`] folds it into a projection that holds
    /// only some items (see [`Projection::release_except`]).
    pub fn folds_into(event: &Event) -> (Option<&str>, Option<String>) {
        let Some(account) = &event.account else {
            return (None, None);
        };
        match event.item() {
            Some(item) => (Some(item), None),
            None => (None, Some(account_key(account))),
        }
    }

    /// A projection that will hold only some items and accounts in memory:
    /// whoever folds entries into it puts each saved state back first
    /// (see [`Projection::folds_into`]), and may drop saved ones
    /// ([`Projection::release_except`]).
    pub fn partial() -> Self {
        Projection {
            partial: true,
            untracked: true,
            ..Projection::default()
        }
    }

    /// This projection without its items and accounts (its policies,
    /// imports and cursors, as a partial projection): what to judge with
    /// beside saved states that hold every item and account (see
    /// `SavedStates`), on a thread that does not fold.
    pub fn without_states(&self) -> Self {
        Projection {
            policies: self.policies.clone(),
            imports: self.imports.clone(),
            covered: self.covered.clone(),
            ..Projection::partial()
        }
    }

    /// Records from now on what each fold touches, for
    /// [`Projection::take_touched`] (a projection in memory always does).
    pub fn track_touched(&mut self) {
        self.untracked = false;
    }

    /// Whether items and accounts live elsewhere too (see
    /// [`Projection::partial`]).
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Drops from memory the items and accounts saved since they last
    /// changed (none is dirty), but for those `keep` names (folded into
    /// lately, say), keeping policies, imports and cursors. Only a partial
    /// projection drops anything: the caller keeps the saved states, and
    /// puts each back before an entry folds into it.
    pub fn release_except(&mut self, keep: &Dirty) {
        if !self.partial {
            return;
        }
        let dirty = &self.dirty;
        self.items
            .retain(|id, _| dirty.items.contains(id) || keep.items.contains(id));
        self.accounts
            .retain(|key, _| dirty.accounts.contains(key) || keep.accounts.contains(key));
    }

    /// Items and accounts held in memory.
    pub fn resident(&self) -> usize {
        self.items.len() + self.accounts.len()
    }

    /// Makes a partial projection whole: the caller has put every saved
    /// item and account into it.
    pub fn make_whole(&mut self) {
        self.partial = false;
        self.untracked = false;
    }

    /// Marks again as changed what a save that failed had taken.
    pub fn mark_dirty(&mut self, dirty: &Dirty) {
        self.dirty.items.extend(dirty.items.iter().cloned());
        self.dirty.accounts.extend(dirty.accounts.iter().cloned());
        self.dirty.policies |= dirty.policies;
    }

    /// Hands over and clears the record of what changed (for saving).
    pub fn take_dirty(&mut self) -> Dirty {
        self.unsaved = 0;
        self.dirty.take()
    }

    /// Entries folded since the changes were last handed over for saving.
    pub fn unsaved(&self) -> u64 {
        self.unsaved
    }

    /// Hands over and clears the record of what changed since the last
    /// call (for the deadline monitor).
    pub fn take_touched(&mut self) -> Dirty {
        self.touched.take()
    }

    /// Folds one entry in. Entries of a chain must come in seq order;
    /// chains may interleave in any way.
    pub fn apply(&mut self, entry: &Entry) -> Result<(), ProjectionError> {
        let event = entry_event(entry)?;
        self.apply_decoded(entry, event.as_ref())
    }

    /// Like [`Projection::apply`], with the entry's event already decoded;
    /// `None` advances the chain's cursor without folding anything (a
    /// rejected entry, or an event a scoped replay leaves out).
    pub fn apply_decoded(
        &mut self,
        entry: &Entry,
        event: Option<&Event>,
    ) -> Result<(), ProjectionError> {
        self.apply_at(EntryAt::of(entry), event)
    }

    /// [`Projection::apply_decoded`] given where the entry stands.
    pub fn apply_at(
        &mut self,
        at: EntryAt<'_>,
        event: Option<&Event>,
    ) -> Result<(), ProjectionError> {
        if let Some(change) = self.apply_deferring_at(at, event)? {
            self.absorb(change);
        }
        Ok(())
    }

    /// Like [`Projection::apply_decoded`], but hands back the change an
    /// item or account event makes instead of absorbing it: the caller
    /// absorbs it later with the other changes of the same state (a
    /// rebuild sorts them by state first). Ledger-wide events (policies,
    /// imports) are folded, and the chain's cursor advances, at once.
    pub fn apply_deferring(
        &mut self,
        entry: &Entry,
        event: Option<&Event>,
    ) -> Result<Option<StateChange>, ProjectionError> {
        self.apply_deferring_at(EntryAt::of(entry), event)
    }

    fn apply_deferring_at(
        &mut self,
        at: EntryAt<'_>,
        event: Option<&Event>,
    ) -> Result<Option<StateChange>, ProjectionError> {
        let expected = self.next_seq(at.chain);
        if at.seq != expected {
            return Err(ProjectionError::OutOfOrder {
                chain: at.chain.to_owned(),
                expected,
                found: at.seq,
            });
        }
        let change = match event {
            Some(event) => self.fold_ledger_wide(event, entry_ref_at(at, event)),
            None => None,
        };
        match self.covered.get_mut(at.chain) {
            Some(next) => *next = expected + 1,
            None => {
                self.covered.insert(at.chain.to_owned(), expected + 1);
            }
        }
        self.unsaved += 1;
        Ok(change)
    }

    /// Folds one entry in without the seq-order check or cursor: for a
    /// proof file, which holds only some entries of each chain, and for
    /// timelines, which fold entries in time order.
    pub fn fold_entry(&mut self, entry: &Entry) -> Result<(), ProjectionError> {
        if let Some(event) = entry_event(entry)? {
            self.fold_event(&event, entry_ref(entry, &event));
        }
        Ok(())
    }

    fn fold_event(&mut self, event: &Event, at: EntryRef) {
        if let Some(change) = self.fold_ledger_wide(event, at) {
            self.absorb(change);
        }
    }

    /// Folds a policy publication or an import declaration; hands back
    /// the change any other event makes to an item or an account.
    fn fold_ledger_wide(&mut self, event: &Event, at: EntryRef) -> Option<StateChange> {
        if let Kind::PolicyPublished(p) = &event.kind {
            // Only chain `policy` publishes policies (the store rejects a
            // publication anywhere else; an older ledger may hold one).
            if at.chain != POLICY_CHAIN {
                return None;
            }
            self.policies.push(PublishedPolicy {
                version: p.policy_version.clone(),
                hash: p.policy_hash.clone(),
                at,
            });
            self.policies
                .sort_by_key(|p| (p.at.chain.clone(), p.at.seq));
            self.dirty.policies = true;
            self.touched.policies = true;
            return None;
        }
        if let Kind::HistoryImported(h) = &event.kind {
            // Only chain `imports` declares imports (the store rejects a
            // declaration anywhere else).
            if at.chain != IMPORTS_CHAIN {
                return None;
            }
            self.imports.push(DeclaredImport {
                chain: h.chain.clone(),
                first_seq: h.first_seq,
                last_seq: h.last_seq,
                declared_by: h.declared_by.clone(),
                at,
            });
            self.imports.sort_by_key(|d| (d.at.chain.clone(), d.at.seq));
            // Like a new policy, a declaration changes how items are
            // judged: the monitor looks at every item again.
            self.dirty.policies = true;
            self.touched.policies = true;
            return None;
        }
        StateChange::of(event, at)
    }

    /// Absorbs a change into the item or account it is about.
    pub fn absorb(&mut self, change: StateChange) {
        match change {
            StateChange::Item {
                item_id,
                account,
                category,
                change,
            } => {
                if !self.untracked {
                    Changes::note(&mut self.touched.items, &item_id);
                }
                Changes::note(&mut self.dirty.items, &item_id);
                let tracked = !self.untracked;
                let touched = &mut self.touched;
                self.items
                    .entry(item_id)
                    .or_insert_with_key(|id| {
                        if tracked {
                            touched.new_items.insert(id.clone());
                        }
                        ItemState {
                            item_id: id.clone(),
                            ..ItemState::default()
                        }
                    })
                    .absorb(account, category, change);
            }
            StateChange::Account { account, change } => {
                let key = account_key(&account);
                if !self.untracked {
                    Changes::note(&mut self.touched.accounts, &key);
                }
                Changes::note(&mut self.dirty.accounts, &key);
                self.accounts
                    .entry(key)
                    .or_default()
                    .absorb(account, change);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
