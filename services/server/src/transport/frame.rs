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
//! all from that node. The receiver never writes: a connection carries one
//! direction of one node pair.
//!
//! The version tag is in every frame, not only in the hello, so that a node
//! can refuse a frame it cannot read before decoding it. A peer speaking
//! another version is refused, and its connection closed; two versions are
//! never mixed on one connection.

use std::borrow::Cow;

use geodb_geo::NodeId;
use geodb_txn::NodeMessage;
use serde::{Deserialize, Serialize};

/// The version of this wire format; a frame with another tag is refused.
pub const PROTOCOL_VERSION: u8 = 17;

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
}

/// An encoded frame, length prefix included, and how many envelopes it carries.
#[derive(Debug)]
pub(super) struct Encoded {
    pub bytes: Vec<u8>,
    pub envelopes: usize,
}

/// Encodes one frame with its prefix and tag. `None` if it would be longer
/// than `frame_bytes_max` (or cannot be encoded at all, which serde-derived
/// types never do).
pub(super) fn encode(frame: &Frame<'_>, frame_bytes_max: usize) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    bytes.push(PROTOCOL_VERSION);
    let mut bytes = postcard::to_extend(frame, bytes).ok()?;
    let length = bytes.len() - LENGTH_PREFIX_BYTES;
    if length > frame_bytes_max {
        return None;
    }
    let length = u32::try_from(length).ok()?;
    bytes[..LENGTH_PREFIX_BYTES].copy_from_slice(&length.to_be_bytes());
    Some(bytes)
}

/// Encodes `envelopes` as few batch frames as fit in `frame_bytes_max` each,
/// in order. An envelope too long for a frame of its own is left out and
/// counted in the second result.
pub(super) fn encode_batches(envelopes: &[NodeMessage], frame_bytes_max: usize) -> (Vec<Encoded>, usize) {
    let mut frames = Vec::new();
    let mut too_long = 0;
    split_into(envelopes, frame_bytes_max, &mut frames, &mut too_long);
    (frames, too_long)
}

/// Halves a batch until each half fits: one encoding in the common case,
/// `O(n log n)` only when a frame would be too long.
fn split_into(envelopes: &[NodeMessage], frame_bytes_max: usize, frames: &mut Vec<Encoded>, too_long: &mut usize) {
    if envelopes.is_empty() {
        return;
    }
    if let Some(bytes) = encode(&Frame::Batch(Cow::Borrowed(envelopes)), frame_bytes_max) {
        frames.push(Encoded { bytes, envelopes: envelopes.len() });
        return;
    }
    if envelopes.len() == 1 {
        *too_long += 1;
        return;
    }
    let (front, back) = envelopes.split_at(envelopes.len() / 2);
    split_into(front, frame_bytes_max, frames, too_long);
    split_into(back, frame_bytes_max, frames, too_long);
}

/// Decodes a frame body (what follows the version tag). Trailing bytes are
/// an error: a body is exactly one frame.
pub(super) fn decode(body: &[u8]) -> Result<Frame<'static>, String> {
    let (frame, rest) = postcard::take_from_bytes::<Frame<'static>>(body).map_err(|error| error.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the frame", rest.len()));
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

    #[test]
    fn frames_round_trip() {
        let hello = Frame::Hello { from: NodeId(4), cluster: 99 };
        assert_eq!(decode(body(&encode(&hello, FRAME_BYTES_MAX).unwrap())).unwrap(), hello);

        let envelopes: Vec<NodeMessage> = (0..10).map(heartbeat).collect();
        let (frames, too_long) = encode_batches(&envelopes, FRAME_BYTES_MAX);
        assert_eq!((frames.len(), frames[0].envelopes, too_long), (1, 10, 0));
        assert_eq!(decode(body(&frames[0].bytes)).unwrap(), Frame::Batch(Cow::Owned(envelopes)));
    }

    #[test]
    fn long_batches_are_split_in_order_and_oversized_envelopes_left_out() {
        let one = encode(&Frame::Batch(Cow::Borrowed(&[heartbeat(0)])), FRAME_BYTES_MAX).unwrap();
        let max = 3 * (one.len() - LENGTH_PREFIX_BYTES);
        let mut envelopes: Vec<NodeMessage> = (0..10).map(heartbeat).collect();
        let big = Value::Batch(vec![vec![0; 2 * max]]);
        envelopes[4].body = geodb_txn::Body::Paxos {
            group: GroupId(7),
            message: Message::Accept { ballot: Ballot::new(1, NodeId(1)), slot: Slot(1), value: big, chosen: Slot(0) },
        };
        let (frames, too_long) = encode_batches(&envelopes, max);
        assert_eq!(too_long, 1);
        let mut decoded = Vec::new();
        for frame in &frames {
            assert!(frame.bytes.len() - LENGTH_PREFIX_BYTES <= max);
            let Frame::Batch(batch) = decode(body(&frame.bytes)).unwrap() else { panic!("a batch") };
            assert_eq!(batch.len(), frame.envelopes);
            decoded.extend(batch.into_owned());
        }
        envelopes.remove(4);
        assert_eq!(decoded, envelopes);
    }

    #[test]
    fn garbage_and_trailing_bytes_do_not_decode() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0xff; 32]).is_err());
        let hello = encode(&Frame::Hello { from: NodeId(1), cluster: 1 }, FRAME_BYTES_MAX).unwrap();
        let mut trailing = body(&hello).to_vec();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
    }
}
