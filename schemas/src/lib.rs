//! The producer contract of Lifeledger.
//!
//! Producers send one JSON object per lifecycle event. This crate owns the
//! Rust types for every schema version ([`v1`]), the strict decoder that turns
//! received bytes into an [`Event`] or a [`DecodeError`] naming the offending
//! field, and the canonical encoding that the ledger hashes.
//!
//! The JSON Schema files and example events live beside this crate in
//! `schemas/v1/`; tests keep them and these types in agreement.

mod canonical;
mod decode;
mod kind_wire;
pub mod time;
pub mod v1;

pub use canonical::{canonical_json, canonical_json_generic, is_canonical_json};
pub use decode::{DecodeError, RejectClass, decode_event};
pub use v1::{Account, Event, Kind};

/// The schema versions this build can decode.
pub const SUPPORTED_VERSIONS: &[u64] = &[1];
