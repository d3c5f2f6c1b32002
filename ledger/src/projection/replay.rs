//! What a replay covers: a point in the ledger's history (a cut through
//! every chain) and the part of the data it is about. Pure.
//!
//! A point is either a moment, meaning every entry that had reached the
//! ledger by then (by `received_at`), or a chain's seq, meaning that
//! chain's entries up to and including the seq and every other chain's
//! entries received no later than it. Each chain is cut as a prefix: it
//! stops at its first entry the point does not admit, so that a clock that
//! stepped back cannot make a replay skip an entry and keep a later one.

use std::str::FromStr;

use jiff::Timestamp;
use lifeledger_schemas::Event;

use super::{ItemState, account_key};

/// A point in the ledger's history, as written on a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    /// Every entry received at or before this moment.
    Time(Timestamp),
    /// `seq` of `chain` (of the only event chain when `None`), and every
    /// other chain's entries received by then.
    Seq { chain: Option<String>, seq: u64 },
}

impl FromStr for Point {
    type Err = String;

    /// `SEQ`, `CHAIN@SEQ`, an RFC 3339 time, or a date (its start, UTC).
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let seq = s.parse().map_err(|_| format!("seq {s:?} is too large"))?;
            return Ok(Point::Seq { chain: None, seq });
        }
        if let Some((chain, seq)) = s.rsplit_once('@') {
            let seq = seq
                .parse()
                .map_err(|_| format!("{s:?}: {seq:?} after '@' is not a seq"))?;
            return Ok(Point::Seq {
                chain: Some(chain.to_owned()),
                seq,
            });
        }
        parse_moment(s).map(Point::Time).map_err(|_| {
            format!(
                "{s:?} is not a point: give a seq (1200), a chain's seq (kafka:events:0@1200), \
                 an RFC 3339 time or a date (YYYY-MM-DD)"
            )
        })
    }
}

/// An RFC 3339 time, or a date for its start in UTC.
pub fn parse_moment(s: &str) -> Result<Timestamp, String> {
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    let date: jiff::civil::Date = s
        .parse()
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a date (YYYY-MM-DD)"))?;
    date.to_datetime(jiff::civil::Time::midnight())
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|e| e.to_string())
}

/// A point resolved against a ledger: which entries a replay folds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Entries received at or before this moment are in (on every chain
    /// but the pinned one). It is also the moment verdicts are judged at.
    pub moment: Timestamp,
    /// A chain cut by seq instead: entries with seq at or below it are in.
    pub pinned: Option<(String, u64)>,
}

impl Cut {
    /// The ledger as it is: every entry.
    pub fn everything(now: Timestamp) -> Cut {
        Cut {
            moment: now,
            pinned: None,
        }
    }

    pub fn at(moment: Timestamp) -> Cut {
        Cut {
            moment,
            pinned: None,
        }
    }

    /// Whether the entry at `seq` of `chain`, received at `received_at`,
    /// is on this side of the cut.
    pub fn admits(&self, chain: &str, seq: u64, received_at: Timestamp) -> bool {
        match &self.pinned {
            Some((pinned, last)) if pinned == chain => seq <= *last,
            _ => received_at <= self.moment,
        }
    }

    /// Whether every entry this cut admits is admitted by `later` too, so
    /// that a replay can go on from this cut to `later`.
    pub fn precedes(&self, later: &Cut) -> bool {
        if self.moment > later.moment {
            return false;
        }
        match (&self.pinned, &later.pinned) {
            (Some((a, s)), Some((b, t))) if a == b => s <= t,
            // A chain pinned here but not later is cut by a moment no
            // earlier than ours; pinned later but not here, the entry it
            // pins was received no earlier than our moment.
            _ => true,
        }
    }

    /// How the cut reads in output.
    pub fn describe(&self) -> String {
        match &self.pinned {
            Some((chain, seq)) => format!(
                "{chain} up to seq {seq}, other chains up to {}",
                self.moment
            ),
            None => format!("every entry received by {}", self.moment),
        }
    }
}

/// What part of the data a replay is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// One account, keyed `APPID/UIN`.
    Account(String),
    Item(String),
}

impl Scope {
    /// Whether a replay in this scope must fold the event. Policy
    /// publications always; for an item, also every account-wide event,
    /// since the item's account is known only once the item is seen.
    pub fn wants(&self, event: &Event) -> bool {
        match self {
            Scope::All => true,
            _ if event.account.is_none() => true,
            Scope::Account(key) => event.account.as_ref().map(account_key).as_ref() == Some(key),
            Scope::Item(item) => event.item().is_none_or(|i| i == item),
        }
    }

    /// Whether an item is in scope.
    pub fn covers(&self, item: &ItemState) -> bool {
        match self {
            Scope::All => true,
            Scope::Account(key) => item.account.as_ref().map(account_key).as_ref() == Some(key),
            Scope::Item(id) => &item.item_id == id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn points_parse() {
        assert_eq!(
            "1200".parse::<Point>(),
            Ok(Point::Seq {
                chain: None,
                seq: 1200
            })
        );
        assert_eq!(
            "kafka:events:3@17".parse::<Point>(),
            Ok(Point::Seq {
                chain: Some("kafka:events:3".into()),
                seq: 17
            })
        );
        assert_eq!(
            "2026-03-01".parse::<Point>(),
            Ok(Point::Time("2026-03-01T00:00:00Z".parse().unwrap()))
        );
        assert!("kafka@x".parse::<Point>().is_err());
        assert!("yesterday".parse::<Point>().is_err());
    }

    #[test]
    fn pinned_chain_is_cut_by_seq_others_by_time() {
        let cut = Cut {
            moment: ts(100),
            pinned: Some(("a".into(), 5)),
        };
        assert!(cut.admits("a", 5, ts(999)));
        assert!(!cut.admits("a", 6, ts(0)));
        assert!(cut.admits("b", 9, ts(100)));
        assert!(!cut.admits("b", 0, ts(101)));
    }

    proptest! {
        /// Going on from a cut to one it precedes never drops an entry:
        /// for cuts by time, and for cuts pinned on the same chain.
        #[test]
        fn precedes_means_subset(
            m1 in 0i64..50, m2 in 0i64..50,
            pins in proptest::option::of((0u64..10, 0u64..10)),
            on_pinned in any::<bool>(), seq in 0u64..10, received in 0i64..50,
        ) {
            let (p1, p2) = match pins {
                Some((s1, s2)) => (Some(("a".to_owned(), s1)), Some(("a".to_owned(), s2))),
                None => (None, None),
            };
            let c1 = Cut { moment: ts(m1), pinned: p1 };
            let c2 = Cut { moment: ts(m2), pinned: p2 };
            let chain = if on_pinned { "a" } else { "b" };
            if c1.precedes(&c2) && c1.admits(chain, seq, ts(received)) {
                prop_assert!(c2.admits(chain, seq, ts(received)));
            }
            if c1.precedes(&c2) && c2.precedes(&c1) {
                prop_assert_eq!(c1.admits(chain, seq, ts(received)), c2.admits(chain, seq, ts(received)));
            }
        }
    }
}
