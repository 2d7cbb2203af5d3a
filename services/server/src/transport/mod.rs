//! The node-to-node transport: Paxos envelopes over TCP, with an emulated
//! wide-area network and fault rules.
//!
//! Every Multi-Paxos group of a node talks to the other nodes through one
//! [`Transport`]. It keeps one TCP connection per ordered pair of nodes
//! (the sender dials, the receiver accepts), carrying the envelopes of all
//! groups, batched: whatever is queued for a peer when its writer wakes goes
//! out as one frame. The wire format (module `frame`): a `u32` big-endian
//! length, a version tag, and a postcard body — a hello naming the dialing
//! node and cluster, then batches of envelopes. A node speaks every version
//! from [`PROTOCOL_VERSION_MIN`] to [`PROTOCOL_VERSION`] (or to
//! [`TransportConfig::protocol_version_max`]), and each connection the
//! newest both ends speak ([`Transport::peer_versions`]): the dialer steps
//! down a version each time a peer closes the connection on its hello, so
//! a node of a newer version joins a cluster of an older one.
//!
//! ```text
//!  driver thread                     tokio runtime, one writer task per peer
//!  send(envelopes) ─► peer queue ─► delay queue ──► TCP ──► reader task ─► Inbound
//!    cut? drop        PEER_QUEUE_MAX  one-way latency          cut? drop     (driver)
//!    full? drop                       cut at expiry? drop      to ≠ node? drop
//! ```
//!
//! What it guarantees, and what it does not:
//!
//! - [`Transport::send`] never blocks and never waits for the network: it is
//!   called from the synchronous thread that drives Paxos. When a peer's
//!   queue is full, or the peer is unreachable, envelopes are dropped and
//!   counted; Paxos retransmits what matters (heartbeats, catch-up), so a
//!   lossy transport is correct and a blocking one would stall every group.
//! - Envelopes from one node to another arrive in the order they were sent,
//!   or not at all, as long as the connection holds. Across a reconnection
//!   an envelope may be lost, and when a connection is replaced by a newer
//!   version's (module `writer`) the old one's last envelopes may arrive
//!   after the new one's first; Paxos tolerates loss and reordering anyway,
//!   and coordinators retry what gets no answer.
//! - One slow or dead peer never delays the others: each has its own queue,
//!   writer task and connection. A writer whose connection fails reconnects
//!   with exponential backoff (10 ms doubling to 1 s, jittered).
//! - Nothing a peer sends can crash the node: a frame that is too long, has
//!   another version tag, names another cluster, or does not decode is
//!   logged at warn and counted, and its connection is closed.
//!   Envelopes addressed to another node, or claiming to come from a node
//!   other than the connection's, are dropped and counted
//!   (`MultiPaxos::step` asserts that an envelope is for its node).
//! - Wide-area emulation: each batch to a peer waits the one-way latency
//!   between the two nodes' regions (half the round trip of the
//!   [`LatencyMatrix`], times [`TransportConfig::latency_scale`]) before it is
//!   written, counted from when `send` took it. The delay is constant per
//!   pair, so a FIFO queue per peer keeps the order. Running a whole multi-region cluster on one machine with
//!   realistic latencies is what `geodb dev` and the geo benchmarks need
//!   (`docs/benchmarks.md`).
//! - Fault rules ([`Faults`], shared as `Arc<Faults>`) cut directed links;
//!   they are checked on send, when a delay expires, and on receive.
//!
//! Received envelopes go to an [`Inbound`]: a `std::sync::mpsc::SyncSender`
//! (see [`inbound_channel`]) so that a plain thread can receive them, or a
//! `tokio::sync::mpsc::Sender`, or anything else that takes an envelope
//! without blocking. A full inbound queue drops, like a full peer queue.
//!
//! With certificates ([`TransportConfig::tls`]), every connection is mutual
//! TLS (`crate::tls`): the dialer checks that it reached the node it
//! dialed, and the acceptor that the hello names the node the certificate
//! was made for; a connection that fails either is closed before any batch
//! is read, logged and counted (`geodb_tls_connections_refused_total`).
//!
//! Counts are kept per transport ([`Transport::stats`]) and reported as
//! metrics (`geodb_transport_*` in [`crate::telemetry::names`]).

