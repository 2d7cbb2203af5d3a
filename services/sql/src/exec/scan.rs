//! Reading one table through its access path ([`crate::plan::access`]).
//!
//! [`read_level`] builds the key (or key range) from the bound values —
//! each converted exactly to its key column's type, since keycode tells an
//! `INT` from a `DECIMAL` — reads the rows, appends each to the joined
//! row, applies the level's filter and hands the row on. Scans fetch
//! [`SCAN_BATCH_ROWS`] at a time (or exactly the pushed-down `LIMIT`'s
//! rows: for a table with column families, their values), so a consumer
//! that has enough stops the scan, and the range a serializable
//! transaction records ends where reading ended.
//!
//! `SELECT ... FOR UPDATE` reads a point with `get_for_update`; a scanned
//! row that passes its filter is read again with `get_for_update` (so it
//! conflicts as if written) and filtered again on that version. An
//! `UPDATE` or `DELETE` reads a point with `get_for_write`: the row it is
//! about to write, locked with its shard prepared in the same round trip
//! where that shard commits in another region (R20).

use std::ops::Bound;

use geodb_storage::{Value, keycode};
use geodb_txn::Transaction;

use crate::catalog::Table;
use crate::error::{Error, Result};
use crate::exec::eval::{eval, is_true};
use crate::exec::rows::{
    ReadKind, family_of_value, is_family_value, overlay_stored, owning_row_key, read_row, row_key,
};
use crate::keys;
use crate::limits::SCAN_BATCH_ROWS;
use crate::plan::Level;
use crate::plan::access::IndexChoice;
use crate::types::key_value;

/// What a consumer says after each row.
pub type Flow = bool;
/// Keep reading.
pub const CONTINUE: Flow = true;
/// Enough rows: stop.
pub const STOP: Flow = false;

/// What a level hands each matching row to.
pub type Visitor<'a> = dyn FnMut(&mut Transaction, &mut Vec<Value>) -> Result<Flow> + 'a;

/// How a level is read this time.
pub struct ReadOptions {
    pub for_update: bool,
    /// A point read of a row the statement writes (`UPDATE`, `DELETE`).
    pub for_write: bool,
    /// Rows to fetch in all when the statement's limit is pushed down.
    pub limit: Option<usize>,
}

/// Reads the rows of `level` that match, given the joined `row` of the
/// earlier levels, calling `visit` with the row extended by each match.
/// Returns [`STOP`] if `visit` stopped.
pub fn read_level(
    txn: &mut Transaction,
    level: &Level,
    row: &mut Vec<Value>,
    params: &[Value],
    options: &ReadOptions,
    visit: &mut Visitor<'_>,
) -> Result<Flow> {
    let table = &level.table;
    let access = &level.access;
    let index = match access.index {
        IndexChoice::Primary => None,
        IndexChoice::Secondary(i) => Some(&table.indexes[i]),
    };
    let mut prefix = keys::index_prefix(table, index);
    // (`prefix` grows by the equality-bound key columns.)
    for (expr, &column) in access.eq.iter().zip(&access.key_columns) {
        let value = eval(expr, row, params)?;
        match key_value(value, &table.columns[column].ty) {
            Some(v) => keycode::encode_value(&mut prefix, &v),
            None => return Ok(CONTINUE), // no row can match
        }
    }

    if let Some(list) = &access.in_list {
        // One read per distinct value, in key order.
        let column = &table.columns[access.key_columns[access.eq.len()]];
        let mut keys = Vec::with_capacity(list.len());
        for expr in list {
            if let Some(value) = key_value(eval(expr, row, params)?, &column.ty) {
                let mut key = prefix.clone();
                keycode::encode_value(&mut key, &value);
                keys.push(key);
            }
        }
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            if read_prefix(txn, level, key, row, params, options, visit)? == STOP {
                return Ok(STOP);
            }
        }
        return Ok(CONTINUE);
    }
    read_prefix(txn, level, prefix, row, params, options, visit)
}

