//! The host: a node's replicated shards, as one sans-IO step function.
//!
//! A [`Host`] owns a node's Multi-Paxos groups ([`MultiPaxos`]) and, for
//! each, the [`Shard`] that is its state machine. It is the contract
//! between replication and what is replicated, and it is the same code in
//! the server (`services/server`, one driver thread per node) and in the
//! simulator (`services/sim`, every node of a cluster in one thread):
//!
//! ```text
//!  inputs                        Host                           outputs
//!  handle_message(Envelope) ─►  Paxos groups  ─► take_ready():  persist, send   (Paxos, in that order)
//!  handle_request(origin, …) ─► shards:        ─► advance(ready) after persist:
//!  handle_reply(id, …)       ─►  read, validate,    restore, apply, reads; then
//!  tick(now)                 ─►  propose, apply  ─► take_outputs(): replies, requests
//! ```
//!
//! The runtime's loop: feed inputs; `take_ready`; make its `persist` parts
//! durable; send its messages; `advance` with it; send what `take_outputs`
//! returns (replies to coordinators, local or remote, and the host's own
//! requests to other shards, whose answers come back through
//! `handle_reply`). Outputs that need no durability (read answers,
//! refusals) may be taken and sent at any time.
//!
//! What the host adds to Paxos and the shards:
//!
//! - **Leadership** (R4, R5): a newly elected leader first runs its own
//!   read-index round (everything chosen before its ballot is applied here),
//!   then waits until its physical clock is ε past that moment, and only
//!   then lets its shard serve. Losing leadership stops serving at once:
//!   in-flight locks are dropped and waiting requests are refused.
//!   Proposals in flight wait for the next leader to settle them: applied
//!   here, they answer as usual; once every slot of the lost leadership
//!   is applied without them, they answer "not leader" (never chosen, safe
//!   to send again); after [`ORPHAN_WAIT_US`], or once a snapshot was
//!   restored here since they were proposed, "outcome unknown".
//! - **Barriers** (R4): a read that carries `barrier` is served only after a
//!   read-index round that started after it arrived.
//! - **Waiting** (R3): a read, or a highly available write, that meets a
//!   lock is parked and tried again whenever the shard releases locks; it
//!   gives up after `lock_wait_max_us`.
//! - **Recovery** (R9): a prepared transaction held longer than
//!   `recovery_after_us` is resolved from its record shard.
//! - **Snapshots**: every `snapshot_interval` applied slots a shard is
//!   snapshotted and the log compacted; a lagging replica restores one.
//! - **Clock offsets**: the host pings its peers and keeps the verdict on
//!   its own clock in the [`Hlc`] (module `offsets`); while its clock is
//!   outside the bound it refuses every request that relies on the bound
//!   (`Request::relies_on_clock_bound`).
//!
//! Proposals carry their origin (node and sequence number) so that the
//! node that proposed an entry answers its coordinator once the entry is
//! applied locally, and their lineage (the leadership that validated them
//! and the slot its shard had applied then), so that every replica skips
//! the same pipelined entries when a leader change replaced entries they
//! were validated against (R15).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use geodb_geo::NodeId;
use geodb_geo::paxos::{
    Ballot, ChunkReceived, ChunkToSend, Committed, Config, Envelope, GroupId, Membership, MultiPaxos, NodeReady,
    ProposeError, ReadOutcome, RoleKind, Snapshot, Stored, Value,
};
use geodb_storage::{CombinedWrite, Durability, Timestamp, TxnId};

use crate::offsets::{CLOCK_PING_INTERVAL_US, ClockOffsets, ClockStatus, MEASUREMENT_TTL_PINGS};
use crate::participant::{
    Applied, DeliveryProposal, MOVES_FOLLOWED_MAX, PendingRead, PrepareRound, Proposal, ReadGate, Shard, StagedSlot,
};
use crate::protocol::{Decision, Entry, KeyRange, Lineage, ReadMode, Refusal, Request, Response, ShardId};
use crate::traffic::{Dominant, FollowConfig, Leaning, Requesters, Traffic, TrafficConfig};
use crate::{Error, Hlc, Result};

mod ship;

pub use ship::{SHIP_RETRY_US, SHIP_TIMEOUT_US};

/// Slots a shard's leader keeps in flight (`paxos::Config::window_slots_max`
/// of every shard group): commits no longer wait for the slot before theirs
/// to be chosen. Safe because every replica re-validates a pipelined entry
/// as it applies it (R15, `Shard::stage_chosen`) and a new leader fills
/// this many slots with no-ops beyond what phase 1 recovered. It must be
/// the same on every node of a cluster (the wire protocol version changes
/// with it).
pub const COMMIT_WINDOW_SLOTS: u64 = 8;
/// Default: a prepared transaction this old is resolved from its record
/// shard. Far above a commit's normal duration (a few wide-area round trips).
pub const RECOVERY_AFTER_US: u64 = 2_000_000;
/// Default: how long a request waits for a lock before it is refused.
/// Well below how long a caller waits for an answer (10 s in the server),
/// so a refused wait is heard as a refusal (`08006`, nothing proposed),
/// not as a lost answer (`08007`).
pub const LOCK_WAIT_MAX_US: u64 = 5_000_000;
/// Requests parked on locks per node, at most; beyond it new ones are
/// refused as unavailable (load shedding rather than a growing queue).
pub const PARKED_MAX: usize = 16_384;
/// R19: how often a node looks for keys that one region dominates in the
/// tallies of the home shards it leads.
pub const TRAFFIC_LOOK_INTERVAL_US: u64 = 1_000_000;
/// R19: keys listed per shard at each look, at most (the heaviest): more
/// than a node's rehomes per minute would move anyway.
pub const LEANINGS_PER_SHARD_MAX: usize = 16;

/// Who asked: a coordinator on `node` (this one or another), and its own
/// number for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub node: NodeId,
    pub id: u64,
}

/// Everything nodes say to each other: Paxos messages of any group, and
/// coordinators' requests to shards and their answers. One connection per
/// node pair carries all of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeMessage {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's hybrid logical clock as it sent the message (stamped
    /// by [`stamp_messages`] at the last moment); the receiver folds it
    /// into its own ([`observe_sender_clock`]).
    pub hlc: Timestamp,
    pub body: Body,
}

/// A message arrived: every later timestamp of the receiving node's clock
/// `hlc` is above the sender's reading on it (Kulkarni et al., the receive
/// event), unless that reading is more than ε ahead of the receiver's
/// physical clock. Then it is ignored, and this answers false for the
/// caller to count: a peer that far off is judged by the offset
/// measurements ([`crate::offsets`]), never followed.
pub fn observe_sender_clock(hlc: &Hlc, message: &NodeMessage) -> bool {
    hlc.receive(message.hlc).is_ok()
}

/// Stamps messages about to be sent with one reading of the sender's clock.
pub fn stamp_messages(hlc: &Hlc, messages: &mut [NodeMessage]) {
    if messages.is_empty() {
        return;
    }
    let now = hlc.now();
    for message in messages {
        message.hlc = now;
    }
}

/// What a [`NodeMessage`] carries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Body {
    Paxos {
        group: GroupId,
        message: geodb_geo::paxos::Message,
    },
    /// A request (numbered by its sender) to the replica of `shard` on `to`.
    Request {
        id: u64,
        shard: ShardId,
        request: Request,
    },
    /// The answer to request `id` of `to`.
    Reply {
        id: u64,
        response: Response,
    },
    /// A clock-offset probe: the sender's physical clock when it sent it
    /// (see [`crate::offsets`]).
    ClockPing {
        sent_ns: u64,
    },
    /// The answer to a probe: the probe's own reading, echoed, and the
    /// answering node's physical clock.
    ClockPong {
        ping_ns: u64,
        remote_ns: u64,
    },
}

impl NodeMessage {
    /// A message not yet stamped with the sender's clock ([`stamp_messages`]).
    pub fn new(from: NodeId, to: NodeId, body: Body) -> NodeMessage {
        NodeMessage { from, to, hlc: Timestamp::ZERO, body }
    }

    pub fn paxos(envelope: Envelope) -> NodeMessage {
        let body = Body::Paxos { group: envelope.group, message: envelope.message };
        NodeMessage::new(envelope.from, envelope.to, body)
    }

    /// The Paxos envelope, if this is one.
    pub fn into_envelope(self) -> Option<Envelope> {
        match self.body {
            Body::Paxos { group, message } => Some(Envelope { group, from: self.from, to: self.to, message }),
            _ => None,
        }
    }
}

/// Test-only switches that plant runtime bugs, to prove the simulator
/// catches them. Never set outside tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFaults {
    /// Answer a prepare as soon as it is proposed, before it is chosen and
    /// durable.
    pub ack_prepare_before_durable: bool,
    /// Answer reads at once, even of versions whose timestamps the clocks
    /// have not passed yet.
    pub skip_read_wait: bool,
    /// Declare an orphaned proposal never chosen two slots before every
    /// slot of its leadership is applied.
    pub settle_orphans_early: bool,
    /// Answer an enqueue at an outbox as soon as it is proposed, before
    /// the region's quorum has it (R16).
    pub ack_enqueue_before_durable: bool,
    /// Show a Monotonic Atomic View reader every version at once, before
    /// the rest of its transaction has arrived ([`crate::view`]).
    pub show_siblings_early: bool,
}

/// How a host behaves.
#[derive(Clone, Debug)]
pub struct HostConfig {
    pub node: NodeId,
    pub recovery_after_us: u64,
    pub lock_wait_max_us: u64,
    /// How often the host pings each peer to measure clock offsets
    /// (0: never, and the clock is never judged).
    pub clock_ping_interval_us: u64,
    /// The nodes whose clocks it measures: every node of the cluster (this
    /// one is skipped). Empty: the members of its groups.
    pub peers: Vec<NodeId>,
    pub faults: HostFaults,
    /// R19: tally where each locality key's traffic comes from at the home
    /// shards this node leads ([`crate::traffic`]); `None`: don't.
    pub traffic: Option<TrafficConfig>,
    /// R22: move the leadership of a home shard this node leads to the
    /// voter of the shard's home region that sends most of its requests
    /// ([`crate::traffic::Requesters`]); `None`: don't.
    pub follow: Option<FollowConfig>,
    /// The region (index into the cluster's regions) of every node, for
    /// the tallies.
    pub regions: BTreeMap<NodeId, u32>,
    /// The home region of every home shard: only those are tallied.
    pub homes: BTreeMap<ShardId, u32>,
}

impl HostConfig {
    pub fn new(node: NodeId) -> Self {
        HostConfig {
            node,
            recovery_after_us: RECOVERY_AFTER_US,
            lock_wait_max_us: LOCK_WAIT_MAX_US,
            clock_ping_interval_us: CLOCK_PING_INTERVAL_US,
            peers: Vec::new(),
            faults: HostFaults::default(),
            traffic: None,
            follow: None,
            regions: BTreeMap::new(),
            homes: BTreeMap::new(),
        }
    }
}

/// R22: this node, leading `shard`, handed its leadership to `to`, which
/// now leads it: the node that had sent `share` of its `requests` from the
/// shard's home region (per window).
#[derive(Clone, Debug, PartialEq)]
pub struct Handover {
    pub shard: ShardId,
    pub to: NodeId,
    pub share: f64,
    pub requests: f64,
}

