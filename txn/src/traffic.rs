//! R19: where each locality key's traffic comes from, as the leader of its
//! home shard sees it (`docs/design/transactions.md`, "Automatic
//! rehoming").
//!
//! Every request to a home shard carries the route it was routed by
//! ([`crate::protocol::Route`]), which names the locality key (its
//! residence record); the leader tallies each such request under the
//! region of the node it came from. Counts decay exponentially (a half-life
//! of a quarter of the window), so they say where the traffic came from
//! lately, and the tally is bounded: when it holds [`TrafficConfig::keys_max`]
//! keys, the lighter half is dropped.
//!
//! A key *leans* to a region while that region's share of its decayed count
//! is at least [`TrafficConfig::share`] (more than half) and the count is at
//! least [`TrafficConfig::min_requests`]; a key that has leaned to the same
//! region for a whole window is a candidate to move there
//! ([`Traffic::leanings`]). The share is the hysteresis: a key used from two
//! regions about equally leans to neither and stays where it is, and one
//! that moved needs a region's share to fall below the threshold, and
//! another's to pass it for a window, before it moves again.
//!
//! Keys are kept in key order, so the tally behaves the same on every run
//! of the simulator. Nothing here is replicated or durable: a new leader starts counting
//! afresh, and a key's tally is a hint that only ever starts a rehome,
//! which is itself a transaction that checks everything it relies on.

use std::collections::BTreeMap;

/// How a home shard's leader judges where a key's traffic comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrafficConfig {
    /// How long one region must dominate a key's traffic before the key
    /// is a candidate to move there (µs). Counts halve every quarter of it.
    pub window_us: u64,
    /// The share of a key's traffic one region must have (0.5 < share ≤ 1).
    pub share: f64,
    /// The decayed request count below which a key is too quiet to move,
    /// in requests per window (a steady `r` requests a second count
    /// `r × window` once they have gone on for a few half-lives).
    pub min_requests: f64,
    /// Keys tallied at most per shard.
    pub keys_max: usize,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig { window_us: 30_000_000, share: 0.8, min_requests: 20.0, keys_max: 4_096 }
    }
}

/// A key that one region has dominated for a window.
#[derive(Clone, Debug, PartialEq)]
pub struct Leaning {
    /// The key's residence record (it names the locality key).
    pub residence: Vec<u8>,
    /// The region (index into the cluster's regions) its traffic comes from.
    pub region: u32,
    /// That region's share of the key's decayed count.
    pub share: f64,
    /// The key's decayed request count, per window
    /// ([`TrafficConfig::min_requests`]).
    pub requests: f64,
    /// How long the region has dominated it (µs).
    pub for_us: u64,
}

/// Half-lives in a window.
const HALF_LIVES_PER_WINDOW: u64 = 4;

/// What a decayed count is in requests per window: a steady rate `r`
/// decays to `r × half-life / ln 2`, a window is four half-lives.
fn per_window(weight: f64) -> f64 {
    weight * HALF_LIVES_PER_WINDOW as f64 * std::f64::consts::LN_2
}

/// One key's (or one group's) decayed counts by source: a region, or a node.
#[derive(Clone, Debug)]
struct Tally<S> {
    counts: Vec<(S, f64)>,
    /// When the counts were last decayed (µs).
    at_us: u64,
    /// The source that dominates, and since when.
    leaning: Option<(S, u64)>,
}

impl<S: Copy + PartialEq> Tally<S> {
    fn decay(&mut self, now_us: u64, half_life_us: u64) {
        if now_us <= self.at_us {
            return;
        }
        let factor = 0.5f64.powf((now_us - self.at_us) as f64 / half_life_us as f64);
        for (_, count) in &mut self.counts {
            *count *= factor;
        }
        self.at_us = now_us;
    }

    /// One request from `source`, after decaying the counts to `now_us`.
    fn count(&mut self, source: S, now_us: u64, half_life_us: u64) {
        self.decay(now_us, half_life_us);
        match self.counts.iter_mut().find(|(known, _)| *known == source) {
            Some((_, count)) => *count += 1.0,
            None => self.counts.push((source, 1.0)),
        }
    }

    fn weight(&self) -> f64 {
        self.counts.iter().map(|(_, count)| count).sum()
    }

