//! The SQL error type: one enum, one SQLSTATE per variant.
//!
//! Every failure the SQL layer reports carries a PostgreSQL SQLSTATE
//! ([`Error::code`]) and a PostgreSQL-like message, so that the server can
//! map it to an HTTP status in one table and clients can act on the code.
//! Transaction conflicts from `geodb-txn` pass through as [`Error::Txn`]
//! and keep their retryability ([`Error::is_retryable`]).
//!
//! Bugs are not errors: an impossible state is an assertion. The one
//! exception is [`Error::Internal`], used where a stored record (from
//! disk) does not match the catalog, which must not crash a node.

/// What a statement can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 42601: the text is not SQL we can parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// 42P01: `relation "t" does not exist`.
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    /// 42703: `column "c" does not exist`.
    #[error("column \"{0}\" does not exist")]
    UndefinedColumn(String),
    /// 42702: a bare column name matches several tables of the query.
    #[error("column reference \"{0}\" is ambiguous")]
    AmbiguousColumn(String),
    /// 42P07: `relation "t" already exists`.
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    /// 42701: a column named twice in one table or one column list.
    #[error("column \"{0}\" specified more than once")]
    DuplicateColumn(String),
    /// 42704: an unknown index (or other named object).
    #[error("index \"{0}\" does not exist")]
    UndefinedIndex(String),
    /// 42710: an index name already in use.
    #[error("relation \"{0}\" already exists")]
    DuplicateIndex(String),
    /// 42704: an unknown setting (`SHOW`), or another named object.
    #[error("{0}")]
    UndefinedObject(String),
    /// 42704: an unknown user.
    #[error("role \"{0}\" does not exist")]
    UndefinedRole(String),
    /// 42710: a user name already in use.
    #[error("role \"{0}\" already exists")]
    DuplicateRole(String),
    /// 42939: a name GeoDB keeps for itself.
    #[error("{0}")]
    ReservedName(String),
    /// 42501: the user lacks a privilege the statement needs.
    #[error("{0}")]
    InsufficientPrivilege(String),
    /// 42P16: a table definition we cannot accept (no primary key, ...).
    #[error("invalid table definition: {0}")]
    InvalidTableDefinition(String),
    /// 42804: a value of the wrong type for its place.
    #[error("{0}")]
    DatatypeMismatch(String),
    /// 42883: no operator or function for these argument types.
    #[error("{0}")]
    UndefinedFunction(String),
    /// 42803: a column outside an aggregate that is not grouped.
    #[error("{0}")]
    Grouping(String),
    /// 42P10: an ORDER BY / GROUP BY position out of range.
    #[error("{0}")]
    InvalidColumnReference(String),
    /// 22003: a number outside its type's range.
    #[error("{0}")]
    NumericOutOfRange(String),
    /// 22012: division (or modulo) by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// 22P02: text that does not spell a value of the wanted type.
    #[error("{0}")]
    InvalidTextRepresentation(String),
    /// 22007: text that does not spell a timestamp.
    #[error("{0}")]
    InvalidDatetimeFormat(String),
    /// 22001: text longer than its column allows.
    #[error("{0}")]
    StringTooLong(String),
    /// 22023: a parameter value we cannot use (a JSON array, an unknown
    /// isolation level, ...).
    #[error("{0}")]
    InvalidParameterValue(String),
    /// 2201W: a negative LIMIT.
    #[error("LIMIT must not be negative")]
    InvalidLimit,
    /// 23505: a duplicate key in the primary key or a unique index.
    #[error("duplicate key value violates unique constraint \"{constraint}\"")]
    UniqueViolation { constraint: String },
    /// 23502: NULL into a NOT NULL column.
    #[error("null value in column \"{column}\" of relation \"{table}\" violates not-null constraint")]
    NotNullViolation { table: String, column: String },
    /// 08P01: the number of parameters does not match the statement.
    #[error("bind message supplies {given} parameters, but prepared statement requires {wanted}")]
    ParameterCount { given: usize, wanted: usize },
    /// 0A000: SQL we parse but do not support.
    #[error("{0} is not supported")]
    FeatureNotSupported(String),
    /// 54000: a statement, result or list past one of the named bounds of
    /// [`crate::limits`].
    #[error("{0}")]
    ProgramLimitExceeded(String),
    /// The transaction layer failed; a conflict is 40001 and retryable.
    #[error(transparent)]
    Txn(#[from] geodb_txn::Error),
    /// The storage layer failed (a corrupt record, an encoding failure).
    #[error(transparent)]
    Storage(#[from] geodb_storage::Error),
    /// XX000: stored data disagrees with the catalog. Reported, never a
    /// panic, because the bytes came from disk.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The SQLSTATE of this error (PostgreSQL's codes).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Syntax(_) => "42601",
            Error::UndefinedTable(_) => "42P01",
            Error::UndefinedColumn(_) => "42703",
            Error::AmbiguousColumn(_) => "42702",
            Error::DuplicateTable(_) => "42P07",
            Error::DuplicateColumn(_) => "42701",
            Error::UndefinedIndex(_) => "42704",
            Error::DuplicateIndex(_) => "42710",
            Error::InvalidTableDefinition(_) => "42P16",
            Error::UndefinedRole(_) => "42704",
            Error::UndefinedObject(_) => "42704",
            Error::DuplicateRole(_) => "42710",
            Error::ReservedName(_) => "42939",
            Error::InsufficientPrivilege(_) => "42501",
            Error::DatatypeMismatch(_) => "42804",
            Error::UndefinedFunction(_) => "42883",
            Error::Grouping(_) => "42803",
            Error::InvalidColumnReference(_) => "42P10",
            Error::NumericOutOfRange(_) => "22003",
            Error::DivisionByZero => "22012",
            Error::InvalidTextRepresentation(_) => "22P02",
            Error::InvalidDatetimeFormat(_) => "22007",
            Error::StringTooLong(_) => "22001",
            Error::InvalidParameterValue(_) => "22023",
            Error::InvalidLimit => "2201W",
            Error::UniqueViolation { .. } => "23505",
            Error::NotNullViolation { .. } => "23502",
            Error::ParameterCount { .. } => "08P01",
            Error::FeatureNotSupported(_) => "0A000",
            Error::ProgramLimitExceeded(_) | Error::Txn(geodb_txn::Error::LimitExceeded(_)) => "54000",
            Error::Txn(
                geodb_txn::Error::Conflict(_) | geodb_txn::Error::SchemaChanged { .. } | geodb_txn::Error::Moved { .. },
            ) => "40001",
            Error::Txn(geodb_txn::Error::Storage(e)) | Error::Storage(e) => storage_code(e),
            Error::Txn(
                geodb_txn::Error::ClockOffset { .. }
                | geodb_txn::Error::ClockUnsynchronized { .. }
                | geodb_txn::Error::NotLeader { .. }
                | geodb_txn::Error::Unavailable(_),
            ) => "08006",
            Error::Txn(geodb_txn::Error::OutcomeUnknown(_)) => "08007",
            Error::Txn(geodb_txn::Error::StatementTimeout) => "57014",
            Error::Txn(geodb_txn::Error::Invalid(_)) | Error::Internal(_) => "XX000",
        }
    }

    /// Whether running the whole transaction again may succeed (only
    /// serialization failures).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Txn(e) if e.is_retryable())
    }

    pub(crate) fn out_of_range(type_name: &str) -> Error {
        Error::NumericOutOfRange(format!("{type_name} out of range"))
    }

    pub(crate) fn invalid_text(type_name: &str, text: &str) -> Error {
        Error::InvalidTextRepresentation(format!("invalid input syntax for type {type_name}: \"{text}\""))
    }

    pub(crate) fn unsupported(what: impl Into<String>) -> Error {
        Error::FeatureNotSupported(what.into())
    }
}

