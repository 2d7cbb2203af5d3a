//! One replica of one Multi-Paxos group: acceptor, learner, and (when elected)
//! the distinguished proposer, as a sans-IO state machine.
//!
//! Inputs: [`Replica::step`] (a message), [`Replica::tick`] (time passes),
//! [`Replica::propose`] (a command), [`Replica::read_index`] (a linearizable
//! read), [`Replica::compact`] (the state machine took a snapshot).
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
//!     └─ compacted slots it lacks (catch up first)
//! ```
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
//! Linearizable reads use read-index (Ongaro, *Consensus: Bridging Theory and
//! Practice* §6.4), not leases: no clock bound is needed for safety. See
//! `docs/design/multipaxos.md`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::mem;

use super::ballot::{Ballot, GroupId, Slot};
use super::config::{BATCH_COMMANDS_MAX, CATCH_UP_ENTRIES_MAX, Config, PROPOSALS_PENDING_MAX, READS_PENDING_MAX};
use super::jitter::Jitter;
use super::message::{Command, Entry, Envelope, Message, Snapshot, Value};
use super::quorum;
use super::ready::{Committed, HardState, ReadOutcome, ReadState, Ready, Stored};
use crate::topology::NodeId;

/// Why a proposal or read was refused. Both are retryable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader proposes and serves reads; `leader` is a hint.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The leader's queue is full; back off.
    #[error("too many pending proposals or reads")]
    Busy,
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
    handoff: bool,
    promises: BTreeMap<NodeId, PromiseReport>,
    sent_us: u64,
}

/// A slot the leader proposed in its ballot and has not yet seen chosen.
#[derive(Debug)]
struct InFlight {
    votes: BTreeSet<NodeId>,
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
    in_flight: BTreeMap<Slot, InFlight>,
    pending: VecDeque<Command>,
    heartbeat_seq: u64,
    heartbeat_sent_us: u64,
    read_round_due: bool,
    acked_seq: BTreeMap<NodeId, u64>,
    heard_us: BTreeMap<NodeId, u64>,
    peer_chosen: BTreeMap<NodeId, Slot>,
    reads: VecDeque<PendingRead>,
    handoff_sent_us: Option<u64>,
    elected_us: u64,
}

