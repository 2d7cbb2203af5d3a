//! Rehoming from a node (`docs/design/transactions.md`, R18 and R19): one
//! locality key, many keys in bounded batches with progress (bulk jobs),
//! and automatic rehoming that follows where a key's traffic comes from.
//!
//! Every move is one rehome transaction of one key
//! (`geodb_sql::rehome::rehome`), so a bulk job cancelled or failing midway
//! leaves every key wholly at one home: the keys it moved at the new one,
//! the others where they were.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geodb_storage::Value;
use serde_json::json;

use crate::cluster::Cluster;
use crate::http::ApiError;
use crate::node::Node;
use crate::telemetry::names;

/// Keys one bulk rehome names at most (a list, or the keys a range holds).
pub const BULK_KEYS_MAX: usize = 10_000;
/// Keys a bulk job moves at once: a batch, each key its own transaction.
pub const BULK_BATCH: usize = 8;
/// Jobs a node remembers (running ones and the latest finished).
const JOBS_KEPT: usize = 64;
/// Jobs a node runs at once: each keeps [`BULK_BATCH`] rehomes on the
/// blocking pool that statements use too.
pub const JOBS_RUNNING_MAX: usize = 4;
/// How many windows the mover leaves alone a key whose rehome failed for
/// good (too large, say) before it tries again.
const FAILED_BACKOFF_WINDOWS: u32 = 20;
/// Per-key failures a job reports in full (the rest are counted).
const FAILURES_SHOWN_MAX: usize = 100;
/// A job stops after this many batches in a row in which every key failed
/// (no quorum, a region cut off): the rest would fail the same way.
const FAILED_BATCHES_MAX: u32 = 3;
/// How often the automatic mover looks at the tallies.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// One key's rehome: what it did, and how long it took (ms).
pub struct Moved {
    pub rehomed: geodb_txn::Rehomed,
    pub ms: f64,
}

impl Moved {
    /// Whether the key changed homes (it had none, or another).
    pub fn moved(&self) -> bool {
        self.rehomed.from.is_none_or(|from| from != self.rehomed.to)
    }

    /// The answer of `POST /v1/admin/rehome` for one key.
    pub fn json(&self, cluster: &Cluster, shown: &serde_json::Value) -> serde_json::Value {
        let name = |home: geodb_txn::Home| cluster.router.region_of(home).map(|region| region.0);
        json!({
            "key": shown,
            "from": self.rehomed.from.and_then(name),
            "to": name(self.rehomed.to),
            "epoch": self.rehomed.to.epoch,
            "rows": self.rehomed.rows,
            "ms": (self.ms * 1000.0).round() / 1000.0,
        })
    }
}

/// Rehomes one key (blocking), counting and logging it.
pub fn rehome_one(
    node: &Node,
    cluster: &Cluster,
    shown: &serde_json::Value,
    key: &Value,
    region: u32,
) -> Result<Moved, ApiError> {
    let started = Instant::now();
    let rehomed = node.db.rehome(key, region)?;
    let moved = Moved { rehomed, ms: started.elapsed().as_secs_f64() * 1e3 };
    node.metrics.rehomed(node.config.node_id, moved.moved(), rehomed.rows);
    let name = |home: geodb_txn::Home| cluster.router.region_of(home).map(|region| region.0);
    tracing::info!(key = %shown, from = ?rehomed.from.and_then(name), to = ?name(rehomed.to), epoch = rehomed.to.epoch, rows = rehomed.rows, ms = moved.ms, "rehomed a locality key");
    Ok(moved)
}

/// Where a bulk job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Done,
    Cancelled,
    Failed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Done => "done",
            State::Cancelled => "cancelled",
            State::Failed => "failed",
        }
    }
}

#[derive(Debug)]
struct Progress {
    state: State,
    done: usize,
    moved: usize,
    unchanged: usize,
    rows: usize,
    failed: usize,
    failures: Vec<serde_json::Value>,
    finished: Option<Instant>,
}

/// A bulk rehome: many keys to one region, in batches of [`BULK_BATCH`].
#[derive(Debug)]
pub struct Job {
    pub id: u64,
    region: String,
    keys: usize,
    started: Instant,
    cancelled: AtomicBool,
    progress: Mutex<Progress>,
    finished: tokio::sync::Notify,
}

impl Job {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_running(&self) -> bool {
        self.progress().state == State::Running
    }

    /// Asks the job to stop before its next batch; the keys of the batch
    /// running now finish (each is one transaction).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Waits until the job has stopped.
    pub async fn finished(&self) {
        loop {
            let notified = self.finished.notified();
            if !self.is_running() {
                return;
            }
            notified.await;
        }
    }

