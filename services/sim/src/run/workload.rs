//! The clients: single-register reads, writes and compare-and-set through
//! the node believed to lead, and the history they leave for the checker.

use super::*;

/// Chance (thousandths of a percent, per finished operation) that a group's clients start
/// an idle spell, and its length range: long enough for the group to fall
/// quiet (a few heartbeat intervals) and for faults to strike meanwhile.
const IDLE_SPELL_CHANCE: u64 = 1_500;
const IDLE_SPELL_US: (u64, u64) = (30_000, 250_000);

impl World {
    /// The operation `op_id` was applied at `node`: answer its client if it
    /// was submitted there, in this incarnation.
    pub(super) fn complete(&mut self, node: NodeId, op_id: u64, output: Output) {
        let incarnation = self.nodes[&node].incarnation;
        let Some(pending) = self.pending.get(&op_id) else { return };
        if pending.node != node || pending.incarnation != incarnation {
            return;
        }
        let pending = self.pending.remove(&op_id).expect("checked above");
        let now = self.scheduler.now_us();
        let operation = &mut self.history.get_mut(&(pending.group, pending.key)).expect("recorded at call")
            [pending.history_index.expect("writes are recorded at call")];
        operation.return_us = Some(now);
        operation.output = Some(output);
        self.finish(pending.client, pending.group);
    }

    pub(super) fn complete_read(&mut self, node: NodeId, group: GroupId, op_id: u64, outcome: ReadOutcome) {
        let incarnation = self.nodes[&node].incarnation;
        let Some(pending) = self.pending.get(&op_id) else { return };
        if pending.node != node || pending.incarnation != incarnation {
            return;
        }
        let pending = self.pending.remove(&op_id).expect("checked above");
        if let ReadOutcome::Ready { .. } = outcome {
            let value = self.nodes[&node].registers[&group].read(pending.key);
            let now = self.scheduler.now_us();
            self.history.entry((group, pending.key)).or_default().push(Operation {
                call_us: pending.call_us,
                return_us: Some(now),
                op: pending.op,
                output: Some(Output::Value(value)),
            });
            self.report.reads_ok += 1;
            self.finish(pending.client, group);
        } else {
            self.clients[pending.client].waiting = None;
            self.scheduler.after(1_000, Event::ClientStep { client: pending.client });
        }
    }

    pub(super) fn finish(&mut self, client: usize, group: GroupId) {
        self.report.operations_ok += 1;
        if self.quiet {
            self.completed_in_quiet.insert(group);
        }
        self.clients[client].waiting = None;
        let think_us = self.scheduler.between(0, 10_000);
        // Now and then every client of the group pauses for a while: the
        // group falls quiet under whatever faults run meanwhile.
        let group_index = self.clients[client].group;
        if !self.quiet && self.scheduler.chance(IDLE_SPELL_CHANCE) {
            let spell_us = self.scheduler.between(IDLE_SPELL_US.0, IDLE_SPELL_US.1);
            self.idle_until_us[group_index] = self.scheduler.now_us() + spell_us;
        }
        self.scheduler.after(think_us, Event::ClientStep { client });
    }

