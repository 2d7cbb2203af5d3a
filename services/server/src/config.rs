//! Node configuration: `geodb start --config <file.toml>`, or the defaults
//! of `geodb dev`.
//!
//! Every limit has a default chosen for a small node (2 cores); each is a
//! named field so operators can see and change what bounds the node.

use std::net::SocketAddr;
use std::path::PathBuf;

use geodb_geo::placement::Survival;
use serde::{Deserialize, Serialize};

use crate::telemetry::LogFormat;

/// A node's configuration. Unknown keys are rejected, so a typo in a
/// config file is an error at start rather than a silently ignored setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id, unique in the cluster.
    #[serde(default = "default_node_id")]
    pub node_id: u64,
    /// The region this node serves (`us-east`, ...).
    #[serde(default = "default_region")]
    pub region: String,
    /// The zone inside the region (`a`, `b`, `c`).
    #[serde(default = "default_zone")]
    pub zone: String,
    /// The HTTP API address.
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// The PostgreSQL wire protocol address (port 0 picks a free port);
    /// unset, the node speaks HTTP only.
    pub pg: Option<SocketAddr>,
    /// Where the data lives. Required for `geodb start`.
    pub data_dir: Option<PathBuf>,
    /// The certificates directory (`geodb cert`, `docs/security.md`): set,
    /// the node speaks TLS on every port (HTTPS, PostgreSQL over TLS,
    /// mutual TLS between nodes); unset, plaintext everywhere.
    /// `geodb start --certs-dir` overrides it.
    pub certs_dir: Option<PathBuf>,
    /// Run without certificates, and so without TLS or authentication:
    /// `geodb start` refuses to start without `certs_dir` unless this (or
    /// `--insecure`) says so. Never with `certs_dir`.
    #[serde(default)]
    pub insecure: bool,
    /// Logins on a secure node.
    #[serde(default)]
    pub auth: AuthConfig,
    /// The clock bound ε, in milliseconds.
    #[serde(default = "default_max_clock_offset_ms")]
    pub max_clock_offset_ms: u64,
    #[serde(default)]
    pub limits: Limits,
    /// Export traces over OTLP/gRPC to this endpoint (e.g.
    /// `http://127.0.0.1:4317`); none by default.
    pub otlp_endpoint: Option<String>,
    /// `text` (default) or `json` (one object per line); `--log-format`
    /// overrides it.
    #[serde(default)]
    pub log_format: LogFormat,
    /// The cluster this node belongs to; absent for a single node, which
    /// commits to its own disk without replication.
    pub cluster: Option<ClusterConfig>,
    #[serde(default)]
    pub gc: GcConfig,
}

/// Logins (`docs/security.md`, "Failed logins").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Failed logins a user name, or a client address, may have in a row
    /// before its logins are refused (`53300`, HTTP 429) until one comes
    /// back.
    pub login_failures_burst: u32,
    /// How long it takes for one failed login to come back.
    pub login_failure_refill_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        // Ten wrong passwords at once (a person mistyping, a client with a
        // stale secret), then one every 6 s: 10 guesses a minute per user
        // and per address.
        AuthConfig { login_failures_burst: 10, login_failure_refill_ms: 6_000 }
    }
}

/// The shortest history garbage collection may keep, in clock bounds ε.
pub const GC_TTL_MIN_CLOCK_BOUNDS: u64 = 10;

/// Garbage collection of old versions (`docs/design/storage.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    pub enabled: bool,
    /// How much history is kept: versions that no read at or above this
    /// far back can see are removed, and a transaction whose snapshot is
    /// older than this at a replica that collected may fail with 40001
    /// ("snapshot too old"). Transactions running on a node hold its
    /// collection back while they run.
    pub ttl_ms: u64,
    /// How often a node goes over its replicas.
    pub interval_ms: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        // An hour of history, as a backstop for long reports and for
        // transactions that run on other nodes; a pass every five minutes.
        GcConfig { enabled: true, ttl_ms: 3_600_000, interval_ms: 300_000 }
    }
}

