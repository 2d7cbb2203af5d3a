//! R20: a row read for writing at a shard that commits in another region
//! is locked, and its shard prepared, in the same round trip as the read;
//! the commit carries that part's values with its decision (recorded in
//! this region) instead of preparing it again across the wide area. On
//! shards of one process ([`LocalShards`]), with every request counted;
//! the simulator runs the same protocol replicated and under faults.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use geodb_storage::{Engine, MemoryEngine, ScopedEngine, Timestamp, TxnId};
use geodb_txn::conflict::ValidationFaults;
use geodb_txn::protocol::{Carried, Changes, KeyRange, Reads, Refusal};
use geodb_txn::transaction::CoordinatorFaults;
use geodb_txn::{
    Decision, Entry, Error, Hlc, Isolation, LocalShards, ManagerConfig, Place, Request, Response, Router, RpcError,
    Shard, ShardId, ShardRpc, SystemClock, Transaction, TxnManager, shard_prefix,
};

/// Shard 1 (keys starting with `a`) commits in this region; shards 2
/// (keys starting with `c`: 3) and 3 in others. All are home shards; the
/// directory of homes would live at shard 1.
struct Far;

impl Router for Far {
    fn place(&self, key: &[u8]) -> Place {
        Place::Shard(match key.first() {
            Some(b'a') => HERE,
            Some(b'c') => FAR2,
            _ => FAR,
        })
    }

    fn places_of_range(&self, _range: &KeyRange) -> Vec<Place> {
        vec![Place::Shard(HERE), Place::Shard(FAR), Place::Shard(FAR2)]
    }

    fn home_shards(&self) -> Vec<ShardId> {
        vec![HERE, FAR, FAR2]
    }

    fn home_key(&self, locality: &[u8]) -> Vec<u8> {
        [b"a-home/", locality].concat()
    }

    fn commits_in_region(&self, shard: ShardId) -> bool {
        shard == HERE
    }
}

const HERE: ShardId = 1;
const FAR: ShardId = 2;
const FAR2: ShardId = 3;

/// The shards, counting every request by shard and kind (prepares by
/// round and whether their values follow).
struct Counted {
    shards: Arc<LocalShards>,
    seen: Mutex<BTreeMap<(ShardId, String), usize>>,
}

impl Counted {
    fn count(&self, shard: ShardId, request: &Request) {
        let kind = match request {
            Request::Prepare { round, values_follow, .. } => format!("prepare {round} {values_follow}"),
            Request::Resolve { carried, .. } => format!("resolve carrying {}", carried.is_some()),
            Request::Decide { carried, .. } => format!("decide carrying {}", carried.len()),
            Request::CommitRecord { carried, .. } => format!("commit-record carrying {}", carried.len()),
            other => other.kind().to_string(),
        };
        *self.seen.lock().unwrap().entry((shard, kind)).or_default() += 1;
    }

    fn seen(&self, shard: ShardId, kind: &str) -> usize {
        self.seen.lock().unwrap().get(&(shard, kind.to_string())).copied().unwrap_or_default()
    }

    fn prepares(&self, shard: ShardId) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|((at, kind), _)| *at == shard && kind.starts_with("prepare")).map(|(_, n)| n).sum()
    }

    fn forget(&self) {
        self.seen.lock().unwrap().clear();
    }
}

impl ShardRpc for Counted {
    fn call(&self, shard: ShardId, request: Request) -> BoxFuture<'static, Result<Response, RpcError>> {
        self.count(shard, &request);
        self.shards.call(shard, request)
    }

    fn send(&self, shard: ShardId, request: Request) {
        self.count(shard, &request);
        self.shards.send(shard, request)
    }

    fn sleep_until(&self, physical_ns: u64) -> BoxFuture<'static, ()> {
        self.shards.sleep_until(physical_ns)
    }
}

struct Cluster {
    manager: Arc<TxnManager>,
    rpc: Arc<Counted>,
    here: Arc<Shard>,
    far: Arc<Shard>,
    far2: Arc<Shard>,
}

fn cluster_with(faults: CoordinatorFaults) -> Cluster {
    cluster_with_faults(faults, ValidationFaults::default())
}

