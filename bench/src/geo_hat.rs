//! Highly available writes that never leave the region (R16 of
//! `docs/design/transactions.md`), against a running `geodb dev
//! --admin-faults` cluster: commit latency of a Read Committed or MAV write from
//! the last gateway's region (eu-west in `geodb dev`) to a key homed in the
//! first region (us-east), with every region reachable and while the last
//! region is cut off from the others; then how fast the region's outbox
//! drains once the cut heals.
//!
//! Setup: `geo_hat_bench (home INT, id INT, n INT, PRIMARY KEY (home,
//! id))`, dropped and recreated, one row per client under a locality key
//! homed in the first region (by writing it first through the first
//! gateway) and one under a key homed in the last region; the last gateway
//! then reads both at serializable, so that it knows their homes before it
//! is cut off. Classes, each `--warmup-s` unmeasured and `--duration-s`
//! measured, `--clients` closed loops of one-statement transactions through
//! the last gateway (`POST /v1/sql`, `UPDATE ... SET n = n + 1` of the
//! client's row at `read committed` (rc) or `monotonic atomic view` (mav)):
//!
//! - **rc and mav, remote home, healthy**: the key homed in the first region;
//! - **rc, local home, healthy**: the key homed in the last region;
//! - **mav then rc, remote home, cut off**: the first key again, after `PUT
//!   /v1/admin/faults` `[{"kind": "partition_regions", "regions": [last]}]`
//!   (the fault rules are shared by every node of `geodb dev`), healed
//!   after both.
//!
//! Goal for each (issue "Highly available transactions that never leave
//! the region"): p99 ≤ 2 × the round trip between zones of the region +
//! 2 ms. Then the cut heals, and the benchmark reads the outbox's depth from
//! the last gateway's `/v1/cluster` until it is empty: the entries queued
//! while cut off, and how many per second reached their home.

use std::time::{Duration, Instant};

use geodb_geo::{LatencyMatrix, Region};
use serde_json::{Value as Json, json};

use crate::geo_commit::{GatewayArgs as Args, closed_loops, get_json, post};

const TABLE: &str = "geo_hat_bench";
const UPDATE: &str = "UPDATE geo_hat_bench SET n = n + 1 WHERE home = $1 AND id = $2";
/// Locality keys: this plus the region's index.
const KEY_BASE: i64 = 8_000_000;
/// How long the drain may take before the benchmark gives up.
const DRAIN_MAX: Duration = Duration::from_secs(300);

struct Class {
    name: String,
    isolation: &'static str,
    key: i64,
    cut_off: bool,
}

