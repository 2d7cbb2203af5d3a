//! R14: closed timestamps (`docs/design/transactions.md`). A leader that
//! closes a timestamp hands out nothing at or below it again, across
//! restarts, snapshots and leader changes; a replica serves reads at a
//! timestamp once it applied a closed timestamp at or above it, waits on
//! locks below it, and writes placed ahead of every clock do not drag the
//! node's clock along.

use std::sync::Arc;

use geodb_storage::MemoryEngine;
use geodb_txn::participant::{Proposal, ReadGate};
use geodb_txn::protocol::{Changes, ReadMode, Reads};
use geodb_txn::{Entry, Hlc, Isolation, ManualClock, Shard, Timestamp, TxnId};

const SHARD: u64 = 2;
/// The physical clocks start here (ns).
const START_NS: u64 = 1_000_000_000;
/// Closed this far ahead.
const LEAD_NS: u64 = 200_000_000;
/// The clock bound ε.
const EPSILON_NS: u64 = 1_000_000;

fn clock() -> (Arc<ManualClock>, Arc<Hlc>) {
    let clock = Arc::new(ManualClock::new(START_NS));
    let hlc = Arc::new(Hlc::new(Box::new(clock.clone()), EPSILON_NS));
    (clock, hlc)
}

fn replica(engine: &Arc<MemoryEngine>, hlc: &Arc<Hlc>) -> Shard {
    Shard::open(SHARD, engine.clone(), hlc.clone(), true).unwrap()
}

fn changes(txn: u64, read_ts: Timestamp, key: &str) -> Changes {
    Changes {
        txn: TxnId(txn),
        isolation: Isolation::Serializable,
        read_ts,
        writes: vec![(key.as_bytes().to_vec(), Some(b"v".to_vec()))],
        locked: Vec::new(),
        reads: Reads::default(),
        guards: Vec::new(),
        routes: Vec::new(),
        moves: Vec::new(),
    }
}

fn entry(proposal: Proposal) -> Entry {
    match proposal {
        Proposal::Entry(entry) => entry,
        other => panic!("expected an entry, got {other:?}"),
    }
}

fn closed_ts(entry: &Entry) -> Timestamp {
    match entry {
        Entry::Close { ts } => *ts,
        other => panic!("expected a close, got {other:?}"),
    }
}

fn settled(shard: &Shard, read_ts: Timestamp) -> ReadGate {
    shard.check_get(b"k", None, None, &ReadMode::Settled { read_ts }).unwrap()
}

#[test]
fn a_replica_serves_reads_up_to_the_closed_timestamp_it_applied() {
    let (_, leader_hlc) = clock();
    let (_, replica_hlc) = clock();
    let leader = replica(&Arc::new(MemoryEngine::new()), &leader_hlc);
    let follower = replica(&Arc::new(MemoryEngine::new()), &replica_hlc);
    leader.set_serving(true);
    let now = Timestamp::new(START_NS, 0);
    // Nothing closed yet: a read at the present waits.
    assert_eq!(settled(&follower, now), ReadGate::Behind);
    let close = leader.propose_close(LEAD_NS).unwrap();
    let closed = closed_ts(&close);
    assert!(closed.physical >= START_NS + LEAD_NS);
    for shard in [&leader, &follower] {
        shard.apply(Some(1), std::slice::from_ref(&close), 0).unwrap();
        assert_eq!(shard.closed(), closed);
        assert_eq!(settled(shard, now), ReadGate::Ready);
        assert_eq!(settled(shard, closed), ReadGate::Ready);
        assert_eq!(settled(shard, closed.next()), ReadGate::Behind);
    }
    // A replica that is not the leader serves no read at the leader's
    // snapshot timestamps: only settled ones.
    assert!(follower.check_get(b"k", None, None, &ReadMode::At { read_ts: now, barrier: false }).is_err());
}

#[test]
fn nothing_commits_at_or_below_a_closed_timestamp_and_the_clock_does_not_follow() {
    let (clock, hlc) = clock();
    let engine = Arc::new(MemoryEngine::new());
    let leader = replica(&engine, &hlc);
    leader.set_serving(true);
    let close = leader.propose_close(LEAD_NS).unwrap();
    let closed = closed_ts(&close);
    // Proposed after the close, before it is even applied: above it.
    let commit = entry(leader.propose_commit(&changes(1, hlc.now(), "a")).unwrap());
    let Entry::Commit { ts, .. } = &commit else { unreachable!() };
    assert!(*ts > closed, "{ts} at or below the closed {closed}");
    leader.apply(Some(1), &[close, commit.clone()], 0).unwrap();
    // The commit lies ahead of the clock by the lead: applying it did not
    // move the clock there (every timestamp this node hands out, and every
    // commit wait, would follow).
    assert!(hlc.now().physical < START_NS + EPSILON_NS);
    // A restart, the clock still behind the closed timestamp: the shard
    // commits above it all the same.
    let other = Arc::new(MemoryEngine::new());
    let before = replica(&other, &hlc);
    before.set_serving(true);
    let close = before.propose_close(LEAD_NS).unwrap();
    before.apply(Some(1), std::slice::from_ref(&close), 0).unwrap();
    drop(before);
    clock.set(START_NS + 1);
    let (_, fresh_hlc) = self::clock();
    let restarted = replica(&other, &fresh_hlc);
    assert_eq!(restarted.closed(), closed_ts(&close));
    restarted.set_serving(true);
    let later = entry(restarted.propose_commit(&changes(2, fresh_hlc.now(), "b")).unwrap());
    let Entry::Commit { ts: later_ts, .. } = later else { unreachable!() };
    assert!(later_ts > closed_ts(&close));
}

