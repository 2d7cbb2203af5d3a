//! Column families (`WITH (family_<name> = 'columns')`): a row stored as
//! several values, so that transactions reading and writing different
//! columns of one row do not conflict, while every statement still sees
//! whole rows and conflicts on the same columns still abort.

use geodb_storage::Value;
use geodb_txn::{Isolation, Transaction};

use proptest::prelude::*;

use crate::harness::{Harness, dec, int, text};

/// TPC-C's district, with its year-to-date and next-order counters in
/// families of their own; and the same table without families.
fn districts() -> Harness {
    let h = Harness::new();
    for (name, with) in
        [("district", " WITH (family_ytd = 'd_ytd', family_next = 'd_tax, d_next_o_id')"), ("plain", "")]
    {
        h.run(&format!(
            "CREATE TABLE {name} (d_w_id INT, d_id INT, d_name TEXT, d_tax DECIMAL(4,4), d_ytd DECIMAL(12,2), \
             d_next_o_id INT, PRIMARY KEY (d_w_id, d_id)){with}"
        ));
        for d in 1..=5 {
            h.run(&format!("INSERT INTO {name} VALUES (1, {d}, 'd{d}', 0.1000, 30000.00, 3001)"));
        }
    }
    h
}

fn begin(h: &Harness, isolation: Isolation) -> Transaction {
    h.txns.begin(isolation).expect("begin")
}

fn run(h: &Harness, txn: &mut Transaction, sql: &str) -> Vec<Vec<Value>> {
    h.db.execute(txn, sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).rows
}

/// The SQLSTATE of a commit, or `None` when it committed.
fn commit(txn: Transaction) -> Option<String> {
    txn.commit().err().map(|e| geodb_sql::Error::from(e).code().to_string())
}

#[test]
fn rows_with_families_read_and_write_like_whole_rows() {
    let h = districts();
    for table in ["district", "plain"] {
        let all = format!("SELECT * FROM {table} WHERE d_w_id = 1 AND d_id = 2");
        assert_eq!(
            h.rows(&all, &[]),
            vec![vec![int(1), int(2), text("d2"), dec("0.1000"), dec("30000.00"), int(3001)]],
            "{table}"
        );
        h.run(&format!("UPDATE {table} SET d_ytd = d_ytd + 10.50 WHERE d_w_id = 1 AND d_id = 2"));
        h.run(&format!(
            "UPDATE {table} SET d_next_o_id = d_next_o_id + 1, d_name = 'two' WHERE d_w_id = 1 AND d_id = 2"
        ));
        assert_eq!(
            h.rows(&all, &[]),
            vec![vec![int(1), int(2), text("two"), dec("0.1000"), dec("30010.50"), int(3002)]],
            "{table}"
        );
        // One family's columns, another's, none (existence only).
        let one = format!("SELECT d_next_o_id FROM {table} WHERE d_w_id = 1 AND d_id = 2");
        assert_eq!(h.rows(&one, &[]), vec![vec![int(3002)]], "{table}");
        let count = format!("SELECT COUNT(*) FROM {table} WHERE d_w_id = 1 AND d_id = 2");
        assert_eq!(h.rows(&count, &[]), vec![vec![int(1)]], "{table}");
        // Scans, forwards and backwards, with a limit: whole rows, once each.
        let scan = format!("SELECT d_id, d_ytd, d_next_o_id FROM {table} WHERE d_w_id = 1 ORDER BY d_id DESC LIMIT 2");
        assert_eq!(
            h.rows(&scan, &[]),
            vec![vec![int(5), dec("30000.00"), int(3001)], vec![int(4), dec("30000.00"), int(3001)]],
            "{table}"
        );
        let sum = format!("SELECT SUM(d_ytd), COUNT(*) FROM {table}");
        assert_eq!(h.rows(&sum, &[]), vec![vec![dec("150010.50"), int(5)]], "{table}");
        let filtered = format!("SELECT d_id FROM {table} WHERE d_next_o_id > 3001");
        assert_eq!(h.rows(&filtered, &[]), vec![vec![int(2)]], "{table}");
        // An index on a family's column, built over existing rows, kept up
        // to date by an update of that family alone, and gone with a delete.
        h.run(&format!("CREATE INDEX {table}_next ON {table} (d_next_o_id)"));
        h.run(&format!("UPDATE {table} SET d_next_o_id = 4000 WHERE d_w_id = 1 AND d_id = 3"));
        let by_index = format!("SELECT d_id, d_name FROM {table} WHERE d_next_o_id = 4000");
        assert_eq!(h.rows(&by_index, &[]), vec![vec![int(3), text("d3")]], "{table}");
        h.run(&format!("DELETE FROM {table} WHERE d_w_id = 1 AND d_id = 3"));
        assert!(h.rows(&by_index, &[]).is_empty(), "{table}");
        assert!(h.rows(&format!("SELECT d_ytd FROM {table} WHERE d_w_id = 1 AND d_id = 3"), &[]).is_empty());
        // A row whose key changes moves with every family.
        h.run(&format!("UPDATE {table} SET d_id = 9 WHERE d_w_id = 1 AND d_id = 4"));
        let moved = format!("SELECT d_name, d_ytd, d_next_o_id FROM {table} WHERE d_w_id = 1 AND d_id = 9");
        assert_eq!(h.rows(&moved, &[]), vec![vec![text("d4"), dec("30000.00"), int(3001)]], "{table}");
        assert_eq!(h.rows(&count.replace("d_id = 2", "d_id = 4"), &[]), vec![vec![int(0)]], "{table}");
        // SELECT ... FOR UPDATE of a scanned row re-reads it whole.
        let mut txn = begin(&h, Isolation::Serializable);
        let locked = run(
            &h,
            &mut txn,
            &format!("SELECT d_id, d_ytd FROM {table} WHERE d_w_id = 1 AND d_ytd > 30005 FOR UPDATE"),
        );
        assert_eq!(locked, vec![vec![int(2), dec("30010.50")]], "{table}");
        assert_eq!(commit(txn), None);
    }
}

