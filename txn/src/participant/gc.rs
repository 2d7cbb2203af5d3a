//! Version garbage collection at one replica (`geodb_storage::gc` walks
//! the versions; this keeps the threshold and refuses the reads below it).
//!
//! Each replica collects on its own, below its own *threshold*: the highest
//! horizon it collected below, kept in the `locks` family (`g`) so that it
//! survives restarts and travels with snapshots. Versions above the
//! threshold are never touched, nor is any key's newest version, so every
//! read at or above it sees exactly what it would have seen without
//! collection. A read below it is refused with a serialization failure
//! (`40001`, "snapshot too old"): its snapshot may have lost versions, and a
//! transaction run again takes a new one.
//!
//! Orderings. The threshold is raised, in memory and in the engine, before
//! the first version below it goes, and a read checks it after its engine
//! access: a read that finds the old threshold read the engine before any
//! version below the new one went (each engine scan sees one consistent
//! state from its start). The engine's threshold is written before the
//! deletes that rely on it (one log, in order), so a restart never finds a
//! lower threshold than what was collected. A snapshot restore replaces the
//! engine's threshold with the snapshot's: a pass under way stops at its
//! next chunk, and the next pass writes the replica's threshold again
//! before it collects. A snapshot export scans the data family before the
//! `locks` family (`geodb_storage::snapshot`, families in tag order), so a
//! snapshot that misses a collected version carries the threshold that
//! allowed it.
//!
//! Replicas may collect different amounts at different times: no replicated
//! decision reads a version below a threshold (validation reads the log of
//! recent commits and newest versions; last writer wins compares with the
//! newest version). Versions can still be written below a threshold, by a
//! commit prepared before it or by a lagging replica applying old entries;
//! each key's versions are still written in timestamp order, so such a
//! version is older than the versions a read at or above the threshold
//! finds first, and changes nothing they see.

use std::sync::MutexGuard;

use geodb_storage::gc::{self, Collected, Cursor, Rules};
use geodb_storage::mvcc::{Siblings, Version};
use geodb_storage::{ColumnFamily, Durability, Engine, Timestamp, WriteBatch};

use super::Shard;
use crate::protocol::ShardId;
use crate::{Error, Result};

/// In the `locks` family, so that snapshots carry it: the collection
/// threshold of the replica that took the snapshot.
pub(super) const GC_THRESHOLD_KEY: &[u8] = b"g";

/// Versions one chunk of a pass looks at before it lets go of the replica
/// (and of readers waiting for a snapshot restore) and pauses.
pub const GC_CHUNK_VERSIONS: usize = 10_000;

/// A replica's collection state.
#[derive(Debug, Default)]
pub(super) struct GcState {
    /// Reads below it are refused: versions older than it may be gone.
    threshold: Timestamp,
    /// The threshold the engine holds: what a restart finds.
    persisted: Timestamp,
    /// The horizon of the last pass that went over the whole replica since
    /// it opened or restored a snapshot.
    passed: Option<Timestamp>,
}

impl GcState {
    pub(super) fn new(threshold: Timestamp) -> GcState {
        GcState { threshold, persisted: threshold, passed: None }
    }
}

/// A pass over one replica, under way ([`Shard::begin_collection`]).
#[derive(Debug)]
pub struct Pass {
    horizon: Timestamp,
    cursor: Cursor,
    collected: Collected,
}

impl Pass {
    /// What it removed so far.
    pub fn collected(&self) -> Collected {
        self.collected
    }
}

impl Shard {
    fn gc_state(&self) -> MutexGuard<'_, GcState> {
        self.gc.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads below it are refused: versions older than it may be gone.
    pub fn gc_threshold(&self) -> Timestamp {
        self.gc_state().threshold
    }

    /// Refuses a read at `read_ts` below the threshold. Called after the
    /// read's engine access (see the module documentation).
    pub fn check_collected(&self, read_ts: Timestamp) -> Result<()> {
        let threshold = self.gc_threshold();
        if read_ts >= threshold || self.faults.serve_below_gc_threshold {
            return Ok(());
        }
        Err(Error::Conflict(format!(
            "snapshot too old: this transaction reads at {read_ts}, below the garbage-collection threshold {threshold} \
             of shard {} (versions older than gc.ttl_ms may be gone); run the transaction again",
            self.id
        )))
    }

    /// Starts a pass that collects the versions no read at or above
    /// `horizon` can see, raising the threshold to it first (in the engine
    /// too). The horizon is capped at the replica's newest commit: no
    /// version lies above it, so a clock running ahead cannot push the
    /// threshold past what exists. A horizon at or below the threshold
    /// collects again below the current one (what a pass cut short left).
    ///
    /// `None` when there is nothing to do: the replica is restoring a
    /// snapshot, or applied no commit above the horizon of its last whole
    /// pass. (A version can still be written below that horizon, by a
    /// commit prepared before it; the pass after the replica's next commit
    /// finds it.)
    pub fn begin_collection(&self, horizon: Timestamp) -> Result<Option<Pass>> {
        let (last_commit_ts, restoring) = {
            let state = self.state();
            (state.last_commit_ts, state.restoring)
        };
        let horizon = horizon.min(last_commit_ts);
        let _reading = self.reading();
        let mut gc = self.gc_state();
        if restoring || gc.passed.is_some_and(|passed| horizon <= passed) {
            return Ok(None);
        }
        let threshold = gc.threshold.max(horizon);
        if threshold > gc.persisted {
            let mut batch = WriteBatch::new();
            batch.put(ColumnFamily::Locks, GC_THRESHOLD_KEY.to_vec(), threshold.encode().to_vec());
            self.engine.write(batch, Durability::Buffered)?;
            gc.persisted = threshold;
        }
        gc.threshold = threshold;
        Ok(Some(Pass { horizon: threshold, cursor: Cursor::default(), collected: Collected::default() }))
    }

