//! Each chain's Merkle tree as the store keeps it: roots, inclusion and
//! consistency proofs at any size, across reopening and backfill.

use lifeledger::file::ingest_file;
use lifeledger_ledger::merkle::{self, MemoryTree};
use lifeledger_tests::{clock, open, stored, write_lines};

#[test]
fn stored_trees_match_a_tree_built_from_the_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let lines: Vec<String> = (0..700)
        .map(|i| stored(&format!("e{i}"), "i", "mysql"))
        .collect();
    let (a, b) = lines.split_at(333);
    let fa = write_lines(tmp.path(), "a.jsonl", a);
    let fb = write_lines(tmp.path(), "b.jsonl", b);
    {
        let mut ledger = open(&dir);
        ingest_file(&mut ledger, "file", &fa, 37, clock, |_| {}, |_| Ok(())).unwrap();
    }
    let mut ledger = open(&dir);
    ingest_file(&mut ledger, "file", &fb, 41, clock, |_| {}, |_| Ok(())).unwrap();

    let hashes: Vec<_> = ledger
        .records("file", 0)
        .unwrap()
        .map(|r| merkle::leaf_hash(&r.unwrap().hash))
        .collect();
    let reference = MemoryTree::from_leaves(hashes.clone());
    let (size, root) = ledger.tree_head("file").unwrap();
    assert_eq!((size, root), (700, reference.root()));

    for old in [1u64, 63, 64, 65, 128, 333, 511, 700] {
        let old_root = ledger.tree_root_at("file", old).unwrap();
        assert_eq!(
            old_root,
            MemoryTree::from_leaves(hashes[..old as usize].to_vec()).root(),
            "size {old}"
        );
        let proof = ledger.consistency_proof("file", old, 700).unwrap();
        merkle::verify_consistency(old, 700, &old_root, &root, &proof).unwrap();
    }
    for seq in [0u64, 1, 63, 64, 300, 699] {
        let proof = ledger.inclusion_proof("file", seq, 700).unwrap();
        assert!(proof.len() <= 10, "O(log n) proof: {} hashes", proof.len());
        merkle::verify_inclusion(seq, 700, &hashes[seq as usize], &proof, &root).unwrap();
    }

    // A ledger that lost its tree files (and the index how far its
    // indexes went) derives them again from the segments on open.
    drop(ledger);
    let tree = dir.join("tree");
    assert!(tree.join("c-file").join("level-06").is_file());
    std::fs::remove_dir_all(&tree).unwrap();
    {
        let db = lifeledger_tests::open_index(&dir);
        db.remove(b"Hfile").unwrap();
        db.flush().unwrap();
    }
    let mut ledger = open(&dir);
    assert_eq!(ledger.tree_head("file").unwrap(), (700, reference.root()));
    let proof = ledger.inclusion_proof("file", 5, 700).unwrap();
    merkle::verify_inclusion(5, 700, &hashes[5], &proof, &reference.root()).unwrap();
}