/// New-Order reads `d_tax` and `d_next_o_id` and bumps the latter while
/// Payment bumps `d_ytd` of the same district: in families of their own,
/// both commit and both changes stay; in one row value, the second aborts.
#[test]
fn writers_of_different_families_of_one_row_both_commit() {
    let h = districts();
    for (table, expect) in [("district", None), ("plain", Some("40001".to_string()))] {
        for isolation in [Isolation::Snapshot, Isolation::Serializable] {
            let key = "WHERE d_w_id = 1 AND d_id = 1";
            let before = h.rows(&format!("SELECT d_ytd, d_next_o_id FROM {table} {key}"), &[]);
            let mut new_order = begin(&h, isolation);
            let mut payment = begin(&h, isolation);
            run(&h, &mut new_order, &format!("SELECT d_tax, d_next_o_id FROM {table} {key} FOR UPDATE"));
            run(&h, &mut new_order, &format!("UPDATE {table} SET d_next_o_id = d_next_o_id + 1 {key}"));
            run(&h, &mut payment, &format!("UPDATE {table} SET d_ytd = d_ytd + 1.00 {key}"));
            run(&h, &mut payment, &format!("SELECT d_name FROM {table} {key}"));
            assert_eq!(commit(new_order), None, "{table} {isolation:?}");
            assert_eq!(commit(payment), expect, "{table} {isolation:?}");
            let after = h.rows(&format!("SELECT d_ytd, d_next_o_id FROM {table} {key}"), &[]);
            let (Value::Decimal(ytd), Value::Int(next)) = (&before[0][0], &before[0][1]) else { panic!("{before:?}") };
            let ytd = if expect.is_none() { *ytd + rust_decimal::Decimal::ONE } else { *ytd };
            assert_eq!(after, vec![vec![Value::Decimal(ytd), int(next + 1)]], "{table} {isolation:?}");
        }
    }
}

