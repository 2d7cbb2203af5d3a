//! The seam between the TPC-C logic and a database: a [`Session`] runs SQL
//! statements with `$n` parameters, one at a time, inside or outside an
//! explicit transaction.
//!
//! Every statement the kit sends is written once and runs unchanged on
//! both targets, so values cross the seam as [`Value`]s: integers, exact
//! decimals as text (GeoDB's JSON form; PostgreSQL's `NUMERIC` is encoded
//! from and decoded to the same text), text, and timestamps as microseconds
//! since the Unix epoch.
//! A backend turns its errors into a [`DbError`] whose `retryable` flag
//! says whether the whole transaction may simply run again (SQLSTATE
//! `40001` serialization failure, `40P01` deadlock): the driver counts
//! those retries apart from failures.

use std::fmt;
use std::future::Future;

use super::schema::Dialect;

/// One SQL value as the kit sends and receives it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    /// An exact decimal in its text form, e.g. `"-10.00"`.
    Decimal(String),
    Text(String),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    Float(f64),
}

impl Value {
    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    pub fn as_i64(&self) -> Result<i64, DbError> {
        match self {
            Value::Int(v) => Ok(*v),
            Value::Decimal(s) | Value::Text(s) => {
                s.parse().map_err(|_| DbError::protocol(format!("expected an integer, got {s:?}")))
            }
            other => Err(DbError::protocol(format!("expected an integer, got {other:?}"))),
        }
    }

    pub fn as_str(&self) -> Result<&str, DbError> {
        match self {
            Value::Text(s) | Value::Decimal(s) => Ok(s),
            other => Err(DbError::protocol(format!("expected text, got {other:?}"))),
        }
    }

    /// The exact decimal text of a `DECIMAL` column (GeoDB answers it as a
    /// JSON string, PostgreSQL as `NUMERIC`; an integer is a decimal too).
    pub fn as_decimal(&self) -> Result<String, DbError> {
        match self {
            Value::Decimal(s) | Value::Text(s) => Ok(s.clone()),
            Value::Int(v) => Ok(v.to_string()),
            other => Err(DbError::protocol(format!("expected a decimal, got {other:?}"))),
        }
    }

