//! Measures how a plain rdkafka consumer reads a MockCluster topic, to size
//! the demo: `cargo run --release --example mockprobe -- MESSAGES [KEY=VALUE…]`
//! with `PARTS=N` for the partition count. Prints messages received and the
//! rate after the first one (the mock's group join takes about 3 s).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a probe: a panic is a failed run

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::{Duration, Instant};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let extra: Vec<(String, String)> = std::env::args()
        .skip(2)
        .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let cluster = MockCluster::new(1).unwrap();
    let parts: i32 = std::env::var("PARTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    cluster.create_topic("t", parts, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let payload = vec![b'x'; 300];
    for i in 0..n {
        let k = format!("k{}", i % 1000);
        producer
            .send(BaseRecord::to("t").key(&k).payload(&payload))
            .unwrap();
        if i % 10000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "g")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    for (k, v) in &extra {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer = cfg.create().unwrap();
    consumer.subscribe(&["t"]).unwrap();
    let start = Instant::now();
    let mut got = 0usize;
    let mut last = Instant::now();
    let mut first: Option<Instant> = None;
    while got < n && last.elapsed() < Duration::from_secs(5) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let _ = m.payload();
            got += 1;
            last = Instant::now();
            first.get_or_insert_with(Instant::now);
        }
    }
    let f = first.unwrap_or(start);
    println!(
        "{got}/{n} in {:.2?} ({:.0}/s after first message at {:.2?})",
        last - start,
        got as f64 / (last - f).as_secs_f64(),
        f - start
    );
}
