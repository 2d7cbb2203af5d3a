//! # geodb-txn — clocks and transactions
//!
//! - [`hlc`]: the hybrid logical clock ([`Hlc`]) over an injectable
//!   physical [`Clock`], so tests and the simulator control time.
//! - [`isolation`]: the four levels of the API ([`Isolation`]) and their
//!   classes (highly available or coordinated).
//! - [`conflict`]: what a transaction read and wrote, and the validation
//!   rules of each level (first committer wins; read and range validation).
//! - [`shard`]: the participant side of a commit — one shard's store, its
//!   commit sequencer and visibility watermark ([`Shard`]).
//! - [`log`]: where a shard's commits become durable ([`CommitLog`]): the
//!   local engine ([`LocalLog`]), or a shard's replicated log.
//! - [`transaction`]: the coordinator side — [`TxnManager`] begins
//!   [`Transaction`]s, which buffer writes, track reads and commit through
//!   their shard.
//!
//! A single node is one shard, so a transaction commits in one round
//! ([`Shard::commit`]): validate, take a commit timestamp, make the versions
//! durable, advance the watermark. The distributed commit (two-phase over
//! Multi-Paxos groups) keeps this split: the coordinator sends each
//! participant its part, each participant validates and prepares.
//!
//! Architecture Invariant: this crate does no I/O of its own beyond the
//! storage engine it is given, spawns no threads, reads no OS clock except
//! through [`Clock`], and must not depend on tokio or any network crate.

pub mod conflict;
pub mod error;
pub mod hlc;
pub mod isolation;
pub mod log;
pub mod shard;
pub mod transaction;

pub use error::{Error, Result};
pub use geodb_storage::{Timestamp, TxnId};
pub use hlc::{Clock, Hlc, ManualClock, SystemClock};
pub use isolation::Isolation;
pub use log::{CommitEntry, CommitLog, LocalLog, PendingCommit};
pub use shard::Shard;
pub use transaction::{Transaction, TxnManager};
