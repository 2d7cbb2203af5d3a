//! Hybrid-logical-clock timestamps and transaction ids.
//!
//! A [`Timestamp`] is a pair (physical nanoseconds since the Unix epoch,
//! logical counter), ordered lexicographically (Kulkarni et al., *Logical
//! Physical Clocks*, 2014). It is written `physical.logical` in the HTTP API
//! (`"1732579200123456789.3"`). Storage keeps it in 12 big-endian bytes so
//! that byte order equals timestamp order; [`Timestamp::encode_desc`] inverts
//! the bytes so that newer versions of a key sort first.

use std::fmt;

/// A hybrid logical clock reading. `Timestamp::ZERO` is before everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Timestamp {
    /// Nanoseconds since the Unix epoch, as read from the physical clock
    /// (or carried over from a received timestamp).
    pub physical: u64,
    /// Logical counter: orders events that share a physical reading.
    pub logical: u32,
}

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp { physical: 0, logical: 0 };
    pub const MAX: Timestamp = Timestamp { physical: u64::MAX, logical: u32::MAX };
    /// Bytes of [`Timestamp::encode`] and [`Timestamp::encode_desc`].
    pub const ENCODED_LEN: usize = 12;

    pub const fn new(physical: u64, logical: u32) -> Self {
        Timestamp { physical, logical }
    }

    /// The next timestamp after this one (the smallest one greater).
    pub fn next(self) -> Self {
        match self.logical.checked_add(1) {
            Some(logical) => Timestamp { physical: self.physical, logical },
            None => Timestamp { physical: self.physical + 1, logical: 0 },
        }
    }

    /// The timestamp just before this one (the largest one smaller).
    /// `ZERO.prev()` is `ZERO`.
    pub fn prev(self) -> Self {
        if self.logical > 0 {
            Timestamp { physical: self.physical, logical: self.logical - 1 }
        } else if self.physical > 0 {
            Timestamp { physical: self.physical - 1, logical: u32::MAX }
        } else {
            self
        }
    }

    /// 12 big-endian bytes: byte order equals timestamp order.
    pub fn encode(self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.physical.to_be_bytes());
        out[8..].copy_from_slice(&self.logical.to_be_bytes());
        out
    }

    /// Bitwise complement of [`Timestamp::encode`]: newer sorts first.
    pub fn encode_desc(self) -> [u8; Self::ENCODED_LEN] {
        let mut out = self.encode();
        for byte in &mut out {
            *byte = !*byte;
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::ENCODED_LEN] = bytes.try_into().ok()?;
        let physical = u64::from_be_bytes(bytes[..8].try_into().ok()?);
        let logical = u32::from_be_bytes(bytes[8..].try_into().ok()?);
        Some(Timestamp { physical, logical })
    }

    pub fn decode_desc(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; Self::ENCODED_LEN] = bytes.try_into().ok()?;
        Self::decode(&bytes.map(|byte| !byte))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical, self.logical)
    }
}

/// A transaction's identity, unique for the life of a node's data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct TxnId(pub u64);

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encoding_preserves_order(a: (u64, u32), b: (u64, u32)) {
            let (a, b) = (Timestamp::new(a.0, a.1), Timestamp::new(b.0, b.1));
            prop_assert_eq!(a.cmp(&b), a.encode().cmp(&b.encode()));
            prop_assert_eq!(b.cmp(&a), a.encode_desc().cmp(&b.encode_desc()));
            prop_assert_eq!(Timestamp::decode(&a.encode()), Some(a));
            prop_assert_eq!(Timestamp::decode_desc(&a.encode_desc()), Some(a));
        }

        #[test]
        fn next_and_prev_are_neighbours(a: (u64, u32)) {
            let a = Timestamp::new(a.0, a.1);
            if a != Timestamp::MAX {
                prop_assert!(a.next() > a);
                prop_assert_eq!(a.next().prev(), a);
            }
        }
    }
}
