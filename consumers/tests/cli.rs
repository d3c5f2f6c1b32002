//! The `lifeledger` binary: commands, output and exit codes. These live in
//! the binary's own package so that cargo builds the binary before them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Output};

use lifeledger_tests::segments::{cut_file, flip_byte, frame_spans};
use lifeledger_tests::{collected, stored, write_lines};

fn run(ledger: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .arg("--ledger")
        .arg(ledger)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ingest_verify_log_head_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let file = write_lines(
        tmp.path(),
        "in.jsonl",
        &[
            collected("e1", "i1"),
            "garbage".into(),
            stored("e2", "i1", "mysql"),
            collected("e1", "i1"),
        ],
    );
    let out = run(&ledger, &["ingest", file.to_str().unwrap(), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(summary["appended"], 2);
    assert_eq!(summary["rejected"], 1);
    assert_eq!(summary["duplicates"], 1);
    assert_eq!(summary["chain_entries"], 3);

    let out = run(&ledger, &["verify"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("intact, 3 entries (2 events, 1 rejected)"),
        "{}",
        stdout(&out)
    );

    let out = run(&ledger, &["log", "--from", "1", "--to", "1", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(line["seq"], 1);
    assert_eq!(line["body"]["type"], "rejected");
    assert_eq!(line["body"]["raw"], "garbage");
    assert_eq!(line["source"]["line"], 2);

    let out = run(&ledger, &["head", "--json"]);
    let heads: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(heads[0]["entries"], 3);
    assert_eq!(heads[0]["last_seq"], 2);
}

#[test]
fn verify_exit_codes_tell_intact_broken_and_unusable_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");

    let missing = run(&ledger, &["verify"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no ledger at"));
    assert!(!ledger.exists(), "verify must not create a ledger");

    let file = write_lines(
        tmp.path(),
        "in.jsonl",
        &[collected("e1", "i1"), stored("e2", "i1", "mysql")],
    );
    assert_eq!(
        run(&ledger, &["ingest", file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(run(&ledger, &["verify"]).status.code(), Some(0));

    // Cut the last acknowledged frame short, as a lost disk write would.
    {
        let last = frame_spans(&ledger, "file").pop().unwrap();
        assert_eq!((last.first_seq, last.count), (0, 2));
        cut_file(&last.path, last.offset + last.len - 5);
    }
    let broken = run(&ledger, &["verify", "--json"]);
    assert_eq!(broken.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&broken)).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(report["findings"][0]["first_bad_seq"], 0);
    assert!(
        report["findings"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("acknowledged 2 entries"),
        "{report}"
    );
}

fn policy_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ledger/policies/retention-2026-11.toml")
}

#[test]
fn policy_publish_then_status_item_and_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let policy = policy_file();

    // Before any policy is published, verdicts cannot be judged.
    let file = write_lines(tmp.path(), "in.jsonl", &[collected("e1", "i1")]);
    assert_eq!(
        run(&ledger, &["ingest", file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let none = run(&ledger, &["status"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no retention policy"));

    let out = run(&ledger, &["policy", "publish", policy.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("published policy 2026-11.3"));
    let again = run(&ledger, &["policy", "publish", policy.to_str().unwrap()]);
    assert!(
        stdout(&again).contains("already published"),
        "{}",
        stdout(&again)
    );

    // i1 (asset management, rule A) is retained while hosting runs; i2
    // (product configuration, rule B) went to COS, which its category forbids.
    let product = stored("e3", "i2", "cos").replace("asset_management", "product_configuration");
    let collected_product =
        collected("e2", "i2").replace("asset_management", "product_configuration");
    let file = write_lines(tmp.path(), "more.jsonl", &[collected_product, product]);
    assert_eq!(
        run(&ledger, &["ingest", file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );

    let out = run(&ledger, &["status", "--as-of", "2026-04-01", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["items"], 2);
    assert_eq!(status["policy_version"], "2026-11.3");
    assert_eq!(status["by_status"]["retained"], 1);
    assert_eq!(status["by_status"]["due"], 1);
    assert_eq!(status["by_violation"]["forbidden_store"], 1);
    assert_eq!(status["findings"], 1);

    let out = run(&ledger, &["item", "i2", "--as-of", "2026-04-01", "--json"]);
    let item: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(item["verdict"]["status"]["status"], "due");
    assert_eq!(item["verdict"]["deadline"]["rule"], "B");
    // Collected 2 March 09:00 UTC (17:00 in Singapore): 180 whole days on
    // Singapore dates is all of 29 August there.
    assert_eq!(
        item["verdict"]["deadline"]["due_by"],
        "2026-08-29T15:59:59.999999999Z"
    );
    assert_eq!(item["verdict"]["deadline"]["day"], "2026-08-29");
    assert_eq!(item["verdict"]["deadline"]["zone"], "Asia/Singapore");
    assert!(
        item["verdict"]["deadline"]["clause"]
            .as_str()
            .unwrap()
            .contains("rule B")
    );

    let out = run(&ledger, &["findings", "--as-of", "2026-09-01", "--json"]);
    let findings: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["i2"]);
    assert_eq!(findings[0]["status"]["status"], "overdue");
}

#[test]
fn a_bad_policy_is_refused_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(policy_file())
            .unwrap()
            .replacen("rule = \"C\"", "rule = \"D\"", 1);
    let line = text
        .lines()
        .position(|l| l.contains("rule = \"D\""))
        .unwrap()
        + 1;
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    let out = run(
        &tmp.path().join("ledger"),
        &["policy", "check", bad.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "policy line {line}: categories.console_configuration.rule: no rule \"D\""
        )),
        "{err}"
    );
}

#[test]
fn checkpoint_export_verify_prove_and_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let key = tmp.path().join("signer");
    assert_eq!(
        run(
            &ledger,
            &[
                "keygen",
                "--name",
                "test-signer",
                "--out",
                key.to_str().unwrap()
            ]
        )
        .status
        .code(),
        Some(0)
    );
    let private = tmp.path().join("signer.key");
    let public = tmp.path().join("signer.pub");
    assert_eq!(
        run(&ledger, &["keygen", "--out", key.to_str().unwrap()])
            .status
            .code(),
        Some(2),
        "keygen never overwrites a key"
    );
    let policy = policy_file();
    run(&ledger, &["policy", "publish", policy.to_str().unwrap()]);
    let file = write_lines(
        tmp.path(),
        "in.jsonl",
        &[
            collected("e1", "i1"),
            stored("e2", "i1", "mysql"),
            "junk".into(),
        ],
    );
    run(&ledger, &["ingest", file.to_str().unwrap()]);
    let out = run(
        &ledger,
        &[
            "checkpoint",
            "--key",
            private.to_str().unwrap(),
            "--origin",
            "lifeledger.invalid/cli-test",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).starts_with("lifeledger.invalid/cli-test\n4\n"),
        "{}",
        stdout(&out)
    );

    // Ingest with a key signs a checkpoint at its end.
    let more = write_lines(tmp.path(), "more.jsonl", &[stored("e3", "i1", "mongodb")]);
    let out = run(
        &ledger,
        &[
            "ingest",
            more.to_str().unwrap(),
            "--checkpoint-key",
            private.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bundle = tmp.path().join("all.bundle");
    let out = run(&ledger, &["export", "--out", bundle.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("5 entries, 2 checkpoints"),
        "{}",
        stdout(&out)
    );
    let ok = run(
        &ledger,
        &[
            "verify",
            bundle.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    let report: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(report["report"]["checkpoints_verified"], 2);

    // One flipped byte in the rejected line's bytes: verification fails
    // with the class and seq named, exit 1.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes
        .windows(4)
        .rposition(|w| w == b"junk")
        .expect("the rejected line is in the bundle");
    bytes[at] ^= 0x20;
    let tampered = tmp.path().join("tampered.bundle");
    std::fs::write(&tampered, &bytes).unwrap();
    let bad = run(
        &ledger,
        &[
            "verify",
            tampered.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&bad)).unwrap();
    assert_eq!(report["report"]["findings"][0]["class"], "changed_entry");
    assert_eq!(report["report"]["findings"][0]["first_bad_seq"], 2);

    // Not a bundle at all: unusable input, exit 2.
    let junk = tmp.path().join("junk.bundle");
    std::fs::write(&junk, b"hello").unwrap();
    assert_eq!(
        run(
            &ledger,
            &[
                "verify",
                junk.to_str().unwrap(),
                "--key",
                public.to_str().unwrap()
            ]
        )
        .status
        .code(),
        Some(2)
    );

    let proof = tmp.path().join("i1.proof.json");
    let out = run(&ledger, &["prove", "i1", "--out", proof.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &ledger,
        &[
            "verify-proof",
            proof.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--as-of",
            "2026-04-01T00:00:00Z",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let checked: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(checked["valid"], true);
    assert_eq!(checked["report"]["verdict"]["status"]["status"], "retained");

    // The same proof with its entries repeated or out of order is refused,
    // though each entry's own inclusion proof still verifies.
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&proof).unwrap()).unwrap();
    let entries = original["entries"].as_array().unwrap().clone();
    assert!(entries.len() >= 2, "{original}");
    let mut duplicated = original.clone();
    duplicated["entries"]
        .as_array_mut()
        .unwrap()
        .push(entries[0].clone());
    let mut swapped = original.clone();
    swapped["entries"].as_array_mut().unwrap().swap(0, 1);
    for (name, tampered) in [("duplicated", duplicated), ("swapped", swapped)] {
        let path = tmp.path().join(format!("{name}.proof.json"));
        std::fs::write(&path, serde_json::to_vec(&tampered).unwrap()).unwrap();
        let out = run(
            &ledger,
            &[
                "verify-proof",
                path.to_str().unwrap(),
                "--key",
                public.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
        let said = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(said.contains("(chain, seq) order"), "{name}: {said}");
    }
}

#[test]
fn the_tamper_corpus_through_the_binary() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tamper-corpus");
    let verify = |name: &str, key: &str| {
        let mut args = vec![
            "verify".to_owned(),
            corpus
                .join(format!("{name}.bundle"))
                .to_string_lossy()
                .into_owned(),
            "--key".to_owned(),
            corpus.join(key).to_string_lossy().into_owned(),
        ];
        let trusted = corpus.join(format!("{name}.trusted"));
        if trusted.exists() {
            args.push("--trusted-checkpoint".into());
            args.push(trusted.to_string_lossy().into_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(Path::new("/nonexistent-ledger"), &args).status.code()
    };
    assert_eq!(verify("00-intact", "corpus.pub"), Some(0));
    assert_eq!(verify("09-recomputed-chain", "corpus.pub"), Some(1));
    assert_eq!(verify("11-wrong-key", "other.pub"), Some(1));
}

/// Every file under a ledger directory, with its bytes.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn json_of(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout(out)).unwrap()
}

#[test]
fn replays_show_past_states_and_never_write_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/samples/lifecycle-sample.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&sample)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let policy = policy_file();
    let full = tmp.path().join("full");
    let prefix = tmp.path().join("prefix");
    // The full ledger, and one that only ever saw the first 60 lines.
    for (ledger, take) in [(&full, lines.len()), (&prefix, 60)] {
        let out = run(ledger, &["policy", "publish", policy.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0));
        let file = write_lines(tmp.path(), "part.jsonl", &lines[..take]);
        let out = run(
            ledger,
            &["ingest", file.to_str().unwrap(), "--batch-size", "7"],
        );
        assert_eq!(out.status.code(), Some(0));
    }
    let heads = json_of(&run(&prefix, &["head", "--json"]));
    let file_head = heads
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["chain"] == "file")
        .unwrap();
    let last_seq = file_head["last_seq"].as_u64().unwrap();
    let until = format!("file@{last_seq}");
    // `status` catches the saved projection up (a write); replays must not
    // write at all, so the snapshot comes after it.
    let as_of = "2026-09-01";
    let now = json_of(&run(&full, &["status", "--as-of", as_of, "--json"]));
    let status = json_of(&run(&prefix, &["status", "--as-of", as_of, "--json"]));
    let before = snapshot(&full);

    // As of the same moment, replaying the full ledger up to the prefix's
    // last seq says what the prefix ledger's own projection says.
    let replayed = json_of(&run(
        &full,
        &["replay", "--until", &until, "--as-of", as_of, "--json"],
    ));
    for field in [
        "items",
        "findings",
        "by_status",
        "by_violation",
        "by_category",
        "copies_by_store",
    ] {
        assert_eq!(replayed["summary"][field], status[field], "{field}");
    }
    assert_eq!(replayed["point"]["pinned_chain"], "file");
    assert_eq!(replayed["point"]["chains"]["file"], last_seq + 1);
    // The whole ledger replayed is today's projection.
    let all = json_of(&run(&full, &["replay", "--as-of", as_of, "--json"]));
    assert_eq!(all["summary"]["by_status"], now["by_status"]);
    assert_ne!(all["summary"]["items"], replayed["summary"]["items"]);

    // What changed after the prefix: only entries past its last seq.
    let diff = json_of(&run(
        &full,
        &["diff", "--from", &until, "--to", "2999-01-01", "--json"],
    ));
    let added = diff["diff"]["copies_added"].as_array().unwrap();
    let deleted = diff["diff"]["copies_deleted"].as_array().unwrap();
    assert!(!added.is_empty() && !deleted.is_empty());
    for c in added.iter().chain(deleted) {
        assert!(c["at"]["seq"].as_u64().unwrap() > last_seq, "{c}");
    }
    assert!(!diff["diff"]["verdicts"].as_array().unwrap().is_empty());
    let backwards = run(&full, &["diff", "--from", "2999-01-01", "--to", &until]);
    assert_eq!(backwards.status.code(), Some(2));

    // A timeline holds every event naming the item, in event-time order.
    let timeline = json_of(&run(&full, &["timeline", "--item", "item-0-0", "--json"]));
    let rows = timeline["rows"].as_array().unwrap();
    let expected = lines
        .iter()
        .filter(|l| l.contains("\"item_id\":\"item-0-0\""))
        .count();
    let own = rows.iter().filter(|r| r["item_id"] == "item-0-0").count();
    assert_eq!(own, expected);
    assert!(
        rows.windows(2)
            .all(|w| w[0]["event_time"].as_str() <= w[1]["event_time"].as_str())
    );
    assert!(rows.iter().all(|r| r["hash"].as_str().unwrap().len() == 64));
    assert!(rows[0]["source"].as_str().unwrap().contains("part.jsonl:"));

    // Rule B shortened: what-if names items under rule B, with both answers.
    let stricter = std::fs::read_to_string(&policy)
        .unwrap()
        .replace(
            "minimum_days = 180\ndays = 180",
            "minimum_days = 30\ndays = 30",
        )
        .replace("policy_version = \"", "policy_version = \"short-b-");
    let stricter_file = tmp.path().join("stricter.toml");
    std::fs::write(&stricter_file, stricter).unwrap();
    let whatif = json_of(&run(
        &full,
        &[
            "what-if",
            "--policy",
            stricter_file.to_str().unwrap(),
            "--as-of",
            "2026-03-01",
            "--json",
        ],
    ));
    let differences = whatif["differences"].as_array().unwrap();
    assert!(!differences.is_empty());
    for d in differences {
        assert_eq!(d["current"]["deadline"]["rule"], "B", "{d}");
        assert_ne!(
            d["current"]["deadline"]["due_by"],
            d["alternative"]["deadline"]["due_by"]
        );
    }
    assert_eq!(whatif["alternative"]["version"], "short-b-2026-11.3");

    // Human output of each, for good measure.
    for args in [
        vec!["replay", "--until", &until],
        vec!["diff", "--from", &until],
        vec!["timeline", "--account", "1250000001/100000000001"],
        vec!["what-if", "--policy", stricter_file.to_str().unwrap()],
    ] {
        let out = run(&full, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        snapshot(&full) == before,
        "a replay command wrote to the ledger"
    );

    // While a writer holds the ledger, replays still work (they read the
    // evidence in place and a private copy of the index). The writer may
    // write its own index; the evidence stays as it was.
    let evidence = |dir: &Path| {
        let mut files = snapshot(dir);
        files.retain(|path, _| !path.starts_with(dir.join("index")));
        files
    };
    let evidence_before = evidence(&full);
    let held = lifeledger_ledger::Ledger::open(&full, lifeledger_ledger::LedgerOptions::default())
        .unwrap();
    let out = run(
        &full,
        &["replay", "--until", &until, "--as-of", as_of, "--json"],
    );
    assert_eq!(json_of(&out)["summary"], replayed["summary"]);
    drop(held);
    assert!(
        evidence(&full) == evidence_before,
        "the evidence changed while a replay ran beside a writer"
    );
}

#[test]
fn the_monitor_alerts_once_per_change_as_its_clock_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/samples/lifecycle-sample.jsonl");
    let policy = policy_file();
    assert_eq!(
        run(&ledger, &["policy", "publish", policy.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        run(&ledger, &["ingest", sample.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let alerts_file = tmp.path().join("alerts.jsonl");
    let pass = |now: &str| {
        let out = run(
            &ledger,
            &[
                "monitor",
                "--once",
                "--json",
                "--alerts-file",
                alerts_file.to_str().unwrap(),
                "--now",
                now,
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    assert!(pass("2026-02-01").is_empty());
    let june = pass("2026-06-01");
    assert_eq!(june.len(), 1);
    assert_eq!(june[0]["alert_id"], "item-2-6#1");
    assert_eq!(june[0]["state"], "overdue");
    assert_eq!(june[0]["copies_remaining"], serde_json::json!(["mongodb"]));
    assert_eq!(june[0]["rule"], "C");
    assert_eq!(june[0]["policy_version"], "2026-11.3");
    assert!(june[0]["clause"].as_str().unwrap().contains("rule C"));
    assert_eq!(june[0]["account"]["app_id"], "1250000003");
    assert!(june[0]["cause"]["seq"].is_u64());
    // Found by the wakeup the first pass set, not by a sweep.
    assert_eq!(june[0]["cause"]["by"], "clock");
    // The same moment again: nothing changed, nothing sent.
    assert!(pass("2026-06-01").is_empty());
    let july = pass("2026-07-10");
    let due: Vec<_> = july.iter().filter(|a| a["state"] == "due_soon").collect();
    assert!(due.iter().any(|a| a["alert_id"] == "item-2-4#1"));
    let august = pass("2026-08-01");
    let a24 = august.iter().find(|a| a["item_id"] == "item-2-4").unwrap();
    assert_eq!(
        (
            a24["alert_id"].as_str(),
            a24["previous_state"].as_str(),
            a24["state"].as_str()
        ),
        (Some("item-2-4#2"), Some("due_soon"), Some("overdue"))
    );

    // Its last copy deleted (late): clear again, once.
    let deletion = r#"{"schema_version":1,"event_id":"evt-del-2-4","event_time":"2026-07-20T00:00:00Z","account":{"app_id":"1250000003","uin":"100000000003"},"item_id":"item-2-4","category":"product_configuration","kind":{"type":"deleted","store":"mongodb"}}"#;
    let file = write_lines(tmp.path(), "deletion.jsonl", &[deletion.to_owned()]);
    assert_eq!(
        run(&ledger, &["ingest", file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let cleared = pass("2026-08-01");
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!(cleared[0]["alert_id"], "item-2-4#3");
    assert_eq!(cleared[0]["state"], "clear");
    assert_eq!(cleared[0]["verdict"], "deleted_late");
    // Seen as the entry folded since the last pass, not by looking at
    // every item again: a pass under the same policy and horizon looks
    // only at what changed.
    assert_eq!(cleared[0]["cause"]["by"], "entry");
    assert!(pass("2026-08-01").is_empty());

    // The file holds each alert exactly once.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&alerts_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), lines.len());
    assert_eq!(lines.len(), 1 + july.len() + august.len() + 1);
}

#[test]
fn a_report_on_a_broken_ledger_says_so_and_shows_only_the_intact_part() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/samples/lifecycle-sample.jsonl");
    let policy = policy_file();
    assert_eq!(
        run(&ledger, &["policy", "publish", policy.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        run(
            &ledger,
            &["ingest", sample.to_str().unwrap(), "--batch-size", "10"]
        )
        .status
        .code(),
        Some(0)
    );
    // Flip one byte inside the chain's last frame (compressed: the whole
    // frame is then unreadable, from its first seq).
    let (damaged_from, block_count) = {
        let frames = frame_spans(&ledger, "file");
        let last = frames.last().unwrap();
        flip_byte(&last.path, last.offset + last.len / 2, 0x20);
        (last.first_seq, frames.len())
    };
    assert!(block_count > 1);
    let page = tmp.path().join("report.html");
    let out = run(
        &ledger,
        &[
            "report",
            "--as-of",
            "2026-08-01",
            "--out",
            page.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("verification FAILED"),
        "{}",
        stdout(&out)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Verification FAILED"));
    assert!(
        html.contains(&format!(
            "<code>file</code> stops before seq {damaged_from}"
        )),
        "{}",
        &html[..html.len().min(3000)]
    );
}

#[test]
fn library_log_lines_go_through_the_binarys_filter_without_colour_on_a_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let file = write_lines(tmp.path(), "in.jsonl", &[collected("e1", "i1")]);
    assert_eq!(
        run(&ledger, &["ingest", file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    // `status` opens the index database (sled); `verify` reads only the
    // segments.
    let status = |filter: &str| {
        Command::new(env!("CARGO_BIN_EXE_lifeledger"))
            .arg("--ledger")
            .arg(&ledger)
            .arg("status")
            .env("LIFELEDGER_LOG", filter)
            .env_remove("NO_COLOR")
            .output()
            .unwrap()
    };
    // sled logs through the `log` crate; its lines reach stderr only
    // through the binary's subscriber, formatted and filtered by it.
    let chatty = status("sled=debug");
    let stderr = String::from_utf8_lossy(&chatty.stderr);
    let sled_lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" sled::")).collect();
    assert!(!sled_lines.is_empty(), "no sled line at debug: {stderr}");
    assert!(
        sled_lines
            .iter()
            .all(|l| l.contains(" DEBUG ") || l.contains(" INFO ") || l.contains(" WARN ")),
        "{sled_lines:?}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes on a pipe: {stderr:?}"
    );
    // The default filter keeps them out.
    let quiet = status("warn");
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("sled::"),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
}

#[test]
fn empty_or_impossible_ranges_and_unknown_chains_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let file = write_lines(
        tmp.path(),
        "in.jsonl",
        &[collected("e1", "i1"), stored("e2", "i1", "mysql")],
    );
    assert_eq!(
        run(&ledger, &["ingest", file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let out_file = tmp.path().join("x.bundle");
    let out_file = out_file.to_str().unwrap();
    for (args, says) in [
        (
            vec!["log", "--from", "10", "--to", "5"],
            "--from 10 lies after --to 5",
        ),
        (vec!["log", "--chain", "nope"], "no chain \"nope\""),
        (
            vec!["export", "--out", out_file, "--chain", "nope"],
            "no chain \"nope\"",
        ),
        (
            vec![
                "export", "--out", out_file, "--chain", "file", "--from", "10", "--to", "5",
            ],
            "--from 10 lies after --to 5",
        ),
    ] {
        let out = run(&ledger, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn a_garbage_trusted_checkpoint_and_a_proof_without_checkpoint_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let key = tmp.path().join("signer");
    assert_eq!(
        run(
            &ledger,
            &["keygen", "--name", "t", "--out", key.to_str().unwrap()]
        )
        .status
        .code(),
        Some(0)
    );
    let file = write_lines(
        tmp.path(),
        "in.jsonl",
        &[collected("e1", "i1"), stored("e2", "i1", "mysql")],
    );
    assert_eq!(
        run(&ledger, &["ingest", file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let proof = tmp.path().join("i1.proof");
    let out = run(&ledger, &["prove", "i1", "--out", proof.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no checkpoint to prove i1 against"),
        "{stderr}"
    );

    let private = tmp.path().join("signer.key");
    let public = tmp.path().join("signer.pub");
    assert_eq!(
        run(&ledger, &["checkpoint", "--key", private.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let bundle = tmp.path().join("all.bundle");
    assert_eq!(
        run(&ledger, &["export", "--out", bundle.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let garbage = write_lines(tmp.path(), "trusted.note", &["not a note".into()]);
    let out = run(
        &ledger,
        &[
            "verify",
            bundle.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--trusted-checkpoint",
            garbage.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a checkpoint note"), "{stderr}");
}

#[test]
fn entries_after_the_newest_checkpoint_fail_a_bundle_unless_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let key = tmp.path().join("signer");
    assert!(
        run(&ledger, &["keygen", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    let first = write_lines(tmp.path(), "a.jsonl", &[collected("e1", "i1")]);
    assert!(
        run(&ledger, &["ingest", first.to_str().unwrap()])
            .status
            .success()
    );
    let private = tmp.path().join("signer.key");
    let public = tmp.path().join("signer.pub");
    assert!(
        run(&ledger, &["checkpoint", "--key", private.to_str().unwrap()])
            .status
            .success()
    );
    // Appended after the checkpoint: linked, hashed, signed by nobody.
    let later = write_lines(
        tmp.path(),
        "b.jsonl",
        &[stored("e2", "i1", "mysql"), stored("e3", "i1", "cos")],
    );
    assert!(
        run(&ledger, &["ingest", later.to_str().unwrap()])
            .status
            .success()
    );
    let bundle = tmp.path().join("bundle");
    assert!(
        run(&ledger, &["export", "--out", bundle.to_str().unwrap()])
            .status
            .success()
    );
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            bundle.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        run(&ledger, &args)
    };
    let strict = verify(&[]);
    assert_eq!(strict.status.code(), Some(1), "{}", stdout(&strict));
    let json: serde_json::Value = serde_json::from_str(&stdout(&strict)).unwrap();
    let finding = &json["report"]["findings"][0];
    assert_eq!(finding["class"], "unvouched_tail", "{json}");
    assert_eq!(finding["chain"], "file");
    assert_eq!(finding["first_bad_seq"], 1);
    assert!(finding["detail"].as_str().unwrap().contains("2 entries"));

    let accepted = verify(&["--accept-unvouched-tail"]);
    assert_eq!(accepted.status.code(), Some(0), "{}", stdout(&accepted));
    let json: serde_json::Value = serde_json::from_str(&stdout(&accepted)).unwrap();
    assert_eq!(json["unvouched_accepted"][0]["first_bad_seq"], 1);

    // A checkpoint after the last entry vouches for all of it.
    assert!(
        run(&ledger, &["checkpoint", "--key", private.to_str().unwrap()])
            .status
            .success()
    );
    assert!(
        run(&ledger, &["export", "--out", bundle.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(verify(&[]).status.code(), Some(0));
}

#[test]
fn only_policy_publish_writes_policy_publications() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let policy = policy_file();
    let out = run(&ledger, &["policy", "publish", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A forged publication naming another hash, sent as an ordinary event
    // to chain `policy` and to chain `file`: both kept as rejections.
    let forged = r#"{"schema_version":1,"event_id":"policy-forged","event_time":"2026-01-02T00:00:00Z","kind":{"type":"policy_published","policy_version":"2020-01","policy_hash":"00000000000000000000000000000000000000000000000000000000000000aa"}}"#;
    for chain in ["policy", "file"] {
        // One file per chain: the same line of the same file again would be
        // a duplicate of its first rejection.
        let file = write_lines(
            tmp.path(),
            &format!("forged-{chain}.jsonl"),
            &[forged.to_owned(), collected("e1", "i1")],
        );
        let out = run(
            &ledger,
            &["ingest", file.to_str().unwrap(), "--chain", chain, "--json"],
        );
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let expected_rejected = if chain == "policy" { 2 } else { 1 };
        assert_eq!(summary["rejected"], expected_rejected, "{chain}: {summary}");
    }
    let log = run(&ledger, &["log", "--chain", "policy", "--json"]);
    let reasons: Vec<String> = stdout(&log)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["body"]["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("only from `lifeledger policy publish`")),
        "{reasons:?}"
    );
    // The published policy still governs.
    let status = run(&ledger, &["status", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(json["policy_version"], "2026-11.3", "{json}");
}

#[test]
fn a_future_dated_event_is_a_finding_as_of_now() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ledger/policies/retention-2026-11.toml"
    );
    assert_eq!(
        run(&ledger, &["policy", "publish", policy]).status.code(),
        Some(0)
    );
    // Dated next year by a producer whose clock runs ahead.
    let line = collected("ahead", "fut").replace("2026-03-02T09:00:00Z", "2099-06-01T00:00:00Z");
    let file = write_lines(tmp.path(), "in.jsonl", &[line, collected("now", "ok")]);
    assert_eq!(
        run(&ledger, &["ingest", file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let out = run(&ledger, &["findings", "--json"]);
    let text = stdout(&out);
    assert!(text.contains("future_dated"), "{text}");
    assert!(text.contains("\"fut\""), "{text}");
    assert!(!text.contains("\"ok\""), "{text}");
    let status = stdout(&run(&ledger, &["status"]));
    assert!(status.contains("future_dated"), "{status}");
    // The timeline marks the future-dated entry, and item --json names it.
    let timeline = json_of(&run(&ledger, &["timeline", "--item", "fut", "--json"]));
    assert!(
        timeline["rows"][0]["ahead_of_receipt"].is_string(),
        "{timeline}"
    );
    let ok = json_of(&run(&ledger, &["timeline", "--item", "ok", "--json"]));
    assert!(ok["rows"][0].get("ahead_of_receipt").is_none(), "{ok}");
    let item = stdout(&run(&ledger, &["item", "fut", "--json"]));
    assert!(item.contains("future_dated"), "{item}");
}

#[test]
fn a_declared_backfill_is_told_apart_from_live_late_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let policy = policy_file();
    assert_eq!(
        run(&ledger, &["policy", "publish", policy.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    // Rule B items (version management) collected on 2 January and deleted
    // on 1 July, day 180: on time by event time, but received today, long
    // after the deadline.
    let item = |prefix: &str, item: &str| -> Vec<String> {
        let at = |kind: &str, day: &str| {
            format!(
                r#"{{"schema_version":1,"event_id":"{prefix}-{kind}","event_time":"{day}T09:00:00Z","account":{{"app_id":"1250000001","uin":"100000000001"}},"item_id":"{item}","category":"version_management",{}}}"#,
                match kind {
                    "collected" => r#""region":"SG","kind":{"type":"collected","sensitive":false,"purpose":"inventory"}"#.to_owned(),
                    "stored" => r#""kind":{"type":"stored","store":"mysql"}"#.to_owned(),
                    _ => r#""kind":{"type":"deleted","store":"mysql"}"#.to_owned(),
                }
            )
        };
        vec![
            at("collected", "2026-01-02"),
            at("stored", "2026-01-02"),
            at("deleted", "2026-07-01"),
        ]
    };
    let history = write_lines(tmp.path(), "history.jsonl", &item("h", "old"));
    let out = run(
        &ledger,
        &[
            "ingest",
            history.to_str().unwrap(),
            "--backfill",
            "--declared-by",
            "platform-team",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary = json_of(&out);
    assert_eq!(summary["declared_import"]["first_seq"], 0, "{summary}");
    assert_eq!(summary["declared_import"]["last_seq"], 2, "{summary}");
    // The same pattern, arriving live.
    let live = write_lines(tmp.path(), "live.jsonl", &item("l", "new"));
    assert_eq!(
        run(&ledger, &["ingest", live.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );

    let status = json_of(&run(&ledger, &["status", "--json"]));
    assert_eq!(status["reported_late"], 1, "{status}");
    assert_eq!(status["reported_late_imported"], 1, "{status}");
    let findings = json_of(&run(&ledger, &["findings", "--json"]));
    let ids: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["item_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["new"], "{findings}");
    let old = json_of(&run(&ledger, &["item", "old", "--json"]));
    assert_eq!(old["verdict"]["reported_late_imported"], true, "{old}");
    assert_eq!(old["verdict"]["reported_late"], false, "{old}");
    let imported = old["imported_entries"].as_array().unwrap();
    assert_eq!(imported.len(), 3, "{old}");
    assert!(
        imported.iter().all(|e| e["declared_by"] == "platform-team"),
        "{old}"
    );
    let new = json_of(&run(&ledger, &["item", "new", "--json"]));
    assert_eq!(
        new["imported_entries"].as_array().unwrap().len(),
        0,
        "{new}"
    );

    // The timeline marks the imported entries, and only those.
    for (item, by) in [("old", Some("platform-team")), ("new", None)] {
        let timeline = json_of(&run(&ledger, &["timeline", "--item", item, "--json"]));
        let rows = timeline["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{timeline}");
        assert!(
            rows.iter().all(|r| r["imported_by"].as_str() == by),
            "{timeline}"
        );
    }

    // The declaration is on chain `imports`, and an auditor sees it.
    let log = run(&ledger, &["log", "--chain", "imports", "--json"]);
    assert!(stdout(&log).contains("history_imported"), "{log:?}");
    assert!(stdout(&log).contains("platform-team"), "{log:?}");
    assert_eq!(run(&ledger, &["verify"]).status.code(), Some(0));

    // Nobody else declares imports: a producer's declaration, on any
    // chain, is kept as a rejection, and excuses nothing.
    let forged = r#"{"schema_version":1,"event_id":"forged-import","event_time":"2026-11-01T00:00:00Z","kind":{"type":"history_imported","declared_by":"someone","chain":"file","first_seq":0,"last_seq":99}}"#;
    for chain in ["imports", "file"] {
        let file = write_lines(
            tmp.path(),
            &format!("forged-{chain}.jsonl"),
            &[forged.to_owned()],
        );
        let out = run(
            &ledger,
            &["ingest", file.to_str().unwrap(), "--chain", chain, "--json"],
        );
        assert_eq!(json_of(&out)["rejected"], 1, "{chain}: {out:?}");
    }
    let status = json_of(&run(&ledger, &["status", "--json"]));
    assert_eq!(status["reported_late"], 1, "{status}");
}
