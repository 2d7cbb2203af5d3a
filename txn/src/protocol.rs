//! What coordinators and participants say to each other, and what a
//! shard's log holds.
//!
//! A coordinator (a [`Transaction`](crate::Transaction) on its gateway)
//! sends [`Request`]s to the leader of a shard (or, for Read Committed
//! reads, to the local replica) and gets one [`Response`] each. A shard's
//! leader turns the requests that change state into [`Entry`]s of its
//! replicated log; every replica applies the same entries in the same order
//! (`participant`). Both travel as postcard bytes between nodes, with a
//! format byte in front of every encoded entry.
//!
//! The rules these messages implement are numbered in
//! `docs/design/transactions.md` (R1…R14).

use std::ops::Bound;

use geodb_storage::{Timestamp, TxnId};
use serde::{Deserialize, Serialize};

use crate::{Error, Isolation, Result};

/// A shard: one slice of the key space, ordered by one participant and
/// (on a cluster) replicated by one Multi-Paxos group of the same number.
pub type ShardId = u64;

/// A scanned key range.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// How a read sees the shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadMode {
    /// The newest applied version of each key, at whichever replica answers,
    /// ignoring locks (Read Committed). The replica answers only once it has
    /// applied a commit at or above `after`: the newest commit its gateway
    /// acknowledged at this shard, so a client reads what it wrote.
    Latest { after: Timestamp },
    /// The versions at `read_ts`, at the leader: waits on locks at or below
    /// it (R3). `barrier` asks the leader to confirm its leadership first
    /// (R4): the transaction's first read at this shard.
    At { read_ts: Timestamp, barrier: bool },
    /// The versions at `read_ts`, at any replica of a shard that closes
    /// timestamps (the global shard, R14), once that replica has applied a
    /// closed timestamp at or above `read_ts`: waits on locks at or below
    /// it (R3), never leaves the reader's region.
    Settled { read_ts: Timestamp },
}

impl ReadMode {
    /// The snapshot timestamp of a read at one (`None`: the newest applied).
    pub fn read_ts(&self) -> Option<Timestamp> {
        match self {
            ReadMode::Latest { .. } => None,
            ReadMode::At { read_ts, .. } | ReadMode::Settled { read_ts } => Some(*read_ts),
        }
    }
}

/// What a transaction read at one shard (serializable validation, R7/R8).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reads {
    /// Point keys, read present or absent.
    pub keys: Vec<Vec<u8>>,
    /// Scanned ranges (the part a limited scan covered).
    pub ranges: Vec<KeyRange>,
}

impl Reads {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.ranges.is_empty()
    }
}

/// One buffered write: the new value, or `None` for a delete.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// What a transaction asks one shard to commit or prepare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub txn: TxnId,
    pub isolation: Isolation,
    pub read_ts: Timestamp,
    /// Sorted by key, without duplicates.
    pub writes: Vec<Write>,
    /// Keys locked by `SELECT ... FOR UPDATE` (they conflict like writes).
    pub locked: Vec<Vec<u8>>,
    /// Serializable transactions: what they read at this shard.
    pub reads: Reads,
    /// Keys that must hold these values (the newest committed, and not
    /// locked by another transaction) for the commit to go on: the shard's
    /// schema guard, so nothing commits under a schema a DDL replaced.
    pub guards: Vec<Guard>,
    /// R18: the homes the writes and locks were routed by, one per
    /// locality key: the commit goes on only where each still lives here.
    pub routes: Vec<Route>,
    /// R18: the rows a rehome moves here (two-phase commits only).
    pub moves: Vec<Move>,
}

/// R18: a row a rehome moves to a new home from shard `from`, with the
/// version it moves (detached, `mvcc::encode_detached`): that version is
/// put there as it was (writer, origin, value or tombstone) at the
/// rehome's commit timestamp, so last writer wins by origin (R17) at the
/// new home as it would have at the old. Its siblings add the old home
/// (Monotonic Atomic View shows it only once the rest of its transaction,
/// which was written there with it, is shown there too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub key: Vec<u8>,
    pub version: Vec<u8>,
    pub from: ShardId,
}

