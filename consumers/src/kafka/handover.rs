//! Who holds a partition, and whose ledger records which batch, as the
//! group's custody log tells it (pure).
//!
//! Kafka fences a stale member's offset commits by the group's
//! generation; tansu 0.6 does not, and keeps no commit metadata. With
//! unfenced commits the group's committed offset cannot say where a
//! partition's records end: a member that lost the partition without
//! noticing can commit after its new owner read the offset, and move it
//! past a batch that is then in no ledger. So the custody topic (one
//! partition, totally ordered) is the partition's offset store, and the
//! group's committed offset is only advice.
//!
//! * A member assigned partitions appends a *claim* for them before it
//!   reads them. The claim's offset in the custody topic names the
//!   member's tenure of each partition.
//! * A member that has staged a batch (durable, in no chain) appends a
//!   *hold*: for each partition of the write, its claim and the batch's
//!   next offset. It then reads the custody topic up to its end. A hold is
//!   **valid** if the latest claim of its partition before it is the
//!   hold's own claim: no other member took the partition in between.
//!   A valid hold's batch is this member's to append; an invalid one's is
//!   dropped, and the partition's new owner reads it.
//! * A member taking a partition resumes at the end of the partition's
//!   last valid hold (all of them lie before its claim: after the claim,
//!   only its own holds can be valid). Only when the custody log holds no
//!   valid hold of the partition does it fall back to the group's
//!   committed offset (a group that has never run this protocol).
//!
//! Every decision is a function of the custody topic's order, which every
//! member reads alike: a hold landing after a claim is invalid whenever
//! it is read, so a batch is recorded by exactly one ledger, or by none
//! and read again. A member that dies between its hold and its append
//! leaves the batch staged; the batch's token names the claim, and the
//! custody log tells its fate when the member next reads it: valid (append
//! it), invalid or never held before a later claim (drop it), or, with no
//! later claim yet, not decided (a hold may still be on its way).
//!
//! Validity is the same fact for every hold under one claim up to the
//! first later claim, so the state kept per partition is one *tenure* per
//! claim, with the end of its valid holds: memory grows with the number
//! of assignments, not with the number of batches.

use std::collections::HashMap;

/// A staged batch's token: the offset of the claim it was staged under,
/// and a random nonce. Written `cCLAIM-NONCE`; it is also the advisory
/// commit's metadata, for people reading the group's offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchToken {
    pub claim: i64,
    pub nonce: String,
}

impl BatchToken {
    pub fn encode(&self) -> String {
        format!("c{}-{}", self.claim, self.nonce)
    }

    pub fn parse(token: &str) -> Option<BatchToken> {
        let (claim, nonce) = token.strip_prefix('c')?.split_once('-')?;
        if nonce.is_empty()
            || !nonce.bytes().all(|b| b.is_ascii_alphanumeric())
            || claim.is_empty()
            || !claim.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(BatchToken {
            claim: claim.parse().ok()?,
            nonce: nonce.to_owned(),
        })
    }
}

/// One partition's batch in a hold: recorded under `claim`, ending before
/// `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBatch {
    pub topic: String,
    pub partition: i32,
    pub claim: i64,
    pub next: i64,
}

/// One custody record of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustodyRecord {
    /// A member is taking these partitions (topic, partition).
    Claim {
        group: String,
        partitions: Vec<(String, i32)>,
    },
    /// A member has staged these batches and will append each whose hold
    /// is valid.
    Hold {
        group: String,
        batches: Vec<HeldBatch>,
    },
}

const PREFIX: &str = "lifeledger-custody/2";

