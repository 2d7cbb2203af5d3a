//! Monotonic Atomic View in the region (`docs/design/transactions.md`,
//! "Monotonic Atomic View in the region"): which version a reader sees at
//! a node whose replicas have applied part of a transaction. The state
//! machines alone; the simulator runs them under faults and checks every
//! watch it ran for fractured reads.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use geodb_storage::MemoryEngine;
use geodb_txn::participant::{DeliveryProposal, Proposal};
use geodb_txn::protocol::{Changes, Decision, Enqueued, Reads, Write};
use geodb_txn::view::{Replicas, ViewOutcome, Viewed};
use geodb_txn::{Entry, Hlc, Isolation, ManualClock, Shard, ShardId, Timestamp, TxnId};

const A: u64 = 1;
const B: u64 = 2;
const OUTBOX: u64 = 9;

fn shard(id: u64) -> Shard {
    shard_at(id, 1)
}

/// A replica of `id` whose clock reads `seconds`.
fn shard_at(id: u64, seconds: u64) -> Shard {
    let hlc = Arc::new(Hlc::new(Box::new(ManualClock::new(seconds * 1_000_000_000)), 1_000_000));
    let shard = Shard::open(id, Arc::new(MemoryEngine::new()), hlc, true).unwrap();
    shard.set_serving(true);
    shard
}

fn write(key: &str, value: &str) -> Write {
    (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
}

fn changes(txn: u64, writes: Vec<Write>) -> Changes {
    Changes {
        txn: TxnId(txn),
        // No validation: these tests are about what readers see.
        isolation: Isolation::ReadCommitted,
        read_ts: Timestamp::ZERO,
        writes,
        locked: Vec::new(),
        reads: Reads::default(),
        guards: Vec::new(),
        routes: Vec::new(),
        moves: Vec::new(),
    }
}

fn apply(shard: &Shard, entry: Entry) {
    shard.apply(None, std::slice::from_ref(&entry), 0).unwrap();
}

/// One-shard commit of `writes` by `txn` at `shard`.
fn commit(shard: &Shard, txn: u64, writes: Vec<Write>) {
    match shard.propose_commit(&changes(txn, writes)).unwrap() {
        Proposal::Entry(entry) => apply(shard, entry),
        other => panic!("expected an entry, got {other:?}"),
    }
}

/// Prepares `txn`'s writes at `shard`, a participant with `participants`;
/// answers the prepare timestamp.
fn prepare(shard: &Shard, txn: u64, writes: Vec<Write>, participants: &[ShardId]) -> Timestamp {
    match shard.propose_prepare(&changes(txn, writes), participants[0], participants).unwrap() {
        Proposal::Entry(entry) => {
            let Entry::Prepare(prepared) = &entry else { panic!("expected a prepare, got {entry:?}") };
            let ts = prepared.prepare_ts;
            apply(shard, entry);
            ts
        }
        other => panic!("expected an entry, got {other:?}"),
    }
}

/// How a test reads.
#[derive(Clone)]
struct Reader {
    required: Vec<u64>,
    show_early: bool,
    at_most: Timestamp,
    floors: BTreeMap<ShardId, Timestamp>,
    reverse: bool,
    limit: Option<usize>,
    /// The shards read (default: all those held).
    only: Option<Vec<ShardId>>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            required: Vec::new(),
            show_early: false,
            at_most: Timestamp::MAX,
            floors: BTreeMap::new(),
            reverse: false,
            limit: None,
            only: None,
        }
    }
}

fn outcome(shards: &[&Shard], outbox: Option<&Shard>, reader: Reader) -> ViewOutcome {
    let replica = |id: ShardId| shards.iter().copied().find(|shard| shard.id() == id);
    let replicas = Replicas {
        shard: &replica,
        outbox,
        show_early: reader.show_early,
        at_most: reader.at_most,
        floors: reader.floors,
    };
    let ids: Vec<ShardId> = reader.only.unwrap_or_else(|| shards.iter().map(|shard| shard.id()).collect());
    let required: Vec<TxnId> = reader.required.iter().map(|txn| TxnId(*txn)).collect();
    let range = (Bound::Unbounded, Bound::Unbounded);
    replicas.view(&range, &ids, reader.reverse, reader.limit, &required).unwrap()
}

/// What `reader` sees of every key of the shards, through a node holding
/// `shards` and `outbox`: rows, and transactions it must see the rest of.
fn read(shards: &[&Shard], outbox: Option<&Shard>, reader: Reader) -> (Vec<(String, String)>, Vec<u64>) {
    let ViewOutcome::Viewed(Viewed { rows, seen, .. }) = outcome(shards, outbox, reader) else {
        panic!("the view waited for a replica")
    };
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (
        rows.into_iter().map(|(key, value)| (text(key), text(value))).collect(),
        seen.into_iter().map(|txn| txn.0).collect(),
    )
}

