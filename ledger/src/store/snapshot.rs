//! A consistent, read-only view of a ledger's evidence: the manifest as it
//! stood when it was read, and the segment bytes it acknowledges.
//!
//! Sealed segments never change and an open segment only grows, so the
//! bytes a manifest acknowledges stay readable while a writer goes on
//! appending: a snapshot needs no lock and no copy, and writes nothing.
//! Reading never goes past an acknowledged length, so a reader never sees
//! a half-written frame.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::layout::StoredRecord;
use super::manifest::{ChainState, Manifest};
use super::segment::{self, CHECKSUM_LEN, FRAME_HEADER_LEN, FrameHeader};
use super::{StoreError, io_error};
use crate::chain::ChainHead;
use crate::entry::{Entry, EntryDecodeError};
use crate::verify::{ChainVerifier, Depth, Problem, VerifyReport};

/// The manifest's file name in a ledger directory.
pub const MANIFEST: &str = "manifest";
/// The directory holding one directory of segment files per chain.
pub const SEGMENTS: &str = "segments";

/// Where a frame starts: the hint the index keeps so that a read can start
/// at a frame instead of at its segment's first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePosition {
    /// The seq of the frame's first record.
    pub first_seq: u64,
    /// The first seq of the segment holding the frame.
    pub segment: u64,
    /// The frame's byte offset in that segment.
    pub offset: u64,
}

/// The evidence of a ledger as one manifest acknowledges it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    dir: PathBuf,
    manifest: Manifest,
    heads: BTreeMap<String, ChainHead>,
}

