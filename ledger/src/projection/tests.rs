//! Incremental folding, with saving and reloading in the middle, gives the
//! same projection as a rebuild; arrival order does not change verdicts.

use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::report::judge_all;
use super::*;
use crate::chain::ChainHead;
use crate::entry::{Body, Entry, Source};
use crate::policy::Policy;

pub(crate) const POLICY: &str = include_str!("../../policies/retention-2026-11.toml");
const CATEGORIES: &[&str] = &[
    "asset_management",
    "product_configuration",
    "console_configuration",
    "version_management",
];
const STORES: &[&str] = &["mongodb", "mysql", "cos"];

#[derive(Debug, Clone)]
enum Ev {
    Collected {
        item: u8,
        sensitive: bool,
        region: u8,
    },
    Stored {
        item: u8,
        store: u8,
    },
    BackedUp {
        item: u8,
        backup: u8,
    },
    Deleted {
        item: u8,
        store: u8,
    },
    DeletedBackup {
        item: u8,
        backup: u8,
    },
    Terminated,
    ServiceEnded,
    Requested {
        category: u8,
    },
    HoldPlaced {
        hold: u8,
        item: Option<u8>,
    },
    HoldReleased {
        hold: u8,
        item: Option<u8>,
    },
}

fn ev() -> impl Strategy<Value = Ev> {
    let item = 0u8..6;
    prop_oneof![
        3 => (item.clone(), any::<bool>(), 0u8..4).prop_map(|(item, s, region)| Ev::Collected { item, sensitive: s && item == 5, region }),
        4 => (item.clone(), 0u8..3).prop_map(|(item, store)| Ev::Stored { item, store }),
        2 => (item.clone(), 0u8..2).prop_map(|(item, backup)| Ev::BackedUp { item, backup }),
        3 => (item.clone(), 0u8..3).prop_map(|(item, store)| Ev::Deleted { item, store }),
        2 => (item.clone(), 0u8..2).prop_map(|(item, backup)| Ev::DeletedBackup { item, backup }),
        1 => Just(Ev::Terminated),
        1 => Just(Ev::ServiceEnded),
        1 => (0u8..4).prop_map(|category| Ev::Requested { category }),
        1 => (0u8..2, proptest::option::of(item.clone())).prop_map(|(hold, item)| Ev::HoldPlaced { hold, item }),
        1 => (0u8..2, proptest::option::of(item)).prop_map(|(hold, item)| Ev::HoldReleased { hold, item }),
    ]
}

/// (account, event, day offset) → event JSON with a unique event time.
fn to_json(i: usize, account: u8, e: &Ev, day: u16) -> Value {
    let time = Timestamp::from_second(1_767_225_600 + i64::from(day) * 86_400 + i as i64).unwrap();
    let mut v = json!({
        "schema_version": 1,
        "event_id": format!("e{i}"),
        "event_time": time.to_string(),
        "account": {"app_id": format!("{account}"), "uin": format!("{account}")},
    });
    let item = |v: &mut Value, item: u8| {
        v["item_id"] = json!(format!("a{account}-i{item}"));
        v["category"] = json!(CATEGORIES[item as usize % CATEGORIES.len()]);
    };
    let kind = match e {
        Ev::Collected {
            item: it,
            sensitive,
            region,
        } => {
            item(&mut v, *it);
            v["region"] = json!(["SG", "DE", "RU", "US"][*region as usize]);
            json!({"type": "collected", "sensitive": sensitive, "purpose": "p"})
        }
        Ev::Stored { item: it, store } => {
            item(&mut v, *it);
            json!({"type": "stored", "store": STORES[*store as usize]})
        }
        Ev::BackedUp { item: it, backup } => {
            item(&mut v, *it);
            json!({"type": "backed_up", "store": "cos", "backup_id": format!("b{backup}"), "source_store": "mongodb"})
        }
        Ev::Deleted { item: it, store } => {
            item(&mut v, *it);
            json!({"type": "deleted", "store": STORES[*store as usize]})
        }
        Ev::DeletedBackup { item: it, backup } => {
            item(&mut v, *it);
            json!({"type": "deleted", "store": "cos", "backup_id": format!("b{backup}")})
        }
        Ev::Terminated => json!({"type": "hosting_service_terminated"}),
        Ev::ServiceEnded => json!({"type": "service_use_ended"}),
        Ev::Requested { category } => {
            json!({"type": "deletion_requested", "request_id": format!("r{i}"), "categories": [CATEGORIES[*category as usize]]})
        }
        Ev::HoldPlaced { hold, item: it } | Ev::HoldReleased { hold, item: it } => {
            if let Some(it) = it {
                v["item_id"] = json!(format!("a{account}-i{it}"));
            }
            let kind = if matches!(e, Ev::HoldPlaced { .. }) {
                "legal_hold_placed"
            } else {
                "legal_hold_released"
            };
            json!({"type": kind, "hold_id": format!("h{hold}")})
        }
    };
    v["kind"] = kind;
    v
}