impl Changes {
    /// R20: this part and `later` (a later prepare of the same transaction
    /// at the same shard) as one: every key read, locked or written by
    /// either (a value of `later` replacing one of this part), every guard
    /// and route of either, and `later`'s level (a transaction may turn
    /// serializable between statements).
    pub fn merged_with(&self, later: &Changes) -> Changes {
        let mut writes = later.writes.clone();
        for (key, value) in &self.writes {
            if !writes.iter().any(|(written, _)| written == key) {
                writes.push((key.clone(), value.clone()));
            }
        }
        writes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut locked: Vec<Vec<u8>> = self.locked.iter().chain(&later.locked).cloned().collect();
        locked.sort_unstable();
        locked.dedup();
        locked.retain(|key| writes.binary_search_by(|(written, _)| written.cmp(key)).is_err());
        let mut keys: Vec<Vec<u8>> = self.reads.keys.iter().chain(&later.reads.keys).cloned().collect();
        keys.sort_unstable();
        keys.dedup();
        let mut ranges = self.reads.ranges.clone();
        for range in &later.reads.ranges {
            if !ranges.contains(range) {
                ranges.push(range.clone());
            }
        }
        let mut guards = self.guards.clone();
        for guard in &later.guards {
            if !guards.contains(guard) {
                guards.push(guard.clone());
            }
        }
        let mut routes = self.routes.clone();
        for route in &later.routes {
            if !routes.contains(route) {
                routes.push(route.clone());
            }
        }
        let mut moves = self.moves.clone();
        moves.extend(later.moves.iter().filter(|moved| !self.moves.contains(moved)).cloned());
        Changes {
            txn: self.txn,
            isolation: later.isolation,
            read_ts: self.read_ts,
            writes,
            locked,
            reads: Reads { keys, ranges },
            guards,
            routes,
            moves,
        }
    }

    /// R20: whether a prepare of this part holds everything `part` asks of
    /// its shard, with `part`'s values the only thing left to send: every
    /// key `part` writes or locks is locked here, every read is held, every
    /// guard and route checked, at the same snapshot and level.
    pub fn covers(&self, part: &Changes) -> bool {
        let locked = self.written_keys();
        let holds = |keys: &[Vec<u8>], key: &Vec<u8>| keys.binary_search(key).is_ok();
        let mut read_keys = self.reads.keys.clone();
        read_keys.sort_unstable();
        self.read_ts == part.read_ts
            && self.isolation == part.isolation
            && part.moves.is_empty()
            && part.written_keys().iter().all(|key| holds(&locked, key))
            && part.reads.keys.iter().all(|key| holds(&read_keys, key))
            && part.reads.ranges.iter().all(|range| self.reads.ranges.contains(range))
            && part.guards.iter().all(|guard| self.guards.contains(guard))
            && part.routes.iter().all(|route| self.routes.contains(route))
    }

    /// Every key the transaction writes or locked, sorted, once each.
    pub fn written_keys(&self) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> =
            self.writes.iter().map(|(key, _)| key.clone()).chain(self.locked.iter().cloned()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// How a distributed transaction ended, as its record shard recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Commit(Timestamp),
    Abort,
}

/// R20: the values of a part prepared at its statement (whose prepare
/// locked its keys without them), carried by the decision to its shard:
/// the writes, and the shards the transaction wrote (Monotonic Atomic
/// View's siblings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    pub shard: ShardId,
    pub writes: Vec<Write>,
    pub participants: Vec<ShardId>,
}

/// R18: the home a request to a home shard was routed by, for one
/// locality key: the key's residence record there (a key every home shard
/// that held the locality key has) and the epoch of the home the
/// coordinator looked up. The shard serves the request only if the record
/// says the locality key lives here at that epoch ([`Residence`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Route {
    pub residence: Vec<u8>,
    pub epoch: u64,
}

