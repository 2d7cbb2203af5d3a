//! Version garbage collection: removing the versions that no read at or
//! above a *horizon* can see.
//!
//! A read at timestamp `r` sees, of each key, its newest version at or
//! below `r`. Take a version `b` of a key at or below the horizon `h`: every
//! read at or above `h` finds `b` or a newer version first, so a version
//! older than `b` is never what such a read returns. Readers that look
//! further than the newest version (Monotonic Atomic View, which may show an
//! older version while a newer one's transaction has not fully arrived at
//! the node, and orders by origin) are why the caller decides which
//! versions may stand in front: a *barrier* is a version the caller knows
//! every reader here will take when it meets it. A version is collected
//! when a barrier at or below the horizon, newer than it, has an origin
//! above its timestamp (so above its origin too: origins never exceed
//! timestamps), unless the caller keeps it.
//!
//! Never collected: a key's newest version (its value, or the tombstone of
//! a delete, which last-writer-wins must still meet), versions above the
//! horizon, and those the caller keeps. The `latest` family is never
//! touched: it holds only newest versions.
//!
//! The walk goes in bounded chunks ([`collect_chunk`], resumed from a
//! [`Cursor`]), so that a caller can pause between chunks and never holds
//! one iterator (and the memory it pins) over the whole store, nor a write
//! batch of more deletes than a chunk has versions. Deletes are written
//! buffered: one lost in a crash is found again by the next pass.

use std::ops::Bound;

use crate::Result;
use crate::engine::{ColumnFamily, Durability, Engine, WriteBatch};
use crate::mvcc::{Version, decode_version_key, decode_version_value};
use crate::timestamp::Timestamp;

/// What a collection did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Versions looked at.
    pub scanned: u64,
    /// Versions removed.
    pub versions: u64,
    /// Bytes of keys and records removed.
    pub bytes: u64,
}

impl Collected {
    pub fn add(&mut self, other: Collected) {
        self.scanned += other.scanned;
        self.versions += other.versions;
        self.bytes += other.bytes;
    }
}

/// Which versions the caller lets stand in front of older ones, and which
/// it keeps whatever stands in front of them.
pub struct Rules<'a> {
    /// Whether every reader at or above the horizon takes this version of
    /// this key when it meets it.
    pub barrier: &'a dyn Fn(&[u8], &Version) -> bool,
    /// Whether to keep this version even behind a barrier.
    pub keep: &'a dyn Fn(&Version) -> bool,
    /// Told of each version removed, with its key (the simulator keeps
    /// them for its checks of whole histories).
    pub removed: &'a dyn Fn(&[u8], &Version),
}

/// Where a walk goes on: the next data-family key to look at, the key it
/// is in the middle of, and the origin of the newest barrier met so far
/// among that key's versions (a chunk may end inside a key's versions).
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    from: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    shadow: Option<Timestamp>,
    done: bool,
}

impl Cursor {
    /// Whether the walk reached the end of the data family.
    pub fn done(&self) -> bool {
        self.done
    }
}

