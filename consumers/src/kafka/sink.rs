//! The ledger side of the consumer: inputs waiting for their durable write,
//! each partition's cursor and custody, the offset continuity check, and
//! the two-step write a group member makes: stage (durable, in no chain),
//! then, once Kafka holds the commit, append.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use lifeledger_ledger::archive::{Archive, ArchiveError, Continuation, continue_chain};
use lifeledger_ledger::checkpoint::PrivateKey;
use lifeledger_ledger::projection::Projection;
use lifeledger_ledger::{
    AppendReport, ChainBatch, Incoming, Ledger, Rejection, Source, StagedBatch, StoreError,
};

use super::chain_name;
use super::gaps::{self, Rewind, Step};
use super::handover::BatchToken;
use super::metrics::Metrics;
use super::projector::{Parts, Projector, survive_undelivered};
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

/// What a flush made durable: the dead letters to produce.
#[derive(Debug, Default)]
pub struct Flushed {
    pub dead_letters: Vec<DeadLetter>,
}

/// A batch staged for one partition, whose offset commit is to be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedCommit {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub next_offset: i64,
    pub token: String,
}

/// What the sink says of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Pending for the next write.
    Taken,
    /// Below the partition's cursor: already recorded or pending here.
    Redelivered,
    /// Of a partition this member does not hold (fetched before a
    /// revocation): dropped, its new owner reads it.
    NotAssigned,
    /// Past the next expected offset: read the partition again from here.
    SeekTo(i64),
}

