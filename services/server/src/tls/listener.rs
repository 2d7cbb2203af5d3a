//! HTTPS: a listener for axum that hands over connections once their TLS
//! handshake is done.
//!
//! ```text
//!  TCP accept ──► handshake task (≤ HANDSHAKES_MAX at once, HANDSHAKE_TIMEOUT each)
//!                   ok ──► queue ──► axum::serve's accept
//!                   failed (plaintext, bad hello, timeout) ──► closed, logged, counted
//! ```
//!
//! Handshakes run on their own tasks, not in `accept`, so one slow or
//! silent client never holds up the next.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{HANDSHAKE_TIMEOUT, Listener, Refusal, count_refused};

/// Handshakes in progress at once; a connection beyond it is closed at
/// once. Each costs a task and a few KiB; far more than a node serves.
const HANDSHAKES_MAX: usize = 1024;
/// Finished handshakes waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 128;
/// The pause after a failed accept (out of file descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A TCP listener whose connections come out as TLS streams.
pub struct TlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    task: AbortHandle,
}

impl TlsListener {
    /// Starts accepting on `listener` (inside a tokio runtime); refusals
    /// are counted under `label`.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor, label: Listener) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(ACCEPTED_QUEUE_MAX);
        let task = tokio::spawn(accept_loop(listener, acceptor, label, sender)).abort_handle();
        Ok(TlsListener { local, accepted, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    label: Listener,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, listener = label.label(), "cannot accept a connection");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, listener = label.label(), "refused a connection: {HANDSHAKES_MAX} TLS handshakes under way");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, sender) = (acceptor.clone(), sender.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send((stream, peer)).await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%peer, listener = label.label(), %error, "TLS handshake failed: connection closed");
                    count_refused(label, Refusal::Handshake);
                }
                Err(_) => {
                    tracing::warn!(%peer, listener = label.label(), "no TLS handshake within {HANDSHAKE_TIMEOUT:?}: connection closed");
                    count_refused(label, Refusal::Handshake);
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (it never does unless aborted): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
