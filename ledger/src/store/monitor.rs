//! Keeping the deadline monitor's states and its alert outbox in sled.
//!
//! A change of state and the alert it produced are saved in one atomic,
//! fsynced batch before the alert is sent; the alert leaves the outbox
//! only once the alerts topic has acknowledged it. Before sending, the
//! topic's end offsets are saved as marks, so that after a crash the
//! sender can read the topic from the marks and drop from the outbox what
//! already arrived: each change is delivered once. Derived data, not
//! evidence.

use std::collections::{BTreeMap, HashMap};

use super::{Ledger, StoreError};
use crate::monitor::{Alert, Watched};

const TREE: &str = "monitor";
const MARKS: &[u8] = b"m";
const NEXT: &[u8] = b"n";

/// What the monitor saved: item states, unsent alerts (oldest first), and
/// the alerts topic's end offsets from before the last send began.
#[derive(Debug, Clone, Default)]
pub struct MonitorRecord {
    pub states: HashMap<String, Watched>,
    pub outbox: Vec<Alert>,
    pub marks: Option<Vec<(i32, i64)>>,
}

/// Alerts saved but not yet acknowledged by their destination.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    pub alerts: Vec<Alert>,
    /// The destination's end offsets (partition, offset) recorded before
    /// the last send began, if one began.
    pub marks: Option<Vec<(i32, i64)>>,
}

fn damaged(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged {
        key: format!("monitor {}", String::from_utf8_lossy(key)),
        detail: e.to_string(),
    }
}

fn outbox_key(n: u64) -> Vec<u8> {
    let mut k = b"o".to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

impl Ledger {
    /// The monitor's saved states and outbox (empty if it never ran).
    pub fn load_monitor(&self) -> Result<MonitorRecord, StoreError> {
        self.needs_indexes()?;
        let mut record = MonitorRecord::default();
        let Some(tree) = self.existing_tree(TREE)? else {
            return Ok(record);
        };
        for kv in tree.iter() {
            let (k, v) = kv?;
            match k.first() {
                Some(b's') => {
                    let item = String::from_utf8_lossy(&k[1..]).into_owned();
                    let (w, _): (Watched, usize) =
                        bincode::serde::decode_from_slice(&v, bincode::config::standard())
                            .map_err(|e| damaged(&k, e))?;
                    record.states.insert(item, w);
                }
                Some(b'o') => record
                    .outbox
                    .push(serde_json::from_slice(&v).map_err(|e| damaged(&k, e))?),
                Some(b'm') => {
                    let (marks, _): (Vec<(i32, i64)>, usize) =
                        bincode::serde::decode_from_slice(&v, bincode::config::standard())
                            .map_err(|e| damaged(&k, e))?;
                    record.marks = Some(marks);
                }
                Some(b'n') => {}
                _ => return Err(damaged(&k, "unknown monitor key")),
            }
        }
        Ok(record)
    }

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
            outbox.push(serde_json::from_slice(&v).map_err(|e| damaged(&k, e))?);
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

    /// Saves changed states and the alerts they produced, atomically and
    /// durably.
    pub fn save_monitor(
        &mut self,
        changed: &BTreeMap<String, Watched>,
        alerts: &[Alert],
    ) -> Result<(), StoreError> {
        if changed.is_empty() && alerts.is_empty() {
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
        let mut batch = sled::Batch::default();
        for (item, w) in changed {
            let mut k = b"s".to_vec();
            k.extend_from_slice(item.as_bytes());
            let v = bincode::serde::encode_to_vec(w, bincode::config::standard())
                .map_err(|e| damaged(&k, e))?;
            batch.insert(k, v);
        }
        for alert in alerts {
            let v = serde_json::to_vec(alert).map_err(|e| damaged(b"outbox", e))?;
            batch.insert(outbox_key(next), v);
            next += 1;
        }
        batch.insert(NEXT, next.to_be_bytes().to_vec());
        tree.apply_batch(batch)?;
        self.make_durable()
    }

    /// Records the alerts topic's end offsets before a send begins.
    pub fn mark_alerts_sending(&mut self, marks: &[(i32, i64)]) -> Result<(), StoreError> {
        let v = bincode::serde::encode_to_vec(marks, bincode::config::standard())
            .map_err(|e| damaged(MARKS, e))?;
        self.db.open_tree(TREE)?.insert(MARKS, v)?;
        self.make_durable()
    }

    /// Empties the outbox of the alerts with these ids (delivered), and
    /// forgets the marks once the outbox is empty.
    pub fn clear_alerts(&mut self, delivered: &[String]) -> Result<(), StoreError> {
        let tree = self.db.open_tree(TREE)?;
        let mut batch = sled::Batch::default();
        let delivered: std::collections::HashSet<&str> =
            delivered.iter().map(String::as_str).collect();
        let mut left = 0usize;
        for kv in tree.scan_prefix(b"o") {
            let (k, v) = kv?;
            let alert: Alert = serde_json::from_slice(&v).map_err(|e| damaged(&k, e))?;
            if delivered.contains(alert.alert_id.as_str()) {
                batch.remove(k);
            } else {
                left += 1;
            }
        }
        if left == 0 {
            batch.remove(MARKS);
        }
        tree.apply_batch(batch)?;
        self.make_durable()
    }
}