impl Route {
    /// The route of a write no home decided (it needs none): every shard
    /// holds it at the first epoch.
    pub fn unrouted() -> Route {
        Route { residence: Vec::new(), epoch: crate::rpc::FIRST_EPOCH }
    }
}

/// R18: the value of a residence record: where the locality key lives from
/// that version on (its home and the home's shard). A home shard with no
/// record for a locality key holds it at [`crate::rpc::FIRST_EPOCH`] if it
/// holds it at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Residence {
    pub home: crate::rpc::Home,
    pub shard: ShardId,
}

impl Residence {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a residence always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<Residence> {
        postcard::from_bytes(bytes).ok()
    }
}

/// A schema guard: a shard's guard key and the schema version (its value;
/// `None` before the first DDL) a transaction planned with.
pub type Guard = (Vec<u8>, Option<Vec<u8>>);

/// A request to one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A read. With a `guard`, the shard first checks that the guard holds
    /// the expected version as the read sees it (at its snapshot, after
    /// waiting for a DDL holding it): a statement planned under another
    /// schema than the snapshot's is refused ([`Refusal::SchemaChanged`])
    /// rather than answered from an index or table the snapshot does not
    /// have.
    /// With a `route` (R18), the shard serves it only where the locality
    /// key lives here at the route's epoch as the read sees it; else it
    /// answers [`Refusal::Moved`] (it moved on) or waits for the move to
    /// arrive here (a read of the newest) or refuses it (a read at a
    /// snapshot older than the move).
    Get { txn: TxnId, key: Vec<u8>, mode: ReadMode, guard: Option<Guard>, route: Option<Route> },
    Scan {
        txn: TxnId,
        range: KeyRange,
        reverse: bool,
        limit: Option<usize>,
        mode: ReadMode,
        guard: Option<Guard>,
        route: Option<Route>,
        /// Answer [`Response::Versions`]: every key of the range with a
        /// version at the read's timestamp, tombstones included, with that
        /// version (what a rehome moves, R18).
        versions: bool,
    },
    /// A transaction whose only participant is this shard: validate, commit
    /// and apply in one round.
    CommitOne(Changes),
    /// Phase one of a distributed commit: validate and hold locks.
    Prepare {
        changes: Changes,
        /// The shard that records the decision (R9).
        record: ShardId,
        participants: Vec<ShardId>,
        /// R20: the transaction's prepares at this shard are numbered 1,
        /// 2, …; a later one extends the prepared part (its changes are
        /// merged in), a repeat of an earlier one answers the part as it is.
        round: u32,
        /// R20: prepared at a statement: the values of the keys locked
        /// come with the decision ([`Carried`]).
        values_follow: bool,
        /// R20: the transaction holds nothing prepared anywhere else, so
        /// this prepare may wait for a prepared transaction with an older
        /// snapshot instead of aborting (one that holds locks never waits:
        /// see R7).
        may_wait: bool,
    },
    /// At the record shard: record the decision (the first one wins, and
    /// with a commit the values it carries for parts prepared without
    /// them, R20) and resolve this shard's own part.
    Decide { txn: TxnId, decision: Decision, carried: Vec<Carried> },
    /// At any other participant: apply (or drop) a prepared transaction,
    /// with the values of a part prepared without them (R20).
    Resolve { txn: TxnId, decision: Decision, carried: Option<Carried> },
    /// At the record shard, from a participant whose prepared transaction
    /// waited too long: the recorded decision, recording `Abort` if there
    /// is none yet ([`Response::Decided`], or [`Response::Recovered`] when
    /// a decision was recorded already).
    Recover { txn: TxnId },
    /// R14, at any replica of a shard that closes timestamps: validate what
    /// a serializable transaction read there (R7, the keys and ranges of
    /// `changes.reads`) up to the closed timestamp the replica applied, and
    /// answer it ([`Response::Validated`]); the transaction then commits
    /// elsewhere at or below it. Waits until the replica closed
    /// `changes.read_ts` and `at_least` (a commit timestamp the
    /// transaction's other participants already imposed).
    ValidateSettled { changes: Changes, at_least: Timestamp },
    /// At the outbox of the coordinator's region: make a highly available
    /// transaction's writes durable in the region (one round, no lock
    /// waited on elsewhere) and queue each part for its home shard
    /// (`docs/design/transactions.md`, R16). Answered
    /// [`Response::Committed`] once chosen and applied there.
    Enqueue(Enqueued),
    /// At a home shard, from an outbox's leader: apply the queued entries
    /// `from` sent, in order, each exactly once ([`Response::Delivered`]).
    Deliver { from: ShardId, entries: Vec<Queued> },
    /// At any replica of an outbox: the writes it holds for keys in `range`
    /// that are not yet shipped (the newest of each key; `None` a delete),
    /// once the replica has applied an enqueue at or above `after` (the
    /// newest its gateway acknowledged, so a client reads what it wrote).
    /// `homes` are the home shards the read covers, each with the newest
    /// commit the gateway acknowledged there: a write this node's replica
    /// of its home shard holds a newer origin for is left out (R17), once
    /// that replica applied that commit.
    Pending { range: KeyRange, after: Timestamp, homes: Vec<(ShardId, Timestamp)> },
    /// Monotonic Atomic View in the region, at this node only
    /// ([`crate::view`]): the rows of `range` held by `shards` (this shard
    /// among them) and this region's queued writes at `outbox`, each key's
    /// newest version that exists for the reader (origin at or below
    /// `at_most`, queued, or of a transaction in `required`: one the reader
    /// already saw part of) and whose transaction's writes have all arrived
    /// at this node, or that is of a transaction in `required`; in key
    /// order (descending if `reverse`), at most `limit`. `after` holds, per
    /// shard, the newest commit the reader's gateway acknowledged there:
    /// the replicas read, and any whose answer depends on it, apply that
    /// much first. Answered [`Response::Viewed`].
    View {
        range: KeyRange,
        shards: Vec<ShardId>,
        reverse: bool,
        limit: Option<usize>,
        after: Vec<(ShardId, Timestamp)>,
        outbox: Option<ShardId>,
        at_most: Timestamp,
        required: Vec<TxnId>,
        guards: Vec<(ShardId, Guard)>,
    },
    /// R21, at the record shard, once every other participant is prepared:
    /// validate the record's own part and, in the same round, record the
    /// commit (at or above `floor`, the other parts' prepare timestamps)
    /// with the values it carries (R20), unless a decision is recorded
    /// already. Answered [`Response::Decided`] with the decision recorded
    /// first; a part that does not validate is refused and nothing is
    /// recorded. A copy may be sent again after a lost answer: only the
    /// copy that records the decision writes the part.
    CommitRecord { own: Changes, participants: Vec<ShardId>, floor: Timestamp, carried: Vec<Carried> },
}

