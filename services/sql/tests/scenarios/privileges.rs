//! Users, grants and the privilege checks: a refused statement reads and
//! writes nothing, a grant lets a user in, a revoke shuts it out again.

use geodb_sql::Database;
use geodb_sql::access::ROOT;
use geodb_txn::Isolation;

use crate::harness::{Harness, int, text};

impl Harness {
    /// Runs one statement as `user` in its own serializable transaction;
    /// the SQLSTATE it failed with, if it did.
    fn as_user(&self, user: &str, sql: &str) -> Result<Vec<Vec<geodb_storage::Value>>, String> {
        let mut txn = self.txns.begin(Isolation::Serializable).expect("begin");
        match self.db.execute_as(&mut txn, sql, &[], Some(user)) {
            Ok(result) => {
                txn.commit().map_err(|e| geodb_sql::Error::from(e).code().to_string())?;
                Ok(result.rows)
            }
            Err(error) => {
                txn.rollback();
                Err(error.code().to_string())
            }
        }
    }
}

fn with_table() -> Harness {
    let h = Harness::new();
    h.run("CREATE TABLE t (k INT, id INT, v TEXT, PRIMARY KEY (k, id))");
    h.run("INSERT INTO t VALUES (1, 1, 'a'), (1, 2, 'b')");
    h.run("CREATE USER alice WITH PASSWORD 'wonderland'");
    h
}

#[test]
fn a_user_without_grants_is_refused_and_changes_nothing() {
    let h = with_table();
    for sql in [
        "SELECT v FROM t WHERE k = 1",
        "INSERT INTO t VALUES (1, 3, 'c')",
        "UPDATE t SET v = 'z' WHERE k = 1 AND id = 1",
        "DELETE FROM t WHERE k = 1",
        "DELETE FROM t",
        "SELECT v FROM t WHERE k = 1 FOR UPDATE",
        "EXPLAIN SELECT v FROM t",
        "CREATE TABLE u (a INT PRIMARY KEY)",
        "DROP TABLE t",
        "CREATE INDEX t_v ON t (v)",
        "CREATE USER mallory",
        "GRANT SELECT ON t TO alice",
        "GRANT admin TO alice",
        "ALTER USER root PASSWORD 'mine'",
    ] {
        assert_eq!(h.as_user("alice", sql), Err("42501".to_string()), "{sql}");
    }
    assert_eq!(h.rows("SELECT id, v FROM t ORDER BY id", &[]), vec![vec![int(1), text("a")], vec![int(2), text("b")]]);
    assert_eq!(h.code("SELECT * FROM u", &[]), "42P01");
    // An unknown user (dropped meanwhile) is refused too.
    assert_eq!(h.as_user("nobody", "SELECT v FROM t"), Err("42501".to_string()));
}

#[test]
fn grants_let_a_user_in_and_revokes_shut_it_out() {
    let h = with_table();
    h.run("GRANT SELECT ON TABLE t TO alice");
    assert_eq!(h.as_user("alice", "SELECT v FROM t WHERE k = 1 AND id = 2"), Ok(vec![vec![text("b")]]));
    // Writing needs its own privilege; an UPDATE with a WHERE also reads.
    assert_eq!(h.as_user("alice", "INSERT INTO t VALUES (1, 3, 'c')"), Err("42501".into()));
    h.run("GRANT INSERT, UPDATE ON t TO alice");
    assert_eq!(h.as_user("alice", "INSERT INTO t VALUES (1, 3, 'c')"), Ok(vec![]));
    assert_eq!(h.as_user("alice", "UPDATE t SET v = 'z' WHERE k = 1 AND id = 3"), Ok(vec![]));
    h.run("REVOKE SELECT ON t FROM alice");
    assert_eq!(h.as_user("alice", "UPDATE t SET v = 'y' WHERE k = 1 AND id = 3"), Err("42501".into()));
    // Without a WHERE and without reading a column, UPDATE needs UPDATE only.
    assert_eq!(h.as_user("alice", "UPDATE t SET v = 'all'"), Ok(vec![]));
    assert_eq!(h.as_user("alice", "DELETE FROM t WHERE k = 1"), Err("42501".into()));
    h.run("GRANT ALL PRIVILEGES ON t TO alice");
    assert_eq!(h.as_user("alice", "DELETE FROM t WHERE k = 1 AND id = 3"), Ok(vec![]));
    h.run("REVOKE ALL ON t FROM alice");
    assert_eq!(h.as_user("alice", "SELECT v FROM t"), Err("42501".into()));
    // DDL and user statements need admin; admin has every privilege.
    h.run("GRANT admin TO alice");
    assert_eq!(h.as_user("alice", "CREATE TABLE u (a INT PRIMARY KEY)"), Ok(vec![]));
    assert_eq!(h.as_user("alice", "SELECT v FROM t WHERE k = 1 AND id = 1"), Ok(vec![vec![text("all")]]));
    assert_eq!(h.as_user("alice", "CREATE USER bob PASSWORD 'b'"), Ok(vec![]));
    h.run("REVOKE admin FROM alice");
    assert_eq!(h.as_user("alice", "DROP TABLE u"), Err("42501".into()));
}

