//! R16: a region's outbox queues highly available writes for their home
//! shards, which apply each queued entry exactly once, in queue order,
//! however often and in whatever order copies of it reach their logs
//! (`docs/design/transactions.md`, "Highly available writes that never
//! leave the region"). The state machines alone, as every replica runs
//! them; the simulator runs them under faults.

use std::ops::Bound;
use std::sync::Arc;

use geodb_storage::MemoryEngine;
use geodb_txn::participant::{Applied, DeliveryProposal, MARKER_KEEP_NS, PendingRead, Proposal};
use geodb_txn::protocol::{Enqueued, KeyRange, Queued, ReadMode, Write};
use geodb_txn::{Entry, Hlc, ManualClock, Shard, Timestamp, TxnId};

const OUTBOX: u64 = 9;
const HOME: u64 = 3;
const OTHER_HOME: u64 = 4;
const OTHER_OUTBOX: u64 = 10;

fn hlc() -> Arc<Hlc> {
    hlc_at(1)
}

/// The clock bound ε of these tests.
const MAX_OFFSET_NS: u64 = 1_000_000;

/// A clock that reads `seconds` (origins are compared across such clocks).
fn hlc_at(seconds: u64) -> Arc<Hlc> {
    hlc_at_ns(seconds * 1_000_000_000)
}

fn hlc_at_ns(now_ns: u64) -> Arc<Hlc> {
    Arc::new(Hlc::new(Box::new(ManualClock::new(now_ns)), MAX_OFFSET_NS))
}

/// A leader replica of `id` (serving), over its own engine.
fn leader(id: u64) -> Shard {
    leader_at(id, 1)
}

/// [`leader`] whose clock reads `seconds`.
fn leader_at(id: u64, seconds: u64) -> Shard {
    leader_at_ns(id, seconds * 1_000_000_000)
}

fn leader_at_ns(id: u64, now_ns: u64) -> Shard {
    let shard = Shard::open(id, Arc::new(MemoryEngine::new()), hlc_at_ns(now_ns), true).unwrap();
    shard.set_serving(true);
    shard
}

fn write(key: &str, value: &str) -> Write {
    (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
}

fn everything() -> KeyRange {
    (Bound::Unbounded, Bound::Unbounded)
}

/// What an outbox replica holds of every key: value, and the home shard
/// and commit timestamp of a shipped one.
fn pending(outbox: &Shard) -> Vec<(Write, Option<(u64, Timestamp)>)> {
    let reads = outbox.pending(&everything()).unwrap();
    reads.into_iter().map(|PendingRead { key, value, shipped, .. }| ((key, value), shipped)).collect()
}

fn at(seconds: u64) -> Timestamp {
    Timestamp { physical: seconds * 1_000_000_000, logical: 0 }
}

fn latest(shard: &Shard, key: &str) -> Option<String> {
    shard
        .get(key.as_bytes(), &ReadMode::Latest { after: Timestamp::ZERO })
        .unwrap()
        .map(|bytes| String::from_utf8(bytes).unwrap())
}

/// Enqueues `parts` for transaction `txn` at `outbox` (validated and
/// applied, as a leader whose proposal was chosen); returns the entry.
fn enqueue(outbox: &Shard, slot: u64, txn: u64, parts: Vec<(u64, Vec<Write>)>) -> Entry {
    let enqueued = Enqueued { txn: TxnId(txn), guards: Vec::new(), parts, routes: Vec::new() };
    let entry = match outbox.propose_enqueue(&enqueued).unwrap() {
        Proposal::Entry(entry) => entry,
        other => panic!("expected an entry, got {other:?}"),
    };
    let applied = outbox.apply(Some(slot), std::slice::from_ref(&entry), 0).unwrap();
    assert!(matches!(applied[..], [Applied::Committed(_)]), "{applied:?}");
    entry
}

fn delivery(home: &Shard, queued: &Queued) -> Entry {
    delivery_from(home, OUTBOX, queued)
}

/// The entry `home`'s leader proposes for `queued`, shipped by `outbox`.
fn delivery_from(home: &Shard, outbox: u64, queued: &Queued) -> Entry {
    match home.propose_delivery(outbox, queued, &[]).unwrap() {
        DeliveryProposal::Entry(entry) => entry,
        other => panic!("expected an entry, got {other:?}"),
    }
}

#[test]
fn an_enqueue_queues_each_home_shards_part_in_order_and_shows_its_writes() {
    let outbox = leader(OUTBOX);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "1")]), (OTHER_HOME, vec![write("x", "1")])]);
    enqueue(&outbox, 2, 11, vec![(HOME, vec![write("a", "2"), write("b", "1")])]);
    let queues = outbox.queues();
    let positions: Vec<(u64, u64, u64)> = queues.iter().map(|queue| (queue.dest, queue.shipped, queue.last)).collect();
    assert_eq!(positions, vec![(HOME, 0, 2), (OTHER_HOME, 0, 1)]);
    let queued = outbox.queued(HOME, 0).unwrap();
    assert_eq!(
        queued.iter().map(|entry| (entry.seq, entry.txn)).collect::<Vec<_>>(),
        vec![(1, TxnId(10)), (2, TxnId(11))]
    );
    // The newest queued write of each key is what the region reads.
    assert_eq!(pending(&outbox), vec![(write("a", "2"), None), (write("b", "1"), None), (write("x", "1"), None)]);
    // Nothing is written as a version at the outbox itself.
    assert_eq!(latest(&outbox, "a"), None);
}

