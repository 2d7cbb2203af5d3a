//! TLS: a node's certificates, mutual TLS between nodes, HTTPS and
//! PostgreSQL over TLS, and reloading certificates without a restart
//! (`docs/security.md`).
//!
//! A node is given a certificates directory ([`CertsDir`]: `certs_dir` in
//! its config, or `geodb start --certs-dir`); without one it speaks
//! plaintext everywhere, as before. With one, [`Tls`] holds what it read
//! there — the cluster CA's certificates and the node's own certificate and
//! key — and hands out the rustls configurations every listener and dialer
//! uses:
//!
//! - between nodes ([`Tls::peer_acceptor`], [`Tls::connector`]): mutual TLS.
//!   Each side presents its node certificate, which must chain to the CA.
//!   The dialer checks that the node it reached is the node it dialed (the
//!   certificate is valid for that node's identity, [`node_name`]); the
//!   acceptor takes at the handshake only the certificate of a configured
//!   peer ([`PortVerifier`]) and, once the hello names the dialing node,
//!   checks that the certificate is valid for *that* node's identity
//!   ([`Tls::check_peer`]), before any frame after the hello is read;
//! - to clients ([`Tls::http_acceptor`], [`Tls::pg_acceptor`]): the node's
//!   certificate; a client certificate is asked for and not required
//!   ([`PortVerifier`]): one the CA signed names its user
//!   (`crate::auth`), one it did not fails the handshake.
//!   A gateway forwarding a request presents its node certificate here.
//!
//! A node's identity is a DNS name in its certificate's subject alternative
//! names, `node-<id>.cluster-<cluster id>.geodb.internal`: webpki checks it
//! as it checks any host name (no certificate parsing of our own), and a CA
//! shared by two clusters still cannot make a node of one pass as a node of
//! the other.
//!
//! Reloading: the configurations are built once, over resolvers and
//! verifiers that read the current certificates ([`Current`]) at every
//! handshake, so that [`Tls::reload`] (on SIGHUP) reaches every later
//! connection — the peers' transport, HTTPS, PostgreSQL and the gateway's
//! forwarding client alike — while connections already up keep going. A
//! reload that fails (a missing file, a key that does not match, a
//! certificate not signed by the CA or not for this node) keeps the
//! certificates in use and says why.

mod files;
mod issue;
mod listener;

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::telemetry::names;

pub use files::{CertsDir, check_user};
pub use issue::{CA_LIFETIME_DAYS, LEAF_LIFETIME_DAYS, client_cluster_unit, create_ca, create_client, create_node};
pub use listener::TlsListener;

/// Longest TLS handshake a listener waits for: a client that connects and
/// says nothing must not hold a task and a socket for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Between nodes (and from a gateway to a node), TLS 1.3 only: both ends
/// are GeoDB, so nothing older need be spoken, and TLS 1.3 encrypts the
/// certificates, which TLS 1.2 sends in the clear for any observer to read
/// node and cluster ids from. Clients may still use TLS 1.2.
const PEER_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The identity a node certificate carries for node `node` of the cluster
/// with id `cluster` (`cluster.id` of the config; 1 by default), as a DNS
/// name in its subject alternative names.
pub fn node_name(node: u64, cluster: u64) -> String {
    format!("node-{node}.cluster-{cluster}.geodb.internal")
}

/// Where a TLS connection was refused (the `listener` label of
/// `geodb_tls_connections_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The node-to-node transport, either end.
    Peer,
    Http,
    Pg,
}

impl Listener {
    pub fn label(self) -> &'static str {
        match self {
            Listener::Peer => "peer",
            Listener::Http => "http",
            Listener::Pg => "pg",
        }
    }
}

/// Why a connection was refused (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The TLS handshake failed: no certificate, one not signed by the CA
    /// or expired, not TLS at all, or it took too long.
    Handshake,
    /// A valid certificate, but for another node or cluster than the peer
    /// claims.
    Identity,
    /// A PostgreSQL client that did not ask for TLS.
    Plaintext,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Handshake => "handshake",
            Refusal::Identity => "identity",
            Refusal::Plaintext => "plaintext",
        }
    }
}

