//! Known-answer vectors for the Merkle tree, the ledger root and the
//! checkpoint note (FORMAT.md sections 8-10), in
//! `testdata/audit-vectors.json`. `LIFELEDGER_BLESS=1` rewrites the file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;

use lifeledger_ledger::checkpoint::{ChainRoot, Checkpoint, PrivateKey, verify_note};
use lifeledger_ledger::entry::EntryHash;
use lifeledger_ledger::merkle::{self, MemoryTree};
use serde_json::{Value, json};

fn h(b: &[u8; 32]) -> String {
    hex::encode(b)
}

fn document() -> Value {
    // Entry hashes for the vectors: BLAKE3 of the u64 big-endian index.
    let entries: Vec<EntryHash> = (0u64..7)
        .map(|i| EntryHash(*blake3::hash(&i.to_be_bytes()).as_bytes()))
        .collect();
    let leaves: Vec<_> = entries.iter().map(merkle::leaf_hash).collect();
    let roots: Vec<Value> = (0..=7)
        .map(|n| json!({"size": n, "root": h(&MemoryTree::from_leaves(leaves[..n].to_vec()).root())}))
        .collect();
    let tree = MemoryTree::from_leaves(leaves.clone());
    let inclusion = merkle::inclusion_proof(&tree, 2, 7).unwrap();
    let consistency = merkle::consistency_proof(&tree, 3, 7).unwrap();

    let key = PrivateKey::from_seed("vector-signer", [0x42; 32]).unwrap();
    let checkpoint = Checkpoint {
        origin: "lifeledger.invalid/vectors".into(),
        time: "2026-11-24T12:00:00Z".parse().unwrap(),
        chains: vec![
            ChainRoot {
                chain: "file".into(),
                size: 7,
                root: tree.root(),
            },
            ChainRoot {
                chain: "policy".into(),
                size: 1,
                root: leaves[0],
            },
        ],
    };
    let note = key.sign(&checkpoint);
    json!({
        "entry_hashes": entries.iter().map(|e| e.to_hex()).collect::<Vec<_>>(),
        "leaf_hashes": leaves.iter().map(h).collect::<Vec<_>>(),
        "empty_root": h(&merkle::empty_root()),
        "roots": roots,
        "inclusion": {"index": 2, "size": 7, "proof": inclusion.iter().map(h).collect::<Vec<_>>()},
        "consistency": {"old_size": 3, "new_size": 7, "proof": consistency.iter().map(h).collect::<Vec<_>>()},
        "checkpoint": {
            "private_key_seed": hex::encode([0x42; 32]),
            "public_key": key.public().to_string(),
            "key_id": hex::encode(key.public().id()),
            "ledger_root": h(&checkpoint.root()),
            "body": checkpoint.body(),
            "note": note,
        },
    })
}

#[test]
fn audit_vectors_match() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/audit-vectors.json");
    let current = document();
    if std::env::var_os("LIFELEDGER_BLESS").is_some() {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&current).unwrap() + "\n",
        )
        .unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        stored, current,
        "the code no longer produces the stored vectors"
    );
    // The stored note verifies with the stored public key.
    let key = lifeledger_ledger::checkpoint::PublicKey::parse(
        stored["checkpoint"]["public_key"].as_str().unwrap(),
    )
    .unwrap();
    let c = verify_note(stored["checkpoint"]["note"].as_str().unwrap(), &key).unwrap();
    assert_eq!(hex::encode(c.root()), stored["checkpoint"]["ledger_root"]);
}
