//! Replica placement: which nodes hold a shard, which of them vote, and
//! which one should lead — from the shard's home region and its survival
//! goal (`DESIGN.md`, "Shards and Multi-Paxos").
//!
//! - **Zone survival** (the default): voters in the home region only, one
//!   per zone where possible (up to [`ZONE_VOTERS`]), so a commit waits for
//!   an intra-region round trip and the shard survives the loss of a zone;
//!   a non-voting learner on every node of every other region, for local
//!   stale reads and disaster recovery.
//! - **Region survival**: [`REGION_VOTERS`] voters over at least three
//!   regions — two in the home region, two in the nearest other region,
//!   one in the next — so the shard survives the loss of a whole region
//!   and a quorum (three) is home plus the nearest region: one round trip
//!   to the nearest region. Every other node is a learner.
//!
//! In both, the preferred leader is the first voter of the home region,
//! and placement is a pure function of the node list: every node computes
//! the same answer from the same configuration.

use serde::{Deserialize, Serialize};

use crate::topology::{LatencyMatrix, NodeId, Region, Zone};

/// Voters of a zone-survival shard.
pub const ZONE_VOTERS: usize = 3;
/// Voters of a region-survival shard.
pub const REGION_VOTERS: usize = 5;

/// What a shard must survive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Survival {
    /// The loss of one zone of the home region.
    #[default]
    Zone,
    /// The loss of one whole region.
    Region,
}

impl std::str::FromStr for Survival {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "zone" => Ok(Survival::Zone),
            "region" => Ok(Survival::Region),
            other => Err(format!("unknown survival goal \"{other}\" (expected zone or region)")),
        }
    }
}

/// One node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlace {
    pub id: NodeId,
    pub region: Region,
    pub zone: Zone,
}

impl NodePlace {
    /// The nodes of the standard topology (`BENCHMARKS.md`): us-east,
    /// us-central and eu-west, three nodes each in zones a, b, c, numbered
    /// 1–9 region by region. Tests and the simulator build on it.
    pub fn standard() -> Vec<NodePlace> {
        let mut nodes = Vec::new();
        for (r, region) in ["us-east", "us-central", "eu-west"].iter().enumerate() {
            for (z, zone) in ["a", "b", "c"].iter().enumerate() {
                nodes.push(NodePlace {
                    id: NodeId((r * 3 + z + 1) as u64),
                    region: Region(region.to_string()),
                    zone: Zone(zone.to_string()),
                });
            }
        }
        nodes
    }
}

/// The replicas of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub preferred_leader: Option<NodeId>,
}

/// Why a shard cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("placement: {0}")]
pub struct PlacementError(String);

impl PlacementError {
    pub fn new(message: impl Into<String>) -> Self {
        PlacementError(message.into())
    }
}

/// Places a shard homed in `home` over `nodes` (in configuration order).
pub fn place(
    nodes: &[NodePlace],
    home: &Region,
    survival: Survival,
    latency: &LatencyMatrix,
) -> Result<Placement, PlacementError> {
    let at_home: Vec<&NodePlace> = nodes.iter().filter(|node| &node.region == home).collect();
    if at_home.is_empty() {
        return Err(PlacementError(format!("no node in the home region {home}")));
    }
    let voters: Vec<NodeId> = match survival {
        Survival::Zone => spread_over_zones(&at_home, ZONE_VOTERS),
        Survival::Region => {
            // Other regions by round trip from home, nearest first (ties by name).
            let mut others: Vec<&Region> = Vec::new();
            for node in nodes {
                if &node.region != home && !others.contains(&&node.region) {
                    others.push(&node.region);
                }
            }
            if others.len() < 2 {
                return Err(PlacementError(format!(
                    "region survival needs nodes in at least three regions; {} has {}",
                    home,
                    others.len() + 1
                )));
            }
            others.sort_by_key(|region| (latency.rtt_us(home, region).unwrap_or(u64::MAX), (*region).clone()));
            let in_region =
                |region: &Region| -> Vec<&NodePlace> { nodes.iter().filter(|node| &node.region == region).collect() };
            // 2 at home, 2 in the nearest region, 1 in the next; if a region
            // is short of nodes, the rest come from the following regions.
            let mut voters = spread_over_zones(&at_home, 2);
            let mut wanted = REGION_VOTERS - voters.len();
            for (i, region) in others.iter().enumerate() {
                let share = if i == 0 { 2.min(wanted) } else { wanted };
                let picked = spread_over_zones(&in_region(region), share);
                wanted -= picked.len();
                voters.extend(picked);
                if wanted == 0 {
                    break;
                }
            }
            voters
        }
    };
    let learners = nodes.iter().map(|node| node.id).filter(|id| !voters.contains(id)).collect();
    let preferred_leader = voters.first().copied();
    Ok(Placement { voters, learners, preferred_leader })
}

