//! Keeping the projection beside the chains, and catching it up.
//!
//! The projection is derived data: its states live in the ledger's own
//! runs (`states`), it records per chain the seq it covers, and it can
//! always be rebuilt from the chains. A save's states and cursors become
//! visible together (the projection manifest's replacement), so a crash
//! leaves it at some earlier cursor, from which catching up continues.

use super::{Ledger, StoreError};
use crate::intake::LedgerRecord;
use crate::policy::Policy;
use crate::projection::facts::{Facts, FactsError};
use crate::projection::{
    AccountState, DeclaredImport, ItemState, Projection, ProjectionError, PublishedPolicy,
    entry_event,
};
use lifeledger_schemas::Event;
use std::borrow::Cow;
use std::ops::ControlFlow;

/// The sled tree where the projection was kept before it had runs of its
/// own: dropped when a writer opens.
const OLD_TREE: &str = "projection";

/// The small record naming how the saved states are encoded: states of
/// another encoding are not read (their decoding could fail half-way
/// through a fold) but rebuilt. Change it with `ItemState`, `AccountState`
/// or the other saved types.
const FORMAT_KEY: &[u8] = b"v";
const STATES_FORMAT: &[u8] = b"states-1 bincode-2-standard";

/// Entries folded between two saves while catching up.
const SAVE_EVERY: u64 = 10_000;

pub(super) fn codec_error(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged {
        key: format!("projection {}", String::from_utf8_lossy(key)),
        detail: e.to_string(),
    }
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| codec_error(b"(encode)", e))
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| codec_error(key, e))
}

fn decode_cursor(key: &[u8], bytes: &[u8]) -> Result<u64, StoreError> {
    let seq: [u8; 8] = bytes
        .try_into()
        .map_err(|_| codec_error(key, "cursor is not 8 bytes"))?;
    Ok(u64::from_be_bytes(seq))
}

