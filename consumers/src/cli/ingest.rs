//! `lifeledger ingest FILE`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use lifeledger::file::ingest_file;
use lifeledger_ledger::{Ledger, LedgerOptions};

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// A JSON Lines file: one event per line.
    pub file: PathBuf,
    /// The chain to append to.
    #[arg(long, default_value = "file")]
    pub chain: String,
    /// Lines per durable append.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Sign a checkpoint with this key every --checkpoint-every entries or
    /// --checkpoint-interval seconds, and at the end.
    #[arg(long, env = "LIFELEDGER_SIGNING_KEY")]
    pub checkpoint_key: Option<PathBuf>,
    #[arg(long, default_value_t = 100_000)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 60)]
    pub checkpoint_interval: u64,
    /// The file is history being loaded (a backfill): after it, record in
    /// chain `imports` that the entries this run appended are a declared
    /// import, so that their late reports are told apart from the live
    /// stream's.
    #[arg(long, requires = "declared_by")]
    pub backfill: bool,
    /// Who declares the import (an identifier: team, ticket, person).
    #[arg(long, requires = "backfill")]
    pub declared_by: Option<String>,
}

pub fn run(dir: &Path, args: IngestArgs) -> anyhow::Result<Outcome> {
    let mut ledger = Ledger::open(dir, LedgerOptions::default())
        .with_context(|| format!("opening the ledger at {}", dir.display()))?;
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?
        .len();
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} ingest [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut projection = ledger.open_or_rebuild_projection(&mut |_| {})?;
    let signer = args
        .checkpoint_key
        .as_deref()
        .map(super::audit::read_private_key)
        .transpose()?;
    let mut checkpoints = lifeledger::schedule::CheckpointSchedule::new(
        signer,
        args.checkpoint_every,
        std::time::Duration::from_secs(args.checkpoint_interval),
        &ledger,
    );
    let first_seq = ledger.head(&args.chain).map_or(0, |h| h.next_seq);
    let summary = ingest_file(
        &mut ledger,
        &args.chain,
        &args.file,
        args.batch_size,
        Timestamp::now,
        |bytes| bar.set_position(bytes),
        |ledger| {
            ledger.catch_up(&mut projection, &mut |_| {})?;
            checkpoints.maybe(ledger, false)
        },
    )?;
    let head = ledger.head(&args.chain).map_or(0, |h| h.next_seq);
    let declared = match (&args.declared_by, head > first_seq) {
        (Some(by), true) if args.backfill => {
            let path = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
            let at = ledger
                .declare_import(
                    &args.chain,
                    first_seq,
                    head - 1,
                    by,
                    &path.display().to_string(),
                    Timestamp::now(),
                )
                .with_context(|| "declaring the import".to_owned())?;
            ledger.catch_up(&mut projection, &mut |_| {})?;
            Some(at)
        }
        _ => None,
    };
    checkpoints.maybe(&mut ledger, true)?;
    bar.finish_and_clear();
    if args.json {
        let json = serde_json::json!({
            "file": args.file.display().to_string(),
            "chain": args.chain,
            "lines": summary.lines,
            "appended": summary.appended,
            "rejected": summary.rejected,
            "duplicates": summary.duplicates,
            "blank_lines": summary.blank_lines,
            "chain_entries": head,
            "declared_import": declared.as_ref().map(|_| serde_json::json!({
                "chain": args.chain,
                "first_seq": first_seq,
                "last_seq": head.saturating_sub(1),
                "declared_by": args.declared_by,
            })),
        });
        out!("{json}");
    } else {
        out!(
            "{}: {} lines: {} appended, {} rejected, {} duplicate{}; chain {:?} now has {} entries",
            args.file.display(),
            summary.lines,
            summary.appended,
            summary.rejected,
            summary.duplicates,
            if summary.blank_lines > 0 {
                format!(" ({} blank lines skipped)", summary.blank_lines)
            } else {
                String::new()
            },
            args.chain,
            head
        );
        if declared.is_some() {
            out!(
                "declared seqs {first_seq}..={} of chain {:?} an import of history (chain \"imports\")",
                head.saturating_sub(1),
                args.chain
            );
        }
    }
    Ok(Outcome::Ok)
}