/// With `validation` planted at the shards.
fn cluster_with_faults(faults: CoordinatorFaults, validation: ValidationFaults) -> Cluster {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let hlc = Arc::new(Hlc::new(Box::new(SystemClock), 1_000_000));
    let shard = |id: ShardId| {
        let view: Arc<dyn Engine> = Arc::new(ScopedEngine::new(engine.clone(), shard_prefix(id)));
        Arc::new(Shard::open_with_faults(id, view, hlc.clone(), false, validation).unwrap())
    };
    let here = shard(HERE);
    let far = shard(FAR);
    let far2 = shard(FAR2);
    let shards = Arc::new(LocalShards::new([here.clone(), far.clone(), far2.clone()]));
    let rpc = Arc::new(Counted { shards, seen: Mutex::default() });
    let manager = TxnManager::with_config(ManagerConfig {
        node: 1,
        hlc,
        rpc: rpc.clone(),
        router: Arc::new(Far),
        ids_engine: Some(engine),
        first_id: 1,
        commit_wait: false,
        faults,
    })
    .unwrap();
    Cluster { manager, rpc, here, far, far2 }
}

fn cluster() -> Cluster {
    cluster_with(CoordinatorFaults::default())
}

fn seed(cluster: &Cluster, pairs: &[(&str, i64)]) {
    let mut txn = cluster.manager.begin(Isolation::Serializable).unwrap();
    for (key, value) in pairs {
        write(&mut txn, key, *value);
    }
    txn.commit().unwrap();
    cluster.rpc.forget();
}

fn parse(bytes: Option<Vec<u8>>) -> Option<i64> {
    bytes.map(|bytes| String::from_utf8(bytes).unwrap().parse().unwrap())
}

fn read(txn: &mut Transaction, key: &str) -> Option<i64> {
    parse(txn.get(key.as_bytes()).unwrap())
}

fn read_for_write(txn: &mut Transaction, key: &str) -> Option<i64> {
    parse(txn.get_for_write(key.as_bytes()).unwrap())
}

fn write(txn: &mut Transaction, key: &str, value: i64) {
    txn.put(key.as_bytes().to_vec(), value.to_string().into_bytes()).unwrap();
}

fn current(cluster: &Cluster, key: &str) -> Option<i64> {
    let mut txn = cluster.manager.begin(Isolation::Serializable).unwrap();
    read(&mut txn, key)
}

/// Adds `by` to `key` as an `UPDATE` does: read for writing, then write.
fn add(txn: &mut Transaction, key: &str, by: i64) {
    let value = read_for_write(txn, key).unwrap_or(0);
    write(txn, key, value + by);
}

#[test]
fn a_far_row_read_for_writing_is_prepared_with_its_read_and_its_value_travels_with_the_decision() {
    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        let cluster = cluster();
        seed(&cluster, &[("a1", 10), ("b1", 10)]);
        let mut txn = cluster.manager.begin(isolation).unwrap();
        add(&mut txn, "a1", -3);
        add(&mut txn, "b1", 3);
        assert_eq!(cluster.rpc.seen(FAR, "prepare 1 true"), 1, "{isolation:?}: prepared at the statement");
        assert_eq!(cluster.rpc.prepares(HERE), 0, "a shard in the region is not prepared early");
        txn.commit().unwrap();
        assert_eq!(cluster.rpc.prepares(FAR), 1, "{isolation:?}: the commit did not prepare the far shard again");
        // R21: the record writes its own part with the decision, in one
        // round, and the decision carries the far part's values.
        assert_eq!(cluster.rpc.prepares(HERE), 0, "{isolation:?}: the record's own part was not prepared");
        assert_eq!(cluster.rpc.seen(HERE, "commit-record carrying 1"), 1, "the decision, in the region");
        assert_eq!(cluster.rpc.seen(HERE, "decide carrying 1"), 0);
        assert_eq!(cluster.rpc.seen(FAR, "resolve carrying true"), 1);
        assert_eq!((current(&cluster, "a1"), current(&cluster, "b1")), (Some(7), Some(13)));
        assert!(!cluster.far.holds_locks(), "nothing is left locked");
    }
}

