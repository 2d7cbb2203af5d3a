//! A real cluster: nine `geodb start --config` processes on 127.0.1.1–9,
//! three regions of three nodes (the standard topology, latencies ÷10),
//! one home shard per region, a snapshot every 20 applied entries, stored
//! and sent in chunks of 1 KiB. The
//! subject is us-east's home shard ([`SUBJECT`], zone survival: voters 1,
//! 2, 3; learners 4–9): the table `kv` is a home table whose every row has
//! locality key 0, homed in us-east by a first write through node 1, so
//! writes through the other regions' gateways all land in that shard.
//!
//! One scenario, in order (each step depends on the cluster the previous
//! one left):
//!
//! 1. a follower is killed and restarted while few writes happen: it
//!    catches up from the log (no snapshot installed);
//! 2. writes flow through the us-central gateway while the leader is
//!    SIGKILLed: a new leader serves within the election bound; a session
//!    open across the kill is not lost and resumes work on the shard, and
//!    a session on another region's shard goes on;
//! 3. the old leader restarts after the log was truncated: it catches up
//!    from a snapshot that travels in several chunks;
//! 4. every acknowledged write is present on every voter (and learner);
//! 5. the leader is cut off by fault rules: a write sent to it cannot
//!    commit, the majority elects another leader and keeps serving, and
//!    after healing the cut-off write is nowhere;
//! 6. a voter moves from us-east to us-central through the log (learner 4
//!    promoted, a us-east voter demoted); with the last other us-east voter
//!    stopped, commits need node 4's vote and get it;
//! 7. one node's clock jumps beyond the bound: it refuses coordinated work
//!    and keeps serving Read Committed reads; the others go on; it serves
//!    everything again once its clock is back.
//!
//! A second scenario on a fresh cluster (the two never run at once): a bank
//! whose accounts are homed in all three regions, transfers between homes
//! at snapshot and serializable through every region's gateway, auditors,
//! while a home shard's leader and then a gateway (a coordinator) are
//! SIGKILLed and eu-west is cut off ([`a_bank_across_three_homes_survives_kills_and_a_region_cut_off`]).
//! Another upgrades every node in turn, from the previous release to this
//! one, under the bank's transfers and a TPC-C-style workload (New-Order
//! and Payment on three warehouses, one homed in each region)
//! ([`a_rolling_upgrade_of_every_node_under_transfers_loses_no_commit`]).
//! A third, at the standard latencies with automatic rehoming on: a key
//! used only through eu-west moves there by itself
//! ([`a_key_used_only_from_eu_west_moves_there_by_itself`]).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use geodb_server::transport::{PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
use serde_json::{Value, json};

const REGIONS: [&str; 3] = ["us-east", "us-central", "eu-west"];
const NODES: u64 = 9;
/// us-east's home shard (shards 1 and 2 are the system and global shards).
const SUBJECT: u64 = 3;
const ELECTION_TIMEOUT_MS: u64 = 500;
/// Applied entries between snapshots: above what the first steps choose
/// (every election pads `COMMIT_WINDOW_SLOTS_MAX` no-ops), below what the
/// truncation step writes.
const SNAPSHOT_INTERVAL: u64 = 40;
const HEARTBEAT_MS: u64 = 50;
/// A follower stands after the election timeout plus up to as much jitter;
/// a node that is not the preferred leader waits one more timeout
/// (placement). Then one phase-1 round.
const ELECTION_BOUND: Duration = Duration::from_millis(3 * ELECTION_TIMEOUT_MS);
/// Slack for a loaded two-core machine running nine processes.
const SLACK: Duration = Duration::from_secs(3);

struct Cluster {
    dir: PathBuf,
    servers: Vec<Option<Server>>,
    client: reqwest::Client,
}

