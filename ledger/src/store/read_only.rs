//! Opening a ledger for reading only: the replay and report commands
//! must never change the live store.
//!
//! sled has no read-only mode, and it locks its database file for the
//! process that opens it. A `ReadOnlyLedger` therefore opens the live
//! directory in place when no one holds it (it never creates the ledger
//! or any tree, and hands out only `&Ledger`, whose methods do not write),
//! and otherwise (a consumer is running) opens a private copy of the
//! directory, made in a temporary directory and deleted on drop. A copy
//! taken while the consumer writes may end inside its last batch, as after
//! a crash: sled recovers it to a batch boundary, and replays check the
//! chain links they read.

use std::path::{Path, PathBuf};

use super::{Ledger, LedgerOptions, StoreError};

/// A ledger that is only read, in place or through a private copy.
#[derive(Debug)]
pub struct ReadOnlyLedger {
    ledger: Ledger,
    live_dir: PathBuf,
    /// The copy, when the live ledger was locked by another process.
    copy: Option<tempfile::TempDir>,
}

impl ReadOnlyLedger {
    /// Opens an existing ledger for reading; never creates one.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        if !dir.join("conf").is_file() || !dir.join("db").is_file() {
            return Err(StoreError::NotALedger(dir.to_owned()));
        }
        match Ledger::open_db(dir, LedgerOptions::default(), false) {
            Ok(ledger) => Ok(ReadOnlyLedger {
                ledger,
                live_dir: dir.to_owned(),
                copy: None,
            }),
            Err(StoreError::Open { source, .. }) if is_lock_error(&source) => Self::open_copy(dir),
            Err(e) => Err(e),
        }
    }

    /// Opens a private copy of `dir` (for a ledger another process holds).
    pub fn open_copy(dir: &Path) -> Result<Self, StoreError> {
        let copy_error = |source| StoreError::Copy {
            path: dir.to_owned(),
            source,
        };
        let copy = tempfile::Builder::new()
            .prefix("lifeledger-read-")
            .tempdir()
            .map_err(copy_error)?;
        copy_tree(dir, copy.path()).map_err(copy_error)?;
        let ledger = Ledger::open_db(copy.path(), LedgerOptions::default(), false)?;
        tracing::info!(
            "the ledger at {} is in use; reading a copy made at {}",
            dir.display(),
            jiff::Timestamp::now()
        );
        Ok(ReadOnlyLedger {
            ledger,
            live_dir: dir.to_owned(),
            copy: Some(copy),
        })
    }

    /// The directory asked for (not the copy's).
    pub fn live_dir(&self) -> &Path {
        &self.live_dir
    }

    /// Whether this reads a private copy rather than the live directory.
    pub fn is_copy(&self) -> bool {
        self.copy.is_some()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Where an event id was first recorded. Loads the in-memory index;
    /// writes nothing.
    pub fn find_event(&mut self, event_id: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.ledger.find_event(event_id)
    }
}

impl std::ops::Deref for ReadOnlyLedger {
    type Target = Ledger;

    fn deref(&self) -> &Ledger {
        &self.ledger
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