/// Up to `count` nodes, one per zone first (in order of first appearance),
/// then more from zones already used.
fn spread_over_zones(nodes: &[&NodePlace], count: usize) -> Vec<NodeId> {
    let mut picked: Vec<NodeId> = Vec::new();
    let mut zones: Vec<&Zone> = Vec::new();
    for node in nodes {
        if picked.len() < count && !zones.contains(&&node.zone) {
            zones.push(&node.zone);
            picked.push(node.id);
        }
    }
    for node in nodes {
        if picked.len() < count && !picked.contains(&node.id) {
            picked.push(node.id);
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|id| NodeId(*id)).collect()
    }

    #[test]
    fn zone_survival_keeps_voters_at_home_and_a_learner_everywhere_else() {
        let home = Region("us-central".into());
        let placement = place(&NodePlace::standard(), &home, Survival::Zone, &LatencyMatrix::standard()).unwrap();
        assert_eq!(placement.voters, ids(&[4, 5, 6]));
        assert_eq!(placement.learners, ids(&[1, 2, 3, 7, 8, 9]));
        assert_eq!(placement.preferred_leader, Some(NodeId(4)));
    }

    #[test]
    fn region_survival_puts_the_quorum_at_home_and_in_the_nearest_region() {
        let home = Region("us-east".into());
        let placement = place(&NodePlace::standard(), &home, Survival::Region, &LatencyMatrix::standard()).unwrap();
        // Two in us-east, two in us-central (31 ms), one in eu-west (76 ms).
        assert_eq!(placement.voters, ids(&[1, 2, 4, 5, 7]));
        assert_eq!(placement.preferred_leader, Some(NodeId(1)));
        // From eu-west the nearest region is us-east (76 ms, not 113).
        let placement =
            place(&NodePlace::standard(), &Region("eu-west".into()), Survival::Region, &LatencyMatrix::standard())
                .unwrap();
        assert_eq!(placement.voters, ids(&[7, 8, 1, 2, 4]));
    }

    #[test]
    fn small_clusters_place_what_they_can_and_say_what_they_cannot() {
        let one = vec![NodePlace { id: NodeId(1), region: Region("us-east".into()), zone: Zone("a".into()) }];
        let placement = place(&one, &Region("us-east".into()), Survival::Zone, &LatencyMatrix::standard()).unwrap();
        assert_eq!(placement.voters, ids(&[1]));
        assert!(placement.learners.is_empty());
        assert!(place(&one, &Region("us-east".into()), Survival::Region, &LatencyMatrix::standard()).is_err());
        assert!(place(&one, &Region("eu-west".into()), Survival::Zone, &LatencyMatrix::standard()).is_err());
        // Two nodes in one zone: both vote (no third zone to spread to).
        let two = vec![one[0].clone(), NodePlace { id: NodeId(2), ..one[0].clone() }];
        let placement = place(&two, &Region("us-east".into()), Survival::Zone, &LatencyMatrix::standard()).unwrap();
        assert_eq!(placement.voters, ids(&[1, 2]));
    }
}
