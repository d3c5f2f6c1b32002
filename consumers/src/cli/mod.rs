//! Command-line arguments, dispatch and exit codes.

/// Prints a line to stdout. A closed stdout (`lifeledger log | head`) ends
/// the process quietly: every write the command made is already durable.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::emit_line(format_args!($($arg)*))
    };
}

mod archive;
mod audit;
#[cfg(feature = "kafka")]
mod check_offsets;
#[cfg(feature = "kafka")]
mod consume;
#[cfg(feature = "kafka")]
mod demo;
mod entries;
mod ingest;
mod monitor;
mod policy;
mod replay;
#[cfg(feature = "kafka")]
mod replay_kafka;
mod report;
mod retention;
mod store;
mod verify;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lifeledger_ledger::{Ledger, LedgerOptions, ReadOnlyLedger, Snapshot};

/// Exit codes: 0 done (or intact), 1 verification found the ledger
/// broken, 2 unusable input (bad arguments, no ledger, I/O failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    VerificationFailed,
    Unusable,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::VerificationFailed => ExitCode::from(1),
            Outcome::Unusable => ExitCode::from(2),
        }
    }
}

/// An event-sourced, tamper-evident ledger of what happens to customer data.
#[derive(Debug, Parser)]
#[command(name = "lifeledger", version, about)]
pub struct Args {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct Global {
    /// The ledger directory.
    #[arg(
        long,
        global = true,
        env = "LIFELEDGER_DIR",
        default_value = "lifeledger-data"
    )]
    pub ledger: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append every line of a JSON Lines file to the ledger.
    Ingest(ingest::IngestArgs),
    /// Walk every chain and check hashes, links, seqs and heads.
    Verify(verify::VerifyArgs),
    /// Print entries.
    Log(entries::LogArgs),
    /// Print the head of every chain.
    Head(entries::HeadArgs),
    /// Check or publish a retention policy file.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Counts per verdict, category and store, and what is due soon.
    Status(retention::StatusArgs),
    /// Everything about one item: its entries, copies, deadline and verdict.
    Item(retention::ItemArgs),
    /// Every non-compliant item, and why.
    Findings(retention::JudgeArgs),
    /// Drop the derived indexes (event ids, rejections, Merkle subtrees)
    /// and derive them again from the segments.
    RebuildIndex,
    /// Convert a ledger of the earlier store format (entries inside sled)
    /// to segment files; verified before and after, the old one kept.
    Migrate,
    /// Rebuild the projection from the chains.
    RebuildProjection,
    /// The retention state as the ledger knew it at a point, replayed from
    /// the chains.
    Replay(replay::ReplayArgs),
    /// What changed between two points: collections, copies, deadlines,
    /// verdicts.
    Diff(replay::DiffArgs),
    /// Every entry about an account or item, with the verdict after each.
    Timeline(replay::TimelineArgs),
    /// Items whose deadline or verdict would differ under another policy.
    WhatIf(replay::WhatIfArgs),
    /// Rebuild a scratch ledger from a topic and compare it with the live
    /// chains for that range (the live ledger is only read).
    #[cfg(feature = "kafka")]
    ReplayKafka(replay_kafka::ReplayKafkaArgs),
    /// Read a topic and this ledger (and other members' with --also):
    /// every offset holding a record must be in exactly one of them. Exit
    /// 1 when an offset is missing or recorded twice.
    #[cfg(feature = "kafka")]
    CheckOffsets(check_offsets::CheckOffsetsArgs),
    /// Watch deadlines: alert once per item that becomes due soon, overdue,
    /// or clear again (to a Kafka topic or a JSON Lines file).
    Monitor(monitor::MonitorArgs),
    /// Write the retention report: one self-contained HTML file.
    Report(report::ReportArgs),
    /// Copy the sealed segments, checkpoints and policy texts to the
    /// write-once archive (sealing the open segments first).
    Archive(archive::ArchiveArgs),
    /// Rebuild a ledger directory (segments, indexes, projection) from the
    /// archive alone, and verify it against its newest checkpoint.
    Restore(archive::RestoreArgs),
    /// Make an Ed25519 key pair for signing checkpoints.
    Keygen(audit::KeygenArgs),
    /// Take a signed checkpoint covering every chain head.
    Checkpoint(audit::CheckpointArgs),
    /// Write a self-contained bundle an auditor can verify offline.
    Export(audit::ExportArgs),
    /// Write one item's evidence (entries, policy, inclusion proofs).
    Prove(audit::ProveArgs),
    /// Check a proof file offline and recompute the item's verdict.
    VerifyProof(audit::VerifyProofArgs),
    /// Consume lifecycle events from Kafka into the ledger until stopped.
    #[cfg(feature = "kafka")]
    Consume(consume::ConsumeArgs),
    /// Produce a synthetic stream to an in-process mock Kafka cluster,
    /// consume it into a fresh ledger, and judge it.
    #[cfg(feature = "kafka")]
    Demo(demo::DemoArgs),
}

