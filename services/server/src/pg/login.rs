//! Logging in on the PostgreSQL port of a secure node (`crate::auth`).
//!
//! After the startup message names a user:
//!
//! - a client certificate the TLS handshake took (signed by the cluster CA)
//!   whose common name is that user logs it in at once, as PostgreSQL's
//!   `cert` method does;
//! - otherwise the node asks for SCRAM-SHA-256 (RFC 5802/7677, PostgreSQL's
//!   `scram-sha-256` method, without channel binding): the client proves it
//!   knows the password against the user's stored verifier, and the node
//!   proves it holds the verifier; the password never crosses the wire.
//!   pgwire's `ScramServerAuth` runs the exchange over the verifier.
//!
//! A user that does not exist, or has no password, gets the same exchange
//! over a verifier no password matches, with a salt made up from its name
//! (`Auth::verifier_for`), and fails as a wrong password does: FATAL
//! `28P01` "password authentication failed", as PostgreSQL answers both.
//! A login beyond the rate limit is refused before any exchange: FATAL
//! `53300`.

use std::fmt::Debug;
use std::sync::{Mutex, PoisonError};

use axum::body::Bytes;
use futures::{Sink, SinkExt};
use geodb_sql::access::User;
use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth, ScramServerAuthWaitingForClientFinal};
use pgwire::api::{ClientInfo, METADATA_USER, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};

use crate::auth::{Failure, Listener, certificate_user};
use crate::http::ApiError;
use crate::node::Node;

/// The one SASL mechanism offered.
const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Where a connection's login stands.
#[derive(Default)]
pub(super) struct Login(Mutex<Step>);

#[derive(Default)]
enum Step {
    /// No login asked for (yet).
    #[default]
    Idle,
    /// SCRAM asked for; waiting for the client-first message.
    Asked { user: String },
    /// The server-first message sent; waiting for the client's proof.
    Challenged { user: String, found: Option<User>, waiting: Box<ScramServerAuthWaitingForClientFinal> },
}

/// What the startup message led to.
pub(super) enum Begun {
    /// Logged in as this user (a client certificate).
    As(User),
    /// SCRAM asked for: the password messages follow.
    Asked,
}

impl Login {
    fn take(&self) -> Step {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn set(&self, step: Step) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = step;
    }

    /// After the startup message: logs in by certificate, or asks for SCRAM.
    pub(super) async fn begin<C>(&self, node: &Node, client: &mut C) -> PgWireResult<Begun>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let address = Some(client.socket_addr().ip());
        let Some(user) = client.metadata().get(METADATA_USER).cloned() else {
            return Err(fatal(&node.auth.failed(Listener::Pg, Failure::Missing, "", address)));
        };
        // A certificate the CA signed is not a guess: not rate limited.
        let cluster = node.tls.as_ref().map_or(1, |tls| tls.cluster());
        let certified =
            client.client_certificates().and_then(|chain| chain.first()).and_then(|c| certificate_user(c, cluster));
        if certified.as_deref() == Some(user.as_str()) {
            return match lookup(node, &user, true)? {
                Some(found) => Ok(Begun::As(found)),
                None => Err(fatal(&node.auth.failed(Listener::Pg, Failure::Certificate, &user, address))),
            };
        }
        node.auth.admit(Listener::Pg, &user, address).map_err(|error| fatal(&error))?;
        client.set_state(PgWireConnectionState::AuthenticationInProgress);
        client.send(PgWireBackendMessage::Authentication(Authentication::SASL(vec![SCRAM_SHA_256.into()]))).await?;
        self.set(Step::Asked { user });
        Ok(Begun::Asked)
    }

    /// One password message of the SCRAM exchange: `Some(user)` once the
    /// client proved it (the caller then finishes the startup).
    pub(super) async fn step<C>(
        &self,
        node: &Node,
        client: &mut C,
        message: PasswordMessageFamily,
    ) -> PgWireResult<Option<User>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let address = Some(client.socket_addr().ip());
        match self.take() {
            Step::Idle => Err(fatal(&ApiError::new("08P01", "a password message without a login in progress"))),
            Step::Asked { user } => {
                let Some((mechanism, data)) = initial_response(message) else {
                    node.auth.refused(Listener::Pg, Failure::Malformed, &user, address);
                    return Err(fatal(&ApiError::new("08P01", "malformed SASLInitialResponse message")));
                };
                if mechanism != SCRAM_SHA_256 {
                    let error = ApiError::new("28000", format!("only {SCRAM_SHA_256} is offered"));
                    return Err(fatal(&error));
                }
                // This node's replica only, for a name that exists or not alike.
                let found = lookup(node, &user, false)?;
                let (verifier, real) = node.auth.verifier_for(found.as_ref(), &user);
                let secret = ScramSecret::Verifier {
                    salt: verifier.salt.clone(),
                    iterations: verifier.iterations as usize,
                    stored_key: verifier.stored_key.to_vec(),
                    server_key: verifier.server_key.to_vec(),
                };
                let data = data.unwrap_or_default();
                let Ok((server_first, waiting)) =
                    ScramServerAuth::new().on_client_first_message_with_secret(&data, secret)
                else {
                    return Err(fatal(&node.auth.refused(Listener::Pg, Failure::Password, &user, address)));
                };
                let found = if real { found } else { None };
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASLContinue(Bytes::from(server_first))))
                    .await?;
                self.set(Step::Challenged { user, found, waiting: Box::new(waiting) });
                Ok(None)
            }
            Step::Challenged { user, found, waiting } => {
                // pgwire takes a raw message's whole body as the response:
                // no length to trust, nothing to panic on.
                let proof = message.into_sasl_response()?;
                match (waiting.on_client_final_message(&proof.data), found) {
                    (Ok(server_final), Some(found)) => {
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::SASLFinal(Bytes::from(
                                server_final,
                            ))))
                            .await?;
                        node.auth.succeeded(&user, address);
                        Ok(Some(found))
                    }
                    _ => Err(fatal(&node.auth.refused(Listener::Pg, Failure::Password, &user, address))),
                }
            }
        }
    }
}

