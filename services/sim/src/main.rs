//! `geodb-sim`: run the deterministic simulator for one seed or many.
//!
//! ```text
//! geodb-sim --seed 1234                 # one seed, with its report
//! geodb-sim --seeds 1000 [--start 5000] # many seeds; prints seeds per second
//! geodb-sim --seeds 300 --ack-before-persist   # the planted bug: expect a failure
//! ```
//!
//! About half of the seeds also move a voter to another region (see `run/reconfigure.rs`).

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use geodb_sim::{Faults, Options, run_one, run_seeds};

#[derive(Parser)]
#[command(about = "GeoDB's deterministic simulator")]
struct Args {
    /// Run exactly this seed and print its report.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Plant the "acceptor answers before persisting" bug (test-only).
    #[arg(long)]
    ack_before_persist: bool,
    /// Plant the "acknowledge a write before it is chosen" bug (test-only).
    #[arg(long)]
    ack_write_before_commit: bool,
    /// Run every seed even after failures, and count them (to measure how
    /// often a planted bug is caught).
    #[arg(long)]
    keep_going: bool,
    /// Print every event of the run to stderr (use with `--seed`).
    #[arg(long)]
    trace: bool,
    /// Simulated length of the fault phase, in milliseconds.
    #[arg(long)]
    fault_phase_ms: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let faults =
        Faults { ack_before_persist: args.ack_before_persist, ack_write_before_commit: args.ack_write_before_commit };
    let mut options = Options { faults, trace: args.trace, ..Options::default() };
    if let Some(ms) = args.fault_phase_ms {
        options.fault_phase_us = ms * 1_000;
    }
    let (start, count) = match (args.seed, args.seeds) {
        (Some(seed), _) => (seed, 1),
        (None, Some(count)) => (args.start, count),
        (None, None) => (args.start, 100),
    };
    let began = Instant::now();
    if args.keep_going {
        let failed: Vec<u64> = (start..start + count)
            .filter(|seed| run_one(*seed, &options).inspect_err(|failure| eprintln!("{failure}")).is_err())
            .collect();
        let seconds = began.elapsed().as_secs_f64();
        println!(
            "{} of {count} seeds failed ({start}..{}) in {seconds:.1} s: {:.1} seeds/s; failing seeds: {failed:?}",
            failed.len(),
            start + count,
            count as f64 / seconds.max(1e-9)
        );
        return if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    match run_seeds(start, count, &options) {
        Ok(reports) => {
            let seconds = began.elapsed().as_secs_f64();
            if args.seed.is_some() {
                println!("{:#?}", reports[0]);
            }
            let ok: u64 = reports.iter().map(|report| report.operations_ok).sum();
            let maybe: u64 = reports.iter().map(|report| report.operations_maybe).sum();
            let crashes: u64 = reports.iter().map(|report| report.crashes).sum();
            let partitions: u64 = reports.iter().map(|report| report.partitions).sum();
            let events: u64 = reports.iter().map(|report| report.events).sum();
            let moves: u64 = reports.iter().map(|report| report.moves_completed).sum();
            println!(
                "{count} seeds passed ({start}..{}) in {seconds:.1} s: {:.1} seeds/s; {events} events, \
                 {ok} operations acknowledged, {maybe} unknown, {crashes} crashes, {partitions} partitions, \
                 {moves} voters moved",
                start + count,
                count as f64 / seconds.max(1e-9),
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    }
}
