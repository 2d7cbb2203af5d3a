//! Transactions across shards, on shards of one process ([`LocalShards`]):
//! two-phase commit, its locks and what they block, the decision record
//! and recovery. The same protocol runs replicated, under faults, in the
//! simulator (`services/sim`, the bank workload).

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use geodb_storage::{Engine, MemoryEngine, ScopedEngine, Timestamp, TxnId};
use geodb_txn::protocol::{Changes, KeyRange, ReadMode, Reads};
use geodb_txn::transaction::CoordinatorFaults;
use geodb_txn::{
    Decision, Error, Hlc, Isolation, LocalShards, ManagerConfig, Place, Request, Response, Router, Shard, ShardId,
    SystemClock, Transaction, TxnManager, shard_prefix,
};

/// Keys starting with `a` live in shard 1, everything else in shard 2.
struct ByFirstByte;

impl Router for ByFirstByte {
    fn place(&self, key: &[u8]) -> Place {
        Place::Shard(if key.first() == Some(&b'a') { 1 } else { 2 })
    }

    fn places_of_range(&self, _range: &KeyRange) -> Vec<Place> {
        vec![Place::Shard(1), Place::Shard(2)]
    }
}

struct Cluster {
    manager: Arc<TxnManager>,
    shards: Arc<LocalShards>,
}

fn cluster() -> Cluster {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let hlc = Arc::new(Hlc::new(Box::new(SystemClock), 1_000_000));
    let shard = |id: ShardId| {
        let view: Arc<dyn Engine> = Arc::new(ScopedEngine::new(engine.clone(), shard_prefix(id)));
        Arc::new(Shard::open(id, view, hlc.clone(), false).unwrap())
    };
    let shards = Arc::new(LocalShards::new([shard(1), shard(2)]));
    let manager = TxnManager::with_config(ManagerConfig {
        node: 1,
        hlc,
        rpc: shards.clone(),
        router: Arc::new(ByFirstByte),
        ids_engine: Some(engine),
        first_id: 1,
        commit_wait: false,
        faults: CoordinatorFaults::default(),
    })
    .unwrap();
    Cluster { manager, shards }
}

fn seed(manager: &Arc<TxnManager>, pairs: &[(&str, i64)]) {
    let mut txn = manager.begin(Isolation::Serializable).unwrap();
    for (key, value) in pairs {
        txn.put(key.as_bytes().to_vec(), value.to_string().into_bytes()).unwrap();
    }
    txn.commit().unwrap();
}

fn read(txn: &mut Transaction, key: &str) -> Option<i64> {
    txn.get(key.as_bytes()).unwrap().map(|bytes| String::from_utf8(bytes).unwrap().parse().unwrap())
}

fn write(txn: &mut Transaction, key: &str, value: i64) {
    txn.put(key.as_bytes().to_vec(), value.to_string().into_bytes()).unwrap();
}

fn changes(txn: u64, isolation: Isolation, read_ts: Timestamp, writes: &[&str], reads: &[&str]) -> Changes {
    Changes {
        txn: TxnId(txn),
        isolation,
        read_ts,
        writes: writes.iter().map(|key| (key.as_bytes().to_vec(), Some(b"9".to_vec()))).collect(),
        locked: Vec::new(),
        reads: Reads { keys: reads.iter().map(|key| key.as_bytes().to_vec()).collect(), ranges: Vec::new() },
        guards: Vec::new(),
        routes: Vec::new(),
        moves: Vec::new(),
    }
}

#[test]
fn a_transaction_across_shards_commits_atomically_everywhere() {
    let cluster = cluster();
    seed(&cluster.manager, &[("a1", 10), ("b1", 10)]);
    let mut txn = cluster.manager.begin(Isolation::Serializable).unwrap();
    let (a, b) = (read(&mut txn, "a1").unwrap(), read(&mut txn, "b1").unwrap());
    write(&mut txn, "a1", a - 3);
    write(&mut txn, "b1", b + 3);
    let committed = txn.commit().unwrap();
    let mut check = cluster.manager.begin(Isolation::Snapshot).unwrap();
    assert!(check.read_ts() > committed);
    assert_eq!((read(&mut check, "a1"), read(&mut check, "b1")), (Some(7), Some(13)));
    for shard in cluster.shards.shards() {
        assert!(!shard.holds_locks(), "shard {} kept a lock", shard.id());
    }
    // The record shard (the first that writes) holds the decision.
    let decided = cluster.shards.shard(1).unwrap().decision(TxnId(1 << 44 | 2)).unwrap();
    assert!(matches!(decided, Some(Decision::Commit(_))), "{decided:?}");
}

