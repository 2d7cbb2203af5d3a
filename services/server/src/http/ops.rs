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
use geodb_geo::paxos::Membership;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::body::{read_json, read_object};
use crate::cluster::Cluster;
use crate::node::Node;
use crate::replication::{Input, ReconfigureError};
use crate::telemetry::names;
use crate::transport::FaultRule;

/// How long a membership change may take to be chosen before the answer
/// says its outcome is unknown.
const MEMBERSHIP_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// The single shard of a single node.
const SINGLE_SHARD_ID: u64 = 1;
/// The epoch of every home on a single node: homes never move.
const SINGLE_NODE_EPOCH: u64 = 1;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    if !node.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_string());
    }
    if let Some(failure) = node.cluster.as_ref().and_then(|cluster| cluster.driver.failed()) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("replication stopped: {failure}\n"));
    }
    let unsynchronized = node.cluster.as_ref().and_then(|cluster| cluster.driver.published().clock.unsynchronized_ns);
    if let Some(offset_ns) = unsynchronized {
        // Still ready: Read Committed and MAV are served; say what is not.
        return (
            StatusCode::OK,
            format!(
                "ready for Read Committed and MAV only: this node's clock is {} ms beyond max_clock_offset_ms of most peers\n",
                offset_ns / 1_000_000
            ),
        );
    }
    (StatusCode::OK, "ready\n".to_string())
}

pub async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let syncs: u64 = node.shards.iter().map(|shard| shard.syncs()).sum();
    metrics::counter!(names::GROUP_COMMIT_SYNCS).absolute(syncs);
    let cache = node.db.cache_stats();
    metrics::counter!(names::STATEMENT_CACHE_HITS).absolute(cache.hits);
    metrics::counter!(names::STATEMENT_CACHE_MISSES).absolute(cache.misses);
    metrics::gauge!(names::SESSIONS).set(node.sessions.len() as f64);
    if let Some(cluster) = &node.cluster {
        // By node, like the transport's: `geodb dev` runs every node in one
        // process, with one registry.
        let clock = cluster.driver.published().clock;
        let here = cluster.node.0.to_string();
        let unsynchronized = if clock.unsynchronized_ns.is_some() { 1.0 } else { 0.0 };
        metrics::gauge!(names::CLOCK_UNSYNCHRONIZED, "node" => here.clone()).set(unsynchronized);
        metrics::gauge!(names::CLOCK_MAX_OFFSET_SECONDS, "node" => here.clone())
            .set(node.config.max_clock_offset_ms as f64 / 1e3);
        for (peer, offset) in &clock.peers {
            metrics::gauge!(names::CLOCK_OFFSET_SECONDS, "node" => here.clone(), "peer" => peer.0.to_string())
                .set(offset.offset_ns as f64 / 1e9);
        }
        for shard in node.shards.iter().filter(|shard| is_outbox(cluster, shard.id())) {
            let (depth, oldest_s) = outbox_depth(shard);
            let outbox = shard.id().to_string();
            metrics::gauge!(names::OUTBOX_DEPTH, "node" => here.clone(), "outbox" => outbox.clone()).set(depth as f64);
            metrics::gauge!(names::OUTBOX_OLDEST_SECONDS, "node" => here.clone(), "outbox" => outbox).set(oldest_s);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], node.metrics.render())
}

fn is_outbox(cluster: &crate::cluster::Cluster, shard: u64) -> bool {
    cluster.map.shard(shard).is_some_and(|spec| spec.role == geodb_geo::shardmap::ShardRole::Outbox)
}

/// R16: the entries an outbox replica holds, and the age of the oldest in
/// seconds (by this node's clock; 0 when it holds none).
fn outbox_depth(shard: &geodb_txn::Shard) -> (u64, f64) {
    let queues = shard.queues();
    let depth = queues.iter().map(|queue| queue.last - queue.shipped).sum();
    let now_ns =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64);
    let oldest = queues.iter().filter_map(|queue| queue.oldest).min();
    (depth, oldest.map_or(0.0, |ts| now_ns.saturating_sub(ts.physical) as f64 / 1e9))
}

