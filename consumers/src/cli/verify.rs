//! `lifeledger verify`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeledger_ledger::verify::Depth;

use super::{Outcome, open_snapshot};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// An export bundle to verify offline (instead of the ledger directory).
    pub bundle: Option<PathBuf>,
    /// Verify the archive at this URL (s3://BUCKET/PREFIX, file:///PATH or
    /// a plain path) instead of the ledger directory: every chain, every
    /// checkpoint, and no object the archive does not write.
    #[arg(long, conflicts_with = "bundle")]
    pub from_archive: Option<String>,
    /// The signer's public key (required with a bundle; with an archive,
    /// checkpoints are otherwise checked against the key it holds).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// A checkpoint note you already trust: the bundle must extend it.
    #[arg(long, requires = "bundle")]
    pub trusted_checkpoint: Option<PathBuf>,
    /// Re-decode every event from its received bytes: the default; kept so
    /// that scripts which pass it keep working.
    #[arg(long, conflicts_with = "chain_only")]
    pub deep: bool,
    /// Check hashes, links, seqs and heads only; skip re-decoding each
    /// event from its received bytes (the recorded event id and canonical
    /// form are then not checked against them).
    #[arg(long)]
    pub chain_only: bool,
    /// With a bundle: accept entries after the newest checkpoint (they are
    /// then reported as unvouched, with their count, instead of failing).
    #[arg(long, requires = "bundle")]
    pub accept_unvouched_tail: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(dir: &Path, args: VerifyArgs) -> anyhow::Result<Outcome> {
    let depth = if args.chain_only {
        Depth::Chain
    } else {
        Depth::Events
    };
    if let Some(url) = &args.from_archive {
        return super::archive::verify(url, args.key.as_deref(), depth);
    }
    if args.key.is_some() && args.bundle.is_none() {
        anyhow::bail!("--key checks a bundle or an archive: give BUNDLE or --from-archive URL");
    }
    if let Some(bundle) = &args.bundle {
        let key = args.key.as_deref().ok_or_else(|| {
            anyhow::anyhow!("verifying a bundle needs the signer's public key: --key FILE")
        })?;
        return super::audit::verify_offline(
            bundle,
            key,
            args.trusted_checkpoint.as_deref(),
            !args.chain_only,
            args.accept_unvouched_tail,
            args.json,
        );
    }
    let ledger = open_snapshot(dir)?;
    let total: u64 = ledger.heads().map(|h| h.next_seq).sum();
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} verify [{bar:40}] {pos}/{len} entries {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let report = ledger.verify(depth, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    if args.json {
        let chains: Vec<_> = report
            .chains
            .iter()
            .map(|c| {
                serde_json::json!({
                    "chain": c.chain,
                    "entries": c.entries,
                    "events": c.events,
                    "rejected": c.rejected,
                    "head_hash": c.last_hash.map(|h| h.to_hex()),
                })
            })
            .collect();
        let findings: Vec<_> = report
            .findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "chain": f.chain,
                    "first_bad_seq": f.seq,
                    "problem": f.problem.to_string(),
                })
            })
            .collect();
        let json = serde_json::json!({
            "intact": report.is_intact(),
            "depth": if args.chain_only { "chain" } else { "events" },
            "chains": chains,
            "findings": findings,
        });
        out!("{json}");
    } else {
        for c in &report.chains {
            out!(
                "chain {:?}: intact, {} entries ({} events, {} rejected), head {}",
                c.chain,
                c.entries,
                c.events,
                c.rejected,
                c.last_hash
                    .map_or_else(|| "(empty)".to_owned(), |h| h.to_hex())
            );
        }
        for f in &report.findings {
            out!(
                "chain {:?}: BROKEN at seq {}: {}",
                f.chain,
                f.seq,
                f.problem
            );
        }
        if report.chains.is_empty() && report.findings.is_empty() {
            out!("the ledger is empty");
        }
    }
    Ok(if report.is_intact() {
        Outcome::Ok
    } else {
        Outcome::VerificationFailed
    })
}
