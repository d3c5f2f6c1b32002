//! Lifeledger's edges: what reads events from the outside world and hands
//! them to the ledger in batches, and what tells the outside world about
//! deadlines.
//!
//! * [`file`]: JSON Lines files, one event per line.
//! * [`schedule`]: when to sign checkpoints while appending.
//! * [`monitor`]: the deadline monitor's clock, alert destinations, gauges
//!   and once-per-change delivery.
//! * [`report`]: the self-contained HTML retention report.
//! * [`kafka`] (feature `kafka`): the streaming consumer, topic replays and
//!   the alerts topic, so that the ledger and its verifier build without
//!   librdkafka.

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod monitor;
pub mod report;
pub mod schedule;
