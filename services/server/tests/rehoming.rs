//! Rehoming on a real `geodb dev` process (three regions of three nodes,
//! the standard emulated latencies): automatic rehoming follows a key's
//! traffic to the region it comes from (and leaves alone a key used from two
//! regions alike), and bulk rehomes move many keys in batches, with
//! progress, and cancelled midway leave every key wholly at one home
//! (`docs/design/transactions.md`, R18 and R19; `docs/api.md`).

mod common;

use std::time::{Duration, Instant};

use common::{Server, code};
use serde_json::{Value, json};

/// How long one region must dominate a key's traffic (`--auto-rehome-window-ms`).
const WINDOW_MS: u64 = 2_000;
/// The round trip between us-east and eu-west in the standard topology.
const WAN_RTT: Duration = Duration::from_millis(76);
/// A bound that only a stuck mover would reach (the window is 2 s).
const MOVE_WAIT_MAX: Duration = Duration::from_secs(90);

async fn post(client: &reqwest::Client, url: &str, path: &str, body: Value) -> (u16, Value) {
    let response = client.post(format!("{url}{path}")).json(&body).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(client: &reqwest::Client, url: &str, path: &str) -> (u16, Value) {
    let response = client.get(format!("{url}{path}")).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn sql(client: &reqwest::Client, url: &str, sql: &str) -> Value {
    let (status, body) = post(client, url, "/v1/sql", json!({"sql": sql})).await;
    assert_eq!(status, 200, "{sql}: {body}");
    body
}

/// One autocommitted update of `key` through `url`: whether it committed
/// (a serialization failure the server's own retries did not overcome is
/// the only other answer allowed).
async fn update(client: &reqwest::Client, url: &str, key: i64) -> bool {
    let sql = format!("UPDATE accounts SET balance = balance + 1 WHERE user_id = {key} AND id = 1");
    let (status, body) = post(client, url, "/v1/sql", json!({"sql": sql})).await;
    match status {
        200 => true,
        _ if code(&body) == "40001" => false,
        _ => panic!("{sql}: {status} {body}"),
    }
}

async fn home(client: &reqwest::Client, url: &str, key: i64) -> (String, u64) {
    let (status, body) = get(client, url, &format!("/v1/homes/{key}")).await;
    assert_eq!(status, 200, "{body}");
    (body["region"].as_str().unwrap_or("none").to_string(), body["epoch"].as_u64().unwrap_or(0))
}

async fn count(client: &reqwest::Client, url: &str, key: i64) -> i64 {
    let body = sql(client, url, &format!("SELECT count(*) FROM accounts WHERE user_id = {key}")).await;
    body["results"][0]["rows"][0][0].as_i64().unwrap()
}

/// The median time of `n` one-row serializable updates of `key` through
/// `url`, each its own transaction (one client: none conflicts).
async fn median_update(client: &reqwest::Client, url: &str, key: i64, n: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        assert!(update(client, url, key).await);
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_used_from_one_region_moves_there_by_itself_and_bulk_rehomes_move_many() {
    let dir = tempfile::tempdir().unwrap();
    let window = WINDOW_MS.to_string();
    let (server, gateways) = Server::dev_regions(dir.path(), &["--auto-rehome-window-ms", &window]);
    let (us_east, us_central, eu_west) = (&gateways[0], &gateways[1], &gateways[2]);
    let client = reqwest::Client::new();
    sql(
        &client,
        us_east,
        "CREATE TABLE accounts (user_id INT, id INT, owner TEXT NOT NULL, balance BIGINT NOT NULL, PRIMARY KEY (user_id, id))",
    )
    .await;
    // Key 7 is used from eu-west only; key 8 from us-east and eu-west alike.
    // Both are homed in us-east by their first write.
    sql(&client, us_east, "INSERT INTO accounts VALUES (7, 1, 'ann', 0), (8, 1, 'bob', 0)").await;
    assert_eq!(home(&client, us_east, 7).await, ("us-east".to_string(), 1));

    let first_from_eu_west = Instant::now();
    let before = median_update(&client, eu_west, 7, 9).await;
    assert!(before >= WAN_RTT, "a commit at a home across the ocean takes a wide-area round trip: {before:?}");
    // Each of them prepared key 7's shard in us-east with the read of its
    // row (R20), which its leader counts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = client.get(format!("{eu_west}/metrics")).send().await.unwrap().text().await.unwrap();
        let prepared: f64 = metrics
            .lines()
            .filter(|line| line.starts_with("geodb_prepares_at_statement_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if prepared >= 9.0 {
            break;
        }
        assert!(Instant::now() < deadline, "9 far updates, {prepared} prepares at their statement:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nine transactions take about 1.5 s: less than a window, so the key
    // must not have moved yet (checked only if it was less).
    let (region, _) = home(&client, us_east, 7).await;
    if first_from_eu_west.elapsed() < Duration::from_millis(WINDOW_MS) {
        assert_eq!(region, "us-east", "a key moves only after its traffic came from one region for a whole window");
    }

    // Traffic from eu-west until key 7 moves there (three clients, each a
    // transaction at a time), while key 8 is written as often from us-east
    // as from eu-west (two clients in each), enough to be judged.
    let started = Instant::now();
    let mut updates = 9;
    loop {
        let mut clients = Vec::new();
        for url in [eu_west, eu_west, eu_west] {
            let (client, url) = (client.clone(), url.clone());
            clients.push(tokio::spawn(async move {
                let mut committed = 0;
                for _ in 0..5 {
                    committed += i64::from(update(&client, &url, 7).await);
                }
                committed
            }));
        }
        let mut both = Vec::new();
        for url in [us_east, us_east, eu_west, eu_west] {
            let (client, url) = (client.clone(), url.clone());
            both.push(tokio::spawn(async move {
                for _ in 0..5 {
                    update(&client, &url, 8).await;
                }
            }));
        }
        for running in clients {
            updates += running.await.unwrap();
        }
        for running in both {
            running.await.unwrap();
        }
        if home(&client, us_east, 7).await.0 == "eu-west" {
            break;
        }
        assert!(started.elapsed() < MOVE_WAIT_MAX, "key 7 never moved to eu-west");
    }
    let after = median_update(&client, eu_west, 7, 9).await;
    updates += 9;
    assert!(
        after < before / 2 && after < WAN_RTT / 2,
        "once at home in eu-west, its transactions take the in-region time: before {before:?}, after {after:?}"
    );
    println!(
        "key 7: {before:?} before, {after:?} after, moved {:?} after its first use from eu-west",
        first_from_eu_west.elapsed()
    );
    // Every committed update counted once, across the move.
    let body = sql(&client, us_central, "SELECT balance FROM accounts WHERE user_id = 7").await;
    assert_eq!(body["results"][0]["rows"][0][0], json!(updates));
    // Used from two regions alike: it stays where it is.
    assert_eq!(home(&client, us_east, 8).await, ("us-east".to_string(), 1), "a key used from two regions alike moved");
    let metrics = server.get("/metrics").await.1;
    assert!(
        metrics.lines().any(|line| line.starts_with("geodb_auto_rehomes_total{") && line.contains("outcome=\"moved\"")),
        "automatic rehomes are counted"
    );

    // Bulk, by range: forty keys of two rows each from us-east to us-central.
    let rows: Vec<String> = (100..140).map(|key| format!("({key}, 1, 'a', 1), ({key}, 2, 'b', 2)")).collect();
    sql(&client, us_east, &format!("INSERT INTO accounts VALUES {}", rows.join(", "))).await;
    let (status, job) =
        post(&client, us_east, "/v1/admin/rehome", json!({"range": [100, 139], "region": "us-central"})).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "done");
    assert_eq!((job["keys"].as_u64(), job["moved"].as_u64(), job["rows"].as_u64()), (Some(40), Some(40), Some(80)));
    for key in [100, 120, 139] {
        assert_eq!(home(&client, us_east, key).await, ("us-central".to_string(), 2));
        assert_eq!(count(&client, eu_west, key).await, 2);
    }

    // Bulk by list, in the background, followed to its end.
    let (status, job) =
        post(&client, us_east, "/v1/admin/rehome", json!({"keys": [100, 101, 7], "region": "us-east", "wait": false}))
            .await;
    assert_eq!(status, 202, "{job}");
    let id = job["job"].as_u64().unwrap();
    let job = loop {
        let (status, job) = get(&client, us_east, &format!("/v1/admin/rehomes/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if job["state"] != "running" {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((job["state"].as_str(), job["moved"].as_u64()), (Some("done"), Some(3)), "{job}");
    let (_, jobs) = get(&client, us_east, "/v1/admin/rehomes").await;
    assert!(jobs["jobs"].as_array().unwrap().iter().any(|listed| listed["job"] == json!(id)));

    // Cancelled midway: every key is wholly at one home, old or new.
    let many: Vec<String> = (1_000..1_200).map(|key| format!("({key}, 1, 'c', 1)")).collect();
    sql(&client, us_east, &format!("INSERT INTO accounts VALUES {}", many.join(", "))).await;
    let keys: Vec<i64> = (1_000..1_200).collect();
    let (status, job) =
        post(&client, us_east, "/v1/admin/rehome", json!({"keys": keys, "region": "eu-west", "wait": false})).await;
    assert_eq!(status, 202, "{job}");
    let id = job["job"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = client.delete(format!("{us_east}/v1/admin/rehomes/{id}")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["state"], "cancelled", "{job}");
    let done = job["done"].as_u64().unwrap();
    assert!(done < 200, "cancelled before the end: {job}");
    println!("cancelled after {done} of 200 keys");
    let mut moved = 0;
    for key in 1_000..1_200 {
        let (region, epoch) = home(&client, us_east, key).await;
        match region.as_str() {
            "eu-west" => {
                assert_eq!(epoch, 2);
                moved += 1;
            }
            "us-east" => assert_eq!(epoch, 1),
            other => panic!("key {key} at {other}"),
        }
    }
    assert_eq!(moved, job["moved"].as_u64().unwrap(), "the job's count is the keys that moved");
    let body = sql(&client, us_central, "SELECT count(*), sum(balance) FROM accounts WHERE user_id >= 1000").await;
    assert_eq!(body["results"][0]["rows"][0], json!([200, 200]), "no row lost or doubled");

    // Bad requests.
    let bad = [
        (json!({"key": 1, "keys": [2], "region": "eu-west"}), "22023"),
        (json!({"region": "eu-west"}), "22023"),
        (json!({"keys": [1, [2]], "region": "eu-west"}), "22023"),
        (json!({"range": [1, 2], "region": "mars"}), "22023"),
        (json!({"keys": (0..10_001).collect::<Vec<i64>>(), "region": "eu-west"}), "54000"),
    ];
    for (body, wanted) in bad {
        let (status, answer) = post(&client, us_east, "/v1/admin/rehome", body).await;
        assert_eq!(code(&answer), wanted, "{answer}");
        assert_eq!(status, if wanted == "54000" { 413 } else { 400 });
    }
    assert_eq!(get(&client, us_east, "/v1/admin/rehomes/999999").await.0, 404);
    server.kill();
}
