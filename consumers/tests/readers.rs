//! Reading commands beside a writer: each runs in a loop while `ingest`
//! appends, never fails, answers from a consistent prefix, and changes no
//! byte of the ledger directory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lifeledger_tests::{collected, dir_listing, stored, write_lines};

fn run(ledger: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .arg("--ledger")
        .arg(ledger)
        .args(args)
        .output()
        .unwrap()
}

fn policy_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ledger/policies/retention-2026-11.toml")
}

fn batch_lines(batch: usize) -> Vec<String> {
    (0..10)
        .flat_map(|i| {
            let item = format!("b{batch}-i{i}");
            [
                collected(&format!("c-{item}"), &item),
                stored(&format!("s-{item}"), &item, "mysql"),
            ]
        })
        .collect()
}

const READERS: &[&[&str]] = &[
    &["verify", "--json"],
    &["head", "--json"],
    &["log", "--json", "--from", "0", "--to", "5"],
    &["status", "--json"],
    &["item", "b0-i1", "--json"],
    &["findings", "--json"],
    &["timeline", "--item", "b0-i1", "--json"],
    &["replay", "--json"],
];

#[test]
fn reading_commands_change_no_byte_of_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let file = write_lines(tmp.path(), "in.jsonl", &batch_lines(0));
    assert!(
        run(&ledger, &["ingest", file.to_str().unwrap()])
            .status
            .success()
    );
    let publish = run(
        &ledger,
        &["policy", "publish", policy_file().to_str().unwrap()],
    );
    assert!(publish.status.success(), "{publish:?}");
    let before = dir_listing(&ledger);
    for args in READERS {
        let out = run(&ledger, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
    }
    let export = tmp.path().join("bundle");
    assert!(
        run(&ledger, &["export", "--out", export.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(dir_listing(&ledger), before, "a reading command wrote");
}

#[test]
fn reading_commands_beside_a_writer_never_fail_and_see_a_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let first = write_lines(tmp.path(), "b0.jsonl", &batch_lines(0));
    assert!(
        run(&ledger, &["ingest", first.to_str().unwrap()])
            .status
            .success()
    );
    let publish = run(
        &ledger,
        &["policy", "publish", policy_file().to_str().unwrap()],
    );
    assert!(publish.status.success(), "{publish:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let ledger = ledger.clone();
        let dir = tmp.path().to_owned();
        std::thread::spawn(move || {
            let mut batch = 1;
            while !stop.load(Ordering::Relaxed) {
                let file = write_lines(&dir, &format!("b{batch}.jsonl"), &batch_lines(batch));
                let out = run(
                    &ledger,
                    &["ingest", file.to_str().unwrap(), "--batch-size", "3"],
                );
                assert!(out.status.success(), "writer: {out:?}");
                batch += 1;
                // Appending without pause would make the ledger, and every
                // reader's work, grow without bound during the test.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            batch
        })
    };

    let runs = 50;
    let mut last_seen = 0u64;
    for n in 0..runs {
        for args in READERS {
            let out = run(&ledger, args);
            assert_eq!(
                out.status.code(),
                Some(0),
                "run {n} of {args:?} beside the writer: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let json: serde_json::Value = match args[0] {
                "log" => continue,
                _ => serde_json::from_slice(&out.stdout).unwrap(),
            };
            if args[0] == "verify" {
                assert_eq!(json["intact"], true, "{json}");
                let entries: u64 = json["chains"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["entries"].as_u64().unwrap())
                    .sum();
                // Each answer covers at least what an earlier one did.
                assert!(entries >= last_seen, "{entries} after {last_seen}");
                last_seen = entries;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let batches = writer.join().unwrap();
    assert!(batches > 1, "the writer never appended beside the readers");
    let out = run(&ledger, &["verify", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["intact"], true);
}
