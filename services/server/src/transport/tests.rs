//! Transports on 127.0.0.1: delivery and order, hostile peers, reconnection,
//! fault rules, and the emulated wide-area delay.
//!
//! No test decides an outcome by sleeping: each waits for what it expects
//! with a generous bound, and timing is only ever asserted as a lower bound.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geodb_geo::paxos::{Ballot, Envelope, GroupId, Message, Slot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::frame::{self, Frame};
use super::*;

/// Generous: a loaded two-core machine builds and tests in parallel.
const WAIT_MAX: Duration = Duration::from_secs(30);
const CLUSTER_ID: u64 = 42;

fn region(name: &str) -> Region {
    Region(name.to_string())
}

/// A heartbeat numbered `seq`, so that order can be checked.
fn envelope(from: u64, to: u64, seq: u64) -> NodeMessage {
    NodeMessage::paxos(Envelope {
        group: GroupId(seq % 3),
        from: NodeId(from),
        to: NodeId(to),
        message: Message::Heartbeat { ballot: Ballot::new(1, NodeId(from)), seq, chosen: Slot(seq) },
    })
}

fn seq_of(envelope: &NodeMessage) -> u64 {
    match &envelope.body {
        geodb_txn::Body::Paxos { message: Message::Heartbeat { seq, .. }, .. } => *seq,
        other => panic!("not a test heartbeat: {other:?}"),
    }
}

/// One region per node name, and a matrix over them with `rtt_ms` between
/// distinct regions and nothing inside one.
fn topology(node_regions: &[&str], rtt_ms: u64) -> (BTreeMap<NodeId, Region>, LatencyMatrix) {
    let regions: BTreeMap<NodeId, Region> =
        node_regions.iter().enumerate().map(|(index, name)| (NodeId(index as u64 + 1), region(name))).collect();
    let distinct: Vec<Region> = regions.values().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let rtt_us = (0..distinct.len())
        .map(|i| (0..distinct.len()).map(|j| if i == j { 0 } else { rtt_ms * 1_000 }).collect())
        .collect();
    (regions, LatencyMatrix::new(distinct, rtt_us).unwrap())
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (listener, address)
}

/// A listener per node, and the nodes' addresses (the peers of a config).
async fn bind_all(nodes: impl Iterator<Item = &NodeId>) -> (Vec<TcpListener>, BTreeMap<NodeId, SocketAddr>) {
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for node in nodes {
        let (listener, address) = bind().await;
        listeners.push(listener);
        peers.insert(*node, address);
    }
    (listeners, peers)
}

fn config(
    node: u64,
    peers: &BTreeMap<NodeId, SocketAddr>,
    regions: &BTreeMap<NodeId, Region>,
    latency: &LatencyMatrix,
    latency_scale: f64,
) -> TransportConfig {
    TransportConfig {
        node: NodeId(node),
        cluster: CLUSTER_ID,
        peers: peers.clone(),
        regions: regions.clone(),
        latency: latency.clone(),
        latency_scale,
        tls: None,
        protocol_version_max: PROTOCOL_VERSION,
    }
}

struct TestNode {
    transport: Arc<Transport>,
    inbound: mpsc::Receiver<NodeMessage>,
    address: SocketAddr,
}

impl TestNode {
    /// The next envelope received, or a failed test after `WAIT_MAX`.
    async fn receive(&mut self) -> NodeMessage {
        match tokio::time::timeout(WAIT_MAX, self.inbound.recv()).await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => panic!("the inbound channel closed"),
            Err(_) => panic!("nothing received within {WAIT_MAX:?}"),
        }
    }

    /// The next `count` envelopes, grouped by sender, each sender's in order.
    async fn receive_by_sender(&mut self, count: usize) -> BTreeMap<u64, Vec<u64>> {
        let mut by_sender: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for _ in 0..count {
            let envelope = self.receive().await;
            by_sender.entry(envelope.from.0).or_default().push(seq_of(&envelope));
        }
        by_sender
    }

    fn dropped(&self, reason: DropReason) -> u64 {
        self.transport.stats().dropped[&reason]
    }
}

