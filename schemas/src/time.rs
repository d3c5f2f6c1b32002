//! `event_time` as the schema states it: the RFC 3339 subset
//! `YYYY-MM-DDThh:mm:ss[.f{1,9}](Z|±hh:mm)`, capital `T` and `Z`, no leap
//! second, years 1900 to 9799 (so that every deadline a policy can set,
//! at most 100 years on, is representable), and a date that exists.
//!
//! The schema's `pattern` says all of this except the last: a regular
//! expression cannot tell 2026-02-30 from 2026-02-28. That one rule is
//! the decoder's alone, and its reason says so.

use jiff::Timestamp;

/// The earliest and latest years an `event_time` may be written in.
pub const FIRST_YEAR: i16 = 1900;
pub const LAST_YEAR: i16 = 9799;

/// Why a text is not an `event_time`.
pub fn parse_event_time(text: &str) -> Result<Timestamp, String> {
    let shape = "must be RFC 3339 as the schema states: YYYY-MM-DDThh:mm:ss, an optional fraction of 1 to 9 digits after `.`, then `Z` or ±hh:mm";
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| -> Option<u32> {
        let s = b.get(from..from + n)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| s.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0, 4),
        digits(5, 2),
        digits(8, 2),
        digits(11, 2),
        digits(14, 2),
        digits(17, 2),
    ) else {
        return Err(shape.to_owned());
    };
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return Err(shape.to_owned());
    }
    let mut i = 19;
    if at(i, b'.') {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return Err(shape.to_owned());
        }
        i += 1 + n;
    }
    match b.get(i) {
        Some(b'Z') if b.len() == i + 1 => {}
        Some(b'+' | b'-') if b.len() == i + 6 && at(i + 3, b':') => {
            let (Some(oh), Some(om)) = (digits(i + 1, 2), digits(i + 4, 2)) else {
                return Err(shape.to_owned());
            };
            if oh > 23 || om > 59 {
                return Err(format!(
                    "{shape}; the offset's hours must be 00 to 23 and its minutes 00 to 59"
                ));
            }
        }
        _ => return Err(shape.to_owned()),
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(format!(
            "{shape}; month 01-12, day 01-31, hour 00-23, minute 00-59"
        ));
    }
    if second > 59 {
        return Err(
            "leap seconds (second 60) are not accepted: write 23:59:59 or the next second"
                .to_owned(),
        );
    }
    let year_ok = i16::try_from(year).is_ok_and(|y| (FIRST_YEAR..=LAST_YEAR).contains(&y));
    if !year_ok {
        return Err(format!(
            "the year must be {FIRST_YEAR} to {LAST_YEAR}, so that every deadline is representable"
        ));
    }
    text.parse::<Timestamp>().map_err(|e| {
        format!("the date does not exist ({e}); the schema's pattern cannot say this, the ledger checks it")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stated_subset_and_nothing_else() {
        for ok in [
            "2026-03-02T09:15:00Z",
            "2026-03-02T09:15:00.5Z",
            "2026-03-02T09:15:00.123456789+08:00",
            "2026-03-02T09:15:00-23:59",
            "1900-01-01T00:00:00Z",
            "9799-12-31T23:59:59Z",
            "2028-02-29T00:00:00Z",
        ] {
            assert!(parse_event_time(ok).is_ok(), "{ok}");
        }
        for bad in [
            "2026-03-02 09:15:00Z",
            "2026-03-02T09:15Z",
            "2026-03-02T09:15:00+0800",
            "2026-03-02T09:15:00+08:00:00",
            "2026-03-02T09:15:00+24:00",
            "2026-03-02T09:15:00,5Z",
            "2026-03-02t09:15:00Z",
            "2026-03-02T09:15:00z",
            "2026-03-02T09:15:00",
            "2026-03-02T09:15:00.Z",
            "2026-03-02T09:15:00.1234567890Z",
            "2026-12-31T23:59:60Z",
            "0000-01-01T00:00:00Z",
            "9999-12-30T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-03-02T09:15:00Z ",
            "+2026-03-02T09:15:00Z",
        ] {
            assert!(parse_event_time(bad).is_err(), "{bad}");
        }
        assert!(
            parse_event_time("2026-12-31T23:59:60Z")
                .unwrap_err()
                .contains("leap second")
        );
    }
}
