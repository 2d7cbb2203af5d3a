//! A shard's snapshots: written in chunks to the engine, carried chunk by
//! chunk to another replica, restored there exactly; corrupt or missing
//! chunks change nothing; a restore cut short by a crash is seen when the
//! shard opens again, serves nothing, and is redone.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use geodb_storage::{ColumnFamily, Durability, Engine, HookedEngine, MemoryEngine, WriteBatch, WriteOp};
use geodb_txn::{Hlc, ManualClock, Shard, Timestamp};

const SHARD: u64 = 3;
/// The families a snapshot carries.
const STATE: [ColumnFamily; 3] = [ColumnFamily::Data, ColumnFamily::Latest, ColumnFamily::Locks];

fn hlc() -> Arc<Hlc> {
    Arc::new(Hlc::new(Box::new(ManualClock::new(1_000_000)), 1_000))
}

/// Every pair of each family a snapshot carries.
type State = BTreeMap<ColumnFamily, Vec<(Vec<u8>, Vec<u8>)>>;

fn state(engine: &dyn Engine) -> State {
    STATE
        .into_iter()
        .map(|cf| {
            let pairs = engine.scan(cf, Bound::Unbounded, Bound::Unbounded, false).unwrap();
            (cf, pairs.map(Result::unwrap).collect())
        })
        .collect()
}

fn fill(engine: &dyn Engine, tag: &str, rows: u32) {
    let mut batch = WriteBatch::new();
    for i in 0..rows {
        let key = format!("{tag}/{i:05}").into_bytes();
        batch.put(ColumnFamily::Data, key.clone(), vec![b'v'; 40]);
        batch.put(ColumnFamily::Latest, key, vec![b'l'; 10]);
    }
    engine.write(batch, Durability::Sync).unwrap();
}

/// A replica at slot 7 holding 200 rows, snapshotted in chunks of 512
/// bytes: returns its engine, the slot and the chunk count.
fn source() -> (Arc<MemoryEngine>, Shard, u64, u64) {
    let engine = Arc::new(MemoryEngine::new());
    fill(engine.as_ref(), "row", 200);
    let shard = Shard::open(SHARD, engine.clone(), hlc(), true).unwrap();
    shard.apply(Some(7), &[], 0).unwrap();
    let (slot, chunks) = shard.write_snapshot(512).unwrap();
    (engine, shard, slot, chunks)
}

/// Carries every chunk from `from` to `to`, as the replicas' hosts do.
fn carry(from: &Shard, to: &Shard, slot: u64, chunks: u64) {
    for index in 0..chunks {
        let chunk = from.snapshot_chunk(slot, index).unwrap().expect("a stored chunk");
        assert!(chunk.len() <= 512, "chunk {index} of {} bytes", chunk.len());
        to.store_snapshot_chunk(slot, index, chunk, 0).unwrap();
    }
}

#[test]
fn a_snapshot_in_many_chunks_restores_another_replica_exactly() {
    let (source_engine, source, slot, chunks) = source();
    assert_eq!(slot, 7);
    assert!(chunks > 10, "{chunks} chunks");

    let engine = Arc::new(MemoryEngine::new());
    fill(engine.as_ref(), "stale", 30);
    let target = Shard::open(SHARD, engine.clone(), hlc(), true).unwrap();
    carry(&source, &target, slot, chunks);
    target.restore(slot, chunks, 0).unwrap();

    assert_eq!(state(engine.as_ref()), state(source_engine.as_ref()), "the families are the source's, exactly");
    assert_eq!(target.applied_slot(), 7);
    // Durable: a crash and a reopen find the same state, restored.
    engine.crash();
    let reopened = Shard::open(SHARD, engine.clone(), hlc(), true).unwrap();
    assert_eq!(reopened.applied_slot(), 7);
    assert!(reopened.caught_up(Timestamp::ZERO));
    assert_eq!(state(engine.as_ref()), state(source_engine.as_ref()));
}

