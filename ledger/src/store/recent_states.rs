//! The states the projection saved since it last handed its saved states
//! to another thread ([`super::SavedStates`]), kept by key for that thread
//! to read first.
//!
//! Why: the deadline monitor judges the items each tick touched, and every
//! one of them was saved since the last tick. Read back from the runs,
//! each costs Bloom probes of every run, a block read and decompression;
//! the records the saves were made of answer it from memory.
//!
//! What it holds is always a suffix of the saves up to the moment the
//! states were handed over (every save since some point, none skipped),
//! so a key found here has its newest value here.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use super::states::Record;

/// Saved records kept past this many (about 60 MiB) are let go, all of
/// them, so that what is kept stays a suffix: a tick comes every 250 ms
/// by default (`monitor_interval_ms`), 25,000 events at 100,000 events/s
/// and at most one record each, so only a monitor far behind gets here,
/// and it reads from the runs instead.
const KEPT_RECORDS: usize = 1 << 17;

/// The saves since the last hand-over, as the saving thread gathers them.
#[derive(Debug, Default)]
pub(crate) struct RecentSaves {
    saves: Vec<Vec<Record>>,
    records: usize,
}

impl RecentSaves {
    /// Keeps a save's records (in key order, as saved).
    pub(crate) fn keep(&mut self, records: Vec<Record>) {
        if self.records + records.len() > KEPT_RECORDS {
            self.forget();
        }
        self.records += records.len();
        self.saves.push(records);
    }

    /// Forgets every save kept: the states were written some other way (a
    /// rebuild, a clear), which these records do not show.
    pub(crate) fn forget(&mut self) {
        self.saves.clear();
        self.records = 0;
    }

    /// The saves kept, for the states handed over now; none are kept after.
    pub(crate) fn hand_over(&mut self) -> RecentStates {
        self.records = 0;
        RecentStates {
            saves: Mutex::new(std::mem::take(&mut self.saves)),
            by_key: OnceLock::new(),
        }
    }
}

/// The records of the saves handed over, by key, newest value winning:
/// indexed by the thread that reads them, on its first read.
#[derive(Debug, Default)]
pub(crate) struct RecentStates {
    saves: Mutex<Vec<Vec<Record>>>,
    by_key: OnceLock<HashMap<Vec<u8>, Vec<u8>, ahash::RandomState>>,
}

impl RecentStates {
    /// The newest value saved under `key` in these saves, if any.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.by_key
            .get_or_init(|| {
                // A poisoned lock means a reader panicked while taking the
                // saves; what is left is still whole records.
                let saves =
                    std::mem::take(&mut *self.saves.lock().unwrap_or_else(PoisonError::into_inner));
                let mut by_key = HashMap::with_capacity_and_hasher(
                    saves.iter().map(Vec::len).sum(),
                    ahash::RandomState::new(),
                );
                for save in saves.into_iter().rev() {
                    for (k, v) in save {
                        by_key.entry(k).or_insert(v);
                    }
                }
                by_key
            })
            .get(key)
            .map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever saves are kept, a key reads as its value in the newest
        /// save kept since the last hand-over that holds it.
        #[test]
        fn a_key_reads_as_in_the_newest_save_kept(
            rounds in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::collection::btree_map(0u8..20, any::<u8>(), 0..10),
                    0..5,
                ),
                1..4,
            ),
        ) {
            let mut recent = RecentSaves::default();
            for saves in rounds {
                let mut expected = std::collections::BTreeMap::new();
                for save in &saves {
                    let records: Vec<Record> =
                        save.iter().map(|(k, v)| (vec![*k], vec![*v])).collect();
                    expected.extend(records.iter().cloned());
                    recent.keep(records);
                }
                let handed = recent.hand_over();
                for k in 0u8..20 {
                    prop_assert_eq!(handed.get(&[k]), expected.get(&vec![k]).map(Vec::as_slice));
                }
            }
        }
    }

    #[test]
    fn saves_forgotten_are_not_read() {
        let mut recent = RecentSaves::default();
        recent.keep(vec![(b"a".to_vec(), b"1".to_vec())]);
        recent.forget();
        recent.keep(vec![(b"b".to_vec(), b"2".to_vec())]);
        let handed = recent.hand_over();
        assert_eq!(handed.get(b"a"), None);
        assert_eq!(handed.get(b"b"), Some(&b"2"[..]));
        assert_eq!(recent.hand_over().get(b"b"), None);
    }
}
