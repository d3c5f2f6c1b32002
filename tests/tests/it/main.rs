//! Lifeledger's integration tests: one binary, one module per area. The
//! command-line tests live beside the binary, in `consumers/tests/cli.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod archive;
mod corpus;
mod crash;
mod ingest;
mod merkle;
mod migrate;
mod projection;
mod tamper;
