//! End-to-end consumer throughput against a real broker (tansu, started by
//! this binary), beside a plain rdkafka consumer reading the same topic and
//! doing nothing. A bench binary that prints its figures:
//! `cargo bench -p lifeledger-benches --bench kafka` (needs
//! `bash scripts/broker.sh install` first).

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failed run

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lifeledger::kafka::archiver::{ArchiveRunner, ArchiveSettings};
use lifeledger::kafka::config::ConsumerConfig;
use lifeledger::kafka::consumer::run;
use lifeledger::kafka::metrics::Metrics;
use lifeledger::kafka::sink::Sink;
use lifeledger_ledger::{Ledger, LedgerOptions};
use lifeledger_tests::broker::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The allocator the `lifeledger` binary runs with (see its `main.rs`),
/// so that the consumer measured here is the one the data platform runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOPIC: &str = "lifecycle";
/// Events produced for the rows (`LIFELEDGER_KAFKA_EVENTS` overrides it,
/// to see how much of a row's time is its start and its stop).
static EVENTS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::env::var("LIFELEDGER_KAFKA_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300_000)
});
const PARTITIONS: i32 = 4;
const ALERTS: &str = "lifecycle.alerts";

fn event(i: usize) -> String {
    format!(
        r#"{{"schema_version":1,"event_id":"e{i}","event_time":"2026-03-01T10:00:00Z","account":{{"app_id":"{}","uin":"{}"}},"item_id":"item-{}","category":"container_security","kind":{{"type":"stored","store":"mongodb"}}}}"#,
        1_250_000_000 + i % 5000,
        100_000_000_000 + i % 5000,
        i / 2
    )
}

/// A bare rdkafka consumer of the topic, in a group of its own.
fn subscribed(broker: &Broker, group: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    consumer
}

fn plain_consumer(broker: &Broker) -> (f64, Duration) {
    let consumer = subscribed(broker, "plain");
    let mut got = 0usize;
    let mut first = None;
    while got < *EVENTS {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    let took = first.unwrap().elapsed();
    (*EVENTS as f64 / took.as_secs_f64(), took)
}

/// The physical floor of "durable": the same consumer appending each
/// message's bytes (length first) to a file and `fdatasync`ing it every
/// `batch` messages, as the ledger does per write; nothing else.
fn plain_durable_consumer(broker: &Broker, batch: usize) -> (f64, Duration) {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut out = std::io::BufWriter::with_capacity(4 << 20, file);
    let consumer = subscribed(broker, "plain-durable");
    let mut got = 0usize;
    let mut first = None;
    while got < *EVENTS {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            let payload = rdkafka::Message::payload(&m).unwrap_or_default();
            out.write_all(&(payload.len() as u32).to_be_bytes())
                .unwrap();
            out.write_all(payload).unwrap();
            got += 1;
            if got.is_multiple_of(batch) || got == *EVENTS {
                out.flush().unwrap();
                out.get_ref().sync_data().unwrap();
            }
        }
    }
    let took = first.unwrap().elapsed();
    (*EVENTS as f64 / took.as_secs_f64(), took)
}

fn ledger_consumer(
    broker: &Broker,
    group: &str,
    projection: bool,
    batch_size: usize,
    monitor: bool,
) -> RowRun {
    ledger_consumer_on(
        &broker.bootstrap(),
        TOPIC,
        *EVENTS,
        group,
        Setup {
            projection,
            batch_size,
            monitor,
            archive: None,
        },
    )
}

/// What runs beside the consumer.
#[derive(Clone, Copy)]
struct Setup<'a> {
    projection: bool,
    batch_size: usize,
    monitor: bool,
    /// The archive's URL and S3 settings.
    archive: Option<(&'a str, &'a [(String, String)])>,
}

