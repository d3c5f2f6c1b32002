//! Fixtures shared by the integration tests here and the CLI tests of the
//! `lifeledger` package.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test fixtures: a panic is a failed test

pub mod broker;
pub mod corpus;
mod fixtures;
pub mod s3;
pub mod segments;

pub use fixtures::*;
