//! `lifeledger replay`, `diff`, `timeline` and `what-if`: the ledger's
//! history replayed from the chains into fresh projections, never from the
//! saved projection, and never writing to the ledger.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use lifeledger_ledger::ReadOnlyLedger;
use lifeledger_ledger::policy::Policy;
use lifeledger_ledger::projection::diff::{DeadlineBrief, VerdictBrief, diff};
use lifeledger_ledger::projection::replay::{Cut, Point, Scope, parse_moment};
use lifeledger_ledger::projection::report::{judge_all, summarize};
use lifeledger_ledger::projection::timeline::{Order, Step, timeline};
use lifeledger_ledger::projection::verdict::ItemVerdict;
use lifeledger_ledger::projection::whatif::compare_policies;
use lifeledger_ledger::store::Replay;
use serde::Serialize;

use super::Outcome;
use super::retention::{choose_policy, days, print_report, status_line};

/// Which items a command is about.
#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// Only this account (APPID/UIN).
    #[arg(long, conflicts_with = "item")]
    pub account: Option<String>,
    /// Only this item.
    #[arg(long)]
    pub item: Option<String>,
}

impl ScopeArgs {
    fn scope(&self) -> anyhow::Result<Scope> {
        match (&self.account, &self.item) {
            (Some(a), _) => {
                let Some((app, uin)) = a.split_once('/') else {
                    bail!("--account {a:?}: write APPID/UIN, for example 1250000001/100000000001");
                };
                if app.is_empty() || uin.is_empty() {
                    bail!("--account {a:?}: APPID and UIN must both be given");
                }
                Ok(Scope::Account(a.clone()))
            }
            (None, Some(i)) => Ok(Scope::Item(i.clone())),
            (None, None) => Ok(Scope::All),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Replay up to this point: SEQ, CHAIN@SEQ, or a time the entries had
    /// reached the ledger by (RFC 3339 or YYYY-MM-DD). Default: every entry.
    #[arg(long)]
    pub until: Option<Point>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Judge as of this moment instead of the point's.
    #[arg(long, value_parser = parse_moment)]
    pub as_of: Option<Timestamp>,
    /// Judge under this policy file instead of the one published by then.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Items listed in the table (all of them with --json).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The earlier point (SEQ, CHAIN@SEQ or a time).
    #[arg(long)]
    pub from: Point,
    /// The later point; default every entry, judged now.
    #[arg(long)]
    pub to: Option<Point>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Judge both points under this policy file.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Lines listed per kind of change (all of them with --json).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("whose").required(true).args(["account", "item"])))]
pub struct TimelineArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Order by the time entries reached the ledger, and judge each step as
    /// of then, instead of by event time.
    #[arg(long)]
    pub by_receipt: bool,
    /// Judge under this policy file instead of the latest published one.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct WhatIfArgs {
    /// The policy file to compare with the published one.
    #[arg(long)]
    pub policy: PathBuf,
    /// Replay up to this point (default every entry).
    #[arg(long)]
    pub until: Option<Point>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Judge as of this moment instead of the point's.
    #[arg(long, value_parser = parse_moment)]
    pub as_of: Option<Timestamp>,
    #[arg(long)]
    pub json: bool,
}

