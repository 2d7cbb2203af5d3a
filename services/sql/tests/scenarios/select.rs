//! SELECT: projections, filters, joins, aggregates, ordering, limits,
//! NULL semantics, parameters, access paths and the statement cache.

use geodb_sql::StatementKind;
use geodb_storage::Value;

use crate::harness::{Harness, dec, int, text};

fn people() -> Harness {
    let h = Harness::new();
    h.run("CREATE TABLE dept (id INT PRIMARY KEY, name TEXT NOT NULL)");
    h.run(
        "CREATE TABLE emp (dept INT, id INT, name TEXT NOT NULL, salary DECIMAL(10,2), boss INT, \
         PRIMARY KEY (dept, id))",
    );
    h.run("INSERT INTO dept VALUES (1, 'eng'), (2, 'ops'), (3, 'empty')");
    h.run(
        "INSERT INTO emp VALUES (1, 1, 'ann', 100.00, NULL), (1, 2, 'bob', 80.50, 1), (1, 3, 'cy', NULL, 1), \
         (2, 1, 'dee', 70.00, NULL), (2, 2, 'ed', 70.00, 1)",
    );
    h
}

#[test]
fn projections_aliases_and_wildcards() {
    let h = people();
    let r = h.exec("SELECT e.name AS who, salary * 2, e.id + 1 AS next, d.* FROM emp e JOIN dept d ON d.id = e.dept WHERE e.dept = 2 AND e.id = 1", &[]);
    assert_eq!(r.kind, StatementKind::Select);
    assert_eq!(r.columns, vec!["who", "?column?", "next", "id", "name"]);
    assert_eq!(r.rows, vec![vec![text("dee"), dec("140.0000"), int(2), int(2), text("ops")]]);
    let r = h.exec("SELECT COUNT(*), SUM(salary), MIN(name), MAX(id), AVG(id) FROM emp", &[]);
    assert_eq!(r.columns, vec!["count", "sum", "min", "max", "avg"]);
    assert_eq!(r.rows, vec![vec![int(5), dec("320.50"), text("ann"), int(3), dec("1.8")]]);
    assert_eq!(h.rows("SELECT 1 + 2, 'a' || 'b' || 3", &[]), vec![vec![int(3), text("ab3")]]);
}

#[test]
fn where_with_three_valued_logic() {
    let h = people();
    let ids = |sql: &str| -> Vec<i64> {
        h.rows(sql, &[])
            .into_iter()
            .map(|r| match r[0] {
                Value::Int(i) => i,
                ref other => panic!("{other:?}"),
            })
            .collect()
    };
    // NULL salary: neither > 75 nor NOT (> 75).
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 1 AND salary > 75 ORDER BY id"), vec![1, 2]);
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 1 AND NOT (salary > 75) ORDER BY id"), Vec::<i64>::new());
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 1 AND (salary > 75 OR boss IS NULL) ORDER BY id"), vec![1, 2]);
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 1 AND salary IS NULL"), vec![3]);
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 1 AND salary IS NOT NULL ORDER BY id"), vec![1, 2]);
    assert_eq!(ids("SELECT id FROM emp WHERE boss = NULL"), Vec::<i64>::new());
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 1 AND id IN (1, 3, NULL) ORDER BY id"), vec![1, 3]);
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 1 AND id NOT IN (1, NULL)"), Vec::<i64>::new());
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 1 AND id BETWEEN 2 AND 3 ORDER BY id"), vec![2, 3]);
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 1 AND id NOT BETWEEN 2 AND 3"), vec![1]);
    assert_eq!(ids("SELECT id FROM emp WHERE name LIKE '_o%'"), vec![2]);
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 2 AND name NOT LIKE 'd%'"), vec![2]);
    assert_eq!(ids("SELECT id FROM emp WHERE dept = 1 AND CAST(salary AS INT) = 81"), vec![2]);
}

#[test]
fn null_aggregates() {
    let h = people();
    assert_eq!(
        h.rows("SELECT COUNT(*), COUNT(salary), SUM(salary), AVG(salary), MIN(salary) FROM emp WHERE dept = 9", &[]),
        vec![vec![int(0), int(0), Value::Null, Value::Null, Value::Null]]
    );
    assert_eq!(h.rows("SELECT COUNT(salary), COUNT(DISTINCT salary) FROM emp", &[]), vec![vec![int(4), int(3)]]);
    assert_eq!(h.rows("SELECT AVG(salary) FROM emp WHERE dept = 1", &[]), vec![vec![dec("90.25")]]);
}

