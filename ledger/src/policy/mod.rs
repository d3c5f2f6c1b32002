//! Retention policies as data: loading, checking and looking up a policy
//! file. Pure: the caller reads the file; this module parses its text.
//!
//! The rule *kinds* (how a deadline is computed from triggers) are code in
//! [`crate::deadline`]; every number, store, category, calendar and clause
//! is data in the policy file (see `ledger/policies/`).

mod calendar;

use std::collections::BTreeMap;

use jiff::civil::{Date, Weekday};
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

pub use calendar::{WorkingCalendar, Zone};

/// Why a policy file was refused. Names the line and the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("policy line {line}: {field}: {message}")]
pub struct PolicyError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// A store's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreRole {
    Primary,
    TemporaryBackup,
}

/// How a rule counts its days, months and working days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Counting {
    /// From the trigger's instant to the same wall-clock time N days
    /// (months, working days) later in the calendar's time zone: one hour
    /// late is late.
    #[default]
    Instants,
    /// On the calendar's dates: the deadline is the whole deadline day (a
    /// deletion any time that day is on time), the minimum ends when the
    /// minimum day begins (a deletion on that day is not early).
    WholeDays,
}

/// A retention rule: one of the rule kinds, with its parameters and the
/// clause it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleDef {
    /// No deadline while the hosting service runs; after termination, the
    /// later of termination + `after_termination_days` and collection +
    /// `minimum_days`. Deleting before collection + `minimum_days` is early.
    HostingTermination {
        minimum_days: u32,
        after_termination_days: u32,
        clause: String,
        /// Instants (the default) or whole days.
        #[serde(default)]
        counting: Counting,
        /// Where `counting` comes from (required with whole days: the seed
        /// text is silent, so it is a decision).
        #[serde(default)]
        counting_clause: String,
    },
    /// Collection + `days`. Deleting before collection + `minimum_days` is
    /// early.
    FixedAfterCollection {
        minimum_days: u32,
        days: u32,
        clause: String,
        /// Instants (the default) or whole days.
        #[serde(default)]
        counting: Counting,
        /// Where `counting` comes from (required with whole days: the seed
        /// text is silent, so it is a decision).
        #[serde(default)]
        counting_clause: String,
    },
    /// The earlier of request + `request_working_days` working days and
    /// end of service use + `service_end_months` calendar months.
    RequestOrServiceEnd {
        request_working_days: u32,
        service_end_months: u32,
        clause: String,
        /// Instants (the default) or whole days.
        #[serde(default)]
        counting: Counting,
        /// Where `counting` comes from (required with whole days: the seed
        /// text is silent, so it is a decision).
        #[serde(default)]
        counting_clause: String,
    },
}

impl RuleDef {
    pub fn clause(&self) -> &str {
        match self {
            RuleDef::HostingTermination { clause, .. }
            | RuleDef::FixedAfterCollection { clause, .. }
            | RuleDef::RequestOrServiceEnd { clause, .. } => clause,
        }
    }

    pub fn counting(&self) -> Counting {
        match self {
            RuleDef::HostingTermination { counting, .. }
            | RuleDef::FixedAfterCollection { counting, .. }
            | RuleDef::RequestOrServiceEnd { counting, .. } => *counting,
        }
    }

    pub fn counting_clause(&self) -> &str {
        match self {
            RuleDef::HostingTermination {
                counting_clause, ..
            }
            | RuleDef::FixedAfterCollection {
                counting_clause, ..
            }
            | RuleDef::RequestOrServiceEnd {
                counting_clause, ..
            } => counting_clause,
        }
    }

