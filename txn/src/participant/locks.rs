//! The lock table of one shard: who holds which keys, and what that blocks.
//!
//! Two kinds of holders:
//!
//! - **In flight**: a one-round commit or a prepare this leader validated
//!   and proposed, not yet applied. Only the proposing leader knows them;
//!   they are dropped when the proposal is refused or leadership is lost
//!   (the entry, if chosen after all, installs its locks again when it is
//!   applied).
//! - **Prepared**: a transaction whose `Prepare` entry was applied. Every
//!   replica holds the same prepared locks, rebuilt from the shard's
//!   durable prepare records after a restart or a snapshot.
//!
//! A holder write-locks the keys it writes or locked `FOR UPDATE` (at its
//! commit or prepare timestamp), and, when serializable and prepared or
//! preparing, read-locks the keys and ranges it read (R8). What each kind
//! of request must do about the locks of *other* transactions:
//!
//! | request | write lock at or below its timestamp | any other write lock | read lock |
//! |---|---|---|---|
//! | read at `read_ts` (R3) | wait | — | — |
//! | coordinated commit/prepare, key written (R7) | conflict | conflict | conflict |
//! | coordinated serializable, key read (R7) | conflict | conflict | — |
//! | highly available write | wait | wait | wait |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use geodb_storage::{Timestamp, TxnId};

use crate::conflict::range_contains;
use crate::protocol::{Changes, KeyRange};

/// One transaction's write lock on a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteLock {
    pub txn: TxnId,
    /// The commit timestamp (in flight) or prepare timestamp (prepared):
    /// the transaction's versions will be at or above it.
    pub ts: Timestamp,
}

/// What one transaction holds.
#[derive(Clone, Debug)]
struct Held {
    write_keys: Vec<Vec<u8>>,
    read_keys: Vec<Vec<u8>>,
    ranges: Vec<KeyRange>,
    prepared: bool,
}

/// Which stage a holder is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldKind {
    /// A one-round commit proposed, not yet applied.
    InFlightCommit,
    /// A prepare proposed, not yet applied.
    InFlightPrepare,
    /// A prepare applied: held on every replica until resolved.
    Prepared,
}

/// Why a request cannot go on now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Obstacle {
    /// Another transaction holds the key; a coordinated request aborts.
    Held { txn: TxnId, key: Vec<u8> },
}

/// The locks of one shard. See the module documentation.
#[derive(Debug, Default)]
pub struct LockTable {
    writes: BTreeMap<Vec<u8>, WriteLock>,
    reads: BTreeMap<Vec<u8>, BTreeSet<TxnId>>,
    ranges: Vec<(TxnId, KeyRange)>,
    held: HashMap<TxnId, Held>,
    /// Keys write-locked by a chain of one-round commits
    /// ([`LockTable::acquire_chained`]): their holders, in log order. The
    /// key's lock names the last of them; releasing any one leaves it
    /// locked, at the chain's lowest timestamp, until all are released.
    chains: BTreeMap<Vec<u8>, Vec<TxnId>>,
}

impl LockTable {
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn holds(&self, txn: TxnId) -> bool {
        self.held.contains_key(&txn)
    }

    pub fn is_prepared(&self, txn: TxnId) -> bool {
        self.held.get(&txn).is_some_and(|held| held.prepared)
    }

