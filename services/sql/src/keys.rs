//! Key layout: where the SQL layer puts catalog entries, rows and index
//! entries in the transaction's key space.
//!
//! ```text
//!   0x01 'v'                                  catalog version token
//!   0x01 'n'                                  next table id (u32, big-endian)
//!   0x01 't' <table name>                     table definition (postcard)
//!   0x02 <table id u32> <index id u32> <keycode(primary key)>      → encode_row(row)
//!   0x02 <table id u32> <index id u32> <keycode(index columns)>    → keycode(primary key)   (unique index)
//!   0x02 <table id u32> <index id u32> <keycode(index columns)> <keycode(primary key)> → keycode(primary key)
//! ```
//!
//! Ids are fixed-width big-endian, so all keys of one table (and of one
//! index) are one contiguous range, and within an index byte order is value
//! order ([`geodb_storage::keycode`]). The primary index is
//! [`PRIMARY_INDEX_ID`]; secondary indexes count up from
//! [`FIRST_SECONDARY_INDEX_ID`].
//!
//! A unique index entry is keyed by its columns alone, so a duplicate is a
//! point read away. Entries whose indexed values include a NULL also carry
//! the primary key (NULLs never collide, as in PostgreSQL); non-unique
//! entries always do. Every entry's value is the primary-key suffix of its
//! row's key.
//!
//! The catalog space (0x01) sorts before every table, so a geo layer can
//! place it in its own (global) range; a table row's first primary-key
//! component, right after the 9-byte prefix, is its locality key.

use geodb_storage::{Value, keycode};

/// First byte of every catalog key.
pub const CATALOG_SPACE: u8 = 0x01;
/// First byte of every row and index entry key.
pub const TABLE_SPACE: u8 = 0x02;

/// Index id of a table's rows (the primary key).
pub const PRIMARY_INDEX_ID: u32 = 1;
/// Index id of the first secondary index of a table.
pub const FIRST_SECONDARY_INDEX_ID: u32 = 2;

/// Key of the catalog version token.
pub const CATALOG_VERSION_KEY: &[u8] = &[CATALOG_SPACE, b'v'];
/// Key of the next table id counter.
pub const CATALOG_NEXT_TABLE_KEY: &[u8] = &[CATALOG_SPACE, b'n'];
/// Prefix of table definitions.
pub const CATALOG_TABLES_PREFIX: &[u8] = &[CATALOG_SPACE, b't'];
/// Prefix of the record of each dropped table (`d` + table id): rows of a
/// dropped table stay on disk, unreachable (table ids are never reused),
/// until version garbage collection purges the table's key prefix.
pub const CATALOG_DROPPED_PREFIX: &[u8] = &[CATALOG_SPACE, b'd'];

/// The record of a dropped table.
pub fn catalog_dropped_key(table_id: u32) -> Vec<u8> {
    let mut key = CATALOG_DROPPED_PREFIX.to_vec();
    key.extend_from_slice(&table_id.to_be_bytes());
    key
}

/// Length of `TABLE_SPACE, table id, index id`.
pub const INDEX_PREFIX_LEN: usize = 9;

/// Key of a table definition.
pub fn catalog_table_key(name: &str) -> Vec<u8> {
    let mut key = CATALOG_TABLES_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// Prefix of every key of a table (rows and index entries).
pub fn table_prefix(table_id: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(INDEX_PREFIX_LEN);
    key.push(TABLE_SPACE);
    key.extend_from_slice(&table_id.to_be_bytes());
    key
}

/// Prefix of every key of one index of a table (the primary index holds
/// the rows).
pub fn index_prefix(table_id: u32, index_id: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(64);
    key.push(TABLE_SPACE);
    key.extend_from_slice(&table_id.to_be_bytes());
    key.extend_from_slice(&index_id.to_be_bytes());
    key
}

/// Appends the keycode of each value.
pub fn append_values<'a>(key: &mut Vec<u8>, values: impl IntoIterator<Item = &'a Value>) {
    for value in values {
        keycode::encode_value(key, value);
    }
}

/// The key of a row from its primary-key suffix (an index entry's value).
pub fn row_key_from_suffix(table_id: u32, suffix: &[u8]) -> Vec<u8> {
    let mut key = index_prefix(table_id, PRIMARY_INDEX_ID);
    key.extend_from_slice(suffix);
    key
}
