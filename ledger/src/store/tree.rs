//! Each chain's Merkle tree, kept in sled beside its entries.
//!
//! Perfect subtrees of 64 leaves or more are stored (key `N`, chain, level,
//! index), written in the same atomic batch as the entries that complete
//! them: about one insert per 32 entries. Smaller subtrees are recomputed
//! from the entry hashes in the blocks, at most 63 of them. So any subtree,
//! root, inclusion or consistency proof costs O(log n) reads.

use super::{Ledger, StoreError, damaged};
use crate::entry::EntryHash;
use crate::merkle::{self, CompactRange, Hash, Subtrees};

/// Subtrees of this level and above are stored.
pub const STORED_LEVEL: u8 = 6;

pub fn node_key(chain: &str, level: u8, index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(12 + chain.len());
    key.push(b'N');
    key.extend_from_slice(&(chain.len() as u16).to_be_bytes());
    key.extend_from_slice(chain.as_bytes());
    key.push(level);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// A chain's tree as stored.
#[derive(Debug)]
pub struct StoredTree<'a> {
    pub ledger: &'a Ledger,
    pub chain: &'a str,
}

impl Subtrees for StoredTree<'_> {
    type Error = StoreError;

    fn perfect(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        if level >= STORED_LEVEL {
            let key = node_key(self.chain, level, index);
            let value = self
                .ledger
                .db
                .get(&key)?
                .ok_or_else(|| damaged(&key, "Merkle node missing"))?;
            return <[u8; 32]>::try_from(value.as_ref())
                .map_err(|_| damaged(&key, "Merkle node is not 32 bytes"));
        }
        let count = 1u64 << level;
        let start = index << level;
        let mut tree = merkle::MemoryTree::new();
        for record in self.ledger.records(self.chain, start)?.take(count as usize) {
            tree.push(merkle::leaf_hash(&record?.hash));
        }
        if tree.size() != count {
            return Err(damaged(
                format!("chain {} seq {start}", self.chain).as_bytes(),
                "fewer entries than the tree needs",
            ));
        }
        Ok(tree.root())
    }
}

impl Ledger {
    /// The compact range of a chain's tree at its head, computed once and
    /// then kept current by appends.
    pub(super) fn frontier(&mut self, chain: &str) -> Result<&mut CompactRange, StoreError> {
        self.needs_indexes()?;
        if !self.frontiers.contains_key(chain) {
            let size = self.head(chain).map_or(0, |h| h.next_seq);
            let range = CompactRange::of(
                &StoredTree {
                    ledger: self,
                    chain,
                },
                size,
            )?;
            self.frontiers.insert(chain.to_owned(), range);
        }
        self.frontiers
            .get_mut(chain)
            .ok_or_else(|| damaged(chain.as_bytes(), "frontier vanished"))
    }

    /// Adds leaves to a chain's tree: returns the node writes to put in the
    /// append batch, and the updated range (kept only once the batch is
    /// durable).
    pub(super) fn extend_tree(
        &mut self,
        chain: &str,
        hashes: impl Iterator<Item = EntryHash>,
        batch: &mut sled::Batch,
    ) -> Result<CompactRange, StoreError> {
        let mut range = self.frontier(chain)?.clone();
        for hash in hashes {
            for (level, index, node) in range.push(merkle::leaf_hash(&hash)) {
                if level >= STORED_LEVEL {
                    batch.insert(node_key(chain, level, index), node.to_vec());
                }
            }
        }
        Ok(range)
    }

    /// A chain's tree size and root at its head.
    pub fn tree_head(&mut self, chain: &str) -> Result<(u64, Hash), StoreError> {
        let range = self.frontier(chain)?;
        Ok((range.size(), range.root()))
    }

    /// The root of a chain's tree at an earlier size.
    pub fn tree_root_at(&self, chain: &str, size: u64) -> Result<Hash, StoreError> {
        self.needs_indexes()?;
        merkle::root(
            &StoredTree {
                ledger: self,
                chain,
            },
            size,
        )
    }

    /// The inclusion proof of entry `seq` in the chain's tree of `size`.
    pub fn inclusion_proof(
        &self,
        chain: &str,
        seq: u64,
        size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        self.needs_indexes()?;
        merkle::inclusion_proof(
            &StoredTree {
                ledger: self,
                chain,
            },
            seq,
            size,
        )
    }

    /// The consistency proof between two sizes of a chain's tree.
    pub fn consistency_proof(
        &self,
        chain: &str,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        self.needs_indexes()?;
        merkle::consistency_proof(
            &StoredTree {
                ledger: self,
                chain,
            },
            old_size,
            new_size,
        )
    }
}
