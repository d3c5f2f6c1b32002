//! The ledger side of the consumer: inputs waiting for their durable write,
//! each partition's cursor, and the flush that makes a batch durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use lifeledger_ledger::checkpoint::PrivateKey;
use lifeledger_ledger::projection::Projection;
use lifeledger_ledger::{ChainBatch, Incoming, Ledger, Rejection, Source, StoreError};

use super::chain_name;
use super::metrics::Metrics;
use crate::monitor::{
    AlertOut, Clock, MonitorError, MonitorGauges, MonitorRunner, MonitorSettings,
};
use crate::schedule::CheckpointSchedule;

/// A rejected input to produce to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub chain: String,
    pub rejection: Rejection,
    pub key: Option<Vec<u8>>,
}

/// What a flush made durable.
#[derive(Debug, Default)]
pub struct Flushed {
    /// (topic, partition, next offset) to commit to Kafka.
    pub commits: Vec<(String, i32, i64)>,
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Default)]
struct PartitionBatch {
    inputs: Vec<Incoming>,
    /// Kafka record timestamps (ms since the epoch), for latency figures.
    timestamps: Vec<i64>,
    keys: HashMap<i64, Vec<u8>>,
    next_offset: i64,
}

/// The ledger, and what is waiting to be written to it.
#[derive(Debug)]
pub struct Sink {
    ledger: Ledger,
    projection: Option<Projection>,
    /// Per (topic, partition): the next offset not yet durable or pending.
    cursors: HashMap<(String, i32), i64>,
    pending: BTreeMap<(String, i32), PartitionBatch>,
    pending_count: usize,
    oldest: Option<Instant>,
    metrics: Arc<Metrics>,
    checkpoints: CheckpointSchedule,
    monitor: Option<MonitorRunner>,
}

impl Sink {
    pub fn new(
        mut ledger: Ledger,
        update_projection: bool,
        metrics: Arc<Metrics>,
        signer: Option<PrivateKey>,
        checkpoint_every: u64,
        checkpoint_interval: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let projection = if update_projection {
            let mut p = ledger.load_or_rebuild_projection(&mut |_| {})?;
            ledger.catch_up(&mut p, &mut |_| {})?;
            Some(p)
        } else {
            None
        };
        for head in ledger.heads() {
            metrics.set_head(&head.chain, head.next_seq);
        }
        let checkpoints =
            CheckpointSchedule::new(signer, checkpoint_every, checkpoint_interval, &ledger);
        Ok(Sink {
            ledger,
            projection,
            cursors: HashMap::new(),
            pending: BTreeMap::new(),
            pending_count: 0,
            oldest: None,
            metrics,
            checkpoints,
            monitor: None,
        })
    }

    /// Starts the deadline monitor on this sink's projection: it looks at
    /// every item now, then after every durable write and on
    /// [`Sink::tick_monitor`]. Needs the projection to be kept.
    pub fn start_monitor(
        &mut self,
        settings: MonitorSettings,
        clock: Box<dyn Clock>,
        out: Box<dyn AlertOut>,
    ) -> Result<Arc<MonitorGauges>, MonitorError> {
        let Some(projection) = self.projection.as_mut() else {
            return Err(MonitorError::Delivery(
                "the deadline monitor needs the projection (update_projection = true)".into(),
            ));
        };
        let gauges = Arc::new(MonitorGauges::default());
        self.metrics.set_monitor(Arc::clone(&gauges));
        let runner = MonitorRunner::start(
            &mut self.ledger,
            projection,
            settings,
            clock,
            out,
            Arc::clone(&gauges),
        )?;
        self.monitor = Some(runner);
        Ok(gauges)
    }

