//! Backups and restores in SQL's terms (`docs/design/storage.md`,
//! "Backup and restore"): what a backup reads at its snapshot, and the
//! statements a restore runs. The server writes and reads the files
//! (`services/server/src/backup.rs`); this crate does no I/O.
//!
//! A backup is logical: the tables' definitions, as the DDL that makes
//! them again; every table's rows, as stored (their encoded values, in
//! primary-key order); and the directory of homes, each locality key with
//! its home region. Index entries, table ids, schema guards, residence
//! records and epochs are not in it: a restore makes them afresh, by
//! running the DDL, homing each key in its region and inserting the rows
//! through the SQL layer, which writes every index entry as any insert
//! does.

use std::ops::Bound;
use std::sync::Arc;

use geodb_storage::value::encode_row;
use geodb_storage::{DataType, Value, keycode};
use geodb_txn::{Home, Isolation, Transaction, TxnManager};
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::catalog::{ALL_FAMILIES, Catalog, Column, Locality, Table};
use crate::error::{Error, Result};
use crate::exec::rows::{ReadKind, is_family_value, read_row};
use crate::keys;
use crate::plan::ddl;

/// The tables `txn` sees (read exactly, at its snapshot), by name.
pub fn tables_at(txn: &mut Transaction) -> Result<Vec<Arc<Table>>> {
    let catalog = Catalog::load(txn, 0, true)?;
    let mut tables: Vec<Arc<Table>> = catalog.tables().cloned().collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tables)
}

/// A page of a table's rows read for a backup.
pub struct RowsPage {
    /// Each row's key and its value as one stored row (a table with column
    /// families: its families put together, [`row_values`] reads it).
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// The last key read, to go on after; `None` when the table ended.
    pub next: Option<Vec<u8>>,
}

/// Up to about `limit` rows of `table` after the key `after` (from the
/// first when `None`), in key order.
pub fn rows_after(txn: &mut Transaction, table: &Table, after: Option<&[u8]>, limit: usize) -> Result<RowsPage> {
    let prefix = keys::index_prefix(table, None);
    let end = keycode::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    let start = match after {
        Some(key) => Bound::Excluded(key.to_vec()),
        None => Bound::Included(prefix),
    };
    let pairs = txn.scan(start, end, false, Some(limit))?;
    let next = if pairs.len() == limit { pairs.last().map(|(key, _)| key.clone()) } else { None };
    if !table.has_families() {
        return Ok(RowsPage { rows: pairs, next });
    }
    let mut rows = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        if is_family_value(&value) {
            continue; // read with its row's primary value
        }
        let row = read_row(txn, table, &key, ALL_FAMILIES, ReadKind::Plain)?
            .ok_or_else(|| Error::Internal(format!("a row of \"{}\" lacks one of its column families", table.name)))?;
        rows.push((key, encode_row(&row)));
    }
    Ok(RowsPage { rows, next })
}

/// One entry of the directory of homes.
#[derive(Clone, Debug, PartialEq)]
pub struct HomeEntry {
    /// The entry's key (to go on from, [`homes_after`]).
    pub key: Vec<u8>,
    /// The locality key's value.
    pub locality: Value,
    pub home: Home,
}

/// Up to `limit` entries of the directory of homes after the one keyed
/// `after` (from the first when `None`), in key order.
pub fn homes_after(txn: &mut Transaction, after: Option<&[u8]>, limit: usize) -> Result<Vec<HomeEntry>> {
    let prefix = keys::CATALOG_HOMES_PREFIX.to_vec();
    let end = keycode::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    let start = match after {
        Some(key) => Bound::Excluded(key.to_vec()),
        None => Bound::Included(prefix),
    };
    let corrupt = |what: String| Error::Internal(format!("a directory entry with {what}"));
    let mut entries = Vec::new();
    for (key, value) in txn.scan(start, end, false, Some(limit))? {
        let mut locality = &key[keys::CATALOG_HOMES_PREFIX.len()..];
        let value_of_key = keycode::decode_value(&mut locality).map_err(|e| corrupt(format!("a corrupt key: {e}")))?;
        if !locality.is_empty() {
            return Err(corrupt("bytes after its locality key".into()));
        }
        let home = Home::decode(&value).ok_or_else(|| corrupt("a corrupt home".into()))?;
        entries.push(HomeEntry { key, locality: value_of_key, home });
    }
    Ok(entries)
}

