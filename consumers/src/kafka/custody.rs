//! The custody topic: a member records each partition it is assigned,
//! with what the group had committed then, before it reads the partition;
//! the fate of a batch left staged is read back from it (see
//! [`super::handover`]).
//!
//! One partition, so that records are totally ordered; shared by every
//! group and topic (records carry both); created on first use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::handover::CustodyRecord;

/// Remembers where each record sent went, by its number in the send.
#[derive(Debug, Default)]
struct Delivered(Mutex<HashMap<usize, Result<i64, KafkaError>>>);

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, number: Box<usize>) {
        let outcome = match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.clone()),
        };
        if let Ok(mut slots) = self.0.lock() {
            slots.insert(*number, outcome);
        }
    }
}

/// A group's partition of a topic: (group, topic, partition).
type Partition = (String, String, i32);

/// A custody record as followed: its offset in the custody topic, and the
/// offset the group had committed when the partition changed hands.
type Handover = (i64, Option<i64>);

/// The custody topic of a consumer.
pub struct CustodyLog {
    producer: BaseProducer<Delivered>,
    reader: BaseConsumer,
    /// Follows the topic as it grows, so that a member learns cheaply,
    /// before appending a batch, whether another member has taken the
    /// partition meanwhile (a broker that completes a rebalance without
    /// it, as tansu can, leaves two members reading one partition).
    tail: BaseConsumer,
    /// Per (group, topic, partition): (custody offset, committed then),
    /// in order, as read so far by `tail`.
    seen: Mutex<HashMap<Partition, Vec<Handover>>>,
    topic: String,
}

impl std::fmt::Debug for CustodyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustodyLog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

impl CustodyLog {
    /// Opens the custody topic, creating it (one partition) if missing.
    /// `client` carries the brokers and any security settings.
    pub fn open(client: &ClientConfig, topic: &str) -> Result<CustodyLog, KafkaError> {
        let mut reader_config = client.clone();
        reader_config
            .set("group.id", "lifeledger-custody-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "10");
        let reader: BaseConsumer = reader_config.create()?;
        if !exists(&reader, topic)? {
            let admin: AdminClient<DefaultClientContext> = client.create()?;
            let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
            let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
            let created = wait_for(admin.create_topics([&new], &options))?;
            for r in created {
                match r {
                    Ok(_) => tracing::info!("created the custody topic {topic}"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        tracing::error!("creating the custody topic {name}: {code}");
                        return Err(KafkaError::AdminOp(code));
                    }
                }
            }
        }
        let mut producer_config = client.clone();
        producer_config
            .set("enable.idempotence", "true")
            .set("linger.ms", "0");
        let producer = producer_config.create_with_context(Delivered::default())?;
        let tail: BaseConsumer = reader_config.create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
        tail.assign(&tpl)?;
        Ok(CustodyLog {
            producer,
            reader,
            tail,
            seen: Mutex::new(HashMap::new()),
            topic: topic.to_owned(),
        })
    }

    /// Reads what the topic gained since the last call (never blocks
    /// long).
    pub fn follow(&self) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        while let Some(result) = self.tail.poll(Duration::ZERO) {
            match result {
                Ok(m) => {
                    if let Some(r) = m
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(CustodyRecord::parse)
                    {
                        seen.entry((r.group, r.topic, r.partition))
                            .or_default()
                            .push((m.offset(), r.committed));
                    }
                }
                Err(e) => {
                    tracing::debug!("following the custody topic: {e}");
                    break;
                }
            }
        }
    }

    /// The first handover of a partition after `after` that the follower
    /// has seen: `Some(committed then)`.
    pub fn seen_after(
        &self,
        after: i64,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Option<Option<i64>> {
        let seen = self.seen.lock().ok()?;
        seen.get(&(group.to_owned(), topic.to_owned(), partition))?
            .iter()
            .find(|(offset, _)| *offset > after)
            .map(|(_, committed)| *committed)
    }

    /// Appends records (all at once) and waits until the broker holds
    /// them; returns their offsets, in order.
    pub fn record(&self, records: &[CustodyRecord]) -> Result<Vec<i64>, KafkaError> {
        if let Ok(mut slots) = self.producer.context().0.lock() {
            slots.clear();
        }
        for (number, record) in records.iter().enumerate() {
            let key = record.key();
            let value = record.encode();
            let mut pending = Some(
                BaseRecord::with_opaque_to(&self.topic, Box::new(number))
                    .key(&key)
                    .payload(&value),
            );
            while let Some(r) = pending.take() {
                match self.producer.send(r) {
                    Ok(()) => {}
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        self.producer.poll(Duration::from_millis(10));
                        pending = Some(back);
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        self.producer.flush(TIMEOUT)?;
        let began = Instant::now();
        loop {
            let done = self
                .producer
                .context()
                .0
                .lock()
                .map(|slots| slots.len() >= records.len())
                .unwrap_or(false);
            if done {
                break;
            }
            if began.elapsed() > TIMEOUT {
                return Err(KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut));
            }
            self.producer.poll(Duration::from_millis(5));
        }
        let mut slots = self
            .producer
            .context()
            .0
            .lock()
            .map_err(|_| KafkaError::Flush(RDKafkaErrorCode::Fail))?;
        (0..records.len())
            .map(|n| {
                slots
                    .remove(&n)
                    .unwrap_or(Err(KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut)))
            })
            .collect()
    }

    /// The first record of the same group, topic and partition after
    /// `after` (an offset in the custody topic), if any.
    ///
    /// The topic is read from its start: a fetch from inside a record
    /// batch is not to be trusted (tansu skips to the next batch), and a
    /// high watermark neither (tansu reports it short when a batch holds
    /// several records), so reading ends when nothing more arrived for a
    /// while. Settling a staged batch is rare (after a crash), and the
    /// topic holds one small record per partition assignment.
    pub fn next_after(
        &self,
        after: i64,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<CustodyRecord>, KafkaError> {
        let (_, high) = self.reader.fetch_watermarks(&self.topic, 0, TIMEOUT)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Beginning)?;
        self.reader.assign(&tpl)?;
        let began = Instant::now();
        let mut last = Instant::now();
        let mut seen = -1;
        let found = loop {
            let quiet = last.elapsed();
            if (seen + 1 >= high && quiet > Duration::from_millis(300))
                || quiet > Duration::from_secs(2)
            {
                break None;
            }
            if began.elapsed() > TIMEOUT {
                self.reader.unassign()?;
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            match self.reader.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => {
                    last = Instant::now();
                    seen = seen.max(m.offset());
                    if m.offset() <= after {
                        continue;
                    }
                    let Some(r) = m
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(CustodyRecord::parse)
                    else {
                        continue;
                    };
                    if r.group == group && r.topic == topic && r.partition == partition {
                        break Some(r);
                    }
                }
                Some(Err(e)) => {
                    self.reader.unassign()?;
                    return Err(e);
                }
                None => {}
            }
        };
        self.reader.unassign()?;
        Ok(found)
    }
}

/// Whether the broker knows the topic (with at least one partition).
fn exists(reader: &BaseConsumer, topic: &str) -> Result<bool, KafkaError> {
    let metadata = reader.fetch_metadata(Some(topic), TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
}

/// Waits for an admin future without an async runtime: the admin client
/// completes it on its own thread.
fn wait_for<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Thread(std::thread::Thread);
    impl Wake for Thread {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Thread(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}