#[test]
fn group_by_having_and_order() {
    let h = people();
    let r = h.exec(
        "SELECT dept, COUNT(*) AS n, SUM(salary) FROM emp GROUP BY dept HAVING COUNT(*) > 1 ORDER BY n DESC, dept",
        &[],
    );
    assert_eq!(r.columns, vec!["dept", "n", "sum"]);
    assert_eq!(r.rows, vec![vec![int(1), int(3), dec("180.50")], vec![int(2), int(2), dec("140.00")]]);
    assert_eq!(
        h.rows("SELECT d.name, COUNT(e.id) FROM dept d JOIN emp e ON e.dept = d.id GROUP BY d.name ORDER BY 2, 1", &[]),
        vec![vec![text("ops"), int(2)], vec![text("eng"), int(3)]]
    );
    assert_eq!(h.code("SELECT dept, name FROM emp GROUP BY dept", &[]), "42803");
    assert_eq!(h.code("SELECT id FROM emp WHERE COUNT(*) > 1", &[]), "42803");
}

#[test]
fn distinct_order_by_and_limit() {
    let h = people();
    assert_eq!(
        h.rows("SELECT DISTINCT salary FROM emp ORDER BY salary", &[]),
        vec![vec![dec("70.00")], vec![dec("80.50")], vec![dec("100.00")], vec![Value::Null]]
    );
    assert_eq!(
        h.rows("SELECT DISTINCT salary FROM emp ORDER BY 1 DESC LIMIT 2", &[]),
        vec![vec![Value::Null], vec![dec("100.00")]]
    );
    assert_eq!(
        h.rows("SELECT name FROM emp ORDER BY salary DESC NULLS LAST, name LIMIT $1", &[int(2)]),
        vec![vec![text("ann")], vec![text("bob")]]
    );
    assert_eq!(
        h.rows("SELECT name FROM emp ORDER BY dept, id LIMIT 2 OFFSET 1", &[]),
        vec![vec![text("bob")], vec![text("cy")]]
    );
    assert_eq!(h.rows("SELECT name FROM emp ORDER BY id * -1, name LIMIT 1", &[]), vec![vec![text("cy")]]);
    assert!(h.rows("SELECT name FROM emp LIMIT 0", &[]).is_empty());
    assert_eq!(h.code("SELECT name FROM emp LIMIT -1", &[]), "2201W");
    assert_eq!(h.code("SELECT name FROM emp ORDER BY 5", &[]), "42P10");
}

#[test]
fn joins_use_the_inner_primary_key() {
    let h = people();
    let sql = "SELECT e.name, d.name FROM emp e JOIN dept d ON d.id = e.dept WHERE e.dept = 1 ORDER BY e.id";
    assert_eq!(
        h.explain(sql),
        vec!["NestedLoopJoin", "Scan emp PRIMARY KEY (prefix 1 cols)", "Get dept PRIMARY KEY (id)"]
    );
    assert_eq!(
        h.rows(sql, &[]),
        vec![vec![text("ann"), text("eng")], vec![text("bob"), text("eng")], vec![text("cy"), text("eng")]]
    );
    // Three tables, a self join through the boss column, comma join.
    let rows = h.rows(
        "SELECT e.name, b.name, d.name FROM emp e INNER JOIN emp b ON b.dept = e.dept AND b.id = e.boss \
         JOIN dept d ON d.id = e.dept ORDER BY e.dept, e.id",
        &[],
    );
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], vec![text("bob"), text("ann"), text("eng")]);
    assert_eq!(h.rows("SELECT COUNT(*) FROM dept, emp", &[]), vec![vec![int(15)]]);
    assert_eq!(h.code("SELECT id FROM emp JOIN dept ON dept.id = emp.dept", &[]), "42702");
    assert_eq!(h.code("SELECT * FROM emp LEFT JOIN dept ON dept.id = emp.dept", &[]), "0A000");
}

