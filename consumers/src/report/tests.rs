use jiff::{SignedDuration, Timestamp};
use lifeledger_ledger::deadline::Deadline;
use lifeledger_ledger::projection::verdict::{ItemVerdict, Status};
use proptest::prelude::*;

use super::*;

fn at(days: i64) -> Timestamp {
    // 2026-11-24T00:00:00Z plus days.
    Timestamp::from_second(1_795_478_400 + days * 86_400).unwrap()
}

fn verdict(status: Status, due: Option<(i64, &str)>) -> ItemVerdict {
    ItemVerdict {
        item_id: "i".into(),
        account: None,
        category: None,
        as_of: at(0),
        policy_version: "p".into(),
        status,
        violations: vec![],
        deadline: due.map(|(d, rule)| Deadline {
            due_by: at(d),
            rule: rule.into(),
            clause: String::new(),
            basis: vec![],
            explanation: String::new(),
            held_for: SignedDuration::ZERO,
            day: None,
            zone: "UTC".into(),
        }),
        reported_late: false,
        reported_late_imported: false,
        copies: vec![],
        considered: vec![],
    }
}

#[test]
fn escaping_covers_markup_and_quotes() {
    assert_eq!(
        esc(r#"<a href="x">&'"#),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}

#[test]
fn deletions_fall_in_their_month() {
    let vs = vec![
        verdict(Status::DeletedOnTime { deleted_at: at(-3) }, None),
        verdict(
            Status::DeletedLate {
                deleted_at: at(-40),
                late_by: SignedDuration::from_hours(5),
            },
            None,
        ),
        verdict(
            Status::DeletedOnTime {
                deleted_at: at(-400),
            },
            None,
        ),
        verdict(Status::DeletedOnTime { deleted_at: at(3) }, None),
    ];
    let bars = deletions_by_month(&vs, at(0), 12);
    assert_eq!(bars.labels.last().map(String::as_str), Some("2026-11"));
    assert_eq!(bars.labels[10], "2026-10");
    assert_eq!(bars.series[0].2[11], 1);
    assert_eq!(bars.series[1].2[10], 1);
    assert_eq!(
        bars.series[0].2.iter().sum::<u64>() + bars.series[1].2.iter().sum::<u64>(),
        2
    );
}

proptest! {
    /// Every running deadline within the window is counted exactly once,
    /// in the week it falls in; nothing else is counted.
    #[test]
    fn upcoming_deadlines_count_each_due_item_once(
        items in proptest::collection::vec((-30i64..120, 0u8..3, any::<bool>()), 0..60)
    ) {
        let vs: Vec<ItemVerdict> = items
            .iter()
            .map(|(d, rule, due)| {
                let rule = ["A", "B", "C"][*rule as usize];
                let status = if *due {
                    Status::Due { remaining: at(*d).duration_since(at(0)) }
                } else {
                    Status::Retained { why: String::new() }
                };
                verdict(status, Some((*d, rule)))
            })
            .collect();
        let bars = upcoming_deadlines(&vs, at(0), 12);
        let counted: u64 = bars.series.iter().flat_map(|s| s.2.iter()).sum();
        let expected = items.iter().filter(|(d, _, due)| *due && (0..84).contains(d)).count() as u64;
        prop_assert_eq!(counted, expected);
        for (d, _, due) in &items {
            if *due && (0..84).contains(d) {
                let week = (*d / 7) as usize;
                prop_assert!(bars.series.iter().any(|s| s.2[week] > 0));
            }
        }
    }
}

#[test]
fn a_timeline_row_says_when_a_request_did_not_apply() {
    use lifeledger_ledger::projection::EntryRef;
    use lifeledger_ledger::projection::diff::VerdictBrief;
    use lifeledger_ledger::projection::timeline::{ItemStanding, Row};
    use lifeledger_ledger::projection::verdict::Consideration;
    let request = EntryRef {
        chain: "file".into(),
        seq: 7,
        event_id: "r1".into(),
        event_time: at(0),
        received_at: at(0),
    };
    let row = |seq| Row {
        chain: "file".into(),
        seq,
        hash: "00".repeat(32),
        source: "f:8".into(),
        event_id: "r1".into(),
        kind: "deletion_requested".into(),
        item_id: None,
        event_time: at(0),
        received_at: at(0),
        judged_as_of: at(0),
        repeated_deletion_of_copy_gone_since: None,
        imported_by: None,
        ahead_of_receipt: None,
        standings: vec![ItemStanding {
            item_id: "assets".into(),
            verdict: VerdictBrief {
                status: "retained".into(),
                violations: vec![],
                considered: vec![Consideration::RequestDidNotApply {
                    at: request.clone(),
                    rule: "A".into(),
                    clause: "PP, retention rule A".into(),
                }],
            },
            deadline: None,
        }],
    };
    let text = event_text(&row(7));
    assert!(
        text.starts_with("deletion_requested (considered for assets: does not apply, rule A"),
        "{text}"
    );
    assert!(text.contains("PP, retention rule A"), "{text}");
    // Another entry's row does not claim it.
    assert_eq!(event_text(&row(8)), "deletion_requested");
}
