//! Who an HTTP request runs as, on a secure node (`crate::auth`).
//!
//! [`authenticate`] runs before every `/v1` route (and before a request is
//! forwarded to another node): it finds the request's [`Identity`] and
//! puts it in the request's extensions, where the handlers take it, or
//! answers 401 (`28000` without credentials, `28P01` for a failed
//! password, with `WWW-Authenticate: Basic`), 429 (`53300`, too many
//! failed logins), or, for `/v1/admin/*` and a user without the admin
//! role, 403 (`42501`). In order:
//!
//! 1. A request forwarded by another node of the cluster (a gateway
//!    sending a session's statement to the node holding it) runs as the
//!    user the gateway authenticated, named in [`USER_HEADER`] (base64 of
//!    its UTF-8 bytes), only if this node is in a cluster, the node
//!    [`super::forward::FORWARDED_HEADER`] names is a configured member
//!    other than this node, and the connection presented, in its TLS
//!    handshake, that very node's certificate. A client cannot forge it:
//!    it would need a node's key. Anything else ignores the header.
//! 2. `Authorization: Basic base64(user:password)`, checked against the
//!    user's verifier.
//! 3. A client certificate (CN = user) presented in the TLS handshake: the
//!    HTTPS listener asks every client for one and requires none.
//!
//! `/healthz`, `/readyz` and `/metrics` are outside `/v1` and need nothing
//! (probes and Prometheus; `docs/security.md` says what `/metrics` shows).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use base64::Engine as _;
use rustls_pki_types::CertificateDer;

use super::ApiError;
use super::forward::FORWARDED_HEADER;
use crate::auth::{Failure, Identity, Listener, certificate_user};
use crate::exec;
use crate::node::Node;

/// The user a forwarding gateway authenticated (trusted only from a node:
/// see the module documentation).
pub const USER_HEADER: &str = "x-geodb-user";

/// The longest `Authorization` header value read.
const AUTHORIZATION_BYTES_MAX: usize = 4096;

/// What the connection of a request showed: the client's address and the
/// certificate it presented in the TLS handshake, if any.
#[derive(Clone, Debug)]
pub struct Peer {
    pub address: SocketAddr,
    pub certificate: Option<CertificateDer<'static>>,
}

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer { address: *stream.remote_addr(), certificate: None }
    }
}

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        let (_, connection) = stream.io().get_ref();
        let certificate =
            connection.peer_certificates().and_then(|chain| chain.first()).map(|c| c.clone().into_owned());
        Peer { address: *stream.remote_addr(), certificate }
    }
}

