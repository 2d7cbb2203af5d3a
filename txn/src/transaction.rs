//! The coordinator side: beginning, running and committing transactions.
//!
//! A [`Transaction`] reads through its shard at a snapshot timestamp and
//! buffers its writes; it reads its own writes. Nothing it writes is
//! visible to anyone else until [`Transaction::commit`] hands the buffer to
//! the shard ([`Shard::commit`]), which validates, orders and persists it
//! atomically. [`Transaction::rollback`] (or dropping the transaction)
//! discards the buffer: there is nothing to undo.
//!
//! Snapshots per level (see `isolation`):
//! - Read Committed: a new snapshot at every [`Transaction::begin_statement`].
//! - Monotonic Atomic View, Snapshot, Serializable: one snapshot, taken at
//!   begin.
//!
//! Serializable transactions record every key they read and every range
//! they scan (only the part a limited scan actually covered), so that
//! commit can check none of it changed.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use geodb_storage::{ColumnFamily, Durability, Engine, Timestamp, TxnId, WriteBatch, mvcc};

use crate::conflict::{ReadSet, WriteSet, range_contains};
use crate::log::{CommitLog, LocalLog};
use crate::shard::{CommitRequest, Shard};
use crate::{Clock, Error, Hlc, Isolation, Result, SystemClock};

/// Meta key of the next unreserved transaction id.
const META_NEXT_TXN_ID: &[u8] = b"txn/next_id";
/// Transaction ids reserved per durable write of [`META_NEXT_TXN_ID`]:
/// one sync per million transactions.
const TXN_ID_BLOCK: u64 = 1 << 20;
/// The default clock bound ε for a single node: nothing to compare with
/// yet, so only a sanity bound on timestamps from clients.
pub const MAX_CLOCK_OFFSET_NS_DEFAULT: u64 = 250_000_000;

struct TxnIds {
    next: u64,
    reserved_below: u64,
}

/// Begins transactions on a node's shard. Cheap to share (`Arc`).
pub struct TxnManager {
    shard: Shard,
    hlc: Arc<Hlc>,
    ids: Mutex<TxnIds>,
}

impl TxnManager {
    /// A manager over `engine` with the system clock.
    pub fn new(engine: Arc<dyn Engine>) -> Result<Arc<Self>> {
        Self::with_clock(engine, Box::new(SystemClock), MAX_CLOCK_OFFSET_NS_DEFAULT)
    }

    /// A manager over `engine` with an injected physical clock, committing
    /// to the engine itself (a single node).
    pub fn with_clock(engine: Arc<dyn Engine>, clock: Box<dyn Clock>, max_offset_ns: u64) -> Result<Arc<Self>> {
        let log = Arc::new(LocalLog::new(engine.clone()));
        Self::with_log(engine, clock, max_offset_ns, log)
    }

    /// A manager whose commits go through `log` (a shard's replicated log).
    pub fn with_log(
        engine: Arc<dyn Engine>,
        clock: Box<dyn Clock>,
        max_offset_ns: u64,
        log: Arc<dyn CommitLog>,
    ) -> Result<Arc<Self>> {
        let next = match engine.get(ColumnFamily::Meta, META_NEXT_TXN_ID)? {
            Some(bytes) => u64::from_be_bytes(
                bytes.as_slice().try_into().map_err(|_| geodb_storage::Error::Corrupt("next transaction id".into()))?,
            ),
            None => 1,
        };
        let hlc = Arc::new(Hlc::new(clock, max_offset_ns));
        let shard = Shard::open(engine, hlc.clone(), log)?;
        Ok(Arc::new(TxnManager { shard, hlc, ids: Mutex::new(TxnIds { next, reserved_below: next }) }))
    }

    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    pub fn hlc(&self) -> &Hlc {
        &self.hlc
    }

    pub fn engine(&self) -> &dyn Engine {
        self.shard.engine()
    }

