//! Column types and the conversions between values.
//!
//! Three kinds of conversion, from the strictest to the loosest:
//!
//! - [`assign`]: a value stored into a column (`INSERT`, `UPDATE`, index
//!   keys). Numbers convert among themselves with range checks (22003),
//!   `DECIMAL(p,s)` rounds half away from zero to scale `s` and checks
//!   precision `p`, text is length-checked against `CHAR(n)`/`VARCHAR(n)`
//!   (22001), and text spelling a value converts to it (PostgreSQL's
//!   "unknown"-typed literals and JSON string parameters; 22P02 / 22007
//!   when it does not). Other mixes are 42804.
//! - [`coerce_param`]: a parameter taking the type of its context (the
//!   column it is compared with or assigned to). Only text and exact
//!   numbers convert; nothing is rounded, so a comparison keeps its
//!   meaning.
//! - [`cast`]: `CAST(x AS t)`, which also allows what PostgreSQL's explicit
//!   casts allow (integer to boolean, anything to text).
//!
//! [`column_type`] maps `sqlparser`'s types to [`DataType`]. A bare
//! `DECIMAL`/`NUMERIC` is `DECIMAL(28, 6)` (documented deviation:
//! PostgreSQL's unconstrained numeric has no fixed scale); `DECIMAL(p)` is
//! `DECIMAL(p, 0)` as the standard says; `FLOAT(p)` with `p <= 24` is
//! `REAL`, else `DOUBLE PRECISION`.

use std::str::FromStr;

use geodb_storage::value::parse_timestamp;
use geodb_storage::{DataType, Value};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use sqlparser::ast;

use crate::error::{Error, Result};
use crate::limits::{DECIMAL_PRECISION_MAX, TEXT_LENGTH_MAX};

/// Scale of a bare `DECIMAL` / `NUMERIC` column.
pub const DECIMAL_DEFAULT_SCALE: u8 = 6;

/// The column type named by a `CREATE TABLE` / `CAST` type.
pub fn column_type(data_type: &ast::DataType) -> Result<DataType> {
    use ast::DataType as T;
    Ok(match data_type {
        T::SmallInt(_) | T::Int2(_) => DataType::SmallInt,
        T::Int(_) | T::Integer(_) | T::Int4(_) => DataType::Int,
        T::BigInt(_) | T::Int8(_) => DataType::BigInt,
        T::Decimal(info) | T::Numeric(info) | T::Dec(info) => decimal_type(info)?,
        T::Real | T::Float4 => DataType::Real,
        T::DoublePrecision | T::Float8 => DataType::Double,
        T::Double(ast::ExactNumberInfo::None) => DataType::Double,
        T::Float(ast::ExactNumberInfo::None) => DataType::Double,
        T::Float(ast::ExactNumberInfo::Precision(p)) => match p {
            1..=24 => DataType::Real,
            25..=53 => DataType::Double,
            _ => {
                return Err(Error::InvalidParameterValue(format!(
                    "precision for type float must be between 1 and 53, not {p}"
                )));
            }
        },
        T::Char(len) | T::Character(len) => DataType::Char(text_length(len, 1)?),
        T::Varchar(len) | T::CharacterVarying(len) | T::CharVarying(len) => {
            DataType::Varchar(text_length(len, TEXT_LENGTH_MAX as u32)?)
        }
        T::Text | T::String(None) => DataType::Text,
        T::Boolean | T::Bool => DataType::Bool,
        T::Timestamp(_, ast::TimezoneInfo::None | ast::TimezoneInfo::WithoutTimeZone) => DataType::Timestamp,
        other => return Err(Error::unsupported(format!("type {other}"))),
    })
}

