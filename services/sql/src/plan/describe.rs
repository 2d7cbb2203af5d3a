//! Describing a statement without running it: the types of its parameters
//! and of its result columns, as a client of the PostgreSQL extended query
//! protocol asks before it binds values (`Describe`).
//!
//! Parameter types come from the binder ([`ParamTypes`]: the column a
//! parameter is compared with or assigned to, a cast, `LIMIT`), overridden
//! by the types the client declared. Result types follow from the plan's
//! output expressions over the catalog's column types, by PostgreSQL's
//! rules where GeoDB's values allow them:
//!
//! - a column has its declared type; a cast its target type;
//! - an integer literal is `INT` when it fits 32 bits, else `BIGINT`
//!   (PostgreSQL's `int4`/`int8`); other literals have their value's type;
//! - arithmetic on integers has the wider operand's type, with a float
//!   operand `DOUBLE PRECISION` (`REAL` for two `REAL`s), with a decimal
//!   one `DECIMAL`; comparisons and logic are `BOOLEAN`; `||` is `TEXT`;
//! - `COUNT` is `BIGINT`; `SUM` of `SMALLINT`/`INT` is `BIGINT`, of
//!   `BIGINT` or `DECIMAL` a `DECIMAL`, of floats the float; `AVG` of exact
//!   numbers is `DECIMAL`, of floats `DOUBLE PRECISION`; `MIN`/`MAX` keep
//!   their argument's type; `COALESCE` of numbers takes the widest of
//!   their types, of anything else its first typed argument's.
//!
//! Where nothing gives a type (`SELECT NULL`, a parameter with no context
//! and no declared type) the type is `None`, and the protocol says text.
//! GeoDB evaluates integers in 64 bits, so a value may exceed the 32-bit
//! type described here (`SELECT 2000000000 + 2000000000`); the protocol
//! layer refuses to send it (`22003`, as PostgreSQL's overflow would).

use geodb_storage::{DataType, Value};

use crate::plan::bind::{AggFunc, AggSpec, ParamTypes};
use crate::plan::expr::Expr;
use crate::plan::{Plan, SelectPlan, StatementKind};

/// What a statement takes and returns, known before it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Description {
    pub kind: StatementKind,
    /// Parameter `$n` is `params[n - 1]`; `None`: no type is known.
    pub params: Vec<Option<DataType>>,
    /// The result columns; empty for a statement that returns no rows.
    pub columns: Vec<OutputColumn>,
}

/// One result column.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputColumn {
    pub name: String,
    /// `None`: no type is known (all its values are NULL or untyped).
    pub ty: Option<DataType>,
}

/// The type of a scale-free exact number (a literal, a `SUM`, an `AVG`).
const DECIMAL_ANY: DataType = DataType::Decimal { precision: crate::limits::DECIMAL_PRECISION_MAX as u8, scale: 0 };

/// Describes a planned statement. `declared[i]`, when given, is the type
/// the client chose for `$i+1`; it wins over the one the plan inferred.
pub fn describe(plan: &Plan, inferred: &ParamTypes, declared: &[Option<DataType>]) -> Description {
    let count = inferred.count().max(declared.len());
    let params: Vec<Option<DataType>> = (0..count)
        .map(|i| declared.get(i).copied().flatten().or_else(|| inferred.types.get(i).copied().flatten()))
        .collect();
    let columns = match plan {
        Plan::Select(select) => select_columns(select, &params),
        Plan::Explain(_) => vec![OutputColumn { name: "plan".into(), ty: Some(DataType::Text) }],
        Plan::Show(show) => vec![OutputColumn { name: show.column().into(), ty: Some(DataType::Text) }],
        _ => Vec::new(),
    };
    Description { kind: plan.kind(), params, columns }
}

fn select_columns(select: &SelectPlan, params: &[Option<DataType>]) -> Vec<OutputColumn> {
    let input: Vec<Option<DataType>> =
        select.levels.iter().flat_map(|level| level.table.columns.iter().map(|column| Some(column.ty))).collect();
    // An aggregating query's outputs read its aggregation row:
    // `[group keys..., aggregate results...]`.
    let row = match &select.aggregate {
        None => input,
        Some(aggregate) => aggregate
            .group_by
            .iter()
            .map(|key| expr_type(key, &input, params))
            .chain(aggregate.aggs.iter().map(|spec| aggregate_type(spec, &input, params)))
            .collect(),
    };
    select
        .columns
        .iter()
        .zip(&select.projection)
        .map(|(name, expr)| OutputColumn { name: name.clone(), ty: expr_type(expr, &row, params) })
        .collect()
}

fn aggregate_type(spec: &AggSpec, row: &[Option<DataType>], params: &[Option<DataType>]) -> Option<DataType> {
    let arg = spec.arg.as_ref().and_then(|arg| expr_type(arg, row, params));
    match spec.func {
        AggFunc::Count => Some(DataType::BigInt),
        AggFunc::Min | AggFunc::Max => arg,
        AggFunc::Sum => match arg? {
            DataType::SmallInt | DataType::Int => Some(DataType::BigInt),
            DataType::BigInt | DataType::Decimal { .. } => Some(DECIMAL_ANY),
            float @ (DataType::Real | DataType::Double) => Some(float),
            _ => None,
        },
        AggFunc::Avg => match arg? {
            DataType::Real | DataType::Double => Some(DataType::Double),
            ty if ty.is_numeric() => Some(DECIMAL_ANY),
            _ => None,
        },
    }
}

