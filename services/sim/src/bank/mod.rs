//! The bank: distributed transactions through the real transaction layer,
//! under faults.
//!
//! Nine nodes in the three regions of `docs/benchmarks.md` run the real
//! [`Host`] (Multi-Paxos groups whose state machines are real [`Shard`]s
//! on [`MemoryEngine`]s); clients on every node run the real coordinator
//! ([`TxnManager`], [`Transaction`]) as async tasks on this module's
//! executor, reaching shards through a simulated [`ShardRpc`]. Four shards:
//! two homed in us-east and one in eu-west (zone survival, with learners in
//! other regions), and one with region survival that closes timestamps like
//! the global shard (R14): a replica in every node, and reads at a
//! timestamp served by the reader's own node. And one outbox per region
//! (R16), replicated over that region's nodes only.
//!
//! The workload (`workload.rs`): transfers between accounts of different
//! shards at Snapshot Isolation and Serializable, audits of every account,
//! and a predicate workload (insert a flag only while fewer than a limit
//! exist across two shards' ranges) at Serializable, and notes: Read
//! Committed writes that commit in the writer's region, through its outbox
//! where a note's shard is homed elsewhere, read back at once, and tags:
//! blind writes of a few keys that every region writes, at Read Committed
//! through the outboxes or directly and at the coordinated levels, read
//! back at once (last writer wins by origin, R17). Faults
//! (`faults.rs`): crashes — coordinators die between prepare and decision
//! with their node — aimed at writes in flight to disk, partitions (nodes,
//! regions, single links, one-way), message loss, duplication and
//! reordering, and clocks skewed and drifting within the bound ε.
//!
//! Checked (`checks.rs`): every audit saw the exact total; the predicate
//! limit held; every acknowledged commit is in every written key's history
//! at its commit timestamp, nothing aborted is, and nothing is half
//! applied; no lock survives recovery; every replica of a shard converges;
//! and the dependency graph of committed transactions (write-write,
//! write-read and anti-dependency edges from the versions read, real-time
//! edges between transactions that did not overlap) has no cycle the levels
//! forbid (G0, G1c and real-time order everywhere; G-single at SI;
//! any cycle whose anti-dependencies all come from serializable readers).
//!
//! Planted bugs ([`BankFaults`]) prove the checks bite.
//!
//! [`Host`]: geodb_txn::Host
//! [`Shard`]: geodb_txn::Shard
//! [`MemoryEngine`]: geodb_storage::MemoryEngine
//! [`TxnManager`]: geodb_txn::TxnManager
//! [`Transaction`]: geodb_txn::Transaction
//! [`ShardRpc`]: geodb_txn::ShardRpc

mod checks;
mod faults;
mod rpc;
mod workload;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use geodb_geo::paxos::{Config, GroupId, NodeReady};
use geodb_geo::{LatencyMatrix, NodeId};
use geodb_storage::{ColumnFamily, Durability, Engine, MemoryEngine, ScopedEngine, WriteBatch};
use geodb_txn::conflict::ValidationFaults;
use geodb_txn::host::{HostConfig, HostFaults};
use geodb_txn::protocol::{ReadMode, Refusal, Request, Response, ShardId};
use geodb_txn::traffic::{FollowConfig, TrafficConfig};
use geodb_txn::transaction::CoordinatorFaults;
use geodb_txn::{Body, Hlc, Host, HostOutput, NodeMessage, Origin, Shard, observe_sender_clock, stamp_messages};

use crate::clock::Clock;
use crate::network::{Network, NetworkConfig, Partition};
use crate::scheduler::Scheduler;
use rpc::{Executor, NodeRpc};
use workload::History;

/// Bugs planted in the protocol on purpose, to prove the checks catch them.
/// Test-only: no real runtime sets these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BankFaults {
    /// Coordinators answer commits without commit wait (R6).
    pub skip_commit_wait: bool,
    /// Participants answer a prepare before it is chosen and durable.
    pub ack_prepare_before_durable: bool,
    /// Serializable validation ignores scanned ranges.
    pub skip_range_validation: bool,
    /// Leaders answer reads of versions the clocks have not passed yet.
    pub skip_read_wait: bool,
    /// Hosts declare orphaned proposals never chosen too early.
    pub settle_orphans_early: bool,
    /// Leaders commit below the timestamps they closed (R14).
    pub commit_below_closed: bool,
    /// Coordinators skip validating serializable reads of the closing shard
    /// at their replica (R14).
    pub skip_settled_validation: bool,
    /// Replicas apply pipelined entries without re-validating them (R15).
    pub skip_revalidation: bool,
    /// New leaders fill one slot with no-ops beyond what phase 1 recovered,
    /// not a whole window (a deposed leader's pipelined proposals can then
    /// be chosen after the new leader's).
    pub narrow_recovery: bool,
    /// Outboxes answer an enqueue before the region's quorum has it (R16).
    pub ack_enqueue_before_durable: bool,
    /// Home shards apply a shipped write over a version with a newer
    /// origin (R17).
    pub overwrite_newer_origin: bool,
    /// Monotonic Atomic View readers see a version before the rest of its
    /// transaction has arrived.
    pub show_siblings_early: bool,
    /// Home shards serve requests routed by a stale home (R18): a rehome's
    /// copy is not fenced at the old home.
    pub skip_route_check: bool,
    /// Rehomes switch a key's home before its rows are copied there, in a
    /// transaction of their own (R18 does both in one).
    pub switch_home_before_copy: bool,
    /// Coordinators count a part whose prepare at its statement (R20) was
    /// refused as prepared.
    pub ignore_early_refusal: bool,
    /// The record shard writes its own part with the commit it carries
    /// (R21) even after an abort was recorded there.
    pub own_part_after_decision: bool,
    /// Replicas serve reads below their garbage-collection threshold, from
    /// a history collection thinned.
    pub serve_below_gc_threshold: bool,
    /// Garbage collection removes what stands behind any newer version,
    /// whatever its transaction wrote elsewhere, and keeps nothing.
    pub collect_behind_any_version: bool,
}

impl BankFaults {
    /// The bugs planted in coordinators.
    pub(crate) fn coordinator(&self) -> CoordinatorFaults {
        CoordinatorFaults {
            skip_commit_wait: self.skip_commit_wait,
            skip_settled_validation: self.skip_settled_validation,
            switch_home_before_copy: self.switch_home_before_copy,
            ignore_early_refusal: self.ignore_early_refusal,
        }
    }
}

/// What a bank run looks like; everything else is drawn from the seed.
#[derive(Clone, Debug)]
pub struct BankOptions {
    pub faults: BankFaults,
    /// Length of the fault phase, simulated.
    pub fault_phase_us: u64,
    /// Length of the quiet phase that follows (longer than recovery).
    pub quiet_phase_us: u64,
    /// The standard latency matrix is divided by this.
    pub latency_divisor: u64,
    /// Transactions each client runs, at most.
    pub transactions_per_client: usize,
    /// Print every event to stderr.
    pub trace: bool,
}

impl Default for BankOptions {
    fn default() -> Self {
        BankOptions {
            faults: BankFaults::default(),
            fault_phase_us: 1_500_000,
            quiet_phase_us: 1_500_000,
            latency_divisor: 10,
            transactions_per_client: 40,
            trace: false,
        }
    }
}

