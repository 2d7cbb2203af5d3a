//! How a coordinator reaches shards: the two things a runtime supplies.
//!
//! - [`Router`]: which shard holds a key (or may hold keys of a range), or
//!   which locality key's home decides it ([`Place::Homed`]); the cache of
//!   the directory of homes; the schema guard of each shard. The SQL
//!   layer's key layout and the geo layer's shard map answer it.
//! - [`ShardRpc`]: sends a [`Request`] to a shard and resolves with its
//!   [`Response`]; and waits on this node's physical clock (commit wait).
//!   The server's implementation routes to the shard's leader over the
//!   transport (or calls a local shard in place); the simulator's sends
//!   messages through its simulated network; [`LocalShards`](crate::LocalShards)
//!   calls shards of this process directly.
//!
//! Contract of `call`: a request that needs the leader
//! ([`Request::needs_leader`]) goes to the replica that leads the shard as
//! far as the runtime knows, following `NotLeader` hints a bounded number
//! of times; a Read Committed read may go to any replica, preferably the
//! local one. The future resolves with the shard's answer, or with an
//! [`RpcError`] that says whether the request may have been acted upon.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::protocol::{KeyRange, Request, Response, ShardId};

/// Where a key lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// In this shard.
    Shard(ShardId),
    /// In the home shard of this locality key (its encoded bytes), which
    /// its home region decides ([`Router::shard_of_home`]).
    Homed(Vec<u8>),
}

/// The epoch of a locality key's first home (R18).
pub const FIRST_EPOCH: u64 = 1;

/// A locality key's home: its region (an index into the cluster's
/// regions) and the epoch of that assignment (it changes when the key is
/// rehomed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Home {
    pub region: u32,
    pub epoch: u64,
}

impl Home {
    /// The bytes of a directory entry.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a home always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<Home> {
        postcard::from_bytes(bytes).ok()
    }
}

/// Which shard holds what. See the module documentation.
pub trait Router: Send + Sync + 'static {
    /// Where `key` lives.
    fn place(&self, key: &[u8]) -> Place;

    /// Every place a key inside `range` may live: one locality key's home
    /// when the range lies within one locality key, else every shard of the
    /// key space it spans.
    fn places_of_range(&self, range: &KeyRange) -> Vec<Place>;

    /// The shard of a locality key homed at `home`.
    fn shard_of_home(&self, _home: Home, _locality: &[u8]) -> ShardId {
        unreachable!("this router places no key by its home")
    }

    /// The directory entry of a locality key: where its home is recorded
    /// (a key of some shard, placed by [`Router::place`]).
    fn home_key(&self, _locality: &[u8]) -> Vec<u8> {
        unreachable!("this router places no key by its home")
    }

    /// The home this node gives a locality key first written here.
    fn new_home(&self) -> Home {
        unreachable!("this router places no key by its home")
    }

    /// A home this node learned. A cached home can go stale when its key is
    /// rehomed: every request routed by it carries its epoch, which the
    /// shards check (R18), and a refusal makes the coordinator forget it.
    fn cached_home(&self, _locality: &[u8]) -> Option<Home> {
        None
    }

    fn learn_home(&self, _locality: &[u8], _home: Home) {}

    /// Every home shard (where a locality key may live): Monotonic Atomic
    /// View reads a locality key's rows at this node's replicas of all of
    /// them, without the directory (R18). Empty where no key is homed.
    fn home_shards(&self) -> Vec<ShardId> {
        Vec::new()
    }

    /// R18: the residence record of a locality key, a key of each home
    /// shard that held it (see `participant::homes`).
    fn residence_key(&self, _locality: &[u8]) -> Vec<u8> {
        unreachable!("this router places no key by its home")
    }

    /// R18: forgets the cached home of the locality key whose residence
    /// record is `residence` (a shard said it moved on).
    fn forget_residence(&self, _residence: &[u8]) {}

    /// Whether `shard` closes timestamps (R14: the global shard), so that
    /// reads at a timestamp go to the local replica ([`ReadMode::Settled`])
    /// instead of the leader.
    ///
    /// [`ReadMode::Settled`]: crate::protocol::ReadMode::Settled
    fn reads_settled(&self, _shard: ShardId) -> bool {
        false
    }

    /// The outbox of this node's region (R16): where a highly available
    /// transaction commits writes whose home shards cannot commit within
    /// the region. `None`: every write commits at its home shard.
    fn outbox(&self) -> Option<ShardId> {
        None
    }

    /// Whether a highly available write to `shard` may be queued at the
    /// outbox (a home shard: not the catalog's, not one that closes
    /// timestamps).
    fn queued_through_outbox(&self, _shard: ShardId) -> bool {
        false
    }

    /// Whether `shard` commits within this node's region (every voter is
    /// there), so a highly available write to it needs no outbox.
    fn commits_in_region(&self, _shard: ShardId) -> bool {
        true
    }

    /// The name of `shard`'s home region, where one is known (for the
    /// API's commit headers).
    fn region_of(&self, _shard: ShardId) -> Option<String> {
        None
    }

    /// The schema guard of each shard (a key in it): a transaction commits
    /// at a shard only if the guard holds the schema version it planned
    /// with. Empty when schemas are not guarded.
    fn guard_keys(&self) -> Vec<(ShardId, Vec<u8>)> {
        Vec::new()
    }

    /// The guard key of one shard (see [`Router::guard_keys`]).
    fn guard_key(&self, shard: ShardId) -> Option<Vec<u8>> {
        self.guard_keys().into_iter().find(|(id, _)| *id == shard).map(|(_, key)| key)
    }
}

/// Every key in one shard: a single node, no homes, no guards.
#[derive(Clone, Copy, Debug)]
pub struct OneShard(pub ShardId);

impl Router for OneShard {
    fn place(&self, _key: &[u8]) -> Place {
        Place::Shard(self.0)
    }

    fn places_of_range(&self, _range: &KeyRange) -> Vec<Place> {
        vec![Place::Shard(self.0)]
    }
}

/// Why a call got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The request never left: no leader is known, or the node holding it
    /// cannot be reached. Nothing was done; trying again may help.
    #[error("{0}")]
    NotSent(String),
    /// Sent, but no answer came in time: the shard may or may not have
    /// acted on it.
    #[error("{0}")]
    Lost(String),
}

/// Sends requests to shards. See the module documentation.
///
/// An implementation that waits inside a call (a shard of this process
/// waiting for its sync, a sleep) does it through
/// [`crate::wait::blocking`]; a future it returns may be pending, and is
/// then waited for through it ([`crate::wait::block_on`]).
pub trait ShardRpc: Send + Sync + 'static {
    /// Sends `request` to `shard` and resolves with the answer.
    fn call(&self, shard: ShardId, request: Request) -> BoxFuture<'static, Result<Response, RpcError>>;

    /// Sends `request` without waiting for an answer (resolutions after a
    /// decision: recovery covers a lost one).
    fn send(&self, shard: ShardId, request: Request);

    /// Resolves once this node's physical clock reads at least `physical_ns`.
    fn sleep_until(&self, physical_ns: u64) -> BoxFuture<'static, ()>;
}
