//! `lifeledger keygen`, `checkpoint`, `export`, and `verify BUNDLE`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use lifeledger_ledger::bundle::verify::{TamperClass, verify_bundle};
use lifeledger_ledger::checkpoint::{PrivateKey, PublicKey};
use lifeledger_ledger::store::ExportScope;
use lifeledger_ledger::verify::Depth;

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// The key's name, shown on every signature.
    #[arg(long, default_value = "lifeledger")]
    pub name: String,
    /// Write PREFIX.key (private, mode 0600) and PREFIX.pub.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// The private key file from `lifeledger keygen`.
    #[arg(long, env = "LIFELEDGER_SIGNING_KEY")]
    pub key: PathBuf,
    /// The ledger's origin line, set on its first checkpoint.
    #[arg(long)]
    pub origin: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Where to write the bundle.
    #[arg(long)]
    pub out: PathBuf,
    /// Export only this chain's entries (with --from/--to).
    #[arg(long)]
    pub chain: Option<String>,
    #[arg(long, requires = "chain")]
    pub from: Option<u64>,
    #[arg(long, requires = "chain")]
    pub to: Option<u64>,
    /// Export only the entries about one account, as APPID/UIN.
    #[arg(long, conflicts_with = "chain")]
    pub account: Option<String>,
    /// Export from this archive (s3://BUCKET/PREFIX, file:///PATH or a
    /// path) instead of the ledger directory: it is restored into a
    /// temporary directory first, and verified.
    #[arg(long)]
    pub from_archive: Option<String>,
}

pub fn read_private_key(path: &Path) -> anyhow::Result<PrivateKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key {}", path.display()))?;
    PrivateKey::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub fn read_public_key(path: &Path) -> anyhow::Result<PublicKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key {}", path.display()))?;
    PublicKey::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<Outcome> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow!("no randomness for a key: {e}"))?;
    let key = PrivateKey::from_seed(&args.name, seed).map_err(|e| anyhow!("{e}"))?;
    let private = args.out.with_extension("key");
    let public = args.out.with_extension("pub");
    if private.exists() {
        bail!("{} exists; refusing to overwrite a key", private.display());
    }
    write_private(&private, &key.to_text())?;
    std::fs::write(&public, format!("{}\n", key.public()))
        .with_context(|| format!("writing {}", public.display()))?;
    out!("private key: {} (keep it secret)", private.display());
    out!("public key:  {} ({})", public.display(), key.public());
    Ok(Outcome::Ok)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))
}

pub fn checkpoint(dir: &Path, args: CheckpointArgs) -> anyhow::Result<Outcome> {
    let key = read_private_key(&args.key)?;
    let mut ledger = super::open_existing_for_append(dir)?;
    ledger.ensure_origin(args.origin.as_deref())?;
    let note = ledger.checkpoint(&key, Timestamp::now())?;
    out!("{}", note.trim_end());
    Ok(Outcome::Ok)
}

pub fn export(dir: &Path, args: ExportArgs) -> anyhow::Result<Outcome> {
    let Some(url) = args.from_archive.clone() else {
        return export_from(dir, args);
    };
    let scratch = tempfile::tempdir().context("making a temporary directory")?;
    let restored = scratch.path().join("ledger");
    match super::archive::restore_quietly(&url, &restored)? {
        Outcome::Ok => export_from(&restored, args),
        other => Ok(other),
    }
}

