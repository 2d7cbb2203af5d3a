//! # Multi-Paxos, sans-IO
//!
//! Each shard (and the directory, and each global table) is one Multi-Paxos
//! group: a replicated log of slots, each chosen once, applied in order by a
//! deterministic state machine above. This module is the protocol and
//! nothing else: it takes messages, ticks, proposals and read requests, and
//! hands back what to persist, what to send after persisting, and what to
//! apply ([`Ready`]). The real runtime (`services/server`) and the
//! deterministic simulator (`services/sim`) are the only places with disks,
//! sockets and clocks.
//!
//! Guarantees (Lamport, *Paxos Made Simple*; van Renesse & Altinbuken,
//! *Paxos Made Moderately Complex*; Chandra et al., *Paxos Made Live*):
//!
//! - at most one value is chosen per [`Slot`], whatever messages are lost,
//!   duplicated or reordered and whichever replicas crash, provided the
//!   runtime persists before it sends;
//! - every replica applies the same values in slot order, without gaps;
//! - a read served through [`Replica::read_index`] sees every write chosen
//!   before the read was requested (linearizable), without a log write;
//! - liveness needs a quorum of voters connected for a few election timeouts;
//! - the voters and learners change through the log, one voter at a time
//!   ([`Replica::propose_membership`], [`Value::Reconfigure`]), with the
//!   configuration of each slot fixed by the changes chosen before it
//!   (Lamport, *Paxos Made Simple* §3, α = 1).
//!
//! Key types: [`Ballot`], [`Slot`], [`GroupId`]; [`Replica`] (one group on
//! one node; roles follower, candidate, leader; voter or non-voting
//! learner); [`Membership`] (a configuration); [`MultiPaxos`] (all groups of
//! a node); [`Message`] and [`Envelope`]; [`Ready`], [`Persist`] and [`Stored`].
//!
//! Idle groups fall quiet ([`Config::quiesce`]): no heartbeats and no
//! timers, while [`MultiPaxos`] sends one `Alive` per peer node for all of
//! them and wakes those of a peer that goes silent or restarts.
//!
//! The design, the safety arguments for leases, quiet groups and
//! membership changes, alternatives considered (omnipaxos, raft-rs,
//! openraft) and what is not there yet (joint consensus, coalesced
//! heartbeats of busy groups) are in `docs/design/multipaxos.md`.

mod ballot;
mod config;
mod jitter;
mod membership;
mod message;
mod node;
pub mod quorum;
mod ready;
mod replica;

#[cfg(test)]
mod quiet_tests;
#[cfg(test)]
mod tests;

pub use ballot::{Ballot, GroupId, Slot};
pub use config::{
    BATCH_COMMANDS_MAX, CATCH_UP_ENTRIES_MAX, Config, PROPOSALS_PENDING_MAX, READS_PENDING_MAX, ReplicaFaults,
    SNAPSHOT_CHUNK_BYTES_DEFAULT,
};
pub use jitter::Jitter;
pub use membership::Membership;
pub use message::{Command, Entry, Envelope, Message, Snapshot, Value};
pub use node::{MultiPaxos, NodeReady};
pub use ready::{ChunkReceived, ChunkToSend, Committed, HardState, Persist, ReadOutcome, ReadState, Ready, Stored};
pub use replica::{ProposeError, Replica, RoleKind};
