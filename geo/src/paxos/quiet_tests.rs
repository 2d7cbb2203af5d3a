//! Quiet groups (`Config::quiesce`) on whole nodes: three `MultiPaxos`
//! nodes sharing many groups, messages delivered by hand at once, time
//! advanced one tick at a time. What is checked: idle groups fall quiet and
//! then cost nothing but one `Alive` per node pair and interval; a proposal
//! wakes its group; a leader's node that dies, restarts or is cut off
//! while its groups are quiet is replaced; a restarted follower rejoins
//! without an election.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::topology::NodeId;

const RTT_US: u64 = 2_000;
/// Ticks come this often (a tenth of a heartbeat interval).
const TICK_US: u64 = 400;
const GROUPS: u64 = 20;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

struct Nodes {
    now_us: u64,
    nodes: BTreeMap<NodeId, MultiPaxos>,
    stored: BTreeMap<(NodeId, GroupId), Stored>,
    incarnations: BTreeMap<NodeId, u64>,
    down: BTreeSet<NodeId>,
    /// Links cut both ways (a partition of one node from the others).
    cut: BTreeSet<NodeId>,
    /// Single links cut, both ways.
    cut_links: BTreeSet<(NodeId, NodeId)>,
    deaf: bool,
    /// Messages sent, by group, since the last `take_counts`.
    sent: BTreeMap<GroupId, u64>,
}

impl Nodes {
    fn new(deaf: bool) -> Self {
        let mut nodes = Nodes {
            now_us: 0,
            nodes: BTreeMap::new(),
            stored: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            down: BTreeSet::new(),
            cut: BTreeSet::new(),
            cut_links: BTreeSet::new(),
            deaf,
            sent: BTreeMap::new(),
        };
        for id in 1..=3 {
            nodes.start(n(id));
        }
        nodes
    }

    fn config(&self, group: GroupId, node: NodeId) -> Config {
        let mut config = Config::new(group, node, vec![n(1), n(2), n(3)], RTT_US);
        config.preferred_leader = Some(n(1));
        config.quiesce = true;
        config.faults.quiet_deaf = self.deaf;
        config.seed = group.0;
        config
    }

    fn start(&mut self, node: NodeId) {
        let incarnation = self.incarnations.entry(node).or_insert(0);
        *incarnation += 1;
        let mut paxos = MultiPaxos::new(node, *incarnation);
        for g in 1..=GROUPS {
            let group = GroupId(g);
            let stored = self.stored.get(&(node, group)).cloned().unwrap_or_default();
            paxos.add_group(self.config(group, node), stored, self.now_us);
        }
        self.nodes.insert(node, paxos);
        self.down.remove(&node);
    }

    fn crash(&mut self, node: NodeId) {
        self.nodes.remove(&node);
        self.down.insert(node);
    }

    fn linked(&self, from: NodeId, to: NodeId) -> bool {
        !self.down.contains(&to)
            && !self.cut.contains(&from)
            && !self.cut.contains(&to)
            && !self.cut_links.contains(&(from, to))
            && !self.cut_links.contains(&(to, from))
    }

