//! R18: rehoming a locality key (`docs/design/transactions.md`, "Homes and
//! rehoming").
//!
//! A rehome is one strict-serializable transaction over the directory of
//! homes, the old home's shard and the new home's shard:
//!
//! 1. read the key's directory entry (home `h`, epoch `e`);
//! 2. read every key of the locality key at the old home's shard, routed
//!    by `h` (each of the ranges the caller names: the key's rows and
//!    colocated index entries in every `home` table), with its version at
//!    the snapshot, tombstones included;
//! 3. move each version to the new home's shard as it was (writer, origin,
//!    value or tombstone: last writer wins by origin, R17, decides there as
//!    it would have at the old home; its siblings add the old home, so
//!    Monotonic Atomic View shows it with the rest of its transaction), and
//!    delete the key at the old one;
//! 4. write the key's residence record at both shards (`participant::homes`):
//!    at the new, "lives here at `e + 1`", at the old, "moved there at
//!    `e + 1`";
//! 5. switch the directory entry to the new region at `e + 1`.
//!
//! Two-phase commit makes the five one atomic step at one timestamp `T`:
//! at any snapshot, a scan across every home shard finds each row once
//! (below `T` at the old home, from `T` on at the new). The reads of steps
//! 1 and 2 (and of the old home's residence record) are validated at
//! commit (serializable), so a write to the key's rows committed meanwhile
//! at the old home, or another rehome (every one writes the directory
//! entry), aborts this one, which then runs again; the old home's commit
//! also checks that the key still lives there at `e` (its route). From `T` on
//! the old home refuses every request routed by epoch `e` (naming the new
//! home), and the new home serves them by epoch `e + 1`; a request routed
//! by `e + 1` that reaches the new home before it applied the rehome waits
//! or runs again.

use std::sync::Arc;

use crate::protocol::{KeyRange, Residence, Route};
use crate::rpc::{FIRST_EPOCH, Home, Place};
use crate::{Error, Isolation, Result, Timestamp, TxnManager};

/// [`TxnManager::rehome_async`], blocking.
pub fn rehome(
    manager: &Arc<TxnManager>,
    locality: &[u8],
    region: u32,
    ranges: &[KeyRange],
    schema: Option<Vec<u8>>,
) -> Result<Rehomed> {
    crate::wait::block_on(manager.rehome_async(locality, region, ranges, schema))
}

/// The most keys (rows, colocated index entries, and the tombstones of
/// deleted ones) one rehome moves: all of them go in one transaction's
/// commit at both homes.
pub const REHOME_KEYS_MAX: usize = 10_000;

/// What a rehome did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rehomed {
    /// The key's home before (`None`: it had none, and now has one).
    pub from: Option<Home>,
    /// Its home now (the same as `from` if it already lived there).
    pub to: Home,
    /// Rows and index entries moved (tombstones not counted).
    pub rows: usize,
    /// The commit timestamp (`None` if nothing changed).
    pub ts: Option<Timestamp>,
}

