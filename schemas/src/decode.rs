//! Strict decoding of received bytes into an [`Event`].
//!
//! Every failure names what was wrong and where: a JSON syntax error gives its
//! line and column, a schema error gives the field path. Unknown fields, kinds
//! and schema versions are errors, never silently ignored.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::SUPPORTED_VERSIONS;
use crate::v1::{self, Event};

/// Why received bytes are not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("input is not UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: u64 },
    #[error("input is not JSON: {message} at line {line} column {column}")]
    NotJson {
        line: u64,
        column: u64,
        message: String,
    },
    #[error("unsupported schema_version {found}; this build reads {supported:?}")]
    UnsupportedVersion {
        found: u64,
        supported: &'static [u64],
    },
    #[error("field `{path}`: {message}")]
    Field { path: String, message: String },
}

/// The broad class of a rejection, recorded in the ledger beside the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum RejectClass {
    /// Not UTF-8 or not JSON.
    Malformed,
    /// Valid JSON that breaks the schema.
    Schema,
    /// A schema version this build does not know.
    UnsupportedVersion,
    /// Larger than the configured limit.
    Oversize,
    /// An event id seen before with different bytes.
    Conflict,
}

impl RejectClass {
    /// The class's code in the ledger's entry encoding (see FORMAT.md).
    pub fn code(self) -> u8 {
        match self {
            RejectClass::Malformed => 1,
            RejectClass::Schema => 2,
            RejectClass::UnsupportedVersion => 3,
            RejectClass::Oversize => 4,
            RejectClass::Conflict => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => RejectClass::Malformed,
            2 => RejectClass::Schema,
            3 => RejectClass::UnsupportedVersion,
            4 => RejectClass::Oversize,
            5 => RejectClass::Conflict,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            RejectClass::Malformed => "malformed",
            RejectClass::Schema => "schema",
            RejectClass::UnsupportedVersion => "unsupported_version",
            RejectClass::Oversize => "oversize",
            RejectClass::Conflict => "conflict",
        }
    }
}

impl DecodeError {
    pub fn class(&self) -> RejectClass {
        match self {
            DecodeError::NotUtf8 { .. } | DecodeError::NotJson { .. } => RejectClass::Malformed,
            DecodeError::UnsupportedVersion { .. } => RejectClass::UnsupportedVersion,
            DecodeError::Field { .. } => RejectClass::Schema,
        }
    }

    fn field(path: impl Into<String>, message: impl Into<String>) -> Self {
        DecodeError::Field {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The envelope's shape, read before the typed decode: the version (so that
/// a version-2 event is reported as an unknown version rather than as a pile
/// of unknown fields), and the nested objects as raw JSON, so that arrays in
/// their place are refused (serde would otherwise accept a struct written as
/// an array) and so that errors inside `kind` can be traced to their field.
#[derive(Deserialize)]
struct Envelope<'a> {
    schema_version: Option<serde_json::Value>,
    #[serde(borrow)]
    account: Option<&'a RawValue>,
    #[serde(borrow)]
    kind: Option<&'a RawValue>,
}

fn message_of(err: &serde_json::Error) -> String {
    // serde_json appends " at line L column C" to its Display; keep only the
    // message and carry the position in fields of our own.
    let full = err.to_string();
    full.rsplit_once(" at line ")
        .map_or(full.as_str(), |(head, _)| head)
        .to_owned()
}

fn syntax_error(err: &serde_json::Error) -> DecodeError {
    DecodeError::NotJson {
        line: err.line() as u64,
        column: err.column() as u64,
        message: message_of(err),
    }
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

fn read_envelope(raw: &str) -> Result<Envelope<'_>, DecodeError> {
    if !raw.trim_start().starts_with('{') {
        // Still report broken JSON as such, with its position.
        if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(raw) {
            return Err(syntax_error(&err));
        }
        return Err(DecodeError::field("(root)", "must be a JSON object"));
    }
    let envelope: Envelope<'_> = serde_json::from_str(raw).map_err(|err| match err.classify() {
        Category::Data => DecodeError::field("(root)", message_of(&err)),
        _ => syntax_error(&err),
    })?;
    for (name, value) in [("account", envelope.account), ("kind", envelope.kind)] {
        if value.is_some_and(|v| !is_object(v)) {
            return Err(DecodeError::field(name, "must be a JSON object"));
        }
    }
    Ok(envelope)
}