/// What a passing run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankReport {
    pub seed: u64,
    pub events: u64,
    pub committed: u64,
    pub aborted: u64,
    pub unknown: u64,
    pub distributed_commits: u64,
    pub audits: u64,
    pub crashes: u64,
    /// Nodes stalled for a while (up to a few election timeouts).
    pub pauses: u64,
    pub partitions: u64,
    pub messages_lost: u64,
    pub snapshots_installed: u64,
    /// Prepared transactions recovery resolved (their coordinators died or
    /// were too slow).
    pub recovered: u64,
    /// Dependency edges checked.
    pub edges: u64,
    /// Reads a leader held until the clocks passed what they returned.
    pub reads_waited: u64,
    /// Reads at a closed timestamp (R14) served by the reader's own
    /// replica, and how often one waited for the next closed timestamp.
    pub settled_reads: u64,
    pub settled_waits: u64,
    /// Serializable transactions whose reads of that shard were validated
    /// at the coordinator's own replica, for a commit elsewhere.
    pub settled_validations: u64,
    /// Proposals in flight when their leader stepped down: settled as
    /// chosen, as never chosen (their origins may send them again), or
    /// unknown. A proposal declared never chosen and then applied fails
    /// the run.
    pub orphans_chosen: u64,
    pub orphans_never_chosen: u64,
    pub orphans_unknown: u64,
    /// Pipelined proposals the log chose but every replica skipped (R15):
    /// validated against entries a leader change replaced.
    pub skipped: u64,
    /// Leaderships lost with two or more slots in flight.
    pub pipelines_cut: u64,
    /// Replicas that fell quiet (`paxos::Config::quiesce`).
    pub quiet_spells: u64,
    /// Writes handed to the disk without an fsync of their own (a
    /// learner's copy of a shard's log, chosen entries caught up) that a
    /// crash then lost.
    pub unsynced_lost: u64,
    /// Notes acknowledged (Read Committed writes, R16), and entries the
    /// outboxes queued for home shards (all of them shipped and applied
    /// once each by the end).
    pub notes: u64,
    pub queued: u64,
    /// Tag writes committed at an outbox (R17), and writes of them a write
    /// newer by origin replaced before they reached their home.
    pub tags: u64,
    pub superseded: u64,
    /// Monotonic Atomic View reads served by the readers' own replicas, and
    /// keys they held back at an older version (the newest one's
    /// transaction had not fully arrived at the reader's node).
    pub views: u64,
    pub views_held_back: u64,
    /// Rehomes of locality keys that moved rows (R18), and attempts that
    /// failed (lost to a concurrent writer, or to the faults).
    pub rehomes: u64,
    pub rehomes_failed: u64,
    /// Parts prepared at the statement that read their row for writing
    /// (R20), by transfers.
    pub prepared_early: u64,
    /// Tries of commits and prepares that waited for an older prepared
    /// transaction (R20).
    pub waits_for_older: u64,
    /// Commits recorded with the record's own part in one round (R21).
    pub decided_with_part: u64,
    /// Versions garbage collection removed, at every replica.
    pub collected: u64,
    /// Queued writes of a key that moved, requeued by their outboxes for
    /// the new home (proposals).
    pub reroutes: u64,
    /// Home shard leaderships handed to the node their requests came from
    /// (R22).
    pub handovers: u64,
    pub trace_digest: u64,
}

/// A failing run: its seed, what broke, and how to replay it.
#[derive(Clone, Debug)]
pub struct BankFailure {
    pub seed: u64,
    pub message: String,
    pub replay: String,
}

impl std::fmt::Display for BankFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed: {}\nreplay: {}\n(add --trace to print every event)",
            self.seed, self.message, self.replay
        )
    }
}

/// The one-line command that replays `seed` with `options`.
pub fn replay_command(seed: u64, options: &BankOptions) -> String {
    let mut command = format!("cargo run -p geodb-sim -- bank --seed {seed}");
    if options.faults.skip_commit_wait {
        command.push_str(" --skip-commit-wait");
    }
    if options.faults.ack_prepare_before_durable {
        command.push_str(" --ack-prepare-before-durable");
    }
    if options.faults.skip_range_validation {
        command.push_str(" --skip-range-validation");
    }
    if options.faults.skip_read_wait {
        command.push_str(" --skip-read-wait");
    }
    if options.faults.settle_orphans_early {
        command.push_str(" --settle-orphans-early");
    }
    if options.faults.commit_below_closed {
        command.push_str(" --commit-below-closed");
    }
    if options.faults.skip_settled_validation {
        command.push_str(" --skip-settled-validation");
    }
    if options.faults.skip_revalidation {
        command.push_str(" --skip-revalidation");
    }
    if options.faults.narrow_recovery {
        command.push_str(" --narrow-recovery");
    }
    if options.faults.ack_enqueue_before_durable {
        command.push_str(" --ack-enqueue-before-durable");
    }
    if options.faults.overwrite_newer_origin {
        command.push_str(" --overwrite-newer-origin");
    }
    if options.faults.show_siblings_early {
        command.push_str(" --show-siblings-early");
    }
    if options.faults.switch_home_before_copy {
        command.push_str(" --switch-home-before-copy");
    }
    if options.faults.skip_route_check {
        command.push_str(" --skip-route-check");
    }
    if options.faults.ignore_early_refusal {
        command.push_str(" --ignore-early-refusal");
    }
    if options.faults.own_part_after_decision {
        command.push_str(" --own-part-after-decision");
    }
    if options.faults.serve_below_gc_threshold {
        command.push_str(" --serve-below-gc-threshold");
    }
    if options.faults.collect_behind_any_version {
        command.push_str(" --collect-behind-any-version");
    }
    command
}

/// Runs one seed to the end and checks it; a panic inside the protocol (an
/// assertion) is a failure of that seed too.
pub fn run_bank(seed: u64, options: &BankOptions) -> Result<BankReport, BankFailure> {
    let failure = |message: String| BankFailure { seed, message, replay: replay_command(seed, options) };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| World::new(seed, options.clone()).run())) {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(message)) => Err(failure(message)),
        Err(panic) => Err(failure(format!("panicked: {}", crate::panic_message(panic.as_ref())))),
    }
}

