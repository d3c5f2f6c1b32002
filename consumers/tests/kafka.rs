//! The consumer against a real Kafka-protocol broker (tansu, over TCP):
//! exact counts, dead letters, restarts, a group of two, and crashes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lifeledger::kafka::config::ConsumerConfig;
use lifeledger::kafka::consumer::{RunSummary, run};
use lifeledger::kafka::metrics::Metrics;
use lifeledger::kafka::offsets::{OffsetCheckRequest, check_offsets};
use lifeledger::kafka::sink::Sink;
use lifeledger_ledger::verify::Depth;
use lifeledger_ledger::{Body, Ledger, LedgerOptions};
use lifeledger_tests::broker::Broker;
use lifeledger_tests::{collected, retry_locked, stored};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TOPIC: &str = "lifecycle";
const DLQ: &str = "lifecycle.dlq";

fn create_topics(broker: &Broker, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let topics = [
        NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(DLQ, 1, TopicReplication::Fixed(1)),
    ];
    let results =
        futures_executor::block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap();
    for r in results {
        r.unwrap();
    }
}

/// Produces (key, payload) pairs and waits until all are acknowledged, one
/// message per record batch. (tansu 0.6 answers a fetch whose offset falls
/// inside a record batch with the batch after it; the consumer notices and
/// reads again, which `produce_batched` exercises. Here, one record per
/// batch keeps the simpler tests about what they test.)
fn produce(broker: &Broker, messages: &[(String, String)]) {
    produce_to(&broker.bootstrap(), messages);
}

fn produce_to(bootstrap: &str, messages: &[(String, String)]) {
    produce_with(
        bootstrap,
        messages,
        &[("linger.ms", "0"), ("batch.num.messages", "1")],
    );
}

/// Produces as a data platform's producer does: idempotent, lingering, so
/// that record batches hold many records and a member resuming after a
/// crash lands inside one (where tansu skips to the next batch: the
/// consumer must notice and read again).
fn produce_batched(broker: &Broker, messages: &[(String, String)]) {
    produce_with(
        &broker.bootstrap(),
        messages,
        &[("linger.ms", "20"), ("enable.idempotence", "true")],
    );
}