fn read_version(envelope: &Envelope<'_>) -> Result<u64, DecodeError> {
    match &envelope.schema_version {
        None => Err(DecodeError::field("schema_version", "missing")),
        Some(value) => value.as_number().and_then(v1::whole).ok_or_else(|| {
            DecodeError::field(
                "schema_version",
                format!("must be a positive integer, found {value}"),
            )
        }),
    }
}

/// A field error at `path`. serde names a missing field in its message and
/// reports the object that lacks it; the path should name the field.
fn field_error(path: &str, message: String) -> DecodeError {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    let path = match (path, missing) {
        ("." | "", Some(field)) => field.to_owned(),
        (".", None) | ("", None) => "(root)".to_owned(),
        (path, Some(field)) => format!("{path}.{field}"),
        (path, None) => path.to_owned(),
    };
    DecodeError::field(path, message)
}

fn first_error<T: DeserializeOwned>(fields: Map<String, Value>) -> Option<(String, String)> {
    serde_path_to_error::deserialize::<_, T>(Value::Object(fields))
        .err()
        .map(|e| (e.path().to_string(), e.into_inner().to_string()))
}

/// serde reports any error inside an internally tagged enum at the enum
/// itself; decode the variant on its own to find the field.
fn diagnose_kind(kind: &RawValue) -> Option<DecodeError> {
    let mut fields: Map<String, Value> = serde_json::from_str(kind.get()).ok()?;
    let Some(tag) = fields.remove("type") else {
        return Some(DecodeError::field("kind.type", "missing"));
    };
    let Some(tag) = tag.as_str() else {
        return Some(DecodeError::field(
            "kind.type",
            format!("must be a string, found {tag}"),
        ));
    };
    let (path, message) = match tag {
        "collected" => first_error::<v1::Collected>(fields),
        "stored" => first_error::<v1::Stored>(fields),
        "backed_up" => first_error::<v1::BackedUp>(fields),
        "deleted" => first_error::<v1::Deleted>(fields),
        "hosting_service_terminated" | "service_use_ended" => first_error::<v1::NoFields>(fields),
        "deletion_requested" => first_error::<v1::DeletionRequested>(fields),
        "legal_hold_placed" | "legal_hold_released" => first_error::<v1::LegalHold>(fields),
        "policy_published" => first_error::<v1::PolicyPublished>(fields),
        "history_imported" => first_error::<v1::HistoryImported>(fields),
        other => {
            return Some(DecodeError::field(
                "kind.type",
                format!(
                    "unknown kind `{other}`, expected one of {}",
                    v1::KIND_NAMES.join(", ")
                ),
            ));
        }
    }?;
    let path = if path == "." {
        "kind".to_owned()
    } else {
        format!("kind.{path}")
    };
    Some(field_error(&path, message))
}

/// Decodes and validates one event from the bytes a producer sent.
pub fn decode_event(raw: &[u8]) -> Result<Event, DecodeError> {
    let event = match decode_plain(raw) {
        Some(event) => event,
        None => {
            let text = std::str::from_utf8(raw).map_err(|err| DecodeError::NotUtf8 {
                offset: err.valid_up_to() as u64,
            })?;
            decode_the_long_way(text)?
        }
    };
    event
        .validate()
        .map_err(|v| DecodeError::field(v.path, v.message))?;
    Ok(event)
}

/// The envelope first (version, shapes), then the typed decode, naming the
/// field of the first thing wrong (rules beyond the shape are
/// [`Event::validate`]'s).
fn decode_the_long_way(text: &str) -> Result<Event, DecodeError> {
    let envelope = read_envelope(text)?;
    let version = read_version(&envelope)?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: SUPPORTED_VERSIONS,
        });
    }
    // Most events are valid: decode without tracking paths first, and only
    // on failure again with paths, to name the field.
    match serde_json::from_str::<Event>(text) {
        Ok(event) => Ok(event),
        Err(_) => decode_naming_the_field(text, &envelope),
    }
}

/// The common case in one pass: text without a `[` anywhere (so no struct
/// can be written as an array, the one shape the typed decode accepts and
/// the envelope refuses) that decodes as an event of a supported version.
/// The envelope would accept all of it: every other envelope error (not an
/// object, a duplicate field, an `account` or `kind` that is no object)
/// fails the typed decode too. `None` sends the text the long way, which
/// names what is wrong.
///
/// It reads the bytes as they are: JSON allows nothing but ASCII outside
/// strings, and serde_json checks the UTF-8 of every string it reads, so
/// bytes that decode are UTF-8 (no separate pass over them first).
fn decode_plain(raw: &[u8]) -> Option<Event> {
    if raw.contains(&b'[') {
        return None;
    }
    serde_json::from_slice::<Event>(raw)
        .ok()
        .filter(|event| SUPPORTED_VERSIONS.contains(&event.schema_version))
}

