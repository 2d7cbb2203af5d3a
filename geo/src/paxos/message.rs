//! What replicas of one group say to each other, and what the log holds.
//!
//! Message flow of one ballot (Lamport, *Paxos Made Simple* §2.2 and §3):
//!
//! ```text
//!  candidate                 acceptors
//!     │ Prepare(b, from) ───────►│   phase 1a: once per ballot, all slots ≥ from
//!     │◄──────── Promise(b, …)   │   phase 1b: accepted entries ≥ from
//!     │ Accept(b, s, v) ────────►│   phase 2a: per batch, pipelined
//!     │◄──────── Accepted(b, s)  │   phase 2b
//!     │ Heartbeat(b, seq, chosen)►│   liveness, commit index, read-index rounds
//!     │◄──── HeartbeatAck(b, seq) │
//! ```
//!
//! Any replica may answer `Reject(promised)` to a ballot below its promise;
//! lagging replicas ask for `CatchUpRequest` and get chosen entries or a snapshot
//! (in chunks: `SnapshotChunk`, `SnapshotChunkRequest`).

use serde::{Deserialize, Serialize};

use super::ballot::{Ballot, GroupId, Slot};
use super::membership::Membership;
use crate::topology::NodeId;

/// One client command: opaque bytes interpreted by the state machine above.
pub type Command = Vec<u8>;

/// What a slot holds once chosen.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// Fills a slot that a new leader found possibly used but with no accepted value.
    Noop,
    /// A batch of commands, applied in order (phase 2 per batch, not per command).
    Batch(Vec<Command>),
    /// A new configuration: it governs every slot after this one, once this
    /// one is chosen (see `membership.rs`). Nothing for the state machine to
    /// do, though a runtime may start or retire replicas when it sees one.
    Reconfigure(Membership),
}

/// One accepted (or chosen) log entry as an acceptor stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub slot: Slot,
    /// The ballot in which this acceptor accepted the value.
    pub ballot: Ballot,
    pub value: Value,
}

/// A snapshot of the state machine, as the replicas know it: the state
/// machine keeps its bytes, in `chunks` chunks it stores and reads itself
/// (a replica never holds a snapshot's bytes), covering every slot up to
/// and including `slot`, and the configuration in effect after that slot
/// (the log that named it is compacted away).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub slot: Slot,
    /// How many chunks the state machine stored it in (at least one).
    pub chunks: u64,
    /// The configuration for the slots after `slot`, if a `Reconfigure` at or
    /// before `slot` named it; `None` means the group's initial configuration
    /// (`Config::voters` and `Config::learners`). The state machine leaves it
    /// `None`: `Replica::compact` fills it in from the log it drops.
    pub membership: Option<Membership>,
}

impl Snapshot {
    /// A snapshot as the state machine takes it; the replica adds the membership.
    pub fn new(slot: Slot, chunks: u64) -> Self {
        Snapshot { slot, chunks, membership: None }
    }
}

