//! The TPC-C schema and the statement shapes of its five transactions,
//! with the access path EXPLAIN shows for each.

use geodb_storage::Value;

use crate::harness::{Harness, dec, int, text};

const SCHEMA: &[&str] = &[
    "CREATE TABLE warehouse (w_id INT PRIMARY KEY, w_name VARCHAR(10), w_street_1 VARCHAR(20), w_city VARCHAR(20), \
     w_state CHAR(2), w_zip CHAR(9), w_tax DECIMAL(4,4), w_ytd DECIMAL(12,2))",
    "CREATE TABLE district (d_w_id INT, d_id INT, d_name VARCHAR(10), d_tax DECIMAL(4,4), d_ytd DECIMAL(12,2), \
     d_next_o_id INT, PRIMARY KEY (d_w_id, d_id))",
    "CREATE TABLE customer (c_w_id INT, c_d_id INT, c_id INT, c_first VARCHAR(16) NOT NULL, c_middle CHAR(2), \
     c_last VARCHAR(16) NOT NULL, c_credit CHAR(2), c_credit_lim DECIMAL(12,2), c_discount DECIMAL(4,4), \
     c_balance DECIMAL(12,2), c_ytd_payment DECIMAL(12,2), c_payment_cnt INT, c_delivery_cnt INT, \
     c_since TIMESTAMP, c_data VARCHAR(500), PRIMARY KEY (c_w_id, c_d_id, c_id))",
    "CREATE TABLE history (h_c_w_id INT, h_c_d_id INT, h_c_id INT, h_date TIMESTAMP, h_d_id INT, h_w_id INT, \
     h_amount DECIMAL(6,2), h_data VARCHAR(24), PRIMARY KEY (h_c_w_id, h_c_d_id, h_c_id, h_date))",
    "CREATE TABLE new_order (no_w_id INT, no_d_id INT, no_o_id INT, PRIMARY KEY (no_w_id, no_d_id, no_o_id))",
    "CREATE TABLE orders (o_w_id INT, o_d_id INT, o_id INT, o_c_id INT NOT NULL, o_entry_d TIMESTAMP, \
     o_carrier_id INT, o_ol_cnt INT, o_all_local INT, PRIMARY KEY (o_w_id, o_d_id, o_id))",
    "CREATE TABLE order_line (ol_w_id INT, ol_d_id INT, ol_o_id INT, ol_number INT, ol_i_id INT NOT NULL, \
     ol_supply_w_id INT, ol_delivery_d TIMESTAMP, ol_quantity INT, ol_amount DECIMAL(6,2), ol_dist_info CHAR(24), \
     PRIMARY KEY (ol_w_id, ol_d_id, ol_o_id, ol_number))",
    "CREATE TABLE item (i_id INT PRIMARY KEY, i_im_id INT, i_name VARCHAR(24), i_price DECIMAL(5,2), \
     i_data VARCHAR(50)) WITH (locality = 'global')",
    "CREATE TABLE stock (s_w_id INT, s_i_id INT, s_quantity INT, s_dist_01 CHAR(24), s_ytd INT, \
     s_order_cnt INT, s_remote_cnt INT, s_data VARCHAR(50), PRIMARY KEY (s_w_id, s_i_id))",
    "CREATE INDEX customer_idx ON customer (c_w_id, c_d_id, c_last, c_first)",
    "CREATE INDEX orders_idx ON orders (o_w_id, o_d_id, o_c_id, o_id)",
];