/// What a reader that already saw `required` sees of every key of the
/// shards, through a node holding `shards` and `outbox`.
fn view(
    shards: &[&Shard],
    outbox: Option<&Shard>,
    required: &[u64],
    show_early: bool,
) -> (Vec<(String, String)>, Vec<u64>) {
    read(shards, outbox, Reader { required: required.to_vec(), show_early, ..Reader::default() })
}

fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

#[test]
fn a_commit_across_shards_shows_once_every_shard_here_has_applied_it() {
    let (a, b) = (shard(A), shard(B));
    commit(&a, 1, vec![write("x", "old")]);
    commit(&b, 2, vec![write("y", "old")]);
    let ts = prepare(&a, 10, vec![write("x", "new")], &[A, B]).max(prepare(&b, 10, vec![write("y", "new")], &[A, B]));
    // Applied at A, still prepared at B (this node's replica of B lags).
    apply(&a, Entry::Decide { txn: TxnId(10), decision: Decision::Commit(ts), carried: Vec::new() });
    assert_eq!(view(&[&a, &b], None, &[], false).0, rows(&[("x", "old"), ("y", "old")]));
    // The planted bug shows half of it.
    assert_eq!(view(&[&a, &b], None, &[], true).0, rows(&[("x", "new"), ("y", "old")]));
    apply(&b, Entry::Resolve { txn: TxnId(10), decision: Decision::Commit(ts), carried: None });
    let (seen_rows, seen) = view(&[&a, &b], None, &[], false);
    assert_eq!(seen_rows, rows(&[("x", "new"), ("y", "new")]));
    assert_eq!(seen, vec![10], "the reader must see the rest of it later");
}

#[test]
fn a_transaction_seen_in_part_is_shown_in_full_even_where_it_does_not_look_caught_up() {
    let (a, b) = (shard(A), shard(B));
    // Prepared at A first, below the commit that follows: A then looks
    // behind that commit's timestamp until it is resolved.
    prepare(&a, 11, vec![write("z", "held")], &[A, B]);
    let ts = prepare(&a, 10, vec![write("x", "new")], &[A, B]).max(prepare(&b, 10, vec![write("y", "new")], &[A, B]));
    apply(&a, Entry::Decide { txn: TxnId(10), decision: Decision::Commit(ts), carried: Vec::new() });
    apply(&b, Entry::Resolve { txn: TxnId(10), decision: Decision::Commit(ts), carried: None });
    assert!(!a.caught_up(ts) && b.caught_up(ts));
    // On its own, y's version does not count as visible (A looks behind)...
    assert_eq!(view(&[&b], None, &[], false).0, rows(&[]));
    // ...but x's does (B has it all), so read together both show, and a
    // reader that saw x sees y later.
    assert_eq!(view(&[&a, &b], None, &[], false).0, rows(&[("x", "new"), ("y", "new")]));
    assert_eq!(view(&[&b], None, &[10], false).0, rows(&[("y", "new")]));
}

#[test]
fn a_shipped_write_shows_once_its_siblings_arrived_and_a_queued_one_at_once() {
    let (a, b, outbox) = (shard(A), shard(B), shard(OUTBOX));
    let enqueued = Enqueued {
        txn: TxnId(20),
        guards: Vec::new(),
        parts: vec![(A, vec![write("x", "q")]), (B, vec![write("y", "q")])],
        routes: Vec::new(),
    };
    let Proposal::Entry(entry) = outbox.propose_enqueue(&enqueued).unwrap() else { panic!("no enqueue") };
    outbox.apply(Some(1), std::slice::from_ref(&entry), 0).unwrap();
    // Through this region's outbox: the whole transaction is there.
    assert_eq!(view(&[&a, &b], Some(&outbox), &[], false).0, rows(&[("x", "q"), ("y", "q")]));
    // Another region, without that outbox: x arrives first.
    let deliver = |home: &Shard, dest: u64| {
        let queued = outbox.queued(dest, 0).unwrap().remove(0);
        assert_eq!(queued.siblings.len(), 1, "each part names the other");
        match home.propose_delivery(OUTBOX, &queued, &[]).unwrap() {
            DeliveryProposal::Entry(entry) => apply(home, entry),
            other => panic!("expected an entry, got {other:?}"),
        }
    };
    deliver(&a, A);
    assert_eq!(view(&[&a, &b], None, &[], false).0, rows(&[]));
    assert_eq!(view(&[&a, &b], None, &[], true).0, rows(&[("x", "q")]));
    deliver(&b, B);
    assert_eq!(view(&[&a, &b], None, &[], false), (rows(&[("x", "q"), ("y", "q")]), vec![20]));
    // A newer write of y from a transaction of one shard hides it, and
    // x still shows (its sibling is present: y holds a newer write).
    commit(&b, 21, vec![write("y", "newer")]);
    assert_eq!(view(&[&a, &b], None, &[], false).0, rows(&[("x", "q"), ("y", "newer")]));
}

