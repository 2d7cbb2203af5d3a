//! Invariants checked while the simulation runs.
//!
//! - At most one value is chosen per slot: every value any replica applies
//!   at a slot equals the first value applied there by anyone (and so do the
//!   state digests after it, which checks snapshots and determinism too).
//! - Committed prefixes agree: follows from the above plus no skipping.
//! - A replica's applied index never skips or regresses while it runs
//!   (a restart rebuilds the state machine from the snapshot and the log,
//!   so it starts again from the snapshot's slot).
//! - One leader per ballot, and it is the ballot's own node.
//! - Configurations (membership changes) form a chain of single-voter steps:
//!   every chosen `Reconfigure` alters at most one voter of the configuration
//!   in effect at its slot (the previous chosen one, or the initial one), so
//!   no two consecutive configurations can have disjoint majorities; and a
//!   snapshot carries exactly the configuration in effect at its slot.

use std::collections::BTreeMap;

use geodb_geo::NodeId;
use geodb_geo::paxos::{Ballot, GroupId, Membership, Slot, Value};

use crate::register::Command;

/// A short, readable form of a logged value for failure messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Noop => "noop".to_string(),
        Value::Reconfigure(membership) => {
            format!("reconfigure {:?} learners {:?}", membership.voters, membership.learners)
        }
        Value::Batch(commands) => {
            let ops: Vec<String> = commands
                .iter()
                .map(|bytes| {
                    let command = Command::decode(bytes);
                    format!("#{} key {} {:?}", command.op_id, command.key, command.op)
                })
                .collect();
            format!("[{}]", ops.join(", "))
        }
    }
}

#[derive(Default)]
pub struct Invariants {
    chosen: BTreeMap<(GroupId, Slot), (Value, u64)>,
    applied: BTreeMap<(NodeId, GroupId), Slot>,
    leaders: BTreeMap<(GroupId, Ballot), NodeId>,
    /// Each group's initial configuration (at slot zero) and every chosen
    /// `Reconfigure`, by slot.
    configurations: BTreeMap<(GroupId, Slot), Membership>,
}

impl Invariants {
    /// A group starts with this configuration.
    pub fn on_group(&mut self, group: GroupId, initial: Membership) {
        self.configurations.insert((group, Slot::ZERO), initial);
    }

    pub fn on_crash(&mut self, node: NodeId) {
        self.applied.retain(|(at, _), _| *at != node);
    }

    /// A node's replica of `group` was retired (removed from the group).
    pub fn on_retire(&mut self, node: NodeId, group: GroupId) {
        self.applied.remove(&(node, group));
    }

    /// The configuration in effect after `slot`, from the slots applied so far.
    fn configuration_after(&self, group: GroupId, slot: Slot) -> (Slot, &Membership) {
        let ((_, at), membership) = self
            .configurations
            .range((group, Slot::ZERO)..=(group, slot))
            .next_back()
            .expect("every group starts with a configuration");
        (*at, membership)
    }

    pub fn on_restore(
        &mut self,
        node: NodeId,
        group: GroupId,
        slot: Slot,
        digest: u64,
        membership: Option<&Membership>,
    ) -> Result<(), String> {
        let applied = self.applied.entry((node, group)).or_insert(Slot::ZERO);
        if slot < *applied {
            return Err(format!("{node} {group}: snapshot at {slot} below applied {applied} (regression)"));
        }
        *applied = slot;
        if let Some((_, known)) = self.chosen.get(&(group, slot))
            && *known != digest
        {
            return Err(format!("{node} {group}: snapshot at {slot} differs from the state other replicas had there"));
        }
        // Every slot up to the snapshot was applied somewhere before, so the
        // configuration in effect there is known; `None` stands for the initial one.
        let (at, expected) = self.configuration_after(group, slot);
        let carried_matches = match membership {
            Some(carried) => carried == expected,
            None => at == Slot::ZERO,
        };
        if !carried_matches {
            return Err(format!(
                "{node} {group}: snapshot at {slot} carries configuration {membership:?}, but {expected:?} (chosen at \
                 {at}) is in effect there"
            ));
        }
        Ok(())
    }