/// One warehouse, two districts, three customers each, five items,
/// orders 1..=3 in district 1 (order 3 not yet delivered).
fn loaded() -> Harness {
    let h = Harness::new();
    for ddl in SCHEMA {
        h.run(ddl);
    }
    h.run("INSERT INTO warehouse VALUES (1, 'w1', 's', 'c', 'NY', '123456789', 0.1000, 300000.00)");
    for d in 1..=2 {
        h.exec("INSERT INTO district VALUES ($1, $2, $3, 0.1234, 30000.00, 4)", &[int(1), int(d), text("d")]);
        for (c, first, last) in [(1, "ann", "BARBAR"), (2, "bob", "OUGHTABLE"), (3, "al", "BARBAR")] {
            h.exec(
                "INSERT INTO customer VALUES ($1, $2, $3, $4, 'OE', $5, 'GC', 50000.00, 0.0500, -10.00, 10.00, 1, 0, \
                 '2024-01-01T00:00:00Z', 'data')",
                &[int(1), int(d), int(c), text(first), text(last)],
            );
        }
    }
    for i in 1..=5 {
        h.exec("INSERT INTO item VALUES ($1, $2, $3, $4, 'original')", &[int(i), int(i), text("item"), text("9.99")]);
        h.exec("INSERT INTO stock VALUES ($1, $2, $3, 'dist', 0, 0, 0, 'data')", &[int(1), int(i), int(5 + i)]);
    }
    for o in 1..=3 {
        h.exec(
            "INSERT INTO orders VALUES (1, 1, $1, $2, '2024-01-01T00:00:00Z', NULL, 2, 1)",
            &[int(o), int(o % 2 + 1)],
        );
        for n in 1..=2 {
            h.exec(
                "INSERT INTO order_line VALUES (1, 1, $1, $2, $3, 1, NULL, 5, $4, 'info')",
                &[int(o), int(n), int(o + n), Value::Float(1.25)],
            );
        }
    }
    h.run("INSERT INTO new_order VALUES (1, 1, 2), (1, 1, 3)");
    h
}

#[test]
fn tpcc_new_order() {
    let h = loaded();
    let q = "SELECT w_tax FROM warehouse WHERE w_id = $1";
    h.assert_plan(q, "Get warehouse PRIMARY KEY (w_id)");
    assert_eq!(h.rows(q, &[int(1)]), vec![vec![dec("0.1000")]]);

    let q = "UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = $1 AND d_id = $2";
    h.assert_plan(q, "Get district PRIMARY KEY (d_w_id, d_id)");
    assert_eq!(h.exec(q, &[int(1), int(2)]).rows_affected, 1);
    let q = "SELECT d_next_o_id, d_tax FROM district WHERE d_w_id = $1 AND d_id = $2";
    assert_eq!(h.rows(q, &[int(1), int(2)]), vec![vec![int(5), dec("0.1234")]]);
    let json: Vec<serde_json::Value> = h.rows(q, &[int(1), int(2)])[0].iter().map(geodb_sql::value_to_json).collect();
    assert_eq!(json, vec![serde_json::json!(5), serde_json::json!("0.1234")]);

    let q = "SELECT c_discount, c_last, c_credit FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3";
    h.assert_plan(q, "Get customer PRIMARY KEY (c_w_id, c_d_id, c_id)");
    assert_eq!(h.rows(q, &[int(1), int(2), int(3)]), vec![vec![dec("0.05"), text("BARBAR"), text("GC")]]);

    h.exec("INSERT INTO orders (o_id, o_d_id, o_w_id, o_c_id, o_entry_d, o_ol_cnt, o_all_local) VALUES ($1, $2, $3, $4, $5, $6, $7)", &[
        int(4), int(2), int(1), int(3), text("2024-11-26T12:00:00Z"), int(1), int(1),
    ]);
    h.exec("INSERT INTO new_order (no_o_id, no_d_id, no_w_id) VALUES ($1, $2, $3)", &[int(4), int(2), int(1)]);

    let q = "SELECT i_price, i_name, i_data FROM item WHERE i_id = $1";
    h.assert_plan(q, "Get item PRIMARY KEY (i_id)");
    assert_eq!(h.rows(q, &[int(3)]), vec![vec![dec("9.99"), text("item"), text("original")]]);
    assert!(h.rows(q, &[int(99)]).is_empty());

    let q = "SELECT s_quantity, s_data, s_dist_01 FROM stock WHERE s_i_id = $1 AND s_w_id = $2 FOR UPDATE";
    h.assert_plan(q, "Get stock PRIMARY KEY (s_w_id, s_i_id)");
    assert_eq!(h.rows(q, &[int(3), int(1)]), vec![vec![int(8), text("data"), text("dist")]]);
    let q = "UPDATE stock SET s_quantity = $1, s_ytd = s_ytd + $2, s_order_cnt = s_order_cnt + 1, \
             s_remote_cnt = s_remote_cnt + $3 WHERE s_i_id = $4 AND s_w_id = $5";
    assert_eq!(h.exec(q, &[int(3), int(5), int(0), int(3), int(1)]).rows_affected, 1);
    assert_eq!(
        h.rows("SELECT s_quantity, s_ytd, s_order_cnt FROM stock WHERE s_w_id = 1 AND s_i_id = 3", &[]),
        vec![vec![int(3), int(5), int(1)]]
    );
    h.exec(
        "INSERT INTO order_line (ol_o_id, ol_d_id, ol_w_id, ol_number, ol_i_id, ol_supply_w_id, ol_quantity, \
         ol_amount, ol_dist_info) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[int(4), int(2), int(1), int(1), int(3), int(1), int(5), text("49.95"), text("dist")],
    );
}

