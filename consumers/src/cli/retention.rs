//! `lifeledger status`, `item` and `findings`: verdicts from the projection.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::{SignedDuration, Timestamp};
use lifeledger_ledger::policy::Policy;
use lifeledger_ledger::projection::facts::Facts;
use lifeledger_ledger::projection::replay::parse_moment;
use lifeledger_ledger::projection::report::{StatusReport, StatusTally, judge_each, tally_each};
use lifeledger_ledger::projection::verdict::{ItemVerdict, Status, Violation, judge};
use lifeledger_ledger::projection::{ItemState, Projection, PublishedPolicy};
use lifeledger_ledger::{Body, Ledger, LedgerOptions, ReadOnlyLedger};

use super::Outcome;

/// Options shared by the verdict commands.
#[derive(Debug, clap::Args)]
pub struct JudgeArgs {
    /// Judge as of this moment (RFC 3339, or a date for its start in UTC);
    /// default now. Events that happened later are not considered.
    #[arg(long, value_parser = parse_moment)]
    pub as_of: Option<Timestamp>,
    /// Judge under this policy file instead of the latest published one.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Items whose deadline is at most this many days away are due soon.
    #[arg(long, default_value_t = 30)]
    pub due_within_days: u32,
}

#[derive(Debug, clap::Args)]
pub struct ItemArgs {
    /// The item id.
    pub item: String,
    #[command(flatten)]
    pub judge: JudgeArgs,
}

/// The ledger, its projection brought up to date, and the policy to judge by.
struct Judged {
    ledger: ReadOnlyLedger,
    projection: Projection,
    policy: Policy,
    as_of: Timestamp,
}

fn prepare(dir: &Path, args: &JudgeArgs) -> anyhow::Result<Judged> {
    // The projection is caught up in private runs only: judging writes
    // nothing in the ledger directory.
    let mut reading = ReadOnlyLedger::open(dir)
        .with_context(|| format!("reading the ledger at {}", dir.display()))?;
    let ledger = reading.ledger_mut();
    // Partial: items stay saved in the private copy and are read one at a
    // time, so memory does not grow with the number of items.
    let mut projection = ledger.open_or_rebuild_projection(&mut |_| {})?;
    let pending: u64 = ledger
        .heads()
        .map(|h| h.next_seq.saturating_sub(projection.next_seq(&h.chain)))
        .sum();
    let bar = if pending > 10_000 && std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(pending), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} projection [{bar:40}] {pos}/{len} entries {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    ledger.catch_up(&mut projection, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    let policy = choose_policy(ledger, &projection.policies, args.policy.as_deref())?;
    Ok(Judged {
        ledger: reading,
        projection,
        policy,
        as_of: args.as_of.unwrap_or_else(Timestamp::now),
    })
}

/// The policy to judge by: `file` if given, else the latest publication
/// among `published` whose text the ledger holds.
pub(super) fn choose_policy(
    ledger: &Ledger,
    published: &[PublishedPolicy],
    file: Option<&Path>,
) -> anyhow::Result<Policy> {
    if let Some(file) = file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        return Policy::parse(&text).map_err(|e| anyhow!("{}: {e}", file.display()));
    }
    if let Some((_, policy)) = ledger.published_policy(published)? {
        return Ok(policy);
    }
    bail!(
        "no retention policy with its text has been published in this ledger (by that point); run \
         `lifeledger policy publish ledger/policies/retention-2026-11.toml` or pass --policy FILE"
    )
}

pub(super) fn days(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs.abs() >= 2 * 86_400 {
        format!("{}d", secs / 86_400)
    } else if secs.abs() >= 3_600 {
        format!("{}h {}m", secs / 3_600, (secs % 3_600).abs() / 60)
    } else {
        format!("{}m {}s", secs / 60, (secs % 60).abs())
    }
}

