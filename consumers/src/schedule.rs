//! When to sign a checkpoint while appending: every so many entries or
//! seconds, and once more at the end if anything changed.

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
}

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
        }
    }

    /// Takes a checkpoint if one is due (or `force`d) and the ledger grew
    /// since the last one.
    pub fn maybe(&mut self, ledger: &mut Ledger, force: bool) -> Result<(), StoreError> {
        let Some(key) = &self.key else { return Ok(()) };
        let total: u64 = ledger.heads().map(|h| h.next_seq).sum();
        let grown = total.saturating_sub(self.entries_at_last);
        let due = grown >= self.every_entries
            || (grown > 0 && (force || self.last.elapsed() >= self.every));
        if due {
            ledger.checkpoint(key, Timestamp::now())?;
            self.entries_at_last = total;
            self.last = Instant::now();
        }
        Ok(())
    }
}
