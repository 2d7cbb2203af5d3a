//! One replica of one Multi-Paxos group: acceptor, learner, and (when elected)
//! the distinguished proposer, as a sans-IO state machine.
//!
//! Inputs: [`Replica::step`] (a message), [`Replica::tick`] (time passes),
//! [`Replica::propose`] (a command), [`Replica::propose_membership`] (a
//! configuration change), [`Replica::read_index`] (a linearizable read),
//! [`Replica::compact`] (the state machine took a snapshot).
//! Output: [`Replica::take_ready`] returns a [`Ready`] — persist, then send,
//! then apply (see `ready.rs`).
//!
//! Roles ([`Role`]):
//!
//! ```text
//!            election timeout                 quorum of promises
//!  Follower ────────────────────► Candidate ─────────────────────► Leader
//!     ▲  ▲      higher ballot seen    │   higher ballot / lost quorum  │
//!     │  └────────────────────────────┘◄───────────────────────────────┘
//!     └─ compacted slots it lacks (catch up first)    removed by a chosen change
//! ```
//!
//! Only voters of the replica's current configuration stand for election.
//!
//! The leader runs phase 1 once per ballot, for all slots above its chosen
//! index, then phase 2 per batch of proposals with up to
//! `window_slots_max` slots in flight (van Renesse & Altinbuken, *Paxos Made
//! Moderately Complex* §3, "leaders ... scouts ... commanders"; Lamport,
//! *Paxos Made Simple* §3). Followers learn the chosen index from the
//! leader's `Accept` and `Heartbeat` messages; a slot is marked chosen at a
//! follower only if it accepted that slot in the leader's own ballot (the
//! leader proposes one value per slot per ballot), and anything else is
//! fetched as chosen entries or a snapshot from the leader.
//!
//! Membership changes go through the log as `Value::Reconfigure`: the
//! configuration for a slot is the latest one chosen before it (α = 1), so
//! the leader proposes nothing after a change until it is chosen, counts each
//! slot's votes against that slot's configuration, and phase 1 gathers a
//! majority of every configuration that may govern a slot it covers. A
//! replica's current configuration ([`Replica::membership`]) is derived from
//! its chosen log and snapshot, never stored on its own.
//!
//! Linearizable reads use read-index (Ongaro, *Consensus: Bridging Theory and
//! Practice* §6.4), answered without a round while the leader holds a lease
//! (§6.4.1): safe while clock rates differ by less than the lease's margin,
//! every voter uses the same election timeout, and no clock stops while its
//! process runs on. See `docs/design/multipaxos.md`, "Leases".

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::mem;

use super::ballot::{Ballot, GroupId, Slot};
use super::config::{
    BATCH_COMMANDS_MAX, CATCH_UP_ENTRIES_MAX, Config, HARD_STATE_CHOSEN_STRIDE, LEASE_PERCENT, PROPOSALS_PENDING_MAX,
    READS_PENDING_MAX, ROUNDS_UNCONFIRMED_MAX,
};
use super::jitter::Jitter;
use super::membership::Membership;
use super::message::{Command, Entry, Envelope, Message, Snapshot, Value};
use super::quorum;
use super::ready::{ChunkReceived, ChunkToSend, Committed, HardState, Persist, ReadOutcome, ReadState, Ready, Stored};
use crate::topology::NodeId;

/// Why a proposal, read or membership change was refused. All but
/// `InvalidMembership` are retryable ([`ProposeError::is_retryable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader proposes and serves reads; `leader` is a hint.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The leader's queue is full; back off.
    #[error("too many pending proposals or reads")]
    Busy,
    /// Another membership change is not chosen yet; retry once it is.
    #[error("another membership change is not chosen yet")]
    Reconfiguring,
    /// The change is malformed or alters more than one voter at once.
    #[error("invalid membership change: {reason}")]
    InvalidMembership { reason: &'static str },
}

impl ProposeError {
    /// Whether the same request may succeed later (at this or another replica).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ProposeError::InvalidMembership { .. })
    }
}

/// The role a replica plays in its current ballot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    Follower,
    Candidate,
    Leader,
}

#[derive(Debug)]
enum Role {
    Follower,
    Candidate(Candidate),
    Leader(Box<Leader>),
}

/// What one acceptor reported in phase 1b.
#[derive(Debug)]
struct PromiseReport {
    chosen: Slot,
    snapshot_slot: Slot,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Candidate {
    ballot: Ballot,
    from: Slot,
    /// The ballot of the leader that asked for this candidacy, if one did.
    handoff: Option<Ballot>,
    promises: BTreeMap<NodeId, PromiseReport>,
    /// Every voter a `Prepare` went to: the voters of each configuration
    /// phase 1 has found so far (see `phase1_configurations`).
    asked: BTreeSet<NodeId>,
    sent_us: u64,
}

/// A slot the leader proposed in its ballot and has not yet seen chosen.
#[derive(Debug)]
struct InFlight {
    votes: BTreeSet<NodeId>,
    /// The leader's own acceptance is durable (at once without
    /// `Config::early_accepts`; otherwise once `Replica::persisted` says so).
    own_durable: bool,
    chosen: bool,
    sent_us: u64,
}

#[derive(Debug)]
struct PendingRead {
    id: u64,
    /// Serve once this slot is applied.
    index: Slot,
    /// Serve once a quorum acknowledged a heartbeat at least this recent.
    seq: u64,
}

#[derive(Debug)]
struct Leader {
    ballot: Ballot,
    next_slot: Slot,
    /// The highest slot phase 1 found possibly chosen by earlier ballots.
    recovery_end: Slot,
    /// Values phase 1 recovered for `next_slot` on, not yet proposed: they
    /// wait behind an unchosen `Reconfigure` like everything else.
    recovering: VecDeque<Value>,
    in_flight: BTreeMap<Slot, InFlight>,
    /// The slot of a `Reconfigure` proposed in this ballot and not yet
    /// chosen: nothing is proposed after it until it is (α = 1).
    reconfigure_at: Option<Slot>,
    /// A membership change asked for and not yet proposed: it waits until
    /// every slot before it is chosen.
    membership_pending: Option<Membership>,
    /// Some slot was chosen in this ballot (a change waits for one).
    chosen_in_ballot: bool,
    pending: VecDeque<Command>,
    heartbeat_seq: u64,
    heartbeat_sent_us: u64,
    read_round_due: bool,
    acked_seq: BTreeMap<NodeId, u64>,
    heard_us: BTreeMap<NodeId, u64>,
    peer_chosen: BTreeMap<NodeId, Slot>,
    reads: VecDeque<PendingRead>,
    handoff_sent_us: Option<u64>,
    /// R22: the leadership being handed to a node at runtime
    /// ([`Replica::prefer`]); meanwhile new commands wait in `pending`.
    transfer: Option<Transfer>,
    elected_us: u64,
    /// Heartbeat rounds sent and not yet confirmed: their number and when
    /// they left (a lease counts from there).
    rounds_sent: VecDeque<(u64, u64)>,
    /// This leader's lease runs until then (its own clock; 0: none).
    lease_until_us: u64,
    /// It asked another voter to take over: no lease in this ballot again.
    lease_given_up: bool,
    /// A voter answered `Compacted`: when first, who, and the highest
    /// snapshot slot heard (see `on_compacted`).
    compacted: Option<(u64, NodeId, Slot)>,
    /// `Config::quiesce`: the first `Quiesce` round of the current attempt
    /// to fall quiet, and the members that acknowledged one since with the
    /// whole log.
    quiesce_seq: Option<u64>,
    quiet_acks: BTreeSet<NodeId>,
    /// The last proposal, read or membership change asked of this leader.
    active_us: u64,
}

impl Leader {
    /// An attempt to fall quiet, if any, starts over.
    fn forget_quiesce(&mut self) {
        self.quiesce_seq = None;
        self.quiet_acks.clear();
    }
}

/// R22: a handover started at runtime ([`Replica::prefer`]).
#[derive(Debug, Clone, Copy)]
struct Transfer {
    to: NodeId,
    /// The heartbeat round sent when it started: the successor counts as
    /// live only once it acknowledged that round or a later one.
    seq: u64,
    started_us: u64,
    /// New commands are held until then at most.
    until_us: u64,
    /// The preference before it, restored if the handover does not happen.
    previous: Option<NodeId>,
}

/// A snapshot being received chunk by chunk: the state machine stores
/// each chunk, and the next is asked for once it has.
#[derive(Debug)]
struct IncomingSnapshot {
    /// Every chunk comes from this node: replicas may encode the same
    /// state differently, so chunks of two senders never mix.
    from: NodeId,
    slot: Slot,
    membership: Option<Membership>,
    chunks: u64,
    /// Chunks handed to the state machine to store (`Ready::snapshot_chunks`).
    received: u64,
    /// Chunks the state machine says it has stored.
    stored: u64,
}

/// A `SnapshotChunk` message's fields.
struct Chunk {
    from: NodeId,
    slot: Slot,
    membership: Option<Membership>,
    chunks: u64,
    index: u64,
    data: Vec<u8>,
}

/// R22: how far behind this leader's chosen index a voter may last have
/// reported itself and still be handed the leadership at runtime
/// ([`Replica::prefer`]); it catches up fully before the handoff.
pub const TRANSFER_LAG_SLOTS_MAX: u64 = 1_024;

/// One replica of one group. See the module documentation.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    /// The configuration's `preferred_leader`: `config`'s may change for
    /// one leadership at a time (R22, [`Replica::prefer`]).
    configured_preferred: Option<NodeId>,
    jitter: Jitter,
    now_us: u64,
    /// Durable: the highest ballot promised.
    promised: Ballot,
    /// The highest round heard of, promised or not: the next candidacy goes above it.
    round_seen: u64,
    /// Leaderships this replica lost with two or more batches of commands
    /// in flight.
    pipelines_cut: u64,
    /// Durable: accepted or chosen entries above the snapshot.
    log: BTreeMap<Slot, (Ballot, Value)>,
    /// Durable: the latest snapshot, kept to send to lagging replicas.
    snapshot: Option<Snapshot>,
    /// The configuration for the slot after `chosen`: the latest chosen
    /// `Reconfigure`, else the snapshot's, else the initial one from
    /// `Config`. Derived from durable state, never persisted on its own.
    membership: Membership,
    /// Every slot up to here is chosen and its value is known. Persisted
    /// lazily: after a restart it may be lower, never higher.
    chosen: Slot,
    /// Handed to the state machine (in a Ready) up to here.
    applied: Slot,
    role: Role,
    leader: Option<NodeId>,
    leader_heard_us: u64,
    election_deadline_us: u64,
    /// Neither stands for election nor keeps leading (see `set_abstaining`).
    abstaining: bool,
    /// The group is quiet (`Config::quiesce`): no timer runs here.
    quiesced: bool,
    /// Times this replica fell quiet, and woke from it.
    quiet_spells: u64,
    quiet_wakes: u64,
    catch_up_sent_us: Option<u64>,
    /// A snapshot arriving in chunks (not durable: a restart asks again).
    incoming: Option<IncomingSnapshot>,
    promise_dirty: bool,
    /// The promise last handed out to persist: promises never go backwards.
    promised_persisted: Ballot,
    /// The chosen index last handed out to persist (see `take_ready`).
    chosen_persisted: Slot,
    /// The promise the runtime said is durable (`persisted`; only tracked
    /// with `Config::early_accepts`): accepts go out early only under it.
    promise_durable: Ballot,
    /// When this replica (re)started: it promises no ballot but the one a
    /// leader asked for until an election timeout later (see `on_prepare`).
    started_us: u64,
    ready: Ready,
}

