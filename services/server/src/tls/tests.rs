use super::*;

/// A CA in a temporary directory, with node certificates for `nodes` of
/// cluster 1.
fn cluster_certs(nodes: &[u64]) -> (tempfile::TempDir, CertsDir) {
    let dir = tempfile::tempdir().unwrap();
    let certs = CertsDir::new(dir.path());
    create_ca(&certs, false).unwrap();
    for node in nodes {
        create_node(&certs, *node, 1, &["127.0.0.1".to_string(), "localhost".to_string()], false).unwrap();
    }
    (dir, certs)
}

fn first_cert(path: &Path) -> CertificateDer<'static> {
    read_certs(path).unwrap().remove(0)
}

#[tokio::test]
async fn a_node_certificate_names_its_node_and_cluster() {
    let (_dir, certs) = cluster_certs(&[1, 2]);
    let tls = Tls::open(certs.path(), 1, 1, &[2, 3]).unwrap();
    let two = first_cert(&certs.node_cert(2));
    assert!(tls.check_peer(Some(&two), 2).is_ok());
    let error = tls.check_peer(Some(&two), 3).unwrap_err();
    assert!(error.contains("not for node 3 of cluster 1"), "{error}");
    assert!(tls.check_peer(None, 2).is_err());
    // Node 1's certificate is for cluster 1: as a node of cluster 2, or as
    // node 2, it does not start.
    let error = Tls::open(certs.path(), 1, 2, &[2, 3]).unwrap_err();
    assert!(error.contains("node 1 of cluster 2"), "{error}");
    assert!(Tls::open(certs.path(), 3, 1, &[1, 2]).unwrap_err().contains("node.3.crt"));
}

#[tokio::test]
async fn a_node_certificate_of_another_ca_is_refused_at_start() {
    let (_dir, certs) = cluster_certs(&[]);
    let (_other_dir, other) = cluster_certs(&[1]);
    std::fs::copy(other.node_cert(1), certs.node_cert(1)).unwrap();
    std::fs::copy(other.node_key(1), certs.node_key(1)).unwrap();
    let error = Tls::open(certs.path(), 1, 1, &[2, 3]).unwrap_err();
    assert!(error.contains("must be signed by"), "{error}");
}

#[tokio::test]
async fn a_reload_takes_new_certificates_and_a_failed_one_keeps_the_old() {
    let (_dir, certs) = cluster_certs(&[1]);
    let tls = Tls::open(certs.path(), 1, 1, &[2, 3]).unwrap();
    let served = || tls.current.get().key.cert[0].clone();
    let first = served();
    std::fs::remove_file(certs.node_key(1)).unwrap();
    assert!(tls.reload().unwrap_err().contains("node.1.key"));
    assert_eq!(served(), first, "a failed reload keeps the certificate in use");
    assert!(create_node(&certs, 1, 1, &[], false).is_err(), "the certificate exists");
    create_node(&certs, 1, 1, &[], true).unwrap();
    tls.reload().unwrap();
    assert_ne!(served(), first);
    assert_eq!(served(), first_cert(&certs.node_cert(1)));
}

#[test]
fn a_ca_is_never_written_over_unasked() {
    let (_dir, certs) = cluster_certs(&[]);
    let key = std::fs::read(certs.ca_key()).unwrap();
    assert!(create_ca(&certs, false).unwrap_err().contains("--overwrite"));
    assert_eq!(std::fs::read(certs.ca_key()).unwrap(), key);
    create_ca(&certs, true).unwrap();
    assert_ne!(std::fs::read(certs.ca_key()).unwrap(), key);
}

#[test]
fn a_node_certificate_names_no_wildcard_and_no_other_identity() {
    let (_dir, certs) = cluster_certs(&[]);
    for host in
        ["*", "*.example.com", "node-2.cluster-1.geodb.internal", "NODE-2.Cluster-1.GeoDB.Internal.", "geodb.internal"]
    {
        let error = create_node(&certs, 1, 1, &[host.to_string()], false).unwrap_err();
        assert!(error.contains(host), "{host}: {error}");
        assert!(!certs.node_cert(1).exists(), "{host}: a certificate was written");
    }
    create_node(&certs, 1, 1, &["db.example.com".to_string(), "10.0.0.1".to_string()], false).unwrap();
}

#[tokio::test]
async fn the_peer_port_speaks_tls_1_3_only() {
    let (_dir, certs) = cluster_certs(&[1, 2]);
    let one = Tls::open(certs.path(), 1, 1, &[2]).unwrap();
    let two = Tls::open(certs.path(), 2, 1, &[1]).unwrap();
    let handshake = |client: ClientConfig| {
        let acceptor = one.peer_acceptor();
        async move {
            let (client_end, server_end) = tokio::io::duplex(64 << 10);
            let name = ServerName::try_from(node_name(1, 1)).unwrap();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
            let (client, server) = tokio::join!(connector.connect(name, client_end), acceptor.accept(server_end));
            client.is_ok() && server.is_ok()
        }
    };
    assert!(handshake(two.client_config()).await, "node 2 dialing node 1");
    let versions: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let tls12 = ClientConfig::builder_with_provider(two.provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(two.current.clone())
        .with_client_cert_resolver(two.current.clone());
    assert!(!handshake(tls12).await, "a TLS 1.2 dialer was taken");
}

#[test]
fn a_client_certificate_names_its_user_in_its_cluster_only() {
    let (_dir, certs) = cluster_certs(&[1]);
    create_client(&certs, "alice", 1, false).unwrap();
    let alice = first_cert(&certs.client_cert("alice"));
    assert_eq!(crate::auth::certificate_user(&alice, 1).as_deref(), Some("alice"));
    // The same CA, another cluster: not a user there.
    assert_eq!(crate::auth::certificate_user(&alice, 2), None);
    create_client(&certs, "bob", 2, false).unwrap();
    let bob = first_cert(&certs.client_cert("bob"));
    assert_eq!(crate::auth::certificate_user(&bob, 1), None);
    assert_eq!(crate::auth::certificate_user(&bob, 2).as_deref(), Some("bob"));
    // A node certificate names no user, whatever its cluster unit says.
    assert_eq!(crate::auth::certificate_user(&first_cert(&certs.node_cert(1)), 1), None);
}
