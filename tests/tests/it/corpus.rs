//! The tamper corpus (`tests/tamper-corpus/`): one small exported ledger per
//! tamper class, each with its expected verdict and first bad seq. The files
//! are checked in; this test regenerates them to prove they are current
//! (`LIFELEDGER_BLESS=1` rewrites them) and verifies each stored file.

use std::path::{Path, PathBuf};

use lifeledger_ledger::bundle::verify::verify_bundle;
use lifeledger_ledger::checkpoint::PublicKey;
use lifeledger_ledger::verify::Depth;
use lifeledger_tests::corpus::{cases, key, other_key};
use serde_json::json;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tamper-corpus")
}

fn class_name(c: lifeledger_ledger::bundle::verify::TamperClass) -> String {
    serde_json::to_value(c)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn every_tamper_class_is_caught_with_its_first_bad_seq() {
    let dir = dir();
    let bless = std::env::var_os("LIFELEDGER_BLESS").is_some();
    let files = |name: &str| {
        (
            dir.join(format!("{name}.bundle")),
            dir.join(format!("{name}.expected.json")),
            dir.join(format!("{name}.trusted")),
        )
    };
    if bless {
        std::fs::write(dir.join("corpus.pub"), format!("{}\n", key().public())).unwrap();
        std::fs::write(dir.join("other.pub"), format!("{}\n", other_key().public())).unwrap();
    }
    let mut failures = Vec::new();
    for case in cases() {
        let (bundle_path, expected_path, trusted_path) = files(case.name);
        let expected = json!({
            "class": case.class,
            "first_bad_seq": case.first_bad_seq,
            "key": if case.wrong_key { "other.pub" } else { "corpus.pub" },
            "trusted_checkpoint": case.trusted.as_ref().map(|_| format!("{}.trusted", case.name)),
        });
        if bless {
            std::fs::write(&bundle_path, &case.bundle).unwrap();
            std::fs::write(
                &expected_path,
                serde_json::to_string_pretty(&expected).unwrap() + "\n",
            )
            .unwrap();
            if let Some(t) = &case.trusted {
                std::fs::write(&trusted_path, t).unwrap();
            }
        }
        // The stored files are what the deterministic generator makes.
        let stored = std::fs::read(&bundle_path).unwrap_or_default();
        if stored != case.bundle {
            failures.push(format!(
                "{}: stored bundle differs from the generator (rerun with LIFELEDGER_BLESS=1)",
                case.name
            ));
            continue;
        }
        let stored_expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
        assert_eq!(stored_expected, expected, "{}", case.name);

        // Verify the stored files, as an auditor would.
        let key_text =
            std::fs::read_to_string(dir.join(stored_expected["key"].as_str().unwrap())).unwrap();
        let public = PublicKey::parse(&key_text).unwrap();
        let trusted = stored_expected["trusted_checkpoint"]
            .as_str()
            .map(|f| std::fs::read_to_string(dir.join(f)).unwrap());
        let report = verify_bundle(
            &stored,
            &public,
            trusted.as_deref(),
            Depth::Events,
            &mut |_| {},
        )
        .unwrap();
        if case.class == "intact" {
            if !report.is_intact() {
                failures.push(format!(
                    "{}: expected intact, got {:?}",
                    case.name, report.findings
                ));
            }
            continue;
        }
        let first = report
            .findings
            .iter()
            .find(|f| class_name(f.class) == case.class);
        match first {
            Some(f) if f.first_bad_seq == case.first_bad_seq => {}
            Some(f) => failures.push(format!(
                "{}: {} found at seq {:?}, expected {:?}",
                case.name, case.class, f.first_bad_seq, case.first_bad_seq
            )),
            None => failures.push(format!(
                "{}: expected {}, got {:?}",
                case.name, case.class, report.findings
            )),
        }
        // Entry-level tampering is reported as exactly that.
        let entry_classes = [
            "changed_entry",
            "removed_entry",
            "inserted_entry",
            "swapped_entry",
        ];
        if entry_classes.contains(&case.class) {
            let classes: Vec<String> = report
                .findings
                .iter()
                .map(|f| class_name(f.class))
                .collect();
            if classes != vec![case.class.to_owned()] {
                failures.push(format!("{}: extra findings {classes:?}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A chain long enough to be checked in several pieces on several cores
/// (and its tree built from whole blocks): intact, it verifies with every
/// signed root matching, including sizes inside a block and at the end of
/// a part-filled one; tampered in a later piece, each class is named at
/// its seq as in a one-piece chain.
#[test]
fn a_chain_checked_in_pieces_is_judged_as_one_walked_record_by_record() {
    use lifeledger_ledger::verify::{BLOCK, PIECE};
    use lifeledger_tests::corpus::{chain_of_length, checkpoint, records};
    let n = (2 * PIECE + BLOCK + 300) as u64;
    let base = chain_of_length(n, |_| None);
    let key = key();
    let public = key.public();
    let sizes = [
        1_000,
        BLOCK as u64,
        PIECE as u64 + 5,
        2 * PIECE as u64,
        (2 * PIECE + BLOCK / 2) as u64,
        n,
    ];
    let notes: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| checkpoint(&base, *size, &key, i as i64))
        .collect();
    let full = records(&base);
    let verify = |entries: &[(lifeledger_ledger::EntryHash, Vec<u8>)], depth| {
        let bundle = lifeledger_tests::corpus::bundle(entries, &notes, &public.to_string());
        verify_bundle(&bundle, &public, None, depth, &mut |_| {}).unwrap()
    };
    let report = verify(&full, Depth::Events);
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!(report.chains[0].entries, n);
    assert_eq!(report.chains[0].vouched, n);

    let first_finding = |entries: &[(lifeledger_ledger::EntryHash, Vec<u8>)]| {
        let report = verify(entries, Depth::Chain);
        let f = report.findings.first().expect("a finding").clone();
        (class_name(f.class), f.first_bad_seq)
    };
    let mut changed = full.clone();
    let at = changed[20_000].1.len() - 40;
    changed[20_000].1[at] ^= 0x01;
    assert_eq!(
        first_finding(&changed),
        ("changed_entry".into(), Some(20_000))
    );
    let mut removed = full.clone();
    removed.remove(PIECE);
    assert_eq!(
        first_finding(&removed),
        ("removed_entry".into(), Some(PIECE as u64))
    );
    let mut swapped = full.clone();
    swapped.swap(2 * PIECE + 7, 2 * PIECE + 8);
    assert_eq!(
        first_finding(&swapped),
        ("swapped_entry".into(), Some(2 * PIECE as u64 + 7))
    );
    let mut inserted = full.clone();
    inserted.insert(PIECE + 100, full[5].clone());
    assert_eq!(
        first_finding(&inserted),
        ("inserted_entry".into(), Some(PIECE as u64 + 100))
    );
}
