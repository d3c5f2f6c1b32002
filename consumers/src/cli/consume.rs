//! `lifeledger consume`: the long-lived streaming consumer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, anyhow};
use jiff::SignedDuration;
use lifeledger::kafka::alerts::KafkaAlertOut;
use lifeledger::kafka::archiver::{ArchiveRunner, ArchiveSettings};
use lifeledger::kafka::config::ConsumerConfig;
use lifeledger::kafka::consumer::{client_config, run};
use lifeledger::kafka::metrics::{Metrics, serve};
use lifeledger::kafka::sink::Sink;
use lifeledger::monitor::{MonitorSettings, SystemClock};
use lifeledger_ledger::intake::IntakeLimits;
use lifeledger_ledger::{Ledger, LedgerOptions};

use super::Outcome;

/// Settings override the config file; unset ones keep its values.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// A TOML file of settings (see README).
    #[arg(long, env = "LIFELEDGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, host:port[,host:port…].
    #[arg(long, env = "LIFELEDGER_BROKERS")]
    pub brokers: Option<String>,
    #[arg(long, env = "LIFELEDGER_GROUP")]
    pub group: Option<String>,
    /// A topic to consume (repeat for several).
    #[arg(long = "topic", env = "LIFELEDGER_TOPICS", value_delimiter = ',')]
    pub topics: Vec<String>,
    #[arg(long, env = "LIFELEDGER_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    #[arg(long, env = "LIFELEDGER_MAX_LATENCY_MS")]
    pub max_latency_ms: Option<u64>,
    #[arg(long, env = "LIFELEDGER_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Serve /metrics and /health here (host:port).
    #[arg(long, env = "LIFELEDGER_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    #[arg(long, env = "LIFELEDGER_SIGNING_KEY")]
    pub checkpoint_key: Option<PathBuf>,
    /// Stop after this many milliseconds without a message.
    #[arg(long)]
    pub exit_when_idle_ms: Option<u64>,
    /// Run the deadline monitor and produce its alerts to this topic.
    #[arg(long, env = "LIFELEDGER_ALERTS_TOPIC")]
    pub alerts_topic: Option<String>,
    /// Deadlines at most this many days away make an item due soon.
    #[arg(long)]
    pub alert_horizon_days: Option<u32>,
    /// Do not fold batches into the retention projection as they land.
    #[arg(long)]
    pub no_projection: bool,
    /// Backfill mode: declare every append an import of history by this
    /// name (chain `imports`).
    #[arg(long)]
    pub backfill_declared_by: Option<String>,
    /// Copy sealed segments, checkpoints and policy texts to this
    /// write-once archive (s3://BUCKET/PREFIX, file:///PATH or a path).
    #[arg(long, env = "LIFELEDGER_ARCHIVE")]
    pub archive: Option<String>,
    /// Seal open segments this often (seconds), so that the archive lags
    /// by about this much.
    #[arg(long)]
    pub archive_seal_after_secs: Option<u64>,
    /// A librdkafka setting, KEY=VALUE (repeatable).
    #[arg(long = "set", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
}

pub fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// The config file, then environment and flags on top.
pub fn resolve(
    dir: &Path,
    ledger_given: bool,
    args: &ConsumeArgs,
) -> anyhow::Result<ConsumerConfig> {
    let mut c = match &args.config {
        Some(path) => ConsumerConfig::from_file(path)?,
        None => ConsumerConfig::default(),
    };
    if ledger_given || args.config.is_none() {
        c.ledger = dir.to_owned();
    }
    if let Some(v) = &args.brokers {
        c.brokers = v.clone();
    }
    if let Some(v) = &args.group {
        c.group = v.clone();
    }
    if !args.topics.is_empty() {
        c.topics = args.topics.clone();
    }
    if let Some(v) = args.batch_size {
        c.batch_size = v;
    }
    if let Some(v) = args.max_latency_ms {
        c.max_latency_ms = v;
    }
    if args.dead_letter_topic.is_some() {
        c.dead_letter_topic = args.dead_letter_topic.clone();
    }
    if args.metrics_addr.is_some() {
        c.metrics_addr = args.metrics_addr.clone();
    }
    if args.checkpoint_key.is_some() {
        c.checkpoint_key = args.checkpoint_key.clone();
    }
    if args.exit_when_idle_ms.is_some() {
        c.exit_when_idle_ms = args.exit_when_idle_ms;
    }
    if args.no_projection {
        c.update_projection = false;
    }
    if args.backfill_declared_by.is_some() {
        c.backfill_declared_by = args.backfill_declared_by.clone();
    }
    if args.alerts_topic.is_some() {
        c.alerts_topic = args.alerts_topic.clone();
    }
    if let Some(d) = args.alert_horizon_days {
        c.alert_horizon_days = d;
    }
    if args.archive.is_some() {
        c.archive = args.archive.clone();
    }
    if let Some(v) = args.archive_seal_after_secs {
        c.archive_seal_after_secs = v;
    }
    for (k, v) in &args.settings {
        c.librdkafka.insert(k.clone(), v.clone());
    }
    c.validate()?;
    Ok(c)
}