#[test]
fn first_committer_wins_across_shards_at_snapshot_isolation() {
    let cluster = cluster();
    seed(&cluster.manager, &[("a1", 0), ("b1", 0)]);
    let mut t1 = cluster.manager.begin(Isolation::Snapshot).unwrap();
    let mut t2 = cluster.manager.begin(Isolation::Snapshot).unwrap();
    write(&mut t1, "a1", 1);
    write(&mut t1, "b1", 1);
    write(&mut t2, "b1", 2);
    write(&mut t2, "a1", 2);
    t1.commit().unwrap();
    assert!(t2.commit().unwrap_err().is_retryable());
    let mut check = cluster.manager.begin(Isolation::Serializable).unwrap();
    assert_eq!((read(&mut check, "a1"), read(&mut check, "b1")), (Some(1), Some(1)));
}

#[test]
fn write_skew_across_shards_is_allowed_at_snapshot_and_prevented_at_serializable() {
    for (level, allowed) in [(Isolation::Snapshot, true), (Isolation::Serializable, false)] {
        let cluster = cluster();
        seed(&cluster.manager, &[("a1", 1), ("b1", 1)]);
        let mut t1 = cluster.manager.begin(level).unwrap();
        let mut t2 = cluster.manager.begin(level).unwrap();
        // Each reads both doctors on call and lets the other one go.
        let both = |txn: &mut Transaction| read(txn, "a1").unwrap() + read(txn, "b1").unwrap();
        assert_eq!(both(&mut t1), 2);
        assert_eq!(both(&mut t2), 2);
        write(&mut t1, "a1", 0);
        write(&mut t2, "b1", 0);
        let first = t1.commit();
        let second = t2.commit();
        assert!(first.is_ok());
        assert_eq!(second.is_ok(), allowed, "{level}: {second:?}");
    }
}

#[test]
fn a_phantom_in_another_shard_is_prevented_at_serializable() {
    let cluster = cluster();
    seed(&cluster.manager, &[("a1", 1), ("b1", 1)]);
    let mut counter = cluster.manager.begin(Isolation::Serializable).unwrap();
    let rows = counter.scan(Bound::Included(b"b".to_vec()), Bound::Excluded(b"c".to_vec()), false, None).unwrap();
    assert_eq!(rows.len(), 1);
    write(&mut counter, "a1", rows.len() as i64);
    let mut inserter = cluster.manager.begin(Isolation::Serializable).unwrap();
    write(&mut inserter, "b2", 1);
    inserter.commit().unwrap();
    assert!(counter.commit().unwrap_err().is_retryable(), "the scan of shard 2 missed b2");
}

#[test]
fn a_read_above_a_prepared_lock_waits_for_the_decision() {
    let cluster = cluster();
    seed(&cluster.manager, &[("b1", 1)]);
    let shards = cluster.shards.clone();
    let read_ts = cluster.manager.begin(Isolation::Snapshot).unwrap().read_ts();
    let prepare_ts = match shards.handle(
        2,
        Request::Prepare {
            changes: changes(900, Isolation::Snapshot, read_ts, &["b1"], &[]),
            record: 2,
            participants: vec![2],
            round: 1,
            values_follow: false,
            may_wait: false,
        },
    ) {
        Response::Prepared(ts) => ts,
        other => panic!("{other:?}"),
    };
    let mut reader = cluster.manager.begin(Isolation::Snapshot).unwrap();
    assert!(reader.read_ts() > prepare_ts);
    let deciding = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        shards
            .handle(2, Request::Decide { txn: TxnId(900), decision: Decision::Commit(prepare_ts), carried: Vec::new() })
    });
    // Blocks until the decision, then sees the committed value: never reads
    // around the lock.
    assert_eq!(read(&mut reader, "b1"), Some(9));
    assert_eq!(deciding.join().unwrap(), Response::Decided(Decision::Commit(prepare_ts)));
    // A read below the prepare timestamp never waited and saw the old value.
    let mut old = cluster.manager.begin(Isolation::Snapshot).unwrap();
    let below = ReadMode::At { read_ts: prepare_ts.prev(), barrier: false };
    let response = cluster
        .shards
        .handle(2, Request::Get { txn: old.id(), key: b"b1".to_vec(), mode: below, guard: None, route: None });
    assert_eq!(response, Response::Value(Some(b"1".to_vec())));
    assert_eq!(read(&mut old, "b1"), Some(9));
}

