//! Aggregate functions: `COUNT(*)`, `COUNT(x)`, `SUM`, `MIN`, `MAX`,
//! `AVG`, each optionally over `DISTINCT` values.
//!
//! NULL inputs are skipped; `COUNT` of nothing is 0 and every other
//! aggregate of nothing is NULL. `SUM` of integers is exact (an `i128`
//! accumulator; the result is an integer when it fits `i64`, else a
//! decimal), of decimals a checked decimal (22003 on overflow), of floats
//! a float. `AVG` of integers or decimals is a decimal (PostgreSQL returns
//! numeric), rounded to [`AVG_SCALE`] digits.

use std::collections::BTreeSet;

use geodb_storage::Value;
use rust_decimal::Decimal;

use crate::error::{Error, Result};
use crate::exec::sort::OrdValue;
use crate::plan::bind::{AggFunc, AggSpec};

/// Fractional digits of an `AVG` of exact numbers (PostgreSQL shows 16 for
/// an average of integers).
pub const AVG_SCALE: u32 = 16;

/// The running state of one aggregate in one group.
#[derive(Debug)]
pub struct Accumulator {
    func: AggFunc,
    seen: Option<BTreeSet<OrdValue>>,
    count: i64,
    sum: Sum,
    extreme: Option<Value>,
}

#[derive(Debug)]
enum Sum {
    Empty,
    Int(i128),
    Decimal(Decimal),
    Float(f64),
}

impl Accumulator {
    pub fn new(spec: &AggSpec) -> Accumulator {
        Accumulator {
            func: spec.func,
            seen: spec.distinct.then(BTreeSet::new),
            count: 0,
            sum: Sum::Empty,
            extreme: None,
        }
    }

    /// Adds one input (`None` for `COUNT(*)`, which counts rows).
    pub fn add(&mut self, value: Option<Value>) -> Result<()> {
        let Some(value) = value else {
            self.count += 1;
            return Ok(());
        };
        if value.is_null() {
            return Ok(());
        }
        if let Some(seen) = &mut self.seen
            && !seen.insert(OrdValue(value.clone()))
        {
            return Ok(());
        }
        self.count += 1;
        match self.func {
            AggFunc::Count => {}
            AggFunc::Sum | AggFunc::Avg => {
                self.sum = add(std::mem::replace(&mut self.sum, Sum::Empty), value, self.func)?
            }
            AggFunc::Min => {
                if self.extreme.as_ref().is_none_or(|m| value.total_cmp(m).is_lt()) {
                    self.extreme = Some(value);
                }
            }
            AggFunc::Max => {
                if self.extreme.as_ref().is_none_or(|m| value.total_cmp(m).is_gt()) {
                    self.extreme = Some(value);
                }
            }
        }
        Ok(())
    }

    /// The aggregate's result.
    pub fn finish(self) -> Result<Value> {
        Ok(match self.func {
            AggFunc::Count => Value::Int(self.count),
            AggFunc::Min | AggFunc::Max => self.extreme.unwrap_or(Value::Null),
            AggFunc::Sum => match self.sum {
                Sum::Empty => Value::Null,
                Sum::Int(i) => match i64::try_from(i) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Decimal(
                        Decimal::try_from_i128_with_scale(i, 0).map_err(|_| Error::out_of_range("numeric"))?,
                    ),
                },
                Sum::Decimal(d) => Value::Decimal(d),
                Sum::Float(x) => Value::Float(x),
            },
            AggFunc::Avg => {
                let count = self.count;
                match self.sum {
                    Sum::Empty => Value::Null,
                    Sum::Float(x) => Value::Float(x / count as f64),
                    Sum::Int(i) => {
                        let sum =
                            Decimal::try_from_i128_with_scale(i, 0).map_err(|_| Error::out_of_range("numeric"))?;
                        Value::Decimal(average(sum, count)?)
                    }
                    Sum::Decimal(d) => Value::Decimal(average(d, count)?),
                }
            }
        })
    }
}

fn average(sum: Decimal, count: i64) -> Result<Decimal> {
    let avg = sum.checked_div(Decimal::from(count)).ok_or_else(|| Error::out_of_range("numeric"))?;
    Ok(avg.round_dp(AVG_SCALE).normalize())
}

fn add(sum: Sum, value: Value, func: AggFunc) -> Result<Sum> {
    let overflow = || Error::out_of_range("numeric");
    Ok(match (sum, value) {
        (Sum::Empty, Value::Int(i)) => Sum::Int(i128::from(i)),
        (Sum::Empty, Value::Decimal(d)) => Sum::Decimal(d),
        (Sum::Empty, Value::Float(x)) => Sum::Float(x),
        (Sum::Int(a), Value::Int(i)) => Sum::Int(a.checked_add(i128::from(i)).ok_or_else(overflow)?),
        (Sum::Int(a), Value::Decimal(d)) => {
            let a = Decimal::try_from_i128_with_scale(a, 0).map_err(|_| overflow())?;
            Sum::Decimal(a.checked_add(d).ok_or_else(overflow)?)
        }
        (Sum::Decimal(a), Value::Int(i)) => Sum::Decimal(a.checked_add(Decimal::from(i)).ok_or_else(overflow)?),
        (Sum::Decimal(a), Value::Decimal(d)) => Sum::Decimal(a.checked_add(d).ok_or_else(overflow)?),
        (Sum::Float(a), Value::Float(x)) => Sum::Float(a + x),
        (Sum::Float(a), Value::Int(i)) => Sum::Float(a + i as f64),
        (Sum::Float(a), Value::Decimal(d)) => Sum::Float(a + geodb_storage::value::decimal_to_f64(&d)),
        (Sum::Int(a), Value::Float(x)) => Sum::Float(a as f64 + x),
        (Sum::Decimal(a), Value::Float(x)) => Sum::Float(geodb_storage::value::decimal_to_f64(&a) + x),
        (_, other) => {
            return Err(Error::UndefinedFunction(format!("function {}({}) does not exist", func.name(), other.kind())));
        }
    })
}
