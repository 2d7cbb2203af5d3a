//! The coordinator: beginning, running and committing transactions across
//! shards.
//!
//! A [`Transaction`] lives on the node the client talks to. It reads from
//! the shards that hold its keys ([`Router`], [`ShardRpc`]) and buffers its
//! writes; it reads its own writes. Nothing it writes is visible to anyone
//! until commit, and rolling back undoes nothing anywhere: before commit no
//! shard holds anything of it.
//!
//! Reads per level (`docs/design/transactions.md`):
//! - Read Committed: each key's newest applied version at the local
//!   replica (no timestamp, no lock, no leader).
//! - Monotonic Atomic View, Snapshot, Serializable: one snapshot at
//!   `read_ts = HLC.now()` (R1), read at each shard's leader; the first
//!   read at a shard confirms its leadership (R4).
//!
//! Commit: a transaction whose writes (and, serializable, reads) touch one
//! shard commits there in one round; otherwise two-phase commit with a
//! record shard (R9). Coordinated levels then wait out the clock bound
//! (R6) before answering.
//!
//! R20: a row read for writing ([`Transaction::get_for_write_async`]) at a
//! shard that commits outside this region is locked, and its shard
//! prepared, in the same round trip as the read; the commit then sends
//! that part's values with the decision (to a record shard in this region)
//! instead of preparing it across the wide area again.
//!
//! Every method exists twice: `async` (the simulator drives these on its
//! own executor) and blocking (the SQL layer's: [`crate::wait::block_on`]
//! around the async one, which waits through the program's hook only when
//! the answer is not there at once).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::wait::block_on;
use geodb_storage::{ColumnFamily, Durability, Engine, Timestamp, TxnId, WriteBatch};

use crate::conflict::range_contains;
use crate::protocol::{
    Carried, Changes, Decision, Guard, KeyRange, ReadMode, Reads, Refusal, Request, Response, Route, ShardId, Write,
};
use crate::rpc::{Home, Place, Router, RpcError, ShardRpc};
use crate::{Error, Hlc, Isolation, Result};

/// Meta key of the next unreserved transaction id counter.
const META_NEXT_TXN_ID: &[u8] = b"txn/next_id";
/// Transaction ids reserved per durable write of [`META_NEXT_TXN_ID`]:
/// one sync per million transactions.
const TXN_ID_BLOCK: u64 = 1 << 20;
/// R16: how long [`TxnManager::settle_enqueued`] waits for this node's
/// queued writes to reach their homes, and how often it looks.
pub const SETTLE_WAIT_MAX_NS: u64 = 5_000_000_000;
const SETTLE_POLL_NS: u64 = 5_000_000;
/// The most keys a highly available transaction committing at its region's
/// outbox may write across more than one home shard: each shipped write
/// names the transaction's writes at its other home shards (so Monotonic
/// Atomic View can tell when they have all arrived), which costs storage in
/// the square of this.
pub const SHIPPED_SIBLINGS_MAX: usize = 128;

/// Bits of a transaction id that count; the node id sits above them, so
/// ids are unique across the cluster.
pub const TXN_ID_COUNTER_BITS: u32 = 44;
/// The default clock bound ε for a single node: nothing to compare with
/// yet, so only a sanity bound on timestamps from clients.
pub const MAX_CLOCK_OFFSET_NS_DEFAULT: u64 = 250_000_000;
/// How long a request that is safe to repeat (reads, prepare, decide) is
/// retried while its shard has no leader or cannot be reached: longer
/// than a failover (about three election timeouts, then the new leader's
/// read-index round and wait of ε), so a leader change is a pause for
/// clients, not an error.
const RETRY_WINDOW_NS: u64 = 3_000_000_000;
/// First pause between attempts; doubles each time, up to the cap.
const RETRY_PAUSE_NS: u64 = 2_000_000;
const RETRY_PAUSE_MAX_NS: u64 = 100_000_000;
/// Attempts at recording a new home before giving up (each a serializable
/// transaction that loses only to another first writer of the same key).
const HOME_ATTEMPTS_MAX: u32 = 8;
/// R18: times a highly available commit refused for a stale home is routed
/// and sent again (each refusal means a rehome committed meanwhile).
const MOVED_ATTEMPTS_MAX: u32 = 4;

/// Test-only switches that plant coordinator bugs, to prove the simulator
/// catches them. Never set outside tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoordinatorFaults {
    /// Answer a commit without commit wait (R6).
    pub skip_commit_wait: bool,
    /// Drop what a serializable transaction only read at a shard that
    /// closes timestamps without validating it (R14).
    pub skip_settled_validation: bool,
    /// A rehome switches the key's home (directory and residence records)
    /// in one transaction and copies its rows in a second one (R18 does
    /// both in one).
    pub switch_home_before_copy: bool,
    /// R20: a part whose prepare at its statement was refused counts as
    /// prepared anyway (so the commit carries its values to a shard that
    /// holds nothing of it).
    pub ignore_early_refusal: bool,
}

struct TxnIds {
    next: u64,
    reserved_below: u64,
}

/// Begins transactions on a node. Cheap to share (`Arc`).
pub struct TxnManager {
    node: u64,
    hlc: Arc<Hlc>,
    rpc: Arc<dyn ShardRpc>,
    router: Arc<dyn Router>,
    /// Where id blocks are reserved durably; `None` when ids need not
    /// survive a restart (the simulator gives every incarnation its own).
    ids_engine: Option<Arc<dyn Engine>>,
    ids: Mutex<TxnIds>,
    /// The newest commit this node acknowledged at each shard: Read
    /// Committed reads at a replica wait until it applied as much, so a
    /// client reads its own writes through any replica.
    seen: Mutex<BTreeMap<ShardId, Timestamp>>,
    /// R16: the newest of this node's enqueues known shipped to its homes
    /// ([`TxnManager::settle_enqueued`]).
    settled: Mutex<Timestamp>,
    /// Whether coordinated commits wait out the clock bound (R6): on a
    /// cluster, where other nodes' clocks take snapshots; not on one node.
    commit_wait: bool,
    /// Told how long each commit waited after it was durable (see
    /// [`TxnManager::observe_commit_waits`]).
    commit_waited: OnceLock<CommitWaitObserver>,
    faults: CoordinatorFaults,
    /// R20: whether rows read for writing at shards that commit outside
    /// this region are prepared at their statement (on unless turned off,
    /// [`TxnManager::set_early_prepare`]).
    early_prepare: AtomicBool,
    /// The snapshots of this node's running transactions above Read
    /// Committed (each as it began: a snapshot only moves up): garbage
    /// collection on this node stays below the oldest
    /// ([`TxnManager::oldest_snapshot`]).
    running: Mutex<BTreeSet<(Timestamp, TxnId)>>,
}

/// Hears, per commit, its isolation level and how long its answer waited
/// for the clocks after the commit was durable.
pub type CommitWaitObserver = Box<dyn Fn(Isolation, Duration) + Send + Sync>;

/// How a [`TxnManager`] is built.
pub struct ManagerConfig {
    /// This node's id (the high bits of every transaction id it hands out).
    pub node: u64,
    pub hlc: Arc<Hlc>,
    pub rpc: Arc<dyn ShardRpc>,
    pub router: Arc<dyn Router>,
    /// Where transaction id blocks are reserved durably (the node's engine).
    pub ids_engine: Option<Arc<dyn Engine>>,
    /// The first id counter when `ids_engine` is `None`.
    pub first_id: u64,
    pub commit_wait: bool,
    pub faults: CoordinatorFaults,
}

/// The shard of a single node: the whole database.
pub const SINGLE_NODE_SHARD: ShardId = 1;

/// The key prefix of shard `shard`'s slice of a node's engine.
pub fn shard_prefix(shard: ShardId) -> Vec<u8> {
    let mut prefix = b"s".to_vec();
    prefix.extend_from_slice(&shard.to_be_bytes());
    prefix
}

impl TxnManager {
    /// The bugs planted in this manager's coordinators (tests only).
    pub(crate) fn faults(&self) -> CoordinatorFaults {
        self.faults
    }

    /// A single node over `engine` with the system clock: one local shard.
    pub fn new(engine: Arc<dyn Engine>) -> Result<Arc<Self>> {
        Self::with_clock(engine, Box::new(crate::SystemClock), MAX_CLOCK_OFFSET_NS_DEFAULT)
    }

    /// A single node over `engine` with an injected physical clock: one
    /// local shard ([`SINGLE_NODE_SHARD`]) committing to the engine itself,
    /// no commit wait (one clock).
    pub fn with_clock(engine: Arc<dyn Engine>, clock: Box<dyn crate::Clock>, max_offset_ns: u64) -> Result<Arc<Self>> {
        Ok(Self::single_node(engine, clock, max_offset_ns)?.0)
    }

    /// [`TxnManager::with_clock`], and the node's one shard.
    pub fn single_node(
        engine: Arc<dyn Engine>,
        clock: Box<dyn crate::Clock>,
        max_offset_ns: u64,
    ) -> Result<(Arc<Self>, Arc<crate::Shard>)> {
        Self::single_node_routed(engine, clock, max_offset_ns, Arc::new(crate::OneShard(SINGLE_NODE_SHARD)))
    }

    /// [`TxnManager::single_node`] with a router of the caller's (which
    /// places every key in [`SINGLE_NODE_SHARD`], and may name its schema
    /// guard).
    pub fn single_node_routed(
        engine: Arc<dyn Engine>,
        clock: Box<dyn crate::Clock>,
        max_offset_ns: u64,
        router: Arc<dyn Router>,
    ) -> Result<(Arc<Self>, Arc<crate::Shard>)> {
        let hlc = Arc::new(Hlc::new(clock, max_offset_ns));
        let view: Arc<dyn Engine> =
            Arc::new(geodb_storage::ScopedEngine::new(engine.clone(), shard_prefix(SINGLE_NODE_SHARD)));
        let shard = Arc::new(crate::Shard::open(SINGLE_NODE_SHARD, view, hlc.clone(), false)?);
        let manager = Self::with_config(ManagerConfig {
            node: 0,
            hlc,
            rpc: Arc::new(crate::LocalShards::new([shard.clone()])),
            router,
            ids_engine: Some(engine),
            first_id: 1,
            commit_wait: false,
            faults: CoordinatorFaults::default(),
        })?;
        Ok((manager, shard))
    }

