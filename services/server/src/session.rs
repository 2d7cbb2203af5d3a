//! Interactive sessions: a transaction that spans HTTP requests.
//!
//! A session holds at most one open transaction and the state PostgreSQL
//! users expect: a default isolation level, the level `SET TRANSACTION`
//! chose, and the *failed* state in which every statement but `ROLLBACK`
//! answers `25P02` until the transaction ends.
//!
//! Sessions are bounded in number (`limits.sessions_max`) and in idle time
//! (`limits.session_idle_timeout_ms`): the reaper removes a session idle
//! longer than its timeout, which drops — rolls back — its transaction.
//! Each session is behind its own async mutex, so one client's requests on
//! one session run one at a time and never block other sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geodb_txn::{Isolation, Transaction};
use rand::Rng;

/// One session's state.
pub struct Session {
    pub default_isolation: Isolation,
    /// The open transaction, if any.
    pub txn: Option<Transaction>,
    /// Whether a statement of the open transaction failed (25P02 state).
    pub failed: bool,
    /// Whether the open transaction has run a statement yet (after which
    /// its level can no longer change).
    pub txn_used: bool,
    /// The level `SET TRANSACTION` chose outside a transaction, for the next.
    pub next_isolation: Option<Isolation>,
    pub last_used: Instant,
}

impl Session {
    fn new(default_isolation: Isolation) -> Self {
        Session {
            default_isolation,
            txn: None,
            failed: false,
            txn_used: false,
            next_isolation: None,
            last_used: Instant::now(),
        }
    }

    /// Ends the open transaction, if any, without committing.
    pub fn end_transaction(&mut self) -> Option<Transaction> {
        self.failed = false;
        self.txn_used = false;
        self.txn.take()
    }
}

pub type SessionHandle = Arc<tokio::sync::Mutex<Session>>;

/// All sessions of a node.
pub struct Sessions {
    map: Mutex<HashMap<String, SessionHandle>>,
    node_id: u64,
    max: usize,
    idle_timeout: Duration,
}

impl Sessions {
    /// Sessions of node `node_id`: their ids start with it (`<node>-<hex>`),
    /// so any gateway can forward a session's requests to the node that
    /// holds it.
    pub fn new(node_id: u64, max: usize, idle_timeout: Duration) -> Self {
        Sessions { map: Mutex::new(HashMap::new()), node_id, max, idle_timeout }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionHandle>> {
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a session; `None` if the node is at its session bound.
    pub fn open(&self, isolation: Isolation) -> Option<String> {
        let mut map = self.map();
        if map.len() >= self.max {
            return None;
        }
        // 128 random bits: session ids are capabilities, not guessable.
        let id = format!("{}-{:032x}", self.node_id, rand::rng().random::<u128>());
        map.insert(id.clone(), Arc::new(tokio::sync::Mutex::new(Session::new(isolation))));
        Some(id)
    }

    pub fn get(&self, id: &str) -> Option<SessionHandle> {
        self.map().get(id).cloned()
    }

    /// Removes a session; its transaction rolls back when the last request
    /// using it finishes.
    pub fn close(&self, id: &str) -> Option<SessionHandle> {
        self.map().remove(id)
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Removes sessions idle longer than the timeout (not those running a
    /// request right now). Returns how many were removed.
    pub fn reap(&self, now: Instant) -> usize {
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, session| match session.try_lock() {
            Ok(session) => now.saturating_duration_since(session.last_used) <= self.idle_timeout,
            Err(_) => true,
        });
        before - map.len()
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

/// The node that holds a session, from its id (`<node>-<hex>`).
pub fn session_node(id: &str) -> Option<u64> {
    id.split_once('-').and_then(|(node, _)| node.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded_and_idle_ones_are_reaped() {
        let sessions = Sessions::new(1, 2, Duration::from_secs(60));
        let a = sessions.open(Isolation::Serializable).unwrap();
        let _b = sessions.open(Isolation::Snapshot).unwrap();
        assert!(sessions.open(Isolation::Serializable).is_none(), "bound reached");
        assert_eq!(sessions.reap(Instant::now()), 0);
        // Reaping is driven by the instant passed in, not by waiting.
        assert_eq!(sessions.reap(Instant::now() + Duration::from_secs(61)), 2);
        assert!(sessions.get(&a).is_none());
    }
}
