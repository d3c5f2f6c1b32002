//! Keeping the projection in sled beside the chains, and catching it up.
//!
//! The projection is derived data: it lives in its own sled tree, records
//! per chain the seq it covers, and can always be rebuilt from the chains.
//! Its changes and its cursor move together in one atomic batch, so a crash
//! leaves it at some earlier cursor, from which catching up continues.

use super::{Ledger, StoreError};
use crate::intake::LedgerRecord;
use crate::policy::Policy;
use crate::projection::{Projection, ProjectionError, PublishedPolicy};

const TREE: &str = "projection";
/// Entries folded between two saves while catching up.
const SAVE_EVERY: u64 = 50_000;

fn codec_error(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged {
        key: format!("projection {}", String::from_utf8_lossy(key)),
        detail: e.to_string(),
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| codec_error(b"(encode)", e))
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| codec_error(key, e))
}

fn key(prefix: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(prefix);
    k.extend_from_slice(name.as_bytes());
    k
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
    /// The projection as last saved (empty if never built).
    pub fn load_projection(&self) -> Result<Projection, StoreError> {
        let tree = self.db.open_tree(TREE)?;
        let mut projection = Projection::default();
        for kv in tree.iter() {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            match k.first() {
                Some(b'c') => {
                    let seq: [u8; 8] = v
                        .as_ref()
                        .try_into()
                        .map_err(|_| codec_error(&k, "cursor is not 8 bytes"))?;
                    projection.covered.insert(name, u64::from_be_bytes(seq));
                }
                Some(b'i') => {
                    projection.items.insert(name, decode(&k, &v)?);
                }
                Some(b'a') => {
                    projection.accounts.insert(name, decode(&k, &v)?);
                }
                Some(b'p') => projection.policies = decode(&k, &v)?,
                Some(b'm') => projection.imports = decode(&k, &v)?,
                _ => return Err(codec_error(&k, "unknown projection key")),
            }
        }
        Ok(projection)
    }

    /// The saved projection, or, when it cannot be read (saved by an older
    /// build, or damaged), a new one rebuilt from the chains: it is
    /// derived data, and the chains are the record.
    pub fn load_or_rebuild_projection(
        &mut self,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Projection, StoreError> {
        match self.load_projection() {
            Err(StoreError::Damaged { key, detail }) if key.starts_with("projection") => {
                tracing::warn!(
                    "the saved projection cannot be read ({key}: {detail}); rebuilding it from the chains"
                );
                self.rebuild_projection(progress)
            }
            other => other,
        }
    }

    /// Saves what changed in the projection, and its cursors, atomically and
    /// durably.
    pub fn save_projection(&mut self, projection: &mut Projection) -> Result<(), StoreError> {
        let tree = self.db.open_tree(TREE)?;
        let dirty = projection.take_dirty();
        let mut batch = sled::Batch::default();
        for item in &dirty.items {
            if let Some(state) = projection.items.get(item) {
                batch.insert(key(b'i', item), encode(state)?);
            }
        }
        for account in &dirty.accounts {
            if let Some(state) = projection.accounts.get(account) {
                batch.insert(key(b'a', account), encode(state)?);
            }
        }
        if dirty.policies {
            batch.insert(key(b'p', ""), encode(&projection.policies)?);
            batch.insert(key(b'm', ""), encode(&projection.imports)?);
        }
        for (chain, seq) in &projection.covered {
            batch.insert(key(b'c', chain), seq.to_be_bytes().to_vec());
        }
        tree.apply_batch(batch)?;
        self.make_durable()
    }

    /// Folds every entry the projection has not yet seen into it, saving as
    /// it goes. Returns the number of entries folded.
    pub fn catch_up(
        &mut self,
        projection: &mut Projection,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError> {
        let mut folded = 0u64;
        for chain in self.chain_names()? {
            // In windows, so that memory stays bounded and progress is saved.
            loop {
                let from = projection.next_seq(&chain);
                let window: Vec<_> = self
                    .entries(&chain, from, from.saturating_add(SAVE_EVERY - 1))?
                    .collect::<Result<_, _>>()?;
                if window.is_empty() {
                    break;
                }
                for (_, entry) in &window {
                    projection.apply(entry)?;
                }
                folded += window.len() as u64;
                self.save_projection(projection)?;
                progress(folded);
            }
        }
        progress(folded);
        Ok(folded)
    }

    /// Drops the saved projection and folds every chain again from seq 0.
    pub fn rebuild_projection(
        &mut self,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Projection, StoreError> {
        self.db.drop_tree(TREE)?;
        let mut projection = Projection::default();
        self.catch_up(&mut projection, progress)?;
        Ok(projection)
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
