//! R16: a region's outbox and the queues it ships to home shards
//! (`docs/design/transactions.md`, "Highly available writes that never
//! leave the region").
//!
//! A highly available transaction that writes keys whose home shards
//! cannot commit within the coordinator's region commits instead at the
//! region's outbox, a shard whose voters are the region's zones: one
//! [`Entry::Enqueue`] makes the writes durable there and queues each home
//! shard's part at the next position of that shard's queue. The outbox's
//! leader ships each queue in order ([`Request::Deliver`]); a home shard
//! applies an entry only if it is the next of its queue
//! ([`Entry::Deliver`]: a durable high-water mark per outbox), so each is
//! applied exactly once however often it is sent, and answers how far it
//! got; the outbox then drops what was applied ([`Entry::Shipped`]).
//! Until then the region's reads see the queued writes ([`Shard::pending`]).
//!
//! Durable state, in the `locks` family (so snapshots carry it):
//!
//! ```text
//!  outbox  q<dest><seq>  a queued entry (`Queued`), big-endian ids
//!  outbox  s<dest>       what the queue shipped (`Shipped`): the position
//!                        through, the home shard's commit timestamp it was
//!                        applied by, and the newest mark dropped
//!  outbox  o<key>        the newest queued write of a key (`PendingWrite`),
//!                        kept after it shipped, marked with the home
//!                        shard's commit timestamp, until a later shipment
//!                        to that shard is [`MARKER_KEEP_NS`] newer
//!  outbox  m<dest><ts><key>  index of those marks, by home shard and time
//!  home    h<from>       the position of `from`'s queue applied through
//!  home    w<len><key><origin><txn>  a shipped write a newer one superseded
//!                        before it arrived (R17), kept for MAV readers
//! ```
//!
//! [`Entry::Enqueue`]: crate::protocol::Entry::Enqueue
//! [`Entry::Deliver`]: crate::protocol::Entry::Deliver
//! [`Entry::Shipped`]: crate::protocol::Entry::Shipped
//! [`Request::Deliver`]: crate::protocol::Request::Deliver

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;

use geodb_storage::{ColumnFamily, Engine, Timestamp, WriteBatch, mvcc};
use serde::{Deserialize, Serialize};

use super::{Proposal, Shard, State, decode, encode};
use crate::protocol::{Changes, Enqueued, Entry, KeyRange, Queued, Reads, Residence, Route, ShardId, Write};
use crate::{Isolation, Result};

/// Entries sent to a home shard in one [`crate::protocol::Request::Deliver`].
pub const DELIVER_ENTRIES_MAX: usize = 256;
/// Bytes of writes sent in one delivery (at least one entry goes, whatever its size).
pub const DELIVER_BYTES_MAX: usize = 1 << 20;

fn id_key(prefix: u8, id: u64) -> Vec<u8> {
    let mut key = vec![prefix];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn queue_key(dest: ShardId, seq: u64) -> Vec<u8> {
    let mut key = id_key(b'q', dest);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn shipped_key(dest: ShardId) -> Vec<u8> {
    id_key(b's', dest)
}

fn delivered_key(from: ShardId) -> Vec<u8> {
    id_key(b'h', from)
}

/// Where a home shard keeps a shipped write that a newer one of its key
/// superseded before it arrived (R17), for MAV readers that saw the rest of
/// its transaction: `w`, the key's length and the key, then its origin and
/// writer, so a key's are together in origin order.
pub(super) fn superseded_key(key: &[u8], origin: Timestamp, txn: crate::TxnId) -> Vec<u8> {
    let mut out = superseded_prefix(key);
    out.extend_from_slice(&origin.encode());
    out.extend_from_slice(&txn.0.to_be_bytes());
    out
}

fn superseded_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + key.len() + Timestamp::ENCODED_LEN + 8);
    out.push(b'w');
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

fn pending_key(key: &[u8]) -> Vec<u8> {
    let mut pending = b"o".to_vec();
    pending.extend_from_slice(key);
    pending
}

/// What a queue shipped: through which position, by home commits at or
/// below which timestamp, and the newest mark it dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Shipped {
    through: u64,
    ts: Timestamp,
    forgotten: Timestamp,
}

