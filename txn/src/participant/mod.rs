//! The participant: one shard's versions, locks, transaction records and
//! validation — the state machine every replica of the shard runs.
//!
//! A [`Shard`] plays two parts:
//!
//! - **On the leader** (while [`Shard::is_serving`]), it answers reads at a
//!   timestamp (R2, R3) and validates what coordinators ask it to commit or
//!   prepare (R7), turning each into an [`Entry`] to replicate. Validation,
//!   the timestamp and the in-flight locks are taken under one short
//!   critical section (the sequencer).
//! - **On every replica**, leader included, it applies the entries its log
//!   chose, in log order ([`Shard::apply`]): versions, prepared locks,
//!   decisions. Apply is deterministic: the same entries on the same state
//!   give the same state on every replica.
//!
//! Its durable state lives in its engine (a [`ScopedEngine`] view, so many
//! shards share one store):
//!
//! ```text
//!  data, latest   MVCC versions of user keys (`mvcc`)
//!  locks  p<txn>  a prepared transaction (`Prepared`): its locks survive restarts and leader changes
//!  locks  d<txn>  the decision of a transaction this shard is the record of (R9)
//!  locks  w<txn>  with a commit decided here, the values it carries for parts prepared without them (R20)
//!  locks  r<txn>  a transaction resolved here: a late prepare of it is refused
//!  locks  c       the closed timestamp (R14): nothing commits here at or below it
//!  locks  v       the run of slots one leadership filled (R15: re-validation)
//!  locks  g       this replica's garbage-collection threshold: reads below it are refused (`gc`)
//!  locks  q s o h  an outbox's queues and pending writes, a home shard's
//!                  positions applied of each outbox's queue (R16, `outbox`)
//!  meta   shard/last_commit_ts, shard/applied_slot
//! ```
//!
//! Two ways to make entries durable: a *replicated* shard proposes them
//! to its Multi-Paxos group and applies them when chosen (`host`); a
//! *local* shard (a single node) writes them straight to its engine with
//! group commit ([`Shard::commit_local`]).
//!
//! [`ScopedEngine`]: geodb_storage::ScopedEngine

mod gc;
mod homes;
mod locks;
mod outbox;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Duration;

use geodb_storage::group_commit::GroupCommitter;
use geodb_storage::{ColumnFamily, Durability, Engine, Timestamp, TxnId, WriteBatch, mvcc, snapshot};

pub use gc::{GC_CHUNK_VERSIONS, Pass, barrier, collect_node, horizon as gc_horizon, kept};
pub use homes::{MOVES_FOLLOWED_MAX, Residing};
pub use locks::{HoldKind, LockTable, Obstacle, WriteLock};
pub use outbox::{DELIVER_BYTES_MAX, DELIVER_ENTRIES_MAX, DeliveryProposal, MARKER_KEEP_NS, PendingRead, QueueStatus};

use crate::conflict::{self, CommitRecord, ConflictKind, ValidationFaults};
use crate::protocol::{
    Carried, Changes, Decision, Entry, Guard, KeyRange, Lineage, Prepared, ReadMode, Route, ShardId,
};
use crate::{Error, Hlc, Result};

/// Commits remembered for validation. At ~100 bytes of keys per commit this
/// is ~10 MiB; it covers a running transaction through ~100k later commits.
pub const RECENT_COMMITS_MAX: usize = 100_000;
/// Commits older than this (by timestamp) are forgotten: a coordinated
/// transaction that ran longer cannot be validated and aborts with 40001.
/// Longer than the default session idle timeout (60 s), so an interactive
/// transaction that stays within it can always commit.
pub const RECENT_COMMIT_WINDOW_NS: u64 = 120_000_000_000;
/// How long a local caller waits for a lock before giving up with a
/// retryable error. Longer than recovery (`host::RECOVERY_AFTER_US`), so a
/// lock left by a crashed coordinator is resolved before it times out.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(10);

const META_LAST_COMMIT_TS: &[u8] = b"shard/last_commit_ts";
/// In the `locks` family, so that snapshots carry it: a replica restored
/// from one and then elected must keep its predecessors' promise.
const CLOSED_KEY: &[u8] = b"c";
/// In the `locks` family too: every replica must judge a pipelined entry
/// (R15) the same way, whether it applied the slots before it one by one
/// or restored them from a snapshot.
const RUN_KEY: &[u8] = b"v";
/// The applied slot (8 bytes, big-endian) of a replicated shard, followed
/// by its last commit timestamp: one key written per slot, not two (a
/// shard written before holds the slot alone, and the timestamp under
/// `META_LAST_COMMIT_TS`, which local shards still use).
const META_APPLIED_SLOT: &[u8] = b"shard/applied_slot";
/// Present while a snapshot is being restored (its slot): a shard opened
/// with it holds a half-written state, restores again, and serves nothing
/// until then.
const META_RESTORING: &[u8] = b"shard/restoring";
/// Families a state-machine snapshot carries (`meta` is node-local).
const SNAPSHOT_FAMILIES: [ColumnFamily; 3] = [ColumnFamily::Data, ColumnFamily::Latest, ColumnFamily::Locks];

fn prepared_key(txn: TxnId) -> Vec<u8> {
    let mut key = b"p".to_vec();
    key.extend_from_slice(&txn.0.to_be_bytes());
    key
}

/// Marks a transaction resolved here (committed or aborted): a prepare of
/// it arriving late (a retry whose first attempt was slow) is refused
/// rather than holding locks again.
fn resolved_key(txn: TxnId) -> Vec<u8> {
    let mut key = b"r".to_vec();
    key.extend_from_slice(&txn.0.to_be_bytes());
    key
}

fn decision_key(txn: TxnId) -> Vec<u8> {
    let mut key = b"d".to_vec();
    key.extend_from_slice(&txn.0.to_be_bytes());
    key
}

/// R20: the values a commit recorded here carries for parts prepared
/// without them.
fn carried_key(txn: TxnId) -> Vec<u8> {
    let mut key = b"w".to_vec();
    key.extend_from_slice(&txn.0.to_be_bytes());
    key
}

/// What resolving a part adds to the slot being applied: its engine write,
/// the effects on the in-memory state, the prepared records of this slot,
/// and the keys it wrote.
type SlotParts<'a> =
    (&'a mut WriteBatch, &'a mut Vec<Effect>, &'a mut HashMap<TxnId, Option<Prepared>>, &'a mut SlotWrites);

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always serialize")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Storage(geodb_storage::Error::Corrupt(format!("{what}: {e}"))))
}

/// A key and one version of it, detached (`mvcc::encode_detached`).
pub type KeyVersion = (Vec<u8>, Vec<u8>);

/// Whether a read may go on now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadGate {
    Ready,
    /// A lock at or below the read timestamp: wait until `txn` resolves.
    Blocked(TxnId),
    /// A latest read at a replica that has not yet applied what its reader
    /// must see: wait for the replica to apply more.
    Behind,
}

/// R20: which prepare of a transaction at a shard a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareRound {
    pub round: u32,
    /// The part's values come with the decision.
    pub values_follow: bool,
    /// It may wait for an older prepared transaction (it holds nothing
    /// prepared elsewhere).
    pub may_wait: bool,
}

impl PrepareRound {
    /// A prepare at commit, of a transaction with no other round here.
    pub const FIRST: PrepareRound = PrepareRound { round: 1, values_follow: false, may_wait: false };
}

/// What the leader made of a commit or prepare request. Moved once, into
/// the log or an answer: boxing its entry would cost an allocation per
/// commit for nothing.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Proposal {
    /// Validated: replicate this entry (its locks are held in flight).
    Entry(Entry),
    /// A repeated prepare of a transaction already prepared here: its
    /// prepare timestamp (nothing new to replicate).
    AlreadyPrepared(Timestamp),
    /// A highly available write meets a lock: try again once `txn` resolves.
    Blocked(TxnId),
    /// A repeated commit of a transaction this shard already applied (a
    /// duplicated request): its commit timestamp.
    AlreadyCommitted(Timestamp),
    /// A repeated request of a transaction whose proposal is in flight here:
    /// its first request will be answered.
    InFlight,
}

/// What one applied entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Committed(Timestamp),
    Prepared(Timestamp),
    /// The decision recorded for the transaction (the first one applied).
    Decided(Decision),
    Resolved,
    /// A prepare chosen after its transaction was resolved here: ignored.
    Late,
    /// A closed timestamp (R14).
    Closed,
    /// R15: a pipelined entry whose leader validated it against entries the
    /// log did not choose (a leader change replaced some of them): skipped
    /// on every replica, so nothing of it happened.
    Skipped,
    /// R16, at a home shard: the queue of an outbox is applied here through
    /// `through`; `applied` if this entry was the next one (else it wrote
    /// nothing: a copy applied before, or one ahead of a gap, whose
    /// proposer drops what its proposal holds).
    Delivered {
        through: u64,
        applied: bool,
    },
    /// R16, at an outbox: shipped entries dropped.
    Shipped,
}

/// R15: the latest slots applied here, from `since` on, were all batches
/// of one leadership (`ballot`), none of whose entries was skipped. An
/// entry of that leadership validated at a base of `since − 1` or later
/// saw exactly those slots, in flight, before it. `ballot: None` is an
/// empty run (a no-op, a reconfiguration, a skip, or mixed proposers):
/// only an entry validated right after the slot before its own fits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Run {
    ballot: Option<(u64, u64)>,
    since: u64,
}

impl Run {
    /// Whether an entry at `slot` proposed with `lineage` was validated
    /// against exactly the slots this run holds before it.
    fn fits(&self, slot: u64, lineage: &Lineage) -> bool {
        lineage.base.saturating_add(1) >= slot
            || (self.ballot == Some(lineage.ballot) && self.since <= lineage.base.saturating_add(1))
    }

    /// The run once `slot` is applied: `filled_by` is the leadership whose
    /// batch filled it whole, with nothing skipped, if there is one.
    fn after(self, slot: u64, filled_by: Option<(u64, u64)>) -> Run {
        match filled_by {
            Some(ballot) if self.ballot == Some(ballot) => self,
            Some(ballot) => Run { ballot: Some(ballot), since: slot },
            None => Run { ballot: None, since: slot.saturating_add(1) },
        }
    }
}