    /// Days after collection before which deletion is early, if the rule
    /// has such a minimum.
    pub fn minimum_days(&self) -> Option<u32> {
        match self {
            RuleDef::HostingTermination { minimum_days, .. }
            | RuleDef::FixedAfterCollection { minimum_days, .. } => Some(*minimum_days),
            RuleDef::RequestOrServiceEnd { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClauseOnly {
    clause: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExcludedRegionDef {
    region: Spanned<String>,
    clause: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceDef {
    excluded_regions: Vec<ExcludedRegionDef>,
    no_sensitive_data: ClauseOnly,
    no_data_below_age_of_consent: ClauseOnly,
    /// How far an event's time may lie beyond its receipt before the
    /// event is a finding (a producer's clock running ahead); none: not
    /// checked.
    #[serde(default)]
    future_event_tolerance: Option<ToleranceDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToleranceDef {
    minutes: u32,
    clause: String,
}

/// How far an event's time may lie beyond its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FutureTolerance {
    pub limit: jiff::SignedDuration,
    pub clause: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreDef {
    role: StoreRole,
    clause: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryDef {
    label: String,
    stores: Vec<Spanned<String>>,
    rule: Spanned<String>,
    clause: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarDef {
    weekend: Vec<Spanned<String>>,
    holidays: Vec<Spanned<String>>,
    clause: String,
    /// The IANA time zone whose dates the calendar counts (UTC if absent,
    /// as policies before time zones were judged).
    #[serde(default)]
    time_zone: Option<Spanned<String>>,
    #[serde(default)]
    time_zone_clause: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct JurisdictionsDef {
    default: Spanned<String>,
    by_region: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    policy_version: Spanned<String>,
    title: String,
    service: ServiceDef,
    stores: BTreeMap<String, StoreDef>,
    rules: BTreeMap<String, Spanned<RuleDef>>,
    categories: BTreeMap<String, CategoryDef>,
    calendars: BTreeMap<String, CalendarDef>,
    jurisdictions: JurisdictionsDef,
}

/// A data category as the policy defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    pub label: String,
    pub stores: Vec<String>,
    pub rule: String,
    pub clause: String,
}

/// A region where the service is not offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcludedRegion {
    pub region: String,
    pub clause: String,
}

/// A checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub version: String,
    pub title: String,
    /// Lowercase hex BLAKE3 of the file's bytes.
    pub hash: String,
    pub excluded_regions: Vec<ExcludedRegion>,
    pub no_sensitive_data_clause: String,
    pub no_data_below_age_of_consent_clause: String,
    pub future_tolerance: Option<FutureTolerance>,
    pub stores: BTreeMap<String, (StoreRole, String)>,
    pub rules: BTreeMap<String, RuleDef>,
    pub categories: BTreeMap<String, Category>,
    pub calendars: BTreeMap<String, WorkingCalendar>,
    pub default_calendar: String,
    pub calendar_by_region: BTreeMap<String, String>,
}

/// The largest values a policy may give (`policy check` refuses more):
/// every deadline stays within 100 years of its event (1,000 working days
/// with one working weekday and 2,000 holidays take under 60 years), so
/// that with event times up to year 9799 (the event schema's bound) every
/// deadline is representable, and counting working days stays cheap.
pub const MAX_DAYS: u32 = 36_500;
pub const MAX_MONTHS: u32 = 1_200;
pub const MAX_WORKING_DAYS: u32 = 1_000;
pub const MAX_HOLIDAYS: usize = 2_000;
pub const MAX_TOLERANCE_MINUTES: u32 = 525_600;
/// The years a calendar's holidays may lie in.
pub const HOLIDAY_YEARS: (i16, i16) = (1900, 9999);

/// The line of `field = …` inside the table `table` (`rules.A`), or of
/// the table's span start when the field is not written on its own line.
fn field_line(text: &str, table: &str, field: &str, fallback_offset: usize) -> usize {
    let header = format!("[{table}]");
    let mut in_table = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_table = t == header;
            continue;
        }
        if in_table
            && t.strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return i + 1;
        }
    }
    line_of(text, fallback_offset)
}

/// Refuses a rule value that is out of range, or a rule that cannot be
/// met (a minimum past the deadline).
fn check_rule_bounds(text: &str, name: &str, rule: &Spanned<RuleDef>) -> Result<(), PolicyError> {
    let table = format!("rules.{name}");
    let at = rule.span().start;
    let bound = |field: &str, value: u32, max: u32, what: &str| {
        if value > max {
            Err(PolicyError {
                line: field_line(text, &table, field, at),
                field: format!("{table}.{field}"),
                message: format!("{value} is out of range: at most {max} ({what})"),
            })
        } else {
            Ok(())
        }
    };
    match rule.get_ref() {
        RuleDef::HostingTermination {
            minimum_days,
            after_termination_days,
            ..
        } => {
            bound("minimum_days", *minimum_days, MAX_DAYS, "100 years")?;
            bound(
                "after_termination_days",
                *after_termination_days,
                MAX_DAYS,
                "100 years",
            )?;
        }
        RuleDef::FixedAfterCollection {
            minimum_days, days, ..
        } => {
            bound("minimum_days", *minimum_days, MAX_DAYS, "100 years")?;
            bound("days", *days, MAX_DAYS, "100 years")?;
            if minimum_days > days {
                return Err(PolicyError {
                    line: field_line(text, &table, "minimum_days", at),
                    field: format!("{table}.minimum_days"),
                    message: format!(
                        "{minimum_days} is past the deadline of {days} days: no deletion could be on time"
                    ),
                });
            }
        }
        RuleDef::RequestOrServiceEnd {
            request_working_days,
            service_end_months,
            ..
        } => {
            bound(
                "request_working_days",
                *request_working_days,
                MAX_WORKING_DAYS,
                "about 4 years of five-day weeks",
            )?;
            bound(
                "service_end_months",
                *service_end_months,
                MAX_MONTHS,
                "100 years",
            )?;
        }
    }
    Ok(())
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    fn error<T>(
        &self,
        at: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError {
            line: line_of(self.text, at.span().start),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn parse_weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

impl Policy {
    /// Parses and checks a policy file's text.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e))?;
        let file: PolicyFile = serde_path_to_error::deserialize(de).map_err(|e| {
            // A span wrapper shows in the path; the field is what matters.
            let path = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            let inner = e.into_inner();
            let line = inner.span().map_or(0, |s| line_of(text, s.start));
            PolicyError {
                line,
                field: path,
                message: inner.message().to_owned(),
            }
        })?;
        let check = Checker { text };
        if file.policy_version.get_ref().trim().is_empty() {
            return Err(check.error(&file.policy_version, "policy_version", "must not be empty"));
        }
        for (name, rule) in &file.rules {
            check_rule_bounds(text, name, rule)?;
            let r = rule.get_ref();
            if r.counting() == Counting::WholeDays && r.counting_clause().trim().is_empty() {
                return Err(PolicyError {
                    line: field_line(
                        text,
                        &format!("rules.{name}"),
                        "counting",
                        rule.span().start,
                    ),
                    field: format!("rules.{name}.counting_clause"),
                    message: "whole-day counting needs the clause (or decision) it comes from"
                        .into(),
                });
            }
        }
        if let Some(t) = &file.service.future_event_tolerance {
            if t.minutes > MAX_TOLERANCE_MINUTES {
                return Err(PolicyError {
                    line: field_line(text, "service.future_event_tolerance", "minutes", 0),
                    field: "service.future_event_tolerance.minutes".into(),
                    message: format!(
                        "{} is out of range: at most {MAX_TOLERANCE_MINUTES} (one year)",
                        t.minutes
                    ),
                });
            }
        }
        let mut calendars = BTreeMap::new();
        for (name, def) in &file.calendars {
            let mut weekend = Vec::new();
            for day in &def.weekend {
                weekend.push(parse_weekday(day.get_ref()).ok_or_else(|| {
                    check.error(
                        day,
                        format!("calendars.{name}.weekend"),
                        format!(
                            "{:?} is not a weekday name (monday … sunday)",
                            day.get_ref()
                        ),
                    )
                })?);
            }
            let mut holidays = Vec::new();
            for day in &def.holidays {
                let date: Date = day.get_ref().parse().map_err(|e| {
                    check.error(
                        day,
                        format!("calendars.{name}.holidays"),
                        format!("{:?} is not a date (YYYY-MM-DD): {e}", day.get_ref()),
                    )
                })?;
                if !(HOLIDAY_YEARS.0..=HOLIDAY_YEARS.1).contains(&date.year()) {
                    return Err(check.error(
                        day,
                        format!("calendars.{name}.holidays"),
                        format!(
                            "{date} is out of range: holidays lie in the years {} to {}",
                            HOLIDAY_YEARS.0, HOLIDAY_YEARS.1
                        ),
                    ));
                }
                holidays.push(date);
            }
            if def.holidays.len() > MAX_HOLIDAYS {
                return Err(PolicyError {
                    line: def
                        .holidays
                        .first()
                        .map_or(0, |d| line_of(text, d.span().start)),
                    field: format!("calendars.{name}.holidays"),
                    message: format!(
                        "{} holidays: at most {MAX_HOLIDAYS} per calendar",
                        def.holidays.len()
                    ),
                });
            }
            if weekend.len() >= 7 {
                return Err(PolicyError {
                    line: def
                        .weekend
                        .first()
                        .map_or(0, |d| line_of(text, d.span().start)),
                    field: format!("calendars.{name}.weekend"),
                    message: "a calendar needs at least one working weekday".into(),
                });
            }
            let zone = match &def.time_zone {
                None => Zone::utc(),
                Some(tz) => {
                    let field = format!("calendars.{name}.time_zone");
                    let clause = def
                        .time_zone_clause
                        .clone()
                        .filter(|c| !c.trim().is_empty())
                        .ok_or_else(|| {
                            check.error(
                                tz,
                                format!("calendars.{name}.time_zone_clause"),
                                "a time zone needs the clause (or decision) it comes from",
                            )
                        })?;
                    Zone::named(tz.get_ref(), clause).map_err(|e| {
                        check.error(
                            tz,
                            field,
                            format!("{:?} is not an IANA time zone: {e}", tz.get_ref()),
                        )
                    })?
                }
            };
            calendars.insert(
                name.clone(),
                WorkingCalendar::new(weekend, holidays, def.clause.clone()).in_zone(zone),
            );
        }
        let known_calendar = |at: &Spanned<String>, field: String| {
            if calendars.contains_key(at.get_ref()) {
                Ok(())
            } else {
                Err(check.error(
                    at,
                    field,
                    format!("no calendar {:?} is defined", at.get_ref()),
                ))
            }
        };
        known_calendar(&file.jurisdictions.default, "jurisdictions.default".into())?;
        for (region, cal) in &file.jurisdictions.by_region {
            known_calendar(cal, format!("jurisdictions.by_region.{region}"))?;
        }
        let mut categories = BTreeMap::new();
        for (name, def) in &file.categories {
            if !file.rules.contains_key(def.rule.get_ref()) {
                return Err(check.error(
                    &def.rule,
                    format!("categories.{name}.rule"),
                    format!(
                        "no rule {:?} is defined (rules: {})",
                        def.rule.get_ref(),
                        file.rules.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if def.stores.is_empty() {
                return Err(check.error(
                    &def.rule,
                    format!("categories.{name}.stores"),
                    "a category needs at least one allowed store",
                ));
            }
            for store in &def.stores {
                if !file.stores.contains_key(store.get_ref()) {
                    return Err(check.error(
                        store,
                        format!("categories.{name}.stores"),
                        format!("no store {:?} is defined", store.get_ref()),
                    ));
                }
            }
            categories.insert(
                name.clone(),
                Category {
                    name: name.clone(),
                    label: def.label.clone(),
                    stores: def.stores.iter().map(|s| s.get_ref().clone()).collect(),
                    rule: def.rule.get_ref().clone(),
                    clause: def.clause.clone(),
                },
            );
        }
        let mut excluded_regions = Vec::new();
        for ex in &file.service.excluded_regions {
            let region = ex.region.get_ref();
            if region.len() != 2 || !region.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(check.error(
                    &ex.region,
                    "service.excluded_regions.region",
                    format!("{region:?} is not an ISO 3166-1 alpha-2 code"),
                ));
            }
            excluded_regions.push(ExcludedRegion {
                region: region.clone(),
                clause: ex.clause.clone(),
            });
        }
        Ok(Policy {
            version: file.policy_version.get_ref().clone(),
            title: file.title,
            hash: blake3::hash(text.as_bytes()).to_hex().to_string(),
            excluded_regions,
            no_sensitive_data_clause: file.service.no_sensitive_data.clause,
            no_data_below_age_of_consent_clause: file.service.no_data_below_age_of_consent.clause,
            future_tolerance: file
                .service
                .future_event_tolerance
                .map(|t| FutureTolerance {
                    limit: jiff::SignedDuration::from_mins(i64::from(t.minutes)),
                    clause: t.clause,
                }),
            stores: file
                .stores
                .into_iter()
                .map(|(k, v)| (k, (v.role, v.clause)))
                .collect(),
            rules: file
                .rules
                .into_iter()
                .map(|(k, v)| (k, v.into_inner()))
                .collect(),
            categories,
            calendars,
            default_calendar: file.jurisdictions.default.into_inner(),
            calendar_by_region: file
                .jurisdictions
                .by_region
                .into_iter()
                .map(|(k, v)| (k, v.into_inner()))
                .collect(),
        })
    }

    /// The working-day calendar of a region.
    pub fn calendar_for(&self, region: Option<&str>) -> Option<&WorkingCalendar> {
        let name = region
            .and_then(|r| self.calendar_by_region.get(r))
            .unwrap_or(&self.default_calendar);
        self.calendars.get(name)
    }

    pub fn excluded_region(&self, region: &str) -> Option<&ExcludedRegion> {
        self.excluded_regions.iter().find(|e| e.region == region)
    }
}

fn toml_error(text: &str, e: &toml::de::Error) -> PolicyError {
    PolicyError {
        line: e.span().map_or(0, |s| line_of(text, s.start)),
        field: "(syntax)".into(),
        message: e.message().to_owned(),
    }
}

#[cfg(test)]
mod tests;
