//! Copying a ledger directory's evidence into the archive.
//!
//! Idempotent and resumable: what the archive already holds is learned by
//! listing it once, and every put is write-once, so an upload cut short by
//! a crash is simply run again. Per chain, sealed segments go up in seq
//! order and never past a gap, so the archive holds each chain as a prefix
//! (`ArchiveProgress::archived`). A checkpoint goes up only once every
//! entry it covers is archived: what the archive's checkpoints sign, the
//! archive holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::layout::{self, Object};
use super::{Archive, ArchiveError, Put, io_error};
use crate::checkpoint::{PublicKey, read_unverified};
use crate::store::Snapshot;
use crate::store::manifest::SealedSegment;
use crate::store::own_records::{self, ORIGIN, POLICIES, SIGNER};
use crate::store::segment;

/// How far the archive holds a ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveProgress {
    /// Per chain: the seq after the last archived entry (every entry
    /// before it is archived).
    pub archived: BTreeMap<String, u64>,
    /// Entries acknowledged in the ledger directory and not yet archived.
    pub lag_entries: u64,
    /// How many of the ledger's checkpoints (the oldest) are archived.
    pub checkpoints: u64,
    /// What this uploader has put so far (not what was already there).
    pub segments_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Chains whose next segment's name the archive already holds with
    /// other bytes: another ledger extended them from the same seq. Their
    /// uploads stop there (nothing is overwritten); the others go on.
    pub conflicts: BTreeMap<String, String>,
}

/// Seconds from each entry's receipt to the moment its segment was
/// archived, for the segments this uploader put (drained by
/// [`Uploader::take_latencies`]).
fn latencies_of(bytes: &[u8], archived_at_nanos: i128) -> Vec<f64> {
    let Ok((_, records)) = crate::store::segment::read_all(bytes) else {
        return Vec::new();
    };
    records
        .iter()
        .filter_map(|r| crate::entry::EntryView::decode(&r.encoding).ok())
        .map(|e| (archived_at_nanos - i128::from(e.received_at_nanos)) as f64 / 1e9)
        .collect()
}

/// Uploads a ledger directory's evidence to an archive, step by step.
#[derive(Debug)]
pub struct Uploader {
    archive: Archive,
    dir: PathBuf,
    /// Per chain: the archived segments, first seq to size, as listed or
    /// put.
    segments: BTreeMap<String, BTreeMap<u64, u64>>,
    /// Sizes of the archived checkpoints, by ledger and number, as listed.
    listed_checkpoints: BTreeMap<(String, u64), u64>,
    /// Records put (or found there) by this uploader.
    done: BTreeSet<String>,
    progress: ArchiveProgress,
    latencies: Vec<f64>,
}

impl Uploader {
    /// Learns what the archive holds (one listing).
    pub fn new(archive: Archive, dir: &Path) -> Result<Uploader, ArchiveError> {
        let mut segments: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
        let mut listed_checkpoints = BTreeMap::new();
        for (name, size) in archive.list("")? {
            match layout::parse(&name) {
                Some(Object::Segment { chain, first_seq }) => {
                    segments.entry(chain).or_default().insert(first_seq, size);
                }
                Some(Object::Checkpoint(ledger, n)) => {
                    listed_checkpoints.insert((ledger, n), size);
                }
                _ => {}
            }
        }
        Ok(Uploader {
            archive,
            dir: dir.to_owned(),
            segments,
            listed_checkpoints,
            done: BTreeSet::new(),
            progress: ArchiveProgress::default(),
            latencies: Vec::new(),
        })
    }

    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    pub fn progress(&self) -> &ArchiveProgress {
        &self.progress
    }

    /// Seconds from receipt to archive of each entry uploaded since the
    /// last call.
    pub fn take_latencies(&mut self) -> Vec<f64> {
        std::mem::take(&mut self.latencies)
    }

