//! The monitor against full judgements: after every tick, each item's
//! watch state is what judging it afresh says, and alerts come once per
//! change.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::entry::Entry;
use crate::projection::Projection;
use crate::projection::tests::{POLICY, entries, events};

fn day(d: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + d * 86_400).unwrap()
}

/// The last instant of day `d` in Singapore (UTC+8): a whole-day deadline.
fn sg_day_end(d: i64) -> Timestamp {
    day(d) + SignedDuration::from_hours(16) - SignedDuration::from_nanos(1)
}

fn fold(p: &mut Projection, entries: &[Entry]) {
    for e in entries {
        p.apply(e).unwrap();
    }
}

fn event(i: usize, d: i64, item: &str, kind: serde_json::Value) -> (serde_json::Value, bool) {
    let hold = kind["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("legal_hold"));
    let mut v = json!({
        "schema_version": 1,
        "event_id": format!("m{i}"),
        "event_time": day(d).to_string(),
        "account": {"app_id": "1", "uin": "1"},
        "item_id": item,
        "category": "product_configuration",
        "region": "SG",
        "kind": kind,
    });
    if hold {
        // Holds name the item alone.
        if let Some(o) = v.as_object_mut() {
            o.remove("category");
            o.remove("region");
        }
    }
    (v, false)
}

#[test]
fn an_item_goes_due_soon_then_overdue_then_clear_with_one_alert_each() {
    let policy = Policy::parse(POLICY).unwrap();
    let week = SignedDuration::from_hours(24 * 7);
    let evs = vec![
        event(
            0,
            0,
            "x",
            json!({"type": "collected", "sensitive": false, "purpose": "p"}),
        ),
        event(1, 0, "x", json!({"type": "stored", "store": "mysql"})),
        event(2, 200, "x", json!({"type": "deleted", "store": "mysql"})),
    ];
    let all = entries(&evs);
    let mut p = Projection::default();
    fold(&mut p, &all[..2]);
    let mut m = Monitor::new(week, MemoryBook::default());
    // Rule B: due at day 180. Day 100: nothing to say.
    assert!(m.sweep(&p, &policy, day(100)).unwrap().is_empty());
    p.take_touched();
    assert!(
        m.tick(&p, &policy, &Dirty::default(), day(172))
            .unwrap()
            .is_empty()
    );
    let soon = m.tick(&p, &policy, &Dirty::default(), day(174)).unwrap();
    assert_eq!(soon.len(), 1);
    assert_eq!(
        (soon[0].previous_state, soon[0].state),
        (Watch::Clear, Watch::DueSoon)
    );
    assert_eq!(soon[0].alert_id, "x#1");
    assert_eq!(soon[0].cause.by, "clock");
    assert_eq!(soon[0].deadline, Some(sg_day_end(180)));
    assert_eq!(soon[0].rule.as_deref(), Some("B"));
    assert!(
        m.tick(&p, &policy, &Dirty::default(), day(179))
            .unwrap()
            .is_empty()
    );
    let overdue = m.tick(&p, &policy, &Dirty::default(), day(181)).unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].state, Watch::Overdue);
    assert_eq!(overdue[0].copies_remaining, vec!["mysql".to_owned()]);
    assert_eq!(overdue[0].alert_id, "x#2");
    let counts = m.counts().unwrap();
    assert_eq!((counts.due_soon, counts.overdue), (0, 1));
    assert_eq!(counts.oldest_overdue_deadline, Some(sg_day_end(180)));

    // A restarted monitor that reloads the states repeats nothing.
    let saved = MemoryBook::with_states(m.book().states().clone());
    let mut restarted = Monitor::new(week, saved);
    assert_eq!(
        restarted.counts().unwrap(),
        counts,
        "counted from the reloaded states"
    );
    assert!(restarted.sweep(&p, &policy, day(182)).unwrap().is_empty());

    // The deletion arrives: clear, caused by that entry.
    fold(&mut p, &all[2..]);
    let touched = p.take_touched();
    let cleared = restarted.tick(&p, &policy, &touched, day(201)).unwrap();
    assert_eq!(cleared.len(), 1);
    assert_eq!(
        (cleared[0].previous_state, cleared[0].state),
        (Watch::Overdue, Watch::Clear)
    );
    assert_eq!(cleared[0].verdict, "deleted_late");
    assert_eq!(cleared[0].cause.by, "entry");
    assert_eq!(cleared[0].cause.seq, Some(2));
    assert_eq!(cleared[0].alert_id, "x#3");
    assert!(
        restarted
            .tick(&p, &policy, &Dirty::default(), day(400))
            .unwrap()
            .is_empty()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Folding events in slices and ticking at increasing moments, the
    /// monitor's state for every item is what a full judgement says, and
    /// each item's alerts are numbered 1, 2, 3… with no change skipped.
    #[test]
    fn incremental_ticks_agree_with_full_judgement(
        events in events(),
        steps in proptest::collection::vec((1usize..8, 0i64..60), 1..20),
        horizon_days in 1i64..40,
    ) {
        let policy = Policy::parse(POLICY).unwrap();
        let all = entries(&events);
        let mut p = Projection::default();
        let mut m = Monitor::new(SignedDuration::from_hours(24 * horizon_days), MemoryBook::default());
        let mut now = day(0);
        m.sweep(&p, &policy, now).unwrap();
        let mut folded: usize = 0;
        let mut seen: HashMap<String, (u64, Watch)> = HashMap::new();
        for (take, advance) in steps.iter().chain(std::iter::once(&(usize::MAX, 900))) {
            let end = folded.saturating_add(*take).min(all.len());
            fold(&mut p, &all[folded..end]);
            folded = end;
            now = now.checked_add(SignedDuration::from_hours(24 * advance)).unwrap();
            let touched = p.take_touched();
            for alert in m.tick(&p, &policy, &touched, now).unwrap() {
                let (n, state) = seen.get(&alert.item_id).copied().unwrap_or((0, Watch::Clear));
                prop_assert_eq!(alert.alert_id.clone(), format!("{}#{}", alert.item_id, n + 1));
                prop_assert_eq!(alert.previous_state, state);
                prop_assert_ne!(alert.state, state);
                seen.insert(alert.item_id.clone(), (n + 1, alert.state));
            }
            for item in p.items.values() {
                let account = item.account.as_ref().and_then(|a| p.accounts.get(&account_key(a)));
                let expected = judge(item, account, &policy, now)
                    .map_or(Watch::Clear, |v| classify(&v, m.horizon()).0);
                prop_assert_eq!(m.state(&item.item_id).unwrap(), expected, "item {} at {}", item.item_id, now);
            }
            prop_assert_eq!(m.counts().unwrap(), recount(&m));
            // The counts per verdict status are those of judging every
            // item now.
            let mut by_status = std::collections::BTreeMap::new();
            crate::projection::report::judge_each(&p, &policy, now, &mut |v| {
                *by_status.entry(v.status.name().to_owned()).or_insert(0u64) += 1;
            }).unwrap();
            prop_assert_eq!(m.by_status().unwrap().by_name(), by_status, "at {}", now);
        }
    }
}