    pub fn on_apply(
        &mut self,
        node: NodeId,
        group: GroupId,
        slot: Slot,
        value: &Value,
        digest: u64,
    ) -> Result<(), String> {
        let applied = self.applied.entry((node, group)).or_insert(Slot::ZERO);
        if slot != applied.next() {
            return Err(format!("{node} {group}: applied {slot} after {applied} (skip or regression)"));
        }
        *applied = slot;
        match self.chosen.get(&(group, slot)) {
            None => {
                if let Value::Reconfigure(membership) = value {
                    let (at, previous) = self.configuration_after(group, Slot(slot.0 - 1));
                    if let Err(reason) = membership.check_change_from(previous) {
                        return Err(format!(
                            "{group} {slot}: configuration {membership:?} chosen after {previous:?} (chosen at {at}): \
                             {reason}"
                        ));
                    }
                    self.configurations.insert((group, slot), membership.clone());
                }
                self.chosen.insert((group, slot), (value.clone(), digest));
            }
            Some((known, known_digest)) => {
                if known != value {
                    return Err(format!(
                        "{group} {slot}: two values chosen: {} and {} (the second at {node})",
                        describe(known),
                        describe(value)
                    ));
                }
                if *known_digest != digest {
                    return Err(format!("{group} {slot}: state machines diverged at {node}"));
                }
            }
        }
        Ok(())
    }

    pub fn on_leader(&mut self, group: GroupId, ballot: Ballot, node: NodeId) -> Result<(), String> {
        if ballot.node != node {
            return Err(format!("{group}: {node} leads {ballot}, which belongs to {}", ballot.node));
        }
        if let Some(previous) = self.leaders.insert((group, ballot), node) {
            return Err(format!("{group}: {ballot} had two leaders ({previous} and {node} again)"));
        }
        Ok(())
    }

    pub fn leaders_elected(&self) -> usize {
        self.leaders.len()
    }

    pub fn slots_chosen(&self) -> usize {
        self.chosen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_value_for_a_slot_is_reported() {
        let mut invariants = Invariants::default();
        let (group, slot) = (GroupId(1), Slot(1));
        invariants.on_apply(NodeId(1), group, slot, &Value::Noop, 0).unwrap();
        assert!(invariants.on_apply(NodeId(2), group, slot, &Value::Batch(Vec::new()), 0).is_err());
    }

    #[test]
    fn skipping_a_slot_is_reported() {
        let mut invariants = Invariants::default();
        assert!(invariants.on_apply(NodeId(1), GroupId(1), Slot(2), &Value::Noop, 0).is_err());
    }

    #[test]
    fn a_change_of_two_voters_and_a_wrong_snapshot_configuration_are_reported() {
        let mut invariants = Invariants::default();
        let group = GroupId(1);
        let nodes = |ids: &[u64]| ids.iter().copied().map(NodeId).collect::<Vec<_>>();
        invariants.on_group(group, Membership::new(nodes(&[1, 2, 3]), Vec::new()));
        let add = Value::Reconfigure(Membership::new(nodes(&[1, 2, 3, 4]), Vec::new()));
        invariants.on_apply(NodeId(1), group, Slot(1), &add, 0).unwrap();
        assert!(invariants.on_restore(NodeId(2), group, Slot(1), 0, None).is_err(), "a change happened at s1");
        let swap = Value::Reconfigure(Membership::new(nodes(&[1, 2, 5]), Vec::new()));
        assert!(invariants.on_apply(NodeId(1), group, Slot(2), &swap, 0).is_err());
    }

    #[test]
    fn a_reused_ballot_is_reported() {
        let mut invariants = Invariants::default();
        let ballot = Ballot::new(3, NodeId(2));
        invariants.on_leader(GroupId(1), ballot, NodeId(2)).unwrap();
        assert!(invariants.on_leader(GroupId(1), ballot, NodeId(2)).is_err());
        assert!(invariants.on_leader(GroupId(1), Ballot::new(4, NodeId(2)), NodeId(3)).is_err());
    }
}
