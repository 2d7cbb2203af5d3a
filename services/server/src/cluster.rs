//! A node's part in a multi-node cluster: its shards' Multi-Paxos groups,
//! the transport to the other nodes, and where requests should go.
//!
//! Placement is static, from the `[cluster]` section every node shares
//! (`geodb_geo::placement`): the data shard (group [`DATA_GROUP`]) is homed
//! in `cluster.home`, with voters and learners by the survival goal, and
//! every node holds a replica (voter or learner). Its state machine is a
//! [`Shard`] over this node's slice of the engine; the replication driver
//! runs it with the node's other groups (`replication`).
//!
//! Transactions run on the node a client talks to (the gateway): the
//! coordinator reads from and commits to each shard's leader through
//! [`ClusterRpc`], in place when this node leads. Sessions live on the node
//! that opened them; other gateways forward a session's requests there
//! (`http::forward`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use geodb_geo::paxos::{self, GroupId};
use geodb_geo::placement::{self, NodePlace};
use geodb_geo::{LatencyMatrix, NodeId, Region, Zone};
use geodb_storage::{Engine, ScopedEngine};
use geodb_txn::host::HostConfig;
use geodb_txn::transaction::CoordinatorFaults;
use geodb_txn::{Hlc, ManagerConfig, OneShard, Shard, SystemClock, TxnManager, shard_prefix};

use crate::config::{ClusterConfig, Config};
use crate::replication::{Calls, ClusterRpc, Driver, GroupSpec, Inbox};
use crate::transport::{Faults, Transport, TransportConfig};

/// The group of the data shard (the only shard for now: every table, the
/// catalog included).
pub const DATA_GROUP: GroupId = GroupId(1);

/// Slots a shard leader may have in flight: one. Transactions are validated
/// by the leader *before* they are proposed, against the log it knows. With
/// more than one slot in flight, a deposed leader's later slots could be
/// recovered and chosen by a future leader after a different value took an
/// earlier slot, so a commit would be applied after one it was never
/// validated against (a lost update), possibly with a smaller timestamp.
/// With one slot, a leader proposes slot s only once s − 1 is chosen, so
/// every value in the log was validated against exactly the chosen prefix
/// before it. Batching still packs every commit queued meanwhile into the
/// next slot. Validating again at apply time would allow a deeper pipeline.
pub const COMMIT_WINDOW_SLOTS: u64 = 1;

/// Where a request should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Here.
    Local,
    /// On this node (the shard's leader), at this HTTP address.
    Forward { node: NodeId, http: SocketAddr },
    /// Nowhere right now: no leader known (an election is under way) or the
    /// leader is cut off from this node.
    Unavailable(String),
}

/// A running node's cluster side.
pub struct Cluster {
    pub config: ClusterConfig,
    pub node: NodeId,
    pub region: Region,
    pub latency: LatencyMatrix,
    pub driver: Arc<Driver>,
    pub transport: Arc<Transport>,
    pub faults: Arc<Faults>,
    /// For forwarding requests to other nodes' HTTP APIs.
    pub client: reqwest::Client,
    regions: BTreeMap<NodeId, Region>,
}

