//! The streaming consumer: Kafka to ledger, exactly once.
//!
//! * [`config`]: the consumer's settings (TOML file, environment, flags).
//! * [`sink`]: the ledger side: pending inputs per partition, cursors, the
//!   durable flush (one atomic write for every partition's entries and
//!   cursors), dead letters.
//! * [`consumer`]: the Kafka side: the group member, rebalances (seek to
//!   the ledger's cursors on assignment, flush and commit on revocation),
//!   the poll loop, commits after durability, the dead-letter producer.
//! * [`metrics`]: counters and gauges, the Prometheus and health endpoint.
//! * [`demo`]: an in-process MockCluster, a synthetic stream, the real
//!   consumer over it.
//!
//! Exactly once into one ledger: each partition's chain stores, in the same
//! atomic write as its entries, the next offset to read. On assignment the
//! consumer seeks there; any message below it (a redelivery) is skipped;
//! Kafka offsets are committed only once the ledger is durable.

pub mod alerts;
pub mod archiver;
pub mod config;
pub mod consumer;
pub mod custody;
pub mod demo;
pub mod gaps;
pub mod handover;
pub mod metrics;
pub mod offsets;
pub mod projector;
pub mod replay;
pub mod sink;

/// The chain of a topic-partition.
pub fn chain_name(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}")
}

/// A consumer that reads by assignment only (no group membership, nothing
/// committed), and the partitions of `topic` as the broker lists them
/// (none: no such topic). `purpose` names its throwaway group id.
pub fn topic_reader(
    client: &rdkafka::ClientConfig,
    purpose: &str,
    topic: &str,
) -> Result<(ClosingConsumer, Vec<i32>), rdkafka::error::KafkaError> {
    use rdkafka::consumer::Consumer;
    let mut client = client.clone();
    client
        .set(
            "group.id",
            format!("lifeledger-{purpose}-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "10");
    let consumer = ClosingConsumer::new(
        client.create()?,
        format!("the {purpose} reader of {topic}"),
        std::time::Duration::from_secs(10),
    );
    let metadata = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    Ok((consumer, partitions))
}

/// The topic and partition of a chain named by [`chain_name`].
pub fn parse_chain_name(chain: &str) -> Option<(String, i32)> {
    let rest = chain.strip_prefix("kafka:")?;
    let (topic, partition) = rest.rsplit_once(':')?;
    Some((topic.to_owned(), partition.parse().ok()?))
}

/// Waits until every message the producer holds is delivered (or failed:
/// its delivery report served), for at most `timeout`. `Producer::flush`
/// does the same but serves reports in rounds of up to 100 ms
/// (rust-rdkafka 0.39 `BaseProducer::flush`), so every flush of a message
/// in flight took at least 100 ms: most of a write's time at batches of
/// thousands. Checked every 100 µs: a broker acknowledges a record in a
/// fraction of a millisecond here, and a write waits for one (its hold).
pub fn flush_promptly<C>(
    producer: &rdkafka::producer::BaseProducer<C>,
    timeout: std::time::Duration,
) -> Result<(), rdkafka::error::KafkaError>
where
    C: rdkafka::producer::ProducerContext,
{
    use rdkafka::producer::Producer;
    let began = std::time::Instant::now();
    loop {
        producer.poll(std::time::Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        if began.elapsed() >= timeout {
            return Err(rdkafka::error::KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// Closes a consumer of a group (leaves the group, serves what is left of
/// its callbacks), checking every millisecond, for at most `timeout`.
/// rust-rdkafka 0.39 closes a consumer when it is dropped but waits for
/// the close in polls of 100 ms (`BaseConsumer::drop`), and the close is
/// not an event that ends a poll: every drop took at least 100 ms, a
/// tenth of a second at each stop for each consumer. Closed here, the
/// drop finds the consumer closed and does not wait.
pub fn close_promptly<C>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    timeout: std::time::Duration,
) -> Result<(), rdkafka::error::KafkaError>
where
    C: rdkafka::consumer::ConsumerContext,
{
    consumer.close_queue()?;
    let began = std::time::Instant::now();
    while !consumer.closed() {
        if began.elapsed() >= timeout {
            return Err(rdkafka::error::KafkaError::ConsumerQueueClose(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        // Serves the close's callbacks (a rebalance's revoke among them).
        let _ = consumer.poll(std::time::Duration::from_millis(1));
    }
    Ok(())
}

/// A consumer that is closed promptly when dropped (see
/// [`close_promptly`]); a close that fails or times out is logged with
/// what the consumer is for.
pub struct ClosingConsumer {
    consumer: rdkafka::consumer::BaseConsumer,
    what: String,
    timeout: std::time::Duration,
}

impl ClosingConsumer {
    /// `what` names the consumer in a failed close's warning.
    pub fn new(
        consumer: rdkafka::consumer::BaseConsumer,
        what: impl Into<String>,
        timeout: std::time::Duration,
    ) -> Self {
        ClosingConsumer {
            consumer,
            what: what.into(),
            timeout,
        }
    }
}

impl std::fmt::Debug for ClosingConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClosingConsumer")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for ClosingConsumer {
    type Target = rdkafka::consumer::BaseConsumer;

    fn deref(&self) -> &Self::Target {
        &self.consumer
    }
}

impl Drop for ClosingConsumer {
    fn drop(&mut self) {
        if let Err(e) = close_promptly(&self.consumer, self.timeout) {
            tracing::warn!("closing {}: {e}", self.what);
        }
    }
}

/// Sends a record, waiting (while serving delivery reports) whenever the
/// producer's queue is full; any other error is returned.
pub fn send_waiting<K, P, C>(
    producer: &rdkafka::producer::BaseProducer<C>,
    record: rdkafka::producer::BaseRecord<'_, K, P>,
) -> Result<(), rdkafka::error::KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
    C: rdkafka::producer::ProducerContext<DeliveryOpaque = ()>,
{
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(std::time::Duration::from_millis(10));
                record = back;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
