//! Running a `SELECT` plan: nested-loop joins over the levels' access
//! paths, then aggregation, `HAVING`, projection, `DISTINCT`, sort,
//! `OFFSET` and `LIMIT`.
//!
//! Rows stream from the driving table through the joins into one sink.
//! When nothing between the scan and the output needs every row (no sort,
//! no aggregation), the sink stops the scan as soon as it has `OFFSET +
//! LIMIT` rows.

use std::collections::{BTreeMap, BTreeSet};

use geodb_storage::Value;
use geodb_txn::Transaction;

use crate::error::{Error, Result};
use crate::exec::aggregate::Accumulator;
use crate::exec::eval::{eval, is_true};
use crate::exec::scan::{CONTINUE, Flow, ReadOptions, STOP, read_level};
use crate::exec::sort::{OrdRow, sort_rows};
use crate::exec::{StatementResult, count_value};
use crate::limits::{RESULT_ROWS_MAX, WORKING_ROWS_MAX};
use crate::plan::{Level, SelectPlan, StatementKind};

pub fn run_select(txn: &mut Transaction, plan: &SelectPlan, params: &[Value]) -> Result<StatementResult> {
    let limit = plan.limit.as_ref().map(|e| count_value(e, params)).transpose()?.flatten();
    let offset = plan.offset.as_ref().map(|e| count_value(e, params)).transpose()?.flatten().unwrap_or(0);
    let streaming = plan.sort.is_empty() && plan.aggregate.is_none();
    // Rows the sink needs before the rest cannot change the answer.
    let enough = if streaming { limit.map(|l| l.saturating_add(offset)) } else { None };
    let scan_limit = plan.levels.first().and_then(|first| {
        if first.access.first_row_only && first.access.limit_pushdown {
            Some(1)
        } else if first.access.limit_pushdown {
            enough.map(|n| n.min(RESULT_ROWS_MAX + 1))
        } else {
            None
        }
    });
    let first_row_only = plan.levels.first().is_some_and(|l| l.access.first_row_only);

    let mut rows: Vec<Vec<Value>> = Vec::new();
    let mut seen: BTreeSet<OrdRow> = BTreeSet::new();
    if enough == Some(0) {
        return finish(plan, rows, 0, Some(0));
    }

    match &plan.aggregate {
        None => {
            let mut sink = |_: &mut Transaction, row: &mut Vec<Value>| -> Result<Flow> {
                let out = plan.projection.iter().map(|e| eval(e, row, params)).collect::<Result<Vec<_>>>()?;
                if plan.distinct && !seen.insert(OrdRow(out.clone())) {
                    return Ok(CONTINUE);
                }
                rows.push(out);
                let bound = if streaming { RESULT_ROWS_MAX + offset } else { WORKING_ROWS_MAX };
                if rows.len() > bound {
                    return Err(too_many_rows());
                }
                Ok(if enough.is_some_and(|n| rows.len() >= n) { STOP } else { CONTINUE })
            };
            produce(txn, plan, params, scan_limit, &mut sink)?;
        }
        Some(aggregate) => {
            let mut groups: BTreeMap<OrdRow, usize> = BTreeMap::new();
            let mut states: Vec<(Vec<Value>, Vec<Accumulator>)> = Vec::new();
            let mut sink = |_: &mut Transaction, row: &mut Vec<Value>| -> Result<Flow> {
                let key = aggregate.group_by.iter().map(|e| eval(e, row, params)).collect::<Result<Vec<_>>>()?;
                let slot = match groups.get(&OrdRow(key.clone())) {
                    Some(&slot) => slot,
                    None => {
                        if states.len() >= WORKING_ROWS_MAX {
                            return Err(too_many_rows());
                        }
                        groups.insert(OrdRow(key.clone()), states.len());
                        states.push((key, aggregate.aggs.iter().map(Accumulator::new).collect()));
                        states.len() - 1
                    }
                };
                for (spec, acc) in aggregate.aggs.iter().zip(&mut states[slot].1) {
                    let input = match &spec.arg {
                        Some(arg) => Some(eval(arg, row, params)?),
                        None => None,
                    };
                    acc.add(input)?;
                }
                Ok(if first_row_only { STOP } else { CONTINUE })
            };
            produce(txn, plan, params, scan_limit, &mut sink)?;
            if states.is_empty() && aggregate.group_by.is_empty() {
                states.push((Vec::new(), aggregate.aggs.iter().map(Accumulator::new).collect()));
            }
            // Groups come out in key order, which is also what PostgreSQL's
            // sorted grouping would show.
            let mut ordered: Vec<(OrdRow, usize)> = groups.into_iter().collect();
            if ordered.is_empty() && !states.is_empty() {
                ordered.push((OrdRow(Vec::new()), 0));
            }
            let mut states: Vec<Option<(Vec<Value>, Vec<Accumulator>)>> = states.into_iter().map(Some).collect();
            for (_, slot) in ordered {
                let (mut agg_row, accs) = states[slot].take().expect("each group finishes once");
                for acc in accs {
                    agg_row.push(acc.finish()?);
                }
                if let Some(having) = &aggregate.having
                    && !is_true(having, &agg_row, params)?
                {
                    continue;
                }
                let out = plan.projection.iter().map(|e| eval(e, &agg_row, params)).collect::<Result<Vec<_>>>()?;
                if plan.distinct && !seen.insert(OrdRow(out.clone())) {
                    continue;
                }
                rows.push(out);
            }
        }
    }

    sort_rows(&mut rows, &plan.sort);
    finish(plan, rows, offset, limit)
}

