//! Any valid event survives encoding, decoding and canonicalisation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use jiff::Timestamp;
use lifeledger_schemas::v1::{
    BackedUp, Collected, Deleted, DeletionRequested, HistoryImported, LegalHold, NoFields,
    PolicyPublished, Stored,
};
use lifeledger_schemas::{
    Account, Event, Kind, canonical_json, canonical_json_generic, decode_event,
};
use proptest::prelude::*;

const ID: &str = "[A-Za-z0-9._:/-]{1,24}";
const NAME: &str = "[a-z][a-z0-9_]{0,15}";

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (
            any::<bool>(),
            "[ -~]{0,20}[a-z][ -~é\n\"\\\\]{0,20}",
            any::<bool>()
        )
            .prop_map(
                |(sensitive, purpose, below_age_of_consent)| Kind::Collected(Collected {
                    sensitive,
                    purpose,
                    below_age_of_consent
                })
            ),
        NAME.prop_map(|store| Kind::Stored(Stored { store })),
        (NAME, ID, NAME).prop_map(|(store, backup_id, source_store)| Kind::BackedUp(BackedUp {
            store,
            backup_id,
            source_store
        })),
        (NAME, proptest::option::of(ID))
            .prop_map(|(store, backup_id)| Kind::Deleted(Deleted { store, backup_id })),
        Just(Kind::HostingServiceTerminated(NoFields {})),
        Just(Kind::ServiceUseEnded(NoFields {})),
        (ID, proptest::collection::vec(NAME, 1..4)).prop_map(|(request_id, categories)| {
            Kind::DeletionRequested(DeletionRequested {
                request_id,
                categories,
            })
        }),
        ID.prop_map(|hold_id| Kind::LegalHoldPlaced(LegalHold { hold_id })),
        ID.prop_map(|hold_id| Kind::LegalHoldReleased(LegalHold { hold_id })),
        (ID, "[0-9a-f]{64}").prop_map(|(policy_version, policy_hash)| {
            Kind::PolicyPublished(PolicyPublished {
                policy_version,
                policy_hash,
            })
        }),
        (ID, "[a-z:0-9]{1,20}", 0u64..1_000_000, 0u64..1_000_000).prop_map(
            |(declared_by, chain, first_seq, last_seq)| {
                Kind::HistoryImported(HistoryImported {
                    declared_by,
                    chain,
                    first_seq,
                    last_seq,
                })
            }
        ),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (
        ID,
        0i64..4_000_000_000,
        0u32..1_000_000_000,
        ("[0-9]{1,12}", "[0-9]{1,12}"),
        ID,
        NAME,
        "[A-Z]{2}",
        proptest::option::of("[A-Z]{2}"),
        kind(),
    )
        .prop_map(
            |(event_id, secs, nanos, (app_id, uin), item, category, region, other_region, kind)| {
                let account = Some(Account { app_id, uin });
                let (account, item_id, category, region) = match &kind {
                    Kind::Collected(_) => (account, Some(item), Some(category), Some(region)),
                    Kind::Stored(_) | Kind::BackedUp(_) | Kind::Deleted(_) => {
                        (account, Some(item), Some(category), other_region)
                    }
                    Kind::LegalHoldPlaced(_) | Kind::LegalHoldReleased(_) => {
                        (account, other_region.as_ref().map(|_| item), None, None)
                    }
                    Kind::PolicyPublished(_) | Kind::HistoryImported(_) => (None, None, None, None),
                    _ => (account, None, None, other_region),
                };
                Event {
                    schema_version: 1,
                    event_id,
                    event_time: Timestamp::new(secs, nanos as i32).unwrap(),
                    account,
                    item_id,
                    category,
                    region,
                    kind,
                }
            },
        )
}

proptest! {
    #[test]
    fn encode_decode_round_trips(event in event()) {
        let bytes = serde_json::to_vec_pretty(&event).unwrap();
        prop_assert_eq!(&decode_event(&bytes).unwrap(), &event);
    }

    #[test]
    fn canonical_form_decodes_to_the_same_event_and_is_a_fixed_point(event in event()) {
        let canonical = canonical_json(&event);
        let decoded = decode_event(&canonical).unwrap();
        prop_assert_eq!(&decoded, &event);
        prop_assert_eq!(canonical_json(&decoded), canonical);
    }

    /// The canonical writer, written field by field for speed, gives the
    /// bytes of the reference: serde's view of the event, keys sorted.
    #[test]
    fn the_direct_canonical_writer_matches_the_reference(event in event()) {
        prop_assert_eq!(
            String::from_utf8(canonical_json(&event)).unwrap(),
            String::from_utf8(canonical_json_generic(&event)).unwrap()
        );
    }
}
