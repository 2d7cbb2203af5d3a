//! The seeded scheduler: one event queue, one random number generator.
//!
//! Events are ordered by `(time, seq)`: simulated time first, then the order
//! they were scheduled in, so two events at the same microsecond always run
//! in the same order and a seed replays exactly. All randomness of a run
//! comes from the one `StdRng` seeded here.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Scheduled<E> {
    time_us: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time_us, self.seq) == (other.time_us, other.seq)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event must pop first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time_us, other.seq).cmp(&(self.time_us, self.seq))
    }
}

/// A deterministic discrete-event scheduler.
pub struct Scheduler<E> {
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled<E>>,
    rng: StdRng,
    events_run: u64,
}

impl<E> Scheduler<E> {
    pub fn new(seed: u64) -> Self {
        Scheduler { now_us: 0, seq: 0, queue: BinaryHeap::new(), rng: StdRng::seed_from_u64(seed), events_run: 0 }
    }

    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    pub fn events_run(&self) -> u64 {
        self.events_run
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// A uniform value in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low { low } else { self.rng.random_range(low..=high) }
    }

    /// True with probability `percent_millis / 100_000` (thousandths of a percent).
    pub fn chance(&mut self, percent_millis: u64) -> bool {
        self.rng.random_range(0..100_000) < percent_millis
    }

    pub fn at(&mut self, time_us: u64, event: E) {
        assert!(time_us >= self.now_us, "scheduling into the past");
        self.seq += 1;
        self.queue.push(Scheduled { time_us, seq: self.seq, event });
    }

    pub fn after(&mut self, delay_us: u64, event: E) {
        self.at(self.now_us + delay_us, event);
    }

    /// The next event, advancing time to it, if it is due at or before `until_us`.
    pub fn next_until(&mut self, until_us: u64) -> Option<E> {
        if self.queue.peek()?.time_us > until_us {
            return None;
        }
        let next = self.queue.pop()?;
        assert!(next.time_us >= self.now_us, "time never goes backwards");
        self.now_us = next.time_us;
        self.events_run += 1;
        Some(next.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pop_in_time_then_schedule_order() {
        let mut scheduler = Scheduler::new(1);
        scheduler.at(5, "b");
        scheduler.at(3, "a");
        scheduler.at(5, "c");
        let mut order = Vec::new();
        while let Some(event) = scheduler.next_until(10) {
            order.push((scheduler.now_us(), event));
        }
        assert_eq!(order, vec![(3, "a"), (5, "b"), (5, "c")]);
    }
}
