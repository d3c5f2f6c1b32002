//! `lifeledger archive`, `lifeledger restore` and `lifeledger verify
//! --from-archive`: the ledger's write-once copy on object storage.

use std::path::Path;

use anyhow::Context;
use lifeledger_ledger::archive::{self, Archive, ArchiveError, layout};
use lifeledger_ledger::checkpoint::PublicKey;
use lifeledger_ledger::verify::Depth;
use lifeledger_ledger::{Ledger, LedgerOptions, Snapshot};

use super::{Outcome, open_existing_for_append};

#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// The archive: s3://BUCKET/PREFIX (settings from the AWS_* environment
    /// variables), file:///PATH or a plain path.
    #[arg(long, env = "LIFELEDGER_ARCHIVE")]
    pub to: String,
    /// Upload only what is sealed already, without sealing the open
    /// segments first (then nothing is written to the ledger directory, and
    /// this may run beside a writer).
    #[arg(long)]
    pub no_seal: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The archive to restore from (as for `archive --to`).
    #[arg(long, env = "LIFELEDGER_ARCHIVE")]
    pub from_archive: String,
    /// The checkpoint signer's public key. Without it, checkpoints are
    /// checked against the key the archive itself holds.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
}

/// Seals the open segments (unless told not to) and uploads what the
/// archive lacks.
pub fn upload(dir: &Path, args: ArchiveArgs) -> anyhow::Result<Outcome> {
    if !args.no_seal {
        let mut ledger = open_existing_for_append(dir)?;
        ledger
            .seal_open_segments(None)
            .context("sealing the open segments")?;
    }
    let archive = Archive::open(&args.to)?;
    let mut uploader = archive::Uploader::new(archive, dir)?;
    let progress = uploader.step()?;
    out!(
        "archived to {}: {} segments uploaded ({} bytes), {} chains, {} checkpoints archived, {} entries not yet archived",
        args.to,
        progress.segments_uploaded,
        progress.bytes_uploaded,
        progress.archived.len(),
        progress.checkpoints,
        progress.lag_entries
    );
    if !progress.conflicts.is_empty() {
        let details: Vec<String> = progress
            .conflicts
            .iter()
            .map(|(chain, detail)| format!("chain {chain:?}: {detail}"))
            .collect();
        anyhow::bail!(
            "{} chains not archived, another ledger extended them: {}",
            details.len(),
            details.join("; ")
        );
    }
    Ok(Outcome::Ok)
}

/// Rebuilds the ledger directory from the archive, then derives its
/// indexes and projection and verifies it against its newest checkpoint.
pub fn restore(dir: &Path, args: RestoreArgs) -> anyhow::Result<Outcome> {
    let archive = Archive::open(&args.from_archive)?;
    let report = match restore_into(&archive, &args.from_archive, dir)? {
        Ok(r) => r,
        Err(broken) => {
            eprintln!("error: restoring from {}: {broken}", args.from_archive);
            return Ok(Outcome::VerificationFailed);
        }
    };
    let checked = check_dir(dir, args.key.as_deref(), Depth::Events)?;
    derive_projection(dir)?;
    out!(
        "restored {} chains ({} entries) from {} segments, {} checkpoints, {} policy texts into {}",
        report.chains.len(),
        report.chains.values().sum::<u64>(),
        report.segments,
        report.checkpoints,
        report.policies,
        dir.display()
    );
    Ok(checked.print())
}

/// Restores `url` into `dir` (new), derives its indexes and projection,
/// and verifies its chains and its checkpoints against the signer key the
/// archive holds, printing only what is broken. For commands that read an
/// archive as they would a ledger (`export --from-archive`).
pub fn restore_quietly(url: &str, dir: &Path) -> anyhow::Result<Outcome> {
    let archive = Archive::open(url)?;
    if let Err(broken) = restore_into(&archive, url, dir)? {
        eprintln!("error: the archive {url} is broken: {broken}");
        return Ok(Outcome::VerificationFailed);
    }
    let checked = check_dir(dir, None, Depth::Chain)?;
    if !checked.problems.is_empty() {
        for p in &checked.problems {
            eprintln!("error: the archive {url} is broken: {p}");
        }
        return Ok(Outcome::VerificationFailed);
    }
    derive_projection(dir)?;
    Ok(Outcome::Ok)
}

/// Restores the archive into `dir`. The inner error is an archive that is
/// broken (damaged, or holding another ledger's continuation): a finding
/// for the caller to report; the outer one, an archive that cannot be
/// read at all.
fn restore_into(
    archive: &Archive,
    url: &str,
    dir: &Path,
) -> anyhow::Result<Result<archive::RestoreReport, ArchiveError>> {
    match archive::restore(archive, dir) {
        Ok(r) => Ok(Ok(r)),
        Err(e @ (ArchiveError::Damaged { .. } | ArchiveError::Conflict { .. })) => Ok(Err(e)),
        Err(e) => Err(e).context(format!("restoring from {url}")),
    }
}

/// Derives a restored ledger's indexes (on open) and its projection.
fn derive_projection(dir: &Path) -> anyhow::Result<()> {
    let mut ledger = Ledger::open(dir, LedgerOptions::default())
        .with_context(|| format!("opening the restored ledger at {}", dir.display()))?;
    ledger
        .rebuild_projection(&mut |_| {})
        .context("rebuilding the projection")?;
    Ok(())
}

