//! Execution: running a [`Plan`] over a [`Transaction`].
//!
//! - [`eval`]: expressions, three-valued logic, checked arithmetic.
//! - [`scan`]: reading a table through its access path.
//! - [`rows`]: writing rows with their index entries, uniqueness checks.
//! - [`select`], [`aggregate`], [`sort`]: queries.
//! - [`dml`], [`ddl`]: writes and schema changes.

pub mod aggregate;
pub mod ddl;
pub mod dml;
pub mod eval;
pub mod rows;
pub mod scan;
pub mod select;
pub mod sort;

use geodb_storage::Value;
use geodb_txn::Transaction;

use crate::catalog::{Catalog, CatalogCache};
use crate::error::{Error, Result};
use crate::plan::expr::Expr;
use crate::plan::{Plan, StatementKind, explain};

/// The answer to one statement.
#[derive(Clone, Debug, PartialEq)]
pub struct StatementResult {
    /// Output column names (empty for writes and DDL).
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted (0 for queries and DDL).
    pub rows_affected: u64,
    pub kind: StatementKind,
}

impl StatementResult {
    pub fn affected(kind: StatementKind, rows_affected: u64) -> StatementResult {
        StatementResult { columns: Vec::new(), rows: Vec::new(), rows_affected, kind }
    }
}

/// Runs a plan with bound parameters.
pub fn execute(
    cache: &CatalogCache,
    catalog: &Catalog,
    txn: &mut Transaction,
    plan: &Plan,
    params: &[Value],
) -> Result<StatementResult> {
    if plan.kind() == StatementKind::Ddl {
        // A DDL's backfill must conflict with concurrent writers of its
        // table, whatever the session's level (docs/design/transactions.md).
        txn.escalate_to_serializable()?;
    }
    match plan {
        Plan::Select(select) => select::run_select(txn, select, params),
        Plan::Insert(insert) => dml::run_insert(txn, insert, params),
        Plan::Update(update) => dml::run_update(txn, update, params),
        Plan::Delete(delete) => dml::run_delete(txn, delete, params),
        Plan::CreateTable(create) => ddl::create_table(cache, catalog, txn, create),
        Plan::DropTable { name, if_exists } => ddl::drop_table(cache, catalog, txn, name, *if_exists),
        Plan::CreateIndex(create) => ddl::create_index(cache, catalog, txn, create),
        Plan::DropIndex { name, if_exists } => ddl::drop_index(cache, catalog, txn, name, *if_exists),
        Plan::Explain(inner) => Ok(StatementResult {
            columns: vec!["plan".into()],
            rows: explain::explain(inner).into_iter().map(|line| vec![Value::Text(line)]).collect(),
            rows_affected: 0,
            kind: StatementKind::Explain,
        }),
        Plan::Show(show) => Ok(StatementResult {
            columns: vec![show.column().into()],
            rows: vec![vec![Value::Text(show.value(txn.isolation()))]],
            rows_affected: 0,
            kind: StatementKind::Select,
        }),
    }
}

/// The value of a `LIMIT` / `OFFSET`: `None` for NULL (no limit).
pub fn count_value(expr: &Expr, params: &[Value]) -> Result<Option<usize>> {
    match eval::eval(expr, &[], params)? {
        Value::Null => Ok(None),
        Value::Int(n) if n >= 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Value::Int(_) => Err(Error::InvalidLimit),
        other => {
            Err(Error::DatatypeMismatch(format!("argument of LIMIT must be type bigint, not type {}", other.kind())))
        }
    }
}
