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
    /// A read found the schema (a shard's guard, at the read's snapshot)
    /// other than the one its statement was planned with: a DDL committed
    /// in between. The statement can be planned again if the transaction
    /// has done nothing yet; else it is a serialization failure (40001).
    /// `newest` is the timestamp of the guard's newest version there: the
    /// coordinator's clock passes it, so a new snapshot sees that DDL.
    #[error("{message}")]
    SchemaChanged { message: String, newest: geodb_storage::Timestamp },
    /// R18: a shard refused a request routed by a home the locality key no
    /// longer has (it was rehomed): the coordinator forgets that home, and
    /// the transaction runs again against the new one (SQLSTATE 40001).
    #[error("{message}")]
    Moved { message: String, route: crate::protocol::Route, residence: crate::protocol::Residence },
    /// The storage engine failed (I/O, a full disk, corruption).
    #[error(transparent)]
    Storage(#[from] geodb_storage::Error),
    /// A remote timestamp is further ahead of the local clock than the
    /// configured bound allows.
    #[error(
        "a timestamp from another node is {:.1} ms ahead of this node's clock, beyond the clock bound of {:.1} ms: \
         one of the two clocks is off (see /v1/cluster, \"clock\")",
        *offset_ns as f64 / 1e6,
        *bound_ns as f64 / 1e6
    )]
    ClockOffset { offset_ns: u64, bound_ns: u64 },
    /// This node's clock is further from most of its peers' clocks than
    /// the bound ε allows (measured by [`crate::offsets`]): it refuses
    /// coordinated work, whose timestamps and commit wait rely on the
    /// bound, until its clock is back (SQLSTATE 08006). Highly available
    /// work goes on.
    #[error(
        "this node's clock is {:.1} ms off most of its peers, beyond the bound of {:.1} ms (max_clock_offset_ms): \
         it refuses snapshot-isolated and serializable transactions until its clock is fixed; \
         use another node for them, or Read Committed / MAV here",
        *offset_ns as f64 / 1e6,
        *bound_ns as f64 / 1e6
    )]
    ClockUnsynchronized { offset_ns: u64, bound_ns: u64 },
    /// The statement ran past its deadline (SQLSTATE 57014).
    #[error("canceling statement due to statement timeout")]
    StatementTimeout,
    /// The transaction was used after it ended, or was given bad input.
    #[error("{0}")]
    Invalid(String),
    /// The transaction goes beyond a limit of its level (SQLSTATE 54000).
    #[error("{0}")]
    LimitExceeded(String),
    /// This node does not lead the shard, so it cannot serve a coordinated
    /// transaction or commit a write (SQLSTATE 08006). `leader` names the
    /// node that does, when known: the caller retries there.
    #[error("node is not the leader of the shard{}", leader.map(|node| format!(" (the leader is node {node})")).unwrap_or_default())]
    NotLeader { leader: Option<u64> },
    /// The shard cannot make progress: no quorum, or its log refused the
    /// commit before it was proposed (SQLSTATE 08006). Nothing was applied.
    #[error("{0}")]
    Unavailable(String),
    /// The commit was proposed but the shard lost its leader before the
    /// outcome was known: it may or may not have committed (SQLSTATE 08007,
    /// transaction resolution unknown). Never retried blindly.
    #[error("{0}")]
    OutcomeUnknown(String),
}

impl Error {
    /// Whether running the transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Conflict(_) | Error::SchemaChanged { .. } | Error::Moved { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
