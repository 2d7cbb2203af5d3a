//! The HTTP API under N concurrent clients: point `SELECT` and single-row
//! `UPDATE` on a table of `rows` rows, each for `duration_s` seconds,
//! against a running `geodb` (e.g. `geodb dev`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use crate::report::{self, Measurement};

#[derive(clap::Args)]
pub struct Args {
    /// The gateway to measure.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Rows in the benchmark table.
    #[arg(long, default_value_t = 10_000)]
    rows: i64,
    /// Isolation level of the statements.
    #[arg(long, default_value = "serializable")]
    isolation: String,
    /// Trust this CA (PEM, the `ca.crt` of `geodb cert`) for an `https://`
    /// URL: a node started with certificates; log in there as `root` with
    /// `client.root.crt` and `.key` from the same directory.
    #[arg(long)]
    ca_cert: Option<std::path::PathBuf>,
}

/// The benchmarks' HTTP client, trusting `ca_cert` (a PEM file) beside
/// the system's roots when given, and then logging in as `root` (a secure
/// node authenticates every client: `docs/security.md`) with
/// `client.root.crt` and `client.root.key` from the CA's directory
/// (`geodb cert create-client --user root`).
pub(crate) fn client(ca_cert: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for certificate in
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: {e}", path.display()))?
        {
            builder = builder.add_root_certificate(certificate);
        }
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let (crt, key) = (dir.join("client.root.crt"), dir.join("client.root.key"));
        if crt.exists() && key.exists() {
            let mut identity = std::fs::read(&crt).map_err(|e| format!("{}: {e}", crt.display()))?;
            identity.extend(std::fs::read(&key).map_err(|e| format!("{}: {e}", key.display()))?);
            builder = builder
                .identity(reqwest::Identity::from_pem(&identity).map_err(|e| format!("{}: {e}", crt.display()))?);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// Rows per multi-row INSERT while loading.
const LOAD_BATCH_ROWS: i64 = 500;

/// Runs a `/v1/sql` request; a non-2xx answer is an error with its body.
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let response = client.post(format!("{url}/v1/sql")).json(&body).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    Ok(body)
}

pub fn run(args: Args) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<(), String> {
    let client = client(args.ca_cert.as_deref())?;
    let url = args.url.trim_end_matches('/').to_string();
    let _ = post(&client, &url, json!({"sql": "DROP TABLE IF EXISTS bench_kv"})).await;
    post(&client, &url, json!({"sql": "CREATE TABLE bench_kv (k BIGINT PRIMARY KEY, v BIGINT NOT NULL, pad TEXT)"}))
        .await?;
    eprintln!("loading {} rows", args.rows);
    let mut start = 0;
    while start < args.rows {
        let end = (start + LOAD_BATCH_ROWS).min(args.rows);
        let values: Vec<String> = (start..end).map(|k| format!("({k}, 0, '{}')", "x".repeat(100))).collect();
        post(&client, &url, json!({"sql": format!("INSERT INTO bench_kv VALUES {}", values.join(", "))})).await?;
        start = end;
    }
    let duration = Duration::from_secs(args.duration_s);
    let select =
        measure(&client, &args, &url, duration, "point SELECT", "SELECT v, pad FROM bench_kv WHERE k = $1").await?;
    let update =
        measure(&client, &args, &url, duration, "single-row UPDATE", "UPDATE bench_kv SET v = v + 1 WHERE k = $1")
            .await?;
    println!("{}", report::HEADER);
    println!("{}", report::row(&select));
    println!("{}", report::row(&update));
    Ok(())
}

async fn measure(
    client: &reqwest::Client,
    args: &Args,
    url: &str,
    duration: Duration,
    name: &str,
    sql: &'static str,
) -> Result<Measurement, String> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    let url = Arc::new(url.to_string());
    for _ in 0..args.clients {
        let (client, url, isolation, rows) = (client.clone(), url.clone(), args.isolation.clone(), args.rows);
        tasks.push(tokio::spawn(async move {
            let mut m = Measurement::new("");
            while Instant::now() < deadline {
                let k = rand::rng().random_range(0..rows);
                let t = Instant::now();
                post(&client, &url, json!({"sql": sql, "params": [k], "isolation": isolation})).await?;
                m.record(t.elapsed());
            }
            Ok::<_, String>(m)
        }));
    }
    let mut total = Measurement::new(format!("{name}, {} clients, {}", args.clients, args.isolation));
    for task in tasks {
        total.merge(&task.await.map_err(|e| e.to_string())??);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}
