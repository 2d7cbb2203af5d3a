//! # geodb-storage — the bottom of the stack
//!
//! Everything GeoDB keeps on disk goes through this crate, and this crate
//! knows nothing above it: no transactions, no SQL, no networking.
//!
//! - [`engine`]: the narrow [`Engine`] trait (column families, point reads,
//!   ordered scans, atomic write batches with a durability choice and a
//!   byte encoding, checkpoints) with two implementations that pass one
//!   test suite:
//!   [`MemoryEngine`] (tests and the simulator) and, behind the `rocksdb`
//!   feature, `RocksEngine`.
//! - [`keycode`]: an order-preserving encoding of SQL values and composite
//!   keys: for any two keys, byte order equals value order.
//! - [`value`]: the SQL value vocabulary ([`Value`]) shared by every layer
//!   above, and the row encoding.
//! - [`timestamp`]: hybrid-logical-clock [`Timestamp`]s and transaction ids,
//!   the vocabulary of versions. (The clock that makes them lives in
//!   `geodb-txn`.)
//! - [`mvcc`]: multi-version storage on top of an engine: each write is a
//!   version carrying its commit timestamp and writing transaction id,
//!   deletes are tombstones, reads happen at a timestamp, and prepared
//!   writes (locks) live in their own column family, apart from the data.
//! - [`gc`]: version garbage collection: the versions no read at or above
//!   a horizon can see, removed in bounded chunks.
//! - [`group_commit`]: concurrent durable writes share one WAL sync.
//! - [`paxos_log`]: the durable state of a node's Multi-Paxos groups (each
//!   group's log, hard state and snapshot) as bytes, every group's writes
//!   made durable together by one synced batch ([`LogStore`]).
//! - [`wait`]: how code that may wait does it without stalling the
//!   runtime that called it (a hook the program installs).
//! - [`snapshot`]: state-machine snapshots: whole column families exported
//!   as one byte string and imported in place of a lagging replica's.

pub mod engine;
pub mod error;
pub mod gc;
pub mod group_commit;
pub mod keycode;
pub mod mvcc;
pub mod paxos_log;
pub mod snapshot;
pub mod timestamp;
pub mod value;
pub mod wait;
mod wire;

#[cfg(feature = "rocksdb")]
pub use engine::rocks::RocksEngine;
pub use engine::{
    ColumnFamily, CombinedWrite, Durability, Engine, HookedEngine, MemoryEngine, ScopedEngine, WriteBatch, WriteOp,
};
pub use error::{Error, Result};
pub use paxos_log::{GroupWrite, LogStore, StoredGroup};
pub use timestamp::{Timestamp, TxnId};
pub use value::{DataType, Value};
