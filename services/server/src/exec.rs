//! Running statements.
//!
//! These functions call the SQL layer, which calls transactions and
//! storage synchronously. On a single node, handlers call them straight
//! from their async tasks ([`statement`]): a statement that reads and
//! writes a few keys in memory answers in microseconds, and freeing the
//! worker for every one (tokio's `block_in_place`, which wakes another
//! thread to run the worker's other tasks) cost more than the statement
//! (`docs/benchmarks.md`, "Statements on the connection's task"). Whatever
//! in the stack may wait or run for long — a commit's sync, a lock held by
//! another commit, an answer from another node, commit wait, a scan past
//! its first batch, a join, a schema change (`Plan::is_brief`) — does it
//! through `geodb_storage::wait`, whose hook ([`install_blocking_hook`])
//! frees the worker for that while. Each statement is timed into the
//! statement histogram by isolation level and kind.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};
use geodb_sql::{StatementResult, json};
use geodb_storage::Value;
use geodb_txn::{Commit, Isolation, Transaction};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::http::ApiError;
use crate::node::Node;
use crate::telemetry::names;

/// Runs a statement's work (or a transaction-control statement's) from
/// the connection's task. On a single node it runs right here, and only
/// what waits below it frees the worker. On a node of a cluster the worker
/// is freed for the whole statement, as before: its tokio workers also
/// carry the transport's tasks (and in `geodb dev` every node's), whose
/// messages a statement's CPU work on the worker would hold up — measured
/// as a slower commit across homes (`docs/benchmarks.md`, "Statements on
/// the connection's task").
pub fn statement<T>(node: &Node, work: impl FnOnce() -> T) -> T {
    if node.cluster.is_none() { work() } else { blocking(work) }
}

/// Statements of one request run on the connection's task (on a single
/// node: [`statement`]) up to this many in a row: a `/v1/sql` request with
/// more runs as work that may wait ([`blocking`]), and a session's list or
/// a PostgreSQL query string of several statements lets the worker's other
/// tasks run after each such run of them.
pub const INLINE_STATEMENTS_MAX: usize = 16;

/// Before the `index`th statement of a list run on the connection's task:
/// after every [`INLINE_STATEMENTS_MAX`] of them, lets the worker's other
/// tasks run.
pub async fn pause_in_list(index: usize) {
    if index > 0 && index % INLINE_STATEMENTS_MAX == 0 {
        tokio::task::yield_now().await;
    }
}

/// Runs work that waits (an administrative operation, a password hash)
/// from an async handler without stalling the runtime's other tasks: the
/// worker's other tasks go to another thread while it lasts, on a
/// multi-threaded runtime; elsewhere (a plain thread, a single-threaded
/// runtime in a test) the work just runs.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Makes every wait below the SQL layer (`geodb_storage::wait`) run as
/// [`blocking`] work.
pub fn install_blocking_hook() {
    geodb_storage::wait::set_blocking_hook(|work| blocking(work));
}

/// One statement of a request, with its JSON parameters as they were
/// written (an integer beyond BIGINT keeps its digits, to be refused or
/// stored exactly, never rounded through a float). A JSON object only.
#[derive(Debug, Clone)]
pub struct StatementRequest {
    pub sql: String,
    pub params: Vec<Box<RawValue>>,
}

impl<'de> Deserialize<'de> for StatementRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            sql: String,
            #[serde(default)]
            params: Vec<Box<RawValue>>,
        }
        let fields: Fields = crate::http::body::from_object(deserializer)?;
        Ok(StatementRequest { sql: fields.sql, params: fields.params })
    }
}

/// The body of `POST /v1/sql` and of `POST /v1/sessions/<id>/sql`: one
/// statement (`"sql"` with its `"params"`) or a `"statements"` list, and,
/// for `/v1/sql`, the level (a session's statements run at the session's).
#[derive(Debug, Deserialize)]
pub struct SqlRequest {
    pub sql: Option<String>,
    #[serde(default)]
    pub params: Vec<Box<RawValue>>,
    pub statements: Option<Vec<StatementRequest>>,
    pub isolation: Option<String>,
}

impl SqlRequest {
    /// The statements named (never both forms; a list of one to `max`),
    /// and whether they came as a list.
    pub fn named_statements(self, max: usize) -> Result<(Vec<StatementRequest>, bool), ApiError> {
        match (self.sql, self.statements) {
            (Some(sql), None) => Ok((vec![StatementRequest { sql, params: self.params }], false)),
            (None, Some(statements)) if statements.is_empty() => Err(ApiError::bad_request("\"statements\" is empty")),
            (None, Some(statements)) if statements.len() > max => Err(ApiError::new(
                "54000",
                format!("a list holds at most {max} statements (limits.batch_statements_max)"),
            )),
            (None, Some(statements)) => Ok((statements, true)),
            (Some(_), Some(_)) => Err(ApiError::bad_request("give either \"sql\" or \"statements\", not both")),
            (None, None) => Err(ApiError::bad_request("expected \"sql\" or \"statements\"")),
        }
    }
}

