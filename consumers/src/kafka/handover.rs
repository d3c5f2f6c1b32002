//! Who recorded a batch, as the group's custody log tells it (pure).
//!
//! A member stages a batch in its ledger, then commits the batch's next
//! offset to the group, then appends the batch to its chain. If it dies
//! between the stage and the append, the batch's fate is decided by
//! whether the commit landed before the partition was next handed over:
//! if it did, the next owner resumed past the batch and this ledger must
//! append it; if it did not, the next owner read the batch again and this
//! ledger must drop it.
//!
//! The group's committed offset alone cannot tell once later owners have
//! committed past the batch. So every member, when a partition is assigned
//! to it, appends to the custody topic (one partition, totally ordered),
//! before reading the partition, first a *claim* and then, once the claim
//! is in the topic, a *resume record*: the offset the group had committed
//! when the member took the partition, read after the claim landed, which
//! is where it resumes. A staged batch's token names the resume record
//! under which it was staged. Its fate is read from the first resume record
//! of the same partition after that one: the next owner resumed past the
//! batch, or read it again. Without a later record, a committed offset at
//! or past the batch's end means the commit landed (nobody else can have
//! moved the group there without taking the partition, which writes a
//! record first); one before it decides nothing yet, since a dead member's
//! last commit may still be on its way: the batch waits, staged, for the
//! next handover.
//!
//! Why a claim first: a member that has committed a batch looks at the
//! custody topic, up to its end, before appending the batch. Any record of
//! the partition there after its own claim (other than its own resume
//! record) means another member is taking the partition, and the handover
//! decides. A claim that lands after that look was written after the
//! commit landed, so the committed offset its member reads next is already
//! past the batch: the new owner does not read the batch again. Were the
//! committed offset read before the record was written, a commit could
//! land in between, unseen by both members, and the batch be recorded
//! twice.
//!
//! This needs nothing of the broker but a topic: no commit metadata (tansu
//! 0.6 returns none), no generation fencing (tansu 0.6 has none).

/// A staged batch's token: the offset of the custody record under which
/// it was staged, and a random nonce. Written `CUSTODY-NONCE`; it is also
/// the commit's metadata, for people reading the group's offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchToken {
    pub custody_offset: i64,
    pub nonce: String,
}

impl BatchToken {
    pub fn encode(&self) -> String {
        format!("{}-{}", self.custody_offset, self.nonce)
    }

    pub fn parse(token: &str) -> Option<BatchToken> {
        let (offset, nonce) = token.split_once('-')?;
        if nonce.is_empty()
            || !nonce.bytes().all(|b| b.is_ascii_alphanumeric())
            || offset.is_empty()
            || !offset.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(BatchToken {
            custody_offset: offset.parse().ok()?,
            nonce: nonce.to_owned(),
        })
    }
}

/// What a custody record says a member did with a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It is taking the partition; its resume record follows.
    Claim,
    /// It took the partition when the group had committed this (`None`:
    /// nothing yet), and resumes there.
    Resume(Option<i64>),
}

/// One custody record: a step a member took with a partition of a group's
/// topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustodyRecord {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub step: Step,
}

const PREFIX: &str = "lifeledger-custody/1";

impl CustodyRecord {
    /// The record's key: every record of a partition shares it.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.group, self.topic, self.partition)
    }

    /// `lifeledger-custody/1 group=G topic=T partition=P claim`, or
    /// `lifeledger-custody/1 group=G topic=T partition=P committed=N|none`.
    pub fn encode(&self) -> String {
        let step = match self.step {
            Step::Claim => "claim".to_owned(),
            Step::Resume(None) => "committed=none".to_owned(),
            Step::Resume(Some(c)) => format!("committed={c}"),
        };
        format!(
            "{PREFIX} group={} topic={} partition={} {step}",
            self.group, self.topic, self.partition
        )
    }

    pub fn parse(text: &str) -> Option<CustodyRecord> {
        let mut words = text.split(' ');
        if words.next()? != PREFIX {
            return None;
        }
        let group = words.next()?.strip_prefix("group=")?;
        let topic = words.next()?.strip_prefix("topic=")?;
        let partition = words.next()?.strip_prefix("partition=")?.parse().ok()?;
        let step = match words.next()? {
            "claim" => Step::Claim,
            word => Step::Resume(match word.strip_prefix("committed=")? {
                "none" => None,
                n => Some(n.parse().ok()?),
            }),
        };
        if words.next().is_some() || group.is_empty() || topic.is_empty() {
            return None;
        }
        Some(CustodyRecord {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            step,
        })
    }
}

