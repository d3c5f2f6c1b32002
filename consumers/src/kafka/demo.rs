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

/// About `target` events (plus garbage and resends), over many accounts.
pub fn synthetic_stream(target: usize, seed: u64) -> DemoStream {
    let mut rng = Rng(seed | 1);
    let mut timed: Vec<(i64, String, Vec<u8>)> = Vec::with_capacity(target + target / 50);
    let mut out = DemoStream::default();
    let mut n = 0u64;
    let mut account = 0u64;
    while (out.events as usize) < target {
        account += 1;
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
            let _ = write!(e, r#""event_id":"demo-{n:09}","event_time":"{}","#, time(t));
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
        out.events = n;
    }
    timed.sort_by_key(|(t, _, _)| *t);
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
}
