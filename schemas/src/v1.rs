//! Schema version 1 of the lifecycle event.
//!
//! The envelope names who the data belongs to (account), what it is (item,
//! category) and where it was collected (region); `kind` says what happened.
//! Field rules that JSON's shape cannot express (which envelope fields each
//! kind requires) are checked by [`Event::validate`].

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One lifecycle event, as a producer sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Always 1 for this type (`1.0` is the same number, as JSON Schema
    /// compares numbers).
    #[serde(deserialize_with = "whole_number")]
    pub schema_version: u64,
    /// Producer-assigned, unique per event; a resend carries the same id.
    pub event_id: String,
    /// When the event happened at the producer (not when the ledger saw it).
    #[serde(deserialize_with = "event_time")]
    pub event_time: Timestamp,
    /// The data subject. Absent only for `policy_published`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub account: Option<Account>,
    /// The data item the event is about. Required for item events.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub item_id: Option<String>,
    /// The data category (a policy name such as `asset_management`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub category: Option<String>,
    /// ISO 3166-1 alpha-2 country code where the data was collected.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub region: Option<String>,
    pub kind: Kind,
}

/// An optional field that is present: `null` is not a value the schema
/// allows for it (absent is how to say "none").
fn present<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(de).map(Some)
}

fn event_time<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Timestamp, D::Error> {
    /// Parses the text where it lies (no copy, unless it holds escapes).
    struct TimeText;
    impl serde::de::Visitor<'_> for TimeText {
        type Value = Timestamp;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Timestamp, E> {
            crate::time::parse_event_time(text).map_err(E::custom)
        }
    }
    de.deserialize_str(TimeText)
}

/// A JSON number that is a whole number (`1`, `1.0`, `1e0`).
fn whole_number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(de)?;
    whole(&n)
        .ok_or_else(|| serde::de::Error::custom(format!("must be a positive integer, found {n}")))
}

/// The value of a JSON number that is a non-negative whole number.
pub(crate) fn whole(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
            .map(|f| f as u64)
    })
}

/// Whether text is blank: only characters of Unicode's White_Space, and
/// U+FEFF (which ECMAScript's `\s` includes); the schema's `pattern`
/// lists the same set.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || c == '\u{feff}')
}

/// A customer account: the data subject.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub app_id: String,
    pub uin: String,
}

/// What happened. On the wire, an object whose `type` names the variant and
/// whose other fields are the variant's (read by `kind_wire`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
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

/// Data about the account was collected into a new item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collected {
    pub sensitive: bool,
    pub purpose: String,
    /// The subject is below the minimum age of consent.
    #[serde(default)]
    pub below_age_of_consent: bool,
}

/// A primary copy of the item was written to a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    pub store: String,
}

/// A backup copy of the item was taken from `source_store` into `store`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackedUp {
    pub store: String,
    pub backup_id: String,
    pub source_store: String,
}

/// A copy was deleted: the primary copy in `store`, or the backup
/// `backup_id` held in `store`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deleted {
    pub store: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub backup_id: Option<String>,
}

/// A kind that carries nothing beyond its type: the account's hosting
/// service was terminated (`hosting_service_terminated`), or the account
/// stopped using this service (`service_use_ended`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// The account asked for its data in `categories` to be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionRequested {
    pub request_id: String,
    pub categories: Vec<String>,
}

/// A legal hold placed on, or released from, the account or one item of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    pub hold_id: String,
}

/// A retention policy version took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPublished {
    pub policy_version: String,
    /// Lowercase hex blake3 of the policy file's bytes.
    pub policy_hash: String,
}

/// Entries `first_seq..=last_seq` of chain `chain` are a declared import
/// of history (a backfill), declared by `declared_by`: their lateness is
/// the import's, not the live stream's. Written only by the ledger
/// (`lifeledger ingest --backfill`), on chain `imports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryImported {
    pub declared_by: String,
    pub chain: String,
    #[serde(deserialize_with = "whole_number")]
    pub first_seq: u64,
    #[serde(deserialize_with = "whole_number")]
    pub last_seq: u64,
}

