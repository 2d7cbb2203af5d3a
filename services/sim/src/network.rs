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

impl Network {
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
