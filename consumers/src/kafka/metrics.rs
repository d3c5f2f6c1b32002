//! The consumer's counters and gauges, rendered in the Prometheus text
//! format, and a small HTTP server for `/metrics` and `/health`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bounds (seconds) of the batch latency histogram.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub consumed: AtomicU64,
    pub appended: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicates: AtomicU64,
    /// Messages below a partition's cursor: redeliveries skipped.
    pub redelivered: AtomicU64,
    /// Messages of partitions this member no longer held, dropped.
    pub not_assigned: AtomicU64,
    /// Seeks back because an offset arrived past the expected one, or a
    /// partition stalled short of the broker's high watermark.
    pub rewinds: AtomicU64,
    /// Missing offsets that arrived after reading again.
    pub gaps_healed: AtomicU64,
    /// Offsets the broker does not hold, stepped over after reading again.
    pub offsets_absent: AtomicU64,
    /// Staged batches by the fate of their offset commit.
    pub staged_landed: AtomicU64,
    pub staged_not_landed: AtomicU64,
    pub batches: AtomicU64,
    pub dead_letters: AtomicU64,
    pub dead_letter_failures: AtomicU64,
    pub kafka_errors: AtomicU64,
    /// Unix seconds of the last poll, for `/health`.
    pub last_poll: AtomicU64,
    latency: Mutex<Histogram>,
    /// From the Kafka record's timestamp to the durable write of its entry.
    event_to_durable: Mutex<Histogram>,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    heads: Mutex<BTreeMap<String, u64>>,
    /// Alert deliveries that failed (and are retried).
    pub alert_failures: AtomicU64,
    /// Entries acknowledged locally and not yet in the archive.
    pub archive_lag_entries: AtomicU64,
    /// 1 while the archive lag is past its alert threshold.
    pub archive_lag_alert: AtomicU64,
    pub archive_segments: AtomicU64,
    pub archive_bytes: AtomicU64,
    pub archive_errors: AtomicU64,
    /// From an entry's receipt to its segment's upload.
    archive_latency: Mutex<Histogram>,
    /// Chains found extended by another ledger in the archive.
    pub archive_conflicts: AtomicU64,
    /// Chains taken over from the archive, and those that could not be.
    pub archive_adopted: AtomicU64,
    pub archive_diverged: AtomicU64,
    monitor: Mutex<Option<std::sync::Arc<crate::monitor::MonitorGauges>>>,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    /// The upper bound of the bucket holding quantile `q`.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let wanted = (q * self.count as f64).ceil() as u64;
        LATENCY_BUCKETS
            .iter()
            .zip(self.buckets.iter())
            .find(|(_, n)| **n >= wanted)
            .map(|(b, _)| *b)
            .or(Some(f64::INFINITY))
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", self.buckets[i]);
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            self.count, self.sum, self.count
        );
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn polled(&self) {
        self.last_poll.store(now_secs(), Ordering::Relaxed);
    }

    pub fn observe_batch(&self, latency: Duration) {
        if let Ok(mut h) = self.latency.lock() {
            h.observe(latency.as_secs_f64());
        }
    }

    /// Records, for each entry just made durable, the time since its Kafka
    /// record's timestamp.
    pub fn observe_event_to_durable(&self, latencies: impl Iterator<Item = f64>) {
        if let Ok(mut h) = self.event_to_durable.lock() {
            for secs in latencies {
                h.observe(secs.max(0.0));
            }
        }
    }

    /// The upper bound of the histogram bucket holding quantile `q` of the
    /// batch latencies (seconds), or `None` before any batch.
    pub fn batch_latency_quantile(&self, q: f64) -> Option<f64> {
        self.latency.lock().ok()?.quantile(q)
    }

    /// Entries' receipt-to-archived latencies.
    pub fn observe_archived(&self, latencies: &[f64]) {
        if let Ok(mut h) = self.archive_latency.lock() {
            for secs in latencies {
                h.observe(secs.max(0.0));
            }
        }
    }

    /// The same for receipt-to-archived latencies.
    pub fn archive_latency_quantile(&self, q: f64) -> Option<f64> {
        self.archive_latency.lock().ok()?.quantile(q)
    }

    /// The same for event-to-durable latencies.
    pub fn event_to_durable_quantile(&self, q: f64) -> Option<f64> {
        self.event_to_durable.lock().ok()?.quantile(q)
    }

    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        if let Ok(mut l) = self.lag.lock() {
            l.insert((topic.to_owned(), partition), lag);
        }
    }

    pub fn set_head(&self, chain: &str, entries: u64) {
        if let Ok(mut h) = self.heads.lock() {
            h.insert(chain.to_owned(), entries);
        }
    }

    /// Renders the deadline monitor's gauges with the rest.
    pub fn set_monitor(&self, gauges: std::sync::Arc<crate::monitor::MonitorGauges>) {
        if let Ok(mut m) = self.monitor.lock() {
            *m = Some(gauges);
        }
    }

    /// Whether the consumer polled within `within`.
    pub fn healthy(&self, within: Duration) -> bool {
        now_secs().saturating_sub(self.last_poll.load(Ordering::Relaxed)) <= within.as_secs()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut out,
            "lifeledger_consumed_total",
            "Kafka messages received.",
            &self.consumed,
        );
        counter(
            &mut out,
            "lifeledger_appended_total",
            "Valid events appended to the ledger.",
            &self.appended,
        );
        counter(
            &mut out,
            "lifeledger_rejected_total",
            "Inputs appended as rejected entries.",
            &self.rejected,
        );
        counter(
            &mut out,
            "lifeledger_duplicates_total",
            "Inputs skipped because the ledger held them.",
            &self.duplicates,
        );
        counter(
            &mut out,
            "lifeledger_redelivered_total",
            "Messages below a partition's stored offset, skipped.",
            &self.redelivered,
        );
        counter(
            &mut out,
            "lifeledger_not_assigned_total",
            "Messages of partitions no longer held (fetched before a revocation), dropped.",
            &self.not_assigned,
        );
        counter(
            &mut out,
            "lifeledger_rewinds_total",
            "Seeks back to read a partition again: an offset arrived past the expected one, or the partition stalled short of the high watermark.",
            &self.rewinds,
        );
        counter(
            &mut out,
            "lifeledger_gaps_healed_total",
            "Missing offsets that arrived after reading the partition again.",
            &self.gaps_healed,
        );
        counter(
            &mut out,
            "lifeledger_offsets_absent_total",
            "Offsets the broker holds no record at (compacted, transaction markers, deleted), stepped over after reading again.",
            &self.offsets_absent,
        );
        counter(
            &mut out,
            "lifeledger_staged_landed_total",
            "Staged batches appended because Kafka holds their offset commit.",
            &self.staged_landed,
        );
        counter(
            &mut out,
            "lifeledger_staged_not_landed_total",
            "Staged batches dropped because Kafka never got their offset commit (they are read again).",
            &self.staged_not_landed,
        );
        counter(
            &mut out,
            "lifeledger_batches_total",
            "Durable ledger writes.",
            &self.batches,
        );
        counter(
            &mut out,
            "lifeledger_dead_letters_total",
            "Rejected inputs produced to the dead-letter topic.",
            &self.dead_letters,
        );
        counter(
            &mut out,
            "lifeledger_dead_letter_failures_total",
            "Dead letters that could not be produced.",
            &self.dead_letter_failures,
        );
        counter(
            &mut out,
            "lifeledger_kafka_errors_total",
            "Errors reported by the Kafka client.",
            &self.kafka_errors,
        );
        if let Ok(h) = self.latency.lock() {
            h.render(
                &mut out,
                "lifeledger_batch_latency_seconds",
                "Time from a batch's first input to its durable write.",
            );
        }
        if let Ok(h) = self.event_to_durable.lock() {
            h.render(
                &mut out,
                "lifeledger_event_to_durable_seconds",
                "Time from a Kafka record's timestamp to the durable write of its entry.",
            );
        }
        if let Ok(h) = self.archive_latency.lock() {
            h.render(
                &mut out,
                "lifeledger_archive_latency_seconds",
                "Time from an entry's receipt to the upload of its segment to the archive.",
            );
        }
        if let Ok(lag) = self.lag.lock() {
            let name = "lifeledger_consumer_lag";
            let _ = writeln!(
                out,
                "# HELP {name} Messages behind the partition's high watermark.\n# TYPE {name} gauge"
            );
            for ((topic, partition), v) in lag.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{topic}\",partition=\"{partition}\"}} {v}"
                );
            }
        }
        if let Ok(heads) = self.heads.lock() {
            let name = "lifeledger_chain_entries";
            let _ = writeln!(
                out,
                "# HELP {name} Entries in each chain (its head seq + 1).\n# TYPE {name} gauge"
            );
            for (chain, v) in heads.iter() {
                let _ = writeln!(out, "{name}{{chain=\"{chain}\"}} {v}");
            }
        }
        counter(
            &mut out,
            "lifeledger_alert_failures_total",
            "Alert deliveries that failed and are retried from the outbox.",
            &self.alert_failures,
        );
        let gauge = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        gauge(
            &mut out,
            "lifeledger_archive_lag_entries",
            "Entries acknowledged locally and not yet archived.",
            &self.archive_lag_entries,
        );
        gauge(
            &mut out,
            "lifeledger_archive_lag_alert",
            "1 while the archive lag is past its alert threshold.",
            &self.archive_lag_alert,
        );
        counter(
            &mut out,
            "lifeledger_archive_segments_total",
            "Sealed segments uploaded to the archive.",
            &self.archive_segments,
        );
        counter(
            &mut out,
            "lifeledger_archive_bytes_total",
            "Bytes of sealed segments uploaded to the archive.",
            &self.archive_bytes,
        );
        counter(
            &mut out,
            "lifeledger_archive_errors_total",
            "Archive steps that failed (and are retried).",
            &self.archive_errors,
        );
        counter(
            &mut out,
            "lifeledger_archive_conflicts_total",
            "Chains another ledger extended in the archive first: not archived from there.",
            &self.archive_conflicts,
        );
        counter(
            &mut out,
            "lifeledger_archive_adopted_total",
            "Assigned partitions whose chain was continued from the archive.",
            &self.archive_adopted,
        );
        counter(
            &mut out,
            "lifeledger_archive_diverged_total",
            "Assigned partitions whose local chain differs from the archive's: not read here.",
            &self.archive_diverged,
        );
        if let Ok(Some(gauges)) = self.monitor.lock().map(|m| m.clone()) {
            out.push_str(&gauges.render());
        }
        out
    }
}

