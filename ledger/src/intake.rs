//! What received bytes become: an event entry, a rejected entry, or a
//! skipped duplicate. Pure: the store looks up what it has seen and asks
//! [`resolve`] what to do.

use lifeledger_schemas::{Event, Kind, RejectClass, canonical_json, decode_event};

use crate::entry::{Body, Source, encode_source};

/// Bytes as they arrived, and where from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub source: Source,
    pub raw: Vec<u8>,
}

/// Size limits applied before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeLimits {
    /// Larger inputs are rejected as oversize.
    pub max_event_bytes: usize,
    /// How much of an oversize input the rejected entry keeps.
    pub oversize_kept_bytes: usize,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        IntakeLimits {
            max_event_bytes: 64 * 1024,
            oversize_kept_bytes: 4 * 1024,
        }
    }
}

/// Received bytes after decoding, before the store's duplicate check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    Event {
        event_id: String,
        raw: Vec<u8>,
        canonical: Vec<u8>,
        /// The event decoded, which `canonical` decodes to again: handed
        /// on so that a writer's projection need not decode it twice.
        event: Box<Event>,
        source: Source,
    },
    Rejected {
        raw: Vec<u8>,
        class: RejectClass,
        reason: String,
        /// Identifies this input at this source, so that reading the same
        /// bad input again is a duplicate, not a second rejection.
        key: [u8; 32],
        source: Source,
    },
}

/// Where an event id was first recorded, and a hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    pub chain: String,
    pub seq: u64,
    pub raw_hash: [u8; 32],
}

/// What the store should do with classified input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Append {
        body: Body,
        source: Source,
        /// The decoded event of an event body (see [`Classified::Event`]).
        event: Option<Box<Event>>,
    },
    Duplicate,
}

fn rejection_key(source: &Source, raw: &[u8]) -> [u8; 32] {
    rejection_key_of_hash(source, blake3::hash(raw).as_bytes())
}

fn rejection_key_of_hash(source: &Source, raw_hash: &[u8; 32]) -> [u8; 32] {
    let mut encoded = Vec::with_capacity(64);
    encode_source(source, &mut encoded);
    let mut hasher = blake3::Hasher::new_derive_key("lifeledger 2026-11 rejection key v1");
    hasher.update(&encoded);
    hasher.update(raw_hash);
    *hasher.finalize().as_bytes()
}

/// The duplicate key of a rejection as stored: the same key its input got
/// when it was received. An oversize rejection keeps only the first bytes,
/// so its key comes from the hash of the whole input its reason states.
pub fn stored_rejection_key(
    source: &Source,
    raw: &[u8],
    class: RejectClass,
    reason: &str,
) -> [u8; 32] {
    if class == RejectClass::Oversize {
        let stated = reason
            .rsplit("blake3 of all: ")
            .next()
            .and_then(|h| hex::decode(h.trim()).ok())
            .and_then(|v| <[u8; 32]>::try_from(v).ok());
        if let Some(hash) = stated {
            return rejection_key_of_hash(source, &hash);
        }
    }
    rejection_key(source, raw)
}

fn rejected(source: Source, raw: Vec<u8>, class: RejectClass, reason: String) -> Classified {
    let key = rejection_key(&source, &raw);
    Classified::Rejected {
        raw,
        class,
        reason,
        key,
        source,
    }
}

/// Inputs below this count are classified on the calling thread alone.
const PARALLEL_FROM: usize = 512;

/// Classifies many inputs, in order, on two threads when there are enough
/// of them to pay for one: decoding and canonicalising are most of an
/// append's work, and each input's is independent of the others'.
pub fn classify_all(inputs: Vec<Incoming>, limits: &IntakeLimits) -> Vec<Classified> {
    if inputs.len() < PARALLEL_FROM {
        return inputs.into_iter().map(|i| classify(i, limits)).collect();
    }
    let mut first = inputs;
    let second = first.split_off(first.len() / 2);
    // classify does not panic on any input; if it ever did, the panic
    // belongs to the caller, as on one thread.
    let (mut out, rest) = crate::side_by_side::side_by_side(
        || {
            first
                .into_iter()
                .map(|i| classify(i, limits))
                .collect::<Vec<Classified>>()
        },
        || {
            second
                .into_iter()
                .map(|i| classify(i, limits))
                .collect::<Vec<_>>()
        },
    );
    out.extend(rest);
    out
}

