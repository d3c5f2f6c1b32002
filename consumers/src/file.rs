//! Ingesting a JSON Lines file: one event per line, each line's bytes kept
//! exactly as read (without the `\n`), its source recorded as `path:line`.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use lifeledger_ledger::{AppendReport, Incoming, Ledger, Source, StoreError};
use thiserror::Error;

/// Why a file could not be ingested. Bad lines are not errors: they become
/// rejected entries.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Totals of one ingest run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// Non-blank lines read.
    pub lines: u64,
    /// Blank lines, which carry nothing and are not recorded.
    pub blank_lines: u64,
    /// Valid events appended.
    pub appended: u64,
    /// Lines appended as rejected entries (malformed, against the schema,
    /// oversize, or a conflicting reuse of an event id).
    pub rejected: u64,
    /// Lines the ledger already held.
    pub duplicates: u64,
}

impl IngestSummary {
    fn add(&mut self, report: &AppendReport) {
        self.appended += report.events;
        self.rejected += report.rejected;
        self.duplicates += report.duplicates;
    }
}

/// Reads a JSON Lines file in batches.
#[derive(Debug)]
pub struct LineReader {
    path: PathBuf,
    recorded_path: String,
    reader: BufReader<File>,
    line: u64,
    bytes_read: u64,
    blank_lines: u64,
}

impl LineReader {
    pub fn open(path: &Path) -> Result<Self, IngestError> {
        let read_error = |source| IngestError::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        // Record the absolute path, so that re-reading the same file from
        // another directory is recognised as the same source.
        let recorded_path = std::fs::canonicalize(path)
            .map_err(read_error)?
            .to_string_lossy()
            .into_owned();
        Ok(LineReader {
            path: path.to_owned(),
            recorded_path,
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            bytes_read: 0,
            blank_lines: 0,
        })
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    pub fn blank_lines(&self) -> u64 {
        self.blank_lines
    }

    /// The next up to `max` non-blank lines; empty at the end of the file.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Incoming>, IngestError> {
        let mut batch = Vec::with_capacity(max);
        while batch.len() < max {
            let mut raw = Vec::new();
            let n =
                self.reader
                    .read_until(b'\n', &mut raw)
                    .map_err(|source| IngestError::Read {
                        path: self.path.clone(),
                        source,
                    })?;
            if n == 0 {
                break;
            }
            self.bytes_read += n as u64;
            self.line += 1;
            if raw.last() == Some(&b'\n') {
                raw.pop();
            }
            if raw.iter().all(u8::is_ascii_whitespace) {
                self.blank_lines += 1;
                continue;
            }
            batch.push(Incoming {
                source: Source::File {
                    path: self.recorded_path.clone(),
                    line: self.line,
                },
                raw,
            });
        }
        Ok(batch)
    }
}

/// Appends every line of a file to `chain`, `batch_size` lines per durable
/// append. `clock` gives the receive time of each batch; `progress` is told
/// the bytes read so far; `after_batch` runs once each batch is durable
/// (to fold it into the projection, or take a checkpoint).
pub fn ingest_file(
    ledger: &mut Ledger,
    chain: &str,
    path: &Path,
    batch_size: usize,
    mut clock: impl FnMut() -> Timestamp,
    mut progress: impl FnMut(u64),
    mut after_batch: impl FnMut(&mut Ledger) -> Result<(), StoreError>,
) -> Result<IngestSummary, IngestError> {
    let mut reader = LineReader::open(path)?;
    let mut summary = IngestSummary::default();
    loop {
        let batch = reader.next_batch(batch_size.max(1))?;
        if batch.is_empty() {
            break;
        }
        summary.lines += batch.len() as u64;
        let report = ledger.append(chain, batch, clock())?;
        summary.add(&report);
        after_batch(ledger)?;
        progress(reader.bytes_read());
    }
    summary.blank_lines = reader.blank_lines();
    Ok(summary)
}
