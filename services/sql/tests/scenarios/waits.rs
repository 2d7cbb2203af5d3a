//! Which statements tell the program they may run for long
//! (`geodb_storage::wait`): a server runs brief ones on its async worker
//! and frees the worker for the rest, so a statement that should say so
//! and does not would stall every connection queued behind it.

use std::cell::Cell;

use geodb_storage::Value;
use geodb_txn::Isolation;

use crate::harness::Harness;

thread_local! {
    /// Calls of the hook on this thread (each test runs on its own).
    static HOOK_CALLS: Cell<u64> = const { Cell::new(0) };
}

fn counting_hook(work: &mut dyn FnMut()) {
    HOOK_CALLS.with(|calls| calls.set(calls.get() + 1));
    work();
}

/// How many times running `sql` (not committing it) went through the hook.
fn hook_calls(h: &Harness, sql: &str) -> u64 {
    let mut txn = h.txns.begin(Isolation::Serializable).expect("begin");
    let before = HOOK_CALLS.with(Cell::get);
    h.db.execute(&mut txn, sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let calls = HOOK_CALLS.with(Cell::get) - before;
    txn.rollback();
    calls
}

#[test]
fn long_statements_say_so_and_brief_ones_run_where_they_are_called() {
    geodb_storage::wait::set_blocking_hook(counting_hook);
    let h = Harness::new();
    let mut txn = h.txns.begin(Isolation::Serializable).expect("begin");
    let before = HOOK_CALLS.with(Cell::get);
    h.db.execute(&mut txn, "CREATE TABLE t (k INT PRIMARY KEY, v INT)", &[]).unwrap();
    assert!(HOOK_CALLS.with(Cell::get) > before, "a schema change may run for long");
    txn.commit().unwrap();
    h.run("CREATE TABLE u (k INT PRIMARY KEY, w INT)");
    for k in 0..300 {
        h.exec("INSERT INTO t VALUES ($1, $2)", &[Value::Int(k), Value::Int(k % 7)]);
    }
    h.run("INSERT INTO u VALUES (1, 1), (2, 2)");
    hook_calls(&h, "SELECT v FROM t WHERE k = 1"); // the catalog, loaded once

    assert_eq!(hook_calls(&h, "SELECT v FROM t WHERE k = 1"), 0, "a point read is brief");
    assert_eq!(hook_calls(&h, "SELECT v FROM t WHERE k IN (1, 2, 3)"), 0, "a short IN list is brief");
    assert_eq!(hook_calls(&h, "SELECT k FROM t LIMIT 10"), 0, "a scan that stops in its first batch is brief");
    assert_eq!(hook_calls(&h, "UPDATE t SET v = 1 WHERE k = 2"), 0);
    assert_eq!(hook_calls(&h, "INSERT INTO t VALUES (1000, 1), (1001, 1)"), 0);

    let keys = (0..65).map(|k| k.to_string()).collect::<Vec<_>>().join(", ");
    assert!(hook_calls(&h, &format!("SELECT v FROM t WHERE k IN ({keys})")) > 0, "65 keys are not brief");
    let rows = (2000..2065).map(|k| format!("({k}, 0)")).collect::<Vec<_>>().join(", ");
    assert!(hook_calls(&h, &format!("INSERT INTO t VALUES {rows}")) > 0, "65 rows are not brief");
    assert!(hook_calls(&h, "SELECT count(*) FROM t") > 0, "a scan past its first batch says so");
    assert!(hook_calls(&h, "SELECT k FROM t LIMIT 300") > 0, "a limit beyond a batch says so at once");
    // `u` (two rows) first: the join reads `t` by point, so only the
    // plan's verdict says the statement may run for long.
    assert!(hook_calls(&h, "SELECT u.k FROM u JOIN t ON t.k = u.k") > 0, "a join is not brief");
    assert!(hook_calls(&h, &format!("UPDATE t SET v = 2 WHERE k IN ({keys})")) > 0, "65 keys updated are not brief");
    h.run("CREATE TABLE p (a INT, b INT, PRIMARY KEY (a, b))");
    hook_calls(&h, "SELECT b FROM p WHERE a = 1"); // the catalog, loaded again after the DDL
    assert_eq!(hook_calls(&h, "SELECT b FROM p WHERE a = 1"), 0, "a key prefix's first batch is brief");
    assert!(hook_calls(&h, "SELECT b FROM p WHERE a IN (1, 2)") > 0, "an IN list over part of a key is not brief");
    assert!(hook_calls(&h, "CREATE INDEX t_v ON t (v)") > 0, "an index's backfill is not brief");
}
