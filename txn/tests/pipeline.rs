//! R15: a shard's leader keeps several slots in flight, so every replica
//! re-validates a pipelined entry as it applies it (`Shard::apply_chosen`,
//! `docs/design/transactions.md`). An entry whose leader validated it
//! against log entries the log did not choose (a leader change replaced
//! them) is skipped on every replica alike, however the replica reached
//! that slot: one by one, from a snapshot, or after a restart.

use std::sync::Arc;

use geodb_storage::MemoryEngine;
use geodb_txn::conflict::ValidationFaults;
use geodb_txn::participant::{Applied, Proposal};
use geodb_txn::protocol::{Changes, Lineage, ReadMode, Reads};
use geodb_txn::{Decision, Entry, Hlc, Isolation, ManualClock, Shard, Timestamp, TxnId};

const SHARD: u64 = 4;
/// Two leaderships: the first (round 1, node 1), and the one that
/// deposed it (round 2, node 2).
const FIRST: (u64, u64) = (1, 1);
const SECOND: (u64, u64) = (2, 2);

fn hlc() -> Arc<Hlc> {
    Arc::new(Hlc::new(Box::new(ManualClock::new(1_000_000_000)), 1_000_000))
}

fn shard_with(engine: &Arc<MemoryEngine>, faults: ValidationFaults) -> Shard {
    Shard::open_with_faults(SHARD, engine.clone(), hlc(), true, faults).unwrap()
}

fn shard() -> Shard {
    shard_with(&Arc::new(MemoryEngine::new()), ValidationFaults::default())
}

fn lineage(ballot: (u64, u64), base: u64) -> Option<Lineage> {
    Some(Lineage { ballot, base })
}

/// A serializable read-modify-write of `key` from a snapshot at `read_ts`.
fn increment(txn: u64, read_ts: Timestamp, key: &str, value: &str) -> Changes {
    Changes {
        txn: TxnId(txn),
        isolation: Isolation::Serializable,
        read_ts,
        writes: vec![(key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))],
        locked: Vec::new(),
        reads: Reads { keys: vec![key.as_bytes().to_vec()], ranges: Vec::new() },
        guards: Vec::new(),
        routes: Vec::new(),
        moves: Vec::new(),
    }
}

/// What a leader proposes for `changes` (validated against what it knows).
fn validated(leader: &Shard, changes: &Changes) -> Entry {
    match leader.propose_commit(changes).unwrap() {
        Proposal::Entry(entry) => entry,
        other => panic!("expected an entry, got {other:?}"),
    }
}

fn latest(shard: &Shard, key: &str) -> Option<String> {
    shard
        .get(key.as_bytes(), &ReadMode::Latest { after: Timestamp::ZERO })
        .unwrap()
        .map(|value| String::from_utf8(value).unwrap())
}

/// The log both leaders start from: slot 1 commits `x = 0`.
fn first_slot() -> Entry {
    Entry::Commit {
        txn: TxnId(1),
        ts: Timestamp::new(1_000_000_000, 0),
        writes: vec![(b"x".to_vec(), Some(b"0".to_vec()))],
        locked: Vec::new(),
    }
}

/// Two leaders each validate a read-modify-write of `x` from the same
/// snapshot. The first has entries of its own in flight in slots 2 and 3,
/// so its increment goes to slot 4. The second, elected without seeing any
/// of them, pads one slot with a no-op (slot 2), applies it, and proposes
/// its increment at slot 3. A third leader whose quorum holds the first
/// leader's slot 4 (accepted by a minority) and the second's slot 3 chooses
/// exactly this log if paddings are one slot, shorter than the window.
type Log = Vec<(u64, Vec<Entry>, Vec<Option<Lineage>>)>;

fn two_leaderships() -> Log {
    let first = shard();
    let second = shard();
    for leader in [&first, &second] {
        leader.apply_chosen(1, &[first_slot()], &[lineage(FIRST, 0)], 0).unwrap();
    }
    second.apply_chosen(2, &[], &[], 0).unwrap();
    for leader in [&first, &second] {
        leader.set_serving(true);
    }
    let snapshot = Timestamp::new(1_000_000_001, 0);
    // Slots 2 and 3 of the first leader: lost with its leadership.
    for (txn, key) in [(10, "y"), (13, "z")] {
        let _lost = validated(&first, &Changes { reads: Reads::default(), ..increment(txn, snapshot, key, "7") });
    }
    let first_increment = validated(&first, &increment(11, snapshot, "x", "1 (first leader)"));
    let second_increment = validated(&second, &increment(12, snapshot, "x", "1 (second leader)"));
    vec![
        (1, vec![first_slot()], vec![lineage(FIRST, 0)]),
        (2, vec![], vec![]),
        (3, vec![second_increment], vec![lineage(SECOND, 2)]),
        (4, vec![first_increment], vec![lineage(FIRST, 1)]),
    ]
}