#[test]
fn a_home_shard_applies_each_entry_once_in_queue_order_however_often_it_arrives() {
    let outbox = leader(OUTBOX);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "1")])]);
    enqueue(&outbox, 2, 11, vec![(HOME, vec![write("b", "2")])]);
    let queued = outbox.queued(HOME, 0).unwrap();
    let home = leader(HOME);

    // Two copies of the first entry proposed (a resend): the second finds
    // the first in flight.
    let first = delivery(&home, &queued[0]);
    assert_eq!(home.propose_delivery(OUTBOX, &queued[0], &[]).unwrap(), DeliveryProposal::InFlight);
    // The second entry is chosen first (its copy reached the log before
    // the first's): it is ahead of a gap, so it writes nothing.
    let second = delivery(&home, &queued[1]);
    assert_eq!(
        home.apply(Some(1), std::slice::from_ref(&second), 0).unwrap(),
        vec![Applied::Delivered { through: 0, applied: false }]
    );
    assert_eq!(latest(&home, "b"), None);
    // Its proposer drops what the proposal holds, as the host does.
    home.abandon(TxnId(11));
    // Then the first, then a duplicate of it, then the second again.
    assert_eq!(
        home.apply(Some(2), std::slice::from_ref(&first), 0).unwrap(),
        vec![Applied::Delivered { through: 1, applied: true }]
    );
    assert_eq!(
        home.apply(Some(3), std::slice::from_ref(&first), 0).unwrap(),
        vec![Applied::Delivered { through: 1, applied: false }]
    );
    assert_eq!(latest(&home, "a").as_deref(), Some("1"));
    assert_eq!(latest(&home, "b"), None);
    let again = delivery(&home, &queued[1]);
    assert_eq!(
        home.apply(Some(4), std::slice::from_ref(&again), 0).unwrap(),
        vec![Applied::Delivered { through: 2, applied: true }]
    );
    assert_eq!(latest(&home, "b").as_deref(), Some("2"));
    assert_eq!(home.delivered_through(OUTBOX), 2);
    // Sent once more: already applied, nothing to propose.
    assert_eq!(home.propose_delivery(OUTBOX, &queued[0], &[]).unwrap(), DeliveryProposal::Applied);
    assert_eq!(home.propose_delivery(OUTBOX, &queued[1], &[]).unwrap(), DeliveryProposal::Applied);
    // Exactly one version of each entry.
    let versions = geodb_storage::mvcc::all_versions(home.engine().as_ref()).unwrap();
    let writers: Vec<TxnId> = versions.iter().map(|(_, version)| version.txn).collect();
    assert_eq!(writers.len(), 2, "{versions:?}");
    assert!(writers.contains(&TxnId(10)) && writers.contains(&TxnId(11)));
    assert!(!home.holds_locks(), "a copy that wrote nothing left its locks");
}

