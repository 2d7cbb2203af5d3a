//! Logs, traces and metrics.
//!
//! - Logs: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as
//!   text or as JSON lines ([`LogFormat`]). Text carries ANSI colours only
//!   when stderr is a terminal, so a redirected log stays plain text.
//! - Traces: spans from HTTP request (`http.request`, a child of the
//!   client's W3C `traceparent` if it sent one) to SQL statement
//!   (`sql.statement`) to commit (`txn.commit`) to each request to a shard's
//!   leader (`shard.request`), exported over OTLP/gRPC when `otlp_endpoint`
//!   is configured. A request a gateway forwards carries its `traceparent`,
//!   so the node that serves it continues the same trace. `RUST_LOG` filters
//!   the logs only: the spans are exported whatever it says.
//! - Metrics: the `metrics` facade with a Prometheus recorder, rendered at
//!   `GET /metrics`. Latencies are histograms (seconds) so that quantiles
//!   can be aggregated across nodes. Every family has a HELP text
//!   ([`names::FAMILIES`]), which `promtool check metrics` requires.

use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Histogram buckets for latencies, in seconds: 100 µs to 10 s, roughly
/// ×2.5 apart — fine enough at the low end for single-node commits, wide
/// enough for wide-area ones.
const LATENCY_BUCKETS_S: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Metric names, in one place so dashboards and code agree.
pub mod names {
    /// HTTP requests by route and status.
    pub const REQUESTS: &str = "geodb_http_requests_total";
    /// HTTP request latency by route.
    pub const REQUEST_SECONDS: &str = "geodb_http_request_duration_seconds";
    /// Statement latency by isolation level and statement kind.
    pub const STATEMENT_SECONDS: &str = "geodb_statement_duration_seconds";
    /// Transactions by isolation level and outcome (commit, abort, rollback).
    pub const TRANSACTIONS: &str = "geodb_transactions_total";
    /// Aborts by reason (conflict, constraint, error).
    pub const ABORTS: &str = "geodb_aborts_total";
    /// Server-side retries of one-shot statements and batches.
    pub const RETRIES: &str = "geodb_retries_total";
    /// Requests shed with 503.
    pub const SHED: &str = "geodb_requests_shed_total";
    pub const INFLIGHT: &str = "geodb_requests_inflight";
    pub const SESSIONS: &str = "geodb_sessions";
    pub const GROUP_COMMIT_SYNCS: &str = "geodb_group_commit_syncs_total";
    pub const STATEMENT_CACHE_HITS: &str = "geodb_statement_cache_hits_total";
    pub const STATEMENT_CACHE_MISSES: &str = "geodb_statement_cache_misses_total";
    /// Snapshots a replica installed from its leader, by node.
    pub const PAXOS_SNAPSHOTS_INSTALLED: &str = "geodb_paxos_snapshots_installed_total";
    /// Leadership changes seen by a node's replica of a shard, by node.
    pub const PAXOS_LEADER_CHANGES: &str = "geodb_paxos_leader_changes_total";
    /// The replication driver's Paxos log writes, by node and whether they
    /// were synced (`sync="false"`: only learners' copies and chosen entries).
    pub const PAXOS_LOG_WRITES: &str = "geodb_paxos_log_writes_total";
    /// Shard leaderships this node handed to the node their requests came
    /// from (R22), by node.
    pub const LEADERSHIP_HANDOVERS: &str = "geodb_leadership_handovers_total";
    /// Proposals in flight when their leader stepped down, by node and how
    /// they were settled (chosen, never_chosen, unknown, contradicted).
    pub const PAXOS_ORPHANED_PROPOSALS: &str = "geodb_paxos_orphaned_proposals_total";
    /// Reads of the global shard at a closed timestamp (R14) on a node's
    /// own replica, by node and outcome (served, waited_for_close).
    pub const GLOBAL_READS: &str = "geodb_global_reads_total";
    /// Monotonic Atomic View reads served by a node's own replicas, and
    /// keys they showed at an older version because the newest one's
    /// transaction had not fully arrived there, by node.
    pub const MAV_VIEWS: &str = "geodb_mav_views_total";
    pub const MAV_KEYS_HELD_BACK: &str = "geodb_mav_keys_held_back_total";
    /// R18: rehomes of locality keys this node ran, by node and outcome
    /// (moved, unchanged), and the rows and index entries they moved.
    pub const REHOMES: &str = "geodb_rehomes_total";
    pub const REHOMED_ROWS: &str = "geodb_rehomed_rows_total";
    /// R19: automatic rehomes a node decided, by node and outcome (moved,
    /// unchanged, failed, rate_limited).
    pub const AUTO_REHOMES: &str = "geodb_auto_rehomes_total";
    /// Backups and restores a node ran, by node, kind (backup, restore)
    /// and outcome (ok, failed), and the rows they wrote.
    pub const BACKUPS: &str = "geodb_backups_total";
    pub const BACKUP_ROWS: &str = "geodb_backup_rows_total";
    /// Pipelined proposals the log chose and re-validation skipped (R15).
    pub const PAXOS_PIPELINE_SKIPPED: &str = "geodb_paxos_pipeline_skipped_total";
    /// Parts prepared with the read of the row they write (R20), proposed
    /// by a node as their shard's leader.
    pub const PREPARES_AT_STATEMENT: &str = "geodb_prepares_at_statement_total";
    /// Coordinated commits and prepares parked behind a prepared
    /// transaction with an older snapshot (R20), counted at each try.
    pub const LOCK_WAITS: &str = "geodb_lock_waits_total";
    /// Commits recorded together with the record shard's own part, in one
    /// round (R21), proposed by a node as the record's leader.
    pub const DECISIONS_WITH_PART: &str = "geodb_decisions_with_part_total";
    /// Version garbage collection on a node: versions and bytes removed,
    /// passes by outcome, and how far behind the clock the horizon of its
    /// last pass was.
    pub const GC_VERSIONS: &str = "geodb_gc_versions_total";
    pub const GC_BYTES: &str = "geodb_gc_bytes_total";
    pub const GC_PASSES: &str = "geodb_gc_passes_total";
    pub const GC_HORIZON_AGE_SECONDS: &str = "geodb_gc_horizon_age_seconds";
    /// Shards idle and quiet on a node (no heartbeats, no timers).
    pub const PAXOS_QUIET_GROUPS: &str = "geodb_paxos_quiet_groups";
    /// R16: entries a region's outbox holds for home shards, and the age
    /// of the oldest, by node (a replica of it) and outbox shard.
    pub const OUTBOX_DEPTH: &str = "geodb_outbox_depth";
    pub const OUTBOX_OLDEST_SECONDS: &str = "geodb_outbox_oldest_seconds";
    /// R16: deliveries of outbox entries sent to home shards, by node.
    pub const OUTBOX_DELIVERIES: &str = "geodb_outbox_deliveries_total";
    /// How long a commit's answer waited for the clocks once durable.
    pub const COMMIT_WAIT_SECONDS: &str = "geodb_commit_wait_seconds";
    /// Time from proposing a commit to applying it on the leader.
    pub const PAXOS_COMMIT_SECONDS: &str = "geodb_paxos_commit_duration_seconds";
    /// A peer's clock minus this node's, as last measured, by peer.
    pub const CLOCK_OFFSET_SECONDS: &str = "geodb_clock_offset_seconds";
    /// 1 while this node's clock is beyond `max_clock_offset_ms` of most
    /// peers (it refuses coordinated transactions), else 0.
    pub const CLOCK_UNSYNCHRONIZED: &str = "geodb_clock_unsynchronized";
    /// The bound ε, `max_clock_offset_ms`, in seconds.
    pub const CLOCK_MAX_OFFSET_SECONDS: &str = "geodb_clock_max_offset_seconds";
    /// Messages whose sender's clock reading was more than ε ahead of this
    /// node's clock, and so was not folded into it, by node.
    pub const CLOCK_READINGS_IGNORED: &str = "geodb_clock_readings_ignored_total";
    /// Node-to-node transport frames written, and their bytes (prefix
    /// included), by node. All transport metrics carry the `node` label.
    pub const TRANSPORT_FRAMES_SENT: &str = "geodb_transport_frames_sent_total";
    pub const TRANSPORT_BYTES_SENT: &str = "geodb_transport_bytes_sent_total";
    /// Transport frames read, and their bytes (prefix included), by node.
    pub const TRANSPORT_FRAMES_RECEIVED: &str = "geodb_transport_frames_received_total";
    pub const TRANSPORT_BYTES_RECEIVED: &str = "geodb_transport_bytes_received_total";
    /// Envelopes the transport handed to its node's Paxos driver, by node.
    pub const TRANSPORT_ENVELOPES_DELIVERED: &str = "geodb_transport_envelopes_delivered_total";
    /// Envelopes dropped, by node and reason (queue_full, fault,
    /// unknown_peer, disconnected, too_long, wrong_destination, wrong_sender,
    /// inbound_refused, shutdown).
    pub const TRANSPORT_ENVELOPES_DROPPED: &str = "geodb_transport_envelopes_dropped_total";
    /// Received frames refused, closing their connection, by node and reason
    /// (too_long, version, cluster, decode, handshake).
    pub const TRANSPORT_FRAMES_REJECTED: &str = "geodb_transport_frames_rejected_total";
    /// Dials to a peer after the first (reconnection attempts), by node.
    pub const TRANSPORT_RECONNECTS: &str = "geodb_transport_reconnects_total";
    /// The wire version of the node's connection to each peer (the newest
    /// both speak), by node and peer; 0 while it is down.
    pub const TRANSPORT_PEER_PROTOCOL_VERSION: &str = "geodb_transport_peer_protocol_version";
    /// TLS connections refused, by listener (peer, http, pg) and reason
    /// (handshake, identity, plaintext): `docs/security.md`.
    pub const TLS_CONNECTIONS_REFUSED: &str = "geodb_tls_connections_refused_total";
    /// Failed logins, by `listener` (`http`, `pg`) and `reason` (`missing`,
    /// `malformed`, `password`, `certificate`, `rate_limited`).
    pub const AUTH_FAILURES: &str = "geodb_auth_failures_total";
    /// Certificate reloads (SIGHUP), by outcome (ok, failed).
    pub const TLS_RELOADS: &str = "geodb_tls_reloads_total";

