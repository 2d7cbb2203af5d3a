//! The entry point: [`Database::execute`] runs one SQL statement inside a
//! caller's transaction.
//!
//! For each statement: check the text against [`STATEMENT_BYTES_MAX`],
//! start the statement in the transaction (Read Committed takes its fresh
//! snapshot here), find the catalog the transaction sees
//! ([`CatalogCache::for_transaction`]: one point read when nothing
//! changed), find the plan in the statement cache or parse
//! (`sqlparser`, PostgreSQL dialect) and plan it, bind the parameters to
//! the types the plan expects, and run it.
//!
//! Transaction control (`BEGIN`, `COMMIT`, ...) is not executed here: the
//! server recognises it first with [`crate::parse_control`].

use std::sync::Arc;

use geodb_storage::{DataType, Value};
use geodb_txn::{Isolation, Transaction, TxnManager};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::access;
use crate::cache::{CacheStats, StatementCache};
use crate::catalog::{Catalog, CatalogCache};
use crate::error::{Error, Result};
use crate::exec::{self, StatementResult};
use crate::limits::{BRIEF_STATEMENT_BYTES_MAX, PARAMETERS_MAX, STATEMENT_BYTES_MAX};
use crate::plan::bind::ParamTypes;
use crate::plan::describe::{self, Description};
use crate::plan::{self, Plan, Prepared, StatementKind};
use crate::types;

/// How many times one statement is planned again after its reads found a
/// newer schema than it was planned with (each time with the catalog
/// reloaded): more means DDL keeps committing, and the caller retries.
const REPLANS_MAX: usize = 3;

/// A SQL database over a transaction manager.
pub struct Database {
    txns: Arc<TxnManager>,
    catalog: CatalogCache,
    statements: StatementCache,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("catalog", &self.catalog)
            .field("statements", &self.statements.stats())
            .finish()
    }
}

impl Database {
    /// Opens the database, loading the persisted catalog (a local read: on a
    /// replica that does not lead its shard, the catalog may lag; every
    /// transaction rereads its version token).
    pub fn open(txns: Arc<TxnManager>) -> Result<Arc<Database>> {
        let mut txn = txns.begin(Isolation::ReadCommitted)?;
        let catalog = Catalog::load(&mut txn, 0, false);
        txn.rollback();
        Ok(Arc::new(Database { txns, catalog: CatalogCache::new(catalog?), statements: StatementCache::default() }))
    }

    pub fn txn_manager(&self) -> &Arc<TxnManager> {
        &self.txns
    }

    /// Runs one statement in `txn` with `params` (`$1` is `params[0]`),
    /// with no privilege checked: for the node's own work (a restore) and
    /// for a node without authentication.
    ///
    /// Errors leave the transaction usable only for rollback: a failed
    /// statement may have buffered part of its writes (PostgreSQL, too,
    /// fails the whole transaction).
    pub fn execute(&self, txn: &mut Transaction, sql: &str, params: &[Value]) -> Result<StatementResult> {
        self.execute_as(txn, sql, params, None)
    }

    /// [`Database::execute`] as user `user` (`None`: unchecked): the
    /// statement is planned, then checked against the user's privileges in
    /// the catalog the transaction sees ([`crate::access::authorize`]), and
    /// runs only if they suffice: a refused statement (42501) read and
    /// wrote nothing.
    pub fn execute_as(
        &self,
        txn: &mut Transaction,
        sql: &str,
        params: &[Value],
        user: Option<&str>,
    ) -> Result<StatementResult> {
        if sql.len() > STATEMENT_BYTES_MAX {
            return Err(Error::ProgramLimitExceeded(format!(
                "statement of {} bytes is longer than the limit of {STATEMENT_BYTES_MAX}",
                sql.len()
            )));
        }
        if params.len() > PARAMETERS_MAX {
            return Err(Error::ProgramLimitExceeded(format!("more than {PARAMETERS_MAX} parameters")));
        }
        txn.begin_statement();
        // A long text takes a while to parse and plan, before the plan
        // can say whether it is brief.
        geodb_storage::wait::blocking_if(sql.len() > BRIEF_STATEMENT_BYTES_MAX, || {
            // Planned again (up to [`REPLANS_MAX`] times) while it fails on
            // a schema or a home its snapshot does not have.
            let mut replans = 0;
            loop {
                match self.execute_once(txn, sql, params, user) {
                    // Planned under a schema the snapshot does not have (this
                    // node's replica of the catalog lagged, or a DDL committed
                    // after the snapshot was taken): if the transaction has done
                    // nothing yet, plan again with the catalog reloaded and a
                    // new snapshot; else the caller retries the transaction.
                    Err(Error::Txn(geodb_txn::Error::SchemaChanged { .. }))
                        if replans < REPLANS_MAX && txn.may_replan() =>
                    {
                        replans += 1;
                        self.catalog.refresh(&self.txns)?;
                        txn.renew_snapshot()?;
                    }
                    // A locality key it read was rehomed (R18): the stale home
                    // is forgotten; if the transaction has done nothing yet,
                    // run the statement again, routed by the directory.
                    Err(Error::Txn(geodb_txn::Error::Moved { .. })) if replans < REPLANS_MAX && txn.may_replan() => {
                        replans += 1;
                        txn.renew_snapshot()?;
                    }
                    outcome => return outcome,
                }
            }
        })
    }

