//! The deadline engine: when every copy of an item must be gone, and why.
//!
//! Pure: no clock, no I/O. The caller passes the triggers it knows (as of
//! the moment it judges) and the policy's rule; the answer names the rule,
//! its clause and the entries that set the deadline.
//!
//! Time arithmetic keeps the trigger's time of day, in UTC: "+ N days" adds
//! N × 24 h; "+ N months" is calendar-month arithmetic that clamps to the
//! month's last day (Jan 31 + 1 month = Feb 28 or 29); "+ N working days"
//! steps over the weekends and holidays of the item's jurisdiction. A
//! deletion is on time when its event time is at or before `due_by`.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::policy::{RuleDef, WorkingCalendar};
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

fn plus_days(at: Timestamp, days: u32) -> Option<Timestamp> {
    at.checked_add(SignedDuration::from_hours(24 * i64::from(days)))
        .ok()
}

fn plus_months(at: Timestamp, months: u32) -> Option<Timestamp> {
    let zoned = at.to_zoned_datetime(TimeZone::UTC);
    zoned
        .checked_add(i64::from(months).months())
        .ok()
        .map(|z| z.timestamp())
}

fn plus_working_days(at: Timestamp, days: u32, calendar: &WorkingCalendar) -> Option<Timestamp> {
    let zoned = at.to_zoned_datetime(TimeZone::UTC);
    let date = calendar.add_working_days(zoned.date(), days)?;
    date.to_datetime(zoned.time())
        .to_zoned_datetime(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
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
                plus_days(terminated.event_time, *after_termination_days),
                plus_days(collected.event_time, *minimum_days),
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
            let Some(due) = plus_days(collected.event_time, *days) else {
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
                    plus_working_days(r.event_time, *request_working_days, calendar)?,
                ))
            });
            let by_end = triggers
                .service_use_ended
                .and_then(|e| Some((e, plus_months(e.event_time, *service_end_months)?)));
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
        Ok((due_by, held_for)) => {
            basis.sort_by_key(EntryRef::order_key);
            basis.dedup();
            let explanation = if held_for.is_zero() {
                explanation
            } else {
                format!("{explanation}, moved later by {held_for:#} of legal hold")
            };
            DeadlineOutcome::Set(Deadline {
                due_by,
                rule: rule_name.to_owned(),
                clause: rule.clause().to_owned(),
                basis,
                explanation,
                held_for,
            })
        }
    }
}

#[cfg(test)]
mod tests;