/// A highly available transaction's writes, by the home shard each goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    pub txn: TxnId,
    /// The schema guard of the outbox shard (as for any commit).
    pub guards: Vec<Guard>,
    /// Home shard and its writes (sorted by key); shards in order, once each.
    pub parts: Vec<(ShardId, Vec<Write>)>,
    /// R18: per part, the home each write was routed by (one per write).
    pub routes: Vec<Vec<Route>>,
}

impl Enqueued {
    /// The writes as one change set, for the outbox's own sequencing.
    pub fn changes(&self) -> Changes {
        let mut writes: Vec<Write> = self.parts.iter().flat_map(|(_, writes)| writes.iter().cloned()).collect();
        writes.sort_by(|a, b| a.0.cmp(&b.0));
        writes.dedup_by(|a, b| a.0 == b.0);
        Changes {
            txn: self.txn,
            isolation: Isolation::ReadCommitted,
            read_ts: Timestamp::ZERO,
            writes,
            locked: Vec::new(),
            reads: Reads::default(),
            guards: self.guards.clone(),
            routes: Vec::new(),
            moves: Vec::new(),
        }
    }
}

/// One entry of an outbox queue: a transaction's writes to one home shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Position in the queue from its outbox to this home shard: 1, 2, …
    /// with no gap; a home shard applies only the next one.
    pub seq: u64,
    pub txn: TxnId,
    /// When the outbox committed it (its origin timestamp).
    pub ts: Timestamp,
    pub writes: Vec<Write>,
    /// The keys the transaction wrote at its other home shards, by shard
    /// (Monotonic Atomic View shows this part only once they arrived).
    pub siblings: Vec<(ShardId, Vec<u8>)>,
    /// R18: the home each write was routed by (one per write). A home
    /// shard the locality key moved away from refuses the entry, and the
    /// outbox sends those writes on to the new home ([`Entry::Reroute`]).
    pub routes: Vec<Route>,
}