    fn execute_once(
        &self,
        txn: &mut Transaction,
        sql: &str,
        params: &[Value],
        user: Option<&str>,
    ) -> Result<StatementResult> {
        let mut catalog = self.catalog.for_transaction(txn)?;
        // Users and privileges: never planned or cached (the text may hold
        // a password).
        if let Some(statement) = access::parse_user_statement(sql) {
            let statement = statement?;
            if !params.is_empty() {
                return Err(Error::ParameterCount { given: params.len(), wanted: 0 });
            }
            // Hashing a password takes milliseconds of CPU on purpose.
            return geodb_storage::wait::blocking(|| access::execute(&self.catalog, &catalog, txn, &statement, user));
        }
        let prepared = match self.prepare(&catalog, sql) {
            // A relation this node's replica of the catalog does not know
            // yet may have been created a moment ago through another node:
            // look at the catalog itself once before saying it is not there.
            Err(Error::UndefinedTable(_) | Error::UndefinedColumn(_) | Error::UndefinedIndex(_))
                if self.catalog.refresh(&self.txns)? =>
            {
                catalog = self.catalog.for_transaction(txn)?;
                self.prepare(&catalog, sql)?
            }
            outcome => outcome?,
        };
        // EXPLAIN shows a plan without running it, so its parameters may
        // be left out.
        let nulls;
        let params = if params.is_empty() && prepared.plan.kind() == StatementKind::Explain {
            nulls = vec![Value::Null; prepared.params.count()];
            &nulls[..]
        } else {
            params
        };
        if let Some(user) = user {
            match access::authorize(&catalog, user, &prepared.plan) {
                // A grant made a moment ago through another node may not be
                // in this node's replica of the catalog yet: look at the
                // catalog itself once before refusing.
                Err(Error::InsufficientPrivilege(_)) if self.catalog.refresh(&self.txns)? => {
                    catalog = self.catalog.for_transaction(txn)?;
                    let prepared = self.prepare(&catalog, sql)?;
                    access::authorize(&catalog, user, &prepared.plan)?;
                    let params = bind_params(&prepared.params, params)?;
                    return self.run_plan(&catalog, txn, &prepared.plan, &params);
                }
                outcome => outcome?,
            }
        }
        let params = bind_params(&prepared.params, params)?;
        self.run_plan(&catalog, txn, &prepared.plan, &params)
    }

    /// Runs a plan where it is called if it is brief ([`Plan::is_brief`]);
    /// otherwise tells the program first that it may run for long
    /// (`geodb_storage::wait`: a server frees its async worker for it).
    fn run_plan(
        &self,
        catalog: &Catalog,
        txn: &mut Transaction,
        plan: &Plan,
        params: &[Value],
    ) -> Result<StatementResult> {
        geodb_storage::wait::blocking_if(!plan.is_brief(), || exec::execute(&self.catalog, catalog, txn, plan, params))
    }

    /// The kind of a statement and whether it is read-only, without
    /// running it (plans it against the current catalog, using the cache).
    pub fn describe(&self, sql: &str) -> Result<(StatementKind, bool)> {
        if let Some(statement) = access::parse_user_statement(sql) {
            return statement.map(|_| (StatementKind::Ddl, false));
        }
        let catalog = self.catalog.current();
        let prepared = self.prepare(&catalog, sql)?;
        Ok((prepared.plan.kind(), prepared.plan.is_read_only()))
    }

    /// What a statement takes and returns, without running it: its
    /// parameter types (`declared[i]`, when given, wins for `$i+1`) and its
    /// result columns with their types ([`crate::plan::describe`]).
    ///
    /// Planned against the catalog as stored now; inside a transaction
    /// that changed the schema itself (`txn`), against that transaction's
    /// own view, so that a table it created can be described before it
    /// commits.
    pub fn describe_statement(
        &self,
        sql: &str,
        declared: &[Option<DataType>],
        txn: Option<&mut Transaction>,
    ) -> Result<Description> {
        if sql.len() > STATEMENT_BYTES_MAX {
            return Err(Error::ProgramLimitExceeded(format!(
                "statement of {} bytes is longer than the limit of {STATEMENT_BYTES_MAX}",
                sql.len()
            )));
        }
        // A long text takes a while to parse (as in `execute_as`).
        geodb_storage::wait::blocking_if(sql.len() > BRIEF_STATEMENT_BYTES_MAX, || {
            if let Some(statement) = access::parse_user_statement(sql) {
                statement?;
                return Ok(Description { kind: StatementKind::Ddl, params: Vec::new(), columns: Vec::new() });
            }
            let catalog = match txn {
                Some(txn) if txn.wrote(crate::keys::CATALOG_VERSION_KEY) => self.catalog.for_transaction(txn)?,
                _ => {
                    let mut txn = self.txns.begin(Isolation::ReadCommitted)?;
                    let catalog = self.catalog.for_transaction(&mut txn);
                    txn.rollback();
                    catalog?
                }
            };
            let prepared = match self.prepare(&catalog, sql) {
                // As when executing: a relation created a moment ago through
                // another node may not be in this node's catalog yet.
                Err(Error::UndefinedTable(_) | Error::UndefinedColumn(_) | Error::UndefinedIndex(_))
                    if self.catalog.refresh(&self.txns)? =>
                {
                    self.prepare(&self.catalog.current(), sql)?
                }
                outcome => outcome?,
            };
            Ok(describe::describe(&prepared.plan, &prepared.params, declared))
        })
    }

