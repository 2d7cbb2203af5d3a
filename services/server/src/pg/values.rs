//! GeoDB values on the PostgreSQL wire: which PostgreSQL type each SQL
//! type is described as, and values in text and binary formats, both ways.
//!
//! | GeoDB type | PostgreSQL type | binary form |
//! |---|---|---|
//! | `SMALLINT`, `INT`, `BIGINT` | `int2`, `int4`, `int8` | big-endian two's complement |
//! | `DECIMAL(p,s)` | `numeric` | base-10000 digits, weight, sign, scale |
//! | `REAL`, `DOUBLE PRECISION` | `float4`, `float8` | IEEE 754, big-endian |
//! | `CHAR(n)`, `VARCHAR(n)`, `TEXT` | `bpchar`, `varchar`, `text` | UTF-8 |
//! | `BOOLEAN` | `bool` | one byte: 0 false, anything else true (as PostgreSQL reads it); 1 when sent |
//! | `TIMESTAMP` | `timestamptz` | microseconds since 2000-01-01 UTC |
//!
//! `TIMESTAMP` is described as `timestamptz` because a GeoDB timestamp is
//! an instant in UTC (RFC 3339 with `Z` over HTTP), which is what
//! PostgreSQL's `timestamptz` holds; its text form is
//! `2026-12-06 16:00:00+00`. Something with no type (`SELECT NULL`, a
//! parameter nothing types) is `text`.
//!
//! A parameter arrives as bytes in the format the client chose and becomes
//! a [`Value`]: binary by its type's layout (`22P03` when the layout is
//! wrong), text by the same conversion the SQL layer applies to a JSON
//! string parameter ([`geodb_sql::types::coerce_param`]), so a value that
//! does not fit its column answers the same SQLSTATE over both protocols.

use geodb_sql::types;
use geodb_storage::value::decimal_to_f64;
use geodb_storage::{DataType, Value};
use pgwire::api::Type;
use rust_decimal::Decimal;

use crate::http::ApiError;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The PostgreSQL type a GeoDB type is described as (`None`: untyped,
/// described as `text`).
pub fn pg_type_of(ty: Option<DataType>) -> Type {
    match ty {
        Some(DataType::SmallInt) => Type::INT2,
        Some(DataType::Int) => Type::INT4,
        Some(DataType::BigInt) => Type::INT8,
        Some(DataType::Decimal { .. }) => Type::NUMERIC,
        Some(DataType::Real) => Type::FLOAT4,
        Some(DataType::Double) => Type::FLOAT8,
        Some(DataType::Char(_)) => Type::BPCHAR,
        Some(DataType::Varchar(_)) => Type::VARCHAR,
        Some(DataType::Text) | None => Type::TEXT,
        Some(DataType::Bool) => Type::BOOL,
        Some(DataType::Timestamp) => Type::TIMESTAMPTZ,
    }
}

/// The GeoDB type a client-declared PostgreSQL type means for typing a
/// parameter; `None` for `unknown` (type it from context) and for types
/// GeoDB does not have (their values are taken as text).
pub fn data_type_of(ty: &Type) -> Option<DataType> {
    Some(match *ty {
        Type::INT2 => DataType::SmallInt,
        Type::INT4 => DataType::Int,
        Type::INT8 => DataType::BigInt,
        Type::NUMERIC => DataType::Decimal { precision: geodb_sql::limits::DECIMAL_PRECISION_MAX as u8, scale: 0 },
        Type::FLOAT4 => DataType::Real,
        Type::FLOAT8 => DataType::Double,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Text,
        Type::BOOL => DataType::Bool,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DataType::Timestamp,
        _ => return None,
    })
}

/// One bound parameter (`$index`, counted from 1 in messages) as a value.
pub fn decode_param(index: usize, ty: &Type, bytes: Option<&[u8]>, binary: bool) -> Result<Value, ApiError> {
    let Some(bytes) = bytes else { return Ok(Value::Null) };
    if binary {
        return decode_binary(ty, bytes).map_err(|problem| {
            ApiError::new("22P03", format!("incorrect binary data format in bind parameter {index}: {problem}"))
        });
    }
    let text = utf8(bytes).map_err(|problem| ApiError::new("22021", format!("bind parameter {index}: {problem}")))?;
    let text = Value::Text(text.to_string());
    match data_type_of(ty) {
        Some(ty) if !ty.is_text() => Ok(types::coerce_param(text, &ty)?),
        _ => Ok(text),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|error| format!("invalid byte sequence for encoding \"UTF8\": {error}"))
}

fn decode_binary(ty: &Type, bytes: &[u8]) -> Result<Value, String> {
    fn exactly<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
        bytes.try_into().map_err(|_| format!("{} bytes where {N} were expected", bytes.len()))
    }
    Ok(match *ty {
        Type::INT2 => Value::Int(i64::from(i16::from_be_bytes(exactly(bytes)?))),
        Type::INT4 => Value::Int(i64::from(i32::from_be_bytes(exactly(bytes)?))),
        Type::INT8 => Value::Int(i64::from_be_bytes(exactly(bytes)?)),
        Type::FLOAT4 => Value::Float(f64::from(f32::from_be_bytes(exactly(bytes)?))),
        Type::FLOAT8 => Value::Float(f64::from_be_bytes(exactly(bytes)?)),
        // As PostgreSQL reads it: any byte but 0 is true.
        Type::BOOL => Value::Bool(exactly::<1>(bytes)? != [0]),
        Type::NUMERIC => Value::Decimal(decode_numeric(bytes)?),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_be_bytes(exactly(bytes)?);
            Value::Timestamp(micros.checked_add(POSTGRES_EPOCH_MICROS).ok_or("timestamp out of range")?)
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Value::Text(utf8(bytes)?.to_string()),
        _ => return Err(format!("GeoDB takes no binary parameters of type {}", ty.name())),
    })
}

