//! One simulated run: setup, run, check (FoundationDB's workload shape).
//!
//! Setup builds the standard topology (three regions of three nodes), three
//! Multi-Paxos groups over it, clients, and a fault schedule drawn from the
//! seed. The run has two phases: a fault phase (crashes and restarts,
//! partitions, loss, duplication, reordering, clock drift, pauses of a
//! node while its clock runs on) and a quiet phase
//! (everything healed and restarted) in which every group must make progress
//! again. About half of the seeds also move a voter to another region
//! through membership changes (`reconfigure.rs`), across both phases.
//! Invariants are checked at every apply, restore and election; client
//! histories are checked for linearizability at the end.
//!
//! Persistence is modelled: what a node hands over in a Ready's `persist`
//! becomes durable after the node's fsync delay, Readies complete in order,
//! and their messages leave and their entries are applied only then. A
//! write that needs no fsync (`Persist::sync` false: a learner's copy of the
//! log) waits for none and becomes durable with the next synced one
//! (`disk::Stores`). A crash drops everything not yet durable; the node
//! restarts from its durable store.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use geodb_geo::paxos::{
    Config, Envelope, GroupId, Membership, MultiPaxos, NodeReady, ProposeError, ReadOutcome, Ready, Slot, Snapshot,
    Stored, Value,
};
use geodb_geo::{LatencyMatrix, NodeId};
use rand::Rng;

use crate::clock::{Clock, DRIFT_PPM_DEFAULT, DRIFT_PPM_MAX};
use crate::invariants::Invariants;
use crate::linearizability::{OPERATIONS_PER_KEY_MAX, Operation, is_linearizable};
use crate::network::{Network, NetworkConfig, Partition};
use crate::register::{Command, Op, Output, Registers};
use crate::scheduler::Scheduler;

mod checks;
mod faults;
mod reconfigure;
mod workload;

/// Faults planted in the runtime on purpose, to prove the checks catch them.
/// Test-only: no real runtime has these switches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Acceptors send `Promise` and `Accepted` as soon as the replica hands
    /// them over, before the matching `persist` is durable.
    pub ack_before_persist: bool,
    /// The runtime tells a client its write succeeded as soon as the leader
    /// queued it, before it is chosen. Only the linearizability check can
    /// see this one: every replica still agrees on every slot.
    pub ack_write_before_commit: bool,
    /// Replicas keep using a lease after it expired by their own clock
    /// (`paxos::ReplicaFaults::lease_past_expiry`): a leader stalled past
    /// its lease serves stale reads. Only the linearizability check can see
    /// this one.
    pub lease_past_expiry: bool,
    /// Leaders whose accepts go out before their own disk write count
    /// their own vote before it is durable
    /// (`paxos::ReplicaFaults::own_vote_before_durable`).
    pub own_vote_before_durable: bool,
    /// Quiet replicas sleep through what should wake them
    /// (`paxos::ReplicaFaults::quiet_deaf`): a group whose leader's node
    /// went down or restarted while it was quiet never elects again. Only
    /// the liveness check can see this one.
    pub quiet_deaf: bool,
    /// Acceptors write their votes without an fsync of their own
    /// (`paxos::ReplicaFaults::votes_unsynced`), as only learners may.
    pub votes_unsynced: bool,
}

/// What a run looks like; everything else is drawn from the seed.
#[derive(Clone, Debug)]
pub struct Options {
    pub faults: Faults,
    /// Length of the fault phase, simulated.
    pub fault_phase_us: u64,
    /// Length of the quiet phase that follows, simulated.
    pub quiet_phase_us: u64,
    /// The standard latency matrix is divided by this.
    pub latency_divisor: u64,
    /// Most operations issued per register (the checker's history bound).
    pub operations_per_key_max: usize,
    /// Clocks run at rates within ± this many parts per million of true
    /// time. Leases hold within ±8 % (`paxos::LEASE_PERCENT`); beyond it the
    /// checks are expected to find stale reads.
    pub drift_ppm_max: i64,
    /// Print every event to stderr (for replaying a failing seed).
    pub trace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            faults: Faults::default(),
            fault_phase_us: 1_200_000,
            quiet_phase_us: 800_000,
            latency_divisor: 10,
            operations_per_key_max: 60,
            drift_ppm_max: DRIFT_PPM_DEFAULT,
            trace: false,
        }
    }
}