    /// Lets the monitor look at what changed and at deadlines the clock
    /// passed. An undeliverable alert stays in the outbox for the next
    /// tick; it never stops the ledger.
    pub fn tick_monitor(&mut self) -> Result<(), StoreError> {
        let (Some(monitor), Some(projection)) = (self.monitor.as_mut(), self.projection.as_mut())
        else {
            return Ok(());
        };
        match monitor.tick(&mut self.ledger, projection) {
            Ok(_) => Ok(()),
            Err(MonitorError::Store(e)) => Err(e),
            Err(e) => {
                tracing::warn!(
                    "deadline monitor: {e}; the alerts stay in the outbox and are retried"
                );
                Metrics::add(&self.metrics.alert_failures, 1);
                Ok(())
            }
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    pub fn into_ledger(self) -> Ledger {
        self.ledger
    }

    /// The offset a partition resumes from, as the ledger knows it.
    pub fn cursor(&mut self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        if let Some(c) = self.cursors.get(&(topic.to_owned(), partition)) {
            return Ok(Some(*c));
        }
        let stored = self.ledger.cursor(&chain_name(topic, partition))?;
        if let Some(c) = stored {
            self.cursors.insert((topic.to_owned(), partition), c);
        }
        Ok(stored)
    }

    /// Moves a partition's cursor forward (never back), after a seek.
    pub fn advance_cursor(&mut self, topic: &str, partition: i32, offset: i64) {
        let c = self
            .cursors
            .entry((topic.to_owned(), partition))
            .or_insert(offset);
        *c = (*c).max(offset);
    }

    /// Takes one message. Returns false when it lies below the partition's
    /// cursor: a redelivery of something already in the ledger (or pending).
    pub fn accept(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        Metrics::add(&self.metrics.consumed, 1);
        if let Some(cursor) = self.cursor(topic, partition)? {
            if offset < cursor {
                Metrics::add(&self.metrics.redelivered, 1);
                return Ok(false);
            }
        }
        let batch = self
            .pending
            .entry((topic.to_owned(), partition))
            .or_default();
        batch.inputs.push(Incoming {
            source: Source::Kafka {
                topic: topic.to_owned(),
                partition,
                offset,
            },
            raw: payload.unwrap_or_default().to_vec(),
        });
        if let Some(k) = key {
            batch.keys.insert(offset, k.to_vec());
        }
        if let Some(ts) = timestamp_ms {
            batch.timestamps.push(ts);
        }
        batch.next_offset = offset + 1;
        self.cursors
            .insert((topic.to_owned(), partition), offset + 1);
        self.pending_count += 1;
        self.oldest.get_or_insert_with(Instant::now);
        Ok(true)
    }

    pub fn pending(&self) -> usize {
        self.pending_count
    }

    /// How long the oldest pending input has waited.
    pub fn oldest_age(&self) -> Option<std::time::Duration> {
        self.oldest.map(|t| t.elapsed())
    }

    /// Pending inputs of these partitions only, or of all.
    fn take_pending(
        &mut self,
        only: Option<&[(String, i32)]>,
    ) -> Vec<((String, i32), PartitionBatch)> {
        let keys: Vec<(String, i32)> = match only {
            Some(list) => list
                .iter()
                .filter(|k| self.pending.contains_key(*k))
                .cloned()
                .collect(),
            None => self.pending.keys().cloned().collect(),
        };
        let taken: Vec<_> = keys
            .into_iter()
            .filter_map(|k| self.pending.remove(&k).map(|b| (k, b)))
            .collect();
        self.pending_count = self.pending.values().map(|b| b.inputs.len()).sum();
        if self.pending.is_empty() {
            self.oldest = None;
        }
        taken
    }

    /// Forgets the cursors of partitions this member no longer owns, so a
    /// later assignment reads them from the ledger and Kafka again.
    pub fn forget(&mut self, partitions: &[(String, i32)]) {
        for p in partitions {
            self.cursors.remove(p);
        }
    }

    /// Writes pending inputs (of `only` these partitions, or all) in one
    /// atomic, fsynced write with their cursors, then folds them into the
    /// projection and takes a checkpoint if one is due.
    pub fn flush(&mut self, only: Option<&[(String, i32)]>) -> Result<Flushed, StoreError> {
        let started = self.oldest;
        let taken = self.take_pending(only);
        if taken.is_empty() {
            return Ok(Flushed::default());
        }
        let mut keys = HashMap::new();
        let mut timestamps = Vec::new();
        let mut commits = Vec::new();
        let mut batches = Vec::new();
        for ((topic, partition), b) in taken {
            let chain = chain_name(&topic, partition);
            commits.push((topic, partition, b.next_offset));
            keys.insert(chain.clone(), b.keys);
            timestamps.extend(b.timestamps);
            batches.push(ChainBatch {
                chain,
                inputs: b.inputs,
                cursor: Some(b.next_offset),
            });
        }
        let chains: Vec<String> = batches.iter().map(|b| b.chain.clone()).collect();
        let reports = self.ledger.append_many(batches, Timestamp::now())?;
        let mut dead_letters = Vec::new();
        for (chain, report) in chains.iter().zip(reports) {
            Metrics::add(&self.metrics.appended, report.events);
            Metrics::add(&self.metrics.rejected, report.rejected);
            Metrics::add(&self.metrics.duplicates, report.duplicates);
            if let Some(head) = self.ledger.head(chain) {
                self.metrics.set_head(chain, head.next_seq);
            }
            for rejection in report.rejections {
                let key = match &rejection.source {
                    Source::Kafka { offset, .. } => {
                        keys.get(chain).and_then(|k| k.get(offset)).cloned()
                    }
                    Source::File { .. } => None,
                };
                dead_letters.push(DeadLetter {
                    chain: chain.clone(),
                    rejection,
                    key,
                });
            }
        }
        let now_ms = Timestamp::now().as_millisecond();
        self.metrics
            .observe_event_to_durable(timestamps.iter().map(|ts| (now_ms - ts) as f64 / 1000.0));
        Metrics::add(&self.metrics.batches, 1);
        if let Some(t) = started {
            self.metrics.observe_batch(t.elapsed());
        }
        if let Some(p) = self.projection.as_mut() {
            self.ledger.catch_up(p, &mut |_| {})?;
        }
        self.tick_monitor()?;
        self.maybe_checkpoint(false)?;
        Ok(Flushed {
            commits,
            dead_letters,
        })
    }

    /// Takes a checkpoint if one is due, or if `force`d and the ledger grew.
    pub fn maybe_checkpoint(&mut self, force: bool) -> Result<(), StoreError> {
        self.checkpoints.maybe(&mut self.ledger, force)
    }
}