/// The same columns still conflict: two increments of one counter never
/// both commit (no lost update), and a serializable reader of a column
/// aborts when that column changed under it.
#[test]
fn writers_of_one_family_still_conflict() {
    let h = districts();
    let key = "WHERE d_w_id = 1 AND d_id = 1";
    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        let mut a = begin(&h, isolation);
        let mut b = begin(&h, isolation);
        run(&h, &mut a, &format!("UPDATE district SET d_ytd = d_ytd + 1.00 {key}"));
        run(&h, &mut b, &format!("UPDATE district SET d_ytd = d_ytd + 2.00 {key}"));
        assert_eq!(commit(a), None);
        assert_eq!(commit(b).as_deref(), Some("40001"), "{isolation:?}");
    }
    assert_eq!(h.rows(&format!("SELECT d_ytd FROM district {key}"), &[]), vec![vec![dec("30002.00")]]);
    // Write skew across families is still serializable's to prevent: a
    // reader of d_ytd that writes d_name aborts when d_ytd changed.
    let mut reader = begin(&h, Isolation::Serializable);
    let mut writer = begin(&h, Isolation::Serializable);
    run(&h, &mut reader, &format!("SELECT d_ytd FROM district {key}"));
    run(&h, &mut reader, &format!("UPDATE district SET d_name = 'read ytd' {key}"));
    run(&h, &mut writer, &format!("UPDATE district SET d_ytd = 0 {key}"));
    assert_eq!(commit(writer), None);
    assert_eq!(commit(reader).as_deref(), Some("40001"));
    // Snapshot isolation allows it (the reader wrote another family): the
    // write skew that level is documented to allow.
    let mut reader = begin(&h, Isolation::Snapshot);
    let mut writer = begin(&h, Isolation::Snapshot);
    run(&h, &mut reader, &format!("SELECT d_ytd FROM district {key}"));
    run(&h, &mut reader, &format!("UPDATE district SET d_name = 'read ytd' {key}"));
    run(&h, &mut writer, &format!("UPDATE district SET d_ytd = 5 {key}"));
    assert_eq!(commit(writer), None);
    assert_eq!(commit(reader), None);
    assert_eq!(
        h.rows(&format!("SELECT d_name, d_ytd FROM district {key}"), &[]),
        vec![vec![text("read ytd"), dec("5.00")]]
    );
}

/// A delete and a concurrent update of another family of the row
/// conflict: the row is gone as a whole or not at all.
#[test]
fn a_delete_conflicts_with_an_update_of_any_family() {
    let h = districts();
    let key = "WHERE d_w_id = 1 AND d_id = 5";
    let mut deleter = begin(&h, Isolation::Snapshot);
    let mut updater = begin(&h, Isolation::Snapshot);
    run(&h, &mut deleter, &format!("DELETE FROM district {key}"));
    run(&h, &mut updater, &format!("UPDATE district SET d_ytd = 1 {key}"));
    assert_eq!(commit(updater), None);
    assert_eq!(commit(deleter).as_deref(), Some("40001"));
    assert_eq!(h.rows(&format!("SELECT d_name, d_ytd FROM district {key}"), &[]), vec![vec![text("d5"), dec("1.00")]]);
}

/// `FOR UPDATE` locks the families of the columns it selects (the primary
/// one when it selects none, as for a joined table used by its key): a
/// writer of those conflicts, a writer of another family does not.
#[test]
fn for_update_locks_the_families_it_reads() {
    let h = districts();
    let key = "WHERE d_w_id = 1 AND d_id = 1";
    let cases = [
        (format!("SELECT d_ytd FROM district {key} FOR UPDATE"), "UPDATE district SET d_ytd = 1", Some("40001")),
        (format!("SELECT d_ytd FROM district {key} FOR UPDATE"), "UPDATE district SET d_name = 'n'", None),
        (format!("SELECT 1 FROM district {key} FOR UPDATE"), "UPDATE district SET d_name = 'n'", Some("40001")),
        (
            "SELECT p.d_name FROM plain p JOIN district d ON d.d_w_id = p.d_w_id AND d.d_id = p.d_id \
             WHERE p.d_w_id = 1 AND p.d_id = 1 FOR UPDATE"
                .to_string(),
            "UPDATE district SET d_name = 'n'",
            Some("40001"),
        ),
    ];
    for (locking, writing, expect) in cases {
        let mut locker = begin(&h, Isolation::Snapshot);
        let mut writer = begin(&h, Isolation::Snapshot);
        assert_eq!(run(&h, &mut locker, &locking).len(), 1, "{locking}");
        run(&h, &mut writer, &format!("{writing} {key}"));
        assert_eq!(commit(writer), None, "{locking} / {writing}");
        assert_eq!(commit(locker).as_deref(), expect, "{locking} / {writing}");
    }
}

