//! The receiving side: the accept loop and one task per inbound connection.
//!
//! A connection must open with a hello from a configured peer of the same
//! cluster within [`HELLO_TIMEOUT`]; then each batch it carries is checked
//! (fault rules, destination, sender) and handed to the inbound in order.
//! Over TLS, the handshake comes first (the peer's certificate must chain
//! to the cluster CA), and the hello's node must be the one the
//! certificate was made for; every reload of the certificates closes the
//! inbound connections, which their peers dial again and which are then
//! checked against the new ones.
//! Whatever a peer sends, the worst outcome is its own connection closed: a
//! refused frame is logged at warn and counted (`RejectReason`), and bytes
//! are read as they arrive, so a length prefix alone allocates nothing.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use rustls_pki_types::CertificateDer;

use super::frame::{self, FRAME_BYTES_MAX, Frame, LENGTH_PREFIX_BYTES, WELCOME_SINCE};
use super::{RejectReason, Shared};
use crate::tls;

/// Most inbound connections at once: one per peer, plus the stale ones of
/// peers that reconnected, with a wide margin; past it new ones are closed.
const INBOUND_CONNECTIONS_MAX: usize = 1024;
/// How long a new connection may take to say hello before it is closed.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed accept (out of file descriptors, say), so that
/// the loop does not spin on a persistent error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Read buffer per connection: many small frames per system call.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Longest hello (or welcome) frame read: its version tag, variant tag and
/// two varint `u64`s take at most 22 bytes. A connection is read with this bound until
/// its hello (and, over TLS, its certificate) is checked, so that a
/// stranger cannot make the node buffer a frame of `FRAME_BYTES_MAX`.
pub(super) const HELLO_BYTES_MAX: usize = 64;
const _: () = assert!(1 + 1 + 2 * 10 <= HELLO_BYTES_MAX && HELLO_BYTES_MAX <= FRAME_BYTES_MAX);
/// Largest allocation made up front for a frame's body; a longer body
/// grows its buffer as its bytes arrive.
const BODY_PREALLOCATE_BYTES_MAX: usize = 64 << 10;

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// The peer closed it, or it broke (possibly mid-frame).
    Closed(io::Error),
    /// A frame was refused.
    Refused(RejectReason, String),
    /// The peer's certificate is not the node's its hello names.
    Unauthenticated(String),
}

impl From<io::Error> for Ended {
    fn from(error: io::Error) -> Self {
        Ended::Closed(error)
    }
}

/// Accepts connections until aborted; aborting it aborts every connection task.
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "inbound connection task failed");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, address)) => {
                    if connections.len() >= INBOUND_CONNECTIONS_MAX {
                        tracing::warn!(%address, "too many inbound connections: closing the new one");
                        continue;
                    }
                    connections.spawn(serve(shared.clone(), stream, address));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
}

/// Serves one inbound connection until it ends: over TLS if the node has
/// certificates, the handshake first.
async fn serve(shared: Arc<Shared>, stream: TcpStream, address: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = shared.tls.clone() else {
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
        let Err(ended) = receive(&shared, &mut reader, None).await;
        return report(&shared, address, ended);
    };
    // Watched from before the handshake: one a reload overtakes was
    // checked against the certificates of before.
    let mut reloads = tls.reloads();
    let stream = match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, tls.peer_acceptor().accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::warn!(node = %shared.node, %address, %error, "peer refused: TLS handshake failed");
            return tls::count_refused(tls::Listener::Peer, tls::Refusal::Handshake);
        }
        Err(_) => {
            tracing::warn!(node = %shared.node, %address, "peer refused: no TLS handshake within {:?}", tls::HANDSHAKE_TIMEOUT);
            return tls::count_refused(tls::Listener::Peer, tls::Refusal::Handshake);
        }
    };
    let certificate = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).cloned();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    tokio::select! {
        received = receive(&shared, &mut reader, certificate.as_ref()) => {
            let Err(ended) = received;
            report(&shared, address, ended);
        }
        _ = reloads.changed() => {
            tracing::info!(node = %shared.node, %address, "certificates reloaded: closing an inbound peer connection, to check it again when it reconnects");
        }
    }
}

/// Logs and counts how a connection ended.
fn report(shared: &Shared, address: SocketAddr, ended: Ended) {
    match ended {
        Ended::Closed(error) => tracing::debug!(node = %shared.node, %address, %error, "inbound connection closed"),
        Ended::Refused(reason, why) => {
            tracing::warn!(node = %shared.node, %address, reason = reason.label(), why, "frame refused: closing");
            shared.count_rejected(reason);
        }
        Ended::Unauthenticated(why) => {
            tracing::warn!(node = %shared.node, %address, why, "peer refused: closing before its first batch");
            tls::count_refused(tls::Listener::Peer, tls::Refusal::Identity);
        }
    }
}

