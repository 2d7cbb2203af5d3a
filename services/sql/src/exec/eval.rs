//! Expression evaluation, with SQL's three-valued logic.
//!
//! NULL propagates through arithmetic and comparisons (the result is
//! unknown); `AND`/`OR` follow Kleene logic (`false AND NULL` is false,
//! `true OR NULL` is true); a `WHERE` keeps a row only when its condition
//! is true ([`is_true`]). Integer arithmetic is checked (22003), division
//! and modulo by zero are 22012, decimal arithmetic is exact
//! (`rust_decimal`) and checked, and a float result that overflows is
//! 22003. Text meeting a number, timestamp or boolean (an untyped
//! parameter) is converted to it first, as PostgreSQL does with unknown
//! literals.

use std::cmp::Ordering;

use geodb_storage::{DataType, Value};
use rust_decimal::Decimal;

use crate::error::{Error, Result};
use crate::plan::expr::{ArithOp, CmpOp, Expr};
use crate::types;

/// Evaluates `expr` over `row` with bound `params`.
pub fn eval(expr: &Expr, row: &[Value], params: &[Value]) -> Result<Value> {
    Ok(match expr {
        Expr::Literal(v) => v.clone(),
        Expr::Param(i) => params[*i].clone(),
        Expr::Column(c) => row[*c].clone(),
        Expr::Neg(e) => match eval(e, row, params)? {
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(i.checked_neg().ok_or_else(|| Error::out_of_range("bigint"))?),
            Value::Decimal(d) => Value::Decimal(-d),
            Value::Float(x) => Value::Float(-x),
            Value::Text(s) => Value::Decimal(-types::parse_decimal(&s)?),
            other => return Err(Error::UndefinedFunction(format!("operator does not exist: - {}", other.kind()))),
        },
        Expr::Not(e) => match truth(eval(e, row, params)?)? {
            Some(b) => Value::Bool(!b),
            None => Value::Null,
        },
        Expr::And(a, b) => {
            let left = truth(eval(a, row, params)?)?;
            if left == Some(false) {
                return Ok(Value::Bool(false));
            }
            match (left, truth(eval(b, row, params)?)?) {
                (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            }
        }
        Expr::Or(a, b) => {
            let left = truth(eval(a, row, params)?)?;
            if left == Some(true) {
                return Ok(Value::Bool(true));
            }
            match (left, truth(eval(b, row, params)?)?) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            }
        }
        Expr::Arith(op, a, b) => arith(*op, eval(a, row, params)?, eval(b, row, params)?)?,
        Expr::Concat(a, b) => match (eval(a, row, params)?, eval(b, row, params)?) {
            (Value::Null, _) | (_, Value::Null) => Value::Null,
            (a, b) => {
                let mut text = types::text_form(a);
                text.push_str(&types::text_form(b));
                Value::Text(text)
            }
        },
        Expr::Compare(op, a, b) => {
            let (a, b) = (eval(a, row, params)?, eval(b, row, params)?);
            match compare(&a, &b)? {
                None => Value::Null,
                Some(ord) => Value::Bool(match op {
                    CmpOp::Eq => ord == Ordering::Equal,
                    CmpOp::NotEq => ord != Ordering::Equal,
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::LtEq => ord != Ordering::Greater,
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::GtEq => ord != Ordering::Less,
                }),
            }
        }
        Expr::IsNull { expr, negated } => Value::Bool(eval(expr, row, params)?.is_null() != *negated),
        Expr::InList { expr, list, negated } => {
            let value = eval(expr, row, params)?;
            if value.is_null() {
                return Ok(Value::Null);
            }
            let mut saw_null = false;
            let mut found = false;
            for item in list {
                match compare(&value, &eval(item, row, params)?)? {
                    Some(Ordering::Equal) => {
                        found = true;
                        break;
                    }
                    Some(_) => {}
                    None => saw_null = true,
                }
            }
            if found {
                Value::Bool(!negated)
            } else if saw_null {
                Value::Null
            } else {
                Value::Bool(*negated)
            }
        }
        Expr::Between { expr, low, high, negated } => {
            let value = eval(expr, row, params)?;
            let low = compare(&value, &eval(low, row, params)?)?.map(|o| o != Ordering::Less);
            let high = compare(&value, &eval(high, row, params)?)?.map(|o| o != Ordering::Greater);
            let within = match (low, high) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            match within {
                Some(b) => Value::Bool(b != *negated),
                None => Value::Null,
            }
        }
        Expr::Like { expr, pattern, negated, case_insensitive } => {
            match (eval(expr, row, params)?, eval(pattern, row, params)?) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (text, pattern) => {
                    let (mut text, mut pattern) = (types::text_form(text), types::text_form(pattern));
                    if *case_insensitive {
                        text = text.to_lowercase();
                        pattern = pattern.to_lowercase();
                    }
                    Value::Bool(like(&text, &pattern) != *negated)
                }
            }
        }
        Expr::Cast(e, ty) => types::cast(eval(e, row, params)?, ty)?,
        Expr::Coalesce(list) => {
            for e in list {
                let v = eval(e, row, params)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            Value::Null
        }
    })
}

