//! The archive against a real S3-compatible server (moto, over HTTP) and a
//! local directory: upload, idempotence, restore, verify straight from the
//! archive, and what the server and `verify` do when someone tries to
//! replace or delete archived evidence.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Output};

use lifeledger_tests::s3::S3Server;
use lifeledger_tests::{collected, stored, write_lines};

fn run(ledger: &Path, s3: Option<&S3Server>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeledger"));
    cmd.arg("--ledger").arg(ledger).args(args);
    if let Some(s3) = s3 {
        cmd.envs(s3.env());
    }
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `verify --from-archive URL --key KEY` against the S3 server.
fn verify_from(ledger: &Path, s3: &S3Server, url: &str, key: &str) -> Output {
    run(
        ledger,
        Some(s3),
        &["verify", "--from-archive", url, "--key", key],
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A ledger with a published policy (chain "policy", one entry), two
/// sealed segments on chain "file" (80 entries) and a checkpoint covering
/// them; returns the public key's path.
fn ledger_with_history(tmp: &Path, ledger: &Path, s3: Option<&S3Server>, archive: &str) -> String {
    let first: Vec<String> = (0..40)
        .map(|i| collected(&format!("a{i}"), &format!("i{i}")))
        .collect();
    let second: Vec<String> = (0..40)
        .map(|i| stored(&format!("b{i}"), &format!("i{i}"), "mysql"))
        .collect();
    let key = tmp.join("signer");
    ok(&run(
        ledger,
        None,
        &["keygen", "--out", key.to_str().unwrap()],
    ));
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ledger/policies/retention-2026-11.toml"
    );
    ok(&run(ledger, None, &["policy", "publish", policy]));
    let one = write_lines(tmp, "one.jsonl", &first);
    ok(&run(ledger, None, &["ingest", one.to_str().unwrap()]));
    ok(&run(ledger, s3, &["archive", "--to", archive]));
    let two = write_lines(tmp, "two.jsonl", &second);
    ok(&run(ledger, None, &["ingest", two.to_str().unwrap()]));
    ok(&run(
        ledger,
        None,
        &["checkpoint", "--key", &format!("{}.key", key.display())],
    ));
    let out = ok(&run(ledger, s3, &["archive", "--to", archive]));
    assert!(out.contains("1 segments uploaded"), "{out}");
    assert!(out.contains("1 checkpoints archived"), "{out}");
    format!("{}.pub", key.display())
}

#[test]
fn archive_to_s3_then_restore_and_verify_from_it() {
    let s3 = S3Server::start();
    s3.create_bucket("evidence", Some(1));
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let url = "s3://evidence/ledgers/eu";
    let key = ledger_with_history(tmp.path(), &ledger, Some(&s3), url);

    // Uploading again finds everything there: idempotent.
    let again = ok(&run(&ledger, Some(&s3), &["archive", "--to", url]));
    assert!(again.contains("0 segments uploaded"), "{again}");

    let verified = ok(&run(
        &ledger,
        Some(&s3),
        &["verify", "--from-archive", url, "--key", &key],
    ));
    assert!(verified.contains("intact, 80 entries"), "{verified}");
    assert!(
        verified.contains("1 checkpoints verified") && verified.contains("vouches for 81 of 81"),
        "{verified}"
    );

    // An auditor's bundle straight from the archive.
    let bundle = tmp.path().join("from-archive.bundle");
    let nowhere = tmp.path().join("no-ledger");
    ok(&run(
        &nowhere,
        Some(&s3),
        &[
            "export",
            "--from-archive",
            url,
            "--out",
            bundle.to_str().unwrap(),
        ],
    ));
    let checked = ok(&run(
        &nowhere,
        None,
        &["verify", bundle.to_str().unwrap(), "--key", &key],
    ));
    assert!(checked.contains("intact"), "{checked}");
    assert!(
        !nowhere.exists(),
        "reading an archive writes no ledger directory"
    );

    // Every local directory gone: the archive alone gives the same heads,
    // and a working ledger (indexes, projection).
    let heads = ok(&run(&ledger, None, &["head"]));
    std::fs::remove_dir_all(&ledger).unwrap();
    let restored = tmp.path().join("restored");
    let out = ok(&run(
        &restored,
        Some(&s3),
        &["restore", "--from-archive", url, "--key", &key],
    ));
    assert!(out.contains("restored 2 chains (81 entries)"), "{out}");
    assert!(out.contains("1 policy texts"), "{out}");
    assert_eq!(ok(&run(&restored, None, &["head"])), heads);
    let item = ok(&run(&restored, None, &["item", "i7"]));
    assert!(item.contains("mysql"), "{item}");
    // ... and it takes appends where the archive left off.
    let more = write_lines(tmp.path(), "more.jsonl", &[collected("c1", "i99")]);
    let appended = ok(&run(&restored, None, &["ingest", more.to_str().unwrap()]));
    assert!(appended.contains("now has 81 entries"), "{appended}");
}

#[test]
fn archived_segments_are_never_replaced_and_a_replacement_is_caught() {
    let s3 = S3Server::start();
    s3.create_bucket("locked", Some(1));
    s3.create_bucket("plain", None);
    let tmp = tempfile::tempdir().unwrap();
    let segment = "ledger/segments/c-file/00000000000000000000.seg";

    // Object Lock on: the archive's own conditional put and a versioned
    // delete are refused by the server.
    let locked = tmp.path().join("locked");
    let key = ledger_with_history(tmp.path(), &locked, Some(&s3), "s3://locked/ledger");
    assert_eq!(
        s3.bucket_tool(&["put-if-absent", "locked", segment]),
        "refused PreconditionFailed"
    );
    assert_eq!(
        s3.bucket_tool(&["delete-version", "locked", segment]),
        "refused AccessDenied"
    );
    let out = verify_from(&locked, &s3, "s3://locked/ledger", &key);
    ok(&out);
    // A plain put is taken as a new version (the locked one stays); what
    // the archive now serves under that name is caught.
    assert_eq!(s3.bucket_tool(&["overwrite", "locked", segment]), "ok");
    let out = verify_from(&locked, &s3, "s3://locked/ledger", &key);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("00000000000000000000.seg"),
        "{}",
        text(&out)
    );

    // Without Object Lock the server lets a segment be replaced or deleted;
    // `verify --from-archive` catches both.
    let tmp2 = tempfile::tempdir().unwrap();
    let plain = tmp2.path().join("plain");
    let key = ledger_with_history(tmp2.path(), &plain, Some(&s3), "s3://plain/ledger");
    assert_eq!(s3.bucket_tool(&["overwrite", "plain", segment]), "ok");
    let out = verify_from(&plain, &s3, "s3://plain/ledger", &key);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // The archive's own upload refuses to put its bytes over the stranger's.
    let out = run(&plain, Some(&s3), &["archive", "--to", "s3://plain/ledger"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("another ledger extended them"),
        "{}",
        text(&out)
    );
    // The last segment deleted: the checkpoint signs more than is left.
    let last = "ledger/segments/c-file/00000000000000000040.seg";
    assert_eq!(s3.bucket_tool(&["delete", "plain", last]), "ok");
    assert_eq!(s3.bucket_tool(&["delete", "plain", segment]), "ok");
    let out = verify_from(&plain, &s3, "s3://plain/ledger", &key);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("signs 80 entries"), "{}", text(&out));
}

#[test]
fn a_checkpoint_waits_for_its_entries_and_another_ledger_cannot_extend_the_chains() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("archive");
    let url = archive.to_str().unwrap();
    let ledger = tmp.path().join("ledger");
    let key = tmp.path().join("k");
    ok(&run(
        &ledger,
        None,
        &["keygen", "--out", key.to_str().unwrap()],
    ));
    let file = write_lines(
        tmp.path(),
        "a.jsonl",
        &[collected("a", "i1"), collected("b", "i2")],
    );
    ok(&run(&ledger, None, &["ingest", file.to_str().unwrap()]));
    ok(&run(
        &ledger,
        None,
        &["checkpoint", "--key", &format!("{}.key", key.display())],
    ));
    // Nothing sealed yet: the checkpoint is not archived, since what it
    // signs is not.
    let out = ok(&run(&ledger, None, &["archive", "--to", url, "--no-seal"]));
    assert!(
        out.contains("0 checkpoints archived, 2 entries not yet archived"),
        "{out}"
    );
    let out = ok(&run(&ledger, None, &["archive", "--to", url]));
    assert!(
        out.contains("1 checkpoints archived, 0 entries not yet archived"),
        "{out}"
    );

    // A second ledger with its own chain "file" cannot write into the
    // same archive: its first segment's name is taken.
    let other = tmp.path().join("other");
    let file = write_lines(tmp.path(), "b.jsonl", &[collected("z", "i9")]);
    ok(&run(&other, None, &["ingest", file.to_str().unwrap()]));
    let out = run(&other, None, &["archive", "--to", url]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("another ledger extended them"),
        "{}",
        text(&out)
    );
    let out = run(
        &ledger,
        None,
        &[
            "verify",
            "--from-archive",
            url,
            "--key",
            &format!("{}.pub", key.display()),
        ],
    );
    ok(&out);
}