/// Enqueues `parts` at `outbox` for transaction `txn`.
fn enqueue(outbox: &Shard, slot: u64, txn: u64, parts: Vec<(u64, Vec<Write>)>) {
    let enqueued = Enqueued { txn: TxnId(txn), guards: Vec::new(), parts, routes: Vec::new() };
    let Proposal::Entry(entry) = outbox.propose_enqueue(&enqueued).unwrap() else { panic!("no enqueue") };
    outbox.apply(Some(slot), std::slice::from_ref(&entry), 0).unwrap();
}

/// Delivers the oldest entry `outbox` queued for `home`.
fn deliver(outbox: &Shard, home: &Shard) {
    let queued = outbox.queued(home.id(), home.delivered_through(OUTBOX)).unwrap().remove(0);
    match home.propose_delivery(OUTBOX, &queued, &[]).unwrap() {
        DeliveryProposal::Entry(entry) => apply(home, entry),
        other => panic!("expected an entry, got {other:?}"),
    }
}

#[test]
fn a_reader_that_saw_a_shipped_transaction_finds_its_write_a_newer_one_superseded() {
    let (a, b, outbox) = (shard(A), shard_at(B, 2), shard(OUTBOX));
    // T, queued in another region, writes x at A and y at B; before T
    // reaches B, a newer write of y commits there (origin later than T's).
    enqueue(&outbox, 1, 30, vec![(A, vec![write("x", "t")]), (B, vec![write("y", "t")])]);
    deliver(&outbox, &a);
    commit(&b, 31, vec![write("y", "newer")]);
    deliver(&outbox, &b);
    // T's y was superseded at B (R17): its value is not y's.
    assert_eq!(view(&[&b], None, &[], false).0, rows(&[("y", "newer")]));
    // A reader that does not see the newer y (it began before it) sees T
    // whole, in one view or after seeing T's x: T's y was kept apart.
    let t_origin = a.versions(b"x", 1).unwrap()[0].origin;
    assert!(b.versions(b"y", 1).unwrap()[0].origin > t_origin);
    let before_newer = Reader { at_most: t_origin, ..Reader::default() };
    assert_eq!(read(&[&a, &b], None, before_newer.clone()).0, rows(&[("x", "t"), ("y", "t")]));
    assert_eq!(read(&[&b], None, before_newer.clone()).0, rows(&[]));
    assert_eq!(read(&[&b], None, Reader { required: vec![30], ..before_newer }).0, rows(&[("y", "t")]));
}

#[test]
fn a_version_after_the_readers_start_shows_only_if_its_transaction_is_required() {
    let (a, b) = (shard(A), shard(B));
    commit(&a, 1, vec![write("x", "old")]);
    let start = a.versions(b"x", 1).unwrap()[0].ts;
    commit(&a, 2, vec![write("x", "new")]);
    let at_start = Reader { at_most: start, ..Reader::default() };
    assert_eq!(read(&[&a, &b], None, at_start.clone()).0, rows(&[("x", "old")]));
    assert_eq!(read(&[&a, &b], None, Reader { required: vec![2], ..at_start }).0, rows(&[("x", "new")]));
}

#[test]
fn a_view_waits_for_a_replica_behind_what_its_gateway_wrote_there() {
    let (a, b) = (shard(A), shard(B));
    let ts = prepare(&a, 10, vec![write("x", "new")], &[A, B]).max(prepare(&b, 10, vec![write("y", "new")], &[A, B]));
    apply(&a, Entry::Decide { txn: TxnId(10), decision: Decision::Commit(ts), carried: Vec::new() });
    // The gateway acknowledged T, so its replica of B must catch up rather
    // than hide T's x from the client that wrote it.
    let floors: BTreeMap<ShardId, Timestamp> = [(A, ts), (B, ts)].into_iter().collect();
    let reader = Reader { floors, only: Some(vec![A]), ..Reader::default() };
    assert_eq!(outcome(&[&a, &b], None, reader.clone()), ViewOutcome::Behind(B));
    // Without the gateway's floor there, it is held back instead.
    assert_eq!(read(&[&a, &b], None, Reader { only: Some(vec![A]), ..Reader::default() }).0, rows(&[]));
    apply(&b, Entry::Resolve { txn: TxnId(10), decision: Decision::Commit(ts), carried: None });
    assert_eq!(read(&[&a, &b], None, reader).0, rows(&[("x", "new")]));
}

#[test]
fn a_view_is_limited_and_reversed_at_the_node() {
    let (a, b) = (shard(A), shard(B));
    commit(&a, 1, vec![write("k1", "1"), write("k3", "3")]);
    commit(&b, 2, vec![write("k2", "2"), write("k4", "4")]);
    let forward = Reader { limit: Some(3), ..Reader::default() };
    assert_eq!(read(&[&a, &b], None, forward).0, rows(&[("k1", "1"), ("k2", "2"), ("k3", "3")]));
    let backward = Reader { limit: Some(2), reverse: true, ..Reader::default() };
    assert_eq!(read(&[&a, &b], None, backward).0, rows(&[("k4", "4"), ("k3", "3")]));
}
