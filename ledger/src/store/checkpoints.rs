//! Signed checkpoints kept beside the chains, and the ledger's origin
//! (files of `own_records`).

use jiff::Timestamp;

use super::own_records::{self, ORIGIN, SIGNER};
use super::{Ledger, StoreError, damaged};
use crate::checkpoint::{ChainRoot, Checkpoint, PrivateKey, PublicKey};

const ORIGIN_KEY: &[u8] = b"origin";

impl Ledger {
    /// The name checkpoints carry as their origin. Set once, when the
    /// ledger is first given one (or on first use, from random bytes).
    pub fn origin(&self) -> Result<String, StoreError> {
        own_records::read_text(&self.dir.join(ORIGIN))?
            .ok_or_else(|| damaged(ORIGIN_KEY, "no origin recorded"))
    }

    /// Gives the ledger its origin if it has none; returns the origin.
    pub fn ensure_origin(&mut self, wanted: Option<&str>) -> Result<String, StoreError> {
        if let Some(origin) = own_records::read_text(&self.dir.join(ORIGIN))? {
            return Ok(origin);
        }
        let origin = match wanted {
            Some(o) => o.to_owned(),
            None => {
                let mut id = [0u8; 8];
                getrandom::getrandom(&mut id).map_err(|e| damaged(ORIGIN_KEY, e.to_string()))?;
                format!("lifeledger.invalid/{}", hex::encode(id))
            }
        };
        self.writable()?;
        own_records::write_durably(&self.dir.join(ORIGIN), origin.as_bytes())?;
        Ok(origin)
    }

    /// What a checkpoint taken now would say.
    pub fn current_checkpoint(&mut self, time: Timestamp) -> Result<Checkpoint, StoreError> {
        let origin = self.ensure_origin(None)?;
        let mut chains = Vec::new();
        for chain in self.chain_names()? {
            let (size, root) = self.tree_head(&chain)?;
            chains.push(ChainRoot { chain, size, root });
        }
        Ok(Checkpoint {
            origin,
            time,
            chains,
        })
    }

    /// Takes, signs and keeps a checkpoint covering every chain head.
    /// Returns the signed note.
    pub fn checkpoint(&mut self, key: &PrivateKey, time: Timestamp) -> Result<String, StoreError> {
        self.writable()?;
        let checkpoint = self.current_checkpoint(time)?;
        self.keep_checkpoint(key, &checkpoint)
    }

    /// Takes, signs and keeps a checkpoint covering each chain only up to
    /// `limits` (a chain not named there: not at all), e.g. what the
    /// archive holds. `None` when it would cover nothing.
    pub fn checkpoint_within(
        &mut self,
        key: &PrivateKey,
        time: Timestamp,
        limits: &std::collections::BTreeMap<String, u64>,
    ) -> Result<Option<String>, StoreError> {
        self.writable()?;
        let origin = self.ensure_origin(None)?;
        let mut chains = Vec::new();
        for chain in self.chain_names()? {
            let (size, root) = self.tree_head(&chain)?;
            let limit = limits.get(&chain).copied().unwrap_or(0).min(size);
            if limit == 0 {
                continue;
            }
            let root = if limit == size {
                root
            } else {
                self.tree_root_at(&chain, limit)?
            };
            chains.push(ChainRoot {
                chain,
                size: limit,
                root,
            });
        }
        if chains.is_empty() {
            return Ok(None);
        }
        let checkpoint = Checkpoint {
            origin,
            time,
            chains,
        };
        self.keep_checkpoint(key, &checkpoint).map(Some)
    }

    fn keep_checkpoint(
        &mut self,
        key: &PrivateKey,
        checkpoint: &Checkpoint,
    ) -> Result<String, StoreError> {
        let note = key.sign(checkpoint);
        let next = own_records::checkpoint_files(&self.dir)?.len() as u64;
        own_records::write_durably(&self.dir.join(SIGNER), key.public().to_string().as_bytes())?;
        own_records::write_durably(
            &own_records::checkpoint_path(&self.dir, next),
            note.as_bytes(),
        )?;
        Ok(note)
    }

    /// Every checkpoint taken, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<String>, StoreError> {
        let mut notes = Vec::new();
        for path in own_records::checkpoint_files(&self.dir)? {
            notes.extend(own_records::read_text(&path)?);
        }
        Ok(notes)
    }

    /// The public key of the last checkpoint signer, if any.
    pub fn signer(&self) -> Result<Option<PublicKey>, StoreError> {
        match own_records::read_text(&self.dir.join(SIGNER))? {
            None => Ok(None),
            Some(text) => PublicKey::parse(&text)
                .map(Some)
                .map_err(|e| damaged(SIGNER.as_bytes(), e.to_string())),
        }
    }

    /// Texts of every policy published with its text, oldest first, as
    /// chain `policy` names them (not the projection, which may lag).
    pub fn policy_texts(&self) -> Result<Vec<String>, StoreError> {
        let mut texts = Vec::new();
        for hash in self.published_hashes(u64::MAX)? {
            if let Some(text) = self.policy_text(&hash)? {
                texts.push(text);
            }
        }
        Ok(texts)
    }
}