fn decimal_type(info: &ast::ExactNumberInfo) -> Result<DataType> {
    let (precision, scale) = match *info {
        ast::ExactNumberInfo::None => (DECIMAL_PRECISION_MAX, i64::from(DECIMAL_DEFAULT_SCALE)),
        ast::ExactNumberInfo::Precision(p) => (p, 0),
        ast::ExactNumberInfo::PrecisionAndScale(p, s) => (p, s),
    };
    if !(1..=DECIMAL_PRECISION_MAX).contains(&precision) {
        return Err(Error::InvalidParameterValue(format!(
            "NUMERIC precision {precision} must be between 1 and {DECIMAL_PRECISION_MAX}"
        )));
    }
    if scale < 0 || scale as u64 > precision {
        return Err(Error::InvalidParameterValue(format!(
            "NUMERIC scale {scale} must be between 0 and precision {precision}"
        )));
    }
    Ok(DataType::Decimal { precision: precision as u8, scale: scale as u8 })
}

fn text_length(len: &Option<ast::CharacterLength>, default: u32) -> Result<u32> {
    match len {
        None => Ok(default),
        Some(ast::CharacterLength::IntegerLength { length, .. }) => {
            if *length == 0 || *length > TEXT_LENGTH_MAX {
                Err(Error::InvalidParameterValue(format!(
                    "length for type varchar must be between 1 and {TEXT_LENGTH_MAX}"
                )))
            } else {
                Ok(*length as u32)
            }
        }
        Some(ast::CharacterLength::Max) => Ok(TEXT_LENGTH_MAX as u32),
    }
}

/// The value stored into a column of type `ty`; see the module essay.
pub fn assign(value: Value, ty: &DataType) -> Result<Value> {
    if value.is_null() {
        return Ok(value);
    }
    match ty {
        DataType::SmallInt | DataType::Int | DataType::BigInt => {
            let i = match value {
                Value::Int(i) => i,
                Value::Decimal(d) => decimal_to_i64(d, ty)?,
                Value::Float(x) => float_to_i64(x, ty)?,
                Value::Text(s) => parse_int(&s, ty)?,
                other => return Err(mismatch(ty, &other)),
            };
            check_int_range(i, ty)?;
            Ok(Value::Int(i))
        }
        DataType::Decimal { precision, scale } => {
            let d = match value {
                Value::Decimal(d) => d,
                Value::Int(i) => Decimal::from(i),
                Value::Float(x) => float_to_decimal(x)?,
                Value::Text(s) => parse_decimal(&s)?,
                other => return Err(mismatch(ty, &other)),
            };
            fit_decimal(d, *precision, *scale).map(Value::Decimal)
        }
        DataType::Real | DataType::Double => {
            let x = match value {
                Value::Float(x) => x,
                Value::Int(i) => i as f64,
                Value::Decimal(d) => geodb_storage::value::decimal_to_f64(&d),
                Value::Text(s) => parse_float(&s, ty)?,
                other => return Err(mismatch(ty, &other)),
            };
            if *ty == DataType::Real {
                let narrow = x as f32;
                if narrow.is_infinite() && x.is_finite() {
                    return Err(Error::out_of_range("value"));
                }
                Ok(Value::Float(f64::from(narrow)))
            } else {
                Ok(Value::Float(x))
            }
        }
        DataType::Char(n) | DataType::Varchar(n) => {
            let s = text_form(value);
            // PostgreSQL: trailing spaces past the length are cut, not an error.
            let s = if s.chars().count() > *n as usize {
                let cut: String = s.chars().take(*n as usize).collect();
                if s[cut.len()..].chars().all(|c| c == ' ') {
                    cut
                } else {
                    return Err(Error::StringTooLong(format!("value too long for type {}", ty.sql_name())));
                }
            } else {
                s
            };
            Ok(Value::Text(s))
        }
        DataType::Text => Ok(Value::Text(text_form(value))),
        DataType::Bool => match value {
            Value::Bool(b) => Ok(Value::Bool(b)),
            Value::Text(s) => parse_bool(&s).map(Value::Bool),
            other => Err(mismatch(ty, &other)),
        },
        DataType::Timestamp => match value {
            Value::Timestamp(t) => Ok(Value::Timestamp(t)),
            Value::Text(s) => parse_timestamp_text(&s).map(Value::Timestamp),
            other => Err(mismatch(ty, &other)),
        },
    }
}

