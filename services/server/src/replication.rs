//! The replication driver: runs a node's [`Host`] against real disks,
//! sockets and clocks.
//!
//! One thread per node owns the host (its Multi-Paxos groups and their
//! shards) and loops:
//!
//! 1. take every input queued — messages from the transport (Paxos, shard
//!    requests from other nodes' coordinators, answers), requests from this
//!    node's coordinators, membership changes — and tick the host on the
//!    clock;
//! 2. send the leaders' `Accept`s at once (*Paxos Made Live* §4.2: the
//!    leader's disk write runs beside the round trip; its own vote counts
//!    only once step 4 tells its replica the write is durable,
//!    `paxos::Config::early_accepts`), then make all the Readies' `persist`
//!    parts durable with **one** write ([`LogStore::write`]: group commit
//!    across groups), synced unless it holds no promise and no vote that
//!    may count (a learner's copy of a shard's log, chosen entries caught
//!    up: `paxos::Persist::sync`);
//! 3. only then send their other messages (an acceptor must not answer
//!    before what it answers is durable);
//! 4. let the host restore snapshots, apply chosen entries (every group's
//!    slots of the round in one engine write: `Host::advance`) and serve
//!    read-index rounds, and deliver what it answers: to this node's
//!    coordinators through [`Calls`], to other nodes over the transport.
//!
//! A coordinator reaches shards through [`ClusterRpc`], the cluster's
//! [`ShardRpc`]: a request goes to the shard's leader as this node knows it
//! (in place when that is this node), or to the local replica for a Read
//! Committed read; answers from other nodes complete it straight from the
//! transport's reader, without a hop through this thread.
//!
//! Failure rules:
//! - a request this node cannot serve (not the leader) is refused at once;
//!   the coordinator retries where the hint points;
//! - a proposal in flight when the node stops leading answers "outcome
//!   unknown": another leader may still choose it;
//! - a failed log write or apply stops the driver: a node that cannot make
//!   its promises durable must not take part any more (every waiter hears
//!   why, `/readyz` turns unready). Restart recovers from the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::BoxFuture;
use geodb_geo::NodeId;
use geodb_geo::paxos::{self, GroupId, HardState, Membership, ProposeError, Snapshot, Stored};
use geodb_storage::paxos_log::{GroupWrite, LogStore};
use geodb_storage::{Durability, Engine};
use geodb_txn::host::{GroupStatus, HostConfig};
use geodb_txn::protocol::{ReadMode, Refusal, Request, Response, ShardId};
use geodb_txn::{Body, Host, HostOutput, NodeMessage, Origin, OrphanCounts, RpcError, Shard, ShardRpc};

/// How often the host is ticked: a tenth of the shortest heartbeat the
/// configuration allows, and never slower than this.
pub const TICK_INTERVAL_MAX: Duration = Duration::from_millis(5);
/// Inputs taken per loop before the Readies are handled: bounds the time
/// between receiving a message and persisting what it caused.
const INPUTS_PER_ROUND_MAX: usize = 4096;
/// Persist-send-apply rounds per wake of the driver loop: applying may give
/// the replicas more to do at once, which need not wait for the next tick.
const ROUNDS_PER_WAKE_MAX: usize = 4;
/// How long a coordinator waits for a shard's answer before it counts the
/// request as lost (a leader cut off from its quorum steps down well
/// within this, and a commit answers "outcome unknown").
pub const CALL_WAIT_MAX: Duration = Duration::from_secs(10);
/// A call to a peer that has sent nothing for this long (every node pings
/// every other once a second) is given up once it is this old, rather than
/// at `CALL_WAIT_MAX`: a leader cut off by the network, or behind a
/// half-open connection, costs its callers this much (a lost read is sent
/// again, a lost commit answers "outcome unknown").
pub const SILENT_PEER_AFTER: Duration = Duration::from_secs(3);
/// Inputs queued for the driver before new ones are refused: messages are
/// dropped (Paxos retransmits) and requests answer "not sent" (load
/// shedding), rather than letting a stalled driver's queue grow without bound.
pub const INPUT_QUEUE_MAX: usize = 65_536;
/// Leader redirects a call follows before it gives up for this attempt.
const REDIRECTS_MAX: u32 = 3;

