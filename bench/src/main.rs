//! `geodb-bench`: GeoDB's benchmarks.
//!
//! - `engine`: point reads and single-row updates through the transaction
//!   API against raw RocksDB get/put, on the same machine, side by side.
//! - `http`: point `SELECT` and single-row `UPDATE` over the HTTP API with
//!   N concurrent clients against a running `geodb`.
//!
//! Figures go to `docs/benchmarks.md` with the command, machine and date.
//! Benchmarks are run by hand, never as timed tests.

mod engine;
mod http;
mod report;
mod tpcc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "geodb-bench", about = "GeoDB benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transaction API vs raw RocksDB: point read and single-row update.
    Engine(engine::Args),
    /// HTTP API: point SELECT and single-row UPDATE with concurrent clients.
    Http(http::Args),
    /// TPC-C against GeoDB and PostgreSQL, side by side.
    Tpcc(tpcc::Args),
}

fn main() -> std::process::ExitCode {
    let outcome = match Cli::parse().command {
        Command::Engine(args) => engine::run(args),
        Command::Http(args) => http::run(args),
        Command::Tpcc(args) => tpcc::run(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("geodb-bench: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