    pub fn with_config(config: ManagerConfig) -> Result<Arc<Self>> {
        assert!(config.node < 1 << (64 - TXN_ID_COUNTER_BITS), "node id {} too large for transaction ids", config.node);
        let next = match &config.ids_engine {
            Some(engine) => match engine.get(ColumnFamily::Meta, META_NEXT_TXN_ID)? {
                Some(bytes) => u64::from_be_bytes(
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| geodb_storage::Error::Corrupt("next transaction id".into()))?,
                ),
                None => 1,
            },
            None => config.first_id.max(1),
        };
        let reserved_below = if config.ids_engine.is_some() { next } else { u64::MAX };
        Ok(Arc::new(TxnManager {
            node: config.node,
            hlc: config.hlc,
            rpc: config.rpc,
            router: config.router,
            ids_engine: config.ids_engine,
            ids: Mutex::new(TxnIds { next, reserved_below }),
            seen: Mutex::new(BTreeMap::new()),
            settled: Mutex::new(Timestamp::ZERO),
            commit_wait: config.commit_wait,
            commit_waited: OnceLock::new(),
            faults: config.faults,
            early_prepare: AtomicBool::new(true),
            running: Mutex::new(BTreeSet::new()),
        }))
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeSet<(Timestamp, TxnId)>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The snapshot of the oldest transaction running on this node, as it
    /// began (none running: `None`). Garbage collection here stays below
    /// it, so no transaction coordinated here finds its snapshot collected
    /// at this node's replicas.
    pub fn oldest_snapshot(&self) -> Option<Timestamp> {
        self.running().first().map(|(snapshot, _)| *snapshot)
    }

    /// R20: turns preparing at the statement on or off (for comparisons;
    /// on by default). Transactions already begun keep what they did.
    pub fn set_early_prepare(&self, on: bool) {
        self.early_prepare.store(on, Ordering::Relaxed);
    }

    /// Calls `observe` for every commit that may wait for the clocks once
    /// durable, with how long that wait is planned to be (zero when the
    /// clocks are already past): a coordinated commit's wait until
    /// every clock passes its timestamp (R6; the part the replication
    /// round did not already cover), or a highly available commit's wait
    /// for a timestamp ahead of this node's clock (R14). Set once; later
    /// calls are ignored.
    pub fn observe_commit_waits(&self, observe: CommitWaitObserver) {
        let _ = self.commit_waited.set(observe);
    }

    fn commit_waited(&self, isolation: Isolation, until_ns: u64) {
        if let Some(observe) = self.commit_waited.get() {
            let remaining = until_ns.saturating_sub(self.hlc.physical_now_ns());
            observe(isolation, Duration::from_nanos(remaining));
        }
    }

    pub fn hlc(&self) -> &Arc<Hlc> {
        &self.hlc
    }

    pub fn router(&self) -> &Arc<dyn Router> {
        &self.router
    }

    pub fn rpc(&self) -> &Arc<dyn ShardRpc> {
        &self.rpc
    }

    fn seen(&self, shard: ShardId) -> Timestamp {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&shard).copied().unwrap_or_default()
    }

    /// [`TxnManager::seen`] of every shard this node acknowledged a commit at.
    fn seen_everywhere(&self) -> Vec<(ShardId, Timestamp)> {
        let seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.iter().map(|(shard, ts)| (*shard, *ts)).collect()
    }

    fn saw(&self, shards: impl IntoIterator<Item = ShardId>, ts: Timestamp) {
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for shard in shards {
            let newest = seen.entry(shard).or_default();
            *newest = (*newest).max(ts);
        }
    }

    fn next_txn_id(&self) -> Result<TxnId> {
        let mut ids = self.ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if ids.next >= ids.reserved_below
            && let Some(engine) = &self.ids_engine
        {
            // Reserve the next block durably first, so that ids are never
            // reused after a crash.
            let reserved_below = ids.next + TXN_ID_BLOCK;
            let mut batch = WriteBatch::new();
            batch.put(ColumnFamily::Meta, META_NEXT_TXN_ID.to_vec(), reserved_below.to_be_bytes().to_vec());
            crate::wait::blocking(|| engine.write(batch, Durability::Sync))?;
            ids.reserved_below = reserved_below;
        }
        let counter = ids.next;
        assert!(counter < 1 << TXN_ID_COUNTER_BITS, "transaction id counter exhausted");
        ids.next += 1;
        Ok(TxnId(self.node << TXN_ID_COUNTER_BITS | counter))
    }

    /// R16: waits until this region's outbox has shipped to their home
    /// shards every write this node's coordinators committed there, and
    /// moves this node's clock past the commits that applied them: a
    /// transaction begun here next at a level that reads at the shards'
    /// leaders (snapshot, serializable, MAV) then sees them, as it sees
    /// this node's other commits. Gives up after [`SETTLE_WAIT_MAX_NS`]
    /// (an unreachable home) with a retryable error.
    pub async fn settle_enqueued(&self) -> Result<()> {
        let Some(outbox) = self.router.outbox() else { return Ok(()) };
        let enqueued = self.seen(outbox);
        if enqueued <= *self.settled.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            return Ok(());
        }
        let deadline = self.hlc.physical_now_ns().saturating_add(SETTLE_WAIT_MAX_NS);
        let nothing = (Bound::Included(Vec::new()), Bound::Excluded(Vec::new()));
        loop {
            let request = Request::Pending { range: nothing.clone(), after: enqueued, homes: Vec::new() };
            match call_repeatable(self, outbox, request).await? {
                Response::Pending { shipped, oldest, .. } if oldest.is_none_or(|oldest| oldest > enqueued) => {
                    for (_, ts) in shipped {
                        self.hlc.observe_past(ts);
                    }
                    let mut settled = self.settled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    *settled = (*settled).max(enqueued);
                    return Ok(());
                }
                Response::Pending { .. } => {}
                other => return Err(unexpected(outbox, &other)),
            }
            let now = self.hlc.physical_now_ns();
            if now >= deadline {
                return Err(Error::Unavailable(
                    "Read Committed writes this node committed are still queued for their home shards (is another region unreachable?); a transaction at this level would not see them"
                        .into(),
                ));
            }
            self.rpc.sleep_until(now.saturating_add(SETTLE_POLL_NS)).await;
        }
    }

    /// [`TxnManager::begin`], after [`TxnManager::settle_enqueued`] for a
    /// level that reads at leaders. Blocks: for callers outside async code.
    pub fn begin_settled(self: &Arc<Self>, isolation: Isolation) -> Result<Transaction> {
        if !isolation.is_highly_available() {
            block_on(self.settle_enqueued())?;
        }
        self.begin(isolation)
    }

    /// Begins a transaction at `isolation`. Nothing is sent anywhere yet.
    pub fn begin(self: &Arc<Self>, isolation: Isolation) -> Result<Transaction> {
        if !isolation.is_highly_available() {
            // Coordinated timestamps and commit wait rely on the clock bound.
            self.hlc.check_synchronized()?;
        }
        let id = self.next_txn_id()?;
        // R1: one snapshot timestamp for every shard.
        let read_ts = self.hlc.now();
        // Read Committed reads the newest version of every key, which
        // collection never takes: it holds nothing back.
        let began = (isolation != Isolation::ReadCommitted).then_some(read_ts);
        if let Some(began) = began {
            self.running().insert((began, id));
        }
        Ok(Transaction {
            manager: self.clone(),
            id,
            isolation,
            read_ts,
            began,
            confirmed: BTreeSet::new(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            locked: BTreeSet::new(),
            deadline_ns: None,
            cancel: None,
            schema: None,
            unhomed: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            required: BTreeSet::new(),
            placed: BTreeMap::new(),
            placed_routes: Vec::new(),
            early: BTreeMap::new(),
            created: BTreeMap::new(),
            record: None,
            doomed: None,
            deciding: AtomicBool::new(false),
            mutations: 0,
        })
    }

    /// The home of a locality key, creating it (in this node's region) if
    /// it has none: a serializable transaction of its own on the directory,
    /// so that two first writers of a key from two regions cannot both win
    /// (whatever the writers' own levels), and the home stands even if the
    /// writing transaction aborts (a home with no rows is harmless).
    /// Answers whether this call created it.
    async fn ensure_home(self: &Arc<Self>, locality: &[u8]) -> Result<(Home, bool)> {
        if let Some(home) = self.router.cached_home(locality) {
            return Ok((home, false));
        }
        let key = self.router.home_key(locality);
        let mut last = None;
        for _ in 0..HOME_ATTEMPTS_MAX {
            let mut txn = self.begin(Isolation::Serializable)?;
            let shard = match self.router.place(&key) {
                Place::Shard(shard) => shard,
                Place::Homed(_) => unreachable!("directory entries live in a shard of their own"),
            };
            let (home, created) = match txn.read_in(shard, &key).await? {
                Some(bytes) => (
                    Home::decode(&bytes).ok_or_else(|| {
                        Error::Storage(geodb_storage::Error::Corrupt("a directory entry of the homes".into()))
                    })?,
                    false,
                ),
                None => {
                    let home = self.router.new_home();
                    txn.put(key.clone(), home.encode())?;
                    match Box::pin(txn.commit_async()).await {
                        Ok(_) => (home, true),
                        Err(error) if error.is_retryable() => {
                            // Another first writer won: read its home.
                            last = Some(error);
                            continue;
                        }
                        Err(error) => return Err(error),
                    }
                }
            };
            self.router.learn_home(locality, home);
            return Ok((home, created));
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("could not record a home".into())))
    }
}

/// Where a transaction committed (the API's `X-GeoDB-Commit` headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommittedAt {
    /// It wrote (and locked) nothing: it "commits" at its snapshot.
    Nowhere,
    /// At the shards of the keys it wrote.
    Homes,
    /// At its region's outbox (R16), which ships each write to its home
    /// shard later.
    Outbox,
}

impl CommittedAt {
    /// Its name in the API.
    pub fn name(self) -> &'static str {
        match self {
            CommittedAt::Nowhere => "none",
            CommittedAt::Homes => "home",
            CommittedAt::Outbox => "outbox",
        }
    }
}

/// A commit: its timestamp, where it happened, and the shards that took
/// it (the outbox, for an outbox).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub ts: Timestamp,
    pub at: CommittedAt,
    pub shards: Vec<ShardId>,
}

impl Commit {
    /// The home regions of the shards that took it, by name, sorted.
    pub fn regions(&self, router: &dyn Router) -> Vec<String> {
        let mut regions: Vec<String> = self.shards.iter().filter_map(|shard| router.region_of(*shard)).collect();
        regions.sort();
        regions.dedup();
        regions
    }
}