#[test]
fn the_record_may_be_a_shard_the_transaction_does_not_touch() {
    let cluster = cluster();
    seed(&cluster, &[("b1", 1)]);
    let mut txn = cluster.manager.begin(Isolation::Serializable).unwrap();
    add(&mut txn, "b1", 1);
    txn.commit().unwrap();
    assert_eq!(cluster.rpc.prepares(FAR), 1);
    assert_eq!(cluster.rpc.seen(HERE, "decide carrying 1"), 1, "decided in this region, at a home shard");
    assert_eq!(current(&cluster, "b1"), Some(2));
}

#[test]
fn a_part_that_asks_more_after_its_prepare_is_prepared_again_by_a_later_round() {
    let cluster = cluster();
    seed(&cluster, &[("b1", 1)]);
    let mut txn = cluster.manager.begin(Isolation::Serializable).unwrap();
    add(&mut txn, "b1", 1);
    // Read and written at the far shard after its prepare: not covered.
    assert_eq!(read(&mut txn, "b2"), None);
    write(&mut txn, "b2", 5);
    txn.commit().unwrap();
    assert_eq!(cluster.rpc.seen(FAR, "prepare 1 true"), 1);
    assert_eq!(cluster.rpc.seen(FAR, "prepare 2 false"), 1, "the commit extends the part");
    assert_eq!((current(&cluster, "b1"), current(&cluster, "b2")), (Some(2), Some(5)));
    assert!(!cluster.far.holds_locks());
}

#[test]
fn two_rows_of_one_far_shard_take_two_rounds_and_commit_as_one_part() {
    let cluster = cluster();
    seed(&cluster, &[("b1", 10), ("b2", 10)]);
    let mut txn = cluster.manager.begin(Isolation::Snapshot).unwrap();
    add(&mut txn, "b1", -4);
    add(&mut txn, "b2", 4);
    assert_eq!(cluster.rpc.seen(FAR, "prepare 1 true"), 1);
    assert_eq!(cluster.rpc.seen(FAR, "prepare 2 true"), 1);
    txn.commit().unwrap();
    assert_eq!(cluster.rpc.prepares(FAR), 2, "nothing prepared at commit");
    assert_eq!((current(&cluster, "b1"), current(&cluster, "b2")), (Some(6), Some(14)));
}

#[test]
fn a_row_locked_at_its_statement_keeps_writers_out_older_ones_abort_younger_ones_wait() {
    let cluster = cluster();
    seed(&cluster, &[("b1", 10)]);
    // Begun before the lock is taken: older snapshots, and reads of b1 that
    // need not wait for it.
    let mut older = cluster.manager.begin(Isolation::Snapshot).unwrap();
    let mut older_reader = cluster.manager.begin(Isolation::Serializable).unwrap();
    let mut first = cluster.manager.begin(Isolation::Snapshot).unwrap();
    add(&mut first, "b1", 1);
    // A writer with an older snapshot conflicts at once: the lock is held
    // from the statement, not only from the commit, and nothing waits for a
    // younger transaction.
    write(&mut older, "b1", 100);
    assert!(matches!(older.commit(), Err(Error::Conflict(_))));
    // So does one reading it for writing: its prepare is refused, and the
    // transaction can no longer commit.
    assert!(matches!(older_reader.get_for_write(b"b1"), Err(Error::Conflict(_))));
    write(&mut older_reader, "a1", 1);
    assert!(matches!(older_reader.commit(), Err(Error::Conflict(_))), "its prepare failed: it cannot commit");
    // A writer with a younger snapshot waits for the outcome instead (or
    // comes after it): the commit lies below its snapshot (it took its
    // timestamp at the prepare), so its blind write lands after it.
    let mut younger = cluster.manager.begin(Isolation::Snapshot).unwrap();
    write(&mut younger, "b1", 200);
    let waiting = std::thread::spawn(move || younger.commit());
    wait_for_a_wait(&cluster.far);
    let committed = first.commit().unwrap();
    let outcome = waiting.join().unwrap();
    assert!(matches!(outcome, Ok(ts) if ts > committed), "{outcome:?}");
    assert_eq!(current(&cluster, "b1"), Some(200));
    assert_eq!(current(&cluster, "a1"), None);
    assert!(!cluster.far.holds_locks());
}