    /// Entries the ledger directory acknowledges beyond what the archive
    /// was last seen to hold (read from the manifest; no archive access:
    /// it holds while the archive is unreachable).
    pub fn lag_now(&self) -> Result<u64, ArchiveError> {
        unarchived(&self.dir, &self.progress.archived)
    }

    /// Puts a small record once per uploader (the archive keeps it).
    fn put_record_once(&mut self, name: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        if self.done.contains(name) {
            return Ok(());
        }
        self.archive.put_new(name, Bytes::from(bytes))?;
        self.done.insert(name.to_owned());
        Ok(())
    }

    /// Uploads what the ledger directory has and the archive lacks, as of
    /// the manifest now: sealed segments, the origin, policy texts, the
    /// signer's key and the checkpoints the archive covers. Returns the
    /// progress.
    pub fn step(&mut self) -> Result<&ArchiveProgress, ArchiveError> {
        self.put_record_once(layout::MARKER, layout::MARKER_TEXT.as_bytes().to_vec())?;
        let origin = own_records::read_text(&self.dir.join(ORIGIN))?;
        if let Some(origin) = &origin {
            let id = layout::ledger_id(origin);
            self.put_record_once(&layout::origin_key(&id), origin.clone().into_bytes())?;
        }
        let snapshot = Snapshot::open(&self.dir)?;
        let mut lag = 0u64;
        for (chain, state) in &snapshot.manifest().chains {
            let (archived, conflict) = self.upload_chain(&snapshot, chain, &state.sealed)?;
            match conflict {
                None => {
                    self.progress.conflicts.remove(chain);
                }
                Some(detail) => {
                    self.progress.conflicts.insert(chain.clone(), detail);
                }
            }
            lag += state.next_seq.saturating_sub(archived);
            self.progress.archived.insert(chain.clone(), archived);
        }
        self.progress.lag_entries = lag;
        self.upload_policies()?;
        self.upload_signer()?;
        if let Some(origin) = &origin {
            self.upload_checkpoints(&layout::ledger_id(origin))?;
        }
        Ok(&self.progress)
    }

    /// Uploads a chain's sealed segments in order; returns the seq up to
    /// which the archive holds the chain as this ledger does, and, if the
    /// archive holds another continuation from there, what it found.
    fn upload_chain(
        &mut self,
        snapshot: &Snapshot,
        chain: &str,
        sealed: &[SealedSegment],
    ) -> Result<(u64, Option<String>), ArchiveError> {
        let mut archived = 0u64;
        for s in sealed {
            if s.first_seq != archived {
                break;
            }
            let name = layout::segment_key(chain, s.first_seq);
            match self.segments.get(chain).and_then(|m| m.get(&s.first_seq)) {
                Some(size) if *size == s.bytes => {}
                Some(size) => {
                    let location = format!("{}/{name}", self.archive.url().trim_end_matches('/'));
                    return Ok((
                        archived,
                        Some(format!(
                            "{location}: {size} bytes there, while this ledger's segment {}..{} is {} bytes: another writer extended chain {chain} from seq {}",
                            s.first_seq, s.next_seq, s.bytes, s.first_seq
                        )),
                    ));
                }
                None => {
                    let bytes = Bytes::from(read_sealed(snapshot, chain, s)?);
                    let put = match self.archive.put_new(&name, bytes.clone()) {
                        Ok(put) => put,
                        Err(ArchiveError::Conflict { location, detail }) => {
                            return Ok((archived, Some(format!("{location}: {detail}"))));
                        }
                        Err(e) => return Err(e),
                    };
                    if put == Put::Created {
                        self.progress.segments_uploaded += 1;
                        self.progress.bytes_uploaded += s.bytes;
                        let now = jiff::Timestamp::now().as_nanosecond();
                        self.latencies.extend(latencies_of(&bytes, now));
                    }
                    self.segments
                        .entry(chain.to_owned())
                        .or_default()
                        .insert(s.first_seq, s.bytes);
                }
            }
            archived = s.next_seq;
        }
        Ok((archived, None))
    }

