//! The bank's executor and its simulated [`ShardRpc`].
//!
//! Clients are async tasks running the real coordinator. [`Executor`]
//! polls a task only when something it waits on happened (its waker queues
//! it), in the order the simulation woke them, so a seed replays exactly.
//! A task never blocks: a call or a sleep is recorded as an [`Effect`] for
//! the world to carry out (route, transmit, schedule), and its future
//! resolves when the world delivers the answer or the time comes.
//!
//! A node's crash drops its tasks' futures (the coordinator dies wherever
//! it was, between prepare and decision included) and detaches its
//! [`NodeRpc`]: answers still on the wire find no one.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use futures::future::BoxFuture;
use geodb_geo::NodeId;
use geodb_txn::protocol::{Request, Response, ShardId};
use geodb_txn::{RpcError, ShardRpc};

/// What a task asked the world to do.
#[derive(Debug)]
pub enum Effect {
    /// Send `request` to `shard`; answer call `id`.
    Call { id: u64, shard: ShardId, request: Request },
    /// Wake sleep `id` once the node's clock reads `until_ns`.
    Sleep { id: u64, until_ns: u64 },
}

enum Slot {
    Waiting(Option<Waker>),
    Answered(Result<Response, RpcError>),
}

#[derive(Default)]
struct RpcState {
    attached: bool,
    next_id: u64,
    effects: Vec<Effect>,
    slots: HashMap<u64, Slot>,
}

/// One node incarnation's [`ShardRpc`]. Cheap to clone.
#[derive(Clone)]
pub struct NodeRpc {
    state: Arc<Mutex<RpcState>>,
}

impl NodeRpc {
    /// An endpoint that takes nothing (a node not started yet).
    pub fn detached() -> Self {
        NodeRpc { state: Arc::new(Mutex::new(RpcState::default())) }
    }

    /// A fresh endpoint for incarnation `incarnation` of `node`; its ids
    /// never repeat an earlier incarnation's.
    pub fn attached(_node: NodeId, incarnation: u64) -> Self {
        let state = RpcState { attached: true, next_id: incarnation << 40, ..RpcState::default() };
        NodeRpc { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, RpcState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The node crashed: nothing is taken or answered any more.
    pub fn detach(&self) {
        let mut state = self.lock();
        state.attached = false;
        state.effects.clear();
        state.slots.clear();
    }

    pub fn next_id(&self) -> u64 {
        let mut state = self.lock();
        state.next_id += 1;
        state.next_id
    }

    pub fn take_effects(&self) -> Vec<Effect> {
        std::mem::take(&mut self.lock().effects)
    }

    /// Call `id` got its answer (or was lost).
    pub fn complete(&self, id: u64, result: Result<Response, RpcError>) {
        let mut state = self.lock();
        if let Some(Slot::Waiting(waker)) = state.slots.remove(&id) {
            state.slots.insert(id, Slot::Answered(result));
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Sleep `id` is over.
    pub fn wake(&self, id: u64) {
        self.complete(id, Ok(Response::Resolved));
    }

    fn register(&self, effect: impl FnOnce(u64) -> Effect) -> Option<u64> {
        let mut state = self.lock();
        if !state.attached {
            return None;
        }
        state.next_id += 1;
        let id = state.next_id;
        let effect = effect(id);
        state.effects.push(effect);
        state.slots.insert(id, Slot::Waiting(None));
        Some(id)
    }
}

/// Resolves when slot `id` is answered.
struct Answer {
    rpc: NodeRpc,
    id: Option<u64>,
}

impl Future for Answer {
    type Output = Result<Response, RpcError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(id) = self.id else {
            return Poll::Ready(Err(RpcError::NotSent("the node is down".into())));
        };
        let mut state = self.rpc.lock();
        match state.slots.remove(&id) {
            Some(Slot::Answered(result)) => Poll::Ready(result),
            Some(Slot::Waiting(_)) => {
                state.slots.insert(id, Slot::Waiting(Some(context.waker().clone())));
                Poll::Pending
            }
            // Detached (a crash): the task is about to be dropped anyway.
            None => Poll::Pending,
        }
    }
}

impl ShardRpc for NodeRpc {
    fn call(&self, shard: ShardId, request: Request) -> BoxFuture<'static, Result<Response, RpcError>> {
        let id = self.register(|id| Effect::Call { id, shard, request });
        Box::pin(Answer { rpc: self.clone(), id })
    }

    fn send(&self, shard: ShardId, request: Request) {
        // The answer lands in a slot no one polls; it is dropped with the
        // incarnation.
        let _ = self.register(|id| Effect::Call { id, shard, request });
    }

    fn sleep_until(&self, physical_ns: u64) -> BoxFuture<'static, ()> {
        let id = self.register(|id| Effect::Sleep { id, until_ns: physical_ns });
        let answer = Answer { rpc: self.clone(), id };
        Box::pin(async move {
            let _ = answer.await;
        })
    }
}

/// Queues a task to be polled.
struct TaskWaker {
    task: usize,
    ready: Arc<Mutex<VecDeque<usize>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back(self.task);
    }
}

/// The tasks of a run. See the module documentation.
#[derive(Default)]
pub struct Executor {
    tasks: Vec<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
    ready: Arc<Mutex<VecDeque<usize>>>,
}

impl Executor {
    /// Adds a task and queues its first poll; returns its number.
    pub fn spawn(&mut self, future: impl Future<Output = ()> + Send + 'static) -> usize {
        let task = self.tasks.len();
        self.tasks.push(Some(Box::pin(future)));
        self.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back(task);
        task
    }

    /// Drops a task wherever it is (its node crashed).
    pub fn kill(&mut self, task: usize) {
        self.tasks[task] = None;
    }

    /// Whether the task is still running.
    pub fn is_alive(&self, task: usize) -> bool {
        self.tasks.get(task).is_some_and(Option::is_some)
    }

    /// Polls every queued task once; returns whether any ran.
    pub fn run_ready(&mut self) -> bool {
        let mut ran = false;
        loop {
            let next = self.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
            let Some(task) = next else { return ran };
            let Some(future) = self.tasks.get_mut(task).and_then(Option::as_mut) else { continue };
            ran = true;
            let waker = Waker::from(Arc::new(TaskWaker { task, ready: self.ready.clone() }));
            let mut context = Context::from_waker(&waker);
            if future.as_mut().poll(&mut context).is_ready() {
                self.tasks[task] = None;
            }
        }
    }
}