/// The authentication middleware (see the module documentation).
pub async fn authenticate(State(node): State<Arc<Node>>, mut request: Request, next: Next) -> Response {
    if !node.auth.required {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<ConnectInfo<Peer>>().map(|info| info.0.clone());
    let identity = match identify(&node, &request, peer.as_ref()) {
        Ok(identity) => identity,
        Err(error) => return error.into_response(),
    };
    if request.uri().path().starts_with("/v1/admin/") && !identity.admin {
        return ApiError::new(
            "42501",
            format!("permission denied: /v1/admin needs the admin role, which \"{}\" does not have", identity.user),
        )
        .into_response();
    }
    request.extensions_mut().insert(identity);
    next.run(request).await
}

fn identify(node: &Node, request: &Request, peer: Option<&Peer>) -> Result<Identity, ApiError> {
    let address = peer.map(|peer| peer.address.ip());
    let certificate = peer.and_then(|peer| peer.certificate.as_ref());
    let headers = request.headers();
    // 1. Forwarded by another node of this cluster, which says who its
    // client is.
    if let (Some(from), Some(user), Some(certificate), Some(tls), Some(cluster)) =
        (headers.get(FORWARDED_HEADER), headers.get(USER_HEADER), certificate, node.tls.as_ref(), &node.config.cluster)
        && let Some(from) = from.to_str().ok().and_then(|from| from.parse::<u64>().ok())
        && from != node.config.node_id
        && cluster.nodes.iter().any(|member| member.id == from)
        && tls.check_peer(Some(certificate), from).is_ok()
    {
        let Some(user) = decode_user(user.as_bytes()) else {
            return Err(ApiError::bad_request(format!("malformed {USER_HEADER} header (expected base64)")));
        };
        return match lookup(node, &user, true)? {
            Some(found) => Ok(Identity::of(&found)),
            // Dropped since the gateway let it in.
            None => Err(Failure::Password.error(&user)),
        };
    }
    // 2. A password.
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        let Some((user, password)) = basic_credentials(authorization.as_bytes()) else {
            return Err(node.auth.failed(Listener::Http, Failure::Malformed, "", address));
        };
        node.auth.admit(Listener::Http, &user, address)?;
        // This node's replica only, for a name that exists or not alike.
        let found = lookup(node, &user, false)?;
        let (verifier, real) = node.auth.verifier_for(found.as_ref(), &user);
        // The same work whether the user exists or not.
        let matched = exec::blocking(|| verifier.check(&password)) && real;
        return match found {
            Some(found) if matched => {
                node.auth.succeeded(&user, address);
                Ok(Identity::of(&found))
            }
            _ => Err(node.auth.refused(Listener::Http, Failure::Password, &user, address)),
        };
    }
    // 3. A client certificate.
    // (Not rate limited: a certificate the CA signed is not a guess.)
    let cluster = node.tls.as_ref().map_or(1, |tls| tls.cluster());
    if let Some(user) = certificate.and_then(|certificate| certificate_user(certificate, cluster)) {
        return match lookup(node, &user, true)? {
            Some(found) => Ok(Identity::of(&found)),
            None => Err(node.auth.failed(Listener::Http, Failure::Certificate, &user, address)),
        };
    }
    Err(node.auth.failed(Listener::Http, Failure::Missing, "", address))
}

/// The [`USER_HEADER`] value for `user`: base64 of its UTF-8 bytes, so a
/// quoted name with leading or trailing spaces or control characters
/// arrives exactly (HTTP trims a header value's whitespace, and refuses
/// control characters).
pub fn encode_user(user: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(user.as_bytes())
}

/// The user of a [`USER_HEADER`] value ([`encode_user`]).
fn decode_user(value: &[u8]) -> Option<String> {
    if value.len() > 4 * geodb_sql::access::USER_NAME_BYTES_MAX {
        return None;
    }
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(value).ok()?).ok()
}

/// A user as this node's replica of the catalog has it (a local read);
/// if it is not there and `leader`, as the catalog's leader has it (for a
/// certificate or a forwarding node, which are no guesses; a password
/// login never asks the leader: `Database::user_local`).
fn lookup(node: &Node, user: &str, leader: bool) -> Result<Option<geodb_sql::access::User>, ApiError> {
    if user.is_empty() || user.len() > geodb_sql::access::USER_NAME_BYTES_MAX {
        return Ok(None);
    }
    Ok(exec::blocking(|| if leader { node.db.user(user) } else { node.db.user_local(user) })?)
}

/// The user and password of `Basic base64(user:password)`.
fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse_and_malformed_ones_do_not() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        assert_eq!(
            basic_credentials(format!("Basic {encoded}").as_bytes()),
            Some(("alice".to_string(), "pa:ss".to_string()))
        );
        assert_eq!(basic_credentials(format!("Bearer {encoded}").as_bytes()), None);
        assert_eq!(basic_credentials(b"Basic !!!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("alice");
        assert_eq!(basic_credentials(format!("Basic {no_colon}").as_bytes()), None);
    }

    #[test]
    fn forwarded_user_names_arrive_exactly() {
        for user in [" alice", "alice ", "a\tb\nc", "\u{7f}x", "ünï", ""] {
            let encoded = encode_user(user);
            assert!(axum::http::HeaderValue::from_str(&encoded).is_ok());
            assert_eq!(decode_user(encoded.as_bytes()).as_deref(), Some(user));
        }
        assert_eq!(decode_user(b"not base64!"), None);
    }
}