/// Events spread over two chains, as entries in arrival order.
pub(crate) fn entries(events: &[(Value, bool)]) -> Vec<Entry> {
    let mut heads = [ChainHead::empty("a"), ChainHead::empty("b")];
    events
        .iter()
        .map(|(event, second_chain)| {
            let raw = serde_json::to_vec(event).unwrap();
            let decoded = lifeledger_schemas::decode_event(&raw).unwrap();
            let body = Body::Event {
                canonical: lifeledger_schemas::canonical_json(&decoded),
                event_id: decoded.event_id.clone(),
                raw,
            };
            let head = &mut heads[usize::from(*second_chain)];
            // Received a little after it happened.
            let received = decoded
                .event_time
                .checked_add(jiff::SignedDuration::from_hours(1))
                .unwrap();
            let sealed = head.append(
                received,
                Source::File {
                    path: "p".into(),
                    line: 1,
                },
                body,
            );
            Entry::decode(&sealed.encoding).unwrap()
        })
        .collect()
}

pub(crate) fn events() -> impl Strategy<Value = Vec<(Value, bool)>> {
    proptest::collection::vec((1u8..3, ev(), 0u16..500, any::<bool>()), 1..60).prop_map(|evs| {
        evs.iter()
            .enumerate()
            .map(|(i, (account, e, day, chain))| (to_json(i, *account, e, *day), *chain))
            .collect()
    })
}

fn same_state(a: &Projection, b: &Projection) -> bool {
    a.items == b.items
        && a.accounts == b.accounts
        && a.policies == b.policies
        && a.covered == b.covered
}

