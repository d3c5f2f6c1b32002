//! Projection figures: rebuild rate from a 1M-event ledger, and resident
//! memory of a projection holding 1M items. A bench binary that prints its
//! figures: `cargo bench -p lifeledger-benches --bench projection`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failed run

use std::time::Instant;

use jiff::Timestamp;
use lifeledger_ledger::chain::ChainHead;
use lifeledger_ledger::entry::Entry;
use lifeledger_ledger::projection::Projection;
use lifeledger_ledger::projection::replay::{Cut, Point, Scope};
use lifeledger_ledger::store::Replay;
use lifeledger_ledger::{Body, Incoming, Ledger, LedgerOptions, ReadOnlyLedger, Source};

const LEDGER_EVENTS: u64 = 1_000_000;
const MEMORY_ITEMS: u64 = 1_000_000;

/// Event `n` of item `item`: collected, stored, backed up, deleted.
fn event(item: u64, n: u64) -> Vec<u8> {
    let account = format!(
        r#""account":{{"app_id":"{}","uin":"{}"}},"item_id":"item-{item:09}","category":"container_security""#,
        1_250_000_000 + item % 10_000,
        100_000_000_000 + item % 10_000
    );
    let day = 1 + item % 28;
    let kind = match n {
        0 => r#""region":"SG","kind":{"type":"collected","sensitive":false,"purpose":"container scanning"}"#.to_owned(),
        1 => r#""kind":{"type":"stored","store":"mongodb"}"#.to_owned(),
        2 => format!(r#""kind":{{"type":"backed_up","store":"cos","backup_id":"bk-{item}","source_store":"mongodb"}}"#),
        _ => r#""kind":{"type":"deleted","store":"mongodb"}"#.to_owned(),
    };
    format!(
        r#"{{"schema_version":1,"event_id":"e{item}-{n}","event_time":"2026-03-{day:02}T10:00:0{n}Z",{account},{kind}}}"#
    )
    .into_bytes()
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn rebuild_from_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
    let start = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..LEDGER_EVENTS {
        batch.push(Incoming {
            source: Source::Kafka {
                topic: "lifecycle".into(),
                partition: 0,
                offset: i as i64,
            },
            raw: event(i / 4, i % 4),
        });
        if batch.len() == 1000 {
            ledger
                .append("bench", std::mem::take(&mut batch), Timestamp::now())
                .unwrap();
        }
    }
    let filled = start.elapsed();
    let start = Instant::now();
    let projection = ledger.rebuild_projection(&mut |_| {}).unwrap();
    let rebuild = start.elapsed();
    assert_eq!(projection.items.len() as u64, LEDGER_EVENTS / 4);
    println!(
        "ledger of {LEDGER_EVENTS} events ({} items) filled in {:.1?} ({:.0} events/s durable append)",
        projection.items.len(),
        filled,
        LEDGER_EVENTS as f64 / filled.as_secs_f64()
    );
    println!(
        "projection rebuild from the ledger (read, decode, fold, save): {:.1?} = {:.0} events/s",
        rebuild,
        LEDGER_EVENTS as f64 / rebuild.as_secs_f64()
    );
    drop(ledger);
    replays(tmp.path(), rebuild);
}

/// As-of replays of the same ledger, beside the rebuild.
fn replays(dir: &std::path::Path, rebuild: std::time::Duration) {
    let ledger = ReadOnlyLedger::open(dir).unwrap();
    let cases = [
        ("every entry", Cut::everything(Timestamp::now()), Scope::All),
        (
            "up to seq 499999",
            ledger
                .resolve_point(&Point::Seq {
                    chain: Some("bench".into()),
                    seq: LEDGER_EVENTS / 2 - 1,
                })
                .unwrap(),
            Scope::All,
        ),
        (
            "every entry, one item",
            Cut::everything(Timestamp::now()),
            Scope::Item("item-000123456".into()),
        ),
    ];
    for (what, cut, scope) in cases {
        let start = Instant::now();
        let mut replay = Replay::new();
        ledger
            .replay(&mut replay, &cut, &scope, &mut |_| {}, &mut |_| {})
            .unwrap();
        let took = start.elapsed();
        println!(
            "as-of replay ({what}): {} entries read, {} items, {:.1?} = {:.0} entries/s ({:.2}x the rebuild's time)",
            replay.replayed,
            replay.projection.items.len(),
            took,
            replay.replayed as f64 / took.as_secs_f64(),
            took.as_secs_f64() / rebuild.as_secs_f64()
        );
    }
    drop(ledger);
    let start = Instant::now();
    let copy = ReadOnlyLedger::open(dir).unwrap();
    println!(
        "opening for reading (a private copy of the index; the evidence is read in place): {:.1?}",
        start.elapsed()
    );
    drop(copy);
}

fn memory_at_a_million_items() {
    let before = rss_bytes();
    let mut head = ChainHead::empty("bench");
    let mut projection = Projection::default();
    let start = Instant::now();
    let received = Timestamp::now();
    for item in 0..MEMORY_ITEMS {
        for n in 0..2 {
            let raw = event(item, n);
            let decoded = lifeledger_schemas::decode_event(&raw).unwrap();
            let body = Body::Event {
                canonical: lifeledger_schemas::canonical_json(&decoded),
                event_id: decoded.event_id,
                raw,
            };
            let sealed = head.append(
                received,
                Source::File {
                    path: "b".into(),
                    line: 1,
                },
                body,
            );
            projection
                .apply(&Entry::decode(&sealed.encoding).unwrap())
                .unwrap();
        }
    }
    let folded = start.elapsed();
    let after = rss_bytes();
    println!(
        "in-memory fold of {} events into {MEMORY_ITEMS} items: {:.1?} = {:.0} events/s",
        2 * MEMORY_ITEMS,
        folded,
        (2 * MEMORY_ITEMS) as f64 / folded.as_secs_f64()
    );
    println!(
        "resident memory at {} items: {:.0} MiB over the baseline ({:.0} bytes per item; process RSS {:.0} MiB)",
        projection.items.len(),
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        (after.saturating_sub(before)) as f64 / MEMORY_ITEMS as f64,
        after as f64 / (1 << 20) as f64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would not.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    memory_at_a_million_items();
    rebuild_from_ledger();
}