/// A running transaction. See the module documentation.
pub struct Transaction {
    manager: Arc<TxnManager>,
    id: TxnId,
    isolation: Isolation,
    read_ts: Timestamp,
    /// The snapshot it began with: its entry in the manager's running set
    /// (none at Read Committed).
    began: Option<Timestamp>,
    /// Shards whose leadership a read of this transaction confirmed (R4).
    confirmed: BTreeSet<ShardId>,
    /// Serializable: what was read at each shard.
    reads: BTreeMap<ShardId, Reads>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    locked: BTreeSet<Vec<u8>>,
    /// Physical-clock time (ns) after which reads fail with
    /// [`Error::StatementTimeout`]; set per statement.
    deadline_ns: Option<u64>,
    /// Set by whoever may ask the running statement to stop (a PostgreSQL
    /// client's cancel request): once it is true, reads fail as past the
    /// deadline; the one who set it tells the two apart.
    cancel: Option<Arc<AtomicBool>>,
    /// The schema version the statements were planned with (checked at
    /// every shard the commit writes, against its guard).
    schema: Option<Option<Vec<u8>>>,
    /// Serializable: what was read of locality keys that had no home (so
    /// nothing stored anywhere), by locality key. If this transaction's
    /// commit creates the home, these become reads at the new home shard
    /// in place of the directory read (see [`Transaction::parts`]).
    unhomed: BTreeMap<Vec<u8>, Reads>,
    /// R16, Read Committed: per home shard, a commit timestamp there at or
    /// above every write this region's outbox shipped and no longer shows.
    forgotten: BTreeMap<ShardId, Timestamp>,
    /// Monotonic Atomic View: transactions this one saw a write of that
    /// wrote other shards too, or were still queued at the region's outbox;
    /// later reads see the rest of them ([`crate::view`]).
    required: BTreeSet<TxnId>,
    /// R18: writes placed at a given shard rather than routed (a rehome's
    /// copies, with the origins they keep, and deletes), and the routes
    /// those shards must still hold.
    placed: BTreeMap<(ShardId, Vec<u8>), Placed>,
    placed_routes: Vec<(ShardId, Route)>,
    /// R20: parts prepared at their statement, by shard.
    early: BTreeMap<ShardId, Early>,
    /// Homes of locality keys this transaction created by writing them
    /// first, once a prepare at a statement routed its writes (R20), so
    /// that the commit still validates its reads of them at their new home
    /// ([`Transaction::reads_to_validate`]).
    created: BTreeMap<Vec<u8>, ShardId>,
    /// R20: the record shard the first of them named (one that commits in
    /// this region): the decision is recorded there.
    record: Option<ShardId>,
    /// R20: why the transaction cannot commit (a prepare at a statement
    /// was refused, or its answer never came).
    doomed: Option<String>,
    /// R20: a `Decide(Commit)` was sent: from then on only the recorded
    /// decision resolves the parts prepared at their statement.
    deciding: AtomicBool,
    /// How many times a write, a lock or a prepare at a statement was added
    /// ([`Transaction::mutations`]).
    mutations: u64,
}

/// R20: which half of a read for writing failed.
enum EarlyFailure {
    Read(Error),
    Prepare(Error),
}

/// R20: a part prepared at a statement: its latest round, what that round
/// asked, and its prepare timestamp once answered.
struct Early {
    round: u32,
    changes: Changes,
    prepare_ts: Option<Timestamp>,
}

/// R18: a write placed at a shard (see [`Transaction::place`]): its value
/// (`None` a delete), or the version a rehome moves there from a shard.
type Placed = (Option<Vec<u8>>, Option<(Vec<u8>, ShardId)>);

/// What a serializable transaction read at shards that close timestamps,
/// validated at this node's replicas ([`Transaction::validate_settled`]):
/// the reads hold for a commit at or below `cap`.
struct Settled {
    cap: Timestamp,
    parts: Vec<(ShardId, Changes)>,
}

/// One participant's part of a commit.
struct Part {
    changes: Changes,
    writes_here: bool,
    /// R18: the route of each write (for an outbox's queue entry).
    write_routes: Vec<Route>,
}

impl Part {
    fn add_route(&mut self, route: Option<Route>) {
        if let Some(route) = route
            && !self.changes.routes.contains(&route)
        {
            self.changes.routes.push(route);
        }
    }
}

impl Transaction {
    pub fn id(&self) -> TxnId {
        self.id
    }

