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
use crate::checkpoint::PublicKey;
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
    let mut checkpoints = Vec::new();
    let mut policies = Vec::new();
    let mut keys = Vec::new();
    let mut marked = false;
    for (name, size) in &listing {
        match layout::parse(name) {
            Some(Object::Marker) => marked = true,
            Some(Object::Segment { chain, first_seq }) => {
                chains.entry(chain).or_default().insert(first_seq, *size);
            }
            Some(Object::Checkpoint(n)) => checkpoints.push(n),
            Some(Object::Policy(hash)) => policies.push(hash),
            Some(Object::Key(id)) => keys.push(id),
            Some(Object::Origin) | None => {}
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
    if listing.iter().any(|(n, _)| n == layout::ORIGIN) {
        own_records::write_durably(&dir.join(ORIGIN), &get(layout::ORIGIN)?)?;
    }
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
    checkpoints.sort_unstable();
    let mut newest_signer = None;
    for (expected, n) in checkpoints.iter().enumerate() {
        if *n != expected as u64 {
            return Err(ArchiveError::Damaged {
                location: layout::checkpoint_key(expected as u64),
                detail: format!("missing, while checkpoint {n} is archived"),
            });
        }
        let note = get(&layout::checkpoint_key(*n))?;
        newest_signer = signer_of(&note);
        own_records::write_durably(&own_records::checkpoint_path(dir, *n), &note)?;
        report.checkpoints += 1;
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