    /// The dominant source and its share, if one has at least `share` of
    /// at least `min_requests` (per window).
    fn dominant(&self, share: f64, min_requests: f64) -> Option<(S, f64)> {
        let weight = self.weight();
        if per_window(weight) < min_requests {
            return None;
        }
        let (source, count) = self.counts.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1))?;
        let found = count / weight;
        (found >= share).then_some((source, found))
    }

    /// Updates the leaning from the counts as of `now_us`.
    fn judge(&mut self, now_us: u64, share: f64, min_requests: f64) {
        self.leaning = match (self.dominant(share, min_requests), self.leaning) {
            (Some((region, _)), Some((leaning, since))) if region == leaning => Some((leaning, since)),
            (Some((region, _)), _) => Some((region, now_us)),
            (None, _) => None,
        };
    }
}

/// The tally of one shard's keys. See the module documentation.
#[derive(Clone, Debug)]
pub struct Traffic {
    config: TrafficConfig,
    /// The shard's home region: keys leaning there stay.
    home: u32,
    keys: BTreeMap<Vec<u8>, Tally<u32>>,
}

impl Traffic {
    /// The tally of a home shard of region `home`.
    pub fn new(config: TrafficConfig, home: u32) -> Self {
        Traffic { config, home, keys: BTreeMap::new() }
    }

    fn half_life_us(&self) -> u64 {
        (self.config.window_us / HALF_LIVES_PER_WINDOW).max(1)
    }

    /// Keys tallied now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Counts one request for the key of `residence` from `region`.
    pub fn record(&mut self, residence: &[u8], region: u32, now_us: u64) {
        let half_life_us = self.half_life_us();
        if !self.keys.contains_key(residence) && self.keys.len() >= self.config.keys_max {
            self.shed(now_us);
        }
        let tally = self.keys.entry(residence.to_vec()).or_insert_with(|| Tally {
            counts: Vec::new(),
            at_us: now_us,
            leaning: None,
        });
        tally.count(region, now_us, half_life_us);
        tally.judge(now_us, self.config.share, self.config.min_requests);
    }

    /// Drops the lighter half of the keys (at least one; of keys equally
    /// heavy, the last in key order go first).
    fn shed(&mut self, now_us: u64) {
        let half_life_us = self.half_life_us();
        let mut weights: Vec<(f64, Vec<u8>)> = self
            .keys
            .iter_mut()
            .map(|(key, tally)| {
                tally.decay(now_us, half_life_us);
                (tally.weight(), key.clone())
            })
            .collect();
        let drop = weights.len().div_ceil(2);
        if drop == 0 {
            return;
        }
        weights.select_nth_unstable_by(drop - 1, |a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
        for (_, key) in &weights[..drop] {
            self.keys.remove(key);
        }
    }

    /// The keys another region than the shard's has dominated for a whole
    /// window as of `now_us`, heaviest first, at most `max`. Keys whose
    /// counts decayed to nothing are dropped.
    pub fn leanings(&mut self, now_us: u64, max: usize) -> Vec<Leaning> {
        let half_life_us = self.half_life_us();
        let (config, home) = (self.config, self.home);
        let mut found = Vec::new();
        self.keys.retain(|residence, tally| {
            tally.decay(now_us, half_life_us);
            tally.judge(now_us, config.share, config.min_requests);
            let weight = tally.weight();
            if let Some((region, since)) = tally.leaning
                && region != home
                && now_us.saturating_sub(since) >= config.window_us
            {
                let count = tally.counts.iter().find(|(known, _)| *known == region).map_or(0.0, |(_, count)| *count);
                found.push(Leaning {
                    residence: residence.clone(),
                    region,
                    share: count / weight,
                    requests: per_window(weight),
                    for_us: now_us.saturating_sub(since),
                });
            }
            // Less than one request's worth left: forget the key.
            weight >= 1.0 / 1024.0
        });
        found.sort_by(|a, b| b.requests.total_cmp(&a.requests).then_with(|| a.residence.cmp(&b.residence)));
        found.truncate(max);
        found
    }

    /// Forgets a key (it moved away).
    pub fn forget(&mut self, residence: &[u8]) {
        self.keys.remove(residence);
    }
}

/// R22: how a group's leader judges which node its requests come from
/// (`docs/design/multipaxos.md`, "Leadership follows the workload").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FollowConfig {
    /// How long one node must send most of a group's requests before the
    /// leadership moves to it (µs). Counts halve every quarter of it.
    pub window_us: u64,
    /// The share of the group's requests that node must send
    /// (0.5 < share ≤ 1).
    pub share: f64,
    /// The decayed request count below which a group is too quiet to
    /// move, in requests per window.
    pub min_requests: f64,
}

impl Default for FollowConfig {
    fn default() -> Self {
        FollowConfig { window_us: 10_000_000, share: 0.8, min_requests: 100.0 }
    }
}

/// A node that has sent most of a group's requests for a whole window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dominant {
    pub node: u64,
    /// Its share of the group's decayed request count.
    pub share: f64,
    /// The group's decayed request count, per window.
    pub requests: f64,
}

