//! CREATE / DROP TABLE and INDEX, the persisted catalog, transactional DDL.

use geodb_sql::{Database, Locality};
use geodb_storage::{DataType, Value};
use geodb_txn::Isolation;

use crate::harness::{Harness, int, text};

#[test]
fn create_table_with_every_type_round_trips_values() {
    let h = Harness::new();
    h.run(
        "CREATE TABLE t (a SMALLINT, b INT, c INTEGER, d BIGINT PRIMARY KEY, e DECIMAL(10,2), f NUMERIC(4,4), \
         g REAL, h DOUBLE PRECISION, i FLOAT, j CHAR(3), k VARCHAR(10), l TEXT, m BOOLEAN, n TIMESTAMP, o NUMERIC)",
    );
    let table = h.db.catalog().table("t").unwrap().clone();
    let types: Vec<DataType> = table.columns.iter().map(|c| c.ty).collect();
    assert_eq!(
        types,
        vec![
            DataType::SmallInt,
            DataType::Int,
            DataType::Int,
            DataType::BigInt,
            DataType::Decimal { precision: 10, scale: 2 },
            DataType::Decimal { precision: 4, scale: 4 },
            DataType::Real,
            DataType::Double,
            DataType::Double,
            DataType::Char(3),
            DataType::Varchar(10),
            DataType::Text,
            DataType::Bool,
            DataType::Timestamp,
            DataType::Decimal { precision: 28, scale: 6 },
        ]
    );
    assert_eq!(table.locality, Locality::Home);
    h.exec(
        "INSERT INTO t VALUES (1, 2, 3, 4, 12.345, 0.1234, 1.5, 2.25, 3.5, 'abc', 'hello', 'world', true, \
         '2024-11-26T10:00:00Z', 7)",
        &[],
    );
    let rows = h.rows("SELECT * FROM t", &[]);
    let json: Vec<serde_json::Value> = rows[0].iter().map(geodb_sql::value_to_json).collect();
    assert_eq!(
        serde_json::Value::Array(json),
        serde_json::json!([
            1,
            2,
            3,
            4,
            "12.35",
            "0.1234",
            1.5,
            2.25,
            3.5,
            "abc",
            "hello",
            "world",
            true,
            "2024-11-26T10:00:00Z",
            "7.000000"
        ])
    );
}

#[test]
fn table_locality_is_recorded() {
    let h = Harness::new();
    h.run("CREATE TABLE item (i_id INT PRIMARY KEY, i_name TEXT) WITH (locality = 'global')");
    h.run("CREATE TABLE acct (tenant INT, id INT, PRIMARY KEY (tenant, id)) WITH (locality = 'home')");
    let catalog = h.db.catalog();
    assert_eq!(catalog.table("item").unwrap().locality, Locality::Global);
    let acct = catalog.table("acct").unwrap();
    assert_eq!(acct.locality, Locality::Home);
    assert_eq!(acct.locality_column().name, "tenant");
    assert_eq!(h.code("CREATE TABLE x (a INT PRIMARY KEY) WITH (locality = 'mars')", &[]), "22023");
}

#[test]
fn table_without_primary_key_is_rejected() {
    let h = Harness::new();
    assert_eq!(h.code("CREATE TABLE t (a INT, b INT)", &[]), "42P16");
    assert_eq!(h.code("CREATE TABLE t (a INT PRIMARY KEY, b INT PRIMARY KEY)", &[]), "42P16");
}

#[test]
fn create_existing_table_and_if_not_exists() {
    let h = Harness::new();
    h.run("CREATE TABLE t (a INT PRIMARY KEY)");
    assert_eq!(h.code("CREATE TABLE t (a INT PRIMARY KEY)", &[]), "42P07");
    h.run("CREATE TABLE IF NOT EXISTS t (a INT PRIMARY KEY)");
    assert_eq!(h.code("CREATE TABLE u (a INT PRIMARY KEY, a INT)", &[]), "42701");
}

#[test]
fn drop_table_removes_rows_and_indexes() {
    let h = Harness::new();
    h.run("CREATE TABLE t (a INT PRIMARY KEY, b INT)");
    h.run("CREATE INDEX t_b ON t (b)");
    h.run("INSERT INTO t VALUES (1, 10), (2, 20)");
    h.run("DROP TABLE t");
    assert_eq!(h.code("SELECT * FROM t", &[]), "42P01");
    assert_eq!(h.code("DROP TABLE t", &[]), "42P01");
    h.run("DROP TABLE IF EXISTS t");
    // The name (and the index name) can be used again, and the new table
    // sees none of the old rows.
    h.run("CREATE TABLE t (a INT PRIMARY KEY, b INT)");
    h.run("CREATE INDEX t_b ON t (b)");
    assert!(h.rows("SELECT * FROM t", &[]).is_empty());
    assert!(h.rows("SELECT a FROM t WHERE b = 10", &[]).is_empty());
}