/// What a passing run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    pub events: u64,
    pub operations_ok: u64,
    pub operations_maybe: u64,
    pub reads_ok: u64,
    /// Reads asked of a leader that held a lease then (served without a
    /// round), and of one that did not.
    pub reads_under_lease: u64,
    pub reads_with_a_round: u64,
    pub leaders_elected: usize,
    pub slots_chosen: usize,
    pub crashes: u64,
    pub partitions: u64,
    /// Pauses of a node (its clock runs on, it does nothing), and of those
    /// the ones that struck a node holding a lease.
    pub pauses: u64,
    pub pauses_of_leaseholders: u64,
    /// R22: handovers to another voter started at runtime
    /// (`Replica::prefer` said yes).
    pub transfers_started: u64,
    pub snapshots_installed: u64,
    pub messages_sent: u64,
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    /// Membership changes seen chosen (a `Reconfigure` applied at a new slot).
    pub reconfigurations: u64,
    /// Voter moves carried through to the old voter's retirement.
    pub moves_completed: u64,
    /// Replicas that fell quiet (`paxos::Config::quiesce`), and woke.
    pub quiet_spells: u64,
    pub quiet_wakes: u64,
    /// Writes handed to the disk without an fsync of their own (a learner's
    /// copy of the log, chosen entries caught up) that a crash then lost.
    pub unsynced_lost: u64,
    /// A digest of every event's time and kind: equal digests, equal runs.
    pub trace_digest: u64,
}

/// A failing run: its seed, what broke, and how to replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub message: String,
    pub replay: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed: {}\nreplay: {}\n(add --trace to print every event)",
            self.seed, self.message, self.replay
        )
    }
}

/// The one-line command that replays `seed` with `options`.
pub fn replay_command(seed: u64, options: &Options) -> String {
    let mut command = format!("cargo run -p geodb-sim -- --seed {seed}");
    if options.faults.ack_before_persist {
        command.push_str(" --ack-before-persist");
    }
    if options.faults.ack_write_before_commit {
        command.push_str(" --ack-write-before-commit");
    }
    if options.faults.lease_past_expiry {
        command.push_str(" --lease-past-expiry");
    }
    if options.faults.own_vote_before_durable {
        command.push_str(" --own-vote-before-durable");
    }
    if options.faults.quiet_deaf {
        command.push_str(" --quiet-deaf");
    }
    if options.faults.votes_unsynced {
        command.push_str(" --votes-unsynced");
    }
    if options.drift_ppm_max != Options::default().drift_ppm_max {
        command.push_str(&format!(" --drift-ppm {}", options.drift_ppm_max));
    }
    if options.fault_phase_us != Options::default().fault_phase_us {
        command.push_str(&format!(" --fault-phase-ms {}", options.fault_phase_us / 1_000));
    }
    command
}

/// Node ticks: the shortest heartbeat interval is two ticks. Ticks and
/// heartbeats are most of a run's events, so this sets the simulator's speed.
const TICK_US: u64 = 2_000;
/// Replicas compact after applying this many slots beyond their snapshot,
/// small so that snapshots and catch-up from them happen in every run.
const COMPACT_AFTER_SLOTS: u64 = 16;
/// Bytes of one snapshot chunk (the server's is 4 MiB): small enough that
/// every snapshot the run takes travels in several chunks.
const SNAPSHOT_CHUNK_BYTES: usize = 32;
/// Keys per group and clients per group: enough load that writes are often in
/// flight when faults strike, while each key's history stays small to check.
const KEYS_PER_GROUP: u64 = 8;
const CLIENTS_PER_GROUP: usize = 3;
/// Share of a key's operation budget (percent) the fault phase may use; the
/// rest proves progress in the quiet phase.
const FAULT_PHASE_BUDGET_PERCENT: usize = 75;
const _: () = assert!(FAULT_PHASE_BUDGET_PERCENT <= 100);
const NODES_PER_REGION: u64 = 3;
/// What a paused node would have done happens within this long after the
/// pause ends, in an order drawn from the seed.
const PAUSE_RESUME_SPREAD_US: u64 = 500;