/// A progress bar on stderr when it is a terminal, hidden otherwise.
pub(crate) fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what:<9} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

pub fn emit_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"));
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(2);
        }
    }
}

pub fn init_tracing(global: &Global) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFELEDGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only for a person at a terminal (and not when NO_COLOR asks
    // otherwise): a pipe or a log file gets plain text. Libraries that log
    // through the `log` crate (sled) reach this subscriber too, through its
    // log bridge, so they obey the same filter and format.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let dir = &args.global.ledger;
    match args.command {
        Command::Ingest(a) => ingest::run(dir, a),
        Command::Verify(a) => verify::run(dir, a),
        Command::Log(a) => entries::log(dir, a),
        Command::Head(a) => entries::head(dir, a),
        Command::Policy(c) => policy::run(dir, c),
        Command::Status(a) => retention::status(dir, a),
        Command::Item(a) => retention::item(dir, a),
        Command::Findings(a) => retention::findings(dir, a),
        Command::RebuildProjection => retention::rebuild(dir),
        Command::RebuildIndex => store::rebuild_index(dir),
        Command::Migrate => store::run_migrate(dir),
        Command::Replay(a) => replay::replay(dir, a),
        Command::Diff(a) => replay::diff_points(dir, a),
        Command::Timeline(a) => replay::timeline_of(dir, a),
        Command::WhatIf(a) => replay::what_if(dir, a),
        #[cfg(feature = "kafka")]
        Command::ReplayKafka(a) => replay_kafka::run(dir, a),
        #[cfg(feature = "kafka")]
        Command::CheckOffsets(a) => check_offsets::run(dir, a),
        Command::Monitor(a) => monitor::run(dir, a),
        Command::Report(a) => report::run(dir, a),
        Command::Archive(a) => archive::upload(dir, a),
        Command::Restore(a) => archive::restore(dir, a),
        Command::Keygen(a) => audit::keygen(a),
        Command::Checkpoint(a) => audit::checkpoint(dir, a),
        Command::Export(a) => audit::export(dir, a),
        Command::Prove(a) => audit::prove(dir, a),
        Command::VerifyProof(a) => audit::verify_proof(a),
        #[cfg(feature = "kafka")]
        Command::Consume(a) => {
            // Whether --ledger or LIFELEDGER_DIR was given, rather than
            // defaulted: only then does it override the config file.
            let ledger_given = std::env::args()
                .any(|a| a == "--ledger" || a.starts_with("--ledger="))
                || std::env::var_os("LIFELEDGER_DIR").is_some();
            consume::consume(dir, ledger_given, a)
        }
        #[cfg(feature = "kafka")]
        Command::Demo(a) => demo::run_demo(a),
    }
}

/// Opens an existing ledger for writing (checkpoints, projections); never
/// creates one.
fn open_existing_for_append(dir: &Path) -> anyhow::Result<Ledger> {
    // Reading the manifest first gives the precise refusal (no ledger, an
    // old format, foreign files) before anything is opened for writing.
    open_snapshot(dir)?;
    Ledger::open(dir, LedgerOptions::default())
        .with_context(|| format!("opening the ledger at {}", dir.display()))
}

/// An existing ledger for a reading command: the evidence in place, a
/// private copy of the indexes; nothing in the directory changes.
fn open_for_reading(dir: &Path) -> anyhow::Result<ReadOnlyLedger> {
    ReadOnlyLedger::open(dir).with_context(|| format!("reading the ledger at {}", dir.display()))
}

/// The evidence of an existing ledger as its manifest stands now: no lock,
/// no write, beside a running writer.
fn open_snapshot(dir: &Path) -> anyhow::Result<Snapshot> {
    Snapshot::open(dir).with_context(|| format!("reading the ledger at {}", dir.display()))
}
