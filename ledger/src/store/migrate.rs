//! Converting a ledger of store format 1 (entries in sled blocks) to the
//! segment store.
//!
//! The old ledger is verified first (every chain against its head, as a
//! chain); a damaged one is refused. The new ledger is built beside it
//! (`DIR.migrating`): every entry copied byte for byte into segments, the
//! cursors into the manifest, the ledger's own records (origin, key,
//! checkpoints, staged batches, monitor, projection, policy texts) copied
//! into the new index, and the indexes derived from the segments. It is
//! verified, its heads compared with the old ones, and only then are the
//! directories swapped: the old ledger is kept as `DIR.pre-migration`.

use std::path::{Path, PathBuf};

use super::evidence::{ChainWrite, EvidenceWriter};
use super::{INDEX_DIR, Ledger, LedgerOptions, StoreError, damaged, io_error, layout};
use crate::chain::SealedEntry;
use crate::entry::EntryHash;
use crate::verify::{ChainVerifier, Depth};

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Every chain's (name, entries, head hash), equal before and after.
    pub heads: Vec<(String, u64, EntryHash)>,
    /// Where the old ledger was kept.
    pub kept_at: PathBuf,
}

/// Keys of the old default tree that the new store derives or keeps in
/// files instead: blocks, heads, cursors, indexes, nodes, format, origin,
/// signer.
fn derived_or_moved(key: &[u8]) -> bool {
    matches!(
        key.first(),
        Some(b'B' | b'H' | b'C' | b'X' | b'I' | b'R' | b'N' | b'F')
    ) || key == layout::META_FORMAT_KEY
        || key == b"Morigin"
        || key == b"Mpublic-key"
}

