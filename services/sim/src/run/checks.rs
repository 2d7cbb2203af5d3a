//! The checks at the end of a run: liveness once faults stopped, and the
//! linearizability of every register's history.

use super::*;

impl World {
    pub(super) fn check_liveness(&self) -> Result<(), String> {
        for group in &self.groups {
            let budget_left = (0..KEYS_PER_GROUP).any(|key| {
                self.issued.get(&(group.id, key)).copied().unwrap_or(0) < self.options.operations_per_key_max
            });
            if budget_left && !self.completed_in_quiet.contains(&group.id) {
                let replicas: Vec<String> = group
                    .voters
                    .iter()
                    .map(|voter| match self.nodes[voter].paxos.group(group.id) {
                        Some(replica) => format!(
                            "{voter}: {:?} promised {} chosen {} applied {}",
                            replica.role(),
                            replica.promised(),
                            replica.chosen(),
                            replica.applied()
                        ),
                        None => format!("{voter}: down"),
                    })
                    .collect();
                return Err(format!(
                    "{}: no operation completed in the quiet phase (liveness); {}",
                    group.id,
                    replicas.join("; ")
                ));
            }
        }
        Ok(())
    }

    pub(super) fn check_histories(&self) -> Result<(), String> {
        for ((group, key), history) in &self.history {
            if !is_linearizable(0, history) {
                let mut lines = String::new();
                for operation in history {
                    lines.push_str(&format!("\n    {operation:?}"));
                }
                return Err(format!("{group} key {key}: history is not linearizable:{lines}"));
            }
        }
        Ok(())
    }
}
