//! The participant side of a commit: one shard's store, sequencer and
//! visibility watermark.
//!
//! A shard orders every commit on its keys. [`Shard::commit`] does, under
//! one short critical section, what makes a transaction's outcome decided:
//!
//! 1. validate it against the commits after its snapshot (`conflict`),
//! 2. take a commit timestamp from the HLC — greater than every earlier
//!    commit and every snapshot handed out,
//! 3. queue its versions for the group committer, in timestamp order,
//! 4. remember its keys in the log of recent commits, for later validations.
//!
//! Then, outside the critical section, it waits for the group sync, and
//! only then advances the *visible watermark*: the timestamp at or below
//! which every commit is durable. Snapshots are taken at the watermark, so
//! a reader never sees a version that could still be lost, never misses a
//! version below its snapshot that is still being written, and sees every
//! commit acknowledged before it began (real-time order: the acknowledgement
//! comes after the watermark passed the commit). Readers never wait and
//! never block writers; writers never wait on each other's locks, so
//! deadlocks cannot form.
//!
//! The log of recent commits keeps the keys of commits newer than the
//! oldest running coordinated snapshot. It is bounded
//! ([`RECENT_COMMITS_MAX`]); a transaction older than what the log still
//! covers cannot be validated and aborts with a serialization failure.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use geodb_storage::{ColumnFamily, Durability, Engine, Timestamp, TxnId, WriteBatch, mvcc};

use crate::conflict::{self, CommitRecord, ConflictKind, ReadSet, WriteSet};
use crate::log::{CommitEntry, CommitLog};
use crate::{Error, Hlc, Isolation, Result};

/// Commits remembered for validation. At ~100 bytes of keys per commit this
/// is ~10 MiB; it covers a running transaction through ~100k later
/// commits, seconds to minutes of full load.
pub const RECENT_COMMITS_MAX: usize = 100_000;

/// Meta key holding the highest commit timestamp made durable, so that a
/// restarted node never hands out a timestamp below its own data.
const META_LAST_COMMIT_TS: &[u8] = b"shard/last_commit_ts";

/// What a committing transaction hands its shard.
pub struct CommitRequest<'a> {
    pub txn: TxnId,
    pub isolation: Isolation,
    pub read_ts: Timestamp,
    pub reads: &'a ReadSet,
    pub writes: &'a WriteSet,
    /// Keys locked by `SELECT ... FOR UPDATE`: they conflict like writes.
    pub locked: &'a HashSet<Vec<u8>>,
    /// The epoch the transaction's snapshot was taken in (coordinated
    /// levels; `None` for the highly available ones).
    pub epoch: Option<u64>,
}

struct Sequencer {
    /// Every commit at or below this timestamp is durable.
    visible_ts: Timestamp,
    /// Recent commits in timestamp order.
    recent: VecDeque<CommitRecord>,
    /// Commits at or below this timestamp may be missing from `recent`.
    log_floor: Timestamp,
    /// Snapshots of running coordinated transactions.
    active: BTreeSet<(Timestamp, TxnId)>,
    /// The leadership this shard serves under, if it may commit at all: a
    /// replicated shard's driver sets a fresh epoch each time this node
    /// becomes leader *and* has applied everything chosen before its
    /// ballot, and clears it when leadership is lost. A local shard is
    /// always epoch 0. A transaction commits only in the epoch it began in
    /// (coordinated levels) or in some epoch (HAT writes).
    epoch: Option<u64>,
}

/// One shard: see the module documentation.
pub struct Shard {
    engine: Arc<dyn Engine>,
    log: Arc<dyn CommitLog>,
    hlc: Arc<Hlc>,
    sequencer: Mutex<Sequencer>,
}

/// Counters of a shard's commits, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub syncs: u64,
    pub recent_commits: usize,
    pub active_snapshots: usize,
}

