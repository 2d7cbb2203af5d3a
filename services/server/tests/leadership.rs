//! Leadership that follows the workload on a real `geodb dev` process
//! (three regions of three nodes, latencies ÷10): the leadership of a home
//! shard moves to the node of its home region that sends most of its
//! requests, stays there while that holds, and never leaves the home region
//! for a node elsewhere, however much traffic comes from there
//! (`docs/design/multipaxos.md`, R22).

mod common;

use std::time::{Duration, Instant};

use common::{Server, code, metric_sum, metric_sum_where};
use serde_json::{Value, json};

/// How long one node must send most of a shard's requests
/// (`--follow-workload-window-ms`).
const WINDOW_MS: u64 = 1_000;
/// A bound that only a stuck handover would reach.
const MOVE_WAIT_MAX: Duration = Duration::from_secs(60);

async fn get(client: &reqwest::Client, url: &str, path: &str) -> Value {
    let response = client.get(format!("{url}{path}")).send().await.expect("request");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("JSON")
}

async fn sql(client: &reqwest::Client, url: &str, sql: &str) -> (u16, Value) {
    let response = client.post(format!("{url}/v1/sql")).json(&json!({"sql": sql})).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Adds one to each key's row through `url`, one autocommitted update each;
/// how many committed (a serialization failure or an unknown outcome
/// around a handover is an answer a client must handle; anything else
/// fails the test). `unknown` counts the latter.
async fn update_all(client: &reqwest::Client, url: &str, keys: &[i64], unknown: &mut u64) -> i64 {
    let mut committed = 0;
    for key in keys {
        let (status, body) = sql(client, url, &format!("UPDATE accounts SET n = n + 1 WHERE user_id = {key}")).await;
        match status {
            200 => committed += 1,
            _ if code(&body) == "40001" => {}
            _ if code(&body) == "08007" => *unknown += 1,
            _ => panic!("update of {key} through {url}: {status} {body}"),
        }
    }
    committed
}

/// The leaders of the region's home shards, as `url`'s node sees them.
async fn home_leaders(client: &reqwest::Client, url: &str, region: &str) -> Vec<(u64, Option<u64>)> {
    let cluster = get(client, url, "/v1/cluster").await;
    cluster["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter(|shard| {
            shard["home"] == region && shard["holds"].as_str().is_some_and(|holds| holds.starts_with("home"))
        })
        .map(|shard| (shard["id"].as_u64().unwrap(), shard["leader"].as_u64()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_home_shards_leadership_moves_to_the_node_its_requests_come_from_and_stays_in_its_region() {
    let dir = tempfile::tempdir().unwrap();
    let window = WINDOW_MS.to_string();
    let args = ["--latency-scale", "0.1", "--no-auto-rehome", "--follow-workload-window-ms", &window];
    let (server, gateways) = Server::dev_regions(dir.path(), &args);
    let (us_east, us_central) = (&gateways[0], &gateways[1]);
    let client = reqwest::Client::new();
    let gateway = get(&client, us_central, "/v1/cluster").await["node"].as_u64().expect("the answering node");

    let (status, body) = sql(
        &client,
        us_central,
        "CREATE TABLE accounts (user_id INT, id INT, n BIGINT NOT NULL, PRIMARY KEY (user_id, id))",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Sixteen keys homed in us-central by their first write, over both of
    // its home shards.
    let keys: Vec<i64> = (1..=16).collect();
    let rows: Vec<String> = keys.iter().map(|key| format!("({key}, 1, 0)")).collect();
    let (status, body) = sql(&client, us_central, &format!("INSERT INTO accounts VALUES {}", rows.join(", "))).await;
    assert_eq!(status, 200, "{body}");

    // Placement leads the region's second home shard from its second node:
    // at least one shard is led by another node than the gateway.
    let before = home_leaders(&client, us_central, "us-central").await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before.iter().any(|(_, leader)| *leader != Some(gateway)),
        "placement put every leader on the gateway: {before:?}"
    );

    // Traffic through the gateway until it leads both.
    let mut committed = 0;
    let mut unknown = 0;
    let started = Instant::now();
    loop {
        committed += update_all(&client, us_central, &keys, &mut unknown).await;
        let leaders = home_leaders(&client, us_central, "us-central").await;
        if leaders.iter().all(|(_, leader)| *leader == Some(gateway)) {
            break;
        }
        assert!(started.elapsed() < MOVE_WAIT_MAX, "the leadership never followed the requests: {leaders:?}");
    }
    let moved_after = started.elapsed();
    assert!(
        moved_after >= Duration::from_millis(WINDOW_MS),
        "a leadership moves only after a whole window of requests: {moved_after:?}"
    );
    // Counted by the node that handed over, once it sees the other lead.
    let started = Instant::now();
    loop {
        let metrics = server.get("/metrics").await.1;
        if metric_sum(&metrics, "geodb_leadership_handovers_total") >= 1.0 {
            break;
        }
        assert!(started.elapsed() < MOVE_WAIT_MAX, "handovers are counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The other regions' nodes are learners of these shards: their copies
    // of the log are written without an fsync, and counted so.
    let metrics = server.get("/metrics").await.1;
    let unsynced = metric_sum_where(&metrics, "geodb_paxos_log_writes_total", "sync=\"false\"");
    assert!(unsynced > 0.0, "learners' log writes without an fsync are counted:\n{metrics}");
    assert!(metric_sum(&metrics, "geodb_paxos_log_writes_total") > unsynced, "and synced ones too");

    // Now every request comes from us-east, outside the shards' home
    // region, for several windows: the leadership stays where it is.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4 * WINDOW_MS) {
        committed += update_all(&client, us_east, &keys, &mut unknown).await;
    }
    let leaders = home_leaders(&client, us_central, "us-central").await;
    assert!(
        leaders.iter().all(|(_, leader)| *leader == Some(gateway)),
        "a leadership left for a node outside its home region, or moved without a reason: {leaders:?}"
    );

    // Nothing was lost or counted twice across the handovers (an unknown
    // outcome may have gone either way).
    let (status, body) = sql(&client, us_central, "SELECT sum(n) FROM accounts").await;
    assert_eq!(status, 200, "{body}");
    let total = body["results"][0]["rows"][0][0].as_i64().expect("a sum");
    assert!(
        (committed..=committed + unknown as i64).contains(&total),
        "{committed} updates committed ({unknown} unknown), the rows add up to {total}"
    );
    println!("moved after {moved_after:?}; {committed} updates committed, {unknown} of unknown outcome");
}
