//! Which shard holds a key of the SQL layer ([`SqlRouter`], the
//! transaction layer's [`Router`]).
//!
//! The key layout (`keys`) says where each kind of key lives: catalog
//! entries and the directory of homes in the system shard, global tables
//! and global indexes in the global shard, each shard's schema guard in
//! that shard, and the rows and colocated index entries of `home` tables
//! in the home shard of their locality key — the first value after the
//! 9-byte prefix. A single node has one shard for all of it.
//!
//! Homes are cached here once learned: a home changes only when its key is
//! rehomed (the directory's epoch); a shard refuses a request routed by a
//! stale one (R18), and the coordinator then forgets it here. The cache is bounded ([`HOMES_CACHED_MAX`]); a key dropped
//! from it is looked up again in the directory.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Mutex;

use geodb_geo::Region;
use geodb_geo::shardmap::{GLOBAL_SHARD, SYSTEM_SHARD, ShardMap, ShardRole};
use geodb_storage::keycode;
use geodb_txn::protocol::KeyRange;
use geodb_txn::{Home, Place, Router, ShardId};

use crate::keys;

/// Homes a node keeps in memory: at ~50 bytes each, a few tens of MiB.
pub const HOMES_CACHED_MAX: usize = 500_000;

/// Where keys live. See the module documentation.
pub struct SqlRouter {
    layout: Layout,
    homes: Mutex<HashMap<Vec<u8>, Home>>,
}

enum Layout {
    /// Everything in one shard (a single node).
    One(ShardId),
    Cluster {
        map: ShardMap,
        /// This node's region, where the keys it first writes are homed.
        region: u32,
    },
}

impl SqlRouter {
    /// A single node: one shard for everything.
    pub fn single(shard: ShardId) -> SqlRouter {
        SqlRouter { layout: Layout::One(shard), homes: Mutex::new(HashMap::new()) }
    }

    /// A node of a cluster with the shard map `map`, in region `region`.
    pub fn cluster(map: ShardMap, region: &Region) -> Result<SqlRouter, String> {
        let index = map.regions.iter().position(|known| known == region).ok_or(format!("unknown region {region}"))?;
        Ok(SqlRouter { layout: Layout::Cluster { map, region: index as u32 }, homes: Mutex::new(HashMap::new()) })
    }

