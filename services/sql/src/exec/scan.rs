//! Reading one table through its access path ([`crate::plan::access`]).
//!
//! [`read_level`] builds the key (or key range) from the bound values —
//! each converted exactly to its key column's type, since keycode tells an
//! `INT` from a `DECIMAL` — reads the rows, appends each to the joined
//! row, applies the level's filter and hands the row on. Scans fetch
//! [`SCAN_BATCH_ROWS`] at a time (or exactly the pushed-down `LIMIT`), so a
//! consumer that has enough stops the scan, and the range a serializable
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
use crate::exec::rows::{decode_stored_row, row_key};
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
        let bytes = match access.index {
            IndexChoice::Primary => fetch_row(txn, &prefix, options)?,
            IndexChoice::Secondary(_) => match txn.get(&prefix)? {
                Some(suffix) => fetch_row(txn, &keys::row_key_from_suffix(table, &suffix), options)?
                    .map(Some)
                    .ok_or_else(|| dangling(table))?,
                None => None,
            },
        };
        return match bytes {
            Some(bytes) => emit(txn, level, row, params, &bytes, None, false, visit),
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
    let batch = options.limit.unwrap_or(SCAN_BATCH_ROWS).max(1);
    loop {
        let pairs = txn.scan(start.clone(), end.clone(), access.reverse, Some(batch))?;
        let fetched = pairs.len();
        let mut last = None;
        for (key, value) in pairs {
            let flow = if secondary {
                let row_key = keys::row_key_from_suffix(table, &value);
                match txn.get(&row_key)? {
                    Some(bytes) => emit(txn, level, row, params, &bytes, Some(row_key), options.for_update, visit)?,
                    // Read Committed reads the entry and its row at two
                    // moments (and, across shards, from two replicas): the
                    // row may be gone already, or not arrived yet. Either
                    // way it is not a committed row of this read.
                    None if txn.isolation() == geodb_txn::Isolation::ReadCommitted => CONTINUE,
                    None => return Err(dangling(table)),
                }
            } else {
                let bytes = value;
                emit(txn, level, row, params, &bytes, Some(key.clone()), options.for_update, visit)?
            };
            if flow == STOP {
                return Ok(STOP);
            }
            last = Some(key);
        }
        if fetched < batch || options.limit.is_some() {
            return Ok(CONTINUE);
        }
        let last = last.expect("a full batch has a last key");
        if access.reverse {
            end = Bound::Excluded(last);
        } else {
            start = Bound::Excluded(last);
        }
    }
}

fn fetch_row(txn: &mut Transaction, key: &[u8], options: &ReadOptions) -> Result<Option<Vec<u8>>> {
    Ok(if options.for_update {
        txn.get_for_update(key)?
    } else if options.for_write {
        txn.get_for_write(key)?
    } else {
        txn.get(key)?
    })
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
    bytes: &[u8],
    key: Option<Vec<u8>>,
    lock: bool,
    visit: &mut Visitor<'_>,
) -> Result<Flow> {
    let base = row.len();
    assert_eq!(base, level.offset, "joined row width matches the level offset");
    row.extend(decode_stored_row(&level.table, bytes)?);
    let mut pass = match &level.filter {
        Some(filter) => is_true(filter, row, params)?,
        None => true,
    };
    if pass && lock {
        let key = key.unwrap_or_else(|| row_key(&level.table, &row[base..]));
        row.truncate(base);
        match txn.get_for_update(&key)? {
            Some(bytes) => {
                row.extend(decode_stored_row(&level.table, &bytes)?);
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
