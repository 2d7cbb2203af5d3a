//! Serializable transaction latency by home, against a running `geodb dev`
//! cluster: a transaction on one home from that home's region, and a
//! transaction spanning two homes, each as a ratio to its lower bound
//! (`../shared/BENCHMARKS.md`, "Lower bounds").
//!
//! Setup: `geo_homes_bench (home INT, id INT, n INT, PRIMARY KEY (home,
//! id))`, dropped and recreated. For every region a locality key is homed
//! there by writing it first through that region's gateway (homes outlive
//! `DROP TABLE`, so a key already homed elsewhere is skipped), with one row
//! per client. Then one class after another, each `--warmup-s` unmeasured
//! and `--duration-s` measured, `--clients` sessions at serializable, each
//! on its own rows, so nothing conflicts:
//!
//! - **one home**, for every region: through that region's gateway,
//!   `BEGIN`; `UPDATE` the row of the region's key; `COMMIT`. Bound: the
//!   quorum round trip of the key's shard (from its leader to the voters
//!   completing a majority, by the standard latency matrix and the voters
//!   `/v1/cluster` reports) plus commit wait, 2ε.
//! - **two homes**, for every pair of regions: through the first region's
//!   gateway, `BEGIN`; `UPDATE` the first key's row; `UPDATE` the second
//!   key's row; `COMMIT`. Bound: the round trip between the two homes.
//!
//! Every class reports the whole transaction (before `BEGIN` to after the
//! `COMMIT` answer) and the `COMMIT` request alone, p50 and p99, with both
//! divided by the bound. A retryable failure is rolled back, counted, and
//! the loop goes on; so is an answer of unknown outcome (`08007`, a shard's
//! leader changed under the commit), counted apart.

use std::time::{Duration, Instant};

use geodb_geo::{LatencyMatrix, Region};
use serde_json::{Value as Json, json};

use crate::geo_commit::{Failure, GatewayArgs as Args, get_json as get, post};
use crate::report::Measurement;

const TABLE: &str = "geo_homes_bench";
/// The SQLSTATE of an answer whose outcome is unknown.
const OUTCOME_UNKNOWN: &str = "08007";
const ISOLATION: &str = "serializable";
const UPDATE: &str = "UPDATE geo_homes_bench SET n = n + 1 WHERE home = $1 AND id = $2";
/// Locality keys tried for a region: `KEY_BASE + region index + KEY_STRIDE * i`.
const KEY_BASE: i64 = 7_000_000;
const KEY_STRIDE: i64 = 16;
const KEY_TRIES: i64 = 64;

/// A gateway and the home this benchmark gave its region.
struct Home {
    url: String,
    region: String,
    key: i64,
}

/// One measured class: which homes a transaction writes, from where.
struct Class {
    name: String,
    /// The gateway the sessions talk to.
    url: String,
    /// Locality keys written, in order.
    keys: Vec<i64>,
    /// The lower bound, in ms, and what it is made of.
    bound_ms: f64,
    bound: String,
}

/// What one class measured.
struct Times {
    transaction: Measurement,
    commit: Measurement,
    retries: u64,
    /// Answers of unknown outcome (`08007`).
    unknown: u64,
}

impl Times {
    fn new() -> Self {
        Times { transaction: Measurement::new(""), commit: Measurement::new(""), retries: 0, unknown: 0 }
    }

    fn merge(&mut self, other: &Times) {
        self.transaction.merge(&other.transaction);
        self.commit.merge(&other.commit);
        self.retries += other.retries;
        self.unknown += other.unknown;
    }
}

