//! Rehome latency against a running `geodb dev` cluster, as a ratio to the
//! round trip between the old and the new home (`../shared/BENCHMARKS.md`,
//! issue "Homes and rehoming"): one locality key with 1, 100 and 10,000
//! rows moved back and forth between the first and the last gateway's
//! regions (us-east and eu-west by default).
//!
//! Setup: `geo_rehome_bench (home INT, id INT, n INT, PRIMARY KEY (home,
//! id))`, dropped and recreated; for every size a fresh locality key,
//! homed in the first region by inserting its rows through that region's
//! gateway (500 per statement). Then, for every size, `--moves` rehomes
//! (`POST /v1/admin/rehome`), alternately to the last region and back,
//! each sent through the gateway of the region the key is leaving (class
//! "via old home") and then as many through the gateway of the region it
//! goes to ("via new home"). A rehome is measured from the request to its
//! answer; one answered with a retryable error is counted and sent again.
//! The server's own `ms` is reported beside.

use std::time::{Duration, Instant};

use geodb_geo::{LatencyMatrix, Region};
use serde_json::{Value as Json, json};

use crate::geo_commit::{get_json as get, post, recreate_home_table};
use crate::report::Measurement;

const TABLE: &str = "geo_rehome_bench";
/// Locality keys tried: `KEY_BASE + KEY_STRIDE * i`.
const KEY_BASE: i64 = 9_000_000;
const KEY_STRIDE: i64 = 7;
const KEY_TRIES: i64 = 256;
/// Rows per insert statement while loading.
const ROWS_PER_INSERT: usize = 500;
/// Attempts at one rehome that keeps answering a retryable error.
const ATTEMPTS_MAX: u32 = 20;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Sizes from which `--large-moves` applies.
const LARGE_ROWS: usize = 1_000;

#[derive(clap::Args)]
pub struct Args {
    /// One gateway per region, as `geodb dev` prints them: keys move
    /// between the first one's region and the last one's.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7070,http://127.0.0.1:7071,http://127.0.0.1:7072"
    )]
    gateways: Vec<String>,
    /// Rows of each key measured.
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    sizes: Vec<usize>,
    /// Rehomes measured per size and class.
    #[arg(long, default_value_t = 20)]
    moves: usize,
    /// Rehomes measured per class for sizes of 1,000 rows and more (each
    /// is one large log entry per shard: fewer keep the run short).
    #[arg(long, default_value_t = 6)]
    large_moves: usize,
    /// Also write the results to this JSON file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// What one size and class measured.
struct Class {
    name: String,
    rows: usize,
    latency: Measurement,
    /// The server's own figure (its `ms`), as a measurement too.
    server: Measurement,
    retries: u64,
}