#[test]
fn prepared_serializable_reads_keep_later_writers_out() {
    let cluster = cluster();
    seed(&cluster.manager, &[("b1", 1), ("b2", 1)]);
    let mut older = cluster.manager.begin(Isolation::Snapshot).unwrap();
    let read_ts = cluster.manager.begin(Isolation::Serializable).unwrap().read_ts();
    let prepared = changes(901, Isolation::Serializable, read_ts, &["b2"], &["b1"]);
    let response = cluster.shards.handle(
        2,
        Request::Prepare {
            changes: prepared,
            record: 2,
            participants: vec![1, 2],
            round: 1,
            values_follow: false,
            may_wait: false,
        },
    );
    assert!(matches!(response, Response::Prepared(_)), "{response:?}");
    // A coordinated writer of the read key aborts rather than commit below
    // the prepared transaction's (unknown) commit timestamp (R8), if its
    // snapshot is older (it never waits for a younger transaction)...
    write(&mut older, "b1", 5);
    assert!(older.commit().unwrap_err().is_retryable());
    // ...and waits for the outcome if it is younger (R20).
    let mut younger = cluster.manager.begin(Isolation::Snapshot).unwrap();
    write(&mut younger, "b1", 6);
    let waiting = std::thread::spawn(move || younger.commit());
    let before = std::time::Instant::now();
    while cluster.shards.shard(2).unwrap().stats().waits == 0 {
        assert!(before.elapsed() < Duration::from_secs(60), "the younger writer never waited");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Readers are not held up by read locks.
    let mut reader = cluster.manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut reader, "b1"), Some(1));
    cluster.shards.handle(2, Request::Decide { txn: TxnId(901), decision: Decision::Abort, carried: Vec::new() });
    waiting.join().unwrap().unwrap();
    let mut reader = cluster.manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut reader, "b1"), Some(6));
}

#[test]
fn a_highly_available_write_waits_for_a_prepared_lock_instead_of_aborting() {
    let cluster = cluster();
    seed(&cluster.manager, &[("b1", 1)]);
    let read_ts = cluster.manager.begin(Isolation::Snapshot).unwrap().read_ts();
    let response = cluster.shards.handle(
        2,
        Request::Prepare {
            changes: changes(902, Isolation::Snapshot, read_ts, &["b1"], &[]),
            record: 2,
            participants: vec![2],
            round: 1,
            values_follow: false,
            may_wait: false,
        },
    );
    let Response::Prepared(prepare_ts) = response else { panic!("{response:?}") };
    let shards = cluster.shards.clone();
    let deciding = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        shards
            .handle(2, Request::Decide { txn: TxnId(902), decision: Decision::Commit(prepare_ts), carried: Vec::new() })
    });
    let mut writer = cluster.manager.begin(Isolation::ReadCommitted).unwrap();
    write(&mut writer, "b1", 7);
    let committed = writer.commit().unwrap();
    deciding.join().unwrap();
    // Applied above the prepared transaction: last writer wins.
    assert!(committed > prepare_ts);
    let mut check = cluster.manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut check, "b1"), Some(7));
}

#[test]
fn recovery_aborts_a_transaction_whose_coordinator_never_decided() {
    let cluster = cluster();
    seed(&cluster.manager, &[("a1", 1), ("b1", 1)]);
    let read_ts = cluster.manager.begin(Isolation::Snapshot).unwrap().read_ts();
    for shard in [1, 2] {
        let key = if shard == 1 { "a1" } else { "b1" };
        let prepared = changes(903, Isolation::Snapshot, read_ts, &[key], &[]);
        let response = cluster.shards.handle(
            shard,
            Request::Prepare {
                changes: prepared,
                record: 1,
                participants: vec![1, 2],
                round: 1,
                values_follow: false,
                may_wait: false,
            },
        );
        assert!(matches!(response, Response::Prepared(_)), "{response:?}");
    }
    // The coordinator is gone. A participant asks the record shard, which
    // records the abort; the participant resolves as recorded.
    let recovered = cluster.shards.handle(1, Request::Recover { txn: TxnId(903) });
    assert_eq!(recovered, Response::Decided(Decision::Abort));
    assert!(!cluster.shards.shard(1).unwrap().holds_locks(), "the record shard resolved its own part");
    cluster.shards.handle(2, Request::Resolve { txn: TxnId(903), decision: Decision::Abort, carried: None });
    assert!(!cluster.shards.shard(2).unwrap().holds_locks());
    // A coordinator that comes back late cannot commit any more: the first
    // decision recorded wins.
    let late = cluster.shards.handle(
        1,
        Request::Decide { txn: TxnId(903), decision: Decision::Commit(read_ts.next()), carried: Vec::new() },
    );
    assert_eq!(late, Response::Decided(Decision::Abort));
    let mut check = cluster.manager.begin(Isolation::Serializable).unwrap();
    assert_eq!((read(&mut check, "a1"), read(&mut check, "b1")), (Some(1), Some(1)));
}

