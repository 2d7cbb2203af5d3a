//! Group commit: concurrent durable writes share one write-ahead-log sync.
//!
//! A commit is acknowledged only once it is durable, and a sync costs a
//! disk flush (milliseconds on many disks). Paying one per transaction
//! caps a node at a few hundred commits per second. Instead, committers
//! queue their batches; one of them — the *leader* — takes everything
//! queued, writes it as one batch with [`Durability::Sync`], and wakes the
//! others. While the leader syncs, new committers queue up behind it and
//! form the next group, so the number of syncs grows with time spent
//! syncing, not with the number of commits.
//!
//! Guarantees:
//! - Batches become durable in the order they were [`submitted`]: a ticket
//!   that [`wait`] reports durable implies every earlier ticket is too.
//! - A group is written atomically; if the engine fails the write, every
//!   ticket of that group gets the error and nothing of it is applied.
//!
//! [`submitted`]: GroupCommitter::submit
//! [`wait`]: GroupCommitter::wait

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::engine::{Durability, Engine, WriteBatch};
use crate::{Error, Result};

/// Most batches merged into one sync. Bounds the memory and the latency of
/// one group; past it the next group forms at once.
pub const GROUP_BATCHES_MAX: usize = 1024;

/// A place in the commit queue, returned by [`GroupCommitter::submit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Default)]
struct State {
    /// Queued batches in submission order, with their tickets.
    queue: Vec<(u64, WriteBatch)>,
    /// The next ticket to hand out.
    next_ticket: u64,
    /// Every ticket below this one has been written (or has failed).
    written_below: u64,
    /// Failed groups by first ticket: (end ticket, error message, waiters
    /// of the group that have not read the outcome yet). Kept until every
    /// waiter of the group has read it, so no failure is ever reported as
    /// success.
    failures: BTreeMap<u64, (u64, String, u64)>,
    leader_active: bool,
    syncs: u64,
}

/// Serialises durable writes into groups. See the module documentation.
pub struct GroupCommitter {
    engine: Arc<dyn Engine>,
    state: Mutex<State>,
    written: Condvar,
}

impl GroupCommitter {
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        GroupCommitter { engine, state: Mutex::new(State::default()), written: Condvar::new() }
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the state itself
        // stays consistent (every update is a single assignment), so go on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `batch`; it is written, in order, by some caller of
    /// [`GroupCommitter::wait`]. Callers that must order batches (by commit
    /// timestamp) submit them in that order under their own lock.
    pub fn submit(&self, batch: WriteBatch) -> Ticket {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push((ticket, batch));
        Ticket(ticket)
    }

    /// Blocks until the batch of `ticket` is durable, leading a group write
    /// if no one else is. Returns the engine's error if its group failed.
    /// Waits through the program's hook ([`crate::wait`]): a leader syncs,
    /// a follower sleeps until the leader is done.
    pub fn wait(&self, ticket: Ticket) -> Result<()> {
        crate::wait::blocking(|| self.wait_here(ticket))
    }

