//! A writer's projection store: the saved states of the projection
//! (`DIR/projection/`) and what it folds from (the evidence as last
//! acknowledged, and the entries the last append wrote, with their
//! decoded events). It is part of a [`Ledger`], and can be taken out of
//! it ([`Ledger::detach_projection_store`]) so that the projection is
//! folded, saved and judged on a thread of its own while the ledger
//! appends; the ledger then hands each append's entries over
//! ([`Ledger::take_appended`], [`ProjectionStore::advance`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::projection::{
    FORMAT_KEY, SAVE_EVERY, STATES_FORMAT, SavedFacts, codec_error, decode, decode_cursor, encode,
    key, small_records,
};
use super::recent_states::{RecentSaves, RecentStates};
use super::snapshot::Snapshot;
use super::states::{StateStore, StatesView};
use super::{JustAppended, Ledger, StoreError};
use crate::entry::EntryView;
use crate::policy::Policy;
use crate::projection::{EntryAt, Projection, PublishedPolicy, entry_event};
use jiff::Timestamp;
use lifeledger_schemas::Event;

/// The projection's saved states and what it folds from.
#[derive(Debug)]
pub struct ProjectionStore {
    dir: PathBuf,
    pub(super) states: StateStore,
    /// The evidence as last handed over.
    evidence: Snapshot,
    /// What the last append handed over wrote, per chain.
    just_appended: HashMap<String, JustAppended>,
    /// Items and accounts a partial projection keeps in memory between
    /// saves (`LedgerOptions::projection_resident`).
    resident_limit: usize,
    /// A write of the saved states failed: nothing more is written.
    poisoned: bool,
    /// The saves since the saved states were last handed over, kept only
    /// for a store whose saved states are handed to a monitor
    /// ([`ProjectionStore::keep_recent_saves`]).
    recent: Option<RecentSaves>,
}

/// What one append wrote, handed from the ledger to a projection store
/// taken out of it: the evidence as it now stands, and the entries
/// written with their decoded events.
#[derive(Debug)]
pub struct Appended {
    evidence: Snapshot,
    entries: HashMap<String, JustAppended>,
}

impl ProjectionStore {
    pub(super) fn new(
        dir: PathBuf,
        states: StateStore,
        evidence: Snapshot,
        resident_limit: usize,
    ) -> Self {
        ProjectionStore {
            dir,
            states,
            evidence,
            just_appended: HashMap::new(),
            resident_limit,
            poisoned: false,
            recent: None,
        }
    }

    /// Keeps what each save wrote until the saved states are next handed
    /// over ([`ProjectionStore::hand_over_saved_states`]), so that the
    /// thread they go to reads what was saved since from memory.
    pub fn keep_recent_saves(&mut self) {
        self.recent.get_or_insert_with(RecentSaves::default);
    }

    /// Forgets what [`ProjectionStore::keep_recent_saves`] kept: the
    /// states were written otherwise.
    pub(super) fn forget_recent_saves(&mut self) {
        if let Some(recent) = &mut self.recent {
            recent.forget();
        }
    }

    /// Takes what an append wrote: the next fold reads it from here.
    pub fn advance(&mut self, appended: Appended) {
        self.evidence = appended.evidence;
        if !appended.entries.is_empty() {
            self.just_appended = appended.entries;
        }
    }