fn export_from(dir: &Path, args: ExportArgs) -> anyhow::Result<Outcome> {
    let ledger = super::open_for_reading(dir)?;
    if let Some(chain) = &args.chain {
        let names = ledger.chain_names()?;
        if !names.contains(chain) {
            bail!("no chain {chain:?}; chains: {}", names.join(", "));
        }
    }
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from > to {
            bail!("--from {from} lies after --to {to}: nothing to export");
        }
    }
    if let Some(account) = &args.account {
        let well_formed = account
            .split_once('/')
            .is_some_and(|(app, uin)| !app.is_empty() && !uin.is_empty() && !uin.contains('/'));
        if !well_formed {
            bail!("--account {account:?}: write it as APPID/UIN");
        }
    }
    let scope = match (&args.chain, &args.account) {
        (Some(chain), _) => ExportScope::Range {
            chain: chain.clone(),
            from: args.from.unwrap_or(0),
            to: args.to.unwrap_or(u64::MAX),
        },
        (None, Some(account)) => ExportScope::Account(account.clone()),
        (None, None) => ExportScope::Full,
    };
    if scope != ExportScope::Full && ledger.checkpoints()?.is_empty() {
        bail!(
            "a partial export proves its entries against a checkpoint; take one first with `lifeledger checkpoint --key KEY`"
        );
    }
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let summary = ledger.export(&scope, std::io::BufWriter::new(file), Timestamp::now())?;
    if scope != ExportScope::Full && summary.entries == 0 {
        // An empty partial bundle would verify and prove nothing.
        let _ = std::fs::remove_file(&args.out);
        match &scope {
            ExportScope::Account(a) => bail!("no entries about account {a}: nothing exported"),
            _ => bail!("no entries in that range: nothing exported"),
        }
    }
    out!(
        "wrote {}: {} entries, {} checkpoints, {} policies",
        args.out.display(),
        summary.entries,
        summary.checkpoints,
        summary.policies
    );
    if summary.unvouched > 0 {
        eprintln!(
            "warning: {} entries are newer than the latest checkpoint and cannot be vouched for; take a checkpoint before exporting",
            summary.unvouched
        );
    }
    Ok(Outcome::Ok)
}

/// `lifeledger verify BUNDLE --key PUBKEY`: offline, no sled.
pub fn verify_offline(
    bundle: &Path,
    key: &Path,
    trusted_path: Option<&Path>,
    deep: bool,
    accept_unvouched_tail: bool,
    json: bool,
) -> anyhow::Result<Outcome> {
    let key = read_public_key(key)?;
    let bytes = std::fs::read(bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let trusted = trusted_path
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    // A file that is not a checkpoint note at all is a usage error, not a
    // forged signature: say so (exit 2).
    if let (Some(text), Some(path)) = (&trusted, trusted_path) {
        if let Err(e) = lifeledger_ledger::checkpoint::read_unverified(text) {
            bail!(
                "--trusted-checkpoint {}: not a checkpoint note: {e}",
                path.display()
            );
        }
    }
    let bar = if std::io::stderr().is_terminal() && bytes.len() > 16 << 20 {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} verify {pos} entries {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let depth = if deep { Depth::Events } else { Depth::Chain };
    let report = verify_bundle(&bytes, &key, trusted.as_deref(), depth, &mut |n| {
        bar.set_position(n)
    })
    .map_err(|e| anyhow!("{}: {e}", bundle.display()))?;
    bar.finish_and_clear();
    let mut report = report;
    let mut unvouched = Vec::new();
    if accept_unvouched_tail {
        report.findings.retain(|f| {
            let tail = f.class == TamperClass::UnvouchedTail;
            if tail {
                unvouched.push(f.clone());
            }
            !tail
        });
    }
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "intact": report.is_intact(),
                "report": report,
                "unvouched_accepted": unvouched,
            }))?
        );
    } else {
        out!(
            "bundle {} ({} export): origin {}, {} checkpoint(s) verified with {}",
            bundle.display(),
            report.scope,
            report.origin.as_deref().unwrap_or("(none)"),
            report.checkpoints_verified,
            key
        );
        for c in &report.chains {
            out!(
                "  chain {:?}: {} entries, {} vouched for by the latest checkpoint",
                c.chain,
                c.entries,
                c.vouched
            );
        }
        for f in &unvouched {
            out!(
                "  UNVOUCHED (accepted) chain {:?} from seq {}: {}",
                f.chain.as_deref().unwrap_or_default(),
                f.first_bad_seq.unwrap_or_default(),
                f.detail
            );
        }
        if report.is_intact() {
            out!("intact");
        }
        for f in &report.findings {
            out!(
                "FAILED {:?}{}{}: {}",
                f.class,
                f.chain
                    .as_deref()
                    .map(|c| format!(" chain {c:?}"))
                    .unwrap_or_default(),
                f.first_bad_seq
                    .map(|s| format!(" first bad seq {s}"))
                    .unwrap_or_default(),
                f.detail
            );
        }
    }
    Ok(if report.is_intact() {
        Outcome::Ok
    } else {
        Outcome::VerificationFailed
    })
}

