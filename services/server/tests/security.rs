//! TLS against real `geodb` processes (`docs/security.md`): certificates
//! made by `geodb cert`; a single node over HTTPS and PostgreSQL over TLS
//! that refuses plaintext and reloads its certificate on SIGHUP; a
//! three-node cluster over mutual TLS that commits, and refuses a node
//! whose certificate another CA signed and a peer whose certificate is for
//! another node than it claims, before any of their messages is acted on.
//!
//! Every wait polls with a bound; nothing passes by sleeping long enough.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a refused connection may take to be closed, and a count or a
/// certificate to change: far beyond what any of them takes, for a loaded
/// two-core machine.
const BOUND: Duration = Duration::from_secs(30);

/// Runs `geodb cert <args>`; its success and what it said.
fn cert(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_geodb")).arg("cert").args(args).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// A CA and certificates for nodes `nodes` (cluster 1, reached at
/// 127.0.0.1 and at the [`TlsCluster`] address [`cluster_ip`]) and for the
/// user `root` (`client.root.crt`, which the clients here present) in `dir`.
fn make_certs(dir: &Path, nodes: &[u64]) {
    let dir = dir.to_str().unwrap();
    let (ok, said) = cert(&["create-ca", "--certs-dir", dir]);
    assert!(ok, "{said}");
    let (ok, said) = cert(&["create-client", "--certs-dir", dir, "--user", "root"]);
    assert!(ok, "{said}");
    for node in nodes {
        let (ok, said) = create_node(dir, *node, &[]);
        assert!(ok, "{said}");
    }
}

/// `geodb cert create-node` for `node` in `dir`, with `extra` arguments.
fn create_node(dir: &str, node: u64, extra: &[&str]) -> (bool, String) {
    let (id, ip) = (node.to_string(), cluster_ip(node));
    let mut args = vec!["create-node", "--certs-dir", dir, "--node-id", &id, "--host", "127.0.0.1", "--host", &ip];
    args.extend_from_slice(extra);
    cert(&args)
}

fn roots(ca: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A TLS client that trusts the CA of `certs`.
fn trusting(certs: &Path) -> ClientConfig {
    ClientConfig::builder().with_root_certificates(roots(&certs.join("ca.crt"))).with_no_client_auth()
}

/// A node with PostgreSQL on and certificates for node 1 made in
/// `dir/certs` (returned), with `extra` config; talked to with a client
/// that trusts their CA.
fn secure_node(dir: &Path, extra: &str) -> (PathBuf, Server) {
    let certs = dir.join("certs");
    make_certs(&certs, &[1]);
    let config = format!("pg = \"127.0.0.1:0\"\ncerts_dir = \"{}\"\n{extra}", certs.display());
    let server = Server::start(&dir.join("data"), &config).with_client(https_client(&certs));
    (certs, server)
}

/// `<name>.crt` and `<name>.key` of `dir`.
fn pair(dir: &Path, name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_file_iter(dir.join(format!("{name}.crt"))).unwrap().map(Result::unwrap).collect();
    (chain, PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap())
}

/// A TLS client that trusts the CA of `trusted` and presents `name`'s
/// pair of `presented`, as a dialing node does.
fn presenting(trusted: &Path, presented: &Path, name: &str) -> ClientConfig {
    let (chain, key) = pair(presented, name);
    ClientConfig::builder()
        .with_root_certificates(roots(&trusted.join("ca.crt")))
        .with_client_auth_cert(chain, key)
        .unwrap()
}

/// An HTTPS client that trusts the CA of `certs` and nothing else, and
/// logs in as `root` with its client certificate there.
fn https_client(certs: &Path) -> reqwest::Client {
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    let mut root = std::fs::read(certs.join("client.root.crt")).unwrap();
    root.extend(std::fs::read(certs.join("client.root.key")).unwrap());
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(&root).unwrap())
        .timeout(BOUND)
        .build()
        .unwrap()
}

/// A PostgreSQL TLS client that trusts the CA of `certs` and presents
/// `client.root.crt` (connect as user `root`).
fn pg_root(certs: &Path) -> tokio_postgres_rustls::MakeRustlsConnect {
    tokio_postgres_rustls::MakeRustlsConnect::new(presenting(certs, certs, "client.root"))
}

/// The first certificate of a PEM file.
fn first_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path).unwrap().next().unwrap().unwrap()
}

