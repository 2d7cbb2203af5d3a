//! The replication driver: runs a node's Multi-Paxos groups against real
//! disks, sockets and clocks.
//!
//! One thread per node owns the node's [`MultiPaxos`] and is the only
//! writer of its engine's replicated state. It loops:
//!
//! 1. take every input queued (messages from the transport, proposals and
//!    read barriers from transactions), and tick the groups on the clock;
//! 2. take the groups' Readies and make all their `persist` parts durable
//!    with **one** synced write ([`LogStore::write`]: group commit across
//!    groups);
//! 3. only then hand their messages to the transport (Paxos Made Live §5.1:
//!    an acceptor must not answer before what it answers is durable);
//! 4. restore snapshots and apply chosen commits to the shard's state
//!    machine ([`Shard::apply`]), waking the transactions that proposed
//!    them, and answer read barriers.
//!
//! A transaction sees the driver through [`GroupLog`], its shard's
//! [`CommitLog`]: `append` proposes the commit and `wait` blocks until the
//! driver applied it here; `barrier` is a read-index round.
//!
//! Failure rules:
//! - a proposal refused because this node does not lead answers
//!   [`geodb_txn::Error::NotLeader`] at once (nothing was proposed);
//! - a proposal in flight when the node stops leading answers
//!   [`geodb_txn::Error::OutcomeUnknown`]: another leader may still choose
//!   it. Its entry is applied wherever it is chosen, like any other;
//! - a failed log write stops the driver: a node that cannot make its
//!   promises durable must not take part any more (every waiter fails with
//!   `Unavailable`, `/readyz` turns unready). Restart recovers from the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use geodb_geo::NodeId;
use geodb_geo::paxos::{
    self, Envelope, GroupId, HardState, Membership, MultiPaxos, ProposeError, ReadOutcome, RoleKind, Snapshot, Stored,
    Value,
};
use geodb_storage::paxos_log::{GroupWrite, LogStore};
use geodb_storage::{ColumnFamily, Engine, Timestamp, snapshot};
use geodb_txn::{CommitEntry, CommitLog, PendingCommit, TxnManager};

/// How often the groups are ticked: a tenth of the shortest heartbeat the
/// configuration allows, and never slower than this.
pub const TICK_INTERVAL_MAX: Duration = Duration::from_millis(5);
/// Inputs taken per loop before the Readies are handled: bounds the time
/// between receiving a message and persisting what it caused.
const INPUTS_PER_ROUND_MAX: usize = 4096;
/// How long a transaction waits for its commit to be chosen and applied
/// before giving up with an unknown outcome (a leader cut off from its
/// quorum steps down well within this).
pub const COMMIT_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a coordinated transaction waits for its read barrier.
pub const BARRIER_WAIT_MAX: Duration = Duration::from_secs(10);
/// Inputs queued for the driver before new ones are refused: messages are
/// dropped (Paxos retransmits) and proposals answer `08006` (load shedding),
/// rather than letting a stalled driver's queue grow without bound.
pub const INPUT_QUEUE_MAX: usize = 65_536;
/// Column families a state-machine snapshot carries: the replicated data.
/// (`Meta` holds node-local allocators and is not replicated.)
const SNAPSHOT_FAMILIES: [ColumnFamily; 2] = [ColumnFamily::Data, ColumnFamily::Latest];

/// What the driver thread takes as input.
pub enum Input {
    /// A message from another node.
    Message(Envelope),
    /// A commit to propose, validated in leadership `epoch`; `reply`
    /// answers once it is applied here.
    Propose { group: GroupId, epoch: u64, seq: u64, command: Vec<u8>, reply: Sender<geodb_txn::Result<()>> },
    /// A read-index round; `reply` answers once this node may serve.
    Barrier { group: GroupId, reply: Sender<geodb_txn::Result<()>> },
    /// A membership change (one voter at a time); `reply` answers once it
    /// is chosen and applied here.
    Reconfigure { group: GroupId, membership: Membership, reply: ReconfigureReply },
    /// Stop the driver thread.
    Stop,
}

/// Why a membership change did not happen (or may not have).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    /// Retry (at the leader, or once the previous change is chosen).
    #[error("{0}")]
    Retry(String),
    /// The change itself is refused (more than one voter, malformed).
    #[error("{0}")]
    Invalid(String),
    /// Proposed, but leadership changed before it was chosen here.
    #[error("{0}")]
    Unknown(String),
}