#[test]
fn create_index_backfills_existing_rows() {
    let h = Harness::new();
    h.run("CREATE TABLE t (a INT PRIMARY KEY, b INT)");
    h.run("INSERT INTO t VALUES (1, 10), (2, 20), (3, 10)");
    h.run("CREATE INDEX t_b ON t (b)");
    h.assert_plan("SELECT a FROM t WHERE b = 10", "Scan t INDEX t_b (prefix 1 cols)");
    assert_eq!(h.rows("SELECT a FROM t WHERE b = 10", &[]), vec![vec![int(1)], vec![int(3)]]);
}

#[test]
fn unique_index_backfill_fails_on_duplicates() {
    let h = Harness::new();
    h.run("CREATE TABLE t (a INT PRIMARY KEY, b INT)");
    h.run("INSERT INTO t VALUES (1, 10), (2, 10)");
    assert_eq!(h.code("CREATE UNIQUE INDEX t_b ON t (b)", &[]), "23505");
    // The failed DDL left nothing behind.
    h.run("CREATE INDEX t_b ON t (b)");
}

#[test]
fn index_errors() {
    let h = Harness::new();
    h.run("CREATE TABLE t (a INT PRIMARY KEY, b INT)");
    h.run("CREATE INDEX t_b ON t (b)");
    assert_eq!(h.code("CREATE INDEX t_b ON t (a)", &[]), "42710");
    assert_eq!(h.code("CREATE INDEX t_c ON t (c)", &[]), "42703");
    assert_eq!(h.code("CREATE INDEX t_x ON nope (a)", &[]), "42P01");
    assert_eq!(h.code("DROP INDEX nope", &[]), "42704");
    h.run("DROP INDEX IF EXISTS nope");
    h.run("DROP INDEX t_b");
    h.assert_plan("SELECT a FROM t WHERE b = 10", "Scan t FULL");
}

#[test]
fn catalog_persists_across_open() {
    let h = Harness::new();
    h.run("CREATE TABLE t (a INT PRIMARY KEY, b TEXT)");
    h.run("INSERT INTO t VALUES (1, 'x')");
    let reopened = Database::open(h.txns.clone()).unwrap();
    let mut txn = h.txns.begin(Isolation::Snapshot).unwrap();
    let result = reopened.execute(&mut txn, "SELECT b FROM t WHERE a = 1", &[]).unwrap();
    assert_eq!(result.rows, vec![vec![text("x")]]);
    txn.rollback();
}

#[test]
fn ddl_rolled_back_never_existed() {
    let h = Harness::new();
    let mut txn = h.txns.begin(Isolation::Serializable).unwrap();
    h.db.execute(&mut txn, "CREATE TABLE t (a INT PRIMARY KEY)", &[]).unwrap();
    // The creating transaction sees its table.
    h.db.execute(&mut txn, "INSERT INTO t VALUES (1)", &[]).unwrap();
    assert_eq!(h.db.execute(&mut txn, "SELECT a FROM t", &[]).unwrap().rows, vec![vec![int(1)]]);
    txn.rollback();
    assert_eq!(h.code("SELECT a FROM t", &[]), "42P01");
}

#[test]
fn ddl_is_seen_by_a_second_database_on_the_same_store() {
    // Another node's SQL layer, sharing the transactional store: its
    // cached catalog is stale until a statement reads the new version.
    let h = Harness::new();
    let other = Database::open(h.txns.clone()).unwrap();
    h.run("CREATE TABLE t (a INT PRIMARY KEY)");
    h.run("INSERT INTO t VALUES (5)");
    let mut txn = h.txns.begin(Isolation::ReadCommitted).unwrap();
    assert_eq!(other.execute(&mut txn, "SELECT a FROM t", &[]).unwrap().rows, vec![vec![int(5)]]);
    txn.commit().unwrap();
}

#[test]
fn identifiers_fold_to_lower_case() {
    let h = Harness::new();
    h.run("CREATE TABLE Accounts (ID INT PRIMARY KEY, Name TEXT)");
    h.run("INSERT INTO accounts (id, NAME) VALUES (1, 'a')");
    assert_eq!(h.rows("SELECT NAME FROM ACCOUNTS WHERE Id = 1", &[]), vec![vec![text("a")]]);
    let result = h.exec("SELECT name AS \"Who\" FROM accounts", &[]);
    assert_eq!(result.columns, vec!["Who".to_string()]);
    let _ = Value::Null;
}

