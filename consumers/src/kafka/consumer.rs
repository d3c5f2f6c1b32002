//! The Kafka side: a group member that writes to the ledger exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use thiserror::Error;

use super::config::ConsumerConfig;
use super::custody::CustodyLog;
use super::handover::{BatchToken, CustodyRecord, Fate, HeldBatch};
use super::metrics::Metrics;
use super::sink::{Accepted, DeadLetter, Sink, StagedCommit};
use lifeledger_ledger::archive::{Archive, Continuation};
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
///
/// A write does not wait for its dead letters to be delivered: the ledger
/// already keeps each rejection with its bytes, and the topic is a copy
/// for the producers' owners. Delivery reports are served at the next
/// write (a failed delivery is counted and logged), and what is still in
/// flight is delivered before the consumer returns.
struct DeadLetterOut {
    producer: BaseProducer<LetterReports>,
    topic: String,
}

/// Counts and logs dead letters whose delivery failed.
struct LetterReports {
    metrics: Arc<Metrics>,
}

impl ClientContext for LetterReports {}

impl rdkafka::producer::ProducerContext for LetterReports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, message)) = result {
            tracing::error!(
                "a dead letter was not delivered to {} ({e}); the rejection stays in the ledger",
                message.topic()
            );
            Metrics::add(&self.metrics.dead_letter_failures, 1);
        }
    }
}

impl DeadLetterOut {
    fn new(
        config: &ConsumerConfig,
        topic: &str,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, KafkaError> {
        let producer = dead_letter_config(config).create_with_context(LetterReports {
            metrics: Arc::clone(metrics),
        })?;
        Ok(DeadLetterOut {
            producer,
            topic: topic.to_owned(),
        })
    }

    fn send(&self, letters: &[DeadLetter]) {
        let metrics = &self.producer.context().metrics;
        // Reports of earlier writes' letters.
        self.producer.poll(Duration::ZERO);
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
    }
}

impl Drop for DeadLetterOut {
    /// Delivers what is in flight (rdkafka's producer purges its queue
    /// when dropped).
    fn drop(&mut self) {
        use rdkafka::producer::Producer;
        if let Err(e) = super::flush_promptly(&self.producer, Duration::from_secs(30)) {
            let left = self.producer.in_flight_count();
            tracing::error!(
                "{left} dead letters were not delivered to {} before the consumer stopped ({e}); the rejections stay in the ledger",
                self.topic
            );
            Metrics::add(
                &self.producer.context().metrics.dead_letter_failures,
                u64::try_from(left).unwrap_or(0),
            );
        }
    }
}

/// The consumer's context: it owns the ledger side, so that rebalances can
/// flush and seek from inside the client's callbacks.
pub struct LedgerContext {
    sink: Arc<Mutex<Sink>>,
    custody: CustodyLog,
    /// Batches a write left staged, waiting for their partition's next
    /// claim; the run loop settles them.
    left_waiting: AtomicUsize,
    /// With an archive: revoked partitions' chains are sealed, so that the
    /// archive can take their tails at once.
    seal_on_revoke: bool,
    /// With an archive: where an assigned partition's chain is continued
    /// from (the chain of record, whichever member extended it last).
    archive: Option<Archive>,
    group: String,
    metrics: Arc<Metrics>,
    dead_letters: Option<DeadLetterOut>,
    failure: Mutex<Option<String>>,
    /// Each partition's high watermark as fetch answers last gave it (from
    /// the client's statistics).
    fetched_high: Mutex<HashMap<(String, i32), i64>>,
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

    /// What the group has committed for these partitions, with our notes.
    fn committed(
        &self,
        consumer: &BaseConsumer<Self>,
        partitions: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), i64>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let mut out = HashMap::new();
        for e in got.elements() {
            if let Offset::Offset(offset) = e.offset() {
                out.insert((e.topic().to_owned(), e.partition()), offset);
            }
        }
        Ok(out)
    }

