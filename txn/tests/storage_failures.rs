//! A storage failure at commit (a full disk) fails the commit cleanly:
//! the error is reported, nothing of the transaction becomes visible, and
//! once the engine writes again, commits succeed again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use geodb_storage::{HookedEngine, MemoryEngine};
use geodb_txn::{Error, Isolation, TxnManager};

/// A memory engine whose writes fail while `full` is set, like a full disk.
fn full_disk() -> (Arc<HookedEngine>, Arc<AtomicBool>) {
    let full = Arc::new(AtomicBool::new(false));
    let engine =
        HookedEngine::failing_while(Arc::new(MemoryEngine::new()), full.clone(), "IO error: No space left on device");
    (Arc::new(engine), full)
}

#[test]
fn a_full_disk_fails_the_commit_and_hides_its_writes_until_space_returns() {
    let (engine, full) = full_disk();
    let manager = TxnManager::new(engine.clone()).unwrap();
    let mut txn = manager.begin(Isolation::Serializable).unwrap();
    txn.put(b"a".to_vec(), b"1".to_vec()).unwrap();
    txn.commit().unwrap();

    full.store(true, Ordering::SeqCst);
    let mut txn = manager.begin(Isolation::Serializable).unwrap();
    txn.put(b"a".to_vec(), b"2".to_vec()).unwrap();
    txn.put(b"b".to_vec(), b"2".to_vec()).unwrap();
    match txn.commit() {
        Err(Error::Storage(error)) => assert!(error.to_string().contains("No space left"), "{error}"),
        other => panic!("expected a storage error, got {other:?}"),
    }
    full.store(false, Ordering::SeqCst);

    let mut reader = manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(reader.get(b"a").unwrap(), Some(b"1".to_vec()), "the failed commit is invisible");
    assert_eq!(reader.get(b"b").unwrap(), None);
    let mut txn = manager.begin(Isolation::Serializable).unwrap();
    txn.put(b"b".to_vec(), b"3".to_vec()).unwrap();
    txn.commit().unwrap();
    let mut reader = manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(reader.get(b"b").unwrap(), Some(b"3".to_vec()));
}
