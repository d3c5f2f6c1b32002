//! Known-answer vectors for the entry encoding and hash (FORMAT.md).
//!
//! `testdata/entry-vectors.json` is the contract with independent
//! verifiers: each vector gives an entry's fields, its encoding and its
//! hash. Regenerate it only for a new format version, with
//! `LIFELEDGER_BLESS=1 cargo test -p lifeledger-ledger --test vectors`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;

use jiff::Timestamp;
use lifeledger_ledger::chain::ChainHead;
use lifeledger_ledger::entry::{ENTRY_HASH_CONTEXT, EntryHash};
use lifeledger_ledger::{Body, Entry, Source};
use lifeledger_schemas::{RejectClass, canonical_json, decode_event};
use serde_json::{Value, json};

const EVENT: &str = r#"{"schema_version":1, "event_id":"evt-0001", "event_time":"2026-03-02T17:15:00+08:00", "account":{"app_id":"1250000001","uin":"100000000001"}, "item_id":"item-7f3a", "category":"asset_management", "region":"SG", "kind":{"type":"collected","sensitive":false,"purpose":"inventory"}}"#;

fn event_body(raw: &str) -> Body {
    let event = decode_event(raw.as_bytes()).unwrap();
    Body::Event {
        raw: raw.as_bytes().to_vec(),
        canonical: canonical_json(&event),
        event_id: event.event_id,
    }
}

/// The vectors' entries: a short chain, then one entry on a second chain.
fn entries() -> Vec<(&'static str, Entry)> {
    let mut out = Vec::new();
    let mut head = ChainHead::empty("file");
    let mut push = |head: &mut ChainHead, name, at: i64, source: Source, body: Body| {
        let entry = Entry {
            chain: head.chain.clone(),
            seq: head.next_seq,
            prev_hash: head.last_hash,
            received_at: Timestamp::from_nanosecond(i128::from(at)).unwrap(),
            source: source.clone(),
            body: body.clone(),
        };
        head.append(entry.received_at, source, body);
        out.push((name, entry));
    };
    push(
        &mut head,
        "first entry of a chain: an event read from a file",
        1_772_442_900_123_456_789,
        Source::File {
            path: "/data/in.jsonl".into(),
            line: 1,
        },
        event_body(EVENT),
    );
    push(
        &mut head,
        "second entry: a rejected line (not JSON), linked to the first",
        1_772_442_900_123_456_789,
        Source::File {
            path: "/data/in.jsonl".into(),
            line: 2,
        },
        Body::Rejected {
            raw: b"{not json".to_vec(),
            class: RejectClass::Malformed,
            reason: "input is not JSON: key must be a string at line 1 column 2".into(),
        },
    );
    let mut kafka = ChainHead::empty("kafka:lifecycle:3");
    push(
        &mut kafka,
        "first entry of a Kafka partition's chain: a conflicting event id, non-ASCII reason",
        1_772_443_000_000_000_000,
        Source::Kafka {
            topic: "lifecycle".into(),
            partition: 3,
            offset: 1_234_567,
        },
        Body::Rejected {
            raw: b"{\"x\":\"\xc3\xa9\"}".to_vec(),
            class: RejectClass::Conflict,
            reason: "d\u{e9}j\u{e0} vu".into(),
        },
    );
    out
}

fn source_json(source: &Source) -> Value {
    match source {
        Source::File { path, line } => json!({"file": path, "line": line}),
        Source::Kafka {
            topic,
            partition,
            offset,
        } => json!({"topic": topic, "partition": partition, "offset": offset}),
    }
}

fn vector(name: &str, entry: &Entry) -> Value {
    let encoding = entry.encode();
    let body = match &entry.body {
        Body::Event {
            raw,
            event_id,
            canonical,
        } => json!({
            "type": "event",
            "raw_hex": hex::encode(raw),
            "event_id": event_id,
            "canonical_hex": hex::encode(canonical),
        }),
        Body::Rejected { raw, class, reason } => json!({
            "type": "rejected",
            "raw_hex": hex::encode(raw),
            "class": class.code(),
            "reason": reason,
        }),
    };
    json!({
        "name": name,
        "chain": entry.chain,
        "seq": entry.seq,
        "prev_hash": entry.prev_hash.to_hex(),
        "received_at_unix_nanos": entry.received_at.as_nanosecond() as i64,
        "source": source_json(&entry.source),
        "body": body,
        "encoding_hex": hex::encode(&encoding),
        "hash": EntryHash::of_encoding(&encoding).to_hex(),
    })
}

fn document() -> Value {
    json!({
        "format": "lifeledger entry v1",
        "hash_context": ENTRY_HASH_CONTEXT,
        "derive_key_of_empty_input": EntryHash::of_encoding(b"").to_hex(),
        "vectors": entries().iter().map(|(name, e)| vector(name, e)).collect::<Vec<_>>(),
    })
}

#[test]
fn known_answer_vectors_match() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/entry-vectors.json");
    let current = serde_json::to_string_pretty(&document()).unwrap() + "\n";
    if std::env::var_os("LIFELEDGER_BLESS").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // Check each stored vector independently of how this file builds them:
    // decode the stored encoding, re-encode, re-hash.
    for v in stored["vectors"].as_array().unwrap() {
        let bytes = hex::decode(v["encoding_hex"].as_str().unwrap()).unwrap();
        let entry = Entry::decode(&bytes).unwrap();
        assert_eq!(entry.encode(), bytes, "{}", v["name"]);
        assert_eq!(
            EntryHash::of_encoding(&bytes).to_hex(),
            v["hash"],
            "{}",
            v["name"]
        );
        assert_eq!(entry.seq, v["seq"].as_u64().unwrap());
        assert_eq!(entry.prev_hash.to_hex(), v["prev_hash"]);
    }
    // The chain vectors link: the second entry's prev_hash is the first's hash.
    assert_eq!(
        stored["vectors"][1]["prev_hash"],
        stored["vectors"][0]["hash"]
    );
    assert_eq!(stored["vectors"][0]["prev_hash"], "0".repeat(64));
    assert_eq!(
        stored,
        document(),
        "the code no longer produces the stored vectors"
    );
}