#[test]
fn a_transaction_begun_after_a_commit_prepares_over_its_part_once_resolved() {
    // The shape of a client updating the same far row in one transaction
    // after another: the next one's prepare may reach the shard before the
    // previous one's resolution is applied. It waits for it (an older
    // snapshot) and then succeeds, since that commit lies below its own
    // snapshot.
    let cluster = cluster();
    seed(&cluster, &[("b1", 0)]);
    let shards = &cluster.rpc.shards;
    let read_ts = cluster.manager.begin(Isolation::Snapshot).unwrap().read_ts();
    let Response::Prepared(ts) = shards.handle(FAR, prepare(&["b1"], 1, read_ts)) else { panic!() };
    let carried = Carried { shard: FAR, writes: vec![(b"b1".to_vec(), Some(b"1".to_vec()))], participants: vec![FAR] };
    let decide = Request::Decide { txn: TxnId(700), decision: Decision::Commit(ts), carried: vec![carried.clone()] };
    assert_eq!(shards.handle(HERE, decide), Response::Decided(Decision::Commit(ts)));
    // Decided, not yet resolved at the far shard; the next transaction
    // begins after the commit.
    let mut next = cluster.manager.begin(Isolation::Snapshot).unwrap();
    assert!(next.read_ts() > ts);
    // Its prepare, as the shard sees it (a first round, holding nothing
    // elsewhere), waits rather than abort...
    let waiting = {
        let shards = shards.clone();
        let request = prepare_as(701, &["b1"], 1, next.read_ts(), true);
        std::thread::spawn(move || shards.handle(FAR, request))
    };
    wait_for_a_wait(&cluster.far);
    let resolve = Request::Resolve { txn: TxnId(700), decision: Decision::Commit(ts), carried: Some(carried) };
    assert_eq!(shards.handle(FAR, resolve), Response::Resolved);
    // ...and is prepared once the earlier commit is applied below it.
    assert!(matches!(waiting.join().unwrap(), Response::Prepared(_)));
    shards.handle(FAR, Request::Resolve { txn: TxnId(701), decision: Decision::Abort, carried: None });
    // The coordinator's statement then reads the committed value.
    add(&mut next, "b1", 1);
    next.commit().unwrap();
    assert_eq!(current(&cluster, "b1"), Some(2));
}

#[test]
fn a_transaction_holding_a_part_prepared_elsewhere_conflicts_at_once_instead_of_waiting() {
    let cluster = cluster();
    seed(&cluster, &[("b1", 1), ("c1", 1)]);
    let mut older = cluster.manager.begin(Isolation::Snapshot).unwrap();
    let mut txn = cluster.manager.begin(Isolation::Snapshot).unwrap();
    add(&mut older, "c1", 1);
    add(&mut txn, "b1", 1);
    // Its prepare at the second far shard meets an older prepared
    // transaction; holding a part at the first, it must not wait.
    assert!(matches!(txn.get_for_write(b"c1"), Err(Error::Conflict(_))));
    assert_eq!(cluster.far2.stats().waits, 0);
    assert!(matches!(txn.commit(), Err(Error::Conflict(_))));
    older.commit().unwrap();
    assert_eq!((current(&cluster, "b1"), current(&cluster, "c1")), (Some(1), Some(2)));
    assert!(!cluster.far.holds_locks() && !cluster.far2.holds_locks());
}

#[test]
fn a_prepare_that_holds_parts_elsewhere_never_waits() {
    let cluster = cluster();
    let shards = &cluster.rpc.shards;
    let read_ts = cluster.manager.begin(Isolation::Snapshot).unwrap().read_ts();
    let Response::Prepared(_) = shards.handle(FAR, prepare(&["b1"], 1, read_ts)) else { panic!() };
    let younger = cluster.manager.begin(Isolation::Snapshot).unwrap().read_ts();
    let request = prepare_as(702, &["b1"], 2, younger, false);
    let answer = shards.handle(FAR, request);
    assert!(matches!(answer, Response::Refused(Refusal::Conflict(_))), "a conflict at once: {answer:?}");
    assert_eq!(cluster.far.stats().waits, 0);
}

