//! What a replica hands back after each input, and what it needs after a restart.
//!
//! The runtime must process a [`Ready`] in the order of its fields:
//!
//! 1. `persist`: make it durable (write, and fsync when `Persist::sync`).
//!    Everything later depends on it: an acceptor that answers before its
//!    promise or vote is durable can forget it in a crash and break safety
//!    (Chandra et al., *Paxos Made Live* §5.1, "disk corruption" and the
//!    need to persist before replying). A learner's votes count nowhere, so
//!    its copy of the log needs no fsync of its own.
//! 2. `send`: only after `persist` is durable. A message in `send` may
//!    promise what `persist` wrote.
//! 3. `snapshot_sends` and `snapshot_chunks`: read each chunk asked for
//!    from the state machine's store and send it; store each chunk received
//!    durably, then tell the replica (`Replica::chunk_stored`).
//! 4. `restore`, then `apply`, then `reads`: hand the state machine a snapshot
//!    to restore (if any), then the newly chosen entries in slot order, then
//!    the reads whose index has now been applied.
//!
//! Readies are processed one after another, in the order they were taken:
//! a later Ready's messages may rely on an earlier Ready's persist.

use serde::{Deserialize, Serialize};

use super::ballot::{Ballot, GroupId, Slot};
use super::membership::Membership;
use super::message::{Entry, Envelope, Message, Snapshot, Value};
use crate::topology::NodeId;

/// The acceptor's durable scalars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The highest ballot promised (phase 1b) or accepted in (phase 2b).
    pub promised: Ballot,
    /// Every slot up to here is chosen and its value is in the log or the
    /// snapshot. Written along with other writes, never on its own, so it may
    /// lag: a restarted replica learns the rest again.
    pub chosen: Slot,
}

/// Writes to make durable, atomically, applied in this order:
/// the snapshot (which drops log entries at or below its slot), then the
/// entries (overwriting any entry of the same slot), then the hard state.
///
/// `sync` says whether they must reach stable storage (an fsync) before the
/// Ready's messages leave: a promise, a vote that may count, a snapshot.
/// Without it they are a learner's copy of the log (its votes count in no
/// configuration of theirs) or chosen entries learned from another replica,
/// which the replica can learn again: the runtime writes them in order
/// with the rest but need not wait for them, and a crash may lose them.
/// Writes are durable in the order they were handed over, so a later synced
/// write makes the unsynced ones before it durable too (one write-ahead log).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub sync: bool,
}

impl Persist {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// One chosen log entry for the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub slot: Slot,
    pub value: Value,
}

/// The outcome of a linearizable read request (`Replica::read_index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Leadership was confirmed by a quorum after the request, and every slot up
    /// to `index` is applied: serve the read from the state machine now.
    Ready { index: Slot },
    /// The replica stopped being leader before it could confirm; retry elsewhere.
    Aborted,
}

/// A read request's id (chosen by the caller) and its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub id: u64,
    pub outcome: ReadOutcome,
}

/// Send chunk `index` of the snapshot at `slot` to `to`, as a
/// `Message::SnapshotChunk` with these fields and the chunk's bytes. A
/// chunk the store no longer has (a newer snapshot replaced it) is not
/// sent: the receiver asks again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkToSend {
    pub to: NodeId,
    pub slot: Slot,
    pub membership: Option<Membership>,
    pub chunks: u64,
    pub index: u64,
}

impl ChunkToSend {
    /// The message that sends it, with the chunk's bytes, from `from`.
    pub fn envelope(self, group: GroupId, from: NodeId, data: Vec<u8>) -> Envelope {
        let message = Message::SnapshotChunk {
            slot: self.slot,
            membership: self.membership,
            chunks: self.chunks,
            index: self.index,
            data,
        };
        Envelope { group, from, to: self.to, message }
    }
}

/// Store chunk `index` of the snapshot at `slot` durably, then call
/// `Replica::chunk_stored(slot, index)`. Storing chunk 0 may drop what is
/// stored of any other snapshot above the replica's own (a transfer that
/// was given up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkReceived {
    pub slot: Slot,
    pub index: u64,
    pub data: Vec<u8>,
}

/// The outputs of one or more inputs, in the order the runtime must handle
/// them: make `persist` durable; only then send `send`; then the snapshot
/// chunks to send and to store; then hand `restore`, `apply` and `reads`
/// to the state machine, in that order. Readies are handled one after
/// another, in the order they were taken.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    pub persist: Persist,
    pub send: Vec<Envelope>,
    pub snapshot_sends: Vec<ChunkToSend>,
    pub snapshot_chunks: Vec<ChunkReceived>,
    pub restore: Option<Snapshot>,
    pub apply: Vec<Committed>,
    pub reads: Vec<ReadState>,
    /// Informational: the replica became leader with this ballot (after this
    /// Ready's persist). The simulator checks one leader per ballot with it.
    pub became_leader: Option<Ballot>,
    /// The runtime may send this Ready's `Accept`s
    /// (`Message::may_precede_persist`) before its persist is durable: the
    /// group runs with `Config::early_accepts`, and the runtime has already
    /// said (`Replica::persisted`) that the promise of the leader's ballot
    /// is durable, so a crash cannot make the node reuse that ballot.
    pub accepts_early: bool,
}

impl Ready {
    /// Takes the messages the runtime may send before this Ready's persist
    /// is durable (a leader's accepts, when `accepts_early`); the rest stay
    /// in `send`, for after it.
    pub fn take_early_sends(&mut self) -> Vec<Envelope> {
        if !self.accepts_early {
            return Vec::new();
        }
        let (early, rest) =
            std::mem::take(&mut self.send).into_iter().partition(|envelope| envelope.message.may_precede_persist());
        self.send = rest;
        early
    }

    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.send.is_empty()
            && self.snapshot_sends.is_empty()
            && self.snapshot_chunks.is_empty()
            && self.restore.is_none()
            && self.apply.is_empty()
            && self.reads.is_empty()
            && self.became_leader.is_none()
    }
}

/// What a replica restarts from: everything its runtime made durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Entries above the snapshot, in slot order.
    pub entries: Vec<Entry>,
}

impl Stored {
    /// Applies one `Persist` the way a runtime's store must (see [`Persist`]).
    pub fn apply(&mut self, persist: &Persist) {
        if let Some(snapshot) = &persist.snapshot {
            self.entries.retain(|entry| entry.slot > snapshot.slot);
            self.snapshot = Some(snapshot.clone());
        }
        let floor = self.snapshot.as_ref().map_or(Slot::ZERO, |snapshot| snapshot.slot);
        for entry in &persist.entries {
            if entry.slot <= floor {
                continue;
            }
            match self.entries.binary_search_by_key(&entry.slot, |stored| stored.slot) {
                Ok(at) => self.entries[at] = entry.clone(),
                Err(at) => self.entries.insert(at, entry.clone()),
            }
        }
        if let Some(hard_state) = persist.hard_state {
            self.hard_state = hard_state;
        }
    }
}
