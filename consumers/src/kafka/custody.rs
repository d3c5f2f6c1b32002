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

use super::handover::{CustodyRecord, SinceClaim, Step, since_claim};

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

/// A custody record as followed: its offset in the custody topic, and its
/// step.
type Handover = (i64, Step);

/// What `tail` has read so far.
#[derive(Debug, Default)]
struct Followed {
    /// Per (group, topic, partition), in order.
    records: HashMap<Partition, Vec<Handover>>,
    /// The highest offset read.
    last: Option<i64>,
}

/// The custody topic of a consumer.
pub struct CustodyLog {
    producer: BaseProducer<Delivered>,
    reader: BaseConsumer,
    /// Follows the topic as it grows, so that a member learns cheaply,
    /// before appending a batch, whether another member has taken the
    /// partition meanwhile (a broker that completes a rebalance without
    /// it, as tansu can, leaves two members reading one partition).
    tail: BaseConsumer,
    /// The records read so far by `tail`.
    seen: Mutex<Followed>,
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
            seen: Mutex::new(Followed::default()),
            topic: topic.to_owned(),
        })
    }

    /// Reads what the topic gained since the last call (never blocks).
    fn follow(&self, seen: &mut Followed) {
        while let Some(result) = self.tail.poll(Duration::ZERO) {
            match result {
                Ok(m) => {
                    seen.last = Some(seen.last.map_or(m.offset(), |l| l.max(m.offset())));
                    if let Some(r) = m
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(CustodyRecord::parse)
                    {
                        seen.records
                            .entry((r.group, r.topic, r.partition))
                            .or_default()
                            .push((m.offset(), r.step));
                    }
                }
                Err(e) => {
                    tracing::debug!("following the custody topic: {e}");
                    break;
                }
            }
        }
    }

    /// Reads what the topic gained and has already arrived (no round trip
    /// to the broker): a cheap, possibly stale view for `since_claim`.
    pub fn follow_now(&self) {
        if let Ok(mut seen) = self.seen.lock() {
            self.follow(&mut seen);
        }
    }

    /// Reads the topic up to its end as the broker tells it now, so that
    /// every record written before this call is seen by `since_claim`.
    /// Every record is sent on its own (see `record`), so the high
    /// watermark is exact.
    pub fn catch_up(&self) -> Result<(), KafkaError> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| KafkaError::Flush(RDKafkaErrorCode::Fail))?;
        let (_, high) = self.tail.fetch_watermarks(&self.topic, 0, TIMEOUT)?;
        let began = Instant::now();
        loop {
            self.follow(&mut seen);
            if high <= 0 || seen.last.is_some_and(|l| l >= high - 1) {
                return Ok(());
            }
            if began.elapsed() > TIMEOUT {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// What the topic, as read by the last `catch_up`, says of a partition
    /// since this member claimed it (see
    /// [`super::handover::since_claim`]).
    pub fn since_claim(
        &self,
        claim: i64,
        resumed: i64,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> SinceClaim {
        let Ok(seen) = self.seen.lock() else {
            return SinceClaim::Claimed;
        };
        let records = seen
            .records
            .get(&(group.to_owned(), topic.to_owned(), partition))
            .map_or(&[][..], Vec::as_slice);
        since_claim(records, claim, resumed)
    }

    /// Appends records, one at a time, each once the broker holds the one
    /// before (so that each is a record batch of its own: tansu reports a
    /// short high watermark for a batch of several); returns their
    /// offsets, in order.
    pub fn record(&self, records: &[CustodyRecord]) -> Result<Vec<i64>, KafkaError> {
        records.iter().map(|r| self.record_one(r)).collect()
    }

    fn record_one(&self, record: &CustodyRecord) -> Result<i64, KafkaError> {
        if let Ok(mut slots) = self.producer.context().0.lock() {
            slots.clear();
        }
        let key = record.key();
        let value = record.encode();
        let mut pending = Some(
            BaseRecord::with_opaque_to(&self.topic, Box::new(0))
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
        self.producer.flush(TIMEOUT)?;
        let began = Instant::now();
        loop {
            let delivered = self
                .producer
                .context()
                .0
                .lock()
                .map_err(|_| KafkaError::Flush(RDKafkaErrorCode::Fail))?
                .remove(&0);
            if let Some(outcome) = delivered {
                return outcome;
            }
            if began.elapsed() > TIMEOUT {
                return Err(KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut));
            }
            self.producer.poll(Duration::from_millis(5));
        }
    }

    /// The first resume record of the same group, topic and partition
    /// after `after` (an offset in the custody topic), if any: what the
    /// group had committed then.
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
    ) -> Result<Option<Option<i64>>, KafkaError> {
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
                    if let Step::Resume(committed) = r.step {
                        if r.group == group && r.topic == topic && r.partition == partition {
                            break Some(committed);
                        }
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