#[derive(Debug)]
enum Event {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Deliver(Envelope),
    SyncDone {
        node: NodeId,
        incarnation: u64,
    },
    /// Crash these nodes now.
    Crash {
        nodes: Vec<NodeId>,
    },
    /// Crash a node (or a whole region) while it has writes in flight to disk.
    CrashWhileSyncing {
        region: Option<usize>,
        attempts_left: u32,
    },
    Restart {
        node: NodeId,
    },
    Partition {
        id: u64,
    },
    Heal {
        id: u64,
    },
    /// The node stalls (a stop-the-world pause, a starved process): its
    /// clock runs on, and whatever it would do meanwhile waits until the
    /// pause ends, then happens in an order drawn from the seed.
    Pause {
        node: NodeId,
        duration_us: u64,
    },
    /// A pause aimed at a node holding a lease, if any does now.
    PauseLeaseholder {
        duration_us: u64,
    },
    ClientStep {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        op_id: u64,
    },
    QuietPhase,
    /// The operator moving a voter looks at the cluster (`reconfigure.rs`).
    Operator,
    /// R22: whoever leads a group is asked to hand its leadership to
    /// another voter (`Replica::prefer`), as the host does when one node
    /// sends most of a shard's requests.
    Prefer {
        group: usize,
        pick: u64,
    },
}

/// A group as the operator sees it: its configuration is the latest one
/// seen chosen (applied somewhere), starting with the initial one.
struct GroupSpec {
    id: GroupId,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
    preferred: NodeId,
    /// The slot of the latest `Reconfigure` seen chosen (zero: the initial configuration).
    membership_slot: Slot,
}

struct SimNode {
    region: usize,
    up: bool,
    incarnation: u64,
    clock: Clock,
    /// Paused until then (true time; zero: not paused).
    paused_until_us: u64,
    /// When the pause ends, the clients' requests that waited are served
    /// before anything else that waited (drawn per pause: a runtime may
    /// well poll its client sockets first, and lease bugs hide there).
    resume_clients_first: bool,
    disk: crate::disk::Disk,
    paxos: MultiPaxos,
    stores: crate::disk::Stores,
    /// Each group's snapshot chunks by slot and index, as its state machine
    /// stores them (durable: a crash keeps them).
    chunks: BTreeMap<GroupId, BTreeMap<(Slot, u64), Vec<u8>>>,
    syncing: VecDeque<NodeReady>,
    registers: BTreeMap<GroupId, Registers>,
}

struct Client {
    group: usize,
    target: NodeId,
    planned: Option<(u64, Op)>,
    waiting: Option<u64>,
}

struct Pending {
    client: usize,
    group: GroupId,
    key: u64,
    node: NodeId,
    incarnation: u64,
    call_us: u64,
    op: Op,
    /// Index into the key's history (writes and CAS are recorded at call time).
    history_index: Option<usize>,
}

struct World {
    options: Options,
    scheduler: Scheduler<Event>,
    network: Network,
    nodes: BTreeMap<NodeId, SimNode>,
    groups: Vec<GroupSpec>,
    configs: BTreeMap<(NodeId, GroupId), Config>,
    clients: Vec<Client>,
    pending: BTreeMap<u64, Pending>,
    history: BTreeMap<(GroupId, u64), Vec<Operation>>,
    issued: BTreeMap<(GroupId, u64), usize>,
    invariants: Invariants,
    planned_partitions: BTreeMap<u64, Partition>,
    moves: Vec<reconfigure::Move>,
    next_op_id: u64,
    quiet: bool,
    completed_in_quiet: BTreeSet<GroupId>,
    /// Per group: its clients pause until then (an idle spell in which the
    /// group falls quiet, `paxos::Config::quiesce`, while faults go on).
    idle_until_us: Vec<u64>,
    report: Report,
    failure: Option<String>,
}

/// Runs one seed to the end and checks it.
pub fn run_seed(seed: u64, options: &Options) -> Result<Report, Failure> {
    let mut world = World::new(seed, options.clone());
    world.run().map_err(|message| Failure { seed, message, replay: replay_command(seed, options) })
}

