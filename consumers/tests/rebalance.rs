//! Rebalance torture against a real broker (tansu, over TCP): while a
//! producer writes continuously, members of one consumer group join, leave
//! gracefully and are SIGKILLed at random moments, each with its own
//! ledger. At the end every offset of the topic that holds a valid event is
//! recorded exactly once across the members' ledgers, and each garbage
//! message exactly once as a rejected entry. The check reads the topic
//! itself, and is also made with `check-offsets`.
//!
//! `LIFELEDGER_TORTURE_SECS` makes the churn phase longer (default 24 s).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lifeledger::kafka::offsets::{OffsetCheckRequest, check_offsets};
use lifeledger_ledger::verify::Depth;
use lifeledger_ledger::{Body, Ledger, LedgerOptions, Source};
use lifeledger_tests::broker::Broker;
use lifeledger_tests::{collected, retry_locked, stored};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "lifecycle";
const DLQ: &str = "lifecycle.dlq";
const PARTITIONS: i32 = 6;
const SLOTS: usize = 4;

/// How members of the group are configured.
#[derive(Debug, Clone, Copy)]
enum Variant {
    /// librdkafka's default (eager) assignment.
    Eager,
    /// `partition.assignment.strategy=cooperative-sticky`.
    Cooperative,
    /// Static membership: each ledger's member has a fixed
    /// `group.instance.id`.
    Static,
}

fn create_topics(broker: &Broker) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let topics = [
        NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1)),
        NewTopic::new(DLQ, 1, TopicReplication::Fixed(1)),
    ];
    for r in futures_executor::block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap()
    {
        r.unwrap();
    }
}

/// Produces until `stop`: distinct valid events and, every 40th message,
/// garbage; idempotent, keyed by account, with lingering so that record
/// batches hold many records (a member resuming inside one is the case
/// tansu mishandles).
fn producer(broker: String, prefix: String, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..100 {
            let key = format!("acct-{}", i % 40);
            let payload = if i % 40 == 39 {
                format!("garbage {prefix} {i}")
            } else if i % 2 == 0 {
                collected(&format!("{prefix}-{i}"), &format!("item-{prefix}-{i}"))
            } else {
                stored(
                    &format!("{prefix}-{i}"),
                    &format!("item-{prefix}-{}", i - 1),
                    "mysql",
                )
            };
            let mut record = Some(BaseRecord::to(TOPIC).key(&key).payload(&payload));
            while let Some(r) = record.take() {
                if let Err((_, back)) = producer.send(r) {
                    producer.poll(Duration::from_millis(5));
                    record = Some(back);
                }
            }
            i += 1;
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(50));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    sent.store(i, Ordering::Relaxed);
}