    /// A count that grows whenever the transaction adds anything its
    /// commit would write, lock or has prepared: equal counts mean nothing
    /// of the kind happened in between (reads may have). A session's
    /// `ROLLBACK TO SAVEPOINT` relies on it.
    pub fn mutations(&self) -> u64 {
        self.mutations
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The snapshot timestamp of the coordinated levels (for Read
    /// Committed, the time the transaction began).
    pub fn read_ts(&self) -> Timestamp {
        self.read_ts
    }

    /// Whether the transaction has written (or locked) anything.
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty() || !self.locked.is_empty() || !self.placed.is_empty()
    }

    fn records_reads(&self) -> bool {
        self.isolation == Isolation::Serializable
    }

    /// Marks the start of a statement. (Read Committed reads the newest
    /// committed version of every key anyway; the other levels keep their
    /// snapshot.)
    pub fn begin_statement(&mut self) {}

    /// Bounds the current statement: once the physical clock passes
    /// `timeout_ns` from now, reads fail with [`Error::StatementTimeout`]
    /// (checked at every read and scan). `None` removes the bound.
    pub fn set_statement_timeout(&mut self, timeout_ns: Option<u64>) {
        self.deadline_ns = timeout_ns.map(|timeout| self.manager.hlc.physical_now_ns().saturating_add(timeout));
    }

    /// Lets the statements of this transaction be stopped from elsewhere:
    /// while `cancel` is true, reads fail with [`Error::StatementTimeout`]
    /// (checked where the deadline is). The flag is the caller's to clear
    /// between statements. `None` removes it.
    pub fn set_statement_cancel(&mut self, cancel: Option<Arc<AtomicBool>>) {
        self.cancel = cancel;
    }

    fn check_deadline(&self) -> Result<()> {
        if self.cancel.as_ref().is_some_and(|cancel| cancel.load(Ordering::Relaxed)) {
            return Err(Error::StatementTimeout);
        }
        match self.deadline_ns {
            Some(deadline) if self.manager.hlc.physical_now_ns() >= deadline => Err(Error::StatementTimeout),
            _ => Ok(()),
        }
    }

    /// Plans statements against schema version `version` (the SQL layer's
    /// catalog token): every shard this transaction writes checks it at
    /// commit. A transaction whose writes were planned under another
    /// version cannot go on (unless it changed the schema itself:
    /// `changed_by_self`); nor can one whose snapshot was read under the
    /// old one (see [`Transaction::may_replan`]). Every read carries the
    /// version too, so a statement planned under a schema its snapshot
    /// does not have is refused at the shard ([`Error::SchemaChanged`]).
    pub fn set_schema(&mut self, version: Option<Vec<u8>>, changed_by_self: bool) -> Result<()> {
        match &self.schema {
            None => self.schema = Some(version),
            Some(first) if *first == version || changed_by_self => {}
            Some(_) if self.may_replan() => self.schema = Some(version),
            Some(_) => {
                return Err(Error::Conflict(format!(
                    "transaction {}: the schema changed between its statements",
                    self.id
                )));
            }
        }
        Ok(())
    }

    /// Whether a statement may be planned again under another schema: the
    /// transaction wrote nothing, and (unless it reads the newest data at
    /// every statement, Read Committed) read nothing of its snapshot yet.
    pub fn may_replan(&self) -> bool {
        !self.has_writes() && (self.isolation == Isolation::ReadCommitted || self.confirmed.is_empty())
    }

    /// Before planning a statement again after [`Error::SchemaChanged`]
    /// (only when [`Transaction::may_replan`]): forgets the schema and
    /// takes a new snapshot, which the clock puts after the DDL that
    /// changed it once this node has seen that DDL.
    pub fn renew_snapshot(&mut self) -> Result<()> {
        if !self.may_replan() {
            return Err(Error::Invalid("a transaction that read or wrote keeps its snapshot".into()));
        }
        if !self.isolation.is_highly_available() {
            // A new coordinated snapshot relies on the clock bound, as at BEGIN.
            self.manager.hlc.check_synchronized()?;
        }
        self.schema = None;
        self.read_ts = self.manager.hlc.now();
        self.reads.clear();
        self.unhomed.clear();
        Ok(())
    }

    /// Runs the rest of this transaction at Serializable (a DDL does: its
    /// backfill must conflict with concurrent writers of the table, which
    /// only serializable validation of its scans guarantees). A
    /// transaction that has neither read nor written takes a fresh
    /// snapshot; one that has keeps its snapshot, and its earlier reads
    /// keep the guarantees of the level they ran at.
    /// Refused while this node's clock is outside the bound, like BEGIN of
    /// a serializable transaction.
    pub fn escalate_to_serializable(&mut self) -> Result<()> {
        if self.isolation == Isolation::Serializable {
            return Ok(());
        }
        self.manager.hlc.check_synchronized()?;
        if !self.has_writes() && self.confirmed.is_empty() {
            self.read_ts = self.manager.hlc.now();
        }
        self.isolation = Isolation::Serializable;
        // Not undone by a session's `ROLLBACK TO SAVEPOINT`.
        self.mutations += 1;
        Ok(())
    }

    /// Whether this transaction wrote (or deleted) `key`.
    pub fn wrote(&self, key: &[u8]) -> bool {
        self.writes.contains_key(key)
    }

    /// The shard a read of `key` goes to: `None` for a locality key that
    /// has no home yet (so nothing of it is stored anywhere). Looking a
    /// home up reads the directory in this transaction (serializable
    /// validation sees a home created meanwhile).
    async fn route_read(&mut self, place: Place) -> Result<Option<Routed>> {
        match place {
            Place::Shard(shard) => Ok(Some((shard, None))),
            Place::Homed(locality) => {
                let router = self.manager.router.clone();
                if let Some(home) = router.cached_home(&locality) {
                    return Ok(Some(routed(router.as_ref(), home, &locality)));
                }
                let key = router.home_key(&locality);
                let shard = match router.place(&key) {
                    Place::Shard(shard) => shard,
                    Place::Homed(_) => unreachable!("directory entries live in a shard of their own"),
                };
                match self.read_in(shard, &key).await? {
                    Some(bytes) => {
                        let home = Home::decode(&bytes).ok_or_else(|| {
                            Error::Storage(geodb_storage::Error::Corrupt("a directory entry of the homes".into()))
                        })?;
                        if !self.isolation.is_highly_available() {
                            // Cached for every transaction of this node only
                            // when read at a timestamp: such a read is
                            // answered once every clock has passed the
                            // home's creation, so no transaction routed here
                            // by the cache can commit at the new home below
                            // a snapshot that found the key unhomed (R13).
                            // A Read Committed read does not wait, so it
                            // serves its own transaction only.
                            router.learn_home(&locality, home);
                        }
                        Ok(Some(routed(router.as_ref(), home, &locality)))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// Reads `key` at `shard` as this transaction's level reads, recording
    /// the read for serializable validation.
    pub(crate) async fn read_in(&mut self, shard: ShardId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read_routed(shard, key, None).await
    }

    /// [`Transaction::read_in`] of a key routed by its locality key's home.
    pub(crate) async fn read_routed(
        &mut self,
        shard: ShardId,
        key: &[u8],
        route: Option<Route>,
    ) -> Result<Option<Vec<u8>>> {
        let mode = self.mode_for(shard);
        let guard = self.read_guard(shard);
        let residence = route.as_ref().map(|route| route.residence.clone());
        let response = self.call(shard, Request::Get { txn: self.id, key: key.to_vec(), mode, guard, route }).await?;
        self.confirmed.insert(shard);
        if self.records_reads() {
            // R18: and the residence record it was routed by, so that a
            // rehome of the key after the snapshot fails this transaction's
            // validation (its reads here say nothing of writes at the new
            // home).
            let reads = self.reads.entry(shard).or_default();
            reads.keys.push(key.to_vec());
            reads.keys.extend(residence);
        }
        match response {
            Response::Value(value) => Ok(value),
            other => Err(unexpected(shard, &other)),
        }
    }

    /// The newest value of `key` as Read Committed reads it (this node's
    /// replica once it has applied what this node acknowledged), outside
    /// the transaction (not recorded, no lock): a cheap look, possibly
    /// behind other nodes' commits, for caches that commits check exactly.
    pub async fn peek_replica_async(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some((shard, route)) = self.route_read(self.manager.router.place(key)).await? else { return Ok(None) };
        let mode = ReadMode::Latest { after: self.manager.seen(shard) };
        let request = Request::Get { txn: self.id, key: key.to_vec(), mode, guard: None, route };
        match self.call(shard, request).await? {
            Response::Value(value) => Ok(value),
            other => Err(unexpected(shard, &other)),
        }
    }

    /// [`Transaction::peek_replica_async`], blocking.
    pub fn peek_replica(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        block_on(self.peek_replica_async(key))
    }

    /// The pairs of a range held by one shard, as [`Transaction::peek_replica`]
    /// reads them (the range must lie within one shard's keys).
    pub fn peek_replica_scan(&mut self, range: KeyRange) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        block_on(async {
            let places = self.manager.router.places_of_range(&range);
            let [place] = places.as_slice() else {
                return Err(Error::Invalid("a replica scan must stay within one shard".into()));
            };
            let Some((shard, route)) = self.route_read(place.clone()).await? else { return Ok(Vec::new()) };
            let mode = ReadMode::Latest { after: self.manager.seen(shard) };
            let request = Request::Scan {
                txn: self.id,
                range,
                reverse: false,
                limit: None,
                mode,
                guard: None,
                route,
                versions: false,
            };
            match self.call(shard, request).await? {
                Response::Rows(rows) => Ok(rows),
                other => Err(unexpected(shard, &other)),
            }
        })
    }

    /// Every shard's schema guard (see [`Router::guard_keys`]): a DDL writes
    /// its new schema version to all of them.
    pub fn guard_keys(&self) -> Vec<(ShardId, Vec<u8>)> {
        self.manager.router.guard_keys()
    }

    /// The schema guard a read at `shard` carries: the version this
    /// transaction planned with, once it has one.
    fn read_guard(&self, shard: ShardId) -> Option<Guard> {
        let version = self.schema.as_ref()?;
        let key = self.manager.router.guard_key(shard)?;
        Some((key, version.clone()))
    }

    fn mode_for(&self, shard: ShardId) -> ReadMode {
        match self.isolation {
            Isolation::ReadCommitted => {
                let forgotten = self.forgotten.get(&shard).copied().unwrap_or_default();
                ReadMode::Latest { after: self.manager.seen(shard).max(forgotten) }
            }
            // R14: complete at any replica that closed the snapshot.
            _ if self.manager.router.reads_settled(shard) => ReadMode::Settled { read_ts: self.read_ts },
            _ => ReadMode::At { read_ts: self.read_ts, barrier: !self.confirmed.contains(&shard) },
        }
    }

    /// R16: the writes of this region's highly available transactions in
    /// `range` of home shards `homes` its outbox still holds (the newest of
    /// each key, `None` a delete), which a Read Committed read sees over
    /// its home shard's replica: queued ones, and shipped ones this node's
    /// replica of their home may not have yet (unless this node
    /// acknowledged a commit there since, which the replica read waits
    /// for), but none that replica holds a newer write of (R17). Notes, per
    /// home shard, how far back the outbox may have forgotten shipped
    /// writes: the replica read waits for that much. Empty at other levels
    /// and where there is no outbox.
    async fn pending(&mut self, range: &KeyRange, homes: &[ShardId]) -> Result<Vec<crate::protocol::Write>> {
        let outbox = match self.manager.router.outbox() {
            Some(outbox) if self.isolation == Isolation::ReadCommitted => outbox,
            _ => return Ok(Vec::new()),
        };
        let homes = homes.iter().map(|home| (*home, self.manager.seen(*home))).collect();
        let request = Request::Pending { range: range.clone(), after: self.manager.seen(outbox), homes };
        match self.call(outbox, request).await? {
            Response::Pending { writes, forgotten, .. } => {
                for (shard, ts) in forgotten {
                    let floor = self.forgotten.entry(shard).or_default();
                    *floor = (*floor).max(ts);
                }
                Ok(writes
                    .into_iter()
                    .filter(|(_, _, shipped)| shipped.is_none_or(|(home, ts)| self.manager.seen(home) < ts))
                    .map(|(key, value, _)| (key, value))
                    .collect())
            }
            other => Err(unexpected(outbox, &other)),
        }
    }

    /// R18, Monotonic Atomic View: a locality key's rows are read at every
    /// home shard's replica at this node, not where the directory says they
    /// live. A view never leaves the node, so it must not depend on a
    /// directory replica that may lag the shards (or on a directory read at
    /// the snapshot, which misses a home created since by a transaction the
    /// reader requires); the view itself tells which shard holds the key's
    /// current history (`crate::view`).
    fn view_shards(&self, place: &Place) -> Option<Vec<ShardId>> {
        let Place::Homed(_) = place else { return None };
        let shards = self.manager.router.home_shards();
        (!shards.is_empty()).then_some(shards)
    }

    /// Monotonic Atomic View: the rows of `range` at `shards`, read at this
    /// node's replicas and its region's outbox ([`Request::View`]); notes
    /// the transactions seen whose other writes later reads must show.
    async fn view(
        &mut self,
        range: KeyRange,
        shards: Vec<ShardId>,
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(&first) = shards.first() else { return Ok(Vec::new()) };
        let outbox = self.manager.router.outbox();
        // Every shard's: a version the view finds may be of a transaction
        // this node committed whose writes at another shard must show too.
        let after = self.manager.seen_everywhere();
        let guards = shards.iter().filter_map(|shard| Some((*shard, self.read_guard(*shard)?))).collect();
        let required = self.required.iter().copied().collect();
        let at_most = self.read_ts;
        // A transaction that read keeps its snapshot (`may_replan`).
        self.confirmed.extend(shards.iter().copied());
        let request = Request::View { range, shards, reverse, limit, after, outbox, at_most, required, guards };
        match self.call(first, request).await? {
            Response::Viewed { rows, seen } => {
                self.required.extend(seen);
                Ok(rows)
            }
            other => Err(unexpected(first, &other)),
        }
    }

    /// Sends a request that is safe to repeat, retrying lost or unsent ones
    /// with backoff; refusals are errors.
    async fn call(&self, shard: ShardId, request: Request) -> Result<Response> {
        call_repeatable(&self.manager, shard, request).await
    }

    // --- reads ---------------------------------------------------------------

    /// The value of `key`: this transaction's own write if it has one, else
    /// the committed value its level reads.
    pub async fn get_async(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_deadline()?;
        if let Some(value) = self.writes.get(key) {
            return Ok(value.clone());
        }
        let place = self.manager.router.place(key);
        if self.isolation == Isolation::MonotonicAtomicView {
            let range = (Bound::Included(key.to_vec()), Bound::Included(key.to_vec()));
            let shards = match self.view_shards(&place) {
                Some(shards) => shards,
                None => match self.route_read(place).await? {
                    Some((shard, _)) => vec![shard],
                    None => return Ok(None),
                },
            };
            return Ok(self.view(range, shards, false, None).await?.pop().map(|(_, value)| value));
        }
        match self.route_read(place.clone()).await? {
            Some((shard, route)) => {
                if self.manager.router.queued_through_outbox(shard) {
                    let range = (Bound::Included(key.to_vec()), Bound::Included(key.to_vec()));
                    if let Some((_, value)) = self.pending(&range, &[shard]).await?.pop() {
                        return Ok(value);
                    }
                }
                self.read_routed(shard, key, route).await
            }
            None => {
                self.note_unhomed(place, key);
                Ok(None)
            }
        }
    }

    /// [`Transaction::get_async`] for `SELECT ... FOR UPDATE`: at the
    /// coordinated levels the key then conflicts as if this transaction
    /// wrote it, so a concurrent writer of it cannot also commit.
    pub async fn get_for_update_async(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.isolation.is_highly_available() {
            self.locked.insert(key.to_vec());
            self.mutations += 1;
        }
        self.get_async(key).await
    }

    /// The value of `key` for a statement that will write it (an `UPDATE`
    /// or `DELETE` of one row by its key). At Snapshot and Serializable,
    /// when the key's shard commits outside this region, the key is locked
    /// and the shard prepared in the same round trip as the read (R20): the
    /// commit then carries this part's values with its decision instead
    /// of preparing it across the wide area again. Anywhere else it is
    /// [`Transaction::get_async`].
    pub async fn get_for_write_async(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.prepares_early() || self.writes.contains_key(key) {
            return self.get_async(key).await;
        }
        self.check_deadline()?;
        let place = self.manager.router.place(key);
        let Some((shard, route)) = self.route_read(place.clone()).await? else {
            self.note_unhomed(place, key);
            return Ok(None);
        };
        let router = &self.manager.router;
        // Not at the directory's shard either: a home's creation (a
        // transaction of its own, which its parent waits for) commits there
        // and may wait for a prepared transaction, which must then hold no
        // part prepared at a statement there (R7).
        let directory = || matches!(router.place(&router.home_key(&[])), Place::Shard(at) if at == shard);
        if router.commits_in_region(shard) || router.reads_settled(shard) || directory() {
            return self.read_routed(shard, key, route).await;
        }
        let newly_locked = self.locked.insert(key.to_vec());
        self.mutations += 1;
        let (mut parts, created) = self.parts_creating().await?;
        self.created = created;
        let Some(record) = self.record_shard(shard, &parts) else {
            // No shard of this region to record a decision: read as any other.
            if newly_locked {
                self.locked.remove(key);
            }
            return self.read_routed(shard, key, route).await;
        };
        let Some(part) = parts.remove(&shard) else {
            return Err(Error::Invalid(format!("key locked for writing has no part at its shard {shard}")));
        };
        // Every key written here so far is locked; its value comes with the
        // decision. The row about to be read is read as of this prepare.
        let mut changes = part.changes;
        changes.locked = changes.written_keys();
        changes.writes.clear();
        if self.records_reads() {
            changes.reads.keys.push(key.to_vec());
            changes.reads.keys.extend(route.as_ref().map(|route| route.residence.clone()));
        }
        let round = self.early.get(&shard).map_or(1, |early| early.round + 1);
        // Holding nothing prepared anywhere yet, it may wait for an older
        // prepared transaction instead of aborting (R7).
        let may_wait = self.early.is_empty();
        self.early.insert(shard, Early { round, changes: changes.clone(), prepare_ts: None });
        self.mutations += 1;
        self.record = Some(record);
        let request =
            Request::Prepare { changes, record, participants: Vec::new(), round, values_follow: true, may_wait };
        let manager = self.manager.clone();
        let ignore_refusal = self.manager.faults.ignore_early_refusal;
        let read_ts = self.read_ts;
        // The read and the prepare travel together; whichever fails first
        // ends the statement (a refused prepare need not wait for a read
        // blocked behind the lock that refused it).
        let prepare = async move {
            match call_repeatable(&manager, shard, request).await {
                Ok(Response::Prepared(ts)) => Ok(ts),
                _ if ignore_refusal => Ok(read_ts),
                Ok(other) => Err(EarlyFailure::Prepare(unexpected(shard, &other))),
                Err(error) => Err(EarlyFailure::Prepare(error)),
            }
        };
        let read = async { self.read_routed(shard, key, route).await.map_err(EarlyFailure::Read) };
        match futures::future::try_join(read, prepare).await {
            Ok((value, ts)) => {
                if let Some(early) = self.early.get_mut(&shard) {
                    early.prepare_ts = Some(ts);
                }
                Ok(value)
            }
            // The read failed first: whether the prepare was taken is not
            // known, so nothing of it may be counted on (the transaction's
            // end resolves it).
            Err(EarlyFailure::Read(error)) => {
                self.doomed = Some(format!("its read at shard {shard} failed beside a prepare there: {error}"));
                Err(error)
            }
            Err(EarlyFailure::Prepare(error)) => {
                self.doomed = Some(format!("its prepare at shard {shard} failed: {error}"));
                Err(error)
            }
        }
    }

    /// R20: how many shards hold a part of this transaction prepared at
    /// its statements.
    pub fn prepared_early(&self) -> usize {
        self.early.len()
    }

    /// R20: whether this transaction may prepare a part at its statement.
    fn prepares_early(&self) -> bool {
        self.manager.early_prepare.load(Ordering::Relaxed)
            && matches!(self.isolation, Isolation::Snapshot | Isolation::Serializable)
            && self.placed.is_empty()
            && self.doomed.is_none()
    }

    /// R20: the record shard for a transaction preparing a part at `far`:
    /// the one named already, else a shard that commits in this region,
    /// one it writes if any, else the first such home shard. `None` if
    /// this region has none (then nothing is prepared early).
    fn record_shard(&self, far: ShardId, parts: &BTreeMap<ShardId, Part>) -> Option<ShardId> {
        if let Some(record) = self.record {
            return Some(record);
        }
        let router = &self.manager.router;
        let written = parts.iter().find(|(shard, part)| {
            **shard != far && part.writes_here && router.commits_in_region(**shard) && !router.reads_settled(**shard)
        });
        written.map(|(shard, _)| *shard).or_else(|| {
            router.home_shards().into_iter().find(|shard| router.commits_in_region(*shard) && *shard != far)
        })
    }

    /// A read of a locality key that has no home: nothing is stored, and a
    /// serializable transaction notes the read for its validation.
    fn note_unhomed(&mut self, place: Place, key: &[u8]) {
        if let (true, Place::Homed(locality)) = (self.records_reads(), place) {
            self.unhomed.entry(locality).or_default().keys.push(key.to_vec());
        }
    }

    /// The pairs within the bounds, in key order (descending if `reverse`),
    /// at most `limit` of them: committed data overlaid with this
    /// transaction's own writes, merged across the shards the range spans.
    pub async fn scan_async(
        &mut self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.check_deadline()?;
        let range: KeyRange = (start, end);
        if let (Bound::Included(start) | Bound::Excluded(start), Bound::Included(end) | Bound::Excluded(end)) =
            (&range.0, &range.1)
            && start > end
        {
            return Ok(Vec::new());
        }
        let mut shards = Vec::new();
        let mut routes: Vec<(ShardId, Route)> = Vec::new();
        for place in self.manager.router.places_of_range(&range) {
            if self.isolation == Isolation::MonotonicAtomicView
                && let Some(homes) = self.view_shards(&place)
            {
                for shard in homes {
                    if !shards.contains(&shard) {
                        shards.push(shard);
                    }
                }
                continue;
            }
            match self.route_read(place.clone()).await? {
                Some((shard, route)) if !shards.contains(&shard) => {
                    shards.push(shard);
                    routes.extend(route.map(|route| (shard, route)));
                }
                Some(_) => {}
                None => {
                    if let (true, Place::Homed(locality)) = (self.records_reads(), place) {
                        self.unhomed.entry(locality).or_default().ranges.push(range.clone());
                    }
                }
            }
        }
        // R16: this region's queued writes first (where a shard of the range
        // may have some), then the transaction's own.
        let queued: Vec<ShardId> =
            shards.iter().copied().filter(|shard| self.manager.router.queued_through_outbox(*shard)).collect();
        let mut own = if queued.is_empty() { Vec::new() } else { self.pending(&range, &queued).await? };
        own.extend(
            self.writes
                .iter()
                .filter(|(key, _)| range_contains(&range, key))
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        // Each own write can hide at most one stored pair, so fetching that
        // many more than the limit is enough to fill it after the overlay.
        let fetch = limit.map(|limit| limit.saturating_add(own.len()));
        // The horizon: beyond the last key a limited shard returned, its
        // keys were not looked at, so the merge cannot go past the nearest
        // such key of any shard.
        let mut stored: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut horizon: Option<Vec<u8>> = None;
        let limited = |rows: &[(Vec<u8>, Vec<u8>)], horizon: &mut Option<Vec<u8>>| {
            if let (Some(fetch), Some((last, _))) = (fetch, rows.last())
                && rows.len() >= fetch
            {
                let nearer = match &*horizon {
                    None => true,
                    Some(current) if reverse => last > current,
                    Some(current) => last < current,
                };
                if nearer {
                    *horizon = Some(last.clone());
                }
            }
        };
        if self.isolation == Isolation::MonotonicAtomicView {
            // One view of every shard at once, merged and limited there.
            let rows = self.view(range.clone(), shards.clone(), reverse, fetch).await?;
            limited(&rows, &mut horizon);
            stored = rows;
        } else {
            let mut requests = Vec::with_capacity(shards.len());
            for shard in &shards {
                let request = Request::Scan {
                    txn: self.id,
                    range: range.clone(),
                    reverse,
                    limit: fetch,
                    mode: self.mode_for(*shard),
                    guard: self.read_guard(*shard),
                    route: routes.iter().find(|(routed, _)| routed == shard).map(|(_, route)| route.clone()),
                    versions: false,
                };
                requests.push(call_repeatable(&self.manager, *shard, request));
            }
            let answers = futures::future::join_all(requests).await;
            for (shard, answer) in shards.iter().zip(answers) {
                let rows = match answer? {
                    Response::Rows(rows) => rows,
                    other => return Err(unexpected(*shard, &other)),
                };
                self.confirmed.insert(*shard);
                limited(&rows, &mut horizon);
                stored.extend(rows);
            }
        }
        let within = |key: &[u8]| match &horizon {
            None => true,
            Some(last) if reverse => key >= last.as_slice(),
            Some(last) => key <= last.as_slice(),
        };
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().filter(|(key, _)| within(key)).collect();
        for (key, value) in own {
            if !within(&key) {
                continue;
            }
            match value {
                Some(value) => merged.insert(key, value),
                None => merged.remove(&key),
            };
        }
        let mut out: Vec<(Vec<u8>, Vec<u8>)> =
            if reverse { merged.into_iter().rev().collect() } else { merged.into_iter().collect() };
        let complete = match limit {
            Some(limit) if out.len() >= limit => {
                out.truncate(limit);
                false
            }
            _ => horizon.is_none(),
        };
        if self.records_reads() {
            // Record what was actually covered: all of the range if the scan
            // ran to its end, else up to the last key returned.
            let covered = match (complete, out.last(), &horizon) {
                (true, _, _) => range,
                (false, Some((last, _)), _) | (false, None, Some(last)) => {
                    if reverse {
                        (Bound::Included(last.clone()), range.1)
                    } else {
                        (range.0, Bound::Included(last.clone()))
                    }
                }
                (false, None, None) => range,
            };
            // R18: and the residence record of a shard the range was routed
            // to by a home (see `read_routed`).
            for (shard, route) in &routes {
                self.reads.entry(*shard).or_default().keys.push(route.residence.clone());
            }
            for shard in shards {
                self.reads.entry(shard).or_default().ranges.push(covered.clone());
            }
        }
        Ok(out)
    }

    /// R18: every key of `range` at `shard` with a version at this
    /// transaction's snapshot (tombstones included), with that version
    /// (detached), routed by `route`: what a rehome moves. Recorded as read
    /// there.
    pub(crate) async fn scan_versions_at(
        &mut self,
        shard: ShardId,
        range: KeyRange,
        route: Option<Route>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.check_deadline()?;
        let residence = route.as_ref().map(|route| route.residence.clone());
        let request = Request::Scan {
            txn: self.id,
            range: range.clone(),
            reverse: false,
            limit: None,
            mode: self.mode_for(shard),
            guard: self.read_guard(shard),
            route,
            versions: true,
        };
        let rows = match self.call(shard, request).await? {
            Response::Versions(rows) => rows,
            other => return Err(unexpected(shard, &other)),
        };
        self.confirmed.insert(shard);
        if self.records_reads() {
            let reads = self.reads.entry(shard).or_default();
            reads.ranges.push(range);
            reads.keys.extend(residence);
        }
        Ok(rows)
    }

    /// R18: buffers a write of `key` at `shard` itself, not where routing
    /// would put it (`None` a delete), or the arrival there of the version
    /// `moved` from a shard (detached, `crate::protocol::Move`: two-phase
    /// commits only).
    pub(crate) fn place(
        &mut self,
        shard: ShardId,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        moved: Option<(Vec<u8>, ShardId)>,
    ) {
        self.placed.insert((shard, key), (value, moved));
        self.mutations += 1;
    }

    /// R18: the commit goes on at `shard` only if `route` still leads there.
    pub(crate) fn place_route(&mut self, shard: ShardId, route: Route) {
        self.placed_routes.push((shard, route));
        self.mutations += 1;
    }

    // --- writes --------------------------------------------------------------

    /// Buffers a write of `value` to `key`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.writes.insert(key, Some(value));
        self.mutations += 1;
        Ok(())
    }

    /// Buffers a delete of `key`.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<()> {
        self.writes.insert(key, None);
        self.mutations += 1;
        Ok(())
    }

    // --- commit --------------------------------------------------------------

    /// Commits: validates, persists and makes the writes visible atomically
    /// on every shard they touch. Returns the commit timestamp (a read-only
    /// transaction "commits" at its snapshot). A conflict aborts with a
    /// retryable error and nothing applied.
    pub async fn commit_async(self) -> Result<Timestamp> {
        Ok(self.commit_reporting_async().await?.ts)
    }

    /// [`Transaction::commit_async`], saying where the transaction
    /// committed.
    pub async fn commit_reporting_async(self) -> Result<Commit> {
        if !self.has_writes() {
            return Ok(Commit { ts: self.read_ts, at: CommittedAt::Nowhere, shards: Vec::new() });
        }
        if !self.isolation.is_highly_available() {
            // Commit wait below reads this node's clock.
            self.manager.hlc.check_synchronized()?;
        }
        let mut attempts = 0;
        let (ts, written, outbox) = loop {
            match self.commit_parts().await {
                // R18: a highly available commit validates no reads, so one
                // refused for a stale home (nothing of it applied) is
                // routed again by the directory and sent again.
                Err(Error::Moved { .. })
                    if self.isolation.is_highly_available() && attempts + 1 < MOVED_ATTEMPTS_MAX =>
                {
                    attempts += 1;
                }
                result => break result?,
            }
        };
        let at = if outbox.is_some() { CommittedAt::Outbox } else { CommittedAt::Homes };
        self.manager.saw(written.iter().copied(), ts);
        if self.isolation.is_highly_available() {
            // No commit wait, but a commit placed ahead of every clock (a
            // global table's, R14, or one lifted above such a commit) is
            // answered once this node's clock reaches it: the next
            // transaction here then reads at or above it, and sees it.
            self.manager.commit_waited(self.isolation, ts.physical.saturating_add(1));
            wait_until_past(&self.manager, ts).await;
        }
        if self.manager.commit_wait && !self.isolation.is_highly_available() && !self.manager.faults.skip_commit_wait {
            // R6 (Spanner §4.1.2): answer only once every clock in the
            // cluster reads past the commit timestamp. The timestamp was
            // taken before the replication round, so the round already
            // covered most or all of it.
            let bound = self.manager.hlc.max_offset_ns();
            let until_ns = ts.physical.saturating_add(bound).saturating_add(1);
            self.manager.commit_waited(self.isolation, until_ns);
            self.manager.rpc.sleep_until(until_ns).await;
        }
        Ok(Commit { ts, at, shards: written })
    }

    /// Routes the writes and commits them: where (the shards written, or the
    /// outbox) and at which timestamp.
    async fn commit_parts(&self) -> Result<(Timestamp, Vec<ShardId>, Option<ShardId>)> {
        if let Some(reason) = &self.doomed {
            self.abort_early();
            return Err(Error::Conflict(format!("transaction {} cannot commit: {reason}", self.id)));
        }
        let mut parts = self.parts().await?;
        let outbox = self.outbox_for(&parts);
        if let Some(outbox) = outbox {
            return Ok((self.commit_enqueued(outbox, parts).await?, vec![outbox], Some(outbox)));
        }
        let settled = self.validate_settled(&mut parts).await?;
        let written: Vec<ShardId> =
            parts.iter().filter(|(_, part)| part.writes_here).map(|(shard, _)| *shard).collect();
        let ts = if parts.len() == 1 && settled.is_none() && self.early.is_empty() {
            let (shard, part) = parts.into_iter().next().expect("one part");
            self.commit_one(shard, part.changes).await?
        } else {
            self.commit_distributed(parts, settled).await?
        };
        Ok((ts, written, None))
    }

    /// R16: the outbox a highly available transaction commits at: every shard
    /// it writes may be queued for (nothing locked, no global or catalog
    /// key), and one of them cannot commit within this region. (A key that
    /// still has a write queued there may be written at its home directly:
    /// the queued write is older by origin, and R17 keeps it from landing
    /// on top.)
    fn outbox_for(&self, parts: &BTreeMap<ShardId, Part>) -> Option<ShardId> {
        let router = &self.manager.router;
        let outbox = router.outbox()?;
        let eligible = self.isolation.is_highly_available()
            && self.locked.is_empty()
            && parts.iter().all(|(shard, part)| part.changes.reads.is_empty() && router.queued_through_outbox(*shard));
        (eligible && parts.keys().any(|shard| !router.commits_in_region(*shard))).then_some(outbox)
    }

    /// R16: commits at this region's outbox, which queues each part for its
    /// home shard. Like a one-round commit, never repeated once it may have
    /// been proposed.
    async fn commit_enqueued(&self, outbox: ShardId, parts: BTreeMap<ShardId, Part>) -> Result<Timestamp> {
        let guards = match (&self.schema, self.manager.router.guard_key(outbox)) {
            (Some(version), Some(key)) => vec![(key, version.clone())],
            _ => Vec::new(),
        };
        let mut routes: Vec<Vec<Route>> = Vec::new();
        let parts: Vec<(ShardId, Vec<Write>)> = parts
            .into_iter()
            .filter(|(_, part)| part.writes_here)
            .map(|(shard, part)| {
                routes.push(part.write_routes);
                (shard, part.changes.writes)
            })
            .collect();
        let keys: usize = parts.iter().map(|(_, writes)| writes.len()).sum();
        if parts.len() > 1 && keys > SHIPPED_SIBLINGS_MAX {
            return Err(Error::LimitExceeded(format!(
                "a highly available transaction that commits at its region's outbox may write at most {SHIPPED_SIBLINGS_MAX} keys when they belong to more than one home shard (each shipped write names the others, for Monotonic Atomic View); this one writes {keys} across {} home shards: split it, or commit it at snapshot or serializable",
                parts.len()
            )));
        }
        self.commit_once(outbox, Request::Enqueue(crate::protocol::Enqueued { txn: self.id, guards, parts, routes }))
            .await
    }

    /// The shard of a written key: a locality key's home shard, homing it
    /// here first if it has none (then noted in `created`, by locality key).
    async fn route_write(&self, key: &[u8], created: &mut BTreeMap<Vec<u8>, ShardId>) -> Result<Routed> {
        match self.manager.router.place(key) {
            Place::Shard(shard) => Ok((shard, None)),
            Place::Homed(locality) => {
                let (home, made) = self.manager.ensure_home(&locality).await?;
                let routed = routed(self.manager.router.as_ref(), home, &locality);
                if made {
                    created.insert(locality, routed.0);
                } else if created.get(&locality).is_some_and(|shard| *shard != routed.0) {
                    // Created by this transaction at an earlier statement
                    // and moved since (R20): its reads are validated by the
                    // directory again, which the move changed.
                    created.remove(&locality);
                }
                Ok(routed)
            }
        }
    }

    /// What this transaction read, by shard, for serializable validation.
    /// A locality key it found without a home and whose home its own commit
    /// created (just now, serializably, after this transaction's snapshot:
    /// so no row of it was stored anywhere at the snapshot) is validated
    /// at its new home shard, where its reads are now reads of absent keys,
    /// instead of by the directory read, which the creation itself would
    /// fail.
    fn reads_to_validate(&self, created: &BTreeMap<Vec<u8>, ShardId>) -> BTreeMap<ShardId, Reads> {
        let mut reads = self.reads.clone();
        let router = &self.manager.router;
        for (locality, shard) in created {
            let Some(unhomed) = self.unhomed.get(locality) else { continue };
            let directory_key = router.home_key(locality);
            if let Place::Shard(directory) = router.place(&directory_key)
                && let Some(at_directory) = reads.get_mut(&directory)
            {
                at_directory.keys.retain(|key| *key != directory_key);
            }
            let at_home = reads.entry(*shard).or_default();
            // R18: and the residence record there, so that a rehome of the
            // key after its creation fails this transaction's validation.
            at_home.keys.push(router.residence_key(locality));
            at_home.keys.extend(unhomed.keys.iter().cloned());
            at_home.ranges.extend(unhomed.ranges.iter().cloned());
        }
        reads
    }

    /// What each participant is asked to commit: its writes and locks, its
    /// schema guard, and (serializable) what was read there.
    async fn parts(&self) -> Result<BTreeMap<ShardId, Part>> {
        Ok(self.parts_creating().await?.0)
    }

    /// [`Transaction::parts`], and the homes this transaction created (for
    /// locality keys it writes first), those of earlier calls included.
    async fn parts_creating(&self) -> Result<(BTreeMap<ShardId, Part>, BTreeMap<Vec<u8>, ShardId>)> {
        let mut parts: BTreeMap<ShardId, Part> = BTreeMap::new();
        let empty = || Part {
            changes: Changes {
                txn: self.id,
                isolation: self.isolation,
                read_ts: self.read_ts,
                writes: Vec::new(),
                locked: Vec::new(),
                reads: Reads::default(),
                guards: Vec::new(),
                routes: Vec::new(),
                moves: Vec::new(),
            },
            writes_here: false,
            write_routes: Vec::new(),
        };
        let mut created = self.created.clone();
        for (key, value) in &self.writes {
            let (shard, route) = self.route_write(key, &mut created).await?;
            let entry = parts.entry(shard).or_insert_with(empty);
            entry.changes.writes.push((key.clone(), value.clone()));
            entry.write_routes.push(route.clone().unwrap_or_else(Route::unrouted));
            entry.add_route(route);
            entry.writes_here = true;
        }
        for key in &self.locked {
            let (shard, route) = self.route_write(key, &mut created).await?;
            let entry = parts.entry(shard).or_insert_with(empty);
            entry.changes.locked.push(key.clone());
            entry.add_route(route);
            entry.writes_here = true;
        }
        // R18: writes placed at a shard of their own (a rehome's), with the
        // routes they rely on and the origins copies keep.
        for ((shard, key), (value, moved)) in &self.placed {
            let entry = parts.entry(*shard).or_insert_with(empty);
            entry.changes.writes.push((key.clone(), value.clone()));
            entry.write_routes.push(Route::unrouted());
            if let Some((version, from)) = moved {
                let (key, version, from) = (key.clone(), version.clone(), *from);
                entry.changes.moves.push(crate::protocol::Move { key, version, from });
            }
            entry.writes_here = true;
        }
        for (shard, route) in &self.placed_routes {
            parts.entry(*shard).or_insert_with(empty).add_route(Some(route.clone()));
        }
        for part in parts.values_mut() {
            if !part.changes.writes.is_sorted_by(|a, b| a.0 < b.0) {
                return Err(Error::Invalid("a key is both routed and placed in one transaction".into()));
            }
        }
        if let Some(version) = &self.schema {
            // A DDL's own write of a guard is guarded too, by the version
            // it replaces: of two DDLs planned on the same version, one
            // fails (else the second could overwrite the first's catalog).
            for (shard, key) in self.manager.router.guard_keys() {
                if let Some(part) = parts.get_mut(&shard).filter(|part| part.writes_here) {
                    part.changes.guards.push((key, version.clone()));
                }
            }
        }
        if self.records_reads() {
            for (shard, reads) in self.reads_to_validate(&created) {
                if !reads.is_empty() || parts.contains_key(&shard) {
                    parts.entry(shard).or_insert_with(empty).changes.reads = reads;
                }
            }
        }
        Ok((parts, created))
    }

    /// R14: what a serializable transaction only read at shards that close
    /// timestamps (the global shard) is validated at this node's replica of
    /// each, not by making that shard a participant (a wide-area round trip
    /// to its leader): each answers the closed timestamp up to which the
    /// reads hold, and the parts are removed. The transaction must then
    /// commit at or below the smallest of them, which two-phase commit (even
    /// with one participant left) checks before deciding: the answer, with
    /// the parts validated.
    async fn validate_settled(&self, parts: &mut BTreeMap<ShardId, Part>) -> Result<Option<Settled>> {
        let router = &self.manager.router;
        let settled: Vec<ShardId> = parts
            .iter()
            .filter(|(shard, part)| !part.writes_here && router.reads_settled(**shard))
            .map(|(shard, _)| *shard)
            .collect();
        if settled.is_empty() {
            return Ok(None);
        }
        let mut validated = Settled { cap: Timestamp::MAX, parts: Vec::new() };
        for shard in settled {
            let part = parts.remove(&shard).expect("listed above");
            if !self.manager.faults.skip_settled_validation {
                validated.parts.push((shard, part.changes));
            }
        }
        validated.cap = self.validate_settled_at(&validated.parts, Timestamp::ZERO).await?;
        Ok(Some(validated))
    }

    /// Validates `parts` at this node's replicas once they closed `at_least`
    /// ([`Request::ValidateSettled`]); the smallest closed timestamp they
    /// answer.
    async fn validate_settled_at(&self, parts: &[(ShardId, Changes)], at_least: Timestamp) -> Result<Timestamp> {
        let mut cap = Timestamp::MAX;
        for (shard, changes) in parts {
            let request = Request::ValidateSettled { changes: changes.clone(), at_least };
            match call_repeatable(&self.manager, *shard, request).await? {
                Response::Validated(closed) => cap = cap.min(closed),
                other => return Err(unexpected(*shard, &other)),
            }
        }
        Ok(cap)
    }

    /// One participant: validate, commit and apply in one round. Never
    /// repeated once it may have been proposed (a second proposal could
    /// commit the writes twice): an unknown outcome is reported as such.
    async fn commit_one(&self, shard: ShardId, changes: Changes) -> Result<Timestamp> {
        self.commit_once(shard, Request::CommitOne(changes)).await
    }

    /// Sends a request that commits in one round (a one-participant commit,
    /// an enqueue) until it is refused for good or answered; never again
    /// once it may have been proposed.
    async fn commit_once(&self, shard: ShardId, request: Request) -> Result<Timestamp> {
        let mut backoff = Backoff::new(&self.manager);
        loop {
            match self.manager.rpc.call(shard, request.clone()).await {
                Ok(Response::Committed(ts)) => {
                    self.manager.hlc.observe_past(ts);
                    return Ok(ts);
                }
                // Refused before anything was proposed: safe to send again.
                Ok(Response::Refused(Refusal::NotLeader { .. } | Refusal::Unavailable(_)))
                | Err(RpcError::NotSent(_)) => {
                    if !backoff.pause(&self.manager).await {
                        return Err(Error::Unavailable(format!("shard {shard} has no reachable leader")));
                    }
                }
                Ok(Response::Refused(refusal)) => {
                    forget_moved(&self.manager, &refusal);
                    return Err(refusal.into());
                }
                Ok(other) => return Err(unexpected(shard, &other)),
                Err(RpcError::Lost(reason)) => {
                    return Err(Error::OutcomeUnknown(format!(
                        "transaction {}: no answer from shard {shard} after sending the commit ({reason}); it may or may not have committed",
                        self.id
                    )));
                }
            }
        }
    }

    /// Two-phase commit over the participants (R9), at a commit timestamp
    /// no higher than `cap` if one is given (reads validated elsewhere up to
    /// it, [`Transaction::validate_settled`]): above it, the transaction
    /// aborts.
    async fn commit_distributed(&self, parts: BTreeMap<ShardId, Part>, settled: Option<Settled>) -> Result<Timestamp> {
        let record = match self.record {
            Some(record) => record,
            None => *parts
                .iter()
                .find(|(_, part)| part.writes_here)
                .map(|(shard, _)| shard)
                .expect("a transaction with writes has a part that writes"),
        };
        let participants: Vec<ShardId> = parts.keys().copied().collect();
        // R20: a part whose prepare at a statement holds everything it asks
        // is not prepared again: its values go with the decision. One that
        // asks more is prepared again (a later round, merged into it).
        let mut carried: Vec<Carried> = Vec::new();
        let mut commit_ts = self.read_ts;
        let mut to_prepare: Vec<(ShardId, Changes, u32)> = Vec::new();
        for (shard, part) in &parts {
            let early = self.early.get(shard);
            match early.and_then(|early| early.prepare_ts.filter(|_| early.changes.covers(&part.changes))) {
                Some(prepare_ts) => {
                    commit_ts = commit_ts.max(prepare_ts);
                    let writes = part.changes.writes.clone();
                    carried.push(Carried { shard: *shard, writes, participants: participants.clone() });
                }
                None => to_prepare.push((*shard, part.changes.clone(), early.map_or(1, |early| early.round + 1))),
            }
        }
        // R21: when every other part was prepared at its statement, the
        // record's own part is validated and written with the decision, in
        // one round — unless reads of a global table must be validated
        // again between the prepares and the decision. (With other parts
        // to prepare now, it is prepared beside them: as many rounds.)
        let own = match to_prepare.as_slice() {
            [(shard, own, 1)] if *shard == record && settled.is_none() && own.moves.is_empty() => {
                to_prepare.pop().map(|(_, own, _)| own)
            }
            _ => None,
        };
        let mut prepares = Vec::new();
        for (shard, changes, round) in to_prepare {
            let participants = participants.clone();
            let request =
                Request::Prepare { changes, record, participants, round, values_follow: false, may_wait: false };
            prepares.push((shard, call_repeatable(&self.manager, shard, request)));
        }
        // A part prepared at a statement that the commit no longer needs
        // (nothing of it is left): committed with nothing to write, if its
        // prepare was answered.
        let mut failure = None;
        for (shard, early) in &self.early {
            if parts.contains_key(shard) {
                continue;
            }
            match early.prepare_ts {
                Some(prepare_ts) => {
                    commit_ts = commit_ts.max(prepare_ts);
                    carried.push(Carried { shard: *shard, writes: Vec::new(), participants: participants.clone() });
                }
                None => {
                    failure = Some(Error::Conflict(format!("its prepare at shard {shard} was never answered")));
                }
            }
        }
        let (prepared, calls): (Vec<ShardId>, Vec<_>) = prepares.into_iter().unzip();
        let answers = futures::future::join_all(calls).await;
        for (shard, answer) in prepared.iter().zip(answers) {
            match answer {
                Ok(Response::Prepared(ts)) => commit_ts = commit_ts.max(ts),
                Ok(other) => failure = failure.or(Some(unexpected(*shard, &other))),
                Err(error) => failure = failure.or(Some(error)),
            }
        }
        let parts_at: Vec<ShardId> = participants.clone();
        let participants: Vec<ShardId> = participants.into_iter().chain(self.early.keys().copied()).collect();
        if failure.is_none()
            && let Some(settled) = &settled
            && commit_ts > settled.cap
        {
            // A participant's timestamp lies above what the replicas closed
            // when they validated (its floor was lifted by a recent write
            // ahead of the clocks): validate again once they closed the
            // commit timestamp, the locks held meanwhile.
            match self.validate_settled_at(&settled.parts, commit_ts).await {
                Ok(cap) if cap >= commit_ts => {}
                Ok(cap) => {
                    failure = Some(Error::Conflict(format!(
                        "transaction {}: its reads of a global table hold up to {cap}, its commit is at {commit_ts}",
                        self.id
                    )));
                }
                Err(error) => failure = Some(error),
            }
        }
        if let Some(error) = failure {
            // No `Decide(Commit)` was sent, so the transaction cannot commit
            // anywhere; record the abort and release the locks (recovery
            // does it if these are lost).
            self.abort_everywhere(record, &participants);
            return Err(aborted(self.id, error));
        }
        // The decision is durable at the record shard before anyone hears it.
        self.deciding.store(true, Ordering::Relaxed);
        let decision = match own {
            Some(own) => {
                let request =
                    Request::CommitRecord { own, participants: parts_at, floor: commit_ts, carried: carried.clone() };
                match call_repeatable(&self.manager, record, request).await {
                    Ok(Response::Decided(decision)) => decision,
                    outcome => {
                        // Refused, or never answered: a copy may still have
                        // recorded the commit. Record an abort instead; the
                        // first decision recorded is the outcome.
                        let error = match outcome {
                            Ok(other) => unexpected(record, &other),
                            Err(error) => error,
                        };
                        match self.decide(record, Decision::Abort, Vec::new()).await? {
                            Decision::Abort => {
                                self.resolve_aborted(record, &participants);
                                return Err(aborted(self.id, error));
                            }
                            committed => committed,
                        }
                    }
                }
            }
            None => self.decide(record, Decision::Commit(commit_ts), carried.clone()).await?,
        };
        match decision {
            Decision::Commit(ts) => {
                let mut resolved = BTreeSet::new();
                for shard in participants.iter().filter(|shard| **shard != record) {
                    if resolved.insert(*shard) {
                        let carried = carried.iter().find(|carried| carried.shard == *shard).cloned();
                        self.manager.rpc.send(*shard, Request::Resolve { txn: self.id, decision, carried });
                    }
                }
                Ok(ts)
            }
            Decision::Abort => {
                self.abort_everywhere(record, &participants);
                Err(Error::Conflict(format!(
                    "transaction {} was aborted by recovery while it committed (a participant waited too long)",
                    self.id
                )))
            }
        }
    }

    /// Asks the record shard to record `decision`; answers the decision it
    /// recorded (which may be an abort by recovery).
    async fn decide(&self, record: ShardId, decision: Decision, carried: Vec<Carried>) -> Result<Decision> {
        let request = Request::Decide { txn: self.id, decision, carried };
        match call_repeatable(&self.manager, record, request).await {
            Ok(Response::Decided(decision)) => Ok(decision),
            Ok(other) => Err(unexpected(record, &other)),
            Err(error @ Error::Conflict(_)) => Err(error),
            Err(error) => Err(Error::OutcomeUnknown(format!(
                "transaction {}: its decision could not be confirmed at shard {record} ({error}); it may or may not have committed",
                self.id
            ))),
        }
    }

    /// Records `Abort` at `record` and resolves `participants` and every
    /// part prepared at a statement (R20) so. Only while no `Decide(Commit)`
    /// was sent: then nothing can have committed.
    fn abort_everywhere(&self, record: ShardId, participants: &[ShardId]) {
        let decide = Request::Decide { txn: self.id, decision: Decision::Abort, carried: Vec::new() };
        self.manager.rpc.send(record, decide);
        self.resolve_aborted(record, participants);
    }

    /// Resolves `participants` and every part prepared at a statement
    /// (R20), but the record, as aborted: once the record holds `Abort`.
    fn resolve_aborted(&self, record: ShardId, participants: &[ShardId]) {
        let shards: BTreeSet<ShardId> = participants.iter().chain(self.early.keys()).copied().collect();
        for shard in shards.into_iter().filter(|shard| *shard != record) {
            let resolve = Request::Resolve { txn: self.id, decision: Decision::Abort, carried: None };
            self.manager.rpc.send(shard, resolve);
        }
    }

    /// R20: [`Transaction::abort_everywhere`] of the parts prepared at
    /// statements, at the record shard the first of them named.
    fn abort_early(&self) {
        if let Some(record) = self.record {
            self.abort_everywhere(record, &[]);
        }
    }

    // --- blocking forms, for the SQL layer -----------------------------------

    /// [`Transaction::get_async`], blocking.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        block_on(self.get_async(key))
    }

    /// [`Transaction::get_for_write_async`], blocking.
    pub fn get_for_write(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        block_on(self.get_for_write_async(key))
    }

    /// [`Transaction::get_for_update_async`], blocking.
    pub fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        block_on(self.get_for_update_async(key))
    }

    /// [`Transaction::scan_async`], blocking.
    pub fn scan(
        &mut self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        block_on(self.scan_async(start, end, reverse, limit))
    }

    /// [`Transaction::commit_reporting_async`], blocking.
    pub fn commit_reporting(self) -> Result<Commit> {
        block_on(self.commit_reporting_async())
    }

    /// [`Transaction::commit_async`], blocking.
    pub fn commit(self) -> Result<Timestamp> {
        block_on(self.commit_async())
    }

    /// Discards the transaction's writes; a part prepared at a statement
    /// (R20) is resolved as aborted (by dropping it).
    pub fn rollback(self) {}
}

/// The error of a distributed commit that aborted because a participant
/// failed to prepare (or, R21, the record refused its own part).
fn aborted(txn: TxnId, error: Error) -> Error {
    match error {
        Error::Conflict(message) => Error::Conflict(message),
        // A participant was routed by a stale home (R18): the home is
        // forgotten, and the transaction runs again under a new id (a
        // participant that prepared this one holds it until its abort is
        // applied).
        Error::Moved { message, .. } => Error::Conflict(message),
        other => Error::Conflict(format!("transaction {txn} aborted: a participant failed to prepare: {other}")),
    }
}

/// Sends a request that is safe to repeat, retrying unsent and lost ones
/// with backoff for [`RETRY_WINDOW_NS`]; a refusal is the answer (except
/// "outcome unknown" for requests whose repetition answers the recorded
/// outcome: decisions, resolutions and commits at the record).
async fn call_repeatable(manager: &TxnManager, shard: ShardId, request: Request) -> Result<Response> {
    // Requests whose copies are harmless (the first decision recorded
    // wins, and only the copy of a commit at the record that records it
    // writes its part, R21): sent again after an unknown outcome too.
    let repeat_unknown = matches!(
        request,
        Request::Decide { .. } | Request::Resolve { .. } | Request::Recover { .. } | Request::CommitRecord { .. }
    );
    let mut backoff = Backoff::new(manager);
    loop {
        let last = match manager.rpc.call(shard, request.clone()).await {
            // An election under way, or a shard too busy: nothing was done.
            Ok(Response::Refused(refusal @ (Refusal::NotLeader { .. } | Refusal::Unavailable(_)))) => {
                Error::from(refusal).to_string()
            }
            Ok(Response::Refused(refusal @ Refusal::OutcomeUnknown(_))) if repeat_unknown => {
                Error::from(refusal).to_string()
            }
            Ok(response) => {
                // Every answer carries time forward (the sender's clock).
                if let Response::Committed(ts)
                | Response::Prepared(ts)
                | Response::Decided(Decision::Commit(ts))
                | Response::Refused(Refusal::SchemaChanged { newest: ts, .. }) = &response
                {
                    manager.hlc.observe_past(*ts);
                }
                if let Response::Refused(Refusal::SchemaChanged { newest, .. }) = &response {
                    // A DDL writes the global shard's guard too, so it may
                    // commit ahead of every clock (R14): a statement planned
                    // again must take its new snapshot above it (R11).
                    wait_until_past(manager, *newest).await;
                }
                if let Response::Refused(refusal) = &response {
                    forget_moved(manager, refusal);
                }
                return response.into_result();
            }
            Err(error) => error.to_string(),
        };
        if !backoff.pause(manager).await {
            return Err(Error::Unavailable(format!(
                "shard {shard} did not answer a {} request: {last}",
                request.kind()
            )));
        }
    }
}

/// Waits until this node's physical clock has reached `ts`, then moves the
/// clock past it; at once for a timestamp the clock has already passed.
async fn wait_until_past(manager: &TxnManager, ts: Timestamp) {
    if ts.physical > manager.hlc.physical_now_ns() {
        manager.rpc.sleep_until(ts.physical.saturating_add(1)).await;
    }
    manager.hlc.observe_past(ts);
}

/// Pauses between attempts: exponential, capped, within [`RETRY_WINDOW_NS`].
struct Backoff {
    deadline_ns: u64,
    pause_ns: u64,
}

impl Backoff {
    fn new(manager: &TxnManager) -> Self {
        Backoff { deadline_ns: manager.hlc.physical_now_ns().saturating_add(RETRY_WINDOW_NS), pause_ns: RETRY_PAUSE_NS }
    }

    /// Waits before the next attempt; false once the window is over.
    async fn pause(&mut self, manager: &TxnManager) -> bool {
        let now = manager.hlc.physical_now_ns();
        if now >= self.deadline_ns {
            return false;
        }
        manager.rpc.sleep_until(now.saturating_add(self.pause_ns).min(self.deadline_ns)).await;
        self.pause_ns = (self.pause_ns * 2).min(RETRY_PAUSE_MAX_NS);
        true
    }
}

/// R18: a shard said a locality key moved on: its cached home is stale.
fn forget_moved(manager: &TxnManager, refusal: &Refusal) {
    if let Refusal::Moved { route, .. } = refusal {
        manager.router.forget_residence(&route.residence);
    }
}

/// A shard a request goes to, and the home it was routed by (R18), if a
/// locality key's home decided it.
type Routed = (ShardId, Option<Route>);

/// The shard of a locality key homed at `home`, and the route there.
fn routed(router: &dyn Router, home: Home, locality: &[u8]) -> Routed {
    let route = Route { residence: router.residence_key(locality), epoch: home.epoch };
    (router.shard_of_home(home, locality), Some(route))
}

fn unexpected(shard: ShardId, response: &Response) -> Error {
    Error::Invalid(format!("shard {shard} answered with an unexpected {response:?}"))
}

/// R20: a transaction dropped with parts prepared at their statements and
/// no decision sent (rolled back, failed, or its client gone) releases
/// them now rather than when recovery finds them.
impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.early.is_empty() && !self.deciding.load(Ordering::Relaxed) {
            self.abort_early();
        }
        if let Some(began) = self.began {
            self.manager.running().remove(&(began, self.id));
        }
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