/// Node ticks.
const TICK_US: u64 = 2_000;
const NODES_PER_REGION: u64 = 3;
/// R19: the window of the home shards' traffic tallies (simulated time).
const TRAFFIC_WINDOW_US: u64 = 2_000_000;
/// R22: how long a node must send most of a home shard's requests before
/// its leadership moves there (simulated time, well inside the fault phase).
const FOLLOW_WINDOW_US: u64 = 200_000;
/// Shards compact after this many applied slots: snapshots and catch-up
/// from them happen in every run.
const COMPACT_AFTER_SLOTS: u64 = 16;
/// Bytes of one snapshot chunk (the server's is 4 MiB): small enough that
/// every snapshot the run takes travels in several chunks.
const SNAPSHOT_CHUNK_BYTES: usize = 256;
/// The clock bound ε. Clocks are drawn within it (offsets, and drift too
/// small to leave it within a run).
const MAX_OFFSET_NS: u64 = 5_000_000;
/// Nodes measure each other's clocks this often (simulated), so that a run
/// sees many rounds of probes: none may find a clock skewed within ε beyond it.
const CLOCK_PING_INTERVAL_US: u64 = 100_000;
/// Clock drift, at most (parts per million), and what it can add to the
/// gap between two clocks over a whole run (of at most 10 s), with margin.
const DRIFT_PPM_MAX: i64 = 10;
const DRIFT_US_MAX: u64 = 2 * DRIFT_PPM_MAX as u64 * 10 + 10;
/// Simulated physical clocks start here (nanoseconds), so timestamps look
/// like real ones.
const EPOCH_NS: u64 = 1_800_000_000_000_000_000;
/// Nodes collect old versions this often (simulated; the server's default
/// is five minutes), keeping the history of a run-specific TTL of
/// [`GC_TTL_US`]: so that transactions whose snapshots were collected at
/// another node's replicas are refused in every run.
const GC_INTERVAL_US: u64 = 150_000;
const GC_TTL_US: [u64; 2] = [20_000, 400_000];
/// Versions a chunk of a pass looks at (the server's look at 10,000), and
/// the pause after it: a replica's pass spans many events.
const GC_CHUNK: usize = 48;
const GC_CHUNK_EVERY_US: u64 = 1_000;
/// A prepared transaction older than this (simulated) is recovered.
const RECOVERY_AFTER_US: u64 = 300_000;
/// A request parked on a lock longer than this is refused.
const LOCK_WAIT_MAX_US: u64 = 600_000;
/// A coordinator's call with no answer after this is lost.
const CALL_TIMEOUT_US: u64 = 400_000;
/// Leader redirects a call follows.
const REDIRECTS_MAX: u32 = 3;
/// After the quiet phase no transaction begins for this long before the
/// checks: commits in flight finish, recovery resolves what a dead
/// coordinator left (well over [`RECOVERY_AFTER_US`]), replicas catch up.
const SETTLE_US: u64 = 1_500_000;

#[derive(Debug)]
enum Event {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Deliver(NodeMessage),
    SyncDone {
        node: NodeId,
        incarnation: u64,
    },
    Crash {
        nodes: Vec<NodeId>,
    },
    CrashWhileSyncing {
        region: Option<usize>,
        attempts_left: u32,
    },
    Restart {
        node: NodeId,
    },
    /// The node stalls (a stop-the-world pause, a starved process): it
    /// handles nothing for `duration_us` while its clock runs on.
    Pause {
        node: NodeId,
        duration_us: u64,
    },
    Partition {
        id: u64,
    },
    Heal {
        id: u64,
    },
    /// A coordinator's call may have gone unanswered.
    CallTimeout {
        node: NodeId,
        incarnation: u64,
        id: u64,
    },
    /// A sleeping task's clock reading arrived.
    Wake {
        node: NodeId,
        incarnation: u64,
        id: u64,
    },
    /// Start (or restart) a client's task on its node.
    ClientStart {
        client: usize,
    },
    QuietPhase,
    /// Clients begin nothing new; recovery and replication settle.
    Settle,
    /// The node's garbage-collection pass over its replicas.
    Collect {
        node: NodeId,
        incarnation: u64,
    },
}

/// The shard that closes timestamps (R14), as the server's global shard.
pub(crate) const CLOSING_SHARD: ShardId = 4;
/// The outboxes of the three regions, in region order (R16).
pub(crate) const OUTBOXES: [ShardId; 3] = [5, 6, 7];
/// The directory of homes (R18), voters in every region.
pub(crate) const DIRECTORY_SHARD: ShardId = 8;
/// The shard of a locality key homed in each region, in region order
/// (us-central's is shard 1, whose voters are in us-east: its writes
/// through us-central's outbox).
pub(crate) const HOME_SHARDS: [ShardId; 3] = [2, 1, 3];

/// The region whose nodes are all of a shard's voters (`None`: the
/// closing shard, whose voters span regions).
pub(crate) fn home_region(shard: ShardId) -> Option<usize> {
    match shard {
        1 | 2 => Some(0),
        3 => Some(2),
        _ => OUTBOXES.iter().position(|outbox| *outbox == shard),
    }
}

/// A shard as configured at the start.
#[derive(Clone, Debug)]
struct ShardSpec {
    id: ShardId,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
    preferred: NodeId,
}

/// The physical clock of one node: the run's true time through the node's
/// offset and drift, in nanoseconds.
struct NodeClock {
    now_us: Arc<AtomicU64>,
    clock: Clock,
}

impl geodb_txn::Clock for NodeClock {
    fn now_ns(&self) -> u64 {
        EPOCH_NS + self.clock.local_us(self.now_us.load(Ordering::Relaxed)) * 1_000
    }
}

/// A call of this node in flight: what to resend on a redirect, and who
/// hears the answer.
struct Call {
    shard: ShardId,
    request: Request,
    target: NodeId,
    redirects: u32,
    /// The host's own request (recovery), by its id; else a coordinator's.
    host_id: Option<u64>,
}

struct SimNode {
    region: usize,
    up: bool,
    incarnation: u64,
    clock: Clock,
    disk: crate::disk::Disk,
    hlc: Arc<Hlc>,
    host: Host,
    /// The node's store. Only its snapshots family outlives a crash here:
    /// the state machines are rebuilt from their durable Paxos state and
    /// the snapshot chunks it names.
    engine: Arc<MemoryEngine>,
    stores: crate::disk::Stores,
    syncing: VecDeque<NodeReady>,
    rpc: NodeRpc,
    calls: HashMap<u64, Call>,
    /// The node is paused (a stalled process: its clock runs, it does
    /// nothing) until this instant, simulated.
    paused_until_us: u64,
    /// Its garbage-collection pass under way, if any.
    collecting: Option<NodePass>,
}

/// A node's garbage-collection pass under way: its horizon, the replicas
/// it goes over, the one it is at, and that one's pass.
struct NodePass {
    horizon: geodb_storage::Timestamp,
    replicas: Vec<Arc<Shard>>,
    at: usize,
    pass: Option<geodb_txn::participant::Pass>,
}

struct Client {
    node: NodeId,
    /// Transactions this client has begun (across restarts of its task).
    begun: Arc<std::sync::atomic::AtomicUsize>,
    task: Option<usize>,
}

struct World {
    options: BankOptions,
    scheduler: Scheduler<Event>,
    network: Network,
    now_us: Arc<AtomicU64>,
    nodes: BTreeMap<NodeId, SimNode>,
    shards: Vec<ShardSpec>,
    configs: BTreeMap<(NodeId, GroupId), Config>,
    clients: Vec<Client>,
    executor: Executor,
    history: History,
    /// Set once clients must begin nothing new.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Every node's current coordinator endpoint, for clients that hop to
    /// another gateway.
    gateways: workload::Gateways,
    hops: Arc<AtomicU64>,
    /// Rehomes that moved rows, and attempts that failed.
    rehomes: Arc<[AtomicU64; 2]>,
    /// Parts prepared at their statement (R20).
    prepared_early: Arc<AtomicU64>,
    planned_partitions: BTreeMap<u64, Partition>,
    quiet: bool,
    /// History garbage collection keeps (simulated microseconds).
    gc_ttl_us: u64,
    /// Every version a replica's collection removed, by shard, key and
    /// timestamp: with what the replicas still hold, the whole history
    /// the checks read.
    collected: std::cell::RefCell<BTreeMap<(ShardId, Vec<u8>, geodb_storage::Timestamp), geodb_storage::mvcc::Version>>,
    report: BankReport,
    failure: Option<String>,
}

