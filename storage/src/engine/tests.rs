//! The engine suite: one set of tests, generic over [`Engine`], run against
//! every engine, so that code above the trait can trust any of them alike.
//!
//! Each scenario is a generic function; `engine_suite!` instantiates all of
//! them for one engine type as a module of `#[test]`s (`memory::*`, and
//! `rocks::*` with the `rocksdb` feature, each RocksDB test in its own
//! temporary directory). The model test drives random batches and scans
//! through an engine and a `BTreeMap` side by side.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use tempfile::TempDir;

#[cfg(feature = "rocksdb")]
use super::rocks::RocksEngine;
use super::{ColumnFamily, Durability, Engine, KeyValue, MemoryEngine, WriteBatch};
use crate::Result;

/// What the suite needs beyond the [`Engine`] trait: making an engine and
/// opening a checkpoint, which are each engine's own business.
trait TestEngine: Engine + Sized {
    /// Cases of the model property test. Opening RocksDB takes
    /// milliseconds, so its engine runs fewer.
    const MODEL_CASES: u32;

    /// A new, empty engine.
    fn fresh() -> Fresh<Self>;

    /// Opens a directory written by [`Engine::checkpoint`].
    fn open_checkpoint(dir: &Path) -> Result<Self>;
}

/// An engine and the temporary directory it lives in, if any. The engine
/// is declared first so that it is dropped (closed) before its directory
/// is deleted.
struct Fresh<E> {
    engine: E,
    _dir: Option<TempDir>,
}

impl TestEngine for MemoryEngine {
    const MODEL_CASES: u32 = 256;

    fn fresh() -> Fresh<Self> {
        Fresh { engine: MemoryEngine::new(), _dir: None }
    }

    fn open_checkpoint(dir: &Path) -> Result<Self> {
        MemoryEngine::open_checkpoint(dir)
    }
}

#[cfg(feature = "rocksdb")]
impl TestEngine for RocksEngine {
    const MODEL_CASES: u32 = 64;

    fn fresh() -> Fresh<Self> {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let engine = Self::open(dir.path()).expect("opening RocksDB");
        Fresh { engine, _dir: Some(dir) }
    }

    fn open_checkpoint(dir: &Path) -> Result<Self> {
        Self::open(dir)
    }
}

fn put(cf: ColumnFamily, key: &[u8], value: &[u8]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(cf, key.to_vec(), value.to_vec());
    batch
}

fn delete(cf: ColumnFamily, key: &[u8]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.delete(cf, key.to_vec());
    batch
}

fn scan_all<E: Engine>(
    engine: &E,
    cf: ColumnFamily,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    reverse: bool,
) -> Vec<KeyValue> {
    engine.scan(cf, start, end, reverse).unwrap().collect::<Result<_>>().unwrap()
}

/// Whether `key` lies within the bounds, computed without any engine.
fn within(key: &[u8], start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    let above_start = match start {
        Bound::Unbounded => true,
        Bound::Included(start) => key >= start,
        Bound::Excluded(start) => key > start,
    };
    let below_end = match end {
        Bound::Unbounded => true,
        Bound::Included(end) => key <= end,
        Bound::Excluded(end) => key < end,
    };
    above_start && below_end
}

/// What a scan of `model` must return.
fn expected_scan(
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    reverse: bool,
) -> Vec<KeyValue> {
    let mut pairs: Vec<KeyValue> =
        model.iter().filter(|(key, _)| within(key, start, end)).map(|(k, v)| (k.clone(), v.clone())).collect();
    if reverse {
        pairs.reverse();
    }
    pairs
}