    /// What the API shows of the job.
    pub fn status(&self) -> serde_json::Value {
        let progress = self.progress();
        let ms = progress.finished.unwrap_or_else(Instant::now).duration_since(self.started).as_secs_f64() * 1e3;
        json!({
            "job": self.id,
            "region": self.region,
            "state": progress.state.name(),
            "keys": self.keys,
            "done": progress.done,
            "moved": progress.moved,
            "unchanged": progress.unchanged,
            "rows": progress.rows,
            "failed": progress.failed,
            "failures": progress.failures,
            "ms": (ms * 1000.0).round() / 1000.0,
        })
    }
}

/// The bulk jobs of a node.
#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl Jobs {
    fn jobs(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.jobs().iter().find(|job| job.id == id).cloned()
    }

    /// Every job remembered, newest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.jobs().iter().rev().cloned().collect()
    }

    /// A new job, unless [`JOBS_RUNNING_MAX`] are running.
    fn add(&self, region: String, keys: usize) -> Option<Arc<Job>> {
        let mut jobs = self.jobs();
        if jobs.iter().filter(|job| job.is_running()).count() >= JOBS_RUNNING_MAX {
            return None;
        }
        let job = Arc::new(Job {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            region,
            keys,
            started: Instant::now(),
            cancelled: AtomicBool::new(false),
            progress: Mutex::new(Progress {
                state: State::Running,
                done: 0,
                moved: 0,
                unchanged: 0,
                rows: 0,
                failed: 0,
                failures: Vec::new(),
                finished: None,
            }),
            finished: tokio::sync::Notify::new(),
        });
        jobs.push_back(job.clone());
        // Forget the oldest finished jobs beyond the bound (at most
        // JOBS_RUNNING_MAX run).
        while jobs.len() > JOBS_KEPT {
            let Some(oldest) = jobs.iter().position(|job| !job.is_running()) else { break };
            jobs.remove(oldest);
        }
        Some(job)
    }
}

/// Starts a bulk job moving `keys` (each with the JSON it was named by) to
/// the region with index `region` of `cluster`, in the background; `53000`
/// while [`JOBS_RUNNING_MAX`] run.
pub fn start_job(
    node: &Arc<Node>,
    cluster: &Arc<Cluster>,
    region: u32,
    keys: Vec<(serde_json::Value, Value)>,
) -> Result<Arc<Job>, ApiError> {
    let cluster = cluster.clone();
    let name = cluster.map.regions.get(region as usize).map(|region| region.0.clone()).unwrap_or_default();
    let job = node.rehomes.add(name.clone(), keys.len()).ok_or_else(|| {
        ApiError::new(
            "53000",
            format!(
                "{JOBS_RUNNING_MAX} bulk rehomes are running on this node; wait for one to end (GET /v1/admin/rehomes)"
            ),
        )
    })?;
    tracing::info!(job = job.id, keys = keys.len(), to = %name, "bulk rehome started");
    let (node, running) = (node.clone(), job.clone());
    tokio::spawn(async move {
        let state = run_job(&node, &cluster, &running, region, keys).await;
        let mut progress = running.progress();
        progress.state = state;
        progress.finished = Some(Instant::now());
        tracing::info!(
            job = running.id,
            state = state.name(),
            done = progress.done,
            moved = progress.moved,
            failed = progress.failed,
            "bulk rehome ended"
        );
        drop(progress);
        running.finished.notify_waiters();
    });
    Ok(job)
}

async fn run_job(
    node: &Arc<Node>,
    cluster: &Arc<Cluster>,
    job: &Arc<Job>,
    region: u32,
    keys: Vec<(serde_json::Value, Value)>,
) -> State {
    let mut failed_batches = 0;
    for batch in keys.chunks(BULK_BATCH) {
        // A node shutting down stops its jobs as a cancel would (its
        // graceful shutdown waits for the requests that wait on them).
        if job.cancelled.load(Ordering::SeqCst) || !node.is_ready() {
            return State::Cancelled;
        }
        let running: Vec<_> = batch
            .iter()
            .cloned()
            .map(|(shown, key)| {
                let (node, cluster, named) = (node.clone(), cluster.clone(), shown.clone());
                (named, tokio::task::spawn_blocking(move || rehome_one(&node, &cluster, &shown, &key, region)))
            })
            .collect();
        let mut all_failed = true;
        for (shown, handle) in running {
            let outcome = match handle.await {
                Ok(outcome) => outcome,
                Err(error) => Err(ApiError::internal(format!("a rehome task ended: {error}"))),
            };
            let mut progress = job.progress();
            progress.done += 1;
            match outcome {
                Ok(moved) => {
                    all_failed = false;
                    progress.rows += moved.rehomed.rows;
                    if moved.moved() {
                        progress.moved += 1;
                    } else {
                        progress.unchanged += 1;
                    }
                }
                Err(error) => {
                    progress.failed += 1;
                    if progress.failures.len() < FAILURES_SHOWN_MAX {
                        progress.failures.push(json!({"key": shown, "code": error.code, "message": error.message}));
                    }
                }
            }
        }
        failed_batches = if all_failed { failed_batches + 1 } else { 0 };
        if failed_batches >= FAILED_BATCHES_MAX {
            return State::Failed;
        }
    }
    State::Done
}

