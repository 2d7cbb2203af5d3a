//! One peer's writer: the emulated delay, batching, and the connection with
//! its reconnect backoff.
//!
//! ```text
//!  peer queue ──recv──► delay queue ──due──► cut? ──► one frame ──► connection
//!  (PEER_QUEUE_MAX)     (≤ PEER_QUEUE_MAX,   drop     per wake-up    (dialed here,
//!                        FIFO, sent_at+delay)                         hello first)
//! ```
//!
//! The writer is a single task looping over six events, most urgent first:
//! the peer closed the connection; it is time to dial again; it is time to
//! probe a connection that stepped down (below); the probe ended; envelopes
//! became due; envelopes arrived in the queue. Due envelopes go out together as
//! one frame (split only if longer than [`FRAME_BYTES_MAX`]), which is the
//! batching: the longer a write takes, the more the next one carries.
//!
//! Without a connection, due envelopes are dropped, not kept: Paxos resends
//! what it still needs with fresh state, and keeping stale messages would
//! only delay them. Dialing happens on its own schedule — at once at start,
//! then with exponential backoff after each failure — so the first envelopes
//! after a peer comes back find a connection ready. Over TLS, a dial is
//! the TCP connection, the handshake (the peer must present the certificate
//! of the node dialed) and the hello, all within [`CONNECT_TIMEOUT`].
//!
//! A dial says hello in the newest version the node speaks and, from
//! version 18 on, waits for the peer's welcome. A peer that closes the
//! connection instead does not speak that version (or refused the hello for
//! another reason, which the older hello meets too): the writer says hello
//! again at once, one version lower, down to the oldest it speaks, and the
//! connection speaks the version that was welcomed (or, at version 17,
//! written). The next dial after a lost connection starts from the newest
//! again, so a peer restarted on a newer version is spoken to in it; and
//! since a live peer of the newest version may close a hello for a reason
//! of its own (a certificate reload in the middle of the dial, too many
//! connections), a connection that stepped down is probed every
//! [`STEPPED_DOWN_PROBE_INTERVAL`]: a fresh dial in the newest version, run
//! beside the writer's other work (the old connection keeps carrying
//! envelopes meanwhile), that replaces it if welcomed.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use geodb_geo::NodeId;
use geodb_txn::NodeMessage;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

use super::frame::{self, FRAME_BYTES_MAX, Frame, WELCOME_SINCE};
use super::reader::{self, Ended, HELLO_BYTES_MAX};
use super::{DropReason, PEER_QUEUE_MAX, PeerVersion, Shared};

/// First wait before dialing again after a failure; doubles per failure.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait between two dials: a peer that comes back is reached within
/// about a second, and a dead one costs one failed dial a second.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A connection that lived this long was healthy: its loss starts the
/// backoff afresh. Shorter-lived ones (a peer that accepts, then refuses the
/// hello) keep doubling it, so a refusing peer is not dialed in a hot loop.
const CONNECTION_HEALTHY_AFTER: Duration = RECONNECT_BACKOFF_MAX;
/// Longest dial in one version, hello and welcome included: a black-holed
/// address must not hold the writer (and its queue) for the kernel's SYN
/// timeout of minutes. A dial that steps down makes a second attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a connection that speaks an older version than this node's
/// newest, because the peer closed a newer hello, tries the newest again.
/// A peer of the older release logs and counts each try as a refused frame.
const STEPPED_DOWN_PROBE_INTERVAL: Duration =
    if cfg!(test) { Duration::from_millis(200) } else { Duration::from_secs(30) };
/// Longest write of one frame: longer means the peer stopped reading, and
/// the connection is given up. A full 64 MiB frame takes well under a second
/// on any link the transport is run over.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// An envelope in a peer's queue, stamped when `send` took it: the emulated
/// delay runs from then.
#[derive(Debug)]
pub(super) struct Queued {
    pub sent_at: std::time::Instant,
    pub envelope: NodeMessage,
}

/// One direction of a connection, TCP or TLS over it.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

struct Connection {
    /// Only read to notice the peer closing: past its welcome (read by the
    /// dial), the receiver never writes.
    read: ReadHalf,
    write: WriteHalf,
    /// The wire version every frame on it is encoded in.
    version: u8,
    since: Instant,
}

/// Why a dial failed.
enum DialError {
    /// No connection, or it broke: the peer is down or unreachable.
    Io(std::io::Error),
    /// The TLS handshake failed: the peer's certificate is not the node's
    /// dialed (or not signed by the CA), or the peer refused this node's.
    Tls(std::io::Error),
    /// The peer closed the connection on the hello instead of welcoming it:
    /// it does not speak the hello's version, or refused the hello.
    Refused,
    /// The peer answered the hello with something other than its welcome.
    Handshake(String),
    /// This node cannot dial it at all (no TLS name for it).
    Config(String),
}