/// What the host asks the runtime to do (besides Paxos's own Ready).
#[derive(Clone, Debug, PartialEq)]
pub enum HostOutput {
    /// Answer a coordinator.
    Reply { origin: Origin, response: Response },
    /// Send a request to a shard's leader on the host's behalf; pass the
    /// answer (or a refusal if it cannot be delivered) to
    /// [`Host::handle_reply`] with `id`.
    Request { id: u64, shard: ShardId, request: Request },
    /// A membership change was applied here.
    MembershipApplied { group: GroupId, membership: Membership },
    /// Send this message (clock probes and their answers).
    Send(NodeMessage),
}

/// Reads at a closed timestamp (R14) on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettledCounts {
    /// Answered from this node's replica.
    pub served: u64,
    /// Found the replica's closed timestamp below the read and waited for
    /// the next one (a lead too short for the topology, or a replica cut
    /// off from its leader).
    pub waited_for_close: u64,
    /// Serializable transactions' reads validated here up to the closed
    /// timestamp, for a commit elsewhere ([`Request::ValidateSettled`]).
    pub validated: u64,
}

/// R20: what [`Host::early_counts`] counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EarlyCounts {
    /// Prepares at a statement (`values_follow`) proposed here.
    pub prepared_at_statement: u64,
    /// Tries of coordinated commits and prepares parked behind a prepared
    /// transaction with an older snapshot.
    pub waits: u64,
    /// R21: commits recorded with the record's own part in one round
    /// ([`Request::CommitRecord`]) proposed here.
    pub decided_with_part: u64,
}

/// Monotonic Atomic View reads on one node ([`crate::view`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewCounts {
    /// Views answered.
    pub served: u64,
    /// Keys shown at an older version (or not at all) because the newest
    /// one's transaction had not fully arrived at this node.
    pub held_back: u64,
}

/// A view asked of a node without a replica of a shard it reads: views are
/// served by the reader's own node only (another node's replicas may not
/// hold what the reader already saw).
fn no_replica_to_view(node: NodeId, shard: ShardId) -> Error {
    Error::Unavailable(format!("node {} holds no replica of shard {shard} to read it at Monotonic Atomic View", node.0))
}

/// Where a shard's leadership stands on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leadership {
    Follower,
    /// Elected; our own read-index round (`id`) is confirming.
    Confirming(u64),
    /// Caught up; waiting until the physical clock reads `until_ns` (R5).
    Waiting {
        until_ns: u64,
    },
    Serving,
}

struct Hosted {
    shard: Arc<Shard>,
    snapshot_interval: u64,
    leadership: Leadership,
    /// Snapshots restored here since start.
    restores: u64,
    /// R14: while this node leads the group, it closes timestamps ahead.
    closing: Option<Closing>,
    /// R19: while this node leads the group, where its keys' traffic comes
    /// from (a home shard that has served a routed request).
    traffic: Option<Traffic>,
    /// R22: while this node leads the group, which nodes its requests come
    /// from.
    requesters: Option<Requesters>,
}

/// How a group's leader closes timestamps (R14).
#[derive(Clone, Copy, Debug)]
struct Closing {
    lead_ns: u64,
    interval_us: u64,
    next_us: u64,
}

/// A request waiting: on a read-index round, or on a lock.
struct Parked {
    group: GroupId,
    origin: Origin,
    request: Request,
    since_us: u64,
}

/// Who hears the outcome of a proposal in flight once it is applied.
struct Pending {
    /// Who asked: the first request, and duplicates of it that arrived
    /// while it was in flight (a coordinator that sent it again).
    origins: Vec<Origin>,
    txn: TxnId,
    /// The leadership it was proposed under.
    ballot: Option<Ballot>,
    /// The group's restore count when it was proposed (see `settle_orphans`).
    restores: u64,
    /// A commit or prepare: the shard holds its locks in flight until it
    /// is applied or known never to be.
    holds_locks: bool,
    /// Set once this node stopped leading the group with the proposal
    /// still in flight.
    orphaned: Option<Orphaned>,
}

/// A proposal whose leader stepped down before it was applied. The next
/// leader re-proposes whatever it finds accepted, at the same slot, so the
/// proposal's fate is settled once this replica has applied every slot
/// its leadership used: applied by then, it was chosen; not applied, it
/// never will be, and its origin may safely send it again. If that takes
/// longer than [`ORPHAN_WAIT_US`], or a snapshot is restored here
/// meanwhile (it replaces slots without applying them one by one), the
/// origin hears that the outcome is unknown.
#[derive(Clone, Copy, Debug)]
struct Orphaned {
    last_slot: u64,
    since_us: u64,
}

/// How long an orphaned proposal waits for the next leader to settle it.
const ORPHAN_WAIT_US: u64 = 5_000_000;

/// How many proposals declared never chosen are remembered, to check the
/// claim if one is applied after all.
const NEVER_CHOSEN_KEPT: usize = 4_096;

/// How orphaned proposals were settled (see [`Orphaned`]), since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrphanCounts {
    /// Chosen after all: their origins heard the outcome.
    pub chosen: u64,
    /// Every slot of the lost leadership applied without them: their
    /// origins heard "not leader" and may send them again.
    pub never_chosen: u64,
    /// Their origins heard "outcome unknown".
    pub unknown: u64,
    /// Declared never chosen, then applied: a broken protocol invariant
    /// (always 0; the simulator fails a run otherwise).
    pub contradicted: u64,
}

/// The status of one group on this node.
#[derive(Clone, Debug, Default)]
pub struct GroupStatus {
    pub role: Option<RoleKind>,
    pub leader: Option<NodeId>,
    pub serving: bool,
    pub chosen: u64,
    pub applied: u64,
    pub snapshot_slot: u64,
    /// How many chunks that snapshot is stored in (0: none yet).
    pub snapshot_chunks: u64,
    pub membership: Membership,
    pub prepared: usize,
    /// The group is quiet here (`paxos::Config::quiesce`): idle, no timer
    /// running, woken by the next request or a member's change of liveness.
    pub quiet: bool,
}

/// The chosen slots of one [`Host::advance`] staged for one engine write:
/// at most one slot per group at a time, since a shard builds its next slot
/// on its last one published.
#[derive(Default)]
struct RoundApplies {
    write: CombinedWrite,
    /// Each staged slot: its group and shard, the origin (node, proposal
    /// sequence) of each of its commands, and the slot itself.
    staged: Vec<(GroupId, Arc<Shard>, Vec<(NodeId, u64)>, StagedSlot)>,
    /// Groups with a slot in `staged`.
    staged_groups: HashSet<GroupId>,
    /// Groups that applied any slot in this round.
    applied_groups: HashSet<GroupId>,
}

/// A node's replicated shards. See the module documentation.
pub struct Host {
    config: HostConfig,
    hlc: Arc<Hlc>,
    paxos: MultiPaxos,
    shards: BTreeMap<GroupId, Hosted>,
    next_seq: u64,
    /// Ordered, so that orphans are settled in the same order on every run
    /// of the simulator.
    proposals: BTreeMap<(GroupId, u64), Pending>,
    orphans: OrphanCounts,
    /// The latest proposals declared never chosen, oldest first.
    never_chosen: VecDeque<(GroupId, u64)>,
    never_chosen_set: HashSet<(GroupId, u64)>,
    /// Requests waiting for a read-index round, by round id.
    barriers: BTreeMap<u64, Vec<Parked>>,
    /// Requests waiting on locks, by group.
    parked: BTreeMap<GroupId, Vec<Parked>>,
    /// Reads waiting for the clock to pass what they read (physical ns).
    timed: Vec<(u64, Parked)>,
    /// Reads that had to wait for the clock (for metrics and the simulator).
    reads_waited: u64,
    settled: SettledCounts,
    views: ViewCounts,
    /// R20: see [`Host::early_counts`].
    early: EarlyCounts,
    /// Proposals of this node skipped by re-validation (R15).
    skipped: u64,
    parked_count: usize,
    next_read_id: u64,
    /// Recovery requests this host sent: id → (group, transaction).
    requests: HashMap<u64, (GroupId, TxnId)>,
    /// Transactions under recovery, and when it was last asked.
    recovering: HashMap<(GroupId, TxnId), u64>,
    next_request_id: u64,
    outputs: Vec<HostOutput>,
    now_us: u64,
    /// Clock offsets to peers, and when to probe them next.
    offsets: ClockOffsets,
    clock: ClockStatus,
    next_ping_us: u64,
    /// When stale prepared transactions are looked for next (`recover`).
    next_recover_us: u64,
    /// Groups whose leadership to look at in the next `track_leadership`:
    /// it changed, or a leader's confirmation could not start yet.
    watch: BTreeSet<GroupId>,
    /// Groups whose [`GroupStatus`] may have changed since the last
    /// [`Host::take_status_changes`].
    status_dirty: BTreeSet<GroupId>,
    /// Groups whose new leader waits out ε before serving (R5), and groups
    /// that close timestamps (R14): what `tick` looks at, instead of every
    /// group.
    waiting: BTreeSet<GroupId>,
    closing: Vec<GroupId>,
    /// R16: the outboxes' queues this node ships while it leads them.
    shipping: ship::Shipping,
    /// R19: the keys of the home shards this node leads that one other
    /// region has dominated for a window, as of the last look, and when
    /// to look next.
    leanings: Vec<(ShardId, Leaning)>,
    /// Bumped when `leanings` changes (a runtime publishes it then).
    leanings_generation: u64,
    next_traffic_us: u64,
    /// R22: when the requesters are looked at next, the handovers under
    /// way (to whom, why, since when), and those done since
    /// [`Host::take_handovers`].
    next_follow_us: u64,
    handing: BTreeMap<GroupId, (NodeId, Dominant, u64)>,
    handovers: Vec<Handover>,
}

/// Marks a command that carries its [`Lineage`] after the proposer's
/// header. Commands written before pipelines have the entry's format byte
/// there instead (never this value), and no lineage.
const LINEAGE_TAG: u8 = 0xA5;