    /// The type of a metric family.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Counter,
        Gauge,
        Histogram,
    }

    /// Every family the server registers, with its type and the HELP text
    /// `/metrics` shows for it. Prometheus tooling (`promtool check
    /// metrics`, Grafana's metric browser) expects HELP on every family; a
    /// name above missing here fails the unit test below.
    pub const FAMILIES: &[(&str, Kind, &str)] = &[
        (REQUESTS, Kind::Counter, "HTTP requests answered, by route and status code."),
        (REQUEST_SECONDS, Kind::Histogram, "HTTP request latency in seconds, by route."),
        (
            STATEMENT_SECONDS,
            Kind::Histogram,
            "SQL statement latency in seconds, by isolation level (rc, mav, si, serializable) and statement kind.",
        ),
        (TRANSACTIONS, Kind::Counter, "Transactions ended, by isolation level and outcome (commit, abort, rollback)."),
        (ABORTS, Kind::Counter, "Transactions aborted, by reason (conflict, constraint, error)."),
        (
            RETRIES,
            Kind::Counter,
            "Server-side retries of one-shot statements and batches after a serialization failure.",
        ),
        (
            SHED,
            Kind::Counter,
            "Requests answered 503 (PostgreSQL statements: 53000) because the node was at its concurrency bound.",
        ),
        (
            INFLIGHT,
            Kind::Gauge,
            "Requests and PostgreSQL statements executing now (bounded by limits.requests_inflight_max).",
        ),
        (SESSIONS, Kind::Gauge, "Interactive sessions open now (bounded by limits.sessions_max)."),
        (
            GROUP_COMMIT_SYNCS,
            Kind::Counter,
            "WAL syncs of the local commit path; fewer syncs than commits means grouping.",
        ),
        (STATEMENT_CACHE_HITS, Kind::Counter, "Statements whose plan came from the statement cache."),
        (STATEMENT_CACHE_MISSES, Kind::Counter, "Statements parsed and planned because the statement cache missed."),
        (PAXOS_SNAPSHOTS_INSTALLED, Kind::Counter, "Snapshots a replica installed from its shard leader, by node."),
        (PAXOS_LEADER_CHANGES, Kind::Counter, "Shard leadership changes seen by a node's replica, by node."),
        (
            PAXOS_LOG_WRITES,
            Kind::Counter,
            "Paxos log writes of a node's replication driver (one per round for all shards), by node and sync: false when they held only learners' copies of logs and chosen entries, written without an fsync.",
        ),
        (
            LEADERSHIP_HANDOVERS,
            Kind::Counter,
            "Home shard leaderships this node handed to the node of the shard's home region that sent most of its requests for a window (cluster.follow_workload), by node.",
        ),
        (
            PAXOS_ORPHANED_PROPOSALS,
            Kind::Counter,
            "Proposals in flight when their shard leader stepped down, by node and outcome: chosen (answered as usual), never_chosen (answered not-leader, safe to retry), unknown (answered 08007), contradicted (a broken invariant; always 0).",
        ),
        (
            GLOBAL_READS,
            Kind::Counter,
            "Reads of global tables at a closed timestamp on a node's own replica, by node and outcome: served, waited_for_close (the replica's closed timestamp was behind the read: a lead too short for the topology, or a replica cut off from the global shard's leader).",
        ),
        (
            REHOMES,
            Kind::Counter,
            "Rehomes of locality keys this node ran (POST /v1/admin/rehome), by node and outcome (moved, unchanged).",
        ),
        (REHOMED_ROWS, Kind::Counter, "Rows and index entries the rehomes this node ran moved, by node."),
        (
            AUTO_REHOMES,
            Kind::Counter,
            "Automatic rehomes this node decided (a key's traffic came from one other region for cluster.auto_rehome.window_ms), by node and outcome: moved, unchanged, failed, rate_limited (held back by cluster.auto_rehome.max_per_minute).",
        ),
        (
            BACKUPS,
            Kind::Counter,
            "Backups and restores this node ran (POST /v1/admin/backup and /v1/admin/restore), by node, kind (backup, restore) and outcome (ok, failed).",
        ),
        (
            BACKUP_ROWS,
            Kind::Counter,
            "Rows the backups this node took wrote to their files, and the rows its restores inserted, by node and kind.",
        ),
        (
            MAV_VIEWS,
            Kind::Counter,
            "Monotonic Atomic View reads (gets and scans) served by a node's own replicas, by node.",
        ),
        (
            MAV_KEYS_HELD_BACK,
            Kind::Counter,
            "Keys a Monotonic Atomic View read showed at an older version (or not at all) because the newest version's transaction had not fully arrived at the node's replicas yet, by node.",
        ),
        (
            PREPARES_AT_STATEMENT,
            Kind::Counter,
            "Parts of transactions prepared with the read of the row an UPDATE or DELETE writes, at a shard that commits outside the coordinator's region, proposed by this node as the shard's leader (R20), by node.",
        ),
        (
            LOCK_WAITS,
            Kind::Counter,
            "Tries of snapshot and serializable commits and prepares parked at this node behind a prepared transaction with an older snapshot, instead of aborting (R20), by node.",
        ),
        (
            DECISIONS_WITH_PART,
            Kind::Counter,
            "Commits of transactions across shards recorded together with the record shard's own part in one round, every other part having been prepared at its statement (R21), proposed by this node as the record's leader, by node.",
        ),
        (
            PAXOS_PIPELINE_SKIPPED,
            Kind::Counter,
            "Proposals of a node that the log chose but every replica skipped, because the shard's leader changed while they were in flight and they had been validated against entries the log did not choose (their clients heard 40001), by node.",
        ),
        (
            GC_VERSIONS,
            Kind::Counter,
            "Versions removed by garbage collection at this node's replicas (versions that no read at or above the horizon can see), by node.",
        ),
        (
            GC_BYTES,
            Kind::Counter,
            "Bytes of keys and records the versions removed by garbage collection held, by node.",
        ),
        (
            GC_PASSES,
            Kind::Counter,
            "Garbage-collection passes over a node's replicas, by node and outcome (done, failed, skipped: the node's clock was off its peers).",
        ),
        (
            GC_HORIZON_AGE_SECONDS,
            Kind::Gauge,
            "How far behind the clock the horizon of the node's last garbage-collection pass was: gc.ttl_ms, or more while an older transaction runs on the node, by node.",
        ),
        (
            PAXOS_QUIET_GROUPS,
            Kind::Gauge,
            "Shards whose replica on this node is quiet: idle, no heartbeats and no timers until the next request or a replica's node goes silent or restarts, by node.",
        ),
        (
            OUTBOX_DEPTH,
            Kind::Gauge,
            "Entries the region's outbox holds for home shards (Read Committed writes committed in this region whose home shards have not applied them yet), by node holding a replica of it and outbox shard.",
        ),
        (
            OUTBOX_OLDEST_SECONDS,
            Kind::Gauge,
            "Age of the oldest entry the region's outbox holds (0 when it holds none), by node holding a replica of it and outbox shard: how long the home shards it writes to have been out of reach.",
        ),
        (
            OUTBOX_DELIVERIES,
            Kind::Counter,
            "Deliveries of outbox entries a node sent to home shards while leading its region's outbox (each carries up to 256 entries; resent after a refusal or silence), by node.",
        ),
        (
            COMMIT_WAIT_SECONDS,
            Kind::Histogram,
            "Seconds a commit's answer waited for the clocks after the commit was durable, by isolation level: for si and serializable, until every clock passes the commit timestamp (the part of 2 x max_clock_offset the replication round did not cover); for rc and mav, until this node's clock reaches a timestamp placed ahead of it (writes of global tables).",
        ),
        (
            PAXOS_COMMIT_SECONDS,
            Kind::Histogram,
            "Seconds from a coordinator sending a commit, prepare, decision or resolution to a shard's leader to its answer (one Multi-Paxos round, plus the trip to the leader when it is another node), by request.",
        ),
        (
            CLOCK_OFFSET_SECONDS,
            Kind::Gauge,
            "A peer's clock minus this node's, estimated from its last ping round trip (within half that round trip), by node and peer.",
        ),
        (
            CLOCK_UNSYNCHRONIZED,
            Kind::Gauge,
            "1 while this node's clock is proven beyond max_clock_offset_ms of most peers (it refuses snapshot and serializable transactions), else 0, by node.",
        ),
        (CLOCK_MAX_OFFSET_SECONDS, Kind::Gauge, "The clock bound max_clock_offset_ms, in seconds, by node."),
        (
            CLOCK_READINGS_IGNORED,
            Kind::Counter,
            "Messages from peers whose clock reading was more than max_clock_offset_ms ahead of this node's clock, and so was not followed, by node.",
        ),
        (TRANSPORT_FRAMES_SENT, Kind::Counter, "Node-to-node frames written, by node."),
        (TRANSPORT_BYTES_SENT, Kind::Counter, "Node-to-node bytes written (length prefix included), by node."),
        (TRANSPORT_FRAMES_RECEIVED, Kind::Counter, "Node-to-node frames read, by node."),
        (TRANSPORT_BYTES_RECEIVED, Kind::Counter, "Node-to-node bytes read (length prefix included), by node."),
        (
            TRANSPORT_ENVELOPES_DELIVERED,
            Kind::Counter,
            "Envelopes the transport handed to its node's Paxos driver, by node.",
        ),
        (TRANSPORT_ENVELOPES_DROPPED, Kind::Counter, "Envelopes the transport dropped, by node and reason."),
        (
            TRANSPORT_FRAMES_REJECTED,
            Kind::Counter,
            "Received frames refused (closing their connection), by node and reason.",
        ),
        (TRANSPORT_RECONNECTS, Kind::Counter, "Dials to a peer after the first one (reconnection attempts), by node."),
        (
            TRANSPORT_PEER_PROTOCOL_VERSION,
            Kind::Gauge,
            "Wire protocol version of the node's connection to a peer (the newest both speak; 0 while the connection is down), by node and peer.",
        ),
        (
            TLS_CONNECTIONS_REFUSED,
            Kind::Counter,
            "TLS connections refused, by listener (peer, http, pg) and reason (handshake: no valid certificate or not TLS; identity: a certificate for another node or cluster; plaintext: a PostgreSQL client that did not ask for TLS).",
        ),
        (TLS_RELOADS, Kind::Counter, "Certificate reloads (on SIGHUP), by outcome (ok, failed)."),
        (
            AUTH_FAILURES,
            Kind::Counter,
            "Failed logins, by listener (http, pg) and reason (missing, malformed, password, certificate, rate_limited).",
        ),
    ];
}