/// The SQLSTATE of a storage failure: a full disk (53100) and other I/O
/// failures (58030) are the operator's to fix and say so; a record that
/// does not decode is data corruption (XX001).
fn storage_code(error: &geodb_storage::Error) -> &'static str {
    match error {
        geodb_storage::Error::Engine(message)
            if message.contains("No space left") || message.contains("ENOSPC") || message.contains("disk full") =>
        {
            "53100"
        }
        geodb_storage::Error::Engine(_) => "58030",
        geodb_storage::Error::Corrupt(_) => "XX001",
        geodb_storage::Error::Encode(_) => "XX000",
    }
}

impl From<sqlparser::parser::ParserError> for Error {
    fn from(e: sqlparser::parser::ParserError) -> Error {
        Error::Syntax(e.to_string())
    }
}

#[cfg(test)]
mod storage_code_tests {
    use super::*;

    #[test]
    fn storage_failures_have_operator_facing_codes() {
        let full = geodb_storage::Error::Engine("IO error: No space left on device".into());
        assert_eq!(Error::Txn(geodb_txn::Error::Storage(full)).code(), "53100");
        assert_eq!(Error::Storage(geodb_storage::Error::Engine("IO error: broken".into())).code(), "58030");
        assert_eq!(Error::Storage(geodb_storage::Error::Corrupt("row".into())).code(), "XX001");
        assert_eq!(Error::Txn(geodb_txn::Error::Conflict("x".into())).code(), "40001");
        assert!(!Error::Storage(geodb_storage::Error::Corrupt("row".into())).is_retryable());
        assert_eq!(Error::Txn(geodb_txn::Error::StatementTimeout).code(), "57014");
    }
}