/// What became of a staged batch's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It landed before the partition changed hands: the group moved past
    /// the batch; append it here.
    Landed,
    /// It never landed: the batch is read again; drop it here.
    NotLanded,
}

/// The fate of a staged batch that ends before `next_offset`, given what
/// the group had committed at the partition's next handover after the
/// batch was staged (`next_handover`: `Some(committed then)` if there was
/// one), or else what it has committed now. `None`: not decided yet.
pub fn fate(
    next_offset: i64,
    next_handover: Option<Option<i64>>,
    committed_now: Option<i64>,
) -> Option<Fate> {
    let reached = |c: Option<i64>| c.is_some_and(|c| c >= next_offset);
    match next_handover {
        Some(then) if reached(then) => Some(Fate::Landed),
        Some(_) => Some(Fate::NotLanded),
        None if reached(committed_now) => Some(Fate::Landed),
        None => None,
    }
}

/// What the custody topic, read to its end, says of a partition since
/// this member claimed it (its claim at `claim`, its resume record, the
/// batch token's, at `resumed`), from the partition's records in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinceClaim {
    /// Nobody else has claimed the partition: a batch whose commit landed
    /// is this member's to append.
    Undisturbed,
    /// Another member is taking it and has not yet said where it resumes:
    /// the batch waits.
    Claimed,
    /// Another member took it, when the group had committed this: it
    /// decides the batch, as for a batch left staged.
    Resumed(Option<i64>),
}