impl World {
    fn new(seed: u64, options: Options) -> Self {
        assert!(
            options.operations_per_key_max <= OPERATIONS_PER_KEY_MAX,
            "the checker takes at most {OPERATIONS_PER_KEY_MAX} operations per key"
        );
        let mut scheduler = Scheduler::new(seed);
        let matrix = LatencyMatrix::standard();
        let regions = matrix.regions.len() as u64;
        let node_ids: Vec<NodeId> = (1..=regions * NODES_PER_REGION).map(NodeId).collect();
        let region_of: BTreeMap<NodeId, usize> =
            node_ids.iter().map(|node| (*node, ((node.0 - 1) / NODES_PER_REGION) as usize)).collect();
        let base_one_way_us = matrix.rtt_us[0][0] / 2 / options.latency_divisor;
        let network_config = NetworkConfig {
            loss: scheduler.between(0, 5_000),
            duplicate: scheduler.between(0, 5_000),
            jitter_us_max: base_one_way_us * scheduler.between(0, 4),
            latency_divisor: options.latency_divisor,
        };
        let network = Network::new(matrix, region_of.clone(), network_config);

        // Zone survival in us-east and in eu-west (three voters at home, a
        // learner in each other region); region survival over all three
        // regions with its leader kept in us-east (the region survival goal).
        let n = NodeId;
        let groups = vec![
            GroupSpec {
                id: GroupId(1),
                voters: vec![n(1), n(2), n(3)],
                learners: vec![n(6), n(9)],
                preferred: n(1),
                membership_slot: Slot::ZERO,
            },
            GroupSpec {
                id: GroupId(2),
                voters: vec![n(7), n(8), n(9)],
                learners: vec![n(3), n(6)],
                preferred: n(8),
                membership_slot: Slot::ZERO,
            },
            GroupSpec {
                id: GroupId(3),
                voters: vec![n(1), n(2), n(4), n(5), n(7)],
                learners: Vec::new(),
                preferred: n(1),
                membership_slot: Slot::ZERO,
            },
        ];
        let mut invariants = Invariants::default();
        for group in &groups {
            invariants.on_group(group.id, Membership::new(group.voters.clone(), group.learners.clone()));
        }

        let mut configs = BTreeMap::new();
        for group in &groups {
            let rtt_us = group
                .voters
                .iter()
                .flat_map(|a| group.voters.iter().map(|b| network.rtt_us(*a, *b)))
                .max()
                .unwrap_or(0);
            let early_accepts = scheduler.chance(75_000);
            let quiesce = scheduler.chance(75_000);
            for member in group.voters.iter().chain(&group.learners) {
                let mut config = Config::new(group.id, *member, group.voters.clone(), rtt_us);
                config.learners = group.learners.clone();
                config.heartbeat_interval_us = (2 * rtt_us).max(2 * TICK_US);
                config.election_timeout_us = 5 * config.heartbeat_interval_us;
                config.placement_delay_us = 5 * config.heartbeat_interval_us;
                config.preferred_leader = Some(group.preferred);
                // Snapshots of a few KiB travel in many chunks, so that
                // chunked transfer runs under every fault.
                config.snapshot_chunk_bytes = SNAPSHOT_CHUNK_BYTES;
                config.seed = scheduler.rng().random();
                config.faults.lease_past_expiry = options.faults.lease_past_expiry;
                config.faults.own_vote_before_durable = options.faults.own_vote_before_durable;
                // As the server's shards: accepts go out beside the
                // leader's disk write (in most groups: both ways are run).
                config.early_accepts = early_accepts;
                // As the server's shards: idle groups fall quiet (most
                // groups; the workload leaves them idle now and then).
                config.quiesce = quiesce;
                config.faults.quiet_deaf = options.faults.quiet_deaf;
                config.faults.votes_unsynced = options.faults.votes_unsynced;
                configs.insert((*member, group.id), config);
            }
        }

        let mut nodes = BTreeMap::new();
        let drift_max = options.drift_ppm_max.clamp(0, DRIFT_PPM_MAX);
        for node in &node_ids {
            let clock = Clock {
                offset_us: scheduler.between(0, 1_000_000),
                drift_ppm: scheduler.between(0, 2 * drift_max as u64) as i64 - drift_max,
            };
            // Most disks are fast; some are slow, which keeps acknowledged but
            // not yet durable state around for crashes to find.
            let fsync_us =
                if scheduler.chance(70_000) { scheduler.between(50, 500) } else { scheduler.between(1_000, 5_000) };
            nodes.insert(
                *node,
                SimNode {
                    region: region_of[node],
                    up: false,
                    incarnation: 0,
                    clock,
                    paused_until_us: 0,
                    resume_clients_first: false,
                    disk: crate::disk::Disk::new(fsync_us),
                    paxos: MultiPaxos::new(*node, 0),
                    stores: crate::disk::Stores::default(),
                    chunks: BTreeMap::new(),
                    syncing: VecDeque::new(),
                    registers: BTreeMap::new(),
                },
            );
        }

        let group_count = groups.len();
        let clients = (0..groups.len() * CLIENTS_PER_GROUP)
            .map(|index| {
                let group = index % groups.len();
                Client { group, target: groups[group].preferred, planned: None, waiting: None }
            })
            .collect();

        World {
            options,
            scheduler,
            network,
            nodes,
            groups,
            configs,
            clients,
            pending: BTreeMap::new(),
            history: BTreeMap::new(),
            issued: BTreeMap::new(),
            invariants,
            planned_partitions: BTreeMap::new(),
            moves: Vec::new(),
            next_op_id: 1,
            quiet: false,
            completed_in_quiet: BTreeSet::new(),
            idle_until_us: vec![0; group_count],
            report: Report { seed, trace_digest: 0xcbf2_9ce4_8422_2325, ..Report::default() },
            failure: None,
        }
    }

