//! `geodb-bench`: GeoDB's benchmarks.
//!
//! - `engine`: point reads and single-row updates through the transaction
//!   API against raw RocksDB get/put, on the same machine, side by side.
//! - `http`: point `SELECT` and single-row `UPDATE` over the HTTP API with
//!   N concurrent clients against a running `geodb`.
//! - `geo-commit`: single-shard write commit latency against a running
//!   `geodb dev` cluster, as a ratio to the quorum round trip.
//! - `geo-homes`: serializable transactions on one home and across two
//!   homes of a `geodb dev` cluster, as ratios to their lower bounds.
//! - `geo-global`: reads of `global` tables from every region, and writes.
//! - `geo-hat`: Read Committed writes from a region to keys homed
//!   elsewhere, reachable and cut off, and the outbox's drain.
//! - `geo-rehome`: rehoming one locality key of 1, 100 and 10,000 rows
//!   between two regions, as a ratio to their round trip; and bulk rehomes
//!   of many keys (keys and rows per second).
//! - `geo-follow`: automatic rehoming: how long a key used from another
//!   region takes to move there, and its latency before and after.
//! - `paxos`: throughput of one Multi-Paxos group against many groups on
//!   one node, three nodes in one process over the real transport.
//! - `tpcc`: TPC-C against GeoDB and PostgreSQL, side by side.
//!
//! Figures go to `docs/benchmarks.md` with the command, machine and date.
//! Benchmarks are run by hand, never as timed tests.

mod engine;
mod gc;
mod geo_commit;
mod geo_follow;
mod geo_global;
mod geo_hat;
mod geo_homes;
mod geo_rehome;
mod http;
mod paxos;
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
    /// Bytes on disk under a long update workload, garbage collection on or
    /// off.
    Gc(gc::Args),
    /// HTTP API: point SELECT and single-row UPDATE with concurrent clients.
    Http(http::Args),
    /// Single-shard write commit latency across the emulated regions.
    GeoCommit(geo_commit::Args),
    /// Serializable transactions on one home and across two homes.
    GeoHomes(geo_commit::GatewayArgs),
    /// Global tables: reads from every region, writes.
    GeoGlobal(geo_commit::GatewayArgs),
    /// Read Committed writes from a region to keys homed elsewhere, with
    /// the region reachable and cut off; the outbox's drain after the heal.
    GeoHat(geo_commit::GatewayArgs),
    /// Rehoming one locality key between two regions.
    GeoRehome(geo_rehome::Args),
    /// Automatic rehoming: a key used from another region moves there.
    GeoFollow(geo_follow::Args),
    /// Multi-Paxos throughput: one group against many groups on one node.
    Paxos(paxos::Args),
    /// TPC-C against GeoDB and PostgreSQL, side by side.
    Tpcc(tpcc::Args),
}

fn main() -> std::process::ExitCode {
    let outcome = match Cli::parse().command {
        Command::Engine(args) => engine::run(args),
        Command::Gc(args) => gc::run(args),
        Command::Http(args) => http::run(args),
        Command::GeoCommit(args) => geo_commit::run(args),
        Command::GeoHomes(args) => geo_homes::run(args),
        Command::GeoGlobal(args) => geo_global::run(args),
        Command::GeoHat(args) => geo_hat::run(args),
        Command::GeoRehome(args) => geo_rehome::run(args),
        Command::GeoFollow(args) => geo_follow::run(args),
        Command::Paxos(args) => paxos::run(args),
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