/// R22: where one group's requests come from, by node, as its leader sees
/// them. Like the tally of keys, nothing of it is replicated or durable: a
/// new leader counts afresh, and the count only ever starts a handover,
/// which is an election like any other.
#[derive(Clone, Debug)]
pub struct Requesters {
    config: FollowConfig,
    tally: Tally<u64>,
}

impl Requesters {
    pub fn new(config: FollowConfig, now_us: u64) -> Self {
        Requesters { config, tally: Tally { counts: Vec::new(), at_us: now_us, leaning: None } }
    }

    fn half_life_us(&self) -> u64 {
        (self.config.window_us / HALF_LIVES_PER_WINDOW).max(1)
    }

    /// Counts one request from `node`.
    pub fn record(&mut self, node: u64, now_us: u64) {
        self.tally.count(node, now_us, self.half_life_us());
        self.tally.judge(now_us, self.config.share, self.config.min_requests);
    }

    /// The node that has sent at least the configured share of the
    /// group's requests for a whole window as of `now_us`, if one has.
    pub fn dominant(&mut self, now_us: u64) -> Option<Dominant> {
        self.tally.decay(now_us, self.half_life_us());
        self.tally.judge(now_us, self.config.share, self.config.min_requests);
        let (node, since) = self.tally.leaning?;
        if now_us.saturating_sub(since) < self.config.window_us {
            return None;
        }
        let weight = self.tally.weight();
        let count = self.tally.counts.iter().find(|(known, _)| *known == node).map_or(0.0, |(_, count)| *count);
        Some(Dominant { node, share: count / weight, requests: per_window(weight) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;
    /// The tallied shard's region (the tests' traffic comes from 1 and 2).
    const HOME: u32 = 5;
    const MAX: usize = 16;

    fn config() -> TrafficConfig {
        TrafficConfig { window_us: 10 * SECOND, share: 0.8, min_requests: 4.0, keys_max: 8 }
    }

    /// `per_second` requests a second from each (region, rate) for
    /// `seconds`, starting at `start` (seconds); returns the end.
    fn drive(traffic: &mut Traffic, key: &[u8], rates: &[(u32, u64)], start: u64, seconds: u64) -> u64 {
        for second in start..start + seconds {
            for (region, rate) in rates {
                for i in 0..*rate {
                    traffic.record(key, *region, second * SECOND + i * SECOND / rate);
                }
            }
        }
        (start + seconds) * SECOND
    }

    #[test]
    fn a_key_used_from_one_region_leans_there_after_a_window() {
        let mut traffic = Traffic::new(config(), HOME);
        let end = drive(&mut traffic, b"k", &[(2, 4)], 0, 9);
        assert!(traffic.leanings(end, MAX).is_empty(), "not a whole window yet");
        let end = drive(&mut traffic, b"k", &[(2, 4)], 9, 3);
        let leanings = traffic.leanings(end, MAX);
        assert_eq!(leanings.len(), 1);
        assert_eq!(leanings[0].region, 2);
        assert!((leanings[0].share - 1.0).abs() < 1e-9);
        assert!(leanings[0].for_us >= 10 * SECOND);
    }

    #[test]
    fn a_key_used_from_two_regions_leans_nowhere() {
        let mut traffic = Traffic::new(config(), HOME);
        let end = drive(&mut traffic, b"k", &[(0, 3), (2, 2)], 0, 60);
        assert!(traffic.leanings(end, MAX).is_empty(), "60/40 never passes a share of 0.8");
    }

    #[test]
    fn a_user_who_moves_is_followed_once_the_new_region_dominates() {
        let mut traffic = Traffic::new(config(), HOME);
        let end = drive(&mut traffic, b"k", &[(0, 4)], 0, 30);
        assert_eq!(traffic.leanings(end, MAX)[0].region, 0);
        // Moves to region 1: the share of region 1 passes 0.8 after a few
        // half-lives, then must hold for a window.
        let end = drive(&mut traffic, b"k", &[(1, 4)], 30, 8);
        assert!(traffic.leanings(end, MAX).iter().all(|leaning| leaning.region != 1), "not dominant for a window yet");
        let end = drive(&mut traffic, b"k", &[(1, 4)], 38, 12);
        let leanings = traffic.leanings(end, MAX);
        assert_eq!(leanings.len(), 1);
        assert_eq!(leanings[0].region, 1);
    }

    #[test]
    fn a_break_in_dominance_starts_the_window_again() {
        let mut traffic = Traffic::new(config(), HOME);
        drive(&mut traffic, b"k", &[(2, 4)], 0, 8);
        // A burst from region 0 takes region 2 below its share.
        drive(&mut traffic, b"k", &[(0, 40)], 8, 1);
        let end = drive(&mut traffic, b"k", &[(2, 4)], 9, 6);
        assert!(traffic.leanings(end, MAX).is_empty(), "the window restarted at the burst");
    }

    #[test]
    fn quiet_keys_do_not_lean_and_are_forgotten() {
        let mut traffic = Traffic::new(config(), HOME);
        let end = drive(&mut traffic, b"k", &[(2, 1)], 0, 1);
        assert!(traffic.leanings(end + 20 * SECOND, MAX).is_empty(), "one request is too quiet");
        assert!(traffic.leanings(end + 1_000 * SECOND, MAX).is_empty());
        assert!(traffic.is_empty(), "decayed to nothing");
    }

    #[test]
    fn the_tally_is_bounded_and_keeps_the_heavy_keys() {
        let mut traffic = Traffic::new(config(), HOME);
        drive(&mut traffic, b"heavy", &[(1, 20)], 0, 1);
        for i in 0..1_000u32 {
            traffic.record(&i.to_be_bytes(), 0, SECOND + u64::from(i));
            assert!(traffic.len() <= 8);
        }
        assert!(traffic.keys.contains_key(b"heavy".as_slice()));
    }

    #[test]
    fn keys_used_from_the_home_region_are_not_listed_and_the_list_is_bounded() {
        let mut traffic = Traffic::new(config(), HOME);
        drive(&mut traffic, b"home", &[(HOME, 4)], 0, 12);
        for key in [b"a", b"b", b"c"] {
            drive(&mut traffic, key, &[(2, 4)], 0, 12);
        }
        let leanings = traffic.leanings(12 * SECOND, 2);
        assert_eq!(leanings.len(), 2, "three keys lean away from home, two are listed");
        assert!(leanings.iter().all(|leaning| leaning.region == 2));
    }

    #[test]
    fn forgotten_keys_start_over() {
        let mut traffic = Traffic::new(config(), HOME);
        let end = drive(&mut traffic, b"k", &[(2, 4)], 0, 12);
        assert_eq!(traffic.leanings(end, MAX).len(), 1);
        traffic.forget(b"k");
        let end = drive(&mut traffic, b"k", &[(2, 4)], 12, 5);
        assert!(traffic.leanings(end, MAX).is_empty());
    }

    fn follow() -> FollowConfig {
        FollowConfig { window_us: 10 * SECOND, share: 0.8, min_requests: 4.0 }
    }

    #[test]
    fn a_node_that_sends_most_requests_for_a_window_dominates() {
        let mut requesters = Requesters::new(follow(), 0);
        let mut now = 0;
        while now < 9 * SECOND {
            requesters.record(4, now);
            now += SECOND / 10;
            assert_eq!(requesters.dominant(now), None, "not for a whole window yet ({now} µs)");
        }
        while now < 12 * SECOND {
            requesters.record(4, now);
            now += SECOND / 10;
        }
        let dominant = requesters.dominant(now).expect("node 4 dominates");
        assert_eq!(dominant.node, 4);
        assert!(dominant.share > 0.99);
    }

    #[test]
    fn two_nodes_sending_alike_dominate_nowhere_and_quiet_groups_never() {
        let mut shared = Requesters::new(follow(), 0);
        let mut quiet = Requesters::new(follow(), 0);
        let mut now = 0;
        for step in 0..600u32 {
            shared.record(if step % 2 == 0 { 1 } else { 4 }, now);
            if step % 50 == 0 {
                quiet.record(4, now);
            }
            now += SECOND / 10;
        }
        assert_eq!(shared.dominant(now), None);
        assert_eq!(quiet.dominant(now), None, "a request every 5 s is below the bar");
    }

    #[test]
    fn a_dominance_broken_for_a_moment_starts_its_window_again() {
        let mut requesters = Requesters::new(follow(), 0);
        let mut now = 0;
        while now < 8 * SECOND {
            requesters.record(4, now);
            now += SECOND / 10;
        }
        // A burst from node 1 takes node 4 below the share.
        for _ in 0..200 {
            requesters.record(1, now);
        }
        // Node 4 leads again soon after, but its window starts then.
        while now < 16 * SECOND {
            requesters.record(4, now);
            now += SECOND / 10;
            assert_eq!(requesters.dominant(now), None, "dominant since the burst for less than a window");
        }
        while now < 30 * SECOND {
            requesters.record(4, now);
            now += SECOND / 10;
        }
        assert_eq!(requesters.dominant(now).map(|found| found.node), Some(4));
    }
}
