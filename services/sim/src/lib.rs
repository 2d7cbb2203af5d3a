//! # geodb-sim — the deterministic simulator
//!
//! One seeded scheduler drives the real protocol code of a whole cluster in
//! one thread: nine nodes in the three regions of `docs/benchmarks.md`,
//! three Multi-Paxos groups (two with zone survival, one with region
//! survival), and clients doing single-register reads, writes and
//! compare-and-set. The network delays every message by the latency matrix
//! and loses, duplicates, reorders and partitions them (symmetric or one-way,
//! single links or whole regions); every node has its own skewed, drifting
//! clock and its own fsync delay; nodes crash, losing whatever was not yet
//! durable, and restart from what was. In about half of the seeds an
//! operator moves a voter of one group to another region meanwhile (add a
//! learner, let it catch up, promote it, remove the old voter).
//!
//! Checked during the run (`invariants`): one value per slot, agreeing
//! prefixes, applied indexes that never skip or regress, one leader per
//! ballot, configurations that change one voter at a time and snapshots that
//! carry the configuration in effect. Checked afterwards: each register's history is linearizable
//! (`linearizability`), and every group made progress once faults stopped.
//!
//! Every randomness comes from the seed, so a failing seed replays exactly:
//! a [`Failure`] prints its seed and the one-line replay command.
//! Test-only [`Faults`] plant bugs in the runtime to prove the checks bite.
//!
//! Modules: `scheduler` (event queue and RNG), `network`, `clock`,
//! `register` (the state machine), `invariants`, `linearizability`, and
//! `run`: one seed's setup, event loop and persistence model (`run/mod.rs`),
//! its fault schedule (`run/faults.rs`), the voter move
//! (`run/reconfigure.rs`), clients (`run/workload.rs`) and end-of-run checks
//! (`run/checks.rs`).

pub mod bank;
pub mod clock;
pub mod disk;
pub mod faults;
pub mod invariants;
pub mod linearizability;
pub mod network;
pub mod register;
pub mod run;
pub mod scheduler;

pub use bank::{BankFailure, BankFaults, BankOptions, BankReport, run_bank};
pub use run::{Failure, Faults, Options, Report, replay_command, run_seed};

/// Runs one seed; a panic inside the protocol (an assertion) is a failure
/// of that seed too.
pub fn run_one(seed: u64, options: &Options) -> Result<Report, Failure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, options))) {
        Ok(outcome) => outcome,
        Err(panic) => Err(Failure {
            seed,
            message: format!("panicked: {}", panic_message(panic.as_ref())),
            replay: replay_command(seed, options),
        }),
    }
}

/// The message a panic carried (an assertion's, usually).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// Runs seeds `start..start + count`, stopping at the first failure.
pub fn run_seeds(start: u64, count: u64, options: &Options) -> Result<Vec<Report>, Failure> {
    (start..start + count).map(|seed| run_one(seed, options)).collect()
}
