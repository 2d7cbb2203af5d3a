//! Read and write sets, and the validation rules of each level.
//!
//! A coordinated transaction reads at its snapshot timestamp `read_ts` and
//! commits at a later `commit_ts`. Validation at commit asks what other
//! transactions committed in between, `(read_ts, commit_ts)`, and whether
//! that invalidates this one:
//!
//! - **Snapshot Isolation** — first committer wins (Berenson et al., *A
//!   Critique of ANSI SQL Isolation Levels*, 1995, §4.2): abort if any key
//!   this transaction writes (or locked with `FOR UPDATE`) was written by a
//!   transaction that committed after `read_ts`. Prevents lost updates;
//!   allows write skew.
//! - **Strict Serializability** — backward validation (Kung & Robinson, *On
//!   Optimistic Methods for Concurrency Control*, 1981): additionally abort
//!   if any key it read, or any key inside a range it scanned (phantoms
//!   included), was written after `read_ts`. A transaction that passes read
//!   nothing that changed before its commit point, so the history is
//!   equivalent to the serial order of commit timestamps; and since commit
//!   timestamps follow real time on a node, the order is strict.
//! - **Highly available levels** — no validation: last writer wins.
//!
//! The writes committed after `read_ts` come from the shard's in-memory log
//! of recent commits ([`CommitRecord`]); see `shard`.

use std::collections::{BTreeMap, HashSet};
use std::ops::{Bound, RangeBounds};

use geodb_storage::Timestamp;

use crate::Isolation;

/// The keys a committed transaction wrote (or locked), kept while some
/// running transaction may still need to validate against them.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    pub ts: Timestamp,
    /// Sorted, without duplicates.
    pub keys: Vec<Vec<u8>>,
}

/// A scanned key range.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// What a transaction read: point keys (present or not) and scanned ranges.
#[derive(Debug, Default, Clone)]
pub struct ReadSet {
    pub keys: HashSet<Vec<u8>>,
    pub ranges: Vec<KeyRange>,
}

impl ReadSet {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.ranges.is_empty()
    }

    fn covers(&self, key: &[u8]) -> bool {
        self.keys.contains(key) || self.ranges.iter().any(|range| range_contains(range, key))
    }
}

/// Whether `key` lies within `range`.
pub fn range_contains(range: &KeyRange, key: &[u8]) -> bool {
    let start = match &range.0 {
        Bound::Included(start) => Bound::Included(start.as_slice()),
        Bound::Excluded(start) => Bound::Excluded(start.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    };
    let end = match &range.1 {
        Bound::Included(end) => Bound::Included(end.as_slice()),
        Bound::Excluded(end) => Bound::Excluded(end.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (start, end).contains(&key)
}

/// Buffered writes: key → new value, `None` for a delete.
pub type WriteSet = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Why validation failed: the key and the level's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key: Vec<u8>,
    pub kind: ConflictKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// A key this transaction writes was written by a later committer.
    Write,
    /// A key this transaction read (or a key in a range it scanned) was
    /// written after its snapshot.
    Read,
}

/// Checks a committing transaction against the commits after its snapshot.
///
/// `written` holds the keys the transaction writes or locked; `recent`
/// holds at least every commit with a timestamp above `read_ts`.
pub fn validate<'a>(
    isolation: Isolation,
    read_ts: Timestamp,
    reads: &ReadSet,
    written: &HashSet<&[u8]>,
    recent: impl Iterator<Item = &'a CommitRecord>,
) -> Result<(), Conflict> {
    if isolation.is_highly_available() {
        return Ok(());
    }
    for record in recent.filter(|record| record.ts > read_ts) {
        for key in &record.keys {
            if written.contains(key.as_slice()) {
                return Err(Conflict { key: key.clone(), kind: ConflictKind::Write });
            }
            if isolation == Isolation::Serializable && reads.covers(key) {
                return Err(Conflict { key: key.clone(), kind: ConflictKind::Read });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(physical: u64) -> Timestamp {
        Timestamp::new(physical, 0)
    }

    fn record(at: u64, keys: &[&[u8]]) -> CommitRecord {
        CommitRecord { ts: ts(at), keys: keys.iter().map(|key| key.to_vec()).collect() }
    }

    #[test]
    fn rules_per_level() {
        let recent = [record(5, &[b"x"]), record(15, &[b"y"]), record(16, &[b"r/5"])];
        let mut reads = ReadSet::default();
        reads.keys.insert(b"y".to_vec());
        reads.ranges.push((Bound::Included(b"r/".to_vec()), Bound::Excluded(b"r0".to_vec())));
        let written: HashSet<&[u8]> = [&b"x"[..]].into_iter().collect();
        // x was written before the snapshot: no write conflict at any level.
        assert!(validate(Isolation::Snapshot, ts(10), &reads, &written, recent.iter()).is_ok());
        // y, read, was written after it: only serializable cares.
        assert_eq!(
            validate(Isolation::Serializable, ts(10), &reads, &written, recent.iter()),
            Err(Conflict { key: b"y".to_vec(), kind: ConflictKind::Read })
        );
        // A phantom in a scanned range.
        reads.keys.clear();
        assert_eq!(
            validate(Isolation::Serializable, ts(10), &reads, &written, recent.iter()),
            Err(Conflict { key: b"r/5".to_vec(), kind: ConflictKind::Read })
        );
        // Writing x after a later commit of x: first committer wins.
        assert_eq!(
            validate(Isolation::Snapshot, ts(1), &reads, &written, recent.iter()),
            Err(Conflict { key: b"x".to_vec(), kind: ConflictKind::Write })
        );
        // Highly available levels never validate.
        for level in [Isolation::ReadCommitted, Isolation::MonotonicAtomicView] {
            assert!(validate(level, ts(1), &reads, &written, recent.iter()).is_ok());
        }
    }
}
