//! The simulator as a CI gate: many seeds with every fault, and proof that
//! the checks catch a planted bug within the same budget.
//!
//! The budget (`CI_SEEDS`) is sized to stay under about a minute in a debug
//! build on a 2-core machine; `cargo run -p geodb-sim -- --seeds N` runs more.

use geodb_sim::{Faults, Options, run_one, run_seeds};

/// Seeds per CI run.
const CI_SEEDS: u64 = 300;

/// Seeds are independent, so they run on up to this many threads (the CI
/// machine has two cores); each seed is still one deterministic thread.
const THREADS_MAX: u64 = 2;

#[test]
fn three_hundred_seeds_with_every_fault_pass() {
    let threads = std::thread::available_parallelism().map_or(1, |count| count.get() as u64).clamp(1, THREADS_MAX);
    let per_thread = CI_SEEDS.div_ceil(threads);
    let options = Options::default();
    let reports: Vec<geodb_sim::Report> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..threads)
            .map(|thread| {
                let start = thread * per_thread;
                let count = per_thread.min(CI_SEEDS - start);
                let options = &options;
                scope.spawn(move || run_seeds(start, count, options))
            })
            .collect();
        runs.into_iter()
            .flat_map(|run| run.join().expect("a seed thread panicked").unwrap_or_else(|failure| panic!("{failure}")))
            .collect()
    });
    assert_eq!(reports.len() as u64, CI_SEEDS);
    let total = |field: fn(&geodb_sim::Report) -> u64| reports.iter().map(field).sum::<u64>();
    // The faults really happened and the workload really ran: a gate that
    // checks nothing must not pass silently.
    assert!(total(|report| report.crashes) >= CI_SEEDS, "too few crashes");
    assert!(total(|report| report.partitions) >= CI_SEEDS / 2, "too few partitions");
    // Nodes stall with their clocks running on, leaseholders among them.
    assert!(total(|report| report.pauses) >= CI_SEEDS, "too few pauses");
    assert!(total(|report| report.pauses_of_leaseholders) >= CI_SEEDS / 2, "too few leaseholders paused");
    // R22: about half of the seeds ask leaders to hand their leadership to
    // another voter at runtime, under the same faults and the same checks
    // (leases included).
    assert!(total(|report| report.transfers_started) >= CI_SEEDS / 2, "too few runtime handovers");
    // Learners write the log without an fsync: crashes must find such writes.
    assert!(total(|report| report.unsynced_lost) >= CI_SEEDS / 3, "too few unsynced writes lost in crashes");
    assert!(total(|report| report.messages_lost) > 0 && total(|report| report.messages_duplicated) > 0);
    assert!(total(|report| report.snapshots_installed) > 0, "no snapshot was ever installed");
    assert!(total(|report| report.operations_maybe) > 0, "no operation ever had an unknown outcome");
    assert!(total(|report| report.reads_ok) > 0);
    // Reads are served both ways: under leader leases, and with a quorum
    // round when the leader holds none (after an election, a partition).
    assert!(total(|report| report.reads_under_lease) > 0 && total(|report| report.reads_with_a_round) > 0);
    // About half of the seeds move a voter (add a learner, promote it, remove
    // the old voter); most moves finish within the run.
    assert!(total(|report| report.moves_completed) >= CI_SEEDS / 4, "too few voters moved");
    assert!(total(|report| report.reconfigurations) >= 3 * CI_SEEDS / 4, "too few membership changes chosen");
    // Idle groups fall quiet and wake again, under the same faults.
    assert!(total(|report| report.quiet_spells) >= 10 * CI_SEEDS, "groups seldom fell quiet");
    assert!(total(|report| report.quiet_wakes) >= 10 * CI_SEEDS, "quiet groups seldom woke");
    for report in &reports {
        assert!(report.operations_ok > 0, "seed {} acknowledged nothing", report.seed);
        assert!(report.leaders_elected >= 3, "seed {}: a group never elected a leader", report.seed);
    }
}

#[test]
fn planted_ack_before_persist_is_caught_within_the_budget() {
    let options = Options { faults: Faults { ack_before_persist: true, ..Faults::default() }, ..Options::default() };
    let failure =
        (0..CI_SEEDS).find_map(|seed| run_one(seed, &options).err()).expect("the planted bug escaped every seed");
    assert!(failure.replay.ends_with(&format!("--seed {} --ack-before-persist", failure.seed)), "{failure}");
    // The failure replays exactly.
    let again = run_one(failure.seed, &options).expect_err("a failing seed fails again");
    assert_eq!(again.message, failure.message);
}

#[test]
fn planted_votes_without_an_fsync_are_caught_within_the_budget() {
    // Learners' copies of the log go to disk without an fsync; the same for
    // a voter's votes loses, in a crash, votes that chose a value.
    let options = Options { faults: Faults { votes_unsynced: true, ..Faults::default() }, ..Options::default() };
    let failure =
        (0..CI_SEEDS).find_map(|seed| run_one(seed, &options).err()).expect("the planted bug escaped every seed");
    assert!(failure.replay.ends_with("--votes-unsynced"), "{failure}");
}

#[test]
fn a_seed_replays_exactly() {
    let options = Options::default();
    let first = run_one(7, &options).unwrap_or_else(|failure| panic!("{failure}"));
    let second = run_one(7, &options).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(first, second);
    let other = run_one(8, &options).unwrap_or_else(|failure| panic!("{failure}"));
    assert_ne!(first.trace_digest, other.trace_digest);
}

#[test]
fn planted_ack_write_before_commit_is_caught_by_the_linearizability_check() {
    let options =
        Options { faults: Faults { ack_write_before_commit: true, ..Faults::default() }, ..Options::default() };
    let failure =
        (0..CI_SEEDS).find_map(|seed| run_one(seed, &options).err()).expect("the planted bug escaped every seed");
    // Every replica agrees on every slot; only the client history shows it.
    assert!(failure.message.contains("is not linearizable"), "{failure}");
    assert!(failure.replay.ends_with("--ack-write-before-commit"), "{failure}");
}

#[test]
fn planted_lease_used_past_its_expiry_is_caught_by_the_linearizability_check() {
    let options = Options { faults: Faults { lease_past_expiry: true, ..Faults::default() }, ..Options::default() };
    let failure =
        (0..CI_SEEDS).find_map(|seed| run_one(seed, &options).err()).expect("the planted bug escaped every seed");
    // A leader stalled past its lease serves a read that misses a newer
    // leader's write: every replica still agrees on every slot.
    assert!(failure.message.contains("is not linearizable"), "{failure}");
    assert!(failure.replay.ends_with("--lease-past-expiry"), "{failure}");
}

#[test]
fn planted_deaf_quiet_followers_are_caught_by_the_liveness_check() {
    let options = Options { faults: Faults { quiet_deaf: true, ..Faults::default() }, ..Options::default() };
    let failure =
        (0..CI_SEEDS).find_map(|seed| run_one(seed, &options).err()).expect("the planted bug escaped every seed");
    // Nothing unsafe happens: a group whose leader died while it was quiet
    // just never elects another.
    assert!(failure.message.contains("(liveness)"), "{failure}");
    assert!(failure.replay.ends_with("--quiet-deaf"), "{failure}");
}
