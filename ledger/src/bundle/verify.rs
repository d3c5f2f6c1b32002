//! The offline verifier: checks a bundle with nothing but a public key (and
//! optionally a checkpoint the auditor already trusts). Pure.
//!
//! Every failure is a finding with a class and, where an entry is to blame,
//! the first bad seq of its chain. Findings are the answer, not errors;
//! only bytes that are not a bundle at all are an error.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{BundleError, Record, each_frame};
use crate::checkpoint::{Checkpoint, NoteError, PublicKey, verify_note};
use crate::entry::{Entry, EntryHash};
use crate::merkle::{self, CompactRange, Hash};
use crate::projection::POLICY_CHAIN;
use crate::verify::{
    BLOCK, BLOCK_LEVEL, ChainRecord, ChainVerifier, Depth, PIECE, Piece, Problem, check_event_body,
    complete_pieces, precheck, precheck_while_reading,
};

/// What kind of tampering a finding shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperClass {
    /// An entry's bytes differ from what was hashed.
    ChangedEntry,
    /// An entry is missing from the middle of a chain.
    RemovedEntry,
    /// An entry that does not belong was added.
    InsertedEntry,
    /// Entries are out of order.
    SwappedEntry,
    /// The chain ends before the size a checkpoint vouches for.
    Truncation,
    /// The bundle is older than a checkpoint the auditor trusts.
    Rollback,
    /// Two signed views of the log disagree: two checkpoints of one size
    /// with different roots, or one inconsistent with the trusted one.
    Fork,
    /// The chain links up, but is not the chain that was signed: it was
    /// recomputed after an edit.
    RecomputedChain,
    /// A signature does not verify.
    ForgedSignature,
    /// Signed by another key than the one the auditor trusts.
    WrongKey,
    /// An inclusion or consistency proof does not verify.
    BadProof,
    /// Nothing in the bundle is vouched for by a valid checkpoint.
    NoCheckpoint,
    /// Entries after the newest checkpoint: linked and hashed, but vouched
    /// for by no signature. A failure unless the auditor accepts them
    /// explicitly (then they are only counted).
    UnvouchedTail,
    /// A `policy_published` event on a chain other than `policy`, or
    /// another event on chain `policy`.
    MisplacedPublication,
    /// A policy text in the bundle that no `policy_published` entry of
    /// chain `policy` in the bundle names by its hash: verdicts judged
    /// under it could be steered.
    UnpublishedPolicy,
    /// A `policy_published` entry whose policy text the bundle lacks.
    MissingPolicy,
    /// Two consecutive signed sizes of a chain in a partial bundle with no
    /// consistency record between them: nothing shows the later tree
    /// extends the earlier one.
    MissingConsistency,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditFinding {
    pub class: TamperClass,
    pub chain: Option<String>,
    /// The first seq of the chain that is not vouched for, where an entry
    /// is to blame.
    pub first_bad_seq: Option<u64>,
    pub detail: String,
}

/// What one chain of the bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainAudit {
    pub chain: String,
    pub entries: u64,
    /// Entries vouched for by the latest verified checkpoint.
    pub vouched: u64,
}

/// The outcome of verifying a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub origin: Option<String>,
    /// What the bundle says it holds (`full`, `range`, `account`). A partial
    /// bundle proves that each entry it holds is in the signed log; it
    /// cannot prove that no entry in its scope was left out.
    pub scope: String,
    pub checkpoints_verified: usize,
    pub latest_checkpoint_size: Option<u64>,
    pub chains: Vec<ChainAudit>,
    pub findings: Vec<AuditFinding>,
}

impl AuditReport {
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }
}

fn finding(
    class: TamperClass,
    chain: Option<&str>,
    seq: Option<u64>,
    detail: impl Into<String>,
) -> AuditFinding {
    AuditFinding {
        class,
        chain: chain.map(str::to_owned),
        first_bad_seq: seq,
        detail: detail.into(),
    }
}

