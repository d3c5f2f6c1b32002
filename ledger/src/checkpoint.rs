//! Signed checkpoints in the C2SP signed-note format, and their keys. Pure.
//!
//! A checkpoint commits to every chain: its body is a C2SP tlog-checkpoint
//! (origin, tree size, root hash) whose size is the total number of entries
//! and whose root is the *ledger root* over all chains (FORMAT.md), followed
//! by extension lines: the time it was taken and each chain's size and root.
//! It is signed as a note (c2sp.org/signed-note) with an Ed25519 key.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::merkle::Hash;

/// One chain's tree in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRoot {
    pub chain: String,
    pub size: u64,
    pub root: Hash,
}

/// What a checkpoint says, before or after signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    /// When it was taken.
    pub time: Timestamp,
    /// Every chain, sorted by name.
    pub chains: Vec<ChainRoot>,
}

/// The ledger root: BLAKE3 over `0x02`, then for each chain in name order
/// `u32 len(name) || name || u64 size || root`.
pub fn ledger_root(chains: &[ChainRoot]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0x02]);
    for c in chains {
        h.update(&(c.chain.len() as u32).to_be_bytes());
        h.update(c.chain.as_bytes());
        h.update(&c.size.to_be_bytes());
        h.update(&c.root);
    }
    *h.finalize().as_bytes()
}

/// Why a checkpoint or key could not be read or trusted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NoteError {
    #[error("not a checkpoint note: {0}")]
    Malformed(String),
    #[error("not a key: {0}")]
    BadKey(String),
    #[error("the note is signed by {found:?}, not by the key {expected:?}")]
    WrongKey {
        expected: String,
        found: Vec<String>,
    },
    #[error("the signature by {0:?} does not verify: the note was changed or the signature forged")]
    BadSignature(String),
    #[error("the checkpoint's root does not match its chain lines")]
    RootMismatch,
}

impl Checkpoint {
    pub fn total_size(&self) -> u64 {
        self.chains.iter().map(|c| c.size).sum()
    }

    pub fn root(&self) -> Hash {
        ledger_root(&self.chains)
    }

    pub fn chain(&self, name: &str) -> Option<&ChainRoot> {
        self.chains.iter().find(|c| c.chain == name)
    }

    /// The note body (the signed text), ending with a newline.
    pub fn body(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.origin);
        let _ = writeln!(out, "{}", self.total_size());
        let _ = writeln!(out, "{}", B64.encode(self.root()));
        let _ = writeln!(out, "time {}", self.time);
        for c in &self.chains {
            let _ = writeln!(out, "chain {} {} {}", c.chain, c.size, B64.encode(c.root));
        }
        out
    }

    /// Parses a note body (without signatures) and checks its root.
    pub fn parse_body(body: &str) -> Result<Self, NoteError> {
        let bad = |why: &str| NoteError::Malformed(why.to_owned());
        let mut lines = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("body must end with a newline"))?
            .split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("missing origin"))?;
        let size: u64 = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("line 2 must be the tree size"))?;
        let root = lines
            .next()
            .and_then(|l| B64.decode(l).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| bad("line 3 must be a base64 32-byte root"))?;
        let time = lines
            .next()
            .and_then(|l| l.strip_prefix("time "))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("line 4 must be `time RFC3339`"))?;
        let mut chains = Vec::new();
        for line in lines {
            let mut parts = line
                .strip_prefix("chain ")
                .ok_or_else(|| bad("extension lines must be `chain NAME SIZE ROOT`"))?
                .split(' ');
            let (Some(name), Some(csize), Some(croot), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("a chain line needs a name, a size and a root"));
            };
            chains.push(ChainRoot {
                chain: name.to_owned(),
                size: csize
                    .parse()
                    .map_err(|_| bad("chain size is not a number"))?,
                root: B64
                    .decode(croot)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| bad("chain root is not base64 of 32 bytes"))?,
            });
        }
        if chains.windows(2).any(|w| w[0].chain >= w[1].chain) {
            return Err(bad("chain lines must be sorted by name, each once"));
        }
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            time,
            chains,
        };
        if checkpoint.total_size() != size || checkpoint.root() != root {
            return Err(NoteError::RootMismatch);
        }
        Ok(checkpoint)
    }
}

/// The C2SP key ID: the first four bytes of SHA-256(name || "\n" || 0x01 ||
/// public key).
fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([0x01]);
    h.update(public.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains(['+', ' ', '\n']) {
        return Err(NoteError::BadKey(format!(
            "{name:?}: a key name is non-empty, without + space or newline"
        )));
    }
    Ok(())
}

