//! `lifeledger report`: the retention report as one self-contained HTML
//! file. Reads the ledger only: verifies it, checks the latest signed
//! checkpoint against it, replays it, judges every item as of the moment,
//! and draws the timeline of each finding.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use jiff::{SignedDuration, Timestamp};
use lifeledger::report::{CheckpointSummary, ReportData, VerificationSummary, render};
use lifeledger_ledger::ReadOnlyLedger;
use lifeledger_ledger::checkpoint::{PublicKey, verify_note};
use lifeledger_ledger::projection::account_key;
use lifeledger_ledger::projection::replay::{Cut, Scope, parse_moment};
use lifeledger_ledger::projection::report::{judge_all, summarize};
use lifeledger_ledger::projection::timeline::{Order, Step, timeline};
use lifeledger_ledger::projection::verdict::{ItemVerdict, Status};
use lifeledger_ledger::store::Replay;
use lifeledger_ledger::verify::Depth;

use super::Outcome;
use super::retention::choose_policy;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Judge as of this moment (default now).
    #[arg(long, value_parser = parse_moment)]
    pub as_of: Option<Timestamp>,
    /// Write the page here.
    #[arg(long)]
    pub out: PathBuf,
    /// Check the checkpoint with this public key instead of the one the
    /// ledger recorded.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Judge under this policy file instead of the latest published one.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Findings shown with their timelines (most pressing first).
    #[arg(long, default_value_t = 200)]
    pub max_findings: usize,
}

/// Most pressing first: overdue (longest first), late, early, orphans,
/// then items with violations or late reports only.
fn urgency(v: &ItemVerdict) -> (u8, i64) {
    match &v.status {
        Status::Overdue { overdue_by, .. } => (0, -overdue_by.as_secs()),
        Status::DeletedLate { late_by, .. } => (1, -late_by.as_secs()),
        Status::EarlyDeletion { .. } => (2, 0),
        Status::Orphan => (3, 0),
        _ if !v.violations.is_empty() => (4, 0),
        _ => (5, 0),
    }
}

fn checkpoint_summary(
    ledger: &ReadOnlyLedger,
    key: Option<&Path>,
) -> anyhow::Result<Option<CheckpointSummary>> {
    let Some(note) = ledger.checkpoints()?.pop() else {
        return Ok(None);
    };
    let key = match key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(PublicKey::parse(text.trim()).map_err(|e| anyhow!("{}: {e}", path.display()))?)
        }
        None => ledger.signer()?,
    };
    let unverified = lifeledger_ledger::checkpoint::read_unverified(&note)?;
    let (signature_ok, checkpoint, key_name) = match &key {
        Some(k) => match verify_note(&note, k) {
            Ok(c) => (true, c, k.name.clone()),
            Err(_) => (false, unverified, k.name.clone()),
        },
        None => (false, unverified, "(no key known)".to_owned()),
    };
    let mut consistent = true;
    for c in &checkpoint.chains {
        let size_now = ledger.head(&c.chain).map_or(0, |h| h.next_seq);
        if size_now < c.size || ledger.tree_root_at(&c.chain, c.size)? != c.root {
            consistent = false;
        }
    }
    Ok(Some(CheckpointSummary {
        origin: checkpoint.origin.clone(),
        time: checkpoint.time,
        key_name,
        signature_ok,
        entries: checkpoint.total_size(),
        chains: checkpoint.chains.len() as u64,
        consistent,
        root_hex: hex::encode(checkpoint.root()),
    }))
}

