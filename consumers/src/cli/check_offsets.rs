//! `lifeledger check-offsets`: does every offset of a topic hold exactly
//! one entry across the ledgers of a consumer group?

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use lifeledger::kafka::config::ConsumerConfig;
use lifeledger::kafka::consumer::client_config;
use lifeledger::kafka::offsets::{OffsetCheckRequest, check_offsets};

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct CheckOffsetsArgs {
    /// The topic to check.
    #[arg(long)]
    pub topic: String,
    /// Another member's ledger to count in (repeatable): in a group, each
    /// member keeps its own, and an offset may be in any one of them.
    #[arg(long = "also")]
    pub also: Vec<PathBuf>,
    /// The consumer group: offsets recorded nowhere at or past its
    /// committed offset are "not consumed yet" rather than missing.
    #[arg(long)]
    pub group: Option<String>,
    /// A TOML file of consumer settings (brokers, librdkafka).
    #[arg(long, env = "LIFELEDGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "LIFELEDGER_BROKERS")]
    pub brokers: Option<String>,
    /// A librdkafka setting, KEY=VALUE (repeatable).
    #[arg(long = "set", value_parser = super::consume::parse_setting)]
    pub settings: Vec<(String, String)>,
    /// The topic is read until nothing arrived for this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub quiet_ms: u64,
    /// Give up reading after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(dir: &Path, args: CheckOffsetsArgs) -> anyhow::Result<Outcome> {
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
    let mut ledgers = vec![dir.to_owned()];
    ledgers.extend(args.also.iter().cloned());
    let request = OffsetCheckRequest {
        client: client_config(&config, false),
        topic: args.topic.clone(),
        group: args.group.clone(),
        quiet: Duration::from_millis(args.quiet_ms),
        timeout: Duration::from_secs(args.timeout_secs),
    };
    let report = check_offsets(&request, &ledgers)
        .with_context(|| format!("checking the offsets of topic {}", args.topic))?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!(
            "Topic {} against {} ledger(s): {}",
            report.topic,
            report.ledgers.len(),
            report.ledgers.join(", ")
        );
        out!(
            "\n{:>9} {:>10} {:>10} {:>10} {:>8} {:>7} {:>10} {:>7} {:>8} {:>10}",
            "partition",
            "from",
            "to",
            "recorded",
            "resends",
            "absent",
            "unconsumed",
            "missing",
            "repeated",
            "per ledger"
        );
        for p in &report.partitions {
            out!(
                "{:>9} {:>10} {:>10} {:>10} {:>8} {:>7} {:>10} {:>7} {:>8} {:>10}",
                p.partition,
                p.first_offset,
                p.end_offset,
                p.recorded_once,
                p.resends,
                p.absent_at_broker,
                if args.group.is_some() {
                    p.unconsumed.to_string()
                } else {
                    "-".to_owned()
                },
                p.missing,
                p.duplicated,
                p.per_ledger
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("/")
            );
        }
        for p in &report.partitions {
            if !p.missing_offsets.is_empty() {
                out!(
                    "partition {}: {} offset(s) in no ledger, first {:?}",
                    p.partition,
                    p.missing,
                    p.missing_offsets
                );
            }
            for (first, next, ledger) in &p.staged_in {
                out!(
                    "partition {}: offsets {first}..{} are staged in {ledger} (its member stopped between the commit and the append): start it again to settle them",
                    p.partition,
                    next - 1
                );
            }
            for (offset, holders) in &p.duplicated_offsets {
                out!(
                    "partition {}: offset {offset} recorded {} times: {}",
                    p.partition,
                    holders.len(),
                    holders.join(", ")
                );
            }
        }
        out!(
            "\n{}",
            if report.exact {
                "exact: every offset holding a record is in exactly one ledger (or is a resend of a recorded event)"
            } else {
                "NOT EXACT: offsets missing, recorded more than once, or waiting in a staged batch"
            }
        );
    }
    Ok(if report.exact {
        Outcome::Ok
    } else {
        Outcome::VerificationFailed
    })
}
