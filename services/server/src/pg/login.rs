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
        let certified = client.client_certificates().and_then(|chain| chain.first()).and_then(certificate_user);
        if certified.as_deref() == Some(user.as_str()) {
            return match lookup(node, &user)? {
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
                let first = message.into_sasl_initial_response()?;
                if first.auth_method != SCRAM_SHA_256 {
                    let error = ApiError::new("28000", format!("only {SCRAM_SHA_256} is offered"));
                    return Err(fatal(&error));
                }
                let found = lookup(node, &user)?;
                let (verifier, real) = node.auth.verifier_for(found.as_ref(), &user);
                let secret = ScramSecret::Verifier {
                    salt: verifier.salt.clone(),
                    iterations: verifier.iterations as usize,
                    stored_key: verifier.stored_key.to_vec(),
                    server_key: verifier.server_key.to_vec(),
                };
                let data = first.data.unwrap_or_default();
                let Ok((server_first, waiting)) =
                    ScramServerAuth::new().on_client_first_message_with_secret(&data, secret)
                else {
                    return Err(fatal(&node.auth.failed(Listener::Pg, Failure::Password, &user, address)));
                };
                let found = if real { found } else { None };
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASLContinue(Bytes::from(server_first))))
                    .await?;
                self.set(Step::Challenged { user, found, waiting: Box::new(waiting) });
                Ok(None)
            }
            Step::Challenged { user, found, waiting } => {
                let proof = message.into_sasl_response()?;
                match (waiting.on_client_final_message(&proof.data), found) {
                    (Ok(server_final), Some(found)) => {
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::SASLFinal(Bytes::from(
                                server_final,
                            ))))
                            .await?;
                        Ok(Some(found))
                    }
                    _ => Err(fatal(&node.auth.failed(Listener::Pg, Failure::Password, &user, address))),
                }
            }
        }
    }
}

fn lookup(node: &Node, user: &str) -> PgWireResult<Option<User>> {
    if user.is_empty() || user.len() > geodb_sql::access::USER_NAME_BYTES_MAX {
        return Ok(None);
    }
    crate::exec::blocking(|| node.db.user(user)).map_err(|error| fatal(&ApiError::from(error)))
}

/// A login failure as PostgreSQL sends it: FATAL, and the connection ends.
pub(super) fn fatal(error: &ApiError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".to_string(), error.code.clone(), error.message.clone())))
}
