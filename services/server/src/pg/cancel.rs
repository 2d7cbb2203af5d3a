//! Query cancellation: PostgreSQL's `CancelRequest`.
//!
//! At startup each connection is told a key (`BackendKeyData`): a process
//! id, which only names the connection, and a secret, drawn at random for
//! it from a cryptographically secure generator, which is the capability
//! to cancel. To stop a statement a client opens a new connection and
//! sends the key instead of a startup message; the server answers nothing
//! on it and closes it. If the key is a live connection's, that
//! connection's session flag is set ([`crate::session::Session::cancel`]),
//! and its running statement stops at its next read with `57014`. A key
//! that names no connection, or the wrong secret, does nothing.
//!
//! [`Cancels`] holds the keys of one listener's connections; a
//! [`Registration`] removes its key when the connection ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::ProtocolVersion;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use rand::Rng;

/// Bytes of the secret of protocol 3.2 (PostgreSQL 18's length; 3.0 has
/// four).
const SECRET_BYTES: usize = 32;

/// The cancel keys of live connections, by process id.
#[derive(Default)]
pub struct Cancels {
    next_pid: AtomicI32,
    connections: Mutex<HashMap<i32, Registered>>,
}

/// A live connection's key: its secret, and the flag that stops its
/// session's statement.
struct Registered {
    secret: SecretKey,
    cancel: Arc<AtomicBool>,
}

impl Cancels {
    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Registered>> {
        self.connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Draws a key for a connection that speaks `protocol`, whose cancel
    /// requests set `cancel`; the key lasts as long as the registration.
    pub fn register(self: &Arc<Self>, protocol: ProtocolVersion, cancel: Arc<AtomicBool>) -> Registration {
        let secret = match protocol {
            ProtocolVersion::PROTOCOL3_0 => SecretKey::I32(rand::rng().random()),
            ProtocolVersion::PROTOCOL3_2 | ProtocolVersion::PROTOCOL3_9999 => {
                let mut bytes = [0u8; SECRET_BYTES];
                rand::rng().fill(&mut bytes);
                SecretKey::Bytes(bytes.to_vec().into())
            }
        };
        let mut connections = self.connections();
        // Process ids only name connections; skip any still in use after
        // the counter wrapped.
        let pid = loop {
            let pid = self.next_pid.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if pid > 0 && !connections.contains_key(&pid) {
                break pid;
            }
        };
        connections.insert(pid, Registered { secret: secret.clone(), cancel });
        Registration { cancels: self.clone(), pid, secret }
    }
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let connections = self.connections();
        match connections.get(&request.pid) {
            Some(registered) if registered.secret.eq_value(&request.secret_key) => {
                tracing::debug!(pid = request.pid, "cancel request");
                registered.cancel.store(true, Ordering::Relaxed);
            }
            _ => tracing::debug!(pid = request.pid, "ignored a cancel request: no connection has that key"),
        }
    }
}

/// A connection's cancel key, valid until dropped.
pub struct Registration {
    cancels: Arc<Cancels>,
    pub pid: i32,
    pub secret: SecretKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cancels.connections().remove(&self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_live_connections_key_cancels_it() {
        let cancels = Arc::new(Cancels::default());
        let flag = Arc::new(AtomicBool::new(false));
        let registration = cancels.register(ProtocolVersion::PROTOCOL3_0, flag.clone());
        let other = cancels.register(ProtocolVersion::PROTOCOL3_0, Arc::new(AtomicBool::new(false)));
        assert_ne!(registration.pid, other.pid);
        let cancel =
            |pid, secret| futures::executor::block_on(cancels.on_cancel_request(CancelRequest::new(pid, secret)));

        let SecretKey::I32(secret) = registration.secret else { panic!("protocol 3.0 has a 4-byte secret") };
        cancel(registration.pid, SecretKey::I32(secret.wrapping_add(1)));
        cancel(other.pid, SecretKey::I32(secret));
        assert!(!flag.load(Ordering::Relaxed), "a wrong key does nothing");
        cancel(registration.pid, SecretKey::I32(secret));
        assert!(flag.load(Ordering::Relaxed));

        let pid = registration.pid;
        drop(registration);
        flag.store(false, Ordering::Relaxed);
        cancel(pid, SecretKey::I32(secret));
        assert!(!flag.load(Ordering::Relaxed), "a closed connection's key does nothing");
    }

    #[test]
    fn protocol_3_2_secrets_are_32_random_bytes() {
        let cancels = Arc::new(Cancels::default());
        let a = cancels.register(ProtocolVersion::PROTOCOL3_2, Arc::new(AtomicBool::new(false)));
        let b = cancels.register(ProtocolVersion::PROTOCOL3_2, Arc::new(AtomicBool::new(false)));
        assert!(matches!(&a.secret, SecretKey::Bytes(bytes) if bytes.len() == SECRET_BYTES));
        assert!(!a.secret.eq_value(&b.secret));
    }
}
