//! The fault schedule of a run (`crate::faults`) for this world's events.

use std::collections::BTreeMap;

use geodb_geo::NodeId;

use super::{Event, World};
use crate::faults::{DiskState, FaultEvent};

/// Chance that a crash takes a whole region (thousandths of a percent).
const REGION_CRASH: u64 = 30_000;

/// At most this many pauses of a node per run, each up to `PAUSE_US_MAX`
/// (a few election timeouts at the bank's latencies).
const PAUSES_MAX: u64 = 4;
const PAUSE_US_MAX: u64 = 600_000;

impl FaultEvent for Event {
    fn crash(nodes: Vec<NodeId>) -> Self {
        Event::Crash { nodes }
    }

    fn crash_while_syncing(region: Option<usize>, attempts_left: u32) -> Self {
        Event::CrashWhileSyncing { region, attempts_left }
    }

    fn partition(id: u64) -> Self {
        Event::Partition { id }
    }

    fn heal(id: u64) -> Self {
        Event::Heal { id }
    }
}

impl World {
    pub(super) fn plan_faults(&mut self, node_ids: &[NodeId]) {
        let regions: BTreeMap<NodeId, usize> = node_ids.iter().map(|node| (*node, self.nodes[node].region)).collect();
        let fault_end = self.options.fault_phase_us;
        crate::faults::schedule(&mut self.scheduler, &regions, fault_end, REGION_CRASH, &mut self.planned_partitions);
        for _ in 0..self.scheduler.between(0, PAUSES_MAX) {
            let node = node_ids[self.scheduler.between(0, node_ids.len() as u64 - 1) as usize];
            let at = self.scheduler.between(0, fault_end);
            let duration_us = self.scheduler.between(1_000, PAUSE_US_MAX);
            self.scheduler.at(at, Event::Pause { node, duration_us });
        }
    }

    /// Crashes a node (or a whole region) with an fsync in progress, at a
    /// random instant before it completes.
    pub(super) fn crash_while_syncing(&mut self, region: Option<usize>, attempts_left: u32) {
        if self.quiet {
            return;
        }
        let disks: Vec<DiskState> = self
            .nodes
            .iter()
            .map(|(id, node)| DiskState {
                node: *id,
                region: node.region,
                syncing: node.up && !node.syncing.is_empty(),
                sync_end_us: node.disk.sync_end_us(),
            })
            .collect();
        crate::faults::crash_while_syncing(&mut self.scheduler, &disks, region, attempts_left);
    }
}
