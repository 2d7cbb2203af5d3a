//! Property tests: no input makes the SQL layer panic.

use geodb_sql::{json_to_param, parse_control};
use geodb_storage::Value;
use proptest::prelude::*;

use crate::harness::Harness;

const TOKENS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "CREATE",
    "TABLE",
    "INDEX",
    "DROP",
    "ON",
    "JOIN",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "DISTINCT",
    "AND",
    "OR",
    "NOT",
    "IN",
    "BETWEEN",
    "LIKE",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "COUNT",
    "SUM",
    "MIN",
    "MAX",
    "AVG",
    "CAST",
    "AS",
    "INT",
    "DECIMAL(5,2)",
    "TEXT",
    "PRIMARY",
    "KEY",
    "EXPLAIN",
    "FOR",
    "UPDATE",
    "BEGIN",
    "COMMIT",
    "ISOLATION",
    "LEVEL",
    "t",
    "u",
    "a",
    "b",
    "c",
    "t.a",
    "*",
    "(",
    ")",
    ",",
    ";",
    "=",
    "<",
    ">",
    "<=",
    ">=",
    "<>",
    "+",
    "-",
    "/",
    "%",
    "||",
    "$1",
    "$2",
    "0",
    "1",
    "-1",
    "9223372036854775807",
    "1.5",
    "1e308",
    "'x'",
    "'2024-01-01'",
    "''",
];

fn harness() -> Harness {
    let h = Harness::new();
    h.run("CREATE TABLE t (a INT PRIMARY KEY, b TEXT, c DECIMAL(5,2))");
    h.run("CREATE TABLE u (a INT, b INT, PRIMARY KEY (a, b))");
    h.run("CREATE INDEX t_b ON t (b)");
    h.run("INSERT INTO t VALUES (1, 'x', 1.5), (2, NULL, NULL), (3, 'y', -2)");
    h.run("INSERT INTO u VALUES (1, 1), (1, 2), (3, 3)");
    h
}

fn param() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
        ".{0,8}".prop_map(Value::Text),
    ]
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,8}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,4}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_strings_never_panic(sql in ".{0,80}", params in prop::collection::vec(param(), 0..3)) {
        let h = harness();
        let _ = parse_control(&sql);
        let _ = h.try_exec(&sql, &params);
    }

    #[test]
    fn token_soups_never_panic(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 1..24),
        params in prop::collection::vec(param(), 0..3),
    ) {
        let h = harness();
        let sql = tokens.join(" ");
        let _ = parse_control(&sql);
        let _ = h.try_exec(&sql, &params);
        let _ = h.try_exec(&format!("SELECT {sql}"), &params);
        let _ = h.try_exec(&format!("SELECT * FROM t WHERE {sql}"), &params);
    }

    #[test]
    fn random_json_params_never_panic(value in json()) {
        let _ = json_to_param(&value);
    }
}