impl Request {
    /// A short name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Get { .. } => "get",
            Request::Scan { .. } => "scan",
            Request::CommitOne(_) => "commit",
            Request::Prepare { .. } => "prepare",
            Request::Decide { .. } => "decide",
            Request::Resolve { .. } => "resolve",
            Request::Recover { .. } => "recover",
            Request::ValidateSettled { .. } => "validate",
            Request::Enqueue(_) => "enqueue",
            Request::Deliver { .. } => "deliver",
            Request::Pending { .. } => "pending",
            Request::View { .. } => "view",
            Request::CommitRecord { .. } => "commit-record",
        }
    }

    /// Whether serving the request relies on the clock bound ε: reads at a
    /// snapshot timestamp, and commits and prepares of coordinated
    /// transactions. A node whose clock is outside the bound refuses these
    /// (and only these: finishing transactions already prepared never
    /// waits on the clock).
    pub fn relies_on_clock_bound(&self) -> bool {
        match self {
            Request::Get { mode, .. } | Request::Scan { mode, .. } => mode.read_ts().is_some(),
            Request::CommitOne(changes)
            | Request::Prepare { changes, .. }
            | Request::CommitRecord { own: changes, .. } => !changes.isolation.is_highly_available(),
            Request::Decide { .. } | Request::Resolve { .. } | Request::Recover { .. } => false,
            Request::Enqueue(_) | Request::Deliver { .. } | Request::Pending { .. } | Request::View { .. } => false,
            Request::ValidateSettled { .. } => true,
        }
    }

    /// Whether the request reads at the leader (or writes): everything
    /// but a Read Committed read, which any replica answers.
    pub fn needs_leader(&self) -> bool {
        !matches!(
            self,
            Request::Get { mode: ReadMode::Latest { .. } | ReadMode::Settled { .. }, .. }
                | Request::Scan { mode: ReadMode::Latest { .. } | ReadMode::Settled { .. }, .. }
                | Request::ValidateSettled { .. }
                | Request::Pending { .. }
                | Request::View { .. }
        )
    }

    /// R19: the routes of the locality keys a request to a home shard
    /// serves its coordinator for (its traffic; a rehome's own reads of
    /// the versions it moves are not). A route may repeat.
    pub fn routes(&self) -> Vec<&Route> {
        match self {
            Request::Get { route, .. } | Request::Scan { route, versions: false, .. } => route.iter().collect(),
            Request::CommitOne(changes)
            | Request::Prepare { changes, .. }
            | Request::CommitRecord { own: changes, .. } => changes.routes.iter().collect(),
            Request::Deliver { entries, .. } => entries.iter().flat_map(|entry| &entry.routes).collect(),
            _ => Vec::new(),
        }
    }
}

