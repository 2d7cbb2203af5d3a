//! The HTTP API of `docs/api.md`, version 1, over axum.
//!
//! Routes:
//! - `POST /v1/sql` — one statement or a batch, as one transaction, retried
//!   by the server on serialization failure ([`sql`]).
//! - `POST /v1/sessions`, `POST /v1/sessions/{id}/sql`,
//!   `DELETE /v1/sessions/{id}` — interactive transactions ([`sessions`]).
//! - `GET /v1/cluster`, `GET /v1/homes/{key}`, `POST /v1/admin/rehome`,
//!   `GET /v1/admin/rehomes[/{job}]`, `DELETE /v1/admin/rehomes/{job}`,
//!   `GET|PUT /v1/admin/faults` (only with `cluster.admin_faults`),
//!   `POST /v1/admin/membership` (one shard of a cluster),
//!   `POST /v1/admin/backup`, `POST /v1/admin/restore`,
//!   `GET /healthz`, `GET /readyz`, `GET /metrics` ([`ops`]).
//! - On a secure node every `/v1` request authenticates first ([`auth`]).
//! - In a cluster, requests that must run elsewhere are forwarded
//!   ([`forward`]).
//!
//! Every response carries `X-GeoDB-Node` and `X-GeoDB-Region`. Requests
//! to `/v1` beyond `limits.requests_inflight_max` are shed with 503 and
//! `Retry-After` instead of queueing. Statements run through
//! `exec::statement` (on a single node on the handler's task, with what
//! waits below them freeing the worker).

pub mod auth;
pub mod body;
pub mod error;
pub mod forward;
pub mod ops;
pub mod sessions;
pub mod sql;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::node::Node;
use crate::telemetry::names;
pub use error::ApiError;

/// The router of the whole API.
pub fn router(node: Arc<Node>) -> Router {
    let v1 = Router::new()
        .route("/v1/sql", post(sql::one_shot))
        .route("/v1/sessions", post(sessions::open))
        .route("/v1/sessions/{id}/sql", post(sessions::statement))
        .route("/v1/sessions/{id}", axum::routing::delete(sessions::close))
        .route("/v1/cluster", get(ops::cluster))
        .route("/v1/homes/{key}", get(ops::home))
        .route("/v1/admin/rehome", post(ops::rehome))
        .route("/v1/admin/rehomes", get(ops::rehome_jobs))
        .route("/v1/admin/rehomes/{job}", get(ops::rehome_job).delete(ops::cancel_rehome_job))
        .route("/v1/admin/faults", get(ops::faults).put(ops::set_faults))
        .route("/v1/admin/membership", post(ops::membership))
        .route("/v1/admin/backup", post(ops::backup))
        .route("/v1/admin/restore", post(ops::restore))
        .layer(middleware::from_fn_with_state(node.clone(), forward::route))
        // Who the request runs as, before it runs here or is forwarded.
        .layer(middleware::from_fn_with_state(node.clone(), auth::authenticate))
        .layer(middleware::from_fn_with_state(node.clone(), shed_load));
    Router::new()
        .merge(v1)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|request: Request| async move { ApiError::not_found(request.uri().path()) })
        .method_not_allowed_fallback(|request: Request| async move {
            ApiError::method_not_allowed(request.method().as_str(), request.uri().path())
        })
        .layer(middleware::from_fn_with_state(node.clone(), observe))
        .layer(middleware::from_fn(trace))
        .with_state(node)
}

/// Runs the request in an `http.request` span, a child of the caller's
/// trace if its `traceparent` names one (a client's, or a forwarding
/// gateway's).
async fn trace(request: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let route = route_label(request.uri().path());
    let method = request.method().clone();
    let span = crate::telemetry::span(|| {
        tracing::info_span!(
            "http.request",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
        )
    });
    crate::telemetry::adopt_parent(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// Sheds requests beyond the concurrency bound with 503 + `Retry-After`.
async fn shed_load(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let admission = match node.admit() {
        Ok(admission) => admission,
        Err(shed) => return shed.into_response(),
    };
    let response = next.run(request).await;
    drop(admission);
    response
}

/// Adds the node headers and records request counts and latencies.
async fn observe(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(request.uri().path());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("x-geodb-node", HeaderValue::from(node.config.node_id));
    if let Ok(region) = HeaderValue::from_str(&node.config.region) {
        headers.insert("x-geodb-region", region);
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::REQUESTS, "route" => route, "status" => status).increment(1);
    metrics::histogram!(names::REQUEST_SECONDS, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// A bounded set of route labels (never the raw path: session ids would
/// make the label set unbounded).
fn route_label(path: &str) -> &'static str {
    match path {
        "/v1/sql" => "sql",
        "/v1/sessions" => "sessions",
        "/v1/cluster" => "cluster",
        "/v1/admin/rehome" => "rehome",
        "/v1/admin/rehomes" => "rehomes",
        "/v1/admin/faults" => "faults",
        "/v1/admin/membership" => "membership",
        "/v1/admin/backup" => "backup",
        "/v1/admin/restore" => "restore",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        _ if path.starts_with("/v1/sessions/") && path.ends_with("/sql") => "session_sql",
        _ if path.starts_with("/v1/sessions/") => "session",
        _ if path.starts_with("/v1/homes/") => "homes",
        _ if path.starts_with("/v1/admin/rehomes/") => "rehomes",
        _ => "other",
    }
}