/// Trees of the old database kept in files instead (the projection is
/// folded again into runs of its own).
fn moved_tree(name: &[u8]) -> bool {
    name == b"__sled__default"
        || name == b"checkpoints"
        || name == b"policy-texts"
        || name == b"projection"
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Converts the format-1 ledger at `dir` in place (see the module doc).
pub fn migrate(dir: &Path) -> Result<MigrationReport, StoreError> {
    if dir.join(super::snapshot::MANIFEST).is_file() {
        return Err(StoreError::Broken {
            chain: String::new(),
            seq: 0,
            detail: format!("{} already holds a segment store", dir.display()),
        });
    }
    if !(dir.join("conf").is_file() && dir.join("db").is_file()) {
        return Err(StoreError::NotALedger(dir.to_owned()));
    }
    let building = sibling(dir, ".migrating");
    let kept_at = sibling(dir, ".pre-migration");
    if kept_at.exists() {
        return Err(StoreError::Io {
            path: kept_at,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a kept pre-migration copy is in the way; move it first",
            ),
        });
    }
    if building.exists() {
        // Left by a migration that stopped: it was never put in place.
        std::fs::remove_dir_all(&building).map_err(io_error(&building))?;
    }
    let old = super::sled_open::open_waiting_for_lock(&sled::Config::new().path(dir), dir)?;
    match old.get(layout::META_FORMAT_KEY)? {
        Some(v) if v.as_ref() == b"1" => {}
        found => {
            return Err(StoreError::Format {
                path: dir.to_owned(),
                found: found.map_or_else(
                    || "none".to_owned(),
                    |v| String::from_utf8_lossy(&v).into_owned(),
                ),
            });
        }
    }
    let heads = old_heads(&old)?;

    EvidenceWriter::create(&building)?;
    let (mut writer, snapshot) = EvidenceWriter::recover(
        &building,
        LedgerOptions::default().segment_max_bytes,
        LedgerOptions::default().compress_frames,
    )?;
    let mut manifest = snapshot.manifest().clone();
    for (chain, next_seq, last_hash) in &heads {
        let mut verifier = ChainVerifier::new(chain, Depth::Chain);
        let mut chunk: Vec<SealedEntry> = Vec::new();
        let mut chunk_bytes = 0usize;
        let cursor = old_cursor(&old, chain)?;
        for item in old.scan_prefix(legacy::block_prefix(chain)) {
            let (key, value) = item?;
            let (_, first_seq) =
                legacy::parse_block_key(&key).ok_or_else(|| damaged(&key, "bad block key"))?;
            let (records, damage) = layout::decode_block(first_seq, &value);
            for record in records {
                verifier
                    .check(&record.hash, &record.encoding)
                    .map_err(|f| refused(chain, f.seq, &f.problem.to_string()))?;
                chunk_bytes += record.encoding.len();
                chunk.push(SealedEntry {
                    seq: record.position,
                    hash: record.hash,
                    encoding: record.encoding,
                });
                if chunk_bytes >= 4 << 20 {
                    let write = ChainWrite {
                        chain,
                        entries: &chunk,
                        cursor: None,
                    };
                    manifest = writer.append(&manifest, &[write])?.0;
                    chunk.clear();
                    chunk_bytes = 0;
                }
            }
            if let Some(detail) = damage {
                return Err(refused(chain, first_seq, &detail));
            }
        }
        let head = crate::chain::ChainHead {
            chain: chain.clone(),
            next_seq: *next_seq,
            last_hash: *last_hash,
        };
        verifier
            .finish(Some(&head))
            .map_err(|f| refused(chain, f.seq, &f.problem.to_string()))?;
        let write = ChainWrite {
            chain,
            entries: &chunk,
            cursor,
        };
        manifest = writer.append(&manifest, &[write])?.0;
    }
    // Cursors of chains without entries (a partition read but all skipped).
    for item in old.scan_prefix(b"C") {
        let (key, _) = item?;
        let chain = String::from_utf8_lossy(&key[1..]).into_owned();
        if !heads.iter().any(|(c, _, _)| *c == chain) {
            let cursor = old_cursor(&old, &chain)?;
            let write = ChainWrite {
                chain: &chain,
                entries: &[],
                cursor,
            };
            manifest = writer.append(&manifest, &[write])?.0;
        }
    }
    drop(writer);

    let index_dir = building.join(INDEX_DIR);
    let index =
        super::sled_open::open_waiting_for_lock(&sled::Config::new().path(&index_dir), &index_dir)?;
    for item in old.iter() {
        let (key, value) = item?;
        if !derived_or_moved(&key) {
            index.insert(key, value)?;
        }
    }
    for name in old.tree_names() {
        if moved_tree(&name) {
            continue;
        }
        let from = old.open_tree(&name)?;
        let to = index.open_tree(&name)?;
        for item in from.iter() {
            let (key, value) = item?;
            to.insert(key, value)?;
        }
    }
    index.flush()?;
    drop(index);
    copy_own_records(&old, &building)?;
    drop(old);

    let mut ledger = Ledger::open(&building, LedgerOptions::default())?;
    let after: Vec<(String, u64, EntryHash)> = ledger
        .heads()
        .map(|h| (h.chain.clone(), h.next_seq, h.last_hash))
        .collect();
    if after != heads {
        return Err(refused(
            "",
            0,
            "the migrated heads differ from the old ones",
        ));
    }
    let report = ledger.verify(Depth::Chain, &mut |_| {})?;
    if let Some(f) = report.findings.first() {
        return Err(refused(&f.chain, f.seq, &f.problem.to_string()));
    }
    ledger.make_durable()?;
    drop(ledger);

    std::fs::rename(dir, &kept_at).map_err(io_error(dir))?;
    std::fs::rename(&building, dir).map_err(io_error(&building))?;
    Ok(MigrationReport { heads, kept_at })
}

