//! A shard whose commits go through a replicated log: it serves only under
//! a leadership epoch its driver grants, refuses to commit a transaction
//! begun under another epoch, and validates against commits it learned
//! from the log (another leader's) exactly as against its own.
//!
//! The log here is a stand-in that records what was appended and applies
//! it when the committer waits, as a replicated log applies a chosen entry
//! before waking its committer.

use std::sync::{Arc, Mutex, Weak};

use geodb_storage::{MemoryEngine, Timestamp, TxnId, WriteBatch, mvcc};
use geodb_txn::{CommitEntry, CommitLog, Error, Isolation, ManualClock, PendingCommit, TxnManager};

/// Appended entries with their epochs; applies each to the shard on wait.
#[derive(Default)]
struct RecordingLog {
    appended: Mutex<Vec<(Timestamp, u64)>>,
    manager: Mutex<Weak<TxnManager>>,
}

struct Applies {
    entry: CommitEntry,
    manager: Weak<TxnManager>,
}

impl PendingCommit for Applies {
    fn wait(self: Box<Self>) -> geodb_txn::Result<()> {
        let manager = self.manager.upgrade().expect("the manager outlives its commits");
        manager.shard().apply(self.entry)
    }
}

/// The manager's handle on the shared log.
struct SharedLog(Arc<RecordingLog>);

impl CommitLog for SharedLog {
    fn append(&self, entry: CommitEntry, epoch: u64) -> geodb_txn::Result<Box<dyn PendingCommit>> {
        self.0.appended.lock().unwrap().push((entry.commit_ts, epoch));
        Ok(Box::new(Applies { entry, manager: self.0.manager.lock().unwrap().clone() }))
    }

    fn barrier(&self) -> geodb_txn::Result<()> {
        Ok(())
    }

    fn is_replicated(&self) -> bool {
        true
    }
}

fn replicated() -> (Arc<TxnManager>, Arc<RecordingLog>) {
    let log = Arc::new(RecordingLog::default());
    let clock = ManualClock::new(1_000_000_000);
    let manager =
        TxnManager::with_log(Arc::new(MemoryEngine::new()), Box::new(clock), 1_000, Arc::new(SharedLog(log.clone())))
            .unwrap();
    *log.manager.lock().unwrap() = Arc::downgrade(&manager);
    (manager, log)
}

#[test]
fn a_replica_without_an_epoch_serves_no_coordinated_transaction_and_commits_nothing() {
    let (manager, log) = replicated();
    for level in [Isolation::Snapshot, Isolation::Serializable] {
        assert!(matches!(manager.begin(level), Err(Error::NotLeader { .. })), "{level:?}");
    }
    // HAT reads are served by any replica; a HAT write needs the leader.
    let mut txn = manager.begin(Isolation::ReadCommitted).unwrap();
    assert_eq!(txn.get(b"k").unwrap(), None);
    txn.put(b"k".to_vec(), b"v".to_vec()).unwrap();
    assert!(matches!(txn.commit(), Err(Error::NotLeader { .. })));
    assert!(log.appended.lock().unwrap().is_empty(), "nothing was proposed");
}

#[test]
fn a_transaction_begun_under_one_leadership_cannot_commit_under_the_next() {
    let (manager, log) = replicated();
    manager.shard().set_epoch(Some(1));
    let mut old = manager.begin(Isolation::Serializable).unwrap();
    old.put(b"k".to_vec(), b"old".to_vec()).unwrap();
    // Leadership lost and regained: commits of another leader may have
    // come in between that `old` never validated against.
    manager.shard().set_epoch(Some(2));
    let error = old.commit().unwrap_err();
    assert!(error.is_retryable(), "a retryable serialization failure, got {error}");
    // A transaction of the new epoch commits, and its entry carries it.
    let mut new = manager.begin(Isolation::Serializable).unwrap();
    new.put(b"k".to_vec(), b"new".to_vec()).unwrap();
    let commit_ts = new.commit().unwrap();
    assert_eq!(*log.appended.lock().unwrap(), vec![(commit_ts, 2)]);
    let mut reader = manager.begin(Isolation::Snapshot).unwrap();
    assert_eq!(reader.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
}

#[test]
fn commits_learned_from_the_log_are_visible_and_validated_against() {
    let (manager, _log) = replicated();
    manager.shard().set_epoch(Some(7));
    let mut local = manager.begin(Isolation::Snapshot).unwrap();
    assert_eq!(local.get(b"x").unwrap(), None);
    // Another leader's commit of x, chosen and applied here. Its timestamp
    // is far ahead of this node's clock: the clock must move past it.
    let remote_ts = Timestamp::new(5_000_000_000, 0);
    let mut batch = WriteBatch::new();
    mvcc::put_version(&mut batch, b"x", remote_ts, TxnId(99), Some(b"remote"));
    manager.shard().apply(CommitEntry { commit_ts: remote_ts, keys: vec![b"x".to_vec()], batch }).unwrap();
    assert!(manager.shard().snapshot() >= remote_ts, "the applied commit is visible");
    // First committer wins against a commit learned from the log.
    local.put(b"x".to_vec(), b"local".to_vec()).unwrap();
    assert!(local.commit().unwrap_err().is_retryable());
    // A later transaction sees it, and commits above it.
    let mut later = manager.begin(Isolation::Snapshot).unwrap();
    assert_eq!(later.get(b"x").unwrap().as_deref(), Some(&b"remote"[..]));
    later.put(b"x".to_vec(), b"later".to_vec()).unwrap();
    assert!(later.commit().unwrap() > remote_ts);
}