/// Counters of a shard, for metrics and `/v1/cluster`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Coordinated commits and prepares parked behind a prepared
    /// transaction with an older snapshot (R20), counted at each try.
    pub waits: u64,
    pub recent_commits: usize,
    pub prepared: usize,
    pub locks_held: usize,
    pub last_commit_ts: Timestamp,
    pub applied_slot: u64,
}

struct State {
    /// Whether this replica may serve reads at a timestamp and validate
    /// (the leader, caught up and past R5). Always true for a local shard.
    serving: bool,
    /// Recent commits, in the order they were proposed or applied here.
    recent: VecDeque<CommitRecord>,
    /// The transactions of `recent`, and whether each was applied here
    /// (rather than only proposed).
    recent_txns: HashMap<TxnId, (Timestamp, bool)>,
    /// Commits at or below this timestamp may be missing from `recent`.
    log_floor: Timestamp,
    locks: LockTable,
    /// Prepared transactions held here, and when they were applied (the
    /// caller's microseconds), for recovery.
    prepared: HashMap<TxnId, (Prepared, u64)>,
    last_commit_ts: Timestamp,
    /// R14: the newest closed timestamp applied here (nothing commits here
    /// at or below it any more).
    closed: Timestamp,
    /// Every timestamp this shard handed out or applied (commits, prepares,
    /// decisions, closed timestamps) is at or below it, and every timestamp
    /// it hands out next is above it. The node's clock usually is too; this
    /// also holds for timestamps ahead of every clock (writes of a shard
    /// that closes timestamps), which the clock does not follow.
    floor: Timestamp,
    applied_slot: u64,
    /// R15: which leadership filled the latest slots (see [`Run`]).
    run: Run,
    /// A snapshot restore is under way or was cut short by a crash: the
    /// engine holds part of it, and no read is caught up.
    restoring: bool,
    /// Bumped whenever a lock is released: local waiters watch it.
    releases: u64,
    /// See [`ShardStats::waits`].
    waits: u64,
    /// R16, at an outbox: its queues, by home shard.
    queues: BTreeMap<ShardId, outbox::Queue>,
    /// R16, at a home shard: each outbox's queue applied through.
    delivered: HashMap<ShardId, u64>,
}

/// One shard. See the module documentation.
pub struct Shard {
    id: ShardId,
    engine: Arc<dyn Engine>,
    hlc: Arc<Hlc>,
    /// A local shard's group committer; `None` when replicated.
    committer: Option<GroupCommitter>,
    faults: ValidationFaults,
    state: Mutex<State>,
    released: Condvar,
    /// Reads of the engine hold it shared; a snapshot restore, which
    /// rewrites the engine in several batches, holds it exclusively, so no
    /// read sees a state half restored.
    restore_gate: RwLock<()>,
    /// Versions below its threshold may have been collected (`gc`).
    gc: Mutex<gc::GcState>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("id", &self.id).field("replicated", &self.committer.is_none()).finish()
    }
}

/// `META_APPLIED_SLOT`'s value: the slot, then the last commit timestamp.
fn encode_applied(slot: u64, last_commit_ts: Timestamp) -> Vec<u8> {
    let mut bytes = slot.to_be_bytes().to_vec();
    bytes.extend_from_slice(&last_commit_ts.encode());
    bytes
}

/// Reads `META_APPLIED_SLOT`, in either format (the slot alone before the
/// timestamp moved in with it).
fn decode_applied(bytes: &[u8]) -> Result<(u64, Timestamp)> {
    let corrupt = || geodb_storage::Error::Corrupt("shard applied slot".into());
    let (slot, rest) = bytes.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let ts = if rest.is_empty() { Timestamp::ZERO } else { Timestamp::decode(rest).ok_or_else(corrupt)? };
    Ok((u64::from_be_bytes(*slot), ts))
}

impl Shard {
    /// Opens shard `id` over `engine` (its own view of the node's store).
    /// A replicated shard serves nothing until its host says it leads; a
    /// local one serves at once and commits with [`Shard::commit_local`].
    pub fn open(id: ShardId, engine: Arc<dyn Engine>, hlc: Arc<Hlc>, replicated: bool) -> Result<Shard> {
        Self::open_with_faults(id, engine, hlc, replicated, ValidationFaults::default())
    }

