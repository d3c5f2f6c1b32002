//! The Kafka side: a group member that writes to the ledger exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use thiserror::Error;

use super::config::ConsumerConfig;
use super::metrics::Metrics;
use super::sink::{DeadLetter, Flushed, Sink};
use lifeledger_ledger::{Source, StoreError};

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConsumeError {
    #[error("Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the ledger failed during a rebalance: {0}")]
    Rebalance(String),
}

/// Produces rejected inputs to the dead-letter topic, reason and source in
/// headers. Runs after the ledger is durable: the topic never holds
/// something the ledger does not.
struct DeadLetterOut {
    producer: BaseProducer,
    topic: String,
}

impl DeadLetterOut {
    fn send(&self, letters: &[DeadLetter], metrics: &Metrics) {
        for letter in letters {
            let r = &letter.rejection;
            let (src_topic, src_partition, src_offset) = match &r.source {
                Source::Kafka {
                    topic,
                    partition,
                    offset,
                } => (topic.clone(), partition.to_string(), offset.to_string()),
                Source::File { path, line } => (path.clone(), String::new(), line.to_string()),
            };
            let seq = r.seq.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "lifeledger.class",
                    value: Some(r.class.name()),
                })
                .insert(Header {
                    key: "lifeledger.reason",
                    value: Some(r.reason.as_str()),
                })
                .insert(Header {
                    key: "lifeledger.source.topic",
                    value: Some(src_topic.as_str()),
                })
                .insert(Header {
                    key: "lifeledger.source.partition",
                    value: Some(src_partition.as_str()),
                })
                .insert(Header {
                    key: "lifeledger.source.offset",
                    value: Some(src_offset.as_str()),
                })
                .insert(Header {
                    key: "lifeledger.chain",
                    value: Some(letter.chain.as_str()),
                })
                .insert(Header {
                    key: "lifeledger.seq",
                    value: Some(seq.as_str()),
                });
            let mut record = BaseRecord::to(&self.topic)
                .payload(&r.raw[..])
                .headers(headers);
            if let Some(k) = &letter.key {
                record = record.key(&k[..]);
            }
            match super::send_waiting(&self.producer, record) {
                Ok(()) => Metrics::add(&metrics.dead_letters, 1),
                Err(e) => {
                    tracing::error!(
                        "could not produce a dead letter for {} seq {}: {e}",
                        letter.chain,
                        r.seq
                    );
                    Metrics::add(&metrics.dead_letter_failures, 1);
                }
            }
        }
        if !letters.is_empty() {
            if let Err(e) = self.producer.flush(Duration::from_secs(30)) {
                tracing::error!("dead letters were not all delivered: {e}");
                Metrics::add(&metrics.dead_letter_failures, 1);
            }
        }
    }
}

/// The consumer's context: it owns the ledger side, so that rebalances can
/// flush and seek from inside the client's callbacks.
pub struct LedgerContext {
    sink: Arc<Mutex<Sink>>,
    metrics: Arc<Metrics>,
    dead_letters: Option<DeadLetterOut>,
    failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for LedgerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerContext")
            .field(
                "dead_letters",
                &self.dead_letters.as_ref().map(|d| d.topic.clone()),
            )
            .finish_non_exhaustive()
    }
}

fn lock(sink: &Mutex<Sink>) -> MutexGuard<'_, Sink> {
    // A poisoned lock means a panic while holding it; the ledger itself is
    // protected by its own durability rules, so carry on with the data.
    sink.lock().unwrap_or_else(|e| e.into_inner())
}

impl LedgerContext {
    fn fail(&self, why: String) {
        tracing::error!("{why}");
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(why);
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Seeks each newly assigned partition to the later of the ledger's
    /// cursor and Kafka's committed offset.
    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .ok();
        let mut sink = lock(&self.sink);
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        for (topic, partition) in assigned {
            let ours = match sink.cursor(&topic, partition) {
                Ok(c) => c,
                Err(err) => {
                    self.fail(format!("reading the cursor of {topic}/{partition}: {err}"));
                    None
                }
            };
            let theirs = committed
                .as_ref()
                .and_then(|c| c.find_partition(&topic, partition))
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let start = match (ours, theirs) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if let Some(start) = start {
                sink.advance_cursor(&topic, partition, start);
                tracing::info!(
                    "assigned {topic}/{partition}: resuming at offset {start} (ledger cursor {ours:?}, Kafka committed {theirs:?})"
                );
            } else {
                tracing::info!(
                    "assigned {topic}/{partition}: no stored offset, starting per auto.offset.reset"
                );
            }
            // Seeking happens through the assignment itself.
            if let Some(start) = start {
                let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(start));
            }
        }
    }

    /// Makes what is pending for the revoked partitions durable and commits
    /// it before they go to another member.
    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let flushed = {
            let mut sink = lock(&self.sink);
            let flushed = sink.flush(Some(&partitions));
            sink.forget(&partitions);
            flushed
        };
        match flushed {
            Ok(flushed) => self.after_flush(consumer, flushed, CommitMode::Sync),
            Err(e) => self.fail(format!(
                "writing the ledger before giving up partitions: {e}"
            )),
        }
    }

    /// Commits what was made durable and sends its dead letters.
    fn after_flush(&self, consumer: &BaseConsumer<Self>, flushed: Flushed, mode: CommitMode) {
        if let Some(out) = &self.dead_letters {
            out.send(&flushed.dead_letters, &self.metrics);
        }
        if flushed.commits.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in &flushed.commits {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::warn!(
                    "cannot record offset {next} of {topic}/{partition} for commit: {e}"
                );
            }
        }
        if let Err(e) = consumer.commit(&tpl, mode) {
            // The ledger has it; Kafka's committed offset only lags, and the
            // ledger's cursor prevents a second append.
            tracing::warn!(
                "commit to Kafka failed (the ledger is durable, lag tools will lag): {e}"
            );
            Metrics::add(&self.metrics.kafka_errors, 1);
        }
    }
}