    /// [`Database::describe`] against the catalog as stored now (a local
    /// read of its version token), not as last loaded: on a replica that
    /// learns schema changes from its shard's log.
    pub fn describe_current(&self, sql: &str) -> Result<(StatementKind, bool)> {
        if let Some(statement) = access::parse_user_statement(sql) {
            return statement.map(|_| (StatementKind::Ddl, false));
        }
        let mut txn = self.txns.begin(Isolation::ReadCommitted)?;
        let catalog = self.catalog.for_transaction(&mut txn);
        txn.rollback();
        let prepared = self.prepare(catalog?.as_ref(), sql)?;
        Ok((prepared.plan.kind(), prepared.plan.is_read_only()))
    }

    /// R18: moves the locality key `key` (its rows and colocated index
    /// entries in every `home` table) to the region with index `region`,
    /// by one strict-serializable transaction (`crate::rehome`).
    pub fn rehome(&self, key: &Value, region: u32) -> Result<geodb_txn::Rehomed> {
        crate::rehome::rehome(&self.txns, &self.catalog, key, region)
    }

    /// User `name` as the catalog stored at this node's replica has it (one
    /// local read of the version token when nothing changed), `root`
    /// included; if it is not there, once more from the catalog itself (a
    /// user created a moment ago through another node).
    pub fn user(&self, name: &str) -> Result<Option<access::User>> {
        self.find_user(name, true)
    }

    /// User `name` as the catalog stored at this node's replica has it,
    /// never asking the catalog's leader: for password logins, where a name
    /// that does not exist must cost what one that does costs (no round
    /// trip to the leader that would tell them apart, nor one a guesser
    /// can make the node pay at will). A user created a moment ago through
    /// another node logs in here once this node's replica has it.
    pub fn user_local(&self, name: &str) -> Result<Option<access::User>> {
        self.find_user(name, false)
    }

    fn find_user(&self, name: &str, refresh: bool) -> Result<Option<access::User>> {
        for attempt in 0..2 {
            let mut txn = self.txns.begin(Isolation::ReadCommitted)?;
            let catalog = self.catalog.for_transaction(&mut txn);
            txn.rollback();
            if let Some(user) = access::user(catalog?.as_ref(), name) {
                return Ok(Some(user));
            }
            if !refresh || attempt > 0 || !self.catalog.refresh(&self.txns)? {
                break;
            }
        }
        Ok(None)
    }

    /// Statement cache hits and misses.
    pub fn cache_stats(&self) -> CacheStats {
        self.statements.stats()
    }

    /// The catalog as last loaded or changed (for introspection: the
    /// authoritative catalog is the one each transaction reads).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.current()
    }

    fn prepare(&self, catalog: &Catalog, sql: &str) -> Result<Arc<Prepared>> {
        if let Some(prepared) = self.statements.get(sql, catalog.generation) {
            return Ok(prepared);
        }
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)?;
        let statement = match statements.len() {
            1 => statements.pop().expect("one statement"),
            0 => return Err(Error::Syntax("empty statement".into())),
            _ => return Err(Error::unsupported("several statements in one request")),
        };
        let mut params = ParamTypes::default();
        let plan = plan::plan_statement(catalog, &statement, &mut params)?;
        let prepared = Arc::new(Prepared { plan, params, generation: catalog.generation });
        self.statements.insert(sql, prepared.clone());
        Ok(prepared)
    }
}

/// Checks the parameter count and gives each parameter its context type.
fn bind_params(types_wanted: &ParamTypes, given: &[Value]) -> Result<Vec<Value>> {
    if given.len() != types_wanted.count() {
        return Err(Error::ParameterCount { given: given.len(), wanted: types_wanted.count() });
    }
    given
        .iter()
        .zip(&types_wanted.types)
        .map(|(value, ty)| match ty {
            Some(ty) => types::coerce_param(value.clone(), ty),
            None => Ok(value.clone()),
        })
        .collect()
}
