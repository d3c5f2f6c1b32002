//! Events for the store's tests: numbered, from a file, one item each.

use crate::Incoming;
use crate::entry::Source;

/// A valid `stored` event with id `e{i}` about item `item-{i}`.
pub(super) fn event(i: u64) -> Vec<u8> {
    format!(
        r#"{{"schema_version":1,"event_id":"e{i}","event_time":"2026-03-01T10:00:00Z","account":{{"app_id":"1250000001","uin":"100000000001"}},"item_id":"item-{i}","category":"container_security","kind":{{"type":"stored","store":"mongodb"}}}}"#
    )
    .into_bytes()
}

/// `raw` as read from line `i` of a file.
pub(super) fn incoming(i: u64, raw: Vec<u8>) -> Incoming {
    Incoming {
        source: Source::File {
            path: "in.jsonl".into(),
            line: i,
        },
        raw,
    }
}
