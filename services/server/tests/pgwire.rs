//! The PostgreSQL wire protocol against a real `geodb dev` (a single node,
//! as the README starts it with free ports): `tokio-postgres`, `psql` and
//! psycopg 3 connect to the `postgresql://` URL it prints, and a connection
//! behaves as a session (`docs/api.md`, "PostgreSQL wire protocol"), over
//! the simple query protocol and the extended one (`query`, `execute`,
//! `prepare`: parameters and results typed before anything runs, values in
//! binary format), and a cancel request stops a running statement.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::Server;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, IsolationLevel, NoTls, SimpleQueryMessage};

fn server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(&dir.path().join("data"));
    (dir, server)
}

/// Connects as any user to any database, as development mode allows.
async fn connect(server: &Server) -> Client {
    let url = server.pg_url.as_deref().expect("geodb dev prints a postgresql:// URL");
    let config = format!("{url}?user=whoever&application_name=tests");
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await.expect("connect over pgwire");
    tokio::spawn(connection);
    client
}

/// The rows of a simple query, as text.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client.simple_query(sql).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
    messages
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE a simple query that must fail answers.
async fn failing(client: &Client, sql: &str) -> SqlState {
    let error = client.simple_query(sql).await.expect_err(sql);
    code(&error).unwrap_or_else(|| panic!("{sql}: {error}")).clone()
}

fn code(error: &tokio_postgres::Error) -> Option<&SqlState> {
    error.as_db_error().map(|db| db.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_client_runs_transactions_with_the_documented_errors() {
    let (_dir, server) = server();
    let alice = connect(&server).await;
    alice
        .batch_execute(
            "CREATE TABLE accounts (user_id INT, id INT, owner TEXT NOT NULL, balance DECIMAL(12,2) NOT NULL, \
             active BOOLEAN, PRIMARY KEY (user_id, id)); \
             INSERT INTO accounts VALUES (7, 1, 'ada', 100.00, true), (7, 2, 'ada', 50.00, NULL)",
        )
        .await
        .unwrap();
    assert_eq!(
        rows(&alice, "SELECT id, owner, balance, active FROM accounts WHERE user_id = 7 ORDER BY id").await,
        vec![
            vec![Some("1".into()), Some("ada".into()), Some("100.00".into()), Some("t".into())],
            vec![Some("2".into()), Some("ada".into()), Some("50.00".into()), None],
        ]
    );
    // The same HTTP answer the same way (the node is one database).
    let over_http =
        server.sql("SELECT balance FROM accounts WHERE user_id = 7 AND id = 1", serde_json::json!([])).await;
    assert_eq!(over_http["rows"][0][0], "100.00");

    // A transaction block: uncommitted writes are invisible to another
    // connection, and visible to it after COMMIT.
    let bob = connect(&server).await;
    alice.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE; UPDATE accounts SET balance = balance - 25 WHERE user_id = 7 AND id = 1").await.unwrap();
    assert_eq!(
        rows(&bob, "SELECT balance FROM accounts WHERE user_id = 7 AND id = 1").await,
        vec![vec![Some("100.00".into())]]
    );
    alice
        .batch_execute("UPDATE accounts SET balance = balance + 25 WHERE user_id = 7 AND id = 2; COMMIT")
        .await
        .unwrap();
    assert_eq!(
        rows(&bob, "SELECT sum(balance) FROM accounts").await,
        vec![vec![Some("150.00".into())]],
        "a transfer keeps the total"
    );
    assert_eq!(
        rows(&bob, "SELECT balance FROM accounts WHERE user_id = 7 AND id = 1").await,
        vec![vec![Some("75.00".into())]]
    );

    // Errors carry their SQLSTATE; inside a block the transaction is failed
    // until ROLLBACK, and nothing of it stays.
    let error = alice.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::SYNTAX_ERROR), "{error}");
    let error = alice.simple_query("SELECT * FROM nowhere").await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::UNDEFINED_TABLE), "{error}");
    alice.batch_execute("BEGIN; INSERT INTO accounts VALUES (8, 1, 'bo', 1, true)").await.unwrap();
    let error = alice.simple_query("INSERT INTO accounts VALUES (7, 1, 'dup', 1, true)").await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::UNIQUE_VIOLATION), "{error}");
    let error = alice.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{error}");
    alice.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(rows(&alice, "SELECT count(*) FROM accounts WHERE user_id = 8").await, vec![vec![Some("0".into())]]);
    // COMMIT of a failed transaction rolls it back and says ROLLBACK, as
    // PostgreSQL does; the connection is then out of any transaction.
    alice.batch_execute("BEGIN; INSERT INTO accounts VALUES (8, 1, 'bo', 1, true)").await.unwrap();
    assert!(alice.simple_query("SELECT * FROM nowhere").await.is_err());
    alice.batch_execute("COMMIT").await.expect("COMMIT of a failed transaction answers ROLLBACK");
    assert_eq!(rows(&alice, "SELECT count(*) FROM accounts WHERE user_id = 8").await, vec![vec![Some("0".into())]]);
    // Several statements outside a block are one implicit transaction: all
    // or nothing.
    let error = alice
        .batch_execute(
            "INSERT INTO accounts VALUES (9, 1, 'cy', 1, true); INSERT INTO accounts VALUES (7, 1, 'dup', 1, true)",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::UNIQUE_VIOLATION), "{error}");
    assert_eq!(rows(&alice, "SELECT count(*) FROM accounts WHERE user_id = 9").await, vec![vec![Some("0".into())]]);
    alice
        .batch_execute(
            "INSERT INTO accounts VALUES (9, 1, 'cy', 1, true); INSERT INTO accounts VALUES (9, 2, 'cy', 2, true)",
        )
        .await
        .unwrap();
    assert_eq!(rows(&alice, "SELECT count(*) FROM accounts WHERE user_id = 9").await, vec![vec![Some("2".into())]]);

    // psql, where installed, connects to the printed URL as is.
    let url = server.pg_url.clone().unwrap();
    if let Ok(output) = std::process::Command::new("psql")
        .arg(&url)
        .args(["-At", "-c", "SELECT owner FROM accounts WHERE user_id = 7 AND id = 2"])
        .output()
    {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ada");
    }
}

/// The columns of every SQL type GeoDB has, for the extended-protocol tests.
const ITEMS: &str = "CREATE TABLE items (id BIGINT PRIMARY KEY, small SMALLINT, count INT, price DECIMAL(10,2), \
    ratio DOUBLE PRECISION, weight REAL, name VARCHAR(20), code CHAR(3), note TEXT, active BOOLEAN, seen TIMESTAMP)";