/// A commit entry of `writes` by `txn` at `shard`, validated as its leader
/// does (in flight until applied).
fn commit(shard: &Shard, txn: u64, isolation: geodb_txn::Isolation, writes: Vec<Write>) -> Entry {
    let changes = geodb_txn::protocol::Changes {
        txn: TxnId(txn),
        isolation,
        read_ts: Timestamp::ZERO,
        writes,
        locked: Vec::new(),
        reads: Default::default(),
        guards: Vec::new(),
        routes: Vec::new(),
        moves: Vec::new(),
    };
    let Proposal::Entry(commit) = shard.propose_commit(&changes).unwrap() else { panic!("a commit entry") };
    commit
}

fn newest_version(shard: &Shard, key: &str) -> geodb_storage::mvcc::Version {
    geodb_storage::mvcc::latest_version(shard.engine().as_ref(), key.as_bytes()).unwrap().unwrap()
}

#[test]
fn a_queued_write_meeting_a_lock_waits_for_it() {
    // The outbox's clock is ahead: its write is the newer by origin.
    let outbox = leader_at(OUTBOX, 2);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "1")])]);
    let queued = outbox.queued(HOME, 0).unwrap();
    let home = leader(HOME);
    // A coordinated commit of "a" in flight at the home shard.
    let commit = commit(&home, 99, geodb_txn::Isolation::Snapshot, vec![write("a", "coordinated")]);
    assert_eq!(home.propose_delivery(OUTBOX, &queued[0], &[]).unwrap(), DeliveryProposal::Blocked(TxnId(99)));
    home.apply(Some(1), &[commit], 0).unwrap();
    // Once it is applied, the queued write goes above it.
    let entry = delivery(&home, &queued[0]);
    home.apply(Some(2), &[entry], 0).unwrap();
    assert_eq!(latest(&home, "a").as_deref(), Some("1"));
}

#[test]
fn a_shipped_write_never_replaces_a_version_with_a_newer_origin() {
    // R17. The outbox committed "a" and "b" at 1 s; the home shard, whose
    // clock reads 2 s, committed "a" directly meanwhile.
    let outbox = leader_at(OUTBOX, 1);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "queued"), write("b", "queued")])]);
    let queued = outbox.queued(HOME, 0).unwrap();
    let origin = queued[0].ts;
    let home = leader_at(HOME, 2);
    let direct = commit(&home, 20, geodb_txn::Isolation::ReadCommitted, vec![write("a", "direct")]);
    home.apply(Some(1), &[direct], 0).unwrap();
    let entry = delivery(&home, &queued[0]);
    assert_eq!(home.apply(Some(2), &[entry], 0).unwrap(), vec![Applied::Delivered { through: 1, applied: true }]);
    // The newer write of "a" stays; "b", which nothing newer wrote, is
    // applied above the direct commit and keeps its origin.
    assert_eq!(latest(&home, "a").as_deref(), Some("direct"));
    let b = newest_version(&home, "b");
    assert_eq!((b.value.as_deref(), b.origin), (Some(&b"queued"[..]), origin));
    assert!(b.ts > newest_version(&home, "a").ts);

    // Another region's outbox, whose clock reads 3 s, ships a newer write
    // of "a" and of "b": both go on top.
    let later = leader_at(OTHER_OUTBOX, 3);
    enqueue(&later, 1, 30, vec![(HOME, vec![write("a", "later"), write("b", "later")])]);
    let queued = later.queued(HOME, 0).unwrap();
    home.apply(Some(3), &[delivery_from(&home, OTHER_OUTBOX, &queued[0])], 0).unwrap();
    assert_eq!(latest(&home, "a").as_deref(), Some("later"));
    assert_eq!(latest(&home, "b").as_deref(), Some("later"));
}