/// A verifier key: `NAME+KEYID+BASE64(0x01 || public key)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    pub key: VerifyingKey,
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let text = text.trim();
        // The key is base64, which may itself contain '+'.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected NAME+KEYID+KEY".into()));
        };
        check_key_name(name)?;
        let bytes = B64
            .decode(key)
            .map_err(|e| NoteError::BadKey(e.to_string()))?;
        let (Some(&0x01), Ok(raw)) = (
            bytes.first(),
            <[u8; 32]>::try_from(&bytes[1.min(bytes.len())..]),
        ) else {
            return Err(NoteError::BadKey(
                "expected an Ed25519 key (type 0x01, 32 bytes)".into(),
            ));
        };
        let key = VerifyingKey::from_bytes(&raw).map_err(|e| NoteError::BadKey(e.to_string()))?;
        if hex::encode(key_id(name, &key)) != id {
            return Err(NoteError::BadKey(
                "the key ID does not match the key".into(),
            ));
        }
        Ok(PublicKey {
            name: name.to_owned(),
            key,
        })
    }

    pub fn id(&self) -> [u8; 4] {
        key_id(&self.name, &self.key)
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = vec![0x01];
        bytes.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.id()),
            B64.encode(bytes)
        )
    }
}

/// A signer key: `PRIVATE+KEY+NAME+KEYID+BASE64(0x01 || seed)`.
#[derive(Debug, Clone)]
pub struct PrivateKey {
    pub name: String,
    key: SigningKey,
}

impl PrivateKey {
    /// A new key from 32 random bytes (the caller's randomness: this module
    /// does no I/O).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        Ok(PrivateKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| NoteError::BadKey("expected PRIVATE+KEY+NAME+KEYID+KEY".into()))?;
        // The key is base64, which may itself contain '+'.
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey(
                "expected PRIVATE+KEY+NAME+KEYID+KEY".into(),
            ));
        };
        let bytes = B64
            .decode(key)
            .map_err(|e| NoteError::BadKey(e.to_string()))?;
        let (Some(&0x01), Ok(seed)) = (
            bytes.first(),
            <[u8; 32]>::try_from(&bytes[1.min(bytes.len())..]),
        ) else {
            return Err(NoteError::BadKey(
                "expected an Ed25519 seed (type 0x01, 32 bytes)".into(),
            ));
        };
        let key = PrivateKey::from_seed(name, seed)?;
        if hex::encode(key.public().id()) != id {
            return Err(NoteError::BadKey(
                "the key ID does not match the key".into(),
            ));
        }
        Ok(key)
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The signed note: body, a blank line, one signature line.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes());
        let mut blob = self.public().id().to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.name, B64.encode(blob))
    }

    /// The private key's text form.
    pub fn to_text(&self) -> String {
        let mut bytes = vec![0x01];
        bytes.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.public().id()),
            B64.encode(bytes)
        )
    }
}

/// Splits a signed note into its body and signature lines.
fn split_note(note: &str) -> Result<(&str, Vec<&str>), NoteError> {
    let at = note
        .find("\n\n")
        .ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
    let body = &note[..at + 1];
    let sigs: Vec<&str> = note[at + 2..].lines().filter(|l| !l.is_empty()).collect();
    if sigs.is_empty() {
        return Err(NoteError::Malformed("no signature lines".into()));
    }
    Ok((body, sigs))
}

/// Verifies a signed checkpoint note with `key` and returns what it says.
pub fn verify_note(note: &str, key: &PublicKey) -> Result<Checkpoint, NoteError> {
    let (body, sigs) = split_note(note)?;
    let mut signers = Vec::new();
    for line in sigs {
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
            NoteError::Malformed("a signature line starts with an em dash and a space".into())
        })?;
        let (name, blob) = rest
            .split_once(' ')
            .ok_or_else(|| NoteError::Malformed("a signature line is `— NAME SIGNATURE`".into()))?;
        let blob = B64
            .decode(blob)
            .map_err(|_| NoteError::Malformed("signature is not base64".into()))?;
        signers.push(name.to_owned());
        if name != key.name || blob.len() != 68 || blob[..4] != key.id() {
            continue;
        }
        let signature = ed25519_dalek::Signature::from_slice(&blob[4..])
            .map_err(|_| NoteError::BadSignature(name.to_owned()))?;
        key.key
            .verify(body.as_bytes(), &signature)
            .map_err(|_| NoteError::BadSignature(name.to_owned()))?;
        return Checkpoint::parse_body(body);
    }
    Err(NoteError::WrongKey {
        expected: key.to_string(),
        found: signers,
    })
}

/// Reads a note's body without checking any signature (to show it, or to
/// compare it with another before the key is known).
pub fn read_unverified(note: &str) -> Result<Checkpoint, NoteError> {
    let (body, _) = split_note(note)?;
    Checkpoint::parse_body(body)
}

#[cfg(test)]
mod tests;