impl TxnManager {
    /// Rehomes the locality key `locality` (its encoded bytes) to the region
    /// with index `region`, moving its keys in `ranges`, which the schema
    /// `schema` (the catalog version they were computed from, guarded at
    /// every shard the rehome commits at) defines. One attempt: a
    /// retryable error (a concurrent writer of the key, another rehome, a
    /// DDL) means run it again, with the ranges computed again.
    pub async fn rehome_async(
        self: &Arc<Self>,
        locality: &[u8],
        region: u32,
        ranges: &[KeyRange],
        schema: Option<Vec<u8>>,
    ) -> Result<Rehomed> {
        let router = self.router().clone();
        let directory_key = router.home_key(locality);
        let Place::Shard(directory) = router.place(&directory_key) else {
            unreachable!("directory entries live in a shard of their own")
        };
        let mut txn = self.begin(Isolation::Serializable)?;
        txn.set_schema(schema, false)?;
        let current = match txn.read_in(directory, &directory_key).await? {
            Some(bytes) => Some(Home::decode(&bytes).ok_or_else(|| {
                Error::Storage(geodb_storage::Error::Corrupt("a directory entry of the homes".into()))
            })?),
            None => None,
        };
        let Some(from) = current else {
            // No home yet: this is its first, and it has no rows to move.
            let to = Home { region, epoch: FIRST_EPOCH };
            txn.put(directory_key, to.encode())?;
            let ts = txn.commit_async().await?;
            router.learn_home(locality, to);
            return Ok(Rehomed { from: None, to, rows: 0, ts: Some(ts) });
        };
        if from.region == region {
            txn.commit_async().await?;
            return Ok(Rehomed { from: Some(from), to: from, rows: 0, ts: None });
        }
        let to = Home { region, epoch: from.epoch + 1 };
        let (old_shard, new_shard) = (router.shard_of_home(from, locality), router.shard_of_home(to, locality));
        let residence = router.residence_key(locality);
        let route = Route { residence: residence.clone(), epoch: from.epoch };
        let mut rows = Vec::new();
        for range in ranges {
            rows.extend(txn.scan_versions_at(old_shard, range.clone(), Some(route.clone())).await?);
            if rows.len() > REHOME_KEYS_MAX {
                return Err(Error::LimitExceeded(format!(
                    "a rehome moves at most {REHOME_KEYS_MAX} rows, index entries and tombstones of one locality key; this one has more"
                )));
            }
        }
        // Concurrent rehomes of the key conflict on its directory entry,
        // which each reads and writes; the old home's residence record is
        // read as well (routed), so the commit there fails if the key left
        // it meanwhile. The new home's is written unread: no round trip.
        txn.read_routed(old_shard, &residence, Some(route.clone())).await?;
        if self.faults().switch_home_before_copy {
            return self
                .switch_home_then_copy(txn, (old_shard, new_shard), route, directory_key, (from, to), rows)
                .await;
        }
        let moved = place_moves(&mut txn, rows, old_shard, new_shard)?;
        let record = Residence { home: to, shard: new_shard }.encode();
        txn.place(old_shard, residence.clone(), Some(record.clone()), None);
        txn.place(new_shard, residence, Some(record), None);
        txn.place_route(old_shard, route);
        txn.put(directory_key, to.encode())?;
        let ts = txn.commit_async().await?;
        // Answered after commit wait: every clock has passed the rehome,
        // so a transaction this node routes by the new home from now on
        // takes its snapshot above it.
        router.learn_home(locality, to);
        Ok(Rehomed { from: Some(from), to, rows: moved, ts: Some(ts) })
    }

    /// The planted bug `CoordinatorFaults::switch_home_before_copy`: the
    /// home switches first (directory, residence records), and the rows
    /// move after, in a transaction of their own, so requests routed by
    /// the new home find the key empty in between. Test-only.
    async fn switch_home_then_copy(
        self: &Arc<Self>,
        mut txn: crate::Transaction,
        (old_shard, new_shard): (crate::protocol::ShardId, crate::protocol::ShardId),
        route: Route,
        directory_key: Vec<u8>,
        (from, to): (Home, Home),
        rows: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Rehomed> {
        let record = Residence { home: to, shard: new_shard }.encode();
        txn.place(old_shard, route.residence.clone(), Some(record.clone()), None);
        txn.place(new_shard, route.residence.clone(), Some(record), None);
        txn.place_route(old_shard, route);
        txn.put(directory_key, to.encode())?;
        txn.commit_async().await?;
        let mut copy = self.begin(Isolation::Serializable)?;
        let moved = place_moves(&mut copy, rows, old_shard, new_shard)?;
        let ts = copy.commit_async().await?;
        Ok(Rehomed { from: Some(from), to, rows: moved, ts: Some(ts) })
    }
}

/// Places the moves of `rows` (keys with their versions, detached, at the
/// old shard) in `txn`: each deleted at `old_shard` and put as it was at
/// `new_shard`. Answers how many are rows (not tombstones).
fn place_moves(
    txn: &mut crate::Transaction,
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    old_shard: crate::protocol::ShardId,
    new_shard: crate::protocol::ShardId,
) -> Result<usize> {
    let mut moved = 0;
    for (key, version) in rows {
        let value = geodb_storage::mvcc::decode_detached(&version)?.value;
        moved += usize::from(value.is_some());
        txn.place(old_shard, key.clone(), None, None);
        txn.place(new_shard, key, value, Some((version, old_shard)));
    }
    Ok(moved)
}