#[test]
fn a_hold_a_deletion_and_a_revived_backup_each_change_the_state_once() {
    let policy = Policy::parse(POLICY).unwrap();
    let week = SignedDuration::from_hours(24 * 7);
    let evs = vec![
        event(
            0,
            0,
            "x",
            json!({"type": "collected", "sensitive": false, "purpose": "p"}),
        ),
        event(1, 0, "x", json!({"type": "stored", "store": "mysql"})),
        event(
            2,
            182,
            "x",
            json!({"type": "legal_hold_placed", "hold_id": "h1"}),
        ),
        event(
            3,
            190,
            "x",
            json!({"type": "legal_hold_released", "hold_id": "h1"}),
        ),
        event(4, 195, "x", json!({"type": "deleted", "store": "mysql"})),
        event(
            5,
            200,
            "x",
            json!({"type": "backed_up", "store": "cos", "backup_id": "bk1", "source_store": "mysql"}),
        ),
    ];
    let all = entries(&evs);
    let mut p = Projection::default();
    let mut m = Monitor::new(week, MemoryBook::default());
    fold(&mut p, &all[..2]);
    m.sweep(&p, &policy, day(181)).unwrap();
    p.take_touched();
    let step = |p: &mut Projection, m: &mut Monitor<MemoryBook>, upto: usize, now: i64| {
        fold(p, &all[p.next_seq("a") as usize..upto]);
        let touched = p.take_touched();
        m.tick(p, &policy, &touched, day(now)).unwrap()
    };
    // The sweep found it overdue (#1); placing a hold clears it.
    let held = step(&mut p, &mut m, 3, 183);
    assert_eq!(held.len(), 1);
    assert_eq!(
        (
            held[0].alert_id.as_str(),
            held[0].state,
            held[0].verdict.as_str()
        ),
        ("x#2", Watch::Clear, "on_hold")
    );
    // Released after the deadline: overdue again.
    let released = step(&mut p, &mut m, 4, 191);
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0].alert_id.as_str(), released[0].state),
        ("x#3", Watch::Overdue)
    );
    // Deleted: clear, late.
    let deleted = step(&mut p, &mut m, 5, 196);
    assert_eq!(
        (
            deleted[0].alert_id.as_str(),
            deleted[0].state,
            deleted[0].verdict.as_str()
        ),
        ("x#4", Watch::Clear, "deleted_late")
    );
    // A backup of it turns up after the deletion: overdue again, that copy remaining.
    let revived = step(&mut p, &mut m, 6, 201);
    assert_eq!(revived.len(), 1);
    assert_eq!(
        (revived[0].alert_id.as_str(), revived[0].state),
        ("x#5", Watch::Overdue)
    );
    assert_eq!(revived[0].copies_remaining, vec!["cos#bk1".to_owned()]);
    assert_eq!(revived[0].cause.by, "entry");
    assert_eq!(revived[0].cause.seq, Some(5));
}

