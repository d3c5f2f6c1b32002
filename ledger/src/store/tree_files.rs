//! Each chain's stored Merkle subtrees, in files of their own, so that a
//! reader answers roots and proofs from them in place: no index to copy,
//! no lock to take.
//!
//! `DIR/tree/c-CHAIN/level-LL` holds the chain's perfect subtrees of
//! level `LL` (6 and up: 64 leaves and more), node `i` at byte `32 × i`.
//! Like every index they are derived, written after the manifest
//! acknowledges the entries they cover and not fsynced: a crash can leave
//! a file short, or (a power loss) a range of it zeroed. So a node is
//! taken only if its file holds all 32 bytes of it and they are not all
//! zero (a BLAKE3 output of 32 zero bytes has never been seen, and would
//! only cost a recomputation); a missing node is computed again from its
//! children or its leaves (`tree::StoredTree`), and a writer opening the
//! ledger derives the files again from the first node missing
//! ([`TreeFiles::covered`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::segment::chain_dir_name;
use super::tree::STORED_LEVEL;
use crate::merkle::Hash;

/// The tree files' directory under a ledger directory.
pub const TREE_DIR: &str = "tree";

const NODE: u64 = 32;

/// A subtree of a chain: level, index, root.
pub type Node = (u8, u64, Hash);

/// One ledger's tree files. A reader's never writes: its `write`,
/// `truncate` and `remove_*` do nothing (what it derives stays in memory).
#[derive(Debug, Clone)]
pub struct TreeFiles {
    dir: PathBuf,
    writable: bool,
}

impl TreeFiles {
    pub fn writer(ledger_dir: &Path) -> Self {
        TreeFiles {
            dir: ledger_dir.join(TREE_DIR),
            writable: true,
        }
    }

