//! The receiving side: the accept loop and one task per inbound connection.
//!
//! A connection must open with a hello from a configured peer of the same
//! cluster within [`HELLO_TIMEOUT`]; then each batch it carries is checked
//! (fault rules, destination, sender) and handed to the inbound in order.
//! Whatever a peer sends, the worst outcome is its own connection closed: a
//! refused frame is logged at warn and counted (`RejectReason`), and bytes
//! are read as they arrive, so a length prefix alone allocates nothing.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::frame::{self, FRAME_BYTES_MAX, Frame, LENGTH_PREFIX_BYTES, PROTOCOL_VERSION};
use super::{RejectReason, Shared};

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
/// Largest allocation made up front for a frame's body; a longer body
/// grows its buffer as its bytes arrive.
const BODY_PREALLOCATE_BYTES_MAX: usize = 64 << 10;

/// Why a connection ended.
#[derive(Debug)]
enum Ended {
    /// The peer closed it, or it broke (possibly mid-frame).
    Closed(io::Error),
    /// A frame was refused.
    Refused(RejectReason, String),
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

/// Serves one inbound connection until it ends.
async fn serve(shared: Arc<Shared>, stream: TcpStream, address: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let Err(ended) = receive(&shared, &mut reader).await;
    match ended {
        Ended::Closed(error) => tracing::debug!(node = %shared.node, %address, %error, "inbound connection closed"),
        Ended::Refused(reason, why) => {
            tracing::warn!(node = %shared.node, %address, reason = reason.label(), why, "frame refused: closing");
            shared.count_rejected(reason);
        }
    }
}

/// Checks the hello, then delivers batches until the connection ends.
async fn receive<R: AsyncRead + Unpin>(shared: &Shared, reader: &mut R) -> Result<Infallible, Ended> {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(shared, reader)).await {
        Ok(frame) => frame?,
        Err(_) => return Err(Ended::Refused(RejectReason::Handshake, format!("no hello within {HELLO_TIMEOUT:?}"))),
    };
    let from = match hello {
        Frame::Hello { cluster, .. } if cluster != shared.cluster => {
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
        Frame::Hello { from, .. } if !shared.peers.contains(&from) => {
            return Err(Ended::Refused(RejectReason::Handshake, format!("hello from {from}, not a peer")));
        }
        Frame::Hello { from, .. } => from,
        Frame::Batch(_) => return Err(Ended::Refused(RejectReason::Handshake, "a batch before the hello".into())),
    };
    tracing::debug!(node = %shared.node, peer = %from, "inbound connection from peer");
    loop {
        match read_frame(shared, reader).await? {
            Frame::Batch(envelopes) => shared.deliver(from, envelopes.into_owned()),
            Frame::Hello { .. } => {
                return Err(Ended::Refused(RejectReason::Handshake, format!("a second hello from {from}")));
            }
        }
    }
}

/// Reads one frame: the length, the version tag, then the body, refusing
/// each as soon as it is wrong (before reading what follows).
async fn read_frame<R: AsyncRead + Unpin>(shared: &Shared, reader: &mut R) -> Result<Frame<'static>, Ended> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    reader.read_exact(&mut prefix).await?;
    let length = u32::from_be_bytes(prefix) as usize;
    if length == 0 {
        return Err(Ended::Refused(RejectReason::Decode, "an empty frame has no version tag".into()));
    }
    if length > FRAME_BYTES_MAX {
        return Err(Ended::Refused(
            RejectReason::TooLong,
            format!("a frame of {length} bytes, at most {FRAME_BYTES_MAX}"),
        ));
    }
    let version = reader.read_u8().await?;
    if version != PROTOCOL_VERSION {
        return Err(Ended::Refused(
            RejectReason::Version,
            format!("protocol version {version}, expected {PROTOCOL_VERSION}"),
        ));
    }
    let body_bytes = length - 1;
    let mut body = Vec::with_capacity(body_bytes.min(BODY_PREALLOCATE_BYTES_MAX));
    (&mut *reader).take(body_bytes as u64).read_to_end(&mut body).await?;
    if body.len() < body_bytes {
        return Err(Ended::Closed(io::Error::new(io::ErrorKind::UnexpectedEof, "closed in the middle of a frame")));
    }
    shared.count_received(LENGTH_PREFIX_BYTES + length);
    frame::decode(&body).map_err(|why| Ended::Refused(RejectReason::Decode, why))
}