pub async fn cluster(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let config = &node.config;
    if let Some(cluster) = &node.cluster {
        return Json(cluster_json(&node, cluster));
    }
    Json(json!({
        "regions": [config.region],
        "nodes": [{
            "id": config.node_id,
            "region": config.region,
            "zone": config.zone,
            "http": format!("{}://{}", crate::http_scheme(&node), config.http),
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
            "last_commit_ts": node.shards.first().map(|shard| shard.stats().last_commit_ts.to_string()),
        }],
        "max_clock_offset_ms": config.max_clock_offset_ms,
        "insecure": !node.auth.required,
        "versions": versions_json(None),
    }))
}

/// What this binary is and speaks (`docs/operations.md`, "A rolling
/// upgrade"): its release, the wire versions it speaks (`spoken`, as its
/// configuration allows; a single node speaks to no peer), and the data
/// format it reads and writes.
fn versions_json(spoken: Option<std::ops::RangeInclusive<u8>>) -> serde_json::Value {
    json!({
        "release": env!("CARGO_PKG_VERSION"),
        "protocol": spoken.map(|spoken| json!({"oldest": spoken.start(), "newest": spoken.end()})),
        "data_format": crate::node::FORMAT,
    })
}

/// `/v1/cluster` of a cluster node: the shard as this node's replica sees it.
fn cluster_json(node: &Node, cluster: &Cluster) -> serde_json::Value {
    let mut regions: Vec<&str> = Vec::new();
    for entry in &cluster.config.nodes {
        if !regions.contains(&entry.region.as_str()) {
            regions.push(&entry.region);
        }
    }
    let published = cluster.driver.published();
    let clock = &published.clock;
    let ms = |ns: f64| (ns / 1e5).round() / 10.0;
    let peer_versions = cluster.transport.peer_versions();
    let spoken = cluster.transport.versions();
    let nodes: Vec<serde_json::Value> = cluster
        .config
        .nodes
        .iter()
        .map(|entry| {
            json!({
                "id": entry.id,
                "region": entry.region,
                "zone": entry.zone,
                "http": format!("{}://{}", cluster.scheme, entry.http),
                "peer": entry.peer.to_string(),
                // Alive as this node sees it: itself, or a peer whose
                // connection is up and not cut by a fault rule.
                "alive": entry.id == node.config.node_id || {
                    let peer = geodb_geo::NodeId(entry.id);
                    cluster.transport.is_connected(peer) && !cluster.cut_off_from(peer)
                },
                // That node's clock minus this one's, as last measured from
                // here (null: this node itself, or no fresh measurement).
                "clock_offset_ms": clock.peers.get(&geodb_geo::NodeId(entry.id)).map(|peer| ms(peer.offset_ns as f64)),
                // The wire version this node speaks to that one (the newest
                // both speak; its own newest for itself; null while its
                // connection is down).
                "protocol_version": if entry.id == node.config.node_id {
                    Some(*spoken.end())
                } else {
                    peer_versions.get(&geodb_geo::NodeId(entry.id)).map(|version| version.speaking)
                },
            })
        })
        .collect();
    let ids = |nodes: &[geodb_geo::NodeId]| nodes.iter().map(|node| node.0).collect::<Vec<u64>>();
    let shards: Vec<serde_json::Value> = published
        .groups
        .iter()
        .map(|(group, status)| {
            let membership = &status.membership;
            let shard = node.shards.iter().find(|shard| shard.id() == group.0);
            let spec = cluster.map.shard(group.0);
            let role = match spec.map(|spec| &spec.role) {
                Some(geodb_geo::shardmap::ShardRole::System) => "system".to_string(),
                Some(geodb_geo::shardmap::ShardRole::Global) => "global".to_string(),
                Some(geodb_geo::shardmap::ShardRole::Home { index }) => format!("home {index}"),
                Some(geodb_geo::shardmap::ShardRole::Outbox) => "outbox".to_string(),
                None => "unknown".to_string(),
            };
            // R16: what an outbox holds for each home shard.
            let outbox = shard.filter(|shard| is_outbox(cluster, shard.id())).map(|shard| {
                let (depth, oldest_s) = outbox_depth(shard);
                let queues: Vec<serde_json::Value> = shard
                    .queues()
                    .iter()
                    .map(|queue| json!({"shard": queue.dest, "shipped": queue.shipped, "queued": queue.last}))
                    .collect();
                json!({"depth": depth, "oldest_age_ms": (oldest_s * 1e3).round(), "queues": queues})
            });
            json!({
                "id": group.0,
                "home": spec.map(|spec| spec.home.0.clone()),
                "holds": role,
                "replicas": ids(&membership.voters).into_iter().chain(ids(&membership.learners)).collect::<Vec<u64>>(),
                "voters": ids(&membership.voters),
                "learners": ids(&membership.learners),
                "leader": status.leader.map(|leader| leader.0),
                "role": status.role.map(|role| format!("{role:?}").to_lowercase()),
                "serving": status.serving,
                "applied_index": status.applied,
                "chosen_index": status.chosen,
                "snapshot_index": status.snapshot_slot,
                "snapshot_chunks": status.snapshot_chunks,
                "snapshots_installed": published.snapshots_installed.get(group).copied().unwrap_or(0),
                "prepared": status.prepared,
                "quiet": status.quiet,
                "last_commit_ts": shard.map(|shard| shard.stats().last_commit_ts.to_string()),
                // R14: the shard's newest closed timestamp, if it closes any.
                "closed_ts": shard.map(|shard| shard.closed()).filter(|ts| *ts > geodb_txn::Timestamp::ZERO).map(|ts| ts.to_string()),
                "outbox": outbox,
            })
        })
        .collect();
    json!({
        "regions": regions,
        "nodes": nodes,
        "shards": shards,
        "failed": published.failed,
        "node": node.config.node_id,
        "max_clock_offset_ms": node.config.max_clock_offset_ms,
        // No certificates: no TLS and no authentication (`docs/security.md`).
        "insecure": !node.auth.required,
        "global_lead_ms": cluster.config.global_lead_ms(node.config.max_clock_offset_ms).ok(),
        "versions": versions_json(Some(spoken)),
        // This node's clock against its peers' (see docs/operations.md,
        // "Clocks"): while `within_bound` is false it refuses snapshot and
        // serializable transactions and serves Read Committed and MAV.
        "clock": {
            "within_bound": clock.unsynchronized_ns.is_none(),
            "offset_beyond_bound_ms": clock.unsynchronized_ns.map(|ns| ms(ns as f64)),
            "max_peer_offset_ms": ms(clock.max_offset_ns() as f64),
            "peers_measured": clock.peers.len(),
        },
    })
}