#[test]
fn each_archived_object_carries_the_configured_retention_date() {
    let s3 = S3Server::start();
    s3.create_bucket("dated", Some(1));
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let file = write_lines(tmp.path(), "a.jsonl", &[collected("a", "i1")]);
    ok(&run(&ledger, None, &["ingest", file.to_str().unwrap()]));
    let before = jiff::Timestamp::now();
    let out = Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .arg("--ledger")
        .arg(&ledger)
        .args(["archive", "--to", "s3://dated/ledger"])
        .envs(s3.env())
        .env("LIFELEDGER_ARCHIVE_RETENTION_DAYS", "400")
        .output()
        .unwrap();
    ok(&out);
    let answer = s3.bucket_tool(&[
        "retention",
        "dated",
        "ledger/segments/c-file/00000000000000000000.seg",
    ]);
    let (mode, until) = answer.split_once(' ').unwrap();
    assert_eq!(mode, "COMPLIANCE", "{answer}");
    let until: jiff::Timestamp = until.parse().unwrap();
    let expected = before
        .checked_add(jiff::SignedDuration::from_hours(24 * 400))
        .unwrap();
    assert!(
        until.duration_since(expected).abs() < jiff::SignedDuration::from_mins(10),
        "retained until {until}, expected about {expected}"
    );
    // And the server holds it to that: the version cannot be deleted.
    assert_eq!(
        s3.bucket_tool(&[
            "delete-version",
            "dated",
            "ledger/segments/c-file/00000000000000000000.seg"
        ]),
        "refused AccessDenied"
    );
}