impl ClientContext for LedgerContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics.set_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for LedgerContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(consumer, tpl);
                if let Err(e) = consumer.assign(tpl) {
                    self.fail(format!("assigning partitions: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoke(consumer, tpl);
                if let Err(e) = consumer.unassign() {
                    tracing::warn!("unassigning partitions: {e}");
                }
            }
            other => {
                tracing::error!("rebalance error: {other:?}");
                let _ = consumer.unassign();
            }
        }
    }
}

/// What a run did, in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub consumed: u64,
    pub appended: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub redelivered: u64,
}

impl RunSummary {
    fn from(m: &Metrics) -> Self {
        RunSummary {
            consumed: m.consumed.load(Ordering::Relaxed),
            appended: m.appended.load(Ordering::Relaxed),
            rejected: m.rejected.load(Ordering::Relaxed),
            duplicates: m.duplicates.load(Ordering::Relaxed),
            redelivered: m.redelivered.load(Ordering::Relaxed),
        }
    }
}

/// The librdkafka settings of a consumer (and its dead-letter producer).
pub fn client_config(config: &ConsumerConfig, consumer: bool) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    if consumer {
        c.set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            // Wait at most 10 ms for a fetch to fill: batches are the
            // ledger's job, and the 500 ms default starves small topics.
            .set("fetch.wait.max.ms", "10");
    }
    for (k, v) in &config.librdkafka {
        // Producer-only or consumer-only keys would make the other client
        // warn; pass everything, librdkafka ignores what does not apply.
        c.set(k, v);
    }
    c
}

/// Consumes until `shutdown` is set, `stop` says so, or the consumer has
/// been idle for `exit_when_idle_ms`; then writes what is pending, commits
/// and returns the sink.
pub fn run(
    config: &ConsumerConfig,
    sink: Sink,
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
    stop: Option<&dyn Fn(&Metrics) -> bool>,
) -> Result<(RunSummary, Sink), ConsumeError> {
    let dead_letters = match &config.dead_letter_topic {
        Some(topic) => Some(DeadLetterOut {
            producer: client_config(config, false).create()?,
            topic: topic.clone(),
        }),
        None => None,
    };
    let sink = Arc::new(Mutex::new(sink));
    let context = LedgerContext {
        sink: Arc::clone(&sink),
        metrics: Arc::clone(&metrics),
        dead_letters,
        failure: Mutex::new(None),
    };
    let consumer: BaseConsumer<LedgerContext> =
        client_config(config, true).create_with_context(context)?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let max_latency = Duration::from_millis(config.max_latency_ms);
    let idle_limit = config.exit_when_idle_ms.map(Duration::from_millis);
    let mut last_message = Instant::now();
    let mut last_report = Instant::now();
    let monitor_interval = Duration::from_millis(config.monitor_interval_ms);
    let mut last_monitor = Instant::now();
    let flush =
        |mode: CommitMode, consumer: &BaseConsumer<LedgerContext>| -> Result<(), ConsumeError> {
            let flushed = lock(&sink).flush(None)?;
            consumer.context().after_flush(consumer, flushed, mode);
            Ok(())
        };
    loop {
        if shutdown.load(Ordering::Relaxed) {
            tracing::info!("shutting down: writing what is pending");
            break;
        }
        if let Some(why) = consumer.context().failure() {
            return Err(ConsumeError::Rebalance(why));
        }
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(message)) => {
                last_message = Instant::now();
                let accepted = lock(&sink).accept(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.timestamp().to_millis(),
                    message.key(),
                    message.payload(),
                );
                accepted?;
            }
            Some(Err(e)) => {
                tracing::warn!("Kafka: {e}");
                Metrics::add(&metrics.kafka_errors, 1);
            }
            None => {}
        }
        metrics.polled();
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let s = RunSummary::from(&metrics);
            tracing::info!(
                "{} messages consumed: {} appended, {} rejected, {} duplicates, {} redeliveries skipped",
                s.consumed,
                s.appended,
                s.rejected,
                s.duplicates,
                s.redelivered
            );
        }
        let (pending, age) = {
            let s = lock(&sink);
            (s.pending(), s.oldest_age())
        };
        if pending >= config.batch_size || age.is_some_and(|a| a >= max_latency) {
            flush(CommitMode::Async, &consumer)?;
        }
        if last_monitor.elapsed() >= monitor_interval {
            last_monitor = Instant::now();
            lock(&sink).tick_monitor()?;
        }
        if stop.is_some_and(|f| f(&metrics)) {
            break;
        }
        if idle_limit.is_some_and(|limit| last_message.elapsed() >= limit) && pending == 0 {
            tracing::info!("idle for {:?}: stopping", idle_limit);
            break;
        }
    }
    flush(CommitMode::Sync, &consumer)?;
    lock(&sink).maybe_checkpoint(true)?;
    consumer.unsubscribe();
    drop(consumer);
    let summary = RunSummary::from(&metrics);
    let sink = Arc::try_unwrap(sink)
        .map_err(|_| {
            ConsumeError::Rebalance("the ledger is still shared after the consumer closed".into())
        })?
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    Ok((summary, sink))
}
