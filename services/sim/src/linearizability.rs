//! A linearizability checker for single-register histories.
//!
//! Wing & Gong (1993) search for a sequential order of the operations that
//! respects real time and the register's semantics; Lowe (*Testing for
//! linearizability*, 2017) makes it practical with "just-in-time" search and
//! memoization of (set of linearized operations, register value) pairs, as
//! Porcupine does. Operations whose outcome the client never learned
//! (timeouts, crashes) have no return: they may take effect at any point
//! after their call, or never — which, for a register, is the same as taking
//! effect after everything else, so they get a return at infinity and any
//! output.
//!
//! One history is one key; keys are independent (linearizability is local,
//! Herlihy & Wing 1990 §3.3), so each is checked on its own. A history holds
//! at most [`OPERATIONS_PER_KEY_MAX`] operations, the width of the bit set.

use std::collections::HashSet;

use crate::register::{Op, Output};

/// The bit set of linearized operations is a `u128`.
pub const OPERATIONS_PER_KEY_MAX: usize = 128;

/// One operation of a client history on one register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    pub call_us: u64,
    /// `None`: the client never learned the outcome (it may or may not have happened).
    pub return_us: Option<u64>,
    pub op: Op,
    /// `None` exactly when `return_us` is.
    pub output: Option<Output>,
}

/// The register's sequential specification: the state after `operation`, if
/// the operation could return what it returned when applied to `value`.
fn step(value: u64, operation: &Operation) -> Option<u64> {
    match (operation.op, operation.output) {
        (Op::Read, Some(Output::Value(read))) => (read == value).then_some(value),
        (Op::Read, None) => Some(value),
        (Op::Write(new), Some(Output::Written) | None) => Some(new),
        (Op::Cas { expected, new }, Some(Output::Swapped(swapped))) => match (value == expected, swapped) {
            (true, true) => Some(new),
            (false, false) => Some(value),
            _ => None,
        },
        (Op::Cas { expected, new }, None) => Some(if value == expected { new } else { value }),
        (op, output) => panic!("{op:?} cannot return {output:?}"),
    }
}

const NONE: usize = usize::MAX;