/// Where a membership change's outcome goes.
pub type ReconfigureReply = Sender<Result<Membership, ReconfigureError>>;

/// What the rest of the node can see of a group.
#[derive(Clone, Debug, Default)]
pub struct GroupStatus {
    pub role: Option<RoleKind>,
    pub leader: Option<NodeId>,
    pub chosen: u64,
    pub applied: u64,
    pub snapshot_slot: u64,
    pub snapshots_installed: u64,
    /// The configuration in effect, as this replica knows it.
    pub membership: Membership,
    /// Set when the driver stopped on a storage failure.
    pub failed: Option<String>,
}

/// One group of a node: the group's configuration, its state machine
/// (a transaction manager over the node's engine) and its status.
pub struct GroupSpec {
    pub config: paxos::Config,
    pub txns: Arc<TxnManager>,
    /// Take a snapshot (and truncate the log) every this many applied slots.
    pub snapshot_interval: u64,
}

/// A running driver.
pub struct Driver {
    inputs: SyncSender<Input>,
    thread: Mutex<Option<JoinHandle<()>>>,
    statuses: Arc<Mutex<BTreeMap<GroupId, GroupStatus>>>,
}

/// Meta key of a group's last applied slot, written after each applied
/// round: a restart skips what the engine already holds.
fn applied_key(group: GroupId) -> Vec<u8> {
    let mut key = b"paxos/applied/".to_vec();
    key.extend_from_slice(&group.0.to_be_bytes());
    key
}

/// A command of a group's log: who proposed it (to wake the waiter) and
/// the commit itself.
fn encode_command(node: NodeId, seq: u64, entry: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entry.len());
    out.extend_from_slice(&node.0.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(entry);
    out
}

fn decode_command(bytes: &[u8]) -> Option<(NodeId, u64, &[u8])> {
    if bytes.len() < 16 {
        return None;
    }
    let node = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let seq = u64::from_be_bytes(bytes[8..16].try_into().ok()?);
    Some((NodeId(node), seq, &bytes[16..]))
}

/// A snapshot's bytes: the newest commit timestamp it holds, then the
/// exported column families.
fn encode_snapshot(last_ts: Timestamp, data: Vec<u8>) -> Vec<u8> {
    let mut out = last_ts.encode().to_vec();
    out.extend_from_slice(&data);
    out
}

impl Driver {
    /// Opens the log store, restores every group from it, and starts the
    /// driver thread on `receiver`. `send` hands messages to the transport;
    /// `inputs` is the sending side of `receiver` (transactions' logs hold
    /// clones of it).
    pub fn start(
        node: NodeId,
        engine: Arc<dyn Engine>,
        groups: Vec<GroupSpec>,
        send: Box<dyn Fn(Vec<Envelope>) + Send>,
        inputs: SyncSender<Input>,
        receiver: Receiver<Input>,
    ) -> Result<Arc<Driver>, String> {
        let store = LogStore::new(engine.clone()).map_err(|e| format!("cannot open the Paxos log: {e}"))?;
        let started = Instant::now();
        let mut paxos = MultiPaxos::new(node);
        let mut machines = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        for spec in groups {
            let group = spec.config.group;
            let stored = load(&store, group)?;
            let applied = match engine.get(ColumnFamily::Meta, &applied_key(group)) {
                Ok(Some(bytes)) => u64::from_be_bytes(
                    bytes.as_slice().try_into().map_err(|_| format!("{group}: corrupt applied index"))?,
                ),
                Ok(None) => 0,
                Err(e) => return Err(format!("{group}: cannot read the applied index: {e}")),
            };
            paxos.add_group(spec.config, stored, 0);
            spec.txns.shard().set_epoch(None);
            machines.insert(
                group,
                Machine { txns: spec.txns, applied, snapshot_interval: spec.snapshot_interval, epoch: None },
            );
            statuses.insert(group, GroupStatus::default());
        }
        let statuses = Arc::new(Mutex::new(statuses));
        let mut state = DriverState {
            node,
            paxos,
            store,
            engine,
            machines,
            send,
            started,
            proposals: HashMap::new(),
            barriers: HashMap::new(),
            leadership_barriers: HashMap::new(),
            reconfigurations: Vec::new(),
            next_read_id: 1,
            next_epoch: 1,
            statuses: statuses.clone(),
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("paxos-{node}"))
            .spawn(move || state.run(receiver))
            .map_err(|e| format!("cannot start the replication thread: {e}"))?;
        Ok(Arc::new(Driver { inputs, thread: Mutex::new(Some(thread)), statuses }))
    }

