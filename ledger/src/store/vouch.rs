//! Checking a ledger directory's signed checkpoints against its segments,
//! without the index: each checkpoint's signature, and every chain root it
//! states recomputed from the entries (one pass per chain, however many
//! checkpoints there are).

use std::collections::{BTreeMap, BTreeSet};

use super::{Snapshot, StoreError};
use crate::checkpoint::{Checkpoint, PublicKey, verify_note};
use crate::merkle::{self, CompactRange, Hash};

/// What was found of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    /// Its number (its place among the directory's checkpoints, from 0).
    pub number: u64,
    /// What it says, if its signature holds.
    pub checkpoint: Option<Checkpoint>,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
}

impl Snapshot {
    /// Roots of a chain's tree at each of `sizes` (each at most the chain's
    /// size), from the segments in one pass.
    pub fn tree_roots(
        &self,
        chain: &str,
        sizes: &BTreeSet<u64>,
    ) -> Result<BTreeMap<u64, Hash>, StoreError> {
        let mut roots = BTreeMap::new();
        let mut range = CompactRange::default();
        let mut wanted = sizes.iter().copied().peekable();
        while wanted.peek() == Some(&0) {
            roots.insert(0, range.root());
            wanted.next();
        }
        if wanted.peek().is_none() {
            return Ok(roots);
        }
        for record in self.records(chain, 0) {
            range.push(merkle::leaf_hash(&record?.hash));
            while wanted.peek() == Some(&range.size()) {
                roots.insert(range.size(), range.root());
                wanted.next();
            }
            if wanted.peek().is_none() {
                break;
            }
        }
        Ok(roots)
    }

    /// Checks `notes` (oldest first) against `key` and this directory's
    /// chains: each signature, each chain size (within the chain) and each
    /// chain root (recomputed). Checkpoints must not shrink a chain.
    pub fn vouch(&self, notes: &[String], key: &PublicKey) -> Result<Vec<Vouched>, StoreError> {
        let mut found: Vec<Vouched> = notes
            .iter()
            .enumerate()
            .map(|(n, note)| match verify_note(note, key) {
                Ok(c) => Vouched {
                    number: n as u64,
                    checkpoint: Some(c),
                    problem: None,
                },
                Err(e) => Vouched {
                    number: n as u64,
                    checkpoint: None,
                    problem: Some(format!("signature: {e}")),
                },
            })
            .collect();
        let mut sizes: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for v in &found {
            for c in v.checkpoint.iter().flat_map(|c| &c.chains) {
                let have = self.head(&c.chain).map_or(0, |h| h.next_seq);
                if c.size <= have {
                    sizes.entry(c.chain.clone()).or_default().insert(c.size);
                }
            }
        }
        let mut roots = BTreeMap::new();
        for (chain, wanted) in &sizes {
            roots.insert(chain.clone(), self.tree_roots(chain, wanted)?);
        }
        let mut largest: BTreeMap<String, u64> = BTreeMap::new();
        for v in &mut found {
            let Some(checkpoint) = &v.checkpoint else {
                continue;
            };
            let mut problems = Vec::new();
            for c in &checkpoint.chains {
                let have = self.head(&c.chain).map_or(0, |h| h.next_seq);
                if c.size > have {
                    problems.push(format!(
                        "chain {:?}: signs {} entries, the directory holds {have}",
                        c.chain, c.size
                    ));
                    continue;
                }
                match roots.get(&c.chain).and_then(|r| r.get(&c.size)) {
                    Some(root) if *root == c.root => {}
                    _ => problems.push(format!(
                        "chain {:?}: the root of its first {} entries differs from the one signed",
                        c.chain, c.size
                    )),
                }
                let before = largest.entry(c.chain.clone()).or_insert(0);
                if c.size < *before {
                    problems.push(format!(
                        "chain {:?}: {} entries, fewer than an earlier checkpoint's {before}",
                        c.chain, c.size
                    ));
                }
                *before = (*before).max(c.size);
            }
            if !problems.is_empty() {
                v.problem = Some(problems.join("; "));
            }
        }
        Ok(found)
    }
}