fn decode_position(bytes: &[u8]) -> Result<u64> {
    let position: [u8; 8] = bytes
        .try_into()
        .map_err(|_| crate::Error::Storage(geodb_storage::Error::Corrupt("an outbox queue position".into())))?;
    Ok(u64::from_be_bytes(position))
}

/// How long a shipped write stays readable at its outbox, by the home
/// shard's commit timestamps: well past the time the region's replica of
/// that shard takes to apply it, so that the region reads it from one or
/// the other (dropped only when a later shipment to the shard is this much
/// newer: never while the shard is out of reach).
pub const MARKER_KEEP_NS: u64 = 10_000_000_000;

/// The newest queued write of a key at an outbox, and the queue entry it
/// came in with (a newer one replaces it). Once shipped, `shipped` is the
/// home shard's commit timestamp at or above the commit that applied it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PendingWrite {
    dest: ShardId,
    seq: u64,
    /// The entry's commit at the outbox, and its writer (R17).
    origin: Timestamp,
    txn: crate::TxnId,
    value: Option<Vec<u8>>,
    shipped: Option<Timestamp>,
    /// The home it was routed by (R18).
    route: Route,
}

/// A write an outbox replica holds for a key: queued, or shipped to `dest`
/// and applied there by a commit at or below the timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRead {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    /// The home shard it is queued for, or was applied at.
    pub dest: ShardId,
    /// Its commit at the outbox, and its writer (R17).
    pub origin: Timestamp,
    pub txn: crate::TxnId,
    pub shipped: Option<(ShardId, Timestamp)>,
    /// The home it was routed by (R18): where the key lives now may differ
    /// from `dest` until the outbox requeues it.
    pub route: Route,
}

fn marker_key(dest: ShardId, ts: Timestamp, key: &[u8]) -> Vec<u8> {
    let mut marker = id_key(b'm', dest);
    marker.extend_from_slice(&ts.encode());
    marker.extend_from_slice(key);
    marker
}

/// One queue of an outbox, in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Queue {
    /// Applied at the home shard through this position (and dropped here).
    shipped: u64,
    /// ... by commits at or below this timestamp of the home shard.
    shipped_ts: Timestamp,
    /// The newest mark of a shipped write dropped (R16: a read of the home
    /// shard's replica needs at least this much of it).
    forgotten: Timestamp,
    /// Positions still queued, with their origin timestamps, oldest first.
    waiting: VecDeque<(u64, Timestamp)>,
}

impl Queue {
    fn last(&self) -> u64 {
        self.waiting.back().map_or(self.shipped, |(seq, _)| *seq)
    }
}

/// What an outbox holds for one home shard, for the shipper and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStatus {
    pub dest: ShardId,
    /// Applied at the home shard through this position.
    pub shipped: u64,
    /// The newest position queued.
    pub last: u64,
    /// The origin timestamp of the oldest entry not yet shipped.
    pub oldest: Option<Timestamp>,
}

/// What a home shard's leader made of one queued entry.
#[derive(Clone, Debug, PartialEq)]
pub enum DeliveryProposal {
    /// Applied here already (a copy sent again): nothing to propose.
    Applied,
    /// Proposed here and in flight.
    InFlight,
    /// Replicate this entry (its locks are held in flight).
    Entry(Entry),
    /// A key is locked by a transaction (prepared or in flight): try again
    /// once it resolves; the entry then commits above it.
    Blocked(crate::TxnId),
    /// R18: a locality key it writes (routed by the route) lives elsewhere
    /// now: not applied here; its outbox requeues those writes.
    Moved(Route, Residence),
}

/// What applying one slot did to the queues, before it is published.
#[derive(Default)]
pub(super) struct QueueChanges {
    /// Outbox: the last position handed out per queue in this slot.
    last: HashMap<ShardId, u64>,
    /// Outbox: queued keys' newest pending write in this slot.
    pending: HashMap<Vec<u8>, (ShardId, u64)>,
    /// Outbox: keys whose write this slot marked shipped.
    marked: HashSet<Vec<u8>>,
    /// Outbox: what each queue shipped, as of this slot.
    shipped: HashMap<ShardId, Shipped>,
    /// Home: applied-through per outbox, as of this slot.
    delivered: HashMap<ShardId, u64>,
    /// Outbox: entries queued, in order.
    queued: Vec<(ShardId, u64, Timestamp)>,
    /// Outbox: entries written or rewritten in this slot (R18: rerouted).
    rewritten: HashMap<(ShardId, u64), Queued>,
}

