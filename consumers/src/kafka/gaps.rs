//! Offset continuity on a partition (pure): a message past the next
//! expected offset is never taken silently.
//!
//! A consumer resumes a partition at its cursor. If the first message it
//! gets lies beyond the cursor, either the broker has nothing in between
//! (compacted records, transaction markers, records deleted by retention)
//! or the broker skipped records: tansu 0.6, asked to fetch from an offset
//! inside a record batch, answers with the *next* batch, so the rest of the
//! batch is never delivered. The two cannot be told apart from one
//! message, so the consumer reads the partition again from a little
//! earlier (doubling the distance each time) and skips what it already
//! has. Reading on from before the cursor, the broker either delivers the
//! missing offsets (the gap is healed) or steps from an offset below the
//! cursor straight past it.
//!
//! One such answer is not proof of absence either: tansu 0.6 raises a
//! partition's high watermark *before* it stores the batch, so while two
//! producers write one partition, a later batch can be readable before an
//! earlier one is. The consumer therefore reads the partition again until
//! the broker has answered the same way for [`CONFIRM_ABSENCE_MS`], and
//! only then takes the gap as *absent at the broker* (and counts it).

/// How long the broker must keep answering as if offsets were absent
/// before the consumer believes it. Longer than any store delay seen on
/// tansu under load (milliseconds); each true absence (a transaction
/// marker, a compacted record) costs this much on its partition.
pub const CONFIRM_ABSENCE_MS: u64 = 2_000;

/// A rewind in progress on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewind {
    /// The offset the partition is missing.
    pub expected: i64,
    /// How far before `expected` the last seek went.
    pub distance: i64,
    /// Whether a message below `expected` arrived since the last seek: the
    /// broker is reading continuously from before the cursor.
    pub crossed: bool,
    /// Seeks that went to offset 0 (or the log start) without crossing.
    pub at_start: u32,
    /// When (milliseconds on the caller's clock) the broker first answered
    /// as if `expected` were absent; `None` until it has.
    pub absent_since_ms: Option<u64>,
}

impl Rewind {
    fn new(expected: i64, target: i64) -> Self {
        Rewind {
            expected,
            distance: 1,
            crossed: false,
            at_start: u32::from(target == 0),
            absent_since_ms: None,
        }
    }

    /// Where the last seek went.
    fn target(&self) -> i64 {
        self.expected.saturating_sub(self.distance).max(0)
    }

    /// Goes further back for the next seek.
    fn widen(&mut self) -> i64 {
        self.distance = self.distance.saturating_mul(2);
        self.crossed = false;
        let target = self.target();
        if target == 0 {
            self.at_start += 1;
        }
        target
    }
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Take it: it is the next offset (or the partition has no cursor).
    Take,
    /// The gap before it was healed by a rewind: take it.
    TakeHealed { missing_from: i64 },
    /// The broker holds nothing in `[from, to)`: take it.
    TakeAfterAbsent { from: i64, to: i64 },
    /// Below the cursor: already recorded or pending here.
    Skip,
    /// Not the expected offset: seek here and read again.
    SeekTo(i64),
    /// The broker answered as if `[from, to)` were absent, for less than
    /// [`CONFIRM_ABSENCE_MS`] so far (`first`: the first such answer):
    /// seek to `target` and ask again.
    ConfirmAbsence {
        from: i64,
        to: i64,
        target: i64,
        first: bool,
    },
}

/// How many seeks to the partition's start without crossing the cursor
/// prove that nothing is there (more than one: a message fetched before a
/// seek might still arrive after it).
const SEEKS_AT_START: u32 = 3;

/// Decides what to do with a message at `offset` on a partition whose
/// cursor (next offset to record) is `cursor`, arriving at `now_ms` (the
/// caller's monotonic clock), updating the partition's rewind state.
pub fn step(rewind: &mut Option<Rewind>, cursor: Option<i64>, offset: i64, now_ms: u64) -> Step {
    let Some(expected) = cursor else {
        *rewind = None;
        return Step::Take;
    };
    if offset < expected {
        if let Some(r) = rewind.as_mut() {
            r.crossed = true;
        }
        return Step::Skip;
    }
    if offset == expected {
        return match rewind.take() {
            Some(r) if r.expected == expected => Step::TakeHealed {
                missing_from: expected,
            },
            _ => Step::Take,
        };
    }
    match rewind {
        Some(r) if r.expected == expected && (r.crossed || r.at_start >= SEEKS_AT_START) => {
            match r.absent_since_ms {
                Some(since) if now_ms.saturating_sub(since) >= CONFIRM_ABSENCE_MS => {
                    *rewind = None;
                    Step::TakeAfterAbsent {
                        from: expected,
                        to: offset,
                    }
                }
                since => {
                    // Ask again from the same place: the answer that
                    // crossed must come again, not be inherited.
                    r.absent_since_ms = Some(since.unwrap_or(now_ms));
                    r.crossed = false;
                    Step::ConfirmAbsence {
                        from: expected,
                        to: offset,
                        target: r.target(),
                        first: since.is_none(),
                    }
                }
            }
        }
        Some(r) if r.expected == expected => Step::SeekTo(r.widen()),
        _ => {
            let target = expected.saturating_sub(1).max(0);
            *rewind = Some(Rewind::new(expected, target));
            Step::SeekTo(target)
        }
    }
}

