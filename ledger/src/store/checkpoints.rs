//! Signed checkpoints kept beside the chains, and the ledger's origin.

use jiff::Timestamp;

use super::{Ledger, StoreError, damaged};
use crate::checkpoint::{ChainRoot, Checkpoint, PrivateKey, PublicKey};

const TREE: &str = "checkpoints";
const ORIGIN_KEY: &[u8] = b"Morigin";
const PUBLIC_KEY: &[u8] = b"Mpublic-key";

impl Ledger {
    /// The name checkpoints carry as their origin. Set once, when the
    /// ledger is first given one (or on first use, from random bytes).
    pub fn origin(&self) -> Result<String, StoreError> {
        match self.db.get(ORIGIN_KEY)? {
            Some(v) => String::from_utf8(v.to_vec())
                .map_err(|_| damaged(ORIGIN_KEY, "origin is not UTF-8")),
            None => Err(damaged(ORIGIN_KEY, "no origin recorded")),
        }
    }

    /// Gives the ledger its origin if it has none; returns the origin.
    pub fn ensure_origin(&mut self, wanted: Option<&str>) -> Result<String, StoreError> {
        if let Some(v) = self.db.get(ORIGIN_KEY)? {
            return String::from_utf8(v.to_vec())
                .map_err(|_| damaged(ORIGIN_KEY, "origin is not UTF-8"));
        }
        let origin = match wanted {
            Some(o) => o.to_owned(),
            None => {
                let mut id = [0u8; 8];
                getrandom::getrandom(&mut id).map_err(|e| damaged(ORIGIN_KEY, e.to_string()))?;
                format!("lifeledger.invalid/{}", hex::encode(id))
            }
        };
        self.db.insert(ORIGIN_KEY, origin.as_bytes())?;
        self.make_durable()?;
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
        let checkpoint = self.current_checkpoint(time)?;
        let note = key.sign(&checkpoint);
        let tree = self.db.open_tree(TREE)?;
        let next = tree.last()?.map_or(0, |(k, _)| {
            u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0xff; 8])).wrapping_add(1)
        });
        tree.insert(next.to_be_bytes(), note.as_bytes())?;
        self.db
            .insert(PUBLIC_KEY, key.public().to_string().as_bytes())?;
        self.make_durable()?;
        Ok(note)
    }

    /// Every checkpoint taken, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<String>, StoreError> {
        let Some(tree) = self.existing_tree(TREE)? else {
            return Ok(Vec::new());
        };
        tree.iter()
            .values()
            .map(|v| {
                let v = v?;
                String::from_utf8(v.to_vec())
                    .map_err(|_| damaged(b"checkpoint", "note is not UTF-8"))
            })
            .collect()
    }

    /// The public key of the last checkpoint signer, if any.
    pub fn signer(&self) -> Result<Option<PublicKey>, StoreError> {
        match self.db.get(PUBLIC_KEY)? {
            None => Ok(None),
            Some(v) => {
                let text = String::from_utf8_lossy(&v).into_owned();
                PublicKey::parse(&text)
                    .map(Some)
                    .map_err(|e| damaged(PUBLIC_KEY, e.to_string()))
            }
        }
    }

    /// Texts of every policy published with its text, oldest first.
    pub fn policy_texts(&self) -> Result<Vec<String>, StoreError> {
        let mut texts = Vec::new();
        for p in self.load_projection()?.policies {
            if let Some(text) = self.policy_text(&p.hash)? {
                texts.push(text);
            }
        }
        Ok(texts)
    }
}