#[test]
fn a_transaction_rolled_back_or_dropped_after_its_prepare_releases_it() {
    let cluster = cluster();
    seed(&cluster, &[("b1", 10)]);
    let mut txn = cluster.manager.begin(Isolation::Serializable).unwrap();
    add(&mut txn, "b1", 1);
    assert!(cluster.far.holds_locks());
    txn.rollback();
    assert!(!cluster.far.holds_locks(), "the rollback resolved the prepared part");
    let mut txn = cluster.manager.begin(Isolation::Serializable).unwrap();
    add(&mut txn, "b1", 1);
    drop(txn);
    assert!(!cluster.far.holds_locks(), "so did dropping it");
    let mut later = cluster.manager.begin(Isolation::Snapshot).unwrap();
    add(&mut later, "b1", 5);
    later.commit().unwrap();
    assert_eq!(current(&cluster, "b1"), Some(15));
}

#[test]
fn turned_off_the_row_is_read_as_any_other_and_prepared_at_commit() {
    let cluster = cluster();
    cluster.manager.set_early_prepare(false);
    seed(&cluster, &[("a1", 1), ("b1", 1)]);
    let mut txn = cluster.manager.begin(Isolation::Serializable).unwrap();
    add(&mut txn, "a1", 1);
    add(&mut txn, "b1", 1);
    assert_eq!(cluster.rpc.prepares(FAR), 0);
    txn.commit().unwrap();
    assert_eq!(cluster.rpc.seen(FAR, "prepare 1 false"), 1);
    assert_eq!(current(&cluster, "b1"), Some(2));
}

#[test]
fn read_committed_and_rows_in_the_region_are_never_prepared_early() {
    let cluster = cluster();
    seed(&cluster, &[("a1", 1), ("b1", 1)]);
    let mut txn = cluster.manager.begin(Isolation::ReadCommitted).unwrap();
    add(&mut txn, "b1", 1);
    txn.commit().unwrap();
    let mut txn = cluster.manager.begin(Isolation::Serializable).unwrap();
    add(&mut txn, "a1", 1);
    txn.commit().unwrap();
    assert_eq!(cluster.rpc.prepares(FAR) + cluster.rpc.prepares(HERE), 0);
}