fn produce_with(bootstrap: &str, messages: &[(String, String)], settings: &[(&str, &str)]) {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let producer: BaseProducer = config.create().unwrap();
    for (key, payload) in messages {
        let mut record = Some(
            BaseRecord::to(TOPIC)
                .key(key.as_str())
                .payload(payload.as_str()),
        );
        while let Some(r) = record.take() {
            if let Err((_, back)) = producer.send(r) {
                producer.poll(Duration::from_millis(20));
                record = Some(back);
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A stream: `n` distinct good events over 40 accounts, resends of every
/// tenth, garbage every 25th, and conflicting reuses of 3 event ids.
struct Stream {
    messages: Vec<(String, String)>,
    good: BTreeSet<String>,
    resends: u64,
    rejected: u64,
}

fn stream(prefix: &str, n: usize) -> Stream {
    let mut s = Stream {
        messages: Vec::new(),
        good: BTreeSet::new(),
        resends: 0,
        rejected: 0,
    };
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let key = format!("acct-{}", i % 40);
        let event = if i % 2 == 0 {
            collected(&id, &format!("item-{prefix}-{i}"))
        } else {
            stored(&id, &format!("item-{prefix}-{}", i - 1), "mysql")
        };
        s.messages.push((key.clone(), event.clone()));
        s.good.insert(id.clone());
        if i % 10 == 0 {
            s.messages.push((key.clone(), event));
            s.resends += 1;
        }
        if i % 25 == 0 {
            s.messages.push((key.clone(), format!("garbage {i}")));
            s.rejected += 1;
        }
        if i % 400 == 1 {
            s.messages.push((key, stored(&id, "other-item", "mongodb")));
            s.rejected += 1;
        }
    }
    s
}

fn config(broker: &Broker, ledger: &Path, group: &str) -> ConsumerConfig {
    ConsumerConfig {
        brokers: broker.bootstrap(),
        group: group.into(),
        topics: vec![TOPIC.into()],
        ledger: ledger.to_owned(),
        batch_size: 500,
        max_latency_ms: 50,
        dead_letter_topic: Some(DLQ.into()),
        update_projection: false,
        exit_when_idle_ms: Some(6_000),
        librdkafka: BTreeMap::from([("session.timeout.ms".to_owned(), "10000".to_owned())]),
        ..ConsumerConfig::default()
    }
}

fn consume(config: &ConsumerConfig, stop: Option<&dyn Fn(&Metrics) -> bool>) -> RunSummary {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("lifeledger=info")
        .try_init();
    let metrics = Arc::new(Metrics::default());
    let ledger = retry_locked(|| Ledger::open(&config.ledger, LedgerOptions::default()));
    let sink = Sink::new(
        ledger,
        config.update_projection,
        Arc::clone(&metrics),
        None,
        1,
        Duration::from_secs(3600),
    )
    .unwrap();
    let (summary, _sink) = run(
        config,
        sink,
        metrics,
        Arc::new(AtomicBool::new(false)),
        stop,
    )
    .unwrap();
    summary
}

/// Every event id in the ledger's Kafka chains, with how often it occurs;
/// and whether every chain verifies.
fn ledger_events(dir: &Path) -> (BTreeMap<String, u64>, u64) {
    let ledger = retry_locked(|| Ledger::open(dir, LedgerOptions::default()));
    let report = ledger.verify(Depth::Events, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    let mut events = BTreeMap::new();
    let mut rejected = 0;
    for chain in ledger.chain_names().unwrap() {
        for item in ledger.entries(&chain, 0, u64::MAX).unwrap() {
            let entry = item.unwrap().1;
            match entry.body {
                Body::Event { event_id, .. } => *events.entry(event_id).or_default() += 1,
                Body::Rejected { .. } => rejected += 1,
            }
        }
    }
    (events, rejected)
}

/// The ledger at `dir` verifies and holds every good event of `s` exactly
/// once, and every rejection.
fn assert_exactly_once(dir: &Path, s: &Stream) {
    let (events, rejected) = ledger_events(dir);
    let missing: Vec<_> = s
        .good
        .iter()
        .filter(|e| !events.contains_key(*e))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(events.len(), s.good.len());
    assert!(
        events.values().all(|n| *n == 1),
        "an event was appended twice"
    );
    assert_eq!(rejected, s.rejected);
}

fn dead_letters(broker: &Broker) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[DLQ]).unwrap();
    let mut out = Vec::new();
    let mut idle = std::time::Instant::now();
    while idle.elapsed() < Duration::from_secs(8) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            idle = std::time::Instant::now();
            let headers = m.headers().unwrap();
            let get = |k: &str| {
                headers
                    .iter()
                    .find(|h| h.key == k)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            out.push((get("lifeledger.class"), get("lifeledger.source.offset")));
        }
    }
    out
}

#[test]
fn a_stream_with_duplicates_and_garbage_lands_exactly_once() {
    let broker = Broker::start();
    create_topics(&broker, 4);
    let s = stream("a", 1200);
    produce(&broker, &s.messages);
    let tmp = tempfile::tempdir().unwrap();
    let summary = consume(&config(&broker, tmp.path(), "g1"), None);
    assert_eq!(summary.consumed, s.messages.len() as u64);
    assert_eq!(summary.appended, s.good.len() as u64);
    assert_eq!(summary.duplicates, s.resends);
    assert_eq!(summary.rejected, s.rejected);
    assert_exactly_once(tmp.path(), &s);
    // Each rejection is also a dead letter, with its class and source.
    let letters = dead_letters(&broker);
    assert_eq!(letters.len() as u64, s.rejected, "{letters:?}");
    assert!(letters.iter().any(|(class, _)| class == "malformed"));
    assert!(letters.iter().any(|(class, _)| class == "conflict"));
    assert!(
        letters
            .iter()
            .all(|(_, offset)| offset.parse::<i64>().is_ok())
    );
}

#[test]
fn a_restart_in_mid_stream_loses_and_repeats_nothing() {
    let broker = Broker::start();
    create_topics(&broker, 3);
    let s = stream("r", 1500);
    let (first, second) = s.messages.split_at(s.messages.len() / 2);
    produce(&broker, first);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&broker, tmp.path(), "g2");
    // Stop after some of the first half, mid-stream.
    let stop = |m: &Metrics| m.consumed.load(Ordering::Relaxed) >= 400;
    consume(&cfg, Some(&stop));
    produce(&broker, second);
    consume(&cfg, None);
    assert_exactly_once(tmp.path(), &s);
}

