//! The custody topic: claims and holds of a group's partitions (see
//! [`super::handover`]), appended one record at a time and followed to
//! the end before every decision.
//!
//! One partition, so that records are totally ordered; shared by every
//! group and topic (records carry both); created on first use.

use std::collections::{BTreeMap, HashMap};
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

use super::ClosingConsumer;
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
    /// Records this log wrote, by the offset the broker gave them, until
    /// they are folded: one at the next offset to read is folded as
    /// written, without waiting for the fetch that brings it back (the
    /// offset is the broker's, so nothing else is there).
    written: BTreeMap<i64, Option<CustodyRecord>>,
}

impl Followed {
    /// Folds the record at `at` (skipped if already folded: a fetch
    /// repeated, or a record this log wrote and folded as written).
    fn fold(&mut self, at: i64, record: Option<CustodyRecord>) {
        if self.last.is_some_and(|l| at <= l) {
            return;
        }
        self.last = Some(at);
        self.records += 1;
        if let Some(r) = record {
            self.custody.apply(at, &r);
        }
    }

    /// Folds the records this log wrote that come next, in offset order.
    fn fold_written(&mut self) {
        while let Some(entry) = self.written.first_entry() {
            let at = *entry.key();
            match self.last {
                Some(l) if at <= l => {
                    entry.remove();
                }
                Some(l) if at == l + 1 => {
                    let record = entry.remove();
                    self.fold(at, record);
                }
                // Nothing read yet (where the topic starts is the
                // fetch's to say), or others' records come first.
                _ => return,
            }
        }
    }
}

/// The custody topic of a consumer.
pub struct CustodyLog {
    producer: BaseProducer<Delivered>,
    /// Follows the topic from its start as it grows.
    /// Closed promptly when the log is dropped.
    tail: ClosingConsumer,
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
        let tail = ClosingConsumer::new(
            reader_config.create()?,
            format!("the reader of {topic}"),
            TIMEOUT,
        );
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
        seen.fold_written();
        while let Some(result) = self.tail.poll(Duration::ZERO) {
            match result {
                Ok(m) => {
                    // A record already folded is not folded again: the
                    // fold relies on order.
                    let record = m
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(CustodyRecord::parse);
                    seen.fold(m.offset(), record);
                    seen.fold_written();
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
        // Asked through the producer's connection: the reader's may hold a
        // fetch the broker keeps open while it has nothing new
        // (`fetch.wait.max.ms`), and answers on one connection come in
        // order.
        let (_, high) = self
            .producer
            .client()
            .fetch_watermarks(&self.topic, 0, TIMEOUT)?;
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
                if let (Ok(at), Ok(mut seen)) = (&outcome, self.seen.lock()) {
                    // Folded as the fetch would read it back.
                    seen.written.insert(*at, CustodyRecord::parse(&value));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(partition: i32) -> Option<CustodyRecord> {
        Some(CustodyRecord::Claim {
            group: "g".into(),
            partitions: vec![("t".into(), partition)],
        })
    }

    /// The fold as reading the topic alone leaves it.
    fn read_alone(records: &[(i64, Option<CustodyRecord>)]) -> Followed {
        let mut f = Followed::default();
        for (at, r) in records {
            f.fold(*at, r.clone());
        }
        f
    }

    #[test]
    fn a_written_record_is_folded_only_at_the_next_offset_to_read() {
        // Read through offset 4; this log wrote offsets 5 and 7, another
        // member offset 6.
        let mut f = read_alone(&[(3, claim(0)), (4, claim(1))]);
        f.written.insert(5, claim(2));
        f.written.insert(7, claim(3));
        f.fold_written();
        assert_eq!(f.last, Some(5), "5 is next: folded as written");
        assert!(f.written.contains_key(&7), "6 is not known yet: 7 waits");
        // The fetch brings 5 again (skipped), then 6; 7 follows as written.
        f.fold(5, claim(2));
        f.fold(6, claim(4));
        f.fold_written();
        assert_eq!(f.last, Some(7));
        assert!(f.written.is_empty());
        let alone = read_alone(&[
            (3, claim(0)),
            (4, claim(1)),
            (5, claim(2)),
            (6, claim(4)),
            (7, claim(3)),
        ]);
        assert_eq!(f.records, alone.records);
        for p in 0..5 {
            assert_eq!(
                f.custody.resume_point("g", "t", p),
                alone.custody.resume_point("g", "t", p)
            );
            assert_eq!(
                f.custody.holds("g", "t", p, 7),
                alone.custody.holds("g", "t", p, 7)
            );
        }
    }

    #[test]
    fn nothing_written_is_folded_before_the_topic_was_read() {
        // Where the topic starts is the fetch's to say.
        let mut f = Followed::default();
        f.written.insert(0, claim(0));
        f.fold_written();
        assert_eq!(f.last, None);
        // Read back by the fetch, it is dropped from the written ones.
        f.fold(0, claim(0));
        f.fold_written();
        assert!(f.written.is_empty());
        assert_eq!(f.records, 1);
    }
}