/// Whether a condition is true (NULL and false both reject the row).
pub fn is_true(expr: &Expr, row: &[Value], params: &[Value]) -> Result<bool> {
    Ok(truth(eval(expr, row, params)?)? == Some(true))
}

/// A value as a truth value: `None` for NULL.
fn truth(value: Value) -> Result<Option<bool>> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        Value::Text(s) => types::parse_bool(&s).map(Some),
        other => Err(Error::DatatypeMismatch(format!(
            "argument of boolean operator must be type boolean, not type {}",
            other.kind()
        ))),
    }
}

/// SQL comparison: `None` when either side is NULL; text meeting another
/// kind is converted to it; incomparable kinds are 42883.
pub fn compare(a: &Value, b: &Value) -> Result<Option<Ordering>> {
    if a.is_null() || b.is_null() {
        return Ok(None);
    }
    if let Some(ord) = a.sql_cmp(b) {
        return Ok(Some(ord));
    }
    let converted = match (a, b) {
        (Value::Text(s), other) => {
            context_type(other).map(|ty| (types::coerce_param(Value::Text(s.clone()), &ty), true))
        }
        (other, Value::Text(s)) => {
            context_type(other).map(|ty| (types::coerce_param(Value::Text(s.clone()), &ty), false))
        }
        _ => None,
    };
    if let Some((value, text_on_left)) = converted {
        let value = value?;
        let ord = if text_on_left { value.sql_cmp(b) } else { a.sql_cmp(&value) };
        if let Some(ord) = ord {
            return Ok(Some(ord));
        }
    }
    Err(Error::UndefinedFunction(format!("operator does not exist: {} = {}", a.kind(), b.kind())))
}

/// The type a text value should be read as next to `value`.
fn context_type(value: &Value) -> Option<DataType> {
    match value {
        Value::Int(_) | Value::Decimal(_) => Some(DataType::Decimal { precision: 28, scale: 0 }),
        Value::Float(_) => Some(DataType::Double),
        Value::Bool(_) => Some(DataType::Bool),
        Value::Timestamp(_) => Some(DataType::Timestamp),
        Value::Text(_) | Value::Null => None,
    }
}

/// Arithmetic on two values.
pub fn arith(op: ArithOp, a: Value, b: Value) -> Result<Value> {
    use Value::*;
    Ok(match (a, b) {
        (Null, _) | (_, Null) => Null,
        (Int(x), Int(y)) => Int(match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Sub => x.checked_sub(y),
            ArithOp::Mul => x.checked_mul(y),
            ArithOp::Div if y == 0 => return Err(Error::DivisionByZero),
            ArithOp::Div => x.checked_div(y),
            ArithOp::Rem if y == 0 => return Err(Error::DivisionByZero),
            ArithOp::Rem => Some(x.checked_rem(y).unwrap_or(0)),
        }
        .ok_or_else(|| Error::out_of_range("bigint"))?),
        // An untyped text operand (a parameter without context) next to a
        // number is read as a number.
        (Text(s), other @ (Int(_) | Decimal(_) | Float(_))) => arith(op, Decimal(types::parse_decimal(&s)?), other)?,
        (other @ (Int(_) | Decimal(_) | Float(_)), Text(s)) => arith(op, other, Decimal(types::parse_decimal(&s)?))?,
        (Float(x), y) => float_arith(op, x, as_float(y)?)?,
        (x, Float(y)) => float_arith(op, as_float(x)?, y)?,
        (Decimal(x), y) => decimal_arith(op, x, as_decimal(y)?)?,
        (x, Decimal(y)) => decimal_arith(op, as_decimal(x)?, y)?,
        (a, b) => {
            return Err(Error::UndefinedFunction(format!(
                "operator does not exist: {} {} {}",
                a.kind(),
                symbol(op),
                b.kind()
            )));
        }
    })
}