    fn next_txn_id(&self) -> Result<TxnId> {
        let mut ids = self.ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if ids.next >= ids.reserved_below {
            // Reserve the next block durably first, so that ids are never
            // reused after a crash.
            let reserved_below = ids.next + TXN_ID_BLOCK;
            let mut batch = WriteBatch::new();
            batch.put(ColumnFamily::Meta, META_NEXT_TXN_ID.to_vec(), reserved_below.to_be_bytes().to_vec());
            self.engine().write(batch, Durability::Sync)?;
            ids.reserved_below = reserved_below;
        }
        let id = TxnId(ids.next);
        ids.next += 1;
        Ok(id)
    }

    /// Begins a transaction at `isolation`. A coordinated level first
    /// waits on the log's barrier: on a replicated shard only its leader,
    /// caught up with everything chosen, serves one.
    pub fn begin(self: &Arc<Self>, isolation: Isolation) -> Result<Transaction> {
        let coordinated = !isolation.is_highly_available();
        if coordinated {
            self.shard.log().barrier()?;
        }
        let id = self.next_txn_id()?;
        let (read_ts, epoch) = if coordinated {
            let (read_ts, epoch) = self.shard.acquire_snapshot(id)?;
            (read_ts, Some(epoch))
        } else {
            (self.shard.snapshot(), None)
        };
        Ok(Transaction {
            manager: self.clone(),
            id,
            isolation,
            read_ts,
            registered: coordinated,
            epoch,
            reads: ReadSet::default(),
            writes: WriteSet::new(),
            locked: HashSet::new(),
            deadline_ns: None,
        })
    }
}

/// A running transaction. See the module documentation.
pub struct Transaction {
    manager: Arc<TxnManager>,
    id: TxnId,
    isolation: Isolation,
    read_ts: Timestamp,
    /// Whether the shard keeps a snapshot for us (coordinated levels).
    registered: bool,
    /// The shard's leadership epoch the snapshot was taken in (coordinated).
    epoch: Option<u64>,
    reads: ReadSet,
    writes: WriteSet,
    locked: HashSet<Vec<u8>>,
    /// Physical-clock time (ns) after which reads fail with
    /// [`Error::StatementTimeout`]; set per statement.
    deadline_ns: Option<u64>,
}

impl Transaction {
    pub fn id(&self) -> TxnId {
        self.id
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The snapshot timestamp reads use now.
    pub fn read_ts(&self) -> Timestamp {
        self.read_ts
    }

    /// Whether the transaction has written (or locked) anything.
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty() || !self.locked.is_empty()
    }

    fn records_reads(&self) -> bool {
        self.isolation == Isolation::Serializable
    }

    /// Marks the start of a statement: Read Committed moves to the latest
    /// snapshot; the other levels keep theirs.
    pub fn begin_statement(&mut self) {
        if !self.isolation.has_transaction_snapshot() {
            self.read_ts = self.manager.shard.snapshot();
        }
    }

    /// Bounds the current statement: once the physical clock passes
    /// `timeout_ns` from now, reads fail with [`Error::StatementTimeout`]
    /// (checked at every read and scan, so a long statement stops within
    /// one storage call of its deadline). `None` removes the bound.
    pub fn set_statement_timeout(&mut self, timeout_ns: Option<u64>) {
        self.deadline_ns = timeout_ns.map(|timeout| self.manager.hlc.physical_now_ns().saturating_add(timeout));
    }

    fn check_deadline(&self) -> Result<()> {
        match self.deadline_ns {
            Some(deadline) if self.manager.hlc.physical_now_ns() >= deadline => Err(Error::StatementTimeout),
            _ => Ok(()),
        }
    }

