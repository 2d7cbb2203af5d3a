//! Running `INSERT`, `UPDATE` and `DELETE`.
//!
//! `UPDATE` and `DELETE` first collect the matching rows, then write:
//! a statement never sees its own changes (no Halloween problem), and the
//! number of rows one statement may change is bounded
//! ([`WRITTEN_ROWS_MAX`]).

use geodb_storage::Value;
use geodb_txn::Transaction;

use crate::error::{Error, Result};
use crate::exec::StatementResult;
use crate::exec::eval::eval;
use crate::exec::rows::{check_not_null, check_not_null_in, delete_row, insert_row, update_row};
use crate::exec::scan::{CONTINUE, ReadOptions, read_level};
use crate::limits::WRITTEN_ROWS_MAX;
use crate::plan::{DeletePlan, InsertPlan, Level, StatementKind, UpdatePlan};
use crate::types::assign;

pub fn run_insert(txn: &mut Transaction, plan: &InsertPlan, params: &[Value]) -> Result<StatementResult> {
    let table = &plan.table;
    let mut inserted = 0;
    for exprs in &plan.rows {
        let mut row = Vec::with_capacity(exprs.len());
        for (expr, column) in exprs.iter().zip(&table.columns) {
            row.push(assign(eval(expr, &[], params)?, &column.ty)?);
        }
        check_not_null(table, &row)?;
        if insert_row(txn, table, &row, plan.do_nothing)? {
            inserted += 1;
        }
    }
    Ok(StatementResult::affected(StatementKind::Insert, inserted))
}

pub fn run_update(txn: &mut Transaction, plan: &UpdatePlan, params: &[Value]) -> Result<StatementResult> {
    let table = &plan.level.table;
    let rows = collect(txn, &plan.level, params)?;
    // Of a table with column families the row was read in part (the
    // families the statement uses): only the assigned columns are checked,
    // the others were when they were written.
    let assigned: Vec<usize> = plan.assignments.iter().map(|(column, _)| *column).collect();
    for old in &rows {
        let mut new = old.clone();
        for (column, expr) in &plan.assignments {
            new[*column] = assign(eval(expr, old, params)?, &table.columns[*column].ty)?;
        }
        check_not_null_in(table, &new, assigned.iter().copied())?;
        update_row(txn, table, old, &new, &assigned)?;
    }
    Ok(StatementResult::affected(StatementKind::Update, rows.len() as u64))
}

pub fn run_delete(txn: &mut Transaction, plan: &DeletePlan, params: &[Value]) -> Result<StatementResult> {
    let rows = collect(txn, &plan.level, params)?;
    for row in &rows {
        delete_row(txn, &plan.level.table, row)?;
    }
    Ok(StatementResult::affected(StatementKind::Delete, rows.len() as u64))
}

/// The rows of a one-table statement that match its `WHERE`.
fn collect(txn: &mut Transaction, level: &Level, params: &[Value]) -> Result<Vec<Vec<Value>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let options = ReadOptions { for_update: false, for_write: true, limit: None };
    read_level(txn, level, &mut row, params, &options, &mut |_, row| {
        if rows.len() >= WRITTEN_ROWS_MAX {
            return Err(Error::ProgramLimitExceeded(format!("statement changes more than {WRITTEN_ROWS_MAX} rows")));
        }
        rows.push(row.clone());
        Ok(CONTINUE)
    })?;
    Ok(rows)
}
