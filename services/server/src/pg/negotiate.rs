//! TLS negotiation on a PostgreSQL connection of a node with certificates,
//! done here rather than in pgwire.
//!
//! ```text
//!  first byte 0x16 ──► TLS handshake (PostgreSQL 17's direct TLS; ALPN "postgresql")
//!  else read exactly 8 bytes:
//!    SSLRequest   ──► 'S', TLS handshake
//!    GSSENCRequest ─► 'N' (once), read the next 8 bytes
//!    anything else ─► plaintext: a cancel request is served, a startup
//!                     message is refused with FATAL 28000 (`on_startup`)
//!  then the protocol's messages, over pgwire's handlers
//! ```
//!
//! Why not pgwire's `process_socket`: it reads the `SSLRequest` through a
//! buffered codec and, once the handshake is done, replays whatever else
//! that read took in as if it had come over TLS. A man in the middle could
//! append a plaintext startup message and query behind a real client's
//! `SSLRequest`, and they would run as a TLS client's (PostgreSQL's
//! CVE-2021-23214). Here every byte before the handshake is read from the
//! socket itself, exactly as many as the request holds: whatever follows
//! it goes to the TLS handshake, which refuses it.
//!
//! Negotiation and handshake together get [`tls::HANDSHAKE_TIMEOUT`]; a
//! failure is logged and counted as a `handshake` refusal of the `pg`
//! listener.

use std::io;
use std::net::SocketAddr;

use futures::StreamExt;
use pgwire::api::{ClientInfo, DefaultClient, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{MaybeTls, PgWireMessageServerCodec, process_error, process_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, FramedParts};

use crate::tls;

/// The length and code of `SSLRequest` (PostgreSQL protocol, "Message Formats").
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// The length and code of `GSSENCRequest`.
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
/// The first byte of a TLS handshake record: a client that starts TLS at once.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The ALPN protocol a direct-TLS client must name (PostgreSQL 17 requires it,
/// so that a TLS client of another protocol is not taken for one).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";
/// How long a connection may take from TLS to its startup message being
/// answered, as pgwire allows.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What negotiation left: a TLS stream, or a plaintext one with the first
/// 8 bytes it sent (already read).
enum Negotiated {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Plaintext(TcpStream, [u8; 8]),
}

/// Serves one connection of a node with certificates until it ends.
pub(super) async fn serve<H: PgWireServerHandlers>(
    socket: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    handlers: H,
) -> io::Result<()> {
    let negotiated = match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, negotiate(socket, &acceptor)).await {
        Ok(Ok(negotiated)) => negotiated,
        Ok(Err(error)) => {
            tracing::warn!(%peer, listener = "pg", %error, "TLS negotiation failed: connection closed");
            tls::count_refused(tls::Listener::Pg, tls::Refusal::Handshake);
            return Ok(());
        }
        Err(_) => {
            tracing::warn!(%peer, listener = "pg", "no TLS handshake within {:?}: connection closed", tls::HANDSHAKE_TIMEOUT);
            tls::count_refused(tls::Listener::Pg, tls::Refusal::Handshake);
            return Ok(());
        }
    };
    let (stream, read, secure) = match negotiated {
        Negotiated::Tls(stream) => (MaybeTls::Tls(stream), Vec::new(), true),
        Negotiated::Plaintext(socket, read) => (MaybeTls::Plain(socket), read.to_vec(), false),
    };
    let mut parts = FramedParts::new(stream, PgWireMessageServerCodec::new(DefaultClient::new(peer, secure)));
    // Only ever bytes of a plaintext connection, handed over as read.
    parts.read_buf.extend_from_slice(&read);
    let mut socket = Framed::from_parts(parts);
    socket.set_state(PgWireConnectionState::AwaitingStartup);

    // pgwire's own message loop (`process_socket`), after negotiation.
    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    let startup_deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        let message = if starting {
            match tokio::time::timeout_at(startup_deadline, socket.next()).await {
                Ok(message) => message,
                Err(_) => return Ok(()),
            }
        } else {
            socket.next().await
        };
        let Some(Ok(message)) = message else { return Ok(()) };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let wait_for_sync = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let is_cancel_request = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let answered = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await;
        if let Err(mut error) = answered {
            errors.on_error(&socket, &mut error);
            let is_fatal = error.is_fatal();
            process_error(&mut socket, error, wait_for_sync).await?;
            if is_fatal {
                return Ok(());
            }
        }
        if is_cancel_request {
            return Ok(());
        }
    }
}

/// Reads the client's negotiation requests, straight from the socket, and
/// does the TLS handshake if it asks for TLS.
async fn negotiate(mut socket: TcpStream, acceptor: &TlsAcceptor) -> io::Result<Negotiated> {
    let mut first = [0u8; 1];
    if socket.peek(&mut first).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before saying anything"));
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        let stream = acceptor.accept(socket).await?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "direct TLS without the ALPN protocol postgresql"));
        }
        return Ok(Negotiated::Tls(Box::new(stream)));
    }
    let mut gssenc_refused = false;
    loop {
        // An unbuffered socket: this reads these 8 bytes and not one more.
        let mut request = [0u8; 8];
        socket.read_exact(&mut request).await?;
        if request == SSL_REQUEST {
            socket.write_all(b"S").await?;
            return Ok(Negotiated::Tls(Box::new(acceptor.accept(socket).await?)));
        }
        if request == GSSENC_REQUEST && !gssenc_refused {
            // No GSSAPI encryption: 'N', and the client may ask for TLS next.
            socket.write_all(b"N").await?;
            gssenc_refused = true;
            continue;
        }
        return Ok(Negotiated::Plaintext(socket, request));
    }
}
