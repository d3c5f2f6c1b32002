//! Who recorded a batch, as the group's committed offsets tell it (pure).
//!
//! A member stages a batch in its ledger, then commits the batch's next
//! offset to Kafka with a *commit note* in the offset's metadata, then
//! appends the batch to its chain. If it dies between the stage and the
//! append, the batch's fate is decided by whether the commit landed: if it
//! did, the group moved on past the batch and nobody else will read it, so
//! this ledger must append it; if it did not, the next owner reads the
//! batch again, so this ledger must drop it.
//!
//! The committed offset alone cannot tell: later owners commit past the
//! batch either way. So every note carries the token of the batch it
//! acknowledges and the tokens of the commits each owner of the partition
//! resumed from when it was assigned the partition (newest first, at most
//! [`MAX_HANDOVERS`]). A landed commit is the committed value until the
//! next commit, and whoever makes that commit has resumed from it (or is
//! the same owner, which appended the batch itself): so a landed token
//! stays in every later note until [`MAX_HANDOVERS`] more handovers push
//! it out. Notes count handovers, and a token carries the count its owner
//! had, so a lookup knows whether the note still covers the handover at
//! which the token would appear: if it does and the token is not there,
//! the commit never landed.

/// How many handovers a note remembers. Each costs a token (32 hex
/// digits and a comma); Kafka's default `offset.metadata.max.bytes` is
/// 4096.
pub const MAX_HANDOVERS: usize = 32;

const PREFIX: &str = "lifeledger/1";

/// The metadata of an offset commit made by a Lifeledger consumer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitNote {
    /// The staged batch this commit acknowledges.
    pub token: String,
    /// The custody of the partition when the batch was staged.
    pub custody: Custody,
}

/// What an owner of a partition knows of the commits before its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Custody {
    /// How many handovers the partition has had (counted since the first
    /// Lifeledger commit, or since a commit by another tool).
    pub handovers: u64,
    /// Tokens of the commits the last owners resumed from, newest first:
    /// the one at index `i` was resumed from at handover `handovers - i`.
    pub resumed_from: Vec<String>,
}

/// A staged batch's token: the custody count its owner had, and a random
/// nonce. Written `COUNT-NONCE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchToken {
    pub handovers: u64,
    pub nonce: String,
}

impl BatchToken {
    pub fn new(custody: &Custody, nonce: &str) -> BatchToken {
        BatchToken {
            handovers: custody.handovers,
            nonce: nonce.to_owned(),
        }
    }

    pub fn encode(&self) -> String {
        format!("{}-{}", self.handovers, self.nonce)
    }

    pub fn parse(token: &str) -> Option<BatchToken> {
        let (count, nonce) = token.split_once('-')?;
        if nonce.is_empty() || !valid_token(nonce) || !count.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(BatchToken {
            handovers: count.parse().ok()?,
            nonce: nonce.to_owned(),
        })
    }
}

impl CommitNote {
    /// `lifeledger/1 batch=TOKEN handovers=N resumed=T1,T2,...`.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX} batch={} handovers={} resumed={}",
            self.token,
            self.custody.handovers,
            self.custody.resumed_from.join(",")
        )
    }

    /// A note written by [`CommitNote::encode`]; `None` for anything else
    /// (no metadata, another tool's).
    pub fn parse(metadata: &str) -> Option<CommitNote> {
        let mut words = metadata.split(' ');
        if words.next()? != PREFIX {
            return None;
        }
        let token = words.next()?.strip_prefix("batch=")?;
        let handovers = words.next()?.strip_prefix("handovers=")?;
        if !handovers.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let handovers: u64 = handovers.parse().ok()?;
        let resumed = words.next()?.strip_prefix("resumed=")?;
        if words.next().is_some() || !valid_token(token) {
            return None;
        }
        let resumed_from: Vec<String> = if resumed.is_empty() {
            Vec::new()
        } else {
            resumed.split(',').map(str::to_owned).collect()
        };
        if !resumed_from.iter().all(|t| valid_token(t)) || resumed_from.len() as u64 > handovers {
            return None;
        }
        Some(CommitNote {
            token: token.to_owned(),
            custody: Custody {
                handovers,
                resumed_from,
            },
        })
    }
}

/// Tokens are non-empty and free of the note's separators.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// What Kafka holds as a partition's committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    /// The note, when the metadata is one of ours.
    pub note: Option<CommitNote>,
}

impl Custody {
    /// The custody of a partition's new owner, from what was committed
    /// when it was assigned (`None`: nothing was ever committed).
    pub fn on_assignment(committed: Option<&Committed>) -> Custody {
        match committed {
            // Nothing committed yet, or by another tool: the history starts
            // here.
            None | Some(Committed { note: None, .. }) => Custody::default(),
            Some(Committed {
                note: Some(note), ..
            }) => {
                let mut resumed_from = Vec::with_capacity(MAX_HANDOVERS);
                resumed_from.push(note.token.clone());
                resumed_from.extend(note.custody.resumed_from.iter().cloned());
                resumed_from.truncate(MAX_HANDOVERS);
                Custody {
                    handovers: note.custody.handovers + 1,
                    resumed_from,
                }
            }
        }
    }
}

