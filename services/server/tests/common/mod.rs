//! Starting real `geodb` processes and talking to them over HTTP.
//!
//! Every server binds 127.0.0.1 on a free port (`--http 127.0.0.1:0`) and
//! announces its address on the first line of stdout, as the README shows.
//! A [`Server`] is killed when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

/// A running `geodb` process.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    /// The PostgreSQL URL the server announced beside `url`, if any.
    pub pg_url: Option<String>,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
}

impl Server {
    /// `geodb dev --http 127.0.0.1:0 --data-dir <dir>`.
    pub fn dev(data_dir: &Path) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_geodb"));
        command
            .args(["dev", "--regions", "1", "--nodes-per-region", "1", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        Self::spawn(command, data_dir)
    }

    /// `geodb dev` as a six-node cluster in one process (three regions of
    /// two, region survival, latencies ÷50), reached through its eu-west
    /// gateway: every coordinated transaction and every write is forwarded
    /// to the shard leader in us-east and commits through Multi-Paxos.
    pub fn dev_cluster(data_dir: &Path) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_geodb"));
        command
            .args(["dev", "--regions", "3", "--nodes-per-region", "2", "--survival", "region"])
            .args(["--latency-scale", "0.02", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        Self::spawn_announcing(command, data_dir, "eu-west gateway: ")
    }

    /// `geodb dev` with three regions of three nodes (the standard
    /// latencies unless `args` say otherwise) and `args`, and the HTTP
    /// address of each region's gateway (us-east, us-central, eu-west).
    pub fn dev_regions(data_dir: &Path, args: &[&str]) -> (Server, Vec<String>) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_geodb"));
        command.args(["dev", "--http", "127.0.0.1:0"]).args(args).arg("--data-dir").arg(data_dir);
        let stderr = capture_stderr(&mut command, data_dir);
        let mut child = command.spawn().expect("start geodb");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut gateways = Vec::new();
        while gateways.len() < 3 {
            let line = lines.next().unwrap_or_else(|| exited(&stderr, "its gateways")).unwrap();
            if let Some(start) = line.find("http://") {
                gateways.push(line[start..].split_whitespace().next().unwrap().to_string());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let server = Server {
            child: Some(child),
            url: gateways[0].clone(),
            pg_url: None,
            data_dir: data_dir.to_path_buf(),
            client: reqwest::Client::new(),
        };
        (server, gateways)
    }

    /// `geodb start --config <file>` with the given TOML written to a file;
    /// `--insecure` unless the TOML gives a `certs_dir`.
    pub fn start(data_dir: &Path, extra_toml: &str) -> Server {
        let config = data_dir.with_extension("toml");
        std::fs::write(&config, format!("http = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{extra_toml}", data_dir.display()))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_geodb"));
        command.args(["start", "--config"]).arg(&config);
        if !extra_toml.contains("certs_dir") {
            command.arg("--insecure");
        }
        Self::spawn(command, data_dir)
    }

    /// Starts `command` (a `geodb` invocation) and waits for its address.
    pub fn spawn(command: Command, data_dir: &Path) -> Server {
        Self::spawn_announcing(command, data_dir, "")
    }

    /// Starts `command` and takes the address on the first line of stdout
    /// that holds `marker` and an `http://` address.
    fn spawn_announcing(mut command: Command, data_dir: &Path, marker: &str) -> Server {
        let stderr = capture_stderr(&mut command, data_dir);
        let mut child = command.spawn().expect("start geodb");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (url, pg_url) = loop {
            let line = lines.next().unwrap_or_else(|| exited(&stderr, "its address")).unwrap();
            if let Some(start) = line.find("http://").or_else(|| line.find("https://"))
                && line.contains(marker)
            {
                let rest = &line[start..];
                let pg = line.find("postgresql://").map(|at| {
                    line[at..]
                        .split(|c: char| c.is_whitespace() || c == ',' || c == ')' || c == ';')
                        .next()
                        .unwrap()
                        .to_string()
                });
                break (rest.split_whitespace().next().unwrap().to_string(), pg);
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child: Some(child), url, pg_url, data_dir: data_dir.to_path_buf(), client: reqwest::Client::new() }
    }

    /// A handle on a server another `Server` runs (to talk to it from
    /// another task); dropping it stops nothing.
    pub fn attach(url: &str) -> Server {
        Server {
            child: None,
            url: url.to_string(),
            pg_url: None,
            data_dir: PathBuf::new(),
            client: reqwest::Client::new(),
        }
    }

    /// Talks to the server with `client` (one that trusts its CA, say).
    pub fn with_client(mut self, client: reqwest::Client) -> Server {
        self.client = client;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGHUP: a node with certificates reloads them.
    pub fn hangup(&self) {
        assert_eq!(signal(self.pid(), libc::SIGHUP), 0);
    }

    /// SIGTERM, then waits for the process; returns its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let rc = signal(child.id(), libc::SIGTERM);
        assert_eq!(rc, 0);
        child.wait().unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, _, body) = self.post_with_headers(path, body).await;
        (status, body)
    }

    /// [`Server::post`], with the answer's headers.
    pub async fn post_with_headers(&self, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self.client.post(format!("{}{path}", self.url)).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self.client.post(format!("{}{path}", self.url)).body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(format!("{}{path}", self.url)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// One statement through `/v1/sql`; panics unless it succeeds. A
    /// `08006` (retryable: no leader yet, as while a cluster starts or a
    /// shard's leader changes under a loaded machine) is retried for up to
    /// 30 s, as the API tells clients to.
    pub async fn sql(&self, sql: &str, params: Value) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, body) = self.post("/v1/sql", json!({"sql": sql, "params": params})).await;
            if status == 503 && code(&body) == "08006" && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            assert_eq!(status, 200, "{sql}: {body}");
            return body["results"][0].clone();
        }
    }

    /// One statement through `/v1/sql`; returns (status, body).
    pub async fn try_sql(&self, sql: &str, params: Value) -> (u16, Value) {
        self.post("/v1/sql", json!({"sql": sql, "params": params})).await
    }

    pub async fn session(&self, isolation: &str) -> Session<'_> {
        let (status, body) = self.post("/v1/sessions", json!({"isolation": isolation})).await;
        assert_eq!(status, 201, "{body}");
        Session { server: self, id: body["session"].as_str().unwrap().to_string() }
    }
}

/// Pipes `command`'s stdout and sends its stderr (warnings and errors) to
/// a file beside `data_dir`, returned, so that a node that fails to start
/// says why in the test's failure.
fn capture_stderr(command: &mut Command, data_dir: &Path) -> PathBuf {
    let path = data_dir.with_extension("stderr");
    let stderr = std::fs::File::create(&path).map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    command.stdout(Stdio::piped()).stderr(stderr).env("RUST_LOG", "warn");
    path
}

/// Fails the test: geodb exited before it announced `what`; its stderr
/// (from [`capture_stderr`]) tells why.
fn exited(stderr: &Path, what: &str) -> ! {
    let said = std::fs::read_to_string(stderr).unwrap_or_default();
    let tail: Vec<&str> = said.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!("geodb exited before announcing {what}; its stderr ends:\n{}", tail.join("\n"))
}

/// Sends `signal` to `pid` with `kill(1)`, which keeps the workspace free
/// of `unsafe` (calling `libc::kill` directly would need it).
fn signal(pid: u32, signal: i32) -> i32 {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    if status.success() { 0 } else { -1 }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An interactive session.
pub struct Session<'a> {
    pub server: &'a Server,
    pub id: String,
}

impl Session<'_> {
    /// Runs a statement; returns (status, body).
    pub async fn run(&self, sql: &str) -> (u16, Value) {
        self.run_with(sql, json!([])).await
    }

