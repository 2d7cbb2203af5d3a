//! Many Multi-Paxos groups on one node.
//!
//! A node hosts one [`Replica`] per group it holds a copy of, and routes each
//! incoming [`Envelope`] by its [`GroupId`]. Every group's outputs are handed
//! back together so that the runtime can make all of them durable with one
//! fsync and send them over one connection per node pair.

use std::collections::{BTreeMap, BTreeSet};

use super::ballot::{GroupId, Slot};
use super::config::Config;
use super::membership::Membership;
use super::message::{Command, Envelope, Message, Snapshot};
use super::ready::{Persist, Ready, Stored};
use super::replica::{ProposeError, Replica, RoleKind};
use crate::topology::NodeId;

/// Every group's Ready from one call of [`MultiPaxos::take_ready`], in group
/// order. The ordering rule of [`Ready`] holds for the whole set: persist all,
/// then send all, then apply.
pub type NodeReady = Vec<(GroupId, Ready)>;

/// The replicas of one node, keyed by group.
///
/// Work is proportional to the groups that have something to do, not to
/// the groups hosted: [`MultiPaxos::take_ready`] visits only the groups
/// handed an input since their last Ready, and [`MultiPaxos::tick`] only
/// those whose next deadline ([`Replica::next_deadline_us`]) has come, so
/// that a node can hold thousands of mostly idle groups.
#[derive(Debug)]
pub struct MultiPaxos {
    node: NodeId,
    groups: BTreeMap<GroupId, Replica>,
    abstaining: bool,
    /// Groups handed an input (a message, a tick, a proposal...) since
    /// their last Ready: only these can have a non-empty one, and their
    /// deadlines may have moved.
    touched: BTreeSet<GroupId>,
    /// Each group's next deadline as of its last Ready, ordered by time.
    timers: BTreeSet<(u64, GroupId)>,
    deadlines: BTreeMap<GroupId, u64>,
    /// Each group's role, leader and leader ballot as of its last Ready.
    leaderships: BTreeMap<GroupId, Leadership>,
    /// Groups whose leadership changed since the last
    /// [`MultiPaxos::take_leadership_changes`].
    leadership_changes: BTreeSet<GroupId>,
    /// Node liveness, for quiet groups (`Config::quiesce`): this node's
    /// incarnation, the peers heard from, and when `Alive` goes out next.
    incarnation: u64,
    /// The latest time handed to this node (a tick, a message, a read).
    now_us: u64,
    peers: BTreeMap<NodeId, Peer>,
    next_alive_us: u64,
    /// Whom `Alive` goes to, with the interval and the silence that counts
    /// as down (from the quiescing groups), and when to look again.
    alive_targets: Option<AliveTargets>,
    /// Messages of the node itself (`Alive`), sent in a Ready of
    /// [`GroupId::NODE`].
    node_sends: Vec<Envelope>,
}

/// Recomputed every [`ALIVE_TARGETS_REFRESH`] intervals, and when a group
/// is added or removed: a member a membership change added in between only
/// hears `Alive` a little later (it wakes the group it is in meanwhile).
#[derive(Debug)]
struct AliveTargets {
    peers: Vec<NodeId>,
    interval_us: u64,
    timeout_us: u64,
    refresh_us: u64,
}

/// Alive intervals between recomputations of whom to send it to.
const ALIVE_TARGETS_REFRESH: u64 = 20;

/// What a node knows of a peer's liveness.
#[derive(Debug, Clone, Copy)]
struct Peer {
    heard_us: u64,
    incarnation: Option<u64>,
    alive: bool,
    /// Its last `Alive` said it abstains from leading.
    abstaining: bool,
}

/// What [`MultiPaxos::take_leadership_changes`] watches of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leadership {
    role: RoleKind,
    leader: Option<NodeId>,
    ballot: Option<super::ballot::Ballot>,
    quiet: bool,
}

impl Leadership {
    fn of(replica: &Replica) -> Self {
        Leadership {
            role: replica.role(),
            leader: replica.leader(),
            ballot: replica.leader_ballot(),
            quiet: replica.is_quiesced(),
        }
    }
}

