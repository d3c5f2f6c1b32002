use std::io::Write;
use std::path::{Path, PathBuf};

use lifeledger_ledger::{Ledger, LedgerOptions};

/// A valid `stored` event line with the given id and store.
pub fn stored(id: &str, item: &str, store: &str) -> String {
    format!(
        r#"{{"schema_version":1,"event_id":"{id}","event_time":"2026-03-02T09:15:00Z","account":{{"app_id":"1250000001","uin":"100000000001"}},"item_id":"{item}","category":"asset_management","kind":{{"type":"stored","store":"{store}"}}}}"#
    )
}

/// A valid `collected` event line.
pub fn collected(id: &str, item: &str) -> String {
    format!(
        r#"{{"schema_version":1,"event_id":"{id}","event_time":"2026-03-02T09:00:00Z","account":{{"app_id":"1250000001","uin":"100000000001"}},"item_id":"{item}","category":"asset_management","region":"SG","kind":{{"type":"collected","sensitive":false,"purpose":"inventory"}}}}"#
    )
}

pub fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
    path
}

/// Retries `f` while the directory's lock is still held: sled releases its
/// file lock only when its background flusher thread lets go of the
/// database, a moment after the last handle is dropped.
pub fn retry_locked<T, E: std::fmt::Debug>(mut f: impl FnMut() -> Result<T, E>) -> T {
    let mut last = None;
    for _ in 0..100 {
        match f() {
            Ok(v) => return v,
            Err(e) if format!("{e:?}").contains("could not acquire lock") => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("still locked: {last:?}")
}

pub fn open(dir: &Path) -> Ledger {
    retry_locked(|| Ledger::open(dir, LedgerOptions::default()))
}

/// Opens a ledger whose segments are sealed at `segment_max_bytes` and
/// whose frames are not compressed, so that a test can reach each record's
/// bytes (`segments::record_spans`).
pub fn open_with_segments(dir: &Path, segment_max_bytes: u64) -> Ledger {
    retry_locked(|| {
        Ledger::open(
            dir,
            LedgerOptions {
                segment_max_bytes,
                compress_frames: false,
                ..LedgerOptions::default()
            },
        )
    })
}

/// The ledger's index database (sled, under `index/`).
pub fn open_index(dir: &Path) -> sled::Db {
    retry_locked(|| sled::open(dir.join("index")))
}

pub fn clock() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_790_000_000).unwrap()
}

/// Publishes the shipped retention policy in `ledger`, as `lifeledger
/// policy publish` does: the text kept by hash, a `policy_published` entry
/// on chain `policy`.
pub fn publish_policy(ledger: &mut Ledger) {
    let text = include_str!("../../ledger/policies/retention-2026-11.toml");
    let policy = lifeledger_ledger::policy::Policy::parse(text).unwrap();
    ledger
        .publish_policy(&policy, text, "policy", jiff::Timestamp::now())
        .unwrap();
}

/// Every file under `dir` with its size, modification time and BLAKE3
/// hash: two listings are equal only if no byte and no file changed.
pub fn dir_listing(
    dir: &Path,
) -> std::collections::BTreeMap<PathBuf, (u64, std::time::SystemTime, String)> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let bytes = std::fs::read(entry.path()).unwrap();
                let hash = blake3::hash(&bytes).to_hex().to_string();
                out.insert(entry.path(), (meta.len(), meta.modified().unwrap(), hash));
            }
        }
    }
    out
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