/// `numeric`'s binary form: digit count, weight (of the first base-10000
/// digit), sign, display scale, then the digits.
fn decode_numeric(bytes: &[u8]) -> Result<Decimal, String> {
    let word = |i: usize| -> Result<u16, String> {
        bytes.get(2 * i..2 * i + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or("numeric too short".to_string())
    };
    let digits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let scale = u32::from(word(3)?);
    if bytes.len() != 8 + 2 * digits {
        return Err(format!("numeric of {digits} digits in {} bytes", bytes.len()));
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN is not a DECIMAL value".into()),
        _ => return Err("infinity is not a DECIMAL value".into()),
    }
    let out_of_range = || "numeric value out of DECIMAL's range".to_string();
    // mantissa · 10000^(weight + 1 - digits)
    let mut mantissa: i128 = 0;
    for i in 0..digits {
        let digit = word(4 + i)?;
        if digit >= 10_000 {
            return Err(format!("numeric digit {digit} is not below 10000"));
        }
        mantissa =
            mantissa.checked_mul(10_000).and_then(|m| m.checked_add(i128::from(digit))).ok_or_else(out_of_range)?;
    }
    let exponent = weight + 1 - digits as i64;
    let mut decimal = if exponent >= 0 {
        let factor = 10_000i128.checked_pow(exponent as u32).ok_or_else(out_of_range)?;
        Decimal::try_from_i128_with_scale(mantissa.checked_mul(factor).ok_or_else(out_of_range)?, 0)
    } else {
        Decimal::try_from_i128_with_scale(mantissa, (-exponent * 4) as u32)
    }
    .map_err(|_| out_of_range())?;
    if sign == 0x4000 {
        decimal.set_sign_negative(true);
    }
    // The display scale the client asked for, within DECIMAL's 28 digits.
    decimal.rescale(scale.min(28));
    Ok(decimal)
}

/// `value` as a column described as `ty` sends it, in text or binary
/// format; `None` for NULL. A value that does not fit the described type
/// (an `int4` column whose 64-bit sum overflowed it) is `22003`.
pub fn encode(value: &Value, ty: &Type, binary: bool) -> Result<Option<Vec<u8>>, ApiError> {
    let value = conform(value, ty)?;
    if value.is_null() {
        return Ok(None);
    }
    Ok(Some(if binary { encode_binary(&value, ty) } else { encode_text(&value, ty).into_bytes() }))
}

/// The value converted to the kind the described type holds.
fn conform(value: &Value, ty: &Type) -> Result<Value, ApiError> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    let mismatch =
        || ApiError::new("XX000", format!("a {} value in a column described as {}", value.kind(), ty.name()));
    Ok(match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 => {
            let target = data_type_of(ty).expect("an integer type");
            match value {
                Value::Int(_) | Value::Decimal(_) => types::assign(value.clone(), &target)?,
                _ => return Err(mismatch()),
            }
        }
        Type::NUMERIC => match value {
            Value::Decimal(d) => Value::Decimal(*d),
            Value::Int(i) => Value::Decimal(Decimal::from(*i)),
            _ => return Err(mismatch()),
        },
        Type::FLOAT4 | Type::FLOAT8 => match value {
            Value::Float(x) => Value::Float(*x),
            Value::Int(i) => Value::Float(*i as f64),
            Value::Decimal(d) => Value::Float(decimal_to_f64(d)),
            _ => return Err(mismatch()),
        },
        Type::BOOL => match value {
            Value::Bool(b) => Value::Bool(*b),
            _ => return Err(mismatch()),
        },
        Type::TIMESTAMPTZ => match value {
            Value::Timestamp(t) => Value::Timestamp(*t),
            _ => return Err(mismatch()),
        },
        // Text types, and `text` for untyped columns: any value's text.
        _ => match value {
            Value::Text(s) => Value::Text(s.clone()),
            other => Value::Text(super::text_of(other).unwrap_or_default()),
        },
    })
}

