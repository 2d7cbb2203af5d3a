//! Fault schedules shared by the simulations: when nodes crash (alone or a
//! whole region, some aimed at writes in flight to disk) and when the
//! network partitions, all drawn from the seed.

use std::collections::BTreeMap;

use geodb_geo::NodeId;

use crate::network::{Partition, draw_partition};
use crate::scheduler::Scheduler;

/// An aimed crash waits this long for a node with writes in flight to disk,
/// at most this many times, then gives up.
pub const CRASH_AIM_RETRY_US: u64 = 500;
pub const CRASH_AIM_ATTEMPTS_MAX: u32 = 200;

/// The fault events of a simulation's event type.
pub trait FaultEvent: Sized {
    fn crash(nodes: Vec<NodeId>) -> Self;
    fn crash_while_syncing(region: Option<usize>, attempts_left: u32) -> Self;
    fn partition(id: u64) -> Self;
    fn heal(id: u64) -> Self;
}

/// Draws a run's faults ([`plan`]) and schedules their events; partitions
/// go into `partitions` by the id their events name.
pub fn schedule<E: FaultEvent>(
    scheduler: &mut Scheduler<E>,
    regions: &BTreeMap<NodeId, usize>,
    fault_end_us: u64,
    region_crash: u64,
    partitions: &mut BTreeMap<u64, Partition>,
) {
    for (at, fault) in plan(scheduler, regions, fault_end_us, region_crash) {
        match fault {
            Planned::Crash { nodes } => scheduler.at(at, E::crash(nodes)),
            Planned::CrashWhileSyncing { region } => {
                scheduler.at(at, E::crash_while_syncing(region, CRASH_AIM_ATTEMPTS_MAX));
            }
            Planned::Partition { partition, heal_at_us } => {
                let id = partitions.len() as u64;
                partitions.insert(id, partition);
                scheduler.at(at, E::partition(id));
                scheduler.at(heal_at_us, E::heal(id));
            }
        }
    }
}

/// An aimed crash now ([`aim`]), or another try shortly while no node is
/// syncing, at most `attempts_left` more times.
pub fn crash_while_syncing<E: FaultEvent>(
    scheduler: &mut Scheduler<E>,
    disks: &[DiskState],
    region: Option<usize>,
    attempts_left: u32,
) {
    let now = scheduler.now_us();
    match aim(scheduler, disks, region, now) {
        Some((nodes, at)) => scheduler.at(at, E::crash(nodes)),
        None if attempts_left > 0 => {
            scheduler.after(CRASH_AIM_RETRY_US, E::crash_while_syncing(region, attempts_left - 1));
        }
        None => {}
    }
}

/// One fault of a run's schedule.
#[derive(Clone, Debug)]
pub enum Planned {
    /// Crash these nodes.
    Crash { nodes: Vec<NodeId> },
    /// Crash a node (or a whole region) while it has writes in flight to disk.
    CrashWhileSyncing { region: Option<usize> },
    /// Cut these links from now until `heal_at_us`.
    Partition { partition: Partition, heal_at_us: u64 },
}

/// Draws the faults of a fault phase ending at `fault_end_us`, in order of
/// drawing: up to five crashes (a whole region at once with probability
/// `region_crash` in thousandths of a percent; half of them aimed at an
/// fsync in progress: durability bugs live there, as FoundationDB's BUGGIFY
/// aims faults at interesting moments) and up to four partitions.
pub fn plan<E>(
    scheduler: &mut Scheduler<E>,
    regions: &BTreeMap<NodeId, usize>,
    fault_end_us: u64,
    region_crash: u64,
) -> Vec<(u64, Planned)> {
    let node_ids: Vec<NodeId> = regions.keys().copied().collect();
    let mut planned = Vec::new();
    let crashes = scheduler.between(0, 5);
    for _ in 0..crashes {
        let at = scheduler.between(50_000, fault_end_us);
        let region = scheduler.chance(region_crash).then(|| scheduler.between(0, 2) as usize);
        if scheduler.chance(50_000) {
            planned.push((at, Planned::CrashWhileSyncing { region }));
        } else {
            let nodes = match region {
                Some(region) => node_ids.iter().copied().filter(|node| regions[node] == region).collect(),
                None => vec![node_ids[scheduler.between(0, node_ids.len() as u64 - 1) as usize]],
            };
            planned.push((at, Planned::Crash { nodes }));
        }
    }
    let partitions = scheduler.between(0, 4);
    for _ in 0..partitions {
        let at = scheduler.between(0, fault_end_us);
        let lasts_us = scheduler.between(5_000, 500_000);
        let partition = draw_partition(scheduler, regions);
        planned.push((at, Planned::Partition { partition, heal_at_us: (at + lasts_us).min(fault_end_us) }));
    }
    planned
}

/// A node as an aimed crash sees it.
#[derive(Clone, Copy, Debug)]
pub struct DiskState {
    pub node: NodeId,
    pub region: usize,
    /// Whether it has writes in flight to disk.
    pub syncing: bool,
    /// When its fsync in progress completes.
    pub sync_end_us: u64,
}

/// The victims of an aimed crash and when it strikes: a node with an fsync
/// in progress (or, with `region`, the region with the most such nodes, if
/// at least two: a quorum losing acknowledged writes together is what a
/// durability bug needs), at a random instant before the fsync completes.
/// `None` when no node is syncing now (try again shortly).
pub fn aim<E>(
    scheduler: &mut Scheduler<E>,
    nodes: &[DiskState],
    region: Option<usize>,
    now_us: u64,
) -> Option<(Vec<NodeId>, u64)> {
    let syncing: Vec<&DiskState> = nodes.iter().filter(|node| node.syncing).collect();
    let victims: Vec<NodeId> = match region {
        Some(_) => {
            let mut per_region: BTreeMap<usize, usize> = BTreeMap::new();
            for node in &syncing {
                *per_region.entry(node.region).or_insert(0) += 1;
            }
            let busiest = per_region.iter().filter(|(_, count)| **count >= 2).max_by_key(|(_, count)| **count)?;
            let region = *busiest.0;
            nodes.iter().filter(|node| node.region == region).map(|node| node.node).collect()
        }
        None if syncing.is_empty() => return None,
        None => vec![syncing[scheduler.between(0, syncing.len() as u64 - 1) as usize].node],
    };
    let durable_at = syncing
        .iter()
        .filter(|node| victims.contains(&node.node))
        .map(|node| node.sync_end_us)
        .min()
        .unwrap_or(now_us + 1);
    Some((victims, scheduler.between(now_us, durable_at.max(now_us + 1) - 1)))
}