/// Kafka topic names are `[a-zA-Z0-9._-]`: none of the separators below.
fn topic_name(s: &str) -> Option<&str> {
    (!s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
    .then_some(s)
}

fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

impl CustodyRecord {
    pub fn group(&self) -> &str {
        match self {
            CustodyRecord::Claim { group, .. } | CustodyRecord::Hold { group, .. } => group,
        }
    }

    /// The record's key: the group (one key per group keeps a group's
    /// records in order even if the topic ever had more partitions).
    pub fn key(&self) -> String {
        self.group().to_owned()
    }

    /// `lifeledger-custody/2 group=G claim TOPIC/PARTITION …`, or
    /// `lifeledger-custody/2 group=G hold TOPIC/PARTITION@CLAIM=NEXT …`.
    pub fn encode(&self) -> String {
        match self {
            CustodyRecord::Claim { group, partitions } => {
                let mut s = format!("{PREFIX} group={group} claim");
                for (t, p) in partitions {
                    s.push_str(&format!(" {t}/{p}"));
                }
                s
            }
            CustodyRecord::Hold { group, batches } => {
                let mut s = format!("{PREFIX} group={group} hold");
                for b in batches {
                    s.push_str(&format!(
                        " {}/{}@{}={}",
                        b.topic, b.partition, b.claim, b.next
                    ));
                }
                s
            }
        }
    }

    pub fn parse(text: &str) -> Option<CustodyRecord> {
        let mut words = text.split(' ');
        if words.next()? != PREFIX {
            return None;
        }
        let group = words.next()?.strip_prefix("group=")?;
        if group.is_empty() {
            return None;
        }
        let group = group.to_owned();
        let kind = words.next()?;
        let partition_of = |w: &str| -> Option<(String, i32)> {
            let (t, p) = w.split_once('/')?;
            Some((topic_name(t)?.to_owned(), number(p)?))
        };
        let record = match kind {
            "claim" => CustodyRecord::Claim {
                group,
                partitions: words.map(partition_of).collect::<Option<Vec<_>>>()?,
            },
            "hold" => CustodyRecord::Hold {
                group,
                batches: words
                    .map(|w| {
                        let (at, next) = w.split_once('=')?;
                        let (tp, claim) = at.split_once('@')?;
                        let (topic, partition) = partition_of(tp)?;
                        Some(HeldBatch {
                            topic,
                            partition,
                            claim: number(claim)?,
                            next: number(next)?,
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            },
            _ => return None,
        };
        Some(record)
    }
}

/// What became of a staged batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Its hold was valid: append it here.
    Landed,
    /// Its hold was invalid, or never landed before another claim: drop
    /// it here; the partition's owner reads it.
    NotLanded,
}

/// A group's partition of a topic: (group, topic, partition).
type Partition = (String, String, i32);

/// One claim of a partition, and how far the valid holds under it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tenure {
    claim: i64,
    through: Option<i64>,
}

/// The custody log folded: per partition, its tenures in order.
#[derive(Debug, Default, Clone)]
pub struct Custody {
    tenures: HashMap<Partition, Vec<Tenure>>,
}

impl Custody {
    /// Folds in the record at offset `at` (records must come in order).
    pub fn apply(&mut self, at: i64, record: &CustodyRecord) {
        match record {
            CustodyRecord::Claim { group, partitions } => {
                for (topic, partition) in partitions {
                    self.tenures
                        .entry((group.clone(), topic.clone(), *partition))
                        .or_default()
                        .push(Tenure {
                            claim: at,
                            through: None,
                        });
                }
            }
            CustodyRecord::Hold { group, batches } => {
                for b in batches {
                    let key = (group.clone(), b.topic.clone(), b.partition);
                    // Valid only under the partition's latest claim.
                    if let Some(t) = self
                        .tenures
                        .get_mut(&key)
                        .and_then(|ts| ts.last_mut())
                        .filter(|t| t.claim == b.claim)
                    {
                        t.through = Some(t.through.map_or(b.next, |n| n.max(b.next)));
                    }
                }
            }
        }
    }

    fn of(&self, group: &str, topic: &str, partition: i32) -> &[Tenure] {
        self.tenures
            .get(&(group.to_owned(), topic.to_owned(), partition))
            .map_or(&[][..], Vec::as_slice)
    }

    /// Whether `claim` is still the partition's latest claim.
    pub fn holds(&self, group: &str, topic: &str, partition: i32, claim: i64) -> bool {
        self.of(group, topic, partition)
            .last()
            .is_some_and(|t| t.claim == claim)
    }

    /// Where a member taking the partition resumes: the end of its last
    /// valid hold (`None`: no valid hold in the log).
    pub fn resume_point(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.of(group, topic, partition)
            .iter()
            .filter_map(|t| t.through)
            .max()
    }

    /// The fate of a batch staged under `claim` and ending before `next`
    /// (`None`: no later claim yet, and no valid hold of it: its hold may
    /// still be on its way).
    pub fn fate(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        claim: i64,
        next: i64,
    ) -> Option<Fate> {
        let tenures = self.of(group, topic, partition);
        let later_claim = tenures.last().is_some_and(|t| t.claim > claim);
        match tenures.iter().find(|t| t.claim == claim) {
            // A later valid hold under the same claim vouches for this
            // batch too: a member stops holding under a claim at its first
            // invalid hold.
            Some(t) if t.through.is_some_and(|n| n >= next) => Some(Fate::Landed),
            _ if later_claim => Some(Fate::NotLanded),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const G: &str = "g";
    const T: &str = "t";

    fn claim(partitions: &[i32]) -> CustodyRecord {
        CustodyRecord::Claim {
            group: G.into(),
            partitions: partitions.iter().map(|p| (T.into(), *p)).collect(),
        }
    }

    fn hold(partition: i32, claim: i64, next: i64) -> CustodyRecord {
        CustodyRecord::Hold {
            group: G.into(),
            batches: vec![HeldBatch {
                topic: T.into(),
                partition,
                claim,
                next,
            }],
        }
    }

    /// A member of the model below.
    #[derive(Debug, Default, Clone)]
    struct Member {
        /// Its claim and its read position while it holds the partition.
        tenure: Option<(i64, i64)>,
        /// A batch read but not yet held: (first, next).
        read: Option<(i64, i64)>,
        /// A batch held, its fate not yet looked up: (claim, first, next).
        staged: Option<(i64, i64, i64)>,
        ledger: Vec<(i64, i64)>,
    }

    #[derive(Debug, Clone)]
    enum Action {
        Claim,
        Read(i64),
        Hold,
        Settle,
        Crash,
    }

    fn action() -> impl Strategy<Value = (usize, Action)> {
        (
            0usize..3,
            prop_oneof![
                Just(Action::Claim),
                (1i64..6).prop_map(Action::Read),
                Just(Action::Hold),
                Just(Action::Settle),
                Just(Action::Crash),
            ],
        )
    }

    /// Looks a staged batch's fate up, as a member does after reading the
    /// custody log to its end; appends or drops it.
    fn settle(m: &mut Member, log: &Custody, must_decide: bool) -> Result<(), TestCaseError> {
        let Some((c, first, next)) = m.staged else {
            return Ok(());
        };
        match log.fate(G, T, 0, c, next) {
            Some(Fate::Landed) => {
                m.ledger.push((first, next));
                if let Some((tc, pos)) = m.tenure.as_mut() {
                    if *tc == c {
                        *pos = next;
                    }
                }
                m.staged = None;
            }
            Some(Fate::NotLanded) => {
                if m.tenure.is_some_and(|(tc, _)| tc == c) {
                    m.tenure = None;
                }
                m.staged = None;
            }
            None => prop_assert!(!must_decide, "undecided after a later claim"),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn a_custody_record_parses_back_to_itself(
            group in "[a-z][a-z0-9._-]{0,20}",
            parts in proptest::collection::vec(("[a-zA-Z0-9._-]{1,20}", 0i32..1000, 0i64..i64::MAX, 0i64..i64::MAX), 0..5),
            is_claim in any::<bool>(),
        ) {
            let r = if is_claim {
                CustodyRecord::Claim { group, partitions: parts.into_iter().map(|(t, p, _, _)| (t, p)).collect() }
            } else {
                CustodyRecord::Hold { group, batches: parts.into_iter().map(|(topic, partition, claim, next)| HeldBatch { topic, partition, claim, next }).collect() }
            };
            prop_assert_eq!(CustodyRecord::parse(&r.encode()), Some(r));
        }

        #[test]
        fn other_text_is_not_a_custody_record(s in "[ -~]{0,60}") {
            prop_assume!(!s.starts_with(PREFIX));
            prop_assert_eq!(CustodyRecord::parse(&s), None);
        }

        /// A model of one partition's life with three members acting in any
        /// interleaving, as an unfenced broker allows: any member may
        /// claim at any time (even while another believes it holds the
        /// partition), read a batch from its position, hold it (append a
        /// hold to the custody log), look the batch's fate up later (after
        /// any number of other members' steps), or crash (keeping only its
        /// ledger and its staged batch, decided at its next claim). At the
        /// end one member claims the partition and reads it to the end.
        /// Every offset read is then in exactly one ledger.
        #[test]
        fn every_offset_lands_in_exactly_one_ledger(
            actions in proptest::collection::vec(action(), 1..80),
        ) {
            let mut log = Custody::default();
            let mut offset = 0i64;
            let mut members = vec![Member::default(); 3];
            let mut end = 0i64;
            let take = |m: &mut Member, log: &mut Custody, offset: &mut i64| -> Result<(), TestCaseError> {
                log.apply(*offset, &claim(&[0]));
                let c = *offset;
                *offset += 1;
                // A batch left staged is decided now: a later claim exists.
                settle(m, log, true)?;
                m.read = None;
                m.tenure = Some((c, log.resume_point(G, T, 0).unwrap_or(0)));
                Ok(())
            };
            for (who, act) in actions {
                let m = &mut members[who];
                match act {
                    Action::Claim => take(m, &mut log, &mut offset)?,
                    Action::Read(size) => {
                        if let (Some((_, pos)), None, None) = (m.tenure, m.read, m.staged) {
                            m.read = Some((pos, pos + size));
                            end = end.max(pos + size);
                        }
                    }
                    Action::Hold => {
                        if let (Some((c, _)), Some((first, next))) = (m.tenure, m.read.take()) {
                            log.apply(offset, &hold(0, c, next));
                            offset += 1;
                            m.staged = Some((c, first, next));
                        }
                    }
                    // Its own hold is in the log: always decided.
                    Action::Settle => settle(m, &log, true)?,
                    Action::Crash => {
                        m.tenure = None;
                        m.read = None;
                    }
                }
            }
            // The last owner reads to the end.
            let m = &mut members[0];
            take(m, &mut log, &mut offset)?;
            if let Some((c, pos)) = m.tenure {
                if pos < end {
                    log.apply(offset, &hold(0, c, end));
                    m.staged = Some((c, pos, end));
                    settle(m, &log, true)?;
                }
            }
            // Batches others left staged are decided by that last claim.
            for m in members.iter_mut() {
                settle(m, &log, true)?;
            }
            let mut all: Vec<(i64, i64)> = members.iter().flat_map(|m| m.ledger.clone()).collect();
            all.sort();
            let mut expect = 0;
            for (first, next) in all {
                prop_assert_eq!(first, expect, "offsets {}..{} recorded twice or missing", first.min(expect), first.max(expect));
                expect = next;
            }
            prop_assert_eq!(expect, end);
        }
    }

    #[test]
    fn tokens_name_their_claim() {
        let t = BatchToken {
            claim: 7,
            nonce: "ab12".into(),
        };
        assert_eq!(t.encode(), "c7-ab12");
        assert_eq!(BatchToken::parse("c7-ab12"), Some(t));
        // Tokens of the first protocol named a resume record: not claims.
        assert_eq!(BatchToken::parse("7-ab12"), None);
        assert_eq!(BatchToken::parse("cx-ab12"), None);
        assert_eq!(BatchToken::parse("c7-"), None);
        assert_eq!(BatchToken::parse("c-ab"), None);
    }

    #[test]
    fn records_read_as_written() {
        let r = CustodyRecord::Hold {
            group: "ledger".into(),
            batches: vec![
                HeldBatch {
                    topic: "events".into(),
                    partition: 3,
                    claim: 12,
                    next: 400,
                },
                HeldBatch {
                    topic: "events".into(),
                    partition: 5,
                    claim: 14,
                    next: 90,
                },
            ],
        };
        assert_eq!(
            r.encode(),
            "lifeledger-custody/2 group=ledger hold events/3@12=400 events/5@14=90"
        );
        assert_eq!(
            CustodyRecord::parse("lifeledger-custody/2 group=ledger claim events/3 events/5"),
            Some(CustodyRecord::Claim {
                group: "ledger".into(),
                partitions: vec![("events".into(), 3), ("events".into(), 5)],
            })
        );
        // The first protocol's records are not read as this one's.
        assert_eq!(
            CustodyRecord::parse("lifeledger-custody/1 group=g topic=t partition=0 claim"),
            None
        );
        assert_eq!(
            CustodyRecord::parse("lifeledger-custody/2 group=g hold t/0@x=4"),
            None
        );
    }

    /// The loss an unfenced commit caused under the first protocol: a
    /// stale member's batch, held after the new owner's claim, is
    /// invalid; the new owner resumes at the last valid hold; when it
    /// loses the partition without reading, the next owner resumes there
    /// too, not past the stale member's batch.
    #[test]
    fn a_stale_hold_moves_nobody() {
        let mut log = Custody::default();
        log.apply(0, &claim(&[0])); // member 2 takes the partition
        log.apply(1, &hold(0, 0, 26922));
        log.apply(2, &claim(&[0])); // member 3 takes it
        assert_eq!(log.resume_point(G, T, 0), Some(26922));
        log.apply(3, &hold(0, 0, 27222)); // member 2's stale hold
        assert_eq!(log.fate(G, T, 0, 0, 27222), Some(Fate::NotLanded));
        assert_eq!(log.fate(G, T, 0, 0, 26922), Some(Fate::Landed));
        assert!(!log.holds(G, T, 0, 0));
        assert!(log.holds(G, T, 0, 2));
        log.apply(4, &claim(&[0])); // member 4, member 3 having read nothing
        assert_eq!(log.resume_point(G, T, 0), Some(26922));
    }

    #[test]
    fn without_a_later_claim_an_unseen_hold_is_undecided() {
        let mut log = Custody::default();
        log.apply(0, &claim(&[0, 1]));
        log.apply(1, &hold(0, 0, 10));
        assert_eq!(log.fate(G, T, 0, 0, 10), Some(Fate::Landed));
        assert_eq!(log.fate(G, T, 0, 0, 20), None);
        assert_eq!(log.fate(G, T, 1, 0, 5), None);
        assert_eq!(log.resume_point(G, T, 1), None);
        // A hold under a claim of another partition is nobody's.
        log.apply(2, &hold(1, 7, 5));
        assert_eq!(log.resume_point(G, T, 1), None);
        log.apply(3, &claim(&[1]));
        assert_eq!(log.fate(G, T, 1, 0, 5), Some(Fate::NotLanded));
    }
}
