//! A synthetic lifecycle stream for the demo: every category and store,
//! backups, terminations, deletion requests, holds, a few policy
//! violations, some garbage and some resends. Deterministic for a seed.

use std::fmt::Write as _;

/// Messages to produce: (key, payload), in event-time order.
#[derive(Debug, Clone, Default)]
pub struct DemoStream {
    pub messages: Vec<(String, Vec<u8>)>,
    /// Valid, distinct events.
    pub events: u64,
    /// Messages that are not valid events.
    pub garbage: u64,
    /// Exact resends of an earlier message.
    pub resends: u64,
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

const RULE_A: &[&str] = &[
    "asset_management",
    "container_security",
    "business_operation",
    "asset_basic",
];
const RULE_B: &[&str] = &["product_configuration", "version_management"];
const REGIONS: &[&str] = &["SG", "DE", "US", "JP", "BR", "IN", "FR", "GB"];
const DAY: i64 = 86_400;
const START: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// An event with its time and key, before the stream is put in order.
type Timed = (i64, String, Vec<u8>);

/// About `target` events (plus garbage and resends), over many accounts.
///
/// Made in two halves side by side (odd and even accounts): each account
/// draws from a generator seeded by the seed and its number, so the
/// stream depends on the seed alone, not on which thread made what.
pub fn synthetic_stream(target: usize, seed: u64) -> DemoStream {
    let first = target.div_ceil(2);
    let (odd, even) = lifeledger_ledger::side_by_side::side_by_side(
        || accounts(seed, 0, first),
        || accounts(seed, 1, target - first),
    );
    let timed = in_time_order(odd.0, even.0);
    let mut out = DemoStream {
        messages: Vec::with_capacity(timed.len() + timed.len() / 50),
        events: odd.1 + even.1,
        ..DemoStream::default()
    };
    let mut rng = Rng(mix(seed, 0));
    for (_, key, payload) in timed {
        if rng.chance(5) {
            out.messages.push((key.clone(), b"{\"not json".to_vec()));
            out.garbage += 1;
        }
        if rng.chance(2) {
            let broken = String::from_utf8_lossy(&payload).replace(
                "\"schema_version\":1",
                "\"schema_version\":1,\"colour\":\"red\"",
            );
            out.messages.push((key.clone(), broken.into_bytes()));
            out.garbage += 1;
        }
        if rng.chance(10) {
            out.messages.push((key.clone(), payload.clone()));
            out.resends += 1;
        }
        out.messages.push((key, payload));
    }
    out
}

/// The events of every second account (`half` 0: accounts 1, 3, 5, …;
/// 1: accounts 2, 4, 6, …) until there are at least `target`, in time
/// order; and how many.
fn accounts(seed: u64, half: u64, target: usize) -> (Vec<Timed>, u64) {
    let mut timed: Vec<Timed> = Vec::with_capacity(target + target / 8);
    let mut n = 0u64;
    let mut account = half + 1;
    while (n as usize) < target {
        let mut rng = Rng(mix(seed, account));
        let app_id = format!("{}", 1_250_000_000 + account);
        let uin = format!("{}", 100_000_000_000 + account);
        let key = format!("{app_id}/{uin}");
        let region = if rng.chance(5) {
            "RU"
        } else {
            REGIONS[rng.below(REGIONS.len() as u64) as usize]
        };
        let t0 = START + rng.below(150) as i64 * DAY + rng.below(DAY as u64) as i64;
        // Written straight out, members in serde_json's order (by name,
        // no spaces): building each event as a `serde_json::Value` first
        // was most of the time it took to make a million. Every name and
        // value here is plain ASCII with nothing to escape.
        let mut push = |timed: &mut Vec<(i64, String, Vec<u8>)>,
                        t: i64,
                        item: Option<(&str, &str)>,
                        region: Option<&str>,
                        kind: &str| {
            n += 1;
            let mut e = String::with_capacity(320);
            let _ = write!(e, r#"{{"account":{{"app_id":"{app_id}","uin":"{uin}"}},"#);
            if let Some((_, category)) = item {
                let _ = write!(e, r#""category":"{category}","#);
            }
            let _ = write!(
                e,
                r#""event_id":"demo-{half}-{n:09}","event_time":"{}","#,
                time(t)
            );
            if let Some((id, _)) = item {
                let _ = write!(e, r#""item_id":"{id}","#);
            }
            let _ = write!(e, r#""kind":{kind},"#);
            if let Some(r) = region {
                let _ = write!(e, r#""region":"{r}","#);
            }
            e.push_str(r#""schema_version":1}"#);
            timed.push((t, key.clone(), e.into_bytes()));
        };
        let terminated = rng
            .chance(300)
            .then(|| t0 + (60 + rng.below(140) as i64) * DAY);
        let service_ended = rng
            .chance(100)
            .then(|| t0 + (30 + rng.below(200) as i64) * DAY);
        let requested = rng
            .chance(200)
            .then(|| t0 + (20 + rng.below(150) as i64) * DAY);
        if let Some(t) = terminated {
            push(
                &mut timed,
                t,
                None,
                None,
                r#"{"type":"hosting_service_terminated"}"#,
            );
        }
        if let Some(t) = service_ended {
            push(&mut timed, t, None, None, r#"{"type":"service_use_ended"}"#);
        }
        if let Some(t) = requested {
            push(
                &mut timed,
                t,
                None,
                None,
                &format!(
                    r#"{{"categories":["console_configuration"],"request_id":"dsr-{account}","type":"deletion_requested"}}"#
                ),
            );
        }
        if rng.chance(10) {
            let t = t0 + 10 * DAY;
            push(
                &mut timed,
                t,
                None,
                None,
                &format!(r#"{{"hold_id":"hold-{account}","type":"legal_hold_placed"}}"#),
            );
            push(
                &mut timed,
                t + 90 * DAY,
                None,
                None,
                &format!(r#"{{"hold_id":"hold-{account}","type":"legal_hold_released"}}"#),
            );
        }
        let categories: Vec<&str> = RULE_A
            .iter()
            .chain(RULE_B)
            .chain(["console_configuration"].iter())
            .copied()
            .collect();
        for (ci, category) in categories.iter().enumerate() {
            let item = format!("a{account}-c{ci}");
            let tc = t0 + rng.below(DAY as u64) as i64;
            let store = if rng.chance(500) { "mongodb" } else { "mysql" };
            let sensitive = rng.chance(2);
            push(
                &mut timed,
                tc,
                Some((&item, category)),
                Some(region),
                &format!(
                    r#"{{"purpose":"container security service operation","sensitive":{sensitive},"type":"collected"}}"#
                ),
            );
            push(
                &mut timed,
                tc + 5,
                Some((&item, category)),
                None,
                &format!(r#"{{"store":"{store}","type":"stored"}}"#),
            );
            let mut copies = vec![(store.to_owned(), None::<String>)];
            let backup = RULE_A.contains(category) && rng.chance(700)
                || RULE_B.contains(category) && rng.chance(3);
            if backup {
                let id = format!("bk-{account}-{ci}");
                push(
                    &mut timed,
                    tc + DAY,
                    Some((&item, category)),
                    None,
                    &format!(
                        r#"{{"backup_id":"{id}","source_store":"{store}","store":"cos","type":"backed_up"}}"#
                    ),
                );
                copies.push(("cos".into(), Some(id)));
            }
            // When the copies go: around the deadline, mostly on time.
            let deadline = if RULE_A.contains(category) {
                terminated.map(|t| (t + 30 * DAY).max(tc + 180 * DAY))
            } else if RULE_B.contains(category) {
                Some(tc + 180 * DAY)
            } else {
                match (requested, service_ended) {
                    (Some(r), Some(e)) => Some((r + 42 * DAY).min(e + 30 * DAY)),
                    (Some(r), None) => Some(r + 42 * DAY),
                    (None, Some(e)) => Some(e + 30 * DAY),
                    (None, None) => None,
                }
            };
            if let Some(deadline) = deadline {
                if !rng.chance(80) {
                    let late = rng.chance(50);
                    for (store, backup) in &copies {
                        let t = if late {
                            deadline + (1 + rng.below(20) as i64) * DAY
                        } else {
                            deadline - rng.below(5 * DAY as u64) as i64 - 1
                        };
                        let t = t.max(tc + 180 * DAY * i64::from(!category.starts_with("console")));
                        let kind = match backup {
                            Some(b) => format!(
                                r#"{{"backup_id":"{b}","store":"{store}","type":"deleted"}}"#
                            ),
                            None => format!(r#"{{"store":"{store}","type":"deleted"}}"#),
                        };
                        push(&mut timed, t, Some((&item, category)), None, &kind);
                    }
                }
            }
        }
        account += 2;
    }
    timed.sort_by_key(|(t, _, _)| *t);
    (timed, n)
}

/// Two streams in time order merged into one (the first's first on a tie).
fn in_time_order(a: Vec<Timed>, b: Vec<Timed>) -> Vec<Timed> {
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.0 <= y.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return merged,
        };
        merged.extend(if take_a { a.next() } else { b.next() });
    }
}

/// A generator's start from the seed and a number (splitmix64), never
/// zero (xorshift stays at zero).
fn mix(seed: u64, number: u64) -> u64 {
    let mut z = seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each event is written as serde_json writes a value (members by
    /// name, no spaces), and the stream holds what it says it holds.
    #[test]
    fn events_are_written_as_serde_json_writes_them() {
        let stream = synthetic_stream(3_000, 7);
        let mut valid = 0u64;
        let mut distinct = std::collections::BTreeSet::new();
        for (_, payload) in &stream.messages {
            if lifeledger_schemas::decode_event(payload).is_err() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(value.to_string().as_bytes(), &payload[..]);
            valid += 1;
            distinct.insert(payload.clone());
        }
        assert_eq!(distinct.len() as u64, stream.events);
        assert_eq!(valid, stream.events + stream.resends);
        assert_eq!(
            stream.messages.len() as u64,
            stream.events + stream.garbage + stream.resends
        );
    }

    /// Made in two halves on two threads, the stream is still the seed's
    /// alone, and in event-time order.
    #[test]
    fn the_stream_is_the_seeds_and_in_time_order() {
        let a = synthetic_stream(4_000, 11);
        let b = synthetic_stream(4_000, 11);
        assert_eq!(a.messages, b.messages);
        assert!(a.events >= 4_000);
        assert_ne!(a.messages, synthetic_stream(4_000, 12).messages);
        let times: Vec<jiff::Timestamp> = a
            .messages
            .iter()
            .filter_map(|(_, p)| lifeledger_schemas::decode_event(p).ok())
            .map(|e| e.event_time)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(synthetic_stream(0, 11).messages.len(), 0);
    }
}