/// `verify --from-archive`: the archive restored into a temporary
/// directory (never written back), its chains and checkpoints verified,
/// and any object that is not the archive's reported.
pub fn verify(url: &str, key: Option<&Path>, depth: Depth) -> anyhow::Result<Outcome> {
    let archive = Archive::open(url)?;
    let strays: Vec<String> = archive
        .list("")?
        .into_iter()
        .filter(|(name, _)| layout::parse(name).is_none())
        .map(|(name, _)| name)
        .collect();
    let scratch = tempfile::tempdir().context("making a temporary directory")?;
    let dir = scratch.path().join("ledger");
    let restored = match restore_into(&archive, url, &dir)? {
        Ok(r) => r,
        Err(broken) => {
            out!("archive {url}: BROKEN: {broken}");
            return Ok(Outcome::VerificationFailed);
        }
    };
    let mut checked = check_dir(&dir, key, depth)?;
    // The other ledgers that wrote to this archive (a group's members):
    // their checkpoints too must hold against the archived chains.
    let snapshot = Snapshot::open(&dir)?;
    let keys: Vec<PublicKey> = match key {
        Some(path) => vec![read_key(path)?],
        None => archived_keys(&archive)?,
    };
    for (ledger, notes) in archive::ledger_checkpoints(&archive)? {
        if restored.ledger.as_deref() == Some(ledger.as_str()) {
            continue;
        }
        let mut best: Option<Vec<String>> = None;
        for k in &keys {
            let problems: Vec<String> = snapshot
                .vouch(&notes, k)?
                .into_iter()
                .filter_map(|v| v.problem.map(|p| format!("checkpoint {}: {p}", v.number)))
                .collect();
            if best.as_ref().is_none_or(|b| problems.len() < b.len()) {
                best = Some(problems);
            }
        }
        match best {
            Some(problems) if problems.is_empty() => checked.lines.push(format!(
                "ledger {ledger}: {} checkpoints verified",
                notes.len()
            )),
            Some(problems) => {
                for p in problems {
                    checked.problems.push(format!("ledger {ledger}: {p}"));
                }
            }
            None => checked.problems.push(format!(
                "ledger {ledger}: no key to check its checkpoints with"
            )),
        }
    }
    for name in strays {
        checked.problems.push(format!(
            "object {name:?} is not one the archive writes (a stray, or a renamed object)"
        ));
    }
    Ok(checked.print())
}

/// What checking a (restored) directory found.
struct Checked {
    lines: Vec<String>,
    problems: Vec<String>,
}

impl Checked {
    fn print(self) -> Outcome {
        for line in &self.lines {
            out!("{line}");
        }
        for p in &self.problems {
            out!("BROKEN: {p}");
        }
        if self.problems.is_empty() {
            Outcome::Ok
        } else {
            Outcome::VerificationFailed
        }
    }
}

/// Verifies a directory's chains and its checkpoints (against `key`, or
/// the signer key it holds).
fn check_dir(dir: &Path, key: Option<&Path>, depth: Depth) -> anyhow::Result<Checked> {
    let snapshot = Snapshot::open(dir)?;
    let report = snapshot.verify(depth, &mut |_| {})?;
    let mut checked = Checked {
        lines: Vec::new(),
        problems: Vec::new(),
    };
    for c in &report.chains {
        checked.lines.push(format!(
            "chain {:?}: intact, {} entries, head {}",
            c.chain,
            c.entries,
            c.last_hash
                .map_or_else(|| "(empty)".to_owned(), |h| h.to_hex())
        ));
    }
    for f in &report.findings {
        checked.problems.push(format!(
            "chain {:?}: at seq {}: {}",
            f.chain, f.seq, f.problem
        ));
    }
    let key = match key {
        Some(path) => Some(read_key(path)?),
        None => {
            let held = std::fs::read_to_string(dir.join("signer.pub")).ok();
            if held.is_some() {
                tracing::warn!(
                    "no --key given: checkpoints are checked against the signer key the archive itself holds, which proves they are consistent, not who signed them"
                );
            }
            held.and_then(|t| PublicKey::parse(t.trim()).ok())
        }
    };
    let notes = read_checkpoints(dir)?;
    match key {
        None if notes.is_empty() => checked
            .lines
            .push("no checkpoints: nothing vouches for these entries yet".to_owned()),
        None => checked
            .problems
            .push("checkpoints are archived but no signer key to check them with".to_owned()),
        Some(key) => {
            let vouched = snapshot.vouch(&notes, &key)?;
            for v in &vouched {
                if let Some(p) = &v.problem {
                    checked
                        .problems
                        .push(format!("checkpoint {}: {p}", v.number));
                }
            }
            if let Some(newest) = vouched.last().and_then(|v| v.checkpoint.as_ref()) {
                let total: u64 = snapshot.heads().map(|h| h.next_seq).sum();
                checked.lines.push(format!(
                    "{} checkpoints verified with key {}; the newest vouches for {} of {} entries",
                    vouched.len(),
                    key.name,
                    newest.total_size(),
                    total
                ));
            }
        }
    }
    Ok(checked)
}

fn read_key(path: &Path) -> anyhow::Result<PublicKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key {}", path.display()))?;
    PublicKey::parse(text.trim()).with_context(|| format!("{}", path.display()))
}

/// The signer keys the archive holds.
fn archived_keys(archive: &Archive) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for (name, _) in archive.list(layout::KEYS)? {
        if let Some(text) = archive.get(&name)? {
            if let Ok(k) = PublicKey::parse(String::from_utf8_lossy(&text).trim()) {
                keys.push(k);
            }
        }
    }
    Ok(keys)
}

fn read_checkpoints(dir: &Path) -> anyhow::Result<Vec<String>> {
    let folder = dir.join("checkpoints");
    let mut files: Vec<_> = match std::fs::read_dir(&folder) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "note"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).context(format!("reading {}", folder.display())),
    };
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}