pub fn since_claim(records: &[(i64, Step)], claim: i64, resumed: i64) -> SinceClaim {
    // The first resume record after ours decides (the last member to write
    // its resume record holds the partition).
    if let Some((_, Step::Resume(c))) = records
        .iter()
        .find(|(o, s)| *o > resumed && matches!(s, Step::Resume(_)))
    {
        return SinceClaim::Resumed(*c);
    }
    // Claims of others after ours that no resume record followed before
    // ours: their member read, or will read, the committed offset after
    // our claim, and may resume before our batch.
    let mut pending = 0usize;
    for (offset, step) in records {
        if *offset <= claim || *offset == resumed {
            continue;
        }
        match step {
            Step::Claim => pending += 1,
            Step::Resume(_) if *offset < resumed => pending = pending.saturating_sub(1),
            Step::Resume(_) => {}
        }
    }
    if pending > 0 {
        SinceClaim::Claimed
    } else {
        SinceClaim::Undisturbed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_custody_record_parses_back_to_itself(
            group in "[a-z][a-z0-9._-]{0,20}",
            topic in "[a-z][a-z0-9._-]{0,20}",
            partition in 0i32..1000,
            committed in proptest::option::of(proptest::option::of(0i64..i64::MAX)),
        ) {
            let step = committed.map_or(Step::Claim, Step::Resume);
            let r = CustodyRecord { group, topic, partition, step };
            prop_assert_eq!(CustodyRecord::parse(&r.encode()), Some(r));
        }

        #[test]
        fn other_text_is_not_a_custody_record(s in "[ -~]{0,60}") {
            prop_assume!(!s.starts_with(PREFIX));
            prop_assert_eq!(CustodyRecord::parse(&s), None);
        }

        /// A model of a partition's life: owners take turns, each recording
        /// a custody record with what the group had committed when it took
        /// the partition, then staging and committing batches (appending
        /// each once its commit landed); each dies with its last batch
        /// staged, whose commit may or may not have landed. Whenever such a
        /// batch is looked up later, by the custody log and the group's
        /// committed offset, its fate is told right; and every offset ends
        /// up recorded exactly once.
        #[test]
        fn the_fate_of_every_batch_is_told_right(
            turns in proptest::collection::vec((0usize..3, 1i64..5, any::<bool>()), 1..40),
        ) {
            let mut committed: Option<i64> = None;
            let mut log: Vec<Option<i64>> = Vec::new();
            // (custody offset, first, next, landed)
            let mut left: Vec<(usize, i64, i64, bool)> = Vec::new();
            let mut appended: Vec<(i64, i64)> = Vec::new();
            for (appends, size, last_landed) in &turns {
                log.push(committed);
                let custody = log.len() - 1;
                let mut next = committed.unwrap_or(0);
                for i in 0..=*appends {
                    let first = next;
                    next += size;
                    let last = i == *appends;
                    let landed = !last || *last_landed;
                    if landed {
                        committed = Some(next);
                    }
                    if last {
                        left.push((custody, first, next, landed));
                    } else {
                        appended.push((first, next));
                    }
                }
            }
            for (custody, first, next, landed) in &left {
                let handover = log.get(custody + 1).copied();
                match fate(*next, handover, committed) {
                    Some(f) => {
                        prop_assert_eq!(f == Fate::Landed, *landed);
                        if f == Fate::Landed {
                            appended.push((*first, *next));
                        }
                    }
                    // Undecided only for the last owner's batch, whose
                    // commit did not land and which nobody took over.
                    None => {
                        prop_assert!(!*landed);
                        prop_assert_eq!(*custody, log.len() - 1);
                    }
                }
            }
            // Every offset up to the group's committed one, exactly once.
            appended.sort();
            let mut expect = 0;
            for (first, next) in appended {
                prop_assert_eq!(first, expect);
                expect = next;
            }
            prop_assert_eq!(Some(expect).filter(|e| *e > 0), committed.filter(|c| *c > 0));
        }
    }

    #[test]
    fn tokens_name_their_custody_record() {
        let t = BatchToken {
            custody_offset: 7,
            nonce: "ab12".into(),
        };
        assert_eq!(t.encode(), "7-ab12");
        assert_eq!(BatchToken::parse("7-ab12"), Some(t));
        assert_eq!(BatchToken::parse("x-ab12"), None);
        assert_eq!(BatchToken::parse("7-"), None);
        assert_eq!(BatchToken::parse("-ab"), None);
    }

    #[test]
    fn the_next_handover_decides_and_without_one_only_a_landed_commit() {
        // No handover since: a commit at or past the end landed; an
        // earlier one may still be overtaken by a commit in flight.
        assert_eq!(fate(10, None, None), None);
        assert_eq!(fate(10, None, Some(9)), None);
        assert_eq!(fate(10, None, Some(10)), Some(Fate::Landed));
        // A later owner committed past the batch, but took the partition
        // when the group was still before it: it read the batch again.
        assert_eq!(fate(10, Some(Some(6)), Some(40)), Some(Fate::NotLanded));
        assert_eq!(fate(10, Some(Some(10)), Some(40)), Some(Fate::Landed));
        assert_eq!(fate(10, Some(None), Some(40)), Some(Fate::NotLanded));
    }

    #[test]
    fn after_a_claim_only_another_members_records_disturb() {
        use Step::{Claim, Resume};
        // Ours only: claim at 3, resume at 5.
        let ours = [(3, Claim), (5, Resume(Some(10)))];
        assert_eq!(since_claim(&ours, 3, 5), SinceClaim::Undisturbed);
        // Records before our claim do not count.
        let before = [
            (1, Claim),
            (2, Resume(Some(4))),
            (3, Claim),
            (5, Resume(Some(10))),
        ];
        assert_eq!(since_claim(&before, 3, 5), SinceClaim::Undisturbed);
        // Another member claimed after us and has not resumed: wait.
        let claimed = [(3, Claim), (4, Claim), (5, Resume(Some(10)))];
        assert_eq!(since_claim(&claimed, 3, 5), SinceClaim::Claimed);
        let claimed_late = [(3, Claim), (5, Resume(Some(10))), (9, Claim)];
        assert_eq!(since_claim(&claimed_late, 3, 5), SinceClaim::Claimed);
        // ... and then resumed: its resume record decides.
        let resumed = [
            (3, Claim),
            (4, Claim),
            (5, Resume(Some(10))),
            (6, Resume(Some(12))),
        ];
        assert_eq!(since_claim(&resumed, 3, 5), SinceClaim::Resumed(Some(12)));
        // A member that claimed and resumed between our claim and our
        // resume record holds the partition less recently than we do.
        let overtaken = [
            (3, Claim),
            (4, Claim),
            (5, Resume(Some(9))),
            (6, Resume(Some(10))),
        ];
        assert_eq!(since_claim(&overtaken, 3, 6), SinceClaim::Undisturbed);
    }
}