fn get_put_delete<E: Engine>(engine: &E) {
    let cf = ColumnFamily::Data;
    assert_eq!(engine.get(cf, b"k").unwrap(), None);
    engine.write(put(cf, b"k", b"v1"), Durability::Sync).unwrap();
    assert_eq!(engine.get(cf, b"k").unwrap(), Some(b"v1".to_vec()));
    engine.write(put(cf, b"k", b"v2"), Durability::Buffered).unwrap();
    assert_eq!(engine.get(cf, b"k").unwrap(), Some(b"v2".to_vec()));
    engine.write(delete(cf, b"k"), Durability::Sync).unwrap();
    assert_eq!(engine.get(cf, b"k").unwrap(), None);
    // Deleting an absent key is not an error.
    engine.write(delete(cf, b"absent"), Durability::Sync).unwrap();
    // The empty key and the empty value are ordinary.
    engine.write(put(cf, b"", b""), Durability::Sync).unwrap();
    assert_eq!(engine.get(cf, b"").unwrap(), Some(Vec::new()));
    // An empty batch is a no-op.
    engine.write(WriteBatch::new(), Durability::Sync).unwrap();
    assert_eq!(scan_all(engine, cf, Bound::Unbounded, Bound::Unbounded, false), vec![(Vec::new(), Vec::new())]);
}

fn batch_applies_in_order<E: Engine>(engine: &E) {
    let cf = ColumnFamily::Data;
    let mut batch = WriteBatch::new();
    batch.put(cf, b"put then delete".to_vec(), b"1".to_vec());
    batch.delete(cf, b"put then delete".to_vec());
    batch.delete(cf, b"delete then put".to_vec());
    batch.put(cf, b"delete then put".to_vec(), b"1".to_vec());
    batch.put(cf, b"put twice".to_vec(), b"1".to_vec());
    batch.put(cf, b"put twice".to_vec(), b"2".to_vec());
    engine.write(batch, Durability::Sync).unwrap();
    assert_eq!(engine.get(cf, b"put then delete").unwrap(), None);
    assert_eq!(engine.get(cf, b"delete then put").unwrap(), Some(b"1".to_vec()));
    assert_eq!(engine.get(cf, b"put twice").unwrap(), Some(b"2".to_vec()));
}

/// Readers never see part of a batch. A writer bumps a counter held in two
/// families and two keys of one family, one batch per bump; readers check
/// that a scan sees both keys equal, and that the data family, read after
/// the locks family, is never behind it. (A torn batch would expose the
/// locks family's new value while the data family still held the old one.)
fn batch_is_atomic_to_readers<E: Engine>(engine: &E) {
    /// Batches the writer applies; readers run until it is done.
    const WRITES: u64 = 2_000;
    const READERS: usize = 2;

    let writer_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..READERS {
            scope.spawn(|| {
                let mut reads = 0u64;
                while !writer_done.load(Ordering::Acquire) || reads == 0 {
                    reads += 1;
                    let pairs = scan_all(engine, ColumnFamily::Data, Bound::Unbounded, Bound::Unbounded, false);
                    if let [(_, first), (_, second)] = pairs.as_slice() {
                        assert_eq!(first, second, "a scan saw half a batch");
                    } else {
                        assert!(pairs.is_empty(), "a scan saw half a batch: {pairs:?}");
                    }
                    let locks = engine.get(ColumnFamily::Locks, b"counter").unwrap();
                    let data = engine.get(ColumnFamily::Data, b"counter a").unwrap();
                    assert!(data >= locks, "the data family fell behind the locks family: {data:?} < {locks:?}");
                }
            });
        }
        for i in 0..WRITES {
            let value = i.to_be_bytes().to_vec();
            let mut batch = WriteBatch::new();
            batch.put(ColumnFamily::Locks, b"counter".to_vec(), value.clone());
            batch.put(ColumnFamily::Data, b"counter a".to_vec(), value.clone());
            batch.put(ColumnFamily::Data, b"counter b".to_vec(), value);
            engine.write(batch, Durability::Buffered).unwrap();
        }
        writer_done.store(true, Ordering::Release);
    });
}

