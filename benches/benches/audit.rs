//! Auditor figures at 1M entries: offline bundle verification beside a raw
//! per-entry BLAKE3 loop over the same entry bytes, and the size and time of
//! item proofs. A bench binary that prints its figures:
//! `cargo bench -p lifeledger-benches --bench audit`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failed run

use std::hint::black_box;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use lifeledger_ledger::bundle::proof::verify_item_proof;
use lifeledger_ledger::bundle::verify::verify_bundle;
use lifeledger_ledger::bundle::{Record, read};
use lifeledger_ledger::checkpoint::PrivateKey;
use lifeledger_ledger::merkle;
use lifeledger_ledger::store::ExportScope;
use lifeledger_ledger::verify::Depth;
use lifeledger_ledger::{Incoming, Ledger, LedgerOptions, Source};

/// The allocator of the `lifeledger` binary, so that the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENTRIES: u64 = 1_000_000;
const POLICY: &str = include_str!("../../ledger/policies/retention-2026-11.toml");

fn event(i: u64) -> Vec<u8> {
    let item = i / 4;
    let kind = match i % 4 {
        0 => r#""region":"SG","kind":{"type":"collected","sensitive":false,"purpose":"container scanning"}"#.to_owned(),
        1 => r#""kind":{"type":"stored","store":"mongodb"}"#.to_owned(),
        2 => format!(r#""kind":{{"type":"backed_up","store":"cos","backup_id":"bk-{item}","source_store":"mongodb"}}"#),
        _ => r#""kind":{"type":"deleted","store":"mongodb"}"#.to_owned(),
    };
    format!(
        r#"{{"schema_version":1,"event_id":"e{i}","event_time":"2026-03-01T10:00:0{}Z","account":{{"app_id":"{}","uin":"{}"}},"item_id":"item-{item:09}","category":"container_security",{kind}}}"#,
        i % 4,
        1_250_000_000 + item % 10_000,
        100_000_000_000 + item % 10_000
    )
    .into_bytes()
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
    let key = PrivateKey::from_seed("bench", [3; 32]).unwrap();
    let policy = lifeledger_ledger::policy::Policy::parse(POLICY).unwrap();
    ledger
        .publish_policy(&policy, POLICY, "policy", Timestamp::now())
        .unwrap();
    let src = |i: u64| Source::Kafka {
        topic: "lifecycle".into(),
        partition: 0,
        offset: i as i64,
    };
    let t = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..ENTRIES {
        batch.push(Incoming {
            source: src(i),
            raw: event(i),
        });
        if batch.len() == 1000 {
            ledger
                .append("bench", std::mem::take(&mut batch), Timestamp::now())
                .unwrap();
        }
    }
    let fill = t.elapsed();
    let t = Instant::now();
    ledger.checkpoint(&key, Timestamp::now()).unwrap();
    let checkpoint = t.elapsed();
    let t = Instant::now();
    let mut bundle = Vec::new();
    ledger
        .export(&ExportScope::Full, &mut bundle, Timestamp::now())
        .unwrap();
    let export = t.elapsed();

    let encodings: Vec<Vec<u8>> = read(&bundle)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Entry { encoding, .. } => Some(encoding),
            _ => None,
        })
        .collect();
    let n = encodings.len() as f64;
    let bytes: usize = encodings.iter().map(Vec::len).sum();
    let public = key.public();
    // The three are measured in turns, five rounds, best of each: this
    // machine's speed drifts over seconds, and a drift should touch all
    // three alike rather than one of them.
    let (mut verify, mut verify_events, mut raw) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        verify = verify.min(timed(|| {
            let report = verify_bundle(&bundle, &public, None, Depth::Chain, &mut |_| {}).unwrap();
            assert!(report.is_intact(), "{:?}", report.findings);
        }));
        // The default of `verify BUNDLE`: every event re-decoded from its
        // raw bytes and checked against its recorded id and canonical form.
        verify_events = verify_events.min(timed(|| {
            let report = verify_bundle(&bundle, &public, None, Depth::Events, &mut |_| {}).unwrap();
            assert!(report.is_intact(), "{:?}", report.findings);
        }));
        raw = raw.min(timed(|| {
            for e in &encodings {
                black_box(blake3::hash(e));
            }
        }));
    }
    println!(
        "{} entries ({:.0} bytes each), bundle {:.0} MiB; filled in {fill:.1?}, checkpoint in {checkpoint:.1?}, exported in {export:.1?}",
        encodings.len(),
        bytes as f64 / n,
        bundle.len() as f64 / (1 << 20) as f64
    );
    println!(
        "offline verify --chain-only (parse, signatures, hashes, links, Merkle roots): {:.0} entries/s ({verify:.2?})",
        n / verify.as_secs_f64()
    );
    println!(
        "offline verify, default (also every event re-decoded):         {:.0} entries/s ({verify_events:.2?})",
        n / verify_events.as_secs_f64()
    );
    println!(
        "raw blake3 per entry over the same bytes:                      {:.0} entries/s ({raw:.2?})",
        n / raw.as_secs_f64()
    );
    println!(
        "ratio verify / raw blake3: {:.3} (chain only), {:.3} (default)",
        raw.as_secs_f64() / verify.as_secs_f64(),
        raw.as_secs_f64() / verify_events.as_secs_f64()
    );

    // Proofs at 1M entries.
    let t = Instant::now();
    let proof = ledger.inclusion_proof("bench", 777_777, ENTRIES).unwrap();
    let gen_one = t.elapsed();
    let (_, root) = ledger.tree_head("bench").unwrap();
    let leaf = merkle::leaf_hash(
        &ledger
            .records("bench", 777_777)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .hash,
    );
    let t = Instant::now();
    merkle::verify_inclusion(777_777, ENTRIES, &leaf, &proof, &root).unwrap();
    let check_one = t.elapsed();
    let consistency = ledger.consistency_proof("bench", 333_333, ENTRIES).unwrap();
    println!(
        "inclusion proof at 1M: {} hashes ({} bytes), generated in {gen_one:.1?}, verified in {check_one:.1?}; consistency 333,333 -> 1M: {} hashes",
        proof.len(),
        proof.len() * 32,
        consistency.len()
    );
    let mut projection = ledger.load_projection().unwrap();
    ledger.catch_up(&mut projection, &mut |_| {}).unwrap();
    let t = Instant::now();
    let item_proof = ledger.prove_item("item-000194444", &projection).unwrap();
    let gen_item = t.elapsed();
    let json = serde_json::to_vec(&item_proof).unwrap();
    let t = Instant::now();
    let report = verify_item_proof(&json, &public, None).unwrap();
    let check_item = t.elapsed();
    println!(
        "item proof at 1M: {} entries, {} bytes of JSON (policy text included), generated in {gen_item:.1?}, verified with verdict recomputed in {check_item:.1?} ({})",
        item_proof.entries.len() + 1,
        json.len(),
        report.verdict.map(|v| v.status.name()).unwrap_or("none")
    );
}