#[test]
fn a_shipped_write_loses_to_a_newer_commit_earlier_in_its_own_slot() {
    let outbox = leader_at(OUTBOX, 1);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "queued")])]);
    let queued = outbox.queued(HOME, 0).unwrap();
    let home = leader_at(HOME, 2);
    let direct = commit(&home, 20, geodb_txn::Isolation::ReadCommitted, vec![write("a", "direct")]);
    home.apply(Some(1), std::slice::from_ref(&direct), 0).unwrap();
    // The same two entries in one slot of a fresh replica: the delivery
    // sees the commit before it in the slot.
    let entry = delivery(&home, &queued[0]);
    let replica = Shard::open(HOME, Arc::new(MemoryEngine::new()), hlc_at(2), true).unwrap();
    replica.apply(Some(1), &[direct, entry], 0).unwrap();
    assert_eq!(latest(&replica, "a").as_deref(), Some("direct"));
    assert_eq!(geodb_storage::mvcc::all_versions(replica.engine().as_ref()).unwrap().len(), 1);
}

#[test]
fn a_shipped_write_from_a_clock_ahead_commits_above_its_origin() {
    // The outbox's clock is ahead of the home shard's, within the bound ε:
    // the write still takes a timestamp above its origin, so the home
    // shard's later writes are newer than it by origin too.
    let second = 1_000_000_000;
    let outbox = leader_at_ns(OUTBOX, second + MAX_OFFSET_NS / 2);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "queued")])]);
    let queued = outbox.queued(HOME, 0).unwrap();
    let home = leader_at_ns(HOME, second);
    let entry = delivery(&home, &queued[0]);
    home.apply(Some(1), &[entry], 0).unwrap();
    let a = newest_version(&home, "a");
    assert!(a.ts > a.origin && a.origin == queued[0].ts, "{a:?}");
    let next = commit(&home, 20, geodb_txn::Isolation::ReadCommitted, vec![write("a", "next")]);
    home.apply(Some(2), &[next], 0).unwrap();
    assert!(newest_version(&home, "a").origin > queued[0].ts);
}

#[test]
fn a_shipped_write_from_a_clock_far_ahead_does_not_drag_the_home_shard_along() {
    // Four seconds ahead, far beyond ε: the write counts as written at the
    // home clock's reading plus ε, and the shard's timestamps stay there.
    let outbox = leader_at(OUTBOX, 5);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "queued")])]);
    let queued = outbox.queued(HOME, 0).unwrap();
    let home = leader_at(HOME, 1);
    let entry = delivery(&home, &queued[0]);
    let Entry::Deliver { origin, .. } = &entry else { panic!("a delivery") };
    assert_eq!(*origin, Timestamp::new(1_000_000_000 + MAX_OFFSET_NS, 0));
    home.apply(Some(1), &[entry], 0).unwrap();
    let a = newest_version(&home, "a");
    assert!(a.ts > a.origin && a.ts < at(2), "{a:?}");
}

#[test]
fn shipped_writes_with_equal_origins_are_ordered_by_writer_on_every_shard() {
    // Two outboxes whose clocks read the same: their writes of "a" (one
    // home shard) and "x" (another) tie by origin; each home keeps the
    // write of the greater transaction id, whatever order they arrive in.
    let (first, second) = (leader_at(OUTBOX, 1), leader_at(OTHER_OUTBOX, 1));
    enqueue(&first, 1, 10, vec![(HOME, vec![write("a", "10")]), (OTHER_HOME, vec![write("x", "10")])]);
    enqueue(&second, 1, 11, vec![(HOME, vec![write("a", "11")]), (OTHER_HOME, vec![write("x", "11")])]);
    let (from_first, from_second) = (first.queued(HOME, 0).unwrap(), second.queued(HOME, 0).unwrap());
    assert_eq!(from_first[0].ts, from_second[0].ts);
    let ship = |home: &Shard, outbox: u64, queued: &Queued, slot: u64| {
        home.apply(Some(slot), &[delivery_from(home, outbox, queued)], 0).unwrap();
    };
    let home = leader_at(HOME, 1);
    ship(&home, OUTBOX, &from_first[0], 1);
    ship(&home, OTHER_OUTBOX, &from_second[0], 2);
    let other_home = leader_at(OTHER_HOME, 1);
    ship(&other_home, OTHER_OUTBOX, &second.queued(OTHER_HOME, 0).unwrap()[0], 1);
    ship(&other_home, OUTBOX, &first.queued(OTHER_HOME, 0).unwrap()[0], 2);
    assert_eq!(latest(&home, "a").as_deref(), Some("11"));
    assert_eq!(latest(&other_home, "x").as_deref(), Some("11"));
}

