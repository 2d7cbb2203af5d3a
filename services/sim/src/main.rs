//! `geodb-sim`: run the deterministic simulator for one seed or many.
//!
//! ```text
//! geodb-sim --seed 1234                 # one seed of the Paxos register workload, with its report
//! geodb-sim --seeds 1000 [--start 5000] # many seeds; prints seeds per second
//! geodb-sim --seeds 300 --ack-before-persist   # the planted bug: expect a failure
//! geodb-sim --seeds 300 --drift-ppm 300000     # clocks beyond what leases absorb: expect a failure
//! geodb-sim bank --seeds 300            # the bank: distributed transactions (see `bank/`)
//! geodb-sim bank --seed 17 --trace      # replay one bank seed, printing every event
//! ```
//!
//! About half of the register seeds also move a voter to another region (see `run/reconfigure.rs`).

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use geodb_sim::{Faults, Options, run_one, run_seeds};

#[derive(Parser)]
#[command(about = "GeoDB's deterministic simulator")]
struct Args {
    #[command(subcommand)]
    workload: Option<Workload>,
    #[command(flatten)]
    seeds: SeedArgs,
    /// Plant the "acceptor answers before persisting" bug (test-only).
    #[arg(long)]
    ack_before_persist: bool,
    /// Plant the "acknowledge a write before it is chosen" bug (test-only).
    #[arg(long)]
    ack_write_before_commit: bool,
    /// Plant "a leader uses its lease after it expired by its own clock"
    /// (test-only).
    #[arg(long)]
    lease_past_expiry: bool,
    /// Plant "a leader whose accepts go out before its disk write counts its
    /// own vote before the write is durable" (test-only).
    #[arg(long)]
    own_vote_before_durable: bool,
    /// Plant "a quiet replica sleeps through its leader's node going down
    /// or restarting" (test-only).
    #[arg(long)]
    quiet_deaf: bool,
    /// Plant "acceptors write their votes without an fsync, as a learner
    /// may" (test-only).
    #[arg(long)]
    votes_unsynced: bool,
    /// Clocks run at rates within ± this many parts per million of true time
    /// (default 50000, ±5 %; leases hold within about ±8 %, at most 500000).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..=500_000))]
    drift_ppm: Option<i64>,
    /// Simulated length of the fault phase, in milliseconds.
    #[arg(long)]
    fault_phase_ms: Option<u64>,
}

/// Which seeds to run, and how.
#[derive(clap::Args)]
struct SeedArgs {
    /// Run exactly this seed and print its report.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run every seed even after failures, and count them (to measure how
    /// often a planted bug is caught).
    #[arg(long)]
    keep_going: bool,
    /// Print every event of the run to stderr (use with `--seed`).
    #[arg(long)]
    trace: bool,
}

impl SeedArgs {
    /// The first seed and how many (100 unless told).
    fn range(&self) -> (u64, u64) {
        match (self.seed, self.seeds) {
            (Some(seed), _) => (seed, 1),
            (None, Some(count)) => (self.start, count),
            (None, None) => (self.start, 100),
        }
    }
}

#[derive(clap::Subcommand)]
enum Workload {
    /// Distributed transactions through the real transaction layer.
    Bank(BankArgs),
}

