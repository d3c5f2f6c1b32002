//! Running the deadline monitor beside the ledger: its clock, where its
//! alerts go, its gauges, and the once-per-change delivery.
//!
//! Each tick: look at what changed (`ledger::monitor::Monitor`), save the
//! new states and their alerts in one durable write (the outbox), mark
//! where the alerts topic ends, send, and only then empty the outbox. On
//! start, an outbox left by a crash is first checked against what arrived
//! after the marks, so nothing is sent twice and nothing is lost.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Seek, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use lifeledger_ledger::monitor::{Alert, Monitor, WatchCounts, WatchError};
use lifeledger_ledger::policy::Policy;
use lifeledger_ledger::projection::facts::FactsError;
use lifeledger_ledger::projection::{Dirty, Projection};
use lifeledger_ledger::{Judged, Ledger, SavedBook, SavedStates, StoreError};
use thiserror::Error;

/// The monitor's notion of now.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system clock: production.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that shows what it is set to: tests, and `--now`.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn new(at: Timestamp) -> Self {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    pub fn set(&self, at: Timestamp) {
        if let Ok(mut t) = self.0.lock() {
            *t = at;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0.lock().map_or(Timestamp::UNIX_EPOCH, |t| *t)
    }
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MonitorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Facts(#[from] FactsError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("alerts could not be delivered: {0}")]
    Delivery(String),
}

/// Where alerts go. Implementations must be able to say which alerts
/// arrived after a mark, so that a send interrupted by a crash is not
/// repeated.
pub trait AlertOut: Send {
    /// The destination's end, per partition, before a send.
    fn marks(&mut self) -> Result<Vec<(i32, i64)>, MonitorError>;
    /// Ids of the alerts that arrived after `marks`.
    fn delivered_since(&mut self, marks: &[(i32, i64)]) -> Result<HashSet<String>, MonitorError>;
    /// Sends alerts in order and returns once each is acknowledged.
    fn send(&mut self, alerts: &[Alert]) -> Result<(), MonitorError>;
}

/// Alerts appended to a JSON Lines file (one alert per line).
#[derive(Debug)]
pub struct JsonLinesOut {
    pub path: PathBuf,
}

impl AlertOut for JsonLinesOut {
    fn marks(&mut self) -> Result<Vec<(i32, i64)>, MonitorError> {
        let len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        Ok(vec![(0, len as i64)])
    }