    /// One chunk of `pass`, of at most `chunk` versions; tells `removed` of
    /// each version it removes. Answers whether the pass is over: it went
    /// over the whole replica, or a snapshot restored since it began
    /// replaced the engine's threshold (it stops there).
    pub fn collect_chunk(&self, pass: &mut Pass, removed: &dyn Fn(&[u8], &Version), chunk: usize) -> Result<bool> {
        let (any, none) = (|_: &[u8], _: &Version| true, |_: &Version| false);
        let rules = if self.faults.collect_behind_any_version {
            Rules { barrier: &any, keep: &none, removed }
        } else {
            Rules { barrier: &barrier, keep: &kept, removed }
        };
        let _reading = self.reading();
        if self.gc_state().persisted < pass.horizon {
            return Ok(true);
        }
        pass.collected.add(gc::collect_chunk(self.engine.as_ref(), &mut pass.cursor, pass.horizon, &rules, chunk)?);
        if pass.cursor.done() {
            let mut gc = self.gc_state();
            gc.passed = Some(gc.passed.map_or(pass.horizon, |passed| passed.max(pass.horizon)));
        }
        Ok(pass.cursor.done())
    }

    /// A whole pass below `horizon` (see [`Shard::begin_collection`]), in
    /// chunks of [`GC_CHUNK_VERSIONS`], calling `pause` between them (it
    /// answers whether to go on). `None`: nothing to do.
    pub fn collect_versions(
        &self,
        horizon: Timestamp,
        removed: &dyn Fn(&[u8], &Version),
        mut pause: impl FnMut() -> bool,
    ) -> Result<Option<Collected>> {
        let Some(mut pass) = self.begin_collection(horizon)? else { return Ok(None) };
        while !self.collect_chunk(&mut pass, removed, GC_CHUNK_VERSIONS)? && pause() {}
        Ok(Some(pass.collected))
    }

    /// After a snapshot restore: reads are refused below the higher of this
    /// replica's threshold and the snapshot's, and the engine holds the
    /// snapshot's.
    pub(super) fn adopt_threshold(&self, restored: Option<Timestamp>) {
        let restored = restored.unwrap_or(Timestamp::ZERO);
        let mut gc = self.gc_state();
        gc.threshold = gc.threshold.max(restored);
        gc.persisted = restored;
        gc.passed = None;
    }
}

/// The threshold a shard's engine holds, if any.
pub(super) fn stored_threshold(engine: &dyn Engine) -> Result<Option<Timestamp>> {
    match engine.get(ColumnFamily::Locks, GC_THRESHOLD_KEY)? {
        Some(bytes) => Ok(Some(Timestamp::decode(&bytes).ok_or_else(|| {
            Error::Storage(geodb_storage::Error::Corrupt("shard garbage-collection threshold".into()))
        })?)),
        None => Ok(None),
    }
}

/// Whether `version` stands in front of older versions of its key: its
/// transaction wrote only this shard, so every reader, on every node, takes
/// it when it meets it (Monotonic Atomic View shows such a version at once,
/// `crate::view`). A version of a transaction across shards is shown once
/// the node's replicas of the other shards have applied it, which differs
/// from node to node, and a snapshot carries one replica's collection to
/// another node: it stands in front of nothing. Nor does a write shipped
/// with named sibling keys, nor a rehome's pair of versions (R18), which
/// name their other shards too. So a key written only by transactions
/// across shards keeps its history.
pub fn barrier(_key: &[u8], version: &Version) -> bool {
    version.siblings.is_none()
}

/// Whether `version` stays whatever stands in front of it: a write shipped
/// with named sibling keys, whose presence Monotonic Atomic View readers of
/// those keys look for.
pub fn kept(version: &Version) -> bool {
    matches!(version.siblings, Siblings::Keys(_))
}

/// The horizon of a pass started at physical time `now_ns`: `ttl_ns` back,
/// and never above `oldest`, the snapshot of the oldest transaction running
/// on the node.
pub fn horizon(now_ns: u64, ttl_ns: u64, oldest: Option<Timestamp>) -> Timestamp {
    let by_age = Timestamp::new(now_ns.saturating_sub(ttl_ns), 0);
    oldest.map_or(by_age, |oldest| by_age.min(oldest))
}

/// One pass over the replicas a node holds, each below `horizon` (see
/// [`Shard::collect_versions`]), telling `removed` of each version removed.
/// Stops early once `pause` answers false.
pub fn collect_node(
    replicas: &[std::sync::Arc<Shard>],
    horizon: Timestamp,
    removed: &dyn Fn(ShardId, &[u8], &Version),
    mut pause: impl FnMut() -> bool,
) -> Result<Collected> {
    let mut total = Collected::default();
    let mut going = true;
    for replica in replicas {
        let id = replica.id();
        let told = |key: &[u8], version: &Version| removed(id, key, version);
        let collected = replica.collect_versions(horizon, &told, || {
            going = pause();
            going
        })?;
        total.add(collected.unwrap_or_default());
        if !going {
            break;
        }
    }
    Ok(total)
}
