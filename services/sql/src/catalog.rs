//! The catalog: tables, their columns, primary keys, indexes and locality.
//!
//! The catalog is stored in the same transactional key space as the data
//! (under [`keys::CATALOG_SPACE`]) and changed only by DDL, inside the
//! caller's transaction, so DDL is transactional: a rolled-back `CREATE
//! TABLE` never existed, and a committed one is seen by every later
//! transaction on every node.
//!
//! Every DDL writes a fresh *version token* (a counter and the writing
//! transaction's id) under [`keys::CATALOG_VERSION_KEY`] in the system
//! shard, and the same token into every shard's schema guard
//! ([`keys::guard_key`]): a DDL is a transaction across every shard. Each
//! statement looks up the token at this node's replica of the system shard
//! (a local read outside the transaction: ordinary statements never reach
//! the system shard's leader) and compares it with the token of the
//! in-memory [`Catalog`]; only when they differ is the catalog reloaded
//! from that replica. The transaction carries the token it planned with,
//! and every shard it writes checks it against its guard at commit, at
//! every isolation level: a transaction planned on a catalog that a DDL
//! replaced fails with 40001 instead of writing with a stale schema (a
//! missed index entry, say), and its retry plans afresh. A transaction
//! that changes the schema plans its later statements on its own catalog.
//!
//! Users and their privileges live in the catalog too (`crate::access`):
//! loaded by the same scan, changed by [`CatalogCache::change_user`] with
//! a new version token like DDL.
//!
//! Each loaded catalog gets a process-unique [`Catalog::generation`]; the
//! statement cache keeps plans only for the generation they were made in.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use geodb_storage::DataType;
use geodb_txn::Transaction;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys;

/// One column of a table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: DataType,
    /// `NOT NULL` (implied for primary-key columns).
    pub not_null: bool,
}

/// Where a table's rows live (API.md, "SQL surface").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Locality {
    /// Rows live in the home region of their locality key (the first
    /// primary-key column).
    Home,
    /// Read locally everywhere, written rarely.
    Global,
}

impl Locality {
    pub fn name(self) -> &'static str {
        match self {
            Locality::Home => "home",
            Locality::Global => "global",
        }
    }
}

/// A secondary index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Index {
    pub id: u32,
    pub name: String,
    /// Positions of the indexed columns in the table.
    pub columns: Vec<usize>,
    pub unique: bool,
}

/// A column family: columns of a table stored under a key of their own
/// beside the row's key, so that transactions touching different families
/// of one row do not conflict (`docs/design/storage.md`, "Column families").
/// Family 0, the primary family, is implicit: every column not named by a
/// declared family, and the row's existence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    pub name: String,
    /// Positions of the family's columns in the table (none of the primary
    /// key), in table order.
    pub columns: Vec<usize>,
}

/// The families a statement reads of a row: bit `f` for family `f`.
pub type FamilySet = u64;

/// Every family of any table.
pub const ALL_FAMILIES: FamilySet = FamilySet::MAX;

/// Declared families per table, at most (family ids fit a key byte and a
/// [`FamilySet`] bit, with the primary family).
pub const FAMILIES_MAX: usize = 15;

/// A table definition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Table {
    pub id: u32,
    pub name: String,
    pub columns: Vec<Column>,
    /// Positions of the primary-key columns, in key order.
    pub primary_key: Vec<usize>,
    pub locality: Locality,
    pub indexes: Vec<Index>,
    pub next_index_id: u32,
    /// Declared column families (family `i + 1`); empty for a table stored
    /// as one value per row.
    pub families: Vec<Family>,
}

impl Table {
    /// Position of a column by (normalised) name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The locality key column (the first primary-key column).
    pub fn locality_column(&self) -> &Column {
        &self.columns[self.primary_key[0]]
    }

    pub fn index_by_name(&self, name: &str) -> Option<usize> {
        self.indexes.iter().position(|i| i.name == name)
    }

    /// The family a column is stored in (0, the primary family, for the
    /// primary key and every column no declared family names).
    pub fn family_of(&self, column: usize) -> usize {
        self.families.iter().position(|f| f.columns.contains(&column)).map_or(0, |i| i + 1)
    }

