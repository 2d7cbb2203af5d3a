//! Single-shard write commit latency across the emulated regions, against
//! a running `geodb dev` cluster, as a ratio to its physical lower bound.
//!
//! Setup: `geo_commit_bench (id INT PRIMARY KEY, n INT)`, dropped and
//! recreated, one row per client. Then two phases, each `--warmup-s`
//! unmeasured and `--duration-s` measured:
//!
//! 1. **Sessions.** Each client opens an interactive session at
//!    serializable and loops `BEGIN`; `UPDATE ... SET n = n + 1 WHERE id =
//!    <client>`; `COMMIT`. Each request is timed on its own, and the whole
//!    transaction from before `BEGIN` to after `COMMIT`:
//!    - `BEGIN` of a coordinated level waits on the shard's read barrier
//!      (`CommitLog::barrier`, a read-index round: one quorum round trip);
//!    - `UPDATE` reads and buffers the write on the leader, no round trip;
//!    - `COMMIT` is the Paxos commit (the leader's log sync, one quorum
//!      round trip, the followers' log syncs, applying) plus one local
//!      HTTP round trip. This is the figure compared with the bound.
//! 2. **One-shot.** The same `UPDATE` as `POST /v1/sql`: one request is a
//!    whole transaction (barrier, statement, commit), retried by the server
//!    on a serialization failure.
//!
//! Clients never touch each other's rows, so nothing conflicts; a
//! retryable failure is rolled back, counted and the loop goes on.
//!
//! The lower bound (`--rtt-ms`) is the round trip from the leader to the
//! nodes completing its quorum: 2 ms under zone survival, 31 ms under
//! region survival with the leader in us-east (`docs/benchmarks.md`). The
//! benchmark reads `/v1/cluster` first and prints the survival goal, the
//! voters and the leader, so that the figure names what it measured.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::report::Measurement;

#[derive(clap::Args)]
pub struct Args {
    /// The gateway to measure through (the first region's, by default).
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    #[command(flatten)]
    run: RunArgs,
    /// The lower bound: round trip in ms from the shard leader to the nodes
    /// completing its quorum (2 for zone survival, 31 for region survival).
    #[arg(long)]
    rtt_ms: f64,
}

/// How long and how wide a latency benchmark runs (`geo-commit`, `geo-homes`).
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Concurrent clients, each with its own session and rows.
    #[arg(long, default_value_t = 1)]
    pub(crate) clients: usize,
    /// Seconds measured per phase or class.
    #[arg(long, default_value_t = 20)]
    pub(crate) duration_s: u64,
    /// Seconds run before each measurement, not counted.
    #[arg(long, default_value_t = 3)]
    pub(crate) warmup_s: u64,
    /// Also write the results to this JSON file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Trust this CA (PEM, the `ca.crt` of `geodb cert`) for `https://`
    /// gateways: nodes started with certificates (logged in as `root` with
    /// `client.root.crt` beside it, if there).
    #[arg(long)]
    pub(crate) ca_cert: Option<PathBuf>,
}

const TABLE: &str = "geo_commit_bench";
const ISOLATION: &str = "serializable";
const UPDATE: &str = "UPDATE geo_commit_bench SET n = n + 1 WHERE id = $1";

/// One gateway per region and how long to run (`geo-homes`, `geo-global`).
#[derive(clap::Args)]
pub(crate) struct GatewayArgs {
    #[command(flatten)]
    pub(crate) gateways: Gateways,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// `--gateways`: one gateway per region, as `geodb dev` prints them.
#[derive(clap::Args)]
pub(crate) struct Gateways {
    /// One gateway per region, as `geodb dev` prints them (the first in the
    /// home region of the system and global shards).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7070,http://127.0.0.1:7071,http://127.0.0.1:7072"
    )]
    gateways: Vec<String>,
}

impl Gateways {
    pub(crate) fn len(&self) -> usize {
        self.gateways.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.gateways.is_empty()
    }

    /// The gateways' base URLs, without a trailing slash.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.gateways.iter().map(|url| url.trim_end_matches('/').to_string()).collect()
    }
}

/// Drops `table` and creates it again as `(home INT, id INT, n INT,
/// PRIMARY KEY (home, id))`, a home table, through `gateway`.
pub(crate) async fn recreate_home_table(client: &reqwest::Client, gateway: &str, table: &str) -> Result<(), String> {
    let url = format!("{gateway}/v1/sql");
    let _ = post(client, &url, &json!({"sql": format!("DROP TABLE IF EXISTS {table}")})).await;
    let create = format!("CREATE TABLE {table} (home INT, id INT, n INT, PRIMARY KEY (home, id))");
    post(client, &url, &json!({"sql": create})).await.map(drop).map_err(|failure| failure.message)
}