#[test]
fn requests_are_idempotent() {
    let cluster = cluster();
    seed(&cluster.manager, &[("b1", 1)]);
    let read_ts = cluster.manager.begin(Isolation::Snapshot).unwrap().read_ts();
    let prepare = || Request::Prepare {
        changes: changes(904, Isolation::Snapshot, read_ts, &["b1"], &[]),
        record: 2,
        participants: vec![2],
        round: 1,
        values_follow: false,
        may_wait: false,
    };
    let first = cluster.shards.handle(2, prepare());
    assert_eq!(cluster.shards.handle(2, prepare()), first, "a repeated prepare answers the same timestamp");
    let Response::Prepared(ts) = first else { panic!("{first:?}") };
    let decide = || Request::Decide { txn: TxnId(904), decision: Decision::Commit(ts), carried: Vec::new() };
    assert_eq!(cluster.shards.handle(2, decide()), Response::Decided(Decision::Commit(ts)));
    assert_eq!(cluster.shards.handle(2, decide()), Response::Decided(Decision::Commit(ts)));
    let resolve = Request::Resolve { txn: TxnId(904), decision: Decision::Commit(ts), carried: None };
    assert_eq!(cluster.shards.handle(2, resolve), Response::Resolved);
    let mut check = cluster.manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut check, "b1"), Some(9));
}

#[test]
fn prepared_transactions_survive_a_restart_of_their_shard() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let hlc = Arc::new(Hlc::new(Box::new(SystemClock), 1_000_000));
    let open = || {
        let view: Arc<dyn Engine> = Arc::new(ScopedEngine::new(engine.clone(), shard_prefix(2)));
        Arc::new(Shard::open(2, view, hlc.clone(), false).unwrap())
    };
    let shards = LocalShards::new([open()]);
    let response = shards.handle(
        2,
        Request::Prepare {
            changes: changes(905, Isolation::Snapshot, Timestamp::new(1, 0), &["b1"], &[]),
            record: 1,
            participants: vec![1, 2],
            round: 1,
            values_follow: false,
            may_wait: false,
        },
    );
    assert!(matches!(response, Response::Prepared(_)));
    drop(shards);
    let reopened = open();
    assert!(reopened.is_prepared(TxnId(905)) && reopened.holds_locks());
    assert_eq!(reopened.stale_prepared(u64::MAX), vec![(TxnId(905), 1)]);
}

#[test]
fn a_transaction_too_old_for_the_log_of_recent_commits_aborts() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let first = TxnManager::new(engine.clone()).unwrap();
    seed(&first, &[("a1", 1)]);
    drop(first);
    // After a restart, commits before it are not in the log: a transaction
    // whose snapshot predates them cannot be validated.
    let restarted = TxnManager::new(engine).unwrap();
    let Place::Shard(shard) = restarted.router().place(b"a1") else { panic!("one shard") };
    let old = changes(906, Isolation::Snapshot, Timestamp::new(1, 0), &["a1"], &[]);
    let response = match restarted.rpc().call(shard, Request::CommitOne(old)).now_or_never_ready() {
        Ok(response) => response,
        Err(error) => panic!("{error}"),
    };
    assert!(matches!(response.into_result(), Err(Error::Conflict(_))));
}

/// Local calls complete at once.
trait NowOrNever<T> {
    fn now_or_never_ready(self) -> T;
}

impl<T, F: std::future::Future<Output = T>> NowOrNever<T> for F {
    fn now_or_never_ready(self) -> T {
        futures::executor::block_on(self)
    }
}
