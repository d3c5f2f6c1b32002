//! Making sled's files durable.
//!
//! sled 0.34's `flush` writes its buffers to the files but does not promise
//! an fsync. After every flush we therefore `fsync` each file in the
//! ledger directory and the directories themselves. sled keeps large values
//! in immutable blob files; each is fsynced once, the first time it is seen.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
pub struct Syncer {
    synced_blobs: HashSet<PathBuf>,
}

impl Syncer {
    /// fsyncs every file sled may have written to, and their directories.
    /// On error, returns the path that could not be synced.
    pub fn sync(&mut self, dir: &Path) -> Result<(), (PathBuf, io::Error)> {
        sync_files_in(dir, |_| true)?;
        let blobs = dir.join("blobs");
        if blobs.is_dir() {
            let fresh = |path: &Path| !self.synced_blobs.contains(path);
            let synced = sync_files_in(&blobs, fresh)?;
            sync_path(&blobs)?;
            // sled removes a blob once its value is replaced: forget it
            // too, or the set grows with every large value ever written.
            self.synced_blobs.retain(|path| path.exists());
            self.synced_blobs.extend(synced);
        }
        sync_path(dir)
    }
}

fn sync_path(path: &Path) -> Result<(), (PathBuf, io::Error)> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| (path.to_owned(), e))
}

fn sync_files_in(
    dir: &Path,
    wanted: impl Fn(&Path) -> bool,
) -> Result<Vec<PathBuf>, (PathBuf, io::Error)> {
    let mut synced = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_owned(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_owned(), e))?;
        let path = entry.path();
        let is_file = entry.file_type().map_err(|e| (path.clone(), e))?.is_file();
        if is_file && wanted(&path) {
            match sync_path(&path) {
                Ok(()) => synced.push(path),
                // sled removes old snapshots as it goes; a file gone since
                // the listing has nothing left to sync.
                Err((_, e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(synced)
}