/// Serves `/metrics` and `/health` on `addr` from a background thread.
pub fn serve(
    addr: &str,
    metrics: std::sync::Arc<Metrics>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let (status, body, kind) = match request.url() {
                "/metrics" => (200, metrics.render(), "text/plain; version=0.0.4"),
                "/health" if metrics.healthy(Duration::from_secs(30)) => {
                    (200, "ok\n".to_owned(), "text/plain")
                }
                "/health" => (503, "no poll in the last 30 s\n".to_owned(), "text/plain"),
                _ => (404, "not found\n".to_owned(), "text/plain"),
            };
            let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], kind.as_bytes());
            let mut response = tiny_http::Response::from_string(body).with_status_code(status);
            if let Ok(h) = header {
                response = response.with_header(h);
            }
            let _ = request.respond(response);
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn metrics_render_and_serve() {
        let m = std::sync::Arc::new(Metrics::default());
        Metrics::add(&m.appended, 5);
        m.set_lag("t", 0, 7);
        m.set_head("kafka:t:0", 12);
        m.observe_batch(Duration::from_millis(3));
        m.observe_batch(Duration::from_millis(300));
        let text = m.render();
        assert!(text.contains("lifeledger_appended_total 5"), "{text}");
        assert!(
            text.contains("lifeledger_consumer_lag{topic=\"t\",partition=\"0\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("lifeledger_chain_entries{chain=\"kafka:t:0\"} 12"),
            "{text}"
        );
        assert!(
            text.contains("lifeledger_batch_latency_seconds_count 2"),
            "{text}"
        );
        assert_eq!(m.batch_latency_quantile(0.5), Some(0.005));
        assert_eq!(m.batch_latency_quantile(0.99), Some(0.5));

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        serve(&addr, std::sync::Arc::clone(&m)).unwrap();
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        // Never polled: unhealthy.
        assert!(get("/health").starts_with("HTTP/1.0 503") || get("/health").contains(" 503 "));
        m.polled();
        assert!(get("/health").contains(" 200 "));
        assert!(get("/metrics").contains("lifeledger_appended_total 5"));
    }
}