    /// A decimal as a float, for figures that are only displayed.
    pub fn as_f64(&self) -> Result<f64, DbError> {
        match self {
            Value::Float(v) => Ok(*v),
            Value::Int(v) => Ok(*v as f64),
            Value::Decimal(s) | Value::Text(s) => {
                s.parse().map_err(|_| DbError::protocol(format!("expected a number, got {s:?}")))
            }
            other => Err(DbError::protocol(format!("expected a number, got {other:?}"))),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// Money in cents as an exact decimal value, e.g. `1234` → `"12.34"`.
pub fn cents(amount_cents: i64) -> Value {
    Value::Decimal(cents_text(amount_cents))
}

pub fn cents_text(amount_cents: i64) -> String {
    let sign = if amount_cents < 0 { "-" } else { "" };
    let magnitude = amount_cents.unsigned_abs();
    format!("{sign}{}.{:02}", magnitude / 100, magnitude % 100)
}

/// A fraction in ten-thousandths as an exact decimal value, e.g. `1234` → `"0.1234"`.
pub fn ten_thousandths(amount: i64) -> Value {
    assert!((0..10_000).contains(&amount), "DECIMAL(4,4) holds [0, 1): {amount}");
    Value::Decimal(format!("0.{amount:04}"))
}

/// An exact decimal text as an integer count of `10^-scale` units, e.g.
/// `("12.3", 2)` → `1230`. `None` when the text is not a decimal or has
/// non-zero digits beyond `scale`.
pub fn parse_scaled(text: &str, scale: u32) -> Option<i128> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (integer, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if integer.is_empty() || !integer.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (kept, dropped) = fraction.split_at(fraction.len().min(scale as usize));
    if dropped.bytes().any(|b| b != b'0') {
        return None;
    }
    let mut units: i128 = integer.parse().ok()?;
    for position in 0..scale as usize {
        let digit = kept.as_bytes().get(position).map_or(0, |b| i128::from(b - b'0'));
        units = units.checked_mul(10)?.checked_add(digit)?;
    }
    Some(if negative { -units } else { units })
}

/// What a statement answered: its rows (empty for writes) and how many
/// rows it wrote.
#[derive(Debug, Default)]
pub struct Rows {
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
}

impl Rows {
    /// The first row, or an error naming what was expected.
    pub fn one(&self, what: &str) -> Result<&[Value], DbError> {
        self.rows.first().map(Vec::as_slice).ok_or_else(|| DbError::protocol(format!("no row for {what}")))
    }
}

/// A failed statement, a failed commit, or a broken connection.
#[derive(Clone, Debug)]
pub struct DbError {
    /// SQLSTATE when the database gave one; empty for transport errors.
    pub code: String,
    pub message: String,
    /// Running the whole transaction again may succeed.
    pub retryable: bool,
}

impl DbError {
    /// The kit's own error: an answer of the wrong shape.
    pub fn protocol(message: impl Into<String>) -> DbError {
        DbError { code: String::new(), message: message.into(), retryable: false }
    }

    /// SQLSTATEs that mean "run the transaction again": serialization
    /// failure and deadlock.
    pub fn is_retry_code(code: &str) -> bool {
        code == "40001" || code == "40P01"
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{}: {}", self.code, self.message) }
    }
}

/// One connection-like conversation with a target.
///
/// Contract for implementers: `begin` opens a transaction at the target's
/// configured isolation level; `execute` runs one statement (inside the
/// open transaction, or committing on its own when none is open);
/// `commit` ends the transaction and reports a failed commit as an error
/// (the transaction is then gone); `rollback` ends any open transaction
/// and must be safe to call when none is open or after a failed statement.
/// Errors that allow the transaction to be run again set `retryable`.
///
/// Contract for callers: after an error inside a transaction, call
/// `rollback` before anything else.
pub trait Session: Send + 'static {
    fn begin(&mut self) -> impl Future<Output = Result<(), DbError>> + Send;
    fn execute(&mut self, sql: &str, params: &[Value]) -> impl Future<Output = Result<Rows, DbError>> + Send;
    fn commit(&mut self) -> impl Future<Output = Result<(), DbError>> + Send;
    fn rollback(&mut self) -> impl Future<Output = Result<(), DbError>> + Send;
    /// Ends the session, rolling back anything open; never fails.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A database the kit loads, drives and checks.
///
/// Sessions are asked for by purpose so that a geo-distributed target can
/// route them: a warehouse's rows are loaded through, and its terminals
/// talk to, a gateway in the warehouse's home region.
pub trait Target: Clone + Send + Sync + 'static {
    type Session: Session;
    /// How the target is named in the output, e.g. `geodb` or `postgres`.
    fn name(&self) -> &str;
    /// What the output says about the server (version, gateways).
    fn description(&self) -> String;
    fn dialect(&self) -> Dialect;
    /// A session for loading warehouse `warehouse`'s rows, or the global
    /// tables' when `None`.
    fn load_session(&self, warehouse: Option<i64>) -> impl Future<Output = Result<Self::Session, DbError>> + Send;
    /// A session for a terminal bound to `warehouse`.
    fn terminal_session(&self, warehouse: i64) -> impl Future<Output = Result<Self::Session, DbError>> + Send;
}

/// A level the kit asks for, in GeoDB's names; each backend maps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    ReadCommitted,
    MonotonicAtomicView,
    Snapshot,
    Serializable,
}

impl Isolation {
    pub fn parse(name: &str) -> Result<Isolation, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "read committed" | "rc" => Ok(Isolation::ReadCommitted),
            "monotonic atomic view" | "mav" => Ok(Isolation::MonotonicAtomicView),
            "snapshot" | "snapshot isolation" | "repeatable read" | "si" => Ok(Isolation::Snapshot),
            "serializable" | "strict serializable" => Ok(Isolation::Serializable),
            other => Err(format!("unknown isolation level {other:?} (rc, mav, snapshot, serializable)")),
        }
    }

    /// GeoDB's name for the level (the HTTP API's `isolation` field).
    pub fn geodb_name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read committed",
            Isolation::MonotonicAtomicView => "monotonic atomic view",
            Isolation::Snapshot => "snapshot",
            Isolation::Serializable => "serializable",
        }
    }

    /// PostgreSQL's nearest level. PostgreSQL has no Monotonic Atomic
    /// View; Read Committed is the nearest weaker level it offers.
    pub fn postgres_name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted | Isolation::MonotonicAtomicView => "READ COMMITTED",
            Isolation::Snapshot => "REPEATABLE READ",
            Isolation::Serializable => "SERIALIZABLE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_format_exactly() {
        assert_eq!(cents_text(1234), "12.34");
        assert_eq!(cents_text(-1000), "-10.00");
        assert_eq!(cents_text(5), "0.05");
        assert_eq!(cents_text(-5), "-0.05");
        assert_eq!(ten_thousandths(7), Value::Decimal("0.0007".into()));
    }

    #[test]
    fn scaled_parse_is_exact() {
        assert_eq!(parse_scaled("12.3", 2), Some(1230));
        assert_eq!(parse_scaled("-10.00", 2), Some(-1000));
        assert_eq!(parse_scaled("300000.000000", 2), Some(30_000_000));
        assert_eq!(parse_scaled("7", 2), Some(700));
        assert_eq!(parse_scaled("0.125", 2), None);
        assert_eq!(parse_scaled("x", 2), None);
    }
}