#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// The item id.
    pub item: String,
    /// Where to write the proof file (JSON).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct VerifyProofArgs {
    /// A proof file from `lifeledger prove`.
    pub file: PathBuf,
    /// The signer's public key.
    #[arg(long)]
    pub key: PathBuf,
    /// Judge as of this moment (default: the checkpoint's time).
    #[arg(long)]
    pub as_of: Option<Timestamp>,
    #[arg(long)]
    pub json: bool,
}

pub fn prove(dir: &Path, args: ProveArgs) -> anyhow::Result<Outcome> {
    let mut reading = super::open_for_reading(dir)?;
    let ledger = reading.ledger_mut();
    if ledger.checkpoints()?.is_empty() {
        bail!(
            "the ledger has no checkpoint to prove {} against; take one first with `lifeledger checkpoint --key KEY`",
            args.item
        );
    }
    let mut projection = ledger.open_or_rebuild_projection(&mut |_| {})?;
    ledger.catch_up(&mut projection, &mut |_| {})?;
    let proof = ledger.prove_item(&args.item, &projection)?;
    std::fs::write(&args.out, serde_json::to_vec_pretty(&proof)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    out!(
        "wrote {}: {} entries about {} with inclusion proofs against the checkpoint of {}",
        args.out.display(),
        proof.entries.len(),
        args.item,
        lifeledger_ledger::checkpoint::read_unverified(&proof.checkpoint)
            .map(|c| c.time.to_string())
            .unwrap_or_default()
    );
    Ok(Outcome::Ok)
}

pub fn verify_proof(args: VerifyProofArgs) -> anyhow::Result<Outcome> {
    let key = read_public_key(&args.key)?;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let report = match lifeledger_ledger::bundle::proof::verify_item_proof(&bytes, &key, args.as_of)
    {
        Ok(r) => r,
        Err(lifeledger_ledger::bundle::proof::ProofError::Malformed(why)) => {
            bail!("{}: not a proof file: {why}", args.file.display())
        }
        Err(e) => {
            if args.json {
                out!(
                    "{}",
                    serde_json::json!({"valid": false, "error": e.to_string()})
                );
            } else {
                out!("proof FAILED: {e}");
            }
            return Ok(Outcome::VerificationFailed);
        }
    };
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"valid": true, "report": report}))?
        );
        return Ok(Outcome::Ok);
    }
    out!(
        "proof valid: {} entries included in the log signed at {} by {}",
        report.entries_proven,
        report.checkpoint_time,
        key
    );
    match &report.verdict {
        Some(v) => {
            match &v.deadline {
                Some(d) => out!("deadline {} (rule {}): {}", d.due_by, d.rule, d.explanation),
                None => out!("deadline none"),
            }
            out!(
                "verdict  {} as of {} under policy {}",
                v.status.name(),
                v.as_of,
                report.policy_version
            );
            for violation in &v.violations {
                out!("violation {}", violation.name());
            }
            if v.reported_late {
                out!("evidence: the deletion reached the ledger after the deadline");
            }
        }
        None => out!("nothing about {} had happened by then", report.item_id),
    }
    Ok(Outcome::Ok)
}