/// What the driver thread takes as input.
pub enum Input {
    /// A message from another node (or from this node to itself).
    Message(NodeMessage),
    /// A request of a coordinator on this node; its answer completes call
    /// `id` in [`Calls`].
    Local { id: u64, shard: ShardId, request: Request },
    /// The answer to a request the host sent (recovery), by host request id.
    HostReply { id: u64, response: Response },
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
pub type ReconfigureReply = std::sync::mpsc::Sender<Result<Membership, ReconfigureError>>;

/// One group of a node: its Paxos configuration and its shard.
pub struct GroupSpec {
    pub config: paxos::Config,
    pub shard: Arc<Shard>,
    /// Take a snapshot (and truncate the log) every this many applied slots.
    pub snapshot_interval: u64,
    /// R14: close timestamps this far ahead (ns), every this often (µs),
    /// while leading (the global shard; `Host::set_closing`).
    pub closing: Option<(u64, u64)>,
}

/// What the rest of the node can see of the driver, as of its last round.
#[derive(Clone, Debug, Default)]
pub struct Published {
    pub groups: BTreeMap<GroupId, GroupStatus>,
    pub snapshots_installed: BTreeMap<GroupId, u64>,
    /// This node's clock against its peers'.
    pub clock: geodb_txn::offsets::ClockStatus,
    /// How proposals orphaned by a change of leader were settled.
    pub orphans: OrphanCounts,
    /// Reads at a closed timestamp served by this node's replicas (R14).
    pub settled: geodb_txn::host::SettledCounts,
    /// Monotonic Atomic View reads served here.
    pub views: geodb_txn::host::ViewCounts,
    /// Pipelined proposals of this node skipped by re-validation (R15).
    pub skipped: u64,
    /// R20: prepares at a statement proposed here, and waits for older
    /// prepared transactions.
    pub early: geodb_txn::host::EarlyCounts,
    /// This node's replicas that are quiet now.
    pub quiet_groups: usize,
    /// Deliveries of outbox entries this node sent (R16).
    pub deliveries: u64,
    /// R19: keys of the home shards this node leads that one region has
    /// dominated for a window (`Host::leanings`).
    pub leanings: Vec<(geodb_txn::protocol::ShardId, geodb_txn::traffic::Leaning)>,
    pub leanings_generation: u64,
    /// Set when the driver stopped on a storage failure.
    pub failed: Option<String>,
}

/// Requests in flight from this node, by id: this node's coordinators'
/// calls, and the host's own requests (recovery).
#[derive(Default)]
pub struct Calls {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiter>>,
    /// Whether a peer has been silent for SILENT_PEER_AFTER (set once the
    /// transport exists).
    silent: std::sync::OnceLock<Box<dyn Fn(NodeId) -> bool + Send + Sync>>,
}

enum Waiter {
    Coordinator {
        reply: oneshot::Sender<Response>,
        /// The node the request went to, and when.
        target: NodeId,
        sent: Instant,
        deadline: Instant,
        /// For requests that replicate something: their kind and when they
        /// were sent (for the commit latency histogram).
        timed: Option<(&'static str, Instant)>,
    },
    Host {
        id: u64,
        deadline: Instant,
    },
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// A coordinator's call of `request`: its id, and where the answer arrives.
    pub fn register(&self, request: &Request, target: NodeId) -> (u64, oneshot::Receiver<Response>) {
        let id = self.next_id();
        let (reply, receiver) = oneshot::channel();
        let now = Instant::now();
        let timed = matches!(
            request,
            Request::CommitOne(_)
                | Request::Prepare { .. }
                | Request::Decide { .. }
                | Request::CommitRecord { .. }
                | Request::Resolve { .. }
                | Request::Enqueue(_)
        )
        .then(|| (request.kind(), now));
        self.lock().insert(id, Waiter::Coordinator { reply, target, sent: now, deadline: now + CALL_WAIT_MAX, timed });
        (id, receiver)
    }

    fn register_host(&self, host_id: u64) -> u64 {
        let id = self.next_id();
        self.lock().insert(id, Waiter::Host { id: host_id, deadline: Instant::now() + CALL_WAIT_MAX });
        id
    }

    /// Delivers the answer to call `id`. Returns the host request it
    /// answers, if it is one of the host's (the driver hands it over).
    pub fn complete(&self, id: u64, response: Response) -> Option<(u64, Response)> {
        match self.lock().remove(&id)? {
            Waiter::Coordinator { reply, timed, .. } => {
                if let Some((kind, sent)) = timed
                    && !matches!(response, Response::Refused(_))
                {
                    metrics::histogram!(crate::telemetry::names::PAXOS_COMMIT_SECONDS, "request" => kind)
                        .record(sent.elapsed().as_secs_f64());
                }
                let _ = reply.send(response);
                None
            }
            Waiter::Host { id, .. } => Some((id, response)),
        }
    }

    /// Forgets calls past their deadline: coordinators see their call lost;
    /// returns the host requests that expired.
    fn expire(&self, now: Instant) -> Vec<u64> {
        let mut expired = Vec::new();
        let silent = self.silent.get();
        self.lock().retain(|_, waiter| match waiter {
            // Also given up: a call to a peer that has said nothing for
            // SILENT_PEER_AFTER (cut off, or a connection half open).
            Waiter::Coordinator { target, sent, deadline, .. } => {
                *deadline > now
                    && !(now.saturating_duration_since(*sent) >= SILENT_PEER_AFTER
                        && silent.is_some_and(|silent| silent(*target)))
            }
            Waiter::Host { id, deadline } => {
                if *deadline <= now {
                    expired.push(*id);
                }
                *deadline > now
            }
        });
        expired
    }

    fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// How to tell that a peer has been silent for [`SILENT_PEER_AFTER`].
    pub fn set_silence(&self, silent: Box<dyn Fn(NodeId) -> bool + Send + Sync>) {
        let _ = self.silent.set(silent);
    }

    /// The connection to `peer` closed: coordinators waiting on it see their
    /// calls lost now rather than at their deadline (an answer that was on
    /// its way is lost with them). A lost read is sent again; a lost commit
    /// answers "outcome unknown" — at once instead of after `CALL_WAIT_MAX`,
    /// so a session resumes within the election bound when a leader dies.
    pub fn abandon_to(&self, peer: NodeId) {
        self.lock().retain(|_, waiter| !matches!(waiter, Waiter::Coordinator { target, .. } if *target == peer));
    }
}

/// Where the transport hands received messages: the driver's inputs,
/// except answers to this node's coordinators, which complete their calls
/// at once. Never blocks: a full queue drops the message (Paxos
/// retransmits, and a coordinator's call times out).
pub struct Inbox {
    pub inputs: SyncSender<Input>,
    pub calls: Arc<Calls>,
    /// This node's clock: every message's sender reading is folded in.
    pub hlc: Arc<geodb_txn::Hlc>,
}

impl crate::transport::Inbound for Inbox {
    fn link_lost(&self, peer: NodeId) {
        self.calls.abandon_to(peer);
    }