    fn delivered_since(&mut self, marks: &[(i32, i64)]) -> Result<HashSet<String>, MonitorError> {
        let io =
            |e: std::io::Error| MonitorError::Delivery(format!("{}: {e}", self.path.display()));
        let mut ids = HashSet::new();
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Ok(ids);
        };
        let from = marks.first().map_or(0, |m| m.1.max(0) as u64);
        file.seek(std::io::SeekFrom::Start(from)).map_err(io)?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(io)?;
            // A torn last line (a crash mid-write) did not arrive.
            if let Ok(alert) = serde_json::from_str::<Alert>(&line) {
                ids.insert(alert.alert_id);
            }
        }
        Ok(ids)
    }

    fn send(&mut self, alerts: &[Alert]) -> Result<(), MonitorError> {
        let io =
            |e: std::io::Error| MonitorError::Delivery(format!("{}: {e}", self.path.display()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        let mut buf = Vec::new();
        for alert in alerts {
            serde_json::to_writer(&mut buf, alert)
                .map_err(|e| MonitorError::Delivery(e.to_string()))?;
            buf.push(b'\n');
        }
        file.write_all(&buf).map_err(io)?;
        file.sync_data().map_err(io)
    }
}

/// The monitor's gauges, rendered in the Prometheus text format.
#[derive(Debug, Default)]
pub struct MonitorGauges {
    inner: Mutex<GaugeValues>,
}

#[derive(Debug, Default, Clone)]
struct GaugeValues {
    by_status: BTreeMap<String, u64>,
    counts: WatchCounts,
    now: Option<Timestamp>,
    alerts: u64,
}

impl MonitorGauges {
    fn update(&self, f: impl FnOnce(&mut GaugeValues)) {
        if let Ok(mut g) = self.inner.lock() {
            f(&mut g);
        }
    }

    /// (due soon, overdue, alerts sent).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        self.inner.lock().map_or((0, 0, 0), |g| {
            (g.counts.due_soon, g.counts.overdue, g.alerts)
        })
    }

    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let Ok(g) = self.inner.lock().map(|g| g.clone()) else {
            return String::new();
        };
        let mut out = String::new();
        let name = "lifeledger_items";
        let _ = writeln!(
            out,
            "# HELP {name} Items per verdict, as last judged by the monitor.\n# TYPE {name} gauge"
        );
        for (status, n) in &g.by_status {
            let _ = writeln!(out, "{name}{{verdict=\"{status}\"}} {n}");
        }
        for (name, help, v) in [
            (
                "lifeledger_items_due_soon",
                "Items whose deletion deadline falls within the horizon.",
                g.counts.due_soon,
            ),
            (
                "lifeledger_items_overdue",
                "Items past their deadline with copies remaining.",
                g.counts.overdue,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let age = match (g.counts.oldest_overdue_deadline, g.now) {
            (Some(d), Some(now)) => now.duration_since(d).as_secs().max(0),
            _ => 0,
        };
        let name = "lifeledger_oldest_overdue_age_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How long ago the earliest missed deadline passed (0: none).\n# TYPE {name} gauge\n{name} {age}"
        );
        let name = "lifeledger_alerts_total";
        let _ = writeln!(
            out,
            "# HELP {name} Alerts delivered (one per change of an item's watch state).\n# TYPE {name} counter\n{name} {}",
            g.alerts
        );
        out
    }
}

/// Settings of a running monitor.
#[derive(Debug, Clone, Copy)]
pub struct MonitorSettings {
    pub horizon: SignedDuration,
    /// Whether a tick returns (and [`MonitorRunner::last_sent`] keeps) the
    /// alerts it sent: a one-shot `monitor` prints them; a long-running
    /// consumer only counts them, since a first sweep of a large ledger
    /// can send millions.
    pub keep_sent: bool,
}

/// Items judged per page of a sweep, and wakeups per page of a tick.
const SWEEP_PAGE_ITEMS: usize = 10_000;

/// On start, the most entries folded since the monitor last judged whose
/// items it looks at, instead of sweeping every item: their ids are held
/// in memory, a sweep's are not.
const CATCH_UP_ENTRIES: u64 = 1_000_000;

/// The monitor, its policy, clock and destination.
pub struct MonitorRunner {
    monitor: Monitor<SavedBook>,
    policy: Option<(String, Policy)>,
    /// The policy (hash) the book's states were last judged under in a
    /// full sweep, from which only what changed needs a look; `None`: the
    /// next tick sweeps.
    judged_policy: Option<String>,
    /// Items and accounts to look at on the next tick: what the folds
    /// touched, and on start what entries folded since the monitor last
    /// judged touched; emptied when a tick succeeds, so that a failed
    /// tick's items are looked at again.
    pending: Dirty,
    clock: Box<dyn Clock>,
    out: Box<dyn AlertOut>,
    gauges: Arc<MonitorGauges>,
    settings: MonitorSettings,
    /// The alerts the last tick (or the start) sent, if they are kept
    /// ([`MonitorSettings::keep_sent`]).
    last_sent: Vec<Alert>,
}

impl std::fmt::Debug for MonitorRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorRunner")
            .field("policy", &self.policy.as_ref().map(|p| p.0.clone()))
            .field("horizon", &self.settings.horizon)
            .finish_non_exhaustive()
    }
}

