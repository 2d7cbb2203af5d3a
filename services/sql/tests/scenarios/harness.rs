//! A fresh database on the memory engine, and autocommit helpers.

use std::sync::Arc;

use geodb_sql::{Database, SqlRouter, StatementResult};
use geodb_storage::{MemoryEngine, Value};
use geodb_txn::{Isolation, SINGLE_NODE_SHARD, SystemClock, TxnManager};

pub struct Harness {
    pub txns: Arc<TxnManager>,
    pub db: Arc<Database>,
}

impl Harness {
    /// A single node as `geodb dev` runs it: the SQL router (so schema
    /// guards are checked) over one local shard.
    pub fn new() -> Harness {
        let router = Arc::new(SqlRouter::single(SINGLE_NODE_SHARD));
        let (txns, _) =
            TxnManager::single_node_routed(Arc::new(MemoryEngine::new()), Box::new(SystemClock), 1_000_000, router)
                .expect("txn manager");
        let db = Database::open(txns.clone()).expect("open");
        Harness { txns, db }
    }

    /// Runs one statement in its own serializable transaction.
    pub fn try_exec(&self, sql: &str, params: &[Value]) -> Result<StatementResult, geodb_sql::Error> {
        let mut txn = self.txns.begin(Isolation::Serializable).expect("begin");
        match self.db.execute(&mut txn, sql, params) {
            Ok(result) => {
                txn.commit()?;
                Ok(result)
            }
            Err(e) => {
                txn.rollback();
                Err(e)
            }
        }
    }

    pub fn exec(&self, sql: &str, params: &[Value]) -> StatementResult {
        self.try_exec(sql, params).unwrap_or_else(|e| panic!("{sql}: {e} ({})", e.code()))
    }

    pub fn run(&self, sql: &str) {
        self.exec(sql, &[]);
    }

    pub fn rows(&self, sql: &str, params: &[Value]) -> Vec<Vec<Value>> {
        self.exec(sql, params).rows
    }

    /// The SQLSTATE a statement fails with.
    pub fn code(&self, sql: &str, params: &[Value]) -> String {
        match self.try_exec(sql, params) {
            Ok(r) => panic!("{sql} succeeded: {r:?}"),
            Err(e) => e.code().to_string(),
        }
    }

    pub fn explain(&self, sql: &str) -> Vec<String> {
        self.rows(&format!("EXPLAIN {sql}"), &[])
            .into_iter()
            .map(|r| match &r[0] {
                Value::Text(s) => s.trim().to_string(),
                other => panic!("plan line {other:?}"),
            })
            .collect()
    }

    /// Asserts that one EXPLAIN line of `sql` is exactly `line`.
    pub fn assert_plan(&self, sql: &str, line: &str) {
        let plan = self.explain(sql);
        assert!(plan.iter().any(|l| l == line), "plan of {sql} has no line {line:?}:\n{}", plan.join("\n"));
    }
}

pub fn int(i: i64) -> Value {
    Value::Int(i)
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub fn dec(s: &str) -> Value {
    Value::Decimal(s.parse().unwrap())
}
