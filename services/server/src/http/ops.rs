//! Operations endpoints: health, readiness, metrics, cluster and homes.
//!
//! A single node is a cluster of one region with one shard: `/v1/cluster`
//! describes exactly that, every locality key's home is this node's region,
//! and rehoming answers that there is no other region to move to (it
//! arrives with the multi-region cluster).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::body::read_json;
use crate::node::Node;
use crate::telemetry::names;

/// The single shard of a single node.
const SINGLE_SHARD_ID: u64 = 1;
/// The epoch of every home on a single node: homes never move.
const SINGLE_NODE_EPOCH: u64 = 1;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    if node.is_ready() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n") }
}

pub async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let stats = node.txns.shard().stats();
    metrics::counter!(names::GROUP_COMMIT_SYNCS).absolute(stats.syncs);
    let cache = node.db.cache_stats();
    metrics::counter!(names::STATEMENT_CACHE_HITS).absolute(cache.hits);
    metrics::counter!(names::STATEMENT_CACHE_MISSES).absolute(cache.misses);
    metrics::gauge!(names::SESSIONS).set(node.sessions.len() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], node.metrics.render())
}

pub async fn cluster(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let config = &node.config;
    Json(json!({
        "regions": [config.region],
        "nodes": [{
            "id": config.node_id,
            "region": config.region,
            "zone": config.zone,
            "http": format!("http://{}", config.http),
            "peer": null,
            "alive": true,
        }],
        "shards": [{
            "id": SINGLE_SHARD_ID,
            "home": config.region,
            "replicas": [config.node_id],
            "voters": [config.node_id],
            "leader": config.node_id,
            "applied_index": null,
            "visible_ts": node.txns.shard().snapshot().to_string(),
        }],
        "max_clock_offset_ms": config.max_clock_offset_ms,
    }))
}

pub async fn home(State(node): State<Arc<Node>>, Path(key): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    // Locality keys are SQL values; integers answer as numbers, as in the API.
    let key = match key.parse::<i64>() {
        Ok(number) => json!(number),
        Err(_) => json!(key),
    };
    Ok(Json(json!({"key": key, "region": node.config.region, "epoch": SINGLE_NODE_EPOCH})))
}

#[derive(Debug, Deserialize)]
struct RehomeRequest {
    key: serde_json::Value,
    region: String,
}

pub async fn rehome(State(node): State<Arc<Node>>, body: Body) -> Result<Json<serde_json::Value>, ApiError> {
    let request: RehomeRequest = read_json(body, node.config.limits.request_bytes_max).await?;
    if request.region == node.config.region {
        return Ok(Json(json!({
            "key": request.key, "from": node.config.region, "to": request.region, "epoch": SINGLE_NODE_EPOCH,
        })));
    }
    Err(ApiError::new(
        "22023",
        format!("unknown region \"{}\": this cluster has only \"{}\"", request.region, node.config.region),
    ))
}