fn encode_text(value: &Value, ty: &Type) -> String {
    match value {
        // A REAL is held widened to f64: print it as the f32 it is.
        Value::Float(x) if *ty == Type::FLOAT4 && x.is_finite() => super::float_text(*x as f32, 1e6),
        other => super::text_of(other).unwrap_or_default(),
    }
}

fn encode_binary(value: &Value, ty: &Type) -> Vec<u8> {
    match (value, ty) {
        (Value::Int(i), &Type::INT2) => (*i as i16).to_be_bytes().to_vec(),
        (Value::Int(i), &Type::INT4) => (*i as i32).to_be_bytes().to_vec(),
        (Value::Int(i), _) => i.to_be_bytes().to_vec(),
        (Value::Float(x), &Type::FLOAT4) => (*x as f32).to_be_bytes().to_vec(),
        (Value::Float(x), _) => x.to_be_bytes().to_vec(),
        (Value::Bool(b), _) => vec![u8::from(*b)],
        (Value::Decimal(d), _) => encode_numeric(d),
        (Value::Timestamp(t), _) => (t - POSTGRES_EPOCH_MICROS).to_be_bytes().to_vec(),
        (Value::Text(s), _) => s.as_bytes().to_vec(),
        (Value::Null, _) => unreachable!("NULL is sent as no bytes"),
    }
}

