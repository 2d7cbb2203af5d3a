//! # geodb-geo — regions, zones and nodes
//!
//! The vocabulary of where data lives. Today it holds the topology types
//! and the standard emulated latency matrix of the benchmarks; Multi-Paxos
//! groups, replica placement, the directory of homes and rehoming will live
//! here, as sans-IO state machines.

pub mod topology;

pub use topology::{LatencyMatrix, NodeId, Region, Zone};