/// Blocks until a commit or prepare at `shard` waits for an older prepared
/// transaction (R20): what the caller does next happens while it waits.
fn wait_for_a_wait(shard: &Shard) {
    let before = std::time::Instant::now();
    while shard.stats().waits == 0 {
        assert!(before.elapsed() < std::time::Duration::from_secs(60), "nothing ever waited");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn early_changes(txn: u64, read_ts: Timestamp, locked: &[&str]) -> Changes {
    Changes {
        txn: TxnId(txn),
        isolation: Isolation::Snapshot,
        read_ts,
        writes: Vec::new(),
        locked: locked.iter().map(|key| key.as_bytes().to_vec()).collect(),
        reads: Reads::default(),
        guards: Vec::new(),
        routes: Vec::new(),
        moves: Vec::new(),
    }
}

fn prepare(locked: &[&str], round: u32, read_ts: Timestamp) -> Request {
    prepare_as(700, locked, round, read_ts, false)
}

/// A prepare at a statement of transaction `txn`, locking `locked`.
fn prepare_as(txn: u64, locked: &[&str], round: u32, read_ts: Timestamp, may_wait: bool) -> Request {
    Request::Prepare {
        changes: early_changes(txn, read_ts, locked),
        record: HERE,
        participants: Vec::new(),
        round,
        values_follow: true,
        may_wait,
    }
}

/// Transaction 700 (a fresh snapshot) prepared at FAR as at a statement,
/// locking b1: its snapshot and its prepare timestamp.
fn prepare_b1(cluster: &Cluster) -> (Timestamp, Timestamp) {
    let read_ts = cluster.manager.begin(Isolation::Snapshot).unwrap().read_ts();
    let Response::Prepared(ts) = cluster.rpc.shards.handle(FAR, prepare(&["b1"], 1, read_ts)) else { panic!() };
    (read_ts, ts)
}

#[test]
fn a_later_round_extends_the_part_and_a_repeated_one_answers_it_as_it_is() {
    let cluster = cluster();
    let shards = &cluster.rpc.shards;
    // Writers with snapshots older than the part's: they abort on its locks
    // rather than wait.
    let mut writers: Vec<Transaction> = (0..2).map(|_| cluster.manager.begin(Isolation::Snapshot).unwrap()).collect();
    let read_ts = cluster.manager.begin(Isolation::Snapshot).unwrap().read_ts();
    let Response::Prepared(first) = shards.handle(FAR, prepare(&["b1"], 1, read_ts)) else { panic!() };
    assert_eq!(shards.handle(FAR, prepare(&["b1"], 1, read_ts)), Response::Prepared(first));
    let Response::Prepared(second) = shards.handle(FAR, prepare(&["b2"], 2, read_ts)) else { panic!() };
    assert!(second > first);
    // A late copy of round 1 changes nothing.
    assert_eq!(shards.handle(FAR, prepare(&["b1"], 1, read_ts)), Response::Prepared(second));
    // Both rows are locked now: a writer of either conflicts.
    for (key, mut writer) in ["b1", "b2"].into_iter().zip(writers.drain(..)) {
        write(&mut writer, key, 1);
        assert!(matches!(writer.commit(), Err(Error::Conflict(_))), "{key}");
    }
    // A commit decided with the values of both.
    let carried = Carried {
        shard: FAR,
        writes: vec![(b"b1".to_vec(), Some(b"4".to_vec())), (b"b2".to_vec(), Some(b"5".to_vec()))],
        participants: vec![FAR],
    };
    let decide =
        Request::Decide { txn: TxnId(700), decision: Decision::Commit(second), carried: vec![carried.clone()] };
    assert_eq!(shards.handle(HERE, decide), Response::Decided(Decision::Commit(second)));
    let resolve = Request::Resolve { txn: TxnId(700), decision: Decision::Commit(second), carried: Some(carried) };
    assert_eq!(shards.handle(FAR, resolve), Response::Resolved);
    assert_eq!((current(&cluster, "b1"), current(&cluster, "b2")), (Some(4), Some(5)));
}

#[test]
fn a_commit_that_reaches_a_part_without_its_values_leaves_it_prepared_until_recovery_brings_them() {
    let cluster = cluster();
    let shards = &cluster.rpc.shards;
    let (_, ts) = prepare_b1(&cluster);
    let carried = Carried { shard: FAR, writes: vec![(b"b1".to_vec(), Some(b"7".to_vec()))], participants: vec![FAR] };
    let decide = Request::Decide { txn: TxnId(700), decision: Decision::Commit(ts), carried: vec![carried.clone()] };
    assert_eq!(shards.handle(HERE, decide), Response::Decided(Decision::Commit(ts)));
    // A resolution without the values (what recovery hears when its own
    // abort lost to the commit) is refused by the leader, and resolves
    // nothing where it is applied anyway.
    let bare = Request::Resolve { txn: TxnId(700), decision: Decision::Commit(ts), carried: None };
    assert!(matches!(shards.handle(FAR, bare), Response::Refused(_)));
    let entry = Entry::Resolve { txn: TxnId(700), decision: Decision::Commit(ts), carried: None };
    cluster.far.apply(None, &[entry], 0).unwrap();
    assert!(cluster.far.is_prepared(TxnId(700)), "still prepared: its values have not come");
    // Recovery asks the record, which answers the decision with them.
    let answer = shards.handle(HERE, Request::Recover { txn: TxnId(700) });
    assert_eq!(answer, Response::Recovered { decision: Decision::Commit(ts), carried: vec![carried.clone()] });
    let resolve = Request::Resolve { txn: TxnId(700), decision: Decision::Commit(ts), carried: Some(carried) };
    assert_eq!(shards.handle(FAR, resolve), Response::Resolved);
    assert!(!cluster.far.is_prepared(TxnId(700)));
    assert_eq!(current(&cluster, "b1"), Some(7));
}

#[test]
fn a_carried_write_of_a_key_the_part_did_not_lock_is_refused_and_never_applied() {
    let cluster = cluster();
    let shards = &cluster.rpc.shards;
    let (_, ts) = prepare_b1(&cluster);
    let carried = Carried { shard: FAR, writes: vec![(b"b9".to_vec(), Some(b"7".to_vec()))], participants: vec![] };
    let resolve = Request::Resolve { txn: TxnId(700), decision: Decision::Commit(ts), carried: Some(carried) };
    assert!(matches!(shards.handle(FAR, resolve.clone()), Response::Refused(_)));
    // Applied anyway (a leader that did not check), it leaves the part
    // prepared rather than write a key nothing validated, or stop the
    // replica.
    let Request::Resolve { txn, decision, carried } = resolve else { unreachable!() };
    cluster.far.apply(None, &[Entry::Resolve { txn, decision, carried }], 0).unwrap();
    assert!(cluster.far.is_prepared(TxnId(700)));
    assert_eq!(current(&cluster, "b9"), None);
}

#[test]
fn the_planted_bug_commits_over_a_refused_prepare() {
    // The planted bug the simulator must catch: a refused prepare at a
    // statement counts as prepared. Here a conflicting lock refuses the
    // prepare, and the buggy coordinator commits anyway: its value for
    // b1 is lost (nothing was prepared to carry it to), while a1's lands.
    let cluster = cluster_with(CoordinatorFaults { ignore_early_refusal: true, ..CoordinatorFaults::default() });
    seed(&cluster, &[("a1", 10), ("b1", 10)]);
    let mut txn = cluster.manager.begin(Isolation::Snapshot).unwrap();
    let mut holder = cluster.manager.begin(Isolation::Snapshot).unwrap();
    add(&mut holder, "b1", 1);
    add(&mut txn, "a1", -5);
    let _ = txn.get_for_write(b"b1");
    write(&mut txn, "b1", 15);
    txn.commit().unwrap();
    holder.rollback();
    assert_eq!((current(&cluster, "a1"), current(&cluster, "b1")), (Some(5), Some(10)), "money vanished");
}

// --- R21: the record's own part written with the decision ----------------

/// The record's own part of transaction `txn`: writes of `pairs` at HERE.
fn own_part(txn: u64, read_ts: Timestamp, pairs: &[(&str, i64)]) -> Changes {
    Changes {
        writes: pairs
            .iter()
            .map(|(key, value)| (key.as_bytes().to_vec(), Some(value.to_string().into_bytes())))
            .collect(),
        locked: Vec::new(),
        ..early_changes(txn, read_ts, &[])
    }
}

/// A commit at the record of transaction 700, whose far part (b1, prepared
/// at its statement) gets the value 7, writing `pairs` at the record.
fn commit_record(read_ts: Timestamp, floor: Timestamp, pairs: &[(&str, i64)]) -> Request {
    Request::CommitRecord {
        own: own_part(700, read_ts, pairs),
        participants: vec![HERE, FAR],
        floor,
        carried: vec![Carried {
            shard: FAR,
            writes: vec![(b"b1".to_vec(), Some(b"7".to_vec()))],
            participants: vec![HERE, FAR],
        }],
    }
}

#[test]
fn the_record_writes_its_part_with_the_commit_once_however_often_it_is_asked() {
    let cluster = cluster();
    let shards = &cluster.rpc.shards;
    let (read_ts, prepared) = prepare_b1(&cluster);
    let Response::Decided(Decision::Commit(ts)) = shards.handle(HERE, commit_record(read_ts, prepared, &[("a1", 3)]))
    else {
        panic!("the record commits")
    };
    assert!(ts >= prepared, "at or above every other part's prepare ({ts} < {prepared})");
    // A copy (a lost answer, sent again) answers the decision recorded and
    // writes nothing more; so does a later decision of any kind.
    let copy = shards.handle(HERE, commit_record(read_ts, prepared, &[("a1", 99)]));
    assert_eq!(copy, Response::Decided(Decision::Commit(ts)));
    let abort = Request::Decide { txn: TxnId(700), decision: Decision::Abort, carried: Vec::new() };
    assert_eq!(shards.handle(HERE, abort), Response::Decided(Decision::Commit(ts)));
    assert!(!cluster.here.holds_locks(), "the copy's locks went with it");
    // Recovery of the far part hears the commit with its values.
    let Response::Recovered { decision, carried } = shards.handle(HERE, Request::Recover { txn: TxnId(700) }) else {
        panic!()
    };
    assert_eq!(decision, Decision::Commit(ts));
    let resolve = Request::Resolve { txn: TxnId(700), decision, carried: carried.into_iter().next() };
    assert_eq!(shards.handle(FAR, resolve), Response::Resolved);
    assert_eq!((current(&cluster, "a1"), current(&cluster, "b1")), (Some(3), Some(7)));
}

#[test]
fn a_commit_at_the_record_after_recovery_recorded_an_abort_writes_nothing() {
    let cluster = cluster();
    let shards = &cluster.rpc.shards;
    let (read_ts, prepared) = prepare_b1(&cluster);
    // The far part waited too long: recovery records the abort first.
    let recover = shards.handle(HERE, Request::Recover { txn: TxnId(700) });
    assert_eq!(recover, Response::Decided(Decision::Abort));
    let late = shards.handle(HERE, commit_record(read_ts, prepared, &[("a1", 3)]));
    assert_eq!(late, Response::Decided(Decision::Abort), "the first decision recorded stands");
    assert_eq!(current(&cluster, "a1"), None, "the record's part was not written");
    assert!(!cluster.here.holds_locks());
    // Also as an entry applied by a replica (whose leader did not look).
    let Request::CommitRecord { own, .. } = commit_record(read_ts, prepared, &[("a1", 3)]) else { unreachable!() };
    let own = geodb_txn::protocol::Prepared {
        changes: own,
        prepare_ts: prepared,
        record: HERE,
        participants: vec![HERE, FAR],
        round: 1,
        values_follow: false,
        locked_at: prepared,
    };
    let entry = Entry::CommitRecord { own, ts: prepared, carried: Vec::new() };
    let applied = cluster.here.apply(None, &[entry], 0).unwrap();
    assert_eq!(applied, vec![geodb_txn::participant::Applied::Decided(Decision::Abort)]);
    assert_eq!(current(&cluster, "a1"), None);
}

#[test]
fn the_planted_bug_writes_the_records_part_after_an_abort() {
    // What the simulator must catch: the record writes its own part with
    // a commit that came after recovery's abort. The far part was aborted
    // (and its money stays), the record's part lands: money appears.
    let faults = ValidationFaults { own_part_after_decision: true, ..ValidationFaults::default() };
    let cluster = cluster_with_faults(CoordinatorFaults::default(), faults);
    let shards = &cluster.rpc.shards;
    let (read_ts, prepared) = prepare_b1(&cluster);
    assert_eq!(shards.handle(HERE, Request::Recover { txn: TxnId(700) }), Response::Decided(Decision::Abort));
    let resolve = Request::Resolve { txn: TxnId(700), decision: Decision::Abort, carried: None };
    assert_eq!(shards.handle(FAR, resolve), Response::Resolved);
    shards.handle(HERE, commit_record(read_ts, prepared, &[("a1", 3)]));
    assert_eq!((current(&cluster, "a1"), current(&cluster, "b1")), (Some(3), None), "half a transaction");
}

#[test]
fn a_record_part_that_no_longer_validates_aborts_the_whole_transaction() {
    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        let cluster = cluster();
        seed(&cluster, &[("a1", 10), ("b1", 10)]);
        let mut txn = cluster.manager.begin(isolation).unwrap();
        add(&mut txn, "a1", -3);
        add(&mut txn, "b1", 3);
        // a1 is in the region, so nothing locked it at its statement: a
        // later writer commits it first.
        let mut other = cluster.manager.begin(isolation).unwrap();
        add(&mut other, "a1", 100);
        other.commit().unwrap();
        let error = txn.commit().unwrap_err();
        assert!(matches!(error, Error::Conflict(_)), "{isolation:?}: {error}");
        assert_eq!(cluster.rpc.seen(HERE, "commit-record carrying 1"), 1, "{isolation:?}");
        assert_eq!(cluster.rpc.seen(HERE, "decide carrying 0"), 1, "{isolation:?}: the abort is recorded");
        assert_eq!((current(&cluster, "a1"), current(&cluster, "b1")), (Some(110), Some(10)), "{isolation:?}");
        assert!(!cluster.far.holds_locks(), "{isolation:?}: the far part was aborted");
        assert!(!cluster.here.holds_locks(), "{isolation:?}");
    }
}
