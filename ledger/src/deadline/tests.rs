use jiff::civil::{Date, Weekday};
use proptest::prelude::*;

use super::*;
use crate::policy::Counting;

fn at(secs: i64, seq: u64) -> EntryRef {
    let t = Timestamp::from_second(secs).unwrap();
    EntryRef {
        chain: "c".into(),
        seq,
        event_id: format!("e{seq}"),
        event_time: t,
        received_at: t,
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn at_time(s: &str, seq: u64) -> EntryRef {
    at(ts(s).as_second(), seq)
}

const DAY: i64 = 86_400;

fn rule_a() -> RuleDef {
    RuleDef::HostingTermination {
        minimum_days: 180,
        after_termination_days: 30,
        clause: "A".into(),
        counting: Counting::Instants,
        counting_clause: String::new(),
    }
}

fn rule_b() -> RuleDef {
    RuleDef::FixedAfterCollection {
        minimum_days: 180,
        days: 180,
        clause: "B".into(),
        counting: Counting::Instants,
        counting_clause: String::new(),
    }
}

fn rule_c() -> RuleDef {
    RuleDef::RequestOrServiceEnd {
        request_working_days: 30,
        service_end_months: 1,
        clause: "C".into(),
        counting: Counting::Instants,
        counting_clause: String::new(),
    }
}

fn weekdays_only() -> WorkingCalendar {
    WorkingCalendar::new(
        vec![Weekday::Saturday, Weekday::Sunday],
        vec![],
        "cal".into(),
    )
}

fn due(outcome: DeadlineOutcome) -> Timestamp {
    match outcome {
        DeadlineOutcome::Set(d) => d.due_by,
        other => panic!("no deadline: {other:?}"),
    }
}

// Collection times between 2000 and 2100.
const T0: i64 = 946_684_800;
const T1: i64 = 4_102_444_800;

proptest! {
    #[test]
    fn rule_b_is_collection_plus_180_days(c in T0..T1) {
        let collected = at(c, 0);
        let t = Triggers { collected: Some(&collected), ..Triggers::default() };
        prop_assert_eq!(due(compute("B", &rule_b(), None, &t)).as_second(), c + 180 * DAY);
    }

    #[test]
    fn rule_a_is_the_later_bound_and_nothing_while_hosting_runs(c in T0..T1, after in 0i64..400 * DAY) {
        let collected = at(c, 0);
        let terminated = at(c + after, 1);
        let running = Triggers { collected: Some(&collected), ..Triggers::default() };
        let is_none = matches!(compute("A", &rule_a(), None, &running), DeadlineOutcome::None { .. });
        prop_assert!(is_none);
        let t = Triggers { collected: Some(&collected), hosting_terminated: Some(&terminated), ..Triggers::default() };
        let d = due(compute("A", &rule_a(), None, &t)).as_second();
        prop_assert_eq!(d, (c + after + 30 * DAY).max(c + 180 * DAY));
    }

    #[test]
    fn rule_c_takes_the_earlier_trigger(c in T0..T1, req in 0i64..200 * DAY, end in 0i64..200 * DAY) {
        let cal = weekdays_only();
        let collected = at(c, 0);
        let request = at(c + req, 1);
        let ended = at(c + end, 2);
        let only_request = Triggers { collected: Some(&collected), deletion_requested: Some(&request), ..Triggers::default() };
        let only_end = Triggers { collected: Some(&collected), service_use_ended: Some(&ended), ..Triggers::default() };
        let both = Triggers { collected: Some(&collected), deletion_requested: Some(&request), service_use_ended: Some(&ended), ..Triggers::default() };
        let r = due(compute("C", &rule_c(), Some(&cal), &only_request));
        let e = due(compute("C", &rule_c(), Some(&cal), &only_end));
        prop_assert_eq!(due(compute("C", &rule_c(), Some(&cal), &both)), r.min(e));
        // 30 working days is at least 6 weeks minus a weekend, at most 6 weeks.
        let span = r.as_second() - request.event_time.as_second();
        prop_assert!((40 * DAY..=44 * DAY).contains(&span), "{span}");
    }

    #[test]
    fn working_days_land_on_working_days_and_count_exactly(start in 0i64..3650, n in 0u32..80) {
        let cal = WorkingCalendar::new(
            vec![Weekday::Friday, Weekday::Saturday],
            vec!["2026-05-01".parse().unwrap(), "2026-12-25".parse().unwrap()],
            "c".into(),
        );
        let date = "2024-01-01".parse::<Date>().unwrap().checked_add(jiff::SignedDuration::from_hours(24 * start)).unwrap();
        let end = cal.add_working_days(date, n).unwrap();
        let mut counted = 0;
        let mut day = date;
        while day < end {
            day = day.tomorrow().unwrap();
            if cal.is_working_day(day) { counted += 1; }
        }
        prop_assert_eq!(counted, n);
        prop_assert!(n == 0 || cal.is_working_day(end));
    }

    #[test]
    fn a_released_hold_moves_the_deadline_by_its_length(c in T0..T1, start in 1i64..179 * DAY, len in 1i64..100 * DAY) {
        let collected = at(c, 0);
        let placed = at(c + start, 1);
        let released = at(c + start + len, 2);
        let t = Triggers { collected: Some(&collected), holds: vec![(&placed, Some(&released))], ..Triggers::default() };
        match compute("B", &rule_b(), None, &t) {
            DeadlineOutcome::Set(d) => {
                prop_assert_eq!(d.due_by.as_second(), c + 180 * DAY + len);
                prop_assert_eq!(d.held_for.as_secs(), len);
                prop_assert!(d.basis.contains(&placed) && d.basis.contains(&released));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

#[test]
fn one_month_after_january_31_is_the_last_day_of_february() {
    let collected = at_time("2026-01-01T00:00:00Z", 0);
    let ended = at_time("2026-01-31T10:00:00Z", 1);
    let t = Triggers {
        collected: Some(&collected),
        service_use_ended: Some(&ended),
        ..Triggers::default()
    };
    assert_eq!(
        due(compute("C", &rule_c(), None, &t)),
        ts("2026-02-28T10:00:00Z")
    );
    let leap = at_time("2028-01-31T10:00:00Z", 1);
    let t = Triggers {
        collected: Some(&collected),
        service_use_ended: Some(&leap),
        ..Triggers::default()
    };
    assert_eq!(
        due(compute("C", &rule_c(), None, &t)),
        ts("2028-02-29T10:00:00Z")
    );
}

#[test]
fn a_hold_never_released_suspends_the_deadline() {
    let collected = at_time("2026-01-01T00:00:00Z", 0);
    let placed = at_time("2026-03-01T00:00:00Z", 1);
    let t = Triggers {
        collected: Some(&collected),
        holds: vec![(&placed, None)],
        ..Triggers::default()
    };
    assert_eq!(
        compute("B", &rule_b(), None, &t),
        DeadlineOutcome::Suspended {
            hold: placed.clone()
        }
    );
    // A hold placed after the deadline does not touch it.
    let late = at_time("2026-12-01T00:00:00Z", 2);
    let t = Triggers {
        collected: Some(&collected),
        holds: vec![(&late, None)],
        ..Triggers::default()
    };
    assert_eq!(
        due(compute("B", &rule_b(), None, &t)),
        ts("2026-06-30T00:00:00Z")
    );
}

#[test]
fn every_deadline_names_its_rule_clause_and_entries() {
    let collected = at_time("2026-01-01T00:00:00Z", 0);
    let terminated = at_time("2026-09-01T00:00:00Z", 5);
    let t = Triggers {
        collected: Some(&collected),
        hosting_terminated: Some(&terminated),
        ..Triggers::default()
    };
    let DeadlineOutcome::Set(d) = compute("A", &rule_a(), None, &t) else {
        panic!()
    };
    assert_eq!(d.rule, "A");
    assert_eq!(d.clause, "A");
    assert_eq!(d.basis, vec![collected, terminated]);
    assert_eq!(d.due_by, ts("2026-10-01T00:00:00Z"));
    assert!(
        d.explanation.contains("later of hosting termination"),
        "{}",
        d.explanation
    );
}

/// Any rule within the policy's bounds, any calendar `policy check`
/// accepts, and event times anywhere in the event schema's range (written
/// with any offset): the engine never panics, and wherever the rule's
/// trigger is recorded it sets a deadline (or a hold suspends it), never
/// "no deadline".
mod within_bounds {
    use super::*;
    use crate::policy::{MAX_DAYS, MAX_MONTHS, MAX_WORKING_DAYS};

    /// 1900-01-01T00:00:00+23:59 to 9799-12-31T23:59:59-23:59, in seconds.
    fn instants() -> impl Strategy<Value = i64> {
        let first = ts("1900-01-01T00:00:00+23:59").as_second();
        let last = ts("9799-12-31T23:59:59-23:59").as_second();
        prop_oneof![
            first..=last,
            Just(first),
            Just(last),
            (last - 400 * DAY)..=last,
        ]
    }

    fn rules() -> impl Strategy<Value = RuleDef> {
        prop_oneof![
            (0..=MAX_DAYS, 0..=MAX_DAYS).prop_map(|(m, a)| RuleDef::HostingTermination {
                minimum_days: m,
                after_termination_days: a,
                clause: "A".into(),
                counting: Counting::Instants,
                counting_clause: String::new(),
            }),
            (0..=MAX_DAYS)
                .prop_flat_map(|d| (0..=d, Just(d)))
                .prop_map(|(m, d)| {
                    RuleDef::FixedAfterCollection {
                        minimum_days: m,
                        days: d,
                        clause: "B".into(),
                        counting: Counting::Instants,
                        counting_clause: String::new(),
                    }
                }),
            (0..=MAX_WORKING_DAYS, 0..=MAX_MONTHS).prop_map(|(w, m)| {
                RuleDef::RequestOrServiceEnd {
                    request_working_days: w,
                    service_end_months: m,
                    clause: "C".into(),
                    counting: Counting::Instants,
                    counting_clause: String::new(),
                }
            }),
        ]
    }

    fn calendars() -> impl Strategy<Value = WorkingCalendar> {
        let days = [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
            Weekday::Saturday,
            Weekday::Sunday,
        ];
        (
            proptest::sample::subsequence(days.to_vec(), 0..=6),
            proptest::collection::vec((1900i16..=9999, 1i8..=12, 1i8..=28), 0..20),
        )
            .prop_map(|(weekend, holidays)| {
                let holidays = holidays
                    .into_iter()
                    .map(|(y, m, d)| Date::new(y, m, d).unwrap())
                    .collect();
                WorkingCalendar::new(weekend, holidays, "cal".into())
            })
    }

    proptest! {
        #[test]
        fn every_recorded_trigger_sets_a_deadline(
            rule in rules(),
            calendar in calendars(),
            times in proptest::collection::vec(instants(), 4),
            hold in proptest::option::of((instants(), proptest::option::of(instants()))),
        ) {
            let collected = at(times[0], 0);
            let trigger = at(times[1], 1);
            let placed;
            let released;
            let mut holds = Vec::new();
            if let Some((p, r)) = hold {
                placed = at(p, 2);
                released = r.map(|r| at(r.max(p), 3));
                holds.push((&placed, released.as_ref()));
            }
            let triggers = Triggers {
                collected: Some(&collected),
                hosting_terminated: Some(&trigger),
                service_use_ended: Some(&trigger),
                deletion_requested: Some(&trigger),
                holds,
            };
            let outcome = compute("R", &rule, Some(&calendar), &triggers);
            prop_assert!(
                !matches!(outcome, DeadlineOutcome::None { .. }),
                "no deadline under {rule:?}: {outcome:?}"
            );
        }
    }
}

/// Counting on a calendar's own dates, in its time zone.
mod local_dates {
    use super::*;
    use crate::policy::Zone;

    fn zoned(name: &str) -> WorkingCalendar {
        weekdays_only().in_zone(Zone::named(name, "test".into()).unwrap())
    }

    fn rule(mut r: RuleDef, whole: bool) -> RuleDef {
        if whole {
            match &mut r {
                RuleDef::HostingTermination { counting, .. }
                | RuleDef::FixedAfterCollection { counting, .. }
                | RuleDef::RequestOrServiceEnd { counting, .. } => *counting = Counting::WholeDays,
            }
        }
        r
    }

    fn set(outcome: DeadlineOutcome) -> Deadline {
        match outcome {
            DeadlineOutcome::Set(d) => d,
            other => panic!("no deadline: {other:?}"),
        }
    }

    #[test]
    fn a_month_counts_on_tokyo_dates() {
        // 00:30 on 1 March in Tokyo is still 28 February in UTC.
        let collected = at_time("2026-01-10T00:00:00Z", 0);
        let ended = at_time("2026-03-01T00:30:00+09:00", 1);
        let triggers = Triggers {
            collected: Some(&collected),
            service_use_ended: Some(&ended),
            ..Triggers::default()
        };
        let utc = set(compute("C", &rule_c(), Some(&weekdays_only()), &triggers));
        assert_eq!(utc.due_by, ts("2026-03-28T15:30:00Z"));
        let tokyo = set(compute(
            "C",
            &rule_c(),
            Some(&zoned("Asia/Tokyo")),
            &triggers,
        ));
        assert_eq!(tokyo.due_by, ts("2026-04-01T00:30:00+09:00"));
        assert_eq!(tokyo.zone, "Asia/Tokyo");
        let whole = set(compute(
            "C",
            &rule(rule_c(), true),
            Some(&zoned("Asia/Tokyo")),
            &triggers,
        ));
        assert_eq!(whole.day, Some(Date::new(2026, 4, 1).unwrap()));
        assert_eq!(whole.due_by, ts("2026-04-01T23:59:59.999999999+09:00"));
    }

    #[test]
    fn a_sunday_evening_request_in_new_york_counts_from_sunday() {
        // Sunday 22:00 in New York is Monday 02:00 in UTC: counted from
        // Monday in UTC, Monday itself does not count; counted from Sunday
        // in New York, it does.
        let collected = at_time("2026-01-10T00:00:00Z", 0);
        let request = at_time("2026-03-15T22:00:00-04:00", 1);
        let triggers = Triggers {
            collected: Some(&collected),
            deletion_requested: Some(&request),
            ..Triggers::default()
        };
        let utc = set(compute("C", &rule_c(), Some(&weekdays_only()), &triggers));
        let ny = set(compute(
            "C",
            &rule_c(),
            Some(&zoned("America/New_York")),
            &triggers,
        ));
        // From Monday 16 March (UTC): Tuesday 17 is the first working day,
        // Monday 27 April the 30th.
        assert_eq!(utc.due_by, ts("2026-04-27T02:00:00Z"));
        // From Sunday 15 March (New York): Monday 16 is the first, Friday
        // 24 April the 30th, at 22:00 local.
        assert_eq!(ny.due_by, ts("2026-04-24T22:00:00-04:00"));
    }

    #[test]
    fn days_keep_the_wall_clock_across_a_dst_change() {
        // New York moves to daylight time on 8 March 2026: 30 days after
        // noon on 7 March is noon on 6 April, one hour short of 30 × 24 h.
        let collected = at_time("2026-03-07T12:00:00-05:00", 0);
        let b30 = RuleDef::FixedAfterCollection {
            minimum_days: 0,
            days: 30,
            clause: "B".into(),
            counting: Counting::Instants,
            counting_clause: String::new(),
        };
        let triggers = Triggers {
            collected: Some(&collected),
            ..Triggers::default()
        };
        let ny = set(compute(
            "B",
            &b30,
            Some(&zoned("America/New_York")),
            &triggers,
        ));
        assert_eq!(ny.due_by, ts("2026-04-06T12:00:00-04:00"));
        assert_eq!(
            ny.due_by.duration_since(collected.event_time),
            SignedDuration::from_hours(30 * 24 - 1)
        );
        // Whole days: all of 6 April, New York time.
        let whole = set(compute(
            "B",
            &rule(b30, true),
            Some(&zoned("America/New_York")),
            &triggers,
        ));
        assert_eq!(
            whole.due_by,
            ts("2026-04-07T04:00:00Z") - SignedDuration::from_nanos(1)
        );
        assert_eq!(
            whole.passed_by(ts("2026-04-07T05:00:00Z")),
            SignedDuration::from_hours(1)
        );
        assert!(whole.passed_by(ts("2026-04-07T03:59:59Z")).is_negative());
    }

    #[test]
    fn a_whole_day_minimum_ends_when_its_day_begins() {
        let collected = ts("2026-01-01T20:00:00Z"); // 2 January, 04:00 in Singapore
        let sg = zoned("Asia/Singapore");
        assert_eq!(
            minimum_until(collected, 180, Counting::Instants, Some(&sg)),
            Some(ts("2026-06-30T20:00:00Z"))
        );
        // Day 180 after 2 January is 1 July: a deletion any time on 1 July
        // (Singapore) is not early.
        assert_eq!(
            minimum_until(collected, 180, Counting::WholeDays, Some(&sg)),
            Some(ts("2026-07-01T00:00:00+08:00"))
        );
    }

    #[test]
    fn a_hold_moves_a_whole_day_deadline_to_the_end_of_a_day() {
        let collected = at_time("2026-01-01T00:00:00Z", 0);
        let placed = at_time("2026-02-01T00:00:00Z", 1);
        let released = at_time("2026-02-01T06:00:00Z", 2);
        let b = rule(rule_b(), true);
        let triggers = Triggers {
            collected: Some(&collected),
            holds: vec![(&placed, Some(&released))],
            ..Triggers::default()
        };
        let d = set(compute("B", &b, Some(&weekdays_only()), &triggers));
        // 30 June, moved 6 hours into 1 July: all of 1 July.
        assert_eq!(d.day, Some(Date::new(2026, 7, 1).unwrap()));
        assert_eq!(
            d.due_by,
            ts("2026-07-02T00:00:00Z") - SignedDuration::from_nanos(1)
        );
    }
}