fn note_finding(what: &str, err: NoteError) -> AuditFinding {
    let class = match err {
        NoteError::WrongKey { .. } | NoteError::BadKey(_) => TamperClass::WrongKey,
        _ => TamperClass::ForgedSignature,
    };
    finding(class, None, None, format!("{what}: {err}"))
}

/// Inclusion proofs of a chain's entries: seq → (tree size, proof).
type Proofs<'a> = BTreeMap<u64, (u64, &'a [Hash])>;

fn classify(problem: &Problem, expected: u64, rest: &[(EntryHash, &[u8])]) -> TamperClass {
    match problem {
        Problem::SeqMismatch { found } if *found > expected => {
            let later = rest
                .iter()
                .any(|(_, enc)| Entry::decode(enc).is_ok_and(|e| e.seq == expected));
            if later {
                TamperClass::SwappedEntry
            } else {
                TamperClass::RemovedEntry
            }
        }
        Problem::SeqMismatch { .. } | Problem::PrevMismatch { .. } | Problem::WrongChain { .. } => {
            TamperClass::InsertedEntry
        }
        Problem::MisplacedPublication(_) => TamperClass::MisplacedPublication,
        _ => TamperClass::ChangedEntry,
    }
}

/// Adds a clean piece's leaves to a chain's tree: a full block as its root
/// unless a signed size falls inside it (its root there is wanted), the
/// rest leaf by leaf; noting the root at every signed size.
fn push_piece(
    range: &mut CompactRange,
    piece: &Piece,
    sizes: &BTreeSet<u64>,
    roots_at: &mut BTreeMap<u64, Hash>,
) {
    for (b, block) in piece.leaves.chunks(BLOCK).enumerate() {
        let from = range.size();
        let to = from + block.len() as u64;
        let signed_inside = sizes.range(from + 1..to).next().is_some();
        let whole = match piece.blocks.get(b) {
            Some(root) if block.len() == BLOCK && !signed_inside => {
                range.push_subtree(BLOCK_LEVEL, *root)
            }
            _ => false,
        };
        if whole {
            note_signed_root(range, sizes, roots_at);
        } else {
            for leaf in block {
                range.push_leaf(*leaf);
                note_signed_root(range, sizes, roots_at);
            }
        }
    }
}

/// Notes the tree's root if its size is one a checkpoint signed.
fn note_signed_root(
    range: &CompactRange,
    sizes: &BTreeSet<u64>,
    roots_at: &mut BTreeMap<u64, Hash>,
) {
    if sizes.contains(&range.size()) {
        roots_at.insert(range.size(), range.root());
    }
}