/// A member that stops inside the partition's *last* record batch and
/// resumes there gets nothing from tansu (a fetch inside the last batch
/// answers empty, and its ListOffsets "latest" names the last batch's
/// first offset plus one, not the high watermark). No later message can
/// show the gap, so only the high watermark of the fetch answers tells the
/// consumer to read the batch again.
#[test]
fn a_member_resuming_inside_the_last_record_batch_reads_the_rest_of_it() {
    let broker = Broker::start();
    create_topics(&broker, 1);
    let s = stream("t", 60);
    // One record batch holding the whole stream.
    produce_with(
        &broker.bootstrap(),
        &s.messages,
        &[("linger.ms", "500"), ("batch.num.messages", "10000")],
    );
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&broker, tmp.path(), "g-last-batch");
    let stop = |m: &Metrics| m.consumed.load(Ordering::Relaxed) >= 20;
    let first = consume(&cfg, Some(&stop));
    assert!(first.consumed < s.messages.len() as u64, "{first:?}");
    consume(&cfg, None);
    assert_exactly_once(tmp.path(), &s);
}

#[test]
fn two_consumers_in_one_group_split_the_partitions() {
    let broker = Broker::start();
    create_topics(&broker, 4);
    let s = stream("g", 2000);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut ca = config(&broker, a.path(), "g3");
    let mut cb = config(&broker, b.path(), "g3");
    ca.exit_when_idle_ms = Some(15_000);
    cb.exit_when_idle_ms = Some(15_000);
    let ta = std::thread::spawn(move || consume(&ca, None));
    let tb = std::thread::spawn(move || consume(&cb, None));
    // Let both members join and share the partitions, then produce.
    std::thread::sleep(Duration::from_secs(6));
    produce(&broker, &s.messages);
    let (sa, sb) = (ta.join().unwrap(), tb.join().unwrap());
    assert!(
        sa.consumed > 0 && sb.consumed > 0,
        "both members got partitions: {sa:?} {sb:?}"
    );
    assert_eq!(sa.consumed + sb.consumed, s.messages.len() as u64);
    let (ea, ra) = ledger_events(a.path());
    let (eb, rb) = ledger_events(b.path());
    let union: BTreeSet<String> = ea.keys().chain(eb.keys()).cloned().collect();
    let missing: Vec<_> = s.good.difference(&union).take(10).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(union.len(), s.good.len());
    assert!(
        ea.keys().all(|k| !eb.contains_key(k)),
        "an event landed in both ledgers"
    );
    assert_eq!(ra + rb, s.rejected);
}

