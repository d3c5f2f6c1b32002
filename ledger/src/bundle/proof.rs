//! Per-item evidence: a proof file holding an item's entries (and its
//! account's, and the policy publication that judged it), each with an
//! inclusion proof against one signed checkpoint. Verified offline, it
//! yields the item's deadline and verdict recomputed from the file alone.
//! Pure.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::{NoteError, PublicKey, verify_note};
use crate::entry::{Entry, EntryHash};
use crate::merkle::{self, Hash};
use crate::policy::Policy;
use crate::projection::verdict::{ItemVerdict, judge};
use crate::projection::{Projection, account_key};

pub const PROOF_FORMAT: &str = "lifeledger item proof v1";

/// One entry with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenEntry {
    pub chain: String,
    pub seq: u64,
    /// Lowercase hex of the entry hash.
    pub hash: String,
    /// Lowercase hex of the entry encoding (FORMAT.md).
    pub encoding: String,
    /// The tree size the proof is against (the checkpoint's, for the chain).
    pub tree_size: u64,
    /// Lowercase hex hashes, RFC 9162 order.
    pub inclusion_proof: Vec<String>,
}

/// The proof file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemProof {
    pub format: String,
    pub item_id: String,
    pub public_key: String,
    /// The signed checkpoint note every proof is against.
    pub checkpoint: String,
    /// The text of the policy that judged the item.
    pub policy_text: String,
    /// The `policy_published` entry of that policy.
    pub policy_entry: ProvenEntry,
    /// The item's entries and its account's, in ledger order.
    pub entries: Vec<ProvenEntry>,
}

/// Why a proof file does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("not a proof file: {0}")]
    Malformed(String),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] NoteError),
    #[error("chain {chain:?} seq {seq}: {why}")]
    Entry {
        chain: String,
        seq: u64,
        why: String,
    },
    #[error("the policy text does not match the published policy: {0}")]
    Policy(String),
}

/// What a verified proof shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProofReport {
    pub item_id: String,
    pub checkpoint_time: jiff::Timestamp,
    pub entries_proven: usize,
    pub policy_version: String,
    pub verdict: Option<ItemVerdict>,
}

fn hex32(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn check_entry(e: &ProvenEntry, roots: &[(String, u64, Hash)]) -> Result<Entry, ProofError> {
    let fail = |why: String| ProofError::Entry {
        chain: e.chain.clone(),
        seq: e.seq,
        why,
    };
    let encoding = hex::decode(&e.encoding).map_err(|_| fail("encoding is not hex".into()))?;
    let hash = EntryHash::of_encoding(&encoding);
    if Some(hash.0) != hex32(&e.hash) {
        return Err(fail("the entry's bytes do not hash to its hash".into()));
    }
    let entry = Entry::decode(&encoding).map_err(|err| fail(format!("does not decode: {err}")))?;
    if entry.chain != e.chain || entry.seq != e.seq {
        return Err(fail(format!(
            "the entry is chain {:?} seq {}",
            entry.chain, entry.seq
        )));
    }
    let Some((_, _, root)) = roots
        .iter()
        .find(|(c, s, _)| *c == e.chain && *s == e.tree_size)
    else {
        return Err(fail(format!(
            "the checkpoint has no tree of size {} for this chain",
            e.tree_size
        )));
    };
    let proof: Vec<Hash> = e
        .inclusion_proof
        .iter()
        .map(|h| hex32(h).ok_or_else(|| fail("a proof hash is not 32 bytes of hex".into())))
        .collect::<Result<_, _>>()?;
    merkle::verify_inclusion(e.seq, e.tree_size, &merkle::leaf_hash(&hash), &proof, root)
        .map_err(|err| fail(format!("inclusion proof fails: {err}")))?;
    Ok(entry)
}

/// Verifies a proof file with `key` and recomputes the item's verdict as of
/// `as_of` (default: the checkpoint's time).
pub fn verify_item_proof(
    json: &[u8],
    key: &PublicKey,
    as_of: Option<jiff::Timestamp>,
) -> Result<ProofReport, ProofError> {
    let proof: ItemProof =
        serde_json::from_slice(json).map_err(|e| ProofError::Malformed(e.to_string()))?;
    if proof.format != PROOF_FORMAT {
        return Err(ProofError::Malformed(format!(
            "format {:?}, expected {PROOF_FORMAT:?}",
            proof.format
        )));
    }
    let checkpoint = verify_note(&proof.checkpoint, key)?;
    let roots: Vec<(String, u64, Hash)> = checkpoint
        .chains
        .iter()
        .map(|c| (c.chain.clone(), c.size, c.root))
        .collect();

    // The policy: its publication is in the log, and the text is the one
    // whose hash was published.
    let policy_entry = check_entry(&proof.policy_entry, &roots)?;
    let published: serde_json::Value = match &policy_entry.body {
        crate::entry::Body::Event { canonical, .. } => {
            serde_json::from_slice(canonical).map_err(|e| ProofError::Policy(e.to_string()))?
        }
        crate::entry::Body::Rejected { .. } => {
            return Err(ProofError::Policy("the policy entry is a rejection".into()));
        }
    };
    let policy =
        Policy::parse(&proof.policy_text).map_err(|e| ProofError::Policy(e.to_string()))?;
    if published["kind"]["type"] != "policy_published"
        || published["kind"]["policy_hash"] != policy.hash.as_str()
    {
        return Err(ProofError::Policy(format!(
            "the text hashes to {}, the entry publishes {}",
            policy.hash, published["kind"]["policy_hash"]
        )));
    }

    // The entries come once each, in ledger order (chain name, then seq):
    // a file with an entry repeated or moved is not the one the prover
    // wrote, whatever each entry's own proof says.
    for pair in proof.entries.windows(2) {
        if (pair[0].chain.as_str(), pair[0].seq) >= (pair[1].chain.as_str(), pair[1].seq) {
            return Err(ProofError::Entry {
                chain: pair[1].chain.clone(),
                seq: pair[1].seq,
                why: format!(
                    "entries must come once each in (chain, seq) order; it follows chain {:?} seq {}",
                    pair[0].chain, pair[0].seq
                ),
            });
        }
    }
    if policy_entry.chain != "policy" {
        return Err(ProofError::Policy(format!(
            "the publication is on chain {:?}; only chain \"policy\" publishes policies",
            policy_entry.chain
        )));
    }

    let mut projection = Projection::default();
    for e in &proof.entries {
        let entry = check_entry(e, &roots)?;
        projection
            .fold_entry(&entry)
            .map_err(|err| ProofError::Entry {
                chain: e.chain.clone(),
                seq: e.seq,
                why: err.to_string(),
            })?;
    }
    let as_of = as_of.unwrap_or(checkpoint.time);
    let verdict = projection.items.get(&proof.item_id).and_then(|item| {
        let account = item
            .account
            .as_ref()
            .and_then(|a| projection.accounts.get(&account_key(a)));
        judge(item, account, &policy, as_of)
    });
    Ok(ProofReport {
        item_id: proof.item_id,
        checkpoint_time: checkpoint.time,
        entries_proven: proof.entries.len() + 1,
        policy_version: policy.version,
        verdict,
    })
}
