//! The ledger's side of the deadline monitor: its book and outbox (kept
//! in `DIR/monitor/`, see `watch_book.rs`; an older release kept them in
//! sled, taken over once here), and what entries between two cursors
//! touched, for a monitor that starts where it stopped.

use std::collections::BTreeMap;

use super::watch_book::{MONITOR_DIR, OlderBook, SavedBook, damaged};
use super::{Ledger, StoreError};
use crate::monitor::Watched;
use crate::projection::{Dirty, Projection, entry_event};

/// Where an older release kept the monitor's states and outbox.
const OLD_TREE: &str = "monitor";

impl Ledger {
    /// The monitor's book and outbox. What an older release kept in sled
    /// is taken over the first time, then dropped from sled.
    pub fn monitor_book(&mut self) -> Result<SavedBook, StoreError> {
        self.needs_indexes()?;
        let dir = self.dir.join(MONITOR_DIR);
        let old = self.existing_tree(OLD_TREE)?;
        let book = SavedBook::open(&dir, || old.as_ref().map(read_older_book).transpose())?;
        if old.is_some() {
            // Taken over (now or by an earlier open) and durable in the
            // book's own files.
            self.db.drop_tree(OLD_TREE)?;
            self.make_durable()?;
        }
        Ok(book)
    }

    /// What entries between two cursors touched (items, and accounts by
    /// [`crate::projection::account_key`]), read from the evidence; `None`
    /// if they are more than `limit` entries or `to` is behind `from` on
    /// some chain (a sweep is then cheaper, or the only sound answer).
    pub fn touched_between(
        &self,
        from: &BTreeMap<String, u64>,
        to: &BTreeMap<String, u64>,
        limit: u64,
    ) -> Result<Option<Dirty>, StoreError> {
        for (chain, start) in from {
            if to.get(chain).copied().unwrap_or(0) < *start {
                return Ok(None);
            }
        }
        let mut total = 0u64;
        for (chain, end) in to {
            total = total.saturating_add(end - from.get(chain).copied().unwrap_or(0).min(*end));
        }
        if total > limit {
            return Ok(None);
        }
        let mut dirty = Dirty::default();
        for (chain, end) in to {
            let start = from.get(chain).copied().unwrap_or(0);
            if start >= *end {
                continue;
            }
            for read in self.entries(chain, start, end - 1)? {
                let (_, entry) = read?;
                let Some(event) = entry_event(&entry)? else {
                    continue;
                };
                match Projection::folds_into(&event) {
                    (Some(item), _) => {
                        dirty.items.insert(item.to_owned());
                    }
                    (None, Some(account)) => {
                        dirty.accounts.insert(account);
                    }
                    (None, None) => dirty.policies = true,
                }
            }
        }
        // Which of them were new is not known here: each is filed under
        // its account again (a no-op for those filed already).
        dirty.new_items = dirty.items.clone();
        Ok(Some(dirty))
    }
}

/// Reads what an older release kept in sled: `s`+item states (bincode),
/// `o`+n alerts (JSON), `m` marks, `n` the next alert's place.
fn read_older_book(tree: &sled::Tree) -> Result<OlderBook, StoreError> {
    let mut older = OlderBook::default();
    for kv in tree.iter() {
        let (k, v) = kv?;
        match k.first() {
            Some(b's') => {
                let (w, _): (Watched, usize) =
                    bincode::serde::decode_from_slice(&v, bincode::config::standard())
                        .map_err(|e| damaged(&k, e))?;
                older
                    .states
                    .push((String::from_utf8_lossy(&k[1..]).into_owned(), w));
            }
            Some(b'o') => {
                let place = k
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| damaged(&k, "outbox key is not 9 bytes"))?;
                older.outbox.push((place, v.to_vec()));
            }
            Some(b'm') => {
                let (marks, _): (Vec<(i32, i64)>, usize) =
                    bincode::serde::decode_from_slice(&v, bincode::config::standard())
                        .map_err(|e| damaged(&k, e))?;
                older.marks = Some(marks);
            }
            Some(b'n') => {
                older.next_alert = u64::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| damaged(&k, "counter is not 8 bytes"))?,
                );
            }
            // Keys of no release: nothing to take over.
            _ => {}
        }
    }
    Ok(older)
}
