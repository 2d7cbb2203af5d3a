//! Waiting without stalling the caller's runtime.
//!
//! The layers above call storage and transactions synchronously. A server
//! may run those calls straight on an async runtime's worker thread, which
//! is cheap for the common case (a statement that reads a few keys from
//! memory and answers) but wrong for a call that sleeps: a worker asleep
//! in a disk sync or on a condition variable holds up every task queued
//! behind it. So every place in the stack that may wait — for a sync, for
//! another thread, for an answer that another task delivers — or run for
//! long does it through [`blocking`] (`geodb_txn::wait::block_on` for a
//! future that is not ready at once), and the embedding program says what
//! that means by installing a hook once ([`set_blocking_hook`]): the server
//! hands the worker's queue to another thread for the duration (tokio's
//! `block_in_place`). With no hook the work just runs.
//!
//! The rule for code below a hook: never wait on another thread or task,
//! nor for long, except through [`blocking`]. What is left outside it is
//! short: a read from disk, a lock held for a moment. A wait that escaped
//! it would stall a worker, and a worker stalled on something only another
//! task of the same runtime can deliver deadlocks once every worker is.

use std::sync::OnceLock;

/// Runs the closure it is given, which may wait; installed by the program.
pub type BlockingHook = fn(&mut dyn FnMut());

static HOOK: OnceLock<BlockingHook> = OnceLock::new();

/// Installs the program's hook; the first one installed stays.
pub fn set_blocking_hook(hook: BlockingHook) {
    let _ = HOOK.set(hook);
}

/// Runs `work`, which may wait, through the installed hook.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    let Some(hook) = HOOK.get() else { return work() };
    let mut work = Some(work);
    let mut output = None;
    hook(&mut || {
        if let Some(work) = work.take() {
            output = Some(work());
        }
    });
    output.expect("a blocking hook runs the work it is given")
}

/// Runs `work` through [`blocking`] if it may run `long`, else in place.
pub fn blocking_if<T>(long: bool, work: impl FnOnce() -> T) -> T {
    if long { blocking(work) } else { work() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_returns_what_the_work_returns() {
        assert_eq!(blocking(|| "answer"), "answer");
    }
}