/// Verifies a bundle. `progress` is told how many entries were checked.
pub fn verify_bundle(
    bytes: &[u8],
    key: &PublicKey,
    trusted_note: Option<&str>,
    depth: Depth,
    progress: &mut dyn FnMut(u64),
) -> Result<AuditReport, BundleError> {
    // Every record but the entries, decoded; entries stay borrowed, each
    // filed under its chain (the first field after the version byte; an
    // entry too damaged to name its chain is filed under "") in bundle
    // order, in the one pass that reads the file. Each piece of a chain is
    // checked on the other cores as soon as it is read.
    let (read, mut prechecked) = precheck_while_reading(depth, |check| {
        let mut records = Vec::new();
        let mut grouped: BTreeMap<String, Vec<ChainRecord<'_>>> = BTreeMap::new();
        let mut index = 0usize;
        each_frame(bytes, |f| {
            match f.entry() {
                Some((hash, encoding)) => {
                    let chain = crate::entry::peek_chain(encoding).unwrap_or_default();
                    let list = match grouped.get_mut(chain) {
                        Some(list) => list,
                        None => grouped.entry(chain.to_owned()).or_default(),
                    };
                    list.push((hash, encoding));
                    if list.len() % PIECE == 0 {
                        let start = list.len() - PIECE;
                        check(chain, start, &list[start..]);
                    }
                }
                None => records.push(f.decode(index)?),
            }
            index += 1;
            Ok(())
        })?;
        for (chain, list) in &grouped {
            let start = list.len() / PIECE * PIECE;
            if start < list.len() {
                check(chain, start, &list[start..]);
            }
        }
        Ok::<_, BundleError>((records, grouped))
    });
    let (records, grouped) = read?;
    let mut findings = Vec::new();
    let scope = records
        .iter()
        .find_map(|r| match r {
            Record::Manifest(json) => serde_json::from_slice::<serde_json::Value>(json)
                .ok()
                .and_then(|m| m["scope"]["kind"].as_str().map(str::to_owned)),
            _ => None,
        })
        .unwrap_or_else(|| "full".to_owned());
    let partial = scope != "full";

    for r in &records {
        if let Record::PublicKey(text) = r {
            match PublicKey::parse(text) {
                Ok(k) if k == *key => {}
                Ok(k) => findings.push(finding(
                    TamperClass::WrongKey,
                    None,
                    None,
                    format!("the bundle names signer {k}, but the key given is {key}"),
                )),
                Err(e) => findings.push(note_finding("the bundle's public key", e)),
            }
        }
    }

    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if let Record::Checkpoint(note) = r {
            match verify_note(note, key) {
                Ok(c) => checkpoints.push(c),
                Err(e) => findings.push(note_finding(&format!("checkpoint in record {i}"), e)),
            }
        }
    }
    let trusted = match trusted_note.map(|n| verify_note(n, key)) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            findings.push(note_finding("the trusted checkpoint", e));
            None
        }
    };
    checkpoints.sort_by_key(|c| (c.total_size(), c.time));
    let origin = checkpoints.first().map(|c| c.origin.clone());
    for c in &checkpoints {
        if Some(&c.origin) != origin.as_ref() {
            findings.push(finding(
                TamperClass::Fork,
                None,
                None,
                format!(
                    "checkpoints of two origins: {:?} and {:?}",
                    origin, c.origin
                ),
            ));
        }
    }

    // Signed roots per chain and size; two different roots for one size is
    // a fork whatever the entries say.
    let mut signed: BTreeMap<(String, u64), Hash> = BTreeMap::new();
    for c in checkpoints.iter().chain(trusted.iter()) {
        for cr in &c.chains {
            match signed.get(&(cr.chain.clone(), cr.size)) {
                Some(root) if *root != cr.root => findings.push(finding(
                    TamperClass::Fork,
                    Some(&cr.chain),
                    None,
                    format!(
                        "two signed checkpoints give chain {:?} at size {} different roots",
                        cr.chain, cr.size
                    ),
                )),
                _ => {
                    signed.insert((cr.chain.clone(), cr.size), cr.root);
                }
            }
        }
    }
    if checkpoints.is_empty() {
        findings.push(finding(
            TamperClass::NoCheckpoint,
            None,
            None,
            "no checkpoint in the bundle verifies with the key given",
        ));
    }

    let mut proofs_by_chain: BTreeMap<&str, Proofs<'_>> = BTreeMap::new();
    for r in &records {
        if let Record::Inclusion {
            chain,
            seq,
            size,
            proof,
        } = r
        {
            proofs_by_chain
                .entry(chain.as_str())
                .or_default()
                .insert(*seq, (*size, proof.as_slice()));
        }
    }
    let mut names: BTreeSet<String> = grouped.keys().cloned().collect();
    for c in checkpoints.iter().chain(trusted.iter()) {
        names.extend(c.chains.iter().map(|cr| cr.chain.clone()));
    }

    let latest = checkpoints.last();
    let mut audits = Vec::new();
    let mut checked = 0u64;
    for name in &names {
        let entries = grouped.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let proofs = proofs_by_chain.get(name.as_str());
        let sparse = partial || proofs.is_some_and(|p| !p.is_empty());
        let sizes: BTreeSet<u64> = signed
            .keys()
            .filter(|(c, _)| c == name)
            .map(|(_, s)| *s)
            .collect();
        let latest_size = latest.and_then(|c| c.chain(name)).map_or(0, |c| c.size);
        if sparse {
            let before = findings.len();
            check_sparse(
                name,
                entries,
                proofs.unwrap_or(&Proofs::new()),
                &signed,
                depth,
                &mut findings,
            );
            checked += entries.len() as u64;
            audits.push(ChainAudit {
                chain: name.clone(),
                entries: entries.len() as u64,
                vouched: if findings.len() == before {
                    entries.len() as u64
                } else {
                    0
                },
            });
            continue;
        }
        // A full chain from seq 0: walk it, build its tree, and compare the
        // roots at every signed size.
        let mut verifier = ChainVerifier::new(name, depth);
        let mut range = CompactRange::default();
        let mut roots_at: BTreeMap<u64, Hash> = BTreeMap::new();
        note_signed_root(&range, &sizes, &mut roots_at);
        let mut broken = None;
        // What each record shows alone (hash, decoding, body), the links
        // inside each piece and the Merkle blocks are checked on every
        // core first; the walk then joins the pieces, and walks record by
        // record only a piece that is not clean (to name what is wrong).
        let pieces = complete_pieces(
            name,
            entries,
            prechecked.remove(name).unwrap_or_default(),
            depth,
        );
        'pieces: for piece in &pieces {
            let part = &entries[piece.start..piece.start + piece.leaves.len()];
            if verifier.accept_piece(piece) {
                push_piece(&mut range, piece, &sizes, &mut roots_at);
                checked += part.len() as u64;
                progress(checked);
                continue;
            }
            for (i, (hash, enc)) in part.iter().enumerate() {
                let found = precheck(name, hash, enc, depth);
                if let Err(f) = verifier.check_prechecked(hash, enc, found) {
                    let class = classify(&f.problem, f.seq, &entries[piece.start + i + 1..]);
                    broken = Some(f.seq);
                    findings.push(finding(
                        class,
                        Some(name),
                        Some(f.seq),
                        f.problem.to_string(),
                    ));
                    break 'pieces;
                }
                range.push_leaf(piece.leaves[i]);
                note_signed_root(&range, &sizes, &mut roots_at);
                checked += 1;
            }
            progress(checked);
        }
        let present = range.size();
        let mut vouched_ok = 0u64;
        if broken.is_none() {
            for size in &sizes {
                let Some(root) = signed.get(&(name.clone(), *size)) else {
                    continue;
                };
                match roots_at.get(size) {
                    Some(r) if r == root => vouched_ok = vouched_ok.max(*size),
                    Some(_) => {
                        let is_trusted_only = trusted
                            .as_ref()
                            .and_then(|t| t.chain(name))
                            .is_some_and(|t| t.size == *size)
                            && !checkpoints
                                .iter()
                                .any(|c| c.chain(name).is_some_and(|cr| cr.size == *size));
                        let (class, detail) = if is_trusted_only {
                            (
                                TamperClass::Fork,
                                format!(
                                    "the entries give chain {name:?} at size {size} a root other than the trusted \
                                     checkpoint's: this history does not extend the one you trust"
                                ),
                            )
                        } else {
                            (
                                TamperClass::RecomputedChain,
                                format!(
                                    "the entries give chain {name:?} at size {size} a root other than the signed \
                                     one; entries from seq {vouched_ok} on are not the ones that were signed"
                                ),
                            )
                        };
                        findings.push(finding(class, Some(name), Some(vouched_ok), detail));
                        break;
                    }
                    None if *size > present => {
                        findings.push(finding(
                            TamperClass::Truncation,
                            Some(name),
                            Some(present),
                            format!("a signed checkpoint vouches for {size} entries of chain {name:?}; the bundle has {present}"),
                        ));
                        break;
                    }
                    None => {}
                }
            }
        }
        if let Some(t) = trusted.as_ref().and_then(|t| t.chain(name)) {
            if t.size > latest_size {
                findings.push(finding(
                    TamperClass::Rollback,
                    Some(name),
                    Some(latest_size),
                    format!(
                        "the trusted checkpoint vouches for {} entries of chain {name:?}; the bundle's latest checkpoint only {latest_size}",
                        t.size
                    ),
                ));
            }
        }
        let chain_sound = !findings
            .iter()
            .any(|f| f.chain.as_deref() == Some(name.as_str()));
        if chain_sound && latest.is_some() && present > latest_size {
            findings.push(finding(
                TamperClass::UnvouchedTail,
                Some(name),
                Some(latest_size),
                format!(
                    "{} entries of chain {name:?} from seq {latest_size} on come after the newest checkpoint: no signature vouches for them",
                    present - latest_size
                ),
            ));
        }
        audits.push(ChainAudit {
            chain: name.clone(),
            entries: present,
            vouched: vouched_ok.min(latest_size),
        });
    }

    check_policies(&records, grouped.get(POLICY_CHAIN), &mut findings);
    if partial {
        check_consistency_present(&records, &checkpoints, &mut findings);
    }

    for r in &records {
        if let Record::Consistency {
            chain,
            old_size,
            new_size,
            proof,
        } = r
        {
            let (Some(old), Some(new)) = (
                signed.get(&(chain.clone(), *old_size)),
                signed.get(&(chain.clone(), *new_size)),
            ) else {
                continue;
            };
            if let Err(e) = merkle::verify_consistency(*old_size, *new_size, old, new, proof) {
                findings.push(finding(
                    TamperClass::Fork,
                    Some(chain),
                    None,
                    format!("chain {chain:?}: the signed tree of {new_size} does not extend the signed tree of {old_size}: {e}"),
                ));
            }
        }
    }
    progress(checked);
    findings.sort_by(|a, b| {
        (a.chain.as_deref(), a.first_bad_seq, a.class).cmp(&(
            b.chain.as_deref(),
            b.first_bad_seq,
            b.class,
        ))
    });
    findings.dedup();
    Ok(AuditReport {
        origin,
        scope,
        checkpoints_verified: checkpoints.len(),
        latest_checkpoint_size: latest.map(Checkpoint::total_size),
        chains: audits,
        findings,
    })
}

