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
//!
//! Bulk (`--bulk-keys`): that many fresh locality keys of `--bulk-rows`
//! rows each, homed in the first region, moved by one bulk rehome
//! (`{"keys": [...]}`) through the first gateway to the last region, then
//! back through the last gateway: keys and rows moved per second, each way.

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
    /// Keys move between the first gateway's region and the last one's.
    #[command(flatten)]
    gateways: crate::geo_commit::Gateways,
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
    /// Keys of the bulk rehome measured (0: none).
    #[arg(long, default_value_t = 0)]
    bulk_keys: usize,
    /// Rows of each key of the bulk rehome.
    #[arg(long, default_value_t = 10)]
    bulk_rows: usize,
    /// Measure the bulk rehome only (not `--sizes`).
    #[arg(long)]
    bulk_only: bool,
}

/// Locality keys of bulk rehomes: `BULK_KEY_BASE + bulk_keys * i + j`.
const BULK_KEY_BASE: i64 = 10_000_000;

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
    let gateways: Vec<String> = args.gateways.urls();
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
    let sizes = if args.bulk_only { &[][..] } else { &args.sizes[..] };
    for &rows in sizes {
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

    let bulk = if args.bulk_keys > 0 { bulk(&client, first, last, &to, &from, &args).await? } else { Vec::new() };

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
    if !bulk.is_empty() {
        println!();
        println!("| bulk rehome | keys | rows | s | keys/s | rows/s | server ms |");
        println!("|---|---|---|---|---|---|---|");
        for run in &bulk {
            println!(
                "| {} | {} | {} | {:.2} | {:.1} | {:.0} | {:.0} |",
                run["class"].as_str().unwrap_or(""),
                run["keys"],
                run["rows"],
                run["s"].as_f64().unwrap_or(0.0),
                run["keys_per_s"].as_f64().unwrap_or(0.0),
                run["rows_per_s"].as_f64().unwrap_or(0.0),
                run["server_ms"].as_f64().unwrap_or(0.0),
            );
        }
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
        let document = json!({"benchmark": "geo-rehome", "from": from, "to": to, "classes": results, "bulk": bulk});
        std::fs::write(path, serde_json::to_string_pretty(&document).expect("JSON serializes"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The bulk rehome measurement (see the module documentation): one result
/// per direction.
async fn bulk(
    client: &reqwest::Client,
    first: &str,
    last: &str,
    to: &str,
    from: &str,
    args: &Args,
) -> Result<Vec<Json>, String> {
    let (count, rows) = (args.bulk_keys, args.bulk_rows.max(1));
    let mut base = None;
    for i in 0..KEY_TRIES {
        let candidate = BULK_KEY_BASE + (count as i64) * i;
        if get(client, &format!("{first}/v1/homes/{candidate}")).await?["region"].is_null() {
            base = Some(candidate);
            break;
        }
    }
    let base = base.ok_or("no free range of bulk keys; start on a new data directory")?;
    let keys: Vec<i64> = (0..count as i64).map(|i| base + i).collect();
    let values: Vec<String> =
        keys.iter().flat_map(|key| (0..rows).map(move |id| format!("({key}, {id}, 0)"))).collect();
    for chunk in values.chunks(ROWS_PER_INSERT) {
        let insert = json!({"sql": format!("INSERT INTO {TABLE} VALUES {}", chunk.join(", "))});
        post(client, &format!("{first}/v1/sql"), &insert).await.map_err(|failure| failure.message)?;
    }
    let mut results = Vec::new();
    for (via, region, class) in
        [(first, to, format!("to {to}, via old home")), (last, from, format!("to {from}, via old home"))]
    {
        eprintln!("bulk: {count} keys of {rows} rows {class}");
        let started = Instant::now();
        let job = post(client, &format!("{via}/v1/admin/rehome"), &json!({"keys": keys, "region": region}))
            .await
            .map_err(|failure| failure.message)?;
        let took = started.elapsed().as_secs_f64();
        if job["state"] != "done" || job["moved"].as_u64() != Some(count as u64) {
            return Err(format!("the bulk rehome {class} did not move every key: {job}"));
        }
        let moved_rows = job["rows"].as_u64().unwrap_or(0);
        results.push(json!({
            "class": class, "keys": count, "rows": moved_rows, "s": took,
            "keys_per_s": count as f64 / took, "rows_per_s": moved_rows as f64 / took,
            "server_ms": job["ms"],
        }));
    }
    Ok(results)
}

/// The region of the node behind `url`.
pub(crate) async fn region_of(client: &reqwest::Client, url: &str) -> Result<String, String> {
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