/// Reads the rows under `prefix` (the encoded bound key columns): one row
/// for a point access, else a scan within the access's range.
fn read_prefix(
    txn: &mut Transaction,
    level: &Level,
    prefix: Vec<u8>,
    row: &mut Vec<Value>,
    params: &[Value],
    options: &ReadOptions,
    visit: &mut Visitor<'_>,
) -> Result<Flow> {
    let table = &level.table;
    let access = &level.access;
    if access.point {
        let found = match access.index {
            IndexChoice::Primary => read_row(txn, table, &prefix, level.families, read_kind(options))?,
            IndexChoice::Secondary(_) => match txn.get(&prefix)? {
                Some(suffix) => {
                    let key = keys::row_key_from_suffix(table, &suffix);
                    read_row(txn, table, &key, level.families, read_kind(options))?
                        .map(Some)
                        .ok_or_else(|| dangling(table))?
                }
                None => None,
            },
        };
        return match found {
            Some(values) => emit(txn, level, row, params, values, None, false, visit),
            None => Ok(CONTINUE),
        };
    }

    let range_column = access.key_columns.get(access.eq.len()).map(|&c| &table.columns[c].ty);
    let bound_key = |expr: &crate::plan::expr::Expr, row: &[Value]| -> Result<Option<Vec<u8>>> {
        let value = eval(expr, row, params)?;
        Ok(range_column.and_then(|ty| key_value(value, ty)).map(|v| {
            let mut key = prefix.clone();
            keycode::encode_value(&mut key, &v);
            key
        }))
    };
    let after = |key: Vec<u8>| keycode::prefix_end(&key).map_or(Bound::Unbounded, Bound::Included);
    let mut start = match &access.lower {
        Some(b) => match bound_key(&b.expr, row)? {
            Some(key) if b.inclusive => Bound::Included(key),
            Some(key) => after(key),
            None => Bound::Included(prefix.clone()),
        },
        None => Bound::Included(prefix.clone()),
    };
    let prefix_end = keycode::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    let mut end = match &access.upper {
        Some(b) => match bound_key(&b.expr, row)? {
            Some(key) if b.inclusive => keycode::prefix_end(&key).map_or(Bound::Unbounded, Bound::Excluded),
            Some(key) => Bound::Excluded(key),
            None => prefix_end,
        },
        None => prefix_end,
    };

    let secondary = access.index != IndexChoice::Primary;
    // A row of a table with column families is several stored values in a
    // row: a pushed-down limit counts rows, so the engine is asked for as
    // many rows' values, and the consumer stops the scan (a row may lack a
    // family, so the limit alone never ends it). A row is handed on as soon
    // as its last value is read (its last family, or in a reverse scan its
    // primary value), so a scan that stops reads nothing of the next row.
    let assembled = !secondary && table.has_families();
    let last_family = if access.reverse { 0 } else { table.families.len() };
    let limit = options.limit.filter(|_| !assembled);
    let batch = match options.limit {
        Some(rows) if assembled => rows.saturating_mul(1 + table.families.len()),
        Some(rows) => rows,
        None => SCAN_BATCH_ROWS,
    }
    .max(1);
    // The row being put together from its families (a table with column
    // families: they follow its key, or precede it in a reverse scan).
    let mut assembling: Option<(Vec<u8>, Vec<Value>, bool)> = None;
    let mut first_batch = true;
    loop {
        // A scan past its first batch may run for long: from its second
        // on (or from its first, when a pushed-down limit asks for more
        // than a batch at once), it tells the program it may wait
        // (`geodb_storage::wait`), so that a server runs the rest of it off
        // its async workers.
        let long = !first_batch || batch > SCAN_BATCH_ROWS;
        let pairs = geodb_storage::wait::blocking_if(long, || {
            txn.scan(start.clone(), end.clone(), access.reverse, Some(batch))
        })?;
        first_batch = false;
        let fetched = pairs.len();
        let mut last = None;
        for (key, value) in pairs {
            let flow = if secondary {
                let row_key = keys::row_key_from_suffix(table, &value);
                match read_row(txn, table, &row_key, level.families, ReadKind::Plain)? {
                    Some(values) => emit(txn, level, row, params, values, Some(row_key), options.for_update, visit)?,
                    // Read Committed reads the entry and its row at two
                    // moments (and, across shards, from two replicas): the
                    // row may be gone already, or not arrived yet. Either
                    // way it is not a committed row of this read.
                    None if txn.isolation() == geodb_txn::Isolation::ReadCommitted => CONTINUE,
                    None => return Err(dangling(table)),
                }
            } else if assembled {
                let owner = owning_row_key(&key, &value);
                let mut flow = CONTINUE;
                if assembling.as_ref().is_some_and(|(current, _, _)| current.as_slice() != owner) {
                    flow = emit_assembled(txn, level, row, params, assembling.take(), options, visit)?;
                    if flow == STOP {
                        return Ok(STOP);
                    }
                }
                let (_, values, primary) =
                    assembling.get_or_insert_with(|| (owner.to_vec(), vec![Value::Null; table.columns.len()], false));
                *primary |= !is_family_value(&value);
                overlay_stored(table, &value, values)?;
                if family_of_value(&value) == last_family {
                    flow = emit_assembled(txn, level, row, params, assembling.take(), options, visit)?;
                }
                flow
            } else {
                let values = crate::exec::rows::decode_stored_row(table, &value)?;
                emit(txn, level, row, params, values, Some(key.clone()), options.for_update, visit)?
            };
            if flow == STOP {
                return Ok(STOP);
            }
            last = Some(key);
        }
        if fetched < batch || limit.is_some() {
            return emit_assembled(txn, level, row, params, assembling, options, visit);
        }
        let last = last.expect("a full batch has a last key");
        if access.reverse {
            end = Bound::Excluded(last);
        } else {
            start = Bound::Excluded(last);
        }
    }
}