const ALL_COLUMNS: &str = "id, small, count, price, ratio, weight, name, code, note, active, seen";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_queries_type_parameters_and_results_of_every_type() {
    let (_dir, server) = server();
    let client = connect(&server).await;
    client.batch_execute(ITEMS).await.unwrap();

    // Parameters typed by their target columns, sent in binary.
    let seen = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    // The driver has no decimal type: the client declares the price text,
    // and GeoDB converts it as it does a JSON string parameter.
    let insert = format!("INSERT INTO items ({ALL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
    let insert = client.prepare_typed(&insert, &[Type::INT8, Type::INT2, Type::INT4, Type::TEXT]).await.unwrap();
    let types = [
        Type::INT8,
        Type::INT2,
        Type::INT4,
        Type::TEXT,
        Type::FLOAT8,
        Type::FLOAT4,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::TEXT,
        Type::BOOL,
        Type::TIMESTAMPTZ,
    ];
    assert_eq!(insert.params(), types);
    let inserted = client
        .execute(
            &insert,
            &[&1i64, &2i16, &3i32, &"19.99", &0.5f64, &1.5f32, &"widget", &"abc", &"a note", &true, &seen],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    let nulls = client
        .execute(
            &insert,
            &[
                &2i64,
                &None::<i16>,
                &None::<i32>,
                &None::<&str>,
                &None::<f64>,
                &None::<f32>,
                &None::<&str>,
                &None::<&str>,
                &None::<String>,
                &None::<bool>,
                &None::<SystemTime>,
            ],
        )
        .await
        .unwrap();
    assert_eq!(nulls, 1);

    // Results typed before they run, read back in binary.
    let select = ALL_COLUMNS.replace("price", "price::text");
    let select = format!("SELECT {select} FROM items WHERE id = $1");
    let row = client.query_one(&select, &[&1i64]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, i16>(1), 2);
    assert_eq!(row.get::<_, i32>(2), 3);
    assert_eq!(row.get::<_, &str>(3), "19.99");
    assert_eq!(row.get::<_, f64>(4), 0.5);
    assert_eq!(row.get::<_, f32>(5), 1.5);
    assert_eq!(row.get::<_, &str>(6), "widget");
    assert_eq!(row.get::<_, String>(7), "abc");
    assert_eq!(row.get::<_, String>(8), "a note");
    assert!(row.get::<_, bool>(9));
    assert_eq!(row.get::<_, SystemTime>(10), seen);
    let row = client.query_one(&select, &[&2i64]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, Option<i16>>(1), None);
    assert_eq!(row.get::<_, Option<i32>>(2), None);
    assert_eq!(row.get::<_, Option<&str>>(3), None);
    assert_eq!(row.get::<_, Option<f64>>(4), None);
    assert_eq!(row.get::<_, Option<f32>>(5), None);
    assert_eq!(row.get::<_, Option<String>>(6), None);
    assert_eq!(row.get::<_, Option<bool>>(9), None);
    assert_eq!(row.get::<_, Option<SystemTime>>(10), None);

    // A prepared statement: described once, run many times.
    let by_id = client.prepare("SELECT name, price FROM items WHERE id = $1").await.unwrap();
    assert_eq!(by_id.params(), &[Type::INT8]);
    let types: Vec<&Type> = by_id.columns().iter().map(|column| column.type_()).collect();
    assert_eq!(types, [&Type::VARCHAR, &Type::NUMERIC]);
    for (id, name) in [(1i64, Some("widget")), (2, None), (3, None)] {
        let rows = client.query(&by_id, &[&id]).await.unwrap();
        let names: Vec<Option<&str>> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(names, if id == 3 { vec![] } else { vec![name] }, "id {id}");
    }

    // Derived columns take PostgreSQL's types: count and sums of integers
    // are bigint, a small integer literal is integer, a cast is its type.
    let stats = "SELECT count(*), sum(count), min(name), 1 + 1, $1::bigint * 2, avg(ratio) FROM items";
    let described = client.prepare(stats).await.unwrap();
    assert_eq!(described.params(), &[Type::INT8]);
    let types: Vec<&Type> = described.columns().iter().map(|column| column.type_()).collect();
    assert_eq!(types, [&Type::INT8, &Type::INT8, &Type::VARCHAR, &Type::INT4, &Type::INT8, &Type::FLOAT8]);
    let cheaper = client.prepare("SELECT id, price > $1 FROM items WHERE price < $1").await.unwrap();
    assert_eq!(cheaper.params(), &[Type::NUMERIC]);
    assert_eq!(cheaper.columns()[1].type_(), &Type::BOOL);
    let cheaper = client.prepare_typed("SELECT id, price > $1 FROM items WHERE price < $1", &[Type::TEXT]).await;
    let rows = client.query(&cheaper.unwrap(), &[&"20.00"]).await.unwrap();
    assert_eq!(rows.iter().map(|row| (row.get(0), row.get(1))).collect::<Vec<(i64, bool)>>(), [(1, false)]);
    let error = client.prepare("SELECT price, count(*) FROM items").await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::GROUPING_ERROR), "price is not grouped: {error}");
    let row = client.query_one(stats, &[&21i64]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, i64>(1), 3);
    assert_eq!(row.get::<_, &str>(2), "widget");
    assert_eq!(row.get::<_, i32>(3), 2);
    assert_eq!(row.get::<_, i64>(4), 42);
    assert_eq!(row.get::<_, f64>(5), 0.5);

    // A type the client declares is honoured; the value then goes through
    // the same checks as an HTTP parameter (a SMALLINT refuses 100000).
    let typed = client.prepare_typed("INSERT INTO items (id, small) VALUES ($1, $2)", &[Type::INT8, Type::INT8]).await;
    let typed = typed.unwrap();
    assert_eq!(typed.params(), &[Type::INT8, Type::INT8]);
    let error = client.execute(&typed, &[&4i64, &100_000i64]).await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE), "{error}");
    assert_eq!(client.execute(&typed, &[&4i64, &7i64]).await.unwrap(), 1);
    // An integer computed in 64 bits that overflows the int4 it is
    // described as is refused, as PostgreSQL's overflow is.
    let error = client.query("SELECT 2000000000 + 2000000000", &[]).await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE), "{error}");

    // A parameter nothing types is text.
    let echo = client.prepare("SELECT $1").await.unwrap();
    assert_eq!(echo.params(), &[Type::TEXT]);
    assert_eq!(client.query_one(&echo, &[&"hello"]).await.unwrap().get::<_, &str>(0), "hello");

    // Statements without rows, DDL and EXPLAIN through the extended protocol.
    assert_eq!(client.execute("UPDATE items SET note = $1 WHERE id >= $2", &[&"both", &1i64]).await.unwrap(), 3);
    assert_eq!(client.execute("DELETE FROM items WHERE id = $1", &[&4i64]).await.unwrap(), 1);
    client.execute("CREATE INDEX items_by_name ON items (name)", &[]).await.unwrap();
    let plan = client.query("EXPLAIN SELECT id FROM items WHERE name = $1", &[&"widget"]).await.unwrap();
    assert!(!plan.is_empty() && plan.iter().all(|row| !row.get::<_, &str>(0).is_empty()));

    // Row limits: a portal hands out its rows in batches.
    let mut client = client;
    let transaction = client.transaction().await.unwrap();
    let portal = transaction.bind("SELECT id FROM items ORDER BY id", &[]).await.unwrap();
    let first = transaction.query_portal(&portal, 1).await.unwrap();
    let rest = transaction.query_portal(&portal, 10).await.unwrap();
    assert_eq!((first.len(), rest.len()), (1, 1));
    assert_eq!(first[0].get::<_, i64>(0), 1);
    assert_eq!(rest[0].get::<_, i64>(0), 2);
    transaction.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_queries_run_in_transactions_and_pipelines_and_survive_errors() {
    let (_dir, server) = server();
    let mut alice = connect(&server).await;
    let bob = connect(&server).await;
    alice.batch_execute(ITEMS).await.unwrap();
    let count = "SELECT count(*) FROM items WHERE id = $1";

    // Commit and rollback at each level a PostgreSQL driver names.
    let levels = [IsolationLevel::ReadCommitted, IsolationLevel::RepeatableRead, IsolationLevel::Serializable];
    for (i, level) in levels.into_iter().enumerate() {
        let kept = 10 * i as i64 + 1;
        let transaction = alice.build_transaction().isolation_level(level).start().await.unwrap();
        transaction.execute("INSERT INTO items (id, name) VALUES ($1, $2)", &[&kept, &"kept"]).await.unwrap();
        let own: i64 = transaction.query_one(count, &[&kept]).await.unwrap().get(0);
        assert_eq!(own, 1, "{level:?}: a transaction sees its own write");
        let other: i64 = bob.query_one(count, &[&kept]).await.unwrap().get(0);
        assert_eq!(other, 0, "{level:?}: an uncommitted write is invisible");
        transaction.commit().await.unwrap();
        assert_eq!(bob.query_one(count, &[&kept]).await.unwrap().get::<_, i64>(0), 1, "{level:?}");

        let dropped = kept + 1;
        let transaction = alice.build_transaction().isolation_level(level).start().await.unwrap();
        transaction.execute("INSERT INTO items (id, name) VALUES ($1, $2)", &[&dropped, &"dropped"]).await.unwrap();
        transaction.rollback().await.unwrap();
        assert_eq!(bob.query_one(count, &[&dropped]).await.unwrap().get::<_, i64>(0), 0, "{level:?}");
    }

    // Errors answer their SQLSTATE and the connection goes on.
    let error = alice.query("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::SYNTAX_ERROR), "{error}");
    let error = alice.query("SELECT * FROM nowhere WHERE id = $1", &[&1i64]).await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::UNDEFINED_TABLE), "{error}");
    let error = alice.query("SELECT id / $1 FROM items", &[&0i64]).await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::DIVISION_BY_ZERO), "{error}");
    let error = alice.execute("INSERT INTO items (id) VALUES ($1)", &[&1i64]).await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::UNIQUE_VIOLATION), "{error}");
    assert_eq!(alice.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);

    // Inside a transaction an error fails it until ROLLBACK.
    let transaction = alice.transaction().await.unwrap();
    transaction.execute("INSERT INTO items (id) VALUES ($1)", &[&100i64]).await.unwrap();
    let error = transaction.query("SELECT * FROM nowhere", &[]).await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::UNDEFINED_TABLE), "{error}");
    let error = transaction.query(count, &[&100i64]).await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{error}");
    transaction.rollback().await.unwrap();
    assert_eq!(alice.query_one(count, &[&100i64]).await.unwrap().get::<_, i64>(0), 0);

    // Pipelined: several queries in flight on one connection, one of them
    // failing, each answered in order.
    let by_id = alice.prepare("SELECT name FROM items WHERE id = $1").await.unwrap();
    let (first, failing, update, second, total) = tokio::join!(
        alice.query_one(&by_id, &[&1i64]),
        alice.query("SELECT * FROM nowhere", &[]),
        alice.execute("UPDATE items SET note = $1 WHERE id = $2", &[&"piped", &11i64]),
        alice.query_one(&by_id, &[&11i64]),
        alice.query_one("SELECT count(*) FROM items", &[]),
    );
    assert_eq!(first.unwrap().get::<_, &str>(0), "kept");
    assert_eq!(code(&failing.unwrap_err()), Some(&SqlState::UNDEFINED_TABLE));
    assert_eq!(update.unwrap(), 1);
    assert_eq!(second.unwrap().get::<_, &str>(0), "kept");
    assert_eq!(total.unwrap().get::<_, i64>(0), 3);
    let note: String = bob.query_one("SELECT note FROM items WHERE id = $1", &[&11i64]).await.unwrap().get(0);
    assert_eq!(note, "piped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serialization_failure_over_the_extended_protocol_is_40001() {
    let (_dir, server) = server();
    let mut alice = connect(&server).await;
    let mut bob = connect(&server).await;
    alice.batch_execute("CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)").await.unwrap();
    alice.execute("INSERT INTO counters VALUES ($1, $2)", &[&1i64, &0i64]).await.unwrap();
    let read = "SELECT n FROM counters WHERE id = $1";
    let increment = "UPDATE counters SET n = n + 1 WHERE id = $1";

    // Both read the counter and increment it; alice commits first, so
    // bob's commit must fail rather than lose her update.
    let first = alice.build_transaction().isolation_level(IsolationLevel::Serializable).start().await.unwrap();
    let second = bob.build_transaction().isolation_level(IsolationLevel::Serializable).start().await.unwrap();
    assert_eq!(first.query_one(read, &[&1i64]).await.unwrap().get::<_, i64>(0), 0);
    assert_eq!(second.query_one(read, &[&1i64]).await.unwrap().get::<_, i64>(0), 0);
    first.execute(increment, &[&1i64]).await.unwrap();
    let late = second.execute(increment, &[&1i64]).await;
    first.commit().await.unwrap();
    let error = match late {
        Err(error) => error,
        Ok(_) => second.commit().await.expect_err("a lost update committed"),
    };
    assert_eq!(code(&error), Some(&SqlState::T_R_SERIALIZATION_FAILURE), "{error}");
    assert_eq!(alice.query_one(read, &[&1i64]).await.unwrap().get::<_, i64>(0), 1);
}

