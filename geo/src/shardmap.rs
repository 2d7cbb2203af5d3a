//! The shard map: which Multi-Paxos groups a cluster has, where each is
//! homed and placed, and which home shard holds a locality key.
//!
//! Every node computes the same map from the cluster's node list and two
//! numbers (`shards_per_region`, the survival goal), so no node has to ask
//! another where a key lives (`DESIGN.md`, "Shards and Multi-Paxos"):
//!
//! | group | what it holds | home | placement |
//! |---|---|---|---|
//! | [`SYSTEM_SHARD`] | the catalog and the directory of homes | `cluster.home` | region survival when the cluster spans three regions, else the cluster's goal |
//! | [`GLOBAL_SHARD`] | `global` tables | `cluster.home` | as the system shard |
//! | `FIRST_HOME_SHARD` + k | `home` tables' rows of the locality keys homed in a region | that region | the cluster's survival goal |
//! | after the home shards, one per region | the region's outbox: highly available writes queued for their homes | that region | zone survival, replicas in the region only |
//!
//! Home shards are numbered region by region in the order regions first
//! appear in the node list, `shards_per_region` each. A locality key homed
//! in a region lives in shard `hash(key) mod shards_per_region` of that
//! region ([`locality_hash`], FNV-1a over the key's encoded bytes: it is
//! part of the on-disk placement and must never change).
//!
//! The preferred leaders of a region's shards are spread over its voters
//! (shard k prefers the k-th voter, round robin), so one node does not lead
//! them all. Every node holds a replica of every group (voter or learner)
//! but the other regions' outboxes;
//! the format leaves room for placing groups on a few nodes of each region
//! later (`Placement` lists replicas explicitly).

use std::collections::BTreeMap;

use crate::placement::{NodePlace, Placement, PlacementError, Survival, place};
use crate::topology::{LatencyMatrix, NodeId, Region};

/// Shard ids; equal to the Paxos group ids of the groups that replicate them.
pub type ShardId = u64;

/// The catalog and the directory of homes.
pub const SYSTEM_SHARD: ShardId = 1;
/// Every `global` table.
pub const GLOBAL_SHARD: ShardId = 2;
/// The first home shard; the others follow, region by region.
pub const FIRST_HOME_SHARD: ShardId = 3;
/// Most home shards per region (shard ids stay small and dense).
pub const SHARDS_PER_REGION_MAX: u64 = 64;

/// What a shard holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardRole {
    System,
    Global,
    /// The `index`-th shard of the locality keys homed in its region.
    Home {
        index: u64,
    },
    /// The outbox of its region: highly available writes to keys whose
    /// home shards cannot commit within the region, durable here and
    /// queued for those shards (R16 of `docs/design/transactions.md`).
    Outbox,
}

/// One shard: its role, home region and replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    pub id: ShardId,
    pub role: ShardRole,
    pub home: Region,
    pub placement: Placement,
}

/// Every shard of a cluster. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    pub shards: Vec<ShardSpec>,
    /// The regions in the order of the node list.
    pub regions: Vec<Region>,
    pub shards_per_region: u64,
    /// Every node's region.
    pub node_regions: BTreeMap<NodeId, Region>,
}

