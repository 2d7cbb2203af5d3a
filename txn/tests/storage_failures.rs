//! A storage failure at commit (a full disk) fails the commit cleanly:
//! the error is reported, nothing of the transaction becomes visible, and
//! once the engine writes again, commits succeed again.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use geodb_storage::engine::ScanIter;
use geodb_storage::{ColumnFamily, Durability, Engine, MemoryEngine, WriteBatch};
use geodb_txn::{Error, Isolation, TxnManager};

/// A memory engine whose writes fail while `full` is set, like a full disk.
struct FullDisk {
    inner: MemoryEngine,
    full: AtomicBool,
}

impl Engine for FullDisk {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> geodb_storage::Result<Option<Vec<u8>>> {
        self.inner.get(cf, key)
    }
    fn scan<'a>(
        &'a self,
        cf: ColumnFamily,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> geodb_storage::Result<ScanIter<'a>> {
        self.inner.scan(cf, start, end, reverse)
    }
    fn write(&self, batch: WriteBatch, durability: Durability) -> geodb_storage::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(geodb_storage::Error::Engine("IO error: No space left on device".into()));
        }
        self.inner.write(batch, durability)
    }
    fn checkpoint(&self, dir: &Path) -> geodb_storage::Result<()> {
        self.inner.checkpoint(dir)
    }
}

#[test]
fn a_full_disk_fails_the_commit_and_hides_its_writes_until_space_returns() {
    let engine = Arc::new(FullDisk { inner: MemoryEngine::new(), full: AtomicBool::new(false) });
    let manager = TxnManager::new(engine.clone()).unwrap();
    let mut txn = manager.begin(Isolation::Serializable).unwrap();
    txn.put(b"a".to_vec(), b"1".to_vec()).unwrap();
    txn.commit().unwrap();

    engine.full.store(true, Ordering::SeqCst);
    let mut txn = manager.begin(Isolation::Serializable).unwrap();
    txn.put(b"a".to_vec(), b"2".to_vec()).unwrap();
    txn.put(b"b".to_vec(), b"2".to_vec()).unwrap();
    match txn.commit() {
        Err(Error::Storage(error)) => assert!(error.to_string().contains("No space left"), "{error}"),
        other => panic!("expected a storage error, got {other:?}"),
    }
    engine.full.store(false, Ordering::SeqCst);

    let mut reader = manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(reader.get(b"a").unwrap(), Some(b"1".to_vec()), "the failed commit is invisible");
    assert_eq!(reader.get(b"b").unwrap(), None);
    let mut txn = manager.begin(Isolation::Serializable).unwrap();
    txn.put(b"b".to_vec(), b"3".to_vec()).unwrap();
    txn.commit().unwrap();
    let mut reader = manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(reader.get(b"b").unwrap(), Some(b"3".to_vec()));
}