/// Decodes received bytes. Never fails: bad input becomes a rejection that
/// keeps the bytes and says why.
pub fn classify(incoming: Incoming, limits: &IntakeLimits) -> Classified {
    let Incoming { source, raw } = incoming;
    if raw.len() > limits.max_event_bytes {
        let reason = format!(
            "input is {} bytes, over the limit of {}; the first {} bytes are kept, blake3 of all: {}",
            raw.len(),
            limits.max_event_bytes,
            limits.oversize_kept_bytes.min(raw.len()),
            blake3::hash(&raw).to_hex()
        );
        let key = rejection_key(&source, &raw);
        let mut kept = raw;
        kept.truncate(limits.oversize_kept_bytes);
        return Classified::Rejected {
            raw: kept,
            class: RejectClass::Oversize,
            reason,
            key,
            source,
        };
    }
    match decode_event(&raw) {
        Ok(event) => Classified::Event {
            canonical: canonical_json(&event),
            event_id: event.event_id.clone(),
            event: Box::new(event),
            raw,
            source,
        },
        Err(err) => {
            let class = err.class();
            rejected(source, raw, class, err.to_string())
        }
    }
}

/// The kinds of record only the ledger itself writes, each on a chain of
/// its own: `policy_published` on chain `policy` (by `policy publish`) and
/// `history_imported` on chain `imports` (by `ingest --backfill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerRecord {
    PolicyPublished,
    HistoryImported,
}

impl LedgerRecord {
    pub fn chain(self) -> &'static str {
        match self {
            LedgerRecord::PolicyPublished => crate::projection::POLICY_CHAIN,
            LedgerRecord::HistoryImported => crate::projection::IMPORTS_CHAIN,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            LedgerRecord::PolicyPublished => "policy_published",
            LedgerRecord::HistoryImported => "history_imported",
        }
    }

    fn writer(self) -> &'static str {
        match self {
            LedgerRecord::PolicyPublished => "`lifeledger policy publish`",
            LedgerRecord::HistoryImported => "`lifeledger ingest --backfill`",
        }
    }

    /// The ledger record a chain is reserved for, if any.
    pub fn of_chain(chain: &str) -> Option<LedgerRecord> {
        [LedgerRecord::PolicyPublished, LedgerRecord::HistoryImported]
            .into_iter()
            .find(|r| r.chain() == chain)
    }

    /// The ledger record an event is, if any.
    pub fn of_event(event: &Event) -> Option<LedgerRecord> {
        match event.kind {
            Kind::PolicyPublished(_) => Some(LedgerRecord::PolicyPublished),
            Kind::HistoryImported(_) => Some(LedgerRecord::HistoryImported),
            _ => None,
        }
    }

    /// The ledger record a canonical event is, if any.
    pub fn of_canonical(canonical: &[u8]) -> Option<LedgerRecord> {
        if is_policy_publication(canonical) {
            Some(LedgerRecord::PolicyPublished)
        } else if is_import_declaration(canonical) {
            Some(LedgerRecord::HistoryImported)
        } else {
            None
        }
    }
}