/// The largest seq a declaration may name: JSON's exactly representable
/// integers (2^53 - 1), so that every JSON reader agrees on it.
pub const MAX_DECLARED_SEQ: u64 = 9_007_199_254_740_991;

/// The names of the kinds, as in `type`.
pub const KIND_NAMES: &[&str] = &[
    "collected",
    "stored",
    "backed_up",
    "deleted",
    "hosting_service_terminated",
    "service_use_ended",
    "deletion_requested",
    "legal_hold_placed",
    "legal_hold_released",
    "policy_published",
    "history_imported",
];

/// How an event kind relates to the envelope's subject fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// About one item: account, item_id and category are required.
    Item,
    /// About an account as a whole: item_id and category must be absent.
    Account,
    /// About an account, or one item of it.
    AccountOrItem,
    /// About the ledger itself: no subject at all.
    Ledger,
}

impl Kind {
    /// The `type` tag as it appears on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Collected(_) => "collected",
            Kind::Stored(_) => "stored",
            Kind::BackedUp(_) => "backed_up",
            Kind::Deleted(_) => "deleted",
            Kind::HostingServiceTerminated(_) => "hosting_service_terminated",
            Kind::ServiceUseEnded(_) => "service_use_ended",
            Kind::DeletionRequested(_) => "deletion_requested",
            Kind::LegalHoldPlaced(_) => "legal_hold_placed",
            Kind::LegalHoldReleased(_) => "legal_hold_released",
            Kind::PolicyPublished(_) => "policy_published",
            Kind::HistoryImported(_) => "history_imported",
        }
    }

    fn scope(&self) -> Scope {
        match self {
            Kind::Collected(_) | Kind::Stored(_) | Kind::BackedUp(_) | Kind::Deleted(_) => {
                Scope::Item
            }
            Kind::HostingServiceTerminated(_)
            | Kind::ServiceUseEnded(_)
            | Kind::DeletionRequested(_) => Scope::Account,
            Kind::LegalHoldPlaced(_) | Kind::LegalHoldReleased(_) => Scope::AccountOrItem,
            Kind::PolicyPublished(_) | Kind::HistoryImported(_) => Scope::Ledger,
        }
    }
}

/// A field that breaks a rule the JSON shape cannot express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub path: String,
    pub message: String,
}

fn violation(path: &str, message: impl Into<String>) -> FieldViolation {
    FieldViolation {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Identifier-like strings: ids chosen by producers.
fn check_id(path: &str, value: &str) -> Result<(), FieldViolation> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(violation(
            path,
            format!("{value:?} is not an identifier (1 to 128 of A-Z a-z 0-9 . _ - : /)"),
        ))
    }
}

/// Policy names: categories and stores.
fn check_name(path: &str, value: &str) -> Result<(), FieldViolation> {
    let mut bytes = value.bytes();
    let ok = value.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(violation(
            path,
            format!("{value:?} is not a policy name (a-z first, then a-z 0-9 _, at most 64)"),
        ))
    }
}

fn check_digits(path: &str, value: &str) -> Result<(), FieldViolation> {
    if !value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(violation(
            path,
            format!("{value:?} is not a decimal number of 1 to 20 digits"),
        ))
    }
}

fn check_region(path: &str, value: &str) -> Result<(), FieldViolation> {
    if value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(violation(
            path,
            format!("{value:?} is not an ISO 3166-1 alpha-2 code (two capital letters)"),
        ))
    }
}

fn require<'a, T>(path: &str, value: &'a Option<T>, kind: &Kind) -> Result<&'a T, FieldViolation> {
    value
        .as_ref()
        .ok_or_else(|| violation(path, format!("required for kind `{}`", kind.type_name())))
}

fn forbid<T>(path: &str, value: &Option<T>, kind: &Kind) -> Result<(), FieldViolation> {
    match value {
        Some(_) => Err(violation(
            path,
            format!("not allowed for kind `{}`", kind.type_name()),
        )),
        None => Ok(()),
    }
}

impl Event {
    /// The item this event is about, if any.
    pub fn item(&self) -> Option<&str> {
        self.item_id.as_deref()
    }

