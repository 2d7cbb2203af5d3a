//! Running cluster nodes: `geodb dev` (a whole cluster in one process) and
//! `geodb start --config` with a `[cluster]` section (one node of a
//! multi-process cluster).
//!
//! `geodb dev` lays out the standard topology of `docs/benchmarks.md`:
//! regions us-east, us-central, eu-west (the first `--regions` of them),
//! `--nodes-per-region` nodes each in zones a, b, c, ...; node ids count
//! from 1 region by region. Every node serves the HTTP API (any node
//! forwards to the right one); the first node of each region is that
//! region's *gateway*, printed at start: the first region's on `--http`,
//! the next ones on the following ports. All nodes share one set of fault
//! rules, so `/v1/admin/faults` on any gateway governs the whole cluster.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geodb_geo::LatencyMatrix;
use geodb_geo::placement::Survival;
use tokio::net::TcpListener;

use crate::config::{ClusterConfig, Config, NodeAddress};
use crate::node::Node;
use crate::telemetry::{self, Metrics};
use crate::transport::Faults;

/// How long start-up waits for every shard to elect a leader before it
/// announces the cluster anyway (requests then answer 08006 until one is).
const LEADER_WAIT_MAX: Duration = Duration::from_secs(15);

/// The shape of a `geodb dev` cluster.
#[derive(Debug, Clone)]
pub struct DevShape {
    pub http: SocketAddr,
    /// The first gateway's PostgreSQL address; the others take the next
    /// ports (port 0 picks free ports). Nodes that are not gateways speak
    /// it on free ports.
    pub pg: SocketAddr,
    pub regions: u64,
    pub nodes_per_region: u64,
    pub latency_scale: f64,
    pub survival: Survival,
    pub admin_faults: bool,
    /// Shards per region for `home` tables.
    pub shards_per_region: u64,
    /// Leaders serve reads under leases (`cluster.leader_leases`).
    pub leader_leases: bool,
    /// Far rows read for writing are prepared with the read
    /// (`cluster.early_prepare`).
    pub early_prepare: bool,
    /// Slots a shard's leader keeps in flight (`cluster.commit_window_slots`;
    /// `None`: by where its voters are).
    pub commit_window_slots: Option<u64>,
    /// Moving keys to the region their traffic comes from (R19).
    pub auto_rehome: crate::config::AutoRehome,
    /// Moving shards' leaderships to the node their requests come from (R22).
    pub follow_workload: crate::config::FollowWorkload,
    /// Where spans are exported (OTLP/gRPC), if anywhere.
    pub otlp_endpoint: Option<String>,
}

/// Starts every node of a dev cluster in this process and serves until
/// SIGTERM or Ctrl-C.
pub async fn run_cluster(shape: DevShape, base: PathBuf, is_temporary: bool) -> Result<(), String> {
    let tracer = telemetry::init_tracing(shape.otlp_endpoint.as_deref())?;
    let standard = LatencyMatrix::standard();
    let mut listeners = Vec::new();
    let mut addresses = Vec::new();
    for r in 0..shape.regions {
        let region = standard.regions[r as usize].0.clone();
        for z in 0..shape.nodes_per_region {
            let id = r * shape.nodes_per_region + z + 1;
            let gateway = z == 0;
            let http = if gateway && shape.http.port() != 0 {
                SocketAddr::new(shape.http.ip(), shape.http.port() + r as u16)
            } else {
                SocketAddr::new(shape.http.ip(), 0)
            };
            let http_listener = crate::bind(http).await?;
            let pg = if gateway && shape.pg.port() != 0 {
                let port = shape.pg.port().checked_add(r as u16).ok_or("--pg: no port left for every gateway")?;
                SocketAddr::new(shape.pg.ip(), port)
            } else {
                SocketAddr::new(shape.pg.ip(), 0)
            };
            let pg_listener = crate::bind(pg).await?;
            let peer_listener = crate::bind(SocketAddr::new(shape.http.ip(), 0)).await?;
            let zone = char::from(b'a' + z as u8).to_string();
            addresses.push(NodeAddress {
                id,
                region: region.clone(),
                zone,
                http: http_listener.local_addr().map_err(|e| e.to_string())?,
                peer: peer_listener.local_addr().map_err(|e| e.to_string())?,
            });
            listeners.push((http_listener, peer_listener, pg_listener));
        }
    }
    let cluster = ClusterConfig {
        id: 1,
        nodes: addresses.clone(),
        home: None,
        survival: shape.survival,
        latency: None,
        latency_scale: shape.latency_scale,
        heartbeat_interval_ms: 50,
        election_timeout_ms: 500,
        snapshot_interval_entries: 10_000,
        snapshot_chunk_kib: 4 * 1024,
        admin_faults: shape.admin_faults,
        shards_per_region: shape.shards_per_region,
        leader_leases: shape.leader_leases,
        early_prepare: shape.early_prepare,
        commit_window_slots: shape.commit_window_slots,
        global_lead_ms: None,
        auto_rehome: shape.auto_rehome.clone(),
        follow_workload: shape.follow_workload.clone(),
        protocol_version_max: None,
    };
    let faults = Arc::new(Faults::new());
    let mut nodes = Vec::new();
    for (address, (http_listener, peer_listener, pg_listener)) in addresses.iter().zip(listeners) {
        let config = Config {
            node_id: address.id,
            region: address.region.clone(),
            zone: address.zone.clone(),
            http: address.http,
            pg: Some(pg_listener.local_addr().map_err(|e| e.to_string())?),
            data_dir: Some(base.join(format!("n{}", address.id))),
            cluster: Some(cluster.clone()),
            max_clock_offset_ms: crate::config::MAX_CLOCK_OFFSET_MS_ONE_MACHINE,
            ..Config::default()
        };
        config.check()?;
        let data_dir = config.data_dir.clone().expect("set above");
        let node = Node::open(config, &data_dir, Metrics::global(), Some((peer_listener, faults.clone())))?;
        nodes.push((node, http_listener, Some(pg_listener)));
    }
    let started: Vec<Arc<Node>> = nodes.iter().map(|(node, _, _)| node.clone()).collect();
    let settled = wait_for_leaders(&started).await;
    let shards = started.first().and_then(|node| node.cluster.as_ref()).map_or(0, |cluster| cluster.map.shards.len());
    let durability = if is_temporary { " (temporary: removed on exit)" } else { "" };
    let gateways: Vec<&NodeAddress> = addresses.iter().filter(|address| address.zone == "a").collect();
    // The first line on stdout says where to connect; tests read it.
    let pg_of = |id: u64| {
        let node = started.iter().find(|node| node.config.node_id == id);
        node.and_then(|node| node.config.pg).map_or_else(String::new, |pg| format!("postgresql://{pg}/geodb"))
    };
    println!(
        "GeoDB is ready: http://{} ({} gateway, {}; {} regions × {} nodes, {} shards ({} home shards and an outbox per region), {} survival, {}, latency ×{}, data in {}{durability})",
        gateways[0].http,
        gateways[0].region,
        pg_of(gateways[0].id),
        shape.regions,
        shape.nodes_per_region,
        shards,
        shape.shards_per_region,
        if shape.survival == Survival::Zone { "zone" } else { "region" },
        if settled { "every shard led" } else { "leaders still being elected" },
        shape.latency_scale,
        base.display()
    );
    for gateway in &gateways[1..] {
        println!("  {} gateway: http://{} ({})", gateway.region, gateway.http, pg_of(gateway.id));
    }
    println!("Try: curl -s http://{}/v1/sql -d '{{\"sql\": \"SELECT 1 + 1\"}}'", gateways[0].http);
    serve_all(nodes).await;
    telemetry::shut_down_tracing(tracer).await;
    Ok(())
}

