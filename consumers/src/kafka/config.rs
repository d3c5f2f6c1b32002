//! The consumer's settings. A TOML file gives the base; environment
//! variables and flags (handled by the command line) override it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Everything `lifeledger consume` needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    pub group: String,
    pub topics: Vec<String>,
    /// The ledger directory.
    pub ledger: PathBuf,
    /// Inputs per durable write.
    pub batch_size: usize,
    /// The longest an input waits before its batch is written while more
    /// keep coming (a batch is written at once when a poll comes back
    /// empty: nothing more is there to wait for).
    pub max_latency_ms: u64,
    /// Where rejected inputs are also produced, with the reason in headers.
    pub dead_letter_topic: Option<String>,
    /// `host:port` for `/metrics` and `/health`.
    pub metrics_addr: Option<String>,
    /// Inputs larger than this are rejected as oversize.
    pub max_event_bytes: usize,
    /// Sign a checkpoint with this key every `checkpoint_every` entries or
    /// `checkpoint_interval_secs`.
    pub checkpoint_key: Option<PathBuf>,
    pub checkpoint_every: u64,
    pub checkpoint_interval_secs: u64,
    /// Fold each batch into the retention projection.
    pub update_projection: bool,
    /// Stop (exit 0) after this long without a message.
    pub exit_when_idle_ms: Option<u64>,
    /// Run the deadline monitor and produce its alerts here.
    pub alerts_topic: Option<String>,
    /// Items whose deadline is at most this many days away are due soon.
    pub alert_horizon_days: u32,
    /// How often the monitor looks at the clock between writes. Its last
    /// tick, when the consumer stops, judges what the ticks before had
    /// not: a shorter interval leaves less for it (and sends alerts
    /// sooner), at a projection save and a book save per tick.
    pub monitor_interval_ms: u64,
    /// Where members record which partitions they take (one partition;
    /// created if missing): how a batch a dead member left staged is
    /// judged.
    pub custody_topic: String,
    /// The write-once archive (s3://BUCKET/PREFIX, file:///PATH or a
    /// path); none: the ledger stays on this disk only.
    pub archive: Option<String>,
    /// How often sealed segments are uploaded.
    pub archive_interval_secs: u64,
    /// Open segments holding entries are sealed this often, so that the
    /// archive (which takes sealed segments only) lags by about this much.
    pub archive_seal_after_secs: u64,
    /// Archive lag (entries) past which the alert fires.
    pub archive_lag_alert_entries: u64,
    /// S3 settings for the archive, by the names of the environment
    /// variables they take precedence over (`AWS_ENDPOINT`,
    /// `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `LIFELEDGER_ARCHIVE_OBJECT_LOCK`).
    pub archive_options: BTreeMap<String, String>,
    /// Backfill mode: the topic holds history being loaded. After each
    /// append, the entries it added are declared an import of history by
    /// this name (chain `imports`), so that their late reports are told
    /// apart from the live stream's.
    pub backfill_declared_by: Option<String>,
    /// librdkafka settings passed through as they are.
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            brokers: "127.0.0.1:9092".into(),
            group: "lifeledger".into(),
            topics: vec!["lifecycle".into()],
            ledger: PathBuf::from("lifeledger-data"),
            batch_size: 5_000,
            max_latency_ms: 200,
            dead_letter_topic: None,
            backfill_declared_by: None,
            metrics_addr: None,
            max_event_bytes: 64 * 1024,
            checkpoint_key: None,
            checkpoint_every: 100_000,
            checkpoint_interval_secs: 60,
            update_projection: true,
            exit_when_idle_ms: None,
            alerts_topic: None,
            alert_horizon_days: 7,
            monitor_interval_ms: 250,
            custody_topic: "lifeledger.custody".into(),
            archive: None,
            archive_interval_secs: 5,
            archive_seal_after_secs: 60,
            archive_lag_alert_entries: 1_000_000,
            archive_options: BTreeMap::new(),
            librdkafka: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ConsumerConfig {
    /// Reads a TOML file; every field is optional.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Checks what the file and flags cannot check on their own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.topics.is_empty() {
            return Err(ConfigError::Invalid("no topics to consume".into()));
        }
        if self.batch_size == 0 {
            return Err(ConfigError::Invalid("batch_size must be at least 1".into()));
        }
        if self.alerts_topic.is_some() && !self.update_projection {
            return Err(ConfigError::Invalid(
                "the deadline monitor (alerts_topic) needs update_projection = true".into(),
            ));
        }
        for key in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "group.id",
            "bootstrap.servers",
        ] {
            if self.librdkafka.contains_key(key) {
                return Err(ConfigError::Invalid(format!(
                    "librdkafka setting {key:?} is managed by lifeledger and cannot be overridden"
                )));
            }
        }
        Ok(())
    }
}
