//! `lifeledger demo`: the main job end to end, with nothing external. An
//! in-process MockCluster stands in for Kafka; the consumer is the real one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use jiff::Timestamp;
use lifeledger::kafka::config::ConsumerConfig;
use lifeledger::kafka::consumer::run;
use lifeledger::kafka::demo::synthetic_stream;
use lifeledger::kafka::metrics::Metrics;
use lifeledger::kafka::send_waiting;
use lifeledger_ledger::policy::Policy;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::Outcome;

const POLICY: &str = include_str!("../../../ledger/policies/retention-2026-11.toml");
const TOPIC: &str = "lifecycle";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// About this many valid events (plus some garbage and resends).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Partitions of the demo topic. The stream is produced while it is
    /// consumed, a bounded backlog ahead (the mock cluster keeps only the
    /// newest 5 MiB of each partition), so any number of events fits.
    #[arg(long, default_value_t = 16)]
    pub partitions: i32,
    /// Keep the demo ledger here (must not exist); default: a fresh
    /// directory under the system's temporary directory.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// A librdkafka setting for the demo consumer, KEY=VALUE (repeatable).
    #[arg(long = "set", value_parser = super::consume::parse_setting)]
    pub settings: Vec<(String, String)>,
}

use super::progress_bar as bar;

pub fn run_demo(args: DemoArgs) -> anyhow::Result<Outcome> {
    let (dir, _tmp) = match &args.keep {
        Some(d) if d.exists() => bail!("{} exists; the demo needs a fresh directory", d.display()),
        Some(d) => (d.clone(), None),
        None => {
            let tmp = tempfile::tempdir().context("making a temporary directory")?;
            (tmp.path().join("ledger"), Some(tmp))
        }
    };
    // Made while the cluster starts and the ledger opens.
    let (events, seed) = (args.events, args.seed);
    let making = std::thread::spawn(move || synthetic_stream(events, seed));
    let owner = cluster_owner()?;
    let cluster = owner
        .client()
        .mock_cluster()
        .ok_or_else(|| anyhow!("the mock Kafka cluster did not start"))?;
    cluster.create_topic(TOPIC, args.partitions, 1)?;
    cluster.create_topic("lifecycle.dlq", 1, 1)?;
    cluster.create_topic("lifeledger.custody", 1, 1)?;
    let brokers = cluster.bootstrap_servers();

    // A fresh ledger judged by the shipped policy.
    let config = ConsumerConfig {
        brokers,
        group: "lifeledger-demo".into(),
        topics: vec![TOPIC.into()],
        ledger: dir.clone(),
        dead_letter_topic: Some("lifecycle.dlq".into()),
        librdkafka: args.settings.iter().cloned().collect(),
        ..ConsumerConfig::default()
    };
    let metrics = Arc::new(Metrics::default());
    let mut sink = super::consume::open_sink(&config, &metrics)?;
    let policy = Policy::parse(POLICY).map_err(|e| anyhow!("the shipped policy: {e}"))?;
    sink.ledger_mut().publish_policy(
        &policy,
        POLICY,
        "ledger/policies/retention-2026-11.toml",
        Timestamp::now(),
    )?;

    let stream = making
        .join()
        .map_err(|_| anyhow!("making the demo stream panicked"))?;
    out!(
        "demo stream: {} messages ({} events, {} garbage, {} resends) for {} partitions",
        stream.messages.len(),
        stream.events,
        stream.garbage,
        stream.resends,
        args.partitions
    );
    let total = stream.messages.len() as u64;
    let consume_bar = bar(total, "stream");
    let started = Instant::now();
    let producer_failed = Arc::new(AtomicBool::new(false));
    let producer = stream_in(
        &config.brokers,
        stream.messages,
        backlog_window(args.partitions),
        Arc::clone(&metrics),
        Arc::clone(&producer_failed),
    );
    // Done when every message is in the ledger (an event, a rejection or a
    // skipped resend); `consumed` also counts messages read again.
    let stop = |m: &Metrics| {
        let recorded = recorded(m);
        consume_bar.set_position(recorded);
        // A producer that gave up (its error is reported below) ends the
        // wait too.
        recorded >= total || producer_failed.load(Ordering::Relaxed)
    };
    let (summary, sink) = run(
        &config,
        sink,
        Arc::clone(&metrics),
        Arc::new(AtomicBool::new(false)),
        Some(&stop),
    )?;
    let took = started.elapsed();
    consume_bar.finish_and_clear();
    drop(sink);
    match producer.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.context("producing the demo stream")),
        Err(_) => bail!("the demo producer panicked"),
    }
    out!(
        "streamed and consumed {} messages in {:.2?} ({:.0} messages/s): {} appended, {} rejected (also sent to lifecycle.dlq), {} duplicates",
        summary.consumed,
        took,
        summary.consumed as f64 / took.as_secs_f64(),
        summary.appended,
        summary.rejected,
        summary.duplicates
    );
    out!("");
    let dir_str = dir.to_string_lossy().into_owned();
    super::verify::run(
        &dir,
        super::verify::VerifyArgs {
            bundle: None,
            from_archive: None,
            key: None,
            trusted_checkpoint: None,
            deep: false,
            chain_only: false,
            accept_unvouched_tail: false,
            json: false,
        },
    )?;
    out!("");
    super::retention::status(
        &dir,
        super::retention::StatusArgs {
            judge: super::retention::JudgeArgs {
                as_of: None,
                policy: None,
                json: false,
            },
            due_within_days: 30,
        },
    )?;
    if args.keep.is_some() {
        out!("\nthe demo ledger is in {dir_str}; try `lifeledger --ledger {dir_str} findings`");
    }
    Ok(Outcome::Ok)
}