impl MonitorRunner {
    /// Opens the saved book, finishes any interrupted delivery, and looks
    /// at what changed since the monitor last judged: the items entries
    /// folded since then touched and the wakeups that came, when the
    /// book was judged under the same policy and horizon; every item
    /// otherwise.
    pub fn start(
        ledger: &mut Ledger,
        projection: &mut Projection,
        settings: MonitorSettings,
        clock: Box<dyn Clock>,
        out: Box<dyn AlertOut>,
        gauges: Arc<MonitorGauges>,
    ) -> Result<Self, MonitorError> {
        // From here on each tick looks at what the folds touched; the
        // first tick also looks at what entries folded since the last
        // judgement touched, or sweeps every item if that is not known.
        projection.track_touched();
        let book = ledger.monitor_book()?;
        let (judged_policy, pending) = match book.judged() {
            Some(j) if j.horizon_seconds == settings.horizon.as_secs() && clock.now() >= j.at => {
                match ledger.touched_between(&j.covered, &projection.covered, CATCH_UP_ENTRIES)? {
                    Some(touched) => (Some(j.policy.clone()), touched),
                    None => (None, Dirty::default()),
                }
            }
            _ => (None, Dirty::default()),
        };
        let mut runner = MonitorRunner {
            monitor: Monitor::new(settings.horizon, book),
            policy: None,
            judged_policy,
            pending,
            clock,
            out,
            gauges,
            settings,
            last_sent: Vec::new(),
        };
        let mut sent = runner.deliver()?;
        sent.extend(runner.tick_beside(ledger, projection)?);
        runner.last_sent = sent;
        Ok(runner)
    }

    /// Makes the next tick look at every item, and a restart too (a
    /// chain's history was replaced, so what was judged through it is
    /// no longer known).
    pub fn sweep_next(&mut self) -> Result<(), StoreError> {
        self.judged_policy = None;
        self.monitor.book_mut().forget_judged()
    }

    pub fn gauges(&self) -> &Arc<MonitorGauges> {
        &self.gauges
    }

    /// What the start, or the last tick, sent.
    pub fn last_sent(&self) -> &[Alert] {
        &self.last_sent
    }

    /// [`MonitorRunner::tick`] on the projection a ledger keeps, beside
    /// its saved states, with what its folds touched since the last tick.
    pub fn tick_beside(
        &mut self,
        ledger: &Ledger,
        projection: &mut Projection,
    ) -> Result<Vec<Alert>, MonitorError> {
        let states = ledger.projection_store()?.saved_states();
        let touched = projection.take_touched();
        self.tick(&states, projection, touched)
    }

    /// Looks at what changed since the last tick (`touched`: what the
    /// folds since then touched, taken from the projection), saves and
    /// sends the alerts. Reads the facts from `states` and `projection`
    /// together (see [`SavedStates::facts`]). Returns the alerts sent.
    pub fn tick(
        &mut self,
        states: &SavedStates,
        projection: &Projection,
        touched: Dirty,
    ) -> Result<Vec<Alert>, MonitorError> {
        let now = self.clock.now();
        let latest = projection.policies.last().map(|p| p.hash.clone());
        let policy_changed = latest != self.policy.as_ref().map(|p| p.0.clone());
        if policy_changed {
            self.policy = states
                .published_policy(&projection.policies)?
                .map(|(p, policy)| (p.hash, policy));
            if self.policy.is_none() {
                tracing::warn!("deadline monitor: no retention policy published yet; waiting");
            }
        }
        let Some((hash, policy)) = self.policy.take() else {
            return Ok(Vec::new());
        };
        let sweep = self.judged_policy.as_deref() != Some(hash.as_str());
        let result = self.judge_and_send(states, projection, touched, (&hash, &policy), sweep, now);
        self.policy = Some((hash, policy));
        if let Ok(sent) = &result {
            self.last_sent = sent.clone();
        }
        result
    }

