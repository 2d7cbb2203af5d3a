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

use crate::catalog::{ALL_FAMILIES, FamilySet, Index, Table};
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

/// Format byte of the value of a declared column family (family 1 and up;
/// the primary family's value is a row, [`decode_stored_row`]).
const FAMILY_VALUE_FORMAT: u8 = 0xF1;

/// Whether a stored value is a declared column family's (else a row's).
pub fn is_family_value(bytes: &[u8]) -> bool {
    bytes.first() == Some(&FAMILY_VALUE_FORMAT)
}

/// The family a stored value belongs to: 0 for a row's primary value.
pub fn family_of_value(bytes: &[u8]) -> usize {
    if is_family_value(bytes) { bytes.get(1).map_or(0, |&family| usize::from(family)) } else { 0 }
}

/// The row key a stored key belongs to, given its value: a family's key
/// is the row's key and two bytes ([`keys::family_key`]).
pub fn owning_row_key<'a>(key: &'a [u8], value: &[u8]) -> &'a [u8] {
    if is_family_value(value) { &key[..key.len().saturating_sub(2)] } else { key }
}

/// The value stored under a row's key: the row, or for a table with
/// column families its primary family (the other families' columns NULL).
fn primary_value(table: &Table, row: &[Value]) -> Vec<u8> {
    if !table.has_families() {
        return encode_row(row);
    }
    let part: Vec<Value> = row
        .iter()
        .enumerate()
        .map(|(column, value)| if table.family_of(column) == 0 { value.clone() } else { Value::Null })
        .collect();
    encode_row(&part)
}

/// The value of declared family `family` of a row.
fn family_value(table: &Table, family: usize, row: &[Value]) -> Vec<u8> {
    let values: Vec<&Value> = table.families[family - 1].columns.iter().map(|&c| &row[c]).collect();
    let head = vec![FAMILY_VALUE_FORMAT, u8::try_from(family).expect("family ids fit a byte")];
    // Serialising plain enums into a Vec cannot fail.
    postcard::to_extend(&values, head).expect("family encoding is infallible")
}

/// Writes the families `families` of `row` under its key.
fn put_families(txn: &mut Transaction, table: &Table, key: &[u8], row: &[Value], families: FamilySet) -> Result<()> {
    if families & 1 != 0 {
        txn.put(key.to_vec(), primary_value(table, row))?;
    }
    for family in 1..=table.families.len() {
        if families & (1 << family) != 0 {
            txn.put(keys::family_key(key, family), family_value(table, family, row))?;
        }
    }
    Ok(())
}

/// Deletes the row at `key` and every family of it.
fn delete_families(txn: &mut Transaction, table: &Table, key: Vec<u8>) -> Result<()> {
    for family in 1..=table.families.len() {
        txn.delete(keys::family_key(&key, family))?;
    }
    txn.delete(key)?;
    Ok(())
}

/// Sets the columns a stored value holds in `row` (the table's width): a
/// whole row, a primary family's columns, or a declared family's.
pub fn overlay_stored(table: &Table, bytes: &[u8], row: &mut [Value]) -> Result<()> {
    if !is_family_value(bytes) {
        let stored = decode_stored_row(table, bytes)?;
        for (column, value) in stored.into_iter().enumerate() {
            if !table.has_families() || table.family_of(column) == 0 {
                row[column] = value;
            }
        }
        return Ok(());
    }
    let corrupt = || Error::Internal(format!("a column family value of \"{}\" is corrupt", table.name));
    let family = usize::from(*bytes.get(1).ok_or_else(corrupt)?);
    let columns = family.checked_sub(1).and_then(|i| table.families.get(i)).ok_or_else(corrupt)?;
    let values: Vec<Value> = postcard::from_bytes(&bytes[2..]).map_err(|_| corrupt())?;
    if values.len() != columns.columns.len() {
        return Err(corrupt());
    }
    for (&column, value) in columns.columns.iter().zip(values) {
        row[column] = value;
    }
    Ok(())
}

/// How a row's keys are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    Plain,
    /// `SELECT ... FOR UPDATE`: locked as if written.
    ForUpdate,
    /// The row an `UPDATE` or `DELETE` is about to write.
    ForWrite,
}