    /// [`Shard::open`] with planted validation bugs (the simulator's proof
    /// that its checks bite).
    pub fn open_with_faults(
        id: ShardId,
        engine: Arc<dyn Engine>,
        hlc: Arc<Hlc>,
        replicated: bool,
        faults: ValidationFaults,
    ) -> Result<Shard> {
        let mut last_commit_ts = match engine.get(ColumnFamily::Meta, META_LAST_COMMIT_TS)? {
            Some(bytes) => Timestamp::decode(&bytes)
                .ok_or_else(|| geodb_storage::Error::Corrupt("shard last commit timestamp".into()))?,
            None => Timestamp::ZERO,
        };
        let restoring = engine.get(ColumnFamily::Meta, META_RESTORING)?.is_some();
        let applied = engine.get(ColumnFamily::Meta, META_APPLIED_SLOT)?;
        let (applied_slot, applied_commit_ts) = match &applied {
            Some(bytes) => decode_applied(bytes)?,
            None => (0, Timestamp::ZERO),
        };
        last_commit_ts = last_commit_ts.max(applied_commit_ts);
        // A restore cut short: nothing is applied until it is redone.
        let applied_slot = if restoring { 0 } else { applied_slot };
        let closed = match engine.get(ColumnFamily::Locks, CLOSED_KEY)? {
            Some(bytes) => Timestamp::decode(&bytes)
                .ok_or_else(|| geodb_storage::Error::Corrupt("shard closed timestamp".into()))?,
            None => Timestamp::ZERO,
        };
        let run = read_run(engine.as_ref())?;
        let (queues, delivered) = outbox::load(engine.as_ref())?;
        let gc_threshold = gc::stored_threshold(engine.as_ref())?.unwrap_or(Timestamp::ZERO);
        follow_clock(&hlc, replicated, last_commit_ts);
        let committer = (!replicated).then(|| GroupCommitter::new(engine.clone()));
        let shard = Shard {
            id,
            engine,
            hlc,
            committer,
            faults,
            state: Mutex::new(State {
                serving: !replicated,
                recent: VecDeque::new(),
                recent_txns: HashMap::new(),
                // Commits before a restart are not in the log of recent
                // commits: transactions that read before them cannot be
                // validated here.
                log_floor: last_commit_ts,
                locks: LockTable::default(),
                prepared: HashMap::new(),
                last_commit_ts,
                closed,
                floor: last_commit_ts.max(closed),
                applied_slot,
                run,
                restoring,
                releases: 0,
                waits: 0,
                queues,
                delivered,
            }),
            released: Condvar::new(),
            restore_gate: RwLock::new(()),
            gc: Mutex::new(gc::GcState::new(gc_threshold)),
        };
        if !restoring {
            shard.load_prepared(0)?;
        }
        Ok(shard)
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn hlc(&self) -> &Arc<Hlc> {
        &self.hlc
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Held while reading the engine (see `restore_gate`).
    fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.restore_gate.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rebuilds the prepared transactions and their locks from the durable
    /// records (after open).
    fn load_prepared(&self, now_us: u64) -> Result<()> {
        let records = self.read_prepared()?;
        self.install_prepared(&mut self.state(), records, now_us);
        Ok(())
    }

    /// The durable records of the prepared transactions.
    fn read_prepared(&self) -> Result<Vec<Prepared>> {
        let mut records = Vec::new();
        for item in self.scan_locks(Bound::Included(b"p"), Bound::Excluded(b"q"))? {
            let (_, bytes) = item?;
            records.push(decode::<Prepared>(&bytes, "prepared transaction")?);
        }
        Ok(records)
    }

    /// The `locks` family's records between `start` and `end`, in order.
    fn scan_locks(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<geodb_storage::engine::ScanIter<'_>> {
        Ok(self.engine.scan(ColumnFamily::Locks, start, end, false)?)
    }

    /// Replaces the prepared transactions and their locks with `records`.
    fn install_prepared(&self, state: &mut State, records: Vec<Prepared>, now_us: u64) {
        state.locks = LockTable::default();
        state.prepared.clear();
        for prepared in records {
            state.locks.acquire(&prepared.changes, prepared.locked_at, HoldKind::Prepared);
            follow_clock(&self.hlc, self.committer.is_none(), prepared.prepare_ts);
            state.floor = state.floor.max(prepared.prepare_ts);
            state.prepared.insert(prepared.changes.txn, (prepared, now_us));
        }
    }

    // --- leadership ----------------------------------------------------------

    /// Whether this replica serves reads at a timestamp and validates.
    pub fn is_serving(&self) -> bool {
        self.state().serving
    }

    /// Starts or stops serving (the host: this replica leads, caught up and
    /// past R5; or lost leadership). Stopping drops every lock not yet
    /// applied and returns their transactions: their proposals may still be
    /// chosen (and then install their locks again when applied), or not.
    pub fn set_serving(&self, serving: bool) -> Vec<TxnId> {
        let mut state = self.state();
        state.serving = serving;
        if serving {
            return Vec::new();
        }
        let dropped = state.locks.release_in_flight();
        if !dropped.is_empty() {
            state.releases += 1;
            self.released.notify_all();
        }
        dropped
    }

    // --- reads ---------------------------------------------------------------

    /// Whether a read of `key` may go on now (R2, R3). A read at a
    /// timestamp needs a serving replica; it moves this node's clock past
    /// the read timestamp, so nothing committed here later lands below it.
    /// A read's schema `guard` is read like one more key (a DDL holding it
    /// at or below the read timestamp is waited for), then checked with
    /// [`Shard::check_guard`].
    /// So is the residence record of its `route` (R18: a rehome holding it
    /// is waited for), then checked with [`Shard::check_route`].
    pub fn check_get(
        &self,
        key: &[u8],
        guard: Option<&Guard>,
        route: Option<&Route>,
        mode: &ReadMode,
    ) -> Result<ReadGate> {
        self.check(mode, |locks, ts| {
            locks
                .blocks_read(key, ts)
                .or_else(|| guard.and_then(|(guard, _)| locks.blocks_read(guard, ts)))
                .or_else(|| route.and_then(|route| locks.blocks_read(&route.residence, ts)))
        })
    }

    /// [`Shard::check_get`] for a range.
    pub fn check_scan(
        &self,
        range: &KeyRange,
        guard: Option<&Guard>,
        route: Option<&Route>,
        mode: &ReadMode,
    ) -> Result<ReadGate> {
        self.check(mode, |locks, ts| {
            locks
                .blocks_scan(range, ts)
                .or_else(|| guard.and_then(|(guard, _)| locks.blocks_read(guard, ts)))
                .or_else(|| route.and_then(|route| locks.blocks_read(&route.residence, ts)))
        })
    }

    /// Whether the schema guard holds the version the reader planned with,
    /// as the read sees it (after [`Shard::check_get`] answered `Ready`):
    /// else [`Error::SchemaChanged`]. Every DDL writes every shard's guard
    /// in one transaction, so the guard a snapshot sees here is the schema
    /// of that snapshot everywhere.
    pub fn check_guard(&self, guard: Option<&Guard>, mode: &ReadMode) -> Result<()> {
        let Some((key, expected)) = guard else { return Ok(()) };
        let _reading = self.reading();
        let found = mvcc::get(self.engine.as_ref(), key, read_ts(mode))?;
        self.check_collected(read_ts(mode))?;
        if found == *expected {
            return Ok(());
        }
        Err(Error::SchemaChanged {
            message: format!(
                "the schema at shard {} as this read sees it is not the one the statement was planned with (a DDL committed meanwhile)",
                self.id
            ),
            newest: mvcc::latest_version_ts(self.engine.as_ref(), key)?.unwrap_or(Timestamp::ZERO),
        })
    }

    fn check(&self, mode: &ReadMode, blocked: impl Fn(&LockTable, Timestamp) -> Option<WriteLock>) -> Result<ReadGate> {
        let read_ts = match mode {
            ReadMode::Latest { after } => {
                return Ok(if self.caught_up(*after) { ReadGate::Ready } else { ReadGate::Behind });
            }
            ReadMode::Settled { read_ts } => {
                // R14: every commit at or below a closed timestamp is applied
                // here, or held by a lock here (prepared), before the entry
                // that closed it; no other can come.
                let state = self.state();
                if state.restoring || state.closed < *read_ts {
                    return Ok(ReadGate::Behind);
                }
                return Ok(match blocked(&state.locks, *read_ts) {
                    Some(lock) => ReadGate::Blocked(lock.txn),
                    None => ReadGate::Ready,
                });
            }
            ReadMode::At { read_ts, .. } => read_ts,
        };
        let state = self.state();
        if !state.serving {
            return Err(Error::NotLeader { leader: None });
        }
        // R2: observed under the sequencer, so no timestamp handed out
        // after this check is at or below the read.
        self.hlc.update(*read_ts)?;
        Ok(match blocked(&state.locks, *read_ts) {
            Some(lock) => ReadGate::Blocked(lock.txn),
            None => ReadGate::Ready,
        })
    }

    /// [`Shard::get`], and the timestamp of the version read (none: ZERO).
    pub fn get_timed(&self, key: &[u8], mode: &ReadMode) -> Result<(Option<Vec<u8>>, Timestamp)> {
        let _reading = self.reading();
        let version = mvcc::get_version(self.engine.as_ref(), key, read_ts(mode))?;
        self.check_collected(read_ts(mode))?;
        Ok(match version {
            Some(version) => (version.value, version.ts),
            None => (None, Timestamp::ZERO),
        })
    }

    /// [`Shard::scan`], and the timestamp of the newest version it saw.
    pub fn scan_timed(
        &self,
        range: &KeyRange,
        reverse: bool,
        limit: Option<usize>,
        mode: &ReadMode,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Timestamp)> {
        let _reading = self.reading();
        let scanned = mvcc::scan_with_newest(
            self.engine.as_ref(),
            mvcc::bound_as_slice(&range.0),
            mvcc::bound_as_slice(&range.1),
            read_ts(mode),
            reverse,
            limit,
        )?;
        self.check_collected(read_ts(mode))?;
        Ok(scanned)
    }

    /// Reads `key` as `mode` says. Call after [`Shard::check_get`] answered
    /// `Ready`: no lock at or below the timestamp was held then, and none can
    /// appear below it since (R2), so the engine's answer is final.
    pub fn get(&self, key: &[u8], mode: &ReadMode) -> Result<Option<Vec<u8>>> {
        Ok(self.get_version(key, mode)?.and_then(|version| version.value))
    }

    /// The version of `key` visible as `mode` says, with its writer.
    pub fn get_version(&self, key: &[u8], mode: &ReadMode) -> Result<Option<mvcc::Version>> {
        let _reading = self.reading();
        let version = mvcc::get_version(self.engine.as_ref(), key, read_ts(mode))?;
        self.check_collected(read_ts(mode))?;
        Ok(version)
    }

    /// Scans like [`Shard::get`] reads (after [`Shard::check_scan`]).
    /// Every key of `range` with a version at the read's timestamp,
    /// tombstones included, with that version (detached) and the newest
    /// timestamp among them: what a rehome moves (R18).
    pub fn scan_versions(&self, range: &KeyRange, mode: &ReadMode) -> Result<(Vec<KeyVersion>, Timestamp)> {
        let _reading = self.reading();
        let engine = self.engine.as_ref();
        let keys = mvcc::keys_in_range(engine, mvcc::bound_as_slice(&range.0), mvcc::bound_as_slice(&range.1))?;
        let mut out = Vec::with_capacity(keys.len());
        let mut newest = Timestamp::ZERO;
        for key in keys {
            if let Some(version) = mvcc::get_version(engine, &key, read_ts(mode))? {
                newest = newest.max(version.ts);
                out.push((key, mvcc::encode_detached(&version)));
            }
        }
        self.check_collected(read_ts(mode))?;
        Ok((out, newest))
    }

    pub fn scan(
        &self,
        range: &KeyRange,
        reverse: bool,
        limit: Option<usize>,
        mode: &ReadMode,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.scan_timed(range, reverse, limit, mode)?.0)
    }

    // --- validation (leader) -------------------------------------------------

    /// Validates a one-round commit (R7) and returns its entry, holding its
    /// locks in flight; the caller replicates (or writes) the entry and
    /// applies it, or calls [`Shard::abandon`] if it could not.
    pub fn propose_commit(&self, changes: &Changes) -> Result<Proposal> {
        one_round_without_moves(changes)?;
        let mut state = self.state();
        // Requests are idempotent by transaction: a repeated commit (a
        // duplicated message) must never be validated and applied twice.
        match state.recent_txns.get(&changes.txn) {
            Some((ts, true)) => return Ok(Proposal::AlreadyCommitted(*ts)),
            Some((_, false)) if state.locks.holds(changes.txn) => return Ok(Proposal::InFlight),
            Some((_, false)) => {
                return Err(Error::OutcomeUnknown(format!(
                    "transaction {} was proposed here under an earlier leadership; it may or may not have committed",
                    changes.txn
                )));
            }
            None if state.locks.holds(changes.txn) => return Ok(Proposal::InFlight),
            None => {}
        }
        // A one-round commit holds nothing anywhere else while it waits.
        if let Some(older) = Self::older_prepared_in_the_way(&mut state, changes) {
            return Ok(Proposal::Blocked(older));
        }
        if let Some(blocked) = self.validate(&mut state, changes)? {
            return Ok(Proposal::Blocked(blocked));
        }
        let ts = self.next_ts(&mut state);
        state.locks.acquire(changes, ts, HoldKind::InFlightCommit);
        // Logged at once, even before it is chosen: a transaction validated
        // meanwhile must see it (and conservatively keeps it if the outcome
        // turns out unknown).
        let keys = changes.written_keys();
        Self::remember(&mut state, CommitRecord { ts, txn: changes.txn, keys }, false);
        Ok(Proposal::Entry(Entry::Commit {
            txn: changes.txn,
            ts,
            writes: changes.writes.clone(),
            locked: changes.locked.clone(),
        }))
    }

    /// Validates a prepare (R7) and returns its entry, holding its locks
    /// (and serializable read locks, R8) in flight. A repeated prepare of
    /// a prepared transaction answers its prepare timestamp; a later round
    /// (R20) extends the prepared part by `changes`, validated afresh as a
    /// whole, at a new prepare timestamp.
    pub fn propose_prepare(&self, changes: &Changes, record: ShardId, participants: &[ShardId]) -> Result<Proposal> {
        self.propose_prepare_round(changes, record, participants, PrepareRound::FIRST)
    }

    /// [`Shard::propose_prepare`] of a given round (R20).
    pub fn propose_prepare_round(
        &self,
        changes: &Changes,
        record: ShardId,
        participants: &[ShardId],
        PrepareRound { round, values_follow, may_wait }: PrepareRound,
    ) -> Result<Proposal> {
        let mut state = self.state();
        let existing = match state.prepared.get(&changes.txn) {
            Some((prepared, _)) if round <= prepared.round => {
                return Ok(Proposal::AlreadyPrepared(prepared.prepare_ts));
            }
            Some((prepared, _)) => Some(prepared.clone()),
            // A copy of a first round in flight hears its outcome; a later
            // round waits until the one in flight is applied (or dropped),
            // then extends it (or stands alone).
            None if state.locks.holds(changes.txn) && round <= 1 => return Ok(Proposal::InFlight),
            None if state.locks.holds(changes.txn) => {
                return Err(Error::Unavailable(format!(
                    "an earlier prepare of transaction {} is in flight at shard {}",
                    changes.txn, self.id
                )));
            }
            None => None,
        };
        if existing.is_none() && self.is_finished(changes.txn)? {
            return Err(Error::Conflict(format!(
                "transaction {} was already resolved at shard {}: this prepare came late",
                changes.txn, self.id
            )));
        }
        let changes = match &existing {
            Some(existing) => existing.changes.merged_with(changes),
            None => changes.clone(),
        };
        if may_wait && let Some(older) = Self::older_prepared_in_the_way(&mut state, &changes) {
            return Ok(Proposal::Blocked(older));
        }
        if let Some(blocked) = self.validate(&mut state, &changes)? {
            return Err(self.never_waits(blocked));
        }
        let prepare_ts = self.part_ts(&mut state, &changes);
        // R20: an extension keeps its locks where the first round put them
        // (below every later prepare timestamp, and so below the commit),
        // and stays prepared if leadership is lost before it is applied.
        let (locked_at, kind) = match &existing {
            Some(existing) => (existing.locked_at.min(prepare_ts), HoldKind::Prepared),
            None => (prepare_ts, HoldKind::InFlightPrepare),
        };
        state.locks.acquire(&changes, locked_at, kind);
        Ok(Proposal::Entry(Entry::Prepare(Prepared {
            changes,
            prepare_ts,
            record,
            participants: participants.to_vec(),
            round,
            values_follow,
            locked_at,
        })))
    }

    /// R21: validates the record shard's own part of a transaction whose
    /// other parts are all prepared, and returns the entry that writes it
    /// and records the commit at once: at a timestamp at or above `floor`
    /// (the other parts' prepare timestamps) and above this shard's own
    /// validation, holding its locks in flight meanwhile as a one-round
    /// commit does. Asked after [`Shard::decided_before_commit`] found no
    /// decision recorded. The transaction holds locks elsewhere, so it
    /// never waits on a lock here (R7).
    pub fn propose_commit_record(
        &self,
        own: &Changes,
        participants: &[ShardId],
        floor: Timestamp,
        carried: &[Carried],
    ) -> Result<Proposal> {
        one_round_without_moves(own)?;
        let txn = own.txn;
        let mut state = self.state();
        if state.locks.holds(txn) {
            return Ok(Proposal::InFlight);
        }
        if state.prepared.contains_key(&txn) {
            return Err(Error::Invalid(format!(
                "transaction {txn} is prepared at shard {}, its record: it cannot commit its part there in one round",
                self.id
            )));
        }
        if matches!(state.recent_txns.get(&txn), Some((_, false))) {
            return Err(Error::OutcomeUnknown(format!(
                "the commit of transaction {txn} was proposed here under an earlier leadership; its decision is not \
                 known yet"
            )));
        }
        if let Some(blocked) = self.validate(&mut state, own)? {
            return Err(self.never_waits(blocked));
        }
        self.hlc.observe_past(floor);
        let prepare_ts = self.part_ts(&mut state, own);
        let ts = prepare_ts.max(floor);
        // Nothing validated after this commits at or below it: a writer of
        // a key this part read (serializable) lands above the commit.
        state.floor = state.floor.max(ts);
        state.locks.acquire(own, prepare_ts, HoldKind::InFlightCommit);
        Self::remember(&mut state, CommitRecord { ts, txn, keys: own.written_keys() }, false);
        let own = Prepared {
            changes: own.clone(),
            prepare_ts,
            record: self.id,
            participants: participants.to_vec(),
            round: 1,
            values_follow: false,
            locked_at: prepare_ts,
        };
        Ok(Proposal::Entry(Entry::CommitRecord { own, ts, carried: carried.to_vec() }))
    }

    /// R21: the decision recorded for `txn` here, which a commit at the
    /// record answers as it is (R9: the first decision recorded stands,
    /// whether recovery's abort or an earlier copy of the commit).
    pub fn decided_before_commit(&self, txn: TxnId) -> Result<Option<Decision>> {
        if self.faults.own_part_after_decision {
            return Ok(None);
        }
        self.decision(txn)
    }

    /// R20: a coordinated one-round commit, or a prepare of a transaction
    /// that holds nothing prepared elsewhere, that meets a lock of a
    /// prepared transaction with an older snapshot waits for it (parked, up
    /// to the host's lock wait) instead of aborting: typically that
    /// transaction is decided and its resolution is on its way (a client's
    /// previous transaction on the same row, whose next one prepares at its
    /// first statement). A waiter holds no lock, so nothing waits for it:
    /// no cycle of waits can form (R7).
    fn older_prepared_in_the_way(state: &mut State, changes: &Changes) -> Option<TxnId> {
        if changes.isolation.is_highly_available() {
            return None;
        }
        let Obstacle::Held { txn: holder, .. } = state.locks.conflict(changes)?;
        let (prepared, _) = state.prepared.get(&holder)?;
        let older = prepared.changes.read_ts < changes.read_ts;
        if older {
            state.waits += 1;
        }
        older.then_some(holder)
    }

    /// The timestamp a part of a distributed commit validated now is
    /// prepared at. A part that only read here writes no version: it may
    /// take the clock's timestamp even at a shard that closes timestamps
    /// (R14), so that a transaction which read a global table and writes
    /// only elsewhere does not commit, and wait, in the future.
    fn part_ts(&self, state: &mut State, changes: &Changes) -> Timestamp {
        if changes.writes.is_empty() && changes.locked.is_empty() { self.hlc.now() } else { self.next_ts(state) }
    }

    /// The refusal of a part that meets a lock: a transaction across shards
    /// may hold locks at other participants already, so waiting here could
    /// deadlock (R7).
    fn never_waits(&self, blocked: TxnId) -> Error {
        Error::Conflict(format!(
            "key locked by transaction {blocked} at shard {}; a transaction across shards never waits on a lock",
            self.id
        ))
    }

    /// The timestamp of a commit or prepare validated now: the clock's, or
    /// above the shard's floor where that is ahead (R14).
    fn next_ts(&self, state: &mut State) -> Timestamp {
        if self.faults.commit_below_closed {
            return self.hlc.now();
        }
        let ts = self.hlc.now().max(state.floor.next());
        state.floor = ts;
        ts
    }

    /// R14 (leader): closes timestamps up to `lead_ns` ahead of the clock
    /// and returns the entry that says so, to be proposed at once: every
    /// timestamp this shard hands out from now on is above it, and every
    /// commit it handed out at or below it was proposed before it.
    pub fn propose_close(&self, lead_ns: u64) -> Result<Entry> {
        let mut state = self.state();
        if !state.serving {
            return Err(Error::NotLeader { leader: None });
        }
        let now = self.hlc.now();
        let ts = Timestamp::new(now.physical.saturating_add(lead_ns), 0).max(state.floor);
        state.floor = ts;
        Ok(Entry::Close { ts })
    }

    /// Lifts the floor to `ts` (a commit decision proposed here: every
    /// prepare proposed after it takes a timestamp above it, so a replica
    /// caught up to the decision is caught up to everything before it;
    /// `Shard::caught_up`).
    pub fn raise_floor(&self, ts: Timestamp) {
        let mut state = self.state();
        state.floor = state.floor.max(ts);
    }

    /// R14, at any replica: validates what a serializable transaction read
    /// here (R7: no commit above its snapshot on a key or range it read, no
    /// other transaction's write lock on one) against what this replica
    /// applied, and answers the closed timestamp that covers it: nothing at
    /// or below it can commit here any more, so the reads hold for a commit
    /// of the transaction at any timestamp up to it. `None` while the
    /// replica has not closed the transaction's snapshot, and `at_least`,
    /// yet (wait for it).
    pub fn validate_settled(&self, changes: &Changes, at_least: Timestamp) -> Result<Option<Timestamp>> {
        if changes.isolation != crate::Isolation::Serializable
            || !changes.writes.is_empty()
            || !changes.locked.is_empty()
            || !changes.guards.is_empty()
        {
            return Err(Error::Invalid("only a serializable transaction's reads are validated at a replica".into()));
        }
        let state = self.state();
        if state.restoring || state.closed < changes.read_ts.max(at_least) {
            return Ok(None);
        }
        self.check_against_log(&state, changes)?;
        Ok(Some(state.closed))
    }

    /// The newest closed timestamp applied here (R14; zero for a shard that
    /// does not close timestamps).
    pub fn closed(&self) -> Timestamp {
        self.state().closed
    }

    /// The checks of R7 under the sequencer: `Ok(Some(txn))` when a highly
    /// available write must wait for `txn`; an error for a coordinated
    /// conflict. On success the clock has passed the read timestamp.
    fn validate(&self, state: &mut State, changes: &Changes) -> Result<Option<TxnId>> {
        if !state.serving {
            return Err(Error::NotLeader { leader: None });
        }
        // The schema guards, at every level: nothing commits under a
        // schema a DDL replaced (its writes could miss a new index). A DDL
        // holding a guard is waited for (highly available) or a conflict.
        for (key, expected) in &changes.guards {
            if let Some(lock) = state.locks.blocks_read(key, Timestamp::MAX).filter(|lock| lock.txn != changes.txn) {
                if changes.isolation.is_highly_available() {
                    return Ok(Some(lock.txn));
                }
                return Err(Error::Conflict(format!("the schema is changing at shard {} (DDL in progress)", self.id)));
            }
            if mvcc::get(self.engine.as_ref(), key, Timestamp::MAX)? != *expected {
                return Err(Error::Conflict(format!(
                    "the schema changed at shard {} since the transaction planned its statements",
                    self.id
                )));
            }
        }
        // R18: every locality key written lives here at the epoch it was
        // routed by.
        if let Some(txn) =
            self.check_routes(&state.locks, changes.txn, changes.isolation.is_highly_available(), &changes.routes)?
        {
            return Ok(Some(txn));
        }
        if changes.isolation.is_highly_available() {
            return Ok(state.locks.conflict(changes).map(|Obstacle::Held { txn, .. }| txn));
        }
        self.check_against_log(state, changes)?;
        self.hlc.update(changes.read_ts)?;
        Ok(None)
    }

    /// R7 against the log of recent commits and the locks held here: the
    /// snapshot is still covered by the log, no other transaction holds a
    /// lock in the way, and nothing the transaction wrote (or, serializable,
    /// read) was committed above its snapshot.
    fn check_against_log(&self, state: &State, changes: &Changes) -> Result<()> {
        if changes.read_ts < state.log_floor {
            return Err(Error::Conflict(format!(
                "transaction {} is too old to validate at shard {}: its snapshot {} predates the log of recent commits",
                changes.txn, self.id, changes.read_ts
            )));
        }
        if let Some(Obstacle::Held { txn, key }) = state.locks.conflict(changes) {
            return Err(Error::Conflict(format!(
                "key {} is locked by concurrent transaction {txn}",
                crate::conflict::printable(&key)
            )));
        }
        conflict::validate(changes, state.recent.iter(), self.faults).map_err(|conflict| {
            let rule = match conflict.kind {
                ConflictKind::Write => "write conflict",
                ConflictKind::Read => "read of a value changed by a later commit",
            };
            Error::Conflict(format!("{rule} on key {}", crate::conflict::printable(&conflict.key)))
        })
    }

    /// Logs a commit for later validations (once per commit timestamp),
    /// and whether it was applied here. A transaction can commit here more
    /// than once: its queued writes split by a reroute (R18) arrive as
    /// separate entries, and every one of them must be validated against.
    fn remember(state: &mut State, record: CommitRecord, applied: bool) {
        match state.recent_txns.get_mut(&record.txn) {
            Some(known) if known.0 == record.ts => known.1 |= applied,
            Some(known) => {
                known.0 = record.ts;
                known.1 |= applied;
                state.recent.push_back(record);
            }
            None => {
                state.recent_txns.insert(record.txn, (record.ts, applied));
                state.recent.push_back(record);
            }
        }
    }

    /// A proposal that was never replicated (refused, or the log could not
    /// take it) or that every replica skipped (R15): drop its locks, and its
    /// commit from the log of recent commits so later writers of its keys
    /// do not conflict with a ghost (unless a commit of it was applied here
    /// after all, through another proposal, or it is prepared here).
    pub fn abandon(&self, txn: TxnId) {
        let mut state = self.state();
        if !state.prepared.contains_key(&txn) && state.locks.release(txn) {
            state.releases += 1;
            self.released.notify_all();
        }
        Self::forget_unapplied(&mut state, txn);
    }

    /// Drops `txn`'s commit from the log of recent commits unless one was
    /// applied here.
    fn forget_unapplied(state: &mut State, txn: TxnId) {
        if matches!(state.recent_txns.get(&txn), Some((_, false))) {
            state.recent_txns.remove(&txn);
            state.recent.retain(|record| record.txn != txn);
        }
    }

    /// A proposal of `txn` proved never chosen (an orphan settled by the
    /// next leader's log): drops its commit from the log of recent commits,
    /// so that a resend is validated afresh rather than answered "outcome
    /// unknown" — unless a commit of `txn` was applied here after all
    /// (through another proposal) or `txn` is in flight or prepared here
    /// again. Its in-flight locks went when its leadership did.
    pub fn forget_unchosen(&self, txn: TxnId) {
        let mut state = self.state();
        let unapplied = matches!(state.recent_txns.get(&txn), Some((_, false)));
        if unapplied && !state.locks.holds(txn) && !state.prepared.contains_key(&txn) {
            state.recent_txns.remove(&txn);
            state.recent.retain(|record| record.txn != txn);
        }
    }

    /// Whether `txn` was resolved here, or decided here as its record: a
    /// prepare of it now is a late one.
    fn is_finished(&self, txn: TxnId) -> Result<bool> {
        Ok(self.engine.get(ColumnFamily::Locks, &resolved_key(txn))?.is_some() || self.decision(txn)?.is_some())
    }

    /// R20: whether `carried` may resolve `prepared` as committed: it
    /// brings values only of keys the part locked, and it comes if the
    /// part's values follow.
    fn carried_fits(prepared: &Prepared, carried: Option<&Carried>) -> bool {
        match carried {
            None => !prepared.values_follow,
            Some(carried) => {
                let locked = prepared.changes.written_keys();
                carried.writes.iter().all(|(key, _)| locked.binary_search(key).is_ok())
            }
        }
    }

    /// R20: whether a commit carrying `carried` would resolve `txn`'s part
    /// here (see [`Shard::carried_fits`]); true if nothing is prepared.
    pub fn resolves_with(&self, txn: TxnId, carried: Option<&Carried>) -> bool {
        let carried = carried.filter(|carried| carried.shard == self.id);
        self.state().prepared.get(&txn).is_none_or(|(prepared, _)| Self::carried_fits(prepared, carried))
    }

    /// What a commit recorded here carries for parts prepared without their
    /// values (R20).
    pub fn carried(&self, txn: TxnId) -> Result<Vec<Carried>> {
        Ok(self
            .engine
            .get(ColumnFamily::Locks, &carried_key(txn))?
            .map(|bytes| decode::<Vec<Carried>>(&bytes, "carried values"))
            .transpose()?
            .unwrap_or_default())
    }

    /// The decision recorded here for `txn` (this shard is its record).
    pub fn decision(&self, txn: TxnId) -> Result<Option<Decision>> {
        self.engine
            .get(ColumnFamily::Locks, &decision_key(txn))?
            .map(|bytes| decode::<Decision>(&bytes, "transaction decision"))
            .transpose()
    }

    /// Whether `txn` holds locks here that are not (yet) prepared: a
    /// commit or prepare proposed and not applied.
    pub fn in_flight(&self, txn: TxnId) -> bool {
        let state = self.state();
        state.locks.holds(txn) && !state.prepared.contains_key(&txn)
    }

    /// Whether `txn` is prepared here.
    pub fn is_prepared(&self, txn: TxnId) -> bool {
        self.state().prepared.contains_key(&txn)
    }

    /// Prepared transactions applied here before `older_than_us` (the
    /// caller's clock), with their record shard: their coordinators may be
    /// gone, and recovery asks the record shard (R9).
    pub fn stale_prepared(&self, older_than_us: u64) -> Vec<(TxnId, ShardId)> {
        let state = self.state();
        let mut stale: Vec<(TxnId, ShardId)> = state
            .prepared
            .iter()
            .filter(|(_, (_, at))| *at < older_than_us)
            .map(|(txn, (prepared, _))| (*txn, prepared.record))
            .collect();
        stale.sort_unstable();
        stale
    }

    // --- apply (every replica) -----------------------------------------------

    /// Applies the entries of one log slot (`None` for a local shard),
    /// in order, as one atomic engine write with the slot as the applied
    /// index; `now_us` stamps new prepared transactions for recovery.
    /// Returns what each entry did.
    ///
    /// An error here is a failed engine write or a corrupt record: the
    /// caller must stop applying (a replica that skipped an entry would
    /// diverge).
    pub fn apply(&self, slot: Option<u64>, entries: &[Entry], now_us: u64) -> Result<Vec<Applied>> {
        let durability = if self.committer.is_some() { Durability::Sync } else { Durability::Buffered };
        self.apply_with(slot, entries, None, now_us, durability)
    }

    /// Applies the entries the log chose for `slot` (an empty slice for a
    /// no-op or a reconfiguration), each with the lineage it was proposed
    /// with (`None`: an entry of a version that kept one slot in flight).
    /// Re-validates every commit, prepare and closed timestamp first (R15):
    /// one whose leader validated it against entries the log did not
    /// choose is skipped ([`Applied::Skipped`]), and so is every such entry
    /// after it in the slot.
    pub fn apply_chosen(
        &self,
        slot: u64,
        entries: &[Entry],
        lineages: &[Option<Lineage>],
        now_us: u64,
    ) -> Result<Vec<Applied>> {
        assert_eq!(entries.len(), lineages.len(), "one lineage per entry");
        self.apply_with(Some(slot), entries, Some(lineages), now_us, Durability::Buffered)
    }

    /// [`Shard::apply_chosen`] in two steps, so that one engine write can
    /// carry the slots of several shards: this builds the slot's write
    /// ([`StagedSlot::take_batch`]) and what it will do, changing nothing;
    /// the caller writes the batch (buffered: the Paxos log holds the slot
    /// durably), then hands the slot to [`Shard::publish`].
    ///
    /// The build reads this shard's engine and state, so nothing else may
    /// be applied to or restored into this shard between the two steps:
    /// one staged slot per shard at a time.
    pub fn stage_chosen(
        &self,
        slot: u64,
        entries: &[Entry],
        lineages: &[Option<Lineage>],
        now_us: u64,
    ) -> Result<StagedSlot> {
        assert_eq!(entries.len(), lineages.len(), "one lineage per entry");
        self.stage(Some(slot), entries, Some(lineages), now_us)
    }

    fn apply_with(
        &self,
        slot: Option<u64>,
        entries: &[Entry],
        lineages: Option<&[Option<Lineage>]>,
        now_us: u64,
        durability: Durability,
    ) -> Result<Vec<Applied>> {
        let mut staged = self.stage(slot, entries, lineages, now_us)?;
        let batch = staged.take_batch();
        match &self.committer {
            Some(committer) if durability == Durability::Sync => {
                let ticket = committer.submit(batch);
                committer.wait(ticket)?;
            }
            _ => self.engine.write(batch, durability)?,
        }
        Ok(self.publish(staged))
    }

    fn stage(
        &self,
        slot: Option<u64>,
        entries: &[Entry],
        lineages: Option<&[Option<Lineage>]>,
        now_us: u64,
    ) -> Result<StagedSlot> {
        let skips = match (slot, lineages) {
            (Some(slot), Some(lineages)) => self.revalidate(slot, entries, lineages),
            _ => Revalidated::default(),
        };
        let mut batch = WriteBatch::new();
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut effects = Vec::new();
        // Records written by earlier entries of this slot.
        let mut prepared_here: HashMap<TxnId, Option<Prepared>> = HashMap::new();
        let mut decided_here: HashMap<TxnId, (Decision, Vec<Carried>)> = HashMap::new();
        let mut written = SlotWrites::default();
        let mut closed = self.state().closed;
        let mut queue_changes = outbox::QueueChanges::default();
        for (index, entry) in entries.iter().enumerate() {
            if skips.skipped.contains(&index) {
                outcomes.push(Applied::Skipped);
                continue;
            }
            match entry {
                Entry::Commit { txn, ts, writes, locked } => {
                    closed_below(closed, *ts, *txn)?;
                    for (key, value) in writes {
                        mvcc::put_version_ordered(self.engine.as_ref(), &mut batch, key, *ts, *txn, value.as_deref())?;
                        written.origins.insert(key.clone(), (*ts, *txn));
                    }
                    let keys = written_keys(writes, locked);
                    effects.push(Effect::Commit(CommitRecord { ts: *ts, txn: *txn, keys }));
                    written.newest = written.newest.max(*ts);
                    outcomes.push(Applied::Committed(*ts));
                }
                Entry::Prepare(prepared) => {
                    let txn = prepared.changes.txn;
                    let existing = match prepared_here.get(&txn) {
                        Some(record) => record.clone(),
                        None => self.state().prepared.get(&txn).map(|(record, _)| record.clone()),
                    };
                    let finished = prepared_here.get(&txn).is_some_and(Option::is_none)
                        || decided_here.contains_key(&txn)
                        || self.is_finished(txn)?;
                    match existing {
                        // R20: a later round replaces the part (its leader
                        // merged the earlier rounds into it).
                        Some(existing) if prepared.round > existing.round => {
                            if !prepared.changes.writes.is_empty() || !prepared.changes.locked.is_empty() {
                                closed_below(closed, prepared.prepare_ts, txn)?;
                            }
                            let mut prepared = prepared.clone();
                            prepared.locked_at = prepared.locked_at.min(existing.locked_at);
                            batch.put(ColumnFamily::Locks, prepared_key(txn), encode(&prepared));
                            prepared_here.insert(txn, Some(prepared.clone()));
                            outcomes.push(Applied::Prepared(prepared.prepare_ts));
                            effects.push(Effect::Prepare(prepared));
                        }
                        Some(existing) => outcomes.push(Applied::Prepared(existing.prepare_ts)),
                        // Chosen after the transaction was resolved or
                        // decided here (a late copy): it holds nothing.
                        None if finished => outcomes.push(Applied::Late),
                        None => {
                            if !prepared.changes.writes.is_empty() || !prepared.changes.locked.is_empty() {
                                closed_below(closed, prepared.prepare_ts, txn)?;
                            }
                            batch.put(ColumnFamily::Locks, prepared_key(txn), encode(prepared));
                            prepared_here.insert(txn, Some(prepared.clone()));
                            effects.push(Effect::Prepare(prepared.clone()));
                            outcomes.push(Applied::Prepared(prepared.prepare_ts));
                        }
                    }
                }
                Entry::Decide { txn, decision, carried } => {
                    // R9: the first decision recorded wins.
                    let recorded = match decided_here.get(txn) {
                        Some(decided) => Some(decided.clone()),
                        None => match self.decision(*txn)? {
                            Some(decision) => Some((decision, self.carried(*txn)?)),
                            None => None,
                        },
                    };
                    let (decision, carried) = match recorded {
                        Some(recorded) => recorded,
                        None => {
                            batch.put(ColumnFamily::Locks, decision_key(*txn), encode(decision));
                            // R20: the values a commit carries for parts
                            // prepared without them, for their recovery.
                            if matches!(decision, Decision::Commit(_)) && !carried.is_empty() {
                                batch.put(ColumnFamily::Locks, carried_key(*txn), encode(carried));
                            }
                            decided_here.insert(*txn, (*decision, carried.clone()));
                            (*decision, carried.clone())
                        }
                    };
                    let own = carried.iter().find(|part| part.shard == self.id);
                    let parts = (&mut batch, &mut effects, &mut prepared_here, &mut written);
                    self.resolve_into(parts, *txn, decision, own)?;
                    outcomes.push(Applied::Decided(decision));
                }
                Entry::CommitRecord { own, ts, carried } => {
                    let txn = own.changes.txn;
                    let recorded = match decided_here.get(&txn) {
                        Some((decision, _)) => Some(*decision),
                        None => self.decision(txn)?,
                    };
                    let decision = match recorded {
                        // R9: the first decision recorded wins; this part
                        // was never prepared, so it is dropped.
                        Some(decision) if !self.faults.own_part_after_decision => {
                            effects.push(Effect::Drop(txn));
                            decision
                        }
                        _ => {
                            let decision = Decision::Commit(*ts);
                            if !own.changes.writes.is_empty() || !own.changes.locked.is_empty() {
                                closed_below(closed, own.prepare_ts, txn)?;
                            }
                            batch.put(ColumnFamily::Locks, decision_key(txn), encode(&decision));
                            if !carried.is_empty() {
                                batch.put(ColumnFamily::Locks, carried_key(txn), encode(carried));
                            }
                            decided_here.insert(txn, (decision, carried.clone()));
                            prepared_here.insert(txn, Some(own.clone()));
                            let parts = (&mut batch, &mut effects, &mut prepared_here, &mut written);
                            self.resolve_into(parts, txn, decision, None)?;
                            decision
                        }
                    };
                    outcomes.push(Applied::Decided(decision));
                }
                Entry::Resolve { txn, decision, carried } => {
                    let parts = (&mut batch, &mut effects, &mut prepared_here, &mut written);
                    self.resolve_into(parts, *txn, *decision, carried.as_ref())?;
                    outcomes.push(Applied::Resolved);
                }
                Entry::Close { ts } => {
                    if *ts > closed {
                        closed = *ts;
                        batch.put(ColumnFamily::Locks, CLOSED_KEY.to_vec(), ts.encode().to_vec());
                    }
                    outcomes.push(Applied::Closed);
                }
                Entry::Enqueue { txn, ts, parts, routes } => {
                    closed_below(closed, *ts, *txn)?;
                    self.apply_enqueue(&self.state(), &mut queue_changes, &mut batch, *txn, *ts, parts, routes);
                    let keys: Vec<Vec<u8>> = parts.iter().flat_map(|(_, writes)| written_keys(writes, &[])).collect();
                    effects.push(Effect::Commit(CommitRecord { ts: *ts, txn: *txn, keys }));
                    written.newest = written.newest.max(*ts);
                    outcomes.push(Applied::Committed(*ts));
                }
                Entry::Deliver { from, seq, txn, ts, origin, writes, siblings, routes } => {
                    // R18: an entry that writes a locality key that moved
                    // away is not applied; its outbox requeues those writes.
                    let next = self.delivery_fits(routes)?
                        && self.apply_delivery(&self.state(), &mut queue_changes, &mut batch, *from, *seq);
                    if next {
                        closed_below(closed, *ts, *txn)?;
                        // R17: a key with a newer write keeps it. This write
                        // of it is kept apart (below), for MAV readers that
                        // saw the rest of the transaction, and named among
                        // the siblings of the others.
                        let mut kept = Vec::with_capacity(writes.len());
                        let mut superseded = Vec::new();
                        let mut siblings = siblings.clone();
                        for write in writes {
                            if self.newer_origin(&written.origins, &write.0, *origin, *txn)? {
                                siblings.push((self.id, write.0.clone()));
                                superseded.push(write);
                            } else {
                                kept.push(write);
                            }
                        }
                        let siblings =
                            if siblings.is_empty() { mvcc::Siblings::None } else { mvcc::Siblings::Keys(siblings) };
                        // Kept apart for a MAV reader that saw the rest of
                        // this transaction: it must find this write of it.
                        for (key, value) in superseded {
                            let version = mvcc::Version {
                                ts: *ts,
                                txn: *txn,
                                value: value.clone(),
                                origin: *origin,
                                siblings: siblings.clone(),
                            };
                            batch.put(
                                ColumnFamily::Locks,
                                outbox::superseded_key(key, *origin, *txn),
                                mvcc::encode_detached(&version),
                            );
                        }
                        for (key, value) in kept {
                            mvcc::put_version_with(
                                self.engine.as_ref(),
                                &mut batch,
                                key,
                                *ts,
                                *origin,
                                *txn,
                                &siblings,
                                value.as_deref(),
                            )?;
                            written.origins.insert(key.clone(), (*origin, *txn));
                        }
                        let keys = written_keys(writes, &[]);
                        effects.push(Effect::Commit(CommitRecord { ts: *ts, txn: *txn, keys }));
                        written.newest = written.newest.max(*ts);
                    }
                    let through = self.delivered_in(&self.state(), &queue_changes, *from);
                    outcomes.push(Applied::Delivered { through, applied: next });
                }
                Entry::Shipped { dest, through, ts } => {
                    self.apply_shipped(&self.state(), &mut queue_changes, &mut batch, *dest, *through, *ts)?;
                    outcomes.push(Applied::Shipped);
                }
                Entry::Reroute { dest, seq, route, residence } => {
                    self.apply_reroute(&self.state(), &mut queue_changes, &mut batch, *dest, *seq, route, residence)?;
                    outcomes.push(Applied::Shipped);
                }
            }
        }
        let last_commit_ts = {
            let state = self.state();
            state.last_commit_ts.max(written.newest)
        };
        match slot {
            Some(slot) => {
                batch.put(ColumnFamily::Meta, META_APPLIED_SLOT.to_vec(), encode_applied(slot, last_commit_ts))
            }
            None if written.newest > Timestamp::ZERO => {
                batch.put(ColumnFamily::Meta, META_LAST_COMMIT_TS.to_vec(), last_commit_ts.encode().to_vec())
            }
            None => {}
        }
        if let Some(run) = skips.run {
            batch.put(ColumnFamily::Locks, RUN_KEY.to_vec(), encode(&run));
        }
        Ok(StagedSlot {
            shard: self.id,
            batch,
            outcomes,
            effects,
            queue_changes,
            last_commit_ts,
            closed,
            slot,
            run: skips.run,
            now_us,
        })
    }

    /// Makes a slot [`Shard::stage_chosen`] built visible, once its batch
    /// is in the engine, and returns what each of its entries did.
    pub fn publish(&self, staged: StagedSlot) -> Vec<Applied> {
        assert_eq!(staged.shard, self.id, "a slot is published by the shard that staged it");
        assert!(staged.batch.is_empty(), "a staged slot's batch is written before it is published");
        let StagedSlot { outcomes, effects, queue_changes, last_commit_ts, closed, slot, run, now_us, .. } = staged;
        let mut state = self.state();
        let mut released = false;
        for effect in effects {
            match effect {
                Effect::Commit(record) => {
                    self.hlc.observe_past(record.ts);
                    state.floor = state.floor.max(record.ts);
                    released |= state.locks.release(record.txn);
                    Self::remember(&mut state, record, true);
                }
                Effect::Prepare(prepared) => {
                    let txn = prepared.changes.txn;
                    self.hlc.observe_past(prepared.prepare_ts);
                    state.floor = state.floor.max(prepared.prepare_ts);
                    state.locks.acquire(&prepared.changes, prepared.locked_at, HoldKind::Prepared);
                    state.prepared.insert(txn, (prepared, now_us));
                }
                Effect::Release(txn) => {
                    state.prepared.remove(&txn);
                    released |= state.locks.release(txn);
                }
                Effect::Drop(txn) => {
                    released |= state.locks.release(txn);
                    Self::forget_unapplied(&mut state, txn);
                }
            }
        }
        Self::publish_queues(&mut state, queue_changes);
        state.last_commit_ts = last_commit_ts;
        state.closed = closed;
        state.floor = state.floor.max(closed);
        if let Some(slot) = slot {
            state.applied_slot = slot;
        }
        if let Some(run) = run {
            state.run = run;
        }
        self.trim(&mut state);
        if released {
            state.releases += 1;
            self.released.notify_all();
        }
        outcomes
    }

    /// R15: which entries of `slot` to skip, and the run after it (`None`
    /// when unchanged). Deterministic: it reads only the slot's entries and
    /// the replicated run, so every replica skips the same entries.
    fn revalidate(&self, slot: u64, entries: &[Entry], lineages: &[Option<Lineage>]) -> Revalidated {
        let run = self.state().run;
        let mut skipped = Vec::new();
        for (index, (entry, lineage)) in entries.iter().zip(lineages).enumerate() {
            // Decisions and resolutions are not validated against the log:
            // the first decision recorded wins, whenever it is applied. A
            // decision that writes the record's own part (R21) is.
            let validated = matches!(
                entry,
                Entry::Commit { .. }
                    | Entry::Prepare(_)
                    | Entry::CommitRecord { .. }
                    | Entry::Close { .. }
                    | Entry::Enqueue { .. }
                    | Entry::Deliver { .. }
            );
            let fits = lineage.is_none_or(|lineage| skipped.is_empty() && run.fits(slot, &lineage));
            if validated && !fits && !self.faults.skip_revalidation {
                skipped.push(index);
            }
        }
        let mut ballots = lineages.iter().map(|lineage| lineage.map(|lineage| lineage.ballot));
        let first = ballots.next().flatten();
        let filled_by = first.filter(|ballot| skipped.is_empty() && ballots.all(|other| other == Some(*ballot)));
        let after = run.after(slot, filled_by);
        Revalidated { skipped, run: (after != run).then_some(after) }
    }

    /// Adds to `batch` the resolution of `txn`'s prepared part here, if it
    /// is prepared here (a resolution of anything else changes nothing:
    /// resolutions are idempotent). A commit of a part whose values follow
    /// (R20) needs them in `carried`; without them the part stays prepared,
    /// and recovery fetches them from the record shard.
    fn resolve_into(
        &self,
        (batch, effects, prepared_here, written): SlotParts<'_>,
        txn: TxnId,
        decision: Decision,
        carried: Option<&Carried>,
    ) -> Result<()> {
        let prepared = match prepared_here.get(&txn) {
            Some(record) => record.clone(),
            None => self.state().prepared.get(&txn).map(|(record, _)| record.clone()),
        };
        let Some(prepared) = prepared else { return Ok(()) };
        let carried = carried.filter(|carried| carried.shard == self.id);
        if let Decision::Commit(_) = decision
            && !Self::carried_fits(&prepared, carried)
        {
            // Without the values its part waits for (recovery's answer when
            // its own abort lost to the coordinator's commit), or with
            // values of keys it never locked (a coordinator's bug, refused
            // by the leader before it proposes): the part stays prepared,
            // and recovery asks the record again.
            return Ok(());
        }
        batch.delete(ColumnFamily::Locks, prepared_key(txn));
        batch.put(ColumnFamily::Locks, resolved_key(txn), Vec::new());
        prepared_here.insert(txn, None);
        if let Decision::Commit(ts) = decision {
            // The commit timestamp is the largest prepare timestamp, so it
            // is at or above this shard's: above every version of these keys
            // (the lock kept other writers out since).
            assert!(ts >= prepared.prepare_ts, "{txn} commits at {ts}, below its prepare at {}", prepared.prepare_ts);
            // Monotonic Atomic View: the other shards it commits at, all at
            // this timestamp.
            let participants = carried.map_or(&prepared.participants, |carried| &carried.participants);
            let others: Vec<ShardId> = participants.iter().copied().filter(|shard| *shard != self.id).collect();
            let siblings = if others.is_empty() { mvcc::Siblings::None } else { mvcc::Siblings::Shards(others) };
            // R20: the carried values (of keys the part locked, checked
            // above).
            let mut writes = prepared.changes.writes.clone();
            for (key, value) in carried.map(|carried| carried.writes.as_slice()).unwrap_or_default() {
                match writes.iter_mut().find(|(written, _)| written == key) {
                    Some(write) => write.1 = value.clone(),
                    None => writes.push((key.clone(), value.clone())),
                }
            }
            // R18: the rows a rehome moves here arrive as the versions they
            // were.
            let moves: HashMap<&[u8], &crate::protocol::Move> =
                prepared.changes.moves.iter().map(|moved| (moved.key.as_slice(), moved)).collect();
            for (key, value) in &writes {
                let (origin, writer, value, siblings) = match moves.get(key.as_slice()) {
                    Some(moved) => {
                        let version = mvcc::decode_detached(&moved.version)?;
                        let siblings = moved_siblings(version.siblings, moved.from, key);
                        (version.origin, version.txn, version.value, siblings)
                    }
                    None => (ts, txn, value.clone(), siblings.clone()),
                };
                let value = value.as_deref();
                mvcc::put_version_with(self.engine.as_ref(), batch, key, ts, origin, writer, &siblings, value)?;
                written.origins.insert(key.clone(), (origin, writer));
            }
            let keys = prepared.changes.written_keys();
            effects.push(Effect::Commit(CommitRecord { ts, txn, keys }));
            written.newest = written.newest.max(ts);
        }
        effects.push(Effect::Release(txn));
        Ok(())
    }

    fn trim(&self, state: &mut State) {
        let horizon = Timestamp::new(self.hlc.physical_now_ns().saturating_sub(RECENT_COMMIT_WINDOW_NS), 0);
        while let Some(front) = state.recent.front() {
            if front.ts >= horizon && state.recent.len() <= RECENT_COMMITS_MAX {
                break;
            }
            let record = state.recent.pop_front().expect("checked above");
            state.recent_txns.remove(&record.txn);
            state.log_floor = state.log_floor.max(record.ts);
        }
    }

    // --- snapshots -----------------------------------------------------------

    /// The newest commit timestamp applied here.
    pub fn last_commit_ts(&self) -> Timestamp {
        self.state().last_commit_ts
    }

    /// The applied slot: every entry up to it is in the engine.
    pub fn applied_slot(&self) -> u64 {
        self.state().applied_slot
    }

    /// Snapshots the shard's replicated state (its versions, prepared
    /// transactions and decisions, and its newest commit time) at its
    /// applied slot, into chunks of about `chunk_bytes` stored in the
    /// engine's snapshots family, streamed from one engine scan per family
    /// (never the whole state in memory). Returns the slot and the chunk
    /// count; the chunks are durable on return. Taken between applies: the
    /// caller keeps `apply` out meanwhile.
    ///
    /// Chunk 0 is the newest commit time; the others are the
    /// `geodb_storage::snapshot` export of [`SNAPSHOT_FAMILIES`].
    pub fn write_snapshot(&self, chunk_bytes: usize) -> Result<(u64, u64)> {
        let (slot, last) = {
            let state = self.state();
            (state.applied_slot, state.last_commit_ts)
        };
        // Each chunk is written as the next one is cut; the last is synced,
        // which makes all of them durable.
        let mut pending = WriteBatch::new();
        snapshot::put_chunk(&mut pending, slot, 0, last.encode().to_vec());
        let mut index = 1;
        snapshot::export(self.engine.as_ref(), &SNAPSHOT_FAMILIES, chunk_bytes, |chunk| {
            self.engine.write(std::mem::take(&mut pending), Durability::Buffered)?;
            snapshot::put_chunk(&mut pending, slot, index, chunk);
            index += 1;
            Ok(())
        })?;
        self.engine.write(pending, Durability::Sync)?;
        Ok((slot, index))
    }

    /// Chunk `index` of the snapshot at `slot`, if this replica stores it.
    pub fn snapshot_chunk(&self, slot: u64, index: u64) -> Result<Option<Vec<u8>>> {
        Ok(snapshot::chunk(self.engine.as_ref(), slot, index)?)
    }

    /// Stores, durably, chunk `index` of the snapshot at `slot` received
    /// from another replica. The first chunk of one drops every other
    /// snapshot stored above `keep` (the replica's own): transfers given up.
    pub fn store_snapshot_chunk(&self, slot: u64, index: u64, bytes: Vec<u8>, keep: u64) -> Result<()> {
        if index == 0 {
            self.drop_snapshots(|stored| stored > keep && stored != slot)?;
        }
        let mut batch = WriteBatch::new();
        snapshot::put_chunk(&mut batch, slot, index, bytes);
        Ok(self.engine.write(batch, Durability::Sync)?)
    }

    /// Drops the stored snapshots whose slot `drop` picks.
    pub fn drop_snapshots(&self, drop: impl Fn(u64) -> bool) -> Result<()> {
        for slot in snapshot::stored_slots(self.engine.as_ref())? {
            if drop(slot) {
                snapshot::drop_snapshot(self.engine.as_ref(), slot)?;
            }
        }
        Ok(())
    }

    /// Replaces the shard's state with the snapshot of `chunks` chunks at
    /// `slot`, stored in the engine (taken by another replica, or by this
    /// one before a crash). Transactions whose snapshots predate it can no
    /// longer be validated here (the log of recent commits restarts empty).
    ///
    /// The whole snapshot is checked first: a corrupt or missing chunk is an
    /// error and changes nothing. The import then rewrites the families in
    /// bounded batches, between a durable restoring mark and the synced
    /// batch that ends it; reads wait meanwhile, and a shard opened with
    /// the mark set serves nothing until it has restored again.
    pub fn restore(&self, slot: u64, chunks: u64, now_us: u64) -> Result<()> {
        let chunk = |index: u64| -> Result<Vec<u8>> {
            snapshot::chunk(self.engine.as_ref(), slot, index)?.ok_or_else(|| {
                Error::Storage(geodb_storage::Error::Corrupt(format!(
                    "chunk {index} of the snapshot at slot {slot} of shard {} is missing",
                    self.id
                )))
            })
        };
        let last = Timestamp::decode(&chunk(0)?)
            .ok_or_else(|| Error::Storage(geodb_storage::Error::Corrupt("shard snapshot: commit time".into())))?;
        let mut check = snapshot::check(&SNAPSHOT_FAMILIES);
        for index in 1..chunks {
            check.chunk(&chunk(index)?)?;
        }

        let _exclusive = self.restore_gate.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.state().restoring = true;
        let mut mark = WriteBatch::new();
        mark.put(ColumnFamily::Meta, META_RESTORING.to_vec(), slot.to_be_bytes().to_vec());
        self.engine.write(mark, Durability::Sync)?;
        let mut import = snapshot::Import::begin(self.engine.as_ref(), &SNAPSHOT_FAMILIES)?;
        for index in 1..chunks {
            import.chunk(&chunk(index)?)?;
        }
        let mut meta = WriteBatch::new();
        meta.put(ColumnFamily::Meta, META_LAST_COMMIT_TS.to_vec(), last.encode().to_vec());
        meta.put(ColumnFamily::Meta, META_APPLIED_SLOT.to_vec(), encode_applied(slot, last));
        meta.delete(ColumnFamily::Meta, META_RESTORING.to_vec());
        import.finish(meta)?;
        let closed = match self.engine.get(ColumnFamily::Locks, CLOSED_KEY)? {
            Some(bytes) => Timestamp::decode(&bytes)
                .ok_or_else(|| geodb_storage::Error::Corrupt("shard snapshot: closed timestamp".into()))?,
            None => Timestamp::ZERO,
        };
        let run = read_run(self.engine.as_ref())?;
        self.adopt_threshold(gc::stored_threshold(self.engine.as_ref())?);
        follow_clock(&self.hlc, self.committer.is_none(), last);
        let prepared = self.read_prepared()?;
        // Published at once: the restored commits with the transactions
        // prepared in them, so no read is caught up against half of it.
        {
            let mut state = self.state();
            state.recent.clear();
            state.recent_txns.clear();
            state.log_floor = state.log_floor.max(last);
            state.last_commit_ts = last;
            state.closed = closed;
            state.floor = state.floor.max(last).max(closed);
            state.applied_slot = slot;
            state.run = run;
            self.reload_queues(&mut state)?;
            self.install_prepared(&mut state, prepared, now_us);
            state.restoring = false;
            state.releases += 1;
        }
        self.released.notify_all();
        Ok(())
    }

    // --- a local shard -------------------------------------------------------

    /// Commits `changes` on a local shard (a single node) in one round:
    /// validate, write durably with group commit, apply. A highly available
    /// write that meets a lock waits for it (bounded by [`LOCK_WAIT_MAX`]).
    pub fn commit_local(&self, changes: &Changes) -> Result<Timestamp> {
        assert!(self.committer.is_some(), "commit_local on a replicated shard");
        let deadline = std::time::Instant::now() + LOCK_WAIT_MAX;
        loop {
            let seen = self.state().releases;
            match self.propose_commit(changes)? {
                Proposal::Entry(entry) => {
                    let Entry::Commit { ts, .. } = entry else { unreachable!("a commit proposal") };
                    if let Err(error) = self.apply(None, std::slice::from_ref(&entry), 0) {
                        // Nothing of the batch was written (group commit
                        // reports a failed group to every member).
                        self.abandon(changes.txn);
                        return Err(error);
                    }
                    return Ok(ts);
                }
                Proposal::Blocked(txn) => self.wait_for_release(seen, txn, deadline)?,
                Proposal::AlreadyCommitted(ts) => return Ok(ts),
                Proposal::AlreadyPrepared(_) | Proposal::InFlight => {
                    unreachable!("a local commit is one call of one coordinator")
                }
            }
        }
    }

    /// Blocks until some lock was released after the caller read `seen`
    /// from the release counter, or fails once `deadline` passed. For local
    /// callers that can block (the simulator parks requests instead).
    pub fn wait_for_release(&self, seen: u64, txn: TxnId, deadline: std::time::Instant) -> Result<()> {
        crate::wait::blocking(|| {
            let mut state = self.state();
            while state.releases == seen {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(Error::Unavailable(format!(
                        "shard {}: gave up waiting for the lock of transaction {txn} after {} s",
                        self.id,
                        LOCK_WAIT_MAX.as_secs()
                    )));
                }
                state = self.released.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            }
            Ok(())
        })
    }