impl Cluster {
    /// Starts this node's side of the cluster over `engine`: the transport
    /// on `peer_listener`, the replication driver, and the transaction
    /// manager whose commits go through the data shard's group.
    pub fn start(
        config: &Config,
        engine: Arc<dyn Engine>,
        peer_listener: tokio::net::TcpListener,
        faults: Arc<Faults>,
    ) -> Result<(Arc<Cluster>, Arc<TxnManager>, Vec<Arc<Shard>>), String> {
        let cluster = config.cluster.clone().ok_or("no [cluster] section")?;
        let node = NodeId(config.node_id);
        let latency = cluster.latency_matrix()?;
        let places: Vec<NodePlace> = cluster
            .nodes
            .iter()
            .map(|node| NodePlace {
                id: NodeId(node.id),
                region: Region(node.region.clone()),
                zone: Zone(node.zone.clone()),
            })
            .collect();
        let home = Region(cluster.home().to_string());
        let placement =
            placement::place(&places, &home, cluster.survival, &latency).map_err(|error| error.to_string())?;
        let regions: BTreeMap<NodeId, Region> = places.iter().map(|place| (place.id, place.region.clone())).collect();

        // The initial membership; later changes go through the log, and
        // `/v1/cluster` shows the current one from the replica.
        let mut group = paxos::Config::new(DATA_GROUP, node, placement.voters, 0);
        group.learners = placement.learners;
        group.preferred_leader = placement.preferred_leader;
        group.heartbeat_interval_us = cluster.heartbeat_interval_ms * 1_000;
        group.election_timeout_us = cluster.election_timeout_ms * 1_000;
        group.placement_delay_us = cluster.election_timeout_ms * 1_000;
        group.seed = cluster.id;
        group.window_slots_max = COMMIT_WINDOW_SLOTS;

        let (inputs, receiver) = mpsc::sync_channel(crate::replication::INPUT_QUEUE_MAX);
        let calls = Arc::new(Calls::default());
        let max_offset_ns = config.max_clock_offset_ms.saturating_mul(1_000_000);
        let hlc = Arc::new(Hlc::new(Box::new(SystemClock), max_offset_ns));
        let view: Arc<dyn Engine> = Arc::new(ScopedEngine::new(engine.clone(), shard_prefix(DATA_GROUP.0)));
        let shard = Arc::new(
            Shard::open(DATA_GROUP.0, view, hlc.clone(), true)
                .map_err(|e| format!("cannot open the data shard: {e}"))?,
        );

        let transport_config = TransportConfig {
            node,
            cluster: cluster.id,
            peers: cluster.nodes.iter().map(|node| (NodeId(node.id), node.peer)).collect(),
            regions: regions.clone(),
            latency: latency.clone(),
            latency_scale: 1.0,
        };
        let inbound = Inbox { inputs: inputs.clone(), calls: calls.clone() };
        let transport = Transport::start(transport_config, peer_listener, faults.clone(), inbound)
            .map_err(|error| error.to_string())?;
        let sender = transport.clone();
        let shards = vec![shard.clone()];
        let spec = GroupSpec { config: group, shard, snapshot_interval: cluster.snapshot_interval_entries };
        let driver = Driver::start(
            HostConfig::new(node),
            hlc.clone(),
            engine.clone(),
            vec![spec],
            Box::new(move |messages| sender.send(messages)),
            inputs,
            receiver,
            calls,
        )?;
        let sender = transport.clone();
        let here = regions.get(&node).cloned();
        let neighbours =
            regions.iter().filter(|(_, region)| Some(*region) == here.as_ref()).map(|(id, _)| *id).collect();
        let rpc = ClusterRpc::new(
            driver.clone(),
            Box::new(move |message| sender.try_send_one(message)),
            hlc.clone(),
            neighbours,
        );
        let txns = TxnManager::with_config(ManagerConfig {
            node: node.0,
            hlc,
            rpc: Arc::new(rpc),
            router: Arc::new(OneShard(DATA_GROUP.0)),
            ids_engine: Some(engine),
            first_id: 1,
            commit_wait: true,
            faults: CoordinatorFaults::default(),
        })
        .map_err(|e| format!("cannot open transactions: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            // Reuse a pooled connection only while it is fresh: one the
            // target closed as it idled would fail a request after sending,
            // which the gateway must report as an unknown outcome.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let region = regions.get(&node).cloned().ok_or("this node is not in cluster.nodes")?;
        let cluster = Cluster { config: cluster, node, region, latency, driver, transport, faults, client, regions };
        Ok((Arc::new(cluster), txns, shards))
    }

    /// The data shard's leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.driver.leader_of(DATA_GROUP.0)
    }

    /// A node's HTTP address.
    pub fn http_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.config.nodes.iter().find(|entry| entry.id == node.0).map(|entry| entry.http)
    }

    pub fn region_of(&self, node: NodeId) -> Option<&Region> {
        self.regions.get(&node)
    }

    /// The emulated one-way delay from this node to `to`.
    pub fn one_way(&self, to: NodeId) -> Duration {
        let micros = self.region_of(to).and_then(|region| self.latency.one_way_us(&self.region, region)).unwrap_or(0);
        Duration::from_micros(micros)
    }

    /// Whether a fault rule cuts this node off from `to` (either way).
    pub fn cut_off_from(&self, to: NodeId) -> bool {
        let (here, there) = (Some(&self.region), self.region_of(to));
        self.faults.cuts(self.node, here, to, there) || self.faults.cuts(to, there, self.node, here)
    }

    /// Where a request runs: on the shard leader unless it is a read-only
    /// request at a highly available level.
    /// Where a request that must run on the data shard's leader (a
    /// membership change) goes.
    pub fn route_to_leader(&self) -> Route {
        match self.leader() {
            Some(leader) if leader == self.node => Route::Local,
            Some(leader) if self.cut_off_from(leader) => {
                Route::Unavailable(format!("the leader of shard {} (node {}) is unreachable", DATA_GROUP.0, leader.0))
            }
            Some(leader) => match self.http_of(leader) {
                Some(http) => Route::Forward { node: leader, http },
                None => Route::Unavailable(format!("node {} has no known HTTP address", leader.0)),
            },
            None => {
                Route::Unavailable(format!("shard {} has no leader right now (an election is under way)", DATA_GROUP.0))
            }
        }
    }

    /// Stops replication and the transport.
    pub fn stop(&self) {
        self.driver.stop();
        self.transport.shutdown();
    }
}