/// Every combination of start and end bound kinds, at keys present, absent,
/// below and above everything, forward and reverse, against a model.
fn scan_bounds<E: Engine>(engine: &E) {
    let cf = ColumnFamily::Data;
    let keys: [&[u8]; 8] = [b"", b"a", b"a\0", b"a\0\0", b"b", b"ba", b"c", b"\xff"];
    let mut model = BTreeMap::new();
    let mut batch = WriteBatch::new();
    for (i, key) in keys.into_iter().enumerate() {
        let value = vec![i as u8];
        batch.put(cf, key.to_vec(), value.clone());
        model.insert(key.to_vec(), value);
    }
    engine.write(batch, Durability::Sync).unwrap();

    let probes: [&[u8]; 11] = [b"", b"\0", b"a", b"a\0", b"aa", b"b", b"b\0", b"bb", b"c", b"\xff", b"\xff\xff"];
    let mut bounds = vec![Bound::Unbounded];
    for probe in probes {
        bounds.push(Bound::Included(probe));
        bounds.push(Bound::Excluded(probe));
    }
    for &start in &bounds {
        for &end in &bounds {
            for reverse in [false, true] {
                assert_eq!(
                    scan_all(engine, cf, start, end, reverse),
                    expected_scan(&model, start, end, reverse),
                    "scan from {start:?} to {end:?}, reverse {reverse}"
                );
            }
        }
    }
}

fn column_families_are_independent<E: Engine>(engine: &E) {
    let mut batch = WriteBatch::new();
    for cf in ColumnFamily::ALL {
        batch.put(cf, b"k".to_vec(), cf.name().as_bytes().to_vec());
    }
    engine.write(batch, Durability::Sync).unwrap();
    for cf in ColumnFamily::ALL {
        assert_eq!(engine.get(cf, b"k").unwrap(), Some(cf.name().as_bytes().to_vec()));
    }

    engine.write(delete(ColumnFamily::Locks, b"k"), Durability::Sync).unwrap();
    engine.write(put(ColumnFamily::Meta, b"m", b"1"), Durability::Sync).unwrap();
    assert_eq!(engine.get(ColumnFamily::Locks, b"k").unwrap(), None);
    assert_eq!(
        scan_all(engine, ColumnFamily::Data, Bound::Unbounded, Bound::Unbounded, false),
        vec![(b"k".to_vec(), b"data".to_vec())]
    );
    assert_eq!(scan_all(engine, ColumnFamily::Locks, Bound::Unbounded, Bound::Unbounded, true), vec![]);
    assert_eq!(
        scan_all(engine, ColumnFamily::Meta, Bound::Unbounded, Bound::Unbounded, false),
        vec![(b"k".to_vec(), b"meta".to_vec()), (b"m".to_vec(), b"1".to_vec())]
    );
}