/// A multi-node cluster: every node's address, where the data shard lives,
/// and how the wide-area network is emulated. Every node of a cluster gets
/// the same section (only the top-level `node_id`, `http` and `data_dir`
/// differ), so every node computes the same placement.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Tags every transport connection, so nodes of two clusters never talk.
    #[serde(default = "default_cluster_id")]
    pub id: u64,
    pub nodes: Vec<NodeAddress>,
    /// Home region of the system shard (catalog, directory of homes) and
    /// of the global shard (default: the first node's region).
    pub home: Option<String>,
    /// Shards per region for `home` tables: a locality key homed in a region
    /// lives in one of them, by the hash of its value.
    #[serde(default = "default_shards_per_region")]
    pub shards_per_region: u64,
    /// `zone` (three voters at home, a learner elsewhere) or `region`
    /// (five voters over three regions).
    #[serde(default)]
    pub survival: Survival,
    /// Round trips between regions; the standard topology of
    /// `docs/benchmarks.md` by default.
    pub latency: Option<LatencyConfig>,
    /// Multiplies every emulated latency: 1 emulates the matrix as is, 0
    /// turns emulation off (tests shrink it to stay fast).
    #[serde(default = "default_latency_scale")]
    pub latency_scale: f64,
    /// How often a shard leader heartbeats its replicas.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for this long (plus up to as much
    /// again of jitter) stands for election: the failover bound.
    #[serde(default = "default_election_timeout_ms")]
    pub election_timeout_ms: u64,
    /// Applied log entries between snapshots (the log is truncated at each);
    /// 0 never truncates.
    #[serde(default = "default_snapshot_interval_entries")]
    pub snapshot_interval_entries: u64,
    /// A snapshot is stored, sent and restored in chunks of about this
    /// many KiB (a record larger than that is a chunk of its own).
    #[serde(default = "default_snapshot_chunk_kib")]
    pub snapshot_chunk_kib: u64,
    /// A shard leader serves coordinated reads under a lease, without a
    /// round to a quorum, while a quorum's acknowledgements say no other
    /// leader can be elected (`docs/design/multipaxos.md`, "Leases").
    #[serde(default = "default_leader_leases")]
    pub leader_leases: bool,
    /// A row an `UPDATE` or `DELETE` reads by its key at a shard that
    /// commits in another region is locked, and its shard prepared, with
    /// the read (`docs/design/transactions.md`, R20): the commit then pays
    /// no second wide-area round trip there. Off: such a shard is prepared
    /// at commit, as any other (for comparison).
    #[serde(default = "default_early_prepare")]
    pub early_prepare: bool,
    /// Slots a shard's leader keeps in flight (`docs/design/cluster.md`,
    /// "A pipeline of slots"): commits stop waiting for the slot before
    /// theirs. Default (unset): [`geodb_txn::host::COMMIT_WINDOW_SLOTS`] for
    /// shards whose voters are at least [`PIPELINE_VOTER_RTT_MIN_MS`] apart
    /// (region survival: the round trip dwarfs a log sync), one slot for the
    /// others (zone survival: batching behind one slot costs less CPU).
    /// Every node of a cluster must agree (it is part of the transport's
    /// cluster identity: nodes that differ do not talk); 1 turns
    /// pipelining off everywhere.
    #[serde(default)]
    pub commit_window_slots: Option<u64>,
    /// How far ahead of its clock the global shard's leader closes
    /// timestamps (`docs/design/transactions.md`, R14): every region reads
    /// `global` tables from its own replica at the present, and writes to
    /// them commit this far in the future and wait it out. Default: the
    /// largest round trip of the latency matrix, two heartbeat intervals
    /// and twice the clock bound, plus 5 ms (what a closed timestamp needs
    /// to reach the farthest replica before clocks pass it).
    pub global_lead_ms: Option<u64>,
    /// Serve `/v1/admin/faults` (drop or partition links at runtime, for
    /// tests and drills). Off unless asked for: it can cut a node off.
    #[serde(default)]
    pub admin_faults: bool,
    /// Moving locality keys to the region their traffic comes from
    /// (`docs/design/transactions.md`, R19). Off unless asked for in a
    /// config file; `geodb dev` turns it on.
    #[serde(default)]
    pub auto_rehome: AutoRehome,
    /// Moving a home shard's leadership to the voter of its home region
    /// whose requests dominate (`docs/design/multipaxos.md`, R22). Off
    /// unless asked for in a config file; `geodb dev` turns it on.
    #[serde(default)]
    pub follow_workload: FollowWorkload,
    /// The newest node-to-node wire version this node speaks, from the
    /// oldest it still speaks to its newest (the default); unlike the rest
    /// of the section, nodes may differ in it. A node pinned
    /// to an older version dials, accepts and answers exactly as a node of
    /// that version does (`docs/operations.md`, "A rolling upgrade").
    pub protocol_version_max: Option<u8>,
}

