//! Membership changes under faults: moving a voter to another region.
//!
//! In about half of the seeds an operator moves one voter of one group to a
//! node in another region, the way `docs/design/multipaxos.md` says to, one
//! voter at a time: create the new node's replica as a learner and add it as
//! a learner, let it catch up, promote it to voter, remove the old voter, and
//! retire the old replica a little later. Crashes, partitions, loss and the
//! workload carry on throughout; the move starts in the fault phase and may
//! finish in the quiet phase.
//!
//! The operator behaves like a real one: it asks whichever replica it
//! believes leads (`MultiPaxos::propose_membership`), learns that a change is
//! chosen only by watching applied entries, and asks again (possibly at
//! another leader) until it sees it chosen. Asking again for a change that
//! is already chosen but not yet seen is harmless: it is a change of no
//! voter. The plan is drawn from its own random stream, so a seed without a
//! move runs exactly as it did before moves existed.

use geodb_geo::paxos::Membership;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

/// How often the operator looks at the cluster and, if needed, asks again.
const OPERATOR_INTERVAL_US: u64 = 10_000;
/// How long the operator waits for a change it asked for before asking again
/// (a leader may have lost it along with its leadership).
const OPERATOR_RETRY_US: u64 = 50_000;
/// Percent of seeds that move a voter.
const MOVE_PERCENT: u64 = 50;
/// The move starts at a random moment in this part of the fault phase.
const MOVE_START_US_MIN: u64 = 20_000;
const MOVE_START_US_MAX: u64 = 500_000;
/// The old voter's replica is retired this long (at most) after its removal is seen chosen.
const RETIRE_DELAY_US_MAX: u64 = 100_000;

/// Where a move stands: each step waits for its change to be seen chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MoveStep {
    AddLearner,
    CatchUp { added_at: Slot },
    Promote,
    RemoveOld,
    Retire { at_us: u64 },
    Done,
}

/// One voter moving from `from` to `to` in group `group` (an index into `World::groups`).
#[derive(Debug)]
pub(super) struct Move {
    pub(super) group: usize,
    pub(super) from: NodeId,
    pub(super) to: NodeId,
    pub(super) step: MoveStep,
    /// When the operator last had a change accepted by a leader.
    asked_us: Option<u64>,
}

