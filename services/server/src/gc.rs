//! Version garbage collection on a node (`docs/design/storage.md`,
//! "Version garbage collection"): every `gc.interval_ms`, one pass over the
//! replicas the node holds, below a horizon `gc.ttl_ms` behind its clock
//! and never above the snapshot of a transaction running on it.
//!
//! A pass runs on a blocking thread, in chunks of
//! [`geodb_txn::participant::GC_CHUNK_VERSIONS`] versions, and rests as long
//! after each chunk as the chunk took: it never takes more than half of a
//! core from foreground work, and lets go of each replica between chunks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use geodb_storage::gc::Collected;
use geodb_txn::participant::{collect_node, gc_horizon};

use crate::node::Node;
use crate::telemetry::names;

/// Runs passes until the node stops serving.
pub async fn collect(node: Arc<Node>) {
    let settings = node.config.gc.clone();
    if !settings.enabled {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_millis(settings.interval_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once; the first pass comes one interval after
    // the start, not in the middle of it.
    every.tick().await;
    loop {
        every.tick().await;
        if !node.is_ready() {
            return;
        }
        // A clock off from its peers would put the horizon, and the
        // thresholds that follow it, where they do not belong.
        if let Err(error) = node.txns.hlc().check_synchronized() {
            tracing::warn!(%error, "garbage collection pass skipped");
            metrics::counter!(names::GC_PASSES, "node" => node.config.node_id.to_string(), "outcome" => "skipped")
                .increment(1);
            continue;
        }
        let passing = node.clone();
        let outcome = match tokio::task::spawn_blocking(move || pass(&passing)).await {
            Ok(Ok(collected)) => {
                tracing::debug!(versions = collected.versions, bytes = collected.bytes, "garbage collection pass");
                "done"
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "garbage collection pass failed; the next one tries again");
                "failed"
            }
            Err(error) => {
                tracing::error!(%error, "garbage collection pass panicked");
                "failed"
            }
        };
        metrics::counter!(names::GC_PASSES, "node" => node.config.node_id.to_string(), "outcome" => outcome)
            .increment(1);
    }
}

/// One pass over the node's replicas, paced (see the module
/// documentation); stops early once the node stops serving.
pub fn pass(node: &Node) -> Result<Collected, geodb_txn::Error> {
    let hlc = node.txns.hlc();
    let now_ns = hlc.physical_now_ns();
    let ttl_ns = node.config.gc.ttl_ms.saturating_mul(1_000_000);
    let horizon = gc_horizon(now_ns, ttl_ns, node.txns.oldest_snapshot());
    let label = node.config.node_id.to_string();
    metrics::gauge!(names::GC_HORIZON_AGE_SECONDS, "node" => label.clone())
        .set(now_ns.saturating_sub(horizon.physical) as f64 / 1e9);
    let mut chunk_started = Instant::now();
    let collected = collect_node(&node.shards, horizon, &|_, _, _| {}, || {
        std::thread::sleep(chunk_started.elapsed());
        chunk_started = Instant::now();
        node.is_ready()
    })?;
    metrics::counter!(names::GC_VERSIONS, "node" => label.clone()).increment(collected.versions);
    metrics::counter!(names::GC_BYTES, "node" => label).increment(collected.bytes);
    Ok(collected)
}
