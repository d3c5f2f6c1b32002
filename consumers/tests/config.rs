//! The shipped example config parses, and managed librdkafka keys are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[cfg(feature = "kafka")]
#[test]
fn the_example_config_parses_and_validates() {
    use lifeledger::kafka::config::ConsumerConfig;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lifeledger.example.toml");
    let config = ConsumerConfig::from_file(&path).unwrap();
    config.validate().unwrap();
    assert_eq!(config.dead_letter_topic.as_deref(), Some("lifecycle.dlq"));
    assert_eq!(config.librdkafka["session.timeout.ms"], "10000");
    let mut bad = config.clone();
    bad.librdkafka
        .insert("enable.auto.commit".into(), "true".into());
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("enable.auto.commit")
    );
}
