//! How a coordinator reaches shards: the two things a runtime supplies.
//!
//! - [`Router`]: which shard holds a key (or may hold keys of a range).
//!   The SQL layer's key layout and the geo layer's shard map answer it.
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

use crate::protocol::{KeyRange, Request, Response, ShardId};

/// Which shard holds what. See the module documentation.
pub trait Router: Send + Sync + 'static {
    /// The shard that holds `key`.
    fn shard_of(&self, key: &[u8]) -> ShardId;

    /// Every shard that may hold keys inside `range`, in increasing order.
    fn shards_of_range(&self, range: &KeyRange) -> Vec<ShardId>;
}

/// Every key in one shard: a single node.
#[derive(Clone, Copy, Debug)]
pub struct OneShard(pub ShardId);

impl Router for OneShard {
    fn shard_of(&self, _key: &[u8]) -> ShardId {
        self.0
    }

    fn shards_of_range(&self, _range: &KeyRange) -> Vec<ShardId> {
        vec![self.0]
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
pub trait ShardRpc: Send + Sync + 'static {
    /// Sends `request` to `shard` and resolves with the answer.
    fn call(&self, shard: ShardId, request: Request) -> BoxFuture<'static, Result<Response, RpcError>>;

    /// Sends `request` without waiting for an answer (resolutions after a
    /// decision: recovery covers a lost one).
    fn send(&self, shard: ShardId, request: Request);

    /// Resolves once this node's physical clock reads at least `physical_ns`.
    fn sleep_until(&self, physical_ns: u64) -> BoxFuture<'static, ()>;
}
