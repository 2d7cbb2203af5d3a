//! Version garbage collection through the transaction layer
//! (`docs/design/storage.md`, "Version garbage collection"): what a pass
//! removes, what every read at or above its horizon still sees, the
//! transactions running on the node holding it back, the clear refusal of
//! a snapshot another node's pass collected, and the threshold surviving a
//! restart.

use std::sync::Arc;

use geodb_storage::mvcc::{self, Siblings, Version};
use geodb_storage::{Engine, MemoryEngine, ScopedEngine};
use geodb_txn::participant::{barrier, collect_node, gc_horizon, kept};
use geodb_txn::{
    Error, Hlc, Isolation, SINGLE_NODE_SHARD, Shard, SystemClock, Timestamp, TxnId, TxnManager, shard_prefix,
};

/// One node with one local shard, on the system clock.
fn node() -> (Arc<dyn Engine>, Arc<TxnManager>, Arc<Shard>) {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let (manager, shard) = TxnManager::single_node(engine.clone(), Box::new(SystemClock), 1_000_000).unwrap();
    (engine, manager, shard)
}

fn set(manager: &Arc<TxnManager>, key: &str, value: i64) {
    let mut txn = manager.begin(Isolation::Serializable).unwrap();
    txn.put(key.as_bytes().to_vec(), value.to_string().into_bytes()).unwrap();
    txn.commit().unwrap();
}

fn get(txn: &mut geodb_txn::Transaction, key: &str) -> Result<Option<i64>, Error> {
    txn.begin_statement();
    Ok(txn.get(key.as_bytes())?.map(|bytes| String::from_utf8(bytes).unwrap().parse().unwrap()))
}

fn versions(shard: &Shard, key: &str) -> usize {
    mvcc::versions_of(shard.engine().as_ref(), key.as_bytes(), usize::MAX).unwrap().len()
}

/// The horizon of a pass now with no history kept (`gc.ttl_ms = 0`), held
/// back by the node's running transactions.
fn horizon_now(manager: &TxnManager) -> Timestamp {
    gc_horizon(manager.hlc().physical_now_ns(), 0, manager.oldest_snapshot())
}

#[test]
fn a_pass_keeps_the_newest_version_and_every_read_at_or_above_its_horizon_is_unchanged() {
    let (_engine, manager, shard) = node();
    for value in 1..=10 {
        set(&manager, "hot", value);
    }
    set(&manager, "cold", 7);
    let mut delete = manager.begin(Isolation::Serializable).unwrap();
    delete.put(b"gone".to_vec(), b"1".to_vec()).unwrap();
    delete.commit().unwrap();
    let mut delete = manager.begin(Isolation::Serializable).unwrap();
    delete.delete(b"gone".to_vec()).unwrap();
    delete.commit().unwrap();

    let collected = collect_node(std::slice::from_ref(&shard), horizon_now(&manager), &|_, _, _| {}, || true).unwrap();
    assert_eq!(collected.versions, 9 + 1, "nine older versions of hot, and gone's value behind its tombstone");
    assert_eq!((versions(&shard, "hot"), versions(&shard, "cold"), versions(&shard, "gone")), (1, 1, 1));

    let mut reader = manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(get(&mut reader, "hot").unwrap(), Some(10));
    assert_eq!(get(&mut reader, "cold").unwrap(), Some(7));
    assert_eq!(get(&mut reader, "gone").unwrap(), None);
    reader.commit().unwrap();
    let again = collect_node(std::slice::from_ref(&shard), horizon_now(&manager), &|_, _, _| {}, || true).unwrap();
    assert_eq!(again.versions, 0, "nothing is left to collect");
}

