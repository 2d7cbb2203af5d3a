//! Simulated per-node clocks: a fixed offset (skew) and a rate error (drift).
//!
//! Replicas read time only through the `now_us` the runtime passes them.
//! Leader leases compare durations, each on one clock: skew (offsets) can
//! only change *when* timeouts fire, and drift is what the lease's margin
//! absorbs (`paxos::LEASE_PERCENT` holds for rates within about ±8 %; the
//! register simulation draws up to ±5 % unless told otherwise), so reads
//! under leases are checked for linearizability with unequal clocks and
//! timers. Offsets are drawn up to a second, far beyond any clock bound ε:
//! leases must not depend on them.

/// Drift is bounded well below 100 % so that local time stays monotonic.
pub const DRIFT_PPM_MAX: i64 = 500_000;

/// The register simulation's drift bound unless told otherwise: within what
/// `paxos::LEASE_PERCENT` absorbs.
pub const DRIFT_PPM_DEFAULT: i64 = 50_000;

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub offset_us: u64,
    pub drift_ppm: i64,
}

impl Clock {
    /// This node's reading at true simulated time `true_us`.
    pub fn local_us(&self, true_us: u64) -> u64 {
        assert!(self.drift_ppm.abs() <= DRIFT_PPM_MAX);
        let drift = (true_us as i128 * self.drift_ppm as i128) / 1_000_000;
        (self.offset_us as i128 + true_us as i128 + drift) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn local_time_is_monotonic(offset in 0u64..1_000_000, drift in -DRIFT_PPM_MAX..=DRIFT_PPM_MAX, a in 0u64..1 << 40, b in 0u64..1 << 40) {
            let clock = Clock { offset_us: offset, drift_ppm: drift };
            let (early, late) = (a.min(b), a.max(b));
            prop_assert!(clock.local_us(early) <= clock.local_us(late));
        }
    }
}
