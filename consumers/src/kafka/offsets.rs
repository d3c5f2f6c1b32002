//! Does every offset of a topic hold exactly one entry across the ledgers
//! of a consumer group? Read from the topic itself, not from the ledgers'
//! own counters.
//!
//! Each partition is read from its earliest kept offset until the broker
//! has had nothing more to give for a quiet period (tansu 0.6 reports high
//! watermarks short of the last record, so they are not trusted as the
//! end). Every ledger's chain for the partition is read too. Per offset:
//!
//! * recorded once (an event or a rejected entry, in one ledger): exact;
//! * recorded in several ledgers, or twice in one: **duplicated**;
//! * recorded nowhere: **missing**, unless the message is an event whose
//!   id and bytes are recorded at another offset (a resend the ledger
//!   skipped as a duplicate, by design: *resend*);
//! * an offset in no chain but in a batch a ledger holds *staged* (its
//!   member died between the offset commit and the append) is reported
//!   with that ledger: starting its member again settles the batch;
//! * with the consumer group named, an offset recorded nowhere at or past
//!   the group's committed offset is *not consumed yet*, not missing;
//! * an offset in the read range the broker delivered no record for is
//!   *absent at the broker* (compaction, transaction markers): nothing to
//!   record. The check assumes the broker delivers every record it holds
//!   when read from the start of a partition, as Kafka and tansu do.
//! * entries at offsets the topic no longer holds (deleted by retention)
//!   are counted, not judged.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lifeledger_ledger::{Body, ReadOnlyLedger, Source, StoreError};
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use thiserror::Error;

use super::chain_name;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OffsetCheckError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("topic {0:?} has no partitions (does it exist?)")]
    NoSuchTopic(String),
    #[error("timed out after {0:?} reading the topic")]
    Timeout(Duration),
}

/// How many offsets of each kind a report names (all are counted).
const NAMED: usize = 20;

/// One partition's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionOffsets {
    pub partition: i32,
    /// The range read: `[first_offset, end_offset)`.
    pub first_offset: i64,
    pub end_offset: i64,
    pub messages: u64,
    pub recorded_once: u64,
    pub resends: u64,
    pub absent_at_broker: u64,
    pub missing: u64,
    /// Recorded nowhere, at or past the group's committed offset.
    pub unconsumed: u64,
    /// In no chain, but in a batch a ledger holds staged.
    pub staged: u64,
    /// The staged batches: (first offset, next offset, ledger).
    pub staged_in: Vec<(i64, i64, String)>,
    /// The group's committed offset, when a group was named.
    pub group_committed: Option<i64>,
    pub duplicated: u64,
    /// Entries at offsets the topic does not hold (any more).
    pub recorded_not_in_topic: u64,
    /// The first missing offsets.
    pub missing_offsets: Vec<i64>,
    /// The first duplicated offsets, with the ledgers that hold them.
    pub duplicated_offsets: Vec<(i64, Vec<String>)>,
    /// How many of the partition's offsets each ledger holds.
    pub per_ledger: Vec<u64>,
}

/// The whole check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffsetReport {
    pub topic: String,
    pub ledgers: Vec<String>,
    pub partitions: Vec<PartitionOffsets>,
    /// No offset missing, none duplicated, none waiting in a staged batch.
    pub exact: bool,
}

/// What to check.
#[derive(Debug, Clone)]
pub struct OffsetCheckRequest {
    pub client: ClientConfig,
    pub topic: String,
    /// The consumer group whose committed offsets tell consumed from not
    /// yet consumed; `None`: every unrecorded offset is missing.
    pub group: Option<String>,
    /// Stop reading a partition after this long without a message.
    pub quiet: Duration,
    pub timeout: Duration,
}

/// One ledger's record at an offset: which ledger holds it.
#[derive(Debug, Clone, Copy)]
struct Record {
    ledger: usize,
}