    fn deliver(&self, message: NodeMessage) -> bool {
        if !geodb_txn::observe_sender_clock(&self.hlc, &message) {
            metrics::counter!(crate::telemetry::names::CLOCK_READINGS_IGNORED, "node" => message.to.0.to_string())
                .increment(1);
        }
        if let Body::Reply { id, response } = message.body {
            return match self.calls.complete(id, response) {
                None => true,
                Some((host_id, response)) => self.inputs.try_send(Input::HostReply { id: host_id, response }).is_ok(),
            };
        }
        self.inputs.try_send(Input::Message(message)).is_ok()
    }
}

/// A running driver.
pub struct Driver {
    node: NodeId,
    inputs: SyncSender<Input>,
    calls: Arc<Calls>,
    thread: Mutex<Option<JoinHandle<()>>>,
    published: Arc<Mutex<Published>>,
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

impl Driver {
    /// Opens the log store, restores every group from it, and starts the
    /// driver thread on `receiver`. `send` hands messages to the transport;
    /// `inputs` is the sending side of `receiver`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: HostConfig,
        hlc: Arc<geodb_txn::Hlc>,
        engine: Arc<dyn Engine>,
        groups: Vec<GroupSpec>,
        send: Box<dyn Fn(Vec<NodeMessage>) + Send>,
        inputs: SyncSender<Input>,
        receiver: Receiver<Input>,
        calls: Arc<Calls>,
    ) -> Result<Arc<Driver>, String> {
        let node = config.node;
        let store = LogStore::new(engine).map_err(|e| format!("cannot open the Paxos log: {e}"))?;
        let started = Instant::now();
        // Proposal numbers must not repeat across restarts while an old
        // proposal may still be chosen: start at random (a clock can step
        // back); 2^63 values leave no realistic chance of a collision.
        let mut host = Host::new(config, hlc, rand::random::<u64>() >> 1);
        for spec in groups {
            let stored = load(&store, spec.config.group)?;
            let group = spec.config.group;
            let shard = spec.shard.id();
            host.add_group(spec.config, stored, spec.shard, spec.snapshot_interval, 0)
                .map_err(|e| format!("{group}: cannot open its snapshots: {e}"))?;
            if let Some((lead_ns, interval_us)) = spec.closing {
                host.set_closing(shard, lead_ns, interval_us);
            }
        }
        let published = Arc::new(Mutex::new(Published::default()));
        let mut state = DriverState {
            node,
            host,
            store,
            send,
            started,
            calls: calls.clone(),
            reconfigurations: Vec::new(),
            published: published.clone(),
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("paxos-{node}"))
            .spawn(move || state.run(receiver))
            .map_err(|e| format!("cannot start the replication thread: {e}"))?;
        Ok(Arc::new(Driver { node, inputs, calls, thread: Mutex::new(Some(thread)), published }))
    }

    /// The state of every group as of the last round. A driver thread that
    /// ended without being stopped (a panic) reports itself failed.
    pub fn published(&self) -> Published {
        let mut published = self.published.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let died = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_some_and(|thread| thread.is_finished());
        if died {
            published.failed.get_or_insert_with(|| "the replication thread ended unexpectedly".into());
            for status in published.groups.values_mut() {
                status.leader = None;
                status.serving = false;
            }
        }
        published
    }

    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        self.published().groups.remove(&group)
    }

    /// The leader of `shard` as this node knows it.
    pub fn leader_of(&self, shard: ShardId) -> Option<NodeId> {
        self.published.lock().unwrap_or_else(|p| p.into_inner()).groups.get(&GroupId(shard)).and_then(|s| s.leader)
    }

    pub fn failed(&self) -> Option<String> {
        self.published().failed
    }

    pub fn inputs(&self) -> &SyncSender<Input> {
        &self.inputs
    }