/// Starts one transport per entry of `node_regions` (nodes 1, 2, ...), all
/// obeying `faults`, with tokio channels as inbounds.
async fn start_cluster(node_regions: &[&str], rtt_ms: u64, latency_scale: f64, faults: Arc<Faults>) -> Vec<TestNode> {
    let newest = vec![PROTOCOL_VERSION; node_regions.len()];
    start_speaking(node_regions, rtt_ms, latency_scale, faults, &newest).await
}

/// [`start_cluster`] with each node speaking at most the version `newest`
/// gives it.
async fn start_speaking(
    node_regions: &[&str],
    rtt_ms: u64,
    latency_scale: f64,
    faults: Arc<Faults>,
    newest: &[u8],
) -> Vec<TestNode> {
    let (regions, latency) = topology(node_regions, rtt_ms);
    let (listeners, peers) = bind_all(regions.keys()).await;
    let mut nodes = Vec::new();
    for ((listener, node), newest) in listeners.into_iter().zip(regions.keys()).zip(newest) {
        let (sender, inbound) = mpsc::channel(INBOUND_QUEUE_MAX);
        let mut config = config(node.0, &peers, &regions, &latency, latency_scale);
        config.protocol_version_max = *newest;
        let transport = Transport::start(config, listener, faults.clone(), sender).unwrap();
        nodes.push(TestNode { transport, inbound, address: peers[node] });
    }
    nodes
}

/// Polls `condition` until it holds, failing the test after `WAIT_MAX`.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {WAIT_MAX:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for the peer to close a raw connection (end of stream or reset),
/// having written nothing but, if `welcomed`, its welcome (of which a reset
/// may leave only part to read).
async fn assert_closed_by_peer(stream: &mut TcpStream, what: &str, welcomed: bool) {
    let mut written = Vec::new();
    let read = tokio::time::timeout(WAIT_MAX, async {
        let mut buffer = [0u8; 64];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => written.extend_from_slice(&buffer[..n]),
            }
        }
    });
    assert!(read.await.is_ok(), "{what}: the connection was not closed within {WAIT_MAX:?}");
    if welcomed {
        assert!(welcome(2).starts_with(&written), "{what}: the receiver wrote something else than its welcome");
    } else {
        assert!(written.is_empty(), "{what}: the receiver wrote to the connection");
    }
}

fn hello(from: u64, cluster: u64) -> Vec<u8> {
    hello_in(PROTOCOL_VERSION, from, cluster)
}

fn hello_in(version: u8, from: u64, cluster: u64) -> Vec<u8> {
    frame::encode(&Frame::Hello { from: NodeId(from), cluster }, version, FRAME_BYTES_MAX).unwrap()
}

/// The welcome node `from` answers a hello of the newest version with.
fn welcome(from: u64) -> Vec<u8> {
    let welcome = Frame::Welcome { from: NodeId(from), oldest: PROTOCOL_VERSION_MIN, newest: PROTOCOL_VERSION };
    frame::encode(&welcome, PROTOCOL_VERSION, FRAME_BYTES_MAX).unwrap()
}

fn batch(envelopes: &[NodeMessage]) -> Vec<u8> {
    batch_in(PROTOCOL_VERSION, envelopes)
}

fn batch_in(version: u8, envelopes: &[NodeMessage]) -> Vec<u8> {
    frame::encode(&Frame::Batch(Cow::Borrowed(envelopes)), version, FRAME_BYTES_MAX).unwrap()
}