/// A parameter as the API maps it (`docs/api.md`): an integer literal
/// within BIGINT is an integer, a longer one an exact decimal (a BIGINT
/// column then refuses it with `22003`; a DECIMAL one stores it exactly),
/// anything else as `geodb_sql::json::json_to_param` maps it.
pub fn param(raw: &RawValue) -> Result<Value, ApiError> {
    let text = raw.get().trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()) {
        if let Ok(number) = text.parse::<i64>() {
            return Ok(Value::Int(number));
        }
        // Beyond DECIMAL's 28 digits, a float (as before: a DOUBLE column
        // takes it, an integer one refuses it).
        return Ok(match text.parse::<rust_decimal::Decimal>() {
            Ok(decimal) => Value::Decimal(decimal),
            Err(_) => Value::Float(text.parse::<f64>().unwrap_or(f64::INFINITY)),
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| ApiError::bad_request(format!("malformed parameter: {error}")))?;
    Ok(json::json_to_param(&value)?)
}

/// A statement ready to run: its parameters converted to SQL values.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

impl Statement {
    pub fn from_request(request: StatementRequest) -> Result<Statement, ApiError> {
        let params = request.params.iter().map(|raw| param(raw)).collect::<Result<_, _>>()?;
        Ok(Statement { sql: request.sql, params })
    }
}

/// Runs one statement inside `txn` as `user` (`None`: unchecked, a node
/// without authentication or the node's own work), timing it.
pub fn run_statement(
    node: &Node,
    txn: &mut Transaction,
    statement: &Statement,
    user: Option<&str>,
) -> Result<StatementResult, ApiError> {
    let started = Instant::now();
    let span = crate::telemetry::span(|| {
        tracing::info_span!(
            "sql.statement",
            db.system = "geodb",
            db.operation = tracing::field::Empty,
            isolation = txn.isolation().label(),
        )
    });
    let _entered = span.enter();
    txn.begin_statement();
    let timeout_ms = node.config.limits.statement_timeout_ms;
    txn.set_statement_timeout((timeout_ms > 0).then(|| timeout_ms.saturating_mul(1_000_000)));
    let outcome = node.db.execute_as(txn, &statement.sql, &statement.params, user);
    let kind = outcome.as_ref().map_or("error", |result| result.kind.name());
    span.record("db.operation", kind);
    metrics::histogram!(names::STATEMENT_SECONDS, "isolation" => txn.isolation().label(), "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    Ok(outcome?)
}

/// Runs `statements` as one transaction at `isolation` and commits it.
/// Transaction-control statements are refused: the batch is the transaction.
pub fn run_transaction(
    node: &Node,
    isolation: Isolation,
    statements: &[Statement],
    user: Option<&str>,
) -> Result<(Vec<StatementResult>, Commit), ApiError> {
    run_cancellable_transaction(node, isolation, statements, None, user)
}

/// [`run_transaction`], whose statements stop at their next read once
/// `cancel` is set (a PostgreSQL client's cancel request; see
/// `Transaction::set_statement_cancel`).
pub fn run_cancellable_transaction(
    node: &Node,
    isolation: Isolation,
    statements: &[Statement],
    cancel: Option<Arc<AtomicBool>>,
    user: Option<&str>,
) -> Result<(Vec<StatementResult>, Commit), ApiError> {
    for statement in statements {
        // A malformed control statement is a syntax error first.
        if let Some(Err(error)) = geodb_sql::parse_control(&statement.sql) {
            return Err(error.into());
        }
        if geodb_sql::parse_control(&statement.sql).is_some() {
            return Err(ApiError::new(
                "0A000",
                "transaction control statements run only in sessions (POST /v1/sessions); a request to /v1/sql is already one transaction",
            ));
        }
    }
    let mut txn = node.txns.begin_settled(isolation).map_err(geodb_sql::Error::from)?;
    txn.set_statement_cancel(cancel);
    let mut results = Vec::with_capacity(statements.len());
    for statement in statements {
        match run_statement(node, &mut txn, statement, user) {
            Ok(result) => results.push(result),
            Err(error) => {
                txn.rollback();
                count_outcome(isolation, Err(&error));
                return Err(error);
            }
        }
    }
    let outcome = commit(txn);
    count_outcome(isolation, outcome.as_ref().map(|_| ()));
    Ok((results, outcome?))
}

/// Commits `txn` in a `txn.commit` span.
pub fn commit(txn: Transaction) -> Result<Commit, ApiError> {
    let span = crate::telemetry::span(|| {
        tracing::info_span!(
            "txn.commit",
            isolation = txn.isolation().label(),
            txn = %txn.id(),
            commit_ts = tracing::field::Empty,
            at = tracing::field::Empty,
        )
    });
    let _entered = span.enter();
    let commit = txn.commit_reporting().map_err(geodb_sql::Error::from).map_err(ApiError::from)?;
    span.record("commit_ts", tracing::field::display(commit.ts));
    span.record("at", commit.at.name());
    Ok(commit)
}

/// Headers that say where a transaction committed: `X-GeoDB-Commit`
/// (`home`, `outbox` or `none`) and, where it wrote, `X-GeoDB-Commit-Regions`
/// (the home regions of the shards that took it, or the outbox's region).
pub fn commit_headers(node: &Node, commit: &Commit) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(COMMIT_HEADER, HeaderValue::from_static(commit.at.name()));
    let regions = commit.regions(node.txns.router().as_ref());
    if !regions.is_empty()
        && let Ok(regions) = HeaderValue::from_str(&regions.join(","))
    {
        headers.insert(COMMIT_REGIONS_HEADER, regions);
    }
    headers
}

/// The headers of [`commit_headers`].
pub const COMMIT_HEADER: &str = "x-geodb-commit";
pub const COMMIT_REGIONS_HEADER: &str = "x-geodb-commit-regions";

/// Counts a transaction's end by level and outcome, and aborts by reason.
pub fn count_outcome(isolation: Isolation, outcome: Result<(), &ApiError>) {
    let label = isolation.label();
    match outcome {
        Ok(()) => metrics::counter!(names::TRANSACTIONS, "isolation" => label, "outcome" => "commit").increment(1),
        Err(error) => {
            let reason = match error.code.as_str() {
                "40001" => "conflict",
                code if code.starts_with("23") => "constraint",
                _ => "error",
            };
            metrics::counter!(names::TRANSACTIONS, "isolation" => label, "outcome" => "abort").increment(1);
            metrics::counter!(names::ABORTS, "reason" => reason).increment(1);
        }
    }
}

/// Counts a transaction the client rolled back.
pub fn count_rollback(isolation: Isolation) {
    metrics::counter!(names::TRANSACTIONS, "isolation" => isolation.label(), "outcome" => "rollback").increment(1);
}

/// One statement's answer: `{"columns", "rows", "rows_affected"}`.
pub fn result_json(result: &StatementResult) -> serde_json::Value {
    let rows: Vec<Vec<serde_json::Value>> =
        result.rows.iter().map(|row| row.iter().map(json::value_to_json).collect()).collect();
    json!({"columns": result.columns, "rows": rows, "rows_affected": result.rows_affected})
}

/// The answer of a statement that returns nothing (transaction control).
pub fn empty_result_json() -> serde_json::Value {
    json!({"columns": [], "rows": [], "rows_affected": 0})
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A statement runs on its connection's task; when something below it
    /// waits for work that another task of the same runtime does (here a
    /// send, standing for an answer the transport delivers), the hook must
    /// free the worker, or a runtime with one worker never runs that task.
    #[test]
    fn a_wait_through_the_hook_lets_the_runtime_run_the_task_it_waits_for() {
        super::install_blocking_hook();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let answered = runtime.block_on(async {
            let (sender, receiver) = std::sync::mpsc::channel();
            let (started, waits) = tokio::sync::oneshot::channel();
            let waiting = tokio::spawn(async move {
                started.send(()).unwrap();
                geodb_storage::wait::blocking(|| receiver.recv_timeout(Duration::from_secs(30)))
            });
            // Spawned once the one worker runs the waiting task.
            waits.await.unwrap();
            tokio::spawn(async move { sender.send("answer").unwrap() });
            waiting.await.unwrap()
        });
        assert_eq!(answered, Ok("answer"));
    }

    /// Outside a multi-threaded runtime the hook just runs the work (a
    /// single-threaded runtime would panic in `block_in_place`).
    #[test]
    fn the_hook_runs_work_directly_on_a_single_threaded_runtime() {
        super::install_blocking_hook();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(runtime.block_on(async { geodb_storage::wait::blocking(|| 5) }), 5);
        assert_eq!(geodb_storage::wait::blocking(|| 6), 6);
    }
}