    fn homes(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Home>> {
        self.homes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The region a home names, if the cluster knows it.
    pub fn region_of(&self, home: Home) -> Option<Region> {
        match &self.layout {
            Layout::One(_) => None,
            Layout::Cluster { map, .. } => map.regions.get(home.region as usize).cloned(),
        }
    }

    /// The shard map (`None` on a single node).
    pub fn shard_map(&self) -> Option<&ShardMap> {
        match &self.layout {
            Layout::One(_) => None,
            Layout::Cluster { map, .. } => Some(map),
        }
    }

    fn every_shard(&self) -> Vec<ShardId> {
        match &self.layout {
            Layout::One(shard) => vec![*shard],
            Layout::Cluster { map, .. } => map.shards.iter().map(|shard| shard.id).collect(),
        }
    }
}

/// The locality key of a home table's key: the first encoded value after
/// the 9-byte prefix, if the key is long enough to hold one.
fn locality_of(key: &[u8]) -> Option<&[u8]> {
    let rest = key.get(keys::INDEX_PREFIX_LEN..)?;
    let mut after = rest;
    keycode::decode_value(&mut after).ok()?;
    Some(&rest[..rest.len() - after.len()])
}

fn space_of_bound(bound: &Bound<Vec<u8>>) -> Option<u8> {
    match bound {
        Bound::Included(key) | Bound::Excluded(key) => key.first().copied(),
        Bound::Unbounded => None,
    }
}

/// Whether `range` lies within the keys that start with `prefix`.
fn within(range: &KeyRange, prefix: &[u8]) -> bool {
    let starts_inside = match &range.0 {
        Bound::Included(key) | Bound::Excluded(key) => key.starts_with(prefix),
        Bound::Unbounded => false,
    };
    let ends_inside = match (&range.1, keycode::prefix_end(prefix)) {
        (Bound::Included(key), _) => key.starts_with(prefix),
        (Bound::Excluded(key), Some(end)) => key.starts_with(prefix) || *key <= end,
        (Bound::Excluded(key), None) => key.starts_with(prefix),
        (Bound::Unbounded, _) => false,
    };
    starts_inside && ends_inside
}

impl Router for SqlRouter {
    fn place(&self, key: &[u8]) -> Place {
        let Layout::Cluster { map, .. } = &self.layout else {
            let Layout::One(shard) = self.layout else { unreachable!() };
            return Place::Shard(shard);
        };
        match key.first() {
            Some(&keys::TABLE_SPACE) => match locality_of(key) {
                Some(locality) => Place::Homed(locality.to_vec()),
                // A bare table or index prefix holds no row.
                None => Place::Shard(map.all_home_shards()[0]),
            },
            Some(&keys::GLOBAL_SPACE) => Place::Shard(GLOBAL_SHARD),
            Some(&keys::GUARD_SPACE) => match key.get(1..9) {
                Some(id) => Place::Shard(u64::from_be_bytes(id.try_into().expect("8 bytes"))),
                None => Place::Shard(SYSTEM_SHARD),
            },
            _ => Place::Shard(SYSTEM_SHARD),
        }
    }

    fn places_of_range(&self, range: &KeyRange) -> Vec<Place> {
        let Layout::Cluster { map, .. } = &self.layout else {
            return self.every_shard().into_iter().map(Place::Shard).collect();
        };
        let (start, end) = (space_of_bound(&range.0), space_of_bound(&range.1));
        let same_space = |space: u8| {
            start == Some(space)
                && (end == Some(space) || matches!(&range.1, Bound::Excluded(key) if key == &[space + 1]))
        };
        if same_space(keys::TABLE_SPACE) {
            // Within one locality key: its home's shard only.
            if let Bound::Included(key) | Bound::Excluded(key) = &range.0
                && let Some(locality) = locality_of(key)
            {
                let mut prefix = key[..keys::INDEX_PREFIX_LEN].to_vec();
                prefix.extend_from_slice(locality);
                if within(range, &prefix) {
                    return vec![Place::Homed(locality.to_vec())];
                }
            }
            return map.all_home_shards().into_iter().map(Place::Shard).collect();
        }
        if same_space(keys::GLOBAL_SPACE) {
            return vec![Place::Shard(GLOBAL_SHARD)];
        }
        if same_space(keys::CATALOG_SPACE) {
            return vec![Place::Shard(SYSTEM_SHARD)];
        }
        self.every_shard().into_iter().map(Place::Shard).collect()
    }

    fn shard_of_home(&self, home: Home, locality: &[u8]) -> ShardId {
        match &self.layout {
            Layout::One(shard) => *shard,
            Layout::Cluster { map, .. } => {
                let region = &map.regions[home.region as usize % map.regions.len()];
                map.home_shard(region, locality).expect("a region of the map")
            }
        }
    }

    fn home_key(&self, locality: &[u8]) -> Vec<u8> {
        keys::home_key(locality)
    }

    fn new_home(&self) -> Home {
        match &self.layout {
            Layout::One(_) => Home { region: 0, epoch: 1 },
            Layout::Cluster { region, .. } => Home { region: *region, epoch: 1 },
        }
    }

    fn cached_home(&self, locality: &[u8]) -> Option<Home> {
        self.homes().get(locality).copied()
    }

    fn learn_home(&self, locality: &[u8], home: Home) {
        let mut homes = self.homes();
        if homes.len() >= HOMES_CACHED_MAX && !homes.contains_key(locality) {
            // Forget an arbitrary half: simple, bounded, and a forgotten
            // home is one directory read away.
            let forget: Vec<Vec<u8>> = homes.keys().skip(HOMES_CACHED_MAX / 2).cloned().collect();
            for key in forget {
                homes.remove(&key);
            }
        }
        // A transaction reading the directory at an older snapshot must
        // not replace a newer home another one learned (R18).
        if homes.get(locality).is_none_or(|known| known.epoch <= home.epoch) {
            homes.insert(locality.to_vec(), home);
        }
    }

    fn home_shards(&self) -> Vec<ShardId> {
        match &self.layout {
            Layout::One(_) => Vec::new(),
            Layout::Cluster { map, .. } => map.all_home_shards(),
        }
    }

    fn residence_key(&self, locality: &[u8]) -> Vec<u8> {
        keys::residence_key(locality)
    }

    fn forget_residence(&self, residence: &[u8]) {
        if let Some(locality) = residence.strip_prefix(&[keys::RESIDENCE_SPACE]) {
            self.homes().remove(locality);
        }
    }

    fn guard_keys(&self) -> Vec<(ShardId, Vec<u8>)> {
        self.every_shard().into_iter().map(|shard| (shard, keys::guard_key(shard))).collect()
    }

    fn guard_key(&self, shard: ShardId) -> Option<Vec<u8>> {
        Some(keys::guard_key(shard))
    }

    fn outbox(&self) -> Option<ShardId> {
        match &self.layout {
            Layout::One(_) => None,
            Layout::Cluster { map, region } => map.outbox(&map.regions[*region as usize]),
        }
    }

    fn queued_through_outbox(&self, shard: ShardId) -> bool {
        match &self.layout {
            Layout::One(_) => false,
            Layout::Cluster { map, .. } => {
                map.shard(shard).is_some_and(|spec| matches!(spec.role, ShardRole::Home { .. }))
            }
        }
    }

    fn commits_in_region(&self, shard: ShardId) -> bool {
        match &self.layout {
            Layout::One(_) => true,
            Layout::Cluster { map, region } => map.commits_within(shard, &map.regions[*region as usize]),
        }
    }

    fn region_of(&self, shard: ShardId) -> Option<String> {
        match &self.layout {
            Layout::One(_) => None,
            Layout::Cluster { map, .. } => map.shard(shard).map(|spec| spec.home.0.clone()),
        }
    }

    /// The global shard closes timestamps on a cluster (R14): its reads go
    /// to the local replica.
    fn reads_settled(&self, shard: ShardId) -> bool {
        matches!(self.layout, Layout::Cluster { .. }) && shard == GLOBAL_SHARD
    }
}

#[cfg(test)]
mod tests {
    use geodb_geo::LatencyMatrix;
    use geodb_geo::placement::{NodePlace, Survival};
    use geodb_storage::Value;

    use super::*;

    fn router() -> SqlRouter {
        let nodes = NodePlace::standard();
        let home = Region("us-east".into());
        let map = ShardMap::new(&nodes, &home, Survival::Zone, 2, &LatencyMatrix::standard()).unwrap();
        SqlRouter::cluster(map, &Region("eu-west".into())).unwrap()
    }

    fn row_key(table: u32, locality: i64, rest: i64) -> Vec<u8> {
        let mut key = vec![keys::TABLE_SPACE];
        key.extend_from_slice(&table.to_be_bytes());
        key.extend_from_slice(&keys::PRIMARY_INDEX_ID.to_be_bytes());
        keys::append_values(&mut key, &[Value::Int(locality), Value::Int(rest)]);
        key
    }

    #[test]
    fn each_kind_of_key_lives_where_the_layout_says() {
        let router = router();
        let locality = {
            let mut bytes = Vec::new();
            keycode::encode_value(&mut bytes, &Value::Int(7));
            bytes
        };
        assert_eq!(router.place(&row_key(4, 7, 1)), Place::Homed(locality.clone()));
        assert_eq!(router.place(keys::CATALOG_VERSION_KEY), Place::Shard(SYSTEM_SHARD));
        assert_eq!(router.place(&keys::home_key(&locality)), Place::Shard(SYSTEM_SHARD));
        assert_eq!(router.place(&[keys::GLOBAL_SPACE, 0, 0, 0, 9]), Place::Shard(GLOBAL_SHARD));
        assert_eq!(router.place(&keys::guard_key(5)), Place::Shard(5));
        // New keys are homed in this node's region (eu-west: shards 7, 8).
        let home = router.new_home();
        assert!([7, 8].contains(&router.shard_of_home(home, &locality)));
    }

    #[test]
    fn a_range_inside_one_locality_key_goes_to_its_home_only() {
        let router = router();
        let mut prefix = vec![keys::TABLE_SPACE];
        prefix.extend_from_slice(&4u32.to_be_bytes());
        prefix.extend_from_slice(&keys::PRIMARY_INDEX_ID.to_be_bytes());
        let mut one = prefix.clone();
        keys::append_values(&mut one, &[Value::Int(7)]);
        let end = keycode::prefix_end(&one).unwrap();
        let places = router.places_of_range(&(Bound::Included(one.clone()), Bound::Excluded(end)));
        assert_eq!(places.len(), 1);
        assert!(matches!(places[0], Place::Homed(_)));
        // A whole table: every home shard.
        let end = keycode::prefix_end(&prefix).unwrap();
        let places = router.places_of_range(&(Bound::Included(prefix), Bound::Excluded(end)));
        assert_eq!(places.len(), 6);
        // The catalog: the system shard; everything: every shard, the
        // outboxes (which hold their schema guards) included.
        let catalog =
            (Bound::Included(vec![keys::CATALOG_SPACE, b't']), Bound::Excluded(vec![keys::CATALOG_SPACE, b'u']));
        assert_eq!(router.places_of_range(&catalog), vec![Place::Shard(SYSTEM_SHARD)]);
        assert_eq!(router.places_of_range(&(Bound::Unbounded, Bound::Unbounded)).len(), 11);
    }
}
