//! Logs, traces and metrics.
//!
//! - Logs: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//! - Traces: spans from request to statement to commit, exported over
//!   OTLP/gRPC when `otlp_endpoint` is configured.
//! - Metrics: the `metrics` facade with a Prometheus recorder, rendered at
//!   `GET /metrics`. Latencies are histograms (seconds) so that quantiles
//!   can be aggregated across nodes.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
    /// Transactions by isolation level and outcome (commit, abort, error).
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
    /// Time from proposing a commit to applying it on the leader, by node.
    pub const PAXOS_COMMIT_SECONDS: &str = "geodb_paxos_commit_duration_seconds";
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
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_S)
                .expect("latency buckets are non-empty")
                .install_recorder()
                .expect("the metrics recorder is installed once per process")
        });
        Metrics { handle: handle.clone() }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Sets up logging, and tracing export if `otlp_endpoint` is given. Returns
/// the tracer provider to flush at shutdown.
pub fn init_tracing(
    otlp_endpoint: Option<&str>,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry().with(filter).with(fmt).try_init().map_err(|e| e.to_string())?;
        return Ok(None);
    };
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
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(Some(provider))
}
