//! A group's configuration: who votes and who only learns.
//!
//! A [`Membership`] is a log value (`Value::Reconfigure`): the configuration
//! in effect for slot `s` is the one named by the latest `Reconfigure` chosen
//! at a slot below `s`, or the group's initial one (`Config::voters` and
//! `Config::learners`) if there is none. That is Lamport's reconfiguration
//! with α = 1 (*Paxos Made Simple* §3, last paragraphs): the acceptors of
//! instance `s` are a function of the state after instance `s - 1`.
//!
//! Consecutive configurations differ by at most one voter
//! ([`Membership::check_change_from`]): any majority of one then shares a
//! voter with any majority of the other (Ongaro, *Consensus: Bridging Theory
//! and Practice* §4.1, single-server changes). Learners may change freely:
//! they never count. The safety argument is in `docs/design/multipaxos.md`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::quorum;
use crate::topology::NodeId;

/// Voters and non-voting learners of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// The acceptors: their votes form quorums, and only they stand for election.
    pub voters: Vec<NodeId>,
    /// They receive and apply the log but never vote or stand.
    pub learners: Vec<NodeId>,
}

impl Membership {
    pub fn new(voters: Vec<NodeId>, learners: Vec<NodeId>) -> Self {
        Membership { voters, learners }
    }

    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.contains(&node)
    }

    pub fn is_learner(&self, node: NodeId) -> bool {
        self.learners.contains(&node)
    }

    /// A voter or a learner: someone the leader sends the log to.
    pub fn is_member(&self, node: NodeId) -> bool {
        self.is_voter(node) || self.is_learner(node)
    }

    /// Voters and learners, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(&self.learners).copied()
    }

    /// Whether the voters among `nodes` form a majority of this configuration.
    pub fn is_quorum<'a>(&self, nodes: impl IntoIterator<Item = &'a NodeId>) -> bool {
        let votes: BTreeSet<&NodeId> = nodes.into_iter().filter(|node| self.is_voter(**node)).collect();
        quorum::is_majority(votes.len(), self.voters.len())
    }

    /// How many voters are in one configuration and not the other.
    pub fn voter_changes(&self, other: &Membership) -> usize {
        let mine: BTreeSet<NodeId> = self.voters.iter().copied().collect();
        let theirs: BTreeSet<NodeId> = other.voters.iter().copied().collect();
        mine.symmetric_difference(&theirs).count()
    }

    /// Whether this is a well-formed configuration: some voters, nobody
    /// named twice, nobody both voter and learner.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.voters.is_empty() {
            return Err("a group needs at least one voter");
        }
        let mut seen = BTreeSet::new();
        for node in self.members() {
            if !seen.insert(node) {
                return Err("a node is named twice (or is both voter and learner)");
            }
        }
        Ok(())
    }

    /// Whether this configuration may follow `current`: well formed, and at
    /// most one voter added or removed (a learner promoted counts as one
    /// voter added). Ongaro's thesis §4.1: with one voter changed, every
    /// majority of the old voters shares a voter with every majority of the
    /// new ones, so the two can never choose apart.
    pub fn check_change_from(&self, current: &Membership) -> Result<(), &'static str> {
        self.check()?;
        if self.voter_changes(current) > 1 {
            return Err("more than one voter changed at once");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn one_voter_at_a_time() {
        let current = Membership::new(nodes(&[1, 2, 3]), nodes(&[4]));
        let promote = Membership::new(nodes(&[1, 2, 3, 4]), Vec::new());
        assert_eq!(promote.check_change_from(&current), Ok(()));
        let learners_only = Membership::new(nodes(&[1, 2, 3]), nodes(&[5, 6]));
        assert_eq!(learners_only.check_change_from(&current), Ok(()));
        let swap = Membership::new(nodes(&[1, 2, 4]), Vec::new());
        assert!(swap.check_change_from(&current).is_err(), "a swap changes two voters");
        let empty = Membership::new(Vec::new(), nodes(&[1]));
        assert!(empty.check().is_err());
        let both = Membership::new(nodes(&[1, 2]), nodes(&[2]));
        assert!(both.check().is_err());
    }

    proptest! {
        /// Ongaro §4.1: a majority of a configuration and a majority of one
        /// that differs by a single voter always share a voter.
        #[test]
        fn majorities_of_configurations_one_voter_apart_intersect(
            (old, new, old_quorum, new_quorum) in (1u64..9, 0u64..2, any::<u64>(), any::<u64>()).prop_map(
                |(size, add, pick_old, pick_new)| {
                    let old: Vec<u64> = (1..=size).collect();
                    let new: Vec<u64> = if add == 1 || size == 1 {
                        (1..=size + 1).collect()
                    } else {
                        (2..=size).collect()
                    };
                    (old, new, pick_old, pick_new)
                }
            )
        ) {
            let (old, new) = (Membership::new(nodes(&old), Vec::new()), Membership::new(nodes(&new), Vec::new()));
            prop_assert!(new.check_change_from(&old).is_ok());
            // Any majority: take the voters whose bit is set, topped up in order.
            let majority_of = |membership: &Membership, bits: u64| {
                let need = quorum::majority(membership.voters.len());
                let mut chosen: Vec<NodeId> = membership
                    .voters
                    .iter()
                    .enumerate()
                    .filter(|(at, _)| bits >> at & 1 == 1)
                    .map(|(_, node)| *node)
                    .take(need)
                    .collect();
                for node in &membership.voters {
                    if chosen.len() == need { break; }
                    if !chosen.contains(node) { chosen.push(*node); }
                }
                chosen
            };
            let a = majority_of(&old, old_quorum);
            let b = majority_of(&new, new_quorum);
            prop_assert!(old.is_quorum(&a) && new.is_quorum(&b));
            prop_assert!(a.iter().any(|node| b.contains(node)));
        }
    }
}