/// R22: when the leader of a home shard hands its leadership to the voter
/// of the shard's home region that sends most of its requests. The leader
/// counts the node every request comes from, with counts that halve every
/// quarter of `window_ms`; a node that has sent at least `share` of them
/// for a whole `window_ms` (and at least `min_requests` in about a window)
/// gets the leadership, once it has caught up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FollowWorkload {
    pub enabled: bool,
    /// How long one node must send most of a shard's requests.
    pub window_ms: u64,
    /// The share of the requests it must send: above a half, so that a
    /// shard used through two nodes about equally stays where it is.
    pub share: f64,
    /// A shard with fewer requests than this in about the last window
    /// (counted with decay) stays where it is.
    pub min_requests: f64,
}

impl Default for FollowWorkload {
    fn default() -> Self {
        let defaults = geodb_txn::traffic::FollowConfig::default();
        FollowWorkload {
            enabled: false,
            window_ms: defaults.window_us / 1_000,
            share: defaults.share,
            min_requests: defaults.min_requests,
        }
    }
}

impl FollowWorkload {
    /// The host's settings, if it is on.
    pub fn follow(&self) -> Option<geodb_txn::traffic::FollowConfig> {
        self.enabled.then(|| geodb_txn::traffic::FollowConfig {
            window_us: self.window_ms.saturating_mul(1_000),
            share: self.share,
            min_requests: self.min_requests,
        })
    }

    fn check(&self) -> Result<(), String> {
        if !(self.share > 0.5 && self.share <= 1.0) {
            return Err("cluster.follow_workload.share must be above 0.5 and at most 1".into());
        }
        if self.window_ms < 100 {
            return Err("cluster.follow_workload.window_ms must be at least 100".into());
        }
        if !(self.min_requests >= 1.0) {
            return Err("cluster.follow_workload.min_requests must be at least 1".into());
        }
        Ok(())
    }
}

/// R19: when a node moves a locality key to the region its traffic comes
/// from. The leader of each home shard tallies the region every routed
/// request comes from, per locality key, with counts that halve every
/// quarter of `window_ms`; a key whose traffic has come from one other
/// region, at least `share` of it, for a whole `window_ms`, is rehomed there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoRehome {
    pub enabled: bool,
    /// How long one region must dominate a key's traffic.
    pub window_ms: u64,
    /// The share of the traffic it must have: above a half, so that a key
    /// used from two regions about equally stays where it is (hysteresis).
    pub share: f64,
    /// A key with fewer requests than this in about the last window
    /// (counted with decay) is too quiet to move.
    pub min_requests: f64,
    /// Automatic rehomes this node starts per minute, at most.
    pub max_per_minute: u32,
    /// Keys tallied per home shard this node leads (the lighter half is
    /// dropped when it is full).
    pub tracked_keys: usize,
}

impl Default for AutoRehome {
    fn default() -> Self {
        AutoRehome {
            enabled: false,
            window_ms: 30_000,
            share: 0.8,
            min_requests: 20.0,
            max_per_minute: 30,
            tracked_keys: 4_096,
        }
    }
}

impl AutoRehome {
    /// The tally's settings, if it is on.
    pub fn traffic(&self) -> Option<geodb_txn::traffic::TrafficConfig> {
        self.enabled.then(|| geodb_txn::traffic::TrafficConfig {
            window_us: self.window_ms.saturating_mul(1_000),
            share: self.share,
            min_requests: self.min_requests,
            keys_max: self.tracked_keys,
        })
    }

    fn check(&self) -> Result<(), String> {
        if !(self.share > 0.5 && self.share <= 1.0) {
            return Err("cluster.auto_rehome.share must be above 0.5 and at most 1".into());
        }
        if self.window_ms < 100 {
            return Err("cluster.auto_rehome.window_ms must be at least 100".into());
        }
        if !(self.min_requests >= 1.0) {
            return Err("cluster.auto_rehome.min_requests must be at least 1".into());
        }
        if self.max_per_minute == 0 {
            return Err("cluster.auto_rehome.max_per_minute must be at least 1 (to stop automatic rehoming, set enabled = false)".into());
        }
        if !(1..=1_000_000).contains(&self.tracked_keys) {
            return Err("cluster.auto_rehome.tracked_keys must be between 1 and 1000000".into());
        }
        Ok(())
    }
}

