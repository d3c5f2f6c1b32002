//! The projection saved beside the chains, updated batch by batch across reopenings,
//! equals one rebuilt from the chains.

use lifeledger::file::ingest_file;
use lifeledger_tests::{clock, collected, open, retry_locked, stored, write_lines};

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
    let kept = ledger.rebuild_projection(&mut |_| {}).unwrap();
    assert_eq!(kept.covered, loaded.covered);
    // What the rebuild saved, every state read back.
    let rebuilt = ledger.load_projection().unwrap();
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

/// A line of an account-wide event (no item) of `kind` for account `uin`.
fn account_event(id: &str, uin: u64, kind: &str) -> String {
    format!(
        r#"{{"schema_version":1,"event_id":"{id}","event_time":"2026-04-01T00:00:00Z","account":{{"app_id":"1250000001","uin":"{uin}"}},"kind":{kind}}}"#
    )
}

fn item_event(id: &str, uin: u64, item: &str, kind: &str) -> String {
    format!(
        r#"{{"schema_version":1,"event_id":"{id}","event_time":"2026-03-0{}T09:00:00Z","account":{{"app_id":"1250000001","uin":"{uin}"}},"item_id":"{item}","category":"asset_management","region":"SG","kind":{kind}}}"#,
        1 + id.len() % 9
    )
}

/// Events that revisit 50 items of 5 accounts over four rounds, with
/// account-wide events between the rounds.
fn revisiting_events() -> Vec<String> {
    let mut lines = Vec::new();
    for round in 0..4 {
        for i in 0..60u32 {
            let item = format!("item-{}", (i * 7 + round * 13) % 50);
            let uin = 100_000_000_000 + u64::from(i % 5);
            let kind = match round {
                0 => r#"{"type":"collected","sensitive":false,"purpose":"inventory"}"#.to_owned(),
                1 => r#"{"type":"stored","store":"mongodb"}"#.to_owned(),
                2 => format!(r#"{{"type":"backed_up","store":"cos","backup_id":"b{i}"}}"#),
                _ => r#"{"type":"deleted","store":"mongodb"}"#.to_owned(),
            };
            lines.push(item_event(&format!("e{round}-{i}"), uin, &item, &kind));
        }
        for a in 0..5u64 {
            let uin = 100_000_000_000 + a;
            lines.push(account_event(
                &format!("a{round}-{a}"),
                uin,
                r#"{"type":"deletion_requested","request_id":"dsr-1","categories":["asset_management"]}"#,
            ));
        }
    }
    lines
}

/// [`revisiting_events`] in two files of `dir`, and the number of events
/// in the first.
fn revisiting_halves(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, usize) {
    let lines = revisiting_events();
    let half = lines.len() / 2;
    let a = write_lines(dir, "a.jsonl", &lines[..half]);
    let b = write_lines(dir, "b.jsonl", &lines[half..]);
    (a, b, half)
}

/// Ingests `file` into chain `file` in batches of `batch`, folding after
/// each append as the consumer does (saving only when a save is due).
fn ingest_saving_when_due(
    ledger: &mut lifeledger_ledger::Ledger,
    file: &std::path::Path,
    batch: usize,
    projection: &mut lifeledger_ledger::projection::Projection,
) {
    ingest_file(
        ledger,
        "file",
        file,
        batch,
        clock,
        |_| {},
        |l| {
            l.catch_up_saving_when_due(projection)?;
            Ok(())
        },
    )
    .unwrap();
}

/// Every entry of chain `file` folded with every item in memory.
fn full_fold(ledger: &lifeledger_ledger::Ledger) -> lifeledger_ledger::projection::Projection {
    let mut full = lifeledger_ledger::projection::Projection::default();
    for entry in ledger.entries("file", 0, u64::MAX).unwrap() {
        full.apply(&entry.unwrap().1).unwrap();
    }
    full
}

/// A writer that folds after every append but saves only when a save is
/// due (as the consumer does) keeps what it has not saved in memory; a
/// crash before the save costs only folding those entries again, and
/// what ends up saved equals a fold of every entry.
#[test]
fn a_writer_saving_when_due_loses_nothing_to_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (a, b, half) = revisiting_halves(tmp.path());
    // Room for every item first (so nothing is due to be saved), then for
    // only four (so that states are saved, dropped and read back).
    let roomy = lifeledger_ledger::LedgerOptions::default();
    let options = lifeledger_ledger::LedgerOptions {
        projection_resident: 4,
        ..roomy
    };
    {
        // Folded as it goes, never saved: then the process dies.
        let mut ledger = retry_locked(|| lifeledger_ledger::Ledger::open(&dir, roomy));
        let mut projection = ledger.open_projection().unwrap();
        ingest_saving_when_due(&mut ledger, &a, 9, &mut projection);
        assert!(projection.unsaved() > 0, "nothing is waiting to be saved");
        // What the writer holds in memory is the newer: the facts view
        // shows every fold, saved or not.
        let full = full_fold(&ledger);
        let facts = ledger.facts(&projection).unwrap();
        let mut seen = Vec::new();
        lifeledger_ledger::projection::facts::Facts::each_item(&facts, &mut |item| {
            seen.push(item.clone())
        })
        .unwrap();
        assert_eq!(seen, full.items.values().cloned().collect::<Vec<_>>());
    }
    let mut ledger = retry_locked(|| lifeledger_ledger::Ledger::open(&dir, options));
    let mut projection = ledger.open_projection().unwrap();
    assert!(
        projection.next_seq("file") < half as u64,
        "the folds never saved were saved after all: cursor {}",
        projection.next_seq("file")
    );
    ledger.catch_up_saving_when_due(&mut projection).unwrap();
    ingest_saving_when_due(&mut ledger, &b, 13, &mut projection);
    ledger.save_projection(&mut projection).unwrap();
    drop(ledger);
    let ledger = open(&dir);
    assert_eq!(ledger.load_projection().unwrap(), full_fold(&ledger));
}