/// Collects below `horizon` from where `cursor` stands, looking at `chunk`
/// versions at most (a key with more versions spans chunks), and moves the
/// cursor on. Returns what it removed.
pub fn collect_chunk(
    engine: &dyn Engine,
    cursor: &mut Cursor,
    horizon: Timestamp,
    rules: &Rules<'_>,
    chunk: usize,
) -> Result<Collected> {
    let start = cursor.from.as_deref().map_or(Bound::Unbounded, Bound::Included);
    let mut collected = Collected::default();
    let mut batch = WriteBatch::new();
    let (mut current, mut shadow) = (cursor.key.take(), cursor.shadow.take());
    let mut next = None;
    for entry in engine.scan(ColumnFamily::Data, start, Bound::Unbounded, false)? {
        let (encoded, record) = entry?;
        if collected.scanned >= chunk as u64 {
            next = Some(encoded);
            break;
        }
        let (key, ts) = decode_version_key(&encoded)?;
        if current.as_deref() != Some(key.as_slice()) {
            current = Some(key);
            shadow = None;
        }
        collected.scanned += 1;
        if ts > horizon {
            continue;
        }
        let key = current.as_deref().expect("set above");
        let version = decode_version_value(&record)?.at(ts);
        if shadow.is_some_and(|origin| ts < origin) && !(rules.keep)(&version) {
            (rules.removed)(key, &version);
            collected.versions += 1;
            collected.bytes += (encoded.len() + record.len()) as u64;
            batch.delete(ColumnFamily::Data, encoded);
        } else if (rules.barrier)(key, &version) {
            shadow = Some(shadow.map_or(version.origin, |origin| origin.max(version.origin)));
        }
    }
    if collected.versions > 0 {
        engine.write(batch, Durability::Buffered)?;
    }
    match next {
        Some(next) => *cursor = Cursor { from: Some(next), key: current, shadow, done: false },
        None => *cursor = Cursor { done: true, ..Cursor::default() },
    }
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryEngine;
    use crate::mvcc::tests::{ts, write};
    use crate::mvcc::{self, Siblings};
    use crate::timestamp::TxnId;

    fn every_version() -> Rules<'static> {
        Rules { barrier: &|_, _| true, keep: &|_| false, removed: &|_, _| {} }
    }

    fn collect_all(engine: &MemoryEngine, horizon: u64, rules: &Rules<'_>, chunk: usize) -> Collected {
        let mut total = Collected::default();
        let mut cursor = Cursor::default();
        while !cursor.done() {
            total.add(collect_chunk(engine, &mut cursor, ts(horizon), rules, chunk).unwrap());
        }
        total
    }

    fn stamps(engine: &MemoryEngine, key: &[u8]) -> Vec<u64> {
        mvcc::versions_of(engine, key, usize::MAX).unwrap().iter().map(|version| version.ts.physical).collect()
    }

    #[test]
    fn versions_behind_the_newest_at_or_below_the_horizon_go_and_reads_above_it_are_unchanged() {
        let engine = MemoryEngine::new();
        for at in [10, 20, 30, 40, 50] {
            write(&engine, b"a", at, Some(format!("a{at}").as_bytes()));
        }
        write(&engine, b"b", 5, Some(b"b5"));
        write(&engine, b"b", 25, None);
        write(&engine, b"c", 45, Some(b"c45"));
        let before: Vec<_> = (30..=60)
            .map(|at| mvcc::scan(&engine, Bound::Unbounded, Bound::Unbounded, ts(at), false, None).unwrap())
            .collect();

        let collected = collect_all(&engine, 30, &every_version(), 1000);
        assert_eq!(collected.versions, 3, "a@10, a@20 and b@5: shadowed at or below 30");
        assert_eq!(stamps(&engine, b"a"), vec![50, 40, 30]);
        assert_eq!(stamps(&engine, b"b"), vec![25], "a delete's tombstone stays: it is the newest");
        assert_eq!(stamps(&engine, b"c"), vec![45]);
        let after: Vec<_> = (30..=60)
            .map(|at| mvcc::scan(&engine, Bound::Unbounded, Bound::Unbounded, ts(at), false, None).unwrap())
            .collect();
        assert_eq!(before, after, "every read at or above the horizon sees what it saw");
        assert_eq!(collect_all(&engine, 30, &every_version(), 1000).versions, 0, "a second pass finds nothing");
    }

    #[test]
    fn chunks_of_any_size_together_collect_what_one_pass_does() {
        let (whole, chunked) = (MemoryEngine::new(), MemoryEngine::new());
        for engine in [&whole, &chunked] {
            for key in 0..20u8 {
                for at in 1..=(key as u64 % 5 + 1) {
                    write(engine, &[key], at * 10, Some(&[key]));
                }
            }
        }
        let one = collect_all(&whole, 100, &every_version(), usize::MAX);
        let many = collect_all(&chunked, 100, &every_version(), 1);
        assert_eq!(one, many);
        assert_eq!(mvcc::all_versions(&whole).unwrap(), mvcc::all_versions(&chunked).unwrap());
        assert_eq!(mvcc::all_versions(&whole).unwrap().len(), 20, "one version of each key is left");
    }

    #[test]
    fn only_a_barrier_shadows_and_kept_versions_stay() {
        let engine = MemoryEngine::new();
        for at in [10, 20, 30] {
            write(&engine, b"k", at, Some(b"v"));
        }
        // A version at 40 that is not a barrier (say, one whose transaction
        // has not fully arrived here): it hides nothing.
        let mut batch = WriteBatch::new();
        let siblings = Siblings::Shards(vec![7]);
        mvcc::put_version_with(&engine, &mut batch, b"k", ts(40), ts(40), TxnId(40), &siblings, Some(b"v40")).unwrap();
        engine.write(batch, Durability::Sync).unwrap();
        let rules = Rules {
            barrier: &|_, version: &Version| version.siblings.is_none(),
            keep: &|version: &Version| version.ts == ts(10),
            removed: &|_, _| {},
        };
        collect_all(&engine, 50, &rules, 1000);
        assert_eq!(stamps(&engine, b"k"), vec![40, 30, 10], "20 is behind the barrier at 30; 10 is kept");
    }

    #[test]
    fn a_barrier_hides_only_versions_below_its_origin() {
        // A version a rehome moved keeps the origin of its first commit, which
        // can lie below versions it is newer than by timestamp.
        let engine = MemoryEngine::new();
        write(&engine, b"k", 10, Some(b"v10"));
        write(&engine, b"k", 30, None);
        let mut batch = WriteBatch::new();
        mvcc::put_version_with(&engine, &mut batch, b"k", ts(50), ts(20), TxnId(50), &Siblings::None, Some(b"moved"))
            .unwrap();
        engine.write(batch, Durability::Sync).unwrap();
        collect_all(&engine, 60, &every_version(), 1000);
        assert_eq!(stamps(&engine, b"k"), vec![50, 30], "10 lies below origin 20 (and below 30's); 30 does not");
    }
}