    fn upload_policies(&mut self) -> Result<(), ArchiveError> {
        let folder = self.dir.join(POLICIES);
        let entries = match std::fs::read_dir(&folder) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&folder)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_error(&folder))?.path();
            let Some(hash) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".toml"))
            else {
                continue;
            };
            names.push((hash.to_owned(), path));
        }
        names.sort();
        for (hash, path) in names {
            let name = layout::policy_key(&hash);
            if self.done.contains(&name) {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io_error(&path))?;
            self.put_record_once(&name, bytes)?;
        }
        Ok(())
    }

    fn upload_signer(&mut self) -> Result<(), ArchiveError> {
        let Some(text) = own_records::read_text(&self.dir.join(SIGNER))? else {
            return Ok(());
        };
        let key = PublicKey::parse(text.trim_end()).map_err(|e| ArchiveError::Damaged {
            location: self.dir.join(SIGNER).display().to_string(),
            detail: e.to_string(),
        })?;
        self.put_record_once(&layout::key_key(key.id()), text.into_bytes())
    }

    /// Uploads the ledger's checkpoints in order, each once every entry it
    /// covers is archived; stops at the first that is not yet covered.
    fn upload_checkpoints(&mut self, ledger: &str) -> Result<(), ArchiveError> {
        let files = own_records::checkpoint_files(&self.dir)?;
        for (n, path) in files
            .iter()
            .enumerate()
            .skip(self.progress.checkpoints as usize)
        {
            let n = n as u64;
            let note = std::fs::read(path).map_err(io_error(path))?;
            let text = String::from_utf8_lossy(&note);
            let checkpoint = read_unverified(&text).map_err(|e| ArchiveError::Damaged {
                location: path.display().to_string(),
                detail: e.to_string(),
            })?;
            let covered = checkpoint.chains.iter().all(|c| {
                self.progress
                    .archived
                    .get(&c.chain)
                    .is_some_and(|a| *a >= c.size)
                    || c.size == 0
            });
            if !covered {
                break;
            }
            let name = layout::checkpoint_key(ledger, n);
            let listed = self.listed_checkpoints.get(&(ledger.to_owned(), n));
            if listed != Some(&(note.len() as u64)) {
                self.archive.put_new(&name, Bytes::from(note))?;
            }
            self.progress.checkpoints = n + 1;
        }
        Ok(())
    }
}

/// Entries the ledger directory at `dir` acknowledges beyond `archived`
/// (per chain, the seq up to which the archive holds it).
pub fn unarchived(dir: &Path, archived: &BTreeMap<String, u64>) -> Result<u64, ArchiveError> {
    let snapshot = Snapshot::open(dir)?;
    Ok(snapshot
        .manifest()
        .chains
        .iter()
        .map(|(chain, state)| {
            let archived = archived.get(chain).copied().unwrap_or(0);
            state.next_seq.saturating_sub(archived)
        })
        .sum())
}

/// A sealed segment's bytes, checked against the manifest's size and hash
/// (under its sealed name, or its open name if the writer stopped before
/// renaming it).
fn read_sealed(
    snapshot: &Snapshot,
    chain: &str,
    s: &SealedSegment,
) -> Result<Vec<u8>, ArchiveError> {
    let dir = snapshot.chain_dir(chain);
    let sealed = dir.join(segment::sealed_name(s.first_seq, s.next_seq, &s.hash));
    let bytes = match std::fs::read(&sealed) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let open = dir.join(segment::open_name(s.first_seq));
            std::fs::read(&open).map_err(io_error(&open))?
        }
        Err(e) => return Err(io_error(&sealed)(e)),
    };
    if bytes.len() as u64 != s.bytes || blake3::hash(&bytes).as_bytes() != &s.hash {
        return Err(ArchiveError::Damaged {
            location: sealed.display().to_string(),
            detail: format!(
                "the sealed segment {}..{} of chain {chain} does not match the manifest's size and hash; nothing of it was archived",
                s.first_seq, s.next_seq
            ),
        });
    }
    Ok(bytes)
}