pub fn status(dir: &Path, args: StatusArgs) -> anyhow::Result<Outcome> {
    let j = prepare(dir, &args.judge)?;
    let window = SignedDuration::from_hours(24 * i64::from(args.due_within_days));
    let mut tally = StatusTally::new(j.as_of, &j.policy.version, window);
    let facts = j.ledger.ledger().facts(&j.projection)?;
    tally_each(&facts, &j.policy, j.as_of, &mut tally)?;
    let report = tally.finish();
    if args.judge.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(Outcome::Ok);
    }
    print_report(&report, &j.policy, args.due_within_days);
    Ok(Outcome::Ok)
}

/// Prints a status report as tables.
pub(super) fn print_report(report: &StatusReport, policy: &Policy, due_within_days: u32) {
    out!(
        "Retention status as of {}, judged under policy {} (blake3 {})",
        report.as_of,
        policy.version,
        policy.hash
    );
    out!(
        "{} items; {} with findings ({} deletions reported late; {} more late only as declared imported history)",
        report.items,
        report.findings,
        report.reported_late,
        report.reported_late_imported
    );
    out!("\n{:<18} {:>8}", "verdict", "items");
    for (status, n) in &report.by_status {
        out!("{status:<18} {n:>8}");
    }
    if !report.by_violation.is_empty() {
        out!("\n{:<22} {:>8}", "violation", "items");
        for (v, n) in &report.by_violation {
            out!("{v:<22} {n:>8}");
        }
    }
    out!("\n{:<24} verdicts", "category");
    for (category, counts) in &report.by_category {
        let list: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
        out!("{category:<24} {}", list.join(", "));
    }
    out!("\n{:<10} {:>8} {:>8}", "store", "present", "deleted");
    for (store, c) in &report.copies_by_store {
        out!("{store:<10} {:>8} {:>8}", c.present, c.deleted);
    }
    out!(
        "\nDue within {} days: {}",
        due_within_days,
        report.due_soon.len()
    );
    for d in report.due_soon.iter().take(20) {
        out!(
            "  {:<20} {:<24} due {} (in {}), rule {}",
            d.item_id,
            d.category.as_deref().unwrap_or("-"),
            d.due_by,
            days(d.remaining),
            d.rule
        );
    }
    if report.due_soon.len() > 20 {
        out!(
            "  … {} more (use --json for all)",
            report.due_soon.len() - 20
        );
    }
}

pub(super) fn status_line(v: &ItemVerdict) -> String {
    match &v.status {
        Status::Retained { why } => format!("retained: {why}"),
        Status::Due { remaining } => format!("due in {}", days(*remaining)),
        Status::DeletedOnTime { deleted_at } => format!("deleted on time at {deleted_at}"),
        Status::DeletedLate {
            deleted_at,
            late_by,
        } => format!(
            "deleted LATE at {deleted_at}, {} after the deadline",
            days(*late_by)
        ),
        Status::Overdue {
            overdue_by,
            copies_remaining,
        } => format!(
            "OVERDUE by {}; copies remaining: {}",
            days(*overdue_by),
            copies_remaining.join(", ")
        ),
        Status::EarlyDeletion {
            deleted_at,
            minimum_until,
        } => format!(
            "deleted EARLY at {deleted_at}, before the minimum retention ending {minimum_until}"
        ),
        Status::OnHold { hold_id, since } => format!("on legal hold {hold_id} since {since}"),
        Status::Orphan => "ORPHAN: events name this item but its collection is not recorded".into(),
    }
}

/// A duration in days, hours and minutes (seconds dropped).
fn rounded(d: jiff::SignedDuration) -> String {
    let secs = d.as_secs().unsigned_abs();
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days} d"));
    }
    if hours > 0 {
        parts.push(format!("{hours} h"));
    }
    if minutes > 0 || parts.is_empty() {
        parts.push(format!("{minutes} min"));
    }
    parts.join(" ")
}

