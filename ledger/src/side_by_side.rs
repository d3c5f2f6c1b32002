//! Two pieces of work at once, on the caller's thread and one more.

/// Runs `here` on this thread and `there` on a scoped thread of its own,
/// and returns both results. A panic in `there` goes on in the caller, as
/// it would on one thread.
pub fn side_by_side<A, B>(here: impl FnOnce() -> A, there: impl FnOnce() -> B + Send) -> (A, B)
where
    B: Send,
{
    std::thread::scope(|scope| {
        let other = scope.spawn(there);
        let mine = here();
        match other.join() {
            Ok(theirs) => (mine, theirs),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::side_by_side;

    #[test]
    fn both_results_come_back_in_their_places() {
        let mut here = Vec::new();
        let mut there = Vec::new();
        let (a, b) = side_by_side(
            || {
                here.push(1);
                "here"
            },
            || {
                there.push(2);
                "there"
            },
        );
        assert_eq!((a, b, here, there), ("here", "there", vec![1], vec![2]));
    }

    #[test]
    #[should_panic(expected = "from there")]
    fn a_panic_over_there_reaches_the_caller() {
        side_by_side(|| (), || panic!("from there"));
    }
}