/// What drivers ask on connect (SQLAlchemy: `pg_catalog.version()`,
/// `current_schema()`, `SHOW standard_conforming_strings`, `SHOW
/// TRANSACTION ISOLATION LEVEL`) answers as PostgreSQL does, over both
/// protocols, and an unknown setting is `42704`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_and_functions_drivers_read_on_connect_answer() {
    let (_dir, server) = server();
    let client = connect(&server).await;
    let version = rows(&client, "select pg_catalog.version()").await;
    assert!(version[0][0].as_deref().unwrap().starts_with("PostgreSQL 15.0 (GeoDB "), "{version:?}");
    assert_eq!(rows(&client, "select current_schema()").await, vec![vec![Some("public".to_string())]]);
    assert_eq!(rows(&client, "SELECT current_database()").await, vec![vec![Some("geodb".to_string())]]);
    assert_eq!(rows(&client, "show standard_conforming_strings").await, vec![vec![Some("on".to_string())]]);
    // The extended protocol describes the one text column before running.
    let row = client.query_one("SHOW TRANSACTION ISOLATION LEVEL", &[]).await.unwrap();
    assert_eq!(row.columns()[0].name(), "transaction_isolation");
    assert_eq!(row.get::<_, String>(0), "serializable");
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.unwrap();
    assert_eq!(rows(&client, "SHOW transaction_isolation").await, vec![vec![Some("repeatable read".to_string())]]);
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(failing(&client, "SHOW no_such_setting").await, SqlState::UNDEFINED_OBJECT);
    assert_eq!(failing(&client, "SELECT version(1)").await, SqlState::UNDEFINED_FUNCTION);
    // An ORM's query for table names, here with literals (simple protocol).
    client.batch_execute("CREATE TABLE reflected (id INT PRIMARY KEY)").await.unwrap();
    let names = |names: &str, kinds: &str| {
        format!(
            "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace \
             ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace \
             WHERE pg_catalog.pg_class.relname IN ({names}) AND pg_catalog.pg_class.relkind = ANY (ARRAY[{kinds}]) \
             AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != 'pg_catalog'"
        )
    };
    let found = rows(&client, &names("'reflected', 'absent'", "'r', 'p', 'v'")).await;
    assert_eq!(found, vec![vec![Some("reflected".to_string())]]);
    assert!(rows(&client, &names("'reflected'", "'v', 'm'")).await.is_empty(), "no views");
    // The version a connection reports at start-up is the same.
    let shown = rows(&client, "SHOW server_version").await;
    assert!(shown[0][0].as_deref().unwrap().starts_with("15.0 (GeoDB "), "{shown:?}");
}

/// psycopg's `TypeInfo.fetch` (which SQLAlchemy's psycopg dialect runs
/// for `hstore` on connect) reads a type's row of `pg_type` by name: a
/// type GeoDB has answers its oids, over either protocol and in either
/// format, and one it lacks no row (`to_regtype`) or `42704` (a cast).
/// Other queries of `pg_type` are not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_looks_up_built_in_types_in_pg_type() {
    let (_dir, server) = server();
    let client = connect(&server).await;
    let query = |argument: &str| {
        format!(
            "SELECT\n    typname AS name, oid, typarray AS array_oid,\n    oid::regtype::text AS regtype, \
             typdelim AS delimiter\nFROM pg_type t\nWHERE t.oid = {argument}\nORDER BY t.oid\n"
        )
    };
    let by_name = client.prepare(&query("to_regtype($1)")).await.unwrap();
    let columns: Vec<(&str, Type)> =
        by_name.columns().iter().map(|column| (column.name(), column.type_().clone())).collect();
    assert_eq!(
        columns,
        [
            ("name", Type::NAME),
            ("oid", Type::OID),
            ("array_oid", Type::OID),
            ("regtype", Type::TEXT),
            ("delimiter", Type::CHAR)
        ]
    );
    assert!(client.query(&by_name, &[&"hstore"]).await.unwrap().is_empty(), "GeoDB has no hstore");
    // Results in binary format, as tokio-postgres asks for them.
    let row = client.query_one(&by_name, &[&"bigint"]).await.unwrap();
    assert_eq!(row.get::<_, String>("name"), "int8");
    assert_eq!(row.get::<_, u32>("oid"), Type::INT8.oid());
    assert_eq!(row.get::<_, u32>("array_oid"), Type::INT8_ARRAY.oid());
    assert_eq!(row.get::<_, String>("regtype"), "bigint");
    assert_eq!(row.get::<_, i8>("delimiter"), b',' as i8);
    let row = client.query_one(&by_name, &[&"character varying"]).await.unwrap();
    assert_eq!(row.get::<_, u32>("oid"), Type::VARCHAR.oid());
    let row = client.query_one(&by_name, &[&"timestamptz"]).await.unwrap();
    assert_eq!(row.get::<_, String>("regtype"), "timestamp with time zone");
    // The simple protocol, with the name inline, in text format.
    let found = rows(&client, &query("to_regtype('int4')")).await;
    let expected = ["int4", "23", "1007", "integer", ","].map(|value| Some(value.to_string()));
    assert_eq!(found, vec![expected.to_vec()]);
    assert!(rows(&client, &query("to_regtype('hstore')")).await.is_empty());
    assert_eq!(failing(&client, &query("'hstore'::regtype")).await, SqlState::UNDEFINED_OBJECT);
    assert_eq!(failing(&client, "SELECT typname FROM pg_type").await, SqlState::UNDEFINED_TABLE);
    let error = client.prepare("SELECT oid FROM pg_catalog.pg_type WHERE typname = $1").await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::UNDEFINED_TABLE));
}

