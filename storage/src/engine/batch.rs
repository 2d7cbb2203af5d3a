//! Write batches: the unit of atomicity of an [`Engine`](super::Engine),
//! and their byte encoding.
//!
//! A [`WriteBatch`] is a list of puts and deletes applied in order, all or
//! nothing. [`WriteBatch::encode`] turns one into bytes that can be logged
//! or shipped to another node and applied there, and
//! [`WriteBatch::decode`] takes them back; the format is on `encode`.
//! Varints and byte strings are those of [`crate::wire`].

use super::ColumnFamily;
use crate::wire::{self, Reader};
use crate::{Error, Result};

/// The first byte of an encoded batch. Bumped whenever the format changes.
const BATCH_FORMAT_V1: u8 = 1;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
/// The fewest bytes an encoded op takes: kind, family, an empty key.
const OP_BYTES_MIN: usize = 3;

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put { cf: ColumnFamily, key: Vec<u8>, value: Vec<u8> },
    Delete { cf: ColumnFamily, key: Vec<u8> },
}

/// Operations applied atomically, in order: after a crash either all of a
/// batch is visible or none of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, cf: ColumnFamily, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(WriteOp::Put { cf, key, value });
    }

    pub fn delete(&mut self, cf: ColumnFamily, key: Vec<u8>) {
        self.ops.push(WriteOp::Delete { cf, key });
    }

    /// Appends all of `other`'s operations after this batch's.
    pub fn append(&mut self, mut other: WriteBatch) {
        self.ops.append(&mut other.ops);
    }

    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The batch as bytes:
    ///
    /// ```text
    ///  batch = format:u8 (1)  op_count:varint  op*
    ///  op    = kind:u8 (1 put | 2 delete)  cf:u8 (ColumnFamily::tag)  key:bytes  [value:bytes, puts only]
    ///  bytes = length:varint  raw bytes
    /// ```
    ///
    /// A varint is unsigned LEB128 (seven bits a byte, low bits first) in
    /// its shortest form. Families travel as their [`ColumnFamily::tag`],
    /// written out by hand, so the encoding does not depend on the order
    /// the variants are declared in. The op count makes a truncation at an
    /// op boundary detectable, and every batch has exactly one encoding:
    /// bytes that decode re-encode to themselves, and anything else is
    /// [`Error::Corrupt`].
    pub fn encode(&self) -> Vec<u8> {
        let payload: usize = self
            .ops
            .iter()
            .map(|op| match op {
                WriteOp::Put { key, value, .. } => key.len() + value.len(),
                WriteOp::Delete { key, .. } => key.len(),
            })
            .sum();
        // Headers are a few bytes per op; reserving a generous guess saves
        // the regrowth copies of a large batch.
        let mut out = Vec::with_capacity(1 + payload + self.ops.len() * 2 * OP_BYTES_MIN);
        out.push(BATCH_FORMAT_V1);
        wire::put_length(&mut out, self.ops.len());
        for op in &self.ops {
            match op {
                WriteOp::Put { cf, key, value } => {
                    out.push(OP_PUT);
                    out.push(cf.tag());
                    wire::put_bytes(&mut out, key);
                    wire::put_bytes(&mut out, value);
                }
                WriteOp::Delete { cf, key } => {
                    out.push(OP_DELETE);
                    out.push(cf.tag());
                    wire::put_bytes(&mut out, key);
                }
            }
        }
        out
    }

    /// Decodes bytes written by [`WriteBatch::encode`]. Anything else,
    /// truncated or extended, is [`Error::Corrupt`]; decoding never panics
    /// and allocates no more than the input's size suggests.
    pub fn decode(bytes: &[u8]) -> Result<WriteBatch> {
        let mut reader = Reader::new(bytes, "write batch");
        let format = reader.u8()?;
        if format != BATCH_FORMAT_V1 {
            return Err(Error::Corrupt(format!("write batch: format {format} is unknown")));
        }
        let count = reader.count(OP_BYTES_MIN)?;
        let mut ops = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = reader.u8()?;
            let tag = reader.u8()?;
            let cf = ColumnFamily::from_tag(tag).ok_or_else(|| reader.corrupt(format_args!("unknown family {tag}")))?;
            let key = reader.bytes()?.to_vec();
            ops.push(match kind {
                OP_PUT => WriteOp::Put { cf, key, value: reader.bytes()?.to_vec() },
                OP_DELETE => WriteOp::Delete { cf, key },
                _ => return Err(reader.corrupt(format_args!("unknown operation {kind}"))),
            });
        }
        reader.finish()?;
        Ok(WriteBatch { ops })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arb_batch() -> impl Strategy<Value = WriteBatch> {
        let cf = proptest::sample::select(ColumnFamily::ALL.to_vec());
        let bytes = || proptest::collection::vec(any::<u8>(), 0..300);
        let op = prop_oneof![
            (cf.clone(), bytes(), bytes()).prop_map(|(cf, key, value)| WriteOp::Put { cf, key, value }),
            (cf, bytes()).prop_map(|(cf, key)| WriteOp::Delete { cf, key }),
        ];
        proptest::collection::vec(op, 0..20).prop_map(|ops| WriteBatch { ops })
    }

    #[test]
    fn encoding_is_pinned() {
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::Meta, b"k".to_vec(), b"vv".to_vec());
        batch.delete(ColumnFamily::PaxosLog, Vec::new());
        // Stored and shipped bytes: a change here is a format change.
        assert_eq!(batch.encode(), [1, 2, OP_PUT, 4, 1, b'k', 2, b'v', b'v', OP_DELETE, 5, 0]);
        assert_eq!(WriteBatch::new().encode(), [1, 0]);
    }

    #[test]
    fn column_family_tags_are_distinct_and_round_trip() {
        for cf in ColumnFamily::ALL {
            assert_eq!(ColumnFamily::from_tag(cf.tag()), Some(cf));
        }
        let mut tags: Vec<u8> = ColumnFamily::ALL.iter().map(|cf| cf.tag()).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ColumnFamily::ALL.len());
        assert_eq!(ColumnFamily::from_tag(0), None);
    }

    #[test]
    fn malformed_batches_are_corrupt() {
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::Data, b"key".to_vec(), b"value".to_vec());
        let good = batch.encode();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        // Unknown format, unknown operation, unknown family.
        for (at, byte) in [(0, 2), (2, 9), (3, 0), (3, 8)] {
            let mut bad = good.clone();
            bad[at] = byte;
            cases.push(bad);
        }
        // One more op than present; a trailing byte.
        let mut bad = good.clone();
        bad[1] = 2;
        cases.push(bad);
        let mut bad = good.clone();
        bad.push(0);
        cases.push(bad);
        for case in cases {
            assert!(matches!(WriteBatch::decode(&case), Err(Error::Corrupt(_))), "{case:02x?}");
        }
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(batch in arb_batch()) {
            prop_assert_eq!(WriteBatch::decode(&batch.encode()).unwrap(), batch);
        }

        /// Every proper prefix of an encoding is corrupt: a torn batch is
        /// never taken for a shorter one.
        #[test]
        fn truncated_encodings_are_corrupt(batch in arb_batch(), cut in any::<prop::sample::Index>()) {
            let bytes = batch.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(matches!(WriteBatch::decode(&bytes[..cut]), Err(Error::Corrupt(_))));
        }

        /// Random bytes (half of them with the right format byte, to get
        /// past the first check) never panic, and are either corrupt or
        /// the one encoding of the batch they decode to.
        #[test]
        fn decode_of_random_bytes_is_exact_or_corrupt(
            formatted in any::<bool>(),
            mut bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            if formatted {
                bytes.insert(0, BATCH_FORMAT_V1);
            }
            match WriteBatch::decode(&bytes) {
                Ok(batch) => prop_assert_eq!(batch.encode(), bytes),
                Err(error) => prop_assert!(matches!(error, Error::Corrupt(_))),
            }
        }

        /// One byte of a valid encoding changed: exact or corrupt.
        #[test]
        fn decode_of_a_damaged_encoding_is_exact_or_corrupt(
            batch in arb_batch(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = batch.encode();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            match WriteBatch::decode(&bytes) {
                Ok(decoded) => prop_assert_eq!(decoded.encode(), bytes),
                Err(error) => prop_assert!(matches!(error, Error::Corrupt(_))),
            }
        }
    }
}