/// A membership change: the shard, and its next configuration.
#[derive(Debug, Deserialize)]
struct MembershipChange {
    shard: Option<u64>,
    #[serde(flatten)]
    membership: Membership,
}

/// `POST /v1/admin/membership` with a shard's next configuration,
/// `{"shard": 3, "voters": [...], "learners": [...]}`: at most one voter
/// added or removed per change (promoting a learner adds one); learners
/// change freely. Runs on the shard's leader (gateways forward it) and
/// answers once the change is chosen and applied there.
pub async fn membership(State(node): State<Arc<Node>>, body: Body) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(cluster) = node.cluster.clone() else {
        return Err(ApiError::new("0A000", "membership changes need a cluster; this node runs alone"));
    };
    let change: MembershipChange = read_object(body, node.config.limits.request_bytes_max)
        .await?
        .ok_or_else(|| ApiError::bad_request("expected a JSON object"))?;
    let Some(shard) = change.shard else {
        return Err(ApiError::new("22023", "name the shard to change: {\"shard\": <id>, ...} (see /v1/cluster)"));
    };
    if cluster.map.shard(shard).is_none() {
        return Err(ApiError::new("22023", format!("there is no shard {shard} (see /v1/cluster)")));
    }
    let group = geodb_geo::paxos::GroupId(shard);
    let wanted = change.membership;
    let known: Vec<u64> = cluster.config.nodes.iter().map(|entry| entry.id).collect();
    if let Some(unknown) = wanted.members().find(|member| !known.contains(&member.0)) {
        return Err(ApiError::new("22023", format!("node {} is not in cluster.nodes", unknown.0)));
    }
    let (reply, answer) = std::sync::mpsc::channel();
    cluster
        .driver
        .inputs()
        .try_send(Input::Reconfigure { group, membership: wanted, reply })
        .map_err(|_| ApiError::new("08006", "the node's replication queue is full or stopped"))?;
    let outcome = crate::exec::blocking(move || answer.recv_timeout(MEMBERSHIP_WAIT_MAX))
        .map_err(|_| ApiError::new("08007", "no outcome for the membership change in time; check /v1/cluster"))?;
    match outcome {
        Ok(membership) => Ok(Json(json!({
            "shard": shard,
            "voters": membership.voters,
            "learners": membership.learners,
        }))),
        Err(ReconfigureError::Invalid(message)) => Err(ApiError::new("22023", message)),
        Err(ReconfigureError::Retry(message)) => Err(ApiError::new("08006", message)),
        Err(ReconfigureError::Unknown(message)) => Err(ApiError::new("08007", message)),
    }
}

