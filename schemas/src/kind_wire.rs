//! Reading a [`Kind`] off the wire: an object whose `type` names the
//! variant and whose other members are the variant's fields.
//!
//! serde's derived reading of such an "internally tagged" enum copies every
//! member into a buffer before it knows the variant, then reads the variant
//! from the buffer: an allocation per member and per string, for every
//! event. Producers write `type` first, so the common case here reads the
//! tag and then the variant's fields straight from the input. Only when
//! `type` is not the first member are the members buffered, as serde does.
//! Both ways accept and refuse exactly what the derived reading did: the
//! same fields, `deny_unknown_fields`, a missing or repeated `type` refused.

use serde::de::value::{MapAccessDeserializer, MapDeserializer};
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::v1::{
    BackedUp, Collected, Deleted, DeletionRequested, HistoryImported, Kind, LegalHold, NoFields,
    PolicyPublished, Stored,
};

/// The variants, as `type` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KindType {
    Collected,
    Stored,
    BackedUp,
    Deleted,
    HostingServiceTerminated,
    ServiceUseEnded,
    DeletionRequested,
    LegalHoldPlaced,
    LegalHoldReleased,
    PolicyPublished,
    HistoryImported,
}

impl KindType {
    fn of_name(name: &str) -> Option<KindType> {
        Some(match name {
            "collected" => KindType::Collected,
            "stored" => KindType::Stored,
            "backed_up" => KindType::BackedUp,
            "deleted" => KindType::Deleted,
            "hosting_service_terminated" => KindType::HostingServiceTerminated,
            "service_use_ended" => KindType::ServiceUseEnded,
            "deletion_requested" => KindType::DeletionRequested,
            "legal_hold_placed" => KindType::LegalHoldPlaced,
            "legal_hold_released" => KindType::LegalHoldReleased,
            "policy_published" => KindType::PolicyPublished,
            "history_imported" => KindType::HistoryImported,
            _ => return None,
        })
    }

    /// Reads the variant's fields from `de`: the members of the object
    /// other than `type`.
    fn read<'de, D: Deserializer<'de>>(self, de: D) -> Result<Kind, D::Error> {
        Ok(match self {
            KindType::Collected => Kind::Collected(Collected::deserialize(de)?),
            KindType::Stored => Kind::Stored(Stored::deserialize(de)?),
            KindType::BackedUp => Kind::BackedUp(BackedUp::deserialize(de)?),
            KindType::Deleted => Kind::Deleted(Deleted::deserialize(de)?),
            KindType::HostingServiceTerminated => {
                Kind::HostingServiceTerminated(NoFields::deserialize(de)?)
            }
            KindType::ServiceUseEnded => Kind::ServiceUseEnded(NoFields::deserialize(de)?),
            KindType::DeletionRequested => {
                Kind::DeletionRequested(DeletionRequested::deserialize(de)?)
            }
            KindType::LegalHoldPlaced => Kind::LegalHoldPlaced(LegalHold::deserialize(de)?),
            KindType::LegalHoldReleased => Kind::LegalHoldReleased(LegalHold::deserialize(de)?),
            KindType::PolicyPublished => Kind::PolicyPublished(PolicyPublished::deserialize(de)?),
            KindType::HistoryImported => Kind::HistoryImported(HistoryImported::deserialize(de)?),
        })
    }
}

/// Reads a member's key, telling `type` from the rest without allocating
/// for `type`.
struct Key;

impl<'de> serde::de::DeserializeSeed<'de> for Key {
    /// `None` for `type`.
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Option<String>, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<String>, E> {
        Ok((key != "type").then(|| key.to_owned()))
    }
}

/// Reads the value of `type`, whatever it is: the kind it names, if it is
/// the name of one. A tag that names none is refused by the caller at the
/// kind as a whole, as serde's derived reading did, so that the decoder's
/// diagnosis of the kind (which names the problem) applies unchanged.
struct Tag;

