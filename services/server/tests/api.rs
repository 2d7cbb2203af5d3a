//! The HTTP API contract of `docs/api.md`, against a real `geodb dev`
//! process: answers, headers, sessions, and every documented error code.

mod common;

use common::{Server, code};
use serde_json::json;

fn server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(&dir.path().join("data"));
    (dir, server)
}

#[tokio::test]
async fn one_shot_statements_and_batches_answer_the_documented_shape() {
    let (_dir, server) = server();
    server
        .sql(
            "CREATE TABLE district (d_w_id INT NOT NULL, d_id INT NOT NULL, d_next_o_id INT, d_tax DECIMAL(4,4), \
             PRIMARY KEY (d_w_id, d_id))",
            json!([]),
        )
        .await;
    let insert = server.sql("INSERT INTO district VALUES (1, 3, 3001, '0.1234')", json!([])).await;
    assert_eq!(insert["rows_affected"], 1);
    let (status, body) = server
        .post(
            "/v1/sql",
            json!({"statements": [
                {"sql": "UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = $1 AND d_id = $2", "params": [1, 3]},
                {"sql": "SELECT d_next_o_id, d_tax FROM district WHERE d_w_id = $1 AND d_id = $2", "params": [1, 3]}],
             "isolation": "snapshot"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["isolation"], "snapshot");
    assert_eq!(body["retries"], 0);
    assert_eq!(body["results"][0]["rows_affected"], 1);
    assert_eq!(body["results"][1]["columns"], json!(["d_next_o_id", "d_tax"]));
    assert_eq!(body["results"][1]["rows"], json!([[3002, "0.1234"]]));
    let commit_ts = body["commit_ts"].as_str().unwrap();
    let (physical, logical) = commit_ts.split_once('.').unwrap();
    assert!(physical.parse::<u64>().unwrap() > 1_700_000_000_000_000_000);
    logical.parse::<u32>().unwrap();
    // The default level is serializable.
    let (_, body) = server.post("/v1/sql", json!({"sql": "SELECT d_id FROM district"})).await;
    assert_eq!(body["isolation"], "serializable");
}

#[tokio::test]
async fn every_response_names_the_node_and_region() {
    let (_dir, server) = server();
    for path in ["/healthz", "/readyz", "/metrics", "/v1/cluster", "/no/such/path"] {
        let response = server.client.get(format!("{}{path}", server.url)).send().await.unwrap();
        assert_eq!(response.headers()["x-geodb-node"], "1", "{path}");
        assert_eq!(response.headers()["x-geodb-region"], "us-east", "{path}");
    }
    let (status, body) = server.post_raw("/v1/sql", b"{".to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "08P01");
}

/// `X-GeoDB-Commit` says where a transaction committed: at its keys' home
/// shards, or nowhere for one that wrote nothing (a single node has no
/// regions to name); a session's `COMMIT` says it too.
#[tokio::test]
async fn answers_say_where_a_transaction_committed() {
    let (_dir, server) = server();
    let commit_of = |headers: &reqwest::header::HeaderMap| {
        (
            headers.get("x-geodb-commit").map(|value| value.to_str().unwrap().to_string()),
            headers.get("x-geodb-commit-regions").map(|value| value.to_str().unwrap().to_string()),
        )
    };
    let (status, headers, body) =
        server.post_with_headers("/v1/sql", json!({"sql": "CREATE TABLE t (id INT PRIMARY KEY)"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(commit_of(&headers), (Some("home".into()), None));
    let (_, headers, _) = server.post_with_headers("/v1/sql", json!({"sql": "INSERT INTO t VALUES (1)"})).await;
    assert_eq!(commit_of(&headers), (Some("home".into()), None));
    let (_, headers, _) = server.post_with_headers("/v1/sql", json!({"sql": "SELECT id FROM t"})).await;
    assert_eq!(commit_of(&headers), (Some("none".into()), None));
    let (_, headers, body) = server.post_with_headers("/v1/sql", json!({"sql": "SELECT nope FROM t"})).await;
    assert_eq!(commit_of(&headers), (None, None), "{body}");

    let (_, session) = server.post("/v1/sessions", json!({})).await;
    let path = format!("/v1/sessions/{}/sql", session["session"].as_str().unwrap());
    for (sql, expected) in [
        ("BEGIN", None),
        ("INSERT INTO t VALUES (2)", None),
        ("COMMIT", Some("home")),
        ("INSERT INTO t VALUES (3)", Some("home")),
    ] {
        let (status, headers, body) = server.post_with_headers(&path, json!({"sql": sql})).await;
        assert_eq!(status, 200, "{sql}: {body}");
        assert_eq!(commit_of(&headers).0.as_deref(), expected, "{sql}");
    }
}

#[tokio::test]
async fn values_of_every_type_round_trip_in_their_json_forms() {
    let (_dir, server) = server();
    server
        .sql(
            "CREATE TABLE v (id BIGINT PRIMARY KEY, s SMALLINT, d NUMERIC(10,2), r REAL, f DOUBLE PRECISION, \
             c CHAR(3), vc VARCHAR(5), t TEXT, b BOOLEAN, ts TIMESTAMP)",
            json!([]),
        )
        .await;
    server
        .sql(
            "INSERT INTO v VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            json!([
                9007199254740993i64,
                -7,
                "12345678.91",
                1.5,
                2.25,
                "abc",
                "héllo",
                "x || y",
                true,
                "2024-11-26T00:00:00Z"
            ]),
        )
        .await;
    server.sql("INSERT INTO v (id) VALUES (2)", json!([])).await;
    let rows = server.sql("SELECT * FROM v ORDER BY id", json!([])).await;
    assert_eq!(
        rows["rows"],
        json!([
            [2, null, null, null, null, null, null, null, null, null],
            [9007199254740993i64, -7, "12345678.91", 1.5, 2.25, "abc", "héllo", "x || y", true, "2024-11-26T00:00:00Z"]
        ])
    );
    let concat = server.sql("SELECT c || '-' || vc FROM v WHERE id = $1", json!([9007199254740993i64])).await;
    assert_eq!(concat["rows"], json!([["abc-héllo"]]));
}

#[tokio::test]
async fn bad_input_answers_the_documented_codes_and_the_node_keeps_serving() {
    let (_dir, server) = server();
    server.sql("CREATE TABLE t (id INT PRIMARY KEY, n SMALLINT NOT NULL, name TEXT)", json!([])).await;
    server.sql("CREATE UNIQUE INDEX t_name ON t (name)", json!([])).await;
    server.sql("INSERT INTO t VALUES (1, 1, 'a')", json!([])).await;
    let cases: &[(&str, serde_json::Value, u16, &str)] = &[
        ("SELEC 1", json!([]), 400, "42601"),
        ("SELECT * FROM nope", json!([]), 400, "42P01"),
        ("SELECT nope FROM t", json!([]), 400, "42703"),
        ("CREATE TABLE t (id INT PRIMARY KEY)", json!([]), 400, "42P07"),
        ("INSERT INTO t VALUES (2, 'x', 'b')", json!([]), 400, "22P02"),
        ("INSERT INTO t VALUES (2, 40000, 'b')", json!([]), 400, "22003"),
        ("SELECT 9223372036854775807 + 1", json!([]), 400, "22003"),
        ("SELECT 1 / 0", json!([]), 400, "22012"),
        ("INSERT INTO t VALUES (2, NULL, 'b')", json!([]), 409, "23502"),
        ("INSERT INTO t VALUES (1, 1, 'b')", json!([]), 409, "23505"),
        ("INSERT INTO t VALUES (2, 1, 'a')", json!([]), 409, "23505"),
        ("SELECT * FROM t WHERE id = $1", json!([{"an": "object"}]), 400, "22023"),
    ];
    for (sql, params, status, expected) in cases {
        let (got, body) = server.try_sql(sql, params.clone()).await;
        assert_eq!((got, code(&body)), (*status, *expected), "{sql}: {body}");
        assert_eq!(body["error"]["retryable"], false, "{sql}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    // Malformed requests.
    let (status, body) = server.post_raw("/v1/sql", b"{\"sql\": ".to_vec()).await;
    assert_eq!((status, code(&body)), (400, "08P01"));
    let (status, body) = server.post("/v1/sql", json!({"nothing": 1})).await;
    assert_eq!((status, code(&body)), (400, "08P01"));
    let (status, body) = server.post("/v1/sql", json!({"sql": "SELECT 1", "isolation": "chaos"})).await;
    assert_eq!((status, code(&body)), (400, "22023"));
    let (status, body) = server.post("/v1/sessions/0123456789abcdef/sql", json!({"sql": "SELECT 1"})).await;
    assert_eq!((status, code(&body)), (404, "08003"));
    let (status, _) = server.get("/v1/nowhere").await;
    assert_eq!(status, 404);
    // Still serving, and nothing was half-applied.
    let rows = server.sql("SELECT id, n, name FROM t", json!([])).await;
    assert_eq!(rows["rows"], json!([[1, 1, "a"]]));
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 200);
}

/// Defects a new user found (issue "PostgreSQL wire protocol ...", item 7),
/// each with the answer it must give now.
#[tokio::test]
async fn numbers_out_of_range_bodies_that_are_not_objects_and_wrong_methods_answer_documented_errors() {
    let (_dir, server) = server();
    server.sql("CREATE TABLE ints (id INT PRIMARY KEY, b BIGINT, i INT, s SMALLINT, d DECIMAL(28,0))", json!([])).await;
    // A parameter beyond BIGINT, written as JSON text, is refused: never
    // stored rounded or clamped. At every width, and as a literal and an
    // expression too.
    let raw = |sql: &str, param: &str| format!(r#"{{"sql": "{sql}", "params": [{param}]}}"#).into_bytes();
    for (sql, param) in [
        ("INSERT INTO ints (id, b) VALUES (1, $1)", "-9223372036854775809"),
        ("INSERT INTO ints (id, b) VALUES (1, $1)", "9223372036854775808"),
        ("INSERT INTO ints (id, b) VALUES (1, $1)", "123456789012345678901234567890123"),
        ("INSERT INTO ints (id, i) VALUES (1, $1)", "2147483648"),
        ("INSERT INTO ints (id, s) VALUES (1, $1)", "-32769"),
        ("INSERT INTO ints (id, b) VALUES (1, $1 + 1)", "9223372036854775807"),
    ] {
        let (status, body) = server.post_raw("/v1/sql", raw(sql, param)).await;
        assert_eq!((status, code(&body)), (400, "22003"), "{sql} with {param}: {body}");
    }
    for sql in ["INSERT INTO ints (id, b) VALUES (1, -9223372036854775809)", "SELECT -9223372036854775807 - 2"] {
        let (status, body) = server.try_sql(sql, json!([])).await;
        assert_eq!((status, code(&body)), (400, "22003"), "{sql}: {body}");
    }
    assert_eq!(server.sql("SELECT count(*) FROM ints", json!([])).await["rows"], json!([[0]]), "nothing stored");
    // The ends of the range are values, and a long integer is exact in a DECIMAL.
    let (status, body) = server
        .post_raw(
            "/v1/sql",
            raw("INSERT INTO ints (id, b, d) VALUES (1, $1, $2)", "-9223372036854775808, 1234567890123456789012345678"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rows = server.sql("SELECT b, d FROM ints WHERE id = 1", json!([])).await;
    assert_eq!(rows["rows"], json!([[i64::MIN, "1234567890123456789012345678"]]));

    // A body must be a JSON object: an array is not read field by field.
    let session = server.post("/v1/sessions", json!({})).await.1["session"].as_str().unwrap().to_string();
    for path in ["/v1/sql".to_string(), format!("/v1/sessions/{session}/sql"), "/v1/sessions".to_string()] {
        let (status, body) = server.post_raw(&path, br#"["SELECT 1"]"#.to_vec()).await;
        assert_eq!((status, code(&body)), (400, "22023"), "{path}: {body}");
    }
    let (status, body) = server.post("/v1/sql", json!({"statements": [["SELECT 1"]]})).await;
    assert_eq!((status, code(&body)), (400, "08P01"), "a statement of a batch is an object: {body}");

    // Wrong methods answer 405 with the error body and the node's headers.
    let client = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/sql".to_string()),
        (reqwest::Method::PUT, "/v1/sql".to_string()),
        (reqwest::Method::GET, format!("/v1/sessions/{session}")),
    ] {
        let response = client.request(method.clone(), format!("{}{path}", server.url)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method} {path}");
        assert!(response.headers().contains_key("x-geodb-node"), "{method} {path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(code(&body), "08P01", "{method} {path}: {body}");
    }
    // An unknown session id, however long, answers 08003 without echoing it whole.
    let long = "a".repeat(20_000);
    let (status, body) = server.post(&format!("/v1/sessions/{long}/sql"), json!({"sql": "SELECT 1"})).await;
    assert_eq!((status, code(&body)), (404, "08003"));
    assert!(body["error"]["message"].as_str().unwrap().len() < 300, "{body}");

    // A control statement with a syntax error is a syntax error, wherever it is sent.
    let (status, body) =
        server.post(&format!("/v1/sessions/{session}/sql"), json!({"sql": "BEGIN ISOLATION LEVEL"})).await;
    assert_eq!((status, code(&body)), (400, "42601"), "{body}");
    let (status, body) = server.try_sql("BEGIN ISOLATION LEVEL", json!([])).await;
    assert_eq!((status, code(&body)), (400, "42601"), "{body}");
    let (status, body) = server.try_sql("BEGIN", json!([])).await;
    assert_eq!((status, code(&body)), (400, "0A000"), "a well-formed one belongs in a session: {body}");
}

#[tokio::test]
async fn an_oversized_body_answers_413_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    // A small limit keeps the whole request inside the socket buffers, so
    // the client always finishes sending before the early answer arrives.
    let server = Server::start(&dir.path().join("data"), "[limits]\nrequest_bytes_max = 4096\n");
    let huge = format!("{{\"sql\": \"SELECT '{}'\"}}", "x".repeat(16 << 10));
    let (status, body) = server.post_raw("/v1/sql", huge.into_bytes()).await;
    assert_eq!((status, code(&body)), (413, "54000"), "{body}");
    let fits = format!("{{\"sql\": \"SELECT '{}'\"}}", "x".repeat(1 << 10));
    let (status, body) = server.post_raw("/v1/sql", fits.into_bytes()).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn sessions_run_transactions_like_postgresql() {
    let (_dir, server) = server();
    server.sql("CREATE TABLE kv (k INT PRIMARY KEY, v INT)", json!([])).await;
    let session = server.session("snapshot").await;
    // Outside a transaction each statement commits on its own.
    session.ok("INSERT INTO kv VALUES (1, 10)").await;
    assert_eq!(server.sql("SELECT v FROM kv WHERE k = 1", json!([])).await["rows"], json!([[10]]));
    session.ok("BEGIN").await;
    session.ok("UPDATE kv SET v = 11 WHERE k = 1").await;
    assert_eq!(session.int("SELECT v FROM kv WHERE k = 1").await, Some(11), "reads its own writes");
    assert_eq!(server.sql("SELECT v FROM kv WHERE k = 1", json!([])).await["rows"], json!([[10]]), "not yet visible");
    let commit = session.ok("COMMIT").await;
    assert!(commit["commit_ts"].is_string());
    assert_eq!(server.sql("SELECT v FROM kv WHERE k = 1", json!([])).await["rows"], json!([[11]]));
    // ROLLBACK discards.
    session.ok("START TRANSACTION ISOLATION LEVEL SERIALIZABLE").await;
    session.ok("DELETE FROM kv WHERE k = 1").await;
    session.ok("ROLLBACK").await;
    assert_eq!(server.sql("SELECT v FROM kv WHERE k = 1", json!([])).await["rows"], json!([[11]]));
    // After an error, everything but ROLLBACK answers 25P02.
    session.ok("BEGIN ISOLATION LEVEL MONOTONIC ATOMIC VIEW").await;
    session.ok("UPDATE kv SET v = 12 WHERE k = 1").await;
    let (status, body) = session.run("SELECT nope FROM kv").await;
    assert_eq!((status, code(&body)), (400, "42703"));
    let (status, body) = session.run("SELECT v FROM kv").await;
    assert_eq!((status, code(&body)), (409, "25P02"));
    let (status, body) = session.run("COMMIT").await;
    assert_eq!((status, code(&body)), (409, "25P02"), "COMMIT of a failed transaction answers the error");
    assert_eq!(server.sql("SELECT v FROM kv WHERE k = 1", json!([])).await["rows"], json!([[11]]), "and rolled back");
    session.ok("SELECT v FROM kv").await;
    // A malformed statement inside a transaction fails it too.
    session.ok("BEGIN").await;
    let (status, body) = session.run_with("SELECT v FROM kv WHERE k = $1", json!([{"bad": 1}])).await;
    assert_eq!((status, code(&body)), (400, "22023"));
    let (status, body) = session.run("SELECT v FROM kv").await;
    assert_eq!((status, code(&body)), (409, "25P02"));
    session.ok("ROLLBACK").await;
    // SET TRANSACTION before the first statement changes the level.
    session.ok("BEGIN").await;
    session.ok("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").await;
    session.ok("SELECT v FROM kv").await;
    let (status, body) = session.run("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").await;
    assert_eq!((status, code(&body)), (400, "25001"));
    session.ok("ROLLBACK").await;
    // DELETE ends the session; later use answers 404.
    let response = server.client.delete(format!("{}/v1/sessions/{}", server.url, session.id)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let (status, body) = session.run("SELECT 1").await;
    assert_eq!((status, code(&body)), (404, "08003"));
}

#[tokio::test]
async fn a_session_runs_a_list_of_statements_in_one_request() {
    let (_dir, server) = server();
    server.sql("CREATE TABLE kv (k INT PRIMARY KEY, v INT NOT NULL)", json!([])).await;
    let session = server.session("serializable").await;
    let path = format!("/v1/sessions/{}/sql", session.id);
    // A whole transaction in one round trip: each statement answers as if
    // sent alone, and the COMMIT's headers say where it committed.
    let (status, headers, body) = server
        .post_with_headers(
            &path,
            json!({"statements": [
                {"sql": "BEGIN"},
                {"sql": "INSERT INTO kv VALUES ($1, $2)", "params": [1, 10]},
                {"sql": "UPDATE kv SET v = v + $1 WHERE k = 1", "params": [5]},
                {"sql": "SELECT v FROM kv WHERE k = 1"},
                {"sql": "COMMIT"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(results[1]["rows_affected"], 1);
    assert_eq!(results[3]["rows"], json!([[15]]));
    assert!(results[4]["commit_ts"].is_string());
    assert_eq!(headers["x-geodb-commit"], "home");
    // The first error stops the list: the answers before it come with it,
    // and the transaction is failed as if the statements came one by one.
    let (status, body) = server
        .post(
            &path,
            json!({"statements": [
                {"sql": "BEGIN"},
                {"sql": "INSERT INTO kv VALUES (2, 20)"},
                {"sql": "INSERT INTO kv VALUES (1, 99)"},
                {"sql": "SELECT 1"}]}),
        )
        .await;
    assert_eq!((status, code(&body)), (409, "23505"), "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(code(&session.run("SELECT 1").await.1), "25P02");
    session.ok("ROLLBACK").await;
    assert_eq!(server.sql("SELECT k, v FROM kv", json!([])).await["rows"], json!([[1, 15]]));
    // Outside a transaction each statement commits alone; a list of one
    // answers a list.
    let (status, body) = server.post(&path, json!({"statements": [{"sql": "UPDATE kv SET v = 0 WHERE k = 1"}]})).await;
    assert_eq!((status, body["results"][0]["rows_affected"].as_i64()), (200, Some(1)), "{body}");
    for bad in [json!({"statements": []}), json!({"sql": "SELECT 1", "statements": [{"sql": "SELECT 1"}]})] {
        let (status, body) = server.post(&path, bad).await;
        assert_eq!((status, code(&body)), (400, "08P01"), "{body}");
    }
}

#[tokio::test]
async fn an_idle_session_is_rolled_back_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), "[limits]\nsession_idle_timeout_ms = 50\n");
    server.sql("CREATE TABLE kv (k INT PRIMARY KEY, v INT)", json!([])).await;
    let session = server.session("serializable").await;
    session.ok("BEGIN").await;
    session.ok("INSERT INTO kv VALUES (1, 1)").await;
    // Poll (bounded) until the reaper has removed it: no fixed sleep decides.
    let mut gone = false;
    for _ in 0..600 {
        let (status, _) = server.post("/v1/sessions/none/sql", json!({"sql": "SELECT 1"})).await;
        assert_eq!(status, 404);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (status, body) = session.run("SELECT 1").await;
        if status == 404 {
            assert_eq!(code(&body), "08003");
            gone = true;
            break;
        }
    }
    assert!(gone, "the idle session was never removed");
    assert_eq!(server.sql("SELECT COUNT(*) FROM kv", json!([])).await["rows"], json!([[0]]), "rolled back");
}

#[tokio::test]
async fn explain_shows_the_access_path() {
    let (_dir, server) = server();
    server.sql("CREATE TABLE o (w INT, d INT, id INT, c INT, PRIMARY KEY (w, d, id))", json!([])).await;
    server.sql("CREATE INDEX o_c ON o (w, d, c, id)", json!([])).await;
    let plan = |body: serde_json::Value| body["rows"].to_string();
    let point = plan(server.sql("EXPLAIN SELECT * FROM o WHERE w = 1 AND d = 2 AND id = 3", json!([])).await);
    assert!(point.contains("Get") && point.contains("PRIMARY"), "{point}");
    let index = plan(
        server
            .sql("EXPLAIN SELECT id FROM o WHERE w = 1 AND d = 2 AND c = 3 ORDER BY id DESC LIMIT 1", json!([]))
            .await,
    );
    assert!(index.contains("o_c"), "{index}");
    let full = plan(server.sql("EXPLAIN SELECT * FROM o WHERE c = 3", json!([])).await);
    assert!(full.to_lowercase().contains("full"), "{full}");
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let (_dir, server) = server();
    server.sql("CREATE TABLE kv (k INT PRIMARY KEY, v INT)", json!([])).await;
    server.sql("INSERT INTO kv VALUES (7, 1)", json!([])).await;
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "geodb_http_requests_total",
        "geodb_statement_duration_seconds_bucket",
        "geodb_transactions_total",
        "geodb_group_commit_syncs_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    assert!(metrics.contains("isolation=\"serializable\""));
    let (status, cluster) = server.get("/v1/cluster").await;
    assert_eq!(status, 200);
    let cluster: serde_json::Value = serde_json::from_str(&cluster).unwrap();
    assert_eq!(cluster["regions"], json!(["us-east"]));
    assert_eq!(cluster["nodes"][0]["http"], server.url);
    assert_eq!(cluster["shards"][0]["leader"], 1);
    let (status, home) = server.get("/v1/homes/7").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&home).unwrap()["region"], "us-east");
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::dev(&data);
    server.sql("CREATE TABLE kv (k INT PRIMARY KEY, v INT)", json!([])).await;
    server.sql("INSERT INTO kv VALUES (1, 1)", json!([])).await;
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    let server = Server::dev(&data);
    assert_eq!(server.sql("SELECT v FROM kv WHERE k = 1", json!([])).await["rows"], json!([[1]]));
}