impl Shard {
    /// Opens the shard over `engine`, moving `hlc` past every timestamp
    /// already stored. Commits go through `log`.
    pub fn open(engine: Arc<dyn Engine>, hlc: Arc<Hlc>, log: Arc<dyn CommitLog>) -> Result<Self> {
        let mut last_stored = None;
        if let Some(bytes) = engine.get(ColumnFamily::Meta, META_LAST_COMMIT_TS)? {
            let last = Timestamp::decode(&bytes)
                .ok_or_else(|| geodb_storage::Error::Corrupt("shard last commit timestamp".into()))?;
            hlc.observe(last);
            last_stored = Some(last);
        }
        // A replicated shard starts at what it applied (its last stored
        // commit), not at the clock: chosen entries not yet applied here
        // carry smaller timestamps, and a local read must not see them
        // appear below its snapshot. It serves nothing until its driver
        // grants an epoch.
        let (visible_ts, epoch) =
            if log.is_replicated() { (last_stored.unwrap_or(Timestamp::ZERO), None) } else { (hlc.now(), Some(0)) };
        Ok(Shard {
            engine,
            log,
            hlc,
            sequencer: Mutex::new(Sequencer {
                visible_ts,
                recent: VecDeque::new(),
                log_floor: Timestamp::ZERO,
                active: BTreeSet::new(),
                epoch,
            }),
        })
    }

    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    pub fn log(&self) -> &Arc<dyn CommitLog> {
        &self.log
    }

    fn sequencer(&self) -> MutexGuard<'_, Sequencer> {
        self.sequencer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current snapshot timestamp: every commit at or below it is
    /// durable and visible.
    pub fn snapshot(&self) -> Timestamp {
        self.sequencer().visible_ts
    }

    /// Takes a snapshot for a coordinated transaction and keeps the commits
    /// after it in the log until [`Shard::release`]. Returns the snapshot
    /// and the epoch it belongs to; [`Error::NotLeader`] when the shard
    /// serves no epoch (a replica that does not lead, or not yet).
    pub fn acquire_snapshot(&self, txn: TxnId) -> Result<(Timestamp, u64)> {
        let mut sequencer = self.sequencer();
        let Some(epoch) = sequencer.epoch else {
            return Err(Error::NotLeader { leader: None });
        };
        let read_ts = sequencer.visible_ts;
        sequencer.active.insert((read_ts, txn));
        Ok((read_ts, epoch))
    }

    /// Sets the epoch this shard serves under (see `Sequencer::epoch`);
    /// called by a replicated shard's driver.
    pub fn set_epoch(&self, epoch: Option<u64>) {
        self.sequencer().epoch = epoch;
    }

    /// The epoch this shard serves under, if any.
    pub fn epoch(&self) -> Option<u64> {
        self.sequencer().epoch
    }

    /// Ends what [`Shard::acquire_snapshot`] began.
    pub fn release(&self, txn: TxnId, read_ts: Timestamp) {
        let mut sequencer = self.sequencer();
        sequencer.active.remove(&(read_ts, txn));
        Self::trim(&mut sequencer);
    }

    fn trim(sequencer: &mut Sequencer) {
        // Keep what a running snapshot, or a snapshot handed out next, may
        // validate against: commits above the oldest running snapshot and
        // above the watermark.
        let keep_above =
            sequencer.active.first().map_or(sequencer.visible_ts, |(oldest, _)| (*oldest).min(sequencer.visible_ts));
        while sequencer.recent.front().is_some_and(|record| record.ts <= keep_above) {
            sequencer.recent.pop_front();
        }
        while sequencer.recent.len() > RECENT_COMMITS_MAX {
            if let Some(record) = sequencer.recent.pop_front() {
                sequencer.log_floor = record.ts;
            }
        }
    }