/// The fault rules in force (`cluster.admin_faults` only).
pub async fn faults(State(node): State<Arc<Node>>) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster = admin_faults(&node, "/v1/admin/faults")?;
    Ok(Json(serde_json::to_value(cluster.faults.rules()).map_err(|e| ApiError::internal(e.to_string()))?))
}

/// Replaces the fault rules in force on this node (`cluster.admin_faults`
/// only): a JSON list of rules, `[]` clears them.
pub async fn set_faults(State(node): State<Arc<Node>>, body: Body) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster = admin_faults(&node, "/v1/admin/faults")?;
    let rules: Vec<FaultRule> = read_json(body, node.config.limits.request_bytes_max).await?;
    cluster.faults.replace(rules).map_err(|error| ApiError::new("54000", error.to_string()))?;
    tracing::warn!(faults = %cluster.faults.describe(), "fault rules changed through the admin endpoint");
    Ok(Json(serde_json::to_value(cluster.faults.rules()).map_err(|e| ApiError::internal(e.to_string()))?))
}

/// The cluster, if this node serves the fault endpoint; a 404 otherwise
/// (the endpoint does not exist unless enabled).
fn admin_faults<'a>(node: &'a Node, path: &str) -> Result<&'a Arc<Cluster>, ApiError> {
    match &node.cluster {
        Some(cluster) if cluster.config.admin_faults => Ok(cluster),
        _ => Err(ApiError::not_found(path)),
    }
}

/// A locality key as the API names it: an integer answers as a number,
/// anything else as text (as in `GET /v1/homes/<key>`), with its SQL value.
fn locality_value(shown: &serde_json::Value) -> Result<geodb_storage::Value, ApiError> {
    match shown {
        serde_json::Value::Number(number) => number
            .as_i64()
            .map(geodb_storage::Value::Int)
            .ok_or_else(|| ApiError::new("22003", format!("locality key {number} is not a BIGINT (-2^63 .. 2^63-1)"))),
        serde_json::Value::String(text) => Ok(geodb_storage::Value::Text(text.clone())),
        other => Err(ApiError::new("22023", format!("a locality key is a number or a string, not {other}"))),
    }
}

/// `GET /v1/homes/<key>`: the home region and epoch of a locality key
/// (an integer, or else a text value), read from the directory itself (a
/// cached home may be stale after a rehome). A key never written has no
/// home yet: `region` and `epoch` are null.
pub async fn home(State(node): State<Arc<Node>>, Path(key): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let shown = match key.parse::<i64>() {
        Ok(number) => json!(number),
        Err(_) => json!(key),
    };
    let value = locality_value(&shown)?;
    let Some(cluster) = &node.cluster else {
        // One node, one region: every key lives here.
        return Ok(Json(json!({"key": shown, "region": node.config.region, "epoch": SINGLE_NODE_EPOCH})));
    };
    let mut locality = Vec::new();
    geodb_storage::keycode::encode_value(&mut locality, &value);
    let home = crate::exec::blocking(|| -> Result<Option<geodb_txn::Home>, ApiError> {
        let mut txn = node.txns.begin(geodb_txn::Isolation::Snapshot).map_err(geodb_sql::Error::from)?;
        let bytes = txn.get(&geodb_sql::keys::home_key(&locality)).map_err(geodb_sql::Error::from)?;
        Ok(bytes.and_then(|bytes| geodb_txn::Home::decode(&bytes)))
    })?;
    Ok(Json(match home {
        Some(home) => json!({
            "key": shown,
            "region": cluster.router.region_of(home).map(|region| region.0),
            "epoch": home.epoch,
        }),
        None => json!({"key": shown, "region": null, "epoch": null}),
    }))
}