    /// Handles every node's Ready, and delivers what they send at once,
    /// until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut messages = Vec::new();
            for (node, paxos) in &mut self.nodes {
                for (group, ready) in paxos.take_ready() {
                    let stored = self.stored.entry((*node, group)).or_default();
                    stored.apply(&ready.persist);
                    paxos.persisted(group, &ready.persist);
                    messages.extend(ready.send);
                }
            }
            if messages.is_empty() {
                return;
            }
            for envelope in messages {
                *self.sent.entry(envelope.group).or_default() += 1;
                if self.linked(envelope.from, envelope.to) {
                    let now = self.now_us;
                    self.nodes.get_mut(&envelope.to).expect("up").step(now, envelope);
                }
            }
        }
    }

    fn run_for(&mut self, us: u64) {
        let until = self.now_us + us;
        while self.now_us < until {
            self.now_us += TICK_US;
            let now = self.now_us;
            for paxos in self.nodes.values_mut() {
                paxos.tick(now);
            }
            self.settle();
        }
    }

    fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(node, _)| !self.cut.contains(node))
            .find(|(_, paxos)| paxos.group(group).is_some_and(|replica| replica.role() == RoleKind::Leader))
            .map(|(node, _)| *node)
    }

    fn ballot_of(&self, group: GroupId) -> Option<Ballot> {
        let leader = self.leader_of(group)?;
        self.nodes[&leader].group(group)?.leader_ballot()
    }

    fn all_quiet(&self) -> bool {
        self.nodes.values().all(|paxos| paxos.groups().all(|(_, replica)| replica.is_quiesced()))
    }

    /// Proposes `command` on `group` at its leader and runs until every up
    /// replica applied it.
    fn write(&mut self, group: GroupId, command: &str) {
        let leader = self.leader_of(group).expect("a leader");
        self.nodes.get_mut(&leader).unwrap().propose(group, command.as_bytes().to_vec()).expect("leads");
        self.settle();
        let chosen = self.nodes[&leader].group(group).unwrap().chosen();
        for _ in 0..1_000 {
            let reachable = self.nodes.iter().filter(|(node, _)| !self.cut.contains(node));
            if reachable.map(|(_, paxos)| paxos).all(|paxos| paxos.group(group).unwrap().chosen() >= chosen) {
                return;
            }
            self.run_for(TICK_US);
        }
        panic!("{group}: {command} not learned everywhere");
    }

    fn take_counts(&mut self) -> BTreeMap<GroupId, u64> {
        std::mem::take(&mut self.sent)
    }
}

fn every_group() -> impl Iterator<Item = GroupId> {
    (1..=GROUPS).map(GroupId)
}

/// Elected, written once, then left idle: everything falls quiet.
fn quiet_nodes(deaf: bool) -> Nodes {
    let mut nodes = Nodes::new(deaf);
    nodes.run_for(200_000);
    for group in every_group() {
        assert_eq!(nodes.leader_of(group), Some(n(1)), "{group}: the preferred node leads");
        nodes.write(group, "first");
    }
    nodes.run_for(100_000);
    assert!(nodes.all_quiet(), "idle groups fall quiet");
    nodes
}

#[test]
fn idle_groups_fall_quiet_and_cost_one_message_per_node_pair() {
    let mut nodes = quiet_nodes(false);
    nodes.take_counts();
    let interval = nodes.config(GroupId(1), n(1)).heartbeat_interval_us;
    let intervals = 50;
    nodes.run_for(intervals * interval);
    let counts = nodes.take_counts();
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec![GroupId::NODE], "only node messages: {counts:?}");
    // Six directed node pairs, one `Alive` each per interval.
    let alive = counts[&GroupId::NODE];
    assert!(alive.abs_diff(6 * intervals) <= 6, "{alive} Alive messages in {intervals} intervals");
    assert!(
        nodes.nodes.values().all(|paxos| paxos.groups().all(|(_, replica)| replica.next_deadline_us().is_none())),
        "no group timer runs"
    );
    // The node's own next deadline is its next `Alive`.
    let now = nodes.now_us;
    assert!(nodes.nodes.values().all(|paxos| paxos.next_deadline_us().is_some_and(|at| at <= now + interval)));
}

#[test]
fn a_proposal_wakes_its_group_alone() {
    let mut nodes = quiet_nodes(false);
    let ballot = nodes.ballot_of(GroupId(3));
    nodes.write(GroupId(3), "second");
    assert_eq!(nodes.ballot_of(GroupId(3)), ballot, "no election");
    for group in every_group().filter(|group| *group != GroupId(3)) {
        assert!(nodes.nodes.values().all(|paxos| paxos.group(group).unwrap().is_quiesced()), "{group} sleeps on");
    }
    nodes.run_for(100_000);
    assert!(nodes.all_quiet(), "and it falls quiet again");
}

#[test]
fn a_quiet_leader_that_dies_is_replaced() {
    let mut nodes = quiet_nodes(false);
    nodes.crash(n(1));
    nodes.run_for(1_000_000);
    for group in every_group() {
        let leader = nodes.leader_of(group);
        assert!(leader.is_some_and(|leader| leader != n(1)), "{group}: led by {leader:?}");
        nodes.write(group, "without n1");
    }
}

