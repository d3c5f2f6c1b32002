//! The consumer with an archive, against a real broker (tansu) and a real
//! S3-compatible server (moto): the archive unreachable at first,
//! consumption goes on locally while the lag metric and its alert show it,
//! and once the server is up the uploads catch up; a graceful stop leaves
//! every entry archived under a checkpoint, verified straight from the
//! archive.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lifeledger_tests::broker::Broker;
use lifeledger_tests::collected;
use lifeledger_tests::s3::S3Server;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TOPIC: &str = "lifecycle";

/// A broker with the topic of `partitions` partitions.
fn broker_with_topic(partitions: i32) -> Broker {
    let broker = Broker::start();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let topics = [NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(1))];
    for r in futures_executor::block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap()
    {
        r.unwrap();
    }
    broker
}

/// A checkpoint signing key pair in `dir`: returns its path without the
/// `.key`/`.pub` extension.
fn signing_key(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("signer");
    assert!(
        Command::new(env!("CARGO_BIN_EXE_lifeledger"))
            .args(["keygen", "--out", key.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    key
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn produce(broker: &Broker, from: usize, to: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for i in from..to {
        let payload = collected(&format!("e{i}"), &format!("i{i}"));
        let key = format!("k{i}");
        producer
            .send(BaseRecord::to(TOPIC).key(&key).payload(&payload))
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The value of a metric on the consumer's /metrics page.
fn metric(addr: &str, name: &str) -> Option<u64> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn wait_for(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    wait_for_telling(what, limit, done, String::new);
}

/// [`wait_for`], saying what `state` tells when the wait runs out: a
/// group test that times out names where each member stood.
fn wait_for_telling(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
    state: impl Fn() -> String,
) {
    let began = Instant::now();
    while !done() {
        assert!(
            began.elapsed() < limit,
            "waited {limit:?} for {what}\n{}",
            state()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many offsets of each partition the archive holds, and the last
/// lines of each member's log.
fn group_state(s3: &S3Server, dir: &std::path::Path, members: usize) -> String {
    let mut per_partition = std::collections::BTreeMap::<i32, usize>::new();
    for (p, _) in archived_offsets(s3, dir) {
        *per_partition.entry(p).or_default() += 1;
    }
    let tails: Vec<String> = (0..members)
        .map(|s| {
            let log =
                std::fs::read_to_string(dir.join(format!("member-{s}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(40);
            format!("member {s}, last lines:\n{}", lines[from..].join("\n"))
        })
        .collect();
    format!(
        "archived offsets per partition: {per_partition:?}\n{}",
        tails.join("\n---\n")
    )
}

#[test]
fn an_unreachable_archive_delays_nothing_and_catches_up() {
    let broker = broker_with_topic(3);
    produce(&broker, 0, 600);

    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let key = signing_key(tmp.path());
    let bin = env!("CARGO_BIN_EXE_lifeledger");
    // Nothing listens on the archive's port yet.
    let s3_port = free_port();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let config = tmp.path().join("consume.toml");
    std::fs::write(
        &config,
        format!(
            r#"brokers = "{}"
group = "archived"
topics = ["{TOPIC}"]
ledger = "{}"
batch_size = 100
max_latency_ms = 50
metrics_addr = "{metrics_addr}"
checkpoint_key = "{}.key"
checkpoint_interval_secs = 1
archive = "s3://evidence/ledger"
archive_interval_secs = 1
archive_seal_after_secs = 1
archive_lag_alert_entries = 100
"#,
            broker.bootstrap(),
            ledger.display(),
            key.display()
        ),
    )
    .unwrap();
    let s3_env = [
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{s3_port}")),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
        ("AWS_ACCESS_KEY_ID", "lifeledger-test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "lifeledger-test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_RETRY_TIMEOUT", "1s".to_owned()),
        ("AWS_MAX_RETRIES", "0".to_owned()),
        ("LIFELEDGER_ARCHIVE_OBJECT_LOCK", "true".to_owned()),
    ];
    let log = std::fs::File::create(tmp.path().join("consume.log")).unwrap();
    let mut child = Command::new(bin)
        .args(["consume", "--config", config.to_str().unwrap()])
        .envs(s3_env.iter().cloned())
        .env("LIFELEDGER_LOG", "lifeledger=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    // Consumption goes on: every event appended locally, while the archive
    // lag shows them and the alert is up.
    wait_for("600 events appended", Duration::from_secs(90), || {
        metric(&metrics_addr, "lifeledger_appended_total") == Some(600)
    });
    wait_for("the lag alert", Duration::from_secs(30), || {
        metric(&metrics_addr, "lifeledger_archive_lag_alert") == Some(1)
            && metric(&metrics_addr, "lifeledger_archive_lag_entries") == Some(600)
    });
    assert!(metric(&metrics_addr, "lifeledger_archive_errors_total").unwrap() > 0);

    // The server comes up (Object Lock on): the uploads catch up, and more
    // events keep flowing.
    let s3 = S3Server::start();
    s3.create_bucket("evidence", Some(1));
    s3.forward_from(s3_port);
    produce(&broker, 600, 900);
    wait_for("the archive to catch up", Duration::from_secs(90), || {
        metric(&metrics_addr, "lifeledger_appended_total") == Some(900)
            && metric(&metrics_addr, "lifeledger_archive_lag_entries") == Some(0)
    });
    assert_eq!(
        metric(&metrics_addr, "lifeledger_archive_lag_alert"),
        Some(0)
    );
    assert!(metric(&metrics_addr, "lifeledger_archive_segments_total").unwrap() > 0);

    // A graceful stop: everything archived, under a checkpoint.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let log_text = std::fs::read_to_string(tmp.path().join("consume.log")).unwrap();
    assert!(status.success(), "{log_text}");
    assert!(log_text.contains("ALERT archive lag"), "{log_text}");
    let out = verify_archive(&s3, "s3://evidence/ledger", &key);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chains = text.matches("intact").count();
    assert_eq!(chains, 3, "{text}");
    assert!(text.contains("vouches for 900 of 900 entries"), "{text}");
}

/// A member of the group "g" archiving to `archive` through `s3`.
fn member(
    broker: &Broker,
    s3: &S3Server,
    dir: &std::path::Path,
    slot: usize,
    key: &std::path::Path,
    idle_ms: u64,
) -> std::process::Child {
    member_sealing_every(broker, s3, dir, slot, key, idle_ms, 1)
}

fn member_sealing_every(
    broker: &Broker,
    s3: &S3Server,
    dir: &std::path::Path,
    slot: usize,
    key: &std::path::Path,
    idle_ms: u64,
    seal_secs: u64,
) -> std::process::Child {
    let config = dir.join(format!("member-{slot}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"brokers = "{}"
group = "g"
topics = ["{TOPIC}"]
ledger = "{}"
batch_size = 200
max_latency_ms = 50
checkpoint_key = "{}.key"
checkpoint_interval_secs = 1
exit_when_idle_ms = {idle_ms}
archive = "s3://evidence/group"
archive_interval_secs = 1
archive_seal_after_secs = {seal_secs}

[librdkafka]
"session.timeout.ms" = "6000"
"#,
            broker.bootstrap(),
            dir.join(format!("ledger-{slot}")).display(),
            key.display()
        ),
    )
    .unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("member-{slot}.log")))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .args(["consume", "--config", config.to_str().unwrap()])
        .envs(s3.env())
        .env("LIFELEDGER_LOG", "lifeledger=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// SIGTERM to each member; each must finish cleanly. A failure shows the
/// members' logs (the first `logged` of `dir`), which say why.
fn stop_members(members: &mut [std::process::Child], dir: &std::path::Path, logged: usize) {
    for m in members {
        let _ = Command::new("kill")
            .args(["-TERM", &m.id().to_string()])
            .status();
        let status = m.wait().unwrap();
        assert!(
            status.success(),
            "a member failed ({status}); the members' logs:\n{}",
            member_logs(dir, logged)
        );
    }
}

/// The first `n` members' logs, for a failure's message.
fn member_logs(dir: &std::path::Path, n: usize) -> String {
    (0..n)
        .map(|s| std::fs::read_to_string(dir.join(format!("member-{s}.log"))).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// `verify --from-archive URL` with the public half of `key`.
fn verify_archive(s3: &S3Server, url: &str, key: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .args([
            "verify",
            "--from-archive",
            url,
            "--key",
            &format!("{}.pub", key.display()),
        ])
        .envs(s3.env())
        .output()
        .unwrap()
}

/// The archive's (partition, offset)s, sorted, each asserted to be there
/// once.
fn archived_once(s3: &S3Server, dir: &std::path::Path, logs: &str) -> Vec<(i32, i64)> {
    let mut offsets = archived_offsets(s3, dir);
    offsets.sort_unstable();
    let total = offsets.len();
    offsets.dedup();
    assert_eq!(total, offsets.len(), "an offset archived twice\n{logs}");
    offsets
}

/// Every (partition, offset) of the archive's chains, from a restore.
fn archived_offsets(s3: &S3Server, dir: &std::path::Path) -> Vec<(i32, i64)> {
    let restored = dir.join("restored");
    let _ = std::fs::remove_dir_all(&restored);
    let out = Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .args([
            "--ledger",
            restored.to_str().unwrap(),
            "restore",
            "--from-archive",
            "s3://evidence/group",
        ])
        .envs(s3.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .args(["--ledger", restored.to_str().unwrap(), "log", "--json"])
        .output()
        .unwrap();
    let mut offsets = Vec::new();
    for line in String::from_utf8_lossy(&log.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(p), Some(o)) = (
            v["source"]["partition"].as_i64(),
            v["source"]["offset"].as_i64(),
        ) {
            offsets.push((p as i32, o));
        }
    }
    offsets
}

#[test]
fn a_group_keeps_one_chain_per_partition_when_a_member_dies_with_its_disk() {
    let broker = broker_with_topic(12);
    let s3 = S3Server::start();
    s3.create_bucket("evidence", None);
    let tmp = tempfile::tempdir().unwrap();
    let key = signing_key(tmp.path());
    produce(&broker, 0, 1500);
    let mut members: Vec<std::process::Child> = (0..3)
        .map(|slot| member(&broker, &s3, tmp.path(), slot, &key, 600_000))
        .collect();
    std::thread::sleep(Duration::from_secs(8));
    produce(&broker, 1500, 2400);
    std::thread::sleep(Duration::from_secs(2));
    // Member 0 dies with its disk: whatever it had not archived is gone.
    members[0].kill().unwrap();
    members[0].wait().unwrap();
    std::fs::remove_dir_all(tmp.path().join("ledger-0")).unwrap();
    produce(&broker, 2400, 3000);
    // The others take its partitions over (after its session expires) and
    // drain the topic into the archive; then they stop.
    wait_for_telling(
        "every offset archived",
        Duration::from_secs(180),
        || archived_offsets(&s3, tmp.path()).len() >= 3000,
        || group_state(&s3, tmp.path(), 3),
    );
    stop_members(&mut members[1..], tmp.path(), 3);
    let logs = || member_logs(tmp.path(), 3);
    let offsets = archived_once(&s3, tmp.path(), &logs());
    let total = offsets.len();
    // Every offset of every partition, once: the topic holds 3000 records
    // spread over 12 partitions, each from offset 0 without gap.
    assert_eq!(total, 3000, "{}", logs());
    let mut per_partition = std::collections::BTreeMap::<i32, Vec<i64>>::new();
    for (p, o) in offsets {
        per_partition.entry(p).or_default().push(o);
    }
    assert_eq!(per_partition.len(), 12);
    for (p, os) in &per_partition {
        assert_eq!(
            *os,
            (0..os.len() as i64).collect::<Vec<_>>(),
            "partition {p}"
        );
    }
    let out = verify_archive(&s3, "s3://evidence/group", &key);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", logs());
    assert_eq!(text.matches("intact").count(), 12, "{text}");
    // The survivors took member 0's partitions over from the archive.
    assert!(logs().contains("from the archive (seqs"), "{}", logs());
}

#[test]
fn a_stale_member_cannot_extend_the_chains_it_lost() {
    let broker = broker_with_topic(4);
    let s3 = S3Server::start();
    s3.create_bucket("evidence", None);
    let tmp = tempfile::tempdir().unwrap();
    let key = signing_key(tmp.path());
    produce(&broker, 0, 800);
    // A records everything but seals (so archives) nothing for a minute.
    let a = member_sealing_every(&broker, &s3, tmp.path(), 0, &key, 600_000, 60);
    std::thread::sleep(Duration::from_secs(6));
    // A stops dead (a paused process, a partitioned network): its session
    // expires and B takes the partitions, continuing the (empty) archived
    // chains and archiving as it goes.
    let _ = Command::new("kill")
        .args(["-STOP", &a.id().to_string()])
        .status();
    let b = member(&broker, &s3, tmp.path(), 1, &key, 600_000);
    produce(&broker, 800, 1200);
    std::thread::sleep(Duration::from_secs(15));
    // A wakes up, with everything it recorded unarchived: it seals on
    // losing its partitions, and its uploads are refused as second
    // continuations of chains B extended.
    let _ = Command::new("kill")
        .args(["-CONT", &a.id().to_string()])
        .status();
    produce(&broker, 1200, 1400);
    wait_for_telling(
        "every offset archived",
        Duration::from_secs(180),
        || archived_offsets(&s3, tmp.path()).len() >= 1400,
        || group_state(&s3, tmp.path(), 2),
    );
    // Time for A to find out, if it had not yet.
    std::thread::sleep(Duration::from_secs(3));
    let mut both = [a, b];
    stop_members(&mut both, tmp.path(), 2);
    let logs = || member_logs(tmp.path(), 2);
    let a_log = std::fs::read_to_string(tmp.path().join("member-0.log")).unwrap();
    assert!(
        a_log.contains("was extended by another ledger")
            || a_log.contains("differed from the archive"),
        "A's refused continuation is reported:\n{}",
        logs()
    );
    let offsets = archived_once(&s3, tmp.path(), &logs());
    let total = offsets.len();
    assert_eq!(total, 1400, "{}", logs());
    let out = verify_archive(&s3, "s3://evidence/group", &key);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        logs()
    );
}