    fn run(&mut self) -> Result<Report, String> {
        let node_ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for node in &node_ids {
            self.restart(*node);
        }
        for client in 0..self.clients.len() {
            let start = self.scheduler.between(0, 20_000);
            self.scheduler.at(start, Event::ClientStep { client });
        }
        self.plan_faults(&node_ids);
        self.plan_move(self.report.seed);
        self.plan_handovers(self.report.seed);
        let fault_end = self.options.fault_phase_us;
        let end = fault_end + self.options.quiet_phase_us;
        self.scheduler.at(fault_end, Event::QuietPhase);
        while let Some(event) = self.scheduler.next_until(end) {
            self.handle(event);
            if let Some(message) = self.failure.take() {
                return Err(format!("{message} (at {} us)", self.scheduler.now_us()));
            }
        }
        for sim_node in self.nodes.values() {
            let (spells, wakes) = sim_node.paxos.quiet_counts();
            self.report.quiet_spells += spells;
            self.report.quiet_wakes += wakes;
        }
        self.check_liveness()?;
        self.check_histories()?;
        self.report.events = self.scheduler.events_run();
        self.report.leaders_elected = self.invariants.leaders_elected();
        self.report.slots_chosen = self.invariants.slots_chosen();
        Ok(self.report.clone())
    }

    fn fail(&mut self, result: Result<(), String>) {
        if let Err(message) = result
            && self.failure.is_none()
        {
            self.failure = Some(message);
        }
    }

    // --- events ------------------------------------------------------------------

