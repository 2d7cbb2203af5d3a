//! Shards of this process, called in place: a single node, and tests of
//! the distributed protocol without a network.
//!
//! [`LocalShards`] is a [`ShardRpc`] over local shards
//! ([`Shard::open`] with `replicated: false`): every request runs on the
//! calling thread and the returned future is already complete. Entries are
//! made durable by each shard's group commit, then applied. A request that
//! meets a lock blocks the caller until the lock is released (bounded by
//! [`LOCK_WAIT_MAX`]); so does [`ShardRpc::sleep_until`].
//!
//! Nothing here recovers a transaction whose coordinator vanished between
//! prepare and decision: in one process, coordinator and participants die
//! together, and a restarted process finds the prepared records. A single
//! node has one shard and never prepares.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;

use crate::participant::{LOCK_WAIT_MAX, PrepareRound, Proposal, ReadGate, Shard};
use crate::protocol::{Decision, Entry, Refusal, Request, Response, ShardId};
use crate::rpc::{RpcError, ShardRpc};
use crate::{Error, Result};

/// Local shards by id. See the module documentation.
pub struct LocalShards {
    shards: BTreeMap<ShardId, Arc<Shard>>,
}

impl LocalShards {
    pub fn new(shards: impl IntoIterator<Item = Arc<Shard>>) -> Self {
        LocalShards { shards: shards.into_iter().map(|shard| (shard.id(), shard)).collect() }
    }

    pub fn shard(&self, id: ShardId) -> Option<&Arc<Shard>> {
        self.shards.get(&id)
    }

    pub fn shards(&self) -> impl Iterator<Item = &Arc<Shard>> {
        self.shards.values()
    }

    /// Runs `request` on `shard`, blocking on locks.
    pub fn handle(&self, shard: ShardId, request: Request) -> Response {
        let Some(shard) = self.shards.get(&shard) else {
            return Response::Refused(Refusal::Invalid(format!("no shard {shard} here")));
        };
        if let Request::View { range, shards, reverse, limit, at_most, required, guards, .. } = &request {
            // Every shard here applies what it commits before answering: no
            // replica is behind, and there is no outbox.
            let replica = |id: ShardId| self.shards.get(&id).map(Arc::as_ref);
            let replicas = crate::view::Replicas {
                shard: &replica,
                outbox: None,
                show_early: false,
                at_most: *at_most,
                floors: BTreeMap::new(),
            };
            let viewed =
                replicas.check_guards(guards).and_then(|()| replicas.view(range, shards, *reverse, *limit, required));
            return match viewed {
                Ok(crate::view::ViewOutcome::Viewed(viewed)) => {
                    Response::Viewed { rows: viewed.rows, seen: viewed.seen }
                }
                // Never: with no floors, a replica here is never behind.
                Ok(crate::view::ViewOutcome::Behind(shard)) => {
                    Response::Refused(Refusal::Unavailable(format!("shard {shard} is behind; retry")))
                }
                Err(error) => Response::Refused(Refusal::from(&error)),
            };
        }
        match serve(shard, request) {
            Ok(response) => response,
            Err(error) => Response::Refused(Refusal::from(&error)),
        }
    }
}

/// R18 at a local shard, which applies what it commits before answering:
/// a move not visible to the read is one above its snapshot.
fn check_route_here(
    shard: &Shard,
    route: Option<&crate::protocol::Route>,
    mode: &crate::protocol::ReadMode,
) -> Result<()> {
    if shard.check_route(route, mode)? {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "the locality key is not yet rehomed to shard {}; the transaction runs again",
        shard.id()
    )))
}

