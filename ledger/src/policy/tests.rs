use super::*;

const SHIPPED: &str = include_str!("../../policies/retention-2026-11.toml");

#[test]
fn the_shipped_policy_loads_and_covers_every_category() {
    let policy = Policy::parse(SHIPPED).unwrap();
    assert_eq!(policy.version, "2026-11.3");
    assert_eq!(policy.categories.len(), 7);
    assert_eq!(
        policy.categories["product_configuration"].stores,
        vec!["mongodb", "mysql"]
    );
    assert_eq!(policy.categories["console_configuration"].rule, "C");
    assert!(policy.excluded_region("RU").is_some());
    assert_eq!(
        policy.hash,
        blake3::hash(SHIPPED.as_bytes()).to_hex().to_string()
    );
    for category in policy.categories.values() {
        assert!(!category.clause.is_empty());
        assert!(!policy.rules[&category.rule].clause().is_empty());
    }
}

fn refused(edit: impl Fn(&str) -> String) -> PolicyError {
    Policy::parse(&edit(SHIPPED)).expect_err("an edited policy should be refused")
}

fn line_containing(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn an_unknown_rule_is_refused_at_its_line() {
    let text = SHIPPED.replacen("rule = \"B\"", "rule = \"Z\"", 1);
    let err = Policy::parse(&text).unwrap_err();
    assert_eq!(err.field, "categories.product_configuration.rule");
    assert_eq!(err.line, line_containing(&text, "rule = \"Z\""));
    assert!(err.message.contains("no rule \"Z\""), "{err}");
}

#[test]
fn an_unknown_store_is_refused_at_its_line() {
    let text = SHIPPED.replacen(
        "stores = [\"mongodb\", \"mysql\"]",
        "stores = [\"mongodb\", \"oracle\"]",
        1,
    );
    let err = Policy::parse(&text).unwrap_err();
    assert_eq!(err.field, "categories.product_configuration.stores");
    assert_eq!(err.line, line_containing(&text, "oracle"));
}

#[test]
fn a_bad_holiday_is_refused_at_its_line() {
    let text = SHIPPED.replacen(
        "\"2026-12-25\", \"2027-01-01\"",
        "\"2026-12-35\", \"2027-01-01\"",
        1,
    );
    let err = Policy::parse(&text).unwrap_err();
    assert_eq!(err.field, "calendars.default.holidays");
    assert_eq!(err.line, line_containing(&text, "2026-12-35"));
}

#[test]
fn unknown_fields_and_rule_kinds_are_refused() {
    let err = refused(|t| t.replacen("minimum_days = 180\nafter", "minimum_dayz = 180\nafter", 1));
    assert!(err.message.contains("minimum_dayz"), "{err}");
    assert!(err.line > 0);
    let err = refused(|t| t.replacen("kind = \"fixed_after_collection\"", "kind = \"forever\"", 1));
    assert!(err.message.contains("forever"), "{err}");
    assert_eq!(err.field, "rules.B.kind");
}

#[test]
fn syntax_errors_name_the_line() {
    let text = SHIPPED.replacen("[stores.cos]", "[stores.cos", 1);
    let err = Policy::parse(&text).unwrap_err();
    assert_eq!(err.field, "(syntax)");
    assert_eq!(err.line, line_containing(&text, "[stores.cos"));
}

#[test]
fn working_days_skip_weekends_and_holidays() {
    let policy = Policy::parse(SHIPPED).unwrap();
    let de = policy.calendar_for(Some("DE")).unwrap();
    // Friday 2026-09-25 + 5 working days: Mon 28, Tue 29, Wed 30, Thu 1, and
    // Fri 2 October; Saturday 3 October (a holiday too) is not counted.
    let start: Date = "2026-09-25".parse().unwrap();
    assert_eq!(
        de.add_working_days(start, 5).unwrap(),
        "2026-10-02".parse::<Date>().unwrap()
    );
    // Thursday 2026-12-24 + 1 in Germany skips the 25th, 26th and Sunday 27th.
    let eve: Date = "2026-12-24".parse().unwrap();
    assert_eq!(
        de.add_working_days(eve, 1).unwrap(),
        "2026-12-28".parse::<Date>().unwrap()
    );
    // Regions without a calendar of their own use the default.
    assert_eq!(
        policy.calendar_for(Some("BR")),
        policy.calendars.get("default")
    );
}

#[test]
fn values_that_could_overflow_are_refused_at_their_line() {
    let cases = [
        (
            "service_end_months = 1",
            "service_end_months = 4000000000",
            "rules.C.service_end_months",
        ),
        (
            "request_working_days = 30",
            "request_working_days = 1001",
            "rules.C.request_working_days",
        ),
        ("\ndays = 180", "\ndays = 4294967295", "rules.B.days"),
        (
            "after_termination_days = 30",
            "after_termination_days = 36501",
            "rules.A.after_termination_days",
        ),
    ];
    for (from, to, field) in cases {
        let text = SHIPPED.replacen(from, to, 1);
        assert_ne!(text, SHIPPED, "{from} is not in the shipped policy");
        let err = Policy::parse(&text).expect_err(to);
        assert_eq!(err.field, field, "{err}");
        assert_eq!(err.line, line_containing(&text, to.trim_start()), "{err}");
        assert!(err.message.contains("out of range"), "{err}");
    }
    // At the bounds they pass.
    let at_bounds = SHIPPED
        .replacen("service_end_months = 1", "service_end_months = 1200", 1)
        .replacen(
            "request_working_days = 30",
            "request_working_days = 1000",
            1,
        );
    Policy::parse(&at_bounds).unwrap();
}

#[test]
fn a_minimum_past_the_deadline_is_refused() {
    let text = SHIPPED.replacen("\ndays = 180", "\ndays = 90", 1);
    let err = Policy::parse(&text).unwrap_err();
    assert_eq!(err.field, "rules.B.minimum_days", "{err}");
    assert!(
        err.message.contains("no deletion could be on time"),
        "{err}"
    );
}
