//! R18: where a locality key lives, as a home shard sees it
//! (`docs/design/transactions.md`, "Homes and rehoming").
//!
//! A rehome of a locality key is one strict-serializable transaction over
//! the directory, the old home's shard and the new home's shard. Besides
//! moving the rows, it writes the key's *residence record* at both shards
//! (a data key, so versions of it are read at a snapshot like any other):
//! at the new home, "lives here, epoch e+1"; at the old one, "moved to that
//! shard, epoch e+1". A shard that never held a record for a locality key
//! holds it at the first epoch, if it holds it at all.
//!
//! Every request to a home shard carries the home it was routed by
//! ([`Route`]); the shard serves it only where the record, as the request
//! sees it (at the read's snapshot, or the newest for commits and reads of
//! the newest), says the key lives here at that epoch:
//!
//! - the record names a newer epoch: the route is stale, refused with
//!   [`Error::Moved`] naming the new home (the coordinator forgets the
//!   home it cached, and the transaction runs again);
//! - the record names an older epoch: the move here is not visible to the
//!   request yet. A read of the newest waits for its replica to apply it;
//!   a read at a snapshot older than the move, or a commit, is a conflict.
//!
//! A prepared rehome holds the record's lock, so a read at or above it
//! waits, a coordinated commit conflicts and a highly available one waits.

use geodb_storage::{Timestamp, mvcc};

use super::Shard;
use crate::protocol::{ReadMode, Residence, Route};
use crate::rpc::FIRST_EPOCH;
use crate::{Error, Result};

/// Moves of one key followed, hop by hop through the old homes' residence
/// records, to find where a write queued before them goes now.
pub const MOVES_FOLLOWED_MAX: usize = 16;

/// Where a route leads at this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residing {
    /// The locality key lives here at the route's epoch.
    Here,
    /// It lives elsewhere now, from a newer epoch on.
    Moved(Residence),
    /// The route names a newer epoch than this shard shows (the move here
    /// is not applied yet, or is above the reader's snapshot).
    NotYet,
}

impl Shard {
    /// Where the locality key of `route` lives as of `at`, by its residence
    /// record here.
    pub fn residing(&self, route: &Route, at: Timestamp) -> Result<Residing> {
        if self.faults.skip_route_check {
            return Ok(Residing::Here);
        }
        let found = match self.residence(route, at)? {
            Some(found) => found,
            None if route.epoch == FIRST_EPOCH => return Ok(Residing::Here),
            None => return Ok(Residing::NotYet),
        };
        Ok(if found.home.epoch < route.epoch {
            Residing::NotYet
        } else if found.home.epoch == route.epoch && found.shard == self.id {
            Residing::Here
        } else {
            Residing::Moved(found)
        })
    }

    /// Where a queued write routed here by `route` goes now, as this
    /// replica knows (R18): its shard if the key moved away, else `None`.
    pub fn moved_to(&self, route: &Route) -> Result<Option<crate::protocol::ShardId>> {
        Ok(self.moved_from(route)?.map(|residence| residence.shard))
    }

    /// [`Shard::moved_to`], with the epoch of the move.
    pub fn moved_from(&self, route: &Route) -> Result<Option<Residence>> {
        Ok(match self.residing(route, Timestamp::MAX)? {
            Residing::Moved(residence) => Some(residence),
            Residing::Here | Residing::NotYet => None,
        })
    }

    /// Whether the key of `route` lives here from a newer epoch than the
    /// route's, as this replica knows (R18: a write routed by it went to a
    /// home the key has left, and comes here).
    pub fn holds_since(&self, route: &Route) -> Result<bool> {
        if route.residence.is_empty() {
            return Ok(false);
        }
        let found = self.residence(route, Timestamp::MAX)?;
        Ok(found.is_some_and(|found| found.shard == self.id && found.home.epoch > route.epoch))
    }

    /// R19: the newest residence record `residence` here, and when it was
    /// written (`None`: the shard holds its key at the first epoch, if at
    /// all).
    pub fn residence_now(&self, residence: &[u8]) -> Result<Option<(Residence, Timestamp)>> {
        let _reading = self.reading();
        let Some(version) = mvcc::get_version(self.engine.as_ref(), residence, Timestamp::MAX)? else {
            return Ok(None);
        };
        let Some(bytes) = version.value else { return Ok(None) };
        let found = Residence::decode(&bytes).ok_or_else(corrupt_residence)?;
        Ok(Some((found, version.ts)))
    }

    /// The residence record of `route`'s key here, as of `at`.
    fn residence(&self, route: &Route, at: Timestamp) -> Result<Option<Residence>> {
        let Some(bytes) = mvcc::get(self.engine.as_ref(), &route.residence, at)? else { return Ok(None) };
        let found = Residence::decode(&bytes).ok_or_else(corrupt_residence)?;
        Ok(Some(found))
    }

    /// The refusal of a stale route.
    pub(super) fn moved(&self, route: &Route, residence: Residence) -> Error {
        Error::Moved {
            message: format!(
                "the locality key was rehomed away from shard {} (now at shard {}, epoch {}); the transaction runs again at its new home",
                self.id, residence.shard, residence.home.epoch
            ),
            route: route.clone(),
            residence,
        }
    }

    /// Whether a read routed by `route` may be answered here (after its
    /// gate said `Ready`): `Ok(false)` for a read of the newest at a
    /// replica that has not applied the move here yet (wait for it).
    pub fn check_route(&self, route: Option<&Route>, mode: &ReadMode) -> Result<bool> {
        let Some(route) = route else { return Ok(true) };
        let _reading = self.reading();
        match self.residing(route, super::read_ts(mode))? {
            Residing::Here => Ok(true),
            Residing::Moved(residence) => Err(self.moved(route, residence)),
            Residing::NotYet if mode.read_ts().is_none() => Ok(false),
            Residing::NotYet => Err(Error::Conflict(format!(
                "the locality key moved to shard {} after this transaction's snapshot; the transaction runs again",
                self.id
            ))),
        }
    }

    /// R18 for a commit, under the sequencer: every route of `routes`
    /// leads here now. `Ok(Some(txn))`: a highly available write waits for
    /// the prepared rehome `txn`.
    pub(super) fn check_routes(
        &self,
        locks: &super::LockTable,
        txn: crate::TxnId,
        highly_available: bool,
        routes: &[Route],
    ) -> Result<Option<crate::TxnId>> {
        for route in routes {
            if let Some(lock) = locks.blocks_read(&route.residence, Timestamp::MAX).filter(|lock| lock.txn != txn) {
                if highly_available {
                    return Ok(Some(lock.txn));
                }
                return Err(Error::Conflict(format!(
                    "a locality key this transaction writes is being rehomed at shard {}",
                    self.id
                )));
            }
            match self.residing(route, Timestamp::MAX)? {
                Residing::Here => {}
                Residing::Moved(residence) => return Err(self.moved(route, residence)),
                Residing::NotYet => {
                    return Err(Error::Conflict(format!(
                        "a locality key this transaction writes is not yet rehomed to shard {}",
                        self.id
                    )));
                }
            }
        }
        Ok(None)
    }
}

fn corrupt_residence() -> Error {
    Error::Storage(geodb_storage::Error::Corrupt("a residence record of a locality key".into()))
}