    /// The status of every group, as of the last round. A driver thread
    /// that ended without being stopped (a panic) reports every group failed.
    pub fn statuses(&self) -> BTreeMap<GroupId, GroupStatus> {
        let mut statuses = self.statuses.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let died = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_some_and(|thread| thread.is_finished());
        if died {
            for status in statuses.values_mut() {
                status.failed.get_or_insert_with(|| "the replication thread ended unexpectedly".into());
                status.leader = None;
            }
        }
        statuses
    }

    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        self.statuses().remove(&group)
    }

    pub fn inputs(&self) -> &SyncSender<Input> {
        &self.inputs
    }

    /// Stops the thread and waits for it.
    pub fn stop(&self) {
        let _ = self.inputs.send(Input::Stop);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

fn load(store: &LogStore, group: GroupId) -> Result<Stored, String> {
    let corrupt = |what: &str, e: postcard::Error| format!("{group}: corrupt {what} in the Paxos log: {e}");
    let raw = store.load(group.0).map_err(|e| format!("{group}: cannot read the Paxos log: {e}"))?;
    let hard_state = match raw.hard_state {
        Some(bytes) => postcard::from_bytes::<HardState>(&bytes).map_err(|e| corrupt("hard state", e))?,
        None => HardState::default(),
    };
    let snapshot = match raw.snapshot {
        Some((_, bytes)) => Some(postcard::from_bytes::<Snapshot>(&bytes).map_err(|e| corrupt("snapshot", e))?),
        None => None,
    };
    let entries = raw
        .entries
        .iter()
        .map(|(_, bytes)| postcard::from_bytes(bytes).map_err(|e| corrupt("entry", e)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Stored { hard_state, snapshot, entries })
}

/// The state machine of one group on this node.
struct Machine {
    txns: Arc<TxnManager>,
    /// The last slot applied to the engine (persisted under `applied_key`).
    applied: u64,
    snapshot_interval: u64,
    /// The leadership epoch granted to the shard, while this node leads
    /// and has applied everything chosen before its ballot.
    epoch: Option<u64>,
}

struct DriverState {
    node: NodeId,
    paxos: MultiPaxos,
    store: LogStore,
    engine: Arc<dyn Engine>,
    machines: BTreeMap<GroupId, Machine>,
    send: Box<dyn Fn(Vec<Envelope>) + Send>,
    started: Instant,
    /// Proposals of this node not yet applied, by (group, seq).
    proposals: HashMap<(GroupId, u64), Sender<geodb_txn::Result<()>>>,
    /// Read barriers in flight, by read id.
    barriers: HashMap<u64, (GroupId, Sender<geodb_txn::Result<()>>)>,
    /// The driver's own read-index round after becoming leader: when it
    /// completes, everything chosen before the ballot is applied here and
    /// the shard gets a new epoch.
    leadership_barriers: HashMap<u64, GroupId>,
    /// Membership changes this node proposed, not yet applied.
    reconfigurations: Vec<(GroupId, Membership, ReconfigureReply)>,
    next_read_id: u64,
    next_epoch: u64,
    statuses: Arc<Mutex<BTreeMap<GroupId, GroupStatus>>>,
    failed: Option<String>,
}

impl DriverState {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn run(&mut self, inputs: Receiver<Input>) {
        let tick = self
            .paxos
            .groups()
            .map(|(_, replica)| Duration::from_micros(replica.config().heartbeat_interval_us / 10))
            .min()
            .unwrap_or(TICK_INTERVAL_MAX)
            .clamp(Duration::from_micros(200), TICK_INTERVAL_MAX);
        let mut next_tick = Instant::now();
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match inputs.recv_timeout(timeout) {
                Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(input) => {
                    self.handle(input);
                    for _ in 0..INPUTS_PER_ROUND_MAX {
                        match inputs.try_recv() {
                            Ok(Input::Stop) => return,
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                let now = self.now_us();
                self.paxos.tick(now);
                next_tick = Instant::now() + tick;
            }
            if self.failed.is_none() {
                self.round();
            }
        }
    }

    fn handle(&mut self, input: Input) {
        if let Some(failure) = &self.failed {
            let error = || geodb_txn::Error::Unavailable(format!("replication stopped: {failure}"));
            match input {
                Input::Propose { reply, .. } | Input::Barrier { reply, .. } => {
                    let _ = reply.send(Err(error()));
                }
                Input::Reconfigure { reply, .. } => {
                    let _ = reply.send(Err(ReconfigureError::Retry(error().to_string())));
                }
                _ => {}
            }
            return;
        }
        let now = self.now_us();
        match input {
            Input::Message(envelope) => {
                if envelope.to == self.node {
                    self.paxos.step(now, envelope);
                }
            }
            Input::Propose { group, epoch, seq, command, reply } => {
                // Validated under another leadership (lost, maybe regained
                // since): its validation may have missed commits. Nothing is
                // proposed; the transaction fails cleanly.
                if self.machines.get(&group).and_then(|machine| machine.epoch) != Some(epoch) {
                    let leader = self.paxos.group(group).and_then(|replica| replica.leader()).map(|node| node.0);
                    let _ = reply.send(Err(geodb_txn::Error::NotLeader { leader }));
                    return;
                }
                match self.paxos.propose(group, command) {
                    Ok(()) => {
                        self.proposals.insert((group, seq), reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(refused(error)));
                    }
                }
            }
            Input::Barrier { group, reply } => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                match self.paxos.read_index(group, id) {
                    Ok(()) => {
                        self.barriers.insert(id, (group, reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(refused(error)));
                    }
                }
            }
            Input::Reconfigure { group, membership, reply } => {
                match self.paxos.propose_membership(group, membership.clone()) {
                    Ok(()) => self.reconfigurations.push((group, membership, reply)),
                    Err(error @ ProposeError::InvalidMembership { .. }) => {
                        let _ = reply.send(Err(ReconfigureError::Invalid(error.to_string())));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(ReconfigureError::Retry(refused(error).to_string())));
                    }
                }
            }
            Input::Stop => {}
        }
    }

    /// Persist, then send, then apply (see the module documentation).
    fn round(&mut self) {
        let readies = self.paxos.take_ready();
        if !readies.is_empty() {
            let writes: Vec<GroupWrite> = readies
                .iter()
                .filter(|(_, ready)| !ready.persist.is_empty())
                .map(|(group, ready)| group_write(*group, &ready.persist))
                .collect();
            if !writes.is_empty()
                && let Err(error) = self.store.write(&writes)
            {
                self.fail(format!("cannot persist the Paxos log: {error}"));
                return;
            }
            let mut outgoing = Vec::new();
            for (_, ready) in &readies {
                outgoing.extend(ready.send.iter().cloned());
            }
            if !outgoing.is_empty() {
                (self.send)(outgoing);
            }
            let mut elected = Vec::new();
            for (group, ready) in readies {
                if ready.became_leader.is_some() {
                    elected.push(group);
                }
                if let Err(error) = self.apply(group, ready) {
                    self.fail(format!("{group}: cannot apply to the state machine: {error}"));
                    return;
                }
            }
            for group in elected {
                self.start_leadership(group);
            }
        }
        self.track_leadership();
        self.maybe_compact();
        self.publish();
    }

    fn apply(&mut self, group: GroupId, ready: paxos::Ready) -> Result<(), String> {
        let machine = self.machines.get_mut(&group).expect("every group has a machine");
        let shard = machine.txns.shard();
        if let Some(snapshot) = ready.restore
            && snapshot.slot.0 > machine.applied
        {
            if snapshot.data.len() < Timestamp::ENCODED_LEN {
                return Err("snapshot too short".into());
            }
            let (ts, data) = snapshot.data.split_at(Timestamp::ENCODED_LEN);
            let last_ts = Timestamp::decode(ts).ok_or("snapshot timestamp")?;
            snapshot::import(self.engine.as_ref(), &SNAPSHOT_FAMILIES, data).map_err(|e| e.to_string())?;
            shard.restored(last_ts);
            machine.applied = snapshot.slot.0;
            let mut status = self.statuses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            status.entry(group).or_default().snapshots_installed += 1;
            metrics::counter!(crate::telemetry::names::PAXOS_SNAPSHOTS_INSTALLED, "node" => self.node.0.to_string())
                .increment(1);
        }
        // Committers are woken only once the whole Ready is applied.
        let mut woken = Vec::new();
        for committed in ready.apply {
            if committed.slot.0 <= machine.applied {
                continue;
            }
            if let Value::Reconfigure(membership) = &committed.value {
                tracing::info!(node = %self.node, %group, slot = %committed.slot, ?membership, "membership changed");
                self.reconfigurations.retain(|(waiting_group, wanted, reply)| {
                    if *waiting_group == group && wanted == membership {
                        let _ = reply.send(Ok(membership.clone()));
                        false
                    } else {
                        true
                    }
                });
            }
            if let Value::Batch(commands) = &committed.value {
                for (i, command) in commands.iter().enumerate() {
                    let Some((proposer, seq, entry)) = decode_command(command) else {
                        return Err(format!("slot {}: malformed command", committed.slot));
                    };
                    let mut entry = CommitEntry::decode(entry).map_err(|e| format!("slot {}: {e}", committed.slot))?;
                    if i + 1 == commands.len() {
                        // The slot's last commit carries the applied index, so
                        // the index is never ahead of (or behind) the data it
                        // names. Slots without commits leave it behind, which
                        // only replays them after a restart (applying a
                        // commit twice writes the same versions).
                        entry.batch.put(
                            ColumnFamily::Meta,
                            applied_key(group),
                            committed.slot.0.to_be_bytes().to_vec(),
                        );
                    }
                    shard.apply(entry).map_err(|e| e.to_string())?;
                    if proposer == self.node
                        && let Some(reply) = self.proposals.remove(&(group, seq))
                    {
                        woken.push(reply);
                    }
                }
            }
            machine.applied = committed.slot.0;
        }
        for reply in woken {
            let _ = reply.send(Ok(()));
        }
        for read in ready.reads {
            if let Some(group) = self.leadership_barriers.remove(&read.id) {
                let leads = self.paxos.group(group).is_some_and(|replica| replica.role() == RoleKind::Leader);
                if matches!(read.outcome, ReadOutcome::Ready { .. }) && leads {
                    let epoch = self.next_epoch;
                    self.next_epoch += 1;
                    let machine = self.machines.get_mut(&group).expect("every group has a machine");
                    machine.epoch = Some(epoch);
                    machine.txns.shard().set_epoch(Some(epoch));
                    tracing::info!(node = %self.node, %group, epoch, "leading and caught up: serving");
                }
                continue;
            }
            if let Some((_, reply)) = self.barriers.remove(&read.id) {
                let outcome = match read.outcome {
                    ReadOutcome::Ready { .. } => Ok(()),
                    ReadOutcome::Aborted => Err(geodb_txn::Error::NotLeader { leader: None }),
                };
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }

    /// This node was elected leader of `group`: it serves nothing until a
    /// read-index round shows everything chosen before its ballot applied
    /// here (its validation log and clock then cover the old leader's
    /// commits). A leadership regained between two rounds gets a new epoch.
    fn start_leadership(&mut self, group: GroupId) {
        let machine = self.machines.get_mut(&group).expect("every group has a machine");
        machine.epoch = None;
        machine.txns.shard().set_epoch(None);
        let id = self.next_read_id;
        self.next_read_id += 1;
        if self.paxos.read_index(group, id).is_ok() {
            self.leadership_barriers.insert(id, group);
        }
    }

    /// Groups this node stopped leading lose their epoch, and their
    /// proposals may or may not be chosen by the next leader: their
    /// callers learn the outcome is unknown.
    fn track_leadership(&mut self) {
        let mut unserved = Vec::new();
        for (group, machine) in &mut self.machines {
            let leads = self.paxos.group(*group).is_some_and(|replica| replica.role() == RoleKind::Leader);
            if !leads && machine.epoch.is_some() {
                machine.epoch = None;
                machine.txns.shard().set_epoch(None);
            }
            // A leader whose own read-index round was refused or aborted
            // (and that is still leader) tries again, or it would never serve.
            if leads && machine.epoch.is_none() && !self.leadership_barriers.values().any(|pending| pending == group) {
                unserved.push(*group);
            }
        }
        for group in unserved {
            self.start_leadership(group);
        }
        let paxos = &self.paxos;
        self.reconfigurations.retain(|(group, _, reply)| {
            let leads = paxos.group(*group).is_some_and(|replica| replica.role() == RoleKind::Leader);
            if !leads {
                let _ = reply.send(Err(ReconfigureError::Unknown(format!(
                    "the leader of shard {} changed before the membership change was confirmed; check /v1/cluster",
                    group.0
                ))));
            }
            leads
        });
        if self.proposals.is_empty() {
            return;
        }
        let lost = |group: &GroupId| paxos.group(*group).is_none_or(|replica| replica.role() != RoleKind::Leader);
        self.proposals.retain(|(group, _), reply| {
            if lost(group) {
                let _ = reply.send(Err(geodb_txn::Error::OutcomeUnknown(format!(
                    "the leader of shard {} changed before the commit was confirmed; it may or may not have committed",
                    group.0
                ))));
                false
            } else {
                true
            }
        });
    }

    /// Snapshots a group's state machine and truncates its log once enough
    /// slots were applied since the last snapshot.
    fn maybe_compact(&mut self) {
        let due: Vec<GroupId> = self
            .machines
            .iter()
            .filter(|(group, machine)| {
                let replica = self.paxos.group(**group);
                let snapshot_slot = replica.map_or(0, |replica| replica.snapshot_slot().0);
                // After a restart the engine may hold more than the replica
                // has replayed: a snapshot then would be labelled below its
                // data. Wait until the replay catches up.
                let replayed = replica.is_some_and(|replica| replica.applied().0 >= machine.applied);
                replayed
                    && machine.snapshot_interval > 0
                    && self.compact_slot(**group) >= snapshot_slot + machine.snapshot_interval
            })
            .map(|(group, _)| *group)
            .collect();
        for group in due {
            let machine = &self.machines[&group];
            let last_ts = machine.txns.shard().snapshot();
            match snapshot::export(self.engine.as_ref(), &SNAPSHOT_FAMILIES) {
                Ok(data) => {
                    let snapshot = Snapshot::new(paxos::Slot(self.compact_slot(group)), encode_snapshot(last_ts, data));
                    self.paxos.compact(group, snapshot);
                }
                Err(error) => {
                    tracing::warn!(%group, %error, "cannot snapshot the state machine; the log keeps growing")
                }
            }
        }
    }

    /// Where a snapshot taken now may cut the log: what the state machine
    /// holds, but never beyond what the replica itself has applied (after a
    /// restart the engine can be ahead of the replica's replay).
    fn compact_slot(&self, group: GroupId) -> u64 {
        let replica_applied = self.paxos.group(group).map_or(0, |replica| replica.applied().0);
        self.machines.get(&group).map_or(0, |machine| machine.applied).min(replica_applied)
    }

    fn publish(&self) {
        let mut statuses = self.statuses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (group, replica) in self.paxos.groups() {
            let status = statuses.entry(group).or_default();
            status.role = Some(replica.role());
            if status.leader != replica.leader() && replica.leader().is_some() {
                metrics::counter!(crate::telemetry::names::PAXOS_LEADER_CHANGES, "node" => self.node.0.to_string())
                    .increment(1);
                tracing::info!(node = %self.node, %group, leader = ?replica.leader(), "shard leader changed");
            }
            status.leader = replica.leader();
            status.chosen = replica.chosen().0;
            status.applied = self.machines.get(&group).map_or(0, |machine| machine.applied);
            status.snapshot_slot = replica.snapshot_slot().0;
            if &status.membership != replica.membership() {
                status.membership = replica.membership().clone();
            }
        }
    }

    fn fail(&mut self, reason: String) {
        tracing::error!(node = %self.node, %reason, "replication stopped");
        // First stop serving and say so, then answer the waiters: whoever
        // hears of the failure finds the node failed.
        for machine in self.machines.values_mut() {
            machine.epoch = None;
            machine.txns.shard().set_epoch(None);
        }
        {
            let mut statuses = self.statuses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for status in statuses.values_mut() {
                status.failed = Some(reason.clone());
                status.leader = None;
            }
        }
        // Proposals may already be out as accepts, or chosen in a Ready not
        // yet applied: another leader may still choose them.
        for (_, reply) in self.proposals.drain() {
            let _ = reply.send(Err(geodb_txn::Error::OutcomeUnknown(format!(
                "replication stopped before the commit was confirmed ({reason}); it may or may not have committed"
            ))));
        }
        for (_, (_, reply)) in self.barriers.drain() {
            let _ = reply.send(Err(geodb_txn::Error::Unavailable(format!("replication stopped: {reason}"))));
        }
        for (_, _, reply) in self.reconfigurations.drain(..) {
            let _ = reply.send(Err(ReconfigureError::Unknown(format!("replication stopped: {reason}"))));
        }
        self.failed = Some(reason);
    }
}

fn refused(error: ProposeError) -> geodb_txn::Error {
    match error {
        ProposeError::NotLeader { leader } => geodb_txn::Error::NotLeader { leader: leader.map(|node| node.0) },
        ProposeError::Busy => geodb_txn::Error::Unavailable("the shard's leader is at its proposal bound".into()),
        ProposeError::Reconfiguring => {
            geodb_txn::Error::Unavailable("the shard is changing its membership; retry shortly".into())
        }
        ProposeError::InvalidMembership { reason } => geodb_txn::Error::Invalid(reason.to_string()),
    }
}

/// Postcard bytes of a Paxos record (they always serialize).
fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("Paxos records always serialize")
}

fn group_write(group: GroupId, persist: &paxos::Persist) -> GroupWrite {
    GroupWrite {
        group: group.0,
        snapshot: persist.snapshot.as_ref().map(|snapshot| (snapshot.slot.0, encode(snapshot))),
        entries: persist.entries.iter().map(|entry| (entry.slot.0, encode(entry))).collect(),
        hard_state: persist.hard_state.as_ref().map(encode),
    }
}

/// Why an input could not be queued for the driver (nothing was proposed).
fn queue_error(error: TrySendError<Input>) -> geodb_txn::Error {
    match error {
        TrySendError::Full(_) => geodb_txn::Error::Unavailable("the node's replication queue is full".into()),
        TrySendError::Disconnected(_) => geodb_txn::Error::Unavailable("the node's replication has stopped".into()),
    }
}

/// A shard's [`CommitLog`] over its group on this node.
pub struct GroupLog {
    group: GroupId,
    node: NodeId,
    inputs: SyncSender<Input>,
    next_seq: std::sync::atomic::AtomicU64,
}

impl GroupLog {
    pub fn new(group: GroupId, node: NodeId, inputs: SyncSender<Input>) -> Self {
        // Sequence numbers must not repeat across restarts while an old
        // proposal may still be chosen: start at random (a clock can step
        // back); 2^63 values leave no realistic chance of a collision.
        let start = rand::random::<u64>() >> 1;
        GroupLog { group, node, inputs, next_seq: std::sync::atomic::AtomicU64::new(start) }
    }
}

struct GroupPending {
    reply: Receiver<geodb_txn::Result<()>>,
    proposed: Instant,
}

impl PendingCommit for GroupPending {
    fn wait(self: Box<Self>) -> geodb_txn::Result<()> {
        match self.reply.recv_timeout(COMMIT_WAIT_MAX) {
            Ok(outcome) => {
                if outcome.is_ok() {
                    metrics::histogram!(crate::telemetry::names::PAXOS_COMMIT_SECONDS)
                        .record(self.proposed.elapsed().as_secs_f64());
                }
                outcome
            }
            Err(RecvTimeoutError::Timeout) => Err(geodb_txn::Error::OutcomeUnknown(format!(
                "no outcome for the commit within {} s; it may or may not have committed",
                COMMIT_WAIT_MAX.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(geodb_txn::Error::OutcomeUnknown(
                "the node's replication stopped before the commit was confirmed".into(),
            )),
        }
    }
}

impl CommitLog for GroupLog {
    fn append(&self, entry: CommitEntry, epoch: u64) -> geodb_txn::Result<Box<dyn PendingCommit>> {
        let seq = self.next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let command = encode_command(self.node, seq, &entry.encode());
        let (reply, receiver) = mpsc::channel();
        self.inputs.try_send(Input::Propose { group: self.group, epoch, seq, command, reply }).map_err(queue_error)?;
        Ok(Box::new(GroupPending { reply: receiver, proposed: Instant::now() }))
    }

    fn barrier(&self) -> geodb_txn::Result<()> {
        let (reply, receiver) = mpsc::channel();
        self.inputs.try_send(Input::Barrier { group: self.group, reply }).map_err(queue_error)?;
        match receiver.recv_timeout(BARRIER_WAIT_MAX) {
            Ok(outcome) => outcome,
            Err(_) => Err(geodb_txn::Error::Unavailable(format!(
                "shard {} could not confirm its leader within {} s (no quorum?)",
                self.group.0,
                BARRIER_WAIT_MAX.as_secs()
            ))),
        }
    }

    fn is_replicated(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use geodb_storage::{HookedEngine, MemoryEngine, Timestamp};
    use geodb_txn::{Isolation, SystemClock};

    use super::*;

    /// A memory engine whose writes fail while `broken` is set.
    struct BreakableEngine {
        engine: Arc<HookedEngine>,
        broken: Arc<AtomicBool>,
    }

    impl BreakableEngine {
        fn new() -> Self {
            let broken = Arc::new(AtomicBool::new(false));
            let engine =
                HookedEngine::failing_while(Arc::new(MemoryEngine::new()), broken.clone(), "IO error: injected");
            BreakableEngine { engine: Arc::new(engine), broken }
        }
    }

    const GROUP: GroupId = GroupId(1);
    const NODE: NodeId = NodeId(1);

    /// A one-voter group on `engine`, its driver running; returns once the
    /// shard serves (bounded wait).
    fn start(engine: Arc<HookedEngine>) -> (Arc<Driver>, Arc<TxnManager>) {
        let (inputs, receiver) = mpsc::sync_channel(INPUT_QUEUE_MAX);
        let log = Arc::new(GroupLog::new(GROUP, NODE, inputs.clone()));
        let txns = TxnManager::with_log(engine.clone(), Box::new(SystemClock), 1_000_000, log).unwrap();
        let mut config = paxos::Config::new(GROUP, NODE, vec![NODE], 0);
        config.heartbeat_interval_us = 2_000;
        config.election_timeout_us = 10_000;
        let spec = GroupSpec { config, txns: txns.clone(), snapshot_interval: 0 };
        let driver = Driver::start(NODE, engine, vec![spec], Box::new(|_| {}), inputs, receiver).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while txns.shard().epoch().is_none() {
            assert!(Instant::now() < deadline, "the single voter never started serving");
            std::thread::sleep(Duration::from_millis(2));
        }
        (driver, txns)
    }

    fn write(txns: &Arc<TxnManager>, key: &[u8]) -> geodb_txn::Result<Timestamp> {
        let mut txn = txns.begin(Isolation::Serializable)?;
        txn.put(key.to_vec(), b"v".to_vec())?;
        txn.commit()
    }

    #[test]
    fn commits_survive_a_restart_from_the_log() {
        let engine = BreakableEngine::new().engine;
        let (driver, txns) = start(engine.clone());
        for key in [b"a", b"b", b"c"] {
            write(&txns, key).unwrap();
        }
        driver.stop();
        drop(txns);
        // The same engine (what a restarted process finds on disk).
        let (driver, txns) = start(engine);
        let mut txn = txns.begin(Isolation::Serializable).unwrap();
        for key in [b"a", b"b", b"c"] {
            assert_eq!(txn.get(key).unwrap().as_deref(), Some(&b"v"[..]));
        }
        drop(txn);
        write(&txns, b"d").unwrap();
        driver.stop();
    }

    #[test]
    fn a_failed_log_write_stops_replication_without_claiming_anything_was_not_committed() {
        let BreakableEngine { engine, broken } = BreakableEngine::new();
        let (driver, txns) = start(engine);
        write(&txns, b"before").unwrap();
        broken.store(true, Ordering::SeqCst);
        // A HAT write takes no read barrier: its proposal is the first thing
        // the driver persists after the disk broke.
        let error = write_at(&txns, Isolation::ReadCommitted, b"during").unwrap_err();
        // Proposed, then the log write failed: the outcome is unknown to
        // the client (never "not committed, retry").
        assert!(matches!(error, geodb_txn::Error::OutcomeUnknown(_)), "{error}");
        let status = driver.status(GROUP).unwrap();
        assert!(status.failed.is_some() && status.leader.is_none(), "{status:?}");
        // Nothing more is served, even once the disk recovers.
        broken.store(false, Ordering::SeqCst);
        assert!(txns.begin(Isolation::Serializable).is_err());
        assert!(write_at(&txns, Isolation::ReadCommitted, b"after").is_err());
        driver.stop();
    }

    fn write_at(txns: &Arc<TxnManager>, isolation: Isolation, key: &[u8]) -> geodb_txn::Result<Timestamp> {
        let mut txn = txns.begin(isolation)?;
        txn.put(key.to_vec(), b"v".to_vec())?;
        txn.commit()
    }
}