fn symbol(op: ArithOp) -> &'static str {
    match op {
        ArithOp::Add => "+",
        ArithOp::Sub => "-",
        ArithOp::Mul => "*",
        ArithOp::Div => "/",
        ArithOp::Rem => "%",
    }
}

fn as_float(v: Value) -> Result<f64> {
    match v {
        Value::Float(x) => Ok(x),
        Value::Int(i) => Ok(i as f64),
        Value::Decimal(d) => Ok(geodb_storage::value::decimal_to_f64(&d)),
        other => {
            Err(Error::UndefinedFunction(format!("operator does not exist: double precision and {}", other.kind())))
        }
    }
}

fn as_decimal(v: Value) -> Result<Decimal> {
    match v {
        Value::Decimal(d) => Ok(d),
        Value::Int(i) => Ok(Decimal::from(i)),
        other => Err(Error::UndefinedFunction(format!("operator does not exist: numeric and {}", other.kind()))),
    }
}

fn float_arith(op: ArithOp, x: f64, y: f64) -> Result<Value> {
    let r = match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div if y == 0.0 => return Err(Error::DivisionByZero),
        ArithOp::Div => x / y,
        ArithOp::Rem if y == 0.0 => return Err(Error::DivisionByZero),
        ArithOp::Rem => x % y,
    };
    if r.is_infinite() && x.is_finite() && y.is_finite() {
        return Err(Error::NumericOutOfRange("value out of range: overflow".into()));
    }
    Ok(Value::Float(r))
}

fn decimal_arith(op: ArithOp, x: Decimal, y: Decimal) -> Result<Value> {
    let r = match op {
        ArithOp::Add => x.checked_add(y),
        ArithOp::Sub => x.checked_sub(y),
        ArithOp::Mul => x.checked_mul(y),
        ArithOp::Div if y.is_zero() => return Err(Error::DivisionByZero),
        ArithOp::Div => x.checked_div(y),
        ArithOp::Rem if y.is_zero() => return Err(Error::DivisionByZero),
        ArithOp::Rem => x.checked_rem(y),
    };
    r.map(Value::Decimal).ok_or_else(|| Error::out_of_range("numeric"))
}

/// SQL `LIKE`: `%` matches any run of characters, `_` one character, and
/// `\` escapes the next pattern character.
pub fn like(text: &str, pattern: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Any,
        One,
        Char(char),
    }
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            c => Token::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // Greedy matching with one backtrack point (the last `%`): linear in
    // practice and never exponential.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|t| *t == Token::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("hello", "h%o"));
        assert!(like("hello", "h_llo"));
        assert!(like("hello", "%"));
        assert!(!like("hello", "h_o"));
        assert!(like("50%", "50\\%"));
        assert!(!like("500", "50\\%"));
        assert!(like("abcabc", "%abc"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
    }

    #[test]
    fn three_valued_logic() {
        let null = Expr::Literal(Value::Null);
        let f = Expr::Literal(Value::Bool(false));
        let t = Expr::Literal(Value::Bool(true));
        let and = Expr::And(Box::new(null.clone()), Box::new(f.clone()));
        assert_eq!(eval(&and, &[], &[]).unwrap(), Value::Bool(false));
        let or = Expr::Or(Box::new(null.clone()), Box::new(t));
        assert_eq!(eval(&or, &[], &[]).unwrap(), Value::Bool(true));
        let not = Expr::Not(Box::new(null));
        assert!(eval(&not, &[], &[]).unwrap().is_null());
    }

    #[test]
    fn arithmetic_errors() {
        assert_eq!(arith(ArithOp::Add, Value::Int(i64::MAX), Value::Int(1)).unwrap_err().code(), "22003");
        assert_eq!(arith(ArithOp::Div, Value::Int(1), Value::Int(0)).unwrap_err().code(), "22012");
        assert_eq!(arith(ArithOp::Rem, Value::Int(i64::MIN), Value::Int(-1)).unwrap(), Value::Int(0));
        let d = |s: &str| Value::Decimal(s.parse().unwrap());
        assert_eq!(arith(ArithOp::Add, d("0.1"), d("0.2")).unwrap(), d("0.3"));
        assert_eq!(arith(ArithOp::Div, d("1"), Value::Int(0)).unwrap_err().code(), "22012");
    }
}
