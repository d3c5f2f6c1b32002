//! Merkle trees over entry hashes, with the structure of RFC 9162 (Certificate
//! Transparency 2.0) section 2.1, BLAKE3 as the hash. Pure.
//!
//! Each chain has its own tree: leaf `i` is the entry with seq `i`.
//!
//! * leaf hash  = BLAKE3(0x00 || entry_hash)
//! * node hash  = BLAKE3(0x01 || left || right)
//! * empty tree = BLAKE3("")
//!
//! A tree of `n > 1` leaves splits at `k`, the largest power of two below
//! `n`: MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n])). Proofs and their
//! verification follow RFC 9162 sections 2.1.3 and 2.1.4 exactly.

use thiserror::Error;

use crate::entry::EntryHash;

/// A hash in the tree.
pub type Hash = [u8; 32];

pub fn leaf_hash(entry: &EntryHash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0x00]);
    h.update(&entry.0);
    *h.finalize().as_bytes()
}

/// The root of a perfect tree over `leaves`; `None` unless their number
/// is a power of two.
pub fn perfect_root(leaves: &[Hash]) -> Option<Hash> {
    if !leaves.len().is_power_of_two() {
        return None;
    }
    let mut level: Vec<Hash> = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    level.first().copied()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0x01]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

pub fn empty_root() -> Hash {
    *blake3::hash(b"").as_bytes()
}

/// The largest power of two strictly below `n` (for `n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Where the hashes of a tree's subtrees come from.
pub trait Subtrees {
    /// The error of the underlying storage.
    type Error;
    /// MTH of the perfect subtree of `2^level` leaves starting at leaf
    /// `index << level`. Only asked for subtrees inside the tree.
    fn perfect(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// MTH(D[start:end]) from perfect subtrees: O(log n) lookups.
pub fn range_hash<S: Subtrees>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start % n == 0 {
        return src.perfect(n.trailing_zeros() as u8, start / n);
    }
    let k = split(n);
    Ok(node_hash(
        &range_hash(src, start, start + k)?,
        &range_hash(src, start + k, end)?,
    ))
}

/// The root of a tree of `size` leaves.
pub fn root<S: Subtrees>(src: &S, size: u64) -> Result<Hash, S::Error> {
    range_hash(src, 0, size)
}

/// PATH(m, D[start:end]) of RFC 9162 2.1.3.1: the inclusion proof of leaf
/// `m` (relative to `start`).
fn path<S: Subtrees>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(src, m, start, start + k, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        path(src, m - k, start + k, end, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof<S: Subtrees>(src: &S, index: u64, size: u64) -> Result<Vec<Hash>, S::Error> {
    let mut out = Vec::new();
    if index < size {
        path(src, index, 0, size, &mut out)?;
    }
    Ok(out)
}

/// SUBPROOF(m, D[start:end], b) of RFC 9162 2.1.4.1.
fn subproof<S: Subtrees>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    b: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !b {
            out.push(range_hash(src, start, end)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, start, start + k, b, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        subproof(src, m - k, start + k, end, false, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// The consistency proof between the trees of `old_size` and `new_size`
/// leaves (`0 < old_size <= new_size`); empty otherwise.
pub fn consistency_proof<S: Subtrees>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, S::Error> {
    let mut out = Vec::new();
    if old_size > 0 && old_size < new_size {
        subproof(src, old_size, 0, new_size, true, &mut out)?;
    }
    Ok(out)
}

/// Why an inclusion proof failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InclusionError {
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("the proof has {found} hashes, the tree needs {expected}")]
    WrongLength { expected: usize, found: usize },
    #[error("the proof leads to a root other than the one given")]
    RootMismatch,
}

/// Verifies an inclusion proof (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), InclusionError> {
    if index >= size {
        return Err(InclusionError::IndexOutOfRange { index, size });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(InclusionError::WrongLength {
                expected: proof.len() - 1,
                found: proof.len(),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(InclusionError::WrongLength {
            expected: proof.len() + 1,
            found: proof.len(),
        });
    }
    if r == *root {
        Ok(())
    } else {
        Err(InclusionError::RootMismatch)
    }
}

/// Why a consistency proof failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConsistencyError {
    #[error("the old tree ({old_size} leaves) is larger than the new one ({new_size})")]
    Shrunk { old_size: u64, new_size: u64 },
    #[error("trees of equal size {size} have different roots")]
    SameSizeDifferentRoot { size: u64 },
    #[error("the proof is malformed for sizes {old_size} and {new_size}")]
    Malformed { old_size: u64, new_size: u64 },
    #[error("the proof does not lead to the old root")]
    OldRootMismatch,
    #[error("the proof does not lead to the new root")]
    NewRootMismatch,
}

/// Verifies that the tree with `new_root` extends the one with `old_root`
/// (RFC 9162 2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ConsistencyError> {
    if old_size > new_size {
        return Err(ConsistencyError::Shrunk { old_size, new_size });
    }
    if old_size == new_size {
        return if old_root == new_root && proof.is_empty() {
            Ok(())
        } else if old_root != new_root {
            Err(ConsistencyError::SameSizeDifferentRoot { size: old_size })
        } else {
            Err(ConsistencyError::Malformed { old_size, new_size })
        };
    }
    if old_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ConsistencyError::Malformed { old_size, new_size })
        };
    }
    let malformed = ConsistencyError::Malformed { old_size, new_size };
    let mut proof: Vec<Hash> = proof.to_vec();
    if old_size.is_power_of_two() {
        proof.insert(0, *old_root);
    }
    let Some((first, rest)) = proof.split_first() else {
        return Err(malformed);
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(malformed);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(malformed);
    }
    if fr != *old_root {
        return Err(ConsistencyError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ConsistencyError::NewRootMismatch);
    }
    Ok(())
}