/// The Prometheus side of the metrics facade.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// The process-wide recorder (installed on first use).
    pub fn global() -> Metrics {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        let handle = HANDLE.get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_S)
                .expect("latency buckets are non-empty")
                .install_recorder()
                .expect("the metrics recorder is installed once per process");
            // Descriptions belong to the recorder, so they follow its installation.
            for &(name, kind, help) in names::FAMILIES {
                match kind {
                    names::Kind::Counter => metrics::describe_counter!(name, help),
                    names::Kind::Gauge => metrics::describe_gauge!(name, help),
                    names::Kind::Histogram => metrics::describe_histogram!(name, help),
                }
            }
            handle
        });
        Metrics { handle: handle.clone() }
    }

    /// Counts a rehome this node ran (R18).
    pub fn rehomed(&self, node: u64, moved: bool, rows: usize) {
        let node = node.to_string();
        let outcome = if moved { "moved" } else { "unchanged" };
        metrics::counter!(names::REHOMES, "node" => node.clone(), "outcome" => outcome).increment(1);
        metrics::counter!(names::REHOMED_ROWS, "node" => node).increment(rows as u64);
    }

    /// A backup or restore (`kind`) ended: with the rows it wrote, or failed.
    pub fn backup(&self, node: u64, kind: &'static str, outcome: Result<u64, &crate::http::ApiError>) {
        let node = node.to_string();
        let label = if outcome.is_ok() { "ok" } else { "failed" };
        metrics::counter!(names::BACKUPS, "node" => node.clone(), "kind" => kind, "outcome" => label).increment(1);
        if let Ok(rows) = outcome {
            metrics::counter!(names::BACKUP_ROWS, "node" => node, "kind" => kind).increment(rows);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// How logs are written to stderr (`--log-format`, or `log_format` in the
/// config file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people; ANSI colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, the event's fields (`message` among them)
    /// beside `timestamp`, `level` and `target`, for log pipelines.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format \"{other}\" (expected text or json)")),
        }
    }
}

