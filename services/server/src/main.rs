//! The `geodb` command line: `geodb dev` and `geodb start --config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use geodb_geo::placement::Survival;
use geodb_server::config::Config;
use geodb_server::dev::{self, DevShape};
use geodb_server::node::Node;
use geodb_server::telemetry::{self, LogFormat, Metrics};

/// jemalloc, for every allocation of the process: unprefixed, its `malloc`
/// and `free` are also what RocksDB's C++ allocates with. On TPC-C it
/// serves 1.11× the transactions of glibc's malloc in 5–7 % less memory
/// (`docs/benchmarks.md`, "Allocator").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The PostgreSQL port of `geodb dev` with its default HTTP address (one
/// above PostgreSQL's own 5432, which a developer may well be running).
const DEFAULT_PG_PORT: u16 = 5433;

#[derive(Parser)]
#[command(name = "geodb", version, about = "GeoDB: a geo-distributed transactional SQL database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: text (plain unless stderr is a terminal) or json
    /// (one object per line). Overrides the config file's log_format.
    #[arg(long, global = true, value_name = "text|json")]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run GeoDB embedded, for development: a whole cluster in one process
    /// (three regions of three nodes, emulated wide-area latencies, one HTTP
    /// gateway per region), data in a temporary directory unless --data-dir
    /// is given. `--regions 1 --nodes-per-region 1` is a single node.
    Dev {
        /// HTTP address of the first region's gateway; the others take the
        /// next ports (port 0 picks free ports).
        #[arg(long, default_value = "127.0.0.1:7070")]
        http: SocketAddr,
        /// PostgreSQL wire protocol address of the first region's gateway;
        /// the others take the next ports. Default: 127.0.0.1:5433 with the
        /// default --http, free ports otherwise.
        #[arg(long)]
        pg: Option<SocketAddr>,
        /// Keep data here across restarts (default: a temporary directory,
        /// removed on exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Regions, from the standard topology (us-east, us-central, eu-west).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3))]
        regions: u64,
        /// Nodes per region, one per zone (a, b, c, ...).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=26))]
        nodes_per_region: u64,
        /// Multiplies the emulated latencies (0 turns emulation off).
        #[arg(long, default_value_t = 1.0)]
        latency_scale: f64,
        /// The home shards' survival goal: zone or region.
        #[arg(long, default_value = "zone")]
        survival: String,
        /// Serve /v1/admin/faults on every node (drop or partition links).
        #[arg(long)]
        admin_faults: bool,
        /// Shards per region for home tables.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
        shards_per_region: u64,
        /// Shard leaders confirm every coordinated read with a round to a
        /// quorum instead of serving it under a lease (for comparison).
        #[arg(long)]
        no_leader_leases: bool,
        /// Prepare a shard in another region at commit, like any other,
        /// instead of with the read of the row an UPDATE or DELETE writes
        /// there (for comparison).
        #[arg(long)]
        no_early_prepare: bool,
        /// Slots every shard's leader keeps in flight (default: 8 where a
        /// shard's voters are in several regions, 1 where they share one);
        /// 1 turns pipelining off everywhere (for comparison).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=geodb_server::config::COMMIT_WINDOW_SLOTS_MAX))]
        commit_window_slots: Option<u64>,
        /// Leave every locality key where it is homed, instead of moving a
        /// key to the region its traffic has come from for a window.
        #[arg(long)]
        no_auto_rehome: bool,
        /// How long one region must dominate a key's traffic before the key
        /// moves there (automatic rehoming).
        #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
        auto_rehome_window_ms: u64,
        /// Leave every shard's leadership where placement puts it, instead
        /// of moving it to the node of its home region that has sent most
        /// of its requests for a window.
        #[arg(long)]
        no_follow_workload: bool,
        /// How long one node must send most of a shard's requests before
        /// the shard's leadership moves to it.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
        follow_workload_window_ms: u64,
        /// Export tracing spans over OTLP/gRPC to this collector (for
        /// example http://127.0.0.1:4317), as `otlp_endpoint` does for
        /// `geodb start`.
        #[arg(long)]
        otlp_endpoint: Option<String>,
    },
    /// Run one node from a configuration file.
    Start {
        #[arg(long)]
        config: PathBuf,
        /// Speak TLS on every port with the certificates in this directory,
        /// and authenticate every client (`geodb cert`; overrides the
        /// config's certs_dir and insecure).
        #[arg(long)]
        certs_dir: Option<PathBuf>,
        /// Run without certificates: no TLS and no authentication, so
        /// anyone who reaches the node's ports can read and change all
        /// data (as `insecure = true` in the config). Without it, a node
        /// without certificates refuses to start.
        #[arg(long)]
        insecure: bool,
    },
    /// Make the certificates of a cluster (PEM files; docs/security.md).
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