    /// The families holding any of `columns`.
    pub fn families_of(&self, columns: impl IntoIterator<Item = usize>) -> FamilySet {
        columns.into_iter().fold(0, |set, column| set | 1 << self.family_of(column))
    }

    /// Whether a row of this table is stored as more than one value.
    pub fn has_families(&self) -> bool {
        !self.families.is_empty()
    }
}

/// Format byte of a stored table definition without column families (as
/// every version wrote it before families existed, so that a table that
/// declares none reads the same on every node).
const TABLE_FORMAT_V1: u8 = 1;
/// Format byte of a definition with column families.
const TABLE_FORMAT_V2: u8 = 2;

/// A definition as [`TABLE_FORMAT_V1`] stores it: [`Table`] without
/// families.
#[derive(Serialize)]
struct TableV1<'a> {
    id: u32,
    name: &'a str,
    columns: &'a [Column],
    primary_key: &'a [usize],
    locality: Locality,
    indexes: &'a [Index],
    next_index_id: u32,
}

#[derive(Deserialize)]
struct StoredTableV1 {
    id: u32,
    name: String,
    columns: Vec<Column>,
    primary_key: Vec<usize>,
    locality: Locality,
    indexes: Vec<Index>,
    next_index_id: u32,
}

/// The set of tables as one transaction sees it.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: HashMap<String, Arc<Table>>,
    users: HashMap<String, Arc<crate::access::User>>,
    /// The stored version token this catalog was loaded at (empty for a
    /// store that never saw DDL).
    pub token: Vec<u8>,
    /// Process-unique id of this in-memory catalog.
    pub generation: u64,
    /// The transaction whose uncommitted DDL made this catalog, if any:
    /// only it plans against it.
    pub owner: Option<geodb_txn::TxnId>,
}

/// The DDL counter of a version token (tokens of committed DDLs strictly
/// increase in it).
fn token_counter(token: &[u8]) -> u64 {
    token.get(..8).and_then(|bytes| bytes.try_into().ok()).map_or(0, u64::from_be_bytes)
}

impl Catalog {
    pub fn table(&self, name: &str) -> Result<&Arc<Table>> {
        self.tables.get(name).ok_or_else(|| Error::UndefinedTable(name.to_string()))
    }

    pub fn get_table(&self, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(name)
    }

    pub fn tables(&self) -> impl Iterator<Item = &Arc<Table>> {
        self.tables.values()
    }

    /// A stored user (`root` is stored only once given a password: see
    /// [`crate::access::user`], which knows it either way).
    pub fn get_user(&self, name: &str) -> Option<&Arc<crate::access::User>> {
        self.users.get(name)
    }

    /// The stored users, in no order.
    pub fn users(&self) -> impl Iterator<Item = &Arc<crate::access::User>> {
        self.users.values()
    }

    /// The table holding the index called `name`, and the index position.
    pub fn find_index(&self, name: &str) -> Option<(&Arc<Table>, usize)> {
        self.tables.values().find_map(|t| t.index_by_name(name).map(|i| (t, i)))
    }

    /// Whether any relation (table or index) is called `name`: PostgreSQL
    /// keeps tables and indexes in one namespace.
    pub fn relation_exists(&self, name: &str) -> bool {
        self.tables.contains_key(name) || self.find_index(name).is_some()
    }