/// Policy texts are evidence: each text in the bundle must be named (by
/// its BLAKE3) by a `policy_published` entry of chain `policy` in the
/// bundle, and each such entry's text must be in the bundle.
fn check_policies(
    records: &[Record],
    policy_entries: Option<&Vec<(EntryHash, &[u8])>>,
    findings: &mut Vec<AuditFinding>,
) {
    let mut published: BTreeMap<String, u64> = BTreeMap::new();
    for (_, enc) in policy_entries.map(Vec::as_slice).unwrap_or(&[]) {
        let Ok(entry) = Entry::decode(enc) else {
            continue;
        };
        if let crate::entry::Body::Event { canonical, .. } = &entry.body {
            let hash = serde_json::from_slice::<serde_json::Value>(canonical)
                .ok()
                .filter(|v| v["kind"]["type"] == "policy_published")
                .and_then(|v| v["kind"]["policy_hash"].as_str().map(str::to_owned));
            if let Some(hash) = hash {
                published.entry(hash).or_insert(entry.seq);
            }
        }
    }
    let mut texts = BTreeSet::new();
    for r in records {
        if let Record::Policy(text) = r {
            let hash = blake3::hash(text).to_hex().to_string();
            if !published.contains_key(&hash) {
                findings.push(finding(
                    TamperClass::UnpublishedPolicy,
                    Some(POLICY_CHAIN),
                    None,
                    format!(
                        "the bundle holds a policy text (BLAKE3 {hash}) that no policy_published entry of chain \"policy\" in it names"
                    ),
                ));
            }
            texts.insert(hash);
        }
    }
    for (hash, seq) in &published {
        if !texts.contains(hash) {
            findings.push(finding(
                TamperClass::MissingPolicy,
                Some(POLICY_CHAIN),
                Some(*seq),
                format!("the policy published at seq {seq} (BLAKE3 {hash}) is not in the bundle"),
            ));
        }
    }
}