#[test]
fn the_high_water_mark_survives_a_restart() {
    let engine = Arc::new(MemoryEngine::new());
    let outbox = leader(OUTBOX);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "1")])]);
    let queued = outbox.queued(HOME, 0).unwrap();
    {
        let home = Shard::open(HOME, engine.clone(), hlc(), true).unwrap();
        home.set_serving(true);
        let entry = delivery(&home, &queued[0]);
        home.apply(Some(1), &[entry], 0).unwrap();
    }
    let home = Shard::open(HOME, engine, hlc(), true).unwrap();
    home.set_serving(true);
    assert_eq!(home.delivered_through(OUTBOX), 1);
    assert_eq!(home.propose_delivery(OUTBOX, &queued[0], &[]).unwrap(), DeliveryProposal::Applied);
}

#[test]
fn shipping_drops_the_entries_and_marks_their_writes_until_a_later_shipment_is_much_newer() {
    let outbox = leader(OUTBOX);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "1"), write("b", "1")])]);
    enqueue(&outbox, 2, 11, vec![(HOME, vec![write("a", "2")])]);
    let shipped = Entry::Shipped { dest: HOME, through: 1, ts: at(100) };
    assert_eq!(outbox.apply(Some(3), std::slice::from_ref(&shipped), 0).unwrap(), vec![Applied::Shipped]);
    // Entry 1 left the queue; "b" stays readable, marked with the home
    // shard's commit timestamp; "a" is entry 2's, still queued.
    assert_eq!(pending(&outbox), vec![(write("a", "2"), None), (write("b", "1"), Some((HOME, at(100))))]);
    let queue = outbox.queues()[0];
    assert_eq!((queue.shipped, queue.last), (1, 2));
    assert_eq!(outbox.queued(HOME, 1).unwrap().len(), 1);
    // Applied again: nothing changes.
    outbox.apply(Some(4), &[shipped], 0).unwrap();
    assert_eq!(outbox.queues()[0], queue);
    // The rest ships soon after: both writes marked.
    outbox.apply(Some(5), &[Entry::Shipped { dest: HOME, through: 2, ts: at(101) }], 0).unwrap();
    assert_eq!(outbox.forgotten(), vec![(HOME, Timestamp::ZERO)]);
    assert_eq!(
        pending(&outbox),
        vec![(write("a", "2"), Some((HOME, at(101)))), (write("b", "1"), Some((HOME, at(100))))]
    );
    // New entries continue the positions; a shipment much later drops the
    // old marks, not the write it ships.
    enqueue(&outbox, 6, 12, vec![(HOME, vec![write("c", "1")])]);
    assert_eq!(outbox.queued(HOME, 2).unwrap()[0].seq, 3);
    let later = at(101 + MARKER_KEEP_NS / 1_000_000_000 + 1);
    outbox.apply(Some(7), &[Entry::Shipped { dest: HOME, through: 3, ts: later }], 0).unwrap();
    assert_eq!(pending(&outbox), vec![(write("c", "1"), Some((HOME, later)))]);
    // A reader of the home shard's replica needs what was dropped.
    assert_eq!(outbox.forgotten(), vec![(HOME, at(101))]);
}

