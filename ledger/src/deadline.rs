//! The deadline engine: when every copy of an item must be gone, and why.
//!
//! Pure: no clock, no I/O. The caller passes the triggers it knows (as of
//! the moment it judges) and the policy's rule; the answer names the rule,
//! its clause and the entries that set the deadline.
//!
//! Time arithmetic happens on the dates of the item's calendar's time zone
//! (UTC if the policy names none): "+ N days" is N calendar days, "+ N
//! months" is calendar-month arithmetic that clamps to the month's last day
//! (Jan 31 + 1 month = Feb 28 or 29), "+ N working days" steps over the
//! weekends and holidays of the item's jurisdiction. A rule counting
//! *instants* keeps the trigger's wall-clock time of day (across a DST
//! change too); a rule counting *whole days* makes the deadline the whole
//! deadline day (`due_by` is its last nanosecond) and lets a minimum end
//! when the minimum day begins. Either way the deadline is an instant
//! again: a deletion is on time when its event time is at or before
//! `due_by`.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use jiff::civil::Date;

use crate::policy::{Counting, RuleDef, WorkingCalendar};
use crate::projection::EntryRef;

/// What can start or move an item's retention clock.
#[derive(Debug, Clone, Default)]
pub struct Triggers<'a> {
    pub collected: Option<&'a EntryRef>,
    pub hosting_terminated: Option<&'a EntryRef>,
    pub service_use_ended: Option<&'a EntryRef>,
    /// The first deletion request covering the item's category.
    pub deletion_requested: Option<&'a EntryRef>,
    /// Legal holds on the item or its account: placed, and released if so.
    pub holds: Vec<(&'a EntryRef, Option<&'a EntryRef>)>,
}

/// A deadline and everything that set it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deadline {
    /// The last instant a deletion is on time.
    pub due_by: Timestamp,
    pub rule: String,
    pub clause: String,
    /// The entries whose events set the deadline (collection, trigger,
    /// holds), in event-time order.
    pub basis: Vec<EntryRef>,
    /// How the deadline follows from the rule, in words.
    pub explanation: String,
    /// How far legal holds moved it.
    pub held_for: SignedDuration,
    /// With whole-day counting: the deadline day, in `zone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<Date>,
    /// The time zone whose dates were counted.
    pub zone: String,
}

impl Deadline {
    /// How long after the deadline `at` is (negative: before it), from the
    /// end of the deadline day with whole-day counting.
    pub fn passed_by(&self, at: Timestamp) -> SignedDuration {
        let end = if self.day.is_some() {
            self.due_by
                .checked_add(SignedDuration::from_nanos(1))
                .unwrap_or(self.due_by)
        } else {
            self.due_by
        };
        at.duration_since(end)
    }
}

/// The outcome of the engine for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadlineOutcome {
    /// No deadline runs yet (the rule's trigger has not happened).
    None {
        why: String,
    },
    /// A legal hold in force suspends the deadline.
    Suspended {
        hold: EntryRef,
    },
    Set(Deadline),
}

/// How a rule's clock counts: on which zone's dates, instants or whole days.
#[derive(Debug, Clone, Copy)]
struct Clock<'a> {
    tz: &'a TimeZone,
    counting: Counting,
}

impl Clock<'_> {
    /// The instant a count that ended at `at` (the trigger's wall-clock
    /// time on the last day counted) stands for: itself with instants, the
    /// end of its day with whole days.
    fn close(&self, at: jiff::ZonedDateTime) -> Option<Timestamp> {
        match self.counting {
            Counting::Instants => Some(at.timestamp()),
            Counting::WholeDays => end_of_day(at.date(), self.tz),
        }
    }

    fn plus_days(&self, at: Timestamp, days: u32) -> Option<Timestamp> {
        let local = at.to_zoned_datetime(self.tz.clone());
        self.close(local.checked_add(i64::from(days).days()).ok()?)
    }

    fn plus_months(&self, at: Timestamp, months: u32) -> Option<Timestamp> {
        let local = at.to_zoned_datetime(self.tz.clone());
        self.close(local.checked_add(i64::from(months).months()).ok()?)
    }

    fn plus_working_days(
        &self,
        at: Timestamp,
        days: u32,
        calendar: &WorkingCalendar,
    ) -> Option<Timestamp> {
        let local = at.to_zoned_datetime(self.tz.clone());
        let date = calendar.add_working_days(local.date(), days)?;
        let then = date
            .to_datetime(local.time())
            .to_zoned_datetime(self.tz.clone())
            .ok()?;
        self.close(then)
    }
}

