//! Clock offsets to peers, and whether this node's clock is within the bound.
//!
//! Every node pings each peer it shares a group with once a ping interval
//! (`Body::ClockPing`, carrying the sender's physical clock); the peer
//! answers at once with its own reading (`Body::ClockPong`). With `sent`
//! and `received` read on this node's clock and `remote` on the peer's,
//! Cristian's estimate is
//!
//! ```text
//!   offset      = remote − (sent + received) / 2     (peer's clock − ours)
//!   uncertainty = (received − sent) / 2              (half the round trip)
//! ```
//!
//! and the true offset lies within `offset ± uncertainty`. A measurement
//! *proves* the two clocks further apart than the bound ε only when
//! `|offset| > ε + uncertainty`; a slow round trip proves nothing, so a
//! wide-area link never raises a false alarm, it only sees less.
//!
//! One clock far off makes every peer's measurement of it exceed the bound,
//! but each of those peers sees only that one. So a node calls **its own**
//! clock unsynchronized when the measurements of a strict majority of the
//! peers it has fresh measurements of exceed the bound — the rule of
//! CockroachDB's offset monitor, which with two nodes cannot tell which
//! clock is wrong and stops both. While unsynchronized a node refuses
//! coordinated work ([`crate::Error::ClockUnsynchronized`]) and keeps
//! serving highly available work; it recovers by itself once its clock is
//! back within the bound of most peers.

use std::collections::BTreeMap;

use geodb_geo::NodeId;

/// Default: how often a node pings each peer.
pub const CLOCK_PING_INTERVAL_US: u64 = 1_000_000;
/// A measurement older than this many ping intervals no longer counts (the
/// peer is down or cut off, and says nothing about this clock now).
pub const MEASUREMENT_TTL_PINGS: u64 = 5;

/// One measurement of a peer's clock against this node's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerOffset {
    /// The peer's clock minus this node's, estimated (ns).
    pub offset_ns: i64,
    /// Half the round trip of the measurement (ns): the true offset is
    /// within `offset_ns ± uncertainty_ns`.
    pub uncertainty_ns: u64,
    /// When it was taken (the host's `now_us`).
    pub measured_at_us: u64,
}

impl PeerOffset {
    /// Whether this measurement proves the two clocks further apart than
    /// `bound_ns`, whatever the network did.
    pub fn beyond(&self, bound_ns: u64) -> bool {
        self.offset_ns.unsigned_abs() > bound_ns.saturating_add(self.uncertainty_ns)
    }
}

/// What a node knows of its clock against its peers'.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockStatus {
    /// The bound ε (ns).
    pub bound_ns: u64,
    /// The fresh measurements, by peer.
    pub peers: BTreeMap<NodeId, PeerOffset>,
    /// `Some(offset)` when most measured peers prove this clock beyond the
    /// bound; `offset` is the smallest proven distance among them (ns).
    pub unsynchronized_ns: Option<u64>,
}

impl ClockStatus {
    /// The largest offset magnitude measured to any peer (ns).
    pub fn max_offset_ns(&self) -> u64 {
        self.peers.values().map(|peer| peer.offset_ns.unsigned_abs()).max().unwrap_or(0)
    }
}

/// The latest measurement of each peer.
#[derive(Debug)]
pub struct ClockOffsets {
    ttl_us: u64,
    peers: BTreeMap<NodeId, PeerOffset>,
}

impl ClockOffsets {
    /// Measurements older than `ttl_us` are forgotten.
    pub fn new(ttl_us: u64) -> Self {
        ClockOffsets { ttl_us, peers: BTreeMap::new() }
    }

    /// Records a pong: this node sent its ping at `sent_ns` and received the
    /// answer at `received_ns` (its own clock), the peer answered at
    /// `remote_ns` (the peer's clock). A pong from before a backwards step
    /// of this clock (`received_ns < sent_ns`) measures nothing.
    pub fn record(&mut self, peer: NodeId, sent_ns: u64, remote_ns: u64, received_ns: u64, now_us: u64) {
        let Some(round_trip) = received_ns.checked_sub(sent_ns) else { return };
        let midpoint = sent_ns as i128 + (round_trip / 2) as i128;
        let offset = (remote_ns as i128 - midpoint).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        let measurement = PeerOffset { offset_ns: offset, uncertainty_ns: round_trip / 2, measured_at_us: now_us };
        self.peers.insert(peer, measurement);
    }