fn too_many_rows() -> Error {
    Error::ProgramLimitExceeded(format!(
        "query needs more than {RESULT_ROWS_MAX} result rows (or {WORKING_ROWS_MAX} working rows)"
    ))
}

/// Applies `OFFSET` / `LIMIT` and drops hidden sort columns.
fn finish(
    plan: &SelectPlan,
    mut rows: Vec<Vec<Value>>,
    offset: usize,
    limit: Option<usize>,
) -> Result<StatementResult> {
    let rows: Vec<Vec<Value>> = {
        let start = offset.min(rows.len());
        let end = limit.map_or(rows.len(), |l| start.saturating_add(l).min(rows.len()));
        rows.drain(start..end).collect()
    };
    if rows.len() > RESULT_ROWS_MAX {
        return Err(too_many_rows());
    }
    let visible = plan.columns.len();
    let rows = rows
        .into_iter()
        .map(|mut r| {
            r.truncate(visible);
            r
        })
        .collect();
    Ok(StatementResult { columns: plan.columns.clone(), rows, rows_affected: 0, kind: StatementKind::Select })
}

/// Feeds every joined row that passes all filters to `sink`.
fn produce(
    txn: &mut Transaction,
    plan: &SelectPlan,
    params: &[Value],
    scan_limit: Option<usize>,
    sink: &mut dyn FnMut(&mut Transaction, &mut Vec<Value>) -> Result<Flow>,
) -> Result<()> {
    let mut row = Vec::new();
    if plan.levels.is_empty() {
        let pass = match &plan.constant_filter {
            Some(filter) => is_true(filter, &row, params)?,
            None => true,
        };
        if pass {
            sink(txn, &mut row)?;
        }
        return Ok(());
    }
    // The planner lays the joined row out level after level.
    assert!(
        plan.levels.windows(2).all(|w| w[0].offset + w[0].table.columns.len() == w[1].offset),
        "join levels are contiguous in the joined row"
    );
    join(txn, &plan.levels, 0, &mut row, params, plan.for_update, scan_limit, sink)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn join(
    txn: &mut Transaction,
    levels: &[Level],
    depth: usize,
    row: &mut Vec<Value>,
    params: &[Value],
    for_update: bool,
    scan_limit: Option<usize>,
    sink: &mut dyn FnMut(&mut Transaction, &mut Vec<Value>) -> Result<Flow>,
) -> Result<Flow> {
    let options = ReadOptions { for_update, for_write: false, limit: if depth == 0 { scan_limit } else { None } };
    if depth + 1 == levels.len() {
        return read_level(txn, &levels[depth], row, params, &options, sink);
    }
    read_level(txn, &levels[depth], row, params, &options, &mut |txn, row| {
        join(txn, levels, depth + 1, row, params, for_update, None, sink)
    })
}