    /// Transactions holding locks, and whether each is prepared.
    pub fn holders(&self) -> impl Iterator<Item = (TxnId, bool)> + '_ {
        self.held.iter().map(|(txn, held)| (*txn, held.prepared))
    }

    /// Takes the locks of `changes` at `ts` (replacing what the transaction
    /// held before, so an applied prepare replaces its in-flight locks).
    /// The caller checked [`LockTable::conflict`] first, or is applying an
    /// entry a leader validated.
    pub fn acquire(&mut self, changes: &Changes, ts: Timestamp, kind: HoldKind) {
        self.release(changes.txn);
        let write_keys = changes.written_keys();
        for key in &write_keys {
            self.writes.insert(key.clone(), WriteLock { txn: changes.txn, ts });
        }
        // A one-round commit's timestamp is known: later commits land above
        // it anyway, so its reads need no locks. A prepared transaction's
        // commit timestamp is not known yet (R8).
        let (read_keys, ranges) = match kind {
            HoldKind::InFlightCommit => (Vec::new(), Vec::new()),
            HoldKind::InFlightPrepare | HoldKind::Prepared => {
                (changes.reads.keys.clone(), changes.reads.ranges.clone())
            }
        };
        let prepared = kind == HoldKind::Prepared;
        for key in &read_keys {
            self.reads.entry(key.clone()).or_default().insert(changes.txn);
        }
        for range in &ranges {
            self.ranges.push((changes.txn, range.clone()));
        }
        self.held.insert(changes.txn, Held { write_keys, read_keys, ranges, prepared });
    }

    /// Takes the in-flight write locks of a one-round commit at `ts` that
    /// follows, in the log, commits holding some of its keys
    /// ([`LockTable::conflict_except`]): a key keeps the lowest timestamp
    /// of the chain (a read at or above it waits for all of them) and is
    /// released with the last of them.
    pub fn acquire_chained(&mut self, changes: &Changes, ts: Timestamp) {
        let held: Vec<(Vec<u8>, WriteLock)> = changes
            .written_keys()
            .into_iter()
            .filter_map(|key| self.writes.get(&key).map(|lock| (key, *lock)))
            .filter(|(_, lock)| lock.txn != changes.txn)
            .collect();
        self.acquire(changes, ts, HoldKind::InFlightCommit);
        for (key, before) in held {
            let chain = self.chains.entry(key.clone()).or_insert_with(|| vec![before.txn]);
            chain.push(changes.txn);
            if let Some(lock) = self.writes.get_mut(&key) {
                lock.ts = lock.ts.min(before.ts);
            }
        }
    }

    /// Drops everything `txn` holds. Returns whether it held anything.
    pub fn release(&mut self, txn: TxnId) -> bool {
        let Some(held) = self.held.remove(&txn) else { return false };
        for key in held.write_keys {
            if let Some(chain) = self.chains.get_mut(&key) {
                chain.retain(|holder| *holder != txn);
                if let Some(last) = chain.last().copied() {
                    // The rest of the chain still holds the key, at the
                    // chain's lowest timestamp.
                    if let Some(lock) = self.writes.get_mut(&key)
                        && (lock.txn == txn || chain.contains(&lock.txn))
                    {
                        lock.txn = last;
                    }
                    if chain.len() == 1 {
                        self.chains.remove(&key);
                    }
                    continue;
                }
                self.chains.remove(&key);
            }
            if self.writes.get(&key).is_some_and(|lock| lock.txn == txn) {
                self.writes.remove(&key);
            }
        }
        for key in held.read_keys {
            if let Some(readers) = self.reads.get_mut(&key) {
                readers.remove(&txn);
                if readers.is_empty() {
                    self.reads.remove(&key);
                }
            }
        }
        if !held.ranges.is_empty() {
            self.ranges.retain(|(holder, _)| *holder != txn);
        }
        true
    }

    /// Drops every lock not yet applied (leadership lost). Returns the
    /// transactions dropped.
    pub fn release_in_flight(&mut self) -> Vec<TxnId> {
        let dropped: Vec<TxnId> = self.held.iter().filter(|(_, held)| !held.prepared).map(|(txn, _)| *txn).collect();
        for txn in &dropped {
            self.release(*txn);
        }
        dropped
    }

    /// A write lock of another transaction on `key` at or below `ts`: a
    /// read at `ts` must wait for it (R3).
    pub fn blocks_read(&self, key: &[u8], ts: Timestamp) -> Option<WriteLock> {
        self.writes.get(key).filter(|lock| lock.ts <= ts).copied()
    }

    /// The first write lock at or below `ts` inside `range` (R3).
    pub fn blocks_scan(&self, range: &KeyRange, ts: Timestamp) -> Option<WriteLock> {
        self.writes_in(range).find(|(_, lock)| lock.ts <= ts).map(|(_, lock)| *lock)
    }

    fn writes_in<'a>(&'a self, range: &KeyRange) -> impl Iterator<Item = (&'a Vec<u8>, &'a WriteLock)> + 'a {
        // `BTreeMap::range` panics on a range that ends before it starts
        // (or is empty between two equal excluded bounds): such a range
        // holds nothing.
        let empty = match (&range.0, &range.1) {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a > b || (a == b && !matches!(range, (Bound::Included(_), Bound::Included(_))))
            }
            _ => false,
        };
        let iter = if empty {
            None
        } else {
            Some(
                self.writes
                    .range::<[u8], _>((range.0.as_ref().map(Vec::as_slice), range.1.as_ref().map(Vec::as_slice))),
            )
        };
        iter.into_iter().flatten()
    }

    /// What keeps `changes` from committing now, if anything: another
    /// transaction's lock on a key it writes, or (serializable) a write lock
    /// on what it read. A coordinated request aborts on it (R7); a highly
    /// available write waits for it.
    pub fn conflict(&self, changes: &Changes) -> Option<Obstacle> {
        self.conflict_except(changes, &[])
    }

    /// [`LockTable::conflict`], ignoring the locks of `chained`: commits
    /// proposed just before this one, in order, which apply before it.
    pub fn conflict_except(&self, changes: &Changes, chained: &[TxnId]) -> Option<Obstacle> {
        let txn = changes.txn;
        let other = |holder: TxnId| holder != txn && !chained.contains(&holder);
        for key in changes.written_keys() {
            if let Some(lock) = self.writes.get(&key).filter(|lock| other(lock.txn)) {
                return Some(Obstacle::Held { txn: lock.txn, key });
            }
            if let Some(reader) = self.reads.get(&key).and_then(|readers| readers.iter().find(|r| other(**r))) {
                return Some(Obstacle::Held { txn: *reader, key });
            }
            if let Some((holder, _)) =
                self.ranges.iter().find(|(holder, range)| other(*holder) && range_contains(range, &key))
            {
                return Some(Obstacle::Held { txn: *holder, key });
            }
        }
        if changes.isolation == crate::Isolation::Serializable {
            for key in &changes.reads.keys {
                if let Some(lock) = self.writes.get(key).filter(|lock| other(lock.txn)) {
                    return Some(Obstacle::Held { txn: lock.txn, key: key.clone() });
                }
            }
            for range in &changes.reads.ranges {
                if let Some((key, lock)) = self.writes_in(range).find(|(_, lock)| other(lock.txn)) {
                    return Some(Obstacle::Held { txn: lock.txn, key: key.clone() });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isolation;
    use crate::protocol::Reads;

    fn changes(txn: u64, isolation: Isolation, writes: &[&[u8]], reads: &[&[u8]], ranges: Vec<KeyRange>) -> Changes {
        Changes {
            txn: TxnId(txn),
            isolation,
            read_ts: Timestamp::new(1, 0),
            writes: writes.iter().map(|key| (key.to_vec(), Some(b"v".to_vec()))).collect(),
            locked: Vec::new(),
            reads: Reads { keys: reads.iter().map(|key| key.to_vec()).collect(), ranges },
            guards: Vec::new(),
            routes: Vec::new(),
            moves: Vec::new(),
        }
    }

    fn range(from: &[u8], to: &[u8]) -> KeyRange {
        (Bound::Included(from.to_vec()), Bound::Excluded(to.to_vec()))
    }

    #[test]
    fn reads_wait_only_on_write_locks_at_or_below_their_timestamp() {
        let mut table = LockTable::default();
        table.acquire(
            &changes(1, Isolation::Snapshot, &[b"k"], &[], vec![]),
            Timestamp::new(10, 0),
            HoldKind::Prepared,
        );
        assert!(table.blocks_read(b"k", Timestamp::new(9, 0)).is_none());
        assert_eq!(table.blocks_read(b"k", Timestamp::new(10, 0)).unwrap().txn, TxnId(1));
        assert!(table.blocks_scan(&range(b"a", b"z"), Timestamp::new(11, 0)).is_some());
        assert!(table.blocks_scan(&range(b"l", b"z"), Timestamp::new(11, 0)).is_none());
        assert!(table.release(TxnId(1)));
        assert!(table.blocks_read(b"k", Timestamp::MAX).is_none() && table.is_empty());
    }

    #[test]
    fn prepared_serializable_reads_lock_out_writers_but_not_readers() {
        let mut table = LockTable::default();
        let reader = changes(1, Isolation::Serializable, &[b"w"], &[b"r"], vec![range(b"s", b"t")]);
        table.acquire(&reader, Timestamp::new(10, 0), HoldKind::Prepared);
        assert!(table.blocks_read(b"r", Timestamp::MAX).is_none());
        for key in [&b"r"[..], b"s5"] {
            let writer = changes(2, Isolation::Snapshot, &[key], &[], vec![]);
            assert_eq!(table.conflict(&writer), Some(Obstacle::Held { txn: TxnId(1), key: key.to_vec() }));
        }
        // Another serializable reader of the same key is fine; a reader of
        // the written key is not.
        assert_eq!(table.conflict(&changes(3, Isolation::Serializable, &[b"x"], &[b"r"], vec![])), None);
        assert!(table.conflict(&changes(3, Isolation::Serializable, &[b"x"], &[b"w"], vec![])).is_some());
        assert!(table.conflict(&changes(3, Isolation::Serializable, &[b"x"], &[], vec![range(b"v", b"x")])).is_some());
        // A transaction never conflicts with itself.
        assert_eq!(table.conflict(&reader), None);
    }

    #[test]
    fn leadership_loss_drops_only_what_is_in_flight() {
        let mut table = LockTable::default();
        table.acquire(
            &changes(1, Isolation::Snapshot, &[b"a"], &[], vec![]),
            Timestamp::new(1, 0),
            HoldKind::InFlightCommit,
        );
        table.acquire(&changes(2, Isolation::Snapshot, &[b"b"], &[], vec![]), Timestamp::new(2, 0), HoldKind::Prepared);
        assert_eq!(table.release_in_flight(), vec![TxnId(1)]);
        assert!(table.holds(TxnId(2)) && !table.holds(TxnId(1)));
    }
}