/// The point as it went into a replay, for output.
#[derive(Debug, Serialize)]
struct PointOut {
    /// Entries received at or before this moment are in.
    moment: Timestamp,
    /// A chain cut by seq instead, and the last seq in.
    pinned_chain: Option<String>,
    pinned_seq: Option<u64>,
    /// Entries replayed, and how many each chain contributed.
    entries: u64,
    chains: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
struct PolicyOut {
    version: String,
    hash: String,
}

fn open(dir: &Path) -> anyhow::Result<ReadOnlyLedger> {
    ReadOnlyLedger::open(dir)
        .with_context(|| format!("opening the ledger at {} for reading", dir.display()))
}

fn resolve(ledger: &ReadOnlyLedger, point: Option<&Point>) -> anyhow::Result<Cut> {
    match point {
        Some(p) => Ok(ledger.resolve_point(p)?),
        None => Ok(Cut::everything(Timestamp::now())),
    }
}

/// Replays from `replay` on up to `cut`, with a progress bar.
fn run_replay(
    ledger: &ReadOnlyLedger,
    replay: &mut Replay,
    cut: &Cut,
    scope: &Scope,
    visit: &mut dyn FnMut(lifeledger_ledger::store::Visited<'_>),
) -> anyhow::Result<()> {
    let total: u64 = ledger.heads().map(|h| h.next_seq).sum();
    let bar = super::progress_bar(total, "replay");
    ledger.replay(replay, cut, scope, visit, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    Ok(())
}

fn point_out(cut: &Cut, replay: &Replay) -> PointOut {
    PointOut {
        moment: cut.moment,
        pinned_chain: cut.pinned.as_ref().map(|p| p.0.clone()),
        pinned_seq: cut.pinned.as_ref().map(|p| p.1),
        entries: replay.replayed,
        chains: replay.projection.covered.clone(),
    }
}

fn verdicts_in_scope(
    replay: &Replay,
    policy: &Policy,
    as_of: Timestamp,
    scope: &Scope,
) -> Vec<ItemVerdict> {
    let mut verdicts = judge_all(&replay.projection, policy, as_of);
    verdicts.retain(|v| {
        replay
            .projection
            .items
            .get(&v.item_id)
            .is_some_and(|i| scope.covers(i))
    });
    verdicts
}

fn describe_scope(scope: &Scope) -> String {
    match scope {
        Scope::Item(i) => format!("item {i}"),
        Scope::Account(a) => format!("account {a}"),
        Scope::All => "every item".into(),
    }
}

fn deadline_text(d: Option<&DeadlineBrief>) -> String {
    d.map_or_else(
        || "none".to_owned(),
        |d| format!("{} (rule {})", d.due_by, d.rule),
    )
}

fn verdict_text(v: Option<&VerdictBrief>) -> String {
    match v {
        None => "(nothing yet)".to_owned(),
        Some(v) if v.violations.is_empty() => v.status.clone(),
        Some(v) => format!("{} + {}", v.status, v.violations.join(", ")),
    }
}

pub fn replay(dir: &Path, args: ReplayArgs) -> anyhow::Result<Outcome> {
    let ledger = open(dir)?;
    let scope = args.scope.scope()?;
    let cut = resolve(&ledger, args.until.as_ref())?;
    let mut replay = Replay::new();
    run_replay(&ledger, &mut replay, &cut, &scope, &mut |_| {})?;
    let policy = choose_policy(&ledger, &replay.projection.policies, args.policy.as_deref())?;
    let as_of = args.as_of.unwrap_or(cut.moment);
    let verdicts = verdicts_in_scope(&replay, &policy, as_of, &scope);
    let summary = summarize(
        &verdicts,
        as_of,
        &policy.version,
        SignedDuration::from_hours(24 * 30),
    );
    if args.json {
        let json = serde_json::json!({
            "point": point_out(&cut, &replay),
            "as_of": as_of,
            "policy": PolicyOut { version: policy.version.clone(), hash: policy.hash.clone() },
            "summary": summary,
            "items": verdicts,
        });
        out!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(Outcome::Ok);
    }
    out!("Replay: {}", cut.describe());
    out!(
        "{} entries replayed from the chains ({} chains); nothing read from the saved projection",
        replay.replayed,
        replay.projection.covered.len()
    );
    print_report(&summary, &policy, 30);
    out!(
        "\n{:<24} {:<24} {:<40} deadline",
        "item",
        "category",
        "verdict"
    );
    for v in verdicts.iter().take(args.limit) {
        out!(
            "{:<24} {:<24} {:<40} {}",
            v.item_id,
            v.category.as_deref().unwrap_or("-"),
            status_line(v),
            v.deadline
                .as_ref()
                .map_or_else(|| "-".to_owned(), |d| format!("{} ({})", d.due_by, d.rule))
        );
    }
    if verdicts.len() > args.limit {
        out!(
            "… {} more (--limit N, or --json for all)",
            verdicts.len() - args.limit
        );
    }
    Ok(Outcome::Ok)
}

pub fn diff_points(dir: &Path, args: DiffArgs) -> anyhow::Result<Outcome> {
    let ledger = open(dir)?;
    let scope = args.scope.scope()?;
    let from = resolve(&ledger, Some(&args.from))?;
    let to = resolve(&ledger, args.to.as_ref())?;
    if !from.precedes(&to) {
        bail!(
            "--from ({}) is not before --to ({}): swap them",
            from.describe(),
            to.describe()
        );
    }
    let mut replay = Replay::new();
    run_replay(&ledger, &mut replay, &from, &scope, &mut |_| {})?;
    let before = replay.clone();
    run_replay(&ledger, &mut replay, &to, &scope, &mut |_| {})?;
    let policy_before =
        choose_policy(&ledger, &before.projection.policies, args.policy.as_deref())?;
    let policy_after = choose_policy(&ledger, &replay.projection.policies, args.policy.as_deref())?;
    let vb = verdicts_in_scope(&before, &policy_before, from.moment, &scope);
    let va = verdicts_in_scope(&replay, &policy_after, to.moment, &scope);
    let d = diff(&before.projection, &vb, &replay.projection, &va);
    if args.json {
        let json = serde_json::json!({
            "from": point_out(&from, &before),
            "to": point_out(&to, &replay),
            "policy_from": PolicyOut { version: policy_before.version.clone(), hash: policy_before.hash.clone() },
            "policy_to": PolicyOut { version: policy_after.version.clone(), hash: policy_after.hash.clone() },
            "diff": d,
        });
        out!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(Outcome::Ok);
    }
    out!("From: {} ({} entries)", from.describe(), before.replayed);
    out!("To:   {} ({} entries)", to.describe(), replay.replayed);
    if policy_before.hash != policy_after.hash {
        out!(
            "Policy: {} then {}",
            policy_before.version,
            policy_after.version
        );
    }
    let more = |n: usize| {
        if n > args.limit {
            out!("  … {} more (--limit N, or --json for all)", n - args.limit);
        }
    };
    out!("\nitems collected: {}", d.items_collected.len());
    for c in d.items_collected.iter().take(args.limit) {
        out!(
            "  {:<24} {:<24} {}@{}",
            c.item_id,
            c.category.as_deref().unwrap_or("-"),
            c.at.chain,
            c.at.seq
        );
    }
    for (title, list) in [
        ("copies added", &d.copies_added),
        ("copies deleted", &d.copies_deleted),
    ] {
        out!("\n{title}: {}", list.len());
        for c in list.iter().take(args.limit) {
            out!(
                "  {:<24} {:<28} happened {}  {}@{}",
                c.item_id,
                c.copy,
                c.at.event_time,
                c.at.chain,
                c.at.seq
            );
        }
        more(list.len());
    }
    out!("\ndeadlines set or changed: {}", d.deadlines.len());
    for c in d.deadlines.iter().take(args.limit) {
        out!(
            "  {:<24} {} -> {}",
            c.item_id,
            deadline_text(c.before.as_ref()),
            deadline_text(c.after.as_ref())
        );
    }
    more(d.deadlines.len());
    out!("\nverdicts changed: {}", d.verdicts.len());
    for c in d.verdicts.iter().take(args.limit) {
        out!(
            "  {:<24} {} -> {}",
            c.item_id,
            verdict_text(c.before.as_ref()),
            verdict_text(c.after.as_ref())
        );
    }
    more(d.verdicts.len());
    Ok(Outcome::Ok)
}

pub fn timeline_of(dir: &Path, args: TimelineArgs) -> anyhow::Result<Outcome> {
    let scope = args.scope.scope()?;
    let mut ledger = open(dir)?;
    let (steps, policies, imports) = match &scope {
        Scope::Item(item) => item_steps(&mut ledger, item)?,
        _ => replayed_steps(&ledger, &scope)?,
    };
    if steps.is_empty() {
        bail!("no entries for {} in the ledger", describe_scope(&scope));
    }
    let policy = choose_policy(&ledger, &policies, args.policy.as_deref())?;
    let order = if args.by_receipt {
        Order::Receipt
    } else {
        Order::Event
    };
    let rows = timeline(steps, &scope, &policy, order, &imports);
    if args.json {
        let json = serde_json::json!({
            "scope": match &scope { Scope::Item(i) => serde_json::json!({"item": i}), Scope::Account(a) => serde_json::json!({"account": a}), Scope::All => serde_json::json!({}) },
            "order": order,
            "policy": PolicyOut { version: policy.version.clone(), hash: policy.hash.clone() },
            "rows": rows,
        });
        out!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(Outcome::Ok);
    }
    out!(
        "Timeline of {} ({} entries, in {} order; each step judged as of its {} time under policy {})",
        describe_scope(&scope),
        rows.len(),
        if args.by_receipt { "receipt" } else { "event" },
        if args.by_receipt { "receipt" } else { "event" },
        policy.version
    );
    for r in &rows {
        out!(
            "\n{}{}{}{}  happened {}  received {}",
            r.kind,
            r.repeated_deletion_of_copy_gone_since
                .map(|t| format!(
                    " (repeated: the copy was already gone since {t}; changes nothing)"
                ))
                .unwrap_or_default(),
            r.imported_by
                .as_ref()
                .map(|by| format!(" (imported history, declared by {by})"))
                .unwrap_or_default(),
            r.ahead_of_receipt
                .map(|a| format!(" (future-dated: {a:#} after its receipt)"))
                .unwrap_or_default(),
            r.event_time,
            r.received_at
        );
        out!(
            "    {}@{}  from {}  hash {}  event {}{}",
            r.chain,
            r.seq,
            r.source,
            &r.hash[..16],
            r.event_id,
            r.item_id
                .as_deref()
                .map(|i| format!("  item {i}"))
                .unwrap_or_default()
        );
        for s in &r.standings {
            out!(
                "    => {:<22} {:<28} deadline {}",
                s.item_id,
                verdict_text(Some(&s.verdict)),
                deadline_text(s.deadline.as_ref())
            );
        }
    }
    Ok(Outcome::Ok)
}

pub fn what_if(dir: &Path, args: WhatIfArgs) -> anyhow::Result<Outcome> {
    let ledger = open(dir)?;
    let scope = args.scope.scope()?;
    let cut = resolve(&ledger, args.until.as_ref())?;
    let mut replay = Replay::new();
    run_replay(&ledger, &mut replay, &cut, &scope, &mut |_| {})?;
    let current = choose_policy(&ledger, &replay.projection.policies, None)?;
    let alternative = choose_policy(&ledger, &[], Some(&args.policy))?;
    let as_of = args.as_of.unwrap_or(cut.moment);
    let (judged, differences) =
        compare_policies(&replay.projection, &scope, &current, &alternative, as_of);
    if args.json {
        let json = serde_json::json!({
            "point": point_out(&cut, &replay),
            "as_of": as_of,
            "current": PolicyOut { version: current.version.clone(), hash: current.hash.clone() },
            "alternative": PolicyOut { version: alternative.version.clone(), hash: alternative.hash.clone() },
            "items_judged": judged,
            "differences": differences,
        });
        out!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(Outcome::Ok);
    }
    out!(
        "What if: {} ({}) instead of {} ({})",
        alternative.version,
        args.policy.display(),
        current.version,
        "published"
    );
    out!("Replay: {}; judged as of {as_of}", cut.describe());
    out!(
        "{} of {judged} items would have a different deadline or verdict",
        differences.len()
    );
    for d in &differences {
        out!(
            "\n{}  [{}]",
            d.item_id,
            d.category.as_deref().unwrap_or("-")
        );
        out!(
            "    {:<12} deadline {:<44} verdict {}",
            current.version,
            deadline_text(d.current.deadline.as_ref()),
            verdict_text(Some(&d.current.verdict))
        );
        out!(
            "    {:<12} deadline {:<44} verdict {}",
            alternative.version,
            deadline_text(d.alternative.deadline.as_ref()),
            verdict_text(Some(&d.alternative.verdict))
        );
        if let (Some(a), Some(b)) = (&d.current.deadline, &d.alternative.deadline) {
            out!(
                "    deadline moves by {}",
                days(b.due_by.duration_since(a.due_by))
            );
        }
    }
    Ok(Outcome::Ok)
}

/// What a timeline is made of: the steps, the policies published and the
/// declared imports.
type TimelineInput = (
    Vec<Step>,
    Vec<lifeledger_ledger::projection::PublishedPolicy>,
    Vec<lifeledger_ledger::projection::DeclaredImport>,
);

/// An item's steps, read at the places the (caught-up) projection names
/// rather than by replaying every chain: the cost is the item's entries,
/// not the ledger's.
fn item_steps(ledger: &mut ReadOnlyLedger, item: &str) -> anyhow::Result<TimelineInput> {
    let ledger = ledger.ledger_mut();
    let mut projection = ledger.open_or_rebuild_projection(&mut |_| {})?;
    ledger.catch_up(&mut projection, &mut |_| {})?;
    let Some(entries) = ledger.entries_of_item(&projection, item)? else {
        bail!("no item {item:?} in the ledger");
    };
    let mut steps = Vec::with_capacity(entries.len());
    for (record, entry) in entries {
        if let Some(event) = lifeledger_ledger::projection::entry_event(&entry)? {
            steps.push(Step {
                entry,
                hash: record.hash,
                event,
            });
        }
    }
    Ok((steps, projection.policies, projection.imports))
}

/// The steps of a scope, found by replaying every chain.
fn replayed_steps(ledger: &ReadOnlyLedger, scope: &Scope) -> anyhow::Result<TimelineInput> {
    let mut replay = Replay::new();
    let mut steps = Vec::new();
    run_replay(
        ledger,
        &mut replay,
        &Cut::everything(Timestamp::now()),
        scope,
        &mut |v| {
            let Some(event) = v.event else { return };
            // Account-wide events of other accounts ride along in an
            // account's replay; keep only those that name an account.
            if event.account.is_some() || matches!(scope, Scope::All) {
                steps.push(Step {
                    entry: v.entry.clone(),
                    hash: v.record.hash,
                    event: event.clone(),
                });
            }
        },
    )?;
    steps.retain(|s| s.event.account.is_some());
    Ok((steps, replay.projection.policies, replay.projection.imports))
}