/// A partial bundle cannot recompute a chain's roots, so consecutive
/// signed sizes of each chain (in the bundle's checkpoints) must come with
/// a consistency record between them; that it verifies is checked with
/// the others.
fn check_consistency_present(
    records: &[Record],
    checkpoints: &[Checkpoint],
    findings: &mut Vec<AuditFinding>,
) {
    let mut sizes: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for c in checkpoints {
        for cr in &c.chains {
            if cr.size > 0 {
                sizes.entry(cr.chain.as_str()).or_default().insert(cr.size);
            }
        }
    }
    let present: BTreeSet<(&str, u64, u64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Consistency {
                chain,
                old_size,
                new_size,
                ..
            } => Some((chain.as_str(), *old_size, *new_size)),
            _ => None,
        })
        .collect();
    for (chain, sizes) in &sizes {
        let sizes: Vec<u64> = sizes.iter().copied().collect();
        for pair in sizes.windows(2) {
            if !present.contains(&(*chain, pair[0], pair[1])) {
                findings.push(finding(
                    TamperClass::MissingConsistency,
                    Some(chain),
                    None,
                    format!(
                        "chain {chain:?}: no consistency record between the signed sizes {} and {}: nothing shows the later tree extends the earlier",
                        pair[0], pair[1]
                    ),
                ));
            }
        }
    }
}

