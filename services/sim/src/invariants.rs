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

use std::collections::BTreeMap;

use geodb_geo::NodeId;
use geodb_geo::paxos::{Ballot, GroupId, Slot, Value};

use crate::register::Command;

/// A short, readable form of a logged value for failure messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Noop => "noop".to_string(),
        Value::Reconfigure(membership) => format!("reconfigure {:?} learners {:?}", membership.voters, membership.learners),
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
}

impl Invariants {
    pub fn on_crash(&mut self, node: NodeId) {
        self.applied.retain(|(at, _), _| *at != node);
    }

    pub fn on_restore(&mut self, node: NodeId, group: GroupId, slot: Slot, digest: u64) -> Result<(), String> {
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
    fn a_reused_ballot_is_reported() {
        let mut invariants = Invariants::default();
        let ballot = Ballot::new(3, NodeId(2));
        invariants.on_leader(GroupId(1), ballot, NodeId(2)).unwrap();
        assert!(invariants.on_leader(GroupId(1), ballot, NodeId(2)).is_err());
        assert!(invariants.on_leader(GroupId(1), Ballot::new(4, NodeId(2)), NodeId(3)).is_err());
    }
}
