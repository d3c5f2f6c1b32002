//! The ledger's own records, kept as files beside the segments: its
//! origin, the public key of the last checkpoint signer, signed
//! checkpoints and published policy texts.
//!
//! They are not derived from the chains, so they do not live in the index
//! (which may be dropped and rebuilt). Each is written whole to a
//! temporary file, fsynced, renamed into place and its directory fsynced;
//! checkpoints and policy texts are never rewritten. Each vouches for
//! itself: a checkpoint is a signed note, a policy text is named by its
//! BLAKE3 hash (FORMAT.md section 16).
//!
//! ```text
//! DIR/origin                          the checkpoints' origin line
//! DIR/signer.pub                      the last signer's key, signed-note form
//! DIR/checkpoints/NNNNNNNNNNNNNNNNNNNN.note   the n-th checkpoint taken, from 0
//! DIR/policies/HASH.toml              a published policy text
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{StoreError, io_error};

pub const ORIGIN: &str = "origin";
pub const SIGNER: &str = "signer.pub";
pub const CHECKPOINTS: &str = "checkpoints";
pub const POLICIES: &str = "policies";

/// Writes `bytes` to `path` durably: temporary file, fsync, rename, fsync
/// of the directory.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    written.map_err(|source| StoreError::Sync {
        path: tmp.clone(),
        source,
    })?;
    fs::rename(&tmp, path).map_err(io_error(&tmp))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Sync {
            path: dir.to_owned(),
            source,
        })
}

/// A file's text, or `None` if it does not exist.
pub fn read_text(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| StoreError::Damaged {
                key: path.display().to_string(),
                detail: "not UTF-8".to_owned(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The checkpoint files of `dir`, oldest first.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let folder = dir.join(CHECKPOINTS);
    let entries = match fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Io {
                path: folder,
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error(&folder))?.path();
        if path.extension().is_some_and(|e| e == "note") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The file of the `n`-th checkpoint.
pub fn checkpoint_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(CHECKPOINTS).join(format!("{n:020}.note"))
}

/// The file of a policy text with this hash.
pub fn policy_path(dir: &Path, hash: &str) -> PathBuf {
    dir.join(POLICIES).join(format!("{hash}.toml"))
}
