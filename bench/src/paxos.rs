//! Throughput of one Multi-Paxos group against many groups on one node, in
//! one process, over the real transport and RocksDB.
//!
//! For each `--groups` count G, one after the other and on fresh engines:
//!
//! - three nodes, each with its own RocksDB ([`RocksEngine`]) in a
//!   temporary directory, a [`Transport`] on 127.0.0.1 and one replication
//!   [`Driver`] hosting all G groups (one driver thread per node, one synced
//!   log write per driver round whatever the number of groups);
//! - every group has the three nodes as voters and node 1 as preferred
//!   leader, so node 1 leads all of them; its state machine is a
//!   [`Shard`] over its own slice of the node's engine, and node 1's
//!   [`TxnManager`] reaches each group through the driver ([`ClusterRpc`]),
//!   routing a key to the group named by its first eight bytes;
//! - `--clients` OS threads (the transaction API blocks) each run a closed
//!   loop of one-row write transactions on node 1 at Read Committed (a
//!   highly available level: no read barrier, no validation), client i on
//!   group i % G, each on a key of its own. After `--warmup-s` the
//!   commits and their latencies are counted for `--duration-s`.
//!
//! What it shows: the cost of a group (its own slots, accepts, heartbeats,
//! apply) against batching many commits into one group's slots. Reported
//! side by side with the ratio of throughputs and each node's synced log
//! writes (fsyncs), counted by a wrapper around the engine.
//!
//! The nodes are all in one region: with `--latency-scale 0` (the default)
//! the transport adds no delay and the figure is CPU and fsync bound; with
//! `--latency-scale 1` every message waits half the standard 2 ms between
//! zones, as under zone survival.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use geodb_geo::paxos::{self, GroupId, RoleKind};
use geodb_geo::{LatencyMatrix, NodeId, Region};
use geodb_server::replication::{Calls, ClusterRpc, Driver, GroupSpec, INPUT_QUEUE_MAX, Inbox};
use geodb_server::transport::{Faults, Transport, TransportConfig};
use geodb_storage::{Durability, Engine, HookedEngine, RocksEngine, ScopedEngine};
use geodb_txn::host::HostConfig;
use geodb_txn::protocol::KeyRange;
use geodb_txn::transaction::CoordinatorFaults;
use geodb_txn::{
    Hlc, Isolation, ManagerConfig, NodeMessage, Place, Router, Shard, SystemClock, TxnManager, shard_prefix,
    stamp_messages,
};

use crate::report::Measurement;

