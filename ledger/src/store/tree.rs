//! Each chain's Merkle tree: roots, inclusion and consistency proofs from
//! the stored subtrees.
//!
//! Perfect subtrees of 64 leaves or more are stored in the tree files
//! (`tree_files`), written after the entries that complete them are
//! acknowledged: about one node per 32 entries. Smaller subtrees are
//! recomputed from the entry hashes, at most 63 of them. So any subtree,
//! root, inclusion or consistency proof costs O(log n) reads, and a reader
//! reads the files in place. A node the files do not hold (the writer has
//! not written it yet, a crash lost it, an older release kept it in the
//! index) is computed from its children while the files hold the
//! subtree's last block of 64, from its leaves otherwise.

use super::tree_files::Node;
use super::{Ledger, StoreError, damaged, io_error};
use crate::entry::EntryHash;
use crate::merkle::{self, CompactRange, Hash, Subtrees};

/// Subtrees of this level and above are stored.
pub const STORED_LEVEL: u8 = 6;

/// A chain's tree as stored.
#[derive(Debug)]
pub struct StoredTree<'a> {
    ledger: &'a Ledger,
    chain: &'a str,
    /// The leaves of the last block of 64 read: a proof's subtrees under
    /// the stored level all lie in its leaf's block, read once.
    block: std::cell::RefCell<Option<(u64, Vec<Hash>)>>,
}

impl<'a> StoredTree<'a> {
    pub fn new(ledger: &'a Ledger, chain: &'a str) -> Self {
        StoredTree {
            ledger,
            chain,
            block: std::cell::RefCell::new(None),
        }
    }

    /// A subtree under the stored level, from its block's leaves.
    fn small(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        let start = index << level;
        let block = start >> STORED_LEVEL;
        let mut cached = self.block.borrow_mut();
        if cached.as_ref().is_none_or(|(b, _)| *b != block) {
            let leaves = self.leaves(block << STORED_LEVEL, 1 << STORED_LEVEL)?;
            *cached = Some((block, leaves));
        }
        let leaves = cached.as_ref().map_or(&[][..], |(_, l)| l.as_slice());
        let from = (start - (block << STORED_LEVEL)) as usize;
        let wanted = leaves
            .get(from..from + (1usize << level))
            .ok_or_else(|| self.fewer_entries(start))?;
        Ok(merkle::MemoryTree::from_leaves(wanted.iter().copied()).root())
    }

    /// The leaves of up to `count` entries from seq `start` (fewer at the
    /// chain's end).
    fn leaves(&self, start: u64, count: u64) -> Result<Vec<Hash>, StoreError> {
        self.ledger
            .records(self.chain, start)?
            .take(count as usize)
            .map(|record| Ok(merkle::leaf_hash(&record?.hash)))
            .collect()
    }

    fn fewer_entries(&self, start: u64) -> StoreError {
        damaged(
            format!("chain {} seq {start}", self.chain).as_bytes(),
            "fewer entries than the tree needs",
        )
    }

    fn stored(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError> {
        let files = &self.ledger.tree_files;
        files
            .read(self.chain, level, index)
            .map_err(io_error(&files.level_file(self.chain, level)))
    }

    /// A subtree's root from its leaves, read in one pass.
    fn root_from_leaves(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        let count = 1u64 << level;
        let start = index << level;
        let leaves = self.leaves(start, count)?;
        if leaves.len() as u64 != count {
            return Err(self.fewer_entries(start));
        }
        Ok(merkle::MemoryTree::from_leaves(leaves).root())
    }
}

impl Subtrees for StoredTree<'_> {
    type Error = StoreError;

    fn perfect(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        if level < STORED_LEVEL {
            return self.small(level, index);
        }
        if let Some(node) = self.stored(level, index)? {
            return Ok(node);
        }
        // Children pay while the files hold this subtree's blocks (a
        // writer a batch behind the manifest); otherwise one pass over
        // the leaves beats a lookup per block.
        let last_block = ((index + 1) << (level - STORED_LEVEL)) - 1;
        if level > STORED_LEVEL && self.stored(STORED_LEVEL, last_block)?.is_some() {
            let left = self.perfect(level - 1, 2 * index)?;
            let right = self.perfect(level - 1, 2 * index + 1)?;
            return Ok(merkle::node_hash(&left, &right));
        }
        self.root_from_leaves(level, index)
    }
}