/// Whether `history` (operations on one register that starts at `initial`)
/// is linearizable.
pub fn is_linearizable(initial: u64, history: &[Operation]) -> bool {
    assert!(history.len() <= OPERATIONS_PER_KEY_MAX, "history of {} operations is too long to check", history.len());
    // Events: (time, is_return, operation). Calls sort before returns at the
    // same instant, which treats touching intervals as concurrent (permissive).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * history.len());
    for (index, operation) in history.iter().enumerate() {
        assert_eq!(operation.return_us.is_none(), operation.output.is_none());
        let return_us = operation.return_us.unwrap_or(u64::MAX);
        assert!(operation.call_us <= return_us, "an operation returned before it was called");
        events.push((operation.call_us, false, index));
        events.push((return_us, true, index));
    }
    events.sort_unstable();
    // A doubly linked list of events with a head sentinel at index `len`.
    let len = events.len();
    let head = len;
    let mut next = vec![NONE; len + 1];
    let mut prev = vec![NONE; len + 1];
    let mut return_of = vec![NONE; history.len()];
    for (position, (_, is_return, index)) in events.iter().enumerate() {
        if *is_return {
            return_of[*index] = position;
        }
    }
    let mut last = head;
    // Linking a doubly linked list: `position` indexes two arrays and is the
    // value stored, which an iterator over one of them would hide.
    #[allow(clippy::needless_range_loop)]
    for position in 0..len {
        next[last] = position;
        prev[position] = last;
        last = position;
    }
    let unlink = |next: &mut [usize], prev: &mut [usize], at: usize| {
        next[prev[at]] = next[at];
        if next[at] != NONE {
            prev[next[at]] = prev[at];
        }
    };
    let relink = |next: &mut [usize], prev: &mut [usize], at: usize| {
        next[prev[at]] = at;
        if next[at] != NONE {
            prev[next[at]] = at;
        }
    };

    let mut cache: HashSet<(u128, u64)> = HashSet::new();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut linearized: u128 = 0;
    let mut value = initial;
    let mut entry = next[head];
    while next[head] != NONE {
        // Backtrack when every remaining call was tried here (`entry` ran
        // off the list), or when an operation returned before being
        // linearized: undo the last choice and try the next call after it.
        if entry == NONE || events[entry].1 {
            let Some((call, previous)) = stack.pop() else { return false };
            let index = events[call].2;
            value = previous;
            linearized &= !(1u128 << index);
            relink(&mut next, &mut prev, return_of[index]);
            relink(&mut next, &mut prev, call);
            entry = next[call];
            continue;
        }
        let index = events[entry].2;
        if let Some(after) = step(value, &history[index]) {
            let with = linearized | (1u128 << index);
            if cache.insert((with, after)) {
                stack.push((entry, value));
                value = after;
                linearized = with;
                unlink(&mut next, &mut prev, entry);
                unlink(&mut next, &mut prev, return_of[index]);
                entry = next[head];
                continue;
            }
        }
        entry = next[entry];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(call_us: u64, return_us: u64, op: Op, output: Output) -> Operation {
        Operation { call_us, return_us: Some(return_us), op, output: Some(output) }
    }

    fn maybe(call_us: u64, op: Op) -> Operation {
        Operation { call_us, return_us: None, op, output: None }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            op(0, 1, Op::Write(5), Output::Written),
            op(2, 3, Op::Read, Output::Value(5)),
            op(4, 5, Op::Cas { expected: 5, new: 6 }, Output::Swapped(true)),
            op(6, 7, Op::Read, Output::Value(6)),
        ];
        assert!(is_linearizable(0, &history));
    }

    #[test]
    fn stale_read_after_a_completed_write_is_not() {
        let history = [op(0, 1, Op::Write(5), Output::Written), op(2, 3, Op::Read, Output::Value(0))];
        assert!(!is_linearizable(0, &history));
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let history = [
            op(0, 10, Op::Write(5), Output::Written),
            op(1, 2, Op::Read, Output::Value(0)),
            op(3, 4, Op::Read, Output::Value(5)),
        ];
        assert!(is_linearizable(0, &history));
        // But once a read saw the new value, a later read cannot see the old one.
        let history = [
            op(0, 10, Op::Write(5), Output::Written),
            op(1, 2, Op::Read, Output::Value(5)),
            op(3, 4, Op::Read, Output::Value(0)),
        ];
        assert!(!is_linearizable(0, &history));
    }

    #[test]
    fn an_unacknowledged_write_may_or_may_not_happen() {
        let happened = [maybe(0, Op::Write(7)), op(5, 6, Op::Read, Output::Value(7))];
        assert!(is_linearizable(0, &happened));
        let did_not = [maybe(0, Op::Write(7)), op(5, 6, Op::Read, Output::Value(0))];
        assert!(is_linearizable(0, &did_not));
        let flickers =
            [maybe(0, Op::Write(7)), op(5, 6, Op::Read, Output::Value(7)), op(7, 8, Op::Read, Output::Value(0))];
        assert!(!is_linearizable(0, &flickers));
    }

    #[test]
    fn compare_and_set_must_agree_with_the_value() {
        let lost_update = [
            op(0, 1, Op::Cas { expected: 0, new: 1 }, Output::Swapped(true)),
            op(2, 3, Op::Cas { expected: 0, new: 2 }, Output::Swapped(true)),
        ];
        assert!(!is_linearizable(0, &lost_update));
        let concurrent = [
            op(0, 3, Op::Cas { expected: 0, new: 1 }, Output::Swapped(true)),
            op(1, 2, Op::Cas { expected: 0, new: 2 }, Output::Swapped(false)),
            op(4, 5, Op::Read, Output::Value(1)),
        ];
        assert!(is_linearizable(0, &concurrent));
    }

    proptest! {
        /// Any history produced by running operations one at a time, each
        /// inside its real-time interval, is linearizable.
        #[test]
        fn histories_of_a_sequential_register_are_linearizable(
            plan in prop::collection::vec((0u8..3, 0u64..4, 0u64..4, 0u64..30, 0u64..30, any::<bool>()), 1..40)
        ) {
            let mut value = 0;
            let mut time = 0;
            let mut history = Vec::new();
            for (kind, a, b, before, after, acknowledged) in plan {
                let call = time;
                let point = call + before;
                let operation = match kind { 0 => Op::Read, 1 => Op::Write(a), _ => Op::Cas { expected: a, new: b } };
                let output = match operation {
                    Op::Read => Output::Value(value),
                    Op::Write(new) => { value = new; Output::Written }
                    Op::Cas { expected, new } => { let swapped = value == expected; if swapped { value = new } Output::Swapped(swapped) }
                };
                // Calls overlap the previous operation's interval: it starts
                // before the previous linearization point returned.
                let ret = point + after;
                time = point + 1;
                if acknowledged || matches!(operation, Op::Read) {
                    history.push(op(call, ret, operation, output));
                } else {
                    history.push(maybe(call, operation));
                }
            }
            prop_assert!(is_linearizable(0, &history));
        }
    }
}