/// A checkpoint holds the state as of the checkpoint, in every family,
/// including buffered writes, and none of the writes after it.
fn checkpoint_then_reopen<E: TestEngine>(engine: &E) {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint_dir = dir.path().join("checkpoint");
    engine.write(put(ColumnFamily::Data, b"a", b"1"), Durability::Sync).unwrap();
    engine.write(put(ColumnFamily::Locks, b"b", b"1"), Durability::Sync).unwrap();
    engine.write(put(ColumnFamily::Meta, b"c", b"1"), Durability::Buffered).unwrap();
    engine.write(put(ColumnFamily::Data, b"gone", b"1"), Durability::Sync).unwrap();
    engine.write(delete(ColumnFamily::Data, b"gone"), Durability::Sync).unwrap();
    engine.checkpoint(&checkpoint_dir).unwrap();

    engine.write(put(ColumnFamily::Data, b"a", b"2"), Durability::Sync).unwrap();
    engine.write(put(ColumnFamily::Data, b"later", b"1"), Durability::Sync).unwrap();
    engine.write(delete(ColumnFamily::Locks, b"b"), Durability::Sync).unwrap();

    let restored = E::open_checkpoint(&checkpoint_dir).unwrap();
    assert_eq!(
        scan_all(&restored, ColumnFamily::Data, Bound::Unbounded, Bound::Unbounded, false),
        vec![(b"a".to_vec(), b"1".to_vec())]
    );
    assert_eq!(restored.get(ColumnFamily::Locks, b"b").unwrap(), Some(b"1".to_vec()));
    assert_eq!(restored.get(ColumnFamily::Meta, b"c").unwrap(), Some(b"1".to_vec()));
    // The original goes on as if nothing happened.
    assert_eq!(engine.get(ColumnFamily::Data, b"a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(engine.get(ColumnFamily::Locks, b"b").unwrap(), None);
    // Writes to the restored copy do not reach the original.
    restored.write(put(ColumnFamily::Data, b"restored", b"1"), Durability::Sync).unwrap();
    assert_eq!(engine.get(ColumnFamily::Data, b"restored").unwrap(), None);
}

fn checkpoint_into_an_existing_directory_fails<E: Engine>(engine: &E) {
    let dir = tempfile::tempdir().unwrap();
    engine.write(put(ColumnFamily::Data, b"a", b"1"), Durability::Sync).unwrap();
    assert!(engine.checkpoint(dir.path()).is_err());
}

/// One operation of the model test.
#[derive(Clone, Debug)]
enum ModelOp {
    Put(ColumnFamily, Vec<u8>, Vec<u8>),
    Delete(ColumnFamily, Vec<u8>),
}

/// One scan of the model test.
type ModelScan = (ColumnFamily, Bound<Vec<u8>>, Bound<Vec<u8>>, bool);

fn arb_cf() -> impl Strategy<Value = ColumnFamily> {
    proptest::sample::select(ColumnFamily::ALL.to_vec())
}

/// Keys from a tiny alphabet with the edge bytes, so that batches collide
/// and bounds fall on, between and around stored keys (the empty key too).
fn arb_key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![Just(0x00u8), Just(0x01), Just(0xFF)], 0..3)
}

fn arb_bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![Just(Bound::Unbounded), arb_key().prop_map(Bound::Included), arb_key().prop_map(Bound::Excluded)]
}

fn arb_batches() -> impl Strategy<Value = Vec<(Vec<ModelOp>, Durability)>> {
    let op = prop_oneof![
        (arb_cf(), arb_key(), proptest::collection::vec(any::<u8>(), 0..3))
            .prop_map(|(cf, key, value)| ModelOp::Put(cf, key, value)),
        (arb_cf(), arb_key()).prop_map(|(cf, key)| ModelOp::Delete(cf, key)),
    ];
    let durability = prop_oneof![Just(Durability::Sync), Just(Durability::Buffered)];
    proptest::collection::vec((proptest::collection::vec(op, 0..6), durability), 1..10)
}

fn arb_scans() -> impl Strategy<Value = Vec<ModelScan>> {
    proptest::collection::vec((arb_cf(), arb_bound(), arb_bound(), any::<bool>()), 1..6)
}

