//! How the ledger behaves as it grows: a ledger filled with the demo
//! stream (not through Kafka: straight into `ingest`, in ten chunks), then
//! each command run on it as a user would, under `/usr/bin/time`.
//!
//! Prints, per size: bytes on disk per event (evidence, index, event ids
//! and projection apart),
//! append throughput of the first and the last chunk, and for `ingest`,
//! `verify`, `status`, `item`, `timeline --item`, `prove`,
//! `rebuild-projection` and `rebuild-index` the wall time and peak RSS;
//! then one more chunk through a real broker into `consume` (projection
//! and monitor on), when `scripts/broker.sh install` has installed tansu.
//!
//! `cargo bench -p lifeledger-benches --bench scale` (sizes from
//! `LIFELEDGER_SCALE_SIZES`, default `1000000`; e.g. `1000000,10000000`).
//! Builds the release binary first, unless `LIFELEDGER_BIN` names one (to
//! measure an earlier build beside this one). `LIFELEDGER_SCALE_KEEP=1`
//! keeps each ledger (and prints where), to profile a command on it;
//! `LIFELEDGER_SCALE_CONSUME_INTO=DIR` runs only the consume step, of a
//! tenth of the size, into a kept ledger (`LIFELEDGER_SCALE_NO_MONITOR=1`:
//! without the monitor). Needs `/usr/bin/time`
//! (Debian `time`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use lifeledger::kafka::demo::synthetic_stream;

const CHUNKS: usize = 10;

fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("LIFELEDGER_BIN") {
        return PathBuf::from(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "lifeledger",
            "--bin",
            "lifeledger",
        ])
        .status()
        .expect("cargo build");
    assert!(status.success(), "building the release binary failed");
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/lifeledger")
}

