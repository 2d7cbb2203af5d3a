//! Making certificates: `geodb cert create-ca | create-node | create-client`.
//!
//! Every key is ECDSA P-256 (small, fast to sign and verify, and what every
//! TLS client speaks). The CA signs node and client certificates only (a
//! path length of 0: no intermediate CAs). A node certificate is for both
//! ends of a connection (server and client authentication): a node accepts
//! connections from its peers and clients and dials its peers with the same
//! certificate. Its first subject alternative name is the node's identity,
//! [`super::node_name`]; the `--host` names and addresses clients reach it
//! by follow. A client certificate names its user in its common name and
//! its cluster in its organizational unit.

use chrono::{Datelike, Days, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use super::files::{CertsDir, check_user};

/// A CA certificate is valid this long: rotating it means touching every
/// node and client, so it is rare (as `cockroach cert` does: 10 years).
pub const CA_LIFETIME_DAYS: u64 = 10 * 366;
/// Node and client certificates are valid this long (5 years, as
/// `cockroach cert`); rotate them sooner with `create-node --overwrite` and a
/// SIGHUP (`docs/security.md`).
pub const LEAF_LIFETIME_DAYS: u64 = 5 * 366;

/// Writes a new CA (`ca.crt`, `ca.key`) into `dir`.
pub fn create_ca(dir: &CertsDir, overwrite: bool) -> Result<(), String> {
    dir.check_absent(&[dir.ca_cert(), dir.ca_key()], overwrite)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(error)?;
    params.distinguished_name.push(DnType::OrganizationName, "GeoDB");
    params.distinguished_name.push(DnType::CommonName, "GeoDB CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, CA_LIFETIME_DAYS)?;
    let key = KeyPair::generate().map_err(error)?;
    let cert = params.self_signed(&key).map_err(error)?;
    dir.write_key(&dir.ca_key(), &key.serialize_pem())?;
    dir.write_cert(&dir.ca_cert(), &cert.pem())
}

/// Writes `node.<node>.crt` and `.key`, signed by the CA in `dir`, for node
/// `node` of cluster `cluster`, also valid for `hosts` (DNS names or IP
/// addresses).
pub fn create_node(dir: &CertsDir, node: u64, cluster: u64, hosts: &[String], overwrite: bool) -> Result<(), String> {
    hosts.iter().try_for_each(|host| check_host(host))?;
    dir.check_absent(&[dir.node_cert(node), dir.node_key(node)], overwrite)?;
    let mut names = vec![super::node_name(node, cluster)];
    names.extend(hosts.iter().cloned());
    let mut params = CertificateParams::new(names).map_err(|e| format!("--host: {e}"))?;
    params.distinguished_name.push(DnType::OrganizationName, "GeoDB");
    params.distinguished_name.push(DnType::OrganizationalUnitName, format!("cluster {cluster}"));
    params.distinguished_name.push(DnType::CommonName, format!("node {node}"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let (cert, key) = sign(dir, params)?;
    dir.write_key(&dir.node_key(node), &key)?;
    dir.write_cert(&dir.node_cert(node), &cert)
}

/// The domain node identities live under ([`super::node_name`]).
const IDENTITY_DOMAIN: &str = "geodb.internal";

/// Refuses a `--host` that would make the certificate pass for more than
/// the one node it is for: a wildcard (`*.geodb.internal`, or `*.example.com`
/// for every host of a domain), or a name under the identities' domain (the
/// certificate of node 1 naming `node-2.cluster-1.geodb.internal` would be
/// node 2's as well).
fn check_host(host: &str) -> Result<(), String> {
    if host.contains('*') {
        return Err(format!("--host {host}: no wildcards: name each host"));
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == IDENTITY_DOMAIN || name.ends_with(&format!(".{IDENTITY_DOMAIN}")) {
        return Err(format!("--host {host}: names under {IDENTITY_DOMAIN} are node identities, which --node-id sets"));
    }
    Ok(())
}

/// Writes `client.<user>.crt` and `.key`, signed by the CA in `dir`, for
/// `user` of cluster `cluster`: its subject is `O=GeoDB, OU=cluster
/// <cluster>, CN=<user>` ([`client_cluster_unit`]), and a node of another
/// cluster sharing the CA refuses it (`crate::auth::certificate_user`).
pub fn create_client(dir: &CertsDir, user: &str, cluster: u64, overwrite: bool) -> Result<(), String> {
    check_user(user)?;
    dir.check_absent(&[dir.client_cert(user), dir.client_key(user)], overwrite)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(error)?;
    params.distinguished_name.push(DnType::OrganizationName, "GeoDB");
    params.distinguished_name.push(DnType::OrganizationalUnitName, client_cluster_unit(cluster));
    params.distinguished_name.push(DnType::CommonName, user);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (cert, key) = sign(dir, params)?;
    dir.write_key(&dir.client_key(user), &key)?;
    dir.write_cert(&dir.client_cert(user), &cert)
}

/// The organizational unit that binds a client certificate to the cluster
/// with id `cluster`, as a node certificate's identity binds it.
pub fn client_cluster_unit(cluster: u64) -> String {
    format!("cluster {cluster}")
}

/// Signs a leaf certificate with `params` and a new key by the CA in
/// `dir`; the certificate and the key, PEM.
fn sign(dir: &CertsDir, mut params: CertificateParams) -> Result<(String, String), String> {
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e} (create the CA first: geodb cert create-ca)", path.display()))
    };
    let ca_key = KeyPair::from_pem(&read(dir.ca_key())?).map_err(|e| format!("{}: {e}", dir.ca_key().display()))?;
    let issuer = Issuer::from_ca_cert_pem(&read(dir.ca_cert())?, ca_key)
        .map_err(|e| format!("{}: {e}", dir.ca_cert().display()))?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_LIFETIME_DAYS)?;
    let key = KeyPair::generate().map_err(error)?;
    let cert = params.signed_by(&key, &issuer).map_err(error)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Valid from yesterday (a peer whose clock is a little behind must not
/// see a certificate from the future) for `days`.
fn set_validity(params: &mut CertificateParams, days: u64) -> Result<(), String> {
    let today = Utc::now().date_naive();
    let from = today.checked_sub_days(Days::new(1)).ok_or("the date is out of range")?;
    let until = today.checked_add_days(Days::new(days)).ok_or("the date is out of range")?;
    let date = |day: chrono::NaiveDate| rcgen::date_time_ymd(day.year(), day.month() as u8, day.day() as u8);
    params.not_before = date(from);
    params.not_after = date(until);
    Ok(())
}

fn error(error: rcgen::Error) -> String {
    format!("cannot make the certificate: {error}")
}