#[test]
fn tpcc_payment() {
    let h = loaded();
    let q = "UPDATE warehouse SET w_ytd = w_ytd + $1 WHERE w_id = $2";
    h.assert_plan(q, "Get warehouse PRIMARY KEY (w_id)");
    h.exec(q, &[text("12.34"), int(1)]);
    h.exec(
        "UPDATE district SET d_ytd = d_ytd + $1 WHERE d_w_id = $2 AND d_id = $3",
        &[Value::Float(0.66), int(1), int(1)],
    );
    assert_eq!(h.rows("SELECT w_ytd FROM warehouse WHERE w_id = 1", &[]), vec![vec![dec("300012.34")]]);
    assert_eq!(h.rows("SELECT d_ytd FROM district WHERE d_w_id = 1 AND d_id = 1", &[]), vec![vec![dec("30000.66")]]);

    let q = "SELECT c_id FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_last = $3 ORDER BY c_first";
    assert_eq!(h.explain(q), vec!["Scan customer INDEX customer_idx (prefix 3 cols)"]);
    assert_eq!(h.rows(q, &[int(1), int(1), text("BARBAR")]), vec![vec![int(3)], vec![int(1)]]);
    let q = "SELECT COUNT(c_id) FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_last = $3";
    assert_eq!(h.rows(q, &[int(1), int(1), text("BARBAR")]), vec![vec![int(2)]]);

    let q = "UPDATE customer SET c_balance = c_balance - $1, c_ytd_payment = c_ytd_payment + $1, \
             c_payment_cnt = c_payment_cnt + 1 WHERE c_w_id = $2 AND c_d_id = $3 AND c_id = $4";
    h.assert_plan(q, "Get customer PRIMARY KEY (c_w_id, c_d_id, c_id)");
    h.exec(q, &[text("5.50"), int(1), int(1), int(3)]);
    assert_eq!(
        h.rows(
            "SELECT c_balance, c_ytd_payment, c_payment_cnt FROM customer WHERE c_w_id = 1 AND c_d_id = 1 AND c_id = 3",
            &[]
        ),
        vec![vec![dec("-15.50"), dec("15.50"), int(2)]]
    );
    h.exec(
        "INSERT INTO history (h_c_d_id, h_c_w_id, h_c_id, h_d_id, h_w_id, h_date, h_amount, h_data) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[int(1), int(1), int(3), int(1), int(1), text("2024-11-26T12:00:00.123456Z"), text("5.50"), text("w1 d")],
    );
    let h_date = h.rows("SELECT h_date FROM history", &[]);
    assert_eq!(geodb_sql::value_to_json(&h_date[0][0]), serde_json::json!("2024-11-26T12:00:00.123456Z"));
}

#[test]
fn tpcc_order_status() {
    let h = loaded();
    let q = "SELECT o_id, o_carrier_id, o_entry_d FROM orders WHERE o_w_id = $1 AND o_d_id = $2 AND o_c_id = $3 \
             ORDER BY o_id DESC LIMIT 1";
    assert_eq!(h.explain(q), vec!["Limit 1", "Scan orders INDEX orders_idx (prefix 3 cols) reverse limit 1"]);
    // Customer 2 placed orders 1 and 3.
    let rows = h.rows(q, &[int(1), int(1), int(2)]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][..2], [int(3), Value::Null]);
    let q = "SELECT ol_i_id, ol_supply_w_id, ol_quantity, ol_amount, ol_delivery_d FROM order_line \
             WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id = $3";
    h.assert_plan(q, "Scan order_line PRIMARY KEY (prefix 3 cols)");
    assert_eq!(
        h.rows(q, &[int(1), int(1), int(3)]),
        vec![
            vec![int(4), int(1), int(5), dec("1.25"), Value::Null],
            vec![int(5), int(1), int(5), dec("1.25"), Value::Null]
        ]
    );
}