    /// Durable syncs of a local shard's group commit so far (0 when
    /// replicated: the Paxos log syncs instead).
    pub fn syncs(&self) -> u64 {
        self.committer.as_ref().map_or(0, GroupCommitter::syncs)
    }

    /// The release counter, for [`Shard::wait_for_release`].
    pub fn releases(&self) -> u64 {
        self.state().releases
    }

    /// Whether this replica has applied every commit at or below `after`
    /// (what a Read Committed reader saw or wrote): its newest applied
    /// commit is at least `after`, and no transaction prepared here could
    /// still commit at or below it. A distributed commit's timestamp can be
    /// below commits applied after its prepare (another transaction's, in a
    /// later slot), so the newest commit alone does not say that its own
    /// resolution was applied.
    pub fn caught_up(&self, after: Timestamp) -> bool {
        let state = self.state();
        !state.restoring
            && state.last_commit_ts >= after
            && state.prepared.values().all(|(prepared, _)| prepared.prepare_ts > after)
    }

    pub fn stats(&self) -> ShardStats {
        let state = self.state();
        ShardStats {
            waits: state.waits,
            recent_commits: state.recent.len(),
            prepared: state.prepared.len(),
            locks_held: state.locks.holders().count(),
            last_commit_ts: state.last_commit_ts,
            applied_slot: state.applied_slot,
        }
    }