#[derive(clap::Args)]
struct BankArgs {
    #[command(flatten)]
    seeds: SeedArgs,
    /// Plant "answer a commit without commit wait" (test-only).
    #[arg(long)]
    skip_commit_wait: bool,
    /// Plant "answer a prepare before it is durable" (test-only).
    #[arg(long)]
    ack_prepare_before_durable: bool,
    /// Plant "serializable validation skips scanned ranges" (test-only).
    #[arg(long)]
    skip_range_validation: bool,
    /// Plant "leaders answer reads of versions the clocks have not passed" (test-only).
    #[arg(long)]
    skip_read_wait: bool,
    /// Plant "an orphaned proposal is declared never chosen two slots too early" (test-only).
    #[arg(long)]
    settle_orphans_early: bool,
    /// Plant "a leader commits below the timestamps it closed" (test-only).
    #[arg(long)]
    commit_below_closed: bool,
    /// Plant "serializable reads of the closing shard are not validated" (test-only).
    #[arg(long)]
    skip_settled_validation: bool,
    /// Plant "replicas apply pipelined entries without re-validating them" (test-only).
    #[arg(long)]
    skip_revalidation: bool,
    /// Plant "a new leader fills one slot beyond what phase 1 recovered, not a window" (test-only).
    #[arg(long)]
    narrow_recovery: bool,
    /// Plant "an outbox answers an enqueue before the region's quorum has it" (test-only).
    #[arg(long)]
    ack_enqueue_before_durable: bool,
    /// Plant "a home shard applies a shipped write over one newer by origin" (test-only).
    #[arg(long)]
    overwrite_newer_origin: bool,
    /// Plant "a MAV reader sees a version before the rest of its transaction arrived" (test-only).
    #[arg(long)]
    show_siblings_early: bool,
    /// Plant "home shards serve requests routed by a stale home: a rehome's copy is not fenced" (test-only).
    #[arg(long)]
    skip_route_check: bool,
    /// Plant "a rehome switches the key's home before it copies the rows" (test-only).
    #[arg(long)]
    switch_home_before_copy: bool,
    /// Plant "a refused prepare at a statement counts as prepared" (test-only).
    #[arg(long)]
    ignore_early_refusal: bool,
    /// Plant "the record writes its own part with a commit after an abort was recorded" (test-only).
    #[arg(long)]
    own_part_after_decision: bool,
    /// Plant "replicas serve reads below their garbage-collection threshold" (test-only).
    #[arg(long)]
    serve_below_gc_threshold: bool,
    /// Plant "garbage collection removes what stands behind any newer version and keeps nothing" (test-only).
    #[arg(long)]
    collect_behind_any_version: bool,
}