/// The certificate a TLS server at `address` presents now.
async fn presented(address: SocketAddr, certs: &Path) -> CertificateDer<'static> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(trusting(certs)));
    let tcp = TcpStream::connect(address).await.unwrap();
    let tls = connector.connect(ServerName::from(address.ip()), tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// The sum of the samples of `family` whose labels include all of `labels`
/// (as `name="value"`), on `/metrics`.
async fn metric(server: &Server, family: &str, labels: &[&str]) -> f64 {
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|line| line.starts_with(&format!("{family}{{")) || line.starts_with(&format!("{family} ")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `family` with `labels` reaches `at_least` on `server`.
async fn wait_metric(server: &Server, family: &str, labels: &[&str], at_least: f64) {
    let deadline = Instant::now() + BOUND;
    loop {
        let value = metric(server, family, labels).await;
        if value >= at_least {
            return;
        }
        assert!(Instant::now() < deadline, "{family}{labels:?} is {value}, never reached {at_least}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn address(url: &str) -> SocketAddr {
    url.split("://").nth(1).unwrap().trim_end_matches(['/', ',']).split('/').next().unwrap().parse().unwrap()
}

#[test]
fn cert_commands_write_pem_files_with_private_keys_and_never_overwrite_unasked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs = certs.to_str().unwrap();
    let (ok, said) = cert(&["create-ca", "--certs-dir", certs]);
    assert!(ok && said.contains("ca.crt") && said.contains("ca.key"), "{said}");
    let (ok, said) = cert(&["create-node", "--certs-dir", certs, "--node-id", "7", "--host", "db.example.com"]);
    assert!(ok, "{said}");
    let (ok, said) = cert(&["create-client", "--certs-dir", certs, "--user", "alice"]);
    assert!(ok, "{said}");
    let path = |name: &str| Path::new(certs).join(name);
    for name in ["ca.crt", "node.7.crt", "client.alice.crt"] {
        let text = std::fs::read_to_string(path(name)).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{name}: {text}");
    }
    for name in ["ca.key", "node.7.key", "client.alice.key"] {
        let mode = std::fs::metadata(path(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        PrivateKeyDer::from_pem_file(path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Nothing is written over unless asked: a CA key lost is a cluster's
    // every certificate to make again.
    let ca_key = std::fs::read(path("ca.key")).unwrap();
    let (ok, said) = cert(&["create-ca", "--certs-dir", certs]);
    assert!(!ok && said.contains("--overwrite"), "{said}");
    assert_eq!(std::fs::read(path("ca.key")).unwrap(), ca_key);
    let (ok, said) = cert(&["create-node", "--certs-dir", certs, "--node-id", "7"]);
    assert!(!ok && said.contains("node.7"), "{said}");
    let (ok, said) = cert(&["create-node", "--certs-dir", certs, "--node-id", "7", "--overwrite"]);
    assert!(ok, "{said}");
    // A user name becomes a file name: no path in it.
    let (ok, said) = cert(&["create-client", "--certs-dir", certs, "--user", "../root"]);
    assert!(!ok, "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_node_serves_https_and_postgres_over_tls_refuses_plaintext_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, server) = secure_node(dir.path(), "");
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let http = address(&server.url);

    // HTTPS, with the CA.
    server.sql("CREATE TABLE t (k BIGINT PRIMARY KEY, v BIGINT)", json!([])).await;
    server.sql("INSERT INTO t VALUES (1, 10)", json!([])).await;
    // Plaintext HTTP is refused, and so is a client that trusts another CA
    // (and would take a certificate of that one).
    let plaintext = reqwest::Client::new().get(format!("http://{http}/readyz")).timeout(BOUND).send().await;
    assert!(plaintext.is_err(), "plaintext HTTP to a secure node answered: {plaintext:?}");
    let other_ca = dir.path().join("other");
    make_certs(&other_ca, &[]);
    let untrusting = https_client(&other_ca);
    let answer = untrusting.get(format!("https://{http}/readyz")).send().await;
    assert!(answer.is_err(), "a client without the CA accepted the node's certificate: {answer:?}");
    wait_metric(&server, "geodb_tls_connections_refused_total", &["listener=\"http\"", "reason=\"handshake\""], 2.0)
        .await;

    // PostgreSQL over TLS (SSLRequest), with the CA; plaintext refused with 28000.
    let pg = server.pg_url.clone().expect("a postgresql:// URL");
    let tls = pg_root(&certs);
    let (client, connection) =
        tokio_postgres::connect(&format!("{pg}?user=root&sslmode=require"), tls).await.expect("TLS pgwire");
    tokio::spawn(connection);
    let rows = client.query("SELECT v FROM t WHERE k = 1", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 10);
    let refused = tokio_postgres::connect(&format!("{pg}?user=whoever&sslmode=disable"), tokio_postgres::NoTls).await;
    let error = refused.err().expect("plaintext pgwire to a secure node connected");
    assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION), "{error}");
    wait_metric(&server, "geodb_tls_connections_refused_total", &["listener=\"pg\"", "reason=\"plaintext\""], 1.0)
        .await;

    // A new certificate, then SIGHUP: new connections get it, without a
    // restart; the open PostgreSQL connection goes on.
    let before = presented(http, &certs).await;
    assert_eq!(before, first_cert(&certs.join("node.1.crt")));
    let (ok, said) = cert(&[
        "create-node",
        "--certs-dir",
        certs.to_str().unwrap(),
        "--node-id",
        "1",
        "--host",
        "127.0.0.1",
        "--overwrite",
    ]);
    assert!(ok, "{said}");
    let rotated = first_cert(&certs.join("node.1.crt"));
    assert_ne!(rotated, before);
    server.hangup();
    let deadline = Instant::now() + BOUND;
    while presented(http, &certs).await != rotated {
        assert!(Instant::now() < deadline, "the node still presents its old certificate after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&server, "geodb_tls_reloads_total", &["outcome=\"ok\""]).await, 1.0);
    server.sql("INSERT INTO t VALUES (2, 20)", json!([])).await;
    let rows = client.query("SELECT count(*) FROM t", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 2);
}

/// A PostgreSQL `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A startup message for user `whoever`, then a simple query `sql`: what a
/// man in the middle appends, in plaintext, behind a client's `SSLRequest`.
fn startup_and_query(sql: &str) -> Vec<u8> {
    let mut startup = 196608u32.to_be_bytes().to_vec();
    startup.extend(b"user\0whoever\0database\0geodb\0\0");
    let mut bytes = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    bytes.extend(startup);
    bytes.push(b'Q');
    bytes.extend(((sql.len() + 5) as u32).to_be_bytes());
    bytes.extend(sql.as_bytes());
    bytes.push(0);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plaintext_sent_behind_an_ssl_request_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, server) = secure_node(dir.path(), "");
    server.sql("CREATE TABLE t (k BIGINT PRIMARY KEY, v BIGINT)", json!([])).await;
    let pg = address(&server.pg_url.clone().expect("a postgresql:// URL"));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(trusting(&certs)));

    // PostgreSQL's CVE-2021-23214: one write of SSLRequest, startup and an
    // INSERT. Whatever follows the SSLRequest goes to the TLS handshake,
    // which fails on it; nothing of it runs.
    let mut tcp = TcpStream::connect(pg).await.unwrap();
    let mut injected = SSL_REQUEST.to_vec();
    injected.extend(startup_and_query("INSERT INTO t VALUES (1, 1)"));
    tcp.write_all(&injected).await.unwrap();
    let mut answer = [0u8; 1];
    if tcp.read(&mut answer).await.unwrap() == 1 {
        assert_eq!(&answer, b"S");
        let handshake = connector.connect(ServerName::from(pg.ip()), tcp).await;
        assert!(handshake.is_err(), "a TLS handshake after injected plaintext succeeded");
    }
    wait_metric(&server, "geodb_tls_connections_refused_total", &["listener=\"pg\"", "reason=\"handshake\""], 1.0)
        .await;
    let rows = server.sql("SELECT count(*) FROM t", json!([])).await;
    assert_eq!(rows["rows"], json!([[0]]), "the injected INSERT ran: {rows}");

    // A client that asks for GSSAPI encryption first is told 'N', and may
    // then ask for TLS.
    let mut tcp = TcpStream::connect(pg).await.unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await.unwrap();
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    connector.connect(ServerName::from(pg.ip()), tcp).await.expect("TLS after a refused GSSENCRequest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_reach_a_secure_node_in_plaintext_and_over_tls() {
    // One request at a time: an HTTP request is shed (503) exactly while a
    // PostgreSQL statement runs.
    let dir = tempfile::tempdir().unwrap();
    let (certs, server) = secure_node(dir.path(), "[limits]\nrequests_inflight_max = 1\n");
    let pg = server.pg_url.clone().expect("a postgresql:// URL");
    let tls = pg_root(&certs);
    let (client, connection) =
        tokio_postgres::connect(&format!("{pg}?user=root&sslmode=prefer"), tls.clone()).await.expect("TLS pgwire");
    tokio::spawn(connection);
    // (sslmode=prefer: the session is over TLS, and the token may send its
    // cancel request without TLS, as some clients do.)
    let values: Vec<String> = (0..100).map(|n| format!("({n})")).collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE numbers (n INT PRIMARY KEY); INSERT INTO numbers VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    // 10^10 rows: it never ends on its own before it is cancelled.
    let endless = "SELECT count(*) FROM numbers a CROSS JOIN numbers b CROSS JOIN numbers c \
                   CROSS JOIN numbers d CROSS JOIN numbers e";
    for over_tls in [false, true] {
        let token = client.cancel_token();
        let watcher = Server::attach(&server.url).with_client(https_client(&certs));
        let tls = tls.clone();
        let canceller = tokio::spawn(async move {
            let running = || async { watcher.try_sql("SELECT 1", json!([])).await.0 == 503 };
            while !running().await {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            while running().await {
                let sent = if over_tls {
                    token.cancel_query(tls.clone()).await
                } else {
                    token.cancel_query(tokio_postgres::NoTls).await
                };
                sent.expect("send a cancel request");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let error = client.simple_query(endless).await.expect_err("the statement was not cancelled");
        canceller.await.unwrap();
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
            "over TLS: {over_tls}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_node_survives_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), "");
    server.sql("CREATE TABLE t (k BIGINT PRIMARY KEY)", json!([])).await;
    // The handler is installed before the node announces itself, so this
    // SIGHUP cannot come first; a node without one would end here.
    server.hangup();
    server.hangup();
    server.sql("INSERT INTO t VALUES (1)", json!([])).await;
    let rows = server.sql("SELECT count(*) FROM t", json!([])).await;
    assert_eq!(rows["rows"], json!([[1]]), "{rows}");
}

/// Three nodes in three zones of us-east (zone survival: all three vote in
/// every shard), TLS with the certificates each node is given.
struct TlsCluster {
    dir: PathBuf,
    servers: Vec<Option<Server>>,
    peers: Vec<SocketAddr>,
}

/// The loopback address [`TlsCluster`] node `id` listens on. Its ports
/// are picked free before the node starts, so they must not be ones that
/// this binary's other tests (whose servers bind 127.0.0.1) can take
/// meanwhile: on an address of its own nothing else binds.
fn cluster_ip(id: u64) -> String {
    format!("127.0.2.{id}")
}

impl TlsCluster {
    /// Writes the three configs; starts nothing.
    fn configure(dir: &Path) -> TlsCluster {
        let peers = common::write_three_node_configs(dir, cluster_ip)
            .into_iter()
            .map(|(_, peer)| peer.parse().unwrap())
            .collect();
        TlsCluster { dir: dir.to_path_buf(), servers: vec![None, None, None], peers }
    }

    /// Starts node `id` with the certificates in `certs` (`--certs-dir`),
    /// talking to it with a client that trusts their CA.
    fn start(&mut self, id: u64, certs: &Path) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_geodb"));
        command.args(["start", "--config"]).arg(self.dir.join(format!("n{id}.toml"))).arg("--certs-dir").arg(certs);
        let server = Server::spawn(command, &self.dir.join(format!("n{id}"))).with_client(https_client(certs));
        assert!(server.url.starts_with("https://"), "{}", server.url);
        self.servers[id as usize - 1] = Some(server);
    }

    fn node(&self, id: u64) -> &Server {
        self.servers[id as usize - 1].as_ref().expect("node is running")
    }

    fn kill(&mut self, id: u64) {
        self.servers[id as usize - 1].take().expect("node is running").kill();
    }

    /// Node `id`'s `/v1/cluster`.
    async fn view(&self, id: u64) -> Value {
        let (status, body) = self.node(id).get("/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Whether node `id` sees node `other` alive (its connection up).
    async fn sees_alive(&self, id: u64, other: u64) -> bool {
        let view = self.view(id).await;
        view["nodes"].as_array().unwrap().iter().any(|node| node["id"] == json!(other) && node["alive"] == json!(true))
    }
}

/// The transport's hello, as a dialing node sends it: `u32` length, the
/// version tag, then postcard's `Frame::Hello { from, cluster }` (variant 0,
/// then two varints).
fn hello(from: u64, cluster: u64) -> Vec<u8> {
    let mut body = vec![geodb_server::transport::PROTOCOL_VERSION, 0];
    for mut value in [from, cluster] {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                body.push(byte);
                break;
            }
            body.push(byte | 0x80);
        }
    }
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// Reads `stream` until the other end closes it; how many bytes came
/// before, or `None` if it was not closed within the bound.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<usize> {
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut buffer = [0u8; 256];
    let mut read = 0;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(read),
            Ok(Ok(bytes)) => read += bytes,
            Err(_) => return None,
        }
    }
}

/// Dials the peer port at `address` as a node would: TLS trusting the CA
/// of `trusted`, presenting `<name>.crt` and `.key` of `presented`, then
/// `hello`. How many bytes came back before the close (`None`: not closed
/// within the bound), or `Some(0)` if the handshake itself failed.
async fn dial_peer(address: SocketAddr, trusted: &Path, presented: &Path, name: &str, hello: Vec<u8>) -> Option<usize> {
    let config = presenting(trusted, presented, name);
    let tcp = TcpStream::connect(address).await.unwrap();
    let server = ServerName::try_from("node-1.cluster-1.geodb.internal").unwrap();
    // TLS 1.3: the client's handshake may end before the server has
    // checked its certificate; the refusal then comes as a close.
    let Ok(mut stream) = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server, tcp).await else {
        return Some(0);
    };
    if stream.write_all(&hello).await.is_err() || stream.flush().await.is_err() {
        return Some(0);
    }
    read_until_closed(&mut stream).await
}

/// The certificate node `id` presents on its peer port at `address` now,
/// to a dialer with a certificate of `certs` for another node.
async fn presented_on_peer_port(address: SocketAddr, id: u64, certs: &Path) -> CertificateDer<'static> {
    let dialer = if id == 1 { 2 } else { 1 };
    let config = presenting(certs, certs, &format!("node.{dialer}"));
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from(format!("node-{id}.cluster-1.geodb.internal")).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Listens at `address` (node 3's peer port, while node 3 is down) as node
/// 3 of `certs`, and reads the cluster identity of the first hello a node
/// dials it with.
async fn learn_cluster_identity(address: SocketAddr, certs: &Path) -> u64 {
    let (chain, key) = pair(certs, "node.3");
    let verifier =
        rustls::server::WebPkiClientVerifier::builder(Arc::new(roots(&certs.join("ca.crt")))).build().unwrap();
    let config =
        rustls::ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let read = async {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut stream) = acceptor.accept(tcp).await else { continue };
            let mut length = [0u8; 4];
            if stream.read_exact(&mut length).await.is_err() {
                continue;
            }
            let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
            if stream.read_exact(&mut body).await.is_err() {
                continue;
            }
            // The version tag, the variant tag (0: hello), then `from` and
            // `cluster` as varints.
            assert_eq!(body[..2], [geodb_server::transport::PROTOCOL_VERSION, 0]);
            let mut values = Vec::new();
            let (mut value, mut shift) = (0u64, 0);
            for byte in &body[2..] {
                value |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    values.push(value);
                    (value, shift) = (0, 0);
                }
            }
            return values[1];
        }
    };
    tokio::time::timeout(BOUND, read).await.expect("no node dialed node 3's peer port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_commits_and_refuses_nodes_without_a_valid_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs, &[1, 2, 3]);
    // Another CA, which signed a certificate for node 3 of cluster 1 too.
    let rogue = dir.path().join("rogue");
    make_certs(&rogue, &[3]);
    let mut cluster = TlsCluster::configure(dir.path());
    cluster.start(1, &certs);
    cluster.start(2, &certs);
    cluster.start(3, &rogue);

    // Nodes 1 and 2 are a quorum of every shard: they commit, forwarding
    // to the leader over HTTPS whichever of them it is.
    cluster.node(1).sql("CREATE TABLE kv (k INT PRIMARY KEY, v INT)", json!([])).await;
    for k in 0..10 {
        cluster.node(1 + k % 2).sql("INSERT INTO kv VALUES ($1, $2)", json!([k, k * 10])).await;
    }
    let rows = cluster.node(2).sql("SELECT count(*) FROM kv", json!([])).await;
    assert_eq!(rows["rows"], json!([[10]]), "{rows}");

    // Node 3's certificate is signed by another CA: nodes 1 and 2 refuse
    // its connections and it refuses theirs, at the handshake, so that not
    // one of its messages (it stands for election again and again, alone)
    // reaches them. It knows no leader and commits nothing; they never see it.
    let handshake = ["listener=\"peer\"", "reason=\"handshake\""];
    for id in [1, 2] {
        wait_metric(cluster.node(id), "geodb_tls_connections_refused_total", &handshake, 2.0).await;
        assert!(!cluster.sees_alive(id, 3).await, "node {id} connected to node 3");
    }
    let alone = cluster.node(3).try_sql("SELECT count(*) FROM kv", json!([])).await;
    assert_ne!(alone.0, 200, "node 3 served a read: {alone:?}");
    let view = cluster.view(3).await;
    let led = view["shards"].as_array().unwrap().iter().filter(|shard| !shard["leader"].is_null()).count();
    assert_eq!(led, 0, "node 3 learned of a leader: {view}");
    let view = cluster.view(1).await;
    for shard in view["shards"].as_array().unwrap() {
        assert!([json!(1), json!(2)].contains(&shard["leader"]), "node 3 took part in an election: {view}");
    }

    // A node given another node's certificate does not start: it says
    // which file is wrong, before it opens its data.
    cluster.kill(3);
    // Node 3's peer port is free: listen there as node 3 (its certificate)
    // and read the hello node 1 or 2 dials it with, to learn the cluster
    // identity a hello must carry to pass every check but the certificate's.
    let identity_value = learn_cluster_identity(cluster.peers[2], &certs).await;

    // Plaintext to the peer port, with a hello that is right in all but
    // TLS: refused at the handshake.
    let handshake_refused = metric(cluster.node(1), "geodb_tls_connections_refused_total", &handshake).await;
    let mut plaintext = TcpStream::connect(cluster.peers[0]).await.unwrap();
    plaintext.write_all(&hello(2, identity_value)).await.unwrap();
    // (A TLS alert may come before the close.)
    assert!(read_until_closed(&mut plaintext).await.is_some(), "node 1 kept a plaintext peer connection open");
    wait_metric(cluster.node(1), "geodb_tls_connections_refused_total", &handshake, handshake_refused + 1.0).await;

    // A certificate from the right CA, but for node 3, from a peer whose
    // hello says it is node 2 (of the right cluster): closed after the
    // hello, before any batch.
    let identity = ["listener=\"peer\"", "reason=\"identity\""];
    let identity_refused = metric(cluster.node(1), "geodb_tls_connections_refused_total", &identity).await;
    let answered = dial_peer(cluster.peers[0], &certs, &certs, "node.3", hello(2, identity_value)).await;
    assert_eq!(answered, Some(0), "node 1 kept a connection whose certificate is not its hello's node's");
    wait_metric(cluster.node(1), "geodb_tls_connections_refused_total", &identity, identity_refused + 1.0).await;

    // A client certificate of the cluster's CA, and a node certificate of
    // another CA: node 1 refuses both at the handshake, as the acceptor,
    // before reading a byte of their hello.
    let (ok, said) = cert(&["create-client", "--certs-dir", certs.to_str().unwrap(), "--user", "alice"]);
    assert!(ok, "{said}");
    let handshake_refused = metric(cluster.node(1), "geodb_tls_connections_refused_total", &handshake).await;
    let answered = dial_peer(cluster.peers[0], &certs, &certs, "client.alice", hello(2, identity_value)).await;
    assert!(answered.is_some(), "node 1 kept a peer connection with a client certificate");
    wait_metric(cluster.node(1), "geodb_tls_connections_refused_total", &handshake, handshake_refused + 1.0).await;
    let answered = dial_peer(cluster.peers[0], &certs, &rogue, "node.3", hello(3, identity_value)).await;
    assert!(answered.is_some(), "node 1 kept a peer connection with another CA's certificate");
    wait_metric(cluster.node(1), "geodb_tls_connections_refused_total", &handshake, handshake_refused + 2.0).await;
    assert_eq!(
        metric(cluster.node(1), "geodb_tls_connections_refused_total", &identity).await,
        identity_refused + 1.0,
        "a certificate that is no peer's got past the handshake"
    );

    let swapped = dir.path().join("swapped");
    std::fs::create_dir(&swapped).unwrap();
    std::fs::copy(certs.join("ca.crt"), swapped.join("ca.crt")).unwrap();
    std::fs::copy(certs.join("node.2.crt"), swapped.join("node.3.crt")).unwrap();
    std::fs::copy(certs.join("node.2.key"), swapped.join("node.3.key")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_geodb"))
        .args(["start", "--config"])
        .arg(dir.path().join("n3.toml"))
        .arg("--certs-dir")
        .arg(&swapped)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && said.contains("node.3.crt") && said.contains("node 3 of cluster 1"), "{said}");

    // With its real certificate node 3 joins, and catches up.
    cluster.start(3, &certs);
    let deadline = Instant::now() + BOUND;
    while !(cluster.sees_alive(1, 3).await && cluster.sees_alive(3, 1).await) {
        assert!(Instant::now() < deadline, "node 3 never joined with a valid certificate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.node(3).sql("INSERT INTO kv VALUES (10, 100)", json!([])).await;
    let rows = cluster.node(3).sql("SELECT count(*) FROM kv", json!([])).await;
    assert_eq!(rows["rows"], json!([[11]]), "{rows}");

    // Every node's certificate rotated while a client writes through node
    // 1: every write acknowledged is there, and every node presents its
    // new certificate, on its HTTP port and on its peer port.
    let peer_before: Vec<_> = {
        let mut presented = Vec::new();
        for id in 1..=3u64 {
            presented.push(presented_on_peer_port(cluster.peers[id as usize - 1], id, &certs).await);
        }
        presented
    };
    let writer = {
        let node = Server::attach(&cluster.node(1).url).with_client(https_client(&certs));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 100.. {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) && acked.len() >= 10 {
                    break;
                }
                let (status, _) = node.try_sql("INSERT INTO kv VALUES ($1, 0)", json!([k])).await;
                if status == 200 {
                    acked.push(k);
                }
            }
            acked
        });
        (stop, task)
    };
    for id in 1..=3u64 {
        let (ok, said) = create_node(certs.to_str().unwrap(), id, &["--overwrite"]);
        assert!(ok, "{said}");
        cluster.node(id).hangup();
    }
    for id in 1..=3u64 {
        wait_metric(cluster.node(id), "geodb_tls_reloads_total", &["outcome=\"ok\""], 1.0).await;
        let http = address(&cluster.node(id).url);
        let rotated = first_cert(&certs.join(format!("node.{id}.crt")));
        assert_eq!(presented(http, &certs).await, rotated);
        let peer = cluster.peers[id as usize - 1];
        assert_ne!(peer_before[id as usize - 1], rotated);
        assert_eq!(presented_on_peer_port(peer, id, &certs).await, rotated, "node {id}'s peer port after the reload");
    }
    writer.0.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writer.1.await.unwrap();
    let rows = cluster.node(2).sql("SELECT k FROM kv WHERE k >= 100", json!([])).await;
    let present: std::collections::BTreeSet<i64> =
        rows["rows"].as_array().unwrap().iter().map(|row| row[0].as_i64().unwrap()).collect();
    for k in &acked {
        assert!(present.contains(k), "write {k} was acknowledged and is missing");
    }

    // After the rotation (the peer ports' certificates are checked above),
    // node 3, started again, reaches nodes 1 and 2 (and they it) and reads
    // what they wrote.
    cluster.kill(3);
    cluster.start(3, &certs);
    let deadline = Instant::now() + BOUND;
    while !(cluster.sees_alive(1, 3).await && cluster.sees_alive(3, 2).await) {
        assert!(Instant::now() < deadline, "node 3 never joined again after the rotation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = cluster.node(3).sql("SELECT count(*) FROM kv WHERE k >= 100", json!([])).await;
    assert_eq!(rows["rows"], json!([[present.len()]]), "{rows}");
}