    fn judge_and_send(
        &mut self,
        states: &SavedStates,
        projection: &Projection,
        touched: Dirty,
        (hash, policy): (&str, &Policy),
        sweep: bool,
        now: Timestamp,
    ) -> Result<Vec<Alert>, MonitorError> {
        merge(&mut self.pending, touched);
        let judged = Judged {
            policy: hash.to_owned(),
            horizon_seconds: self.settings.horizon.as_secs(),
            at: now,
            covered: projection.covered.clone(),
        };
        let mut sent = Vec::new();
        let mut sent_count = 0;
        if sweep {
            // Page by page, each page's alerts saved and sent before the
            // next is judged: a sweep of millions of items holds one
            // page of alerts, not all of them.
            self.pending = Dirty::default();
            let mut from = Some(String::new());
            while let Some(at) = from {
                let facts = states.facts(projection);
                let (alerts, next) =
                    self.monitor
                        .sweep_page(&facts, policy, now, &at, SWEEP_PAGE_ITEMS)?;
                drop(facts);
                from = next;
                let done = from.is_none().then_some(&judged);
                let page_sent = self.save_and_deliver(&alerts, done)?;
                sent_count += page_sent.len();
                self.keep_sent(&mut sent, page_sent);
            }
            self.judged_policy = Some(hash.to_owned());
        } else {
            let touched = std::mem::take(&mut self.pending);
            match self.look_at_changes(states, projection, policy, &touched, now, &judged) {
                Ok((count, kept)) => {
                    sent_count += count;
                    sent = kept;
                }
                Err(e) => {
                    // Looked at again on the next tick (a look repeats
                    // no alert).
                    merge(&mut self.pending, touched);
                    return Err(e);
                }
            }
        }
        // Items per verdict as the monitor last judged them: kept as it
        // looks, so the gauge costs no pass over every item.
        let by_status = self.monitor.by_status()?.by_name();
        let counts = self.monitor.counts()?;
        self.gauges.update(|g| {
            g.by_status = by_status;
            g.counts = counts;
            g.now = Some(now);
            g.alerts += sent_count as u64;
        });
        Ok(sent)
    }

    /// Looks at what entries touched, then at the wakeups that came, in
    /// pages, each saved and sent before the next; returns how many
    /// alerts were sent, and those kept.
    fn look_at_changes(
        &mut self,
        states: &SavedStates,
        projection: &Projection,
        policy: &Policy,
        touched: &Dirty,
        now: Timestamp,
        judged: &Judged,
    ) -> Result<(usize, Vec<Alert>), MonitorError> {
        let mut sent = Vec::new();
        let mut sent_count = 0;
        let mut touched = Some(touched);
        loop {
            let facts = states.facts(projection);
            let mut alerts = match touched.take() {
                Some(t) => self.monitor.look_at_touched(&facts, policy, t, now)?,
                None => Vec::new(),
            };
            let (due, more) = self
                .monitor
                .look_at_due(&facts, policy, now, SWEEP_PAGE_ITEMS)?;
            drop(facts);
            alerts.extend(due);
            let done = (!more).then_some(judged);
            let page_sent = self.save_and_deliver(&alerts, done)?;
            sent_count += page_sent.len();
            self.keep_sent(&mut sent, page_sent);
            if !more {
                return Ok((sent_count, sent));
            }
        }
    }

    /// Saves the states a look changed with the alerts it produced, then
    /// sends what the outbox holds; returns what was sent.
    fn save_and_deliver(
        &mut self,
        alerts: &[Alert],
        judged: Option<&Judged>,
    ) -> Result<Vec<Alert>, MonitorError> {
        self.monitor.book_mut().save(alerts, judged)?;
        self.deliver()
    }

    fn keep_sent(&self, kept: &mut Vec<Alert>, sent: Vec<Alert>) {
        if self.settings.keep_sent {
            kept.extend(sent);
        }
    }

