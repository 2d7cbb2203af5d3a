//! Backup and restore through the API (`POST /v1/admin/backup`,
//! `POST /v1/admin/restore`; `docs/operations.md`, "Backups"):
//!
//! - on one node, every type, NULLs, quoted names, a global table, unique
//!   and colocated indexes and more rows than one page or batch come back
//!   exactly in a new node, and the indexes work there; a damaged backup
//!   is refused before anything is written; bad requests get their codes;
//! - on a nine-node `geodb dev` of three regions, a backup taken while
//!   transfers commit through every region's gateway is restored into a
//!   new cluster: it holds exactly the transactions whose commit timestamp
//!   is at or below the backup's, whole, and every key keeps its home.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Server, code, metric_sum};
use serde_json::{Value, json};
use sha2::Digest;

async fn backup(server: &Server, dir: &Path) -> (u16, Value) {
    server.post("/v1/admin/backup", json!({"dir": dir})).await
}

async fn restore(server: &Server, dir: &Path) -> (u16, Value) {
    server.post("/v1/admin/restore", json!({"dir": dir})).await
}

/// Every row of `table` through `server`, in primary-key order.
async fn rows(server: &Server, table: &str, order: &str) -> Value {
    server.sql(&format!("SELECT * FROM {table} ORDER BY {order}"), json!([])).await["rows"].clone()
}

/// The tables of the single-node test, each with its `ORDER BY`.
const TABLES: [(&str, &str); 3] = [("items", "id"), ("users", "uid, id"), ("\"Mixed Case\"", "\"order\"")];