#[test]
fn a_transaction_running_on_the_node_holds_collection_back_and_reads_its_snapshot() {
    let (_engine, manager, shard) = node();
    for value in 1..=5 {
        set(&manager, "k", value);
    }
    let mut old = manager.begin(Isolation::Snapshot).unwrap();
    assert_eq!(get(&mut old, "k").unwrap(), Some(5));
    for value in 6..=10 {
        set(&manager, "k", value);
    }

    let held = horizon_now(&manager);
    assert!(held <= manager.oldest_snapshot().unwrap(), "the horizon stays at or below the running snapshot");
    let collected = collect_node(std::slice::from_ref(&shard), held, &|_, _, _| {}, || true).unwrap();
    assert_eq!(collected.versions, 4, "only what lies behind the version the running transaction reads");
    assert_eq!(get(&mut old, "k").unwrap(), Some(5), "its snapshot is whole");
    old.commit().unwrap();

    assert_eq!(manager.oldest_snapshot(), None);
    let collected = collect_node(std::slice::from_ref(&shard), horizon_now(&manager), &|_, _, _| {}, || true).unwrap();
    assert_eq!(collected.versions, 5, "once it ended, the rest behind the newest");
    assert_eq!(versions(&shard, "k"), 1);
}

#[test]
fn a_snapshot_another_nodes_pass_collected_is_refused_with_40001_not_answered_wrong() {
    let (_engine, manager, shard) = node();
    for value in 1..=3 {
        set(&manager, "k", value);
    }
    set(&manager, "other", 1);
    let mut old = manager.begin(Isolation::Snapshot).unwrap();
    assert_eq!(get(&mut old, "k").unwrap(), Some(3));
    for value in 4..=6 {
        set(&manager, "k", value);
    }
    // A pass that does not know this transaction (as on a replica of
    // another node): its horizon is the clock's, above the snapshot.
    let horizon = gc_horizon(manager.hlc().physical_now_ns(), 0, None);
    collect_node(std::slice::from_ref(&shard), horizon, &|_, _, _| {}, || true).unwrap();
    // Capped at the newest commit: no version lies above it.
    assert_eq!(shard.gc_threshold(), horizon.min(shard.last_commit_ts()));

    let refused = get(&mut old, "other").unwrap_err();
    assert!(matches!(&refused, Error::Conflict(message) if message.contains("snapshot too old")), "{refused:?}");
    drop(old);
    let mut again = manager.begin(Isolation::Snapshot).unwrap();
    assert_eq!(get(&mut again, "k").unwrap(), Some(6), "a transaction run again reads the newest");
}

#[test]
fn the_threshold_survives_a_restart() {
    let (engine, manager, shard) = node();
    set(&manager, "k", 1);
    set(&manager, "k", 2);
    collect_node(std::slice::from_ref(&shard), horizon_now(&manager), &|_, _, _| {}, || true).unwrap();
    let threshold = shard.gc_threshold();
    assert!(threshold > Timestamp::ZERO);
    drop((manager, shard));
    let hlc = Arc::new(Hlc::new(Box::new(SystemClock), 1_000_000));
    let view = Arc::new(ScopedEngine::new(engine, shard_prefix(SINGLE_NODE_SHARD)));
    let reopened = Shard::open(SINGLE_NODE_SHARD, view, hlc, false).unwrap();
    assert_eq!(reopened.gc_threshold(), threshold);
}

#[test]
fn only_a_version_of_a_transaction_of_this_shard_alone_shadows_older_ones() {
    let version = |siblings| Version {
        ts: Timestamp::new(5, 0),
        txn: TxnId(1),
        value: None,
        origin: Timestamp::new(5, 0),
        siblings,
    };
    assert!(barrier(b"k", &version(Siblings::None)));
    assert!(!barrier(b"k", &version(Siblings::Shards(vec![2]))), "shown per node, once the other shards arrived there");
    let shipped = version(Siblings::Keys(vec![(2, b"x".to_vec())]));
    assert!(!barrier(b"k", &shipped));
    assert!(kept(&shipped), "MAV readers of the sibling key look for it");
    assert!(!kept(&version(Siblings::Shards(vec![2]))));
}