/// A parameter (or untyped literal) given the type of its context: text
/// is parsed into that type, exact numbers widen into `DECIMAL`, floats
/// that are exact decimals become `DECIMAL`. Nothing is rounded and no
/// range is checked (the comparison or the assignment that follows does
/// that); a value that does not fit the context is returned unchanged.
pub fn coerce_param(value: Value, ty: &DataType) -> Result<Value> {
    match (value, ty) {
        (Value::Text(s), ty) if !ty.is_text() => match ty {
            DataType::SmallInt | DataType::Int | DataType::BigInt => {
                let t = s.trim();
                match t.parse::<i64>() {
                    Ok(i) => Ok(Value::Int(i)),
                    // A string holding a decimal compared with an integer
                    // column keeps its exact value.
                    Err(_) => parse_decimal(t).map(Value::Decimal).map_err(|_| Error::invalid_text(&ty.sql_name(), &s)),
                }
            }
            DataType::Decimal { .. } => parse_decimal(&s).map(Value::Decimal),
            DataType::Real | DataType::Double => parse_float(&s, ty).map(Value::Float),
            DataType::Bool => parse_bool(&s).map(Value::Bool),
            DataType::Timestamp => parse_timestamp_text(&s).map(Value::Timestamp),
            DataType::Char(_) | DataType::Varchar(_) | DataType::Text => Ok(Value::Text(s)),
        },
        (Value::Int(i), DataType::Decimal { .. }) => Ok(Value::Decimal(Decimal::from(i))),
        (Value::Float(x), DataType::Decimal { .. }) => Ok(float_to_decimal(x).map_or(Value::Float(x), Value::Decimal)),
        (value, _) => Ok(value),
    }
}

/// A value as a key component of a column of type `ty`, if it converts
/// exactly (an access path encodes it into the key). `None` means no row
/// can hold this value (NULL, `2.5` for an integer column, an integer out
/// of the column's range): an equality matches nothing, a range bound is
/// dropped (the filter still applies it).
pub fn key_value(value: Value, ty: &DataType) -> Option<Value> {
    if value.is_null() {
        return None;
    }
    let value = coerce_param(value, ty).ok()?;
    match (ty, value) {
        (DataType::SmallInt | DataType::Int | DataType::BigInt, v) => {
            let i = match v {
                Value::Int(i) => i,
                Value::Decimal(d) if d.fract().is_zero() => d.to_i64()?,
                Value::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e18 => x as i64,
                _ => return None,
            };
            check_int_range(i, ty).ok()?;
            Some(Value::Int(i))
        }
        (DataType::Decimal { .. }, Value::Decimal(d)) => Some(Value::Decimal(d)),
        (DataType::Decimal { .. }, Value::Int(i)) => Some(Value::Decimal(Decimal::from(i))),
        (DataType::Real | DataType::Double, Value::Float(x)) => Some(Value::Float(x)),
        (DataType::Real | DataType::Double, Value::Int(i)) => Some(Value::Float(i as f64)),
        (DataType::Real | DataType::Double, Value::Decimal(d)) => {
            Some(Value::Float(geodb_storage::value::decimal_to_f64(&d)))
        }
        (DataType::Char(_) | DataType::Varchar(_) | DataType::Text, Value::Text(s)) => Some(Value::Text(s)),
        (DataType::Bool, Value::Bool(b)) => Some(Value::Bool(b)),
        (DataType::Timestamp, Value::Timestamp(t)) => Some(Value::Timestamp(t)),
        _ => None,
    }
}