/// One node of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    pub id: u64,
    pub region: String,
    pub zone: String,
    /// Its HTTP API.
    pub http: SocketAddr,
    /// Its node-to-node transport.
    pub peer: SocketAddr,
}

/// Round trips between regions, in milliseconds (symmetric; the diagonal
/// is the round trip between zones of one region).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    pub regions: Vec<String>,
    pub rtt_ms: Vec<Vec<f64>>,
}

fn default_cluster_id() -> u64 {
    1
}

fn default_shards_per_region() -> u64 {
    2
}

fn default_latency_scale() -> f64 {
    1.0
}

fn default_heartbeat_interval_ms() -> u64 {
    50
}

fn default_election_timeout_ms() -> u64 {
    500
}

fn default_snapshot_interval_entries() -> u64 {
    10_000
}

fn default_leader_leases() -> bool {
    true
}

fn default_early_prepare() -> bool {
    true
}

/// The deepest pipeline a shard may keep (a new leader fills as many slots
/// with no-ops after its election).
pub const COMMIT_WINDOW_SLOTS_MAX: u64 = 16;

/// Shards whose voters are at least this many milliseconds apart (the
/// widest round trip among them) pipeline by default.
pub const PIPELINE_VOTER_RTT_MIN_MS: u64 = 10;

fn default_snapshot_chunk_kib() -> u64 {
    4 * 1024
}

/// The largest snapshot chunk: well within a transport frame (64 MiB).
const SNAPSHOT_CHUNK_KIB_MAX: u64 = 16 * 1024;

impl ClusterConfig {
    /// The latency matrix, scaled.
    pub fn latency_matrix(&self) -> Result<geodb_geo::LatencyMatrix, String> {
        let matrix = match &self.latency {
            None => geodb_geo::LatencyMatrix::standard(),
            Some(latency) => {
                let rtt_us = latency
                    .rtt_ms
                    .iter()
                    .map(|row| row.iter().map(|ms| (ms * 1_000.0).round() as u64).collect())
                    .collect();
                let regions = latency.regions.iter().map(|name| geodb_geo::Region(name.clone())).collect();
                geodb_geo::LatencyMatrix::new(regions, rtt_us).map_err(|e| e.to_string())?
            }
        };
        let scale = |rtt: u64| (rtt as f64 * self.latency_scale).round() as u64;
        let rtt_us = matrix.rtt_us.iter().map(|row| row.iter().map(|rtt| scale(*rtt)).collect()).collect();
        geodb_geo::LatencyMatrix::new(matrix.regions, rtt_us).map_err(|e| e.to_string())
    }

    /// [`ClusterConfig::global_lead_ms`], or its default for this matrix
    /// and clock bound.
    pub fn global_lead_ms(&self, max_clock_offset_ms: u64) -> Result<u64, String> {
        if let Some(lead) = self.global_lead_ms {
            return Ok(lead);
        }
        let matrix = self.latency_matrix()?;
        let max_rtt_ms = matrix.rtt_us.iter().flatten().copied().max().unwrap_or(0).div_ceil(1_000);
        Ok(max_rtt_ms + 2 * self.heartbeat_interval_ms + 2 * max_clock_offset_ms + 5)
    }

    /// The home region of the system and global shards.
    pub fn home(&self) -> &str {
        self.home.as_deref().or(self.nodes.first().map(|node| node.region.as_str())).unwrap_or_default()
    }

    /// What decides where a key is stored: the regions in node-list order
    /// (home shards are numbered by it, and the directory of homes names
    /// regions by their position in it), `shards_per_region` (a locality
    /// key's home shard is its hash modulo it) and `home`. Every node of a
    /// cluster must agree on it, and it must never change under a data
    /// directory: a node persists it and refuses another, and peers whose
    /// layouts differ do not talk (it is part of the transport's cluster
    /// identity).
    pub fn layout(&self) -> String {
        let mut regions: Vec<&str> = Vec::new();
        for node in &self.nodes {
            if !regions.contains(&node.region.as_str()) {
                regions.push(&node.region);
            }
        }
        format!("regions={} shards_per_region={} home={}", regions.join(","), self.shards_per_region, self.home())
    }