/// The body of `POST /v1/admin/backup` and `POST /v1/admin/restore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryRequest {
    dir: String,
}

async fn directory_request(node: &Node, body: Body) -> Result<std::path::PathBuf, ApiError> {
    let request: DirectoryRequest = read_object(body, node.config.limits.request_bytes_max)
        .await?
        .ok_or_else(|| ApiError::bad_request("expected a JSON object with \"dir\", a directory on this node"))?;
    crate::backup::directory(&request.dir)
}

/// `POST /v1/admin/backup {"dir"}`: a backup of the whole database at one
/// timestamp, into a new directory on this node (`crate::backup`).
pub async fn backup(State(node): State<Arc<Node>>, body: Body) -> Result<impl IntoResponse, ApiError> {
    backup_or_restore(node, body, "backup", |node, dir| crate::backup::backup(node, dir)).await
}

/// `POST /v1/admin/restore {"dir"}`: a backup brought into this database,
/// which has no tables (`crate::backup`).
pub async fn restore(State(node): State<Arc<Node>>, body: Body) -> Result<impl IntoResponse, ApiError> {
    backup_or_restore(node, body, "restore", |node, dir| crate::backup::restore(node, dir)).await
}

/// Runs `work` (`kind`: backup or restore) on the directory the body names,
/// counting and logging how it ended.
async fn backup_or_restore(
    node: Arc<Node>,
    body: Body,
    kind: &'static str,
    work: impl FnOnce(&Arc<Node>, &std::path::Path) -> Result<crate::backup::Summary, ApiError>,
) -> Result<Json<crate::backup::Summary>, ApiError> {
    let dir = directory_request(&node, body).await?;
    let outcome = crate::exec::blocking(|| work(&node, &dir));
    node.metrics.backup(node.config.node_id, kind, outcome.as_ref().map(|summary| summary.rows));
    let summary = outcome?;
    tracing::info!(kind, dir = %summary.dir, timestamp = %summary.timestamp, tables = summary.tables, rows = summary.rows, ms = summary.ms, "backup or restore done");
    Ok(Json(summary))
}

/// The body of `POST /v1/admin/rehome`: one key, a list of keys, or the
/// keys homed in a range (its first and last, both included).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RehomeRequest {
    key: Option<serde_json::Value>,
    keys: Option<Vec<serde_json::Value>>,
    range: Option<(serde_json::Value, serde_json::Value)>,
    region: String,
    /// Bulk only: answer when the job ended (default), or at once (202)
    /// with the job to follow at `/v1/admin/rehomes/<job>`.
    #[serde(default = "default_wait")]
    wait: bool,
}

fn default_wait() -> bool {
    true
}