/// Reads every queue of an outbox and every high-water mark of a home shard.
pub(super) fn load(engine: &dyn Engine) -> Result<(BTreeMap<ShardId, Queue>, HashMap<ShardId, u64>)> {
    let mut queues: BTreeMap<ShardId, Queue> = BTreeMap::new();
    let mut delivered = HashMap::new();
    for (prefix, end) in [(b"h", b"i"), (b"q", b"r"), (b"s", b"t")] {
        for item in engine.scan(
            ColumnFamily::Locks,
            Bound::Included(prefix.as_slice()),
            Bound::Excluded(end.as_slice()),
            false,
        )? {
            let (key, bytes) = item?;
            let id = decode_position(key.get(1..9).unwrap_or_default())?;
            match prefix {
                b"h" => {
                    delivered.insert(id, decode_position(&bytes)?);
                }
                b"s" => {
                    let shipped: Shipped = decode(&bytes, "an outbox shipped position")?;
                    let queue = queues.entry(id).or_default();
                    queue.shipped = shipped.through;
                    queue.shipped_ts = shipped.ts;
                    queue.forgotten = shipped.forgotten;
                }
                _ => {
                    let queued: Queued = decode(&bytes, "an outbox queue entry")?;
                    queues.entry(id).or_default().waiting.push_back((queued.seq, queued.ts));
                }
            }
        }
    }
    Ok((queues, delivered))
}

impl Shard {
    /// Validates an enqueue at the outbox's leader (as a Read Committed
    /// commit of the writes: the schema guard, and no other transaction in
    /// flight on its keys) and returns its entry.
    pub fn propose_enqueue(&self, enqueued: &Enqueued) -> Result<Proposal> {
        Ok(match self.propose_commit(&enqueued.changes())? {
            Proposal::Entry(Entry::Commit { txn, ts, .. }) => Proposal::Entry(Entry::Enqueue {
                txn,
                ts,
                parts: enqueued.parts.clone(),
                routes: enqueued.routes.clone(),
            }),
            other => other,
        })
    }

    /// At a home shard's leader: what to do with entry `queued` of the queue
    /// from outbox `from`, proposed right after the entries of `chained`
    /// (earlier entries of the same delivery, whose locks it may follow). A
    /// copy of an entry in flight, or already applied, is not proposed
    /// again; any other is, even one an earlier leadership proposed (its
    /// copies are applied once, whatever the log chooses).
    pub fn propose_delivery(
        &self,
        from: ShardId,
        queued: &Queued,
        chained: &[crate::TxnId],
    ) -> Result<DeliveryProposal> {
        let mut state = self.state();
        if queued.seq <= state.delivered.get(&from).copied().unwrap_or(0) {
            return Ok(DeliveryProposal::Applied);
        }
        if state.locks.holds(queued.txn) {
            return Ok(DeliveryProposal::InFlight);
        }
        let changes = Changes {
            txn: queued.txn,
            isolation: Isolation::ReadCommitted,
            read_ts: Timestamp::ZERO,
            writes: queued.writes.clone(),
            locked: Vec::new(),
            reads: Reads::default(),
            guards: Vec::new(),
            routes: Vec::new(),
            moves: Vec::new(),
        };
        if !state.serving {
            return Err(crate::Error::NotLeader { leader: None });
        }
        // R18: a locality key that moved away takes its writes with it (the
        // outbox requeues them for its new home); one being rehomed is
        // waited for.
        if let Some(proposal) = self.delivery_route(&state, queued)? {
            return Ok(proposal);
        }
        if let Some(super::Obstacle::Held { txn, .. }) = state.locks.conflict_except(&changes, chained) {
            return Ok(DeliveryProposal::Blocked(txn));
        }
        // R17: above the entry's origin, so that every later write of its
        // keys here has a newer origin than it. An origin from a clock
        // further ahead of this one than the bound ε counts as this clock's
        // reading plus ε: a skewed outbox clock must not drag this shard's
        // timestamps (and every commit wait here) ahead with it.
        let bound = Timestamp::new(self.hlc.physical_now_ns().saturating_add(self.hlc.max_offset_ns()), 0);
        let origin = queued.ts.min(bound);
        state.floor = state.floor.max(origin);
        let ts = self.next_ts(&mut state);
        state.locks.acquire_chained(&changes, ts);
        // A proposal of an earlier leadership that was never applied here
        // leaves its timestamp in the log of recent commits: this one's
        // replaces it.
        if matches!(state.recent_txns.get(&queued.txn), Some((_, false))) {
            state.recent_txns.remove(&queued.txn);
            state.recent.retain(|record| record.txn != queued.txn);
        }
        let keys = changes.written_keys();
        Self::remember(&mut state, crate::conflict::CommitRecord { ts, txn: queued.txn, keys }, false);
        Ok(DeliveryProposal::Entry(Entry::Deliver {
            from,
            seq: queued.seq,
            txn: queued.txn,
            ts,
            origin,
            writes: queued.writes.clone(),
            siblings: queued.siblings.clone(),
            routes: queued.routes.clone(),
        }))
    }

