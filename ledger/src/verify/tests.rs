//! Any single mutation of a stored chain fails verification at the seq where
//! the mutation is.

use jiff::Timestamp;
use lifeledger_schemas::RejectClass;
use proptest::prelude::*;

use super::*;
use crate::chain::{ChainHead, SealedEntry};
use crate::entry::{Body, Source};

fn event_json(i: u64) -> Vec<u8> {
    format!(
        r#"{{"schema_version":1,"event_id":"e{i}","event_time":"2026-01-05T10:00:00Z","account":{{"app_id":"1","uin":"2"}},"item_id":"i{i}","category":"asset_management","kind":{{"type":"stored","store":"mongodb"}}}}"#
    )
    .into_bytes()
}

/// A valid chain of `len` entries, a mix of events and rejections.
fn build_chain(len: u64) -> (Vec<SealedEntry>, ChainHead) {
    let mut head = ChainHead::empty("c");
    let mut entries = Vec::new();
    for i in 0..len {
        let raw = event_json(i);
        let body = if i % 3 == 2 {
            Body::Rejected {
                raw: b"garbage".to_vec(),
                class: RejectClass::Malformed,
                reason: "not json".into(),
            }
        } else {
            let event = lifeledger_schemas::decode_event(&raw).unwrap();
            Body::Event {
                canonical: lifeledger_schemas::canonical_json(&event),
                event_id: event.event_id,
                raw,
            }
        };
        let at = Timestamp::from_second(1_700_000_000 + i as i64).unwrap();
        let source = Source::File {
            path: "f".into(),
            line: i + 1,
        };
        entries.push(head.append(at, source, body));
    }
    (entries, head)
}

fn run(records: &[(EntryHash, Vec<u8>)], head: &ChainHead) -> Result<ChainSummary, Finding> {
    let mut v = ChainVerifier::new("c", Depth::Events);
    for (hash, bytes) in records {
        v.check(hash, bytes)?;
    }
    v.finish(Some(head))
}

fn records(entries: &[SealedEntry]) -> Vec<(EntryHash, Vec<u8>)> {
    entries
        .iter()
        .map(|e| (e.hash, e.encoding.clone()))
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bits of one byte in the entry's encoding or its stored hash.
    ChangeByte {
        entry: usize,
        offset: usize,
        xor: u8,
    },
    Remove {
        entry: usize,
    },
    /// Insert a copy of entry `copy` before position `at`.
    InsertCopy {
        at: usize,
        copy: usize,
    },
    /// Insert a freshly made entry that claims seq `at` but is not linked.
    InsertForged {
        at: usize,
    },
    Swap {
        a: usize,
        b: usize,
    },
    /// Move the head back to an earlier, self-consistent state.
    HeadBack {
        keep: usize,
    },
}

fn mutation(len: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..len, any::<usize>(), 1u8..=255).prop_map(|(entry, offset, xor)| Mutation::ChangeByte {
            entry,
            offset,
            xor
        }),
        (0..len).prop_map(|entry| Mutation::Remove { entry }),
        (0..=len, 0..len).prop_map(|(at, copy)| Mutation::InsertCopy { at, copy }),
        (0..=len).prop_map(|at| Mutation::InsertForged { at }),
        (0..len, 0..len)
            .prop_filter("distinct", |(a, b)| a != b)
            .prop_map(|(a, b)| Mutation::Swap {
                a: a.min(b),
                b: a.max(b)
            }),
        (0..len).prop_map(|keep| Mutation::HeadBack { keep }),
    ]
}

proptest! {
    #[test]
    fn an_untouched_chain_verifies(len in 0u64..40) {
        let (entries, head) = build_chain(len);
        let summary = run(&records(&entries), &head).unwrap();
        prop_assert_eq!(summary.entries, len);
        prop_assert_eq!(summary.rejected, len / 3);
    }

    #[test]
    fn any_single_mutation_fails_at_its_seq(
        (len, m) in (2usize..30).prop_flat_map(|len| (Just(len), mutation(len)))
    ) {
        let (entries, head) = build_chain(len as u64);
        let mut recs = records(&entries);
        let mut head = head;
        let expected_seq: u64 = match m {
            Mutation::ChangeByte { entry, offset, xor } => {
                let (hash, bytes) = &mut recs[entry];
                let total = bytes.len() + 32;
                let at = offset % total;
                if at < 32 { hash.0[at] ^= xor } else { bytes[at - 32] ^= xor }
                entry as u64
            }
            Mutation::Remove { entry } => {
                recs.remove(entry);
                entry as u64
            }
            Mutation::InsertCopy { at, copy } => {
                let copied = recs[copy].clone();
                recs.insert(at, copied);
                // A copy of the entry that already sits at `at` leaves that
                // position valid; the displaced twin after it is the break.
                if copy == at { at as u64 + 1 } else { at as u64 }
            }
            Mutation::InsertForged { at } => {
                // Claims the right seq, with a valid hash of its own, but
                // is linked to nothing that came before.
                let mut forger = ChainHead::empty("c");
                forger.next_seq = at as u64;
                forger.last_hash = EntryHash([7; 32]);
                let forged = forger.append(
                    Timestamp::UNIX_EPOCH,
                    Source::File { path: "forged".into(), line: 1 },
                    Body::Rejected { raw: vec![], class: RejectClass::Schema, reason: "x".into() },
                );
                recs.insert(at, (forged.hash, forged.encoding));
                at as u64
            }
            Mutation::Swap { a, b } => {
                recs.swap(a, b);
                a as u64
            }
            Mutation::HeadBack { keep } => {
                head = ChainHead {
                    chain: "c".into(),
                    next_seq: keep as u64,
                    last_hash: if keep == 0 { GENESIS_PREV_HASH } else { entries[keep - 1].hash },
                };
                keep as u64
            }
        };
        let finding = run(&recs, &head).expect_err("a mutated chain must not verify");
        prop_assert_eq!(finding.seq, expected_seq, "{}", finding);
    }
}

#[test]
fn a_rewritten_canonical_form_is_caught_by_the_event_check() {
    let raw = event_json(0);
    let mut head = ChainHead::empty("c");
    let sealed = head.append(
        Timestamp::UNIX_EPOCH,
        Source::File {
            path: "f".into(),
            line: 1,
        },
        Body::Event {
            raw,
            event_id: "e0".into(),
            canonical: b"{}".to_vec(),
        },
    );
    let mut deep = ChainVerifier::new("c", Depth::Events);
    let finding = deep.check(&sealed.hash, &sealed.encoding).unwrap_err();
    assert!(
        matches!(finding.problem, Problem::CanonicalMismatch(_)),
        "{finding}"
    );
    let mut shallow = ChainVerifier::new("c", Depth::Chain);
    assert_eq!(shallow.check(&sealed.hash, &sealed.encoding), Ok(()));
}

#[test]
fn entries_without_a_head_are_a_finding() {
    let (entries, _) = build_chain(2);
    let mut v = ChainVerifier::new("c", Depth::Chain);
    for e in &entries {
        v.check(&e.hash, &e.encoding).unwrap();
    }
    assert_eq!(v.finish(None).unwrap_err().problem, Problem::NoHead);
}