impl<'de> serde::de::DeserializeSeed<'de> for Tag {
    type Value = Option<KindType>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Option<KindType>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tag {
    type Value = Option<KindType>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Option<KindType>, E> {
        Ok(KindType::of_name(name))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Option<KindType>, E> {
        Ok(None)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Option<KindType>, E> {
        Ok(None)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Option<KindType>, E> {
        Ok(None)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Option<KindType>, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<KindType>, E> {
        Ok(None)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Option<KindType>, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<Option<KindType>, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<KindType>, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(None)
    }
}

/// The kind a tag names, or the refusal of the kind.
fn named<E: serde::de::Error>(tag: Option<KindType>) -> Result<KindType, E> {
    tag.ok_or_else(|| E::custom("`type` names no kind"))
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_map(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with a `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let first = match map.next_key_seed(Key)? {
            None => return Err(A::Error::missing_field("type")),
            Some(None) => {
                let tag = named::<A::Error>(map.next_value_seed(Tag)?)?;
                return tag.read(MapAccessDeserializer::new(map));
            }
            Some(Some(first)) => first,
        };
        // `type` comes later: buffer the members until the end.
        let mut members = vec![(first, map.next_value::<Value>()?)];
        let mut tag = None;
        while let Some(key) = map.next_key_seed(Key)? {
            match key {
                Some(key) => members.push((key, map.next_value::<Value>()?)),
                None if tag.is_some() => return Err(A::Error::duplicate_field("type")),
                None => tag = Some(named::<A::Error>(map.next_value_seed(Tag)?)?),
            }
        }
        let Some(tag) = tag else {
            return Err(A::Error::missing_field("type"));
        };
        tag.read(MapDeserializer::<_, serde_json::Error>::new(
            members.into_iter(),
        ))
        .map_err(A::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// serde's derived reading of the same enum: the reference.
    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Derived {
        Collected(Collected),
        Stored(Stored),
        BackedUp(BackedUp),
        Deleted(Deleted),
        HostingServiceTerminated(NoFields),
        ServiceUseEnded(NoFields),
        DeletionRequested(DeletionRequested),
        LegalHoldPlaced(LegalHold),
        LegalHoldReleased(LegalHold),
        PolicyPublished(PolicyPublished),
        HistoryImported(HistoryImported),
    }

    impl From<Derived> for Kind {
        fn from(d: Derived) -> Kind {
            match d {
                Derived::Collected(k) => Kind::Collected(k),
                Derived::Stored(k) => Kind::Stored(k),
                Derived::BackedUp(k) => Kind::BackedUp(k),
                Derived::Deleted(k) => Kind::Deleted(k),
                Derived::HostingServiceTerminated(k) => Kind::HostingServiceTerminated(k),
                Derived::ServiceUseEnded(k) => Kind::ServiceUseEnded(k),
                Derived::DeletionRequested(k) => Kind::DeletionRequested(k),
                Derived::LegalHoldPlaced(k) => Kind::LegalHoldPlaced(k),
                Derived::LegalHoldReleased(k) => Kind::LegalHoldReleased(k),
                Derived::PolicyPublished(k) => Kind::PolicyPublished(k),
                Derived::HistoryImported(k) => Kind::HistoryImported(k),
            }
        }
    }

    const FIELDS: &[&str] = &[
        "sensitive",
        "purpose",
        "below_age_of_consent",
        "store",
        "backup_id",
        "source_store",
        "request_id",
        "categories",
        "hold_id",
        "policy_version",
        "policy_hash",
        "declared_by",
        "chain",
        "first_seq",
        "last_seq",
        "extra",
    ];

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""mongodb""#.to_owned()),
            Just(r#""a\"b""#.to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("7".to_owned()),
            Just("7.0".to_owned()),
            Just("-1".to_owned()),
            Just("null".to_owned()),
            Just(r#"["x","y"]"#.to_owned()),
            Just(r#"{"a":1}"#.to_owned()),
        ]
    }

    /// A `type` value: a kind's name mostly, or one that names none (a
    /// whole number is left out: the derived reading takes it as the index
    /// of a variant, which the schema refuses).
    fn tag() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => proptest::sample::select(crate::v1::KIND_NAMES).prop_map(|n| format!("\"{n}\"")),
            1 => Just(r#""no_such_kind""#.to_owned()),
            1 => Just("null".to_owned()),
            1 => Just("true".to_owned()),
            1 => Just(r#"["stored"]"#.to_owned()),
        ]
    }

    /// The members of a valid kind of each name.
    fn valid_members(name: &str) -> Vec<String> {
        let members: &[&str] = match name {
            "collected" => &[
                r#""sensitive":true"#,
                r#""purpose":"p""#,
                r#""below_age_of_consent":false"#,
            ],
            "stored" => &[r#""store":"s""#],
            "backed_up" => &[
                r#""store":"s""#,
                r#""backup_id":"b""#,
                r#""source_store":"t""#,
            ],
            "deleted" => &[r#""store":"s""#, r#""backup_id":"b""#],
            "deletion_requested" => &[r#""request_id":"r""#, r#""categories":["c"]"#],
            "legal_hold_placed" | "legal_hold_released" => &[r#""hold_id":"h""#],
            "policy_published" => &[r#""policy_version":"v""#, r#""policy_hash":"00""#],
            "history_imported" => &[
                r#""declared_by":"d""#,
                r#""chain":"c""#,
                r#""first_seq":1"#,
                r#""last_seq":2.0"#,
            ],
            _ => &[],
        };
        members.iter().map(|m| (*m).to_owned()).collect()
    }

    /// A kind object: mostly a valid kind of some name, with members
    /// dropped, wrong ones added, `type` anywhere (or twice, or missing).
    fn kind_text() -> impl Strategy<Value = String> {
        let member =
            (proptest::sample::select(FIELDS), value()).prop_map(|(k, v)| format!("\"{k}\":{v}"));
        (
            proptest::sample::select(crate::v1::KIND_NAMES),
            proptest::collection::vec(any::<bool>(), 4),
            proptest::collection::vec(member, 0..3),
            proptest::collection::vec((tag(), any::<prop::sample::Index>()), 0..2),
            0u8..4,
        )
            .prop_map(|(name, keep, extra, more_tags, how)| {
                let mut members: Vec<String> = valid_members(name)
                    .into_iter()
                    .zip(&keep)
                    // Mostly kept: a dropped member is one mutation.
                    .filter(|(_, k)| **k || how == 0)
                    .map(|(m, _)| m)
                    .collect();
                if how == 1 {
                    members.extend(extra);
                }
                // The kind's own `type`: first (as producers write it) or
                // anywhere; more tags after it.
                let at = if how == 2 { members.len() } else { 0 };
                members.insert(at, format!("\"type\":\"{name}\""));
                if how == 3 {
                    members.remove(at);
                }
                for (t, i) in more_tags {
                    members.insert(i.index(members.len() + 1), format!("\"type\":{t}"));
                }
                format!("{{{}}}", members.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Reading `type` first and the fields straight from the input
        /// accepts and refuses exactly what serde's derived reading does,
        /// with the same value.
        #[test]
        fn a_kind_reads_as_the_derived_reading_reads_it(text in kind_text()) {
            let ours = serde_json::from_str::<Kind>(&text).ok();
            let derived = serde_json::from_str::<Derived>(&text).ok().map(Kind::from);
            prop_assert_eq!(ours, derived, "{}", text);
        }

        /// The same from a `serde_json::Value` (another deserializer).
        #[test]
        fn a_kind_reads_from_a_value_as_the_derived_reading_reads_it(text in kind_text()) {
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                return Ok(());
            };
            let ours = serde_json::from_value::<Kind>(value.clone()).ok();
            let derived = serde_json::from_value::<Derived>(value).ok().map(Kind::from);
            prop_assert_eq!(ours, derived, "{}", text);
        }
    }

    #[test]
    fn a_type_that_is_a_number_names_no_kind() {
        assert!(serde_json::from_str::<Kind>(r#"{"type":1,"store":"m"}"#).is_err());
        assert!(serde_json::from_str::<Kind>(r#"{"store":"m","type":1}"#).is_err());
    }

    #[test]
    fn a_kind_whose_type_comes_last_reads_the_same() {
        let first: Kind = serde_json::from_str(r#"{"type":"stored","store":"m"}"#).unwrap();
        let last: Kind = serde_json::from_str(r#"{"store":"m","type":"stored"}"#).unwrap();
        assert_eq!(first, last);
        assert_eq!(first, Kind::Stored(Stored { store: "m".into() }));
    }
}
