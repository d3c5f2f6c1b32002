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