/// Opens the ledger and the sink the config describes.
pub fn open_sink(config: &ConsumerConfig, metrics: &Arc<Metrics>) -> anyhow::Result<Sink> {
    let options = LedgerOptions {
        limits: IntakeLimits {
            max_event_bytes: config.max_event_bytes,
            ..IntakeLimits::default()
        },
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open(&config.ledger, options)
        .with_context(|| format!("opening the ledger at {}", config.ledger.display()))?;
    let signer = config
        .checkpoint_key
        .as_deref()
        .map(super::audit::read_private_key)
        .transpose()?;
    Ok(Sink::new(
        ledger,
        config.update_projection,
        Arc::clone(metrics),
        signer,
        config.checkpoint_every,
        Duration::from_secs(config.checkpoint_interval_secs),
    )?)
}

pub fn consume(dir: &Path, ledger_given: bool, args: ConsumeArgs) -> anyhow::Result<Outcome> {
    let config = resolve(dir, ledger_given, &args)?;
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = &config.metrics_addr {
        serve(addr, Arc::clone(&metrics)).map_err(|e| anyhow!(e))?;
        tracing::info!("serving /metrics and /health on {addr}");
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown))
            .context("installing the signal handler")?;
    }
    let mut sink = open_sink(&config, &metrics)?;
    if let Some(topic) = &config.alerts_topic {
        let out = KafkaAlertOut::new(&client_config(&config, false), topic)?;
        sink.start_monitor(
            MonitorSettings {
                horizon: SignedDuration::from_hours(24 * i64::from(config.alert_horizon_days)),
                keep_sent: false,
            },
            Box::new(SystemClock),
            Box::new(out),
        )?;
        tracing::info!(
            "deadline monitor: alerts to {topic:?}, due soon within {} days",
            config.alert_horizon_days
        );
    }
    tracing::info!(
        "consuming {:?} from {} as group {:?} into {}",
        config.topics,
        config.brokers,
        config.group,
        config.ledger.display()
    );
    let archiver = config.archive.as_ref().map(|url| {
        tracing::info!(
            "archiving to {url}: open segments sealed every {} s, uploads every {} s",
            config.archive_seal_after_secs,
            config.archive_interval_secs
        );
        ArchiveRunner::start(
            &config.ledger,
            ArchiveSettings {
                url: url.clone(),
                interval: Duration::from_secs(config.archive_interval_secs.max(1)),
                lag_alert_entries: config.archive_lag_alert_entries,
                options: config
                    .archive_options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            Arc::clone(&metrics),
        )
    });
    if let Some(a) = &archiver {
        sink.within_archive(a.archived(), a.conflicts(), a.flusher());
    }
    let (summary, mut sink) = run(&config, sink, Arc::clone(&metrics), shutdown, None)?;
    if let Some(a) = &archiver {
        // A graceful stop leaves nothing behind: every entry sealed and
        // archived, and a checkpoint covering it.
        sink.seal_open_segments(None)?;
        if a.flush(Duration::from_secs(120)) {
            sink.maybe_checkpoint(true)?;
            if !a.flush(Duration::from_secs(60)) {
                tracing::warn!("the last checkpoint is not archived yet; the next run uploads it");
            }
        } else {
            tracing::warn!(
                "the archive did not take everything before stopping ({} entries not archived); the next run uploads them",
                metrics
                    .archive_lag_entries
                    .load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    out!(
        "consumed {} messages: {} appended, {} rejected, {} duplicates, {} redeliveries skipped",
        summary.consumed,
        summary.appended,
        summary.rejected,
        summary.duplicates,
        summary.redelivered
    );
    Ok(Outcome::Ok)
}
