//! `lifeledger log` and `lifeledger head`.

use std::path::Path;

use anyhow::bail;
use lifeledger_ledger::store::StoredRecord;
use lifeledger_ledger::{Body, Entry, Source};

use super::{Outcome, open_snapshot};

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// The chain to print (default: every chain, one after another).
    #[arg(long)]
    pub chain: Option<String>,
    /// First seq to print.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Last seq to print.
    #[arg(long)]
    pub to: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HeadArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn source_json(source: &Source) -> serde_json::Value {
    match source {
        Source::File { path, line } => serde_json::json!({"file": path, "line": line}),
        Source::Kafka {
            topic,
            partition,
            offset,
        } => serde_json::json!({"topic": topic, "partition": partition, "offset": offset}),
    }
}

fn raw_json(raw: &[u8]) -> (&'static str, serde_json::Value) {
    match std::str::from_utf8(raw) {
        Ok(text) => ("raw", text.into()),
        Err(_) => ("raw_hex", hex::encode(raw).into()),
    }
}

fn entry_json(record: &StoredRecord, entry: &Entry) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    match &entry.body {
        Body::Event {
            raw,
            event_id,
            canonical,
        } => {
            body.insert("type".into(), "event".into());
            body.insert("event_id".into(), event_id.as_str().into());
            let event = serde_json::from_slice::<serde_json::Value>(canonical)
                .unwrap_or_else(|_| String::from_utf8_lossy(canonical).into_owned().into());
            body.insert("event".into(), event);
            let (key, value) = raw_json(raw);
            body.insert(key.into(), value);
        }
        Body::Rejected { raw, class, reason } => {
            body.insert("type".into(), "rejected".into());
            body.insert("class".into(), class.name().into());
            body.insert("reason".into(), reason.as_str().into());
            let (key, value) = raw_json(raw);
            body.insert(key.into(), value);
        }
    }
    serde_json::json!({
        "chain": entry.chain,
        "seq": entry.seq,
        "hash": record.hash.to_hex(),
        "prev_hash": entry.prev_hash.to_hex(),
        "received_at": entry.received_at.to_string(),
        "source": source_json(&entry.source),
        "body": body,
    })
}

fn entry_line(record: &StoredRecord, entry: &Entry) -> String {
    let what = match &entry.body {
        Body::Event {
            event_id,
            canonical,
            ..
        } => {
            let kind = serde_json::from_slice::<serde_json::Value>(canonical)
                .ok()
                .and_then(|v| v["kind"]["type"].as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("event    {event_id} {kind}")
        }
        Body::Rejected { class, reason, .. } => format!("REJECTED {}: {reason}", class.name()),
    };
    format!(
        "{:>8}  {}  {}  {}  {}",
        entry.seq,
        &record.hash.to_hex()[..16],
        entry.received_at,
        entry.source,
        what
    )
}

pub fn log(dir: &Path, args: LogArgs) -> anyhow::Result<Outcome> {
    let ledger = open_snapshot(dir)?;
    let names = ledger.chain_names();
    let chains = match args.chain {
        Some(chain) if names.contains(&chain) => vec![chain],
        Some(chain) => bail!("no chain {chain:?}; chains: {}", names.join(", ")),
        None => names,
    };
    if let Some(to) = args.to.filter(|to| *to < args.from) {
        bail!("--from {} lies after --to {to}: nothing to show", args.from);
    }
    let to = args.to.unwrap_or(u64::MAX);
    if !args.json {
        out!(
            "{:>8}  {:16}  {:30}  source  what",
            "seq",
            "hash",
            "received"
        );
    }
    for chain in chains {
        if !args.json {
            out!("-- chain {chain:?}");
        }
        for item in ledger.entries(&chain, args.from, to) {
            let (record, entry) = item?;
            if args.json {
                out!("{}", entry_json(&record, &entry));
            } else {
                out!("{}", entry_line(&record, &entry));
            }
        }
    }
    Ok(Outcome::Ok)
}

pub fn head(dir: &Path, args: HeadArgs) -> anyhow::Result<Outcome> {
    let ledger = open_snapshot(dir)?;
    let heads: Vec<_> = ledger.heads().collect();
    if args.json {
        let list: Vec<_> = heads
            .iter()
            .map(|h| {
                serde_json::json!({
                    "chain": h.chain,
                    "entries": h.next_seq,
                    "last_seq": h.next_seq.checked_sub(1),
                    "last_hash": h.last_hash.to_hex(),
                })
            })
            .collect();
        out!("{}", serde_json::Value::from(list));
    } else if heads.is_empty() {
        out!("the ledger is empty");
    } else {
        for h in heads {
            out!(
                "chain {:?}: {} entries, last seq {}, hash {}",
                h.chain,
                h.next_seq,
                h.next_seq.saturating_sub(1),
                h.last_hash
            );
        }
    }
    Ok(Outcome::Ok)
}