impl Snapshot {
    /// Reads the manifest of the ledger at `dir`. Writes nothing and takes
    /// no lock.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        super::check_ledger_dir(dir, false)?;
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let manifest = Manifest::decode(&bytes).map_err(|detail| StoreError::Manifest {
            path: path.clone(),
            detail,
        })?;
        Ok(Self::of(dir.to_owned(), manifest))
    }

    pub(super) fn of(dir: PathBuf, manifest: Manifest) -> Self {
        let heads = manifest
            .chains
            .iter()
            .filter(|(_, c)| c.next_seq > 0)
            .map(|(name, c)| {
                (
                    name.clone(),
                    ChainHead {
                        chain: name.clone(),
                        next_seq: c.next_seq,
                        last_hash: c.last_hash,
                    },
                )
            })
            .collect();
        Snapshot {
            dir,
            manifest,
            heads,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The acknowledged head of every chain that has entries.
    pub fn heads(&self) -> impl Iterator<Item = &ChainHead> {
        self.heads.values()
    }

    pub fn head(&self, chain: &str) -> Option<&ChainHead> {
        self.heads.get(chain)
    }

    /// Every chain with entries, by name.
    pub fn chain_names(&self) -> Vec<String> {
        self.heads.keys().cloned().collect()
    }

    /// The input cursor of a chain as acknowledged.
    pub fn cursor(&self, chain: &str) -> Option<i64> {
        self.manifest.chains.get(chain).and_then(|c| c.cursor)
    }

    /// The directory of a chain's segments.
    pub fn chain_dir(&self, chain: &str) -> PathBuf {
        self.dir.join(SEGMENTS).join(segment::chain_dir_name(chain))
    }

    /// Acknowledged records of a chain from `from_seq` on, in order. Ends
    /// with a [`StoreError::Damaged`] naming the seq where the acknowledged
    /// bytes stop being readable, if they do.
    pub fn records(&self, chain: &str, from_seq: u64) -> Records {
        self.records_from(chain, from_seq, None)
    }

    /// [`Snapshot::records`], starting at the frame `hint` names (the last
    /// frame starting at or before `from_seq`). A wrong hint reads as
    /// damage; the caller then reads again without it.
    pub fn records_from(&self, chain: &str, from_seq: u64, hint: Option<FramePosition>) -> Records {
        let state = self
            .manifest
            .chains
            .get(chain)
            .cloned()
            .unwrap_or_else(ChainState::empty);
        let chain_dir = self.chain_dir(chain);
        let mut segments = VecDeque::new();
        for s in &state.sealed {
            if s.next_seq > from_seq {
                segments.push_back(SegmentRef {
                    names: vec![
                        segment::sealed_name(s.first_seq, s.next_seq, &s.hash),
                        segment::open_name(s.first_seq),
                    ],
                    first_seq: s.first_seq,
                    bytes: s.bytes,
                    may_be_sealed_since: false,
                });
            }
        }
        if let Some(open) = state.open {
            segments.push_back(SegmentRef {
                names: vec![segment::open_name(open.first_seq)],
                first_seq: open.first_seq,
                bytes: open.bytes,
                may_be_sealed_since: true,
            });
        }
        if let Some(h) = hint {
            while segments.len() > 1 && segments.front().is_some_and(|s| s.first_seq < h.segment) {
                segments.pop_front();
            }
        }
        let start = hint.filter(|h| segments.front().is_some_and(|s| s.first_seq == h.segment));
        let next_unread = segments.front().map_or(0, |s| s.first_seq);
        Records {
            start,
            frames: Vec::new(),
            chain: chain.to_owned(),
            chain_dir,
            next_unread,
            segments,
            current: None,
            pending: VecDeque::new(),
            from_seq,
            end_seq: state.next_seq,
            deferred: None,
            done: state.next_seq <= from_seq,
        }
    }

    /// Decoded entries of a chain with seq in `from..=to`.
    pub fn entries(
        &self,
        chain: &str,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(StoredRecord, Entry), StoreError>> + use<> {
        let chain_name = chain.to_owned();
        self.records(chain, from)
            .take_while(move |r| !matches!(r, Ok(rec) if rec.position > to))
            .map(move |r| {
                let rec = r?;
                let entry = Entry::decode(&rec.encoding).map_err(|e: EntryDecodeError| {
                    StoreError::Broken {
                        chain: chain_name.clone(),
                        seq: rec.position,
                        detail: format!("stored bytes are not an entry: {e}"),
                    }
                })?;
                Ok((rec, entry))
            })
    }

    /// Checks every sealed segment's size and hash against the manifest.
    /// Returns, per damaged segment, its chain, first seq and what is wrong.
    pub fn check_sealed(&self) -> Vec<(String, u64, String)> {
        let mut damage = Vec::new();
        for (chain, state) in &self.manifest.chains {
            let dir = self.chain_dir(chain);
            for s in &state.sealed {
                let names = [
                    segment::sealed_name(s.first_seq, s.next_seq, &s.hash),
                    segment::open_name(s.first_seq),
                ];
                let found = names.iter().map(|n| dir.join(n)).find(|p| p.is_file());
                let Some(path) = found else {
                    damage.push((
                        chain.clone(),
                        s.first_seq,
                        format!("sealed segment {} is missing", names[0]),
                    ));
                    continue;
                };
                match hash_file(&path) {
                    Ok((len, _)) if len != s.bytes => damage.push((
                        chain.clone(),
                        s.first_seq,
                        format!(
                            "sealed segment {} holds {len} bytes, the manifest acknowledged {}",
                            path.display(),
                            s.bytes
                        ),
                    )),
                    Ok((_, hash)) if hash != s.hash => damage.push((
                        chain.clone(),
                        s.first_seq,
                        format!(
                            "sealed segment {} does not hash to the value the manifest acknowledged",
                            path.display()
                        ),
                    )),
                    Ok(_) => {}
                    Err(e) => damage.push((
                        chain.clone(),
                        s.first_seq,
                        format!("cannot read sealed segment {}: {e}", path.display()),
                    )),
                }
            }
        }
        damage
    }

    /// Walks every chain from seq 0 and checks it against its acknowledged
    /// head; also checks each sealed segment's hash. Chains are walked
    /// side by side, one per core (a chain's walk is sequential: each
    /// entry links to the one before). `progress` is called with the
    /// number of entries checked so far.
    pub fn verify(
        &self,
        depth: Depth,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyReport, StoreError> {
        let sealed_damage = self.check_sealed();
        let chains = self.chain_names();
        let checked = AtomicU64::new(0);
        let next = AtomicUsize::new(0);
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, chains.len().max(1));
        let walk = |report: &mut dyn FnMut(u64)| {
            let mut walked = Vec::new();
            loop {
                let at = next.fetch_add(1, Ordering::Relaxed);
                let Some(chain) = chains.get(at) else { break };
                walked.push((at, self.walk_chain(chain, depth, &checked, report)));
            }
            walked
        };
        let mut walks: Vec<Option<Result<ChainWalk, StoreError>>> =
            (0..chains.len()).map(|_| None).collect();
        std::thread::scope(|scope| {
            let others: Vec<_> = (1..threads)
                .map(|_| scope.spawn(|| walk(&mut |_| {})))
                .collect();
            let mut all = walk(progress);
            for other in others {
                // A walk that panicked leaves its chains unwalked, which
                // is refused below.
                if let Ok(walked) = other.join() {
                    all.extend(walked);
                }
            }
            for (at, walked) in all {
                if let Some(slot) = walks.get_mut(at) {
                    *slot = Some(walked);
                }
            }
        });
        let mut report = VerifyReport::default();
        for (chain, walked) in chains.iter().zip(walks) {
            let walked = walked.ok_or_else(|| StoreError::Damaged {
                key: chain.clone(),
                detail: "a thread verifying it stopped".into(),
            })??;
            // A sealed segment whose bytes differ from what was sealed is
            // damage even where its frames still check out on their own.
            let sealed = sealed_damage.iter().find(|(c, _, _)| c == chain);
            match (walked, sealed) {
                (ChainWalk::Finding(f), Some((_, seq, _))) if f.seq < *seq => {
                    report.findings.push(f)
                }
                (_, Some((_, seq, detail))) => report.findings.push(crate::verify::Finding {
                    chain: chain.clone(),
                    seq: *seq,
                    problem: Problem::Unreadable(detail.clone()),
                }),
                (ChainWalk::Finding(f), None) => report.findings.push(f),
                (ChainWalk::Walked(verifier), None) => {
                    match verifier.finish(self.heads.get(chain)) {
                        Ok(summary) => report.chains.push(summary),
                        Err(f) => report.findings.push(f),
                    }
                }
            }
        }
        progress(checked.load(Ordering::Relaxed));
        Ok(report)
    }

    /// Checks every record of `chain` from seq 0, counting them into
    /// `checked` (and telling `progress` the count every 4,096).
    fn walk_chain(
        &self,
        chain: &str,
        depth: Depth,
        checked: &AtomicU64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ChainWalk, StoreError> {
        let mut verifier = ChainVerifier::new(chain, depth);
        let mut mine = 0u64;
        for record in self.records(chain, 0) {
            let outcome = match record {
                Ok(record) => verifier.check(&record.hash, &record.encoding),
                Err(StoreError::Damaged { detail, .. }) => {
                    Err(verifier.finding(Problem::Unreadable(detail)))
                }
                Err(e) => return Err(e),
            };
            if let Err(f) = outcome {
                checked.fetch_add(mine % 4096, Ordering::Relaxed);
                return Ok(ChainWalk::Finding(f));
            }
            mine += 1;
            if mine % 4096 == 0 {
                progress(checked.fetch_add(4096, Ordering::Relaxed) + 4096);
            }
        }
        checked.fetch_add(mine % 4096, Ordering::Relaxed);
        Ok(ChainWalk::Walked(verifier))
    }
}

/// How walking one chain ended.
enum ChainWalk {
    /// The first thing wrong.
    Finding(crate::verify::Finding),
    /// Every record checked; the head is still to be compared.
    Walked(ChainVerifier),
}

/// The size and BLAKE3 hash of a file.
pub(super) fn hash_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
    let mut hasher = blake3::Hasher::new();
    let mut file = File::open(path)?;
    let len = io::copy(&mut file, &mut hasher)?;
    Ok((len, *hasher.finalize().as_bytes()))
}

#[derive(Debug)]
struct SegmentRef {
    /// File names to try, in order: a segment sealed by the manifest may
    /// still carry its open name if the writer stopped before renaming it.
    names: Vec<String>,
    first_seq: u64,
    /// Acknowledged length: nothing past it is read.
    bytes: u64,
    /// Open in this snapshot: the writer may have sealed it since, which
    /// renames the file (to a name holding its hash, unknown here) and
    /// changes none of its bytes.
    may_be_sealed_since: bool,
}

#[derive(Debug)]
struct OpenedSegment {
    file: File,
    path: PathBuf,
    offset: u64,
    bytes: u64,
    first_seq: u64,
}

/// Iterator over a snapshot's records of one chain.
#[derive(Debug)]
pub struct Records {
    chain: String,
    chain_dir: PathBuf,
    segments: VecDeque<SegmentRef>,
    current: Option<OpenedSegment>,
    pending: VecDeque<StoredRecord>,
    from_seq: u64,
    /// The seq of the next record not yet read from disk.
    next_unread: u64,
    /// The acknowledged next seq: every seq below it must be read.
    end_seq: u64,
    /// Damage found, reported once the records before it are delivered.
    deferred: Option<StoreError>,
    /// Where in the first segment to start, if not at its first frame.
    start: Option<FramePosition>,
    /// Frames read so far, for the index to keep.
    frames: Vec<FramePosition>,
    done: bool,
}

/// The sealed segment of `chain_dir` that starts at `first_seq`, opened,
/// if there is one.
fn sealed_since(chain_dir: &Path, first_seq: u64) -> Result<Option<(File, PathBuf)>, String> {
    let prefix = format!("{first_seq:020}-");
    let listing = std::fs::read_dir(chain_dir)
        .map_err(|e| format!("cannot list {}: {e}", chain_dir.display()))?;
    for dir_entry in listing {
        let dir_entry =
            dir_entry.map_err(|e| format!("cannot list {}: {e}", chain_dir.display()))?;
        let name = dir_entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".seg") {
            let path = dir_entry.path();
            return match File::open(&path) {
                Ok(file) => Ok(Some((file, path))),
                Err(e) => Err(format!("cannot open {}: {e}", path.display())),
            };
        }
    }
    Ok(None)
}

impl Records {
    /// The frames read so far (each once), for the index.
    pub fn take_frames(&mut self) -> Vec<FramePosition> {
        std::mem::take(&mut self.frames)
    }

    /// Puts a record taken from this iterator back in front.
    pub fn unread(&mut self, record: StoredRecord) {
        self.pending.push_front(record);
    }

    /// The seq the next record read from disk must carry.
    fn expected(&self) -> u64 {
        self.next_unread
    }

    fn damage(&mut self, seq: u64, detail: String) -> StoreError {
        self.done = true;
        self.pending.clear();
        StoreError::Damaged {
            key: format!("chain {} seq {seq}", self.chain),
            detail: format!(
                "acknowledged {} entries; unreadable from seq {seq}: {detail}",
                self.end_seq
            ),
        }
    }

    fn open_next(&mut self) -> Result<bool, StoreError> {
        let Some(seg) = self.segments.pop_front() else {
            return Ok(false);
        };
        let seq = seg.first_seq;
        if seq != self.next_unread {
            let detail = format!("the segment before {} ends early", seg.names[0]);
            return Err(self.damage(self.next_unread, detail));
        }
        // The first name that opens: a writer may rename an open segment
        // to its sealed name between two tries.
        let mut opened = None;
        let mut failure = None;
        for name in &seg.names {
            let path = self.chain_dir.join(name);
            match File::open(&path) {
                Ok(file) => {
                    opened = Some((file, path));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => failure = Some(format!("cannot open {}: {e}", path.display())),
            }
        }
        if opened.is_none() && failure.is_none() && seg.may_be_sealed_since {
            // Sealed since this snapshot was taken (a reader on another
            // thread holds an older manifest): the same bytes under the
            // sealed name, which starts with the first seq.
            match sealed_since(&self.chain_dir, seg.first_seq) {
                Ok(found) => opened = found,
                Err(e) => failure = Some(e),
            }
        }
        let Some((file, path)) = opened else {
            let detail =
                failure.unwrap_or_else(|| format!("segment file {} is missing", seg.names[0]));
            return Err(self.damage(seq, detail));
        };
        let mut head = vec![0u8; segment::header_len(&self.chain)];
        if let Err(e) = file.read_exact_at(&mut head, 0) {
            return Err(self.damage(seq, format!("{}: header unreadable: {e}", path.display())));
        }
        match segment::decode_header(&head) {
            Ok((h, _)) if h.chain == self.chain && h.first_seq == seg.first_seq => {}
            Ok((h, _)) => {
                let detail = format!(
                    "{} belongs to chain {:?} from seq {}",
                    path.display(),
                    h.chain,
                    h.first_seq
                );
                return Err(self.damage(seq, detail));
            }
            Err(e) => return Err(self.damage(seq, format!("{}: {e}", path.display()))),
        }
        let mut offset = head.len() as u64;
        if let Some(start) = self.start.take().filter(|h| h.segment == seg.first_seq) {
            offset = start.offset;
            self.next_unread = start.first_seq;
        }
        self.current = Some(OpenedSegment {
            file,
            path,
            offset,
            bytes: seg.bytes,
            first_seq: seg.first_seq,
        });
        Ok(true)
    }

    /// Reads the next frame of the current segment into `pending`, or
    /// closes the segment at its acknowledged end.
    fn read_frame(&mut self) -> Result<(), StoreError> {
        let expected = self.expected();
        let Some(seg) = self.current.as_mut() else {
            return Ok(());
        };
        if seg.offset >= seg.bytes {
            self.current = None;
            return Ok(());
        }
        let mut head = [0u8; FRAME_HEADER_LEN];
        let at = seg.offset;
        let path = seg.path.clone();
        if let Err(e) = seg.file.read_exact_at(&mut head, at) {
            let detail = format!("{} at byte {at}: frame unreadable: {e}", path.display());
            return Err(self.damage(expected, detail));
        }
        let header = FrameHeader::decode(&head);
        let end = at + header.frame_len();
        if end > seg.bytes || header.first_seq != expected {
            let detail = format!(
                "{} at byte {at}: frame header is damaged (says seq {}, {} bytes)",
                path.display(),
                header.first_seq,
                header.frame_len()
            );
            return Err(self.damage(expected, detail));
        }
        seg.offset = end;
        let position = FramePosition {
            first_seq: header.first_seq,
            segment: seg.first_seq,
            offset: at,
        };
        // A frame wholly before the first seq wanted is skipped unread.
        if header.first_seq + u64::from(header.count) <= self.from_seq {
            self.next_unread = header.first_seq + u64::from(header.count);
            return Ok(());
        }
        let mut rest = vec![0u8; header.body_len as usize + CHECKSUM_LEN];
        let read = read_up_to(&seg.file, &mut rest, at + FRAME_HEADER_LEN as u64);
        let outcome = match read {
            Ok(n) if n == rest.len() => {
                let (body, sum) = rest.split_at(header.body_len as usize);
                segment::decode_frame(&header, body, sum)
            }
            Ok(n) => {
                let cut = &rest[..n.min(header.body_len as usize)];
                Err(segment::salvage(
                    &header,
                    cut,
                    "the file ends inside the frame",
                ))
            }
            Err(e) => Err(segment::FrameDamage {
                intact: Vec::new(),
                detail: format!("frame unreadable: {e}"),
            }),
        };
        match outcome {
            Ok(records) => {
                self.next_unread = header.first_seq + records.len() as u64;
                self.pending.extend(records);
                self.frames.push(position);
                Ok(())
            }
            Err(damage) => {
                let at_seq = header.first_seq + damage.intact.len() as u64;
                let detail = format!("{} at byte {at}: {}", path.display(), damage.detail);
                let error = self.damage(at_seq, detail);
                // The records before the damage are still delivered, then
                // the error.
                self.pending.extend(damage.intact);
                self.deferred = Some(error);
                Ok(())
            }
        }
    }
}

/// Reads as many bytes as the file has, up to `buf.len()`, at `offset`.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl Iterator for Records {
    type Item = Result<StoredRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.pending.pop_front() {
                if record.position >= self.end_seq {
                    self.done = true;
                    self.pending.clear();
                    return None;
                }
                if record.position < self.from_seq {
                    continue;
                }
                return Some(Ok(record));
            }
            if let Some(error) = self.deferred.take() {
                return Some(Err(error));
            }
            if self.done {
                return None;
            }
            let step = if self.current.is_some() {
                self.read_frame()
            } else {
                match self.open_next() {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        self.done = true;
                        let next = self.next_unread;
                        if next < self.end_seq {
                            let detail = "the segments end early".to_owned();
                            return Some(Err(self.damage(next, detail)));
                        }
                        return None;
                    }
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = step {
                return Some(Err(e));
            }
        }
    }
}
