//! Interactive transactions over HTTP: `POST /v1/sessions`,
//! `POST /v1/sessions/{id}/sql`, `DELETE /v1/sessions/{id}`.
//!
//! Semantics follow PostgreSQL:
//! - Outside `BEGIN`, each statement is its own transaction (retried by the
//!   server on a serialization failure, like a one-shot request).
//! - Inside, a failed statement puts the transaction in the failed state:
//!   every statement but `ROLLBACK` (and `ROLLBACK TO SAVEPOINT`, where
//!   the session allows it: `crate::session`) answers `25P02` until it
//!   ends; `COMMIT` of a failed transaction answers that error and rolls
//!   back.
//! - `BEGIN` inside a transaction is a no-op; `COMMIT`/`ROLLBACK` outside
//!   one are no-ops (PostgreSQL warns, and so do our logs).
//! - `SET TRANSACTION ISOLATION LEVEL` inside a transaction changes its
//!   level if no statement ran yet (else `25001`); outside one it sets the
//!   level of the next transaction of the session.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use geodb_sql::Control;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::body::read_object;
use super::sql::parse_isolation;
use crate::auth::Identity;
use crate::exec::{self, SqlRequest, Statement};
use crate::node::Node;
use crate::telemetry::names;

#[derive(Debug, Default, Deserialize)]
struct OpenRequest {
    isolation: Option<String>,
}

pub async fn open(
    State(node): State<Arc<Node>>,
    identity: Option<Extension<Identity>>,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request: Option<OpenRequest> = read_object(body, node.config.limits.request_bytes_max).await?;
    let isolation = parse_isolation(request.unwrap_or_default().isolation.as_deref())?;
    let user = node.auth.identity(identity.as_deref())?.map(|identity| identity.user.clone());
    let id = node.sessions.open(isolation, user).ok_or_else(|| ApiError::overloaded("too many open sessions"))?;
    metrics::gauge!(names::SESSIONS).set(node.sessions.len() as f64);
    Ok((StatusCode::CREATED, Json(json!({"session": id}))))
}

pub async fn close(
    State(node): State<Arc<Node>>,
    identity: Option<Extension<Identity>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let held = node.sessions.get(&id).ok_or_else(|| ApiError::unknown_session(&id))?;
    check_owner(&*held.lock().await, node.auth.identity(identity.as_deref())?)?;
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
    identity: Option<Extension<Identity>>,
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
    check_owner(&session, node.auth.identity(identity.as_deref())?)?;
    session.last_used = Instant::now();
    let (mut headers, mut results) = (HeaderMap::new(), Vec::new());
    for (i, request) in statements.into_iter().enumerate() {
        crate::exec::pause_in_list(i).await;
        // A control statement takes no parameters: any given are ignored.
        let statement = if geodb_sql::parse_control(&request.sql).is_some() {
            Ok(Statement { sql: request.sql, params: Vec::new() })
        } else {
            Statement::from_request(request)
        };
        let ran = match statement {
            Ok(statement) => crate::session::run(&node, &mut session, statement).await,
            Err(error) => Err(crate::session::fail(&mut session, error)),
        };
        match ran {
            Ok(ran) => {
                if let Some(commit) = &ran.commit {
                    headers = exec::commit_headers(&node, commit);
                }
                results.push(answer_json(&ran));
            }
            Err(mut error) => {
                // A long list counts as use until its end (the reaper
                // measures idleness from the last use).
                session.last_used = Instant::now();
                if listed {
                    error.results = Some(results);
                }
                return Err(error);
            }
        }
    }
    session.last_used = Instant::now();
    if !listed {
        return Ok((headers, Json(results.pop().expect("one statement ran"))));
    }
    Ok((headers, Json(json!({"results": results}))))
}

/// A session belongs to the user that opened it: another may not use it
/// (nor end it), even knowing its id.
fn check_owner(session: &crate::session::Session, identity: Option<&Identity>) -> Result<(), ApiError> {
    match (&session.user, identity) {
        (Some(owner), Some(identity)) if *owner == identity.user => Ok(()),
        (None, _) => Ok(()),
        _ => Err(ApiError::new("42501", "permission denied: the session belongs to another user")),
    }
}

/// A statement's answer over HTTP: its result, or for transaction control
/// an empty one (a `COMMIT` that committed adds `commit_ts`).
fn answer_json(ran: &crate::session::Ran) -> serde_json::Value {
    match (&ran.result, ran.control, &ran.commit) {
        (Some(result), _, _) => exec::result_json(result),
        (None, Some(Control::Commit), Some(commit)) => {
            let mut answer = exec::empty_result_json();
            answer["commit_ts"] = json!(commit.ts.to_string());
            answer
        }
        (None, _, _) => exec::empty_result_json(),
    }
}