#[test]
fn drop_table_is_a_catalog_change_and_a_recreated_table_starts_empty() {
    let h = Harness::new();
    h.run("CREATE TABLE big (id INT PRIMARY KEY, v TEXT)");
    h.run("CREATE INDEX big_v ON big (v)");
    for i in 0..50 {
        h.exec("INSERT INTO big VALUES ($1, 'x')", &[int(i)]);
    }
    let dropped = h.exec("DROP TABLE big", &[]);
    assert_eq!(dropped.rows_affected, 0);
    assert_eq!(h.code("SELECT * FROM big", &[]), "42P01");
    h.run("CREATE TABLE big (id INT PRIMARY KEY, v TEXT)");
    h.run("CREATE INDEX big_v ON big (v)");
    assert!(h.rows("SELECT id FROM big", &[]).is_empty());
    assert!(h.rows("SELECT id FROM big WHERE v = 'x'", &[]).is_empty());
    h.exec("INSERT INTO big VALUES (1, 'y')", &[]);
    assert_eq!(h.rows("SELECT id FROM big", &[]).len(), 1);
}

/// A snapshot that predates an index must not be read through it: the
/// statement after the DDL is planned with the new catalog, and its reads
/// find the schema guard still at the old version in their snapshot. The
/// transaction fails with a serialization failure rather than answering
/// from an index its snapshot does not have (which would return no rows).
#[test]
fn a_snapshot_is_never_read_through_an_index_created_after_it() {
    let h = Harness::new();
    h.run("CREATE TABLE t (a INT PRIMARY KEY, b INT)");
    h.run("CREATE TABLE other (x INT PRIMARY KEY)");
    h.run("INSERT INTO t VALUES (1, 5), (2, 6)");
    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        let mut txn = h.txns.begin(isolation).unwrap();
        assert!(h.db.execute(&mut txn, "SELECT x FROM other", &[]).unwrap().rows.is_empty());
        h.run("CREATE INDEX t_b ON t (b)");
        match h.db.execute(&mut txn, "SELECT a FROM t WHERE b = 5", &[]) {
            Ok(result) => assert_eq!(result.rows, vec![vec![int(1)]], "{isolation:?}"),
            Err(error) => assert_eq!(error.code(), "40001", "{isolation:?}: {error}"),
        }
        txn.rollback();
        h.run("DROP INDEX t_b");
    }
    // A transaction that has read nothing yet plans again, with a new
    // snapshot, and answers.
    let mut txn = h.txns.begin(Isolation::Snapshot).unwrap();
    h.run("CREATE INDEX t_b ON t (b)");
    assert_eq!(h.db.execute(&mut txn, "SELECT a FROM t WHERE b = 5", &[]).unwrap().rows, vec![vec![int(1)]]);
    txn.commit().unwrap();
}

/// A DDL runs at Serializable whatever the session's level: a row written
/// under the old schema after the index backfill read its table makes the
/// DDL fail (else the row would have no index entry).
#[test]
fn an_index_backfill_conflicts_with_a_concurrent_insert() {
    let h = Harness::new();
    h.run("CREATE TABLE t (a INT PRIMARY KEY, b INT)");
    h.run("INSERT INTO t VALUES (1, 5)");
    for isolation in [Isolation::ReadCommitted, Isolation::Snapshot] {
        let mut ddl = h.txns.begin(isolation).unwrap();
        h.db.execute(&mut ddl, "CREATE INDEX t_b ON t (b)", &[]).unwrap();
        h.run("INSERT INTO t VALUES (2, 5)");
        let error = ddl.commit().expect_err("the backfill missed a committed row");
        assert!(error.is_retryable(), "{isolation:?}: {error}");
        h.run("DELETE FROM t WHERE a = 2");
    }
    // Run again, it indexes every row.
    h.run("INSERT INTO t VALUES (2, 5)");
    h.run("CREATE INDEX t_b ON t (b)");
    h.assert_plan("SELECT a FROM t WHERE b = 5", "Scan t INDEX t_b (prefix 1 cols)");
    assert_eq!(h.rows("SELECT a FROM t WHERE b = 5 ORDER BY a", &[]), vec![vec![int(1)], vec![int(2)]]);
}

/// Two DDLs planned on the same catalog version: one fails, so the
/// second cannot overwrite the first's table definition.
#[test]
fn two_concurrent_ddls_on_one_table_do_not_both_commit() {
    let h = Harness::new();
    h.run("CREATE TABLE t (a INT PRIMARY KEY, b INT, c INT)");
    let mut first = h.txns.begin(Isolation::ReadCommitted).unwrap();
    let mut second = h.txns.begin(Isolation::ReadCommitted).unwrap();
    h.db.execute(&mut first, "CREATE INDEX t_b ON t (b)", &[]).unwrap();
    h.db.execute(&mut second, "CREATE INDEX t_c ON t (c)", &[]).unwrap();
    first.commit().unwrap();
    let error = second.commit().expect_err("both DDLs committed");
    assert!(error.is_retryable(), "{error}");
    h.assert_plan("SELECT a FROM t WHERE b = 1", "Scan t INDEX t_b (prefix 1 cols)");
}