    /// The verdict on this node's clock at `now_us`, with bound `bound_ns`.
    pub fn status(&mut self, now_us: u64, bound_ns: u64) -> ClockStatus {
        let ttl = self.ttl_us;
        self.peers.retain(|_, peer| peer.measured_at_us.saturating_add(ttl) >= now_us);
        let beyond: Vec<u64> = self
            .peers
            .values()
            .filter(|peer| peer.beyond(bound_ns))
            .map(|peer| peer.offset_ns.unsigned_abs() - peer.uncertainty_ns)
            .collect();
        let unsynchronized_ns =
            if !beyond.is_empty() && beyond.len() * 2 > self.peers.len() { beyond.into_iter().min() } else { None };
        ClockStatus { bound_ns, peers: self.peers.clone(), unsynchronized_ns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A measurement of a peer whose clock is `skew` ns ahead of ours, over
    /// a link of one-way delay `one_way`.
    fn measure(offsets: &mut ClockOffsets, peer: u64, skew: i64, one_way: u64, now_us: u64) {
        let sent = 1_000 * MS;
        let remote = (sent as i64 + one_way as i64 + skew) as u64;
        offsets.record(NodeId(peer), sent, remote, sent + 2 * one_way, now_us);
    }

    #[test]
    fn the_estimate_is_exact_on_a_symmetric_link_and_bounded_by_half_the_round_trip() {
        let mut offsets = ClockOffsets::new(10);
        measure(&mut offsets, 2, 1_700 * MS as i64, 38 * MS, 0);
        measure(&mut offsets, 3, -3 * MS as i64, 1 * MS, 0);
        let status = offsets.status(0, 250 * MS);
        assert_eq!(status.peers[&NodeId(2)].offset_ns, 1_700 * MS as i64);
        assert_eq!(status.peers[&NodeId(2)].uncertainty_ns, 38 * MS);
        assert_eq!(status.peers[&NodeId(3)].offset_ns, -3 * MS as i64);
        assert_eq!(status.max_offset_ns(), 1_700 * MS);
    }

    #[test]
    fn a_clock_is_unsynchronized_only_when_most_peers_prove_it() {
        // This node is 1.7 s behind all four peers.
        let mut offsets = ClockOffsets::new(10);
        for peer in 2..=5 {
            measure(&mut offsets, peer, 1_700 * MS as i64, MS, 0);
        }
        assert_eq!(offsets.status(0, 250 * MS).unsynchronized_ns, Some(1_700 * MS - MS));

        // One peer far off, three close: that peer is the odd one out.
        let mut offsets = ClockOffsets::new(10);
        measure(&mut offsets, 2, 1_700 * MS as i64, MS, 0);
        for peer in 3..=5 {
            measure(&mut offsets, peer, 100 * MS as i64, MS, 0);
        }
        assert_eq!(offsets.status(0, 250 * MS).unsynchronized_ns, None);

        // Two of four is not a majority.
        let mut offsets = ClockOffsets::new(10);
        for (peer, skew) in [(2, 900), (3, 900), (4, 0), (5, 0)] {
            measure(&mut offsets, peer, skew * MS as i64, MS, 0);
        }
        assert_eq!(offsets.status(0, 250 * MS).unsynchronized_ns, None);

        // No measurements, no verdict.
        assert_eq!(ClockOffsets::new(10).status(0, 250 * MS).unsynchronized_ns, None);
    }

    #[test]
    fn a_slow_round_trip_proves_nothing() {
        // 300 ms apart, bound 250 ms, but ±76 ms of uncertainty: not proven.
        let mut offsets = ClockOffsets::new(10);
        measure(&mut offsets, 2, 300 * MS as i64, 76 * MS, 0);
        assert!(!offsets.status(0, 250 * MS).peers[&NodeId(2)].beyond(250 * MS));
        assert_eq!(offsets.status(0, 250 * MS).unsynchronized_ns, None);
    }

    #[test]
    fn old_measurements_expire_and_a_clock_stepping_back_measures_nothing() {
        let mut offsets = ClockOffsets::new(10);
        measure(&mut offsets, 2, 1_700 * MS as i64, MS, 0);
        assert!(offsets.status(10, 250 * MS).unsynchronized_ns.is_some());
        assert!(offsets.status(11, 250 * MS).peers.is_empty());
        offsets.record(NodeId(2), 5 * MS, 7 * MS, 4 * MS, 12);
        assert!(offsets.status(12, 250 * MS).peers.is_empty());
    }
}