#[test]
fn a_dropped_and_recreated_table_starts_without_grants() {
    let h = with_table();
    h.run("GRANT SELECT ON t TO alice");
    h.run("DROP TABLE t");
    h.run("CREATE TABLE t (k INT PRIMARY KEY)");
    assert_eq!(h.as_user("alice", "SELECT k FROM t"), Err("42501".into()));
}

#[test]
fn user_statements_have_postgresql_codes() {
    let h = with_table();
    assert_eq!(h.code("CREATE USER alice", &[]), "42710");
    assert_eq!(h.code("CREATE USER root", &[]), "42710");
    assert_eq!(h.code("CREATE USER admin", &[]), "42939");
    h.run("CREATE USER IF NOT EXISTS alice");
    assert_eq!(h.code("ALTER USER nobody PASSWORD 'x'", &[]), "42704");
    assert_eq!(h.code("DROP USER nobody", &[]), "42704");
    h.run("DROP USER IF EXISTS nobody");
    assert_eq!(h.code("DROP USER root", &[]), "42501");
    assert_eq!(h.code("REVOKE admin FROM root", &[]), "42501");
    assert_eq!(h.code("GRANT SELECT ON nope TO alice", &[]), "42P01");
    assert_eq!(h.code("GRANT SELECT ON t TO nobody", &[]), "42704");
    assert_eq!(h.code("CREATE USER x PASSWORD 'p'", &[geodb_storage::Value::Int(1)]), "08P01");
    h.run("DROP USER alice");
    assert!(h.db.user("alice").unwrap().is_none());
}

#[test]
fn users_are_in_the_catalog_and_passwords_only_as_verifiers() {
    let h = with_table();
    h.run("ALTER USER root WITH PASSWORD 'rootpw'");
    // Another node's SQL layer on the same store sees them.
    let other = Database::open(h.txns.clone()).unwrap();
    let alice = other.user("alice").unwrap().expect("alice");
    assert!(!alice.admin);
    let verifier = alice.password.expect("a verifier");
    assert!(verifier.check("wonderland") && !verifier.check("Wonderland"));
    let root = other.user(ROOT).unwrap().expect("root");
    assert!(root.admin && root.password.unwrap().check("rootpw"));
    h.run("ALTER USER alice PASSWORD NULL");
    assert!(other.user("alice").unwrap().unwrap().password.is_none());
    // Nothing stored holds the password's text.
    let mut txn = h.txns.begin(Isolation::Snapshot).unwrap();
    let all = txn.scan(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, false, None).unwrap();
    txn.rollback();
    assert!(!all.iter().any(|(_, value)| value.windows(6).any(|w| w == b"rootpw")));
}

#[test]
fn a_user_change_in_a_rolled_back_transaction_never_happened() {
    let h = with_table();
    let mut txn = h.txns.begin(Isolation::Serializable).unwrap();
    h.db.execute(&mut txn, "GRANT SELECT ON t TO alice", &[]).unwrap();
    txn.rollback();
    assert_eq!(h.as_user("alice", "SELECT v FROM t"), Err("42501".into()));
}