/// A decimal in `numeric`'s binary form (see [`decode_numeric`]).
fn encode_numeric(decimal: &Decimal) -> Vec<u8> {
    let scale = decimal.scale();
    let text = decimal.abs().to_string();
    let (integer, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let integer = integer.trim_start_matches('0');
    // Whole groups of four digits on each side of the point.
    let integer = format!("{}{integer}", "0".repeat((4 - integer.len() % 4) % 4));
    let fraction = format!("{fraction}{}", "0".repeat((4 - fraction.len() % 4) % 4));
    let group = |s: &str| -> Vec<u16> {
        s.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).expect("ASCII digits").parse().expect("digits")).collect()
    };
    let mut digits: Vec<u16> = group(&integer);
    let mut weight = digits.len() as i16 - 1;
    digits.extend(group(&fraction));
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let sign: u16 = if decimal.is_sign_negative() && !digits.is_empty() { 0x4000 } else { 0 };
    let mut out = Vec::with_capacity(8 + 2 * digits.len());
    out.extend((digits.len() as u16).to_be_bytes());
    out.extend(weight.to_be_bytes());
    out.extend(sign.to_be_bytes());
    out.extend((scale as u16).to_be_bytes());
    for digit in digits {
        out.extend(digit.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn numerics_round_trip_through_the_binary_form() {
        for text in
            ["0", "0.00", "1", "-1", "100.00", "12345.6789", "0.0001", "-0.5", "10000", "99999999999999999999.12345678"]
        {
            let decimal = dec(text);
            let back = decode_numeric(&encode_numeric(&decimal)).unwrap();
            assert_eq!(back.to_string(), decimal.to_string(), "{text}");
        }
        // 1.5 as PostgreSQL sends it: one digit before the point, one after.
        let bytes = [0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert_eq!(decode_numeric(&bytes).unwrap().to_string(), "1.5");
        assert!(decode_numeric(&[0, 0, 0, 0, 0xC0, 0, 0, 0]).is_err(), "NaN");
        assert!(decode_numeric(&[0, 1, 0, 0]).is_err(), "short");
    }

    #[test]
    fn binary_parameters_are_checked_against_their_type() {
        assert_eq!(decode_param(1, &Type::INT8, Some(&7i64.to_be_bytes()), true).unwrap(), Value::Int(7));
        assert_eq!(decode_param(1, &Type::INT4, Some(&[0, 0, 0, 7]), true).unwrap(), Value::Int(7));
        assert_eq!(decode_param(1, &Type::INT8, Some(&[0, 7]), true).unwrap_err().code, "22P03");
        assert_eq!(decode_param(1, &Type::BOOL, Some(&[2]), true).unwrap(), Value::Bool(true));
        assert_eq!(decode_param(1, &Type::BOOL, Some(&[0]), true).unwrap(), Value::Bool(false));
        assert_eq!(decode_param(1, &Type::BOOL, Some(&[1, 0]), true).unwrap_err().code, "22P03");
        assert_eq!(decode_param(1, &Type::TEXT, Some(&[0xff]), true).unwrap_err().code, "22P03");
        assert_eq!(decode_param(1, &Type::INT8, None, true).unwrap(), Value::Null);
        let epoch = decode_param(1, &Type::TIMESTAMPTZ, Some(&(-POSTGRES_EPOCH_MICROS).to_be_bytes()), true);
        assert_eq!(epoch.unwrap(), Value::Timestamp(0));
    }

    #[test]
    fn text_parameters_convert_as_json_strings_do() {
        assert_eq!(decode_param(1, &Type::INT8, Some(b"42"), false).unwrap(), Value::Int(42));
        assert_eq!(decode_param(1, &Type::INT8, Some(b"forty"), false).unwrap_err().code, "22P02");
        assert_eq!(decode_param(1, &Type::BOOL, Some(b"t"), false).unwrap(), Value::Bool(true));
        assert_eq!(decode_param(1, &Type::TEXT, Some(b"42"), false).unwrap(), Value::Text("42".into()));
    }

    #[test]
    fn values_fit_the_type_they_are_described_as() {
        assert_eq!(encode(&Value::Int(7), &Type::INT4, true).unwrap(), Some(vec![0, 0, 0, 7]));
        assert_eq!(encode(&Value::Int(1 << 40), &Type::INT4, true).unwrap_err().code, "22003");
        assert_eq!(encode(&Value::Int(3), &Type::NUMERIC, false).unwrap(), Some(b"3".to_vec()));
        assert_eq!(encode(&Value::Float(0.1f32 as f64), &Type::FLOAT4, false).unwrap(), Some(b"0.1".to_vec()));
        assert_eq!(encode(&Value::Null, &Type::INT8, true).unwrap(), None);
        assert_eq!(encode(&Value::Bool(true), &Type::TEXT, false).unwrap(), Some(b"t".to_vec()));
        assert_eq!(
            encode(&Value::Timestamp(0), &Type::TIMESTAMPTZ, true).unwrap(),
            Some((-POSTGRES_EPOCH_MICROS).to_be_bytes().to_vec())
        );
    }
}
