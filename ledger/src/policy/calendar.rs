//! Working days: weekends and holidays of one jurisdiction.

use std::collections::BTreeSet;

use jiff::civil::{Date, Weekday};

/// A jurisdiction's working-day calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingCalendar {
    weekend: Vec<Weekday>,
    holidays: BTreeSet<Date>,
    pub clause: String,
}

impl WorkingCalendar {
    pub fn new(weekend: Vec<Weekday>, holidays: Vec<Date>, clause: String) -> Self {
        WorkingCalendar {
            weekend,
            holidays: holidays.into_iter().collect(),
            clause,
        }
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
