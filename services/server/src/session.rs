//! Interactive sessions: a transaction that spans requests, over HTTP
//! (`POST /v1/sessions`) or a PostgreSQL connection; [`run`] runs a
//! statement in one, whatever the protocol.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geodb_sql::{Control, Savepoint, StatementResult};
use geodb_txn::{Commit, Isolation, Transaction};
use rand::Rng;

use crate::exec::{self, Statement};
use crate::http::ApiError;
use crate::node::Node;
use crate::telemetry::names;

/// One session's state.
pub struct Session {
    pub default_isolation: Isolation,
    /// The open transaction, if any.
    pub txn: Option<Transaction>,
    /// Whether a statement of the open transaction failed (25P02 state).
    pub failed: bool,
    /// The open transaction's savepoints, oldest first, each with the
    /// transaction's [`Transaction::mutations`] when it was set.
    pub savepoints: Vec<(Savepoint, u64)>,
    /// Whether the open transaction has run a statement yet (after which
    /// its level can no longer change).
    pub txn_used: bool,
    /// The level `SET TRANSACTION` chose outside a transaction, for the next.
    pub next_isolation: Option<Isolation>,
    pub last_used: Instant,
    /// Set to stop the statement running (a PostgreSQL cancel request,
    /// from another connection: hence shared, and read without the
    /// session's lock). Cleared as each statement starts.
    pub cancel: Arc<AtomicBool>,
    /// The user the session runs as, who alone may use it (`None`: a node
    /// without authentication).
    pub user: Option<Arc<str>>,
}