/// Entries of a chain exported alone (a seq range, or one account's): each
/// must carry an inclusion proof against a signed size of its chain.
fn check_sparse(
    name: &str,
    entries: &[(EntryHash, &[u8])],
    proofs: &Proofs<'_>,
    signed: &BTreeMap<(String, u64), Hash>,
    depth: Depth,
    findings: &mut Vec<AuditFinding>,
) {
    let mut previous: Option<(u64, EntryHash)> = None;
    for (hash, enc) in entries {
        let computed = EntryHash::of_encoding(enc);
        let entry = match Entry::decode(enc) {
            Ok(e) => e,
            Err(e) => {
                findings.push(finding(
                    TamperClass::ChangedEntry,
                    Some(name),
                    None,
                    format!("an entry does not decode: {e}"),
                ));
                return;
            }
        };
        let seq = entry.seq;
        if computed != *hash {
            findings.push(finding(
                TamperClass::ChangedEntry,
                Some(name),
                Some(seq),
                "entry hash differs from the one stored with it",
            ));
            return;
        }
        if let Some((prev_seq, prev_hash)) = previous {
            if seq <= prev_seq {
                findings.push(finding(
                    TamperClass::SwappedEntry,
                    Some(name),
                    Some(seq),
                    "entries are not in seq order",
                ));
                return;
            }
            if seq == prev_seq + 1 && entry.prev_hash != prev_hash {
                findings.push(finding(
                    TamperClass::InsertedEntry,
                    Some(name),
                    Some(seq),
                    "entry does not link to the one before it",
                ));
                return;
            }
        }
        if let crate::entry::Body::Event {
            raw,
            event_id,
            canonical,
        } = &entry.body
        {
            if let Err(p) = check_event_body(name, raw, event_id, canonical, depth) {
                let class = match p {
                    Problem::MisplacedPublication(_) => TamperClass::MisplacedPublication,
                    _ => TamperClass::ChangedEntry,
                };
                findings.push(finding(class, Some(name), Some(seq), p.to_string()));
                return;
            }
        }
        let Some((size, proof)) = proofs.get(&seq) else {
            findings.push(finding(
                TamperClass::BadProof,
                Some(name),
                Some(seq),
                "no inclusion proof for this entry",
            ));
            return;
        };
        let Some(root) = signed.get(&(name.to_owned(), *size)) else {
            findings.push(finding(
                TamperClass::BadProof,
                Some(name),
                Some(seq),
                format!("the proof is against size {size}, which no signed checkpoint has"),
            ));
            return;
        };
        if let Err(e) =
            merkle::verify_inclusion(seq, *size, &merkle::leaf_hash(&computed), proof, root)
        {
            findings.push(finding(
                TamperClass::BadProof,
                Some(name),
                Some(seq),
                format!("inclusion proof fails: {e}"),
            ));
            return;
        }
        previous = Some((seq, computed));
    }
}
