//! `POST /v1/sql`: one statement, or a batch run as one transaction.
//!
//! On a serialization failure (40001) the server runs the whole request
//! again, up to `limits.retries_max` times, with exponential backoff and
//! jitter (so that the transactions that collided do not collide again in
//! lockstep). Other errors are returned at once. The answer says how many
//! retries it took.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use geodb_txn::Isolation;
use rand::Rng;
use serde_json::json;

use super::ApiError;
use super::body::read_object;
use crate::auth::Identity;
use crate::exec::{self, SqlRequest, Statement};
use crate::node::Node;
use crate::telemetry::names;

/// First backoff after a conflict; doubles per retry up to the cap.
const RETRY_BACKOFF_BASE: Duration = Duration::from_micros(500);
/// Longest backoff between two attempts.
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Parses an isolation level name of a request (default serializable).
pub fn parse_isolation(name: Option<&str>) -> Result<Isolation, ApiError> {
    match name {
        None => Ok(Isolation::default()),
        Some(name) => name
            .parse()
            .map_err(|error: geodb_txn::isolation::UnknownIsolation| ApiError::new("22023", error.to_string())),
    }
}

/// The backoff before retry `attempt` (1-based): exponential, capped, with
/// full jitter.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = RETRY_BACKOFF_BASE.saturating_mul(1 << attempt.min(16)).min(RETRY_BACKOFF_MAX);
    ceiling.mul_f64(rand::rng().random_range(0.5..1.0))
}

pub async fn one_shot(
    State(node): State<Arc<Node>>,
    identity: Option<Extension<Identity>>,
    body: Body,
) -> Result<(HeaderMap, Json<serde_json::Value>), ApiError> {
    let request: Option<SqlRequest> = read_object(body, node.config.limits.request_bytes_max).await?;
    let request =
        request.ok_or_else(|| ApiError::bad_request("expected a JSON object with \"sql\" or \"statements\""))?;
    let isolation = parse_isolation(request.isolation.as_deref())?;
    let (named, _) = request.named_statements(node.config.limits.batch_statements_max)?;
    let statements: Vec<Statement> = named.into_iter().map(Statement::from_request).collect::<Result<_, _>>()?;
    let identity = node.auth.identity(identity.as_deref())?;
    let mut retries = 0u32;
    loop {
        let user = identity.map(|identity| identity.user.as_ref());
        let run = || exec::run_transaction(&node, isolation, &statements, user);
        // Each statement is brief or says it is not; many of them in a row
        // are not.
        let attempt = if statements.len() <= exec::INLINE_STATEMENTS_MAX {
            exec::statement(&node, run)
        } else {
            exec::blocking(run)
        };
        match attempt {
            Ok((results, commit)) => {
                let results: Vec<serde_json::Value> = results.iter().map(exec::result_json).collect();
                let answer = json!({
                    "results": results,
                    "isolation": isolation.name(),
                    "commit_ts": commit.ts.to_string(),
                    "retries": retries,
                });
                return Ok((exec::commit_headers(&node, &commit), Json(answer)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..40 {
            let pause = backoff(attempt);
            assert!(pause <= RETRY_BACKOFF_MAX);
            assert!(pause >= RETRY_BACKOFF_BASE.mul_f64(0.5));
        }
    }
}