    /// Checks the rules the JSON shape cannot express: identifier syntax and
    /// which envelope fields each kind needs.
    pub fn validate(&self) -> Result<(), FieldViolation> {
        check_id("event_id", &self.event_id)?;
        let kind = &self.kind;
        let scope = kind.scope();
        if scope == Scope::Ledger {
            forbid("account", &self.account, kind)?;
        } else {
            let account = require("account", &self.account, kind)?;
            check_digits("account.app_id", &account.app_id)?;
            check_digits("account.uin", &account.uin)?;
        }
        match scope {
            Scope::Item => {
                check_id("item_id", require("item_id", &self.item_id, kind)?)?;
                check_name("category", require("category", &self.category, kind)?)?;
            }
            Scope::AccountOrItem => {
                if let Some(item) = &self.item_id {
                    check_id("item_id", item)?;
                }
                forbid("category", &self.category, kind)?;
            }
            Scope::Account | Scope::Ledger => {
                forbid("item_id", &self.item_id, kind)?;
                forbid("category", &self.category, kind)?;
            }
        }
        match (&self.region, kind) {
            (Some(region), _) => check_region("region", region)?,
            (None, Kind::Collected(_)) => {
                return Err(violation("region", "required for kind `collected`"));
            }
            (None, _) => {}
        }
        if scope == Scope::Ledger {
            forbid("region", &self.region, kind)?;
        }
        match kind {
            Kind::Collected(Collected { purpose, .. }) => {
                let chars = purpose.chars().count();
                if is_blank(purpose) || chars > 256 {
                    return Err(violation(
                        "kind.purpose",
                        "must be 1 to 256 characters, not blank",
                    ));
                }
            }
            Kind::Stored(Stored { store }) => check_name("kind.store", store)?,
            Kind::BackedUp(BackedUp {
                store,
                backup_id,
                source_store,
            }) => {
                check_name("kind.store", store)?;
                check_id("kind.backup_id", backup_id)?;
                check_name("kind.source_store", source_store)?;
            }
            Kind::Deleted(Deleted { store, backup_id }) => {
                check_name("kind.store", store)?;
                if let Some(backup_id) = backup_id {
                    check_id("kind.backup_id", backup_id)?;
                }
            }
            Kind::HostingServiceTerminated(_) | Kind::ServiceUseEnded(_) => {}
            Kind::DeletionRequested(DeletionRequested {
                request_id,
                categories,
            }) => {
                check_id("kind.request_id", request_id)?;
                if categories.is_empty() {
                    return Err(violation(
                        "kind.categories",
                        "must name at least one category",
                    ));
                }
                for (i, category) in categories.iter().enumerate() {
                    check_name(&format!("kind.categories[{i}]"), category)?;
                }
            }
            Kind::LegalHoldPlaced(LegalHold { hold_id })
            | Kind::LegalHoldReleased(LegalHold { hold_id }) => {
                check_id("kind.hold_id", hold_id)?;
            }
            Kind::PolicyPublished(PolicyPublished {
                policy_version,
                policy_hash,
            }) => {
                check_id("kind.policy_version", policy_version)?;
                let ok = policy_hash.len() == 64
                    && policy_hash
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !ok {
                    return Err(violation(
                        "kind.policy_hash",
                        "must be 64 lowercase hex digits (a blake3 hash)",
                    ));
                }
            }
            Kind::HistoryImported(HistoryImported {
                declared_by,
                chain,
                first_seq,
                last_seq,
            }) => {
                check_id("kind.declared_by", declared_by)?;
                let chain_ok = (1..=200).contains(&chain.len())
                    && chain.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/')
                    });
                if !chain_ok {
                    return Err(violation(
                        "kind.chain",
                        format!(
                            "{chain:?} is not a chain name (1 to 200 of A-Z a-z 0-9 . _ - : /)"
                        ),
                    ));
                }
                for (path, seq) in [("kind.first_seq", first_seq), ("kind.last_seq", last_seq)] {
                    if *seq > MAX_DECLARED_SEQ {
                        return Err(violation(path, format!("{seq} is over {MAX_DECLARED_SEQ}")));
                    }
                }
            }
        }
        Ok(())
    }
}
