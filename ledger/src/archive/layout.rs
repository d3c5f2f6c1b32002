//! Where each archived object lives under the archive's prefix (pure).
//! FORMAT.md section 18 specifies the layout.
//!
//! Every object is written once, with a conditional put that never
//! overwrites. A segment's name holds only its chain and first seq, so
//! that two writers extending the same chain from the same point cannot
//! both succeed: the second put is refused, whatever its bytes.

use crate::store::segment::chain_dir_name;

/// The object that marks a prefix as a Lifeledger archive, and its bytes.
pub const MARKER: &str = "lifeledger-archive";
pub const MARKER_TEXT: &str = "lifeledger-archive/1\n";
pub const LEDGERS: &str = "ledgers";
pub const SEGMENTS: &str = "segments";
pub const CHECKPOINTS: &str = "checkpoints";
pub const POLICIES: &str = "policies";
pub const KEYS: &str = "keys";

/// `segments/c-CHAIN/FIRST.seg`: the sealed segment of `chain` whose first
/// seq is `first_seq`, byte for byte as sealed in the ledger directory.
pub fn segment_key(chain: &str, first_seq: u64) -> String {
    format!("{SEGMENTS}/{}/{first_seq:020}.seg", chain_dir_name(chain))
}

/// The name under which a ledger's own records are archived: the first 16
/// hex digits of the BLAKE3 hash of its origin line. Several ledgers (the
/// members of a consumer group) share one archive: their chains meet in
/// `segments/`, their origins and checkpoints stay apart.
pub fn ledger_id(origin: &str) -> String {
    blake3::hash(origin.as_bytes()).to_hex()[..16].to_owned()
}

/// `ledgers/ID/origin`: a ledger's origin line (FORMAT.md 16.1).
pub fn origin_key(ledger: &str) -> String {
    format!("{LEDGERS}/{ledger}/origin")
}

/// `ledgers/ID/checkpoints/N.note`: a ledger's `N`-th checkpoint.
pub fn checkpoint_key(ledger: &str, n: u64) -> String {
    format!("{LEDGERS}/{ledger}/{CHECKPOINTS}/{n:020}.note")
}

/// `policies/HASH.toml`: a published policy text.
pub fn policy_key(hash: &str) -> String {
    format!("{POLICIES}/{hash}.toml")
}

/// `keys/KEYID.pub`: a checkpoint signer's public key (KEYID: the 4-byte
/// key id of FORMAT.md section 10, in lowercase hex).
pub fn key_key(key_id: [u8; 4]) -> String {
    format!("{KEYS}/{}.pub", hex::encode(key_id))
}

/// What an object's name says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Marker,
    Origin(String),
    Segment { chain: String, first_seq: u64 },
    Checkpoint(String, u64),
    Policy(String),
    Key([u8; 4]),
}

fn twenty_digits(s: &str) -> Option<u64> {
    if s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Reads an object name (relative to the prefix); `None` for a name that
/// is none of the archive's (a stray object, reported by `verify`).
pub fn parse(name: &str) -> Option<Object> {
    if name == MARKER {
        return Some(Object::Marker);
    }
    let is_id =
        |id: &str| id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        [SEGMENTS, dir, file] => {
            let chain = dir.strip_prefix("c-")?.replace("%2F", "/");
            let first_seq = twenty_digits(file.strip_suffix(".seg")?)?;
            (segment_key(&chain, first_seq) == name).then_some(Object::Segment { chain, first_seq })
        }
        [LEDGERS, id, "origin"] if is_id(id) => Some(Object::Origin((*id).to_owned())),
        [LEDGERS, id, CHECKPOINTS, file] if is_id(id) => Some(Object::Checkpoint(
            (*id).to_owned(),
            twenty_digits(file.strip_suffix(".note")?)?,
        )),
        [POLICIES, file] => {
            let hash = file.strip_suffix(".toml")?;
            (hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .then(|| Object::Policy(hash.to_owned()))
        }
        [KEYS, file] => {
            let id = hex::decode(file.strip_suffix(".pub")?).ok()?;
            let id: [u8; 4] = id.try_into().ok()?;
            (key_key(id) == name).then_some(Object::Key(id))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_name_reads_back_as_what_it_names(
            chain in "[a-z:./]{1,30}",
            seq in any::<u64>(),
            hash in "[0-9a-f]{64}",
            id in any::<[u8; 4]>(),
        ) {
            prop_assume!(!chain.contains("%2F"));
            prop_assert_eq!(parse(&segment_key(&chain, seq)), Some(Object::Segment { chain: chain.clone(), first_seq: seq }));
            let ledger = ledger_id(&chain);
            prop_assert_eq!(parse(&checkpoint_key(&ledger, seq)), Some(Object::Checkpoint(ledger.clone(), seq)));
            prop_assert_eq!(parse(&origin_key(&ledger)), Some(Object::Origin(ledger.clone())));
            prop_assert_eq!(parse(&policy_key(&hash)), Some(Object::Policy(hash.clone())));
            prop_assert_eq!(parse(&key_key(id)), Some(Object::Key(id)));
        }
    }

    #[test]
    fn other_names_are_strays() {
        for name in [
            "segments/c-file/1.seg",
            "segments/file/00000000000000000000.seg",
            "segments/c-file/00000000000000000000.open",
            "checkpoints/00000000000000000000.note",
            "ledgers/xyz/origin",
            "ledgers/0123456789abcdef/checkpoints/0.note",
            "policies/ABC.toml",
            "keys/xyz.pub",
            "origin",
            "segments/c-a/b/00000000000000000000.seg",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
    }
}