    /// R18 for a queued entry at its home shard's leader: `None` if every
    /// locality key it writes lives here at the epoch it was routed by.
    fn delivery_route(&self, state: &State, queued: &Queued) -> Result<Option<DeliveryProposal>> {
        let mut routes: Vec<&Route> = queued.routes.iter().collect();
        routes.sort();
        routes.dedup();
        for route in routes {
            if let Some(lock) = state.locks.blocks_read(&route.residence, Timestamp::MAX) {
                return Ok(Some(DeliveryProposal::Blocked(lock.txn)));
            }
            match self.residing(route, Timestamp::MAX)? {
                super::Residing::Here => {}
                super::Residing::Moved(residence) => {
                    return Ok(Some(DeliveryProposal::Moved(route.clone(), residence)));
                }
                super::Residing::NotYet => {
                    return Err(crate::Error::Unavailable(format!(
                        "a locality key queued for shard {} is not yet rehomed here",
                        self.id
                    )));
                }
            }
        }
        Ok(None)
    }

    /// R18 at apply: whether an entry's writes all still live here (else it
    /// is not applied; its outbox requeues the moved ones).
    pub(super) fn delivery_fits(&self, routes: &[Route]) -> Result<bool> {
        for route in routes {
            if self.residing(route, Timestamp::MAX)? != super::Residing::Here {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The position of `from`'s queue this replica applied through.
    pub fn delivered_through(&self, from: ShardId) -> u64 {
        self.state().delivered.get(&from).copied().unwrap_or(0)
    }

    /// Every queue of this outbox replica.
    pub fn queues(&self) -> Vec<QueueStatus> {
        let state = self.state();
        state
            .queues
            .iter()
            .map(|(dest, queue)| QueueStatus {
                dest: *dest,
                shipped: queue.shipped,
                last: queue.last(),
                oldest: queue.waiting.front().map(|(_, ts)| *ts),
            })
            .collect()
    }

    /// Up to [`DELIVER_ENTRIES_MAX`] entries (and about
    /// [`DELIVER_BYTES_MAX`] bytes) of the queue to `dest` after position
    /// `after`, in order.
    pub fn queued(&self, dest: ShardId, after: u64) -> Result<Vec<Queued>> {
        let _reading = self.reading();
        let start = queue_key(dest, after.saturating_add(1));
        let end = id_key(b'q', dest.saturating_add(1));
        let mut entries = Vec::new();
        let mut bytes = 0;
        for item in self.scan_locks(Bound::Included(&start), Bound::Excluded(&end))? {
            let (_, value) = item?;
            bytes += value.len();
            entries.push(decode::<Queued>(&value, "an outbox queue entry")?);
            if entries.len() >= DELIVER_ENTRIES_MAX || bytes >= DELIVER_BYTES_MAX {
                break;
            }
        }
        Ok(entries)
    }

    /// For each queue, the home shard's newest commit that applied entries
    /// this replica no longer holds.
    pub fn shipped(&self) -> Vec<(ShardId, Timestamp)> {
        self.state().queues.iter().map(|(dest, queue)| (*dest, queue.shipped_ts)).collect()
    }

    /// For each queue, the newest home commit timestamp of a shipped write
    /// this replica no longer shows.
    pub fn forgotten(&self) -> Vec<(ShardId, Timestamp)> {
        self.state().queues.iter().map(|(dest, queue)| (*dest, queue.forgotten)).collect()
    }

    /// The origin and writer of `key`'s newest version at this replica
    /// (R17: compared as [`Shard::newer_origin`] compares them).
    pub fn newest_origin(&self, key: &[u8]) -> Result<Option<(Timestamp, crate::TxnId)>> {
        let _reading = self.reading();
        Ok(mvcc::latest_version(self.engine.as_ref(), key)?.map(|version| (version.origin, version.txn)))
    }

    /// The newest versions of `key` at this replica, newest first, at most
    /// `limit` of them.
    pub fn versions(&self, key: &[u8], limit: usize) -> Result<Vec<mvcc::Version>> {
        let _reading = self.reading();
        Ok(mvcc::versions_of(self.engine.as_ref(), key, limit)?)
    }

    /// Shipped writes of `key` that a newer write superseded before they
    /// arrived here (R17), kept for MAV readers, in origin order.
    pub fn superseded(&self, key: &[u8]) -> Result<Vec<mvcc::Version>> {
        let _reading = self.reading();
        let start = superseded_prefix(key);
        let mut end = start.clone();
        end.push(0xff);
        end.extend_from_slice(&[0xff; 20]);
        let mut out = Vec::new();
        for item in self.scan_locks(Bound::Included(&start), Bound::Excluded(&end))? {
            let (stored, bytes) = item?;
            if stored.len() == start.len() + Timestamp::ENCODED_LEN + 8 {
                out.push(mvcc::decode_detached(&bytes)?);
            }
        }
        Ok(out)
    }

    /// The keys in `range` this replica holds a version of, in key order.
    pub fn keys_in_range(&self, range: &KeyRange) -> Result<Vec<Vec<u8>>> {
        let _reading = self.reading();
        Ok(mvcc::keys_in_range(self.engine.as_ref(), mvcc::bound_as_slice(&range.0), mvcc::bound_as_slice(&range.1))?)
    }

    /// The newest write this region's outbox holds of each key in `range`
    /// (queued, or shipped and still kept), in key order.
    pub fn pending(&self, range: &KeyRange) -> Result<Vec<PendingRead>> {
        let _reading = self.reading();
        let start = match &range.0 {
            Bound::Included(key) => Bound::Included(pending_key(key)),
            Bound::Excluded(key) => Bound::Excluded(pending_key(key)),
            Bound::Unbounded => Bound::Included(b"o".to_vec()),
        };
        let end = match &range.1 {
            Bound::Included(key) => Bound::Included(pending_key(key)),
            Bound::Excluded(key) => Bound::Excluded(pending_key(key)),
            Bound::Unbounded => Bound::Excluded(b"p".to_vec()),
        };
        let mut writes = Vec::new();
        for item in self.scan_locks(mvcc::bound_as_slice(&start), mvcc::bound_as_slice(&end))? {
            let (key, bytes) = item?;
            let pending: PendingWrite = decode(&bytes, "an outbox pending write")?;
            let shipped = pending.shipped.map(|ts| (pending.dest, ts));
            writes.push(PendingRead {
                key: key[1..].to_vec(),
                value: pending.value,
                dest: pending.dest,
                origin: pending.origin,
                txn: pending.txn,
                shipped,
                route: pending.route,
            });
        }
        Ok(writes)
    }

    /// Applies an [`Entry::Enqueue`] into `batch`: each part at the next
    /// position of its queue, each write shown as pending.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_enqueue(
        &self,
        state: &State,
        changes: &mut QueueChanges,
        batch: &mut WriteBatch,
        txn: crate::TxnId,
        ts: Timestamp,
        parts: &[(ShardId, Vec<Write>)],
        routes: &[Vec<Route>],
    ) {
        for (index, (dest, writes)) in parts.iter().enumerate() {
            let last = match changes.last.get(dest) {
                Some(last) => *last,
                None => state.queues.get(dest).map_or(0, Queue::last),
            };
            let seq = last + 1;
            changes.last.insert(*dest, seq);
            changes.queued.push((*dest, seq, ts));
            let siblings = parts
                .iter()
                .filter(|(other, _)| other != dest)
                .flat_map(|(other, writes)| writes.iter().map(|(key, _)| (*other, key.clone())))
                .collect();
            // One route per write (an entry without them needs none).
            let routes = match routes.get(index) {
                Some(routes) if routes.len() == writes.len() => routes.clone(),
                _ => vec![Route::unrouted(); writes.len()],
            };
            let queued = Queued { seq, txn, ts, writes: writes.clone(), siblings, routes };
            batch.put(ColumnFamily::Locks, queue_key(*dest, seq), encode(&queued));
            for ((key, value), route) in writes.iter().zip(&queued.routes) {
                let pending = PendingWrite {
                    dest: *dest,
                    seq,
                    origin: ts,
                    txn,
                    value: value.clone(),
                    shipped: None,
                    route: route.clone(),
                };
                batch.put(ColumnFamily::Locks, pending_key(key), encode(&pending));
                changes.pending.insert(key.clone(), (*dest, seq));
            }
        }
    }

    /// Whether an [`Entry::Deliver`] of position `seq` from `from` is the
    /// next of its queue here; if so, records it as applied in `batch`.
    pub(super) fn apply_delivery(
        &self,
        state: &State,
        changes: &mut QueueChanges,
        batch: &mut WriteBatch,
        from: ShardId,
        seq: u64,
    ) -> bool {
        let through = match changes.delivered.get(&from) {
            Some(through) => *through,
            None => state.delivered.get(&from).copied().unwrap_or(0),
        };
        if seq != through + 1 {
            return false;
        }
        changes.delivered.insert(from, seq);
        batch.put(ColumnFamily::Locks, delivered_key(from), seq.to_be_bytes().to_vec());
        true
    }

    /// R17, last writer wins: whether `key`'s newest version (as of the
    /// writes of this slot so far, `origins`) is newer than a shipped write
    /// of it by `txn` with origin `origin`, which then writes nothing.
    /// Newer means a newer origin, or the same origin and a greater writer
    /// id (origins from two clocks can be equal: one total order keeps two
    /// home shards from applying two such writes in opposite orders).
    /// Every write here takes a timestamp above the origins of those before
    /// it, so the newest version carries the newest origin applied.
    pub(super) fn newer_origin(
        &self,
        origins: &HashMap<Vec<u8>, (Timestamp, crate::TxnId)>,
        key: &[u8],
        origin: Timestamp,
        txn: crate::TxnId,
    ) -> Result<bool> {
        if self.faults.overwrite_newer_origin {
            return Ok(false);
        }
        let newest = match origins.get(key) {
            Some(newest) => Some(*newest),
            None => mvcc::latest_version(self.engine.as_ref(), key)?.map(|version| (version.origin, version.txn)),
        };
        Ok(newest.is_some_and(|newest| newest > (origin, txn)))
    }

    /// The position of `from`'s queue applied through, counting this slot.
    pub(super) fn delivered_in(&self, state: &State, changes: &QueueChanges, from: ShardId) -> u64 {
        match changes.delivered.get(&from) {
            Some(through) => *through,
            None => state.delivered.get(&from).copied().unwrap_or(0),
        }
    }

    /// The queue entry (queue, position) of `key`'s newest pending write,
    /// as of the writes of this slot so far.
    fn newest_pending(&self, changes: &QueueChanges, key: &[u8]) -> Result<Option<(ShardId, u64)>> {
        if let Some(newest) = changes.pending.get(key) {
            return Ok(Some(*newest));
        }
        let Some(bytes) = self.engine.get(ColumnFamily::Locks, &pending_key(key))? else { return Ok(None) };
        let pending: PendingWrite = decode(&bytes, "an outbox pending write")?;
        Ok(Some((pending.dest, pending.seq)))
    }

    /// Applies an [`Entry::Shipped`] into `batch`: the queue's entries
    /// through `through` leave it, and so do their pending writes that no
    /// newer entry replaced.
    pub(super) fn apply_shipped(
        &self,
        state: &State,
        changes: &mut QueueChanges,
        batch: &mut WriteBatch,
        dest: ShardId,
        through: u64,
        ts: Timestamp,
    ) -> Result<()> {
        let before = match changes.shipped.get(&dest) {
            Some(shipped) => *shipped,
            None => state.queues.get(&dest).map_or(Shipped::default(), |queue| Shipped {
                through: queue.shipped,
                ts: queue.shipped_ts,
                forgotten: queue.forgotten,
            }),
        };
        let (shipped, shipped_ts) = (before.through, before.ts);
        if through <= shipped {
            return Ok(());
        }
        let ts = ts.max(shipped_ts);
        let start = queue_key(dest, shipped + 1);
        let end = queue_key(dest, through);
        for item in self.scan_locks(Bound::Included(&start), Bound::Included(&end))? {
            let (key, bytes) = item?;
            let queued: Queued = decode(&bytes, "an outbox queue entry")?;
            batch.delete(ColumnFamily::Locks, key);
            for (index, (written, value)) in queued.writes.iter().enumerate() {
                let newest = self.newest_pending(changes, written)?;
                if newest == Some((dest, queued.seq)) {
                    // Kept, marked, until the region's replica surely has it.
                    let route = queued.routes.get(index).cloned().unwrap_or_else(Route::unrouted);
                    let mark = PendingWrite {
                        dest,
                        seq: queued.seq,
                        origin: queued.ts,
                        txn: queued.txn,
                        value: value.clone(),
                        shipped: Some(ts),
                        route,
                    };
                    batch.put(ColumnFamily::Locks, pending_key(written), encode(&mark));
                    batch.put(ColumnFamily::Locks, marker_key(dest, ts, written), Vec::new());
                    changes.pending.remove(written);
                    changes.marked.insert(written.clone());
                }
            }
        }
        let forgotten = self.drop_old_marks(changes, batch, dest, ts)?.max(before.forgotten);
        let after = Shipped { through, ts, forgotten };
        batch.put(ColumnFamily::Locks, shipped_key(dest), encode(&after));
        changes.shipped.insert(dest, after);
        Ok(())
    }

    /// Applies an [`Entry::Reroute`] into `batch` (R18): the writes of entry
    /// `seq` of `dest`'s queue routed by `route` leave it and are queued for
    /// `residence`'s shard at its epoch, with their origin, writer and
    /// siblings (plus the writes that stay). Nothing happens if the entry
    /// is shipped already (its home shard applied it, so none of it had
    /// moved) or holds no such write any more (a copy of this entry
    /// applied before).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_reroute(
        &self,
        state: &State,
        changes: &mut QueueChanges,
        batch: &mut WriteBatch,
        dest: ShardId,
        seq: u64,
        route: &Route,
        residence: &Residence,
    ) -> Result<()> {
        let shipped = match changes.shipped.get(&dest) {
            Some(shipped) => shipped.through,
            None => state.queues.get(&dest).map_or(0, |queue| queue.shipped),
        };
        if seq <= shipped || residence.shard == dest && residence.home.epoch == route.epoch {
            return Ok(());
        }
        let mut queued: Queued = match changes.rewritten.get(&(dest, seq)) {
            Some(queued) => queued.clone(),
            None => match self.engine.get(ColumnFamily::Locks, &queue_key(dest, seq))? {
                Some(bytes) => decode(&bytes, "an outbox queue entry")?,
                None => return Ok(()),
            },
        };
        let (mut moving, mut staying) = (Vec::new(), Vec::new());
        for (write, write_route) in queued.writes.drain(..).zip(queued.routes.drain(..)) {
            if write_route == *route { moving.push((write, write_route)) } else { staying.push((write, write_route)) }
        }
        if moving.is_empty() {
            return Ok(());
        }
        let to = residence.shard;
        let last = match changes.last.get(&to) {
            Some(last) => *last,
            None => state.queues.get(&to).map_or(0, Queue::last),
        };
        let next = last + 1;
        changes.last.insert(to, next);
        changes.queued.push((to, next, queued.ts));
        let moved_route = Route { residence: route.residence.clone(), epoch: residence.home.epoch };
        let mut siblings = queued.siblings.clone();
        siblings.extend(staying.iter().map(|((key, _), _)| (dest, key.clone())));
        let rerouted = Queued {
            seq: next,
            txn: queued.txn,
            ts: queued.ts,
            writes: moving.iter().map(|(write, _)| write.clone()).collect(),
            siblings,
            routes: vec![moved_route; moving.len()],
        };
        batch.put(ColumnFamily::Locks, queue_key(to, next), encode(&rerouted));
        // The region's reads find each moved write under its new queue.
        for (key, value) in &rerouted.writes {
            let newest = self.newest_pending(changes, key)?;
            if newest == Some((dest, seq)) {
                let pending = PendingWrite {
                    dest: to,
                    seq: next,
                    origin: queued.ts,
                    txn: queued.txn,
                    value: value.clone(),
                    shipped: None,
                    route: rerouted.routes[0].clone(),
                };
                batch.put(ColumnFamily::Locks, pending_key(key), encode(&pending));
                changes.pending.insert(key.clone(), (to, next));
            }
        }
        queued.siblings.extend(rerouted.writes.iter().map(|(key, _)| (to, key.clone())));
        (queued.writes, queued.routes) = staying.into_iter().unzip();
        batch.put(ColumnFamily::Locks, queue_key(dest, seq), encode(&queued));
        changes.rewritten.insert((dest, seq), queued);
        changes.rewritten.insert((to, next), rerouted);
        Ok(())
    }

    /// Drops the marks of writes shipped to `dest` by commits more than
    /// [`MARKER_KEEP_NS`] older than `ts`, unless this slot wrote the key
    /// again or a newer write replaced the mark. Returns the newest mark
    /// dropped.
    fn drop_old_marks(
        &self,
        changes: &QueueChanges,
        batch: &mut WriteBatch,
        dest: ShardId,
        ts: Timestamp,
    ) -> Result<Timestamp> {
        let mut forgotten = Timestamp::ZERO;
        let cut = Timestamp { physical: ts.physical.saturating_sub(MARKER_KEEP_NS), logical: 0 };
        let (start, end) = (id_key(b'm', dest), marker_key(dest, cut, &[]));
        let key_at = start.len() + cut.encode().len();
        for item in self.scan_locks(Bound::Included(&start), Bound::Excluded(&end))? {
            let (marker, _) = item?;
            batch.delete(ColumnFamily::Locks, marker.clone());
            let written = &marker[key_at..];
            if changes.pending.contains_key(written) || changes.marked.contains(written) {
                continue;
            }
            let Some(bytes) = self.engine.get(ColumnFamily::Locks, &pending_key(written))? else { continue };
            let pending: PendingWrite = decode(&bytes, "an outbox pending write")?;
            let marked_at = Timestamp::decode(&marker[start.len()..key_at]);
            if pending.dest == dest && pending.shipped.is_some() && pending.shipped == marked_at {
                batch.delete(ColumnFamily::Locks, pending_key(written));
                forgotten = forgotten.max(marked_at.unwrap_or_default());
            }
        }
        Ok(forgotten)
    }

    /// Publishes what a slot did to the queues (after its batch is written).
    pub(super) fn publish_queues(state: &mut State, changes: QueueChanges) {
        for (dest, seq, ts) in changes.queued {
            state.queues.entry(dest).or_default().waiting.push_back((seq, ts));
        }
        for (dest, shipped) in changes.shipped {
            let queue = state.queues.entry(dest).or_default();
            queue.shipped = shipped.through;
            queue.shipped_ts = queue.shipped_ts.max(shipped.ts);
            queue.forgotten = queue.forgotten.max(shipped.forgotten);
            while queue.waiting.front().is_some_and(|(seq, _)| *seq <= shipped.through) {
                queue.waiting.pop_front();
            }
        }
        state.delivered.extend(changes.delivered);
    }

    /// Reloads the queues and high-water marks from the engine (after a
    /// snapshot restore).
    pub(super) fn reload_queues(&self, state: &mut State) -> Result<()> {
        let (queues, delivered) = load(self.engine.as_ref())?;
        state.queues = queues;
        state.delivered = delivered;
        Ok(())
    }
}