    /// Claims the newly assigned partitions in the custody topic, reads the
    /// topic to its end, settles any batch this ledger left staged on them,
    /// and seeks each to the later of the ledger's cursor and the end of
    /// the partition's last valid hold (see `handover`).
    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        if assigned.is_empty() {
            return;
        }
        // The claim first: from the moment it lands, no other member's hold
        // of these partitions is valid, so the resume points read next
        // cannot move under this member's feet.
        let claim = match self.custody.record(&CustodyRecord::Claim {
            group: self.group.clone(),
            partitions: assigned.clone(),
        }) {
            Ok(o) => o,
            Err(e) => {
                self.fail(format!("claiming the assigned partitions: {e}"));
                return;
            }
        };
        if let Err(e) = self.custody.catch_up() {
            self.fail(format!("reading the custody topic on assignment: {e}"));
            return;
        }
        // The group's committed offset counts only for a partition the
        // custody log holds no valid hold of (a group new to it).
        let unheld: Vec<(String, i32)> = assigned
            .iter()
            .filter(|(t, p)| self.custody.resume_point(&self.group, t, *p).is_none())
            .cloned()
            .collect();
        let committed = if unheld.is_empty() {
            HashMap::new()
        } else {
            match self.committed(consumer, &unheld) {
                Ok(c) => c,
                Err(e) => {
                    // Without them a resume point could be wrong: stop
                    // rather than guess.
                    self.fail(format!(
                        "reading the group's committed offsets on assignment: {e}"
                    ));
                    return;
                }
            }
        };
        for (topic, partition) in assigned {
            let mut theirs = self
                .custody
                .resume_point(&self.group, &topic, partition)
                .or_else(|| committed.get(&(topic.clone(), partition)).copied());
            // A batch this ledger left staged on the partition is decided
            // now: this member's claim came after its hold, if any.
            let staged = lock(&self.sink).staged_commit(&topic, partition);
            match staged {
                Ok(Some(s)) => {
                    let f = self.fate_of(&s).unwrap_or_else(|| {
                        if theirs.is_some_and(|c| c >= s.next_offset) {
                            Fate::Landed
                        } else {
                            Fate::NotLanded
                        }
                    });
                    if let Err(e) = self.settle(vec![(s, f)]) {
                        self.fail(format!(
                            "settling the staged batch of {topic}/{partition}: {e}"
                        ));
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.fail(format!(
                        "reading the staged batch of {topic}/{partition}: {e}"
                    ));
                    return;
                }
            }
            let mut sink = lock(&self.sink);
            let mut from_first_offset = false;
            if let Some(archive) = &self.archive {
                // The archive holds the chain of record: continue it from
                // there, and resume where it (or this ledger, if it holds
                // more not yet archived) ends, whatever the group
                // committed (a member may have committed offsets whose
                // entries never reached the archive).
                let chain = super::chain_name(&topic, partition);
                let outcome = sink.continue_from_archive(archive, &chain).map(|(first, then)| {
                    if let (Continuation::Diverged { seq, detail }, Some(_)) = (&first, &then) {
                        Metrics::add(&self.metrics.archive_diverged, 1);
                        tracing::warn!(
                            "assigned {topic}/{partition}: this ledger's chain {chain} differed from the archive's from seq {seq} ({detail}): set aside, the archive's continued"
                        );
                    }
                    then.unwrap_or(first)
                });
                match outcome {
                    Ok(Continuation::NotArchived) => {
                        // Nothing archived: the chain starts here, from
                        // this ledger's cursor or the partition's first
                        // offset (a commit made by a member whose entries
                        // never reached the archive does not count).
                        theirs = None;
                        from_first_offset = true;
                    }
                    Ok(Continuation::Holds { next_seq, ahead }) => {
                        tracing::info!(
                            "assigned {topic}/{partition}: this ledger holds the archived chain {chain} ({next_seq} entries, {ahead} not archived yet)"
                        );
                        theirs = None;
                    }
                    Ok(Continuation::Adopted { from, next_seq }) => {
                        Metrics::add(&self.metrics.archive_adopted, 1);
                        tracing::info!(
                            "assigned {topic}/{partition}: continued chain {chain} from the archive (seqs {from}..{next_seq} fetched)"
                        );
                        theirs = None;
                    }
                    Ok(Continuation::Diverged { seq, detail }) => {
                        Metrics::add(&self.metrics.archive_diverged, 1);
                        tracing::error!(
                            "assigned {topic}/{partition}: chain {chain} in this ledger differs from the archive's from seq {seq} ({detail}); another member extended it. Not read here: this ledger must not fork it (restore this member's ledger from the archive, or give it a new directory)"
                        );
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "assigned {topic}/{partition}: the archive cannot tell how far chain {chain} goes ({e}); resuming from this ledger and the group, and uploads will refuse any fork"
                        );
                    }
                }
            }
            let ours = match sink.cursor(&topic, partition) {
                Ok(c) => c,
                Err(err) => {
                    self.fail(format!("reading the cursor of {topic}/{partition}: {err}"));
                    None
                }
            };
            let start = match (ours, theirs) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if let (Some(a), Some(b)) = (ours, theirs) {
                if b > a {
                    tracing::warn!(
                        "assigned {topic}/{partition}: the partition's custody goes to offset {b}, past this ledger's cursor {a}; offsets {a}..{} were recorded by another member's ledger",
                        b - 1
                    );
                }
            }
            tracing::info!(
                "assigned {topic}/{partition}: resuming at offset {start:?} (ledger cursor {ours:?}, custody {theirs:?}, claim {claim})"
            );
            sink.assign(&topic, partition, start, claim);
            // Seeking happens through the assignment itself.
            if let Some(start) = start {
                let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(start));
            } else if from_first_offset {
                let _ = tpl.set_partition_offset(&topic, partition, Offset::Beginning);
            }
        }
    }

    /// Writes what is pending for the revoked partitions (stage, commit,
    /// append) before they go to another member.
    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        // What is dropped here is read again by the partitions' next owner.
        if let Err(e) = self.write(consumer, Some(&partitions), CommitMode::Sync) {
            self.fail(format!(
                "writing the ledger before giving up partitions: {e}"
            ));
        }
        if self.seal_on_revoke {
            let chains: Vec<String> = partitions
                .iter()
                .map(|(t, p)| super::chain_name(t, *p))
                .collect();
            if let Err(e) = lock(&self.sink).seal_open_segments(Some(&chains)) {
                self.fail(format!("sealing the revoked partitions' segments: {e}"));
            }
            // The tails go to the archive before the revocation completes,
            // so that the next owner continues the chains from their end.
            let began = Instant::now();
            let archived = {
                let sink = lock(&self.sink);
                sink.flush_archive(Duration::from_secs(30))
            };
            if archived {
                tracing::info!("revoked partitions archived in {:.1?}", began.elapsed());
            } else {
                tracing::warn!(
                    "the revoked partitions' tails are not archived yet (the archive did not answer in time): their next owner continues from an older point, and this ledger's tails will be refused as a second continuation"
                );
            }
        }
        lock(&self.sink).forget(&partitions);
    }

    /// The write a group member makes: stage the pending inputs (durable,
    /// in no chain), append a hold for them to the custody topic, read the
    /// topic to its end, and append each batch whose hold is valid (no
    /// other member claimed its partition in between); the others are
    /// dropped and read again by the partitions' owners. Then the offsets
    /// are committed to the group, as advice for lag tools. So a crash at
    /// any point leaves each batch either in this ledger under a valid
    /// hold, or in no ledger and before the partition's resume point.
    fn write(
        &self,
        consumer: &BaseConsumer<Self>,
        only: Option<&[(String, i32)]>,
        commit: CommitMode,
    ) -> Result<(), ConsumeError> {
        let began = Instant::now();
        let staged = lock(&self.sink).stage(only)?;
        if staged.is_empty() {
            return Ok(());
        }
        let staged_in = began.elapsed();
        // A partition another member has claimed since this one did, as
        // far as the records already arrived tell (no round trip), is not
        // held at all: its batch is dropped and read by the new owner.
        self.custody.follow_now();
        let (staged, disturbed): (Vec<StagedCommit>, Vec<StagedCommit>) =
            staged.into_iter().partition(|s| {
                BatchToken::parse(&s.token).is_some_and(|t| {
                    self.custody
                        .holds(&self.group, &s.topic, s.partition, t.claim)
                })
            });
        if !disturbed.is_empty() {
            for s in &disturbed {
                tracing::warn!(
                    "{}/{}: another member claimed the partition while this one read offsets {}..{}: dropped here, the new owner reads them; this member stops reading it",
                    s.topic,
                    s.partition,
                    s.first_offset,
                    s.next_offset - 1
                );
            }
            let taken: Vec<(String, i32)> = disturbed
                .iter()
                .map(|s| (s.topic.clone(), s.partition))
                .collect();
            self.settle(
                disturbed
                    .into_iter()
                    .map(|s| (s, Fate::NotLanded))
                    .collect(),
            )?;
            lock(&self.sink).forget(&taken);
        }
        if staged.is_empty() {
            return Ok(());
        }
        let batches = staged
            .iter()
            .filter_map(|s| {
                Some(HeldBatch {
                    topic: s.topic.clone(),
                    partition: s.partition,
                    claim: BatchToken::parse(&s.token)?.claim,
                    next: s.next_offset,
                })
            })
            .collect();
        // If the hold cannot be written the run stops with the batches
        // staged; the custody log decides them later.
        self.custody.record(&CustodyRecord::Hold {
            group: self.group.clone(),
            batches,
        })?;
        let held_at = began.elapsed();
        self.custody.catch_up()?;
        let read_at = began.elapsed();
        let mut taken = Vec::new();
        let mut fates = Vec::new();
        for s in staged {
            let at = (s.topic.clone(), s.partition);
            match self.fate_of(&s) {
                Some(Fate::Landed) => fates.push((s, Fate::Landed)),
                Some(Fate::NotLanded) => {
                    tracing::warn!(
                        "{}/{}: another member claimed the partition before this one's hold of offsets {}..{} landed: dropped here, the new owner reads them; this member stops reading it",
                        s.topic,
                        s.partition,
                        s.first_offset,
                        s.next_offset - 1
                    );
                    taken.push(at);
                    fates.push((s, Fate::NotLanded));
                }
                None => {
                    // The hold is in the topic, so this does not happen
                    // unless reading it went wrong: wait for the next
                    // claim to decide.
                    tracing::warn!(
                        "{}/{}: the hold of offsets {}..{} was not found in the custody topic: they stay staged until the partition's next claim decides; this member stops reading it",
                        s.topic,
                        s.partition,
                        s.first_offset,
                        s.next_offset - 1
                    );
                    self.left_waiting.fetch_add(1, Ordering::Relaxed);
                    taken.push(at);
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (s, _) in fates.iter().filter(|(_, f)| *f == Fate::Landed) {
            tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.next_offset))?;
            if let Some(mut e) = tpl.find_partition(&s.topic, s.partition) {
                e.set_metadata(format!("lifeledger batch {}", s.token));
            }
        }
        let inputs: u64 = fates
            .iter()
            .map(|(s, _)| u64::try_from(s.next_offset - s.first_offset).unwrap_or(0))
            .sum();
        self.settle(fates)?;
        // Where a write's time goes (the fixed part per write decides
        // throughput at small batches).
        tracing::debug!(
            "write of {inputs} inputs: staged {staged_in:.1?}, hold written {:.1?}, custody read {:.1?}, appended and folded {:.1?}",
            held_at - staged_in,
            read_at - held_at,
            began.elapsed() - read_at
        );
        if !taken.is_empty() {
            lock(&self.sink).forget(&taken);
        }
        // Advice only: where members resume is the custody log's to say.
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, commit) {
                Metrics::add(&self.metrics.kafka_errors, 1);
                tracing::warn!("committing offsets to the group (advice for lag tools): {e}");
            }
        }
        Ok(())
    }

    /// A held partition whose chain another member continued first in the
    /// archive: what is pending for it is dropped (read again), this
    /// ledger's differing entries are set aside, the archive's chain is
    /// adopted, and reading resumes where it ends.
    fn retake_from_archive(
        &self,
        consumer: &BaseConsumer<Self>,
        topic: &str,
        partition: i32,
    ) -> Result<(), ConsumeError> {
        let Some(archive) = &self.archive else {
            return Ok(());
        };
        let chain = super::chain_name(topic, partition);
        tracing::warn!(
            "{topic}/{partition}: another member continued chain {chain} in the archive first; taking the archive's chain over"
        );
        let at = [(topic.to_owned(), partition)];
        let mut sink = lock(&self.sink);
        let custody = sink.custody_of(topic, partition);
        sink.drop_pending(&at);
        sink.forget(&at);
        match sink.continue_from_archive(archive, &chain) {
            Ok((_, then)) if !matches!(then, Some(Continuation::Diverged { .. })) => {
                Metrics::add(&self.metrics.archive_adopted, 1);
                let start = sink.cursor(topic, partition)?;
                if let Some(custody) = custody {
                    sink.assign(topic, partition, start, custody);
                }
                drop(sink);
                if let Some(start) = start {
                    seek_logged(consumer, topic, partition, start);
                }
                Ok(())
            }
            Ok(_) => {
                tracing::error!(
                    "{topic}/{partition}: chain {chain} still differs from the archive's after setting it aside; not read here"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    "{topic}/{partition}: taking chain {chain} over from the archive failed ({e}); not read here until the partition is assigned again"
                );
                Ok(())
            }
        }
    }

    /// What the custody log, as last read, says of a staged batch (`None`:
    /// not decided yet, or a token of the first protocol, which named no
    /// claim).
    fn fate_of(&self, s: &StagedCommit) -> Option<Fate> {
        let token = BatchToken::parse(&s.token)?;
        self.custody.fate(
            &self.group,
            &s.topic,
            s.partition,
            token.claim,
            s.next_offset,
        )
    }

    /// Decides what it can of the batches staged in the ledger (left by an
    /// earlier run), from the custody log read to its end. Returns the
    /// undecided ones, which wait for their partition's next claim.
    fn decide_staged(&self, consumer: &BaseConsumer<Self>) -> Result<Decided, ConsumeError> {
        let staged = lock(&self.sink).left_staged()?;
        if staged.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        self.custody.catch_up()?;
        // A token of the first protocol names no claim: only a committed
        // offset at or past the batch tells (its commit landed).
        let unnamed: Vec<(String, i32)> = staged
            .iter()
            .filter(|s| BatchToken::parse(&s.token).is_none())
            .map(|s| (s.topic.clone(), s.partition))
            .collect();
        let committed = if unnamed.is_empty() {
            HashMap::new()
        } else {
            self.committed(consumer, &unnamed)?
        };
        let mut decided = Vec::new();
        let mut waiting = Vec::new();
        for s in staged {
            let f = match BatchToken::parse(&s.token) {
                Some(_) => self.fate_of(&s),
                None => committed
                    .get(&(s.topic.clone(), s.partition))
                    .is_some_and(|c| *c >= s.next_offset)
                    .then_some(Fate::Landed),
            };
            match f {
                Some(f) => decided.push((s, f)),
                None => waiting.push(s),
            }
        }
        Ok((decided, waiting))
    }

    /// Settles what can be settled of the staged batches; returns how many
    /// still wait.
    fn settle_staged(&self, consumer: &BaseConsumer<Self>) -> Result<usize, ConsumeError> {
        let (decided, waiting) = self.decide_staged(consumer)?;
        for s in &waiting {
            tracing::info!(
                "{}/{}: offsets {}..{} stay staged until the partition's next claim shows whether their hold landed",
                s.topic,
                s.partition,
                s.first_offset,
                s.next_offset - 1
            );
        }
        if !decided.is_empty() {
            self.settle(decided)?;
        }
        Ok(waiting.len())
    }

    /// Appends the batches whose commit landed and drops the others (whoever
    /// holds their partition reads them again).
    fn settle(&self, fates: Vec<(StagedCommit, Fate)>) -> Result<(), ConsumeError> {
        let mut keep = Vec::new();
        let mut drop = Vec::new();
        for (s, f) in fates {
            let at = (s.topic.clone(), s.partition);
            match f {
                Fate::Landed => {
                    Metrics::add(&self.metrics.staged_landed, 1);
                    keep.push(at);
                }
                Fate::NotLanded => {
                    Metrics::add(&self.metrics.staged_not_landed, 1);
                    tracing::info!(
                        "{}/{}: offsets {}..{} are not this ledger's (their hold was not valid: another member claimed the partition first); dropped here, read again by its owner",
                        s.topic,
                        s.partition,
                        s.first_offset,
                        s.next_offset - 1
                    );
                    drop.push(at);
                }
            }
        }
        let flushed = {
            let mut sink = lock(&self.sink);
            let flushed = sink.append_staged(&keep)?;
            sink.discard_staged(&drop)?;
            flushed
        };
        if let Some(out) = &self.dead_letters {
            out.send(&flushed.dead_letters);
        }
        Ok(())
    }

    /// The high watermark of `topic`/`partition` as the last fetch answer
    /// gave it, if the client reported one yet.
    fn fetched_high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.fetched_high
            .lock()
            .ok()?
            .get(&(topic.to_owned(), partition))
            .copied()
    }

    /// Reads again the partitions that received nothing for a while
    /// although the broker holds offsets at or past their cursors.
    fn check_stalled(&self, consumer: &BaseConsumer<Self>, quiet: Duration) {
        let held = lock(&self.sink).assigned_cursors();
        for (topic, partition, cursor, since) in held {
            if cursor.is_none() || since < quiet {
                continue;
            }
            // Two sources, each of which may fall short but never
            // overstates: the high watermark of the last fetch answer
            // (cached by the client; tansu sends it even with an empty
            // answer), and the broker's ListOffsets "latest" (which tansu
            // answers with the last batch's *first* offset plus one).
            let fetched = self.fetched_high_watermark(&topic, partition);
            let listed = consumer
                .fetch_watermarks(&topic, partition, Duration::from_secs(2))
                .map(|(_, high)| high)
                .inspect_err(|e| tracing::debug!("watermarks of {topic}/{partition}: {e}"))
                .ok();
            let Some(high) = fetched.max(listed) else {
                continue;
            };
            let target = lock(&self.sink).check_stalled(&topic, partition, high);
            if let Some(target) = target {
                tracing::info!(
                    "{topic}/{partition}: nothing arrived at offset {} although the broker's high watermark is {high}: reading again from {target}",
                    cursor.unwrap_or_default()
                );
                seek_logged(consumer, &topic, partition, target);
            }
        }
    }
}

