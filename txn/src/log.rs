//! Where a shard's commits become durable: the local disk, or a replicated log.
//!
//! [`Shard::commit`](crate::Shard::commit) decides a transaction's outcome
//! (validation, commit timestamp) and then hands its versions to a
//! [`CommitLog`] as one [`CommitEntry`]. Two logs exist:
//!
//! - [`LocalLog`]: the node's own engine, through group commit. A single
//!   node is its own shard; this is the foundation's commit path.
//! - A replicated log (the server's Multi-Paxos groups): the entry is
//!   proposed to the shard's group and the commit is durable once a quorum
//!   chose it. Every replica, the leader included, then writes the entry's
//!   batch into its engine and calls [`Shard::apply`](crate::Shard::apply),
//!   so all replicas hold the same versions and the same log of recent
//!   commits (validation on a new leader sees what the old one committed).
//!
//! Contract of a log: entries become visible in the engine in the order
//! they were appended (the shard appends in commit-timestamp order), and
//! [`PendingCommit::wait`] returns `Ok` only once the entry's batch is
//! durable *and* written to this node's engine.

use geodb_storage::{Timestamp, WriteBatch};

use crate::{Error, Result};

/// One commit as a log carries it: its timestamp, the user keys it wrote
/// or locked (for validation of later commits on any replica), and the
/// versions to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitEntry {
    pub commit_ts: Timestamp,
    pub keys: Vec<Vec<u8>>,
    pub batch: WriteBatch,
}

/// Format tag of an encoded [`CommitEntry`]; bump on any change.
const ENTRY_FORMAT: u8 = 1;

impl CommitEntry {
    /// The entry as bytes (a command of the replicated log).
    pub fn encode(&self) -> Vec<u8> {
        let batch = self.batch.encode();
        let keys_len: usize = self.keys.iter().map(|key| 4 + key.len()).sum();
        let mut out = Vec::with_capacity(1 + Timestamp::ENCODED_LEN + 4 + keys_len + batch.len());
        out.push(ENTRY_FORMAT);
        out.extend_from_slice(&self.commit_ts.encode());
        out.extend_from_slice(&(self.keys.len() as u32).to_be_bytes());
        for key in &self.keys {
            out.extend_from_slice(&(key.len() as u32).to_be_bytes());
            out.extend_from_slice(key);
        }
        out.extend_from_slice(&batch);
        out
    }

    /// Reads what [`CommitEntry::encode`] wrote; anything else is corrupt.
    pub fn decode(bytes: &[u8]) -> Result<CommitEntry> {
        let corrupt = |what: &str| Error::Storage(geodb_storage::Error::Corrupt(format!("commit entry: {what}")));
        let mut rest = bytes;
        let mut take = |n: usize| -> Result<&[u8]> {
            if rest.len() < n {
                return Err(corrupt("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        if take(1)? != [ENTRY_FORMAT] {
            return Err(corrupt("unknown format"));
        }
        let commit_ts = Timestamp::decode(take(Timestamp::ENCODED_LEN)?).ok_or_else(|| corrupt("timestamp"))?;
        let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        // Each key costs at least its 4-byte length: bounds the allocation
        // by the input, whatever the count claims.
        let mut keys = Vec::with_capacity(count.min(bytes.len() / 4));
        for _ in 0..count {
            let len = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            keys.push(take(len)?.to_vec());
        }
        let batch = WriteBatch::decode(rest).map_err(Error::Storage)?;
        Ok(CommitEntry { commit_ts, keys, batch })
    }
}

/// A commit handed to a log, not yet known durable.
pub trait PendingCommit: Send {
    /// Blocks until the entry is durable and in this node's engine, or
    /// fails. An error means "not committed" unless it is
    /// [`Error::OutcomeUnknown`].
    fn wait(self: Box<Self>) -> Result<()>;
}

/// Where a shard's commits go. See the module documentation.
pub trait CommitLog: Send + Sync + 'static {
    /// Appends `entry`, validated under leadership `epoch` (see
    /// [`Shard::set_epoch`](crate::Shard::set_epoch)): a replicated log must
    /// refuse it, proposing nothing, if its shard's epoch has changed since.
    /// Called with the shard's sequencer held, so entries arrive in
    /// commit-timestamp order; must not block.
    fn append(&self, entry: CommitEntry, epoch: u64) -> Result<Box<dyn PendingCommit>>;

    /// Called before a coordinated transaction takes its snapshot: returns
    /// once this node may serve it — every commit chosen before the call
    /// is in the local engine and this node still leads the shard.
    /// [`Error::NotLeader`] otherwise.
    fn barrier(&self) -> Result<()>;

    /// Whether the shard applies its own entries through
    /// [`Shard::apply`](crate::Shard::apply) (a replicated log) rather than
    /// at [`PendingCommit::wait`] (the local log).
    fn is_replicated(&self) -> bool;

    /// Durable syncs so far, for metrics (0 where the log does not count).
    fn syncs(&self) -> u64 {
        0
    }
}

/// The single-node log: the engine itself, with group commit.
pub struct LocalLog {
    committer: std::sync::Arc<geodb_storage::group_commit::GroupCommitter>,
}

impl LocalLog {
    pub fn new(engine: std::sync::Arc<dyn geodb_storage::Engine>) -> Self {
        LocalLog { committer: std::sync::Arc::new(geodb_storage::group_commit::GroupCommitter::new(engine)) }
    }
}

struct LocalPending {
    committer: std::sync::Arc<geodb_storage::group_commit::GroupCommitter>,
    ticket: geodb_storage::group_commit::Ticket,
}

impl PendingCommit for LocalPending {
    fn wait(self: Box<Self>) -> Result<()> {
        Ok(self.committer.wait(self.ticket)?)
    }
}

impl CommitLog for LocalLog {
    fn append(&self, entry: CommitEntry, _epoch: u64) -> Result<Box<dyn PendingCommit>> {
        let ticket = self.committer.submit(entry.batch);
        Ok(Box::new(LocalPending { committer: self.committer.clone(), ticket }))
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    fn is_replicated(&self) -> bool {
        false
    }

    fn syncs(&self) -> u64 {
        self.committer.syncs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geodb_storage::ColumnFamily;
    use proptest::prelude::*;

    fn entry() -> CommitEntry {
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::Data, b"k1".to_vec(), b"v1".to_vec());
        batch.delete(ColumnFamily::Latest, b"k2".to_vec());
        CommitEntry { commit_ts: Timestamp::new(42, 7), keys: vec![b"k1".to_vec(), Vec::new()], batch }
    }

    #[test]
    fn an_entry_round_trips() {
        let entry = entry();
        assert_eq!(CommitEntry::decode(&entry.encode()).unwrap(), entry);
    }

    #[test]
    fn every_truncation_of_an_entry_is_refused() {
        let bytes = entry().encode();
        for len in 0..bytes.len() {
            // A cut inside the batch may still decode as a shorter batch
            // only if the batch format allows it; the entry header never does.
            if len < 1 + Timestamp::ENCODED_LEN + 4 + 4 + 2 + 4 {
                assert!(CommitEntry::decode(&bytes[..len]).is_err(), "prefix of {len} bytes accepted");
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = CommitEntry::decode(&bytes);
        }
    }
}
