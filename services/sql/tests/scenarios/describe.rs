//! Describing statements without running them: parameter and result
//! types, as the PostgreSQL extended protocol's `Describe` answers them.

use geodb_sql::{Description, StatementKind};
use geodb_storage::DataType;
use geodb_txn::Isolation;

use crate::harness::Harness;

const DECIMAL: DataType = DataType::Decimal { precision: 28, scale: 0 };

fn shop() -> Harness {
    let h = Harness::new();
    h.run("CREATE TABLE orders (id BIGINT PRIMARY KEY, customer INT, total DECIMAL(10,2), weight REAL, note TEXT)");
    h.run("CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20), vip BOOLEAN, since TIMESTAMP)");
    h
}

fn describe(h: &Harness, sql: &str) -> Description {
    h.db.describe_statement(sql, &[], None).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn result_types(h: &Harness, sql: &str) -> Vec<Option<DataType>> {
    describe(h, sql).columns.into_iter().map(|column| column.ty).collect()
}

#[test]
fn parameters_take_the_type_of_their_context() {
    let h = shop();
    let insert = describe(&h, "INSERT INTO orders (id, total, note) VALUES ($1, $2, $3)");
    assert_eq!(insert.kind, StatementKind::Insert);
    assert_eq!(
        insert.params,
        [Some(DataType::BigInt), Some(DataType::Decimal { precision: 10, scale: 2 }), Some(DataType::Text)]
    );
    assert!(insert.columns.is_empty(), "an INSERT returns no rows");
    let update = describe(&h, "UPDATE customers SET vip = $1 WHERE since < $2 AND id = $3");
    assert_eq!(update.params, [Some(DataType::Bool), Some(DataType::Timestamp), Some(DataType::Int)]);
    let select =
        describe(&h, "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer WHERE c.name = $1 LIMIT $2");
    assert_eq!(select.params, [Some(DataType::Varchar(20)), Some(DataType::BigInt)]);
    assert_eq!(describe(&h, "SELECT $1::bigint, $2").params, [Some(DataType::BigInt), None], "no context, no type");
    // A type the client declares wins over the context's.
    let declared = h.db.describe_statement("SELECT id FROM orders WHERE id = $1", &[Some(DataType::Text)], None);
    assert_eq!(declared.unwrap().params, [Some(DataType::Text)]);
}

#[test]
fn results_take_postgresql_types() {
    let h = shop();
    let columns = describe(&h, "SELECT o.id, c.name AS who, total * 2, weight * weight, customer + 1, 1, 10000000000 FROM orders o JOIN customers c ON c.id = o.customer").columns;
    let names: Vec<&str> = columns.iter().map(|column| column.name.as_str()).collect();
    assert_eq!(names[..2], ["id", "who"]);
    let types: Vec<Option<DataType>> = columns.into_iter().map(|column| column.ty).collect();
    assert_eq!(
        types,
        [
            Some(DataType::BigInt),
            Some(DataType::Varchar(20)),
            Some(DECIMAL),
            Some(DataType::Real),
            Some(DataType::Int),
            Some(DataType::Int),
            Some(DataType::BigInt)
        ]
    );
    assert_eq!(
        result_types(
            &h,
            "SELECT customer, count(*), sum(customer), sum(id), avg(total), avg(weight), max(note) FROM orders GROUP BY customer"
        ),
        [
            Some(DataType::Int),
            Some(DataType::BigInt),
            Some(DataType::BigInt),
            Some(DECIMAL),
            Some(DECIMAL),
            Some(DataType::Double),
            Some(DataType::Text)
        ]
    );
    assert_eq!(
        result_types(
            &h,
            "SELECT id > 1, note || 'x', CAST(total AS DOUBLE PRECISION), COALESCE(NULL, note), NULL FROM orders"
        ),
        [Some(DataType::Bool), Some(DataType::Text), Some(DataType::Double), Some(DataType::Text), None]
    );
    assert_eq!(result_types(&h, "EXPLAIN SELECT id FROM orders"), [Some(DataType::Text)]);
    assert!(describe(&h, "CREATE INDEX by_note ON orders (note)").columns.is_empty());
}

#[test]
fn a_transaction_describes_the_tables_it_created_before_it_commits() {
    let h = shop();
    let mut txn = h.txns.begin(Isolation::Serializable).unwrap();
    h.db.execute(&mut txn, "CREATE TABLE fresh (id BIGINT PRIMARY KEY, label TEXT)", &[]).unwrap();
    let sql = "SELECT label FROM fresh WHERE id = $1";
    let own = h.db.describe_statement(sql, &[], Some(&mut txn)).unwrap();
    assert_eq!((own.params, own.columns[0].ty), (vec![Some(DataType::BigInt)], Some(DataType::Text)));
    assert_eq!(h.db.describe_statement(sql, &[], None).unwrap_err().code(), "42P01", "not committed yet");
    txn.commit().unwrap();
    assert_eq!(describe(&h, sql).params, [Some(DataType::BigInt)]);
}