/// Keeps the ledger's own records to the ledger: anything else sent to a
/// reserved chain (`policy`, `imports`), and a `policy_published` or
/// `history_imported` event sent anywhere else or not by the ledger
/// (`writing`: the record the ledger is writing now), becomes a rejection
/// that says so (class schema). Otherwise a publication or a declaration
/// could be forged by any producer: naming an older, laxer policy, or
/// excusing late reports as imported history.
pub fn guard_policy_chain(
    classified: Classified,
    chain: &str,
    writing: Option<LedgerRecord>,
) -> Classified {
    let reserved = LedgerRecord::of_chain(chain);
    match classified {
        Classified::Event {
            raw,
            source,
            canonical,
            event_id,
            event,
        } => {
            let record = LedgerRecord::of_canonical(&canonical);
            let reason = match (record, reserved) {
                (Some(r), Some(c)) if r == c && writing == Some(r) => None,
                (Some(r), _) => Some(format!(
                    "a {} event is accepted only from {}, on chain {:?}",
                    r.kind(),
                    r.writer(),
                    r.chain()
                )),
                (None, Some(c)) => Some(format!(
                    "chain {:?} holds only {} records, written by {}",
                    c.chain(),
                    c.kind(),
                    c.writer()
                )),
                (None, None) => None,
            };
            match reason {
                Some(reason) => rejected(source, raw, RejectClass::Schema, reason),
                None => Classified::Event {
                    raw,
                    source,
                    canonical,
                    event_id,
                    event,
                },
            }
        }
        rejected_input => rejected_input,
    }
}

/// Whether canonical event JSON is of kind `policy_published`.
pub fn is_policy_publication(canonical: &[u8]) -> bool {
    is_kind(canonical, b"policy_published", "policy_published")
}

/// Whether canonical event JSON is of kind `history_imported`.
pub fn is_import_declaration(canonical: &[u8]) -> bool {
    is_kind(canonical, b"history_imported", "history_imported")
}