    /// Loads the catalog from this node's replica of the system shard
    /// (see [`CatalogCache::for_transaction`]), or through `txn` itself
    /// (`exact`: its snapshot, at the shard's leader). The tables and the
    /// version token come from one scan (the token key follows the tables'
    /// keys), so the token always names the tables loaded with it.
    pub fn load(txn: &mut Transaction, generation: u64, exact: bool) -> Result<Catalog> {
        let start = keys::CATALOG_TABLES_PREFIX.to_vec();
        debug_assert!(keys::CATALOG_VERSION_KEY > keys::CATALOG_TABLES_PREFIX);
        let end = Bound::Included(keys::CATALOG_VERSION_KEY.to_vec());
        let mut tables = HashMap::new();
        let mut users = HashMap::new();
        // Every table's definition in one read: not a brief one on a
        // schema of many tables (`geodb_storage::wait`).
        let pairs = geodb_storage::wait::blocking(|| {
            if exact {
                txn.scan(Bound::Included(start), end, false, None)
            } else {
                txn.peek_replica_scan((Bound::Included(start), end))
            }
        })?;
        let mut token = Vec::new();
        for (key, value) in pairs {
            if key == keys::CATALOG_VERSION_KEY {
                token = value;
                continue;
            }
            if key.starts_with(keys::CATALOG_USERS_PREFIX) {
                let user = crate::access::decode_user(&value)?;
                if key != keys::catalog_user_key(&user.name) {
                    return Err(Error::Internal(format!("user \"{}\" is under the wrong key", user.name)));
                }
                users.insert(user.name.clone(), Arc::new(user));
                continue;
            }
            if !key.starts_with(keys::CATALOG_TABLES_PREFIX) {
                continue;
            }
            let table = decode_table(&value)?;
            if key != keys::catalog_table_key(&table.name) {
                return Err(Error::Internal(format!("catalog entry for \"{}\" is under the wrong key", table.name)));
            }
            tables.insert(table.name.clone(), Arc::new(table));
        }
        Ok(Catalog { tables, users, token, generation, owner: None })
    }

    pub(crate) fn clone_shallow(&self) -> Catalog {
        Catalog {
            tables: self.tables.clone(),
            users: self.users.clone(),
            token: self.token.clone(),
            generation: self.generation,
            owner: self.owner,
        }
    }

    /// A copy of this catalog with `table` added or replaced, at a new
    /// token and generation.
    pub fn with_table(&self, table: Table, token: Vec<u8>, generation: u64) -> Catalog {
        let mut tables = self.tables.clone();
        tables.insert(table.name.clone(), Arc::new(table));
        Catalog { tables, users: self.users.clone(), token, generation, owner: self.owner }
    }

    /// A copy of this catalog without the table `name`.
    pub fn without_table(&self, name: &str, token: Vec<u8>, generation: u64) -> Catalog {
        let mut tables = self.tables.clone();
        tables.remove(name);
        Catalog { tables, users: self.users.clone(), token, generation, owner: self.owner }
    }
}

pub fn encode_table(table: &Table) -> Vec<u8> {
    // Infallible: plain structs and enums into a Vec.
    if table.has_families() {
        return postcard::to_extend(table, vec![TABLE_FORMAT_V2]).expect("table encoding is infallible");
    }
    let v1 = TableV1 {
        id: table.id,
        name: &table.name,
        columns: &table.columns,
        primary_key: &table.primary_key,
        locality: table.locality,
        indexes: &table.indexes,
        next_index_id: table.next_index_id,
    };
    postcard::to_extend(&v1, vec![TABLE_FORMAT_V1]).expect("table encoding is infallible")
}

pub fn decode_table(bytes: &[u8]) -> Result<Table> {
    let corrupt = |e: postcard::Error| Error::Internal(format!("corrupt table definition: {e}"));
    let table = match bytes.split_first() {
        Some((&TABLE_FORMAT_V1, rest)) => {
            let v1: StoredTableV1 = postcard::from_bytes(rest).map_err(corrupt)?;
            Table {
                id: v1.id,
                name: v1.name,
                columns: v1.columns,
                primary_key: v1.primary_key,
                locality: v1.locality,
                indexes: v1.indexes,
                next_index_id: v1.next_index_id,
                families: Vec::new(),
            }
        }
        Some((&TABLE_FORMAT_V2, rest)) => postcard::from_bytes(rest).map_err(corrupt)?,
        _ => return Err(Error::Internal("table definition has an unknown format".into())),
    };
    check_table(&table)?;
    Ok(table)
}

/// Checks a decoded definition before anything indexes with it: it came
/// from disk.
fn check_table(table: &Table) -> Result<()> {
    let n = table.columns.len();
    let in_range = |cols: &[usize]| !cols.is_empty() && cols.iter().all(|&c| c < n);
    let families_fit = table.families.len() <= FAMILIES_MAX
        && table
            .families
            .iter()
            .all(|f| in_range(&f.columns) && f.columns.iter().all(|c| !table.primary_key.contains(c)));
    if !in_range(&table.primary_key) || !table.indexes.iter().all(|i| in_range(&i.columns)) || !families_fit {
        return Err(Error::Internal(format!("table definition \"{}\" is inconsistent", table.name)));
    }
    Ok(())
}