/// Counts a refused connection in `/metrics`.
pub fn count_refused(listener: Listener, reason: Refusal) {
    metrics::counter!(names::TLS_CONNECTIONS_REFUSED, "listener" => listener.label(), "reason" => reason.label())
        .increment(1);
}

/// What the certificates directory held at the last (re)load.
struct Loaded {
    key: Arc<CertifiedKey>,
    clients: Arc<dyn ClientCertVerifier>,
    /// The same CA, for clients that may present no certificate.
    optional_clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

/// The certificates in use, read by every handshake.
struct Current(RwLock<Arc<Loaded>>);

impl Current {
    fn get(&self) -> Arc<Loaded> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Current { .. }")
    }
}

/// A node's TLS: its certificates and the configurations over them.
pub struct Tls {
    dir: CertsDir,
    node: u64,
    cluster: u64,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    peer_acceptor: Arc<ServerConfig>,
    http_acceptor: Arc<ServerConfig>,
    pg_acceptor: Arc<ServerConfig>,
    connector: Arc<ClientConfig>,
    /// Counts successful reloads, for those who must act on one
    /// ([`Tls::reloads`]).
    reloads: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("dir", &self.dir).field("node", &self.node).field("cluster", &self.cluster).finish()
    }
}

impl Tls {
    /// The TLS of a node with `config`: none without `certs_dir`.
    pub fn for_config(config: &crate::config::Config) -> Result<Option<Arc<Tls>>, String> {
        let Some(dir) = &config.certs_dir else {
            log_hangups()?;
            return Ok(None);
        };
        // A single node's certificate is for cluster 1, the default `cluster.id`.
        let cluster = config.cluster.as_ref().map_or(1, |cluster| cluster.id);
        let peers: Vec<u64> = config
            .cluster
            .iter()
            .flat_map(|cluster| &cluster.nodes)
            .map(|node| node.id)
            .filter(|id| *id != config.node_id)
            .collect();
        Tls::open(dir, config.node_id, cluster, &peers).map(Some)
    }

    /// The CA certificate clients check this node's certificate with.
    pub fn ca_cert(&self) -> std::path::PathBuf {
        self.dir.ca_cert()
    }