/// Runs `request` on a local shard (see [`LocalShards`]).
fn serve(shard: &Shard, request: Request) -> Result<Response> {
    let deadline = Instant::now() + LOCK_WAIT_MAX;
    loop {
        let seen = shard.releases();
        let blocked = match &request {
            // A local shard applies what it commits before answering, so it
            // is never behind what its own coordinators saw.
            Request::Get { key, mode, guard, route, .. } => {
                match shard.check_get(key, guard.as_ref(), route.as_ref(), mode)? {
                    ReadGate::Ready | ReadGate::Behind => {
                        shard.check_guard(guard.as_ref(), mode)?;
                        check_route_here(shard, route.as_ref(), mode)?;
                        return Ok(Response::Value(shard.get(key, mode)?));
                    }
                    ReadGate::Blocked(txn) => txn,
                }
            }
            Request::Scan { range, reverse, limit, mode, guard, route, versions, .. } => {
                match shard.check_scan(range, guard.as_ref(), route.as_ref(), mode)? {
                    ReadGate::Ready | ReadGate::Behind => {
                        shard.check_guard(guard.as_ref(), mode)?;
                        check_route_here(shard, route.as_ref(), mode)?;
                        if *versions {
                            return Ok(Response::Versions(shard.scan_versions(range, mode)?.0));
                        }
                        return Ok(Response::Rows(shard.scan(range, *reverse, *limit, mode)?));
                    }
                    ReadGate::Blocked(txn) => txn,
                }
            }
            Request::CommitOne(changes) => return Ok(Response::Committed(shard.commit_local(changes)?)),
            Request::Prepare { changes, record, participants, round, values_follow, may_wait } => {
                let round = PrepareRound { round: *round, values_follow: *values_follow, may_wait: *may_wait };
                match shard.propose_prepare_round(changes, *record, participants, round)? {
                    Proposal::Entry(entry) => return apply_one(shard, changes.txn, entry),
                    Proposal::AlreadyPrepared(ts) => return Ok(Response::Prepared(ts)),
                    Proposal::Blocked(txn) => txn,
                    Proposal::AlreadyCommitted(_) | Proposal::InFlight => {
                        unreachable!("a local prepare is one call of one coordinator")
                    }
                }
            }
            Request::Decide { txn, decision, carried } => {
                let entry = Entry::Decide { txn: *txn, decision: *decision, carried: carried.clone() };
                return apply_one(shard, *txn, entry);
            }
            Request::CommitRecord { own, participants, floor, carried } => {
                if let Some(recorded) = shard.decided_before_commit(own.txn)? {
                    return Ok(Response::Decided(recorded));
                }
                return match shard.propose_commit_record(own, participants, *floor, carried)? {
                    Proposal::Entry(entry) => apply_one(shard, own.txn, entry),
                    _ => Err(Error::Unavailable(format!(
                        "a commit of transaction {} at its record is in flight at shard {}",
                        own.txn,
                        shard.id()
                    ))),
                };
            }
            Request::Resolve { txn, decision: Decision::Commit(_), carried }
                if !shard.resolves_with(*txn, carried.as_ref()) =>
            {
                return Err(Error::Invalid(format!(
                    "transaction {txn}: a commit whose values do not fit its part at shard {} (left prepared for recovery)",
                    shard.id()
                )));
            }
            Request::Resolve { txn, decision, carried } => {
                let entry = Entry::Resolve { txn: *txn, decision: *decision, carried: carried.clone() };
                return apply_one(shard, *txn, entry);
            }
            Request::Recover { txn } => {
                return match shard.decision(*txn)? {
                    Some(decision) => Ok(Response::Recovered { decision, carried: shard.carried(*txn)? }),
                    None => apply_one(
                        shard,
                        *txn,
                        Entry::Decide { txn: *txn, decision: Decision::Abort, carried: Vec::new() },
                    ),
                };
            }
            Request::ValidateSettled { .. } => {
                return Err(Error::Invalid("a local shard closes no timestamps".into()));
            }
            Request::Enqueue(_) | Request::Deliver { .. } | Request::Pending { .. } => {
                return Err(Error::Invalid("a single node has no outbox".into()));
            }
            Request::View { .. } => {
                return Err(Error::Invalid("views are served by LocalShards::handle".into()));
            }
        };
        match shard.wait_for_release(seen, blocked, deadline) {
            // A coordinated commit or prepare that waited for an older
            // transaction (R20) proposed nothing: a conflict, to retry.
            Err(Error::Unavailable(message))
                if matches!(&request, Request::CommitOne(changes) | Request::Prepare { changes, .. }
                    if !changes.isolation.is_highly_available()) =>
            {
                return Err(Error::Conflict(message));
            }
            other => other?,
        }
    }
}

fn apply_one(shard: &Shard, txn: geodb_storage::TxnId, entry: Entry) -> Result<Response> {
    match shard.apply(None, std::slice::from_ref(&entry), 0) {
        Ok(mut applied) => Ok(match applied.pop().expect("one entry, one outcome") {
            crate::participant::Applied::Committed(ts) => Response::Committed(ts),
            crate::participant::Applied::Prepared(ts) => Response::Prepared(ts),
            crate::participant::Applied::Decided(decision) => Response::Decided(decision),
            crate::participant::Applied::Resolved => Response::Resolved,
            crate::participant::Applied::Late => Response::Refused(Refusal::Conflict(
                "the transaction was already resolved here: this prepare came late".into(),
            )),
            crate::participant::Applied::Closed => unreachable!("a local shard closes no timestamps"),
            crate::participant::Applied::Skipped => unreachable!("a local shard has no log to re-validate against"),
            crate::participant::Applied::Delivered { .. } | crate::participant::Applied::Shipped => {
                unreachable!("a single node has no outbox")
            }
        }),
        Err(error) => {
            if matches!(entry, Entry::Prepare(_) | Entry::CommitRecord { .. }) {
                shard.abandon(txn);
            }
            Err(error)
        }
    }
}

impl ShardRpc for LocalShards {
    fn call(&self, shard: ShardId, request: Request) -> BoxFuture<'static, Result<Response, RpcError>> {
        let response = self.handle(shard, request);
        Box::pin(futures::future::ready(Ok(response)))
    }

    fn send(&self, shard: ShardId, request: Request) {
        let _ = self.handle(shard, request);
    }

    /// Blocks for the time between now and `physical_ns` on the shards'
    /// clock (a manual clock in tests does not move by itself, so this
    /// sleeps the difference rather than waiting for the clock).
    fn sleep_until(&self, physical_ns: u64) -> BoxFuture<'static, ()> {
        let now = self.shards.values().next().map_or(0, |shard| shard.hlc().physical_now_ns());
        if physical_ns > now {
            crate::wait::blocking(|| std::thread::sleep(std::time::Duration::from_nanos(physical_ns - now)));
        }
        Box::pin(futures::future::ready(()))
    }
}

impl From<Error> for Response {
    fn from(error: Error) -> Response {
        Response::Refused(Refusal::from(&error))
    }
}
