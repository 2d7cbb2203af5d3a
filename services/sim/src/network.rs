//! The simulated network: the latency matrix, loss, duplication, reordering
//! and partitions.
//!
//! A message's delay is the one-way latency between the regions of its ends
//! (half the round trip of `docs/benchmarks.md`, divided by the run's
//! latency divisor), plus a random jitter that reorders messages on one
//! link. A message is dropped if its link is cut when it is sent or when it
//! arrives. Partitions are sets of directed links, so one-way partitions,
//! single links and whole regions are all the same thing; each heals on its own.

use std::collections::{BTreeMap, BTreeSet};

use geodb_geo::{LatencyMatrix, NodeId};

use crate::scheduler::Scheduler;

/// Thousandths of a percent, so that probabilities stay integers.
pub type PercentMillis = u64;

#[derive(Clone, Debug)]
pub struct NetworkConfig {
    pub loss: PercentMillis,
    pub duplicate: PercentMillis,
    /// Extra delay in `0..=jitter_us_max` per message.
    pub jitter_us_max: u64,
    /// The standard matrix is divided by this (1 = as published).
    pub latency_divisor: u64,
}

/// A set of directed links that cannot carry messages until it heals.
#[derive(Clone, Debug)]
pub struct Partition {
    pub description: String,
    pub links: BTreeSet<(NodeId, NodeId)>,
}

pub struct Network {
    matrix: LatencyMatrix,
    region_of: BTreeMap<NodeId, usize>,
    pub config: NetworkConfig,
    partitions: BTreeMap<u64, Partition>,
    blocked: BTreeSet<(NodeId, NodeId)>,
}

/// Draws a partition from the seed: a node or a whole region cut off (or
/// only unable to send, or to receive), or a single link cut one way or
/// both. `regions` gives every node's region.
pub fn draw_partition<E>(scheduler: &mut Scheduler<E>, regions: &BTreeMap<NodeId, usize>) -> Partition {
    let node_ids: Vec<NodeId> = regions.keys().copied().collect();
    let pick = |scheduler: &mut Scheduler<E>| node_ids[scheduler.between(0, node_ids.len() as u64 - 1) as usize];
    let kind = scheduler.between(0, 4);
    let (description, side): (String, Vec<NodeId>) = match kind {
        0 | 1 => {
            let node = pick(scheduler);
            (format!("node {node}"), vec![node])
        }
        2 | 3 => {
            let region = scheduler.between(0, 2) as usize;
            let side = node_ids.iter().copied().filter(|node| regions[node] == region).collect();
            (format!("region {region}"), side)
        }
        _ => {
            let (a, b) = (pick(scheduler), pick(scheduler));
            let one_way = scheduler.chance(50_000);
            let mut links = BTreeSet::from([(a, b)]);
            if !one_way {
                links.insert((b, a));
            }
            let arrow = if one_way { "->" } else { "<->" };
            return Partition { description: format!("link {a}{arrow}{b}"), links };
        }
    };
    // Symmetric, or one-way in either direction.
    let direction = scheduler.between(0, 2);
    let mut links = BTreeSet::new();
    for inside in &side {
        for outside in node_ids.iter().filter(|node| !side.contains(node)) {
            if direction != 2 {
                links.insert((*inside, *outside));
            }
            if direction != 1 {
                links.insert((*outside, *inside));
            }
        }
    }
    let how = ["cut off", "cannot send", "cannot receive"][direction as usize];
    Partition { description: format!("{description} {how}"), links }
}

/// What became of one message sent: lost, or delivered after each delay
/// (twice when duplicated).
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    pub lost: bool,
    pub duplicated: bool,
    pub delays_us: Vec<u64>,
}

impl Network {
    /// Decides the fate of a message sent now from `from` to `to`: its link
    /// cut or the message lost, or delivered after the one-way latency plus
    /// jitter (each copy, when duplicated, with its own jitter). Only
    /// `duplicable` messages are ever duplicated.
    pub fn send<E>(&self, scheduler: &mut Scheduler<E>, from: NodeId, to: NodeId, duplicable: bool) -> Delivery {
        if self.is_blocked(from, to) || scheduler.chance(self.config.loss) {
            return Delivery { lost: true, ..Delivery::default() };
        }
        let base = self.one_way_us(from, to);
        let jitter_max = self.config.jitter_us_max;
        let mut delivery = Delivery::default();
        if duplicable && scheduler.chance(self.config.duplicate) {
            delivery.duplicated = true;
            delivery.delays_us.push(base + scheduler.between(0, jitter_max));
        }
        delivery.delays_us.push(base + scheduler.between(0, jitter_max));
        delivery
    }

    pub fn new(matrix: LatencyMatrix, region_of: BTreeMap<NodeId, usize>, config: NetworkConfig) -> Self {
        assert!(config.latency_divisor > 0);
        Network { matrix, region_of, config, partitions: BTreeMap::new(), blocked: BTreeSet::new() }
    }

    pub fn one_way_us(&self, from: NodeId, to: NodeId) -> u64 {
        let (a, b) = (self.region_of[&from], self.region_of[&to]);
        self.matrix.rtt_us[a][b] / 2 / self.config.latency_divisor
    }

    pub fn rtt_us(&self, from: NodeId, to: NodeId) -> u64 {
        2 * self.one_way_us(from, to)
    }

    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    pub fn partition(&mut self, id: u64, partition: Partition) {
        self.partitions.insert(id, partition);
        self.recompute();
    }

    pub fn heal(&mut self, id: u64) {
        self.partitions.remove(&id);
        self.recompute();
    }

    pub fn heal_all(&mut self) {
        self.partitions.clear();
        self.recompute();
    }

    fn recompute(&mut self) {
        self.blocked = self.partitions.values().flat_map(|partition| partition.links.iter().copied()).collect();
    }
}
