//! The numbers Multi-Paxos must never mix up: ballots, slots and groups.
//!
//! A [`Ballot`] orders leaders, a [`Slot`] orders log positions, a [`GroupId`]
//! names one Multi-Paxos group among the many a node hosts.
//! Each is a newtype so that a slot can never be compared with a round.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::topology::NodeId;

/// A proposal number: a round, with the proposing node as tie-breaker.
///
/// Lamport, *Paxos Made Simple* §2.2: proposals are numbered from a totally
/// ordered set, and no two proposers ever use the same number.
/// Ordering by `(round, node)` gives both: two candidates of the same round
/// are ordered by node, and a node never reuses a round because it persists
/// its promise for its own ballot before asking anyone else (see `Replica`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub node: NodeId,
}

impl Ballot {
    /// Below every ballot a node can propose with: what a fresh acceptor has promised.
    pub const ZERO: Ballot = Ballot { round: 0, node: NodeId(0) };

    pub fn new(round: u64, node: NodeId) -> Self {
        Ballot { round, node }
    }

    /// The smallest ballot of `node` above both `self` and `seen_round`.
    pub fn next_for(self, node: NodeId, seen_round: u64) -> Ballot {
        Ballot { round: self.round.max(seen_round) + 1, node }
    }
}

impl Default for Ballot {
    fn default() -> Self {
        Ballot::ZERO
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}.{}", self.round, self.node)
    }
}

/// A position in a group's replicated log. Slot 0 is "nothing": the first
/// command goes into slot 1, and `chosen == Slot(0)` means nothing is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot(pub u64);

impl Slot {
    pub const ZERO: Slot = Slot(0);

    pub fn next(self) -> Slot {
        Slot(self.0 + 1)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// One Multi-Paxos group (a shard, the directory, a global table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub u64);

impl GroupId {
    /// Not a group: the node-to-node messages of [`MultiPaxos`](super::MultiPaxos)
    /// (`Message::Alive`) travel under it, and no group may use it.
    pub const NODE: GroupId = GroupId(0);
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_order_by_round_then_node() {
        let low = Ballot::new(3, NodeId(9));
        let high = Ballot::new(4, NodeId(1));
        assert!(low < high);
        assert!(Ballot::new(4, NodeId(1)) < Ballot::new(4, NodeId(2)));
        assert!(Ballot::ZERO < Ballot::new(1, NodeId(0)));
    }

    #[test]
    fn next_ballot_is_above_everything_seen() {
        let promised = Ballot::new(7, NodeId(3));
        let next = promised.next_for(NodeId(1), 9);
        assert_eq!(next, Ballot::new(10, NodeId(1)));
        assert!(next > promised);
    }
}
