//! `migrate` and `rebuild-index`: commands on the store itself.

use std::path::Path;

use anyhow::Context;
use lifeledger_ledger::migrate;

use super::{Outcome, open_existing_for_append};

/// Converts a ledger of the earlier store format (entries inside sled).
pub fn run_migrate(dir: &Path) -> anyhow::Result<Outcome> {
    let report =
        migrate(dir).with_context(|| format!("migrating the ledger at {}", dir.display()))?;
    for (chain, entries, hash) in &report.heads {
        out!("chain {chain:?}: {entries} entries, head {hash} (same before and after)");
    }
    out!(
        "migrated and verified; the earlier ledger is kept at {} (remove it when you no longer need it)",
        report.kept_at.display()
    );
    Ok(Outcome::Ok)
}

/// Drops the derived indexes and derives them again from the segments.
pub fn rebuild_index(dir: &Path) -> anyhow::Result<Outcome> {
    let mut ledger = open_existing_for_append(dir)?;
    ledger.rebuild_indexes()?;
    let entries: u64 = ledger.heads().map(|h| h.next_seq).sum();
    out!("indexes derived again from {entries} entries");
    Ok(Outcome::Ok)
}