/// Every alert a monitor produces validates against the published schema
/// (schemas/alerts/v1/alert.schema.json), which consumers of the alerts
/// topic can use.
#[test]
fn alerts_match_their_published_schema() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/alerts/v1/alert.schema.json"
    );
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    let index = compiler.compile(path, &mut schemas).unwrap();
    let policy = Policy::parse(POLICY).unwrap();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut alerts = Vec::new();
    for _ in 0..40 {
        let evs = proptest::strategy::ValueTree::current(
            &proptest::strategy::Strategy::new_tree(&events(), &mut runner).unwrap(),
        );
        let mut p = Projection::default();
        fold(&mut p, &entries(&evs));
        let mut m = Monitor::new(SignedDuration::from_hours(24 * 7), MemoryBook::default());
        for d in [0, 100, 175, 181, 300, 600] {
            if d == 0 {
                alerts.extend(m.sweep(&p, &policy, day(d)).unwrap());
            } else {
                alerts.extend(m.tick(&p, &policy, &Dirty::default(), day(d)).unwrap());
            }
        }
    }
    assert!(
        alerts.len() > 20,
        "too few alerts to mean anything: {}",
        alerts.len()
    );
    for state in [Watch::DueSoon, Watch::Overdue, Watch::Clear] {
        assert!(
            alerts.iter().any(|a| a.state == state),
            "no {state:?} alert"
        );
    }
    for alert in &alerts {
        let value = serde_json::to_value(alert).unwrap();
        if let Err(e) = schemas.validate(&value, index) {
            panic!("{value}\ndoes not match the alert schema: {e:#}");
        }
    }
    // And the schema is not vacuous: a broken alert is refused.
    let mut broken = serde_json::to_value(&alerts[0]).unwrap();
    broken["state"] = json!("panic");
    assert!(schemas.validate(&broken, index).is_err());
}

/// An entry of item `f` dated on `event_day`, received on `received_day`.
fn received_on(
    head: &mut crate::chain::ChainHead,
    i: usize,
    event_day: i64,
    received_day: i64,
    kind: serde_json::Value,
) -> Entry {
    let (v, _) = event(i, event_day, "f", kind);
    let raw = serde_json::to_vec(&v).unwrap();
    let decoded = lifeledger_schemas::decode_event(&raw).unwrap();
    let body = crate::entry::Body::Event {
        canonical: lifeledger_schemas::canonical_json(&decoded),
        event_id: decoded.event_id.clone(),
        raw,
    };
    let source = crate::entry::Source::File {
        path: "p".into(),
        line: 1,
    };
    Entry::decode(&head.append(day(received_day), source, body).encoding).unwrap()
}

