//! Bytes on disk under a long update workload: `clients` closed loops of
//! single-row `UPDATE`s (each rewriting a row with 200 random bytes, which
//! compression cannot shrink) over `rows` rows,
//! against a running node whose data directory is `data_dir`, sampling the
//! directory's size every `sample_every` updates. Run it against a node with
//! garbage collection on and one with it off (`[gc] enabled = false`): the
//! same updates, so the bytes compare directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rand::Rng;
use serde_json::json;

use crate::http::post;

#[derive(clap::Args)]
pub struct Args {
    /// The node to write to.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    /// The node's data directory, measured.
    #[arg(long)]
    data_dir: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Rows updated over and over.
    #[arg(long, default_value_t = 1_000)]
    rows: i64,
    /// Updates in all.
    #[arg(long, default_value_t = 1_000_000)]
    updates: u64,
    /// Updates between two samples of the directory's size.
    #[arg(long, default_value_t = 50_000)]
    sample_every: u64,
}

/// Bytes of the files under `dir` whose names end with `suffix` (every
/// file: `""`).
fn bytes_under(dir: &Path, suffix: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => bytes_under(&entry.path(), suffix),
            Ok(metadata) if entry.file_name().to_string_lossy().ends_with(suffix) => metadata.len(),
            _ => 0,
        })
        .sum()
}

/// The sum of a metric family's samples on the node's `/metrics`.
async fn metric(client: &reqwest::Client, url: &str, family: &str) -> Result<f64, String> {
    let text = client.get(format!("{url}/metrics")).send().await.map_err(|e| e.to_string())?;
    let text = text.text().await.map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .filter(|line| line.strip_prefix(family).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

pub fn run(args: Args) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<(), String> {
    let client = reqwest::Client::new();
    let url = args.url.trim_end_matches('/').to_string();
    post(&client, &url, json!({"sql": "CREATE TABLE bench_gc (k BIGINT PRIMARY KEY, v BIGINT NOT NULL, pad TEXT)"}))
        .await?;
    let values: Vec<String> = (0..args.rows).map(|k| format!("({k}, 0, '')")).collect();
    for chunk in values.chunks(500) {
        post(&client, &url, json!({"sql": format!("INSERT INTO bench_gc VALUES {}", chunk.join(", "))})).await?;
    }
    println!(
        "| updates | seconds | MiB on disk | of which tables (.sst) | of which write-ahead log (.log) | versions collected |"
    );
    println!("|---|---|---|---|---|---|");
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let mut sampled = 0;
    let sample = |updates: u64| {
        let (client, url, dir) = (client.clone(), url.clone(), args.data_dir.clone());
        async move {
            // (An empty sum is -0.0.)
            let collected = metric(&client, &url, "geodb_gc_versions_total").await?.max(0.0);
            let mib = |suffix: &str| bytes_under(&dir, suffix) as f64 / (1 << 20) as f64;
            println!(
                "| {updates} | {:.0} | {:.1} | {:.1} | {:.1} | {collected:.0} |",
                started.elapsed().as_secs_f64(),
                mib(""),
                mib(".sst"),
                mib(".log")
            );
            Ok::<_, String>(())
        }
    };
    sample(0).await?;
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (client, url, done, total, rows) = (client.clone(), url.clone(), done.clone(), args.updates, args.rows);
        tasks.push(tokio::spawn(async move {
            while done.fetch_add(1, Ordering::Relaxed) < total {
                let k = rand::rng().random_range(0..rows);
                // Random, so that compression does not hide the versions.
                let pad: String = (0..200).map(|_| rand::rng().sample(rand::distr::Alphanumeric) as char).collect();
                let sql = "UPDATE bench_gc SET v = v + 1, pad = $2 WHERE k = $1";
                post(&client, &url, json!({"sql": sql, "params": [k, pad]})).await?;
            }
            Ok::<_, String>(())
        }));
    }
    while tasks.iter().any(|task| !task.is_finished()) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let updates = done.load(Ordering::Relaxed).min(args.updates);
        if updates >= sampled + args.sample_every {
            sampled = updates / args.sample_every * args.sample_every;
            sample(sampled).await?;
        }
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    sample(args.updates).await?;
    Ok(())
}
