//! # geodb-geo — regions, zones and nodes
//!
//! The vocabulary of where data lives. Today it holds the topology types
//! and the standard emulated latency matrix of `docs/benchmarks.md`, and
//! `paxos`: Multi-Paxos groups as sans-IO state machines (many groups per
//! node, a stable leader with a placement preference, batching and
//! pipelining, read-index reads, catch-up from the log or a snapshot).
//! `placement` decides which nodes hold, vote for and lead a shard for
//! each survival goal; `shardmap` lists a cluster's shards (system, global,
//! and several home shards per region) and which one holds a locality key.
//! Rehoming will live here too.

pub mod paxos;
pub mod placement;
pub mod shardmap;
pub mod topology;

pub use paxos::{Ballot, GroupId, MultiPaxos, Replica, Slot};
pub use topology::{LatencyMatrix, NodeId, Region, Zone};
