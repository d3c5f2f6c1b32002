//! Golden retention scenarios: events in, deadlines and verdicts out.
//!
//! Each file in `testdata/scenarios/` is a scenario:
//!
//! ```text
//! # what it shows
//! as_of 2026-12-01T00:00:00Z
//! 2026-01-01T00:00:00Z collected item=i1 category=product_configuration region=SG
//! 2026-01-01T00:00:01Z stored item=i1 store=mysql
//! ----
//! i1 deleted_on_time deadline=2026-06-30T00:00:00Z rule=B
//! ```
//!
//! Event lines are `TIME KIND key=value…`; kinds are the schema's, with
//! short names for the account triggers (`terminated`, `service_ended`,
//! `requested`, `hold_placed`, `hold_released`). `received=TIME` sets when
//! the ledger received the event (default: its event time); `account=N`
//! picks another account. Expected lines are one per item, sorted by item.
//! Each scenario is judged twice: with events in file order, and with the
//! order reversed (arrival order must not matter). `calendar REGION ZONE`
//! gives a region the shipped policy has no calendar for one of its own
//! (weekends only, in IANA time zone ZONE) for that scenario.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;
use lifeledger_ledger::chain::ChainHead;
use lifeledger_ledger::entry::Entry;
use lifeledger_ledger::policy::Policy;
use lifeledger_ledger::projection::Projection;
use lifeledger_ledger::projection::report::judge_all;
use lifeledger_ledger::projection::verdict::{ItemVerdict, Status};
use lifeledger_ledger::{Body, Source};
use serde_json::{Value, json};

const POLICY: &str = include_str!("../policies/retention-2026-11.toml");

struct Scenario {
    as_of: Timestamp,
    /// Extra calendars: (region, IANA zone).
    calendars: Vec<(String, String)>,
    /// Event ids declared an import of history (flag `imported`).
    imported: std::collections::BTreeSet<String>,
    /// (event JSON, received_at)
    events: Vec<(Value, Timestamp)>,
    expected: Vec<String>,
}

fn parse(text: &str) -> Scenario {
    let (input, expected) = text
        .split_once("\n----\n")
        .expect("a scenario needs a ---- line");
    let mut as_of = None;
    let mut calendars = Vec::new();
    let mut imported = std::collections::BTreeSet::new();
    let mut events = Vec::new();
    let mut categories: BTreeMap<String, String> = BTreeMap::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap();
        if first == "as_of" {
            as_of = Some(words.next().unwrap().parse().unwrap());
            continue;
        }
        if first == "calendar" {
            let region = words.next().unwrap().to_owned();
            let zone = words.next().unwrap().to_owned();
            calendars.push((region, zone));
            continue;
        }
        let time: Timestamp = first
            .parse()
            .unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        let kind = words.next().unwrap();
        let mut args: BTreeMap<&str, &str> = BTreeMap::new();
        let mut flags = Vec::new();
        for w in words {
            match w.split_once('=') {
                Some((k, v)) => {
                    args.insert(k, v);
                }
                None => flags.push(w),
            }
        }
        if flags.contains(&"imported") {
            imported.insert(format!("ev-{}", n + 1));
        }
        let account = args.get("account").copied().unwrap_or("1");
        let mut event = json!({
            "schema_version": 1,
            "event_id": format!("ev-{}", n + 1),
            "event_time": time.to_string(),
            "account": {"app_id": format!("12500000{account:0>2}"), "uin": format!("1000000000{account:0>2}")},
        });
        let item = args.get("item").map(|s| s.to_string());
        if let Some(item) = &item {
            event["item_id"] = json!(item);
        }
        let kind_json = match kind {
            "collected" => {
                let item = item.clone().unwrap();
                categories.insert(item, args["category"].to_owned());
                event["region"] = json!(args["region"]);
                json!({"type": "collected", "sensitive": flags.contains(&"sensitive"),
                       "purpose": "scenario", "below_age_of_consent": flags.contains(&"minor")})
            }
            "stored" => json!({"type": "stored", "store": args["store"]}),
            "backed_up" => {
                json!({"type": "backed_up", "store": args["store"], "backup_id": args["backup"], "source_store": args["from"]})
            }
            "deleted" => match args.get("backup") {
                Some(b) => json!({"type": "deleted", "store": args["store"], "backup_id": b}),
                None => json!({"type": "deleted", "store": args["store"]}),
            },
            "terminated" => json!({"type": "hosting_service_terminated"}),
            "service_ended" => json!({"type": "service_use_ended"}),
            "requested" => {
                json!({"type": "deletion_requested", "request_id": format!("r{}", n + 1),
                                  "categories": args["categories"].split(',').collect::<Vec<_>>()})
            }
            "hold_placed" => json!({"type": "legal_hold_placed", "hold_id": args["id"]}),
            "hold_released" => json!({"type": "legal_hold_released", "hold_id": args["id"]}),
            other => panic!("line {}: unknown kind {other}", n + 1),
        };
        if let (Some(item), true) = (&item, !kind.starts_with("hold")) {
            let category = args
                .get("category")
                .map(|s| s.to_string())
                .or_else(|| categories.get(item).cloned())
                .unwrap_or_else(|| "asset_management".into());
            event["category"] = json!(category);
        }
        event["kind"] = kind_json;
        let received = args.get("received").map_or(time, |r| r.parse().unwrap());
        events.push((event, received));
    }
    Scenario {
        as_of: as_of.expect("a scenario needs as_of"),
        calendars,
        imported,
        events,
        expected: expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

/// The events as entries of chain `scenario`, in the order given, and a
/// declaration on chain `imports` for each event in `imported`, recorded
/// when the event was received.
fn entries(
    events: &[(Value, Timestamp)],
    imported: &std::collections::BTreeSet<String>,
) -> Vec<Entry> {
    let mut out = scenario_entries(events);
    let mut imports = ChainHead::empty("imports");
    let declarations: Vec<Entry> = out
        .iter()
        .filter(|e| matches!(&e.body, Body::Event { event_id, .. } if imported.contains(event_id)))
        .map(|e| {
            let raw = serde_json::to_vec(&json!({
                "schema_version": 1,
                "event_id": format!("import-{}", e.seq),
                "event_time": e.received_at.to_string(),
                "kind": {"type": "history_imported", "declared_by": "scenario",
                         "chain": "scenario", "first_seq": e.seq, "last_seq": e.seq},
            }))
            .unwrap();
            event_entry(&mut imports, raw, e.received_at, 0)
        })
        .collect();
    out.extend(declarations);
    out
}

/// An event's bytes appended to a chain, as the ledger would record them.
fn event_entry(head: &mut ChainHead, raw: Vec<u8>, received: Timestamp, line: u64) -> Entry {
    let decoded = lifeledger_schemas::decode_event(&raw)
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&raw)));
    let body = Body::Event {
        canonical: lifeledger_schemas::canonical_json(&decoded),
        event_id: decoded.event_id,
        raw,
    };
    let source = Source::File {
        path: "scenario".into(),
        line,
    };
    Entry::decode(&head.append(received, source, body).encoding).unwrap()
}

