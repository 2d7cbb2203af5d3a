//! Interactive transactions over HTTP: `POST /v1/sessions`,
//! `POST /v1/sessions/{id}/sql`, `DELETE /v1/sessions/{id}`.
//!
//! Semantics follow PostgreSQL:
//! - Outside `BEGIN`, each statement is its own transaction (retried by the
//!   server on a serialization failure, like a one-shot request).
//! - Inside, a failed statement puts the transaction in the failed state:
//!   every statement but `ROLLBACK` answers `25P02` until it ends; `COMMIT`
//!   of a failed transaction answers that error and rolls back.
//! - `BEGIN` inside a transaction is a no-op; `COMMIT`/`ROLLBACK` outside
//!   one are no-ops (PostgreSQL warns, and so do our logs).
//! - `SET TRANSACTION ISOLATION LEVEL` inside a transaction changes its
//!   level if no statement ran yet (else `25001`); outside one it sets the
//!   level of the next transaction of the session.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use geodb_sql::Control;
use geodb_txn::Commit;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::body::read_object;
use super::sql::{backoff, parse_isolation};
use crate::exec::{self, SqlRequest, Statement, StatementRequest};
use crate::node::Node;
use crate::session::Session;
use crate::telemetry::names;

#[derive(Debug, Default, Deserialize)]
struct OpenRequest {
    isolation: Option<String>,
}

pub async fn open(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request: Option<OpenRequest> = read_object(body, node.config.limits.request_bytes_max).await?;
    let isolation = parse_isolation(request.unwrap_or_default().isolation.as_deref())?;
    let id = node.sessions.open(isolation).ok_or_else(|| ApiError::overloaded("too many open sessions"))?;
    metrics::gauge!(names::SESSIONS).set(node.sessions.len() as f64);
    Ok((StatusCode::CREATED, Json(json!({"session": id}))))
}

pub async fn close(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let session = node.sessions.close(&id).ok_or_else(|| ApiError::unknown_session(&id))?;
    metrics::gauge!(names::SESSIONS).set(node.sessions.len() as f64);
    // Wait for a running statement, then roll back what is open.
    let mut session = session.lock().await;
    if let Some(txn) = session.end_transaction() {
        exec::count_rollback(txn.isolation());
        txn.rollback();
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn statement(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<(HeaderMap, Json<serde_json::Value>), ApiError> {
    let request: Option<SqlRequest> = read_object(body, node.config.limits.request_bytes_max).await?;
    let request =
        request.ok_or_else(|| ApiError::bad_request("expected a JSON object with \"sql\" or \"statements\""))?;
    // One statement, or a list run in order as if sent one by one.
    let (statements, listed) = request.named_statements(node.config.limits.batch_statements_max)?;
    let handle = node.sessions.get(&id).ok_or_else(|| ApiError::unknown_session(&id))?;
    let mut session = handle.lock_owned().await;
    session.last_used = Instant::now();
    let (mut headers, mut results) = (HeaderMap::new(), Vec::new());
    for request in statements {
        match run_in_session(&node, &mut session, request).await {
            Ok((commit_headers, result)) => {
                if !commit_headers.is_empty() {
                    headers = commit_headers;
                }
                results.push(result);
            }
            Err(mut error) if listed => {
                error.results = Some(results);
                return Err(error);
            }
            Err(error) => return Err(error),
        }
    }
    if !listed {
        return Ok((headers, Json(results.pop().expect("one statement ran"))));
    }
    Ok((headers, Json(json!({"results": results}))))
}

/// Runs one statement in the session as `POST /v1/sessions/<id>/sql` does:
/// its answer, and where a transaction it ended committed.
async fn run_in_session(
    node: &Arc<Node>,
    session: &mut Session,
    request: StatementRequest,
) -> Result<(HeaderMap, serde_json::Value), ApiError> {
    // Inside a transaction, any failure — even a malformed statement —
    // puts it in the failed state, as in PostgreSQL.
    let fail_open_transaction = |session: &mut Session, error: ApiError| {
        if session.txn.is_some() {
            session.failed = true;
        }
        error
    };
    if let Some(control) = geodb_sql::parse_control(&request.sql) {
        let control = control.map_err(|error| fail_open_transaction(session, error.into()))?;
        let (answer, commit) = exec::blocking(|| run_control(node, session, control))?;
        return Ok((commit.as_ref().map(|commit| exec::commit_headers(node, commit)).unwrap_or_default(), answer));
    }
    let statement = Statement::from_request(request).map_err(|error| fail_open_transaction(session, error))?;
    if session.txn.is_none() {
        // Autocommit: the statement is a one-statement transaction.
        let isolation = session.next_isolation.take().unwrap_or(session.default_isolation);
        let statements = vec![statement];
        let mut retries = 0;
        loop {
            let attempt = exec::blocking(|| exec::run_transaction(node, isolation, &statements));
            match attempt {
                Ok((results, commit)) => {
                    return Ok((exec::commit_headers(node, &commit), exec::result_json(&results[0])));
                }
                Err(error) if error.code == "40001" && retries < node.config.limits.retries_max => {
                    retries += 1;
                    metrics::counter!(names::RETRIES).increment(1);
                    tokio::time::sleep(backoff(retries)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
    if session.failed {
        return Err(in_failed_transaction());
    }
    exec::blocking(|| {
        let txn = session.txn.as_mut().expect("checked above: a transaction is open");
        session.txn_used = true;
        match exec::run_statement(node, txn, &statement) {
            Ok(result) => Ok((HeaderMap::new(), exec::result_json(&result))),
            Err(error) => {
                session.failed = true;
                Err(error)
            }
        }
    })
}

fn in_failed_transaction() -> ApiError {
    ApiError::new("25P02", "current transaction is aborted, commands ignored until end of transaction block")
}

/// Runs a transaction-control statement; answers its result, and where the
/// transaction committed if it was a `COMMIT` that did.
fn run_control(
    node: &Node,
    session: &mut Session,
    control: Control,
) -> Result<(serde_json::Value, Option<Commit>), ApiError> {
    if session.failed && matches!(control, Control::Begin { .. } | Control::SetIsolation(_)) {
        return Err(in_failed_transaction());
    }
    match control {
        Control::Begin { isolation } => {
            if session.txn.is_some() {
                tracing::warn!("BEGIN inside a transaction: there is already a transaction in progress");
                return Ok((exec::empty_result_json(), None));
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
                    let outcome = txn.commit_reporting().map_err(geodb_sql::Error::from).map_err(ApiError::from);
                    exec::count_outcome(isolation, outcome.as_ref().map(|_| ()));
                    let commit = outcome?;
                    let mut answer = exec::empty_result_json();
                    answer["commit_ts"] = json!(commit.ts.to_string());
                    return Ok((answer, Some(commit)));
                }
            }
        }
        Control::Rollback => {
            if let Some(txn) = session.end_transaction() {
                exec::count_rollback(txn.isolation());
                txn.rollback();
            }
        }
    }
    Ok((exec::empty_result_json(), None))
}
