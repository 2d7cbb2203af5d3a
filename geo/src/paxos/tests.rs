//! Scenario tests, named by scenario. A tiny in-memory harness delivers
//! messages by hand so each test controls loss, order, partitions and
//! crashes exactly. Several scenarios are ports of raft-rs's
//! `raft_paxos`/`test_raft` cases and etcd's Raft tests, translated to
//! Multi-Paxos terms (term → ballot, log index → slot); each says which.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::topology::NodeId;

const RTT_US: u64 = 2_000;
const GROUP: GroupId = GroupId(7);
/// The default pipelining window (`Config::new`): also how many no-ops a
/// new leader chooses after what phase 1 recovered.
const WINDOW_SLOTS: u64 = 8;

/// One node's snapshot chunks by slot and index.
type ChunkStore = BTreeMap<(Slot, u64), Vec<u8>>;

struct Cluster {
    now_us: u64,
    replicas: BTreeMap<NodeId, Replica>,
    configs: BTreeMap<NodeId, Config>,
    stored: BTreeMap<NodeId, Stored>,
    /// Each node's snapshot chunks by slot and index, as its state machine
    /// stores them (durable: they survive a crash).
    chunks: BTreeMap<NodeId, ChunkStore>,
    /// The state machines of these nodes store chunks but do not say so:
    /// they wait in `unconfirmed` until a test confirms them.
    slow_stores: BTreeSet<NodeId>,
    unconfirmed: Vec<(NodeId, Slot, u64)>,
    in_flight: Vec<Envelope>,
    applied: BTreeMap<NodeId, Vec<Committed>>,
    restored: BTreeMap<NodeId, Vec<Slot>>,
    reads: BTreeMap<NodeId, Vec<ReadState>>,
    leaders: BTreeMap<Ballot, NodeId>,
    down: BTreeSet<NodeId>,
    cut: BTreeSet<NodeId>,
    /// Messages for which this answers true are lost.
    lose: Option<Box<dyn FnMut(&Envelope) -> bool>>,
    /// Each node's non-empty writes, in order: whether each needed an
    /// fsync (`Persist::sync`) and whether it held log entries.
    writes: BTreeMap<NodeId, Vec<(bool, bool)>>,
}

fn n(id: u64) -> NodeId {
    NodeId(id)
}

impl Cluster {
    fn new(size: u64, preferred: Option<NodeId>) -> Self {
        Self::with_learners(size, 0, preferred)
    }

    /// Voters `n1..=n{size}`, then `learners` learners numbered after them.
    fn with_learners(size: u64, learners: u64, preferred: Option<NodeId>) -> Self {
        let voters: Vec<NodeId> = (1..=size).map(n).collect();
        let learner_ids: Vec<NodeId> = (size + 1..=size + learners).map(n).collect();
        let mut cluster = Cluster {
            now_us: 0,
            replicas: BTreeMap::new(),
            configs: BTreeMap::new(),
            stored: BTreeMap::new(),
            chunks: BTreeMap::new(),
            slow_stores: BTreeSet::new(),
            unconfirmed: Vec::new(),
            in_flight: Vec::new(),
            applied: BTreeMap::new(),
            restored: BTreeMap::new(),
            reads: BTreeMap::new(),
            leaders: BTreeMap::new(),
            down: BTreeSet::new(),
            cut: BTreeSet::new(),
            lose: None,
            writes: BTreeMap::new(),
        };
        for node in voters.iter().chain(&learner_ids) {
            let mut config = Config::new(GROUP, *node, voters.clone(), RTT_US);
            config.learners = learner_ids.clone();
            config.preferred_leader = preferred;
            config.seed = 99;
            cluster.configs.insert(*node, config.clone());
            cluster.stored.insert(*node, Stored::default());
            cluster.replicas.insert(*node, Replica::new(config, Stored::default(), 0));
            cluster.applied.insert(*node, Vec::new());
        }
        cluster
    }

    fn replica(&mut self, node: NodeId) -> &mut Replica {
        self.replicas.get_mut(&node).expect("a live replica")
    }

    /// Handles one node's Ready: persist, then queue sends, then send and
    /// store snapshot chunks, then apply.
    fn process(&mut self, node: NodeId) {
        let Some(replica) = self.replicas.get_mut(&node) else { return };
        let ready = replica.take_ready();
        if !ready.persist.is_empty() {
            let write = (ready.persist.sync, !ready.persist.entries.is_empty());
            self.writes.entry(node).or_default().push(write);
        }
        self.stored.get_mut(&node).unwrap().apply(&ready.persist);
        self.in_flight.extend(ready.send);
        let chunks = self.chunks.entry(node).or_default();
        for send in ready.snapshot_sends {
            let Some(data) = chunks.get(&(send.slot, send.index)).cloned() else { continue };
            self.in_flight.push(send.envelope(GROUP, node, data));
        }
        let stored_chunks: Vec<(Slot, u64)> = ready.snapshot_chunks.iter().map(|c| (c.slot, c.index)).collect();
        for chunk in ready.snapshot_chunks {
            chunks.insert((chunk.slot, chunk.index), chunk.data);
        }
        if let Some(snapshot) = ready.restore {
            let applied = self.applied.get_mut(&node).unwrap();
            applied.retain(|committed| committed.slot > snapshot.slot);
            self.restored.entry(node).or_default().push(snapshot.slot);
        }
        let applied = self.applied.get_mut(&node).unwrap();
        for committed in ready.apply {
            let last = applied
                .last()
                .map_or(self.restored.get(&node).and_then(|r| r.last().copied()).unwrap_or(Slot::ZERO), |c| c.slot);
            assert_eq!(committed.slot, last.next(), "{node}: applied slots must not skip");
            applied.push(committed);
        }
        self.reads.entry(node).or_default().extend(ready.reads);
        if let Some(ballot) = ready.became_leader {
            assert_eq!(ballot.node, node);
            assert!(self.leaders.insert(ballot, node).is_none(), "two leaders for {ballot}");
        }
        if self.slow_stores.contains(&node) {
            self.unconfirmed.extend(stored_chunks.iter().map(|(slot, index)| (node, *slot, *index)));
        } else if !stored_chunks.is_empty() {
            for (slot, index) in stored_chunks {
                self.replica(node).chunk_stored(slot, index);
            }
            self.process(node);
        }
    }

    /// The state machine of `node` snapshots `state` at its applied slot:
    /// stores it in chunks of its configured size, then compacts.
    fn compact(&mut self, node: NodeId, state: &[u8]) -> Slot {
        let slot = self.replicas[&node].applied();
        let chunk_bytes = self.configs[&node].snapshot_chunk_bytes;
        let pieces: Vec<&[u8]> = if state.is_empty() { vec![&[]] } else { state.chunks(chunk_bytes).collect() };
        let stored = self.chunks.entry(node).or_default();
        for (index, piece) in pieces.iter().enumerate() {
            stored.insert((slot, index as u64), piece.to_vec());
        }
        self.replica(node).compact(Snapshot::new(slot, pieces.len() as u64));
        self.process(node);
        slot
    }

    /// The bytes of the snapshot `node` keeps, reassembled from its chunks.
    fn snapshot_bytes(&self, node: NodeId) -> Vec<u8> {
        let snapshot = self.stored[&node].snapshot.as_ref().expect("a snapshot");
        (0..snapshot.chunks).flat_map(|index| self.chunks[&node][&(snapshot.slot, index)].clone()).collect()
    }

    fn process_all(&mut self) {
        for node in self.replicas.keys().copied().collect::<Vec<_>>() {
            self.process(node);
        }
    }

    fn deliverable(&self, envelope: &Envelope) -> bool {
        // A node with no replica of the group (not created yet, or retired)
        // drops the message, as `MultiPaxos::step` does.
        self.replicas.contains_key(&envelope.to)
            && !self.down.contains(&envelope.to)
            && !self.down.contains(&envelope.from)
            && !self.cut.contains(&envelope.to)
            && !self.cut.contains(&envelope.from)
    }

    /// Delivers everything in flight (and what it causes) in FIFO order.
    fn deliver_all(&mut self) {
        for _ in 0..10_000 {
            self.process_all();
            if self.in_flight.is_empty() {
                return;
            }
            let batch = std::mem::take(&mut self.in_flight);
            for envelope in batch {
                let lost = self.lose.as_mut().is_some_and(|lose| lose(&envelope));
                if !lost && self.deliverable(&envelope) {
                    let now = self.now_us;
                    let to = envelope.to;
                    self.replica(to).step(now, envelope);
                    self.process(to);
                }
            }
        }
        panic!("messages never settled");
    }

    fn tick_all(&mut self, step_us: u64) {
        self.now_us += step_us;
        let now = self.now_us;
        for replica in self.replicas.values_mut() {
            replica.tick(now);
        }
        self.deliver_all();
    }

    /// Runs time forward in heartbeat-sized steps until `done` or a bound.
    fn run_until(&mut self, mut done: impl FnMut(&Cluster) -> bool) {
        for _ in 0..2_000 {
            if done(self) {
                return;
            }
            self.tick_all(RTT_US);
        }
        panic!("condition not reached by {} us", self.now_us);
    }

    fn leader(&self) -> Option<NodeId> {
        let mut leaders: Vec<(Ballot, NodeId)> = self
            .replicas
            .iter()
            .filter(|(node, _)| !self.down.contains(node) && !self.cut.contains(node))
            .filter_map(|(node, replica)| replica.leader_ballot().map(|ballot| (ballot, *node)))
            .collect();
        leaders.sort();
        leaders.last().map(|(_, node)| *node)
    }

    fn elect(&mut self) -> NodeId {
        self.run_until(|cluster| cluster.leader().is_some());
        self.leader().unwrap()
    }

    fn commands(&self, node: NodeId) -> Vec<Command> {
        self.applied[&node]
            .iter()
            .flat_map(|committed| match &committed.value {
                Value::Noop | Value::Reconfigure(_) => Vec::new(),
                Value::Batch(commands) => commands.clone(),
            })
            .collect()
    }

    /// Every replica restarted (nothing is stored yet) with leases off.
    fn without_leases(&mut self) {
        for node in self.replicas.keys().copied().collect::<Vec<_>>() {
            self.configs.get_mut(&node).unwrap().leases = false;
            self.restart(node);
        }
    }

    fn read_index(&mut self, node: NodeId, id: u64) -> Result<(), ProposeError> {
        let now = self.now_us;
        self.replica(node).read_index(id, now)
    }

    fn propose(&mut self, node: NodeId, command: &str) {
        self.replica(node).propose(command.as_bytes().to_vec()).expect("leader accepts");
    }

    fn crash(&mut self, node: NodeId) {
        self.replicas.remove(&node);
        self.down.insert(node);
    }