impl From<std::io::Error> for DialError {
    fn from(error: std::io::Error) -> Self {
        DialError::Io(error)
    }
}

pub(super) struct PeerWriter {
    shared: Arc<Shared>,
    peer: NodeId,
    address: SocketAddr,
    delay: Duration,
    queue: mpsc::Receiver<Queued>,
    /// Taken from the queue, waiting out `delay`; FIFO, at most
    /// `PEER_QUEUE_MAX` (the queue is not drained while it is full).
    delayed: VecDeque<Queued>,
    connection: Option<Connection>,
    /// The wait before the next dial after a failure, before jitter.
    backoff: Duration,
    /// When to dial next while there is no connection.
    dial_at: Instant,
    dials: u64,
    /// When to try the newest version again on a connection that stepped
    /// down; `None` when it speaks the newest, there is none, or a probe is
    /// under way.
    probe_at: Option<Instant>,
    /// The probe under way, polled beside the writer's other work.
    probing: Option<Dialing>,
}

impl PeerWriter {
    pub fn new(
        shared: Arc<Shared>,
        peer: NodeId,
        address: SocketAddr,
        delay: Duration,
        queue: mpsc::Receiver<Queued>,
    ) -> Self {
        PeerWriter {
            shared,
            peer,
            address,
            delay,
            queue,
            delayed: VecDeque::new(),
            connection: None,
            backoff: RECONNECT_BACKOFF_MIN,
            dial_at: Instant::now(),
            dials: 0,
            probe_at: None,
            probing: None,
        }
    }

    /// Runs until the transport is dropped (its queue closes) or aborted.
    pub async fn run(mut self) {
        // Dial before taking anything from the queue, so that the first
        // envelopes find the connection up rather than being dropped.
        self.dial().await;
        let mut arrived = Vec::new();
        loop {
            let room = PEER_QUEUE_MAX.saturating_sub(self.delayed.len());
            let next_due = self.delayed.front().map(|queued| self.due(queued));
            let connected = self.connection.is_some();
            // What is already due is done without a timer, which would round
            // up to its next tick: no emulated delay must mean none.
            let now = Instant::now();
            if !connected && self.dial_at <= now {
                self.dial().await;
                continue;
            }
            if next_due.is_some_and(|due| due <= now) {
                self.write_due().await;
                continue;
            }
            tokio::select! {
                biased;
                () = closed_by_peer(&mut self.connection), if connected => {
                    self.lose("closed by the peer");
                }
                () = sleep_until(self.dial_at), if !connected => {
                    self.dial().await;
                }
                () = sleep_until(self.probe_at.unwrap_or(self.dial_at)), if connected && self.probe_at.is_some() => {
                    self.probe();
                }
                outcome = poll_dialing(&mut self.probing), if self.probing.is_some() => {
                    self.probing = None;
                    self.probed(outcome);
                }
                // Emulated delays need sub-millisecond precision: tokio's
                // timer would add up to a millisecond to each (`timer`).
                () = super::timer::sleep_until(next_due.unwrap_or(self.dial_at).into_std()), if next_due.is_some() => {
                    self.write_due().await;
                }
                received = self.queue.recv_many(&mut arrived, room), if room > 0 => {
                    if received == 0 {
                        return;
                    }
                    self.delayed.extend(arrived.drain(..));
                }
            }
        }
    }

    fn due(&self, queued: &Queued) -> Instant {
        Instant::from_std(queued.sent_at) + self.delay
    }