/// A message between two replicas of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a for every slot from `from` on. `handoff` names the ballot of
    /// the leader that asked for this candidacy (placement): acceptors that
    /// follow that very ballot must not refuse it for having heard from
    /// their leader recently (that leader gave up its lease to ask); any
    /// other acceptor treats it as an ordinary candidacy.
    Prepare { ballot: Ballot, from: Slot, handoff: Option<Ballot> },
    /// Phase 1b: the acceptor promised `ballot` and reports what it accepted at
    /// or after the prepare's `from`. Entries at or below `chosen` are chosen.
    /// Nothing at or below `snapshot_slot` is reported: it was compacted away.
    Promise { ballot: Ballot, chosen: Slot, snapshot_slot: Slot, entries: Vec<Entry> },
    /// Phase 2a for one slot; carries the leader's chosen index as well.
    Accept { ballot: Ballot, slot: Slot, value: Value, chosen: Slot },
    /// Phase 2b.
    Accepted { ballot: Ballot, slot: Slot },
    /// The receiver had promised `promised`, above the `ballot` it was asked for.
    Reject { ballot: Ballot, promised: Ballot },
    /// The leader is alive, its chosen index, and a read-index round number.
    Heartbeat { ballot: Ballot, seq: u64, chosen: Slot },
    /// The sender still follows `ballot` as of heartbeat `seq`.
    HeartbeatAck { ballot: Ballot, seq: u64, chosen: Slot },
    /// The sender lacks chosen entries from `from` on.
    CatchUpRequest { from: Slot },
    /// Chosen entries, contiguous, and the sender's chosen index.
    CatchUp { entries: Vec<Entry>, chosen: Slot },
    /// Chunk `index` of the `chunks` of the snapshot at `slot`, for a
    /// replica whose missing entries were compacted away. A snapshot
    /// travels one chunk per request (each about
    /// `Config::snapshot_chunk_bytes`), read from and stored to the state
    /// machine's disk one at a time, so that a snapshot of any size fits
    /// the transport's frames, never floods a link and is never held in
    /// memory whole.
    SnapshotChunk { slot: Slot, membership: Option<Membership>, chunks: u64, index: u64, data: Vec<u8> },
    /// The sender stored the chunks before `index` of the snapshot at
    /// `slot` and asks for that one (for the first chunk of the receiver's
    /// own snapshot if it no longer keeps that one).
    SnapshotChunkRequest { slot: Slot, index: u64 },
    /// The leader asks a caught-up voter to take over: the preferred
    /// replica, or (stepping down) the most caught-up one. `keep`: the
    /// receiver prefers itself from then on ([`super::Replica::prefer`]),
    /// so that it does not hand leadership back to the configuration's
    /// preferred node.
    Handoff { ballot: Ballot, keep: bool },
    /// The sender cannot vote on a slot of `ballot`: its snapshot at
    /// `snapshot_slot` (its own, or installed from another replica)
    /// replaced that slot. A leader whose chosen index is below it, and
    /// whose slot is still not chosen a heartbeat later, lags a prefix it
    /// cannot recover by proposing: it steps down and catches up.
    /// (Variants are numbered by position on the wire: new ones go last.)
    Compacted { ballot: Ballot, snapshot_slot: Slot },
    /// A heartbeat that asks the group to fall quiet (`Config::quiesce`):
    /// nothing is in flight and the leader's log is chosen up to `chosen`.
    /// A member that has everything up to there stops its election timer
    /// and acknowledges (learners too); the leader stops heartbeating once
    /// every member has.
    Quiesce { ballot: Ballot, seq: u64, chosen: Slot },
    /// Node to node, once per heartbeat interval, for all the groups the
    /// two share (the envelope's group is [`GroupId::NODE`]): the sender is
    /// up, and has been since it started as `incarnation`. Quiet groups
    /// rest on it (see `Config::quiesce`).
    ///
    /// `abstaining`: the sender leads nothing for now (its clock left the
    /// bound); quiet groups it led must elect another.
    Alive { incarnation: u64, abstaining: bool },
    /// A member of a quiet group woke (its leader's node went silent and
    /// came back, say): the leader heartbeats again, so that the member's
    /// timer does not depose it.
    Wake,
}

impl Message {
    /// An acceptor's answer that promises something durable: the planted
    /// "ack before persist" fault sends exactly these early.
    pub fn is_acceptor_ack(&self) -> bool {
        matches!(self, Message::Promise { .. } | Message::Accepted { .. })
    }

    /// A leader's phase 2a, which a runtime may send before the Ready that
    /// holds the leader's own acceptance is durable when the group runs
    /// with `Config::early_accepts`: it promises nothing about the sender's
    /// disk, and the leader counts its own vote only once told it is durable.
    pub fn may_precede_persist(&self) -> bool {
        matches!(self, Message::Accept { .. })
    }
}

/// A message with its routing: many groups share one connection per node pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub group: GroupId,
    pub from: NodeId,
    pub to: NodeId,
    pub message: Message,
}
