//! A node's disk as the simulator models it: fsyncs that take time, and
//! group commit.
//!
//! One fsync makes durable everything handed over before it started; a
//! write handed over while one runs waits for the next. Until its fsync
//! completes, a write is lost by a crash.

use std::collections::BTreeMap;

use geodb_geo::paxos::{GroupId, NodeReady, Persist, Stored};

/// One node's disk.
#[derive(Clone, Copy, Debug)]
pub struct Disk {
    /// How long one fsync takes.
    pub fsync_us: u64,
    /// When the latest fsync started and ends.
    sync_start_us: u64,
    sync_end_us: u64,
}

impl Disk {
    pub fn new(fsync_us: u64) -> Self {
        Disk { fsync_us, sync_start_us: 0, sync_end_us: 0 }
    }

    /// A restarted node: no fsync in progress.
    pub fn restart(&mut self, now_us: u64) {
        self.sync_start_us = now_us;
        self.sync_end_us = now_us;
    }

    /// When a write handed over at `now_us` is durable (and everything
    /// handed over before it). Nothing to persist: once the writes ahead
    /// of it are.
    pub fn durable_at(&mut self, now_us: u64, has_persist: bool) -> u64 {
        if !has_persist || now_us < self.sync_start_us {
            return self.sync_end_us.max(now_us);
        }
        let start = now_us.max(self.sync_end_us);
        self.sync_start_us = start;
        self.sync_end_us = start + self.fsync_us;
        self.sync_end_us
    }

    /// When the fsync in progress (if any) completes.
    pub fn sync_end_us(&self) -> u64 {
        self.sync_end_us
    }
}

/// What a node's disk holds of its Paxos groups: each group's durable
/// state, and the writes handed over without an fsync of their own
/// (`Persist::sync` false: a learner's copy of the log, chosen entries
/// caught up) that no synced write has followed yet. As with the server's
/// one write-ahead log, a synced write makes every write before it durable
/// too, and a crash loses the rest.
#[derive(Debug, Default)]
pub struct Stores {
    pub durable: BTreeMap<GroupId, Stored>,
    unsynced: Vec<(GroupId, Persist)>,
}

impl Stores {
    /// A Ready's writes reached the disk, after its fsync if it needed one.
    /// Readies come in the order they were handed over.
    pub fn write(&mut self, ready: &NodeReady) {
        for (group, group_ready) in ready {
            if !group_ready.persist.is_empty() {
                self.unsynced.push((*group, group_ready.persist.clone()));
            }
        }
        if ready.iter().any(|(_, group_ready)| group_ready.persist.sync) {
            for (group, persist) in self.unsynced.drain(..) {
                self.durable.entry(group).or_default().apply(&persist);
            }
        }
    }

    /// The node crashed: what no fsync covered is gone.
    pub fn crash(&mut self) {
        self.unsynced.clear();
    }

    /// A replica of `group` is created here, with nothing stored.
    pub fn create(&mut self, group: GroupId) {
        self.remove(group);
        self.durable.insert(group, Stored::default());
    }

    /// The replica of `group` is gone, with its store.
    pub fn remove(&mut self, group: GroupId) {
        self.durable.remove(&group);
        self.unsynced.retain(|(unsynced_group, _)| *unsynced_group != group);
    }

    /// How many writes wait for a sync (for the report).
    pub fn unsynced(&self) -> usize {
        self.unsynced.len()
    }
}
