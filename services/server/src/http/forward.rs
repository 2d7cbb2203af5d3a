//! Gateways: sending a request to the node that must run it.
//!
//! In a cluster, transactions run on the node the client talks to (their
//! coordinator reaches each shard's leader itself), but a session lives on
//! the node that opened it (its id starts with that node's id), and a
//! membership change is proposed by the leader of the shard it changes. Any node
//! answers any request: this middleware runs the request here when it may,
//! and otherwise forwards it unchanged to the right node's API and relays
//! the answer:
//!
//! - `POST /v1/sql`, `POST /v1/sessions`: here;
//! - `POST /v1/admin/membership`: on the leader of the shard it names;
//! - `/v1/sessions/{id}/...`: to the node that holds the session.
//!
//! A forwarded request carries [`FORWARDED_HEADER`] and is never forwarded
//! again: if the target no longer leads, it answers `08006` (retryable)
//! itself. Forwarding pays the emulated one-way latency each way, and a
//! fault rule that cuts this node off from the target makes it `08006` too.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use geodb_geo::NodeId;

use super::ApiError;
use crate::cluster::{Cluster, Route};
use crate::node::Node;
use crate::session::session_node;
use crate::transport::timer;

/// Marks a request forwarded by a gateway (its value: the gateway's id).
pub const FORWARDED_HEADER: &str = "x-geodb-forwarded-by";

/// The routing middleware (see the module documentation).
pub async fn route(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let Some(cluster) = node.cluster.clone() else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED_HEADER) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    // Who the client is, for the target to run the request as
    // (`http::auth`: trusted there because this node's certificate says
    // it comes from a node).
    let user = request.extensions().get::<crate::auth::Identity>().map(|identity| identity.user.clone());
    let user = user.as_deref();
    let target = if path == "/v1/admin/membership" {
        // The shard named in the body; the handler answers a body that
        // names none (or is not JSON) itself.
        let (parts, body) = request.into_parts();
        let limit = node.config.limits.request_bytes_max;
        let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
            return ApiError::too_large(limit).into_response();
        };
        let shard = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|body| body.get("shard").and_then(serde_json::Value::as_u64));
        // No shard, or one the map does not have: the handler says so.
        let Some(shard) = shard.filter(|shard| cluster.map.shard(*shard).is_some()) else {
            return next.run(Request::from_parts(parts, Body::from(bytes))).await;
        };
        return match cluster.route_to_leader(shard) {
            Route::Local => next.run(Request::from_parts(parts, Body::from(bytes))).await,
            Route::Forward { node: to, http } => forward(&node, &cluster, to, http, method, &path, bytes, user).await,
            Route::Unavailable(message) => ApiError::new("08006", message).into_response(),
        };
    } else if let Some(rest) = path.strip_prefix("/v1/sessions/") {
        let id = rest.split('/').next().unwrap_or_default();
        match session_node(id).map(NodeId) {
            Some(holder) if holder != cluster.node => match cluster.http_of(holder) {
                _ if cluster.cut_off_from(holder) => {
                    Route::Unavailable(format!("node {} holding session {id} is unreachable", holder.0))
                }
                Some(http) => Route::Forward { node: holder, http },
                None => return ApiError::unknown_session(id).into_response(),
            },
            _ => Route::Local,
        }
    } else {
        Route::Local
    };
    if target == Route::Local {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let limit = node.config.limits.request_bytes_max;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        // Let the handler answer the oversized or broken body (413/400).
        Err(_) => return ApiError::too_large(limit).into_response(),
    };
    match target {
        Route::Local => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Route::Forward { node: to, http } => forward(&node, &cluster, to, http, method, &path, bytes, user).await,
        Route::Unavailable(message) => ApiError::new("08006", message).into_response(),
    }
}

/// Sends the request to `to`, as `user` (the client's identity on a secure
/// node), and relays its answer.
#[allow(clippy::too_many_arguments)]
async fn forward(
    node: &Node,
    cluster: &Cluster,
    to: NodeId,
    http: std::net::SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
    user: Option<&str>,
) -> Response {
    let delay = cluster.one_way(to);
    timer::sleep_until(std::time::Instant::now() + delay).await;
    let mut request = cluster
        .client
        .request(method, format!("{}://{http}{path}", cluster.scheme))
        .header(FORWARDED_HEADER, node.config.node_id)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(user) = user {
        request = request.header(super::auth::USER_HEADER, super::auth::encode_user(user));
    }
    // The serving node continues this request's trace.
    for (name, value) in crate::telemetry::trace_headers() {
        request = request.header(name, value);
    }
    let sent = request.body(body).send().await;
    let answer = match sent {
        Ok(answer) => answer,
        // Not connected: the request never reached the target.
        Err(error) if error.is_connect() => {
            return ApiError::new("08006", format!("cannot reach node {} at {http}: {error}", to.0)).into_response();
        }
        // Sent, but no answer: the target may have committed it.
        Err(error) => return outcome_unknown(to, &error.to_string()),
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let retry_after = answer.headers().get(header::RETRY_AFTER).cloned();
    let commit: Vec<(&str, HeaderValue)> = [crate::exec::COMMIT_HEADER, crate::exec::COMMIT_REGIONS_HEADER]
        .into_iter()
        .filter_map(|name| Some((name, answer.headers().get(name)?.clone())))
        .collect();
    let bytes = match answer.bytes().await {
        Ok(bytes) => bytes,
        Err(error) => return outcome_unknown(to, &error.to_string()),
    };
    timer::sleep_until(std::time::Instant::now() + delay).await;
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    if let Some(retry_after) = retry_after {
        headers.insert(header::RETRY_AFTER, retry_after);
    }
    for (name, value) in commit {
        headers.insert(name, value);
    }
    headers.insert("x-geodb-served-by", HeaderValue::from(to.0));
    response
}

/// The answer when a forwarded request was sent but its answer was lost:
/// it may have committed, so it must not be retried blindly.
fn outcome_unknown(to: NodeId, error: &str) -> Response {
    ApiError::new(
        "08007",
        format!(
            "node {} received the request but its answer was lost ({error}); it may or may not have committed",
            to.0
        ),
    )
    .into_response()
}
