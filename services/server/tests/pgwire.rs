//! The PostgreSQL wire protocol against a real `geodb dev` (a single node,
//! as the README starts it with free ports): `tokio-postgres` and `psql`
//! connect to the `postgresql://` URL it prints, and a connection behaves
//! as a session (`docs/api.md`, "PostgreSQL wire protocol").

mod common;

use common::Server;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

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

    // The extended protocol is not served yet: refused, and the connection
    // goes on.
    let error = alice.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{error}");
    assert_eq!(rows(&alice, "SELECT 1 + 1").await, vec![vec![Some("2".into())]]);

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