    pub fn calls(&self) -> &Arc<Calls> {
        &self.calls
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Stops the thread and waits for it.
    pub fn stop(&self) {
        let _ = self.inputs.send(Input::Stop);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

struct DriverState {
    node: NodeId,
    host: Host,
    store: LogStore,
    send: Box<dyn Fn(Vec<NodeMessage>) + Send>,
    started: Instant,
    calls: Arc<Calls>,
    /// Membership changes this node proposed, not yet applied.
    reconfigurations: Vec<(GroupId, Membership, ReconfigureReply)>,
    published: Arc<Mutex<Published>>,
    failed: Option<String>,
}

impl DriverState {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn run(&mut self, inputs: Receiver<Input>) {
        let tick = self
            .host
            .paxos()
            .groups()
            .map(|(_, replica)| Duration::from_micros(replica.config().heartbeat_interval_us / 10))
            .min()
            .unwrap_or(TICK_INTERVAL_MAX)
            .clamp(Duration::from_micros(200), TICK_INTERVAL_MAX);
        let mut next_tick = Instant::now();
        loop {
            // Wake at the next tick, or sooner for a read waiting on the clock.
            let wake = self.host.next_wake_ns().map(|until| {
                let now = self.host.hlc().physical_now_ns();
                Instant::now() + Duration::from_nanos(until.saturating_sub(now))
            });
            let deadline = wake.map_or(next_tick, |wake| wake.min(next_tick));
            let timeout = deadline.saturating_duration_since(Instant::now());
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
            if self.failed.is_none() && wake.is_some_and(|wake| Instant::now() >= wake) {
                self.host.wake(self.now_us());
            }
            if Instant::now() >= next_tick {
                let now = self.now_us();
                if self.failed.is_none() {
                    self.host.tick(now);
                }
                for host_id in self.calls.expire(Instant::now()) {
                    let refusal = Refusal::Unavailable("no answer to a recovery request in time".into());
                    self.host.handle_reply(now, host_id, Response::Refused(refusal));
                }
                next_tick = Instant::now() + tick;
            }
            if self.failed.is_none() {
                self.round();
            }
        }
    }

    fn handle(&mut self, input: Input) {
        let now = self.now_us();
        if let Some(failure) = &self.failed {
            let refusal = || Response::Refused(Refusal::Unavailable(format!("replication stopped: {failure}")));
            match input {
                Input::Local { id, .. } => {
                    self.calls.complete(id, refusal());
                }
                Input::Message(NodeMessage { from, body: Body::Request { id, .. }, .. }) => {
                    let reply = NodeMessage::new(self.node, from, Body::Reply { id, response: refusal() });
                    (self.send)(vec![reply]);
                }
                Input::Reconfigure { reply, .. } => {
                    let _ = reply.send(Err(ReconfigureError::Retry(format!("replication stopped: {failure}"))));
                }
                _ => {}
            }
            return;
        }
        match input {
            Input::Message(message) => match message.body {
                Body::Paxos { .. } => {
                    if let Some(envelope) = message.into_envelope() {
                        self.host.handle_message(now, envelope);
                    }
                }
                Body::Request { id, shard, request } => {
                    self.host.handle_request(now, Origin { node: message.from, id }, shard, request);
                }
                Body::Reply { id, response } => {
                    if let Some((host_id, response)) = self.calls.complete(id, response) {
                        self.host.handle_reply(now, host_id, response);
                    }
                }
                Body::ClockPing { .. } | Body::ClockPong { .. } => {
                    self.host.handle_clock(now, message.from, &message.body);
                }
            },
            Input::Local { id, shard, request } => {
                self.host.handle_request(now, Origin { node: self.node, id }, shard, request);
            }
            Input::HostReply { id, response } => self.host.handle_reply(now, id, response),
            Input::Reconfigure { group, membership, reply } => {
                match self.host.propose_membership(group, membership.clone()) {
                    Ok(()) => self.reconfigurations.push((group, membership, reply)),
                    Err(error @ ProposeError::InvalidMembership { .. }) => {
                        let _ = reply.send(Err(ReconfigureError::Invalid(error.to_string())));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(ReconfigureError::Retry(error.to_string())));
                    }
                }
            }
            Input::Stop => {}
        }
    }

    /// Persist, then send, then apply (see the module documentation); again
    /// while applying gave the replicas more to do (a proposal sent again, a
    /// snapshot chunk stored and the next one to ask for), a few times at
    /// most before inputs are read again.
    fn round(&mut self) {
        for _ in 0..ROUNDS_PER_WAKE_MAX {
            if !self.round_once() {
                break;
            }
        }
        // A failed node publishes nothing more (`fail` said what it had to).
        if self.failed.is_some() {
            return;
        }
        self.track_reconfigurations();
        self.publish();
    }

    /// One persist, send and apply; whether there was anything to do.
    fn round_once(&mut self) -> bool {
        self.dispatch();
        let mut ready = self.host.take_ready();
        let busy = !ready.is_empty();
        if busy {
            // A leader's accepts go out first, and its disk write runs
            // beside their round trip (`paxos::Config::early_accepts`: its
            // own votes count once `advance` says they are durable).
            let mut early = Vec::new();
            for (_, group_ready) in ready.iter_mut() {
                early.extend(group_ready.take_early_sends().into_iter().map(NodeMessage::paxos));
            }
            if !early.is_empty() {
                (self.send)(early);
            }
            let writes: Vec<GroupWrite> = ready
                .iter()
                .filter(|(_, group_ready)| !group_ready.persist.is_empty())
                .map(|(group, group_ready)| group_write(*group, &group_ready.persist))
                .collect();
            // Synced if any group's write holds a promise or a vote that may
            // count; a node that is only a learner of the busy shards (every
            // node holds a replica of every home shard) writes without one.
            let durability = if ready.iter().any(|(_, group_ready)| group_ready.persist.sync) {
                Durability::Sync
            } else {
                Durability::Buffered
            };
            if !writes.is_empty() {
                if let Err(error) = self.store.write(&writes, durability) {
                    self.fail(format!("cannot persist the Paxos log: {error}"));
                    return false;
                }
                let sync = if durability == Durability::Sync { "true" } else { "false" };
                metrics::counter!(crate::telemetry::names::PAXOS_LOG_WRITES, "node" => self.node.0.to_string(), "sync" => sync)
                    .increment(1);
            }
            let mut outgoing = Vec::new();
            for (_, group_ready) in &ready {
                outgoing.extend(group_ready.send.iter().cloned().map(NodeMessage::paxos));
            }
            if !outgoing.is_empty() {
                (self.send)(outgoing);
            }
            let restored: Vec<GroupId> = ready
                .iter()
                .filter(|(_, group_ready)| group_ready.restore.is_some())
                .map(|(group, _)| *group)
                .collect();
            let now = self.now_us();
            if let Err(error) = self.host.advance(now, ready) {
                self.fail(format!("cannot apply to the state machine: {error}"));
                return false;
            }
            if !restored.is_empty() {
                let mut published = self.published.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                for group in restored {
                    *published.snapshots_installed.entry(group).or_default() += 1;
                    metrics::counter!(crate::telemetry::names::PAXOS_SNAPSHOTS_INSTALLED, "node" => self.node.0.to_string())
                        .increment(1);
                }
            }
            self.dispatch();
        }
        busy
    }

    /// Delivers the host's outputs: answers to coordinators here or on other
    /// nodes, the host's own requests, applied membership changes.
    fn dispatch(&mut self) {
        loop {
            let outputs = self.host.take_outputs();
            if outputs.is_empty() {
                return;
            }
            let now = self.now_us();
            let mut outgoing = Vec::new();
            for output in outputs {
                match output {
                    HostOutput::Reply { origin, response } if origin.node == self.node => {
                        if let Some((host_id, response)) = self.calls.complete(origin.id, response) {
                            self.host.handle_reply(now, host_id, response);
                        }
                    }
                    HostOutput::Reply { origin, response } => {
                        outgoing.push(NodeMessage::new(self.node, origin.node, Body::Reply { id: origin.id, response }))
                    }
                    HostOutput::Request { id, shard, request } => {
                        let call = self.calls.register_host(id);
                        match self.host.leader_of(shard) {
                            Some(leader) if leader == self.node => {
                                self.host.handle_request(now, Origin { node: self.node, id: call }, shard, request);
                            }
                            Some(leader) => outgoing.push(NodeMessage::new(
                                self.node,
                                leader,
                                Body::Request { id: call, shard, request },
                            )),
                            None => {
                                self.calls.forget(call);
                                let refusal = Refusal::NotLeader { leader: None };
                                self.host.handle_reply(now, id, Response::Refused(refusal));
                            }
                        }
                    }
                    HostOutput::Send(message) => outgoing.push(message),
                    HostOutput::MembershipApplied { group, membership } => {
                        tracing::info!(node = %self.node, %group, ?membership, "membership changed");
                        self.reconfigurations.retain(|(waiting_group, wanted, reply)| {
                            if *waiting_group == group && *wanted == membership {
                                let _ = reply.send(Ok(membership.clone()));
                                false
                            } else {
                                true
                            }
                        });
                    }
                }
            }
            if !outgoing.is_empty() {
                (self.send)(outgoing);
            }
        }
    }

    /// Membership changes proposed by a leader that lost leadership may or
    /// may not be chosen: their callers hear so.
    fn track_reconfigurations(&mut self) {
        let paxos = self.host.paxos();
        self.reconfigurations.retain(|(group, _, reply)| {
            let leads = paxos.group(*group).is_some_and(|replica| replica.role() == paxos::RoleKind::Leader);
            if !leads {
                let _ = reply.send(Err(ReconfigureError::Unknown(format!(
                    "the leader of shard {} changed before the membership change was confirmed; check /v1/cluster",
                    group.0
                ))));
            }
            leads
        });
    }

    fn publish(&mut self) {
        // Only the groups that did something since the last round.
        let statuses = self.host.take_status_changes();
        let mut published = self.published.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let quiet_before = published.quiet_groups;
        for (group, status) in statuses {
            let previous = published.groups.get(&group);
            let previous_leader = previous.and_then(|status| status.leader);
            let was_quiet = previous.is_some_and(|status| status.quiet);
            if previous_leader != status.leader && status.leader.is_some() {
                metrics::counter!(crate::telemetry::names::PAXOS_LEADER_CHANGES, "node" => self.node.0.to_string())
                    .increment(1);
                tracing::info!(node = %self.node, %group, leader = ?status.leader, "shard leader changed");
            }
            published.quiet_groups =
                (published.quiet_groups + usize::from(status.quiet)).saturating_sub(usize::from(was_quiet));
            published.groups.insert(group, status);
        }
        if published.quiet_groups != quiet_before {
            metrics::gauge!(crate::telemetry::names::PAXOS_QUIET_GROUPS, "node" => self.node.0.to_string())
                .set(published.quiet_groups as f64);
        }
        let orphans = self.host.orphans();
        if orphans != published.orphans {
            let before = published.orphans;
            self.count_by_outcome(
                crate::telemetry::names::PAXOS_ORPHANED_PROPOSALS,
                [
                    ("chosen", orphans.chosen, before.chosen),
                    ("never_chosen", orphans.never_chosen, before.never_chosen),
                    ("unknown", orphans.unknown, before.unknown),
                    ("contradicted", orphans.contradicted, before.contradicted),
                ],
            );
            if orphans.contradicted > before.contradicted {
                tracing::error!(
                    node = %self.node,
                    "a proposal declared never chosen was applied after all: a protocol invariant is broken; please report it"
                );
            }
            published.orphans = orphans;
        }
        let settled = self.host.settled_reads();
        if settled != published.settled {
            let before = published.settled;
            self.count_by_outcome(
                crate::telemetry::names::GLOBAL_READS,
                [
                    ("served", settled.served, before.served),
                    ("waited_for_close", settled.waited_for_close, before.waited_for_close),
                ],
            );
            published.settled = settled;
        }
        let views = self.host.views();
        if views != published.views {
            let node = self.node.0.to_string();
            metrics::counter!(crate::telemetry::names::MAV_VIEWS, "node" => node.clone())
                .increment(views.served - published.views.served);
            metrics::counter!(crate::telemetry::names::MAV_KEYS_HELD_BACK, "node" => node)
                .increment(views.held_back - published.views.held_back);
            published.views = views;
        }
        let deliveries = self.host.deliveries_sent();
        if deliveries != published.deliveries {
            metrics::counter!(crate::telemetry::names::OUTBOX_DELIVERIES, "node" => self.node.0.to_string())
                .increment(deliveries - published.deliveries);
            published.deliveries = deliveries;
        }
        let handovers = self.host.take_handovers();
        if !handovers.is_empty() {
            metrics::counter!(crate::telemetry::names::LEADERSHIP_HANDOVERS, "node" => self.node.0.to_string())
                .increment(handovers.len() as u64);
        }
        for handover in handovers {
            tracing::info!(
                node = %self.node,
                shard = handover.shard,
                to = %handover.to,
                share = handover.share,
                requests_per_window = handover.requests,
                "handing the shard's leadership to the node of its home region its requests come from"
            );
        }
        let (generation, leanings) = self.host.leanings();
        if generation != published.leanings_generation {
            published.leanings = leanings.to_vec();
            published.leanings_generation = generation;
        }
        let early = self.host.early_counts();
        if early != published.early {
            let node = self.node.0.to_string();
            metrics::counter!(crate::telemetry::names::PREPARES_AT_STATEMENT, "node" => node.clone())
                .increment(early.prepared_at_statement - published.early.prepared_at_statement);
            metrics::counter!(crate::telemetry::names::LOCK_WAITS, "node" => node.clone())
                .increment(early.waits - published.early.waits);
            metrics::counter!(crate::telemetry::names::DECISIONS_WITH_PART, "node" => node)
                .increment(early.decided_with_part - published.early.decided_with_part);
            published.early = early;
        }
        let skipped = self.host.skipped_proposals();
        if skipped != published.skipped {
            metrics::counter!(crate::telemetry::names::PAXOS_PIPELINE_SKIPPED, "node" => self.node.0.to_string())
                .increment(skipped - published.skipped);
            published.skipped = skipped;
        }
        let clock = self.host.clock_status();
        if clock.unsynchronized_ns.is_some() != published.clock.unsynchronized_ns.is_some() {
            match clock.unsynchronized_ns {
                Some(offset_ns) => tracing::error!(
                    node = %self.node,
                    offset_ms = offset_ns / 1_000_000,
                    bound_ms = clock.bound_ns / 1_000_000,
                    "this node's clock is beyond max_clock_offset_ms of most peers: refusing coordinated transactions \
                     (snapshot and serializable) until it is fixed; Read Committed and MAV go on"
                ),
                None => tracing::warn!(
                    node = %self.node,
                    "this node's clock is within max_clock_offset_ms of most peers again: serving coordinated transactions"
                ),
            }
        }
        if published.clock != *clock {
            published.clock = clock.clone();
        }
    }

    /// Adds to counter `name`, by `outcome`, what each count grew by since
    /// it was last published (`(outcome, now, then)`).
    fn count_by_outcome<const N: usize>(&self, name: &'static str, counts: [(&'static str, u64, u64); N]) {
        for (outcome, now, then) in counts {
            metrics::counter!(name, "node" => self.node.0.to_string(), "outcome" => outcome).increment(now - then);
        }
    }