impl World {
    fn new(seed: u64, options: BankOptions) -> Self {
        let mut scheduler = Scheduler::new(seed);
        let matrix = LatencyMatrix::standard();
        let regions = matrix.regions.len() as u64;
        let node_ids: Vec<NodeId> = (1..=regions * NODES_PER_REGION).map(NodeId).collect();
        let region_of: BTreeMap<NodeId, usize> =
            node_ids.iter().map(|node| (*node, ((node.0 - 1) / NODES_PER_REGION) as usize)).collect();
        let base_one_way_us = matrix.rtt_us[0][0] / 2 / options.latency_divisor;
        let network_config = NetworkConfig {
            loss: scheduler.between(0, 3_000),
            duplicate: scheduler.between(0, 3_000),
            jitter_us_max: base_one_way_us * scheduler.between(0, 4),
            latency_divisor: options.latency_divisor,
        };
        let network = Network::new(matrix, region_of.clone(), network_config);
        let n = NodeId;
        // Zone survival: voters in the home region, a learner on every
        // other node (every node holds every shard, as in a real cluster).
        let zone = |id: ShardId, voters: Vec<NodeId>, preferred: NodeId| ShardSpec {
            id,
            learners: node_ids.iter().copied().filter(|node| !voters.contains(node)).collect(),
            voters,
            preferred,
        };
        let shards = vec![
            zone(1, vec![n(1), n(2), n(3)], n(1)),
            zone(2, vec![n(1), n(2), n(3)], n(2)),
            zone(3, vec![n(7), n(8), n(9)], n(8)),
            ShardSpec {
                id: CLOSING_SHARD,
                voters: vec![n(1), n(2), n(4), n(5), n(7)],
                learners: vec![n(3), n(6), n(8), n(9)],
                preferred: n(1),
            },
            ShardSpec { id: OUTBOXES[0], voters: vec![n(1), n(2), n(3)], learners: vec![], preferred: n(2) },
            ShardSpec { id: OUTBOXES[1], voters: vec![n(4), n(5), n(6)], learners: vec![], preferred: n(4) },
            ShardSpec { id: OUTBOXES[2], voters: vec![n(7), n(8), n(9)], learners: vec![], preferred: n(9) },
            ShardSpec {
                id: DIRECTORY_SHARD,
                voters: vec![n(2), n(3), n(5), n(6), n(8)],
                learners: vec![n(1), n(4), n(7), n(9)],
                preferred: n(5),
            },
        ];
        let mut configs = BTreeMap::new();
        for shard in &shards {
            let rtt_us = shard
                .voters
                .iter()
                .flat_map(|a| shard.voters.iter().map(|b| network.rtt_us(*a, *b)))
                .max()
                .unwrap_or(0);
            for member in shard.voters.iter().chain(&shard.learners) {
                let mut config = Config::new(GroupId(shard.id), *member, shard.voters.clone(), rtt_us);
                config.learners = shard.learners.clone();
                config.heartbeat_interval_us = (2 * rtt_us).max(2 * TICK_US);
                config.election_timeout_us = 5 * config.heartbeat_interval_us;
                config.placement_delay_us = 5 * config.heartbeat_interval_us;
                config.preferred_leader = Some(shard.preferred);
                // As the server's shards: a pipeline, re-validated at apply.
                config.window_slots_max = geodb_txn::host::COMMIT_WINDOW_SLOTS;
                config.early_accepts = true;
                config.quiesce = true;
                config.faults.narrow_recovery = options.faults.narrow_recovery;
                // Snapshots of a few KiB travel in many chunks, so that
                // chunked transfer runs under every fault.
                config.snapshot_chunk_bytes = SNAPSHOT_CHUNK_BYTES;
                config.seed = rand::Rng::random(scheduler.rng());
                configs.insert((*member, GroupId(shard.id)), config);
            }
        }
        let now_us = Arc::new(AtomicU64::new(0));
        let executor = Executor::default();
        let mut nodes = BTreeMap::new();
        for node in &node_ids {
            // Offsets up to the bound, less what drift can add within a
            // run: every pair of clocks stays within ε, often near it.
            let clock = Clock {
                offset_us: scheduler.between(0, MAX_OFFSET_NS / 1_000 - DRIFT_US_MAX),
                drift_ppm: scheduler.between(0, 2 * DRIFT_PPM_MAX as u64) as i64 - DRIFT_PPM_MAX,
            };
            let fsync_us =
                if scheduler.chance(70_000) { scheduler.between(50, 500) } else { scheduler.between(1_000, 5_000) };
            let hlc = Arc::new(Hlc::new(Box::new(NodeClock { now_us: now_us.clone(), clock }), MAX_OFFSET_NS));
            nodes.insert(
                *node,
                SimNode {
                    region: region_of[node],
                    up: false,
                    incarnation: 0,
                    clock,
                    disk: crate::disk::Disk::new(fsync_us),
                    host: Host::new(HostConfig::new(*node), hlc.clone(), 0),
                    hlc,
                    engine: Arc::new(MemoryEngine::new()),
                    stores: crate::disk::Stores::default(),
                    syncing: VecDeque::new(),
                    rpc: NodeRpc::detached(),
                    calls: HashMap::new(),
                    paused_until_us: 0,
                    collecting: None,
                },
            );
        }
        let clients = node_ids.iter().map(|node| Client { node: *node, begun: Arc::default(), task: None }).collect();
        World {
            options,
            scheduler,
            network,
            now_us,
            nodes,
            shards,
            configs,
            clients,
            executor,
            history: Arc::default(),
            stopping: Arc::default(),
            gateways: Arc::default(),
            hops: Arc::default(),
            rehomes: Arc::default(),
            prepared_early: Arc::default(),
            planned_partitions: BTreeMap::new(),
            quiet: false,
            // From the seed alone, not the scheduler's draws: every other
            // choice a seed makes stays as it was.
            gc_ttl_us: GC_TTL_US[0] + seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) % (GC_TTL_US[1] - GC_TTL_US[0]),
            collected: std::cell::RefCell::default(),
            report: BankReport { seed, trace_digest: 0xcbf2_9ce4_8422_2325, ..BankReport::default() },
            failure: None,
        }
    }

    fn run(mut self) -> Result<BankReport, String> {
        let node_ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for node in &node_ids {
            self.restart(*node);
        }
        for client in 0..self.clients.len() {
            let start = self.scheduler.between(0, 20_000);
            self.scheduler.at(start, Event::ClientStart { client });
        }
        self.plan_faults(&node_ids);
        let fault_end = self.options.fault_phase_us;
        let settle = fault_end + self.options.quiet_phase_us;
        let end = settle + SETTLE_US;
        self.scheduler.at(fault_end, Event::QuietPhase);
        self.scheduler.at(settle, Event::Settle);
        while let Some(event) = self.scheduler.next_until(end) {
            self.now_us.store(self.scheduler.now_us(), Ordering::Relaxed);
            self.handle(event);
            self.poll_tasks();
            if let Some(message) = self.failure.take() {
                return Err(format!("{message} (at {} us)", self.scheduler.now_us()));
            }
        }
        self.report.events = self.scheduler.events_run();
        self.report.reads_waited +=
            self.nodes.values().filter(|node| node.up).map(|node| node.host.reads_waited()).sum::<u64>();
        for node in self.nodes.values().filter(|node| node.up) {
            self.report.settled_reads += node.host.settled_reads().served;
            self.report.settled_waits += node.host.settled_reads().waited_for_close;
            self.report.settled_validations += node.host.settled_reads().validated;
            self.report.views += node.host.views().served;
            self.report.views_held_back += node.host.views().held_back;
            self.report.reroutes += node.host.reroutes_proposed();
            self.report.waits_for_older += node.host.early_counts().waits;
            self.report.decided_with_part += node.host.early_counts().decided_with_part;
        }
        self.report.rehomes = self.rehomes[0].load(Ordering::Relaxed);
        self.report.rehomes_failed = self.rehomes[1].load(Ordering::Relaxed);
        self.report.prepared_early = self.prepared_early.load(Ordering::Relaxed);
        for node in self.nodes.values().filter(|node| node.up) {
            let orphans = node.host.orphans();
            self.report.orphans_chosen += orphans.chosen;
            self.report.orphans_never_chosen += orphans.never_chosen;
            self.report.orphans_unknown += orphans.unknown;
            self.report.skipped += node.host.skipped_proposals();
            self.report.pipelines_cut +=
                node.host.paxos().groups().map(|(_, replica)| replica.pipelines_cut()).sum::<u64>();
            self.report.quiet_spells += node.host.paxos().quiet_counts().0;
        }
        // The probes ran: every node measured its peers' clocks recently.
        for (id, node) in &self.nodes {
            if node.up && node.host.clock_status().peers.is_empty() {
                return Err(format!("node {id} has no fresh clock measurement of any peer"));
            }
        }
        self.check()?;
        Ok(self.report)
    }

    fn fail(&mut self, message: String) {
        if self.failure.is_none() {
            self.failure = Some(message);
        }
    }

    fn handle(&mut self, event: Event) {
        let now = self.scheduler.now_us();
        if self.options.trace {
            eprintln!("{now:>9} us  {event:?}");
        }
        let kind: u64 = match &event {
            Event::Tick { node, .. } => node.0,
            Event::Deliver(message) => 100 + message.to.0 * 10 + message.from.0,
            Event::SyncDone { node, .. } => 200 + node.0,
            Event::Crash { nodes } => 300 + nodes.len() as u64,
            Event::CrashWhileSyncing { .. } => 400,
            Event::Restart { node } => 500 + node.0,
            Event::Pause { node, .. } => 550 + node.0,
            Event::Partition { id } | Event::Heal { id } => 600 + id,
            Event::CallTimeout { node, .. } | Event::Wake { node, .. } => 700 + node.0,
            Event::ClientStart { client } => 800 + *client as u64,
            Event::QuietPhase => 900,
            Event::Settle => 1000,
            Event::Collect { node, .. } => 1100 + node.0,
        };
        for word in [now, kind] {
            self.report.trace_digest = (self.report.trace_digest ^ word).wrapping_mul(0x0100_0000_01b3);
        }
        // What a paused node would do waits until the pause ends.
        let target = match &event {
            Event::Tick { node, .. }
            | Event::SyncDone { node, .. }
            | Event::CallTimeout { node, .. }
            | Event::Wake { node, .. }
            | Event::Collect { node, .. } => Some(*node),
            Event::Deliver(message) => Some(message.to),
            Event::ClientStart { client } => Some(self.clients[*client].node),
            _ => None,
        };
        if let Some(node) = target
            && self.nodes[&node].paused_until_us > now
        {
            self.scheduler.at(self.nodes[&node].paused_until_us, event);
            return;
        }
        match event {
            Event::Tick { node, incarnation } => {
                if !self.is_live(node, incarnation) {
                    return;
                }
                let sim_node = self.nodes.get_mut(&node).expect("known node");
                let local = sim_node.clock.local_us(now);
                sim_node.host.tick(local);
                if let Some(offset_ns) = sim_node.host.clock_status().unsynchronized_ns {
                    // Every clock here is within ε of every other.
                    self.fail(format!("node {node} judged its clock {offset_ns} ns beyond the bound: a false alarm"));
                }
                self.scheduler.after(TICK_US, Event::Tick { node, incarnation });
                self.drive(node);
            }
            Event::Collect { node, incarnation } => {
                if self.is_live(node, incarnation) {
                    let next = self.collect(node);
                    self.scheduler.after(next, Event::Collect { node, incarnation });
                }
            }
            Event::Deliver(message) => self.deliver(message),
            Event::SyncDone { node, incarnation } => {
                if self.is_live(node, incarnation) {
                    self.sync_done(node);
                }
            }
            Event::Crash { nodes } => {
                for node in nodes {
                    self.crash(node);
                }
            }
            Event::CrashWhileSyncing { region, attempts_left } => self.crash_while_syncing(region, attempts_left),
            Event::Restart { node } => {
                if !self.nodes[&node].up {
                    self.restart(node);
                }
            }
            Event::Pause { node, duration_us } => {
                if !self.quiet && self.nodes[&node].up {
                    self.nodes.get_mut(&node).expect("known node").paused_until_us = now + duration_us;
                    self.report.pauses += 1;
                }
            }
            Event::Partition { id } => {
                if !self.quiet {
                    let partition = self.planned_partitions[&id].clone();
                    self.network.partition(id, partition);
                    self.report.partitions += 1;
                }
            }
            Event::Heal { id } => self.network.heal(id),
            Event::CallTimeout { node, incarnation, id } => {
                if self.is_live(node, incarnation)
                    && let Some(call) = self.nodes.get_mut(&node).expect("known node").calls.remove(&id)
                {
                    let reason = format!("no answer from node {} for shard {}", call.target, call.shard);
                    match call.host_id {
                        Some(host_id) => {
                            let response = Response::Refused(Refusal::Unavailable(reason));
                            self.host_reply(node, host_id, response);
                        }
                        None => self.nodes[&node].rpc.complete(id, Err(geodb_txn::RpcError::Lost(reason))),
                    }
                }
            }
            Event::Wake { node, incarnation, id } => {
                if self.is_live(node, incarnation) {
                    self.nodes[&node].rpc.wake(id);
                }
            }
            Event::ClientStart { client } => self.start_client(client),
            Event::Settle => self.stopping.store(true, Ordering::Relaxed),
            Event::QuietPhase => {
                self.quiet = true;
                self.network.heal_all();
                self.network.config.loss = 0;
                self.network.config.duplicate = 0;
                let down: Vec<NodeId> = self.nodes.iter().filter(|(_, node)| !node.up).map(|(id, _)| *id).collect();
                for node in down {
                    self.restart(node);
                }
            }
        }
    }

    fn is_live(&self, node: NodeId, incarnation: u64) -> bool {
        let sim_node = &self.nodes[&node];
        sim_node.up && sim_node.incarnation == incarnation
    }

    // --- node lifecycle ---------------------------------------------------------

    fn crash(&mut self, node: NodeId) {
        if !self.nodes[&node].up || self.quiet {
            return;
        }
        let down_us = self.scheduler.between(1_000, 400_000);
        self.scheduler.after(down_us, Event::Restart { node });
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        // Everything not yet durable is lost: the volatile engine (the
        // Paxos log is the state machines' durable source), every lock
        // table, every coordinator running here, every call in flight.
        sim_node.up = false;
        sim_node.incarnation += 1;
        let orphans = sim_node.host.orphans();
        self.report.orphans_chosen += orphans.chosen;
        self.report.orphans_never_chosen += orphans.never_chosen;
        self.report.orphans_unknown += orphans.unknown;
        self.report.quiet_spells += sim_node.host.paxos().quiet_counts().0;
        sim_node.syncing.clear();
        self.report.unsynced_lost += sim_node.stores.unsynced() as u64;
        sim_node.stores.crash();
        sim_node.calls.clear();
        sim_node.rpc.detach();
        self.gateways.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&node);
        let dead: Vec<usize> =
            self.clients.iter().filter(|client| client.node == node).filter_map(|client| client.task).collect();
        for task in dead {
            self.executor.kill(task);
        }
        for client in self.clients.iter_mut().filter(|client| client.node == node) {
            client.task = None;
        }
        self.report.crashes += 1;
    }

    fn restart(&mut self, node: NodeId) {
        let now = self.scheduler.now_us();
        let faults = self.options.faults;
        let peers: Vec<NodeId> = self.nodes.keys().copied().collect();
        let regions = self.nodes.iter().map(|(id, known)| (*id, known.region as u32)).collect();
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        sim_node.up = true;
        sim_node.incarnation += 1;
        sim_node.paused_until_us = 0;
        sim_node.collecting = None;
        sim_node.disk.restart(now);
        let local = sim_node.clock.local_us(now);
        let config = HostConfig {
            node,
            recovery_after_us: RECOVERY_AFTER_US,
            lock_wait_max_us: LOCK_WAIT_MAX_US,
            clock_ping_interval_us: CLOCK_PING_INTERVAL_US,
            peers,
            faults: HostFaults {
                ack_prepare_before_durable: faults.ack_prepare_before_durable,
                skip_read_wait: faults.skip_read_wait,
                settle_orphans_early: faults.settle_orphans_early,
                ack_enqueue_before_durable: faults.ack_enqueue_before_durable,
                show_siblings_early: faults.show_siblings_early,
            },
            // R19: the home shards' leaders tally where their keys' traffic
            // comes from, as in `geodb dev`, so the simulator runs that code
            // under its faults too (a rehome never depends on it).
            traffic: Some(TrafficConfig { window_us: TRAFFIC_WINDOW_US, ..TrafficConfig::default() }),
            // R22: so do they count which node their requests come from,
            // with bars low enough that leaderships move several times a
            // run although every node is a gateway here (in `geodb dev` a
            // node must send 80 % of them, and a config may not ask for
            // half or less): the handover is an election under the
            // simulator's faults like any other.
            follow: Some(FollowConfig { window_us: FOLLOW_WINDOW_US, share: 0.3, min_requests: 5.0 }),
            regions,
            homes: HOME_SHARDS.iter().enumerate().map(|(region, shard)| (*shard, region as u32)).collect(),
        };
        // A restarted node rebuilds its state machines from its durable
        // Paxos state and snapshot chunks alone (the rest of the engine is
        // volatile here), with a new hybrid clock (a process's clock state
        // does not survive it).
        sim_node.hlc = Arc::new(Hlc::new(
            Box::new(NodeClock { now_us: self.now_us.clone(), clock: sim_node.clock }),
            MAX_OFFSET_NS,
        ));
        let engine = match snapshots_after_a_crash(&sim_node.engine) {
            Ok(engine) => engine,
            Err(error) => return self.fail(format!("{node}: its snapshots cannot be read after a crash: {error}")),
        };
        let mut host = Host::new(config, sim_node.hlc.clone(), sim_node.incarnation << 40);
        let validation = ValidationFaults {
            skip_ranges: faults.skip_range_validation,
            commit_below_closed: faults.commit_below_closed,
            skip_revalidation: faults.skip_revalidation,
            overwrite_newer_origin: faults.overwrite_newer_origin,
            skip_route_check: faults.skip_route_check,
            own_part_after_decision: faults.own_part_after_decision,
            serve_below_gc_threshold: faults.serve_below_gc_threshold,
            collect_behind_any_version: faults.collect_behind_any_version,
        };
        for shard in &self.shards {
            let group = GroupId(shard.id);
            let Some(config) = self.configs.get(&(node, group)) else { continue };
            let view: Arc<dyn Engine> =
                Arc::new(ScopedEngine::new(engine.clone() as Arc<dyn Engine>, geodb_txn::shard_prefix(shard.id)));
            let state = Shard::open_with_faults(shard.id, view, sim_node.hlc.clone(), true, validation)
                .expect("a fresh memory engine opens");
            let stored = sim_node.stores.durable.entry(group).or_default().clone();
            let (lead_ns, interval_us) = closing(config);
            if let Err(error) = host.add_group(config.clone(), stored, Arc::new(state), COMPACT_AFTER_SLOTS, local) {
                return self.fail(format!("{node}: {group} cannot restart: {error}"));
            }
            if shard.id == CLOSING_SHARD {
                host.set_closing(shard.id, lead_ns, interval_us);
            }
        }
        sim_node.host = host;
        sim_node.engine = engine;
        sim_node.rpc = NodeRpc::attached(node, sim_node.incarnation);
        self.gateways.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(
            node,
            workload::Gateway { hlc: sim_node.hlc.clone(), rpc: sim_node.rpc.clone(), region: sim_node.region },
        );
        let incarnation = sim_node.incarnation;
        let first_tick = self.scheduler.between(1, TICK_US);
        self.scheduler.after(first_tick, Event::Tick { node, incarnation });
        self.scheduler.after(GC_INTERVAL_US, Event::Collect { node, incarnation });
        self.drive(node);
        for client in 0..self.clients.len() {
            if self.clients[client].node == node && self.clients[client].task.is_none() {
                let delay = self.scheduler.between(1_000, 10_000);
                self.scheduler.after(delay, Event::ClientStart { client });
            }
        }
    }

    /// One chunk of `node`'s garbage-collection pass over its replicas
    /// (starting a pass below its clock less the run's TTL if none is under
    /// way); answers when the next chunk, or the next pass, is due. Passes
    /// ignore the node's running transactions (each client's coordinator is
    /// a manager of its own here), so transactions older than the TTL meet
    /// refusals ("snapshot too old", retried like any conflict) in every
    /// run; and a pass's chunks interleave with everything else the node
    /// does, snapshot restores and crashes included.
    fn collect(&mut self, node: NodeId) -> u64 {
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        let ttl_ns = self.gc_ttl_us * 1_000;
        let pass = sim_node.collecting.get_or_insert_with(|| NodePass {
            horizon: geodb_txn::participant::gc_horizon(sim_node.hlc.physical_now_ns(), ttl_ns, None),
            replicas: sim_node.host.shards().cloned().collect(),
            at: 0,
            pass: None,
        });
        let collected = &self.collected;
        let removed = std::cell::Cell::new(0);
        let outcome = loop {
            let Some(replica) = pass.replicas.get(pass.at) else { break Ok(true) };
            if pass.pass.is_none() {
                match replica.begin_collection(pass.horizon) {
                    Ok(Some(started)) => pass.pass = Some(started),
                    Ok(None) => {
                        pass.at += 1;
                        continue;
                    }
                    Err(error) => break Err(error),
                }
            }
            let shard = replica.id();
            let keep = |key: &[u8], version: &geodb_storage::mvcc::Version| {
                removed.set(removed.get() + 1);
                collected.borrow_mut().insert((shard, key.to_vec(), version.ts), version.clone());
            };
            match replica.collect_chunk(pass.pass.as_mut().expect("started above"), &keep, GC_CHUNK) {
                Ok(true) => {
                    pass.at += 1;
                    pass.pass = None;
                    break Ok(false);
                }
                Ok(false) => break Ok(false),
                Err(error) => break Err(error),
            }
        };
        self.report.collected += removed.get();
        match outcome {
            Ok(true) => {
                self.nodes.get_mut(&node).expect("known node").collecting = None;
                GC_INTERVAL_US
            }
            Ok(false) => GC_CHUNK_EVERY_US,
            Err(error) => {
                self.fail(format!("{node}: garbage collection failed: {error}"));
                GC_INTERVAL_US
            }
        }
    }

    // --- persistence and messages -------------------------------------------

    /// Takes the node's Paxos outputs and starts making them durable; sends
    /// what needs no durability (answers, the host's requests) at once.
    fn drive(&mut self, node: NodeId) {
        self.flush_outputs(node);
        let now = self.scheduler.now_us();
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        if !sim_node.up {
            return;
        }
        let mut ready = sim_node.host.take_ready();
        if ready.is_empty() {
            return;
        }
        // As the server's driver: a leader's accepts go out at once, beside
        // its disk write (`paxos::Config::early_accepts`, set on every shard).
        let mut early = Vec::new();
        for (_, group_ready) in ready.iter_mut() {
            early.extend(group_ready.take_early_sends().into_iter().map(NodeMessage::paxos));
        }
        let needs_sync = ready.iter().any(|(_, group_ready)| group_ready.persist.sync);
        let done_at = sim_node.disk.durable_at(now, needs_sync);
        let incarnation = sim_node.incarnation;
        let immediate = done_at == now && sim_node.syncing.is_empty();
        sim_node.syncing.push_back(ready);
        for message in early {
            self.transmit(message);
        }
        if immediate {
            self.sync_done(node);
        } else {
            self.scheduler.at(done_at, Event::SyncDone { node, incarnation });
        }
    }

    /// The oldest Ready of `node` is durable: persist, then send, then apply.
    fn sync_done(&mut self, node: NodeId) {
        let now = self.scheduler.now_us();
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        let ready = sim_node.syncing.pop_front().expect("a sync completes a queued Ready");
        sim_node.stores.write(&ready);
        let mut outgoing = Vec::new();
        for (_, group_ready) in &ready {
            outgoing.extend(group_ready.send.iter().cloned().map(NodeMessage::paxos));
        }
        self.report.snapshots_installed +=
            ready.iter().filter(|(_, group_ready)| group_ready.restore.is_some()).count() as u64;
        let local = sim_node.clock.local_us(now);
        if let Err(error) = sim_node.host.advance(local, ready) {
            self.fail(format!("{node}: the host could not apply: {error}"));
            return;
        }
        if sim_node.host.orphans().contradicted > 0 {
            self.fail(format!("{node}: a proposal its host declared never chosen was applied"));
            return;
        }
        for message in outgoing {
            self.transmit(message);
        }
        self.drive(node);
    }

    /// Delivers the host's answers and requests.
    fn flush_outputs(&mut self, node: NodeId) {
        loop {
            let sim_node = self.nodes.get_mut(&node).expect("known node");
            if !sim_node.up {
                return;
            }
            self.report.handovers += sim_node.host.take_handovers().len() as u64;
            let outputs = sim_node.host.take_outputs();
            if outputs.is_empty() {
                return;
            }
            for output in outputs {
                match output {
                    HostOutput::Reply { origin, response } if origin.node == node => {
                        self.answer(node, origin.id, response);
                    }
                    HostOutput::Reply { origin, response } => {
                        self.transmit(NodeMessage::new(node, origin.node, Body::Reply { id: origin.id, response }))
                    }
                    HostOutput::Request { id, shard, request } => {
                        if matches!(request, Request::Recover { .. }) {
                            self.report.recovered += 1;
                        }
                        let call_id = self.nodes[&node].rpc.next_id();
                        let call = Call { shard, request, target: node, redirects: 0, host_id: Some(id) };
                        self.dispatch(node, call_id, call);
                    }
                    HostOutput::MembershipApplied { .. } => {}
                    HostOutput::Send(message) => self.transmit(message),
                }
            }
        }
    }

    /// Sends call `id` of `node` to the shard's leader as `node` knows it
    /// (or, for a Read Committed read, to a replica in its region).
    fn dispatch(&mut self, node: NodeId, id: u64, mut call: Call) {
        let target = self.route(node, call.shard, &call.request);
        let Some(target) = target else {
            let reason = format!("shard {} has no known leader", call.shard);
            match call.host_id {
                Some(host_id) => self.host_reply(node, host_id, Response::Refused(Refusal::NotLeader { leader: None })),
                None => self.nodes[&node].rpc.complete(id, Err(geodb_txn::RpcError::NotSent(reason))),
            }
            return;
        };
        call.target = target;
        self.send_call(node, id, call);
    }

    /// Sends call `id` of `node` to `call.target` (in place when that is
    /// the node itself) and starts its timeout.
    fn send_call(&mut self, node: NodeId, id: u64, call: Call) {
        let (target, shard, request) = (call.target, call.shard, call.request.clone());
        let incarnation = self.nodes[&node].incarnation;
        self.nodes.get_mut(&node).expect("known node").calls.insert(id, call);
        self.scheduler.after(CALL_TIMEOUT_US, Event::CallTimeout { node, incarnation, id });
        if target == node {
            let local = self.nodes[&node].clock.local_us(self.scheduler.now_us());
            let sim_node = self.nodes.get_mut(&node).expect("known node");
            sim_node.host.handle_request(local, Origin { node, id }, shard, request);
            self.drive(node);
        } else {
            self.transmit(NodeMessage::new(node, target, Body::Request { id, shard, request }));
        }
    }

    fn route(&self, node: NodeId, shard: ShardId, request: &Request) -> Option<NodeId> {
        let sim_node = &self.nodes[&node];
        let leader = sim_node.host.leader_of(shard).or_else(|| {
            // A node holding no replica asks the shard's preferred leader.
            self.shards.iter().find(|spec| spec.id == shard).map(|spec| spec.preferred)
        });
        if request.needs_leader() {
            return leader;
        }
        if matches!(request, Request::View { .. }) {
            // MAV: the reader's own node only, as the server does.
            return Some(node);
        }
        let hosts_replica = self.configs.contains_key(&(node, GroupId(shard)));
        if hosts_replica
            && matches!(
                request,
                Request::Get { mode: ReadMode::Settled { .. }, .. }
                    | Request::Scan { mode: ReadMode::Settled { .. }, .. }
                    | Request::ValidateSettled { .. }
                    | Request::Pending { .. }
            )
        {
            // R14, R16: the reader's own replica, as the server does.
            return Some(node);
        }
        match leader {
            Some(leader) if self.nodes[&leader].region == sim_node.region => Some(leader),
            _ if hosts_replica => Some(node),
            other => other,
        }
    }

    /// An answer to call `id` of `node` arrived.
    fn answer(&mut self, node: NodeId, id: u64, response: Response) {
        let Some(mut call) = self.nodes.get_mut(&node).expect("known node").calls.remove(&id) else { return };
        if let Response::Refused(Refusal::NotLeader { leader: Some(leader) }) = &response
            && call.redirects < REDIRECTS_MAX
            && NodeId(*leader) != call.target
        {
            call.redirects += 1;
            call.target = NodeId(*leader);
            self.send_call(node, id, call);
            return;
        }
        match call.host_id {
            Some(host_id) => self.host_reply(node, host_id, response),
            None => self.nodes[&node].rpc.complete(id, Ok(response)),
        }
    }

    fn host_reply(&mut self, node: NodeId, host_id: u64, response: Response) {
        let local = self.nodes[&node].clock.local_us(self.scheduler.now_us());
        self.nodes.get_mut(&node).expect("known node").host.handle_reply(local, host_id, response);
        self.drive(node);
    }

    /// Sends a message between nodes. Paxos messages may be duplicated
    /// (Paxos tolerates it); requests and answers are not: the transport
    /// delivers each at most once (one TCP connection per node pair, no
    /// retransmission above it), and a coordinator's own retries are
    /// separate requests.
    fn transmit(&mut self, mut message: NodeMessage) {
        stamp_messages(self.nodes[&message.from].host.hlc(), std::slice::from_mut(&mut message));
        let duplicable = matches!(message.body, Body::Paxos { .. });
        let delivery = self.network.send(&mut self.scheduler, message.from, message.to, duplicable);
        self.report.messages_lost += u64::from(delivery.lost);
        for delay in delivery.delays_us {
            self.scheduler.after(delay, Event::Deliver(message.clone()));
        }
    }

    fn deliver(&mut self, message: NodeMessage) {
        let to = message.to;
        if self.network.is_blocked(message.from, to) || !self.nodes[&to].up {
            return;
        }
        let local = self.nodes[&to].clock.local_us(self.scheduler.now_us());
        if !observe_sender_clock(self.nodes[&to].host.hlc(), &message) {
            // Every clock here is within ε of every other, and a hybrid
            // clock never runs ahead of the fastest physical one.
            self.fail(format!(
                "node {to} found {}'s clock reading {} more than ε ahead of its own",
                message.from, message.hlc
            ));
        }
        match message.body {
            Body::Paxos { .. } => {
                let envelope = message.into_envelope().expect("a Paxos message");
                self.nodes.get_mut(&to).expect("known node").host.handle_message(local, envelope);
            }
            Body::Request { id, shard, request } => {
                let origin = Origin { node: message.from, id };
                self.nodes.get_mut(&to).expect("known node").host.handle_request(local, origin, shard, request);
            }
            Body::Reply { id, response } => self.answer(to, id, response),
            Body::ClockPing { .. } | Body::ClockPong { .. } => {
                self.nodes.get_mut(&to).expect("known node").host.handle_clock(local, message.from, &message.body);
            }
        }
        self.drive(to);
    }

    // --- tasks -----------------------------------------------------------------

    /// Polls every task that was woken, then carries out what they asked
    /// for (calls, sleeps).
    fn poll_tasks(&mut self) {
        loop {
            let ran = self.executor.run_ready();
            let mut effects = Vec::new();
            for (node, sim_node) in &self.nodes {
                for effect in sim_node.rpc.take_effects() {
                    effects.push((*node, effect));
                }
            }
            if effects.is_empty() && !ran {
                return;
            }
            for (node, effect) in effects {
                if !self.nodes[&node].up {
                    continue;
                }
                match effect {
                    rpc::Effect::Call { id, shard, request } => {
                        let call = Call { shard, request, target: node, redirects: 0, host_id: None };
                        self.dispatch(node, id, call);
                    }
                    rpc::Effect::Sleep { id, until_ns } => {
                        let sim_node = &self.nodes[&node];
                        let at = true_time_at(&sim_node.clock, until_ns, self.scheduler.now_us());
                        let incarnation = sim_node.incarnation;
                        self.scheduler.at(at, Event::Wake { node, incarnation, id });
                    }
                }
            }
        }
    }
}