/// Checks the hello (and, over TLS, that `certificate` is the hello's
/// node's), welcomes it if its version has welcomes, then delivers batches
/// of the hello's version until the connection ends.
async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    stream: &mut S,
    certificate: Option<&CertificateDer<'_>>,
) -> Result<Infallible, Ended> {
    let spoken = shared.versions.clone();
    let (version, hello) =
        match tokio::time::timeout(HELLO_TIMEOUT, read_frame(shared, stream, HELLO_BYTES_MAX, &spoken)).await {
            Ok(frame) => frame?,
            Err(_) => {
                return Err(Ended::Refused(RejectReason::Handshake, format!("no hello within {HELLO_TIMEOUT:?}")));
            }
        };
    let Frame::Hello { from, cluster } = hello else {
        return Err(Ended::Refused(RejectReason::Handshake, "a batch before the hello".into()));
    };
    // Who the peer is comes first: a node that passes for another must be
    // told nothing about this cluster, not even that its identity differs.
    if let Some(tls) = &shared.tls {
        tls.check_peer(certificate, from.0)
            .map_err(|why| Ended::Unauthenticated(format!("hello from {from}: {why}")))?;
    }
    if cluster != shared.cluster {
        return Err(Ended::Refused(
            RejectReason::Cluster,
            format!(
                "cluster identity {cluster}, expected {}: another cluster, or a node whose [cluster] \
                 configuration places shards differently (regions, shards_per_region, home, survival, \
                 nodes, zones, latency)",
                shared.cluster
            ),
        ));
    }
    if !shared.peers.contains(&from) {
        return Err(Ended::Refused(RejectReason::Handshake, format!("hello from {from}, not a peer")));
    }
    if version >= WELCOME_SINCE {
        let welcome = Frame::Welcome { from: shared.node, oldest: *spoken.start(), newest: *spoken.end() };
        let welcome = frame::encode(&welcome, version, HELLO_BYTES_MAX).expect("a welcome is a few bytes");
        let write = async {
            stream.write_all(&welcome).await?;
            stream.flush().await
        };
        match tokio::time::timeout(HELLO_TIMEOUT, write).await {
            Ok(written) => written?,
            Err(_) => {
                return Err(Ended::Closed(io::Error::new(io::ErrorKind::TimedOut, "the welcome could not be written")));
            }
        }
    }
    tracing::debug!(node = %shared.node, peer = %from, version, "inbound connection from peer");
    loop {
        match read_frame(shared, stream, FRAME_BYTES_MAX, &(version..=version)).await?.1 {
            Frame::Batch(envelopes) => shared.deliver(from, envelopes.into_owned()),
            Frame::Hello { .. } => {
                return Err(Ended::Refused(RejectReason::Handshake, format!("a second hello from {from}")));
            }
            Frame::Welcome { .. } => {
                return Err(Ended::Refused(RejectReason::Handshake, format!("a welcome from {from}, which dialed")));
            }
        }
    }
}

/// Reads one frame of at most `bytes_max` bytes and of a version in
/// `versions`: the length, the version tag, then the body, refusing each as
/// soon as it is wrong (before reading what follows). Its version and the
/// frame.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    shared: &Shared,
    reader: &mut R,
    bytes_max: usize,
    versions: &std::ops::RangeInclusive<u8>,
) -> Result<(u8, Frame<'static>), Ended> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    reader.read_exact(&mut prefix).await?;
    let length = u32::from_be_bytes(prefix) as usize;
    if length == 0 {
        return Err(Ended::Refused(RejectReason::Decode, "an empty frame has no version tag".into()));
    }
    if length > bytes_max {
        return Err(Ended::Refused(RejectReason::TooLong, format!("a frame of {length} bytes, at most {bytes_max}")));
    }
    let version = reader.read_u8().await?;
    if !versions.contains(&version) {
        let expected = if versions.start() == versions.end() {
            format!("expected {}", versions.start())
        } else {
            format!("this node speaks {} to {}", versions.start(), versions.end())
        };
        return Err(Ended::Refused(RejectReason::Version, format!("protocol version {version}, {expected}")));
    }
    let body_bytes = length - 1;
    let mut body = Vec::with_capacity(body_bytes.min(BODY_PREALLOCATE_BYTES_MAX));
    (&mut *reader).take(body_bytes as u64).read_to_end(&mut body).await?;
    if body.len() < body_bytes {
        return Err(Ended::Closed(io::Error::new(io::ErrorKind::UnexpectedEof, "closed in the middle of a frame")));
    }
    shared.count_received(LENGTH_PREFIX_BYTES + length);
    let frame = frame::decode(version, &body).map_err(|why| Ended::Refused(RejectReason::Decode, why))?;
    Ok((version, frame))
}
