//! Waiting on a future from synchronous code, through the program's
//! blocking hook (`geodb_storage::wait`).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

pub use geodb_storage::wait::blocking;

/// Drives `future` to completion on this thread. It is polled once in
/// place first, so a future that is ready at once (a request served by a
/// shard of this process, `LocalShards`) costs nothing more; only one that
/// is not is waited for, through [`blocking`].
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return output;
    }
    // Every poll registers its own waker, so the executor's first poll
    // below sees whatever became ready since, and is woken after that.
    blocking(|| futures::executor::block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_future_and_a_pending_one_both_complete() {
        assert_eq!(block_on(async { 7 }), 7);
        let (sender, receiver) = futures::channel::oneshot::channel();
        let sending = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            sender.send(9).unwrap();
        });
        assert_eq!(block_on(receiver), Ok(9));
        sending.join().unwrap();
    }
}