/// Wall seconds and peak RSS (MiB) of one command, and its stdout.
fn measure(bin: &Path, ledger: &Path, args: &[&str]) -> (f64, f64, String) {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(bin)
        .arg("--ledger")
        .arg(ledger)
        .args(args)
        .output()
        .expect("/usr/bin/time");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let mut fields = last.split_whitespace();
    let wall: f64 = fields
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or(f64::NAN);
    let kib: f64 = fields
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or(f64::NAN);
    if !out.status.success() {
        println!(
            "  ({} exited {:?}: {})",
            args[0],
            out.status.code(),
            stderr.trim()
        );
    }
    (
        wall,
        kib / 1024.0,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let meta = entry.metadata().expect("metadata");
            total += if meta.is_dir() {
                du(&entry.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

/// Writes chunk `k` of the stream: `per_chunk` events, ids made distinct
/// per chunk. Returns the file and its line count.
fn write_chunk(dir: &Path, k: usize, per_chunk: usize) -> (PathBuf, usize) {
    use std::io::Write;
    let stream = synthetic_stream(per_chunk, 7 + k as u64);
    let path = dir.join(format!("chunk-{k}.jsonl"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("chunk file"));
    for (_, payload) in &stream.messages {
        let text = String::from_utf8_lossy(payload)
            .replace("\"event_id\":\"", &format!("\"event_id\":\"c{k}-"))
            .replace("\"item_id\":\"", &format!("\"item_id\":\"c{k}-"));
        out.write_all(text.as_bytes()).expect("write");
        out.write_all(b"\n").expect("write");
    }
    out.flush().expect("flush");
    (path, stream.messages.len())
}

fn run_size(bin: &Path, size: usize) {
    println!("\n== {size} events ==");
    let work = tempfile::Builder::new()
        .prefix("lifeledger-scale-")
        .tempdir()
        .expect("tempdir");
    let ledger = work.path().join("ledger");
    let key = work.path().join("key");
    let per_chunk = size / CHUNKS;
    let policy =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ledger/policies/retention-2026-11.toml");
    let (_, _, _) = measure(
        bin,
        &ledger,
        &["policy", "publish", policy.to_str().unwrap_or_default()],
    );
    let mut lines_total = 0;
    let mut ingest_rss: f64 = 0.0;
    let mut rates = Vec::new();
    let mut an_item = None;
    for k in 0..CHUNKS {
        let (file, lines) = write_chunk(work.path(), k, per_chunk);
        if an_item.is_none() {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            an_item = text
                .split("\"item_id\":\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned);
        }
        let start = Instant::now();
        let (_, rss, _) = measure(
            bin,
            &ledger,
            &[
                "ingest",
                file.to_str().unwrap_or_default(),
                "--batch-size",
                "5000",
            ],
        );
        let secs = start.elapsed().as_secs_f64();
        ingest_rss = ingest_rss.max(rss);
        rates.push(lines as f64 / secs);
        lines_total += lines;
        let _ = std::fs::remove_file(&file);
        println!(
            "  chunk {k}: {lines} lines in {secs:.1} s ({:.0} lines/s), ingest peak RSS {rss:.0} MiB",
            lines as f64 / secs
        );
    }
    let evidence = du(&ledger.join("segments")) + du(&ledger.join("manifest"));
    let index = du(&ledger.join("index"));
    let projection = du(&ledger.join("projection"));
    let event_ids = du(&ledger.join("event-ids"));
    let tree = du(&ledger.join("tree"));
    println!(
        "  on disk: evidence {:.0} bytes/event, index {:.0} bytes/event, Merkle subtrees {:.1} bytes/event, event ids {:.0} bytes/event, projection {:.0} bytes/event ({lines_total} lines)",
        evidence as f64 / lines_total as f64,
        index as f64 / lines_total as f64,
        tree as f64 / lines_total as f64,
        event_ids as f64 / lines_total as f64,
        projection as f64 / lines_total as f64
    );
    println!(
        "  append throughput: first chunk {:.0} lines/s, last chunk {:.0} lines/s (ratio {:.2}); ingest peak RSS {ingest_rss:.0} MiB",
        rates[0],
        rates[CHUNKS - 1],
        rates[CHUNKS - 1] / rates[0]
    );
    let item = an_item.unwrap_or_default();
    let _ = Command::new(bin)
        .args(["keygen", "--out"])
        .arg(&key)
        .output();
    let key_file = format!("{}.key", key.display());
    let proof = work.path().join("proof");
    let commands: Vec<Vec<&str>> = vec![
        vec!["verify", "--chain-only"],
        vec!["verify"],
        vec!["status", "--json"],
        vec!["item", &item, "--json"],
        vec!["timeline", "--item", &item, "--json"],
        vec!["checkpoint", "--key", &key_file],
        vec!["prove", &item, "--out", proof.to_str().unwrap_or_default()],
        vec!["rebuild-projection"],
        vec!["rebuild-index"],
    ];
    for args in commands {
        let (wall, rss, _) = measure(bin, &ledger, &args);
        println!(
            "  {:<40} {wall:>7.2} s  peak RSS {rss:>7.0} MiB",
            args.join(" ")
        );
    }
    consume_chunk(bin, work.path(), &ledger, per_chunk);
    if std::env::var_os("LIFELEDGER_SCALE_KEEP").is_some() {
        // To profile a command on the ledger afterwards.
        println!("  kept: {}", work.keep().display());
    }
}

/// `consume` (projection and monitor on) of one more chunk, produced to a
/// real broker (tansu, when `scripts/broker.sh install` has put it there),
/// into the filled ledger: what the streaming job costs on a ledger of
/// this size. Returns nothing when no broker is installed.
fn consume_chunk(bin: &Path, work: &Path, ledger: &Path, per_chunk: usize) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::time::Duration;

    if !lifeledger_tests::broker::Broker::installed() {
        println!("  consume: skipped (no tansu broker: `bash scripts/broker.sh install`)");
        return;
    }
    let broker = lifeledger_tests::broker::Broker::start();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let topics = [
        NewTopic::new("lifecycle", 16, TopicReplication::Fixed(1)),
        NewTopic::new("lifecycle.alerts", 1, TopicReplication::Fixed(1)),
    ];
    for created in futures_executor::block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .expect("create topics")
    {
        created.expect("topic");
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    // The chunk after the last ingested: ids new to the ledger.
    let (file, lines) = write_chunk(work, CHUNKS, per_chunk);
    let text = std::fs::read_to_string(&file).expect("chunk");
    for line in text.lines() {
        let key = line
            .split("\"uin\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        let mut record = Some(BaseRecord::to("lifecycle").key(key).payload(line));
        while let Some(r) = record.take() {
            if let Err((_, back)) = producer.send(r) {
                producer.poll(Duration::from_millis(5));
                record = Some(back);
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    let _ = std::fs::remove_file(&file);
    const IDLE_MS: u64 = 3_000;
    let idle = IDLE_MS.to_string();
    let brokers = broker.bootstrap();
    // LIFELEDGER_SCALE_NO_MONITOR=1: the projection only, to tell the
    // monitor's share apart.
    let monitor = std::env::var_os("LIFELEDGER_SCALE_NO_MONITOR").is_none();
    let mut args = vec![
        "consume",
        "--brokers",
        &brokers,
        "--group",
        "scale",
        "--topic",
        "lifecycle",
        "--exit-when-idle-ms",
        &idle,
    ];
    if monitor {
        args.extend(["--alerts-topic", "lifecycle.alerts"]);
    }
    let (wall, rss, _) = measure(bin, ledger, &args);
    let busy = wall - IDLE_MS as f64 / 1000.0;
    println!(
        "  {:<40} {wall:>7.2} s  peak RSS {rss:>7.0} MiB  ({lines} events, {:.0} events/s without the {IDLE_MS} ms idle wait)",
        if monitor {
            "consume (projection, monitor)"
        } else {
            "consume (projection, no monitor)"
        },
        lines as f64 / busy
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::var("LIFELEDGER_SCALE_SIZES")
        .unwrap_or_else(|_| "1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let bin = binary();
    if let Some(ledger) = std::env::var_os("LIFELEDGER_SCALE_CONSUME_INTO") {
        // Only the consume step, into a ledger kept by an earlier run.
        let per_chunk = sizes.first().copied().unwrap_or(1_000_000) / CHUNKS;
        let work = tempfile::tempdir().expect("tempdir");
        consume_chunk(&bin, work.path(), Path::new(&ledger), per_chunk);
        return;
    }
    for size in sizes {
        run_size(&bin, size);
    }
}
