//! `lifeledger policy check|publish FILE`.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use jiff::Timestamp;
use lifeledger_ledger::policy::Policy;
use lifeledger_ledger::{Incoming, Ledger, LedgerOptions, Source};

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
            ledger.store_policy_text(&policy.hash, &text)?;
            // The id is the hash, so publishing the same file twice is
            // recognised rather than recorded as a conflict.
            let event_id = format!("policy-{}", &policy.hash[..32]);
            if let Some((chain, seq)) = ledger.find_event(&event_id)? {
                out!(
                    "policy {} (blake3 {}) was already published at chain {chain:?} seq {seq}",
                    policy.version,
                    policy.hash
                );
                return Ok(Outcome::Ok);
            }
            let now = Timestamp::now();
            let raw = serde_json::json!({
                "schema_version": 1,
                "event_id": event_id,
                "event_time": now.to_string(),
                "kind": {
                    "type": "policy_published",
                    "policy_version": policy.version,
                    "policy_hash": policy.hash,
                },
            });
            let path = std::fs::canonicalize(&file)?.to_string_lossy().into_owned();
            let input = Incoming {
                // Line 0: the whole file.
                source: Source::File { path, line: 0 },
                raw: serde_json::to_vec(&raw)?,
            };
            let report = ledger.append(POLICY_CHAIN, vec![input], now)?;
            let mut projection = ledger.load_or_rebuild_projection(&mut |_| {})?;
            ledger.catch_up(&mut projection, &mut |_| {})?;
            out!(
                "published policy {} (blake3 {}) at chain {POLICY_CHAIN:?} seq {}",
                policy.version,
                policy.hash,
                report.next_seq.saturating_sub(1)
            );
            Ok(Outcome::Ok)
        }
    }
}
