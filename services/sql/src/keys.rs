//! Key layout: where the SQL layer puts catalog entries, rows and index
//! entries in the transaction's key space, and so which shard holds them
//! (`routing`).
//!
//! ```text
//!   0x01 'v'                                  catalog version token                 system shard
//!   0x01 'n'                                  next table id (u32, big-endian)
//!   0x01 't' <table name>                     table definition (postcard)
//!   0x01 'u' <user name>                      a user: password verifier, admin, grants
//!   0x01 'h' <keycode(locality key)>          the home of a locality key (txn::Home)
//!   0x02 <table id u32> <index id u32> <keycode(primary key)>      → encode_row(row)         home shard of the
//!   0x02 <table id u32> <index id u32> <keycode(primary key)> 0xF0 <f>  → family f of the row    (the same)
//!   0x02 <table id u32> <index id u32> <keycode(index columns)> ...                           locality key: the
//!                                                                                            first value
//!   0x03 <table id u32> <index id u32> ...    global tables' rows and entries; the entries   global shard
//!                                             of global indexes (below)
//!   0x05 <shard id u64>                       the shard's schema guard: the catalog version  that shard
//!                                             token of the last DDL
//!   0x06 <keycode(locality key)>              the locality key's residence record (R18:      each home shard
//!                                             where it lives, from which epoch; written by    it lived at
//!                                             rehomes, txn::protocol::Residence)
//! ```
//!
//! Index entries: `<keycode(index columns)>` → `keycode(primary key)` for a
//! unique index, `<keycode(index columns)> <keycode(primary key)>` →
//! `keycode(primary key)` otherwise (and for unique entries holding a NULL).
//!
//! Where an index of a `home` table lives: one whose first column is the
//! locality key lives with its rows (`0x02`, the same shard: a
//! single-home transaction stays on one shard). Any other index is a
//! *global index* (`0x03`, the global shard): a lookup by it is one read,
//! and a unique one is unique across every home; writing it costs a
//! commit at the global shard.
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
//! A home table row's first primary-key component, right after the 9-byte
//! prefix, is its locality key; so is a colocated index entry's first
//! component.

use geodb_storage::{Value, keycode};

use crate::catalog::{Index, Locality, Table};

/// First byte of every catalog key.
pub const CATALOG_SPACE: u8 = 0x01;
/// First byte of the rows and colocated index entries of `home` tables.
pub const TABLE_SPACE: u8 = 0x02;
/// First byte of `global` tables' keys and of global indexes' entries.
pub const GLOBAL_SPACE: u8 = 0x03;
/// First byte of the shards' schema guards.
pub const GUARD_SPACE: u8 = 0x05;

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
/// Prefix of users (`access::User`, postcard): between the tables and the
/// version token, so that one scan loads tables, users and token.
pub const CATALOG_USERS_PREFIX: &[u8] = &[CATALOG_SPACE, b'u'];

/// The key of user `name`.
pub fn catalog_user_key(name: &str) -> Vec<u8> {
    let mut key = CATALOG_USERS_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

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

/// Length of `space, table id, index id`.
pub const INDEX_PREFIX_LEN: usize = 9;

/// Prefix of the directory of homes.
pub const CATALOG_HOMES_PREFIX: &[u8] = &[CATALOG_SPACE, b'h'];

/// The directory entry of a locality key (its encoded bytes).
pub fn home_key(locality: &[u8]) -> Vec<u8> {
    let mut key = CATALOG_HOMES_PREFIX.to_vec();
    key.extend_from_slice(locality);
    key
}

/// First byte of the residence records of rehomed locality keys.
pub const RESIDENCE_SPACE: u8 = 0x06;

/// The residence record of a locality key (its encoded bytes) at a home
/// shard (R18).
pub fn residence_key(locality: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + locality.len());
    key.push(RESIDENCE_SPACE);
    key.extend_from_slice(locality);
    key
}

/// The schema guard of a shard.
pub fn guard_key(shard: u64) -> Vec<u8> {
    let mut key = vec![GUARD_SPACE];
    key.extend_from_slice(&shard.to_be_bytes());
    key
}

/// The space an index of `table` lives in (`None`: its rows; see the
/// module documentation).
pub fn space_of(table: &Table, index: Option<&Index>) -> u8 {
    match (table.locality, index) {
        (Locality::Global, _) => GLOBAL_SPACE,
        (Locality::Home, None) => TABLE_SPACE,
        (Locality::Home, Some(index)) if index.columns.first() == table.primary_key.first() => TABLE_SPACE,
        (Locality::Home, Some(_)) => GLOBAL_SPACE,
    }
}

/// Key of a table definition.
pub fn catalog_table_key(name: &str) -> Vec<u8> {
    let mut key = CATALOG_TABLES_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// Prefix of every key of one index of a table: `None` for its rows (the
/// primary index).
pub fn index_prefix(table: &Table, index: Option<&Index>) -> Vec<u8> {
    let mut key = Vec::with_capacity(64);
    key.push(space_of(table, index));
    key.extend_from_slice(&table.id.to_be_bytes());
    key.extend_from_slice(&index.map_or(PRIMARY_INDEX_ID, |index| index.id).to_be_bytes());
    key
}

/// Appends the keycode of each value.
pub fn append_values<'a>(key: &mut Vec<u8>, values: impl IntoIterator<Item = &'a Value>) {
    for value in values {
        keycode::encode_value(key, value);
    }
}

/// The byte after a row's key that starts the key of one of its declared
/// column families (`WITH (family_<name> = ...)`): `<row key> 0xF0 <f>`.
/// The primary-key encoding is prefix-free, so no other row's key starts
/// with it, and a row's families sort right after the row's own key.
pub const FAMILY_MARK: u8 = 0xF0;

/// The key of family `family` (1 and up) of the row at `row_key`.
pub fn family_key(row_key: &[u8], family: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(row_key.len() + 2);
    key.extend_from_slice(row_key);
    key.push(FAMILY_MARK);
    key.push(u8::try_from(family).expect("family ids fit a byte (FAMILIES_MAX)"));
    key
}

/// The key of a row from its primary-key suffix (an index entry's value).
pub fn row_key_from_suffix(table: &Table, suffix: &[u8]) -> Vec<u8> {
    let mut key = index_prefix(table, None);
    key.extend_from_slice(suffix);
    key
}