/// What became of a staged batch's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It landed: the group moved past the batch; append it here.
    Landed,
    /// It never landed: the batch will be read again; drop it here.
    NotLanded,
    /// The history that would tell is gone (more than [`MAX_HANDOVERS`]
    /// handovers since, or a foreign commit). The caller keeps the batch:
    /// a duplicate across ledgers can be found and explained later, a
    /// loss cannot.
    Unknown,
}

/// The fate of the staged batch `token`, which ends before `next_offset`,
/// given what the group has committed for its partition now.
pub fn fate(token: &str, next_offset: i64, committed: Option<&Committed>) -> Fate {
    let Some(committed) = committed else {
        return Fate::NotLanded;
    };
    if let Some(note) = &committed.note {
        if note.token == token || note.custody.resumed_from.iter().any(|t| t == token) {
            return Fate::Landed;
        }
    }
    // Once the batch's commit landed, every later commit is at or past its
    // end: owners resume at the committed offset or later.
    if committed.offset < next_offset {
        return Fate::NotLanded;
    }
    let (Some(note), Some(batch)) = (&committed.note, BatchToken::parse(token)) else {
        return Fate::Unknown;
    };
    // Had it landed, the next owner would have resumed from it at handover
    // `batch.handovers + 1`. The note remembers handovers from `oldest` on;
    // a note at the batch's own count or earlier comes from an owner that
    // resumed from the same commit as the batch's owner, and so re-read
    // the batch.
    let remembered = note.custody.resumed_from.len() as u64;
    let oldest = note.custody.handovers + 1 - remembered.min(note.custody.handovers + 1);
    if batch.handovers + 1 >= oldest {
        Fate::NotLanded
    } else {
        Fate::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        "[0-9a-f]{1,32}"
    }

    fn note() -> impl Strategy<Value = CommitNote> {
        (
            token(),
            proptest::collection::vec(token(), 0..MAX_HANDOVERS),
            0u64..1000,
        )
            .prop_map(|(token, resumed_from, extra)| CommitNote {
                token,
                custody: Custody {
                    handovers: resumed_from.len() as u64 + extra,
                    resumed_from,
                },
            })
    }

    proptest! {
        #[test]
        fn a_note_parses_back_to_itself(n in note()) {
            let text = n.encode();
            prop_assert!(text.len() <= 4096);
            prop_assert_eq!(CommitNote::parse(&text), Some(n));
        }

        #[test]
        fn foreign_metadata_is_not_a_note(s in "[ -~]{0,60}") {
            prop_assume!(!s.starts_with(PREFIX));
            prop_assert_eq!(CommitNote::parse(&s), None);
        }

        /// A model of a partition's life: owners take turns; each stages
        /// and commits batches (appending each once its commit landed) and
        /// dies with its last batch staged, whose commit may or may not
        /// have landed. Whenever such a batch is looked up later, its fate
        /// is told right: Landed exactly when its commit landed, and
        /// Unknown only after more than MAX_HANDOVERS handovers.
        #[test]
        fn the_fate_of_every_batch_is_told_right(
            turns in proptest::collection::vec((0usize..3, 1i64..5, any::<bool>()), 1..80),
        ) {
            let mut committed: Option<Committed> = None;
            let mut staged_at_death: Vec<(String, i64, bool, usize)> = Vec::new();
            let mut counter = 0u64;
            for (handover, (appended, size, last_landed)) in turns.iter().enumerate() {
                let custody = Custody::on_assignment(committed.as_ref());
                // The new owner resumes at the committed offset.
                let mut next = committed.as_ref().map_or(0, |c| c.offset);
                for i in 0..=*appended {
                    counter += 1;
                    let token = BatchToken::new(&custody, &format!("{counter:x}")).encode();
                    next += size;
                    let last = i == *appended;
                    let landed = !last || *last_landed;
                    if landed {
                        committed = Some(Committed {
                            offset: next,
                            note: Some(CommitNote { token: token.clone(), custody: custody.clone() }),
                        });
                    }
                    if last {
                        staged_at_death.push((token, next, landed, handover));
                    }
                }
                for (token, end, landed, at) in &staged_at_death {
                    match fate(token, *end, committed.as_ref()) {
                        Fate::Landed => prop_assert!(*landed, "{} did not land", token),
                        Fate::NotLanded => prop_assert!(!*landed, "{} landed", token),
                        Fate::Unknown => prop_assert!(handover - at > MAX_HANDOVERS, "{} unknown after {} turns", token, handover - at),
                    }
                }
            }
        }
    }

    #[test]
    fn nothing_committed_means_nothing_landed() {
        assert_eq!(fate("a", 10, None), Fate::NotLanded);
    }

    #[test]
    fn a_foreign_commit_past_the_batch_leaves_it_unknown() {
        let c = Committed {
            offset: 20,
            note: None,
        };
        assert_eq!(fate("0-a", 10, Some(&c)), Fate::Unknown);
        assert_eq!(fate("0-a", 30, Some(&c)), Fate::NotLanded);
    }

    #[test]
    fn tokens_carry_their_custody_count() {
        let custody = Custody {
            handovers: 7,
            resumed_from: vec![],
        };
        let t = BatchToken::new(&custody, "ab12");
        assert_eq!(t.encode(), "7-ab12");
        assert_eq!(BatchToken::parse("7-ab12"), Some(t));
        assert_eq!(BatchToken::parse("x-ab12"), None);
        assert_eq!(BatchToken::parse("7-"), None);
    }
}