/// Why a shard refused or could not answer a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Serialization failure (40001); nothing was applied.
    Conflict(String),
    /// A read's schema guard did not hold the version it was planned with
    /// (40001 unless the statement can be planned again).
    SchemaChanged { message: String, newest: Timestamp },
    /// This replica does not lead the shard; nothing was proposed.
    NotLeader { leader: Option<u64> },
    /// The shard cannot serve now (no quorum, overloaded, a lock held too
    /// long); nothing was applied.
    Unavailable(String),
    /// Proposed, but the outcome is unknown (the leader changed).
    OutcomeUnknown(String),
    /// The request's timestamp is too far ahead of this node's clock.
    ClockOffset { offset_ns: u64, bound_ns: u64 },
    /// R18: the locality key of `route` no longer lives here: it moved to
    /// `residence` (retryable once the coordinator looked its home up again).
    Moved { message: String, route: Route, residence: Residence },
    /// The storage engine failed.
    Storage(String),
    /// Malformed or impossible request.
    Invalid(String),
    /// This node's clock is outside the bound: it serves no coordinated work.
    ClockUnsynchronized { offset_ns: u64, bound_ns: u64 },
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Error {
        match refusal {
            Refusal::Conflict(message) => Error::Conflict(message),
            Refusal::SchemaChanged { message, newest } => Error::SchemaChanged { message, newest },
            Refusal::NotLeader { leader } => Error::NotLeader { leader },
            Refusal::Unavailable(message) => Error::Unavailable(message),
            Refusal::OutcomeUnknown(message) => Error::OutcomeUnknown(message),
            Refusal::ClockOffset { offset_ns, bound_ns } => Error::ClockOffset { offset_ns, bound_ns },
            Refusal::Moved { message, route, residence } => Error::Moved { message, route, residence },
            Refusal::Storage(message) => Error::Storage(geodb_storage::Error::Engine(message)),
            Refusal::Invalid(message) => Error::Invalid(message),
            Refusal::ClockUnsynchronized { offset_ns, bound_ns } => Error::ClockUnsynchronized { offset_ns, bound_ns },
        }
    }
}

impl From<&Error> for Refusal {
    fn from(error: &Error) -> Refusal {
        match error {
            Error::Conflict(message) => Refusal::Conflict(message.clone()),
            Error::SchemaChanged { message, newest } => {
                Refusal::SchemaChanged { message: message.clone(), newest: *newest }
            }
            Error::NotLeader { leader } => Refusal::NotLeader { leader: *leader },
            Error::Unavailable(message) => Refusal::Unavailable(message.clone()),
            Error::OutcomeUnknown(message) => Refusal::OutcomeUnknown(message.clone()),
            Error::ClockOffset { offset_ns, bound_ns } => {
                Refusal::ClockOffset { offset_ns: *offset_ns, bound_ns: *bound_ns }
            }
            Error::ClockUnsynchronized { offset_ns, bound_ns } => {
                Refusal::ClockUnsynchronized { offset_ns: *offset_ns, bound_ns: *bound_ns }
            }
            Error::Moved { message, route, residence } => {
                Refusal::Moved { message: message.clone(), route: route.clone(), residence: *residence }
            }
            Error::Storage(error) => Refusal::Storage(error.to_string()),
            Error::StatementTimeout | Error::Invalid(_) | Error::LimitExceeded(_) => {
                Refusal::Invalid(error.to_string())
            }
        }
    }
}

