//! Lifeledger's inputs: the edges that read events from the outside world
//! and hand them to the ledger in batches.
//!
//! * [`file`]: JSON Lines files, one event per line.
//! * [`schedule`]: when to sign checkpoints while appending.
//!
//! The Kafka consumer will live here too, behind a feature, so that the
//! ledger and its verifier build without librdkafka.

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod schedule;