impl Replica {
    /// Starts (or restarts) a replica from what its runtime made durable.
    /// The first Ready replays the snapshot and the chosen entries for the
    /// state machine, which is rebuilt from them.
    pub fn new(config: Config, stored: Stored, now_us: u64) -> Self {
        config.validate();
        let seed = config.seed ^ config.node.0.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ config.group.0.rotate_left(32);
        let snapshot_slot = stored.snapshot.as_ref().map_or(Slot::ZERO, |snapshot| snapshot.slot);
        let mut log = BTreeMap::new();
        for entry in stored.entries {
            assert!(entry.slot > snapshot_slot, "{}: stored entry {} below the snapshot", config.group, entry.slot);
            log.insert(entry.slot, (entry.ballot, entry.value));
        }
        let chosen = stored.hard_state.chosen.max(snapshot_slot);
        let initial = Membership::new(config.voters.clone(), config.learners.clone());
        let mut replica = Replica {
            jitter: Jitter::new(seed),
            now_us,
            promised: stored.hard_state.promised,
            round_seen: stored.hard_state.promised.round,
            pipelines_cut: 0,
            log,
            chosen,
            applied: snapshot_slot,
            role: Role::Follower,
            leader: None,
            leader_heard_us: now_us,
            election_deadline_us: 0,
            abstaining: false,
            quiesced: false,
            quiet_spells: 0,
            quiet_wakes: 0,
            catch_up_sent_us: None,
            incoming: None,
            promise_dirty: false,
            promised_persisted: stored.hard_state.promised,
            chosen_persisted: stored.hard_state.chosen,
            promise_durable: stored.hard_state.promised,
            started_us: now_us,
            ready: Ready { restore: stored.snapshot.clone(), ..Ready::default() },
            snapshot: stored.snapshot,
            membership: initial,
            configured_preferred: config.preferred_leader,
            config,
        };
        // The configuration is recovered from what is durable: every entry up
        // to the chosen index is chosen, so the latest Reconfigure among them
        // (or the snapshot's configuration) is the one in effect.
        replica.membership = replica.membership_after(chosen);
        replica.reset_election_deadline();
        replica.apply_chosen();
        replica
    }

    pub fn group(&self) -> GroupId {
        self.config.group
    }

    pub fn node(&self) -> NodeId {
        self.config.node
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether this replica is a non-voting learner in its current configuration.
    pub fn is_learner(&self) -> bool {
        self.membership.is_learner(self.config.node)
    }

    /// Whether this replica votes in its current configuration (and so may stand).
    pub fn is_voter(&self) -> bool {
        self.membership.is_voter(self.config.node)
    }

    /// The configuration in effect for the slot after the chosen index: the
    /// latest chosen `Reconfigure`, or the snapshot's, or `Config`'s initial
    /// voters and learners. A change the leader proposed shows here once chosen.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Follower => RoleKind::Follower,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }

    /// R22 (leadership follows the workload): while this replica leads,
    /// hands its leadership to `node`, another voter, as placement hands it
    /// to the configuration's preferred node. `node` becomes the preferred
    /// leader for the rest of this leadership; meanwhile new commands are
    /// held (an election timeout at most) and an acknowledgement asked for
    /// at once, so that the successor catches up under steady load (Raft's
    /// leadership transfer does the same), and once it has, it is told to
    /// take over and to keep the leadership (`Handoff { keep: true }`).
    /// A replica that stops leading, or stands and loses, goes back to the
    /// configuration's preference.
    ///
    /// Starts only towards a voter heard from within a heartbeat interval
    /// whose reported chosen index is within [`TRANSFER_LAG_SLOTS_MAX`] of
    /// this leader's (a node still catching up, or gone, would only stall
    /// the commands held for it), and not while a handover is under way.
    /// Returns whether one started. Safety never depends on it: the
    /// successor is elected like any candidate.
    pub fn prefer(&mut self, node: NodeId) -> bool {
        let (me, now, chosen) = (self.config.node, self.now_us, self.chosen);
        let (interval, timeout) = (self.config.heartbeat_interval_us, self.config.election_timeout_us);
        let voter = self.membership.is_voter(node);
        let snapshot_slot = self.snapshot.as_ref().map_or(Slot::ZERO, |snapshot| snapshot.slot);
        let previous = self.config.preferred_leader;
        let Role::Leader(leader) = &mut self.role else { return false };
        // Within reach of the log this leader still has: one behind its
        // snapshot would need the snapshot first, which outlasts the hold.
        let near = leader.heard_us.get(&node).is_some_and(|at| *at + interval >= now)
            && leader
                .peer_chosen
                .get(&node)
                .is_some_and(|slot| slot.0 + TRANSFER_LAG_SLOTS_MAX >= chosen.0 && *slot >= snapshot_slot);
        if node == me || !voter || !near || leader.transfer.is_some() {
            return false;
        }
        self.config.preferred_leader = Some(node);
        leader.handoff_sent_us = None;
        // The round asked for below (or the next one) must be acknowledged.
        let seq = leader.heartbeat_seq + 1;
        let until_us = now.saturating_add(timeout);
        leader.transfer = Some(Transfer { to: node, seq, started_us: now, until_us, previous });
        self.send_heartbeat_round();
        true
    }

    /// R22: ends a transfer that did not happen in time, or whose successor
    /// stopped answering or voting: the commands it held go, and the
    /// preference goes back to what it was (the host may try again).
    fn end_stale_transfer(&mut self) {
        let (now, interval) = (self.now_us, self.config.heartbeat_interval_us);
        let voters = &self.membership.voters;
        let Role::Leader(leader) = &mut self.role else { return };
        let Some(transfer) = leader.transfer else { return };
        let answered = leader.acked_seq.get(&transfer.to).is_some_and(|seq| *seq >= transfer.seq);
        let silent = !answered && now >= transfer.started_us.saturating_add(2 * interval);
        if now >= transfer.until_us || silent || !voters.contains(&transfer.to) {
            leader.transfer = None;
            self.config.preferred_leader = transfer.previous;
        }
    }

    /// While `abstain` holds, this replica neither stands for election nor
    /// keeps leading: the runtime sets it while its node is unfit to lead
    /// (a clock outside the bound). A leader hands leadership to the most
    /// caught-up voter it heard from lately (or, if none, simply steps
    /// down); a candidate gives up. Safety never depends on it.
    pub fn set_abstaining(&mut self, abstain: bool) {
        if self.abstaining == abstain {
            return;
        }
        self.abstaining = abstain;
        if !abstain {
            return;
        }
        // A quiet follower stays quiet: its timer would fire the moment
        // this node may stand again. A leader whose followers may be quiet
        // (it is, or asked them to be) tells them it steps down: a plain
        // heartbeat restarts their timers. Should it be lost, they wake on
        // this node's `Alive`, which says it abstains (`MultiPaxos`).
        if let Role::Leader(leader) = &self.role
            && self.config.quiesce
        {
            let (ballot, seq, chosen) = (leader.ballot, leader.heartbeat_seq, self.chosen);
            self.broadcast(Message::Heartbeat { ballot, seq, chosen });
        }
        let me = self.config.node;
        let interval = self.config.heartbeat_interval_us;
        let now = self.now_us;
        match &self.role {
            Role::Leader(leader) => {
                let ballot = leader.ballot;
                let successor = self
                    .membership
                    .voters
                    .iter()
                    .filter(|voter| **voter != me)
                    .filter(|voter| leader.heard_us.get(voter).is_some_and(|at| *at + 2 * interval >= now))
                    .max_by_key(|voter| (leader.peer_chosen.get(voter).copied().unwrap_or(Slot::ZERO), **voter))
                    .copied();
                self.become_follower(None);
                self.reset_election_deadline();
                if let Some(successor) = successor {
                    self.send(successor, Message::Handoff { ballot, keep: false });
                }
            }
            Role::Candidate(_) => {
                self.become_follower(None);
                self.reset_election_deadline();
            }
            Role::Follower => {}
        }
    }

    /// The ballot this replica leads, if it is the leader.
    pub fn leader_ballot(&self) -> Option<Ballot> {
        match &self.role {
            Role::Leader(leader) => Some(leader.ballot),
            _ => None,
        }
    }

    /// The leader this replica believes in (itself included), if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn promised(&self) -> Ballot {
        self.promised
    }

    pub fn chosen(&self) -> Slot {
        self.chosen
    }

    pub fn applied(&self) -> Slot {
        self.applied
    }

    /// The highest slot this replica holds a value for (accepted, chosen or
    /// under its snapshot). A replica that stops leading has proposed nothing
    /// beyond it, and the next leader re-proposes what it accepted at the
    /// same slots: once every slot up to here is applied, a command of its
    /// leadership that was not applied was never chosen.
    pub fn last_slot(&self) -> Slot {
        let logged = self.log.last_key_value().map_or(Slot::ZERO, |(slot, _)| *slot);
        logged.max(self.chosen).max(self.snapshot_slot())
    }

    /// How many times this replica stopped leading with two or more slots
    /// of commands proposed and not known chosen (the simulator's measure
    /// of how often a leader change cut a pipeline; recovery no-ops do not
    /// count).
    pub fn pipelines_cut(&self) -> u64 {
        self.pipelines_cut
    }