#[test]
fn reasons_index_their_counters() {
    for (index, reason) in DropReason::ALL.into_iter().enumerate() {
        assert_eq!(reason as usize, index);
    }
    for (index, reason) in RejectReason::ALL.into_iter().enumerate() {
        assert_eq!(reason as usize, index);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_in_fifo_order_per_pair() {
    const PER_PAIR: u64 = 500;
    let (regions, latency) = topology(&["us-east", "us-east", "us-east"], 0);
    let faults = Arc::new(Faults::new());
    let (listeners, peers) = bind_all(regions.keys()).await;
    // std channels, received on plain threads as the Paxos driver will.
    let mut transports = Vec::new();
    let mut receivers = Vec::new();
    for (listener, node) in listeners.into_iter().zip(regions.keys()) {
        let (sender, inbound) = inbound_channel();
        let config = config(node.0, &peers, &regions, &latency, 1.0);
        transports.push(Transport::start(config, listener, faults.clone(), sender).unwrap());
        receivers.push(std::thread::spawn(move || {
            let mut by_sender: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for _ in 0..2 * PER_PAIR {
                let envelope = inbound.recv_timeout(WAIT_MAX).expect("an envelope within the bound");
                by_sender.entry(envelope.from.0).or_default().push(seq_of(&envelope));
            }
            by_sender
        }));
    }
    // Each node sends from a plain thread, in batches of 1 to 7 envelopes
    // that interleave its two destinations.
    let senders: Vec<_> = transports
        .iter()
        .enumerate()
        .map(|(index, transport)| {
            let transport = transport.clone();
            let from = index as u64 + 1;
            std::thread::spawn(move || {
                let others: Vec<u64> = (1..=3).filter(|node| *node != from).collect();
                let mut all = Vec::new();
                for seq in 0..PER_PAIR {
                    for to in &others {
                        all.push(envelope(from, *to, seq));
                    }
                }
                let mut rest = all.as_slice();
                let mut size = 1;
                while !rest.is_empty() {
                    let (batch, tail) = rest.split_at(size.min(rest.len()));
                    transport.send(batch.to_vec());
                    rest = tail;
                    size = size % 7 + 1;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    for (index, receiver) in receivers.into_iter().enumerate() {
        let node = index as u64 + 1;
        let by_sender = tokio::task::spawn_blocking(move || receiver.join().unwrap()).await.unwrap();
        let expected: Vec<u64> = (0..PER_PAIR).collect();
        for from in (1..=3).filter(|from| *from != node) {
            assert_eq!(by_sender[&from], expected, "n{from} → n{node} out of order or incomplete");
        }
    }
    for transport in &transports {
        let stats = transport.stats();
        assert!(stats.dropped.values().all(|count| *count == 0), "{stats:?}");
        assert_eq!(stats.delivered, 2 * PER_PAIR);
        assert!(stats.frames_sent > 0 && stats.bytes_sent > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_their_connection_and_good_ones_keep_working() {
    let mut nodes = start_cluster(&["us-east", "us-east"], 0, 1.0, Arc::new(Faults::new())).await;
    let target = nodes[1].address;
    nodes[0].transport.send(vec![envelope(1, 2, 0)]);
    assert_eq!(seq_of(&nodes[1].receive().await), 0);

    let too_long = (FRAME_BYTES_MAX as u32 + 1).to_be_bytes().to_vec();
    // Within the bound of a frame, far beyond a hello's: refused before
    // its body is read, not buffered until the hello times out.
    let long_hello = [(1u32 << 20).to_be_bytes().as_slice(), &[PROTOCOL_VERSION]].concat();
    let newer_version = vec![0, 0, 0, 2, PROTOCOL_VERSION + 1, 0];
    let older_version = vec![0, 0, 0, 2, PROTOCOL_VERSION_MIN - 1, 0];
    let garbage = [5u32.to_be_bytes().as_slice(), &[PROTOCOL_VERSION], &[0xff; 4]].concat();
    let (old, new) = (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION);
    // (what, bytes, whether the hello is welcomed before the refusal)
    let hostile: Vec<(&str, Vec<u8>, bool)> = vec![
        ("a newer version", newer_version, false),
        ("an older version than any spoken", older_version, false),
        ("versions mixed on one connection", [hello_in(old, 1, CLUSTER_ID), batch_in(new, &[])].concat(), false),
        ("versions mixed the other way", [hello_in(new, 1, CLUSTER_ID), batch_in(old, &[])].concat(), true),
        ("hello, then garbage", [hello(1, CLUSTER_ID), garbage].concat(), true),
        ("a welcome from the dialer", [hello(1, CLUSTER_ID), welcome(1)].concat(), true),
        ("a length over the bound", too_long, false),
        ("a hello of a megabyte", long_hello, false),
        ("plain text", b"GET / HTTP/1.1\r\n\r\n".to_vec(), false),
        ("another cluster", hello(1, CLUSTER_ID + 1), false),
        ("a hello from a stranger", hello(99, CLUSTER_ID), false),
        ("a batch before the hello", batch(&[envelope(1, 2, 1)]), false),
        ("an empty frame", vec![0, 0, 0, 0], false),
    ];
    for (what, bytes, welcomed) in hostile {
        let mut stream = TcpStream::connect(target).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        assert_closed_by_peer(&mut stream, what, welcomed).await;
    }
    let rejected = nodes[1].transport.stats().rejected;
    let expected = BTreeMap::from([
        (RejectReason::TooLong, 3),
        (RejectReason::Version, 4),
        (RejectReason::Cluster, 1),
        (RejectReason::Decode, 2),
        (RejectReason::Handshake, 3),
    ]);
    assert_eq!(rejected, expected);

    // The transport's own connection was never disturbed.
    nodes[0].transport.send(vec![envelope(1, 2, 1), envelope(1, 2, 2)]);
    assert_eq!(seq_of(&nodes[1].receive().await), 1);
    assert_eq!(seq_of(&nodes[1].receive().await), 2);
    assert_eq!(nodes[0].transport.stats().reconnects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_for_another_node_or_from_another_sender_are_dropped() {
    let mut nodes = start_cluster(&["us-east", "us-east", "us-east"], 0, 1.0, Arc::new(Faults::new())).await;
    let mut stream = TcpStream::connect(nodes[1].address).await.unwrap();
    let envelopes = [envelope(1, 3, 0), envelope(3, 2, 1), envelope(1, 2, 2)];
    stream.write_all(&[hello(1, CLUSTER_ID), batch(&envelopes)].concat()).await.unwrap();
    let received = nodes[1].receive().await;
    assert_eq!((received.from, seq_of(&received)), (NodeId(1), 2));
    // Counts are flushed after the batch is handed over.
    eventually("one envelope for n3 and one claiming to be from n3 are dropped", || {
        nodes[1].dropped(DropReason::WrongDestination) == 1 && nodes[1].dropped(DropReason::WrongSender) == 1
    })
    .await;

    // On send: an envelope to an unknown node, one not from this node, and
    // one to itself, which goes straight to the inbound.
    nodes[0].transport.send(vec![envelope(1, 9, 0), envelope(2, 3, 0), envelope(1, 1, 7)]);
    assert_eq!(nodes[0].dropped(DropReason::UnknownPeer), 1);
    assert_eq!(nodes[0].dropped(DropReason::WrongSender), 1);
    assert_eq!(seq_of(&nodes[0].receive().await), 7);

    nodes[0].transport.shutdown();
    nodes[0].transport.send(vec![envelope(1, 2, 0), envelope(1, 3, 0)]);
    assert_eq!(nodes[0].dropped(DropReason::Shutdown), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_started_late_gets_messages_after_reconnect() {
    let (regions, latency) = topology(&["us-east", "us-east"], 0);
    // Reserve an address for node 2, and leave nothing listening on it yet.
    let late_address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (listener, early_address) = bind().await;
    let peers = BTreeMap::from([(NodeId(1), early_address), (NodeId(2), late_address)]);
    let faults = Arc::new(Faults::new());
    let (sender, _inbound) = mpsc::channel(INBOUND_QUEUE_MAX);
    let early = Transport::start(config(1, &peers, &regions, &latency, 1.0), listener, faults.clone(), sender).unwrap();

    early.send(vec![envelope(1, 2, 0)]);
    eventually("an envelope to a peer that is down is dropped", || {
        early.stats().dropped[&DropReason::Disconnected] >= 1
    })
    .await;

    let listener = TcpListener::bind(late_address).await.unwrap();
    let (sender, mut inbound) = mpsc::channel(INBOUND_QUEUE_MAX);
    let _late = Transport::start(config(2, &peers, &regions, &latency, 1.0), listener, faults, sender).unwrap();
    // Paxos resends until heard; so does the test.
    let deadline = Instant::now() + WAIT_MAX;
    let mut seq = 1;
    let received = loop {
        assert!(Instant::now() < deadline, "nothing arrived after the peer started");
        early.send(vec![envelope(1, 2, seq)]);
        seq += 1;
        if let Ok(Some(envelope)) = tokio::time::timeout(Duration::from_millis(50), inbound.recv()).await {
            break envelope;
        }
    };
    assert_eq!(received.from, NodeId(1));
    assert!(seq_of(&received) >= 1, "what was sent while the peer was down stays dropped");
    assert!(early.stats().reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_drop_rule_cuts_one_direction_until_cleared() {
    let faults = Arc::new(Faults::new());
    let mut nodes = start_cluster(&["us-east", "us-east", "us-east"], 0, 1.0, faults.clone()).await;
    faults.add(FaultRule::DropLink { from: NodeId(1), to: NodeId(2) }).unwrap();

    nodes[0].transport.send(vec![envelope(1, 2, 1), envelope(1, 3, 1)]);
    nodes[1].transport.send(vec![envelope(2, 1, 1)]);
    assert_eq!(nodes[0].dropped(DropReason::Fault), 1, "n1 → n2 is cut on send");
    assert_eq!(nodes[2].receive_by_sender(1).await, BTreeMap::from([(1, vec![1])]), "n1 → n3 works");
    assert_eq!(nodes[0].receive_by_sender(1).await, BTreeMap::from([(2, vec![1])]), "n2 → n1 works");

    faults.clear();
    nodes[0].transport.send(vec![envelope(1, 2, 2)]);
    assert_eq!(nodes[1].receive_by_sender(1).await, BTreeMap::from([(1, vec![2])]), "healed; nothing sneaked through");
    for node in &nodes[1..] {
        assert_eq!(node.dropped(DropReason::Fault), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_partition_cuts_both_directions_across_it_until_cleared() {
    let faults = Arc::new(Faults::new());
    let mut nodes = start_cluster(&["us-east", "us-east", "eu-west"], 0, 1.0, faults.clone()).await;
    faults.add(FaultRule::PartitionRegions { regions: BTreeSet::from([region("eu-west")]) }).unwrap();
    let send_to_all = |nodes: &[TestNode], seq: u64| {
        for (index, node) in nodes.iter().enumerate() {
            let from = index as u64 + 1;
            let to_others = (1..=3).filter(|to| *to != from).map(|to| envelope(from, to, seq)).collect();
            node.transport.send(to_others);
        }
    };

    send_to_all(&nodes, 1);
    let cut: Vec<u64> = nodes.iter().map(|node| node.dropped(DropReason::Fault)).collect();
    assert_eq!(cut, [1, 1, 2], "only the links to and from eu-west are cut");
    assert_eq!(nodes[0].receive_by_sender(1).await, BTreeMap::from([(2, vec![1])]));
    assert_eq!(nodes[1].receive_by_sender(1).await, BTreeMap::from([(1, vec![1])]));

    faults.clear();
    send_to_all(&nodes, 2);
    assert_eq!(nodes[0].receive_by_sender(2).await, BTreeMap::from([(2, vec![2]), (3, vec![2])]));
    assert_eq!(nodes[1].receive_by_sender(2).await, BTreeMap::from([(1, vec![2]), (3, vec![2])]));
    assert_eq!(
        nodes[2].receive_by_sender(2).await,
        BTreeMap::from([(1, vec![2]), (2, vec![2])]),
        "nothing sent during the partition reaches eu-west after it heals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_node_neither_sends_nor_receives() {
    let faults = Arc::new(Faults::new());
    let mut nodes = start_cluster(&["us-east", "us-east", "us-east"], 0, 1.0, faults.clone()).await;
    faults.add(FaultRule::Isolate { node: NodeId(3) }).unwrap();
    nodes[0].transport.send(vec![envelope(1, 3, 1), envelope(1, 2, 1)]);
    nodes[2].transport.send(vec![envelope(3, 1, 1), envelope(3, 2, 1)]);
    assert_eq!(nodes[0].dropped(DropReason::Fault), 1);
    assert_eq!(nodes[2].dropped(DropReason::Fault), 2);
    assert_eq!(nodes[1].receive_by_sender(1).await, BTreeMap::from([(1, vec![1])]));

    faults.clear();
    nodes[0].transport.send(vec![envelope(1, 3, 2)]);
    assert_eq!(nodes[2].receive_by_sender(1).await, BTreeMap::from([(1, vec![2])]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_added_while_a_batch_is_delayed_stops_it() {
    let faults = Arc::new(Faults::new());
    // A one-way delay of 500 ms: ample time to add the rule in flight.
    let mut nodes = start_cluster(&["us-east", "eu-west"], 1_000, 1.0, faults.clone()).await;
    nodes[0].transport.send(vec![envelope(1, 2, 1)]);
    faults.add(FaultRule::DropLink { from: NodeId(1), to: NodeId(2) }).unwrap();
    // Dropped when its delay expires at the sender (or, had the machine
    // stalled past the delay, on receipt).
    eventually("the delayed envelope is dropped", || {
        nodes[0].dropped(DropReason::Fault) + nodes[1].dropped(DropReason::Fault) == 1
    })
    .await;

    faults.clear();
    nodes[0].transport.send(vec![envelope(1, 2, 2)]);
    assert_eq!(seq_of(&nodes[1].receive().await), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_area_delivery_takes_at_least_the_one_way_latency() {
    // A round trip of 1 s scaled by 0.1: 50 ms one way between the regions.
    const ONE_WAY: Duration = Duration::from_millis(50);
    let mut nodes = start_cluster(&["us-east", "eu-west", "us-east"], 1_000, 0.1, Arc::new(Faults::new())).await;
    for (from, to) in [(0, 1), (1, 0)] {
        let started = Instant::now();
        nodes[from].transport.send(vec![envelope(from as u64 + 1, to as u64 + 1, 1)]);
        let received = nodes[to].receive().await;
        let elapsed = started.elapsed();
        assert_eq!(seq_of(&received), 1);
        assert!(elapsed >= ONE_WAY, "n{} → n{} took {elapsed:?}, less than {ONE_WAY:?}", from + 1, to + 1);
    }
    // Inside one region the matrix says nothing, and nothing is waited.
    nodes[0].transport.send(vec![envelope(1, 3, 1)]);
    assert_eq!(seq_of(&nodes[2].receive().await), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_peer_queue_drops_instead_of_blocking() {
    // A long delay keeps everything in the peer's writer while we send.
    let nodes = start_cluster(&["us-east", "eu-west"], 20_000, 1.0, Arc::new(Faults::new())).await;
    let count = 3 * PEER_QUEUE_MAX as u64;
    nodes[0].transport.send((0..count).map(|seq| envelope(1, 2, seq)).collect());
    // At most the queue and the delay queue hold envelopes; the rest is dropped.
    assert!(nodes[0].dropped(DropReason::QueueFull) >= PEER_QUEUE_MAX as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_latency_scales_are_refused() {
    let (regions, latency) = topology(&["us-east", "eu-west"], 100);
    for scale in [-1.0, f64::NAN, f64::INFINITY, 1e300] {
        let (listener, address) = bind().await;
        let peers = BTreeMap::from([(NodeId(1), address), (NodeId(2), address)]);
        let (sender, _inbound) = mpsc::channel(1);
        let started =
            Transport::start(config(1, &peers, &regions, &latency, scale), listener, Arc::new(Faults::new()), sender);
        assert!(started.is_err(), "scale {scale} accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_reload_closes_inbound_peer_connections() {
    // Two nodes over mutual TLS, with certificates of one CA.
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::tls::CertsDir::new(dir.path());
    crate::tls::create_ca(&certs, false).unwrap();
    let (regions, latency) = topology(&["us-east", "us-east"], 0);
    let (listeners, peers) = bind_all(regions.keys()).await;
    let mut nodes = Vec::new();
    let mut tls = Vec::new();
    for (listener, node) in listeners.into_iter().zip(regions.keys()) {
        crate::tls::create_node(&certs, node.0, 1, &[], false).unwrap();
        let others: Vec<u64> = regions.keys().map(|other| other.0).filter(|other| *other != node.0).collect();
        let node_tls = crate::tls::Tls::open(dir.path(), node.0, 1, &others).unwrap();
        let (sender, inbound) = mpsc::channel(INBOUND_QUEUE_MAX);
        let mut config = config(node.0, &peers, &regions, &latency, 1.0);
        config.tls = Some(node_tls.clone());
        let transport = Transport::start(config, listener, Arc::new(Faults::new()), sender).unwrap();
        nodes.push(TestNode { transport, inbound, address: peers[node] });
        tls.push(node_tls);
    }
    nodes[0].transport.send(vec![envelope(1, 2, 0)]);
    assert_eq!(seq_of(&nodes[1].receive().await), 0);
    assert_eq!(nodes[0].transport.stats().reconnects, 0);

    // Node 2 reloads (the same files: what matters is that it reloaded).
    // Node 1's connection to it is closed, and node 1 dials again: the new
    // connection is checked against what node 2 holds now.
    tls[1].reload().unwrap();
    eventually("node 1 dials node 2 again", || nodes[0].transport.stats().reconnects >= 1).await;
    nodes[0].transport.send(vec![envelope(1, 2, 1)]);
    assert_eq!(seq_of(&nodes[1].receive().await), 1);
}

/// Every connection speaks the newest version both of its ends speak: a
/// node of the newest version steps down to the version of a node that
/// speaks only the one before (as a node of that version does: it refuses
/// the newer hello by closing, and never welcomes), in the same dial, and
/// the two exchange envelopes both ways; two nodes of the newest version
/// welcome each other and speak it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_speaks_the_newest_version_both_ends_speak() {
    let (old, new) = (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION);
    assert!(old < new, "a node speaks two versions");
    let regions = ["us-east", "us-east", "us-east"];
    // Node 3 is a node of the older version.
    let mut nodes = start_speaking(&regions, 0, 1.0, Arc::new(Faults::new()), &[new, new, old]).await;
    for (from, to) in [(1u64, 2u64), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)] {
        nodes[(from - 1) as usize].transport.send(vec![envelope(from, to, from * 10 + to)]);
    }
    for node in 1..=3u64 {
        let received = nodes[(node - 1) as usize].receive_by_sender(2).await;
        let expected: BTreeMap<u64, Vec<u64>> =
            (1..=3).filter(|from| *from != node).map(|from| (from, vec![from * 10 + node])).collect();
        assert_eq!(received, expected, "received by n{node}");
    }
    let version = |speaking, newest| PeerVersion { speaking, newest };
    let versions = |node: usize| nodes[node].transport.peer_versions();
    // Welcomes come only in the newer version.
    assert_eq!(versions(0), BTreeMap::from([(NodeId(2), version(new, Some(new))), (NodeId(3), version(old, None))]));
    assert_eq!(versions(1), BTreeMap::from([(NodeId(1), version(new, Some(new))), (NodeId(3), version(old, None))]));
    assert_eq!(versions(2), BTreeMap::from([(NodeId(1), version(old, None)), (NodeId(2), version(old, None))]));
    // The older node refused each newer node's first hello; the newer nodes
    // stepped down within their first dial and refused nothing, and the
    // older node's own connections, welcomed by no one, held from the first.
    assert_eq!(nodes[2].transport.stats().rejected[&RejectReason::Version], 2);
    for node in &nodes {
        let stats = node.transport.stats();
        assert_eq!(stats.reconnects, 0, "{stats:?}");
        assert!(stats.dropped.values().all(|count| *count == 0), "{stats:?}");
    }
    for node in &nodes[..2] {
        assert_eq!(node.transport.stats().rejected[&RejectReason::Version], 0);
    }
    assert_eq!((nodes[0].transport.versions(), nodes[2].transport.versions()), (old..=new, old..=old));

    // A raw hello of the newest version to the older node is refused
    // without a word, as that version does; to a newer one it is welcomed.
    let mut stream = TcpStream::connect(nodes[2].address).await.unwrap();
    stream.write_all(&hello(1, CLUSTER_ID)).await.unwrap();
    assert_closed_by_peer(&mut stream, "a newer hello to the older node", false).await;
    let mut stream = TcpStream::connect(nodes[1].address).await.unwrap();
    stream.write_all(&hello(1, CLUSTER_ID)).await.unwrap();
    let mut answer = vec![0; welcome(2).len()];
    tokio::time::timeout(WAIT_MAX, stream.read_exact(&mut answer)).await.unwrap().unwrap();
    assert_eq!(answer, welcome(2));
}

/// A configuration that asks for a version the node does not speak is
/// refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_outside_what_the_node_speaks_is_refused_at_start() {
    let (regions, latency) = topology(&["us-east"], 0);
    for newest in [PROTOCOL_VERSION_MIN - 1, PROTOCOL_VERSION + 1] {
        let (listener, address) = bind().await;
        let peers = BTreeMap::from([(NodeId(1), address)]);
        let mut config = config(1, &peers, &regions, &latency, 1.0);
        config.protocol_version_max = newest;
        let (sender, _inbound) = mpsc::channel(INBOUND_QUEUE_MAX);
        let refused = Transport::start(config, listener, Arc::new(Faults::new()), sender).err();
        assert!(refused.is_some_and(|error| error.to_string().contains("speaks")), "version {newest}");
    }
}

/// A connection that stepped down because a peer of the newest version
/// closed a hello for a reason of its own is probed in the newest version,
/// keeps carrying envelopes while a probe is refused, and is replaced once
/// the peer welcomes one. The peer here is played by hand: it closes the
/// first hello (18), takes the second (17), closes the first probe (18),
/// and welcomes the second, on which the next envelopes then arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stepped_down_moves_up_once_the_peer_welcomes_the_newest() {
    let (old, new) = (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION);
    let (regions, latency) = topology(&["us-east", "us-east"], 0);
    let (listener, address) = bind().await;
    let (peer_listener, peer_address) = bind().await;
    let peers = BTreeMap::from([(NodeId(1), address), (NodeId(2), peer_address)]);
    let (sender, _inbound) = mpsc::channel(INBOUND_QUEUE_MAX);
    let node = Transport::start(config(1, &peers, &regions, &latency, 1.0), listener, Arc::new(Faults::new()), sender)
        .unwrap();
    // The tag and body of the next frame on `stream`, within `WAIT_MAX`.
    async fn next_frame(stream: &mut TcpStream) -> (u8, Frame<'static>) {
        let read = async {
            let mut length = [0u8; 4];
            stream.read_exact(&mut length).await.unwrap();
            let mut bytes = vec![0u8; u32::from_be_bytes(length) as usize];
            stream.read_exact(&mut bytes).await.unwrap();
            (bytes[0], frame::decode(bytes[0], &bytes[1..]).unwrap())
        };
        tokio::time::timeout(WAIT_MAX, read).await.expect("a frame within the bound")
    }
    let (mut first, _) = tokio::time::timeout(WAIT_MAX, peer_listener.accept()).await.expect("a dial").unwrap();
    assert_eq!(next_frame(&mut first).await.0, new);
    drop(first);
    let (mut stepped_down, _) =
        tokio::time::timeout(WAIT_MAX, peer_listener.accept()).await.expect("a step down").unwrap();
    assert_eq!(next_frame(&mut stepped_down).await.0, old);
    eventually("stepped down to 17", || {
        node.peer_versions().get(&NodeId(2)) == Some(&PeerVersion { speaking: old, newest: None })
    })
    .await;
    let (mut refused, _) = tokio::time::timeout(WAIT_MAX, peer_listener.accept()).await.expect("a probe").unwrap();
    assert_eq!(next_frame(&mut refused).await.0, new);
    drop(refused);
    // Still carried at 17 while the probes go on.
    node.send(vec![envelope(1, 2, 6)]);
    let (tag, frame) = tokio::time::timeout(WAIT_MAX, next_frame(&mut stepped_down)).await.unwrap();
    assert_eq!((tag, frame), (old, Frame::Batch(Cow::Owned(vec![envelope(1, 2, 6)]))));
    let (mut probe, _) = tokio::time::timeout(WAIT_MAX, peer_listener.accept()).await.expect("a second probe").unwrap();
    assert_eq!(next_frame(&mut probe).await.0, new);
    probe.write_all(&welcome(2)).await.unwrap();
    eventually("the probed connection replaces the stepped-down one", || {
        node.peer_versions().get(&NodeId(2)) == Some(&PeerVersion { speaking: new, newest: Some(new) })
    })
    .await;
    node.send(vec![envelope(1, 2, 7)]);
    let (tag, frame) = tokio::time::timeout(WAIT_MAX, next_frame(&mut probe)).await.unwrap();
    assert_eq!((tag, frame), (new, Frame::Batch(Cow::Owned(vec![envelope(1, 2, 7)]))));
    // The stepped-down connection was closed by the node, and replaced, not
    // lost: one dial only.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT_MAX, stepped_down.read_to_end(&mut rest)).await;
    assert!(closed.is_ok_and(|read| read.is_ok()) && rest.is_empty(), "the old connection stays open or carried more");
    assert_eq!(node.stats().reconnects, 0);
    node.shutdown();
    assert!(node.peer_versions().is_empty() && !node.is_connected(NodeId(2)));
}
