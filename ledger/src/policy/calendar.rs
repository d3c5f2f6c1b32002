//! Working days and dates: the weekends, holidays and time zone of one
//! jurisdiction.

use std::collections::BTreeSet;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;

/// The time zone whose dates a calendar counts, with the clause (or
/// decision) it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The IANA name (`UTC` when the policy names none).
    pub name: String,
    pub tz: TimeZone,
    pub clause: String,
}

impl Zone {
    pub fn utc() -> Self {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::UTC,
            clause: "no time zone stated: dates are counted in UTC".into(),
        }
    }

    /// An IANA time zone by name, from the system's time-zone database or
    /// the one built in.
    pub fn named(name: &str, clause: String) -> Result<Self, jiff::Error> {
        Ok(Zone {
            name: name.to_owned(),
            tz: TimeZone::get(name)?,
            clause,
        })
    }
}

/// A jurisdiction's working-day calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingCalendar {
    weekend: Vec<Weekday>,
    holidays: BTreeSet<Date>,
    pub clause: String,
    pub zone: Zone,
}

impl WorkingCalendar {
    /// A calendar counting UTC dates.
    pub fn new(weekend: Vec<Weekday>, holidays: Vec<Date>, clause: String) -> Self {
        WorkingCalendar {
            weekend,
            holidays: holidays.into_iter().collect(),
            clause,
            zone: Zone::utc(),
        }
    }

    /// The same calendar counting the dates of `zone`.
    pub fn in_zone(mut self, zone: Zone) -> Self {
        self.zone = zone;
        self
    }

    pub fn is_working_day(&self, date: Date) -> bool {
        !self.weekend.contains(&date.weekday()) && !self.holidays.contains(&date)
    }

    /// The `n`th working day after `date` (not counting `date` itself).
    /// `None` only past the end of the calendar's date range.
    pub fn add_working_days(&self, date: Date, n: u32) -> Option<Date> {
        let mut day = date;
        let mut counted = 0;
        while counted < n {
            day = day.tomorrow().ok()?;
            if self.is_working_day(day) {
                counted += 1;
            }
        }
        Some(day)
    }
}
