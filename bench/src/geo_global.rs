//! Global tables (R14 of `docs/design/transactions.md`) against a running
//! `geodb dev` cluster: a serializable read of a `global` table from every
//! region, which the gateway's own replica answers (the bound is the round
//! trip between zones of one region: no wide-area term), and a serializable
//! write of one, which commits `global_lead_ms` in the future and waits it
//! out.
//!
//! Setup: `geo_global_bench (id INT PRIMARY KEY, n INT) WITH (locality =
//! 'global')`, dropped and recreated, one row per client. Then one class
//! after another, each `--warmup-s` unmeasured and `--duration-s`
//! measured, `--clients` closed loops of one-statement transactions
//! (`POST /v1/sql` at serializable), each client on its own row:
//!
//! - **read**, from every region's gateway: `SELECT n ... WHERE id = $1`.
//! - **write**, from the first gateway (the global shard's home region in
//!   `geodb dev`): `UPDATE ... SET n = n + 1 WHERE id = $1`.
//!
//! The report shows p50 and p99 per class, the reads' p50 against the
//! intra-region round trip, and the global reads each node's replica served
//! or waited for (`geodb_global_reads_total`), before and after.

use std::time::Duration;

use geodb_geo::{LatencyMatrix, Region};
use serde_json::{Value as Json, json};

use crate::geo_commit::{GatewayArgs as Args, closed_loops, get_json, post};
use crate::report::Measurement;

const TABLE: &str = "geo_global_bench";
const ISOLATION: &str = "serializable";
const READ: &str = "SELECT n FROM geo_global_bench WHERE id = $1";
const WRITE: &str = "UPDATE geo_global_bench SET n = n + 1 WHERE id = $1";

struct Class {
    name: String,
    url: String,
    sql: &'static str,
    /// The lower bound, in ms, and what it is.
    bound_ms: f64,
    bound: String,
}

pub fn run(args: Args) -> Result<(), String> {
    if args.gateways.is_empty() || args.run.clients == 0 {
        return Err("needs at least one gateway and one client".into());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

/// `geodb_global_reads_total` by outcome, summed over the nodes of the
/// process behind `url` (`geodb dev` runs them all in one).
async fn global_reads(client: &reqwest::Client, url: &str) -> Result<(u64, u64), String> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let sum = |outcome: &str| -> u64 {
        text.lines()
            .filter(|line| line.starts_with("geodb_global_reads_total") && line.contains(outcome))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|value| value as u64)
            .sum()
    };
    Ok((sum("outcome=\"served\""), sum("outcome=\"waited_for_close\"")))
}

async fn run_async(args: Args) -> Result<(), String> {
    let client = reqwest::Client::new();
    let matrix = LatencyMatrix::standard();
    let gateways: Vec<String> = args.gateways.urls();
    let cluster = get_json(&client, &format!("{}/v1/cluster", gateways[0])).await?;
    let epsilon_ms = cluster["max_clock_offset_ms"].as_f64().ok_or("no max_clock_offset_ms in /v1/cluster")?;

    let first = format!("{}/v1/sql", gateways[0]);
    let sql = |statement: String| json!({"sql": statement});
    let _ = post(&client, &first, &sql(format!("DROP TABLE IF EXISTS {TABLE}"))).await;
    post(&client, &first, &sql(format!("CREATE TABLE {TABLE} (id INT PRIMARY KEY, n INT) WITH (locality = 'global')")))
        .await
        .map_err(|failure| failure.message)?;
    let rows: Vec<String> = (0..args.run.clients).map(|id| format!("({id}, 0)")).collect();
    post(&client, &first, &sql(format!("INSERT INTO {TABLE} VALUES {}", rows.join(", "))))
        .await
        .map_err(|failure| failure.message)?;

    let mut classes = Vec::new();
    for url in &gateways {
        let view = get_json(&client, &format!("{url}/v1/cluster")).await?;
        let region = view["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|node| node["id"] == view["node"]))
            .and_then(|node| node["region"].as_str())
            .ok_or_else(|| format!("{url}: no region for this node"))?
            .to_string();
        let zones_ms = matrix.rtt_us(&Region(region.clone()), &Region(region.clone())).unwrap_or(0) as f64 / 1_000.0;
        classes.push(Class {
            name: format!("read, from {region}"),
            url: url.clone(),
            sql: READ,
            bound_ms: zones_ms,
            bound: format!("RTT between zones of {region} {zones_ms}"),
        });
    }
    let lead_ms = cluster["global_lead_ms"].as_f64().ok_or("no global_lead_ms in /v1/cluster")?;
    classes.push(Class {
        name: "write, from the first gateway".into(),
        url: gateways[0].clone(),
        sql: WRITE,
        bound_ms: lead_ms + epsilon_ms,
        bound: format!("global_lead_ms {lead_ms} + ε {epsilon_ms}: the commit's future timestamp, waited out"),
    });

    let before = global_reads(&client, &gateways[0]).await?;
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
    let after = global_reads(&client, &gateways[0]).await?;

    println!("isolation {ISOLATION}, ε = {epsilon_ms} ms, {} clients per class", args.run.clients);
    println!();
    println!("| class | txns | retries | bound ms | p50 ms | p99 ms | p50 ÷ bound |");
    println!("|---|---|---|---|---|---|---|");
    for (class, (times, retries)) in classes.iter().zip(&measured) {
        println!(
            "| {} | {} | {retries} | {} | {:.2} | {:.2} | {:.2}× |",
            class.name,
            times.histogram.len(),
            class.bound_ms,
            times.p(0.50) / 1_000.0,
            times.p(0.99) / 1_000.0,
            times.p(0.50) / 1_000.0 / class.bound_ms,
        );
    }
    println!();
    for class in &classes {
        println!("- {}: bound {} ms ({})", class.name, class.bound_ms, class.bound);
    }
    let (served, waited) = (after.0 - before.0, after.1 - before.1);
    println!(
        "- global reads served by the gateways' own replicas during the run: {served}, of which waited for a closed timestamp: {waited}"
    );

    if let Some(path) = &args.run.json {
        let results: Vec<Json> = classes
            .iter()
            .zip(&measured)
            .map(|(class, (times, retries))| {
                let extra = json!({"gateway": class.url, "bound_ms": class.bound_ms, "bound": class.bound});
                crate::report::class_json(&class.name, times, *retries, extra)
            })
            .collect();
        let document = json!({
            "gateways": gateways,
            "clients": args.run.clients,
            "duration_s": args.run.duration_s,
            "warmup_s": args.run.warmup_s,
            "max_clock_offset_ms": epsilon_ms,
            "global_reads_served": served,
            "global_reads_waited_for_close": waited,
            "results": results,
        });
        crate::report::write_json(path, &document)?;
    }
    Ok(())
}

/// Runs one class: `clients` closed loops, each on its own row.
async fn measure(
    client: &reqwest::Client,
    class: &Class,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<(Measurement, u64), String> {
    let body = |id: usize| json!({"sql": class.sql, "params": [id], "isolation": ISOLATION});
    closed_loops(client, &class.url, clients, warmup, duration, body).await
}
