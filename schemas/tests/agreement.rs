//! The decoder and `event.schema.json` give the same answer, accept or
//! reject, for generated events and mutations of them: field types, nulls,
//! missing and unknown fields, time formats, lengths in bytes and in
//! characters, Unicode whitespace, number forms.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::sync::OnceLock;

use lifeledger_schemas::decode_event;
use proptest::prelude::*;
use serde_json::{Value, json};

struct Schema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("v1/event.schema.json");
        let index = compiler
            .compile(path.to_str().unwrap(), &mut schemas)
            .unwrap();
        Schema { schemas, index }
    })
}

fn schema_accepts(v: &Value) -> bool {
    let s = schema();
    s.schemas.validate(v, s.index).is_ok()
}

fn times() -> impl Strategy<Value = String> {
    let good = (
        1850i32..10_000,
        0u32..14,
        0u32..33,
        0u32..25,
        0u32..61,
        0u32..62,
        prop_oneof![Just(String::new()), "\\.[0-9]{1,10}", ",[0-9]{1,3}"],
        prop_oneof![
            Just("Z".to_owned()),
            Just("z".to_owned()),
            "[+-](0[0-9]|1[0-9]|2[0-5]):[0-6][0-9]",
            "[+-][0-9]{4}",
            "[+-][0-9]{2}:[0-9]{2}:[0-9]{2}",
            Just(String::new()),
        ],
        prop_oneof![Just("T"), Just("t"), Just(" ")],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, off, sep)| {
            format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{off}")
        });
    let valid = (
        1900i32..9800,
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        0u32..60,
        prop_oneof![Just(String::new()), "\\.[0-9]{1,9}"],
        prop_oneof![
            Just("Z".to_owned()),
            "[+-](0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]"
        ],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
        });
    prop_oneof![
        12 => valid,
        4 => good,
        1 => Just("2026-03-02T09:15Z".to_owned()),
        1 => "[0-9T:Z+-]{0,25}",
    ]
}

/// Text for `purpose`: ASCII, non-ASCII and whitespace of any kind, around
/// the 256-character limit.
fn purposes() -> impl Strategy<Value = String> {
    let ws = prop_oneof![
        Just(' '),
        Just('\t'),
        Just('\u{85}'),
        Just('\u{a0}'),
        Just('\u{feff}'),
        Just('\u{2003}'),
        Just('\u{3000}'),
        Just('\u{200b}'),
        Just('\u{180e}'),
    ];
    prop_oneof![
        "[a-z ]{1,20}",
        proptest::collection::vec(ws, 0..4).prop_map(|v| v.into_iter().collect()),
        (ws_or_letter(), 250usize..260).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
        (120usize..140).prop_map(|n| "é".repeat(n)),
        (190usize..270).prop_map(|n| "é".repeat(n)),
    ]
}

fn ws_or_letter() -> impl Strategy<Value = char> {
    prop_oneof![Just('a'), Just('é'), Just('\u{10348}'), Just(' ')]
}

fn ids() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[A-Za-z0-9._:/-]{1,12}".prop_map(Value::from),
        1 => (125usize..132).prop_map(|n| Value::from("x".repeat(n))),
        1 => Just(Value::from("")),
        1 => Just(Value::from("a b")),
        1 => Just(Value::from("é")),
    ]
}