    /// Reads the certificates of node `node` of cluster `cluster` from
    /// `dir`, and reloads them on every SIGHUP from now on (so this must be
    /// called inside a tokio runtime). The peer port accepts only the
    /// certificates of nodes `peers` of the cluster.
    pub fn open(dir: &Path, node: u64, cluster: u64, peers: &[u64]) -> Result<Arc<Tls>, String> {
        let dir = CertsDir::new(dir);
        for hazard in dir.hazards(node) {
            tracing::warn!("{hazard}");
        }
        // ring only: one provider for every connection, whatever other
        // crates of the process enable. rustls now prefers aws-lc-rs (for
        // post-quantum key exchange), which builds C with cmake; pgwire and
        // reqwest are built on ring here too (`docs/security.md`, "Not yet").
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load(&dir, node, cluster, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(loaded))));
        let peer_names = peers
            .iter()
            .map(|peer| ServerName::try_from(node_name(*peer, cluster)).map_err(|e| format!("node {peer}: {e}")))
            .collect::<Result<_, _>>()?;
        let peer_verifier = Arc::new(PortVerifier { current: current.clone(), peer_names: Some(peer_names) });
        let optional: Arc<dyn ClientCertVerifier> =
            Arc::new(PortVerifier { current: current.clone(), peer_names: None });
        let tls = Arc::new(Tls {
            peer_acceptor: acceptor(&provider, &current, peer_verifier, true, &[])?,
            http_acceptor: acceptor(&provider, &current, optional.clone(), false, &[b"http/1.1"])?,
            pg_acceptor: acceptor(&provider, &current, optional, false, &[b"postgresql"])?,
            connector: connector(&provider, &current)?,
            reloads: tokio::sync::watch::Sender::new(0),
            dir,
            node,
            cluster,
            provider,
            current,
        });
        reload_on_hangup(Arc::downgrade(&tls))?;
        tracing::info!(certs_dir = %tls.dir.path().display(), node, cluster, "TLS on: certificates loaded");
        Ok(tls)
    }

    /// Reads the certificates again; on failure keeps those in use.
    pub fn reload(&self) -> Result<(), String> {
        match load(&self.dir, self.node, self.cluster, &self.provider) {
            Ok(loaded) => {
                *self.current.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
                self.reloads.send_modify(|reloads| *reloads += 1);
                metrics::counter!(names::TLS_RELOADS, "outcome" => "ok").increment(1);
                tracing::info!(certs_dir = %self.dir.path().display(), "certificates reloaded");
                Ok(())
            }
            Err(error) => {
                metrics::counter!(names::TLS_RELOADS, "outcome" => "failed").increment(1);
                tracing::error!(%error, "certificates not reloaded: keeping those in use");
                Err(error)
            }
        }
    }

    /// Changes at every successful reload from now on. Inbound peer
    /// connections end at one: they were checked against the CA of before,
    /// which a rotation may have just removed, and their peers dial again.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Accepting a peer node: its certificate is required.
    pub fn peer_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.peer_acceptor.clone())
    }

    pub fn http_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.http_acceptor.clone())
    }

    pub fn pg_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.pg_acceptor.clone())
    }

    /// Dialing a peer node (present this node's certificate, check the
    /// peer's against the CA and the name dialed).
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.connector.clone())
    }

    /// The same, for an HTTP client (the gateway's forwarding client).
    pub fn client_config(&self) -> ClientConfig {
        self.connector.as_ref().clone()
    }

    /// The id of this node's cluster (1 for a single node).
    pub fn cluster(&self) -> u64 {
        self.cluster
    }

    /// The name to dial peer `node` by: its identity.
    pub fn peer_server_name(&self, node: u64) -> Result<ServerName<'static>, String> {
        ServerName::try_from(node_name(node, self.cluster)).map_err(|e| format!("node {node}: {e}"))
    }

    /// Checks that `certificate` (already checked against the CA by the
    /// handshake) is node `node`'s of this cluster.
    pub fn check_peer(&self, certificate: Option<&CertificateDer<'_>>, node: u64) -> Result<(), String> {
        let Some(certificate) = certificate else {
            return Err("no certificate".into());
        };
        let certificate = webpki::EndEntityCert::try_from(certificate).map_err(|e| format!("certificate: {e}"))?;
        let name = self.peer_server_name(node)?;
        certificate.verify_is_valid_for_subject_name(&name).map_err(|_| {
            format!(
                "its certificate is not for node {node} of cluster {} ({})",
                self.cluster,
                node_name(node, self.cluster)
            )
        })
    }
}

/// Reads and checks the CA and the node's certificate and key.
fn load(dir: &CertsDir, node: u64, cluster: u64, provider: &Arc<CryptoProvider>) -> Result<Loaded, String> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&dir.ca_cert())? {
        roots.add(ca).map_err(|e| format!("{}: {e}", dir.ca_cert().display()))?;
    }
    let roots = Arc::new(roots);
    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| format!("{}: {e}", dir.ca_cert().display()))?;
    let optional_clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("{}: {e}", dir.ca_cert().display()))?;
    let servers = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("{}: {e}", dir.ca_cert().display()))?;
    let chain = read_certs(&dir.node_cert(node))?;
    let key = PrivateKeyDer::from_pem_file(dir.node_key(node))
        .map_err(|e| format!("cannot read the key {}: {e}", dir.node_key(node).display()))?;
    let key = CertifiedKey::from_der(chain.clone(), key, provider)
        .map_err(|e| format!("{} and {}: {e}", dir.node_cert(node).display(), dir.node_key(node).display()))?;
    // A node must not serve with a certificate its peers would refuse: the
    // operator learns it here, not from every peer's log.
    let name = ServerName::try_from(node_name(node, cluster)).map_err(|e| e.to_string())?;
    servers.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).map_err(|e| {
        format!(
            "{}: {e} (it must be signed by {} and made for node {node} of cluster {cluster}: \
             geodb cert create-node --node-id {node} --cluster-id {cluster})",
            dir.node_cert(node).display(),
            dir.ca_cert().display()
        )
    })?;
    Ok(Loaded { key: Arc::new(key), clients, optional_clients, servers })
}

