//! A node: storage, transactions and SQL opened over one data directory,
//! plus the state the HTTP API keeps (sessions, the concurrency bound).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use geodb_sql::Database;
use geodb_storage::{Engine, RocksEngine};
use geodb_txn::{Shard, SystemClock, TxnManager};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cluster::Cluster;
use crate::config::Config;
use crate::http::ApiError;
use crate::session::Sessions;
use crate::telemetry::{Metrics, names};
use crate::transport::Faults;

/// Meta key of the on-disk format of a data directory.
const META_FORMAT: &[u8] = b"geodb/format";
/// The format this binary reads and writes: 2 since shards share one store
/// under per-shard key prefixes, 3 since shipped writes carry their origin
/// timestamps (R17: log entries of format 4, outbox records with origins),
/// 4 since versions and shipped writes name their siblings (Monotonic
/// Atomic View in the region: log entries of format 5, version records of
/// format 3), 5 since requests to home shards carry the home they were
/// routed by (rehoming, R18: log entries of format 6, prepared records and
/// outbox queue entries with routes), 6 since parts may be prepared at their
/// statement (R20: log entries of format 7, prepared records with rounds,
/// decisions with the values they carry).
pub const FORMAT: u64 = 6;

/// Refuses a data directory written in another format (never reads it as
/// this one: that would be silent corruption); marks a new one.
fn check_format(engine: &dyn Engine, data_dir: &Path) -> Result<(), String> {
    use geodb_storage::ColumnFamily;
    let unreadable = |e: geodb_storage::Error| format!("cannot read {}: {e}", data_dir.display());
    match engine.get(ColumnFamily::Meta, META_FORMAT).map_err(unreadable)? {
        Some(bytes) if bytes == FORMAT.to_be_bytes() => Ok(()),
        Some(bytes) => {
            let found = <[u8; 8]>::try_from(bytes.as_slice())
                .map_or_else(|_| format!("{bytes:?}"), |bytes| u64::from_be_bytes(bytes).to_string());
            Err(format!(
                "{} holds data of format {found}; this geodb reads format {FORMAT} only: start it on a new data directory and load the data again (docs/operations.md, \"A rolling upgrade\")",
                data_dir.display(),
            ))
        }
        None => {
            let used = [ColumnFamily::Data, ColumnFamily::Meta, ColumnFamily::PaxosLog].into_iter().any(|cf| {
                engine
                    .scan(cf, std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, false)
                    .map(|mut pairs| pairs.next().is_some())
                    .unwrap_or(true)
            });
            if used {
                return Err(format!(
                    "{} was written by an earlier geodb (before shards shared one store); start on a new data directory",
                    data_dir.display()
                ));
            }
            let mut batch = geodb_storage::WriteBatch::new();
            batch.put(ColumnFamily::Meta, META_FORMAT.to_vec(), FORMAT.to_be_bytes().to_vec());
            engine.write(batch, geodb_storage::Durability::Sync).map_err(unreadable)
        }
    }
}

/// Meta key of the layout a data directory was created with.
const META_LAYOUT: &[u8] = b"geodb/layout";

/// Refuses a data directory created under another layout (a single node,
/// or a cluster whose keys were placed by other regions or another
/// `shards_per_region`: see `ClusterConfig::layout`); records a new one's.
fn check_layout(engine: &dyn Engine, data_dir: &Path, layout: &str) -> Result<(), String> {
    use geodb_storage::ColumnFamily;
    let unreadable = |e: geodb_storage::Error| format!("cannot read {}: {e}", data_dir.display());
    match engine.get(ColumnFamily::Meta, META_LAYOUT).map_err(unreadable)? {
        Some(stored) if stored == layout.as_bytes() => Ok(()),
        Some(stored) => Err(format!(
            "{} was created for the layout \"{}\", not \"{layout}\": keys would be looked for in the wrong shards. \
             Start with the configuration it was created with, or on a new data directory",
            data_dir.display(),
            String::from_utf8_lossy(&stored)
        )),
        None => {
            let mut batch = geodb_storage::WriteBatch::new();
            batch.put(ColumnFamily::Meta, META_LAYOUT.to_vec(), layout.as_bytes().to_vec());
            engine.write(batch, geodb_storage::Durability::Sync).map_err(unreadable)
        }
    }
}

/// Everything a running node holds.
pub struct Node {
    pub config: Config,
    pub txns: Arc<TxnManager>,
    /// The shards this node holds a replica of (for metrics and status).
    pub shards: Vec<Arc<Shard>>,
    pub db: Arc<Database>,
    pub sessions: Sessions,
    /// Permits for executing requests (`limits.requests_inflight_max`).
    inflight: Arc<Semaphore>,
    pub metrics: Metrics,
    /// The node's part in a cluster; `None` for a single node.
    pub cluster: Option<Arc<Cluster>>,
    /// Bulk rehomes started here, running and recent.
    pub rehomes: crate::rehomer::Jobs,
    /// The node's certificates, if it speaks TLS (`certs_dir`).
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Who clients are: required exactly when the node has certificates.
    pub auth: crate::auth::Auth,
    ready: AtomicBool,
}