/// Nothing arrived on a rewinding partition for a while after its last
/// seek (tansu answers a fetch inside the last record batch with nothing
/// at all): returns where to seek next, further back.
pub fn stalled(rewind: &mut Option<Rewind>) -> Option<i64> {
    rewind.as_mut().map(Rewind::widen)
}

/// Nothing arrived on a partition for a while although the broker holds
/// offsets at or past its cursor (`high_watermark` > `cursor`): the
/// consumer may be parked inside the last record batch (tansu), so it
/// reads again from before the cursor. Returns where to seek.
pub fn behind(rewind: &mut Option<Rewind>, cursor: i64, high_watermark: i64) -> Option<i64> {
    if high_watermark <= cursor {
        return None;
    }
    match rewind {
        Some(r) if r.expected == cursor => stalled(rewind),
        _ => {
            let target = cursor.saturating_sub(1).max(0);
            *rewind = Some(Rewind::new(cursor, target));
            Some(target)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A broker holding `present` offsets in record batches that start at
    /// `batch_starts`; fetching from `from` returns every present offset
    /// from the batch containing `from` (Kafka) or from the batch after it
    /// when `from` is inside a batch (tansu 0.6).
    fn fetch(present: &[i64], batch_starts: &[i64], from: i64, tansu: bool) -> Vec<i64> {
        let start = if tansu && !batch_starts.contains(&from) {
            batch_starts
                .iter()
                .copied()
                .find(|s| *s > from)
                .unwrap_or(i64::MAX)
        } else {
            from
        };
        present.iter().copied().filter(|o| *o >= start).collect()
    }

    /// Consumes a partition from `cursor` with seeks, as the consumer does;
    /// returns the offsets taken and the absent ranges.
    fn consume(
        present: &[i64],
        batch_starts: &[i64],
        cursor: i64,
        tansu: bool,
    ) -> (Vec<i64>, Vec<(i64, i64)>) {
        let mut taken = Vec::new();
        let mut absent = Vec::new();
        let mut cursor = Some(cursor);
        let mut rewind = None;
        let mut queue = fetch(present, batch_starts, cursor.unwrap_or(0), tansu);
        let mut i = 0;
        let mut seeks = 0;
        // Each fetch answer takes 50 ms.
        let mut now_ms = 0;
        loop {
            if i >= queue.len() {
                let high = present.last().map_or(0, |o| o + 1);
                let next = match rewind {
                    Some(_) => stalled(&mut rewind),
                    None => cursor.and_then(|c| behind(&mut rewind, c, high)),
                };
                match next {
                    Some(target) => {
                        seeks += 1;
                        now_ms += 50;
                        assert!(seeks < 100 * (present.len() + 10), "no progress");
                        queue = fetch(present, batch_starts, target, tansu);
                        i = 0;
                        continue;
                    }
                    None => break,
                }
            }
            let offset = queue[i];
            i += 1;
            match step(&mut rewind, cursor, offset, now_ms) {
                Step::Take | Step::TakeHealed { .. } => {
                    taken.push(offset);
                    cursor = Some(offset + 1);
                }
                Step::TakeAfterAbsent { from, to } => {
                    absent.push((from, to));
                    taken.push(offset);
                    cursor = Some(offset + 1);
                }
                Step::Skip => {}
                Step::SeekTo(target) | Step::ConfirmAbsence { target, .. } => {
                    seeks += 1;
                    now_ms += 50;
                    assert!(seeks < 100 * (present.len() + 10), "no progress");
                    queue = fetch(present, batch_starts, target, tansu);
                    i = 0;
                }
            }
        }
        (taken, absent)
    }

    fn partition() -> impl Strategy<Value = (Vec<i64>, Vec<i64>, i64)> {
        // Offsets 0..n, some missing (compaction), in batches.
        (1i64..300, any::<u64>(), 1i64..40, 0.0f64..1.0).prop_map(|(n, seed, batch, frac)| {
            let mut state = seed | 1;
            let mut present = Vec::new();
            for o in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if state % 10 != 0 {
                    present.push(o);
                }
            }
            let starts: Vec<i64> = (0..n).step_by(batch as usize).collect();
            let cursor = ((n as f64) * frac) as i64;
            (present, starts, cursor)
        })
    }

    proptest! {
        /// From any cursor, on either broker, the consumer takes exactly
        /// the present offsets at or past the cursor, and calls absent
        /// exactly the offsets that are not present.
        #[test]
        fn every_present_offset_is_taken_once_and_absences_are_real(
            (present, starts, cursor) in partition(),
            tansu in any::<bool>(),
        ) {
            let (taken, absent) = consume(&present, &starts, cursor, tansu);
            let want: Vec<i64> = present.iter().copied().filter(|o| *o >= cursor).collect();
            prop_assert_eq!(&taken, &want);
            for (from, to) in absent {
                prop_assert!(from < to);
                for o in from..to {
                    prop_assert!(!present.contains(&o), "{o} called absent");
                }
            }
        }
    }

    #[test]
    fn the_next_offset_is_taken_and_earlier_ones_skipped() {
        let mut r = None;
        assert_eq!(step(&mut r, Some(5), 5, 0), Step::Take);
        assert_eq!(step(&mut r, Some(5), 4, 0), Step::Skip);
        assert_eq!(step(&mut r, None, 9, 0), Step::Take);
    }

    #[test]
    fn a_gap_is_never_taken_without_reading_again() {
        let mut r = None;
        assert_eq!(step(&mut r, Some(100), 130, 0), Step::SeekTo(99));
        assert_eq!(step(&mut r, Some(100), 130, 5), Step::SeekTo(98));
        assert_eq!(step(&mut r, Some(100), 130, 10), Step::SeekTo(96));
        assert_eq!(step(&mut r, Some(100), 96, 15), Step::Skip);
        let confirm = |first| Step::ConfirmAbsence {
            from: 100,
            to: 130,
            target: 96,
            first,
        };
        assert_eq!(step(&mut r, Some(100), 130, 20), confirm(true));
        // A message past the gap that did not follow a crossing proves
        // nothing: read from further back.
        assert_eq!(step(&mut r, Some(100), 131, 25), Step::SeekTo(92));
        assert_eq!(step(&mut r, Some(100), 92, 30), Step::Skip);
        assert_eq!(
            step(&mut r, Some(100), 130, 40),
            Step::ConfirmAbsence {
                from: 100,
                to: 130,
                target: 92,
                first: false
            }
        );
        assert_eq!(step(&mut r, Some(100), 92, 2_019), Step::Skip);
        assert!(matches!(
            step(&mut r, Some(100), 130, 2_019),
            Step::ConfirmAbsence { first: false, .. }
        ));
        assert_eq!(step(&mut r, Some(100), 92, 2_020), Step::Skip);
        assert_eq!(
            step(&mut r, Some(100), 130, 2_020),
            Step::TakeAfterAbsent { from: 100, to: 130 }
        );
    }

    /// tansu 0.6 raises the high watermark before it stores a batch: with
    /// two producers, a later batch is readable before an earlier one.
    /// While the earlier one is late by less than the confirmation time,
    /// nothing is taken as absent.
    #[test]
    fn a_batch_stored_late_is_waited_for() {
        let late = 40..50;
        for delay_ms in [0u64, 10, 500, CONFIRM_ABSENCE_MS - 20] {
            let all: Vec<i64> = (0..100).collect();
            let starts: Vec<i64> = (0..100).step_by(10).collect();
            let mut now_ms = 0u64;
            let visible = |now: u64| -> Vec<i64> {
                all.iter()
                    .copied()
                    .filter(|o| now >= delay_ms || !late.contains(o))
                    .collect()
            };
            let mut cursor = 35i64;
            let mut rewind = None;
            let mut queue = fetch(&visible(now_ms), &starts, cursor, true);
            let mut i = 0;
            let mut taken = Vec::new();
            let mut seeks = 0;
            while cursor < 100 {
                if i >= queue.len() {
                    let target = stalled(&mut rewind)
                        .or_else(|| behind(&mut rewind, cursor, 100))
                        .unwrap_or(cursor);
                    now_ms += 10;
                    queue = fetch(&visible(now_ms), &starts, target, true);
                    i = 0;
                    continue;
                }
                let offset = queue[i];
                i += 1;
                match step(&mut rewind, Some(cursor), offset, now_ms) {
                    Step::Take | Step::TakeHealed { .. } => {
                        taken.push(offset);
                        cursor = offset + 1;
                    }
                    Step::TakeAfterAbsent { from, to } => {
                        panic!("{from}..{to} taken as absent (delay {delay_ms} ms)")
                    }
                    Step::Skip => {}
                    Step::SeekTo(target) | Step::ConfirmAbsence { target, .. } => {
                        seeks += 1;
                        assert!(seeks < 2_000, "no progress");
                        now_ms += 10;
                        queue = fetch(&visible(now_ms), &starts, target, true);
                        i = 0;
                    }
                }
            }
            assert_eq!(taken, (35..100).collect::<Vec<_>>(), "delay {delay_ms} ms");
        }
    }
}
