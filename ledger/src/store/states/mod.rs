//! The projection's saved states, in files of the ledger's own beside
//! sled (`DIR/projection/`): sorted runs and a small manifest.
//!
//! Each save writes the states folded into since the last save as one new
//! run (an immutable file in key order, see [`run`]), fsyncs it, and then
//! replaces the manifest, which names the runs and holds the small records
//! (the projection's cursors, policies and imports). A lookup asks the
//! runs newest first, each behind a Bloom filter; the newest value of a
//! key wins. The four newest runs are merged into one while they are of
//! about one size, so runs grow geometrically and a state is rewritten
//! about log4(states / save) times.
//!
//! Why not sled: one sled insert per state saved (~11 µs) bounded the
//! projection, and the projection made sled's files most of the index.
//! Why immutable files: a reading command opens the runs the manifest
//! names as they stand, beside a running writer, without a lock or a
//! copy; the writer removes a run it has merged away only after the new
//! manifest is durable, and an open file outlives its removal.
//!
//! A reader may need to save too (catching up on entries the writer has
//! not saved yet): its runs go to a private directory, and its manifest
//! stays in memory.

mod bloom;
mod run;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bloom::KeyHash;
pub(crate) use run::RunWriter;
use run::{Cursor, Run, RunRecords, RunVersion, checksum, put_varint};

use super::StoreError;

/// The projection's directory inside a ledger directory.
pub const PROJECTION_DIR: &str = "projection";
const MANIFEST: &str = "manifest";
const MANIFEST_TMP: &str = "manifest.tmp";
const MANIFEST_MAGIC: &[u8; 8] = b"LLPROJ\x01\0";
/// Runs merged into one at a time: a state is rewritten about
/// log4(states / save) times, and a lookup asks at most about
/// 4 × log4(states / save) runs' filters.
const MERGE_WIDTH: usize = 4;
/// Attempts at a consistent set of runs while a writer merges them away.
const READ_ATTEMPTS: usize = 8;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn run_name(number: u64) -> String {
    format!("run-{number:016x}")
}

