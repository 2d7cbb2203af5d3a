//! Automatic rehoming against a running `geodb dev` cluster (R19 of
//! `docs/design/transactions.md`, issue "Homes and rehoming"): a key homed
//! in the first gateway's region and then used only through the last
//! gateway's region moves there by itself; how long that takes, and its
//! transactions' latency before and after, as ratios to the round trip
//! between the two regions and to the round trip inside the last region.
//!
//! Setup: `geo_follow_bench (home INT, id INT, n INT, PRIMARY KEY (home,
//! id))`, dropped and recreated; a fresh locality key homed in the first
//! region by inserting its row through that region's gateway. Then
//! `--clients` closed loops through the last gateway, each a one-row
//! serializable `UPDATE ... SET n = n + 1` (its own transaction), while
//! `GET /v1/homes/<key>` is polled every 100 ms. A transaction counts as
//! *before* if it ended before the move was seen, *after* if it began once
//! the move was seen; the few in between are left out. The run goes on for
//! `--after-s` once the key moved.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use geodb_geo::{LatencyMatrix, Region};
use serde_json::json;

use crate::geo_commit::{get_json as get, post, recreate_home_table};
use crate::report::Measurement;

const TABLE: &str = "geo_follow_bench";
/// Locality keys tried: `KEY_BASE + i`.
const KEY_BASE: i64 = 8_000_000;
const KEY_TRIES: i64 = 256;
/// How often the key's home is looked up.
const POLL: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct Args {
    /// The key is homed in the first gateway's region and used through the
    /// last one.
    #[command(flatten)]
    gateways: crate::geo_commit::Gateways,
    /// Concurrent clients through the last gateway.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Give up if the key has not moved after this long.
    #[arg(long, default_value_t = 300)]
    move_wait_max_s: u64,
    /// How long to go on once the key moved.
    #[arg(long, default_value_t = 10)]
    after_s: u64,
    /// Also write the results to this JSON file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> Result<(), String> {
    if args.gateways.len() < 2 || args.clients == 0 {
        return Err("--gateways needs two gateways of two regions, and --clients at least 1".into());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

/// One transaction: when it began and ended, from the start of the run.
struct Timed {
    began: Duration,
    ended: Duration,
}

async fn run_async(args: Args) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(|e| e.to_string())?;
    let gateways: Vec<String> = args.gateways.urls();
    let (first, last) = (gateways[0].clone(), gateways[gateways.len() - 1].clone());
    let (from, to) =
        (crate::geo_rehome::region_of(&client, &first).await?, crate::geo_rehome::region_of(&client, &last).await?);
    let matrix = LatencyMatrix::standard();
    let rtt_ms = |a: &str, b: &str| {
        matrix
            .rtt_us(&Region(a.into()), &Region(b.into()))
            .map(|us| us as f64 / 1_000.0)
            .ok_or(format!("{a} or {b} is not in the standard matrix"))
    };
    let (wide_ms, local_ms) = (rtt_ms(&from, &to)?, rtt_ms(&to, &to)?);

    recreate_home_table(&client, &first, TABLE).await?;
    let mut key = None;
    for candidate in KEY_BASE..KEY_BASE + KEY_TRIES {
        if get(&client, &format!("{first}/v1/homes/{candidate}")).await?["region"].is_null() {
            key = Some(candidate);
            break;
        }
    }
    let key = key.ok_or("no free locality key; start on a new data directory")?;
    let insert = json!({"sql": format!("INSERT INTO {TABLE} VALUES ({key}, 0, 0)")});
    post(&client, &format!("{first}/v1/sql"), &insert).await.map_err(|failure| failure.message)?;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..args.clients {
        let (client, url, stop) = (client.clone(), format!("{last}/v1/sql"), stop.clone());
        let update = json!({"sql": format!("UPDATE {TABLE} SET n = n + 1 WHERE home = {key} AND id = 0")});
        loops.push(tokio::spawn(async move {
            let (mut done, mut retried) = (Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let began = started.elapsed();
                match post(&client, &url, &update).await {
                    Ok(_) => done.push(Timed { began, ended: started.elapsed() }),
                    Err(failure) if failure.retryable => retried += 1,
                    Err(failure) => return Err(failure.message),
                }
            }
            Ok((done, retried))
        }));
    }
    let moved_at = loop {
        let home = get(&client, &format!("{first}/v1/homes/{key}")).await?;
        if home["region"] == json!(to) {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(args.move_wait_max_s) {
            stop.store(true, Ordering::Relaxed);
            return Err(format!("key {key} did not move to {to} within {} s", args.move_wait_max_s));
        }
        tokio::time::sleep(POLL).await;
    };
    tokio::time::sleep(Duration::from_secs(args.after_s)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut before, mut after, mut retried) = (Measurement::new("before"), Measurement::new("after"), 0);
    for running in loops {
        let (done, retries) = running.await.map_err(|e| e.to_string())??;
        retried += retries;
        for timed in done {
            if timed.ended < moved_at {
                before.record(timed.ended - timed.began);
            } else if timed.began >= moved_at {
                after.record(timed.ended - timed.began);
            }
        }
    }
    let moved_s = moved_at.as_secs_f64();
    println!("key {key} homed in {from}, used through {to} by {} client(s): moved after {moved_s:.1} s", args.clients);
    println!("bounds: the RTT {from}–{to}, {wide_ms} ms, before; the RTT inside {to}, {local_ms} ms, after");
    println!();
    println!("| phase | transactions | p50 ms | p99 ms | p50 ÷ bound |");
    println!("|---|---|---|---|---|");
    for (phase, times, bound) in [("before", &before, wide_ms), ("after", &after, local_ms)] {
        let p50 = times.p(0.50) / 1_000.0;
        println!(
            "| {phase} | {} | {p50:.1} | {:.1} | {:.2}× |",
            times.histogram.len(),
            times.p(0.99) / 1_000.0,
            p50 / bound
        );
    }
    println!("retryable answers: {retried}");
    if let Some(path) = &args.json {
        let phase = |times: &Measurement, bound: f64| {
            json!({"transactions": times.histogram.len(), "p50_ms": times.p(0.50) / 1_000.0,
                   "p99_ms": times.p(0.99) / 1_000.0, "bound_ms": bound})
        };
        let document = json!({
            "benchmark": "geo-follow", "from": from, "to": to, "clients": args.clients, "moved_s": moved_s,
            "retries": retried, "before": phase(&before, wide_ms), "after": phase(&after, local_ms),
        });
        crate::report::write_json(path, &document)?;
    }
    Ok(())
}
