//! Writing rows: a row and all its index entries change together, in the
//! caller's transaction, so no reader ever sees an index out of step with
//! its table.
//!
//! Uniqueness is checked by point reads before writing: the row key for
//! the primary key, the entry key for a unique index (entries holding a
//! NULL never collide, as in PostgreSQL). The reads go through the
//! transaction, so they see the statement's own earlier rows and, under
//! the coordinated levels, conflict with a concurrent insert of the same
//! key.

use geodb_storage::Value;
use geodb_storage::value::{decode_row, encode_row};
use geodb_txn::Transaction;

use crate::catalog::{Index, Table};
use crate::error::{Error, Result};
use crate::keys;

/// The key of a row.
pub fn row_key(table: &Table, row: &[Value]) -> Vec<u8> {
    let mut key = keys::index_prefix(table, None);
    keys::append_values(&mut key, table.primary_key.iter().map(|&c| &row[c]));
    key
}

/// The key-code of a row's primary key (an index entry's value).
fn primary_suffix(table: &Table, row: &[Value]) -> Vec<u8> {
    let mut suffix = Vec::with_capacity(32);
    keys::append_values(&mut suffix, table.primary_key.iter().map(|&c| &row[c]));
    suffix
}

/// An index entry of a row: its key, and whether the key is the unique
/// kind (columns only, so a duplicate is found by a point read).
pub fn index_entry(table: &Table, index: &Index, row: &[Value]) -> (Vec<u8>, bool) {
    let mut key = keys::index_prefix(table, Some(index));
    keys::append_values(&mut key, index.columns.iter().map(|&c| &row[c]));
    let unique_key = index.unique && index.columns.iter().all(|&c| !row[c].is_null());
    if !unique_key {
        keys::append_values(&mut key, table.primary_key.iter().map(|&c| &row[c]));
    }
    (key, unique_key)
}

/// Decodes a stored row, checking it against the table definition.
pub fn decode_stored_row(table: &Table, bytes: &[u8]) -> Result<Vec<Value>> {
    let row = decode_row(bytes)?;
    if row.len() != table.columns.len() {
        return Err(Error::Internal(format!(
            "row of \"{}\" has {} values, the table has {} columns",
            table.name,
            row.len(),
            table.columns.len()
        )));
    }
    Ok(row)
}

/// Checks `NOT NULL` columns of a row about to be written.
pub fn check_not_null(table: &Table, row: &[Value]) -> Result<()> {
    for (column, value) in table.columns.iter().zip(row) {
        if column.not_null && value.is_null() {
            return Err(Error::NotNullViolation { table: table.name.clone(), column: column.name.clone() });
        }
    }
    Ok(())
}

pub fn primary_key_name(table: &Table) -> String {
    format!("{}_pkey", table.name)
}

/// Inserts a new row. `Ok(false)` when a unique key is taken and
/// `skip_conflicts` is set (`ON CONFLICT DO NOTHING`); 23505 otherwise.
pub fn insert_row(txn: &mut Transaction, table: &Table, row: &[Value], skip_conflicts: bool) -> Result<bool> {
    let key = row_key(table, row);
    if txn.get(&key)?.is_some() {
        return conflict(skip_conflicts, primary_key_name(table));
    }
    let entries: Vec<(Vec<u8>, bool)> = table.indexes.iter().map(|index| index_entry(table, index, row)).collect();
    for (index, (entry, unique_key)) in table.indexes.iter().zip(&entries) {
        if *unique_key && txn.get(entry)?.is_some() {
            return conflict(skip_conflicts, index.name.clone());
        }
    }
    let suffix = primary_suffix(table, row);
    txn.put(key, encode_row(row))?;
    for (entry, _) in entries {
        txn.put(entry, suffix.clone())?;
    }
    Ok(true)
}

fn conflict(skip: bool, constraint: String) -> Result<bool> {
    if skip { Ok(false) } else { Err(Error::UniqueViolation { constraint }) }
}

/// Replaces `old` by `new` (same table), moving the row if its primary key
/// changed and the index entries whose columns changed.
pub fn update_row(txn: &mut Transaction, table: &Table, old: &[Value], new: &[Value]) -> Result<()> {
    let old_key = row_key(table, old);
    let new_key = row_key(table, new);
    let moved = old_key != new_key;
    if moved {
        if txn.get(&new_key)?.is_some() {
            return Err(Error::UniqueViolation { constraint: primary_key_name(table) });
        }
        txn.delete(old_key)?;
    }
    let suffix = if moved { Some(primary_suffix(table, new)) } else { None };
    for index in &table.indexes {
        let (old_entry, _) = index_entry(table, index, old);
        let (new_entry, unique_key) = index_entry(table, index, new);
        if old_entry != new_entry {
            txn.delete(old_entry)?;
            if unique_key && txn.get(&new_entry)?.is_some() {
                return Err(Error::UniqueViolation { constraint: index.name.clone() });
            }
            txn.put(new_entry, suffix.clone().unwrap_or_else(|| primary_suffix(table, new)))?;
        } else if let Some(suffix) = &suffix {
            // Same entry key (a unique index), new primary key: new value.
            txn.put(new_entry, suffix.clone())?;
        }
    }
    txn.put(new_key, encode_row(new))?;
    Ok(())
}

/// Deletes a row and its index entries.
pub fn delete_row(txn: &mut Transaction, table: &Table, row: &[Value]) -> Result<()> {
    for index in &table.indexes {
        txn.delete(index_entry(table, index, row).0)?;
    }
    txn.delete(row_key(table, row))?;
    Ok(())
}