/// `CAST(value AS ty)`.
pub fn cast(value: Value, ty: &DataType) -> Result<Value> {
    match (&value, ty) {
        (Value::Int(i), DataType::Bool) => Ok(Value::Bool(*i != 0)),
        (Value::Bool(b), t) if t.is_integer() => Ok(Value::Int(i64::from(*b))),
        (Value::Float(_) | Value::Decimal(_), t) if t.is_integer() => {
            // CAST rounds half away from zero, like assignment.
            assign(value, ty)
        }
        // An explicit cast to a bounded text type truncates (PostgreSQL).
        (_, DataType::Char(n) | DataType::Varchar(n)) if !value.is_null() => {
            Ok(Value::Text(text_form(value).chars().take(*n as usize).collect()))
        }
        _ => assign(value, ty),
    }
}

/// The text form of a value (what `||` and text columns see).
pub fn text_form(value: Value) -> String {
    match value {
        Value::Text(s) => s,
        Value::Bool(b) => if b { "true" } else { "false" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Decimal(d) => d.to_string(),
        Value::Float(x) => float_text(x),
        Value::Timestamp(t) => geodb_storage::value::format_timestamp(t),
        Value::Null => String::new(),
    }
}

fn float_text(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        x.to_string()
    }
}

fn mismatch(ty: &DataType, value: &Value) -> Error {
    Error::DatatypeMismatch(format!("column is of type {} but expression is of type {}", ty.sql_name(), value.kind()))
}

/// Checks that an integer fits its column's width.
pub fn check_int_range(i: i64, ty: &DataType) -> Result<()> {
    let ok = match ty {
        DataType::SmallInt => i16::try_from(i).is_ok(),
        DataType::Int => i32::try_from(i).is_ok(),
        _ => true,
    };
    if ok { Ok(()) } else { Err(Error::out_of_range(&ty.sql_name())) }
}

fn decimal_to_i64(d: Decimal, ty: &DataType) -> Result<i64> {
    d.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .ok_or_else(|| Error::out_of_range(&ty.sql_name()))
}

fn float_to_i64(x: f64, ty: &DataType) -> Result<i64> {
    let r = x.round();
    // i64::MAX as f64 rounds up to 2^63, which does not fit.
    if r.is_finite() && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&r) {
        Ok(r as i64)
    } else {
        Err(Error::out_of_range(&ty.sql_name()))
    }
}

/// A float as the decimal it prints as (so `0.1` is exactly `0.1`).
pub fn float_to_decimal(x: f64) -> Result<Decimal> {
    if !x.is_finite() {
        return Err(Error::out_of_range("numeric"));
    }
    Decimal::from_str(&x.to_string())
        .or_else(|_| Decimal::from_scientific(&format!("{x:e}")))
        .map_err(|_| Error::out_of_range("numeric"))
}

/// Rounds to `scale` (half away from zero), checks `precision`, and pads
/// to exactly `scale` digits (`DECIMAL(6,2)` stores `1.5` as `1.50`).
pub fn fit_decimal(d: Decimal, precision: u8, scale: u8) -> Result<Decimal> {
    let mut d = d.round_dp_with_strategy(u32::from(scale), RoundingStrategy::MidpointAwayFromZero);
    let integer_digits_max = u32::from(precision - scale);
    let integer_part = d.trunc().abs();
    let limit = Decimal::from_i128_with_scale(10i128.pow(integer_digits_max), 0);
    if integer_part >= limit {
        return Err(Error::NumericOutOfRange(format!(
            "numeric field overflow: a field with precision {precision}, scale {scale} must round to an absolute value less than 10^{integer_digits_max}"
        )));
    }
    d.rescale(u32::from(scale));
    Ok(d)
}

pub fn parse_int(s: &str, ty: &DataType) -> Result<i64> {
    s.trim().parse::<i64>().map_err(|e| {
        if matches!(e.kind(), std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow) {
            Error::NumericOutOfRange(format!("value \"{s}\" is out of range for type {}", ty.sql_name()))
        } else {
            Error::invalid_text(&ty.sql_name(), s)
        }
    })
}

