//! Fault rules: which directed links between nodes carry nothing.
//!
//! A [`Faults`] is a list of [`FaultRule`]s shared as `Arc<Faults>` by every
//! transport it governs — all nodes of an in-process cluster, or one node
//! whose admin endpoint edits it — and changed at runtime.
//! A rule cuts directed links:
//!
//! - [`FaultRule::DropLink`] cuts `from → to` only (a one-way fault);
//! - [`FaultRule::Isolate`] cuts every link to and from one node;
//! - [`FaultRule::PartitionRegions`] cuts every link between a node of the
//!   listed regions and a node outside them, both ways; links inside the set
//!   and links outside it keep working.
//!
//! - [`FaultRule::ClockSkew`] cuts nothing: it moves one node's physical
//!   clock ([`FaultClock`]), to test what a node does when its clock leaves
//!   the bound `max_clock_offset_ms`.
//!
//! A link is cut while any rule cuts it. The transport asks on send, again
//! when an emulated delay expires, and on receive, so that a batch already in
//! flight when a rule appears is dropped too. Rules are not persisted.
//!
//! `Faults` (de)serializes as its list of rules, so an endpoint can take and
//! show it as JSON:
//! `[{"kind":"drop_link","from":1,"to":2},{"kind":"partition_regions","regions":["eu-west"]}]`.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use geodb_geo::{NodeId, Region};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most rules at once: a test or an operator needs a handful, and every
/// message is checked against all of them.
pub const FAULT_RULES_MAX: usize = 256;

/// One fault: a set of directed links that carry nothing while it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultRule {
    /// Drops every message from `from` to `to`; the other direction works.
    DropLink { from: NodeId, to: NodeId },
    /// Drops every message to or from `node`.
    Isolate { node: NodeId },
    /// Drops every message between a node in `regions` and a node outside
    /// them, both ways. A node of no known region is outside.
    PartitionRegions { regions: BTreeSet<Region> },
    /// Moves `node`'s physical clock by `offset_ms` (negative: behind), as
    /// if it were that far off true time. Cuts no link.
    ClockSkew { node: NodeId, offset_ms: i64 },
}

/// The largest skew a rule applies, either way: a day.
pub const CLOCK_SKEW_MS_MAX: i64 = 86_400_000;

impl FaultRule {
    /// Whether this rule cuts the link `from → to`.
    pub fn cuts(&self, from: NodeId, from_region: Option<&Region>, to: NodeId, to_region: Option<&Region>) -> bool {
        match self {
            FaultRule::DropLink { from: cut_from, to: cut_to } => from == *cut_from && to == *cut_to,
            FaultRule::Isolate { node } => from == *node || to == *node,
            FaultRule::PartitionRegions { regions } => {
                let inside = |region: Option<&Region>| region.is_some_and(|region| regions.contains(region));
                inside(from_region) != inside(to_region)
            }
            FaultRule::ClockSkew { .. } => false,
        }
    }
}

impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultRule::DropLink { from, to } => write!(f, "drop {from}→{to}"),
            FaultRule::Isolate { node } => write!(f, "isolate {node}"),
            FaultRule::PartitionRegions { regions } => {
                let names: Vec<&str> = regions.iter().map(|region| region.0.as_str()).collect();
                write!(f, "partition {{{}}} from the rest", names.join(", "))
            }
            FaultRule::ClockSkew { node, offset_ms } => write!(f, "clock of {node} {offset_ms:+} ms"),
        }
    }
}

/// The error of a rule list longer than [`FAULT_RULES_MAX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at most {FAULT_RULES_MAX} fault rules")]
pub struct TooManyRules;

