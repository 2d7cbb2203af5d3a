//! The `geodb` command line: `geodb dev` and `geodb start --config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use geodb_server::config::Config;
use geodb_server::node::Node;
use geodb_server::telemetry::{self, Metrics};

#[derive(Parser)]
#[command(name = "geodb", version, about = "GeoDB: a geo-distributed transactional SQL database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run GeoDB embedded, for development: one node, data in a temporary
    /// directory unless --data-dir is given.
    Dev {
        /// HTTP address to serve the API on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:7070")]
        http: SocketAddr,
        /// Keep data here across restarts (default: a temporary directory,
        /// removed on exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run one node from a configuration file.
    Start {
        #[arg(long)]
        config: PathBuf,
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
    let (config, temporary) = match cli.command {
        Command::Dev { http, data_dir } => {
            let mut config = Config { http, ..Config::default() };
            let temporary = match data_dir {
                Some(dir) => {
                    config.data_dir = Some(dir);
                    None
                }
                None => {
                    let dir = tempfile::Builder::new()
                        .prefix("geodb-dev-")
                        .tempdir()
                        .map_err(|e| format!("cannot create a temporary data directory: {e}"))?;
                    config.data_dir = Some(dir.path().to_path_buf());
                    Some(dir)
                }
            };
            (config, temporary)
        }
        Command::Start { config } => {
            let config = Config::load(&config)?;
            if config.data_dir.is_none() {
                return Err("the config must set data_dir".into());
            }
            (config, None)
        }
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    let is_temporary = temporary.is_some();
    let outcome = runtime.block_on(async move {
        let tracer = telemetry::init_tracing(config.otlp_endpoint.as_deref())?;
        let data_dir = config.data_dir.clone().expect("set above");
        let listener = geodb_server::bind(config.http).await?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let mut config = config;
        config.http = address;
        let node = Node::open(config, &data_dir, Metrics::global())?;
        let durability = if is_temporary { " (temporary: removed on exit)" } else { "" };
        // The first line on stdout says where to connect; tests read it.
        println!(
            "GeoDB is ready: http://{address} (node {}, region {}, data in {}{durability})",
            node.config.node_id,
            node.config.region,
            data_dir.display()
        );
        println!("Try: curl -s http://{address}/v1/sql -d '{{\"sql\": \"SELECT 1 + 1\"}}'");
        let served = geodb_server::serve(node, listener, geodb_server::shutdown_signal()).await;
        if let Some(provider) = tracer {
            let _ = provider.shutdown();
        }
        tracing::info!("stopped");
        served
    });
    drop(temporary);
    outcome
}