    pub fn reader(ledger_dir: &Path) -> Self {
        TreeFiles {
            dir: ledger_dir.join(TREE_DIR),
            writable: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn chain_dir(&self, chain: &str) -> PathBuf {
        self.dir.join(chain_dir_name(chain))
    }

    pub fn level_file(&self, chain: &str, level: u8) -> PathBuf {
        self.chain_dir(chain).join(format!("level-{level:02}"))
    }

    /// The stored subtree, if its file holds it whole and not zeroed.
    pub fn read(&self, chain: &str, level: u8, index: u64) -> std::io::Result<Option<Hash>> {
        let file = match File::open(self.level_file(chain, level)) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut node = [0u8; NODE as usize];
        let Some(offset) = index.checked_mul(NODE) else {
            return Ok(None);
        };
        match file.read_exact_at(&mut node, offset) {
            Ok(()) => Ok((node != [0; NODE as usize]).then_some(node)),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes subtrees of one chain (each at its place; consecutive ones
    /// of a level in one write).
    pub fn write(&self, chain: &str, nodes: &[Node]) -> std::io::Result<()> {
        if !self.writable || nodes.is_empty() {
            return Ok(());
        }
        let mut by_level: HashMap<u8, Vec<(u64, Hash)>> = HashMap::new();
        for &(level, index, hash) in nodes {
            by_level.entry(level).or_default().push((index, hash));
        }
        std::fs::create_dir_all(self.chain_dir(chain))?;
        for (level, mut level_nodes) in by_level {
            level_nodes.sort_unstable_by_key(|(index, _)| *index);
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.level_file(chain, level))?;
            for run in level_nodes.chunk_by(|(a, _), (b, _)| *b == a + 1) {
                let bytes: Vec<u8> = run.iter().flat_map(|(_, hash)| *hash).collect();
                file.write_all_at(&bytes, run[0].0 * NODE)?;
            }
        }
        Ok(())
    }

    /// How many of a chain's first `upto` leaves the files cover: every
    /// subtree those leaves complete is stored, whole and not zeroed.
    pub fn covered(&self, chain: &str, upto: u64) -> std::io::Result<u64> {
        let mut covered = upto;
        for level in STORED_LEVEL..64 {
            if (1u64 << level) > upto {
                break;
            }
            let present = self.leading_nodes(chain, level)?;
            // Leaves up to the next subtree of this level, which is missing.
            let bound = present
                .saturating_add(1)
                .saturating_mul(1u64 << level)
                .saturating_sub(1);
            covered = covered.min(bound);
        }
        Ok(covered)
    }

    /// How many nodes a level's file holds before its first missing one.
    fn leading_nodes(&self, chain: &str, level: u8) -> std::io::Result<u64> {
        let mut file = match File::open(self.level_file(chain, level)) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut present = 0u64;
        let mut buffer = vec![0u8; 1 << 20];
        let mut filled = 0usize;
        loop {
            let read = file.read(&mut buffer[filled..])?;
            filled += read;
            let whole = filled / NODE as usize * NODE as usize;
            for node in buffer[..whole].chunks_exact(NODE as usize) {
                if node.iter().all(|b| *b == 0) {
                    return Ok(present);
                }
                present += 1;
            }
            buffer.copy_within(whole..filled, 0);
            filled -= whole;
            if read == 0 {
                return Ok(present);
            }
        }
    }

    /// Drops every node a chain of `size` leaves does not complete, so that
    /// nothing of another history is left past what is derived again.
    pub fn truncate(&self, chain: &str, size: u64) -> std::io::Result<()> {
        if !self.writable {
            return Ok(());
        }
        for level in STORED_LEVEL..64 {
            let path = self.level_file(chain, level);
            let file = match OpenOptions::new().write(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let keep = (size >> level) * NODE;
            if file.metadata()?.len() > keep {
                file.set_len(keep)?;
            }
        }
        Ok(())
    }

    /// Removes every chain's files (a rebuild derives them again).
    pub fn remove_all(&self) -> std::io::Result<()> {
        if !self.writable {
            return Ok(());
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    fn node(level: u8, index: u64) -> Node {
        let mut hash = [0u8; 32];
        hash[0] = level;
        hash[1..9].copy_from_slice(&index.to_be_bytes());
        hash[31] = 1;
        (level, index, hash)
    }

    /// Every node a chain of `size` leaves completes.
    fn complete(size: u64) -> Vec<Node> {
        (STORED_LEVEL..64)
            .take_while(|level| (1u64 << level) <= size)
            .flat_map(|level| (0..size >> level).map(move |i| node(level, i)))
            .collect()
    }

    #[test]
    fn nodes_read_back_where_they_were_written() {
        let tmp = tempfile::tempdir().unwrap();
        let files = TreeFiles::writer(tmp.path());
        let nodes = complete(1_000);
        // In two writes, out of order within each.
        let (first, second) = nodes.split_at(7);
        files.write("kafka:t/0", first).unwrap();
        let mut second = second.to_vec();
        second.reverse();
        files.write("kafka:t/0", &second).unwrap();
        for &(level, index, hash) in &nodes {
            assert_eq!(files.read("kafka:t/0", level, index).unwrap(), Some(hash));
        }
        assert_eq!(files.read("kafka:t/0", 6, 15).unwrap(), None);
        assert_eq!(files.read("other", 6, 0).unwrap(), None);
        assert_eq!(files.covered("kafka:t/0", 1_000).unwrap(), 1_000);
    }

    #[test]
    fn coverage_stops_at_the_first_missing_or_zeroed_node() {
        let tmp = tempfile::tempdir().unwrap();
        let files = TreeFiles::writer(tmp.path());
        files.write("c", &complete(4_096)).unwrap();
        assert_eq!(files.covered("c", 4_096).unwrap(), 4_096);
        // Level 6 holds 64 nodes: the 65th is due at 65 × 64 leaves.
        assert_eq!(files.covered("c", 5_000).unwrap(), 64 * 65 - 1);
        // Level 6 node 20 zeroed (a power loss): leaves from 20 × 64 on
        // are not covered, and the node reads as missing.
        let path = files.level_file("c", 6);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0; 32], 20 * 32).unwrap();
        assert_eq!(files.read("c", 6, 20).unwrap(), None);
        assert_eq!(files.covered("c", 4_096).unwrap(), 21 * 64 - 1);
        // Level 8 cut short mid-node.
        files.write("c", &complete(4_096)).unwrap();
        let level8 = files.level_file("c", 8);
        OpenOptions::new()
            .write(true)
            .open(&level8)
            .unwrap()
            .set_len(5 * 32 + 7)
            .unwrap();
        assert_eq!(files.read("c", 8, 5).unwrap(), None);
        assert_eq!(files.covered("c", 4_096).unwrap(), 6 * 256 - 1);
        // A level with no file at all.
        files.write("c", &complete(4_096)).unwrap();
        assert_eq!(files.covered("c", 4_096).unwrap(), 4_096);
        std::fs::remove_file(files.level_file("c", 12)).unwrap();
        assert_eq!(files.covered("c", 4_096).unwrap(), 4_095);
    }

    #[test]
    fn truncation_keeps_only_what_the_shorter_chain_completes() {
        let tmp = tempfile::tempdir().unwrap();
        let files = TreeFiles::writer(tmp.path());
        files.write("c", &complete(2_000)).unwrap();
        files.truncate("c", 700).unwrap();
        for (level, index, hash) in complete(2_000) {
            let kept = (index + 1) << level <= 700;
            let read = files.read("c", level, index).unwrap();
            assert_eq!(read, kept.then_some(hash), "level {level} index {index}");
        }
        files.remove_all().unwrap();
        assert!(!tmp.path().join(TREE_DIR).exists());
    }

    #[test]
    fn a_readers_files_write_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let files = TreeFiles::reader(tmp.path());
        files.write("c", &complete(128)).unwrap();
        files.truncate("c", 0).unwrap();
        files.remove_all().unwrap();
        assert!(!tmp.path().join(TREE_DIR).exists());
        assert_eq!(files.read("c", 6, 0).unwrap(), None);
    }
}
