//! Keeping the deadline monitor's states and its alert outbox in sled.
//!
//! A change of state and the alert it produced are saved in one atomic,
//! fsynced batch before the alert is sent; the alert leaves the outbox
//! only once the alerts topic has acknowledged it. Before sending, the
//! topic's end offsets are saved as marks, so that after a crash the
//! sender can read the topic from the marks and drop from the outbox what
//! already arrived: each change is delivered once. Derived data, not
//! evidence.

use std::collections::BTreeMap;

use super::watch_book::{JUDGED, Judged, SavedBook, damaged, encode};
use super::{Ledger, StoreError};
use crate::monitor::Alert;
use crate::projection::{Dirty, Projection, entry_event};

const TREE: &str = "monitor";
const MARKS: &[u8] = b"m";
const NEXT: &[u8] = b"n";

/// Alerts saved but not yet acknowledged by their destination.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    /// Each alert with its place in the outbox, oldest first.
    pub alerts: Vec<(u64, Alert)>,
    /// The destination's end offsets (partition, offset) recorded before
    /// the last send began, if one began.
    pub marks: Option<Vec<(i32, i64)>>,
}

fn outbox_key(n: u64) -> Vec<u8> {
    let mut k = b"o".to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

impl Ledger {
    /// The unsent alerts, oldest first, and the marks of an interrupted
    /// send.
    pub fn alert_outbox(&self) -> Result<Outbox, StoreError> {
        self.needs_indexes()?;
        let Some(tree) = self.existing_tree(TREE)? else {
            return Ok(Outbox::default());
        };
        let mut outbox = Vec::new();
        for kv in tree.scan_prefix(b"o") {
            let (k, v) = kv?;
            let place = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| damaged(&k, "outbox key is not 9 bytes"))?;
            let alert = serde_json::from_slice(&v).map_err(|e| damaged(&k, e))?;
            outbox.push((place, alert));
        }
        let marks = match tree.get(MARKS)? {
            Some(v) => Some(
                bincode::serde::decode_from_slice(&v, bincode::config::standard())
                    .map(|(m, _)| m)
                    .map_err(|e| damaged(MARKS, e))?,
            ),
            None => None,
        };
        Ok(Outbox {
            alerts: outbox,
            marks,
        })
    }

    /// The monitor's book as saved, to read from and to save into with
    /// [`Ledger::save_monitor`]. A book an older release saved (states
    /// only) is given its counts and overdue index here, once; it knows
    /// no wakeups or accounts and was judged under no recorded policy, so
    /// the monitor sweeps every item.
    pub fn monitor_book(&mut self) -> Result<SavedBook, StoreError> {
        self.needs_indexes()?;
        let tree = self.db.open_tree(TREE)?;
        SavedBook::open(tree)
    }

    /// Saves what the book's looks changed and the alerts they produced,
    /// and (if given) what the monitor has judged through, atomically and
    /// durably.
    pub fn save_monitor(
        &mut self,
        book: &mut SavedBook,
        alerts: &[Alert],
        judged: Option<&Judged>,
    ) -> Result<(), StoreError> {
        if !book.has_changes() && alerts.is_empty() && judged.is_none() {
            return Ok(());
        }
        let tree = self.db.open_tree(TREE)?;
        let mut next = match tree.get(NEXT)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| damaged(NEXT, "counter is not 8 bytes"))?,
            ),
            None => 0,
        };
        let mut batch = book.changes_batch()?;
        for alert in alerts {
            let v = serde_json::to_vec(alert).map_err(|e| damaged(b"outbox", e))?;
            batch.insert(outbox_key(next), v);
            next += 1;
        }
        batch.insert(NEXT, next.to_be_bytes().to_vec());
        if let Some(judged) = judged {
            batch.insert(JUDGED, encode(JUDGED, judged)?);
        }
        tree.apply_batch(batch)?;
        self.make_durable()?;
        book.saved();
        if let Some(judged) = judged {
            book.set_judged(Some(judged.clone()));
        }
        Ok(())
    }

    /// Forgets what the monitor judged through (a chain's history was
    /// replaced): its next start sweeps every item.
    pub fn forget_monitor_judged(&mut self, book: &mut SavedBook) -> Result<(), StoreError> {
        self.needs_indexes()?;
        self.db.open_tree(TREE)?.remove(JUDGED)?;
        book.set_judged(None);
        self.make_durable()
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
        let mut total = 0u64;
        for (chain, start) in from {
            if to.get(chain).copied().unwrap_or(0) < *start {
                return Ok(None);
            }
        }
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
        Ok(Some(dirty))
    }

    /// Records the alerts topic's end offsets before a send begins.
    pub fn mark_alerts_sending(&mut self, marks: &[(i32, i64)]) -> Result<(), StoreError> {
        let v = bincode::serde::encode_to_vec(marks, bincode::config::standard())
            .map_err(|e| damaged(MARKS, e))?;
        self.db.open_tree(TREE)?.insert(MARKS, v)?;
        self.make_durable()
    }

    /// Empties these places of the outbox (their alerts were
    /// delivered), and forgets the marks once the outbox is empty.
    pub fn clear_alerts(&mut self, delivered: &[u64]) -> Result<(), StoreError> {
        let tree = self.db.open_tree(TREE)?;
        let mut batch = sled::Batch::default();
        for place in delivered {
            batch.remove(outbox_key(*place));
        }
        let delivered: std::collections::HashSet<Vec<u8>> =
            delivered.iter().map(|p| outbox_key(*p)).collect();
        let mut left = false;
        for kv in tree.scan_prefix(b"o") {
            let (k, _) = kv?;
            if !delivered.contains(k.as_ref()) {
                left = true;
                break;
            }
        }
        if !left {
            batch.remove(MARKS);
        }
        tree.apply_batch(batch)?;
        self.make_durable()
    }
}