/// Writes the old ledger's origin, signer key, checkpoints and policy
/// texts as the files the segment store keeps them in.
fn copy_own_records(old: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    use super::own_records::{self, ORIGIN, SIGNER};
    if let Some(origin) = old.get(b"Morigin")? {
        own_records::write_durably(&dir.join(ORIGIN), &origin)?;
    }
    if let Some(key) = old.get(b"Mpublic-key")? {
        own_records::write_durably(&dir.join(SIGNER), &key)?;
    }
    if old
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == b"checkpoints")
    {
        for (n, note) in old.open_tree("checkpoints")?.iter().values().enumerate() {
            own_records::write_durably(&own_records::checkpoint_path(dir, n as u64), &note?)?;
        }
    }
    if old
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == b"policy-texts")
    {
        for item in old.open_tree("policy-texts")?.iter() {
            let (hash, text) = item?;
            let hash = String::from_utf8_lossy(&hash).into_owned();
            if blake3::hash(&text).to_hex().as_str() == hash {
                own_records::write_durably(&own_records::policy_path(dir, &hash), &text)?;
            }
        }
    }
    Ok(())
}

fn refused(chain: &str, seq: u64, detail: &str) -> StoreError {
    StoreError::Broken {
        chain: chain.to_owned(),
        seq,
        detail: format!("migration refused: {detail}"),
    }
}

fn old_heads(old: &sled::Db) -> Result<Vec<(String, u64, EntryHash)>, StoreError> {
    let mut heads = Vec::new();
    for item in old.scan_prefix(b"H") {
        let (key, value) = item?;
        let chain = String::from_utf8(key[1..].to_vec())
            .map_err(|_| damaged(&key, "chain name is not UTF-8"))?;
        let (next, hash) =
            layout::decode_head(&value).ok_or_else(|| damaged(&key, "head is not 40 bytes"))?;
        heads.push((chain, next, hash));
    }
    Ok(heads)
}

fn old_cursor(old: &sled::Db, chain: &str) -> Result<Option<i64>, StoreError> {
    let mut key = vec![b'C'];
    key.extend_from_slice(chain.as_bytes());
    match old.get(&key)? {
        None => Ok(None),
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(|b| Some(i64::from_be_bytes(b)))
            .map_err(|_| damaged(&key, "cursor is not 8 bytes")),
    }
}

/// Keys of format 1, kept here only to read old ledgers.
pub mod legacy {
    use super::layout;

    pub fn block_prefix(chain: &str) -> Vec<u8> {
        let mut key = vec![b'B'];
        let len = u16::try_from(chain.len()).unwrap_or(u16::MAX);
        key.extend_from_slice(&len.to_be_bytes());
        key.extend_from_slice(chain.as_bytes());
        key
    }

    pub fn block_key(chain: &str, first_seq: u64) -> Vec<u8> {
        let mut key = block_prefix(chain);
        key.extend_from_slice(&first_seq.to_be_bytes());
        key
    }

    pub fn parse_block_key(key: &[u8]) -> Option<(String, u64)> {
        let rest = key.strip_prefix(b"B")?;
        let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let chain = String::from_utf8(rest.get(2..2 + len)?.to_vec()).ok()?;
        let seq = u64::from_be_bytes(rest.get(2 + len..)?.try_into().ok()?);
        Some((chain, seq))
    }

    /// Writes a format-1 ledger's block, head and cursor (for tests of
    /// migration).
    pub fn write_chain(
        db: &sled::Db,
        chain: &str,
        records: &[(crate::entry::EntryHash, Vec<u8>)],
        cursor: Option<i64>,
    ) -> Result<(), sled::Error> {
        db.insert(layout::META_FORMAT_KEY, &b"1"[..])?;
        let block = layout::encode_block(records.iter().map(|(h, e)| (h, e.as_slice())));
        db.insert(block_key(chain, 0), block)?;
        if let Some((hash, _)) = records.last() {
            let mut head = vec![b'H'];
            head.extend_from_slice(chain.as_bytes());
            db.insert(head, layout::encode_head(records.len() as u64, hash))?;
        }
        if let Some(c) = cursor {
            let mut key = vec![b'C'];
            key.extend_from_slice(chain.as_bytes());
            db.insert(key, c.to_be_bytes().to_vec())?;
        }
        db.flush()?;
        Ok(())
    }
}