/// An update of one family checks `NOT NULL` on what it assigns, not on
/// the columns of families it did not read; and `SET c = c` writes c's
/// family, so it conflicts like any write of it.
#[test]
fn an_update_of_one_family_checks_and_writes_what_it_assigns() {
    let h = Harness::new();
    h.run("CREATE TABLE t (k INT PRIMARY KEY, a INT, b INT NOT NULL) WITH (family_x = 'b')");
    h.run("INSERT INTO t VALUES (1, 0, 0)");
    h.run("UPDATE t SET a = 1 WHERE k = 1");
    assert_eq!(h.code("UPDATE t SET b = NULL WHERE k = 1", &[]), "23502");
    assert_eq!(h.rows("SELECT a, b FROM t", &[]), vec![vec![int(1), int(0)]]);
    let mut same = begin(&h, Isolation::Snapshot);
    let mut other = begin(&h, Isolation::Snapshot);
    run(&h, &mut same, "UPDATE t SET b = b WHERE k = 1");
    run(&h, &mut other, "UPDATE t SET b = 5 WHERE k = 1");
    assert_eq!(commit(other), None);
    assert_eq!(commit(same).as_deref(), Some("40001"));
}

/// Names in a family's list are matched as written, then as an unquoted
/// identifier would be; a backup writes them so that they read back.
#[test]
fn family_columns_are_named_as_written_and_backed_up_so() {
    let h = Harness::new();
    h.run("CREATE TABLE q (k INT PRIMARY KEY, \"Mixed\" INT, \"it's\" INT, plain INT) WITH (family_f = 'Mixed, it''s, PLAIN')");
    h.run("INSERT INTO q VALUES (1, 2, 3, 4)");
    assert_eq!(h.rows("SELECT \"it's\", plain FROM q WHERE k = 1", &[]), vec![vec![int(3), int(4)]]);
    let catalog = h.db.catalog();
    let table = catalog.table("q").expect("table");
    let ddl = geodb_sql::backup::create_statements(table);
    assert!(ddl[0].ends_with("WITH (family_f = 'Mixed, it''s, plain')"), "{}", ddl[0]);
    let again = Harness::new();
    again.run(&ddl[0].replace("\"q\"", "r"));
    again.run("INSERT INTO r VALUES (1, 2, 3, 4)");
    assert_eq!(again.rows("SELECT * FROM r", &[]), vec![vec![int(1), int(2), int(3), int(4)]]);
}

/// A serializable scan with a limit records only the rows it returned: a
/// writer of the next row's first value in scan order (its primary family
/// forwards, its last family backwards) does not abort it.
#[test]
fn a_scan_with_a_limit_reads_nothing_past_its_last_row() {
    let h = districts();
    for table in ["district", "plain"] {
        for (order, first, next, set) in [("ASC", 1, 2, "d_name = 'n'"), ("DESC", 5, 4, "d_next_o_id = 0")] {
            let mut reader = begin(&h, Isolation::Serializable);
            let scan = format!("SELECT d_id FROM {table} WHERE d_w_id = 1 ORDER BY d_id {order} LIMIT 1");
            assert_eq!(run(&h, &mut reader, &scan), vec![vec![int(first)]]);
            run(&h, &mut reader, &format!("UPDATE {table} SET d_name = 'seen' WHERE d_w_id = 1 AND d_id = {first}"));
            let mut writer = begin(&h, Isolation::Serializable);
            run(&h, &mut writer, &format!("UPDATE {table} SET {set} WHERE d_w_id = 1 AND d_id = {next}"));
            assert_eq!(commit(writer), None, "{table} {order}");
            assert_eq!(commit(reader), None, "{table} {order}: read past its limit");
        }
    }
}

#[test]
fn bad_family_declarations_are_refused() {
    let h = Harness::new();
    for (with, code) in [
        ("family_a = 'k'", "42P16"),    // a primary-key column
        ("family_a = 'nope'", "42703"), // no such column
        ("family_a = 'v', family_b = 'v'", "42P16"),
        ("family_a = 'v', family_a = 'w'", "42P16"),
        ("family_primary = 'v'", "42P16"),
        ("\"family_Hot Set\" = 'v'", "42P16"),
        ("family_ = 'v'", "42P16"),
        ("family_a = 3", "22023"),
        ("colour = 'v'", "22023"),
    ] {
        let sql = format!("CREATE TABLE t (k INT PRIMARY KEY, v INT, w INT) WITH ({with})");
        assert_eq!(h.code(&sql, &[]), code, "{with}");
    }
    let columns: Vec<String> = (0..17).map(|i| format!("c{i} INT")).collect();
    let families: Vec<String> = (1..17).map(|i| format!("family_f{i} = 'c{i}'")).collect();
    let sql = format!("CREATE TABLE wide ({}, PRIMARY KEY (c0)) WITH ({})", columns.join(", "), families.join(", "));
    assert_eq!(h.code(&sql, &[]), "42P16");
    // Fifteen fit, and the table works.
    let families: Vec<String> = (1..16).map(|i| format!("family_f{i} = 'c{i}'")).collect();
    h.run(&format!("CREATE TABLE wide ({}, PRIMARY KEY (c0)) WITH ({})", columns.join(", "), families.join(", ")));
    let values: Vec<String> = (0..17).map(|i| i.to_string()).collect();
    h.run(&format!("INSERT INTO wide VALUES ({})", values.join(", ")));
    assert_eq!(h.rows("SELECT c15, c16, c1 FROM wide WHERE c0 = 0", &[]), vec![vec![int(15), int(16), int(1)]]);
}