impl ClientContext for LedgerContext {
    fn stats(&self, statistics: Statistics) {
        let mut fetched = self.fetched_high.lock().ok();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if let Some(fetched) = fetched.as_mut()
                    && *partition >= 0
                    && p.hi_offset >= 0
                {
                    fetched.insert((topic.clone(), *partition), p.hi_offset);
                }
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
        // With cooperative-sticky assignment a rebalance hands over only
        // the partitions that move, incrementally.
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(consumer, tpl);
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    self.fail(format!("assigning partitions: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if consumer.assignment_lost() {
                    tracing::warn!(
                        "the group took these partitions away (session lost): what is pending is written only if its commit still lands"
                    );
                }
                let revoked: Vec<String> = tpl
                    .elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect();
                tracing::info!("revoked: {}", revoked.join(", "));
                self.on_revoke(consumer, tpl);
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    tracing::warn!("unassigning partitions: {e}");
                }
            }
            other => {
                // Pending inputs of every partition are written (if their
                // commit lands) before letting go of all of them.
                tracing::error!("rebalance error: {other:?}");
                let held: Vec<(String, i32)> = lock(&self.sink)
                    .assigned_cursors()
                    .into_iter()
                    .map(|(t, p, _, _)| (t, p))
                    .collect();
                if let Err(e) = self.write(consumer, None, CommitMode::Sync) {
                    self.fail(format!("writing the ledger after a rebalance error: {e}"));
                }
                lock(&self.sink).forget(&held);
                let _ = consumer.unassign();
            }
        }
    }
}

