//! R16: shipping an outbox's queues to their home shards, from the
//! outbox's leader (see `participant::outbox` for what is queued and how a
//! home shard applies it exactly once).
//!
//! Per queue, one [`Request::Deliver`] is in flight at a time, carrying the
//! next entries after what the home shard last said it applied; its answer
//! says how far the home shard got, the outbox proposes
//! [`Entry::Shipped`] to that position and the next batch goes. A refusal
//! or a silence is retried after [`SHIP_RETRY_US`] (or
//! [`SHIP_TIMEOUT_US`]): sending an entry again is always safe. A new
//! leader starts over from what its replica applied.

use std::collections::{BTreeSet, HashMap};

use geodb_geo::paxos::GroupId;

use std::sync::Arc;

use super::{DeliveryProposal, Host, HostOutput, Leadership, Parked, Shard};
use crate::TxnId;
use crate::protocol::{Entry, Queued, Request, Response, ShardId};

/// How long a queue waits after a refused or failed delivery.
pub const SHIP_RETRY_US: u64 = 50_000;
/// How long a delivery may go unanswered before it is sent again.
pub const SHIP_TIMEOUT_US: u64 = 2_000_000;
/// How long a `Shipped` proposal may take to be applied before it is
/// proposed again (a leader that could not get it chosen).
const SHIPPED_AGAIN_US: u64 = 1_000_000;

/// The shipper's state on one node.
#[derive(Debug, Default)]
pub(super) struct Shipping {
    /// Groups whose shard holds queues (outboxes), looked at by `ship`.
    outboxes: BTreeSet<GroupId>,
    queues: HashMap<(GroupId, ShardId), Shipment>,
    /// Deliveries in flight: request id → queue.
    requests: HashMap<u64, (GroupId, ShardId)>,
    /// Deliveries sent (for metrics and the simulator).
    pub sent: u64,
    /// R18: reroutes proposed (writes of a key that moved, requeued).
    pub rerouted: u64,
}

/// One queue, while this node leads its outbox.
#[derive(Debug, Default)]
struct Shipment {
    /// The delivery in flight, and when it was sent.
    in_flight: Option<(u64, u64)>,
    /// Nothing is sent before this.
    retry_at_us: u64,
    /// The home shard said it applied the queue through this position, by
    /// commits at or below this timestamp.
    acked: u64,
    acked_ts: geodb_storage::Timestamp,
    /// A `Shipped` through this position was proposed, at this time.
    proposed: (u64, u64),
    /// The newest position sent: no answer can say more was applied.
    sent_through: u64,
}

impl Host {
    /// Deliveries of outbox entries this node sent since it started.
    pub fn deliveries_sent(&self) -> u64 {
        self.shipping.sent
    }

    /// Reroutes of queued writes this node proposed since it started (R18).
    pub fn reroutes_proposed(&self) -> u64 {
        self.shipping.rerouted
    }

    /// Notes that `group` holds queues, so `ship` looks at it.
    pub(super) fn note_outbox(&mut self, group: GroupId) {
        self.shipping.outboxes.insert(group);
    }

    /// Forgets what was in flight for an outbox this node no longer leads.
    pub(super) fn forget_shipments(&mut self, group: GroupId) {
        self.shipping.queues.retain(|(of, _), _| *of != group);
        self.shipping.requests.retain(|_, (of, _)| *of != group);
    }

    /// Sends the next delivery of every queue of the outboxes this node
    /// leads that has entries to send and none in flight, and proposes
    /// `Shipped` where a home shard applied more than the outbox dropped.
    pub(super) fn ship(&mut self) {
        let now = self.now_us;
        let outboxes: Vec<GroupId> = self.shipping.outboxes.iter().copied().collect();
        for group in outboxes {
            let Some(hosted) = self.shards.get(&group) else { continue };
            if hosted.leadership != Leadership::Serving {
                continue;
            }
            let shard = hosted.shard.clone();
            for queue in shard.queues() {
                let key = (group, queue.dest);
                let shipment = self.shipping.queues.entry(key).or_default();
                if shipment.acked > queue.shipped
                    && (shipment.proposed.0 < shipment.acked || now >= shipment.proposed.1 + SHIPPED_AGAIN_US)
                {
                    shipment.proposed = (shipment.acked, now);
                    let (through, ts) = (shipment.acked, shipment.acked_ts);
                    self.propose(group, None, TxnId(0), Entry::Shipped { dest: queue.dest, through, ts });
                }
                let shipment = self.shipping.queues.entry(key).or_default();
                if let Some((id, sent_us)) = shipment.in_flight {
                    if now < sent_us + SHIP_TIMEOUT_US {
                        continue;
                    }
                    shipment.in_flight = None;
                    self.shipping.requests.remove(&id);
                }
                let shipment = self.shipping.queues.entry(key).or_default();
                let after = queue.shipped.max(shipment.acked);
                if after >= queue.last || now < shipment.retry_at_us {
                    continue;
                }
                let entries = match shard.queued(queue.dest, after) {
                    Ok(entries) if !entries.is_empty() => entries,
                    Ok(_) => continue,
                    Err(_) => {
                        // The engine failed a read: the apply that next
                        // writes to it fails too and stops the node; until
                        // then, try again later.
                        shipment.retry_at_us = now + SHIP_RETRY_US;
                        continue;
                    }
                };
                let id = self.next_request_id;
                self.next_request_id += 1;
                shipment.in_flight = Some((id, now));
                shipment.sent_through = shipment.sent_through.max(entries.last().map_or(0, |entry| entry.seq));
                self.shipping.requests.insert(id, key);
                self.shipping.sent += 1;
                let request = Request::Deliver { from: group.0, entries };
                self.outputs.push(HostOutput::Request { id, shard: queue.dest, request });
            }
        }
    }

