//! File ingest: exact counts, durable chains, reopening, re-reading.

use lifeledger::file::{IngestSummary, ingest_file};
use lifeledger_ledger::verify::Depth;
use lifeledger_ledger::{Body, Source};
use lifeledger_schemas::RejectClass;

use lifeledger_tests::{clock, collected, open, stored, write_lines};

fn mixed_lines() -> Vec<String> {
    vec![
        collected("e1", "i1"),         // 1 appended
        stored("e2", "i1", "mongodb"), // 2 appended
        "{not json".to_owned(),        // 3 rejected: malformed
        stored("e2", "i1", "mongodb"), // 4 duplicate of line 2
        String::new(),                 // 5 blank
        stored("e3", "i1", "mysql").replace("\"stored\"", "\"teleported\""), // 6 rejected: schema
        stored("e2", "i1", "mysql"),   // 7 rejected: conflicts with line 2
        stored("e4", "i1", "mysql").replace("\"schema_version\":1", "\"schema_version\":9"), // 8 rejected: version
        stored("e5", "i1", "cos"), // 9 appended
    ]
}

#[test]
fn mixed_file_gives_exact_counts_and_a_verifying_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_lines(tmp.path(), "in.jsonl", &mixed_lines());
    let mut ledger = open(&tmp.path().join("ledger"));
    let summary = ingest_file(&mut ledger, "file", &file, 3, clock, |_| {}, |_| Ok(())).unwrap();
    assert_eq!(
        summary,
        IngestSummary {
            lines: 8,
            blank_lines: 1,
            appended: 3,
            rejected: 4,
            duplicates: 1,
        }
    );
    assert_eq!(ledger.head("file").unwrap().next_seq, 7);

    let report = ledger.verify(Depth::Events, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!(report.chains[0].events, 3);
    assert_eq!(report.chains[0].rejected, 4);

    // Every rejection names its class and keeps the line's bytes and place.
    let entries: Vec<_> = ledger
        .entries("file", 0, u64::MAX)
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    let rejected: Vec<(u64, RejectClass, Vec<u8>)> = entries
        .iter()
        .filter_map(|e| match (&e.body, &e.source) {
            (Body::Rejected { class, raw, .. }, Source::File { line, .. }) => {
                Some((*line, *class, raw.clone()))
            }
            _ => None,
        })
        .collect();
    let lines = mixed_lines();
    assert_eq!(
        rejected,
        vec![
            (3, RejectClass::Malformed, lines[2].clone().into_bytes()),
            (6, RejectClass::Schema, lines[5].clone().into_bytes()),
            (7, RejectClass::Conflict, lines[6].clone().into_bytes()),
            (
                8,
                RejectClass::UnsupportedVersion,
                lines[7].clone().into_bytes()
            ),
        ]
    );
}

#[test]
fn reopening_continues_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let first = write_lines(
        tmp.path(),
        "a.jsonl",
        &[collected("a1", "i1"), stored("a2", "i1", "mysql")],
    );
    let second = write_lines(
        tmp.path(),
        "b.jsonl",
        &[stored("b1", "i1", "mongodb"), "oops".to_owned()],
    );
    let head_after_first = {
        let mut ledger = open(&dir);
        ingest_file(&mut ledger, "file", &first, 1000, clock, |_| {}, |_| Ok(())).unwrap();
        ledger.head("file").unwrap().clone()
    };
    let mut ledger = open(&dir);
    assert_eq!(ledger.head("file"), Some(&head_after_first));
    let summary = ingest_file(
        &mut ledger,
        "file",
        &second,
        1000,
        clock,
        |_| {},
        |_| Ok(()),
    )
    .unwrap();
    assert_eq!((summary.appended, summary.rejected), (1, 1));
    let entries: Vec<_> = ledger
        .entries("file", 0, u64::MAX)
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[2].seq, 2);
    assert_eq!(entries[2].prev_hash, head_after_first.last_hash);
    assert!(
        ledger
            .verify(Depth::Events, &mut |_| {})
            .unwrap()
            .is_intact()
    );
}

