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

use std::collections::HashSet;
use std::ops::RangeBounds;

use geodb_storage::{Timestamp, TxnId};

use crate::Isolation;
use crate::protocol::{Changes, KeyRange};

/// The keys a committed transaction wrote (or locked), kept while some
/// running transaction may still need to validate against them.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    pub ts: Timestamp,
    pub txn: TxnId,
    /// Sorted, without duplicates.
    pub keys: Vec<Vec<u8>>,
}

/// Whether `key` lies within `range`.
pub fn range_contains(range: &KeyRange, key: &[u8]) -> bool {
    (range.0.as_ref().map(Vec::as_slice), range.1.as_ref().map(Vec::as_slice)).contains(&key)
}

/// A key for messages: printable ASCII as is, other bytes as `\xNN`.
pub fn printable(key: &[u8]) -> String {
    key.iter()
        .flat_map(|&byte| {
            if byte.is_ascii_graphic() || byte == b' ' {
                vec![byte as char]
            } else {
                format!("\\x{byte:02x}").chars().collect()
            }
        })
        .collect()
}

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

/// Test-only switches that plant validation bugs, to prove the simulator
/// catches them. Never set outside tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValidationFaults {
    /// Serializable validation ignores scanned ranges (phantoms go unseen).
    pub skip_ranges: bool,
    /// A leader hands out commit and prepare timestamps from its clock
    /// alone, at or below the timestamps it closed (R14).
    pub commit_below_closed: bool,
    /// Replicas apply pipelined entries without re-validating them (R15):
    /// an entry validated against a log a leader change replaced applies
    /// anyway.
    pub skip_revalidation: bool,
    /// Home shards apply a shipped write over a version with a newer origin
    /// timestamp (R17: last writer wins by origin).
    pub overwrite_newer_origin: bool,
    /// Home shards serve every request whatever home it was routed by
    /// (R18): a rehome's copy is not fenced at the old home.
    pub skip_route_check: bool,
    /// The record shard writes its own part with a commit it carries
    /// (R21) even when a decision was recorded before it (an abort by
    /// recovery): the first decision no longer wins.
    pub own_part_after_decision: bool,
    /// Replicas serve reads below their garbage-collection threshold, from
    /// a history collection has thinned.
    pub serve_below_gc_threshold: bool,
    /// Garbage collection removes every version behind a newer one at or
    /// below its horizon, whatever the newer one's transaction wrote
    /// elsewhere, and keeps none.
    pub collect_behind_any_version: bool,
}

/// Checks a committing transaction against the commits after its snapshot.
///
/// `recent` holds at least every commit with a timestamp above
/// `changes.read_ts`.
pub fn validate<'a>(
    changes: &Changes,
    recent: impl Iterator<Item = &'a CommitRecord>,
    faults: ValidationFaults,
) -> Result<(), Conflict> {
    let isolation = changes.isolation;
    if isolation.is_highly_available() {
        return Ok(());
    }
    let written = changes.written_keys();
    let written: HashSet<&[u8]> = written.iter().map(Vec::as_slice).collect();
    let read_keys: HashSet<&[u8]> = changes.reads.keys.iter().map(Vec::as_slice).collect();
    let ranges: &[KeyRange] = if faults.skip_ranges { &[] } else { &changes.reads.ranges };
    let covers = |key: &[u8]| read_keys.contains(key) || ranges.iter().any(|range| range_contains(range, key));
    for record in recent.filter(|record| record.ts > changes.read_ts) {
        for key in &record.keys {
            if written.contains(key.as_slice()) {
                return Err(Conflict { key: key.clone(), kind: ConflictKind::Write });
            }
            if isolation == Isolation::Serializable && covers(key) {
                return Err(Conflict { key: key.clone(), kind: ConflictKind::Read });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Bound;

    use crate::protocol::Reads;

    fn ts(physical: u64) -> Timestamp {
        Timestamp::new(physical, 0)
    }

    fn record(at: u64, keys: &[&[u8]]) -> CommitRecord {
        CommitRecord { ts: ts(at), txn: TxnId(at), keys: keys.iter().map(|key| key.to_vec()).collect() }
    }

    fn changes(isolation: Isolation, read_ts: u64, reads: Reads) -> Changes {
        Changes {
            txn: TxnId(100),
            isolation,
            read_ts: ts(read_ts),
            writes: vec![(b"x".to_vec(), Some(b"1".to_vec()))],
            locked: Vec::new(),
            reads,
            guards: Vec::new(),
            routes: Vec::new(),
            moves: Vec::new(),
        }
    }

    #[test]
    fn rules_per_level() {
        let recent = [record(5, &[b"x"]), record(15, &[b"y"]), record(16, &[b"r/5"])];
        let reads = Reads {
            keys: vec![b"y".to_vec()],
            ranges: vec![(Bound::Included(b"r/".to_vec()), Bound::Excluded(b"r0".to_vec()))],
        };
        let none = ValidationFaults::default();
        // x was written before the snapshot: no write conflict at any level.
        assert!(validate(&changes(Isolation::Snapshot, 10, reads.clone()), recent.iter(), none).is_ok());
        // y, read, was written after it: only serializable cares.
        assert_eq!(
            validate(&changes(Isolation::Serializable, 10, reads.clone()), recent.iter(), none),
            Err(Conflict { key: b"y".to_vec(), kind: ConflictKind::Read })
        );
        // A phantom in a scanned range, which the planted fault misses.
        let ranges_only = Reads { keys: Vec::new(), ranges: reads.ranges.clone() };
        assert_eq!(
            validate(&changes(Isolation::Serializable, 10, ranges_only.clone()), recent.iter(), none),
            Err(Conflict { key: b"r/5".to_vec(), kind: ConflictKind::Read })
        );
        let planted = ValidationFaults { skip_ranges: true, ..ValidationFaults::default() };
        assert!(validate(&changes(Isolation::Serializable, 10, ranges_only), recent.iter(), planted).is_ok());
        // Writing x after a later commit of x: first committer wins.
        assert_eq!(
            validate(&changes(Isolation::Snapshot, 1, reads.clone()), recent.iter(), none),
            Err(Conflict { key: b"x".to_vec(), kind: ConflictKind::Write })
        );
        // Highly available levels never validate.
        for level in [Isolation::ReadCommitted, Isolation::MonotonicAtomicView] {
            assert!(validate(&changes(level, 1, reads.clone()), recent.iter(), none).is_ok());
        }
    }
}
