//! The alerts topic: where the deadline monitor's alerts go, keyed by item,
//! with the alert id in a header so a restarted monitor can see which
//! alerts of an interrupted send arrived.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lifeledger_ledger::monitor::Alert;
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{ClosingConsumer, send_waiting};
use crate::monitor::{AlertOut, MonitorError};

/// The header that carries an alert's id.
pub const ALERT_ID_HEADER: &str = "lifeledger.alert_id";

/// Collects delivery failures, which librdkafka reports asynchronously.
#[derive(Debug, Default)]
pub struct Deliveries {
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            if let Ok(mut f) = self.failed.lock() {
                f.push(e.to_string());
            }
        }
    }
}

/// Alerts produced to a Kafka topic.
pub struct KafkaAlertOut {
    producer: BaseProducer<Deliveries>,
    /// Closed promptly when dropped.
    reader: ClosingConsumer,
    topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaAlertOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAlertOut")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

fn kafka(e: KafkaError) -> MonitorError {
    MonitorError::Delivery(e.to_string())
}

impl KafkaAlertOut {
    /// `client` carries the bootstrap servers and any librdkafka settings.
    pub fn new(client: &ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        let mut producer = client.clone();
        producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        let mut reader = client.clone();
        reader
            .set("group.id", "lifeledger-alerts-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10");
        let timeout = Duration::from_secs(30);
        Ok(KafkaAlertOut {
            producer: producer.create_with_context(Deliveries::default())?,
            reader: ClosingConsumer::new(
                reader.create()?,
                format!("the reader of {topic}"),
                timeout,
            ),
            topic: topic.to_owned(),
            timeout,
        })
    }

    fn partitions(&self) -> Result<Vec<i32>, MonitorError> {
        let metadata = self
            .reader
            .fetch_metadata(Some(&self.topic), self.timeout)
            .map_err(kafka)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(MonitorError::Delivery(format!(
                "alerts topic {:?} has no partitions (does it exist?)",
                self.topic
            )));
        }
        Ok(partitions)
    }
}

impl AlertOut for KafkaAlertOut {
    fn marks(&mut self) -> Result<Vec<(i32, i64)>, MonitorError> {
        self.partitions()?
            .into_iter()
            .map(|p| {
                self.reader
                    .fetch_watermarks(&self.topic, p, self.timeout)
                    .map(|(_, high)| (p, high))
                    .map_err(kafka)
            })
            .collect()
    }

    fn delivered_since(&mut self, marks: &[(i32, i64)]) -> Result<HashSet<String>, MonitorError> {
        let mut ids = HashSet::new();
        let mut list = TopicPartitionList::new();
        let mut ends = std::collections::BTreeMap::new();
        for (p, from) in marks {
            let (_, high) = self
                .reader
                .fetch_watermarks(&self.topic, *p, self.timeout)
                .map_err(kafka)?;
            if high > *from {
                list.add_partition_offset(&self.topic, *p, Offset::Offset(*from))
                    .map_err(kafka)?;
                ends.insert(*p, high);
            }
        }
        if ends.is_empty() {
            return Ok(ids);
        }
        self.reader.assign(&list).map_err(kafka)?;
        let began = Instant::now();
        let collect = |m: &rdkafka::message::BorrowedMessage<'_>, ids: &mut HashSet<String>| {
            if let Some(h) = m.headers() {
                for header in h.iter() {
                    if header.key == ALERT_ID_HEADER {
                        if let Some(v) = header.value {
                            ids.insert(String::from_utf8_lossy(v).into_owned());
                        }
                    }
                }
            }
        };
        while !ends.is_empty() {
            if began.elapsed() > self.timeout {
                return Err(MonitorError::Delivery(format!(
                    "could not read the alerts topic back within {:?}",
                    self.timeout
                )));
            }
            if let Some(Ok(m)) = self.reader.poll(Duration::from_millis(100)) {
                collect(&m, &mut ids);
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    ends.remove(&m.partition());
                }
            }
        }
        // Then read on until the topic is quiet: a broker may report a high
        // watermark short of its last record (tansu 0.6 counts a batch of
        // several records as one), and an alert must not be missed.
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_millis(1_000) {
            if let Some(Ok(m)) = self.reader.poll(Duration::from_millis(100)) {
                collect(&m, &mut ids);
                quiet = Instant::now();
            }
        }
        self.reader.unassign().map_err(kafka)?;
        Ok(ids)
    }

    fn send(&mut self, alerts: &[Alert]) -> Result<(), MonitorError> {
        for alert in alerts {
            let payload =
                serde_json::to_vec(alert).map_err(|e| MonitorError::Delivery(e.to_string()))?;
            let headers = OwnedHeaders::new().insert(Header {
                key: ALERT_ID_HEADER,
                value: Some(alert.alert_id.as_str()),
            });
            send_waiting(
                &self.producer,
                BaseRecord::to(&self.topic)
                    .key(alert.item_id.as_str())
                    .payload(&payload)
                    .headers(headers),
            )
            .map_err(kafka)?;
        }
        super::flush_promptly(&self.producer, self.timeout).map_err(kafka)?;
        let failed = self
            .producer
            .context()
            .failed
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default();
        if let Some(first) = failed.first() {
            return Err(MonitorError::Delivery(format!(
                "{} alerts were not acknowledged: {first}",
                failed.len()
            )));
        }
        Ok(())
    }
}
