//! Write failures in the middle of an ingest (a full file system, a file
//! size limit, a failing fsync): a clear error and exit 2, never a hang; nothing
//! acknowledged is lost; once space is back the ledger opens, verifies and
//! continues without repair.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lifeledger_tests::{collected, write_lines};

const BIN: &str = env!("CARGO_BIN_EXE_lifeledger");

/// Runs the binary under `timeout`, so that a hang fails the test.
fn run(ledger: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg(BIN)
        .arg("--ledger")
        .arg(ledger)
        .args(args)
        .output()
        .unwrap()
}

fn lines(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| collected(&format!("{prefix}{i}"), &format!("i{i}")))
        .collect()
}

/// Lines of the ingest that fails: enough that its segment outgrows the
/// limits below (evidence compresses to under 100 bytes an event).
const MORE: usize = 30_000;

/// (intact, entries) as `verify --json` says.
fn verify(ledger: &Path) -> (bool, u64) {
    let out = run(ledger, &["verify", "--json"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "verify: {out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = json["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["entries"].as_u64().unwrap())
        .sum();
    (json["intact"] == true, entries)
}

/// The chain's acknowledged entries, from the manifest (FORMAT.md 16).
fn acknowledged(ledger: &Path) -> u64 {
    let text = std::fs::read_to_string(ledger.join("manifest")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("chain file "))
        .map_or(0, |rest| rest.split(' ').next().unwrap().parse().unwrap())
}

/// Ingest fails part way; what was acknowledged stays; the same file
/// ingested again once writes work completes the ledger.
fn check_failure_and_recovery(ledger: &Path, failing: Output, more: &Path) {
    let stderr = String::from_utf8_lossy(&failing.stderr);
    assert_eq!(failing.status.code(), Some(2), "{stderr}");
    // Whichever write hit the limit: a segment, the index, the manifest
    // being replaced, or (an fsync) the ledger directory itself.
    assert!(
        stderr.contains("segments/c-file")
            || stderr.contains("index")
            || stderr.contains("/manifest")
            || stderr.contains(&ledger.display().to_string()),
        "the error names no file: {stderr}"
    );
    let held = acknowledged(ledger);
    assert!(held >= 200, "the first ingest's entries were lost: {held}");
    assert_eq!(verify(ledger), (true, held), "after the failed ingest");
    let again = run(ledger, &["ingest", more.to_str().unwrap(), "--json"]);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["chain_entries"], 200 + MORE, "{summary}");
    assert_eq!(
        summary["appended"].as_u64().unwrap() + summary["duplicates"].as_u64().unwrap(),
        MORE as u64
    );
    assert_eq!(verify(ledger), (true, 200 + MORE as u64));
}

#[test]
fn a_file_size_limit_mid_ingest_exits_2_and_the_ledger_continues() {
    for extra_kib in [600u64, 1100] {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = tmp.path().join("ledger");
        let first = write_lines(tmp.path(), "a.jsonl", &lines("a", 200));
        let more = write_lines(tmp.path(), "b.jsonl", &lines("b", MORE));
        assert!(
            run(&ledger, &["ingest", first.to_str().unwrap()])
                .status
                .success()
        );
        let segment = std::fs::read_dir(ledger.join("segments/c-file"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let size = std::fs::metadata(&segment).unwrap().len();
        // Writes past the limit fail with EFBIG (SIGXFSZ ignored), in the
        // segment file first: the index files stay smaller.
        let limit_kib = size / 1024 + extra_kib;
        let failing = Command::new("timeout")
            .arg("120")
            .arg("bash")
            .arg("-c")
            .arg(format!(
                "trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" --ledger \"$1\" ingest \"$2\" --batch-size 50"
            ))
            .arg(BIN)
            .arg(&ledger)
            .arg(&more)
            .output()
            .unwrap();
        check_failure_and_recovery(&ledger, failing, &more);
    }
}

#[test]
fn a_full_file_system_mid_ingest_exits_2_and_the_ledger_continues_once_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mount)
        .output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        // Without the right to mount, the file-size-limit test above is
        // the write-failure test.
        eprintln!("cannot mount a tmpfs here ({mounted:?}); skipped");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let ledger = mount.join("ledger");
        let first = write_lines(tmp.path(), "a.jsonl", &lines("a", 200));
        let more = write_lines(tmp.path(), "b.jsonl", &lines("b", MORE));
        assert!(
            run(&ledger, &["ingest", first.to_str().unwrap()])
                .status
                .success()
        );
        let ballast = mount.join("ballast");
        std::fs::write(&ballast, vec![0u8; 4 << 20]).unwrap();
        let failing = run(
            &ledger,
            &["ingest", more.to_str().unwrap(), "--batch-size", "50"],
        );
        assert!(
            String::from_utf8_lossy(&failing.stderr).contains("No space left on device"),
            "{failing:?}"
        );
        // Reading a full file system works and writes nothing.
        let held = acknowledged(&ledger);
        assert_eq!(verify(&ledger), (true, held));
        std::fs::remove_file(&ballast).unwrap();
        check_failure_and_recovery(&ledger, failing, &more);
    });
    let _ = Command::new("umount").arg(&mount).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A shared library that makes every `fsync` and `fdatasync` after the
/// first `LIFELEDGER_TEST_FSYNCS_THAT_WORK` fail with EIO, put under the
/// unchanged binary with `LD_PRELOAD`: no file system here can be told to
/// fail an fsync, so the I/O layer is injected.
fn failing_fsync_library(dir: &Path) -> PathBuf {
    let source = dir.join("failing_fsync.c");
    std::fs::write(
        &source,
        r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>

static long calls;

static int fails(void) {
    const char *working = getenv("LIFELEDGER_TEST_FSYNCS_THAT_WORK");
    return working && __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST) > atol(working);
}

int fsync(int fd) {
    if (fails()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    if (fails()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
"#,
    )
    .unwrap();
    let library = dir.join("failing_fsync.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    library
}

#[test]
fn a_failing_fsync_mid_ingest_exits_2_and_the_ledger_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let library = failing_fsync_library(tmp.path());
    let first = write_lines(tmp.path(), "a.jsonl", &lines("a", 200));
    let more = write_lines(tmp.path(), "b.jsonl", &lines("b", MORE));
    // The first failure at open, at the first batch's segment, index or
    // manifest, and later in the run.
    let mut held = std::collections::BTreeSet::new();
    for working in [0u32, 1, 2, 3, 5, 8, 13, 21, 34, 55, 100] {
        let ledger = tmp.path().join(format!("ledger-{working}"));
        assert!(
            run(&ledger, &["ingest", first.to_str().unwrap()])
                .status
                .success()
        );
        let failing = Command::new("timeout")
            .arg("120")
            .arg(BIN)
            .arg("--ledger")
            .arg(&ledger)
            .args(["ingest", more.to_str().unwrap(), "--batch-size", "50"])
            .env("LD_PRELOAD", &library)
            .env("LIFELEDGER_TEST_FSYNCS_THAT_WORK", working.to_string())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&failing.stderr);
        assert!(
            stderr.contains("Input/output error"),
            "after {working} fsyncs: {failing:?}"
        );
        let before_recovery = acknowledged(&ledger);
        check_failure_and_recovery(&ledger, failing, &more);
        held.insert(before_recovery);
    }
    // The failures fell before, between and after acknowledged batches.
    assert!(held.len() >= 4, "{held:?}");
}
