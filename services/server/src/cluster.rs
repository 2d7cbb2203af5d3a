//! A node's part in a multi-node cluster: its shards' Multi-Paxos groups,
//! the transport to the other nodes, and where requests should go.
//!
//! Placement is static, from the `[cluster]` section every node shares: the
//! shard map (`geodb_geo::shardmap`) names the system shard, the global
//! shard and each region's home shards, with voters and learners by the
//! survival goal, and every node holds a replica (voter or learner) of
//! every shard. Each replica's state machine is a [`Shard`] over this
//! node's slice of the engine (its key prefix); the replication driver
//! runs them all (`replication`).
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
use geodb_geo::placement::NodePlace;
use geodb_geo::shardmap::{ShardMap, ShardRole};
use geodb_geo::{LatencyMatrix, NodeId, Region, Zone};
use geodb_sql::SqlRouter;
use geodb_storage::{Engine, ScopedEngine};
use geodb_txn::host::HostConfig;
use geodb_txn::transaction::CoordinatorFaults;
use geodb_txn::{Hlc, ManagerConfig, NodeMessage, Shard, TxnManager, shard_prefix, stamp_messages};

use crate::config::{ClusterConfig, Config};
use crate::replication::{Calls, ClusterRpc, Driver, GroupSpec, Inbox};
use crate::tls::Tls;
use crate::transport::{FaultClock, Faults, Transport, TransportConfig};

pub use geodb_txn::host::COMMIT_WINDOW_SLOTS;

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
    /// Their scheme: `https` when the nodes have certificates.
    pub scheme: &'static str,
    regions: BTreeMap<NodeId, Region>,
    /// Every shard of the cluster, where it is homed and placed.
    pub map: ShardMap,
    /// Where keys live, and the homes this node learned.
    pub router: Arc<SqlRouter>,
}