mod faults;
mod frame;
mod reader;
pub mod timer;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use geodb_geo::{LatencyMatrix, NodeId, Region};
use geodb_txn::NodeMessage;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

pub use faults::{CLOCK_SKEW_MS_MAX, FAULT_RULES_MAX, FaultClock, FaultRule, Faults, TooManyRules};
pub use frame::{FRAME_BYTES_MAX, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};

use crate::telemetry::names;
use crate::tls::Tls;
use writer::{PeerWriter, Queued};

/// Envelopes queued for one peer before `send` starts dropping: several
/// ticks' worth of heartbeats and accepts for a thousand groups. As many
/// again may wait out the emulated delay in the peer's writer.
pub const PEER_QUEUE_MAX: usize = 8192;

/// Suggested bound of the inbound queue ([`inbound_channel`]): a driver that
/// falls this far behind is overloaded, and Paxos retransmits what is dropped.
pub const INBOUND_QUEUE_MAX: usize = 65_536;

/// Where received envelopes go. Called on a runtime worker thread, once per
/// envelope, in the order they arrived from each peer.
///
/// Implementations must not block; `false` means the envelope was not taken
/// (queue full or receiver gone), and the transport drops and counts it.
pub trait Inbound: Send + Sync + 'static {
    fn deliver(&self, envelope: NodeMessage) -> bool;

    /// The outbound connection to `peer` closed: whatever was sent to it and
    /// not yet answered may never be.
    fn link_lost(&self, _peer: NodeId) {}
}

impl Inbound for std::sync::mpsc::SyncSender<NodeMessage> {
    fn deliver(&self, envelope: NodeMessage) -> bool {
        self.try_send(envelope).is_ok()
    }
}

impl Inbound for mpsc::Sender<NodeMessage> {
    fn deliver(&self, envelope: NodeMessage) -> bool {
        self.try_send(envelope).is_ok()
    }
}

/// A bounded std channel for received envelopes, for a plain thread to
/// receive from.
pub fn inbound_channel() -> (std::sync::mpsc::SyncSender<NodeMessage>, std::sync::mpsc::Receiver<NodeMessage>) {
    std::sync::mpsc::sync_channel(INBOUND_QUEUE_MAX)
}

/// Refuses a newest version to speak that this node does not speak.
pub fn check_protocol_version_max(version: u8) -> Result<(), String> {
    if (PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&version) {
        Ok(())
    } else {
        Err(format!(
            "protocol version {version}: this node speaks wire versions {PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}"
        ))
    }
}

/// What a node's transport needs to know.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node.
    pub node: NodeId,
    /// The cluster's id; a peer that says another is refused.
    pub cluster: u64,
    /// Where each peer accepts connections. May include this node (skipped).
    /// Only these nodes may connect, and only these can be sent to.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Each node's region, this one included: for the emulated latency and
    /// for region partitions. A node of no known region gets no delay.
    pub regions: BTreeMap<NodeId, Region>,
    /// Round trips between regions.
    pub latency: LatencyMatrix,
    /// Multiplies every emulated delay: 1.0 as published, less in tests,
    /// 0.0 for none.
    pub latency_scale: f64,
    /// Mutual TLS with every peer, by node certificates; `None`: plaintext.
    pub tls: Option<Arc<Tls>>,
    /// The newest wire version to speak, from [`PROTOCOL_VERSION_MIN`] to
    /// [`PROTOCOL_VERSION`] (the default): lower, the node dials, accepts and
    /// answers exactly as a node of that version does.
    pub protocol_version_max: u8,
}

