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
        let key = format!("k{}", i % 7);
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

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_unreachable_archive_delays_nothing_and_catches_up() {
    let broker = Broker::start();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let topics = [NewTopic::new(TOPIC, 3, TopicReplication::Fixed(1))];
    for r in futures_executor::block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap()
    {
        r.unwrap();
    }
    produce(&broker, 0, 600);

    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    let key = tmp.path().join("signer");
    let bin = env!("CARGO_BIN_EXE_lifeledger");
    assert!(
        Command::new(bin)
            .args(["keygen", "--out", key.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
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
    let s3 = S3Server::start_on(s3_port);
    s3.create_bucket("evidence", Some(1));
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
    let out = Command::new(bin)
        .args([
            "verify",
            "--from-archive",
            "s3://evidence/ledger",
            "--key",
            &format!("{}.pub", key.display()),
        ])
        .envs(s3.env())
        .output()
        .unwrap();
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