/// Read Committed never validates: a delete and an update of another
/// family of the row both commit, last writer winning per stored value.
/// The update's family outlives the row, and no statement shows it: a row
/// exists exactly when its primary family does.
#[test]
fn at_read_committed_a_family_that_outlives_its_row_is_never_shown() {
    let h = districts();
    let key = "WHERE d_w_id = 1 AND d_id = 5";
    let mut deleter = begin(&h, Isolation::ReadCommitted);
    let mut updater = begin(&h, Isolation::ReadCommitted);
    run(&h, &mut deleter, &format!("DELETE FROM district {key}"));
    run(&h, &mut updater, &format!("UPDATE district SET d_ytd = 1 {key}"));
    assert_eq!(commit(deleter), None);
    assert_eq!(commit(updater), None);
    for sql in [
        format!("SELECT d_ytd FROM district {key}"),
        format!("SELECT * FROM district {key}"),
        "SELECT d_id FROM district WHERE d_w_id = 1 AND d_id > 4".to_string(),
        "SELECT d_id FROM district WHERE d_ytd = 1".to_string(),
    ] {
        assert!(h.rows(&sql, &[]).is_empty(), "{sql}");
    }
    assert_eq!(h.rows("SELECT COUNT(*) FROM district", &[]), vec![vec![int(4)]]);
    // Inserting the row again writes every family: the stale one is gone.
    h.run("INSERT INTO district VALUES (1, 5, 'again', 0.2000, 7.00, 1)");
    assert_eq!(
        h.rows(&format!("SELECT d_name, d_ytd, d_next_o_id FROM district {key}"), &[]),
        vec![vec![text("again"), dec("7.00"), int(1)]]
    );
}

/// One step of the equivalence test below.
#[derive(Clone, Debug)]
enum Step {
    Insert(i64, i64, i64, i64),
    /// Inserts rows `k` from `first` on (those not there yet): enough
    /// stored values for scans to cross their batches.
    Fill(i64, i64),
    /// Sets columns (a, b, c by bit) of the rows with `k` in a range.
    Update(i64, i64, u8, i64),
    /// The same of the one row with key `k`.
    UpdateOne(i64, u8, i64),
    /// Moves a row to another key.
    Rekey(i64, i64),
    Delete(i64),
    Query(usize, i64),
}

fn step() -> impl Strategy<Value = Step> {
    let key = 0..120i64;
    let value = -3..4i64;
    prop_oneof![
        (key.clone(), value.clone(), value.clone(), value.clone()).prop_map(|(k, a, b, c)| Step::Insert(k, a, b, c)),
        (key.clone(), value.clone()).prop_map(|(first, v)| Step::Fill(first, v)),
        (key.clone(), key.clone(), 1..8u8, value.clone()).prop_map(|(lo, hi, set, v)| Step::Update(lo, hi, set, v)),
        (key.clone(), 1..8u8, value.clone()).prop_map(|(k, set, v)| Step::UpdateOne(k, set, v)),
        (key.clone(), key.clone()).prop_map(|(from, to)| Step::Rekey(from, to)),
        key.clone().prop_map(Step::Delete),
        (0..QUERIES.len(), value).prop_map(|(query, v)| Step::Query(query, v)),
    ]
}

/// `a = a + $3, ...` for the columns (a, b, c) whose bits are set.
fn assignments(set: u8) -> String {
    let columns: Vec<String> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .filter(|(i, _)| set & (1 << i) != 0)
        .map(|(_, c)| format!("{c} = {c} + $3"))
        .collect();
    columns.join(", ")
}

