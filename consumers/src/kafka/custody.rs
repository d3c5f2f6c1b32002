//! The custody topic: claims and holds of a group's partitions (see
//! [`super::handover`]), appended one record at a time and followed to
//! the end before every decision.
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

use super::handover::{Custody, CustodyRecord, Fate};

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

/// What `tail` has read so far, folded.
#[derive(Debug, Default)]
struct Followed {
    custody: Custody,
    /// The highest offset read.
    last: Option<i64>,
    /// Records read (for the log).
    records: u64,
}

/// The custody topic of a consumer.
pub struct CustodyLog {
    producer: BaseProducer<Delivered>,
    /// Follows the topic from its start as it grows.
    tail: BaseConsumer,
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
        let tail: BaseConsumer = reader_config.create()?;
        if !exists(&tail, topic)? {
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
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
        tail.assign(&tpl)?;
        Ok(CustodyLog {
            producer,
            tail,
            seen: Mutex::new(Followed::default()),
            topic: topic.to_owned(),
        })
    }

    /// Folds in what the topic gained since the last call (never blocks).
    fn follow(&self, seen: &mut Followed) {
        while let Some(result) = self.tail.poll(Duration::ZERO) {
            match result {
                Ok(m) => {
                    // A record already folded (a fetch repeated) is not
                    // folded again: the fold relies on order.
                    if seen.last.is_some_and(|l| m.offset() <= l) {
                        continue;
                    }
                    seen.last = Some(m.offset());
                    seen.records += 1;
                    if let Some(r) = m
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(CustodyRecord::parse)
                    {
                        seen.custody.apply(m.offset(), &r);
                    }
                }
                Err(e) => {
                    tracing::debug!("following the custody topic: {e}");
                    break;
                }
            }
        }
    }

    /// Folds in what has already arrived (no round trip to the broker): a
    /// cheap, possibly stale view.
    pub fn follow_now(&self) {
        if let Ok(mut seen) = self.seen.lock() {
            self.follow(&mut seen);
        }
    }

    /// Reads the topic up to its end as the broker tells it now, so that
    /// every record written before this call is folded in. Every record
    /// is sent on its own (see `record`), so the high watermark is exact.
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
                if began.elapsed() > Duration::from_secs(2) {
                    tracing::info!(
                        "read the custody topic to offset {high} ({} records) in {:.1?}",
                        seen.records,
                        began.elapsed()
                    );
                }
                return Ok(());
            }
            if began.elapsed() > TIMEOUT * 4 {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Asks the fold, as last followed.
    fn ask<T>(&self, question: impl FnOnce(&Custody) -> T) -> Option<T> {
        self.seen.lock().ok().map(|seen| question(&seen.custody))
    }

    /// Whether `claim` is still the partition's latest claim.
    pub fn holds(&self, group: &str, topic: &str, partition: i32, claim: i64) -> bool {
        self.ask(|c| c.holds(group, topic, partition, claim))
            .unwrap_or(false)
    }

    /// Where a member taking the partition resumes (`None`: no valid hold
    /// in the log).
    pub fn resume_point(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.ask(|c| c.resume_point(group, topic, partition))
            .flatten()
    }

    /// The fate of a batch staged under `claim`, ending before `next`.
    pub fn fate(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        claim: i64,
        next: i64,
    ) -> Option<Fate> {
        self.ask(|c| c.fate(group, topic, partition, claim, next))
            .flatten()
    }

    /// Appends one record, once the broker holds it (so that each is a
    /// record batch of its own: tansu reports a short high watermark for a
    /// batch of several); returns its offset.
    pub fn record(&self, record: &CustodyRecord) -> Result<i64, KafkaError> {
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
        super::flush_promptly(&self.producer, TIMEOUT)?;
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
            self.producer.poll(Duration::from_millis(1));
        }
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