/// The version token a DDL of `txn` writes: the previous counter plus one,
/// and the transaction id, so that two concurrent DDLs never write the same
/// token.
pub fn next_token(previous: &[u8], txn: &Transaction) -> Vec<u8> {
    let counter = previous.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
    let mut token = (counter + 1).to_be_bytes().to_vec();
    token.extend_from_slice(&txn.id().0.to_be_bytes());
    token
}

/// Allocates the next table id (stored counter, starting at 1).
pub fn allocate_table_id(txn: &mut Transaction) -> Result<u32> {
    let current = match txn.get(keys::CATALOG_NEXT_TABLE_KEY)? {
        Some(bytes) => u32::from_be_bytes(
            bytes.as_slice().try_into().map_err(|_| Error::Internal("corrupt table id counter".into()))?,
        ),
        None => 1,
    };
    let next = current.checked_add(1).ok_or_else(|| Error::ProgramLimitExceeded("too many tables created".into()))?;
    txn.put(keys::CATALOG_NEXT_TABLE_KEY.to_vec(), next.to_be_bytes().to_vec())?;
    Ok(current)
}

/// The in-memory catalog shared by all sessions: the last catalog any
/// statement loaded or any DDL produced.
#[derive(Debug)]
pub struct CatalogCache {
    current: RwLock<Arc<Catalog>>,
    generation: AtomicU64,
}

impl CatalogCache {
    pub fn new(mut catalog: Catalog) -> CatalogCache {
        catalog.generation = 1;
        CatalogCache { current: RwLock::new(Arc::new(catalog)), generation: AtomicU64::new(1) }
    }

    pub fn current(&self) -> Arc<Catalog> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn install(&self, catalog: Arc<Catalog>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = catalog;
    }

    /// The catalog `txn` plans with: the cached one when the version token
    /// at this node's replica of the system shard matches (one local read,
    /// no leader, nothing recorded in the transaction), else reloaded from
    /// that replica; a transaction that changed the schema itself sees its
    /// own catalog. The transaction is told the version ([`Transaction::set_schema`]):
    /// every shard it writes checks it against its schema guard at commit,
    /// so a statement planned on a catalog a concurrent DDL replaced never
    /// commits (it fails with 40001 and the retry plans afresh).
    pub fn for_transaction(&self, txn: &mut Transaction) -> Result<Arc<Catalog>> {
        let own = txn.wrote(keys::CATALOG_VERSION_KEY);
        let current = self.current();
        let catalog = if own {
            // Its own uncommitted DDL: its own view (never shared).
            let token = txn.get(keys::CATALOG_VERSION_KEY)?.unwrap_or_default();
            if current.owner == Some(txn.id()) && current.token == token {
                current
            } else {
                let mut loaded = Catalog::load(txn, self.next_generation(), true)?;
                loaded.owner = Some(txn.id());
                let loaded = Arc::new(loaded);
                self.install(loaded.clone());
                loaded
            }
        } else {
            let token = txn.peek_replica(keys::CATALOG_VERSION_KEY)?.unwrap_or_default();
            // The cached catalog, if committed and at least as new (it may
            // be newer than this replica: loaded exactly by `refresh`).
            let usable = current.owner.is_none()
                && (current.token == token || token_counter(&current.token) > token_counter(&token));
            if usable {
                current
            } else {
                let loaded = Arc::new(Catalog::load(txn, self.next_generation(), false)?);
                self.install(loaded.clone());
                loaded
            }
        };
        let version = (!catalog.token.is_empty()).then(|| catalog.token.clone());
        txn.set_schema(version, own)?;
        Ok(catalog)
    }

    /// Reloads the catalog exactly (at the system shard's leader, in a
    /// snapshot transaction of its own) if it changed since the cached one:
    /// when a statement names a table this node's replica does not know yet
    /// (created a moment ago through another node). Returns whether it did.
    pub fn refresh(&self, txns: &std::sync::Arc<geodb_txn::TxnManager>) -> Result<bool> {
        let mut txn = txns.begin(geodb_txn::Isolation::Snapshot)?;
        let token = txn.get(keys::CATALOG_VERSION_KEY)?.unwrap_or_default();
        if self.current().token == token {
            return Ok(false);
        }
        let loaded = Catalog::load(&mut txn, self.next_generation(), true)?;
        self.install(Arc::new(loaded));
        Ok(true)
    }