    fn fail(&mut self, reason: String) {
        tracing::error!(node = %self.node, %reason, "replication stopped");
        // First stop serving and say so, then answer the waiters: whoever
        // hears of the failure finds the node failed.
        {
            let mut published = self.published.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            published.failed = Some(reason.clone());
            for status in published.groups.values_mut() {
                status.leader = None;
                status.serving = false;
            }
        }
        self.host.fail(&reason);
        self.failed = Some(reason.clone());
        // Answer what the host refused (no more rounds run).
        let outputs = self.host.take_outputs();
        let mut outgoing = Vec::new();
        for output in outputs {
            if let HostOutput::Reply { origin, response } = output {
                if origin.node == self.node {
                    self.calls.complete(origin.id, response);
                } else {
                    outgoing.push(NodeMessage::new(self.node, origin.node, Body::Reply { id: origin.id, response }));
                }
            }
        }
        (self.send)(outgoing);
        for (_, _, reply) in self.reconfigurations.drain(..) {
            let _ = reply.send(Err(ReconfigureError::Unknown(format!("replication stopped: {reason}"))));
        }
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

/// The cluster's [`ShardRpc`]: requests go to each shard's leader as this
/// node knows it (in place when that is this node; to the local replica for
/// Read Committed reads), over the transport otherwise.
#[derive(Clone)]
pub struct ClusterRpc {
    inner: Arc<RpcInner>,
}

struct RpcInner {
    driver: Arc<Driver>,
    send: Box<dyn Fn(NodeMessage) -> bool + Send + Sync>,
    hlc: Arc<geodb_txn::Hlc>,
    /// The nodes of this node's region (this one included).
    region: std::collections::BTreeSet<NodeId>,
    /// This node's replicas, by shard.
    local: BTreeMap<ShardId, Arc<Shard>>,
    /// The voters of the shards this node holds no replica of (another
    /// region's outbox), preferred leader first: whom to ask, since this
    /// node never hears who leads them. A voter that does not lead answers
    /// with the leader it knows.
    remote: BTreeMap<ShardId, Vec<NodeId>>,
    /// The leaders of `remote` shards as their voters last said.
    remote_leaders: Mutex<HashMap<ShardId, NodeId>>,
    /// Turns among `remote` voters when none is known to lead.
    next_voter: AtomicU64,
}

impl ClusterRpc {
    /// `send` queues a message for another node, answering whether it could
    /// (false when the link is cut or the queue full).
    pub fn new(
        driver: Arc<Driver>,
        send: Box<dyn Fn(NodeMessage) -> bool + Send + Sync>,
        hlc: Arc<geodb_txn::Hlc>,
        region: std::collections::BTreeSet<NodeId>,
        local: Vec<Arc<Shard>>,
        remote: BTreeMap<ShardId, Vec<NodeId>>,
    ) -> ClusterRpc {
        let local = local.into_iter().map(|shard| (shard.id(), shard)).collect();
        let (remote_leaders, next_voter) = (Mutex::default(), AtomicU64::new(0));
        ClusterRpc {
            inner: Arc::new(RpcInner { driver, send, hlc, region, local, remote, remote_leaders, next_voter }),
        }
    }

    fn remote_leaders(&self) -> std::sync::MutexGuard<'_, HashMap<ShardId, NodeId>> {
        self.inner.remote_leaders.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes who leads a shard this node holds no replica of: `leader`, or
    /// nobody known (try the voters in turn).
    fn learn_remote_leader(&self, shard: ShardId, leader: Option<NodeId>) {
        if self.inner.remote.contains_key(&shard) {
            match leader {
                Some(leader) => self.remote_leaders().insert(shard, leader),
                None => self.remote_leaders().remove(&shard),
            };
        }
    }

    /// The leader of `shard` as this node knows it; for a shard it holds no
    /// replica of, one of its voters, in turn.
    fn leader(&self, shard: ShardId) -> Option<NodeId> {
        self.inner.driver.leader_of(shard).or_else(|| {
            if let Some(leader) = self.remote_leaders().get(&shard) {
                return Some(*leader);
            }
            let voters = self.inner.remote.get(&shard).filter(|voters| !voters.is_empty())?;
            let turn = self.inner.next_voter.fetch_add(1, Ordering::Relaxed) as usize;
            Some(voters[turn % voters.len()])
        })
    }

    /// Where a request goes first: the leader, as this node knows it. A
    /// Read Committed read goes to this node's replica when it has applied
    /// what the reader must see, else to the leader if that is in this
    /// region (never leaving it), else to this node's replica, which waits
    /// until it has caught up.
    fn target(&self, shard: ShardId, request: &Request) -> Option<NodeId> {
        let leader = self.leader(shard);
        let here = self.inner.driver.node();
        let after = match request {
            // Monotonic Atomic View: this node's replicas, never another's
            // (they may not hold what the reader already saw); a node
            // without the replica refuses.
            Request::View { .. } => return Some(here),
            Request::Get { mode: ReadMode::Latest { after }, .. }
            | Request::Scan { mode: ReadMode::Latest { after }, .. } => *after,
            // R14: this node's replica serves it once it closed the snapshot
            // (it waits for that), never another region's.
            Request::Get { mode: ReadMode::Settled { .. }, .. }
            | Request::Scan { mode: ReadMode::Settled { .. }, .. }
            | Request::ValidateSettled { .. }
            // R16: this region's outbox, held by every node of the region.
            | Request::Pending { .. }
                if self.inner.local.contains_key(&shard) =>
            {
                return Some(here);
            }
            _ => return leader,
        };
        let caught_up = self.inner.local.get(&shard).is_some_and(|replica| replica.caught_up(after));
        match leader {
            _ if caught_up => Some(here),
            Some(leader) if self.inner.region.contains(&leader) => Some(leader),
            _ => Some(here),
        }
    }

    /// Sends one attempt to `target`; resolves with the answer, or
    /// `NotSent`/`Lost`.
    fn attempt(
        &self,
        target: NodeId,
        shard: ShardId,
        request: Request,
    ) -> BoxFuture<'static, Result<Response, RpcError>> {
        let calls = self.inner.driver.calls().clone();
        let (id, answer) = calls.register(&request, target);
        let sent = if target == self.inner.driver.node() {
            match self.inner.driver.inputs().try_send(Input::Local { id, shard, request }) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err("this node's replication queue is full"),
                Err(TrySendError::Disconnected(_)) => Err("this node's replication has stopped"),
            }
        } else {
            let message = NodeMessage::new(self.inner.driver.node(), target, Body::Request { id, shard, request });
            if (self.inner.send)(message) { Ok(()) } else { Err("the node is unreachable from here") }
        };
        if let Err(reason) = sent {
            calls.forget(id);
            let error = RpcError::NotSent(format!("shard {shard} via node {}: {reason}", target.0));
            return Box::pin(futures::future::ready(Err(error)));
        }
        Box::pin(async move {
            answer.await.map_err(|_| {
                RpcError::Lost(format!(
                    "no answer from node {} for shard {shard} within {} s",
                    target.0,
                    CALL_WAIT_MAX.as_secs()
                ))
            })
        })
    }
}

impl ShardRpc for ClusterRpc {
    fn call(&self, shard: ShardId, request: Request) -> BoxFuture<'static, Result<Response, RpcError>> {
        use tracing::Instrument as _;
        let this = self.clone();
        // A child of the statement or commit that sends it.
        let span = crate::telemetry::span(|| {
            tracing::info_span!(
                "shard.request",
                otel.kind = "client",
                shard,
                kind = request.kind(),
                leader = tracing::field::Empty
            )
        });
        let traced = span.clone();
        Box::pin(
            async move {
                let mut target = this.target(shard, &request);
                for _ in 0..REDIRECTS_MAX {
                    let Some(node) = target else {
                        return Err(RpcError::NotSent(format!(
                            "shard {shard} has no leader right now (an election is under way)"
                        )));
                    };
                    traced.record("leader", node.0);
                    let answer = this.attempt(node, shard, request.clone()).await;
                    if answer.is_err() {
                        this.learn_remote_leader(shard, None);
                    }
                    match answer? {
                        // Follow the refusing node's hint at once.
                        Response::Refused(Refusal::NotLeader { leader: Some(leader) }) if leader != node.0 => {
                            this.learn_remote_leader(shard, Some(NodeId(leader)));
                            target = Some(NodeId(leader));
                        }
                        refused @ Response::Refused(Refusal::NotLeader { .. }) => {
                            this.learn_remote_leader(shard, None);
                            return Ok(refused);
                        }
                        response => {
                            if request.needs_leader() {
                                this.learn_remote_leader(shard, Some(node));
                            }
                            return Ok(response);
                        }
                    }
                }
                Ok(Response::Refused(Refusal::NotLeader { leader: None }))
            }
            .instrument(span),
        )
    }