    /// The value of `key`: this transaction's own write if it has one, else
    /// the committed value at its snapshot.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_deadline()?;
        if let Some(value) = self.writes.get(key) {
            return Ok(value.clone());
        }
        if self.records_reads() {
            self.reads.keys.insert(key.to_vec());
        }
        Ok(mvcc::get(self.manager.engine(), key, self.read_ts)?)
    }

    /// [`Transaction::get`] for `SELECT ... FOR UPDATE`: at the coordinated
    /// levels the key then conflicts as if this transaction wrote it, so a
    /// concurrent writer of it cannot also commit.
    pub fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.isolation.is_highly_available() {
            self.locked.insert(key.to_vec());
        }
        self.get(key)
    }

    /// The pairs within the bounds, in key order (descending if `reverse`),
    /// at most `limit` of them: committed data at the snapshot overlaid with
    /// this transaction's own writes.
    pub fn scan(
        &mut self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.check_deadline()?;
        let range = (start, end);
        if let (Bound::Included(start) | Bound::Excluded(start), Bound::Included(end) | Bound::Excluded(end)) =
            (&range.0, &range.1)
            && start > end
        {
            return Ok(Vec::new());
        }
        let own: Vec<(&Vec<u8>, &Option<Vec<u8>>)> =
            self.writes.iter().filter(|(key, _)| range_contains(&range, key)).collect();
        // Each own write can hide at most one stored pair, so fetching that
        // many more than the limit is enough to fill it after the overlay.
        let fetch = limit.map(|limit| limit.saturating_add(own.len()));
        let stored = mvcc::scan(
            self.manager.engine(),
            mvcc::bound_as_slice(&range.0),
            mvcc::bound_as_slice(&range.1),
            self.read_ts,
            reverse,
            fetch,
        )?;
        // If the fetch was cut short, own writes past its last key are not
        // comparable with the stored keys not fetched: leave them out.
        let horizon = match (fetch, stored.last()) {
            (Some(fetch), Some((last, _))) if stored.len() >= fetch => Some(last.clone()),
            _ => None,
        };
        let within = |key: &[u8]| match &horizon {
            None => true,
            Some(last) if reverse => key >= last.as_slice(),
            Some(last) => key <= last.as_slice(),
        };
        let mut merged: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (key, value) in own {
            if !within(key) {
                continue;
            }
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        let mut out: Vec<(Vec<u8>, Vec<u8>)> =
            if reverse { merged.into_iter().rev().collect() } else { merged.into_iter().collect() };
        let complete = match limit {
            Some(limit) if out.len() >= limit => {
                out.truncate(limit);
                false
            }
            _ => true,
        };
        if self.records_reads() {
            // Record what was actually covered: all of the range if the scan
            // ran to its end, else up to the last key returned.
            let covered = match (complete, out.last()) {
                (true, _) | (false, None) => range,
                (false, Some((last, _))) if reverse => (Bound::Included(last.clone()), range.1),
                (false, Some((last, _))) => (range.0, Bound::Included(last.clone())),
            };
            self.reads.ranges.push(covered);
        }
        Ok(out)
    }

    /// Buffers a write of `value` to `key`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.writes.insert(key, Some(value));
        Ok(())
    }

    /// Buffers a delete of `key`.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<()> {
        self.writes.insert(key, None);
        Ok(())
    }

    /// Commits: validates, persists and makes the writes visible atomically.
    /// Returns the commit timestamp (a read-only transaction "commits" at
    /// its snapshot). On a conflict nothing is applied and the error is
    /// retryable.
    pub fn commit(mut self) -> Result<Timestamp> {
        if !self.has_writes() {
            return Ok(self.read_ts);
        }
        let request = CommitRequest {
            txn: self.id,
            isolation: self.isolation,
            read_ts: self.read_ts,
            reads: &self.reads,
            writes: &self.writes,
            locked: &self.locked,
            epoch: self.epoch,
        };
        let outcome = self.manager.shard.commit(request);
        self.finish();
        outcome
    }

    /// Discards the transaction's writes.
    pub fn rollback(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if self.registered {
            self.registered = false;
            self.manager.shard.release(self.id, self.read_ts);
        }
        self.writes.clear();
        self.locked.clear();
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.finish();
    }
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("id", &self.id)
            .field("isolation", &self.isolation)
            .field("read_ts", &self.read_ts)
            .field("writes", &self.writes.len())
            .finish()
    }
}

// Sessions hand transactions between threads (and tasks).
const _: fn() = || {
    fn is_send<T: Send + 'static>() {}
    is_send::<Transaction>();
};