impl World {
    /// Draws the seed's move, if any, from a stream of its own.
    pub(super) fn plan_move(&mut self, seed: u64) {
        let mut plan = StdRng::seed_from_u64(seed ^ 0x6d6f_7665_766f_7465);
        if plan.random_range(0..100) >= MOVE_PERCENT {
            return;
        }
        let group = plan.random_range(0..self.groups.len());
        let spec = &self.groups[group];
        let from = spec.voters[plan.random_range(0..spec.voters.len())];
        let region = self.nodes[&from].region;
        let candidates: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(node, sim_node)| {
                sim_node.region != region && !spec.voters.contains(node) && !spec.learners.contains(node)
            })
            .map(|(node, _)| *node)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let to = candidates[plan.random_range(0..candidates.len())];
        let start = plan.random_range(MOVE_START_US_MIN..=MOVE_START_US_MAX);
        self.moves.push(Move { group, from, to, step: MoveStep::AddLearner, asked_us: None });
        self.scheduler.at(start, Event::Operator);
    }

    /// The configuration the operator has seen chosen most recently.
    fn observed_membership(&self, group: usize) -> Membership {
        let spec = &self.groups[group];
        Membership::new(spec.voters.clone(), spec.learners.clone())
    }

    /// A Reconfigure was applied at `slot` somewhere (every chosen slot is
    /// applied by some replica before any snapshot covers it): the operator's
    /// view of the group follows the latest one.
    pub(super) fn observe_membership(&mut self, group: GroupId, slot: Slot, membership: &Membership) {
        let Some(index) = self.groups.iter().position(|spec| spec.id == group) else { return };
        let spec = &mut self.groups[index];
        if slot <= spec.membership_slot {
            return;
        }
        spec.membership_slot = slot;
        spec.voters = membership.voters.clone();
        spec.learners = membership.learners.clone();
        self.report.reconfigurations += 1;
    }

    pub(super) fn operator_step(&mut self) {
        let now = self.scheduler.now_us();
        for index in 0..self.moves.len() {
            let (group, from, to, step) = {
                let step = &self.moves[index];
                (step.group, step.from, step.to, step.step)
            };
            let observed = self.observed_membership(group);
            let mut target = observed.clone();
            let next = match step {
                MoveStep::AddLearner => {
                    self.host(group, to, &observed);
                    target.learners.push(to);
                    observed.is_member(to).then(|| MoveStep::CatchUp { added_at: self.groups[group].membership_slot })
                }
                MoveStep::CatchUp { added_at } => {
                    let id = self.groups[group].id;
                    let caught_up = self.nodes[&to].up
                        && self.nodes[&to].paxos.group(id).is_some_and(|replica| replica.applied() >= added_at);
                    caught_up.then_some(MoveStep::Promote)
                }
                MoveStep::Promote => {
                    target.learners.retain(|node| *node != to);
                    if !target.voters.contains(&to) {
                        target.voters.push(to);
                    }
                    observed.voters.contains(&to).then_some(MoveStep::RemoveOld)
                }
                MoveStep::RemoveOld => {
                    target.voters.retain(|node| *node != from);
                    (!observed.voters.contains(&from))
                        .then(|| MoveStep::Retire { at_us: now + self.scheduler.between(0, RETIRE_DELAY_US_MAX) })
                }
                MoveStep::Retire { at_us } => {
                    if now >= at_us {
                        self.retire(group, from);
                        self.report.moves_completed += 1;
                        Some(MoveStep::Done)
                    } else {
                        None
                    }
                }
                MoveStep::Done => None,
            };
            let waiting_for_change = matches!(step, MoveStep::AddLearner | MoveStep::Promote | MoveStep::RemoveOld);
            match next {
                Some(next) => {
                    if self.options.trace {
                        eprintln!("{now:>9} us  operator: {} {from}->{to}: {next:?}", self.groups[group].id);
                    }
                    self.moves[index].step = next;
                    self.moves[index].asked_us = None;
                }
                None if waiting_for_change => self.ask(index, target),
                None => {}
            }
        }
        if self.moves.iter().any(|planned| planned.step != MoveStep::Done) {
            self.scheduler.after(OPERATOR_INTERVAL_US, Event::Operator);
        }
    }

    /// Asks the replica believed to lead for `target`, unless a request is
    /// recent enough to still be on its way.
    fn ask(&mut self, index: usize, target: Membership) {
        let now = self.scheduler.now_us();
        if self.moves[index].asked_us.is_some_and(|at| now < at + OPERATOR_RETRY_US) {
            return;
        }
        let group = self.groups[self.moves[index].group].id;
        let leader = self
            .nodes
            .iter()
            .filter(|(_, sim_node)| sim_node.up && sim_node.paused_until_us <= now)
            .filter_map(|(node, sim_node)| {
                sim_node.paxos.group(group).and_then(|replica| replica.leader_ballot()).map(|ballot| (ballot, *node))
            })
            .max()
            .map(|(_, node)| node);
        let Some(leader) = leader else { return };
        let result = self.nodes.get_mut(&leader).expect("known node").paxos.propose_membership(group, target.clone());
        if self.options.trace {
            eprintln!("{now:>9} us  operator asks {leader} for {group} {target:?}: {result:?}");
        }
        if result.is_ok() {
            self.moves[index].asked_us = Some(now);
            self.drive(leader);
        }
    }

    /// The runtime's part of adding `node`: create its replica of the group
    /// as a learner of the configuration in effect, with nothing stored.
    fn host(&mut self, group: usize, node: NodeId, observed: &Membership) {
        let id = self.groups[group].id;
        if self.configs.contains_key(&(node, id)) {
            return;
        }
        let template = self
            .configs
            .iter()
            .find(|((_, of), _)| *of == id)
            .map(|(_, config)| config.clone())
            .expect("a group has replicas");
        let mut config = template;
        config.node = node;
        config.voters = observed.voters.clone();
        config.learners = observed.learners.clone();
        config.learners.push(node);
        config.preferred_leader = config.preferred_leader.filter(|preferred| observed.voters.contains(preferred));
        config.seed = self.scheduler.rng().random();
        self.configs.insert((node, id), config.clone());
        let now = self.scheduler.now_us();
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        sim_node.stores.create(id);
        sim_node.chunks.remove(&id);
        if sim_node.up {
            let local = sim_node.clock.local_us(now);
            sim_node.paxos.add_group(config, Stored::default(), local);
            sim_node.registers.insert(id, Registers::default());
            self.drive(node);
        }
    }

    /// The runtime's part of removing `node`: drop its replica and its durable state.
    fn retire(&mut self, group: usize, node: NodeId) {
        let id = self.groups[group].id;
        self.configs.remove(&(node, id));
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        sim_node.paxos.remove_group(id);
        sim_node.registers.remove(&id);
        sim_node.stores.remove(id);
        sim_node.chunks.remove(&id);
        self.invariants.on_retire(node, id);
    }
}
