//! The storage error type.

/// What can go wrong below the transaction layer.
///
/// Storage errors are never retryable by a client: they are I/O failures
/// (a full disk, a broken file) or corrupt records, and the operator must
/// look. Corruption is detected on read (every record is checked when it is
/// decoded) and reported, never silently skipped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed to read or write (I/O error, full disk, ...).
    #[error("storage engine: {0}")]
    Engine(String),
    /// A stored record could not be decoded: a bug or on-disk corruption.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A value cannot be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
