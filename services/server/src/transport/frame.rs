//! The wire format: length-prefixed, version-tagged, postcard-encoded frames.
//!
//! ```text
//!  ┌─────────────────┬──────────────┬────────────────────────────────────┐
//!  │ length: u32, BE │ version: u8  │ body: postcard(Frame)              │
//!  └─────────────────┴──────────────┴────────────────────────────────────┘
//!    length counts the version tag and the body: 1 ..= FRAME_BYTES_MAX
//! ```
//!
//! The first frame of a connection is [`Frame::Hello`], naming the dialing
//! node and its cluster; every later frame is a [`Frame::Batch`] of envelopes,
//! all from that node. A connection carries one direction of one node pair:
//! the receiver writes at most one frame, the [`Frame::Welcome`] that
//! accepts a hello of version 18 or later.
//!
//! The version tag is in every frame, not only in the hello, so that a node
//! can refuse a frame it cannot read before decoding it. A node speaks
//! every version from [`PROTOCOL_VERSION_MIN`] to [`PROTOCOL_VERSION`]; the
//! hello's tag is the version of the whole connection, and a later frame
//! with another tag is refused: two versions are never mixed on one
//! connection.
//!
//! **Negotiation.** The dialer says hello in the newest version it speaks.
//! A receiver that speaks it answers with a welcome naming the versions it
//! speaks, and the connection is up. One that does not closes the
//! connection (version 17 and earlier refuse every other tag that way,
//! without a word), and the dialer, seeing it closed before a welcome, says
//! hello again one version lower, down to the oldest it speaks. A hello of
//! version 17 gets no welcome: the connection is up once it is written, as
//! it always was. So a node of version N+1 joins a cluster of version N,
//! and speaks N to its nodes, and N+1 to the nodes upgraded like it.
//!
//! | version | what changed on the wire |
//! |---|---|
//! | 17 | a handover message that tells its receiver to keep the leadership (R22); the oldest version spoken |
//! | 18 | the welcome: a receiver accepts a hello of version 18 in writing, naming the versions it speaks |
//!
//! Bodies of every other frame are encoded alike in versions 17 and 18. A
//! later version that changes a message encodes it for the version of each
//! connection, and sends a new kind of message only on connections of a
//! version that has it.

use std::borrow::Cow;

use geodb_geo::NodeId;
use geodb_txn::NodeMessage;
use serde::{Deserialize, Serialize};

/// The newest version of this wire format, the one a node speaks unless a
/// peer is older.
pub const PROTOCOL_VERSION: u8 = 18;

/// The oldest version a node still speaks: a frame with a tag outside
/// `PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION` is refused.
pub const PROTOCOL_VERSION_MIN: u8 = 17;

/// The first version whose receiver answers a hello with a welcome.
pub(super) const WELCOME_SINCE: u8 = 18;

/// Longest frame, counting the version tag and the body: a snapshot travels
/// in chunks of `paxos::Config::snapshot_chunk_bytes` (4 MiB), a catch-up
/// reply holds at most 64 slots, and a peer must not make a node buffer
/// gigabytes on the strength of a length prefix.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

/// Bytes of the length prefix.
pub(super) const LENGTH_PREFIX_BYTES: usize = 4;

const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize, "the length prefix is a u32");

/// A frame body.
///
/// The batch is a `Cow` so that the sender encodes a borrowed slice and the
/// receiver decodes an owned vector with the same type (postcard's encoding
/// of a slice and of a vector are the same).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum Frame<'a> {
    /// The first frame on each connection: who dials, in which cluster.
    Hello { from: NodeId, cluster: u64 },
    /// Envelopes from the hello's node, in the order they were sent.
    Batch(Cow<'a, [NodeMessage]>),
    /// The receiver's answer to a hello of version [`WELCOME_SINCE`] or
    /// later that it accepted: who it is, and the versions it speaks.
    Welcome { from: NodeId, oldest: u8, newest: u8 },
}

/// An encoded frame, length prefix included, and how many envelopes it carries.
#[derive(Debug)]
pub(super) struct Encoded {
    pub bytes: Vec<u8>,
    pub envelopes: usize,
}

