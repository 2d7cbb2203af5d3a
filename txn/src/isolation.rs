//! The four isolation levels of the API, and their classes.
//!
//! | level | class | reads | commit |
//! |---|---|---|---|
//! | Read Committed | highly available | latest committed, per statement | no validation |
//! | Monotonic Atomic View | highly available | one snapshot per transaction | no validation |
//! | Snapshot Isolation | coordinated | one snapshot per transaction | first committer wins on written keys |
//! | Strict Serializability | coordinated | one snapshot per transaction | also: nothing read or scanned has changed |
//!
//! Monotonic Atomic View (Bailis et al., *Highly Available Transactions*,
//! VLDB 2014, §5.1.2) requires that once a transaction sees one write of
//! another it sees all of them. On one shard, a per-transaction snapshot is
//! the cheapest way to give that; it is stronger than MAV demands (it also
//! hides read skew), which `docs/design/isolation.md` records.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Isolation {
    ReadCommitted,
    MonotonicAtomicView,
    Snapshot,
    #[default]
    Serializable,
}

impl Isolation {
    pub const ALL: [Isolation; 4] =
        [Isolation::ReadCommitted, Isolation::MonotonicAtomicView, Isolation::Snapshot, Isolation::Serializable];

    /// The level's name in API answers.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read committed",
            Isolation::MonotonicAtomicView => "monotonic atomic view",
            Isolation::Snapshot => "snapshot",
            Isolation::Serializable => "serializable",
        }
    }

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "rc",
            Isolation::MonotonicAtomicView => "mav",
            Isolation::Snapshot => "si",
            Isolation::Serializable => "serializable",
        }
    }

    /// Highly available levels never wait on another region.
    pub fn is_highly_available(self) -> bool {
        matches!(self, Isolation::ReadCommitted | Isolation::MonotonicAtomicView)
    }

    /// Whether the transaction reads one snapshot (all levels but RC).
    pub fn has_transaction_snapshot(self) -> bool {
        self != Isolation::ReadCommitted
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown level name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown isolation level \"{0}\"; use read committed, monotonic atomic view, snapshot or serializable")]
pub struct UnknownIsolation(pub String);

impl FromStr for Isolation {
    type Err = UnknownIsolation;

    /// Accepts every name of the API (case-insensitive, any spacing).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let words: Vec<String> = text.split_whitespace().map(str::to_ascii_lowercase).collect();
        match words.join(" ").as_str() {
            "read committed" | "rc" => Ok(Isolation::ReadCommitted),
            "monotonic atomic view" | "mav" => Ok(Isolation::MonotonicAtomicView),
            "snapshot" | "snapshot isolation" | "repeatable read" | "si" => Ok(Isolation::Snapshot),
            "serializable" | "strict serializable" => Ok(Isolation::Serializable),
            _ => Err(UnknownIsolation(text.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_name_parses() {
        for (name, level) in [
            ("read committed", Isolation::ReadCommitted),
            ("RC", Isolation::ReadCommitted),
            ("Monotonic  Atomic View", Isolation::MonotonicAtomicView),
            ("mav", Isolation::MonotonicAtomicView),
            ("snapshot", Isolation::Snapshot),
            ("snapshot isolation", Isolation::Snapshot),
            ("REPEATABLE READ", Isolation::Snapshot),
            ("si", Isolation::Snapshot),
            ("serializable", Isolation::Serializable),
            ("strict serializable", Isolation::Serializable),
        ] {
            assert_eq!(name.parse::<Isolation>(), Ok(level), "{name}");
        }
        assert!("read uncommitted".parse::<Isolation>().is_err());
        for level in Isolation::ALL {
            assert_eq!(level.name().parse::<Isolation>(), Ok(level));
        }
    }
}