    fn restart(&mut self, node: NodeId) {
        let stored = self.stored[&node].clone();
        let config = self.configs[&node].clone();
        self.applied.insert(node, Vec::new());
        self.restored.remove(&node);
        self.replicas.insert(node, Replica::new(config, stored, self.now_us));
        self.down.remove(&node);
        self.process(node);
    }

    /// The runtime creates the replica of a node being added: a learner of
    /// the configuration in effect, with nothing stored (see `MultiPaxos::add_group`).
    fn join(&mut self, node: NodeId) {
        let leader = self.leader().expect("a leader to ask for the configuration");
        let current = self.replicas[&leader].membership().clone();
        let mut config = Config::new(GROUP, node, current.voters, RTT_US);
        config.learners = current.learners;
        config.learners.push(node);
        config.seed = 99;
        self.configs.insert(node, config.clone());
        self.stored.insert(node, Stored::default());
        self.applied.insert(node, Vec::new());
        self.replicas.insert(node, Replica::new(config, Stored::default(), self.now_us));
    }

    /// Asks the leader for a membership change, retrying while another is
    /// pending, and runs until the leader has it in effect. Every tick, one
    /// write is proposed at the leader and recorded in `written` if accepted.
    fn reconfigure_while_writing(&mut self, target: &Membership, written: &mut Vec<Command>) {
        let mut asked = false;
        for _ in 0..2_000 {
            let leader = self.leader();
            if let Some(leader) = leader {
                if self.replicas[&leader].membership() == target {
                    return;
                }
                let command = bytes(&format!("w{}", written.len()));
                if self.replica(leader).propose(command.clone()).is_ok() {
                    written.push(command);
                }
                if !asked {
                    match self.replica(leader).propose_membership(target.clone()) {
                        Ok(()) => asked = true,
                        Err(ProposeError::Reconfiguring) => {}
                        Err(error) => panic!("{target:?} refused: {error}"),
                    }
                }
            }
            self.tick_all(RTT_US);
        }
        panic!("{target:?} never took effect");
    }

    /// Runs while writing until `done`.
    fn run_while_writing(&mut self, written: &mut Vec<Command>, mut done: impl FnMut(&Cluster) -> bool) {
        for _ in 0..2_000 {
            if done(self) {
                return;
            }
            if let Some(leader) = self.leader() {
                let command = bytes(&format!("w{}", written.len()));
                if self.replica(leader).propose(command.clone()).is_ok() {
                    written.push(command);
                }
            }
            self.tick_all(RTT_US);
        }
        panic!("condition not reached by {} us", self.now_us);
    }

    /// Every pair of replicas agrees on every slot both applied.
    fn assert_logs_agree(&self) {
        let mut by_slot: BTreeMap<Slot, &Value> = BTreeMap::new();
        for applied in self.applied.values() {
            for committed in applied {
                let known = by_slot.entry(committed.slot).or_insert(&committed.value);
                assert_eq!(*known, &committed.value, "two values chosen for {}", committed.slot);
            }
        }
    }
}

fn bytes(text: &str) -> Command {
    text.as_bytes().to_vec()
}

/// raft-rs `test_leader_election`: a quorum elects exactly one leader.
#[test]
fn election_one_leader_emerges() {
    let mut cluster = Cluster::new(3, None);
    let leader = cluster.elect();
    let leaders = cluster.replicas.values().filter(|replica| replica.role() == RoleKind::Leader).count();
    assert_eq!(leaders, 1);
    for (node, replica) in &cluster.replicas {
        if *node != leader {
            assert_eq!(replica.leader(), Some(leader));
        }
    }
}

/// Placement: the preferred node stands first and wins.
#[test]
fn election_preferred_node_wins() {
    for preferred in 1..=3 {
        let mut cluster = Cluster::new(3, Some(n(preferred)));
        assert_eq!(cluster.elect(), n(preferred));
    }
}

/// Placement: a leader that is not the preferred node hands over once the
/// preferred node has caught up.
#[test]
fn election_leadership_returns_to_the_preferred_node() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    cluster.crash(n(1));
    let interim = cluster.elect();
    assert_ne!(interim, n(1));
    cluster.propose(interim, "while away");
    cluster.deliver_all();
    cluster.restart(n(1));
    cluster.run_until(|cluster| cluster.leader() == Some(n(1)));
    cluster.propose(n(1), "home again");
    cluster.run_until(|cluster| cluster.commands(n(2)).len() == 2);
    assert_eq!(cluster.commands(n(1)), vec![bytes("while away"), bytes("home again")]);
}

/// R22: a leader told to prefer another voter hands over to it once it has
/// caught up, and the successor keeps the leadership: it does not hand it
/// back to the configuration's preferred node. Nothing chosen is lost on
/// the way.
#[test]
fn a_leader_told_to_prefer_another_voter_hands_over_and_the_successor_keeps_it() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    assert_eq!(cluster.elect(), n(1));
    cluster.propose(n(1), "before");
    cluster.deliver_all();
    cluster.replica(n(1)).prefer(n(3));
    cluster.run_until(|cluster| cluster.leader() == Some(n(3)));
    cluster.propose(n(3), "after");
    // Long enough for any handoff back to the configured node to happen.
    for _ in 0..200 {
        cluster.tick_all(RTT_US);
        assert_eq!(cluster.leader(), Some(n(3)), "leadership went back to the configured node");
    }
    for node in [n(1), n(2), n(3)] {
        assert_eq!(cluster.commands(node), vec![bytes("before"), bytes("after")]);
    }
    // The preference is a hint held in memory: after the successor
    // crashes, the others elect one of them, and the restarted node (which
    // forgot it preferred itself) catches up like any follower.
    cluster.crash(n(3));
    let interim = cluster.elect();
    assert_ne!(interim, n(3));
    cluster.propose(interim, "while away");
    cluster.deliver_all();
    cluster.restart(n(3));
    cluster.run_until(|cluster| cluster.commands(n(3)).len() == 3);
    assert_eq!(cluster.commands(n(3)), vec![bytes("before"), bytes("after"), bytes("while away")]);
}

/// A steady pipelined load: one command proposed at the current leader,
/// then the messages in flight moved one hop, then a quarter of a round
/// trip passed; something is always in flight, so a follower's reported
/// chosen index trails the leader's at every heartbeat.
fn steady_step(cluster: &mut Cluster, proposed: &mut Vec<Vec<u8>>) {
    if let Some(leader) = cluster.leader() {
        let command = format!("c{}", proposed.len());
        cluster.propose(leader, &command);
        proposed.push(bytes(&command));
    }
    cluster.process_all();
    for envelope in std::mem::take(&mut cluster.in_flight) {
        if cluster.deliverable(&envelope) {
            let (now, to) = (cluster.now_us, envelope.to);
            cluster.replica(to).step(now, envelope);
            cluster.process(to);
        }
    }
    cluster.now_us += RTT_US / 4;
    let now = cluster.now_us;
    for replica in cluster.replicas.values_mut() {
        replica.tick(now);
    }
    cluster.process_all();
}

/// R22: under a steady load the preferred node's reported chosen index is
/// always a little behind, so a plain placement handoff would wait for a
/// lull that never comes; a transfer holds new commands until the successor
/// has caught up and been asked, and the handover happens within a few
/// round trips. Commands held at the old leader when it steps down are not
/// chosen by it (the host answers them "not the leader", and they are sent
/// again); everything chosen is chosen everywhere, in one order.
#[test]
fn a_transfer_under_steady_load_holds_new_commands_until_the_successor_takes_over() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    assert_eq!(cluster.elect(), n(1));
    let mut proposed = Vec::new();
    for _ in 0..40 {
        steady_step(&mut cluster, &mut proposed);
    }
    cluster.replica(n(1)).prefer(n(3));
    let mut steps = 0;
    while cluster.leader() != Some(n(3)) {
        steady_step(&mut cluster, &mut proposed);
        steps += 1;
        assert!(steps < 40, "no handover within ten round trips of steady load");
    }
    for _ in 0..40 {
        steady_step(&mut cluster, &mut proposed);
    }
    cluster.deliver_all();
    // The followers learn the last slot chosen from the next heartbeat.
    cluster.run_until(|cluster| [n(1), n(2)].iter().all(|node| cluster.commands(*node) == cluster.commands(n(3))));
    let chosen = cluster.commands(n(3));
    assert!(chosen.iter().all(|command| proposed.contains(command)));
    assert!(chosen.len() >= 80, "{} of {} commands chosen", chosen.len(), proposed.len());
}

/// R22: a transfer whose successor goes silent ends within two heartbeat
/// intervals: the held commands are proposed, the leader keeps leading
/// with its preference as it was, and no handoff is sent. A transfer
/// refuses a node that is not another voter, and a second one while the
/// first is under way.
#[test]
fn a_transfer_to_a_node_that_goes_silent_ends_and_the_leader_goes_on() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    assert_eq!(cluster.elect(), n(1));
    cluster.propose(n(1), "before");
    cluster.deliver_all();
    assert!(!cluster.replica(n(1)).prefer(n(1)), "not to itself");
    assert!(!cluster.replica(n(1)).prefer(n(9)), "not to a node outside the group");
    assert!(cluster.replica(n(1)).prefer(n(3)));
    assert!(!cluster.replica(n(1)).prefer(n(2)), "not while another transfer is under way");
    cluster.crash(n(3));
    cluster.propose(n(1), "held");
    cluster.process_all();
    assert!(cluster.in_flight.iter().all(|envelope| !matches!(envelope.message, Message::Accept { .. })), "held");
    // Two heartbeat intervals (2 × RTT each) and a tick.
    for _ in 0..5 {
        cluster.tick_all(RTT_US);
    }
    assert_eq!(cluster.leader(), Some(n(1)));
    assert_eq!(cluster.replicas[&n(1)].config().preferred_leader, Some(n(1)), "the preference went back");
    cluster.propose(n(1), "after");
    cluster.run_until(|cluster| cluster.commands(n(2)).len() == 3);
    assert_eq!(cluster.commands(n(2)), vec![bytes("before"), bytes("held"), bytes("after")]);
    assert_eq!(cluster.leader(), Some(n(1)));
}

/// raft-rs `test_dueling_candidates` / etcd `TestDuelingCandidates`: two
/// candidates stand in the same round; ballots break the tie (the node id),
/// no ballot gets two leaders, and the group settles on one leader.
#[test]
fn election_ballot_tie() {
    let mut cluster = Cluster::new(3, None);
    cluster.now_us = 1_000_000;
    let now = cluster.now_us;
    cluster.replica(n(1)).tick(now);
    cluster.replica(n(2)).tick(now);
    let ballots: Vec<Ballot> = [n(1), n(2)].iter().map(|node| cluster.replicas[node].promised()).collect();
    assert_eq!(ballots[0].round, ballots[1].round, "both stand in the same round");
    assert!(ballots[0] < ballots[1]);
    cluster.deliver_all();
    let leader = cluster.elect();
    cluster.propose(leader, "after the tie");
    cluster.run_until(|cluster| (1..=3).all(|id| cluster.commands(n(id)) == vec![bytes("after the tie")]));
    cluster.assert_logs_agree();
}