fn ledger_consumer_on(
    bootstrap: &str,
    topic: &str,
    events: usize,
    group: &str,
    setup: Setup<'_>,
) -> RowRun {
    let Setup {
        projection,
        batch_size,
        monitor,
        archive,
    } = setup;
    let tmp = tempfile::tempdir().unwrap();
    let config = ConsumerConfig {
        brokers: bootstrap.to_owned(),
        group: group.into(),
        topics: vec![topic.into()],
        ledger: tmp.path().to_owned(),
        update_projection: projection,
        batch_size,
        archive: archive.map(|(url, _)| url.to_owned()),
        archive_options: archive
            .map(|(_, o)| o.iter().cloned().collect())
            .unwrap_or_default(),
        archive_interval_secs: 1,
        archive_seal_after_secs: 1,
        ..ConsumerConfig::default()
    };
    let metrics = Arc::new(Metrics::default());
    let mut ledger = Ledger::open(tmp.path(), LedgerOptions::default()).unwrap();
    if monitor {
        lifeledger_tests::publish_policy(&mut ledger);
    }
    let mut sink = Sink::new(
        ledger,
        projection,
        Arc::clone(&metrics),
        None,
        1,
        Duration::from_secs(3600),
    )
    .unwrap();
    if monitor {
        let client = lifeledger::kafka::consumer::client_config(&config, false);
        let out = lifeledger::kafka::alerts::KafkaAlertOut::new(&client, ALERTS).unwrap();
        sink.start_monitor(
            lifeledger::monitor::MonitorSettings {
                horizon: jiff::SignedDuration::from_hours(24 * 7),
                keep_sent: false,
            },
            Box::new(lifeledger::monitor::SystemClock),
            Box::new(out),
        )
        .unwrap();
    }
    let runner = archive.map(|(url, options)| {
        let runner = ArchiveRunner::start(
            tmp.path(),
            ArchiveSettings {
                url: url.to_owned(),
                interval: Duration::from_secs(1),
                lag_alert_entries: u64::MAX,
                options: options.to_vec(),
            },
            Arc::clone(&metrics),
        );
        sink.within_archive(runner.archived(), runner.conflicts(), runner.flusher());
        runner
    });
    let first: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    // When a tenth and nine tenths of the events were recorded: the rate
    // between is the steady one, without the start (the group, the first
    // fetch) and the stop (the last batch's latency wait, the last fold
    // and judgement).
    let marks: std::sync::Mutex<[Option<(Instant, u64)>; 2]> = std::sync::Mutex::new([None; 2]);
    let cpu_before = process_cpu();
    let stop = |m: &Metrics| {
        if m.consumed.load(Ordering::Relaxed) > 0 {
            first.lock().unwrap().get_or_insert_with(Instant::now);
        }
        // What reached the ledger, not what was received: a partition read
        // again counts its messages twice in `consumed`.
        let recorded = m.appended.load(Ordering::Relaxed)
            + m.rejected.load(Ordering::Relaxed)
            + m.duplicates.load(Ordering::Relaxed);
        let mut marks = marks.lock().unwrap();
        for (mark, tenths) in marks.iter_mut().zip([1, 9]) {
            if mark.is_none() && recorded * 10 >= events as u64 * tenths {
                *mark = Some((Instant::now(), recorded));
            }
        }
        recorded >= events as u64
    };
    let (summary, mut sink) = run(
        &config,
        sink,
        Arc::clone(&metrics),
        Arc::new(AtomicBool::new(false)),
        Some(&stop),
    )
    .unwrap();
    let took = first.lock().unwrap().unwrap().elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    let middle_rate = match *marks.lock().unwrap() {
        [Some((t1, n1)), Some((t9, n9))] if t9 > t1 => {
            (n9 - n1) as f64 / t9.duration_since(t1).as_secs_f64()
        }
        _ => f64::NAN,
    };
    if let Some(runner) = &runner {
        // What the run left open is sealed and archived, as a graceful
        // stop does; the latency figures then cover every entry.
        sink.seal_open_segments(None).unwrap();
        assert!(runner.flush(Duration::from_secs(300)));
        println!(
            "    every entry archived {:.2?} after the first message",
            first.lock().unwrap().unwrap().elapsed()
        );
    }
    assert_eq!(summary.appended, events as u64);
    RowRun {
        rate: events as f64 / took.as_secs_f64(),
        took,
        middle_rate,
        cpu_per_event: cpu.as_secs_f64() * 1e6 / events as f64,
        metrics,
    }
}

/// One consumer row's figures.
struct RowRun {
    /// Events per second from the first message to the consumer's return
    /// (the projection folded and the monitor judged everything).
    rate: f64,
    took: Duration,
    /// Events per second between a tenth and nine tenths recorded.
    middle_rate: f64,
    /// CPU time of this process (the consumer's threads and rdkafka's,
    /// not the broker's) per event, in µs, over the row.
    cpu_per_event: f64,
    metrics: Arc<Metrics>,
}