impl Cluster {
    /// Starts this node's side of the cluster over `engine`: the transport
    /// on `peer_listener`, the replication driver hosting this node's
    /// replica of every shard of the shard map, and the transaction manager
    /// that coordinates transactions across them.
    pub fn start(
        config: &Config,
        engine: Arc<dyn Engine>,
        peer_listener: tokio::net::TcpListener,
        faults: Arc<Faults>,
        tls: Option<Arc<Tls>>,
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
        let map = ShardMap::new(&places, &home, cluster.survival, cluster.shards_per_region, &latency)
            .map_err(|error| error.to_string())?;
        let regions: BTreeMap<NodeId, Region> = places.iter().map(|place| (place.id, place.region.clone())).collect();
        let region = regions.get(&node).cloned().ok_or("this node is not in cluster.nodes")?;

        let (inputs, receiver) = mpsc::sync_channel(crate::replication::INPUT_QUEUE_MAX);
        let calls = Arc::new(Calls::default());
        let max_offset_ns = config.max_clock_offset_ms.saturating_mul(1_000_000);
        // The operating system's clock, moved only by `clock_skew` fault rules
        // (`--admin-faults`).
        let hlc = Arc::new(Hlc::new(Box::new(FaultClock::new(node, faults.clone())), max_offset_ns));
        let mut specs = Vec::new();
        let mut shards = Vec::new();
        let global_lead_ns = cluster.global_lead_ms(config.max_clock_offset_ms)?.saturating_mul(1_000_000);
        for spec in &map.shards {
            let placement = &spec.placement;
            if !placement.voters.contains(&node) && !placement.learners.contains(&node) {
                continue;
            }
            // The initial membership; later changes go through the log,
            // and `/v1/cluster` shows the current one from the replica.
            let mut group = paxos::Config::new(GroupId(spec.id), node, placement.voters.clone(), 0);
            group.learners = placement.learners.clone();
            group.preferred_leader = placement.preferred_leader;
            group.heartbeat_interval_us = cluster.heartbeat_interval_ms * 1_000;
            group.election_timeout_us = cluster.election_timeout_ms * 1_000;
            group.placement_delay_us = cluster.election_timeout_ms * 1_000;
            group.seed = cluster.id ^ spec.id.rotate_left(32);
            let voters_rtt_us = placement
                .voters
                .iter()
                .flat_map(|a| placement.voters.iter().map(move |b| (a, b)))
                .filter_map(|(a, b)| latency.rtt_us(regions.get(a)?, regions.get(b)?))
                .max()
                .unwrap_or(0);
            group.window_slots_max = cluster.commit_window_slots.unwrap_or(
                if voters_rtt_us >= crate::config::PIPELINE_VOTER_RTT_MIN_MS * 1_000 { COMMIT_WINDOW_SLOTS } else { 1 },
            );
            // Whatever window an earlier run of this cluster used, a new
            // leader pads past it (the window may be lowered across a restart).
            group.padding_slots_min = crate::config::COMMIT_WINDOW_SLOTS_MAX;
            group.leases = cluster.leader_leases;
            group.early_accepts = true;
            // Idle shards fall quiet: a node holds thousands of them.
            group.quiesce = true;
            group.snapshot_chunk_bytes = usize::try_from(cluster.snapshot_chunk_kib * 1024).unwrap_or(usize::MAX);
            let view: Arc<dyn Engine> = Arc::new(ScopedEngine::new(engine.clone(), shard_prefix(spec.id)));
            let shard = Arc::new(
                Shard::open(spec.id, view, hlc.clone(), true)
                    .map_err(|e| format!("cannot open shard {}: {e}", spec.id))?,
            );
            shards.push(shard.clone());
            // R14: the global shard closes timestamps, so that every region
            // reads it locally; a heartbeat interval apart.
            let closing = (spec.role == ShardRole::Global)
                .then_some((global_lead_ns, cluster.heartbeat_interval_ms.saturating_mul(1_000)));
            specs.push(GroupSpec {
                config: group,
                shard,
                snapshot_interval: cluster.snapshot_interval_entries,
                closing,
            });
        }

        let transport_config = TransportConfig {
            node,
            // Nodes that disagree on where keys live, on who votes in a
            // shard's first configuration, or on how many slots a leader
            // may leave in flight (a new leader pads that many), must not talk.
            cluster: cluster.id
                ^ geodb_geo::shardmap::locality_hash(
                    format!(
                        "{} voters={} window={:?}",
                        cluster.layout(),
                        map.voters_digest(),
                        cluster.commit_window_slots
                    )
                    .as_bytes(),
                ),
            peers: cluster.nodes.iter().map(|node| (NodeId(node.id), node.peer)).collect(),
            regions: regions.clone(),
            latency: latency.clone(),
            latency_scale: 1.0,
            tls: tls.clone(),
            protocol_version_max: cluster.protocol_version_max.unwrap_or(crate::transport::PROTOCOL_VERSION),
        };
        let inbound = Inbox { inputs: inputs.clone(), calls: calls.clone(), hlc: hlc.clone() };
        let transport = Transport::start(transport_config, peer_listener, faults.clone(), inbound)
            .map_err(|error| error.to_string())?;
        let watcher = transport.clone();
        calls.set_silence(Box::new(move |peer| {
            // This node answers its own calls; a peer never heard from is
            // as silent as one heard from long ago.
            peer != node
                && watcher.silent_for(peer).is_none_or(|silence| silence >= crate::replication::SILENT_PEER_AFTER)
        }));
        let (sender, clock) = (transport.clone(), hlc.clone());
        let mut host = HostConfig::new(node);
        host.peers = places.iter().map(|place| place.id).collect();
        host.traffic = cluster.auto_rehome.traffic();
        host.follow = cluster.follow_workload.follow();
        host.regions = places
            .iter()
            .filter_map(|place| Some((place.id, map.regions.iter().position(|known| *known == place.region)? as u32)))
            .collect();
        host.homes = map
            .shards
            .iter()
            .filter(|spec| matches!(spec.role, ShardRole::Home { .. }))
            .filter_map(|spec| Some((spec.id, map.regions.iter().position(|known| *known == spec.home)? as u32)))
            .collect();
        let driver = Driver::start(
            host,
            hlc.clone(),
            engine.clone(),
            specs,
            Box::new(move |mut messages: Vec<NodeMessage>| {
                stamp_messages(&clock, &mut messages);
                sender.send(messages)
            }),
            inputs,
            receiver,
            calls,
        )?;
        let (sender, clock) = (transport.clone(), hlc.clone());
        let neighbours = regions.iter().filter(|(_, other)| **other == region).map(|(id, _)| *id).collect();
        let rpc = ClusterRpc::new(
            driver.clone(),
            // Not to a peer whose connection is down: the request would be
            // dropped unsent, and its caller wait for nothing.
            Box::new(move |mut message: NodeMessage| {
                stamp_messages(&clock, std::slice::from_mut(&mut message));
                sender.is_connected(message.to) && sender.try_send_one(message)
            }),
            hlc.clone(),
            neighbours,
            shards.clone(),
            remote_voters(&map, node),
        );
        let router = Arc::new(SqlRouter::cluster(map.clone(), &region)?);
        let txns = TxnManager::with_config(ManagerConfig {
            node: node.0,
            hlc,
            rpc: Arc::new(rpc),
            router: router.clone(),
            ids_engine: Some(engine),
            first_id: 1,
            commit_wait: true,
            faults: CoordinatorFaults::default(),
        })
        .map_err(|e| format!("cannot open transactions: {e}"))?;
        txns.set_early_prepare(cluster.early_prepare);
        txns.observe_commit_waits(Box::new(|isolation, waited| {
            metrics::histogram!(crate::telemetry::names::COMMIT_WAIT_SECONDS, "isolation" => isolation.label())
                .record(waited.as_secs_f64());
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            // Reuse a pooled connection only while it is fresh: one the
            // target closed as it idled would fail a request after sending,
            // which the gateway must report as an unknown outcome.
            .pool_idle_timeout(Duration::from_secs(5));
        // Over TLS, the gateway trusts the cluster's CA only, and presents
        // its node certificate.
        let client = match &tls {
            Some(tls) => client.use_preconfigured_tls(tls.client_config()),
            None => client,
        };
        let client = client.build().map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let cluster = Cluster {
            config: cluster,
            node,
            region,
            latency,
            driver,
            transport,
            faults,
            client,
            scheme,
            regions,
            map,
            router,
        };
        Ok((Arc::new(cluster), txns, shards))
    }

    /// The leader of `shard` as this node knows it.
    pub fn leader(&self, shard: u64) -> Option<NodeId> {
        self.driver.leader_of(shard)
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

    /// Where a request that must run on `shard`'s leader (a membership
    /// change) goes.
    pub fn route_to_leader(&self, shard: u64) -> Route {
        match self.leader(shard) {
            Some(leader) if leader == self.node => Route::Local,
            Some(leader) if self.cut_off_from(leader) => {
                Route::Unavailable(format!("the leader of shard {shard} (node {}) is unreachable", leader.0))
            }
            Some(leader) => match self.http_of(leader) {
                Some(http) => Route::Forward { node: leader, http },
                None => Route::Unavailable(format!("node {} has no known HTTP address", leader.0)),
            },
            None => Route::Unavailable(format!("shard {shard} has no leader right now (an election is under way)")),
        }
    }

    /// Stops replication and the transport.
    pub fn stop(&self) {
        self.driver.stop();
        self.transport.shutdown();
    }
}

/// The voters, preferred leader first, of every shard `node` holds no
/// replica of (the other regions' outboxes).
fn remote_voters(map: &ShardMap, node: NodeId) -> BTreeMap<u64, Vec<NodeId>> {
    map.shards
        .iter()
        .filter(|spec| !spec.placement.voters.contains(&node) && !spec.placement.learners.contains(&node))
        .map(|spec| {
            let mut voters = spec.placement.voters.clone();
            if let Some(preferred) = spec.placement.preferred_leader
                && let Some(at) = voters.iter().position(|voter| *voter == preferred)
            {
                voters.swap(0, at);
            }
            (spec.id, voters)
        })
        .collect()
}