    fn wait_here(&self, ticket: Ticket) -> Result<()> {
        let mut state = self.lock();
        loop {
            if ticket.0 < state.written_below {
                // Every ticket is waited for exactly once (`submit` hands it
                // to one caller), so the last waiter of a failed group
                // removes its record.
                let failed = state.failures.range_mut(..=ticket.0).next_back().and_then(|(first, failure)| {
                    (ticket.0 < failure.0).then(|| {
                        failure.2 -= 1;
                        (*first, failure.1.clone(), failure.2 == 0)
                    })
                });
                return match failed {
                    Some((first, message, last_waiter)) => {
                        if last_waiter {
                            state.failures.remove(&first);
                        }
                        Err(Error::Engine(message))
                    }
                    None => Ok(()),
                };
            }
            if state.leader_active {
                state = self.written.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            // Lead: take a group from the head of the queue and write it.
            state.leader_active = true;
            let take = state.queue.len().min(GROUP_BATCHES_MAX);
            let group: Vec<(u64, WriteBatch)> = state.queue.drain(..take).collect();
            drop(state);
            let (first, end) = match (group.first(), group.last()) {
                (Some((first, _)), Some((last, _))) => (*first, *last + 1),
                // Our own ticket is queued or written; an empty queue here
                // means it was written, and the loop returns above.
                _ => unreachable!("a waiter below the written mark always finds its batch queued"),
            };
            let mut merged = WriteBatch::new();
            for (_, batch) in group {
                merged.append(batch);
            }
            // An engine that panics must not leave the committers waiting on
            // a leader that never reports: the panic fails the group.
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.engine.write(merged, Durability::Sync)))
                    .unwrap_or_else(|_| Err(Error::Engine("the storage engine panicked during a write".into())));
            state = self.lock();
            assert_eq!(state.written_below, first, "groups are written in ticket order");
            state.written_below = end;
            state.syncs += 1;
            if let Err(error) = outcome {
                state.failures.insert(first, (end, error.to_string(), end - first));
            }
            state.leader_active = false;
            self.written.notify_all();
        }
    }

    /// Submits `batch` and waits for it to be durable.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let ticket = self.submit(batch);
        self.wait(ticket)
    }

    /// Group writes (syncs) so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Batches submitted and not yet taken by a leader.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ColumnFamily, HookedEngine, MemoryEngine};
    use std::sync::mpsc;

    /// The state behind an engine whose first write blocks until the test
    /// lets it go, so a test can queue commits behind a leader without
    /// timing; it records each write's size.
    struct Gate {
        gate: Mutex<Option<mpsc::Receiver<()>>>,
        writes: Mutex<Vec<usize>>,
        fail: bool,
    }

    fn gated_engine(gate: Arc<Gate>) -> Arc<HookedEngine> {
        Arc::new(HookedEngine::new(Arc::new(MemoryEngine::new()), move |batch, _| {
            let waiting = gate.gate.lock().unwrap().take();
            if let Some(waiting) = waiting {
                waiting.recv().unwrap();
            }
            gate.writes.lock().unwrap().push(batch.len());
            if gate.fail {
                return Err(Error::Engine("No space left on device".into()));
            }
            Ok(())
        }))
    }

    fn one_put(key: u8) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::Meta, vec![key], vec![key]);
        batch
    }

    fn run_group(fail: bool) -> (Arc<Gate>, Arc<GroupCommitter>, Vec<Result<()>>) {
        let (release, waiting) = mpsc::channel();
        let gate = Arc::new(Gate { gate: Mutex::new(Some(waiting)), writes: Mutex::new(Vec::new()), fail });
        let committer = Arc::new(GroupCommitter::new(gated_engine(gate.clone())));
        let first = {
            let committer = committer.clone();
            std::thread::spawn(move || committer.write(one_put(0)))
        };
        // The first committer leads and blocks inside the engine.
        while gate.gate.lock().unwrap().is_some() {
            std::thread::yield_now();
        }
        let followers: Vec<_> = (1..=8)
            .map(|key| {
                let committer = committer.clone();
                std::thread::spawn(move || committer.write(one_put(key)))
            })
            .collect();
        while committer.queued() < 8 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        let mut outcomes = vec![first.join().unwrap()];
        outcomes.extend(followers.into_iter().map(|follower| follower.join().unwrap()));
        (gate, committer, outcomes)
    }

    #[test]
    fn commits_queued_behind_a_sync_share_the_next_one() {
        let (gate, committer, outcomes) = run_group(false);
        assert!(outcomes.iter().all(Result::is_ok));
        // Nine durable commits, two syncs: the leader's own, then one for
        // the eight that queued while it synced.
        assert_eq!(committer.syncs(), 2);
        assert_eq!(*gate.writes.lock().unwrap(), vec![1, 8]);
        for key in 0..=8u8 {
            assert_eq!(committer.engine().get(ColumnFamily::Meta, &[key]).unwrap(), Some(vec![key]));
        }
    }

    /// An engine whose writes always fail, or panic.
    fn broken_engine(panic: bool) -> Arc<HookedEngine> {
        Arc::new(HookedEngine::new(Arc::new(MemoryEngine::new()), move |_, _| {
            if panic {
                panic!("simulated engine bug");
            }
            Err(Error::Engine("No space left on device".into()))
        }))
    }

    #[test]
    fn a_failure_is_never_reported_as_success_however_many_groups_fail_before_it_is_read() {
        let committer = GroupCommitter::new(broken_engine(false));
        // The first ticket's group fails; 200 more groups fail before its
        // submitter looks at the outcome.
        let first = committer.submit(one_put(0));
        let rest: Vec<Ticket> = (0..200)
            .map(|_| {
                let ticket = committer.submit(one_put(1));
                assert!(committer.wait(ticket).is_err());
                ticket
            })
            .collect();
        assert_eq!(rest.len(), 200);
        assert!(committer.wait(first).is_err(), "the first group's failure is still known");
        assert!(committer.lock().failures.is_empty(), "read failures are forgotten");
    }

    #[test]
    fn an_engine_panic_fails_the_group_instead_of_hanging_the_committers() {
        let committer = GroupCommitter::new(broken_engine(true));
        assert!(matches!(committer.write(one_put(0)), Err(Error::Engine(m)) if m.contains("panicked")));
        // The next committer leads normally (no leader is stuck).
        assert!(committer.write(one_put(1)).is_err());
    }

    #[test]
    fn a_failed_sync_fails_every_commit_of_its_group() {
        let (_, _, outcomes) = run_group(true);
        assert!(outcomes.iter().all(|outcome| matches!(outcome, Err(Error::Engine(m)) if m.contains("No space"))));
    }
}