impl MultiPaxos {
    /// A node's replicas. `incarnation` must differ across the node's
    /// restarts (the runtime's random start, the simulator's restart
    /// count): a peer that sees it change wakes the quiet groups the two
    /// share, whose state here was forgotten.
    pub fn new(node: NodeId, incarnation: u64) -> Self {
        MultiPaxos {
            node,
            groups: BTreeMap::new(),
            abstaining: false,
            touched: BTreeSet::new(),
            timers: BTreeSet::new(),
            deadlines: BTreeMap::new(),
            leaderships: BTreeMap::new(),
            leadership_changes: BTreeSet::new(),
            incarnation,
            now_us: 0,
            peers: BTreeMap::new(),
            next_alive_us: 0,
            alive_targets: None,
            node_sends: Vec::new(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Adds (or restarts) this node's replica of `config.group`.
    ///
    /// The replicas a group starts with share one `Config::voters` and
    /// `Config::learners`: the group's initial configuration, in effect until
    /// the first chosen `Value::Reconfigure`. On a restart, pass the same
    /// `Config` again: the configuration in effect is recovered from `stored`.
    ///
    /// For a node being added to a running group, create the replica once the
    /// change that adds it as a learner is proposed, with a `Config` naming
    /// the configuration in effect plus itself as a learner, and an empty
    /// `Stored`. It follows the log without voting or standing and catches up
    /// from a snapshot (which carries the configuration) or from the log; it
    /// votes once it has learned a chosen change that makes it a voter. Its
    /// `Config` is not the group's initial configuration, which is harmless
    /// because it uses it only while it is a learner that has applied no
    /// `Reconfigure` yet, and never passes it on (see `Snapshot::membership`).
    /// Never create it as a voter directly.
    pub fn add_group(&mut self, config: Config, stored: Stored, now_us: u64) {
        assert_eq!(config.node, self.node, "a replica for another node");
        let group = config.group;
        assert_ne!(group, GroupId::NODE, "group 0 is reserved for node-to-node messages");
        let mut replica = Replica::new(config, stored, now_us);
        replica.set_abstaining(self.abstaining);
        let previous = self.groups.insert(group, replica);
        assert!(previous.is_none(), "{group} added twice on {}", self.node);
        // Its first Ready replays what is stored.
        self.touched.insert(group);
        self.alive_targets = None;
        if self.groups[&group].config().quiesce {
            self.next_alive_us = 0;
        }
        self.leadership_changes.insert(group);
    }

    /// This node's replica of `group`, if it leads, hands its leadership to
    /// `node` ([`Replica::prefer`]); whether a handover started. Not to a
    /// node this one has not heard from, or counts as down, or whose last
    /// `Alive` said it abstains from leading (it would not answer).
    pub fn prefer(&mut self, group: GroupId, node: NodeId) -> bool {
        if self.peers.get(&node).is_none_or(|peer| peer.abstaining || !peer.alive) {
            return false;
        }
        let now_us = self.now_us;
        self.with_group(group, |replica| {
            replica.observe_time(now_us);
            replica.prefer(node)
        })
        .unwrap_or(false)
    }

    /// Every replica of this node, present and future, abstains from
    /// leading while `abstain` holds ([`Replica::set_abstaining`]).
    pub fn set_abstaining(&mut self, abstain: bool) {
        if self.abstaining == abstain {
            return;
        }
        self.abstaining = abstain;
        let groups: Vec<GroupId> = self.groups.keys().copied().collect();
        for group in groups {
            self.with_group(group, |replica| replica.set_abstaining(abstain));
        }
    }

    /// Drops this node's replica of `group` (for instance once a chosen
    /// change removed the node): its messages are dropped from now on. The
    /// runtime deletes its durable state as well.
    pub fn remove_group(&mut self, group: GroupId) -> Option<Replica> {
        self.touched.remove(&group);
        if let Some(deadline) = self.deadlines.remove(&group) {
            self.timers.remove(&(deadline, group));
        }
        self.leaderships.remove(&group);
        self.leadership_changes.insert(group);
        self.alive_targets = None;
        self.groups.remove(&group)
    }

    pub fn group(&self, group: GroupId) -> Option<&Replica> {
        self.groups.get(&group)
    }

    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &Replica)> {
        self.groups.iter().map(|(id, replica)| (*id, replica))
    }

    /// Routes a message to its group; messages for groups this node does not
    /// host are dropped (the group may have moved away).
    pub fn step(&mut self, now_us: u64, envelope: Envelope) {
        assert_eq!(envelope.to, self.node, "message for another node");
        self.now_us = self.now_us.max(now_us);
        if let Message::Alive { incarnation, abstaining } = envelope.message {
            self.heard(envelope.from, now_us, Some((incarnation, abstaining)));
            return;
        }
        self.heard(envelope.from, now_us, None);
        self.with_group(envelope.group, |replica| replica.step(now_us, envelope));
    }

    /// Ticks the groups whose deadline has come, and those handed an input
    /// since their last Ready (their deadline may have moved earlier).
    pub fn tick(&mut self, now_us: u64) {
        self.now_us = self.now_us.max(now_us);
        self.tick_liveness(now_us);
        let due: Vec<GroupId> = self
            .timers
            .range(..=(now_us, GroupId(u64::MAX)))
            .map(|(_, group)| *group)
            .chain(self.touched.iter().copied())
            .collect();
        for group in due {
            self.with_group(group, |replica| replica.tick(now_us));
        }
    }

    /// When [`MultiPaxos::tick`] has something to do next: the earliest
    /// deadline of any group as of its last Ready, or the next `Alive`. A
    /// group handed an input since may need a tick sooner, which the next
    /// Ready tells.
    pub fn next_deadline_us(&self) -> Option<u64> {
        let groups = self.timers.first().map(|(deadline, _)| *deadline);
        // The next `Alive` (none while no group quiesces).
        let alive = (self.next_alive_us != u64::MAX).then_some(self.next_alive_us);
        groups.into_iter().chain(alive).min()
    }

    pub fn propose(&mut self, group: GroupId, command: Command) -> Result<(), ProposeError> {
        // A quiet replica heard nothing for long: it wakes at the node's time.
        let now_us = self.now_us;
        self.with_group(group, |replica| {
            replica.observe_time(now_us);
            replica.propose(command)
        })
        .unwrap_or(Err(ProposeError::NotLeader { leader: None }))
    }

    /// See [`Replica::propose_membership`].
    pub fn propose_membership(&mut self, group: GroupId, membership: Membership) -> Result<(), ProposeError> {
        let now_us = self.now_us;
        self.with_group(group, |replica| {
            replica.observe_time(now_us);
            replica.propose_membership(membership)
        })
        .unwrap_or(Err(ProposeError::NotLeader { leader: None }))
    }

    pub fn read_index(&mut self, group: GroupId, id: u64, now_us: u64) -> Result<(), ProposeError> {
        self.now_us = self.now_us.max(now_us);
        self.with_group(group, |replica| replica.read_index(id, now_us))
            .unwrap_or(Err(ProposeError::NotLeader { leader: None }))
    }

    pub fn compact(&mut self, group: GroupId, snapshot: Snapshot) {
        self.with_group(group, |replica| replica.compact(snapshot)).expect("compacting a group this node hosts");
    }

    /// The state machine stored a chunk handed to it (see
    /// [`Replica::chunk_stored`]); a group no longer hosted is ignored.
    pub fn chunk_stored(&mut self, group: GroupId, slot: Slot, index: u64) {
        self.with_group(group, |replica| replica.chunk_stored(slot, index));
    }

    /// The runtime made `persist` of `group`'s Ready durable (see
    /// [`Replica::persisted`]); a group no longer hosted is ignored.
    pub fn persisted(&mut self, group: GroupId, persist: &Persist) {
        self.with_group(group, |replica| replica.persisted(persist));
    }

    /// Every non-empty Ready, in group order. Only groups handed an input
    /// since their last Ready can have one.
    pub fn take_ready(&mut self) -> NodeReady {
        let mut readies = Vec::new();
        if !self.node_sends.is_empty() {
            let send = std::mem::take(&mut self.node_sends);
            readies.push((GroupId::NODE, Ready { send, ..Ready::default() }));
        }
        for group in std::mem::take(&mut self.touched) {
            let Some(replica) = self.groups.get_mut(&group) else { continue };
            let ready = replica.take_ready();
            let deadline = replica.next_deadline_us();
            // Taking a Ready may choose and apply (a single voter), which
            // may change the leadership too.
            let leadership = Leadership::of(replica);
            if self.leaderships.insert(group, leadership) != Some(leadership) {
                self.leadership_changes.insert(group);
            }
            let previous = match deadline {
                Some(deadline) => self.deadlines.insert(group, deadline),
                None => self.deadlines.remove(&group),
            };
            if previous != deadline {
                if let Some(previous) = previous {
                    self.timers.remove(&(previous, group));
                }
                if let Some(deadline) = deadline {
                    self.timers.insert((deadline, group));
                }
            }
            if !ready.is_empty() {
                readies.push((group, ready));
            }
        }
        readies
    }

    /// Node liveness for quiet groups: once per heartbeat interval (the
    /// shortest of the groups that quiesce), one `Alive` to every peer
    /// they share with this node, and the quiet groups of a peer silent
    /// for an election timeout (the shortest) wake.
    fn tick_liveness(&mut self, now_us: u64) {
        if now_us < self.next_alive_us {
            return;
        }
        if self.alive_targets.as_ref().is_none_or(|targets| now_us >= targets.refresh_us) {
            let quiescing = self.groups.values().filter(|replica| replica.config().quiesce);
            let Some((interval_us, timeout_us)) = quiescing
                .map(|replica| (replica.config().heartbeat_interval_us, replica.config().election_timeout_us))
                .reduce(|(a, b), (c, d)| (a.min(c), b.min(d)))
            else {
                self.next_alive_us = u64::MAX;
                return;
            };
            let peers: BTreeSet<NodeId> = self
                .groups
                .values()
                .filter(|replica| replica.config().quiesce)
                .flat_map(|replica| replica.membership().members().collect::<Vec<_>>())
                .filter(|member| *member != self.node)
                .collect();
            let refresh_us = now_us.saturating_add(interval_us.saturating_mul(ALIVE_TARGETS_REFRESH));
            self.alive_targets =
                Some(AliveTargets { peers: peers.into_iter().collect(), interval_us, timeout_us, refresh_us });
        }
        let targets = self.alive_targets.as_ref().expect("computed above");
        let (interval, timeout) = (targets.interval_us, targets.timeout_us);
        self.next_alive_us = now_us.saturating_add(interval);
        let (incarnation, abstaining) = (self.incarnation, self.abstaining);
        for peer in &targets.peers {
            let message = Message::Alive { incarnation, abstaining };
            self.node_sends.push(Envelope { group: GroupId::NODE, from: self.node, to: *peer, message });
        }
        let silent: Vec<NodeId> = self
            .peers
            .iter_mut()
            .filter(|(_, peer)| peer.alive && now_us >= peer.heard_us.saturating_add(timeout))
            .map(|(node, peer)| {
                peer.alive = false;
                *node
            })
            .collect();
        for peer in silent {
            self.wake_groups_with(peer, now_us, false);
        }
    }

    /// Heard from `from` (with its incarnation and whether it abstains,
    /// from an `Alive`): a peer that was silent or restarted wakes the quiet
    /// groups it is in; one that abstains, those it led (on every `Alive`
    /// that says so, should the first be lost).
    fn heard(&mut self, from: NodeId, now_us: u64, alive: Option<(u64, bool)>) {
        let incarnation = alive.map(|(incarnation, _)| incarnation);
        let peer =
            self.peers.entry(from).or_insert(Peer { heard_us: now_us, incarnation, alive: true, abstaining: false });
        let restarted = incarnation.is_some() && peer.incarnation.is_some_and(|known| Some(known) != incarnation);
        let back = !peer.alive;
        peer.heard_us = peer.heard_us.max(now_us);
        peer.alive = true;
        if incarnation.is_some() {
            peer.incarnation = incarnation;
        }
        if let Some((_, abstaining)) = alive {
            peer.abstaining = abstaining;
        }
        if restarted || back {
            self.wake_groups_with(from, now_us, false);
        } else if alive.is_some_and(|(_, abstaining)| abstaining) {
            self.wake_groups_with(from, now_us, true);
        }
    }

    /// Wakes the quiet groups `peer`'s change of liveness concerns: those
    /// `peer` leads and, unless `led_only`, those this node leads with
    /// `peer` a member (a restarted member must hear its leader).
    fn wake_groups_with(&mut self, peer: NodeId, now_us: u64, led_only: bool) {
        let me = self.node;
        let quiet: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, replica)| replica.is_quiesced())
            .filter(|(_, replica)| match replica.leader() {
                Some(leader) if leader == me => {
                    !led_only && replica.membership().members().any(|member| member == peer)
                }
                leader => leader == Some(peer),
            })
            .map(|(group, _)| *group)
            .collect();
        for group in quiet {
            self.with_group(group, |replica| replica.wake(now_us));
        }
    }

    /// How often this node's replicas fell quiet and woke, in total.
    pub fn quiet_counts(&self) -> (u64, u64) {
        self.groups.values().map(Replica::quiet_counts).fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }

    /// The groups whose role, leader, leader ballot or quiet changed (or
    /// that were added or removed) since the last call.
    pub fn take_leadership_changes(&mut self) -> BTreeSet<GroupId> {
        std::mem::take(&mut self.leadership_changes)
    }

    /// Hands `group`'s replica an input: marks it touched, and notes a
    /// change of leadership it caused.
    fn with_group<R>(&mut self, group: GroupId, input: impl FnOnce(&mut Replica) -> R) -> Option<R> {
        let replica = self.groups.get_mut(&group)?;
        self.touched.insert(group);
        let result = input(replica);
        let leadership = Leadership::of(replica);
        if self.leaderships.insert(group, leadership) != Some(leadership) {
            self.leadership_changes.insert(group);
        }
        Some(result)
    }
}
