//! A node's disk as the simulator models it: fsyncs that take time, and
//! group commit.
//!
//! One fsync makes durable everything handed over before it started; a
//! write handed over while one runs waits for the next. Until its fsync
//! completes, a write is lost by a crash.

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
