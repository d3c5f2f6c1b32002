//! The Lifeledger ledger: append-only, blake3 hash-chained logs of lifecycle
//! events.
//!
//! * [`chain`]: a chain head and the one way to extend it (pure).
//! * [`entry`]: what one entry holds, its byte encoding and its hash (pure).
//! * [`intake`]: deciding what received bytes become: an event entry, a
//!   rejected entry, or a skipped duplicate (pure).
//! * [`verify`]: walking a chain and naming the first bad seq (pure).
//! * [`store`]: segment files and a manifest for the evidence, sled for
//!   the indexes: fsynced batch appends, lock-free snapshot reads, heads.
//!   The only module here that does I/O.
//!
//! `FORMAT.md` at the repository root specifies every byte that is hashed.

pub mod archive;
pub mod bundle;
pub mod chain;
pub mod checkpoint;
pub mod deadline;
pub mod entry;
pub mod intake;
pub mod merkle;
pub mod monitor;
pub mod policy;
pub mod projection;
pub mod side_by_side;
pub mod store;
pub mod verify;

pub use chain::{ChainHead, SealedEntry};
pub use entry::{Body, Entry, EntryHash, Source};
pub use intake::Incoming;
pub use store::{
    AppendReport, Appended, Built, ChainBatch, Judged, Ledger, LedgerOptions, MigrationReport,
    ProjectionStore, ReadOnlyLedger, Rejection, SavedBook, SavedStates, Snapshot, StagedBatch,
    StoreError, StoredRecord, migrate,
};
pub use verify::{Finding, Problem, VerifyReport};