/// Encodes one frame of `version` with its prefix and tag. `None` if it
/// would be longer than `frame_bytes_max` (or cannot be encoded at all,
/// which serde-derived types never do).
pub(super) fn encode(frame: &Frame<'_>, version: u8, frame_bytes_max: usize) -> Option<Vec<u8>> {
    debug_assert!((PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&version));
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    bytes.push(version);
    let mut bytes = postcard::to_extend(frame, bytes).ok()?;
    let length = bytes.len() - LENGTH_PREFIX_BYTES;
    if length > frame_bytes_max {
        return None;
    }
    let length = u32::try_from(length).ok()?;
    bytes[..LENGTH_PREFIX_BYTES].copy_from_slice(&length.to_be_bytes());
    Some(bytes)
}

/// Encodes `envelopes` as few batch frames of `version` as fit in
/// `frame_bytes_max` each, in order. An envelope too long for a frame of its
/// own is left out and counted in the second result.
pub(super) fn encode_batches(envelopes: &[NodeMessage], version: u8, frame_bytes_max: usize) -> (Vec<Encoded>, usize) {
    let mut frames = Vec::new();
    let mut too_long = 0;
    split_into(envelopes, version, frame_bytes_max, &mut frames, &mut too_long);
    (frames, too_long)
}

/// Halves a batch until each half fits: one encoding in the common case,
/// `O(n log n)` only when a frame would be too long.
fn split_into(
    envelopes: &[NodeMessage],
    version: u8,
    frame_bytes_max: usize,
    frames: &mut Vec<Encoded>,
    too_long: &mut usize,
) {
    if envelopes.is_empty() {
        return;
    }
    if let Some(bytes) = encode(&Frame::Batch(Cow::Borrowed(envelopes)), version, frame_bytes_max) {
        frames.push(Encoded { bytes, envelopes: envelopes.len() });
        return;
    }
    if envelopes.len() == 1 {
        *too_long += 1;
        return;
    }
    let (front, back) = envelopes.split_at(envelopes.len() / 2);
    split_into(front, version, frame_bytes_max, frames, too_long);
    split_into(back, version, frame_bytes_max, frames, too_long);
}

