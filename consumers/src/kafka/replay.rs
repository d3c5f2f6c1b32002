//! Replaying a topic into a scratch ledger and comparing it with the live
//! one: does the live chain hold what Kafka holds for that range?
//!
//! The topic is read with `assign` (no group, nothing committed) from a
//! start offset (or the first offset at a time) to the high watermark seen
//! at the start, through the same [`Sink`] the consumer uses, into a
//! scratch ledger. Then, partition by partition, each offset's entry in
//! the scratch chain is compared with the live chain's entry for that
//! offset. Some differences are expected and are counted as *explained*:
//! an event the live ledger had already recorded before the range (so it
//! skipped it as a duplicate, or rejected it as a conflict) is new to the
//! scratch ledger, which never saw the earlier one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use lifeledger_ledger::{Body, Entry, Ledger, LedgerOptions, ReadOnlyLedger, Source, StoreError};
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use thiserror::Error;

use super::chain_name;
use super::metrics::Metrics;
use super::sink::{Accepted, Sink};

/// Where the replay starts in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Offset(i64),
    /// The first offset whose record timestamp is at or after this.
    Time(Timestamp),
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReplayKafkaError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("topic {0:?} has no partitions (does it exist?)")]
    NoSuchTopic(String),
    #[error("timed out after {0:?} reading the topic up to its high watermarks")]
    Timeout(Duration),
}

/// One offset's entry on one side, as it reads in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    /// `event EVENT_ID`, `rejected CLASS`, or `none`.
    pub entry: String,
    /// The entry's seq in its chain.
    pub seq: Option<u64>,
    /// The BLAKE3 hash of the received bytes.
    pub raw_blake3: Option<String>,
}

/// The first offset where the two ledgers disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub offset: i64,
    pub live: Side,
    pub scratch: Side,
}