/// raft-rs `test_leader_election_with_check_quorum` and a crash: the leader
/// dies; a new one is elected in a higher ballot and keeps what was chosen.
#[test]
fn leader_crash_and_reelection() {
    let mut cluster = Cluster::new(3, None);
    let first = cluster.elect();
    let first_ballot = cluster.replicas[&first].leader_ballot().unwrap();
    cluster.propose(first, "a");
    cluster.deliver_all();
    cluster.crash(first);
    let second = cluster.elect();
    assert_ne!(first, second);
    assert!(cluster.replicas[&second].leader_ballot().unwrap() > first_ballot);
    cluster.propose(second, "b");
    cluster.run_until(|cluster| cluster.commands(second) == vec![bytes("a"), bytes("b")]);
    cluster.restart(first);
    cluster.run_until(|cluster| cluster.commands(first) == vec![bytes("a"), bytes("b")]);
    cluster.assert_logs_agree();
}

/// A value accepted by a quorum but not yet known chosen by anyone survives
/// the leader's crash: phase 1 of the next ballot finds and re-proposes it
/// (Paxos Made Simple §2.2, P2c).
#[test]
fn accepted_value_survives_leader_crash_before_commit_is_known() {
    let mut cluster = Cluster::new(3, None);
    let leader = cluster.elect();
    cluster.propose(leader, "in flight");
    cluster.process(leader);
    // Deliver the accepts, but lose every answer: nobody learns it is chosen.
    let accepts = std::mem::take(&mut cluster.in_flight);
    for envelope in accepts {
        let to = envelope.to;
        let now = cluster.now_us;
        cluster.replica(to).step(now, envelope);
        // Persisted in `stored` below; applied as usual; answers lost.
        let ready = cluster.replica(to).take_ready();
        cluster.applied.get_mut(&to).unwrap().extend(ready.apply);
    }
    // (The command follows the no-ops a new leader chooses first: every
    // slot an accept reached is persisted.)
    for node in cluster.replicas.keys().copied().collect::<Vec<_>>() {
        let entries: Vec<Entry> = (1..=2 * WINDOW_SLOTS)
            .filter_map(|slot| {
                cluster.replicas[&node].entry(Slot(slot)).map(|(ballot, value)| Entry {
                    slot: Slot(slot),
                    ballot,
                    value: value.clone(),
                })
            })
            .collect();
        cluster.stored.get_mut(&node).unwrap().apply(&Persist { entries, ..Persist::default() });
    }
    cluster.crash(leader);
    let next = cluster.elect();
    cluster.run_until(|cluster| cluster.commands(next) == vec![bytes("in flight")]);
}

/// raft-rs `test_log_replication` with a partitioned follower: it misses
/// many slots and catches up from the leader's log when it returns.
#[test]
fn lagging_follower_catches_up_from_the_log() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    cluster.cut.insert(n(3));
    for i in 0..150 {
        cluster.propose(leader, &format!("c{i}"));
        cluster.deliver_all();
    }
    assert!(cluster.commands(n(3)).is_empty());
    cluster.cut.clear();
    cluster.run_until(|cluster| cluster.commands(n(3)).len() == 150);
    assert!(!cluster.restored.contains_key(&n(3)), "no snapshot was needed");
    cluster.assert_logs_agree();
}

/// raft-rs `test_provide_snap` / `test_restore_from_snap_msg`: the leader has
/// compacted the slots a follower lacks, so the follower gets the snapshot.
#[test]
fn lagging_follower_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    cluster.cut.insert(n(3));
    for i in 0..20 {
        cluster.propose(leader, &format!("c{i}"));
        cluster.deliver_all();
    }
    for node in [n(1), n(2)] {
        let applied = cluster.replicas[&node].applied();
        cluster.compact(node, format!("state@{}", applied.0).as_bytes());
    }
    let compacted = cluster.replicas[&leader].snapshot_slot();
    assert!(compacted > Slot::ZERO);
    cluster.cut.clear();
    cluster.propose(leader, "after");
    cluster.run_until(|cluster| cluster.replicas[&n(3)].applied() == cluster.replicas[&leader].applied());
    assert_eq!(cluster.restored[&n(3)], vec![compacted]);
    assert_eq!(cluster.commands(n(3)), vec![bytes("after")], "entries after the snapshot arrive as usual");
    assert_eq!(cluster.snapshot_bytes(n(3)), format!("state@{}", compacted.0).into_bytes());
}

/// Bytes of one snapshot chunk in the chunked-transfer tests.
const CHUNK: usize = 7;

/// Three replicas sending snapshots in `CHUNK`-byte chunks; n3 was cut off
/// while the others chose 20 commands and compacted them into a snapshot
/// of 100 bytes. Returns the cluster (n3 still cut off), the leader, the
/// snapshot's bytes and its slot.
fn behind_a_chunked_snapshot() -> (Cluster, NodeId, Vec<u8>, Slot) {
    let mut cluster = Cluster::new(3, Some(n(1)));
    for node in [n(1), n(2), n(3)] {
        cluster.configs.get_mut(&node).unwrap().snapshot_chunk_bytes = CHUNK;
        cluster.restart(node);
    }
    let leader = cluster.elect();
    cluster.cut.insert(n(3));
    for i in 0..20 {
        cluster.propose(leader, &format!("c{i}"));
        cluster.deliver_all();
    }
    let state: Vec<u8> = (0..100u8).collect();
    for node in [n(1), n(2)] {
        cluster.compact(node, &state);
    }
    let compacted = cluster.replicas[&leader].snapshot_slot();
    (cluster, leader, state, compacted)
}

/// A snapshot larger than a chunk travels in chunks, one per request; a
/// lost chunk stalls the transfer until the next catch-up request, which
/// resumes it where it stopped rather than from the start.
#[test]
fn a_snapshot_travels_in_chunks_and_resumes_after_a_lost_one() {
    let (mut cluster, leader, state, compacted) = behind_a_chunked_snapshot();

    let indexes = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = indexes.clone();
    let mut lost_once = false;
    cluster.lose = Some(Box::new(move |envelope| {
        let Message::SnapshotChunk { index, data, .. } = &envelope.message else { return false };
        assert!(data.len() <= CHUNK, "a chunk of {} bytes", data.len());
        if *index == 3 && !lost_once {
            lost_once = true;
            return true;
        }
        seen.borrow_mut().push(*index);
        false
    }));
    cluster.cut.clear();
    cluster.propose(leader, "after");
    cluster.run_until(|cluster| cluster.replicas[&n(3)].applied() == cluster.replicas[&leader].applied());

    assert_eq!(cluster.restored[&n(3)], vec![compacted]);
    assert_eq!(cluster.snapshot_bytes(n(3)), state, "reassembled byte for byte");
    assert_eq!(cluster.commands(n(3)), vec![bytes("after")]);
    let expected: Vec<u64> = (0..state.len().div_ceil(CHUNK) as u64).collect();
    assert_eq!(*indexes.borrow(), expected, "every chunk delivered once, the lost one resent, none from the start");
}

/// A link slower than a heartbeat: every chunk arrives two heartbeats after
/// it was asked for, and the first one arrives again late. Each chunk is
/// asked for once, and the late copy does not restart the transfer.
#[test]
fn a_slow_link_asks_for_each_chunk_once_and_a_late_copy_changes_nothing() {
    let (mut cluster, leader, state, compacted) = behind_a_chunked_snapshot();

    // Chunks are held back (then delivered by hand); requests are counted.
    let held = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let requested = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let (hold, count) = (held.clone(), requested.clone());
    cluster.lose = Some(Box::new(move |envelope| match &envelope.message {
        Message::SnapshotChunk { .. } => {
            hold.borrow_mut().push(envelope.clone());
            true
        }
        Message::SnapshotChunkRequest { index, .. } => {
            count.borrow_mut().push(*index);
            false
        }
        _ => false,
    }));
    cluster.cut.clear();
    cluster.propose(leader, "after");
    let heartbeat_us = cluster.configs[&leader].heartbeat_interval_us;
    let mut first_chunk: Option<Envelope> = None;
    for _ in 0..100 {
        if cluster.replicas[&n(3)].applied() == cluster.replicas[&leader].applied() {
            break;
        }
        cluster.tick_all(2 * heartbeat_us);
        let mut arriving = std::mem::take(&mut *held.borrow_mut());
        if first_chunk.is_none() {
            first_chunk =
                arriving.iter().find(|e| matches!(e.message, Message::SnapshotChunk { index: 0, .. })).cloned();
        } else {
            arriving.extend(first_chunk.clone());
        }
        for envelope in arriving {
            let (to, now) = (envelope.to, cluster.now_us);
            cluster.replica(to).step(now, envelope);
            cluster.process(to);
        }
    }

    assert_eq!(cluster.replicas[&n(3)].applied(), cluster.replicas[&leader].applied(), "caught up");
    assert_eq!(cluster.restored[&n(3)], vec![compacted], "installed once");
    assert_eq!(cluster.snapshot_bytes(n(3)), state, "reassembled byte for byte");
    let expected: Vec<u64> = (1..state.len().div_ceil(CHUNK) as u64).collect();
    assert_eq!(*requested.borrow(), expected, "every chunk after the first asked for once, in order");
}