/// `name` as a quoted SQL identifier (its case kept; `"` doubled).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The DDL that makes `table` again in an empty database: its `CREATE
/// TABLE`, then a `CREATE [UNIQUE] INDEX` for each secondary index.
pub fn create_statements(table: &Table) -> Vec<String> {
    let mut parts: Vec<String> = table
        .columns
        .iter()
        .map(|column| {
            let not_null = if column.not_null { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", quoted(&column.name), column.ty.sql_name())
        })
        .collect();
    let key: Vec<String> = table.primary_key.iter().map(|&at| quoted(&table.columns[at].name)).collect();
    parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
    let mut options = Vec::new();
    if table.locality == Locality::Global {
        options.push("locality = 'global'".to_string());
    }
    for family in &table.families {
        let columns: Vec<&str> = family.columns.iter().map(|&at| table.columns[at].name.as_str()).collect();
        options.push(format!("family_{} = '{}'", family.name, columns.join(", ").replace('\'', "''")));
    }
    let with = if options.is_empty() { String::new() } else { format!(" WITH ({})", options.join(", ")) };
    let mut statements = vec![format!("CREATE TABLE {} ({}){with}", quoted(&table.name), parts.join(", "))];
    for index in &table.indexes {
        let columns: Vec<String> = index.columns.iter().map(|&at| quoted(&table.columns[at].name)).collect();
        let unique = if index.unique { "UNIQUE " } else { "" };
        statements.push(format!(
            "CREATE {unique}INDEX {} ON {} ({})",
            quoted(&index.name),
            quoted(&table.name),
            columns.join(", ")
        ));
    }
    statements
}

/// The statement that inserts one row of `table`, its values as the
/// parameters `$1..$n` in column order.
pub fn insert_statement(table: &Table) -> String {
    let params: Vec<String> = (1..=table.columns.len()).map(|n| format!("${n}")).collect();
    format!("INSERT INTO {} VALUES ({})", quoted(&table.name), params.join(", "))
}

/// The values of a row of `table` from its stored bytes, checked to be as
/// many as its columns.
pub fn row_values(table: &Table, bytes: &[u8]) -> Result<Vec<Value>> {
    crate::exec::rows::decode_stored_row(table, bytes)
}

/// What a backup's DDL for one table makes: its columns and locality.
#[derive(Debug)]
pub struct Made {
    pub columns: Vec<Column>,
    pub locality: Locality,
}

/// Checks the DDL a backup names for `table` before a restore runs any of
/// it: a `CREATE TABLE` of `table` first, then only `CREATE [UNIQUE] INDEX
/// ... ON` `table`, on columns it has, with names not used before (by
/// this table or, through `names`, by an earlier table or index). Answers
/// what the `CREATE TABLE` makes, to check the rows against.
pub fn check_ddl(table: &str, statements: &[String], names: &mut std::collections::HashSet<String>) -> Result<Made> {
    let refuse =
        |what: String| Err(Error::InvalidParameterValue(format!("the backup's DDL for table \"{table}\" {what}")));
    let mut made: Option<Made> = None;
    for sql in statements {
        let mut parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql)?;
        let statement = match (parsed.len(), parsed.pop()) {
            (1, Some(statement)) => statement,
            _ => return refuse(format!("holds {sql:?}, not one statement")),
        };
        let name = match (&made, statement) {
            (None, Statement::CreateTable(create)) => {
                let plan = ddl::plan_create_table(&create)?;
                if plan.name != table || plan.if_not_exists {
                    return refuse(format!("makes another table: {sql:?}"));
                }
                made = Some(Made { columns: plan.columns, locality: plan.locality });
                plan.name
            }
            (Some(made), Statement::CreateIndex(create)) => {
                let plan = ddl::plan_create_index(&create)?;
                if plan.table != table || plan.if_not_exists {
                    return refuse(format!("indexes another table: {sql:?}"));
                }
                if let Some(missing) =
                    plan.columns.iter().find(|column| !made.columns.iter().any(|known| &known.name == *column))
                {
                    return refuse(format!("indexes a column it lacks, \"{missing}\": {sql:?}"));
                }
                plan.name
            }
            _ => return refuse(format!("holds {sql:?}: only its CREATE TABLE, then CREATE INDEX statements")),
        };
        if !names.insert(name.clone()) {
            return refuse(format!("names \"{name}\" again"));
        }
    }
    made.map_or_else(|| refuse("is empty".into()), Ok)
}

