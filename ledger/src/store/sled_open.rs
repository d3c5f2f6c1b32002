//! Opening the sled index, waiting out sled's own release of its lock.
//!
//! sled 0.34 takes an advisory `flock` on `index/db` and releases it only
//! when its background I/O threads let go of the file, a few milliseconds
//! after the last `Db` handle is dropped (spacejam/sled#1234, #1289). A
//! ledger that is closed and opened again in one process (a test, a
//! `rebuild-index` after a check, a consumer restarting its store after a
//! rebalance) can therefore find its own lock still held. Such an open is
//! tried again for a bounded time; any other error, and a lock still held
//! after the wait (another process really has the index), is returned.

use std::path::Path;
use std::time::{Duration, Instant};

use super::StoreError;

/// Long enough for sled's threads to let go under load, short enough
/// that a second writer on the same directory is told so promptly.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const RETRY_EVERY: Duration = Duration::from_millis(10);

/// Opens `config` (the sled database at `path`), trying again while
/// sled says its lock is held.
pub(super) fn open_waiting_for_lock(
    config: &sled::Config,
    path: &Path,
) -> Result<sled::Db, StoreError> {
    open_with(|| config.open(), LOCK_WAIT, RETRY_EVERY).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })
}

fn open_with<T>(
    mut open: impl FnMut() -> sled::Result<T>,
    wait: Duration,
    every: Duration,
) -> sled::Result<T> {
    let started = Instant::now();
    loop {
        match open() {
            Err(e) if lock_held(&e) && started.elapsed() < wait => std::thread::sleep(every),
            done => return done,
        }
    }
}

/// sled reports the held lock as an `Other` I/O error whose text wraps
/// `WouldBlock`; its message is the only thing that tells it apart.
fn lock_held(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> sled::Error {
        sled::Error::Io(std::io::Error::other(
            "could not acquire lock on \"x/db\": Os { code: 11, kind: WouldBlock }",
        ))
    }

    #[test]
    fn a_lock_released_during_the_wait_is_taken() {
        let mut tries = 0;
        let opened = open_with(
            || {
                tries += 1;
                if tries < 4 { Err(held()) } else { Ok(tries) }
            },
            Duration::from_secs(5),
            Duration::from_millis(1),
        );
        assert_eq!(opened.unwrap(), 4);
    }

    #[test]
    fn a_lock_held_past_the_wait_and_other_errors_are_returned() {
        let still_held = open_with(
            || -> sled::Result<()> { Err(held()) },
            Duration::from_millis(30),
            Duration::from_millis(5),
        );
        assert!(lock_held(&still_held.unwrap_err()));
        let mut tries = 0;
        let other = open_with(
            || -> sled::Result<()> {
                tries += 1;
                Err(sled::Error::Unsupported("x".into()))
            },
            Duration::from_secs(5),
            Duration::from_millis(1),
        );
        assert!(other.is_err());
        assert_eq!(tries, 1);
    }

    #[test]
    fn an_index_dropped_and_opened_again_at_once_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(tmp.path().join("index"));
        for _ in 0..20 {
            let db = open_waiting_for_lock(&config, &tmp.path().join("index")).unwrap();
            db.insert(b"k", b"v").unwrap();
            db.flush().unwrap();
            drop(db);
        }
    }
}