/// A late copy of a chunk of a snapshot installed long ago arrives in the
/// middle of the next transfer: it is dropped, and the transfer goes on
/// where it was (found by review: it used to start over).
#[test]
fn a_stale_chunk_of_an_older_snapshot_does_not_restart_a_transfer() {
    let (mut cluster, leader, _, first) = behind_a_chunked_snapshot();
    let old_chunk = std::rc::Rc::new(std::cell::RefCell::new(None));
    let keep = old_chunk.clone();
    cluster.lose = Some(Box::new(move |envelope| {
        if matches!(envelope.message, Message::SnapshotChunk { index: 2, .. }) && keep.borrow().is_none() {
            *keep.borrow_mut() = Some(envelope.clone());
        }
        false
    }));
    cluster.cut.clear();
    cluster.propose(leader, "after");
    cluster.run_until(|cluster| cluster.replicas[&n(3)].applied() == cluster.replicas[&leader].applied());
    assert_eq!(cluster.restored[&n(3)], vec![first]);

    // n3 falls behind a second snapshot, larger than the first.
    cluster.cut.insert(n(3));
    for i in 0..20 {
        cluster.propose(leader, &format!("d{i}"));
        cluster.deliver_all();
    }
    let state: Vec<u8> = (0..200u8).collect();
    for node in [n(1), n(2)] {
        cluster.compact(node, &state);
    }
    let second = cluster.replicas[&leader].snapshot_slot();
    let stale = old_chunk.borrow_mut().take().expect("a chunk of the first snapshot");
    let requests = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let count = requests.clone();
    cluster.lose = Some(Box::new(move |envelope| {
        if let Message::SnapshotChunkRequest { index, .. } = envelope.message {
            count.borrow_mut().push(index);
        }
        false
    }));
    // Chunk by chunk; halfway through, the old chunk arrives again.
    cluster.slow_stores.insert(n(3));
    cluster.cut.clear();
    cluster.propose(leader, "after the second");
    cluster.deliver_all();
    let chunks = state.len().div_ceil(CHUNK) as u64;
    for index in 0..chunks {
        assert_eq!(cluster.unconfirmed, vec![(n(3), second, index)]);
        if index == chunks / 2 {
            let (to, now) = (stale.to, cluster.now_us);
            cluster.replica(to).step(now, stale.clone());
            cluster.process(to);
        }
        let (node, slot, index) = cluster.unconfirmed.pop().unwrap();
        cluster.replica(node).chunk_stored(slot, index);
        cluster.process(node);
        cluster.deliver_all();
    }
    cluster.slow_stores.clear();
    cluster.run_until(|cluster| cluster.replicas[&n(3)].applied() == cluster.replicas[&leader].applied());
    assert_eq!(cluster.restored[&n(3)], vec![first, second]);
    assert_eq!(cluster.snapshot_bytes(n(3)), state);
    let expected: Vec<u64> = (1..chunks).collect();
    assert_eq!(*requests.borrow(), expected, "each chunk asked for once: the transfer never started over");
}

/// The receiver asks for the next chunk, and installs the snapshot, only
/// once its state machine says it stored the chunk before: a snapshot in
/// the log store always has every chunk on disk.
#[test]
fn the_next_chunk_is_asked_for_only_once_the_last_one_is_stored() {
    let (mut cluster, leader, state, compacted) = behind_a_chunked_snapshot();
    cluster.slow_stores.insert(n(3));
    cluster.cut.clear();
    cluster.propose(leader, "after");
    cluster.deliver_all();
    let chunks = state.len().div_ceil(CHUNK) as u64;
    for index in 0..chunks {
        assert_eq!(cluster.unconfirmed, vec![(n(3), compacted, index)], "one chunk at a time, in order");
        assert!(cluster.stored[&n(3)].snapshot.is_none(), "not installed before its last chunk is stored");
        // Heartbeats come and go: nothing more is asked for meanwhile.
        let heartbeat_us = cluster.configs[&leader].heartbeat_interval_us;
        cluster.tick_all(heartbeat_us);
        assert_eq!(cluster.unconfirmed.len(), 1);
        let (node, slot, index) = cluster.unconfirmed.pop().unwrap();
        cluster.replica(node).chunk_stored(slot, index);
        cluster.process(node);
        cluster.deliver_all();
    }
    assert!(cluster.unconfirmed.is_empty());
    assert_eq!(cluster.stored[&n(3)].snapshot.as_ref().map(|snapshot| snapshot.slot), Some(compacted));
    cluster.run_until(|cluster| cluster.replicas[&n(3)].applied() == cluster.replicas[&leader].applied());
    assert_eq!(cluster.snapshot_bytes(n(3)), state);
    assert_eq!(cluster.commands(n(3)), vec![bytes("after")]);
}

/// A voter compacts slots between promising a new leader and voting on
/// them: it cannot vote on what its snapshot replaced, and the leader lags
/// a chosen prefix it cannot recover by proposing. Told so, the leader
/// steps down, installs the snapshot and leads again, rather than staying
/// leader forever with nothing chosen.
#[test]
fn a_leader_behind_a_voters_snapshot_steps_down_catches_up_and_leads_again() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    assert_eq!(cluster.elect(), n(1));
    cluster.propose(n(1), "a");
    cluster.deliver_all();
    cluster.cut.insert(n(2));
    for i in 0..10 {
        cluster.propose(n(1), &format!("c{i}"));
        cluster.deliver_all();
    }
    // Only n2 may lead next: n1 is down, n3 abstains (but votes).
    cluster.crash(n(1));
    cluster.replica(n(3)).set_abstaining(true);
    cluster.cut.clear();
    // n3 promises n2, but n2's accepts reach it only after it compacted.
    cluster.lose = Some(Box::new(|envelope| envelope.to == n(3) && matches!(envelope.message, Message::Accept { .. })));
    cluster.run_until(|cluster| cluster.replicas[&n(2)].leader_ballot().is_some());
    let applied = cluster.replicas[&n(3)].applied();
    assert!(applied > cluster.replicas[&n(2)].chosen(), "n3 knows more chosen slots than the new leader");
    cluster.compact(n(3), b"state");
    cluster.lose = None;

    let compacted = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = compacted.clone();
    cluster.lose = Some(Box::new(move |envelope| {
        if matches!(envelope.message, Message::Compacted { .. }) {
            seen.set(seen.get() + 1);
        }
        false
    }));
    cluster.run_until(|cluster| {
        cluster.replicas[&n(2)].leader_ballot().is_some() && cluster.replicas[&n(2)].chosen() >= applied
    });
    assert!(compacted.get() > 0, "n3 told the leader it compacted the slots asked for");
    assert_eq!(cluster.restored[&n(2)], vec![applied], "the leader caught up through n3's snapshot");
    cluster.propose(n(2), "after");
    cluster.run_until(|cluster| cluster.commands(n(3)).last() == Some(&bytes("after")));
}

/// Every message duplicated and delivered newest first: safety holds and
/// every replica applies the same commands in the same order.
#[test]
fn duplicated_and_reordered_messages_are_harmless() {
    let mut cluster = Cluster::new(3, None);
    let leader = cluster.elect();
    for round in 0..10 {
        for i in 0..3 {
            cluster.propose(leader, &format!("r{round}c{i}"));
        }
        cluster.process_all();
        for _ in 0..20 {
            let mut batch = std::mem::take(&mut cluster.in_flight);
            if batch.is_empty() {
                break;
            }
            batch.reverse();
            let duplicates = batch.clone();
            for envelope in batch.into_iter().chain(duplicates) {
                let (to, now) = (envelope.to, cluster.now_us);
                cluster.replica(to).step(now, envelope);
                cluster.process(to);
            }
        }
    }
    cluster.run_until(|cluster| (1..=3).all(|id| cluster.commands(n(id)).len() == 30));
    assert_eq!(cluster.commands(n(1)), cluster.commands(n(2)));
    assert_eq!(cluster.commands(n(2)), cluster.commands(n(3)));
}

/// raft-rs `test_old_messages` / `test_leader_superseded`: a leader cut off
/// from the rest still takes a proposal, but nothing of its stale ballot is
/// ever chosen; on return it follows the new leader and adopts its log.
#[test]
fn stale_leader_cannot_commit() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let old = cluster.elect();
    assert_eq!(old, n(1));
    cluster.cut.insert(old);
    cluster.propose(old, "stale");
    let new = cluster.elect();
    assert_ne!(new, old);
    cluster.propose(new, "fresh");
    for _ in 0..3 {
        cluster.tick_all(RTT_US);
    }
    assert!(cluster.commands(old).is_empty(), "the stale leader chose nothing");
    cluster.cut.clear();
    cluster.run_until(|cluster| (1..=3).all(|id| cluster.commands(n(id)) == vec![bytes("fresh")]));
    cluster.assert_logs_agree();
}

/// Read-index on a healthy leader without leases: served after one quorum
/// round, at an index covering every write chosen before the request.
#[test]
fn read_index_serves_after_a_quorum_round() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    cluster.without_leases();
    let leader = cluster.elect();
    cluster.propose(leader, "w");
    cluster.deliver_all();
    let written = cluster.replicas[&leader].chosen();
    cluster.read_index(leader, 42).unwrap();
    cluster.process(leader);
    assert!(cluster.reads.get(&leader).is_none_or(|reads| reads.is_empty()), "not before a quorum answered");
    cluster.deliver_all();
    assert_eq!(cluster.reads[&leader], vec![ReadState { id: 42, outcome: ReadOutcome::Ready { index: written } }]);
    assert_eq!(cluster.read_index(n(2), 43), Err(ProposeError::NotLeader { leader: Some(leader) }));
}

/// Read-index refuses on a deposed leader without leases: cut off, it
/// cannot gather a quorum for its read round, and when it learns of the
/// higher ballot it aborts the read.
#[test]
fn read_index_refuses_on_a_deposed_leader() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    cluster.without_leases();
    let old = cluster.elect();
    cluster.cut.insert(old);
    cluster.read_index(old, 7).expect("it still believes it leads");
    let new = cluster.elect();
    cluster.propose(new, "newer write");
    cluster.deliver_all();
    assert!(
        cluster.reads[&old].iter().all(|read| !matches!(read.outcome, ReadOutcome::Ready { .. })),
        "a deposed leader served a read"
    );
    assert_eq!(cluster.reads[&old], vec![ReadState { id: 7, outcome: ReadOutcome::Aborted }]);
    assert_eq!(cluster.read_index(old, 8), Err(ProposeError::NotLeader { leader: None }));
    cluster.cut.clear();
    cluster.run_until(|cluster| cluster.replicas[&old].leader() == Some(new));
    assert_eq!(cluster.read_index(old, 9), Err(ProposeError::NotLeader { leader: Some(new) }));
}

/// Leases: a leader whose heartbeat round a quorum acknowledged serves a
/// read without another round (no message leaves), at an index covering
/// every write chosen before the request.
#[test]
fn lease_a_leader_with_a_lease_reads_without_a_round() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    cluster.propose(leader, "w");
    cluster.deliver_all();
    let written = cluster.replicas[&leader].chosen();
    assert!(cluster.replicas[&leader].has_lease(cluster.now_us));
    cluster.read_index(leader, 42).unwrap();
    let ready = cluster.replica(leader).take_ready();
    assert!(ready.send.is_empty(), "no round: {:?}", ready.send);
    assert_eq!(ready.reads, vec![ReadState { id: 42, outcome: ReadOutcome::Ready { index: written } }]);
}