pub fn run(args: Args) -> Result<(), String> {
    if args.gateways.len() < 2 {
        return Err("--gateways needs at least two gateways, of two regions".into());
    }
    if args.moves == 0 || args.large_moves == 0 {
        return Err("--moves and --large-moves must be at least 1".into());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(|e| e.to_string())?;
    let gateways: Vec<String> = args.gateways.iter().map(|url| url.trim_end_matches('/').to_string()).collect();
    let (first, last) = (&gateways[0], &gateways[gateways.len() - 1]);
    let (from, to) = (region_of(&client, first).await?, region_of(&client, last).await?);
    if from == to {
        return Err(format!("the first and last gateways are both in {from}"));
    }
    let rtt_ms = LatencyMatrix::standard()
        .rtt_us(&Region(from.clone()), &Region(to.clone()))
        .ok_or_else(|| format!("{from} or {to} is not in the standard latency matrix"))? as f64
        / 1_000.0;

    let sql = |statement: String| json!({"sql": statement});
    recreate_home_table(&client, first, TABLE).await?;

    let mut classes = Vec::new();
    let mut next_key = 0;
    for &rows in &args.sizes {
        let key = fresh_key(&client, first, &mut next_key).await?;
        for start in (0..rows).step_by(ROWS_PER_INSERT) {
            let values: Vec<String> =
                (start..rows.min(start + ROWS_PER_INSERT)).map(|id| format!("({key}, {id}, 0)")).collect();
            post(
                &client,
                &format!("{first}/v1/sql"),
                &sql(format!("INSERT INTO {TABLE} VALUES {}", values.join(", "))),
            )
            .await
            .map_err(|failure| failure.message)?;
        }
        let moves = if rows >= LARGE_ROWS { args.large_moves } else { args.moves };
        for via_old in [true, false] {
            let name = format!("{rows} rows, via {} home", if via_old { "old" } else { "new" });
            eprintln!("{name}: {moves} rehomes between {from} and {to}");
            let mut class =
                Class { name, rows, latency: Measurement::new(""), server: Measurement::new(""), retries: 0 };
            for round in 0..moves {
                // Even rounds leave the first region, odd ones come back.
                let (leaving, arriving) = if round % 2 == 0 { (first, last) } else { (last, first) };
                let (region, via) =
                    (if round % 2 == 0 { &to } else { &from }, if via_old { leaving } else { arriving });
                let (took, server_ms, retries) = rehome(&client, via, key, region).await?;
                class.latency.record(took);
                class.server.record(Duration::from_secs_f64(server_ms / 1_000.0));
                class.retries += retries;
            }
            if moves % 2 == 1 {
                // Back home for the next class.
                rehome(&client, first, key, &from).await?;
            }
            classes.push(class);
        }
    }

    println!("rehome of one locality key between {from} and {to}; bound: the RTT between them, {rtt_ms} ms");
    println!();
    println!("| class | rehomes | retries | p50 ms | p99 ms | server p50 ms | p50 ÷ RTT | p99 ÷ RTT |");
    println!("|---|---|---|---|---|---|---|---|");
    for class in &classes {
        let (p50, p99) = (class.latency.p(0.50) / 1_000.0, class.latency.p(0.99) / 1_000.0);
        println!(
            "| {} | {} | {} | {p50:.1} | {p99:.1} | {:.1} | {:.2}× | {:.2}× |",
            class.name,
            class.latency.histogram.len(),
            class.retries,
            class.server.p(0.50) / 1_000.0,
            p50 / rtt_ms,
            p99 / rtt_ms
        );
    }
    if let Some(path) = &args.json {
        let results: Vec<Json> = classes
            .iter()
            .map(|class| {
                json!({
                    "class": class.name,
                    "rows": class.rows,
                    "rehomes": class.latency.histogram.len(),
                    "retries": class.retries,
                    "p50_ms": class.latency.p(0.50) / 1_000.0,
                    "p99_ms": class.latency.p(0.99) / 1_000.0,
                    "server_p50_ms": class.server.p(0.50) / 1_000.0,
                    "rtt_ms": rtt_ms,
                })
            })
            .collect();
        let document = json!({"benchmark": "geo-rehome", "from": from, "to": to, "classes": results});
        std::fs::write(path, serde_json::to_string_pretty(&document).expect("JSON serializes"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The region of the node behind `url`.
async fn region_of(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let view = get(client, &format!("{url}/v1/cluster")).await?;
    let nodes = view["nodes"].as_array().ok_or_else(|| format!("{url}: no nodes in /v1/cluster"))?;
    let node = nodes.iter().find(|node| node["id"] == view["node"]).ok_or_else(|| format!("{url}: no node entry"))?;
    node["region"].as_str().map(str::to_string).ok_or_else(|| format!("{url}: no region"))
}

/// A locality key with no home yet (the next insert through `url` homes
/// it in that gateway's region).
async fn fresh_key(client: &reqwest::Client, url: &str, next: &mut i64) -> Result<i64, String> {
    while *next < KEY_TRIES {
        let key = KEY_BASE + KEY_STRIDE * *next;
        *next += 1;
        if get(client, &format!("{url}/v1/homes/{key}")).await?["region"].is_null() {
            return Ok(key);
        }
    }
    Err(format!("no locality key from {KEY_BASE} on is free; start on a new data directory"))
}

/// One rehome through `via`: how long it took end to end, the server's
/// own `ms`, and how many retryable answers came first.
async fn rehome(client: &reqwest::Client, via: &str, key: i64, region: &str) -> Result<(Duration, f64, u64), String> {
    let body = json!({"key": key, "region": region});
    let mut retries = 0;
    loop {
        let started = Instant::now();
        match post(client, &format!("{via}/v1/admin/rehome"), &body).await {
            Ok(answer) => {
                if answer["to"] != json!(region) || answer["from"] == answer["to"] {
                    return Err(format!("key {key} did not move to {region}: {answer}"));
                }
                return Ok((started.elapsed(), answer["ms"].as_f64().unwrap_or(0.0), retries));
            }
            Err(failure) if failure.retryable && retries + 1 < u64::from(ATTEMPTS_MAX) => retries += 1,
            Err(failure) => return Err(failure.message),
        }
    }
}