pub fn parse_decimal(s: &str) -> Result<Decimal> {
    let t = s.trim();
    Decimal::from_str(t).or_else(|_| Decimal::from_scientific(t)).map_err(|_| Error::invalid_text("numeric", s))
}

fn parse_float(s: &str, ty: &DataType) -> Result<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => Ok(f64::NAN),
        "infinity" | "inf" | "+infinity" => Ok(f64::INFINITY),
        "-infinity" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => t.parse::<f64>().map_err(|_| Error::invalid_text(&ty.sql_name(), s)),
    }
}

pub fn parse_bool(s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Ok(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Ok(false),
        _ => Err(Error::invalid_text("boolean", s)),
    }
}

fn parse_timestamp_text(s: &str) -> Result<i64> {
    parse_timestamp(s.trim())
        .ok_or_else(|| Error::InvalidDatetimeFormat(format!("invalid input syntax for type timestamp: \"{s}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Value {
        Value::Decimal(s.parse().unwrap())
    }

    #[test]
    fn decimal_assignment_rounds_pads_and_checks_precision() {
        let ty = DataType::Decimal { precision: 6, scale: 2 };
        assert_eq!(assign(dec("1.005"), &ty).unwrap().to_string(), "1.01");
        assert_eq!(assign(Value::Int(3), &ty).unwrap().to_string(), "3.00");
        assert_eq!(assign(Value::Text("12.5".into()), &ty).unwrap().to_string(), "12.50");
        assert_eq!(assign(dec("9999.99"), &ty).unwrap().to_string(), "9999.99");
        assert_eq!(assign(dec("9999.995"), &ty).unwrap_err().code(), "22003");
        assert_eq!(assign(Value::Text("abc".into()), &ty).unwrap_err().code(), "22P02");
    }

    #[test]
    fn integer_ranges() {
        assert_eq!(assign(Value::Int(40_000), &DataType::SmallInt).unwrap_err().code(), "22003");
        assert_eq!(assign(Value::Int(1 << 40), &DataType::Int).unwrap_err().code(), "22003");
        assert_eq!(assign(dec("2.5"), &DataType::Int).unwrap(), Value::Int(3));
        assert_eq!(assign(Value::Bool(true), &DataType::Int).unwrap_err().code(), "42804");
        assert_eq!(assign(Value::Text("x1".into()), &DataType::Int).unwrap_err().code(), "22P02");
    }

    #[test]
    fn text_lengths() {
        assert_eq!(assign(Value::Text("abcd".into()), &DataType::Varchar(3)).unwrap_err().code(), "22001");
        assert_eq!(assign(Value::Text("ab  ".into()), &DataType::Char(2)).unwrap(), Value::Text("ab".into()));
        assert_eq!(assign(Value::Int(12), &DataType::Text).unwrap(), Value::Text("12".into()));
    }

    #[test]
    fn params_take_their_context_type() {
        let ty = DataType::Decimal { precision: 12, scale: 2 };
        assert_eq!(coerce_param(Value::Text("1.25".into()), &ty).unwrap(), dec("1.25"));
        assert!(matches!(coerce_param(Value::Float(0.1), &ty).unwrap(), Value::Decimal(d) if d.to_string() == "0.1"));
        assert_eq!(
            coerce_param(Value::Text("2024-11-26T00:00:00Z".into()), &DataType::Timestamp).unwrap(),
            Value::Timestamp(parse_timestamp("2024-11-26T00:00:00Z").unwrap())
        );
        assert_eq!(coerce_param(Value::Text("bad".into()), &DataType::Timestamp).unwrap_err().code(), "22007");
        assert_eq!(coerce_param(Value::Int(5), &DataType::Int).unwrap(), Value::Int(5));
    }
}