    pub(super) fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The projection as last saved, every item in memory (empty if never
    /// built); most callers want [`ProjectionStore::open_projection`] instead.
    pub fn load_projection(&self) -> Result<Projection, StoreError> {
        let mut projection = self.open_projection()?;
        projection.make_whole();
        let view = self.states.view();
        for kv in view.scan(b"i") {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            projection.items.insert(name, decode(&k, &v)?);
        }
        for kv in view.scan(b"a") {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            projection.accounts.insert(name, decode(&k, &v)?);
        }
        Ok(projection)
    }

    /// The saved projection as a writer keeps it: cursors, policies and
    /// imports in memory, items and accounts read back from the index
    /// when an entry folds into them ([`Projection::partial`]), so that
    /// memory does not grow with the number of items.
    pub fn open_projection(&self) -> Result<Projection, StoreError> {
        if let Some(damage) = self.states.damage() {
            return Err(codec_error(b"(saved states)", damage));
        }
        let format = self.states.small(FORMAT_KEY);
        if format.is_some_and(|f| f != STATES_FORMAT)
            || (format.is_none() && self.states.small_with_prefix(b"").next().is_some())
        {
            return Err(codec_error(
                FORMAT_KEY,
                "saved by another release (its states are encoded otherwise)",
            ));
        }
        let mut projection = Projection::partial();
        for (k, v) in self.states.small_with_prefix(b"c") {
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            projection.covered.insert(name, decode_cursor(k, v)?);
        }
        if let Some(v) = self.states.small(b"p") {
            projection.policies = decode(b"p", v)?;
        }
        if let Some(v) = self.states.small(b"m") {
            projection.imports = decode(b"m", v)?;
        }
        Ok(projection)
    }

    /// A write or fsync of the saved states that failed poisons the store,
    /// and the ledger it is part of, like a failure of the index's: after
    /// EIO or ENOSPC nothing more is written.
    fn poison_on_io(&mut self, e: &StoreError) {
        if matches!(e, StoreError::Io { .. }) {
            self.poisoned = true;
        }
    }

    /// Saves what changed in the projection, and its cursors, atomically.
    /// Not fsynced here: the projection is derived, and a save lost in a
    /// crash leaves an earlier cursor, from which catching up folds the
    /// same entries again. It becomes durable with the index's next flush
    /// (every append flushes it) or [`Ledger::rebuild_projection`]'s.
    pub fn save_projection(&mut self, projection: &mut Projection) -> Result<(), StoreError> {
        self.save_dirty(projection).map(drop)
    }

    /// [`ProjectionStore::save_projection`], handing back what it saved.
    fn save_dirty(
        &mut self,
        projection: &mut Projection,
    ) -> Result<crate::projection::Dirty, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let dirty = projection.take_dirty();
        // In key order: every account key ('a') sorts before every item
        // key ('i'), and each set is in its names' byte order.
        let mut states = Vec::with_capacity(dirty.accounts.len() + dirty.items.len());
        for account in &dirty.accounts {
            if let Some(state) = projection.accounts.get(account) {
                states.push((key(b'a', account), encode(state)?));
            }
        }
        for item in &dirty.items {
            if let Some(state) = projection.items.get(item) {
                states.push((key(b'i', item), encode(state)?));
            }
        }
        let small = small_records(projection, dirty.policies)?;
        if let Err(e) = self.states.save(&states, small) {
            // What was taken to be saved is not: keep it in memory.
            projection.mark_dirty(&dirty);
            self.poison_on_io(&e);
            return Err(e);
        }
        if let Some(recent) = &mut self.recent {
            recent.keep(states);
        }
        Ok(dirty)
    }