impl Ledger {
    /// The compact range of a chain's tree at its head, computed once and
    /// then kept current by appends.
    pub(super) fn frontier(&mut self, chain: &str) -> Result<&mut CompactRange, StoreError> {
        if !self.frontiers.contains_key(chain) {
            let size = self.head(chain).map_or(0, |h| h.next_seq);
            let range = CompactRange::of(&StoredTree::new(self, chain), size)?;
            self.frontiers.insert(chain.to_owned(), range);
        }
        self.frontiers
            .get_mut(chain)
            .ok_or_else(|| damaged(chain.as_bytes(), "frontier vanished"))
    }

    /// Adds leaves to a chain's tree: returns the subtrees to store (once
    /// the entries are acknowledged), and the updated range (kept only
    /// then too).
    pub(super) fn extend_tree(
        &mut self,
        chain: &str,
        hashes: impl Iterator<Item = EntryHash>,
    ) -> Result<(CompactRange, Vec<Node>), StoreError> {
        let mut range = self.frontier(chain)?.clone();
        let mut nodes = Vec::new();
        for hash in hashes {
            push_leaf(&mut range, merkle::leaf_hash(&hash), &mut nodes);
        }
        Ok((range, nodes))
    }

    /// Stores the subtrees an append or a derivation completed.
    pub(super) fn store_subtrees(&self, chain: &str, nodes: &[Node]) -> Result<(), StoreError> {
        self.tree_files
            .write(chain, nodes)
            .map_err(io_error(&self.tree_files.chain_dir(chain)))
    }

    /// A chain's tree size and root at its head.
    pub fn tree_head(&mut self, chain: &str) -> Result<(u64, Hash), StoreError> {
        let range = self.frontier(chain)?;
        Ok((range.size(), range.root()))
    }

    /// The root of a chain's tree at an earlier size.
    pub fn tree_root_at(&self, chain: &str, size: u64) -> Result<Hash, StoreError> {
        merkle::root(&StoredTree::new(self, chain), size)
    }

    /// The inclusion proof of entry `seq` in the chain's tree of `size`.
    pub fn inclusion_proof(
        &self,
        chain: &str,
        seq: u64,
        size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        merkle::inclusion_proof(&StoredTree::new(self, chain), seq, size)
    }

    /// The consistency proof between two sizes of a chain's tree.
    pub fn consistency_proof(
        &self,
        chain: &str,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        merkle::consistency_proof(&StoredTree::new(self, chain), old_size, new_size)
    }
}

