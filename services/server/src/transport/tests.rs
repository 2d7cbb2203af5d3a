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
    let (regions, latency) = topology(node_regions, rtt_ms);
    let (listeners, peers) = bind_all(regions.keys()).await;
    let mut nodes = Vec::new();
    for (listener, node) in listeners.into_iter().zip(regions.keys()) {
        let (sender, inbound) = mpsc::channel(INBOUND_QUEUE_MAX);
        let config = config(node.0, &peers, &regions, &latency, latency_scale);
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

/// Waits for the peer to close a raw connection (end of stream or reset).
async fn assert_closed_by_peer(stream: &mut TcpStream, what: &str) {
    let mut buffer = [0u8; 64];
    match tokio::time::timeout(WAIT_MAX, stream.read(&mut buffer)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(_)) => panic!("{what}: the receiver wrote to the connection"),
        Err(_) => panic!("{what}: the connection was not closed within {WAIT_MAX:?}"),
    }
}

fn hello(from: u64, cluster: u64) -> Vec<u8> {
    frame::encode(&Frame::Hello { from: NodeId(from), cluster }, FRAME_BYTES_MAX).unwrap()
}

fn batch(envelopes: &[NodeMessage]) -> Vec<u8> {
    frame::encode(&Frame::Batch(Cow::Borrowed(envelopes)), FRAME_BYTES_MAX).unwrap()
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
    let wrong_version = vec![0, 0, 0, 2, PROTOCOL_VERSION + 1, 0];
    let garbage = [5u32.to_be_bytes().as_slice(), &[PROTOCOL_VERSION], &[0xff; 4]].concat();
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("wrong version", wrong_version),
        ("hello, then garbage", [hello(1, CLUSTER_ID), garbage].concat()),
        ("a length over the bound", too_long),
        ("a hello of a megabyte", long_hello),
        ("plain text", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("another cluster", hello(1, CLUSTER_ID + 1)),
        ("a hello from a stranger", hello(99, CLUSTER_ID)),
        ("a batch before the hello", batch(&[envelope(1, 2, 1)])),
        ("an empty frame", vec![0, 0, 0, 0]),
    ];
    for (what, bytes) in hostile {
        let mut stream = TcpStream::connect(target).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        assert_closed_by_peer(&mut stream, what).await;
    }
    let rejected = nodes[1].transport.stats().rejected;
    let expected = BTreeMap::from([
        (RejectReason::TooLong, 3),
        (RejectReason::Version, 1),
        (RejectReason::Cluster, 1),
        (RejectReason::Decode, 2),
        (RejectReason::Handshake, 2),
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