/// The fault rules in force, shared by the transports they govern.
#[derive(Debug, Default)]
pub struct Faults {
    rules: RwLock<Vec<FaultRule>>,
    /// Whether any rule skews a clock: clocks are read far more often than
    /// rules change, and almost never skewed.
    skewed: AtomicBool,
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Faults::default()
    }

    fn note_skews(&self, rules: &[FaultRule]) {
        let skewed = rules.iter().any(|rule| matches!(rule, FaultRule::ClockSkew { .. }));
        self.skewed.store(skewed, Ordering::SeqCst);
    }

    /// How far the rules move `node`'s clock (ns; the sum of its skews,
    /// each within a day).
    pub fn clock_skew_ns(&self, node: NodeId) -> i64 {
        if !self.skewed.load(Ordering::Relaxed) {
            return 0;
        }
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        rules
            .iter()
            .map(|rule| match rule {
                FaultRule::ClockSkew { node: skewed, offset_ms } if *skewed == node => {
                    offset_ms.clamp(&-CLOCK_SKEW_MS_MAX, &CLOCK_SKEW_MS_MAX) * 1_000_000
                }
                _ => 0,
            })
            .sum()
    }

    /// Adds a rule; adding one already in force changes nothing.
    pub fn add(&self, rule: FaultRule) -> Result<(), TooManyRules> {
        let mut rules = self.rules.write().unwrap_or_else(PoisonError::into_inner);
        if rules.contains(&rule) {
            return Ok(());
        }
        if rules.len() >= FAULT_RULES_MAX {
            return Err(TooManyRules);
        }
        tracing::info!(%rule, "fault rule added");
        rules.push(rule);
        self.note_skews(&rules);
        Ok(())
    }

    /// Removes one rule; `false` if it was not in force.
    pub fn remove(&self, rule: &FaultRule) -> bool {
        let mut rules = self.rules.write().unwrap_or_else(PoisonError::into_inner);
        let before = rules.len();
        rules.retain(|held| held != rule);
        let removed = rules.len() < before;
        self.note_skews(&rules);
        if removed {
            tracing::info!(%rule, "fault rule removed");
        }
        removed
    }

    /// Replaces every rule at once (duplicates are kept once).
    pub fn replace(&self, rules: Vec<FaultRule>) -> Result<(), TooManyRules> {
        let mut unique: Vec<FaultRule> = Vec::with_capacity(rules.len().min(FAULT_RULES_MAX));
        for rule in rules {
            if !unique.contains(&rule) {
                if unique.len() >= FAULT_RULES_MAX {
                    return Err(TooManyRules);
                }
                unique.push(rule);
            }
        }
        self.note_skews(&unique);
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = unique;
        tracing::info!(faults = %self.describe(), "fault rules replaced");
        Ok(())
    }

    /// Heals everything.
    pub fn clear(&self) {
        self.rules.write().unwrap_or_else(PoisonError::into_inner).clear();
        self.skewed.store(false, Ordering::SeqCst);
        tracing::info!("fault rules cleared");
    }

    /// The rules in force, in the order they were added.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether any rule cuts the link `from → to`.
    pub fn cuts(&self, from: NodeId, from_region: Option<&Region>, to: NodeId, to_region: Option<&Region>) -> bool {
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        rules.iter().any(|rule| rule.cuts(from, from_region, to, to_region))
    }

    /// One line for logs: `no faults`, or the rules separated by `; `.
    pub fn describe(&self) -> String {
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        if rules.is_empty() {
            return "no faults".to_string();
        }
        rules.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }
}

/// A node's physical clock: the operating system's, moved by the
/// [`FaultRule::ClockSkew`] rules that name the node (none outside tests).
pub struct FaultClock {
    node: NodeId,
    faults: Arc<Faults>,
}

impl FaultClock {
    pub fn new(node: NodeId, faults: Arc<Faults>) -> Self {
        FaultClock { node, faults }
    }
}

impl geodb_txn::Clock for FaultClock {
    fn now_ns(&self) -> u64 {
        let now = geodb_txn::SystemClock.now_ns();
        match self.faults.clock_skew_ns(self.node) {
            0 => now,
            skew => (now as i128 + skew as i128).clamp(0, u64::MAX as i128) as u64,
        }
    }
}

impl Serialize for Faults {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.rules().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Faults {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rules = Vec::<FaultRule>::deserialize(deserializer)?;
        let faults = Faults::new();
        faults.replace(rules).map_err(serde::de::Error::custom)?;
        Ok(faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str) -> Region {
        Region(name.to_string())
    }