    /// Restarts the recovery clock of every prepared transaction at
    /// `now_us` (a host adopting the shard after a restart: their age is
    /// unknown, and recovering them at once would abort live ones).
    pub fn stamp_prepared(&self, now_us: u64) {
        for (_, at) in self.state().prepared.values_mut() {
            *at = now_us;
        }
    }

    /// Whether any transaction holds a lock here (the simulator checks that
    /// none survives recovery).
    pub fn holds_locks(&self) -> bool {
        !self.state().locks.is_empty()
    }

    /// The transactions holding locks here, and whether each is prepared
    /// (for checkers).
    pub fn lock_holders(&self) -> Vec<(TxnId, bool)> {
        self.state().locks.holders().collect()
    }
}

/// A slot built by [`Shard::stage_chosen`] and not yet published: its
/// engine write and what publishing it will do to the shard's state.
pub struct StagedSlot {
    shard: ShardId,
    batch: WriteBatch,
    outcomes: Vec<Applied>,
    effects: Vec<Effect>,
    queue_changes: outbox::QueueChanges,
    last_commit_ts: Timestamp,
    closed: Timestamp,
    slot: Option<u64>,
    run: Option<Run>,
    now_us: u64,
}

impl StagedSlot {
    /// The slot's engine write, in the shard's own keys (a shard over a
    /// view of a shared engine writes through that view): taken once, to
    /// be written before [`Shard::publish`].
    pub fn take_batch(&mut self) -> WriteBatch {
        std::mem::take(&mut self.batch)
    }
}

