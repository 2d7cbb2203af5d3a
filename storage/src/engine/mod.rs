//! The engine trait: the narrow waist between GeoDB and its key-value store.
//!
//! An engine is an ordered byte-key/byte-value store with a few column
//! families, atomic write batches and checkpoints. It knows nothing of
//! versions, transactions or SQL. Two implementations pass the same suite
//! (`engine::tests`): [`MemoryEngine`] for tests and the simulator, and
//! `RocksEngine` (feature `rocksdb`) for real nodes.
//!
//! Architecture Invariant: this module must never mention RocksDB types in
//! its signatures, so that every crate above can run on the memory engine.

mod batch;
mod combined;
mod hooked;
mod memory;
#[cfg(feature = "rocksdb")]
pub mod rocks;
mod scoped;
#[cfg(test)]
mod tests;

use std::ops::Bound;
use std::path::Path;

pub use batch::{WriteBatch, WriteOp};
pub use combined::CombinedWrite;
pub use hooked::{HookedEngine, WriteHook};
pub use memory::MemoryEngine;
pub use scoped::ScopedEngine;

use crate::Result;

/// The column families every engine provides. Each is its own ordered key
/// space: the same key in two families names two different records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnFamily {
    /// MVCC versions of user data (see `mvcc`).
    Data,
    /// The newest version of each user key, under the plain key: a point
    /// read at a recent snapshot is one `get` instead of an iterator seek.
    Latest,
    /// Prepared, not yet committed writes (locks / intents), apart from the
    /// data so that readers of committed data never scan over them.
    Locks,
    /// Node-local metadata: id allocators, clock high-water marks.
    Meta,
    /// The log entries of this node's Multi-Paxos groups, each group's log
    /// one contiguous range ordered by slot (see `paxos_log`).
    PaxosLog,
    /// Each Multi-Paxos group's hard state and latest snapshot, apart from
    /// the log so that truncating the log never scans over them.
    PaxosState,
    /// State-machine snapshots in chunks, each under its snapshot's slot
    /// and its index (see `snapshot`): kept to send to lagging replicas,
    /// and received chunk by chunk before one is restored.
    Snapshots,
}

impl ColumnFamily {
    pub const ALL: [ColumnFamily; 7] = [
        ColumnFamily::Data,
        ColumnFamily::Latest,
        ColumnFamily::Locks,
        ColumnFamily::Meta,
        ColumnFamily::PaxosLog,
        ColumnFamily::PaxosState,
        ColumnFamily::Snapshots,
    ];

    /// The family's name on disk. Never change one: it is part of the format.
    pub fn name(self) -> &'static str {
        match self {
            ColumnFamily::Data => "data",
            ColumnFamily::Latest => "latest",
            ColumnFamily::Locks => "locks",
            ColumnFamily::Meta => "meta",
            ColumnFamily::PaxosLog => "paxos_log",
            ColumnFamily::PaxosState => "paxos_state",
            ColumnFamily::Snapshots => "snapshots",
        }
    }

    /// The family's tag in byte formats that name families (an encoded
    /// [`WriteBatch`], a state-machine `snapshot`). Written out here rather
    /// than taken from the declaration order, so that reordering or
    /// inserting a variant cannot change what stored bytes mean. Never
    /// change or reuse one: it is part of the format.
    pub fn tag(self) -> u8 {
        match self {
            ColumnFamily::Data => 1,
            ColumnFamily::Latest => 2,
            ColumnFamily::Locks => 3,
            ColumnFamily::Meta => 4,
            ColumnFamily::PaxosLog => 5,
            ColumnFamily::PaxosState => 6,
            ColumnFamily::Snapshots => 7,
        }
    }

    /// The family a [`ColumnFamily::tag`] names, if any.
    pub fn from_tag(tag: u8) -> Option<ColumnFamily> {
        ColumnFamily::ALL.into_iter().find(|cf| cf.tag() == tag)
    }
}

/// Whether [`Engine::write`] returns before or after the batch is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The write-ahead log is synced to stable storage before `write`
    /// returns: the batch survives a crash of the process or the machine.
    Sync,
    /// The batch is in the write-ahead log buffer; a process crash may lose
    /// it. Only for data that can be rebuilt.
    Buffered,
}

/// A key-value pair read from an engine.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An ordered iterator over a scan. Errors end the iteration.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KeyValue>> + 'a>;

/// An ordered key-value store with column families.
///
/// Contract for implementers:
/// - `get` and `scan` see every batch whose `write` has returned, and no
///   part of a batch whose `write` has not (batches are atomic to readers).
/// - `scan` yields keys in strictly increasing byte order (decreasing when
///   `reverse`), restricted to the bounds.
/// - `write` with [`Durability::Sync`] returns only once the whole batch
///   would survive a machine crash. Concurrent callers may share one sync.
/// - Errors are reported, never swallowed: an engine that cannot write (a
///   full disk) returns `Err` and leaves the previous state readable.
pub trait Engine: Send + Sync + 'static {
    /// The value stored under `key` in `cf`, if any.
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The pairs of `cf` whose keys lie within the bounds, in key order
    /// (descending if `reverse`).
    fn scan<'a>(
        &'a self,
        cf: ColumnFamily,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> Result<ScanIter<'a>>;

    /// Applies `batch` atomically with the given durability.
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()>;

    /// Writes a consistent, openable copy of the whole store to `dir`
    /// (which must not exist yet). The basis for backups.
    fn checkpoint(&self, dir: &Path) -> Result<()>;

    /// This engine as a view of another, if it is one: [`CombinedWrite`]
    /// writes the batches of views of one engine as one batch of it.
    fn as_scoped(&self) -> Option<&ScopedEngine> {
        None
    }
}