    fn handle(&mut self, event: Event) {
        let now = self.scheduler.now_us();
        if self.options.trace {
            eprintln!("{now:>9} us  {event:?}");
        }
        let kind: u64 = match &event {
            Event::Tick { node, .. } => node.0,
            Event::Deliver(envelope) => 100 + envelope.to.0 * 10 + envelope.from.0,
            Event::SyncDone { node, .. } => 200 + node.0,
            Event::Crash { nodes } => 300 + nodes.len() as u64,
            Event::CrashWhileSyncing { .. } => 400,
            Event::Restart { node } => 500 + node.0,
            Event::Partition { id } | Event::Heal { id } => 600 + id,
            Event::Pause { node, .. } => 1000 + node.0,
            Event::PauseLeaseholder { .. } => 1100,
            Event::ClientStep { client } | Event::ClientTimeout { client, .. } => 700 + *client as u64,
            Event::QuietPhase => 800,
            Event::Operator => 900,
            Event::Prefer { .. } => 1200,
        };
        for word in [now, kind] {
            // FNV-1a, word at a time: cheap and stable.
            self.report.trace_digest = (self.report.trace_digest ^ word).wrapping_mul(0x0100_0000_01b3);
        }
        // What a paused node would do waits until the pause ends; the waiting
        // events then happen in an order drawn from the seed (a timer and a
        // socket become ready together after a stall, in no set order).
        let target = match &event {
            Event::Tick { node, .. } | Event::SyncDone { node, .. } => Some(*node),
            Event::Deliver(envelope) => Some(envelope.to),
            Event::ClientStep { client } => Some(self.clients[*client].target),
            _ => None,
        };
        if let Some(node) = target
            && self.nodes[&node].paused_until_us > now
        {
            let sim_node = &self.nodes[&node];
            let after = if sim_node.resume_clients_first && !matches!(event, Event::ClientStep { .. }) {
                self.scheduler.between(PAUSE_RESUME_SPREAD_US, 2 * PAUSE_RESUME_SPREAD_US)
            } else {
                self.scheduler.between(0, PAUSE_RESUME_SPREAD_US)
            };
            self.scheduler.at(sim_node.paused_until_us + after, event);
            return;
        }
        match event {
            Event::Tick { node, incarnation } => {
                let sim_node = self.nodes.get_mut(&node).expect("known node");
                if !sim_node.up || sim_node.incarnation != incarnation {
                    return;
                }
                let local = sim_node.clock.local_us(now);
                sim_node.paxos.tick(local);
                self.scheduler.after(TICK_US, Event::Tick { node, incarnation });
                self.drive(node);
            }
            Event::Deliver(envelope) => {
                let to = envelope.to;
                if self.network.is_blocked(envelope.from, to) {
                    return;
                }
                let sim_node = self.nodes.get_mut(&to).expect("known node");
                if !sim_node.up {
                    return;
                }
                let local = sim_node.clock.local_us(now);
                sim_node.paxos.step(local, envelope);
                self.drive(to);
            }
            Event::SyncDone { node, incarnation } => {
                let sim_node = &self.nodes[&node];
                if !sim_node.up || sim_node.incarnation != incarnation {
                    return;
                }
                self.sync_done(node);
            }
            Event::Crash { nodes } => {
                for node in nodes {
                    self.crash(node);
                }
            }
            Event::CrashWhileSyncing { region, attempts_left } => self.crash_while_syncing(region, attempts_left),
            Event::Restart { node } => {
                if !self.nodes[&node].up {
                    self.restart(node);
                }
            }
            Event::Partition { id } => {
                if !self.quiet {
                    let partition = self.planned_partitions[&id].clone();
                    self.network.partition(id, partition);
                    self.report.partitions += 1;
                }
            }
            Event::Heal { id } => self.network.heal(id),
            Event::Pause { node, duration_us } => self.pause(node, duration_us),
            Event::PauseLeaseholder { duration_us } => {
                let holders: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, sim_node)| {
                        let local = sim_node.clock.local_us(now);
                        sim_node.up && sim_node.paxos.groups().any(|(_, replica)| replica.has_lease(local))
                    })
                    .map(|(node, _)| *node)
                    .collect();
                if !holders.is_empty() {
                    let node = holders[self.scheduler.between(0, holders.len() as u64 - 1) as usize];
                    self.report.pauses_of_leaseholders += 1;
                    self.pause(node, duration_us);
                }
            }
            Event::Prefer { group, pick } => self.prefer(group, pick),
            Event::ClientStep { client } => self.client_step(client),
            Event::ClientTimeout { client, op_id } => {
                if self.pending.remove(&op_id).is_some() {
                    // The outcome stays unknown: a write or CAS keeps its call
                    // and no return in the history; a read is simply dropped.
                    self.report.operations_maybe += 1;
                    self.clients[client].waiting = None;
                    // Try another voter: the one asked may be stalled or cut off.
                    let voters = &self.groups[self.clients[client].group].voters;
                    let pick = self.scheduler.between(0, voters.len() as u64 - 1) as usize;
                    self.clients[client].target = voters[pick];
                    self.scheduler.after(1_000, Event::ClientStep { client });
                }
            }
            Event::QuietPhase => {
                self.quiet = true;
                self.network.heal_all();
                self.network.config.loss = 0;
                self.network.config.duplicate = 0;
                let down: Vec<NodeId> = self.nodes.iter().filter(|(_, node)| !node.up).map(|(id, _)| *id).collect();
                for node in down {
                    self.restart(node);
                }
            }
            Event::Operator => self.operator_step(),
        }
    }

    fn crash(&mut self, node: NodeId) {
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        if !sim_node.up || self.quiet {
            return;
        }
        let down_us = self.scheduler.between(1_000, 400_000);
        self.scheduler.after(down_us, Event::Restart { node });
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        // Everything not yet durable is lost, and so is all volatile state.
        sim_node.up = false;
        sim_node.incarnation += 1;
        sim_node.syncing.clear();
        self.report.unsynced_lost += sim_node.stores.unsynced() as u64;
        sim_node.stores.crash();
        sim_node.registers.clear();
        let (spells, wakes) = sim_node.paxos.quiet_counts();
        self.report.quiet_spells += spells;
        self.report.quiet_wakes += wakes;
        sim_node.paxos = MultiPaxos::new(node, sim_node.incarnation);
        self.invariants.on_crash(node);
        self.report.crashes += 1;
    }

    fn restart(&mut self, node: NodeId) {
        let now = self.scheduler.now_us();
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        sim_node.up = true;
        sim_node.incarnation += 1;
        sim_node.paused_until_us = 0;
        sim_node.disk.restart(now);
        let local = sim_node.clock.local_us(now);
        let mut paxos = MultiPaxos::new(node, sim_node.incarnation);
        for group in &self.groups {
            if let Some(config) = self.configs.get(&(node, group.id)) {
                let stored = sim_node.stores.durable.entry(group.id).or_default().clone();
                // Only the stored snapshot's chunks are kept across a restart.
                let keep = stored.snapshot.as_ref().map(|snapshot| snapshot.slot);
                sim_node.chunks.entry(group.id).or_default().retain(|(slot, _), _| Some(*slot) == keep);
                paxos.add_group(config.clone(), stored, local);
                sim_node.registers.insert(group.id, Registers::default());
            }
        }
        sim_node.paxos = paxos;
        let incarnation = sim_node.incarnation;
        let first_tick = self.scheduler.between(1, TICK_US);
        self.scheduler.after(first_tick, Event::Tick { node, incarnation });
        self.drive(node);
    }

    /// Takes the node's outputs and starts making them durable.
    fn drive(&mut self, node: NodeId) {
        let now = self.scheduler.now_us();
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        if !sim_node.up {
            return;
        }
        let mut ready = sim_node.paxos.take_ready();
        if ready.is_empty() {
            return;
        }
        // A leader's accepts go out before its persist is durable where the
        // group allows it (`paxos::Config::early_accepts`).
        let mut early = Vec::new();
        for (_, group_ready) in ready.iter_mut() {
            early.extend(group_ready.take_early_sends());
        }
        let needs_sync = ready.iter().any(|(_, group_ready)| group_ready.persist.sync);
        let done_at = sim_node.disk.durable_at(now, needs_sync);
        let incarnation = sim_node.incarnation;
        if self.options.faults.ack_before_persist {
            for (_, group_ready) in ready.iter_mut() {
                let (acks, rest): (Vec<Envelope>, Vec<Envelope>) =
                    group_ready.send.drain(..).partition(|envelope| envelope.message.is_acceptor_ack());
                group_ready.send = rest;
                early.extend(acks);
            }
        }
        let mut leaders = Vec::new();
        for (group, group_ready) in &ready {
            if let Some(ballot) = group_ready.became_leader {
                leaders.push((*group, ballot));
            }
        }
        let immediate = done_at == now && sim_node.syncing.is_empty();
        sim_node.syncing.push_back(ready);
        if !immediate {
            self.scheduler.at(done_at, Event::SyncDone { node, incarnation });
        }
        for (group, ballot) in leaders {
            if self.options.trace {
                eprintln!("{now:>9} us  {node} leads {group} in {ballot}");
            }
            let result = self.invariants.on_leader(group, ballot, node);
            self.fail(result);
        }
        for envelope in early {
            self.transmit(envelope);
        }
        if immediate {
            // Nothing to make durable and nothing queued before it.
            self.sync_done(node);
        }
    }

    /// The oldest Ready of `node` is durable: persist, then send, then apply.
    fn sync_done(&mut self, node: NodeId) {
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        let mut ready = sim_node.syncing.pop_front().expect("a sync completes a queued Ready");
        // A replica retired since it handed this Ready over is gone, with its store.
        ready.retain(|(group, _)| *group == GroupId::NODE || self.configs.contains_key(&(node, *group)));
        sim_node.stores.write(&ready);
        for (group, group_ready) in &ready {
            sim_node.paxos.persisted(*group, &group_ready.persist);
        }
        for (_, group_ready) in ready.iter_mut() {
            for envelope in std::mem::take(&mut group_ready.send) {
                self.transmit(envelope);
            }
        }
        for (group, group_ready) in ready.iter_mut() {
            self.move_snapshot_chunks(node, *group, group_ready);
        }
        for (group, group_ready) in ready {
            if let Some(snapshot) = &group_ready.restore {
                self.restore(node, group, snapshot);
            }
            for committed in group_ready.apply {
                self.apply(node, group, committed.slot, &committed.value);
            }
            for read in group_ready.reads {
                self.complete_read(node, group, read.id, read.outcome);
            }
            self.maybe_compact(node, group);
        }
        self.drive(node);
    }

    fn transmit(&mut self, envelope: Envelope) {
        self.report.messages_sent += 1;
        let delivery = self.network.send(&mut self.scheduler, envelope.from, envelope.to, true);
        self.report.messages_lost += u64::from(delivery.lost);
        self.report.messages_duplicated += u64::from(delivery.duplicated);
        for delay in delivery.delays_us {
            self.scheduler.after(delay, Event::Deliver(envelope.clone()));
        }
    }

    /// Sends the chunks asked for, stores the chunks received and tells the
    /// replica, and drops the chunks of snapshots replaced on disk, as the
    /// real host does.
    fn move_snapshot_chunks(&mut self, node: NodeId, group: GroupId, ready: &mut Ready) {
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        let chunks = sim_node.chunks.entry(group).or_default();
        let mut outgoing = Vec::new();
        for send in std::mem::take(&mut ready.snapshot_sends) {
            let Some(data) = chunks.get(&(send.slot, send.index)).cloned() else { continue };
            outgoing.push(send.envelope(group, node, data));
        }
        for chunk in std::mem::take(&mut ready.snapshot_chunks) {
            if chunk.index == 0 {
                let keep = sim_node.paxos.group(group).map_or(Slot::ZERO, |replica| replica.snapshot_slot());
                chunks.retain(|(slot, _), _| *slot <= keep || *slot == chunk.slot);
            }
            chunks.insert((chunk.slot, chunk.index), chunk.data);
            sim_node.paxos.chunk_stored(group, chunk.slot, chunk.index);
        }
        if let Some(snapshot) = &ready.persist.snapshot {
            chunks.retain(|(slot, _), _| *slot >= snapshot.slot);
        }
        for envelope in outgoing {
            self.transmit(envelope);
        }
    }

    fn restore(&mut self, node: NodeId, group: GroupId, snapshot: &Snapshot) {
        let chunks = &self.nodes[&node].chunks[&group];
        let mut bytes = Vec::new();
        for index in 0..snapshot.chunks {
            match chunks.get(&(snapshot.slot, index)) {
                Some(chunk) => bytes.extend_from_slice(chunk),
                None => {
                    let missing =
                        format!("{node} {group}: chunk {index} of the snapshot at {} is missing", snapshot.slot);
                    self.fail(Err(missing));
                    return;
                }
            }
        }
        let registers = Registers::restore(snapshot.slot, &bytes);
        let digest = registers.digest();
        self.nodes.get_mut(&node).expect("known node").registers.insert(group, registers);
        self.report.snapshots_installed += 1;
        let result = self.invariants.on_restore(node, group, snapshot.slot, digest, snapshot.membership.as_ref());
        self.fail(result);
    }

    fn apply(&mut self, node: NodeId, group: GroupId, slot: Slot, value: &Value) {
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        let registers = sim_node.registers.get_mut(&group).expect("a hosted group");
        let mut outputs = Vec::new();
        if let Value::Batch(commands) = value {
            for bytes in commands {
                let command = Command::decode(bytes);
                outputs.push((command.op_id, registers.execute(&command)));
            }
        }
        registers.applied = slot;
        let digest = registers.digest();
        let result = self.invariants.on_apply(node, group, slot, value, digest);
        self.fail(result);
        if let Value::Reconfigure(membership) = value {
            self.observe_membership(group, slot, membership);
        }
        for (op_id, output) in outputs {
            self.complete(node, op_id, output);
        }
    }

    fn maybe_compact(&mut self, node: NodeId, group: GroupId) {
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        let Some(registers) = sim_node.registers.get(&group) else { return };
        let Some(replica) = sim_node.paxos.group(group) else { return };
        if registers.applied.0 >= replica.snapshot_slot().0 + COMPACT_AFTER_SLOTS {
            let (slot, bytes) = (registers.applied, registers.snapshot());
            let pieces: Vec<&[u8]> =
                if bytes.is_empty() { vec![&[]] } else { bytes.chunks(SNAPSHOT_CHUNK_BYTES).collect() };
            let chunks = sim_node.chunks.entry(group).or_default();
            for (index, piece) in pieces.iter().enumerate() {
                chunks.insert((slot, index as u64), piece.to_vec());
            }
            sim_node.paxos.compact(group, Snapshot::new(slot, pieces.len() as u64));
        }
    }
}
