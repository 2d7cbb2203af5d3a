//! INSERT, UPDATE, DELETE: constraints, index maintenance, conversions.

use geodb_sql::StatementKind;
use geodb_storage::Value;

use crate::harness::{Harness, dec, int, text};

fn accounts() -> Harness {
    let h = Harness::new();
    h.run("CREATE TABLE acct (id INT PRIMARY KEY, owner VARCHAR(8) NOT NULL, email TEXT, balance DECIMAL(8,2))");
    h.run("CREATE UNIQUE INDEX acct_email ON acct (email)");
    h.run("CREATE INDEX acct_owner ON acct (owner)");
    h
}

#[test]
fn insert_reports_rows_affected_and_missing_columns_are_null() {
    let h = accounts();
    let r = h.exec("INSERT INTO acct (id, owner) VALUES (1, 'ann'), (2, 'bob')", &[]);
    assert_eq!((r.rows_affected, r.kind), (2, StatementKind::Insert));
    assert_eq!(
        h.rows("SELECT id, email, balance FROM acct ORDER BY id", &[]),
        vec![vec![int(1), Value::Null, Value::Null], vec![int(2), Value::Null, Value::Null]]
    );
}

#[test]
fn not_null_violation() {
    let h = accounts();
    assert_eq!(h.code("INSERT INTO acct (id) VALUES (1)", &[]), "23502");
    assert_eq!(h.code("INSERT INTO acct (id, owner) VALUES (NULL, 'x')", &[]), "23502");
    h.run("INSERT INTO acct (id, owner) VALUES (1, 'ann')");
    assert_eq!(h.code("UPDATE acct SET owner = NULL WHERE id = 1", &[]), "23502");
}

#[test]
fn primary_key_and_unique_index_violations() {
    let h = accounts();
    h.run("INSERT INTO acct VALUES (1, 'ann', 'a@x', 1)");
    assert_eq!(h.code("INSERT INTO acct VALUES (1, 'bob', 'b@x', 1)", &[]), "23505");
    assert_eq!(h.code("INSERT INTO acct VALUES (2, 'bob', 'a@x', 1)", &[]), "23505");
    // A duplicate within one statement, too.
    assert_eq!(h.code("INSERT INTO acct VALUES (3, 'c', 'c@x', 1), (3, 'd', 'd@x', 1)", &[]), "23505");
    // NULLs never collide in a unique index.
    h.run("INSERT INTO acct VALUES (4, 'd', NULL, 1), (5, 'e', NULL, 1)");
    assert_eq!(h.code("UPDATE acct SET email = 'a@x' WHERE id = 4", &[]), "23505");
    let err = h.try_exec("INSERT INTO acct VALUES (1, 'x', NULL, 0)", &[]).unwrap_err();
    assert_eq!(err.to_string(), "duplicate key value violates unique constraint \"acct_pkey\"");
}

#[test]
fn on_conflict_do_nothing_skips_duplicates() {
    let h = accounts();
    h.run("INSERT INTO acct VALUES (1, 'ann', 'a@x', 1)");
    let r = h.exec(
        "INSERT INTO acct VALUES (1, 'zed', 'z@x', 0), (2, 'bob', 'a@x', 0), (3, 'cy', 'c@x', 0) ON CONFLICT DO NOTHING",
        &[],
    );
    assert_eq!(r.rows_affected, 1);
    assert_eq!(h.rows("SELECT id FROM acct ORDER BY id", &[]), vec![vec![int(1)], vec![int(3)]]);
}

#[test]
fn update_maintains_secondary_indexes() {
    let h = accounts();
    h.run("INSERT INTO acct VALUES (1, 'ann', 'a@x', 1), (2, 'bob', 'b@x', 2)");
    let r = h.exec("UPDATE acct SET owner = 'cat', email = 'c@x' WHERE id = 1", &[]);
    assert_eq!((r.rows_affected, r.kind), (1, StatementKind::Update));
    h.assert_plan("SELECT id FROM acct WHERE owner = 'cat'", "Scan acct INDEX acct_owner (prefix 1 cols)");
    assert_eq!(h.rows("SELECT id FROM acct WHERE owner = 'cat'", &[]), vec![vec![int(1)]]);
    assert!(h.rows("SELECT id FROM acct WHERE owner = 'ann'", &[]).is_empty());
    h.assert_plan("SELECT id FROM acct WHERE email = 'c@x'", "Get acct INDEX acct_email (email)");
    assert_eq!(h.rows("SELECT id FROM acct WHERE email = 'c@x'", &[]), vec![vec![int(1)]]);
    assert!(h.rows("SELECT id FROM acct WHERE email = 'a@x'", &[]).is_empty());
    // The old unique value is free again.
    h.run("INSERT INTO acct VALUES (3, 'dan', 'a@x', 0)");
}

