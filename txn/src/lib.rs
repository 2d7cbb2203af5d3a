//! # geodb-txn — clocks and transactions
//!
//! - [`hlc`]: the hybrid logical clock ([`Hlc`]) over an injectable
//!   physical [`Clock`], so tests and the simulator control time.
//! - [`isolation`]: the four levels of the API ([`Isolation`]) and their
//!   classes (highly available or coordinated).
//! - [`protocol`]: what coordinators and participants say ([`Request`],
//!   [`Response`]) and what a shard's log holds ([`Entry`]).
//! - [`conflict`]: the validation rules of each level (first committer
//!   wins; read and range validation).
//! - [`participant`]: one shard's state machine ([`Shard`]): versions,
//!   locks of prepared transactions, decisions; validation on the leader,
//!   deterministic apply on every replica.
//! - [`host`]: a node's replicated shards as one sans-IO step function
//!   ([`Host`]): Multi-Paxos groups driving shards, leadership, barriers,
//!   waiting on locks, recovery. The server and the simulator both run it.
//! - [`offsets`]: clock offsets to peers, measured by ping and pong, and
//!   the verdict on this node's clock against the bound ε.
//! - [`rpc`]: what a coordinator needs from its runtime ([`Router`],
//!   [`ShardRpc`]); [`local`]: shards of this process called in place
//!   ([`LocalShards`], a single node).
//! - [`transaction`]: the coordinator — [`TxnManager`] begins
//!   [`Transaction`]s, which read at one snapshot across shards, buffer
//!   writes, and commit in one round on one shard or by two-phase commit
//!   over several.
//! - [`wait`]: futures waited for from synchronous code, through the
//!   program's blocking hook.
//!
//! The protocol and its argument: `docs/design/transactions.md`.
//!
//! Architecture Invariant: this crate does no I/O of its own beyond the
//! storage engine it is given, spawns no threads, reads no OS clock except
//! through [`Clock`], and must not depend on tokio or any network crate.

pub mod conflict;
pub mod error;
pub mod hlc;
pub mod host;
pub mod isolation;
pub mod local;
pub mod offsets;
pub mod participant;
pub mod protocol;
pub mod rehome;
pub mod rpc;
pub mod traffic;
pub mod transaction;
pub mod view;
pub mod wait;

pub use error::{Error, Result};
pub use geodb_storage::{Timestamp, TxnId};
pub use hlc::{Clock, Hlc, ManualClock, SystemClock};
pub use host::{
    Body, Host, HostConfig, HostOutput, NodeMessage, Origin, OrphanCounts, observe_sender_clock, stamp_messages,
};
pub use isolation::Isolation;
pub use local::LocalShards;
pub use participant::Shard;
pub use protocol::{Decision, Entry, Request, Response, ShardId};
pub use rehome::Rehomed;
pub use rpc::{FIRST_EPOCH, Home, OneShard, Place, Router, RpcError, ShardRpc};
pub use transaction::{Commit, CommittedAt, ManagerConfig, SINGLE_NODE_SHARD, Transaction, TxnManager, shard_prefix};