    /// Commits a transaction that touches only this shard, in one round.
    /// Returns its commit timestamp once its writes are durable and visible.
    pub fn commit(&self, request: CommitRequest<'_>) -> Result<Timestamp> {
        let mut keys: Vec<Vec<u8>> = request.writes.keys().cloned().chain(request.locked.iter().cloned()).collect();
        keys.sort_unstable();
        keys.dedup();
        let (commit_ts, ticket) = {
            let mut sequencer = self.sequencer();
            // Validation below is complete only against the log of the
            // leadership the transaction began in: a leader that lost and
            // regained leadership may not yet know what another committed
            // in between.
            let epoch = match (sequencer.epoch, request.epoch) {
                (None, _) => return Err(Error::NotLeader { leader: None }),
                (Some(current), Some(began)) if current != began => {
                    return Err(Error::Conflict(format!(
                        "transaction {}: the shard's leadership changed while it ran",
                        request.txn
                    )));
                }
                (Some(current), _) => current,
            };
            if !request.isolation.is_highly_available() {
                if request.read_ts < sequencer.log_floor {
                    return Err(Error::Conflict(format!(
                        "transaction {} is too old to validate: its snapshot {} predates the commit log",
                        request.txn, request.read_ts
                    )));
                }
                let written: HashSet<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                conflict::validate(
                    request.isolation,
                    request.read_ts,
                    request.reads,
                    &written,
                    sequencer.recent.iter(),
                )
                .map_err(|conflict| {
                    let rule = match conflict.kind {
                        ConflictKind::Write => "write conflict",
                        ConflictKind::Read => "read of a value changed by a later commit",
                    };
                    Error::Conflict(format!("{rule} on key {}", printable(&conflict.key)))
                })?;
            }
            let commit_ts = self.hlc.now();
            // Spanner §4.1.2 adapted to one shard: the commit timestamp is
            // above every snapshot handed out, so no reader's snapshot can
            // change under it.
            assert!(commit_ts > sequencer.visible_ts, "commit timestamp at or below the watermark");
            let mut batch = WriteBatch::new();
            for (key, value) in request.writes {
                mvcc::put_version(&mut batch, key, commit_ts, request.txn, value.as_deref());
            }
            batch.put(ColumnFamily::Meta, META_LAST_COMMIT_TS.to_vec(), commit_ts.encode().to_vec());
            let pending = self.log.append(CommitEntry { commit_ts, keys: keys.clone(), batch }, epoch)?;
            // Always logged, even with no snapshot running: a snapshot taken
            // before this commit becomes visible lies below it and must
            // validate against it. `trim` drops it once no one can.
            sequencer.recent.push_back(CommitRecord { ts: commit_ts, keys: keys.clone() });
            (commit_ts, pending)
        };
        let keys_of_failed = keys;
        if let Err(error) = ticket.wait() {
            if !matches!(error, Error::OutcomeUnknown(_)) {
                // Nothing of the transaction was written: forget its keys, or
                // every later writer of them would conflict with a ghost.
                let mut sequencer = self.sequencer();
                sequencer.recent.retain(|record| record.ts != commit_ts || record.keys != keys_of_failed);
            }
            return Err(error);
        }
        let mut sequencer = self.sequencer();
        if commit_ts > sequencer.visible_ts {
            sequencer.visible_ts = commit_ts;
        }
        Self::trim(&mut sequencer);
        Ok(commit_ts)
    }

    /// Applies a commit chosen by the shard's replicated log, on every
    /// replica (the leader included), in log order: writes its versions to
    /// the engine, moves the clock past its timestamp, makes it visible, and
    /// remembers its keys for later validations (unless this node already
    /// did when it proposed the entry). The log is durable already, so the
    /// engine write is buffered; a crash replays the entry from the log.
    pub fn apply(&self, entry: CommitEntry) -> Result<()> {
        self.engine.write(entry.batch, Durability::Buffered)?;
        self.hlc.observe(entry.commit_ts);
        let mut sequencer = self.sequencer();
        let known = sequencer
            .recent
            .iter()
            .rev()
            .take_while(|record| record.ts >= entry.commit_ts)
            .any(|record| record.ts == entry.commit_ts && record.keys == entry.keys);
        if !known {
            sequencer.recent.push_back(CommitRecord { ts: entry.commit_ts, keys: entry.keys });
        }
        if entry.commit_ts > sequencer.visible_ts {
            sequencer.visible_ts = entry.commit_ts;
        }
        Self::trim(&mut sequencer);
        Ok(())
    }

    /// After the engine was replaced by a snapshot whose newest commit is
    /// `last_commit_ts`: commits up to it are visible, and transactions whose
    /// snapshots predate it can no longer be validated (their log is gone).
    pub fn restored(&self, last_commit_ts: Timestamp) {
        self.hlc.observe(last_commit_ts);
        let mut sequencer = self.sequencer();
        if last_commit_ts > sequencer.visible_ts {
            sequencer.visible_ts = last_commit_ts;
        }
        sequencer.recent.clear();
        sequencer.log_floor = sequencer.log_floor.max(sequencer.visible_ts);
    }

    pub fn stats(&self) -> ShardStats {
        let sequencer = self.sequencer();
        ShardStats {
            syncs: self.log.syncs(),
            recent_commits: sequencer.recent.len(),
            active_snapshots: sequencer.active.len(),
        }
    }
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