    /// Writes `table` (or removes `name` when `table` is `None`) in `txn`,
    /// with a new version token, and caches the resulting catalog.
    pub fn change(&self, txn: &mut Transaction, base: &Catalog, name: &str, table: Option<Table>) -> Result<()> {
        let token = next_token(&base.token, txn);
        let generation = self.next_generation();
        let base = &Catalog { owner: Some(txn.id()), ..base.clone_shallow() };
        let key = keys::catalog_table_key(name);
        let catalog = match table {
            Some(table) => {
                txn.put(key, encode_table(&table))?;
                base.with_table(table, token.clone(), generation)
            }
            None => {
                txn.delete(key)?;
                base.without_table(name, token.clone(), generation)
            }
        };
        // Every shard's guard takes the new version: a transaction planned
        // on the old catalog cannot commit anywhere after this one.
        for (_, guard) in txn.guard_keys() {
            txn.put(guard, token.clone())?;
        }
        txn.put(keys::CATALOG_VERSION_KEY.to_vec(), token)?;
        self.install(Arc::new(catalog));
        Ok(())
    }

    /// Writes user `name` (or removes it when `user` is `None`) in `txn`,
    /// with a new version token in every shard's guard, as DDL does: a
    /// transaction planned before a `REVOKE` cannot commit after it. Caches
    /// and returns the resulting catalog.
    pub fn change_user(
        &self,
        txn: &mut Transaction,
        base: &Catalog,
        name: &str,
        user: Option<crate::access::User>,
    ) -> Result<Arc<Catalog>> {
        let token = next_token(&base.token, txn);
        let mut catalog = Catalog { owner: Some(txn.id()), ..base.clone_shallow() };
        catalog.token = token.clone();
        catalog.generation = self.next_generation();
        let key = keys::catalog_user_key(name);
        match user {
            Some(user) => {
                txn.put(key, crate::access::encode_user(&user))?;
                catalog.users.insert(name.to_string(), Arc::new(user));
            }
            None => {
                txn.delete(key)?;
                catalog.users.remove(name);
            }
        }
        for (_, guard) in txn.guard_keys() {
            txn.put(guard, token.clone())?;
        }
        txn.put(keys::CATALOG_VERSION_KEY.to_vec(), token)?;
        let catalog = Arc::new(catalog);
        self.install(catalog.clone());
        Ok(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geodb_storage::DataType;

    fn table(families: Vec<Family>) -> Table {
        let column = |name: &str| Column { name: name.into(), ty: DataType::Int, not_null: false };
        Table {
            id: 7,
            name: "t".into(),
            columns: vec![column("k"), column("a"), column("b")],
            primary_key: vec![0],
            locality: Locality::Home,
            indexes: vec![Index { id: 2, name: "t_a".into(), columns: vec![1], unique: false }],
            next_index_id: 3,
            families,
        }
    }

    /// A table without families is stored as every earlier version stored
    /// it (format 1, no families field), so that nodes agree on it; one
    /// with families in format 2.
    #[test]
    fn definitions_without_families_keep_the_first_format() {
        let plain = encode_table(&table(Vec::new()));
        assert_eq!(plain[0], TABLE_FORMAT_V1);
        let decoded = decode_table(&plain).unwrap();
        assert!(decoded.families.is_empty());
        assert_eq!(decoded.indexes[0].name, "t_a");
        let family = Family { name: "hot".into(), columns: vec![2] };
        let with = encode_table(&table(vec![family.clone()]));
        assert_eq!(with[0], TABLE_FORMAT_V2);
        let decoded = decode_table(&with).unwrap();
        assert_eq!(decoded.families, vec![family]);
        assert_eq!((decoded.family_of(0), decoded.family_of(1), decoded.family_of(2)), (0, 0, 1));
        assert_eq!(decoded.families_of([1, 2]), 0b11);
        // A family naming a primary-key column or a column out of range is
        // a corrupt definition.
        for columns in [vec![0], vec![3]] {
            let bad = encode_table(&table(vec![Family { name: "x".into(), columns }]));
            assert!(decode_table(&bad).is_err());
        }
    }
}