#[test]
fn sigkill_at_random_points_loses_and_repeats_nothing() {
    let rounds: usize = std::env::var("LIFELEDGER_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let broker = Broker::start();
    create_topics(&broker, 3);
    let s = stream("k", 6000);
    // Fresh messages arrive before every round, so each kill can land in
    // the middle of real work: polling, a batch being written, a commit.
    let chunk = s.messages.len().div_ceil(rounds);
    let mut chunks = s.messages.chunks(chunk);
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let args = |idle: &str| {
        vec![
            "--ledger".to_owned(),
            ledger.to_string_lossy().into_owned(),
            "consume".into(),
            "--brokers".into(),
            broker.bootstrap(),
            "--group".into(),
            "crash".into(),
            "--topic".into(),
            TOPIC.into(),
            "--batch-size".into(),
            "200".into(),
            "--max-latency-ms".into(),
            "20".into(),
            "--exit-when-idle-ms".into(),
            idle.into(),
            "--set".into(),
            "session.timeout.ms=6000".into(),
        ]
    };
    // A seeded sequence of kill delays between 0.3 s and 3 s: some land
    // during the group join, most in mid-batch. Each member starts right
    // after the last was killed, while the dead one's session still holds
    // the partitions.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..rounds {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_millis(300 + state % 2200);
        if let Some(part) = chunks.next() {
            produce_batched(&broker, part);
        }
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lifeledger"))
            .args(args("60000"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // SIGKILL: no chance to finish the batch, flush or commit.
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = round;
    }
    for part in chunks {
        produce_batched(&broker, part);
    }
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .args(args("8000"))
        .status()
        .unwrap();
    assert!(status.success());
    assert_exactly_once(&ledger, &s);
    // The topic itself: every offset is recorded once, or is a resend of
    // an event recorded at another offset.
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", broker.bootstrap());
    let report = check_offsets(
        &OffsetCheckRequest {
            client,
            topic: TOPIC.into(),
            group: None,
            quiet: Duration::from_secs(2),
            timeout: Duration::from_secs(120),
        },
        std::slice::from_ref(&ledger),
    )
    .unwrap();
    assert!(report.exact, "{report:?}");
    let (recorded, resends): (u64, u64) = report
        .partitions
        .iter()
        .fold((0, 0), |(a, b), p| (a + p.recorded_once, b + p.resends));
    assert_eq!(recorded + resends, s.messages.len() as u64);
    assert_eq!(resends, s.resends);
}

/// Faults injected with rdkafka's MockCluster while the consumer runs: a
/// broker down and up, failing fetches and commits, slow round trips. No
/// restart; at the end every event is in the ledger exactly once.
#[test]
fn broker_faults_in_mid_stream_lose_and_repeat_nothing() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, 4, 3).unwrap();
    cluster.create_topic("lifeledger.custody", 1, 3).unwrap();
    let s = stream("f", 3000);
    produce_to(&cluster.bootstrap_servers(), &s.messages);

    let tmp = tempfile::tempdir().unwrap();
    let cfg = ConsumerConfig {
        brokers: cluster.bootstrap_servers(),
        group: "faults".into(),
        topics: vec![TOPIC.into()],
        ledger: tmp.path().to_owned(),
        batch_size: 100,
        max_latency_ms: 20,
        update_projection: false,
        exit_when_idle_ms: Some(8_000),
        // Small fetches, so that consumption spans the faults below.
        librdkafka: BTreeMap::from([("max.partition.fetch.bytes".to_owned(), "2048".to_owned())]),
        ..ConsumerConfig::default()
    };
    // Slow round trips and failing fetches and commits from the start.
    cluster
        .broker_round_trip_time(1, Duration::from_millis(200))
        .unwrap();
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 5],
    );
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 3],
    );
    let consumer = std::thread::spawn(move || consume(&cfg, None));
    // The mock's group join takes about 3 s; then a broker goes down.
    std::thread::sleep(Duration::from_millis(3_500));
    cluster.broker_down(2).unwrap();
    std::thread::sleep(Duration::from_millis(2_000));
    cluster.broker_up(2).unwrap();
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let summary = consumer.join().unwrap();
    assert!(summary.consumed >= s.messages.len() as u64, "{summary:?}");
    assert_exactly_once(tmp.path(), &s);
}

/// Runs `lifeledger replay-kafka` against `ledger`; (exit code, JSON report).
fn replay_kafka(broker: &Broker, ledger: &Path, start: &[&str]) -> (i32, serde_json::Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .arg("--ledger")
        .arg(ledger)
        .args([
            "replay-kafka",
            "--topic",
            TOPIC,
            "--brokers",
            &broker.bootstrap(),
            "--json",
        ])
        .args(start)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {stderr} {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), report)
}

fn sum(report: &serde_json::Value, field: &str) -> u64 {
    report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[field].as_u64().unwrap())
        .sum()
}