    #[test]
    fn each_rule_cuts_exactly_its_links() {
        let (east, west) = (region("us-east"), region("eu-west"));
        let drop = FaultRule::DropLink { from: NodeId(1), to: NodeId(2) };
        assert!(drop.cuts(NodeId(1), None, NodeId(2), None));
        assert!(!drop.cuts(NodeId(2), None, NodeId(1), None));
        assert!(!drop.cuts(NodeId(1), None, NodeId(3), None));

        let isolate = FaultRule::Isolate { node: NodeId(3) };
        assert!(isolate.cuts(NodeId(3), None, NodeId(1), None));
        assert!(isolate.cuts(NodeId(1), None, NodeId(3), None));
        assert!(!isolate.cuts(NodeId(1), None, NodeId(2), None));

        let partition = FaultRule::PartitionRegions { regions: BTreeSet::from([west.clone()]) };
        assert!(partition.cuts(NodeId(1), Some(&east), NodeId(3), Some(&west)));
        assert!(partition.cuts(NodeId(3), Some(&west), NodeId(1), Some(&east)));
        assert!(!partition.cuts(NodeId(3), Some(&west), NodeId(4), Some(&west)));
        assert!(!partition.cuts(NodeId(1), Some(&east), NodeId(2), Some(&east)));
        assert!(partition.cuts(NodeId(3), Some(&west), NodeId(9), None), "a node of no region is outside");
    }

    #[test]
    fn faults_round_trip_as_a_json_list_and_describe_themselves() {
        let faults = Faults::new();
        assert_eq!(faults.describe(), "no faults");
        faults.add(FaultRule::DropLink { from: NodeId(1), to: NodeId(2) }).unwrap();
        faults.add(FaultRule::DropLink { from: NodeId(1), to: NodeId(2) }).unwrap();
        faults.add(FaultRule::PartitionRegions { regions: BTreeSet::from([region("eu-west")]) }).unwrap();
        assert_eq!(faults.rules().len(), 2, "a rule already in force is not added twice");
        assert_eq!(faults.describe(), "drop n1→n2; partition {eu-west} from the rest");

        let json = serde_json::to_string(&faults).unwrap();
        assert_eq!(
            json,
            r#"[{"kind":"drop_link","from":1,"to":2},{"kind":"partition_regions","regions":["eu-west"]}]"#
        );
        let back: Faults = serde_json::from_str(&json).unwrap();
        assert_eq!(back.rules(), faults.rules());

        assert!(faults.remove(&FaultRule::DropLink { from: NodeId(1), to: NodeId(2) }));
        assert!(!faults.remove(&FaultRule::Isolate { node: NodeId(7) }));
        faults.clear();
        assert!(faults.rules().is_empty());
    }

    #[test]
    fn a_clock_skew_moves_only_its_nodes_clock_and_cuts_nothing() {
        use geodb_txn::Clock;
        let faults = Arc::new(Faults::new());
        let skewed = FaultClock::new(NodeId(3), faults.clone());
        let other = FaultClock::new(NodeId(1), faults.clone());
        faults.add(FaultRule::ClockSkew { node: NodeId(3), offset_ms: 1_700 }).unwrap();
        assert!(!faults.cuts(NodeId(3), None, NodeId(1), None));
        assert_eq!(faults.clock_skew_ns(NodeId(3)), 1_700_000_000);
        assert_eq!(faults.clock_skew_ns(NodeId(1)), 0);
        let (ahead, base) = (skewed.now_ns(), other.now_ns());
        assert!(ahead > base + 1_600_000_000, "{ahead} vs {base}");
        let json = serde_json::to_string(&faults.rules()).unwrap();
        assert_eq!(json, r#"[{"kind":"clock_skew","node":3,"offset_ms":1700}]"#);
        faults.clear();
        assert_eq!(faults.clock_skew_ns(NodeId(3)), 0);
        faults.replace(vec![FaultRule::ClockSkew { node: NodeId(3), offset_ms: -i64::MAX }]).unwrap();
        assert_eq!(faults.clock_skew_ns(NodeId(3)), -CLOCK_SKEW_MS_MAX * 1_000_000, "bounded to a day");
    }

    #[test]
    fn the_number_of_rules_is_bounded() {
        let faults = Faults::new();
        for node in 0..FAULT_RULES_MAX as u64 {
            faults.add(FaultRule::Isolate { node: NodeId(node) }).unwrap();
        }
        assert_eq!(faults.add(FaultRule::Isolate { node: NodeId(u64::MAX) }), Err(TooManyRules));
        let too_many: Vec<FaultRule> =
            (0..=FAULT_RULES_MAX as u64).map(|node| FaultRule::Isolate { node: NodeId(node) }).collect();
        assert_eq!(faults.replace(too_many.clone()), Err(TooManyRules));
        assert!(serde_json::from_str::<Faults>(&serde_json::to_string(&too_many).unwrap()).is_err());
    }
}