pub(super) fn violation_line(v: &Violation) -> String {
    match v {
        Violation::ForbiddenStore { copy, at, clause } => {
            format!(
                "copy {copy} is in a store the category does not allow (seq {}); {clause}",
                at.seq
            )
        }
        Violation::ForbiddenRegion { region, at, clause } => {
            format!("collected in {region} (seq {}); {clause}", at.seq)
        }
        Violation::SensitiveData { at, clause } => {
            format!("collection marked sensitive (seq {}); {clause}", at.seq)
        }
        Violation::BelowAgeOfConsent { at, clause } => {
            format!(
                "subject below the age of consent (seq {}); {clause}",
                at.seq
            )
        }
        Violation::UnknownCategory { category } => {
            format!("category {category:?} is not in the policy")
        }
        Violation::DeadlineMissedBeforeHold {
            due_by,
            hold_id,
            at,
        } => {
            format!(
                "the deadline {due_by} passed with copies remaining before legal hold {hold_id} was placed (seq {})",
                at.seq
            )
        }
        Violation::DeletedUnderHold { hold_id, at } => {
            format!(
                "last copy deleted at seq {} while legal hold {hold_id} was in force",
                at.seq
            )
        }
        Violation::DeletedBeforeMinimum {
            deleted_at,
            minimum_until,
            at,
        } => {
            format!(
                "every copy was gone at {deleted_at} (seq {}), before the minimum retention until {minimum_until}; a later event brought a copy back",
                at.seq
            )
        }
        Violation::FutureDated {
            at,
            ahead_by,
            tolerance,
            clause,
        } => {
            format!(
                "event {} (chain {} seq {}) is dated {} after the ledger received it, more than the {} tolerated; {clause}",
                at.event_id,
                at.chain,
                at.seq,
                rounded(*ahead_by),
                rounded(*tolerance)
            )
        }
    }
}

pub fn item(dir: &Path, args: ItemArgs) -> anyhow::Result<Outcome> {
    let j = prepare(dir, &args.judge)?;
    let facts = j.ledger.ledger().facts(&j.projection)?;
    let Some(state) = facts.item(&args.item)? else {
        bail!("no item {:?} in the ledger", args.item);
    };
    let state: &ItemState = &state;
    let account = facts.account_of(state)?;
    let account = account.as_deref();
    let verdict = judge(state, account, &j.policy, j.as_of).map(|mut v| {
        v.weigh_imports(&j.projection.imports);
        v
    });
    if args.judge.json {
        // What the judgement set aside, named: deletions of copies already
        // gone, and entries that are declared imported history.
        let mut entries = state.entries();
        entries.extend(account.map(|a| a.entries()).unwrap_or_default());
        let imported: Vec<serde_json::Value> = entries
            .iter()
            .filter_map(|r| {
                j.projection
                    .import_of(r, |d| d.event_time <= j.as_of)
                    .map(|d| {
                        serde_json::json!({
                            "chain": r.chain,
                            "seq": r.seq,
                            "declared_by": d.declared_by,
                            "declared_at": {"chain": d.at.chain, "seq": d.at.seq},
                        })
                    })
            })
            .collect();
        let json = serde_json::json!({
            "item": state,
            "account": account,
            "verdict": verdict,
            "repeated_deletions": state.repeated_deletions(),
            "imported_entries": imported,
        });
        out!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(Outcome::Ok);
    }
    out!("item {}", state.item_id);
    if let Some(a) = &state.account {
        out!("account   APPID {} UIN {}", a.app_id, a.uin);
    }
    out!("category  {}", state.category.as_deref().unwrap_or("-"));
    out!("\nentries (item and account), in ledger order:");
    let mut refs = state.entries();
    refs.extend(account.map(|a| a.entries()).unwrap_or_default());
    refs.sort_by(|a, b| (a.chain.as_str(), a.seq).cmp(&(b.chain.as_str(), b.seq)));
    for r in refs {
        let what = j
            .ledger
            .entries(&r.chain, r.seq, r.seq)?
            .next()
            .transpose()?
            .map(|(_, e)| match e.body {
                Body::Event { canonical, .. } => {
                    serde_json::from_slice::<serde_json::Value>(&canonical)
                        .map(|v| v["kind"].to_string())
                        .unwrap_or_default()
                }
                Body::Rejected { .. } => "(rejected)".into(),
            })
            .unwrap_or_default();
        out!(
            "  {:>14} seq {:<8} happened {}  received {}  {}",
            r.chain,
            r.seq,
            r.event_time,
            r.received_at,
            what
        );
    }
    let Some(v) = verdict else {
        out!("\nnothing about this item had happened by {}", j.as_of);
        return Ok(Outcome::Ok);
    };
    out!("\ncopies as of {}:", v.as_of);
    for c in &v.copies {
        let state = if c.present { "present" } else { "deleted" };
        out!(
            "  {:<20} {state} since {} (seq {})",
            c.copy,
            c.since,
            c.at.seq
        );
    }
    match &v.deadline {
        Some(d) => {
            out!("\ndeadline  {} (rule {})", d.due_by, d.rule);
            out!("          {}", d.explanation);
            out!("clause    {}", d.clause);
            let basis: Vec<String> = d
                .basis
                .iter()
                .map(|r| format!("{}#{}", r.chain, r.seq))
                .collect();
            out!("set by    {}", basis.join(", "));
        }
        None => out!("\ndeadline  none"),
    }
    out!(
        "\nverdict   {} (policy {})",
        status_line(&v),
        v.policy_version
    );
    for violation in &v.violations {
        out!("VIOLATION {}", violation_line(violation));
    }
    for c in &v.considered {
        match c {
            lifeledger_ledger::projection::verdict::Consideration::RequestDidNotApply {
                at,
                rule,
                clause,
            } => out!(
                "considered: the deletion request at {} seq {} ({}) does not apply: rule {rule} runs no clock on a request; {clause}",
                at.chain,
                at.seq,
                at.event_time
            ),
        }
    }
    if v.reported_late_imported {
        out!(
            "EVIDENCE  the deletion reached the ledger after the deadline, as declared imported history (chain \"imports\"): a backfill, not the live stream"
        );
    }
    if v.reported_late {
        out!(
            "EVIDENCE  the deletion reached the ledger after the deadline: the chain cannot vouch it was on time"
        );
    }
    Ok(Outcome::Ok)
}