/// Decodes a frame body of `version` (what follows the version tag).
/// Trailing bytes are an error: a body is exactly one frame. A welcome is
/// not a frame of version 17.
pub(super) fn decode(version: u8, body: &[u8]) -> Result<Frame<'static>, String> {
    let (frame, rest) = postcard::take_from_bytes::<Frame<'static>>(body).map_err(|error| error.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the frame", rest.len()));
    }
    if matches!(frame, Frame::Welcome { .. }) && version < WELCOME_SINCE {
        return Err(format!("a welcome in a frame of version {version}"));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use geodb_geo::paxos::{Ballot, Envelope, GroupId, Message, Slot, Value};

    use super::*;

    fn heartbeat(seq: u64) -> NodeMessage {
        NodeMessage::paxos(Envelope {
            group: GroupId(7),
            from: NodeId(1),
            to: NodeId(2),
            message: Message::Heartbeat { ballot: Ballot::new(3, NodeId(1)), seq, chosen: Slot(seq) },
        })
    }

    fn body(bytes: &[u8]) -> &[u8] {
        let length = u32::from_be_bytes(bytes[..LENGTH_PREFIX_BYTES].try_into().unwrap()) as usize;
        assert_eq!(length, bytes.len() - LENGTH_PREFIX_BYTES);
        assert_eq!(bytes[LENGTH_PREFIX_BYTES], PROTOCOL_VERSION);
        &bytes[LENGTH_PREFIX_BYTES + 1..]
    }

    const V: u8 = PROTOCOL_VERSION;

    #[test]
    fn frames_round_trip() {
        let hello = Frame::Hello { from: NodeId(4), cluster: 99 };
        assert_eq!(decode(V, body(&encode(&hello, V, FRAME_BYTES_MAX).unwrap())).unwrap(), hello);
        let welcome = Frame::Welcome { from: NodeId(5), oldest: PROTOCOL_VERSION_MIN, newest: V };
        assert_eq!(decode(V, body(&encode(&welcome, V, FRAME_BYTES_MAX).unwrap())).unwrap(), welcome);

        let envelopes: Vec<NodeMessage> = (0..10).map(heartbeat).collect();
        let (frames, too_long) = encode_batches(&envelopes, V, FRAME_BYTES_MAX);
        assert_eq!((frames.len(), frames[0].envelopes, too_long), (1, 10, 0));
        assert_eq!(decode(V, body(&frames[0].bytes)).unwrap(), Frame::Batch(Cow::Owned(envelopes)));
    }

    #[test]
    fn long_batches_are_split_in_order_and_oversized_envelopes_left_out() {
        let one = encode(&Frame::Batch(Cow::Borrowed(&[heartbeat(0)])), V, FRAME_BYTES_MAX).unwrap();
        let max = 3 * (one.len() - LENGTH_PREFIX_BYTES);
        let mut envelopes: Vec<NodeMessage> = (0..10).map(heartbeat).collect();
        let big = Value::Batch(vec![vec![0; 2 * max]]);
        envelopes[4].body = geodb_txn::Body::Paxos {
            group: GroupId(7),
            message: Message::Accept { ballot: Ballot::new(1, NodeId(1)), slot: Slot(1), value: big, chosen: Slot(0) },
        };
        let (frames, too_long) = encode_batches(&envelopes, V, max);
        assert_eq!(too_long, 1);
        let mut decoded = Vec::new();
        for frame in &frames {
            assert!(frame.bytes.len() - LENGTH_PREFIX_BYTES <= max);
            let Frame::Batch(batch) = decode(V, body(&frame.bytes)).unwrap() else { panic!("a batch") };
            assert_eq!(batch.len(), frame.envelopes);
            decoded.extend(batch.into_owned());
        }
        envelopes.remove(4);
        assert_eq!(decoded, envelopes);
    }

    #[test]
    fn garbage_and_trailing_bytes_do_not_decode() {
        assert!(decode(V, &[]).is_err());
        assert!(decode(V, &[0xff; 32]).is_err());
        let hello = encode(&Frame::Hello { from: NodeId(1), cluster: 1 }, V, FRAME_BYTES_MAX).unwrap();
        let mut trailing = body(&hello).to_vec();
        trailing.push(0);
        assert!(decode(V, &trailing).is_err());
    }

    /// Version 17's frames are version 18's but for the welcome, which
    /// version 17 does not have: a body reads the same under either tag,
    /// and the tag is the only byte that differs.
    #[test]
    fn versions_17_and_18_differ_only_in_the_tag_and_the_welcome() {
        assert_eq!((PROTOCOL_VERSION_MIN, PROTOCOL_VERSION, WELCOME_SINCE), (17, 18, 18));
        let hello = Frame::Hello { from: NodeId(4), cluster: 99 };
        let (old, new) = (encode(&hello, 17, FRAME_BYTES_MAX).unwrap(), encode(&hello, 18, FRAME_BYTES_MAX).unwrap());
        assert_eq!((old[LENGTH_PREFIX_BYTES], new[LENGTH_PREFIX_BYTES]), (17, 18));
        assert_eq!(old[LENGTH_PREFIX_BYTES + 1..], new[LENGTH_PREFIX_BYTES + 1..]);
        assert_eq!(decode(17, &old[LENGTH_PREFIX_BYTES + 1..]).unwrap(), hello);
        let envelopes: Vec<NodeMessage> = (0..3).map(heartbeat).collect();
        let (old, _) = encode_batches(&envelopes, 17, FRAME_BYTES_MAX);
        let (new, _) = encode_batches(&envelopes, 18, FRAME_BYTES_MAX);
        assert_eq!(old[0].bytes[LENGTH_PREFIX_BYTES + 1..], new[0].bytes[LENGTH_PREFIX_BYTES + 1..]);
        let welcome = encode(&Frame::Welcome { from: NodeId(5), oldest: 17, newest: 18 }, 18, FRAME_BYTES_MAX).unwrap();
        assert!(decode(17, &welcome[LENGTH_PREFIX_BYTES + 1..]).is_err(), "no welcome in version 17");
    }

    /// The bytes of a hello and of a batch in version 17, as release 17
    /// (commit ab3ac01) writes and reads them: a change to a frame or to a
    /// message that would make this release misread that one, or be
    /// misread by it, fails here.
    #[test]
    fn version_17_frames_are_byte_for_byte_release_17s() {
        let hello = encode(&Frame::Hello { from: NodeId(4), cluster: 300 }, 17, FRAME_BYTES_MAX).unwrap();
        assert_eq!(hello, [0, 0, 0, 5, 17, 0, 4, 0xac, 0x02]);
        let (batch, _) = encode_batches(&[heartbeat(5)], 17, FRAME_BYTES_MAX);
        // Length, tag, `Batch`, one envelope: from 1, to 2, its clock
        // reading (physical 0, logical 0), `Paxos` of group 7, `Heartbeat` (ballot 3 of node
        // 1, seq 5, chosen 5).
        assert_eq!(batch[0].bytes, [0, 0, 0, 14, 17, 1, 1, 1, 2, 0, 0, 0, 7, 5, 3, 1, 5, 5]);
    }
}