/// Queries with `$1`: point reads of one family or several, scans both
/// ways with limits, an index, aggregates, a locking read.
const QUERIES: &[&str] = &[
    "SELECT b FROM {t} WHERE g = 1 AND k = $1 + 3",
    "SELECT a, c FROM {t} WHERE g = 1 AND k = $1 + 5",
    "SELECT * FROM {t} WHERE g = 1 AND k = $1 + 6",
    "SELECT COUNT(*) FROM {t} WHERE g = 1 AND k = $1 + 4",
    "SELECT k, a, b, c FROM {t} WHERE g = 1 ORDER BY k DESC LIMIT 3",
    "SELECT k, b FROM {t} WHERE g = 1 AND k > $1 + 3 ORDER BY k LIMIT 2",
    "SELECT k, a, b, c FROM {t} WHERE g = 1 ORDER BY k DESC",
    "SELECT MAX(k), MIN(k) FROM {t} WHERE g = 1",
    "SELECT a, COUNT(*) FROM {t} WHERE g = 1 GROUP BY a HAVING SUM(c) > $1 ORDER BY a",
    "SELECT k FROM {t} WHERE b = $1 ORDER BY k",
    "SELECT SUM(a), SUM(b), SUM(c), COUNT(*) FROM {t}",
    "SELECT k, c FROM {t} WHERE g = 1 AND c > $1 ORDER BY k FOR UPDATE",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any sequence of statements gives the same answers and leaves the
    /// same rows in a table with column families (one per column, and a
    /// shared one) as in the same table without.
    #[test]
    fn a_table_with_families_answers_as_one_without(steps in proptest::collection::vec(step(), 1..40)) {
        let h = Harness::new();
        let tables = ["plain", "split", "pair"];
        for (table, with) in [
            ("plain", ""),
            ("split", " WITH (family_fa = 'a', family_fb = 'b', family_fc = 'c')"),
            ("pair", " WITH (family_ab = 'b, a')"),
        ] {
            h.run(&format!("CREATE TABLE {table} (g INT, k INT, a INT, b INT, c INT NOT NULL, PRIMARY KEY (g, k)){with}"));
            h.run(&format!("CREATE INDEX {table}_b ON {table} (b)"));
        }
        for step in steps {
            let mut answers = Vec::new();
            for table in tables {
                let (sql, params) = match &step {
                    Step::Insert(k, a, b, c) => {
                        (format!("INSERT INTO {table} VALUES (1, $1, $2, $3, $4)"), vec![int(*k), int(*a), int(*b), int(*c)])
                    }
                    Step::Fill(first, v) => {
                        let rows: Vec<String> = (*first..first + 80).map(|k| format!("(1, {k}, {v}, {k} % 5, {v})")).collect();
                        (format!("INSERT INTO {table} VALUES {} ON CONFLICT DO NOTHING", rows.join(", ")), Vec::new())
                    }
                    Step::Update(lo, hi, set, v) => {
                        let sql = format!("UPDATE {table} SET {} WHERE g = 1 AND k BETWEEN $1 AND $2", assignments(*set));
                        (sql, vec![int(*lo), int(*hi), int(*v)])
                    }
                    Step::UpdateOne(k, set, v) => {
                        let sql = format!("UPDATE {table} SET {} WHERE g = 1 AND k = $1", assignments(*set).replace("$3", "$2"));
                        (sql, vec![int(*k), int(*v)])
                    }
                    Step::Rekey(from, to) => {
                        (format!("UPDATE {table} SET k = $2 WHERE g = 1 AND k = $1"), vec![int(*from), int(*to)])
                    }
                    Step::Delete(k) => (format!("DELETE FROM {table} WHERE g = 1 AND k = $1"), vec![int(*k)]),
                    Step::Query(query, v) => {
                        let sql = QUERIES[*query].replace("{t}", table);
                        let params = if sql.contains("$1") { vec![int(*v)] } else { Vec::new() };
                        (sql, params)
                    }
                };
                answers.push(h.try_exec(&sql, &params).map(|r| (r.rows, r.rows_affected)).map_err(|e| e.code().to_string()));
            }
            if matches!(step, Step::Query(..)) {
                prop_assert!(answers[0].is_ok(), "{:?}: {:?}", step, answers[0]);
            }
            prop_assert_eq!(&answers[0], &answers[1], "{:?}", step);
            prop_assert_eq!(&answers[0], &answers[2], "{:?}", step);
        }
        let all = |table: &str| h.rows(&format!("SELECT * FROM {table} ORDER BY g, k"), &[]);
        prop_assert_eq!(all("plain"), all("split"));
        prop_assert_eq!(all("plain"), all("pair"));
    }
}