/// `DEALLOCATE` and `DISCARD ALL`, which drivers and pools send to forget
/// prepared statements (psycopg after a rollback, SQLAlchemy's pool on
/// check-in), remove them as PostgreSQL does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_and_discard_forget_prepared_statements() {
    let (_dir, server) = server();
    let mut wire = Wire::connect(&server).await;
    let parsed = Answer { messages: vec![('1', None)], status: 'I' };
    wire.parse("one", "SELECT 1").await;
    wire.parse("two", "SELECT 2").await;
    assert_eq!(wire.sync().await, Answer { messages: vec![('1', None), ('1', None)], status: 'I' });
    assert_eq!(bind_sync(&mut wire, "one").await, Answer { messages: vec![('2', None)], status: 'I' });
    wire.query("DEALLOCATE one").await;
    assert_eq!(wire.answer().await, Answer { messages: vec![('C', Some("DEALLOCATE".into()))], status: 'I' });
    assert_eq!(bind_sync(&mut wire, "one").await, Answer { messages: vec![error("26000")], status: 'I' });
    assert_eq!(bind_sync(&mut wire, "two").await, Answer { messages: vec![('2', None)], status: 'I' });
    wire.query("deallocate prepare no_such_statement;").await;
    assert_eq!(wire.answer().await, Answer { messages: vec![error("26000")], status: 'I' });
    wire.query("DEALLOCATE ALL").await;
    assert_eq!(wire.answer().await, Answer { messages: vec![('C', Some("DEALLOCATE ALL".into()))], status: 'I' });
    assert_eq!(bind_sync(&mut wire, "two").await, Answer { messages: vec![error("26000")], status: 'I' });

    wire.parse("three", "SELECT 3").await;
    assert_eq!(wire.sync().await, parsed);
    wire.query("BEGIN").await;
    assert_eq!(wire.answer().await.status, 'T');
    wire.query("DISCARD ALL").await;
    assert_eq!(wire.answer().await, Answer { messages: vec![error("25001")], status: 'E' });
    wire.query("ROLLBACK").await;
    assert_eq!(wire.answer().await.status, 'I');
    wire.query("DISCARD ALL").await;
    assert_eq!(wire.answer().await, Answer { messages: vec![('C', Some("DISCARD ALL".into()))], status: 'I' });
    assert_eq!(bind_sync(&mut wire, "three").await, Answer { messages: vec![error("26000")], status: 'I' });

    // Over the extended protocol too (psycopg's pipeline mode sends it so).
    wire.parse("four", "SELECT 4").await;
    assert_eq!(wire.sync().await, parsed);
    let deallocated = wire.run("DEALLOCATE four", &[]).await;
    let expected = vec![('1', None), ('2', None), ('C', Some("DEALLOCATE".into()))];
    assert_eq!(deallocated, Answer { messages: expected, status: 'I' });
    assert_eq!(bind_sync(&mut wire, "four").await, Answer { messages: vec![error("26000")], status: 'I' });
}

/// Binds the statement `name` with no parameters, then Sync.
async fn bind_sync(wire: &mut Wire, name: &str) -> Answer {
    wire.bind(name, 0, &[]).await;
    wire.sync().await
}

/// Savepoints, as far as GeoDB keeps them: `ROLLBACK TO SAVEPOINT` after
/// an error that wrote nothing since the savepoint (a driver's probe that
/// failed, psycopg's nested `transaction()`) takes the transaction out of
/// its failed state and it commits what it wrote before; after a write
/// since the savepoint it is refused (`0A000`) and the transaction stays
/// failed, so nothing of it commits. Savepoint errors are PostgreSQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_savepoint_recovers_from_an_error_that_wrote_nothing() {
    let (_dir, server) = server();
    let client = connect(&server).await;
    client.batch_execute("CREATE TABLE sp (id INT PRIMARY KEY, n INT)").await.unwrap();

    client.batch_execute("BEGIN; INSERT INTO sp VALUES (1, 1); SAVEPOINT probe").await.unwrap();
    assert_eq!(failing(&client, "SELECT * FROM pg_type").await, SqlState::UNDEFINED_TABLE);
    assert_eq!(failing(&client, "SELECT 1").await, SqlState::IN_FAILED_SQL_TRANSACTION);
    client.batch_execute("ROLLBACK TO SAVEPOINT probe; RELEASE SAVEPOINT probe").await.unwrap();
    client.batch_execute("INSERT INTO sp VALUES (2, 2); COMMIT").await.unwrap();
    assert_eq!(rows(&client, "SELECT count(*) FROM sp").await, vec![vec![Some("2".to_string())]]);

    // A write since the savepoint cannot be taken back alone.
    client.batch_execute("BEGIN; SAVEPOINT a; INSERT INTO sp VALUES (3, 3)").await.unwrap();
    assert_eq!(failing(&client, "ROLLBACK TO a").await, SqlState::FEATURE_NOT_SUPPORTED);
    assert_eq!(failing(&client, "SELECT 1").await, SqlState::IN_FAILED_SQL_TRANSACTION);
    // COMMIT of a failed transaction rolls it back, as PostgreSQL's does.
    let messages = client.simple_query("COMMIT").await.unwrap();
    assert!(matches!(messages.last(), Some(SimpleQueryMessage::CommandComplete(0))), "{messages:?}");
    assert_eq!(rows(&client, "SELECT count(*) FROM sp").await, vec![vec![Some("2".to_string())]]);

    // A DDL makes its transaction serializable before it runs (so that it
    // conflicts with every writer of its table): not undone either, even
    // when the DDL then fails.
    client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED; SAVEPOINT d").await.unwrap();
    assert_eq!(failing(&client, "CREATE TABLE sp (id INT PRIMARY KEY)").await, SqlState::DUPLICATE_TABLE);
    assert_eq!(failing(&client, "ROLLBACK TO d").await, SqlState::FEATURE_NOT_SUPPORTED);
    client.batch_execute("ROLLBACK").await.unwrap();

    // At most 10,000 at once.
    client.batch_execute("BEGIN").await.unwrap();
    for _ in 0..10 {
        client.batch_execute(&"SAVEPOINT s; ".repeat(1_000)).await.unwrap();
    }
    assert_eq!(failing(&client, "SAVEPOINT one_more").await.code(), "54000");
    client.batch_execute("ROLLBACK").await.unwrap();

    // Errors: outside a block, an unknown name, a failed block.
    assert_eq!(failing(&client, "SAVEPOINT outside").await.code(), "25P01");
    client.batch_execute("BEGIN; SAVEPOINT a; SAVEPOINT b; RELEASE a").await.unwrap();
    assert_eq!(failing(&client, "ROLLBACK TO b").await.code(), "3B001");
    assert_eq!(failing(&client, "SAVEPOINT c").await, SqlState::IN_FAILED_SQL_TRANSACTION);
    client.batch_execute("ROLLBACK").await.unwrap();
}

/// psycopg 3, where installed (`pip install "psycopg[binary]"`): parameters
/// in text and binary format, a prepared statement, transactions (its own
/// and explicit ones), errors, `executemany` and pipeline mode, from
/// Python.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_runs_parameterized_queries() {
    let Some(stdout) = run_psycopg(PSYCOPG_SCRIPT) else { return };
    assert_eq!(stdout.trim(), "ok");
}

/// The bank over psycopg: four threads transfer between ten accounts at
/// serializable and snapshot (psycopg's `REPEATABLE READ`), each transfer
/// one transaction that reads both balances, moves an amount only if the
/// source covers it, and records itself in a ledger; a serialization
/// failure (`40001`) is retried, as an application must. An auditor sums
/// the balances meanwhile. Every sum is the opening total, no balance goes
/// below zero, and the balances are exactly the opening ones moved by the
/// ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_runs_the_bank_workload_with_its_invariant() {
    let Some(stdout) = run_psycopg(PSYCOPG_BANK) else { return };
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("ok "), "{stdout}");
    eprintln!("psycopg bank: {last}");
}