pub fn run(args: Args) -> Result<(), String> {
    if args.gateways.len() < 2 || args.run.clients == 0 {
        return Err("needs at least two gateways (regions) and one client".into());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

/// The region of the node behind `url`.
async fn region_of(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let view = get_json(client, &format!("{url}/v1/cluster")).await?;
    view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|node| node["id"] == view["node"]))
        .and_then(|node| node["region"].as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{url}: no region for this node"))
}

/// The entries the outbox of `url`'s region holds (its `/v1/cluster`).
async fn outbox_depth(client: &reqwest::Client, url: &str) -> Result<u64, String> {
    let view = get_json(client, &format!("{url}/v1/cluster")).await?;
    view["shards"]
        .as_array()
        .and_then(|shards| shards.iter().find(|shard| shard["holds"] == json!("outbox")))
        .and_then(|shard| shard["outbox"]["depth"].as_u64())
        .ok_or_else(|| format!("{url}: /v1/cluster shows no outbox"))
}

async fn set_faults(client: &reqwest::Client, url: &str, rules: Json) -> Result<(), String> {
    let response =
        client.put(format!("{url}/v1/admin/faults")).json(&rules).send().await.map_err(|e| format!("{url}: {e}"))?;
    match response.status().as_u16() {
        200 => Ok(()),
        404 => Err("PUT /v1/admin/faults answered 404: start geodb dev with --admin-faults".into()),
        status => Err(format!("PUT /v1/admin/faults: {status}: {}", response.text().await.unwrap_or_default())),
    }
}

async fn run_async(args: Args) -> Result<(), String> {
    let client = reqwest::Client::new();
    let gateways: Vec<String> = args.gateways.urls();
    let (first, last) = (gateways[0].clone(), gateways[gateways.len() - 1].clone());
    let (home_region, region) = (region_of(&client, &first).await?, region_of(&client, &last).await?);
    let zones_ms = LatencyMatrix::standard().rtt_us(&Region(region.clone()), &Region(region.clone())).unwrap_or(0)
        as f64
        / 1_000.0;
    let goal_ms = 2.0 * zones_ms + 2.0;
    let (remote, local) = (KEY_BASE, KEY_BASE + gateways.len() as i64 - 1);

    let sql = |statement: String| json!({"sql": statement});
    crate::geo_commit::recreate_home_table(&client, &first, TABLE).await?;
    for (url, key) in [(&first, remote), (&last, local)] {
        let rows: Vec<String> = (0..args.run.clients).map(|id| format!("({key}, {id}, 0)")).collect();
        post(&client, &format!("{url}/v1/sql"), &sql(format!("INSERT INTO {TABLE} VALUES {}", rows.join(", "))))
            .await
            .map_err(|failure| failure.message)?;
        let homes = get_json(&client, &format!("{last}/v1/homes/{key}")).await?;
        eprintln!("key {key}: homed in {}", homes["region"]);
        // The last gateway learns the home before it is cut off.
        let read = json!({"sql": format!("SELECT n FROM {TABLE} WHERE home = $1 AND id = 0"), "params": [key], "isolation": "serializable"});
        post(&client, &format!("{last}/v1/sql"), &read).await.map_err(|failure| failure.message)?;
    }

    let class = |isolation: &'static str, home: &str, key: i64, cut_off: bool| Class {
        name: format!(
            "{isolation}, {home}{}",
            if cut_off { format!(", {region} cut off") } else { ", healthy".into() }
        ),
        isolation,
        key,
        cut_off,
    };
    let (remote_home, local_home) = (format!("remote home ({home_region})"), format!("local home ({region})"));
    let classes = [
        class("rc", &remote_home, remote, false),
        class("mav", &remote_home, remote, false),
        class("rc", &local_home, local, false),
        class("mav", &remote_home, remote, true),
        class("rc", &remote_home, remote, true),
    ];
    let warmup = Duration::from_secs(args.run.warmup_s);
    let duration = Duration::from_secs(args.run.duration_s);
    let mut measured = Vec::new();
    let mut queued = 0;
    let mut cut_off_s = 0;
    for (index, class) in classes.iter().enumerate() {
        let already_cut = index > 0 && classes[index - 1].cut_off;
        if class.cut_off && !already_cut {
            set_faults(&client, &last, json!([{"kind": "partition_regions", "regions": [region]}])).await?;
        }
        eprintln!(
            "{}: {} clients through {last}, {} s warm-up, {} s measured",
            class.name, args.run.clients, args.run.warmup_s, args.run.duration_s
        );
        let key = class.key;
        let isolation = class.isolation;
        let body = |id: usize| json!({"sql": UPDATE, "params": [key, id], "isolation": isolation});
        let result = closed_loops(&client, &last, args.run.clients, warmup, duration, body).await;
        if class.cut_off {
            cut_off_s += args.run.warmup_s + args.run.duration_s;
            if classes.get(index + 1).is_none_or(|next| !next.cut_off) {
                queued = outbox_depth(&client, &last).await?;
                set_faults(&client, &last, json!([])).await?;
            }
        }
        measured.push(result?);
    }
    // The drain: from the heal until the outbox is empty.
    let healed = Instant::now();
    loop {
        if outbox_depth(&client, &last).await? == 0 {
            break;
        }
        if healed.elapsed() > DRAIN_MAX {
            return Err(format!("the outbox still holds entries {DRAIN_MAX:?} after the heal"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = healed.elapsed().as_secs_f64();

    println!(
        "{} clients through {last} ({region}); goal p99 ≤ 2 × {zones_ms} ms + 2 ms = {goal_ms} ms",
        args.run.clients
    );
    println!();
    println!("| class | txns | retries | p50 ms | p99 ms | goal ms | p99 ÷ goal |");
    println!("|---|---|---|---|---|---|---|");
    for (class, (times, retries)) in classes.iter().zip(&measured) {
        println!(
            "| {} | {} | {retries} | {:.2} | {:.2} | {goal_ms} | {:.2}× |",
            class.name,
            times.histogram.len(),
            times.p(0.50) / 1_000.0,
            times.p(0.99) / 1_000.0,
            times.p(0.99) / 1_000.0 / goal_ms,
        );
    }
    println!();
    println!(
        "- outbox after {cut_off_s} s cut off: {queued} entries, drained in {drain_s:.2} s after the heal ({:.0} entries/s)",
        queued as f64 / drain_s.max(1e-9)
    );

    if let Some(path) = &args.run.json {
        let results: Vec<Json> = classes
            .iter()
            .zip(&measured)
            .map(|(class, (times, retries))| {
                crate::report::class_json(&class.name, times, *retries, json!({"goal_ms": goal_ms}))
            })
            .collect();
        let document = json!({
            "gateway": last,
            "region": region,
            "clients": args.run.clients,
            "duration_s": args.run.duration_s,
            "warmup_s": args.run.warmup_s,
            "results": results,
            "queued_while_cut_off": queued,
            "cut_off_s": cut_off_s,
            "drain_s": drain_s,
        });
        crate::report::write_json(path, &document)?;
    }
    Ok(())
}
