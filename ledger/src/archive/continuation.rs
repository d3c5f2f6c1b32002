//! Continuing a chain from the archive: one chain per source partition,
//! whichever ledger extends it.
//!
//! A ledger that takes a chain over (a consumer assigned a partition)
//! first compares its own chain with the archive's. The archive is the
//! chain of record: segments are named by chain and first seq and written
//! once, so it holds at most one continuation from any seq. Entries link
//! by hash, so two chains that agree on one entry's hash agree on every
//! entry before it: comparing at one seq is enough.

use bytes::Bytes;

use super::layout::{self, Object};
use super::{Archive, ArchiveError};
use crate::store::Ledger;
use crate::store::segment::{self, SegmentSummary};

/// How this ledger's chain stands against the archive's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuation {
    /// The archive holds nothing of the chain.
    NotArchived,
    /// This ledger holds everything the archive does (and `ahead` entries
    /// more, not archived yet).
    Holds { next_seq: u64, ahead: u64 },
    /// The archive's segments from `from` on were fetched and appended.
    Adopted { from: u64, next_seq: u64 },
    /// The two differ from `seq` on (another ledger extended the chain
    /// from a point this one had passed): this ledger must not extend it.
    Diverged { seq: u64, detail: String },
}

fn fetch(archive: &Archive, chain: &str, first: u64) -> Result<Bytes, ArchiveError> {
    let name = layout::segment_key(chain, first);
    archive.get(&name)?.ok_or_else(|| ArchiveError::Damaged {
        location: format!("{}/{name}", archive.url().trim_end_matches('/')),
        detail: "listed, but gone when fetched".to_owned(),
    })
}

fn summary(
    archive: &Archive,
    chain: &str,
    first: u64,
    bytes: &[u8],
) -> Result<SegmentSummary, ArchiveError> {
    segment::summarize(bytes).map_err(|detail| ArchiveError::Damaged {
        location: format!(
            "{}/{}",
            archive.url().trim_end_matches('/'),
            layout::segment_key(chain, first)
        ),
        detail,
    })
}

/// Brings `ledger`'s chain up to the archive's, fetching what it lacks,
/// or says why it cannot. The chain's open segment must hold no entries
/// (seal it first).
pub fn continue_chain(
    ledger: &mut Ledger,
    archive: &Archive,
    chain: &str,
) -> Result<Continuation, ArchiveError> {
    let dir = format!(
        "{}/{}",
        layout::SEGMENTS,
        crate::store::segment::chain_dir_name(chain)
    );
    let firsts: Vec<u64> = archive
        .list(&dir)?
        .into_iter()
        .filter_map(|(name, _)| match layout::parse(&name) {
            Some(Object::Segment {
                chain: c,
                first_seq,
            }) if c == chain => Some(first_seq),
            _ => None,
        })
        .collect();
    let Some(&last_first) = firsts.last() else {
        return Ok(Continuation::NotArchived);
    };
    let local_next = ledger.head(chain).map_or(0, |h| h.next_seq);
    if firsts.binary_search(&local_next).is_ok() {
        // The archive continues exactly where this chain ends: fetch the
        // rest; adopting checks that it links to this chain's last entry.
        let mut fetched = Vec::new();
        for first in firsts.iter().filter(|f| **f >= local_next) {
            fetched.push(fetch(archive, chain, *first)?.to_vec());
        }
        return match ledger.adopt_segments(chain, &fetched) {
            Ok(next_seq) => Ok(Continuation::Adopted {
                from: local_next,
                next_seq,
            }),
            Err(crate::store::StoreError::Broken { seq, detail, .. }) => {
                Ok(Continuation::Diverged { seq, detail })
            }
            Err(e) => Err(e.into()),
        };
    }
    // Otherwise this chain must reach past the archive's end, agreeing
    // with it there.
    let bytes = fetch(archive, chain, last_first)?;
    let last = summary(archive, chain, last_first, &bytes)?;
    let Some(archived_last) = last.last else {
        return Err(ArchiveError::Damaged {
            location: layout::segment_key(chain, last_first),
            detail: "an archived segment with no entry".to_owned(),
        });
    };
    if local_next < last.next_seq {
        return Ok(Continuation::Diverged {
            seq: local_next,
            detail: format!(
                "this ledger's chain ends at seq {local_next}, inside the archived segment {}..{}",
                last.first_seq, last.next_seq
            ),
        });
    }
    let seq = last.next_seq - 1;
    let local = ledger.records(chain, seq)?.next().transpose()?;
    match local {
        Some(r) if r.hash == archived_last.hash => Ok(Continuation::Holds {
            next_seq: local_next,
            ahead: local_next - last.next_seq,
        }),
        _ => Ok(Continuation::Diverged {
            seq,
            detail: format!("entry {seq} differs from the archived one"),
        }),
    }
}