fn apply_log(replica: &Shard, log: &[(u64, Vec<Entry>, Vec<Option<Lineage>>)]) -> Vec<Vec<Applied>> {
    log.iter().map(|(slot, entries, lineages)| replica.apply_chosen(*slot, entries, lineages, 0).unwrap()).collect()
}

#[test]
fn a_pipelined_commit_validated_against_a_replaced_prefix_is_skipped_and_without_it_an_update_is_lost() {
    let log = two_leaderships();

    let replica = shard();
    let outcomes = apply_log(&replica, &log);
    assert!(matches!(outcomes[2][..], [Applied::Committed(_)]), "{outcomes:?}");
    assert_eq!(outcomes[3], vec![Applied::Skipped], "validated against slots 2 and 3 the log did not choose");
    assert_eq!(latest(&replica, "x").as_deref(), Some("1 (second leader)"));
    assert_eq!(replica.applied_slot(), 4);

    // The planted bug: applied without re-validation, both increments
    // commit from the same snapshot, and one of them is lost.
    let faults = ValidationFaults { skip_revalidation: true, ..Default::default() };
    let planted = shard_with(&Arc::new(MemoryEngine::new()), faults);
    let outcomes = apply_log(&planted, &log);
    assert!(matches!(outcomes[2][..], [Applied::Committed(_)]));
    assert!(matches!(outcomes[3][..], [Applied::Committed(_)]), "both increments of x commit: a lost update");
    assert_eq!(latest(&planted, "x").as_deref(), Some("1 (first leader)"));
}

#[test]
fn a_leaders_own_pipeline_applies_whole() {
    let replica = shard();
    replica.apply_chosen(1, &[first_slot()], &[lineage(FIRST, 0)], 0).unwrap();
    // Slots 2, 3 and 4 were all validated with slot 1 applied and the
    // others in flight: the log chose exactly them, in order.
    for slot in 2..=4 {
        let entry = Entry::Commit {
            txn: TxnId(slot),
            ts: Timestamp::new(1_000_000_000 + slot, 0),
            writes: vec![(format!("k{slot}").into_bytes(), Some(b"v".to_vec()))],
            locked: Vec::new(),
        };
        let applied = replica.apply_chosen(slot, &[entry], &[lineage(FIRST, 1)], 0).unwrap();
        assert!(matches!(applied[..], [Applied::Committed(_)]), "slot {slot}: {applied:?}");
    }
}

#[test]
fn a_no_op_in_place_of_an_own_entry_skips_what_was_validated_behind_it_but_never_a_decision() {
    let replica = shard();
    replica.apply_chosen(1, &[first_slot()], &[lineage(FIRST, 0)], 0).unwrap();
    // Slot 2 was the first leader's, replaced by the next leader's no-op.
    replica.apply_chosen(2, &[], &[], 0).unwrap();
    let commit = |txn: u64| Entry::Commit {
        txn: TxnId(txn),
        ts: Timestamp::new(1_000_000_000 + txn, 0),
        writes: vec![(b"z".to_vec(), Some(b"v".to_vec()))],
        locked: Vec::new(),
    };
    let decide = Entry::Decide { txn: TxnId(40), decision: Decision::Abort, carried: Vec::new() };
    let close = Entry::Close { ts: Timestamp::new(2_000_000_000, 0) };
    let applied =
        replica.apply_chosen(3, &[commit(30), decide, close, commit(31)], &[lineage(FIRST, 1); 4], 0).unwrap();
    assert_eq!(
        applied,
        vec![Applied::Skipped, Applied::Decided(Decision::Abort), Applied::Skipped, Applied::Skipped],
        "commits and closed timestamps validated behind slot 2 are skipped; the first decision recorded wins whenever"
    );
    assert_eq!(replica.closed(), Timestamp::ZERO);
    // The next leader's own entries, validated once slot 3 was applied.
    let applied = replica.apply_chosen(4, &[commit(32)], &[lineage(SECOND, 3)], 0).unwrap();
    assert!(matches!(applied[..], [Applied::Committed(_)]));
    let applied = replica.apply_chosen(5, &[commit(33)], &[lineage(SECOND, 3)], 0).unwrap();
    assert!(matches!(applied[..], [Applied::Committed(_)]), "behind its own slot 4: {applied:?}");
}