/// What [`Shard::revalidate`] made of a slot.
#[derive(Default)]
struct Revalidated {
    /// Indexes of the entries to skip.
    skipped: Vec<usize>,
    /// The run after the slot, if it changed.
    run: Option<Run>,
}

/// The run stored in `engine` (an empty one if none: a new shard, or data
/// written before pipelines, which no pipelined entry fits after).
fn read_run(engine: &dyn Engine) -> Result<Run> {
    match engine.get(ColumnFamily::Locks, RUN_KEY)? {
        Some(bytes) => decode(&bytes, "shard run of slots"),
        None => Ok(Run::default()),
    }
}

enum Effect {
    Commit(CommitRecord),
    Prepare(Prepared),
    Release(TxnId),
    /// R21: a commit at the record dropped behind a decision recorded
    /// first: its locks go, and so does its commit from the log of recent
    /// commits, where its leader put it (unless a commit of it was applied).
    Drop(TxnId),
}

/// A one-round commit (a one-shard commit, or R21's at the record) moves
/// no rows: a rehome's moves commit in two phases only (R18).
fn one_round_without_moves(changes: &Changes) -> Result<()> {
    if changes.moves.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid("a rehome's moves commit in two phases only".into()))
    }
}

fn written_keys(writes: &[crate::protocol::Write], locked: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = writes.iter().map(|(key, _)| key.clone()).chain(locked.iter().cloned()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// R14 as every replica sees it: a commit, or a prepare that writes, comes
/// above every timestamp closed before it in the log. Anything else is a
/// broken protocol invariant (its readers may have missed it): the replica
/// stops applying rather than diverge from what it answered.
/// What the entries of one slot wrote so far, as later entries of it see it.
#[derive(Default)]
struct SlotWrites {
    /// The newest commit timestamp.
    newest: Timestamp,
    /// R17: the origin and writer of each key's newest version.
    origins: HashMap<Vec<u8>, (Timestamp, TxnId)>,
}

fn closed_below(closed: Timestamp, ts: Timestamp, txn: TxnId) -> Result<()> {
    if ts <= closed {
        return Err(Error::Storage(geodb_storage::Error::Corrupt(format!(
            "transaction {txn} commits at {ts}, at or below the closed timestamp {closed}: a protocol invariant is broken"
        ))));
    }
    Ok(())
}

/// Moves the clock past a timestamp of this shard's own data after a
/// restart or restore. A local shard (one node, no peers to keep its clock
/// honest, nothing placed in the future) follows it whatever it is: a clock
/// stepped back must not hide the node's own commits. A replicated shard
/// follows only what its clock has reached: its data may lie ahead of every
/// clock on purpose (R14, and commits lifted above a shard's floor), its
/// floor keeps its own timestamps above its data, and its peers' readings
/// keep its clock with theirs.
fn follow_clock(hlc: &Hlc, replicated: bool, ts: Timestamp) {
    if replicated { hlc.observe_past(ts) } else { hlc.observe(ts) }
}

/// R18: the siblings of a version a rehome moved from shard `from`: the
/// rest of its transaction was written at `from` with it (a commit there
/// names no siblings at its own shard), so the old home joins them: for a
/// commit across shards, as one more shard caught up to the commit's
/// timestamp (its origin); otherwise as the version's own key there, which
/// holds the version until every later one (the rehome's delete) and so
/// shows it exactly when the rest of it is there.
fn moved_siblings(siblings: mvcc::Siblings, from: ShardId, key: &[u8]) -> mvcc::Siblings {
    match siblings {
        mvcc::Siblings::Shards(mut shards) => {
            if !shards.contains(&from) {
                shards.push(from);
            }
            mvcc::Siblings::Shards(shards)
        }
        mvcc::Siblings::Keys(mut keys) => {
            keys.push((from, key.to_vec()));
            mvcc::Siblings::Keys(keys)
        }
        mvcc::Siblings::None => mvcc::Siblings::Keys(vec![(from, key.to_vec())]),
    }
}

fn read_ts(mode: &ReadMode) -> Timestamp {
    mode.read_ts().unwrap_or(Timestamp::MAX)
}