#[derive(clap::Args)]
pub struct Args {
    /// Group counts to measure, one after the other (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    groups: Vec<u64>,
    /// Client threads writing on node 1; client i uses group i % G.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds measured per group count.
    #[arg(long, default_value_t = 15)]
    duration_s: u64,
    /// Seconds run before each measurement, not counted.
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// Seconds the nodes sit idle (every group elected, no client) before
    /// the load, measuring the process's CPU time: what a node of G idle
    /// groups costs (0: skip).
    #[arg(long, default_value_t = 10)]
    idle_s: u64,
    /// Multiplies the emulated 2 ms round trip between the nodes' zones
    /// (0: no emulated latency).
    #[arg(long, default_value_t = 0.0)]
    latency_scale: f64,
    /// Directory for the nodes' databases (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Nodes of the benchmark's cluster: the smallest with a quorum to wait for.
const NODES: u64 = 3;
/// The preferred leader of every group: the node the clients write on.
const LEADER: NodeId = NodeId(1);
/// The nodes' region; all three share it (one zone each).
const REGION: &str = "us-east";
/// The timers of `geodb dev`: a heartbeat every 50 ms, elections after
/// 500 ms. Faster heartbeats would cost G × 2 messages each, which is
/// what a many-group node must not pay.
const HEARTBEAT_INTERVAL_US: u64 = 50_000;
const ELECTION_TIMEOUT_US: u64 = 500_000;
/// How long elected groups get to settle (and fall quiet) before their
/// idle cost is measured.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// How long to wait for node 1 to lead every group.
const LEADERS_WAIT_MAX: Duration = Duration::from_secs(30);
/// The clock bound ε of `geodb dev` (`max_clock_offset_ms` = 250).
const MAX_CLOCK_OFFSET_NS: u64 = 250_000_000;
/// Bytes of each written value, as in the other write benchmarks.
const VALUE_BYTES: usize = 100;
/// Failed commits a client tolerates before the run fails: a few may fail
/// during a leadership change, a steady stream means something is broken.
const CLIENT_ERRORS_MAX: u64 = 100;

pub fn run(args: Args) -> Result<(), String> {
    if args.groups.is_empty() || args.groups.contains(&0) {
        return Err("--groups needs one or more counts above 0".into());
    }
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let mut outcomes = Vec::new();
    for &groups in &args.groups {
        let temporary = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = match &args.dir {
            Some(dir) => dir.join(format!("groups-{groups}")),
            None => temporary.path().to_path_buf(),
        };
        eprintln!("{groups} groups: starting 3 nodes in {}", dir.display());
        let cluster = Cluster::start(&runtime, groups, args.latency_scale, &dir)?;
        let outcome = cluster.wait_for_leaders().and_then(|waited| {
            eprintln!(
                "{groups} groups: node {} leads all of them after {:.1} s; {} clients, {} s warm-up, {} s measured",
                LEADER.0,
                waited.as_secs_f64(),
                args.clients,
                args.warmup_s,
                args.duration_s
            );
            let idle = measure_idle(&cluster, args.idle_s)?;
            let mut outcome = measure(&cluster, &args, groups)?;
            outcome.idle = idle;
            Ok(outcome)
        });
        cluster.stop();
        drop(cluster);
        outcomes.push(outcome?);
    }
    print_outcomes(&args, &outcomes);
    Ok(())
}

/// Counts the synced writes of an engine. On a node of this benchmark only
/// the replication driver writes with [`Durability::Sync`] (one write per
/// round, shared by every group: `LogStore::write`) and a transaction
/// manager once per million transaction ids, so this is the node's count
/// of log fsyncs.
/// Every write is counted too: the log's, the state machines' applies
/// (one per round for all groups, `txn::Host::advance`) and the rest.
fn counting_syncs(inner: RocksEngine) -> (Arc<HookedEngine>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let syncs = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let (sync_counter, write_counter) = (syncs.clone(), writes.clone());
    let engine = HookedEngine::new(Arc::new(inner), move |_, durability| {
        if durability == Durability::Sync {
            sync_counter.fetch_add(1, Ordering::Relaxed);
        }
        write_counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    (Arc::new(engine), syncs, writes)
}

/// A key's group is its first eight bytes, big-endian.
struct GroupOfKey;

impl Router for GroupOfKey {
    fn place(&self, key: &[u8]) -> Place {
        Place::Shard(key.get(..8).map_or(1, |prefix| u64::from_be_bytes(prefix.try_into().expect("8 bytes"))))
    }

    fn places_of_range(&self, _range: &KeyRange) -> Vec<Place> {
        Vec::new()
    }
}

/// One node: its engine, transport, driver, and (node 1) the transaction
/// manager the clients use.
struct Node {
    syncs: Arc<AtomicU64>,
    /// Engine writes of any durability.
    writes: Arc<AtomicU64>,
    transport: Arc<Transport>,
    driver: Arc<Driver>,
    txns: Arc<TxnManager>,
}

struct Cluster {
    nodes: Vec<Node>,
    groups: u64,
}

impl Cluster {
    fn start(
        runtime: &tokio::runtime::Runtime,
        groups: u64,
        latency_scale: f64,
        dir: &Path,
    ) -> Result<Cluster, String> {
        let ids: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
        let listeners = runtime.block_on(async {
            let mut listeners = Vec::new();
            for _ in &ids {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
                listeners.push(listener);
            }
            Ok::<_, String>(listeners)
        })?;
        let peers: BTreeMap<NodeId, SocketAddr> = ids
            .iter()
            .zip(&listeners)
            .map(|(id, listener)| Ok((*id, listener.local_addr().map_err(|e| e.to_string())?)))
            .collect::<Result<_, String>>()?;
        let regions: BTreeMap<NodeId, Region> = ids.iter().map(|id| (*id, Region(REGION.to_string()))).collect();
        // The transport spawns its tasks on the current runtime.
        let _runtime = runtime.enter();
        let mut nodes = Vec::new();
        for (&id, listener) in ids.iter().zip(listeners) {
            let (engine, syncs, writes) =
                counting_syncs(RocksEngine::open(&dir.join(format!("n{}", id.0))).map_err(|e| e.to_string())?);
            let (inputs, receiver) = mpsc::sync_channel(INPUT_QUEUE_MAX);
            let calls = Arc::new(Calls::default());
            let hlc = Arc::new(Hlc::new(Box::new(SystemClock), MAX_CLOCK_OFFSET_NS));
            let mut specs = Vec::new();
            for g in 1..=groups {
                let group = GroupId(g);
                // Each group's shard has its own slice of the node's engine,
                // so snapshots stay per group; none are taken here anyway.
                let view: Arc<dyn Engine> = Arc::new(ScopedEngine::new(engine.clone(), shard_prefix(g)));
                let shard = Arc::new(
                    Shard::open(g, view, hlc.clone(), true).map_err(|e| format!("node {id}, group {g}: {e}"))?,
                );
                let mut config = paxos::Config::new(group, id, ids.clone(), 0);
                config.preferred_leader = Some(LEADER);
                config.heartbeat_interval_us = HEARTBEAT_INTERVAL_US;
                config.election_timeout_us = ELECTION_TIMEOUT_US;
                config.placement_delay_us = ELECTION_TIMEOUT_US;
                config.seed = g;
                // As the server's shards whose voters share a region (these
                // three nodes share a machine): one slot in flight, accepts
                // sent beside the leader's disk write, no-ops padded as the
                // server pads them.
                config.window_slots_max = 1;
                config.padding_slots_min = geodb_server::config::COMMIT_WINDOW_SLOTS_MAX;
                config.early_accepts = true;
                config.quiesce = true;
                specs.push(GroupSpec { config, shard, snapshot_interval: 0, closing: None });
            }
            let transport_config = TransportConfig {
                node: id,
                cluster: 1,
                peers: peers.clone(),
                regions: regions.clone(),
                latency: LatencyMatrix::standard(),
                latency_scale,
                tls: None,
                protocol_version_max: geodb_server::transport::PROTOCOL_VERSION,
            };
            let inbound = Inbox { inputs: inputs.clone(), calls: calls.clone(), hlc: hlc.clone() };
            let transport = Transport::start(transport_config, listener, Arc::new(Faults::new()), inbound)
                .map_err(|e| e.to_string())?;
            let (sender, clock) = (transport.clone(), hlc.clone());
            let driver = Driver::start(
                HostConfig::new(id),
                hlc.clone(),
                engine.clone(),
                specs,
                Box::new(move |mut messages: Vec<NodeMessage>| {
                    stamp_messages(&clock, &mut messages);
                    sender.send(messages)
                }),
                inputs,
                receiver,
                calls,
            )?;
            let (sender, clock) = (transport.clone(), hlc.clone());
            let rpc = ClusterRpc::new(
                driver.clone(),
                Box::new(move |mut message: NodeMessage| {
                    stamp_messages(&clock, std::slice::from_mut(&mut message));
                    sender.try_send_one(message)
                }),
                hlc.clone(),
                ids.iter().copied().collect(),
                Vec::new(),
                Default::default(),
            );
            let txns = TxnManager::with_config(ManagerConfig {
                node: id.0,
                hlc,
                rpc: Arc::new(rpc),
                router: Arc::new(GroupOfKey),
                ids_engine: Some(engine.clone()),
                first_id: 1,
                // Read Committed commits never wait (R6 is for coordinated
                // levels); nothing here needs it.
                commit_wait: false,
                faults: CoordinatorFaults::default(),
            })
            .map_err(|e| format!("node {id}: {e}"))?;
            nodes.push(Node { syncs, writes, transport, driver, txns });
        }
        Ok(Cluster { nodes, groups })
    }

    /// Waits until node 1 leads every group; returns how long it took.
    fn wait_for_leaders(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let leader = &self.nodes[0];
        loop {
            let published = leader.driver.published();
            let leading = (1..=self.groups)
                .filter(|g| {
                    published
                        .groups
                        .get(&GroupId(*g))
                        .is_some_and(|status| status.role == Some(RoleKind::Leader) && status.serving)
                })
                .count() as u64;
            if leading == self.groups {
                return Ok(started.elapsed());
            }
            if let Some(failed) = published.failed {
                return Err(format!("{LEADER}'s replication failed: {failed}"));
            }
            if started.elapsed() > LEADERS_WAIT_MAX {
                return Err(format!(
                    "{LEADER} leads {leading} of {} groups after {} s",
                    self.groups,
                    LEADERS_WAIT_MAX.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn syncs(&self) -> Vec<u64> {
        self.nodes.iter().map(|node| node.syncs.load(Ordering::Relaxed)).collect()
    }

    fn writes(&self) -> Vec<u64> {
        self.nodes.iter().map(|node| node.writes.load(Ordering::Relaxed)).collect()
    }

    fn stop(&self) {
        for node in &self.nodes {
            node.driver.stop();
        }
        for node in &self.nodes {
            node.transport.shutdown();
        }
    }
}

/// The whole process's CPU time (user and system, all threads) so far.
fn process_cpu() -> Result<Duration, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|field| field.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err("cannot parse /proc/self/stat".into());
    };
    // In USER_HZ, which Linux fixes at 100 for every architecture's
    // user-space ABI.
    Ok(Duration::from_millis((user + system) * 10))
}

/// What the idle nodes cost, and how many of node 1's groups were quiet.
#[derive(Default)]
struct Idle {
    /// CPU time of the whole process (three nodes) per second of idling,
    /// divided by three: one node's share of a core, in percent.
    cpu_percent_per_node: f64,
    quiet_groups: usize,
}

/// Lets the elected groups settle for a few seconds, then measures the
/// process's CPU time over `seconds` of idling.
fn measure_idle(cluster: &Cluster, seconds: u64) -> Result<Idle, String> {
    if seconds == 0 {
        return Ok(Idle::default());
    }
    std::thread::sleep(IDLE_SETTLE);
    let (started, cpu_before) = (Instant::now(), process_cpu()?);
    std::thread::sleep(Duration::from_secs(seconds));
    let (wall, cpu) = (started.elapsed(), process_cpu()? - cpu_before);
    let quiet_groups = cluster.nodes[0].driver.published().groups.values().filter(|status| status.quiet).count();
    Ok(Idle { cpu_percent_per_node: 100.0 * cpu.as_secs_f64() / wall.as_secs_f64() / NODES as f64, quiet_groups })
}

/// What one group count measured.
struct Outcome {
    groups: u64,
    latency: Measurement,
    /// Synced log writes per node during the measurement.
    syncs: Vec<u64>,
    /// Engine writes of any durability per node during the measurement.
    writes: Vec<u64>,
    /// Frames node 1 sent during the measurement (one per peer per batch).
    leader_frames: u64,
    errors: u64,
    last_error: Option<String>,
    idle: Idle,
}

fn measure(cluster: &Cluster, args: &Args, groups: u64) -> Result<Outcome, String> {
    let leader = &cluster.nodes[0];
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup_s);
    let until = measure_from + Duration::from_secs(args.duration_s);
    let value = vec![0x5a_u8; VALUE_BYTES];
    std::thread::scope(|scope| {
        let mut clients = Vec::new();
        for client in 0..args.clients {
            let group = client as u64 % groups;
            let txns = leader.txns.clone();
            let mut key = (group + 1).to_be_bytes().to_vec();
            key.extend_from_slice(format!("/c{client:05}").as_bytes());
            let value = value.clone();
            clients.push(scope.spawn(move || {
                let mut latency = Measurement::new("");
                let mut errors = 0_u64;
                let mut last_error = None;
                loop {
                    let t = Instant::now();
                    if t >= until {
                        return Ok((latency, errors, last_error));
                    }
                    let outcome = txns.begin(Isolation::ReadCommitted).and_then(|mut txn| {
                        txn.put(key.clone(), value.clone())?;
                        txn.commit()
                    });
                    match outcome {
                        Ok(_) if t >= measure_from => latency.record(t.elapsed()),
                        Ok(_) => {}
                        Err(error) => {
                            errors += 1;
                            if errors > CLIENT_ERRORS_MAX {
                                return Err(format!("client {client}: {errors} failed commits, the last: {error}"));
                            }
                            last_error = Some(error.to_string());
                        }
                    }
                }
            }));
        }
        std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
        let (syncs_before, writes_before, frames_before) =
            (cluster.syncs(), cluster.writes(), leader.transport.stats().frames_sent);
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let (syncs_after, writes_after, frames_after) =
            (cluster.syncs(), cluster.writes(), leader.transport.stats().frames_sent);
        let delta = |after: Vec<u64>, before: Vec<u64>| after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let elapsed = measure_from.elapsed();

        let mut outcome = Outcome {
            groups,
            latency: Measurement::new(""),
            syncs: delta(syncs_after, syncs_before),
            writes: delta(writes_after, writes_before),
            leader_frames: frames_after - frames_before,
            errors: 0,
            last_error: None,
            idle: Idle::default(),
        };
        for client in clients {
            let (latency, errors, last_error) = client.join().map_err(|_| "a client thread panicked".to_string())??;
            outcome.latency.merge(&latency);
            outcome.errors += errors;
            outcome.last_error = last_error.or(outcome.last_error.take());
        }
        outcome.latency.elapsed = elapsed;
        Ok(outcome)
    })
}

fn print_outcomes(args: &Args, outcomes: &[Outcome]) {
    println!();
    println!(
        "3 nodes in one process, {} client threads on {LEADER}, one-row RC write transactions, latency scale {}, {} s measured each",
        args.clients, args.latency_scale, args.duration_s
    );
    println!(
        "| groups | commits | commits/s | p50 µs | p90 µs | p99 µs | max µs | fsyncs/s node 1 | commits per node-1 fsync | fsyncs/s nodes 2, 3 | node-1 frames/s | engine writes per commit, nodes 1, 2, 3 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for outcome in outcomes {
        let m = &outcome.latency;
        let seconds = m.elapsed.as_secs_f64().max(1e-9);
        let followers: Vec<String> =
            outcome.syncs[1..].iter().map(|syncs| format!("{:.0}", *syncs as f64 / seconds)).collect();
        let commits = m.histogram.len().max(1) as f64;
        let writes: Vec<String> =
            outcome.writes.iter().map(|writes| format!("{:.2}", *writes as f64 / commits)).collect();
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.1} | {} | {:.0} | {} |",
            outcome.groups,
            m.histogram.len(),
            m.ops_per_s(),
            m.p(0.50),
            m.p(0.90),
            m.p(0.99),
            m.histogram.max(),
            outcome.syncs[0] as f64 / seconds,
            m.histogram.len() as f64 / outcome.syncs[0].max(1) as f64,
            followers.join(", "),
            outcome.leader_frames as f64 / seconds,
            writes.join(", "),
        );
    }
    if args.idle_s > 0 {
        println!();
        println!("Idle, before the load: every group elected, no client, {} s measured", args.idle_s);
        println!("| groups | quiet on node 1 | CPU per node (% of a core) |");
        println!("|---|---|---|");
        for outcome in outcomes {
            let idle = &outcome.idle;
            println!("| {} | {} | {:.2} |", outcome.groups, idle.quiet_groups, idle.cpu_percent_per_node);
        }
    }
    for outcome in outcomes {
        if outcome.errors > 0 {
            println!(
                "{} groups: {} failed commits (not counted), the last: {}",
                outcome.groups,
                outcome.errors,
                outcome.last_error.as_deref().unwrap_or("?")
            );
        }
    }
    if let Some(first) = outcomes.first() {
        for outcome in &outcomes[1..] {
            println!(
                "throughput ratio {} groups ÷ {} group{}: {:.2}×",
                outcome.groups,
                first.groups,
                if first.groups == 1 { "" } else { "s" },
                outcome.latency.ops_per_s() / first.latency.ops_per_s().max(1e-9)
            );
        }
    }
}
