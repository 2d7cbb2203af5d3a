//! Bounded resources: beyond the concurrency or session bound the node
//! sheds requests with 503, code 53000 and `Retry-After`, instead of
//! queueing. Runs a node in-process on the memory engine so the test can
//! hold the node's permits itself — no timing decides the outcome.

use std::sync::Arc;

use geodb_server::config::{Config, Limits};
use geodb_server::node::Node;
use geodb_server::telemetry::Metrics;
use geodb_storage::MemoryEngine;
use serde_json::{Value, json};

async fn start(limits: Limits) -> (Arc<Node>, String, tokio::sync::oneshot::Sender<()>) {
    let config = Config { limits, ..Config::default() };
    let node = Node::with_engine(config, Arc::new(MemoryEngine::new()), Metrics::global()).unwrap();
    let listener = geodb_server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(geodb_server::serve(node.clone(), listener, None, async move {
        let _ = stopped.await;
    }));
    (node, url, stop)
}

async fn post(url: &str, body: Value) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|value| value.to_str().unwrap().to_string());
    (status, retry_after, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_bound_are_shed_with_retry_after() {
    let (node, url, _stop) = start(Limits { requests_inflight_max: 2, ..Limits::default() }).await;
    let held = [node.admit().unwrap(), node.admit().unwrap()];
    let (status, retry_after, body) = post(&format!("{url}/v1/sql"), json!({"sql": "SELECT 1"})).await;
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "53000");
    assert_eq!(body["error"]["retryable"], true);
    // Health and metrics are never shed: operators can still look.
    let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    drop(held);
    let (status, _, body) = post(&format!("{url}/v1/sql"), json!({"sql": "SELECT 1"})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_bound_are_refused_until_one_ends() {
    let (_node, url, _stop) = start(Limits { sessions_max: 1, ..Limits::default() }).await;
    let (status, _, first) = post(&format!("{url}/v1/sessions"), json!({})).await;
    assert_eq!(status, 201);
    let (status, retry_after, body) = post(&format!("{url}/v1/sessions"), json!({})).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    assert_eq!(body["error"]["code"], "53000");
    let id = first["session"].as_str().unwrap();
    let closed = reqwest::Client::new().delete(format!("{url}/v1/sessions/{id}")).send().await.unwrap();
    assert_eq!(closed.status().as_u16(), 204);
    let (status, _, _) = post(&format!("{url}/v1/sessions"), json!({})).await;
    assert_eq!(status, 201);
}
