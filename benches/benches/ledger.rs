//! Ledger throughput: durable appends in batches of 1,000, verification,
//! and a raw per-entry blake3 loop over the same entry bytes as the
//! reference. Run with `cargo bench -p lifeledger-benches --bench ledger`.
//!
//! After criterion's own report, prints entries/s for verify and for the
//! blake3 loop, and their ratio.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failed run

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use jiff::Timestamp;
use lifeledger_ledger::verify::Depth;
use lifeledger_ledger::{Incoming, Ledger, LedgerOptions, Source};

const BATCH: usize = 1_000;
const VERIFY_ENTRIES: u64 = 100_000;

/// A realistic event of about 300 bytes.
fn event(i: u64) -> Vec<u8> {
    format!(
        r#"{{"schema_version":1,"event_id":"evt-{i:012}","event_time":"2026-03-02T09:15:00Z","account":{{"app_id":"{}","uin":"{}"}},"item_id":"item-{:08}","category":"container_security","kind":{{"type":"backed_up","store":"cos","backup_id":"bk-{i:010}","source_store":"mongodb"}}}}"#,
        1_250_000_000 + i % 5_000,
        100_000_000_000 + i % 5_000,
        i / 3
    )
    .into_bytes()
}

fn batch(from: u64, n: usize) -> Vec<Incoming> {
    (from..from + n as u64)
        .map(|i| Incoming {
            source: Source::Kafka {
                topic: "lifecycle".into(),
                partition: 0,
                offset: i as i64,
            },
            raw: event(i),
        })
        .collect()
}

fn fill(ledger: &mut Ledger, entries: u64) {
    let mut next = 0;
    while next < entries {
        let n = BATCH.min((entries - next) as usize);
        ledger
            .append("bench", batch(next, n), Timestamp::now())
            .unwrap();
        next += n as u64;
    }
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
    let mut next = 0u64;
    group.bench_function("durable_batch_of_1000", |b| {
        b.iter_batched(
            || {
                let input = batch(next, BATCH);
                next += BATCH as u64;
                input
            },
            |input| ledger.append("bench", input, Timestamp::now()).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Entry encodings of a filled ledger, for the blake3 reference loop.
fn encodings(ledger: &Ledger) -> Vec<Vec<u8>> {
    ledger
        .records("bench", 0)
        .unwrap()
        .map(|r| r.unwrap().encoding)
        .collect()
}

fn bench_verify(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
    fill(&mut ledger, VERIFY_ENTRIES);
    let encodings = encodings(&ledger);
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(VERIFY_ENTRIES));
    group.sample_size(10);
    group.bench_function("chain", |b| {
        b.iter(|| {
            assert!(
                ledger
                    .verify(Depth::Chain, &mut |_| {})
                    .unwrap()
                    .is_intact()
            )
        })
    });
    group.bench_function("chain_and_events", |b| {
        b.iter(|| {
            assert!(
                ledger
                    .verify(Depth::Events, &mut |_| {})
                    .unwrap()
                    .is_intact()
            )
        })
    });
    group.bench_function("raw_blake3_per_entry", |b| {
        b.iter(|| {
            for e in &encodings {
                black_box(blake3::hash(e));
            }
        })
    });
    group.finish();
}

fn best_of<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap()
}

/// The figures the README records, measured side by side.
fn print_ratio() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
    let start = Instant::now();
    fill(&mut ledger, VERIFY_ENTRIES);
    let append = start.elapsed();
    let encodings = encodings(&ledger);
    let bytes: usize = encodings.iter().map(Vec::len).sum();
    let chain = best_of(5, || {
        ledger.verify(Depth::Chain, &mut |_| {}).unwrap();
    });
    let events = best_of(5, || {
        ledger.verify(Depth::Events, &mut |_| {}).unwrap();
    });
    let raw = best_of(5, || {
        for e in &encodings {
            black_box(blake3::hash(e));
        }
    });
    let rate = |d: Duration| VERIFY_ENTRIES as f64 / d.as_secs_f64();
    println!();
    println!(
        "{VERIFY_ENTRIES} entries, {:.0} bytes each on average",
        bytes as f64 / VERIFY_ENTRIES as f64
    );
    println!(
        "durable append, batches of {BATCH}: {:>12.0} entries/s",
        rate(append)
    );
    println!(
        "verify (chain):                   {:>12.0} entries/s",
        rate(chain)
    );
    println!(
        "verify (chain + events):          {:>12.0} entries/s",
        rate(events)
    );
    println!(
        "raw blake3 per entry:             {:>12.0} entries/s",
        rate(raw)
    );
    println!(
        "ratio verify(chain)/raw blake3: {:.3}   verify(chain+events)/raw blake3: {:.3}",
        rate(chain) / rate(raw),
        rate(events) / rate(raw)
    );
}

criterion_group!(benches, bench_append, bench_verify);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratio();
}