/// The home shard hash of a locality key's encoded bytes (FNV-1a, 64 bits).
/// Part of the on-disk placement: never change it.
pub fn locality_hash(locality: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in locality {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl ShardMap {
    /// The initial voters of every shard, as text: nodes that compute
    /// different voters for a shard (another `survival`, node list, zones
    /// or latency matrix) could form disjoint quorums for its first slots,
    /// so they must not talk. Learners and preferred leaders are left out:
    /// they change no quorum, and adding a node that only learns keeps it.
    pub fn voters_digest(&self) -> String {
        let mut digest = String::new();
        for shard in &self.shards {
            let mut voters: Vec<u64> = shard.placement.voters.iter().map(|node| node.0).collect();
            voters.sort_unstable();
            let voters: Vec<String> = voters.iter().map(u64::to_string).collect();
            digest.push_str(&format!("{}:{};", shard.id, voters.join(",")));
        }
        digest
    }

    /// The map of a cluster whose nodes are `nodes`, with the system and
    /// global shards homed in `home`.
    pub fn new(
        nodes: &[NodePlace],
        home: &Region,
        survival: Survival,
        shards_per_region: u64,
        latency: &LatencyMatrix,
    ) -> Result<ShardMap, PlacementError> {
        if !(1..=SHARDS_PER_REGION_MAX).contains(&shards_per_region) {
            return Err(PlacementError::new(format!(
                "shards_per_region must be between 1 and {SHARDS_PER_REGION_MAX}, not {shards_per_region}"
            )));
        }
        let mut regions: Vec<Region> = Vec::new();
        for node in nodes {
            if !regions.contains(&node.region) {
                regions.push(node.region.clone());
            }
        }
        // The shared shards survive a region's loss when there are regions
        // enough to place them so.
        let shared_survival = if regions.len() >= 3 { Survival::Region } else { survival };
        let mut shards = Vec::new();
        for (id, role) in [(SYSTEM_SHARD, ShardRole::System), (GLOBAL_SHARD, ShardRole::Global)] {
            let placement = place(nodes, home, shared_survival, latency)?;
            shards.push(ShardSpec { id, role, home: home.clone(), placement });
        }
        let mut id = FIRST_HOME_SHARD;
        for region in &regions {
            let base = place(nodes, region, survival, latency)?;
            for index in 0..shards_per_region {
                let mut placement = base.clone();
                // Spread the preferred leaders over the region's voters.
                let at_home: Vec<NodeId> = placement
                    .voters
                    .iter()
                    .copied()
                    .filter(|voter| nodes.iter().any(|node| node.id == *voter && &node.region == region))
                    .collect();
                if !at_home.is_empty() {
                    placement.preferred_leader = Some(at_home[index as usize % at_home.len()]);
                }
                shards.push(ShardSpec { id, role: ShardRole::Home { index }, home: region.clone(), placement });
                id += 1;
            }
        }
        for region in &regions {
            // Voters in the region's zones, every other node of the region
            // a learner, nobody elsewhere: an outbox is read and written by
            // its own region only, and must commit while cut off.
            let mut placement = place(nodes, region, Survival::Zone, latency)?;
            placement.learners.retain(|learner| nodes.iter().any(|node| node.id == *learner && &node.region == region));
            shards.push(ShardSpec { id, role: ShardRole::Outbox, home: region.clone(), placement });
            id += 1;
        }
        let node_regions = nodes.iter().map(|node| (node.id, node.region.clone())).collect();
        Ok(ShardMap { shards, regions, shards_per_region, node_regions })
    }

    pub fn shard(&self, id: ShardId) -> Option<&ShardSpec> {
        self.shards.iter().find(|shard| shard.id == id)
    }

    /// The home shards of `region`, in index order.
    pub fn home_shards(&self, region: &Region) -> Vec<ShardId> {
        self.shards
            .iter()
            .filter(|shard| matches!(shard.role, ShardRole::Home { .. }) && &shard.home == region)
            .map(|shard| shard.id)
            .collect()
    }

    /// Every home shard of every region, in id order.
    pub fn all_home_shards(&self) -> Vec<ShardId> {
        self.shards.iter().filter(|shard| matches!(shard.role, ShardRole::Home { .. })).map(|shard| shard.id).collect()
    }

    /// The outbox of `region`.
    pub fn outbox(&self, region: &Region) -> Option<ShardId> {
        self.shards.iter().find(|shard| shard.role == ShardRole::Outbox && &shard.home == region).map(|shard| shard.id)
    }

    /// Whether every voter of `shard` is in `region`: a commit there needs
    /// nobody outside it.
    pub fn commits_within(&self, shard: ShardId, region: &Region) -> bool {
        self.shard(shard)
            .is_some_and(|spec| spec.placement.voters.iter().all(|voter| self.node_regions.get(voter) == Some(region)))
    }

    /// The shard of a locality key (its encoded bytes) homed in `region`,
    /// if the region is one of the map's.
    pub fn home_shard(&self, region: &Region, locality: &[u8]) -> Option<ShardId> {
        let position = self.regions.iter().position(|known| known == region)? as u64;
        let index = locality_hash(locality) % self.shards_per_region;
        Some(FIRST_HOME_SHARD + position * self.shards_per_region + index)
    }

    /// The shards each node holds a replica of, by node.
    pub fn replicas_by_node(&self) -> BTreeMap<NodeId, Vec<ShardId>> {
        let mut by_node: BTreeMap<NodeId, Vec<ShardId>> = BTreeMap::new();
        for shard in &self.shards {
            for node in shard.placement.voters.iter().chain(&shard.placement.learners) {
                by_node.entry(*node).or_default().push(shard.id);
            }
        }
        by_node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_regions_get_shared_shards_and_home_shards_each() {
        let home = Region("us-east".into());
        let map = ShardMap::new(&NodePlace::standard(), &home, Survival::Zone, 2, &LatencyMatrix::standard()).unwrap();
        assert_eq!(map.shards.len(), 2 + 3 * 2 + 3);
        // The shared shards survive a region: five voters over three regions.
        assert_eq!(map.shard(SYSTEM_SHARD).unwrap().placement.voters.len(), 5);
        let eu = Region("eu-west".into());
        assert_eq!(map.home_shards(&eu), vec![7, 8]);
        let eu_voters = |id| map.shard(id).unwrap().placement.voters.clone();
        assert_eq!(eu_voters(7), vec![NodeId(7), NodeId(8), NodeId(9)]);
        // Preferred leaders spread over the region's voters.
        assert_eq!(map.shard(7).unwrap().placement.preferred_leader, Some(NodeId(7)));
        assert_eq!(map.shard(8).unwrap().placement.preferred_leader, Some(NodeId(8)));
        // Every node holds a replica of every shard but the other regions'
        // outboxes; each region's outbox has its three nodes as voters.
        assert!(map.replicas_by_node().values().all(|shards| shards.len() == map.shards.len() - 2));
        let outbox = map.outbox(&eu).unwrap();
        assert_eq!(outbox, 11);
        assert_eq!(eu_voters(outbox), vec![NodeId(7), NodeId(8), NodeId(9)]);
        assert!(map.shard(outbox).unwrap().placement.learners.is_empty());
        assert!(map.commits_within(7, &eu) && map.commits_within(outbox, &eu));
        assert!(!map.commits_within(SYSTEM_SHARD, &eu) && !map.commits_within(3, &eu));
    }

    #[test]
    fn a_locality_key_lives_in_one_shard_of_its_home_region() {
        let home = Region("us-east".into());
        let map = ShardMap::new(&NodePlace::standard(), &home, Survival::Zone, 4, &LatencyMatrix::standard()).unwrap();
        let central = Region("us-central".into());
        let mut used = std::collections::BTreeSet::new();
        for key in 0u64..200 {
            let shard = map.home_shard(&central, &key.to_be_bytes()).unwrap();
            assert!(map.home_shards(&central).contains(&shard));
            used.insert(shard);
        }
        assert_eq!(used.len(), 4, "keys spread over every shard of the region");
        assert_eq!(map.home_shard(&Region("mars".into()), b"k"), None);
    }

    #[test]
    fn the_voters_digest_keeps_a_learner_added_and_changes_with_the_voters() {
        let home = Region("us-east".into());
        let latency = LatencyMatrix::standard();
        let map = |nodes: &[NodePlace], survival| ShardMap::new(nodes, &home, survival, 2, &latency).unwrap();
        let standard = NodePlace::standard();
        let digest = map(&standard, Survival::Zone).voters_digest();
        assert!(digest.starts_with("1:"), "{digest}");
        // A fourth eu-west node (zone a again) only learns: the digest, and
        // so the transport identity, stay the same through the rolling restart.
        let mut grown = standard.clone();
        grown.push(NodePlace {
            id: NodeId(10),
            region: Region("eu-west".into()),
            zone: crate::topology::Zone("a".into()),
        });
        assert_eq!(map(&grown, Survival::Zone).voters_digest(), digest);
        // Another survival goal places other voters: those nodes must not talk.
        assert_ne!(map(&standard, Survival::Region).voters_digest(), digest);
    }

    #[test]
    fn the_locality_hash_is_pinned() {
        // Data on disk is placed by it: a change here moves every key.
        assert_eq!(locality_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(locality_hash(b"7"), 0xaf63_aa4c_8601_9796);
    }

    #[test]
    fn out_of_range_shard_counts_are_refused() {
        let home = Region("us-east".into());
        for count in [0, SHARDS_PER_REGION_MAX + 1] {
            assert!(
                ShardMap::new(&NodePlace::standard(), &home, Survival::Zone, count, &LatencyMatrix::standard())
                    .is_err()
            );
        }
    }
}