#[test]
fn a_quiet_leader_that_restarts_is_replaced_or_leads_again() {
    let mut nodes = quiet_nodes(false);
    nodes.crash(n(1));
    nodes.start(n(1));
    nodes.run_for(1_000_000);
    for group in every_group() {
        assert!(nodes.leader_of(group).is_some(), "{group} has a leader");
        nodes.write(group, "after the restart");
    }
}

#[test]
fn a_quiet_leader_cut_off_is_replaced_and_the_group_heals() {
    let mut nodes = quiet_nodes(false);
    nodes.cut.insert(n(1));
    nodes.run_for(1_000_000);
    for group in every_group() {
        let leader = nodes.leader_of(group);
        assert!(leader.is_some_and(|leader| leader != n(1)), "{group}: led by {leader:?}");
        nodes.write(group, "in the majority");
    }
    nodes.cut.clear();
    nodes.run_for(1_000_000);
    for group in every_group() {
        nodes.write(group, "healed");
    }
}

#[test]
fn a_restarted_follower_rejoins_a_quiet_group_without_an_election() {
    let mut nodes = quiet_nodes(false);
    let ballots: Vec<Option<Ballot>> = every_group().map(|group| nodes.ballot_of(group)).collect();
    nodes.crash(n(3));
    nodes.start(n(3));
    nodes.run_for(1_000_000);
    let after: Vec<Option<Ballot>> = every_group().map(|group| nodes.ballot_of(group)).collect();
    assert_eq!(after, ballots, "the leaders keep their ballots");
    assert!(nodes.all_quiet(), "and fall quiet again");
}

/// A quiet leader's replica heard nothing for long: a write wakes it at
/// the node's time, not at the time it fell quiet (else its check-quorum,
/// at the next tick, would find nobody heard from and step down).
#[test]
fn a_write_after_a_long_quiet_keeps_its_leader() {
    let mut nodes = quiet_nodes(false);
    nodes.run_for(2_000_000);
    let group = GroupId(5);
    let ballot = nodes.ballot_of(group);
    let leader = nodes.leader_of(group).expect("a leader");
    nodes.nodes.get_mut(&leader).unwrap().propose(group, b"late".to_vec()).expect("leads");
    // The next tick comes before any answer.
    nodes.now_us += TICK_US;
    let now = nodes.now_us;
    nodes.nodes.get_mut(&leader).unwrap().tick(now);
    nodes.settle();
    nodes.run_for(100_000);
    assert_eq!(nodes.ballot_of(group), ballot, "the write cost no election");
    assert!(nodes.nodes.values().all(|paxos| paxos.group(group).unwrap().chosen() > Slot(0)));
}

#[test]
fn a_cut_between_followers_leaves_the_quiet_leader_in_place() {
    let mut nodes = quiet_nodes(false);
    let ballots: Vec<Option<Ballot>> = every_group().map(|group| nodes.ballot_of(group)).collect();
    nodes.cut_links.insert((n(2), n(3)));
    nodes.run_for(1_000_000);
    nodes.cut_links.clear();
    nodes.run_for(1_000_000);
    let after: Vec<Option<Ballot>> = every_group().map(|group| nodes.ballot_of(group)).collect();
    assert_eq!(after, ballots, "no follower deposed a leader that was fine");
    assert!(nodes.all_quiet());
}

#[test]
fn a_quiet_leader_that_abstains_is_replaced() {
    let mut nodes = quiet_nodes(false);
    // Its last heartbeat is lost: the followers learn from its `Alive`.
    nodes.cut.insert(n(1));
    nodes.nodes.get_mut(&n(1)).unwrap().set_abstaining(true);
    nodes.settle();
    nodes.cut.clear();
    nodes.run_for(1_000_000);
    for group in every_group() {
        let leader = nodes.leader_of(group);
        assert!(leader.is_some_and(|leader| leader != n(1)), "{group}: led by {leader:?}");
        nodes.write(group, "while n1 abstains");
    }
}

/// The planted bug the simulator must catch: quiet replicas that sleep
/// through their leader's death never elect another.
#[test]
fn deaf_quiet_replicas_never_replace_a_dead_leader() {
    let mut nodes = quiet_nodes(true);
    nodes.crash(n(1));
    nodes.start(n(1));
    nodes.run_for(1_000_000);
    assert!(every_group().all(|group| nodes.leader_of(group).is_none()), "no group elects");
}
