//! Regions, zones, nodes, and the round-trip times between regions.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identity, unique in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A geographic region (`us-east`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Region(pub String);

/// A failure domain inside a region (`a`, `b`, `c`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Zone(pub String);

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Round-trip times between regions, in microseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyMatrix {
    pub regions: Vec<Region>,
    /// `rtt_us[i][j]`: round trip between `regions[i]` and `regions[j]`;
    /// the diagonal is the round trip between zones of one region.
    pub rtt_us: Vec<Vec<u64>>,
}

/// The error of a malformed matrix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("latency matrix: {0}")]
pub struct InvalidMatrix(String);

impl LatencyMatrix {
    /// Checks that the matrix is square, symmetric and names each region once.
    pub fn new(regions: Vec<Region>, rtt_us: Vec<Vec<u64>>) -> Result<Self, InvalidMatrix> {
        let n = regions.len();
        if rtt_us.len() != n || rtt_us.iter().any(|row| row.len() != n) {
            return Err(InvalidMatrix(format!("{n} regions need a {n}×{n} matrix")));
        }
        for i in 0..n {
            for j in 0..n {
                if rtt_us[i][j] != rtt_us[j][i] {
                    return Err(InvalidMatrix(format!("{} ↔ {} is not symmetric", regions[i], regions[j])));
                }
            }
            if regions[..i].contains(&regions[i]) {
                return Err(InvalidMatrix(format!("region {} appears twice", regions[i])));
            }
        }
        Ok(LatencyMatrix { regions, rtt_us })
    }

    /// The standard emulated topology of `docs/benchmarks.md`: us-east,
    /// us-central and eu-west (2024 public-cloud inter-region averages).
    pub fn standard() -> Self {
        let regions = ["us-east", "us-central", "eu-west"].map(|name| Region(name.to_string())).to_vec();
        let ms = |rtt: u64| rtt * 1_000;
        let rtt_us = vec![vec![ms(2), ms(31), ms(76)], vec![ms(31), ms(2), ms(113)], vec![ms(76), ms(113), ms(2)]];
        Self::new(regions, rtt_us).expect("the standard matrix is well formed")
    }

    /// The round trip between two regions, if both are known.
    pub fn rtt_us(&self, a: &Region, b: &Region) -> Option<u64> {
        let i = self.regions.iter().position(|region| region == a)?;
        let j = self.regions.iter().position(|region| region == b)?;
        Some(self.rtt_us[i][j])
    }

    /// The one-way delay the transport emulates: half the round trip.
    pub fn one_way_us(&self, a: &Region, b: &Region) -> Option<u64> {
        self.rtt_us(a, b).map(|rtt| rtt / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_matrix_matches_the_benchmark_topology() {
        let matrix = LatencyMatrix::standard();
        let region = |name: &str| Region(name.to_string());
        assert_eq!(matrix.rtt_us(&region("us-east"), &region("eu-west")), Some(76_000));
        assert_eq!(matrix.one_way_us(&region("us-central"), &region("eu-west")), Some(56_500));
        assert_eq!(matrix.rtt_us(&region("us-east"), &region("us-east")), Some(2_000));
        assert_eq!(matrix.rtt_us(&region("us-east"), &region("mars")), None);
    }

    #[test]
    fn malformed_matrices_are_refused() {
        let regions = vec![Region("a".into()), Region("b".into())];
        assert!(LatencyMatrix::new(regions.clone(), vec![vec![1, 2], vec![3, 1]]).is_err());
        assert!(LatencyMatrix::new(regions.clone(), vec![vec![1, 2]]).is_err());
        assert!(
            LatencyMatrix::new(vec![Region("a".into()), Region("a".into())], vec![vec![1, 1], vec![1, 1]]).is_err()
        );
        assert!(LatencyMatrix::new(regions, vec![vec![1, 2], vec![2, 1]]).is_ok());
    }
}
