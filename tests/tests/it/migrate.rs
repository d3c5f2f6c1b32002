//! A ledger of the earlier store format (entries inside sled) is refused
//! with a message naming `migrate`, and `migrate` converts it: same heads,
//! verified, the ledger's own records kept, the old directory kept aside.

use lifeledger::file::ingest_file;
use lifeledger_ledger::store::legacy;
use lifeledger_ledger::verify::Depth;
use lifeledger_ledger::{Ledger, LedgerOptions, Snapshot, StoreError, migrate};

use lifeledger_tests::{clock, open, retry_locked, stored, write_lines};

#[test]
fn an_old_ledger_is_refused_then_migrated_with_the_same_heads() {
    let tmp = tempfile::tempdir().unwrap();
    // Entries made by the current code, written the old way.
    let source = tmp.path().join("source");
    let lines: Vec<String> = (0..300)
        .map(|i| stored(&format!("e{i}"), "i", "mysql"))
        .collect();
    let file = write_lines(tmp.path(), "in.jsonl", &lines);
    {
        let mut ledger = open(&source);
        ingest_file(&mut ledger, "file", &file, 100, clock, |_| {}, |_| Ok(())).unwrap();
    }
    let records: Vec<_> = Snapshot::open(&source)
        .unwrap()
        .records("file", 0)
        .map(|r| {
            let r = r.unwrap();
            (r.hash, r.encoding)
        })
        .collect();
    let old = tmp.path().join("ledger");
    {
        let db = sled::open(&old).unwrap();
        legacy::write_chain(&db, "file", &records, Some(300)).unwrap();
        db.insert(b"Morigin", &b"example.com/old"[..]).unwrap();
        db.open_tree("checkpoints")
            .unwrap()
            .insert(b"k", &b"a signed note"[..])
            .unwrap();
        db.flush().unwrap();
    }

    let refused = Ledger::open(&old, LedgerOptions::default()).unwrap_err();
    assert!(
        matches!(refused, StoreError::NeedsMigration { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("lifeledger migrate"));

    // The refused open above held sled's lock a moment after it let go.
    let report = retry_locked(|| migrate(&old));
    assert_eq!(report.heads.len(), 1);
    assert_eq!(report.heads[0].1, 300);
    assert_eq!(report.heads[0].2, records.last().unwrap().0);
    assert!(report.kept_at.join("db").is_file());

    let snapshot = Snapshot::open(&old).unwrap();
    assert!(
        snapshot
            .verify(Depth::Events, &mut |_| {})
            .unwrap()
            .is_intact()
    );
    assert_eq!(snapshot.cursor("file"), Some(300));
    let mut ledger = open(&old);
    assert_eq!(ledger.head("file").unwrap().next_seq, 300);
    assert_eq!(ledger.origin().unwrap(), "example.com/old");
    assert_eq!(ledger.checkpoints().unwrap(), ["a signed note"]);
    // The indexes were derived: a known event is a duplicate.
    assert_eq!(
        ledger.find_event("e17").unwrap(),
        Some(("file".to_owned(), 17))
    );
    let again = write_lines(tmp.path(), "again.jsonl", &lines[..5]);
    let report = ingest_file(&mut ledger, "file", &again, 100, clock, |_| {}, |_| Ok(())).unwrap();
    assert_eq!(report.duplicates, 5, "{report:?}");
}