/// Kafka keys and timestamps of a staged batch, for its dead letters and
/// latency figures once it is appended.
#[derive(Debug, Default)]
struct InFlight {
    keys: HashMap<i64, Vec<u8>>,
    timestamps: Vec<i64>,
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
    /// Backfill mode: who declares each append an import of history.
    backfill: Option<String>,
    projection: Option<Projection>,
    /// Per (topic, partition): the next offset not yet durable or pending.
    cursors: HashMap<(String, i32), i64>,
    pending: BTreeMap<(String, i32), PartitionBatch>,
    pending_count: usize,
    oldest: Option<Instant>,
    metrics: Arc<Metrics>,
    checkpoints: CheckpointSchedule,
    monitor: Option<MonitorRunner>,
    /// The partitions this member holds; `None` when it reads by
    /// assignment outside a group (replay), where every message counts.
    assigned: Option<HashSet<(String, i32)>>,
    /// Per held partition: the offset of this member's claim on it in the
    /// custody topic (see `handover`), named by the tokens of the batches
    /// staged under it.
    custody: HashMap<(String, i32), i64>,
    rewinds: HashMap<(String, i32), Rewind>,
    /// Checks offset continuity outside a group too (a replay, which
    /// reads by assignment: see [`Sink::check_gaps_from`]).
    checks_gaps: bool,
    /// The origin of the clock that times a rewind's confirmation of an
    /// absence.
    rewind_clock: Instant,
    /// With an archive: chains another ledger extended there.
    archive_conflicts: Option<super::archiver::Conflicts>,
    archive_flush: Option<super::archiver::ArchiveFlush>,
    in_flight: HashMap<String, InFlight>,
    last_message: HashMap<(String, i32), Instant>,
    /// When the oldest input of the staged batches arrived.
    oldest_staged: Option<Instant>,
    /// While it runs, the thread that owns the projection store, the
    /// projection and the monitor (`projection` and `monitor` are then
    /// `None`): see [`Projector`].
    projector: Option<Projector>,
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
            let mut p = ledger.open_or_rebuild_projection(&mut |_| {})?;
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
            backfill: None,
            projection,
            cursors: HashMap::new(),
            pending: BTreeMap::new(),
            pending_count: 0,
            oldest: None,
            metrics,
            checkpoints,
            monitor: None,
            assigned: None,
            custody: HashMap::new(),
            rewinds: HashMap::new(),
            checks_gaps: false,
            archive_conflicts: None,
            archive_flush: None,
            in_flight: HashMap::new(),
            last_message: HashMap::new(),
            oldest_staged: None,
            projector: None,
            rewind_clock: Instant::now(),
        })
    }

    /// Takes only messages of partitions handed to it with
    /// [`Sink::assign`] (a group member), and checks offset continuity.
    /// In backfill mode (`Some(who)`), every append is declared an import
    /// of history by `who` right after it lands. A crash in between leaves
    /// those entries undeclared: counted as live, which over-reports and
    /// hides nothing.
    pub fn declaring_backfill(mut self, declared_by: Option<String>) -> Self {
        self.backfill = declared_by;
        self
    }

    pub fn for_group(mut self) -> Self {
        self.assigned = Some(HashSet::new());
        self
    }

    /// A partition handed to this member, resuming at `start` (if known),
    /// under the claim at `claim` in the custody topic.
    pub fn assign(&mut self, topic: &str, partition: i32, start: Option<i64>, claim: i64) {
        let key = (topic.to_owned(), partition);
        if let Some(start) = start {
            self.advance_cursor(topic, partition, start);
        }
        self.custody.insert(key.clone(), claim);
        self.rewinds.remove(&key);
        self.last_message.insert(key.clone(), Instant::now());
        if let Some(a) = self.assigned.as_mut() {
            a.insert(key);
        }
    }

    /// Checks offset continuity on a partition read outside a group (a
    /// replay), from `start` on: a message past the next expected offset
    /// is answered with [`Accepted::SeekTo`], as a group member's is,
    /// never taken silently.
    pub fn check_gaps_from(&mut self, topic: &str, partition: i32, start: i64) {
        self.checks_gaps = true;
        self.advance_cursor(topic, partition, start);
    }

    /// How many partitions this member holds.
    pub fn held(&self) -> usize {
        self.assigned.as_ref().map_or(0, HashSet::len)
    }

    /// Whether some partition is being read again after a gap.
    pub fn rewinding(&self) -> bool {
        !self.rewinds.is_empty()
    }

    pub fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.assigned
            .as_ref()
            .is_none_or(|a| a.contains(&(topic.to_owned(), partition)))
    }

    /// The partitions held, with their cursors (next offset expected).
    pub fn assigned_cursors(&self) -> Vec<(String, i32, Option<i64>, std::time::Duration)> {
        let Some(a) = &self.assigned else {
            return Vec::new();
        };
        a.iter()
            .map(|(t, p)| {
                let key = (t.clone(), *p);
                (
                    t.clone(),
                    *p,
                    self.cursors.get(&key).copied(),
                    self.last_message
                        .get(&key)
                        .map_or(std::time::Duration::MAX, |i| i.elapsed()),
                )
            })
            .collect()
    }

    /// Nothing arrived on a partition for a while: if the broker holds
    /// offsets at or past its cursor, returns where to read again from.
    pub fn check_stalled(
        &mut self,
        topic: &str,
        partition: i32,
        high_watermark: i64,
    ) -> Option<i64> {
        let key = (topic.to_owned(), partition);
        let cursor = *self.cursors.get(&key)?;
        let mut rewind = self.rewinds.remove(&key);
        let target = gaps::behind(&mut rewind, cursor, high_watermark);
        if let Some(r) = rewind {
            self.rewinds.insert(key.clone(), r);
        }
        if target.is_some() {
            Metrics::add(&self.metrics.rewinds, 1);
            self.last_message.insert(key, Instant::now());
        }
        target
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
        self.bring_home()?;
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
        if let Some(projector) = &self.projector {
            return match projector.tick() {
                Ok(()) => Ok(()),
                Err(_) => self.bring_home(),
            };
        }
        let (Some(monitor), Some(projection)) = (self.monitor.as_mut(), self.projection.as_mut())
        else {
            return Ok(());
        };
        let ticked = monitor.tick_beside(&self.ledger, projection);
        survive_undelivered(ticked, &self.metrics)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    /// The ledger, whole again (the projection thread, if any, finished
    /// first; a failure of it is logged, as the projection is derived).
    pub fn into_ledger(mut self) -> Ledger {
        if let Err(e) = self.bring_home() {
            tracing::warn!("the projection thread stopped on a failure: {e}");
        }
        self.ledger
    }

    /// Hands each append's entries to a thread of their own from now on
    /// (see [`Projector`]): the projection and the monitor, if kept, are
    /// taken there.
    fn send_away(&mut self) -> Result<(), StoreError> {
        if self.projector.is_some() {
            return Ok(());
        }
        let Some(projection) = self.projection.take() else {
            return Ok(());
        };
        let store = match self.ledger.detach_projection_store() {
            Ok(store) => store,
            Err(e) => {
                self.projection = Some(projection);
                return Err(e);
            }
        };
        let parts = Parts {
            store,
            projection,
            monitor: self.monitor.take(),
        };
        self.projector = Some(Projector::start(parts, &self.metrics)?);
        Ok(())
    }

    /// Finishes the projection thread, if one runs: everything handed to
    /// it is done, and the projection store, the projection and the
    /// monitor are back here. Returns the failure that stopped it, if any.
    pub fn bring_home(&mut self) -> Result<(), StoreError> {
        let Some(projector) = self.projector.take() else {
            return Ok(());
        };
        let (parts, outcome) = projector.finish()?;
        self.ledger.attach_projection_store(parts.store);
        self.projection = Some(parts.projection);
        self.monitor = parts.monitor;
        outcome
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

    /// Takes one message, unless it lies below the partition's cursor (a
    /// redelivery of something recorded or pending), belongs to a
    /// partition this member no longer holds, or (for a group member, or
    /// a partition under [`Sink::check_gaps_from`]) lies past the next
    /// expected offset: then the partition must be read again (see
    /// [`gaps`]) and nothing is taken.
    pub fn accept(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<Accepted, StoreError> {
        Metrics::add(&self.metrics.consumed, 1);
        if !self.is_assigned(topic, partition) {
            Metrics::add(&self.metrics.not_assigned, 1);
            return Ok(Accepted::NotAssigned);
        }
        let cursor = self.cursor(topic, partition)?;
        let part = (topic.to_owned(), partition);
        if self.assigned.is_some() || self.checks_gaps {
            self.last_message.insert(part.clone(), Instant::now());
            let mut rewind = self.rewinds.remove(&part);
            let now_ms = u64::try_from(self.rewind_clock.elapsed().as_millis()).unwrap_or(u64::MAX);
            let step = gaps::step(&mut rewind, cursor, offset, now_ms);
            if let Some(r) = rewind {
                self.rewinds.insert(part.clone(), r);
            }
            match step {
                Step::Take => {}
                Step::TakeHealed { missing_from } => {
                    Metrics::add(&self.metrics.gaps_healed, 1);
                    tracing::info!(
                        "{topic}/{partition}: offset {missing_from} arrived after reading again"
                    );
                }
                Step::TakeAfterAbsent { from, to } => {
                    Metrics::add(&self.metrics.offsets_absent, (to - from) as u64);
                    tracing::warn!(
                        "{topic}/{partition}: the broker holds no record at offsets {from}..{} (compacted, transaction markers or deleted): continuing at {to}",
                        to - 1
                    );
                }
                Step::Skip => {
                    Metrics::add(&self.metrics.redelivered, 1);
                    return Ok(Accepted::Redelivered);
                }
                Step::ConfirmAbsence {
                    from,
                    to,
                    target,
                    first,
                } => {
                    Metrics::add(&self.metrics.rewinds, 1);
                    if first {
                        tracing::info!(
                            "{topic}/{partition}: the broker answered as if it held no record at offsets {from}..{}: asking again for {} ms before continuing at {to}",
                            to - 1,
                            gaps::CONFIRM_ABSENCE_MS
                        );
                    }
                    return Ok(Accepted::SeekTo(target));
                }
                Step::SeekTo(target) => {
                    Metrics::add(&self.metrics.rewinds, 1);
                    tracing::info!(
                        "{topic}/{partition}: offset {offset} arrived while {} was expected: reading again from {target}",
                        cursor.unwrap_or_default()
                    );
                    return Ok(Accepted::SeekTo(target));
                }
            }
        } else if cursor.is_some_and(|c| offset < c) {
            Metrics::add(&self.metrics.redelivered, 1);
            return Ok(Accepted::Redelivered);
        }
        let batch = self.pending.entry(part.clone()).or_default();
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
        self.cursors.insert(part, offset + 1);
        self.pending_count += 1;
        self.oldest.get_or_insert_with(Instant::now);
        Ok(Accepted::Taken)
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

    /// Forgets the partitions this member no longer owns (cursor,
    /// custody, rewind), so a later assignment reads them from the ledger
    /// and Kafka again. Their pending inputs must have been written.
    pub fn forget(&mut self, partitions: &[(String, i32)]) {
        for p in partitions {
            self.cursors.remove(p);
            self.custody.remove(p);
            self.rewinds.remove(p);
            self.last_message.remove(p);
            if let Some(a) = self.assigned.as_mut() {
                a.remove(p);
            }
        }
    }

    /// Stages the pending inputs (of `only` these partitions, or all):
    /// durable, one atomic write and fsync, but in no chain until
    /// [`Sink::append_staged`]. Returns the commits to make.
    pub fn stage(
        &mut self,
        only: Option<&[(String, i32)]>,
    ) -> Result<Vec<StagedCommit>, StoreError> {
        let oldest = self.oldest;
        let taken = self.take_pending(only);
        if !taken.is_empty() && self.oldest_staged.is_none() {
            self.oldest_staged = oldest;
        }
        let mut staged = Vec::with_capacity(taken.len());
        let mut commits = Vec::with_capacity(taken.len());
        for ((topic, partition), b) in taken {
            let Some(first_offset) = b.inputs.first().and_then(|i| match i.source {
                Source::Kafka { offset, .. } => Some(offset),
                Source::File { .. } => None,
            }) else {
                continue;
            };
            let Some(claim) = self.custody.get(&(topic.clone(), partition)).copied() else {
                // Not held (a message of a partition given up slipped in):
                // its next owner reads it.
                continue;
            };
            let token = BatchToken {
                claim,
                nonce: nonce(),
            }
            .encode();
            let chain = chain_name(&topic, partition);
            self.in_flight.insert(
                chain.clone(),
                InFlight {
                    keys: b.keys,
                    timestamps: b.timestamps,
                },
            );
            staged.push(StagedBatch {
                chain,
                token: token.clone(),
                first_offset,
                next_offset: b.next_offset,
                inputs: b.inputs,
            });
            commits.push(StagedCommit {
                topic,
                partition,
                first_offset,
                next_offset: b.next_offset,
                token,
            });
        }
        self.ledger.stage(staged)?;
        Ok(commits)
    }

    /// The batches a previous run left staged (it stopped between staging
    /// and appending), as commits whose fate is to be looked up.
    pub fn left_staged(&self) -> Result<Vec<StagedCommit>, StoreError> {
        let mut out = Vec::new();
        for b in self.ledger.staged_batches()? {
            let Some((topic, partition)) = super::parse_chain_name(&b.chain) else {
                continue;
            };
            out.push(StagedCommit {
                topic,
                partition,
                first_offset: b.first_offset,
                next_offset: b.next_offset,
                token: b.token,
            });
        }
        Ok(out)
    }

    /// The batch staged for one partition, if any.
    pub fn staged_commit(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<StagedCommit>, StoreError> {
        Ok(self
            .ledger
            .staged(&chain_name(topic, partition))?
            .map(|b| StagedCommit {
                topic: topic.to_owned(),
                partition,
                first_offset: b.first_offset,
                next_offset: b.next_offset,
                token: b.token,
            }))
    }

    /// Appends the staged batches of these partitions (Kafka holds their
    /// commits), then folds them into the projection and takes a
    /// checkpoint if one is due.
    pub fn append_staged(&mut self, partitions: &[(String, i32)]) -> Result<Flushed, StoreError> {
        if partitions.is_empty() {
            return Ok(Flushed::default());
        }
        let started = self.oldest_staged.take();
        let chains: Vec<String> = partitions.iter().map(|(t, p)| chain_name(t, *p)).collect();
        let appending = Instant::now();
        let reports = self.ledger.append_staged(&chains, Timestamp::now())?;
        let appended = appending.elapsed();
        if let Some(by) = self.backfill.clone() {
            for (chain, report) in &reports {
                if report.appended == 0 {
                    continue;
                }
                let first = report.next_seq - report.appended;
                self.ledger.declare_import(
                    chain,
                    first,
                    report.next_seq - 1,
                    &by,
                    &format!("{chain} (consumer backfill)"),
                    Timestamp::now(),
                )?;
            }
        }
        let mut flushed = Flushed::default();
        let mut timestamps = Vec::new();
        for (chain, report) in reports {
            let in_flight = self.in_flight.remove(&chain).unwrap_or_default();
            timestamps.extend(in_flight.timestamps.iter().copied());
            self.account(&chain, report, &in_flight.keys, &mut flushed.dead_letters);
        }
        for chain in &chains {
            self.in_flight.remove(chain);
        }
        let after = Instant::now();
        self.after_write(&timestamps, started)?;
        // Where a write's time goes: the append (intake, evidence, index,
        // fsync) and what follows it (projection, monitor, checkpoint).
        tracing::debug!(
            "appended {} chains in {appended:.1?}; projection, monitor and checkpoint {:.1?}",
            chains.len(),
            after.elapsed()
        );
        Ok(flushed)
    }

    /// Drops the staged batches of these partitions: their commits did not
    /// land before the partitions changed hands, so their owners read them
    /// again. This member no longer holds them (or has not resumed them
    /// yet), so no cursor moves.
    pub fn discard_staged(&mut self, partitions: &[(String, i32)]) -> Result<(), StoreError> {
        let chains: Vec<String> = partitions.iter().map(|(t, p)| chain_name(t, *p)).collect();
        for chain in &chains {
            self.in_flight.remove(chain);
        }
        self.ledger.discard_staged(&chains)
    }

    /// Counts one chain's append and collects its dead letters.
    fn account(
        &mut self,
        chain: &str,
        report: AppendReport,
        keys: &HashMap<i64, Vec<u8>>,
        dead_letters: &mut Vec<DeadLetter>,
    ) {
        Metrics::add(&self.metrics.appended, report.events);
        Metrics::add(&self.metrics.rejected, report.rejected);
        Metrics::add(&self.metrics.duplicates, report.duplicates);
        if let Some(head) = self.ledger.head(chain) {
            self.metrics.set_head(chain, head.next_seq);
        }
        for rejection in report.rejections {
            let key = match &rejection.source {
                Source::Kafka { offset, .. } => keys.get(offset).cloned(),
                Source::File { .. } => None,
            };
            dead_letters.push(DeadLetter {
                chain: chain.to_owned(),
                rejection,
                key,
            });
        }
    }

    /// After entries reached the chains: latency figures, the projection,
    /// a checkpoint if due. The monitor is not ticked here but on its own
    /// clock (`monitor_interval_ms`, and once more when the consumer
    /// stops): the items touched meanwhile accumulate, each judged once
    /// per tick rather than once per write, and a tick's fixed costs (its
    /// saves, a delivery round) are paid four times a second, not per
    /// write.
    fn after_write(
        &mut self,
        timestamps: &[i64],
        started: Option<Instant>,
    ) -> Result<(), StoreError> {
        let now_ms = Timestamp::now().as_millisecond();
        self.metrics
            .observe_event_to_durable(timestamps.iter().map(|ts| (now_ms - ts) as f64 / 1000.0));
        Metrics::add(&self.metrics.batches, 1);
        if let Some(t) = started {
            self.metrics.observe_batch(t.elapsed());
        }
        self.send_away()?;
        if let Some(projector) = &self.projector {
            let appended = self.ledger.take_appended();
            if projector.fold(appended).is_err() {
                self.bring_home()?;
            }
        }
        self.maybe_checkpoint(false)
    }

    /// Saves what the projection folded and has not saved yet (before the
    /// consumer stops; a crash instead only makes the next start fold the
    /// same entries again).
    pub fn save_projection(&mut self) -> Result<(), StoreError> {
        if let Some(projector) = &self.projector {
            if projector.save_and_settle().is_err() {
                self.bring_home()?;
            }
            return Ok(());
        }
        if let Some(p) = self.projection.as_mut() {
            if p.unsaved() > 0 {
                self.ledger.save_projection(p)?;
            }
        }
        Ok(())
    }

    /// Writes pending inputs (of `only` these partitions, or all) straight
    /// into their chains, in one atomic, fsynced write with their cursors,
    /// then folds them into the projection and takes a checkpoint if one
    /// is due. For reading outside a group (replay), where no offset
    /// commit has to agree with the ledger; a group member uses
    /// [`Sink::stage`] and [`Sink::append_staged`].
    pub fn flush(&mut self, only: Option<&[(String, i32)]>) -> Result<Flushed, StoreError> {
        let started = self.oldest;
        let taken = self.take_pending(only);
        if taken.is_empty() {
            return Ok(Flushed::default());
        }
        let mut keys = HashMap::new();
        let mut timestamps = Vec::new();
        let mut batches = Vec::new();
        for ((topic, partition), b) in taken {
            let chain = chain_name(&topic, partition);
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
        let none = HashMap::new();
        for (chain, report) in chains.iter().zip(reports) {
            let chain_keys = keys.get(chain).unwrap_or(&none);
            self.account(chain, report, chain_keys, &mut dead_letters);
        }
        self.after_write(&timestamps, started)?;
        Ok(Flushed { dead_letters })
    }

    /// Seals the open segments of these chains (all: `None`) so that the
    /// archive can take them.
    pub fn seal_open_segments(&mut self, chains: Option<&[String]>) -> Result<(), StoreError> {
        self.ledger.seal_open_segments(chains)
    }

    /// Checkpoints from now on cover only what the archive holds; chains
    /// the archive holds another ledger's continuation of are not read.
    pub fn within_archive(
        &mut self,
        archived: crate::schedule::ArchivedHeads,
        conflicts: super::archiver::Conflicts,
        flush: super::archiver::ArchiveFlush,
    ) {
        self.checkpoints.within_archive(archived);
        self.archive_conflicts = Some(conflicts);
        self.archive_flush = Some(flush);
    }

    /// With an archive: uploads what is sealed now (waiting up to
    /// `timeout`); true if it succeeded or there is no archive.
    pub fn flush_archive(&self, timeout: std::time::Duration) -> bool {
        self.archive_flush.as_ref().is_none_or(|f| f.flush(timeout))
    }

    /// Brings a partition's chain up to the archive's (sealing its open
    /// segment first): see [`continue_chain`]. A chain that diverged from
    /// the archive's (another member continued it first) is set aside
    /// and the archive's adopted in its place; the first outcome is
    /// returned with what was done.
    pub fn continue_from_archive(
        &mut self,
        archive: &Archive,
        chain: &str,
    ) -> Result<(Continuation, Option<Continuation>), ArchiveError> {
        // The chain may be replaced: the projection is folded here until
        // the next write hands it to its thread again.
        self.bring_home()?;
        self.ledger.seal_open_segments(Some(&[chain.to_owned()]))?;
        let first = continue_chain(&mut self.ledger, archive, chain)?;
        if !matches!(first, Continuation::Diverged { .. }) {
            return Ok((first, None));
        }
        let kept = self.ledger.set_aside_chain(chain)?;
        tracing::warn!(
            "chain {chain}: this ledger's copy differs from the archive's; set aside in {}",
            kept.display()
        );
        if let Some(p) = self.projection.as_mut() {
            *p = self.ledger.open_or_rebuild_projection(&mut |_| {})?;
            // The monitor reads what each fold touched: a projection read
            // anew must keep recording it, or the monitor stops seeing
            // changes until its next full sweep.
            if self.monitor.is_some() {
                p.track_touched();
            }
        }
        if let Some(monitor) = self.monitor.as_mut() {
            // What the monitor judged the set-aside history through
            // says nothing about the adopted one.
            monitor.sweep_next()?;
        }
        let then = continue_chain(&mut self.ledger, archive, chain)?;
        Ok((first, Some(then)))
    }

    /// Drops the pending inputs of these partitions (they are read again).
    pub fn drop_pending(&mut self, partitions: &[(String, i32)]) {
        let _ = self.take_pending(Some(partitions));
    }

    /// The claim a held partition was taken under.
    pub fn custody_of(&self, topic: &str, partition: i32) -> Option<i64> {
        self.custody.get(&(topic.to_owned(), partition)).copied()
    }

    /// Held partitions whose chain the archive holds another ledger's
    /// continuation of.
    pub fn conflicted(&self) -> Vec<(String, i32)> {
        let Some(conflicts) = self.archive_conflicts.as_ref().and_then(|c| c.lock().ok()) else {
            return Vec::new();
        };
        self.assigned_cursors()
            .into_iter()
            .filter(|(t, p, _, _)| conflicts.contains(&chain_name(t, *p)))
            .map(|(t, p, _, _)| (t, p))
            .collect()
    }

    /// Takes a checkpoint if one is due, or if `force`d and the ledger grew.
    pub fn maybe_checkpoint(&mut self, force: bool) -> Result<(), StoreError> {
        self.checkpoints.maybe(&mut self.ledger, force)
    }
}

/// A random nonce for a batch token: 16 bytes, hex.
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No randomness: time and process still make a token this ledger
        // never used before.
        let now = Timestamp::now().as_nanosecond();
        bytes[..8].copy_from_slice(&(now as u64).to_be_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    fn event(offset: i64) -> Vec<u8> {
        format!(
            r#"{{"schema_version":1,"event_id":"e{offset}","event_time":"2026-03-01T10:00:00Z","account":{{"app_id":"1250000001","uin":"100000000001"}},"item_id":"item-{offset}","category":"asset_management","kind":{{"type":"stored","store":"mongodb"}}}}"#
        )
        .into_bytes()
    }

    /// A replay's sink: reads by assignment, outside a group.
    fn replay_sink(dir: &std::path::Path) -> Sink {
        let ledger = Ledger::open(dir, lifeledger_ledger::LedgerOptions::default()).unwrap();
        let metrics = Arc::new(Metrics::default());
        Sink::new(
            ledger,
            false,
            metrics,
            None,
            u64::MAX,
            std::time::Duration::MAX,
        )
        .unwrap()
    }

    fn accept(sink: &mut Sink, offset: i64) -> Accepted {
        let payload = event(offset);
        sink.accept("t", 0, offset, None, None, Some(&payload))
            .unwrap()
    }

    #[test]
    fn a_replayed_partition_reads_again_past_a_gap_and_takes_what_was_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut sink = replay_sink(tmp.path());
        sink.check_gaps_from("t", 0, 10);
        assert_eq!(accept(&mut sink, 10), Accepted::Taken);
        assert_eq!(accept(&mut sink, 11), Accepted::Taken);
        // 12 and 13 not delivered (yet): read again from before them.
        let Accepted::SeekTo(target) = accept(&mut sink, 14) else {
            panic!("a message past the next expected offset was taken");
        };
        assert!(target <= 12, "{target}");
        for offset in target..12 {
            assert_eq!(accept(&mut sink, offset), Accepted::Redelivered);
        }
        for offset in 12..15 {
            assert_eq!(accept(&mut sink, offset), Accepted::Taken, "{offset}");
        }
        sink.flush(None).unwrap();
        let ledger = sink.into_ledger();
        assert_eq!(
            ledger.head(&chain_name("t", 0)).map(|h| h.next_seq),
            Some(5)
        );
    }

    /// An event about one of 30 items, stored in one of two stores.
    fn event_about_a_few_items(offset: i64) -> Vec<u8> {
        let store = if offset % 2 == 0 { "mongodb" } else { "mysql" };
        format!(
            r#"{{"schema_version":1,"event_id":"e{offset}","event_time":"2026-03-01T10:00:00Z","account":{{"app_id":"1250000001","uin":"10000000000{}"}},"item_id":"item-{}","category":"asset_management","kind":{{"type":"stored","store":"{store}"}}}}"#,
            offset % 3,
            offset % 30
        )
        .into_bytes()
    }

    #[test]
    fn what_the_projection_thread_folds_and_saves_is_what_a_rebuild_builds() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(tmp.path(), lifeledger_ledger::LedgerOptions::default()).unwrap();
        let mut sink = Sink::new(
            ledger,
            true,
            Arc::new(Metrics::default()),
            None,
            u64::MAX,
            std::time::Duration::MAX,
        )
        .unwrap();
        sink.check_gaps_from("t", 0, 0);
        for write in 0..6 {
            for offset in write * 25..(write + 1) * 25 {
                let payload = event_about_a_few_items(offset);
                let taken = sink
                    .accept("t", 0, offset, None, None, Some(&payload))
                    .unwrap();
                assert_eq!(taken, Accepted::Taken);
            }
            sink.flush(None).unwrap();
            assert!(sink.projector.is_some(), "write {write} folded in place");
            assert!(
                sink.ledger().open_projection().is_err(),
                "the store is away"
            );
        }
        sink.save_projection().unwrap();
        let mut ledger = sink.into_ledger();
        let folded = ledger.load_projection().unwrap();
        ledger.rebuild_projection(&mut |_| {}).unwrap();
        let rebuilt = ledger.load_projection().unwrap();
        assert_eq!(folded.items.len(), 30);
        assert_eq!(folded.items, rebuilt.items);
        assert_eq!(folded.accounts, rebuilt.accounts);
        assert_eq!(folded.covered, rebuilt.covered);
        assert_eq!(folded.covered.get(&chain_name("t", 0)), Some(&150));
    }

    #[test]
    fn a_replay_that_starts_past_its_first_offset_reads_again_too() {
        let tmp = tempfile::tempdir().unwrap();
        let mut sink = replay_sink(tmp.path());
        sink.check_gaps_from("t", 0, 10);
        assert!(matches!(accept(&mut sink, 12), Accepted::SeekTo(t) if t <= 10));
    }
}
