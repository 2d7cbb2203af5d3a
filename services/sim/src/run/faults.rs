//! The fault schedule of a run (`crate::faults`) for this world's events.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::faults::{DiskState, FaultEvent};

/// R22: seeds (in percent) in which leaders are asked, a few times during
/// the fault phase, to hand their leadership to another voter.
const HANDOVER_PERCENT: u64 = 50;
const HANDOVERS_MAX: u64 = 6;

/// At most this many pauses per run, half of them aimed at a node holding
/// a lease, each up to `PAUSE_US_MAX`: long enough to outlast a region
/// survival group's lease and its election several times over, so that a
/// new leader commits while the old one is stalled.
const PAUSES_MAX: u64 = 4;
const PAUSE_US_MAX: u64 = 400_000;

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
        crate::faults::schedule(&mut self.scheduler, &regions, fault_end, 50_000, &mut self.planned_partitions);
        for _ in 0..self.scheduler.between(0, PAUSES_MAX) {
            let at = self.scheduler.between(0, fault_end);
            let duration_us = self.scheduler.between(1_000, PAUSE_US_MAX);
            if self.scheduler.chance(50_000) {
                self.scheduler.at(at, Event::PauseLeaseholder { duration_us });
            } else {
                let node = node_ids[self.scheduler.between(0, node_ids.len() as u64 - 1) as usize];
                self.scheduler.at(at, Event::Pause { node, duration_us });
            }
        }
    }

    /// R22: draws the seed's runtime handovers, if any, from a stream of
    /// their own (a seed without them runs as it did before they existed).
    pub(super) fn plan_handovers(&mut self, seed: u64) {
        let mut plan = StdRng::seed_from_u64(seed ^ 0x6861_6e64_6f76_6572);
        if plan.random_range(0..100) >= HANDOVER_PERCENT {
            return;
        }
        for _ in 0..plan.random_range(1..=HANDOVERS_MAX) {
            let at = plan.random_range(0..self.options.fault_phase_us);
            let group = plan.random_range(0..self.groups.len());
            let pick = plan.random_range(0..u64::from(u32::MAX));
            self.scheduler.at(at, Event::Prefer { group, pick });
        }
    }

    /// R22: the node that leads `group` now (the highest ballot among the
    /// nodes up) is asked to hand its leadership to another voter of the
    /// group's current configuration, drawn by `pick`.
    pub(super) fn prefer(&mut self, group: usize, pick: u64) {
        if self.quiet {
            return;
        }
        let id = self.groups[group].id;
        let leader = self
            .nodes
            .iter()
            .filter(|(_, sim_node)| sim_node.up)
            .filter_map(|(node, sim_node)| {
                sim_node.paxos.group(id).and_then(|replica| replica.leader_ballot()).map(|ballot| (ballot, *node))
            })
            .max()
            .map(|(_, node)| node);
        let Some(leader) = leader else { return };
        let voters: Vec<NodeId> = self.nodes[&leader]
            .paxos
            .group(id)
            .map(|replica| replica.membership().voters.iter().copied().filter(|voter| *voter != leader).collect())
            .unwrap_or_default();
        if voters.is_empty() {
            return;
        }
        let to = voters[(pick % voters.len() as u64) as usize];
        let started = self.nodes.get_mut(&leader).expect("known node").paxos.prefer(id, to);
        if self.options.trace {
            eprintln!("{:>9} us  {leader} asked to hand {id} to {to}: {started}", self.scheduler.now_us());
        }
        if started {
            self.report.transfers_started += 1;
            self.drive(leader);
        }
    }

    /// Stalls `node` for `duration_us` (see `Event::Pause`).
    pub(super) fn pause(&mut self, node: NodeId, duration_us: u64) {
        let now = self.scheduler.now_us();
        if self.quiet || !self.nodes[&node].up {
            return;
        }
        let clients_first = self.scheduler.chance(50_000);
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        sim_node.paused_until_us = sim_node.paused_until_us.max(now + duration_us);
        sim_node.resume_clients_first = clients_first;
        self.report.pauses += 1;
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