    fn check(&self, node_id: u64) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("cluster.nodes is empty".into());
        }
        let mut ids: Vec<u64> = self.nodes.iter().map(|node| node.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.nodes.len() {
            return Err("cluster.nodes: node ids must be unique".into());
        }
        if !self.nodes.iter().any(|node| node.id == node_id) {
            return Err(format!("node_id {node_id} is not in cluster.nodes"));
        }
        if !(0.0..=100.0).contains(&self.latency_scale) {
            return Err("cluster.latency_scale must be between 0 and 100".into());
        }
        if self.global_lead_ms.is_some_and(|lead| lead <= self.heartbeat_interval_ms) {
            // Timestamps are closed once a heartbeat interval: a shorter lead
            // leaves every read of a global table waiting for the next one.
            return Err("cluster.global_lead_ms must exceed cluster.heartbeat_interval_ms".into());
        }
        if self.heartbeat_interval_ms == 0 || self.election_timeout_ms <= 2 * self.heartbeat_interval_ms {
            return Err("cluster.election_timeout_ms must exceed two heartbeat intervals".into());
        }
        if let Some(version) = self.protocol_version_max {
            crate::transport::check_protocol_version_max(version)
                .map_err(|why| format!("cluster.protocol_version_max: {why}"))?;
        }
        if self.commit_window_slots.is_some_and(|slots| !(1..=COMMIT_WINDOW_SLOTS_MAX).contains(&slots)) {
            return Err(format!("cluster.commit_window_slots must be between 1 and {COMMIT_WINDOW_SLOTS_MAX}"));
        }
        if !(1..=SNAPSHOT_CHUNK_KIB_MAX).contains(&self.snapshot_chunk_kib) {
            return Err(format!("cluster.snapshot_chunk_kib must be between 1 and {SNAPSHOT_CHUNK_KIB_MAX}"));
        }
        let matrix = self.latency_matrix()?;
        for node in &self.nodes {
            if matrix.rtt_us(&geodb_geo::Region(node.region.clone()), &geodb_geo::Region(node.region.clone())).is_none()
            {
                return Err(format!("node {}: region {} is not in the latency matrix", node.id, node.region));
            }
        }
        if !self.nodes.iter().any(|node| node.region == self.home()) {
            return Err(format!("cluster.home {} has no node", self.home()));
        }
        self.auto_rehome.check()?;
        self.follow_workload.check()?;
        if self.follow_workload.enabled && self.follow_workload.window_ms < 2 * self.election_timeout_ms {
            return Err(format!(
                "cluster.follow_workload.window_ms must be at least twice cluster.election_timeout_ms ({} ms): a handover holds a shard's commands for up to an election timeout",
                self.election_timeout_ms
            ));
        }
        Ok(())
    }
}

/// Resource bounds of the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (413 beyond it). 1 MiB holds a batch of
    /// thousands of TPC-C rows; anything larger is a mistake or an attack.
    pub request_bytes_max: usize,
    /// Requests executing at once; beyond it the node answers 503 with
    /// `Retry-After` instead of queueing without bound. Two cores run a few
    /// dozen blocking statements usefully; more only adds latency.
    pub requests_inflight_max: usize,
    /// Open sessions at once (503 beyond it).
    pub sessions_max: usize,
    /// A session idle longer than this is rolled back and removed.
    pub session_idle_timeout_ms: u64,
    /// Server-side retries of a one-shot statement or batch on a
    /// serialization failure, before the failure is returned.
    pub retries_max: u32,
    /// Statements in one batch.
    pub batch_statements_max: usize,
    /// A statement running longer than this fails with 57014; 0 disables
    /// the bound (as PostgreSQL's `statement_timeout`). 30 s is far beyond
    /// any OLTP statement yet stops a runaway scan from holding a worker.
    pub statement_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_bytes_max: 1 << 20,
            requests_inflight_max: 64,
            sessions_max: 1024,
            session_idle_timeout_ms: 60_000,
            retries_max: 16,
            batch_statements_max: 1000,
            statement_timeout_ms: 30_000,
        }
    }
}

fn default_node_id() -> u64 {
    1
}

fn default_region() -> String {
    "us-east".into()
}