/// Pushes one entry's leaf onto a range, keeping the subtrees to store.
pub(super) fn push_leaf(range: &mut CompactRange, leaf: Hash, nodes: &mut Vec<Node>) {
    nodes.extend(
        range
            .push(leaf)
            .into_iter()
            .filter(|(level, _, _)| *level >= STORED_LEVEL),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use std::os::unix::fs::FileExt;

    use super::super::test_events::{event, incoming};
    use super::super::tree_files::{TREE_DIR, TreeFiles};
    use super::*;
    use crate::{Incoming, LedgerOptions, ReadOnlyLedger};

    const CHAINS: [&str; 2] = ["file", "kafka:t/3"];

    /// A writer's ledger of 2 chains, 5,000 entries each, in batches of
    /// various sizes.
    fn ledger(dir: &std::path::Path) -> Ledger {
        let mut ledger = Ledger::open(dir, LedgerOptions::default()).unwrap();
        let mut i = 0;
        for size in [1, 63, 64, 700, 1_172, 3_000] {
            for chain in CHAINS {
                let inputs: Vec<Incoming> = (i..i + size).map(|n| incoming(n, event(n))).collect();
                ledger
                    .append(chain, inputs, jiff::Timestamp::now())
                    .unwrap();
                i += size;
            }
        }
        ledger
    }

    /// Roots and proofs at several sizes, computed in memory from the
    /// entries: what the stored tree must answer.
    fn expected(ledger: &Ledger, chain: &str) -> Vec<(u64, Hash, Vec<Hash>)> {
        let leaves: Vec<Hash> = ledger
            .snapshot()
            .records(chain, 0)
            .map(|r| merkle::leaf_hash(&r.unwrap().hash))
            .collect();
        [1u64, 64, 65, 4_095, 4_096, 4_097, leaves.len() as u64]
            .into_iter()
            .map(|size| {
                let tree = merkle::MemoryTree::from_leaves(leaves[..size as usize].to_vec());
                let seq = size / 3;
                let proof = merkle::inclusion_proof(&tree, seq, size).unwrap();
                (size, tree.root(), proof)
            })
            .collect()
    }

    fn answers(ledger: &Ledger, chain: &str) -> Vec<(u64, Hash, Vec<Hash>)> {
        expected(ledger, chain)
            .into_iter()
            .map(|(size, _, _)| {
                let root = ledger.tree_root_at(chain, size).unwrap();
                let proof = ledger.inclusion_proof(chain, size / 3, size).unwrap();
                (size, root, proof)
            })
            .collect()
    }

    fn tree_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = walk(&dir.join(TREE_DIR))
            .into_iter()
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
        found
    }

    #[test]
    fn readers_answer_from_the_files_and_compute_what_they_lack() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = ledger(tmp.path());
        let written = tree_bytes(tmp.path());
        assert!(!written.is_empty());
        for chain in CHAINS {
            assert_eq!(answers(&writer, chain), expected(&writer, chain));
        }
        drop(writer);
        let reader = ReadOnlyLedger::open(tmp.path()).unwrap();
        for chain in CHAINS {
            assert_eq!(answers(&reader, chain), expected(&reader, chain));
        }

        // A crash lost the files' tails, a power loss zeroed a node, a
        // level is gone: a reader computes the missing nodes, and reads
        // nothing wrong.
        let files = TreeFiles::writer(tmp.path());
        let level6 = files.level_file("file", 6);
        let len = std::fs::metadata(&level6).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&level6)
            .unwrap()
            .set_len(len / 2 + 5)
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(files.level_file("file", 8))
            .unwrap()
            .write_all_at(&[0; 32], 32)
            .unwrap();
        std::fs::remove_file(files.level_file("kafka:t/3", 10)).unwrap();
        for chain in CHAINS {
            assert_eq!(answers(&reader, chain), expected(&reader, chain));
        }
        drop(reader);
        assert_ne!(tree_bytes(tmp.path()), written);

        // The next writer writes them again.
        let writer = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
        assert_eq!(tree_bytes(tmp.path()), written);
        for chain in CHAINS {
            assert_eq!(answers(&writer, chain), expected(&writer, chain));
        }
    }

    #[test]
    fn subtrees_an_older_release_kept_in_the_index_move_to_the_files() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = ledger(tmp.path());
        let written = tree_bytes(tmp.path());
        // As an older release left it: the subtrees in the index, no files.
        writer
            .db
            .insert(b"N\x00\x04file\x06\x00", &[1u8; 32][..])
            .unwrap();
        writer.db.flush().unwrap();
        drop(writer);
        std::fs::remove_dir_all(tmp.path().join(TREE_DIR)).unwrap();
        let reader = ReadOnlyLedger::open(tmp.path()).unwrap();
        for chain in CHAINS {
            assert_eq!(answers(&reader, chain), expected(&reader, chain));
        }
        drop(reader);

        let writer = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
        assert_eq!(writer.db.scan_prefix(b"N").count(), 0);
        assert_eq!(tree_bytes(tmp.path()), written);
        for chain in CHAINS {
            assert_eq!(answers(&writer, chain), expected(&writer, chain));
        }
    }
}
