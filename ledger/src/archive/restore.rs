//! Rebuilding a ledger directory from the archive alone.
//!
//! Every chain's segments are fetched in seq order from 0, each checked
//! whole (header, frames, record hashes) and written as a sealed segment;
//! the manifest is written last, naming them, with each chain's head taken
//! from its last entry and its cursor from that entry's source. The
//! origin, policy texts, checkpoints and signer key follow them. The
//! indexes are derived when the ledger is next opened, and the caller
//! verifies the result (chains and checkpoints) as it would any ledger.

use std::collections::BTreeMap;
use std::path::Path;

use super::layout::{self, Object};
use super::{Archive, ArchiveError, io_error};
use crate::checkpoint::{PublicKey, read_unverified};
use crate::entry::{Entry, Source};
use crate::store::manifest::{ChainState, Manifest, SealedSegment};
use crate::store::own_records::{self, ORIGIN, SIGNER};
use crate::store::{evidence, segment};

/// What a restore brought back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Per chain: its size.
    pub chains: BTreeMap<String, u64>,
    pub segments: u64,
    pub bytes: u64,
    pub checkpoints: u64,
    pub policies: u64,
    /// The ledger (archive name, `layout::ledger_id`) whose origin and
    /// checkpoints were restored.
    pub ledger: Option<String>,
}

/// A ledger's archived checkpoints `0..`, in order; a gap is damage.
fn fetch_checkpoints(
    archive: &Archive,
    ledger: &str,
    numbers: &mut [u64],
) -> Result<Vec<bytes::Bytes>, ArchiveError> {
    numbers.sort_unstable();
    let mut notes = Vec::new();
    for (expected, n) in numbers.iter().enumerate() {
        let name = layout::checkpoint_key(ledger, expected as u64);
        if *n != expected as u64 {
            return Err(ArchiveError::Damaged {
                location: name,
                detail: format!("missing, while checkpoint {n} of the same ledger is archived"),
            });
        }
        notes.push(archive.get(&name)?.ok_or_else(|| ArchiveError::Damaged {
            location: name.clone(),
            detail: "listed, but gone when fetched".to_owned(),
        })?);
    }
    Ok(notes)
}

/// Every ledger's archived checkpoints (by `layout::ledger_id`), each in
/// order.
pub fn ledger_checkpoints(
    archive: &Archive,
) -> Result<BTreeMap<String, Vec<String>>, ArchiveError> {
    let mut numbers: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (name, _) in archive.list(layout::LEDGERS)? {
        if let Some(Object::Checkpoint(ledger, n)) = layout::parse(&name) {
            numbers.entry(ledger).or_default().push(n);
        }
    }
    let mut out = BTreeMap::new();
    for (ledger, mut ns) in numbers {
        let notes = fetch_checkpoints(archive, &ledger, &mut ns)?
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        out.insert(ledger, notes);
    }
    Ok(out)
}

/// Where a chain's source resumes after `last`: for a Kafka record, the
/// next offset.
fn cursor_after(encoding: &[u8]) -> Option<i64> {
    match Entry::decode(encoding).ok()?.source {
        Source::Kafka { offset, .. } => offset.checked_add(1),
        Source::File { .. } => None,
    }
}

