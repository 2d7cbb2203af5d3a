//! SQL values and types: the vocabulary every layer above storage shares.
//!
//! A [`Value`] is one SQL datum. Integers of every width are `Int(i64)`
//! (the column's [`DataType`] bounds them); `DECIMAL` is exact
//! ([`rust_decimal::Decimal`], 28 significant digits); `TIMESTAMP` is
//! microseconds since the Unix epoch, UTC, without time zone.
//!
//! Rows are stored with [`encode_row`] / [`decode_row`]; keys with
//! [`crate::keycode`].

use std::cmp::Ordering;
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One SQL datum.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(Decimal),
    Text(String),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
}

/// A column type, as declared in `CREATE TABLE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    SmallInt,
    Int,
    BigInt,
    /// `DECIMAL(precision, scale)`; precision at most 28.
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// `REAL`: stored as a 32-bit float.
    Real,
    /// `DOUBLE PRECISION`, `FLOAT`.
    Double,
    /// `CHAR(n)`: at most n characters (not padded).
    Char(u32),
    /// `VARCHAR(n)`: at most n characters.
    Varchar(u32),
    Text,
    Bool,
    Timestamp,
}

impl DataType {
    /// The name used in error messages and `EXPLAIN`, PostgreSQL style.
    pub fn sql_name(&self) -> String {
        match self {
            DataType::SmallInt => "smallint".into(),
            DataType::Int => "integer".into(),
            DataType::BigInt => "bigint".into(),
            DataType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            DataType::Real => "real".into(),
            DataType::Double => "double precision".into(),
            DataType::Char(n) => format!("char({n})"),
            DataType::Varchar(n) => format!("varchar({n})"),
            DataType::Text => "text".into(),
            DataType::Bool => "boolean".into(),
            DataType::Timestamp => "timestamp".into(),
        }
    }

    pub fn is_integer(&self) -> bool {
        matches!(self, DataType::SmallInt | DataType::Int | DataType::BigInt)
    }

    pub fn is_numeric(&self) -> bool {
        self.is_integer() || matches!(self, DataType::Decimal { .. } | DataType::Real | DataType::Double)
    }

    pub fn is_text(&self) -> bool {
        matches!(self, DataType::Char(_) | DataType::Varchar(_) | DataType::Text)
    }
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "double precision",
            Value::Decimal(_) => "numeric",
            Value::Text(_) => "text",
            Value::Timestamp(_) => "timestamp",
        }
    }

    /// SQL comparison of two non-null values of comparable kinds; `None`
    /// when either is NULL or the kinds cannot be compared. Numbers compare
    /// across kinds (an `Int` with a `Decimal`, a `Decimal` with a `Float`).
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (Null, _) | (_, Null) => None,
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Int(a), Decimal(b)) => Some(rust_decimal::Decimal::from(*a).cmp(b)),
            (Decimal(a), Int(b)) => Some(a.cmp(&rust_decimal::Decimal::from(*b))),
            (Decimal(a), Decimal(b)) => Some(a.cmp(b)),
            (Float(a), Float(b)) => Some(total_float_cmp(*a, *b)),
            (Int(a), Float(b)) => Some(total_float_cmp(*a as f64, *b)),
            (Float(a), Int(b)) => Some(total_float_cmp(*a, *b as f64)),
            (Decimal(a), Float(b)) => Some(total_float_cmp(decimal_to_f64(a), *b)),
            (Float(a), Decimal(b)) => Some(total_float_cmp(*a, decimal_to_f64(b))),
            (Text(a), Text(b)) => Some(a.cmp(b)),
            (Timestamp(a), Timestamp(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Total order used for sorting and grouping: NULL first, then by
    /// [`Value::sql_cmp`]; values of incomparable kinds order by kind.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            _ => self.sql_cmp(other).unwrap_or_else(|| self.rank().cmp(&other.rank())),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) | Value::Decimal(_) => 2,
            Value::Text(_) => 3,
            Value::Timestamp(_) => 4,
        }
    }
}

/// Floats order with NaN above every number (as in PostgreSQL) and -0 = +0.
pub fn total_float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

pub fn decimal_to_f64(d: &Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    d.to_f64().unwrap_or(f64::NAN)
}

impl PartialEq for Value {
    /// Equality in the sense of [`Value::total_cmp`] (so NULL = NULL here;
    /// SQL's three-valued `=` is the executor's business).
    fn eq(&self, other: &Self) -> bool {
        self.total_cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Decimal(d) => write!(f, "{d}"),
            Value::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Value::Timestamp(micros) => write!(f, "{}", format_timestamp(*micros)),
        }
    }
}

/// RFC 3339 text of a timestamp (UTC, microsecond precision).
pub fn format_timestamp(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => format!("{micros}us"),
    }
}

/// Parses an RFC 3339 timestamp, one with PostgreSQL's offsets
/// (`2026-12-06 16:00:00+00`, `+0530`, `-05:30`: what drivers send), or
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` taken as UTC, into microseconds since the
/// epoch.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = chrono::DateTime::parse_from_str(text, format) {
            return Some(t.timestamp_micros());
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_micros());
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(text, format) {
            return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
        }
    }
    None
}

/// Row format version, the first byte of every encoded row.
const ROW_FORMAT_V1: u8 = 1;

/// Encodes a row (the values of a table's columns, in column order).
pub fn encode_row(values: &[Value]) -> Vec<u8> {
    let out = vec![ROW_FORMAT_V1];
    // Serialising plain enums into a Vec cannot fail.
    postcard::to_extend(values, out).expect("row encoding is infallible")
}

/// Decodes a row written by [`encode_row`], checking its format byte.
pub fn decode_row(bytes: &[u8]) -> Result<Vec<Value>> {
    match bytes.split_first() {
        Some((&ROW_FORMAT_V1, rest)) => postcard::from_bytes(rest).map_err(|e| Error::Corrupt(format!("row: {e}"))),
        Some((version, _)) => Err(Error::Corrupt(format!("row format {version} is unknown"))),
        None => Err(Error::Corrupt("empty row".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_round_trip() {
        let row = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Float(1.5),
            Value::Decimal("123.4500".parse().unwrap()),
            Value::Text("héllo".into()),
            Value::Timestamp(1_732_579_200_123_456),
        ];
        assert_eq!(decode_row(&encode_row(&row)).unwrap(), row);
    }

    #[test]
    fn corrupt_rows_are_reported() {
        assert!(decode_row(&[]).is_err());
        assert!(decode_row(&[9, 1, 2]).is_err());
        assert!(decode_row(&[ROW_FORMAT_V1, 0xff, 0xff]).is_err());
    }

    #[test]
    fn timestamps_parse_and_print() {
        let micros = parse_timestamp("2024-11-26T00:00:00Z").unwrap();
        assert_eq!(format_timestamp(micros), "2024-11-26T00:00:00Z");
        assert_eq!(parse_timestamp("2024-11-26 00:00:00"), Some(micros));
        // PostgreSQL's offsets, as drivers send them.
        assert_eq!(parse_timestamp("2024-11-26 00:00:00+00"), Some(micros));
        assert_eq!(parse_timestamp("2024-11-26 05:30:00+0530"), Some(micros));
        assert_eq!(parse_timestamp("2024-11-25 19:00:00.000-05:00"), Some(micros));
        assert_eq!(parse_timestamp("2024-11-26T01:00:00+01"), Some(micros));
        assert_eq!(parse_timestamp("not a time"), None);
    }
}