/// A command of a group's log: who proposed it (to answer its waiter),
/// where its leader validated it (R15), and the entry itself.
fn encode_command(node: NodeId, seq: u64, lineage: Option<Lineage>, entry: &Entry) -> Vec<u8> {
    let entry = entry.encode();
    let mut out = Vec::with_capacity(16 + 25 + entry.len());
    out.extend_from_slice(&node.0.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    if let Some(lineage) = lineage {
        out.push(LINEAGE_TAG);
        out.extend_from_slice(&lineage.ballot.0.to_be_bytes());
        out.extend_from_slice(&lineage.ballot.1.to_be_bytes());
        out.extend_from_slice(&lineage.base.to_be_bytes());
    }
    out.extend_from_slice(&entry);
    out
}

fn decode_command(bytes: &[u8]) -> Result<(NodeId, u64, Option<Lineage>, Entry)> {
    let corrupt = |what: &str| Error::Storage(geodb_storage::Error::Corrupt(format!("log command {what}")));
    let word = |at: usize| -> Result<u64> {
        let bytes = bytes.get(at..at + 8).ok_or_else(|| corrupt("shorter than its header"))?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    };
    let node = word(0)?;
    let seq = word(8)?;
    let (lineage, entry_at) = if bytes.get(16) == Some(&LINEAGE_TAG) {
        let lineage = Lineage { ballot: (word(17)?, word(25)?), base: word(33)? };
        (Some(lineage), 41)
    } else {
        (None, 16)
    };
    let entry = bytes.get(entry_at..).ok_or_else(|| corrupt("shorter than its header"))?;
    Ok((NodeId(node), seq, lineage, Entry::decode(entry)?))
}

impl Host {
    /// A host with no groups yet. `first_seq` starts the proposal sequence
    /// numbers: they must not repeat across restarts while an old proposal
    /// may still be chosen (the server starts at random).
    pub fn new(config: HostConfig, hlc: Arc<Hlc>, first_seq: u64) -> Self {
        let measurement_ttl_us = config.clock_ping_interval_us.saturating_mul(MEASUREMENT_TTL_PINGS);
        Host {
            paxos: MultiPaxos::new(config.node, first_seq),
            config,
            hlc,
            shards: BTreeMap::new(),
            next_seq: first_seq,
            proposals: BTreeMap::new(),
            orphans: OrphanCounts::default(),
            never_chosen: VecDeque::new(),
            never_chosen_set: HashSet::new(),
            barriers: BTreeMap::new(),
            parked: BTreeMap::new(),
            timed: Vec::new(),
            reads_waited: 0,
            settled: SettledCounts::default(),
            views: ViewCounts::default(),
            early: EarlyCounts::default(),
            skipped: 0,
            parked_count: 0,
            next_read_id: 1,
            requests: HashMap::new(),
            recovering: HashMap::new(),
            next_request_id: 1,
            outputs: Vec::new(),
            now_us: 0,
            offsets: ClockOffsets::new(measurement_ttl_us),
            clock: ClockStatus::default(),
            next_ping_us: 0,
            next_recover_us: 0,
            watch: BTreeSet::new(),
            status_dirty: BTreeSet::new(),
            waiting: BTreeSet::new(),
            closing: Vec::new(),
            shipping: ship::Shipping::default(),
            leanings: Vec::new(),
            leanings_generation: 0,
            next_traffic_us: 0,
            next_follow_us: 0,
            handing: BTreeMap::new(),
            handovers: Vec::new(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.config.node
    }

    pub fn hlc(&self) -> &Arc<Hlc> {
        &self.hlc
    }

    /// Adds (or, after a restart, restores) this node's replica of a group
    /// whose state machine is `shard` (opened over the node's engine). The
    /// replica replays its log from `stored`; entries the shard already
    /// applied are skipped. Snapshot chunks other than those of the stored
    /// snapshot (an older one, a transfer cut short) are dropped.
    pub fn add_group(
        &mut self,
        config: Config,
        stored: Stored,
        shard: Arc<Shard>,
        snapshot_interval: u64,
        now_us: u64,
    ) -> Result<()> {
        let group = config.group;
        assert_eq!(group.0, shard.id(), "a shard is the state machine of the group with its number");
        let keep = stored.snapshot.as_ref().map(|snapshot| snapshot.slot.0);
        shard.drop_snapshots(|slot| Some(slot) != keep)?;
        shard.set_serving(false);
        shard.stamp_prepared(now_us);
        if !shard.queues().is_empty() {
            self.note_outbox(group);
        }
        self.paxos.add_group(config, stored, now_us);
        self.status_dirty.insert(group);
        self.shards.insert(
            group,
            Hosted {
                shard,
                snapshot_interval,
                leadership: Leadership::Follower,
                restores: 0,
                closing: None,
                traffic: None,
                requesters: None,
            },
        );
        Ok(())
    }

    /// R14: this node, while it leads `shard`, closes timestamps `lead_ns`
    /// ahead of its clock every `interval_us` (a `Close` entry), so that
    /// every replica serves reads at the present from what it has applied
    /// ([`ReadMode::Settled`]), and writes there commit `lead_ns` in the
    /// future (and wait that out). The lead must cover the interval, the
    /// time for an entry to reach the farthest replica, and twice the clock
    /// bound, or readers wait for the next `Close`.
    pub fn set_closing(&mut self, shard: ShardId, lead_ns: u64, interval_us: u64) {
        if let Some(hosted) = self.shards.get_mut(&GroupId(shard)) {
            hosted.closing = Some(Closing { lead_ns, interval_us: interval_us.max(1), next_us: 0 });
            if !self.closing.contains(&GroupId(shard)) {
                self.closing.push(GroupId(shard));
            }
        }
    }

    /// Proposes a closed timestamp for every group this node leads and
    /// closes, when its interval has passed.
    fn close_timestamps(&mut self, now_us: u64) {
        let mut due = Vec::new();
        for group in &self.closing {
            let Some(hosted) = self.shards.get_mut(group) else { continue };
            if let Some(closing) = &mut hosted.closing
                && hosted.leadership == Leadership::Serving
                && now_us >= closing.next_us
            {
                closing.next_us = now_us.saturating_add(closing.interval_us);
                due.push((*group, hosted.shard.clone(), closing.lead_ns));
            }
        }
        for (group, shard, lead_ns) in due {
            if let Ok(entry) = shard.propose_close(lead_ns) {
                self.propose(group, None, TxnId(0), entry);
            }
        }
    }

    pub fn shard(&self, shard: ShardId) -> Option<&Arc<Shard>> {
        self.shards.get(&GroupId(shard)).map(|hosted| &hosted.shard)
    }

    pub fn shards(&self) -> impl Iterator<Item = &Arc<Shard>> {
        self.shards.values().map(|hosted| &hosted.shard)
    }

    pub fn paxos(&self) -> &MultiPaxos {
        &self.paxos
    }

    /// The leader of `shard` as this node knows it.
    pub fn leader_of(&self, shard: ShardId) -> Option<NodeId> {
        self.paxos.group(GroupId(shard)).and_then(|replica| replica.leader())
    }

    pub fn status(&self) -> BTreeMap<GroupId, GroupStatus> {
        self.paxos.groups().map(|(group, replica)| (group, self.status_of(group, replica))).collect()
    }

    /// The status of every group that may have changed since the last call
    /// (all of them, the first time): what a runtime publishing statuses
    /// after every round needs, at the cost of the groups that did work.
    pub fn take_status_changes(&mut self) -> BTreeMap<GroupId, GroupStatus> {
        std::mem::take(&mut self.status_dirty)
            .into_iter()
            .filter_map(|group| Some((group, self.status_of(group, self.paxos.group(group)?))))
            .collect()
    }

    fn status_of(&self, group: GroupId, replica: &geodb_geo::paxos::Replica) -> GroupStatus {
        let hosted = &self.shards[&group];
        GroupStatus {
            role: Some(replica.role()),
            leader: replica.leader(),
            serving: hosted.leadership == Leadership::Serving,
            chosen: replica.chosen().0,
            applied: hosted.shard.applied_slot(),
            snapshot_slot: replica.snapshot_slot().0,
            snapshot_chunks: replica.snapshot_chunks(),
            membership: replica.membership().clone(),
            prepared: hosted.shard.stats().prepared,
            quiet: replica.is_quiesced(),
        }
    }

    // --- inputs --------------------------------------------------------------

    /// A Paxos message from another node.
    pub fn handle_message(&mut self, now_us: u64, envelope: Envelope) {
        self.now_us = now_us;
        if envelope.to == self.config.node {
            self.paxos.step(now_us, envelope);
        }
    }

    /// Time passes: Paxos timers, the end of a new leader's wait (R5),
    /// recovery of old prepared transactions, requests parked too long.
    pub fn tick(&mut self, now_us: u64) {
        self.now_us = now_us;
        self.paxos.tick(now_us);
        // A step-down by check-quorum persists and sends nothing, so no
        // `advance` may follow soon: notice it here.
        self.track_leadership(false);
        let physical = self.hlc.physical_now_ns();
        let shards = &mut self.shards;
        let status_dirty = &mut self.status_dirty;
        self.waiting.retain(|group| {
            let Some(hosted) = shards.get_mut(group) else { return false };
            match hosted.leadership {
                Leadership::Waiting { until_ns } if physical >= until_ns => {
                    hosted.leadership = Leadership::Serving;
                    hosted.shard.set_serving(true);
                    status_dirty.insert(*group);
                    false
                }
                Leadership::Waiting { .. } => true,
                _ => false,
            }
        });
        self.close_timestamps(now_us);
        if now_us >= self.next_recover_us {
            // A tenth of the recovery delay late at most: looking at every
            // shard's prepared transactions on every tick costs a node of
            // many groups more than recovery is worth.
            self.next_recover_us = now_us.saturating_add(self.config.recovery_after_us / 10);
            self.recover(now_us);
        }
        self.expire_parked(now_us);
        self.expire_orphans(now_us);
        self.wake(now_us);
        self.probe_clocks(now_us);
        self.ship();
        self.look_at_traffic(now_us);
        self.follow_requesters(now_us);
    }

    /// R22: counts a request to `group` from `node`, if this node leads a
    /// home shard there, `node` is in the shard's home region (requests from
    /// elsewhere pay a wide-area round trip wherever in the region the
    /// leader is), and leadership follows the workload.
    fn count_requester(&mut self, group: GroupId, node: NodeId) {
        let Some(config) = self.config.follow else { return };
        let Some(home) = self.config.homes.get(&group.0) else { return };
        if self.config.regions.get(&node) != Some(home) {
            return;
        }
        let Some(hosted) = self.shards.get_mut(&group) else { return };
        if hosted.leadership != Leadership::Serving {
            return;
        }
        let now_us = self.now_us;
        hosted.requesters.get_or_insert_with(|| Requesters::new(config, now_us)).record(node.0, now_us);
    }

    /// R22: once every [`TRAFFIC_LOOK_INTERVAL_US`] (or quarter of the
    /// window, if shorter), hands the leadership of each home shard this
    /// node leads to the node of the shard's home region that has sent most
    /// of the requests from there for a window, if that is another node
    /// (`docs/design/multipaxos.md`, "Leadership follows the workload"). The
    /// replica starts the handover only towards a voter that is caught up
    /// and not abstaining ([`geodb_geo::paxos::Replica::prefer`]); if it
    /// does not, the counts go on and the next look tries again. Once it
    /// started, the tally starts afresh, and the handover is reported
    /// ([`Host::take_handovers`]) when the node leads the shard.
    fn follow_requesters(&mut self, now_us: u64) {
        let Some(config) = self.config.follow else { return };
        if now_us < self.next_follow_us {
            return;
        }
        self.next_follow_us = now_us.saturating_add(TRAFFIC_LOOK_INTERVAL_US.min(config.window_us / 4));
        // Handovers under way: done once their node leads, forgotten after a
        // window (the replica gave up, or someone else was elected).
        let paxos = &self.paxos;
        let mut done = Vec::new();
        self.handing.retain(|group, (to, dominant, since_us)| {
            if paxos.group(*group).and_then(|replica| replica.leader()) == Some(*to) {
                done.push(Handover { shard: group.0, to: *to, share: dominant.share, requests: dominant.requests });
                return false;
            }
            now_us < since_us.saturating_add(config.window_us)
        });
        self.handovers.extend(done);
        let mut candidates = Vec::new();
        for (group, hosted) in &mut self.shards {
            if hosted.leadership != Leadership::Serving {
                hosted.requesters = None;
                continue;
            }
            let Some(requesters) = &mut hosted.requesters else { continue };
            let Some(dominant) = requesters.dominant(now_us) else { continue };
            let node = NodeId(dominant.node);
            if node != self.config.node && !self.handing.contains_key(group) {
                candidates.push((*group, node, dominant));
            }
        }
        for (group, to, dominant) in candidates {
            if self.paxos.prefer(group, to) {
                if let Some(hosted) = self.shards.get_mut(&group) {
                    hosted.requesters = None;
                }
                self.handing.insert(group, (to, dominant, now_us));
            }
        }
    }

    /// R22: the handovers done since the last call (the node this one
    /// handed a shard's leadership to leads it), for the runtime to log and
    /// count.
    pub fn take_handovers(&mut self) -> Vec<Handover> {
        std::mem::take(&mut self.handovers)
    }

    /// R19: counts a request to `group` from `node` in the group's tally
    /// of where its keys' traffic comes from, if this node leads it.
    fn tally(&mut self, group: GroupId, node: NodeId, request: &Request) {
        let Some(config) = self.config.traffic else { return };
        let Some(&region) = self.config.regions.get(&node) else { return };
        let Some(&home) = self.config.homes.get(&group.0) else { return };
        let Some(hosted) = self.shards.get_mut(&group) else { return };
        if hosted.leadership != Leadership::Serving {
            return;
        }
        let mut routes = request.routes();
        routes.retain(|route| !route.residence.is_empty());
        if routes.is_empty() {
            return;
        }
        routes.sort_by(|a, b| a.residence.cmp(&b.residence));
        routes.dedup_by(|a, b| a.residence == b.residence);
        let traffic = hosted.traffic.get_or_insert_with(|| Traffic::new(config, home));
        for route in routes {
            traffic.record(&route.residence, region, self.now_us);
        }
    }

    /// R19: once every [`TRAFFIC_LOOK_INTERVAL_US`], the keys of the home
    /// shards this node leads that another region than the shard's has
    /// dominated for a window ([`Host::leanings`]), at most
    /// [`LEANINGS_PER_SHARD_MAX`] per shard. A key that moved away is
    /// forgotten; one that moved here less than a window ago is left alone
    /// for now (it has not been here long enough to judge).
    fn look_at_traffic(&mut self, now_us: u64) {
        let Some(config) = self.config.traffic else { return };
        if now_us < self.next_traffic_us {
            return;
        }
        self.next_traffic_us = now_us.saturating_add(TRAFFIC_LOOK_INTERVAL_US);
        let before = std::mem::take(&mut self.leanings);
        let physical_ns = self.hlc.physical_now_ns();
        for (group, hosted) in &mut self.shards {
            if hosted.leadership != Leadership::Serving {
                hosted.traffic = None;
                continue;
            }
            let Some(traffic) = &mut hosted.traffic else { continue };
            for leaning in traffic.leanings(now_us, LEANINGS_PER_SHARD_MAX) {
                match hosted.shard.residence_now(&leaning.residence) {
                    Ok(Some((residence, _))) if residence.shard != hosted.shard.id() => {
                        traffic.forget(&leaning.residence);
                    }
                    Ok(Some((_, since)))
                        if since.physical.saturating_add(config.window_us.saturating_mul(1_000)) > physical_ns => {}
                    Ok(_) => self.leanings.push((group.0, leaning)),
                    Err(_) => {}
                }
            }
        }
        if self.leanings != before {
            self.leanings_generation += 1;
        }
    }

    /// R19: the keys of the home shards this node leads that another
    /// region has dominated for a window, heaviest first per shard, as of
    /// the last look (once a second), and a number that changes whenever
    /// they do. The runtime decides which to move.
    pub fn leanings(&self) -> (u64, &[(ShardId, Leaning)]) {
        (self.leanings_generation, &self.leanings)
    }

    /// Pings every peer when a ping interval has passed, and judges this
    /// node's clock from the measurements (see [`crate::offsets`]).
    fn probe_clocks(&mut self, now_us: u64) {
        let interval = self.config.clock_ping_interval_us;
        if interval == 0 || now_us < self.next_ping_us {
            return;
        }
        self.next_ping_us = now_us.saturating_add(interval);
        let sent_ns = self.hlc.physical_now_ns();
        let me = self.config.node;
        let mut peers: Vec<NodeId> = if self.config.peers.is_empty() {
            self.paxos.groups().flat_map(|(_, replica)| replica.membership().members().collect::<Vec<_>>()).collect()
        } else {
            self.config.peers.clone()
        };
        peers.retain(|peer| *peer != me);
        peers.sort_unstable();
        peers.dedup();
        for peer in peers {
            let ping = NodeMessage::new(me, peer, Body::ClockPing { sent_ns });
            self.outputs.push(HostOutput::Send(ping));
        }
        self.judge_clock(now_us);
    }

    fn judge_clock(&mut self, now_us: u64) {
        self.clock = self.offsets.status(now_us, self.hlc.max_offset_ns());
        self.hlc.set_unsynchronized(self.clock.unsynchronized_ns);
        // A node whose clock is outside the bound would hand out timestamps
        // (highly available writes too) that others follow: it leads
        // nothing until its clock is back.
        self.paxos.set_abstaining(self.clock.unsynchronized_ns.is_some());
    }

    /// A clock probe, or the answer to one of ours.
    pub fn handle_clock(&mut self, now_us: u64, from: NodeId, body: &Body) {
        self.now_us = now_us;
        let physical = self.hlc.physical_now_ns();
        match *body {
            Body::ClockPing { sent_ns } => {
                let pong = Body::ClockPong { ping_ns: sent_ns, remote_ns: physical };
                self.outputs.push(HostOutput::Send(NodeMessage::new(self.config.node, from, pong)));
            }
            Body::ClockPong { ping_ns, remote_ns } => {
                self.offsets.record(from, ping_ns, remote_ns, physical, now_us);
                self.judge_clock(now_us);
            }
            _ => {}
        }
    }

    /// This node's clock against its peers', as of the last tick.
    pub fn clock_status(&self) -> &ClockStatus {
        &self.clock
    }

    /// Serves the reads whose wait for the clock is over (see
    /// [`Host::next_wake_ns`]).
    pub fn wake(&mut self, now_us: u64) {
        self.now_us = now_us;
        if self.timed.is_empty() {
            return;
        }
        let physical = self.hlc.physical_now_ns();
        let (due, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.timed).into_iter().partition(|(until, _)| *until <= physical);
        self.timed = waiting;
        // Served again: the same snapshot gives the same answer, and the
        // clock is past it now (unless the leadership moved meanwhile).
        for (_, parked) in due {
            self.serve(parked);
        }
    }

    /// How orphaned proposals were settled (see [`OrphanCounts`]).
    pub fn orphans(&self) -> OrphanCounts {
        self.orphans
    }

    /// Reads answered only after waiting for the clock to pass the versions
    /// they returned, so far.
    pub fn reads_waited(&self) -> u64 {
        self.reads_waited
    }

    /// Reads at a closed timestamp (R14) served here, and how often one
    /// waited for a newer closed timestamp, so far.
    pub fn settled_reads(&self) -> SettledCounts {
        self.settled
    }

    /// R20: parts prepared at their statement (proposed here as their
    /// shard's leader), and tries of coordinated commits and prepares
    /// parked here behind a prepared transaction with an older snapshot.
    pub fn early_counts(&self) -> EarlyCounts {
        self.early
    }

    /// Monotonic Atomic View reads served here.
    pub fn views(&self) -> ViewCounts {
        self.views
    }

    /// Proposals of this node that the log chose but re-validation skipped
    /// (R15): their leader changed while they were in flight, and their
    /// coordinators heard `40001`.
    pub fn skipped_proposals(&self) -> u64 {
        self.skipped
    }

    /// The physical time (ns, this node's clock) at which a read waiting
    /// for the clock is due, if any: call [`Host::wake`] then.
    pub fn next_wake_ns(&self) -> Option<u64> {
        self.timed.iter().map(|(until, _)| *until).min()
    }

    /// A coordinator's request for `shard`.
    pub fn handle_request(&mut self, now_us: u64, origin: Origin, shard: ShardId, request: Request) {
        self.now_us = now_us;
        let group = GroupId(shard);
        if !self.shards.contains_key(&group) && matches!(request, Request::View { .. }) {
            // Served by the reader's own node only: another node's replicas
            // may not hold what the reader already saw.
            self.refuse(origin, &no_replica_to_view(self.config.node, shard));
            return;
        }
        if !self.shards.contains_key(&group) {
            let leader = self.leader_of(shard).map(|node| node.0);
            self.reply(origin, Response::Refused(Refusal::NotLeader { leader }));
            return;
        }
        self.tally(group, origin.node, &request);
        self.count_requester(group, origin.node);
        self.serve(Parked { group, origin, request, since_us: now_us });
    }

    /// The answer to a request this host sent ([`HostOutput::Request`]).
    pub fn handle_reply(&mut self, now_us: u64, id: u64, response: Response) {
        self.now_us = now_us;
        if self.shipped_reply(id, response.clone()) {
            return;
        }
        let Some((group, txn)) = self.requests.remove(&id) else { return };
        let (decision, carried) = match response {
            Response::Decided(decision) => (decision, None),
            // R20: with the values of our part, if it was prepared without.
            Response::Recovered { decision, carried } => {
                (decision, carried.into_iter().find(|carried| carried.shard == group.0))
            }
            _ => return,
        };
        // Resolve our part as recorded; a later tick asks again if this
        // proposal is lost.
        let hosted = &self.shards[&group];
        let fits = matches!(decision, Decision::Abort) || hosted.shard.resolves_with(txn, carried.as_ref());
        if hosted.leadership == Leadership::Serving && hosted.shard.is_prepared(txn) && fits {
            self.propose(group, None, txn, Entry::Resolve { txn, decision, carried });
        }
    }

    /// Proposes a membership change of `group` (see
    /// `MultiPaxos::propose_membership`); [`HostOutput::MembershipApplied`]
    /// follows once it is applied here.
    pub fn propose_membership(&mut self, group: GroupId, membership: Membership) -> Result<(), ProposeError> {
        self.paxos.propose_membership(group, membership)
    }

    // --- serving -------------------------------------------------------------

    fn leader_hint(&self, group: GroupId) -> Option<u64> {
        self.paxos
            .group(group)
            .and_then(|replica| replica.leader())
            .filter(|node| *node != self.config.node)
            .map(|n| n.0)
    }

    fn serving(&self, group: GroupId) -> bool {
        self.shards.get(&group).is_some_and(|hosted| hosted.leadership == Leadership::Serving)
    }

    fn reply(&mut self, origin: Origin, response: Response) {
        self.outputs.push(HostOutput::Reply { origin, response });
    }

    fn refuse(&mut self, origin: Origin, error: &Error) {
        self.reply(origin, Response::Refused(Refusal::from(error)));
    }

    fn not_leader(&mut self, origin: Origin, group: GroupId) {
        let leader = self.leader_hint(group);
        self.reply(origin, Response::Refused(Refusal::NotLeader { leader }));
    }

    /// Serves (or parks) one request.
    fn serve(&mut self, parked: Parked) {
        let group = parked.group;
        let shard = self.shards[&group].shard.clone();
        let origin = parked.origin;
        if parked.request.needs_leader() && !self.serving(group) {
            self.not_leader(origin, group);
            return;
        }
        if parked.request.relies_on_clock_bound()
            && let Err(error) = self.hlc.check_synchronized()
        {
            self.refuse(origin, &error);
            return;
        }
        match &parked.request {
            Request::Get { mode, .. } | Request::Scan { mode, .. }
                if matches!(mode, ReadMode::At { barrier: true, .. }) =>
            {
                // R4: confirm leadership with a round that starts now.
                let id = self.next_read_id;
                self.next_read_id += 1;
                match self.paxos.read_index(group, id, self.now_us) {
                    Ok(()) => {
                        let mut parked = parked;
                        clear_barrier(&mut parked.request);
                        self.barriers.entry(id).or_default().push(parked);
                    }
                    Err(_) => self.not_leader(origin, group),
                }
            }
            Request::Get { key, mode, guard, route, .. } => {
                match self.count_settled(mode, shard.check_get(key, guard.as_ref(), route.as_ref(), mode)) {
                    Ok(ReadGate::Ready) => match shard.check_guard(guard.as_ref(), mode).and_then(|()| {
                        shard.check_route(route.as_ref(), mode)?.then(|| shard.get_timed(key, mode)).transpose()
                    }) {
                        Ok(Some((value, newest))) => self.answer_when_past(parked, newest, Response::Value(value)),
                        // R18: the move here is not applied yet.
                        Ok(None) => self.park(parked),
                        Err(error) => self.refuse(origin, &error),
                    },
                    Ok(ReadGate::Blocked(_) | ReadGate::Behind) => self.park(parked),
                    Err(error) => self.refuse(origin, &error),
                }
            }
            Request::Scan { range, reverse, limit, mode, guard, route, versions, .. } => {
                match self.count_settled(mode, shard.check_scan(range, guard.as_ref(), route.as_ref(), mode)) {
                    Ok(ReadGate::Ready) => match shard.check_guard(guard.as_ref(), mode).and_then(|()| {
                        if !shard.check_route(route.as_ref(), mode)? {
                            return Ok(None);
                        }
                        Ok(Some(if *versions {
                            let (rows, newest) = shard.scan_versions(range, mode)?;
                            (Response::Versions(rows), newest)
                        } else {
                            let (rows, newest) = shard.scan_timed(range, *reverse, *limit, mode)?;
                            (Response::Rows(rows), newest)
                        }))
                    }) {
                        Ok(Some((response, newest))) => self.answer_when_past(parked, newest, response),
                        Ok(None) => self.park(parked),
                        Err(error) => self.refuse(origin, &error),
                    },
                    Ok(ReadGate::Blocked(_) | ReadGate::Behind) => self.park(parked),
                    Err(error) => self.refuse(origin, &error),
                }
            }
            Request::CommitOne(changes) => {
                let txn = changes.txn;
                match shard.propose_commit(changes) {
                    Ok(Proposal::Entry(entry)) => self.propose(group, Some(origin), txn, entry),
                    Ok(Proposal::Blocked(_)) => {
                        if !changes.isolation.is_highly_available() {
                            self.early.waits += 1;
                        }
                        self.park(parked)
                    }
                    Ok(Proposal::AlreadyCommitted(ts)) => self.reply(origin, Response::Committed(ts)),
                    // A duplicate of a request in flight: answered with it.
                    Ok(Proposal::InFlight) => self.answer_with_in_flight(group, changes.txn, origin),
                    Ok(Proposal::AlreadyPrepared(_)) => unreachable!("a one-round commit is never prepared"),
                    Err(error) => self.refuse(origin, &error),
                }
            }
            Request::Prepare { changes, record, participants, round, values_follow, may_wait } => {
                let txn = changes.txn;
                let round = PrepareRound { round: *round, values_follow: *values_follow, may_wait: *may_wait };
                match shard.propose_prepare_round(changes, *record, participants, round) {
                    Ok(Proposal::Entry(entry)) => {
                        if round.values_follow {
                            self.early.prepared_at_statement += 1;
                        }
                        let prepare_ts = match &entry {
                            Entry::Prepare(prepared) => prepared.prepare_ts,
                            _ => unreachable!("a prepare proposal"),
                        };
                        if self.config.faults.ack_prepare_before_durable {
                            self.reply(origin, Response::Prepared(prepare_ts));
                            self.propose(group, None, txn, entry);
                        } else {
                            self.propose(group, Some(origin), txn, entry);
                        }
                    }
                    Ok(Proposal::AlreadyPrepared(ts)) => self.reply(origin, Response::Prepared(ts)),
                    Ok(Proposal::Blocked(_)) => {
                        self.early.waits += 1;
                        self.park(parked)
                    }
                    // A duplicate of a prepare in flight: answered with it.
                    Ok(Proposal::InFlight) => self.answer_with_in_flight(group, txn, origin),
                    Ok(Proposal::AlreadyCommitted(_)) => unreachable!("a prepare is never a one-round commit"),
                    Err(error) => self.refuse(origin, &error),
                }
            }
            Request::Decide { txn, decision, carried } => match shard.decision(*txn) {
                Ok(Some(recorded)) => self.reply(origin, Response::Decided(recorded)),
                Ok(None) => {
                    let entry = Entry::Decide { txn: *txn, decision: *decision, carried: carried.clone() };
                    self.propose(group, Some(origin), *txn, entry)
                }
                Err(error) => self.refuse(origin, &error),
            },
            Request::CommitRecord { own, participants, floor, carried } => match shard.decided_before_commit(own.txn) {
                Ok(Some(recorded)) => self.reply(origin, Response::Decided(recorded)),
                Ok(None) => match shard.propose_commit_record(own, participants, *floor, carried) {
                    Ok(Proposal::Entry(entry)) => {
                        self.early.decided_with_part += 1;
                        self.propose(group, Some(origin), own.txn, entry)
                    }
                    Ok(Proposal::InFlight) => self.answer_with_in_flight(group, own.txn, origin),
                    Ok(other) => unreachable!("a commit at the record is proposed or refused, not {other:?}"),
                    Err(error) => self.refuse(origin, &error),
                },
                Err(error) => self.refuse(origin, &error),
            },
            Request::Resolve { txn, decision: Decision::Commit(_), carried }
                if !shard.resolves_with(*txn, carried.as_ref()) =>
            {
                let error = Error::Invalid(format!(
                    "transaction {txn}: a commit whose values do not fit its part at shard {} (left prepared for recovery)",
                    group.0
                ));
                self.refuse(origin, &error);
            }
            Request::Resolve { txn, decision, carried } => {
                // R20: an abort of a prepare still in flight here is proposed
                // behind it, so the prepare, if chosen, is resolved rather
                // than left to recovery.
                let in_flight = *decision == Decision::Abort && shard.in_flight(*txn);
                if shard.is_prepared(*txn) || in_flight {
                    let entry = Entry::Resolve { txn: *txn, decision: *decision, carried: carried.clone() };
                    self.propose(group, Some(origin), *txn, entry);
                } else {
                    if *decision == Decision::Abort {
                        // R20: a prepare of it still parked here must not
                        // take its locks after the abort.
                        self.drop_parked(group, *txn);
                    }
                    self.reply(origin, Response::Resolved);
                }
            }
            Request::Recover { txn } => match (shard.decision(*txn), shard.carried(*txn)) {
                (Ok(Some(decision)), Ok(carried)) => self.reply(origin, Response::Recovered { decision, carried }),
                (Ok(None), _) => {
                    let entry = Entry::Decide { txn: *txn, decision: Decision::Abort, carried: Vec::new() };
                    self.propose(group, Some(origin), *txn, entry)
                }
                (Err(error), _) | (_, Err(error)) => self.refuse(origin, &error),
            },
            Request::Enqueue(enqueued) => {
                let txn = enqueued.txn;
                match shard.propose_enqueue(enqueued) {
                    Ok(Proposal::Entry(entry)) => {
                        if self.config.faults.ack_enqueue_before_durable
                            && let Entry::Enqueue { ts, .. } = &entry
                        {
                            self.reply(origin, Response::Committed(*ts));
                            self.propose(group, None, txn, entry);
                        } else {
                            self.propose(group, Some(origin), txn, entry);
                        }
                    }
                    Ok(Proposal::Blocked(_)) => self.park(parked),
                    Ok(Proposal::AlreadyCommitted(ts)) => self.reply(origin, Response::Committed(ts)),
                    Ok(Proposal::InFlight) => self.answer_with_in_flight(group, txn, origin),
                    Ok(Proposal::AlreadyPrepared(_)) => unreachable!("an enqueue is never prepared"),
                    Err(error) => self.refuse(origin, &error),
                }
            }
            Request::Deliver { from, entries } => {
                let (from, entries) = (*from, entries.clone());
                self.serve_delivery(parked, &shard, from, &entries);
            }
            Request::Pending { range, after, homes } => {
                let (range, after, homes) = (range.clone(), *after, homes.clone());
                self.serve_pending(parked, &shard, &range, after, &homes);
            }
            Request::View { .. } => self.serve_view(parked),
            Request::ValidateSettled { changes, at_least } => match shard.validate_settled(changes, *at_least) {
                Ok(Some(closed)) => {
                    self.settled.validated += 1;
                    self.reply(origin, Response::Validated(closed));
                }
                // Not closed up to the snapshot yet: after the next `Close`.
                Ok(None) => self.park(parked),
                Err(error) => self.refuse(origin, &error),
            },
        }
    }

    /// Serves [`Request::Pending`] at this node's replica of an outbox once
    /// it has applied what the reader acknowledged there (`after`). A write
    /// queued for a home shard whose replica here is behind what the reader
    /// acknowledged there (`homes`) waits for that replica's applies. Left
    /// out: a shipped write that replica has applied, and any write it
    /// holds a newer one of by origin (R17: replaced there, or to be).
    fn serve_pending(
        &mut self,
        parked: Parked,
        shard: &Shard,
        range: &KeyRange,
        after: Timestamp,
        homes: &[(ShardId, Timestamp)],
    ) {
        if !shard.caught_up(after) {
            self.park(parked);
            return;
        }
        let home_here = |dest: ShardId| self.shards.get(&GroupId(dest)).map(|home| &home.shard);
        let lagging = |dest: ShardId| {
            homes
                .iter()
                .any(|(home, seen)| *home == dest && home_here(dest).is_some_and(|replica| !replica.caught_up(*seen)))
        };
        let reads = match shard.pending(range) {
            Ok(reads) => reads,
            Err(error) => return self.refuse(parked.origin, &error),
        };
        // The homes the reader reads first: what they hold decides what
        // it is shown (and where a queued write's key lives now, below).
        if let Some((home, _)) = homes.iter().find(|(home, _)| lagging(*home)) {
            self.park_until_applied(GroupId(*home), parked);
            return;
        }
        // R18: a write queued for a home its key has left is judged against
        // the home it lives at now (its outbox requeues it there): as the
        // replicas here of the homes it was queued for know (hop by hop), or
        // of a home the reader reads, whichever has seen the move.
        let mut dests = Vec::with_capacity(reads.len());
        for read in &reads {
            let moved = |read: &PendingRead| -> Result<Option<ShardId>> {
                // Hop by hop: a key may have moved more than once since.
                let (mut at, mut route) = (read.dest, read.route.clone());
                for _ in 0..MOVES_FOLLOWED_MAX {
                    let Some(home) = home_here(at) else { break };
                    let Some(residence) = home.moved_from(&route)? else { break };
                    (at, route.epoch) = (residence.shard, residence.home.epoch);
                }
                if at != read.dest {
                    return Ok(Some(at));
                }
                for (home, _) in homes {
                    if home_here(*home).map(|replica| replica.holds_since(&read.route)).transpose()? == Some(true) {
                        return Ok(Some(*home));
                    }
                }
                Ok(None)
            };
            match moved(read) {
                Ok(moved) => dests.push(moved.unwrap_or(read.dest)),
                Err(error) => return self.refuse(parked.origin, &error),
            }
        }
        if let Some(dest) = dests.iter().copied().find(|dest| lagging(*dest)) {
            self.park_until_applied(GroupId(dest), parked);
            return;
        }
        let mut writes = Vec::with_capacity(reads.len());
        for (read, dest) in reads.into_iter().zip(dests) {
            let applied_here =
                read.shipped.is_some_and(|(dest, ts)| home_here(dest).is_some_and(|home| home.last_commit_ts() >= ts));
            let replaced_here = match home_here(dest).map(|home| home.newest_origin(&read.key)).transpose() {
                Ok(newest) => newest.flatten().is_some_and(|newest| newest > (read.origin, read.txn)),
                Err(error) => return self.refuse(parked.origin, &error),
            };
            if !applied_here && !replaced_here {
                writes.push((read.key, read.value, read.shipped));
            }
        }
        let oldest = shard.queues().iter().filter_map(|queue| queue.oldest).min();
        let (shipped, forgotten) = (shard.shipped(), shard.forgotten());
        self.reply(parked.origin, Response::Pending { writes, shipped, forgotten, oldest });
    }

    /// Serves [`Request::View`] from this node's replicas once each has
    /// applied what the reader's gateway acknowledged there, and what this
    /// region's outbox no longer shows of the shards read.
    fn serve_view(&mut self, parked: Parked) {
        let Request::View { range, shards, reverse, limit, after, outbox, at_most, required, guards } = &parked.request
        else {
            unreachable!("serve_view serves views");
        };
        let replica = |shard: ShardId| self.shards.get(&GroupId(shard)).map(|hosted| hosted.shard.as_ref());
        let outbox_replica = outbox.and_then(&replica);
        // What each replica here must have applied to tell what the reader's
        // gateway wrote: its acknowledged commits, and what the outbox
        // shipped there and no longer shows.
        let mut floors: BTreeMap<ShardId, Timestamp> = after.iter().copied().collect();
        for (dest, forgotten) in outbox_replica.map(|outbox| outbox.forgotten()).unwrap_or_default() {
            let floor = floors.entry(dest).or_default();
            *floor = (*floor).max(forgotten);
        }
        let mut lagging = None;
        for shard in shards.iter().chain(outbox) {
            let Some(local) = replica(*shard) else {
                return self.refuse(parked.origin, &no_replica_to_view(self.config.node, *shard));
            };
            if !local.caught_up(floors.get(shard).copied().unwrap_or_default()) {
                lagging = Some(*shard);
                break;
            }
        }
        if let Some(shard) = lagging {
            return self.park_until_applied(GroupId(shard), parked);
        }
        let shard_of = |shard: ShardId| replica(shard);
        let replicas = crate::view::Replicas {
            shard: &shard_of,
            outbox: outbox_replica,
            show_early: self.config.faults.show_siblings_early,
            at_most: *at_most,
            floors,
        };
        let outcome =
            replicas.check_guards(guards).and_then(|()| replicas.view(range, shards, *reverse, *limit, required));
        let response = match outcome {
            Ok(crate::view::ViewOutcome::Viewed(viewed)) => {
                self.views.served += 1;
                self.views.held_back += viewed.held_back;
                Response::Viewed { rows: viewed.rows, seen: viewed.seen }
            }
            Ok(crate::view::ViewOutcome::Behind(shard)) => return self.park_until_applied(GroupId(shard), parked),
            Err(error) => Response::Refused(Refusal::from(&error)),
        };
        self.reply(parked.origin, response);
    }

    /// Answers a read at a timestamp only once every clock in the cluster
    /// has passed the newest version it returns (physical − ε > its
    /// timestamp): a version may carry a timestamp ahead of real time (the
    /// clock of the leader that committed it), and a reader that shows it
    /// earlier lets a transaction that begins later, through a slower
    /// clock, miss it (R6, on the read side; Spanner keeps locks through
    /// commit wait for the same reason). Usually no wait at all. Latest
    /// reads (Read Committed) promise no real-time order and never wait.
    fn answer_when_past(&mut self, parked: Parked, newest: geodb_storage::Timestamp, response: Response) {
        let at_timestamp = matches!(
            parked.request,
            Request::Get { mode: ReadMode::At { .. } | ReadMode::Settled { .. }, .. }
                | Request::Scan { mode: ReadMode::At { .. } | ReadMode::Settled { .. }, .. }
        );
        let until_ns = newest.physical.saturating_add(self.hlc.max_offset_ns()).saturating_add(1);
        if !at_timestamp || self.config.faults.skip_read_wait || self.hlc.physical_now_ns() >= until_ns {
            self.reply(parked.origin, response);
            return;
        }
        self.reads_waited += 1;
        self.timed.push((until_ns, parked));
    }

    /// A request repeated while its first copy is in flight here hears the
    /// first copy's outcome. If the first copy is not in flight through
    /// this host (its locks are held by an earlier leadership's proposal,
    /// which is orphaned or gone), the outcome is unknown.
    fn answer_with_in_flight(&mut self, group: GroupId, txn: TxnId, origin: Origin) {
        let pending = self
            .proposals
            .iter_mut()
            .find(|((of, _), pending)| *of == group && pending.holds_locks && pending.txn == txn)
            .map(|(_, pending)| pending);
        match pending {
            Some(pending) => pending.origins.push(origin),
            None => {
                let message = format!("transaction {txn} is already being committed here; its outcome is unknown");
                self.reply(origin, Response::Refused(Refusal::OutcomeUnknown(message)));
            }
        }
    }

    /// Counts a read at a closed timestamp (R14) by how it found the
    /// replica, and passes the gate on.
    fn count_settled(&mut self, mode: &ReadMode, gate: Result<ReadGate>) -> Result<ReadGate> {
        if matches!(mode, ReadMode::Settled { .. }) {
            match gate {
                Ok(ReadGate::Ready) => self.settled.served += 1,
                Ok(ReadGate::Behind) => self.settled.waited_for_close += 1,
                _ => {}
            }
        }
        gate
    }

    fn park(&mut self, parked: Parked) {
        let group = parked.group;
        self.park_until_applied(group, parked);
    }

    /// Parks a request until `group` (its own, or another shard it waits
    /// for) applies something, then serves it again at its own group.
    fn park_until_applied(&mut self, group: GroupId, parked: Parked) {
        if self.parked_count >= PARKED_MAX {
            let error = Error::Unavailable("too many requests are waiting on locks here; retry shortly".into());
            self.refuse(parked.origin, &error);
            return;
        }
        self.parked_count += 1;
        self.parked.entry(group).or_default().push(parked);
    }

    /// Proposes `entry` to `group`; `origin` (if any) hears the outcome once
    /// it is applied here.
    fn propose(&mut self, group: GroupId, origin: Option<Origin>, txn: TxnId, entry: Entry) {
        if let Entry::Decide { decision: Decision::Commit(ts), .. }
        | Entry::Resolve { decision: Decision::Commit(ts), .. }
        | Entry::CommitRecord { ts, .. } = &entry
        {
            // Before any later proposal of this shard is validated: a
            // prepare that follows this commit in the log must take a
            // timestamp above it, or a replica that applied the commit but
            // not the prepare would look caught up to the prepared
            // transaction's commit timestamp (Read Committed's
            // read-your-writes, `Shard::caught_up`). The shard's floor says
            // so even for a timestamp ahead of every clock (R14), which
            // the clock does not follow.
            self.hlc.observe_past(*ts);
            if let Some(hosted) = self.shards.get(&group) {
                hosted.shard.raise_floor(*ts);
            }
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        // R15: the entry was validated (if at all) just now, against what
        // the shard applied and the proposals before it in flight.
        let ballot = self.paxos.group(group).and_then(|replica| replica.leader_ballot());
        let lineage = ballot.map(|ballot| Lineage {
            ballot: (ballot.round, ballot.node.0),
            base: self.shards.get(&group).map_or(0, |hosted| hosted.shard.applied_slot()),
        });
        let command = encode_command(self.config.node, seq, lineage, &entry);
        let holds_locks = matches!(
            entry,
            Entry::Commit { .. }
                | Entry::Prepare(_)
                | Entry::CommitRecord { .. }
                | Entry::Enqueue { .. }
                | Entry::Deliver { .. }
        );
        match self.paxos.propose(group, command) {
            Ok(()) => {
                let origins = origin.into_iter().collect();
                let restores = self.shards[&group].restores;
                let pending = Pending { origins, txn, ballot, restores, holds_locks, orphaned: None };
                self.proposals.insert((group, seq), pending);
            }
            Err(error) => {
                if holds_locks {
                    self.shards[&group].shard.abandon(txn);
                }
                if let Some(origin) = origin {
                    let refusal = match error {
                        ProposeError::NotLeader { leader } => Refusal::NotLeader { leader: leader.map(|node| node.0) },
                        other => Refusal::Unavailable(format!("shard {} cannot take proposals now: {other}", group.0)),
                    };
                    self.reply(origin, Response::Refused(refusal));
                }
            }
        }
    }

    // --- after persist -------------------------------------------------------

    /// Every group's Paxos Ready; make their `persist` durable, send their
    /// messages, then pass them to [`Host::advance`].
    pub fn take_ready(&mut self) -> NodeReady {
        self.paxos.take_ready()
    }

    /// Replies and requests for the runtime to deliver.
    pub fn take_outputs(&mut self) -> Vec<HostOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// After `ready` was made durable (and its messages sent): restores
    /// snapshots, applies chosen entries, serves read-index rounds, and
    /// follows leadership. An error is a failed engine write or a corrupt
    /// entry: the runtime must stop this host (a replica that skipped an
    /// entry would diverge) and fail everything waiting ([`Host::fail`]).
    pub fn advance(&mut self, now_us: u64, ready: NodeReady) -> Result<()> {
        self.now_us = now_us;
        let mut elected = Vec::new();
        let advanced: Vec<GroupId> = ready.iter().map(|(group, _)| *group).collect();
        self.status_dirty.extend(advanced.iter().copied());
        // Every group's chosen slots are built first and written to the
        // engine together (one write per engine underneath, not one per
        // shard); what comes after an apply (reads served, parked requests
        // retried) waits until they are published. An error (a failed
        // write, a corrupt entry, a failed restore) leaves the slots staged
        // before it unwritten and unanswered: the runtime stops the host,
        // which answers every waiter, and a restart applies them from the
        // log.
        let mut applies = RoundApplies::default();
        let mut after = Vec::with_capacity(advanced.len());
        for (group, group_ready) in ready {
            // The leader's own acceptances in it now count as votes
            // (`Config::early_accepts`: its accepts went out before this).
            self.paxos.persisted(group, &group_ready.persist);
            if !self.shards.contains_key(&group) {
                continue;
            }
            if group_ready.became_leader.is_some() {
                elected.push(group);
            }
            let shard = self.shards[&group].shard.clone();
            self.move_snapshot_chunks(group, &shard, group_ready.snapshot_sends, group_ready.snapshot_chunks)?;
            if let Some(snapshot) = group_ready.restore
                && snapshot.slot.0 > shard.applied_slot()
            {
                shard.restore(snapshot.slot.0, snapshot.chunks, now_us)?;
                self.shards.get_mut(&group).expect("hosted").restores += 1;
                if !shard.queues().is_empty() {
                    self.note_outbox(group);
                }
                self.settle_orphans(group);
            }
            for committed in group_ready.apply {
                // A shard's next slot is built on its last one published.
                if applies.staged_groups.contains(&group) {
                    self.write_applies(&mut applies)?;
                }
                self.stage_apply(&mut applies, group, &shard, committed)?;
            }
            let snapshot = group_ready.persist.snapshot.as_ref().map(|snapshot| snapshot.slot.0);
            after.push((group, shard, group_ready.reads, snapshot));
        }
        self.write_applies(&mut applies)?;
        for (group, shard, reads, snapshot) in after {
            let applied = applies.applied_groups.contains(&group);
            if applied {
                self.settle_orphans(group);
            }
            for read in reads {
                self.read_done(group, read.id, read.outcome);
            }
            // Parked requests wait on locks (released by applies) or on the
            // replica catching up (any apply).
            if applied {
                self.retry_parked(group);
            }
            // A snapshot persisted: the ones before it are needed no more.
            if let Some(snapshot) = snapshot {
                shard.drop_snapshots(|slot| slot < snapshot)?;
            }
        }
        for group in elected {
            self.start_leadership(group);
        }
        self.track_leadership(true);
        self.maybe_compact(&advanced)?;
        self.ship();
        Ok(())
    }

    /// Sends the snapshot chunks peers asked for, read from the shard's
    /// store (one it no longer has is not sent: the peer asks again), and
    /// stores the chunks received, durably, before telling the replica.
    fn move_snapshot_chunks(
        &mut self,
        group: GroupId,
        shard: &Shard,
        sends: Vec<ChunkToSend>,
        received: Vec<ChunkReceived>,
    ) -> Result<()> {
        for send in sends {
            let Some(data) = shard.snapshot_chunk(send.slot.0, send.index)? else { continue };
            let envelope = send.envelope(group, self.config.node, data);
            self.outputs.push(HostOutput::Send(NodeMessage::paxos(envelope)));
        }
        for chunk in received {
            // Kept when a transfer starts: the replica's own snapshot (asked
            // for each time: storing a chunk may install one), and any older
            // one not yet replaced on disk (a newer one waits to be persisted).
            let keep = self.paxos.group(group).map_or(0, |replica| replica.snapshot_slot().0);
            shard.store_snapshot_chunk(chunk.slot.0, chunk.index, chunk.data, keep)?;
            self.paxos.chunk_stored(group, chunk.slot, chunk.index);
        }
        Ok(())
    }

    /// Builds the apply of one chosen slot into `applies`, to be written
    /// with the round's others and then published ([`Host::write_applies`]).
    fn stage_apply(
        &mut self,
        applies: &mut RoundApplies,
        group: GroupId,
        shard: &Arc<Shard>,
        committed: Committed,
    ) -> Result<()> {
        let slot = committed.slot.0;
        if slot <= shard.applied_slot() {
            // Replayed after a restart: the engine holds it already.
            return Ok(());
        }
        let commands = match committed.value {
            Value::Batch(commands) => commands,
            Value::Noop => Vec::new(),
            Value::Reconfigure(membership) => {
                self.outputs.push(HostOutput::MembershipApplied { group, membership });
                Vec::new()
            }
        };
        let mut origins = Vec::with_capacity(commands.len());
        let mut lineages = Vec::with_capacity(commands.len());
        let mut entries = Vec::with_capacity(commands.len());
        for command in &commands {
            let (node, seq, lineage, entry) = decode_command(command)?;
            if matches!(entry, Entry::Enqueue { .. }) {
                self.note_outbox(group);
            }
            origins.push((node, seq));
            lineages.push(lineage);
            entries.push(entry);
        }
        // Every slot is applied, commands or not, so the applied index never
        // lags what the log holds.
        let mut staged = shard.stage_chosen(slot, &entries, &lineages, self.now_us)?;
        applies.write.add(shard.engine(), staged.take_batch());
        applies.staged.push((group, shard.clone(), origins, staged));
        applies.staged_groups.insert(group);
        applies.applied_groups.insert(group);
        Ok(())
    }

    /// Writes the slots staged in `applies` (one engine write per engine
    /// underneath: one on a node, whose shards are views of its engine),
    /// publishes each, and answers what each of its entries did.
    fn write_applies(&mut self, applies: &mut RoundApplies) -> Result<()> {
        if applies.staged.is_empty() {
            return Ok(());
        }
        let write = std::mem::take(&mut applies.write);
        // Buffered: the Paxos log holds every slot durably, and a restart
        // applies again what the engine lost.
        write.write(Durability::Buffered)?;
        applies.staged_groups.clear();
        for (group, shard, origins, staged) in std::mem::take(&mut applies.staged) {
            let outcomes = shard.publish(staged);
            self.answer_applied(group, &shard, origins, outcomes);
        }
        Ok(())
    }

    /// Answers the proposals of this node that a published slot held.
    fn answer_applied(&mut self, group: GroupId, shard: &Shard, origins: Vec<(NodeId, u64)>, outcomes: Vec<Applied>) {
        for ((node, seq), outcome) in origins.into_iter().zip(outcomes) {
            if node != self.config.node {
                continue;
            }
            let Some(pending) = self.proposals.remove(&(group, seq)) else {
                if self.never_chosen_set.contains(&(group, seq)) {
                    self.orphans.contradicted += 1;
                }
                continue;
            };
            if pending.orphaned.is_some() {
                self.orphans.chosen += 1;
            }
            let response = match outcome {
                Applied::Committed(ts) => Response::Committed(ts),
                Applied::Prepared(ts) => Response::Prepared(ts),
                Applied::Decided(decision) => Response::Decided(decision),
                Applied::Resolved => Response::Resolved,
                Applied::Late => {
                    // It holds nothing: the locks its proposal took in flight
                    // go too (the decision may have been applied between the
                    // proposal and this slot, and released nothing of it).
                    // An orphan's went with its leadership.
                    if pending.orphaned.is_none() {
                        shard.abandon(pending.txn);
                    }
                    Response::Refused(Refusal::Conflict(
                        "the transaction was already resolved here: this prepare came late".into(),
                    ))
                }
                Applied::Closed | Applied::Shipped => continue,
                Applied::Delivered { through, applied } => {
                    // A copy that wrote nothing drops its locks in flight and
                    // its commit from the log of recent commits. An orphan's
                    // locks went with its leadership (a later copy of this
                    // leadership may hold the transaction's locks now).
                    match (applied, pending.orphaned.is_some()) {
                        (true, _) => {}
                        (false, false) => shard.abandon(pending.txn),
                        (false, true) => shard.forget_unchosen(pending.txn),
                    }
                    Response::Delivered { through, ts: shard.last_commit_ts(), moved: None }
                }
                Applied::Skipped => {
                    if !pending.holds_locks {
                        // A closed timestamp: nobody waits for it.
                        continue;
                    }
                    // Never applied and never will be: drop its locks in
                    // flight and its commit from the log of recent commits
                    // now, whether this node still leads (its own
                    // reconfiguration or no-op came between the entry's
                    // lineage and its slot) or is about to hear it does not.
                    self.skipped += 1;
                    shard.abandon(pending.txn);
                    Response::Refused(Refusal::Conflict(
                        "the shard's leader changed while this commit was in flight, and the log did not choose \
                         everything it was validated against"
                            .into(),
                    ))
                }
            };
            for origin in pending.origins {
                self.reply(origin, response.clone());
            }
        }
    }

    fn read_done(&mut self, group: GroupId, id: u64, outcome: ReadOutcome) {
        if let Some(hosted) = self.shards.get_mut(&group)
            && hosted.leadership == Leadership::Confirming(id)
        {
            hosted.leadership = match outcome {
                // R5: wait out ε from now before handing out timestamps
                // (strictly past it: a read served at a timestamp of physical
                // part exactly now + ε is below everything handed out then).
                ReadOutcome::Ready { .. } => {
                    let until_ns =
                        self.hlc.physical_now_ns().saturating_add(self.hlc.max_offset_ns()).saturating_add(1);
                    self.waiting.insert(group);
                    Leadership::Waiting { until_ns }
                }
                ReadOutcome::Aborted => {
                    // Tried again while this node still leads.
                    self.watch.insert(group);
                    Leadership::Follower
                }
            };
            self.status_dirty.insert(group);
            if let Leadership::Waiting { until_ns } = hosted.leadership
                && self.hlc.physical_now_ns() >= until_ns
            {
                hosted.leadership = Leadership::Serving;
                hosted.shard.set_serving(true);
            }
            return;
        }
        let Some(waiting) = self.barriers.remove(&id) else { return };
        for parked in waiting {
            match outcome {
                ReadOutcome::Ready { .. } => self.serve(parked),
                ReadOutcome::Aborted => self.not_leader(parked.origin, parked.group),
            }
        }
    }

    /// This node was elected leader of `group`: it serves nothing until its
    /// own read-index round shows everything chosen before its ballot
    /// applied here, and then ε has passed (R5).
    fn start_leadership(&mut self, group: GroupId) {
        let id = self.next_read_id;
        self.next_read_id += 1;
        let Some(hosted) = self.shards.get_mut(&group) else { return };
        hosted.shard.set_serving(false);
        hosted.leadership = if self.paxos.read_index(group, id, self.now_us).is_ok() {
            Leadership::Confirming(id)
        } else {
            Leadership::Follower
        };
    }

    /// Groups this node stopped leading stop serving: their proposals in
    /// flight are orphaned (settled from the next leader's log) and requests
    /// waiting here are refused. With `start_gained`, a group this node
    /// leads but does not serve yet starts confirming its leadership (a
    /// leader whose own confirmation failed tries again); `tick` leaves that
    /// to the `advance` that follows, which hears of a new leadership.
    fn track_leadership(&mut self, start_gained: bool) {
        // Only groups whose leadership changed, and leaders not yet
        // confirming, are looked at: idle groups cost nothing here.
        let changes = self.paxos.take_leadership_changes();
        self.status_dirty.extend(changes.iter().copied());
        self.watch.extend(changes);
        let mut lost = Vec::new();
        let mut unconfirmed = Vec::new();
        for group in std::mem::take(&mut self.watch) {
            let Some(hosted) = self.shards.get_mut(&group) else { continue };
            let leads = self.paxos.group(group).is_some_and(|replica| replica.role() == RoleKind::Leader);
            if !leads && hosted.leadership != Leadership::Follower {
                hosted.leadership = Leadership::Follower;
                hosted.shard.set_serving(false);
                // R19, R22: the next leadership counts afresh.
                hosted.traffic = None;
                hosted.requesters = None;
                lost.push(group);
            }
            if leads && hosted.leadership == Leadership::Follower {
                if start_gained {
                    unconfirmed.push(group);
                } else {
                    self.watch.insert(group);
                }
            }
        }
        for group in unconfirmed {
            self.start_leadership(group);
            if self.shards.get(&group).is_some_and(|hosted| hosted.leadership == Leadership::Follower) {
                // Its confirmation could not start: tried again next time.
                self.watch.insert(group);
            }
        }
        // A proposal of a leadership that is over (lost, or lost and won
        // again under a new ballot since the last look) is orphaned. The
        // slots it can hold are those its leadership used, all at or below
        // the replica's last slot now: a new leadership only re-proposes
        // what it recovers at the same slots.
        let now_us = self.now_us;
        let mut orphaned = BTreeSet::new();
        for ((group, _), pending) in &mut self.proposals {
            let replica = self.paxos.group(*group);
            if pending.orphaned.is_none() && pending.ballot != replica.and_then(|replica| replica.leader_ballot()) {
                let last_slot = replica.map_or(0, |replica| replica.last_slot().0);
                pending.orphaned = Some(Orphaned { last_slot, since_us: now_us });
                orphaned.insert(*group);
            }
        }
        for group in orphaned {
            self.settle_orphans(group);
        }
        for group in lost {
            self.forget_shipments(group);
            for parked in self.parked.remove(&group).unwrap_or_default() {
                self.parked_count -= 1;
                if parked.group == group {
                    self.not_leader(parked.origin, group);
                } else {
                    // Another group's request waiting on this replica's
                    // applies (R17's reads): not a matter of leadership.
                    self.serve(parked);
                }
            }
        }
        // Barrier waiters of a lost group hear `Aborted` from Paxos itself.
    }

    /// Answers the orphaned proposals of `group` whose fate is now known
    /// (see [`Orphaned`]). A snapshot restored here since a proposal was
    /// made replaced slots without applying them one by one: its fate is
    /// unknown.
    fn settle_orphans(&mut self, group: GroupId) {
        let Some(hosted) = self.shards.get(&group) else { return };
        let applied = hosted.shard.applied_slot();
        let restores = hosted.restores;
        let applied = if self.config.faults.settle_orphans_early { applied + 2 } else { applied };
        let settled: Vec<(GroupId, u64)> = self
            .proposals
            .iter()
            .filter(|((of, _), pending)| {
                *of == group
                    && pending
                        .orphaned
                        .is_some_and(|orphaned| pending.restores != restores || applied >= orphaned.last_slot)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in settled {
            let pending = self.proposals.remove(&key).expect("listed above");
            if pending.restores != restores {
                self.orphan_unknown(group, pending);
                continue;
            }
            // Never chosen. Its locks went when leadership did; its ghost in
            // the log of recent commits goes too (never a commit of the same
            // transaction that was applied through another proposal).
            if pending.holds_locks {
                self.shards[&group].shard.forget_unchosen(pending.txn);
            }
            self.orphans.never_chosen += 1;
            if self.never_chosen.len() >= NEVER_CHOSEN_KEPT
                && let Some(oldest) = self.never_chosen.pop_front()
            {
                self.never_chosen_set.remove(&oldest);
            }
            self.never_chosen.push_back(key);
            self.never_chosen_set.insert(key);
            for origin in pending.origins {
                self.not_leader(origin, group);
            }
        }
    }

    /// Orphaned proposals that waited [`ORPHAN_WAIT_US`] in vain.
    fn expire_orphans(&mut self, now_us: u64) {
        let expired: Vec<(GroupId, u64)> = self
            .proposals
            .iter()
            .filter(|(_, pending)| {
                pending.orphaned.is_some_and(|orphaned| now_us >= orphaned.since_us.saturating_add(ORPHAN_WAIT_US))
            })
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            let pending = self.proposals.remove(&key).expect("listed above");
            self.orphan_unknown(key.0, pending);
        }
    }

    fn orphan_unknown(&mut self, group: GroupId, pending: Pending) {
        self.orphans.unknown += 1;
        let message = format!(
            "the leader of shard {} changed before the request was confirmed; it may or may not have taken effect",
            group.0
        );
        for origin in pending.origins {
            self.reply(origin, Response::Refused(Refusal::OutcomeUnknown(message.clone())));
        }
    }

    fn retry_parked(&mut self, group: GroupId) {
        let waiting = self.parked.remove(&group).unwrap_or_default();
        self.parked_count -= waiting.len();
        for parked in waiting {
            self.serve(parked);
        }
    }

    fn expire_parked(&mut self, now_us: u64) {
        let max = self.config.lock_wait_max_us;
        let mut expired = Vec::new();
        for waiting in self.parked.values_mut() {
            let (old, young): (Vec<Parked>, Vec<Parked>) =
                waiting.drain(..).partition(|parked| now_us.saturating_sub(parked.since_us) >= max);
            *waiting = young;
            expired.extend(old);
        }
        self.parked.retain(|_, waiting| !waiting.is_empty());
        self.parked_count -= expired.len();
        for parked in expired {
            let waited = format!(
                "shard {}: gave up waiting for a lock, or for a replica to catch up, after {} ms",
                parked.group.0,
                max / 1_000
            );
            // A coordinated commit or prepare that waited for an older
            // transaction (R20) proposed nothing: a conflict, to retry.
            let error = match &parked.request {
                Request::CommitOne(changes) | Request::Prepare { changes, .. }
                    if !changes.isolation.is_highly_available() =>
                {
                    Error::Conflict(waited)
                }
                _ => Error::Unavailable(waited),
            };
            self.refuse(parked.origin, &error);
        }
    }

    /// R20: refuses `txn`'s requests parked at `group` (its abort came
    /// first).
    fn drop_parked(&mut self, group: GroupId, txn: TxnId) {
        let Some(waiting) = self.parked.get_mut(&group) else { return };
        let of_txn = |parked: &Parked| match &parked.request {
            Request::CommitOne(changes) | Request::Prepare { changes, .. } => changes.txn == txn,
            _ => false,
        };
        let (dropped, kept): (Vec<Parked>, Vec<Parked>) = waiting.drain(..).partition(of_txn);
        *waiting = kept;
        self.parked_count -= dropped.len();
        for parked in dropped {
            let error = Error::Conflict(format!("transaction {txn} was aborted while it waited at shard {}", group.0));
            self.refuse(parked.origin, &error);
        }
    }

    /// R9 recovery: prepared transactions held too long are resolved from
    /// their record shard (or, at the record shard, decided `Abort` unless
    /// a decision is recorded).
    fn recover(&mut self, now_us: u64) {
        let after = self.config.recovery_after_us;
        let Some(older_than) = now_us.checked_sub(after) else { return };
        let mut work = Vec::new();
        for (group, hosted) in &self.shards {
            if hosted.leadership != Leadership::Serving {
                continue;
            }
            for (txn, record) in hosted.shard.stale_prepared(older_than) {
                let asked = self.recovering.get(&(*group, txn)).copied();
                if asked.is_none_or(|at| now_us.saturating_sub(at) >= after) {
                    work.push((*group, txn, record));
                }
            }
        }
        self.recovering.retain(|(group, txn), _| self.shards[group].shard.is_prepared(*txn));
        for (group, txn, record) in work {
            self.recovering.insert((group, txn), now_us);
            if record == group.0 {
                // We are the record: decide, unless the coordinator did.
                self.propose(group, None, txn, Entry::Decide { txn, decision: Decision::Abort, carried: Vec::new() });
            } else {
                let id = self.next_request_id;
                self.next_request_id += 1;
                self.requests.insert(id, (group, txn));
                self.outputs.push(HostOutput::Request { id, shard: record, request: Request::Recover { txn } });
            }
        }
    }

    /// Snapshots those of `groups` (the groups a Ready just advanced: only
    /// they applied anything) that applied enough slots since their last
    /// snapshot, and compacts their logs.
    fn maybe_compact(&mut self, groups: &[GroupId]) -> Result<()> {
        let mut due = Vec::new();
        for group in groups {
            let (Some(hosted), Some(replica)) = (self.shards.get(group), self.paxos.group(*group)) else { continue };
            let applied = hosted.shard.applied_slot();
            // After a restart the engine may hold more than the replica has
            // replayed: a snapshot then would be labelled below its data.
            let replayed = replica.applied().0 >= applied;
            if replayed
                && hosted.snapshot_interval > 0
                && applied >= replica.snapshot_slot().0 + hosted.snapshot_interval
            {
                due.push(*group);
            }
        }
        for group in due {
            let Some(chunk_bytes) = self.paxos.group(group).map(|replica| replica.config().snapshot_chunk_bytes) else {
                continue;
            };
            let (slot, chunks) = self.shards[&group].shard.write_snapshot(chunk_bytes)?;
            self.paxos.compact(group, Snapshot::new(geodb_geo::paxos::Slot(slot), chunks));
        }
        Ok(())
    }

    /// The runtime could not persist or apply: nothing more is served. Every
    /// waiter hears why (proposals in flight: the outcome is unknown).
    pub fn fail(&mut self, reason: &str) {
        for hosted in self.shards.values_mut() {
            hosted.leadership = Leadership::Follower;
            hosted.shard.set_serving(false);
        }
        for (_, pending) in std::mem::take(&mut self.proposals) {
            let message = format!("replication stopped ({reason}); the request may or may not have taken effect");
            for origin in pending.origins {
                let response = Response::Refused(Refusal::OutcomeUnknown(message.clone()));
                self.outputs.push(HostOutput::Reply { origin, response });
            }
        }
        let waiting: Vec<Parked> = self
            .parked
            .values_mut()
            .flat_map(std::mem::take)
            .chain(std::mem::take(&mut self.barriers).into_values().flatten())
            .chain(self.timed.drain(..).map(|(_, parked)| parked))
            .collect();
        self.parked_count = 0;
        for parked in waiting {
            let refusal = Refusal::Unavailable(format!("replication stopped: {reason}"));
            self.outputs.push(HostOutput::Reply { origin: parked.origin, response: Response::Refused(refusal) });
        }
    }
}

fn clear_barrier(request: &mut Request) {
    if let Request::Get { mode: ReadMode::At { barrier, .. }, .. }
    | Request::Scan { mode: ReadMode::At { barrier, .. }, .. } = request
    {
        *barrier = false;
    }
}
