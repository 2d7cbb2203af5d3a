//! Workloads against a real `geodb` process: the bank invariant under
//! concurrency, and durability across SIGKILL.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Server, Session, code};
use serde_json::{Value, json};

const ACCOUNTS: i64 = 8;
const INITIAL_BALANCE: i64 = 1_000;
const CLIENTS: usize = 8;
const TRANSFERS_PER_CLIENT: usize = 40;

/// What a transfer came to.
#[derive(PartialEq)]
enum Outcome {
    Committed,
    /// `40001`: it did not commit.
    Conflict,
    /// `08006` or `08007`, answered on a cluster when a leader changes or a
    /// quorum is briefly lost: it took effect entirely or not at all, so the
    /// total must hold either way.
    Unavailable,
}

/// Whether an error is the cluster's answer to a leader change (see
/// [`Outcome::Unavailable`]).
fn unavailable(body: &Value) -> bool {
    matches!(code(body), "08006" | "08007")
}

/// One interactive transfer: read both balances, write both back. Without
/// first-committer-wins this loses money.
async fn transfer(server: &Server, level: &str, from: i64, to: i64, amount: i64) -> Outcome {
    let session = server.session(level).await;
    let outcome = transfer_in(&session, from, to, amount).await;
    let _ = server.client.delete(format!("{}/v1/sessions/{}", server.url, session.id)).send().await;
    outcome
}

async fn transfer_in(session: &Session<'_>, from: i64, to: i64, amount: i64) -> Outcome {
    let mut balances = Vec::new();
    for sql in [
        "BEGIN".to_string(),
        format!("SELECT balance FROM bank WHERE id = {from}"),
        format!("SELECT balance FROM bank WHERE id = {to}"),
    ] {
        let (status, body) = session.run(&sql).await;
        match status {
            200 => balances.extend(body["rows"].get(0).and_then(|row| row[0].as_i64())),
            _ if unavailable(&body) => return Outcome::Unavailable,
            _ => panic!("{sql} answered {status}: {body}"),
        }
    }
    let [a, b] = balances[..] else { panic!("balances of {from} and {to}: {balances:?}") };
    for sql in [
        format!("UPDATE bank SET balance = {} WHERE id = {from}", a - amount),
        format!("UPDATE bank SET balance = {} WHERE id = {to}", b + amount),
        "COMMIT".to_string(),
    ] {
        let (status, body) = session.run(&sql).await;
        match status {
            200 => {}
            409 if sql == "COMMIT" && code(&body) == "40001" => return Outcome::Conflict,
            _ if unavailable(&body) => return Outcome::Unavailable,
            _ => panic!("{sql} answered {status}: {body}"),
        }
    }
    Outcome::Committed
}

/// Inserts one account as a careful client would: `08006` is retried;
/// after `08007` (outcome unknown) a retry that meets `23505` proves that
/// the first try took effect.
async fn insert_account(server: &Server, id: i64) {
    let mut maybe_inserted = false;
    for _ in 0..50 {
        let (status, body) = server.try_sql("INSERT INTO bank VALUES ($1, $2)", json!([id, INITIAL_BALANCE])).await;
        match (status, code(&body)) {
            (200, _) => return,
            (_, "23505") if maybe_inserted => return,
            (_, "08006" | "08007") => {
                maybe_inserted |= code(&body) == "08007";
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            _ => panic!("INSERT of account {id} answered {status}: {body}"),
        }
    }
    panic!("INSERT of account {id} stayed unavailable");
}

async fn bank(level: &'static str, cluster: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(if cluster { Server::dev_cluster(dir.path()) } else { Server::dev(dir.path()) });
    server.sql("CREATE TABLE bank (id INT PRIMARY KEY, balance BIGINT NOT NULL)", json!([])).await;
    for id in 0..ACCOUNTS {
        insert_account(&server, id).await;
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
    let unavailable_answers = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (server, committed, unavailable_answers) = (server.clone(), committed.clone(), unavailable_answers.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..TRANSFERS_PER_CLIENT {
                let from = ((client * 7 + i * 3) as i64) % ACCOUNTS;
                let to = (from + 1 + (i as i64 % (ACCOUNTS - 1))) % ACCOUNTS;
                match transfer(&server, level, from, to, 1 + (i as i64 % 13)).await {
                    Outcome::Committed => _ = committed.fetch_add(1, Ordering::Relaxed),
                    Outcome::Conflict => {}
                    Outcome::Unavailable => _ = unavailable_answers.fetch_add(1, Ordering::Relaxed),
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
                if status != 200 && unavailable(&body) {
                    unavailable_answers.fetch_add(1, Ordering::Relaxed);
                } else {
                    assert!(status == 200 || code(&body) == "40001", "{status} {body}");
                }
            }
        }));
    }
    // A read-only auditor sees the exact total in every snapshot.
    let auditor = {
        let (server, done, unavailable_answers) = (server.clone(), done.clone(), unavailable_answers.clone());
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
                    if status != 200 && unavailable(&body) {
                        unavailable_answers.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
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
    // One node never changes leader: it has no reason to be unavailable.
    let unavailable_answers = unavailable_answers.load(Ordering::Relaxed);
    assert!(cluster || unavailable_answers == 0, "{level}: {unavailable_answers} unavailable answers on one node");
    let mut final_audit = None;
    for _ in 0..50 {
        let (status, body) = server.try_sql("SELECT SUM(balance) FROM bank", json!([])).await;
        if status == 200 {
            final_audit = body["results"][0]["rows"][0][0].as_i64();
            break;
        }
        assert!(unavailable(&body), "final audit: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(final_audit, Some(total), "{level}: money created or destroyed");
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