pub fn findings(dir: &Path, args: JudgeArgs) -> anyhow::Result<Outcome> {
    let j = prepare(dir, &args)?;
    let mut found: Vec<ItemVerdict> = Vec::new();
    let facts = j.ledger.ledger().facts(&j.projection)?;
    judge_each(&facts, &j.policy, j.as_of, &mut |v| {
        if v.is_finding() {
            found.push(v);
        }
    })?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(Outcome::Ok);
    }
    out!(
        "{} non-compliant items as of {} (policy {})",
        found.len(),
        j.as_of,
        j.policy.version
    );
    for v in &found {
        out!(
            "\n{}  [{}]  {}",
            v.item_id,
            v.category.as_deref().unwrap_or("-"),
            status_line(v)
        );
        if let Some(d) = &v.deadline {
            out!(
                "    deadline {} (rule {}): {}",
                d.due_by,
                d.rule,
                d.explanation
            );
        }
        for violation in &v.violations {
            out!("    violation: {}", violation_line(violation));
        }
        if v.reported_late {
            out!("    evidence: the deletion reached the ledger after the deadline");
        }
    }
    Ok(Outcome::Ok)
}

pub fn rebuild(dir: &Path) -> anyhow::Result<Outcome> {
    let mut ledger = Ledger::open(dir, LedgerOptions::default())
        .with_context(|| format!("opening the ledger at {}", dir.display()))?;
    let start = std::time::Instant::now();
    let (projection, built) = ledger.rebuild_projection_sized(&mut |_| {})?;
    out!(
        "rebuilt the projection from {} entries in {:.2?}: {} items, {} accounts",
        projection.covered.values().sum::<u64>(),
        start.elapsed(),
        built.items,
        built.accounts,
    );
    Ok(Outcome::Ok)
}