    /// The slot of the latest snapshot (log entries at or below it are gone).
    pub fn snapshot_slot(&self) -> Slot {
        self.snapshot.as_ref().map_or(Slot::ZERO, |snapshot| snapshot.slot)
    }

    /// How many chunks the latest snapshot is stored in (0: none yet).
    pub fn snapshot_chunks(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |snapshot| snapshot.chunks)
    }

    /// The entry this replica holds for `slot`, if any (for tests and checkers).
    pub fn entry(&self, slot: Slot) -> Option<(Ballot, &Value)> {
        self.log.get(&slot).map(|(ballot, value)| (*ballot, value))
    }

    /// Queues a command. Only a leader accepts; the command is packed into a
    /// batch when the next Ready is taken, if the in-flight window has room.
    pub fn propose(&mut self, command: Command) -> Result<(), ProposeError> {
        self.stir_leader();
        let leader_hint = self.leader;
        let Role::Leader(leader) = &mut self.role else {
            return Err(ProposeError::NotLeader { leader: leader_hint });
        };
        if leader.pending.len() >= PROPOSALS_PENDING_MAX {
            return Err(ProposeError::Busy);
        }
        leader.pending.push_back(command);
        Ok(())
    }

    /// Asks for a linearizable read. A later Ready reports `id` as ready (serve
    /// it from the state machine then) or aborted (leadership lost).
    pub fn read_index(&mut self, id: u64, now_us: u64) -> Result<(), ProposeError> {
        self.now_us = self.now_us.max(now_us);
        self.stir_leader();
        let leader_hint = self.leader;
        let chosen = self.chosen;
        let leased = self.has_lease(self.now_us);
        let Role::Leader(leader) = &mut self.role else {
            return Err(ProposeError::NotLeader { leader: leader_hint });
        };
        if leader.reads.len() >= READS_PENDING_MAX {
            return Err(ProposeError::Busy);
        }
        // Ongaro §6.4: the read index is the commit index, but only once the
        // leader's own ballot has chosen everything earlier ballots may have
        // chosen (Raft's "no-op of the current term"): here, the slots phase 1
        // recovered.
        let index = chosen.max(leader.recovery_end);
        // Ongaro §6.4 step 3: a heartbeat round sent after the request arrived,
        // acknowledged by a quorum, proves no higher ballot has chosen anything yet.
        // Under a lease (§6.4.1), no other ballot can have been elected now:
        // the read waits only for the index to be applied.
        if leased {
            leader.reads.push_back(PendingRead { id, index, seq: 0 });
            self.serve_reads();
            return Ok(());
        }
        leader.reads.push_back(PendingRead { id, index, seq: leader.heartbeat_seq + 1 });
        leader.read_round_due = true;
        Ok(())
    }

    /// Asks for a membership change (leader only). It is refused while
    /// another change is not yet chosen (`Reconfiguring`, retry later) and if
    /// it alters more than one voter (`InvalidMembership`): add or remove one
    /// voter (promoting a learner adds one), change learners freely.
    ///
    /// Once accepted, the leader lets every slot already proposed be chosen,
    /// and (if nothing was chosen in its ballot yet) gets a no-op chosen
    /// first; then it proposes `Value::Reconfigure` and nothing after it
    /// until that slot is chosen. The change takes effect for the slots after
    /// it: watch [`Replica::membership`] or the applied entries. Like any
    /// proposal it is lost if this replica stops leading before proposing it.
    pub fn propose_membership(&mut self, membership: Membership) -> Result<(), ProposeError> {
        self.stir_leader();
        let leader_hint = self.leader;
        let Role::Leader(leader) = &mut self.role else {
            return Err(ProposeError::NotLeader { leader: leader_hint });
        };
        // One change at a time: the change is checked against the
        // configuration it will follow, which is only known once any earlier
        // change (requested, in flight or recovered by phase 1) is chosen.
        let recovered_change = leader.recovering.iter().any(|value| matches!(value, Value::Reconfigure(_)));
        if leader.membership_pending.is_some() || leader.reconfigure_at.is_some() || recovered_change {
            return Err(ProposeError::Reconfiguring);
        }
        membership.check_change_from(&self.membership).map_err(|reason| ProposeError::InvalidMembership { reason })?;
        leader.membership_pending = Some(membership);
        Ok(())
    }

    /// The state machine captured everything up to `snapshot.slot` (which it
    /// has applied): log entries up to there may go. The snapshot is persisted
    /// and kept to send to replicas that lag behind the truncated log, with
    /// the configuration in effect after its slot filled in (the log entry
    /// that named it is among those dropped).
    pub fn compact(&mut self, mut snapshot: Snapshot) {
        assert!(
            snapshot.slot <= self.applied,
            "{}: snapshot at {} beyond applied {}",
            self.config.group,
            snapshot.slot,
            self.applied
        );
        if snapshot.slot <= self.snapshot_slot() {
            return;
        }
        snapshot.membership = self.reconfigured_after(snapshot.slot);
        self.log.retain(|slot, _| *slot > snapshot.slot);
        self.ready.persist.snapshot = Some(snapshot.clone());
        self.ready.persist.sync = true;
        self.snapshot = Some(snapshot);
    }

    /// Time passes: election timeouts, heartbeats, retransmissions.
    pub fn tick(&mut self, now_us: u64) {
        self.now_us = self.now_us.max(now_us);
        let now = self.now_us;
        if self.quiesced {
            return;
        }
        match &self.role {
            Role::Follower => {
                // Learners (and nodes outside the configuration) follow the
                // log but never stand.
                if now >= self.election_deadline_us && self.is_voter() && !self.abstaining {
                    self.start_candidacy(None);
                }
            }
            Role::Candidate(candidate) => {
                if now >= self.election_deadline_us {
                    self.start_candidacy(None);
                } else if now >= candidate.sent_us + self.config.heartbeat_interval_us {
                    self.resend_prepare();
                }
            }
            Role::Leader(_) => self.tick_leader(),
        }
    }

    /// The earliest time at which [`Replica::tick`] may do something: a
    /// runtime holding many groups ticks only those whose time has come
    /// (and any it handed an input since, whose deadline may have moved).
    /// `None`: no timer runs (a learner, an abstaining follower). Ticking
    /// earlier is harmless; ticking later delays elections and heartbeats.
    pub fn next_deadline_us(&self) -> Option<u64> {
        let interval = self.config.heartbeat_interval_us;
        if self.quiesced {
            return None;
        }
        match &self.role {
            Role::Follower => (self.is_voter() && !self.abstaining).then_some(self.election_deadline_us),
            Role::Candidate(candidate) => Some(self.election_deadline_us.min(candidate.sent_us + interval)),
            Role::Leader(leader) => {
                let compacted = leader.compacted.map_or(u64::MAX, |(at, _, _)| at + interval);
                Some((leader.heartbeat_sent_us + interval).min(compacted))
            }
        }
    }

    /// A message arrived.
    pub fn step(&mut self, now_us: u64, envelope: Envelope) {
        assert_eq!(envelope.group, self.config.group, "message for another group");
        assert_eq!(envelope.to, self.config.node, "message for another node");
        self.now_us = self.now_us.max(now_us);
        // Messages are taken from any node of the group, member or not in this
        // replica's configuration: a lagging replica must hear a leader added
        // after the configuration it knows. What counts (promises, votes,
        // acknowledgements) is filtered by configuration where it is counted.
        let from = envelope.from;
        match envelope.message {
            Message::Prepare { ballot, from: from_slot, handoff } => self.on_prepare(from, ballot, from_slot, handoff),
            Message::Promise { ballot, chosen, snapshot_slot, entries } => {
                self.on_promise(from, ballot, PromiseReport { chosen, snapshot_slot, entries })
            }
            Message::Accept { ballot, slot, value, chosen } => self.on_accept(from, ballot, slot, value, chosen),
            Message::Accepted { ballot, slot } => self.on_accepted(from, ballot, slot),
            Message::Reject { ballot, promised } => self.on_reject(from, ballot, promised),
            Message::Compacted { ballot, snapshot_slot } => self.on_compacted(from, ballot, snapshot_slot),
            Message::Heartbeat { ballot, seq, chosen } => self.on_heartbeat(from, ballot, seq, chosen, false),
            Message::Quiesce { ballot, seq, chosen } => self.on_heartbeat(from, ballot, seq, chosen, true),
            // Node to node: `MultiPaxos` takes these.
            Message::Alive { .. } => {}
            Message::Wake => self.stir_leader(),
            Message::HeartbeatAck { ballot, seq, chosen } => self.on_heartbeat_ack(from, ballot, seq, chosen),
            Message::CatchUpRequest { from: from_slot } => self.on_catch_up_request(from, from_slot),
            Message::CatchUp { entries, chosen } => self.on_catch_up(from, entries, chosen),
            Message::SnapshotChunk { slot, membership, chunks, index, data } => {
                self.on_snapshot_chunk(Chunk { from, slot, membership, chunks, index, data })
            }
            Message::SnapshotChunkRequest { slot, index } => self.send_snapshot_chunk(from, slot, index),
            Message::Handoff { ballot, keep } => {
                if ballot == self.promised
                    && from == ballot.node
                    && matches!(self.role, Role::Follower)
                    && self.is_voter()
                    && !self.abstaining
                {
                    if keep {
                        self.config.preferred_leader = Some(self.config.node);
                    }
                    self.start_candidacy(Some(ballot));
                }
            }
        }
    }

    /// Everything to do since the last call, in order: persist, send, apply.
    pub fn take_ready(&mut self) -> Ready {
        self.flush_proposals();
        self.send_read_round_if_due();
        self.serve_reads();
        // The promise must be durable before anything that relies on it is
        // sent. The chosen index is only a hint for restarts (it can always be
        // learned again), so it rides along with other writes instead of
        // costing an fsync of its own before the leader can apply, and only
        // every `HARD_STATE_CHOSEN_STRIDE` slots: a node of many groups
        // would otherwise write one more key per group and slot.
        if self.promise_dirty
            || self.ready.persist.snapshot.is_some()
            || (!self.ready.persist.is_empty() && self.chosen.0 >= self.chosen_persisted.0 + HARD_STATE_CHOSEN_STRIDE)
        {
            self.chosen_persisted = self.chosen;
            // A promise must be durable; a chosen index alone need not be.
            if self.promised > self.promised_persisted || self.ready.persist.snapshot.is_some() {
                self.ready.persist.sync = true;
            }
            assert!(
                self.promised >= self.promised_persisted,
                "{}: promise went backwards from {} to {}",
                self.config.group,
                self.promised_persisted,
                self.promised
            );
            self.promised_persisted = self.promised;
            self.ready.persist.hard_state = Some(HardState { promised: self.promised, chosen: self.chosen });
            self.promise_dirty = false;
        }
        // Nothing to write, nothing to sync (a vote again for a slot whose
        // entry is stored: the runtime writes, and syncs, nothing).
        if self.ready.persist.is_empty() {
            self.ready.persist.sync = false;
        }
        // A single voter elects itself in the Ready that first persists its
        // promise: its accepts wait for that persist like everything else.
        self.ready.accepts_early = self.config.early_accepts && self.promise_durable == self.promised;
        mem::take(&mut self.ready)
    }

    // --- elections -------------------------------------------------------

    fn reset_election_deadline(&mut self) {
        self.quiet_wakes += u64::from(self.quiesced);
        self.quiesced = false;
        let timeout = self.config.election_timeout_us;
        let mut deadline = self.now_us + timeout + self.jitter.below(timeout);
        // Placement: the preferred node (the home region) stands first.
        if self.preferred_leader().is_some_and(|preferred| preferred != self.config.node) {
            deadline += self.config.placement_delay_us;
        }
        self.election_deadline_us = deadline;
    }

    /// The configured preferred leader, while it is a voter.
    fn preferred_leader(&self) -> Option<NodeId> {
        self.config.preferred_leader.filter(|preferred| self.membership.is_voter(*preferred))
    }

    fn start_candidacy(&mut self, handoff: Option<Ballot>) {
        self.abort_reads();
        let ballot = self.promised.next_for(self.config.node, self.round_seen);
        self.round_seen = ballot.round;
        // Paxos Made Simple §2.2 (P1a) and Paxos Made Live §5.1: the proposer's
        // own promise is durable before any Prepare leaves (Prepare is in `send`),
        // so a restarted node never reuses a ballot.
        self.promised = ballot;
        self.promise_dirty = true;
        self.leader = None;
        let from = self.chosen.next();
        self.role = Role::Candidate(Candidate {
            ballot,
            from,
            handoff,
            promises: BTreeMap::new(),
            asked: BTreeSet::new(),
            sent_us: self.now_us,
        });
        self.reset_election_deadline();
        self.ask_new_voters();
        self.maybe_complete_phase1();
    }

    /// Sends `Prepare` to every voter of the configurations phase 1 must
    /// cover that has not been asked yet (all of them, at the start).
    fn ask_new_voters(&mut self) {
        let Role::Candidate(candidate) = &self.role else { return };
        let me = self.config.node;
        let mut new = Vec::new();
        for membership in self.phase1_configurations(candidate) {
            for voter in membership.voters {
                if voter != me && !candidate.asked.contains(&voter) && !new.contains(&voter) {
                    new.push(voter);
                }
            }
        }
        let Role::Candidate(candidate) = &mut self.role else { return };
        candidate.asked.extend(new.iter().copied());
        let (ballot, from, handoff) = (candidate.ballot, candidate.from, candidate.handoff);
        for voter in new {
            self.send(voter, Message::Prepare { ballot, from, handoff });
        }
    }

    fn resend_prepare(&mut self) {
        let Role::Candidate(candidate) = &mut self.role else { return };
        candidate.sent_us = self.now_us;
        let (ballot, from, handoff) = (candidate.ballot, candidate.from, candidate.handoff);
        let missing: Vec<NodeId> =
            candidate.asked.iter().copied().filter(|voter| !candidate.promises.contains_key(voter)).collect();
        for voter in missing {
            self.send(voter, Message::Prepare { ballot, from, handoff });
        }
    }

    /// The configurations that may govern a slot above the chosen index, as
    /// far as this candidate can tell: the one in effect after the chosen
    /// index, and every one named by a `Reconfigure` above it, in its own log
    /// or in any promise received. Phase 1 needs a majority of each
    /// (`docs/design/multipaxos.md`, "Membership changes"): a change chosen
    /// above the chosen index was accepted by a majority of the configuration
    /// before it, so some promiser of that configuration reports it, and the
    /// candidate then asks the new configuration's voters too. Naming a
    /// configuration that ends up never chosen costs only promises.
    fn phase1_configurations(&self, candidate: &Candidate) -> Vec<Membership> {
        let mut configurations = vec![self.membership.clone()];
        let own = self.log.range(self.chosen.next()..).map(|(_, (_, value))| value);
        let reported = candidate
            .promises
            .values()
            .flat_map(|report| report.entries.iter())
            .filter(|entry| entry.slot > self.chosen)
            .map(|entry| &entry.value);
        for value in own.chain(reported) {
            if let Value::Reconfigure(membership) = value
                && !configurations.contains(membership)
            {
                configurations.push(membership.clone());
            }
        }
        configurations
    }

    /// Restarted less than an election timeout ago, having promised some
    /// ballot before: it may have acknowledged a leader's heartbeat just
    /// before, and no longer knows when (a fresh replica never did). Only
    /// leases need this wait.
    fn restarted_recently(&self) -> bool {
        self.config.leases
            && self.promised > Ballot::ZERO
            && self.now_us < self.started_us + self.config.election_timeout_us
    }

    /// Whether this replica is following a leader it heard from recently (or leads).
    fn leader_alive(&self) -> bool {
        match self.role {
            Role::Leader(_) => true,
            Role::Candidate(_) => false,
            // A quiet follower's leader is alive while its node is: the
            // runtime wakes the group when that node goes silent.
            Role::Follower => {
                self.leader.is_some()
                    && (self.quiesced || self.now_us < self.leader_heard_us + self.config.election_timeout_us)
            }
        }
    }

    /// Every replica answers: whether its promise counts is the candidate's
    /// business (a voter of some configuration it must cover), and a replica
    /// may be a voter there without knowing it yet (or any more).
    fn on_prepare(&mut self, from: NodeId, ballot: Ballot, from_slot: Slot, handoff: Option<Ballot>) {
        self.round_seen = self.round_seen.max(ballot.round);
        // A candidate in a quiet group: a leader wakes (its heartbeats tell
        // the candidate whom to follow); a follower wakes when the candidate
        // is its own leader's node, which restarted and no longer leads.
        // A quiet follower hearing another candidate wakes too (it asks its
        // leader to heartbeat), but refuses this one as if it had just heard
        // its leader: its sleep ends within an election timeout, whatever
        // became of that leader.
        if self.quiesced {
            if matches!(self.role, Role::Follower) && Some(from) != self.leader && !self.config.faults.quiet_deaf {
                self.leader_heard_us = self.now_us;
            }
            self.stir();
        }
        // Paxos Made Simple §2.2 (P1a): never promise below a promise already made.
        if ballot < self.promised {
            self.send(from, Message::Reject { ballot, promised: self.promised });
            return;
        }
        if ballot > self.promised {
            // Ongaro's thesis §4.2.3 (disruptive servers): while a live leader is
            // heard, refuse to depose it, unless it asked for this candidacy.
            // Refusing a promise is always safe. Leases rest on it: a voter
            // that acknowledged a leader's heartbeat promises no other ballot
            // for an election timeout after it heard it (nor for one after a
            // restart, having forgotten when), unless that leader itself gave
            // up its lease and asked for the candidacy.
            let asked_by_my_leader = handoff.is_some_and(|asking| asking == self.promised);
            if (self.leader_alive() || self.restarted_recently()) && !asked_by_my_leader {
                self.send(from, Message::Reject { ballot, promised: self.promised });
                return;
            }
            self.promised = ballot;
            self.promise_dirty = true;
            self.become_follower(None);
            self.reset_election_deadline();
        }
        // Paxos Made Simple §2.2 (phase 1b): report every accepted proposal at or
        // after `from`, so the new leader re-proposes whatever may be chosen.
        let entries = self
            .log
            .range(from_slot..)
            .map(|(slot, (accepted, value))| Entry { slot: *slot, ballot: *accepted, value: value.clone() })
            .collect();
        let (chosen, snapshot_slot) = (self.chosen, self.snapshot_slot());
        self.send(from, Message::Promise { ballot, chosen, snapshot_slot, entries });
    }

    fn on_promise(&mut self, from: NodeId, ballot: Ballot, report: PromiseReport) {
        let Role::Candidate(candidate) = &mut self.role else { return };
        if candidate.ballot != ballot {
            return;
        }
        candidate.promises.insert(from, report);
        // The promise may name a configuration whose voters were not asked yet.
        self.ask_new_voters();
        self.maybe_complete_phase1();
    }

    fn maybe_complete_phase1(&mut self) {
        let Role::Candidate(candidate) = &self.role else { return };
        // A promiser compacted slots this replica has not learned: their values
        // are chosen but nobody can report them, nor any membership change
        // among them (so phase 1 cannot even tell whose promises it needs).
        // Catch up first, without waiting for more promises.
        let ahead = candidate
            .promises
            .iter()
            .filter(|(_, report)| report.snapshot_slot > self.chosen)
            .max_by_key(|(_, report)| report.snapshot_slot)
            .map(|(node, _)| *node);
        if let Some(ahead) = ahead {
            self.catch_up_first(ahead);
            return;
        }
        // Paxos Made Simple §3 (reconfiguration): each slot's instance needs a
        // majority of its own configuration, so a majority of every
        // configuration that may govern a slot this ballot covers.
        let promised: Vec<NodeId> = candidate.promises.keys().copied().chain([self.config.node]).collect();
        if !self.phase1_configurations(candidate).iter().all(|membership| membership.is_quorum(&promised)) {
            return;
        }
        let Role::Candidate(candidate) = mem::replace(&mut self.role, Role::Follower) else { unreachable!() };
        let ballot = candidate.ballot;

        // Paxos Made Simple §2.2 (P2c) and §3: for every slot above the chosen
        // prefix, propose the value accepted in the highest ballot among the
        // quorum (a value known chosen wins outright), or a no-op if none.
        let mut recovered: BTreeMap<Slot, (bool, Ballot, Value)> = BTreeMap::new();
        let mut consider = |slot: Slot, is_chosen: bool, accepted: Ballot, value: &Value| {
            let better = match recovered.get(&slot) {
                None => true,
                Some((known_chosen, best, _)) => !known_chosen && (is_chosen || accepted > *best),
            };
            if better {
                recovered.insert(slot, (is_chosen, accepted, value.clone()));
            }
        };
        for (slot, (accepted, value)) in self.log.range(self.chosen.next()..) {
            consider(*slot, false, *accepted, value);
        }
        for report in candidate.promises.values() {
            for entry in &report.entries {
                if entry.slot > self.chosen {
                    consider(entry.slot, entry.slot <= report.chosen, entry.ballot, &entry.value);
                }
            }
        }
        let recovered_end = recovered.keys().next_back().copied().unwrap_or(self.chosen);
        // A value an earlier leader proposed may have been accepted only by
        // acceptors outside this quorum, in a slot after everything the
        // quorum reported: at most a window beyond it (a leader keeps at
        // most `window_slots_max` slots in flight, each after the one
        // before was accepted by a majority). Left empty, such a slot could
        // still be chosen by a later leader, after this one served reads
        // that should have seen it. So this ballot chooses those slots too
        // (no-ops), and a read index covers them (Raft's "no-op of the
        // current term", widened to the window).
        let widening = if self.config.faults.narrow_recovery {
            1
        } else {
            self.config.window_slots_max.max(self.config.padding_slots_min)
        };
        let recovery_end = Slot(recovered_end.0 + widening);
        let recovering = (self.chosen.0 + 1..=recovery_end.0)
            .map(|slot| recovered.remove(&Slot(slot)).map_or(Value::Noop, |(_, _, value)| value))
            .collect();
        let leader = Leader {
            ballot,
            next_slot: self.chosen.next(),
            recovery_end,
            recovering,
            in_flight: BTreeMap::new(),
            reconfigure_at: None,
            membership_pending: None,
            chosen_in_ballot: false,
            pending: VecDeque::new(),
            heartbeat_seq: 0,
            heartbeat_sent_us: self.now_us,
            read_round_due: false,
            acked_seq: BTreeMap::new(),
            heard_us: candidate.promises.keys().map(|node| (*node, self.now_us)).collect(),
            peer_chosen: candidate.promises.iter().map(|(node, report)| (*node, report.chosen)).collect(),
            reads: VecDeque::new(),
            handoff_sent_us: None,
            transfer: None,
            elected_us: self.now_us,
            rounds_sent: VecDeque::new(),
            lease_until_us: 0,
            lease_given_up: false,
            compacted: None,
            quiesce_seq: None,
            quiet_acks: BTreeSet::new(),
            active_us: self.now_us,
        };
        self.role = Role::Leader(Box::new(leader));
        self.leader = Some(self.config.node);
        self.ready.became_leader = Some(ballot);
        // The recovered values go out at once, up to the first Reconfigure.
        self.propose_next();
        self.send_heartbeat_round();
        self.advance_leader_chosen();
    }

    fn become_follower(&mut self, leader: Option<NodeId>) {
        if !matches!(self.role, Role::Follower) {
            if let Role::Leader(leader) = &self.role {
                let batches_in_flight = leader
                    .in_flight
                    .iter()
                    .filter(|(slot, in_flight)| {
                        !in_flight.chosen && matches!(self.log.get(slot), Some((_, Value::Batch(_))))
                    })
                    .count();
                if batches_in_flight >= 2 {
                    self.pipelines_cut += 1;
                }
            }
            self.abort_reads();
            self.role = Role::Follower;
            // R22: a preference set at runtime lasts one leadership (or the
            // candidacies a handoff started).
            self.config.preferred_leader = self.configured_preferred;
        }
        self.leader = leader;
    }

    /// Heard from the leader of `ballot` (already `== promised`).
    fn follow(&mut self, ballot: Ballot) {
        if matches!(self.role, Role::Leader(_)) && self.leader_ballot() == Some(ballot) {
            return;
        }
        self.become_follower(Some(ballot.node));
        self.leader_heard_us = self.now_us;
        self.reset_election_deadline();
    }

    /// Raises the promise to `ballot`, or refuses it (answering `Reject`).
    fn admit(&mut self, from: NodeId, ballot: Ballot) -> bool {
        self.round_seen = self.round_seen.max(ballot.round);
        if ballot < self.promised {
            self.send(from, Message::Reject { ballot, promised: self.promised });
            return false;
        }
        if ballot > self.promised {
            self.promised = ballot;
            self.promise_dirty = true;
        }
        true
    }

    // --- phase 2 -----------------------------------------------------------

    fn on_accept(&mut self, from: NodeId, ballot: Ballot, slot: Slot, value: Value, chosen: Slot) {
        // Paxos Made Simple §2.2 (P1a): accept unless promised a higher ballot.
        if !self.admit(from, ballot) {
            return;
        }
        self.follow(ballot);
        let mut voted = false;
        if slot > self.chosen {
            if self.log.get(&slot) != Some(&(ballot, value.clone())) {
                self.ready.persist.entries.push(Entry { slot, ballot, value: value.clone() });
                self.log.insert(slot, (ballot, value));
            }
            voted = true;
        } else if self.log.get(&slot).is_some_and(|(_, known)| *known == value) {
            // Already chosen with this very value: voting again changes nothing.
            self.send(from, Message::Accepted { ballot, slot });
        } else if slot <= self.snapshot_slot() {
            // Compacted here: no vote for a value this replica cannot store.
            // The leader lags (a snapshot from an earlier leader outran it)
            // and would never learn it from silence.
            let snapshot_slot = self.snapshot_slot();
            self.send(from, Message::Compacted { ballot, snapshot_slot });
        }
        self.learn_chosen(from, ballot, chosen);
        if !voted {
            return;
        }
        // A slot's votes are counted against the configuration chosen before
        // it (α = 1). Once every slot below this one is chosen here, that is
        // this replica's own: a learner in it casts no vote any leader
        // counts, so it neither syncs its copy nor answers (leaders count,
        // resend to and track voters only). Above a gap (a change it has not
        // seen may have made it a voter) it votes as a voter does: Paxos
        // Made Live §5.1, the vote is durable before `Accepted` leaves.
        let learner = slot == self.chosen.next() && self.membership.is_learner(self.config.node);
        if learner {
            return;
        }
        if !self.config.faults.votes_unsynced {
            self.ready.persist.sync = true;
        }
        self.send(from, Message::Accepted { ballot, slot });
    }

    fn on_accepted(&mut self, from: NodeId, ballot: Ballot, slot: Slot) {
        let now = self.now_us;
        let Role::Leader(leader) = &mut self.role else { return };
        if leader.ballot != ballot {
            return;
        }
        leader.heard_us.insert(from, now);
        if let Some(in_flight) = leader.in_flight.get_mut(&slot) {
            in_flight.votes.insert(from);
            if is_chosen(&self.membership, self.config.node, in_flight) {
                in_flight.chosen = true;
            }
        }
        self.advance_leader_chosen();
    }

    /// The runtime made `persist` (taken from this replica's Ready) durable.
    /// With `Config::early_accepts`, the leader's own acceptances in it now
    /// count as votes; otherwise nothing changes.
    pub fn persisted(&mut self, persist: &Persist) {
        if !self.config.early_accepts {
            return;
        }
        if let Some(hard_state) = &persist.hard_state {
            self.promise_durable = self.promise_durable.max(hard_state.promised);
        }
        let Role::Leader(leader) = &mut self.role else { return };
        let mut counted = false;
        for entry in &persist.entries {
            if entry.ballot != leader.ballot {
                continue;
            }
            if let Some(in_flight) = leader.in_flight.get_mut(&entry.slot) {
                in_flight.own_durable = true;
                if is_chosen(&self.membership, self.config.node, in_flight) {
                    in_flight.chosen = true;
                }
                counted = true;
            }
        }
        if counted {
            self.advance_leader_chosen();
        }
    }

    fn advance_leader_chosen(&mut self) {
        let Role::Leader(leader) = &mut self.role else { return };
        let mut advanced = false;
        while let Some(mut first) = leader.in_flight.first_entry() {
            assert_eq!(
                *first.key(),
                self.chosen.next(),
                "{}: in-flight slots must follow the chosen prefix",
                self.config.group
            );
            // The configuration cannot change under the loop: every in-flight
            // slot is at or below the one unchosen Reconfigure, if any.
            if is_chosen(&self.membership, self.config.node, first.get()) {
                first.get_mut().chosen = true;
            }
            if !first.get().chosen {
                break;
            }
            let slot = *first.key();
            first.remove();
            self.chosen = slot;
            leader.chosen_in_ballot = true;
            if leader.reconfigure_at == Some(slot) {
                leader.reconfigure_at = None;
            }
            advanced = true;
        }
        let transferring = leader.transfer.is_some();
        let drained = leader.in_flight.is_empty();
        if advanced {
            self.apply_chosen();
            // R22: the successor learns the last chosen slot from this round,
            // and its acknowledgement lets the handover go at once.
            if transferring && drained {
                self.send_heartbeat_round();
            }
        }
    }

    fn accept_own_and_send(&mut self, ballot: Ballot, slot: Slot, value: Value) {
        self.ready.persist.entries.push(Entry { slot, ballot, value: value.clone() });
        self.ready.persist.sync = true;
        self.log.insert(slot, (ballot, value.clone()));
        let chosen = self.chosen;
        self.broadcast(Message::Accept { ballot, slot, value, chosen });
    }

    fn flush_proposals(&mut self) {
        self.propose_next();
        self.advance_leader_chosen();
    }

    /// Proposes, in slot order: the values phase 1 recovered, then a
    /// requested membership change once everything before it is chosen, then
    /// batches of commands while the window has room; never anything after
    /// an unchosen Reconfigure.
    fn propose_next(&mut self) {
        let now = self.now_us;
        let window = self.config.window_slots_max;
        loop {
            let chosen = self.chosen;
            let Role::Leader(leader) = &mut self.role else { return };
            // Paxos Made Simple §3 (reconfiguration, α = 1): the configuration
            // for a slot is the one chosen before it, so nothing is proposed
            // after a Reconfigure until it is chosen and its configuration known.
            if leader.reconfigure_at.is_some() {
                break;
            }
            let slot = leader.next_slot;
            let mut fresh_change = false;
            let value = if let Some(value) = leader.recovering.pop_front() {
                value
            } else if leader.membership_pending.is_some() {
                // A new change goes in only once every slot before it is
                // chosen, so that the configuration it changes (and is
                // counted under) is the one in effect, not one that a slot
                // still in flight might yet replace.
                if slot != chosen.next() {
                    break;
                }
                if leader.chosen_in_ballot {
                    fresh_change = true;
                    Value::Reconfigure(leader.membership_pending.take().expect("checked above"))
                } else {
                    // Ongaro's fix to single-server changes (raft-dev, 2015;
                    // thesis §4.1): a leader changes the configuration only
                    // after a value of its own ballot is chosen; a no-op gets it there.
                    Value::Noop
                }
            } else {
                let in_flight = slot.0 - chosen.0 - 1;
                if leader.pending.is_empty() || in_flight >= window || leader.transfer.is_some() {
                    break;
                }
                let take = leader.pending.len().min(BATCH_COMMANDS_MAX);
                Value::Batch(leader.pending.drain(..take).collect())
            };
            if let Value::Reconfigure(membership) = &value {
                // `propose_membership` checked it against this very
                // configuration, which no change can have replaced since.
                assert!(
                    !fresh_change || membership.check_change_from(&self.membership).is_ok(),
                    "{}: a new change must follow the configuration in effect",
                    self.config.group
                );
                leader.reconfigure_at = Some(slot);
            }
            leader.next_slot = slot.next();
            let own_durable = !self.config.early_accepts || self.config.faults.own_vote_before_durable;
            leader
                .in_flight
                .insert(slot, InFlight { votes: BTreeSet::new(), own_durable, chosen: false, sent_us: now });
            let ballot = leader.ballot;
            self.accept_own_and_send(ballot, slot, value);
        }
    }

    fn on_reject(&mut self, from: NodeId, ballot: Ballot, promised: Ballot) {
        self.round_seen = self.round_seen.max(promised.round);
        let mine = match &mut self.role {
            Role::Candidate(candidate) => candidate.ballot,
            Role::Leader(leader) => {
                leader.heard_us.insert(from, self.now_us);
                leader.ballot
            }
            Role::Follower => return,
        };
        if ballot == mine && promised > mine {
            self.become_follower(None);
            self.reset_election_deadline();
        }
    }

    /// A voter's snapshot replaced a slot this leader is still proposing:
    /// the slot was chosen (a snapshot holds only chosen state), but that
    /// voter cannot vote on it again. Often other voters still can (it took
    /// a routine snapshot after promising): the leader waits a heartbeat
    /// interval for them (`tick_leader`). If the slot is still not chosen
    /// then, it steps down and fetches what it lacks; it may stand again
    /// once caught up, as any follower. Never does it take the snapshot's
    /// word for its own in-flight values: a snapshot may hold choices of a
    /// later ballot this leader does not know of.
    fn on_compacted(&mut self, from: NodeId, ballot: Ballot, snapshot_slot: Slot) {
        let now = self.now_us;
        let chosen = self.chosen;
        let Role::Leader(leader) = &mut self.role else { return };
        if leader.ballot != ballot || snapshot_slot <= chosen {
            return;
        }
        leader.compacted = Some(match leader.compacted {
            Some(furthest @ (_, _, slot)) if slot >= snapshot_slot => furthest,
            earlier => (earlier.map_or(now, |(at, _, _)| at), from, snapshot_slot),
        });
    }

    /// The step-down `on_compacted` defers: true if this leader stepped down.
    fn step_down_if_compacted_past(&mut self) -> bool {
        let (now, chosen, interval) = (self.now_us, self.chosen, self.config.heartbeat_interval_us);
        let Role::Leader(leader) = &mut self.role else { return false };
        let Some((at, from, slot)) = leader.compacted else { return false };
        if slot <= chosen {
            leader.compacted = None;
            return false;
        }
        if now < at + interval {
            return false;
        }
        self.catch_up_first(from);
        true
    }

    /// Gives up leading or standing to fetch from `ahead` the chosen slots
    /// it compacted, which no quorum can report or vote on any more.
    fn catch_up_first(&mut self, ahead: NodeId) {
        self.become_follower(None);
        self.reset_election_deadline();
        self.catch_up_sent_us = None;
        self.request_catch_up(ahead);
    }

    // --- leader upkeep -----------------------------------------------------

    fn tick_leader(&mut self) {
        let now = self.now_us;
        let interval = self.config.heartbeat_interval_us;
        let timeout = self.config.election_timeout_us;
        let me = self.config.node;
        if self.step_down_if_compacted_past() {
            return;
        }
        let voters = &self.membership.voters;
        let Role::Leader(leader) = &mut self.role else { return };
        if now < leader.heartbeat_sent_us + interval {
            return;
        }
        // Check-quorum: a leader cut off from a quorum steps down, so that
        // followers it still reaches (one-way partitions) stop deferring to it.
        let heard = voters
            .iter()
            .filter(|voter| **voter == me || leader.heard_us.get(voter).is_some_and(|at| *at + timeout > now))
            .count();
        if now >= leader.elected_us + timeout && !quorum::is_majority(heard, voters.len()) {
            self.become_follower(None);
            self.reset_election_deadline();
            return;
        }
        // Retransmit accepts that lost a message somewhere.
        let ballot = leader.ballot;
        let chosen = self.chosen;
        let mut resend = Vec::new();
        for (slot, in_flight) in leader.in_flight.iter_mut() {
            if !in_flight.chosen && now >= in_flight.sent_us + interval {
                in_flight.sent_us = now;
                for voter in voters {
                    if *voter != me && !in_flight.votes.contains(voter) {
                        resend.push((*voter, *slot));
                    }
                }
            }
        }
        for (voter, slot) in resend {
            let value = self.log.get(&slot).expect("in-flight slots are in the log").1.clone();
            self.send(voter, Message::Accept { ballot, slot, value, chosen });
        }
        self.end_stale_transfer();
        self.hand_off_if_caught_up();
        if self.may_quiesce() {
            self.send_round(true);
        } else {
            if let Role::Leader(leader) = &mut self.role {
                leader.forget_quiesce();
            }
            self.send_heartbeat_round();
        }
    }

    /// Placement: hands the leadership to the preferred node once it has
    /// caught up (nothing in flight, recovering or waiting to be proposed
    /// here but commands, its last reported chosen index at this leader's,
    /// heard from within a heartbeat interval, and, for a runtime transfer,
    /// its acknowledgement of a round sent since it began), at most once an
    /// election timeout. The lease ends first, for good: the successor's
    /// candidacy may be promised by voters that still follow this ballot.
    fn hand_off_if_caught_up(&mut self) {
        let (me, now) = (self.config.node, self.now_us);
        let (interval, timeout) = (self.config.heartbeat_interval_us, self.config.election_timeout_us);
        let chosen = self.chosen;
        let voters = &self.membership.voters;
        let Role::Leader(leader) = &mut self.role else { return };
        // Nothing this leader still has to propose would be lost with it.
        let settled = leader.in_flight.is_empty()
            && leader.recovering.is_empty()
            && leader.membership_pending.is_none()
            && leader.reconfigure_at.is_none();
        let handoff_to = self.config.preferred_leader.filter(|preferred| {
            // R22: a runtime successor must have answered since its
            // transfer began (`heard_us` is also set on waking from quiet).
            let answered = leader.transfer.is_none_or(|transfer| {
                transfer.to != *preferred || leader.acked_seq.get(preferred).is_some_and(|seq| *seq >= transfer.seq)
            });
            *preferred != me
                && settled
                && answered
                && voters.contains(preferred)
                && leader.peer_chosen.get(preferred).is_some_and(|slot| *slot >= chosen)
                && leader.heard_us.get(preferred).is_some_and(|at| *at + interval >= now)
                && leader.handoff_sent_us.is_none_or(|at| now >= at + timeout)
        });
        let Some(preferred) = handoff_to else { return };
        leader.handoff_sent_us = Some(now);
        leader.lease_given_up = true;
        leader.lease_until_us = 0;
        let ballot = leader.ballot;
        self.send(preferred, Message::Handoff { ballot, keep: true });
    }

    /// An idle leader (`Config::quiesce`): nothing asked of it for an
    /// election timeout (a quiet leader's lease runs out, so a group in
    /// steady use keeps heartbeating and serving reads under its lease),
    /// nothing proposed, pending, recovering, read or handed off, and its
    /// log chosen and applied.
    fn may_quiesce(&self) -> bool {
        let Role::Leader(leader) = &self.role else { return false };
        self.config.quiesce
            && self.now_us >= leader.active_us.saturating_add(self.config.election_timeout_us)
            && !self.abstaining
            && leader.in_flight.is_empty()
            && leader.pending.is_empty()
            && leader.recovering.is_empty()
            && leader.reconfigure_at.is_none()
            && leader.membership_pending.is_none()
            && leader.reads.is_empty()
            && !leader.read_round_due
            && leader.compacted.is_none()
            && leader.next_slot == self.chosen.next()
            && self.applied == self.chosen
            && self.preferred_leader().is_none_or(|preferred| preferred == self.config.node)
    }

    /// Whether this replica's group is quiet here (`Config::quiesce`).
    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }

    /// How often this replica fell quiet, and woke from it, since it started.
    pub fn quiet_counts(&self) -> (u64, u64) {
        (self.quiet_spells, self.quiet_wakes)
    }

    fn fall_quiet(&mut self) {
        if !self.quiesced {
            self.quiesced = true;
            self.quiet_spells += 1;
        }
    }

    /// Time passes without anything else happening (a runtime handing a
    /// request to a replica that heard nothing for long).
    pub fn observe_time(&mut self, now_us: u64) {
        self.now_us = self.now_us.max(now_us);
    }

    /// The runtime saw a member of this group go silent, come back or
    /// restart: a quiet replica runs its timers again (a leader heartbeats
    /// at once, a follower's election timer restarts).
    pub fn wake(&mut self, now_us: u64) {
        self.now_us = self.now_us.max(now_us);
        self.stir();
    }

    /// A request: a leader wakes (or starts its attempt to fall quiet
    /// over); a follower, which answers "not the leader", sleeps on (its
    /// timer would only depose a leader that is fine).
    fn stir_leader(&mut self) {
        if matches!(self.role, Role::Leader(_)) {
            self.stir();
        }
    }

    /// Something happened that a quiet group must not sleep through: it
    /// wakes; a leader trying to fall quiet starts over. A follower that
    /// wakes asks its leader to heartbeat again (`Wake`), so that its timer
    /// does not depose a leader that is fine but quiet.
    fn stir(&mut self) {
        if self.config.faults.quiet_deaf && matches!(self.role, Role::Follower) {
            return;
        }
        let (now, interval, was_quiet) = (self.now_us, self.config.heartbeat_interval_us, self.quiesced);
        self.quiesced = false;
        self.quiet_wakes += u64::from(was_quiet);
        match &mut self.role {
            Role::Leader(leader) => {
                leader.forget_quiesce();
                leader.active_us = now;
                if was_quiet {
                    // Heartbeat at the next tick; check-quorum counts from
                    // now, not from before the quiet.
                    leader.heartbeat_sent_us = now.saturating_sub(interval);
                    for heard in leader.heard_us.values_mut() {
                        *heard = (*heard).max(now);
                    }
                }
            }
            _ if was_quiet => {
                self.reset_election_deadline();
                if let Some(leader) = self.leader.filter(|leader| *leader != self.config.node) {
                    self.send(leader, Message::Wake);
                }
            }
            _ => {}
        }
    }

    fn send_heartbeat_round(&mut self) {
        self.send_round(false);
    }

    /// A heartbeat round, or (`quiesce`) a round asking the group to fall quiet.
    fn send_round(&mut self, quiesce: bool) {
        let chosen = self.chosen;
        let now = self.now_us;
        let Role::Leader(leader) = &mut self.role else { return };
        leader.heartbeat_seq += 1;
        leader.heartbeat_sent_us = now;
        if leader.rounds_sent.len() == ROUNDS_UNCONFIRMED_MAX {
            leader.rounds_sent.pop_front();
        }
        leader.rounds_sent.push_back((leader.heartbeat_seq, now));
        leader.read_round_due = false;
        let (ballot, seq) = (leader.ballot, leader.heartbeat_seq);
        if quiesce {
            leader.quiesce_seq.get_or_insert(seq);
            self.broadcast(Message::Quiesce { ballot, seq, chosen });
        } else {
            self.broadcast(Message::Heartbeat { ballot, seq, chosen });
        }
        self.serve_reads();
    }

    fn send_read_round_if_due(&mut self) {
        if let Role::Leader(leader) = &self.role
            && leader.read_round_due
        {
            self.send_heartbeat_round();
        }
    }

    fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, seq: u64, chosen: Slot, quiesce: bool) {
        if !self.admit(from, ballot) {
            return;
        }
        self.follow(ballot);
        self.learn_chosen(from, ballot, chosen);
        // Quiet only with the whole log the leader has chosen: a member that
        // lacks some keeps its timer and keeps asking.
        if quiesce && self.config.quiesce && self.chosen >= chosen && matches!(self.role, Role::Follower) {
            self.fall_quiet();
        }
        // The leader counts only voters' acknowledgements (read-index,
        // check-quorum); a quiet group waits for learners too.
        if self.is_voter() || quiesce {
            let chosen = self.chosen;
            self.send(from, Message::HeartbeatAck { ballot, seq, chosen });
        }
    }

    fn on_heartbeat_ack(&mut self, from: NodeId, ballot: Ballot, seq: u64, chosen: Slot) {
        let now = self.now_us;
        let Role::Leader(leader) = &mut self.role else { return };
        if leader.ballot != ballot {
            return;
        }
        leader.heard_us.insert(from, now);
        let acked = leader.acked_seq.entry(from).or_insert(0);
        *acked = (*acked).max(seq);
        let peer_chosen = leader.peer_chosen.entry(from).or_insert(Slot::ZERO);
        *peer_chosen = (*peer_chosen).max(chosen);
        if leader.quiesce_seq.is_some_and(|first| seq >= first) && chosen >= self.chosen {
            leader.quiet_acks.insert(from);
        }
        // R22: a successor caught up is asked to take over at once.
        if leader.transfer.is_some() {
            self.end_stale_transfer();
            self.hand_off_if_caught_up();
        }
        self.extend_lease();
        self.serve_reads();
        self.maybe_fall_quiet();
    }

    /// Every other member acknowledged a `Quiesce` round with the whole
    /// log, and the leader is still idle: it stops heartbeating.
    fn maybe_fall_quiet(&mut self) {
        let me = self.config.node;
        let Role::Leader(leader) = &self.role else { return };
        if leader.quiesce_seq.is_none() || self.quiesced {
            return;
        }
        let all =
            self.membership.members().filter(|member| *member != me).all(|member| leader.quiet_acks.contains(&member));
        if all && self.may_quiesce() {
            self.fall_quiet();
        }
    }

    /// A quorum acknowledged heartbeat round `k`, sent at `s`: each of its
    /// voters heard this leader after `s` and promises no other ballot for
    /// an election timeout after that, by its own clock (`on_prepare`). So
    /// no other leader can be elected before `s` plus an election timeout,
    /// shortened to `LEASE_PERCENT` of it for clocks that run at different
    /// rates; until then this leader may serve reads without a round.
    fn extend_lease(&mut self) {
        if !self.config.leases {
            return;
        }
        let confirmed = self.confirmed_seq();
        let lease_us = self.config.election_timeout_us * LEASE_PERCENT / 100;
        let Role::Leader(leader) = &mut self.role else { return };
        let mut sent_at = None;
        while let Some(&(seq, sent_us)) = leader.rounds_sent.front()
            && seq <= confirmed
        {
            sent_at = Some(sent_us);
            leader.rounds_sent.pop_front();
        }
        if let Some(sent_us) = sent_at
            && !leader.lease_given_up
        {
            leader.lease_until_us = leader.lease_until_us.max(sent_us + lease_us);
        }
    }

    /// When this leader's lease ends (its own clock), if it ever held one
    /// in this ballot and did not give it up.
    pub fn lease_expiry_us(&self) -> Option<u64> {
        match &self.role {
            Role::Leader(leader) if leader.lease_until_us > 0 => Some(leader.lease_until_us),
            _ => None,
        }
    }

    /// Whether this replica leads with a lease at `now_us` (its own clock).
    pub fn has_lease(&self, now_us: u64) -> bool {
        self.lease_expiry_us().is_some_and(|expiry| now_us < expiry || self.config.faults.lease_past_expiry)
    }

    /// Leadership confirmed up to the heartbeat a quorum acknowledged.
    fn confirmed_seq(&self) -> u64 {
        let Role::Leader(leader) = &self.role else { return 0 };
        let mut acked: Vec<u64> = self
            .membership
            .voters
            .iter()
            .map(|voter| {
                if *voter == self.config.node {
                    leader.heartbeat_seq
                } else {
                    leader.acked_seq.get(voter).copied().unwrap_or(0)
                }
            })
            .collect();
        quorum::majority_reached(&mut acked)
    }

    fn serve_reads(&mut self) {
        let confirmed = self.confirmed_seq();
        let applied = self.applied;
        let Role::Leader(leader) = &mut self.role else { return };
        while let Some(read) = leader.reads.front() {
            if read.seq > confirmed || read.index > applied {
                break;
            }
            let read = leader.reads.pop_front().expect("front exists");
            self.ready.reads.push(ReadState { id: read.id, outcome: ReadOutcome::Ready { index: read.index } });
        }
    }

    fn abort_reads(&mut self) {
        if let Role::Leader(leader) = &mut self.role {
            for read in leader.reads.drain(..) {
                self.ready.reads.push(ReadState { id: read.id, outcome: ReadOutcome::Aborted });
            }
        }
    }

    // --- learning what is chosen --------------------------------------------

    /// The leader of `ballot` says everything up to `leader_chosen` is chosen.
    fn learn_chosen(&mut self, leader: NodeId, ballot: Ballot, leader_chosen: Slot) {
        let before = self.chosen;
        // A leader proposes one value per slot in its ballot, so an entry this
        // replica accepted in that very ballot is the chosen one.
        while self.chosen < leader_chosen {
            let next = self.chosen.next();
            match self.log.get(&next) {
                Some((accepted, _)) if *accepted == ballot => self.chosen = next,
                _ => break,
            }
        }
        if self.chosen > before {
            self.apply_chosen();
        }
        if self.chosen < leader_chosen && !matches!(self.role, Role::Leader(_)) {
            self.request_catch_up(leader);
        }
    }

    fn request_catch_up(&mut self, from: NodeId) {
        // A chunk of a snapshot may take longer than a heartbeat to cross a
        // wide-area link: asking again every heartbeat would send each chunk
        // several times. It is asked for again only once it is surely lost.
        let receiving =
            self.incoming.as_ref().is_some_and(|incoming| incoming.from == from && incoming.slot > self.chosen);
        let resend_us = if receiving { self.config.election_timeout_us } else { self.config.heartbeat_interval_us };
        if self.catch_up_sent_us.is_some_and(|at| self.now_us < at + resend_us) {
            return;
        }
        self.catch_up_sent_us = Some(self.now_us);
        // A snapshot half received from this node resumes where it
        // stopped (from the start of the one the node keeps now, if
        // compaction replaced it meanwhile).
        if let Some(incoming) = self.incoming.take_if(|incoming| incoming.slot > self.chosen && incoming.from == from) {
            let (slot, index, storing) = (incoming.slot, incoming.received, incoming.stored < incoming.received);
            self.incoming = Some(incoming);
            // A chunk the state machine is still storing was not lost.
            if !storing {
                self.send(from, Message::SnapshotChunkRequest { slot, index });
            }
            return;
        }
        self.incoming = None;
        let next = self.chosen.next();
        self.send(from, Message::CatchUpRequest { from: next });
    }

    fn on_catch_up_request(&mut self, from: NodeId, from_slot: Slot) {
        if from_slot <= self.snapshot_slot() {
            let slot = self.snapshot_slot();
            self.send_snapshot_chunk(from, slot, 0);
            return;
        }
        // The requester may be ahead of this replica (which restarted with
        // a lagging chosen index, say): then there is nothing to give.
        let entries: Vec<Entry> = if from_slot > self.chosen {
            Vec::new()
        } else {
            self.log
                .range(from_slot..=self.chosen)
                .take(CATCH_UP_ENTRIES_MAX)
                .map(|(slot, (ballot, value))| Entry { slot: *slot, ballot: *ballot, value: value.clone() })
                .collect()
        };
        let chosen = self.chosen;
        self.send(from, Message::CatchUp { entries, chosen });
    }

    fn on_catch_up(&mut self, from: NodeId, entries: Vec<Entry>, sender_chosen: Slot) {
        self.catch_up_sent_us = None;
        if matches!(self.role, Role::Leader(_)) {
            // A stale answer from before the election: the leader's chosen
            // prefix must only move with its own in-flight slots.
            return;
        }
        let before = self.chosen;
        for entry in entries {
            if entry.slot != self.chosen.next() {
                continue;
            }
            // A chosen value replaces whatever this replica had accepted there:
            // every ballot at or above the choosing one carries the same value.
            // No vote and no promise: a crash may lose it (no fsync of its
            // own, `Persist::sync`), and it is then fetched again.
            self.chosen = entry.slot;
            self.log.insert(entry.slot, (entry.ballot, entry.value.clone()));
            self.ready.persist.entries.push(entry);
        }
        if self.chosen > before {
            self.apply_chosen();
        }
        if self.chosen < sender_chosen && !matches!(self.role, Role::Leader(_)) {
            self.request_catch_up(from);
        }
    }

    /// Has chunk `index` of this replica's snapshot sent, if the snapshot
    /// asked for is the one it keeps; the first chunk of the one it keeps
    /// otherwise (compaction replaced it meanwhile). The state machine
    /// reads the chunk (`Ready::snapshot_sends`).
    fn send_snapshot_chunk(&mut self, to: NodeId, slot: Slot, index: u64) {
        let Some(snapshot) = &self.snapshot else { return };
        let index = if snapshot.slot == slot && index < snapshot.chunks { index } else { 0 };
        self.ready.snapshot_sends.push(ChunkToSend {
            to,
            slot: snapshot.slot,
            membership: snapshot.membership.clone(),
            chunks: snapshot.chunks,
            index,
        });
    }

    /// A chunk of a snapshot: handed to the state machine to store if it
    /// continues the one being received (or starts one). The next chunk is
    /// asked for once the state machine stored this one
    /// ([`Replica::chunk_stored`]). Anything out of order is dropped; a
    /// lost chunk is asked for again by the next catch-up request.
    fn on_snapshot_chunk(&mut self, chunk: Chunk) {
        // A late copy of a chunk of a snapshot already passed says nothing
        // of the transfer under way (if any).
        if chunk.slot <= self.chosen || matches!(self.role, Role::Leader(_)) {
            self.incoming.take_if(|incoming| incoming.slot <= self.chosen || matches!(self.role, Role::Leader(_)));
            return;
        }
        if chunk.index >= chunk.chunks {
            return;
        }
        let continues = self.incoming.as_ref().is_some_and(|incoming| {
            (incoming.from, incoming.slot, incoming.chunks, incoming.received, incoming.stored)
                == (chunk.from, chunk.slot, chunk.chunks, chunk.index, chunk.index)
        });
        // A late copy of an earlier chunk of the same snapshot (sent twice,
        // or answered after a resend) must not wipe the progress made since.
        let repeats = self.incoming.as_ref().is_some_and(|incoming| {
            (incoming.from, incoming.slot, incoming.chunks) == (chunk.from, chunk.slot, chunk.chunks)
                || incoming.slot > chunk.slot
        });
        if continues {
            self.incoming.as_mut().expect("checked above").received += 1;
        } else if chunk.index == 0 && !repeats {
            self.incoming = Some(IncomingSnapshot {
                from: chunk.from,
                slot: chunk.slot,
                membership: chunk.membership,
                chunks: chunk.chunks,
                received: 1,
                stored: 0,
            });
        } else {
            return;
        }
        // Progress: what was asked for arrived (a copy that brings nothing
        // new leaves the resend timer running).
        self.catch_up_sent_us = None;
        self.ready.snapshot_chunks.push(ChunkReceived { slot: chunk.slot, index: chunk.index, data: chunk.data });
    }

    /// The state machine durably stored chunk `index` of the snapshot at
    /// `slot` (handed to it in `Ready::snapshot_chunks`): the next chunk is
    /// asked for, or, after the last, the snapshot is installed. Only then,
    /// so that a persisted snapshot always has its chunks on disk.
    pub fn chunk_stored(&mut self, slot: Slot, index: u64) {
        let Some(incoming) = self.incoming.as_mut() else { return };
        if incoming.slot != slot || index.checked_add(1) != Some(incoming.received) || incoming.stored != index {
            return;
        }
        incoming.stored = incoming.received;
        if slot <= self.chosen || matches!(self.role, Role::Leader(_)) {
            self.incoming = None;
            return;
        }
        if incoming.stored < incoming.chunks {
            let (from, index) = (incoming.from, incoming.stored);
            self.catch_up_sent_us = Some(self.now_us);
            self.send(from, Message::SnapshotChunkRequest { slot, index });
            return;
        }
        let incoming = self.incoming.take().expect("checked above");
        self.on_install_snapshot(Snapshot {
            slot: incoming.slot,
            chunks: incoming.chunks,
            membership: incoming.membership,
        });
    }

    fn on_install_snapshot(&mut self, snapshot: Snapshot) {
        if snapshot.slot <= self.chosen || matches!(self.role, Role::Leader(_)) {
            return;
        }
        self.log.retain(|slot, _| *slot > snapshot.slot);
        self.chosen = snapshot.slot;
        self.applied = snapshot.slot;
        let membership = snapshot.membership.clone().unwrap_or_else(|| self.initial_membership());
        if membership != self.membership {
            let previous = mem::replace(&mut self.membership, membership);
            self.on_membership_changed(previous);
        }
        // Entries queued for the state machine are all below the snapshot,
        // which subsumes them; the restore comes first in the Ready.
        self.ready.apply.clear();
        self.ready.restore = Some(snapshot.clone());
        self.ready.persist.snapshot = Some(snapshot.clone());
        self.ready.persist.sync = true;
        self.snapshot = Some(snapshot);
        self.apply_chosen();
    }

    fn apply_chosen(&mut self) {
        let mut previous = None;
        while self.applied < self.chosen {
            let slot = self.applied.next();
            let (_, value) = self
                .log
                .get(&slot)
                .unwrap_or_else(|| panic!("{}: chosen slot {slot} missing from the log", self.config.group));
            // Paxos Made Simple §3: a chosen Reconfigure governs the slots after it.
            if let Value::Reconfigure(membership) = value {
                let before = mem::replace(&mut self.membership, membership.clone());
                previous.get_or_insert(before);
            }
            self.ready.apply.push(Committed { slot, value: value.clone() });
            self.applied = slot;
        }
        if let Some(previous) = previous {
            self.on_membership_changed(previous);
        }
    }

    // --- membership --------------------------------------------------------------

    fn initial_membership(&self) -> Membership {
        Membership::new(self.config.voters.clone(), self.config.learners.clone())
    }

    /// The configuration in effect after `slot`, which must be chosen and at
    /// or above the snapshot: the latest Reconfigure in the log up to `slot`,
    /// else the snapshot's configuration, else the initial one.
    fn membership_after(&self, slot: Slot) -> Membership {
        self.reconfigured_after(slot).unwrap_or_else(|| self.initial_membership())
    }

    /// The configuration named by the latest Reconfigure chosen at or before
    /// `slot` (in the log, or carried by the snapshot), if there is one; `None`
    /// means the group's initial configuration. Snapshots carry this, never
    /// `Config`'s voters and learners: those of a replica created for a joining
    /// node are not the group's initial configuration.
    fn reconfigured_after(&self, slot: Slot) -> Option<Membership> {
        assert!(
            slot >= self.snapshot_slot() && slot <= self.chosen,
            "{}: {slot} is not chosen here",
            self.config.group
        );
        self.log
            .range(..=slot)
            .rev()
            .find_map(|(_, (_, value))| match value {
                Value::Reconfigure(membership) => Some(membership.clone()),
                _ => None,
            })
            .or_else(|| self.snapshot.as_ref().and_then(|snapshot| snapshot.membership.clone()))
    }

    /// The configuration just changed (a Reconfigure was chosen, or a snapshot
    /// installed). A leader tells the nodes it no longer sends to that the
    /// change is chosen, so that a removed voter learns to stop standing; a
    /// leader or candidate that is no longer a voter steps down (a removed
    /// leader first hands over to the most caught-up remaining voter, as
    /// Ongaro's thesis §4.2.2 has a removed leader step down once the change
    /// is committed).
    fn on_membership_changed(&mut self, previous: Membership) {
        let me = self.config.node;
        let still_voter = self.membership.is_voter(me);
        // A lease rests on a quorum of one configuration: a new one must
        // confirm it again, from a round sent from now on.
        if let Role::Leader(leader) = &mut self.role {
            leader.lease_until_us = 0;
            leader.rounds_sent.clear();
        }
        match &self.role {
            Role::Leader(leader) => {
                let (ballot, seq, chosen) = (leader.ballot, leader.heartbeat_seq, self.chosen);
                let mut notify: Vec<NodeId> =
                    previous.members().filter(|node| *node != me && !self.membership.is_member(*node)).collect();
                if still_voter {
                    for node in notify {
                        self.send(node, Message::Heartbeat { ballot, seq, chosen });
                    }
                    return;
                }
                notify.extend(self.membership.members().filter(|node| *node != me));
                let successor = self
                    .membership
                    .voters
                    .iter()
                    .filter(|voter| **voter != me)
                    .max_by_key(|voter| (leader.peer_chosen.get(voter).copied(), leader.heard_us.get(voter).copied()))
                    .copied();
                for node in notify {
                    self.send(node, Message::Heartbeat { ballot, seq, chosen });
                }
                if let Some(successor) = successor {
                    self.send(successor, Message::Handoff { ballot, keep: false });
                }
                self.become_follower(None);
                self.reset_election_deadline();
            }
            Role::Candidate(_) if !still_voter => {
                self.become_follower(None);
                self.reset_election_deadline();
            }
            Role::Candidate(_) | Role::Follower => {}
        }
    }

    // --- sending -------------------------------------------------------------

    fn send(&mut self, to: NodeId, message: Message) {
        self.ready.send.push(Envelope { group: self.config.group, from: self.config.node, to, message });
    }

    /// To every other voter and learner of the current configuration.
    fn broadcast(&mut self, message: Message) {
        let me = self.config.node;
        let members: Vec<NodeId> = self.membership.members().filter(|member| *member != me).collect();
        for member in members {
            self.send(member, message.clone());
        }
    }
}

/// Paxos Made Simple §2.2: a slot is chosen once a majority of its
/// configuration accepted it in one ballot. The leader's own vote counts (if
/// it is a voter) once its acceptance is durable: in the same, earlier
/// persist as its `Accept`, or, with `Config::early_accepts`, once the
/// runtime said so.
fn is_chosen(membership: &Membership, leader: NodeId, in_flight: &InFlight) -> bool {
    let count = membership
        .voters
        .iter()
        .filter(|voter| (**voter == leader && in_flight.own_durable) || in_flight.votes.contains(voter))
        .count();
    quorum::is_majority(count, membership.voters.len())
}
