//! `lifeledger replay-kafka`: rebuild a scratch ledger from a topic and
//! compare it with the live ledger's chains for that range.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use lifeledger::kafka::config::ConsumerConfig;
use lifeledger::kafka::consumer::client_config;
use lifeledger::kafka::replay::{ReplayKafkaRequest, Start, replay_topic};
use lifeledger_ledger::ReadOnlyLedger;
use lifeledger_ledger::projection::replay::parse_moment;

use super::Outcome;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("start").required(true).args(["from_offset", "from_time"])))]
pub struct ReplayKafkaArgs {
    /// The topic to replay.
    #[arg(long)]
    pub topic: String,
    /// Start at this offset in every partition (or the earliest kept).
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Start at the first record at or after this time, per partition.
    #[arg(long, value_parser = parse_moment)]
    pub from_time: Option<Timestamp>,
    /// A TOML file of consumer settings (brokers, librdkafka).
    #[arg(long, env = "LIFELEDGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "LIFELEDGER_BROKERS")]
    pub brokers: Option<String>,
    /// A librdkafka setting, KEY=VALUE (repeatable).
    #[arg(long = "set", value_parser = super::consume::parse_setting)]
    pub settings: Vec<(String, String)>,
    /// Keep the scratch ledger here (a new directory); default: a temporary
    /// directory, removed afterwards.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Give up reading after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(dir: &Path, args: ReplayKafkaArgs) -> anyhow::Result<Outcome> {
    let mut config = match &args.config {
        Some(path) => ConsumerConfig::from_file(path)?,
        None => ConsumerConfig::default(),
    };
    if let Some(b) = &args.brokers {
        config.brokers = b.clone();
    }
    for (k, v) in &args.settings {
        config.librdkafka.insert(k.clone(), v.clone());
    }
    let start = match (args.from_offset, args.from_time) {
        (Some(n), _) if n < 0 => bail!("--from-offset {n}: offsets start at 0"),
        (Some(n), _) => Start::Offset(n),
        (None, Some(t)) => Start::Time(t),
        (None, None) => bail!("give --from-offset N or --from-time T"),
    };
    let mut live = ReadOnlyLedger::open(dir)
        .with_context(|| format!("opening the ledger at {} for reading", dir.display()))?;
    let temp;
    let scratch = match &args.scratch {
        Some(path) => {
            if path.exists() && std::fs::read_dir(path)?.next().is_some() {
                bail!(
                    "--scratch {}: give a new or empty directory",
                    path.display()
                );
            }
            path.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("lifeledger-scratch-")
                .tempdir()?;
            temp.path().join("ledger")
        }
    };
    if scratch.canonicalize().ok() == dir.canonicalize().ok() && scratch.exists() {
        bail!("the scratch ledger cannot be the live one");
    }
    let request = ReplayKafkaRequest {
        client: client_config(&config, false),
        topic: args.topic.clone(),
        start,
        timeout: Duration::from_secs(args.timeout_secs),
    };
    let bar = super::progress_bar(0, "replay");
    let report = replay_topic(&request, &mut live, &scratch, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!(
            "Replayed topic {} into a scratch ledger{}; compared with {}",
            report.topic,
            args.scratch
                .as_ref()
                .map(|p| format!(" at {}", p.display()))
                .unwrap_or_default(),
            dir.display()
        );
        out!(
            "\n{:>9} {:>10} {:>10} {:>10} {:>10} {:>8} {:>9} {:>11}",
            "partition",
            "from",
            "to",
            "live next",
            "read",
            "matched",
            "explained",
            "differences"
        );
        for p in &report.partitions {
            out!(
                "{:>9} {:>10} {:>10} {:>10} {:>10} {:>8} {:>9} {:>11}",
                p.partition,
                p.from_offset,
                p.compared_to,
                p.live_cursor.map_or_else(|| "-".into(), |c| c.to_string()),
                p.messages_read,
                p.matched,
                p.explained,
                p.differences
            );
        }
        for p in &report.partitions {
            if p.compared_to < p.high_watermark {
                out!(
                    "partition {}: offsets {}..{} are not in the live ledger yet (not compared)",
                    p.partition,
                    p.compared_to,
                    p.high_watermark
                );
            }
            if let Some(d) = &p.first_difference {
                out!(
                    "partition {} first differs at offset {}: live {} (seq {}), scratch {} (seq {})",
                    p.partition,
                    d.offset,
                    d.live.entry,
                    d.live.seq.map_or_else(|| "-".into(), |s| s.to_string()),
                    d.scratch.entry,
                    d.scratch.seq.map_or_else(|| "-".into(), |s| s.to_string()),
                );
            }
        }
        out!(
            "\n{}",
            if report.matches {
                "MATCH: the live chains hold what the topic holds for this range"
            } else {
                "DIFFERENT: the live chains do not hold what the topic holds (see above)"
            }
        );
    }
    Ok(if report.matches {
        Outcome::Ok
    } else {
        Outcome::VerificationFailed
    })
}
