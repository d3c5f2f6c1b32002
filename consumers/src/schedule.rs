//! When to sign a checkpoint while appending: every so many entries or
//! seconds, and once more at the end if anything changed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use lifeledger_ledger::checkpoint::PrivateKey;
use lifeledger_ledger::{Ledger, StoreError};

/// Takes checkpoints with `key`, if one is given.
#[derive(Debug)]
pub struct CheckpointSchedule {
    key: Option<PrivateKey>,
    every_entries: u64,
    every: Duration,
    entries_at_last: u64,
    last: Instant,
    /// With an archive: how far it holds each chain. A checkpoint then
    /// covers only that (what is signed is what is archived).
    archived: Option<ArchivedHeads>,
}

/// Per chain, the seq up to which the archive holds it (`None` until the
/// archive was first reached).
pub type ArchivedHeads = std::sync::Arc<std::sync::Mutex<Option<BTreeMap<String, u64>>>>;

impl CheckpointSchedule {
    /// A schedule for `ledger` as it stands now: growth from here counts.
    pub fn new(
        key: Option<PrivateKey>,
        every_entries: u64,
        every: Duration,
        ledger: &Ledger,
    ) -> Self {
        CheckpointSchedule {
            key,
            every_entries: every_entries.max(1),
            every,
            entries_at_last: ledger.heads().map(|h| h.next_seq).sum(),
            last: Instant::now(),
            archived: None,
        }
    }

    /// Checkpoints from now on cover only what the archive holds.
    pub fn within_archive(&mut self, archived: ArchivedHeads) {
        self.archived = Some(archived);
    }

    /// Takes a checkpoint if one is due (or `force`d) and the ledger grew
    /// since the last one.
    pub fn maybe(&mut self, ledger: &mut Ledger, force: bool) -> Result<(), StoreError> {
        let Some(key) = &self.key else { return Ok(()) };
        let limits = match &self.archived {
            None => None,
            Some(a) => match a.lock().ok().and_then(|a| a.clone()) {
                Some(limits) => Some(limits),
                // The archive not reached yet: nothing can be signed.
                None => return Ok(()),
            },
        };
        let total: u64 = ledger
            .heads()
            .map(|h| match &limits {
                None => h.next_seq,
                Some(l) => l.get(&h.chain).copied().unwrap_or(0).min(h.next_seq),
            })
            .sum();
        let grown = total.saturating_sub(self.entries_at_last);
        let due = grown >= self.every_entries
            || (grown > 0 && (force || self.last.elapsed() >= self.every));
        if due {
            match &limits {
                None => {
                    ledger.checkpoint(key, Timestamp::now())?;
                }
                Some(l) => {
                    ledger.checkpoint_within(key, Timestamp::now(), l)?;
                }
            }
            self.entries_at_last = total;
            self.last = Instant::now();
        }
        Ok(())
    }
}