/// SQLAlchemy 2 over psycopg, where installed (`.ci/run` installs it): its
/// connect-time queries (`version()`, `current_schema()`, `SHOW`, and
/// psycopg's probe of `pg_type` for `hstore`, which finds none), Core
/// tables and statements, the ORM's unit of work, and a nested
/// transaction (a savepoint) rolled back with nothing written since.
/// Its reflection is answered from the catalog: table names (`create_all`
/// and `drop_all` check each table first, `get_table_names`, `has_table`),
/// each column's name, type and nullability, the primary key, the
/// secondary indexes, no foreign keys or unique constraints, and a table
/// loaded with `autoload_with` that then writes and reads. GeoDB lacks
/// what SQLAlchemy asks for by default in one place, set here:
/// `autoincrement=False` (no `SERIAL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_runs_core_and_orm_statements_over_psycopg() {
    let has_sqlalchemy = std::process::Command::new("python3")
        .args(["-c", "import sqlalchemy"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_sqlalchemy {
        eprintln!("SQLAlchemy is not installed: skipped (pip install sqlalchemy)");
        return;
    }
    let Some(stdout) = run_psycopg(SQLALCHEMY_SCRIPT) else { return };
    assert_eq!(stdout.trim(), "ok");
}

const SQLALCHEMY_SCRIPT: &str = r#"
import sys
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "orm_users"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(30))

engine = sa.create_engine(sys.argv[1].replace("postgresql://", "postgresql+psycopg://"))
Base.metadata.create_all(engine)
Base.metadata.create_all(engine)  # there already: checked, not created again
inspector = sa.inspect(engine)
assert "orm_users" in inspector.get_table_names(), inspector.get_table_names()
assert inspector.has_table("orm_users") and not inspector.has_table("no_such_table")
with engine.connect() as conn:
    assert conn.dialect.server_version_info[0] == 15, conn.dialect.server_version_info
    assert conn.execute(sa.text("SELECT :a + 1"), {"a": 41}).scalar() == 42
with Session(engine) as session:
    session.add_all([User(id=1, name="ada"), User(id=2, name="bo")])
    session.commit()
    with session.begin():
        session.get(User, 1).name = "ada2"
        nested = session.begin_nested()
        nested.rollback()
    names = [(user.id, user.name) for user in session.scalars(sa.select(User).order_by(User.id))]
    assert names == [(1, "ada2"), (2, "bo")], names
    assert session.scalar(sa.select(sa.func.count()).select_from(User)) == 2
with engine.connect() as conn:
    assert not conn.dialect._has_native_hstore, "GeoDB has no hstore"

# Reflection of a table with every type, a two-column key and two indexes.
with engine.begin() as conn:
    conn.exec_driver_sql(
        "CREATE TABLE accounts (region TEXT, id BIGINT, owner VARCHAR(20) NOT NULL, code CHAR(3), "
        "balance DECIMAL(12,2), rate REAL, score DOUBLE PRECISION, tiny SMALLINT, n INT, active BOOLEAN, "
        "opened TIMESTAMP, PRIMARY KEY (region, id))"
    )
    conn.exec_driver_sql("CREATE UNIQUE INDEX accounts_owner ON accounts (owner)")
    conn.exec_driver_sql("CREATE INDEX accounts_balance ON accounts (balance, id)")
EXPECTED_COLUMNS = [
    ("region", "TEXT", False),
    ("id", "BIGINT", False),
    ("owner", "VARCHAR(20)", False),
    ("code", "CHAR(3)", True),
    ("balance", "NUMERIC(12, 2)", True),
    ("rate", "REAL", True),
    ("score", "DOUBLE PRECISION", True),
    ("tiny", "SMALLINT", True),
    ("n", "INTEGER", True),
    ("active", "BOOLEAN", True),
    ("opened", "TIMESTAMP WITH TIME ZONE", True),
]
inspector = sa.inspect(engine)
columns = [
    (c["name"], c["type"].compile(dialect=engine.dialect), c["nullable"]) for c in inspector.get_columns("accounts")
]
assert columns == EXPECTED_COLUMNS, columns
assert all(c["default"] is None and not c["autoincrement"] for c in inspector.get_columns("accounts"))
pk = inspector.get_pk_constraint("accounts")
assert (pk["name"], pk["constrained_columns"]) == ("accounts_pkey", ["region", "id"]), pk
indexes = [(i["name"], i["column_names"], i["unique"]) for i in inspector.get_indexes("accounts")]
assert indexes == [("accounts_balance", ["balance", "id"], False), ("accounts_owner", ["owner"], True)], indexes
assert inspector.get_foreign_keys("accounts") == []
assert inspector.get_unique_constraints("accounts") == []
assert inspector.get_check_constraints("accounts") == []
assert inspector.get_table_comment("accounts") == {"text": None}
orm = [(c["name"], c["type"].compile(dialect=engine.dialect), c["nullable"]) for c in inspector.get_columns("orm_users")]
assert orm == [("id", "INTEGER", False), ("name", "VARCHAR(30)", False)], orm
assert inspector.get_pk_constraint("orm_users")["constrained_columns"] == ["id"]
assert inspector.get_indexes("orm_users") == []
try:
    inspector.get_columns("no_such_table")
    raise AssertionError("an unknown table reflected")
except sa.exc.NoSuchTableError:
    pass

# A table loaded from the catalog, then used.
accounts = sa.Table("accounts", sa.MetaData(), autoload_with=engine)
loaded = [(c.name, c.type.compile(dialect=engine.dialect), c.nullable) for c in accounts.columns]
assert loaded == EXPECTED_COLUMNS, loaded
assert [c.name for c in accounts.primary_key.columns] == ["region", "id"]
loaded_indexes = sorted((i.name, [c.name for c in i.columns], i.unique) for i in accounts.indexes)
assert loaded_indexes == [("accounts_balance", ["balance", "id"], False), ("accounts_owner", ["owner"], True)]
with engine.begin() as conn:
    conn.execute(accounts.insert().values(region="eu", id=1, owner="ada", balance=10))
    row = conn.execute(sa.select(accounts.c.owner, accounts.c.balance).where(accounts.c.id == 1)).one()
    assert tuple(row) == ("ada", 10), row
Base.metadata.drop_all(engine)
assert not sa.inspect(engine).has_table("orm_users")
print("ok")
"#;

/// Runs `script` with python3 against a fresh `geodb dev` (its
/// `postgresql://` URL as the argument) and returns what it printed, after
/// checking that it succeeded; `None`, with a note, where psycopg is not
/// installed (`.ci/run` installs it).
fn run_psycopg(script: &str) -> Option<String> {
    let has_psycopg = std::process::Command::new("python3")
        .args(["-c", "import psycopg"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_psycopg {
        eprintln!("psycopg is not installed: skipped (pip install \"psycopg[binary]\")");
        return None;
    }
    let (dir, server) = server();
    let path = dir.path().join("psycopg_script.py");
    std::fs::write(&path, script).unwrap();
    let url = server.pg_url.clone().unwrap();
    let output = std::process::Command::new("python3").arg(&path).arg(&url).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    Some(stdout)
}

const PSYCOPG_BANK: &str = r#"
import random
import sys
import threading

import psycopg
from psycopg import IsolationLevel

URL = sys.argv[1] + "?user=bank"
ACCOUNTS, OPENING, TRANSFERS = 10, 100, 60
TOTAL = ACCOUNTS * OPENING

with psycopg.connect(URL, autocommit=True) as conn:
    conn.execute("CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)")
    conn.execute("CREATE TABLE ledger (id BIGINT PRIMARY KEY, src BIGINT, dst BIGINT, amount BIGINT)")
    for i in range(ACCOUNTS):
        conn.execute("INSERT INTO accounts VALUES (%s, %s)", (i, OPENING))

failures = []
retries = [0]
done = threading.Event()

def transfer(worker):
    rng = random.Random(worker)
    level = IsolationLevel.SERIALIZABLE if worker % 2 == 0 else IsolationLevel.REPEATABLE_READ
    with psycopg.connect(URL) as conn:
        conn.isolation_level = level
        for n in range(TRANSFERS):
            src, dst = rng.sample(range(ACCOUNTS), 2)
            amount = rng.randint(1, 30)
            while True:
                try:
                    with conn.transaction():
                        (have,) = conn.execute("SELECT balance FROM accounts WHERE id = %s", (src,)).fetchone()
                        conn.execute("SELECT balance FROM accounts WHERE id = %s", (dst,)).fetchone()
                        if have >= amount:
                            conn.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, src))
                            conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, dst))
                            conn.execute("INSERT INTO ledger VALUES (%s, %s, %s, %s)", (worker * 1000 + n, src, dst, amount))
                    break
                except psycopg.errors.SerializationFailure:
                    retries[0] += 1
                except Exception as error:
                    failures.append(repr(error))
                    return