/// Every message of the topic, as (partition, offset, payload).
fn read_topic(broker: &Broker) -> Vec<(i32, i64, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "topic-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut out = Vec::new();
    let mut idle = std::time::Instant::now();
    while idle.elapsed() < Duration::from_secs(6) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            idle = std::time::Instant::now();
            out.push((
                m.partition(),
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn replay_kafka_matches_the_live_chains_and_finds_a_difference() {
    let broker = Broker::start();
    create_topics(&broker, 2);
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let first = stream("r", 300);
    produce(&broker, &first.messages);
    consume(&config(&broker, &live, "g-replay"), None);
    std::thread::sleep(Duration::from_millis(1100));
    let between = jiff::Timestamp::now();
    std::thread::sleep(Duration::from_millis(1100));
    // Later: five early events sent again (the live ledger skips them as
    // duplicates), and new ones.
    let mut second: Vec<(String, String)> = (2..7)
        .map(|i| {
            let id = format!("\"r-{i}\"");
            first
                .messages
                .iter()
                .find(|(_, m)| m.contains(&id))
                .unwrap()
                .clone()
        })
        .collect();
    let more = stream("s", 20);
    second.extend(more.messages.iter().cloned());
    produce(&broker, &second);
    consume(&config(&broker, &live, "g-replay"), None);
    let (events, rejected) = ledger_events(&live);
    let live_entries = events.len() as u64 + rejected;
    let snapshot = lifeledger_tests::dir_listing(&live);

    // From the start, every offset matches: what the live chains hold is
    // what the topic holds.
    let (code, report) = replay_kafka(&broker, &live, &["--from-offset", "0"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["matches"], true);
    assert_eq!(sum(&report, "matched"), live_entries);
    assert_eq!(sum(&report, "explained"), 0);
    assert_eq!(
        sum(&report, "messages_read"),
        (first.messages.len() + second.len()) as u64
    );

    // From the time between the two parts: the resends are new to the
    // scratch ledger but were duplicates in the live one, so explained.
    let (code, report) = replay_kafka(&broker, &live, &["--from-time", &between.to_string()]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(sum(&report, "messages_read"), second.len() as u64);
    assert_eq!(sum(&report, "explained"), 5);
    assert_eq!(
        sum(&report, "matched"),
        (more.messages.len() - more.resends as usize) as u64
    );

    // Messages the live ledger has not read yet are read but not compared.
    produce(&broker, &stream("t", 10).messages);
    let (code, report) = replay_kafka(&broker, &live, &["--from-offset", "0"]);
    assert_eq!(code, 0, "{report:#}");
    assert!(
        report["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["compared_to"].as_i64() < p["high_watermark"].as_i64())
    );
    assert_eq!(
        lifeledger_tests::dir_listing(&live),
        snapshot,
        "replay-kafka wrote to the live ledger"
    );

    // A ledger whose partition 0 recorded other bytes at one offset.
    let forged = tmp.path().join("forged");
    let mut ledger = Ledger::open(&forged, LedgerOptions::default()).unwrap();
    let messages = read_topic(&broker);
    let altered = messages
        .iter()
        .find(|(p, o, _)| *p == 0 && *o >= 7)
        .unwrap()
        .1;
    let mut batches = Vec::new();
    for partition in [0, 1] {
        let of: Vec<_> = messages
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .collect();
        batches.push(lifeledger_ledger::ChainBatch {
            chain: lifeledger::kafka::chain_name(TOPIC, partition),
            inputs: of
                .iter()
                .map(|(p, o, raw)| lifeledger_ledger::Incoming {
                    source: lifeledger_ledger::Source::Kafka {
                        topic: TOPIC.into(),
                        partition: *p,
                        offset: *o,
                    },
                    raw: if *p == 0 && *o == altered {
                        b"{\"forged\":1}".to_vec()
                    } else {
                        raw.clone()
                    },
                })
                .collect(),
            cursor: of.last().map(|(_, o, _)| o + 1),
        });
    }
    ledger.append_many(batches, jiff::Timestamp::now()).unwrap();
    drop(ledger);
    let (code, report) = replay_kafka(&broker, &forged, &["--from-offset", "0"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["matches"], false);
    let p0 = &report["partitions"][0];
    assert_eq!(p0["differences"], 1);
    assert_eq!(p0["first_difference"]["offset"], altered);
    assert_eq!(p0["first_difference"]["live"]["entry"], "rejected schema");
    assert_eq!(report["partitions"][1]["differences"], 0);
}

const ALERTS: &str = "lifecycle.alerts";

/// A rule B event (product configuration) about `item`, `day` days into 2026.
fn product_event(id: &str, item: &str, day: i64, kind: &str) -> (String, String) {
    let time = jiff::Timestamp::from_second(1_767_225_600 + day * 86_400).unwrap();
    let extra = if kind.contains("collected") {
        r#","region":"SG""#
    } else {
        ""
    };
    (
        "acct-7".to_owned(),
        format!(
            r#"{{"schema_version":1,"event_id":"{id}","event_time":"{time}","account":{{"app_id":"1250000007","uin":"100000000007"}},"item_id":"{item}","category":"product_configuration"{extra},"kind":{kind}}}"#
        ),
    )
}

fn day(d: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_767_225_600 + d * 86_400).unwrap()
}

/// Sends through Kafka, then fails as a process would that died after
/// the broker acknowledged but before the outbox was emptied.
struct SendThenCrash(lifeledger::kafka::alerts::KafkaAlertOut);

impl lifeledger::monitor::AlertOut for SendThenCrash {
    fn marks(&mut self) -> Result<Vec<(i32, i64)>, lifeledger::monitor::MonitorError> {
        self.0.marks()
    }
    fn delivered_since(
        &mut self,
        marks: &[(i32, i64)],
    ) -> Result<std::collections::HashSet<String>, lifeledger::monitor::MonitorError> {
        self.0.delivered_since(marks)
    }
    fn send(
        &mut self,
        alerts: &[lifeledger_ledger::monitor::Alert],
    ) -> Result<(), lifeledger::monitor::MonitorError> {
        self.0.send(alerts)?;
        Err(lifeledger::monitor::MonitorError::Delivery(
            "died after sending".into(),
        ))
    }
}

/// A consumer run with the deadline monitor on `clock`.
fn consume_monitored(
    broker: &Broker,
    ledger: &Path,
    clock: &lifeledger::monitor::ManualClock,
    crash_after_send: bool,
    stop: Option<&dyn Fn(&lifeledger::monitor::MonitorGauges) -> bool>,
) -> Result<(), String> {
    let mut config = config(broker, ledger, "g-monitor");
    config.update_projection = true;
    config.monitor_interval_ms = 50;
    config.exit_when_idle_ms = Some(3_000);
    let metrics = Arc::new(Metrics::default());
    let ledger = retry_locked(|| Ledger::open(&config.ledger, LedgerOptions::default()));
    let mut sink = Sink::new(
        ledger,
        true,
        Arc::clone(&metrics),
        None,
        1,
        Duration::from_secs(3600),
    )
    .unwrap();
    let client = lifeledger::kafka::consumer::client_config(&config, false);
    let out = lifeledger::kafka::alerts::KafkaAlertOut::new(&client, ALERTS).unwrap();
    let out: Box<dyn lifeledger::monitor::AlertOut> = if crash_after_send {
        Box::new(SendThenCrash(out))
    } else {
        Box::new(out)
    };
    let settings = lifeledger::monitor::MonitorSettings {
        horizon: jiff::SignedDuration::from_hours(24 * 7),
        keep_sent: true,
    };
    let gauges = sink
        .start_monitor(settings, Box::new(clock.clone()), out)
        .map_err(|e| e.to_string())?;
    let stop_on_gauges = stop.map(|f| move |_: &Metrics| f(&gauges));
    run(
        &config,
        sink,
        metrics,
        Arc::new(AtomicBool::new(false)),
        stop_on_gauges
            .as_ref()
            .map(|f| f as &dyn Fn(&Metrics) -> bool),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Every alert on the alerts topic: (key, alert JSON).
fn alerts_on_topic(broker: &Broker) -> Vec<(String, serde_json::Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("alerts-check-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[ALERTS]).unwrap();
    let mut out = Vec::new();
    let mut idle = std::time::Instant::now();
    while idle.elapsed() < Duration::from_secs(6) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            idle = std::time::Instant::now();
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
        }
    }
    out
}

#[test]
fn the_monitor_alerts_once_per_change_across_restarts_and_a_crash() {
    let broker = Broker::start();
    create_topics(&broker, 2);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for r in futures_executor::block_on(admin.create_topics(
        &[NewTopic::new(ALERTS, 2, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .unwrap()
    {
        r.unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    lifeledger_tests::publish_policy(&mut Ledger::open(&ledger, LedgerOptions::default()).unwrap());
    let collected = r#"{"type":"collected","sensitive":false,"purpose":"p"}"#;
    let stored = r#"{"type":"stored","store":"mysql"}"#;
    produce(
        &broker,
        &[
            product_event("p1-c", "p1", 0, collected),
            product_event("p1-s", "p1", 0, stored),
            product_event("p2-c", "p2", 1, collected),
            product_event("p2-s", "p2", 1, stored),
            product_event("p3-c", "p3", 20, collected),
            product_event("p3-s", "p3", 20, stored),
        ],
    );
    // Rule B: p1 due at day 180, p2 at 181, p3 at 200.
    let clock = lifeledger::monitor::ManualClock::new(day(100));
    consume_monitored(&broker, &ledger, &clock, false, None).unwrap();
    clock.set(day(175));
    consume_monitored(&broker, &ledger, &clock, false, None).unwrap();
    // Overdue: sent, but the process "dies" before emptying its outbox.
    clock.set(day(182));
    let crashed = consume_monitored(&broker, &ledger, &clock, true, None);
    assert!(crashed.unwrap_err().contains("died after sending"));
    // The restart finds those alerts on the topic and does not resend.
    consume_monitored(&broker, &ledger, &clock, false, None).unwrap();
    // p1's copy is deleted (late): clear, caused by that entry. While the
    // consumer runs, the clock passes p3's horizon: due soon, by the clock.
    produce(
        &broker,
        &[product_event(
            "p1-d",
            "p1",
            185,
            r#"{"type":"deleted","store":"mysql"}"#,
        )],
    );
    clock.set(day(190));
    let ticking = clock.clone();
    let stop = move |g: &lifeledger::monitor::MonitorGauges| {
        let (due_soon, overdue, _) = g.snapshot();
        ticking.set(day(194));
        due_soon == 1 && overdue == 1
    };
    consume_monitored(&broker, &ledger, &clock, false, Some(&stop)).unwrap();

    let alerts = alerts_on_topic(&broker);
    let ids: Vec<&str> = alerts
        .iter()
        .map(|(_, a)| a["alert_id"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        unique.len(),
        "an alert was delivered twice: {ids:?}"
    );
    assert_eq!(
        unique,
        BTreeSet::from(["p1#1", "p2#1", "p1#2", "p2#2", "p1#3", "p3#1"]),
        "{alerts:#?}"
    );
    for (key, a) in &alerts {
        assert_eq!(key, a["item_id"].as_str().unwrap());
        assert_eq!(a["policy_version"], "2026-11.3");
        assert_eq!(a["rule"], "B");
    }
    let get = |id: &str| &alerts.iter().find(|(_, a)| a["alert_id"] == id).unwrap().1;
    assert_eq!(get("p1#1")["state"], "due_soon");
    assert_eq!(get("p1#2")["state"], "overdue");
    assert_eq!(
        get("p1#2")["copies_remaining"],
        serde_json::json!(["mysql"])
    );
    assert_eq!(get("p1#3")["state"], "clear");
    assert_eq!(get("p1#3")["verdict"], "deleted_late");
    assert_eq!(get("p1#3")["cause"]["by"], "entry");
    assert_eq!(get("p3#1")["state"], "due_soon");
    assert_eq!(get("p3#1")["cause"]["by"], "clock");
}

#[test]
fn check_offsets_names_the_ledger_that_holds_a_staged_batch() {
    let broker = Broker::start();
    create_topics(&broker, 2);
    let s = stream("c", 40);
    produce(&broker, &s.messages);
    // A ledger whose member died between committing a batch and appending
    // it: the batch of partition 0 is staged, in no chain.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    {
        let mut ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap();
        ledger
            .stage(vec![lifeledger_ledger::StagedBatch {
                chain: "kafka:lifecycle:0".into(),
                token: "0-abc".into(),
                first_offset: 0,
                next_offset: 1_000_000,
                inputs: Vec::new(),
            }])
            .unwrap();
    }
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", broker.bootstrap());
    let report = check_offsets(
        &OffsetCheckRequest {
            client,
            topic: TOPIC.into(),
            group: None,
            quiet: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        },
        std::slice::from_ref(&dir),
    )
    .unwrap();
    assert!(!report.exact);
    let p0 = &report.partitions[0];
    assert!(p0.messages > 0);
    assert_eq!(p0.staged, p0.messages);
    assert_eq!(p0.missing, 0);
    assert_eq!(p0.staged_in.len(), 1);
    assert!(p0.staged_in[0].2.ends_with("ledger"));
    let p1 = &report.partitions[1];
    assert_eq!(p1.missing, p1.messages);
    assert_eq!(p1.staged, 0);
}

#[test]
fn a_backfill_topic_declares_its_appends_an_import_of_history() {
    let broker = Broker::start();
    create_topics(&broker, 2);
    // History: a rule B item collected on 1 January and deleted on day 180
    // (on time by event time), and a live-looking one like it, all
    // received today, long after the deadline.
    let mut messages = Vec::new();
    for item in ["old-1", "old-2"] {
        messages.push(product_event(
            &format!("{item}-c"),
            item,
            0,
            r#"{"type":"collected","sensitive":false,"purpose":"p"}"#,
        ));
        messages.push(product_event(
            &format!("{item}-s"),
            item,
            0,
            r#"{"type":"stored","store":"mysql"}"#,
        ));
        messages.push(product_event(
            &format!("{item}-d"),
            item,
            180,
            r#"{"type":"deleted","store":"mysql"}"#,
        ));
    }
    produce(&broker, &messages);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ConsumerConfig {
        backfill_declared_by: Some("platform-team".into()),
        ..config(&broker, tmp.path(), "backfill")
    };
    let summary = consume(&cfg, None);
    assert_eq!(summary.appended, messages.len() as u64);

    let mut ledger = retry_locked(|| Ledger::open(tmp.path(), LedgerOptions::default()));
    // Every append was declared, on chain `imports`, and the ledger verifies.
    let imports = ledger.head("imports").map_or(0, |h| h.next_seq);
    assert!(imports >= 1, "no declaration");
    let report = ledger.verify(Depth::Events, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    ledger.rebuild_projection(&mut |_| {}).unwrap();
    // Every state as the rebuild saved it.
    let projection = ledger.load_projection().unwrap();
    let covered: u64 = projection
        .imports
        .iter()
        .map(|d| d.last_seq - d.first_seq + 1)
        .sum();
    assert_eq!(covered, messages.len() as u64, "{:?}", projection.imports);
    let policy = lifeledger_ledger::policy::Policy::parse(include_str!(
        "../../ledger/policies/retention-2026-11.toml"
    ))
    .unwrap();
    let verdicts = lifeledger_ledger::projection::report::judge_all(
        &projection,
        &policy,
        jiff::Timestamp::now(),
    );
    assert_eq!(verdicts.len(), 2);
    for v in &verdicts {
        assert!(!v.reported_late, "{v:?}");
        assert!(v.reported_late_imported, "{v:?}");
        assert!(!v.is_finding(), "{v:?}");
    }
}

/// `lifeledger demo`: the main job on its embedded mock cluster, end to
/// end, with the counts it reports checked against the ledger it keeps.
#[test]
fn the_demo_streams_every_message_into_an_intact_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .args(["demo", "--events", "3000", "--partitions", "4", "--keep"])
        .arg(&ledger)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    // "demo stream: M messages (E events, G garbage, R resends)"
    let numbers = |line: &str| -> Vec<u64> {
        line.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    let stream = text
        .lines()
        .find(|l| l.starts_with("demo stream:"))
        .unwrap();
    let [messages, events, garbage, resends, ..] = numbers(stream)[..] else {
        panic!("{stream}")
    };
    assert_eq!(messages, events + garbage + resends, "{stream}");
    // Every message is in the ledger once: an event, a rejection, or a
    // resend skipped.
    let consumed = text
        .lines()
        .find(|l| l.starts_with("streamed and consumed"))
        .unwrap();
    assert!(
        consumed.contains(&format!("{events} appended, {garbage} rejected")),
        "{consumed}"
    );
    assert!(
        consumed.contains(&format!("{resends} duplicates")),
        "{consumed}"
    );
    let chains: Vec<&str> = text.lines().filter(|l| l.starts_with("chain \"")).collect();
    assert_eq!(chains.len(), 5, "four partitions and the policy: {text}");
    assert!(chains.iter().all(|l| l.contains(": intact, ")), "{text}");
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .arg("--ledger")
        .arg(&ledger)
        .args(["verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
    let entries: u64 =
        serde_json::from_slice::<serde_json::Value>(&verify.stdout).unwrap()["chains"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["chain"].as_str().unwrap().starts_with("kafka:"))
            .map(|c| c["entries"].as_u64().unwrap())
            .sum();
    assert_eq!(
        entries,
        events + garbage,
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    eprintln!("demo of 3,000 events: {:.1?}", started.elapsed());
}
