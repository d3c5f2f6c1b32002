//! Opening a ledger for reading only: reading commands never change the
//! ledger directory, never stand in the writer's way, and copy nothing.
//!
//! The evidence is read in place through a [`Snapshot`] (no lock, no
//! copy), and so are the projection's saved states and the event-id runs
//! (immutable runs, see `states`; a reader's own saves, when it catches
//! up on entries the writer has not saved yet, go to a private
//! directory) and the Merkle subtrees (`tree_files`; a node the writer has
//! not written yet is computed). Each is opened *before* the manifest is
//! read, so none covers more than the snapshot. The index database
//! (sled) is not opened at all: sled has no read-only mode (opening a
//! database may write to it, and locks it), and nothing a reader needs
//! lives only there any more (frame positions are hints; an entry is
//! found by walking its segment's frame headers); the batches a consumer
//! left *staged* are read from `DIR/staged/`. Only `check-offsets`, which
//! must also see batches an earlier release staged in the index database,
//! works on a private copy of `index/`
//! ([`ReadOnlyLedger::open_with_index_copy`]).

use std::path::{Path, PathBuf};

use super::{INDEX_DIR, Ledger, Snapshot, StoreError};

/// A ledger that is only read: live evidence, private index copy.
#[derive(Debug)]
pub struct ReadOnlyLedger {
    ledger: Ledger,
    live_dir: PathBuf,
    /// The index copy, removed when this is dropped.
    _copy: tempfile::TempDir,
}

impl ReadOnlyLedger {
    /// Opens an existing ledger for reading its evidence, projection, event
    /// ids, Merkle subtrees and staged batches in place; never creates
    /// one. A call that needs the index database (the monitor's outbox)
    /// refuses with [`StoreError::IndexesNotOpened`] instead of answering
    /// from none.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let (private, states) = private_dir_and_states(dir)?;
        let snapshot = Snapshot::open(dir)?;
        let ledger =
            Ledger::open_without_indexes(&private.path().join("no-index"), snapshot, states)?;
        Ok(ReadOnlyLedger {
            ledger,
            live_dir: dir.to_owned(),
            _copy: private,
        })
    }

    /// Opens an existing ledger for reading with a private copy of its
    /// index database, taken before the manifest is read; whatever the
    /// copy lacks is derived from the segments, as after a crash. A copy
    /// taken while the writer writes can be torn; if sled cannot open it,
    /// the reader derives every index from the segments into an empty
    /// database instead. Costs O(index): for `check-offsets`, which reads
    /// the staged batches, also those an earlier release kept there.
    pub fn open_with_index_copy(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let (copy, states) = private_dir_and_states(dir)?;
        let copy_error = |source| StoreError::Copy {
            path: dir.to_owned(),
            source,
        };
        // The index copy, like the states, before the manifest: it never
        // covers more than the snapshot.
        let index = copy.path().join(INDEX_DIR);
        let live_index = dir.join(INDEX_DIR);
        if live_index.is_dir() {
            copy_tree(&live_index, &index).map_err(copy_error)?;
        }
        let snapshot = Snapshot::open(dir)?;
        let ledger = match Ledger::open_for_reading(&index, snapshot.clone(), states.clone()) {
            Ok(ledger) => ledger,
            Err(e) => {
                tracing::info!(
                    "the index copy cannot be used ({e}); deriving the indexes from the segments"
                );
                let fresh = copy.path().join("derived");
                Ledger::open_for_reading(&fresh, snapshot, states)?
            }
        };
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
    /// writes nothing in the ledger directory.
    pub fn find_event(&mut self, event_id: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.ledger.find_event(event_id)
    }

    /// The copy's ledger, for work that writes derived state (a projection
    /// caught up) into the private copy only.
    pub fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }
}

impl std::ops::Deref for ReadOnlyLedger {
    type Target = Ledger;

    fn deref(&self) -> &Ledger {
        &self.ledger
    }
}

/// Checks that `dir` is a ledger, makes the reader's private directory
/// (removed on drop), and opens the projection's runs as the ledger's
/// manifest names them now, saving into the private directory. Called
/// before the evidence manifest is read, so the states never cover more
/// than the snapshot.
fn private_dir_and_states(
    dir: &Path,
) -> Result<(tempfile::TempDir, super::states::StateStore), StoreError> {
    super::check_ledger_dir(dir, false)?;
    let private = tempfile::Builder::new()
        .prefix("lifeledger-read-")
        .tempdir()
        .map_err(|source| StoreError::Copy {
            path: dir.to_owned(),
            source,
        })?;
    let states = super::states::StateStore::open_reader(
        &dir.join(super::states::PROJECTION_DIR),
        &private.path().join(super::states::PROJECTION_DIR),
    )?;
    Ok((private, states))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            match std::fs::copy(entry.path(), &target) {
                Ok(_) => {}
                // sled removes old snapshots and blobs as it goes.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