/// Every certificate of a PEM file, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// A server configuration over the current certificates; `clients`
/// verifies the client certificate a connection presents; `peer`: between
/// nodes (TLS 1.3 only).
fn acceptor(
    provider: &Arc<CryptoProvider>,
    current: &Arc<Current>,
    clients: Arc<dyn ClientCertVerifier>,
    peer: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, String> {
    let versions = if peer { PEER_VERSIONS } else { rustls::DEFAULT_VERSIONS };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let mut config = builder.with_client_cert_verifier(clients).with_cert_resolver(current.clone());
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    // No resumption: a resumed session skips checking the client's
    // certificate (a node's, or one naming a user) against the CA of the
    // last reload. Peer connections live long, and clients keep theirs
    // alive, so a full handshake costs little.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn connector(provider: &Arc<CryptoProvider>, current: &Arc<Current>) -> Result<Arc<ClientConfig>, String> {
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PEER_VERSIONS)
        .map_err(|e| e.to_string())?
        // "Dangerous" only in name: the verifier is webpki's, with the
        // roots of the last reload.
        .dangerous()
        .with_custom_certificate_verifier(current.clone())
        .with_client_cert_resolver(current.clone());
    // Every connection checks the peer's certificate afresh (see `acceptor`).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Reloads the certificates on every SIGHUP while the [`Tls`] lives. The
/// handler is installed before this returns, so a SIGHUP sent once the
/// node announced itself never takes the default action (ending the
/// process).
fn reload_on_hangup(tls: Weak<Tls>) -> Result<(), String> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(tls) = tls.upgrade() else { return };
            tracing::info!("SIGHUP: reloading certificates");
            let _ = tls.reload();
        }
    });
    Ok(())
}

/// Without certificates, answers SIGHUP with a line in the log: the same
/// `kill -HUP` that reloads a secure node must not end a plaintext one (the
/// default action). Outside a tokio runtime (a tool opening a node's data)
/// there is no handler to install.
fn log_hangups() -> Result<(), String> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(());
    }
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: no certificates to reload (no certs_dir: TLS is off)");
        }
    });
    Ok(())
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }
}

impl ResolvesClientCert for Current {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The verifier of a port's client certificates, with the CA of the last
/// reload ([`Current`]).
///
/// - The peer port (`peer_names` set): a certificate is required, must
///   chain to the CA and be a node certificate of a configured peer of this
///   cluster, so that no other certificate the CA signed (a client's, a
///   node's of another cluster) gets past the handshake to have its hello
///   read. [`Tls::check_peer`] then binds it to the very node the hello
///   names.
/// - The client ports (`peer_names` none): a client may present no
///   certificate; one it presents must chain to the CA.
#[derive(Debug)]
struct PortVerifier {
    current: Arc<Current>,
    /// `node_name` of every configured peer, on the peer port.
    peer_names: Option<Vec<ServerName<'static>>>,
}

impl PortVerifier {
    /// The CA's verifier of the last reload for this port.
    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        let loaded = self.current.get();
        if self.peer_names.is_some() { loaded.clients.clone() } else { loaded.optional_clients.clone() }
    }
}

impl ClientCertVerifier for PortVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.peer_names.is_some()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner().verify_client_cert(end_entity, intermediates, now)?;
        let Some(peer_names) = &self.peer_names else { return Ok(verified) };
        let certificate = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if peer_names.iter().any(|name| certificate.verify_is_valid_for_subject_name(name).is_ok()) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}

impl ServerCertVerifier for Current {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.get().servers.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().servers.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().servers.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().servers.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
