//! The `lifeledger` binary: commands, output and exit codes. These live in
//! the binary's own package so that cargo builds the binary before them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Output};

use lifeledger_tests::{collected, open_sled, stored, write_lines};

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

    // Break the head: claim one more entry than exists.
    {
        let db = open_sled(&ledger);
        let head = db.get("Hfile").unwrap().unwrap().to_vec();
        let mut moved = 3u64.to_be_bytes().to_vec();
        moved.extend_from_slice(&head[8..]);
        db.insert("Hfile", moved).unwrap();
        db.flush().unwrap();
    }
    let broken = run(&ledger, &["verify", "--json"]);
    assert_eq!(broken.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&broken)).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(report["findings"][0]["first_bad_seq"], 2);
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
    assert!(stdout(&out).contains("published policy 2026-11.1"));
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
    assert_eq!(status["policy_version"], "2026-11.1");
    assert_eq!(status["by_status"]["retained"], 1);
    assert_eq!(status["by_status"]["due"], 1);
    assert_eq!(status["by_violation"]["forbidden_store"], 1);
    assert_eq!(status["findings"], 1);

    let out = run(&ledger, &["item", "i2", "--as-of", "2026-04-01", "--json"]);
    let item: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(item["verdict"]["status"]["status"], "due");
    assert_eq!(item["verdict"]["deadline"]["rule"], "B");
    assert_eq!(
        item["verdict"]["deadline"]["due_by"],
        "2026-08-29T09:00:00Z"
    );
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