#[test]
fn a_snapshot_carries_the_closed_timestamp_to_the_next_leader() {
    let (_, hlc) = clock();
    let source_engine = Arc::new(MemoryEngine::new());
    let source = replica(&source_engine, &hlc);
    source.set_serving(true);
    let close = source.propose_close(LEAD_NS).unwrap();
    let closed = closed_ts(&close);
    source.apply(Some(5), &[close], 0).unwrap();
    let (slot, chunks) = source.write_snapshot(256).unwrap();

    let (_, target_hlc) = clock();
    let target = replica(&Arc::new(MemoryEngine::new()), &target_hlc);
    for index in 0..chunks {
        let chunk = source.snapshot_chunk(slot, index).unwrap().expect("a stored chunk");
        target.store_snapshot_chunk(slot, index, chunk, 0).unwrap();
    }
    target.restore(slot, chunks, 0).unwrap();
    assert_eq!(target.closed(), closed);
    assert_eq!(settled(&target, closed), ReadGate::Ready);
    // Elected, it keeps the promise its predecessor made.
    target.set_serving(true);
    let commit = entry(target.propose_commit(&changes(3, target_hlc.now(), "c")).unwrap());
    let Entry::Commit { ts, .. } = commit else { unreachable!() };
    assert!(ts > closed);
}

#[test]
fn a_settled_read_waits_on_a_transaction_prepared_below_it() {
    let (_, hlc) = clock();
    let leader = replica(&Arc::new(MemoryEngine::new()), &hlc);
    leader.set_serving(true);
    // Prepared first, so below the closed timestamp that follows it.
    let prepare = entry(leader.propose_prepare(&changes(4, hlc.now(), "k"), SHARD, &[SHARD, 9]).unwrap());
    let Entry::Prepare(prepared) = &prepare else { unreachable!() };
    let close = leader.propose_close(LEAD_NS).unwrap();
    leader.apply(Some(1), &[prepare.clone(), close], 0).unwrap();
    assert_eq!(settled(&leader, prepared.prepare_ts), ReadGate::Blocked(TxnId(4)));
    assert_eq!(settled(&leader, Timestamp::new(START_NS - 1, 0)), ReadGate::Ready);
}

#[test]
fn reads_are_validated_at_a_replica_up_to_its_closed_timestamp() {
    let (_, leader_hlc) = clock();
    let (_, replica_hlc) = clock();
    let leader = replica(&Arc::new(MemoryEngine::new()), &leader_hlc);
    let follower = replica(&Arc::new(MemoryEngine::new()), &replica_hlc);
    leader.set_serving(true);
    let snapshot = Timestamp::new(START_NS, 0);
    let mut reader = changes(10, snapshot, "unused");
    reader.writes.clear();
    reader.reads.keys.push(b"k".to_vec());
    // Not closed up to the snapshot yet: wait.
    let close = leader.propose_close(LEAD_NS).unwrap();
    assert_eq!(follower.validate_settled(&reader, Timestamp::ZERO).unwrap(), None);
    // Closed past it, nothing written: valid up to the closed timestamp.
    follower.apply(Some(1), std::slice::from_ref(&close), 0).unwrap();
    leader.apply(Some(1), std::slice::from_ref(&close), 0).unwrap();
    assert_eq!(follower.validate_settled(&reader, Timestamp::ZERO).unwrap(), Some(closed_ts(&close)));
    // Asked to cover a later commit timestamp: wait for a later close.
    assert_eq!(follower.validate_settled(&reader, closed_ts(&close).next()).unwrap(), None);
    // A commit of the key read, above the snapshot: a conflict.
    let write = entry(leader.propose_commit(&changes(11, leader_hlc.now(), "k")).unwrap());
    let close = leader.propose_close(LEAD_NS).unwrap();
    follower.apply(Some(2), &[write, close], 0).unwrap();
    assert!(matches!(follower.validate_settled(&reader, Timestamp::ZERO), Err(geodb_txn::Error::Conflict(_))));
    // A shard that closed nothing yet (or never does) validates nothing.
    let plain = replica(&Arc::new(MemoryEngine::new()), &replica_hlc);
    assert_eq!(plain.validate_settled(&reader, Timestamp::ZERO).unwrap(), None);
}