#[test]
fn reading_a_file_again_appends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_lines(tmp.path(), "in.jsonl", &mixed_lines());
    let mut ledger = open(&tmp.path().join("ledger"));
    ingest_file(&mut ledger, "file", &file, 1000, clock, |_| {}, |_| Ok(())).unwrap();
    let again = ingest_file(&mut ledger, "file", &file, 2, clock, |_| {}, |_| Ok(())).unwrap();
    assert_eq!(
        (again.appended, again.rejected, again.duplicates),
        (0, 0, 8)
    );
    assert_eq!(ledger.head("file").unwrap().next_seq, 7);
}

#[test]
fn the_same_event_on_another_chain_is_still_a_duplicate() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_lines(tmp.path(), "in.jsonl", &[collected("x1", "i1")]);
    let mut ledger = open(&tmp.path().join("ledger"));
    ingest_file(&mut ledger, "one", &file, 10, clock, |_| {}, |_| Ok(())).unwrap();
    let other = ingest_file(&mut ledger, "two", &file, 10, clock, |_| {}, |_| Ok(())).unwrap();
    assert_eq!(other.duplicates, 1);
    assert!(ledger.head("two").is_none());
}

#[test]
fn oversize_lines_are_rejected_and_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000));
    let file = write_lines(tmp.path(), "in.jsonl", &[big, collected("ok", "i1")]);
    let mut ledger = open(&tmp.path().join("ledger"));
    let summary = ingest_file(&mut ledger, "file", &file, 10, clock, |_| {}, |_| Ok(())).unwrap();
    assert_eq!((summary.appended, summary.rejected), (1, 1));
    let (_, first) = ledger
        .entries("file", 0, 0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    match first.body {
        Body::Rejected { raw, class, reason } => {
            assert_eq!(class, RejectClass::Oversize);
            assert_eq!(raw.len(), 4096);
            assert!(
                reason.contains("input is 100010 bytes, over the limit of 65536"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn many_batches_span_many_blocks_and_log_ranges_cut_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..2500)
        .map(|i| stored(&format!("e{i}"), "i", "mysql"))
        .collect();
    let file = write_lines(tmp.path(), "in.jsonl", &lines);
    let mut ledger = open(&tmp.path().join("ledger"));
    ingest_file(&mut ledger, "file", &file, 1000, clock, |_| {}, |_| Ok(())).unwrap();
    let seqs: Vec<u64> = ledger
        .entries("file", 995, 1300)
        .unwrap()
        .map(|r| r.unwrap().1.seq)
        .collect();
    assert_eq!(seqs, (995..=1300).collect::<Vec<_>>());
    drop(ledger);
    let ledger = open(&tmp.path().join("ledger"));
    let report = ledger.verify(Depth::Events, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!(report.chains[0].entries, 2500);
}

#[test]
fn duplicates_are_recognised_after_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let file = write_lines(tmp.path(), "in.jsonl", &mixed_lines());
    {
        let mut ledger = open(&dir);
        ingest_file(&mut ledger, "file", &file, 2, clock, |_| {}, |_| Ok(())).unwrap();
    }
    let mut ledger = open(&dir);
    let again = ingest_file(&mut ledger, "other", &file, 3, clock, |_| {}, |_| Ok(())).unwrap();
    // Events are recognised by id across chains and reopening; rejected
    // lines are per source, and the source is the same file and line.
    assert_eq!(
        (again.appended, again.rejected, again.duplicates),
        (0, 0, 8)
    );
    let changed = write_lines(tmp.path(), "changed.jsonl", &[stored("e2", "i1", "cos")]);
    let conflict =
        ingest_file(&mut ledger, "file", &changed, 3, clock, |_| {}, |_| Ok(())).unwrap();
    assert_eq!(
        conflict.rejected, 1,
        "a changed event under a known id is a conflict after reopening"
    );
}