/// This process's CPU time so far, user and system, threads that ended
/// included (`/proc/self/stat`, in clock ticks).
fn process_cpu() -> Duration {
    static TICKS_PER_SECOND: std::sync::LazyLock<f64> = std::sync::LazyLock::new(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 14th and 15th fields.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    Duration::from_secs_f64(ticks / *TICKS_PER_SECOND)
}

/// Events produced at a steady `rate` while the consumer runs: the time
/// from each record's timestamp to its durable write.
/// `full`: with the projection and the monitor (the full job), else
/// without either.
fn live(
    broker: &Broker,
    rate: usize,
    events: usize,
    full: bool,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let topic = format!("live-{rate}-{}", if full { "full" } else { "bare" });
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for r in futures_executor::block_on(admin.create_topics(
        &[NewTopic::new(
            &topic,
            PARTITIONS,
            TopicReplication::Fixed(1),
        )],
        &AdminOptions::new(),
    ))
    .unwrap()
    {
        r.unwrap();
    }
    let bootstrap = broker.bootstrap();
    let (t, g) = (topic.clone(), format!("group-{topic}"));
    let consumer = std::thread::spawn(move || {
        ledger_consumer_on(
            &bootstrap,
            &t,
            events,
            &g,
            Setup {
                projection: full,
                batch_size: 5_000,
                monitor: full,
                archive: None,
            },
        )
    });
    // Let the consumer join before the first record is stamped.
    std::thread::sleep(Duration::from_secs(4));
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let start = Instant::now();
    for i in 0..events {
        let payload = event(*EVENTS + i);
        let key = format!("{}", i % 5000);
        let mut record = Some(BaseRecord::to(&topic).key(&key).payload(&payload));
        while let Some(r) = record.take() {
            if let Err((_, back)) = producer.send(r) {
                producer.poll(Duration::from_millis(1));
                record = Some(back);
            }
        }
        if i % 1000 == 999 {
            producer.poll(Duration::ZERO);
            let due = Duration::from_secs_f64((i + 1) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let metrics = consumer.join().unwrap().metrics;
    (
        metrics.event_to_durable_quantile(0.5),
        metrics.event_to_durable_quantile(0.99),
        metrics.event_to_durable_quantile(1.0),
    )
}

/// Whether a row runs: all of them, unless `LIFELEDGER_KAFKA_ROWS` names
/// some (comma-separated: plain, durable, bare, big, projection, full,
/// archive, live), e.g. to profile one row alone.
fn row(name: &str) -> bool {
    std::env::var("LIFELEDGER_KAFKA_ROWS")
        .map(|rows| rows.split(',').any(|r| r.trim() == name))
        .unwrap_or(true)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Ok(filter) = std::env::var("LIFELEDGER_LOG") {
        // e.g. LIFELEDGER_LOG=lifeledger::kafka::consumer=debug: where each
        // write's time goes.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let broker = Broker::start();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for r in futures_executor::block_on(admin.create_topics(
        &[
            NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1)),
            NewTopic::new(ALERTS, 1, TopicReplication::Fixed(1)),
        ],
        &AdminOptions::new(),
    ))
    .unwrap()
    {
        r.unwrap();
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let t = Instant::now();
    for i in 0..*EVENTS {
        let payload = event(i);
        let key = format!("{}", i % 5000);
        let mut record = Some(BaseRecord::to(TOPIC).key(&key).payload(&payload));
        while let Some(r) = record.take() {
            if let Err((_, back)) = producer.send(r) {
                producer.poll(Duration::from_millis(5));
                record = Some(back);
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    println!(
        "produced {} events (~{} bytes each) to {PARTITIONS} partitions of tansu in {:.1?}",
        *EVENTS,
        event(0).len(),
        t.elapsed()
    );

    let mut plain = f64::NAN;
    if row("plain") {
        let took;
        (plain, took) = plain_consumer(&broker);
        println!(
            "plain rdkafka consumer, doing nothing:      {plain:>10.0} messages/s ({took:.2?} from the first message)"
        );
    }
    let mut durable = f64::NAN;
    if row("durable") {
        let took;
        (durable, took) = plain_durable_consumer(&broker, 5_000);
        println!(
            "plain consumer + file append, fdatasync per 5,000: {durable:>10.0} messages/s ({took:.2?})"
        );
    }
    // (group, projection, batch size, monitor, what the row is)
    let rows = [
        (
            "bare",
            false,
            5_000,
            false,
            "lifeledger consume, durable, no projection:",
        ),
        (
            "big",
            false,
            20_000,
            false,
            "  same, batches of 20,000:                 ",
        ),
        (
            "projection",
            true,
            5_000,
            false,
            "lifeledger consume, durable + projection:  ",
        ),
        (
            "full",
            true,
            5_000,
            true,
            "  + deadline monitor (alerts topic):       ",
        ),
    ];
    let mut rates = std::collections::HashMap::new();
    for (name, projection, batch, monitor, what) in rows {
        if !row(name) {
            continue;
        }
        let group = format!("ledger-{name}");
        let run = ledger_consumer(&broker, &group, projection, batch, monitor);
        println!(
            "{what} {:>10.0} events/s ({:.2?}); batch latency p50 <= {:.3} s, p99 <= {:.3} s; between 1/10 and 9/10 recorded {:.0} events/s; CPU {:.1} µs/event (this process, the broker apart)",
            run.rate,
            run.took,
            run.metrics.batch_latency_quantile(0.5).unwrap_or(f64::NAN),
            run.metrics.batch_latency_quantile(0.99).unwrap_or(f64::NAN),
            run.middle_rate,
            run.cpu_per_event,
        );
        rates.insert(name, run.rate);
    }
    let rate = |name: &str| rates.get(name).copied().unwrap_or(f64::NAN);
    let bare = rate("bare");
    println!(
        "ratio to the plain consumer: {:.3} (no projection), {:.3} (with projection)",
        bare / plain,
        rate("projection") / plain
    );
    println!(
        "ratio to the plain durable consumer: {:.3} (no projection), {:.3} (with projection), {:.3} (the full job: projection and monitor)",
        bare / durable,
        rate("projection") / durable,
        rate("full") / durable
    );
    // The archive on, beside the same consumer without it (`bare`, above):
    // to a local directory, and to an S3-compatible server (moto).
    if row("archive") {
        archive_rows(&broker, bare);
    }
    if row("live") {
        for (rate, full) in [(20_000, false), (50_000, false), (50_000, true)] {
            let (p50, p99, max) = live(&broker, rate, rate * 4, full);
            let what = if full {
                "the full job"
            } else {
                "no projection"
            };
            println!(
                "live at {rate} events/s for 4 s, {what}: event-to-durable p50 <= {:.3} s, p99 <= {:.3} s, max <= {:.3} s (record timestamp to fsync, histogram bucket bounds)",
                p50.unwrap_or(f64::NAN),
                p99.unwrap_or(f64::NAN),
                max.unwrap_or(f64::NAN)
            );
        }
    }
}

fn archive_rows(broker: &Broker, bare: f64) {
    let archive_dir = tempfile::tempdir().unwrap();
    let s3 = lifeledger_tests::s3::S3Server::start();
    s3.create_bucket("bench", Some(1));
    let s3_options: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for (what, url, options) in [
        (
            "a local directory",
            archive_dir.path().to_string_lossy().into_owned(),
            Vec::new(),
        ),
        (
            "S3 (moto, Object Lock)",
            "s3://bench/ledger".to_owned(),
            s3_options,
        ),
    ] {
        let group = format!("ledger-archive-{}", url.len());
        let RowRun {
            rate,
            took,
            metrics,
            ..
        } = ledger_consumer_on(
            &broker.bootstrap(),
            TOPIC,
            *EVENTS,
            &group,
            Setup {
                projection: false,
                batch_size: 5_000,
                monitor: false,
                archive: Some((&url, &options)),
            },
        );
        println!(
            "lifeledger consume + archive to {what}: {rate:>10.0} events/s ({took:.2?}), {:.3} of the same without it; receipt-to-archived p50 <= {:.1} s, p99 <= {:.1} s (sealed every 1 s, uploaded every 1 s)",
            rate / bare,
            metrics.archive_latency_quantile(0.5).unwrap_or(f64::NAN),
            metrics.archive_latency_quantile(0.99).unwrap_or(f64::NAN)
        );
    }
}