/// A valid-looking event of any kind.
fn events() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        (any::<bool>(), purposes(), proptest::option::of(any::<bool>())).prop_map(
            |(sensitive, purpose, below)| {
                let mut k = json!({"type": "collected", "sensitive": sensitive, "purpose": purpose});
                if let Some(b) = below {
                    k["below_age_of_consent"] = json!(b);
                }
                k
            }
        ),
        Just(json!({"type": "stored", "store": "mongodb"})),
        ids().prop_map(|b| json!({"type": "backed_up", "store": "cos", "backup_id": b, "source_store": "mongodb"})),
        proptest::option::of(ids()).prop_map(|b| match b {
            Some(b) => json!({"type": "deleted", "store": "cos", "backup_id": b}),
            None => json!({"type": "deleted", "store": "mongodb"}),
        }),
        Just(json!({"type": "hosting_service_terminated"})),
        Just(json!({"type": "service_use_ended"})),
        (ids(), proptest::collection::vec("[a-z][a-z_]{0,8}", 0..3))
            .prop_map(|(r, c)| json!({"type": "deletion_requested", "request_id": r, "categories": c})),
        ids().prop_map(|h| json!({"type": "legal_hold_placed", "hold_id": h})),
        ids().prop_map(|h| json!({"type": "legal_hold_released", "hold_id": h})),
        "[0-9a-f]{64}".prop_map(|h| json!({"type": "policy_published", "policy_version": "2026-11.2", "policy_hash": h})),
        (ids(), prop_oneof![Just(json!(0)), Just(json!(41)), Just(json!(1.0)), Just(json!(-1)), Just(json!(9_007_199_254_740_992u64))], "[a-z:0-9]{1,12}")
            .prop_map(|(by, seq, chain)| json!({"type": "history_imported", "declared_by": by, "chain": chain, "first_seq": seq, "last_seq": 41})),
    ];
    (kind, ids(), times(), ids()).prop_map(|(kind, event_id, time, item)| {
        let t = kind["type"].as_str().unwrap().to_owned();
        let mut e =
            json!({"schema_version": 1, "event_id": event_id, "event_time": time, "kind": kind});
        match t.as_str() {
            "policy_published" | "history_imported" => {}
            "collected" | "stored" | "backed_up" | "deleted" => {
                e["account"] = json!({"app_id": "1250000001", "uin": "100000000001"});
                e["item_id"] = item;
                e["category"] = json!("asset_management");
                if t == "collected" {
                    e["region"] = json!("SG");
                }
            }
            "legal_hold_placed" | "legal_hold_released" => {
                e["account"] = json!({"app_id": "1250000001", "uin": "100000000001"});
            }
            _ => e["account"] = json!({"app_id": "1250000001", "uin": "100000000001"}),
        }
        e
    })
}

/// A mutation of an event.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    /// Set a field (by path) to a value.
    Set(Vec<&'static str>, Value),
    Remove(Vec<&'static str>),
}

fn odd_values() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(1)),
        Just(json!(1.0)),
        Just(json!(1.5)),
        Just(json!(-1)),
        Just(json!(2)),
        Just(json!("1")),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        Just(json!("SG")),
        Just(json!("mongodb")),
        Just(json!("x")),
    ]
}

fn mutations() -> impl Strategy<Value = Mutation> {
    let paths = prop_oneof![
        Just(vec!["schema_version"]),
        Just(vec!["event_id"]),
        Just(vec!["event_time"]),
        Just(vec!["account"]),
        Just(vec!["account", "app_id"]),
        Just(vec!["item_id"]),
        Just(vec!["category"]),
        Just(vec!["region"]),
        Just(vec!["kind"]),
        Just(vec!["kind", "type"]),
        Just(vec!["kind", "store"]),
        Just(vec!["kind", "backup_id"]),
        Just(vec!["kind", "purpose"]),
        Just(vec!["kind", "sensitive"]),
        Just(vec!["kind", "below_age_of_consent"]),
        Just(vec!["kind", "categories"]),
        Just(vec!["unknown"]),
    ];
    prop_oneof![
        2 => Just(Mutation::None),
        3 => (paths.clone(), odd_values()).prop_map(|(p, v)| Mutation::Set(p, v)),
        1 => paths.prop_map(Mutation::Remove),
    ]
}

fn apply(mut e: Value, m: &Mutation) -> Value {
    match m {
        Mutation::None => {}
        Mutation::Set(path, v) => {
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut e;
            for p in parents {
                at = &mut at[*p];
            }
            if let Some(obj) = at.as_object_mut() {
                obj.insert((*last).to_owned(), v.clone());
            }
        }
        Mutation::Remove(path) => {
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut e;
            for p in parents {
                at = &mut at[*p];
            }
            if let Some(obj) = at.as_object_mut() {
                obj.remove(*last);
            }
        }
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_decoder_and_the_schema_agree(e in events(), m in mutations()) {
        let e = apply(e, &m);
        let bytes = serde_json::to_vec(&e).unwrap();
        let decoded = decode_event(&bytes);
        let valid = schema_accepts(&e);
        prop_assert_eq!(
            decoded.is_ok(),
            valid,
            "decoder {:?}, schema {} on {}",
            decoded.as_ref().err().map(ToString::to_string),
            if valid { "accepts" } else { "rejects" },
            e
        );
    }
}
