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

use serde_json::Value;

use crate::v1::Event;

/// The canonical JSON bytes of an event.
pub fn canonical_json(event: &Event) -> Vec<u8> {
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

    #[test]
    fn strings_escape_only_what_rfc8785_escapes() {
        let mut out = Vec::new();
        write_string("a\"b\\c\u{1}\u{7f}é/\n", &mut out);
        assert_eq!(out, "\"a\\\"b\\\\c\\u0001\u{7f}é/\\n\"".as_bytes());
    }
}
