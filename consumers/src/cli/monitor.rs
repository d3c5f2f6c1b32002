//! `lifeledger monitor`: the deadline monitor on its own, for a ledger no
//! consumer is monitoring (for example one fed by files). Each pass opens
//! the ledger, catches the projection up, looks at every item, delivers
//! the alerts once, and closes the ledger again so that others can write
//! between passes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use lifeledger::monitor::{
    AlertOut, Clock, JsonLinesOut, ManualClock, MonitorGauges, MonitorRunner, MonitorSettings,
    SystemClock,
};
use lifeledger_ledger::monitor::Alert;
use lifeledger_ledger::projection::replay::parse_moment;

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    /// Produce alerts to this Kafka topic.
    #[cfg(feature = "kafka")]
    #[arg(
        long,
        env = "LIFELEDGER_ALERTS_TOPIC",
        required_unless_present = "alerts_file"
    )]
    pub alerts_topic: Option<String>,
    /// Kafka bootstrap servers (with --alerts-topic).
    #[cfg(feature = "kafka")]
    #[arg(long, env = "LIFELEDGER_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Append alerts to this JSON Lines file instead.
    #[arg(long)]
    pub alerts_file: Option<PathBuf>,
    /// Deadlines at most this many days away make an item due soon.
    #[arg(long, default_value_t = 7)]
    pub horizon_days: u32,
    /// Judge as if it were this moment (default: the system clock).
    #[arg(long, value_parser = parse_moment)]
    pub now: Option<Timestamp>,
    /// Make one pass and exit (default: a pass every --interval-secs).
    #[arg(long)]
    pub once: bool,
    #[arg(long, default_value_t = 60)]
    pub interval_secs: u64,
    /// Print the alerts sent as JSON lines.
    #[arg(long)]
    pub json: bool,
}

fn destination(args: &MonitorArgs) -> anyhow::Result<Box<dyn AlertOut>> {
    if let Some(file) = &args.alerts_file {
        return Ok(Box::new(JsonLinesOut { path: file.clone() }));
    }
    #[cfg(feature = "kafka")]
    if let Some(topic) = &args.alerts_topic {
        let mut client = rdkafka::ClientConfig::new();
        client.set("bootstrap.servers", &args.brokers);
        return Ok(Box::new(lifeledger::kafka::alerts::KafkaAlertOut::new(
            &client, topic,
        )?));
    }
    bail!("give --alerts-file FILE or --alerts-topic TOPIC")
}

fn describe(a: &Alert) -> String {
    format!(
        "{:<16} {:<22} {:<8} -> {:<8} verdict {:<15} deadline {} rule {} copies [{}] cause {}{}",
        a.alert_id,
        a.category.as_deref().unwrap_or("-"),
        a.previous_state.name(),
        a.state.name(),
        a.verdict,
        a.deadline.map_or_else(|| "-".into(), |d| d.to_string()),
        a.rule.as_deref().unwrap_or("-"),
        a.copies_remaining.join(", "),
        a.cause.by,
        match (&a.cause.chain, a.cause.seq) {
            (Some(c), Some(s)) => format!(" (last entry {c}@{s})"),
            _ => String::new(),
        }
    )
}

/// One pass: open, catch up, look, deliver, close.
fn pass(
    dir: &Path,
    args: &MonitorArgs,
    clock: &dyn Clock,
) -> anyhow::Result<(Vec<Alert>, (u64, u64))> {
    let mut ledger = super::open_existing_for_append(dir)?;
    let mut projection = ledger.open_or_rebuild_projection(&mut |_| {})?;
    ledger.catch_up(&mut projection, &mut |_| {})?;
    let settings = MonitorSettings {
        horizon: SignedDuration::from_hours(24 * i64::from(args.horizon_days)),
        keep_sent: true,
    };
    let now = clock.now();
    let gauges = std::sync::Arc::new(MonitorGauges::default());
    // Starting the runner delivers any interrupted send and looks at
    // what changed since the last pass (every item, the first time or
    // under a new policy).
    let runner = MonitorRunner::start(
        &mut ledger,
        &mut projection,
        settings,
        Box::new(ManualClock::new(now)),
        destination(args)?,
        std::sync::Arc::clone(&gauges),
    )
    .context("running the deadline monitor")?;
    let (due_soon, overdue, _) = runner.gauges().snapshot();
    Ok((runner.last_sent().to_vec(), (due_soon, overdue)))
}

pub fn run(dir: &Path, args: MonitorArgs) -> anyhow::Result<Outcome> {
    let system = SystemClock;
    loop {
        let clock: Box<dyn Clock> = match args.now {
            Some(t) => Box::new(ManualClock::new(t)),
            None => Box::new(system),
        };
        let (alerts, (due_soon, overdue)) = pass(dir, &args, clock.as_ref())?;
        for a in &alerts {
            if args.json {
                out!("{}", serde_json::to_string(a)?);
            } else {
                out!("{}", describe(a));
            }
        }
        if !args.json {
            out!(
                "as of {}: {} alerts sent; {due_soon} items due soon (within {} days), {overdue} overdue",
                clock.now(),
                alerts.len(),
                args.horizon_days
            );
        }
        if args.once {
            return Ok(Outcome::Ok);
        }
        std::thread::sleep(Duration::from_secs(args.interval_secs.max(1)));
    }
}
