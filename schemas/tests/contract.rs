//! The JSON Schema files, the example events and the Rust types agree.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};

use lifeledger_schemas::{DecodeError, canonical_json, decode_event};

fn v1_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("v1")
}

struct Schema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Schema {
    fn load() -> Self {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        let path = v1_dir().join("event.schema.json");
        let index = compiler
            .compile(path.to_str().unwrap(), &mut schemas)
            .unwrap_or_else(|e| panic!("event.schema.json does not compile: {e}"));
        Schema { schemas, index }
    }

    fn check(&self, value: &serde_json::Value) -> Result<(), String> {
        self.schemas
            .validate(value, self.index)
            .map_err(|e| format!("{e:#}"))
    }
}

fn examples() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(v1_dir().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let bytes = bytes.trim_ascii_end().to_vec();
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_kind_has_an_example() {
    let names: Vec<String> = examples().into_iter().map(|(n, _)| n).collect();
    for kind in lifeledger_schemas::v1::KIND_NAMES {
        assert!(
            names.iter().any(|n| n.starts_with(kind)),
            "no example for kind {kind} in {names:?}"
        );
    }
}

#[test]
fn examples_decode_and_validate() {
    let schema = Schema::load();
    for (name, bytes) in examples() {
        let event = decode_event(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        schema
            .check(&value)
            .unwrap_or_else(|e| panic!("{name} fails the JSON Schema: {e}"));
        // The canonical form is itself a valid event that decodes the same.
        let canonical = canonical_json(&event);
        assert_eq!(decode_event(&canonical).unwrap(), event, "{name}");
        let canonical_value: serde_json::Value = serde_json::from_slice(&canonical).unwrap();
        schema
            .check(&canonical_value)
            .unwrap_or_else(|e| panic!("canonical {name} fails the JSON Schema: {e}"));
    }
}

#[test]
fn invalid_cases_fail_both_with_the_named_field() {
    let schema = Schema::load();
    let text = std::fs::read_to_string(v1_dir().join("invalid/cases.jsonl")).unwrap();
    let mut cases = 0;
    for (i, line) in text.lines().enumerate() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let expect = case["expect_path"].as_str().unwrap();
        let bytes = serde_json::to_vec(&case["event"]).unwrap();
        let err = decode_event(&bytes).expect_err(&format!("case {} should fail", i + 1));
        let path = match &err {
            DecodeError::Field { path, .. } => path.as_str(),
            DecodeError::UnsupportedVersion { .. } => "schema_version",
            other => panic!("case {}: unexpected {other}", i + 1),
        };
        assert_eq!(path, expect, "case {}: {err}", i + 1);
        assert!(
            schema.check(&case["event"]).is_err(),
            "case {} ({expect}) passes the JSON Schema but Rust rejects it: {err}",
            i + 1
        );
        cases += 1;
    }
    assert!(cases >= 15, "only {cases} invalid cases");
}