/// Which release a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Release {
    /// This build.
    Current,
    /// The release before it: the binary `GEODB_PREVIOUS_BINARY` names if
    /// set (built from an earlier commit), else this build pinned to the
    /// oldest wire version it speaks (`cluster.protocol_version_max`), which
    /// dials, accepts and answers as that release does. Both read and write
    /// the same data format.
    Previous,
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind(format!("{ip}:0")).unwrap().local_addr().unwrap().port()
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        Cluster::start_with(dir, 0.1, "")
    }

    /// Nine nodes with the latencies multiplied by `latency_scale`, and
    /// `tail` appended to every node's config.
    fn start_with(dir: &Path, latency_scale: f64, tail: &str) -> Cluster {
        Cluster::start_as(dir, latency_scale, tail, Release::Current)
    }

    /// [`Cluster::start_with`], every node running `release`.
    fn start_as(dir: &Path, latency_scale: f64, tail: &str, release: Release) -> Cluster {
        let mut nodes = String::new();
        let mut addresses = Vec::new();
        for id in 1..=NODES {
            // Not 127.0.0.1, where the other tests' servers take ports the
            // moment they are free, as these ones are until the node binds.
            let ip = format!("127.0.1.{id}");
            let (http, peer) = (format!("{ip}:{}", free_port(&ip)), format!("{ip}:{}", free_port(&ip)));
            let region = REGIONS[((id - 1) / 3) as usize];
            let zone = ["a", "b", "c"][((id - 1) % 3) as usize];
            nodes.push_str(&format!(
                "[[cluster.nodes]]\nid = {id}\nregion = \"{region}\"\nzone = \"{zone}\"\nhttp = \"{http}\"\npeer = \"{peer}\"\n"
            ));
            addresses.push((region, zone, http));
        }
        for (i, (region, zone, http)) in addresses.iter().enumerate() {
            let id = i as u64 + 1;
            // `pin` is the only line that differs: the previous release's
            // wire version, for this build standing in for that release.
            let config = |pin: &str| {
                format!(
                    "node_id = {id}\nregion = \"{region}\"\nzone = \"{zone}\"\nhttp = \"{http}\"\ndata_dir = \"{}\"\nmax_clock_offset_ms = 1\n\
                     [cluster]\n{pin}home = \"us-east\"\nlatency_scale = {latency_scale}\nheartbeat_interval_ms = {HEARTBEAT_MS}\n\
                     election_timeout_ms = {ELECTION_TIMEOUT_MS}\nsnapshot_interval_entries = {SNAPSHOT_INTERVAL}\nsnapshot_chunk_kib = 1\nadmin_faults = true\nshards_per_region = 1\n{nodes}{tail}",
                    dir.join(format!("n{id}")).display()
                )
            };
            std::fs::write(dir.join(format!("n{id}.toml")), config("")).unwrap();
            let pin = format!("protocol_version_max = {PROTOCOL_VERSION_MIN}\n");
            std::fs::write(dir.join(format!("n{id}-pinned.toml")), config(&pin)).unwrap();
        }
        let mut cluster = Cluster { dir: dir.to_path_buf(), servers: Vec::new(), client: reqwest::Client::new() };
        for id in 1..=NODES {
            let server = cluster.spawn_as(id, release);
            cluster.servers.push(Some(server));
        }
        cluster
    }

    fn spawn(&self, id: u64) -> Server {
        self.spawn_as(id, Release::Current)
    }

    fn spawn_as(&self, id: u64, release: Release) -> Server {
        let previous = std::env::var_os("GEODB_PREVIOUS_BINARY");
        let (binary, config) = match (release, previous) {
            (Release::Current, _) => (env!("CARGO_BIN_EXE_geodb").into(), format!("n{id}.toml")),
            (Release::Previous, Some(binary)) => (binary, format!("n{id}.toml")),
            (Release::Previous, None) => (env!("CARGO_BIN_EXE_geodb").into(), format!("n{id}-pinned.toml")),
        };
        let mut command = Command::new(binary);
        command.args(["start", "--insecure", "--config"]).arg(self.dir.join(config));
        Server::spawn(command, &self.dir.join(format!("n{id}")))
    }

    fn node(&self, id: u64) -> &Server {
        self.servers[(id - 1) as usize].as_ref().expect("node is running")
    }

    fn kill(&mut self, id: u64) {
        self.servers[(id - 1) as usize].take().expect("node is running").kill();
    }

    /// Stops node `id` as an operator does (SIGTERM); its exit status.
    fn stop(&mut self, id: u64) -> std::process::ExitStatus {
        self.servers[(id - 1) as usize].take().expect("node is running").terminate()
    }

    /// Waits until node `id` answers `/readyz` with 200.
    async fn wait_ready(&self, id: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let response = self.client.get(format!("{}/readyz", self.node(id).url)).send().await;
            if response.is_ok_and(|response| response.status().as_u16() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "node {id} was not ready within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn restart(&mut self, id: u64) {
        assert!(self.servers[(id - 1) as usize].is_none());
        let server = self.spawn(id);
        self.servers[(id - 1) as usize] = Some(server);
    }

    /// The subject shard as node `id` sees it.
    async fn shard(&self, id: u64) -> Value {
        let (status, body) = self.node(id).get("/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        let view: Value = serde_json::from_str(&body).unwrap();
        let shards = view["shards"].as_array().unwrap();
        shards.iter().find(|shard| shard["id"] == json!(SUBJECT)).cloned().unwrap_or_else(|| panic!("{body}"))
    }

    /// Waits until node `id`'s `/v1/cluster` says it speaks each wire
    /// version `wanted` names to each node (its own newest to itself), and
    /// `newest` at most.
    async fn wait_protocol_versions(&self, id: u64, wanted: &[(u64, u8)], newest: u8) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.node(id).get("/v1/cluster").await;
            assert_eq!(status, 200, "{body}");
            let view: Value = serde_json::from_str(&body).unwrap();
            let seen: Vec<(u64, Value)> = view["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|node| (node["id"].as_u64().unwrap(), node["protocol_version"].clone()))
                .collect();
            let expected: Vec<(u64, Value)> = wanted.iter().map(|(peer, version)| (*peer, json!(version))).collect();
            if seen == expected {
                assert_eq!(view["versions"]["protocol"]["newest"], json!(newest), "{body}");
                return;
            }
            assert!(Instant::now() < deadline, "node {id} speaks {seen:?}, not {expected:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Changes the subject shard's membership through node `via` (which
    /// forwards it to the leader). A change caught by a leader change (the
    /// preferred leader taking over after a heal) answers 08006 or 08007:
    /// then it is retried unless it took effect anyway.
    async fn reconfigure(&self, via: u64, wanted: Value) {
        let sorted = |value: &Value| {
            let mut ids: Vec<u64> = value.as_array().unwrap().iter().map(|id| id.as_u64().unwrap()).collect();
            ids.sort_unstable();
            ids
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.node(via).post("/v1/admin/membership", wanted.clone()).await;
            if status == 200 {
                return;
            }
            assert!(matches!(common::code(&body), "08006" | "08007"), "{status} {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let shard = self.shard(via).await;
            if sorted(&shard["voters"]) == sorted(&wanted["voters"])
                && sorted(&shard["learners"]) == sorted(&wanted["learners"])
            {
                return;
            }
            assert!(Instant::now() < deadline, "the membership change never took effect: {body}");
        }
    }

    /// Posts a membership change through `via` and returns the first answer
    /// that is not a retryable `08006` (a leader that changed while the
    /// request was on its way), as a client following the API would.
    async fn membership_answer(&self, via: u64, body: Value) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, answer) = self.node(via).post("/v1/admin/membership", body.clone()).await;
            if common::code(&answer) != "08006" || Instant::now() > deadline {
                return (status, answer);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Opens a serializable session on node `id`.
    async fn open_session(&self, id: u64) -> String {
        let (status, body) = self.node(id).post("/v1/sessions", json!({"isolation": "serializable"})).await;
        assert_eq!(status, 201, "{body}");
        body["session"].as_str().unwrap().to_string()
    }

    /// One statement in session `session` through node `id`.
    async fn in_session(&self, id: u64, session: &str, sql: &str, params: Value) -> (u16, Value) {
        self.node(id).post(&format!("/v1/sessions/{session}/sql"), json!({"sql": sql, "params": params})).await
    }

    /// Node `id`'s `/v1/cluster`.
    async fn view(&self, id: u64) -> Value {
        let (status, body) = self.node(id).get("/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until node `id` judges its clock within the bound (or not);
    /// returns its `/v1/cluster`. Peers ping each other every second.
    async fn wait_clock(&self, id: u64, within_bound: bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let view = self.view(id).await;
            if view["clock"]["within_bound"] == json!(within_bound) {
                return view;
            }
            assert!(Instant::now() < deadline, "node {id} never judged its clock within_bound={within_bound}: {view}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `via` names a leader other than `not`; returns it.
    async fn wait_for_leader(&self, via: u64, not: Option<u64>, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.shard(via).await["leader"].as_u64()
                && Some(leader) != not
            {
                return leader;
            }
            assert!(Instant::now() < deadline, "no new leader seen by node {via} within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every node names the same leader of every shard;
    /// returns the subject shard's.
    async fn wait_for_agreed_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders: std::collections::BTreeMap<u64, BTreeSet<Option<u64>>> = Default::default();
            for id in 1..=NODES {
                let (_, body) = self.node(id).get("/v1/cluster").await;
                let view: Value = serde_json::from_str(&body).unwrap();
                for shard in view["shards"].as_array().unwrap() {
                    leaders.entry(shard["id"].as_u64().unwrap()).or_default().insert(shard["leader"].as_u64());
                }
            }
            let agreed = leaders.values().all(|seen| matches!(seen.iter().collect::<Vec<_>>()[..], [Some(_)]));
            if agreed && let Some(subject) = leaders.get(&SUBJECT) {
                return subject.iter().next().copied().flatten().unwrap();
            }
            assert!(Instant::now() < deadline, "the nodes did not agree on a leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    async fn wait_applied(&self, id: u64, index: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.shard(id).await["applied_index"].as_u64().unwrap_or(0) < index {
            assert!(Instant::now() < deadline, "node {id} did not apply up to {index}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One statement at node `id`, run there and nowhere else (a request
    /// marked as already forwarded is never forwarded again).
    async fn local(&self, id: u64, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/v1/sql", self.node(id).url))
            .header("x-geodb-forwarded-by", "0")
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The keys node `id` holds, read from its own replica.
    async fn keys_at(&self, id: u64) -> BTreeSet<i64> {
        let (status, body) = self.local(id, json!({"sql": "SELECT k FROM kv", "isolation": "read committed"})).await;
        assert_eq!(status, 200, "node {id}: {body}");
        body["results"][0]["rows"].as_array().unwrap().iter().map(|row| row[0].as_i64().unwrap()).collect()
    }

    async fn set_faults(&self, rules: Value) {
        for server in self.servers.iter().flatten() {
            let response =
                self.client.put(format!("{}/v1/admin/faults", server.url)).json(&rules).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
    }
}

/// Acknowledged and unknown-outcome writes, through one gateway.
#[derive(Default)]
struct Writes {
    acked: BTreeSet<i64>,
    unknown: BTreeSet<i64>,
    next: i64,
}

impl Writes {
    /// Inserts the next key through `via`; returns whether it was acknowledged.
    async fn one(&mut self, cluster: &Cluster, via: u64) -> bool {
        let key = self.next;
        self.next += 1;
        let (status, body) = cluster
            .node(via)
            .post("/v1/sql", json!({"sql": "INSERT INTO kv VALUES (0, $1, $2)", "params": [key, key]}))
            .await;
        match (status, common::code(&body)) {
            (200, _) => {
                self.acked.insert(key);
                true
            }
            (_, "08007") => {
                self.unknown.insert(key);
                false
            }
            (503, "08006") => false,
            _ => panic!("write {key}: {status} {body}"),
        }
    }

    /// Writes until `count` more are acknowledged.
    async fn acked(&mut self, cluster: &Cluster, via: u64, count: usize) {
        let target = self.acked.len() + count;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked.len() < target {
            assert!(Instant::now() < deadline, "writes through node {via} stopped being acknowledged");
            if !self.one(cluster, via).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_region_cluster_survives_leader_loss_restarts_and_partitions() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let leader = cluster.wait_for_agreed_leader(Duration::from_secs(20)).await;
    assert!((1..=3).contains(&leader), "zone survival keeps the leader in us-east, got node {leader}");
    let shard = cluster.shard(5).await;
    assert_eq!(shard["voters"], json!([1, 2, 3]));
    assert_eq!(shard["learners"], json!([4, 5, 6, 7, 8, 9]));
    cluster.node(7).sql("CREATE TABLE kv (home INT, k INT, v INT, PRIMARY KEY (home, k))", json!([])).await;
    cluster.node(7).sql("CREATE TABLE other (home INT, k INT, v INT, PRIMARY KEY (home, k))", json!([])).await;
    let mut writes = Writes::default();
    // The first write homes locality key 0 where its gateway is.
    writes.acked(&cluster, 1, 1).await;
    let (status, body) = cluster.node(8).get("/v1/homes/0").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["region"], json!("us-east"), "{body}");

    // 1. A follower misses a few writes and catches up from the log.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(follower);
    writes.acked(&cluster, 4, 5).await;
    cluster.restart(follower);
    let chosen = cluster.shard(leader).await["chosen_index"].as_u64().unwrap();
    assert!(
        chosen < SNAPSHOT_INTERVAL,
        "the log was truncated already (chosen {chosen}): the step would not test the log path"
    );
    cluster.wait_applied(follower, chosen).await;
    assert_eq!(cluster.shard(follower).await["snapshots_installed"], json!(0), "caught up from the log");
    assert!(cluster.keys_at(follower).await.is_superset(&writes.acked));

    // 2. SIGKILL the leader while writing through us-central, with sessions
    //    open across the kill: one in a transaction on the subject shard
    //    (through us-central), one on eu-west's home shard (locality key 1
    //    of table `other`, homed there by its first write through node 7).
    cluster.node(7).sql("INSERT INTO other VALUES (1, 0, 0)", json!([])).await;
    let subject = cluster.open_session(4).await;
    let elsewhere = cluster.open_session(7).await;
    cluster.in_session(4, &subject, "BEGIN", json!([])).await;
    let (status, body) = cluster.in_session(4, &subject, "SELECT count(*) FROM kv", json!([])).await;
    assert_eq!(status, 200, "{body}");
    let open_key = 2_000_000;
    let (status, body) = cluster.in_session(4, &subject, "INSERT INTO kv VALUES (0, $1, 0)", json!([open_key])).await;
    assert_eq!(status, 200, "{body}");
    writes.acked(&cluster, 4, 10).await;
    cluster.kill(leader);
    let killed = Instant::now();
    // The other shard's session goes on.
    for k in 1..=5 {
        let (status, body) = cluster.in_session(7, &elsewhere, "INSERT INTO other VALUES (1, $1, 0)", json!([k])).await;
        assert_eq!(status, 200, "a shard whose leader lives did not go on: {body}");
    }
    // The open transaction ends, committed or not (a clear answer); the
    // session is not lost, and resumes work on the subject shard once it
    // has a leader again.
    let (status, body) = cluster.in_session(4, &subject, "COMMIT", json!([])).await;
    match (status, common::code(&body)) {
        (200, _) => drop(writes.acked.insert(open_key)),
        (_, "08007") => drop(writes.unknown.insert(open_key)),
        (_, "08006" | "40001") => {}
        _ => panic!("COMMIT across the kill: {status} {body}"),
    }
    let mut key = open_key;
    loop {
        key += 1;
        let (status, body) = cluster.in_session(4, &subject, "INSERT INTO kv VALUES (0, $1, 0)", json!([key])).await;
        match (status, common::code(&body)) {
            (200, _) => {
                writes.acked.insert(key);
                break;
            }
            (_, "08007") => drop(writes.unknown.insert(key)),
            (_, "08006" | "40001") => {}
            _ => panic!("the session did not resume: {status} {body}"),
        }
        assert!(killed.elapsed() <= ELECTION_BOUND + SLACK, "the session did not resume in time: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = killed.elapsed();
    let new_leader = cluster.wait_for_leader(4, Some(leader), ELECTION_BOUND + SLACK).await;
    writes.acked(&cluster, 4, 1).await;
    let failover = killed.elapsed();
    assert!((1..=3).contains(&new_leader) && new_leader != leader);
    assert!(failover <= ELECTION_BOUND + SLACK, "failover took {failover:?}");
    eprintln!(
        "failover to node {new_leader} served a write {failover:?} after the kill (the open session at {resumed:?})"
    );
    let (status, body) = cluster.in_session(7, &elsewhere, "SELECT count(*) FROM other", json!([])).await;
    assert_eq!((status, &body["rows"][0][0]), (200, &json!(6)), "{body}");
    // The other nodes see the killed one as not alive (its connections closed).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = cluster.node(4).get("/v1/cluster").await;
        let view: Value = serde_json::from_str(&body).unwrap();
        if view["nodes"][(leader - 1) as usize]["alive"] == json!(false) {
            assert_eq!(view["nodes"][(new_leader - 1) as usize]["alive"], json!(true));
            break;
        }
        assert!(Instant::now() < deadline, "node {leader} still shown alive: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 3. Enough writes to truncate the log past the old leader, which then
    //    restarts and needs a snapshot.
    writes.acked(&cluster, 4, 50).await;
    let snapshot_index = cluster.shard(new_leader).await["snapshot_index"].as_u64().unwrap();
    assert!(snapshot_index > 20, "the leader truncated its log (snapshot at {snapshot_index})");
    cluster.restart(leader);
    let chosen = cluster.shard(new_leader).await["chosen_index"].as_u64().unwrap();
    cluster.wait_applied(leader, chosen).await;
    let restarted = cluster.shard(leader).await;
    assert!(restarted["snapshots_installed"].as_u64().unwrap() >= 1, "caught up from a snapshot");
    let chunks = restarted["snapshot_chunks"].as_u64().unwrap();
    assert!(chunks >= 3, "the snapshot is larger than a chunk, and travelled in {chunks} chunks");

    // 4. Every acknowledged write on every replica; all replicas agree.
    let chosen = cluster.shard(new_leader).await["chosen_index"].as_u64().unwrap();
    let mut seen: Option<BTreeSet<i64>> = None;
    for id in 1..=NODES {
        cluster.wait_applied(id, chosen).await;
        let keys = cluster.keys_at(id).await;
        let missing: Vec<&i64> = writes.acked.difference(&keys).collect();
        assert!(missing.is_empty(), "node {id} lacks acknowledged writes {missing:?}");
        let invented: Vec<&i64> =
            keys.iter().filter(|key| !writes.acked.contains(key) && !writes.unknown.contains(key)).collect();
        assert!(invented.is_empty(), "node {id} holds writes never sent {invented:?}");
        if let Some(seen) = &seen {
            assert_eq!(seen, &keys, "node {id} differs from node 1");
        }
        seen = Some(keys);
    }

    // 5. Cut the leader off: it cannot commit; the majority goes on.
    let isolated = new_leader;
    cluster.set_faults(json!([{"kind": "isolate", "node": isolated}])).await;
    let cut_off_key = 1_000_000;
    let (status, body) =
        cluster.local(isolated, json!({"sql": "INSERT INTO kv VALUES (0, $1, 0)", "params": [cut_off_key]})).await;
    assert_ne!(status, 200, "a cut-off leader committed: {body}");
    assert!(matches!(common::code(&body), "08006" | "08007"), "{status} {body}");
    let majority_leader = cluster.wait_for_leader(4, Some(isolated), Duration::from_secs(10)).await;
    assert!(majority_leader != isolated);
    writes.acked(&cluster, 4, 5).await;
    cluster.set_faults(json!([])).await;
    let chosen = cluster.shard(majority_leader).await["chosen_index"].as_u64().unwrap();
    for id in 1..=NODES {
        cluster.wait_applied(id, chosen).await;
        let keys = cluster.keys_at(id).await;
        assert!(!keys.contains(&cut_off_key), "node {id} holds the write of the cut-off leader");
        assert!(keys.is_superset(&writes.acked), "node {id} lacks acknowledged writes");
    }

    // 5b. Answers from the leader to the us-central gateway are lost (a
    //     one-way cut, as behind a half-open connection): a commit the
    //     gateway sent there is given up once the leader has been silent
    //     for SILENT_PEER_AFTER (3 s), as "outcome unknown", well before
    //     the 10 s call bound; after healing, the session goes on.
    //     (The transaction read every home shard, so it commits in two
    //     phases: the lost prepare aborts it.)
    let session = cluster.open_session(4).await;
    cluster.in_session(4, &session, "BEGIN", json!([])).await;
    let (status, body) = cluster.in_session(4, &session, "SELECT count(*) FROM kv", json!([])).await;
    assert_eq!(status, 200, "{body}");
    let silent_key = 3_000_000;
    let (status, body) = cluster.in_session(4, &session, "INSERT INTO kv VALUES (0, $1, 0)", json!([silent_key])).await;
    assert_eq!(status, 200, "{body}");
    // Whichever of the three voters leads the shard now (the node cut off
    // in 5a may have been handed the lead back since), its answers are lost.
    let silent: Vec<Value> = (1..=3).map(|from| json!({"kind": "drop_link", "from": from, "to": 4})).collect();
    cluster.set_faults(Value::Array(silent)).await;
    let sent = Instant::now();
    let (status, body) = cluster.in_session(4, &session, "COMMIT", json!([])).await;
    let waited = sent.elapsed();
    // One shard: its outcome is unknown; several (the count read every
    // home shard): a lost prepare aborts the transaction.
    assert!(matches!((status, common::code(&body)), (503, "08007") | (409, "40001")), "{status} {body}");
    assert!(waited < Duration::from_secs(8), "the commit waited {waited:?} for a silent leader");
    eprintln!("a commit sent to a leader gone silent answered {} after {waited:?}", common::code(&body));
    writes.unknown.insert(silent_key);
    cluster.set_faults(json!([])).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let key = writes.next;
        writes.next += 1;
        let (status, body) = cluster.in_session(4, &session, "INSERT INTO kv VALUES (0, $1, 0)", json!([key])).await;
        match (status, common::code(&body)) {
            (200, _) => {
                writes.acked.insert(key);
                break;
            }
            (_, "08007") => drop(writes.unknown.insert(key)),
            (_, "08006" | "40001") => {}
            _ => panic!("the session did not go on after healing: {status} {body}"),
        }
        assert!(Instant::now() < deadline, "the session did not go on after healing: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 6. Move a voter from us-east to us-central through the log: promote
    //    learner 4, then demote a us-east follower. Then stop the third
    //    us-east voter: commits now need node 4's vote, and get it.
    // The lead may have been handed back to the node cut off in 5a.
    let leader = cluster.wait_for_agreed_leader(Duration::from_secs(20)).await;
    let removed = if leader == 2 { 3 } else { 2 };
    let stopped = (1..=3).find(|id| *id != leader && *id != removed).unwrap();
    let promote = json!({"shard": SUBJECT, "voters": [1, 2, 3, 4], "learners": [5, 6, 7, 8, 9]});
    cluster.reconfigure(7, promote).await;
    let mut voters: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|id| *id != removed).collect();
    let mut learners = vec![removed, 5, 6, 7, 8, 9];
    let demote = json!({"shard": SUBJECT, "voters": voters, "learners": learners});
    cluster.reconfigure(7, demote).await;
    // Two voters at once is refused.
    let (status, body) =
        cluster.membership_answer(7, json!({"shard": SUBJECT, "voters": [4], "learners": [1, 2, 3]})).await;
    assert_eq!((status, common::code(&body)), (400, "22023"), "{body}");
    // So is a shard the map does not have, and a body that names none.
    let (status, body) = cluster.membership_answer(7, json!({"shard": 99, "voters": [1], "learners": []})).await;
    assert_eq!((status, common::code(&body)), (400, "22023"), "{body}");
    let (status, body) = cluster.membership_answer(7, json!({"voters": [1], "learners": []})).await;
    assert_eq!((status, common::code(&body)), (400, "22023"), "{body}");
    cluster.kill(stopped);
    writes.acked(&cluster, 7, 5).await;
    let chosen = cluster.shard(leader).await["chosen_index"].as_u64().unwrap();
    cluster.wait_applied(4, chosen).await;
    let shard = cluster.shard(4).await;
    let sorted = |value: &Value| {
        let mut ids: Vec<u64> = value.as_array().unwrap().iter().map(|id| id.as_u64().unwrap()).collect();
        ids.sort_unstable();
        ids
    };
    voters.sort_unstable();
    learners.sort_unstable();
    assert_eq!((sorted(&shard["voters"]), sorted(&shard["learners"])), (voters, learners));
    assert!(cluster.keys_at(4).await.is_superset(&writes.acked), "the new voter holds every acknowledged write");

    // 7. A clock beyond the bound: node 8's clock jumps 1.7 s ahead (ε is
    //    1 ms). Its peers measure it; it finds itself beyond the bound of
    //    most of them and refuses snapshot and serializable work with 08006,
    //    saying why, while it still answers Read Committed reads and says
    //    so in /v1/cluster, /metrics and /readyz. The other gateways go on.
    //    Once its clock is back it serves every level again.
    let skewed = 8;
    cluster.set_faults(json!([{"kind": "clock_skew", "node": skewed, "offset_ms": 1700}])).await;
    let view = cluster.wait_clock(skewed, false).await;
    assert!(view["clock"]["offset_beyond_bound_ms"].as_f64().unwrap() > 1_000.0, "{view}");
    for level in ["serializable", "snapshot"] {
        let (status, body) = cluster.local(skewed, json!({"sql": "SELECT count(*) FROM kv", "isolation": level})).await;
        assert_eq!((status, common::code(&body)), (503, "08006"), "{level}: {body}");
        // Refused by the node itself, naming the cause and the setting.
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("this node's clock") && message.contains("max_clock_offset_ms"), "{body}");
    }
    assert!(cluster.keys_at(skewed).await.is_superset(&writes.acked), "Read Committed reads go on");
    let (_, metrics) = cluster.node(skewed).get("/metrics").await;
    let gauge = format!("geodb_clock_unsynchronized{{node=\"{skewed}\"}} 1");
    assert!(metrics.lines().any(|line| line == gauge), "{metrics}");
    let (status, ready) = cluster.node(skewed).get("/readyz").await;
    assert!(status == 200 && ready.contains("Read Committed and MAV only"), "{status} {ready}");
    // It leads nothing while its clock is off (its timestamps, highly
    // available writes' included, would drag the others' clocks along):
    // the shards it led are handed to other voters.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = cluster.view(7).await;
        let shards = view["shards"].as_array().unwrap();
        let led_elsewhere = shards.iter().all(|shard| shard["leader"].as_u64().is_some_and(|leader| leader != skewed));
        if led_elsewhere {
            break;
        }
        assert!(Instant::now() < deadline, "node {skewed} still leads, or a shard has no leader: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Node 7 measures node 8 ahead at its next ping (once a second).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = cluster.view(7).await;
        assert_eq!(view["clock"]["within_bound"], json!(true), "one clock off leaves the others in: {view}");
        let seen = &view["nodes"][(skewed - 1) as usize]["clock_offset_ms"];
        if seen.as_f64().is_some_and(|ms| ms > 1_000.0) {
            break;
        }
        assert!(Instant::now() < deadline, "node 7 never measured node {skewed} ahead: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writes.acked(&cluster, 7, 3).await;
    cluster.set_faults(json!([])).await;
    cluster.wait_clock(skewed, true).await;
    // Its hybrid clock ran ahead while skewed; until real time catches up,
    // shards refuse its timestamps as too far ahead (08006, retryable).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) =
            cluster.local(skewed, json!({"sql": "SELECT count(*) FROM kv", "isolation": "serializable"})).await;
        if status == 200 {
            break;
        }
        assert_eq!(common::code(&body), "08006", "{body}");
        assert!(Instant::now() < deadline, "node {skewed} never served serializable work again: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The two scenarios run nine processes each: one at a time.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// When a workload stops: when told (never by the clock, so that a slow
/// machine does less per second, not less in all).
#[derive(Clone)]
struct Until(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Until {
    fn reached(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What became of the transfers a client sent.
#[derive(Default)]
struct Outcomes {
    acked: BTreeSet<i64>,
    unknown: BTreeSet<i64>,
    refused: usize,
}

/// A deterministic stream of numbers below each bound asked, seeded by
/// `seed` (a client's first id).
fn numbers(seed: i64) -> impl FnMut(i64) -> i64 {
    let mut seed = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move |bound: i64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) % bound as u64) as i64
    }
}

/// Sends transfers through `url` until `until`: each moves 1..=5 from an
/// account of one home to an account of another, and records itself in
/// `ledger` at the source's home, all in one transaction (a batch), at
/// serializable and snapshot in turn.
async fn transfer_until(client: reqwest::Client, url: String, first_id: i64, until: Until) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let mut next = numbers(first_id);
    let mut id = first_id;
    while !until.reached() {
        id += 1;
        let from_home = 1 + next(3);
        let to_home = 1 + (from_home + next(2)) % 3;
        let (from, to, amount) = (next(BANK_ACCOUNTS), next(BANK_ACCOUNTS), 1 + next(5));
        let isolation = if id % 2 == 0 { "serializable" } else { "snapshot" };
        let body = json!({"statements": [
            {"sql": "UPDATE accounts SET balance = balance - $1 WHERE home = $2 AND id = $3", "params": [amount, from_home, from]},
            {"sql": "UPDATE accounts SET balance = balance + $1 WHERE home = $2 AND id = $3", "params": [amount, to_home, to]},
            {"sql": "INSERT INTO ledger VALUES ($1, $2, $3, $4, $5, $6)", "params": [from_home, id, from, to_home, to, amount]},
        ], "isolation": isolation});
        outcomes.record(id, send(&client, &url, &body, "transfer").await).await;
    }
    outcomes
}

/// What became of one transaction a client sent.
enum Sent {
    Acked,
    /// The answer was lost (the node died) or said `08007`.
    Unknown,
    /// A retryable refusal (`40001`, `08006`, `53000`).
    Refused,
    /// The node did not take the connection (it is restarting).
    Unreachable,
}

/// Sends one `/v1/sql` transaction; any answer but success, a retryable
/// refusal and an unknown outcome fails the test.
async fn send(client: &reqwest::Client, url: &str, body: &Value, what: &str) -> Sent {
    let sent = client.post(format!("{url}/v1/sql")).json(body).timeout(Duration::from_secs(30)).send().await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let answer = response.json::<Value>().await.unwrap_or(Value::Null);
            match (status, common::code(&answer)) {
                (200, _) => Sent::Acked,
                (_, "08007") => Sent::Unknown,
                (_, "40001" | "08006" | "53000") => Sent::Refused,
                (_, other) => panic!("{what} through {url}: {status} {other}: {answer} (sent {body})"),
            }
        }
        Err(error) if error.is_connect() => Sent::Unreachable,
        // Sent, then the node died or the answer never came.
        Err(_) => Sent::Unknown,
    }
}

impl Outcomes {
    async fn record(&mut self, id: i64, sent: Sent) {
        match sent {
            Sent::Acked => drop(self.acked.insert(id)),
            Sent::Unknown => drop(self.unknown.insert(id)),
            Sent::Refused => self.refused += 1,
            Sent::Unreachable => {
                self.refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sums every balance through `url` until `until`, at serializable and
/// snapshot in turn; every sum answered must be the opening total.
async fn audit_until(client: reqwest::Client, url: String, until: Until) -> usize {
    let mut audits = 0;
    let mut round = 0;
    while !until.reached() {
        round += 1;
        let isolation = if round % 2 == 0 { "serializable" } else { "snapshot" };
        let body = json!({"sql": "SELECT sum(balance) FROM accounts", "isolation": isolation});
        if let Ok(response) =
            client.post(format!("{url}/v1/sql")).json(&body).timeout(Duration::from_secs(30)).send().await
            && response.status().as_u16() == 200
        {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["results"][0]["rows"][0][0], json!(BANK_TOTAL), "an audit through {url} at {isolation}");
            audits += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    audits
}

/// Rehomes homes 1–3 in turn, each to the next region, through a gateway
/// of each region in turn, every `every` until `until`, counting in `moved`
/// those that moved the key. A rehome may fail while nodes die and a region is cut off (a
/// retryable or unavailable answer); it never leaves a key half moved.
async fn rehome_until(
    client: reqwest::Client,
    urls: Vec<String>,
    every: Duration,
    until: Until,
    moved: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut round = 0usize;
    while !until.reached() {
        round += 1;
        let (home, region) = (1 + round % 3, REGIONS[(round / 3 + round) % 3]);
        let url = &urls[round % urls.len()];
        let body = json!({"key": home, "region": region});
        let sent =
            client.post(format!("{url}/v1/admin/rehome")).json(&body).timeout(Duration::from_secs(30)).send().await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            match status {
                200 if answer["from"] != answer["to"] => {
                    moved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                200 => {}
                _ => assert!(
                    matches!(common::code(&answer), "40001" | "08006" | "08007" | "53000"),
                    "rehome of {home} to {region} through {url}: {status} {answer}"
                ),
            }
        }
        tokio::time::sleep(every).await;
    }
}

const BANK_ACCOUNTS: i64 = 4;
const BANK_OPENING: i64 = 100;
const BANK_TOTAL: i64 = 3 * BANK_ACCOUNTS * BANK_OPENING;

/// A fresh cluster whose shards all have agreed leaders, with the bank
/// open ([`open_bank`]).
async fn bank_cluster(dir: &Path) -> Cluster {
    bank_cluster_with(dir, "").await
}

/// [`bank_cluster`] with `tail` appended to every node's config.
async fn bank_cluster_with(dir: &Path, tail: &str) -> Cluster {
    bank_cluster_as(dir, tail, Release::Current).await
}

/// [`bank_cluster_with`], every node running `release`.
async fn bank_cluster_as(dir: &Path, tail: &str, release: Release) -> Cluster {
    let cluster = Cluster::start_as(dir, 0.1, tail, release);
    cluster.wait_for_agreed_leader(Duration::from_secs(30)).await;
    open_bank(&cluster).await;
    cluster
}

/// Creates the bank: `accounts` homed in all three regions (home 1 by a
/// first write through us-east, 2 through us-central, 3 through eu-west),
/// each account opened with [`BANK_OPENING`], and an empty `ledger`.
async fn open_bank(cluster: &Cluster) {
    cluster
        .node(1)
        .sql("CREATE TABLE accounts (home INT, id INT, balance INT, PRIMARY KEY (home, id))", json!([]))
        .await;
    cluster
        .node(1)
        .sql(
            "CREATE TABLE ledger (home INT, id INT, from_id INT, to_home INT, to_id INT, amount INT, PRIMARY KEY (home, id))",
            json!([]),
        )
        .await;
    for (home, gateway, region) in [(1, 1, "us-east"), (2, 4, "us-central"), (3, 7, "eu-west")] {
        for id in 0..BANK_ACCOUNTS {
            cluster
                .node(gateway)
                .sql("INSERT INTO accounts VALUES ($1, $2, $3)", json!([home, id, BANK_OPENING]))
                .await;
        }
        let (_, body) = cluster.node(8).get(&format!("/v1/homes/{home}")).await;
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["region"], json!(region), "{body}");
    }
}

type Clients = Vec<tokio::task::JoinHandle<Outcomes>>;
type Auditors = Vec<tokio::task::JoinHandle<usize>>;

/// Transfers through the gateway of each region (nodes 1, 4, 7) and
/// auditors through us-east's and us-central's, until `until`.
fn run_bank(cluster: &Cluster, until: Until) -> (Clients, Auditors) {
    let mut clients = Vec::new();
    for (n, gateway) in [1u64, 4, 7].into_iter().enumerate() {
        let url = cluster.node(gateway).url.clone();
        let first_id = (n as i64 + 1) * 1_000_000;
        clients.push(tokio::spawn(transfer_until(cluster.client.clone(), url, first_id, until.clone())));
    }
    let auditors = [1u64, 4]
        .into_iter()
        .map(|gateway| {
            let url = cluster.node(gateway).url.clone();
            tokio::spawn(audit_until(cluster.client.clone(), url, until.clone()))
        })
        .collect();
    (clients, auditors)
}

/// The transfers acknowledged, of unknown outcome and refused, and the
/// audits, once every client and auditor is done.
async fn bank_outcomes(clients: Clients, auditors: Auditors) -> (BTreeSet<i64>, BTreeSet<i64>, usize, usize) {
    let mut acked = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    let mut refused = 0;
    for client in clients {
        let outcomes = client.await.unwrap();
        acked.extend(outcomes.acked);
        unknown.extend(outcomes.unknown);
        refused += outcomes.refused;
    }
    let mut audits = 0;
    for auditor in auditors {
        audits += auditor.await.unwrap();
    }
    (acked, unknown, refused, audits)
}

/// The rows `sql` answers through node 1 at serializable, asked again
/// while the cluster settles (for up to 30 s).
async fn serializable_rows(cluster: &Cluster, sql: &str) -> Vec<Value> {
    let server = cluster.node(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = server.post("/v1/sql", json!({"sql": sql, "isolation": "serializable"})).await;
        if status == 200 {
            return body["results"][0]["rows"].as_array().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "{sql}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After the faults: no prepared transaction is left on any replica once
/// recovery had its time; every acknowledged transfer is in the ledger and
/// nothing refused is; the balances are exactly what the ledger says.
async fn check_bank(cluster: &Cluster, acked: &BTreeSet<i64>, unknown: &BTreeSet<i64>) {
    // No prepared transaction is left anywhere once recovery had its time.
    let deadline = Instant::now() + Duration::from_secs(60);
    'settled: loop {
        let mut left = Vec::new();
        for id in 1..=NODES {
            for shard in cluster.view(id).await["shards"].as_array().unwrap() {
                if shard["prepared"].as_u64() != Some(0) {
                    left.push((id, shard["id"].clone(), shard["prepared"].clone()));
                }
            }
        }
        if left.is_empty() {
            break 'settled;
        }
        assert!(Instant::now() < deadline, "prepared transactions left (node, shard, count): {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The ledger and the balances, read at serializable once everything healed.
    let ledger = serializable_rows(cluster, "SELECT home, id, from_id, to_home, to_id, amount FROM ledger").await;
    let accounts = serializable_rows(cluster, "SELECT home, id, balance FROM accounts").await;
    let mut expected: std::collections::BTreeMap<(i64, i64), i64> =
        (1..=3).flat_map(|home| (0..BANK_ACCOUNTS).map(move |id| ((home, id), BANK_OPENING))).collect();
    let mut present = BTreeSet::new();
    for row in &ledger {
        let field = |i: usize| row[i].as_i64().unwrap();
        let id = field(1);
        assert!(acked.contains(&id) || unknown.contains(&id), "transfer {id} is in the ledger but was refused");
        present.insert(id);
        *expected.get_mut(&(field(0), field(2))).unwrap() -= field(5);
        *expected.get_mut(&(field(3), field(4))).unwrap() += field(5);
    }
    let missing: Vec<&i64> = acked.difference(&present).collect();
    assert!(missing.is_empty(), "acknowledged transfers missing from the ledger: {missing:?}");
    let balances: std::collections::BTreeMap<(i64, i64), i64> = accounts
        .iter()
        .map(|row| ((row[0].as_i64().unwrap(), row[1].as_i64().unwrap()), row[2].as_i64().unwrap()))
        .collect();
    assert_eq!(balances, expected, "the balances are not what the ledger says");
    assert_eq!(balances.values().sum::<i64>(), BANK_TOTAL);
}

/// The TPC-C-style workload: warehouses 1, 2, 3, homed in us-east,
/// us-central and eu-west, each with [`TPCC_DISTRICTS`] districts and stock
/// of [`TPCC_ITEMS`] items (a `global` table).
const TPCC_DISTRICTS: i64 = 2;
const TPCC_ITEMS: i64 = 10;
const TPCC_STOCK: i64 = 1_000;

/// Creates the TPC-C-style tables and opens each warehouse through a
/// gateway of its region, so that it is homed there.
async fn open_tpcc(cluster: &Cluster) {
    for ddl in [
        "CREATE TABLE warehouse (w_id INT PRIMARY KEY, w_ytd BIGINT NOT NULL)",
        "CREATE TABLE district (d_w_id INT, d_id INT, d_next_o_id BIGINT NOT NULL, d_ytd BIGINT NOT NULL, \
         PRIMARY KEY (d_w_id, d_id))",
        "CREATE TABLE orders (o_w_id INT, o_d_id INT, o_id BIGINT, o_ol_cnt INT NOT NULL, PRIMARY KEY (o_w_id, o_d_id, o_id))",
        "CREATE TABLE order_line (ol_w_id INT, ol_d_id INT, ol_o_id BIGINT, ol_number INT, ol_i_id INT NOT NULL, \
         ol_supply_w_id INT NOT NULL, ol_quantity INT NOT NULL, ol_amount BIGINT NOT NULL, \
         PRIMARY KEY (ol_w_id, ol_d_id, ol_o_id, ol_number))",
        "CREATE TABLE stock (s_w_id INT, s_i_id INT, s_quantity INT NOT NULL, s_ytd INT NOT NULL, \
         s_order_cnt INT NOT NULL, PRIMARY KEY (s_w_id, s_i_id))",
        "CREATE TABLE history (h_w_id INT, h_id BIGINT, h_d_id INT NOT NULL, h_amount BIGINT NOT NULL, PRIMARY KEY (h_w_id, h_id))",
        "CREATE TABLE item (i_id INT PRIMARY KEY, i_price INT NOT NULL) WITH (locality = 'global')",
    ] {
        cluster.node(1).sql(ddl, json!([])).await;
    }
    for i in 1..=TPCC_ITEMS {
        cluster.node(1).sql("INSERT INTO item VALUES ($1, $2)", json!([i, 100 + i])).await;
    }
    for (w, gateway, region) in [(1, 1, "us-east"), (2, 4, "us-central"), (3, 7, "eu-west")] {
        let mut statements = vec![json!({"sql": "INSERT INTO warehouse VALUES ($1, 0)", "params": [w]})];
        for d in 1..=TPCC_DISTRICTS {
            statements.push(json!({"sql": "INSERT INTO district VALUES ($1, $2, 1, 0)", "params": [w, d]}));
        }
        for i in 1..=TPCC_ITEMS {
            statements
                .push(json!({"sql": "INSERT INTO stock VALUES ($1, $2, $3, 0, 0)", "params": [w, i, TPCC_STOCK]}));
        }
        let (status, body) = cluster.node(gateway).post("/v1/sql", json!({"statements": statements})).await;
        assert_eq!(status, 200, "{body}");
        let (_, body) = cluster.node(8).get(&format!("/v1/homes/{w}")).await;
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["region"], json!(region), "{body}");
    }
}

/// What became of a TPC-C-style client's New-Order and Payment
/// transactions (by order id and history id).
#[derive(Default)]
struct TpccOutcomes {
    orders: Outcomes,
    payments: Outcomes,
}

/// New-Order and Payment transactions through `url` for warehouse `w`
/// until `until`, at serializable and snapshot in turn, ids from `first_id`.
/// A New-Order takes the district's next order id (its counter) and
/// enters the order with two to four lines, each taking stock from the home
/// warehouse or, one line in five, from another region's; a Payment adds
/// to the warehouse's and the district's year-to-date totals and writes
/// the history. Order ids are the client's own, so that a lost answer can
/// be told from a refusal afterwards.
async fn tpcc_until(client: reqwest::Client, url: String, w: i64, first_id: i64, until: Until) -> TpccOutcomes {
    let mut outcomes = TpccOutcomes::default();
    let mut next = numbers(first_id);
    let mut id = first_id;
    while !until.reached() {
        id += 1;
        let isolation = if id % 2 == 0 { "serializable" } else { "snapshot" };
        let d = 1 + next(TPCC_DISTRICTS);
        if next(2) == 0 {
            let lines = 2 + next(3);
            let mut statements = vec![
                json!({"sql": "UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = $1 AND d_id = $2", "params": [w, d]}),
                json!({"sql": "INSERT INTO orders VALUES ($1, $2, $3, $4)", "params": [w, d, id, lines]}),
            ];
            for number in 1..=lines {
                let item = 1 + next(TPCC_ITEMS);
                let supply = if next(5) == 0 { 1 + (w + next(2)) % 3 } else { w };
                let quantity = 1 + next(5);
                statements.push(json!({"sql": "SELECT i_price FROM item WHERE i_id = $1", "params": [item]}));
                statements.push(json!({
                    "sql": "UPDATE stock SET s_quantity = s_quantity - $1, s_ytd = s_ytd + $1, s_order_cnt = s_order_cnt + 1 \
                            WHERE s_w_id = $2 AND s_i_id = $3",
                    "params": [quantity, supply, item],
                }));
                statements.push(json!({
                    "sql": "INSERT INTO order_line VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    "params": [w, d, id, number, item, supply, quantity, quantity * (100 + item)],
                }));
            }
            let body = json!({"statements": statements, "isolation": isolation});
            outcomes.orders.record(id, send(&client, &url, &body, "new-order").await).await;
        } else {
            let amount = 1 + next(5_000);
            let body = json!({"statements": [
                {"sql": "UPDATE warehouse SET w_ytd = w_ytd + $1 WHERE w_id = $2", "params": [amount, w]},
                {"sql": "UPDATE district SET d_ytd = d_ytd + $1 WHERE d_w_id = $2 AND d_id = $3", "params": [amount, w, d]},
                {"sql": "INSERT INTO history VALUES ($1, $2, $3, $4)", "params": [w, id, d, amount]},
            ], "isolation": isolation});
            outcomes.payments.record(id, send(&client, &url, &body, "payment").await).await;
        }
    }
    outcomes
}

/// TPC-C's consistency conditions, as they apply to this workload, once
/// every client is done: each district's counter moved once per order it
/// has; every order has its lines; each warehouse's year-to-date total is
/// its districts' and its history's; each stock row took exactly what the
/// order lines supplied from it say; every acknowledged transaction is
/// there and nothing refused is.
async fn check_tpcc(cluster: &Cluster, outcomes: &TpccOutcomes) {
    use std::collections::BTreeMap;
    // One serializable transaction: one snapshot of every table.
    let body = json!({"isolation": "serializable", "statements": [
        {"sql": "SELECT o_w_id, o_d_id, o_id, o_ol_cnt FROM orders"},
        {"sql": "SELECT ol_w_id, ol_d_id, ol_o_id, ol_supply_w_id, ol_i_id, ol_quantity, ol_amount FROM order_line"},
        {"sql": "SELECT d_w_id, d_id, d_next_o_id, d_ytd FROM district"},
        {"sql": "SELECT w_id, w_ytd FROM warehouse"},
        {"sql": "SELECT h_w_id, h_id, h_d_id, h_amount FROM history"},
        {"sql": "SELECT s_w_id, s_i_id, s_quantity, s_ytd, s_order_cnt FROM stock"},
    ]});
    let deadline = Instant::now() + Duration::from_secs(30);
    let results = loop {
        let (status, answer) = cluster.node(1).post("/v1/sql", body.clone()).await;
        if status == 200 {
            break answer["results"].as_array().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let table = |n: usize| -> Vec<Vec<i64>> {
        results[n]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect())
            .collect()
    };
    let (orders, lines, districts, warehouses, history, stock) =
        (table(0), table(1), table(2), table(3), table(4), table(5));
    assert_eq!(warehouses.len(), 3, "warehouses: {warehouses:?}");
    assert_eq!(districts.len() as i64, 3 * TPCC_DISTRICTS, "districts: {districts:?}");
    assert_eq!(stock.len() as i64, 3 * TPCC_ITEMS, "stock rows: {stock:?}");

    let check = |what: &str, present: &BTreeSet<i64>, sent: &Outcomes| {
        for id in present {
            assert!(sent.acked.contains(id) || sent.unknown.contains(id), "{what} {id} is there but was refused");
        }
        let missing: Vec<&i64> = sent.acked.difference(present).collect();
        assert!(missing.is_empty(), "acknowledged {what}s missing: {missing:?}");
    };
    check("order", &orders.iter().map(|o| o[2]).collect(), &outcomes.orders);
    check("payment", &history.iter().map(|h| h[1]).collect(), &outcomes.payments);

    let mut line_counts: BTreeMap<i64, i64> = BTreeMap::new();
    let mut supplied: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for line in &lines {
        *line_counts.entry(line[2]).or_default() += 1;
        let taken = supplied.entry((line[3], line[4])).or_default();
        taken.0 += line[5];
        taken.1 += 1;
    }
    let mut per_district: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for order in &orders {
        assert_eq!(line_counts.get(&order[2]).copied().unwrap_or(0), order[3], "order {order:?} lacks lines");
        *per_district.entry((order[0], order[1])).or_default() += 1;
    }
    assert_eq!(line_counts.len(), orders.len(), "order lines without their order");
    let mut paid: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for payment in &history {
        *paid.entry((payment[0], payment[2])).or_default() += payment[3];
    }
    let mut district_ytd: BTreeMap<i64, i64> = BTreeMap::new();
    for district in &districts {
        let key = (district[0], district[1]);
        let orders = per_district.get(&key).copied().unwrap_or(0);
        assert_eq!(district[2] - 1, orders, "district {key:?}: its counter moved once per order");
        assert_eq!(district[3], paid.get(&key).copied().unwrap_or(0), "district {key:?}: year to date");
        *district_ytd.entry(district[0]).or_default() += district[3];
    }
    for warehouse in &warehouses {
        assert_eq!(Some(&warehouse[1]), district_ytd.get(&warehouse[0]), "warehouse {}: year to date", warehouse[0]);
    }
    for row in &stock {
        let (quantity, count) = supplied.get(&(row[0], row[1])).copied().unwrap_or((0, 0));
        assert_eq!((row[2], row[3], row[4]), (TPCC_STOCK - quantity, quantity, count), "stock {row:?}");
    }
    let stocked: BTreeSet<(i64, i64)> = stock.iter().map(|row| (row[0], row[1])).collect();
    let district_keys: BTreeSet<(i64, i64)> = districts.iter().map(|row| (row[0], row[1])).collect();
    assert!(supplied.keys().all(|key| stocked.contains(key)), "order lines took stock that is not there");
    assert!(per_district.keys().chain(paid.keys()).all(|key| district_keys.contains(key)), "a district is missing");
    for line in &lines {
        assert_eq!(line[6], line[5] * (100 + line[4]), "order line {line:?}: its amount is quantity × price");
    }
}

/// A bank whose accounts are homed in all three regions (home 1 by a first
/// write through us-east, 2 through us-central, 3 through eu-west), with
/// transfers between homes at snapshot and serializable through every
/// region's gateway and auditors in two regions, while the leader of
/// us-central's home shard is SIGKILLed, then the eu-west gateway (a
/// coordinator, with its transactions in flight), then eu-west is cut off
/// from the other regions; then everything heals and restarts. Every audit
/// saw the exact total; afterwards every acknowledged transfer is in the
/// ledger, nothing is there that was refused, the balances are exactly
/// what the ledger says, and no prepared transaction is left on any replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_across_three_homes_survives_kills_and_a_region_cut_off() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = bank_cluster(dir.path()).await;

    let start = Instant::now();
    // The workload runs through the faults below, and on until the movers
    // moved keys three times (however slow the machine).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let until = Until(stop.clone());
    let (clients, auditors) = run_bank(&cluster, until.clone());
    // R18: the accounts' homes move between the regions meanwhile.
    let movers: Vec<String> = [2u64, 5, 8].into_iter().map(|gateway| cluster.node(gateway).url.clone()).collect();
    let moved = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let every = Duration::from_millis(700);
    let mover = tokio::spawn(rehome_until(cluster.client.clone(), movers, every, until, moved.clone()));

    // The faults, one after another, while the transfers run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let view = cluster.view(1).await;
    let central = view["shards"].as_array().unwrap().iter().find(|shard| shard["home"] == json!("us-central")).unwrap();
    let central_leader = central["leader"].as_u64().unwrap();
    assert!((4..=6).contains(&central_leader), "{view}");
    cluster.kill(central_leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(7);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.set_faults(json!([{"kind": "partition_regions", "regions": ["eu-west"]}])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.set_faults(json!([])).await;
    cluster.restart(central_leader);
    cluster.restart(7);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while moved.load(std::sync::atomic::Ordering::Relaxed) < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let (acked, unknown, refused, audits) = bank_outcomes(clients, auditors).await;
    mover.await.unwrap();
    let moves = moved.load(std::sync::atomic::Ordering::Relaxed);
    assert!(acked.len() >= 10 && audits >= 10, "too little happened: {} transfers, {audits} audits", acked.len());
    assert!(moves >= 3, "too few rehomes moved a key: {moves}");
    eprintln!(
        "bank across homes: {} transfers acknowledged, {} unknown, {refused} refused, {audits} audits, {moves} rehomes, in {:?}",
        acked.len(),
        unknown.len(),
        start.elapsed()
    );

    check_bank(&cluster, &acked, &unknown).await;

    // R18: the old home's leader is SIGKILLed in the middle of a rehome of a
    // key with many rows; the key ends wholly in one home, and moves there
    // afterwards.
    let rows = 2_000;
    let gateway = cluster.node(1);
    for first in (0..rows).step_by(500) {
        let values: Vec<String> = (first..first + 500).map(|id| format!("(4, {id}, 0)")).collect();
        gateway.sql(&format!("INSERT INTO accounts VALUES {}", values.join(", ")), json!([])).await;
    }
    let (_, body) = cluster.node(5).get("/v1/homes/4").await;
    let home: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(home["region"], json!("us-east"), "{body}");
    let view = cluster.view(1).await;
    let east = view["shards"].as_array().unwrap().iter().find(|shard| shard["home"] == json!("us-east")).unwrap();
    let east_leader = east["leader"].as_u64().unwrap();
    let url = cluster.node(8).url.clone();
    let client = cluster.client.clone();
    let rehome = tokio::spawn(async move {
        let body = json!({"key": 4, "region": "eu-west"});
        let response =
            client.post(format!("{url}/v1/admin/rehome")).json(&body).timeout(Duration::from_secs(60)).send();
        match response.await {
            Ok(response) => (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    });
    tokio::time::sleep(Duration::from_millis(40)).await;
    cluster.kill(east_leader);
    let (status, answer) = rehome.await.unwrap();
    eprintln!("rehome with the old home's leader killed: {status} {answer}");
    let count = |sql: &'static str, via: u64| {
        let server = cluster.node(via);
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (status, body) = server.post("/v1/sql", json!({"sql": sql, "isolation": "serializable"})).await;
                if status == 200 {
                    return body["results"][0]["rows"][0][0].as_i64().unwrap();
                }
                assert!(Instant::now() < deadline, "{sql}: {body}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // A scan of every home finds each row once; the key's own rows, where
    // the directory says it lives, all of them.
    let every = 3 * BANK_ACCOUNTS + rows;
    for via in [4, 7] {
        assert_eq!(count("SELECT count(*) FROM accounts", via).await, every, "through node {via}");
        assert_eq!(count("SELECT count(*) FROM accounts WHERE home = 4", via).await, rows, "through node {via}");
    }
    let (_, body) = cluster.node(5).get("/v1/homes/4").await;
    let home: Value = serde_json::from_str(&body).unwrap();
    assert!(home["region"] == json!("us-east") || home["region"] == json!("eu-west"), "{body}");
    // And it moves (or stays) where it was asked to go.
    let deadline = Instant::now() + Duration::from_secs(60);
    let moved = loop {
        let (status, answer) = cluster.node(8).post("/v1/admin/rehome", json!({"key": 4, "region": "eu-west"})).await;
        if status == 200 {
            break answer;
        }
        assert!(Instant::now() < deadline, "the rehome never succeeded after the kill: {status} {answer}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(moved["to"], json!("eu-west"), "{moved}");
    assert_eq!(
        moved["epoch"].as_u64(),
        home["epoch"].as_u64().map(|epoch| epoch + u64::from(home["region"] != json!("eu-west")))
    );
    // Bad requests: a region the cluster does not have, a key of no SQL type.
    let (status, answer) = cluster.node(8).post("/v1/admin/rehome", json!({"key": 4, "region": "mars"})).await;
    assert_eq!((status, common::code(&answer)), (400, "22023"), "{answer}");
    let (status, answer) = cluster.node(8).post("/v1/admin/rehome", json!({"key": [4], "region": "us-east"})).await;
    assert_eq!((status, common::code(&answer)), (400, "22023"), "{answer}");
    assert_eq!(count("SELECT count(*) FROM accounts", 2).await, every);
    assert_eq!(count("SELECT count(*) FROM accounts WHERE home = 4", 2).await, rows);
    cluster.restart(east_leader);
}

/// A rolling upgrade: nine nodes of the previous release ([`Release`]),
/// each in turn stopped with SIGTERM and started again on its data as this
/// build, the next only once it is ready and every shard has a leader every
/// node agrees on, while the bank's transfers and the TPC-C-style clients
/// ([`tpcc_until`]; checked by [`check_tpcc`]) run through a gateway of each region
/// (gateways included in the restart: a client then meets a refused
/// connection and tries again) and auditors check the total. Every node
/// exits cleanly; every error a client sees is retryable (`40001`,
/// `08006`, `53000`, or `08007` for a commit whose answer was lost with its
/// node); afterwards every acknowledged transfer is in the ledger, nothing
/// refused is, and the balances are what the ledger says. Halfway, an
/// upgraded node speaks the newest wire version to the upgraded nodes and
/// the previous one to the rest; at the end, every node speaks the newest
/// to every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_of_every_node_under_transfers_loses_no_commit() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    // Garbage collection keeps half a second of history and runs ten times
    // a second on every node, under the transfers and the restarts (and the
    // snapshots that bring restarted replicas up to date).
    let mut cluster = bank_cluster_as(dir.path(), "[gc]\nttl_ms = 500\ninterval_ms = 100\n", Release::Previous).await;
    snapshot_too_old(&cluster).await;
    open_tpcc(&cluster).await;

    let start = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (clients, auditors) = run_bank(&cluster, Until(stop.clone()));
    // A TPC-C-style client for each warehouse, through a gateway of its
    // region (the one the bank's transfers use too).
    let tpcc: Vec<_> = [(1, 1u64), (2, 4), (3, 7)]
        .into_iter()
        .map(|(w, gateway)| {
            let url = cluster.node(gateway).url.clone();
            tokio::spawn(tpcc_until(cluster.client.clone(), url, w, w * 10_000_000, Until(stop.clone())))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in 1..=NODES {
        let status = cluster.stop(id);
        assert!(status.success(), "node {id} did not stop cleanly on SIGTERM: {status}");
        cluster.restart(id);
        cluster.wait_ready(id, Duration::from_secs(60)).await;
        cluster.wait_for_agreed_leader(Duration::from_secs(60)).await;
        if id == 4 {
            // Nodes 1 to 4 are upgraded, 5 to 9 are not: an upgraded node
            // speaks the newest version to the upgraded ones, the previous
            // to the rest, and a node not yet upgraded the previous to all
            // (the previous release's own binary does not say).
            let (old, new) = (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION);
            let wanted: Vec<(u64, u8)> = (1..=NODES).map(|peer| (peer, if peer <= 4 { new } else { old })).collect();
            cluster.wait_protocol_versions(4, &wanted, new).await;
            if std::env::var_os("GEODB_PREVIOUS_BINARY").is_none() {
                let wanted: Vec<(u64, u8)> = (1..=NODES).map(|peer| (peer, old)).collect();
                cluster.wait_protocol_versions(5, &wanted, old).await;
            }
        }
    }
    for id in 1..=NODES {
        let wanted: Vec<(u64, u8)> = (1..=NODES).map(|peer| (peer, PROTOCOL_VERSION)).collect();
        cluster.wait_protocol_versions(id, &wanted, PROTOCOL_VERSION).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, unknown, refused, audits) = bank_outcomes(clients, auditors).await;
    eprintln!(
        "rolling upgrade: {} transfers acknowledged, {} unknown, {refused} refused, {audits} audits, in {:?}",
        acked.len(),
        unknown.len(),
        start.elapsed()
    );
    assert!(acked.len() >= 20 && audits >= 10, "too little happened: {} transfers, {audits} audits", acked.len());
    let mut tpcc_outcomes = TpccOutcomes::default();
    for client in tpcc {
        let outcomes = client.await.unwrap();
        for (all, one) in
            [(&mut tpcc_outcomes.orders, outcomes.orders), (&mut tpcc_outcomes.payments, outcomes.payments)]
        {
            all.acked.extend(one.acked);
            all.unknown.extend(one.unknown);
            all.refused += one.refused;
        }
    }
    eprintln!(
        "rolling upgrade, TPC-C-style: {} new orders and {} payments acknowledged, {} unknown, {} refused",
        tpcc_outcomes.orders.acked.len(),
        tpcc_outcomes.payments.acked.len(),
        tpcc_outcomes.orders.unknown.len() + tpcc_outcomes.payments.unknown.len(),
        tpcc_outcomes.orders.refused + tpcc_outcomes.payments.refused,
    );
    assert!(
        tpcc_outcomes.orders.acked.len() >= 10 && tpcc_outcomes.payments.acked.len() >= 10,
        "too few TPC-C-style transactions acknowledged"
    );
    check_bank(&cluster, &acked, &unknown).await;
    check_tpcc(&cluster, &tpcc_outcomes).await;
}

/// A snapshot transaction coordinated in us-central reads an account homed
/// in us-east while that account is written again: once the home shard's
/// leader has collected past the transaction's snapshot (half a second of
/// history, here), its next read is refused with `40001` and says why,
/// never answered from a thinned history; run again, it reads the newest.
async fn snapshot_too_old(cluster: &Cluster) {
    let read = "SELECT balance FROM accounts WHERE home = 1 AND id = 0";
    let session = cluster.node(4).session("snapshot").await;
    session.ok("BEGIN").await;
    assert_eq!(session.int(read).await, Some(BANK_OPENING));
    let gave_up = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        cluster.node(1).sql("UPDATE accounts SET balance = balance WHERE home = 1 AND id = 0", json!([])).await;
        let (status, body) = session.run(read).await;
        if status != 200 {
            break body;
        }
        assert_eq!(body["rows"][0][0], json!(BANK_OPENING), "the snapshot's value, while it is whole");
        assert!(Instant::now() < gave_up, "the home shard never collected past a minute-old snapshot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(common::code(&refused), "40001", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("snapshot too old"), "{refused}");
    session.run("ROLLBACK").await;
    let session = cluster.node(4).session("snapshot").await;
    assert_eq!(session.int(read).await, Some(BANK_OPENING), "a new snapshot reads the newest");
    // The updates' older versions went, at the home shard's replicas (their
    // writes were of that shard alone).
    loop {
        let mut collected = 0.0;
        for id in 1..=3 {
            let (_, metrics) = cluster.node(id).get("/metrics").await;
            collected += common::metric_sum(&metrics, "geodb_gc_versions_total");
        }
        if collected > 0.0 {
            break;
        }
        assert!(Instant::now() < gave_up, "garbage collection removed no version in us-east");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// R16: eu-west is cut off from both other regions by fault rules. Its
/// gateway keeps committing Read Committed writes to keys homed in us-east
/// (through eu-west's outbox) and in eu-west, and reads them back at once;
/// a serializable write that needs us-east answers a retryable error. After
/// healing, every acknowledged write is at its home shard and readable
/// from every region: a counter incremented once per acknowledged write,
/// in order, ends exactly at their number (an entry applied twice, lost or
/// out of order would leave another value). A row eu-west writes while cut
/// off and us-east writes after it ends with us-east's write everywhere,
/// though eu-west's reaches the home last (R17: last writer by origin).
/// MAV transactions writing rows of both homes commit at the outbox too,
/// and a MAV transaction reading both homes sees each of them whole, cut
/// off and after healing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_cut_off_keeps_committing_read_committed_writes_that_reach_their_homes_once() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    cluster.wait_for_agreed_leader(Duration::from_secs(30)).await;
    cluster.node(1).sql("CREATE TABLE notes (home INT, id INT, n INT, PRIMARY KEY (home, id))", json!([])).await;
    // Home 1 in us-east, home 3 in eu-west (each by a first write through
    // its region's gateway); eu-west's gateway learns both homes.
    cluster.node(1).sql("INSERT INTO notes VALUES (1, 0, 0)", json!([])).await;
    cluster.node(7).sql("INSERT INTO notes VALUES (3, 0, 0)", json!([])).await;
    cluster.node(1).sql("INSERT INTO notes VALUES (1, 100, 0)", json!([])).await;
    for home in [1, 3] {
        cluster.node(7).sql("SELECT n FROM notes WHERE home = $1 AND id = 0", json!([home])).await;
    }
    // eu-west's own replica has row (1, 100) before it is cut off.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rc = |sql: &'static str, params: Value| json!({"sql": sql, "params": params, "isolation": "read committed"});
    while cluster.node(7).post("/v1/sql", rc("SELECT n FROM notes WHERE home = 1 AND id = 100", json!([]))).await.1["results"]
        [0]["rows"]
        != json!([[0]])
    {
        assert!(Instant::now() < deadline, "eu-west never had row (1, 100)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.set_faults(json!([{"kind": "partition_regions", "regions": ["eu-west"]}])).await;
    let mut acked = 0;
    for id in 1..=15i64 {
        let statements = json!({
            "statements": [
                {"sql": "INSERT INTO notes VALUES (1, $1, $1), (3, $1, $1)", "params": [id]},
                {"sql": "UPDATE notes SET n = n + 1 WHERE home = 1 AND id = 0"},
            ],
            "isolation": "read committed",
        });
        let (status, headers, body) = cluster.node(7).post_with_headers("/v1/sql", statements).await;
        assert_eq!(status, 200, "a Read Committed write in a region cut off: {body}");
        // Committed at eu-west's outbox, as the answer says.
        assert_eq!(
            (headers["x-geodb-commit"].to_str().ok(), headers["x-geodb-commit-regions"].to_str().ok()),
            (Some("outbox"), Some("eu-west"))
        );
        acked += 1;
        // Read back at once, through the same gateway.
        let (status, body) =
            cluster.node(7).post("/v1/sql", rc("SELECT n FROM notes WHERE home = 1 AND id = 0", json!([]))).await;
        assert_eq!((status, &body["results"][0]["rows"]), (200, &json!([[acked]])), "{body}");
    }
    let (status, body) =
        cluster.node(7).post("/v1/sql", rc("SELECT count(*) FROM notes WHERE home = 1 AND id < 100", json!([]))).await;
    assert_eq!((status, &body["results"][0]["rows"]), (200, &json!([[acked + 1]])), "{body}");
    // MAV too: transactions writing both homes commit at the outbox, and a
    // MAV transaction reading both homes sees each of them whole.
    let mav = |sql: &'static str, params: Value| json!({"sql": sql, "params": params, "isolation": "mav"});
    let mut mav_acked = 0i64;
    for id in 200..210i64 {
        let (status, headers, body) = cluster
            .node(7)
            .post_with_headers("/v1/sql", mav("INSERT INTO notes VALUES (1, $1, $1), (3, $1, $1)", json!([id])))
            .await;
        assert_eq!(status, 200, "a MAV write in a region cut off: {body}");
        assert_eq!(headers["x-geodb-commit"].to_str().ok(), Some("outbox"));
        mav_acked += 1;
        let (status, body) = cluster
            .node(7)
            .post(
                "/v1/sql",
                mav("SELECT home, count(*), sum(n) FROM notes WHERE id >= 200 GROUP BY home ORDER BY home", json!([])),
            )
            .await;
        let sum: i64 = (200..200 + mav_acked).sum();
        assert_eq!(
            (status, &body["results"][0]["rows"]),
            (200, &json!([[1, mav_acked, sum], [3, mav_acked, sum]])),
            "{body}"
        );
    }
    // A highly available transaction through the outbox names its other
    // writes in each shipped one: beyond 128 keys across homes, 54000.
    let rows: Vec<String> = (1000..1065).flat_map(|id| [format!("(1, {id}, 0)"), format!("(3, {id}, 0)")]).collect();
    let (status, body) = cluster
        .node(7)
        .post("/v1/sql", json!({"sql": format!("INSERT INTO notes VALUES {}", rows.join(", ")), "isolation": "mav"}))
        .await;
    assert_eq!((status, common::code(&body)), (413, "54000"), "{body}");
    // One row written in both regions, eu-west's first: once healed, the
    // later write by origin (us-east's, at its home) must win everywhere,
    // though eu-west's reaches the home after it (R17).
    let last = "SELECT n FROM notes WHERE home = 1 AND id = 100";
    let (status, body) =
        cluster.node(7).post("/v1/sql", rc("UPDATE notes SET n = 1 WHERE home = 1 AND id = 100", json!([]))).await;
    assert_eq!((status, &body["results"][0]["rows_affected"]), (200, &json!(1)), "{body}");
    let (status, body) = cluster.node(7).post("/v1/sql", rc(last, json!([]))).await;
    assert_eq!((status, &body["results"][0]["rows"]), (200, &json!([[1]])), "{body}");
    let (status, headers, body) = cluster
        .node(1)
        .post_with_headers("/v1/sql", rc("UPDATE notes SET n = 2 WHERE home = 1 AND id = 100", json!([])))
        .await;
    assert_eq!((status, &body["results"][0]["rows_affected"]), (200, &json!(1)), "{body}");
    assert_eq!(
        (headers["x-geodb-commit"].to_str().ok(), headers["x-geodb-commit-regions"].to_str().ok()),
        (Some("home"), Some("us-east"))
    );
    // The outbox holds them meanwhile.
    let view = cluster.view(7).await;
    let outbox = view["shards"].as_array().unwrap().iter().find(|shard| shard["holds"] == json!("outbox")).unwrap();
    assert!(outbox["outbox"]["depth"].as_u64().unwrap() > 0, "{outbox}");
    // A coordinated write that needs us-east answers a retryable error.
    let (status, body) = cluster
        .node(7)
        .post(
            "/v1/sql",
            json!({"sql": "UPDATE notes SET n = 0 WHERE home = 1 AND id = 0", "isolation": "serializable"}),
        )
        .await;
    assert!(status >= 500 && matches!(common::code(&body), "08006" | "40001"), "{status} {body}");

    cluster.set_faults(json!([])).await;
    for gateway in [1, 4, 7] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let statements = json!({
                "statements": [
                    {"sql": "SELECT n FROM notes WHERE home = 1 AND id = 0"},
                    {"sql": "SELECT count(*) FROM notes WHERE home = 3 AND id < 100"},
                    {"sql": "SELECT home, count(*) FROM notes WHERE id >= 200 GROUP BY home ORDER BY home"},
                ],
                "isolation": "serializable",
            });
            let (status, body) = cluster.node(gateway).post("/v1/sql", statements).await;
            if status == 200
                && body["results"][0]["rows"] == json!([[acked]])
                && body["results"][1]["rows"] == json!([[acked + 1]])
                && body["results"][2]["rows"] == json!([[1, mav_acked], [3, mav_acked]])
            {
                break;
            }
            assert!(Instant::now() < deadline, "node {gateway} never saw every write at its home: {status} {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let view = cluster.view(7).await;
    let outbox = view["shards"].as_array().unwrap().iter().find(|shard| shard["holds"] == json!("outbox")).unwrap();
    assert_eq!(outbox["outbox"]["depth"], json!(0), "{outbox}");
    // Drained: the row eu-west wrote first holds us-east's later write, at
    // every level and through every region's gateway.
    for gateway in [1, 4, 7] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, rc_body) = cluster.node(gateway).post("/v1/sql", rc(last, json!([]))).await;
            let (_, serializable_body) =
                cluster.node(gateway).post("/v1/sql", json!({"sql": last, "isolation": "serializable"})).await;
            if status == 200
                && rc_body["results"][0]["rows"] == json!([[2]])
                && serializable_body["results"][0]["rows"] == json!([[2]])
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {gateway} does not read the later write by origin: {rc_body} {serializable_body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One autocommitted update of the profile through `server`: whether it
/// committed (the server's own retries may give up on `40001`).
async fn visit(server: &Server) -> bool {
    let (status, body) =
        server.try_sql("UPDATE profiles SET visits = visits + 1 WHERE user_id = 5 AND id = 0", json!([])).await;
    match status {
        200 => true,
        _ if common::code(&body) == "40001" => false,
        _ => panic!("{status} {body}"),
    }
}

/// The median time of `n` visits through `server`, one at a time.
async fn median_visit(server: &Server, n: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        assert!(visit(server).await);
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// Automatic rehoming on nine processes at the standard latencies
/// (R19): a key homed in us-east and then used only through eu-west's
/// gateway moves to eu-west by itself once the window has passed, and its
/// transactions then take the in-region time; every committed update is
/// counted once across the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_only_from_eu_west_moves_there_by_itself() {
    const WINDOW_MS: u64 = 2_000;
    const WAN_RTT: Duration = Duration::from_millis(76);
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let tail = format!("[cluster.auto_rehome]\nenabled = true\nwindow_ms = {WINDOW_MS}\n");
    let cluster = Cluster::start_with(dir.path(), 1.0, &tail);
    cluster.wait_for_agreed_leader(Duration::from_secs(60)).await;
    let (us_east, eu_west) = (cluster.node(1), cluster.node(7));
    us_east.sql("CREATE TABLE profiles (user_id INT, id INT, visits INT, PRIMARY KEY (user_id, id))", json!([])).await;
    us_east.sql("INSERT INTO profiles VALUES (5, 0, 0)", json!([])).await;
    let home = |server: &Server| {
        let server = server.url.clone();
        let client = cluster.client.clone();
        async move {
            let body: Value = client.get(format!("{server}/v1/homes/5")).send().await.unwrap().json().await.unwrap();
            body["region"].as_str().unwrap_or("none").to_string()
        }
    };
    assert_eq!(home(us_east).await, "us-east");

    let first_from_eu_west = Instant::now();
    let before = median_visit(eu_west, 7).await;
    assert!(before >= WAN_RTT, "its home is an ocean away: {before:?}");
    let mut visits = 7;
    while home(us_east).await != "eu-west" {
        let mut clients = Vec::new();
        for _ in 0..2 {
            let server = Server::attach(&eu_west.url);
            clients.push(tokio::spawn(async move {
                let mut committed = 0;
                for _ in 0..5 {
                    committed += i64::from(visit(&server).await);
                }
                committed
            }));
        }
        for client in clients {
            visits += client.await.unwrap();
        }
        assert!(first_from_eu_west.elapsed() < Duration::from_secs(90), "key 5 never moved to eu-west");
    }
    assert!(first_from_eu_west.elapsed() >= Duration::from_millis(WINDOW_MS), "moved before a whole window");
    let moved_after = first_from_eu_west.elapsed();
    let after = median_visit(eu_west, 7).await;
    visits += 7;
    println!("key 5: {before:?} before, {after:?} after, moved {moved_after:?} after its first use from eu-west");
    assert!(after < WAN_RTT / 2, "at home in eu-west its transactions stay in the region: {before:?} → {after:?}");
    let total = us_east.sql("SELECT visits FROM profiles WHERE user_id = 5", json!([])).await;
    assert_eq!(total["rows"], json!([[visits]]), "every committed visit counted once across the move");
    let mut counted = false;
    for id in 1..=3 {
        let (_, metrics) = cluster.node(id).get("/metrics").await;
        counted |= metrics.lines().any(|line| line.starts_with("geodb_auto_rehomes_total{") && line.contains("moved"));
    }
    assert!(counted, "the mover (us-east's home shard's leader) counted the move");
}
