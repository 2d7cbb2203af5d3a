//! Many Multi-Paxos groups on one node.
//!
//! A node hosts one [`Replica`] per group it holds a copy of, and routes each
//! incoming [`Envelope`] by its [`GroupId`]. Every group's outputs are handed
//! back together so that the runtime can make all of them durable with one
//! fsync and send them over one connection per node pair.

use std::collections::BTreeMap;

use super::ballot::{GroupId, Slot};
use super::config::Config;
use super::membership::Membership;
use super::message::{Command, Envelope, Snapshot};
use super::ready::{Persist, Ready, Stored};
use super::replica::{ProposeError, Replica};
use crate::topology::NodeId;

/// Every group's Ready from one call of [`MultiPaxos::take_ready`], in group
/// order. The ordering rule of [`Ready`] holds for the whole set: persist all,
/// then send all, then apply.
pub type NodeReady = Vec<(GroupId, Ready)>;

/// The replicas of one node, keyed by group.
#[derive(Debug)]
pub struct MultiPaxos {
    node: NodeId,
    groups: BTreeMap<GroupId, Replica>,
    abstaining: bool,
}

impl MultiPaxos {
    pub fn new(node: NodeId) -> Self {
        MultiPaxos { node, groups: BTreeMap::new(), abstaining: false }
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
        let mut replica = Replica::new(config, stored, now_us);
        replica.set_abstaining(self.abstaining);
        let previous = self.groups.insert(group, replica);
        assert!(previous.is_none(), "{group} added twice on {}", self.node);
    }

    /// Every replica of this node, present and future, abstains from
    /// leading while `abstain` holds ([`Replica::set_abstaining`]).
    pub fn set_abstaining(&mut self, abstain: bool) {
        self.abstaining = abstain;
        for replica in self.groups.values_mut() {
            replica.set_abstaining(abstain);
        }
    }

    /// Drops this node's replica of `group` (for instance once a chosen
    /// change removed the node): its messages are dropped from now on. The
    /// runtime deletes its durable state as well.
    pub fn remove_group(&mut self, group: GroupId) -> Option<Replica> {
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
        if let Some(replica) = self.groups.get_mut(&envelope.group) {
            replica.step(now_us, envelope);
        }
    }

    pub fn tick(&mut self, now_us: u64) {
        for replica in self.groups.values_mut() {
            replica.tick(now_us);
        }
    }

    pub fn propose(&mut self, group: GroupId, command: Command) -> Result<(), ProposeError> {
        match self.groups.get_mut(&group) {
            Some(replica) => replica.propose(command),
            None => Err(ProposeError::NotLeader { leader: None }),
        }
    }

    /// See [`Replica::propose_membership`].
    pub fn propose_membership(&mut self, group: GroupId, membership: Membership) -> Result<(), ProposeError> {
        match self.groups.get_mut(&group) {
            Some(replica) => replica.propose_membership(membership),
            None => Err(ProposeError::NotLeader { leader: None }),
        }
    }

    pub fn read_index(&mut self, group: GroupId, id: u64, now_us: u64) -> Result<(), ProposeError> {
        match self.groups.get_mut(&group) {
            Some(replica) => replica.read_index(id, now_us),
            None => Err(ProposeError::NotLeader { leader: None }),
        }
    }

    pub fn compact(&mut self, group: GroupId, snapshot: Snapshot) {
        self.groups.get_mut(&group).expect("compacting a group this node hosts").compact(snapshot);
    }

    /// The state machine stored a chunk handed to it (see
    /// [`Replica::chunk_stored`]); a group no longer hosted is ignored.
    pub fn chunk_stored(&mut self, group: GroupId, slot: Slot, index: u64) {
        if let Some(replica) = self.groups.get_mut(&group) {
            replica.chunk_stored(slot, index);
        }
    }

    /// The runtime made `persist` of `group`'s Ready durable (see
    /// [`Replica::persisted`]); a group no longer hosted is ignored.
    pub fn persisted(&mut self, group: GroupId, persist: &Persist) {
        if let Some(replica) = self.groups.get_mut(&group) {
            replica.persisted(persist);
        }
    }

    /// Every non-empty Ready, in group order.
    pub fn take_ready(&mut self) -> NodeReady {
        self.groups
            .iter_mut()
            .map(|(group, replica)| (*group, replica.take_ready()))
            .filter(|(_, ready)| !ready.is_empty())
            .collect()
    }
}