/// A client that owns the demo's mock cluster (librdkafka starts one for
/// a client configured with `test.mock.num.brokers`), with the group
/// coordinator's first-join delay off.
///
/// The mock coordinator, like a broker, waits
/// `group.initial.rebalance.delay.ms` (3 s) before it forms a new group,
/// so that members starting together join one generation. The demo's
/// group has one member, and those 3 s were an eighth of a million-event
/// demo. rdkafka's `MockCluster` has no setter for it; librdkafka's C API
/// has (`rd_kafka_mock_group_initial_rebalance_delay_ms`).
#[allow(unsafe_code)]
fn cluster_owner() -> anyhow::Result<BaseProducer> {
    let owner: BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()
        .map_err(|e| anyhow!("starting the mock Kafka cluster: {e}"))?;
    // SAFETY: `native_ptr` is the live client `owner` holds; librdkafka
    // returns the mock cluster that client owns (or null), which lives as
    // long as the client. The setter takes the cluster's own lock.
    unsafe {
        let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
        if cluster.is_null() {
            bail!("starting the mock Kafka cluster: librdkafka made none");
        }
        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
    }
    Ok(owner)
}

/// Messages counted into the ledger so far: events, rejections, resends
/// skipped.
fn recorded(m: &Metrics) -> u64 {
    m.appended.load(Ordering::Relaxed)
        + m.rejected.load(Ordering::Relaxed)
        + m.duplicates.load(Ordering::Relaxed)
}

/// How far the producer may run ahead of the ledger. The mock cluster
/// keeps only the newest 5 MiB of each partition's log (librdkafka's
/// `rdkafka_mock.c`, `max_size`) and drops older message sets whether or
/// not they were read: about 15,000 demo messages uncompressed. Kept at
/// 5,000 per partition (and compressed), no message is dropped before the
/// consumer has read it, whatever the number of events.
fn backlog_window(partitions: i32) -> u64 {
    u64::try_from(partitions.max(1)).unwrap_or(1) * 5_000
}

/// Produces the demo stream on its own thread, never more than `window`
/// messages ahead of what the ledger has recorded; sets `failed` if it
/// gives up.
fn stream_in(
    brokers: &str,
    messages: Vec<(String, Vec<u8>)>,
    window: u64,
    metrics: Arc<Metrics>,
    failed: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let brokers = brokers.to_owned();
    std::thread::spawn(move || {
        let result = (|| -> anyhow::Result<()> {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", "5")
                .set("compression.type", "lz4")
                .set("queue.buffering.max.messages", "1000000")
                .create()?;
            for (sent, (key, payload)) in (0u64..).zip(messages) {
                while sent.saturating_sub(recorded(&metrics)) >= window {
                    // Sleep: `BaseProducer::poll` with a timeout spins on
                    // the clock while it has nothing to serve.
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_millis(2));
                }
                let record = BaseRecord::to(TOPIC)
                    .key(key.as_str())
                    .payload(&payload[..]);
                send_waiting(&producer, record)
                    .map_err(|e| anyhow!("producing to the mock cluster: {e}"))?;
            }
            producer.flush(Duration::from_secs(60))?;
            Ok(())
        })();
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        result
    })
}
