//! Deterministic pseudo-randomness for election timeouts.
//!
//! Randomised timeouts break ties between candidates (Ongaro & Ousterhout,
//! *In Search of an Understandable Consensus Algorithm* §5.2). The protocol
//! core must stay deterministic under the simulator, so the randomness comes
//! from a seed the caller provides, never from the operating system.

/// SplitMix64 (Steele, Lea & Flood, 2014): tiny, fast, good enough for jitter.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Jitter { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`0` if `bound` is zero).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next_u64() % bound }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let (mut a, mut b) = (Jitter::new(42), Jitter::new(42));
        for _ in 0..100 {
            assert_eq!(a.below(1000), b.below(1000));
        }
        assert_ne!(Jitter::new(1).next_u64(), Jitter::new(2).next_u64());
    }
}