/// How many automatic rehomes a node may start now: a bucket of
/// `max_per_minute` tokens, refilled evenly over a minute.
struct Budget {
    tokens: f64,
    max: f64,
    at: Instant,
}

impl Budget {
    fn new(max_per_minute: u32, now: Instant) -> Self {
        Budget { tokens: f64::from(max_per_minute), max: f64::from(max_per_minute), at: now }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() / 60.0 * self.max;
        self.tokens = (self.tokens + refill).min(self.max);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn count_auto(node: &Node, outcome: &'static str) {
    metrics::counter!(names::AUTO_REHOMES, "node" => node.config.node_id.to_string(), "outcome" => outcome)
        .increment(1);
}

/// R19: moves locality keys to the region their traffic comes from, as the
/// home shards this node leads judge it (`geodb_txn::traffic`), at most
/// `max_per_minute` a minute; a key it tried is left alone for a window.
/// Runs until the node stops; returns at once unless
/// `cluster.auto_rehome.enabled`.
pub async fn follow_traffic(node: Arc<Node>) {
    let Some(cluster) = node.cluster.clone() else { return };
    let settings = cluster.config.auto_rehome.clone();
    if !settings.enabled {
        return;
    }
    let window = Duration::from_millis(settings.window_ms);
    let mut budget = Budget::new(settings.max_per_minute, Instant::now());
    // Keys tried, and until when they are left alone.
    let mut tried: HashMap<Vec<u8>, Instant> = HashMap::new();
    let mut every = tokio::time::interval(FOLLOW_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if !node.is_ready() {
            return;
        }
        let now = Instant::now();
        tried.retain(|_, until| now < *until);
        for (shard, leaning) in cluster.driver.published().leanings {
            let (Some(spec), Some(to)) = (cluster.map.shard(shard), cluster.map.regions.get(leaning.region as usize))
            else {
                continue;
            };
            if *to == spec.home || tried.contains_key(&leaning.residence) {
                continue;
            }
            let Some(key) = geodb_sql::rehome::locality_of_residence(&leaning.residence) else { continue };
            if !budget.take(now) {
                count_auto(&node, "rate_limited");
                tracing::debug!(key = %key, to = %to, "automatic rehome held back by cluster.auto_rehome.max_per_minute");
                break;
            }
            tried.insert(leaning.residence.clone(), now + window);
            let shown = geodb_sql::json::value_to_json(&key);
            tracing::info!(
                key = %shown, from = %spec.home, to = %to, share = leaning.share, requests = leaning.requests,
                for_s = leaning.for_us as f64 / 1e6,
                "moving a locality key to the region its traffic comes from"
            );
            let (mover, at, region) = ((node.clone(), cluster.clone()), shown.clone(), leaning.region);
            let outcome = tokio::task::spawn_blocking(move || rehome_one(&mover.0, &mover.1, &at, &key, region)).await;
            match outcome {
                Ok(Ok(moved)) if moved.moved() => count_auto(&node, "moved"),
                Ok(Ok(_)) => count_auto(&node, "unchanged"),
                Ok(Err(error)) => {
                    count_auto(&node, "failed");
                    tracing::warn!(key = %shown, to = %to, code = %error.code, error = %error.message, "automatic rehome failed");
                    if !error.retryable {
                        tried.insert(leaning.residence.clone(), now + window * FAILED_BACKOFF_WINDOWS);
                    }
                }
                Err(error) => {
                    count_auto(&node, "failed");
                    tracing::warn!(key = %shown, %error, "automatic rehome task ended");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refills_evenly_over_a_minute() {
        let start = Instant::now();
        let mut budget = Budget::new(2, start);
        assert!(budget.take(start));
        assert!(budget.take(start));
        assert!(!budget.take(start), "two a minute");
        assert!(!budget.take(start + Duration::from_secs(20)));
        assert!(budget.take(start + Duration::from_secs(31)), "one token back after half a minute");
        assert!(!budget.take(start + Duration::from_secs(32)));
    }
}