#[test]
fn update_of_primary_key_moves_the_row() {
    let h = accounts();
    h.run("INSERT INTO acct VALUES (1, 'ann', 'a@x', 1), (2, 'bob', 'b@x', 2)");
    h.run("UPDATE acct SET id = 10 WHERE id = 1");
    assert_eq!(h.rows("SELECT id FROM acct ORDER BY id", &[]), vec![vec![int(2)], vec![int(10)]]);
    assert_eq!(h.rows("SELECT id FROM acct WHERE email = 'a@x'", &[]), vec![vec![int(10)]]);
    assert_eq!(h.rows("SELECT id FROM acct WHERE owner = 'ann'", &[]), vec![vec![int(10)]]);
    assert_eq!(h.code("UPDATE acct SET id = 2 WHERE id = 10", &[]), "23505");
}

#[test]
fn update_with_expressions_and_no_match() {
    let h = accounts();
    h.run("INSERT INTO acct VALUES (1, 'ann', 'a@x', 10.50), (2, 'bob', 'b@x', 2)");
    let r = h.exec("UPDATE acct SET balance = balance * 2 + $1 WHERE balance > $2", &[text("0.005"), int(5)]);
    assert_eq!(r.rows_affected, 1);
    assert_eq!(h.rows("SELECT balance FROM acct WHERE id = 1", &[]), vec![vec![dec("21.01")]]);
    assert_eq!(h.exec("UPDATE acct SET balance = 0 WHERE id = 99", &[]).rows_affected, 0);
    assert_eq!(h.exec("UPDATE acct SET balance = 0", &[]).rows_affected, 2);
}

#[test]
fn delete_removes_rows_and_index_entries() {
    let h = accounts();
    h.run("INSERT INTO acct VALUES (1, 'ann', 'a@x', 1), (2, 'bob', 'b@x', 2), (3, 'ann', 'c@x', 3)");
    let r = h.exec("DELETE FROM acct WHERE owner = 'ann' AND balance < 2", &[]);
    assert_eq!((r.rows_affected, r.kind), (1, StatementKind::Delete));
    assert_eq!(h.rows("SELECT id FROM acct WHERE owner = 'ann'", &[]), vec![vec![int(3)]]);
    h.run("INSERT INTO acct VALUES (1, 'ann', 'a@x', 1)");
    assert_eq!(h.exec("DELETE FROM acct", &[]).rows_affected, 3);
    assert!(h.rows("SELECT * FROM acct", &[]).is_empty());
}

#[test]
fn value_conversions_on_assignment() {
    let h = Harness::new();
    h.run("CREATE TABLE v (id INT PRIMARY KEY, s SMALLINT, d DECIMAL(5,2), c VARCHAR(3), t TIMESTAMP, b BOOLEAN)");
    h.run("INSERT INTO v (id, d) VALUES (1, 1.005)");
    assert_eq!(h.rows("SELECT d FROM v WHERE id = 1", &[]), vec![vec![dec("1.01")]]);
    assert_eq!(h.code("INSERT INTO v (id, s) VALUES (2, 40000)", &[]), "22003");
    assert_eq!(h.code("INSERT INTO v (id) VALUES (3000000000)", &[]), "22003");
    assert_eq!(h.code("INSERT INTO v (id, d) VALUES (2, 1000)", &[]), "22003");
    assert_eq!(h.code("INSERT INTO v (id, c) VALUES (2, 'abcd')", &[]), "22001");
    assert_eq!(h.code("INSERT INTO v (id) VALUES ('x')", &[]), "22P02");
    assert_eq!(h.code("INSERT INTO v (id, b) VALUES (2, 5)", &[]), "42804");
    assert_eq!(h.code("INSERT INTO v (id, t) VALUES (2, 'yesterday-ish')", &[]), "22007");
    // Text spelling a value is converted (an untyped literal, a JSON string).
    h.exec(
        "INSERT INTO v (id, s, d, t, b) VALUES ($1, $2, $3, $4, $5)",
        &[text("2"), text("7"), text("3.14159"), text("2024-01-02T03:04:05.5Z"), text("true")],
    );
    let row = &h.rows("SELECT s, d, t, b FROM v WHERE id = 2", &[])[0];
    let json: Vec<serde_json::Value> = row.iter().map(geodb_sql::value_to_json).collect();
    assert_eq!(serde_json::Value::Array(json), serde_json::json!([7, "3.14", "2024-01-02T03:04:05.500Z", true]));
}

#[test]
fn insert_column_errors() {
    let h = accounts();
    assert_eq!(h.code("INSERT INTO acct (id, nope) VALUES (1, 2)", &[]), "42703");
    assert_eq!(h.code("INSERT INTO acct (id, id) VALUES (1, 2)", &[]), "42701");
    assert_eq!(h.code("INSERT INTO acct (id, owner) VALUES (1)", &[]), "42601");
    assert_eq!(h.code("INSERT INTO nope VALUES (1)", &[]), "42P01");
    assert_eq!(h.code("UPDATE acct SET nope = 1", &[]), "42703");
}
