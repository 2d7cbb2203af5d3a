//! Workloads against a real `geodb` process: the bank invariant under
//! concurrency, and durability across SIGKILL.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Server, code};
use serde_json::json;

const ACCOUNTS: i64 = 8;
const INITIAL_BALANCE: i64 = 1_000;
const CLIENTS: usize = 8;
const TRANSFERS_PER_CLIENT: usize = 40;

/// One interactive transfer: read both balances, write both back. Without
/// first-committer-wins this loses money; returns whether it committed.
async fn transfer(server: &Server, level: &str, from: i64, to: i64, amount: i64) -> bool {
    let session = server.session(level).await;
    session.ok("BEGIN").await;
    let a = session.int(&format!("SELECT balance FROM bank WHERE id = {from}")).await.unwrap();
    let b = session.int(&format!("SELECT balance FROM bank WHERE id = {to}")).await.unwrap();
    session.ok(&format!("UPDATE bank SET balance = {} WHERE id = {from}", a - amount)).await;
    session.ok(&format!("UPDATE bank SET balance = {} WHERE id = {to}", b + amount)).await;
    let (status, body) = session.run("COMMIT").await;
    let _ = server.client.delete(format!("{}/v1/sessions/{}", server.url, session.id)).send().await;
    match status {
        200 => true,
        409 if code(&body) == "40001" => false,
        _ => panic!("COMMIT answered {status}: {body}"),
    }
}

async fn bank(level: &'static str, cluster: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(if cluster { Server::dev_cluster(dir.path()) } else { Server::dev(dir.path()) });
    server.sql("CREATE TABLE bank (id INT PRIMARY KEY, balance BIGINT NOT NULL)", json!([])).await;
    for id in 0..ACCOUNTS {
        server.sql("INSERT INTO bank VALUES ($1, $2)", json!([id, INITIAL_BALANCE])).await;
    }
    let total = ACCOUNTS * INITIAL_BALANCE;
    if cluster {
        // The gateway's replica is a learner: wait until it has applied the
        // accounts (HAT reads may lag; after that they may not go back).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, body) = server
                .post("/v1/sql", json!({"sql": "SELECT COUNT(*) FROM bank", "isolation": "monotonic atomic view"}))
                .await;
            if body["results"][0]["rows"][0][0].as_i64() == Some(ACCOUNTS) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the learner never applied the accounts: {body}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (server, committed) = (server.clone(), committed.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..TRANSFERS_PER_CLIENT {
                let from = ((client * 7 + i * 3) as i64) % ACCOUNTS;
                let to = (from + 1 + (i as i64 % (ACCOUNTS - 1))) % ACCOUNTS;
                if transfer(&server, level, from, to, 1 + (i as i64 % 13)).await {
                    committed.fetch_add(1, Ordering::Relaxed);
                }
                // Batches, retried by the server on conflicts, move money too.
                let (status, body) = server
                    .post(
                        "/v1/sql",
                        json!({"isolation": level, "statements": [
                            {"sql": "UPDATE bank SET balance = balance - $1 WHERE id = $2", "params": [3, to]},
                            {"sql": "UPDATE bank SET balance = balance + $1 WHERE id = $2", "params": [3, from]}]}),
                    )
                    .await;
                assert!(status == 200 || code(&body) == "40001", "{status} {body}");
            }
        }));
    }
    // A read-only auditor sees the exact total in every snapshot.
    let auditor = {
        let (server, done) = (server.clone(), done.clone());
        tokio::spawn(async move {
            let mut audits = 0;
            while !done.load(Ordering::Relaxed) || audits < 5 {
                // On a cluster, also at MAV: served by the gateway's own
                // replica (a learner), which must apply commits atomically.
                let levels: &[&str] = if cluster { &[level, "monotonic atomic view"] } else { &[level] };
                for audit_level in levels {
                    let (status, body) = server
                        .post(
                            "/v1/sql",
                            json!({"sql": "SELECT SUM(balance), COUNT(*) FROM bank", "isolation": audit_level}),
                        )
                        .await;
                    assert_eq!(status, 200, "{body}");
                    let row = &body["results"][0]["rows"][0];
                    assert_eq!(row[0].as_i64(), Some(total), "{audit_level}: audit saw {row}");
                    assert_eq!(row[1].as_i64(), Some(ACCOUNTS));
                }
                audits += 1;
            }
            audits
        })
    };
    for client in clients {
        client.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let audits = auditor.await.unwrap();
    assert!(audits >= 5);
    assert!(committed.load(Ordering::Relaxed) > 0, "{level}: no transfer committed");
    let body = server.sql("SELECT SUM(balance) FROM bank", json!([])).await;
    assert_eq!(body["rows"][0][0].as_i64(), Some(total), "{level}: money created or destroyed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_total_is_invariant_under_snapshot_isolation() {
    bank("snapshot", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_total_is_invariant_under_serializable() {
    bank("serializable", false).await;
}

/// The same workload through a replicated cluster's remote gateway: every
/// transfer commits through Multi-Paxos and every read takes a read barrier.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_total_is_invariant_on_a_replicated_cluster() {
    bank("serializable", true).await;
    bank("snapshot", true).await;
}

/// Writers insert pairs of rows (id, id + OFFSET) in one transaction and
/// record what was acknowledged; the server is SIGKILLed mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_commit_and_leaves_no_partial_transaction() {
    const WRITERS: i64 = 4;
    const OFFSET: i64 = 1_000_000;
    const ACKS_BEFORE_KILL: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Arc::new(Server::dev(&data));
    server.sql("CREATE TABLE pairs (id BIGINT PRIMARY KEY, writer INT NOT NULL)", json!([])).await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (server, acked) = (server.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let id = writer * 100_000 + i;
                let response = server
                    .client
                    .post(format!("{}/v1/sql", server.url))
                    .json(&json!({"statements": [
                        {"sql": "INSERT INTO pairs VALUES ($1, $2)", "params": [id, writer]},
                        {"sql": "INSERT INTO pairs VALUES ($1, $2)", "params": [id + OFFSET, writer]}]}))
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status().is_success() => acked.lock().unwrap().push(id),
                    // The kill: connection refused or reset. Stop writing.
                    _ => return,
                }
            }
        }));
    }
    // Bounded: a server that stopped acknowledging fails the test rather
    // than hanging it.
    let waited_since = std::time::Instant::now();
    while acked.lock().unwrap().len() < ACKS_BEFORE_KILL {
        assert!(waited_since.elapsed() < std::time::Duration::from_secs(300), "writers stalled before the kill");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The writers hold handles to the server: kill it through its pid.
    let status = std::process::Command::new("kill").arg("-9").arg(server.pid().to_string()).status().unwrap();
    assert!(status.success());
    for writer in writers {
        writer.await.unwrap();
    }
    drop(server);
    let acked = acked.lock().unwrap().clone();
    let restarted = Server::dev(&data);
    let body = restarted.sql("SELECT id FROM pairs", json!([])).await;
    let present: std::collections::HashSet<i64> =
        body["rows"].as_array().unwrap().iter().map(|row| row[0].as_i64().unwrap()).collect();
    for id in &acked {
        assert!(present.contains(id) && present.contains(&(id + OFFSET)), "acknowledged pair {id} lost");
    }
    for id in &present {
        let partner = if *id >= OFFSET { id - OFFSET } else { id + OFFSET };
        assert!(present.contains(&partner), "partial transaction: {id} without {partner}");
    }
    assert!(acked.len() >= ACKS_BEFORE_KILL);
}