    /// Sends what the outbox holds; returns what was sent now.
    fn deliver(&mut self) -> Result<Vec<Alert>, MonitorError> {
        let saved = self.monitor.book().outbox()?;
        let mut outbox = saved.alerts;
        if outbox.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(marks) = saved.marks {
            // A send began before a crash: drop what already arrived.
            let arrived = self.out.delivered_since(&marks)?;
            if !arrived.is_empty() {
                let places: Vec<u64> = outbox
                    .iter()
                    .filter(|(_, a)| arrived.contains(&a.alert_id))
                    .map(|(p, _)| *p)
                    .collect();
                tracing::info!(
                    "deadline monitor: {} alerts from before a restart had arrived; not sending them again",
                    places.len()
                );
                self.monitor.book_mut().clear_alerts(&places)?;
                outbox.retain(|(_, a)| !arrived.contains(&a.alert_id));
            }
            if outbox.is_empty() {
                return Ok(Vec::new());
            }
        }
        let marks = self.out.marks()?;
        self.monitor.book_mut().mark_sending(&marks)?;
        let (places, outbox): (Vec<u64>, Vec<Alert>) = outbox.into_iter().unzip();
        self.out.send(&outbox)?;
        self.monitor.book_mut().clear_alerts(&places)?;
        Ok(outbox)
    }
}

/// Adds what `more` touched to `into`.
fn merge(into: &mut Dirty, more: Dirty) {
    if into.items.is_empty() && into.accounts.is_empty() {
        let policies = into.policies;
        *into = more;
        into.policies |= policies;
        return;
    }
    into.items.extend(more.items);
    into.accounts.extend(more.accounts);
    into.new_items.extend(more.new_items);
    into.policies |= more.policies;
}

#[cfg(test)]
mod tests {
    use lifeledger_ledger::monitor::{Cause, Watch};

    use super::*;

    fn alert(id: &str) -> Alert {
        Alert {
            alert_id: id.into(),
            item_id: "i".into(),
            account: None,
            category: None,
            state: Watch::Overdue,
            previous_state: Watch::DueSoon,
            verdict: "overdue".into(),
            copies_remaining: vec!["mysql".into()],
            deadline: None,
            rule: None,
            clause: None,
            policy_version: "p".into(),
            cause: Cause {
                by: "clock".into(),
                chain: None,
                seq: None,
            },
            observed_at: Timestamp::UNIX_EPOCH,
            findings: vec![],
        }
    }

    #[test]
    fn a_json_lines_file_says_what_arrived_after_a_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = JsonLinesOut {
            path: dir.path().join("alerts.jsonl"),
        };
        assert!(out.delivered_since(&[(0, 0)]).unwrap().is_empty());
        out.send(&[alert("i#1")]).unwrap();
        let mark = out.marks().unwrap();
        out.send(&[alert("i#2"), alert("i#3")]).unwrap();
        // A torn line from a crash mid-write does not count as arrived.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&out.path)
            .unwrap()
            .write_all(b"{\"alert_id\":\"i#4")
            .unwrap();
        let arrived = out.delivered_since(&mark).unwrap();
        assert_eq!(arrived, HashSet::from(["i#2".to_owned(), "i#3".to_owned()]));
    }

    #[test]
    fn gauges_render_counts_and_the_oldest_overdue_age() {
        let g = MonitorGauges::default();
        let now = Timestamp::from_second(1_000_000).unwrap();
        g.update(|v| {
            v.by_status.insert("overdue".into(), 3);
            v.counts = WatchCounts {
                due_soon: 2,
                overdue: 3,
                oldest_overdue_deadline: Some(Timestamp::from_second(1_000_000 - 7_200).unwrap()),
            };
            v.now = Some(now);
            v.alerts = 5;
        });
        let text = g.render();
        assert!(
            text.contains("lifeledger_items{verdict=\"overdue\"} 3"),
            "{text}"
        );
        assert!(text.contains("lifeledger_items_due_soon 2"));
        assert!(text.contains("lifeledger_items_overdue 3"));
        assert!(text.contains("lifeledger_oldest_overdue_age_seconds 7200"));
        assert!(text.contains("lifeledger_alerts_total 5"));
    }
}