/// `GET url` as JSON.
pub(crate) async fn get_json(client: &reqwest::Client, url: &str) -> Result<Json, String> {
    let response = client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    response.json::<Json>().await.map_err(|e| format!("{url}: {e}"))
}

/// A failed API call: retryable ones (serialization failures, a leader
/// change) are counted and the transaction is tried again.
pub(crate) struct Failure {
    /// The SQLSTATE, if the server answered one.
    pub(crate) code: Option<String>,
    pub(crate) retryable: bool,
    pub(crate) message: String,
}

impl From<reqwest::Error> for Failure {
    fn from(error: reqwest::Error) -> Self {
        Failure { code: None, retryable: false, message: error.to_string() }
    }
}

pub(crate) async fn post(client: &reqwest::Client, url: &str, body: &Json) -> Result<Json, Failure> {
    let response = client.post(url).json(body).send().await?;
    let status = response.status();
    let answer: Json = response.json().await?;
    if status.is_success() {
        return Ok(answer);
    }
    let retryable = answer["error"]["retryable"].as_bool().unwrap_or(false);
    let code = answer["error"]["code"].as_str().map(str::to_string);
    Err(Failure { code, retryable, message: format!("{url}: {status}: {answer}") })
}

/// `clients` closed loops of one-statement transactions (`POST
/// {url}/v1/sql`, client `i` sending `body(i)`) for `warmup` unmeasured and
/// then `duration` measured: their latencies, and how many retryable
/// failures were tried again. Any other failure ends the run.
pub(crate) async fn closed_loops(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    body: impl Fn(usize) -> Json,
) -> Result<(Measurement, u64), String> {
    let measure_from = Instant::now() + warmup;
    let until = measure_from + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            let (client, url, body) = (client.clone(), format!("{url}/v1/sql"), body(id));
            tokio::spawn(async move {
                let mut times = Measurement::new("");
                let mut retries = 0;
                loop {
                    let started = Instant::now();
                    if started >= until {
                        return Ok::<_, String>((times, retries));
                    }
                    match post(&client, &url, &body).await {
                        Ok(_) if started >= measure_from => times.record(started.elapsed()),
                        Ok(_) => {}
                        Err(failure) if failure.retryable => retries += 1,
                        Err(failure) => return Err(failure.message),
                    }
                }
            })
        })
        .collect();
    let mut total = Measurement::new("");
    let mut retries = 0;
    for task in tasks {
        let (times, more) = task.await.map_err(|e| e.to_string())??;
        total.merge(&times);
        retries += more;
    }
    total.elapsed = measure_from.elapsed();
    Ok((total, retries))
}

