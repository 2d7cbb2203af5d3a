//! Version garbage collection on a running node (`docs/design/storage.md`,
//! "Version garbage collection"): old versions go, what every reader sees
//! stays, a transaction running on the node keeps its snapshot whole, and
//! `/metrics` shows it. (The refusal of a snapshot collected at another
//! node's replicas is shown by `txn/tests/gc.rs` and the simulator; a
//! cluster collecting under restarts by `tests/cluster.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

/// A tenth of a second of history (the least allowed with the default
/// clock bound of 10 ms), collected twenty times a second.
const FAST_GC: &str = "[gc]\nttl_ms = 100\ninterval_ms = 50\n";

/// The sum of a metric family's samples.
async fn metric(server: &Server, family: &str) -> f64 {
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    common::metric_sum(&metrics, family)
}

/// Waits until `family` reaches `at_least` (a bound only a broken collector
/// reaches: passes come every 50 ms).
async fn wait_for(server: &Server, family: &str, at_least: f64) -> f64 {
    let gave_up = Instant::now() + Duration::from_secs(60);
    loop {
        let value = metric(server, family).await;
        if value >= at_least {
            return value;
        }
        assert!(Instant::now() < gave_up, "{family} stayed at {value}, below {at_least}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn update(n: i64) -> String {
    format!("UPDATE counters SET n = {n} WHERE id = 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_go_while_a_running_transaction_keeps_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), FAST_GC);
    server.sql("CREATE TABLE counters (id INT PRIMARY KEY, n INT)", json!([])).await;
    server.sql("INSERT INTO counters VALUES (1, 0), (2, 0)", json!([])).await;
    for n in 1..=20 {
        server.sql(&update(n), json!([])).await;
    }

    // A snapshot transaction reads, and stays open while 40 more updates
    // land and passes run.
    let session = server.session("snapshot").await;
    session.ok("BEGIN").await;
    assert_eq!(session.int("SELECT n FROM counters WHERE id = 1").await, Some(20));
    for n in 21..=60 {
        server.sql(&update(n), json!([])).await;
    }
    let passes = metric(&server, "geodb_gc_passes_total").await;
    wait_for(&server, "geodb_gc_passes_total", passes + 3.0).await;
    let held = metric(&server, "geodb_gc_versions_total").await;
    assert!(held >= 20.0, "the 20 versions behind the one the transaction reads went: {held}");
    assert_eq!(session.int("SELECT n FROM counters WHERE id = 1").await, Some(20), "its snapshot is whole");
    assert_eq!(session.int("SELECT n FROM counters WHERE id = 2").await, Some(0));
    assert!(
        metric(&server, "geodb_gc_horizon_age_seconds").await >= 0.1,
        "the horizon is at least the TTL behind the clock"
    );
    session.ok("COMMIT").await;

    // Once it ended, everything but the newest version of the row goes.
    wait_for(&server, "geodb_gc_versions_total", held + 40.0).await;
    assert!(metric(&server, "geodb_gc_bytes_total").await > 0.0);
    let body = server.sql("SELECT id, n FROM counters ORDER BY id", json!([])).await;
    assert_eq!(body["rows"], json!([[1, 60], [2, 0]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_below_the_clock_bound_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = data.with_extension("toml");
    std::fs::write(&config, format!("http = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[gc]\nttl_ms = 50\n", data.display()))
        .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_geodb"))
        .args(["start", "--insecure", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gc.ttl_ms (50) must be at least 10 × max_clock_offset_ms (100)"), "{stderr}");
}