/// Seeks a held partition to read it again from `target`. A failed seek
/// only delays: the gap or stall that asked for it asks again.
fn seek_logged(consumer: &BaseConsumer<LedgerContext>, topic: &str, partition: i32, target: i64) {
    if let Err(e) = consumer.seek(
        topic,
        partition,
        Offset::Offset(target),
        Duration::from_secs(10),
    ) {
        tracing::warn!("seeking {topic}/{partition} to {target}: {e}");
    }
}

/// Staged batches with their fate decided, and those still waiting for
/// the partition's next handover.
type Decided = (Vec<(StagedCommit, Fate)>, Vec<StagedCommit>);

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
            // Each second: the statistics carry the high watermarks of the
            // fetch answers, which tell a partition parked inside its last
            // record batch (see `check_stalled`).
            .set("statistics.interval.ms", "1000")
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

/// The dead-letter producer's settings: a write's dead letters leave as
/// soon as it sends them, not after `linger.ms` (librdkafka's default
/// 5 ms) unless the settings name it; they come a write's worth at a
/// time, and the flush before the consumer returns then waits for
/// deliveries only.
fn dead_letter_config(config: &ConsumerConfig) -> ClientConfig {
    let mut c = client_config(config, false);
    if !config.librdkafka.contains_key("linger.ms") {
        c.set("linger.ms", "0");
    }
    c
}