pub fn run(args: Args) -> Result<(), String> {
    if !(args.rtt_ms.is_finite() && args.rtt_ms > 0.0) {
        return Err(format!("--rtt-ms {} must be a positive number of milliseconds", args.rtt_ms));
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<(), String> {
    let client = crate::http::client(args.run.ca_cert.as_deref())?;
    let url = args.url.trim_end_matches('/').to_string();
    let cluster = client
        .get(format!("{url}/v1/cluster"))
        .send()
        .await
        .map_err(|e| format!("{url}/v1/cluster: {e}"))?
        .json::<Json>()
        .await
        .map_err(|e| format!("{url}/v1/cluster: {e}"))?;
    let described = describe_cluster(&cluster);
    println!("{described}");

    let sql = |statement: String| json!({"sql": statement});
    let endpoint = format!("{url}/v1/sql");
    let _ = post(&client, &endpoint, &sql(format!("DROP TABLE IF EXISTS {TABLE}"))).await;
    post(&client, &endpoint, &sql(format!("CREATE TABLE {TABLE} (id INT PRIMARY KEY, n INT)")))
        .await
        .map_err(|failure| failure.message)?;
    let rows: Vec<String> = (0..args.run.clients).map(|id| format!("({id}, 0)")).collect();
    post(&client, &endpoint, &sql(format!("INSERT INTO {TABLE} VALUES {}", rows.join(", "))))
        .await
        .map_err(|failure| failure.message)?;

    let warmup = Duration::from_secs(args.run.warmup_s);
    let duration = Duration::from_secs(args.run.duration_s);
    eprintln!(
        "sessions: {} clients, {} s warm-up, {} s measured",
        args.run.clients, args.run.warmup_s, args.run.duration_s
    );
    let sessions = sessions_phase(&client, &url, args.run.clients, warmup, duration).await?;
    eprintln!(
        "one-shot: {} clients, {} s warm-up, {} s measured",
        args.run.clients, args.run.warmup_s, args.run.duration_s
    );
    let one_shot = one_shot_phase(&client, &url, args.run.clients, warmup, duration).await?;

    let clients = args.run.clients;
    let results = [
        (format!("COMMIT request (session), {clients} clients"), &sessions.commit),
        (format!("BEGIN request (read barrier), {clients} clients"), &sessions.begin),
        (format!("UPDATE request (in the transaction), {clients} clients"), &sessions.update),
        (format!("whole transaction BEGIN→COMMIT, {clients} clients"), &sessions.transaction),
        (format!("one-shot UPDATE (POST /v1/sql), {clients} clients"), &one_shot.transaction),
    ];
    println!();
    println!("lower bound: quorum round trip {} ms, isolation {ISOLATION}", args.rtt_ms);
    println!("{HEADER}");
    for (name, m) in &results {
        println!("{}", row(name, m, args.rtt_ms));
    }
    println!("retried transactions: sessions {}, one-shot {}", sessions.retries, one_shot.retries);

    if let Some(path) = &args.run.json {
        let document = json!({
            "url": url,
            "clients": args.run.clients,
            "duration_s": args.run.duration_s,
            "warmup_s": args.run.warmup_s,
            "rtt_ms": args.rtt_ms,
            "isolation": ISOLATION,
            "cluster": cluster,
            "results": results.iter().map(|(name, m)| result_json(name, m, args.rtt_ms)).collect::<Vec<Json>>(),
            "retries": {"sessions": sessions.retries, "one_shot": one_shot.retries},
        });
        crate::report::write_json(path, &document)?;
    }
    Ok(())
}

/// One line naming the gateway, the survival goal, the voters and the
/// leader, from `/v1/cluster`.
fn describe_cluster(cluster: &Json) -> String {
    let place = |id: &Json| -> String {
        let found = cluster["nodes"].as_array().and_then(|nodes| nodes.iter().find(|node| &node["id"] == id));
        match found {
            Some(node) => format!("{} ({}-{})", id, text(&node["region"]), text(&node["zone"])),
            None => id.to_string(),
        }
    };
    let list = |ids: &Json| -> String {
        ids.as_array().map(|ids| ids.iter().map(place).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    };
    let shard = &cluster["shards"][0];
    let mut line = format!(
        "cluster: gateway node {}; shard {} homed in {}, survival {}, voters [{}], learners [{}], leader node {}",
        place(&cluster["node"]),
        shard["id"],
        text(&shard["home"]),
        text(&shard["survival"]),
        list(&shard["voters"]),
        list(&shard["learners"]),
        place(&shard["leader"]),
    );
    if shard["leader"] != cluster["node"] {
        line.push_str(
            "\nnote: the gateway does not lead the shard; sessions live on the leader and every request pays the emulated gateway-to-leader round trip",
        );
    }
    line
}

fn text(value: &Json) -> String {
    match value {
        Json::String(text) => text.clone(),
        Json::Null => "?".into(),
        other => other.to_string(),
    }
}

/// What the session phase measured.
struct SessionTimes {
    begin: Measurement,
    update: Measurement,
    commit: Measurement,
    transaction: Measurement,
    retries: u64,
}

impl SessionTimes {
    fn new() -> Self {
        SessionTimes {
            begin: Measurement::new(""),
            update: Measurement::new(""),
            commit: Measurement::new(""),
            transaction: Measurement::new(""),
            retries: 0,
        }
    }

    fn merge(&mut self, other: &SessionTimes) {
        self.begin.merge(&other.begin);
        self.update.merge(&other.update);
        self.commit.merge(&other.commit);
        self.transaction.merge(&other.transaction);
        self.retries += other.retries;
    }

    fn set_elapsed(&mut self, elapsed: Duration) {
        for m in [&mut self.begin, &mut self.update, &mut self.commit, &mut self.transaction] {
            m.elapsed = elapsed;
        }
    }
}

/// Runs `clients` concurrent loops of `client(id, measure_from, until)`
/// after a shared warm-up, and merges what they measured.
async fn run_phase<F, Fut>(
    clients: usize,
    warmup: Duration,
    duration: Duration,
    client: F,
) -> Result<SessionTimes, String>
where
    F: Fn(i64, Instant, Instant) -> Fut,
    Fut: std::future::Future<Output = Result<SessionTimes, String>> + Send + 'static,
{
    let measure_from = Instant::now() + warmup;
    let until = measure_from + duration;
    let tasks: Vec<_> = (0..clients).map(|id| tokio::spawn(client(id as i64, measure_from, until))).collect();
    let mut total = SessionTimes::new();
    for task in tasks {
        total.merge(&task.await.map_err(|e| e.to_string())??);
    }
    total.set_elapsed(measure_from.elapsed());
    Ok(total)
}

async fn sessions_phase(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<SessionTimes, String> {
    let url = Arc::new(url.to_string());
    run_phase(clients, warmup, duration, |id, measure_from, until| {
        let (client, url) = (client.clone(), url.clone());
        async move { session_client(&client, &url, id, measure_from, until).await }
    })
    .await
}

async fn session_client(
    client: &reqwest::Client,
    url: &str,
    id: i64,
    measure_from: Instant,
    until: Instant,
) -> Result<SessionTimes, String> {
    let opened = post(client, &format!("{url}/v1/sessions"), &json!({"isolation": ISOLATION}))
        .await
        .map_err(|failure| failure.message)?;
    let session = opened["session"].as_str().ok_or_else(|| format!("no session id in {opened}"))?.to_string();
    let statement_url = format!("{url}/v1/sessions/{session}/sql");
    let statement = |sql: &str| json!({"sql": sql});
    let update = json!({"sql": UPDATE, "params": [id]});
    let mut times = SessionTimes::new();
    let outcome = loop {
        let started = Instant::now();
        if started >= until {
            break Ok(());
        }
        let attempt = async {
            post(client, &statement_url, &statement("BEGIN")).await?;
            let begun = Instant::now();
            post(client, &statement_url, &update).await?;
            let updated = Instant::now();
            post(client, &statement_url, &statement("COMMIT")).await?;
            Ok::<_, Failure>((begun, updated, Instant::now()))
        };
        match attempt.await {
            Ok((begun, updated, committed)) => {
                if started >= measure_from {
                    times.begin.record(begun - started);
                    times.update.record(updated - begun);
                    times.commit.record(committed - updated);
                    times.transaction.record(committed - started);
                }
            }
            Err(failure) if failure.retryable => {
                times.retries += 1;
                let _ = post(client, &statement_url, &statement("ROLLBACK")).await;
            }
            Err(failure) => break Err(failure.message),
        }
    };
    let _ = client.delete(format!("{url}/v1/sessions/{session}")).send().await;
    outcome.map(|()| times)
}

async fn one_shot_phase(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<SessionTimes, String> {
    let endpoint = Arc::new(format!("{url}/v1/sql"));
    run_phase(clients, warmup, duration, |id, measure_from, until| {
        let (client, endpoint) = (client.clone(), endpoint.clone());
        async move {
            let body = json!({"sql": UPDATE, "params": [id], "isolation": ISOLATION});
            let mut times = SessionTimes::new();
            loop {
                let started = Instant::now();
                if started >= until {
                    return Ok(times);
                }
                match post(&client, &endpoint, &body).await {
                    Ok(_) if started >= measure_from => times.transaction.record(started.elapsed()),
                    Ok(_) => {}
                    Err(failure) if failure.retryable => times.retries += 1,
                    Err(failure) => return Err(failure.message),
                }
            }
        }
    })
    .await
}

const HEADER: &str = "| operation | ops | ops/s | p50 ms | p90 ms | p99 ms | max ms | p50 ÷ RTT | p99 ÷ RTT |\n\
                      |---|---|---|---|---|---|---|---|---|";

fn ms(micros: f64) -> f64 {
    micros / 1_000.0
}

/// A Markdown row: latencies in ms, p50 and p99 as ratios to the bound.
fn row(name: &str, m: &Measurement, rtt_ms: f64) -> String {
    format!(
        "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}× | {:.2}× |",
        m.histogram.len(),
        m.ops_per_s(),
        ms(m.p(0.50)),
        ms(m.p(0.90)),
        ms(m.p(0.99)),
        ms(m.histogram.max() as f64),
        ms(m.p(0.50)) / rtt_ms,
        ms(m.p(0.99)) / rtt_ms,
    )
}

fn result_json(name: &str, m: &Measurement, rtt_ms: f64) -> Json {
    json!({
        "name": name,
        "ops": m.histogram.len(),
        "ops_per_s": m.ops_per_s(),
        "p50_us": m.p(0.50),
        "p90_us": m.p(0.90),
        "p99_us": m.p(0.99),
        "max_us": m.histogram.max(),
        "p50_over_rtt": ms(m.p(0.50)) / rtt_ms,
        "p99_over_rtt": ms(m.p(0.99)) / rtt_ms,
    })
}
