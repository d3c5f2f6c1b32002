//! Lifeledger's integration tests: one binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod cli;
mod ingest;
mod support;
mod tamper;
