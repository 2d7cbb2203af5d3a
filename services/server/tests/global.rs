//! Global tables read locally (R14, `docs/design/transactions.md`): on a
//! six-node `geodb dev` cluster reached through its eu-west gateway, reads
//! of a `global` table at every level are answered by the gateway's own
//! replica of the global shard (whose leader is in us-east), writes to it
//! commit in the future and are visible to every transaction that begins
//! after they were acknowledged (highly available writes included), and a
//! serializable transaction that read it and writes a home table commits;
//! `/metrics` records every commit's wait.

mod common;

use common::Server;
use serde_json::{Value, json};

/// The `node` label of the gateway's own reads, answered by its replica.
fn served_locally(metrics: &str, node: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("geodb_global_reads_total"))
        .filter(|line| line.contains(&format!("node=\"{node}\"")) && line.contains("outcome=\"served\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

async fn rows(server: &Server, sql: &str, isolation: &str) -> Value {
    let (status, body) = server.post("/v1/sql", json!({"sql": sql, "isolation": isolation})).await;
    assert_eq!(status, 200, "{sql} at {isolation}: {body}");
    body["results"][0]["rows"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_tables_are_read_from_the_local_replica_at_every_level() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev_cluster(dir.path());
    let gateway = reqwest::get(format!("{}/healthz", server.url)).await.unwrap();
    let node = gateway.headers()["x-geodb-node"].to_str().unwrap().to_string();

    server
        .sql("CREATE TABLE item (id INT PRIMARY KEY, name TEXT NOT NULL) WITH (locality = 'global')", json!([]))
        .await;
    server.sql("CREATE TABLE orders (id INT PRIMARY KEY, item INT NOT NULL)", json!([])).await;
    server.sql("INSERT INTO item VALUES (1, 'anvil'), (2, 'bell')", json!([])).await;

    // Acknowledged above: every transaction that begins now sees it, at
    // every level, from the gateway's replica.
    let before = served_locally(&server.get("/metrics").await.1, &node);
    for isolation in ["serializable", "snapshot", "monotonic atomic view", "read committed"] {
        assert_eq!(rows(&server, "SELECT name FROM item WHERE id = 1", isolation).await, json!([["anvil"]]));
    }
    server.sql("UPDATE item SET name = 'axe' WHERE id = 1", json!([])).await;
    assert_eq!(rows(&server, "SELECT name FROM item WHERE id = 1", "serializable").await, json!([["axe"]]));
    let after = served_locally(&server.get("/metrics").await.1, &node);
    assert!(after >= before + 3, "reads of the global table served by node {node}'s replica: {before} then {after}");

    // A highly available write commits in the future too, without commit
    // wait; it is answered once the gateway's clock has reached it, so the
    // next transaction here, at any level, reads it.
    for (isolation, name) in [("read committed", "adze"), ("monotonic atomic view", "auger")] {
        let (status, body) = server
            .post(
                "/v1/sql",
                json!({"sql": "UPDATE item SET name = $1 WHERE id = 1", "params": [name], "isolation": isolation}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(rows(&server, "SELECT name FROM item WHERE id = 1", "snapshot").await, json!([[name]]));
    }

    // A serializable transaction that read the global table and writes a
    // home table commits.
    let session = server.session("serializable").await;
    assert_eq!(session.ok("SELECT name FROM item WHERE id = 2").await["rows"], json!([["bell"]]));
    session.ok("INSERT INTO orders VALUES (1, 2)").await;
    session.ok("COMMIT").await;
    assert_eq!(rows(&server, "SELECT item FROM orders WHERE id = 1", "serializable").await, json!([[2]]));

    // Commit wait is measured per commit: the serializable commits above
    // (the DDL, the inserts and updates, the session's) and the highly
    // available writes in the future each recorded how long they waited.
    let metrics = server.get("/metrics").await.1;
    for (isolation, at_least) in [("serializable", 5.0), ("rc", 1.0), ("mav", 1.0)] {
        let count = metrics
            .lines()
            .find(|line| line.starts_with(&format!("geodb_commit_wait_seconds_count{{isolation=\"{isolation}\"}}")))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no commit wait recorded at {isolation}"));
        assert!(count >= at_least, "{count} commit waits recorded at {isolation}");
    }
}