/// A request's place under the node's concurrency bound ([`Node::admit`]).
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admission {
    fn drop(&mut self) {
        metrics::gauge!(names::INFLIGHT).decrement(1.0);
    }
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
        // Certificates first: a node its peers would refuse stops before it
        // touches its data.
        let tls = crate::tls::Tls::for_config(&config)?;
        std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let engine: Arc<dyn Engine> =
            Arc::new(RocksEngine::open(&data_dir.join("rocksdb")).map_err(|e| format!("cannot open storage: {e}"))?);
        check_format(engine.as_ref(), data_dir)?;
        let layout = config.cluster.as_ref().map_or_else(|| "single".to_string(), |cluster| cluster.layout());
        check_layout(engine.as_ref(), data_dir, &layout)?;
        let node = match (config.cluster.is_some(), peer) {
            (false, _) => Self::with_engine(config, engine, metrics),
            (true, Some((listener, faults))) => {
                let (cluster, txns, shards) = Cluster::start(&config, engine, listener, faults, tls.clone())?;
                Self::assemble(config, txns, shards, metrics, Some(cluster))
            }
            (true, None) => Err("a cluster node needs a peer listener".into()),
        }?;
        // Nobody holds the node yet; `with_engine` (which tests call too)
        // leaves TLS off.
        // A node with certificates is secure: every client authenticates.
        let node = Arc::into_inner(node).expect("a node just assembled is not shared");
        let auth = crate::auth::Auth::new(tls.is_some(), &node.config.auth);
        // Said loudly, in the log (which may be JSON lines: never a bare
        // line on stderr).
        if node.config.insecure {
            tracing::warn!(
                "INSECURE MODE (--insecure): no TLS and no authentication; anyone who reaches this node's ports \
                 can read and change all data and call /v1/admin. Give --certs-dir instead (docs/security.md)"
            );
        } else if tls.is_none() && !node.config.http.ip().is_loopback() {
            tracing::warn!(
                http = %node.config.http,
                "geodb dev has no TLS and no authentication, and listens beyond this machine: anyone who reaches \
                 its ports can read and change all data. Use geodb start --certs-dir for anything but development"
            );
        }
        Ok(Arc::new(Node { tls, auth, ..node }))
    }

    /// A single node over an already open engine.
    pub fn with_engine(config: Config, engine: Arc<dyn Engine>, metrics: Metrics) -> Result<Arc<Node>, String> {
        let max_offset_ns = config.max_clock_offset_ms.saturating_mul(1_000_000);
        let router = Arc::new(geodb_sql::SqlRouter::single(geodb_txn::SINGLE_NODE_SHARD));
        let (txns, shard) = TxnManager::single_node_routed(engine, Box::new(SystemClock), max_offset_ns, router)
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
        crate::exec::install_blocking_hook();
        let db = Database::open(txns.clone()).map_err(|e| format!("cannot open the catalog: {e}"))?;
        let limits = &config.limits;
        let sessions =
            Sessions::new(config.node_id, limits.sessions_max, Duration::from_millis(limits.session_idle_timeout_ms));
        let inflight = Arc::new(Semaphore::new(limits.requests_inflight_max));
        let config_auth = config.auth.clone();
        Ok(Arc::new(Node {
            config,
            txns,
            shards,
            db,
            sessions,
            inflight,
            metrics,
            cluster,
            rehomes: crate::rehomer::Jobs::default(),
            tls: None,
            auth: crate::auth::Auth::new(false, &config_auth),
            ready: AtomicBool::new(true),
        }))
    }

    /// Admits one request or statement under `limits.requests_inflight_max`
    /// (HTTP's `/v1` and PostgreSQL's statements alike), counted in
    /// `geodb_requests_inflight` until the admission is dropped; beyond the
    /// bound it is shed (`53000`, counted in `geodb_requests_shed_total`).
    pub fn admit(&self) -> Result<Admission, ApiError> {
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            metrics::counter!(names::SHED).increment(1);
            return Err(ApiError::overloaded("too many requests in flight"));
        };
        metrics::gauge!(names::INFLIGHT).increment(1.0);
        Ok(Admission { _permit: permit })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_keeps_the_layout_it_was_created_with() {
        let engine = geodb_storage::MemoryEngine::new();
        let dir = Path::new("/data");
        let layout = "regions=us-east,eu-west shards_per_region=2 home=us-east";
        check_layout(&engine, dir, layout).unwrap();
        check_layout(&engine, dir, layout).unwrap();
        let moved = "regions=eu-west,us-east shards_per_region=2 home=us-east";
        let error = check_layout(&engine, dir, moved).unwrap_err();
        assert!(error.contains("was created for the layout") && error.contains(layout), "{error}");
        assert!(check_layout(&engine, dir, "single").is_err());
    }

    #[test]
    fn a_data_directory_of_another_format_is_refused_by_number() {
        let engine = geodb_storage::MemoryEngine::new();
        let dir = Path::new("/data");
        check_format(&engine, dir).unwrap();
        check_format(&engine, dir).unwrap();
        let mut batch = geodb_storage::WriteBatch::new();
        batch.put(geodb_storage::ColumnFamily::Meta, META_FORMAT.to_vec(), 2u64.to_be_bytes().to_vec());
        engine.write(batch, geodb_storage::Durability::Sync).unwrap();
        let error = check_format(&engine, dir).unwrap_err();
        assert!(error.contains("format 2;") && error.contains(&format!("format {FORMAT} only")), "{error}");
    }
}
