//! Writing export bundles from the store.

use std::collections::BTreeMap;
use std::io::Write;

use jiff::Timestamp;

use super::{Ledger, StoreError, damaged};
use crate::bundle::{Record, Writer};
use crate::checkpoint::read_unverified;
use crate::projection::{POLICY_CHAIN, account_key};

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportScope {
    /// Every chain, every entry, every checkpoint.
    Full,
    /// Entries `from..=to` of one chain, each with an inclusion proof.
    Range { chain: String, from: u64, to: u64 },
    /// Every entry about one account (`APPID/UIN`) and its items, each with
    /// an inclusion proof.
    Account(String),
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub entries: u64,
    pub checkpoints: u64,
    pub policies: u64,
    /// Entries in scope left out because no checkpoint covers them yet.
    pub unvouched: u64,
}

fn io(e: std::io::Error) -> StoreError {
    damaged(b"export", e.to_string())
}

impl Ledger {
    /// Writes a bundle of `scope` to `out`.
    pub fn export(
        &self,
        scope: &ExportScope,
        out: impl Write,
        exported_at: Timestamp,
    ) -> Result<ExportSummary, StoreError> {
        let mut summary = ExportSummary::default();
        let notes = self.checkpoints()?;
        let scope_json = match scope {
            ExportScope::Full => serde_json::json!({"kind": "full"}),
            ExportScope::Range { chain, from, to } => {
                serde_json::json!({"kind": "range", "chain": chain, "from": from, "to": to})
            }
            ExportScope::Account(a) => serde_json::json!({"kind": "account", "account": a}),
        };
        let manifest = serde_json::json!({
            "format": "lifeledger bundle v1",
            "origin": self.origin().ok(),
            "exported_at": exported_at.to_string(),
            "scope": scope_json,
        });
        let mut w = Writer::new(out).map_err(io)?;
        w.write(&Record::Manifest(manifest.to_string().into_bytes()))
            .map_err(io)?;
        if let Some(key) = self.signer()? {
            w.write(&Record::PublicKey(key.to_string())).map_err(io)?;
        }
        // Sizes each chain was checkpointed at, oldest first.
        let mut sizes: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for note in &notes {
            if let Ok(c) = read_unverified(note) {
                for cr in c.chains {
                    sizes.entry(cr.chain).or_default().push(cr.size);
                }
            }
        }
        let policy_size = sizes
            .get(POLICY_CHAIN)
            .and_then(|l| l.last().copied())
            .unwrap_or(0);
        // Policy texts are evidence only beside the entries that publish
        // them: a partial bundle carries the vouched publications of chain
        // `policy` (below) and the texts they name; a full one all of both.
        let partial = *scope != ExportScope::Full;
        let vouched_publications = if partial {
            Some(self.published_hashes(policy_size)?)
        } else {
            None
        };
        for text in self.policy_texts()? {
            let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
            if vouched_publications
                .as_ref()
                .is_some_and(|p| !p.contains(&hash))
            {
                continue;
            }
            w.write(&Record::Policy(text.into_bytes())).map_err(io)?;
            summary.policies += 1;
        }
        for note in &notes {
            w.write(&Record::Checkpoint(note.clone())).map_err(io)?;
            summary.checkpoints += 1;
        }
        for (chain, list) in &mut sizes {
            list.dedup();
            for pair in list.windows(2) {
                if pair[0] < pair[1] {
                    let proof = self.consistency_proof(chain, pair[0], pair[1])?;
                    w.write(&Record::Consistency {
                        chain: chain.clone(),
                        old_size: pair[0],
                        new_size: pair[1],
                        proof,
                    })
                    .map_err(io)?;
                }
            }
        }
        let latest_size = |chain: &str| {
            sizes
                .get(chain)
                .and_then(|l| l.last().copied())
                .unwrap_or(0)
        };
        match scope {
            ExportScope::Full => {
                for chain in self.chain_names()? {
                    for record in self.records(&chain, 0)? {
                        let record = record?;
                        w.write(&Record::Entry {
                            hash: record.hash,
                            encoding: record.encoding,
                        })
                        .map_err(io)?;
                        summary.entries += 1;
                        if record.position >= latest_size(&chain) {
                            summary.unvouched += 1;
                        }
                    }
                }
            }
            ExportScope::Range { .. } | ExportScope::Account(_) => {
                let mut wanted: BTreeMap<String, Vec<u64>> = BTreeMap::new();
                match scope {
                    ExportScope::Range { chain, from, to } => {
                        let last = self.head(chain).and_then(|h| h.next_seq.checked_sub(1));
                        if let Some(last) = last {
                            wanted.insert(chain.clone(), (*from..=(*to).min(last)).collect());
                        }
                    }
                    ExportScope::Account(account) => {
                        use crate::projection::facts::Facts;
                        // Read one item at a time from the saved projection.
                        let projection = self.open_projection()?;
                        let facts = self.facts(&projection)?;
                        let mut add = |r: &crate::projection::EntryRef| {
                            wanted.entry(r.chain.clone()).or_default().push(r.seq)
                        };
                        let read = |e: crate::projection::facts::FactsError| {
                            damaged(account.as_bytes(), e.to_string())
                        };
                        if let Some(a) = facts.account(account).map_err(read)? {
                            a.entries().into_iter().for_each(&mut add);
                        }
                        facts
                            .each_item(&mut |item| {
                                if item.account.as_ref().map(account_key).as_deref()
                                    == Some(account.as_str())
                                {
                                    item.entries().into_iter().for_each(&mut add);
                                }
                            })
                            .map_err(read)?;
                    }
                    ExportScope::Full => {}
                }
                // The publications that the policy texts above need.
                wanted
                    .entry(POLICY_CHAIN.to_owned())
                    .or_default()
                    .extend(0..policy_size);
                for (chain, mut seqs) in wanted {
                    seqs.sort_unstable();
                    seqs.dedup();
                    self.write_sparse(&mut w, &chain, &seqs, latest_size(&chain), &mut summary)?;
                }
            }
        }
        w.finish().map_err(io)?;
        Ok(summary)
    }