#[test]
fn access_paths() {
    let h = people();
    h.run("CREATE INDEX emp_name ON emp (name)");
    h.assert_plan("SELECT * FROM emp WHERE dept = 1 AND id = 2", "Get emp PRIMARY KEY (dept, id)");
    h.assert_plan("SELECT * FROM emp WHERE dept = $1", "Scan emp PRIMARY KEY (prefix 1 cols)");
    h.assert_plan("SELECT * FROM emp WHERE dept = 1 AND id > 1", "Scan emp PRIMARY KEY (prefix 1 cols, range on id)");
    h.assert_plan("SELECT * FROM emp WHERE dept BETWEEN 1 AND 2", "Scan emp PRIMARY KEY (range on dept)");
    h.assert_plan("SELECT * FROM emp WHERE name = 'ann'", "Scan emp INDEX emp_name (prefix 1 cols)");
    h.assert_plan("SELECT * FROM emp WHERE name > 'b'", "Scan emp INDEX emp_name (range on name)");
    h.assert_plan("SELECT * FROM emp WHERE salary > 1", "Scan emp FULL");
    h.assert_plan("SELECT * FROM emp ORDER BY dept DESC, id DESC LIMIT 2", "Scan emp FULL reverse limit 2");
    h.assert_plan(
        "SELECT * FROM emp WHERE dept = 1 ORDER BY id LIMIT 1",
        "Scan emp PRIMARY KEY (prefix 1 cols) limit 1",
    );
    h.assert_plan("SELECT MAX(id) FROM emp WHERE dept = 1", "Scan emp PRIMARY KEY (prefix 1 cols) reverse limit 1");
    assert_eq!(h.explain("SELECT * FROM emp ORDER BY salary"), vec!["Sort (4)", "Scan emp FULL"]);
    // The answers match the plans.
    assert_eq!(
        h.rows("SELECT name FROM emp WHERE dept = 1 AND id > 1 ORDER BY id", &[]),
        vec![vec![text("bob")], vec![text("cy")]]
    );
    assert_eq!(h.rows("SELECT id FROM emp WHERE name > 'd' ORDER BY name", &[]), vec![vec![int(1)], vec![int(2)]]);
    assert_eq!(
        h.rows("SELECT name FROM emp ORDER BY dept DESC, id DESC LIMIT 2", &[]),
        vec![vec![text("ed")], vec![text("dee")]]
    );
    assert_eq!(h.rows("SELECT MAX(id), MIN(id) FROM emp WHERE dept = 1", &[]), vec![vec![int(3), int(1)]]);
    assert_eq!(h.rows("SELECT MAX(id) FROM emp WHERE dept = 1", &[]), vec![vec![int(3)]]);
    assert_eq!(h.rows("SELECT MIN(id) FROM emp WHERE dept = 7", &[]), vec![vec![Value::Null]]);
    // A key compared with a value of another type still finds its row.
    assert_eq!(h.rows("SELECT name FROM emp WHERE dept = 1.0 AND id = '2'", &[]), vec![vec![text("bob")]]);
    assert!(h.rows("SELECT name FROM emp WHERE dept = 1.5", &[]).is_empty());
}

#[test]
fn for_update_reads_rows() {
    let h = people();
    h.assert_plan("SELECT salary FROM emp WHERE dept = 1 AND id = 1 FOR UPDATE", "Get emp PRIMARY KEY (dept, id)");
    assert_eq!(h.rows("SELECT salary FROM emp WHERE dept = 1 AND id = 1 FOR UPDATE", &[]), vec![vec![dec("100.00")]]);
    assert_eq!(
        h.rows("SELECT id FROM emp WHERE dept = 2 AND salary > 1 ORDER BY id FOR UPDATE", &[]),
        vec![vec![int(1)], vec![int(2)]]
    );
}

#[test]
fn parameters_take_their_column_type() {
    let h = Harness::new();
    h.run("CREATE TABLE ev (id INT PRIMARY KEY, at TIMESTAMP, amount DECIMAL(12,2), ok BOOLEAN)");
    h.exec(
        "INSERT INTO ev VALUES ($1, $2, $3, $4)",
        &[int(1), text("2024-11-26T00:00:00Z"), Value::Float(12.5), Value::Bool(true)],
    );
    assert_eq!(h.rows("SELECT id FROM ev WHERE at = $1", &[text("2024-11-26T00:00:00Z")]), vec![vec![int(1)]]);
    assert_eq!(h.rows("SELECT id FROM ev WHERE amount = $1", &[text("12.50")]), vec![vec![int(1)]]);
    assert_eq!(h.rows("SELECT id FROM ev WHERE amount = $1", &[Value::Float(12.5)]), vec![vec![int(1)]]);
    assert_eq!(h.rows("SELECT id FROM ev WHERE id = $1", &[text("1")]), vec![vec![int(1)]]);
    assert_eq!(h.rows("SELECT amount + $1 FROM ev", &[text("0.25")]), vec![vec![dec("12.75")]]);
    assert_eq!(h.code("SELECT id FROM ev WHERE at = $1", &[text("not a time")]), "22007");
    assert_eq!(h.code("SELECT id FROM ev WHERE id = $1", &[text("x")]), "22P02");
    assert_eq!(h.code("SELECT id FROM ev WHERE id = $1", &[]), "08P01");
    assert_eq!(h.code("SELECT id FROM ev WHERE id = $1", &[int(1), int(2)]), "08P01");
}