def audit():
    audits = 0
    with psycopg.connect(URL) as conn:
        conn.isolation_level = IsolationLevel.SERIALIZABLE
        while not done.is_set() or audits == 0:
            try:
                with conn.transaction():
                    (total,) = conn.execute("SELECT sum(balance) FROM accounts").fetchone()
                if total != TOTAL:
                    failures.append(f"an audit summed {total}, not {TOTAL}")
                audits += 1
            except psycopg.errors.SerializationFailure:
                retries[0] += 1
    return audits

workers = [threading.Thread(target=transfer, args=(w,)) for w in range(4)]
audits = []
auditor = threading.Thread(target=lambda: audits.append(audit()))
auditor.start()
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
done.set()
auditor.join()
assert not failures, failures

with psycopg.connect(URL, autocommit=True) as conn:
    balances = dict(conn.execute("SELECT id, balance FROM accounts").fetchall())
    expected = {i: OPENING for i in range(ACCOUNTS)}
    moved = conn.execute("SELECT src, dst, amount FROM ledger").fetchall()
    for src, dst, amount in moved:
        expected[src] -= amount
        expected[dst] += amount
    assert balances == expected, (balances, expected)
    assert sum(balances.values()) == TOTAL
    assert min(balances.values()) >= 0, balances
print(f"ok {len(moved)} transfers, {retries[0]} retries, {audits[0]} audits")
"#;

const PSYCOPG_SCRIPT: &str = r#"
import sys
from decimal import Decimal

import psycopg

with psycopg.connect(sys.argv[1] + "?user=py", autocommit=True) as conn:
    conn.execute("CREATE TABLE py (id BIGINT PRIMARY KEY, name TEXT, price DECIMAL(8,2), ok BOOLEAN, ratio DOUBLE PRECISION)")
    conn.execute("INSERT INTO py VALUES (%s, %s, %s, %s, %s)", (1, "ada", Decimal("9.99"), True, 0.25))
    conn.execute("INSERT INTO py VALUES (%s, %s, %s, %s, %s)", (2, None, None, None, None))
    expected = [(1, "ada", Decimal("9.99"), True, 0.25), (2, None, None, None, None)]
    rows = conn.execute("SELECT id, name, price, ok, ratio FROM py WHERE id >= %s ORDER BY id", (1,)).fetchall()
    assert rows == expected, rows
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT id, name, price, ok, ratio FROM py WHERE id >= %b ORDER BY id", (1,))
        assert cur.fetchall() == expected
    for _ in range(6):
        name = conn.execute("SELECT name FROM py WHERE id = %s", (1,), prepare=True).fetchone()[0]
        assert name == "ada", name
    try:
        conn.execute("SELECT * FROM nowhere WHERE id = %s", (1,))
        raise AssertionError("an unknown table answered")
    except psycopg.errors.UndefinedTable:
        pass
    with conn.transaction():
        conn.execute("UPDATE py SET name = %s WHERE id = %s", ("bo", 2))
    try:
        with conn.transaction():
            conn.execute("UPDATE py SET name = %s WHERE id = %s", ("cy", 2))
            conn.execute("INSERT INTO py (id) VALUES (%s)", (1,))
    except psycopg.errors.UniqueViolation:
        pass
    assert conn.execute("SELECT name FROM py WHERE id = %s", (2,)).fetchone() == ("bo",)
    # executemany and pipeline mode: several Executes before one Sync.
    conn.cursor().executemany("INSERT INTO py (id, name) VALUES (%s, %s)", [(10, "a"), (11, "b"), (12, "c")])
    with conn.pipeline():
        conn.execute("UPDATE py SET ok = %s WHERE id = %s", (False, 10))
        counted = conn.execute("SELECT count(*) FROM py WHERE id >= %s", (10,))
    assert counted.fetchone() == (3,)
    assert conn.execute("SELECT ok FROM py WHERE id = %s", (10,)).fetchone() == (False,)

# psycopg's default: it opens a transaction itself, ended by commit or rollback.
with psycopg.connect(sys.argv[1] + "?user=py") as conn:
    conn.execute("UPDATE py SET ratio = %s WHERE id = %s", (0.5, 1))
    conn.rollback()
    assert conn.execute("SELECT ratio FROM py WHERE id = %s", (1,)).fetchone() == (0.25,)
    conn.execute("UPDATE py SET ratio = %s WHERE id = %s", (0.75, 1))
    conn.commit()
    assert conn.execute("SELECT ratio FROM py WHERE id = %s", (1,)).fetchone() == (0.75,)
    # A nested transaction() is a savepoint: a probe that fails inside one
    # (psycopg runs its own TypeInfo.fetch in one) leaves the outer
    # transaction usable.
    conn.execute("UPDATE py SET ratio = %s WHERE id = %s", (0.5, 1))
    try:
        with conn.transaction():
            conn.execute("SELECT * FROM no_such_table")
    except psycopg.errors.UndefinedTable:
        pass
    assert conn.execute("SHOW TRANSACTION ISOLATION LEVEL").fetchone() == ("serializable",)
    conn.commit()
    assert conn.execute("SELECT ratio FROM py WHERE id = %s", (1,)).fetchone() == (0.5,)
print("ok")
"#;

/// A bare protocol connection, for the messages no driver sends on
/// purpose: unknown names, wrong counts, malformed binary values.
struct Wire {
    stream: tokio::net::TcpStream,
    /// The process id and secret of `BackendKeyData` (protocol 3.0).
    key: (i32, i32),
}

/// What the server answered up to `ReadyForQuery`: each message's type,
/// with its SQLSTATE for an `ErrorResponse`, its first field for a
/// `DataRow` and its tag for a `CommandComplete`; then the transaction
/// status.
#[derive(Debug, PartialEq)]
struct Answer {
    messages: Vec<(char, Option<String>)>,
    status: char,
}

impl Wire {
    async fn connect(server: &Server) -> Wire {
        use tokio::io::AsyncWriteExt;
        let url = server.pg_url.as_deref().unwrap();
        let address = url.trim_start_matches("postgresql://").split(['/', '?']).next().unwrap();
        let address = address.rsplit('@').next().unwrap();
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut body = 196_608i32.to_be_bytes().to_vec();
        body.extend(b"user\0wire\0\0");
        let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        startup.extend(body);
        stream.write_all(&startup).await.unwrap();
        let mut wire = Wire { stream, key: (0, 0) };
        assert_eq!(wire.answer().await.status, 'I');
        wire
    }

    async fn send(&mut self, kind: u8, body: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut message = vec![kind];
        message.extend(((body.len() + 4) as i32).to_be_bytes());
        message.extend(body);
        self.stream.write_all(&message).await.unwrap();
    }

    async fn parse(&mut self, name: &str, sql: &str) {
        let mut body = format!("{name}\0{sql}\0").into_bytes();
        body.extend(0i16.to_be_bytes());
        self.send(b'P', &body).await;
    }

    /// Binds `params` (all in `format`: 0 text, 1 binary) with text results.
    async fn bind(&mut self, statement: &str, format: i16, params: &[&[u8]]) {
        let mut body = format!("\0{statement}\0").into_bytes();
        body.extend(1i16.to_be_bytes());
        body.extend(format.to_be_bytes());
        body.extend((params.len() as i16).to_be_bytes());
        for param in params {
            body.extend((param.len() as i32).to_be_bytes());
            body.extend(*param);
        }
        body.extend(0i16.to_be_bytes());
        self.send(b'B', &body).await;
    }