pub(super) fn key(prefix: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(prefix);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The small records a save writes beside the states: the format, the
/// cursors, and (when they changed) the policies and imports.
pub(super) fn small_records(
    projection: &Projection,
    policies_changed: bool,
) -> Result<Vec<super::states::Record>, StoreError> {
    let mut small = Vec::with_capacity(projection.covered.len() + 3);
    small.push((FORMAT_KEY.to_vec(), STATES_FORMAT.to_vec()));
    if policies_changed {
        small.push((key(b'p', ""), encode(&projection.policies)?));
        small.push((key(b'm', ""), encode(&projection.imports)?));
    }
    for (chain, seq) in &projection.covered {
        small.push((key(b'c', chain), seq.to_be_bytes().to_vec()));
    }
    Ok(small)
}

impl From<ProjectionError> for StoreError {
    fn from(e: ProjectionError) -> Self {
        StoreError::Damaged {
            key: "projection".into(),
            detail: e.to_string(),
        }
    }
}

impl Ledger {
    /// The projection as last saved, every item in memory (empty if never
    /// built); most callers want [`Ledger::open_projection`] instead.
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

    /// A write or fsync of the saved states that failed poisons the
    /// ledger like one of the index's: after EIO or ENOSPC nothing more is
    /// written, and sled is not asked to fsync again on drop.
    fn poison_on_io(&mut self, e: &StoreError) {
        if matches!(e, StoreError::Io { .. }) {
            self.poisoned = true;
        }
    }

    /// Drops the projection a ledger kept in sled before it had runs of
    /// its own (derived data: the projection is folded again).
    pub(super) fn drop_projection_kept_in_sled(&mut self) -> Result<(), StoreError> {
        if self.existing_tree(OLD_TREE)?.is_some() {
            tracing::info!("dropping the projection kept in the index by an older release");
            self.db.drop_tree(OLD_TREE)?;
        }
        Ok(())
    }

    /// The saved projection as [`Ledger::open_projection`] opens it, or,
    /// when it cannot be read (saved by an older build, or damaged),
    /// rebuilt from the chains: it is derived data, and the chains are the
    /// record.
    pub fn open_or_rebuild_projection(
        &mut self,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Projection, StoreError> {
        match self.open_projection() {
            Err(StoreError::Damaged { key, detail }) if key.starts_with("projection") => {
                tracing::warn!(
                    "the saved projection cannot be read ({key}: {detail}); rebuilding it from the chains"
                );
                self.rebuild_projection(progress)
            }
            other => other,
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

    /// [`Ledger::save_projection`], handing back what it saved.
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
        Ok(dirty)
    }

    /// Poisons the ledger if `result` is an I/O failure of the saved
    /// states (see [`Ledger::poison_on_io`]).
    pub(super) fn poisoning<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.poison_on_io(e);
        }
        result
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

    /// Like [`Ledger::catch_up`], but saves only once `SAVE_EVERY` entries
    /// (or more items than may stay resident) wait to be saved: for a
    /// writer that folds every few entries it appends, where a save per
    /// write would rewrite its hot items over and over. What is not saved
    /// yet stays in `projection` (whose facts are the newer); the caller
    /// saves it with [`Ledger::save_projection`] before it stops. A crash
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
        for chain in self.chain_names()? {
            // In windows, so that memory stays bounded and progress is saved.
            loop {
                let from = projection.next_seq(&chain);
                let (window, events) = self.window(&chain, from)?;
                if window.is_empty() {
                    break;
                }
                self.fault_in(projection, events.iter().flatten().map(|e| &**e))?;
                for (entry, event) in window.iter().zip(&events) {
                    projection.apply_decoded(entry, event.as_deref())?;
                }
                folded += window.len() as u64;
                let crowded = projection.resident() > self.options.projection_resident;
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
    /// `SAVE_EVERY`), each with its event: those the last append wrote
    /// (and intake decoded) when they are the ones wanted, else read from
    /// the evidence and decoded.
    #[allow(clippy::type_complexity)] // a window and its events, side by side
    fn window(
        &mut self,
        chain: &str,
        from: u64,
    ) -> Result<(Vec<crate::entry::Entry>, Vec<Option<Box<Event>>>), StoreError> {
        let appended = self
            .just_appended
            .get(chain)
            .is_some_and(|a| a.sealed.first().is_some_and(|e| e.seq == from));
        if let Some(appended) = appended.then(|| self.just_appended.remove(chain)).flatten() {
            let entries = appended
                .sealed
                .iter()
                .map(|e| {
                    crate::entry::Entry::decode(&e.encoding).map_err(|err| {
                        codec_error(format!("{chain} seq {}", e.seq).as_bytes(), err)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok((entries, appended.events));
        }
        let entries = self
            .entries(chain, from, from.saturating_add(SAVE_EVERY - 1))?
            .map(|r| r.map(|(_, entry)| entry))
            .collect::<Result<Vec<_>, _>>()?;
        let events = entries
            .iter()
            .map(|e| entry_event(e).map(|event| event.map(Box::new)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((entries, events))
    }

    /// Every entry about one item (its own, and its account's account-wide
    /// ones), read from the evidence at the places `projection` (saved
    /// and caught up) names, each checked against its recorded hash; in
    /// ledger order. `None` if no entry names the item.
    pub fn entries_of_item(
        &self,
        projection: &Projection,
        item_id: &str,
    ) -> Result<Option<Vec<(super::StoredRecord, crate::entry::Entry)>>, StoreError> {
        let facts = self.facts(projection)?;
        let read = |e: FactsError| codec_error(item_id.as_bytes(), e);
        let Some(item) = facts.item(item_id).map_err(read)? else {
            return Ok(None);
        };
        let account = facts.account_of(&item).map_err(read)?;
        let refs = item.entries_with(account.as_deref());
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            let (record, entry) = self
                .entries(&r.chain, r.seq, r.seq)?
                .next()
                .transpose()?
                .ok_or_else(|| {
                    codec_error(
                        format!("{} seq {}", r.chain, r.seq).as_bytes(),
                        "the projection names an entry the chain does not hold",
                    )
                })?;
            if entry.hash() != record.hash {
                return Err(codec_error(
                    format!("{} seq {}", r.chain, r.seq).as_bytes(),
                    "the entry does not hash to its recorded hash",
                ));
            }
            out.push((record, entry));
        }
        Ok(Some(out))
    }

    /// How many items and accounts the saved projection holds.
    pub fn projection_size(&self) -> Result<(u64, u64), StoreError> {
        Ok((self.states.count(b"i")?, self.states.count(b"a")?))
    }

    /// The facts of every item and account as `projection` and the saved
    /// projection hold them together (a partial projection's items in
    /// memory are the newer).
    pub fn facts<'a>(&self, projection: &'a Projection) -> Result<SavedFacts<'a>, StoreError> {
        Ok(SavedFacts {
            saved: self.states.view(),
            resident: projection,
        })
    }

    /// Keeps a policy file's text, addressed by its BLAKE3 hash, so that
    /// verdicts can be judged again under the version that was published.
    pub fn store_policy_text(&mut self, hash: &str, text: &str) -> Result<(), StoreError> {
        self.writable()?;
        if blake3::hash(text.as_bytes()).to_hex().as_str() != hash {
            return Err(codec_error(
                hash.as_bytes(),
                "policy text does not match its hash",
            ));
        }
        let path = super::own_records::policy_path(&self.dir, hash);
        if path.is_file() {
            return Ok(());
        }
        super::own_records::write_durably(&path, text.as_bytes())
    }

    /// Publishes a policy: keeps its text (by hash) and appends its
    /// `policy_published` event to chain `policy`, the only way either gets
    /// there. The event id is `policy-` and the first 32 hex digits of the
    /// hash, so publishing the same text again finds the first publication
    /// instead. `source_path` is the policy file as resolved (line 0: the
    /// whole file).
    pub fn publish_policy(
        &mut self,
        policy: &Policy,
        text: &str,
        source_path: &str,
        now: jiff::Timestamp,
    ) -> Result<Publication, StoreError> {
        self.store_policy_text(&policy.hash, text)?;
        let event_id = format!("policy-{}", &policy.hash[..32.min(policy.hash.len())]);
        let kind = serde_json::json!({
            "type": "policy_published",
            "policy_version": policy.version,
            "policy_hash": policy.hash,
        });
        let written = self.append_ledger_record(
            LedgerRecord::PolicyPublished,
            &event_id,
            kind,
            source_path,
            now,
        )?;
        Ok(match written {
            Written::Found(found) => found,
            Written::Appended(report) => Publication::Published {
                seq: report.next_seq.saturating_sub(1),
            },
        })
    }

    /// Declares entries `first_seq..=last_seq` of `chain` an import of
    /// history (a backfill) by `declared_by`: appends a `history_imported`
    /// event to chain `imports`, the only way one gets there. Declaring the
    /// same range again finds the first declaration. `source_path` is the
    /// imported file as resolved (line 0: the whole file).
    pub fn declare_import(
        &mut self,
        chain: &str,
        first_seq: u64,
        last_seq: u64,
        declared_by: &str,
        source_path: &str,
        now: jiff::Timestamp,
    ) -> Result<Publication, StoreError> {
        let key = format!("{chain}\n{first_seq}\n{last_seq}\n{declared_by}");
        let event_id = format!("import-{}", &blake3::hash(key.as_bytes()).to_hex()[..32]);
        let kind = serde_json::json!({
            "type": "history_imported",
            "declared_by": declared_by,
            "chain": chain,
            "first_seq": first_seq,
            "last_seq": last_seq,
        });
        let report = match self.append_ledger_record(
            LedgerRecord::HistoryImported,
            &event_id,
            kind,
            source_path,
            now,
        )? {
            Written::Found(found) => return Ok(found),
            Written::Appended(report) => report,
        };
        if report.rejected > 0 {
            // A declared_by that is not an identifier, say: the rejection is
            // kept, and the caller told.
            return Err(codec_error(
                b"imports",
                "the import declaration was rejected (declared_by must be 1 to 128 of A-Z a-z 0-9 . _ - : /)",
            ));
        }
        Ok(Publication::Published {
            seq: report.next_seq.saturating_sub(1),
        })
    }

    /// Appends one of the ledger's own records (an event `event_id` of
    /// `kind`, at `now`) to its reserved chain, the only place the intake
    /// guard lets it through, sourced from `source_path` line 0 (the whole
    /// file). An event id already recorded is found instead: the record
    /// was written before. What was rejected is the caller's to judge.
    fn append_ledger_record(
        &mut self,
        record: LedgerRecord,
        event_id: &str,
        kind: serde_json::Value,
        source_path: &str,
        now: jiff::Timestamp,
    ) -> Result<Written, StoreError> {
        if let Some((chain, seq)) = self.find_event(event_id)? {
            return Ok(Written::Found(Publication::AlreadyPublished { chain, seq }));
        }
        let raw = serde_json::json!({
            "schema_version": 1,
            "event_id": event_id,
            "event_time": now.to_string(),
            "kind": kind,
        });
        let input = crate::intake::Incoming {
            source: crate::entry::Source::File {
                path: source_path.to_owned(),
                line: 0,
            },
            raw: serde_json::to_vec(&raw).map_err(|e| codec_error(record.chain().as_bytes(), e))?,
        };
        self.writing = Some(record);
        let appended = self.append(record.chain(), vec![input], now);
        self.writing = None;
        Ok(Written::Appended(appended?))
    }

    /// A stored policy text by hash, checked against the hash.
    pub fn policy_text(&self, hash: &str) -> Result<Option<String>, StoreError> {
        // Hashes are hex; anything else cannot name a file of ours.
        if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let path = super::own_records::policy_path(&self.dir, hash);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return Err(codec_error(
                hash.as_bytes(),
                "stored policy text does not match its hash",
            ));
        }
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|e| codec_error(hash.as_bytes(), e))
    }

    /// The latest of `published` whose text this ledger holds, parsed.
    /// Publications whose text is missing are skipped with a warning.
    pub fn published_policy(
        &self,
        published: &[PublishedPolicy],
    ) -> Result<Option<(PublishedPolicy, Policy)>, StoreError> {
        for p in published.iter().rev() {
            match self.policy_text(&p.hash)? {
                Some(text) => {
                    let policy = Policy::parse(&text).map_err(|e| StoreError::Damaged {
                        key: format!("policy {}", p.version),
                        detail: e.to_string(),
                    })?;
                    return Ok(Some((p.clone(), policy)));
                }
                None => tracing::warn!(
                    "policy {} (blake3 {}) was published at chain {:?} seq {}, but its text is not in \
                     this ledger; using an earlier one",
                    p.version,
                    p.hash,
                    p.at.chain,
                    p.at.seq
                ),
            }
        }
        Ok(None)
    }
}

/// How one of the ledger's own records went: found (written before), or
/// appended now.
enum Written {
    Found(Publication),
    Appended(super::AppendReport),
}

/// What [`Ledger::publish_policy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// Appended to chain `policy` at this seq.
    Published { seq: u64 },
    /// The same text was published before, there.
    AlreadyPublished { chain: String, seq: u64 },
}

/// The facts of a projection whose items are partly in memory, partly
/// saved (see [`Ledger::facts`]).
#[derive(Debug)]
pub struct SavedFacts<'a> {
    saved: super::states::StatesView,
    resident: &'a Projection,
}

impl SavedFacts<'_> {
    fn saved<T: serde::de::DeserializeOwned>(
        &self,
        prefix: u8,
        name: &str,
    ) -> Result<Option<T>, FactsError> {
        if !self.resident.is_partial() {
            return Ok(None);
        }
        let k = key(prefix, name);
        let read = self.saved.get(&k).map_err(|e| FactsError(e.to_string()))?;
        read.map(|v| decode(&k, &v))
            .transpose()
            .map_err(|e| FactsError(e.to_string()))
    }
}

impl Facts for SavedFacts<'_> {
    fn item(&self, id: &str) -> Result<Option<Cow<'_, ItemState>>, FactsError> {
        match self.resident.items.get(id) {
            Some(state) => Ok(Some(Cow::Borrowed(state))),
            None => Ok(self.saved(b'i', id)?.map(Cow::Owned)),
        }
    }

    fn account(&self, key: &str) -> Result<Option<Cow<'_, AccountState>>, FactsError> {
        match self.resident.accounts.get(key) {
            Some(state) => Ok(Some(Cow::Borrowed(state))),
            None => Ok(self.saved(b'a', key)?.map(Cow::Owned)),
        }
    }

    fn items_from(
        &self,
        from: &str,
        visit: &mut dyn FnMut(&ItemState) -> ControlFlow<()>,
    ) -> Result<(), FactsError> {
        if !self.resident.is_partial() {
            return self.resident.items_from(from, visit);
        }
        // Both are in item-id order (a string's order is its bytes'):
        // merge them, the resident state winning.
        let mut resident = self
            .resident
            .items
            .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
            .peekable();
        for kv in self.saved.scan_from(b"i", &key(b'i', from)) {
            let (k, v) = kv.map_err(|e| FactsError(e.to_string()))?;
            let id = &k[1..];
            while let Some((_, state)) = resident.next_if(|(rid, _)| rid.as_bytes() < id) {
                if visit(state).is_break() {
                    return Ok(());
                }
            }
            let went = match resident.next_if(|(rid, _)| rid.as_bytes() == id) {
                Some((_, state)) => visit(state),
                None => visit(&decode::<ItemState>(&k, &v).map_err(|e| FactsError(e.to_string()))?),
            };
            if went.is_break() {
                return Ok(());
            }
        }
        for (_, state) in resident {
            if visit(state).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn imports(&self) -> &[DeclaredImport] {
        &self.resident.imports
    }
}