/// Leases: a leader cut off from the others keeps its lease until it runs
/// out, and no other node is elected before it has: every step of the
/// way, a node leading a higher ballot means the old lease is over. After
/// that the old leader's reads need a round again, which it cannot get.
#[test]
fn lease_no_other_leader_is_elected_before_the_lease_runs_out() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let old = cluster.elect();
    cluster.deliver_all();
    assert!(cluster.replicas[&old].has_lease(cluster.now_us));
    cluster.cut.insert(old);
    let step_us = cluster.configs[&old].heartbeat_interval_us / 4;
    let mut new = None;
    for _ in 0..400 {
        cluster.now_us += step_us;
        let now = cluster.now_us;
        for node in [n(2), n(3)] {
            cluster.replica(node).tick(now);
        }
        cluster.deliver_all();
        new = [n(2), n(3)].into_iter().find(|node| cluster.replicas[node].leader_ballot().is_some());
        if new.is_some() {
            break;
        }
        // The old leader is not ticked (as if its process stalled): only
        // its clock, passed in with the read, ends its lease.
    }
    let new = new.expect("the others elect a leader once the lease is over");
    assert!(!cluster.replicas[&old].has_lease(cluster.now_us), "two leaders while a lease held");
    assert!(cluster.read_index(old, 7).is_ok(), "it still believes it leads");
    let ready = cluster.replica(old).take_ready();
    assert!(ready.reads.is_empty(), "an expired lease serves nothing without a round");
    cluster.propose(new, "newer");
    cluster.deliver_all();
    assert!(cluster.reads.get(&old).is_none_or(|reads| reads.is_empty()));
}

/// Leases: every voter whose acknowledgement counted for the lease refuses
/// another ballot until the lease has ended (the harness runs every clock
/// at the same rate; the lease ends well before the voters' refusals do).
#[test]
fn lease_the_voters_that_granted_it_refuse_other_ballots_until_it_ends() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    let heartbeat_us = cluster.configs[&leader].heartbeat_interval_us;
    cluster.tick_all(heartbeat_us);
    let expiry = cluster.replicas[&leader].lease_expiry_us().expect("a lease");
    assert!(expiry > cluster.now_us);
    cluster.cut.insert(leader);
    for voter in [n(2), n(3)] {
        let ballot = Ballot::new(cluster.replicas[&voter].promised().round + 1, n(9));
        let message = Message::Prepare { ballot, from: Slot(1), handoff: None };
        cluster.replica(voter).step(expiry - 1, Envelope { group: GROUP, from: n(9), to: voter, message });
        let ready = cluster.replica(voter).take_ready();
        assert!(matches!(ready.send[0].message, Message::Reject { .. }), "{voter} promised while the lease held");
    }
}

/// Leases: a voter that restarted promises no ballot for an election
/// timeout (it may have acknowledged a lease just before, and forgot when),
/// unless it never promised anything; then it votes as usual.
#[test]
fn lease_a_restarted_voter_promises_nothing_for_an_election_timeout() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    cluster.deliver_all();
    cluster.crash(n(2));
    cluster.restart(n(2));
    let now = cluster.now_us;
    let ballot = Ballot::new(99, n(3));
    let prepare = Message::Prepare { ballot, from: Slot(1), handoff: None };
    cluster.replica(n(2)).step(now, Envelope { group: GROUP, from: n(3), to: n(2), message: prepare.clone() });
    let ready = cluster.replica(n(2)).take_ready();
    assert!(matches!(ready.send[0].message, Message::Reject { .. }), "{:?}", ready.send);
    let later = now + cluster.configs[&n(2)].election_timeout_us;
    cluster.replica(n(2)).step(later, Envelope { group: GROUP, from: n(3), to: n(2), message: prepare });
    let ready = cluster.replica(n(2)).take_ready();
    assert!(ready.send.iter().any(|e| matches!(e.message, Message::Promise { .. })), "{:?}", ready.send);
    let _ = leader;
}

/// Leases: the leader that asks its preferred successor to take over gives
/// up its lease first (its voters will promise the successor); and a
/// candidacy asked for by an older ballot's leader gets no such favour.
#[test]
fn lease_a_handoff_ends_the_lease_and_a_stale_one_is_refused() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    cluster.crash(n(1));
    let interim = cluster.elect();
    cluster.deliver_all();
    assert!(cluster.replicas[&interim].has_lease(cluster.now_us));
    let interim_ballot = cluster.replicas[&interim].leader_ballot().unwrap();
    cluster.restart(n(1));
    // Until the preferred node has caught up and the interim leader hands over.
    let handed_over = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = handed_over.clone();
    // The handoff is held back: the interim leader still leads, without a lease.
    cluster.lose = Some(Box::new(move |envelope| {
        let handoff = matches!(envelope.message, Message::Handoff { .. });
        seen.set(seen.get() || handoff);
        handoff
    }));
    for _ in 0..200 {
        let heartbeat_us = cluster.configs[&interim].heartbeat_interval_us;
        cluster.tick_all(heartbeat_us);
        if handed_over.get() {
            break;
        }
    }
    assert_eq!(cluster.replicas[&interim].leader_ballot(), Some(interim_ballot));
    assert!(!cluster.replicas[&interim].has_lease(cluster.now_us), "no lease once it asked for a successor");
    cluster.lose = None;
    assert!(handed_over.get(), "the interim leader handed over");
    cluster.run_until(|cluster| cluster.leader() == Some(n(1)));
    cluster.deliver_all();

    // n2 or n3 now follows n1's ballot and heard it just now: a candidacy
    // that claims the interim leader's (older) handoff is refused.
    let follower = if interim == n(2) { n(3) } else { n(2) };
    let now = cluster.now_us;
    let ballot = Ballot::new(cluster.replicas[&follower].promised().round + 1, interim);
    let prepare = Message::Prepare { ballot, from: Slot(1), handoff: Some(interim_ballot) };
    cluster.replica(follower).step(now, Envelope { group: GROUP, from: interim, to: follower, message: prepare });
    let ready = cluster.replica(follower).take_ready();
    assert!(matches!(ready.send[0].message, Message::Reject { .. }), "{:?}", ready.send);
    assert!(cluster.replicas[&n(1)].has_lease(cluster.now_us));
}

/// Leases: a membership change ends the lease; the next round acknowledged
/// by a quorum of the new configuration starts another.
#[test]
fn lease_a_membership_change_needs_a_new_round() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    cluster.deliver_all();
    assert!(cluster.replicas[&leader].has_lease(cluster.now_us));
    cluster.join(n(4));
    let target = membership(&[1, 2, 3], &[4]);
    cluster.replica(leader).propose_membership(target.clone()).unwrap();
    cluster.process(leader);
    cluster.deliver_all();
    assert_eq!(cluster.replicas[&leader].membership(), &target);
    assert!(!cluster.replicas[&leader].has_lease(cluster.now_us), "the change ended the lease");
    let heartbeat_us = cluster.configs[&leader].heartbeat_interval_us;
    cluster.tick_all(heartbeat_us);
    assert!(cluster.replicas[&leader].has_lease(cluster.now_us), "a round in the new configuration renews it");
}

/// Leases and clock rates (`docs/design/multipaxos.md`, "Leases"): a leader
/// cut off right after a heartbeat round, its clock running `drift_permille`
/// slow and the others' as much fast, with no placement preference (so no
/// extra wait before standing). Answers whether the old leader still holds
/// its lease, by its own clock, when another node is elected.
fn lease_outlives_a_new_election(drift_permille: u64) -> bool {
    let mut cluster = Cluster::new(3, None);
    let old = cluster.elect();
    let heartbeat_us = cluster.configs[&old].heartbeat_interval_us;
    cluster.tick_all(heartbeat_us);
    assert!(cluster.replicas[&old].has_lease(cluster.now_us));
    cluster.cut.insert(old);
    let start = cluster.now_us;
    let others: Vec<NodeId> = cluster.replicas.keys().copied().filter(|node| *node != old).collect();
    for true_elapsed in (1..).map(|step| step * heartbeat_us / 8) {
        // Everything after the cut happens among the others, on their (fast) clocks.
        cluster.now_us = start + true_elapsed * (1_000 + drift_permille) / 1_000;
        let now = cluster.now_us;
        for node in &others {
            cluster.replica(*node).tick(now);
        }
        cluster.deliver_all();
        if others.iter().any(|node| cluster.replicas[node].leader_ballot().is_some()) {
            let old_clock = start + true_elapsed * (1_000 - drift_permille) / 1_000;
            return cluster.replicas[&old].has_lease(old_clock);
        }
        assert!(true_elapsed < 100 * heartbeat_us, "no one was elected");
    }
    unreachable!()
}

/// Leases hold while clock rates stay within the bound that
/// `LEASE_PERCENT` absorbs (each clock within ±8 % of true time): the old
/// lease has run out, by the old leader's own slow clock, before the fast
/// clocks elect anyone. Beyond the bound (±45 %) the same steps leave the
/// old leader serving reads under a lease while another leads: the bound is
/// what makes leases safe, and offsets between clocks play no part.
#[test]
fn lease_safe_within_the_clock_rate_bound_and_not_beyond() {
    for drift_permille in [0, 40, 80] {
        assert!(!lease_outlives_a_new_election(drift_permille), "two leaders at ±{drift_permille} ‰");
    }
    assert!(lease_outlives_a_new_election(450), "the rate bound is not what keeps leases safe");
}

/// A read right after an election waits until the slots recovered from
/// earlier ballots are chosen (raft-rs `test_read_only_for_new_leader`).
#[test]
fn read_index_waits_for_the_new_leaders_recovered_slots() {
    let mut cluster = Cluster::new(3, None);
    let leader = cluster.elect();
    cluster.propose(leader, "x");
    cluster.deliver_all();
    cluster.crash(leader);
    let next = cluster.elect();
    cluster.read_index(next, 1).unwrap();
    cluster.deliver_all();
    let Some(ReadState { outcome: ReadOutcome::Ready { index }, .. }) = cluster.reads[&next].first().copied() else {
        panic!("read not served");
    };
    assert!(index >= Slot(1), "the read covers the earlier ballot's write");
    assert!(cluster.replicas[&next].applied() >= index);
}

/// Batching: commands queued while the window is full share one slot.
/// Pipelining: at most `window_slots_max` slots are in flight.
#[test]
fn batching_and_a_bounded_pipeline() {
    let mut cluster = Cluster::new(3, None);
    let leader = cluster.elect();
    let window = cluster.configs[&leader].window_slots_max;
    let start = cluster.replicas[&leader].chosen();
    let proposals = 600;
    for i in 0..proposals {
        cluster.propose(leader, &format!("c{i}"));
    }
    let ready = cluster.replica(leader).take_ready();
    let slots: BTreeSet<Slot> = ready.persist.entries.iter().map(|entry| entry.slot).collect();
    assert_eq!(slots.len() as u64, window, "one slot per batch, up to the window");
    assert_eq!(*slots.iter().next().unwrap(), start.next());
    let commands: usize = ready
        .persist
        .entries
        .iter()
        .map(|entry| match &entry.value {
            Value::Batch(batch) => batch.len(),
            Value::Noop | Value::Reconfigure(_) => 0,
        })
        .sum();
    assert_eq!(commands, window as usize * BATCH_COMMANDS_MAX, "full batches while proposals wait");
    cluster.stored.get_mut(&leader).unwrap().apply(&ready.persist);
    cluster.in_flight.extend(ready.send);
    cluster.run_until(|cluster| cluster.commands(n(3)).len() == proposals);
    assert_eq!(cluster.commands(n(3))[proposals - 1], bytes("c599"));
}