pub fn run(args: Args) -> Result<(), String> {
    if args.gateways.len() < 2 {
        return Err("--gateways needs one gateway per region, at least two".into());
    }
    if args.run.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<(), String> {
    let client = crate::http::client(args.run.ca_cert.as_deref())?;
    let matrix = LatencyMatrix::standard();
    let gateways: Vec<String> = args.gateways.urls();
    let cluster = get(&client, &format!("{}/v1/cluster", gateways[0])).await?;
    let epsilon_ms = cluster["max_clock_offset_ms"].as_f64().ok_or("no max_clock_offset_ms in /v1/cluster")?;

    let sql = |statement: String| json!({"sql": statement});
    let first = format!("{}/v1/sql", gateways[0]);
    let _ = post(&client, &first, &sql(format!("DROP TABLE IF EXISTS {TABLE}"))).await;
    post(&client, &first, &sql(format!("CREATE TABLE {TABLE} (home INT, id INT, n INT, PRIMARY KEY (home, id))")))
        .await
        .map_err(|failure| failure.message)?;

    let mut homes = Vec::new();
    for (index, url) in gateways.iter().enumerate() {
        let view = get(&client, &format!("{url}/v1/cluster")).await?;
        let region = node_region(&view, &view["node"]).ok_or_else(|| format!("{url}: no region for this node"))?;
        let key = home_key(&client, url, &region, index as i64).await?;
        let rows: Vec<String> = (0..args.run.clients).map(|id| format!("({key}, {id}, 0)")).collect();
        post(&client, &format!("{url}/v1/sql"), &sql(format!("INSERT INTO {TABLE} VALUES {}", rows.join(", "))))
            .await
            .map_err(|failure| failure.message)?;
        let answer = get(&client, &format!("{url}/v1/homes/{key}")).await?;
        if answer["region"] != json!(region) {
            return Err(format!("key {key}, written first through {url} ({region}), is homed at {answer}"));
        }
        homes.push(Home { url: url.clone(), region, key });
    }

    // The shards as the first gateway sees them once every key is written.
    let cluster = get(&client, &format!("{}/v1/cluster", gateways[0])).await?;
    let mut classes = Vec::new();
    for home in &homes {
        let quorum_ms = quorum_rtt_ms(&cluster, &matrix, &home.region)?;
        classes.push(Class {
            name: format!("one home ({}), from {}", home.region, home.region),
            url: home.url.clone(),
            keys: vec![home.key],
            bound_ms: quorum_ms + 2.0 * epsilon_ms,
            bound: format!("quorum RTT {quorum_ms} + 2ε {}", 2.0 * epsilon_ms),
        });
    }
    for (i, a) in homes.iter().enumerate() {
        for b in &homes[i + 1..] {
            let rtt_ms = matrix
                .rtt_us(&Region(a.region.clone()), &Region(b.region.clone()))
                .ok_or_else(|| format!("{} or {} is not in the standard latency matrix", a.region, b.region))?
                as f64
                / 1_000.0;
            classes.push(Class {
                name: format!("two homes ({} + {}), from {}", a.region, b.region, a.region),
                url: a.url.clone(),
                keys: vec![a.key, b.key],
                bound_ms: rtt_ms,
                bound: format!("RTT {} ↔ {} {rtt_ms}", a.region, b.region),
            });
        }
    }

    let warmup = Duration::from_secs(args.run.warmup_s);
    let duration = Duration::from_secs(args.run.duration_s);
    let mut measured = Vec::new();
    for class in &classes {
        eprintln!(
            "{}: {} clients, {} s warm-up, {} s measured",
            class.name, args.run.clients, args.run.warmup_s, args.run.duration_s
        );
        measured.push(measure(&client, class, args.run.clients, warmup, duration).await?);
    }

    println!(
        "isolation {ISOLATION}, ε = max_clock_offset_ms = {epsilon_ms} ms, {} clients per class",
        args.run.clients
    );
    println!();
    println!("{HEADER}");
    for (class, times) in classes.iter().zip(&measured) {
        println!("{}", row(class, times));
    }
    println!();
    for class in &classes {
        println!("- {}: bound {} ms ({})", class.name, class.bound_ms, class.bound);
    }

    if let Some(path) = &args.run.json {
        let results: Vec<Json> = classes
            .iter()
            .zip(&measured)
            .map(|(class, times)| {
                let (transaction, commit) = (&times.transaction, &times.commit);
                json!({
                    "class": class.name,
                    "gateway": class.url,
                    "keys": class.keys,
                    "bound_ms": class.bound_ms,
                    "bound": class.bound,
                    "transactions": transaction.histogram.len(),
                    "retries": times.retries,
                    "unknown": times.unknown,
                    "transaction_p50_ms": ms(transaction.p(0.50)),
                    "transaction_p99_ms": ms(transaction.p(0.99)),
                    "commit_p50_ms": ms(commit.p(0.50)),
                    "commit_p99_ms": ms(commit.p(0.99)),
                })
            })
            .collect();
        let document = json!({
            "gateways": gateways,
            "clients": args.run.clients,
            "duration_s": args.run.duration_s,
            "warmup_s": args.run.warmup_s,
            "isolation": ISOLATION,
            "max_clock_offset_ms": epsilon_ms,
            "results": results,
            "cluster": cluster,
        });
        crate::report::write_json(path, &document)?;
    }
    Ok(())
}

fn node_region(cluster: &Json, id: &Json) -> Option<String> {
    let nodes = cluster["nodes"].as_array()?;
    let node = nodes.iter().find(|node| &node["id"] == id)?;
    node["region"].as_str().map(str::to_string)
}

/// A locality key for the region of gateway `index`: the first candidate
/// with no home yet (the insert through `url` homes it there) or already
/// homed in `region`.
async fn home_key(client: &reqwest::Client, url: &str, region: &str, index: i64) -> Result<i64, String> {
    for i in 0..KEY_TRIES {
        let key = KEY_BASE + index + KEY_STRIDE * i;
        let answer = get(client, &format!("{url}/v1/homes/{key}")).await?;
        if answer["region"].is_null() || answer["region"] == json!(region) {
            return Ok(key);
        }
    }
    Err(format!("no locality key from {KEY_BASE} on is free or homed in {region}; start on a new data directory"))
}

/// The largest quorum round trip of the home shards of `region` (those
/// that hold locality keys' rows): from each shard's leader to the voters
/// that complete a majority with it.
fn quorum_rtt_ms(cluster: &Json, matrix: &LatencyMatrix, region: &str) -> Result<f64, String> {
    let shards = cluster["shards"].as_array().ok_or("no shards in /v1/cluster")?;
    let mut worst: Option<u64> = None;
    let holds_homes = |shard: &&Json| shard["holds"].as_str().is_some_and(|holds| holds.starts_with("home"));
    for shard in shards.iter().filter(|shard| shard["home"] == json!(region)).filter(holds_homes) {
        let leader = node_region(cluster, &shard["leader"])
            .ok_or_else(|| format!("shard {} has no known leader: {shard}", shard["id"]))?;
        let voters = shard["voters"].as_array().ok_or_else(|| format!("shard {} lists no voters", shard["id"]))?;
        let mut rtts: Vec<u64> = voters
            .iter()
            .filter(|voter| **voter != shard["leader"])
            .map(|voter| {
                let at = node_region(cluster, voter).ok_or_else(|| format!("voter {voter} is not in /v1/cluster"))?;
                matrix
                    .rtt_us(&Region(leader.clone()), &Region(at.clone()))
                    .ok_or_else(|| format!("{leader} or {at} is not in the standard latency matrix"))
            })
            .collect::<Result<_, _>>()?;
        rtts.sort_unstable();
        // A majority of n voters is the leader and n / 2 others.
        let needed = voters.len() / 2;
        let rtt = if needed == 0 { 0 } else { rtts[needed - 1] };
        worst = Some(worst.map_or(rtt, |worst| worst.max(rtt)));
    }
    worst.map(|us| us as f64 / 1_000.0).ok_or_else(|| format!("no shard is homed in {region}"))
}

/// Runs one class: `clients` sessions, each on its own row of every key.
async fn measure(
    client: &reqwest::Client,
    class: &Class,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Times, String> {
    let measure_from = Instant::now() + warmup;
    let until = measure_from + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            let (client, url, keys) = (client.clone(), class.url.clone(), class.keys.clone());
            tokio::spawn(async move { session(&client, &url, &keys, id as i64, measure_from, until).await })
        })
        .collect();
    let mut total = Times::new();
    for task in tasks {
        total.merge(&task.await.map_err(|e| e.to_string())??);
    }
    total.transaction.elapsed = measure_from.elapsed();
    total.commit.elapsed = total.transaction.elapsed;
    Ok(total)
}