/// The format [`init_tracing`] uses; text until [`set_log_format`] says
/// otherwise.
static LOG_FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Chooses the log format, once, before [`init_tracing`] runs. Logging is
/// process-wide (one global subscriber, shared by every node `geodb dev`
/// runs), so the choice is made once for the process by the command line.
pub fn set_log_format(format: LogFormat) {
    LOG_FORMAT.set(format).expect("the log format is chosen once, before logging starts");
}

/// Sets up logging, and tracing export if `otlp_endpoint` is given. Returns
/// the tracer provider to flush at shutdown.
pub fn init_tracing(
    otlp_endpoint: Option<&str>,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = LOG_FORMAT.get().copied().unwrap_or_default();
    // Escape codes are for terminals; in a file or a pipe they are noise
    // that log tools and grep trip over.
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal())
    });
    let json = (format == LogFormat::Json)
        .then(|| tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr));
    // The filter is the logs' own: a quiet log must not silence the traces.
    let logs = tracing_subscriber::registry().with(Layer::and_then(text, json).with_filter(filter));
    let Some(endpoint) = otlp_endpoint else {
        logs.try_init().map_err(|e| e.to_string())?;
        return Ok(None);
    };
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    TRACED.store(true, std::sync::atomic::Ordering::Relaxed);
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter for {endpoint}: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name("geodb").build())
        .build();
    let tracer = provider.tracer("geodb");
    // GeoDB's own spans only (not those of the libraries under it, the
    // exporter's among them).
    let spans = Targets::new().with_target("geodb_server", tracing::Level::INFO);
    let traces = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(spans);
    logs.with(traces).try_init().map_err(|e| e.to_string())?;
    Ok(Some(provider))
}