/// One partition's comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    pub chain: String,
    /// The range read from Kafka: `[from_offset, high_watermark)`.
    pub from_offset: i64,
    pub high_watermark: i64,
    /// The live ledger's next offset for the partition (none: never read).
    pub live_cursor: Option<i64>,
    /// Offsets compared: `[from_offset, compared_to)`, where the live
    /// ledger has read them.
    pub compared_to: i64,
    pub messages_read: u64,
    pub matched: u64,
    pub explained: u64,
    pub differences: u64,
    pub first_difference: Option<Difference>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayKafkaReport {
    pub topic: String,
    pub partitions: Vec<PartitionReport>,
    /// Whether every compared offset matched (or is explained).
    pub matches: bool,
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayKafkaRequest {
    pub client: ClientConfig,
    pub topic: String,
    pub start: Start,
    pub timeout: Duration,
}

fn kafka_offset(entry: &Entry) -> Option<i64> {
    match &entry.source {
        Source::Kafka { offset, .. } => Some(*offset),
        Source::File { .. } => None,
    }
}

fn side(entry: Option<&Entry>) -> Side {
    match entry {
        None => Side {
            entry: "none".into(),
            seq: None,
            raw_blake3: None,
        },
        Some(e) => Side {
            entry: match &e.body {
                Body::Event { event_id, .. } => format!("event {event_id}"),
                Body::Rejected { class, .. } => format!("rejected {}", class.name()),
            },
            seq: Some(e.seq),
            raw_blake3: Some(blake3::hash(e.body.raw()).to_hex().to_string()),
        },
    }
}

/// Whether two entries for one offset record the same thing. Reasons are
/// not compared: a conflict's reason names where the first record is.
fn same_record(a: &Entry, b: &Entry) -> bool {
    match (&a.body, &b.body) {
        (
            Body::Event {
                raw: ra,
                canonical: ca,
                ..
            },
            Body::Event {
                raw: rb,
                canonical: cb,
                ..
            },
        ) => ra == rb && ca == cb,
        (
            Body::Rejected {
                raw: ra, class: ka, ..
            },
            Body::Rejected {
                raw: rb, class: kb, ..
            },
        ) => ra == rb && ka == kb,
        _ => false,
    }
}

/// The live chain's entries with Kafka offsets in `[from, to)`, in order.
fn live_entries(
    live: &ReadOnlyLedger,
    chain: &str,
    from: i64,
    to: i64,
) -> Result<Vec<Entry>, StoreError> {
    let Some(size) = live.head(chain).map(|h| h.next_seq) else {
        return Ok(Vec::new());
    };
    // Offsets grow with seq on a partition's chain: find the first entry
    // at or past `from` by bisection.
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let offset = live
            .entries(chain, mid, mid)?
            .next()
            .transpose()?
            .and_then(|(_, e)| kafka_offset(&e));
        if offset.is_some_and(|o| o >= from) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut out = Vec::new();
    for item in live.entries(chain, lo, size.saturating_sub(1))? {
        let (_, entry) = item?;
        match kafka_offset(&entry) {
            Some(o) if o >= to => break,
            Some(_) => out.push(entry),
            None => {}
        }
    }
    Ok(out)
}

/// Reads the topic into the scratch ledger at `scratch`, then compares.
pub fn replay_topic(
    request: &ReplayKafkaRequest,
    live: &mut ReadOnlyLedger,
    scratch: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayKafkaReport, ReplayKafkaError> {
    let (consumer, partitions) = super::topic_reader(&request.client, "replay", &request.topic)?;
    let timeout = Duration::from_secs(10);
    if partitions.is_empty() {
        return Err(ReplayKafkaError::NoSuchTopic(request.topic.clone()));
    }
    // The range per partition: from the start to the high watermark now.
    let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let by_time = match request.start {
        Start::Time(t) => {
            let mut list = TopicPartitionList::new();
            for p in &partitions {
                list.add_partition_offset(&request.topic, *p, Offset::Offset(t.as_millisecond()))?;
            }
            Some(consumer.offsets_for_times(list, timeout)?)
        }
        Start::Offset(_) => None,
    };
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(&request.topic, *p, timeout)?;
        let start = match (&request.start, &by_time) {
            (Start::Offset(n), _) => (*n).max(low),
            (Start::Time(_), Some(list)) => {
                match list.find_partition(&request.topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o.max(low),
                    // No record at or after the time: nothing to read.
                    _ => high,
                }
            }
            (Start::Time(_), None) => low,
        };
        ranges.insert(*p, (start.min(high), high));
    }
    let total: u64 = ranges.values().map(|(a, b)| (b - a) as u64).sum();

    let ledger = Ledger::open(scratch, LedgerOptions::default())?;
    let metrics = Arc::new(Metrics::default());
    let mut sink = Sink::new(ledger, false, metrics, None, u64::MAX, Duration::MAX)?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, (start, high)) in &ranges {
        if start < high {
            assignment.add_partition_offset(&request.topic, *p, Offset::Offset(*start))?;
            remaining.insert(*p, *high);
            // A record past the next expected offset is read again, as
            // a group member does (`gaps`): the broker may show a later
            // batch before an earlier one, and a skipped offset would show
            // as a difference that is not one.
            sink.check_gaps_from(&request.topic, *p, *start);
        }
    }
    let mut read = BTreeMap::<i32, u64>::new();
    if !remaining.is_empty() {
        consumer.assign(&assignment)?;
        let began = Instant::now();
        let mut done = 0u64;
        while !remaining.is_empty() {
            if began.elapsed() > request.timeout {
                return Err(ReplayKafkaError::Timeout(request.timeout));
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let p = m.partition();
                    let offset = m.offset();
                    let Some(high) = remaining.get(&p).copied() else {
                        continue;
                    };
                    if offset < high {
                        let accepted = sink.accept(
                            &request.topic,
                            p,
                            offset,
                            m.timestamp().to_millis(),
                            m.key(),
                            m.payload(),
                        )?;
                        match accepted {
                            Accepted::SeekTo(target) => {
                                drop(m);
                                consumer.seek(
                                    &request.topic,
                                    p,
                                    Offset::Offset(target),
                                    Duration::from_secs(10),
                                )?;
                                continue;
                            }
                            Accepted::Taken => {
                                *read.entry(p).or_default() += 1;
                                done += 1;
                            }
                            Accepted::Redelivered | Accepted::NotAssigned => {}
                        }
                    }
                    if offset + 1 >= high {
                        remaining.remove(&p);
                    }
                    if sink.pending() >= 5_000 {
                        sink.flush(None)?;
                        progress(done, total);
                    }
                }
                Some(Err(e)) => tracing::warn!("Kafka: {e}"),
                None => {}
            }
        }
        sink.flush(None)?;
        progress(done, total);
    }
    let scratch_ledger = sink.into_ledger();

    let mut reports = Vec::new();
    for (p, (start, high)) in &ranges {
        let chain = chain_name(&request.topic, *p);
        let live_cursor = live.cursor(&chain)?;
        let compared_to = live_cursor.map_or(*start, |c| c.clamp(*start, *high));
        let live_list = live_entries(live, &chain, *start, compared_to)?;
        let scratch_list: Vec<Entry> = {
            let size = scratch_ledger.head(&chain).map_or(0, |h| h.next_seq);
            let mut v = Vec::new();
            if size > 0 {
                for item in scratch_ledger.entries(&chain, 0, size - 1)? {
                    let (_, e) = item?;
                    if kafka_offset(&e).is_some_and(|o| o < compared_to) {
                        v.push(e);
                    }
                }
            }
            v
        };
        let live_at: BTreeMap<i64, &Entry> = live_list
            .iter()
            .filter_map(|e| kafka_offset(e).map(|o| (o, e)))
            .collect();
        let scratch_at: BTreeMap<i64, &Entry> = scratch_list
            .iter()
            .filter_map(|e| kafka_offset(e).map(|o| (o, e)))
            .collect();
        let mut offsets: Vec<i64> = live_at.keys().chain(scratch_at.keys()).copied().collect();
        offsets.sort_unstable();
        offsets.dedup();
        let (mut matched, mut explained, mut differences) = (0u64, 0u64, 0u64);
        let mut first_difference = None;
        for offset in offsets {
            let (l, s) = (
                live_at.get(&offset).copied(),
                scratch_at.get(&offset).copied(),
            );
            let verdict = match (l, s) {
                (Some(l), Some(s)) if same_record(l, s) => Outcome::Match,
                // The live ledger saw this event id before the range: it
                // skipped a duplicate or rejected a conflict that the
                // scratch ledger, which starts at the range, took in.
                (l, Some(s)) => match &s.body {
                    Body::Event { event_id, .. }
                        if recorded_before(live, event_id, &chain, l, *start)? =>
                    {
                        Outcome::Explained
                    }
                    _ => Outcome::Differ,
                },
                _ => Outcome::Differ,
            };
            match verdict {
                Outcome::Match => matched += 1,
                Outcome::Explained => explained += 1,
                Outcome::Differ => {
                    differences += 1;
                    if first_difference.is_none() {
                        first_difference = Some(Difference {
                            offset,
                            live: side(l),
                            scratch: side(s),
                        });
                    }
                }
            }
        }
        reports.push(PartitionReport {
            partition: *p,
            chain,
            from_offset: *start,
            high_watermark: *high,
            live_cursor,
            compared_to,
            messages_read: read.get(p).copied().unwrap_or(0),
            matched,
            explained,
            differences,
            first_difference,
        });
    }
    let matches = reports.iter().all(|r| r.differences == 0);
    Ok(ReplayKafkaReport {
        topic: request.topic.clone(),
        partitions: reports,
        matches,
    })
}

enum Outcome {
    Match,
    Explained,
    Differ,
}

/// Whether the live ledger first recorded `event_id` somewhere other than
/// this range of this chain (before it, or on another chain), with `live`
/// being what it holds at the offset (nothing, or a conflict rejection).
fn recorded_before(
    live: &mut ReadOnlyLedger,
    event_id: &str,
    chain: &str,
    at_offset: Option<&Entry>,
    range_start: i64,
) -> Result<bool, StoreError> {
    let acceptable_here = match at_offset.map(|e| &e.body) {
        None => true,
        Some(Body::Rejected { class, .. }) => *class == lifeledger_schemas::RejectClass::Conflict,
        Some(Body::Event { .. }) => false,
    };
    if !acceptable_here {
        return Ok(false);
    }
    let Some((first_chain, first_seq)) = live.find_event(event_id)? else {
        return Ok(false);
    };
    if first_chain != chain {
        return Ok(true);
    }
    let first_offset = live
        .entries(&first_chain, first_seq, first_seq)?
        .next()
        .transpose()?
        .and_then(|(_, e)| kafka_offset(&e));
    Ok(first_offset.is_some_and(|o| o < range_start))
}