impl Session {
    /// A session outside the HTTP registry (a PostgreSQL connection's).
    pub fn new(default_isolation: Isolation) -> Self {
        Session {
            user: None,
            default_isolation,
            txn: None,
            failed: false,
            savepoints: Vec::new(),
            txn_used: false,
            next_isolation: None,
            last_used: Instant::now(),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Ends the open transaction, if any, without committing.
    pub fn end_transaction(&mut self) -> Option<Transaction> {
        self.failed = false;
        self.txn_used = false;
        self.savepoints.clear();
        self.txn.take()
    }
}

/// What one statement of a session did, for any protocol to answer.
pub struct Ran {
    /// The statement's result; `None` for transaction control.
    pub result: Option<StatementResult>,
    /// The transaction-control statement it was, if it was one.
    pub control: Option<Control>,
    /// Where the transaction it ended committed (an autocommitted
    /// statement, or a `COMMIT`).
    pub commit: Option<Commit>,
}

/// Marks the session's open transaction failed (any error inside a
/// transaction does, as in PostgreSQL) and passes the error on.
pub fn fail(session: &mut Session, error: ApiError) -> ApiError {
    if session.txn.is_some() {
        session.failed = true;
    }
    error
}

/// Runs one statement in the session, as every protocol does (PostgreSQL's
/// semantics: see the module documentation): outside a transaction it
/// commits alone (retried on `40001`), inside one it joins it, and a
/// transaction-control statement acts on the session.
///
/// A statement stopped by a cancel request (see [`Session::cancel`])
/// answers `57014`, whatever error stopping it caused, and like any error
/// fails the open transaction. A cancel request that arrives while no
/// statement runs is forgotten, as in PostgreSQL.
pub async fn run(node: &Arc<Node>, session: &mut Session, statement: Statement) -> Result<Ran, ApiError> {
    session.cancel.store(false, Ordering::Relaxed);
    if let Some(control) = geodb_sql::parse_control(&statement.sql) {
        let control = control.map_err(|error| fail(session, error.into()))?;
        let commit = exec::statement(node, || run_control(node, session, control)).map_err(|error| match control {
            // As in PostgreSQL, an error of these inside a transaction fails it.
            Control::Savepoint(_) | Control::Release(_) | Control::RollbackTo(_) => fail(session, error),
            _ => error,
        })?;
        return Ok(Ran { result: None, control: Some(control), commit });
    }
    let ran = run_statement(node, session, statement).await;
    ran.map_err(|error| if session.cancel.load(Ordering::Relaxed) { canceled() } else { error })
}

/// The answer to a statement stopped by a cancel request (PostgreSQL's).
pub fn canceled() -> ApiError {
    ApiError::new("57014", "canceling statement due to user request")
}

/// Runs a statement that is not transaction control (see [`run`]).
async fn run_statement(node: &Arc<Node>, session: &mut Session, statement: Statement) -> Result<Ran, ApiError> {
    if session.txn.is_none() {
        // Autocommit: the statement is a one-statement transaction.
        let isolation = session.next_isolation.take().unwrap_or(session.default_isolation);
        let statements = vec![statement];
        let mut retries = 0;
        loop {
            let cancel = Some(session.cancel.clone());
            let user = session.user.clone();
            let attempt = exec::statement(node, || {
                exec::run_cancellable_transaction(node, isolation, &statements, cancel, user.as_deref())
            });
            match attempt {
                Ok((mut results, commit)) => {
                    return Ok(Ran { result: results.pop(), control: None, commit: Some(commit) });
                }
                Err(error)
                    if error.code == "40001"
                        && retries < node.config.limits.retries_max
                        && !session.cancel.load(Ordering::Relaxed) =>
                {
                    retries += 1;
                    metrics::counter!(names::RETRIES).increment(1);
                    tokio::time::sleep(crate::http::sql::backoff(retries)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
    if session.failed {
        return Err(in_failed_transaction());
    }
    let user = session.user.clone();
    exec::statement(node, || {
        let txn = session.txn.as_mut().expect("checked above: a transaction is open");
        txn.set_statement_cancel(Some(session.cancel.clone()));
        session.txn_used = true;
        match exec::run_statement(node, txn, &statement, user.as_deref()) {
            Ok(result) => Ok(Ran { result: Some(result), control: None, commit: None }),
            Err(error) => {
                session.failed = true;
                Err(error)
            }
        }
    })
}

pub fn in_failed_transaction() -> ApiError {
    ApiError::new("25P02", "current transaction is aborted, commands ignored until end of transaction block")
}

/// Runs a transaction-control statement; answers where the transaction
/// committed if it was a `COMMIT` that did.
fn run_control(node: &Node, session: &mut Session, control: Control) -> Result<Option<Commit>, ApiError> {
    if session.failed
        && matches!(
            control,
            Control::Begin { .. } | Control::SetIsolation(_) | Control::Savepoint(_) | Control::Release(_)
        )
    {
        return Err(in_failed_transaction());
    }
    match control {
        Control::Begin { isolation } => {
            if session.txn.is_some() {
                tracing::warn!("BEGIN inside a transaction: there is already a transaction in progress");
                return Ok(None);
            }
            let isolation = isolation.or(session.next_isolation.take()).unwrap_or(session.default_isolation);
            session.txn = Some(node.txns.begin_settled(isolation).map_err(geodb_sql::Error::from)?);
            session.failed = false;
            session.txn_used = false;
        }
        Control::SetIsolation(isolation) => match session.txn.as_ref() {
            None => session.next_isolation = Some(isolation),
            Some(txn) if txn.isolation() == isolation => {}
            Some(_) if session.txn_used => {
                return Err(ApiError::new(
                    "25001",
                    "SET TRANSACTION ISOLATION LEVEL must be called before any query of the transaction",
                ));
            }
            Some(_) => {
                // Nothing was read or written yet: restart at the new level.
                // Begin first, so that a failure leaves the old transaction.
                let txn = node.txns.begin_settled(isolation).map_err(geodb_sql::Error::from)?;
                if let Some(old) = session.txn.replace(txn) {
                    old.rollback();
                }
            }
        },
        Control::Commit => {
            let failed = session.failed;
            match session.end_transaction() {
                None => tracing::warn!("COMMIT outside a transaction: there is no transaction in progress"),
                Some(txn) if failed => {
                    let error = ApiError::new("25P02", "the transaction failed earlier and was rolled back");
                    exec::count_outcome(txn.isolation(), Err(&error));
                    txn.rollback();
                    return Err(error);
                }
                Some(txn) => {
                    let isolation = txn.isolation();
                    let outcome = exec::commit(txn);
                    exec::count_outcome(isolation, outcome.as_ref().map(|_| ()));
                    return Ok(Some(outcome?));
                }
            }
        }
        Control::Rollback => {
            if let Some(txn) = session.end_transaction() {
                exec::count_rollback(txn.isolation());
                txn.rollback();
            }
        }
        Control::Savepoint(name) => {
            let txn = session.txn.as_ref().ok_or_else(|| outside_block("SAVEPOINT"))?;
            if session.savepoints.len() >= SAVEPOINTS_MAX {
                return Err(ApiError::new(
                    "54000",
                    format!("a transaction holds at most {SAVEPOINTS_MAX} savepoints; release some first"),
                ));
            }
            session.savepoints.push((name, txn.mutations()));
            // As PostgreSQL: the level cannot change inside a savepoint.
            session.txn_used = true;
        }
        Control::Release(name) => {
            if session.txn.is_none() {
                return Err(outside_block("RELEASE SAVEPOINT"));
            }
            let at = savepoint_at(session, name)?;
            session.savepoints.truncate(at);
        }
        Control::RollbackTo(name) => {
            let Some(txn) = session.txn.as_ref() else { return Err(outside_block("ROLLBACK TO SAVEPOINT")) };
            let mutations = txn.mutations();
            let at = savepoint_at(session, name)?;
            // Reads since the savepoint stay in the read set: validating
            // more than needed can abort, never admit an anomaly. Writes
            // cannot be taken back one by one (some may be prepared at
            // their shards already, R20): after any, only a whole rollback.
            if session.savepoints[at].1 != mutations {
                return Err(ApiError::new(
                    "0A000",
                    format!(
                        "ROLLBACK TO SAVEPOINT {} after the transaction wrote since the savepoint is not supported; \
                         roll the whole transaction back",
                        name.name()
                    ),
                ));
            }
            session.savepoints.truncate(at + 1);
            session.failed = false;
        }
    }
    Ok(None)
}

/// Savepoints one transaction may hold at once: a client that sets them in
/// a loop without releasing any must not grow its session without bound.
pub const SAVEPOINTS_MAX: usize = 10_000;

/// A savepoint statement outside a transaction block (PostgreSQL's error).
fn outside_block(what: &str) -> ApiError {
    ApiError::new("25P01", format!("{what} can only be used in transaction blocks"))
}

/// Where the newest savepoint called `name` is in the session's list.
fn savepoint_at(session: &Session, name: Savepoint) -> Result<usize, ApiError> {
    session
        .savepoints
        .iter()
        .rposition(|(saved, _)| *saved == name)
        .ok_or_else(|| ApiError::new("3B001", format!("savepoint \"{}\" does not exist", name.name())))
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
    pub fn open(&self, isolation: Isolation, user: Option<Arc<str>>) -> Option<String> {
        let mut map = self.map();
        if map.len() >= self.max {
            return None;
        }
        // 128 random bits: session ids are capabilities, not guessable.
        let id = format!("{}-{:032x}", self.node_id, rand::rng().random::<u128>());
        let session = Session { user, ..Session::new(isolation) };
        map.insert(id.clone(), Arc::new(tokio::sync::Mutex::new(session)));
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
        let a = sessions.open(Isolation::Serializable, None).unwrap();
        let _b = sessions.open(Isolation::Snapshot, None).unwrap();
        assert!(sessions.open(Isolation::Serializable, None).is_none(), "bound reached");
        assert_eq!(sessions.reap(Instant::now()), 0);
        // Reaping is driven by the instant passed in, not by waiting.
        assert_eq!(sessions.reap(Instant::now() + Duration::from_secs(61)), 2);
        assert!(sessions.get(&a).is_none());
    }
}