#[test]
fn every_replica_judges_alike_after_a_snapshot_or_a_restart() {
    // Two logs that differ only in slot 2: the first leader's own entry
    // (its increment at slot 3, validated behind it, applies) or the next
    // leader's no-op (it is skipped). Replica A applies slots 1 and 2 one
    // by one, snapshots at 2 and restarts; replica B restores the snapshot.
    // Both judge slot 3 as a replica that applied every slot would.
    let own = || Entry::Commit {
        txn: TxnId(20),
        ts: Timestamp::new(1_000_000_002, 0),
        writes: vec![(b"y".to_vec(), Some(b"7".to_vec()))],
        locked: Vec::new(),
    };
    let third = || Entry::Commit {
        txn: TxnId(21),
        ts: Timestamp::new(1_000_000_003, 0),
        writes: vec![(b"x".to_vec(), Some(b"1".to_vec()))],
        locked: Vec::new(),
    };
    for (second_slot, expected) in [(Some(own()), "applied"), (None, "skipped")] {
        let (entries, lineages) = match &second_slot {
            Some(entry) => (vec![entry.clone()], vec![lineage(FIRST, 1)]),
            None => (vec![], vec![]),
        };
        let a_engine = Arc::new(MemoryEngine::new());
        let a = shard_with(&a_engine, ValidationFaults::default());
        a.apply_chosen(1, &[first_slot()], &[lineage(FIRST, 0)], 0).unwrap();
        a.apply_chosen(2, &entries, &lineages, 0).unwrap();
        let (slot, chunks) = a.write_snapshot(512).unwrap();
        assert_eq!(slot, 2);
        let b = shard();
        for index in 0..chunks {
            b.store_snapshot_chunk(slot, index, a.snapshot_chunk(slot, index).unwrap().unwrap(), 0).unwrap();
        }
        b.restore(slot, chunks, 0).unwrap();
        drop(a);
        let a = shard_with(&a_engine, ValidationFaults::default());
        let fresh = shard();
        fresh.apply_chosen(1, &[first_slot()], &[lineage(FIRST, 0)], 0).unwrap();
        fresh.apply_chosen(2, &entries, &lineages, 0).unwrap();
        for replica in [&fresh, &a, &b] {
            let applied = replica.apply_chosen(3, &[third()], &[lineage(FIRST, 1)], 0).unwrap();
            let judged = if matches!(applied[..], [Applied::Committed(_)]) { "applied" } else { "skipped" };
            assert_eq!(judged, expected, "slot 2 {second_slot:?}: {applied:?}");
        }
    }
}

/// The real host, one node leading a group of one voter: a membership
/// change goes into the log between a commit's lineage and its slot (the
/// pipeline waits behind it), so the commit is skipped though its leader
/// never stopped leading. Its coordinator hears a conflict, and its lock in
/// flight goes with it: the next commit of the same key succeeds.
#[test]
fn a_commit_skipped_behind_its_own_leaders_reconfiguration_leaves_no_lock() {
    use geodb_geo::NodeId;
    use geodb_geo::paxos::{Config, GroupId, Membership, Stored};
    use geodb_txn::host::{Host, HostConfig, HostOutput, Origin};
    use geodb_txn::protocol::{Refusal, Request, Response};

    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let hlc = Arc::new(Hlc::new(Box::new(clock.clone()), 1_000_000));
    let node = NodeId(1);
    let group = GroupId(SHARD);
    let shard = Arc::new(Shard::open(SHARD, Arc::new(MemoryEngine::new()), hlc.clone(), true).unwrap());
    let mut host = Host::new(HostConfig::new(node), hlc, 0);
    host.add_group(Config::new(group, node, vec![node], 1_000), Stored::default(), shard.clone(), 0, 0).unwrap();
    let now_us = std::cell::Cell::new(0);
    let run = |host: &mut Host, rounds: usize| -> Vec<(u64, Response)> {
        let mut replies = Vec::new();
        for _ in 0..rounds {
            now_us.set(now_us.get() + 1_000);
            clock.advance(1_000_000);
            host.tick(now_us.get());
            let ready = host.take_ready();
            host.advance(now_us.get(), ready).unwrap();
            for output in host.take_outputs() {
                if let HostOutput::Reply { origin, response } = output {
                    replies.push((origin.id, response));
                }
            }
        }
        replies
    };
    run(&mut host, 50);
    assert!(host.status()[&group].serving, "the only voter leads and serves");

    let snapshot = Timestamp::new(clock_now(&host), 0);
    host.propose_membership(group, Membership::new(vec![node], vec![NodeId(2)])).unwrap();
    let origin = Origin { node: NodeId(9), id: 1 };
    host.handle_request(now_us.get(), origin, SHARD, Request::CommitOne(increment(100, snapshot, "k", "first")));
    assert!(shard.holds_locks(), "validated: its lock is held in flight");
    let replies = run(&mut host, 20);
    assert!(
        matches!(replies[..], [(1, Response::Refused(Refusal::Conflict(_)))]),
        "skipped behind the reconfiguration: {replies:?}"
    );
    assert_eq!(host.skipped_proposals(), 1);
    assert!(!shard.holds_locks(), "the skipped commit's lock went with it");

    let snapshot = Timestamp::new(clock_now(&host), 0);
    let origin = Origin { node: NodeId(9), id: 2 };
    host.handle_request(now_us.get(), origin, SHARD, Request::CommitOne(increment(101, snapshot, "k", "second")));
    let replies = run(&mut host, 20);
    assert!(matches!(replies[..], [(2, Response::Committed(_))]), "{replies:?}");
    assert_eq!(latest(&shard, "k").as_deref(), Some("second"));
}

fn clock_now(host: &geodb_txn::host::Host) -> u64 {
    host.hlc().physical_now_ns()
}