/// A shard's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Value(Option<Vec<u8>>),
    Rows(Vec<(Vec<u8>, Vec<u8>)>),
    /// A scan that asked for versions: each key with its version
    /// (detached, `mvcc::encode_detached`).
    Versions(Vec<(Vec<u8>, Vec<u8>)>),
    Committed(Timestamp),
    Prepared(Timestamp),
    /// The recorded decision (which may differ from the one asked for).
    Decided(Decision),
    /// [`Request::Recover`] of a recorded decision, with the values it
    /// carries for parts prepared without them (R20).
    Recovered {
        decision: Decision,
        carried: Vec<Carried>,
    },
    /// [`Request::ValidateSettled`]: nothing the transaction read there
    /// changed up to this closed timestamp, and nothing can at or below it.
    Validated(Timestamp),
    Resolved,
    Refused(Refusal),
    /// [`Request::Deliver`]: the home shard has applied its queue from the
    /// outbox through this position (maybe short of what was sent); every
    /// commit applied there is at or below `ts`.
    Delivered {
        through: u64,
        ts: Timestamp,
        /// R18: the next entry was not applied because a locality key it
        /// writes moved away (the route, and where it lives now): the
        /// outbox sends those writes on ([`Entry::Reroute`]).
        moved: Option<(u64, Route, Residence)>,
    },
    /// [`Request::Pending`]: key, value or delete, and for a write already
    /// shipped its home shard and a commit timestamp there at or above the
    /// one that applied it, in key order; for each home shard, the newest
    /// commit timestamp that applied entries shipped from this outbox, and
    /// the newest of a shipped write this outbox no longer shows; and the
    /// origin timestamp of the oldest entry still queued.
    Pending {
        writes: Vec<(Vec<u8>, Option<Vec<u8>>, Option<(ShardId, Timestamp)>)>,
        shipped: Vec<(ShardId, Timestamp)>,
        forgotten: Vec<(ShardId, Timestamp)>,
        oldest: Option<Timestamp>,
    },
    /// [`Request::View`]: the rows, and the transactions that wrote a
    /// version the view returned (deletes included) and also wrote other
    /// shards, or are still queued: the reader must see the rest of them on
    /// later reads.
    Viewed {
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        seen: Vec<TxnId>,
    },
}

impl Response {
    /// The refusal as an error, anything else as itself.
    pub fn into_result(self) -> Result<Response> {
        match self {
            Response::Refused(refusal) => Err(refusal.into()),
            other => Ok(other),
        }
    }
}

/// A prepared transaction as its participant holds it: durable in the
/// shard (so a restarted or new leader holds the same locks) until it is
/// resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    pub changes: Changes,
    pub prepare_ts: Timestamp,
    pub record: ShardId,
    pub participants: Vec<ShardId>,
    /// R20: which prepare of the transaction at this shard this is (1, 2,
    /// …; each later one holds everything the earlier ones did).
    pub round: u32,
    /// R20: the values of the keys locked arrive with the decision.
    pub values_follow: bool,
    /// R20: the timestamp the part's locks are held at: the first round's
    /// prepare timestamp (every later round's is above it, and so is the
    /// commit, so no version lands below the lock).
    pub locked_at: Timestamp,
}

/// Where a leader validated an entry it proposed (R15): its leadership,
/// and the last slot its shard had applied then. Everything it validated
/// against is that prefix plus its own proposals still in flight, which
/// the log holds in the slots after `base`, in order, unless a leader
/// change replaced some of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lineage {
    /// The proposing leader's ballot: round and node.
    pub ballot: (u64, u64),
    pub base: u64,
}