/// What a verdict says, without where its entries sit in the ledger.
fn gist(p: &Projection, policy: &Policy, as_of: Timestamp) -> Vec<String> {
    judge_all(p, policy, as_of)
        .into_iter()
        .map(|v| {
            let violations: Vec<_> = v.violations.iter().map(|x| x.name()).collect();
            format!(
                "{} {:?} {:?} {:?} {}",
                v.item_id,
                v.status,
                v.deadline.map(|d| (d.due_by, d.rule, d.explanation)),
                violations,
                v.reported_late
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn incremental_with_reload_equals_rebuild(events in events(), cut in any::<proptest::sample::Index>()) {
        let entries = entries(&events);
        let mut rebuilt = Projection::default();
        for e in &entries {
            rebuilt.apply(e).unwrap();
        }
        let cut = cut.index(entries.len() + 1);
        let mut first = Projection::default();
        for e in &entries[..cut] {
            first.apply(e).unwrap();
        }
        // Save and reload in the middle, through the store's codec.
        let bytes = bincode::serde::encode_to_vec(&first, bincode::config::standard()).unwrap();
        let (mut resumed, _): (Projection, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        for e in &entries[cut..] {
            resumed.apply(e).unwrap();
        }
        prop_assert!(same_state(&resumed, &rebuilt));
    }

    #[test]
    fn arrival_order_does_not_change_verdicts(events in events(), seed in any::<u64>()) {
        let policy = Policy::parse(POLICY).unwrap();
        let fold = |evs: &[(Value, bool)]| {
            let mut p = Projection::default();
            for e in entries(evs) {
                p.apply(&e).unwrap();
            }
            p
        };
        let in_order = fold(&events);
        let mut shuffled = events.clone();
        // A deterministic shuffle driven by the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let out_of_order = fold(&shuffled);
        for day in [0i64, 90, 200, 400, 700] {
            let as_of = Timestamp::from_second(1_767_225_600 + day * 86_400).unwrap();
            prop_assert_eq!(gist(&in_order, &policy, as_of), gist(&out_of_order, &policy, as_of));
        }
    }
}

#[test]
fn entries_of_a_chain_must_come_in_seq_order() {
    let evs = vec![
        (to_json(0, 1, &Ev::Terminated, 0), false),
        (to_json(1, 1, &Ev::ServiceEnded, 0), false),
    ];
    let entries = entries(&evs);
    let mut p = Projection::default();
    assert_eq!(
        p.apply(&entries[1]),
        Err(ProjectionError::OutOfOrder {
            chain: "a".into(),
            expected: 0,
            found: 1
        })
    );
}

/// Folds the first `n` entries (all of them when `n` is past the end).
fn fold_prefix(entries: &[Entry], n: usize) -> Projection {
    let mut p = Projection::default();
    for e in entries.iter().take(n) {
        p.apply(e).unwrap();
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A diff from a point to itself is empty; from nothing to the end it
    /// lists every collection, copy change and verdict; and a copy change
    /// is listed exactly when its entry lies between the two points.
    #[test]
    fn diff_lists_exactly_what_lies_between(events in events(), cut in any::<proptest::sample::Index>()) {
        let policy = Policy::parse(POLICY).unwrap();
        let as_of = Timestamp::from_second(1_767_225_600 + 300 * 86_400).unwrap();
        let entries = entries(&events);
        let cut = cut.index(entries.len() + 1);
        let before = fold_prefix(&entries, cut);
        let after = fold_prefix(&entries, entries.len());
        let vb = judge_all(&before, &policy, as_of);
        let va = judge_all(&after, &policy, as_of);
        prop_assert!(diff::diff(&after, &va, &after, &va).is_empty());
        let d = diff::diff(&before, &vb, &after, &va);
        let changes_between: usize = after
            .items
            .values()
            .flat_map(|i| i.copies.values().flatten())
            .filter(|c| c.at.seq >= before.next_seq(&c.at.chain))
            .count();
        prop_assert_eq!(d.copies_added.len() + d.copies_deleted.len(), changes_between);
        for c in d.copies_added.iter().chain(&d.copies_deleted) {
            prop_assert!(entries[cut..].iter().any(|e| e.chain == c.at.chain && e.seq == c.at.seq));
        }
        let from_nothing = diff::diff(&Projection::default(), &[], &after, &va);
        let collected = after.items.values().filter(|i| !i.collections.is_empty()).count();
        prop_assert_eq!(from_nothing.items_collected.len(), collected);
        prop_assert_eq!(from_nothing.verdicts.len(), va.len());
    }

    /// The same policy never differs from itself; the last timeline step
    /// agrees with judging the whole projection at that moment.
    #[test]
    fn what_if_and_timeline_agree_with_judge(events in events()) {
        let policy = Policy::parse(POLICY).unwrap();
        let p = fold_prefix(&entries(&events), usize::MAX);
        let as_of = Timestamp::from_second(1_767_225_600 + 300 * 86_400).unwrap();
        let (judged, same) = whatif::compare_policies(&p, &replay::Scope::All, &policy, &policy, as_of);
        prop_assert!(same.is_empty());
        prop_assert_eq!(judged as usize, judge_all(&p, &policy, as_of).len());

        let steps: Vec<timeline::Step> = entries(&events)
            .into_iter()
            .map(|entry| {
                let event = entry_event(&entry).unwrap().unwrap();
                let hash = entry.hash();
                timeline::Step { entry, hash, event }
            })
            .collect();
        let rows = timeline::timeline(
            steps,
            &replay::Scope::All,
            &policy,
            timeline::Order::Event,
            &[],
        );
        prop_assert_eq!(rows.len(), events.len());
        prop_assert!(rows.windows(2).all(|w| w[0].event_time <= w[1].event_time));
        // Every item's last standing on the timeline is its verdict as of
        // the last step.
        let last = rows.last().unwrap().judged_as_of;
        let mut latest = std::collections::BTreeMap::new();
        for row in &rows {
            for s in &row.standings {
                latest.insert(s.item_id.clone(), s.verdict.status.clone());
            }
        }
        for v in judge_all(&p, &policy, last) {
            prop_assert_eq!(latest.get(&v.item_id), Some(&v.status.name().to_owned()));
        }
    }
}

#[test]
fn a_stricter_policy_shows_up_in_what_if() {
    let policy = Policy::parse(POLICY).unwrap();
    // Rule B shortened from 180 days to 90.
    let stricter_text = POLICY
        .replace(
            "minimum_days = 180\ndays = 180",
            "minimum_days = 90\ndays = 90",
        )
        .replace("version = \"", "version = \"stricter-");
    assert_ne!(stricter_text, POLICY, "the policy file changed shape");
    let stricter = Policy::parse(&stricter_text).unwrap();
    let evs = vec![
        (
            to_json(
                0,
                1,
                &Ev::Collected {
                    item: 1,
                    sensitive: false,
                    region: 0,
                },
                0,
            ),
            false,
        ),
        (to_json(1, 1, &Ev::Stored { item: 1, store: 1 }, 0), false),
    ];
    let p = fold_prefix(&entries(&evs), usize::MAX);
    let as_of = Timestamp::from_second(1_767_225_600 + 120 * 86_400).unwrap();
    let (_, differ) = whatif::compare_policies(&p, &replay::Scope::All, &policy, &stricter, as_of);
    let rule_b: Vec<_> = differ
        .iter()
        .filter(|d| d.current.deadline.as_ref().is_some_and(|x| x.rule == "B"))
        .collect();
    assert_eq!(rule_b.len(), 1, "{differ:#?}");
    assert_eq!(rule_b[0].current.verdict.status, "due");
    assert_eq!(rule_b[0].alternative.verdict.status, "overdue");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A copy is gone from its first deletion until something brings it
    /// back: deleting it again right after (a cleanup job running twice)
    /// never changes any item's deadline, verdict or violations, as of any
    /// moment, whatever else happens later.
    #[test]
    fn deleting_a_copy_already_gone_changes_nothing(events in events(), pick in any::<proptest::sample::Index>()) {
        let policy = Policy::parse(POLICY).unwrap();
        let deletions: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, (v, _))| v["kind"]["type"] == "deleted")
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!deletions.is_empty());
        let (original, chain) = events[deletions[pick.index(deletions.len())]].clone();
        let mut again = original.clone();
        let at: Timestamp = original["event_time"].as_str().unwrap().parse().unwrap();
        // Half a second later: no generated event has a fractional time, so
        // nothing happens to the copy in between.
        let later = at.checked_add(jiff::SignedDuration::from_millis(500)).unwrap();
        again["event_id"] = json!(format!("{}-again", original["event_id"].as_str().unwrap()));
        again["event_time"] = json!(later.to_string());
        let mut with_repeat = events.clone();
        with_repeat.push((again, chain));
        let fold = |evs: &[(Value, bool)]| {
            let mut p = Projection::default();
            for e in entries(evs) {
                p.apply(&e).unwrap();
            }
            p
        };
        let without = fold(&events);
        let with = fold(&with_repeat);
        for day in [0i64, 90, 180, 200, 400, 700] {
            let as_of = Timestamp::from_second(1_767_225_600 + day * 86_400).unwrap();
            prop_assert_eq!(gist(&without, &policy, as_of), gist(&with, &policy, as_of));
        }
    }
}

#[test]
fn a_timeline_marks_a_deletion_of_a_copy_already_gone() {
    let policy = Policy::parse(POLICY).unwrap();
    let evs = vec![
        (
            to_json(
                0,
                1,
                &Ev::Collected {
                    item: 1,
                    sensitive: false,
                    region: 0,
                },
                0,
            ),
            false,
        ),
        (to_json(1, 1, &Ev::Stored { item: 1, store: 1 }, 0), false),
        (to_json(2, 1, &Ev::Deleted { item: 1, store: 1 }, 10), false),
        (to_json(3, 1, &Ev::Deleted { item: 1, store: 1 }, 20), false),
        (to_json(4, 1, &Ev::Stored { item: 1, store: 1 }, 30), false),
        (to_json(5, 1, &Ev::Deleted { item: 1, store: 1 }, 40), false),
    ];
    let steps: Vec<timeline::Step> = entries(&evs)
        .into_iter()
        .map(|entry| {
            let event = entry_event(&entry).unwrap().unwrap();
            let hash = entry.hash();
            timeline::Step { entry, hash, event }
        })
        .collect();
    let rows = timeline::timeline(
        steps,
        &replay::Scope::All,
        &policy,
        timeline::Order::Event,
        &[],
    );
    let marks: Vec<Option<Timestamp>> = rows
        .iter()
        .map(|r| r.repeated_deletion_of_copy_gone_since)
        .collect();
    let first_deletion = rows[2].event_time;
    assert_eq!(
        marks,
        vec![None, None, None, Some(first_deletion), None, None],
        "only the second deletion, before the copy came back, is a repeat"
    );
    // The item's state says the same (what `item --json` shows).
    let mut p = Projection::default();
    for e in entries(&evs) {
        p.apply(&e).unwrap();
    }
    let repeats: Vec<(u64, Timestamp)> = p
        .items
        .values()
        .flat_map(|i| i.repeated_deletions())
        .map(|r| (r.at.seq, r.gone_since))
        .collect();
    assert_eq!(repeats.len(), 1, "{repeats:?}");
    assert_eq!(repeats[0].1, first_deletion);
}

proptest! {
    /// What a fold touched names as new exactly the items it created:
    /// the deadline monitor files only those under their account.
    #[test]
    fn touched_new_items_are_the_items_the_fold_created(
        events in events(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let all = entries(&events);
        let cut = cut.index(all.len() + 1);
        let mut p = Projection::default();
        for e in &all[..cut] {
            p.apply(e).unwrap();
        }
        let before: BTreeSet<String> = p.items.keys().cloned().collect();
        prop_assert_eq!(&p.take_touched().new_items, &before);
        for e in &all[cut..] {
            p.apply(e).unwrap();
        }
        let created: BTreeSet<String> = p.items.keys().filter(|i| !before.contains(*i)).cloned().collect();
        let touched = p.take_touched();
        prop_assert_eq!(&touched.new_items, &created);
        prop_assert!(touched.new_items.is_subset(&touched.items));
    }
}

/// A projection whose items are walked in two parts, split at `middle`.
struct SplitAt<'a> {
    projection: &'a Projection,
    middle: String,
}

impl facts::Facts for SplitAt<'_> {
    fn item(&self, id: &str) -> Result<Option<std::borrow::Cow<'_, ItemState>>, facts::FactsError> {
        self.projection.item(id)
    }
    fn account(
        &self,
        key: &str,
    ) -> Result<Option<std::borrow::Cow<'_, AccountState>>, facts::FactsError> {
        self.projection.account(key)
    }
    fn items_from(
        &self,
        from: &str,
        visit: &mut dyn FnMut(&ItemState) -> std::ops::ControlFlow<()>,
    ) -> Result<(), facts::FactsError> {
        self.projection.items_from(from, visit)
    }
    fn imports(&self) -> &[DeclaredImport] {
        self.projection.imports()
    }
    fn middle_item(&self) -> Option<String> {
        Some(self.middle.clone())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Tallied in two parts side by side (split at any item, or between
    /// items), the status is the one tallied in one walk.
    #[test]
    fn a_status_tallied_in_two_parts_is_the_status_of_one(
        events in events(),
        pick in any::<proptest::sample::Index>(),
        suffix in "[a-z]{0,2}",
    ) {
        use facts::Facts as _;
        use report::{StatusTally, judge_each, tally_each};
        let policy = Policy::parse(POLICY).unwrap();
        let mut projection = Projection::default();
        for e in &entries(&events) {
            projection.apply(e).unwrap();
        }
        let as_of = Timestamp::from_second(1_790_000_000).unwrap();
        let window = jiff::SignedDuration::from_hours(24 * 30);
        let mut one = StatusTally::new(as_of, &policy.version, window);
        judge_each(&projection, &policy, as_of, &mut |v| one.add(&v)).unwrap();
        let ids: Vec<&String> = projection.items.keys().collect();
        let middle = if ids.is_empty() {
            suffix
        } else {
            format!("{}{suffix}", ids[pick.index(ids.len())])
        };
        let split = SplitAt { projection: &projection, middle };
        prop_assert!(split.middle_item().is_some());
        let mut two = StatusTally::new(as_of, &policy.version, window);
        tally_each(&split, &policy, as_of, &mut two).unwrap();
        prop_assert_eq!(two.finish(), one.finish());
    }
}