    /// The policy hashes published by the first `size` entries of chain
    /// `policy`, in order of publication, each once.
    pub(crate) fn published_hashes(&self, size: u64) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for record in self.records(POLICY_CHAIN, 0)? {
            let record = record?;
            if record.position >= size {
                break;
            }
            let entry = crate::entry::Entry::decode(&record.encoding)
                .map_err(|e| damaged(POLICY_CHAIN.as_bytes(), e.to_string()))?;
            if let crate::entry::Body::Event { canonical, .. } = entry.body {
                if let Some(hash) = serde_json::from_slice::<serde_json::Value>(&canonical)
                    .ok()
                    .and_then(|v| v["kind"]["policy_hash"].as_str().map(str::to_owned))
                {
                    if !out.contains(&hash) {
                        out.push(hash);
                    }
                }
            }
        }
        Ok(out)
    }

    fn write_sparse<W: Write>(
        &self,
        w: &mut Writer<W>,
        chain: &str,
        seqs: &[u64],
        size: u64,
        summary: &mut ExportSummary,
    ) -> Result<(), StoreError> {
        for &seq in seqs {
            if seq >= size {
                summary.unvouched += 1;
                continue;
            }
            let Some(record) = self.records(chain, seq)?.next().transpose()? else {
                continue;
            };
            let proof = self.inclusion_proof(chain, seq, size)?;
            w.write(&Record::Entry {
                hash: record.hash,
                encoding: record.encoding,
            })
            .map_err(io)?;
            w.write(&Record::Inclusion {
                chain: chain.to_owned(),
                seq,
                size,
                proof,
            })
            .map_err(io)?;
            summary.entries += 1;
        }
        Ok(())
    }
}

impl Ledger {
    /// Evidence for one item: its entries and its account's, the policy
    /// publication that judges it, each with an inclusion proof against the
    /// latest checkpoint. `projection` must be caught up.
    pub fn prove_item(
        &self,
        item_id: &str,
        projection: &crate::projection::Projection,
    ) -> Result<crate::bundle::proof::ItemProof, StoreError> {
        use crate::bundle::proof::{ItemProof, PROOF_FORMAT, ProvenEntry};
        let missing = |what: &str| damaged(item_id.as_bytes(), what.to_owned());
        let note = self.checkpoints()?.pop().ok_or_else(|| {
            missing("no checkpoint yet: take one with `lifeledger checkpoint --key KEY`")
        })?;
        let checkpoint = read_unverified(&note).map_err(|e| missing(&e.to_string()))?;
        let size_of = |chain: &str| checkpoint.chain(chain).map_or(0, |c| c.size);
        use crate::projection::facts::Facts;
        let facts = self.facts(projection)?;
        let facts_error = |e: crate::projection::facts::FactsError| missing(&e.to_string());
        let item = facts
            .item(item_id)
            .map_err(facts_error)?
            .ok_or_else(|| missing("no such item in the ledger"))?;
        let prove = |r: &crate::projection::EntryRef| -> Result<ProvenEntry, StoreError> {
            let size = size_of(&r.chain);
            if r.seq >= size {
                return Err(damaged(
                    format!("{} seq {}", r.chain, r.seq).as_bytes(),
                    "entry is newer than the latest checkpoint: take a checkpoint first",
                ));
            }
            let record = self
                .records(&r.chain, r.seq)?
                .next()
                .transpose()?
                .ok_or_else(|| damaged(r.chain.as_bytes(), "entry missing"))?;
            Ok(ProvenEntry {
                chain: r.chain.clone(),
                seq: r.seq,
                hash: record.hash.to_hex(),
                encoding: hex::encode(&record.encoding),
                tree_size: size,
                inclusion_proof: self
                    .inclusion_proof(&r.chain, r.seq, size)?
                    .iter()
                    .map(hex::encode)
                    .collect(),
            })
        };
        let account = facts.account_of(&item).map_err(facts_error)?;
        let entries = item
            .entries_with(account.as_deref())
            .into_iter()
            .map(prove)
            .collect::<Result<Vec<_>, _>>()?;
        let (published, policy_text) = projection
            .policies
            .iter()
            .rev()
            .filter(|p| p.at.seq < size_of(&p.at.chain))
            .find_map(|p| self.policy_text(&p.hash).ok().flatten().map(|t| (p, t)))
            .ok_or_else(|| {
                missing("no policy with its text is covered by the latest checkpoint")
            })?;
        let public_key = self
            .signer()?
            .ok_or_else(|| missing("no signer key recorded"))?
            .to_string();
        Ok(ItemProof {
            format: PROOF_FORMAT.to_owned(),
            item_id: item_id.to_owned(),
            public_key,
            checkpoint: note,
            policy_text,
            policy_entry: prove(&published.at)?,
            entries,
        })
    }
}
