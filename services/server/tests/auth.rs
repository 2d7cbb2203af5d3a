//! Users, authentication and authorization against real `geodb` processes
//! (`docs/security.md`, "Users and authentication"): secure nodes over
//! HTTPS and PostgreSQL over TLS, certificates made by `geodb cert`, `root`
//! logging in with `client.root.crt`.
//!
//! Without credentials a client gets 401 / `28000`, with a wrong password
//! `28P01` (HTTP, tokio-postgres, psql and psycopg over SCRAM-SHA-256), a
//! user without a grant `42501` for each kind of statement, and nothing it
//! sent changed any data (read back as root); grants let it in and revokes
//! shut it out, on another node of a secure cluster too, where a session's
//! statements forwarded by a gateway run as their user and a client
//! cannot claim another user by header; `/v1/admin/*` and DDL need admin;
//! sessions belong to their user; client certificates log their user in;
//! failed logins are rate limited and counted; `geodb start` refuses to
//! start without certificates unless `--insecure`, which `/v1/cluster`
//! shows.
//!
//! Every wait polls with a bound; nothing passes by sleeping long enough.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, code};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

const BOUND: Duration = Duration::from_secs(30);

fn cert(args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_geodb")).arg("cert").args(args).output().unwrap();
    assert!(output.status.success(), "geodb cert {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA, certificates for nodes `nodes` (at 127.0.0.1 and [`cluster_ip`])
/// and client certificates for `users`, in `dir`.
fn make_certs(dir: &Path, nodes: &[u64], users: &[&str]) {
    let certs = dir.to_str().unwrap();
    cert(&["create-ca", "--certs-dir", certs]);
    for node in nodes {
        let (id, ip) = (node.to_string(), cluster_ip(*node));
        cert(&["create-node", "--certs-dir", certs, "--node-id", &id, "--host", "127.0.0.1", "--host", &ip]);
    }
    for user in users {
        cert(&["create-client", "--certs-dir", certs, "--user", user]);
    }
}

/// An HTTPS client trusting the CA of `certs`, presenting `client.<user>`
/// if given.
fn https(certs: &Path, user: Option<&str>) -> reqwest::Client {
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    let mut builder =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap()).timeout(BOUND);
    if let Some(user) = user {
        let mut pem = std::fs::read(certs.join(format!("client.{user}.crt"))).unwrap();
        pem.extend(std::fs::read(certs.join(format!("client.{user}.key"))).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// A TLS configuration for PostgreSQL clients: trusts the CA of `certs`,
/// presents `client.<user>` if given.
fn pg_tls(certs: &Path, user: Option<&str>) -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(certs.join("ca.crt")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match user {
        None => builder.with_no_client_auth(),
        Some(user) => {
            let chain = CertificateDer::pem_file_iter(certs.join(format!("client.{user}.crt")))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(certs.join(format!("client.{user}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// A secure single node (HTTPS, PostgreSQL over TLS) with `extra` config;
/// its [`Server`] talks as `root` (client certificate).
fn secure_node(dir: &Path, extra: &str) -> (PathBuf, Server) {
    let certs = dir.join("certs");
    make_certs(&certs, &[1], &["root", "alice", "carol"]);
    let config = format!("pg = \"127.0.0.1:0\"\ncerts_dir = \"{}\"\n{extra}", certs.display());
    let server = Server::start(&dir.join("data"), &config).with_client(https(&certs, Some("root")));
    assert!(server.url.starts_with("https://"), "{}", server.url);
    (certs, server)
}

/// Credentials of a request.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Password(&'a str, &'a str),
}

/// `POST path` with `body` to `url`, sent by `client` with `who`'s
/// credentials: status, headers, body.
async fn post(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    who: As<'_>,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client.post(format!("{url}{path}")).json(&body);
    if let As::Password(user, password) = who {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// `sql` through `/v1/sql` as `who`: status and body.
async fn sql_as(server: &Server, client: &reqwest::Client, who: As<'_>, sql: &str) -> (u16, Value) {
    let (status, _, body) = post(client, &server.url, "/v1/sql", who, json!({"sql": sql})).await;
    (status, body)
}

/// The rows of `SELECT` as root.
async fn rows(server: &Server, sql: &str) -> Value {
    server.sql(sql, json!([])).await["rows"].clone()
}

fn pg_url(server: &Server, user: &str, password: Option<&str>) -> String {
    let base = server.pg_url.clone().expect("a postgresql:// URL");
    let password = password.map_or_else(String::new, |password| format!("&password={password}"));
    format!("{base}?user={user}{password}&sslmode=require")
}

/// Connects with tokio-postgres; the connection's client or the SQLSTATE
/// it was refused with.
async fn pg_connect(
    url: &str,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
) -> Result<tokio_postgres::Client, String> {
    match tokio_postgres::connect(url, tls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Ok(client)
        }
        Err(error) => Err(error.code().map_or_else(|| format!("no SQLSTATE: {error}"), |code| code.code().to_string())),
    }
}

/// The first value of the first row `sql` answers, in text (simple query).
async fn first_value(client: &tokio_postgres::Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row")
}

async fn metric(server: &Server, family: &str, labels: &[&str]) -> f64 {
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_credentials_gets_401_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, server) = secure_node(dir.path(), "");
    server.sql("CREATE TABLE t (k BIGINT PRIMARY KEY, v TEXT)", json!([])).await;
    server.sql("INSERT INTO t VALUES (1, 'one')", json!([])).await;
    let anonymous = https(&certs, None);
    for (path, body) in [
        ("/v1/sql", json!({"sql": "INSERT INTO t VALUES (2, 'two')"})),
        ("/v1/sql", json!({"sql": "DROP TABLE t"})),
        ("/v1/sessions", json!({})),
        ("/v1/admin/backup", json!({"dir": dir.path().join("backup")})),
    ] {
        let (status, headers, answer) = post(&anonymous, &server.url, path, As::Nobody, body).await;
        assert_eq!((status, code(&answer)), (401, "28000"), "{path}: {answer}");
        assert_eq!(answer["error"]["retryable"], json!(false), "{answer}");
        assert!(headers.get("www-authenticate").is_some_and(|value| value.to_str().unwrap().starts_with("Basic")));
    }
    let cluster = anonymous.get(format!("{}/v1/cluster", server.url)).send().await.unwrap();
    assert_eq!(cluster.status().as_u16(), 401);
    // Probes and metrics need nothing.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = anonymous.get(format!("{}{path}", server.url)).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{path}");
    }
    assert_eq!(rows(&server, "SELECT k, v FROM t").await, json!([[1, "one"]]));
    assert!(!dir.path().join("backup").exists());
    // PostgreSQL: a user that does not exist, whatever its password: 28P01.
    let refused = pg_connect(&pg_url(&server, "nobody", Some("x")), pg_tls(&certs, None)).await;
    assert_eq!(refused.err().as_deref(), Some("28P01"));
    assert!(metric(&server, "geodb_auth_failures_total", &["listener=\"http\"", "reason=\"missing\""]).await >= 5.0);
    // A secure node says it is not insecure.
    let (status, view) = server.get("/v1/cluster").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(serde_json::from_str::<Value>(&view).unwrap()["insecure"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_28p01_over_http_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, server) = secure_node(dir.path(), "");
    server.sql("CREATE USER alice WITH PASSWORD 'wonderland'", json!([])).await;
    let client = https(&certs, None);
    for who in [As::Password("alice", "wrong"), As::Password("nobody", "wonderland"), As::Password("alice", "")] {
        let (status, answer) = sql_as(&server, &client, who, "SELECT 1").await;
        assert_eq!((status, code(&answer)), (401, "28P01"), "{answer}");
    }
    let (status, answer) = sql_as(&server, &client, As::Password("alice", "wonderland"), "SELECT 1").await;
    assert_eq!(status, 200, "{answer}");
    // A malformed Authorization header is 28000.
    let malformed = client
        .post(format!("{}/v1/sql", server.url))
        .header("authorization", "Basic not-base64!")
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 401);
    assert_eq!(code(&malformed.json().await.unwrap()), "28000");

    // PostgreSQL: SCRAM-SHA-256, with tokio-postgres...
    let tls = || pg_tls(&certs, None);
    let url = |user: &str, password: &str| pg_url(&server, user, Some(password));
    assert_eq!(pg_connect(&url("alice", "wrong"), tls()).await.err().as_deref(), Some("28P01"));
    assert_eq!(pg_connect(&url("nobody", "x"), tls()).await.err().as_deref(), Some("28P01"));
    let alice = pg_connect(&url("alice", "wonderland"), tls()).await.expect("alice logs in with SCRAM");
    assert_eq!(first_value(&alice, "SELECT 1 + 1").await, "2");

    // ...psql...
    let pg = server.pg_url.clone().unwrap();
    let ca = certs.join("ca.crt");
    let psql = |password: &str| {
        Command::new("psql")
            .arg(format!("{pg}?user=alice&sslmode=verify-full&sslrootcert={}", ca.display()))
            .args(["-X", "-A", "-t", "-c", "SELECT 40 + 2"])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "20")
            .output()
    };
    match psql("wonderland") {
        Ok(output) => {
            assert!(output.status.success(), "psql: {}", String::from_utf8_lossy(&output.stderr));
            assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "42");
            let wrong = psql("wrong").unwrap();
            let said = String::from_utf8_lossy(&wrong.stderr);
            assert!(!wrong.status.success() && said.contains("password authentication failed"), "{said}");
        }
        Err(error) => eprintln!("psql not run ({error}): skipped"),
    }

    // ...and psycopg 3.
    let script = r#"
import sys, psycopg
url, ca = sys.argv[1], sys.argv[2]
with psycopg.connect(url + "?user=alice&sslmode=verify-full&sslrootcert=" + ca, password="wonderland") as conn:
    print(conn.execute("SELECT 6 * 7").fetchone()[0])
try:
    psycopg.connect(url + "?user=alice&sslmode=verify-full&sslrootcert=" + ca, password="wrong")
    print("connected")
except psycopg.OperationalError as error:
    print(error.sqlstate if hasattr(error, "sqlstate") and error.sqlstate else "refused")
"#;
    match Command::new("python3").args(["-c", script, &pg, ca.to_str().unwrap()]).output() {
        Ok(output) if output.status.success() => {
            let said = String::from_utf8_lossy(&output.stdout);
            let lines: Vec<&str> = said.lines().collect();
            assert_eq!(lines.first(), Some(&"42"), "{said}");
            assert!(matches!(lines.get(1), Some(&"28P01") | Some(&"refused")), "{said}");
        }
        Ok(output) if String::from_utf8_lossy(&output.stderr).contains("No module named") => {
            eprintln!("psycopg is not installed: skipped");
        }
        Ok(output) => panic!("psycopg: {}", String::from_utf8_lossy(&output.stderr)),
        Err(error) => eprintln!("python3 not run ({error}): skipped"),
    }
    assert!(metric(&server, "geodb_auth_failures_total", &["listener=\"pg\"", "reason=\"password\""]).await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_a_grant_gets_42501_and_changes_nothing_until_granted() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, server) = secure_node(dir.path(), "");
    server.sql("CREATE TABLE t (k BIGINT, id BIGINT, v TEXT, PRIMARY KEY (k, id))", json!([])).await;
    server.sql("INSERT INTO t VALUES (1, 1, 'a'), (1, 2, 'b')", json!([])).await;
    server.sql("CREATE USER alice PASSWORD 'pw'", json!([])).await;
    let client = https(&certs, None);
    let alice = As::Password("alice", "pw");
    let statements = [
        "SELECT v FROM t WHERE k = 1",
        "INSERT INTO t VALUES (1, 3, 'c')",
        "UPDATE t SET v = 'z' WHERE k = 1 AND id = 1",
        "DELETE FROM t WHERE k = 1",
    ];
    for sql in statements {
        let (status, answer) = sql_as(&server, &client, alice, sql).await;
        assert_eq!((status, code(&answer)), (403, "42501"), "{sql}: {answer}");
    }
    // A list runs nothing once one statement is refused.
    let (status, _, answer) = post(
        &client,
        &server.url,
        "/v1/sql",
        alice,
        json!({"statements": [{"sql": "SELECT 1"}, {"sql": "INSERT INTO t VALUES (1, 4, 'd')"}]}),
    )
    .await;
    assert_eq!((status, code(&answer)), (403, "42501"), "{answer}");
    // In a transaction, a refused statement fails it, as other errors do.
    let (status, _, opened) = post(&client, &server.url, "/v1/sessions", alice, json!({})).await;
    assert_eq!(status, 201, "{opened}");
    let session = format!("/v1/sessions/{}/sql", opened["session"].as_str().unwrap());
    for (sql, status_wanted, code_wanted) in [
        ("BEGIN", 200, ""),
        ("DELETE FROM t WHERE k = 1 AND id = 2", 403, "42501"),
        ("SELECT 1", 409, "25P02"),
        ("ROLLBACK", 200, ""),
    ] {
        let (status, _, answer) = post(&client, &server.url, &session, alice, json!({"sql": sql})).await;
        assert_eq!(status, status_wanted, "{sql}: {answer}");
        if !code_wanted.is_empty() {
            assert_eq!(code(&answer), code_wanted, "{sql}");
        }
    }
    // Over PostgreSQL too.
    let pg = pg_connect(&pg_url(&server, "alice", Some("pw")), pg_tls(&certs, None)).await.unwrap();
    for sql in statements {
        let error = pg.simple_query(sql).await.expect_err(sql);
        assert_eq!(error.code().map(|code| code.code()), Some("42501"), "{sql}: {error}");
    }
    assert_eq!(rows(&server, "SELECT id, v FROM t ORDER BY id").await, json!([[1, "a"], [2, "b"]]));

    // A grant lets it in, for what it grants only.
    server.sql("GRANT SELECT ON TABLE t TO alice", json!([])).await;
    let (status, answer) = sql_as(&server, &client, alice, "SELECT v FROM t WHERE k = 1 AND id = 2").await;
    assert_eq!((status, answer["results"][0]["rows"].clone()), (200, json!([["b"]])), "{answer}");
    let (status, answer) = sql_as(&server, &client, alice, "INSERT INTO t VALUES (1, 3, 'c')").await;
    assert_eq!((status, code(&answer)), (403, "42501"), "{answer}");
    server.sql("GRANT INSERT, UPDATE, DELETE ON t TO alice", json!([])).await;
    for sql in ["INSERT INTO t VALUES (1, 3, 'c')", "UPDATE t SET v = 'C' WHERE k = 1 AND id = 3"] {
        let (status, answer) = sql_as(&server, &client, alice, sql).await;
        assert_eq!(status, 200, "{sql}: {answer}");
    }
    let row = pg.query_one("SELECT v FROM t WHERE k = 1 AND id = 3", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "C");
    // A revoke shuts it out again, on the open connection too.
    server.sql("REVOKE ALL PRIVILEGES ON t FROM alice", json!([])).await;
    let (status, answer) = sql_as(&server, &client, alice, "DELETE FROM t WHERE k = 1 AND id = 3").await;
    assert_eq!((status, code(&answer)), (403, "42501"), "{answer}");
    let error = pg.simple_query("SELECT v FROM t").await.expect_err("revoked");
    assert_eq!(error.code().map(|code| code.code()), Some("42501"));
    assert_eq!(rows(&server, "SELECT id, v FROM t ORDER BY id").await, json!([[1, "a"], [2, "b"], [3, "C"]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_ddl_need_the_admin_role() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, server) = secure_node(dir.path(), "");
    server.sql("CREATE USER alice PASSWORD 'pw'", json!([])).await;
    let client = https(&certs, None);
    let alice = As::Password("alice", "pw");
    for sql in ["CREATE TABLE u (a INT PRIMARY KEY)", "CREATE USER bob PASSWORD 'x'", "GRANT admin TO alice"] {
        let (status, answer) = sql_as(&server, &client, alice, sql).await;
        assert_eq!((status, code(&answer)), (403, "42501"), "{sql}: {answer}");
    }
    let backup = dir.path().join("backup");
    let (status, _, answer) = post(&client, &server.url, "/v1/admin/backup", alice, json!({"dir": backup})).await;
    assert_eq!((status, code(&answer)), (403, "42501"), "{answer}");
    let jobs = client.get(format!("{}/v1/admin/rehomes", server.url)).basic_auth("alice", Some("pw")).send().await;
    assert_eq!(jobs.unwrap().status().as_u16(), 403);
    assert!(!backup.exists());
    // root may; and so may alice once admin.
    let (status, answer) = server.get("/v1/admin/rehomes").await;
    assert_eq!(status, 200, "{answer}");
    server.sql("GRANT admin TO alice", json!([])).await;
    let (status, answer) = sql_as(&server, &client, alice, "CREATE TABLE u (a INT PRIMARY KEY)").await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = post(&client, &server.url, "/v1/admin/backup", alice, json!({"dir": backup})).await;
    assert_eq!(status, 200, "{answer}");
    server.sql("REVOKE admin FROM alice", json!([])).await;
    let (status, answer) = sql_as(&server, &client, alice, "DROP TABLE u").await;
    assert_eq!((status, code(&answer)), (403, "42501"), "{answer}");
    assert_eq!(code(&server.try_sql("DROP USER root", json!([])).await.1), "42501");
    // A user may change its own password, not another's.
    let (status, answer) = sql_as(&server, &client, alice, "ALTER USER alice PASSWORD 'new'").await;
    assert_eq!(status, 200, "{answer}");
    let alice = As::Password("alice", "new");
    let (status, answer) = sql_as(&server, &client, alice, "ALTER USER root PASSWORD 'mine'").await;
    assert_eq!((status, code(&answer)), (403, "42501"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_belongs_to_the_user_that_opened_it() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, server) = secure_node(dir.path(), "");
    server.sql("CREATE USER alice PASSWORD 'a'", json!([])).await;
    server.sql("CREATE USER bob PASSWORD 'b'", json!([])).await;
    let client = https(&certs, None);
    let (status, _, opened) = post(&client, &server.url, "/v1/sessions", As::Password("alice", "a"), json!({})).await;
    assert_eq!(status, 201, "{opened}");
    let id = opened["session"].as_str().unwrap();
    let path = format!("/v1/sessions/{id}/sql");
    let (status, _, answer) =
        post(&client, &server.url, &path, As::Password("bob", "b"), json!({"sql": "SELECT 1"})).await;
    assert_eq!((status, code(&answer)), (403, "42501"), "{answer}");
    let closed = client.delete(format!("{}/v1/sessions/{id}", server.url)).basic_auth("bob", Some("b")).send().await;
    assert_eq!(closed.unwrap().status().as_u16(), 403);
    let (status, _, answer) =
        post(&client, &server.url, &path, As::Password("alice", "a"), json!({"sql": "SELECT 1"})).await;
    assert_eq!(status, 200, "{answer}");
    let closed = client.delete(format!("{}/v1/sessions/{id}", server.url)).basic_auth("alice", Some("a")).send().await;
    assert_eq!(closed.unwrap().status().as_u16(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_log_their_user_in() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, server) = secure_node(dir.path(), "");
    server.sql("CREATE TABLE t (k BIGINT PRIMARY KEY)", json!([])).await;
    let alice = Server::attach(&server.url).with_client(https(&certs, Some("alice")));
    // A certificate for a user that does not exist: 28000.
    let (status, answer) = alice.try_sql("SELECT 1", json!([])).await;
    assert_eq!((status, code(&answer)), (401, "28000"), "{answer}");
    let refused = pg_connect(&pg_url(&server, "alice", None), pg_tls(&certs, Some("alice"))).await;
    assert_eq!(refused.err().as_deref(), Some("28000"));
    server.sql("CREATE USER alice", json!([])).await;
    let (status, answer) = alice.try_sql("SELECT 1", json!([])).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = alice.try_sql("SELECT k FROM t", json!([])).await;
    assert_eq!((status, code(&answer)), (403, "42501"), "{answer}");
    // Over PostgreSQL, the certificate logs in its own user only.
    let pg =
        pg_connect(&pg_url(&server, "alice", None), pg_tls(&certs, Some("alice"))).await.expect("alice by certificate");
    assert_eq!(first_value(&pg, "SELECT 1 + 1").await, "2");
    let other = pg_connect(&pg_url(&server, "root", Some("x")), pg_tls(&certs, Some("alice"))).await;
    assert_eq!(other.err().as_deref(), Some("28P01"), "alice's certificate logged root in");
    // root logs in with client.root.crt over PostgreSQL too.
    let root = pg_connect(&pg_url(&server, "root", None), pg_tls(&certs, Some("root"))).await.expect("root");
    root.simple_query("GRANT SELECT ON t TO alice").await.unwrap();
    let (status, answer) = alice.try_sql("SELECT k FROM t", json!([])).await;
    assert_eq!(status, 200, "{answer}");
    // A client certificate for another cluster sharing the CA logs nobody
    // in here (this node is cluster 1).
    let certs_dir = certs.to_str().unwrap();
    cert(&["create-client", "--certs-dir", certs_dir, "--user", "dave", "--cluster-id", "2"]);
    server.sql("CREATE USER dave", json!([])).await;
    let dave = Server::attach(&server.url).with_client(https(&certs, Some("dave")));
    let (status, answer) = dave.try_sql("SELECT 1", json!([])).await;
    assert_eq!((status, code(&answer)), (401, "28000"), "{answer}");
    let refused = pg_connect(&pg_url(&server, "dave", Some("x")), pg_tls(&certs, Some("dave"))).await;
    assert_eq!(refused.err().as_deref(), Some("28P01"), "a certificate of cluster 2 logged dave in");
    // A single node believes no forwarded identity, even from a
    // certificate of its own node id.
    let node_identity = {
        let mut pem = std::fs::read(certs.join("node.1.crt")).unwrap();
        pem.extend(std::fs::read(certs.join("node.1.key")).unwrap());
        reqwest::Identity::from_pem(&pem).unwrap()
    };
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.crt")).unwrap()).unwrap();
    let as_node = reqwest::Client::builder().add_root_certificate(ca).identity(node_identity).build().unwrap();
    let forged = as_node
        .post(format!("{}/v1/sql", server.url))
        .header("x-geodb-forwarded-by", "1")
        .header("x-geodb-user", "cm9vdA==")
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401, "{:?}", forged.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_counted_and_never_logged_with_their_password() {
    let dir = tempfile::tempdir().unwrap();
    // Three failures, then none back for an hour: no timing in the test.
    let (certs, server) =
        secure_node(dir.path(), "[auth]\nlogin_failures_burst = 3\nlogin_failure_refill_ms = 3600000\n");
    server.sql("CREATE USER alice PASSWORD 'correct-horse'", json!([])).await;
    let client = https(&certs, None);
    for _ in 0..3 {
        let (status, answer) = sql_as(&server, &client, As::Password("alice", "guess-secret"), "SELECT 1").await;
        assert_eq!((status, code(&answer)), (401, "28P01"), "{answer}");
    }
    // Beyond the burst even the right password is refused, unchecked.
    let (status, headers, answer) =
        post(&client, &server.url, "/v1/sql", As::Password("alice", "correct-horse"), json!({"sql": "SELECT 1"})).await;
    assert_eq!((status, code(&answer)), (429, "53300"), "{answer}");
    // Retry-After says when a failure comes back.
    assert_eq!(headers.get("retry-after").unwrap(), "3600");
    // So is PostgreSQL for alice from this address...
    let refused = pg_connect(&pg_url(&server, "alice", Some("correct-horse")), pg_tls(&certs, None)).await;
    assert_eq!(refused.err().as_deref(), Some("53300"));
    // ...but not another user from it (the address has a larger share), so
    // failing alice's logins does not lock everyone behind a proxy out.
    server.sql("CREATE USER bob PASSWORD 'b'", json!([])).await;
    let (status, answer) = sql_as(&server, &client, As::Password("bob", "b"), "SELECT 1").await;
    assert_eq!(status, 200, "{answer}");
    // A client certificate is no guess: root still gets in.
    server.sql("SELECT 1", json!([])).await;
    assert_eq!(metric(&server, "geodb_auth_failures_total", &["reason=\"password\""]).await, 3.0);
    assert!(metric(&server, "geodb_auth_failures_total", &["reason=\"rate_limited\""]).await >= 2.0);
    // Logged with the user and the reason, never the password.
    let logged = std::fs::read_to_string(dir.path().join("data.stderr")).unwrap();
    assert!(logged.contains("login failed") && logged.contains("alice"), "{logged}");
    assert!(!logged.contains("guess-secret") && !logged.contains("correct-horse"), "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geodb_start_is_secure_unless_told_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, format!("http = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n", data.display())).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_geodb")).args(["start", "--config"]).arg(&config).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started without certificates: {said}");
    assert!(said.contains("--certs-dir") && said.contains("--insecure"), "{said}");
    assert!(!data.exists(), "it touched its data before refusing");
    // --insecure and certificates contradict each other.
    let certs = dir.path().join("certs");
    make_certs(&certs, &[1], &[]);
    let both = Command::new(env!("CARGO_BIN_EXE_geodb"))
        .args(["start", "--insecure", "--config"])
        .arg(&config)
        .arg("--certs-dir")
        .arg(&certs)
        .output()
        .unwrap();
    assert!(!both.status.success() && String::from_utf8_lossy(&both.stderr).contains("contradict"));
    // --insecure starts, says so loudly, and /v1/cluster shows it.
    let mut command = Command::new(env!("CARGO_BIN_EXE_geodb"));
    command.args(["start", "--insecure", "--config"]).arg(&config);
    let server = Server::spawn(command, &data);
    let (status, view) = server.get("/v1/cluster").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(serde_json::from_str::<Value>(&view).unwrap()["insecure"], json!(true));
    let logged = std::fs::read_to_string(data.with_extension("stderr")).unwrap();
    assert!(logged.contains("INSECURE MODE"), "{logged}");
    // An insecure node checks no privilege: anyone is anyone.
    server.sql("CREATE TABLE t (k BIGINT PRIMARY KEY)", json!([])).await;
}

/// The loopback address of secure cluster node `id` (its own, so that the
/// ports picked free for it stay free; security.rs uses 127.0.2.x).
fn cluster_ip(id: u64) -> String {
    format!("127.0.3.{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_cluster_shares_users_and_forwards_sessions_as_their_user() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs, &[1, 2, 3], &["root"]);
    common::write_three_node_configs(dir.path(), cluster_ip);
    let mut servers = Vec::new();
    for id in 1..=3u64 {
        let path = dir.path().join(format!("n{id}.toml"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_geodb"));
        command.args(["start", "--config"]).arg(&path).arg("--certs-dir").arg(&certs);
        servers
            .push(Server::spawn(command, &dir.path().join(format!("n{id}"))).with_client(https(&certs, Some("root"))));
    }
    let (one, two) = (&servers[0], &servers[1]);
    one.sql("CREATE TABLE t (k BIGINT PRIMARY KEY, v TEXT)", json!([])).await;
    one.sql("INSERT INTO t VALUES (1, 'one')", json!([])).await;
    one.sql("CREATE USER alice PASSWORD 'pw'", json!([])).await;
    let client = https(&certs, None);
    let alice = As::Password("alice", "pw");
    // The user made through node 1 logs in at node 2 once node 2's replica
    // has it (a password login never asks the catalog's leader), where a
    // grant made through node 1 lets it read and a revoke shuts it out.
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, answer) = sql_as(two, &client, alice, "SELECT v FROM t WHERE k = 1").await;
        if status != 401 {
            assert_eq!((status, code(&answer)), (403, "42501"), "{answer}");
            break;
        }
        assert!(Instant::now() < deadline, "alice never reached node 2: {answer}");
        // Slowly: each 401 takes a failure from the rate limit.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    one.sql("GRANT SELECT ON t TO alice", json!([])).await;
    let (status, answer) = sql_as(two, &client, alice, "SELECT v FROM t WHERE k = 1").await;
    assert_eq!((status, answer["results"][0]["rows"].clone()), (200, json!([["one"]])), "{answer}");
    one.sql("REVOKE SELECT ON t FROM alice", json!([])).await;
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, answer) = sql_as(two, &client, alice, "SELECT v FROM t WHERE k = 1").await;
        if status == 403 {
            assert_eq!(code(&answer), "42501");
            break;
        }
        assert!(Instant::now() < deadline, "the revoke never reached node 2: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A session alice opens at node 1, used through node 2 (which forwards
    // it), runs as alice: her privileges, not the gateway's.
    let (status, _, opened) = post(&client, &one.url, "/v1/sessions", alice, json!({})).await;
    assert_eq!(status, 201, "{opened}");
    let path = format!("/v1/sessions/{}/sql", opened["session"].as_str().unwrap());
    let (status, headers, answer) = post(&client, &two.url, &path, alice, json!({"sql": "SELECT v FROM t"})).await;
    assert_eq!((status, code(&answer)), (403, "42501"), "{answer}");
    assert_eq!(headers.get("x-geodb-served-by").unwrap(), "1");
    // Root's session through node 2 reads.
    let (status, _, opened) = post(&https(&certs, Some("root")), &one.url, "/v1/sessions", As::Nobody, json!({})).await;
    assert_eq!(status, 201, "{opened}");
    let root_path = format!("/v1/sessions/{}/sql", opened["session"].as_str().unwrap());
    let root_client = https(&certs, Some("root"));
    let (status, _, answer) =
        post(&root_client, &two.url, &root_path, As::Nobody, json!({"sql": "SELECT v FROM t"})).await;
    assert_eq!(status, 200, "{answer}");
    // A quoted user name with a leading space is forwarded exactly.
    one.sql("CREATE USER \" bob\" PASSWORD 'pw'", json!([])).await;
    one.sql("GRANT SELECT ON t TO \" bob\"", json!([])).await;
    let bob = As::Password(" bob", "pw");
    let (status, _, opened) = post(&client, &one.url, "/v1/sessions", bob, json!({})).await;
    assert_eq!(status, 201, "{opened}");
    let bob_path = format!("/v1/sessions/{}/sql", opened["session"].as_str().unwrap());
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, headers, answer) =
            post(&client, &two.url, &bob_path, bob, json!({"sql": "SELECT v FROM t"})).await;
        if status == 200 {
            assert_eq!(headers.get("x-geodb-served-by").unwrap(), "1");
            assert_eq!(answer["rows"], json!([["one"]]), "{answer}");
            break;
        }
        // Node 2 may not have seen the user yet (slowly: each 401 takes a
        // failure from the rate limit).
        assert!(Instant::now() < deadline, "{status} {answer}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A client cannot claim to be a forwarding node naming another user:
    // without a node's certificate the headers are ignored.
    let forged = client
        .post(format!("{}{root_path}", one.url))
        .header("x-geodb-forwarded-by", "2")
        .header("x-geodb-user", "root")
        .basic_auth("alice", Some("pw"))
        .json(&json!({"sql": "SELECT v FROM t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403, "{:?}", forged.text().await);
    let forged = client
        .post(format!("{}/v1/sql", one.url))
        .header("x-geodb-forwarded-by", "2")
        .header("x-geodb-user", "root")
        .json(&json!({"sql": "DROP TABLE t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    assert_eq!(rows(one, "SELECT v FROM t").await, json!([["one"]]));
}

/// Logs in as `user` over TLS with a raw client, answers the node's
/// SCRAM request with a password message of body `body`, and returns the
/// SQLSTATE of the error the node answers.
async fn raw_password_message(server: &Server, certs: &Path, user: &str, body: &[u8]) -> String {
    raw_password_message_of_length(server, certs, user, body, (body.len() + 4) as i32).await
}

/// [`raw_password_message`] with `length` as the message's length field;
/// "closed" if the node closes the connection without an answer.
async fn raw_password_message_of_length(server: &Server, certs: &Path, user: &str, body: &[u8], length: i32) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = server.pg_url.clone().expect("a postgresql:// URL");
    let address = url.trim_start_matches("postgresql://").split(['/', '?']).next().unwrap().to_string();
    let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    tcp.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await.unwrap(); // SSLRequest
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(certs.join("ca.crt")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(address.rsplit_once(':').unwrap().0.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    let mut startup = 196_608i32.to_be_bytes().to_vec();
    startup.extend(format!("user\0{user}\0database\0geodb\0\0").as_bytes());
    let mut message = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend(startup);
    tls.write_all(&message).await.unwrap();
    // A message: type, length, body.
    async fn read(tls: &mut (impl AsyncReadExt + Unpin)) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        tls.read_exact(&mut head).await.unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(head[1..].try_into().unwrap()) as usize - 4];
        tls.read_exact(&mut body).await.unwrap();
        (head[0], body)
    }
    let (kind, asked) = read(&mut tls).await;
    assert_eq!((kind, &asked[..4]), (b'R', &10i32.to_be_bytes()[..]), "not asked for SASL: {asked:?}");
    let mut message = vec![b'p'];
    message.extend(length.to_be_bytes());
    message.extend(body);
    tls.write_all(&message).await.unwrap();
    let mut kind = [0u8; 1];
    if tls.read_exact(&mut kind).await.is_err() {
        return "closed".into();
    }
    let mut length = [0u8; 4];
    tls.read_exact(&mut length).await.unwrap();
    let mut error = vec![0u8; i32::from_be_bytes(length) as usize - 4];
    tls.read_exact(&mut error).await.unwrap();
    let kind = kind[0];
    assert_eq!(kind, b'E', "{error:?}");
    // Fields: a type byte, then a NUL-terminated value; 'C' is the code.
    let fields: Vec<&[u8]> = error.split(|byte| *byte == 0).collect();
    let code = fields.iter().find(|field| field.first() == Some(&b'C')).expect("a code");
    String::from_utf8(code[1..].to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_scram_message_is_a_protocol_violation_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, server) = secure_node(dir.path(), "");
    server.sql("CREATE USER alice PASSWORD 'pw'", json!([])).await;
    let mut length_past_the_end = b"SCRAM-SHA-256\0".to_vec();
    length_past_the_end.extend(1000i32.to_be_bytes());
    length_past_the_end.extend(b"n,,n=,r=abc");
    for body in [&b"SCRAM-SHA-256\0"[..], &b"SCRAM-SHA-256\0\0\0"[..], &length_past_the_end, &b"no terminator"[..]] {
        assert_eq!(raw_password_message(&server, &certs, "alice", body).await, "08P01", "{body:?}");
    }
    assert_eq!(metric(&server, "geodb_auth_failures_total", &["listener=\"pg\"", "reason=\"malformed\""]).await, 4.0);
    // A length field below 4 makes pgwire's framing (before GeoDB sees the
    // message) panic: that connection ends, and only it (docs/security.md,
    // known limits).
    let answer = raw_password_message_of_length(&server, &certs, "alice", b"SCRAM-SHA-256\0\0\0\0\0", 0).await;
    assert_eq!(answer, "closed");
    // The node serves on, alice included.
    let pg = pg_connect(&pg_url(&server, "alice", Some("pw")), pg_tls(&certs, None)).await.expect("alice");
    assert_eq!(first_value(&pg, "SELECT 1 + 1").await, "2");
}
