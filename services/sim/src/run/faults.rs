//! The fault schedule of a run: crashes (some aimed at writes in flight to
//! disk) and partitions, all drawn from the seed.

use super::*;

impl World {
    pub(super) fn plan_faults(&mut self, node_ids: &[NodeId]) {
        let fault_end = self.options.fault_phase_us;
        let crashes = self.scheduler.between(0, 5);
        for _ in 0..crashes {
            let at = self.scheduler.between(50_000, fault_end);
            // A whole region loses power at once, or a single node fails.
            let region = self.scheduler.chance(50_000).then(|| self.scheduler.between(0, 2) as usize);
            // Half of the crashes aim at a moment when writes are in flight to
            // disk: durability bugs live there (FoundationDB's BUGGIFY aims
            // faults at interesting moments the same way).
            if self.scheduler.chance(50_000) {
                self.scheduler.at(at, Event::CrashWhileSyncing { region, attempts_left: CRASH_AIM_ATTEMPTS_MAX });
            } else {
                let nodes = match region {
                    Some(region) => node_ids.iter().copied().filter(|node| self.nodes[node].region == region).collect(),
                    None => vec![node_ids[self.scheduler.between(0, node_ids.len() as u64 - 1) as usize]],
                };
                self.scheduler.at(at, Event::Crash { nodes });
            }
        }
        let partitions = self.scheduler.between(0, 4);
        for id in 0..partitions {
            let at = self.scheduler.between(0, fault_end);
            let lasts_us = self.scheduler.between(5_000, 500_000);
            let partition = self.draw_partition(node_ids);
            self.planned_partitions.insert(id, partition);
            self.scheduler.at(at, Event::Partition { id });
            self.scheduler.at((at + lasts_us).min(fault_end), Event::Heal { id });
        }
    }

    pub(super) fn draw_partition(&mut self, node_ids: &[NodeId]) -> Partition {
        let pick =
            |scheduler: &mut Scheduler<Event>| node_ids[scheduler.between(0, node_ids.len() as u64 - 1) as usize];
        let kind = self.scheduler.between(0, 4);
        let (description, side): (String, Vec<NodeId>) = match kind {
            0 | 1 => {
                let node = pick(&mut self.scheduler);
                (format!("node {node}"), vec![node])
            }
            2 | 3 => {
                let region = self.scheduler.between(0, 2) as usize;
                let side = node_ids.iter().copied().filter(|node| self.nodes[node].region == region).collect();
                (format!("region {region}"), side)
            }
            _ => {
                let (a, b) = (pick(&mut self.scheduler), pick(&mut self.scheduler));
                let one_way = self.scheduler.chance(50_000);
                let mut links = BTreeSet::from([(a, b)]);
                if !one_way {
                    links.insert((b, a));
                }
                let arrow = if one_way { "->" } else { "<->" };
                return Partition { description: format!("link {a}{arrow}{b}"), links };
            }
        };
        // Symmetric, or one-way in either direction.
        let direction = self.scheduler.between(0, 2);
        let mut links = BTreeSet::new();
        for inside in &side {
            for outside in node_ids.iter().filter(|node| !side.contains(node)) {
                if direction != 2 {
                    links.insert((*inside, *outside));
                }
                if direction != 1 {
                    links.insert((*outside, *inside));
                }
            }
        }
        let how = ["cut off", "cannot send", "cannot receive"][direction as usize];
        Partition { description: format!("{description} {how}"), links }
    }

    /// Finds nodes with an fsync in progress (in `region`, if given) and
    /// crashes them at a random instant before it completes.
    pub(super) fn crash_while_syncing(&mut self, region: Option<usize>, attempts_left: u32) {
        if self.quiet {
            return;
        }
        let now = self.scheduler.now_us();
        let syncing = |node: &SimNode| node.up && !node.syncing.is_empty();
        let victims: Vec<NodeId> = match region {
            Some(_) => {
                // The region with the most nodes syncing, if at least two are:
                // a region's replicas losing their acknowledged writes together
                // is what a quorum-durability bug needs.
                let mut syncing_per_region: BTreeMap<usize, usize> = BTreeMap::new();
                for node in self.nodes.values().filter(|node| syncing(node)) {
                    *syncing_per_region.entry(node.region).or_insert(0) += 1;
                }
                let busiest =
                    syncing_per_region.iter().filter(|(_, count)| **count >= 2).max_by_key(|(_, count)| **count);
                match busiest {
                    Some((region, _)) => {
                        let region = *region;
                        self.nodes.iter().filter(|(_, node)| node.region == region).map(|(id, _)| *id).collect()
                    }
                    None => Vec::new(),
                }
            }
            None => {
                let candidates: Vec<NodeId> =
                    self.nodes.iter().filter(|(_, node)| syncing(node)).map(|(id, _)| *id).collect();
                if candidates.is_empty() {
                    Vec::new()
                } else {
                    vec![candidates[self.scheduler.between(0, candidates.len() as u64 - 1) as usize]]
                }
            }
        };
        if victims.is_empty() {
            if attempts_left > 0 {
                self.scheduler
                    .after(CRASH_AIM_RETRY_US, Event::CrashWhileSyncing { region, attempts_left: attempts_left - 1 });
            }
            return;
        }
        let durable_at = victims
            .iter()
            .filter(|node| syncing(&self.nodes[*node]))
            .map(|node| self.nodes[node].sync_end_us)
            .min()
            .unwrap_or(now + 1);
        let at = self.scheduler.between(now, durable_at.max(now + 1) - 1);
        self.scheduler.at(at, Event::Crash { nodes: victims });
    }
}