pub fn run(dir: &Path, args: ReportArgs) -> anyhow::Result<Outcome> {
    let ledger = ReadOnlyLedger::open(dir)
        .with_context(|| format!("opening the ledger at {} for reading", dir.display()))?;
    let as_of = args.as_of.unwrap_or_else(Timestamp::now);
    let total: u64 = ledger.heads().map(|h| h.next_seq).sum();

    let bar = super::progress_bar(total, "verify");
    let report = ledger.verify(Depth::Chain, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    let verification = VerificationSummary {
        intact: report.is_intact(),
        chains: (report.chains.len() + report.findings.len()) as u64,
        entries: report.chains.iter().map(|c| c.entries).sum(),
        findings: report.findings.iter().map(ToString::to_string).collect(),
    };
    let checkpoint = checkpoint_summary(&ledger, args.key.as_deref())?;

    // A broken ledger is still reported, as far as it is intact.
    let mut replay = Replay::up_to_damage();
    let bar = super::progress_bar(total, "replay");
    ledger.replay(
        &mut replay,
        &Cut::everything(Timestamp::now()),
        &Scope::All,
        &mut |_| {},
        &mut |n| bar.set_position(n),
    )?;
    bar.finish_and_clear();
    let policy = choose_policy(&ledger, &replay.projection.policies, args.policy.as_deref())?;
    let verdicts = judge_all(&replay.projection, &policy, as_of);
    let summary = summarize(
        &verdicts,
        as_of,
        &policy.version,
        SignedDuration::from_hours(24 * 30),
    );

    let mut findings: Vec<&ItemVerdict> = verdicts.iter().filter(|v| v.is_finding()).collect();
    findings.sort_by_key(|v| (urgency(v), v.item_id.clone()));
    let left_out = findings.len().saturating_sub(args.max_findings) as u64;
    findings.truncate(args.max_findings);

    // A second pass collects the entries of the findings shown.
    let wanted: BTreeSet<&str> = findings.iter().map(|v| v.item_id.as_str()).collect();
    let accounts: BTreeSet<String> = findings
        .iter()
        .filter_map(|v| v.account.as_ref().map(account_key))
        .collect();
    let mut steps: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    let mut account_steps: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    let mut second = Replay::up_to_damage();
    ledger.replay(
        &mut second,
        &Cut::everything(Timestamp::now()),
        &Scope::All,
        &mut |v| {
            let Some(event) = v.event else { return };
            let step = || Step {
                entry: v.entry.clone(),
                hash: v.record.hash,
                event: event.clone(),
            };
            match (event.item(), event.account.as_ref()) {
                (Some(item), _) if wanted.contains(item) => {
                    steps.entry(item.to_owned()).or_default().push(step());
                }
                (None, Some(a)) if accounts.contains(&account_key(a)) => {
                    account_steps
                        .entry(account_key(a))
                        .or_default()
                        .push(step());
                }
                _ => {}
            }
        },
        &mut |_| {},
    )?;
    let shown = findings
        .iter()
        .map(|v| {
            let mut item_steps = steps.remove(&v.item_id).unwrap_or_default();
            if let Some(a) = v.account.as_ref().map(account_key) {
                item_steps.extend(account_steps.get(&a).cloned().unwrap_or_default());
            }
            let rows = timeline(
                item_steps,
                &Scope::Item(v.item_id.clone()),
                &policy,
                Order::Event,
                &replay.projection.imports,
            );
            ((*v).clone(), rows)
        })
        .collect();

    let data = ReportData {
        ledger: dir.display().to_string(),
        generated_at: Timestamp::now(),
        as_of,
        policy_version: policy.version.clone(),
        policy_hash: policy.hash.clone(),
        verification,
        checkpoint,
        summary,
        verdicts,
        findings: shown,
        findings_left_out: left_out,
        replayed_up_to_damage: replay.damaged.clone(),
    };
    let html = render(&data);
    std::fs::write(&args.out, &html).with_context(|| format!("writing {}", args.out.display()))?;
    out!(
        "wrote {} ({} KiB): {} items, {} findings ({} shown with timelines), verification {}, checkpoint {}",
        args.out.display(),
        html.len() / 1024,
        data.summary.items,
        data.summary.findings,
        data.findings.len(),
        if data.verification.intact {
            "intact"
        } else {
            "FAILED"
        },
        match &data.checkpoint {
            Some(c) if c.signature_ok && c.consistent => "valid",
            Some(_) => "NOT valid",
            None => "none",
        }
    );
    Ok(if data.verification.intact {
        Outcome::Ok
    } else {
        Outcome::VerificationFailed
    })
}