/// Checks that `values` (a row from a backup) fit `columns`: as many, of
/// their types, NULL only where allowed. The insert checks more (lengths,
/// precision); this catches a damaged or mismatched file before a
/// restore writes anything.
pub fn check_row(columns: &[Column], values: &[Value]) -> std::result::Result<(), String> {
    if values.len() != columns.len() {
        return Err(format!("a row of {} values for {} columns", values.len(), columns.len()));
    }
    for (column, value) in columns.iter().zip(values) {
        let fits = match (value, &column.ty) {
            (Value::Null, _) => !column.not_null,
            (Value::Int(_), ty) => ty.is_integer(),
            (Value::Decimal(_), DataType::Decimal { .. }) => true,
            (Value::Float(_), DataType::Real | DataType::Double) => true,
            (Value::Text(_), DataType::Char(_) | DataType::Varchar(_) | DataType::Text) => true,
            (Value::Bool(_), DataType::Bool) => true,
            (Value::Timestamp(_), DataType::Timestamp) => true,
            _ => false,
        };
        if !fits {
            return Err(format!("a value {value:?} for column \"{}\" of type {}", column.name, column.ty.sql_name()));
        }
    }
    Ok(())
}

/// Gives each locality key of `homes` (with its region's index) its home,
/// as the first write of a key does, in serializable transactions of up
/// to `batch` keys; a key that has one already must have that region
/// (else the restore stops). Each transaction reads the directory over
/// the range of its keys in one scan, so a concurrent first write of one
/// of them makes it fail with `40001`, and running this again skips what
/// is done. Adds the keys it homed to `homed` as each transaction commits.
pub fn home_keys(txns: &Arc<TxnManager>, homes: &[(Value, u32)], batch: usize, homed: &mut u64) -> Result<()> {
    let mut entries: Vec<(Vec<u8>, &Value, u32)> = homes
        .iter()
        .map(|(key, region)| {
            let mut locality = Vec::new();
            keycode::encode_value(&mut locality, key);
            (keys::home_key(&locality), key, *region)
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for chunk in entries.chunks(batch.max(1)) {
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else { continue };
        let mut txn = txns.begin(Isolation::Serializable)?;
        let existing: std::collections::HashMap<Vec<u8>, Vec<u8>> = txn
            .scan(Bound::Included(first.0.clone()), Bound::Included(last.0.clone()), false, None)?
            .into_iter()
            .collect();
        let mut writes = 0;
        for (entry, key, region) in chunk {
            match existing.get(entry).map(|bytes| Home::decode(bytes)) {
                None => {
                    txn.put(entry.clone(), Home { region: *region, epoch: geodb_txn::FIRST_EPOCH }.encode())?;
                    writes += 1;
                }
                Some(Some(home)) if home.region == *region => {}
                Some(_) => {
                    return Err(Error::InvalidParameterValue(format!(
                        "locality key {key:?} already has another home than the backup's"
                    )));
                }
            }
        }
        txn.commit()?;
        *homed += writes;
    }
    Ok(())
}