/// The earliest true time at or after `now_us` at which `clock` reads at
/// least `until_ns` (physical, with the simulation's epoch).
fn true_time_at(clock: &Clock, until_ns: u64, now_us: u64) -> u64 {
    let wanted_us = until_ns.saturating_sub(EPOCH_NS).div_ceil(1_000);
    let (mut low, mut high) = (now_us, now_us.max(1) * 2 + wanted_us + 1);
    if clock.local_us(low) >= wanted_us {
        return low;
    }
    while low + 1 < high {
        let middle = low + (high - low) / 2;
        if clock.local_us(middle) >= wanted_us { high = middle } else { low = middle }
    }
    high
}

/// What a node's engine keeps through a crash here: what was synced of its
/// snapshots family (everything else is rebuilt from the Paxos state).
fn snapshots_after_a_crash(engine: &MemoryEngine) -> geodb_storage::Result<Arc<MemoryEngine>> {
    engine.crash();
    let mut chunks = WriteBatch::new();
    for pair in engine.scan(ColumnFamily::Snapshots, Bound::Unbounded, Bound::Unbounded, false)? {
        let (key, value) = pair?;
        chunks.put(ColumnFamily::Snapshots, key, value);
    }
    let kept = Arc::new(MemoryEngine::new());
    kept.write(chunks, Durability::Sync)?;
    Ok(kept)
}

/// How the closing shard's leader closes timestamps (R14): every
/// heartbeat interval, as the server's, ahead by what a `Close` needs to
/// reach the farthest replica (twice the group's widest round trip, which
/// the heartbeat interval is, and two intervals) plus twice the clock bound.
fn closing(config: &Config) -> (u64, u64) {
    let interval_us = config.heartbeat_interval_us;
    let lead_ns = (config.heartbeat_interval_us + 2 * interval_us) * 1_000 + 2 * MAX_OFFSET_NS;
    (lead_ns, interval_us)
}