/// One node of a multi-process cluster (`geodb start --config` with a
/// `[cluster]` section).
pub async fn run_cluster_node(config: Config) -> Result<(), String> {
    let tracer = telemetry::init_tracing(config.otlp_endpoint.as_deref())?;
    let cluster = config.cluster.clone().expect("checked by the caller");
    let me = cluster.nodes.iter().find(|node| node.id == config.node_id).expect("checked by Config::check");
    let http_listener = crate::bind(config.http).await?;
    let peer_listener = crate::bind(me.peer).await?;
    let pg_listener = match config.pg {
        Some(pg) => Some(crate::bind(pg).await?),
        None => None,
    };
    let data_dir: PathBuf = config.data_dir.clone().expect("checked by the caller");
    let faults = Arc::new(Faults::new());
    let mut config = config;
    config.pg = pg_listener.as_ref().and_then(|listener| listener.local_addr().ok());
    let node = Node::open(config, &data_dir, Metrics::global(), Some((peer_listener, faults)))?;
    let pg = node.config.pg.map_or_else(String::new, |pg| format!(", postgresql://{pg}/geodb"));
    println!(
        "GeoDB is ready: {}://{} (node {}{pg}, region {}, cluster of {} nodes, data in {})",
        crate::http_scheme(&node),
        node.config.http,
        node.config.node_id,
        node.config.region,
        cluster.nodes.len(),
        Path::new(&data_dir).display()
    );
    serve_all(vec![(node, http_listener, pg_listener)]).await;
    telemetry::shut_down_tracing(tracer).await;
    Ok(())
}

/// Waits (bounded) until every shard has a leader that serves and every
/// node knows it, so that the first request to any gateway finds them.
/// Returns whether they all did.
async fn wait_for_leaders(nodes: &[Arc<Node>]) -> bool {
    let deadline = Instant::now() + LEADER_WAIT_MAX;
    while Instant::now() < deadline {
        let views: Vec<_> =
            nodes.iter().filter_map(|node| node.cluster.as_ref().map(|cluster| cluster.driver.published())).collect();
        let Some(first) = views.first() else { return false };
        let settled = first.groups.iter().all(|(group, status)| {
            let Some(leader) = status.leader else { return false };
            views.iter().all(|view| view.groups.get(group).and_then(|status| status.leader) == Some(leader))
                && views.iter().any(|view| view.groups.get(group).is_some_and(|status| status.serving))
        });
        if settled {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Serves every node's API until SIGTERM or Ctrl-C, then stops them all:
/// requests finish, then replication and transports stop.
async fn serve_all(nodes: Vec<(Arc<Node>, TcpListener, Option<TcpListener>)>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for (node, listener, pg) in nodes {
        let mut stopped = stopped.clone();
        let served = node.clone();
        servers.push((
            node,
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                if let Err(error) = crate::serve(served, listener, pg, shutdown).await {
                    tracing::error!(%error, "HTTP server failed");
                }
            }),
        ));
    }
    crate::shutdown_signal().await;
    let _ = stop.send(true);
    for (node, server) in servers {
        let _ = server.await;
        node.stop_cluster();
    }
    tracing::info!("stopped");
}