/// Exports the spans still queued and stops exporting; off the runtime's
/// workers, since it blocks until the last batch is sent.
pub async fn shut_down_tracing(provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>) {
    if let Some(provider) = provider {
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// Whether spans are exported (an `otlp_endpoint` is configured).
static TRACED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `make()`'s span when spans are exported, else a disabled one: without
/// an `otlp_endpoint` the hot paths build no span at all.
pub fn span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if TRACED.load(std::sync::atomic::Ordering::Relaxed) { make() } else { tracing::Span::none() }
}

/// HTTP headers as the carrier of a W3C trace context.
struct HeaderCarrier<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Makes `span` a child of the trace context in `headers` (`traceparent`),
/// if they carry a valid one; otherwise it starts a trace of its own.
pub fn adopt_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let parent =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderCarrier(headers)));
    // Fails only when no tracer is installed (no `otlp_endpoint`): then
    // there is no trace to continue.
    let _ = span.set_parent(parent);
}

/// The current span's trace context as headers (`traceparent`) for a
/// request this node sends on; none when nothing is traced.
pub fn trace_headers() -> Vec<(String, String)> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    let mut headers = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut headers));
    headers.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_name_has_a_description() {
        // The names are constants, which Rust cannot list: read them from
        // this file, so a new name without a FAMILIES entry fails here
        // rather than as a missing HELP line in production.
        let source = include_str!("telemetry.rs");
        let declared: Vec<&str> = source
            .lines()
            .filter_map(|line| line.trim().strip_prefix("pub const ")?.split_once(": &str = \"")?.1.strip_suffix("\";"))
            .collect();
        assert!(declared.len() >= 20, "found only {declared:?}");
        let described: Vec<&str> = names::FAMILIES.iter().map(|(name, _, _)| *name).collect();
        for name in &declared {
            assert_eq!(described.iter().filter(|other| *other == name).count(), 1, "{name}: one FAMILIES entry");
        }
        assert_eq!(declared.len(), described.len());
        for (name, kind, help) in names::FAMILIES {
            assert!(!help.is_empty(), "{name}");
            // Prometheus naming: counters end in _total, histograms in their unit.
            match kind {
                names::Kind::Counter => assert!(name.ends_with("_total"), "{name}"),
                names::Kind::Histogram => assert!(name.ends_with("_seconds"), "{name}"),
                names::Kind::Gauge => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
    }

    #[test]
    fn log_formats_parse_by_name() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("JSON lines".parse::<LogFormat>().is_err());
    }
}