fn read_kind(options: &ReadOptions) -> ReadKind {
    if options.for_update {
        ReadKind::ForUpdate
    } else if options.for_write {
        ReadKind::ForWrite
    } else {
        ReadKind::Plain
    }
}

/// Passes on a row put together from its families by a scan; one without
/// its primary family (its families outlived it: a Read Committed or MAV
/// delete and update of one row, last writer winning per family) is no row.
fn emit_assembled(
    txn: &mut Transaction,
    level: &Level,
    row: &mut Vec<Value>,
    params: &[Value],
    assembled: Option<(Vec<u8>, Vec<Value>, bool)>,
    options: &ReadOptions,
    visit: &mut Visitor<'_>,
) -> Result<Flow> {
    match assembled {
        Some((key, values, true)) => emit(txn, level, row, params, values, Some(key), options.for_update, visit),
        _ => Ok(CONTINUE),
    }
}

fn dangling(table: &Table) -> Error {
    Error::Internal(format!("an index entry of \"{}\" points to a missing row", table.name))
}

/// Decodes a row, filters it, re-reads it for update if asked, and passes
/// it on.
#[allow(clippy::too_many_arguments)]
fn emit(
    txn: &mut Transaction,
    level: &Level,
    row: &mut Vec<Value>,
    params: &[Value],
    values: Vec<Value>,
    key: Option<Vec<u8>>,
    lock: bool,
    visit: &mut Visitor<'_>,
) -> Result<Flow> {
    let base = row.len();
    assert_eq!(base, level.offset, "joined row width matches the level offset");
    row.extend(values);
    let mut pass = match &level.filter {
        Some(filter) => is_true(filter, row, params)?,
        None => true,
    };
    if pass && lock {
        let key = key.unwrap_or_else(|| row_key(&level.table, &row[base..]));
        row.truncate(base);
        match read_row(txn, &level.table, &key, level.families, ReadKind::ForUpdate)? {
            Some(values) => {
                row.extend(values);
                pass = match &level.filter {
                    Some(filter) => is_true(filter, row, params)?,
                    None => true,
                };
            }
            None => pass = false,
        }
    }
    let flow = if pass && row.len() > base { visit(txn, row)? } else { CONTINUE };
    row.truncate(base);
    Ok(flow)
}
