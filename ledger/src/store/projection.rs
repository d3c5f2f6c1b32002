//! Keeping the projection beside the chains, and catching it up.
//!
//! The projection is derived data: its states live in the ledger's own
//! runs (`states`), it records per chain the seq it covers, and it can
//! always be rebuilt from the chains. A save's states and cursors become
//! visible together (the projection manifest's replacement), so a crash
//! leaves it at some earlier cursor, from which catching up continues.

use super::projection_store::ProjectionStore;
use super::{Ledger, StoreError};
use crate::intake::LedgerRecord;
use crate::policy::Policy;
use crate::projection::facts::{Facts, FactsError};
use crate::projection::{
    AccountState, DeclaredImport, ItemState, Projection, ProjectionError, PublishedPolicy,
};
use std::borrow::Cow;
use std::ops::ControlFlow;

/// The sled tree where the projection was kept before it had runs of its
/// own: dropped when a writer opens.
const OLD_TREE: &str = "projection";

/// The small record naming how the saved states are encoded: states of
/// another encoding are not read (their decoding could fail half-way
/// through a fold) but rebuilt. Change it with `ItemState`, `AccountState`
/// or the other saved types.
pub(super) const FORMAT_KEY: &[u8] = b"v";
pub(super) const STATES_FORMAT: &[u8] = b"states-2 bincode-2-standard";

/// Entries folded between two saves while catching up.
pub(super) const SAVE_EVERY: u64 = 10_000;

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

pub(super) fn decode_cursor(key: &[u8], bytes: &[u8]) -> Result<u64, StoreError> {
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
    /// The projection store, unless it was taken out
    /// ([`Ledger::detach_projection_store`]).
    pub fn projection_store(&self) -> Result<&ProjectionStore, StoreError> {
        self.projection_store
            .as_ref()
            .ok_or(StoreError::ProjectionStoreDetached)
    }

    /// The projection store with what the last append wrote handed to it:
    /// what folds into the projection here.
    pub(super) fn projection_store_mut(&mut self) -> Result<&mut ProjectionStore, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if self.projection_store.is_none() {
            // What the last append wrote stays for whoever holds the store
            // now ([`Ledger::take_appended`]).
            return Err(StoreError::ProjectionStoreDetached);
        }
        let appended = self.take_appended();
        let store = self
            .projection_store
            .as_mut()
            .ok_or(StoreError::ProjectionStoreDetached)?;
        store.advance(appended);
        Ok(store)
    }

    /// Runs `work` on the projection store; an I/O failure of the saved
    /// states poisons the ledger like one of the index's.
    fn with_projection_store<T>(
        &mut self,
        work: impl FnOnce(&mut ProjectionStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = work(self.projection_store_mut()?);
        if self
            .projection_store
            .as_ref()
            .is_some_and(ProjectionStore::is_poisoned)
        {
            self.poisoned = true;
        }
        result
    }

    /// Takes the projection store out of this ledger, to fold, save and
    /// judge the projection on another thread while this one appends:
    /// hand it each append's entries ([`Ledger::take_appended`]) and put
    /// it back ([`Ledger::attach_projection_store`]) before the ledger is
    /// asked about the projection again.
    pub fn detach_projection_store(&mut self) -> Result<ProjectionStore, StoreError> {
        self.projection_store_mut()?;
        self.projection_store
            .take()
            .ok_or(StoreError::ProjectionStoreDetached)
    }

    /// Puts back a projection store taken out of this ledger.
    pub fn attach_projection_store(&mut self, store: ProjectionStore) {
        if store.is_poisoned() {
            self.poisoned = true;
        }
        self.projection_store = Some(store);
    }

    /// The projection as last saved, every item in memory (empty if never
    /// built); most callers want [`Ledger::open_projection`] instead.
    pub fn load_projection(&self) -> Result<Projection, StoreError> {
        self.projection_store()?.load_projection()
    }

    /// The saved projection as a writer keeps it: see
    /// [`ProjectionStore::open_projection`].
    pub fn open_projection(&self) -> Result<Projection, StoreError> {
        self.projection_store()?.open_projection()
    }

    /// Saves what changed in the projection: see
    /// [`ProjectionStore::save_projection`].
    pub fn save_projection(&mut self, projection: &mut Projection) -> Result<(), StoreError> {
        self.with_projection_store(|store| store.save_projection(projection))
    }

    /// Folds every entry the projection has not yet seen into it: see
    /// [`ProjectionStore::catch_up`].
    pub fn catch_up(
        &mut self,
        projection: &mut Projection,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError> {
        self.with_projection_store(|store| store.catch_up(projection, progress))
    }

    /// See [`ProjectionStore::catch_up_saving_when_due`].
    pub fn catch_up_saving_when_due(
        &mut self,
        projection: &mut Projection,
    ) -> Result<u64, StoreError> {
        self.with_projection_store(|store| store.catch_up_saving_when_due(projection))
    }

    /// How many items and accounts the saved projection holds.
    pub fn projection_size(&self) -> Result<(u64, u64), StoreError> {
        self.projection_store()?.projection_size()
    }

    /// The facts of every item and account: see
    /// [`ProjectionStore::facts`].
    pub fn facts<'a>(&self, projection: &'a Projection) -> Result<SavedFacts<'a>, StoreError> {
        Ok(self.projection_store()?.facts(projection))
    }

    /// Poisons the ledger if `result` is an I/O failure of the saved
    /// states.
    pub(super) fn poisoning<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Io { .. }) = &result {
            self.poisoned = true;
        }
        result
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

    /// The text of the policy published under `hash`, if this ledger
    /// keeps it (checked against the hash).
    pub fn policy_text(&self, hash: &str) -> Result<Option<String>, StoreError> {
        policy_text_in(&self.dir, hash)
    }

    /// The latest of `published` whose text this ledger holds, parsed.
    /// Publications whose text is missing are skipped with a warning.
    pub fn published_policy(
        &self,
        published: &[PublishedPolicy],
    ) -> Result<Option<(PublishedPolicy, Policy)>, StoreError> {
        published_policy_in(&self.dir, published)
    }
}

/// [`Ledger::policy_text`] of the ledger at `dir`.
pub(super) fn policy_text_in(
    dir: &std::path::Path,
    hash: &str,
) -> Result<Option<String>, StoreError> {
    // Hashes are hex; anything else cannot name a file of ours.
    if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let path = super::own_records::policy_path(dir, hash);
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

/// [`Ledger::published_policy`] of the ledger at `dir`.
pub(super) fn published_policy_in(
    dir: &std::path::Path,
    published: &[PublishedPolicy],
) -> Result<Option<(PublishedPolicy, Policy)>, StoreError> {
    for p in published.iter().rev() {
        match policy_text_in(dir, &p.hash)? {
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
    pub(super) saved: super::states::StatesView,
    /// What was saved lately, read before the runs (see `recent_states`).
    pub(super) recent: Option<std::sync::Arc<super::recent_states::RecentStates>>,
    pub(super) resident: &'a Projection,
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
        if let Some(recent) = self.recent.as_ref().and_then(|r| r.get(&k)) {
            return decode(&k, recent)
                .map(Some)
                .map_err(|e| FactsError(e.to_string()));
        }
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

    fn middle_item(&self) -> Option<String> {
        let middle = self.saved.middle_key(b"i")?;
        String::from_utf8(middle.get(1..)?.to_vec()).ok()
    }
}
