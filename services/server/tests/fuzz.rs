//! Random statements and random JSON at the HTTP entry points: every
//! answer is a documented error or a success, never a crash — the node
//! answers `/healthz` after every case.

mod common;

use common::Server;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// Tokens that make statements the parser half-understands.
const TOKENS: &[&str] = &[
    "SELECT",
    "INSERT",
    "INTO",
    "UPDATE",
    "DELETE",
    "FROM",
    "WHERE",
    "SET",
    "VALUES",
    "CREATE",
    "TABLE",
    "INDEX",
    "DROP",
    "JOIN",
    "ON",
    "GROUP",
    "BY",
    "ORDER",
    "LIMIT",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "IS",
    "IN",
    "BETWEEN",
    "LIKE",
    "COUNT(*)",
    "SUM(v)",
    "MAX(k)",
    "(",
    ")",
    ",",
    "*",
    "+",
    "-",
    "/",
    "%",
    "||",
    "=",
    "<",
    ">=",
    "$1",
    "$2",
    "$99",
    "t",
    "k",
    "v",
    "0",
    "-1",
    "9223372036854775807",
    "1e308",
    "'x'",
    "''",
    "'%a_'",
    "1.5",
    "TRUE",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "EXPLAIN",
    "FOR",
    "DISTINCT",
    "AS",
    "INT",
    "TEXT",
    "DECIMAL(5,2)",
    "PRIMARY",
    "KEY",
    ";",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|x| json!(x)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(proptest::sample::select(TOKENS), 1..14).prop_map(|tokens| tokens.join(" ")),
        ".{0,40}",
    ]
}

#[test]
fn random_statements_and_json_never_crash_the_node() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path());
    runtime.block_on(async {
        server.sql("CREATE TABLE t (k INT PRIMARY KEY, v INT)", json!([])).await;
        server.sql("INSERT INTO t VALUES (1, 10), (2, 20)", json!([])).await;
    });
    let session = runtime.block_on(server.session("serializable"));
    let mut runner = TestRunner::new(Config { cases: 256, failure_persistence: None, ..Config::default() });
    runner
        .run(&(statement(), proptest::collection::vec(json_value(), 0..3), json_value()), |(sql, params, junk)| {
            runtime.block_on(async {
                for (path, body) in [
                    ("/v1/sql", json!({"sql": sql, "params": params})),
                    ("/v1/sql", json!({"statements": [{"sql": sql, "params": params}], "isolation": "rc"})),
                    (&format!("/v1/sessions/{}/sql", session.id) as &str, json!({"sql": sql, "params": params})),
                    ("/v1/sql", junk.clone()),
                    ("/v1/sessions", junk.clone()),
                ] {
                    let (status, answer) = server.post(path, body).await;
                    prop_assert!(status != 500, "{path} {sql:?} answered 500: {answer}");
                    if status >= 400 {
                        prop_assert!(answer["error"]["code"].is_string(), "{path}: {answer}");
                    }
                }
                let (status, answer) = server.post_raw("/v1/sql", junk.to_string().into_bytes()[..].to_vec()).await;
                prop_assert!(status != 500, "{answer}");
                prop_assert_eq!(server.get("/healthz").await.0, 200);
                Ok(())
            })
        })
        .unwrap();
    // A session left in a failed transaction still answers ROLLBACK.
    let (status, _) = runtime.block_on(session.run("ROLLBACK"));
    assert_eq!(status, 200);
}