    /// Puts back into a partial projection the saved states of the items
    /// and accounts `events` fold into (those not in memory already).
    fn fault_in<'e>(
        &self,
        projection: &mut Projection,
        events: impl Iterator<Item = &'e Event>,
    ) -> Result<(), StoreError> {
        if !projection.is_partial() {
            return Ok(());
        }
        let view = self.states.view();
        for event in events {
            match Projection::folds_into(event) {
                (Some(item), _) if !projection.items.contains_key(item) => {
                    let k = key(b'i', item);
                    if let Some(v) = view.get(&k)? {
                        projection.items.insert(item.to_owned(), decode(&k, &v)?);
                    }
                }
                (_, Some(account)) if !projection.accounts.contains_key(&account) => {
                    let k = key(b'a', &account);
                    if let Some(v) = view.get(&k)? {
                        projection.accounts.insert(account, decode(&k, &v)?);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Folds every entry the projection has not yet seen into it, saving as
    /// it goes and at the end (and, for a partial projection, keeping at
    /// most `LedgerOptions::projection_resident` items and accounts in
    /// memory between saves). Returns the number of entries folded.
    pub fn catch_up(
        &mut self,
        projection: &mut Projection,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError> {
        let folded = self.fold_new(projection, progress, 1)?;
        if projection.unsaved() > 0 {
            self.save_projection(projection)?;
        }
        Ok(folded)
    }

    /// Like [`ProjectionStore::catch_up`], but saves only once `SAVE_EVERY` entries
    /// (or more items than may stay resident) wait to be saved: for a
    /// writer that folds every few entries it appends, where a save per
    /// write would rewrite its hot items over and over. What is not saved
    /// yet stays in `projection` (whose facts are the newer); the caller
    /// saves it with [`ProjectionStore::save_projection`] before it stops. A crash
    /// loses only derived work: the saved cursor is older, and catching
    /// up folds the same entries again.
    pub fn catch_up_saving_when_due(
        &mut self,
        projection: &mut Projection,
    ) -> Result<u64, StoreError> {
        self.fold_new(projection, &mut |_| {}, SAVE_EVERY)
    }

    /// Folds new entries in windows, saving whenever `save_after` entries
    /// are unsaved or too many states are resident.
    fn fold_new(
        &mut self,
        projection: &mut Projection,
        progress: &mut dyn FnMut(u64),
        save_after: u64,
    ) -> Result<u64, StoreError> {
        let mut folded = 0u64;
        for chain in self.evidence.chain_names() {
            // In windows, so that memory stays bounded and progress is saved.
            loop {
                let from = projection.next_seq(&chain);
                let (window, events) = self.window(&chain, from)?;
                if window.is_empty() {
                    break;
                }
                self.fault_in(projection, events.iter().flatten().map(|e| &**e))?;
                for (&(seq, received_at), event) in window.iter().zip(&events) {
                    let at = EntryAt {
                        chain: &chain,
                        seq,
                        received_at,
                    };
                    projection.apply_at(at, event.as_deref())?;
                }
                folded += window.len() as u64;
                let crowded = projection.resident() > self.resident_limit;
                if projection.unsaved() >= save_after || (crowded && projection.is_partial()) {
                    let saved = self.save_dirty(projection)?;
                    if crowded {
                        // What was folded into since the last save stays:
                        // a writer's next entries are likely about it.
                        projection.release_except(&saved);
                    }
                }
                progress(folded);
            }
        }
        progress(folded);
        Ok(folded)
    }

    /// The entries of `chain` from `from` on that one fold takes (at most
    /// `SAVE_EVERY`), each as its seq and receipt time, with its event:
    /// those the last append wrote (and intake decoded) when they are the
    /// ones wanted, read in place from their encodings, else read from the
    /// evidence and decoded.
    #[allow(clippy::type_complexity)] // a window and its events, side by side
    fn window(
        &mut self,
        chain: &str,
        from: u64,
    ) -> Result<(Vec<(u64, Timestamp)>, Vec<Option<Box<Event>>>), StoreError> {
        let appended = self
            .just_appended
            .get(chain)
            .is_some_and(|a| a.sealed.first().is_some_and(|e| e.seq == from));
        if let Some(appended) = appended.then(|| self.just_appended.remove(chain)).flatten() {
            let entries = appended
                .sealed
                .iter()
                .map(|e| {
                    let bad = |detail: String| {
                        codec_error(format!("{chain} seq {}", e.seq).as_bytes(), detail)
                    };
                    let view =
                        EntryView::decode(&e.encoding).map_err(|err| bad(err.to_string()))?;
                    if view.chain != chain || view.seq != e.seq {
                        return Err(bad(format!(
                            "the encoding says chain {:?} seq {}",
                            view.chain, view.seq
                        )));
                    }
                    let received_at =
                        Timestamp::from_nanosecond(i128::from(view.received_at_nanos))
                            .map_err(|err| bad(err.to_string()))?;
                    Ok((e.seq, received_at))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok((entries, appended.events));
        }
        let entries = self
            .evidence
            .entries(chain, from, from.saturating_add(SAVE_EVERY - 1))
            .map(|r| r.map(|(_, entry)| entry))
            .collect::<Result<Vec<_>, _>>()?;
        let events = entries
            .iter()
            .map(|e| entry_event(e).map(|event| event.map(Box::new)))
            .collect::<Result<Vec<_>, _>>()?;
        let entries = entries.iter().map(|e| (e.seq, e.received_at)).collect();
        Ok((entries, events))
    }

    /// How many items and accounts the saved projection holds.
    pub fn projection_size(&self) -> Result<(u64, u64), StoreError> {
        Ok((self.states.count(b"i")?, self.states.count(b"a")?))
    }

    /// The facts of every item and account as `projection` and the saved
    /// projection hold them together (a partial projection's items in
    /// memory are the newer).
    pub fn facts<'a>(&self, projection: &'a Projection) -> SavedFacts<'a> {
        SavedFacts {
            saved: self.states.view(),
            recent: None,
            resident: projection,
        }
    }

    /// The saved states as they are now: see [`SavedStates`].
    pub fn saved_states(&self) -> SavedStates {
        SavedStates {
            view: self.states.view(),
            dir: self.dir.clone(),
            recent: Arc::default(),
        }
    }

    /// [`ProjectionStore::saved_states`], with what was saved since they
    /// were last handed over kept in memory beside them (if
    /// [`ProjectionStore::keep_recent_saves`]).
    pub fn hand_over_saved_states(&mut self) -> SavedStates {
        let mut states = self.saved_states();
        if let Some(recent) = self.recent.as_mut() {
            states.recent = Arc::new(recent.hand_over());
        }
        states
    }
}

/// The projection's saved states as of one moment, to judge from on
/// another thread while the store goes on folding and saving: later
/// saves and merges do not change what it reads (the runs it reads stay
/// open, even once merged away).
#[derive(Debug, Clone)]
pub struct SavedStates {
    view: StatesView,
    dir: PathBuf,
    /// What was saved since the states were handed over before, by key.
    recent: Arc<RecentStates>,
}

impl SavedStates {
    /// The facts of every item and account as `projection` and these
    /// states hold them together (a partial projection's items in memory
    /// are the newer; one with none in memory reads them all from here).
    pub fn facts<'a>(&self, projection: &'a Projection) -> SavedFacts<'a> {
        SavedFacts {
            saved: self.view.clone(),
            recent: Some(Arc::clone(&self.recent)),
            resident: projection,
        }
    }

    /// The policy last published that the ledger holds the text of,
    /// parsed (see [`Ledger::published_policy`]).
    pub fn published_policy(
        &self,
        published: &[PublishedPolicy],
    ) -> Result<Option<(PublishedPolicy, Policy)>, StoreError> {
        super::projection::published_policy_in(&self.dir, published)
    }
}

impl Ledger {
    /// Hands what the last append wrote to the projection store taken
    /// out of this ledger ([`Ledger::detach_projection_store`]).
    pub fn take_appended(&mut self) -> Appended {
        Appended {
            evidence: self.evidence.clone(),
            entries: std::mem::take(&mut self.just_appended),
        }
    }
}
