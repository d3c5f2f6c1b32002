//! A crash at any point of an append: the reopened ledger holds exactly
//! the acknowledged prefix (the old manifest's) or the whole append (the
//! new manifest's), verifies, derives its indexes, and appends again.
//!
//! Crash states are built from real appends: the directory before append
//! k+1 and after it, mixed as a crash would leave them (the open segment
//! cut anywhere between its two lengths, a partial `manifest.tmp`, the
//! manifest old or new, a sealed segment not yet renamed).

use std::path::Path;

use lifeledger_ledger::verify::Depth;
use lifeledger_ledger::{Incoming, Snapshot, Source};
use proptest::prelude::*;

use lifeledger_tests::{clock, copy_dir, open_with_segments, stored};

const SEGMENT: u64 = 6 * 1024;

fn batch(from: usize, n: usize) -> Vec<Incoming> {
    (from..from + n)
        .map(|i| Incoming {
            source: Source::File {
                path: "in".into(),
                line: i as u64 + 1,
            },
            raw: stored(&format!("e{i}"), "i", "mysql").into_bytes(),
        })
        .collect()
}

fn segment_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("segments").join("c-file")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_crash_anywhere_in_an_append_keeps_the_acknowledged_prefix(
        before in 1usize..40,
        size in 1usize..30,
        cut in 0.0f64..1.0,
        manifest_renamed in any::<bool>(),
        tmp_left in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp.path().join("old");
        let new = tmp.path().join("new");
        {
            let mut ledger = open_with_segments(&old, SEGMENT);
            ledger.append("file", batch(0, before), clock()).unwrap();
        }
        copy_dir(&old, &new);
        {
            let mut ledger = open_with_segments(&new, SEGMENT);
            ledger.append("file", batch(before, size), clock()).unwrap();
        }
        // The crash state: the old directory, with the new segment bytes
        // written up to a point, and the manifest old or new.
        let crashed = tmp.path().join("crashed");
        copy_dir(&old, &crashed);
        for entry in std::fs::read_dir(segment_dir(&new)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if segment_dir(&old).join(&name).exists() && name.to_str().unwrap().ends_with(".seg") {
                // Sealed before the append: the same in both.
                continue;
            }
            let bytes = std::fs::read(entry.path()).unwrap();
            // A file the new manifest sealed is, in the crash, still the
            // open file it was renamed from.
            let first = name.to_str().unwrap()[..20].to_owned();
            let open_name = format!("{first}.open");
            let old_len = std::fs::metadata(segment_dir(&old).join(&open_name)).map_or(0, |m| m.len()) as usize;
            let target = if manifest_renamed { name.clone() } else { std::ffi::OsString::from(open_name.clone()) };
            let keep = if manifest_renamed {
                bytes.len()
            } else {
                old_len + ((bytes.len() - old_len.min(bytes.len())) as f64 * cut) as usize
            };
            let _ = std::fs::remove_file(segment_dir(&crashed).join(&open_name));
            if !manifest_renamed && old_len == 0 && keep == 0 {
                continue;
            }
            std::fs::write(segment_dir(&crashed).join(target), &bytes[..keep]).unwrap();
        }
        let new_manifest = std::fs::read(new.join("manifest")).unwrap();
        if manifest_renamed {
            std::fs::write(crashed.join("manifest"), &new_manifest).unwrap();
        } else if tmp_left {
            let n = (new_manifest.len() as f64 * cut) as usize;
            std::fs::write(crashed.join("manifest.tmp"), &new_manifest[..n]).unwrap();
        }
        let expected = if manifest_renamed { before + size } else { before } as u64;

        let snapshot = Snapshot::open(&crashed).unwrap();
        let report = snapshot.verify(Depth::Events, &mut |_| {}).unwrap();
        prop_assert!(report.is_intact(), "{:?}", report.findings);
        prop_assert_eq!(snapshot.head("file").unwrap().next_seq, expected);

        let mut ledger = open_with_segments(&crashed, SEGMENT);
        prop_assert_eq!(ledger.head("file").unwrap().next_seq, expected);
        // The indexes know every acknowledged event, and only those.
        let last = expected as usize - 1;
        prop_assert_eq!(ledger.find_event(&format!("e{last}")).unwrap(), Some(("file".to_owned(), last as u64)));
        prop_assert_eq!(ledger.find_event(&format!("e{}", expected)).unwrap(), None);
        // Appending the whole batch again records what was not acknowledged.
        let report = ledger.append("file", batch(before, size), clock()).unwrap();
        prop_assert_eq!(report.next_seq, (before + size) as u64);
        drop(ledger);
        let report = Snapshot::open(&crashed).unwrap().verify(Depth::Events, &mut |_| {}).unwrap();
        prop_assert!(report.is_intact(), "{:?}", report.findings);
    }
}