/// A restarted replica rebuilds its state machine from what it persisted
/// and never reuses a ballot it promised (Paxos Made Live §5.1).
#[test]
fn restart_replays_durable_state_and_never_reuses_a_ballot() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    let ballot = cluster.replicas[&leader].leader_ballot().unwrap();
    cluster.propose(leader, "a");
    cluster.propose(leader, "b");
    cluster.deliver_all();
    cluster.tick_all(RTT_US);
    cluster.crash(leader);
    cluster.restart(leader);
    // The chosen index is persisted lazily: the replay covers what the last
    // write recorded, and the rest is learned again.
    let replayed = cluster.commands(leader);
    assert!([bytes("a"), bytes("b")].starts_with(&replayed), "replayed {replayed:?}");
    assert_eq!(cluster.replicas[&leader].promised(), ballot);
    cluster.run_until(|cluster| cluster.leader() == Some(n(1)));
    assert!(cluster.replicas[&n(1)].leader_ballot().unwrap() > ballot);
    cluster.run_until(|cluster| cluster.commands(n(1)) == vec![bytes("a"), bytes("b")]);
}

/// raft-rs `test_single_node_commit`: a one-voter group chooses alone.
#[test]
fn single_voter_group_commits_alone() {
    let mut cluster = Cluster::new(1, None);
    let leader = cluster.elect();
    cluster.propose(leader, "solo");
    cluster.process_all();
    assert_eq!(cluster.commands(leader), vec![bytes("solo")]);
    cluster.read_index(leader, 5).unwrap();
    cluster.process_all();
    // The no-ops a new leader chooses first (a window of them), then "solo".
    assert_eq!(cluster.reads[&leader][0].outcome, ReadOutcome::Ready { index: Slot(WINDOW_SLOTS + 1) });
}

/// raft-rs `test_proposal` (to a follower): only the leader takes proposals.
#[test]
fn proposals_to_a_follower_are_refused_with_a_hint() {
    let mut cluster = Cluster::new(3, Some(n(2)));
    let leader = cluster.elect();
    assert_eq!(cluster.replica(n(1)).propose(bytes("x")), Err(ProposeError::NotLeader { leader: Some(leader) }));
}

/// A minority cannot choose anything (raft-rs `test_commit_without_quorum`):
/// with two of three voters gone, the leader's proposal stays unchosen.
#[test]
fn no_progress_without_a_quorum() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    cluster.crash(n(2));
    cluster.crash(n(3));
    cluster.propose(leader, "alone");
    for _ in 0..50 {
        cluster.tick_all(RTT_US);
    }
    assert!(cluster.commands(leader).is_empty());
    assert_ne!(cluster.replicas[&leader].role(), RoleKind::Leader, "check-quorum stepped it down");
}

/// A leader told to abstain (its node's clock is out of bounds) hands
/// leadership to a caught-up voter at once, never stands while it
/// abstains, and, being the preferred leader, gets it back afterwards.
#[test]
fn an_abstaining_leader_hands_over_and_never_stands_until_it_may() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    assert_eq!(cluster.elect(), n(1));
    cluster.propose(n(1), "before");
    cluster.tick_all(RTT_US);
    cluster.replica(n(1)).set_abstaining(true);
    cluster.process_all();
    cluster.deliver_all();
    // The handoff elects a successor within a few round trips, well
    // before any election timeout would.
    for _ in 0..5 {
        cluster.tick_all(RTT_US);
    }
    let successor = cluster.leader().expect("a successor leads");
    assert_ne!(successor, n(1));
    cluster.propose(successor, "after");
    for _ in 0..500 {
        cluster.tick_all(RTT_US);
        assert_ne!(cluster.replicas[&n(1)].role(), RoleKind::Leader, "n1 led while abstaining");
        assert_ne!(cluster.replicas[&n(1)].role(), RoleKind::Candidate, "n1 stood while abstaining");
    }
    assert_eq!(cluster.commands(n(1)), vec![bytes("before"), bytes("after")]);
    cluster.replica(n(1)).set_abstaining(false);
    cluster.run_until(|cluster| cluster.leader() == Some(n(1)));
    assert_eq!(cluster.leader(), Some(n(1)), "the preferred leader leads again");
}

/// Many groups on one node: messages are routed by group.
#[test]
fn multi_paxos_routes_messages_by_group() {
    let voters = vec![n(1)];
    let mut node = MultiPaxos::new(n(1), 1);
    for group in [GroupId(1), GroupId(2)] {
        let config = Config::new(group, n(1), voters.clone(), RTT_US);
        node.add_group(config, Stored::default(), 0);
    }
    node.tick(1_000_000);
    node.take_ready();
    node.propose(GroupId(2), bytes("only in two")).unwrap();
    let ready = node.take_ready();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].0, GroupId(2));
    assert_eq!(ready[0].1.apply[0].value, Value::Batch(vec![bytes("only in two")]));
    assert!(node.propose(GroupId(3), bytes("nowhere")).is_err());
}

/// A learner's votes count in no configuration, so its copy of the log
/// goes to disk without an fsync; a voter's votes, a promise and the
/// leader's own entries with one. Once promoted, the learner syncs too.
#[test]
fn a_learner_writes_the_log_without_an_fsync_and_a_voter_with_one() {
    let mut cluster = Cluster::with_learners(3, 1, Some(n(1)));
    let learner = n(4);
    let leader = cluster.elect();
    cluster.propose(leader, "a");
    cluster.run_until(|cluster| cluster.commands(learner) == vec![bytes("a")]);
    // Its first write after the election holds its promise of the
    // leader's ballot: synced.
    assert!(cluster.writes[&learner].first().is_some_and(|(sync, _)| *sync), "{:?}", cluster.writes[&learner]);
    cluster.writes.clear();
    // Nor does it answer: no leader counts it.
    let answers = std::rc::Rc::new(std::cell::Cell::new(0));
    let counted = answers.clone();
    cluster.lose = Some(Box::new(move |envelope| {
        if envelope.from == learner && matches!(envelope.message, Message::Accepted { .. }) {
            counted.set(counted.get() + 1);
        }
        false
    }));
    for command in ["b", "c", "d"] {
        cluster.propose(leader, command);
        cluster.run_until(|cluster| cluster.commands(learner).last() == Some(&bytes(command)));
    }
    assert_eq!(answers.get(), 0, "a learner answered an accept");
    let entries = |cluster: &Cluster, node: NodeId| -> Vec<bool> {
        cluster.writes[&node].iter().filter(|(_, entries)| *entries).map(|(sync, _)| *sync).collect()
    };
    assert_eq!(entries(&cluster, learner), vec![false; 3], "a learner's copy: no fsync");
    for voter in [leader, n(2), n(3)] {
        assert_eq!(entries(&cluster, voter), vec![true; 3], "{voter}'s votes: an fsync each");
    }

    // Promoted, its votes count: synced from the slot after the change on.
    let mut written = Vec::new();
    cluster.reconfigure_while_writing(&membership(&[1, 2, 3, 4], &[]), &mut written);
    cluster.run_until(|cluster| !cluster.replicas[&learner].is_learner());
    cluster.writes.clear();
    let leader = cluster.leader().expect("a leader");
    cluster.propose(leader, "e");
    cluster.run_until(|cluster| cluster.commands(learner).last() == Some(&bytes("e")));
    assert!(entries(&cluster, learner).iter().all(|sync| *sync), "a voter's votes: synced");
    assert!(!entries(&cluster, learner).is_empty());
}

/// A learner that lacks slots below the one it is asked to accept cannot
/// know that slot's configuration (a change below may have made it a
/// voter): it syncs that vote.
#[test]
fn a_learner_with_a_gap_below_a_slot_syncs_its_vote_there() {
    let mut cluster = Cluster::with_learners(3, 1, Some(n(1)));
    let learner = n(4);
    let leader = cluster.elect();
    cluster.propose(leader, "a");
    cluster.run_until(|cluster| cluster.commands(learner) == vec![bytes("a")]);
    // The learner misses the accept of "b"; then "c"'s accept comes first.
    cluster.cut.insert(learner);
    cluster.propose(leader, "b");
    cluster.deliver_all();
    cluster.cut.clear();
    cluster.writes.clear();
    let chosen_before = cluster.replicas[&learner].chosen();
    let accept = Message::Accept {
        ballot: cluster.replicas[&leader].leader_ballot().expect("leading"),
        slot: chosen_before.next().next(),
        value: Value::Batch(vec![bytes("c")]),
        chosen: chosen_before,
    };
    let now = cluster.now_us;
    cluster.replica(learner).step(now, Envelope { group: GROUP, from: leader, to: learner, message: accept });
    cluster.process(learner);
    assert_eq!(cluster.writes[&learner], vec![(true, true)], "a vote above a gap is synced");
    assert!(
        cluster
            .in_flight
            .iter()
            .any(|envelope| envelope.from == learner && matches!(envelope.message, Message::Accepted { .. })),
        "and answered"
    );
}

/// Zone survival's remote copies: a learner receives and applies the log,
/// catches up like anyone, but never votes and never stands for election.
#[test]
fn learner_follows_the_log_but_never_votes_or_stands() {
    let mut cluster = Cluster::with_learners(3, 1, Some(n(1)));
    let learner = n(4);
    let leader = cluster.elect();
    cluster.propose(leader, "a");
    cluster.run_until(|cluster| cluster.commands(learner) == vec![bytes("a")]);
    assert!(cluster.replicas[&learner].is_learner());
    // With two voters gone, leader and learner together are no quorum.
    cluster.crash(n(2));
    cluster.crash(n(3));
    cluster.propose(leader, "b");
    for _ in 0..100 {
        cluster.tick_all(RTT_US);
    }
    assert_eq!(cluster.commands(leader), vec![bytes("a")], "a learner's acceptance is no vote");
    assert_eq!(cluster.replicas[&learner].role(), RoleKind::Follower, "a learner never stands");
    assert!(cluster.leaders.keys().all(|ballot| ballot.node != learner));
    // A lagging learner catches up from a snapshot too.
    cluster.restart(n(2));
    cluster.restart(n(3));
    cluster.cut.insert(learner);
    let leader = cluster.elect();
    for i in 0..10 {
        cluster.propose(leader, &format!("c{i}"));
        cluster.deliver_all();
    }
    let applied = cluster.compact(leader, b"registers");
    cluster.cut.clear();
    cluster.run_until(|cluster| cluster.replicas[&learner].applied() == applied);
    assert_eq!(cluster.restored[&learner].last(), Some(&applied));
}