#[test]
fn repeated_statement_is_a_cache_hit() {
    let h = people();
    let sql = "SELECT name FROM emp WHERE dept = $1 AND id = $2";
    let before = h.db.cache_stats();
    assert_eq!(h.rows(sql, &[int(1), int(1)]), vec![vec![text("ann")]]);
    let after_first = h.db.cache_stats();
    assert_eq!(after_first.misses, before.misses + 1);
    assert_eq!(h.rows(sql, &[int(2), int(2)]), vec![vec![text("ed")]]);
    let after_second = h.db.cache_stats();
    assert_eq!(after_second.hits, after_first.hits + 1);
    assert_eq!(after_second.misses, after_first.misses);
    // DDL changes the catalog: the plan is made again (and sees the index).
    h.run("CREATE INDEX emp_name ON emp (name)");
    let q = "SELECT id FROM emp WHERE name = $1";
    let stats = h.db.cache_stats();
    h.rows(q, &[text("ann")]);
    h.rows(q, &[text("bob")]);
    assert_eq!(h.db.cache_stats().hits, stats.hits + 1);
}

#[test]
fn select_without_from() {
    let h = Harness::new();
    assert_eq!(h.rows("SELECT 1 AS one, $1 + 1", &[int(41)]), vec![vec![int(1), int(42)]]);
    assert!(h.rows("SELECT 1 WHERE 1 = 0", &[]).is_empty());
    assert_eq!(h.rows("SELECT COALESCE(NULL, 2), CAST('12' AS INT), -(-3)", &[]), vec![vec![int(2), int(12), int(3)]]);
    assert_eq!(
        h.rows("SELECT 0.1 + 0.2, 7 / 2, 7 % 3, 7.0 / 2", &[]),
        vec![vec![dec("0.3"), int(3), int(1), dec("3.5")]]
    );
}

#[test]
fn in_lists_on_key_columns_are_point_reads_not_scans() {
    let h = Harness::new();
    h.run("CREATE TABLE item (i_id INT PRIMARY KEY, i_price DECIMAL(5,2))");
    h.run("CREATE TABLE stock (s_w_id INT, s_i_id INT, s_quantity INT, PRIMARY KEY (s_w_id, s_i_id))");
    h.run("CREATE TABLE ol (w INT, d INT, o INT, n INT, PRIMARY KEY (w, d, o, n))");
    for i in 1..=20 {
        h.exec("INSERT INTO item VALUES ($1, $2)", &[int(i), dec("1.50")]);
        h.exec("INSERT INTO stock VALUES (1, $1, $2)", &[int(i), int(i * 10)]);
        h.exec("INSERT INTO ol VALUES (1, 1, $1, 1), (1, 1, $1, 2)", &[int(i)]);
    }
    h.assert_plan("SELECT i_price FROM item WHERE i_id IN (3, 1, 2)", "Get item PRIMARY KEY (i_id) IN list of 3");
    h.assert_plan(
        "SELECT s_quantity FROM stock WHERE s_w_id = 1 AND s_i_id IN ($1, $2)",
        "Get stock PRIMARY KEY (s_w_id, s_i_id) IN list of 2",
    );
    h.assert_plan(
        "SELECT n FROM ol WHERE w = 1 AND d = 1 AND o IN (4, 5)",
        "Scan ol PRIMARY KEY (prefix 2 cols, o IN list of 2)",
    );
    let ids = |rows: Vec<Vec<Value>>| -> Vec<i64> {
        rows.into_iter()
            .map(|row| match &row[0] {
                Value::Int(i) => *i,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    // Duplicates, NULLs and absent values; rows come once each.
    let mut got = ids(h.rows("SELECT i_id FROM item WHERE i_id IN (3, 1, 3, NULL, 99, 2)", &[]));
    got.sort();
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(
        ids(h.rows(
            "SELECT s_quantity FROM stock WHERE s_w_id = 1 AND s_i_id IN ($1, $2) ORDER BY s_quantity DESC",
            &[int(4), int(7)]
        )),
        vec![70, 40]
    );
    assert_eq!(
        ids(h.rows("SELECT n FROM ol WHERE w = 1 AND d = 1 AND o IN (4, 5) ORDER BY o, n", &[])),
        vec![1, 2, 1, 2]
    );
    // Updates through an IN list touch exactly those rows.
    assert_eq!(
        h.exec("UPDATE stock SET s_quantity = 0 WHERE s_w_id = 1 AND s_i_id IN (5, 6, 50)", &[]).rows_affected,
        2
    );
    assert_eq!(ids(h.rows("SELECT COUNT(*) FROM stock WHERE s_w_id = 1 AND s_quantity = 0", &[])), vec![2]);
}