impl TransportConfig {
    /// The emulated one-way delay from this node to `peer`.
    fn delay_to(&self, peer: NodeId) -> Result<Duration, InvalidConfig> {
        let (Some(here), Some(there)) = (self.regions.get(&self.node), self.regions.get(&peer)) else {
            tracing::warn!(node = %self.node, %peer, "no region known for the link: no emulated latency");
            return Ok(Duration::ZERO);
        };
        let Some(one_way_us) = self.latency.one_way_us(here, there) else {
            tracing::warn!(%here, %there, "regions missing from the latency matrix: no emulated latency");
            return Ok(Duration::ZERO);
        };
        Duration::try_from_secs_f64(one_way_us as f64 / 1e6 * self.latency_scale)
            .map_err(|error| InvalidConfig(format!("latency scale {}: {error}", self.latency_scale)))
    }
}

/// The error of a configuration the transport cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transport config: {0}")]
pub struct InvalidConfig(String);

/// Why envelopes were dropped (the `reason` label of
/// `geodb_transport_envelopes_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The peer's queue was full.
    QueueFull,
    /// A fault rule cut the link.
    Fault,
    /// Sent to a node that is not a peer.
    UnknownPeer,
    /// No connection to the peer when it was due, or the write failed.
    Disconnected,
    /// Longer than a frame can be on its own.
    TooLong,
    /// Received for another node.
    WrongDestination,
    /// Claimed to come from a node other than its connection's (or, on
    /// send, from a node other than this one).
    WrongSender,
    /// The inbound queue refused it (full or closed).
    InboundRefused,
    /// Sent after shutdown.
    Shutdown,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::QueueFull,
        DropReason::Fault,
        DropReason::UnknownPeer,
        DropReason::Disconnected,
        DropReason::TooLong,
        DropReason::WrongDestination,
        DropReason::WrongSender,
        DropReason::InboundRefused,
        DropReason::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Fault => "fault",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::Disconnected => "disconnected",
            DropReason::TooLong => "too_long",
            DropReason::WrongDestination => "wrong_destination",
            DropReason::WrongSender => "wrong_sender",
            DropReason::InboundRefused => "inbound_refused",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// Why a received frame closed its connection (the `reason` label of
/// `geodb_transport_frames_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// Its length prefix exceeds [`FRAME_BYTES_MAX`] (or is zero).
    TooLong,
    /// Its version tag is not one this node speaks (or, after the hello,
    /// not the connection's).
    Version,
    /// Its hello names another cluster.
    Cluster,
    /// Its body does not decode.
    Decode,
    /// No hello first, a second hello, a hello too late, or one from a node
    /// that is not a peer.
    Handshake,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::TooLong,
        RejectReason::Version,
        RejectReason::Cluster,
        RejectReason::Decode,
        RejectReason::Handshake,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::TooLong => "too_long",
            RejectReason::Version => "version",
            RejectReason::Cluster => "cluster",
            RejectReason::Decode => "decode",
            RejectReason::Handshake => "handshake",
        }
    }
}

/// A transport's counts since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Envelopes handed to the inbound.
    pub delivered: u64,
    /// Connection attempts after the first, per peer.
    pub reconnects: u64,
    /// Dropped envelopes, every reason present.
    pub dropped: BTreeMap<DropReason, u64>,
    /// Refused frames, every reason present.
    pub rejected: BTreeMap<RejectReason, u64>,
}