fn default_zone() -> String {
    "a".into()
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

/// The clock bound ε when none is configured: what chrony or a cloud
/// provider's time service keeps a VM's clock within, with margin.
/// Coordinated commits wait this long (commit wait), so set it from the
/// clock discipline of the deployment, not higher than needed.
pub const MAX_CLOCK_OFFSET_MS_DEFAULT: u64 = 10;

/// The clock bound ε of `geodb dev` and of clusters on one machine: every
/// node reads the same clock.
pub const MAX_CLOCK_OFFSET_MS_ONE_MACHINE: u64 = 1;

fn default_max_clock_offset_ms() -> u64 {
    MAX_CLOCK_OFFSET_MS_DEFAULT
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: default_node_id(),
            region: default_region(),
            zone: default_zone(),
            http: default_http(),
            pg: None,
            data_dir: None,
            certs_dir: None,
            insecure: false,
            auth: AuthConfig::default(),
            max_clock_offset_ms: default_max_clock_offset_ms(),
            limits: Limits::default(),
            otlp_endpoint: None,
            log_format: LogFormat::default(),
            cluster: None,
            gc: GcConfig::default(),
        }
    }
}

impl Config {
    /// Reads and checks a TOML config file.
    pub fn load(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config: Config = toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    /// Rejects settings that cannot work.
    pub fn check(&self) -> Result<(), String> {
        let limits = &self.limits;
        if limits.requests_inflight_max == 0 || limits.sessions_max == 0 || limits.batch_statements_max == 0 {
            return Err("limits must be positive".into());
        }
        if self.gc.interval_ms == 0 {
            return Err("gc.interval_ms must be positive".into());
        }
        // A transaction that begins on a node whose clock is up to ε behind
        // must have time to read before its snapshot falls below another
        // node's horizon.
        let ttl_min = GC_TTL_MIN_CLOCK_BOUNDS * self.max_clock_offset_ms;
        if self.gc.ttl_ms < ttl_min {
            return Err(format!(
                "gc.ttl_ms ({}) must be at least {GC_TTL_MIN_CLOCK_BOUNDS} × max_clock_offset_ms ({ttl_min})",
                self.gc.ttl_ms
            ));
        }
        if self.insecure && self.certs_dir.is_some() {
            return Err("insecure and certs_dir contradict each other: give one or the other".into());
        }
        if self.auth.login_failures_burst == 0 || self.auth.login_failure_refill_ms == 0 {
            return Err("auth.login_failures_burst and auth.login_failure_refill_ms must be positive".into());
        }
        if limits.request_bytes_max < 1024 {
            return Err("limits.request_bytes_max must be at least 1024".into());
        }
        if self.region.is_empty() || self.zone.is_empty() {
            return Err("region and zone must not be empty".into());
        }
        if let Some(cluster) = &self.cluster {
            cluster.check(self.node_id)?;
            let me = cluster.nodes.iter().find(|node| node.id == self.node_id).expect("checked above");
            if me.region != self.region || me.zone != self.zone {
                return Err(format!(
                    "node {}: region/zone {}/{} differ from cluster.nodes ({}/{})",
                    self.node_id, self.region, self.zone, me.region, me.zone
                ));
            }
            if me.http != self.http {
                return Err(format!(
                    "node {}: http {} differs from its address in cluster.nodes ({}), where other nodes forward to",
                    self.node_id, self.http, me.http
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses_and_unknown_keys_are_refused() {
        let config: Config = toml::from_str(
            r#"
            node_id = 4
            region = "eu-west"
            zone = "b"
            http = "127.0.0.1:7071"
            data_dir = "/var/lib/geodb"
            max_clock_offset_ms = 5
            log_format = "json"
            [limits]
            requests_inflight_max = 8
            "#,
        )
        .unwrap();
        assert_eq!(config.node_id, 4);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.limits.requests_inflight_max, 8);
        assert_eq!(config.limits.sessions_max, Limits::default().sessions_max);
        assert!(config.check().is_ok());
        assert!(toml::from_str::<Config>("regoin = \"x\"").is_err());
    }

    #[test]
    fn the_example_cluster_configs_load_and_agree() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/cluster/3x3");
        let mut clusters = Vec::new();
        for id in 1..=9 {
            let config = Config::load(&dir.join(format!("node{id}.toml"))).unwrap();
            assert_eq!(config.node_id, id);
            let cluster = config.cluster.expect("a [cluster] section");
            assert_eq!(cluster.nodes.len(), 9);
            clusters.push(serde_json::to_string(&cluster).unwrap());
        }
        clusters.dedup();
        assert_eq!(clusters.len(), 1, "every node must share the same [cluster] section");
    }

    #[test]
    fn cluster_configs_that_cannot_work_are_refused() {
        let node = |id: u64, region: &str| {
            format!(
                "[[cluster.nodes]]\nid = {id}\nregion = \"{region}\"\nzone = \"a\"\nhttp = \"127.0.0.1:{}\"\npeer = \"127.0.0.1:{}\"\n",
                7000 + id,
                7100 + id
            )
        };
        let base = "node_id = 1\nregion = \"us-east\"\nzone = \"a\"\nhttp = \"127.0.0.1:7001\"\n[cluster]\n";
        let parse = |text: String| toml::from_str::<Config>(&text).unwrap().check();
        assert!(parse(format!("{base}{}{}", node(1, "us-east"), node(2, "us-east"))).is_ok());
        // Duplicate ids, this node missing, an unknown region, a home without nodes.
        assert!(parse(format!("{base}{}{}", node(1, "us-east"), node(1, "us-east"))).is_err());
        assert!(parse(format!("{base}{}", node(2, "us-east"))).is_err());
        assert!(parse(format!("{base}{}{}", node(1, "us-east"), node(2, "mars"))).is_err());
        assert!(parse(format!("{}home = \"eu-west\"\n{}", base, node(1, "us-east"))).is_err());
        // An election timeout that a lost heartbeat would trip.
        assert!(parse(format!("{}election_timeout_ms = 60\n{}", base, node(1, "us-east"))).is_err());
        // A global lead that the next closed timestamp never covers.
        assert!(parse(format!("{}global_lead_ms = 50\n{}", base, node(1, "us-east"))).is_err());
        assert!(parse(format!("{}global_lead_ms = 300\n{}", base, node(1, "us-east"))).is_ok());
        // Automatic rehoming: off by default; a share of a half or less
        // would let a key flap between two regions.
        let one = node(1, "us-east");
        let config = toml::from_str::<Config>(&format!("{base}{one}")).unwrap();
        assert!(config.cluster.unwrap().auto_rehome.traffic().is_none());
        let auto = |settings: &str| parse(format!("{base}{one}[cluster.auto_rehome]\n{settings}\n"));
        assert!(auto("enabled = true\nwindow_ms = 5000\nshare = 0.9").is_ok());
        assert!(auto("enabled = true\nshare = 0.5").is_err());
        assert!(auto("enabled = true\nwindow_ms = 10").is_err());
        assert!(auto("enabled = true\ntracked_keys = 0").is_err());
        assert!(auto("enabled = true\nmin_requests = 0").is_err());
        assert!(auto("enabled = true\nmax_per_minute = 0").is_err());
        assert!(toml::from_str::<Config>(&format!("{base}{one}[cluster.auto_rehome]\nwindow = 1\n")).is_err());
        // Leadership that follows the workload (R22): off by default; a
        // share of a half or less would let two nodes take turns, and a
        // window shorter than two election timeouts could start handovers
        // faster than they end.
        let config = toml::from_str::<Config>(&format!("{base}{one}")).unwrap();
        assert!(config.cluster.unwrap().follow_workload.follow().is_none());
        let follow = |settings: &str| parse(format!("{base}{one}[cluster.follow_workload]\n{settings}\n"));
        assert!(follow("enabled = true\nwindow_ms = 5000\nshare = 0.9").is_ok());
        let text = format!("{base}{one}[cluster.follow_workload]\nenabled = true\nwindow_ms = 5000\nshare = 0.9\n");
        let settings = toml::from_str::<Config>(&text).unwrap().cluster.unwrap().follow_workload.follow().expect("on");
        assert_eq!((settings.window_us, settings.share), (5_000_000, 0.9));
        assert!(follow("enabled = true\nshare = 0.5").is_err());
        assert!(follow("enabled = true\nmin_requests = 0").is_err());
        assert!(follow("enabled = true\nwindow_ms = 600").is_err(), "less than twice the election timeout");
        assert!(follow("enabled = false\nwindow_ms = 600").is_ok(), "checked only when on");
        assert!(toml::from_str::<Config>(&format!("{base}{one}[cluster.follow_workload]\nwindow = 1\n")).is_err());
    }
}