/// A run's number, if `name` is one of ours.
fn run_number(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("run-")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// What the manifest says.
#[derive(Debug, Default)]
struct Listed {
    next_run: u64,
    runs: Vec<String>,
    small: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Listed {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&self.next_run.to_le_bytes());
        out.extend_from_slice(&(self.runs.len() as u64).to_le_bytes());
        for name in &self.runs {
            put_varint(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
        }
        out.extend_from_slice(&(self.small.len() as u64).to_le_bytes());
        for (k, v) in &self.small {
            put_varint(&mut out, k.len() as u64);
            out.extend_from_slice(k);
            put_varint(&mut out, v.len() as u64);
            out.extend_from_slice(v);
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Some(body_len) = bytes.len().checked_sub(16) else {
            return Err("shorter than its checksum".into());
        };
        let (body, sum) = bytes.split_at(body_len);
        if checksum(body) != sum {
            return Err("does not match its checksum".into());
        }
        let mut c = Cursor::new(body);
        if c.take(8) != Some(MANIFEST_MAGIC) {
            return Err("not a projection manifest of this format".into());
        }
        let malformed = || "malformed".to_string();
        let next_run = c.u64().ok_or_else(malformed)?;
        let runs = c.u64().ok_or_else(malformed)?;
        let mut listed = Listed {
            next_run,
            ..Listed::default()
        };
        for _ in 0..runs {
            let name = c.bytes().ok_or_else(malformed)?;
            let name = std::str::from_utf8(name).map_err(|_| malformed())?;
            if run_number(name).is_none_or(|n| n >= next_run) {
                return Err(format!("names {name:?}, not a run of its own"));
            }
            listed.runs.push(name.to_owned());
        }
        let small = c.u64().ok_or_else(malformed)?;
        for _ in 0..small {
            let (k, v) = c.record().ok_or_else(malformed)?;
            listed.small.insert(k.to_vec(), v.to_vec());
        }
        if !c.done() {
            return Err(malformed());
        }
        Ok(listed)
    }
}

/// Why the saved states could not be opened.
#[derive(Debug)]
struct LoadFailure {
    detail: String,
    /// A run the manifest names is not there (a reader may try again: the
    /// writer removes runs it has merged away).
    run_missing: bool,
}

impl LoadFailure {
    fn damage(detail: String) -> Self {
        LoadFailure {
            detail,
            run_missing: false,
        }
    }
}

/// The runs as they stood when a view was taken: cheap to clone, and
/// readable while the store goes on saving.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatesView {
    /// Oldest first.
    runs: Vec<Arc<Run>>,
}

impl StatesView {
    /// The newest value saved under `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if self.runs.is_empty() {
            return Ok(None);
        }
        // The key's hash per run version, made when a run of it is met.
        let mut hashes: [Option<KeyHash>; 2] = [None, None];
        for run in self.runs.iter().rev() {
            let version = run.version();
            let slot = match version {
                RunVersion::V1 => &mut hashes[0],
                RunVersion::V2 => &mut hashes[1],
            };
            let hash = *slot.get_or_insert_with(|| version.key_hash(key));
            if let Some(value) = run.get(key, hash)? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// A key starting with `prefix` about halfway through such keys: the
    /// middle block's first key among them, in the run holding the most
    /// records (runs hold keys spread alike, so any large one will do).
    pub(crate) fn middle_key(&self, prefix: &[u8]) -> Option<Vec<u8>> {
        let run = self.runs.iter().max_by_key(|run| run.records())?;
        let firsts: Vec<&[u8]> = run
            .first_keys()
            .iter()
            .map(AsRef::as_ref)
            .filter(|k: &&[u8]| k.starts_with(prefix))
            .collect();
        firsts.get(firsts.len() / 2).map(|k| k.to_vec())
    }

    /// Every key starting with `prefix` and its newest value, in key order.
    pub(crate) fn scan(&self, prefix: &[u8]) -> Merged {
        self.scan_from(prefix, prefix)
    }

    /// [`StatesView::scan`] from the key `from` on (which starts with
    /// `prefix`): each run is entered at the block holding it.
    pub(crate) fn scan_from(&self, prefix: &[u8], from: &[u8]) -> Merged {
        Merged {
            sources: self
                .runs
                .iter()
                .rev()
                .map(|run| Source {
                    records: RunRecords::new(Arc::clone(run), from),
                    stands: Stands::Unread,
                })
                .collect(),
            prefix: prefix.to_vec(),
            ended: false,
        }
    }
}

/// A key and its value, as saved.
pub(crate) type Record = (Vec<u8>, Vec<u8>);

/// A key and its value, lent by a merge.
pub(crate) type RecordRef<'a> = (&'a [u8], &'a [u8]);

/// Several runs' records merged in key order, the newest run's value
/// winning where a key is in more than one.
pub(crate) struct Merged {
    /// Newest first.
    sources: Vec<Source>,
    prefix: Vec<u8>,
    /// Past the prefix, or failed: nothing more comes.
    ended: bool,
}

/// One run's records in a merge, and where its cursor stands.
struct Source {
    records: RunRecords,
    stands: Stands,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stands {
    /// Its record was merged (or none was read yet): advance first.
    Unread,
    /// On a record not merged yet.
    OnRecord,
    /// Past its last record.
    Done,
}

impl Merged {
    /// The next key and its newest value, lent until the next call: a
    /// merge into a new run copies each record once, into the run.
    pub(crate) fn next_record(&mut self) -> Option<Result<RecordRef<'_>, StoreError>> {
        if self.ended {
            return None;
        }
        for source in &mut self.sources {
            if source.stands == Stands::Unread {
                match source.records.advance() {
                    Ok(true) => source.stands = Stands::OnRecord,
                    Ok(false) => source.stands = Stands::Done,
                    Err(e) => {
                        self.ended = true;
                        return Some(Err(e));
                    }
                }
            }
        }
        // The source holding the smallest key; sources are newest first,
        // so on a tie the first wins.
        let mut newest: Option<usize> = None;
        for (i, source) in self.sources.iter().enumerate() {
            if source.stands == Stands::OnRecord
                && newest.is_none_or(|n| source.records.key() < self.sources[n].records.key())
            {
                newest = Some(i);
            }
        }
        let Some(newest) = newest else {
            self.ended = true;
            return None;
        };
        if !self.sources[newest].records.key().starts_with(&self.prefix) {
            self.ended = true;
            return None;
        }
        // Older values of the same key are shadowed: passed over with it.
        for i in 0..self.sources.len() {
            let same = self.sources[i].stands == Stands::OnRecord
                && self.sources[i].records.key() == self.sources[newest].records.key();
            if same {
                self.sources[i].stands = Stands::Unread;
            }
        }
        let records = &self.sources[newest].records;
        Some(Ok((records.key(), records.value())))
    }
}

impl Iterator for Merged {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
            .map(|record| record.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }
}

/// The projection's saved states (see the module doc). A clone shares the
/// runs open now; only a reader's is cloned, to try opening twice.
#[derive(Debug, Clone)]
pub(crate) struct StateStore {
    /// Where the listed runs live.
    dir: PathBuf,
    /// Where this store writes runs: `dir` for the writer, a private
    /// directory for a reader.
    write_dir: PathBuf,
    /// Whether the manifest is written (the writer's) or kept in memory.
    persist: bool,
    view: StatesView,
    next_run: u64,
    small: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Why the saved states cannot be used, if they cannot: the projection
    /// is then rebuilt, after [`StateStore::clear`].
    damage: Option<String>,
    /// Whether an empty value stands for a removed key (dropped by a
    /// merge that reaches the oldest run); see
    /// [`StateStore::empty_is_removed`].
    empty_is_removed: bool,
}

impl StateStore {
    /// The writer's store in `dir` (created if missing). Files the
    /// manifest does not name are leftovers of a save or a merge that a
    /// crash cut short, and are removed.
    pub(crate) fn open_writer(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut store = StateStore::empty(dir, dir, true);
        match store.load() {
            Ok(()) => store.remove_unlisted()?,
            Err(failed) => store.damage = Some(failed.detail),
        }
        Ok(store)
    }

    /// Makes empty values stand for removed keys: a merge that reaches
    /// the oldest run drops them (for a store whose keys come and go).
    pub(crate) fn empty_is_removed(mut self) -> Self {
        self.empty_is_removed = true;
        self
    }

    /// A reader's store: the runs of `dir` as its manifest names them now
    /// (nothing there is changed), saving into `write_dir`.
    pub(crate) fn open_reader(dir: &Path, write_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(write_dir).map_err(io(write_dir))?;
        let mut store = StateStore::empty(dir, write_dir, false);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match store.load() {
                Ok(()) => return Ok(store),
                // The writer merged a run away between our reading the
                // manifest and opening the run: read the manifest again.
                Err(failed) if failed.run_missing && attempts < READ_ATTEMPTS => {
                    store = StateStore::empty(dir, write_dir, false);
                }
                Err(failed) => {
                    store = StateStore::empty(dir, write_dir, false);
                    store.damage = Some(failed.detail);
                    return Ok(store);
                }
            }
        }
    }

    fn empty(dir: &Path, write_dir: &Path, persist: bool) -> Self {
        StateStore {
            dir: dir.to_owned(),
            write_dir: write_dir.to_owned(),
            persist,
            view: StatesView::default(),
            next_run: 0,
            small: BTreeMap::new(),
            damage: None,
            empty_is_removed: false,
        }
    }

    /// Reads the manifest and opens the runs it names; a missing manifest
    /// is an empty store. Errs with what is wrong.
    fn load(&mut self) -> Result<(), LoadFailure> {
        let path = self.dir.join(MANIFEST);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(LoadFailure::damage(format!("{}: {e}", path.display()))),
        };
        let listed = Listed::decode(&bytes)
            .map_err(|e| LoadFailure::damage(format!("{}: {e}", path.display())))?;
        let mut runs = Vec::with_capacity(listed.runs.len());
        for name in &listed.runs {
            let run = Run::open(&self.dir.join(name)).map_err(|e| LoadFailure {
                run_missing: matches!(&e, StoreError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound),
                detail: e.to_string(),
            })?;
            runs.push(Arc::new(run));
        }
        self.view = StatesView { runs };
        self.next_run = listed.next_run;
        self.small = listed.small;
        Ok(())
    }

    fn remove_unlisted(&self) -> Result<(), StoreError> {
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let listed = self.view.runs.iter().any(|run| run.path() == path);
            if name != MANIFEST && !listed {
                if entry.file_type().map_err(io(&path))?.is_dir() {
                    // Scratch left by a rebuild that stopped.
                    std::fs::remove_dir_all(&path).map_err(io(&path))?;
                } else {
                    remove(&path)?;
                }
            }
        }
        Ok(())
    }

    /// Why the saved states cannot be used, if so.
    pub(crate) fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// A scratch directory where this store writes (the writer's
    /// directory, or a reader's private one), for work that ends in a run:
    /// removed when dropped, or, left by a crash, by the writer's next
    /// open or clear.
    pub(crate) fn scratch(&self) -> Result<tempfile::TempDir, StoreError> {
        tempfile::Builder::new()
            .prefix("rebuild-")
            .tempdir_in(&self.write_dir)
            .map_err(io(&self.write_dir))
    }

    /// The runs as they stand now.
    pub(crate) fn view(&self) -> StatesView {
        self.view.clone()
    }

    /// The runs as they stand, borrowed: for a lookup, which need not
    /// hold them (a [`StateStore::view`] clones every run's handle).
    pub(crate) fn current(&self) -> &StatesView {
        &self.view
    }

    /// A small record (cursor, policies, imports) as last saved.
    pub(crate) fn small(&self, key: &[u8]) -> Option<&[u8]> {
        self.small.get(key).map(Vec::as_slice)
    }

    /// The small records whose key starts with `prefix`.
    pub(crate) fn small_with_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.small
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// How many distinct keys start with `prefix` (reads every run).
    pub(crate) fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        let mut n = 0;
        for record in self.view.scan(prefix) {
            record?;
            n += 1;
        }
        Ok(n)
    }

    /// Saves `states` (in strictly increasing key order) as a new run and
    /// `small` into the manifest, then merges runs as due; durable when it
    /// returns (for the writer).
    pub(crate) fn save(
        &mut self,
        states: &[Record],
        small: impl IntoIterator<Item = Record>,
    ) -> Result<(), StoreError> {
        self.refuse_damaged()?;
        if states.is_empty() {
            return self.save_small(small);
        }
        let mut run = self.start_run(states.len() as u64)?;
        for (k, v) in states {
            run.push(k, v)?;
        }
        self.save_runs(vec![run], small)
    }

    fn refuse_damaged(&self) -> Result<(), StoreError> {
        match &self.damage {
            Some(damage) => Err(StoreError::Damaged {
                key: "projection".into(),
                detail: damage.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A new run for at most `expected` states, to be filled in strictly
    /// increasing key order and saved with [`StateStore::save_runs`]: for
    /// more states than a slice in memory should hold (a rebuild).
    pub(crate) fn start_run(&mut self, expected: u64) -> Result<RunWriter, StoreError> {
        self.refuse_damaged()?;
        let path = self.new_run_path();
        RunWriter::create(&path, expected)
    }

    /// Saves runs filled since [`StateStore::start_run`] (no key in two of
    /// them), and `small`, as [`StateStore::save`] does.
    pub(crate) fn save_runs(
        &mut self,
        runs: Vec<RunWriter>,
        small: impl IntoIterator<Item = Record>,
    ) -> Result<(), StoreError> {
        self.refuse_damaged()?;
        for run in runs {
            let path = run.path().to_owned();
            run.finish()?;
            self.view.runs.push(Arc::new(Run::open(&path)?));
        }
        self.save_small(small)
    }

    fn save_small(&mut self, small: impl IntoIterator<Item = Record>) -> Result<(), StoreError> {
        self.small.extend(small);
        let merged_away = self.merge_as_due()?;
        self.write_manifest()?;
        for run in merged_away {
            remove(run.path())?;
        }
        Ok(())
    }

    fn new_run_path(&mut self) -> PathBuf {
        let path = self.write_dir.join(run_name(self.next_run));
        self.next_run += 1;
        path
    }

    fn own(&self, run: &Run) -> bool {
        run.path().parent() == Some(self.write_dir.as_path())
    }

    /// Merges the `MERGE_WIDTH` newest runs into one while they are of
    /// about one size (the oldest of them under twice the newest), and
    /// only runs this store wrote (a reader never rewrites the writer's).
    /// Returns the runs merged away.
    fn merge_as_due(&mut self) -> Result<Vec<Arc<Run>>, StoreError> {
        let mut merged_away = Vec::new();
        while let Some(newest) = self.view.runs.len().checked_sub(MERGE_WIDTH) {
            let group = &self.view.runs[newest..];
            let (Some(oldest), Some(newest_run)) = (group.first(), group.last()) else {
                break;
            };
            if !group.iter().all(|run| self.own(run)) || oldest.length() >= 2 * newest_run.length()
            {
                break;
            }
            // In a store whose empty values mean a removed key, the key
            // needs no record once no older run can hold it.
            let drop_removed = self.empty_is_removed && newest == 0;
            let group = StatesView {
                runs: group.to_vec(),
            };
            let path = self.new_run_path();
            let expected = group.runs.iter().map(|run| run.records()).sum();
            let mut writer = RunWriter::create(&path, expected)?;
            let mut merged = group.scan(b"");
            while let Some(record) = merged.next_record() {
                let (k, v) = record?;
                if drop_removed && v.is_empty() {
                    continue;
                }
                writer.push(k, v)?;
            }
            writer.finish()?;
            self.view.runs.truncate(newest);
            self.view.runs.push(Arc::new(Run::open(&path)?));
            merged_away.extend(group.runs);
        }
        Ok(merged_away)
    }

    /// Replaces the manifest (the writer's; a reader's stays in memory):
    /// written aside, fsynced, renamed over, and the directory fsynced, so
    /// that the runs it stops naming may go.
    fn write_manifest(&self) -> Result<(), StoreError> {
        if !self.persist {
            return Ok(());
        }
        let listed = Listed {
            next_run: self.next_run,
            runs: self
                .view
                .runs
                .iter()
                .filter_map(|run| run.path().file_name())
                .map(|name| name.to_string_lossy().into_owned())
                .collect(),
            small: self.small.clone(),
        };
        let tmp = self.dir.join(MANIFEST_TMP);
        let path = self.dir.join(MANIFEST);
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&listed.encode()).map_err(io(&tmp))?;
        file.sync_data().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }

    /// Forgets every saved state and record (to rebuild the projection).
    /// The writer removes every file of the store, damaged ones included.
    pub(crate) fn clear(&mut self) -> Result<(), StoreError> {
        let runs = std::mem::take(&mut self.view.runs);
        self.small.clear();
        self.damage = None;
        if self.persist {
            self.write_manifest()?;
            self.remove_unlisted()?;
        } else {
            for run in runs.iter().filter(|run| self.own(run)) {
                remove(run.path())?;
            }
        }
        Ok(())
    }
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