    /// Sends a simple query, without waiting for its answer.
    async fn query(&mut self, sql: &str) {
        self.send(b'Q', format!("{sql}\0").as_bytes()).await;
    }

    async fn execute(&mut self) {
        self.execute_limited(0).await;
    }

    /// Executes the unnamed portal, asking for at most `max_rows` rows.
    async fn execute_limited(&mut self, max_rows: i32) {
        let mut body = b"\0".to_vec();
        body.extend(max_rows.to_be_bytes());
        self.send(b'E', &body).await;
    }

    /// Parse, Bind (text parameters) and Execute of `sql` in the unnamed
    /// statement and portal, then Sync.
    async fn run(&mut self, sql: &str, params: &[&[u8]]) -> Answer {
        self.parse("", sql).await;
        self.bind("", 0, params).await;
        self.execute().await;
        self.sync().await
    }

    async fn sync(&mut self) -> Answer {
        self.send(b'S', b"").await;
        self.answer().await
    }

    async fn answer(&mut self) -> Answer {
        use tokio::io::AsyncReadExt;
        let mut messages = Vec::new();
        loop {
            let kind = self.stream.read_u8().await.unwrap();
            let len = self.stream.read_i32().await.unwrap() as usize;
            let mut body = vec![0; len - 4];
            self.stream.read_exact(&mut body).await.unwrap();
            let detail = match kind {
                // Fields of (type byte, text); the SQLSTATE is `C`.
                b'E' => body
                    .split(|b| *b == 0)
                    .find_map(|field| field.strip_prefix(b"C"))
                    .map(|code| String::from_utf8_lossy(code).into_owned()),
                b'D' if body.len() > 6 => Some(String::from_utf8_lossy(&body[6..]).into_owned()),
                b'C' => Some(String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(&body)).into_owned()),
                _ => None,
            };
            match kind {
                b'Z' => return Answer { messages, status: body[0] as char },
                b'K' => {
                    let [pid, secret] =
                        [&body[..4], &body[4..]].map(|field| i32::from_be_bytes(field.try_into().unwrap()));
                    self.key = (pid, secret);
                }
                // Startup's parameters say nothing here.
                b'R' | b'S' => {}
                _ => messages.push((kind as char, detail)),
            }
        }
    }
}