#[derive(Debug, Default)]
struct Counters {
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_received: AtomicU64,
    delivered: AtomicU64,
    reconnects: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

/// What the transport's tasks share.
struct Shared {
    node: NodeId,
    /// The `node` label of this transport's metrics (as the Paxos metrics):
    /// the nodes of an in-process cluster share one recorder.
    node_label: String,
    cluster: u64,
    /// The nodes allowed to connect: the configured peers.
    peers: BTreeSet<NodeId>,
    regions: BTreeMap<NodeId, Region>,
    faults: Arc<Faults>,
    inbound: Box<dyn Inbound>,
    counters: Counters,
    closed: AtomicBool,
    /// The wire versions this node speaks.
    versions: std::ops::RangeInclusive<u8>,
    /// Peers whose outbound connection is up right now, and what it speaks.
    connected: std::sync::Mutex<BTreeMap<NodeId, PeerVersion>>,
    /// When each peer's last frame arrived (not counting frames a fault
    /// rule cut). Every node pings every other once a second.
    heard: std::sync::Mutex<BTreeMap<NodeId, Instant>>,
    tls: Option<Arc<Tls>>,
}

/// The wire version of this node's connection to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerVersion {
    /// What the connection speaks: the newest version both ends speak.
    pub speaking: u8,
    /// The newest version the peer speaks, as its welcome named it; `None`
    /// for a connection of a version without welcomes (17).
    pub newest: Option<u8>,
}

impl Shared {
    /// Records the connection to `peer` up (`Some`: speaking what) or down
    /// (its version gauge 0). After shutdown every connection is down,
    /// whatever a writer still finishing says.
    fn set_connected(&self, peer: NodeId, version: Option<PeerVersion>) {
        let mut connected = self.connected.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let version = version.filter(|_| !self.closed.load(Ordering::Relaxed));
        match version {
            Some(version) => connected.insert(peer, version),
            None => connected.remove(&peer),
        };
        metrics::gauge!(names::TRANSPORT_PEER_PROTOCOL_VERSION, "node" => self.node_label.clone(), "peer" => peer.0.to_string())
            .set(version.map_or(0.0, |version| f64::from(version.speaking)));
    }

    /// Whether a fault rule cuts `from → to`.
    fn cut(&self, from: NodeId, to: NodeId) -> bool {
        self.faults.cuts(from, self.regions.get(&from), to, self.regions.get(&to))
    }

    fn count_dropped(&self, reason: DropReason, envelopes: usize) {
        if envelopes == 0 {
            return;
        }
        let envelopes = envelopes as u64;
        self.counters.dropped[reason as usize].fetch_add(envelopes, Ordering::Relaxed);
        metrics::counter!(names::TRANSPORT_ENVELOPES_DROPPED, "node" => self.node_label.clone(), "reason" => reason.label()).increment(envelopes);
    }

    fn count_rejected(&self, reason: RejectReason) {
        self.counters.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::TRANSPORT_FRAMES_REJECTED, "node" => self.node_label.clone(), "reason" => reason.label()).increment(1);
    }

    fn count_sent(&self, bytes: usize) {
        self.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        metrics::counter!(names::TRANSPORT_FRAMES_SENT, "node" => self.node_label.clone()).increment(1);
        metrics::counter!(names::TRANSPORT_BYTES_SENT, "node" => self.node_label.clone()).increment(bytes as u64);
    }

    fn count_received(&self, bytes: usize) {
        self.counters.frames_received.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
        metrics::counter!(names::TRANSPORT_FRAMES_RECEIVED, "node" => self.node_label.clone()).increment(1);
        metrics::counter!(names::TRANSPORT_BYTES_RECEIVED, "node" => self.node_label.clone()).increment(bytes as u64);
    }

    fn count_reconnect(&self) {
        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::TRANSPORT_RECONNECTS, "node" => self.node_label.clone()).increment(1);
    }

    /// Hands a received batch from `from` (the connection's node) to the inbound.
    fn deliver(&self, from: NodeId, envelopes: Vec<NodeMessage>) {
        if self.cut(from, self.node) {
            self.count_dropped(DropReason::Fault, envelopes.len());
            return;
        }
        self.heard.lock().unwrap_or_else(PoisonError::into_inner).insert(from, Instant::now());
        let mut tally = Tally::default();
        for envelope in envelopes {
            if envelope.to != self.node {
                tally.drop(DropReason::WrongDestination);
            } else if envelope.from != from {
                tally.drop(DropReason::WrongSender);
            } else if self.inbound.deliver(envelope) {
                tally.delivered += 1;
            } else {
                tally.drop(DropReason::InboundRefused);
            }
        }
        tally.flush(self);
    }
}

