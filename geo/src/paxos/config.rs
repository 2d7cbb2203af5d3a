//! A replica's configuration and the protocol's named bounds.

use super::ballot::GroupId;
use crate::topology::NodeId;

/// Most commands packed into one slot: one phase-2 round carries at most this
/// many, which bounds an `Accept` message to what a frame comfortably holds.
pub const BATCH_COMMANDS_MAX: usize = 64;

/// Most proposals a leader queues while its in-flight window is full; beyond
/// it `propose` answers `Busy` and the caller backs off (load shedding).
pub const PROPOSALS_PENDING_MAX: usize = 1024;

/// The chosen index (a hint for restarts) is persisted along with other
/// writes once it moved this many slots past the last one persisted, or
/// with a new promise or snapshot: after a restart a replica re-learns at
/// most this many chosen slots from the leader.
pub const HARD_STATE_CHOSEN_STRIDE: u64 = 32;

/// Most chosen entries in one catch-up reply; the receiver asks again for more.
/// Keeps one message small while a lagging replica streams the log.
pub const CATCH_UP_ENTRIES_MAX: usize = 64;

/// Default bytes of one snapshot chunk (`Config::snapshot_chunk_bytes`):
/// far below a transport frame, large enough that a wide-area round trip
/// per chunk still moves tens of MiB per second.
pub const SNAPSHOT_CHUNK_BYTES_DEFAULT: usize = 4 << 20;

/// Most read requests a leader holds while confirming leadership.
pub const READS_PENDING_MAX: usize = 1024;

/// A lease lasts this share of the election timeout (the leader's, which
/// must be every voter's: see `docs/design/multipaxos.md`), in percent, from the
/// heartbeat round that confirmed it (`docs/design/multipaxos.md`,
/// "Leases"): the rest absorbs clocks that run at different rates. 85 %
/// holds while no two clocks' rates differ by more than 16 % (each within
/// ±8 % of true time; NTP keeps them within 0.05 %).
pub const LEASE_PERCENT: u64 = 85;

/// Heartbeat rounds a leader remembers the sending time of, waiting for a
/// quorum's acknowledgements (older ones are forgotten: acknowledgements of
/// a forgotten round extend no lease, which is safe).
pub const ROUNDS_UNCONFIRMED_MAX: usize = 64;

const _: () = assert!(BATCH_COMMANDS_MAX > 0 && CATCH_UP_ENTRIES_MAX > 0);
// Eight full batches (the default window) fit in the pending queue, so a
// burst the pipeline can absorb is never refused as `Busy`.
const _: () = assert!(PROPOSALS_PENDING_MAX >= 8 * BATCH_COMMANDS_MAX);

/// Test-only switches that plant replica bugs, to prove the simulator
/// catches them. Never set outside tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaFaults {
    /// A leader keeps using its lease after it expired by its own clock:
    /// [`Replica::has_lease`](super::Replica::has_lease) ignores the expiry.
    pub lease_past_expiry: bool,
    /// A new leader fills one slot with no-ops beyond what phase 1
    /// recovered, instead of a whole window: a deposed leader's pipelined
    /// proposal can then be chosen after the new leader's own values (as
    /// when replicas of one group disagree on the window).
    pub narrow_recovery: bool,
    /// With `Config::early_accepts`, a leader counts its own vote for a
    /// slot at once, before the runtime said its acceptance is durable.
    pub own_vote_before_durable: bool,
    /// A quiet follower sleeps through whatever should wake it but a
    /// message from its leader: that node going silent, restarting or
    /// abstaining, and candidacies.
    pub quiet_deaf: bool,
    /// Every acceptor writes its votes without an fsync, as a learner of
    /// the slot's configuration may: a crash can then lose a vote that
    /// helped choose a value.
    pub votes_unsynced: bool,
}