/// The longest one poll waits for a message.
const POLL_WAIT: Duration = Duration::from_millis(20);

/// At most this many messages are taken between two rounds of the run
/// loop's checks: about a millisecond's worth at full rate, so that
/// `max_latency_ms` and a stop are still seen within a millisecond or so.
const BURST: usize = 256;

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
        Some(topic) => Some(DeadLetterOut::new(config, topic, &metrics)?),
        None => None,
    };
    let sink = Arc::new(Mutex::new(
        sink.for_group()
            .declaring_backfill(config.backfill_declared_by.clone()),
    ));
    let custody = CustodyLog::open(&client_config(config, false), &config.custody_topic)?;
    let context = LedgerContext {
        sink: Arc::clone(&sink),
        custody,
        left_waiting: AtomicUsize::new(0),
        seal_on_revoke: config.archive.is_some(),
        archive: match &config.archive {
            Some(url) => match Archive::open_with(
                url,
                &config
                    .archive_options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>(),
            ) {
                Ok(a) => Some(a),
                Err(e) => return Err(ConsumeError::Rebalance(format!("opening the archive: {e}"))),
            },
            None => None,
        },
        group: config.group.clone(),
        metrics: Arc::clone(&metrics),
        dead_letters,
        failure: Mutex::new(None),
        fetched_high: Mutex::new(HashMap::new()),
    };
    let consumer: BaseConsumer<LedgerContext> =
        client_config(config, true).create_with_context(context)?;
    // A batch the last run staged but did not append is settled first, if
    // the custody log and the group can tell already.
    let mut waiting = consumer.context().settle_staged(&consumer)?;
    let mut last_settle = Instant::now();
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let max_latency = Duration::from_millis(config.max_latency_ms);
    let idle_limit = config.exit_when_idle_ms.map(Duration::from_millis);
    // Idle time counts from the first assignment: before it, the member is
    // waiting for the group (dead members' sessions may still hold the
    // partitions), which is not idleness.
    let mut last_message: Option<Instant> = None;
    let mut waiting_since = Instant::now();
    let mut held_before = 0usize;
    let mut last_report = Instant::now();
    let monitor_interval = Duration::from_millis(config.monitor_interval_ms);
    let mut last_monitor = Instant::now();
    let mut last_stall_check = Instant::now();
    // A partition is suspected of being parked inside a record batch only
    // when the whole member has received nothing for this long: while
    // messages flow, a quiet partition is more likely waiting its turn.
    let stall_quiet = Duration::from_millis(1000);
    let mut last_any_message = Instant::now();
    // With an archive, open segments are sealed this often: the archive
    // takes sealed segments only.
    let seal_every = config
        .archive
        .as_ref()
        .map(|_| Duration::from_secs(config.archive_seal_after_secs.max(1)));
    let mut last_seal = Instant::now();
    loop {
        if seal_every.is_some_and(|every| last_seal.elapsed() >= every) {
            last_seal = Instant::now();
            lock(&sink).seal_open_segments(None)?;
            // A chain another member extended in the archive first is not
            // extended here any more.
            let conflicted = lock(&sink).conflicted();
            for (t, p) in conflicted {
                consumer.context().retake_from_archive(&consumer, &t, p)?;
            }
        }
        if shutdown.load(Ordering::Relaxed) {
            tracing::info!("shutting down: writing what is pending");
            break;
        }
        if let Some(why) = consumer.context().failure() {
            return Err(ConsumeError::Rebalance(why));
        }
        // One poll that may wait, then whatever has arrived already, up to
        // a burst or a batch: the loop's checks below (clocks, locks,
        // timers, `max_latency`) run once per burst, not once per message.
        let mut drained = false;
        let mut received = false;
        let mut wait = POLL_WAIT;
        for _ in 0..BURST {
            let polled = consumer.poll(wait);
            wait = Duration::ZERO;
            match polled {
                Some(Ok(message)) => {
                    received = true;
                    let (accepted, full) = {
                        let mut sink = lock(&sink);
                        let accepted = sink.accept(
                            message.topic(),
                            message.partition(),
                            message.offset(),
                            message.timestamp().to_millis(),
                            message.key(),
                            message.payload(),
                        )?;
                        (accepted, sink.pending() >= config.batch_size)
                    };
                    if let Accepted::SeekTo(target) = accepted {
                        let (topic, partition) = (message.topic().to_owned(), message.partition());
                        drop(message);
                        seek_logged(&consumer, &topic, partition, target);
                        // What was fetched before the seek may follow:
                        // the next burst takes it, after the checks.
                        break;
                    }
                    // A caller's stop may come mid-burst (as after the
                    // 20th message of a batch of 60).
                    if full || stop.is_some_and(|f| f(&metrics)) {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("Kafka: {e}");
                    Metrics::add(&metrics.kafka_errors, 1);
                }
                // Nothing came within the wait (none, after a burst):
                // what is pending is all there is for now, and waiting out
                // `max_latency` for a fuller batch would only delay it.
                // (Waiting for the next fetch instead, up to a poll's
                // wait, put p99 at 50,000 events/s from 0.05 s to 0.25 s
                // in two runs, for no CPU saved.)
                None => {
                    drained = true;
                    break;
                }
            }
        }
        if received {
            let now = Instant::now();
            last_message = Some(now);
            last_any_message = now;
        }
        metrics.polled();
        // Idle time runs only while the member holds partitions, and
        // starts again when its assignment changes: waiting for the group
        // (dead members' sessions may still hold the partitions) is not
        // idleness.
        let held = lock(&sink).held();
        let holds_partitions = held > 0;
        if !holds_partitions || held != held_before {
            last_message = holds_partitions.then(Instant::now);
        }
        held_before = held;
        if !holds_partitions && waiting_since.elapsed() >= Duration::from_secs(10) {
            waiting_since = Instant::now();
            tracing::info!(
                "waiting for the group to assign this member a partition (members that died may hold them until their sessions expire)"
            );
        }
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
        if pending >= config.batch_size
            || age.is_some_and(|a| a >= max_latency)
            || (drained && pending > 0)
        {
            consumer
                .context()
                .write(&consumer, None, CommitMode::Async)?;
        }
        if last_stall_check.elapsed() >= stall_quiet && last_any_message.elapsed() >= stall_quiet {
            last_stall_check = Instant::now();
            consumer.context().check_stalled(&consumer, stall_quiet);
        }
        waiting += consumer.context().left_waiting.swap(0, Ordering::Relaxed);
        if waiting > 0 && last_settle.elapsed() >= Duration::from_secs(2) {
            last_settle = Instant::now();
            waiting = consumer.context().settle_staged(&consumer)?;
        }
        if last_monitor.elapsed() >= monitor_interval {
            last_monitor = Instant::now();
            lock(&sink).tick_monitor()?;
        }
        if stop.is_some_and(|f| f(&metrics)) {
            break;
        }
        let idle =
            last_message.is_some_and(|t| idle_limit.is_some_and(|limit| t.elapsed() >= limit));
        if idle && pending == 0 && waiting == 0 && !lock(&sink).rewinding() {
            tracing::info!("idle for {:?}: stopping", idle_limit);
            break;
        }
    }
    let stopping = Instant::now();
    consumer
        .context()
        .write(&consumer, None, CommitMode::Sync)?;
    lock(&sink).save_projection()?;
    // What the last writes touched, before stopping; then the projection
    // thread finishes and the ledger is whole again.
    lock(&sink).tick_monitor()?;
    lock(&sink).bring_home()?;
    lock(&sink).maybe_checkpoint(true)?;
    let ledger_done = stopping.elapsed();
    consumer.unsubscribe();
    // librdkafka can hang for good closing a cooperative consumer that
    // receives an assignment while it closes (confluentinc/librdkafka#4527,
    // seen here in the rebalance torture test): serve the group's callbacks
    // until nothing is assigned, then close. A message polled meanwhile is
    // left unwritten: nothing acknowledged it, so the partition's next
    // owner reads it.
    let leaving = Instant::now();
    while leaving.elapsed() < Duration::from_secs(10)
        && consumer.assignment().is_ok_and(|a| a.count() > 0)
    {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    if let Err(e) = super::close_promptly(&consumer, Duration::from_secs(10)) {
        // The drop below closes it again, waiting as long as it takes.
        tracing::warn!("closing the consumer: {e}");
    }
    drop(consumer);
    tracing::debug!(
        "stopped: the ledger's last write, fold, judgement and checkpoint took {ledger_done:.1?}; leaving the group and closing the client {:.1?}",
        stopping.elapsed() - ledger_done
    );
    let summary = RunSummary::from(&metrics);
    let sink = Arc::try_unwrap(sink)
        .map_err(|_| {
            ConsumeError::Rebalance("the ledger is still shared after the consumer closed".into())
        })?
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    Ok((summary, sink))
}
