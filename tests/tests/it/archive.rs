//! One chain per partition across ledgers: a ledger continues a chain from
//! the archive, and the archive's write-once names fence off a second
//! continuation from the same point (a local directory as the archive;
//! the S3 tests are beside the binary).

use std::path::Path;

use lifeledger_ledger::archive::{Archive, Continuation, Uploader, continue_chain, restore};
use lifeledger_ledger::{Incoming, Ledger, Snapshot, Source};
use lifeledger_tests::{clock, open, stored};

const CHAIN: &str = "kafka:lifecycle:3";

/// Records of partition 3 at offsets `from..from + n`, with events named
/// by `tag` (two ledgers reading the same offsets may record them
/// differently, e.g. at another time).
fn batch(tag: &str, from: i64, n: i64) -> Vec<Incoming> {
    (from..from + n)
        .map(|offset| Incoming {
            source: Source::Kafka {
                topic: "lifecycle".into(),
                partition: 3,
                offset,
            },
            raw: stored(&format!("{tag}{offset}"), "i", "mysql").into_bytes(),
        })
        .collect()
}

fn append_and_seal(ledger: &mut Ledger, tag: &str, from: i64, n: i64) {
    ledger.append(CHAIN, batch(tag, from, n), clock()).unwrap();
    ledger.seal_open_segments(None).unwrap();
}

fn upload(ledger_dir: &Path, archive_dir: &Path) -> lifeledger_ledger::archive::ArchiveProgress {
    let archive = Archive::open(archive_dir.to_str().unwrap()).unwrap();
    let mut uploader = Uploader::new(archive, ledger_dir).unwrap();
    uploader.step().unwrap().clone()
}

fn head(ledger: &Ledger) -> (u64, String) {
    let h = ledger.head(CHAIN).unwrap();
    (h.next_seq, h.last_hash.to_hex())
}

#[test]
fn a_chain_continues_from_the_archive_and_a_second_continuation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let archive_dir = tmp.path().join("archive");
    let archive = Archive::open(archive_dir.to_str().unwrap()).unwrap();

    // Member A records offsets 0..30 and archives them.
    let a_dir = tmp.path().join("a");
    let mut a = open(&a_dir);
    append_and_seal(&mut a, "e", 0, 10);
    append_and_seal(&mut a, "e", 10, 20);
    assert_eq!(upload(&a_dir, &archive_dir).archived[CHAIN], 30);

    // Member B, with nothing of its own, takes the partition: it continues
    // the archived chain (the same seqs and hashes), and resumes at the
    // offset after it.
    let b_dir = tmp.path().join("b");
    let mut b = open(&b_dir);
    assert_eq!(
        continue_chain(&mut b, &archive, CHAIN).unwrap(),
        Continuation::Adopted {
            from: 0,
            next_seq: 30
        }
    );
    assert_eq!(head(&b), head(&a));
    assert_eq!(b.cursor(CHAIN).unwrap(), Some(30));
    // Its indexes know the adopted entries: the same events again are
    // duplicates, not new entries.
    let again = b.append(CHAIN, batch("e", 10, 5), clock()).unwrap();
    assert_eq!(again.appended, 0, "{again:?}");
    append_and_seal(&mut b, "e", 30, 15);
    assert_eq!(upload(&b_dir, &archive_dir).archived[CHAIN], 45);

    // A, stale, extends the chain from seq 30 too (the same offsets,
    // recorded again): its upload is refused, nothing is overwritten.
    append_and_seal(&mut a, "late", 30, 12);
    let progress = upload(&a_dir, &archive_dir);
    assert!(progress.conflicts.contains_key(CHAIN), "{progress:?}");
    assert_eq!(progress.archived[CHAIN], 30);
    // ... and taking the partition again, it finds its chain diverged.
    match continue_chain(&mut a, &archive, CHAIN).unwrap() {
        Continuation::Diverged { seq, .. } => assert!(seq >= 29, "diverged at {seq}"),
        other => panic!("expected a divergence, got {other:?}"),
    }

    // The archive holds one chain: B's.
    let restored = tmp.path().join("restored");
    let report = restore(&archive, &restored).unwrap();
    assert_eq!(report.chains[CHAIN], 45);
    let snapshot = Snapshot::open(&restored).unwrap();
    let h = snapshot.head(CHAIN).unwrap();
    assert_eq!((h.next_seq, h.last_hash.to_hex()), head(&b));
    assert_eq!(snapshot.cursor(CHAIN), Some(45));
    let verified = snapshot
        .verify(lifeledger_ledger::verify::Depth::Events, &mut |_| {})
        .unwrap();
    assert!(verified.is_intact(), "{verified:?}");

    // B itself, asked again, holds everything archived.
    assert_eq!(
        continue_chain(&mut b, &archive, CHAIN).unwrap(),
        Continuation::Holds {
            next_seq: 45,
            ahead: 0
        }
    );
    // A member that holds a prefix of it (the same entries) fetches only
    // the rest.
    let c_dir = tmp.path().join("c");
    let mut c = open(&c_dir);
    append_and_seal(&mut c, "e", 0, 10);
    assert_eq!(
        continue_chain(&mut c, &archive, CHAIN).unwrap(),
        Continuation::Adopted {
            from: 10,
            next_seq: 45
        }
    );
    assert_eq!(head(&c), head(&b));
    // One whose first entries differ must not continue it.
    let d_dir = tmp.path().join("d");
    let mut d = open(&d_dir);
    append_and_seal(&mut d, "other", 0, 10);
    let adopted = continue_chain(&mut d, &archive, CHAIN).unwrap();
    assert!(
        matches!(adopted, Continuation::Diverged { seq: 10, .. }),
        "{adopted:?}"
    );
    assert_eq!(d.head(CHAIN).unwrap().next_seq, 10, "nothing adopted");
}

/// A reader holding a snapshot taken while a segment was open (the
/// projection thread does, between two appends) still reads it after the
/// writer sealed it, which renames the file: a member stopping after a
/// rebalance seals its revoked partitions' segments while its projection
/// still folds them.
#[test]
fn a_snapshot_taken_before_a_seal_reads_the_segment_it_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = open(tmp.path());
    ledger.append(CHAIN, batch("e", 0, 10), clock()).unwrap();
    ledger.seal_open_segments(None).unwrap();
    ledger.append(CHAIN, batch("e", 10, 5), clock()).unwrap();
    let before: Snapshot = ledger.snapshot().clone();
    ledger.seal_open_segments(None).unwrap();
    let read: Vec<u64> = before
        .records(CHAIN, 0)
        .map(|r| r.unwrap().position)
        .collect();
    assert_eq!(read, (0..15).collect::<Vec<_>>());
    let from_the_open_one: Vec<u64> = before
        .records(CHAIN, 12)
        .map(|r| r.unwrap().position)
        .collect();
    assert_eq!(from_the_open_one, vec![12, 13, 14]);
}
