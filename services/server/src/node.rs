//! A node: storage, transactions and SQL opened over one data directory,
//! plus the state the HTTP API keeps (sessions, the concurrency bound).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use geodb_sql::Database;
use geodb_storage::{Engine, RocksEngine};
use geodb_txn::{Shard, SystemClock, TxnManager};
use tokio::sync::Semaphore;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::session::Sessions;
use crate::telemetry::Metrics;
use crate::transport::Faults;

/// Everything a running node holds.
pub struct Node {
    pub config: Config,
    pub txns: Arc<TxnManager>,
    /// The shards this node holds a replica of (for metrics and status).
    pub shards: Vec<Arc<Shard>>,
    pub db: Arc<Database>,
    pub sessions: Sessions,
    /// Permits for executing requests (`limits.requests_inflight_max`).
    pub inflight: Arc<Semaphore>,
    pub metrics: Metrics,
    /// The node's part in a cluster; `None` for a single node.
    pub cluster: Option<Arc<Cluster>>,
    ready: AtomicBool,
}

impl Node {
    /// Opens (or creates) the node's data under `data_dir`. With a
    /// `[cluster]` section the node joins its cluster, listening for other
    /// nodes on `peer_listener`, under the fault rules `faults`.
    pub fn open(
        config: Config,
        data_dir: &Path,
        metrics: Metrics,
        peer: Option<(tokio::net::TcpListener, Arc<Faults>)>,
    ) -> Result<Arc<Node>, String> {
        std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let engine: Arc<dyn Engine> =
            Arc::new(RocksEngine::open(&data_dir.join("rocksdb")).map_err(|e| format!("cannot open storage: {e}"))?);
        match (config.cluster.is_some(), peer) {
            (false, _) => Self::with_engine(config, engine, metrics),
            (true, Some((listener, faults))) => {
                let (cluster, txns, shards) = Cluster::start(&config, engine, listener, faults)?;
                Self::assemble(config, txns, shards, metrics, Some(cluster))
            }
            (true, None) => Err("a cluster node needs a peer listener".into()),
        }
    }

    /// A single node over an already open engine.
    pub fn with_engine(config: Config, engine: Arc<dyn Engine>, metrics: Metrics) -> Result<Arc<Node>, String> {
        let max_offset_ns = config.max_clock_offset_ms.saturating_mul(1_000_000);
        let (txns, shard) = TxnManager::single_node(engine, Box::new(SystemClock), max_offset_ns)
            .map_err(|e| format!("cannot open transactions: {e}"))?;
        Self::assemble(config, txns, vec![shard], metrics, None)
    }

    fn assemble(
        config: Config,
        txns: Arc<TxnManager>,
        shards: Vec<Arc<Shard>>,
        metrics: Metrics,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Arc<Node>, String> {
        let db = Database::open(txns.clone()).map_err(|e| format!("cannot open the catalog: {e}"))?;
        let limits = &config.limits;
        let sessions =
            Sessions::new(config.node_id, limits.sessions_max, Duration::from_millis(limits.session_idle_timeout_ms));
        let inflight = Arc::new(Semaphore::new(limits.requests_inflight_max));
        Ok(Arc::new(Node {
            config,
            txns,
            shards,
            db,
            sessions,
            inflight,
            metrics,
            cluster,
            ready: AtomicBool::new(true),
        }))
    }

    /// Whether the node serves requests (false once shutdown began).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn stop_serving(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    /// Stops the node's replication and transport (a cluster node).
    pub fn stop_cluster(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.stop();
        }
    }
}
