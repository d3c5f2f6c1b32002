//! Opening a ledger for reading only: the replay and report commands
//! must never change the live store.
//!
//! sled has no read-only mode: opening a database may write to it even
//! when nothing is changed (its recovery zeroes the unused tail of the
//! last log segment; seen here as changed bytes in `db` after a read-only
//! command), and it locks the database file for the process that opens
//! it. A `ReadOnlyLedger` therefore always opens a private copy of the
//! directory, made in a temporary directory and deleted on drop: the live
//! store's bytes never change, and a running consumer does not stand in
//! the way. A copy taken while the consumer writes may end inside its last
//! batch, as after a crash: sled recovers it to a batch boundary, and
//! replays check the chain links they read. The copy costs a read and a
//! write of the directory (3.2 s for a 1M-entry ledger here; `cargo bench
//! --bench projection`), less where the file system shares extents.

use std::path::{Path, PathBuf};

use super::{Ledger, LedgerOptions, StoreError};

/// A ledger that is only read, through a private copy.
#[derive(Debug)]
pub struct ReadOnlyLedger {
    ledger: Ledger,
    live_dir: PathBuf,
    /// The copy, removed when this is dropped.
    _copy: tempfile::TempDir,
}

impl ReadOnlyLedger {
    /// Opens a private copy of an existing ledger; never creates one.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        if !dir.join("conf").is_file() || !dir.join("db").is_file() {
            return Err(StoreError::NotALedger(dir.to_owned()));
        }
        Self::open_copy(dir)
    }

    /// Opens a private copy of `dir`.
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
        Ok(ReadOnlyLedger {
            ledger,
            live_dir: dir.to_owned(),
            _copy: copy,
        })
    }

    /// The directory asked for (not the copy's).
    pub fn live_dir(&self) -> &Path {
        &self.live_dir
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