/// Counts of one call, reported once rather than per envelope.
#[derive(Default)]
struct Tally {
    delivered: u64,
    dropped: [usize; DropReason::ALL.len()],
}

impl Tally {
    fn drop(&mut self, reason: DropReason) {
        self.dropped[reason as usize] += 1;
    }

    fn flush(&self, shared: &Shared) {
        for reason in DropReason::ALL {
            shared.count_dropped(reason, self.dropped[reason as usize]);
        }
        if self.delivered > 0 {
            shared.counters.delivered.fetch_add(self.delivered, Ordering::Relaxed);
            metrics::counter!(names::TRANSPORT_ENVELOPES_DELIVERED, "node" => shared.node_label.clone())
                .increment(self.delivered);
        }
    }
}

/// A node's transport: a writer task per peer and an accept loop, on the
/// tokio runtime it was started on. Shuts down when dropped.
pub struct Transport {
    shared: Arc<Shared>,
    queues: BTreeMap<NodeId, mpsc::Sender<Queued>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Transport {
    /// Starts the accept loop on `listener` and a writer per peer, on the
    /// current tokio runtime (it must be called inside one). Writers start
    /// dialing at once. Received envelopes go to `inbound`.
    pub fn start(
        config: TransportConfig,
        listener: TcpListener,
        faults: Arc<Faults>,
        inbound: impl Inbound,
    ) -> Result<Arc<Transport>, InvalidConfig> {
        if !config.latency_scale.is_finite() || config.latency_scale < 0.0 {
            return Err(InvalidConfig(format!("latency scale {} is not a finite number ≥ 0", config.latency_scale)));
        }
        check_protocol_version_max(config.protocol_version_max).map_err(InvalidConfig)?;
        let peers: BTreeMap<NodeId, SocketAddr> =
            config.peers.iter().filter(|(peer, _)| **peer != config.node).map(|(peer, at)| (*peer, *at)).collect();
        let delays = peers
            .keys()
            .map(|peer| Ok((*peer, config.delay_to(*peer)?)))
            .collect::<Result<BTreeMap<NodeId, Duration>, InvalidConfig>>()?;
        let shared = Arc::new(Shared {
            node: config.node,
            node_label: config.node.0.to_string(),
            cluster: config.cluster,
            peers: peers.keys().copied().collect(),
            regions: config.regions,
            faults,
            inbound: Box::new(inbound),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            versions: PROTOCOL_VERSION_MIN..=config.protocol_version_max,
            connected: std::sync::Mutex::new(BTreeMap::new()),
            heard: std::sync::Mutex::new(BTreeMap::new()),
            tls: config.tls,
        });
        let mut queues = BTreeMap::new();
        let mut tasks = Vec::with_capacity(peers.len() + 1);
        for (peer, address) in peers {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MAX);
            queues.insert(peer, sender);
            // Down (its version gauge 0) until the writer's first dial.
            shared.set_connected(peer, None);
            let writer = PeerWriter::new(shared.clone(), peer, address, delays[&peer], receiver);
            tasks.push(tokio::spawn(writer.run()).abort_handle());
        }
        tasks.push(tokio::spawn(reader::accept_loop(shared.clone(), listener)).abort_handle());
        tracing::info!(
            node = %shared.node,
            peers = queues.len(),
            latency_scale = config.latency_scale,
            faults = %shared.faults.describe(),
            "transport started"
        );
        Ok(Arc::new(Transport { shared, queues, tasks: Mutex::new(tasks) }))
    }