#[test]
fn a_corrupt_or_missing_chunk_fails_the_restore_and_changes_nothing() {
    let (_, source, slot, chunks) = source();
    let engine = Arc::new(MemoryEngine::new());
    fill(engine.as_ref(), "mine", 5);
    let target = Shard::open(SHARD, engine.clone(), hlc(), true).unwrap();
    let before = state(engine.as_ref());

    // The last chunk never arrived.
    for index in 0..chunks - 1 {
        target.store_snapshot_chunk(slot, index, source.snapshot_chunk(slot, index).unwrap().unwrap(), 0).unwrap();
    }
    let missing = target.restore(slot, chunks, 0).unwrap_err();
    assert!(missing.to_string().contains("missing"), "{missing}");
    assert_eq!(state(engine.as_ref()), before);

    // A chunk with a flipped byte (its format, or a key out of order).
    for (index, at) in [(1, 0), (chunks - 1, 3)] {
        carry(&source, &target, slot, chunks);
        let mut chunk = source.snapshot_chunk(slot, index).unwrap().unwrap();
        chunk[at] ^= 0x40;
        target.store_snapshot_chunk(slot, index, chunk, 0).unwrap();
        assert!(target.restore(slot, chunks, 0).is_err(), "chunk {index} byte {at}");
        assert_eq!(state(engine.as_ref()), before);
        assert_eq!(target.applied_slot(), 0);
    }
}

#[test]
fn a_restore_cut_short_is_redone_and_nothing_is_read_meanwhile() {
    let (source_engine, source, slot, chunks) = source();
    // The disk fails the batch that ends the import (the one deleting the
    // restoring mark), as a crash at that moment would leave it.
    let failing = Arc::new(AtomicBool::new(true));
    let inner = Arc::new(MemoryEngine::new());
    fill(inner.as_ref(), "stale", 30);
    let fail = failing.clone();
    let engine: Arc<dyn Engine> = Arc::new(HookedEngine::new(
        inner.clone(),
        Box::new(move |batch: &WriteBatch, _| {
            let ends_import = batch.ops().iter().any(|op| matches!(op, WriteOp::Delete { cf: ColumnFamily::Meta, .. }));
            if ends_import && fail.load(Ordering::SeqCst) {
                return Err(geodb_storage::Error::Engine("IO error: the machine lost power".into()));
            }
            Ok(())
        }),
    ));
    let target = Shard::open(SHARD, engine.clone(), hlc(), true).unwrap();
    assert!(target.caught_up(Timestamp::ZERO));
    carry(&source, &target, slot, chunks);
    assert!(target.restore(slot, chunks, 0).is_err());
    assert!(!target.caught_up(Timestamp::ZERO), "a shard half restored serves no read");

    // Reopened (the process restarted): it knows the restore was cut
    // short, has applied nothing, and serves nothing until it restores.
    failing.store(false, Ordering::SeqCst);
    let reopened = Shard::open(SHARD, engine.clone(), hlc(), true).unwrap();
    assert_eq!(reopened.applied_slot(), 0);
    assert!(!reopened.caught_up(Timestamp::ZERO));
    reopened.restore(slot, chunks, 0).unwrap();
    assert!(reopened.caught_up(Timestamp::ZERO));
    assert_eq!(reopened.applied_slot(), 7);
    assert_eq!(state(inner.as_ref()), state(source_engine.as_ref()));
}

#[test]
fn storing_a_new_transfer_drops_one_given_up_but_keeps_the_replicas_own() {
    let (_, source, slot, _) = source();
    let engine = Arc::new(MemoryEngine::new());
    let target = Shard::open(SHARD, engine.clone(), hlc(), true).unwrap();
    // Its own snapshot at slot 2, and half of a transfer at slot 5.
    target.store_snapshot_chunk(2, 0, b"own".to_vec(), 0).unwrap();
    target.store_snapshot_chunk(5, 0, b"half".to_vec(), 2).unwrap();
    target.store_snapshot_chunk(5, 1, b"half".to_vec(), 2).unwrap();
    // A transfer of the snapshot at slot 7 starts.
    target.store_snapshot_chunk(slot, 0, source.snapshot_chunk(slot, 0).unwrap().unwrap(), 2).unwrap();
    assert_eq!(target.snapshot_chunk(2, 0).unwrap(), Some(b"own".to_vec()));
    assert_eq!(target.snapshot_chunk(5, 0).unwrap(), None, "the transfer given up is gone");
    assert_eq!(target.snapshot_chunk(5, 1).unwrap(), None);
    // Once the new one is persisted, the older ones go.
    target.drop_snapshots(|stored| stored < slot).unwrap();
    assert_eq!(target.snapshot_chunk(2, 0).unwrap(), None);
    assert!(target.snapshot_chunk(slot, 0).unwrap().is_some());
}