/// Decodes an event that failed to decode, for the error naming its field.
fn decode_naming_the_field(text: &str, envelope: &Envelope<'_>) -> Result<Event, DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let event: Event = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.classify() != Category::Data {
            return syntax_error(&inner);
        }
        if path == "kind" {
            if let Some(found) = envelope.kind.and_then(diagnose_kind) {
                return found;
            }
        }
        field_error(&path, message_of(&inner))
    })?;
    de.end().map_err(|err| syntax_error(&err))?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"schema_version":1,"event_id":"e1","event_time":"2026-01-05T10:00:00Z",
        "account":{"app_id":"1250000001","uin":"100000000001"},"item_id":"i1",
        "category":"asset_management","region":"SG",
        "kind":{"type":"collected","sensitive":false,"purpose":"asset inventory"}}"#;

    fn field_path(raw: &str) -> String {
        match decode_event(raw.as_bytes()) {
            Err(DecodeError::Field { path, .. }) => path,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn good_event_decodes() {
        let event = decode_event(GOOD.as_bytes()).unwrap();
        assert_eq!(event.item(), Some("i1"));
        assert_eq!(event.kind.type_name(), "collected");
    }

    #[test]
    fn unknown_field_is_named() {
        let raw = GOOD.replace("\"region\"", "\"colour\":\"red\",\"region\"");
        let err = decode_event(raw.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn unknown_nested_field_is_named_with_its_path() {
        let raw = GOOD.replace("\"sensitive\"", "\"colour\":1,\"sensitive\"");
        assert_eq!(field_path(&raw), "kind.colour");
        let raw = GOOD.replace("\"uin\"", "\"x\":1,\"uin\"");
        assert_eq!(field_path(&raw), "account.x");
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let raw = GOOD.replace("\"collected\"", "\"teleported\"");
        let err = decode_event(raw.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("`teleported`"), "{err}");
        assert_eq!(field_path(&raw), "kind.type");
        assert_eq!(err.class(), RejectClass::Schema);
    }

    #[test]
    fn unknown_version_is_rejected_as_such() {
        let raw = GOOD.replace("\"schema_version\":1", "\"schema_version\":2");
        let err = decode_event(raw.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnsupportedVersion {
                found: 2,
                supported: SUPPORTED_VERSIONS
            }
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let err = decode_event(b"{\"schema_version\":1,\n  \"event_id\": }").unwrap_err();
        match err {
            DecodeError::NotJson { line, column, .. } => {
                assert_eq!(line, 2);
                assert!(column > 10);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let raw = format!("{GOOD} x");
        assert_eq!(
            decode_event(raw.as_bytes()).unwrap_err().class(),
            RejectClass::Malformed
        );
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let err = decode_event(b"{\"a\":\"\xff\"}").unwrap_err();
        assert_eq!(err, DecodeError::NotUtf8 { offset: 6 });
        // In an event that is valid but for one byte of one string (which
        // the one-pass decode reads first), in each field and in the kind.
        for field in ["event_id", "item_id", "category", "uin", "purpose"] {
            let at = GOOD.find(&format!("\"{field}\":\"")).unwrap() + field.len() + 4;
            let mut raw = GOOD.as_bytes().to_vec();
            raw[at] = 0xff;
            assert_eq!(
                decode_event(&raw).unwrap_err(),
                DecodeError::NotUtf8 { offset: at as u64 },
                "{field}"
            );
        }
    }

    #[test]
    fn kind_rules_name_the_field() {
        assert_eq!(
            field_path(&GOOD.replace("\"item_id\":\"i1\",", "")),
            "item_id"
        );
        assert_eq!(
            field_path(&GOOD.replace("\"region\":\"SG\",", "")),
            "region"
        );
        assert_eq!(field_path(&GOOD.replace("\"SG\"", "\"sg\"")), "region");
        assert_eq!(
            field_path(&GOOD.replace("\"1250000001\"", "\"12a\"")),
            "account.app_id"
        );
        assert_eq!(
            field_path(&GOOD.replace("\"sensitive\":false", "\"sensitive\":\"no\"")),
            "kind.sensitive"
        );
    }

    #[test]
    fn structs_written_as_arrays_are_refused() {
        let raw = GOOD.replace(
            "{\"app_id\":\"1250000001\",\"uin\":\"100000000001\"}",
            "[\"1250000001\",\"100000000001\"]",
        );
        assert_eq!(field_path(&raw), "account");
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let raw = GOOD.replace(
            "\"item_id\":\"i1\",",
            "\"item_id\":\"i1\",\"item_id\":\"i2\",",
        );
        let err = decode_event(raw.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("duplicate field `item_id`"),
            "{err}"
        );
    }

    /// Pieces an event is built from: good fields, and fields that are
    /// wrong in each way the long way tells apart.
    fn pieces() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let version = prop_oneof![
            Just("\"schema_version\":1".to_owned()),
            Just("\"schema_version\":1.0".to_owned()),
            Just("\"schema_version\":2".to_owned()),
            Just("\"schema_version\":\"1\"".to_owned()),
            Just(String::new()),
        ];
        let account = prop_oneof![
            Just("\"account\":{\"app_id\":\"1250000001\",\"uin\":\"100000000001\"}".to_owned()),
            Just("\"account\":[\"1250000001\",\"100000000001\"]".to_owned()),
            Just("\"account\":null".to_owned()),
            Just("\"account\":\"x\"".to_owned()),
            Just("\"account\":{\"app_id\":\"12a\",\"uin\":\"1\"}".to_owned()),
            Just(String::new()),
        ];
        let kind = prop_oneof![
            Just("\"kind\":{\"type\":\"collected\",\"sensitive\":false,\"purpose\":\"p [x]\"}".to_owned()),
            Just("\"kind\":{\"type\":\"stored\",\"store\":\"mongodb\"}".to_owned()),
            Just("\"kind\":[\"stored\",\"mongodb\"]".to_owned()),
            Just("\"kind\":{\"store\":\"mongodb\",\"type\":\"stored\"}".to_owned()),
            Just("\"kind\":{\"type\":\"teleported\"}".to_owned()),
            Just("\"kind\":{\"type\":\"deletion_requested\",\"request_id\":\"r1\",\"categories\":[\"asset_basic\"]}".to_owned()),
            Just("\"kind\":{\"type\":\"hosting_service_terminated\"}".to_owned()),
            Just("\"kind\":7".to_owned()),
        ];
        let other = prop_oneof![
            Just("\"event_id\":\"e1\"".to_owned()),
            Just("\"event_time\":\"2026-01-05T10:00:00Z\"".to_owned()),
            Just("\"event_time\":\"2026-01-05 10:00:00Z\"".to_owned()),
            Just("\"item_id\":\"i1\"".to_owned()),
            Just("\"item_id\":null".to_owned()),
            Just("\"category\":\"asset_management\"".to_owned()),
            Just("\"region\":\"SG\"".to_owned()),
            Just("\"colour\":[1]".to_owned()),
            Just("\"colour\":1".to_owned()),
        ];
        (
            version,
            account,
            kind,
            proptest::collection::vec(other, 0..8),
        )
            .prop_shuffle_fields()
    }

    trait ShuffleFields {
        fn prop_shuffle_fields(self) -> proptest::strategy::BoxedStrategy<String>;
    }

    impl<S> ShuffleFields for S
    where
        S: proptest::strategy::Strategy<Value = (String, String, String, Vec<String>)> + 'static,
    {
        fn prop_shuffle_fields(self) -> proptest::strategy::BoxedStrategy<String> {
            use proptest::prelude::*;
            self.prop_flat_map(|(v, a, k, rest)| {
                let mut fields: Vec<String> = [v, a, k]
                    .into_iter()
                    .chain(rest)
                    .filter(|f| !f.is_empty())
                    .collect();
                fields.dedup();
                Just(fields).prop_shuffle()
            })
            .prop_map(|fields| format!("{{{}}}", fields.join(",")))
            .boxed()
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3_000))]

        /// The one-pass decode of common events answers exactly as the long
        /// way does, errors included.
        #[test]
        fn the_short_way_answers_as_the_long_way(text in pieces()) {
            let short = decode_event(text.as_bytes());
            let long = decode_the_long_way(&text).and_then(|event| {
                event
                    .validate()
                    .map_err(|v| DecodeError::field(v.path, v.message))?;
                Ok(event)
            });
            proptest::prop_assert_eq!(short, long, "{}", text);
        }
    }

    #[test]
    fn non_object_is_a_schema_error() {
        assert_eq!(field_path("[1,2]"), "(root)");
        assert_eq!(field_path("{}"), "schema_version");
    }
}