    /// Queues envelopes for their destinations and returns at once; never
    /// blocks, so it can be called from a thread outside the runtime.
    ///
    /// Each envelope must be from this node. Envelopes to this node are
    /// handed straight to the inbound (no network, no delay, no fault).
    /// The rest are dropped and counted when their link is cut, their peer
    /// unknown, or its queue full.
    pub fn send(&self, envelopes: Vec<NodeMessage>) {
        let sent_at = Instant::now();
        let mut tally = Tally::default();
        for envelope in envelopes {
            match self.queue(envelope, sent_at) {
                Ok(true) => tally.delivered += 1,
                Ok(false) => {}
                Err(reason) => tally.drop(reason),
            }
        }
        tally.flush(&self.shared);
    }

    /// Queues one message: `Ok(true)` if it was delivered to this node's own
    /// inbound, `Ok(false)` if queued for its peer, else why it was dropped.
    fn queue(&self, envelope: NodeMessage, sent_at: Instant) -> Result<bool, DropReason> {
        if self.shared.closed.load(Ordering::Relaxed) {
            Err(DropReason::Shutdown)
        } else if envelope.from != self.shared.node {
            Err(DropReason::WrongSender)
        } else if envelope.to == self.shared.node {
            if self.shared.inbound.deliver(envelope) { Ok(true) } else { Err(DropReason::InboundRefused) }
        } else if let Some(queue) = self.queues.get(&envelope.to) {
            if self.shared.cut(envelope.from, envelope.to) {
                return Err(DropReason::Fault);
            }
            queue.try_send(Queued { sent_at, envelope }).map(|()| false).map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => DropReason::QueueFull,
                mpsc::error::TrySendError::Closed(_) => DropReason::Shutdown,
            })
        } else {
            Err(DropReason::UnknownPeer)
        }
    }

    /// Queues one message like [`Transport::send`]; answers whether it was
    /// taken (false: its link is cut, its peer unknown or its queue full).
    pub fn try_send_one(&self, message: NodeMessage) -> bool {
        let mut tally = Tally::default();
        let taken = match self.queue(message, Instant::now()) {
            Ok(delivered) => {
                tally.delivered += u64::from(delivered);
                true
            }
            Err(reason) => {
                tally.drop(reason);
                false
            }
        };
        tally.flush(&self.shared);
        taken
    }

    /// How long since `peer`'s last frame arrived (`None`: never).
    pub fn silent_for(&self, peer: NodeId) -> Option<Duration> {
        self.shared.heard.lock().unwrap_or_else(PoisonError::into_inner).get(&peer).map(Instant::elapsed)
    }

    /// Whether this node's connection to `peer` is up: a live process at
    /// the other end accepted it and has not closed it since.
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.shared.connected.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(&peer)
    }

    /// The wire version of each peer's connection that is up.
    pub fn peer_versions(&self) -> BTreeMap<NodeId, PeerVersion> {
        self.shared.connected.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The wire versions this node speaks.
    pub fn versions(&self) -> std::ops::RangeInclusive<u8> {
        self.shared.versions.clone()
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.shared.faults
    }

    /// This transport's counts since it started.
    pub fn stats(&self) -> Stats {
        let counters = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            frames_sent: load(&counters.frames_sent),
            bytes_sent: load(&counters.bytes_sent),
            frames_received: load(&counters.frames_received),
            bytes_received: load(&counters.bytes_received),
            delivered: load(&counters.delivered),
            reconnects: load(&counters.reconnects),
            dropped: DropReason::ALL.map(|reason| (reason, load(&counters.dropped[reason as usize]))).into(),
            rejected: RejectReason::ALL.map(|reason| (reason, load(&counters.rejected[reason as usize]))).into(),
        }
    }

    /// Stops the accept loop, the writers and every connection's task;
    /// their sockets close as the tasks are dropped. Later sends are dropped.
    /// Idempotent; also done on drop.
    pub fn shutdown(&self) {
        if self.shared.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        for task in self.tasks.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            task.abort();
        }
        for peer in &self.shared.peers {
            self.shared.set_connected(*peer, None);
        }
        tracing::info!(node = %self.shared.node, "transport shut down");
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}