/// The last nanosecond of `date` in `tz`.
fn end_of_day(date: Date, tz: &TimeZone) -> Option<Timestamp> {
    let next = date.tomorrow().ok()?.to_zoned_datetime(tz.clone()).ok()?;
    next.timestamp()
        .checked_sub(SignedDuration::from_nanos(1))
        .ok()
}

/// When a rule's minimum retention of `days` after `collected` ends: a
/// deletion before it is early. With whole days, the minimum ends when the
/// minimum day begins in the calendar's zone.
pub fn minimum_until(
    collected: Timestamp,
    days: u32,
    counting: Counting,
    calendar: Option<&WorkingCalendar>,
) -> Option<Timestamp> {
    let tz = calendar.map_or(TimeZone::UTC, |c| c.zone.tz.clone());
    let local = collected.to_zoned_datetime(tz.clone());
    let then = local.checked_add(i64::from(days).days()).ok()?;
    match counting {
        Counting::Instants => Some(then.timestamp()),
        Counting::WholeDays => then
            .date()
            .to_zoned_datetime(tz)
            .ok()
            .map(|z| z.timestamp()),
    }
}

/// Moves `due_by` later by the time holds were in force between
/// `clock_start` and the (moving) deadline. Returns the hold that suspends
/// the deadline outright, if one was never released.
fn apply_holds(
    clock_start: Timestamp,
    mut due_by: Timestamp,
    holds: &[(&EntryRef, Option<&EntryRef>)],
    basis: &mut Vec<EntryRef>,
) -> Result<(Timestamp, SignedDuration), EntryRef> {
    let mut sorted: Vec<_> = holds.to_vec();
    sorted.sort_by_key(|(placed, _)| placed.order_key());
    let mut held = SignedDuration::ZERO;
    // Holds may overlap; count each instant once.
    let mut counted_until = clock_start;
    for (placed, released) in sorted {
        if placed.event_time > due_by {
            break;
        }
        let Some(released) = released else {
            basis.push(placed.clone());
            return Err(placed.clone());
        };
        let start = placed.event_time.max(counted_until);
        let end = released.event_time;
        if end <= start {
            continue;
        }
        let span = end.duration_since(start);
        held += span;
        due_by = due_by.checked_add(span).unwrap_or(due_by);
        counted_until = end;
        basis.push(placed.clone());
        basis.push(released.clone());
    }
    Ok((due_by, held))
}