    fn send(&self, shard: ShardId, request: Request) {
        // One attempt, sent now; its answer is discarded on arrival (and a
        // lost one is made up for by recovery).
        if let Some(target) = self.target(shard, &request) {
            drop(self.attempt(target, shard, request));
        }
    }

    fn sleep_until(&self, physical_ns: u64) -> BoxFuture<'static, ()> {
        let now = self.inner.hlc.physical_now_ns();
        if physical_ns > now {
            geodb_storage::wait::blocking(|| std::thread::sleep(Duration::from_nanos(physical_ns - now)));
        }
        Box::pin(futures::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc;

    use geodb_storage::{ColumnFamily, HookedEngine, MemoryEngine, ScopedEngine, WriteOp};
    use geodb_txn::transaction::CoordinatorFaults;
    use geodb_txn::{Hlc, Isolation, ManagerConfig, OneShard, SystemClock, Timestamp, TxnManager, shard_prefix};

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

    /// A memory engine whose synced writes of the Paxos log wait while the
    /// gate is closed, and fail once it opens if `failing` is set (a disk
    /// gone mid-write).
    struct StallingEngine {
        engine: Arc<HookedEngine>,
        memory: Arc<MemoryEngine>,
        gate: Arc<Gate>,
    }

    #[derive(Default)]
    struct Gate {
        closed: Mutex<bool>,
        changed: std::sync::Condvar,
        /// Synced log writes that found the gate closed.
        stalled: AtomicU64,
        failing: AtomicBool,
    }

    impl StallingEngine {
        fn new() -> Self {
            let gate = Arc::new(Gate::default());
            let hook_gate = gate.clone();
            let memory = Arc::new(MemoryEngine::new());
            let engine = HookedEngine::new(memory.clone(), move |batch, durability| {
                let log = batch.ops().iter().any(|op| match op {
                    WriteOp::Put { cf, .. } | WriteOp::Delete { cf, .. } => *cf == ColumnFamily::PaxosLog,
                });
                if durability == Durability::Sync && log {
                    let mut closed = hook_gate.closed.lock().unwrap();
                    let held = *closed;
                    if held {
                        hook_gate.stalled.fetch_add(1, Ordering::SeqCst);
                        hook_gate.changed.notify_all();
                    }
                    while *closed {
                        closed = hook_gate.changed.wait(closed).unwrap();
                    }
                    if held && hook_gate.failing.load(Ordering::SeqCst) {
                        return Err(geodb_storage::Error::Engine("IO error: injected".into()));
                    }
                }
                Ok(())
            });
            StallingEngine { engine: Arc::new(engine), memory, gate }
        }

        fn set_closed(&self, closed: bool) {
            *self.gate.closed.lock().unwrap() = closed;
            self.gate.changed.notify_all();
        }

        /// Waits until a synced log write is held at the gate (bounded).
        fn wait_stalled(&self) {
            wait_until("a log write reached the closed gate", || self.gate.stalled.load(Ordering::SeqCst) > 0);
        }
    }

    /// Polls `condition` until it holds (bounded: a failure, not a timing).
    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn start(engine: Arc<HookedEngine>) -> (Arc<Driver>, Arc<TxnManager>) {
        start_with(engine, |_| {})
    }

    /// A one-voter group on `engine`, its driver running, and a transaction
    /// manager over it; returns once the shard serves (bounded wait).
    fn start_with(
        engine: Arc<HookedEngine>,
        configure: impl FnOnce(&mut paxos::Config),
    ) -> (Arc<Driver>, Arc<TxnManager>) {
        let (inputs, receiver) = mpsc::sync_channel(INPUT_QUEUE_MAX);
        let calls = Arc::new(Calls::default());
        let hlc = Arc::new(Hlc::new(Box::new(SystemClock), 1_000_000));
        let view: Arc<dyn Engine> = Arc::new(ScopedEngine::new(engine.clone(), shard_prefix(GROUP.0)));
        let shard = Arc::new(Shard::open(GROUP.0, view, hlc.clone(), true).unwrap());
        let mut config = paxos::Config::new(GROUP, NODE, vec![NODE], 0);
        config.heartbeat_interval_us = 2_000;
        config.election_timeout_us = 10_000;
        configure(&mut config);
        let spec = GroupSpec { config, shard: shard.clone(), snapshot_interval: 0, closing: None };
        let driver = Driver::start(
            HostConfig::new(NODE),
            hlc.clone(),
            engine.clone(),
            vec![spec],
            Box::new(|_| {}),
            inputs,
            receiver,
            calls,
        )
        .unwrap();
        let rpc = ClusterRpc::new(
            driver.clone(),
            Box::new(|_| false),
            hlc.clone(),
            [NODE].into(),
            vec![shard.clone()],
            BTreeMap::new(),
        );
        let txns = TxnManager::with_config(ManagerConfig {
            node: NODE.0,
            hlc,
            rpc: Arc::new(rpc),
            router: Arc::new(OneShard(GROUP.0)),
            ids_engine: Some(engine),
            first_id: 1,
            commit_wait: true,
            faults: CoordinatorFaults::default(),
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !shard.is_serving() {
            assert!(Instant::now() < deadline, "the single voter never started serving");
            std::thread::sleep(Duration::from_millis(2));
        }
        (driver, txns)
    }

    fn write_at(txns: &Arc<TxnManager>, isolation: Isolation, key: &[u8]) -> geodb_txn::Result<Timestamp> {
        let mut txn = txns.begin(isolation)?;
        txn.put(key.to_vec(), b"v".to_vec())?;
        txn.commit()
    }

    #[test]
    fn commits_survive_a_restart_from_the_log() {
        let engine = BreakableEngine::new().engine;
        let (driver, txns) = start(engine.clone());
        for key in [b"a", b"b", b"c"] {
            write_at(&txns, Isolation::Serializable, key).unwrap();
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
        write_at(&txns, Isolation::Serializable, b"d").unwrap();
        driver.stop();
    }

    #[test]
    fn every_answered_commit_survives_a_crash_with_a_log_write_in_flight() {
        let stalling = StallingEngine::new();
        let (driver, txns) = start_with(stalling.engine.clone(), |config| {
            // As the server's shards: accepts beside the leader's own write.
            config.early_accepts = true;
            config.window_slots_max = 8;
        });
        // Four clients commit keys of their own; their log writes and
        // applies interleave as they come.
        let answered = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let (txns, answered) = (txns.clone(), answered.clone());
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let key = format!("k{client}-{i}").into_bytes();
                        if write_at(&txns, Isolation::ReadCommitted, &key).is_err() {
                            return;
                        }
                        answered.lock().unwrap().push(key);
                    }
                })
            })
            .collect();
        wait_until("some commits answered", || answered.lock().unwrap().len() >= 40);
        // The disk fails in the middle of a log write, with the clients'
        // next commits waiting on it, and the machine crashes: buffered
        // writes (the applies) since the last synced one are lost.
        stalling.gate.failing.store(true, Ordering::SeqCst);
        stalling.set_closed(true);
        stalling.wait_stalled();
        stalling.set_closed(false);
        for client in clients {
            client.join().unwrap();
        }
        wait_until("replication stopped", || driver.published().failed.is_some());
        driver.stop();
        drop(txns);
        stalling.memory.crash();
        stalling.gate.failing.store(false, Ordering::SeqCst);
        let answered = answered.lock().unwrap().clone();
        // Restarted from what the disk kept: every answered commit is there.
        let (driver, txns) = start(stalling.engine.clone());
        let mut txn = txns.begin(Isolation::Serializable).unwrap();
        for key in &answered {
            assert_eq!(txn.get(key).unwrap().as_deref(), Some(&b"v"[..]), "{}", String::from_utf8_lossy(key));
        }
        drop(txn);
        write_at(&txns, Isolation::Serializable, b"after").unwrap();
        driver.stop();
    }

    #[test]
    fn a_failed_log_write_stops_replication_without_claiming_anything_was_not_committed() {
        let BreakableEngine { engine, broken } = BreakableEngine::new();
        let (driver, txns) = start(engine);
        write_at(&txns, Isolation::Serializable, b"before").unwrap();
        broken.store(true, Ordering::SeqCst);
        // A blind write: its proposal is the first thing the driver persists
        // after the disk broke.
        let error = write_at(&txns, Isolation::ReadCommitted, b"during").unwrap_err();
        // Proposed, then the log write failed: the outcome is unknown to
        // the client (never "not committed, retry").
        assert!(matches!(error, geodb_txn::Error::OutcomeUnknown(_)), "{error}");
        let published = driver.published();
        assert!(published.failed.is_some() && published.groups[&GROUP].leader.is_none(), "{published:?}");
        // Nothing more is served, even once the disk recovers.
        broken.store(false, Ordering::SeqCst);
        let mut txn = txns.begin(Isolation::Serializable).unwrap();
        assert!(txn.get(b"before").is_err());
        assert!(write_at(&txns, Isolation::ReadCommitted, b"after").is_err());
        driver.stop();
    }
}
