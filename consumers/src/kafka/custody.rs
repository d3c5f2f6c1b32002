//! The custody topic: a member records each partition it is assigned,
//! with what the group had committed then, before it reads the partition;
//! the fate of a batch left staged is read back from it (see
//! [`super::handover`]).
//!
//! One partition, so that records are totally ordered; shared by every
//! group and topic (records carry both); created on first use.

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

/// Remembers the offset of the last delivered record.
#[derive(Debug, Default)]
struct Delivered(Mutex<Option<Result<i64, KafkaError>>>);

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let outcome = match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.clone()),
        };
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(outcome);
        }
    }
}

/// The custody topic of a consumer.
pub struct CustodyLog {
    producer: BaseProducer<Delivered>,
    reader: BaseConsumer,
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
        let admin: AdminClient<DefaultClientContext> = client.create()?;
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
        let created = wait_for(admin.create_topics([&new], &AdminOptions::new()))?;
        for r in created {
            match r {
                Ok(_) => tracing::info!("created the custody topic {topic}"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::error!("creating the custody topic {name}: {code}");
                    });
                }
            }
        }
        let mut producer_config = client.clone();
        producer_config
            .set("enable.idempotence", "true")
            .set("linger.ms", "0");
        let producer = producer_config.create_with_context(Delivered::default())?;
        let mut reader_config = client.clone();
        reader_config
            .set("group.id", "lifeledger-custody-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "10");
        let reader = reader_config.create()?;
        Ok(CustodyLog {
            producer,
            reader,
            topic: topic.to_owned(),
        })
    }

    /// Appends a record and waits until the broker holds it; returns its
    /// offset.
    pub fn record(&self, record: &CustodyRecord) -> Result<i64, KafkaError> {
        if let Ok(mut slot) = self.producer.context().0.lock() {
            *slot = None;
        }
        let key = record.key();
        let value = record.encode();
        super::send_waiting(
            &self.producer,
            BaseRecord::to(&self.topic).key(&key).payload(&value),
        )?;
        self.producer.flush(TIMEOUT)?;
        let began = Instant::now();
        loop {
            if let Some(outcome) = self
                .producer
                .context()
                .0
                .lock()
                .ok()
                .and_then(|mut s| s.take())
            {
                return outcome;
            }
            if began.elapsed() > TIMEOUT {
                return Err(KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut));
            }
            self.producer.poll(Duration::from_millis(10));
        }
    }

    /// The first record of the same group, topic and partition after
    /// `after` (an offset in the custody topic), if any.
    pub fn next_after(
        &self,
        after: i64,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<CustodyRecord>, KafkaError> {
        let (_, high) = self.reader.fetch_watermarks(&self.topic, 0, TIMEOUT)?;
        if after + 1 >= high {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Offset(after + 1))?;
        self.reader.assign(&tpl)?;
        let began = Instant::now();
        let mut expected = after + 1;
        let found = loop {
            if expected >= high {
                break None;
            }
            if began.elapsed() > TIMEOUT {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            match self.reader.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    expected = m.offset() + 1;
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
                Some(Err(e)) => return Err(e),
                None => {}
            }
        };
        self.reader.unassign()?;
        Ok(found)
    }
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