#[test]
fn every_replica_of_an_outbox_assigns_the_same_positions() {
    let leader_replica = leader(OUTBOX);
    let follower = Shard::open(OUTBOX, Arc::new(MemoryEngine::new()), hlc(), true).unwrap();
    let entries = [
        enqueue(&leader_replica, 1, 10, vec![(HOME, vec![write("a", "1")])]),
        enqueue(&leader_replica, 2, 11, vec![(OTHER_HOME, vec![write("x", "1")]), (HOME, vec![write("b", "1")])]),
    ];
    follower.apply(Some(1), &entries[..1], 0).unwrap();
    follower.apply(Some(2), &entries[1..], 0).unwrap();
    assert_eq!(follower.queues(), leader_replica.queues());
    assert_eq!(follower.queued(HOME, 0).unwrap(), leader_replica.queued(HOME, 0).unwrap());
    assert_eq!(follower.pending(&everything()).unwrap(), leader_replica.pending(&everything()).unwrap());
}

#[test]
fn entries_of_one_delivery_writing_one_key_go_together_in_order() {
    let outbox = leader(OUTBOX);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "1")])]);
    enqueue(&outbox, 2, 11, vec![(HOME, vec![write("a", "2")])]);
    let queued = outbox.queued(HOME, 0).unwrap();
    let home = leader(HOME);
    let first = delivery(&home, &queued[0]);
    // Alone, the second waits for the first; chained behind it, it goes.
    assert_eq!(home.propose_delivery(OUTBOX, &queued[1], &[]).unwrap(), DeliveryProposal::Blocked(TxnId(10)));
    let DeliveryProposal::Entry(second) = home.propose_delivery(OUTBOX, &queued[1], &[TxnId(10)]).unwrap() else {
        panic!("chained behind the first, the second is proposed");
    };
    let Entry::Deliver { ts: first_ts, .. } = first else { panic!("a delivery") };
    // A read at the first's timestamp waits for the chain, whose key keeps
    // the lowest timestamp until the last entry of it is applied.
    let read_at_first = ReadMode::At { read_ts: first_ts, barrier: false };
    assert!(matches!(
        home.check_get(b"a", None, None, &read_at_first).unwrap(),
        geodb_txn::participant::ReadGate::Blocked(_)
    ));
    home.apply(Some(1), &[first, second], 0).unwrap();
    assert_eq!(latest(&home, "a").as_deref(), Some("2"));
    assert_eq!(home.delivered_through(OUTBOX), 2);
    assert!(!home.holds_locks());
}

#[test]
fn what_a_queue_shipped_and_forgot_survives_a_restart() {
    let engine = Arc::new(MemoryEngine::new());
    let outbox = Shard::open(OUTBOX, engine.clone(), hlc(), true).unwrap();
    outbox.set_serving(true);
    enqueue(&outbox, 1, 10, vec![(HOME, vec![write("a", "1")])]);
    enqueue(&outbox, 2, 11, vec![(HOME, vec![write("b", "1")])]);
    outbox.apply(Some(3), &[Entry::Shipped { dest: HOME, through: 1, ts: at(100) }], 0).unwrap();
    let later = at(100 + MARKER_KEEP_NS / 1_000_000_000 + 1);
    outbox.apply(Some(4), &[Entry::Shipped { dest: HOME, through: 2, ts: later }], 0).unwrap();
    let (queues, forgotten, held) = (outbox.queues(), outbox.forgotten(), pending(&outbox));
    assert_eq!(forgotten, vec![(HOME, at(100))]);
    drop(outbox);
    let reopened = Shard::open(OUTBOX, engine, hlc(), true).unwrap();
    assert_eq!(reopened.queues(), queues);
    assert_eq!(reopened.forgotten(), forgotten);
    assert_eq!(pending(&reopened), held);
    // The positions go on where they were.
    reopened.set_serving(true);
    enqueue(&reopened, 5, 12, vec![(HOME, vec![write("c", "1")])]);
    assert_eq!(reopened.queued(HOME, 2).unwrap()[0].seq, 3);
}
