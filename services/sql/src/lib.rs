//! # geodb-sql — parse, plan and execute SQL over transactions
//!
//! The SQL layer turns statement text into reads and writes of a
//! [`geodb_txn::Transaction`]. It owns the meaning of keys: the catalog,
//! rows and index entries are all byte keys of the transaction's key space
//! ([`keys`]), written in the caller's transaction, so DDL and DML are
//! equally transactional.
//!
//! A statement goes through, in order:
//!
//! 1. [`control`]: transaction control (`BEGIN`, `COMMIT`, ...) is
//!    recognised first, for the server to act on; it never reaches the
//!    parser.
//! 2. [`database`]: [`Database::execute`] reads the catalog version the
//!    transaction sees ([`catalog`]), then looks the text up in the
//!    statement [`cache`].
//! 3. On a miss, `sqlparser` parses it and [`plan`] binds names and
//!    parameter types and chooses access paths (point get, key-prefix or
//!    range scan on the primary key or an index, full scan) and join
//!    strategy (index nested loop).
//! 4. [`exec`] binds the parameters and runs the plan.
//!
//! Values convert by the rules of [`types`]; [`json`] maps them to and
//! from the API's JSON; every failure is an [`Error`] with a SQLSTATE;
//! every client-controlled size has a bound in [`limits`].
//!
//! Architecture Invariant: this crate does no I/O and spawns nothing; it
//! only calls its transaction. It depends on `geodb-txn` and
//! `geodb-storage`, never on the server or the network.

pub mod access;
pub mod backup;
pub mod cache;
pub mod catalog;
pub mod control;
pub mod database;
pub mod error;
pub mod exec;
pub mod json;
pub mod keys;
pub mod limits;
pub mod password;
pub mod plan;
pub mod rehome;
pub mod routing;
pub mod types;

pub use cache::CacheStats;
pub use catalog::{Catalog, Locality, Table};
pub use control::{Control, Savepoint, parse_control};
pub use database::Database;
pub use error::{Error, Result};
pub use exec::StatementResult;
pub use json::{json_to_param, value_to_json};
pub use plan::StatementKind;
pub use plan::describe::{Description, OutputColumn};
pub use routing::SqlRouter;