/// One command of a shard's replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A one-round commit: write the versions at `ts`.
    Commit { txn: TxnId, ts: Timestamp, writes: Vec<Write>, locked: Vec<Vec<u8>> },
    /// Hold the transaction's locks until it is resolved.
    Prepare(Prepared),
    /// Record the decision of a transaction this shard is the record of
    /// (unless one is recorded already), and resolve its part here.
    Decide { txn: TxnId, decision: Decision, carried: Vec<Carried> },
    /// Resolve a prepared transaction's part here.
    Resolve { txn: TxnId, decision: Decision, carried: Option<Carried> },
    /// R14: nothing commits at this shard at or below `ts` after this
    /// entry (its leader hands out no timestamp at or below it), so a
    /// replica that applied it serves reads at `ts` and below.
    Close { ts: Timestamp },
    /// At an outbox (R16): a highly available transaction's writes at `ts`,
    /// queued for their home shards (each part takes the next position of
    /// its queue as it is applied) and shown to the region's reads until
    /// shipped.
    Enqueue { txn: TxnId, ts: Timestamp, parts: Vec<(ShardId, Vec<Write>)>, routes: Vec<Vec<Route>> },
    /// At a home shard (R16): write a queued entry's versions at `ts` (this
    /// shard's timestamp, above `origin`), if it is the next of `from`'s
    /// queue here; a copy already applied, or one ahead of a gap, changes
    /// nothing. A key whose newest version has a newer origin than the
    /// entry's (its commit at the outbox) keeps it (R17: last writer wins),
    /// and this write of it is kept apart for MAV readers. The versions
    /// name `siblings`, the transaction's writes at its other home shards,
    /// and the keys kept apart.
    Deliver {
        from: ShardId,
        seq: u64,
        txn: TxnId,
        ts: Timestamp,
        origin: Timestamp,
        writes: Vec<Write>,
        siblings: Vec<(ShardId, Vec<u8>)>,
        routes: Vec<Route>,
    },
    /// At an outbox (R16): the home shard `dest` applied its queue through
    /// `through`, in commits at or below `ts`: those entries leave the
    /// queue and the region's reads.
    Shipped { dest: ShardId, through: u64, ts: Timestamp },
    /// At an outbox (R18): entry `seq` of `dest`'s queue writes keys of a
    /// locality key that moved away from `dest` (its writes routed by
    /// `route`): they leave that entry and are queued for the shard the key
    /// lives at now, at `residence`'s epoch. The rest of the entry stays.
    Reroute { dest: ShardId, seq: u64, route: Route, residence: Residence },
    /// R21, at the record shard: record `Commit(ts)` with `carried`, and
    /// write `own` (the record's own part, validated by the leader at its
    /// `prepare_ts`, at or below `ts`) with it, unless a decision is
    /// recorded already: then that decision stands and `own` is dropped.
    CommitRecord { own: Prepared, ts: Timestamp, carried: Vec<Carried> },
}

/// Format tag of an encoded [`Entry`]; bump on any change that makes
/// entries already written decode differently (a variant appended at the
/// end, as `Close` was, leaves them as they were).
const ENTRY_FORMAT: u8 = 7;

impl Entry {
    /// The entry as bytes (a command of the replicated log).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_FORMAT];
        postcard::to_io(self, &mut out).expect("entries always serialize");
        out
    }

    /// Reads what [`Entry::encode`] wrote; anything else is corrupt.
    pub fn decode(bytes: &[u8]) -> Result<Entry> {
        let corrupt = |what: String| Error::Storage(geodb_storage::Error::Corrupt(format!("log entry: {what}")));
        match bytes.split_first() {
            Some((&ENTRY_FORMAT, body)) => {
                let (entry, rest) = postcard::take_from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
                if !rest.is_empty() {
                    return Err(corrupt(format!("{} trailing bytes", rest.len())));
                }
                Ok(entry)
            }
            Some((format, _)) => Err(corrupt(format!("unknown format {format}"))),
            None => Err(corrupt("empty".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> Entry {
        Entry::Prepare(Prepared {
            changes: Changes {
                txn: TxnId(7),
                isolation: Isolation::Serializable,
                read_ts: Timestamp::new(10, 1),
                writes: vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)],
                locked: vec![b"c".to_vec()],
                reads: Reads {
                    keys: vec![b"d".to_vec()],
                    ranges: vec![(Bound::Included(b"e".to_vec()), Bound::Unbounded)],
                },
                guards: vec![(b"g".to_vec(), Some(b"1".to_vec()))],
                routes: vec![Route { residence: b"\x06k".to_vec(), epoch: 2 }],
                moves: vec![Move { key: b"a".to_vec(), version: vec![1, 2], from: 4 }],
            },
            prepare_ts: Timestamp::new(11, 0),
            record: 3,
            participants: vec![3, 4],
            round: 2,
            values_follow: true,
            locked_at: Timestamp::new(10, 5),
        })
    }

    #[test]
    fn an_entry_round_trips_and_every_truncation_is_refused() {
        let entry = entry();
        let bytes = entry.encode();
        assert_eq!(Entry::decode(&bytes).unwrap(), entry);
        for len in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..len]).is_err(), "a prefix of {len} bytes decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Entry::decode(&longer).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Entry::decode(&bytes);
        }
    }
}