#[test]
fn tpcc_delivery() {
    let h = loaded();
    let q = "SELECT MIN(no_o_id) FROM new_order WHERE no_w_id = $1 AND no_d_id = $2";
    assert_eq!(h.explain(q), vec!["Aggregate", "Scan new_order PRIMARY KEY (prefix 2 cols) limit 1"]);
    assert_eq!(h.rows(q, &[int(1), int(1)]), vec![vec![int(2)]]);
    assert_eq!(h.rows(q, &[int(1), int(2)]), vec![vec![Value::Null]]);

    let q = "DELETE FROM new_order WHERE no_w_id = $1 AND no_d_id = $2 AND no_o_id = $3";
    h.assert_plan(q, "Get new_order PRIMARY KEY (no_w_id, no_d_id, no_o_id)");
    assert_eq!(h.exec(q, &[int(1), int(1), int(2)]).rows_affected, 1);
    assert_eq!(
        h.rows("SELECT MIN(no_o_id) FROM new_order WHERE no_w_id = $1 AND no_d_id = $2", &[int(1), int(1)]),
        vec![vec![int(3)]]
    );

    let q = "SELECT o_c_id FROM orders WHERE o_w_id = $1 AND o_d_id = $2 AND o_id = $3";
    h.assert_plan(q, "Get orders PRIMARY KEY (o_w_id, o_d_id, o_id)");
    assert_eq!(h.rows(q, &[int(1), int(1), int(2)]), vec![vec![int(1)]]);
    h.exec(
        "UPDATE orders SET o_carrier_id = $1 WHERE o_w_id = $2 AND o_d_id = $3 AND o_id = $4",
        &[int(7), int(1), int(1), int(2)],
    );
    let q = "UPDATE order_line SET ol_delivery_d = $1 WHERE ol_w_id = $2 AND ol_d_id = $3 AND ol_o_id = $4";
    h.assert_plan(q, "Scan order_line PRIMARY KEY (prefix 3 cols)");
    assert_eq!(h.exec(q, &[text("2024-11-26T13:00:00Z"), int(1), int(1), int(2)]).rows_affected, 2);
    let q = "SELECT SUM(ol_amount) FROM order_line WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id = $3";
    assert_eq!(h.rows(q, &[int(1), int(1), int(2)]), vec![vec![dec("2.50")]]);
    h.exec(
        "UPDATE customer SET c_balance = c_balance + $1, c_delivery_cnt = c_delivery_cnt + 1 \
         WHERE c_w_id = $2 AND c_d_id = $3 AND c_id = $4",
        &[text("2.50"), int(1), int(1), int(1)],
    );
    // The index on orders follows the carrier update (not an indexed column)
    // and still finds the order.
    assert_eq!(
        h.rows(
            "SELECT o_carrier_id FROM orders WHERE o_w_id = 1 AND o_d_id = 1 AND o_c_id = 1 ORDER BY o_id DESC LIMIT 1",
            &[]
        ),
        vec![vec![int(7)]]
    );
}

#[test]
fn tpcc_stock_level() {
    let h = loaded();
    let q = "SELECT d_next_o_id FROM district WHERE d_w_id = $1 AND d_id = $2";
    assert_eq!(h.rows(q, &[int(1), int(1)]), vec![vec![int(4)]]);
    let q = "SELECT COUNT(DISTINCT s_i_id) FROM order_line JOIN stock ON ol_i_id = s_i_id AND s_w_id = $1 \
             WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id < $3 AND ol_o_id >= $4 AND s_quantity < $5";
    assert_eq!(
        h.explain(q),
        vec![
            "Aggregate",
            "NestedLoopJoin",
            "Scan order_line PRIMARY KEY (prefix 2 cols, range on ol_o_id)",
            "Get stock PRIMARY KEY (s_w_id, s_i_id)"
        ]
    );
    // Orders 1..3 use items 2, 3 | 3, 4 | 4, 5; stock quantity is 5 + item.
    assert_eq!(h.rows(q, &[int(1), int(1), int(4), int(1), int(10)]), vec![vec![int(3)]]);
    assert_eq!(h.rows(q, &[int(1), int(1), int(4), int(2), int(9)]), vec![vec![int(1)]]);
    assert_eq!(h.rows(q, &[int(1), int(1), int(2), int(1), int(100)]), vec![vec![int(2)]]);
}

#[test]
fn tpcc_item_scan_is_full() {
    let h = loaded();
    let q = "SELECT COUNT(*) FROM item";
    assert_eq!(h.explain(q), vec!["Aggregate", "Scan item FULL"]);
    assert_eq!(h.rows(q, &[]), vec![vec![int(5)]]);
}