#[test]
fn a_new_future_dated_event_is_alerted_even_when_the_state_stays() {
    let policy = Policy::parse(POLICY).unwrap();
    let week = SignedDuration::from_hours(24 * 7);
    let mut head = crate::chain::ChainHead::empty("a");
    let collected = json!({"type": "collected", "sensitive": false, "purpose": "p"});
    let stored = json!({"type": "stored", "store": "mysql"});
    let mut p = Projection::default();
    fold(
        &mut p,
        &[
            received_on(&mut head, 0, 0, 0, collected),
            received_on(&mut head, 1, 0, 0, stored.clone()),
        ],
    );
    let mut m = Monitor::new(week, MemoryBook::default());
    assert!(m.sweep(&p, &policy, day(10)).unwrap().is_empty());
    p.take_touched();
    // A copy dated 30 days after the ledger received it: the producer's
    // clock runs ahead. The item stays clear, and the finding is alerted.
    fold(&mut p, &[received_on(&mut head, 2, 40, 10, stored.clone())]);
    let touched = p.take_touched();
    let alerts = m.tick(&p, &policy, &touched, day(10)).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0].previous_state, alerts[0].state),
        (Watch::Clear, Watch::Clear)
    );
    assert_eq!(alerts[0].findings, vec!["future_dated".to_owned()]);
    assert_eq!(alerts[0].cause.by, "entry");
    assert_eq!(alerts[0].alert_id, "f#1");
    // Looking again says nothing; a second future-dated event is alerted.
    assert!(
        m.tick(&p, &policy, &Dirty::default(), day(11))
            .unwrap()
            .is_empty()
    );
    fold(&mut p, &[received_on(&mut head, 3, 60, 11, stored)]);
    let touched = p.take_touched();
    let again = m.tick(&p, &policy, &touched, day(11)).unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].alert_id, "f#2");
    assert_eq!(
        again[0].findings,
        vec!["future_dated".to_owned(), "future_dated".to_owned()]
    );
    // A restarted monitor that reloads the states repeats nothing.
    let saved = MemoryBook::with_states(m.book().states().clone());
    assert!(
        Monitor::new(week, saved)
            .sweep(&p, &policy, day(12))
            .unwrap()
            .is_empty()
    );
}

proptest! {
    /// A sweep in pages (a consumer saves and sends each page's alerts
    /// before judging the next) sees every item once, as one sweep does:
    /// the same alerts, the same states, the same wakeups after.
    #[test]
    fn a_sweep_in_pages_is_one_sweep(evs in events(), page in 1usize..5) {
        let policy = Policy::parse(POLICY).unwrap();
        let mut p = Projection::default();
        fold(&mut p, &entries(&evs));
        let week = SignedDuration::from_hours(24 * 7);
        let mut whole = Monitor::new(week, MemoryBook::default());
        let mut paged = Monitor::new(week, MemoryBook::default());
        for now in [day(0), day(181)] {
            let expected = whole.sweep(&p, &policy, now).unwrap();
            let mut alerts = Vec::new();
            let mut from = Some(String::new());
            let mut pages = 0;
            while let Some(at) = from {
                let (got, next) = paged.sweep_page(&p, &policy, now, &at, page).unwrap();
                alerts.extend(got);
                from = next;
                pages += 1;
            }
            prop_assert_eq!(&alerts, &expected);
            prop_assert_eq!(pages, p.items.len().div_ceil(page).max(1));
            prop_assert_eq!(paged.book(), whole.book());
            prop_assert_eq!(paged.counts().unwrap(), whole.counts().unwrap());
            prop_assert_eq!(whole.counts().unwrap(), recount(&whole));
        }
        for d in [175, 300, 600] {
            let expected = whole.tick(&p, &policy, &Dirty::default(), day(d)).unwrap();
            let got = paged.tick(&p, &policy, &Dirty::default(), day(d)).unwrap();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(paged.counts().unwrap(), recount(&paged));
        }
    }
}

/// The gauges' counts from every item's state, as the tally must keep them.
fn recount(m: &Monitor<MemoryBook>) -> WatchCounts {
    let mut c = WatchCounts::default();
    for w in m.book().states().values() {
        match w.state {
            Watch::DueSoon => c.due_soon += 1,
            Watch::Overdue => {
                c.overdue += 1;
                if let Some(d) = w.due_by {
                    c.oldest_overdue_deadline =
                        Some(c.oldest_overdue_deadline.map_or(d, |o| o.min(d)));
                }
            }
            Watch::Clear => {}
        }
    }
    c
}