/// Found by the simulator (seed 687): a replica asked to help a peer that is
/// ahead of it (it restarted with a lagging chosen index) answers with
/// nothing instead of failing.
#[test]
fn catch_up_request_from_a_replica_further_ahead_gets_an_empty_answer() {
    let mut cluster = Cluster::new(3, None);
    let now = cluster.now_us;
    cluster.replica(n(2)).step(
        now,
        Envelope { group: GROUP, from: n(1), to: n(2), message: Message::CatchUpRequest { from: Slot(40) } },
    );
    let ready = cluster.replica(n(2)).take_ready();
    assert_eq!(ready.send.len(), 1);
    assert_eq!(ready.send[0].message, Message::CatchUp { entries: Vec::new(), chosen: Slot::ZERO });
}

fn membership(voters: &[u64], learners: &[u64]) -> Membership {
    Membership::new(voters.iter().copied().map(n).collect(), learners.iter().copied().map(n).collect())
}

/// Adding a voter (Ongaro's thesis §4.1, one server at a time): once the
/// change is chosen the new node votes, so with one old voter down a write
/// still needs it.
#[test]
fn membership_add_a_voter() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    cluster.propose(leader, "before");
    cluster.deliver_all();
    cluster.join(n(4));
    let four = membership(&[1, 2, 3, 4], &[]);
    cluster.reconfigure_while_writing(&four, &mut Vec::new());
    cluster.run_until(|cluster| cluster.replicas.values().all(|replica| replica.membership() == &four));
    assert!(cluster.replicas[&n(4)].is_voter());
    // Four voters need three: with n2 and n3 cut off, nothing is chosen...
    cluster.cut.extend([n(2), n(3)]);
    let chosen = cluster.replicas[&leader].chosen();
    cluster.propose(leader, "needs three of four");
    for _ in 0..3 {
        cluster.tick_all(RTT_US);
    }
    assert_eq!(cluster.replicas[&leader].chosen(), chosen, "two of four voters are no quorum");
    // ...and with only n3 cut off, the new voter's vote makes the quorum.
    cluster.cut.remove(&n(2));
    cluster.run_until(|cluster| cluster.commands(n(4)).last() == Some(&bytes("needs three of four")));
    assert_eq!(cluster.commands(n(4))[0], bytes("before"), "the new voter caught up from the log");
    cluster.assert_logs_agree();
}

/// Removing a voter: once the change is chosen the removed node no longer
/// counts (two remaining voters need each other) and never stands again.
#[test]
fn membership_remove_a_voter() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    assert_eq!(leader, n(1));
    let two = membership(&[1, 2], &[]);
    cluster.reconfigure_while_writing(&two, &mut Vec::new());
    cluster.run_until(|cluster| cluster.replicas.values().all(|replica| replica.membership() == &two));
    assert!(!cluster.replicas[&n(3)].is_voter() && !cluster.replicas[&n(3)].is_learner());
    // n3 is still up and connected, but its vote no longer counts.
    cluster.cut.insert(n(2));
    let chosen = cluster.replicas[&leader].chosen();
    cluster.propose(leader, "needs n2");
    for _ in 0..3 {
        cluster.tick_all(RTT_US);
    }
    assert_eq!(cluster.replicas[&leader].chosen(), chosen, "a removed voter's acceptance is no vote");
    cluster.cut.clear();
    cluster.run_until(|cluster| cluster.commands(n(2)).last() == Some(&bytes("needs n2")));
    // A removed node never stands, however long it waits.
    let ballots_before = cluster.leaders.len();
    cluster.crash(n(1));
    cluster.run_until(|cluster| cluster.leader() == Some(n(2)) || cluster.now_us > 400_000);
    for _ in 0..200 {
        cluster.tick_all(RTT_US);
    }
    assert_eq!(cluster.replicas[&n(3)].role(), RoleKind::Follower);
    assert!(cluster.leaders.keys().skip(ballots_before).all(|ballot| ballot.node != n(3)));
    assert!(cluster.replicas[&n(3)].promised().node != n(3), "n3 never even stood");
}

/// Removing the leader itself: it keeps leading until the change is chosen
/// (the change is counted under the configuration that still has it), then
/// steps down, hands over, and a remaining voter leads in a higher ballot.
#[test]
fn membership_remove_the_leader() {
    let mut cluster = Cluster::new(3, None);
    let old = cluster.elect();
    let old_ballot = cluster.replicas[&old].leader_ballot().unwrap();
    cluster.propose(old, "under the old leader");
    cluster.deliver_all();
    let rest: Vec<u64> = (1..=3).filter(|id| n(*id) != old).collect();
    let target = membership(&rest, &[]);
    cluster.replica(old).propose_membership(target.clone()).unwrap();
    cluster.run_until(|cluster| cluster.leader().is_some_and(|leader| leader != old));
    assert_eq!(cluster.replicas[&old].membership(), &target);
    assert_ne!(cluster.replicas[&old].role(), RoleKind::Leader, "the removed leader stepped down");
    let new = cluster.leader().unwrap();
    assert!(cluster.replicas[&new].leader_ballot().unwrap() > old_ballot);
    cluster.propose(new, "under the new leader");
    cluster.run_until(|cluster| {
        rest.iter()
            .all(|id| cluster.commands(n(*id)) == vec![bytes("under the old leader"), bytes("under the new leader")])
    });
    for _ in 0..200 {
        cluster.tick_all(RTT_US);
    }
    assert_eq!(cluster.replicas[&old].role(), RoleKind::Follower, "a removed leader never stands again");
    assert!(cluster.leaders.keys().filter(|ballot| ballot.node == old).all(|ballot| *ballot == old_ballot));
    cluster.assert_logs_agree();
}

/// Promoting a learner adds one voter: the learner then votes and acknowledges.
#[test]
fn membership_promote_a_learner() {
    let mut cluster = Cluster::with_learners(3, 1, Some(n(1)));
    let learner = n(4);
    let leader = cluster.elect();
    cluster.propose(leader, "a");
    cluster.run_until(|cluster| cluster.commands(learner) == vec![bytes("a")]);
    let promoted = membership(&[1, 2, 3, 4], &[]);
    cluster.reconfigure_while_writing(&promoted, &mut Vec::new());
    cluster.run_until(|cluster| cluster.replicas[&learner].is_voter());
    assert!(!cluster.replicas[&learner].is_learner());
    // With n2 and n3 down, n1 and n4 are no quorum of four; with only n3 down they need n4.
    cluster.crash(n(3));
    cluster.propose(leader, "b");
    cluster.run_until(|cluster| cluster.commands(learner).last() == Some(&bytes("b")));
    cluster.assert_logs_agree();
}

/// Moving a voter to another region (n1..n3 in one region, n4 in another):
/// add n4 as a learner, let it catch up, promote it, remove n3 — one voter
/// at a time, with writes proposed at every step. Every accepted write is
/// chosen once, in order, on every member, and on n3 up to its removal.
#[test]
fn membership_move_a_voter_to_another_region() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    cluster.elect();
    let mut written = Vec::new();
    cluster.run_while_writing(&mut written, |cluster| cluster.commands(n(3)).len() >= 5);
    cluster.join(n(4));
    cluster.reconfigure_while_writing(&membership(&[1, 2, 3], &[4]), &mut written);
    cluster.run_while_writing(&mut written, |cluster| {
        cluster.replicas[&n(4)].applied() >= cluster.replicas[&n(1)].chosen() && cluster.replicas[&n(4)].is_learner()
    });
    cluster.reconfigure_while_writing(&membership(&[1, 2, 3, 4], &[]), &mut written);
    cluster.reconfigure_while_writing(&membership(&[1, 2, 4], &[]), &mut written);
    cluster.run_while_writing(&mut written, |cluster| !cluster.replicas[&n(3)].is_voter());
    // The runtime retires n3's replica once it has learned its removal.
    let retired = cluster.commands(n(3));
    cluster.replicas.remove(&n(3));
    let at_removal = cluster.commands(n(1)).len();
    cluster.run_while_writing(&mut written, |cluster| cluster.commands(n(1)).len() >= at_removal + 10);
    let total = written.len();
    cluster.run_until(|cluster| [1, 2, 4].iter().all(|id| cluster.commands(n(*id)).len() == total));
    for id in [1, 2, 4] {
        assert_eq!(cluster.commands(n(id)), written, "n{id} has every write once, in order");
        assert_eq!(cluster.replicas[&n(id)].membership(), &membership(&[1, 2, 4], &[]));
    }
    assert!(written.starts_with(&retired), "the old voter applied a prefix");
    cluster.assert_logs_agree();
    // The new voter now counts: with n2 down, n1 and n4 choose.
    cluster.crash(n(2));
    cluster.propose(n(1), "after the move");
    cluster.run_until(|cluster| cluster.commands(n(4)).last() == Some(&bytes("after the move")));
}

/// One change at a time: a second change is refused while the first is
/// not yet chosen (requested, in flight, or recovered by a new leader).
#[test]
fn membership_second_change_refused_while_first_is_pending() {
    let mut cluster = Cluster::with_learners(3, 2, Some(n(1)));
    let leader = cluster.elect();
    cluster.propose(leader, "a");
    cluster.deliver_all();
    cluster.replica(leader).propose_membership(membership(&[1, 2, 3, 4], &[5])).unwrap();
    assert_eq!(
        cluster.replica(leader).propose_membership(membership(&[1, 2, 3], &[4])),
        Err(ProposeError::Reconfiguring)
    );
    // In flight: cut both followers so it cannot be chosen yet.
    cluster.cut.extend([n(2), n(3)]);
    cluster.process(leader);
    assert!(matches!(
        cluster.replicas[&leader].entry(cluster.replicas[&leader].chosen().next()),
        Some((_, Value::Reconfigure(_)))
    ));
    assert_eq!(
        cluster.replica(leader).propose_membership(membership(&[1, 2, 3, 4, 5], &[])),
        Err(ProposeError::Reconfiguring)
    );
    // Nothing is proposed after it until it is chosen (α = 1).
    cluster.propose(leader, "behind the change");
    cluster.process(leader);
    let after = cluster.replicas[&leader].chosen().next().next();
    assert_eq!(cluster.replicas[&leader].entry(after), None, "the pipeline stalls at the change");
    cluster.cut.clear();
    cluster.run_until(|cluster| cluster.replicas[&leader].membership() == &membership(&[1, 2, 3, 4], &[5]));
    assert_eq!(cluster.replica(leader).propose_membership(membership(&[1, 2, 3, 4, 5], &[])), Ok(()));
    assert!(ProposeError::Reconfiguring.is_retryable());
}