fn error(code: &str) -> (char, Option<String>) {
    ('E', Some(code.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_extended_messages_answer_postgresql_errors_and_the_connection_goes_on() {
    let (_dir, server) = server();
    let mut wire = Wire::connect(&server).await;

    // Unknown names: everything after the error is skipped up to Sync.
    wire.bind("nowhere", 0, &[]).await;
    wire.execute().await;
    assert_eq!(wire.sync().await, Answer { messages: vec![error("26000")], status: 'I' });
    wire.send(b'D', b"Pnowhere\0").await;
    assert_eq!(wire.sync().await, Answer { messages: vec![error("34000")], status: 'I' });

    // A statement taking one bigint: bound with none, with a binary value of
    // the wrong size, then right, in text.
    wire.parse("plus", "SELECT $1::bigint + 1").await;
    assert_eq!(wire.sync().await, Answer { messages: vec![('1', None)], status: 'I' });
    wire.bind("plus", 0, &[]).await;
    assert_eq!(wire.sync().await, Answer { messages: vec![error("08P01")], status: 'I' });
    wire.bind("plus", 1, &[&[0, 7]]).await;
    assert_eq!(wire.sync().await, Answer { messages: vec![error("22P03")], status: 'I' });
    wire.bind("plus", 0, &[b"41"]).await;
    wire.execute().await;
    let ran = wire.sync().await;
    assert_eq!(ran.messages, vec![('2', None), ('D', Some("42".into())), ('C', Some("SELECT 1".into()))]);
    wire.parse("plus", "SELECT 1").await;
    assert_eq!(wire.sync().await, Answer { messages: vec![error("42P05")], status: 'I' });
    // Closed, the statement is gone.
    wire.send(b'C', b"Splus\0").await;
    assert_eq!(wire.sync().await, Answer { messages: vec![('3', None)], status: 'I' });
    wire.bind("plus", 0, &[b"41"]).await;
    assert_eq!(wire.sync().await, Answer { messages: vec![error("26000")], status: 'I' });

    // A pipeline with an error in the middle: what came before it ran, what
    // came after it up to Sync did not.
    wire.parse("", "SELECT 1").await;
    wire.bind("", 0, &[]).await;
    wire.execute().await;
    wire.parse("", "SELEC 1").await;
    wire.bind("", 0, &[]).await;
    wire.execute().await;
    let piped = wire.sync().await;
    let expected =
        vec![('1', None), ('2', None), ('D', Some("1".into())), ('C', Some("SELECT 1".into())), error("42601")];
    assert_eq!(piped, Answer { messages: expected, status: 'I' });

    // Inside a transaction block an error fails the block until it ends;
    // its COMMIT rolls it back and says so.
    wire.parse("", "BEGIN").await;
    wire.bind("", 0, &[]).await;
    wire.execute().await;
    assert_eq!(wire.sync().await.status, 'T');
    wire.bind("nowhere", 0, &[]).await;
    assert_eq!(wire.sync().await, Answer { messages: vec![error("26000")], status: 'E' });
    wire.parse("", "SELECT 1").await;
    assert_eq!(wire.sync().await, Answer { messages: vec![error("25P02")], status: 'E' });
    wire.parse("", "COMMIT").await;
    wire.bind("", 0, &[]).await;
    wire.execute().await;
    let rolled_back = wire.sync().await;
    let expected = vec![('1', None), ('2', None), ('C', Some("ROLLBACK".into()))];
    assert_eq!(rolled_back, Answer { messages: expected, status: 'I' });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_writes_once_row_limits_are_bounded_and_driver_timestamps_are_read() {
    let (_dir, server) = server();
    let mut wire = Wire::connect(&server).await;
    let created = wire.run("CREATE TABLE once (id BIGINT PRIMARY KEY, at TIMESTAMP)", &[]).await;
    assert_eq!(created.status, 'I', "{created:?}");

    // Executing a portal that wrote again does not write again: 55000, as
    // PostgreSQL answers.
    wire.parse("", "INSERT INTO once VALUES ($1, NULL)").await;
    wire.bind("", 0, &[b"1"]).await;
    wire.execute().await;
    wire.execute().await;
    let twice = wire.sync().await;
    let expected = vec![('1', None), ('2', None), ('C', Some("INSERT 0 1".into())), error("55000")];
    assert_eq!(twice, Answer { messages: expected, status: 'I' });
    let counted = wire.run("SELECT count(*) FROM once", &[]).await;
    assert!(counted.messages.contains(&('D', Some("1".into()))), "{counted:?}");

    // A row limit of 2^31 - 1 (or below zero) is no limit, not an
    // allocation of that many rows: the node answers and goes on.
    for limit in [i32::MAX, -1] {
        wire.parse("", "SELECT id FROM once").await;
        wire.bind("", 0, &[]).await;
        wire.execute_limited(limit).await;
        let all = wire.sync().await;
        let expected = vec![('1', None), ('2', None), ('D', Some("1".into())), ('C', Some("SELECT 1".into()))];
        assert_eq!(all, Answer { messages: expected, status: 'I' }, "limit {limit}");
    }

    // More parameters than ParameterDescription can count.
    wire.parse("", "SELECT $40000::bigint").await;
    assert_eq!(wire.sync().await, Answer { messages: vec![error("54000")], status: 'I' });

    // Timestamps as drivers send them, with PostgreSQL's offsets.
    for (id, text) in
        [("2", "2026-12-06 16:00:00+00"), ("3", "2026-12-06 21:30:00+0530"), ("4", "2026-12-06 11:00:00-05")]
    {
        let inserted = wire.run("INSERT INTO once VALUES ($1, $2)", &[id.as_bytes(), text.as_bytes()]).await;
        assert!(inserted.messages.contains(&('C', Some("INSERT 0 1".into()))), "{text}: {inserted:?}");
    }
    let same = wire.run("SELECT count(*) FROM once WHERE at = $1", &[b"2026-12-06T16:00:00Z"]).await;
    assert!(same.messages.contains(&('D', Some("3".into()))), "{same:?}");
}

/// A count over five copies of a table of 100 rows joined: 10^10 rows,
/// read as 10^8 scans of the innermost copy. That is hours, far past the
/// statement timeout (30 s, after which it would answer 57014 with another
/// message), so it cannot end on its own before it is cancelled.
const ENDLESS: &str = "SELECT count(*) FROM numbers a CROSS JOIN numbers b CROSS JOIN numbers c \
                       CROSS JOIN numbers d CROSS JOIN numbers e";

fn create_numbers() -> String {
    let values: Vec<String> = (0..100).map(|n| format!("({n})")).collect();
    format!("CREATE TABLE numbers (n INT PRIMARY KEY); INSERT INTO numbers VALUES {}", values.join(", "))
}

/// Whether a statement runs on the node: one is counted in
/// `geodb_requests_inflight` from its admission to its answer (`/metrics`
/// itself is not counted, nor ever shed).
async fn statement_running(server: &Server) -> bool {
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    common::metric_sum(&metrics, "geodb_requests_inflight") > 0.0
}

/// How long the cancelling side pauses between looks; how quickly a
/// statement starts or stops changes how many looks it takes, not whether
/// a test passes.
const POLL: Duration = Duration::from_millis(10);

/// Waits until a statement runs, then sends `cancel` until it no longer
/// does: a cancel request that arrives before the statement has started
/// is forgotten, as in PostgreSQL.
async fn cancel_when_running<F: Future<Output = ()>>(server: &Server, mut cancel: impl FnMut() -> F) {
    let gave_up = Instant::now() + GIVE_UP;
    while !statement_running(server).await {
        assert!(Instant::now() < gave_up, "no statement ran within {GIVE_UP:?}");
        tokio::time::sleep(POLL).await;
    }
    while statement_running(server).await {
        assert!(Instant::now() < gave_up, "cancel requests did not stop the statement within {GIVE_UP:?}");
        cancel().await;
        tokio::time::sleep(POLL).await;
    }
}

/// A bound that only a hang reaches (a statement starts and stops within
/// milliseconds): a broken cancel fails the test instead of stalling CI.
const GIVE_UP: Duration = Duration::from_secs(120);

/// Sends a cancel request with the key `(pid, secret)` and waits until the
/// server has handled it (it closes the connection without answering).
async fn send_cancel(server: &Server, (pid, secret): (i32, i32)) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = server.pg_url.as_deref().unwrap();
    let address = url.trim_start_matches("postgresql://").split(['/', '?']).next().unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = 16i32.to_be_bytes().to_vec();
    for field in [80_877_102, pid, secret] {
        request.extend(field.to_be_bytes());
    }
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.is_empty(), "a cancel request has no answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_the_running_statement_and_the_connection_goes_on() {
    let (_dir, server) = server();
    let client = connect(&server).await;
    client.batch_execute(&create_numbers()).await.unwrap();
    let canceller = |token: tokio_postgres::CancelToken| {
        let server = Server::attach(&server.url);
        tokio::spawn(async move {
            cancel_when_running(&server, || {
                let token = token.clone();
                async move { token.cancel_query(NoTls).await.expect("send a cancel request") }
            })
            .await
        })
    };
    let is_canceled = |error: tokio_postgres::Error| {
        assert_eq!(code(&error), Some(&SqlState::QUERY_CANCELED), "{error}");
        assert_eq!(error.as_db_error().unwrap().message(), "canceling statement due to user request");
    };

    // A statement of its own (the simple query protocol, as psql's Ctrl-C
    // stops one): canceled, and the connection runs the next.
    let (ran, cancelled) = tokio::join!(client.simple_query(ENDLESS), canceller(client.cancel_token()));
    cancelled.unwrap();
    is_canceled(ran.unwrap_err());
    assert_eq!(rows(&client, "SELECT count(*) FROM numbers").await, vec![vec![Some("100".to_string())]]);

    // Inside a transaction block (the extended protocol): the block fails,
    // as in PostgreSQL, and ROLLBACK ends it.
    client.batch_execute("BEGIN; INSERT INTO numbers VALUES (100)").await.unwrap();
    let (ran, cancelled) = tokio::join!(client.query(ENDLESS, &[]), canceller(client.cancel_token()));
    cancelled.unwrap();
    is_canceled(ran.unwrap_err());
    let error = client.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{error}");
    client.batch_execute("ROLLBACK").await.unwrap();
    let count: i64 = client.query_one("SELECT count(*) FROM numbers", &[]).await.unwrap().get(0);
    assert_eq!(count, 100, "the canceled block wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_keys_are_random_per_connection_and_a_wrong_one_does_nothing() {
    let (_dir, server) = server();
    let mut wire = Wire::connect(&server).await;
    let other = Wire::connect(&server).await;
    assert_ne!(wire.key.0, other.key.0, "each connection has its own process id");
    // Secrets are 32 random bits: two equal ones would be a 1 in 2^32 chance.
    assert_ne!(wire.key.1, other.key.1, "and its own random secret");
    wire.query(&create_numbers()).await;
    assert_eq!(wire.answer().await.status, 'I');

    wire.query(ENDLESS).await;
    let gave_up = Instant::now() + GIVE_UP;
    while !statement_running(&server).await {
        assert!(Instant::now() < gave_up, "the statement never ran");
        tokio::time::sleep(POLL).await;
    }
    // The right process id with a wrong secret, and another connection's
    // key: the statement runs on.
    send_cancel(&server, (wire.key.0, wire.key.1.wrapping_add(1))).await;
    send_cancel(&server, other.key).await;
    assert!(statement_running(&server).await, "a wrong key cancels nothing");

    let key = wire.key;
    cancel_when_running(&server, || send_cancel(&server, key)).await;
    assert_eq!(wire.answer().await, Answer { messages: vec![error("57014")], status: 'I' });
    wire.query("SELECT 1").await;
    let expected = vec![('T', None), ('D', Some("1".into())), ('C', Some("SELECT 1".into()))];
    assert_eq!(wire.answer().await, Answer { messages: expected, status: 'I' });
}

/// psql's `\dt` and `\d <table>` (their `pg_catalog` queries, answered from
/// GeoDB's catalog) show GeoDB's tables as PostgreSQL would. Where psql is
/// not installed this says so and checks nothing (CI installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_lists_and_describes_tables() {
    let (_dir, server) = server();
    let client = connect(&server).await;
    client
        .batch_execute(
            "CREATE TABLE accounts (user_id INT, id BIGINT, owner VARCHAR(20) NOT NULL, balance DECIMAL(12,2), \
             opened TIMESTAMP, PRIMARY KEY (user_id, id)); \
             CREATE UNIQUE INDEX accounts_owner ON accounts (owner); \
             CREATE INDEX accounts_balance ON accounts (balance, id); \
             CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)",
        )
        .await
        .unwrap();
    let url = server.pg_url.clone().unwrap();
    let psql = |command: &str| {
        let output = std::process::Command::new("psql").arg(&url).args(["-X", "-c", command]).output();
        output.map(|output| {
            assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap()
        })
    };
    let Ok(tables) = psql("\\dt") else {
        eprintln!("psql is not installed: skipping psql_lists_and_describes_tables");
        return;
    };
    let expected = "         List of relations
 Schema |   Name   | Type  | Owner 
--------+----------+-------+-------
 public | accounts | table | geodb
 public | notes    | table | geodb
(2 rows)

";
    assert_eq!(tables, expected);
    assert!(psql("\\dt no*").unwrap().contains(" public | notes | table | geodb\n(1 row)"));

    let expected = "                       Table \"public.accounts\"
 Column  |           Type           | Collation | Nullable | Default 
---------+--------------------------+-----------+----------+---------
 user_id | integer                  |           | not null | 
 id      | bigint                   |           | not null | 
 owner   | character varying(20)    |           | not null | 
 balance | numeric(12,2)            |           |          | 
 opened  | timestamp with time zone |           |          | 
Indexes:
    \"accounts_pkey\" PRIMARY KEY, btree (user_id, id)
    \"accounts_balance\" btree (balance, id)
    \"accounts_owner\" UNIQUE, btree (owner)

";
    assert_eq!(psql("\\d accounts").unwrap(), expected);
    let output = std::process::Command::new("psql").arg(&url).args(["-X", "-c", "\\d nowhere"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stderr).trim(), "Did not find any relation named \"nowhere\".");
}
