//! How the projection's types are written: as text for people (JSON:
//! `status --json`, reports, alerts) and compactly for the saved states
//! (bincode, which is not human-readable).
//!
//! A moment as text (`2026-03-01T10:00:00Z`) costs a format on every
//! save and a parse on every read; with a copy's `store#backup_id` name
//! they were about half of what encoding and decoding a state cost. The
//! saved form holds a moment as its nanoseconds since the epoch and a
//! copy as its two names. Changing this changes the saved states'
//! encoding: `STATES_FORMAT` in `store/projection.rs` names it.

use jiff::Timestamp;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::CopyId;

/// `#[serde(with = "saved_form::moment")]`: a [`Timestamp`] as text, or
/// as nanoseconds since the epoch where the format is not for people.
pub mod moment {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Timestamp, out: S) -> Result<S::Ok, S::Error> {
        if out.is_human_readable() {
            at.serialize(out)
        } else {
            out.serialize_i128(at.as_nanosecond())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Timestamp, D::Error> {
        if input.is_human_readable() {
            Timestamp::deserialize(input)
        } else {
            let nanos = i128::deserialize(input)?;
            Timestamp::from_nanosecond(nanos).map_err(D::Error::custom)
        }
    }
}

impl Serialize for CopyId {
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        if out.is_human_readable() {
            out.collect_str(self)
        } else {
            (&self.store, &self.backup_id).serialize(out)
        }
    }
}

impl<'de> Deserialize<'de> for CopyId {
    fn deserialize<D: Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
        if input.is_human_readable() {
            CopyId::try_from(String::deserialize(input)?).map_err(D::Error::custom)
        } else {
            let (store, backup_id) = <(String, Option<String>)>::deserialize(input)?;
            CopyId::new(store, backup_id).map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CopyChange, EntryRef};
    use super::*;
    use proptest::prelude::*;

    fn bincode_round_trip<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
        let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap();
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .unwrap()
            .0
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9_-]{1,12}"
    }

    prop_compose! {
        fn change()(
            chain in name(),
            seq in any::<u64>(),
            event_id in name(),
            event_nanos in -377_705_116_800_000_000_000i128..253_402_207_200_000_000_000i128,
            received_nanos in 0i128..4_102_444_800_000_000_000i128,
            present in any::<bool>(),
        ) -> CopyChange {
            CopyChange {
                at: EntryRef {
                    chain,
                    seq,
                    event_id,
                    event_time: Timestamp::from_nanosecond(event_nanos).unwrap(),
                    received_at: Timestamp::from_nanosecond(received_nanos).unwrap(),
                },
                present,
            }
        }
    }

    proptest! {
        /// The saved form reads back as what was saved, to the nanosecond.
        #[test]
        fn saved_form_round_trips(
            c in change(),
            store in name(),
            backup in proptest::option::of(name()),
        ) {
            prop_assert_eq!(bincode_round_trip(&c), c.clone());
            let copy = CopyId::new(store, backup).unwrap();
            prop_assert_eq!(bincode_round_trip(&copy), copy.clone());
        }

        /// For people, a moment and a copy are written as before: text.
        #[test]
        fn json_form_is_text(
            c in change(),
            store in name(),
            backup in proptest::option::of(name()),
        ) {
            let json = serde_json::to_value(&c.at).unwrap();
            prop_assert_eq!(&json["event_time"], &serde_json::json!(c.at.event_time.to_string()));
            prop_assert_eq!(&json["received_at"], &serde_json::json!(c.at.received_at.to_string()));
            let back: EntryRef = serde_json::from_value(json).unwrap();
            prop_assert_eq!(back, c.at);
            let copy = CopyId::new(store, backup).unwrap();
            prop_assert_eq!(serde_json::to_value(&copy).unwrap(), serde_json::json!(copy.to_string()));
        }
    }

    #[test]
    fn a_saved_copy_with_a_bad_name_is_refused() {
        let bytes = bincode::serde::encode_to_vec(
            ("a#b".to_string(), None::<String>),
            bincode::config::standard(),
        )
        .unwrap();
        let read: Result<(CopyId, usize), _> =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard());
        assert!(read.is_err());
    }
}
