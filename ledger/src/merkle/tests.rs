use proptest::prelude::*;

use super::*;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&EntryHash(*blake3::hash(&i.to_be_bytes()).as_bytes())))
        .collect()
}

/// MTH straight from the RFC's recursive definition.
fn reference_root(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&reference_root(&d[..k]), &reference_root(&d[k..]))
        }
    }
}

proptest! {
    #[test]
    fn root_matches_the_rfc_definition(n in 0u64..300) {
        let l = leaves(n);
        prop_assert_eq!(MemoryTree::from_leaves(l.clone()).root(), reference_root(&l));
    }

    #[test]
    fn inclusion_proofs_verify_and_fail_when_tampered((n, i) in (1u64..300).prop_flat_map(|n| (Just(n), 0..n)), flip in any::<(usize, u8)>()) {
        let l = leaves(n);
        let t = MemoryTree::from_leaves(l.clone());
        let proof = inclusion_proof(&t, i, n).unwrap();
        prop_assert!(proof.len() <= 64 - (n.leading_zeros() as usize) + 1);
        prop_assert_eq!(verify_inclusion(i, n, &l[i as usize], &proof, &t.root()), Ok(()));
        // Another leaf at the same place fails.
        let other = l[((i + 1) % n) as usize];
        if n > 1 {
            prop_assert!(verify_inclusion(i, n, &other, &proof, &t.root()).is_err());
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let at = flip.0 % bad.len();
            bad[at][flip.1 as usize % 32] ^= 1;
            prop_assert!(verify_inclusion(i, n, &l[i as usize], &bad, &t.root()).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_catch_forks((m, n) in (1u64..300).prop_flat_map(|n| (1..=n, Just(n)))) {
        let l = leaves(n);
        let new = MemoryTree::from_leaves(l.clone());
        let old = MemoryTree::from_leaves(l[..m as usize].to_vec());
        let proof = consistency_proof(&new, m, n).unwrap();
        prop_assert_eq!(verify_consistency(m, n, &old.root(), &new.root(), &proof), Ok(()));
        // A fork: the same old size with a changed leaf.
        let mut forked = l[..m as usize].to_vec();
        forked[0] = leaf_hash(&EntryHash([9; 32]));
        let forked_root = MemoryTree::from_leaves(forked).root();
        prop_assert!(verify_consistency(m, n, &forked_root, &new.root(), &proof).is_err());
    }
}

#[test]
fn shrinking_and_same_size_forks_are_named() {
    let l = leaves(8);
    let t = MemoryTree::from_leaves(l);
    assert_eq!(
        verify_consistency(9, 8, &t.root(), &t.root(), &[]),
        Err(ConsistencyError::Shrunk {
            old_size: 9,
            new_size: 8
        })
    );
    assert_eq!(
        verify_consistency(8, 8, &[1; 32], &t.root(), &[]),
        Err(ConsistencyError::SameSizeDifferentRoot { size: 8 })
    );
}

proptest! {
    #[test]
    fn a_compact_range_tracks_the_root_and_reports_completed_subtrees(n in 0u64..300, cut in 0u64..300) {
        let l = leaves(n);
        let full = MemoryTree::from_leaves(l.clone());
        let cut = cut.min(n);
        // Resume from the subtrees of a prefix, as a reopened store does.
        let prefix = MemoryTree::from_leaves(l[..cut as usize].to_vec());
        let mut range = CompactRange::of(&prefix, cut).unwrap();
        prop_assert_eq!(range.root(), prefix.root());
        for (i, leaf) in l.iter().enumerate().skip(cut as usize) {
            for (level, index, hash) in range.push(*leaf) {
                prop_assert_eq!(Ok(hash), full.perfect(level, index), "level {} index {} after leaf {}", level, index, i);
            }
        }
        prop_assert_eq!(range.size(), n);
        prop_assert_eq!(range.root(), full.root());
    }
}

proptest! {
    #[test]
    fn pushing_leaves_quietly_gives_the_same_roots(n in 0u64..300) {
        let l = leaves(n);
        let mut reporting = CompactRange::default();
        let mut quiet = CompactRange::default();
        for leaf in &l {
            reporting.push(*leaf);
            quiet.push_leaf(*leaf);
            prop_assert_eq!(quiet.root(), reporting.root());
            prop_assert_eq!(quiet.size(), reporting.size());
        }
        prop_assert_eq!(quiet.root(), MemoryTree::from_leaves(l).root());
    }
}