/// Carries `from`'s snapshot at `slot` in `chunks` chunks to `to` and
/// restores it there, as replicas' hosts do.
fn restore(from: &Shard, slot: u64, chunks: u64, to: &Shard) {
    for index in 0..chunks {
        to.store_snapshot_chunk(slot, index, from.snapshot_chunk(slot, index).unwrap().unwrap(), 0).unwrap();
    }
    to.restore(slot, chunks, 0).unwrap();
}

/// The threshold a restart finds in `shard`'s engine.
fn reopened_threshold(engine: &Arc<dyn Engine>) -> Timestamp {
    let hlc = Arc::new(Hlc::new(Box::new(SystemClock), 1_000_000));
    let view = Arc::new(ScopedEngine::new(engine.clone(), shard_prefix(SINGLE_NODE_SHARD)));
    Shard::open(SINGLE_NODE_SHARD, view, hlc, false).unwrap().gc_threshold()
}

fn all_versions(shard: &Shard) -> usize {
    mvcc::all_versions(shard.engine().as_ref()).unwrap().len()
}

#[test]
fn a_replica_restored_from_a_snapshot_refuses_below_the_higher_threshold() {
    let (_, source_manager, source) = node();
    for value in 1..=3 {
        set(&source_manager, "k", value);
    }
    collect_node(std::slice::from_ref(&source), horizon_now(&source_manager), &|_, _, _| {}, || true).unwrap();
    let collected_at = source.gc_threshold();
    let (slot, chunks) = source.write_snapshot(512).unwrap();

    // A replica that collected below less takes the snapshot's threshold;
    // one that collected below more keeps its own.
    let (_, _, lower) = node();
    restore(&source, slot, chunks, &lower);
    assert_eq!(lower.gc_threshold(), collected_at);
    let (_, higher_manager, higher) = node();
    set(&higher_manager, "x", 1);
    collect_node(std::slice::from_ref(&higher), horizon_now(&higher_manager), &|_, _, _| {}, || true).unwrap();
    let later = higher.gc_threshold();
    assert!(later > collected_at);
    restore(&source, slot, chunks, &higher);
    assert_eq!(higher.gc_threshold(), later);
}

#[test]
fn a_pass_stops_at_a_snapshot_restore_and_a_restart_never_finds_less_than_was_collected() {
    // A source with 40 keys of 5 versions each, never collected.
    let (_, source_manager, source) = node();
    for value in 1..=5 {
        for key in 0..40 {
            set(&source_manager, &format!("k{key:02}"), value);
        }
    }
    let (slot, chunks) = source.write_snapshot(4096).unwrap();
    let (engine, manager, replica) = node();
    restore(&source, slot, chunks, &replica);
    assert_eq!(all_versions(&replica), 200);

    // A pass collects its first chunk; then the snapshot is restored again
    // (the engine's threshold is the snapshot's, none): the pass stops, and
    // a restart finds a threshold that matches what the engine holds.
    let mut pass = replica.begin_collection(horizon_now(&manager)).unwrap().expect("a pass");
    assert!(!replica.collect_chunk(&mut pass, &|_, _| {}, 25).unwrap());
    assert!(pass.collected().versions > 0);
    restore(&source, slot, chunks, &replica);
    assert!(replica.collect_chunk(&mut pass, &|_, _| {}, 25).unwrap(), "the pass stops at the restore");
    assert_eq!(all_versions(&replica), 200, "nothing of the restored state was collected");
    assert_eq!(reopened_threshold(&engine), Timestamp::ZERO);
    assert!(replica.gc_threshold() > Timestamp::ZERO, "reads stay refused below the higher threshold");

    // The next pass writes the threshold again before it collects.
    let collected = replica.collect_versions(horizon_now(&manager), &|_, _| {}, || true).unwrap().unwrap();
    assert_eq!(collected.versions, 160);
    assert_eq!(reopened_threshold(&engine), replica.gc_threshold());
}