/// The type of `expr` over a row of `row` types.
pub fn expr_type(expr: &Expr, row: &[Option<DataType>], params: &[Option<DataType>]) -> Option<DataType> {
    match expr {
        Expr::Literal(value) => literal_type(value),
        Expr::Param(i) => params.get(*i).copied().flatten(),
        Expr::Column(pos) => row.get(*pos).copied().flatten(),
        Expr::Neg(e) => expr_type(e, row, params),
        Expr::Not(_)
        | Expr::Compare(..)
        | Expr::And(..)
        | Expr::Or(..)
        | Expr::IsNull { .. }
        | Expr::InList { .. }
        | Expr::Between { .. }
        | Expr::Like { .. } => Some(DataType::Bool),
        Expr::Arith(_, a, b) => arith_type(expr_type(a, row, params), expr_type(b, row, params)),
        Expr::Concat(..) => Some(DataType::Text),
        Expr::Cast(_, ty) => Some(*ty),
        Expr::Coalesce(list) => {
            // Numbers meet in the widest of their types, as PostgreSQL
            // resolves `COALESCE(int_column, 1.5)`; otherwise the first
            // typed argument's.
            let types: Vec<DataType> = list.iter().filter_map(|e| expr_type(e, row, params)).collect();
            if types.iter().all(DataType::is_numeric) {
                types.into_iter().map(Some).reduce(arith_type).flatten()
            } else {
                types.first().copied()
            }
        }
    }
}

fn literal_type(value: &Value) -> Option<DataType> {
    Some(match value {
        Value::Null => return None,
        Value::Int(i) if i32::try_from(*i).is_ok() => DataType::Int,
        Value::Int(_) => DataType::BigInt,
        Value::Decimal(_) => DECIMAL_ANY,
        Value::Float(_) => DataType::Double,
        Value::Bool(_) => DataType::Bool,
        Value::Text(_) => DataType::Text,
        Value::Timestamp(_) => DataType::Timestamp,
    })
}

/// The type of `a op b` for an arithmetic operator, as evaluation makes it.
fn arith_type(a: Option<DataType>, b: Option<DataType>) -> Option<DataType> {
    let rank = |ty: &DataType| match ty {
        DataType::SmallInt => 0,
        DataType::Int => 1,
        _ => 2,
    };
    match (a, b) {
        (Some(DataType::Real), Some(DataType::Real)) => Some(DataType::Real),
        (Some(DataType::Real | DataType::Double), _) | (_, Some(DataType::Real | DataType::Double)) => {
            Some(DataType::Double)
        }
        (Some(DataType::Decimal { .. }), _) | (_, Some(DataType::Decimal { .. })) => Some(DECIMAL_ANY),
        (Some(x), Some(y)) if x.is_integer() && y.is_integer() => Some(if rank(&x) >= rank(&y) { x } else { y }),
        // An untyped operand is read as a decimal next to a number.
        (Some(x), None) | (None, Some(x)) if x.is_numeric() => Some(DECIMAL_ANY),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_takes_the_wider_operand_type() {
        assert_eq!(arith_type(Some(DataType::Int), Some(DataType::BigInt)), Some(DataType::BigInt));
        assert_eq!(arith_type(Some(DataType::SmallInt), Some(DataType::Int)), Some(DataType::Int));
        assert_eq!(arith_type(Some(DataType::Int), Some(DataType::Double)), Some(DataType::Double));
        assert_eq!(arith_type(Some(DataType::Real), Some(DataType::Real)), Some(DataType::Real));
        assert_eq!(arith_type(Some(DataType::BigInt), Some(DECIMAL_ANY)), Some(DECIMAL_ANY));
        assert_eq!(arith_type(Some(DataType::Text), Some(DataType::Int)), None);
    }

    #[test]
    fn coalesce_of_numbers_takes_the_widest_type() {
        let row = [Some(DataType::Int), Some(DataType::Double), Some(DataType::Text)];
        let coalesce = |columns: &[usize]| {
            let list = columns.iter().map(|&c| Expr::Column(c)).collect();
            expr_type(&Expr::Coalesce(list), &row, &[])
        };
        assert_eq!(coalesce(&[0, 1]), Some(DataType::Double));
        assert_eq!(coalesce(&[0, 0]), Some(DataType::Int));
        assert_eq!(coalesce(&[2, 0]), Some(DataType::Text));
    }

    #[test]
    fn literals_are_int_when_they_fit_32_bits() {
        assert_eq!(literal_type(&Value::Int(7)), Some(DataType::Int));
        assert_eq!(literal_type(&Value::Int(1 << 40)), Some(DataType::BigInt));
        assert_eq!(literal_type(&Value::Null), None);
    }
}
