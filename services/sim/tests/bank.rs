//! The bank simulation as a CI gate: distributed transactions through the
//! real transaction layer (hosts, shards, coordinators) under faults, and
//! proof that its checks catch planted bugs within the same budget.
//!
//! `cargo run -p geodb-sim -- bank --seeds N` runs more.

use geodb_sim::{BankFaults, BankOptions, BankReport, run_bank};

/// Seeds per CI run.
const CI_SEEDS: u64 = 300;

/// Seeds are independent, so they run on up to this many threads (the CI
/// machine has two cores); each seed is still one deterministic thread.
const THREADS_MAX: u64 = 2;

fn run_all(options: &BankOptions) -> Vec<BankReport> {
    let threads = std::thread::available_parallelism().map_or(1, |count| count.get() as u64).clamp(1, THREADS_MAX);
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    (0..CI_SEEDS)
                        .filter(|seed| seed % threads == thread)
                        .map(|seed| run_bank(seed, options).unwrap_or_else(|failure| panic!("{failure}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        runs.into_iter().flat_map(|run| run.join().expect("a seed thread panicked")).collect()
    })
}

#[test]
fn three_hundred_seeds_of_distributed_transactions_under_faults_pass() {
    let reports = run_all(&BankOptions::default());
    assert_eq!(reports.len() as u64, CI_SEEDS);
    let total = |field: fn(&BankReport) -> u64| reports.iter().map(field).sum::<u64>();
    // The faults really happened and the workload really ran: a gate that
    // checks nothing must not pass silently.
    assert!(total(|report| report.crashes) >= CI_SEEDS, "too few crashes");
    assert!(total(|report| report.partitions) >= CI_SEEDS / 2, "too few partitions");
    assert!(total(|report| report.messages_lost) > 0);
    assert!(total(|report| report.snapshots_installed) > 0, "no snapshot was ever installed");
    assert!(total(|report| report.unknown) > 0, "no transaction ever had an unknown outcome");
    assert!(total(|report| report.recovered) >= CI_SEEDS, "recovery of prepared transactions too rare");
    assert!(total(|report| report.distributed_commits) >= 10 * CI_SEEDS, "too few commits across shards");
    assert!(total(|report| report.pauses) >= CI_SEEDS, "too few pauses");
    assert!(total(|report| report.orphans_chosen) > 0, "no orphaned proposal was ever chosen after all");
    assert!(total(|report| report.orphans_never_chosen) > 0, "no orphaned proposal was ever settled as never chosen");
    // R15: shards keep several slots in flight, and leader changes cut them.
    assert!(total(|report| report.pipelines_cut) >= CI_SEEDS / 10, "leader changes seldom cut a pipeline");
    // R14: reads of the shard that closes timestamps are served by the
    // readers' own replicas, mostly without waiting for a closed timestamp.
    assert!(total(|report| report.settled_reads) >= 50 * CI_SEEDS, "too few reads at closed timestamps");
    assert!(total(|report| report.settled_waits) * 4 < total(|report| report.settled_reads));
    // Serializable transactions that read it and write elsewhere validate
    // those reads at their own replica instead of making it a participant.
    assert!(total(|report| report.settled_validations) >= CI_SEEDS, "too few reads validated at a replica");
    // R16: Read Committed notes commit in their writer's region, many of
    // them through its outbox, and every queued entry reached its home
    // shard exactly once (checked per seed).
    assert!(total(|report| report.notes) >= 10 * CI_SEEDS, "too few notes acknowledged");
    assert!(total(|report| report.queued) >= 10 * CI_SEEDS, "too few notes went through an outbox");
    // MAV: watches read at their own nodes, and some keys were held back
    // because their transactions had not fully arrived (checked per seed:
    // no fractured read).
    assert!(total(|report| report.views) >= 10 * CI_SEEDS, "too few MAV reads");
    assert!(total(|report| report.views_held_back) >= CI_SEEDS / 10, "MAV never held a key back");
    // R18: locality keys of homed accounts move between the homes while
    // transfers and audits run (each account checked per seed: at one
    // home, the directory's, with its last write).
    assert!(total(|report| report.rehomes) >= 2 * CI_SEEDS, "too few rehomes moved rows");
    // Notes queued for a key's old home followed it (checked per seed).
    assert!(total(|report| report.reroutes) >= CI_SEEDS / 10, "queued writes seldom followed a moved key");
    assert!(total(|report| report.prepared_early) >= 5 * CI_SEEDS, "parts were seldom prepared at their statement");
    // R21: of those, many commits wrote the record's part with the decision.
    assert!(total(|report| report.decided_with_part) >= CI_SEEDS, "the record's part was seldom decided with it");
    // R22: leaderships moved to the nodes their requests came from, by
    // handover elections, under all of it.
    assert!(total(|report| report.handovers) >= CI_SEEDS / 2, "leadership seldom followed the workload");
    // Nodes are learners of other regions' shards and write those logs
    // without an fsync: crashes must lose some of those writes.
    assert!(total(|report| report.unsynced_lost) >= CI_SEEDS, "too few unsynced writes lost in crashes");
    // Garbage collection ran at every node under all of it (checked per
    // seed with the versions it removed added back to the histories).
    assert!(total(|report| report.collected) >= 100 * CI_SEEDS, "garbage collection seldom removed a version");
    for report in &reports {
        assert!(report.committed > 0 && report.audits > 0, "seed {} committed nothing", report.seed);
        assert!(report.edges > 0, "seed {} checked no dependency", report.seed);
    }
}

/// The first seed below the budget that fails with `faults` planted.
fn caught(faults: BankFaults) -> geodb_sim::BankFailure {
    let options = BankOptions { faults, ..BankOptions::default() };
    (0..CI_SEEDS).find_map(|seed| run_bank(seed, &options).err()).expect("the planted bug escaped every seed")
}

#[test]
fn planted_commit_without_commit_wait_is_caught() {
    let failure = caught(BankFaults { skip_commit_wait: true, ..BankFaults::default() });
    // A transaction begun after another was acknowledged missed it.
    assert!(failure.message.contains("anti-dependency") || failure.message.contains("real-time"), "{failure}");
    assert!(failure.replay.ends_with("--skip-commit-wait"), "{failure}");
}

#[test]
fn planted_prepare_acknowledged_before_it_is_durable_is_caught() {
    let failure = caught(BankFaults { ack_prepare_before_durable: true, ..BankFaults::default() });
    assert!(failure.replay.ends_with("--ack-prepare-before-durable"), "{failure}");
}

#[test]
fn planted_validation_that_skips_scanned_ranges_is_caught() {
    let failure = caught(BankFaults { skip_range_validation: true, ..BankFaults::default() });
    assert!(
        failure.message.contains("flags") || failure.message.contains("cycle") || failure.message.contains("homed key"),
        "{failure}"
    );
}

#[test]
fn planted_orphans_settled_before_their_slots_are_applied_are_caught() {
    let failure = caught(BankFaults { settle_orphans_early: true, ..BankFaults::default() });
    assert!(failure.message.contains("declared never chosen"), "{failure}");
    assert!(failure.replay.ends_with("--settle-orphans-early"), "{failure}");
}

#[test]
fn planted_commit_below_a_closed_timestamp_is_caught() {
    let failure = caught(BankFaults { commit_below_closed: true, ..BankFaults::default() });
    assert!(failure.replay.ends_with("--commit-below-closed"), "{failure}");
}

#[test]
fn planted_serializable_reads_of_the_closing_shard_left_unvalidated_are_caught() {
    let failure = caught(BankFaults { skip_settled_validation: true, ..BankFaults::default() });
    assert!(failure.replay.ends_with("--skip-settled-validation"), "{failure}");
}

#[test]
fn planted_enqueue_acknowledged_before_the_region_has_it_is_caught() {
    let failure = caught(BankFaults { ack_enqueue_before_durable: true, ..BankFaults::default() });
    // A note or a tag written through the outbox is lost or not read back.
    let message = failure.message.to_lowercase();
    assert!(message.contains("note") || message.contains("tag"), "{failure}");
    assert!(failure.replay.ends_with("--ack-enqueue-before-durable"), "{failure}");
}

#[test]
fn planted_shipped_write_over_a_newer_origin_is_caught() {
    let failure = caught(BankFaults { overwrite_newer_origin: true, ..BankFaults::default() });
    assert!(failure.message.contains("origin"), "{failure}");
    assert!(failure.replay.ends_with("--overwrite-newer-origin"), "{failure}");
}

#[test]
fn planted_sibling_shown_early_is_caught() {
    let failure = caught(BankFaults { show_siblings_early: true, ..BankFaults::default() });
    assert!(failure.message.contains("fractured"), "{failure}");
    assert!(failure.replay.ends_with("--show-siblings-early"), "{failure}");
}

#[test]
fn planted_rehome_without_fencing_is_caught() {
    let failure = caught(BankFaults { skip_route_check: true, ..BankFaults::default() });
    assert!(failure.message.contains("AUDIT") || failure.message.contains("homed key"), "{failure}");
    assert!(failure.replay.ends_with("--skip-route-check"), "{failure}");
}

#[test]
fn planted_home_switched_before_the_rows_are_copied_is_caught() {
    // Requests routed by the new home find the key empty until the copy
    // commits: an audit misses its accounts.
    let failure = caught(BankFaults { switch_home_before_copy: true, ..BankFaults::default() });
    assert!(failure.message.contains("AUDIT") || failure.message.contains("homed key"), "{failure}");
    assert!(failure.replay.ends_with("--switch-home-before-copy"), "{failure}");
}

#[test]
fn planted_refused_prepare_at_a_statement_counted_as_prepared_is_caught() {
    // A transfer whose prepare at a far shard was refused still commits,
    // with the decision carrying values to a shard that holds nothing of
    // it: one side of the transfer is lost.
    let failure = caught(BankFaults { ignore_early_refusal: true, ..BankFaults::default() });
    assert!(failure.replay.ends_with("--ignore-early-refusal"), "{failure}");
}

#[test]
fn planted_record_part_written_after_an_abort_is_caught() {
    // R21: the record shard writes its own part with a commit that came
    // after recovery recorded an abort (and the other parts were aborted):
    // half a transfer lands.
    let failure = caught(BankFaults { own_part_after_decision: true, ..BankFaults::default() });
    assert!(failure.replay.ends_with("--own-part-after-decision"), "{failure}");
}

#[test]
fn planted_reads_served_below_the_garbage_collection_threshold_are_caught() {
    // A transaction whose snapshot another node's replica collected below
    // reads what is left there (an older version, or none) instead of
    // being refused: a read skewed against the rest of its snapshot.
    let failure = caught(BankFaults { serve_below_gc_threshold: true, ..BankFaults::default() });
    assert!(failure.replay.ends_with("--serve-below-gc-threshold"), "{failure}");
}

#[test]
fn planted_collection_behind_any_version_is_caught() {
    // Garbage collection treats a version of a transaction across shards as
    // standing in front of older ones, and keeps nothing: a MAV reader on a
    // node where the rest of that transaction has not arrived finds neither
    // it nor what it replaced.
    let failure = caught(BankFaults { collect_behind_any_version: true, ..BankFaults::default() });
    assert!(failure.replay.ends_with("--collect-behind-any-version"), "{failure}");
}

#[test]
fn a_bank_seed_replays_exactly() {
    let options = BankOptions::default();
    let first = run_bank(5, &options).unwrap_or_else(|failure| panic!("{failure}"));
    let second = run_bank(5, &options).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(first, second);
    let other = run_bank(6, &options).unwrap_or_else(|failure| panic!("{failure}"));
    assert_ne!(first.trace_digest, other.trace_digest);
}
