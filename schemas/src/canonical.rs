//! The canonical JSON form of an event: what the ledger hashes and stores
//! beside the bytes it received.
//!
//! The rules (FORMAT.md, "Canonical event JSON") are those of RFC 8785 for the
//! values our schema allows: objects with keys sorted by their UTF-8 bytes, no
//! insignificant whitespace, integers in plain decimal, strings with only `"`,
//! `\` and control characters escaped (`\b \f \n \r \t`, others `\u00xx`),
//! absent optional fields omitted. They are written here by hand so that no
//! serde_json feature elsewhere in the build (such as `preserve_order`) can
//! change the bytes.

use std::io::Write as _;

use serde_json::Value;

use crate::v1::{Event, Kind};

/// The canonical JSON bytes of an event, written straight from its fields
/// (keys in bytewise order, as listed here); [`canonical_json_generic`],
/// which sorts whatever serde makes of the event, is the reference a test
/// holds this to.
pub fn canonical_json(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    write_canonical_json(event, &mut out);
    out
}

/// Whether `bytes` are the canonical JSON of `event`, without allocating
/// for each event (a verifier asks this of every entry).
pub fn is_canonical_json(event: &Event, bytes: &[u8]) -> bool {
    thread_local! {
        static OUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    OUT.with_borrow_mut(|out| {
        out.clear();
        write_canonical_json(event, out);
        out.as_slice() == bytes
    })
}

/// Appends the canonical JSON of `event` to `out`.
fn write_canonical_json(event: &Event, out: &mut Vec<u8>) {
    let mut obj = Object::open(out);
    if let Some(a) = &event.account {
        obj.key("account");
        let mut acc = Object::open(obj.out);
        acc.string("app_id", &a.app_id);
        acc.string("uin", &a.uin);
        acc.close();
    }
    if let Some(c) = &event.category {
        obj.string("category", c);
    }
    obj.string("event_id", &event.event_id);
    obj.key("event_time");
    // Written in place (RFC 3339 in UTC needs no escape): no string per
    // event.
    obj.out.push(b'"');
    // Writing to a Vec cannot fail.
    let _ = write!(obj.out, "{}", event.event_time);
    obj.out.push(b'"');
    if let Some(i) = &event.item_id {
        obj.string("item_id", i);
    }
    obj.key("kind");
    write_kind(&event.kind, obj.out);
    if let Some(r) = &event.region {
        obj.string("region", r);
    }
    obj.key("schema_version");
    let _ = write!(obj.out, "{}", event.schema_version);
    obj.close();
}

fn write_kind(kind: &Kind, out: &mut Vec<u8>) {
    let mut k = Object::open(out);
    match kind {
        Kind::Collected(c) => {
            k.bool("below_age_of_consent", c.below_age_of_consent);
            k.string("purpose", &c.purpose);
            k.bool("sensitive", c.sensitive);
        }
        Kind::Stored(s) => k.string("store", &s.store),
        Kind::BackedUp(b) => {
            k.string("backup_id", &b.backup_id);
            k.string("source_store", &b.source_store);
            k.string("store", &b.store);
        }
        Kind::Deleted(d) => {
            if let Some(b) = &d.backup_id {
                k.string("backup_id", b);
            }
            k.string("store", &d.store);
        }
        Kind::HostingServiceTerminated(_) | Kind::ServiceUseEnded(_) => {}
        Kind::DeletionRequested(r) => {
            k.key("categories");
            k.out.push(b'[');
            for (i, c) in r.categories.iter().enumerate() {
                if i > 0 {
                    k.out.push(b',');
                }
                write_string(c, k.out);
            }
            k.out.push(b']');
            k.string("request_id", &r.request_id);
        }
        Kind::LegalHoldPlaced(h) | Kind::LegalHoldReleased(h) => k.string("hold_id", &h.hold_id),
        Kind::PolicyPublished(p) => {
            k.string("policy_hash", &p.policy_hash);
            k.string("policy_version", &p.policy_version);
        }
        Kind::HistoryImported(h) => {
            k.string("chain", &h.chain);
            k.string("declared_by", &h.declared_by);
            k.key("first_seq");
            k.out.extend_from_slice(h.first_seq.to_string().as_bytes());
            k.key("last_seq");
            k.out.extend_from_slice(h.last_seq.to_string().as_bytes());
        }
    }
    k.string("type", kind.type_name());
    k.close();
}

/// A JSON object being written, members in the order given.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    /// A member's name: one of ours, which needs no escape.
    fn key(&mut self, key: &'static str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn string(&mut self, key: &'static str, value: &str) {
        self.key(key);
        write_string(value, self.out);
    }

    fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// The canonical JSON bytes of an event, from serde's view of it with
/// every object's keys sorted: the reference for [`canonical_json`].
pub fn canonical_json_generic(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Serializing our own plain data types cannot fail: every map key is a
    // string and there are no floats. Should that ever change, an empty
    // canonical form makes the entry visibly wrong rather than panicking.
    if let Ok(value) = serde_json::to_value(event) {
        write_value(&value, &mut out);
    }
    out
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    // Runs of bytes that need no escape are copied whole: every byte of a
    // multi-byte UTF-8 character is 0x80 or above.
    let bytes = s.as_bytes();
    // Most strings need no escape at all: one test over the whole string.
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x00..=0x1f => Some(b""),
            _ => None,
        };
        let Some(escape) = escape else {
            continue;
        };
        out.extend_from_slice(&bytes[run..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{:04x}", b).as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Whether any byte of `bytes` needs an escape. A verifier writes every
/// string of every event, so strings are tested a word or a block at a
/// time: 8 to 16 bytes as two overlapping words, longer ones in blocks of
/// 16 (the last one overlapping) without an early exit inside a block, so
/// that the compiler can test a block in a few vector instructions.
fn needs_escape(bytes: &[u8]) -> bool {
    let escaped = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let block_escaped = |block: &[u8]| block.iter().fold(false, |any, &b| any | escaped(b));
    let n = bytes.len();
    if n < 8 {
        return bytes.iter().any(|&b| escaped(b));
    }
    if n <= 16 {
        return word_needs_escape(&bytes[..8]) | word_needs_escape(&bytes[n - 8..]);
    }
    bytes.chunks_exact(16).any(block_escaped) || block_escaped(&bytes[n - 16..])
}

/// Whether any of 8 bytes needs an escape, with the word tests of "Bit
/// Twiddling Hacks" (has a byte less than n; has a zero byte), which are
/// exact as a yes or no.
fn word_needs_escape(eight: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut word = [0u8; 8];
    word.copy_from_slice(eight);
    let w = u64::from_le_bytes(word);
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
    below_space | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\')))
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(item, out);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_event;

    #[test]
    fn canonical_form_is_sorted_and_compact() {
        let raw =
            br#"{ "schema_version": 1, "event_id": "e1", "event_time": "2026-01-05T18:00:00+08:00",
            "account": {"uin": "7", "app_id": "1"}, "item_id": "i1", "category": "asset_management",
            "kind": {"type": "stored", "store": "mongodb"} }"#;
        let event = decode_event(raw).unwrap();
        let canonical = String::from_utf8(canonical_json(&event)).unwrap();
        assert_eq!(
            canonical,
            r#"{"account":{"app_id":"1","uin":"7"},"category":"asset_management","event_id":"e1","event_time":"2026-01-05T10:00:00Z","item_id":"i1","kind":{"store":"mongodb","type":"stored"},"schema_version":1}"#
        );
    }

    proptest::proptest! {
        /// The block-wise test finds exactly the bytes the plain one does,
        /// wherever they sit relative to a block.
        #[test]
        fn the_block_wise_escape_test_is_the_plain_one(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    16 => 0x20u8..=0x7e,
                    1 => proptest::prelude::any::<u8>(),
                    // Each side of every edge the word tests have.
                    1 => proptest::sample::select(
                        &[0x00u8, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff][..]
                    ),
                ],
                0..80,
            )
        ) {
            let plain = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(needs_escape(&bytes), plain);
        }
    }

    #[test]
    fn strings_escape_only_what_rfc8785_escapes() {
        let mut out = Vec::new();
        write_string("a\"b\\c\u{1}\u{7f}é/\n", &mut out);
        assert_eq!(out, "\"a\\\"b\\\\c\\u0001\u{7f}é/\\n\"".as_bytes());
    }
}