    /// Writes every envelope whose delay has expired, as one frame.
    async fn write_due(&mut self) {
        let now = Instant::now();
        let due = self.delayed.iter().take_while(|queued| self.due(queued) <= now).count();
        let batch: Vec<NodeMessage> = self.delayed.drain(..due).map(|queued| queued.envelope).collect();
        // Checked again at expiry: a rule added while the batch was delayed
        // must stop it, as a cut cable stops what is on the wire.
        if self.shared.cut(self.shared.node, self.peer) {
            self.shared.count_dropped(DropReason::Fault, batch.len());
            return;
        }
        let Some(connection) = self.connection.as_mut() else {
            self.shared.count_dropped(DropReason::Disconnected, batch.len());
            return;
        };
        let (frames, too_long) = frame::encode_batches(&batch, connection.version, FRAME_BYTES_MAX);
        if too_long > 0 {
            tracing::warn!(peer = %self.peer, envelopes = too_long, "envelope longer than a frame: dropped");
            self.shared.count_dropped(DropReason::TooLong, too_long);
        }
        let mut unsent: usize = frames.iter().map(|frame| frame.envelopes).sum();
        for frame in frames {
            // The flush pushes TLS records out at once (a no-op on TCP).
            let write = async {
                connection.write.write_all(&frame.bytes).await?;
                connection.write.flush().await
            };
            match timeout(WRITE_TIMEOUT, write).await {
                Ok(Ok(())) => {
                    self.shared.count_sent(frame.bytes.len());
                    unsent -= frame.envelopes;
                }
                Ok(Err(error)) => {
                    self.shared.count_dropped(DropReason::Disconnected, unsent);
                    self.lose(&format!("write failed: {error}"));
                    return;
                }
                Err(_) => {
                    self.shared.count_dropped(DropReason::Disconnected, unsent);
                    self.lose(&format!("write took longer than {WRITE_TIMEOUT:?}"));
                    return;
                }
            }
        }
    }

    /// Dials the peer and says hello, in the newest version both speak; on
    /// failure, schedules the next dial.
    async fn dial(&mut self) {
        if self.dials > 0 {
            self.shared.count_reconnect();
        }
        self.dials += 1;
        let (oldest, newest) = (*self.shared.versions.start(), *self.shared.versions.end());
        let mut version = newest;
        loop {
            let error = match self.dial_in(version).await {
                Ok((connection, welcomed)) => {
                    tracing::info!(node = %self.shared.node, peer = %self.peer, address = %self.address, version, "connected");
                    self.connection = Some(connection);
                    self.shared.set_connected(self.peer, Some(PeerVersion { speaking: version, newest: welcomed }));
                    self.probe_at = (version < newest).then(|| Instant::now() + STEPPED_DOWN_PROBE_INTERVAL);
                    return;
                }
                Err(error) => error,
            };
            if matches!(error, DialError::Refused) && version > oldest {
                tracing::info!(
                    node = %self.shared.node,
                    peer = %self.peer,
                    version,
                    "the peer closed the connection on a hello of this version: saying hello in the one before"
                );
                version -= 1;
                continue;
            }
            self.report(&error, version);
            self.back_off();
            return;
        }
    }

    /// Logs (and counts, for TLS) why a dial in `version` failed.
    fn report(&self, error: &DialError, version: u8) {
        let (node, peer, address) = (self.shared.node, self.peer, self.address);
        match error {
            DialError::Refused => {
                tracing::warn!(%node, %peer, %address, version, "peer refused the hello");
            }
            DialError::Io(error) => tracing::debug!(%peer, %address, %error, "cannot connect"),
            DialError::Tls(error) => {
                tracing::warn!(%node, %peer, %address, %error, "peer refused: TLS handshake failed");
                crate::tls::count_refused(crate::tls::Listener::Peer, crate::tls::Refusal::Handshake);
            }
            DialError::Handshake(why) => tracing::warn!(%node, %peer, %address, why, "peer answered the hello wrongly"),
            DialError::Config(why) => tracing::error!(%node, %peer, why, "cannot dial the peer"),
        }
    }

    /// Starts a dial in the newest version beside a connection that stepped
    /// down; the writer goes on meanwhile ([`PeerWriter::probed`]).
    fn probe(&mut self) {
        self.probe_at = None;
        self.probing = Some(self.dial_in(*self.shared.versions.end()));
    }

    /// The probe's outcome: a welcomed connection replaces the one that
    /// stepped down; anything else leaves it, until the next probe.
    fn probed(&mut self, outcome: Result<(Connection, Option<u8>), DialError>) {
        let newest = *self.shared.versions.end();
        match outcome {
            Ok((connection, welcomed)) => {
                tracing::info!(node = %self.shared.node, peer = %self.peer, version = newest, "the peer speaks the newest version now: connection replaced");
                // The old connection closes as it is dropped. What it
                // carried is on its way, and may arrive after what the new
                // one carries first, as across a reconnection.
                self.connection = Some(connection);
                self.shared.set_connected(self.peer, Some(PeerVersion { speaking: newest, newest: welcomed }));
            }
            Err(error) => {
                if !matches!(error, DialError::Refused) {
                    self.report(&error, newest);
                }
                self.probe_at = Some(Instant::now() + STEPPED_DOWN_PROBE_INTERVAL);
            }
        }
    }