    /// Takes the answer to a delivery this node sent; false if `id` is not
    /// one.
    pub(super) fn shipped_reply(&mut self, id: u64, response: Response) -> bool {
        let Some(key) = self.shipping.requests.remove(&id) else { return false };
        let now = self.now_us;
        if let Some(shipment) = self.shipping.queues.get_mut(&key)
            && shipment.in_flight.is_some_and(|(sent, _)| sent == id)
        {
            shipment.in_flight = None;
            match response {
                Response::Delivered { through, ts, moved } => {
                    shipment.acked = shipment.acked.max(through.min(shipment.sent_through));
                    shipment.acked_ts = shipment.acked_ts.max(ts);
                    if let Some((seq, route, residence)) = moved {
                        // R18: requeue the writes of a locality key that
                        // moved away for its new home, then send the rest.
                        shipment.retry_at_us = now + SHIP_RETRY_US;
                        let (group, dest) = key;
                        self.shipping.rerouted += 1;
                        self.propose(group, None, TxnId(0), Entry::Reroute { dest, seq, route, residence });
                    }
                }
                _ => shipment.retry_at_us = now + SHIP_RETRY_US,
            }
        }
        self.ship();
        true
    }

    /// At a home shard's leader: proposes the entries of `from`'s queue
    /// that are not applied here yet, in order, up to the first one a lock
    /// holds (parked if that is the first) or whose copy is in flight. The
    /// answer comes when the last one proposed is applied: how far the
    /// queue is applied then.
    pub(super) fn serve_delivery(&mut self, parked: Parked, shard: &Arc<Shard>, from: ShardId, entries: &[Queued]) {
        let group = parked.group;
        let origin = parked.origin;
        let mut proposals = Vec::new();
        let mut in_flight = None;
        for queued in entries {
            let chained: Vec<TxnId> = proposals.iter().map(|(txn, _)| *txn).collect();
            match shard.propose_delivery(from, queued, &chained) {
                Ok(DeliveryProposal::Applied) => continue,
                Ok(DeliveryProposal::Entry(entry)) => proposals.push((queued.txn, entry)),
                Ok(DeliveryProposal::InFlight) => {
                    in_flight = Some(queued.txn);
                    break;
                }
                Ok(DeliveryProposal::Blocked(_)) if proposals.is_empty() => {
                    self.park(parked);
                    return;
                }
                Ok(DeliveryProposal::Blocked(_)) => break,
                Ok(DeliveryProposal::Moved(route, residence)) if proposals.is_empty() => {
                    let (through, ts) = (shard.delivered_through(from), shard.last_commit_ts());
                    let moved = Some((queued.seq, route, residence));
                    self.reply(origin, Response::Delivered { through, ts, moved });
                    return;
                }
                Ok(DeliveryProposal::Moved(..)) => break,
                Err(error) if proposals.is_empty() => {
                    self.refuse(origin, &error);
                    return;
                }
                Err(_) => break,
            }
        }
        let last = proposals.len();
        for (index, (txn, entry)) in proposals.into_iter().enumerate() {
            let answer = (index + 1 == last).then_some(origin);
            self.propose(group, answer, txn, entry);
        }
        match in_flight {
            // Nothing proposed now: answered with the copy in flight.
            Some(txn) if last == 0 => self.answer_with_in_flight(group, txn, origin),
            _ if last == 0 => {
                let (through, ts) = (shard.delivered_through(from), shard.last_commit_ts());
                self.reply(origin, Response::Delivered { through, ts, moved: None });
            }
            _ => {}
        }
    }
}