fn bank(args: BankArgs) -> ExitCode {
    let faults = geodb_sim::BankFaults {
        skip_commit_wait: args.skip_commit_wait,
        ack_prepare_before_durable: args.ack_prepare_before_durable,
        skip_range_validation: args.skip_range_validation,
        skip_read_wait: args.skip_read_wait,
        settle_orphans_early: args.settle_orphans_early,
        commit_below_closed: args.commit_below_closed,
        skip_settled_validation: args.skip_settled_validation,
        skip_revalidation: args.skip_revalidation,
        narrow_recovery: args.narrow_recovery,
        ack_enqueue_before_durable: args.ack_enqueue_before_durable,
        overwrite_newer_origin: args.overwrite_newer_origin,
        show_siblings_early: args.show_siblings_early,
        skip_route_check: args.skip_route_check,
        switch_home_before_copy: args.switch_home_before_copy,
        ignore_early_refusal: args.ignore_early_refusal,
        own_part_after_decision: args.own_part_after_decision,
        serve_below_gc_threshold: args.serve_below_gc_threshold,
        collect_behind_any_version: args.collect_behind_any_version,
    };
    let options = geodb_sim::BankOptions { faults, trace: args.seeds.trace, ..geodb_sim::BankOptions::default() };
    let (start, count) = args.seeds.range();
    let began = Instant::now();
    let mut failed = Vec::new();
    let mut reports = Vec::new();
    for seed in start..start + count {
        match geodb_sim::run_bank(seed, &options) {
            Ok(report) => reports.push(report),
            Err(failure) => {
                eprintln!("{failure}");
                failed.push(seed);
                if !args.seeds.keep_going {
                    break;
                }
            }
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    if args.seeds.seed.is_some()
        && let Some(report) = reports.first()
    {
        println!("{report:#?}");
    }
    let total = |field: fn(&geodb_sim::BankReport) -> u64| reports.iter().map(field).sum::<u64>();
    println!(
        "{} of {count} seeds failed ({start}..{}) in {seconds:.1} s: {:.1} seeds/s; {} committed ({} across shards), \
         {} aborted, {} unknown, {} audits, {} crashes, {} pauses, {} recovered, {} reads waited for the clock, \
         {} reads at a closed timestamp ({} waited for one), {} validated there, \
         orphaned proposals {} chosen / {} never chosen / {} unknown, {} leaderships lost mid-pipeline, {} pipelined proposals skipped at apply, \
         replicas fell quiet {} times, {} notes acknowledged ({} outbox entries shipped), \
         {} tag writes committed at an outbox ({} writes of them replaced by newer origins first), \
         {} MAV reads ({} keys held back until their transactions arrived), \
         {} rehomes that moved rows ({} attempts failed), {} reroutes of queued writes, \
         {} parts prepared at their statement, {} tries that waited for an older prepared transaction, {} commits recorded with \
         the record's own part, {} versions garbage-collected, {} leaderships handed to the node their requests came from, \
         {} unsynced log writes lost in crashes; failing seeds: {failed:?}",
        failed.len(),
        start + count,
        reports.len() as f64 / seconds.max(1e-9),
        total(|report| report.committed),
        total(|report| report.distributed_commits),
        total(|report| report.aborted),
        total(|report| report.unknown),
        total(|report| report.audits),
        total(|report| report.crashes),
        total(|report| report.pauses),
        total(|report| report.recovered),
        total(|report| report.reads_waited),
        total(|report| report.settled_reads),
        total(|report| report.settled_waits),
        total(|report| report.settled_validations),
        total(|report| report.orphans_chosen),
        total(|report| report.orphans_never_chosen),
        total(|report| report.orphans_unknown),
        total(|report| report.pipelines_cut),
        total(|report| report.skipped),
        total(|report| report.quiet_spells),
        total(|report| report.notes),
        total(|report| report.queued),
        total(|report| report.tags),
        total(|report| report.superseded),
        total(|report| report.views),
        total(|report| report.views_held_back),
        total(|report| report.rehomes),
        total(|report| report.rehomes_failed),
        total(|report| report.reroutes),
        total(|report| report.prepared_early),
        total(|report| report.waits_for_older),
        total(|report| report.decided_with_part),
        total(|report| report.collected),
        total(|report| report.handovers),
        total(|report| report.unsynced_lost),
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Workload::Bank(bank_args)) = args.workload {
        return bank(bank_args);
    }
    let faults = Faults {
        ack_before_persist: args.ack_before_persist,
        ack_write_before_commit: args.ack_write_before_commit,
        lease_past_expiry: args.lease_past_expiry,
        own_vote_before_durable: args.own_vote_before_durable,
        quiet_deaf: args.quiet_deaf,
        votes_unsynced: args.votes_unsynced,
    };
    let mut options = Options { faults, trace: args.seeds.trace, ..Options::default() };
    if let Some(ppm) = args.drift_ppm {
        options.drift_ppm_max = ppm;
    }
    if let Some(ms) = args.fault_phase_ms {
        options.fault_phase_us = ms * 1_000;
    }
    let (start, count) = args.seeds.range();
    let began = Instant::now();
    if args.seeds.keep_going {
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
            if args.seeds.seed.is_some() {
                println!("{:#?}", reports[0]);
            }
            let ok: u64 = reports.iter().map(|report| report.operations_ok).sum();
            let maybe: u64 = reports.iter().map(|report| report.operations_maybe).sum();
            let crashes: u64 = reports.iter().map(|report| report.crashes).sum();
            let partitions: u64 = reports.iter().map(|report| report.partitions).sum();
            let pauses: u64 = reports.iter().map(|report| report.pauses).sum();
            let aimed: u64 = reports.iter().map(|report| report.pauses_of_leaseholders).sum();
            let events: u64 = reports.iter().map(|report| report.events).sum();
            let moves: u64 = reports.iter().map(|report| report.moves_completed).sum();
            let leased: u64 = reports.iter().map(|report| report.reads_under_lease).sum();
            let rounds: u64 = reports.iter().map(|report| report.reads_with_a_round).sum();
            let spells: u64 = reports.iter().map(|report| report.quiet_spells).sum();
            let wakes: u64 = reports.iter().map(|report| report.quiet_wakes).sum();
            let transfers: u64 = reports.iter().map(|report| report.transfers_started).sum();
            let unsynced: u64 = reports.iter().map(|report| report.unsynced_lost).sum();
            println!(
                "{count} seeds passed ({start}..{}) in {seconds:.1} s: {:.1} seeds/s; {events} events, \
                 {ok} operations acknowledged, {maybe} unknown, {crashes} crashes, {partitions} partitions, \
                 {pauses} pauses ({aimed} of a leaseholder), {moves} voters moved, reads {leased} under a lease / {rounds} with a round, \
                 replicas fell quiet {spells} times and woke {wakes} times, {transfers} leaderships handed over at runtime, \
                 {unsynced} unsynced log writes lost in crashes",
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