    pub async fn run_with(&self, sql: &str, params: Value) -> (u16, Value) {
        self.server.post(&format!("/v1/sessions/{}/sql", self.id), json!({"sql": sql, "params": params})).await
    }

    /// Runs a statement that must succeed.
    pub async fn ok(&self, sql: &str) -> Value {
        let (status, body) = self.run(sql).await;
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }

    /// The single integer a statement answers (`rows[0][0]`), or None.
    pub async fn int(&self, sql: &str) -> Option<i64> {
        let body = self.ok(sql).await;
        body["rows"].get(0).and_then(|row| row[0].as_i64())
    }
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// The sum of a metric family's samples on a `/metrics` page.
pub fn metric_sum(metrics: &str, family: &str) -> f64 {
    metric_sum_where(metrics, family, "")
}

/// The sum of a metric family's samples whose line contains `label` (for
/// example `sync="false"`; empty: every sample).
pub fn metric_sum_where(metrics: &str, family: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.strip_prefix(family).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter(|line| line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A free port on `ip` (a loopback address of a test's own: see
/// [`write_three_node_configs`]).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind(format!("{ip}:0")).unwrap().local_addr().unwrap().port()
}

/// Writes `dir/n<id>.toml` for a cluster of three nodes in three zones of
/// us-east (zone survival: all three vote in every shard), node `id`
/// listening on `ip(id)` with ports picked free there, and data in
/// `dir/n<id>`; returns each node's HTTP and peer addresses. `ip` must give
/// addresses no other test of the binary binds (their servers bind
/// 127.0.0.1:0, which could take a port picked free before the node starts).
pub fn write_three_node_configs(dir: &Path, ip: impl Fn(u64) -> String) -> Vec<(String, String)> {
    let mut nodes = String::new();
    let mut addresses = Vec::new();
    for id in 1..=3u64 {
        let ip = ip(id);
        let (http, peer) = (format!("{ip}:{}", free_port(&ip)), format!("{ip}:{}", free_port(&ip)));
        let zone = ["a", "b", "c"][id as usize - 1];
        nodes.push_str(&format!(
            "[[cluster.nodes]]\nid = {id}\nregion = \"us-east\"\nzone = \"{zone}\"\nhttp = \"{http}\"\npeer = \"{peer}\"\n"
        ));
        addresses.push((http, peer));
    }
    for id in 1..=3u64 {
        let zone = ["a", "b", "c"][id as usize - 1];
        let config = format!(
            "node_id = {id}\nregion = \"us-east\"\nzone = \"{zone}\"\nhttp = \"{}\"\ndata_dir = \"{}\"\n\
             max_clock_offset_ms = 1\n[cluster]\nlatency_scale = 0\nheartbeat_interval_ms = 50\n\
             election_timeout_ms = 500\nshards_per_region = 1\n{nodes}",
            addresses[id as usize - 1].0,
            dir.join(format!("n{id}")).display()
        );
        std::fs::write(dir.join(format!("n{id}.toml")), config).unwrap();
    }
    addresses
}
