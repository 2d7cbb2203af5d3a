//! Every SQLSTATE the SQL layer answers, and the messages clients see.

use geodb_sql::{Error, limits};
use geodb_storage::Value;

use crate::harness::{Harness, int, text};

fn table() -> Harness {
    let h = Harness::new();
    h.run("CREATE TABLE t (id INT PRIMARY KEY, s SMALLINT, v VARCHAR(2), d DECIMAL(4,2), name TEXT)");
    h.run("INSERT INTO t VALUES (1, 1, 'a', 1.5, 'x')");
    h
}

#[test]
fn syntax_and_name_errors() {
    let h = table();
    assert_eq!(h.code("SELEC 1", &[]), "42601");
    assert_eq!(h.code("", &[]), "42601");
    assert_eq!(h.code("SELECT * FROM nope", &[]), "42P01");
    assert_eq!(h.code("SELECT nope FROM t", &[]), "42703");
    assert_eq!(h.code("SELECT x.id FROM t", &[]), "42P01");
    let e = h.try_exec("SELECT * FROM nope", &[]).unwrap_err();
    assert_eq!(e.to_string(), "relation \"nope\" does not exist");
    let e = h.try_exec("SELECT nope FROM t", &[]).unwrap_err();
    assert_eq!(e.to_string(), "column \"nope\" does not exist");
    assert_eq!(h.code("SELECT $0", &[]), "42601");
}

#[test]
fn value_errors() {
    let h = table();
    assert_eq!(h.code("SELECT 9223372036854775807 + 1", &[]), "22003");
    assert_eq!(h.code("SELECT id / 0 FROM t", &[]), "22012");
    assert_eq!(h.code("SELECT id % 0 FROM t", &[]), "22012");
    assert_eq!(h.code("SELECT d / 0 FROM t", &[]), "22012");
    assert_eq!(h.code("SELECT 79228162514264337593543950335 * 10", &[]), "22003");
    assert_eq!(h.code("UPDATE t SET s = s + 40000", &[]), "22003");
    assert_eq!(h.code("UPDATE t SET d = 100", &[]), "22003");
    assert_eq!(h.code("UPDATE t SET v = 'abc'", &[]), "22001");
    assert_eq!(h.code("UPDATE t SET s = 'many'", &[]), "22P02");
    assert_eq!(h.code("SELECT CAST('x' AS INT)", &[]), "22P02");
    assert_eq!(h.code("SELECT id FROM t WHERE id = $1", &[text("1.x")]), "22P02");
}

#[test]
fn type_errors() {
    let h = table();
    assert_eq!(h.code("UPDATE t SET s = true", &[]), "42804");
    assert_eq!(h.code("SELECT id FROM t WHERE name = 1", &[]), "42883");
    assert_eq!(h.code("SELECT id + true FROM t", &[]), "42883");
    assert_eq!(h.code("SELECT unknown_function(id) FROM t", &[]), "42883");
    assert_eq!(h.code("SELECT SUM(name) FROM t", &[]), "42883");
    assert_eq!(h.code("SELECT id FROM t WHERE id", &[]), "42804");
}

#[test]
fn unsupported_sql_is_0a000() {
    let h = table();
    for sql in [
        "SELECT id FROM t UNION SELECT id FROM t",
        "SELECT * FROM (SELECT id FROM t) x",
        "SELECT id FROM t WHERE id IN (SELECT id FROM t)",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "INSERT INTO t (id) SELECT id FROM t",
        "INSERT INTO t (id) VALUES (9) RETURNING id",
        "CREATE VIEW v AS SELECT 1",
        "BEGIN",
        "COMMIT",
        "SELECT 1; SELECT 2",
        "CREATE TABLE u (a INT PRIMARY KEY DEFAULT 1)",
        "CREATE TABLE u (a INT PRIMARY KEY, b INT UNIQUE)",
        "CREATE TABLE u (a INT PRIMARY KEY, b INTERVAL)",
    ] {
        assert_eq!(h.code(sql, &[]), "0A000", "{sql}");
    }
}

#[test]
fn parameter_count_mismatch_is_08p01() {
    let h = table();
    let e = h.try_exec("SELECT id FROM t WHERE id = $1 AND s = $2", &[int(1)]).unwrap_err();
    assert_eq!(e.code(), "08P01");
    assert_eq!(e.to_string(), "bind message supplies 1 parameters, but prepared statement requires 2");
    assert_eq!(h.code("SELECT 1", &[int(1)]), "08P01");
}

#[test]
fn limits_answer_54000() {
    let h = table();
    let long = format!("SELECT '{}'", "x".repeat(limits::STATEMENT_BYTES_MAX));
    assert_eq!(h.code(&long, &[]), "54000");
    let list: Vec<String> = (0..=limits::IN_LIST_MAX).map(|i| i.to_string()).collect();
    assert_eq!(h.code(&format!("SELECT id FROM t WHERE id IN ({})", list.join(",")), &[]), "54000");
}

#[test]
fn transaction_conflicts_are_40001_and_retryable() {
    let conflict = Error::Txn(geodb_txn::Error::Conflict("write conflict on t/(1)".into()));
    assert_eq!(conflict.code(), "40001");
    assert!(conflict.is_retryable());
    let h = table();
    let e = h.try_exec("SELECT nope FROM t", &[]).unwrap_err();
    assert!(!e.is_retryable());
    let corrupt = Error::Storage(geodb_storage::Error::Corrupt("x".into()));
    assert_eq!(corrupt.code(), "XX001");
}

#[test]
fn concurrent_writers_conflict_with_40001() {
    use geodb_txn::Isolation;
    let h = table();
    let mut a = h.txns.begin(Isolation::Serializable).unwrap();
    let mut b = h.txns.begin(Isolation::Serializable).unwrap();
    h.db.execute(&mut a, "UPDATE t SET s = s + 1 WHERE id = 1", &[]).unwrap();
    let b_result = h.db.execute(&mut b, "UPDATE t SET s = s + 10 WHERE id = 1", &[]);
    a.commit().unwrap();
    let outcome: Result<(), Error> = match b_result {
        Ok(_) => b.commit().map(|_| ()).map_err(Error::from),
        Err(e) => {
            b.rollback();
            Err(e)
        }
    };
    let e = outcome.expect_err("the second writer must fail");
    assert_eq!(e.code(), "40001");
    assert!(e.is_retryable());
    assert_eq!(h.rows("SELECT s FROM t WHERE id = 1", &[]), vec![vec![Value::Int(2)]]);
}