async fn session(
    client: &reqwest::Client,
    url: &str,
    keys: &[i64],
    id: i64,
    measure_from: Instant,
    until: Instant,
) -> Result<Times, String> {
    let opened = post(client, &format!("{url}/v1/sessions"), &json!({"isolation": ISOLATION}))
        .await
        .map_err(|failure| failure.message)?;
    let session = opened["session"].as_str().ok_or_else(|| format!("no session id in {opened}"))?.to_string();
    let statement_url = format!("{url}/v1/sessions/{session}/sql");
    let statement = |sql: &str| json!({"sql": sql});
    let updates: Vec<Json> = keys.iter().map(|key| json!({"sql": UPDATE, "params": [key, id]})).collect();
    let mut times = Times::new();
    let outcome = loop {
        let started = Instant::now();
        if started >= until {
            break Ok(());
        }
        let attempt = async {
            post(client, &statement_url, &statement("BEGIN")).await?;
            for update in &updates {
                post(client, &statement_url, update).await?;
            }
            let committing = Instant::now();
            post(client, &statement_url, &statement("COMMIT")).await?;
            Ok::<_, Failure>((committing, Instant::now()))
        };
        match attempt.await {
            Ok((committing, committed)) => {
                if started >= measure_from {
                    times.transaction.record(committed - started);
                    times.commit.record(committed - committing);
                }
            }
            Err(failure) if failure.retryable || failure.code.as_deref() == Some(OUTCOME_UNKNOWN) => {
                if failure.retryable {
                    times.retries += 1;
                } else {
                    eprintln!("unknown outcome: {}", failure.message);
                    times.unknown += 1;
                }
                let _ = post(client, &statement_url, &statement("ROLLBACK")).await;
            }
            Err(failure) => break Err(failure.message),
        }
    };
    let _ = client.delete(format!("{url}/v1/sessions/{session}")).send().await;
    outcome.map(|()| times)
}

const HEADER: &str = "| class | txns | retries | unknown | bound ms | txn p50 ms | txn p99 ms | COMMIT p50 ms | COMMIT p99 ms | txn p50 ÷ bound | txn p99 ÷ bound | COMMIT p50 ÷ bound |\n\
                      |---|---|---|---|---|---|---|---|---|---|---|---|";

fn ms(micros: f64) -> f64 {
    micros / 1_000.0
}

fn row(class: &Class, times: &Times) -> String {
    let (transaction, commit, bound) = (&times.transaction, &times.commit, class.bound_ms);
    let (retries, unknown) = (times.retries, times.unknown);
    format!(
        "| {} | {} | {retries} | {unknown} | {bound} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}× | {:.2}× | {:.2}× |",
        class.name,
        transaction.histogram.len(),
        ms(transaction.p(0.50)),
        ms(transaction.p(0.99)),
        ms(commit.p(0.50)),
        ms(commit.p(0.99)),
        ms(transaction.p(0.50)) / bound,
        ms(transaction.p(0.99)) / bound,
        ms(commit.p(0.50)) / bound,
    )
}