/// One replica of one group. See the module documentation.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    jitter: Jitter,
    now_us: u64,
    /// Durable: the highest ballot promised.
    promised: Ballot,
    /// The highest round heard of, promised or not: the next candidacy goes above it.
    round_seen: u64,
    /// Durable: accepted or chosen entries above the snapshot.
    log: BTreeMap<Slot, (Ballot, Value)>,
    /// Durable: the latest snapshot, kept to send to lagging replicas.
    snapshot: Option<Snapshot>,
    /// Every slot up to here is chosen and its value is known. Persisted
    /// lazily: after a restart it may be lower, never higher.
    chosen: Slot,
    /// Handed to the state machine (in a Ready) up to here.
    applied: Slot,
    role: Role,
    leader: Option<NodeId>,
    leader_heard_us: u64,
    election_deadline_us: u64,
    catch_up_sent_us: Option<u64>,
    promise_dirty: bool,
    /// The promise last handed out to persist: promises never go backwards.
    promised_persisted: Ballot,
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
        let mut replica = Replica {
            jitter: Jitter::new(seed),
            now_us,
            promised: stored.hard_state.promised,
            round_seen: stored.hard_state.promised.round,
            log,
            chosen,
            applied: snapshot_slot,
            role: Role::Follower,
            leader: None,
            leader_heard_us: now_us,
            election_deadline_us: 0,
            catch_up_sent_us: None,
            promise_dirty: false,
            promised_persisted: stored.hard_state.promised,
            ready: Ready { restore: stored.snapshot.clone(), ..Ready::default() },
            snapshot: stored.snapshot,
            config,
        };
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

    /// Whether this replica is a non-voting learner.
    pub fn is_learner(&self) -> bool {
        self.config.learners.contains(&self.config.node)
    }

    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Follower => RoleKind::Follower,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
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

    /// The slot of the latest snapshot (log entries at or below it are gone).
    pub fn snapshot_slot(&self) -> Slot {
        self.snapshot.as_ref().map_or(Slot::ZERO, |snapshot| snapshot.slot)
    }

    /// The entry this replica holds for `slot`, if any (for tests and checkers).
    pub fn entry(&self, slot: Slot) -> Option<(Ballot, &Value)> {
        self.log.get(&slot).map(|(ballot, value)| (*ballot, value))
    }

    /// Queues a command. Only a leader accepts; the command is packed into a
    /// batch when the next Ready is taken, if the in-flight window has room.
    pub fn propose(&mut self, command: Command) -> Result<(), ProposeError> {
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
    pub fn read_index(&mut self, id: u64) -> Result<(), ProposeError> {
        let leader_hint = self.leader;
        let chosen = self.chosen;
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
        leader.reads.push_back(PendingRead { id, index, seq: leader.heartbeat_seq + 1 });
        leader.read_round_due = true;
        Ok(())
    }

    /// The state machine captured everything up to `snapshot.slot` (which it
    /// has applied): log entries up to there may go. The snapshot is persisted
    /// and kept to send to replicas that lag behind the truncated log.
    pub fn compact(&mut self, snapshot: Snapshot) {
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
        self.log.retain(|slot, _| *slot > snapshot.slot);
        self.ready.persist.snapshot = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
    }

    /// Time passes: election timeouts, heartbeats, retransmissions.
    pub fn tick(&mut self, now_us: u64) {
        self.now_us = self.now_us.max(now_us);
        let now = self.now_us;
        match &self.role {
            Role::Follower => {
                // Learners follow the log but never stand.
                if now >= self.election_deadline_us && !self.is_learner() {
                    self.start_candidacy(false);
                }
            }
            Role::Candidate(candidate) => {
                if now >= self.election_deadline_us {
                    self.start_candidacy(false);
                } else if now >= candidate.sent_us + self.config.heartbeat_interval_us {
                    self.resend_prepare();
                }
            }
            Role::Leader(_) => self.tick_leader(),
        }
    }

    /// A message arrived.
    pub fn step(&mut self, now_us: u64, envelope: Envelope) {
        assert_eq!(envelope.group, self.config.group, "message for another group");
        assert_eq!(envelope.to, self.config.node, "message for another node");
        self.now_us = self.now_us.max(now_us);
        let from = envelope.from;
        if !self.config.voters.contains(&from) && !self.config.learners.contains(&from) {
            return;
        }
        match envelope.message {
            Message::Prepare { ballot, from: from_slot, handoff } => self.on_prepare(from, ballot, from_slot, handoff),
            Message::Promise { ballot, chosen, snapshot_slot, entries } => {
                self.on_promise(from, ballot, PromiseReport { chosen, snapshot_slot, entries })
            }
            Message::Accept { ballot, slot, value, chosen } => self.on_accept(from, ballot, slot, value, chosen),
            Message::Accepted { ballot, slot } => self.on_accepted(from, ballot, slot),
            Message::Reject { ballot, promised } => self.on_reject(from, ballot, promised),
            Message::Heartbeat { ballot, seq, chosen } => self.on_heartbeat(from, ballot, seq, chosen),
            Message::HeartbeatAck { ballot, seq, chosen } => self.on_heartbeat_ack(from, ballot, seq, chosen),
            Message::CatchUpRequest { from: from_slot } => self.on_catch_up_request(from, from_slot),
            Message::CatchUp { entries, chosen } => self.on_catch_up(from, entries, chosen),
            Message::InstallSnapshot { snapshot } => self.on_install_snapshot(snapshot),
            Message::Handoff { ballot } => {
                if ballot == self.promised
                    && from == ballot.node
                    && matches!(self.role, Role::Follower)
                    && !self.is_learner()
                {
                    self.start_candidacy(true);
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
        // costing an fsync of its own before the leader can apply.
        if self.promise_dirty || !self.ready.persist.is_empty() {
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
        mem::take(&mut self.ready)
    }

    // --- elections -------------------------------------------------------

    fn reset_election_deadline(&mut self) {
        let timeout = self.config.election_timeout_us;
        let mut deadline = self.now_us + timeout + self.jitter.below(timeout);
        // Placement: the preferred node (the home region) stands first.
        if self.config.preferred_leader.is_some_and(|preferred| preferred != self.config.node) {
            deadline += self.config.placement_delay_us;
        }
        self.election_deadline_us = deadline;
    }

    fn start_candidacy(&mut self, handoff: bool) {
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
        self.role =
            Role::Candidate(Candidate { ballot, from, handoff, promises: BTreeMap::new(), sent_us: self.now_us });
        self.reset_election_deadline();
        self.broadcast(Message::Prepare { ballot, from, handoff });
        self.maybe_complete_phase1();
    }

    fn resend_prepare(&mut self) {
        let Role::Candidate(candidate) = &mut self.role else { return };
        candidate.sent_us = self.now_us;
        let (ballot, from, handoff) = (candidate.ballot, candidate.from, candidate.handoff);
        let missing: Vec<NodeId> = self
            .config
            .voters
            .iter()
            .copied()
            .filter(|voter| *voter != self.config.node && !candidate.promises.contains_key(voter))
            .collect();
        for voter in missing {
            self.send(voter, Message::Prepare { ballot, from, handoff });
        }
    }

    /// Whether this replica is following a leader it heard from recently (or leads).
    fn leader_alive(&self) -> bool {
        match self.role {
            Role::Leader(_) => true,
            Role::Candidate(_) => false,
            Role::Follower => {
                self.leader.is_some() && self.now_us < self.leader_heard_us + self.config.election_timeout_us
            }
        }
    }

    fn on_prepare(&mut self, from: NodeId, ballot: Ballot, from_slot: Slot, handoff: bool) {
        if self.is_learner() || !self.config.voters.contains(&from) {
            return;
        }
        self.round_seen = self.round_seen.max(ballot.round);
        // Paxos Made Simple §2.2 (P1a): never promise below a promise already made.
        if ballot < self.promised {
            self.send(from, Message::Reject { ballot, promised: self.promised });
            return;
        }
        if ballot > self.promised {
            // Ongaro's thesis §4.2.3 (disruptive servers): while a live leader is
            // heard, refuse to depose it, unless it asked for this candidacy.
            // Refusing a promise is always safe.
            if self.leader_alive() && !handoff {
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
        self.maybe_complete_phase1();
    }

    fn maybe_complete_phase1(&mut self) {
        let Role::Candidate(candidate) = &self.role else { return };
        if !quorum::is_majority(candidate.promises.len() + 1, self.config.voters.len()) {
            return;
        }
        let Role::Candidate(candidate) = mem::replace(&mut self.role, Role::Follower) else { unreachable!() };
        let ballot = candidate.ballot;

        // A promiser compacted slots this replica has not learned: their values
        // are chosen but nobody in the quorum can report them. Catch up first.
        let ahead = candidate
            .promises
            .iter()
            .filter(|(_, report)| report.snapshot_slot > self.chosen)
            .max_by_key(|(_, report)| report.snapshot_slot)
            .map(|(node, _)| *node);
        if let Some(ahead) = ahead {
            self.reset_election_deadline();
            self.catch_up_sent_us = None;
            self.request_catch_up(ahead);
            return;
        }

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
        let recovery_end = recovered.keys().next_back().copied().unwrap_or(self.chosen);
        let mut leader = Leader {
            ballot,
            next_slot: recovery_end.next(),
            recovery_end,
            in_flight: BTreeMap::new(),
            pending: VecDeque::new(),
            heartbeat_seq: 0,
            heartbeat_sent_us: self.now_us,
            read_round_due: false,
            acked_seq: BTreeMap::new(),
            heard_us: candidate.promises.keys().map(|node| (*node, self.now_us)).collect(),
            peer_chosen: candidate.promises.iter().map(|(node, report)| (*node, report.chosen)).collect(),
            reads: VecDeque::new(),
            handoff_sent_us: None,
            elected_us: self.now_us,
        };
        let mut proposals = Vec::new();
        for slot in (self.chosen.0 + 1..=recovery_end.0).map(Slot) {
            let value = recovered.remove(&slot).map_or(Value::Noop, |(_, _, value)| value);
            leader.in_flight.insert(slot, InFlight { votes: BTreeSet::new(), chosen: false, sent_us: self.now_us });
            proposals.push((slot, value));
        }
        self.role = Role::Leader(Box::new(leader));
        self.leader = Some(self.config.node);
        self.ready.became_leader = Some(ballot);
        for (slot, value) in proposals {
            self.accept_own_and_send(ballot, slot, value);
        }
        self.send_heartbeat_round();
        self.advance_leader_chosen();
    }

    fn become_follower(&mut self, leader: Option<NodeId>) {
        if !matches!(self.role, Role::Follower) {
            self.abort_reads();
            self.role = Role::Follower;
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
        if slot > self.chosen {
            if self.log.get(&slot) != Some(&(ballot, value.clone())) {
                // Paxos Made Live §5.1: the vote is durable before `Accepted` leaves.
                self.ready.persist.entries.push(Entry { slot, ballot, value: value.clone() });
                self.log.insert(slot, (ballot, value));
            }
            self.send(from, Message::Accepted { ballot, slot });
        } else if self.log.get(&slot).is_some_and(|(_, known)| *known == value) {
            // Already chosen with this very value: voting again changes nothing.
            self.send(from, Message::Accepted { ballot, slot });
        }
        // Otherwise the slot is chosen (or compacted) here: stay silent rather
        // than vote for a value this replica cannot store.
        self.learn_chosen(from, ballot, chosen);
    }

    fn on_accepted(&mut self, from: NodeId, ballot: Ballot, slot: Slot) {
        // A learner's acceptance is no vote.
        if !self.config.voters.contains(&from) {
            return;
        }
        let voters = self.config.voters.len();
        let now = self.now_us;
        let Role::Leader(leader) = &mut self.role else { return };
        if leader.ballot != ballot {
            return;
        }
        leader.heard_us.insert(from, now);
        if let Some(in_flight) = leader.in_flight.get_mut(&slot) {
            in_flight.votes.insert(from);
            // Paxos Made Simple §2.2: chosen once a majority accepted it in one ballot.
            // The leader's own vote counts: it is in the same (earlier) persist.
            if quorum::is_majority(in_flight.votes.len() + 1, voters) {
                in_flight.chosen = true;
            }
        }
        self.advance_leader_chosen();
    }

    fn advance_leader_chosen(&mut self) {
        let voters = self.config.voters.len();
        let Role::Leader(leader) = &mut self.role else { return };
        let mut advanced = false;
        while let Some(mut first) = leader.in_flight.first_entry() {
            assert_eq!(
                *first.key(),
                self.chosen.next(),
                "{}: in-flight slots must follow the chosen prefix",
                self.config.group
            );
            if quorum::is_majority(first.get().votes.len() + 1, voters) {
                first.get_mut().chosen = true;
            }
            if !first.get().chosen {
                break;
            }
            first.remove();
            self.chosen = self.chosen.next();
            advanced = true;
        }
        if advanced {
            self.apply_chosen();
        }
    }

    fn accept_own_and_send(&mut self, ballot: Ballot, slot: Slot, value: Value) {
        self.ready.persist.entries.push(Entry { slot, ballot, value: value.clone() });
        self.log.insert(slot, (ballot, value.clone()));
        let chosen = self.chosen;
        self.broadcast(Message::Accept { ballot, slot, value, chosen });
    }

    fn flush_proposals(&mut self) {
        let now = self.now_us;
        let window = self.config.window_slots_max;
        loop {
            let chosen = self.chosen;
            let Role::Leader(leader) = &mut self.role else { return };
            let in_flight = leader.next_slot.0 - chosen.0 - 1;
            if leader.pending.is_empty() || in_flight >= window {
                break;
            }
            let take = leader.pending.len().min(BATCH_COMMANDS_MAX);
            let batch: Vec<Command> = leader.pending.drain(..take).collect();
            let slot = leader.next_slot;
            leader.next_slot = slot.next();
            leader.in_flight.insert(slot, InFlight { votes: BTreeSet::new(), chosen: false, sent_us: now });
            let ballot = leader.ballot;
            self.accept_own_and_send(ballot, slot, Value::Batch(batch));
        }
        self.advance_leader_chosen();
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

    // --- leader upkeep -----------------------------------------------------

    fn tick_leader(&mut self) {
        let now = self.now_us;
        let interval = self.config.heartbeat_interval_us;
        let timeout = self.config.election_timeout_us;
        let voters = self.config.voters.clone();
        let me = self.config.node;
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
                for voter in &voters {
                    if *voter != me && !in_flight.votes.contains(voter) {
                        resend.push((*voter, *slot));
                    }
                }
            }
        }
        // Placement: hand leadership to the preferred node once it has caught up.
        let handoff_to = self.config.preferred_leader.filter(|preferred| {
            *preferred != me
                && leader.in_flight.is_empty()
                && leader.peer_chosen.get(preferred).is_some_and(|slot| *slot >= chosen)
                && leader.heard_us.get(preferred).is_some_and(|at| *at + interval >= now)
                && leader.handoff_sent_us.is_none_or(|at| now >= at + timeout)
        });
        if handoff_to.is_some() {
            leader.handoff_sent_us = Some(now);
        }
        for (voter, slot) in resend {
            let value = self.log.get(&slot).expect("in-flight slots are in the log").1.clone();
            self.send(voter, Message::Accept { ballot, slot, value, chosen });
        }
        if let Some(preferred) = handoff_to {
            self.send(preferred, Message::Handoff { ballot });
        }
        self.send_heartbeat_round();
    }

    fn send_heartbeat_round(&mut self) {
        let chosen = self.chosen;
        let now = self.now_us;
        let Role::Leader(leader) = &mut self.role else { return };
        leader.heartbeat_seq += 1;
        leader.heartbeat_sent_us = now;
        leader.read_round_due = false;
        let (ballot, seq) = (leader.ballot, leader.heartbeat_seq);
        self.broadcast(Message::Heartbeat { ballot, seq, chosen });
        self.serve_reads();
    }

    fn send_read_round_if_due(&mut self) {
        if let Role::Leader(leader) = &self.role
            && leader.read_round_due
        {
            self.send_heartbeat_round();
        }
    }

    fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, seq: u64, chosen: Slot) {
        if !self.admit(from, ballot) {
            return;
        }
        self.follow(ballot);
        self.learn_chosen(from, ballot, chosen);
        // The leader counts only voters' acknowledgements (read-index, check-quorum).
        if !self.is_learner() {
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
        self.serve_reads();
    }

    /// Leadership confirmed up to the heartbeat a quorum acknowledged.
    fn confirmed_seq(&self) -> u64 {
        let Role::Leader(leader) = &self.role else { return 0 };
        let mut acked: Vec<u64> = self
            .config
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
        if self.catch_up_sent_us.is_some_and(|at| self.now_us < at + self.config.heartbeat_interval_us) {
            return;
        }
        self.catch_up_sent_us = Some(self.now_us);
        let next = self.chosen.next();
        self.send(from, Message::CatchUpRequest { from: next });
    }

    fn on_catch_up_request(&mut self, from: NodeId, from_slot: Slot) {
        if from_slot <= self.snapshot_slot() {
            let snapshot = self.snapshot.clone().expect("a snapshot slot implies a snapshot");
            self.send(from, Message::InstallSnapshot { snapshot });
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

    fn on_install_snapshot(&mut self, snapshot: Snapshot) {
        self.catch_up_sent_us = None;
        if snapshot.slot <= self.chosen || matches!(self.role, Role::Leader(_)) {
            return;
        }
        self.log.retain(|slot, _| *slot > snapshot.slot);
        self.chosen = snapshot.slot;
        self.applied = snapshot.slot;
        // Entries queued for the state machine are all below the snapshot,
        // which subsumes them; the restore comes first in the Ready.
        self.ready.apply.clear();
        self.ready.restore = Some(snapshot.clone());
        self.ready.persist.snapshot = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
        self.apply_chosen();
    }

    fn apply_chosen(&mut self) {
        while self.applied < self.chosen {
            let slot = self.applied.next();
            let (_, value) = self
                .log
                .get(&slot)
                .unwrap_or_else(|| panic!("{}: chosen slot {slot} missing from the log", self.config.group));
            self.ready.apply.push(Committed { slot, value: value.clone() });
            self.applied = slot;
        }
    }

    // --- sending -------------------------------------------------------------

    fn send(&mut self, to: NodeId, message: Message) {
        self.ready.send.push(Envelope { group: self.config.group, from: self.config.node, to, message });
    }

    /// To every other voter, and to the learners unless it is a phase-1 message.
    fn broadcast(&mut self, message: Message) {
        let learners =
            if matches!(message, Message::Prepare { .. }) { Vec::new() } else { self.config.learners.clone() };
        for member in self.config.voters.clone().into_iter().chain(learners) {
            if member != self.config.node {
                self.send(member, message.clone());
            }
        }
    }
}