/// A writer keeps only a few items in memory (it reads the others back
/// when an entry folds into them): whatever it drops and reads back, the
/// saved projection, and what the facts view shows of it, equal a fold of
/// every entry with every item in memory.
#[test]
fn a_writer_holding_few_items_saves_what_a_full_fold_holds() {
    use lifeledger_ledger::projection::facts::Facts;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    // Items come back again and again, interleaved with their accounts'
    // events, so that dropped states must be read back to be right.
    let (a, b, _) = revisiting_halves(tmp.path());
    let options = lifeledger_ledger::LedgerOptions {
        projection_resident: 3,
        ..lifeledger_ledger::LedgerOptions::default()
    };
    for (file, batch) in [(&a, 7), (&b, 11)] {
        // Reopened between the files: the writer starts from what it saved.
        let mut ledger = retry_locked(|| lifeledger_ledger::Ledger::open(&dir, options));
        let mut projection = ledger.open_projection().unwrap();
        assert!(projection.is_partial());
        ingest_file(
            &mut ledger,
            "file",
            file,
            batch,
            clock,
            |_| {},
            |l| {
                l.catch_up(&mut projection, &mut |_| {})?;
                assert!(
                    projection.resident() <= 3 + batch,
                    "resident {}",
                    projection.resident()
                );
                Ok(())
            },
        )
        .unwrap();
        // Without a monitor asking, a writer keeps no list of what it
        // touched (it would hold every item id it ever folded).
        assert_eq!(projection.take_touched().items.len(), 0);
    }
    let ledger = open(&dir);
    let full = full_fold(&ledger);
    assert_eq!(full.items.len(), 50);
    assert_eq!(full.accounts.len(), 5);
    let saved = ledger.load_projection().unwrap();
    assert_eq!(saved, full);
    // The facts view over an empty partial projection reads every item
    // back from the saved one, in item order.
    let partial = ledger.open_projection().unwrap();
    let facts = ledger.facts(&partial).unwrap();
    let mut seen = Vec::new();
    facts
        .each_item(&mut |item| seen.push(item.clone()))
        .unwrap();
    assert_eq!(seen, full.items.values().cloned().collect::<Vec<_>>());
    let account = full.accounts.keys().next().unwrap();
    assert_eq!(
        facts.account(account).unwrap().as_deref(),
        full.accounts.get(account)
    );
    assert_eq!(facts.item("no-such-item").unwrap(), None);
    // Items in memory are newer than the saved ones and are merged in
    // order: one changed, one not saved yet.
    let mut resident = ledger.open_projection().unwrap();
    let mut changed = full.items["item-1"].clone();
    changed.category = Some("changed".into());
    resident.items.insert("item-1".into(), changed.clone());
    let unsaved = lifeledger_ledger::projection::ItemState {
        item_id: "item-10a".into(),
        ..Default::default()
    };
    resident.items.insert("item-10a".into(), unsaved.clone());
    let facts = ledger.facts(&resident).unwrap();
    let mut merged = Vec::new();
    facts
        .each_item(&mut |item| merged.push(item.clone()))
        .unwrap();
    let mut expected = full.items.clone();
    expected.insert("item-1".into(), changed);
    expected.insert("item-10a".into(), unsaved);
    assert_eq!(merged, expected.into_values().collect::<Vec<_>>());
}