/// The mechanism and data of a SASLInitialResponse message: a
/// NUL-terminated mechanism name, then the data's length (-1 for none) and
/// that many bytes, ending the message. `None` if the body is not that
/// (pgwire's own decoder panics on a short body or a bad length).
fn initial_response(message: PasswordMessageFamily) -> Option<(String, Option<Bytes>)> {
    let body = match message {
        PasswordMessageFamily::Raw(body) => body.freeze(),
        other => {
            let decoded = other.into_sasl_initial_response().ok()?;
            return Some((decoded.auth_method, decoded.data));
        }
    };
    parse_initial_response(&body)
}

fn parse_initial_response(body: &Bytes) -> Option<(String, Option<Bytes>)> {
    let end = body.iter().position(|byte| *byte == 0)?;
    let mechanism = std::str::from_utf8(&body[..end]).ok()?.to_string();
    let rest = body.slice(end + 1..);
    let length = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let data = rest.slice(4..);
    match length {
        -1 if data.is_empty() => Some((mechanism, None)),
        0.. if usize::try_from(length).ok()? == data.len() => Some((mechanism, Some(data))),
        _ => None,
    }
}

/// A user as this node's replica of the catalog has it; if it is not there
/// and `leader`, as the catalog's leader has it (a certificate login; a
/// password login never asks the leader: `Database::user_local`).
fn lookup(node: &Node, user: &str, leader: bool) -> PgWireResult<Option<User>> {
    if user.is_empty() || user.len() > geodb_sql::access::USER_NAME_BYTES_MAX {
        return Ok(None);
    }
    crate::exec::blocking(|| if leader { node.db.user(user) } else { node.db.user_local(user) })
        .map_err(|error| fatal(&ApiError::from(error)))
}

/// A login failure as PostgreSQL sends it: FATAL, and the connection ends.
pub(super) fn fatal(error: &ApiError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".to_string(), error.code.clone(), error.message.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&[u8]]) -> Bytes {
        Bytes::from(parts.concat())
    }

    #[test]
    fn initial_responses_parse_and_malformed_ones_do_not() {
        let good = body(&[b"SCRAM-SHA-256\0", &3i32.to_be_bytes(), b"abc"]);
        assert_eq!(parse_initial_response(&good), Some(("SCRAM-SHA-256".into(), Some(Bytes::from_static(b"abc")))));
        let none = body(&[b"SCRAM-SHA-256\0", &(-1i32).to_be_bytes()]);
        assert_eq!(parse_initial_response(&none), Some(("SCRAM-SHA-256".into(), None)));
        for bad in [
            body(&[]),
            body(&[b"SCRAM-SHA-256"]),
            body(&[b"SCRAM-SHA-256\0"]),
            body(&[b"SCRAM-SHA-256\0", &[0, 0]]),
            body(&[b"SCRAM-SHA-256\0", &4i32.to_be_bytes(), b"abc"]),
            body(&[b"SCRAM-SHA-256\0", &2i32.to_be_bytes(), b"abc"]),
            body(&[b"SCRAM-SHA-256\0", &(-2i32).to_be_bytes(), b"abc"]),
            body(&[b"SCRAM-SHA-256\0", &(-1i32).to_be_bytes(), b"abc"]),
            body(&[b"SCRAM-SHA-256\0", &i32::MAX.to_be_bytes()]),
            body(&[b"\xff\0", &0i32.to_be_bytes()]),
        ] {
            assert_eq!(parse_initial_response(&bad), None, "{bad:?}");
        }
        // A raw message as pgwire hands it over.
        let raw = PasswordMessageFamily::Raw(axum::body::Bytes::from_static(b"SCRAM").into_iter().collect());
        assert_eq!(initial_response(raw), None);
    }
}
