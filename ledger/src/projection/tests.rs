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

const POLICY: &str = include_str!("../../policies/retention-2026-11.toml");
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
fn entries(events: &[(Value, bool)]) -> Vec<Entry> {
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

fn events() -> impl Strategy<Value = Vec<(Value, bool)>> {
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