/// Reads the topic and the ledgers at `ledgers`, and judges every offset.
pub fn check_offsets(
    request: &OffsetCheckRequest,
    ledgers: &[PathBuf],
) -> Result<OffsetReport, OffsetCheckError> {
    let (consumer, partitions) =
        super::topic_reader(&request.client, "check-offsets", &request.topic)?;
    if partitions.is_empty() {
        return Err(OffsetCheckError::NoSuchTopic(request.topic.clone()));
    }
    let committed = match &request.group {
        Some(group) => group_committed(request, group, &partitions)?,
        None => HashMap::new(),
    };

    // The ledgers' records by (partition, offset), and where each event id
    // was recorded (for resends).
    let mut records: HashMap<(i32, i64), Vec<Record>> = HashMap::new();
    let mut staged: HashMap<i32, Vec<(i64, i64, usize)>> = HashMap::new();
    let mut event_ids: HashMap<String, Vec<(i32, i64, blake3::Hash)>> = HashMap::new();
    let mut names = Vec::new();
    for (index, path) in ledgers.iter().enumerate() {
        names.push(path.display().to_string());
        let store = |source| OffsetCheckError::Store {
            path: path.clone(),
            source,
        };
        // The staged batches, with those an earlier release kept in the
        // index database: a private copy of it.
        let ledger = ReadOnlyLedger::open_with_index_copy(path).map_err(store)?;
        for batch in ledger.ledger().staged_batches().map_err(store)? {
            if let Some((t, p)) = super::parse_chain_name(&batch.chain) {
                if t == request.topic {
                    staged.entry(p).or_default().push((
                        batch.first_offset,
                        batch.next_offset,
                        index,
                    ));
                }
            }
        }
        for p in &partitions {
            let chain = chain_name(&request.topic, *p);
            let Some(size) = ledger.head(&chain).map(|h| h.next_seq) else {
                continue;
            };
            if size == 0 {
                continue;
            }
            for item in ledger.entries(&chain, 0, size - 1).map_err(store)? {
                let (_, entry) = item.map_err(store)?;
                let Source::Kafka { offset, .. } = entry.source else {
                    continue;
                };
                if let Body::Event { event_id, raw, .. } = &entry.body {
                    event_ids.entry(event_id.clone()).or_default().push((
                        *p,
                        offset,
                        blake3::hash(raw),
                    ));
                }
                records
                    .entry((*p, offset))
                    .or_default()
                    .push(Record { ledger: index });
            }
        }
    }

    // The topic, every partition from its start.
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment.add_partition_offset(&request.topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut topic: BTreeMap<i32, BTreeMap<i64, Vec<u8>>> =
        partitions.iter().map(|p| (*p, BTreeMap::new())).collect();
    let began = Instant::now();
    let mut last = Instant::now();
    while last.elapsed() < request.quiet {
        if began.elapsed() > request.timeout {
            return Err(OffsetCheckError::Timeout(request.timeout));
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                last = Instant::now();
                if let Some(offsets) = topic.get_mut(&m.partition()) {
                    offsets.insert(m.offset(), m.payload().unwrap_or_default().to_vec());
                }
            }
            Some(Err(e)) => tracing::warn!("Kafka: {e}"),
            None => {}
        }
    }

    let mut report = OffsetReport {
        topic: request.topic.clone(),
        ledgers: names,
        partitions: Vec::new(),
        exact: true,
    };
    for (p, offsets) in &topic {
        let group_committed = committed.get(p).copied();
        let mut part = PartitionOffsets {
            partition: *p,
            per_ledger: vec![0; ledgers.len()],
            group_committed,
            ..PartitionOffsets::default()
        };
        let first = offsets.keys().next().copied().unwrap_or(0);
        let end = offsets.keys().next_back().map_or(0, |o| o + 1);
        part.first_offset = first;
        part.end_offset = end;
        part.messages = offsets.len() as u64;
        part.absent_at_broker = (end - first) as u64 - part.messages;
        for (offset, payload) in offsets {
            let here = records.get(&(*p, *offset)).map_or(&[][..], Vec::as_slice);
            for r in here {
                part.per_ledger[r.ledger] += 1;
            }
            match here.len() {
                1 => part.recorded_once += 1,
                0 => {
                    if is_resend(payload, *p, *offset, &event_ids) {
                        part.resends += 1;
                    } else if staged
                        .get(p)
                        .is_some_and(|b| b.iter().any(|(f, n, _)| f <= offset && offset < n))
                    {
                        part.staged += 1;
                    } else if request.group.is_some()
                        && group_committed.is_none_or(|c| *offset >= c)
                    {
                        part.unconsumed += 1;
                    } else {
                        part.missing += 1;
                        if part.missing_offsets.len() < NAMED {
                            part.missing_offsets.push(*offset);
                        }
                    }
                }
                _ => {
                    part.duplicated += 1;
                    if part.duplicated_offsets.len() < NAMED {
                        part.duplicated_offsets.push((
                            *offset,
                            here.iter()
                                .map(|r| report.ledgers[r.ledger].clone())
                                .collect(),
                        ));
                    }
                }
            }
        }
        part.recorded_not_in_topic = records
            .keys()
            .filter(|(rp, o)| rp == p && !offsets.contains_key(o))
            .count() as u64;
        part.staged_in = staged
            .get(p)
            .map(|b| {
                b.iter()
                    .map(|(f, n, l)| (*f, *n, report.ledgers[*l].clone()))
                    .collect()
            })
            .unwrap_or_default();
        if part.missing > 0 || part.duplicated > 0 || part.staged > 0 {
            report.exact = false;
        }
        report.partitions.push(part);
    }
    Ok(report)
}

/// The group's committed offset per partition.
fn group_committed(
    request: &OffsetCheckRequest,
    group: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, OffsetCheckError> {
    let mut client = request.client.clone();
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let consumer = super::ClosingConsumer::new(
        client.create()?,
        format!("the reader of group {group}'s offsets"),
        Duration::from_secs(10),
    );
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(&request.topic, *p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(30))?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Whether the message at `offset` is an event whose id and bytes are
/// recorded at another offset of the partition.
fn is_resend(
    payload: &[u8],
    partition: i32,
    offset: i64,
    event_ids: &HashMap<String, Vec<(i32, i64, blake3::Hash)>>,
) -> bool {
    let Ok(event) = lifeledger_schemas::decode_event(payload) else {
        return false;
    };
    let hash = blake3::hash(payload);
    event_ids.get(&event.event_id).is_some_and(|seen| {
        seen.iter()
            .any(|(p, o, h)| (*p != partition || *o != offset) && *h == hash)
    })
}