/// The right edge of a growing tree: the perfect subtrees that make up its
/// leaves so far, largest first. Enough to extend the tree and get its root
/// without the leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// (level, hash) of each perfect subtree, left to right.
    subtrees: Vec<(u8, Hash)>,
}

impl CompactRange {
    /// The compact range of a tree of `size` leaves, from its subtrees.
    pub fn of<S: Subtrees>(src: &S, size: u64) -> Result<Self, S::Error> {
        let mut subtrees = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1 << level) != 0 {
                subtrees.push((level, src.perfect(level, start >> level)?));
                start += 1 << level;
            }
        }
        Ok(CompactRange { size, subtrees })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash, without reporting the subtrees it completes.
    pub fn push_leaf(&mut self, leaf: Hash) {
        // A leaf is a subtree of one, and any size is a multiple of one.
        self.push_subtree(0, leaf);
    }

    /// Appends a perfect subtree of `2^level` leaves, given its root; the
    /// tree's size must be a multiple of `2^level` (the subtree aligned),
    /// else `false` and nothing changes.
    pub fn push_subtree(&mut self, level: u8, root: Hash) -> bool {
        let Some(width) = 1u64.checked_shl(u32::from(level)) else {
            return false;
        };
        if self.size % width != 0 {
            return false;
        }
        let mut current = (level, root);
        while let Some(&(l, left)) = self.subtrees.last() {
            if l != current.0 {
                break;
            }
            self.subtrees.pop();
            current = (l + 1, node_hash(&left, &current.1));
        }
        self.subtrees.push(current);
        self.size += width;
        true
    }

    /// Appends a leaf; returns every perfect subtree it completes as
    /// (level, index, hash), the leaf itself first.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let mut completed = vec![(0, self.size, leaf)];
        let mut current = (0u8, leaf);
        let end = self.size + 1;
        while let Some(&(level, left)) = self.subtrees.last() {
            if level != current.0 {
                break;
            }
            self.subtrees.pop();
            current = (level + 1, node_hash(&left, &current.1));
            completed.push((current.0, (end >> current.0) - 1, current.1));
        }
        self.subtrees.push(current);
        self.size += 1;
        completed
    }

    /// The tree's root.
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Perfect subtrees computed from all leaf hashes in memory: for bundles,
/// proofs over small trees, and tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    /// levels[l][i] = MTH of perfect subtree i at level l.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> Self {
        MemoryTree {
            levels: vec![Vec::new()],
        }
    }

    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut t = MemoryTree::new();
        for l in leaves {
            t.push(l);
        }
        t
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len() % 2 == 0 {
            let n = self.levels[level].len();
            let parent = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    pub fn root(&self) -> Hash {
        match root(self, self.size()) {
            Ok(h) => h,
            Err(never) => match never {},
        }
    }
}

impl Subtrees for MemoryTree {
    type Error = std::convert::Infallible;

    fn perfect(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        // Callers only ask for subtrees inside the tree, which push built.
        Ok(self
            .levels
            .get(level as usize)
            .and_then(|l| l.get(index as usize))
            .copied()
            .unwrap_or([0; 32]))
    }
}

#[cfg(test)]
mod tests;