/// Computes an item's deadline under `rule` (named `rule_name`).
pub fn compute(
    rule_name: &str,
    rule: &RuleDef,
    calendar: Option<&WorkingCalendar>,
    triggers: &Triggers<'_>,
) -> DeadlineOutcome {
    let Some(collected) = triggers.collected else {
        return DeadlineOutcome::None {
            why: "the item's collection is not recorded".into(),
        };
    };
    let tz = calendar.map_or(TimeZone::UTC, |c| c.zone.tz.clone());
    let zone = calendar.map_or_else(|| "UTC".to_owned(), |c| c.zone.name.clone());
    let clock = Clock {
        tz: &tz,
        counting: rule.counting(),
    };
    let overflow = || DeadlineOutcome::None {
        why: "the deadline falls outside the representable time range".into(),
    };
    let (clock_start, due_by, mut basis, explanation) = match rule {
        RuleDef::HostingTermination {
            minimum_days,
            after_termination_days,
            ..
        } => {
            let Some(terminated) = triggers.hosting_terminated else {
                return DeadlineOutcome::None {
                    why: "the hosting service still runs".into(),
                };
            };
            let (Some(by_termination), Some(by_minimum)) = (
                clock.plus_days(terminated.event_time, *after_termination_days),
                clock.plus_days(collected.event_time, *minimum_days),
            ) else {
                return overflow();
            };
            let explanation = format!(
                "the later of hosting termination {} + {after_termination_days} days ({by_termination}) and collection {} + {minimum_days} days ({by_minimum})",
                terminated.event_time, collected.event_time
            );
            (
                terminated.event_time,
                by_termination.max(by_minimum),
                vec![collected.clone(), terminated.clone()],
                explanation,
            )
        }
        RuleDef::FixedAfterCollection { days, .. } => {
            let Some(due) = clock.plus_days(collected.event_time, *days) else {
                return overflow();
            };
            (
                collected.event_time,
                due,
                vec![collected.clone()],
                format!("collection {} + {days} days", collected.event_time),
            )
        }
        RuleDef::RequestOrServiceEnd {
            request_working_days,
            service_end_months,
            ..
        } => {
            let by_request = triggers.deletion_requested.and_then(|r| {
                let calendar = calendar?;
                Some((
                    r,
                    clock.plus_working_days(r.event_time, *request_working_days, calendar)?,
                ))
            });
            let by_end = triggers
                .service_use_ended
                .and_then(|e| Some((e, clock.plus_months(e.event_time, *service_end_months)?)));
            let chosen = match (by_request, by_end) {
                (None, None) => {
                    return DeadlineOutcome::None {
                        why: "no deletion request and the account still uses the service".into(),
                    };
                }
                (Some(r), None) => (
                    r,
                    format!(
                        "deletion request {} + {request_working_days} working days",
                        r.0.event_time
                    ),
                ),
                (None, Some(e)) => (
                    e,
                    format!(
                        "end of service use {} + {service_end_months} calendar month(s)",
                        e.0.event_time
                    ),
                ),
                (Some(r), Some(e)) if r.1 <= e.1 => (
                    r,
                    format!(
                        "the earlier of deletion request {} + {request_working_days} working days ({}) and end of service use {} + {service_end_months} month(s) ({})",
                        r.0.event_time, r.1, e.0.event_time, e.1
                    ),
                ),
                (Some(r), Some(e)) => (
                    e,
                    format!(
                        "the earlier of end of service use {} + {service_end_months} month(s) ({}) and deletion request {} + {request_working_days} working days ({})",
                        e.0.event_time, e.1, r.0.event_time, r.1
                    ),
                ),
            };
            let ((trigger, due), explanation) = chosen;
            (
                trigger.event_time,
                due,
                vec![collected.clone(), trigger.clone()],
                explanation,
            )
        }
    };
    match apply_holds(clock_start, due_by, &triggers.holds, &mut basis) {
        Err(hold) => DeadlineOutcome::Suspended { hold },
        Ok((moved, held_for)) => {
            basis.sort_by_key(EntryRef::order_key);
            basis.dedup();
            let mut explanation = if held_for.is_zero() {
                explanation
            } else {
                format!("{explanation}, moved later by {held_for:#} of legal hold")
            };
            // With whole days a hold moves the deadline to the end of the
            // day its moved end falls in.
            let (due_by, day) = match rule.counting() {
                Counting::Instants => (moved, None),
                Counting::WholeDays => {
                    let day = moved.to_zoned_datetime(tz.clone()).date();
                    match end_of_day(day, &tz) {
                        Some(end) => (end, Some(day)),
                        None => return overflow(),
                    }
                }
            };
            if let Some(day) = day {
                explanation.push_str(&format!(
                    "; whole days in {zone}: any time on {day} is on time"
                ));
            } else if zone != "UTC" {
                explanation.push_str(&format!("; counted on the dates of {zone}"));
            }
            DeadlineOutcome::Set(Deadline {
                due_by,
                rule: rule_name.to_owned(),
                clause: rule.clause().to_owned(),
                basis,
                explanation,
                held_for,
                day,
                zone,
            })
        }
    }
}

#[cfg(test)]
mod tests;
