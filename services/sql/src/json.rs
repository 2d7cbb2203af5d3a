//! The JSON form of SQL values (API.md, "Values").
//!
//! | SQL | JSON |
//! |---|---|
//! | integers | number |
//! | `DECIMAL` | string holding the exact decimal (`"0.1234"`) |
//! | `REAL`, `DOUBLE PRECISION` | number; NaN and infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | text | string |
//! | `BOOLEAN` | boolean |
//! | `TIMESTAMP` | RFC 3339 string (UTC) |
//! | `NULL` | `null` |
//!
//! Parameters use the same forms. A JSON string parameter stays
//! [`Value::Text`] here; the planner coerces it to the type its context
//! wants (a `DECIMAL` column, a `TIMESTAMP` column, ...), see
//! [`crate::types::coerce_param`].

use geodb_storage::Value;
use geodb_storage::value::format_timestamp;

use crate::error::{Error, Result};

/// The JSON form of one value.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Float(x) => float_to_json(*x),
        Value::Decimal(d) => serde_json::Value::String(d.to_string()),
        Value::Text(s) => serde_json::Value::String(s.clone()),
        Value::Timestamp(micros) => serde_json::Value::String(format_timestamp(*micros)),
    }
}

fn float_to_json(x: f64) -> serde_json::Value {
    if x.is_nan() {
        serde_json::Value::String("NaN".into())
    } else if x.is_infinite() {
        serde_json::Value::String(if x > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// A parameter from its JSON form: integral numbers that fit `i64` are
/// `Int`, other numbers `Float`, strings `Text` (coerced later by
/// context), booleans `Bool`, `null` NULL. Arrays and objects are 22023.
pub fn json_to_param(json: &serde_json::Value) -> Result<Value> {
    match json {
        serde_json::Value::Null => Ok(Value::Null),
        serde_json::Value::Bool(b) => Ok(Value::Bool(*b)),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Value::Int(i))
            } else if let Some(x) = n.as_f64() {
                Ok(Value::Float(x))
            } else {
                Err(Error::InvalidParameterValue(format!("number {n} cannot be a parameter")))
            }
        }
        serde_json::Value::String(s) => Ok(Value::Text(s.clone())),
        serde_json::Value::Array(_) => Err(Error::InvalidParameterValue("a parameter cannot be a JSON array".into())),
        serde_json::Value::Object(_) => Err(Error::InvalidParameterValue("a parameter cannot be a JSON object".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_map_as_the_api_says() {
        assert_eq!(value_to_json(&Value::Int(3002)), json!(3002));
        assert_eq!(value_to_json(&Value::Decimal("0.1234".parse().unwrap())), json!("0.1234"));
        assert_eq!(value_to_json(&Value::Decimal("10.50".parse().unwrap())), json!("10.50"));
        assert_eq!(value_to_json(&Value::Float(1.5)), json!(1.5));
        assert_eq!(value_to_json(&Value::Float(f64::NAN)), json!("NaN"));
        assert_eq!(value_to_json(&Value::Float(f64::NEG_INFINITY)), json!("-Infinity"));
        assert_eq!(value_to_json(&Value::Text("x".into())), json!("x"));
        assert_eq!(value_to_json(&Value::Bool(true)), json!(true));
        assert_eq!(value_to_json(&Value::Timestamp(0)), json!("1970-01-01T00:00:00Z"));
        assert_eq!(value_to_json(&Value::Null), json!(null));
    }

    #[test]
    fn params_map_back() {
        assert_eq!(json_to_param(&json!(7)).unwrap(), Value::Int(7));
        assert!(matches!(json_to_param(&json!(1.5)).unwrap(), Value::Float(x) if x == 1.5));
        assert!(matches!(json_to_param(&json!(u64::MAX)).unwrap(), Value::Float(_)));
        assert_eq!(json_to_param(&json!("12.5")).unwrap(), Value::Text("12.5".into()));
        assert_eq!(json_to_param(&json!(null)).unwrap(), Value::Null);
        assert_eq!(json_to_param(&json!([1])).unwrap_err().code(), "22023");
        assert_eq!(json_to_param(&json!({"a": 1})).unwrap_err().code(), "22023");
    }
}