/// Every file under `dir` with its bytes, to show a reader changed none.
fn files_under(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// A reader (no index database, nothing copied), beside a writer whose
/// projection lags its evidence, folds the rest privately and judges from
/// a consistent prefix; finds event ids in place; a call that needs the
/// index database refuses instead of answering from none; and no byte of
/// the ledger's evidence or projection changes.
#[test]
fn a_reader_folds_what_the_writer_has_not_saved_without_the_index_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let first: Vec<String> = (0..400)
        .map(|i| collected(&format!("c{i}"), &format!("item-{}", i % 150)))
        .collect();
    let later: Vec<String> = (0..150)
        .map(|i| deleted(&format!("d{i}"), &format!("item-{i}"), "mongodb"))
        .chain((0..150).map(|i| stored(&format!("s{i}"), &format!("item-{i}"), "cos")))
        .collect();
    let a = write_lines(tmp.path(), "a.jsonl", &first);
    let b = write_lines(tmp.path(), "b.jsonl", &later);
    let mut writer = open(&dir);
    let mut projection = writer.open_projection().unwrap();
    ingest_file(
        &mut writer,
        "file",
        &a,
        64,
        clock,
        |_| {},
        |l| l.catch_up(&mut projection, &mut |_| {}).map(|_| ()),
    )
    .unwrap();
    // The writer appends more but does not fold it: its saved projection
    // lags its evidence by 300 entries.
    ingest_file(&mut writer, "file", &b, 64, clock, |_| {}, |_| Ok(())).unwrap();
    let evidence_and_states = |d: &std::path::Path| {
        let mut files = files_under(&d.join("segments"));
        files.extend(files_under(&d.join("projection")));
        files.insert(
            d.join("manifest"),
            std::fs::read(d.join("manifest")).unwrap(),
        );
        files
    };
    let before = evidence_and_states(&dir);

    let mut reading = lifeledger_ledger::ReadOnlyLedger::open(&dir).unwrap();
    let ledger = reading.ledger_mut();
    let mut partial = ledger.open_or_rebuild_projection(&mut |_| {}).unwrap();
    assert_eq!(partial.next_seq("file"), 400, "the writer's save");
    ledger.catch_up(&mut partial, &mut |_| {}).unwrap();
    assert_eq!(partial.next_seq("file"), 700);
    let full = full_fold(ledger);
    let facts = ledger.facts(&partial).unwrap();
    // A walk in pieces from the middle (a paged sweep) sees the items from
    // there on, once each, in order: the saved ones and the resident ones
    // merged.
    let mut walked = Vec::new();
    lifeledger_ledger::projection::facts::Facts::items_from(&facts, "item-5", &mut |item| {
        walked.push(item.clone());
        if walked.len() == 40 {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })
    .unwrap();
    let expected: Vec<_> = full
        .items
        .range("item-5".to_owned()..)
        .take(40)
        .map(|(_, item)| item.clone())
        .collect();
    assert_eq!(walked, expected);
    for i in [0, 1, 77, 149] {
        let id = format!("item-{i}");
        let item = lifeledger_ledger::projection::facts::Facts::item(&facts, &id)
            .unwrap()
            .unwrap();
        assert_eq!(*item, full.items[&id], "{id}");
    }
    let entries = ledger.entries_of_item(&partial, "item-7").unwrap().unwrap();
    // item-7: collected at c7 and c157 and c307, deleted, stored on cos.
    assert_eq!(entries.len(), 5);
    // Event ids, subtrees and staged batches are read in place.
    let (chain, _) = reading.find_event("c7").unwrap().unwrap();
    assert_eq!(chain, "file");
    assert!(reading.staged_batches().unwrap().is_empty());
    drop(reading);
    assert!(
        before == evidence_and_states(&dir),
        "a reader changed the ledger"
    );
}

/// A projection store handing its saved states to a monitor keeps what
/// each save wrote since the last hand-over, and the monitor reads items
/// from there before the runs: every item and account then reads as a
/// fold of every entry has it, over saves that revisit the same items
/// between hand-overs (the newest save must win) and across them.
#[test]
fn saved_states_handed_over_with_recent_saves_read_as_a_full_fold() {
    use lifeledger_ledger::projection::facts::Facts;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let mut ledger = open(&dir);
    let mut projection = ledger.open_projection().unwrap();
    let mut store = ledger.detach_projection_store().unwrap();
    store.keep_recent_saves();
    let lines = revisiting_events();
    for (n, chunk) in lines.chunks(23).enumerate() {
        let inputs = chunk
            .iter()
            .enumerate()
            .map(|(i, line)| lifeledger_ledger::Incoming {
                source: lifeledger_ledger::Source::File {
                    path: "revisiting.jsonl".into(),
                    line: (n * 23 + i + 1) as u64,
                },
                raw: line.clone().into_bytes(),
            })
            .collect();
        ledger.append("file", inputs, clock()).unwrap();
        store.advance(ledger.take_appended());
        store.catch_up_saving_when_due(&mut projection).unwrap();
        // A save after every append: each hand-over covers several.
        store.save_projection(&mut projection).unwrap();
        if n % 4 != 3 {
            continue;
        }
        let handed = store.hand_over_saved_states();
        let without = projection.without_states();
        let facts = handed.facts(&without);
        let mut so_far = lifeledger_ledger::projection::Projection::default();
        for entry in ledger.entries("file", 0, u64::MAX).unwrap() {
            so_far.apply(&entry.unwrap().1).unwrap();
        }
        for (id, item) in &so_far.items {
            assert_eq!(facts.item(id).unwrap().as_deref(), Some(item), "{id}");
        }
        for (key, account) in &so_far.accounts {
            assert_eq!(
                facts.account(key).unwrap().as_deref(),
                Some(account),
                "{key}"
            );
        }
    }
}