    /// One dial with a hello of `version`, within [`CONNECT_TIMEOUT`]: the
    /// connection and, if the version has one, the newest version the
    /// peer's welcome names. The future owns what it needs, so that a
    /// probe runs beside the writer's other work.
    fn dial_in(&self, version: u8) -> Dialing {
        let (address, shared, peer) = (self.address, self.shared.clone(), self.peer);
        Box::pin(async move {
            match timeout(CONNECT_TIMEOUT, dial_once(shared, peer, address, version)).await {
                Ok(Ok((read, write, newest))) => {
                    Ok((Connection { read, write, version, since: Instant::now() }, newest))
                }
                Ok(Err(error)) => Err(error),
                Err(_) => Err(DialError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))),
            }
        })
    }

    /// Drops the connection and schedules a dial.
    fn lose(&mut self, why: &str) {
        self.shared.set_connected(self.peer, None);
        self.probe_at = None;
        self.probing = None;
        self.shared.inbound.link_lost(self.peer);
        if let Some(connection) = self.connection.take()
            && connection.since.elapsed() >= CONNECTION_HEALTHY_AFTER
        {
            self.backoff = RECONNECT_BACKOFF_MIN;
        }
        tracing::info!(node = %self.shared.node, peer = %self.peer, why, "connection lost");
        self.back_off();
    }

    /// Waits between half and all of the backoff (jitter spreads the dials
    /// of many writers that lost their peer at the same moment), then doubles it.
    fn back_off(&mut self) {
        let wait = self.backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        self.dial_at = Instant::now() + wait;
        self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// A dial in progress: the connection and the newest version the peer's
/// welcome names, or why not.
type Dialing = Pin<Box<dyn Future<Output = Result<(Connection, Option<u8>), DialError>> + Send>>;

/// Connects to `peer` at `address` (over TLS if the node has certificates)
/// and says hello in `version`; from version 18 on, reads the welcome.
async fn dial_once(
    shared: Arc<Shared>,
    peer: NodeId,
    address: SocketAddr,
    version: u8,
) -> Result<(ReadHalf, WriteHalf, Option<u8>), DialError> {
    let hello = Frame::Hello { from: shared.node, cluster: shared.cluster };
    let hello = frame::encode(&hello, version, FRAME_BYTES_MAX).expect("a hello is a few bytes");
    let tls = match &shared.tls {
        None => None,
        Some(tls) => match tls.peer_server_name(peer.0) {
            Ok(name) => Some((tls.connector(), name)),
            Err(error) => return Err(DialError::Config(format!("no TLS name for the peer: {error}"))),
        },
    };
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut read, mut write): (ReadHalf, WriteHalf) = match tls {
        None => {
            let (read, write) = stream.into_split();
            (Box::new(read), Box::new(write))
        }
        Some((connector, name)) => {
            let stream = connector.connect(name, stream).await.map_err(DialError::Tls)?;
            let (read, write) = tokio::io::split(stream);
            (Box::new(read), Box::new(write))
        }
    };
    write.write_all(&hello).await?;
    write.flush().await?;
    if version < WELCOME_SINCE {
        return Ok((read, write, None));
    }
    let over_tls = shared.tls.is_some();
    match reader::read_frame(&shared, &mut read, HELLO_BYTES_MAX, &(version..=version)).await {
        Ok((_, Frame::Welcome { from, newest, .. })) if from == peer => Ok((read, write, Some(newest))),
        Ok((_, frame)) => Err(DialError::Handshake(format!("{frame:?} instead of a welcome from {peer}"))),
        Err(Ended::Closed(error))
            if matches!(
                error.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            Err(DialError::Refused)
        }
        // TLS 1.3: the dialer's handshake ends before the peer has
        // checked its certificate; a refusal arrives as an alert here.
        Err(Ended::Closed(error)) if over_tls && error.kind() == std::io::ErrorKind::InvalidData => {
            Err(DialError::Tls(error))
        }
        Err(Ended::Closed(error)) => Err(DialError::Io(error)),
        Err(Ended::Refused(_, why) | Ended::Unauthenticated(why)) => Err(DialError::Handshake(why)),
    }
}

/// The outcome of the dial under way; pending while there is none.
async fn poll_dialing(dialing: &mut Option<Dialing>) -> Result<(Connection, Option<u8>), DialError> {
    match dialing.as_mut() {
        Some(dialing) => dialing.await,
        None => std::future::pending().await,
    }
}

/// Resolves when the peer closes the connection (or sends anything, which a
/// receiver never does past its welcome, read by the dial); pending while
/// there is none.
async fn closed_by_peer(connection: &mut Option<Connection>) {
    let Some(connection) = connection.as_mut() else {
        return std::future::pending().await;
    };
    let mut probe = [0u8; 1];
    let _ = connection.read.read(&mut probe).await;
}