/// The variants name the subcommands (`create-ca`, ...), as `cockroach cert`'s.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
enum CertCommand {
    /// A new cluster CA: ca.crt and ca.key.
    CreateCa {
        #[arg(long)]
        certs_dir: PathBuf,
        /// Replace files that exist.
        #[arg(long)]
        overwrite: bool,
    },
    /// A node's certificate and key, signed by the CA: node.<id>.crt and
    /// node.<id>.key. It names the node (node-<id>.cluster-<cluster
    /// id>.geodb.internal) and the hosts clients and other nodes reach it by.
    CreateNode {
        #[arg(long)]
        certs_dir: PathBuf,
        #[arg(long)]
        node_id: u64,
        /// The cluster's id (`cluster.id` of the config).
        #[arg(long, default_value_t = 1)]
        cluster_id: u64,
        /// A DNS name or IP address the node is reached by (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Replace files that exist (certificate rotation).
        #[arg(long)]
        overwrite: bool,
    },
    /// A client certificate and key for a user, signed by the CA:
    /// client.<user>.crt and client.<user>.key.
    CreateClient {
        #[arg(long)]
        certs_dir: PathBuf,
        #[arg(long)]
        user: String,
        /// The id of the cluster it logs in to (`cluster.id` of the config):
        /// a node of another cluster refuses it.
        #[arg(long, default_value_t = 1)]
        cluster_id: u64,
        /// Replace files that exist.
        #[arg(long)]
        overwrite: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("geodb: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    match cli.command {
        Command::Dev {
            http,
            pg,
            data_dir,
            regions,
            nodes_per_region,
            latency_scale,
            survival,
            admin_faults,
            shards_per_region,
            no_leader_leases,
            no_early_prepare,
            commit_window_slots,
            no_auto_rehome,
            auto_rehome_window_ms,
            no_follow_workload,
            follow_workload_window_ms,
            otlp_endpoint,
        } => {
            let temporary = match &data_dir {
                Some(_) => None,
                None => Some(
                    tempfile::Builder::new()
                        .prefix("geodb-dev-")
                        .tempdir()
                        .map_err(|e| format!("cannot create a temporary data directory: {e}"))?,
                ),
            };
            telemetry::set_log_format(cli.log_format.unwrap_or_default());
            let gateways = if regions == 1 && nodes_per_region == 1 { 1 } else { regions as u16 };
            let pg = pg.unwrap_or_else(|| default_pg(http, gateways));
            let base = data_dir.clone().unwrap_or_else(|| temporary.as_ref().expect("set above").path().to_path_buf());
            let outcome = if regions == 1 && nodes_per_region == 1 {
                let config = Config { http, pg: Some(pg), data_dir: Some(base), otlp_endpoint, ..Config::default() };
                runtime.block_on(run_single(config, temporary.is_some()))
            } else {
                let survival: Survival = survival.parse().map_err(|error| format!("--survival: {error}"))?;
                let shape = DevShape {
                    http,
                    pg,
                    regions,
                    nodes_per_region,
                    latency_scale,
                    survival,
                    admin_faults,
                    shards_per_region,
                    leader_leases: !no_leader_leases,
                    early_prepare: !no_early_prepare,
                    commit_window_slots,
                    auto_rehome: geodb_server::config::AutoRehome {
                        enabled: !no_auto_rehome,
                        window_ms: auto_rehome_window_ms,
                        ..geodb_server::config::AutoRehome::default()
                    },
                    follow_workload: geodb_server::config::FollowWorkload {
                        enabled: !no_follow_workload,
                        window_ms: follow_workload_window_ms,
                        ..geodb_server::config::FollowWorkload::default()
                    },
                    otlp_endpoint,
                };
                runtime.block_on(dev::run_cluster(shape, base, temporary.is_some()))
            };
            drop(temporary);
            outcome
        }
        Command::Cert { command } => cert(command),
        Command::Start { config, certs_dir, insecure } => {
            let mut config = Config::load(&config)?;
            if insecure && certs_dir.is_some() {
                return Err("--insecure and --certs-dir contradict each other: give one or the other".into());
            }
            // The command line wins over the file: --certs-dir makes a node
            // whose file says insecure = true secure.
            if certs_dir.is_some() {
                config.insecure = false;
            }
            config.certs_dir = certs_dir.or(config.certs_dir);
            config.insecure |= insecure;
            telemetry::set_log_format(cli.log_format.unwrap_or(config.log_format));
            check_mode(&config)?;
            if config.data_dir.is_none() {
                return Err("the config must set data_dir".into());
            }
            if config.cluster.is_some() {
                runtime.block_on(dev::run_cluster_node(config))
            } else {
                runtime.block_on(run_single(config, false))
            }
        }
    }
}

/// `geodb start` is secure unless told otherwise: with certificates (TLS
/// and authentication), or, said in so many words, insecure (neither),
/// which the node then says loudly in its log (`Node::open`).
fn check_mode(config: &Config) -> Result<(), String> {
    match (&config.certs_dir, config.insecure) {
        (Some(_), true) => Err("--insecure (or insecure = true) and a certificates directory contradict each other: \
                                give --certs-dir for a secure node, or --insecure for one without TLS and authentication"
            .into()),
        (None, false) => Err("refusing to start without certificates: give --certs-dir DIR (or certs_dir in the \
                              config; make them with `geodb cert`, docs/security.md) for TLS and authentication, or \
                              --insecure (or insecure = true) to run with neither, where anyone who reaches the \
                              node's ports can read and change all data"
            .into()),
        (Some(_), false) | (None, true) => Ok(()),
    }
}

/// `geodb cert ...`: writes the files and says which.
fn cert(command: CertCommand) -> Result<(), String> {
    use geodb_server::tls::{self, CertsDir};
    let written = match command {
        CertCommand::CreateCa { certs_dir, overwrite } => {
            let dir = CertsDir::new(certs_dir);
            tls::create_ca(&dir, overwrite)?;
            [dir.ca_cert(), dir.ca_key()]
        }
        CertCommand::CreateNode { certs_dir, node_id, cluster_id, hosts, overwrite } => {
            let dir = CertsDir::new(certs_dir);
            tls::create_node(&dir, node_id, cluster_id, &hosts, overwrite)?;
            [dir.node_cert(node_id), dir.node_key(node_id)]
        }
        CertCommand::CreateClient { certs_dir, user, cluster_id, overwrite } => {
            let dir = CertsDir::new(certs_dir);
            tls::create_client(&dir, &user, cluster_id, overwrite)?;
            [dir.client_cert(&user), dir.client_key(&user)]
        }
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The PostgreSQL address of `geodb dev` when `--pg` is not given: 5433
/// and the next ports with the default `--http`, if they are free (a
/// second local PostgreSQL often takes 5433); free ports otherwise.
fn default_pg(http: SocketAddr, gateways: u16) -> SocketAddr {
    let default_http: SocketAddr = "127.0.0.1:7070".parse().expect("a socket address");
    if http != default_http {
        return SocketAddr::new(http.ip(), 0);
    }
    let free =
        (0..gateways).all(|i| std::net::TcpListener::bind(SocketAddr::new(http.ip(), DEFAULT_PG_PORT + i)).is_ok());
    if !free {
        eprintln!(
            "geodb: port {DEFAULT_PG_PORT} (or a next one) is taken: PostgreSQL clients get free ports (printed below)"
        );
        return SocketAddr::new(http.ip(), 0);
    }
    SocketAddr::new(http.ip(), DEFAULT_PG_PORT)
}

/// One node without replication: `geodb dev --regions 1 --nodes-per-region 1`,
/// or `geodb start` without a `[cluster]` section.
async fn run_single(config: Config, is_temporary: bool) -> Result<(), String> {
    let tracer = telemetry::init_tracing(config.otlp_endpoint.as_deref())?;
    let data_dir = config.data_dir.clone().expect("set by the caller");
    let listener = geodb_server::bind(config.http).await?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let pg_listener = match config.pg {
        Some(pg) => Some(geodb_server::bind(pg).await?),
        None => None,
    };
    let mut config = config;
    config.http = address;
    config.pg = pg_listener.as_ref().and_then(|listener| listener.local_addr().ok());
    let node = Node::open(config, &data_dir, Metrics::global(), None)?;
    let durability = if is_temporary { " (temporary: removed on exit)" } else { "" };
    let pg = node.config.pg.map_or_else(String::new, |pg| format!(", postgresql://{pg}/geodb"));
    let scheme = geodb_server::http_scheme(&node);
    // The first line on stdout says where to connect; tests read it.
    println!(
        "GeoDB is ready: {scheme}://{address} (node {}{pg}, region {}, data in {}{durability})",
        node.config.node_id,
        node.config.region,
        data_dir.display()
    );
    // A secure node wants a login: root's client certificate (where it is,
    // if beside the CA's certificate), or a user's password.
    let cacert = node.tls.as_ref().map_or_else(String::new, |tls| {
        let ca = tls.ca_cert();
        let dir = ca.parent().unwrap_or(std::path::Path::new("."));
        let (crt, key) = (dir.join("client.root.crt"), dir.join("client.root.key"));
        let (crt, key) = if crt.exists() && key.exists() {
            (crt.display().to_string(), key.display().to_string())
        } else {
            ("client.root.crt".to_string(), "client.root.key".to_string())
        };
        format!("--cacert {} --cert {crt} --key {key} ", ca.display())
    });
    println!("Try: curl -s {cacert}{scheme}://{address}/v1/sql -d '{{\"sql\": \"SELECT 1 + 1\"}}'");
    let served = geodb_server::serve(node, listener, pg_listener, geodb_server::shutdown_signal()).await;
    telemetry::shut_down_tracing(tracer).await;
    tracing::info!("stopped");
    served
}