/// Restores the archive into `dir`, which must not exist or be empty.
pub fn restore(archive: &Archive, dir: &Path) -> Result<RestoreReport, ArchiveError> {
    let occupied = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if occupied {
        return Err(ArchiveError::Io {
            path: dir.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a restore writes into a new or empty directory only",
            ),
        });
    }
    let listing = archive.list("")?;
    let mut chains: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut checkpoints: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut policies = Vec::new();
    let mut keys = Vec::new();
    let mut marked = false;
    for (name, size) in &listing {
        match layout::parse(name) {
            Some(Object::Marker) => marked = true,
            Some(Object::Segment { chain, first_seq }) => {
                chains.entry(chain).or_default().insert(first_seq, *size);
            }
            Some(Object::Checkpoint(ledger, n)) => checkpoints.entry(ledger).or_default().push(n),
            Some(Object::Policy(hash)) => policies.push(hash),
            Some(Object::Key(id)) => keys.push(id),
            Some(Object::Origin(_)) | None => {}
        }
    }
    if !marked {
        return Err(ArchiveError::Damaged {
            location: archive.url().to_owned(),
            detail: format!(
                "holds no {} object: not a Lifeledger archive",
                layout::MARKER
            ),
        });
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut report = RestoreReport::default();
    let mut manifest = Manifest {
        generation: 1,
        chains: BTreeMap::new(),
    };
    for (chain, segments) in &chains {
        let state = restore_chain(archive, dir, chain, segments, &mut report)?;
        report.chains.insert(chain.clone(), state.next_seq);
        manifest.chains.insert(chain.clone(), state);
    }
    let get = |name: &str| -> Result<bytes::Bytes, ArchiveError> {
        archive.get(name)?.ok_or_else(|| ArchiveError::Damaged {
            location: format!("{}/{name}", archive.url().trim_end_matches('/')),
            detail: "listed, but gone when fetched".to_owned(),
        })
    };
    for hash in &policies {
        let text = get(&layout::policy_key(hash))?;
        if blake3::hash(&text).to_hex().as_str() != hash {
            return Err(ArchiveError::Damaged {
                location: layout::policy_key(hash),
                detail: "the policy text does not hash to its name".to_owned(),
            });
        }
        own_records::write_durably(&own_records::policy_path(dir, hash), &text)?;
        report.policies += 1;
    }
    // Several ledgers (a group's members) may write one archive: the
    // restored directory takes the origin and checkpoints of the one whose
    // newest checkpoint is the latest (`ledger_checkpoints` gives them all).
    let mut newest: Option<(jiff::Timestamp, String, Vec<bytes::Bytes>)> = None;
    for (ledger, numbers) in &mut checkpoints {
        let notes = fetch_checkpoints(archive, ledger, numbers)?;
        let time = notes
            .last()
            .and_then(|n| read_unverified(&String::from_utf8_lossy(n)).ok())
            .map(|c| c.time);
        if let Some(time) = time {
            if newest.as_ref().is_none_or(|(t, _, _)| time > *t) {
                newest = Some((time, ledger.clone(), notes));
            }
        }
    }
    let mut newest_signer = None;
    if let Some((_, ledger, notes)) = newest {
        if let Some(origin) = archive.get(&layout::origin_key(&ledger))? {
            own_records::write_durably(&dir.join(ORIGIN), &origin)?;
        }
        for (n, note) in notes.iter().enumerate() {
            newest_signer = signer_of(note);
            own_records::write_durably(&own_records::checkpoint_path(dir, n as u64), note)?;
            report.checkpoints += 1;
        }
        report.ledger = Some(ledger);
    }
    // The signer of the newest checkpoint, as the ledger would have it.
    for id in keys {
        if newest_signer.is_none_or(|s| s == id) {
            let text = get(&layout::key_key(id))?;
            if PublicKey::parse(String::from_utf8_lossy(&text).trim_end()).is_ok() {
                own_records::write_durably(&dir.join(SIGNER), &text)?;
            }
        }
    }
    evidence::write_manifest(dir, &manifest)?;
    Ok(report)
}

/// The key id on a signed note's first signature line.
fn signer_of(note: &[u8]) -> Option<[u8; 4]> {
    let text = std::str::from_utf8(note).ok()?;
    let line = text.lines().find(|l| l.starts_with("\u{2014} "))?;
    let sig = line.rsplit(' ').next()?;
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(sig).ok()?;
    raw.get(..4)?.try_into().ok()
}

/// Fetches one chain's segments from seq 0 on, checks each whole and
/// writes it sealed; returns the chain's state for the manifest.
fn restore_chain(
    archive: &Archive,
    dir: &Path,
    chain: &str,
    segments: &BTreeMap<u64, u64>,
    report: &mut RestoreReport,
) -> Result<ChainState, ArchiveError> {
    let chain_dir = dir
        .join(crate::store::snapshot::SEGMENTS)
        .join(segment::chain_dir_name(chain));
    std::fs::create_dir_all(&chain_dir).map_err(io_error(&chain_dir))?;
    let mut state = ChainState::empty();
    let mut expected = 0u64;
    let mut last = None;
    let mut placed = std::collections::BTreeSet::new();
    while segments.contains_key(&expected) {
        placed.insert(expected);
        let name = layout::segment_key(chain, expected);
        let location = format!("{}/{name}", archive.url().trim_end_matches('/'));
        let bytes = archive.get(&name)?.ok_or_else(|| ArchiveError::Damaged {
            location: location.clone(),
            detail: "listed, but gone when fetched".to_owned(),
        })?;
        let summary = segment::summarize(&bytes).map_err(|detail| ArchiveError::Damaged {
            location: location.clone(),
            detail,
        })?;
        if summary.chain != chain || summary.first_seq != expected || summary.next_seq == expected {
            return Err(ArchiveError::Damaged {
                location,
                detail: format!(
                    "holds chain {:?} seqs {}..{}, where chain {chain:?} from seq {expected} belongs",
                    summary.chain, summary.first_seq, summary.next_seq
                ),
            });
        }
        let hash: [u8; 32] = *blake3::hash(&bytes).as_bytes();
        let path = chain_dir.join(segment::sealed_name(expected, summary.next_seq, &hash));
        own_records::write_durably(&path, &bytes)?;
        state.sealed.push(SealedSegment {
            first_seq: expected,
            next_seq: summary.next_seq,
            bytes: bytes.len() as u64,
            hash,
        });
        report.segments += 1;
        report.bytes += bytes.len() as u64;
        expected = summary.next_seq;
        last = summary.last;
    }
    if let Some(stray) = segments.keys().find(|first| !placed.contains(*first)) {
        return Err(ArchiveError::Damaged {
            location: format!(
                "{}/{}",
                archive.url().trim_end_matches('/'),
                layout::segment_key(chain, *stray)
            ),
            detail: format!(
                "does not fit chain {chain:?}, whose archived segments run from seq 0 to {expected} without it (a gap before it, or an overlap)"
            ),
        });
    }
    if let Some(last) = last {
        state.next_seq = expected;
        state.last_hash = last.hash;
        state.cursor = cursor_after(&last.encoding);
    }
    Ok(state)
}