fn read_key(txn: &mut Transaction, key: &[u8], kind: ReadKind) -> Result<Option<Vec<u8>>> {
    Ok(match kind {
        ReadKind::Plain => txn.get(key)?,
        ReadKind::ForUpdate => txn.get_for_update(key)?,
        ReadKind::ForWrite => txn.get_for_write(key)?,
    })
}

/// Reads the row at `key`: for a table with column families, only the
/// families in `families` (columns of the others are NULL), so that a
/// transaction conflicts only with writers of what it read. `None` when the
/// row is not there.
///
/// The primary family says whether the row exists (with last writer
/// winning per key at the highly available levels, a delete racing an
/// update of another family can leave that family without its row, or the
/// row without that family: the first is no row, the second NULLs). It is
/// always read; with `kind` when the statement uses one of its columns or
/// none of another family's, else plainly, so that `FOR UPDATE` of one
/// family does not lock it.
pub fn read_row(
    txn: &mut Transaction,
    table: &Table,
    key: &[u8],
    families: FamilySet,
    kind: ReadKind,
) -> Result<Option<Vec<Value>>> {
    if !table.has_families() {
        return read_key(txn, key, kind)?.map(|bytes| decode_stored_row(table, &bytes)).transpose();
    }
    // A statement that uses no column of a declared family (`SELECT 1 ...
    // FOR UPDATE`, a joined table used by its key) locks the primary one.
    let declared = families & !1 & ((1 << (table.families.len() + 1)) - 1);
    let primary_kind = if families & 1 != 0 || declared == 0 { kind } else { ReadKind::Plain };
    let Some(bytes) = read_key(txn, key, primary_kind)? else {
        return Ok(None);
    };
    let mut row = vec![Value::Null; table.columns.len()];
    overlay_stored(table, &bytes, &mut row)?;
    for family in 1..=table.families.len() {
        if families & (1 << family) == 0 {
            continue;
        }
        if let Some(bytes) = read_key(txn, &keys::family_key(key, family), kind)? {
            overlay_stored(table, &bytes, &mut row)?;
        }
    }
    Ok(Some(row))
}

/// Checks `NOT NULL` columns of a row about to be written.
pub fn check_not_null(table: &Table, row: &[Value]) -> Result<()> {
    check_not_null_in(table, row, 0..row.len())
}

/// [`check_not_null`] of the columns `columns` alone (those an `UPDATE`
/// assigns).
pub fn check_not_null_in(table: &Table, row: &[Value], columns: impl IntoIterator<Item = usize>) -> Result<()> {
    for at in columns {
        let column = &table.columns[at];
        if column.not_null && row[at].is_null() {
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
    put_families(txn, table, &key, row, ALL_FAMILIES)?;
    for (entry, _) in entries {
        txn.put(entry, suffix.clone())?;
    }
    Ok(true)
}

fn conflict(skip: bool, constraint: String) -> Result<bool> {
    if skip { Ok(false) } else { Err(Error::UniqueViolation { constraint }) }
}

/// Replaces `old` by `new` (same table), moving the row if its primary key
/// changed and the index entries whose columns changed. Of a table with
/// column families only the families of the `assigned` columns are
/// written (all of them when the row moves), even where a value did not
/// change, so that `SET c = c` conflicts as a write of the row would; the
/// caller read every column it assigns, the columns of every index
/// holding one, and for a move every column.
pub fn update_row(
    txn: &mut Transaction,
    table: &Table,
    old: &[Value],
    new: &[Value],
    assigned: &[usize],
) -> Result<()> {
    let old_key = row_key(table, old);
    let new_key = row_key(table, new);
    let moved = old_key != new_key;
    if moved {
        if txn.get(&new_key)?.is_some() {
            return Err(Error::UniqueViolation { constraint: primary_key_name(table) });
        }
        delete_families(txn, table, old_key)?;
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
    let written =
        if moved || !table.has_families() { ALL_FAMILIES } else { table.families_of(assigned.iter().copied()) };
    put_families(txn, table, &new_key, new, written)?;
    Ok(())
}

/// Deletes a row and its index entries.
pub fn delete_row(txn: &mut Transaction, table: &Table, row: &[Value]) -> Result<()> {
    for index in &table.indexes {
        txn.delete(index_entry(table, index, row).0)?;
    }
    delete_families(txn, table, row_key(table, row))
}