/// `POST /v1/admin/rehome`: moves locality keys' rows in every `home`
/// table to another region, each key by one strict-serializable
/// transaction (R18). One key (`"key"`) answers once it committed: the
/// homes before and after, the new epoch, the rows and index entries
/// moved, and how long it took. Many (`"keys"`, or `"range": [first,
/// last]`, every key the directory homes between them) run as a bulk job
/// in batches ([`crate::rehomer`]), answered with its progress when it ends
/// (or at once with `"wait": false`).
pub async fn rehome(State(node): State<Arc<Node>>, body: Body) -> Result<impl IntoResponse, ApiError> {
    let request: RehomeRequest = read_object(body, node.config.limits.request_bytes_max).await?.ok_or_else(|| {
        ApiError::bad_request("expected a JSON object with \"region\" and one of \"key\", \"keys\" and \"range\"")
    })?;
    let named = [request.key.is_some(), request.keys.is_some(), request.range.is_some()];
    if named.iter().filter(|named| **named).count() != 1 {
        return Err(ApiError::new("22023", "name exactly one of \"key\", \"keys\" or \"range\""));
    }
    let Some(cluster) = &node.cluster else {
        if request.region != node.config.region {
            return Err(ApiError::new(
                "22023",
                format!("unknown region \"{}\": this cluster has only \"{}\"", request.region, node.config.region),
            ));
        }
        // One node, one region: every key already lives here.
        return match request.key {
            Some(key) => {
                locality_value(&key)?;
                Ok((
                    StatusCode::OK,
                    Json(json!({
                        "key": key, "from": node.config.region, "to": request.region,
                        "epoch": SINGLE_NODE_EPOCH, "rows": 0, "ms": 0.0,
                    })),
                ))
            }
            None => Err(ApiError::new("0A000", "a single node has one region: there is nothing to rehome in bulk")),
        };
    };
    let Some(region) = cluster.map.regions.iter().position(|known| known.0 == request.region) else {
        let known: Vec<&str> = cluster.map.regions.iter().map(|region| region.0.as_str()).collect();
        return Err(ApiError::new(
            "22023",
            format!("unknown region \"{}\" (the cluster's regions: {})", request.region, known.join(", ")),
        ));
    };
    let region = region as u32;
    if let Some(key) = &request.key {
        let value = locality_value(key)?;
        let moved = crate::exec::blocking(|| crate::rehomer::rehome_one(&node, cluster, key, &value, region))?;
        return Ok((StatusCode::OK, Json(moved.json(cluster, key))));
    }
    let too_many = |what: &str| {
        ApiError::new(
            "54000",
            format!("{what} more than {} keys: rehome them in several requests", crate::rehomer::BULK_KEYS_MAX),
        )
    };
    let keys = match (request.keys, request.range) {
        (Some(keys), _) => {
            if keys.len() > crate::rehomer::BULK_KEYS_MAX {
                return Err(too_many("the request names"));
            }
            keys.into_iter().map(|key| locality_value(&key).map(|value| (key, value))).collect::<Result<Vec<_>, _>>()?
        }
        (None, Some((first, last))) => {
            let (first, last) = (locality_value(&first)?, locality_value(&last)?);
            let limit = crate::rehomer::BULK_KEYS_MAX + 1;
            let found = crate::exec::blocking(|| geodb_sql::rehome::homed_between(&node.txns, &first, &last, limit))?;
            if found.len() > crate::rehomer::BULK_KEYS_MAX {
                return Err(too_many("the range holds"));
            }
            found.into_iter().map(|value| (geodb_sql::json::value_to_json(&value), value)).collect()
        }
        (None, None) => unreachable!("one of key, keys and range is named"),
    };
    let job = crate::rehomer::start_job(&node, cluster, region, keys)?;
    if !request.wait {
        return Ok((StatusCode::ACCEPTED, Json(job.status())));
    }
    job.finished().await;
    Ok((StatusCode::OK, Json(job.status())))
}

/// `GET /v1/admin/rehomes`: the bulk rehomes this node ran and runs,
/// newest first.
pub async fn rehome_jobs(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let jobs: Vec<serde_json::Value> = node.rehomes.list().iter().map(|job| job.status()).collect();
    Json(json!({"jobs": jobs}))
}

fn find_job(node: &Node, id: &str) -> Result<Arc<crate::rehomer::Job>, ApiError> {
    let unknown = || ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::new("22023", format!("no bulk rehome \"{id}\" on this node (see GET /v1/admin/rehomes)"))
    };
    let id: u64 = id.parse().map_err(|_| unknown())?;
    node.rehomes.get(id).ok_or_else(unknown)
}

/// `GET /v1/admin/rehomes/<job>`: one bulk rehome's progress.
pub async fn rehome_job(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(find_job(&node, &id)?.status()))
}

/// `DELETE /v1/admin/rehomes/<job>`: stops a bulk rehome before its next
/// batch and answers once it stopped; every key stays wholly at one home.
pub async fn cancel_rehome_job(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let job = find_job(&node, &id)?;
    if job.is_running() {
        job.cancel();
        job.finished().await;
        tracing::info!(job = job.id, "bulk rehome cancelled");
    }
    Ok(Json(job.status()))
}