/// A change of two voters at once (or a malformed one) is refused outright;
/// learners may change freely.
#[test]
fn membership_two_voters_at_once_refused() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    for refused in [
        membership(&[1, 2, 4, 5], &[]),
        membership(&[1, 2, 4], &[]),
        membership(&[1], &[]),
        membership(&[], &[1, 2, 3]),
        membership(&[1, 2, 3], &[3]),
    ] {
        let result = cluster.replica(leader).propose_membership(refused.clone());
        assert!(matches!(result, Err(ProposeError::InvalidMembership { .. })), "{refused:?}: {result:?}");
        assert!(!result.unwrap_err().is_retryable());
    }
    assert_eq!(
        cluster.replica(n(2)).propose_membership(membership(&[1, 2, 3], &[4])),
        Err(ProposeError::NotLeader { leader: Some(leader) })
    );
    let learners = membership(&[1, 2, 3], &[4, 5]);
    cluster.reconfigure_while_writing(&learners, &mut Vec::new());
    assert_eq!(cluster.replicas[&leader].membership(), &learners);
}

/// A node that joins after the log was compacted past the change gets the
/// configuration from the snapshot, not from its `Config`.
#[test]
fn membership_new_node_catches_up_from_a_snapshot_after_the_change() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    let mut written = Vec::new();
    // n4 will be created knowing only the first step (as a learner of 1, 2, 3).
    cluster.reconfigure_while_writing(&membership(&[1, 2, 3], &[4]), &mut written);
    let target = membership(&[1, 2], &[4]);
    cluster.reconfigure_while_writing(&target, &mut written);
    cluster.run_while_writing(&mut written, |cluster| cluster.commands(n(2)).len() >= 20);
    for node in [n(1), n(2)] {
        let applied = cluster.replicas[&node].applied();
        cluster.compact(node, format!("state@{}", applied.0).as_bytes());
    }
    let snapshot = cluster.stored[&leader].snapshot.clone().unwrap();
    assert_eq!(snapshot.membership.as_ref(), Some(&target), "the snapshot carries the configuration");
    let mut config = Config::new(GROUP, n(4), vec![n(1), n(2), n(3)], RTT_US);
    config.learners = vec![n(4)];
    cluster.configs.insert(n(4), config.clone());
    cluster.stored.insert(n(4), Stored::default());
    cluster.applied.insert(n(4), Vec::new());
    cluster.replicas.insert(n(4), Replica::new(config, Stored::default(), cluster.now_us));
    cluster.propose(leader, "after");
    cluster.run_until(|cluster| cluster.commands(n(4)).last() == Some(&bytes("after")));
    assert_eq!(cluster.restored[&n(4)], vec![snapshot.slot]);
    assert_eq!(cluster.replicas[&n(4)].membership(), &target);
    assert!(cluster.replicas[&n(4)].is_learner());
    assert_eq!(cluster.stored[&n(4)].snapshot.as_ref().unwrap().membership.as_ref(), Some(&target));
    // It can now be promoted and vote like anyone.
    cluster.reconfigure_while_writing(&membership(&[1, 2, 4], &[]), &mut written);
    cluster.run_until(|cluster| cluster.replicas[&n(4)].is_voter());
}

/// A restarted replica recovers the configuration in effect from its log
/// and, once compacted, from its snapshot, whatever its `Config` says.
#[test]
fn membership_restart_recovers_the_new_configuration() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    cluster.elect();
    let mut written = Vec::new();
    cluster.join(n(4));
    let target = membership(&[1, 2, 4], &[]);
    cluster.reconfigure_while_writing(&membership(&[1, 2, 3], &[4]), &mut written);
    cluster.reconfigure_while_writing(&membership(&[1, 2, 3, 4], &[]), &mut written);
    cluster.reconfigure_while_writing(&target, &mut written);
    // The chosen index is persisted lazily: wait until n2's and n4's stores
    // say the change is chosen (later writes carry it).
    let changed_at = cluster.replicas[&n(1)].chosen();
    cluster.run_while_writing(&mut written, |cluster| {
        [2, 4].iter().all(|id| cluster.stored[&n(*id)].hard_state.chosen >= changed_at)
    });
    // From the log: n2's Config still names n3 as a voter, n4's names it a learner.
    for node in [n(2), n(4)] {
        cluster.crash(node);
        cluster.restart(node);
        assert_eq!(cluster.replicas[&node].membership(), &target, "{node} from its log");
    }
    assert!(cluster.replicas[&n(4)].is_voter());
    // From the snapshot: compact everything, restart again.
    cluster.run_until(|cluster| cluster.replicas[&n(2)].applied() == cluster.replicas[&n(1)].chosen());
    cluster.compact(n(2), b"registers");
    assert!(cluster.stored[&n(2)].entries.iter().all(|entry| !matches!(entry.value, Value::Reconfigure(_))));
    cluster.crash(n(2));
    cluster.restart(n(2));
    assert_eq!(cluster.replicas[&n(2)].membership(), &target, "from its snapshot");
    // And the restarted replicas work in the new configuration.
    cluster.crash(n(1));
    let leader = cluster.elect();
    assert!([n(2), n(4)].contains(&leader));
    cluster.propose(leader, "after the restarts");
    cluster.run_until(|cluster| {
        [2, 4].iter().all(|id| cluster.commands(n(*id)).last() == Some(&bytes("after the restarts")))
    });
    cluster.assert_logs_agree();
}

/// Phase 1 covers every configuration that may govern a slot above the
/// chosen index: with an accepted but not known chosen change adding n4 in
/// its log, a candidate needs a majority of the old voters and of the new.
#[test]
fn membership_phase1_needs_majorities_of_old_and_new_configurations() {
    let mut cluster = Cluster::new(3, Some(n(1)));
    let leader = cluster.elect();
    cluster.propose(leader, "a");
    cluster.deliver_all();
    cluster.join(n(4));
    cluster.reconfigure_while_writing(&membership(&[1, 2, 3], &[4]), &mut Vec::new());
    cluster.run_until(|cluster| cluster.replicas[&n(4)].applied() == cluster.replicas[&leader].chosen());
    // The promotion reaches n2 only, then the leader dies: nobody knows it is chosen.
    cluster.cut.extend([n(3), n(4)]);
    cluster.replica(leader).propose_membership(membership(&[1, 2, 3, 4], &[])).unwrap();
    cluster.deliver_all();
    let promotion = cluster.replicas[&n(2)].chosen().next();
    assert!(matches!(cluster.replicas[&n(2)].entry(promotion), Some((_, Value::Reconfigure(_)))));
    cluster.crash(leader);
    // n2 and n3 are a majority of the old voters, but not of the new ones without n4.
    cluster.cut.remove(&n(3));
    for _ in 0..300 {
        cluster.tick_all(RTT_US);
    }
    assert!(cluster.replicas.get(&n(2)).is_some_and(|replica| replica.role() != RoleKind::Leader));
    assert!(cluster.leader().is_none(), "no candidate completes phase 1 without a majority of 1, 2, 3, 4");
    cluster.cut.clear();
    let next = cluster.elect();
    cluster.run_until(|cluster| cluster.replicas[&next].membership() == &membership(&[1, 2, 3, 4], &[]));
    cluster.assert_logs_agree();
}

/// Every replica of `cluster` restarted (nothing is stored yet) sending its
/// accepts before its own log write (`Config::early_accepts`).
fn with_early_accepts(cluster: &mut Cluster, planted: bool) {
    for node in cluster.replicas.keys().copied().collect::<Vec<_>>() {
        let config = cluster.configs.get_mut(&node).unwrap();
        config.early_accepts = true;
        config.faults.own_vote_before_durable = planted;
        cluster.restart(node);
    }
}

fn promise_durable(replica: &mut Replica) {
    let promised = replica.promised();
    let hard_state = HardState { promised, chosen: Slot::ZERO };
    replica.persisted(&Persist { hard_state: Some(hard_state), sync: true, ..Persist::default() });
}

/// *Paxos Made Live* §4.2: a leader's accepts leave before its own log
/// write; a follower's acceptance alone is not a majority of three, so the
/// slot is chosen only once the runtime says the leader's write is durable
/// (and, planted, a leader that counts its own vote at once chooses it on
/// a write that a crash could still lose).
#[test]
fn a_leader_sending_accepts_early_counts_its_own_vote_only_once_durable() {
    for planted in [false, true] {
        let mut cluster = Cluster::new(3, Some(n(1)));
        with_early_accepts(&mut cluster, planted);
        let leader = cluster.elect();
        promise_durable(cluster.replica(leader));
        let before = cluster.replica(leader).chosen();
        cluster.propose(leader, "x");
        let ready = cluster.replica(leader).take_ready();
        assert!(ready.accepts_early, "the promise of its ballot is durable");
        let slot = ready.persist.entries.last().expect("the leader's own acceptance").slot;
        assert!(slot > before);
        let follower = if leader == n(2) { n(3) } else { n(2) };
        let accept = ready.send.iter().find(|envelope| envelope.to == follower).expect("an accept").clone();
        assert!(accept.message.may_precede_persist());
        let now = cluster.now_us;
        cluster.replica(follower).step(now, accept);
        let answer = cluster.replica(follower).take_ready();
        for envelope in answer.send.into_iter().filter(|envelope| envelope.to == leader) {
            cluster.replica(leader).step(now, envelope);
        }
        let chosen_early = cluster.replica(leader).chosen() >= slot;
        assert_eq!(chosen_early, planted, "chosen on one follower's vote before the leader's write was durable");
        cluster.replica(leader).persisted(&ready.persist);
        assert!(cluster.replica(leader).chosen() >= slot, "chosen once the leader's write is durable");
    }
}

/// A single voter elects itself in the Ready that first persists its
/// promise: that Ready's accepts must wait for the persist (a crash before
/// it would let the restarted node take the same ballot again); later
/// ones may leave early.
#[test]
fn a_single_voter_sends_no_accept_early_before_its_promise_is_durable() {
    let mut config = Config::new(GROUP, n(1), vec![n(1)], RTT_US);
    config.learners = vec![n(2)];
    config.early_accepts = true;
    let mut replica = Replica::new(config.clone(), Stored::default(), 0);
    let mut now = 0;
    let election = loop {
        now += RTT_US;
        replica.tick(now);
        let ready = replica.take_ready();
        if ready.became_leader.is_some() {
            break ready;
        }
        assert!(now < 100 * config.election_timeout_us, "no election");
    };
    assert!(!election.accepts_early, "its promise is in this very Ready");
    replica.persisted(&election.persist);
    replica.propose(b"x".to_vec()).unwrap();
    let next = replica.take_ready();
    assert!(next.accepts_early);
    assert!(next.send.iter().any(|envelope| envelope.message.may_precede_persist()));
}