/// Applies `batches` to a fresh engine and to a model, checking `scans`
/// and point reads of every key touched after each batch.
fn matches_model<E: TestEngine>(
    batches: Vec<(Vec<ModelOp>, Durability)>,
    scans: Vec<ModelScan>,
) -> Result<(), TestCaseError> {
    let fresh = E::fresh();
    let engine = &fresh.engine;
    let mut model: BTreeMap<ColumnFamily, BTreeMap<Vec<u8>, Vec<u8>>> =
        ColumnFamily::ALL.into_iter().map(|cf| (cf, BTreeMap::new())).collect();
    let mut touched = Vec::new();
    for (ops, durability) in batches {
        let mut batch = WriteBatch::new();
        for op in ops {
            match op {
                ModelOp::Put(cf, key, value) => {
                    model.get_mut(&cf).unwrap().insert(key.clone(), value.clone());
                    touched.push((cf, key.clone()));
                    batch.put(cf, key, value);
                }
                ModelOp::Delete(cf, key) => {
                    model.get_mut(&cf).unwrap().remove(&key);
                    touched.push((cf, key.clone()));
                    batch.delete(cf, key);
                }
            }
        }
        engine.write(batch, durability).unwrap();

        for (cf, start, end, reverse) in &scans {
            let (start, end) = (start.as_ref().map(Vec::as_slice), end.as_ref().map(Vec::as_slice));
            prop_assert_eq!(
                scan_all(engine, *cf, start, end, *reverse),
                expected_scan(&model[cf], start, end, *reverse),
                "scan of {:?} from {:?} to {:?}, reverse {}",
                cf,
                start,
                end,
                reverse
            );
        }
        for (cf, key) in &touched {
            prop_assert_eq!(engine.get(*cf, key).unwrap(), model[cf].get(key).cloned());
        }
    }
    Ok(())
}

macro_rules! engine_suite {
    ($module:ident, $engine:ty) => {
        mod $module {
            use super::*;

            #[test]
            fn get_put_delete() {
                super::get_put_delete(&<$engine>::fresh().engine);
            }

            #[test]
            fn batch_applies_in_order() {
                super::batch_applies_in_order(&<$engine>::fresh().engine);
            }

            #[test]
            fn batch_is_atomic_to_readers() {
                super::batch_is_atomic_to_readers(&<$engine>::fresh().engine);
            }

            #[test]
            fn scan_bounds() {
                super::scan_bounds(&<$engine>::fresh().engine);
            }

            #[test]
            fn column_families_are_independent() {
                super::column_families_are_independent(&<$engine>::fresh().engine);
            }

            #[test]
            fn checkpoint_then_reopen() {
                super::checkpoint_then_reopen(&<$engine>::fresh().engine);
            }

            #[test]
            fn checkpoint_into_an_existing_directory_fails() {
                super::checkpoint_into_an_existing_directory_fails(&<$engine>::fresh().engine);
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(<$engine as TestEngine>::MODEL_CASES))]

                #[test]
                fn matches_a_btreemap_model(batches in arb_batches(), scans in arb_scans()) {
                    super::matches_model::<$engine>(batches, scans)?;
                }
            }
        }
    };
}

engine_suite!(memory, MemoryEngine);

#[cfg(feature = "rocksdb")]
engine_suite!(rocks, RocksEngine);

#[cfg(feature = "rocksdb")]
#[test]
fn rocks_data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = RocksEngine::open(dir.path()).unwrap();
        let mut batch = WriteBatch::new();
        for cf in ColumnFamily::ALL {
            batch.put(cf, b"synced".to_vec(), cf.name().as_bytes().to_vec());
        }
        engine.write(batch, Durability::Sync).unwrap();
        // A buffered write survives a clean close (only a crash may lose it).
        engine.write(put(ColumnFamily::Data, b"buffered", b"1"), Durability::Buffered).unwrap();
        engine.write(delete(ColumnFamily::Meta, b"synced"), Durability::Sync).unwrap();
    }
    let engine = RocksEngine::open(dir.path()).unwrap();
    assert_eq!(engine.get(ColumnFamily::Data, b"synced").unwrap(), Some(b"data".to_vec()));
    assert_eq!(engine.get(ColumnFamily::Locks, b"synced").unwrap(), Some(b"locks".to_vec()));
    assert_eq!(engine.get(ColumnFamily::Meta, b"synced").unwrap(), None);
    assert_eq!(engine.get(ColumnFamily::PaxosLog, b"synced").unwrap(), Some(b"paxos_log".to_vec()));
    assert_eq!(engine.get(ColumnFamily::PaxosState, b"synced").unwrap(), Some(b"paxos_state".to_vec()));
    assert_eq!(engine.get(ColumnFamily::Data, b"buffered").unwrap(), Some(b"1".to_vec()));
}