fn scenario_entries(events: &[(Value, Timestamp)]) -> Vec<Entry> {
    let mut head = ChainHead::empty("scenario");
    events
        .iter()
        .enumerate()
        .map(|(i, (event, received))| {
            event_entry(
                &mut head,
                serde_json::to_vec(event).unwrap(),
                *received,
                i as u64 + 1,
            )
        })
        .collect()
}

fn render(v: &ItemVerdict) -> String {
    let mut out = format!("{} {}", v.item_id, v.status.name());
    match &v.deadline {
        Some(d) => out += &format!(" deadline={} rule={}", d.due_by, d.rule),
        None => out += " deadline=none",
    }
    match &v.status {
        Status::DeletedLate { late_by, .. } => out += &format!(" late_by={late_by:#}"),
        Status::Overdue {
            overdue_by,
            copies_remaining,
        } => {
            out += &format!(
                " overdue_by={overdue_by:#} remaining={}",
                copies_remaining.join(",")
            )
        }
        Status::OnHold { hold_id, .. } => out += &format!(" hold={hold_id}"),
        Status::EarlyDeletion { minimum_until, .. } => {
            out += &format!(" minimum_until={minimum_until}")
        }
        _ => {}
    }
    if !v.violations.is_empty() {
        let names: Vec<_> = v.violations.iter().map(|x| x.name()).collect();
        out += &format!(" violations={}", names.join(","));
    }
    if v.reported_late {
        out += " reported_late";
    }
    if v.reported_late_imported {
        out += " reported_late_imported";
    }
    for c in &v.considered {
        match c {
            lifeledger_ledger::projection::verdict::Consideration::RequestDidNotApply {
                rule,
                ..
            } => out += &format!(" request_did_not_apply(rule {rule})"),
        }
    }
    out
}

/// Folds the entries and renders every item's verdict.
fn verdicts(entries: &[Entry], as_of: Timestamp, policy: &Policy) -> Vec<String> {
    let mut projection = Projection::default();
    for e in entries {
        projection.apply(e).unwrap();
    }
    judge_all(&projection, policy, as_of)
        .iter()
        .map(render)
        .collect()
}

/// The shipped policy with a weekends-only calendar in `zone` for each
/// region given.
fn with_calendars(calendars: &[(String, String)]) -> Policy {
    let mut text = POLICY.to_owned();
    let mut regions = String::new();
    for (region, zone) in calendars {
        let name = format!("scenario_{}", region.to_lowercase());
        text.push_str(&format!(
            "\n[calendars.{name}]\nweekend = [\"saturday\", \"sunday\"]\nholidays = []\nclause = \"scenario calendar\"\ntime_zone = \"{zone}\"\ntime_zone_clause = \"scenario\"\n"
        ));
        regions.push_str(&format!(", {region} = \"{name}\""));
    }
    let text = text.replacen(
        "by_region = { SG = \"sg\", DE = \"de\"",
        &format!("by_region = {{ SG = \"sg\", DE = \"de\"{regions}"),
        1,
    );
    Policy::parse(&text).unwrap()
}

#[test]
fn golden_scenarios() {
    let shipped = Policy::parse(POLICY).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 8, "scenarios missing from {}", dir.display());
    let mut failures = Vec::new();
    for file in files {
        let scenario = parse(&std::fs::read_to_string(&file).unwrap());
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let extended;
        let policy = if scenario.calendars.is_empty() {
            &shipped
        } else {
            extended = with_calendars(&scenario.calendars);
            &extended
        };
        let forward = verdicts(
            &entries(&scenario.events, &scenario.imported),
            scenario.as_of,
            policy,
        );
        if forward != scenario.expected {
            failures.push(format!(
                "{name}\n  expected:\n    {}\n  got:\n    {}",
                scenario.expected.join("\n    "),
                forward.join("\n    ")
            ));
            continue;
        }
        let mut reversed = scenario.events.clone();
        reversed.reverse();
        let backward = verdicts(
            &entries(&reversed, &scenario.imported),
            scenario.as_of,
            policy,
        );
        if backward != forward {
            failures.push(format!(
                "{name}: arrival order changed the verdicts:\n    {}",
                backward.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
