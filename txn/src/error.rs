//! The transaction error type.

/// What a transaction can fail with. Callers act on
/// [`Error::is_retryable`]: a retryable error means "run the whole
/// transaction again", and nothing of the failed attempt was applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Serialization failure (SQLSTATE 40001): a concurrent transaction
    /// committed a conflicting write first.
    #[error("{0}")]
    Conflict(String),
    /// The storage engine failed (I/O, a full disk, corruption).
    #[error(transparent)]
    Storage(#[from] geodb_storage::Error),
    /// A remote timestamp is further ahead of the local clock than the
    /// configured bound allows.
    #[error("clock offset {offset_ns} ns exceeds the bound of {bound_ns} ns")]
    ClockOffset { offset_ns: u64, bound_ns: u64 },
    /// The statement ran past its deadline (SQLSTATE 57014).
    #[error("canceling statement due to statement timeout")]
    StatementTimeout,
    /// The transaction was used after it ended, or was given bad input.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Whether running the transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Conflict(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
