//! The framing shared by the byte formats that leave the engine as one
//! blob: an encoded [`WriteBatch`](crate::WriteBatch) and a state-machine
//! [`snapshot`](crate::snapshot) export.
//!
//! Two primitives, written by free functions and read by a [`Reader`]:
//!
//! - a *varint*: an unsigned LEB128 integer, seven bits per byte, low
//!   bits first, the high bit set on every byte but the last. Only the
//!   shortest form is accepted, so that every value has exactly one
//!   encoding and a decoded blob re-encodes to the same bytes;
//! - a *byte string*: its length as a varint, then the bytes.
//!
//! These blobs come from other replicas and from disk, so the reader
//! trusts nothing: every malformation (a truncated field, an overlong or
//! overflowing varint, a length or count beyond the bytes left, trailing
//! bytes) is an [`Error::Corrupt`] naming the format, never a panic, and a
//! count can never make the reader allocate more than the input could
//! hold.

use crate::{Error, Result};

/// The longest varint: ten bytes of seven bits hold 64 bits.
pub(crate) const VARINT_BYTES_MAX: usize = 10;
/// The largest last byte of a ten-byte varint: it holds bit 63 only.
const VARINT_LAST_BYTE_MAX: u8 = 0x01;
const VARINT_CONTINUE: u8 = 0x80;
const VARINT_PAYLOAD: u8 = 0x7F;

/// Appends `value` as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value > u64::from(VARINT_PAYLOAD) {
        // Truncation keeps the low seven bits, which is the point.
        out.push((value as u8 & VARINT_PAYLOAD) | VARINT_CONTINUE);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `bytes` as a byte string (length, then the bytes).
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_length(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends a length or a count as a varint.
pub(crate) fn put_length(out: &mut Vec<u8>, length: usize) {
    // usize is at most 64 bits on every target Rust supports.
    put_varint(out, length as u64);
}

/// Reads one blob front to back; see the module documentation.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    /// The format being read, for error messages.
    what: &'static str,
    /// The input's length, to report offsets.
    total: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { rest: bytes, what, total: bytes.len() }
    }

    /// An [`Error::Corrupt`] naming the format and the offset reached.
    pub(crate) fn corrupt(&self, problem: impl std::fmt::Display) -> Error {
        Error::Corrupt(format!("{}: {problem} at byte {} of {}", self.what, self.total - self.rest.len(), self.total))
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let (&byte, rest) = self.rest.split_first().ok_or_else(|| self.corrupt("truncated"))?;
        self.rest = rest;
        Ok(byte)
    }

    pub(crate) fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for index in 0..VARINT_BYTES_MAX {
            let byte = self.u8()?;
            if index == VARINT_BYTES_MAX - 1 && byte > VARINT_LAST_BYTE_MAX {
                return Err(self.corrupt("varint overflows 64 bits"));
            }
            value |= u64::from(byte & VARINT_PAYLOAD) << (7 * index);
            if byte & VARINT_CONTINUE == 0 {
                // A zero last byte after the first adds nothing: the
                // shorter form was the encoding.
                if byte == 0 && index > 0 {
                    return Err(self.corrupt("overlong varint"));
                }
                return Ok(value);
            }
        }
        // The last byte is at most 0x01, so the loop returned.
        Err(self.corrupt("varint overflows 64 bits"))
    }

    /// A count of items, each at least `item_bytes_min` bytes long: a
    /// count the remaining input cannot hold is corrupt, which bounds what
    /// a caller preallocates from it.
    pub(crate) fn count(&mut self, item_bytes_min: usize) -> Result<usize> {
        debug_assert!(item_bytes_min > 0, "a zero-byte item makes any count plausible");
        let count = self.varint()?;
        match usize::try_from(count) {
            Ok(count) if count <= self.rest.len() / item_bytes_min => Ok(count),
            _ => Err(self.corrupt(format_args!("count {count} exceeds the bytes left"))),
        }
    }

    /// A byte string, borrowed from the input.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let length = self.varint()?;
        match usize::try_from(length) {
            Ok(length) if length <= self.rest.len() => {
                let (bytes, rest) = self.rest.split_at(length);
                self.rest = rest;
                Ok(bytes)
            }
            _ => Err(self.corrupt(format_args!("length {length} exceeds the bytes left"))),
        }
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Ends the read: bytes left over mean the blob is not what it claims.
    pub(crate) fn finish(self) -> Result<()> {
        if self.rest.is_empty() { Ok(()) } else { Err(self.corrupt("trailing bytes")) }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn varint_bytes(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, value);
        out
    }

    #[test]
    fn varint_edges() {
        assert_eq!(varint_bytes(0), [0x00]);
        assert_eq!(varint_bytes(0x7F), [0x7F]);
        assert_eq!(varint_bytes(0x80), [0x80, 0x01]);
        assert_eq!(varint_bytes(u64::MAX).len(), VARINT_BYTES_MAX);
        assert_eq!(Reader::new(&varint_bytes(u64::MAX), "test").varint().unwrap(), u64::MAX);
    }

    #[test]
    fn malformed_varints_are_corrupt() {
        let cases: [&[u8]; 5] = [
            &[],
            &[0x80],
            // Overlong: 0 in two bytes.
            &[0x80, 0x00],
            // Eleven bytes.
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            // Ten bytes, bit 64 set.
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02],
        ];
        for case in cases {
            assert!(matches!(Reader::new(case, "test").varint(), Err(Error::Corrupt(_))), "{case:02x?}");
        }
    }

    #[test]
    fn lengths_and_counts_beyond_the_input_are_corrupt() {
        let mut out = Vec::new();
        put_varint(&mut out, 3);
        out.extend_from_slice(b"ab");
        assert!(matches!(Reader::new(&out, "test").bytes(), Err(Error::Corrupt(_))));
        // Two bytes left, items of two bytes: one fits, two do not.
        assert_eq!(Reader::new(&[1, 0, 0], "test").count(2).unwrap(), 1);
        assert!(matches!(Reader::new(&[2, 0, 0], "test").count(2), Err(Error::Corrupt(_))));
        let mut huge = varint_bytes(u64::MAX);
        huge.push(0);
        assert!(matches!(Reader::new(&huge, "test").count(1), Err(Error::Corrupt(_))));
        assert!(matches!(Reader::new(&huge, "test").bytes(), Err(Error::Corrupt(_))));
    }

    proptest! {
        #[test]
        fn varint_round_trips(value in any::<u64>()) {
            let bytes = varint_bytes(value);
            let mut reader = Reader::new(&bytes, "test");
            prop_assert_eq!(reader.varint().unwrap(), value);
            prop_assert!(reader.finish().is_ok());
        }

        /// Whatever the bytes, a varint read either fails as corrupt or
        /// returns the value whose one encoding those bytes begin with.
        #[test]
        fn varint_reads_are_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut reader = Reader::new(&bytes, "test");
            match reader.varint() {
                Ok(value) => prop_assert!(bytes.starts_with(&varint_bytes(value))),
                Err(error) => prop_assert!(matches!(error, Error::Corrupt(_))),
            }
        }
    }
}