async fn fill(server: &Server) {
    for ddl in [
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, price DECIMAL(10,2), weight REAL, \
         ratio DOUBLE PRECISION, flag BOOLEAN, at TIMESTAMP, code CHAR(3), small SMALLINT, big BIGINT) \
         WITH (locality = 'global')",
        "CREATE UNIQUE INDEX items_name ON items (name)",
        // A column family: two stored values per row, which a backup's
        // pages put back together.
        "CREATE TABLE users (uid INT, id INT, email TEXT, note TEXT, PRIMARY KEY (uid, id)) \
         WITH (family_contact = 'email')",
        "CREATE INDEX users_email ON users (email)",
        "CREATE UNIQUE INDEX users_uid_email ON users (uid, email)",
        "CREATE TABLE \"Mixed Case\" (\"order\" BIGINT PRIMARY KEY, \"Value\" TEXT)",
    ] {
        server.sql(ddl, json!([])).await;
    }
    let items = [
        json!([
            1,
            "bolt",
            "0.10",
            1.5,
            0.1,
            true,
            "2026-01-02T03:04:05.123456Z",
            "abc",
            -32768,
            9_223_372_036_854_775_807i64
        ]),
        json!([
            2,
            "nut ü €",
            "-99999999.99",
            -0.0,
            1e300,
            false,
            "1970-01-01T00:00:00Z",
            "",
            32767,
            -9_223_372_036_854_775_807i64
        ]),
        json!([3, "washer", null, null, null, null, null, null, null, null]),
    ];
    for item in items {
        server.sql("INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", item).await;
    }
    // More rows than a backup's page (1,000) and a restore's batch (200),
    // across many locality keys.
    for uid in 0..30 {
        let mut statements = Vec::new();
        for id in 0..50 {
            let email = if id % 7 == 3 { Value::Null } else { json!(format!("u{uid}.{id}@example.com")) };
            statements.push(json!({
                "sql": "INSERT INTO users VALUES ($1, $2, $3, $4)",
                "params": [uid, id, email, format!("note \"{uid}\" 'x' \\ {id}")],
            }));
        }
        let (status, body) = server.post("/v1/sql", json!({"statements": statements})).await;
        assert_eq!(status, 200, "{body}");
    }
    server.sql("INSERT INTO \"Mixed Case\" VALUES (-1, 'minus'), (0, NULL), (42, 'answer')", json!([])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_brings_every_table_value_and_index_back_exactly_and_refuses_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let source = Server::dev(&dir.path().join("source"));
    fill(&source).await;
    let mut before = Vec::new();
    for (table, order) in TABLES {
        before.push(rows(&source, table, order).await);
    }
    assert_eq!(before[1].as_array().unwrap().len(), 1_500);

    let saved = dir.path().join("backup");
    let (status, summary) = backup(&source, &saved).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!((summary["tables"].as_u64(), summary["rows"].as_u64()), (Some(3), Some(1_506)), "{summary}");
    let manifest: Value = serde_json::from_slice(&std::fs::read(saved.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "geodb-backup/1");
    assert_eq!(manifest["timestamp"], summary["timestamp"]);
    let entry = |name: &str| {
        let tables = manifest["tables"].as_array().unwrap();
        tables.iter().position(|table| table["name"] == name).unwrap_or_else(|| panic!("{name} in {manifest}"))
    };
    let (items, users) = (entry("items"), entry("users"));
    let users_ddl = manifest["tables"][users]["ddl"][0].as_str().unwrap();
    assert!(users_ddl.ends_with("WITH (family_contact = 'email')"), "{users_ddl}");
    // Writes after the backup are not in it.
    source.sql("UPDATE items SET name = 'changed' WHERE id = 1", json!([])).await;
    source.sql("DELETE FROM users WHERE uid = 0", json!([])).await;
    source.sql("INSERT INTO \"Mixed Case\" VALUES (7, 'late')", json!([])).await;

    // Requests that are wrong.
    let (status, body) = backup(&source, &saved).await;
    assert_eq!((status, code(&body)), (400, "22023"), "a backup into a used directory: {body}");
    let (status, body) = source.post("/v1/admin/backup", json!({"dir": "relative/dir"})).await;
    assert_eq!((status, code(&body)), (400, "22023"), "{body}");
    let (status, body) = source.post("/v1/admin/backup", json!({"directory": "/tmp/x"})).await;
    assert_eq!(status, 400, "an unknown field: {body}");
    let (status, body) = source.post("/v1/admin/backup", json!(["/tmp/x"])).await;
    assert_eq!((status, code(&body)), (400, "22023"), "{body}");
    let (status, body) = restore(&source, &saved).await;
    assert_eq!((status, code(&body)), (400, "55000"), "a restore into a database with tables: {body}");
    let (status, body) = restore(&source, &dir.path().join("nowhere")).await;
    assert_eq!((status, code(&body)), (400, "22023"), "{body}");

    // A damaged copy: one byte of the users' rows changed.
    let damaged = dir.path().join("damaged");
    copy_dir(&saved, &damaged);
    let users_file = damaged.join(manifest["tables"][users]["rows"]["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&users_file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&users_file, bytes).unwrap();
    let target = Server::dev(&dir.path().join("target"));
    let (status, body) = restore(&target, &damaged).await;
    assert_eq!((status, code(&body)), (500, "XX001"), "{body}");
    // A manifest whose DDL for a table does something else.
    let tampered = dir.path().join("tampered");
    copy_dir(&saved, &tampered);
    let mut manifest_of = manifest.clone();
    manifest_of["tables"][items]["ddl"][1] = json!("DROP TABLE items");
    std::fs::write(tampered.join("manifest.json"), manifest_of.to_string()).unwrap();
    let (status, body) = restore(&target, &tampered).await;
    assert_eq!((status, code(&body)), (500, "XX001"), "{body}");
    // A rows file whose hash is right but whose row does not fit its table.
    let misfit = dir.path().join("misfit");
    copy_dir(&saved, &misfit);
    let row = geodb_storage::value::encode_row(&[geodb_storage::Value::Int(1)]);
    let mut frame = (row.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&row);
    let items_file = manifest["tables"][items]["rows"]["file"].as_str().unwrap();
    std::fs::write(misfit.join(items_file), &frame).unwrap();
    let mut manifest_of = manifest.clone();
    let sha256: String = sha2::Sha256::digest(&frame).iter().map(|byte| format!("{byte:02x}")).collect();
    manifest_of["tables"][items]["rows"] =
        json!({"file": items_file, "count": 1, "bytes": frame.len(), "sha256": sha256});
    std::fs::write(misfit.join("manifest.json"), manifest_of.to_string()).unwrap();
    let (status, body) = restore(&target, &misfit).await;
    assert_eq!((status, code(&body)), (500, "XX001"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("1 values for 10 columns"), "{body}");
    // None of them wrote anything.
    let (status, body) = target.try_sql("SELECT count(*) FROM items", json!([])).await;
    assert_eq!((status, code(&body)), (400, "42P01"), "a refused restore wrote nothing: {body}");
    let (status, body) = backup(&target, &misfit.join("manifest.json")).await;
    assert_eq!((status, code(&body)), (400, "22023"), "a backup into a file: {body}");

    let (status, restored) = restore(&target, &saved).await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["rows"], summary["rows"]);
    assert_eq!(restored["timestamp"], summary["timestamp"]);
    for ((table, order), expected) in TABLES.iter().zip(&before) {
        assert_eq!(&rows(&target, table, order).await, expected, "{table}");
    }
    // The indexes were made again: lookups by them, and uniqueness.
    let found = target.sql("SELECT id FROM items WHERE name = 'nut ü €'", json!([])).await;
    assert_eq!(found["rows"], json!([[2]]));
    let found = target.sql("SELECT uid, id FROM users WHERE email = 'u29.49@example.com'", json!([])).await;
    assert_eq!(found["rows"], json!([[29, 49]]));
    let (status, body) = target.try_sql("INSERT INTO items (id, name) VALUES (9, 'bolt')", json!([])).await;
    assert_eq!((status, code(&body)), (409, "23505"), "{body}");
    let (status, body) = target.try_sql("INSERT INTO users VALUES (5, 999, 'u5.1@example.com', '')", json!([])).await;
    assert_eq!((status, code(&body)), (409, "23505"), "{body}");
    // A second restore into the restored database is refused.
    let (status, body) = restore(&target, &saved).await;
    assert_eq!((status, code(&body)), (400, "55000"), "{body}");

    let (_, metrics) = target.get("/metrics").await;
    assert_eq!(
        metric_sum(&metrics, "geodb_backups_total"),
        6.0,
        "three damaged backups, a backup into a file, a restore and a refused one"
    );
    let (_, metrics) = source.get("/metrics").await;
    assert!(metric_sum(&metrics, "geodb_backup_rows_total") >= 1_506.0);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// An HLC timestamp as the API writes it, `physical.logical`, for ordering.
fn timestamp(text: &str) -> (u64, u64) {
    let (physical, logical) = text.split_once('.').expect("physical.logical");
    (physical.parse().unwrap(), logical.parse().unwrap())
}

/// Accounts, three per region: account `k` is first written through
/// region `k % 3`'s gateway, and so homed there.
const ACCOUNTS: i64 = 9;
const OPENING: i64 = 1_000;

/// A transfer a writer sent: its id, from and to, and what became of it.
#[derive(Clone, Debug)]
struct Sent {
    id: i64,
    from: i64,
    to: i64,
    /// The commit timestamp, if acknowledged; `None` if the outcome is
    /// unknown (`08007`). Refused transfers are not kept.
    commit_ts: Option<(u64, u64)>,
}

/// Transfers through `url` until `stop`: each one transaction that logs
/// itself (`log`, homed with the account it takes from) and moves one
/// unit between two accounts of (usually) different homes. `acknowledged`
/// counts those committed.
async fn transfers(
    client: reqwest::Client,
    url: String,
    writer: i64,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = writer * 1_000_000 + n;
        let from = (writer + n) % ACCOUNTS;
        let to = (from + 1 + n % (ACCOUNTS - 1)) % ACCOUNTS;
        let body = json!({"isolation": "serializable", "statements": [
            {"sql": "INSERT INTO log VALUES ($1, $2, $3)", "params": [from, id, to]},
            {"sql": "UPDATE accounts SET balance = balance - 1 WHERE k = $1", "params": [from]},
            {"sql": "UPDATE accounts SET balance = balance + 1 WHERE k = $1", "params": [to]},
        ]});
        let response = client.post(format!("{url}/v1/sql")).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        match (status, code(&answer)) {
            (200, _) => {
                let ts = timestamp(answer["commit_ts"].as_str().expect("commit_ts"));
                sent.push(Sent { id, from, to, commit_ts: Some(ts) });
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            (_, "08007") => sent.push(Sent { id, from, to, commit_ts: None }),
            (_, "40001" | "08006") => tokio::time::sleep(Duration::from_millis(5)).await,
            _ => panic!("transfer {id}: {status} {answer}"),
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_cross_region_transfers_restores_exactly_the_state_at_its_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--latency-scale", "0.05", "--no-auto-rehome"];
    let (_source, gateways) = Server::dev_regions(&dir.path().join("source"), &args);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let first = Server::attach(&gateways[0]);
    first.sql("CREATE TABLE accounts (k INT PRIMARY KEY, balance INT NOT NULL)", json!([])).await;
    first.sql("CREATE TABLE log (k INT, id BIGINT, dest INT NOT NULL, PRIMARY KEY (k, id))", json!([])).await;
    let mut homes = BTreeMap::new();
    for k in 0..ACCOUNTS {
        let gateway = Server::attach(&gateways[k as usize % 3]);
        gateway.sql("INSERT INTO accounts VALUES ($1, $2)", json!([k, OPENING])).await;
        let (status, home) = gateway.get(&format!("/v1/homes/{k}")).await;
        assert_eq!(status, 200, "{home}");
        let home: Value = serde_json::from_str(&home).unwrap();
        homes.insert(k, home["region"].as_str().unwrap().to_string());
    }
    let regions: BTreeSet<&String> = homes.values().collect();
    assert_eq!(regions.len(), 3, "accounts homed in every region: {homes:?}");

    // Two writers per region's gateway; the backup is taken through
    // us-central's once 30 transfers have committed, and they go on until
    // 30 more have.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for writer in 0..6 {
        let url = gateways[writer as usize % 3].clone();
        writers.push(tokio::spawn(transfers(client.clone(), url, writer, stop.clone(), acknowledged.clone())));
    }
    let committed = |at_least: usize| {
        let acknowledged = acknowledged.clone();
        async move {
            while acknowledged.load(Ordering::Relaxed) < at_least {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acknowledged.load(Ordering::Relaxed)
        }
    };
    committed(30).await;
    let saved = dir.path().join("backup");
    let (status, summary) = backup(&Server::attach(&gateways[1]), &saved).await;
    assert_eq!(status, 200, "{summary}");
    let after = acknowledged.load(Ordering::Relaxed);
    committed(after + 30).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for writer in writers {
        sent.extend(writer.await.unwrap());
    }
    let at = timestamp(summary["timestamp"].as_str().unwrap());
    let acknowledged = |before: bool| {
        sent.iter().filter(move |transfer| transfer.commit_ts.is_some_and(|ts| (ts <= at) == before)).count()
    };
    assert!(acknowledged(true) >= 30 && acknowledged(false) >= 30, "transfers before and after the backup: {sent:?}");

    // A new cluster of the same regions, restored through eu-west.
    let (_target, restored_gateways) = Server::dev_regions(&dir.path().join("target"), &args);
    let target = Server::attach(&restored_gateways[2]);
    let (status, restored) = restore(&target, &saved).await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["homes"].as_u64(), Some(ACCOUNTS as u64), "{restored}");

    // Exactly the transfers committed at or below the backup's timestamp,
    // each whole (its log row and both balances).
    let log = rows(&target, "log", "k, id").await;
    let present: BTreeMap<i64, (i64, i64)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row[1].as_i64().unwrap(), (row[0].as_i64().unwrap(), row[2].as_i64().unwrap())))
        .collect();
    for transfer in &sent {
        let found = present.get(&transfer.id);
        match transfer.commit_ts {
            Some(ts) if ts <= at => {
                assert_eq!(
                    found,
                    Some(&(transfer.from, transfer.to)),
                    "transfer {transfer:?} committed at or below {at:?}"
                )
            }
            Some(_) => assert_eq!(found, None, "transfer {transfer:?} committed after the backup's {at:?}"),
            None => {}
        }
    }
    let known: BTreeSet<i64> = sent.iter().map(|transfer| transfer.id).collect();
    assert!(present.keys().all(|id| known.contains(id)), "a logged transfer no writer sent");
    let mut expected: BTreeMap<i64, i64> = (0..ACCOUNTS).map(|k| (k, OPENING)).collect();
    for (from, to) in present.values() {
        *expected.get_mut(from).unwrap() -= 1;
        *expected.get_mut(to).unwrap() += 1;
    }
    let balances = rows(&target, "accounts", "k").await;
    let balances: BTreeMap<i64, i64> =
        balances.as_array().unwrap().iter().map(|row| (row[0].as_i64().unwrap(), row[1].as_i64().unwrap())).collect();
    assert_eq!(balances, expected, "balances are what the restored log says");
    // Every key lives where it lived.
    for (k, region) in &homes {
        let (status, home) = target.get(&format!("/v1/homes/{k}")).await;
        assert_eq!(status, 200, "{home}");
        let home: Value = serde_json::from_str(&home).unwrap();
        assert_eq!(home["region"].as_str(), Some(region.as_str()), "account {k}");
    }
    // The restored cluster takes writes at once.
    Server::attach(&restored_gateways[0]).sql("UPDATE accounts SET balance = balance + 0 WHERE k = 0", json!([])).await;
}
