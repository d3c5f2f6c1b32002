//! The projection kept in sled, updated batch by batch across reopenings,
//! equals one rebuilt from the chains.

use lifeledger::file::ingest_file;
use lifeledger_tests::{clock, collected, open, stored, write_lines};

fn deleted(id: &str, item: &str, store: &str) -> String {
    stored(id, item, store).replace("\"type\":\"stored\"", "\"type\":\"deleted\"")
}

#[test]
fn incremental_projection_across_reopens_equals_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let mut first = Vec::new();
    let mut second = Vec::new();
    for i in 0..300 {
        let item = format!("item-{i}");
        first.push(collected(&format!("c{i}"), &item));
        first.push(stored(&format!("s{i}"), &item, "mongodb"));
        if i % 3 == 0 {
            second.push(deleted(&format!("d{i}"), &item, "mongodb"));
        }
        if i % 7 == 0 {
            second.push(stored(&format!("x{i}"), &item, "cos"));
        }
    }
    second.push("not an event".into());
    let a = write_lines(tmp.path(), "a.jsonl", &first);
    let b = write_lines(tmp.path(), "b.jsonl", &second);
    {
        let mut ledger = open(&dir);
        let mut projection = ledger.load_projection().unwrap();
        ingest_file(
            &mut ledger,
            "file",
            &a,
            64,
            clock,
            |_| {},
            |l| l.catch_up(&mut projection, &mut |_| {}).map(|_| ()),
        )
        .unwrap();
    }
    let incremental = {
        let mut ledger = open(&dir);
        let mut projection = ledger.load_projection().unwrap();
        assert_eq!(
            projection.next_seq("file"),
            600,
            "the saved cursor survives reopening"
        );
        ingest_file(
            &mut ledger,
            "other",
            &b,
            50,
            clock,
            |_| {},
            |l| l.catch_up(&mut projection, &mut |_| {}).map(|_| ()),
        )
        .unwrap();
        projection
    };
    let mut ledger = open(&dir);
    let loaded = ledger.load_projection().unwrap();
    assert_eq!(loaded, incremental);
    let rebuilt = ledger.rebuild_projection(&mut |_| {}).unwrap();
    assert_eq!(rebuilt, loaded);
    assert_eq!(rebuilt.items.len(), 300);
    assert_eq!(rebuilt.covered.get("other"), Some(&(second.len() as u64)));
    let item0 = &rebuilt.items["item-0"];
    assert_eq!(
        item0.copies.len(),
        2,
        "mongodb and cos copies: {:?}",
        item0.copies
    );
}
