//! Tampering with the stored bytes behind the store's back (the sled
//! layout documented in ARCHITECTURE.md) is found by `verify`, at the
//! right seq, and refused by `Ledger::open`.

use std::path::Path;

use lifeledger::file::ingest_file;
use lifeledger_ledger::verify::{Depth, Finding, Problem};
use lifeledger_ledger::{Ledger, LedgerOptions, StoreError};

use lifeledger_tests::{clock, open, open_sled, open_unchecked, retry_locked, stored, write_lines};

const CHAIN: &str = "file";

fn block_prefix() -> Vec<u8> {
    let mut key = vec![b'B'];
    key.extend_from_slice(&(CHAIN.len() as u16).to_be_bytes());
    key.extend_from_slice(CHAIN.as_bytes());
    key
}

/// (first seq, key) of every block of the chain.
fn blocks(db: &sled::Db) -> Vec<(u64, Vec<u8>)> {
    db.scan_prefix(block_prefix())
        .map(|kv| {
            let (key, _) = kv.unwrap();
            let seq = u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap());
            (seq, key.to_vec())
        })
        .collect()
}

/// Offsets of each record's encoding within a block value.
fn record_offsets(value: &[u8]) -> Vec<(usize, usize)> {
    let count = u32::from_be_bytes(value[..4].try_into().unwrap());
    let mut pos = 4;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = u32::from_be_bytes(value[pos..pos + 4].try_into().unwrap()) as usize;
        out.push((pos + 36, len));
        pos += 36 + len;
    }
    out
}

/// A ledger of `n` events in batches of 100, closed.
fn build(dir: &Path, n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..n)
        .map(|i| stored(&format!("e{i}"), "i", "mysql"))
        .collect();
    let file = write_lines(tmp.path(), "in.jsonl", &lines);
    let mut ledger = open(dir);
    ingest_file(&mut ledger, CHAIN, &file, 100, clock, |_| {}, |_| Ok(())).unwrap();
}

fn tamper(dir: &Path, f: impl FnOnce(&sled::Db)) {
    let db = open_sled(dir);
    f(&db);
    db.flush().unwrap();
}

fn verify(dir: &Path) -> Vec<Finding> {
    let ledger = open_unchecked(dir);
    ledger.verify(Depth::Events, &mut |_| {}).unwrap().findings
}

/// Flips one byte of the encoding of entry `seq`, `at` bytes in.
fn flip(dir: &Path, seq: u64, at: usize) {
    tamper(dir, |db| {
        let (first, key) = blocks(db)
            .into_iter()
            .rev()
            .find(|(first, _)| *first <= seq)
            .unwrap();
        let mut value = db.get(&key).unwrap().unwrap().to_vec();
        let (start, len) = record_offsets(&value)[(seq - first) as usize];
        value[start + at % len] ^= 0x20;
        db.insert(key, value).unwrap();
    });
}

/// Opening for appends must fail; the error it fails with.
fn open_for_append(dir: &Path) -> StoreError {
    retry_locked(|| match Ledger::open(dir, LedgerOptions::default()) {
        Ok(_) => panic!("a tampered ledger opened for appends"),
        Err(StoreError::Open { source, path }) => Err(StoreError::Open { source, path }),
        Err(other) => Ok(other),
    })
}

#[test]
fn a_changed_byte_in_the_middle_is_found_at_its_seq() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 700);
    flip(tmp.path(), 333, 200);
    let findings = verify(tmp.path());
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].seq, 333, "{}", findings[0]);
    assert!(
        matches!(findings[0].problem, Problem::HashMismatch { .. }),
        "{}",
        findings[0]
    );
}

#[test]
fn a_changed_last_entry_stops_the_ledger_from_opening_for_appends() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 300);
    flip(tmp.path(), 299, 60);
    assert!(matches!(
        open_for_append(tmp.path()),
        StoreError::TailMismatch { .. }
    ));
    assert_eq!(verify(tmp.path())[0].seq, 299);
}

#[test]
fn a_removed_block_is_found_where_the_gap_starts() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 1000);
    let mut removed = 0;
    tamper(tmp.path(), |db| {
        let all = blocks(db);
        let (first, key) = &all[all.len() / 2];
        removed = *first;
        db.remove(key).unwrap();
    });
    let findings = verify(tmp.path());
    assert_eq!(findings[0].seq, removed, "{}", findings[0]);
    assert!(matches!(findings[0].problem, Problem::SeqMismatch { .. }));
}

#[test]
fn a_head_moved_back_is_found_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 250);
    // Move the head back to entry 199, with that entry's real hash.
    tamper(tmp.path(), |db| {
        let (first, key) = blocks(db)
            .into_iter()
            .rev()
            .find(|(first, _)| *first <= 199)
            .unwrap();
        let value = db.get(&key).unwrap().unwrap();
        let (start, _) = record_offsets(&value)[(199 - first) as usize];
        let hash = &value[start - 32..start];
        let mut head = 200u64.to_be_bytes().to_vec();
        head.extend_from_slice(hash);
        db.insert(format!("H{CHAIN}"), head).unwrap();
    });
    assert!(matches!(
        open_for_append(tmp.path()),
        StoreError::TailMismatch { .. }
    ));
    let findings = verify(tmp.path());
    assert_eq!(findings[0].seq, 200);
    assert_eq!(
        findings[0].problem,
        Problem::BeyondHead { head_next_seq: 200 }
    );
}

#[test]
fn a_torn_block_is_found_at_the_record_it_tears() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 300);
    tamper(tmp.path(), |db| {
        let (first, key) = blocks(db)[0].clone();
        assert_eq!(first, 0);
        let value = db.get(&key).unwrap().unwrap().to_vec();
        let (start, _) = record_offsets(&value)[5];
        // Cut the block inside record 5.
        db.insert(key, &value[..start + 10]).unwrap();
    });
    let findings = verify(tmp.path());
    assert_eq!(findings[0].seq, 5, "{}", findings[0]);
    assert!(matches!(findings[0].problem, Problem::Undecodable(_)));
}
