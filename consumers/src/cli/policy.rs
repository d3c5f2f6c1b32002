//! `lifeledger policy check|publish FILE`.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use jiff::Timestamp;
use lifeledger_ledger::policy::Policy;
use lifeledger_ledger::store::Publication;
use lifeledger_ledger::{Ledger, LedgerOptions};

use super::Outcome;

/// The chain that policy publications are appended to.
pub const POLICY_CHAIN: &str = "policy";

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file without publishing it.
    Check { file: PathBuf },
    /// Check a policy file, keep its text, and append a `policy_published`
    /// entry with its hash. Later verdicts are judged under it.
    Publish { file: PathBuf },
}

fn read_policy(file: &Path) -> anyhow::Result<(String, Policy)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let policy = Policy::parse(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    Ok((text, policy))
}

pub fn run(dir: &Path, command: PolicyCommand) -> anyhow::Result<Outcome> {
    match command {
        PolicyCommand::Check { file } => {
            let (_, policy) = read_policy(&file)?;
            out!(
                "{}: policy {} is valid: {} categories, {} rules, {} stores, {} calendars; blake3 {}",
                file.display(),
                policy.version,
                policy.categories.len(),
                policy.rules.len(),
                policy.stores.len(),
                policy.calendars.len(),
                policy.hash
            );
            Ok(Outcome::Ok)
        }
        PolicyCommand::Publish { file } => {
            let (text, policy) = read_policy(&file)?;
            let mut ledger = Ledger::open(dir, LedgerOptions::default())
                .with_context(|| format!("opening the ledger at {}", dir.display()))?;
            let path = std::fs::canonicalize(&file)?.to_string_lossy().into_owned();
            let seq = match ledger.publish_policy(&policy, &text, &path, Timestamp::now())? {
                Publication::AlreadyPublished { chain, seq } => {
                    out!(
                        "policy {} (blake3 {}) was already published at chain {chain:?} seq {seq}",
                        policy.version,
                        policy.hash
                    );
                    return Ok(Outcome::Ok);
                }
                Publication::Published { seq } => seq,
            };
            let mut projection = ledger.open_or_rebuild_projection(&mut |_| {})?;
            ledger.catch_up(&mut projection, &mut |_| {})?;
            out!(
                "published policy {} (blake3 {}) at chain {POLICY_CHAIN:?} seq {seq}",
                policy.version,
                policy.hash
            );
            Ok(Outcome::Ok)
        }
    }
}
