//! Quorum arithmetic.
//!
//! Lamport, *Paxos Made Simple* §2.2: safety rests on any two quorums sharing
//! at least one acceptor. Majorities of one fixed voter set have that
//! property; this module is the one place that counts them.

/// The smallest number of voters, out of `voters`, that forms a majority.
pub fn majority(voters: usize) -> usize {
    assert!(voters > 0, "a group needs at least one voter");
    voters / 2 + 1
}

/// Whether `votes` distinct voters out of `voters` form a majority.
pub fn is_majority(votes: usize, voters: usize) -> bool {
    votes >= majority(voters)
}

/// The largest value that a majority of `values` (one per voter) has reached:
/// the majority-th largest. Used for "which heartbeat has a quorum acknowledged".
pub fn majority_reached(values: &mut [u64]) -> u64 {
    let quorum = majority(values.len());
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[quorum - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any two majorities of the same voter set intersect.
        #[test]
        fn two_majorities_always_intersect(
            (voters, qa, qb) in (1usize..16).prop_flat_map(|voters| {
                let all: Vec<usize> = (0..voters).collect();
                let sizes = majority(voters)..=voters;
                (
                    Just(voters),
                    prop::sample::subsequence(all.clone(), sizes.clone()),
                    prop::sample::subsequence(all, sizes),
                )
            })
        ) {
            prop_assert!(is_majority(qa.len(), voters) && is_majority(qb.len(), voters));
            prop_assert!(qa.iter().any(|voter| qb.contains(voter)));
        }

        /// A majority is more than half, and one voter fewer is not.
        #[test]
        fn majority_is_the_smallest_count_above_half(voters in 1usize..1000) {
            let quorum = majority(voters);
            prop_assert!(2 * quorum > voters);
            prop_assert!(2 * (quorum - 1) <= voters);
            prop_assert!(quorum <= voters);
        }

        /// At least a majority of the values are at or above what `majority_reached`
        /// returns, and no larger value has that property.
        #[test]
        fn majority_reached_is_the_highest_value_a_majority_has(values in prop::collection::vec(0u64..20, 1..9)) {
            let reached = majority_reached(&mut values.clone());
            let at_or_above = |x: u64| values.iter().filter(|v| **v >= x).count();
            prop_assert!(is_majority(at_or_above(reached), values.len()));
            prop_assert!(!is_majority(at_or_above(reached + 1), values.len()));
        }
    }
}