/// How one replica of one group behaves. Times are in microseconds of the
/// replica's own clock (the `now_us` passed to `tick`).
#[derive(Clone, Debug)]
pub struct Config {
    pub group: GroupId,
    pub node: NodeId,
    /// The group's *initial* voters: the configuration until a chosen
    /// `Value::Reconfigure` replaces it (see `Replica::membership`). A replica
    /// restarts with the same `Config` and recovers later configurations
    /// from its snapshot and log.
    pub voters: Vec<NodeId>,
    /// The initial non-voting learners (e.g. one in every other region under
    /// zone survival): they receive and apply the log but never vote or stand.
    pub learners: Vec<NodeId>,
    /// Placement preference: the node that should lead (in the home region).
    /// Others wait `placement_delay_us` longer before standing, and a leader
    /// that is not preferred hands over once the preferred node has caught up.
    /// Ignored while the preferred node is not a voter of the configuration
    /// in effect.
    pub preferred_leader: Option<NodeId>,
    /// How often a leader heartbeats (and retransmits unanswered accepts).
    pub heartbeat_interval_us: u64,
    /// A follower stands for election after this long without a leader, plus
    /// jitter in `0..election_timeout_us`; a leader steps down after this long
    /// without hearing from a quorum.
    pub election_timeout_us: u64,
    /// Extra wait before a non-preferred node stands.
    pub placement_delay_us: u64,
    /// Slots a leader may have proposed but not yet chosen (pipelining depth).
    pub window_slots_max: u64,
    /// A new leader fills at least this many slots with no-ops beyond what
    /// phase 1 recovered (and at least `window_slots_max`): the deepest
    /// window any earlier leader of the group may have used, so that the
    /// window can be lowered across a restart without a deposed leader's
    /// proposal being chosen after the new leader's.
    pub padding_slots_min: u64,
    /// Bytes the state machine aims for in one snapshot chunk, so one
    /// `SnapshotChunk` message (a record larger than this is a chunk of
    /// its own).
    pub snapshot_chunk_bytes: usize,
    /// Whether a leader serves reads under a lease, without a heartbeat
    /// round, while a quorum's acknowledgements say no other can lead.
    pub leases: bool,
    /// The runtime sends a leader's `Accept`s before the Ready that holds
    /// its own accepted entries is durable (*Paxos Made Live* §4.2: the
    /// leader's disk write runs beside the round trip), and calls
    /// [`Replica::persisted`](super::Replica::persisted) once it is. The
    /// leader's own vote for a slot then counts only from that call on.
    /// Off: every message goes out after the persist, and the leader's vote
    /// counts at once (it is in the same, earlier persist as its `Accept`).
    pub early_accepts: bool,
    /// An idle group falls quiet: once nothing is in flight and every
    /// member has acknowledged the leader's whole log, the leader stops
    /// heartbeating and its followers stop their election timers, until
    /// the next proposal, read, or a change in a member's liveness
    /// ([`MultiPaxos`](super::MultiPaxos) sends one `Alive` per peer node
    /// and heartbeat interval for all its groups, and wakes the quiet
    /// groups of a peer that stopped answering or restarted). A quiet
    /// follower refuses other candidates while its leader's node is alive.
    /// Only timers change: safety never depends on it.
    pub quiesce: bool,
    /// Seed of the election jitter; the simulator passes one derived from its seed.
    pub seed: u64,
    /// Planted bugs (tests only).
    pub faults: ReplicaFaults,
}

impl Config {
    /// A configuration with timeouts suited to round trips up to `rtt_us`.
    pub fn new(group: GroupId, node: NodeId, voters: Vec<NodeId>, rtt_us: u64) -> Self {
        let heartbeat_interval_us = (2 * rtt_us).max(1_000);
        Config {
            group,
            node,
            voters,
            learners: Vec::new(),
            preferred_leader: None,
            heartbeat_interval_us,
            election_timeout_us: 5 * heartbeat_interval_us,
            placement_delay_us: 5 * heartbeat_interval_us,
            window_slots_max: 8,
            padding_slots_min: 0,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES_DEFAULT,
            leases: true,
            early_accepts: false,
            quiesce: false,
            seed: 0,
            faults: ReplicaFaults::default(),
        }
    }

    pub(crate) fn validate(&self) {
        assert!(!self.voters.is_empty(), "{}: a group needs voters", self.group);
        assert!(
            self.voters.contains(&self.node) || self.learners.contains(&self.node),
            "{}: {} is neither a voter nor a learner",
            self.group,
            self.node
        );
        assert!(
            !self.learners.iter().any(|learner| self.voters.contains(learner)),
            "{}: a learner cannot vote",
            self.group
        );
        assert!(
            self.preferred_leader.is_none_or(|preferred| self.voters.contains(&preferred)),
            "{}: the preferred leader must be a voter",
            self.group
        );
        assert!(self.heartbeat_interval_us > 0 && self.window_slots_max > 0 && self.snapshot_chunk_bytes > 0);
        assert!(
            self.election_timeout_us > 2 * self.heartbeat_interval_us,
            "{}: an election timeout must outlast a lost heartbeat or two",
            self.group
        );
    }
}
