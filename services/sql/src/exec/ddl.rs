//! Running DDL inside the caller's transaction.
//!
//! Each DDL writes the changed table definition and a new catalog version
//! token ([`CatalogCache::change`]); `DROP TABLE` deletes the table's rows
//! and index entries, `CREATE INDEX` backfills the index from the rows
//! (a unique index fails with 23505 on the first duplicate), `DROP INDEX`
//! deletes the entries.

use std::ops::Bound;

use geodb_storage::keycode;
use geodb_txn::Transaction;

use crate::catalog::ALL_FAMILIES;
use crate::catalog::{Catalog, CatalogCache, Index, Table};
use crate::error::{Error, Result};
use crate::exec::StatementResult;
use crate::exec::rows::{ReadKind, decode_stored_row, index_entry, is_family_value, read_row};
use crate::keys;
use crate::limits::SCAN_BATCH_ROWS;
use crate::plan::{CreateIndexPlan, CreateTablePlan, StatementKind};

fn done() -> StatementResult {
    StatementResult::affected(StatementKind::Ddl, 0)
}

pub fn create_table(
    cache: &CatalogCache,
    catalog: &Catalog,
    txn: &mut Transaction,
    plan: &CreateTablePlan,
) -> Result<StatementResult> {
    if catalog.relation_exists(&plan.name) {
        return if plan.if_not_exists { Ok(done()) } else { Err(Error::DuplicateTable(plan.name.clone())) };
    }
    let table = Table {
        id: crate::catalog::allocate_table_id(txn)?,
        name: plan.name.clone(),
        columns: plan.columns.clone(),
        primary_key: plan.primary_key.clone(),
        locality: plan.locality,
        indexes: Vec::new(),
        next_index_id: keys::FIRST_SECONDARY_INDEX_ID,
        families: plan.families.clone(),
    };
    cache.change(txn, catalog, &plan.name, Some(table))?;
    Ok(done())
}

pub fn drop_table(
    cache: &CatalogCache,
    catalog: &Catalog,
    txn: &mut Transaction,
    name: &str,
    if_exists: bool,
) -> Result<StatementResult> {
    let Some(table) = catalog.get_table(name) else {
        return if if_exists { Ok(done()) } else { Err(Error::UndefinedTable(name.to_string())) };
    };
    // Dropping is a catalog change only, so that it takes the same time
    // for ten rows or ten million and buffers nothing: the rows become
    // unreachable (every read goes through a live table's id, and ids are
    // never reused), and the dropped-table record names the key prefix for
    // garbage collection to purge.
    txn.put(keys::catalog_dropped_key(table.id), Vec::new())?;
    cache.change(txn, catalog, name, None)?;
    Ok(done())
}

pub fn create_index(
    cache: &CatalogCache,
    catalog: &Catalog,
    txn: &mut Transaction,
    plan: &CreateIndexPlan,
) -> Result<StatementResult> {
    if catalog.relation_exists(&plan.name) {
        return if plan.if_not_exists { Ok(done()) } else { Err(Error::DuplicateIndex(plan.name.clone())) };
    }
    let mut table: Table = catalog.table(&plan.table)?.as_ref().clone();
    let mut columns = Vec::with_capacity(plan.columns.len());
    for name in &plan.columns {
        let pos = table.column_index(name).ok_or_else(|| Error::UndefinedColumn(name.clone()))?;
        if columns.contains(&pos) {
            return Err(Error::DuplicateColumn(name.clone()));
        }
        columns.push(pos);
    }
    let index = Index { id: table.next_index_id, name: plan.name.clone(), columns, unique: plan.unique };
    table.next_index_id += 1;

    // Backfill from the rows, in key order.
    let rows = keys::index_prefix(&table, None);
    for_each_pair(txn, rows, &mut |txn, key, value| {
        let row = if !table.has_families() {
            decode_stored_row(&table, &value)?
        } else if is_family_value(&value) {
            return Ok(()); // read with its row's primary value
        } else {
            read_row(txn, &table, &key, ALL_FAMILIES, ReadKind::Plain)?.ok_or_else(|| missing_family(&table))?
        };
        let (entry, unique_key) = index_entry(&table, &index, &row);
        if unique_key && txn.get(&entry)?.is_some() {
            return Err(Error::UniqueViolation { constraint: index.name.clone() });
        }
        let mut suffix = Vec::new();
        keys::append_values(&mut suffix, table.primary_key.iter().map(|&c| &row[c]));
        txn.put(entry, suffix)?;
        Ok(())
    })?;
    table.indexes.push(index);
    let name = table.name.clone();
    cache.change(txn, catalog, &name, Some(table))?;
    Ok(done())
}

pub fn drop_index(
    cache: &CatalogCache,
    catalog: &Catalog,
    txn: &mut Transaction,
    name: &str,
    if_exists: bool,
) -> Result<StatementResult> {
    let Some((table, position)) = catalog.find_index(name) else {
        return if if_exists { Ok(done()) } else { Err(Error::UndefinedIndex(name.to_string())) };
    };
    let mut table: Table = table.as_ref().clone();
    let index = table.indexes.remove(position);
    delete_range(txn, keys::index_prefix(&table, Some(&index)))?;
    let table_name = table.name.clone();
    cache.change(txn, catalog, &table_name, Some(table))?;
    Ok(done())
}

fn missing_family(table: &Table) -> Error {
    Error::Internal(format!("a row of \"{}\" lacks one of its column families", table.name))
}

/// Deletes every key starting with `prefix`.
fn delete_range(txn: &mut Transaction, prefix: Vec<u8>) -> Result<()> {
    for_each_pair(txn, prefix, &mut |txn, key, _| {
        txn.delete(key)?;
        Ok(())
    })
}

/// What [`for_each_pair`] calls with each (key, value).
type PairVisitor<'a> = dyn FnMut(&mut Transaction, Vec<u8>, Vec<u8>) -> Result<()> + 'a;

/// Calls `f` with every pair whose key starts with `prefix`, in batches.
fn for_each_pair(txn: &mut Transaction, prefix: Vec<u8>, f: &mut PairVisitor<'_>) -> Result<()> {
    let end = keycode::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    let mut start = Bound::Included(prefix);
    loop {
        let pairs = txn.scan(start.clone(), end.clone(), false, Some(SCAN_BATCH_ROWS))?;
        let full = pairs.len() == SCAN_BATCH_ROWS;
        let mut last = None;
        for (key, value) in pairs {
            last = Some(key.clone());
            f(txn, key, value)?;
        }
        match last {
            Some(last) if full => start = Bound::Excluded(last),
            _ => return Ok(()),
        }
    }
}
