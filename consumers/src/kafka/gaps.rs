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
//! cursor straight past it (nothing is there: the gap is *absent at the
//! broker* and is taken, and counted).

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
}

/// How many seeks to the partition's start without crossing the cursor
/// prove that nothing is there (more than one: a message fetched before a
/// seek might still arrive after it).
const SEEKS_AT_START: u32 = 3;

/// Decides what to do with a message at `offset` on a partition whose
/// cursor (next offset to record) is `cursor`, updating the partition's
/// rewind state.
pub fn step(rewind: &mut Option<Rewind>, cursor: Option<i64>, offset: i64) -> Step {
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
            *rewind = None;
            Step::TakeAfterAbsent {
                from: expected,
                to: offset,
            }
        }
        Some(r) if r.expected == expected => {
            r.distance = r.distance.saturating_mul(2);
            let target = expected.saturating_sub(r.distance).max(0);
            if target == 0 {
                r.at_start += 1;
            }
            Step::SeekTo(target)
        }
        _ => {
            let target = expected.saturating_sub(1).max(0);
            *rewind = Some(Rewind {
                expected,
                distance: 1,
                crossed: false,
                at_start: u32::from(target == 0),
            });
            Step::SeekTo(target)
        }
    }
}

/// Nothing arrived on a rewinding partition for a while after its last
/// seek (tansu answers a fetch inside the last record batch with nothing
/// at all): returns where to seek next, further back.
pub fn stalled(rewind: &mut Option<Rewind>) -> Option<i64> {
    let r = rewind.as_mut()?;
    r.distance = r.distance.saturating_mul(2);
    let target = r.expected.saturating_sub(r.distance).max(0);
    if target == 0 {
        r.at_start += 1;
    }
    Some(target)
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
            *rewind = Some(Rewind {
                expected: cursor,
                distance: 1,
                crossed: false,
                at_start: u32::from(target == 0),
            });
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
                        assert!(seeks < 200, "no progress");
                        queue = fetch(present, batch_starts, target, tansu);
                        i = 0;
                        continue;
                    }
                    None => break,
                }
            }
            let offset = queue[i];
            i += 1;
            match step(&mut rewind, cursor, offset) {
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
                Step::SeekTo(target) => {
                    seeks += 1;
                    assert!(seeks < 200, "no progress");
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
        assert_eq!(step(&mut r, Some(5), 5), Step::Take);
        assert_eq!(step(&mut r, Some(5), 4), Step::Skip);
        assert_eq!(step(&mut r, None, 9), Step::Take);
    }

    #[test]
    fn a_gap_is_never_taken_without_reading_again() {
        let mut r = None;
        assert_eq!(step(&mut r, Some(100), 130), Step::SeekTo(99));
        assert_eq!(step(&mut r, Some(100), 130), Step::SeekTo(98));
        assert_eq!(step(&mut r, Some(100), 130), Step::SeekTo(96));
        assert_eq!(step(&mut r, Some(100), 96), Step::Skip);
        assert_eq!(
            step(&mut r, Some(100), 130),
            Step::TakeAfterAbsent { from: 100, to: 130 }
        );
    }
}