    pub(super) fn client_step(&mut self, client: usize) {
        if self.clients[client].waiting.is_some() {
            return;
        }
        let group_index = self.clients[client].group;
        let group = self.groups[group_index].id;
        if self.idle_until_us[group_index] > self.scheduler.now_us() {
            self.scheduler.at(self.idle_until_us[group_index], Event::ClientStep { client });
            return;
        }
        if self.clients[client].planned.is_none() {
            let budget = if self.quiet {
                self.options.operations_per_key_max
            } else {
                self.options.operations_per_key_max * FAULT_PHASE_BUDGET_PERCENT / 100
            };
            let keys: Vec<u64> = (0..KEYS_PER_GROUP)
                .filter(|key| self.issued.get(&(group, *key)).copied().unwrap_or(0) < budget)
                .collect();
            if keys.is_empty() && !self.quiet {
                // Budget spent for now: wait for the quiet phase.
                let wake = self.options.fault_phase_us.max(self.scheduler.now_us()) + 1;
                self.scheduler.at(wake, Event::ClientStep { client });
                return;
            }
            if keys.is_empty() {
                return;
            }
            let key = keys[self.scheduler.between(0, keys.len() as u64 - 1) as usize];
            let unique = self.next_op_id;
            let op = match self.scheduler.between(0, 9) {
                0..=3 => Op::Read,
                4..=6 => Op::Write(unique),
                _ => {
                    // Expect a value this key recently held, so that some swaps succeed.
                    let recent = self.history.get(&(group, key)).and_then(|ops| ops.last()).and_then(|last| {
                        match (last.op, last.output) {
                            (_, Some(Output::Value(value))) => Some(value),
                            (Op::Write(value), _) => Some(value),
                            (Op::Cas { new, .. }, _) => Some(new),
                            _ => None,
                        }
                    });
                    Op::Cas { expected: recent.unwrap_or(0), new: unique }
                }
            };
            self.clients[client].planned = Some((key, op));
        }
        let (key, op) = self.clients[client].planned.expect("planned above");
        let target = self.clients[client].target;
        let voters = self.groups[group_index].voters.clone();
        let op_id = self.next_op_id;
        let sim_node = self.nodes.get_mut(&target).expect("known node");
        let result = if !sim_node.up {
            Err(ProposeError::NotLeader { leader: None })
        } else if op == Op::Read {
            let local = sim_node.clock.local_us(self.scheduler.now_us());
            let leased = sim_node.paxos.group(group).is_some_and(|replica| replica.has_lease(local));
            let result = sim_node.paxos.read_index(group, op_id, local);
            if result.is_ok() {
                if leased {
                    self.report.reads_under_lease += 1;
                } else {
                    self.report.reads_with_a_round += 1;
                }
            }
            result
        } else {
            sim_node.paxos.propose(group, Command { op_id, key, op }.encode())
        };
        match result {
            Ok(()) => {
                self.next_op_id += 1;
                let now = self.scheduler.now_us();
                let incarnation = sim_node.incarnation;
                *self.issued.entry((group, key)).or_insert(0) += 1;
                let history_index = (op != Op::Read).then(|| {
                    let history = self.history.entry((group, key)).or_default();
                    history.push(Operation { call_us: now, return_us: None, op, output: None });
                    history.len() - 1
                });
                self.pending.insert(
                    op_id,
                    Pending { client, group, key, node: target, incarnation, call_us: now, op, history_index },
                );
                self.clients[client].planned = None;
                self.clients[client].waiting = Some(op_id);
                let timeout_us = 4 * self.configs[&(target, group)].election_timeout_us;
                self.scheduler.after(timeout_us, Event::ClientTimeout { client, op_id });
                if self.options.faults.ack_write_before_commit && matches!(op, Op::Write(_)) {
                    let index = history_index.expect("writes are recorded at call");
                    let operation = &mut self.history.get_mut(&(group, key)).expect("recorded above")[index];
                    operation.return_us = Some(now);
                    operation.output = Some(Output::Written);
                    self.pending.remove(&op_id);
                    self.finish(client, group);
                }
                self.drive(target);
            }
            Err(error) => {
                let hint = match error {
                    ProposeError::NotLeader { leader } => leader.filter(|leader| *leader != target),
                    ProposeError::Busy | ProposeError::Reconfiguring | ProposeError::InvalidMembership { .. } => {
                        Some(target)
                    }
                };
                self.clients[client].target =
                    hint.unwrap_or_else(|| voters[self.scheduler.between(0, voters.len() as u64 - 1) as usize]);
                let backoff_us = self.scheduler.between(500, 5_000);
                self.scheduler.after(backoff_us, Event::ClientStep { client });
            }
        }
    }
}