fn member(
    broker: &Broker,
    ledger: &Path,
    slot: usize,
    variant: Variant,
    idle_ms: u64,
    log: &Path,
) -> Child {
    let mut args: Vec<String> = vec![
        "--ledger".into(),
        ledger.to_string_lossy().into_owned(),
        "consume".into(),
        "--brokers".into(),
        broker.bootstrap(),
        "--group".into(),
        "torture".into(),
        "--topic".into(),
        TOPIC.into(),
        "--dead-letter-topic".into(),
        DLQ.into(),
        "--batch-size".into(),
        "300".into(),
        "--max-latency-ms".into(),
        "30".into(),
        "--exit-when-idle-ms".into(),
        idle_ms.to_string(),
        "--set".into(),
        "session.timeout.ms=6000".into(),
        "--set".into(),
        "heartbeat.interval.ms=500".into(),
        // librdkafka's rebalance timeout: how long the coordinator waits
        // for a member that died during a join (default 5 minutes).
        "--set".into(),
        "max.poll.interval.ms=15000".into(),
    ];
    match variant {
        Variant::Eager => {}
        Variant::Cooperative => {
            args.push("--set".into());
            args.push("partition.assignment.strategy=cooperative-sticky".into());
        }
        Variant::Static => {
            args.push("--set".into());
            args.push(format!("group.instance.id=slot-{slot}"));
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .args(&args)
        .env("LIFELEDGER_LOG", "lifeledger=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// SIGTERM, then waits up to 60 s for the member to finish; false if it
/// did not.
#[must_use]
/// The member processes of a run; those still running when the test ends
/// early (a failed assertion) are killed, so none outlives it.
struct Members(Vec<Option<Child>>);

impl std::ops::Deref for Members {
    type Target = Vec<Option<Child>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Members {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for child in self.0.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn terminate(child: &mut Child) -> bool {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let began = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if began.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every record of the topic: (partition, offset) -> payload.
fn read_topic(broker: &Broker) -> BTreeMap<(i32, i64), Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "torture-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = BTreeMap::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            last = Instant::now();
            out.insert(
                (m.partition(), m.offset()),
                m.payload().unwrap_or_default().to_vec(),
            );
        }
    }
    out
}

/// What the ledgers hold: (partition, offset) -> (slot, is an event).
fn ledger_records(ledgers: &[PathBuf]) -> HashMap<(i32, i64), Vec<(usize, bool)>> {
    let mut out: HashMap<(i32, i64), Vec<(usize, bool)>> = HashMap::new();
    for (slot, dir) in ledgers.iter().enumerate() {
        if !dir.exists() {
            continue;
        }
        let ledger = retry_locked(|| Ledger::open(dir, LedgerOptions::default()));
        let report = ledger.verify(Depth::Events, &mut |_| {}).unwrap();
        assert!(report.is_intact(), "ledger {slot}: {:?}", report.findings);
        assert!(
            ledger.staged_batches().unwrap().is_empty(),
            "ledger {slot} still holds a staged batch"
        );
        for chain in ledger.chain_names().unwrap() {
            for item in ledger.entries(&chain, 0, u64::MAX).unwrap() {
                let entry = item.unwrap().1;
                let Source::Kafka {
                    partition, offset, ..
                } = entry.source
                else {
                    continue;
                };
                let is_event = matches!(entry.body, Body::Event { .. });
                out.entry((partition, offset))
                    .or_default()
                    .push((slot, is_event));
            }
        }
    }
    out
}

fn torture(variant: Variant, churn: Duration, seed: u64) {
    let broker = Broker::start();
    create_topics(&broker);
    let tmp = tempfile::tempdir().unwrap();
    let ledgers: Vec<PathBuf> = (0..SLOTS)
        .map(|i| tmp.path().join(format!("ledger-{i}")))
        .collect();
    let logs: Vec<PathBuf> = (0..SLOTS)
        .map(|i| tmp.path().join(format!("member-{i}.log")))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let produce = {
        let (b, s, n) = (broker.bootstrap(), Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || producer(b, format!("{variant:?}"), s, n))
    };

    // The churn: a seeded sequence of joins, graceful leaves and kills.
    let mut running = Members((0..SLOTS).map(|_| None).collect());
    let mut state = seed | 1;
    let mut rand = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let (mut changes, mut most, mut kills, mut leaves) = (0, 0, 0, 0);
    let began = Instant::now();
    while began.elapsed() < churn || changes < 10 || kills < 3 || leaves < 1 || most < 3 {
        let up: Vec<usize> = (0..SLOTS).filter(|s| running[*s].is_some()).collect();
        let down: Vec<usize> = (0..SLOTS).filter(|s| running[*s].is_none()).collect();
        let roll = rand(100);
        if up.len() < 2 || (up.len() < SLOTS && roll < 45) || changes < 3 {
            let slot = down[rand(down.len() as u64) as usize];
            running[slot] = Some(member(
                &broker,
                &ledgers[slot],
                slot,
                variant,
                600_000,
                &logs[slot],
            ));
        } else {
            let slot = up[rand(up.len() as u64) as usize];
            let mut child = running[slot].take().unwrap();
            if rand(100) < 65 {
                // SIGKILL: no chance to finish a batch, a commit or an
                // append; the ledger keeps whatever was staged.
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            } else {
                if !terminate(&mut child) {
                    let kept = tmp.keep();
                    panic!("member {slot} did not finish within 60 s of SIGTERM; logs in {kept:?}");
                }
                leaves += 1;
            }
        }
        changes += 1;
        most = most.max(running.iter().filter(|c| c.is_some()).count());
        std::thread::sleep(Duration::from_millis(800 + rand(1700)));
    }
    stop.store(true, Ordering::Relaxed);
    produce.join().unwrap();
    for (slot, child) in running.iter_mut().enumerate() {
        if let Some(mut child) = child.take() {
            if !terminate(&mut child) {
                let kept = tmp.keep();
                panic!("member {slot} did not finish within 60 s of SIGTERM; logs in {kept:?}");
            }
        }
    }
    // Machines come back: every ledger's member runs once more, settles
    // what its last run left staged, and helps drain the topic. Members
    // stop after 10 s without a message; tansu sometimes leaves a partition
    // with no reader for longer during a rebalance, so they come back
    // (up to three rounds) while some offset of the topic is in no ledger.
    let deadline = Instant::now() + Duration::from_secs(360);
    for round in 0..3 {
        let mut finals = Members(
            (0..SLOTS)
                .filter(|s| ledgers[*s].exists())
                .map(|s| Some(member(&broker, &ledgers[s], s, variant, 10_000, &logs[s])))
                .collect(),
        );
        for child in finals.iter_mut().flatten() {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "a final member failed: {status}");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the final members did not finish"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let recorded = ledger_records(&ledgers);
        let unread = read_topic(&broker)
            .keys()
            .filter(|k| !recorded.contains_key(k))
            .count();
        if unread == 0 {
            break;
        }
        eprintln!("final round {round}: {unread} offsets in no ledger yet; the members run again");
    }
    let logs_tail = || {
        logs.iter()
            .filter_map(|l| std::fs::read_to_string(l).ok())
            .map(|t| t.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        changes >= 10 && most >= 3 && kills >= 3 && leaves >= 1,
        "churn too mild: {changes} changes ({kills} kills, {leaves} leaves), at most {most} members"
    );

    // The topic itself against every ledger.
    let topic = read_topic(&broker);
    let produced = sent.load(Ordering::Relaxed);
    assert_eq!(
        topic.len() as u64,
        produced,
        "the topic holds what was produced"
    );
    let records = ledger_records(&ledgers);
    let mut missing = Vec::new();
    let mut repeated = Vec::new();
    let mut wrong_kind = Vec::new();
    for ((p, o), payload) in &topic {
        let garbage = payload.starts_with(b"garbage");
        match records.get(&(*p, *o)).map(Vec::as_slice) {
            None | Some([]) => missing.push((*p, *o)),
            Some([(_, is_event)]) => {
                if *is_event == garbage {
                    wrong_kind.push((*p, *o));
                }
            }
            Some(more) => repeated.push((*p, *o, more.to_vec())),
        }
    }
    let extra = records.keys().filter(|k| !topic.contains_key(k)).count();
    if !(missing.is_empty() && repeated.is_empty() && wrong_kind.is_empty() && extra == 0) {
        // Keep the ledgers and the members' logs for a post-mortem.
        let kept = tmp.keep();
        panic!(
            "{variant:?}: {} missing (first {:?}), {} repeated (first {:?}), {} of the wrong kind, {extra} not in the topic; ledgers and logs kept in {}; members' last lines:\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            repeated.len(),
            &repeated[..repeated.len().min(10)],
            wrong_kind.len(),
            kept.display(),
            logs_tail()
        );
    }

    // The same verdict from `check-offsets`' library.
    let used: Vec<PathBuf> = ledgers.iter().filter(|l| l.exists()).cloned().collect();
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
        &used,
    )
    .unwrap();
    assert!(report.exact, "{report:?}");
    let recorded: u64 = report.partitions.iter().map(|p| p.recorded_once).sum();
    assert_eq!(recorded, produced);
    eprintln!(
        "{variant:?}: {produced} messages, {changes} membership changes ({kills} kills, {leaves} graceful leaves, at most {most} members); every offset recorded exactly once across {} ledgers",
        used.len()
    );
}

fn churn() -> Duration {
    Duration::from_secs(
        std::env::var("LIFELEDGER_TORTURE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(24),
    )
}

#[test]
fn members_joining_leaving_and_dying_lose_and_repeat_no_offset() {
    torture(Variant::Eager, churn(), 0x5eed_0001);
}

#[test]
fn the_same_with_cooperative_sticky_assignment() {
    torture(Variant::Cooperative, churn(), 0x5eed_0002);
}

/// The consumer supports static membership, but tansu 0.6's coordinator
/// does not settle a group of static members that were killed and came
/// back: every member then waits for an assignment that never comes
/// (seen in every run here). Run against a broker that does:
/// `cargo test -p lifeledger --test rebalance -- --ignored`.
#[test]
#[ignore = "tansu 0.6 never assigns partitions again to static members that were killed and restarted"]
fn the_same_with_static_membership() {
    torture(Variant::Static, churn(), 0x5eed_0003);
}
