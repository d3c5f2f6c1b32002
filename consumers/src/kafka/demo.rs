//! A synthetic lifecycle stream for the demo: every category and store,
//! backups, terminations, deletion requests, holds, a few policy
//! violations, some garbage and some resends. Deterministic for a seed.

use serde_json::json;

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
        let mut push = |timed: &mut Vec<(i64, String, Vec<u8>)>,
                        t: i64,
                        item: Option<(&str, &str)>,
                        region: Option<&str>,
                        kind: serde_json::Value| {
            n += 1;
            let mut e = json!({
                "schema_version": 1,
                "event_id": format!("demo-{n:09}"),
                "event_time": time(t),
                "account": {"app_id": app_id, "uin": uin},
            });
            if let Some((id, category)) = item {
                e["item_id"] = json!(id);
                e["category"] = json!(category);
            }
            if let Some(r) = region {
                e["region"] = json!(r);
            }
            e["kind"] = kind;
            timed.push((t, key.clone(), e.to_string().into_bytes()));
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
                json!({"type": "hosting_service_terminated"}),
            );
        }
        if let Some(t) = service_ended {
            push(
                &mut timed,
                t,
                None,
                None,
                json!({"type": "service_use_ended"}),
            );
        }
        if let Some(t) = requested {
            push(
                &mut timed,
                t,
                None,
                None,
                json!({"type": "deletion_requested", "request_id": format!("dsr-{account}"), "categories": ["console_configuration"]}),
            );
        }
        if rng.chance(10) {
            let t = t0 + 10 * DAY;
            push(
                &mut timed,
                t,
                None,
                None,
                json!({"type": "legal_hold_placed", "hold_id": format!("hold-{account}")}),
            );
            push(
                &mut timed,
                t + 90 * DAY,
                None,
                None,
                json!({"type": "legal_hold_released", "hold_id": format!("hold-{account}")}),
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
                json!({"type": "collected", "sensitive": sensitive, "purpose": "container security service operation"}),
            );
            push(
                &mut timed,
                tc + 5,
                Some((&item, category)),
                None,
                json!({"type": "stored", "store": store}),
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
                    json!({"type": "backed_up", "store": "cos", "backup_id": id, "source_store": store}),
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
                            Some(b) => json!({"type": "deleted", "store": store, "backup_id": b}),
                            None => json!({"type": "deleted", "store": store}),
                        };
                        push(&mut timed, t, Some((&item, category)), None, kind);
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
