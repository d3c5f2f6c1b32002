//! Produces a lifecycle stream to a real broker, as a data platform's
//! producer would (idempotent, keyed by account, records batched), for
//! reproducing consumer-group scenarios by hand:
//!
//! `cargo run --release --example produce -- BROKERS TOPIC PARTITIONS EVENTS GARBAGE`
//!
//! Creates TOPIC (with PARTITIONS) and TOPIC.dlq if missing, then sends
//! EVENTS distinct valid events and GARBAGE undecodable messages spread
//! through them. Prints what was acknowledged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a tool: a panic is a failed run

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn event(i: u64) -> (String, String) {
    let account = i % 997;
    let key = format!("1250{account:06}/1000{account:08}");
    let body = if i % 2 == 0 {
        format!(
            r#"{{"schema_version":1,"event_id":"p-{i}","event_time":"2026-03-02T09:00:00Z","account":{{"app_id":"1250{account:06}","uin":"1000{account:08}"}},"item_id":"item-{i}","category":"asset_management","region":"SG","kind":{{"type":"collected","sensitive":false,"purpose":"inventory"}}}}"#
        )
    } else {
        format!(
            r#"{{"schema_version":1,"event_id":"p-{i}","event_time":"2026-03-02T09:15:00Z","account":{{"app_id":"1250{account:06}","uin":"1000{account:08}"}},"item_id":"item-{}","category":"asset_management","kind":{{"type":"stored","store":"mysql"}}}}"#,
            i - 1
        )
    };
    (key, body)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let brokers = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:19092".into());
    let topic = args.get(2).cloned().unwrap_or_else(|| "lifecycle".into());
    let partitions: i32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    let events: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let garbage: u64 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(50);

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let dlq = format!("{topic}.dlq");
    let topics = [
        NewTopic::new(&topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)),
    ];
    for r in futures_executor::block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap()
    {
        if let Err((name, e)) = r {
            eprintln!("topic {name}: {e}");
        }
    }

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let every = events.checked_div(garbage).map_or(u64::MAX, |n| n.max(1));
    let began = Instant::now();
    let mut sent = 0u64;
    let mut junk = 0u64;
    for i in 0..events {
        let (key, body) = event(i);
        send(&producer, &topic, &key, body.as_bytes());
        sent += 1;
        if i % every == every / 2 && junk < garbage {
            send(
                &producer,
                &topic,
                &key,
                format!("garbage {junk}").as_bytes(),
            );
            junk += 1;
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    println!(
        "acknowledged {sent} events and {junk} garbage messages to {topic} in {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

fn send(producer: &BaseProducer, topic: &str, key: &str, payload: &[u8]) {
    let mut record = Some(BaseRecord::to(topic).key(key).payload(payload));
    while let Some(r) = record.take() {
        if let Err((_, back)) = producer.send(r) {
            producer.poll(Duration::from_millis(5));
            record = Some(back);
        }
    }
    producer.poll(Duration::ZERO);
}