fn is_kind(canonical: &[u8], needle: &'static [u8], kind: &str) -> bool {
    static FINDERS: std::sync::OnceLock<[memchr::memmem::Finder<'static>; 2]> =
        std::sync::OnceLock::new();
    let finders = FINDERS.get_or_init(|| {
        [
            memchr::memmem::Finder::new(b"policy_published"),
            memchr::memmem::Finder::new(b"history_imported"),
        ]
    });
    let found = finders.iter().find(|f| f.needle() == needle).map_or_else(
        || memchr::memmem::find(canonical, needle).is_some(),
        |f| f.find(canonical).is_some(),
    );
    if !found {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(canonical).is_ok_and(|v| v["kind"]["type"] == kind)
}

/// Decides on classified input, given what the ledger has seen before.
///
/// `seen_event` is the earlier record of the event's id, if any. An id seen
/// with the same bytes is a duplicate; with different bytes, a conflict to be
/// rejected. `seen_rejection` answers whether a rejection with this key was
/// recorded before (reading the same bad input twice rejects it once); it is
/// the store's lookup, and its error is passed through.
pub fn resolve<E>(
    classified: Classified,
    seen_event: Option<&SeenEvent>,
    seen_rejection: impl FnOnce(&[u8; 32]) -> Result<bool, E>,
) -> Result<Admission, E> {
    match into_conflict(classified, seen_event) {
        Classified::Event {
            event_id,
            raw,
            canonical,
            source,
            event,
            ..
        } => Ok(match seen_event {
            None => Admission::Append {
                body: Body::Event {
                    raw,
                    event_id,
                    canonical,
                },
                source,
                event: Some(event),
            },
            // into_conflict turned differing bytes into a rejection.
            Some(_) => Admission::Duplicate,
        }),
        Classified::Rejected {
            raw,
            class,
            reason,
            source,
            key,
        } => Ok(if seen_rejection(&key)? {
            Admission::Duplicate
        } else {
            Admission::Append {
                body: Body::Rejected { raw, class, reason },
                source,
                event: None,
            }
        }),
    }
}

/// If `classified` is an event whose id was recorded with different bytes,
/// the rejection that records the conflict; otherwise `classified` itself.
/// The bytes are hashed only here, for an id seen before: a new id (nearly
/// every event) needs no hash of its bytes.
fn into_conflict(classified: Classified, seen_event: Option<&SeenEvent>) -> Classified {
    match (classified, seen_event) {
        (
            Classified::Event {
                event_id,
                raw,
                source,
                canonical,
                event,
            },
            Some(seen),
        ) => {
            let raw_hash = *blake3::hash(&raw).as_bytes();
            if seen.raw_hash == raw_hash {
                return Classified::Event {
                    event_id,
                    raw,
                    source,
                    canonical,
                    event,
                };
            }
            let reason = format!(
                "event id {event_id:?} was first recorded at chain {:?} seq {} with different bytes \
                 (blake3 {} there, {} here)",
                seen.chain,
                seen.seq,
                hex::encode(seen.raw_hash),
                hex::encode(raw_hash)
            );
            rejected(source, raw, RejectClass::Conflict, reason)
        }
        (classified, _) => classified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(raw: &str) -> Incoming {
        Incoming {
            source: Source::File {
                path: "in.jsonl".into(),
                line: 3,
            },
            raw: raw.as_bytes().to_vec(),
        }
    }

    fn never_seen(_: &[u8; 32]) -> Result<bool, ()> {
        Ok(false)
    }

    const EVENT: &str = r#"{"schema_version":1,"event_id":"e1","event_time":"2026-01-05T10:00:00Z","account":{"app_id":"1","uin":"2"},"item_id":"i1","category":"asset_management","kind":{"type":"stored","store":"mongodb"}}"#;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Two threads classify exactly as one does, in the same order.
        #[test]
        fn classifying_in_parallel_changes_nothing(
            kinds in proptest::collection::vec(0u8..3, 0..1500)
        ) {
            let inputs: Vec<Incoming> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| match k {
                    0 => incoming(&EVENT.replace("\"e1\"", &format!("\"e{i}\""))),
                    1 => incoming(&format!("garbage {i}")),
                    _ => incoming(&EVENT.replace("stored", "stared")),
                })
                .collect();
            let limits = IntakeLimits::default();
            let one: Vec<Classified> = inputs.iter().cloned().map(|i| classify(i, &limits)).collect();
            proptest::prop_assert_eq!(classify_all(inputs, &limits), one);
        }
    }

    #[test]
    fn garbage_is_rejected_with_its_bytes() {
        let c = classify(incoming("not json"), &IntakeLimits::default());
        match c {
            Classified::Rejected {
                raw, class, reason, ..
            } => {
                assert_eq!(raw, b"not json");
                assert_eq!(class, RejectClass::Malformed);
                assert!(reason.contains("line 1 column"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversize_keeps_a_prefix_and_says_so() {
        let limits = IntakeLimits {
            max_event_bytes: 10,
            oversize_kept_bytes: 4,
        };
        match classify(incoming("0123456789abc"), &limits) {
            Classified::Rejected {
                raw, class, reason, ..
            } => {
                assert_eq!(raw, b"0123");
                assert_eq!(class, RejectClass::Oversize);
                assert!(
                    reason.starts_with("input is 13 bytes, over the limit of 10"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn same_bytes_are_a_duplicate_and_different_bytes_a_conflict() {
        let first = classify(incoming(EVENT), &IntakeLimits::default());
        let Classified::Event { raw, .. } = &first else {
            panic!("{first:?}")
        };
        let seen = SeenEvent {
            chain: "file".into(),
            seq: 0,
            raw_hash: *blake3::hash(raw).as_bytes(),
        };
        let again = classify(incoming(EVENT), &IntakeLimits::default());
        assert_eq!(
            resolve(again, Some(&seen), never_seen),
            Ok(Admission::Duplicate)
        );

        let changed = EVENT.replace("mongodb", "mysql");
        let changed = classify(incoming(&changed), &IntakeLimits::default());
        match resolve(changed, Some(&seen), never_seen) {
            Ok(Admission::Append {
                body: Body::Rejected { class, reason, .. },
                ..
            }) => {
                assert_eq!(class, RejectClass::Conflict);
                assert!(reason.contains("chain \"file\" seq 0"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_rejection_seen_before_is_a_duplicate() {
        let c = classify(incoming("nope"), &IntakeLimits::default());
        assert_eq!(
            resolve(c, None, |_| Ok::<_, ()>(true)),
            Ok(Admission::Duplicate)
        );
    }
}
